//! ReEncrypt: decrypt under one key and context, encrypt under another,
//! in one request. The plaintext exists only in the gateway's memory, in
//! zeroed-on-drop buffers, between the two token operations.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::key_usage::require_usage;
use super::open_ciphertext::open;
use super::shapes::{Blob, SYMMETRIC_DEFAULT, check_algorithm, check_key_id, require_symmetric};
use super::validate::Violations;
use crate::blob::EncryptionContext;
use crate::error::{KmsError, incompatible_algorithm};
use crate::keystore::{KeyUsage, key_material_id};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptRequest {
    pub ciphertext_blob: Option<Blob>,
    pub source_encryption_context: Option<EncryptionContext>,
    pub source_key_id: Option<String>,
    pub destination_key_id: Option<String>,
    pub destination_encryption_context: Option<EncryptionContext>,
    pub source_encryption_algorithm: Option<String>,
    pub destination_encryption_algorithm: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
    pub dry_run: Option<bool>,
    pub dry_run_modifiers: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptResponse {
    pub ciphertext_blob: Blob,
    pub source_key_id: String,
    pub key_id: String,
    pub source_encryption_algorithm: &'static str,
    pub destination_encryption_algorithm: &'static str,
    pub source_key_material_id: String,
    pub destination_key_material_id: String,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: ReEncryptRequest,
) -> Result<ReEncryptResponse, KmsError> {
    let mut v = Violations::new();
    if v.required("ciphertextBlob", &req.ciphertext_blob)
        && let Some(b) = &req.ciphertext_blob
    {
        v.blob_len("ciphertextBlob", b.0.len(), 1, 6144);
    }
    check_key_id(&mut v, "destinationKeyId", &req.destination_key_id);
    if let Some(k) = &req.source_key_id {
        v.str_len("sourceKeyId", k, 1, 2048);
    }
    v.grant_tokens(&req.grant_tokens);
    check_algorithm(
        &mut v,
        "sourceEncryptionAlgorithm",
        &req.source_encryption_algorithm,
    );
    check_algorithm(
        &mut v,
        "destinationEncryptionAlgorithm",
        &req.destination_encryption_algorithm,
    );
    v.finish()?;
    require_symmetric(&req.source_encryption_algorithm)?;
    require_symmetric(&req.destination_encryption_algorithm)?;

    let destination = ctx
        .store
        .resolve(req.destination_key_id.as_deref().unwrap_or_default())
        .await?;
    let dest_context = req.destination_encryption_context.unwrap_or_default();
    let use_ = Use {
        context: Some(&dest_context),
        key_id: req.destination_key_id.as_deref(),
        algorithm: req.destination_encryption_algorithm.as_deref(),
        grant_tokens: req.grant_tokens.as_deref(),
        extra: None,
    };
    let destination = ctx.authorize("ReEncryptTo", destination, use_).await?;
    let realm = ctx.store.realm();
    destination.check_usable(realm)?;
    require_usage(ctx, &destination, KeyUsage::EncryptDecrypt, "ReEncrypt")?;
    if destination.record.key_spec.is_asymmetric() {
        return Err(incompatible_algorithm(
            req.destination_encryption_algorithm
                .as_deref()
                .unwrap_or(SYMMETRIC_DEFAULT),
            destination.record.key_spec.as_str(),
        ));
    }

    let ciphertext = req.ciphertext_blob.map(|b| b.0).unwrap_or_default();
    let source_context = req.source_encryption_context.unwrap_or_default();
    let opened = open(
        ctx,
        "ReEncryptFrom",
        &ciphertext,
        req.source_key_id.as_deref(),
        &source_context,
        req.grant_tokens.as_deref(),
        req.dry_run,
    )
    .await?;
    let sealed = ctx
        .store
        .encrypt(&destination, &dest_context, opened.plaintext)
        .await?;
    let realm = ctx.store.realm();
    ctx.audit(realm.key_arn(destination.id()));
    ctx.audit_version(sealed.version);
    Ok(ReEncryptResponse {
        ciphertext_blob: Blob(sealed.blob),
        source_key_id: realm.key_arn(opened.key.id()),
        key_id: realm.key_arn(destination.id()),
        source_encryption_algorithm: SYMMETRIC_DEFAULT,
        destination_encryption_algorithm: SYMMETRIC_DEFAULT,
        source_key_material_id: key_material_id(opened.key.id(), opened.version),
        destination_key_material_id: key_material_id(destination.id(), sealed.version),
    })
}
