//! Black-box specification of kmsgate: the real binary on a real SoftHSM2
//! token, driven by the AWS SDK for Rust (aws-sdk-kms) and by raw HTTP where
//! the SDK would refuse to send what we need to test.

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState};

// ---------------------------------------------------------------- keys

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

// ---------------------------------------------------------------- aliases

#[tokio::test]
async fn aliases_name_keys_in_every_key_id_parameter() {
    let gw = Gateway::start();
    let kms = gw.client();
    let a = create_key(&kms).await;
    let b = create_key(&kms).await;
    kms.create_alias()
        .alias_name("alias/app")
        .target_key_id(&a)
        .send()
        .await
        .unwrap();
    let alias_arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/app");
    for name in ["alias/app", alias_arn.as_str()] {
        let m = kms.describe_key().key_id(name).send().await.unwrap();
        assert_eq!(m.key_metadata.unwrap().key_id, a);
        let out = kms
            .encrypt()
            .key_id(name)
            .plaintext(Blob::new("hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(out.key_id.as_deref(), Some(key_arn(&a).as_str()));
    }

    let e = kms
        .create_alias()
        .alias_name("alias/app")
        .target_key_id(&b)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "AlreadyExistsException".into(),
            format!("An alias with the name {alias_arn} already exists")
        )
    );

    kms.update_alias()
        .alias_name("alias/app")
        .target_key_id(&b)
        .send()
        .await
        .unwrap();
    let m = kms.describe_key().key_id("alias/app").send().await.unwrap();
    assert_eq!(m.key_metadata.unwrap().key_id, b);

    let listed = kms.list_aliases().key_id(&b).send().await.unwrap();
    let aliases = listed.aliases.unwrap();
    assert_eq!(aliases.len(), 1);
    assert_eq!(aliases[0].alias_name.as_deref(), Some("alias/app"));
    assert_eq!(aliases[0].alias_arn.as_deref(), Some(alias_arn.as_str()));
    assert_eq!(aliases[0].target_key_id.as_deref(), Some(b.as_str()));
    assert!(aliases[0].creation_date.is_some());
    let none = kms.list_aliases().key_id(&a).send().await.unwrap();
    assert!(none.aliases.unwrap_or_default().is_empty());

    kms.delete_alias()
        .alias_name("alias/app")
        .send()
        .await
        .unwrap();
    let e = kms
        .describe_key()
        .key_id("alias/app")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "NotFoundException".into(),
            format!("Alias {alias_arn} is not found.")
        )
    );
}

#[tokio::test]
async fn alias_names_are_validated_as_aws_does() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    let e = kms
        .create_alias()
        .alias_name("app")
        .target_key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "ValidationException".into(),
            "Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html".into()
        )
    );
    let e = kms
        .create_alias()
        .alias_name("alias/aws/mine")
        .target_key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "InvalidAliasNameException");
    let e = kms
        .create_alias()
        .alias_name("alias/has space")
        .target_key_id(&id)
        .send()
        .await
        .unwrap_err();
    let (code, message) = error_of(&e);
    assert_eq!(code, "ValidationException");
    assert!(
        message.contains("Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"),
        "{message}"
    );
    // Nothing was created by the refused requests.
    let all = kms.list_aliases().send().await.unwrap();
    assert!(all.aliases.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn list_aliases_pages() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    for n in 0..5 {
        kms.create_alias()
            .alias_name(format!("alias/a{n}"))
            .target_key_id(&id)
            .send()
            .await
            .unwrap();
    }
    let first = kms.list_aliases().limit(3).send().await.unwrap();
    assert!(first.truncated);
    let names: Vec<_> = first
        .aliases
        .unwrap()
        .into_iter()
        .map(|a| a.alias_name.unwrap())
        .collect();
    assert_eq!(names, ["alias/a0", "alias/a1", "alias/a2"]);
    let rest = kms
        .list_aliases()
        .limit(3)
        .marker(first.next_marker.unwrap())
        .send()
        .await
        .unwrap();
    assert!(!rest.truncated);
    let names: Vec<_> = rest
        .aliases
        .unwrap()
        .into_iter()
        .map(|a| a.alias_name.unwrap())
        .collect();
    assert_eq!(names, ["alias/a3", "alias/a4"]);
}

// ---------------------------------------------------------------- data keys

