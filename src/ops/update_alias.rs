//! UpdateAlias: point an existing alias at another key.

use serde::Deserialize;

use super::Ctx;
use super::create_alias::{check_alias_name, check_alias_prefix, target_key};
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
    let key = target_key(ctx, req.target_key_id.as_deref().unwrap_or_default()).await?;
    ctx.audit(ctx.store.realm().key_arn(key.id()));
    ctx.store.update_alias(name, key.id()).await?;
    Ok(Empty {})
}
