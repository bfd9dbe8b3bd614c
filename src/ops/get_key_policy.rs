//! GetKeyPolicy: the key policy exactly as it was put, or AWS's default.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::key_arg::resolve_key_id_or_arn;
use super::key_policy::{POLICY_NAME, check_policy_name, require_default};
use super::shapes::check_key_id;
use super::validate::Violations;
use crate::error::KmsError;
use crate::policy;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyPolicyRequest {
    pub key_id: Option<String>,
    pub policy_name: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyPolicyResponse {
    pub policy: String,
    pub policy_name: &'static str,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: GetKeyPolicyRequest,
) -> Result<GetKeyPolicyResponse, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    check_policy_name(&mut v, &req.policy_name);
    v.finish()?;
    let key = resolve_key_id_or_arn(ctx, req.key_id.as_deref().unwrap_or_default()).await?;
    let key = ctx.authorize("GetKeyPolicy", key, Use::default()).await?;
    require_default(&req.policy_name)?;
    let realm = ctx.store.realm();
    let policy = match &key.record.policy {
        Some(p) => p.clone(),
        None => policy::default_key_policy(&realm.partition, &realm.account_id),
    };
    Ok(GetKeyPolicyResponse {
        policy,
        policy_name: POLICY_NAME,
    })
}
