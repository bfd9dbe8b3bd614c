//! Keys: CreateKey's metadata, key ids AWS does not know, ListKeys paging,
//! disabling and scheduled deletion, and the key specs kmsgate refuses.

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState};

#[tokio::test]
async fn create_key_returns_the_metadata_aws_returns_for_a_symmetric_key() {
    let gw = Gateway::start();
    let kms = gw.client();
    let out = kms
        .create_key()
        .description("test key 123")
        .send()
        .await
        .unwrap();
    let m = out.key_metadata.unwrap();
    assert_eq!(m.aws_account_id.as_deref(), Some(ACCOUNT));
    assert_eq!(m.arn.as_deref(), Some(key_arn(&m.key_id).as_str()));
    assert_eq!(m.key_id.len(), 36);
    assert_eq!(m.description.as_deref(), Some("test key 123"));
    assert!(m.enabled);
    assert_eq!(m.key_state, Some(KeyState::Enabled));
    assert_eq!(m.key_usage.unwrap().as_str(), "ENCRYPT_DECRYPT");
    assert_eq!(m.key_spec.unwrap().as_str(), "SYMMETRIC_DEFAULT");
    #[allow(deprecated)]
    let cmk_spec = m.customer_master_key_spec.unwrap();
    assert_eq!(cmk_spec.as_str(), "SYMMETRIC_DEFAULT");
    assert_eq!(m.origin.unwrap().as_str(), "AWS_KMS");
    assert_eq!(m.key_manager.unwrap().as_str(), "CUSTOMER");
    assert_eq!(m.multi_region, Some(false));
    assert_eq!(
        m.encryption_algorithms
            .unwrap()
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect::<Vec<_>>(),
        vec!["SYMMETRIC_DEFAULT"]
    );
    let material = m.current_key_material_id.unwrap();
    assert_eq!(material.len(), 64);
    let created = m.creation_date.unwrap().secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - created).abs() < 60,
        "CreationDate {created} vs now {now}"
    );
    assert!(m.deletion_date.is_none());

    // Description defaults to "" and DescribeKey agrees with CreateKey.
    let plain = create_key(&kms).await;
    let d = kms.describe_key().key_id(&plain).send().await.unwrap();
    assert_eq!(d.key_metadata.unwrap().description.as_deref(), Some(""));
}

#[tokio::test]
async fn unknown_and_malformed_key_ids_give_aws_not_found_messages() {
    let gw = Gateway::start();
    let kms = gw.client();
    let unknown = "1234abcd-12ab-34cd-56ef-1234567890ab";
    for id in [unknown.to_owned(), key_arn(unknown)] {
        let e = kms.describe_key().key_id(&id).send().await.unwrap_err();
        assert_eq!(
            error_of(&e),
            (
                "NotFoundException".into(),
                format!("Key '{}' does not exist", key_arn(unknown))
            )
        );
    }
    let e = kms
        .describe_key()
        .key_id("fake-key-id")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "NotFoundException".into(),
            "Invalid keyId 'fake-key-id'".into()
        )
    );
    let other_region = format!("arn:aws:kms:us-west-2:{ACCOUNT}:key/{unknown}");
    let e = kms
        .describe_key()
        .key_id(other_region)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        ("NotFoundException".into(), "Invalid arn us-west-2".into())
    );
}

#[tokio::test]
async fn list_keys_pages_through_every_key_with_markers() {
    let gw = Gateway::start();
    let kms = gw.client();
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(create_key(&kms).await);
    }
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let out = kms
            .list_keys()
            .limit(2)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        for k in out.keys.unwrap_or_default() {
            assert_eq!(k.key_arn.unwrap(), key_arn(k.key_id.as_deref().unwrap()));
            seen.push(k.key_id.unwrap());
        }
        if !out.truncated {
            assert!(out.next_marker.is_none());
            break;
        }
        marker = out.next_marker;
        assert!(marker.is_some());
    }
    assert_eq!(pages, 3);
    created.sort();
    seen.sort();
    assert_eq!(seen, created);
}

