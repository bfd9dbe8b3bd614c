//! What a signature must cover, against the real gateway: the two replays
//! that testing found (a DescribeKey signature reused as DisableKey, a
//! presigned `UNSIGNED-PAYLOAD` URL reused as ScheduleKeyDeletion) are
//! refused and leave the key as it was; so are an unsigned `x-amz-target`
//! and a wrong `x-amz-content-sha256`. Every refusal is AWS-shaped and
//! audited with the operation it named. An unsigned `content-type`, as the
//! AWS SDK for JavaScript v2 sends every request, is served, as AWS serves
//! it.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

use crate::common::{ACCESS_KEY, Gateway, REGION, RawResponse, SECRET, Token, key_metadata};
use aws_credential_types::Credentials;
use aws_sdk_kms::types::KeyState;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4::SigningParams;

const JSON: &str = "application/x-amz-json-1.1";

/// A request as it goes on the wire: path and query, headers, body.
struct Wire {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Wire {
    /// `POST /` for `operation` with `body`, headers as an SDK sends them.
    fn new(gw: &Gateway, operation: &str, body: &str) -> Wire {
        Wire {
            path: "/".to_owned(),
            headers: vec![
                ("host".into(), gw.addr.clone()),
                ("content-type".into(), JSON.into()),
                ("x-amz-target".into(), format!("TrentService.{operation}")),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    /// Signs as the AWS SDK's signer does, with `settings` and `payload`
    /// (the body's hash when `None`), adding what the signer adds.
    fn signed(
        mut self,
        gw: &Gateway,
        settings: SigningSettings,
        payload: Option<SignableBody>,
    ) -> Wire {
        let identity = Credentials::new(ACCESS_KEY, SECRET, None, None, "test").into();
        let params = SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name("kms")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            "POST",
            format!("{}/", gw.endpoint),
            self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            payload.unwrap_or(SignableBody::Bytes(&self.body)),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        for (k, v) in instructions.headers() {
            self.headers.push((k.to_owned(), v.to_owned()));
        }
        let query: Vec<String> = instructions
            .params()
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        if !query.is_empty() {
            self.path = format!("/?{}", query.join("&"));
        }
        self
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(k, _)| k != name);
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    fn send(&self, gw: &Gateway) -> RawResponse {
        let mut request = format!("POST {} HTTP/1.1\r\n", self.path);
        for (k, v) in &self.headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str(&format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut stream = std::net::TcpStream::connect(&gw.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        stream.write_all(&self.body).unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        RawResponse::parse(&response)
    }
}

/// SigV4's URI encoding of a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The SDK's default settings, leaving `also_unsigned` out of the signature.
fn excluding(also_unsigned: &[&'static str]) -> SigningSettings {
    let mut settings = SigningSettings::default();
    let excluded = settings.excluded_headers.get_or_insert_with(Vec::new);
    excluded.extend(also_unsigned.iter().map(|h| Cow::Borrowed(*h)));
    settings
}

fn presigning(mut settings: SigningSettings) -> SigningSettings {
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(900));
    settings
}

/// The response is the refusal AWS gives, and the audit log names the
/// operation and the exception under the response's request id.
fn assert_refused(gw: &Gateway, r: &RawResponse, error_type: &str, message: &str, operation: &str) {
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!((r.error_type(), r.message()), (error_type, message));
    assert_eq!(r.header("x-amzn-errortype"), Some(error_type));
    let id = r.header("x-amzn-requestid").expect("x-amzn-RequestId");
    // The log is written in the background: give it a moment.
    let mut log = gw.log();
    for _ in 0..50 {
        if log.contains(id) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        log = gw.log();
    }
    let line = log
        .lines()
        .find(|l| l.contains("kmsgate::audit") && l.contains(id))
        .unwrap_or_else(|| panic!("no audit record for {id}:\n{log}"));
    assert!(
        line.contains(&format!("\"eventName\":\"{operation}\"")),
        "{line}"
    );
    assert!(line.contains(error_type), "{line}");
}

fn unsigned(name: &str) -> String {
    format!("{name} must be a 'SignedHeader' in the AWS Authorization.")
}

/// The key is still enabled and not scheduled for deletion.
async fn assert_unchanged(gw: &Gateway, key_id: &str) {
    let meta = key_metadata(&gw.client(), key_id).await;
    assert_eq!(meta.key_state, Some(KeyState::Enabled));
    assert!(meta.enabled);
    assert!(meta.deletion_date.is_none());
}

#[tokio::test]
async fn a_describe_key_signed_over_host_and_date_cannot_be_replayed_as_disable_key() {
    let gw = Gateway::start();
    let key_id = crate::common::create_key(&gw.client()).await;
    let body = format!(r#"{{"KeyId":"{key_id}"}}"#);
    let mut replay = Wire::new(&gw, "DescribeKey", &body).signed(
        &gw,
        excluding(&["content-type", "x-amz-target"]),
        None,
    );
    let authorization = replay.header("authorization").unwrap().to_owned();
    assert!(
        authorization.contains("SignedHeaders=host;x-amz-date,"),
        "{authorization}"
    );
    replay.set_header("x-amz-target", "TrentService.DisableKey");
    let r = replay.send(&gw);
    assert_refused(
        &gw,
        &r,
        "InvalidSignatureException",
        &unsigned("'x-amz-target'"),
        "DisableKey",
    );
    assert_unchanged(&gw, &key_id).await;
}

#[tokio::test]
async fn an_unsigned_x_amz_target_is_refused() {
    let gw = Gateway::start();
    let key_id = crate::common::create_key(&gw.client()).await;
    let body = format!(r#"{{"KeyId":"{key_id}"}}"#);
    let mut replay =
        Wire::new(&gw, "DescribeKey", &body).signed(&gw, excluding(&["x-amz-target"]), None);
    replay.set_header("x-amz-target", "TrentService.DisableKey");
    let r = replay.send(&gw);
    assert_refused(
        &gw,
        &r,
        "InvalidSignatureException",
        &unsigned("'x-amz-target'"),
        "DisableKey",
    );
    assert_unchanged(&gw, &key_id).await;
}

#[tokio::test]
async fn an_unsigned_content_type_is_served_as_aws_sdk_2_sends_it() {
    let gw = Gateway::start();
    let key_id = crate::common::create_key(&gw.client()).await;
    let body = format!(r#"{{"KeyId":"{key_id}"}}"#);
    let request =
        Wire::new(&gw, "DescribeKey", &body).signed(&gw, excluding(&["content-type"]), None);
    let authorization = request.header("authorization").unwrap().to_owned();
    assert!(
        authorization.contains("SignedHeaders=host;x-amz-date;x-amz-target,"),
        "{authorization}"
    );
    let r = request.send(&gw);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["KeyMetadata"]["KeyId"], key_id.as_str());
    // The body is still what the signature covers.
    let mut changed = request;
    changed.body = format!(r#"{{"KeyId":"{key_id}","GrantTokens":[]}}"#).into_bytes();
    let r = changed.send(&gw);
    assert_eq!(r.error_type(), "InvalidSignatureException", "{:?}", r.body);
    assert!(
        r.message()
            .starts_with("The request signature we calculated"),
        "{}",
        r.message()
    );
}

#[tokio::test]
async fn a_wrong_x_amz_content_sha256_is_refused() {
    let gw = Gateway::start();
    let key_id = crate::common::create_key(&gw.client()).await;
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    // Signed for a harmless body, sent with another.
    let mut request = Wire::new(&gw, "ScheduleKeyDeletion", r#"{"KeyId":"alias/none"}"#)
        .signed(&gw, settings, None);
    request.body = format!(r#"{{"KeyId":"{key_id}","PendingWindowInDays":7}}"#).into_bytes();
    let r = request.send(&gw);
    assert_refused(
        &gw,
        &r,
        "InvalidSignatureException",
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
        "ScheduleKeyDeletion",
    );
    assert_unchanged(&gw, &key_id).await;
}

/// A DescribeKey presigned over `host` alone with `UNSIGNED-PAYLOAD`, sent
/// as ScheduleKeyDeletion of the key.
fn presigned_replay(gw: &Gateway, key_id: &str) -> Wire {
    let mut replay = Wire::new(gw, "DescribeKey", "{}").signed(
        gw,
        presigning(excluding(&["content-type", "x-amz-target"])),
        Some(SignableBody::UnsignedPayload),
    );
    assert!(
        replay.path.contains("X-Amz-SignedHeaders=host&"),
        "{}",
        replay.path
    );
    replay.set_header("x-amz-target", "TrentService.ScheduleKeyDeletion");
    replay.set_header("x-amz-content-sha256", "UNSIGNED-PAYLOAD");
    replay.body = format!(r#"{{"KeyId":"{key_id}","PendingWindowInDays":7}}"#).into_bytes();
    replay
}

#[tokio::test]
async fn a_presigned_unsigned_payload_url_cannot_be_reused_as_schedule_key_deletion() {
    let gw = Gateway::start();
    let key_id = crate::common::create_key(&gw.client()).await;
    let r = presigned_replay(&gw, &key_id).send(&gw);
    assert_refused(
        &gw,
        &r,
        "IncompleteSignatureException",
        "AWS query-string authentication ('X-Amz-Algorithm' in the query string) is not allowed \
         on this endpoint. Sign the request in the 'Authorization' header.",
        "ScheduleKeyDeletion",
    );
    assert_unchanged(&gw, &key_id).await;
}

#[tokio::test]
async fn with_presigned_urls_enabled_the_replay_is_still_refused_and_a_proper_one_works() {
    let token = Token::new();
    let config = std::fs::read_to_string(token.config()).unwrap();
    let config = config.replacen(
        "[[auth.credentials]]",
        "[auth]\nallow_presigned_urls = true\n\n[[auth.credentials]]",
        1,
    );
    std::fs::write(token.config(), config).unwrap();
    let gw = Gateway::start_on(token);
    let key_id = crate::common::create_key(&gw.client()).await;

    // The replay: neither its x-amz-content-sha256 nor its target is
    // signed; the first of them by name is reported.
    let r = presigned_replay(&gw, &key_id).send(&gw);
    assert_refused(
        &gw,
        &r,
        "InvalidSignatureException",
        &unsigned("'x-amz-content-sha256'"),
        "ScheduleKeyDeletion",
    );

    // Signed over every header, but with UNSIGNED-PAYLOAD: the body is not
    // covered, so it is refused by name, or as a mismatch without the header.
    let body = format!(r#"{{"KeyId":"{key_id}","PendingWindowInDays":7}}"#);
    let mut unsigned_body = Wire::new(&gw, "ScheduleKeyDeletion", &body).signed(
        &gw,
        presigning(SigningSettings::default()),
        Some(SignableBody::UnsignedPayload),
    );
    let r = unsigned_body.send(&gw);
    assert_eq!(r.error_type(), "InvalidSignatureException", "{:?}", r.body);
    assert!(
        r.message()
            .starts_with("The request signature we calculated"),
        "{}",
        r.message()
    );
    unsigned_body
        .path
        .push_str("&X-Amz-Content-Sha256=UNSIGNED-PAYLOAD");
    let r = unsigned_body.send(&gw);
    assert_refused(
        &gw,
        &r,
        "InvalidSignatureException",
        "'x-amz-content-sha256' must be the SHA-256 of the request payload; 'UNSIGNED-PAYLOAD' \
         is not supported by this service.",
        "ScheduleKeyDeletion",
    );
    assert_unchanged(&gw, &key_id).await;

    // A presigned request that signs what it does is served.
    let body = format!(r#"{{"KeyId":"{key_id}"}}"#);
    let r = Wire::new(&gw, "DescribeKey", &body)
        .signed(&gw, presigning(SigningSettings::default()), None)
        .send(&gw);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["KeyMetadata"]["KeyId"], key_id.as_str());
}

#[tokio::test]
async fn a_request_signed_as_the_sdk_signs_it_is_served() {
    let gw = Gateway::start();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    for settings in [SigningSettings::default(), settings] {
        let r = Wire::new(&gw, "ListKeys", "{}")
            .signed(&gw, settings, None)
            .send(&gw);
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert!(r.header("x-amzn-requestid").is_some());
    }
    // And the SDK itself, with its x-amz-user-agent.
    gw.client().list_keys().send().await.unwrap();
}
