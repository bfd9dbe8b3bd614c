//! Black-box specification of RSA encryption keys (ENCRYPT_DECRYPT with
//! an RSA key spec): RSAES_OAEP_SHA_1 and RSAES_OAEP_SHA_256 Encrypt and
//! Decrypt on the token, and what AWS refuses. A ciphertext made by an
//! independent implementation (RustCrypto's `rsa`) with the public key
//! GetPublicKey returned decrypts in kmsgate; kmsgate's own ciphertexts
//! are randomised raw RSA blocks as long as the modulus.
//!
//! SoftHSM2 2.6 does OAEP with SHA-1 only, so the SHA-256 cases here run
//! through kmsgate's own padding around the token's raw RSA, and the SHA-1
//! cases through the token's CKM_RSA_PKCS_OAEP: both paths are covered.
//! Kryoptic does both hashes in its own CKM_RSA_PKCS_OAEP, and answers a
//! block that is no ciphertext of the key with CKR_DEVICE_ERROR, which
//! kmsgate cannot tell from a fault (docs/hsm-vendors.md): there such a
//! block is a retryable 500, never a wrong plaintext.

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{EncryptionAlgorithmSpec as Alg, KeySpec, KeyUsageType};
use rsa::pkcs8::DecodePublicKey;

const ALGS: [Alg; 2] = [Alg::RsaesOaepSha1, Alg::RsaesOaepSha256];

/// What Decrypt answers for a block that is no ciphertext of the key and
/// hash: AWS's answer, or on Kryoptic the retryable fault (its
/// CKR_DEVICE_ERROR).
fn not_a_ciphertext() -> &'static str {
    match implementation() {
        Implementation::SoftHsm2 => "InvalidCiphertextException",
        Implementation::Kryoptic(_) => "KeyUnavailableException",
    }
}

async fn decrypt_with(
    kms: &aws_sdk_kms::Client,
    key: &str,
    alg: &Alg,
    ciphertext: Vec<u8>,
) -> Result<Vec<u8>, (String, String)> {
    kms.decrypt()
        .key_id(key)
        .encryption_algorithm(alg.clone())
        .ciphertext_blob(Blob::new(ciphertext))
        .send()
        .await
        .map(|d| d.plaintext.unwrap().into_inner())
        .map_err(|e| error_of(&e))
}

fn independent_encrypt(spki: &[u8], alg: &Alg, message: &[u8]) -> Vec<u8> {
    let pk = rsa::PublicKey::from_public_key_der(spki).unwrap();
    let mut rng = rand::rng();
    match alg {
        Alg::RsaesOaepSha1 => pk
            .encrypt(&mut rng, rsa::Oaep::<sha1::Sha1>::new(), message)
            .unwrap(),
        _ => pk
            .encrypt(&mut rng, rsa::Oaep::<sha2::Sha256>::new(), message)
            .unwrap(),
    }
}

