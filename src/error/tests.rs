//! The mapping of every error onto the wire.

use super::*;

#[test]
fn invalid_ciphertext_has_no_message_member() {
    let body: serde_json::Value =
        serde_json::from_slice(&KmsError::InvalidCiphertext.body()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"__type": "InvalidCiphertextException"})
    );
}

#[test]
fn invalid_mac_has_no_message_member_and_is_400() {
    let body: serde_json::Value = serde_json::from_slice(&KmsError::InvalidMac.body()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"__type": "KMSInvalidMacException"})
    );
    assert_eq!(KmsError::InvalidMac.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value =
        serde_json::from_slice(&KmsError::KmsInvalidSignature.body()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"__type": "KMSInvalidSignatureException"})
    );
    assert_eq!(
        KmsError::KmsInvalidSignature.status(),
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn key_usage_texts_are_aws_texts() {
    assert_eq!(
        wrong_key_usage(ARN, "GENERATE_VERIFY_MAC", "Encrypt").message(),
        Some(format!(
            "{ARN} key usage is GENERATE_VERIFY_MAC which is not valid for Encrypt."
        ))
    );
    assert_eq!(
        incompatible_algorithm("HMAC_SHA_256", "HMAC_224").message(),
        Some("Algorithm HMAC_SHA_256 is incompatible with key spec HMAC_224.".into())
    );
}

const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

#[test]
fn store_errors_carry_aws_names_and_texts() {
    let arn = || ARN.to_owned();
    let cases = [
        (
            StoreError::KeyNotFound { arn: arn() },
            "NotFoundException",
            format!("Key '{ARN}' does not exist"),
        ),
        (
            StoreError::Disabled { arn: arn() },
            "DisabledException",
            format!("{ARN} is disabled."),
        ),
        (
            StoreError::PendingDeletion { arn: arn() },
            "KMSInvalidStateException",
            format!("{ARN} is pending deletion."),
        ),
        (
            StoreError::Unreadable {
                label: "kmsgate/key/x".into(),
            },
            "KeyUnavailableException",
            STORE_UNAVAILABLE.to_owned(),
        ),
        (
            StoreError::LockPoisoned,
            "KMSInternalException",
            STORE_INTERNAL.to_owned(),
        ),
        (
            StoreError::KeyRef(KeyRefError::OtherRegion {
                region: "us-west-2".into(),
            }),
            "NotFoundException",
            "Invalid arn us-west-2".to_owned(),
        ),
        (
            StoreError::KeyRef(KeyRefError::MalformedKeyId {
                key_id: "fake-key-id".into(),
            }),
            "NotFoundException",
            "Invalid keyId 'fake-key-id'".to_owned(),
        ),
    ];
    for (store, name, text) in cases {
        let e = KmsError::from(store);
        assert_eq!((e.type_name(), e.message()), (name, Some(text)));
    }
}

#[test]
fn token_faults_map_by_class() {
    let kms = |e: HsmError| KmsError::from(StoreError::Token(e));
    assert_eq!(kms(HsmError::Busy), KmsError::Throttling);
    assert_eq!(kms(HsmError::BadTag), KmsError::InvalidCiphertext);
    assert_eq!(
        kms(HsmError::CallTimeout(5)).type_name(),
        "DependencyTimeoutException"
    );
    for e in [
        HsmError::IncompleteListing,
        HsmError::StaleGeneration,
        HsmError::Unavailable("x".into()),
    ] {
        assert_eq!(kms(e), KmsError::KeyUnavailable(STORE_UNAVAILABLE.into()));
    }
    let e = kms(HsmError::NotDurable("x".into()));
    assert_eq!(e.type_name(), "KMSInternalException");
    assert!(
        e.message()
            .unwrap()
            .contains("could not confirm the change")
    );
    assert_eq!(
        kms(HsmError::Setup("x".into())),
        KmsError::Internal(STORE_INTERNAL.into())
    );
    for e in [
        kms(HsmError::QueueTimeout),
        kms(HsmError::Closed),
        kms(HsmError::NotDurable("x".into())),
    ] {
        assert_eq!(e.status(), 500);
    }
}

#[test]
fn server_faults_are_500_client_faults_400() {
    assert_eq!(KmsError::Internal("x".into()).status(), 500);
    assert_eq!(KmsError::DependencyTimeout("x".into()).status(), 500);
    assert_eq!(KmsError::KeyUnavailable("x".into()).status(), 500);
    assert_eq!(KmsError::NotFound("x".into()).status(), 400);
    assert_eq!(KmsError::Throttling.status(), 400);
}

/// The words of an identity-policy refusal (`auth::Denied`, converted at
/// the http layer with no resource), as AWS sends them.
#[test]
fn identity_refusals_are_aws_texts() {
    let arn = "arn:aws:iam::111122223333:user/app";
    let e = access_denied(arn, "kms:CreateKey", None, Refusal::NoIdentityAllow);
    assert_eq!(e.type_name(), "AccessDeniedException");
    assert_eq!(
        e.message().unwrap(),
        "User: arn:aws:iam::111122223333:user/app is not authorized to perform: kms:CreateKey because no identity-based policy allows the kms:CreateKey action"
    );
    let e = access_denied(arn, "kms:CreateKey", None, Refusal::DenyInIdentityPolicy);
    assert_eq!(
        e.message().unwrap(),
        "User: arn:aws:iam::111122223333:user/app is not authorized to perform: kms:CreateKey with an explicit deny in an identity-based policy"
    );
}
