//! DeleteAlias: removes the alias; the key is untouched.

use serde::Deserialize;

use super::Ctx;
use super::alias_name::{check_alias_characters, check_alias_name, check_alias_prefix};
use super::authorize::Use;
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
    if let Some(target) = ctx.store.alias_target(name).await?
        && let Some(key) = ctx.store.key_by_id(&target).await?
    {
        ctx.authorize("DeleteAlias", key, Use::default()).await?;
    }
    ctx.store.delete_alias(name).await?;
    Ok(Empty {})
}
