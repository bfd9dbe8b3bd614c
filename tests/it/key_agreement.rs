//! Black-box specification of key agreement keys (ECC_NIST_P256/P384/P521
//! with KEY_AGREEMENT) and DeriveSharedSecret: ECDH on the token between
//! the key's private half and a peer's public key. The shared secret is
//! checked against an independent implementation (RustCrypto's `p256`,
//! `p384`, `p521`): the peer derives the same secret from its own private
//! key and kmsgate's public key.

use crate::common::*;
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyAgreementAlgorithmSpec as Ka, KeySpec, KeyUsageType};
use base64::Engine;
use sha2::Digest;

/// A peer key pair on `spec`'s curve from a fixed seed: its SPKI, and the
/// secret it derives with the public key `theirs` (an SPKI).
fn peer(spec: &KeySpec, seed: &str, theirs: &[u8]) -> (Vec<u8>, Vec<u8>) {
    use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
    let mut bytes = sha2::Sha512::digest(seed.as_bytes()).to_vec();
    bytes.extend_from_slice(&sha2::Sha512::digest(bytes.clone()));
    macro_rules! on_curve {
        ($curve:ident, $len:expr) => {{
            let mut scalar = bytes[..$len].to_vec();
            scalar[0] &= 0x01; // below the order of every curve here
            let sk = $curve::SecretKey::from_slice(&scalar).unwrap();
            let spki = sk.public_key().to_public_key_der().unwrap().into_vec();
            let other = $curve::PublicKey::from_public_key_der(theirs).unwrap();
            let secret = sk.diffie_hellman(&other).raw_secret_bytes().to_vec();
            (spki, secret)
        }};
    }
    match spec {
        KeySpec::EccNistP256 => on_curve!(p256, 32),
        KeySpec::EccNistP384 => on_curve!(p384, 48),
        _ => on_curve!(p521, 66),
    }
}

async fn derive(
    kms: &aws_sdk_kms::Client,
    key: &str,
    public_key: Vec<u8>,
) -> Result<Vec<u8>, (String, String)> {
    kms.derive_shared_secret()
        .key_id(key)
        .key_agreement_algorithm(Ka::Ecdh)
        .public_key(Blob::new(public_key))
        .send()
        .await
        .map(|o| {
            assert_eq!(o.key_agreement_algorithm, Some(Ka::Ecdh));
            assert_eq!(o.key_id.as_deref(), Some(key_arn(key).as_str()));
            assert_eq!(o.key_origin, Some(aws_sdk_kms::types::OriginType::AwsKms));
            o.shared_secret.unwrap().into_inner()
        })
        .map_err(|e| error_of(&e))
}

