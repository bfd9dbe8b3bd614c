//! PutKeyPolicy: replaces the key policy, written with the key's record.

use serde::Deserialize;

use super::Ctx;
use super::authorize::Use;
use super::key_arg::resolve_key_id_or_arn;
use super::key_policy::{check_new_policy, check_policy_name, require_default};
use super::shapes::{Empty, check_key_id};
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutKeyPolicyRequest {
    pub key_id: Option<String>,
    pub policy_name: Option<String>,
    pub policy: Option<String>,
    pub bypass_policy_lockout_safety_check: Option<bool>,
}

pub async fn handle(ctx: &mut Ctx<'_>, req: PutKeyPolicyRequest) -> Result<Empty, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    check_policy_name(&mut v, &req.policy_name);
    if v.required("policy", &req.policy)
        && let Some(p) = &req.policy
    {
        v.str_len("policy", p, 1, 131072);
    }
    v.finish()?;
    let key = resolve_key_id_or_arn(ctx, req.key_id.as_deref().unwrap_or_default()).await?;
    let key = ctx.authorize("PutKeyPolicy", key, Use::default()).await?;
    require_default(&req.policy_name)?;
    let text = req.policy.unwrap_or_default();
    let arn = ctx.store.realm().key_arn(key.id());
    check_new_policy(
        ctx,
        &text,
        &arn,
        req.bypass_policy_lockout_safety_check == Some(true),
    )?;
    ctx.store
        .update_key(key.id(), |r| {
            r.policy = Some(text.clone());
            Ok::<(), KmsError>(())
        })
        .await?;
    Ok(Empty {})
}
