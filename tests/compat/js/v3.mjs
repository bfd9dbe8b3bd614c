// The AWS SDK for JavaScript v3 (@aws-sdk/client-kms) against a running
// kmsgate: real calls, as an application makes them. Run by
// tests/compat/test_js_sdk.py with the endpoint in KMSGATE_ENDPOINT, the
// region in AWS_REGION and the credentials in the AWS shared-credentials
// file (AWS_SHARED_CREDENTIALS_FILE). Prints one JSON object: what each
// step returned, for the test to check.

import { randomUUID } from "node:crypto";
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  InvalidCiphertextException,
  KMSClient,
  NotFoundException,
} from "@aws-sdk/client-kms";

const kms = new KMSClient({
  endpoint: process.env.KMSGATE_ENDPOINT,
  region: process.env.AWS_REGION,
  maxAttempts: 1,
});

// The headers the SDK signed, from the Authorization header of each request
// as it goes on the wire (the deserialize step runs after signing).
const signedHeaders = new Set();
kms.middlewareStack.add(
  (next) => async (args) => {
    const auth = args.request?.headers?.authorization ?? "";
    const m = /SignedHeaders=([^,]+)/.exec(auth);
    if (m) signedHeaders.add(m[1]);
    return next(args);
  },
  { step: "deserialize", name: "kmsgateSignedHeaders" },
);

const out = {};
const context = { purpose: "compat", sdk: "javascript-v3" };

const created = await kms.send(new CreateKeyCommand({ Description: "aws-sdk-js v3" }));
const keyId = created.KeyMetadata.KeyId;
out.create_key = {
  key_id: keyId,
  arn: created.KeyMetadata.Arn,
  key_state: created.KeyMetadata.KeyState,
  description: created.KeyMetadata.Description,
};

const alias = `alias/js-v3-${randomUUID()}`;
await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: keyId }));
const described = await kms.send(new DescribeKeyCommand({ KeyId: alias }));
out.alias = { name: alias, describes: described.KeyMetadata.KeyId };

const plaintext = Buffer.from("a secret for the JavaScript SDK v3");
const encrypted = await kms.send(
  new EncryptCommand({ KeyId: alias, Plaintext: plaintext, EncryptionContext: context }),
);
const decrypted = await kms.send(
  new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob, EncryptionContext: context }),
);
out.encrypt = {
  key_id: encrypted.KeyId,
  round_trip: Buffer.from(decrypted.Plaintext).equals(plaintext),
  decrypt_key_id: decrypted.KeyId,
};
try {
  await kms.send(
    new DecryptCommand({
      CiphertextBlob: encrypted.CiphertextBlob,
      EncryptionContext: { ...context, purpose: "other" },
    }),
  );
  out.wrong_context = "decrypted";
} catch (e) {
  out.wrong_context = e instanceof InvalidCiphertextException ? e.name : `untyped ${e.name}`;
}

const dataKey = await kms.send(
  new GenerateDataKeyCommand({ KeyId: keyId, KeySpec: "AES_256", EncryptionContext: context }),
);
const opened = await kms.send(
  new DecryptCommand({ CiphertextBlob: dataKey.CiphertextBlob, EncryptionContext: context }),
);
out.data_key = {
  length: dataKey.Plaintext.length,
  round_trip: Buffer.from(opened.Plaintext).equals(Buffer.from(dataKey.Plaintext)),
};

const missing = randomUUID();
try {
  await kms.send(new DescribeKeyCommand({ KeyId: missing }));
  out.not_found = { error: "none" };
} catch (e) {
  out.not_found = {
    error: e instanceof NotFoundException ? e.name : `untyped ${e.name}`,
    message: e.message,
    status: e.$metadata?.httpStatusCode,
    request_id: e.$metadata?.requestId ?? null,
  };
}

out.signed_headers = [...signedHeaders];
console.log(JSON.stringify(out));