#[tokio::test]
async fn shared_secrets_match_an_independent_ecdh() {
    let gw = Gateway::start();
    let kms = gw.client();
    let mut secrets = vec![];
    for (spec, len) in [
        (KeySpec::EccNistP256, 32),
        (KeySpec::EccNistP384, 48),
        (KeySpec::EccNistP521, 66),
    ] {
        let key = create_key_of(&kms, spec.clone(), KeyUsageType::KeyAgreement).await;
        let meta = key_metadata(&kms, &key).await;
        assert_eq!(meta.key_usage, Some(KeyUsageType::KeyAgreement));
        assert_eq!(meta.key_agreement_algorithms, Some(vec![Ka::Ecdh]));
        assert!(meta.signing_algorithms.is_none());
        assert!(meta.encryption_algorithms.is_none());
        let public = kms.get_public_key().key_id(&key).send().await.unwrap();
        assert_eq!(public.key_usage, Some(KeyUsageType::KeyAgreement));
        assert_eq!(public.key_agreement_algorithms, Some(vec![Ka::Ecdh]));
        let ours = public.public_key.unwrap().into_inner();
        for seed in ["alice", "bob"] {
            let (spki, expected) = peer(&spec, seed, &ours);
            let secret = derive(&kms, &key, spki.clone()).await.unwrap();
            assert_eq!(secret.len(), len);
            assert_eq!(secret, expected, "{spec:?} with {seed}");
            // The same inputs give the same secret.
            assert_eq!(derive(&kms, &key, spki).await.unwrap(), expected);
            secrets.push(secret);
        }
    }
    // Neither the secrets nor anything of them reach the log: read once
    // the last request's own audit record is in it (records land a moment
    // after their response), so every record is checked. That request
    // derives a secret of its own, with a peer no other request used.
    let key = create_key_of(&kms, KeySpec::EccNistP256, KeyUsageType::KeyAgreement).await;
    let ours = kms
        .get_public_key()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .public_key
        .unwrap()
        .into_inner();
    let (spki, expected) = peer(&KeySpec::EccNistP256, "carol", &ours);
    let last = kms
        .derive_shared_secret()
        .key_id(&key)
        .key_agreement_algorithm(Ka::Ecdh)
        .public_key(Blob::new(spki))
        .send()
        .await
        .unwrap();
    let id = last.request_id().expect("x-amzn-RequestId").to_owned();
    assert_eq!(last.shared_secret.unwrap().into_inner(), expected);
    secrets.push(expected);
    assert!(
        gw.log_has(|l| l.contains("kmsgate::audit")
            && l.contains(&format!("\"requestID\":\"{id}\""))
            && l.contains("\"eventName\":\"DeriveSharedSecret\"")),
        "no audit record of the last DeriveSharedSecret ({id})"
    );
    let log = gw.log();
    for s in &secrets {
        let b64 = base64::engine::general_purpose::STANDARD.encode(s);
        assert!(!log.contains(&b64), "a shared secret in the log");
    }
}

#[tokio::test]
async fn key_agreement_refusals_are_aws_refusals() {
    let gw = Gateway::start();
    let kms = gw.client();
    let key = create_key_of(&kms, KeySpec::EccNistP256, KeyUsageType::KeyAgreement).await;
    let arn = key_arn(&key);
    let ours = kms
        .get_public_key()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .public_key
        .unwrap()
        .into_inner();
    // A peer key on another curve, an RSA key, or no key at all.
    let (p384_spki, _) = peer(&KeySpec::EccNistP384, "carol", &{
        let k = create_key_of(&kms, KeySpec::EccNistP384, KeyUsageType::KeyAgreement).await;
        kms.get_public_key()
            .key_id(&k)
            .send()
            .await
            .unwrap()
            .public_key
            .unwrap()
            .into_inner()
    });
    let rsa = create_key_of(&kms, KeySpec::Rsa2048, KeyUsageType::SignVerify).await;
    let rsa_spki = kms
        .get_public_key()
        .key_id(&rsa)
        .send()
        .await
        .unwrap()
        .public_key
        .unwrap()
        .into_inner();
    let mut off_curve = ours.clone();
    *off_curve.last_mut().unwrap() ^= 1;
    for bad in [p384_spki, rsa_spki, off_curve, b"not a key".to_vec()] {
        let e = derive(&kms, &key, bad).await.unwrap_err();
        assert_eq!(
            e,
            (
                "ValidationException".into(),
                "PublicKey must be a DER-encoded SubjectPublicKeyInfo of a valid public key on the curve of key spec ECC_NIST_P256.".into()
            )
        );
    }
    // Usage, both ways, in AWS's words.
    let e = kms
        .sign()
        .key_id(&key)
        .signing_algorithm(aws_sdk_kms::types::SigningAlgorithmSpec::EcdsaSha256)
        .message(Blob::new(b"m".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "InvalidKeyUsageException".into(),
            format!("{arn} key usage is KEY_AGREEMENT which is not valid for Sign.")
        )
    );
    let signer = create_key_of(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    assert_eq!(
        derive(&kms, &signer, ours.clone()).await.unwrap_err(),
        (
            "InvalidKeyUsageException".into(),
            format!(
                "{} key usage is SIGN_VERIFY which is not valid for DeriveSharedSecret.",
                key_arn(&signer)
            )
        )
    );
    // secp256k1 keys do not agree keys; the algorithm must be ECDH.
    let e = kms
        .create_key()
        .key_spec(KeySpec::EccSecgP256K1)
        .key_usage(KeyUsageType::KeyAgreement)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "ValidationException");
    let r = gw.raw(
        Some("TrentService.DeriveSharedSecret"),
        serde_json::json!({"KeyId": key, "KeyAgreementAlgorithm": "ECDH2", "PublicKey": "AAAA"})
            .to_string()
            .as_bytes(),
        true,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.error_type(), "ValidationException");
    assert!(
        r.message().contains("keyAgreementAlgorithm"),
        "{}",
        r.message()
    );
    // DryRun, rotation, a disabled key.
    let e = kms
        .derive_shared_secret()
        .key_id(&key)
        .key_agreement_algorithm(Ka::Ecdh)
        .public_key(Blob::new(ours.clone()))
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "DryRunOperationException");
    let e = kms
        .enable_key_rotation()
        .key_id(&key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "UnsupportedOperationException");
    kms.disable_key().key_id(&key).send().await.unwrap();
    assert_eq!(
        derive(&kms, &key, ours).await.unwrap_err(),
        ("DisabledException".into(), format!("{arn} is disabled."))
    );
}

