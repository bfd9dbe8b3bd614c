//! RevokeGrant: deletes a grant, by whoever the key policy lets revoke.

use serde::Deserialize;

use super::Ctx;
use super::authorize::Use;
use super::grant_shapes::{check_grant_id, remove_grant};
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::{Empty, check_key_id, dry_run};
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RevokeGrantRequest {
    pub key_id: Option<String>,
    pub grant_id: Option<String>,
    pub dry_run: Option<bool>,
}

pub async fn handle(ctx: &mut Ctx<'_>, req: RevokeGrantRequest) -> Result<Empty, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    if v.required("grantId", &req.grant_id)
        && let Some(g) = &req.grant_id
    {
        v.str_len("grantId", g, 1, 128);
    }
    v.finish()?;
    let grant_id = req.grant_id.unwrap_or_default();
    check_grant_id(&grant_id)?;
    let key = resolve_key_id_or_arn(ctx, req.key_id.as_deref().unwrap_or_default()).await?;
    let key = ctx.authorize("RevokeGrant", key, Use::default()).await?;
    dry_run(req.dry_run)?;
    remove_grant(ctx, key.id(), &grant_id).await
}
