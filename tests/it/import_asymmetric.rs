//! Black-box specification of importing asymmetric key material (BYOK for
//! RSA and ECC keys): a PKCS#8 private key made here (its "twin") is
//! wrapped as AWS's instructions say (RSA_AES_KEY_WRAP) and imported; the
//! imported key then is the twin: the same public key, and signatures,
//! ciphertexts and shared secrets that the twin's RustCrypto
//! implementation agrees with.
//!
//! Kryoptic lacks CKM_AES_KEY_WRAP_PAD (docs/hsm-vendors.md): there ECC
//! material is wrapped with RSAES_OAEP_SHA_256 instead, and RSA material,
//! which fits no OAEP block, is refused by name and leaves the key pending
//! import.

use crate::common::*;
use crate::import::{import, parameters, wrap};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    AlgorithmSpec, EncryptionAlgorithmSpec, KeyAgreementAlgorithmSpec, KeySpec, KeyState,
    KeyUsageType, MessageType, OriginType, SigningAlgorithmSpec, WrappingKeySpec,
};
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rsa::Generate;
use rsa::signature::{SignatureEncoding, Signer, Verifier};

const MESSAGE: &[u8] = b"signed by an imported key";

async fn create_external(kms: &aws_sdk_kms::Client, spec: KeySpec, usage: KeyUsageType) -> String {
    let m = kms
        .create_key()
        .origin(OriginType::External)
        .key_spec(spec.clone())
        .key_usage(usage.clone())
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(m.key_state, Some(KeyState::PendingImport));
    assert_eq!(m.key_spec, Some(spec));
    assert_eq!(m.key_usage, Some(usage));
    m.key_id
}

/// How PKCS#8 material is wrapped for the token under test, and the most
/// bytes that takes: RSA_AES_KEY_WRAP_SHA_1 (any size) where the token has
/// RFC 5649 as CKM_AES_KEY_WRAP_PAD (SoftHSM2); on Kryoptic
/// RSAES_OAEP_SHA_256 under RSA_4096, which holds an ECC private key but
/// never an RSA one.
fn pkcs8_wrapping() -> (AlgorithmSpec, WrappingKeySpec, usize) {
    match implementation() {
        Implementation::SoftHsm2 => (
            AlgorithmSpec::RsaAesKeyWrapSha1,
            WrappingKeySpec::Rsa2048,
            usize::MAX,
        ),
        Implementation::Kryoptic(_) => (
            AlgorithmSpec::RsaesOaepSha256,
            WrappingKeySpec::Rsa4096,
            446,
        ),
    }
}

/// GetParametersForImport ([`pkcs8_wrapping`]), wrap, ImportKeyMaterial.
async fn import_pkcs8(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    pkcs8: &[u8],
) -> Result<(), (String, String)> {
    let (alg, spec, most) = pkcs8_wrapping();
    assert!(
        pkcs8.len() <= most,
        "{} bytes do not fit {alg:?}",
        pkcs8.len()
    );
    let p = parameters(kms, key_id, alg.clone(), spec).await;
    import(kms, key_id, &p.token, wrap(&p.public_key, &alg, pkcs8))
        .await
        .map(|_| ())
        .map_err(|e| error_of(&e))
}

/// Kryoptic: RSA material fits no OAEP block, and RSA_AES_KEY_WRAP needs
/// CKM_AES_KEY_WRAP_PAD, which GetParametersForImport refuses by name,
/// before anything is wrapped; the key stays pending import and nothing is
/// left on the token.
async fn rsa_material_is_refused_by_name(gw: Gateway, id: &str) {
    let kms = gw.client();
    let e = kms
        .get_parameters_for_import()
        .key_id(id)
        .wrapping_algorithm(AlgorithmSpec::RsaAesKeyWrapSha1)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "UnsupportedOperationException".into(),
            "The token cannot unwrap with CKM_AES_KEY_WRAP_PAD, which this WrappingAlgorithm needs. Use another WrappingAlgorithm.".into()
        )
    );
    assert_eq!(state(&kms, id).await, Some(KeyState::PendingImport));
    let token = gw.stop();
    let config = token.config();
    let (ok, stdout, stderr) = token.run_cli(&["check-keys", "--config", config.to_str().unwrap()]);
    assert!(ok, "check-keys failed:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("orphan"), "{stdout}");
    assert!(
        !list_objects(&token).contains("kmsgate/import/"),
        "a wrapping pair left behind"
    );
}

