#![allow(dead_code)]

//! A small XKS proxy API client that signs as AWS KMS does: SigV4 with
//! service `kms-xks-proxy` in the store's region, signed headers exactly
//! `host;x-amz-date` (content-type is added after signing), the payload's
//! SHA-256, and the path signed as sent (no normalisation, so an empty
//! prefix's `//kms/xks/v1/...` is signed that way). Raw HTTP/1.1 over a
//! TCP stream, so every status and body is seen as sent.
//!
//! Reusable by every XKS test: [`XksClient::new`] names the gateway, the
//! store's prefix and region and the credential.

use std::io::{Read, Write};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4::SigningParams;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// An answer: status, lower-case headers, the body as text and as JSON.
#[derive(Debug, Clone)]
pub struct XksResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
    pub body: Value,
}

impl XksResponse {
    /// `errorName` of an error answer ("" for a success).
    pub fn error_name(&self) -> &str {
        self.body["errorName"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A Base64 member, decoded.
    pub fn bytes(&self, member: &str) -> Vec<u8> {
        STANDARD
            .decode(
                self.body[member]
                    .as_str()
                    .unwrap_or_else(|| panic!("no {member} in {}: {}", self.status, self.text)),
            )
            .unwrap()
    }

    /// Asserts an error answer with this status and name, on one line of
    /// JSON as the spec's compliance client parses it.
    #[track_caller]
    pub fn assert_error(&self, status: u16, name: &str) {
        assert_eq!(
            (self.status, self.error_name()),
            (status, name),
            "answer: {}",
            self.text
        );
        assert!(!self.text.trim().contains('\n'), "one line: {}", self.text);
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{:?}",
            self.headers
        );
    }

    #[track_caller]
    pub fn assert_ok(&self) {
        assert_eq!(self.status, 200, "answer: {}", self.text);
    }
}

/// What an encryption answered, for a decrypt.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub metadata: Vec<u8>,
    pub iv: Vec<u8>,
    pub tag: Vec<u8>,
    pub integrity: Option<Vec<u8>>,
}

impl Sealed {
    pub fn of(r: &XksResponse) -> Sealed {
        r.assert_ok();
        Sealed {
            ciphertext: r.bytes("ciphertext"),
            metadata: r.bytes("ciphertextMetadata"),
            iv: r.bytes("initializationVector"),
            tag: r.bytes("authenticationTag"),
            integrity: r.body["ciphertextDataIntegrityValue"]
                .as_str()
                .map(|v| STANDARD.decode(v).unwrap()),
        }
    }
}

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A client of one store of one gateway.
#[derive(Debug, Clone)]
pub struct XksClient {
    /// `host:port`.
    pub addr: String,
    /// The store's path prefix (`""` or `/...`).
    pub prefix: String,
    pub region: String,
    pub access_key_id: String,
    pub secret: String,
}

impl XksClient {
    pub fn new(addr: &str, prefix: &str, region: &str, access_key_id: &str, secret: &str) -> Self {
        XksClient {
            addr: addr.to_owned(),
            prefix: prefix.to_owned(),
            region: region.to_owned(),
            access_key_id: access_key_id.to_owned(),
            secret: secret.to_owned(),
        }
    }

    /// `<prefix>/kms/xks/v1<rest>`.
    pub fn path(&self, rest: &str) -> String {
        format!("{}/kms/xks/v1{rest}", self.prefix)
    }

    /// The requestMetadata AWS KMS sends for `kms_operation`.
    pub fn request_metadata(kms_operation: &str) -> Value {
        json!({
            "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
            "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "kmsOperation": kms_operation,
            "kmsRequestId": uuid::Uuid::new_v4().to_string(),
            "kmsViaService": "ebs",
        })
    }

    pub fn metadata(&self, external_key_id: &str) -> XksResponse {
        self.post(
            &format!("/keys/{external_key_id}/metadata"),
            &json!({"requestMetadata": {
                "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
                "kmsOperation": "CreateKey",
                "kmsRequestId": uuid::Uuid::new_v4().to_string(),
            }}),
        )
    }

    pub fn health(&self) -> XksResponse {
        self.post(
            "/health",
            &json!({"requestMetadata": {
                "kmsRequestId": uuid::Uuid::new_v4().to_string(),
                "kmsOperation": "KmsHealthCheck",
            }}),
        )
    }

