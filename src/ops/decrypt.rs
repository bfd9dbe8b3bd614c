//! Decrypt: the blob names its key and version; the request's KeyId, when
//! given, must name the same key. A raw RSA ciphertext names nothing: its
//! KeyId and RSAES_OAEP_* algorithm are required.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::key_usage::require_usage;
use super::open_ciphertext::open;
use super::shapes::{
    Blob, SYMMETRIC_DEFAULT, SecretBlob, check_algorithm, dry_run, require_rsa_algorithm,
    require_symmetric,
};
use super::validate::Violations;
use crate::blob::EncryptionContext;
use crate::error::{KmsError, RSA_CONTEXT, RSA_KEY_ID_REQUIRED};
use crate::keystore::{EncryptionAlgorithm, KeyUsage, key_material_id};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptRequest {
    pub ciphertext_blob: Option<Blob>,
    pub encryption_context: Option<EncryptionContext>,
    pub grant_tokens: Option<Vec<String>>,
    pub key_id: Option<String>,
    pub encryption_algorithm: Option<String>,
    pub recipient: Option<serde_json::Value>,
    pub dry_run: Option<bool>,
    pub dry_run_modifiers: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptResponse {
    pub key_id: String,
    pub plaintext: SecretBlob,
    pub encryption_algorithm: &'static str,
    pub key_material_id: String,
}

pub async fn handle(ctx: &mut Ctx<'_>, req: DecryptRequest) -> Result<DecryptResponse, KmsError> {
    let mut v = Violations::new();
    if v.required("ciphertextBlob", &req.ciphertext_blob)
        && let Some(b) = &req.ciphertext_blob
    {
        v.blob_len("ciphertextBlob", b.0.len(), 1, 6144);
    }
    if let Some(k) = &req.key_id {
        v.str_len("keyId", k, 1, 2048);
    }
    v.grant_tokens(&req.grant_tokens);
    check_algorithm(&mut v, "encryptionAlgorithm", &req.encryption_algorithm);
    v.finish()?;
    if let Some(algorithm) = req.encryption_algorithm.as_deref()
        && EncryptionAlgorithm::parse(algorithm).is_some()
    {
        return decrypt_rsa(ctx, req).await;
    }
    require_symmetric(&req.encryption_algorithm)?;
    if req.recipient.is_some() {
        return Err(KmsError::UnsupportedOperation(Some(
            "Recipient (attested enclaves) is not supported by kmsgate.".into(),
        )));
    }
    let ciphertext = req.ciphertext_blob.map(|b| b.0).unwrap_or_default();
    let context = req.encryption_context.unwrap_or_default();
    let opened = open(
        ctx,
        "Decrypt",
        &ciphertext,
        req.key_id.as_deref(),
        &context,
        req.grant_tokens.as_deref(),
        req.dry_run,
    )
    .await?;
    Ok(DecryptResponse {
        key_id: ctx.store.realm().key_arn(opened.key.id()),
        plaintext: SecretBlob(opened.plaintext),
        encryption_algorithm: SYMMETRIC_DEFAULT,
        key_material_id: key_material_id(opened.key.id(), opened.version),
    })
}

/// Decrypt of a raw RSA ciphertext: the request names the key and the
/// algorithm; the token decrypts with the private key.
async fn decrypt_rsa(ctx: &mut Ctx<'_>, req: DecryptRequest) -> Result<DecryptResponse, KmsError> {
    let Some(key_id) = req.key_id.as_deref() else {
        return Err(KmsError::Validation(RSA_KEY_ID_REQUIRED.into()));
    };
    let key = ctx.store.resolve(key_id).await?;
    let context = req.encryption_context.clone().unwrap_or_default();
    let use_ = Use {
        context: Some(&context),
        key_id: Some(key_id),
        algorithm: req.encryption_algorithm.as_deref(),
        grant_tokens: req.grant_tokens.as_deref(),
        extra: None,
    };
    let key = ctx.authorize("Decrypt", key, use_).await?;
    key.check_usable(ctx.store.realm())?;
    require_usage(ctx, &key, KeyUsage::EncryptDecrypt, "Decrypt")?;
    let algorithm = require_rsa_algorithm(&req.encryption_algorithm, key.record.key_spec)?;
    if !context.is_empty() {
        return Err(KmsError::Validation(RSA_CONTEXT.into()));
    }
    if req.recipient.is_some() {
        return Err(KmsError::UnsupportedOperation(Some(
            "Recipient (attested enclaves) is not supported by kmsgate.".into(),
        )));
    }
    dry_run(req.dry_run)?;
    let ciphertext = req.ciphertext_blob.map(|b| b.0).unwrap_or_default();
    let (version, plaintext) = ctx.store.rsa_decrypt(&key, algorithm, ciphertext).await?;
    ctx.audit_version(version);
    let plaintext = plaintext.ok_or(KmsError::InvalidCiphertext)?;
    Ok(DecryptResponse {
        key_id: ctx.store.realm().key_arn(key.id()),
        plaintext: SecretBlob(plaintext),
        encryption_algorithm: algorithm.as_str(),
        key_material_id: key_material_id(key.id(), version),
    })
}