#[tokio::test]
async fn grants_on_key_agreement_keys_allow_only_key_agreement_operations() {
    let gw = Gateway::start();
    let kms = gw.client();
    let key = create_key_of(&kms, KeySpec::EccNistP384, KeyUsageType::KeyAgreement).await;
    let grantee = format!("arn:aws:iam::{ACCOUNT}:user/tester");
    kms.create_grant()
        .key_id(&key)
        .grantee_principal(&grantee)
        .operations(aws_sdk_kms::types::GrantOperation::DeriveSharedSecret)
        .send()
        .await
        .unwrap();
    let e = kms
        .create_grant()
        .key_id(&key)
        .grantee_principal(&grantee)
        .operations(aws_sdk_kms::types::GrantOperation::Sign)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "ValidationException");
}

/// `other` may derive with P-256 keys by ECDH (kms:KeyAgreementAlgorithm
/// and kms:KeySpec in its identity policy), and with nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_see_the_key_agreement_algorithm() {
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:DeriveSharedSecret","kms:GetPublicKey"],"Resource":"*","Condition":{"StringEquals":{"kms:KeyAgreementAlgorithm":"ECDH","kms:KeySpec":"ECC_NIST_P256"}}}]}"#;
    let (gw, other) = Gateway::start_with_other(policy);
    let admin = gw.client();
    let p256 = create_key_of(&admin, KeySpec::EccNistP256, KeyUsageType::KeyAgreement).await;
    let p384 = create_key_of(&admin, KeySpec::EccNistP384, KeyUsageType::KeyAgreement).await;
    let public = |key: String| {
        let admin = admin.clone();
        async move {
            admin
                .get_public_key()
                .key_id(key)
                .send()
                .await
                .unwrap()
                .public_key
                .unwrap()
                .into_inner()
        }
    };
    let (peer256, _) = peer(&KeySpec::EccNistP256, "dave", &public(p256.clone()).await);
    let (peer384, _) = peer(&KeySpec::EccNistP384, "dave", &public(p384.clone()).await);
    assert_eq!(
        derive(&other, &p256, peer256).await.map(|s| s.len()),
        Ok(32)
    );
    let (name, message) = derive(&other, &p384, peer384).await.unwrap_err();
    assert_eq!(name, "AccessDeniedException");
    assert!(
        message.starts_with(&format!(
            "User: arn:aws:iam::{ACCOUNT}:user/other is not authorized to perform: kms:DeriveSharedSecret "
        )),
        "{message}"
    );
}
