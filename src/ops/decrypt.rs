//! Decrypt: the blob names its key and version; the request's KeyId, when
//! given, must name the same key.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::Ctx;
use super::authorize::Use;
use super::shapes::{
    Blob, SYMMETRIC_DEFAULT, SecretBlob, check_algorithm, dry_run, require_symmetric,
};
use super::validate::Violations;
use crate::blob::{self, EncryptionContext};
use crate::error::KmsError;
use crate::keystore::{Key, key_material_id};

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

/// A ciphertext opened: the key and version that sealed it, and the
/// plaintext.
pub struct Opened {
    pub key: Arc<Key>,
    pub version: u32,
    pub plaintext: Zeroizing<Vec<u8>>,
}

const NO_SUCH_KEY: &str = "The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access.";

/// Checks a ciphertext against its key (and the caller's KeyId, if any) and
/// decrypts it. Shared by Decrypt and ReEncrypt. With `dry`, stops before
/// the token decrypts.
pub async fn open(
    ctx: &mut Ctx<'_>,
    operation: &str,
    ciphertext: &[u8],
    key_id: Option<&str>,
    context: &EncryptionContext,
    grant_tokens: Option<&[String]>,
    dry: Option<bool>,
) -> Result<Opened, KmsError> {
    let parsed = blob::parse(ciphertext).map_err(|_| KmsError::InvalidCiphertext)?;
    let key = ctx
        .store
        .key_by_id(&parsed.header.key_id)
        .await?
        .ok_or_else(|| KmsError::AccessDenied(NO_SUCH_KEY.into()))?;
    let use_ = Use {
        context: Some(context),
        key_id,
        algorithm: None,
        grant_tokens,
        extra: None,
    };
    let key = ctx.authorize(operation, key, use_).await?;
    let realm = ctx.store.realm();
    if let Some(k) = key_id {
        let named = ctx.store.resolve(k).await?;
        if named.id() != key.id() {
            return Err(KmsError::IncorrectKey);
        }
    }
    key.check_usable(realm)?;
    dry_run(dry)?;
    let plaintext = ctx.store.decrypt(&key, &parsed, context).await?;
    ctx.audit_version(parsed.header.key_version);
    Ok(Opened {
        version: parsed.header.key_version,
        key,
        plaintext,
    })
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
