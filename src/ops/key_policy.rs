//! What the key policy operations share: the policy name, and the check of
//! a new key policy (CreateKey, PutKeyPolicy): it must parse, fit AWS's
//! size quota and, unless the caller bypasses the lockout safety check,
//! still let the caller change it later.

use super::Ctx;
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

pub fn check_policy_name(v: &mut Violations, name: &Option<String>) {
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

pub fn require_default(name: &Option<String>) -> Result<(), KmsError> {
    match name.as_deref() {
        None | Some(POLICY_NAME) => Ok(()),
        Some(_) => Err(KmsError::NotFound("No such policy exists".into())),
    }
}