async fn public_key(kms: &aws_sdk_kms::Client, key_id: &str) -> Vec<u8> {
    kms.get_public_key()
        .key_id(key_id)
        .send()
        .await
        .unwrap()
        .public_key
        .unwrap()
        .into_inner()
}

async fn sign(kms: &aws_sdk_kms::Client, key_id: &str, alg: SigningAlgorithmSpec) -> Vec<u8> {
    kms.sign()
        .key_id(key_id)
        .message(Blob::new(MESSAGE))
        .message_type(MessageType::Raw)
        .signing_algorithm(alg)
        .send()
        .await
        .unwrap()
        .signature
        .unwrap()
        .into_inner()
}

async fn verify(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    alg: SigningAlgorithmSpec,
    signature: &[u8],
) -> bool {
    kms.verify()
        .key_id(key_id)
        .message(Blob::new(MESSAGE))
        .message_type(MessageType::Raw)
        .signing_algorithm(alg)
        .signature(Blob::new(signature.to_vec()))
        .send()
        .await
        .map(|o| o.signature_valid)
        .unwrap_or(false)
}

async fn state(kms: &aws_sdk_kms::Client, key_id: &str) -> Option<KeyState> {
    kms.describe_key()
        .key_id(key_id)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_state
}

fn rsa_twin() -> rsa::PrivateKey {
    rsa::PrivateKey::new(&mut rand::rng(), 2048).unwrap()
}

fn rsa_pkcs8(key: &rsa::PrivateKey) -> Vec<u8> {
    key.to_pkcs8_der().unwrap().as_bytes().to_vec()
}

/// `check-keys` says every key version is safe and nothing is orphaned.
fn custody_is_clean(gw: Gateway, ids: &[&str]) {
    let token = gw.stop();
    let config = token.config();
    let (ok, stdout, stderr) = token.run_cli(&["check-keys", "--config", config.to_str().unwrap()]);
    assert!(ok, "check-keys failed:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("orphan"), "{stdout}");
    assert!(!stderr.contains("orphan"), "{stderr}");
    for id in ids {
        let line = stdout
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("no line for {id} in:\n{stdout}"));
        for fact in [
            "origin=EXTERNAL",
            "sensitive=true",
            "extractable=false",
            "value_readable=false",
            " ok",
        ] {
            assert!(line.contains(fact), "{fact} missing in: {line}");
        }
    }
}

