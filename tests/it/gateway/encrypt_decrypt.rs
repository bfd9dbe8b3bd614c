//! Encrypt, Decrypt and ReEncrypt: the plaintext limit, damaged and foreign
//! ciphertexts, the wrong key, moving a ciphertext to another key.

use super::base64_encode;
use crate::common::*;
use aws_sdk_kms::primitives::Blob;

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
