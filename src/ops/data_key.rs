//! What GenerateDataKey and GenerateDataKeyWithoutPlaintext share: their
//! request and the work up to the sealed data key.

use std::sync::Arc;

use serde::Deserialize;

use super::Ctx;
use super::authorize::Use;
use super::key_usage::require_usage;
use super::shapes::{check_key_id, dry_run};
use super::validate::Violations;
use crate::blob::EncryptionContext;
use crate::error::KmsError;
use crate::keystore::{Key, KeyUsage, Sealed};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyRequest {
    pub key_id: Option<String>,
    pub encryption_context: Option<EncryptionContext>,
    pub number_of_bytes: Option<i64>,
    pub key_spec: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
    pub recipient: Option<serde_json::Value>,
    pub dry_run: Option<bool>,
}

const DATA_KEY_SPECS: &[&str] = &["AES_256", "AES_128"];

/// What GenerateDataKey and GenerateDataKeyWithoutPlaintext share: the
/// checks in AWS's order, then the token's work. Returns the key too.
pub async fn generate(
    ctx: &mut Ctx<'_>,
    mut req: GenerateDataKeyRequest,
    want_plaintext: bool,
) -> Result<(Sealed, Arc<Key>), KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    if let Some(n) = req.number_of_bytes {
        v.int_range("numberOfBytes", n, 1, 1024);
    }
    if let Some(s) = &req.key_spec {
        v.enum_value("keySpec", s, DATA_KEY_SPECS);
    }
    v.grant_tokens(&req.grant_tokens);
    v.finish()?;
    let len = match (req.number_of_bytes, req.key_spec.as_deref()) {
        (Some(n), None) => n as usize,
        (None, Some("AES_128")) => 16,
        (None, Some(_)) => 32,
        _ => {
            return Err(KmsError::Validation(
                "Please specify either number of bytes or key spec.".into(),
            ));
        }
    };
    let key = ctx
        .store
        .resolve(req.key_id.as_deref().unwrap_or_default())
        .await?;
    let context = req.encryption_context.take().unwrap_or_default();
    let operation = if want_plaintext {
        "GenerateDataKey"
    } else {
        "GenerateDataKeyWithoutPlaintext"
    };
    let use_ = Use {
        context: Some(&context),
        key_id: req.key_id.as_deref(),
        algorithm: None,
        grant_tokens: req.grant_tokens.as_deref(),
        extra: None,
    };
    let key = ctx.authorize(operation, key, use_).await?;
    let realm = ctx.store.realm();
    key.check_usable(realm)?;
    require_usage(ctx, &key, KeyUsage::EncryptDecrypt, operation)?;
    if key.record.key_spec.is_asymmetric() {
        // The text a third-party emulator pins as AWS's (not recorded here).
        return Err(KmsError::InvalidKeyUsage(
            "You cannot generate a data key with an asymmetric CMK".into(),
        ));
    }
    dry_run(req.dry_run)?;
    if req.recipient.is_some() {
        return Err(KmsError::UnsupportedOperation(Some(
            "Recipient (attested enclaves) is not supported by kmsgate.".into(),
        )));
    }
    let sealed = ctx
        .store
        .generate_data_key(&key, &context, len, want_plaintext)
        .await?;
    ctx.audit_version(sealed.version);
    Ok((sealed, key))
}
