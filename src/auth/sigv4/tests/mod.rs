//! The verifier against requests signed by the AWS SDK's own signer
//! (`aws-sigv4`), then changed one way or another. [`header`] covers the
//! `Authorization` form's parameters, time and scope; [`coverage`] what the
//! signature must cover (headers, payload) and the presigned form.

mod coverage;
mod header;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4::SigningParams;
use http::header::AUTHORIZATION;
use http::{Method, Uri};
use secrecy::SecretString;

use super::{Credential, Principal, SignatureError, Verifier};
use crate::error::{KmsError, SIGNATURE_MISMATCH};

const ACCESS_KEY: &str = "AKIDKMSGATETEST";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYKMSGATEKEY";
const REGION: &str = "us-east-1";
const BODY: &[u8] = b"{}";
/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn verifier(allow_anonymous: bool) -> Verifier {
    verifier_with(allow_anonymous, false)
}

fn verifier_with(allow_anonymous: bool, allow_presigned_urls: bool) -> Verifier {
    Verifier::new(
        vec![Credential {
            access_key_id: ACCESS_KEY.into(),
            secret: SecretString::from(SECRET),
            principal: "alice".into(),
        }],
        REGION.into(),
        Duration::from_secs(300),
        allow_anonymous,
    )
    .allow_presigned_urls(allow_presigned_urls)
}

/// How the test client signs; the defaults are what the AWS SDK for KMS
/// does.
struct Signer {
    access_key: &'static str,
    secret: &'static str,
    region: &'static str,
    service: &'static str,
    session_token: Option<&'static str>,
    time: SystemTime,
    body: &'static [u8],
    signable_body: Option<SignableBody<'static>>,
    settings: SigningSettings,
}

impl Default for Signer {
    fn default() -> Self {
        Signer {
            access_key: ACCESS_KEY,
            secret: SECRET,
            region: REGION,
            service: "kms",
            session_token: None,
            time: at(T0),
            body: BODY,
            signable_body: None,
            settings: SigningSettings::default(),
        }
    }
}

impl Signer {
    /// `POST /` for ListKeys, signed with the `aws-sigv4` crate.
    fn request(self) -> http::Request<Vec<u8>> {
        let identity = Credentials::new(
            self.access_key,
            self.secret,
            self.session_token.map(str::to_owned),
            None,
            "test",
        )
        .into();
        let params = SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(self.service)
            .time(self.time)
            .settings(self.settings)
            .build()
            .unwrap()
            .into();
        let mut request = http::Request::builder()
            .method("POST")
            .uri("http://127.0.0.1:8080/")
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "TrentService.ListKeys")
            .header("host", "127.0.0.1:8080")
            .body(self.body.to_vec())
            .unwrap();
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        let signable = SignableRequest::new(
            "POST",
            request.uri().to_string(),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            self.signable_body.unwrap_or(SignableBody::Bytes(self.body)),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(&mut request);
        request
    }
}

/// Verifies as the server sees it: an origin-form URI (path and query).
fn check(
    verifier: &Verifier,
    request: &http::Request<Vec<u8>>,
    now: u64,
) -> Result<Principal, KmsError> {
    let uri: Uri = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse()
        .unwrap();
    verifier
        .verify(
            request.method(),
            &uri,
            request.headers(),
            request.body(),
            at(now),
        )
        .map_err(KmsError::from)
}

fn alice() -> Principal {
    Principal {
        name: "alice".into(),
        access_key_id: ACCESS_KEY.into(),
    }
}

fn mismatch() -> KmsError {
    KmsError::InvalidSignature(SIGNATURE_MISMATCH.into())
}

fn authorization(request: &http::Request<Vec<u8>>) -> String {
    request.headers()[AUTHORIZATION]
        .to_str()
        .unwrap()
        .to_owned()
}

fn set_authorization(request: &mut http::Request<Vec<u8>>, value: &str) {
    request
        .headers_mut()
        .insert(AUTHORIZATION, value.parse().unwrap());
}