#[tokio::test]
async fn an_imported_rsa_signing_key_is_its_twin() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_external(&kms, KeySpec::Rsa2048, KeyUsageType::SignVerify).await;
    // An RSA private key does not fit in one OAEP block: AWS refuses.
    let e = kms
        .get_parameters_for_import()
        .key_id(&id)
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha1)
        .wrapping_key_spec(WrappingKeySpec::Rsa4096)
        .send()
        .await
        .unwrap_err();
    let (name, message) = error_of(&e);
    assert_eq!(name, "ValidationException");
    assert!(message.contains("RSA_AES_KEY_WRAP"), "{message}");

    let twin = rsa_twin();
    let pkcs8 = rsa_pkcs8(&twin);
    if let Implementation::Kryoptic(_) = implementation() {
        return rsa_material_is_refused_by_name(gw, &id).await;
    }
    import_pkcs8(&kms, &id, &pkcs8).await.unwrap();
    assert_eq!(state(&kms, &id).await, Some(KeyState::Enabled));
    let spki = twin.to_public_key().to_public_key_der().unwrap();
    assert_eq!(public_key(&kms, &id).await, spki.as_bytes());

    // kmsgate's signature verifies with the twin's public key, and the
    // twin's with kmsgate.
    let alg = SigningAlgorithmSpec::RsassaPkcs1V15Sha256;
    let sig = sign(&kms, &id, alg.clone()).await;
    let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(twin.to_public_key());
    let s = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).unwrap();
    assert!(vk.verify(MESSAGE, &s).is_ok());
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(twin.clone());
    let theirs = signer.sign(MESSAGE).to_vec();
    assert!(verify(&kms, &id, alg.clone(), &theirs).await);
    let mut forged = theirs.clone();
    forged[10] ^= 1;
    assert!(!verify(&kms, &id, alg.clone(), &forged).await);

    // Deleted, the key is pending import; other material is refused, the
    // same comes back as the same key.
    kms.delete_imported_key_material()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(state(&kms, &id).await, Some(KeyState::PendingImport));
    let other = rsa_twin();
    let (name, _) = import_pkcs8(&kms, &id, &rsa_pkcs8(&other))
        .await
        .unwrap_err();
    assert_eq!(name, "IncorrectKeyMaterialException");
    assert_eq!(state(&kms, &id).await, Some(KeyState::PendingImport));
    import_pkcs8(&kms, &id, &pkcs8).await.unwrap();
    assert_eq!(public_key(&kms, &id).await, spki.as_bytes());
    assert!(verify(&kms, &id, alg, &theirs).await);
    custody_is_clean(gw, &[&id]);
}

#[tokio::test]
async fn an_imported_p256_signing_key_is_its_twin() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_external(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let twin = p256::ecdsa::SigningKey::from(p256::SecretKey::generate_from_rng(&mut rand::rng()));
    let pkcs8 = twin.to_pkcs8_der().unwrap().as_bytes().to_vec();
    import_pkcs8(&kms, &id, &pkcs8).await.unwrap();
    let spki = twin.verifying_key().to_public_key_der().unwrap();
    assert_eq!(public_key(&kms, &id).await, spki.as_bytes());

    let alg = SigningAlgorithmSpec::EcdsaSha256;
    let sig = sign(&kms, &id, alg.clone()).await;
    let s = p256::ecdsa::DerSignature::try_from(sig.as_slice()).unwrap();
    assert!(twin.verifying_key().verify(MESSAGE, &s).is_ok());
    let theirs: p256::ecdsa::DerSignature = twin.sign(MESSAGE);
    assert!(verify(&kms, &id, alg.clone(), theirs.as_bytes()).await);
    let other = p256::ecdsa::SigningKey::from(p256::SecretKey::generate_from_rng(&mut rand::rng()));
    let not_theirs: p256::ecdsa::DerSignature = other.sign(MESSAGE);
    assert!(!verify(&kms, &id, alg, not_theirs.as_bytes()).await);

    kms.delete_imported_key_material()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    let other_pkcs8 = other.to_pkcs8_der().unwrap().as_bytes().to_vec();
    let (name, _) = import_pkcs8(&kms, &id, &other_pkcs8).await.unwrap_err();
    assert_eq!(name, "IncorrectKeyMaterialException");
    import_pkcs8(&kms, &id, &pkcs8).await.unwrap();
    assert_eq!(public_key(&kms, &id).await, spki.as_bytes());
    custody_is_clean(gw, &[&id]);
}

