//! The `Authorization` form: its parameters, the request time and the
//! credential scope, with AWS's messages in AWS's order.

use http::header::DATE;

use super::*;
use crate::auth::sigv4::X_AMZ_DATE;

#[test]
fn a_credential_scoped_to_another_region_is_invalid_signature() {
    let request = Signer {
        region: "eu-west-1",
        ..Signer::default()
    }
    .request();
    assert_eq!(
        check(&verifier(false), &request, T0),
        Err(KmsError::InvalidSignature(
            "Credential should be scoped to a valid region. ".into()
        ))
    );
}

#[test]
fn a_credential_scoped_to_another_service_is_invalid_signature() {
    let request = Signer {
        service: "s3",
        ..Signer::default()
    }
    .request();
    assert_eq!(
        check(&verifier(false), &request, T0),
        Err(KmsError::InvalidSignature(
            "Credential should be scoped to correct service: 'kms'. ".into()
        ))
    );
}

#[test]
fn a_scope_date_other_than_the_request_date_is_invalid_signature() {
    let mut request = Signer::default().request();
    let header = authorization(&request).replace("/20260101/", "/20251231/");
    set_authorization(&mut request, &header);
    let Err(KmsError::InvalidSignature(msg)) = check(&verifier(false), &request, T0) else {
        panic!("expected InvalidSignature");
    };
    assert!(
        msg.starts_with("Date in Credential scope does not match"),
        "{msg}"
    );
    assert!(msg.contains("'20251231' != '20260101'"), "{msg}");
}

#[test]
fn a_bad_terminator_is_invalid_signature() {
    let mut request = Signer::default().request();
    let header = authorization(&request).replace("/aws4_request", "/aws5_request");
    set_authorization(&mut request, &header);
    let Err(KmsError::InvalidSignature(msg)) = check(&verifier(false), &request, T0) else {
        panic!("expected InvalidSignature");
    };
    assert!(msg.contains("valid terminator"), "{msg}");
}

#[test]
fn a_credential_without_five_elements_is_incomplete_signature() {
    let mut request = Signer::default().request();
    let header = authorization(&request).replace("/us-east-1/kms/", "/us-east-1/");
    set_authorization(&mut request, &header);
    let Err(KmsError::IncompleteSignature(msg)) = check(&verifier(false), &request, T0) else {
        panic!("expected IncompleteSignature");
    };
    assert!(msg.starts_with("Credential must have exactly 5"), "{msg}");
}

#[test]
fn a_request_six_minutes_old_has_an_expired_signature() {
    let request = Signer::default().request();
    assert_eq!(
        check(&verifier(false), &request, T0 + 360),
        Err(KmsError::InvalidSignature(
            "Signature expired: 20260101T000000Z is now earlier than 20260101T000100Z \
             (20260101T000600Z - 5 min.)"
                .into()
        ))
    );
}

#[test]
fn a_request_six_minutes_ahead_is_not_yet_current() {
    let request = Signer::default().request();
    assert_eq!(
        check(&verifier(false), &request, T0 - 360),
        Err(KmsError::InvalidSignature(
            "Signature not yet current: 20260101T000000Z is still later than \
             20251231T235900Z (20251231T235400Z + 5 min.)"
                .into()
        ))
    );
}

#[test]
fn a_request_exactly_at_the_skew_limit_is_accepted() {
    let request = Signer::default().request();
    assert_eq!(check(&verifier(false), &request, T0 + 300), Ok(alice()));
    assert_eq!(check(&verifier(false), &request, T0 - 300), Ok(alice()));
    assert!(check(&verifier(false), &request, T0 + 301).is_err());
}

#[test]
fn no_authorization_is_missing_authentication_token() {
    let request = http::Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "127.0.0.1:8080")
        .body(BODY.to_vec())
        .unwrap();
    assert_eq!(
        check(&verifier(false), &request, T0),
        Err(KmsError::MissingAuthenticationToken(
            "Missing Authentication Token".into()
        ))
    );
}

#[test]
fn an_authorization_of_another_scheme_is_missing_authentication_token() {
    let mut request = Signer::default().request();
    set_authorization(&mut request, "Bearer abc");
    assert!(matches!(
        check(&verifier(false), &request, T0),
        Err(KmsError::MissingAuthenticationToken(_))
    ));
}

#[test]
fn anonymous_access_when_allowed_gives_the_anonymous_principal() {
    let request = http::Request::builder()
        .method("POST")
        .uri("/")
        .body(BODY.to_vec())
        .unwrap();
    let principal = check(&verifier(true), &request, T0).unwrap();
    assert_eq!(principal.name, "anonymous");
    assert_eq!(principal.access_key_id, "");
    assert!(principal.is_anonymous());
}