    /// The body of an Encrypt request.
    pub fn encrypt_body(plaintext: &[u8], aad: Option<&[u8]>, integrity: bool) -> Value {
        let mut body = json!({
            "requestMetadata": Self::request_metadata("Encrypt"),
            "plaintext": b64(plaintext),
            "encryptionAlgorithm": "AES_GCM",
        });
        if let Some(aad) = aad {
            body["additionalAuthenticatedData"] = b64(aad).into();
        }
        if integrity {
            body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256".into();
        }
        body
    }

    pub fn encrypt(
        &self,
        external_key_id: &str,
        plaintext: &[u8],
        aad: Option<&[u8]>,
        integrity: bool,
    ) -> XksResponse {
        self.post(
            &format!("/keys/{external_key_id}/encrypt"),
            &Self::encrypt_body(plaintext, aad, integrity),
        )
    }

    /// The body of a Decrypt request of `sealed`.
    pub fn decrypt_body(sealed: &Sealed, aad: Option<&[u8]>) -> Value {
        let mut body = json!({
            "requestMetadata": Self::request_metadata("Decrypt"),
            "ciphertext": b64(&sealed.ciphertext),
            "ciphertextMetadata": b64(&sealed.metadata),
            "encryptionAlgorithm": "AES_GCM",
            "initializationVector": b64(&sealed.iv),
            "authenticationTag": b64(&sealed.tag),
        });
        if let Some(aad) = aad {
            body["additionalAuthenticatedData"] = b64(aad).into();
        }
        body
    }

    pub fn decrypt(
        &self,
        external_key_id: &str,
        sealed: &Sealed,
        aad: Option<&[u8]>,
    ) -> XksResponse {
        self.post(
            &format!("/keys/{external_key_id}/decrypt"),
            &Self::decrypt_body(sealed, aad),
        )
    }

    /// POSTs `body` to `<prefix>/kms/xks/v1<rest>`, signed.
    pub fn post(&self, rest: &str, body: &Value) -> XksResponse {
        let body = serde_json::to_vec(body).unwrap();
        self.send("POST", &self.path(rest), &body, Some(SystemTime::now()))
    }

    /// As [`post`](Self::post), giving up (and closing the connection)
    /// when no answer came within `timeout`: status 0 then.
    pub fn post_with_timeout(
        &self,
        rest: &str,
        body: &Value,
        timeout: std::time::Duration,
    ) -> XksResponse {
        let body = serde_json::to_vec(body).unwrap();
        self.send_within(
            "POST",
            &self.path(rest),
            &body,
            Some(SystemTime::now()),
            timeout,
        )
    }

    /// Sends `method path` with `body`, signed as of `signed_at` (unsigned
    /// with `None`).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        signed_at: Option<SystemTime>,
    ) -> XksResponse {
        self.send_within(
            method,
            path,
            body,
            signed_at,
            std::time::Duration::from_secs(60),
        )
    }

    fn send_within(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        signed_at: Option<SystemTime>,
        timeout: std::time::Duration,
    ) -> XksResponse {
        let mut headers: Vec<(String, String)> = vec![("host".into(), self.addr.clone())];
        if let Some(time) = signed_at {
            let identity =
                Credentials::new(&self.access_key_id, &self.secret, None, None, "test").into();
            let mut settings = SigningSettings::default();
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
            let params = SigningParams::builder()
                .identity(&identity)
                .region(&self.region)
                .name("kms-xks-proxy")
                .time(time)
                .settings(settings)
                .build()
                .unwrap()
                .into();
            let signable = SignableRequest::new(
                method,
                format!("http://{}{path}", self.addr),
                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                SignableBody::Bytes(body),
            )
            .unwrap();
            let (instructions, _) = sign(signable, &params).unwrap().into_parts();
            for (k, v) in instructions.headers() {
                headers.push((k.to_owned(), v.to_owned()));
            }
        }
        // Added after signing, as AWS KMS does.
        headers.push(("content-type".into(), "application/json".into()));
        let mut request = format!("{method} {path} HTTP/1.1\r\n");
        for (k, v) in &headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str(&format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        ));
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        let mut stream = std::net::TcpStream::connect(&self.addr).unwrap();
        stream.set_read_timeout(Some(timeout)).unwrap();
        let _ = stream.write_all(&bytes);
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        parse(&response)
    }
}

fn parse(bytes: &[u8]) -> XksResponse {
    let raw = crate::common::RawResponse::parse(bytes);
    let text = String::from_utf8_lossy(bytes);
    let body_text = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    XksResponse {
        status: raw.status,
        headers: raw.headers,
        text: body_text,
        body: raw.body,
    }
}