#[test]
fn a_request_signed_by_the_aws_sdk_signer_is_accepted() {
    let request = Signer::default().request();
    assert_eq!(check(&verifier(false), &request, T0), Ok(alice()));
}

#[test]
fn a_wrong_secret_is_invalid_signature() {
    let request = Signer {
        secret: "not-the-secret",
        ..Signer::default()
    }
    .request();
    assert_eq!(check(&verifier(false), &request, T0), Err(mismatch()));
}

#[test]
fn an_unknown_access_key_is_unrecognized_client() {
    let request = Signer {
        access_key: "AKIDSOMEONEELSE",
        ..Signer::default()
    }
    .request();
    assert_eq!(
        check(&verifier(false), &request, T0),
        Err(KmsError::UnrecognizedClient)
    );
}

#[test]
fn a_tampered_body_is_invalid_signature() {
    let mut request = Signer::default().request();
    *request.body_mut() = br#"{"Limit":1}"#.to_vec();
    assert_eq!(check(&verifier(false), &request, T0), Err(mismatch()));
}

#[test]
fn a_tampered_signed_header_is_invalid_signature() {
    let mut request = Signer::default().request();
    request.headers_mut().insert(
        "x-amz-target",
        "TrentService.ScheduleKeyDeletion".parse().unwrap(),
    );
    assert_eq!(check(&verifier(false), &request, T0), Err(mismatch()));
}

#[test]
fn another_method_or_path_is_invalid_signature() {
    let request = Signer::default().request();
    let verifier = verifier(false);
    let put = verifier.verify(
        &Method::PUT,
        &"/".parse().unwrap(),
        request.headers(),
        request.body(),
        at(T0),
    );
    assert_eq!(put, Err(SignatureError::Mismatch));
    let other_path = verifier.verify(
        request.method(),
        &"/other".parse().unwrap(),
        request.headers(),
        request.body(),
        at(T0),
    );
    assert_eq!(other_path, Err(SignatureError::Mismatch));
}

#[test]
fn signing_keys_are_cached_per_day_and_old_days_dropped() {
    let verifier = verifier(false);
    for day in 0..4u64 {
        let time = T0 + day * 86_400;
        let request = Signer {
            time: at(time),
            ..Signer::default()
        }
        .request();
        assert_eq!(check(&verifier, &request, time), Ok(alice()));
        // A second request the same day is served from the cache.
        assert_eq!(check(&verifier, &request, time), Ok(alice()));
    }
    let cache = verifier.signing_keys.lock().unwrap();
    let t0_day = i64::try_from(T0 / 86_400).unwrap();
    let mut days: Vec<i64> = cache.keys().map(|(d, _)| d - t0_day).collect();
    days.sort_unstable();
    assert_eq!(days, [2, 3]);
}

#[test]
fn a_cached_key_gives_the_same_answer_as_a_fresh_one() {
    let verifier = verifier(false);
    let good = Signer::default().request();
    let bad = Signer {
        secret: "not-the-secret",
        ..Signer::default()
    }
    .request();
    assert_eq!(check(&verifier, &good, T0), Ok(alice()));
    assert_eq!(check(&verifier, &bad, T0), Err(mismatch()));
    assert_eq!(check(&verifier, &good, T0), Ok(alice()));
}

#[test]
fn debug_output_never_shows_the_secret() {
    let verifier = verifier(false);
    // Fill the signing-key cache too, so that it is covered.
    check(&verifier, &Signer::default().request(), T0).unwrap();
    let credential = Credential {
        access_key_id: ACCESS_KEY.into(),
        secret: SecretString::from(SECRET),
        principal: "alice".into(),
    };
    for text in [format!("{verifier:?}"), format!("{credential:?}")] {
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains("K7MDENG"), "{text}");
        assert!(text.contains(ACCESS_KEY), "{text}");
    }
    assert!(format!("{credential:?}").contains("[REDACTED]"));
}
