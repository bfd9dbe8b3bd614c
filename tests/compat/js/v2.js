// The AWS SDK for JavaScript v2 (aws-sdk 2.x) against a running kmsgate.
// Its signer never signs Content-Type, which AWS KMS accepts. Run by
// tests/compat/test_js_sdk.py with the endpoint in KMSGATE_ENDPOINT, the
// region in AWS_REGION and the credentials in the AWS shared-credentials
// file (AWS_SHARED_CREDENTIALS_FILE, read by v2 with AWS_SDK_LOAD_CONFIG=1).
// Prints one JSON object: what each step returned, for the test to check.
//
// `node v2.js` makes real calls through the client; `node v2.js signer`
// signs one ListKeys with the SDK's own SigV4 signer and sends it twice:
// as signed, and with X-Amz-Target added after signing (left unsigned).

"use strict";

// aws-sdk 2.x has reached end of support and says so on stderr at first
// use; the test knows.
process.env.AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE = "1";

const http = require("node:http");
const { randomUUID } = require("node:crypto");
const AWS = require("aws-sdk");

const endpoint = process.env.KMSGATE_ENDPOINT;
const region = process.env.AWS_REGION;
const kms = new AWS.KMS({ endpoint, region, maxRetries: 0 });

// The SignedHeaders of a request the client sent.
function signedHeadersOf(request) {
  const auth = request.httpRequest.headers.Authorization || "";
  const m = /SignedHeaders=([^,]+)/.exec(auth);
  return m ? m[1] : null;
}

async function call(operation, params, signed) {
  const request = kms[operation](params);
  try {
    return await request.promise();
  } finally {
    const headers = signedHeadersOf(request);
    if (headers) signed.add(headers);
  }
}

async function client() {
  const out = {};
  const signed = new Set();
  const context = { purpose: "compat", sdk: "javascript-v2" };

  const created = await call("createKey", { Description: "aws-sdk-js v2" }, signed);
  const keyId = created.KeyMetadata.KeyId;
  out.create_key = {
    key_id: keyId,
    arn: created.KeyMetadata.Arn,
    key_state: created.KeyMetadata.KeyState,
    description: created.KeyMetadata.Description,
  };

  const alias = `alias/js-v2-${randomUUID()}`;
  await call("createAlias", { AliasName: alias, TargetKeyId: keyId }, signed);
  const described = await call("describeKey", { KeyId: alias }, signed);
  out.alias = { name: alias, describes: described.KeyMetadata.KeyId };

  const plaintext = Buffer.from("a secret for the JavaScript SDK v2");
  const encrypted = await call(
    "encrypt",
    { KeyId: alias, Plaintext: plaintext, EncryptionContext: context },
    signed,
  );
  const decrypted = await call(
    "decrypt",
    { CiphertextBlob: encrypted.CiphertextBlob, EncryptionContext: context },
    signed,
  );
  out.encrypt = {
    key_id: encrypted.KeyId,
    round_trip: Buffer.from(decrypted.Plaintext).equals(plaintext),
    decrypt_key_id: decrypted.KeyId,
  };
  try {
    await call(
      "decrypt",
      {
        CiphertextBlob: encrypted.CiphertextBlob,
        EncryptionContext: { ...context, purpose: "other" },
      },
      signed,
    );
    out.wrong_context = "decrypted";
  } catch (e) {
    out.wrong_context = e.code;
  }

  const dataKey = await call(
    "generateDataKey",
    { KeyId: keyId, KeySpec: "AES_256", EncryptionContext: context },
    signed,
  );
  const opened = await call(
    "decrypt",
    { CiphertextBlob: dataKey.CiphertextBlob, EncryptionContext: context },
    signed,
  );
  out.data_key = {
    length: dataKey.Plaintext.length,
    round_trip: Buffer.from(opened.Plaintext).equals(Buffer.from(dataKey.Plaintext)),
  };

  try {
    await call("describeKey", { KeyId: randomUUID() }, signed);
    out.not_found = { error: "none" };
  } catch (e) {
    out.not_found = {
      error: e.code,
      message: e.message,
      status: e.statusCode,
      request_id: e.requestId || null,
    };
  }

  out.signed_headers = [...signed];
  return out;
}

// Sends a prepared AWS.HttpRequest; resolves to its status and JSON body.
function send(request) {
  const url = new URL(endpoint);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        method: request.method,
        path: request.path,
        headers: request.headers,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () => {
          let json = null;
          try {
            json = JSON.parse(body);
          } catch (_) {
            json = body;
          }
          resolve({ status: res.statusCode, body: json });
        });
      },
    );
    req.on("error", reject);
    req.end(request.body);
  });
}

// A ListKeys request as the v2 client builds it, signed by its signer;
// `unsignedTarget`: X-Amz-Target is added only after signing.
async function signedListKeys(credentials, unsignedTarget) {
  const request = new AWS.HttpRequest(new AWS.Endpoint(endpoint), region);
  request.method = "POST";
  request.path = "/";
  request.body = "{}";
  request.headers["Content-Type"] = "application/x-amz-json-1.1";
  request.headers["Content-Length"] = String(Buffer.byteLength(request.body));
  request.headers.Host = new URL(endpoint).host;
  if (!unsignedTarget) request.headers["X-Amz-Target"] = "TrentService.ListKeys";
  new AWS.Signers.V4(request, "kms").addAuthorization(credentials, new Date());
  if (unsignedTarget) request.headers["X-Amz-Target"] = "TrentService.ListKeys";
  const sent = await send(request);
  return { signed_headers: signedHeadersOf({ httpRequest: request }), ...sent };
}

async function signer() {
  const credentials = await new Promise((resolve, reject) =>
    AWS.config.getCredentials((err) => (err ? reject(err) : resolve(AWS.config.credentials))),
  );
  return {
    as_signed: await signedListKeys(credentials, false),
    target_unsigned: await signedListKeys(credentials, true),
  };
}

(process.argv[2] === "signer" ? signer() : client()).then(
  (out) => console.log(JSON.stringify(out)),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
