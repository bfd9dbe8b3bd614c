//! Black-box specification of key import (BYOK): CreateKey with Origin
//! EXTERNAL, GetParametersForImport, ImportKeyMaterial and
//! DeleteImportedKeyMaterial, with AWS's refusals. The material is wrapped
//! here as AWS's own instructions wrap it (RSA-OAEP with the `rsa` crate,
//! RSA_AES_KEY_WRAP with AES key wrap with padding), so what is checked is
//! that kmsgate opens what a real importer sends.

use crate::common::*;
use aes_kw::KeyInit;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    AlgorithmSpec, ExpirationModelType, KeySpec, KeyUsageType, MacAlgorithmSpec, OriginType,
    WrappingKeySpec,
};
use rsa::pkcs8::DecodePublicKey;
use serde_json::json;

const FAST: &str = "[keys]\nsync_interval_ms = 100\nscheduler_interval_ms = 100\n";

/// The wrapping algorithms the token under test unwraps with, besides
/// RSAES_OAEP_SHA_1 (which both have), and the ones it lacks. SoftHSM2 2.6
/// does OAEP with SHA-1 only; Kryoptic does SHA-256 too, but offers RFC
/// 5649 only as CKM_AES_KEY_WRAP_KWP, which kmsgate (cryptoki 0.12) cannot
/// name (docs/hsm-vendors.md).
pub(crate) fn token_wrapping() -> (AlgorithmSpec, [AlgorithmSpec; 2]) {
    match implementation() {
        Implementation::SoftHsm2 => (
            AlgorithmSpec::RsaAesKeyWrapSha1,
            [
                AlgorithmSpec::RsaesOaepSha256,
                AlgorithmSpec::RsaAesKeyWrapSha256,
            ],
        ),
        Implementation::Kryoptic(_) => (
            AlgorithmSpec::RsaesOaepSha256,
            [
                AlgorithmSpec::RsaAesKeyWrapSha1,
                AlgorithmSpec::RsaAesKeyWrapSha256,
            ],
        ),
    }
}

pub(crate) async fn create_external(kms: &aws_sdk_kms::Client) -> String {
    kms.create_key()
        .origin(OriginType::External)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id
}

pub(crate) struct Params {
    pub(crate) token: Vec<u8>,
    pub(crate) public_key: Vec<u8>,
    valid_to: f64,
}

pub(crate) async fn parameters(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    alg: AlgorithmSpec,
    spec: WrappingKeySpec,
) -> Params {
    let out = kms
        .get_parameters_for_import()
        .key_id(key_id)
        .wrapping_algorithm(alg)
        .wrapping_key_spec(spec)
        .send()
        .await
        .unwrap();
    assert_eq!(out.key_id.as_deref(), Some(key_arn(key_id).as_str()));
    Params {
        token: out.import_token.unwrap().into_inner(),
        public_key: out.public_key.unwrap().into_inner(),
        valid_to: out.parameters_valid_to.unwrap().as_secs_f64(),
    }
}

/// Wraps `material` under the SPKI `public_key` as `alg` says.
pub(crate) fn wrap(public_key: &[u8], alg: &AlgorithmSpec, material: &[u8]) -> Vec<u8> {
    let key = rsa::PublicKey::from_public_key_der(public_key).unwrap();
    let mut rng = rand::rng();
    let mut oaep = |data: &[u8], sha256: bool| {
        if sha256 {
            key.encrypt(&mut rng, rsa::Oaep::<sha2::Sha256>::new(), data)
                .unwrap()
        } else {
            key.encrypt(&mut rng, rsa::Oaep::<sha1::Sha1>::new(), data)
                .unwrap()
        }
    };
    match alg {
        AlgorithmSpec::RsaesOaepSha1 => oaep(material, false),
        AlgorithmSpec::RsaesOaepSha256 => oaep(material, true),
        AlgorithmSpec::RsaAesKeyWrapSha1 | AlgorithmSpec::RsaAesKeyWrapSha256 => {
            let aes_key: [u8; 32] = rand::random();
            let mut out = oaep(&aes_key, *alg == AlgorithmSpec::RsaAesKeyWrapSha256);
            let kwp = aes_kw::KwpAes256::new_from_slice(&aes_key).unwrap();
            let mut buf = vec![0u8; material.len().div_ceil(8) * 8 + 8];
            out.extend_from_slice(kwp.wrap_key(material, &mut buf).unwrap());
            out
        }
        other => panic!("no wrapping for {other:?}"),
    }
}

