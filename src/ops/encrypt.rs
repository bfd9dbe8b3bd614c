//! Encrypt: up to 4096 bytes sealed under a symmetric key's primary
//! version, or (RSA encryption keys) RSAES-OAEP under the public key on
//! the token, the raw RSA ciphertext returned as AWS returns it.
//! (The service model's EncryptResponse has no KeyMaterialId; Decrypt of
//! the result tells which version sealed it.)

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::key_usage::require_usage;
use super::shapes::{
    Blob, SYMMETRIC_DEFAULT, SecretBlob, check_algorithm, check_key_id, dry_run,
    require_rsa_algorithm, require_symmetric,
};
use super::validate::Violations;
use crate::blob::EncryptionContext;
use crate::error::{KmsError, RSA_CONTEXT, oaep_too_long};
use crate::keystore::KeyUsage;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptRequest {
    pub key_id: Option<String>,
    pub plaintext: Option<SecretBlob>,
    pub encryption_context: Option<EncryptionContext>,
    pub grant_tokens: Option<Vec<String>>,
    pub encryption_algorithm: Option<String>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptResponse {
    pub ciphertext_blob: Blob,
    pub key_id: String,
    pub encryption_algorithm: &'static str,
}

pub async fn handle(ctx: &mut Ctx<'_>, req: EncryptRequest) -> Result<EncryptResponse, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    if v.required("plaintext", &req.plaintext)
        && let Some(p) = &req.plaintext
    {
        v.blob_len("plaintext", p.0.len(), 1, 4096);
    }
    v.grant_tokens(&req.grant_tokens);
    check_algorithm(&mut v, "encryptionAlgorithm", &req.encryption_algorithm);
    v.finish()?;
    let key = ctx
        .store
        .resolve(req.key_id.as_deref().unwrap_or_default())
        .await?;
    let context = req.encryption_context.unwrap_or_default();
    let use_ = Use {
        context: Some(&context),
        key_id: req.key_id.as_deref(),
        algorithm: req.encryption_algorithm.as_deref(),
        grant_tokens: req.grant_tokens.as_deref(),
        extra: None,
    };
    let key = ctx.authorize("Encrypt", key, use_).await?;
    let realm = ctx.store.realm();
    let arn = realm.key_arn(key.id());
    key.check_usable(realm)?;
    require_usage(ctx, &key, KeyUsage::EncryptDecrypt, "Encrypt")?;
    let spec = key.record.key_spec;
    if spec.is_rsa() {
        let algorithm = require_rsa_algorithm(&req.encryption_algorithm, spec)?;
        if !context.is_empty() {
            return Err(KmsError::Validation(RSA_CONTEXT.into()));
        }
        let plaintext = req.plaintext.map(|p| p.0).unwrap_or_default();
        let max = spec.max_oaep_plaintext(algorithm).unwrap_or_default();
        if plaintext.len() > max {
            return Err(oaep_too_long(algorithm.as_str(), spec.as_str(), max));
        }
        dry_run(req.dry_run)?;
        let (version, ciphertext) = ctx.store.rsa_encrypt(&key, algorithm, plaintext).await?;
        ctx.audit_version(version);
        return Ok(EncryptResponse {
            ciphertext_blob: Blob(ciphertext),
            key_id: arn,
            encryption_algorithm: algorithm.as_str(),
        });
    }
    require_symmetric(&req.encryption_algorithm)?;
    dry_run(req.dry_run)?;
    let plaintext = req.plaintext.map(|p| p.0).unwrap_or_default();
    let sealed = ctx.store.encrypt(&key, &context, plaintext).await?;
    ctx.audit_version(sealed.version);
    Ok(EncryptResponse {
        ciphertext_blob: Blob(sealed.blob),
        key_id: arn,
        encryption_algorithm: SYMMETRIC_DEFAULT,
    })
}