#[tokio::test]
async fn rsa_encryption_round_trips_and_matches_an_independent_implementation() {
    let gw = Gateway::start();
    let kms = gw.client();
    for (spec, bytes) in [(KeySpec::Rsa2048, 256), (KeySpec::Rsa3072, 384)] {
        let key = create_key_of(&kms, spec.clone(), KeyUsageType::EncryptDecrypt).await;
        let meta = key_metadata(&kms, &key).await;
        assert_eq!(meta.key_usage, Some(KeyUsageType::EncryptDecrypt));
        assert_eq!(meta.encryption_algorithms.unwrap(), ALGS.to_vec());
        assert!(meta.signing_algorithms.is_none());
        let public = kms.get_public_key().key_id(&key).send().await.unwrap();
        assert_eq!(public.encryption_algorithms.unwrap(), ALGS.to_vec());
        assert_eq!(public.key_usage, Some(KeyUsageType::EncryptDecrypt));
        let spki = public.public_key.unwrap().into_inner();
        for alg in &ALGS {
            let max = match (&spec, alg) {
                (KeySpec::Rsa2048, Alg::RsaesOaepSha1) => 214,
                (KeySpec::Rsa2048, _) => 190,
                (_, Alg::RsaesOaepSha1) => 342,
                _ => 318,
            };
            for len in [1, max] {
                let message: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                // kmsgate encrypts: a block as long as the modulus, a fresh
                // one each time, that kmsgate decrypts.
                let out = kms
                    .encrypt()
                    .key_id(&key)
                    .encryption_algorithm(alg.clone())
                    .plaintext(Blob::new(message.clone()))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(out.encryption_algorithm.as_ref(), Some(alg));
                assert_eq!(out.key_id.as_deref(), Some(key_arn(&key).as_str()));
                let c1 = out.ciphertext_blob.unwrap().into_inner();
                assert_eq!(c1.len(), bytes);
                let c2 = kms
                    .encrypt()
                    .key_id(&key)
                    .encryption_algorithm(alg.clone())
                    .plaintext(Blob::new(message.clone()))
                    .send()
                    .await
                    .unwrap()
                    .ciphertext_blob
                    .unwrap()
                    .into_inner();
                assert_ne!(c1, c2, "OAEP is randomised");
                assert_eq!(
                    decrypt_with(&kms, &key, alg, c1.clone()).await,
                    Ok(message.clone())
                );
                // The other hash does not open it.
                let other = if *alg == Alg::RsaesOaepSha1 {
                    &ALGS[1]
                } else {
                    &ALGS[0]
                };
                assert_eq!(
                    decrypt_with(&kms, &key, other, c1.clone())
                        .await
                        .unwrap_err()
                        .0,
                    not_a_ciphertext()
                );
                // A block made elsewhere with the public key opens in kmsgate.
                let theirs = independent_encrypt(&spki, alg, &message);
                assert_eq!(decrypt_with(&kms, &key, alg, theirs).await, Ok(message));
            }
            // A tampered block is InvalidCiphertextException.
            let c = independent_encrypt(&spki, alg, b"secret");
            let mut tampered = c.clone();
            tampered[bytes / 2] ^= 1;
            assert_eq!(
                decrypt_with(&kms, &key, alg, tampered).await.unwrap_err().0,
                not_a_ciphertext()
            );
            // So is a block one byte short, on every token: cut from one
            // whose first byte is zero it is the same number, which
            // Kryoptic would open.
            let short = loop {
                let c = independent_encrypt(&spki, alg, b"secret");
                if c[0] == 0 {
                    break c[1..].to_vec();
                }
            };
            assert_eq!(
                decrypt_with(&kms, &key, alg, short).await.unwrap_err().0,
                "InvalidCiphertextException"
            );
        }
    }
}