pub(crate) async fn import(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    token: &[u8],
    wrapped: Vec<u8>,
) -> Result<
    aws_sdk_kms::operation::import_key_material::ImportKeyMaterialOutput,
    aws_sdk_kms::error::SdkError<
        aws_sdk_kms::operation::import_key_material::ImportKeyMaterialError,
    >,
> {
    kms.import_key_material()
        .key_id(key_id)
        .import_token(Blob::new(token.to_vec()))
        .encrypted_key_material(Blob::new(wrapped))
        .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
        .send()
        .await
}

/// GetParametersForImport, wrap, ImportKeyMaterial; panics on error.
pub(crate) async fn import_material(kms: &aws_sdk_kms::Client, key_id: &str, material: &[u8]) {
    let alg = AlgorithmSpec::RsaesOaepSha1;
    let p = parameters(kms, key_id, alg.clone(), WrappingKeySpec::Rsa2048).await;
    let wrapped = wrap(&p.public_key, &alg, material);
    import(kms, key_id, &p.token, wrapped).await.unwrap();
}

fn pending_import(id: &str) -> (String, String) {
    (
        "KMSInvalidStateException".into(),
        format!("{} is pending import.", key_arn(id)),
    )
}

#[tokio::test]
async fn an_external_key_is_pending_import_and_refuses_what_needs_material() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_external(&kms).await;
    let r = gw.raw(
        Some("TrentService.DescribeKey"),
        json!({ "KeyId": id }).to_string().as_bytes(),
        true,
    );
    let m = &r.body["KeyMetadata"];
    assert_eq!(m["Origin"], "EXTERNAL");
    assert_eq!(m["KeyState"], "PendingImport");
    assert_eq!(m["Enabled"], false);
    for absent in ["CurrentKeyMaterialId", "ExpirationModel", "ValidTo"] {
        assert!(m.get(absent).is_none(), "{absent} in {m}");
    }
    let e = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), pending_import(&id));
    let e = kms
        .generate_data_key()
        .key_id(&id)
        .number_of_bytes(32)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), pending_import(&id));
    let e = kms.enable_key().key_id(&id).send().await.unwrap_err();
    assert_eq!(error_of(&e), pending_import(&id));
    let e = kms
        .enable_key_rotation()
        .key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), pending_import(&id));
    let e = kms
        .rotate_key_on_demand()
        .key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), pending_import(&id));
    assert_eq!(
        key_metadata(&kms, &id).await.key_state,
        Some(aws_sdk_kms::types::KeyState::PendingImport)
    );
    // Deletion scheduled and cancelled: still waiting for material, not
    // Disabled (there is nothing to enable).
    kms.schedule_key_deletion()
        .key_id(&id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    kms.cancel_key_deletion().key_id(&id).send().await.unwrap();
    assert_eq!(
        key_metadata(&kms, &id).await.key_state,
        Some(aws_sdk_kms::types::KeyState::PendingImport)
    );
}

#[tokio::test]
async fn imported_aes_keys_encrypt_and_decrypt_for_every_wrapping_algorithm() {
    let gw = Gateway::start();
    let kms = gw.client();
    for (alg, spec) in [
        (AlgorithmSpec::RsaesOaepSha1, WrappingKeySpec::Rsa2048),
        (token_wrapping().0, WrappingKeySpec::Rsa3072),
    ] {
        let id = create_external(&kms).await;
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let p = parameters(&kms, &id, alg.clone(), spec.clone()).await;
        assert!(
            (p.valid_to - (before + 86_400.0)).abs() < 120.0,
            "ParametersValidTo {} is not 24 h ahead",
            p.valid_to
        );
        let bits = rsa::PublicKey::from_public_key_der(&p.public_key)
            .map(|k| rsa::traits::PublicKeyParts::size(&k) * 8)
            .unwrap();
        assert_eq!(format!("RSA_{bits}"), spec.as_str());
        let material: [u8; 32] = rand::random();
        let out = import(&kms, &id, &p.token, wrap(&p.public_key, &alg, &material))
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {:?}\n{}", error_of(&e), gw.log()));
        assert_eq!(out.key_id.as_deref(), Some(key_arn(&id).as_str()));
        let m = key_metadata(&kms, &id).await;
        assert_eq!(m.key_state, Some(aws_sdk_kms::types::KeyState::Enabled));
        assert!(m.enabled);
        assert_eq!(
            m.expiration_model,
            Some(ExpirationModelType::KeyMaterialDoesNotExpire)
        );
        assert_eq!(m.current_key_material_id, out.key_material_id);
        let blob = encrypt(&kms, &id, b"imported secret").await;
        assert_eq!(decrypt(&kms, blob).await, b"imported secret");
    }
}