#[tokio::test]
async fn generate_data_key_round_trips_through_decrypt_with_its_context() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    let out = kms
        .generate_data_key()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .encryption_context("Purpose", "Test")
        .send()
        .await
        .unwrap();
    let plaintext = out.plaintext.unwrap();
    assert_eq!(plaintext.as_ref().len(), 32);
    assert_eq!(out.key_id.as_deref(), Some(key_arn(&id).as_str()));
    let material = out.key_material_id.unwrap();
    assert_eq!(material.len(), 64);
    let blob = out.ciphertext_blob.unwrap();

    let back = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("Purpose", "Test")
        .send()
        .await
        .unwrap();
    assert_eq!(back.plaintext.unwrap(), plaintext);
    assert_eq!(back.key_id.as_deref(), Some(key_arn(&id).as_str()));
    assert_eq!(
        back.encryption_algorithm.unwrap().as_str(),
        "SYMMETRIC_DEFAULT"
    );
    assert_eq!(back.key_material_id.as_deref(), Some(material.as_str()));

    // With the KeyId named (as the Encryption SDK does) it works the same.
    let named = kms
        .decrypt()
        .key_id(key_arn(&id))
        .ciphertext_blob(blob)
        .encryption_context("Purpose", "Test")
        .send()
        .await
        .unwrap();
    assert_eq!(named.plaintext.unwrap(), plaintext);

    // Sizes: AES_128 is 16 bytes, NumberOfBytes n is n bytes.
    let small = kms
        .generate_data_key()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes128)
        .send()
        .await
        .unwrap();
    assert_eq!(small.plaintext.unwrap().as_ref().len(), 16);
    for n in [1, 64, 1024] {
        let out = kms
            .generate_data_key()
            .key_id(&id)
            .number_of_bytes(n)
            .send()
            .await
            .unwrap();
        assert_eq!(out.plaintext.unwrap().as_ref().len(), n as usize);
    }
}

#[tokio::test]
async fn generate_data_key_without_plaintext_returns_only_a_decryptable_blob() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    let out = kms
        .generate_data_key_without_plaintext()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .encryption_context("k", "v")
        .send()
        .await
        .unwrap();
    assert_eq!(out.key_id.as_deref(), Some(key_arn(&id).as_str()));
    let back = kms
        .decrypt()
        .ciphertext_blob(out.ciphertext_blob.unwrap())
        .encryption_context("k", "v")
        .send()
        .await
        .unwrap();
    assert_eq!(back.plaintext.unwrap().as_ref().len(), 32);
}

