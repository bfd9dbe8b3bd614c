//! DeleteAlias: removes the alias; the key is untouched.

use serde::Deserialize;

use super::Ctx;
use super::alias_name::{
    MOVES, alias_not_found, authorize_alias, authorize_on_target, check_alias_characters,
    check_alias_name, check_alias_prefix, kept_moving,
};
use super::shapes::Empty;
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteAliasRequest {
    pub alias_name: Option<String>,
}

pub async fn handle(ctx: &mut Ctx<'_>, req: DeleteAliasRequest) -> Result<Empty, KmsError> {
    let mut v = Violations::new();
    check_alias_name(&mut v, &req.alias_name);
    v.finish()?;
    let name = req.alias_name.as_deref().unwrap_or_default();
    check_alias_prefix(name)?;
    check_alias_characters(name)?;
    // Authorized on the alias itself (identity policies), and on the key
    // the alias names; removed only while the token still names that key,
    // else decided again on the one it names.
    authorize_alias(ctx, "DeleteAlias", name)?;
    let Some(mut target) = ctx.store.alias_target(name).await? else {
        return Err(alias_not_found(ctx, name));
    };
    for _ in 0..MOVES {
        authorize_on_target(ctx, "DeleteAlias", &target).await?;
        match ctx.store.delete_alias(name, &target).await? {
            None => return Ok(Empty {}),
            Some(now) => target = now,
        }
    }
    Err(kept_moving())
}