/// SoftHSM2 2.6.1 does OAEP with SHA-1 only: the SHA-256 algorithms are
/// refused by name, and the key is left as it was. Kryoptic lacks
/// CKM_AES_KEY_WRAP_PAD: the RSA_AES_KEY_WRAP algorithms are refused by
/// that name.
#[tokio::test]
async fn wrapping_algorithms_the_token_lacks_are_refused_by_name() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_external(&kms).await;
    let [first, second] = token_wrapping().1;
    // SoftHSM2 2.6 unwraps with OAEP SHA-1 only, and Kryoptic 1.5 has no
    // CKM_AES_KEY_WRAP_PAD (RSA_AES_KEY_WRAP's second step): the
    // algorithms the token lacks are refused by GetParametersForImport,
    // before anything is wrapped, naming the missing mechanism, and leave
    // no wrapping pair behind.
    let missing = match implementation() {
        Implementation::SoftHsm2 => "CKM_RSA_PKCS_OAEP with SHA-256",
        Implementation::Kryoptic(_) => "CKM_AES_KEY_WRAP_PAD",
    };
    for (alg, spec) in [
        (first, WrappingKeySpec::Rsa2048),
        (second, WrappingKeySpec::Rsa4096),
    ] {
        let e = kms
            .get_parameters_for_import()
            .key_id(&id)
            .wrapping_algorithm(alg.clone())
            .wrapping_key_spec(spec)
            .send()
            .await
            .unwrap_err();
        let (name, message) = error_of(&e);
        assert_eq!(name, "UnsupportedOperationException", "{alg:?}");
        assert!(message.contains(missing), "{alg:?}: {message}");
        assert_eq!(
            key_metadata(&kms, &id).await.key_state,
            Some(aws_sdk_kms::types::KeyState::PendingImport)
        );
    }
    let objects = list_objects(&gw.token);
    assert!(
        objects.contains(&id),
        "the key's record is listed:\n{objects}"
    );
    assert!(
        !objects.contains("kmsgate/import/"),
        "a wrapping pair left behind:\n{objects}"
    );
}

