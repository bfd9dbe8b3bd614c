//! What GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext share:
//! their request and the work up to the sealed private key.
//!
//! The pair is made on the token as session objects and destroyed once read
//! (docs/security.md, "Data key pairs"); the private key is sealed under a
//! symmetric encryption key, so the checks are the data key family's.

use serde::Deserialize;

use super::Ctx;
use super::authorize::Use;
use super::key_usage::require_symmetric_encryption;
use super::shapes::{check_key_id, dry_run};
use super::validate::Violations;
use crate::blob::EncryptionContext;
use crate::error::KmsError;
use crate::keystore::{DataKeyPair, KeySpec, key_material_id};
use crate::policy::Facts;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairRequest {
    pub key_id: Option<String>,
    pub key_pair_spec: Option<String>,
    pub encryption_context: Option<EncryptionContext>,
    pub grant_tokens: Option<Vec<String>>,
    pub recipient: Option<serde_json::Value>,
    pub dry_run: Option<bool>,
}

/// The service model's DataKeyPairSpec, in its order.
const KEY_PAIR_SPECS: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SM2",
    "ECC_NIST_EDWARDS25519",
    "ML_KEM_512",
    "ML_KEM_768",
    "ML_KEM_1024",
];

/// The specs of the model that kmsgate makes pairs of.
fn supported(spec: &str) -> Option<KeySpec> {
    match spec {
        "RSA_2048" => Some(KeySpec::Rsa2048),
        "RSA_3072" => Some(KeySpec::Rsa3072),
        "RSA_4096" => Some(KeySpec::Rsa4096),
        "ECC_NIST_P256" => Some(KeySpec::EccNistP256),
        "ECC_NIST_P384" => Some(KeySpec::EccNistP384),
        "ECC_NIST_P521" => Some(KeySpec::EccNistP521),
        "ECC_SECG_P256K1" => Some(KeySpec::EccSecgP256k1),
        _ => None,
    }
}

/// A data key pair and what the response says about it.
pub struct Made {
    pub pair: DataKeyPair,
    /// The KMS key's ARN.
    pub key_arn: String,
    pub key_pair_spec: &'static str,
    pub key_material_id: String,
}

/// The checks in AWS's order (members, key, authorization, state, usage,
/// DryRun), then the token's work.
pub async fn generate(
    ctx: &mut Ctx<'_>,
    mut req: GenerateDataKeyPairRequest,
    want_plaintext: bool,
) -> Result<Made, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    if v.required("keyPairSpec", &req.key_pair_spec)
        && let Some(s) = &req.key_pair_spec
    {
        v.enum_value("keyPairSpec", s, KEY_PAIR_SPECS);
    }
    v.grant_tokens(&req.grant_tokens);
    v.finish()?;
    let name = req.key_pair_spec.as_deref().unwrap_or_default();
    let Some(spec) = supported(name) else {
        // SM2 has no mechanism in PKCS#11 (only vendor-defined ones), so no
        // token can be asked for it; Ed25519 and ML-KEM pairs are not made
        // by kmsgate.
        return Err(KmsError::UnsupportedOperation(Some(format!(
            "KeyPairSpec {name} is not supported by kmsgate: the token offers no key pair \
             mechanism for it that kmsgate can use."
        ))));
    };
    let key = ctx
        .store
        .resolve(req.key_id.as_deref().unwrap_or_default())
        .await?;
    let context = req.encryption_context.take().unwrap_or_default();
    let operation = if want_plaintext {
        "GenerateDataKeyPair"
    } else {
        "GenerateDataKeyPairWithoutPlaintext"
    };
    // Policies may name the pair's spec (kms:DataKeyPairSpec).
    let mut facts = Facts::default();
    facts.set_one("kms:DataKeyPairSpec", spec.as_str());
    let use_ = Use {
        context: Some(&context),
        key_id: req.key_id.as_deref(),
        algorithm: None,
        grant_tokens: req.grant_tokens.as_deref(),
        extra: Some(&facts),
    };
    let key = ctx.authorize(operation, key, use_).await?;
    let realm = ctx.store.realm();
    key.check_usable(realm)?;
    require_symmetric_encryption(ctx, &key, operation)?;
    dry_run(req.dry_run)?;
    if req.recipient.is_some() {
        return Err(KmsError::UnsupportedOperation(Some(
            "Recipient (attested enclaves) is not supported by kmsgate.".into(),
        )));
    }
    let pair = ctx
        .store
        .generate_data_key_pair(&key, &context, spec, want_plaintext)
        .await?;
    let version = pair.sealed.version;
    ctx.audit_version(version);
    Ok(Made {
        key_arn: realm.key_arn(key.id()),
        key_pair_spec: spec.as_str(),
        key_material_id: key_material_id(key.id(), version),
        pair,
    })
}
