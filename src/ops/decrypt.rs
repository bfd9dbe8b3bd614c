//! Decrypt: the blob names its key and version; the request's KeyId, when
//! given, must name the same key.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::open_ciphertext::open;
use super::shapes::{Blob, SYMMETRIC_DEFAULT, SecretBlob, check_algorithm, require_symmetric};
use super::validate::Violations;
use crate::blob::EncryptionContext;
use crate::error::KmsError;
use crate::keystore::key_material_id;

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