#[tokio::test]
async fn key_spec_and_number_of_bytes_are_exclusive_and_bounded() {
    let gw = Gateway::start();
    let id = create_key(&gw.client()).await;
    let cases = [
        (
            format!(r#"{{"KeyId":"{id}"}}"#),
            "Please specify either number of bytes or key spec.".to_owned(),
        ),
        (
            format!(r#"{{"KeyId":"{id}","KeySpec":"AES_256","NumberOfBytes":32}}"#),
            "Please specify either number of bytes or key spec.".to_owned(),
        ),
        (
            format!(r#"{{"KeyId":"{id}","NumberOfBytes":1025}}"#),
            "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to 1024".to_owned(),
        ),
        (
            format!(r#"{{"KeyId":"{id}","KeySpec":"AES_512"}}"#),
            "1 validation error detected: Value 'AES_512' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]".to_owned(),
        ),
        (
            r#"{"NumberOfBytes":32}"#.to_owned(),
            "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null".to_owned(),
        ),
    ];
    for (body, message) in cases {
        let r = gw.raw(Some("TrentService.GenerateDataKey"), body.as_bytes(), true);
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.error_type(), "ValidationException", "{body}");
        assert_eq!(r.message(), message, "{body}");
    }
}

// ---------------------------------------------------------------- encrypt / decrypt

#[tokio::test]
async fn encrypt_takes_up_to_4096_bytes() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    let big = vec![7u8; 4096];
    let out = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(big.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.encryption_algorithm.unwrap().as_str(),
        "SYMMETRIC_DEFAULT"
    );
    assert_eq!(out.key_id.as_deref(), Some(key_arn(&id).as_str()));
    let blob = out.ciphertext_blob.unwrap();
    assert!(blob.as_ref().len() <= 6144);
    let back = kms.decrypt().ciphertext_blob(blob).send().await.unwrap();
    assert_eq!(back.plaintext.unwrap().as_ref(), big.as_slice());

    let e = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(vec![7u8; 4097]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "ValidationException".into(),
            "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length less than or equal to 4096".into()
        )
    );
}

#[tokio::test]
async fn damaged_or_foreign_ciphertexts_are_invalid_ciphertext_without_message() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    let blob = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new("attack at dawn"))
        .encryption_context("user", "alice")
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap()
        .into_inner();

    type Variant<'a> = (String, Vec<u8>, Option<(&'a str, &'a str)>);
    let mut variants: Vec<Variant> = vec![
        ("no context".into(), blob.clone(), None),
        (
            "other context".into(),
            blob.clone(),
            Some(("user", "mallory")),
        ),
        (
            "truncated".into(),
            blob[..blob.len() - 5].to_vec(),
            Some(("user", "alice")),
        ),
        (
            "random bytes".into(),
            (0..80u8)
                .map(|i| i.wrapping_mul(37).wrapping_add(11))
                .collect(),
            None,
        ),
    ];
    for i in [0, 5, 21, 30, blob.len() - 1] {
        let mut flipped = blob.clone();
        flipped[i] ^= 0x01;
        variants.push((
            format!("byte {i} flipped"),
            flipped,
            Some(("user", "alice")),
        ));
    }
    for (what, bytes, context) in variants {
        let mut req = kms.decrypt().ciphertext_blob(Blob::new(bytes.clone()));
        if let Some((k, v)) = context {
            req = req.encryption_context(k, v);
        }
        let e = req.send().await.unwrap_err();
        let code = error_of(&e).0;
        // Flipping a key-id byte names a key that does not exist here.
        if what == "byte 5 flipped" {
            assert_eq!(code, "AccessDeniedException", "{what}");
            continue;
        }
        assert_eq!(code, "InvalidCiphertextException", "{what}");

        // On the wire: no message member at all, as AWS sends it.
        let body = serde_json::json!({
            "CiphertextBlob": base64_encode(&bytes),
            "EncryptionContext": context.map(|(k, v)| serde_json::json!({k: v})).unwrap_or(serde_json::json!({})),
        });
        let r = gw.raw(
            Some("TrentService.Decrypt"),
            body.to_string().as_bytes(),
            true,
        );
        assert_eq!(r.status, 400);
        assert_eq!(
            r.body,
            serde_json::json!({"__type": "InvalidCiphertextException"}),
            "{what}"
        );
    }
}

#[tokio::test]
async fn decrypt_with_another_keys_id_is_incorrect_key() {
    let gw = Gateway::start();
    let kms = gw.client();
    let a = create_key(&kms).await;
    let b = create_key(&kms).await;
    let blob = kms
        .encrypt()
        .key_id(&a)
        .plaintext(Blob::new("x"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    let e = kms
        .decrypt()
        .key_id(&b)
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "IncorrectKeyException".into(),
            "The key ID in the request does not identify a CMK that can perform this operation."
                .into()
        )
    );
}