#[tokio::test]
async fn material_of_another_type_size_or_curve_is_refused_and_leaves_nothing() {
    let gw = Gateway::start();
    let kms = gw.client();
    let ec = create_external(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let rsa_key = create_external(&kms, KeySpec::Rsa3072, KeyUsageType::SignVerify).await;
    let p384 = p384::SecretKey::generate_from_rng(&mut rand::rng())
        .to_pkcs8_der()
        .unwrap()
        .as_bytes()
        .to_vec();
    let k256 = k256::SecretKey::generate_from_rng(&mut rand::rng())
        .to_pkcs8_der()
        .unwrap()
        .as_bytes()
        .to_vec();
    let rsa2048 = rsa_pkcs8(&rsa_twin());
    let garbage: Vec<u8> = (0..120).map(|_| rand::random::<u8>()).collect();
    for (case, key, material) in [
        ("P-384 into P-256", &ec, &p384),
        ("secp256k1 into P-256", &ec, &k256),
        ("RSA into P-256", &ec, &rsa2048),
        ("garbage into P-256", &ec, &garbage),
        ("RSA-2048 into RSA-3072", &rsa_key, &rsa2048),
        ("P-384 into RSA-3072", &rsa_key, &p384),
        ("garbage into RSA-3072", &rsa_key, &garbage),
    ] {
        // Kryoptic wraps by OAEP only: RSA material does not fit, and an
        // RSA key takes no material there at all.
        let kryoptic = matches!(implementation(), Implementation::Kryoptic(_));
        if material.len() > pkcs8_wrapping().2 || (kryoptic && key == &rsa_key) {
            continue;
        }
        let (name, message) = import_pkcs8(&kms, key, material).await.unwrap_err();
        assert!(
            name == "IncorrectKeyMaterialException" || name == "InvalidCiphertextException",
            "{case}: {name}: {message}\n{}",
            gw.log()
        );
        assert_eq!(state(&kms, key).await, Some(KeyState::PendingImport));
    }
    // The right material is taken after all that.
    let twin = p256::SecretKey::generate_from_rng(&mut rand::rng());
    import_pkcs8(&kms, &ec, twin.to_pkcs8_der().unwrap().as_bytes())
        .await
        .unwrap();
    custody_is_clean(gw, &[&ec]);
}

#[tokio::test]
async fn an_imported_rsa_encryption_key_decrypts_what_its_twin_encrypts() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_external(&kms, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    let twin = rsa_twin();
    if let Implementation::Kryoptic(_) = implementation() {
        return rsa_material_is_refused_by_name(gw, &id).await;
    }
    import_pkcs8(&kms, &id, &rsa_pkcs8(&twin)).await.unwrap();
    let ciphertext = twin
        .to_public_key()
        .encrypt(
            &mut rand::rng(),
            rsa::Oaep::<sha2::Sha256>::new(),
            b"for the imported key",
        )
        .unwrap();
    let out = kms
        .decrypt()
        .key_id(&id)
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
        .ciphertext_blob(Blob::new(ciphertext))
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext.unwrap().into_inner(), b"for the imported key");
    // It cannot sign: its private key only decrypts.
    let e = kms
        .sign()
        .key_id(&id)
        .message(Blob::new(MESSAGE))
        .signing_algorithm(SigningAlgorithmSpec::RsassaPssSha256)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "InvalidKeyUsageException");
}