#[tokio::test]
async fn import_refusals_are_awss() {
    let gw = Gateway::start();
    let kms = gw.client();
    let alg = AlgorithmSpec::RsaesOaepSha1;
    let spec = WrappingKeySpec::Rsa2048;

    // Wrong origin, for all three operations.
    let native = create_key(&kms).await;
    let wrong_origin = (
        "UnsupportedOperationException".to_owned(),
        format!(
            "{} origin is AWS_KMS which is not valid for this operation.",
            key_arn(&native)
        ),
    );
    let e = kms
        .get_parameters_for_import()
        .key_id(&native)
        .wrapping_algorithm(alg.clone())
        .wrapping_key_spec(spec.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), wrong_origin);
    let e = kms
        .delete_imported_key_material()
        .key_id(&native)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), wrong_origin);

    let id = create_external(&kms).await;
    let other = create_external(&kms).await;
    let material: [u8; 32] = rand::random();
    let first = parameters(&kms, &id, alg.clone(), spec.clone()).await;
    let p = parameters(&kms, &id, alg.clone(), spec.clone()).await;
    let theirs = parameters(&kms, &other, alg.clone(), spec.clone()).await;
    let good = || wrap(&p.public_key, &alg, &material);
    let e = import(&kms, &native, &p.token, good()).await.unwrap_err();
    assert_eq!(error_of(&e), wrong_origin);

    let invalid_token = |e: &aws_sdk_kms::error::SdkError<_>| {
        assert_eq!(error_of(e).0, "InvalidImportTokenException", "{e:?}")
    };
    // Superseded, forged, altered, another key's.
    invalid_token(&import(&kms, &id, &first.token, good()).await.unwrap_err());
    let forged: Vec<u8> = (0..p.token.len()).map(|_| rand::random()).collect();
    invalid_token(&import(&kms, &id, &forged, good()).await.unwrap_err());
    let mut altered = p.token.clone();
    *altered.last_mut().unwrap() ^= 1;
    invalid_token(&import(&kms, &id, &altered, good()).await.unwrap_err());
    invalid_token(&import(&kms, &id, &theirs.token, good()).await.unwrap_err());

    // Wrapped under another key's public key: does not unwrap. Kryoptic
    // answers that OAEP failure with CKR_DEVICE_ERROR, which kmsgate cannot
    // tell from a fault: a retryable 500 there.
    let e = import(
        &kms,
        &id,
        &p.token,
        wrap(&theirs.public_key, &alg, &material),
    )
    .await
    .unwrap_err();
    let undecryptable = match implementation() {
        Implementation::SoftHsm2 => "InvalidCiphertextException",
        Implementation::Kryoptic(_) => "KeyUnavailableException",
    };
    assert_eq!(error_of(&e).0, undecryptable);
    // Not the size of the wrapping key's output.
    let e = import(&kms, &id, &p.token, vec![7u8; 100])
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "ValidationException".into(),
            "Invalid encrypted key size.".into()
        )
    );
    // Material that is no AES key.
    let e = import(&kms, &id, &p.token, wrap(&p.public_key, &alg, &[1u8; 31]))
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "IncorrectKeyMaterialException");

    // ExpirationModel and ValidTo, AWS's default model needing a ValidTo.
    let e = kms
        .import_key_material()
        .key_id(&id)
        .import_token(Blob::new(p.token.clone()))
        .encrypted_key_material(Blob::new(good()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "ValidationException".into(),
            "A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES".into()
        )
    );
    let e = kms
        .import_key_material()
        .key_id(&id)
        .import_token(Blob::new(p.token.clone()))
        .encrypted_key_material(Blob::new(good()))
        .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
        .valid_to(aws_smithy_types::DateTime::from_secs(4_000_000_000))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "ValidationException");

    // Wrapping algorithms AWS no longer takes, or kmsgate does not offer.
    let e = kms
        .get_parameters_for_import()
        .key_id(&id)
        .wrapping_algorithm(AlgorithmSpec::RsaesPkcs1V15)
        .wrapping_key_spec(spec.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "ValidationException");
    let e = kms
        .get_parameters_for_import()
        .key_id(&id)
        .wrapping_algorithm(AlgorithmSpec::Sm2Pke)
        .wrapping_key_spec(WrappingKeySpec::Sm2)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "UnsupportedOperationException");
    let r = gw.raw(
        Some("TrentService.GetParametersForImport"),
        json!({"KeyId": id, "WrappingAlgorithm": "RSA_OAEP", "WrappingKeySpec": "RSA_2048"})
            .to_string()
            .as_bytes(),
        true,
    );
    assert_eq!(r.error_type(), "ValidationException");
    assert!(
        r.message()
            .contains("Value 'RSA_OAEP' at 'wrappingAlgorithm' failed to satisfy constraint"),
        "{}",
        r.message()
    );

    // Nothing above changed the key; the good import still works, once.
    assert_eq!(
        key_metadata(&kms, &id).await.key_state,
        Some(aws_sdk_kms::types::KeyState::PendingImport)
    );
    import(&kms, &id, &p.token, good()).await.unwrap();
    invalid_token(&import(&kms, &id, &p.token, good()).await.unwrap_err());
}

#[tokio::test]
async fn an_expired_import_token_is_refused_as_expired() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_external(&kms).await;
    let alg = AlgorithmSpec::RsaesOaepSha1;
    let p = parameters(&kms, &id, alg.clone(), WrappingKeySpec::Rsa2048).await;
    let wrapped = wrap(&p.public_key, &alg, &[9u8; 32]);
    let token = gw.stop();
    token.set_clock_days_ahead(2);
    let gw = Gateway::start_on(token);
    let kms = gw.client();
    let e = import(&kms, &id, &p.token, wrapped).await.unwrap_err();
    assert_eq!(error_of(&e).0, "ExpiredImportTokenException", "{e:?}");
}