#[tokio::test]
async fn disabled_key_refuses_cryptography_until_enabled() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    kms.disable_key().key_id(&id).send().await.unwrap();
    let m = kms.describe_key().key_id(&id).send().await.unwrap();
    let m = m.key_metadata.unwrap();
    assert_eq!((m.enabled, m.key_state), (false, Some(KeyState::Disabled)));
    let e = kms
        .generate_data_key()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "DisabledException".into(),
            format!("{} is disabled.", key_arn(&id))
        )
    );
    let e = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "DisabledException");
    kms.enable_key().key_id(&id).send().await.unwrap();
    kms.encrypt()
        .key_id(&id)
        .plaintext(Blob::new("x"))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn scheduled_deletion_blocks_use_and_cancelling_leaves_the_key_disabled() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    let ct = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new("secret"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();

    for bad in [6, 31] {
        let e = kms
            .schedule_key_deletion()
            .key_id(&id)
            .pending_window_in_days(bad)
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_of(&e).0, "ValidationException", "window {bad}");
    }

    let out = kms
        .schedule_key_deletion()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(out.key_id.as_deref(), Some(key_arn(&id).as_str()));
    assert_eq!(out.pending_window_in_days, Some(30));
    assert_eq!(out.key_state, Some(KeyState::PendingDeletion));
    let m = kms
        .describe_key()
        .key_id(&id)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(m.key_state, Some(KeyState::PendingDeletion));
    assert!(!m.enabled);
    assert_eq!(m.pending_deletion_window_in_days, Some(30));
    let deletion = m.deletion_date.unwrap().secs();
    let creation = m.creation_date.unwrap().secs();
    assert!((deletion - creation - 30 * 86_400).abs() < 120);

    let pending = format!("{} is pending deletion.", key_arn(&id));
    let e = kms
        .decrypt()
        .ciphertext_blob(ct.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        ("KMSInvalidStateException".into(), pending.clone())
    );
    let e = kms
        .generate_data_key()
        .key_id(&id)
        .number_of_bytes(32)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        ("KMSInvalidStateException".into(), pending.clone())
    );
    let e = kms
        .schedule_key_deletion()
        .key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "KMSInvalidStateException");
    let e = kms.enable_key().key_id(&id).send().await.unwrap_err();
    assert_eq!(error_of(&e).0, "KMSInvalidStateException");

    let out = kms.cancel_key_deletion().key_id(&id).send().await.unwrap();
    assert_eq!(out.key_id.as_deref(), Some(key_arn(&id).as_str()));
    let m = kms
        .describe_key()
        .key_id(&id)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(m.key_state, Some(KeyState::Disabled));
    assert!(m.deletion_date.is_none());
    kms.enable_key().key_id(&id).send().await.unwrap();
    let pt = kms.decrypt().ciphertext_blob(ct).send().await.unwrap();
    assert_eq!(pt.plaintext.unwrap().as_ref(), b"secret");
}

#[tokio::test]
async fn create_key_refuses_what_kmsgate_cannot_keep_on_the_token_and_creates_nothing() {
    let gw = Gateway::start();
    let cases: [(&str, &str, &str); 5] = [
        (
            r#"{"KeySpec":"HMAC_random"}"#,
            "ValidationException",
            "1 validation error detected: Value 'HMAC_random' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [RSA_2048, ECC_NIST_P384, ECC_NIST_P256, ECC_NIST_P521, HMAC_384, RSA_3072, ECC_SECG_P256K1, RSA_4096, SYMMETRIC_DEFAULT, HMAC_256, HMAC_224, HMAC_512, SM2, ML_DSA_44, ML_DSA_65, ML_DSA_87, ECC_NIST_EDWARDS25519]",
        ),
        (
            r#"{"KeyUsage":"RANDOM"}"#,
            "ValidationException",
            "1 validation error detected: Value 'RANDOM' at 'keyUsage' failed to satisfy constraint: Member must satisfy enum value set: [ENCRYPT_DECRYPT, SIGN_VERIFY, GENERATE_VERIFY_MAC, KEY_AGREEMENT]",
        ),
        (
            r#"{"KeySpec":"HMAC_256"}"#,
            "ValidationException",
            "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys.",
        ),
        (
            r#"{"KeySpec":"ECC_SECG_P256K1","KeyUsage":"KEY_AGREEMENT"}"#,
            "ValidationException",
            "KeyUsage KEY_AGREEMENT is not compatible with KeySpec ECC_SECG_P256K1",
        ),
        (
            r#"{"Tags":[{"TagKey":"aws:owner","TagValue":"x"}]}"#,
            "TagException",
            "Tags beginning with aws: are reserved",
        ),
    ];
    for (body, error, message) in cases {
        let r = gw.raw(Some("TrentService.CreateKey"), body.as_bytes(), true);
        assert_eq!(
            (r.status, r.error_type(), r.message()),
            (400, error, message),
            "{body}"
        );
    }
    let keys = gw.client().list_keys().send().await.unwrap();
    assert!(
        keys.keys.unwrap_or_default().is_empty(),
        "nothing was created"
    );
}