#[tokio::test]
async fn rsa_encryption_refusals_are_aws_refusals() {
    let gw = Gateway::start();
    let kms = gw.client();
    let key = create_key_of(&kms, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    let arn = key_arn(&key);
    let encrypt = |alg: Option<Alg>, len: usize| {
        let mut r = kms
            .encrypt()
            .key_id(&key)
            .plaintext(Blob::new(vec![1u8; len]));
        if let Some(a) = alg {
            r = r.encryption_algorithm(a);
        }
        r.send()
    };
    // AWS's size limit text.
    let e = encrypt(Some(Alg::RsaesOaepSha1), 215).await.unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "ValidationException".into(),
            "Algorithm RSAES_OAEP_SHA_1 and key spec RSA_2048 cannot encrypt data larger than 214 bytes.".into()
        )
    );
    // SYMMETRIC_DEFAULT (the default) does not fit an RSA key.
    for alg in [None, Some(Alg::SymmetricDefault)] {
        let e = encrypt(alg, 1).await.unwrap_err();
        assert_eq!(error_of(&e).0, "InvalidKeyUsageException");
    }
    // No encryption context with RSA.
    let e = kms
        .encrypt()
        .key_id(&key)
        .encryption_algorithm(Alg::RsaesOaepSha256)
        .encryption_context("k", "v")
        .plaintext(Blob::new(vec![1]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "ValidationException");
    // Decrypt of a raw RSA block needs the KeyId.
    let e = kms
        .decrypt()
        .encryption_algorithm(Alg::RsaesOaepSha256)
        .ciphertext_blob(Blob::new(vec![0u8; 256]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "ValidationException");
    // Symmetric operations and signing are refused by usage.
    let e = kms
        .generate_data_key()
        .key_id(&key)
        .number_of_bytes(32)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "InvalidKeyUsageException");
    let e = kms
        .sign()
        .key_id(&key)
        .signing_algorithm(aws_sdk_kms::types::SigningAlgorithmSpec::RsassaPssSha256)
        .message(Blob::new(b"m".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "InvalidKeyUsageException".into(),
            format!("{arn} key usage is ENCRYPT_DECRYPT which is not valid for Sign.")
        )
    );
    // Rotation is refused for asymmetric keys.
    let e = kms
        .enable_key_rotation()
        .key_id(&key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "UnsupportedOperationException");
    // RSAES_OAEP on a symmetric key is refused.
    let sym = create_key(&kms).await;
    let e = kms
        .encrypt()
        .key_id(&sym)
        .encryption_algorithm(Alg::RsaesOaepSha256)
        .plaintext(Blob::new(vec![1]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "InvalidKeyUsageException");
    // A disabled key refuses both ways.
    let c = kms
        .encrypt()
        .key_id(&key)
        .encryption_algorithm(Alg::RsaesOaepSha1)
        .plaintext(Blob::new(vec![1]))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap()
        .into_inner();
    kms.disable_key().key_id(&key).send().await.unwrap();
    assert_eq!(
        decrypt_with(&kms, &key, &Alg::RsaesOaepSha1, c).await,
        Err(("DisabledException".into(), format!("{arn} is disabled.")))
    );
    let e = encrypt(Some(Alg::RsaesOaepSha1), 1).await.unwrap_err();
    assert_eq!(error_of(&e).0, "DisabledException");
}

/// The PKCS#11 C_Decrypt calls the gateway has made, from its metrics.
async fn decrypt_calls(addr: &str) -> f64 {
    let addr = addr.to_owned();
    let (_, body) = tokio::task::spawn_blocking(move || crate::metrics::scrape(&addr))
        .await
        .unwrap();
    crate::metrics::sum(
        &body,
        "kmsgate_token_call_duration_seconds_count",
        &["function=\"C_Decrypt\""],
    )
}

/// A Decrypt is one C_Decrypt where the token's CKM_RSA_PKCS_OAEP takes
/// the hash; where it refuses the hash (SoftHSM2 2.6 with SHA-256) it is
/// two: the refused OAEP call, then raw RSA under kmsgate's padding.
/// Kryoptic opens both hashes with its own OAEP.
#[tokio::test]
async fn oaep_decryption_is_the_tokens_own_where_it_takes_the_hash() {
    let gw = Gateway::start_on(Token::with_config("[metrics]\nlisten = \"127.0.0.1:0\"\n"));
    let addr = crate::metrics::metrics_addr(|| gw.log());
    let kms = gw.client();
    let key = create_key_of(&kms, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    let spki = kms
        .get_public_key()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .public_key
        .unwrap()
        .into_inner();
    for alg in &ALGS {
        let calls = match (implementation(), alg) {
            (Implementation::SoftHsm2, Alg::RsaesOaepSha256) => 2.0,
            _ => 1.0,
        };
        for _ in 0..2 {
            let before = decrypt_calls(&addr).await;
            let c = independent_encrypt(&spki, alg, b"opened on the token");
            assert_eq!(
                decrypt_with(&kms, &key, alg, c).await,
                Ok(b"opened on the token".to_vec())
            );
            assert_eq!(decrypt_calls(&addr).await - before, calls, "{alg:?}");
        }
    }
}