#[tokio::test]
async fn deleted_material_comes_back_only_as_the_same_material() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_external(&kms).await;
    let material: [u8; 32] = rand::random();
    import_material(&kms, &id, &material).await;
    let material_id = key_metadata(&kms, &id).await.current_key_material_id;
    let old = encrypt(&kms, &id, b"kept across re-import").await;

    let out = kms
        .delete_imported_key_material()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(out.key_id.as_deref(), Some(key_arn(&id).as_str()));
    let m = key_metadata(&kms, &id).await;
    assert_eq!(
        m.key_state,
        Some(aws_sdk_kms::types::KeyState::PendingImport)
    );
    assert!(!m.enabled);
    let e = kms
        .decrypt()
        .ciphertext_blob(old.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), pending_import(&id));

    // Other material is not the key.
    let alg = token_wrapping().0;
    let p = parameters(&kms, &id, alg.clone(), WrappingKeySpec::Rsa3072).await;
    let other: [u8; 32] = rand::random();
    let e = import(&kms, &id, &p.token, wrap(&p.public_key, &alg, &other))
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "IncorrectKeyMaterialException");
    assert_eq!(
        key_metadata(&kms, &id).await.key_state,
        Some(aws_sdk_kms::types::KeyState::PendingImport)
    );
    // The same material is, and its old ciphertexts decrypt again.
    import(&kms, &id, &p.token, wrap(&p.public_key, &alg, &material))
        .await
        .unwrap();
    assert_eq!(decrypt(&kms, old).await, b"kept across re-import");
    assert_eq!(
        key_metadata(&kms, &id).await.current_key_material_id,
        material_id
    );
    // Only a generated key rotates.
    let e = kms
        .enable_key_rotation()
        .key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "UnsupportedOperationException".into(),
            format!(
                "{} origin is EXTERNAL which is not valid for this operation.",
                key_arn(&id)
            )
        )
    );
    let e = kms
        .rotate_key_on_demand()
        .key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "KMSInvalidStateException".into(),
            format!(
                "No available key material pending rotation for the key: {}.",
                key_arn(&id)
            )
        )
    );
}

#[tokio::test]
async fn expired_material_is_destroyed_and_the_key_is_pending_import() {
    let gw = Gateway::start_on(Token::with_config(FAST));
    let kms = gw.client();
    let id = create_external(&kms).await;
    let alg = AlgorithmSpec::RsaesOaepSha1;
    let p = parameters(&kms, &id, alg.clone(), WrappingKeySpec::Rsa2048).await;
    let material: [u8; 32] = rand::random();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    kms.import_key_material()
        .key_id(&id)
        .import_token(Blob::new(p.token.clone()))
        .encrypted_key_material(Blob::new(wrap(&p.public_key, &alg, &material)))
        .expiration_model(ExpirationModelType::KeyMaterialExpires)
        .valid_to(aws_smithy_types::DateTime::from_secs(now as i64 + 3))
        .send()
        .await
        .unwrap();
    let m = key_metadata(&kms, &id).await;
    assert_eq!(
        m.expiration_model,
        Some(ExpirationModelType::KeyMaterialExpires)
    );
    assert_eq!(m.valid_to.map(|t| t.secs()), Some(now as i64 + 3));
    let blob = encrypt(&kms, &id, b"until expiry").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let m = key_metadata(&kms, &id).await;
        if m.key_state == Some(aws_sdk_kms::types::KeyState::PendingImport) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never expired: {m:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let e = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), pending_import(&id));
    // The same material brings the key and its ciphertexts back.
    import_material(&kms, &id, &material).await;
    assert_eq!(decrypt(&kms, blob).await, b"until expiry");
}

#[tokio::test]
async fn an_imported_hmac_key_computes_the_same_mac_as_its_twin() {
    use hmac::{KeyInit as _, Mac};
    let gw = Gateway::start();
    let kms = gw.client();
    let id = kms
        .create_key()
        .origin(OriginType::External)
        .key_spec(KeySpec::Hmac256)
        .key_usage(KeyUsageType::GenerateVerifyMac)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let material: [u8; 32] = rand::random();
    import_material(&kms, &id, &material).await;
    let message = b"webhook body";
    let mac = kms
        .generate_mac()
        .key_id(&id)
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .message(Blob::new(message.to_vec()))
        .send()
        .await
        .unwrap()
        .mac
        .unwrap()
        .into_inner();
    let mut twin = hmac::Hmac::<sha2::Sha256>::new_from_slice(&material).unwrap();
    twin.update(message);
    assert_eq!(mac, twin.finalize().into_bytes().to_vec());
}

#[tokio::test]
async fn imported_material_cannot_be_read_or_wrapped_out_of_the_token() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_external(&kms).await;
    import_material(&kms, &id, &rand::random::<[u8; 32]>()).await;
    let token = gw.stop();
    let config = token.config();
    let (ok, stdout, stderr) = token.run_cli(&["check-keys", "--config", config.to_str().unwrap()]);
    assert!(ok, "check-keys failed:\n{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains(id.as_str()))
        .unwrap_or_else(|| panic!("no line for {id} in:\n{stdout}"));
    for fact in [
        "origin=EXTERNAL",
        "sensitive=true",
        "extractable=false",
        "value_readable=false",
        "wrap_out=refused",
        " ok",
    ] {
        assert!(line.contains(fact), "{fact} missing in: {line}");
    }
}
