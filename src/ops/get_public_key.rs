//! GetPublicKey: the public key of a key pair (signing or RSA encryption)
//! as DER SubjectPublicKeyInfo, read from the token's public key object,
//! with the key's spec, usage and signing or encryption algorithms.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::key_usage::require_usage;
use super::shapes::Blob;
use crate::error::KmsError;
use crate::keystore::{KeyUsage, SigningAlgorithm};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetPublicKeyRequest {
    pub key_id: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetPublicKeyResponse {
    /// The key ARN.
    pub key_id: String,
    pub public_key: Blob,
    pub customer_master_key_spec: &'static str,
    pub key_spec: &'static str,
    pub key_usage: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_algorithms: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_algorithms: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_agreement_algorithms: Option<Vec<&'static str>>,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: GetPublicKeyRequest,
) -> Result<GetPublicKeyResponse, KmsError> {
    let key = ctx
        .named_key("GetPublicKey", &req.key_id, &req.grant_tokens)
        .await?;
    key.check_usable(ctx.store.realm())?;
    // Only key pairs have a public key (AWS's usage text, by its pattern).
    if !key.record.key_spec.is_asymmetric() {
        require_usage(ctx, &key, KeyUsage::SignVerify, "GetPublicKey")?;
    }
    let public_key = ctx.store.public_key(&key).await?;
    let spec = key.record.key_spec;
    let usage = key.record.key_usage;
    Ok(GetPublicKeyResponse {
        key_id: ctx.store.realm().key_arn(key.id()),
        public_key: Blob(public_key),
        customer_master_key_spec: spec.as_str(),
        key_spec: spec.as_str(),
        key_usage: key.record.key_usage.as_str(),
        signing_algorithms: (usage == KeyUsage::SignVerify).then(|| {
            spec.signing_algorithms()
                .iter()
                .map(|a: &SigningAlgorithm| a.as_str())
                .collect()
        }),
        encryption_algorithms: (usage == KeyUsage::EncryptDecrypt).then(|| {
            spec.rsa_encryption_algorithms()
                .iter()
                .map(|a| a.as_str())
                .collect()
        }),
        key_agreement_algorithms: (usage == KeyUsage::KeyAgreement).then(|| {
            spec.key_agreement_algorithms()
                .iter()
                .map(|a| a.as_str())
                .collect()
        }),
    })
}
