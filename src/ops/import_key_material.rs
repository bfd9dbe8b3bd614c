//! ImportKeyMaterial: key material wrapped under the public key of
//! GetParametersForImport is unwrapped on the token, straight into a
//! sensitive, non-extractable key object, and the EXTERNAL key is enabled.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::{Blob, check_key_id};
use super::validate::Violations;
use crate::error::{KmsError, ValidToRule, new_key_material_unsupported, valid_to_rule};
use crate::keystore::key_material_id;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportKeyMaterialRequest {
    pub key_id: Option<String>,
    pub import_token: Option<Blob>,
    pub encrypted_key_material: Option<Blob>,
    pub valid_to: Option<f64>,
    pub expiration_model: Option<String>,
    pub import_type: Option<String>,
    pub key_material_description: Option<String>,
    pub key_material_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportKeyMaterialResponse {
    /// The key ARN.
    pub key_id: String,
    pub key_material_id: String,
}

const EXPIRES: &str = "KEY_MATERIAL_EXPIRES";
const DOES_NOT_EXPIRE: &str = "KEY_MATERIAL_DOES_NOT_EXPIRE";
/// ValidTo at most this far ahead (AWS's limit: 365 days).
const MAX_VALIDITY_SECS: f64 = 365.0 * 86_400.0;

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: ImportKeyMaterialRequest,
) -> Result<ImportKeyMaterialResponse, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    for (member, blob) in [
        ("importToken", &req.import_token),
        ("encryptedKeyMaterial", &req.encrypted_key_material),
    ] {
        if v.required(member, blob)
            && let Some(b) = blob
        {
            v.blob_len(member, b.0.len(), 1, 6144);
        }
    }
    if let Some(m) = &req.expiration_model {
        v.enum_value("expirationModel", m, &[DOES_NOT_EXPIRE, EXPIRES]);
    }
    if let Some(t) = &req.import_type {
        v.enum_value(
            "importType",
            t,
            &["NEW_KEY_MATERIAL", "EXISTING_KEY_MATERIAL"],
        );
    }
    if let Some(d) = &req.key_material_description {
        v.str_len("keyMaterialDescription", d, 0, 256);
    }
    if let Some(id) = &req.key_material_id {
        v.str_len("keyMaterialId", id, 64, 64);
    }
    v.finish()?;
    // AWS's default model is KEY_MATERIAL_EXPIRES, which needs a ValidTo.
    let expires = req.expiration_model.as_deref().unwrap_or(EXPIRES) == EXPIRES;
    let now = ctx.store.now();
    match (expires, req.valid_to) {
        (true, None) => return Err(valid_to_rule(ValidToRule::Required)),
        (false, Some(_)) => return Err(valid_to_rule(ValidToRule::Forbidden)),
        (true, Some(t)) if t <= now => return Err(valid_to_rule(ValidToRule::Past)),
        (true, Some(t)) if t > now + MAX_VALIDITY_SECS => {
            return Err(valid_to_rule(ValidToRule::TooFar));
        }
        _ => {}
    }
    if req.import_type.as_deref() == Some("NEW_KEY_MATERIAL") {
        return Err(new_key_material_unsupported());
    }
    let key = resolve_key_id_or_arn(ctx, req.key_id.as_deref().unwrap_or_default()).await?;
    let key = ctx
        .authorize("ImportKeyMaterial", key, Use::default())
        .await?;
    let (Some(token), Some(material)) = (&req.import_token, &req.encrypted_key_material) else {
        return Err(KmsError::Internal("validated members missing".into()));
    };
    let key = ctx
        .store
        .import_key_material(key.id(), &token.0, &material.0, req.valid_to)
        .await?;
    ctx.audit_version(key.record.primary_version);
    Ok(ImportKeyMaterialResponse {
        key_id: ctx.store.realm().key_arn(key.id()),
        key_material_id: key_material_id(key.id(), key.record.primary_version),
    })
}
