//! CreateAlias: a friendly name for a key, stored on the token.

use serde::Deserialize;

use super::Ctx;
use super::alias_name::{
    authorize_alias, check_alias_characters, check_alias_name, check_alias_prefix, target_key,
};
use super::authorize::Use;
use super::shapes::{Empty, check_key_id};
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateAliasRequest {
    pub alias_name: Option<String>,
    pub target_key_id: Option<String>,
}

pub async fn handle(ctx: &mut Ctx<'_>, req: CreateAliasRequest) -> Result<Empty, KmsError> {
    let mut v = Violations::new();
    check_alias_name(&mut v, &req.alias_name);
    check_key_id(&mut v, "targetKeyId", &req.target_key_id);
    v.finish()?;
    let name = req.alias_name.as_deref().unwrap_or_default();
    check_alias_prefix(name)?;
    if name.starts_with("alias/aws/") {
        return Err(KmsError::InvalidAliasName(
            "The alias name cannot begin with alias/aws/. That prefix is reserved for AWS managed keys.".into(),
        ));
    }
    check_alias_characters(name)?;
    // On the alias (identity policies) and on the key it will name.
    authorize_alias(ctx, "CreateAlias", name)?;
    let key = target_key(ctx, req.target_key_id.as_deref().unwrap_or_default()).await?;
    let key = ctx.authorize("CreateAlias", key, Use::default()).await?;
    ctx.store.create_alias(name, key.id()).await?;
    Ok(Empty {})
}
