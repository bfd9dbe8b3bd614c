//! UpdateAlias: point an existing alias at another key.

use serde::Deserialize;

use super::Ctx;
use super::alias_name::{
    MOVES, alias_not_found, authorize_alias, authorize_on_target, check_alias_characters,
    check_alias_name, check_alias_prefix, kept_moving, target_key,
};
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
    // The alias itself (identity policies), then its keys.
    authorize_alias(ctx, "UpdateAlias", name)?;
    // The alias's current key and the new one must both allow it. The
    // current key is the one the token names when the change commits: if
    // another gateway moved the alias meanwhile, the decision is made
    // again on the key it moved it to.
    let mut from = ctx.store.alias_target(name).await?;
    if let Some(old) = &from {
        authorize_on_target(ctx, "UpdateAlias", old).await?;
    }
    let key = target_key(ctx, req.target_key_id.as_deref().unwrap_or_default()).await?;
    let key = ctx.authorize("UpdateAlias", key, Use::default()).await?;
    for _ in 0..MOVES {
        let Some(old) = from else {
            return Err(alias_not_found(ctx, name));
        };
        match ctx.store.update_alias(name, &old, key.id()).await? {
            None => {
                ctx.audit(ctx.store.realm().key_arn(key.id()));
                return Ok(Empty {});
            }
            Some(now) => {
                authorize_on_target(ctx, "UpdateAlias", &now).await?;
                from = Some(now);
            }
        }
    }
    Err(kept_moving())
}
