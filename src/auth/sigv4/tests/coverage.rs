//! What the signature must cover: every `x-amz-*` header present (not
//! `content-type`), the body's real hash; and the presigned form, refused
//! unless enabled.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use super::*;
use crate::auth::sigv4::{X_AMZ_CONTENT_SHA256, X_AMZ_SECURITY_TOKEN};

/// The SDK's settings, leaving `also_unsigned` out of the signature.
fn excluding(also_unsigned: &[&'static str]) -> SigningSettings {
    let mut settings = SigningSettings::default();
    let excluded = settings.excluded_headers.get_or_insert_with(Vec::new);
    excluded.extend(also_unsigned.iter().map(|h| Cow::Borrowed(*h)));
    settings
}

fn unsigned(name: &str) -> Result<Principal, KmsError> {
    Err(KmsError::InvalidSignature(format!(
        "{name} must be a 'SignedHeader' in the AWS Authorization."
    )))
}

#[test]
fn a_signature_over_only_host_and_date_is_refused() {
    let request = Signer {
        settings: excluding(&["content-type", "x-amz-target"]),
        ..Signer::default()
    }
    .request();
    assert!(
        authorization(&request).contains("SignedHeaders=host;x-amz-date,"),
        "{}",
        authorization(&request)
    );
    assert_eq!(
        check(&verifier(false), &request, T0),
        unsigned("'x-amz-target'")
    );
}

#[test]
fn an_unsigned_content_type_is_accepted_as_the_javascript_sdk_v2_sends_it() {
    // AWS requires host, x-amz-date and the x-amz-* headers, not
    // content-type; aws-sdk 2.x never signs it.
    let request = Signer {
        settings: excluding(&["content-type"]),
        ..Signer::default()
    }
    .request();
    assert!(
        authorization(&request).contains("SignedHeaders=host;x-amz-date;x-amz-target,"),
        "{}",
        authorization(&request)
    );
    assert_eq!(check(&verifier(false), &request, T0), Ok(alice()));
    // The body is still covered by the payload hash.
    let mut changed = request;
    *changed.body_mut() = br#"{"Limit":1}"#.to_vec();
    assert_eq!(check(&verifier(false), &changed, T0), Err(mismatch()));
}

#[test]
fn an_unsigned_x_amz_target_is_refused_so_the_operation_cannot_be_swapped() {
    let mut request = Signer {
        settings: excluding(&["x-amz-target"]),
        ..Signer::default()
    }
    .request();
    assert_eq!(
        check(&verifier(false), &request, T0),
        unsigned("'x-amz-target'")
    );
    // The replay of the issue: the same signature with another operation.
    request
        .headers_mut()
        .insert("x-amz-target", "TrentService.DisableKey".parse().unwrap());
    assert_eq!(
        check(&verifier(false), &request, T0),
        unsigned("'x-amz-target'")
    );
}

#[test]
fn an_added_x_amz_header_is_refused() {
    let mut request = Signer::default().request();
    request
        .headers_mut()
        .insert("x-amz-user-agent", "replayer/1.0".parse().unwrap());
    assert_eq!(
        check(&verifier(false), &request, T0),
        unsigned("'x-amz-user-agent'")
    );
    // Other headers may stay unsigned: proxies add and change them.
    let mut request = Signer::default().request();
    request
        .headers_mut()
        .insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
    assert_eq!(check(&verifier(false), &request, T0), Ok(alice()));
}

#[test]
fn the_checks_of_signed_headers_run_in_order() {
    let mut request = Signer {
        settings: excluding(&["content-type", "x-amz-target"]),
        ..Signer::default()
    }
    .request();
    // host before everything else.
    let header = authorization(&request).replace("host;", "");
    set_authorization(&mut request, &header);
    assert_eq!(
        check(&verifier(false), &request, T0),
        unsigned("'Host' or ':authority'")
    );
    // A header named as signed but absent comes after the unsigned ones.
    let mut request = Signer {
        settings: excluding(&["x-amz-target"]),
        ..Signer::default()
    }
    .request();
    let header = authorization(&request).replace("x-amz-date", "x-amz-date;x-extra");
    set_authorization(&mut request, &header);
    assert_eq!(
        check(&verifier(false), &request, T0),
        unsigned("'x-amz-target'")
    );
}

#[test]
fn a_signed_content_sha256_header_is_accepted() {
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let request = Signer {
        settings,
        ..Signer::default()
    }
    .request();
    assert_eq!(
        request.headers()[X_AMZ_CONTENT_SHA256],
        hex::encode(Sha256::digest(BODY))
    );
    assert_eq!(check(&verifier(false), &request, T0), Ok(alice()));
}

#[test]
fn a_content_sha256_that_does_not_match_the_body_is_invalid_signature() {
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let mut request = Signer {
        settings,
        ..Signer::default()
    }
    .request();
    *request.body_mut() = br#"{"Limit":1}"#.to_vec();
    assert_eq!(
        check(&verifier(false), &request, T0),
        Err(KmsError::InvalidSignature(
            "The provided 'x-amz-content-sha256' header does not match what was computed.".into()
        ))
    );
}

#[test]
fn an_unsigned_content_sha256_header_is_refused() {
    let mut request = Signer::default().request();
    request.headers_mut().insert(
        X_AMZ_CONTENT_SHA256,
        hex::encode(Sha256::digest(BODY)).parse().unwrap(),
    );
    assert_eq!(
        check(&verifier(false), &request, T0),
        unsigned("'x-amz-content-sha256'")
    );
}

#[test]
fn unsigned_payload_is_refused() {
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let request = Signer {
        settings,
        signable_body: Some(SignableBody::UnsignedPayload),
        ..Signer::default()
    }
    .request();
    assert_eq!(request.headers()[X_AMZ_CONTENT_SHA256], "UNSIGNED-PAYLOAD");
    assert_eq!(
        check(&verifier(false), &request, T0),
        Err(KmsError::InvalidSignature(
            "'x-amz-content-sha256' must be the SHA-256 of the request payload; \
             'UNSIGNED-PAYLOAD' is not supported by this service."
                .into()
        ))
    );
}

#[test]
fn streaming_payloads_are_refused() {
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let request = Signer {
        settings,
        signable_body: Some(SignableBody::StreamingUnsignedPayloadTrailer),
        ..Signer::default()
    }
    .request();
    let Err(KmsError::InvalidSignature(msg)) = check(&verifier(false), &request, T0) else {
        panic!("expected InvalidSignature");
    };
    assert!(
        msg.contains("'STREAMING-UNSIGNED-PAYLOAD-TRAILER'"),
        "{msg}"
    );
}

#[test]
fn a_payload_signed_as_unsigned_without_the_header_is_a_mismatch() {
    // The literal in the canonical request, no header to announce it: the
    // body's real hash is used, so the signature cannot match.
    let request = Signer {
        signable_body: Some(SignableBody::UnsignedPayload),
        ..Signer::default()
    }
    .request();
    assert!(!request.headers().contains_key(X_AMZ_CONTENT_SHA256));
    assert_eq!(check(&verifier(false), &request, T0), Err(mismatch()));
}

#[test]
fn a_session_token_is_unrecognized_client() {
    let request = Signer {
        session_token: Some("FwoGZXIvYXdzE"),
        ..Signer::default()
    }
    .request();
    assert!(authorization(&request).contains(X_AMZ_SECURITY_TOKEN));
    assert_eq!(
        check(&verifier(false), &request, T0),
        Err(KmsError::UnrecognizedClient)
    );
}

fn presigned(expires: Duration) -> http::Request<Vec<u8>> {
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires);
    Signer {
        settings,
        ..Signer::default()
    }
    .request()
}

