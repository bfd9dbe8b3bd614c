//! Black-box specification of GenerateDataKeyPair and
//! GenerateDataKeyPairWithoutPlaintext: a key pair of every DataKeyPairSpec
//! kmsgate offers, made on the token, its public key as DER
//! SubjectPublicKeyInfo and its private key as PKCS#8, the private key also
//! sealed under a symmetric key as a normal ciphertext blob that Decrypt
//! opens with the same encryption context; the refusals AWS gives; grants
//! of the two operations; and an audit trail that never holds the private
//! key.
//!
//! Both halves are checked by an independent implementation (RustCrypto's
//! `rsa`, `p256`, `p384`, `p521` and `k256`): they parse, belong together,
//! and a signature made with the private key verifies with the public key.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeyPairSpec as Spec, GrantOperation, KeySpec, KeyUsageType};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

const MESSAGE: &[u8] = b"signed with a data key pair";

const SPECS: [Spec; 7] = [
    Spec::Rsa2048,
    Spec::Rsa3072,
    Spec::Rsa4096,
    Spec::EccNistP256,
    Spec::EccNistP384,
    Spec::EccNistP521,
    Spec::EccSecgP256K1,
];

fn context() -> HashMap<String, String> {
    [("purpose".to_string(), "data-key-pair".to_string())].into()
}

/// Parses both halves with RustCrypto, checks that they belong together,
/// signs with the private key and verifies with the public one; answers
/// whether a different message fails to verify (it must).
macro_rules! ec_pair_signs {
    ($curve:ident, $private:expr, $public:expr) => {{
        use $curve::ecdsa::signature::{Signer, Verifier};
        use $curve::pkcs8::{DecodePrivateKey, DecodePublicKey};
        let sk = $curve::ecdsa::SigningKey::from_pkcs8_der($private).expect("PKCS#8 parses");
        let vk = $curve::ecdsa::VerifyingKey::from_public_key_der($public).expect("SPKI parses");
        assert_eq!(sk.verifying_key(), &vk, "the halves belong together");
        let sig: $curve::ecdsa::Signature = sk.sign(MESSAGE);
        vk.verify(MESSAGE, &sig).expect("the signature verifies");
        vk.verify(b"another message", &sig).is_err()
    }};
}

fn pair_signs(spec: &Spec, private: &[u8], public: &[u8]) -> bool {
    match spec {
        Spec::EccNistP256 => ec_pair_signs!(p256, private, public),
        Spec::EccNistP384 => ec_pair_signs!(p384, private, public),
        Spec::EccNistP521 => ec_pair_signs!(p521, private, public),
        Spec::EccSecgP256K1 => ec_pair_signs!(k256, private, public),
        _ => {
            use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
            use rsa::signature::{Signer, Verifier};
            use rsa::traits::PublicKeyParts;
            let sk = rsa::PrivateKey::from_pkcs8_der(private).expect("PKCS#8 parses");
            sk.validate().expect("a consistent RSA key");
            let pk = rsa::PublicKey::from_public_key_der(public).expect("SPKI parses");
            assert_eq!(sk.to_public_key(), pk, "the halves belong together");
            let bits = match spec {
                Spec::Rsa2048 => 2048,
                Spec::Rsa3072 => 3072,
                _ => 4096,
            };
            assert_eq!(pk.size() * 8, bits);
            let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(sk);
            let sig = signer.sign(MESSAGE);
            let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(pk);
            vk.verify(MESSAGE, &sig).expect("the signature verifies");
            vk.verify(b"another message", &sig).is_err()
        }
    }
}

