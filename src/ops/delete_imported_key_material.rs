//! DeleteImportedKeyMaterial: an EXTERNAL key's material is destroyed on
//! the token and the key is PendingImport until the same material is
//! imported again.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::check_key_id;
use super::validate::Violations;
use crate::error::{KmsError, no_such_material};
use crate::keystore::key_material_id;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteImportedKeyMaterialRequest {
    pub key_id: Option<String>,
    pub key_material_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteImportedKeyMaterialResponse {
    /// The key ARN.
    pub key_id: String,
    pub key_material_id: String,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: DeleteImportedKeyMaterialRequest,
) -> Result<DeleteImportedKeyMaterialResponse, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    if let Some(id) = &req.key_material_id {
        v.str_len("keyMaterialId", id, 64, 64);
    }
    v.finish()?;
    let key = resolve_key_id_or_arn(ctx, req.key_id.as_deref().unwrap_or_default()).await?;
    let key = ctx
        .authorize("DeleteImportedKeyMaterial", key, Use::default())
        .await?;
    // The one material an imported key has is version 1's.
    let material_id = key_material_id(key.id(), 1);
    if let Some(asked) = &req.key_material_id
        && *asked != material_id
    {
        return Err(no_such_material(
            asked,
            &ctx.store.realm().key_arn(key.id()),
        ));
    }
    let key = ctx.store.delete_imported_material(key.id()).await?;
    Ok(DeleteImportedKeyMaterialResponse {
        key_id: ctx.store.realm().key_arn(key.id()),
        key_material_id: material_id,
    })
}