#[test]
fn anonymous_access_does_not_excuse_a_bad_signature() {
    let request = Signer {
        secret: "not-the-secret",
        ..Signer::default()
    }
    .request();
    assert_eq!(check(&verifier(true), &request, T0), Err(mismatch()));
    let good = Signer::default().request();
    assert_eq!(check(&verifier(true), &good, T0), Ok(alice()));
}

#[test]
fn missing_authorization_parameters_are_incomplete_signature() {
    let mut request = Signer::default().request();
    set_authorization(
        &mut request,
        "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature=0123abcd",
    );
    let Err(KmsError::IncompleteSignature(msg)) = check(&verifier(false), &request, T0) else {
        panic!("expected IncompleteSignature");
    };
    assert!(
        msg.starts_with("Authorization header requires 'Credential' parameter. "),
        "{msg}"
    );
    assert!(msg.contains("Authorization=AWS4-HMAC-SHA256 "), "{msg}");
    assert!(
        !msg.contains("0123abcd"),
        "the signature is not echoed: {msg}"
    );
}

#[test]
fn a_parameter_without_equal_sign_is_incomplete_signature() {
    let mut request = Signer::default().request();
    let header = authorization(&request).replace("Credential=", "Credential ");
    set_authorization(&mut request, &header);
    let Err(KmsError::IncompleteSignature(msg)) = check(&verifier(false), &request, T0) else {
        panic!("expected IncompleteSignature");
    };
    assert!(msg.contains("not a valid key=value pair"), "{msg}");
}

#[test]
fn missing_x_amz_date_is_incomplete_signature() {
    let mut request = Signer::default().request();
    request.headers_mut().remove(X_AMZ_DATE);
    let Err(KmsError::IncompleteSignature(msg)) = check(&verifier(false), &request, T0) else {
        panic!("expected IncompleteSignature");
    };
    assert!(
        msg.starts_with(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
             header."
        ),
        "{msg}"
    );
}

#[test]
fn a_malformed_x_amz_date_is_incomplete_signature() {
    let mut request = Signer::default().request();
    request
        .headers_mut()
        .insert(X_AMZ_DATE, "2026-01-01T00:00:00Z".parse().unwrap());
    let Err(KmsError::IncompleteSignature(msg)) = check(&verifier(false), &request, T0) else {
        panic!("expected IncompleteSignature");
    };
    assert!(
        msg.starts_with("Date must be in ISO-8601 'basic format'"),
        "{msg}"
    );
}

#[test]
fn a_date_header_stands_in_for_x_amz_date() {
    let mut request = Signer::default().request();
    request.headers_mut().remove(X_AMZ_DATE);
    let header = authorization(&request).replace(";x-amz-date", "");
    set_authorization(&mut request, &header);
    request
        .headers_mut()
        .insert(DATE, "Thu, 01 Jan 2026 00:00:00 GMT".parse().unwrap());
    // Ten minutes later the time from the Date header is out of skew.
    let Err(KmsError::InvalidSignature(msg)) = check(&verifier(false), &request, T0 + 600) else {
        panic!("expected InvalidSignature");
    };
    assert!(
        msg.starts_with("Signature expired: 20260101T000000Z is now earlier"),
        "{msg}"
    );
    // In time, it gets as far as the signature (which signed x-amz-date).
    assert_eq!(check(&verifier(false), &request, T0), Err(mismatch()));
}

#[test]
fn host_must_be_signed() {
    let mut request = Signer::default().request();
    let header = authorization(&request).replace("host;", "");
    assert!(!header.contains("host"));
    set_authorization(&mut request, &header);
    assert_eq!(
        check(&verifier(false), &request, T0),
        Err(KmsError::InvalidSignature(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into()
        ))
    );
}

#[test]
fn x_amz_date_must_be_signed_when_it_carries_the_time() {
    let mut request = Signer::default().request();
    let header = authorization(&request).replace(";x-amz-date", "");
    set_authorization(&mut request, &header);
    assert_eq!(
        check(&verifier(false), &request, T0),
        Err(KmsError::InvalidSignature(
            "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.".into()
        ))
    );
}

#[test]
fn a_signed_header_missing_from_the_request_is_incomplete_signature() {
    let mut request = Signer::default().request();
    request.headers_mut().remove("x-amz-target");
    assert_eq!(
        check(&verifier(false), &request, T0),
        Err(KmsError::IncompleteSignature(
            "'x-amz-target' is named as a SignedHeader, but it does not exist in the HTTP \
             request."
                .into()
        ))
    );
}

#[test]
fn an_unsupported_algorithm_is_incomplete_signature() {
    let mut request = Signer::default().request();
    let header = authorization(&request).replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256");
    set_authorization(&mut request, &header);
    let Err(KmsError::IncompleteSignature(msg)) = check(&verifier(false), &request, T0) else {
        panic!("expected IncompleteSignature");
    };
    assert!(msg.starts_with("Unsupported AWS 'algorithm'"), "{msg}");
}