#[tokio::test]
async fn re_encrypt_moves_a_ciphertext_to_another_key_and_context() {
    let gw = Gateway::start();
    let kms = gw.client();
    let a = create_key(&kms).await;
    let b = create_key(&kms).await;
    let blob = kms
        .encrypt()
        .key_id(&a)
        .plaintext(Blob::new("payload"))
        .encryption_context("v", "1")
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    let out = kms
        .re_encrypt()
        .ciphertext_blob(blob)
        .source_encryption_context("v", "1")
        .destination_key_id(&b)
        .destination_encryption_context("v", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(out.source_key_id.as_deref(), Some(key_arn(&a).as_str()));
    assert_eq!(out.key_id.as_deref(), Some(key_arn(&b).as_str()));
    assert_eq!(
        out.source_encryption_algorithm.unwrap().as_str(),
        "SYMMETRIC_DEFAULT"
    );
    let back = kms
        .decrypt()
        .ciphertext_blob(out.ciphertext_blob.unwrap())
        .encryption_context("v", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(back.plaintext.unwrap().as_ref(), b"payload");
    assert_eq!(back.key_id.as_deref(), Some(key_arn(&b).as_str()));
}

#[tokio::test]
async fn generate_random_returns_exactly_the_bytes_asked_for() {
    let gw = Gateway::start();
    let kms = gw.client();
    for n in [1, 12, 44, 91, 1024] {
        let out = kms
            .generate_random()
            .number_of_bytes(n)
            .send()
            .await
            .unwrap();
        assert_eq!(out.plaintext.unwrap().as_ref().len(), n as usize);
    }
    let cases = [
        ("{}", "NumberOfBytes is required."),
        (
            r#"{"NumberOfBytes":0}"#,
            "1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy constraint: Member must have value greater than or equal to 1",
        ),
        (
            r#"{"NumberOfBytes":1025}"#,
            "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to 1024",
        ),
    ];
    for (body, message) in cases {
        let r = gw.raw(Some("TrentService.GenerateRandom"), body.as_bytes(), true);
        assert_eq!(
            (r.status, r.error_type(), r.message()),
            (400, "ValidationException", message)
        );
    }
}

// ---------------------------------------------------------------- protocol

#[tokio::test]
async fn protocol_errors_are_aws_shaped_and_every_response_has_a_request_id() {
    let gw = Gateway::start();
    let cases: [(Option<&str>, &[u8], u16, &str); 6] = [
        (
            Some("TrentService.NoSuchThing"),
            b"{}",
            400,
            "UnknownOperationException",
        ),
        (
            Some("Other.ListKeys"),
            b"{}",
            400,
            "UnknownOperationException",
        ),
        (None, b"{}", 400, "UnknownOperationException"),
        (
            Some("TrentService.ListKeys"),
            b"{not json",
            400,
            "SerializationException",
        ),
        (
            Some("TrentService.ListKeys"),
            br#"{"Limit":"ten"}"#,
            400,
            "SerializationException",
        ),
        (
            Some("TrentService.ReplicateKey"),
            b"{}",
            400,
            "UnsupportedOperationException",
        ),
    ];
    for (target, body, status, error) in cases {
        let r = gw.raw(target, body, true);
        assert_eq!((r.status, r.error_type()), (status, error), "{target:?}");
        assert_eq!(r.header("x-amzn-errortype"), Some(error));
        let id = r.header("x-amzn-requestid").unwrap_or_default();
        assert_eq!(id.len(), 36, "request id {id:?}");
    }
    let ok = gw.raw(Some("TrentService.ListKeys"), b"", true);
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("content-type"),
        Some("application/x-amz-json-1.1")
    );
    assert!(ok.header("x-amzn-requestid").is_some());
    assert_eq!(ok.body["Truncated"], serde_json::json!(false));
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_parsing() {
    let gw = Gateway::start();
    let body = vec![b' '; 200 * 1024];
    let r = gw.raw(Some("TrentService.ListKeys"), &body, true);
    assert_eq!(r.status, 413);
    assert_eq!(r.error_type(), "RequestEntityTooLargeException");
}

// ---------------------------------------------------------------- authentication

#[tokio::test]
async fn requests_must_be_signed_with_a_configured_credential() {
    let gw = Gateway::start();
    let r = gw.raw(Some("TrentService.ListKeys"), b"{}", false);
    assert_eq!(
        (r.status, r.error_type()),
        (400, "MissingAuthenticationTokenException")
    );

    let e = gw
        .client_as("AKIAUNKNOWNUNKNOWN00", SECRET, REGION)
        .list_keys()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "UnrecognizedClientException".into(),
            "The security token included in the request is invalid.".into()
        )
    );

    let e = gw
        .client_as(ACCESS_KEY, "not-the-secret", REGION)
        .create_key()
        .send()
        .await
        .unwrap_err();
    let (code, message) = error_of(&e);
    assert_eq!(code, "InvalidSignatureException");
    assert!(
        message.starts_with("The request signature we calculated does not match"),
        "{message}"
    );
    // The refused CreateKey created nothing.
    let keys = gw.client().list_keys().send().await.unwrap();
    assert!(keys.keys.unwrap_or_default().is_empty());

    let e = gw
        .client_as(ACCESS_KEY, SECRET, "eu-west-1")
        .list_keys()
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "InvalidSignatureException");

    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(6 * 60);
    let r = gw.raw_with(Some("TrentService.ListKeys"), b"{}", Some(old), &[]);
    assert_eq!(r.error_type(), "InvalidSignatureException");
    assert!(
        r.message().starts_with("Signature expired"),
        "{}",
        r.message()
    );
}

