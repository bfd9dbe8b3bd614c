//! DeriveSharedSecret: ECDH between a key agreement key's private half, on
//! the token, and the peer's public key (DER SubjectPublicKeyInfo on the
//! same curve). The raw shared secret is returned, as AWS returns it.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::key_usage::require_usage;
use super::shapes::{Blob, SecretBlob, check_key_id, dry_run};
use super::validate::Violations;
use crate::error::{KmsError, incompatible_algorithm, invalid_peer_public_key};
use crate::keystore::key_agreement::peer_point;
use crate::keystore::{KeyAgreementAlgorithm, KeyUsage};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeriveSharedSecretRequest {
    pub key_id: Option<String>,
    pub key_agreement_algorithm: Option<String>,
    pub public_key: Option<Blob>,
    pub grant_tokens: Option<Vec<String>>,
    pub dry_run: Option<bool>,
    pub recipient: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeriveSharedSecretResponse {
    /// The key ARN.
    pub key_id: String,
    pub shared_secret: SecretBlob,
    pub key_agreement_algorithm: &'static str,
    pub key_origin: &'static str,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: DeriveSharedSecretRequest,
) -> Result<DeriveSharedSecretResponse, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    if v.required("keyAgreementAlgorithm", &req.key_agreement_algorithm)
        && let Some(a) = &req.key_agreement_algorithm
    {
        let names = KeyAgreementAlgorithm::ALL.map(KeyAgreementAlgorithm::as_str);
        v.enum_value("keyAgreementAlgorithm", a, &names);
    }
    if v.required("publicKey", &req.public_key)
        && let Some(p) = &req.public_key
    {
        v.blob_len("publicKey", p.0.len(), 1, 8192);
    }
    v.grant_tokens(&req.grant_tokens);
    v.finish()?;
    let key_id = req.key_id.as_deref().unwrap_or_default();
    let algorithm = req.key_agreement_algorithm.as_deref().unwrap_or_default();
    let algorithm = KeyAgreementAlgorithm::parse(algorithm)
        .ok_or_else(|| KmsError::Internal(format!("unchecked algorithm {algorithm}")))?;
    let key = ctx.store.resolve(key_id).await?;
    let use_ = Use {
        key_id: Some(key_id),
        algorithm: Some(algorithm.as_str()),
        grant_tokens: req.grant_tokens.as_deref(),
        ..Use::default()
    };
    let key = ctx.authorize("DeriveSharedSecret", key, use_).await?;
    key.check_usable(ctx.store.realm())?;
    require_usage(ctx, &key, KeyUsage::KeyAgreement, "DeriveSharedSecret")?;
    let spec = key.record.key_spec;
    if !spec.key_agreement_algorithms().contains(&algorithm) {
        return Err(incompatible_algorithm(algorithm.as_str(), spec.as_str()));
    }
    let spki = req.public_key.map(|p| p.0).unwrap_or_default();
    let peer = peer_point(spec, &spki).ok_or_else(|| invalid_peer_public_key(spec.as_str()))?;
    if req.recipient.is_some() {
        return Err(KmsError::UnsupportedOperation(Some(
            "Recipient (attested enclaves) is not supported by kmsgate.".into(),
        )));
    }
    dry_run(req.dry_run)?;
    let (version, secret) = ctx.store.derive_shared_secret(&key, peer).await?;
    ctx.audit_version(version);
    Ok(DeriveSharedSecretResponse {
        key_id: ctx.store.realm().key_arn(key.id()),
        shared_secret: SecretBlob(secret),
        key_agreement_algorithm: algorithm.as_str(),
        key_origin: "AWS_KMS",
    })
}
