//! CreateGrant: lets a principal do some operations with a key, stored in
//! the key's record on the token, so every gateway on the token honours it.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::grant_shapes::{
    GRANT_OPERATIONS, GrantConstraints, MAX_GRANTS_PER_KEY, check_grant_operations, grant_token,
};
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::{check_key_id, dry_run};
use super::validate::Violations;
use crate::error::KmsError;
use crate::keystore::GrantRecord;
use crate::policy::Facts;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateGrantRequest {
    pub key_id: Option<String>,
    pub grantee_principal: Option<String>,
    pub retiring_principal: Option<String>,
    pub operations: Option<Vec<String>>,
    pub constraints: Option<GrantConstraints>,
    pub grant_tokens: Option<Vec<String>>,
    pub name: Option<String>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateGrantResponse {
    pub grant_token: String,
    pub grant_id: String,
}

fn check_principal(v: &mut Violations, member: &str, p: &str) {
    v.str_len(member, p, 1, 256);
    v.pattern(
        member,
        p,
        p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@:/_-".contains(c)),
        "^[\\w+=,.@:/-]+$",
    );
}

/// The operations a grant allows, each once, in the order first named. A
/// grant allows a set of operations (AWS's reference says nothing of
/// repeats), so [Encrypt, Decrypt, Encrypt] is the grant of [Encrypt,
/// Decrypt]: ListGrants shows that, and a retry under the grant's name
/// that leaves the repeat out is the same grant.
fn distinct_operations(ops: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    ops.iter()
        .filter(|o| seen.insert(o.as_str()))
        .cloned()
        .collect()
}

fn validate(req: &CreateGrantRequest) -> Result<(), KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    if v.required("granteePrincipal", &req.grantee_principal)
        && let Some(p) = &req.grantee_principal
    {
        check_principal(&mut v, "granteePrincipal", p);
    }
    if let Some(p) = &req.retiring_principal {
        check_principal(&mut v, "retiringPrincipal", p);
    }
    if v.required("operations", &req.operations)
        && let Some(ops) = &req.operations
    {
        for (i, op) in ops.iter().enumerate() {
            v.enum_value(
                &format!("operations.{}.member", i + 1),
                op,
                GRANT_OPERATIONS,
            );
        }
    }
    if let Some(n) = &req.name {
        v.str_len("name", n, 1, 256);
        v.pattern(
            "name",
            n,
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || ":/_-".contains(c)),
            "^[a-zA-Z0-9:/_-]+$",
        );
    }
    v.grant_tokens(&req.grant_tokens);
    v.finish()?;
    let ops = req.operations.as_deref().unwrap_or_default();
    if ops.is_empty() {
        return Err(KmsError::Validation(
            "1 validation error detected: Value '[]' at 'operations' failed to satisfy constraint: Member must have length greater than or equal to 1".into(),
        ));
    }
    Ok(())
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: CreateGrantRequest,
) -> Result<CreateGrantResponse, KmsError> {
    validate(&req)?;
    let key = resolve_key_id_or_arn(ctx, req.key_id.as_deref().unwrap_or_default()).await?;
    let grantee = req.grantee_principal.clone().unwrap_or_default();
    let operations = distinct_operations(req.operations.as_deref().unwrap_or_default());
    let mut facts = Facts::new();
    facts.set("kms:GrantOperations", operations.clone());
    facts.set_one("kms:GranteePrincipal", grantee.clone());
    if let Some(r) = &req.retiring_principal {
        facts.set_one("kms:RetiringPrincipal", r.clone());
    }
    let constraints = req.constraints.unwrap_or_default();
    let new = GrantRecord {
        grant_id: hex::encode(rand::random::<[u8; 32]>()),
        name: req.name,
        grantee,
        retiring: req.retiring_principal,
        operations,
        context_equals: constraints.encryption_context_equals,
        context_subset: constraints.encryption_context_subset,
        issuer: ctx.caller.arn.clone(),
        created: ctx.store.now().round(),
    };
    let use_ = Use {
        key_id: req.key_id.as_deref(),
        grant_tokens: req.grant_tokens.as_deref(),
        extra: Some(&facts),
        ..Use::default()
    };
    let key = ctx.authorize_grant(key, use_, &new).await?;
    // Which operations a grant may allow depends on the key.
    check_grant_operations(key.record.key_spec, key.record.key_usage, &new.operations)?;
    if key.record.state == crate::keystore::KeyState::PendingDeletion {
        return Err(super::shapes::pending_deletion(ctx.store.realm(), &key));
    }
    dry_run(req.dry_run)?;
    let mut grant_id = new.grant_id.clone();
    ctx.store
        .update_key(key.id(), |r| {
            // The same grant asked for again under its name is the grant
            // already made (AWS's idempotent retry).
            let same = |g: &GrantRecord| {
                new.name.is_some()
                    && g.name == new.name
                    && g.grantee == new.grantee
                    && g.retiring == new.retiring
                    && g.operations == new.operations
                    && g.context_equals == new.context_equals
                    && g.context_subset == new.context_subset
            };
            if let Some(existing) = r.grants.iter().find(|g| same(g)) {
                grant_id = existing.grant_id.clone();
                return Ok(());
            }
            if r.grants.len() >= MAX_GRANTS_PER_KEY {
                return Err(KmsError::LimitExceeded(format!(
                    "The key {} has reached its limit of {MAX_GRANTS_PER_KEY} grants.",
                    r.key_id
                )));
            }
            grant_id = new.grant_id.clone();
            r.grants.push(new.clone());
            Ok(())
        })
        .await?;
    Ok(CreateGrantResponse {
        grant_token: grant_token(key.id(), &grant_id),
        grant_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn an_operation_named_twice_is_allowed_once_in_the_order_first_named() {
        assert_eq!(
            distinct_operations(&ops(&["Encrypt", "Decrypt", "Encrypt"])),
            ops(&["Encrypt", "Decrypt"])
        );
        assert_eq!(
            distinct_operations(&ops(&["Decrypt", "Decrypt", "Sign", "Decrypt"])),
            ops(&["Decrypt", "Sign"])
        );
        assert_eq!(
            distinct_operations(&ops(&["Verify", "Sign"])),
            ops(&["Verify", "Sign"])
        );
    }
}