/// Decrypts `blob` with `context`: the plaintext, or the error.
async fn open(
    kms: &aws_sdk_kms::Client,
    blob: &Blob,
    context: Option<HashMap<String, String>>,
) -> Result<Vec<u8>, (String, String)> {
    kms.decrypt()
        .ciphertext_blob(blob.clone())
        .set_encryption_context(context)
        .send()
        .await
        .map(|r| r.plaintext.unwrap().into_inner())
        .map_err(|e| error_of(&e))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spec_gives_a_pair_whose_halves_parse_match_and_sign() {
    let gw = Gateway::start();
    let kms = gw.client();
    let key = create_key(&kms).await;
    kms.create_alias()
        .alias_name("alias/pairs")
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    let kryoptic = matches!(implementation(), Implementation::Kryoptic(_));
    let mut publics = Vec::new();
    for spec in SPECS {
        // Kryoptic's `minimal` build does not generate secp256k1 pairs:
        // asked for below.
        if kryoptic && spec == Spec::EccSecgP256K1 {
            continue;
        }
        let r = kms
            .generate_data_key_pair()
            .key_id("alias/pairs")
            .key_pair_spec(spec.clone())
            .set_encryption_context(Some(context()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{spec:?}: {:?}", error_of(&e)));
        assert_eq!(r.key_id.as_deref(), Some(key_arn(&key).as_str()));
        assert_eq!(r.key_pair_spec.as_ref(), Some(&spec));
        let material = r.key_material_id.as_deref().unwrap_or_default();
        assert_eq!(material.len(), 64, "{material:?}");
        let private = r.private_key_plaintext.unwrap().into_inner();
        let public = r.public_key.unwrap().into_inner();
        assert!(pair_signs(&spec, &private, &public), "{spec:?}");

        let blob = r.private_key_ciphertext_blob.unwrap();
        assert_eq!(open(&kms, &blob, Some(context())).await, Ok(private));
        assert_eq!(
            open(&kms, &blob, None).await,
            Err(("InvalidCiphertextException".into(), String::new()))
        );
        publics.push(public);
    }
    let distinct: HashSet<&Vec<u8>> = publics.iter().collect();
    assert_eq!(distinct.len(), publics.len());

    // Every KeyId form, and a second pair of one spec is another pair.
    for id in [key.clone(), key_arn(&key)] {
        let r = kms
            .generate_data_key_pair()
            .key_id(id)
            .key_pair_spec(Spec::EccNistP256)
            .send()
            .await
            .unwrap();
        let public = r.public_key.unwrap().into_inner();
        assert!(!publics.contains(&public));
        publics.push(public);
    }

    // Kryoptic (CKR_GENERAL_ERROR): a retryable 500, and the token goes
    // on making pairs of the other specs.
    if kryoptic {
        let e = kms
            .generate_data_key_pair()
            .key_id(&key)
            .key_pair_spec(Spec::EccSecgP256K1)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            error_of(&e),
            (
                "KeyUnavailableException".into(),
                "The key store is unavailable. Retry the request.".into()
            )
        );
        assert_eq!(e.raw_response().unwrap().status().as_u16(), 500);
        let r = kms
            .generate_data_key_pair()
            .key_id(&key)
            .key_pair_spec(Spec::EccNistP256)
            .send()
            .await
            .unwrap();
        let (private, public) = (
            r.private_key_plaintext.unwrap().into_inner(),
            r.public_key.unwrap().into_inner(),
        );
        assert!(pair_signs(&Spec::EccNistP256, &private, &public));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_plaintext_the_private_key_comes_only_sealed() {
    let gw = Gateway::start();
    let kms = gw.client();
    let key = create_key(&kms).await;
    for spec in [Spec::Rsa2048, Spec::EccNistP384] {
        let r = kms
            .generate_data_key_pair_without_plaintext()
            .key_id(&key)
            .key_pair_spec(spec.clone())
            .set_encryption_context(Some(context()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.key_id.as_deref(), Some(key_arn(&key).as_str()));
        assert_eq!(r.key_pair_spec.as_ref(), Some(&spec));
        assert_eq!(r.key_material_id.as_deref().map(str::len), Some(64));
        let public = r.public_key.unwrap().into_inner();
        let blob = r.private_key_ciphertext_blob.unwrap();
        let private = open(&kms, &blob, Some(context())).await.unwrap();
        assert!(pair_signs(&spec, &private, &public), "{spec:?}");
        assert_eq!(
            open(
                &kms,
                &blob,
                Some([("purpose".into(), "other".into())].into())
            )
            .await
            .unwrap_err()
            .0,
            "InvalidCiphertextException"
        );
    }
    // On the wire: no PrivateKeyPlaintext member at all.
    let body = json!({"KeyId": key, "KeyPairSpec": "ECC_NIST_P256"}).to_string();
    let r = gw.raw(
        Some("TrentService.GenerateDataKeyPairWithoutPlaintext"),
        body.as_bytes(),
        true,
    );
    assert_eq!(r.status, 200);
    let members: Vec<&String> = r.body.as_object().unwrap().keys().collect();
    assert_eq!(
        members,
        [
            "KeyId",
            "KeyMaterialId",
            "KeyPairSpec",
            "PrivateKeyCiphertextBlob",
            "PublicKey"
        ]
    );
    let r = gw.raw(
        Some("TrentService.GenerateDataKeyPair"),
        body.as_bytes(),
        true,
    );
    assert_eq!(r.status, 200);
    assert!(r.body["PrivateKeyPlaintext"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_awss() {
    let gw = Gateway::start();
    let kms = gw.client();
    let key = create_key(&kms).await;
    let arn = key_arn(&key);
    let pair = |id: &str, spec: Spec| {
        kms.generate_data_key_pair()
            .key_id(id)
            .key_pair_spec(spec)
            .send()
    };

    // Keys that do not encrypt.
    let signing = create_key_of(&kms, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let hmac = create_key_of(&kms, KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac).await;
    for (id, usage) in [(&signing, "SIGN_VERIFY"), (&hmac, "GENERATE_VERIFY_MAC")] {
        let e = pair(id, Spec::EccNistP256).await.unwrap_err();
        assert_eq!(
            error_of(&e),
            (
                "InvalidKeyUsageException".into(),
                format!(
                    "{} key usage is {usage} which is not valid for GenerateDataKeyPair.",
                    key_arn(id)
                )
            )
        );
        let e = kms
            .generate_data_key_pair_without_plaintext()
            .key_id(id)
            .key_pair_spec(Spec::Rsa2048)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            error_of(&e).1,
            format!(
                "{} key usage is {usage} which is not valid for GenerateDataKeyPairWithoutPlaintext.",
                key_arn(id)
            )
        );
    }

    // Members, in AWS's validation words, over raw HTTP (the SDK would
    // refuse an unknown spec itself).
    let raw = |body: serde_json::Value| {
        gw.raw(
            Some("TrentService.GenerateDataKeyPair"),
            body.to_string().as_bytes(),
            true,
        )
    };
    let r = raw(json!({"KeyId": key, "KeyPairSpec": "RSA_1024"}));
    assert_eq!(
        (r.status, r.error_type(), r.message()),
        (
            400,
            "ValidationException",
            "1 validation error detected: Value 'RSA_1024' at 'keyPairSpec' failed to satisfy \
             constraint: Member must satisfy enum value set: [RSA_2048, RSA_3072, RSA_4096, \
             ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521, ECC_SECG_P256K1, SM2, \
             ECC_NIST_EDWARDS25519, ML_KEM_512, ML_KEM_768, ML_KEM_1024]"
        )
    );
    let r = raw(json!({"KeyId": key}));
    assert_eq!(
        r.message(),
        "1 validation error detected: Value null at 'keyPairSpec' failed to satisfy \
         constraint: Member must not be null"
    );
    // SM2 is in the model, but SoftHSM2 (like PKCS#11 itself) has no
    // mechanism for it.
    let r = raw(json!({"KeyId": key, "KeyPairSpec": "SM2"}));
    assert_eq!(
        (r.status, r.error_type()),
        (400, "UnsupportedOperationException")
    );
    assert!(r.message().contains("SM2"), "{}", r.message());

    // DryRun: everything checked, nothing made.
    let e = kms
        .generate_data_key_pair()
        .key_id(&key)
        .key_pair_spec(Spec::EccNistP256)
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
    let e = kms
        .generate_data_key_pair_without_plaintext()
        .key_id(&signing)
        .key_pair_spec(Spec::EccNistP256)
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "InvalidKeyUsageException");

    // Unknown, disabled and pending-deletion keys.
    let missing = "00000000-0000-4000-8000-000000000000";
    let e = pair(missing, Spec::Rsa2048).await.unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "NotFoundException".into(),
            format!("Key '{}' does not exist", key_arn(missing))
        )
    );
    kms.disable_key().key_id(&key).send().await.unwrap();
    let e = pair(&key, Spec::Rsa2048).await.unwrap_err();
    assert_eq!(
        error_of(&e),
        ("DisabledException".into(), format!("{arn} is disabled."))
    );
    kms.schedule_key_deletion()
        .key_id(&key)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let e = kms
        .generate_data_key_pair_without_plaintext()
        .key_id(&key)
        .key_pair_spec(Spec::EccNistP256)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "KMSInvalidStateException".into(),
            format!("{arn} is pending deletion.")
        )
    );
}

/// `other` may make P-256 pairs with the plaintext by its identity policy
/// (kms:DataKeyPairSpec), and nothing else but what a grant allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_see_the_pair_spec_and_grants_allow_exactly_the_operation_they_name() {
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:GenerateDataKeyPair","Resource":"*","Condition":{"StringEquals":{"kms:DataKeyPairSpec":"ECC_NIST_P256"}}}]}"#;
    let (gw, other) = Gateway::start_with_other(policy);
    let admin = gw.client();
    let key = create_key(&admin).await;
    let refused = |e: &str, action: &str| {
        assert!(
            e.starts_with(&format!(
                "User: arn:aws:iam::{ACCOUNT}:user/other is not authorized to perform: kms:{action} "
            )),
            "{e}"
        );
    };

    other
        .generate_data_key_pair()
        .key_id(&key)
        .key_pair_spec(Spec::EccNistP256)
        .send()
        .await
        .unwrap();
    let e = other
        .generate_data_key_pair()
        .key_id(&key)
        .key_pair_spec(Spec::Rsa2048)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "AccessDeniedException");
    refused(&error_of(&e).1, "GenerateDataKeyPair");
    let e = other
        .generate_data_key_pair_without_plaintext()
        .key_id(&key)
        .key_pair_spec(Spec::EccNistP256)
        .send()
        .await
        .unwrap_err();
    refused(&error_of(&e).1, "GenerateDataKeyPairWithoutPlaintext");

    let grant = admin
        .create_grant()
        .key_id(&key)
        .grantee_principal(format!("arn:aws:iam::{ACCOUNT}:user/other"))
        .operations(GrantOperation::GenerateDataKeyPairWithoutPlaintext)
        .send()
        .await
        .unwrap()
        .grant_token
        .unwrap();
    let r = other
        .generate_data_key_pair_without_plaintext()
        .key_id(&key)
        .key_pair_spec(Spec::Rsa2048)
        .grant_tokens(&grant)
        .send()
        .await
        .unwrap();
    assert!(r.public_key.is_some());
    let e = other
        .generate_data_key_pair()
        .key_id(&key)
        .key_pair_spec(Spec::Rsa2048)
        .grant_tokens(&grant)
        .send()
        .await
        .unwrap_err();
    refused(&error_of(&e).1, "GenerateDataKeyPair");
}

/// A grant that names an operation twice allows it once: ListGrants shows
/// each operation once, and the same grant asked for again under its name
/// without the repeat is that grant, not a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_that_names_an_operation_twice_allows_it_once() {
    let gw = Gateway::start();
    let kms = gw.client();
    let key = create_key(&kms).await;
    let grant = |operations: Vec<GrantOperation>| {
        kms.create_grant()
            .key_id(&key)
            .grantee_principal(format!("arn:aws:iam::{ACCOUNT}:user/other"))
            .name("pairs")
            .set_operations(Some(operations))
            .send()
    };
    let (pair, sealed) = (
        GrantOperation::GenerateDataKeyPair,
        GrantOperation::GenerateDataKeyPairWithoutPlaintext,
    );
    let first = grant(vec![pair.clone(), sealed.clone(), pair.clone()])
        .await
        .unwrap()
        .grant_id;
    let listed = || async {
        kms.list_grants()
            .key_id(&key)
            .send()
            .await
            .unwrap()
            .grants
            .unwrap_or_default()
    };
    let grants = listed().await;
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(
        grants[0].operations.as_deref(),
        Some(&[pair.clone(), sealed.clone()][..])
    );
    let again = grant(vec![pair, sealed]).await.unwrap().grant_id;
    assert_eq!(again, first);
    assert_eq!(listed().await.len(), 1);
}