// ---------------------------------------------------------------- persistence

#[tokio::test]
async fn a_restart_keeps_keys_aliases_and_states_and_old_ciphertexts_decrypt() {
    let gw = Gateway::start();
    let kms = gw.client();
    let live = create_key(&kms).await;
    let off = create_key(&kms).await;
    let doomed = create_key(&kms).await;
    kms.create_alias()
        .alias_name("alias/live")
        .target_key_id(&live)
        .send()
        .await
        .unwrap();
    kms.disable_key().key_id(&off).send().await.unwrap();
    kms.schedule_key_deletion()
        .key_id(&doomed)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let blob = kms
        .encrypt()
        .key_id("alias/live")
        .plaintext(Blob::new("kept"))
        .encryption_context("a", "b")
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();

    let token = gw.stop();
    let gw = Gateway::start_on(token);
    let kms = gw.client();
    let state = |id: String| {
        let kms = kms.clone();
        async move { key_metadata(&kms, &id).await.key_state.unwrap() }
    };
    assert_eq!(state(live.clone()).await, KeyState::Enabled);
    assert_eq!(state(off.clone()).await, KeyState::Disabled);
    assert_eq!(state(doomed.clone()).await, KeyState::PendingDeletion);
    assert_eq!(state("alias/live".into()).await, KeyState::Enabled);
    let back = kms
        .decrypt()
        .ciphertext_blob(blob)
        .encryption_context("a", "b")
        .send()
        .await
        .unwrap();
    assert_eq!(back.plaintext.unwrap().as_ref(), b"kept");
    let keys = kms.list_keys().send().await.unwrap().keys.unwrap();
    assert_eq!(keys.len(), 3);
}

