//! ListKeyPolicies: a KMS key has one policy, `default`.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::key_arg::resolve_key_id_or_arn;
use super::key_policy::POLICY_NAME;
use super::shapes::{check_key_id, check_paging};
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyPoliciesRequest {
    pub key_id: Option<String>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyPoliciesResponse {
    pub policy_names: Vec<&'static str>,
    pub truncated: bool,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: ListKeyPoliciesRequest,
) -> Result<ListKeyPoliciesResponse, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    check_paging(&mut v, req.limit, &req.marker);
    v.finish()?;
    let key = resolve_key_id_or_arn(ctx, req.key_id.as_deref().unwrap_or_default()).await?;
    ctx.authorize("ListKeyPolicies", key, Use::default())
        .await?;
    Ok(ListKeyPoliciesResponse {
        policy_names: vec![POLICY_NAME],
        truncated: false,
    })
}
