//! GetKeyPolicy, PutKeyPolicy and ListKeyPolicies, and the check of a new
//! key policy that CreateKey shares: it must parse, fit AWS's size quota
//! and, unless the caller bypasses the lockout safety check, still let the
//! caller change it later.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::{Empty, check_key_id, check_paging};
use super::validate::Violations;
use crate::error::{KmsError, POLICY_LOCKOUT};
use crate::policy::{self, Kind, Policy};

/// The only policy name a KMS key has.
pub const POLICY_NAME: &str = "default";
/// AWS's quota on a key policy document.
pub const MAX_POLICY_BYTES: usize = 32 * 1024;

/// Checks a key policy about to be put on the key `key_arn` (for CreateKey,
/// a pattern of the key to be made).
pub fn check_new_policy(
    ctx: &Ctx<'_>,
    text: &str,
    key_arn: &str,
    bypass_lockout_check: bool,
) -> Result<(), KmsError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(KmsError::LimitExceeded(format!(
            "The key policy is larger than the {MAX_POLICY_BYTES}-byte quota."
        )));
    }
    let partition = &ctx.store.realm().partition;
    let parsed = Policy::parse(text, Kind::Key, partition)?;
    if bypass_lockout_check {
        return Ok(());
    }
    let request = policy::Request {
        principal_arn: &ctx.caller.arn,
        account: &ctx.caller.account,
        action: "kms:PutKeyPolicy",
        resource: key_arn,
        facts: &ctx.caller.facts,
    };
    policy::decide(&request, &parsed, &ctx.caller.identity, false)
        .map_err(|_| KmsError::MalformedPolicyDocument(POLICY_LOCKOUT.into()))
}

fn check_policy_name(v: &mut Violations, name: &Option<String>) {
    if let Some(n) = name {
        v.str_len("policyName", n, 1, 128);
        v.pattern(
            "policyName",
            n,
            n.chars().all(|c| c.is_alphanumeric() || c == '_'),
            "[\\w]+",
        );
    }
}

fn require_default(name: &Option<String>) -> Result<(), KmsError> {
    match name.as_deref() {
        None | Some(POLICY_NAME) => Ok(()),
        Some(_) => Err(KmsError::NotFound("No such policy exists".into())),
    }
}

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

pub async fn get(
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutKeyPolicyRequest {
    pub key_id: Option<String>,
    pub policy_name: Option<String>,
    pub policy: Option<String>,
    pub bypass_policy_lockout_safety_check: Option<bool>,
}

pub async fn put(ctx: &mut Ctx<'_>, req: PutKeyPolicyRequest) -> Result<Empty, KmsError> {
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

pub async fn list(
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