#[tokio::test]
async fn a_second_gateway_on_the_same_token_serves_keys_the_first_created() {
    let first = Gateway::start();
    let second = Gateway::start_on(first.token.clone());
    let id = create_key(&first.client()).await;
    first
        .client()
        .create_alias()
        .alias_name("alias/shared")
        .target_key_id(&id)
        .send()
        .await
        .unwrap();
    let blob = first
        .client()
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new("from one"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    let back = second
        .client()
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap();
    assert_eq!(back.plaintext.unwrap().as_ref(), b"from one");
    let m = second
        .client()
        .describe_key()
        .key_id("alias/shared")
        .send()
        .await
        .unwrap();
    assert_eq!(m.key_metadata.unwrap().key_id, id);
}

// ---------------------------------------------------------------- custody

#[tokio::test]
async fn master_keys_cannot_be_read_or_wrapped_out_of_the_token() {
    let gw = Gateway::start();
    let kms = gw.client();
    let a = create_key(&kms).await;
    let b = create_key(&kms).await;
    let token = gw.stop();
    let config = token.config();
    let (ok, stdout, stderr) = token.run_cli(&["check-keys", "--config", config.to_str().unwrap()]);
    assert!(ok, "check-keys failed:\n{stdout}\n{stderr}");
    for id in [&a, &b] {
        let line = stdout
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("no line for {id} in:\n{stdout}"));
        for fact in [
            "sensitive=true",
            "extractable=false",
            "never_extractable=true",
            "value_readable=false",
            "wrap_out=refused",
        ] {
            assert!(line.contains(fact), "{fact} missing in: {line}");
        }
    }
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    let dk = kms
        .generate_data_key()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    let plaintext = base64_encode(dk.plaintext.unwrap().as_ref());
    let _ = gw
        .client_as(ACCESS_KEY, "wrong-secret-value-zzz", REGION)
        .list_keys()
        .send()
        .await;
    // Every record up to the refused one is in the log before it is read.
    assert!(
        gw.log_has(|l| l.contains("kmsgate::audit") && l.contains("InvalidSignatureException")),
        "no audit record of the refused signature in:\n{}",
        gw.log()
    );
    let log = gw.log();
    assert!(log.contains(&id), "audit records name the key");
    for secret in [PIN, SECRET, plaintext.as_str(), "wrong-secret-value-zzz"] {
        assert!(!log.contains(secret), "secret {secret:?} in the log");
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---------------------------------------------------------------- back-pressure

#[tokio::test]
async fn a_saturated_token_fails_requests_fast_and_recovers() {
    // One session and room for one waiting request: most of 64 concurrent
    // requests find the queue full, and a waiting one may pass its deadline.
    let token = Token::with_config("");
    let config = std::fs::read_to_string(token.config()).unwrap().replace(
        "[hsm]\n",
        "[hsm]\nsessions = 1\nqueue_depth = 1\nqueue_timeout_ms = 50\n",
    );
    std::fs::write(token.config(), config).unwrap();
    let gw = Gateway::start_on(token);
    let kms = gw.client();
    // The background sync shares the one session and queue place, so a
    // lone request may be refused too: retry as an SDK would.
    let mut id = None;
    for _ in 0..40 {
        match kms.create_key().send().await {
            Ok(o) => {
                id = Some(o.key_metadata.unwrap().key_id);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let id = id.expect("CreateKey succeeds within 40 tries");
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let kms = kms.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            kms.generate_data_key()
                .key_id(id)
                .number_of_bytes(32)
                .send()
                .await
                .map_err(|e| error_of(&e).0)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(code) => {
                assert!(
                    code == "ThrottlingException" || code == "DependencyTimeoutException",
                    "unexpected {code}"
                );
                refused += 1;
            }
        }
    }
    eprintln!(
        "saturated token: {ok} of 64 concurrent requests served, {refused} refused at once \
         in {:?}",
        started.elapsed()
    );
    assert!(ok >= 1, "some requests are served");
    assert!(
        refused >= 1,
        "an overfull queue refuses instead of queueing forever"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // Once the burst is over, requests succeed again (within a few tries:
    // the background sync may hold the one queue place for a moment).
    let mut served = false;
    for _ in 0..40 {
        if kms
            .generate_data_key()
            .key_id(&id)
            .number_of_bytes(32)
            .send()
            .await
            .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(served, "requests are served again after the burst");
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

#[tokio::test]
async fn dry_run_checks_everything_and_does_nothing() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    let e = kms
        .generate_data_key()
        .key_id(&id)
        .number_of_bytes(32)
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "DryRunOperationException".into(),
            "The request would have succeeded, but the DryRun option is set.".into()
        )
    );
    // A dry run of something that would fail reports the failure.
    kms.disable_key().key_id(&id).send().await.unwrap();
    let e = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new("x"))
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "DisabledException");
}

#[tokio::test]
async fn a_credential_restricted_to_some_actions_is_refused_the_others() {
    const APP_KEY: &str = "AKIAKMSGATEAPPONLY01";
    const APP_SECRET: &str = "app-secret-0123456789abcdefghijklmnopqrs";
    let token = Token::with_config(&format!(
        "[[auth.credentials]]\naccess_key_id = \"{APP_KEY}\"\nsecret_env = \"KMSGATE_TEST_APP_SECRET\"\nprincipal = \"app\"\nallow = [\"kms:Decrypt\", \"kms:GenerateDataKey*\", \"kms:DescribeKey\"]\n"
    ));
    let gw = Gateway::start_on_with_env(token, &[("KMSGATE_TEST_APP_SECRET", APP_SECRET)]);
    let admin = gw.client();
    let app = gw.client_as(APP_KEY, APP_SECRET, REGION);
    let id = create_key(&admin).await;

    let dk = app
        .generate_data_key()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    app.decrypt()
        .ciphertext_blob(dk.ciphertext_blob.unwrap())
        .send()
        .await
        .unwrap();
    app.describe_key().key_id(&id).send().await.unwrap();

    let e = app
        .schedule_key_deletion()
        .key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "AccessDeniedException".into(),
            format!(
                "User: arn:aws:iam::{ACCOUNT}:user/app is not authorized to perform: kms:ScheduleKeyDeletion on resource: arn:aws:kms:{REGION}:{ACCOUNT}:key/{id} because no identity-based policy allows the kms:ScheduleKeyDeletion action"
            )
        )
    );
    let e = app.create_key().send().await.unwrap_err();
    assert_eq!(error_of(&e).0, "AccessDeniedException");
    // Refused requests changed nothing.
    let m = admin.describe_key().key_id(&id).send().await.unwrap();
    assert_eq!(m.key_metadata.unwrap().key_state, Some(KeyState::Enabled));
    assert_eq!(
        admin.list_keys().send().await.unwrap().keys.unwrap().len(),
        1
    );
}