#[tokio::test]
async fn an_imported_key_agreement_key_derives_its_twins_secret() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_external(&kms, KeySpec::EccNistP384, KeyUsageType::KeyAgreement).await;
    let twin = p384::SecretKey::generate_from_rng(&mut rand::rng());
    import_pkcs8(&kms, &id, twin.to_pkcs8_der().unwrap().as_bytes())
        .await
        .unwrap();
    let spki = twin.public_key().to_public_key_der().unwrap();
    assert_eq!(public_key(&kms, &id).await, spki.as_bytes());
    let peer = p384::SecretKey::generate_from_rng(&mut rand::rng());
    let expected =
        p384::ecdh::diffie_hellman(peer.to_nonzero_scalar(), twin.public_key().as_affine());
    let out = kms
        .derive_shared_secret()
        .key_id(&id)
        .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
        .public_key(Blob::new(
            peer.public_key().to_public_key_der().unwrap().as_bytes(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.shared_secret.unwrap().into_inner(),
        expected.raw_secret_bytes().as_slice()
    );
}

#[tokio::test]
async fn p521_and_secp256k1_keys_import_and_oaep_wraps_what_fits() {
    let gw = Gateway::start();
    let kms = gw.client();
    // ECC key material fits in one OAEP block (AWS allows RSAES_OAEP for
    // it), except P-521's under an RSA_2048 wrapping key.
    let k1 = create_external(&kms, KeySpec::EccSecgP256K1, KeyUsageType::SignVerify).await;
    let twin = k256::ecdsa::SigningKey::from(k256::SecretKey::generate_from_rng(&mut rand::rng()));
    let alg = AlgorithmSpec::RsaesOaepSha1;
    let p = parameters(&kms, &k1, alg.clone(), WrappingKeySpec::Rsa2048).await;
    let pkcs8 = twin.to_pkcs8_der().unwrap();
    let imported = import(
        &kms,
        &k1,
        &p.token,
        wrap(&p.public_key, &alg, pkcs8.as_bytes()),
    )
    .await;
    if let Implementation::Kryoptic(_) = implementation() {
        // Kryoptic's `minimal` build has no secp256k1 (it does not generate
        // such pairs either): the material does not unwrap there, and the
        // key stays pending import.
        assert_eq!(
            error_of(&imported.unwrap_err()).0,
            "InvalidCiphertextException"
        );
        assert_eq!(state(&kms, &k1).await, Some(KeyState::PendingImport));
    } else {
        imported.unwrap();
        let spki = twin.verifying_key().to_public_key_der().unwrap();
        assert_eq!(public_key(&kms, &k1).await, spki.as_bytes());
        let sig = sign(&kms, &k1, SigningAlgorithmSpec::EcdsaSha256).await;
        // k256 verifies only low-S signatures; ECDSA on the token makes
        // either.
        let s = k256::ecdsa::Signature::from_der(&sig)
            .unwrap()
            .normalize_s();
        assert!(twin.verifying_key().verify(MESSAGE, &s).is_ok());
    }

    let p521 = create_external(&kms, KeySpec::EccNistP521, KeyUsageType::SignVerify).await;
    let e = kms
        .get_parameters_for_import()
        .key_id(&p521)
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha1)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "ValidationException");
    let twin = p521::SecretKey::generate_from_rng(&mut rand::rng());
    import_pkcs8(&kms, &p521, twin.to_pkcs8_der().unwrap().as_bytes())
        .await
        .unwrap();
    let spki = twin.public_key().to_public_key_der().unwrap();
    assert_eq!(public_key(&kms, &p521).await, spki.as_bytes());
    let sig = sign(&kms, &p521, SigningAlgorithmSpec::EcdsaSha512).await;
    let vk = p521::ecdsa::VerifyingKey::from_sec1_bytes(
        twin.public_key().to_sec1_point(false).as_bytes(),
    )
    .unwrap();
    let s = p521::ecdsa::Signature::from_der(&sig).unwrap();
    assert!(vk.verify(MESSAGE, &s).is_ok());
}

