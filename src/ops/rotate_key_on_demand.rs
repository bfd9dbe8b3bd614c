//! RotateKeyOnDemand: a new primary key version now, made on the token.
//! Earlier versions keep decrypting; the automatic schedule is unchanged.

use serde::Serialize;

use super::Ctx;
use super::authorize::Use;
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::KeyIdRequest;
use crate::error::KmsError;

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotateKeyOnDemandResponse {
    pub key_id: String,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: KeyIdRequest,
) -> Result<RotateKeyOnDemandResponse, KmsError> {
    let key = resolve_key_id_or_arn(ctx, req.key_id()?).await?;
    let key = ctx
        .authorize("RotateKeyOnDemand", key, Use::default())
        .await?;
    super::key_usage::require_rotatable(&key)?;
    super::key_usage::require_generated(ctx, &key, true)?;
    let realm = ctx.store.realm();
    let arn = realm.key_arn(key.id());
    key.check_usable(realm)?;
    ctx.store.rotate_on_demand(key.id()).await?;
    Ok(RotateKeyOnDemandResponse { key_id: arn })
}