fn audit_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("audit.log")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_never_holds_the_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_on(Token::with_config(&format!(
        "[audit]\npath = \"{}\"\ndurability = \"async\"\n",
        dir.path().join("audit.log").display()
    )));
    let kms = gw.client();
    let key = create_key(&kms).await;
    let mut secrets = Vec::new();
    for spec in [Spec::Rsa2048, Spec::EccNistP256] {
        let r = kms
            .generate_data_key_pair()
            .key_id(&key)
            .key_pair_spec(spec)
            .set_encryption_context(Some(context()))
            .send()
            .await
            .unwrap();
        let private = r.private_key_plaintext.unwrap().into_inner();
        let blob = r.private_key_ciphertext_blob.unwrap();
        assert_eq!(open(&kms, &blob, Some(context())).await.unwrap(), private);
        // Any 32 characters of the base64 would give the key away.
        let text = B64.encode(&private);
        secrets.push(text[text.len() / 2..text.len() / 2 + 32].to_owned());
        secrets.push(B64.encode(blob.as_ref()));
    }
    gw.stop();
    let text = audit_text(dir.path());
    assert!(
        text.contains("\"GenerateDataKeyPair\""),
        "the calls are audited"
    );
    assert!(text.contains("\"keyPairSpec\":\"RSA_2048\""), "{text}");
    for secret in secrets.iter().map(String::as_str).chain(["data-key-pair"]) {
        assert!(!text.contains(secret), "{secret:?} in the audit file");
    }
}