#[tokio::test]
async fn expired_asymmetric_material_is_destroyed_and_comes_back_only_as_itself() {
    let gw = Gateway::start_on(Token::with_config(
        "[keys]\nsync_interval_ms = 100\nscheduler_interval_ms = 100\n",
    ));
    let kms = gw.client();
    let id = create_external(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let twin = p256::SecretKey::generate_from_rng(&mut rand::rng());
    let pkcs8 = twin.to_pkcs8_der().unwrap().as_bytes().to_vec();
    let (alg, spec, _) = pkcs8_wrapping();
    let p = parameters(&kms, &id, alg.clone(), spec).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    kms.import_key_material()
        .key_id(&id)
        .import_token(Blob::new(p.token.clone()))
        .encrypted_key_material(Blob::new(wrap(&p.public_key, &alg, &pkcs8)))
        .expiration_model(aws_sdk_kms::types::ExpirationModelType::KeyMaterialExpires)
        .valid_to(aws_smithy_types::DateTime::from_secs(now + 3))
        .send()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while state(&kms, &id).await != Some(KeyState::PendingImport) {
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let e = kms.get_public_key().key_id(&id).send().await.unwrap_err();
    assert_eq!(error_of(&e).0, "KMSInvalidStateException");
    import_pkcs8(&kms, &id, &pkcs8).await.unwrap();
    let spki = twin.public_key().to_public_key_der().unwrap();
    assert_eq!(public_key(&kms, &id).await, spki.as_bytes());
    custody_is_clean(gw, &[&id]);
}

/// A PKCS#8 RSA key with `real`'s published modulus and exponent but a
/// private part that is not `real`'s: with `keep_primes`, `real`'s primes
/// and CRT coefficient but `other`'s private exponent and first CRT
/// exponent (a bad CRT part, so a token that checks its CRT result falls
/// back to the wrong exponent); otherwise every private part is `other`'s.
fn forged_rsa_pkcs8(real: &rsa::PrivateKey, other: &rsa::PrivateKey, keep_primes: bool) -> Vec<u8> {
    use rsa::pkcs1::der::asn1::OctetStringRef;
    use rsa::pkcs1::der::{Decode, Encode};
    use rsa::pkcs1::{EncodeRsaPrivateKey, RsaPrivateKeyRef};
    let (real_der, other_der) = (real.to_pkcs1_der().unwrap(), other.to_pkcs1_der().unwrap());
    let r = RsaPrivateKeyRef::from_der(real_der.as_bytes()).unwrap();
    let o = RsaPrivateKeyRef::from_der(other_der.as_bytes()).unwrap();
    let forged = if keep_primes {
        RsaPrivateKeyRef {
            private_exponent: o.private_exponent,
            exponent1: o.exponent1,
            ..r.clone()
        }
    } else {
        RsaPrivateKeyRef {
            modulus: r.modulus,
            public_exponent: r.public_exponent,
            ..o.clone()
        }
    };
    assert_eq!(forged.public_key().modulus, r.public_key().modulus);
    let pkcs1 = forged.to_der().unwrap();
    rsa::pkcs8::PrivateKeyInfoRef::new(
        rsa::pkcs1::ALGORITHM_ID,
        OctetStringRef::new(&pkcs1).unwrap(),
    )
    .to_der()
    .unwrap()
}

#[tokio::test]
async fn rsa_material_with_the_published_public_key_but_another_private_part_is_refused() {
    let gw = Gateway::start();
    let kms = gw.client();
    let twin = rsa_twin();
    let pkcs8 = rsa_pkcs8(&twin);
    let stranger = rsa_twin();
    let alg = SigningAlgorithmSpec::RsassaPkcs1V15Sha256;

    // A signing key: imported, then deleted; the forgeries do not come
    // back as it, and change nothing.
    let id = create_external(&kms, KeySpec::Rsa2048, KeyUsageType::SignVerify).await;
    if let Implementation::Kryoptic(_) = implementation() {
        return rsa_material_is_refused_by_name(gw, &id).await;
    }
    import_pkcs8(&kms, &id, &pkcs8).await.unwrap();
    let spki = public_key(&kms, &id).await;
    kms.delete_imported_key_material()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    for keep_primes in [false, true] {
        let forged = forged_rsa_pkcs8(&twin, &stranger, keep_primes);
        let (name, message) = import_pkcs8(&kms, &id, &forged).await.unwrap_err();
        assert_eq!(name, "IncorrectKeyMaterialException", "{message}");
        assert_eq!(state(&kms, &id).await, Some(KeyState::PendingImport));
    }
    // The real key still comes back, and signs as the twin.
    import_pkcs8(&kms, &id, &pkcs8).await.unwrap();
    assert_eq!(public_key(&kms, &id).await, spki);
    let sig = sign(&kms, &id, alg.clone()).await;
    let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(twin.to_public_key());
    let s = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).unwrap();
    assert!(vk.verify(MESSAGE, &s).is_ok());

    // An encryption key's first import: the forgery is refused too, and
    // the key stays pending import.
    let enc = create_external(&kms, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    let forged = forged_rsa_pkcs8(&twin, &stranger, false);
    let (name, message) = import_pkcs8(&kms, &enc, &forged).await.unwrap_err();
    assert_eq!(name, "IncorrectKeyMaterialException", "{message}");
    assert_eq!(state(&kms, &enc).await, Some(KeyState::PendingImport));
    import_pkcs8(&kms, &enc, &pkcs8).await.unwrap();
    custody_is_clean(gw, &[&id, &enc]);
}
