//! Data keys and random bytes from the token: GenerateDataKey (with and
//! without plaintext), its size parameters, GenerateRandom.

use crate::common::*;
use aws_sdk_kms::types::DataKeySpec;

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
