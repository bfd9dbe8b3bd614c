//! UpdateAlias: point an existing alias at another key.

use serde::Deserialize;

use super::Ctx;
use super::alias_name::{check_alias_characters, check_alias_name, check_alias_prefix, target_key};
use super::authorize::Use;
use super::shapes::{Empty, check_key_id};
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateAliasRequest {
    pub alias_name: Option<String>,
    pub target_key_id: Option<String>,
}

pub async fn handle(ctx: &mut Ctx<'_>, req: UpdateAliasRequest) -> Result<Empty, KmsError> {
    let mut v = Violations::new();
    check_alias_name(&mut v, &req.alias_name);
    check_key_id(&mut v, "targetKeyId", &req.target_key_id);
    v.finish()?;
    let name = req.alias_name.as_deref().unwrap_or_default();
    check_alias_prefix(name)?;
    check_alias_characters(name)?;
    // The alias's current key and the new one must both allow it.
    if let Some(old) = ctx.store.alias_target(name).await?
        && let Some(old) = ctx.store.key_by_id(&old).await?
    {
        ctx.authorize("UpdateAlias", old, Use::default()).await?;
    }
    let key = target_key(ctx, req.target_key_id.as_deref().unwrap_or_default()).await?;
    let key = ctx.authorize("UpdateAlias", key, Use::default()).await?;
    ctx.store.update_alias(name, key.id()).await?;
    Ok(Empty {})
}