#[test]
fn a_presigned_request_is_refused_unless_enabled() {
    let request = presigned(Duration::from_secs(900));
    assert_eq!(
        check(&verifier(false), &request, T0),
        Err(KmsError::IncompleteSignature(
            "AWS query-string authentication ('X-Amz-Algorithm' in the query string) is not \
             allowed on this endpoint. Sign the request in the 'Authorization' header."
                .into()
        ))
    );
    // Anonymous access does not turn a refused presigned request into one.
    assert!(check(&verifier(true), &request, T0).is_err());
}

#[test]
fn a_presigned_request_is_accepted_until_it_expires() {
    let request = presigned(Duration::from_secs(900));
    assert!(request.uri().query().unwrap().contains("X-Amz-Signature="));
    assert!(!request.headers().contains_key(AUTHORIZATION));
    let verifier = verifier_with(false, true);
    assert_eq!(check(&verifier, &request, T0 + 900), Ok(alice()));
    let Err(KmsError::InvalidSignature(msg)) = check(&verifier, &request, T0 + 901) else {
        panic!("expected InvalidSignature");
    };
    assert!(msg.starts_with("Signature expired:"), "{msg}");
}

#[test]
fn a_presigned_request_obeys_the_same_signed_header_rules() {
    let mut settings = excluding(&["x-amz-target"]);
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(900));
    let request = Signer {
        settings,
        ..Signer::default()
    }
    .request();
    assert_eq!(
        check(&verifier_with(false, true), &request, T0),
        unsigned("'x-amz-target'")
    );
}

#[test]
fn a_presigned_unsigned_payload_is_refused() {
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(900));
    let request = Signer {
        settings,
        signable_body: Some(SignableBody::UnsignedPayload),
        ..Signer::default()
    }
    .request();
    // Signed over the literal, checked against the body's real hash.
    assert_eq!(
        check(&verifier_with(false, true), &request, T0),
        Err(mismatch())
    );
    // Stated in the query string, it is refused by name.
    let uri = format!(
        "{}&X-Amz-Content-Sha256=UNSIGNED-PAYLOAD",
        request.uri().path_and_query().unwrap()
    );
    let result = verifier_with(false, true).verify(
        request.method(),
        &uri.parse().unwrap(),
        request.headers(),
        request.body(),
        at(T0),
    );
    assert_eq!(
        result,
        Err(SignatureError::UnsignedPayload("UNSIGNED-PAYLOAD".into()))
    );
}

#[test]
fn a_presigned_request_with_a_changed_query_is_invalid_signature() {
    let request = presigned(Duration::from_secs(900));
    let tampered = request
        .uri()
        .path_and_query()
        .unwrap()
        .as_str()
        .replace("X-Amz-Expires=900", "X-Amz-Expires=901");
    let result = verifier_with(false, true).verify(
        request.method(),
        &tampered.parse().unwrap(),
        request.headers(),
        request.body(),
        at(T0),
    );
    assert_eq!(result, Err(SignatureError::Mismatch));
}

#[test]
fn header_and_query_authentication_together_are_rejected() {
    let mut request = presigned(Duration::from_secs(900));
    set_authorization(&mut request, &authorization(&Signer::default().request()));
    let Err(KmsError::InvalidSignature(msg)) = check(&verifier(false), &request, T0) else {
        panic!("expected InvalidSignature");
    };
    assert!(msg.starts_with("Found both"), "{msg}");
}
