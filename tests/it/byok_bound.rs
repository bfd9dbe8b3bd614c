//! An imported (EXTERNAL) key's material is only ever what its owner
//! imported (DESIGN.md decision 23). So at the GCM usage bound such a key
//! does not rotate to material the token makes, as a key of origin AWS_KMS
//! does: it refuses further encryptions, and every ciphertext it ever made
//! comes back when its owner imports the same material again.

use aws_sdk_kms::primitives::Blob;

use crate::common::*;
use crate::import::{create_external, import_material};

const BOUND: u8 = 5;

fn bounded() -> std::sync::Arc<Token> {
    Token::with_config(&format!(
        "[keys]\ngcm_usage_bound = {BOUND}\ngcm_reserve_block = 1\n"
    ))
}

/// KMSInvalidStateException, naming the key and saying what to do.
fn assert_usage_limit<E, R>(e: &aws_sdk_kms::error::SdkError<E, R>, key: &str)
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    let (code, message) = error_of(e);
    assert_eq!(code, "KMSInvalidStateException", "{message}");
    assert!(message.contains(&key_arn(key)), "{message}");
    assert!(
        message.contains("usage limit for AES-GCM")
            && message.contains("import new key material into a new key"),
        "{message}"
    );
}

#[tokio::test]
async fn an_imported_key_at_the_gcm_bound_refuses_to_encrypt_and_keeps_every_ciphertext() {
    let gw = Gateway::start_on(bounded());
    let kms = gw.client();
    let key = create_external(&kms).await;
    let material: [u8; 32] = rand::random();
    import_material(&kms, &key, &material).await;

    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for i in 0..12u8 {
        match kms
            .encrypt()
            .key_id(&key)
            .plaintext(Blob::new(vec![i]))
            .send()
            .await
        {
            Ok(out) => accepted.push((i, out.ciphertext_blob.unwrap())),
            Err(e) => refused.push((i, e)),
        }
    }

    // Every ciphertext the key accepted to make survives the deletion of
    // the material and its re-import.
    kms.delete_imported_key_material()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    import_material(&kms, &key, &material).await;
    let mut lost = Vec::new();
    for (i, blob) in &accepted {
        match kms.decrypt().ciphertext_blob(blob.clone()).send().await {
            Ok(out) => assert_eq!(out.plaintext.unwrap().into_inner(), vec![*i]),
            Err(e) => lost.push((i + 1, error_of(&e).0)),
        }
    }
    assert!(
        lost.is_empty(),
        "encryptions (1-based) whose ciphertexts were lost: {lost:?}"
    );

    // The first BOUND were made; every one after was refused, and the key
    // never rotated.
    let made: Vec<u8> = accepted.iter().map(|(i, _)| *i).collect();
    assert_eq!(made, (0..BOUND).collect::<Vec<_>>());
    assert_eq!(refused.len(), 12 - usize::from(BOUND));
    for (_, e) in &refused {
        assert_usage_limit(e, &key);
        assert_eq!(e.raw_response().unwrap().status().as_u16(), 400);
    }
    assert!(rotations(&kms, &key).await.is_empty());

    // Re-importing the material does not reset its count: the key still
    // refuses, for the data key operations too, and still decrypts.
    let again = kms
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"more".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_usage_limit(&again, &key);
    let dk = kms
        .generate_data_key()
        .key_id(&key)
        .number_of_bytes(32)
        .send()
        .await
        .unwrap_err();
    assert_usage_limit(&dk, &key);
    let dk = kms
        .generate_data_key_without_plaintext()
        .key_id(&key)
        .number_of_bytes(32)
        .send()
        .await
        .unwrap_err();
    assert_usage_limit(&dk, &key);
    assert!(rotations(&kms, &key).await.is_empty());
    assert_eq!(decrypt(&kms, accepted[0].1.clone()).await, vec![0]);
    let meta = key_metadata(&kms, &key).await;
    assert_eq!(meta.key_state, Some(aws_sdk_kms::types::KeyState::Enabled));
}
