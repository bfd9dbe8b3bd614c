//! Authorization of an operation on a key: principal × action × key
//! (DESIGN.md decision 14), shared by every operation that names a key.
//!
//! The key is resolved first (a key that does not exist is
//! NotFoundException, as in AWS within one account), then authorized, then
//! its state is checked: a caller who may not use a key learns nothing of
//! its state. The decision itself is [`policy::decide`]; this module
//! gathers what it needs: the key policy, the caller's identity policies,
//! the request's condition keys and whether a grant allows.

use std::sync::Arc;

use super::Ctx;
use super::shapes::{SYMMETRIC_DEFAULT, check_key_id};
use super::validate::Violations;
use crate::blob::EncryptionContext;
use crate::error::{KmsError, access_denied};
use crate::keystore::{GrantRecord, Key};
use crate::policy::{self, Facts, Policy, Refusal};

/// Who is calling, as authorization sees it.
pub struct Caller {
    /// `arn:{partition}:iam::{account}:user/{name}`.
    pub arn: String,
    pub account: String,
    pub identity: Arc<[Policy]>,
    /// The condition keys of every request of this caller.
    pub facts: Facts,
}

/// What a request does with a key, beyond the operation: the condition
/// keys it sets and the grant tokens it brings.
#[derive(Default, Clone, Copy)]
pub struct Use<'r> {
    pub context: Option<&'r EncryptionContext>,
    /// The KeyId as the request gave it (an alias sets kms:RequestAlias).
    pub key_id: Option<&'r str>,
    pub algorithm: Option<&'r str>,
    pub grant_tokens: Option<&'r [String]>,
    /// Condition keys particular to the operation (CreateGrant's).
    pub extra: Option<&'r Facts>,
}

/// The condition key naming a key's aliases, lowercase.
const RESOURCE_ALIASES: &str = "kms:resourcealiases";

/// Operations whose grants apply their encryption-context constraints
/// (AWS applies constraints only where a request carries a context).
const TAKES_CONTEXT: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
];

/// Operations whose request sets kms:MacAlgorithm.
const MAC_OPERATIONS: &[&str] = &["GenerateMac", "VerifyMac"];

/// Operations whose request sets kms:SigningAlgorithm (and, through
/// [`Use::extra`], kms:MessageType).
const SIGNING_OPERATIONS: &[&str] = &["Sign", "Verify"];

/// Whether a grant's constraints admit `context`. Keys are compared
/// without regard to case, values exactly, as AWS documents. AWS leaves
/// open which pair it reads when a context has keys that differ only by
/// case, so every such pair must satisfy the constraint: a context that
/// AWS might read either way is admitted only if both ways admit it.
pub fn constraints_admit(grant: &GrantRecord, context: &EncryptionContext) -> bool {
    // Every value of `context` under a key equal to `k` but for case, and
    // at least one.
    let all_are = |k: &str, v: &String| {
        let mut variants = context.iter().filter(|(ck, _)| ck.eq_ignore_ascii_case(k));
        variants.next().is_some_and(|(_, cv)| cv == v) && variants.all(|(_, cv)| cv == v)
    };
    if let Some(eq) = &grant.context_equals
        && (eq.len() != context.len()
            || eq.iter().any(|(k, v)| !all_are(k, v))
            || !context
                .keys()
                .all(|ck| eq.keys().any(|k| k.eq_ignore_ascii_case(ck))))
    {
        return false;
    }
    if let Some(sub) = &grant.context_subset
        && sub.iter().any(|(k, v)| !all_are(k, v))
    {
        return false;
    }
    true
}

/// Whether `pairs` holds every pair of `within` (keys compared without
/// regard to case, values exactly, as [`constraints_admit`] does).
fn holds_pairs(pairs: &EncryptionContext, within: &EncryptionContext) -> bool {
    within.iter().all(|(k, v)| {
        pairs
            .iter()
            .any(|(pk, pv)| pk.eq_ignore_ascii_case(k) && pv == v)
    })
}

/// Whether every encryption context `child`'s constraints admit, the
/// constraints of `parent` admit too: the child is as strict or stricter.
fn constraints_within(child: &GrantRecord, parent: &GrantRecord) -> bool {
    if let Some(eq) = &child.context_equals {
        // The child admits this one context at most.
        return constraints_admit(parent, eq);
    }
    // The child admits every context holding its subset (or any context):
    // contexts with more pairs too, which an equals constraint refuses.
    if parent.context_equals.is_some() {
        return false;
    }
    match (&parent.context_subset, &child.context_subset) {
        (None, _) => true,
        (Some(p), None) => p.is_empty(),
        (Some(p), Some(c)) => holds_pairs(c, p),
    }
}

/// Whether `parent`, a grant that allows CreateGrant, allows making
/// `child`: AWS lets a grantee create grants only for the parent's
/// operations (or some of them) and with an encryption-context constraint
/// equally strict or stricter.
pub fn grant_covers(parent: &GrantRecord, child: &GrantRecord) -> bool {
    child
        .operations
        .iter()
        .all(|o| parent.operations.contains(o))
        && constraints_within(child, parent)
}

/// Whether one of the key's grants allows `operation`; for CreateGrant,
/// only a grant within which the new grant `new_grant` lies.
fn grant_allows(
    key: &Key,
    caller: &str,
    operation: &str,
    u: &Use,
    new_grant: Option<&GrantRecord>,
) -> bool {
    let empty = EncryptionContext::new();
    key.record.grants.iter().any(|g| {
        g.grantee == caller
            && g.operations.iter().any(|o| o == operation)
            && (!TAKES_CONTEXT.contains(&operation)
                || constraints_admit(g, u.context.unwrap_or(&empty)))
            && new_grant.is_none_or(|child| grant_covers(g, child))
    })
}

impl Ctx<'_> {
    /// The key of a request that names it by `KeyId` (a key id, key ARN,
    /// alias name or alias ARN) and may bring `GrantTokens`: both members
    /// checked as AWS checks them, the key resolved and authorized for
    /// `operation`. DescribeKey and GetPublicKey.
    pub async fn named_key(
        &mut self,
        operation: &str,
        key_id: &Option<String>,
        grant_tokens: &Option<Vec<String>>,
    ) -> Result<Arc<Key>, KmsError> {
        let mut v = Violations::new();
        check_key_id(&mut v, "keyId", key_id);
        v.grant_tokens(grant_tokens);
        v.finish()?;
        let key = self
            .store
            .resolve(key_id.as_deref().unwrap_or_default())
            .await?;
        let use_ = Use {
            key_id: key_id.as_deref(),
            grant_tokens: grant_tokens.as_deref(),
            ..Use::default()
        };
        self.authorize(operation, key, use_).await
    }

    /// Authorizes `operation` (a grant operation name: `Decrypt`,
    /// `ReEncryptFrom`, `DescribeKey`...) on `key`, and records the key for
    /// the audit. Returns the key, read afresh from the token when the
    /// request's grant tokens name a grant the cached copy lacks.
    pub async fn authorize(
        &mut self,
        operation: &str,
        key: Arc<Key>,
        u: Use<'_>,
    ) -> Result<Arc<Key>, KmsError> {
        self.authorize_with(operation, key, u, None).await
    }

    /// Authorizes CreateGrant of `new_grant` on `key`. Permission from a
    /// policy is not limited; a grant that includes CreateGrant allows
    /// only grants that lie within it ([`grant_covers`]).
    pub async fn authorize_grant(
        &mut self,
        key: Arc<Key>,
        u: Use<'_>,
        new_grant: &GrantRecord,
    ) -> Result<Arc<Key>, KmsError> {
        self.authorize_with("CreateGrant", key, u, Some(new_grant))
            .await
    }

    async fn authorize_with(
        &mut self,
        operation: &str,
        key: Arc<Key>,
        u: Use<'_>,
        new_grant: Option<&GrantRecord>,
    ) -> Result<Arc<Key>, KmsError> {
        let realm = self.store.realm();
        let arn = realm.key_arn(key.id());
        self.audit(arn.clone());
        let action = format!("kms:{operation}");
        let mut facts = self.caller.facts.clone();
        let key_policy = key.key_policy(realm).map_err(|e| {
            tracing::error!(key = %arn, error = %e, "the stored key policy does not parse: refusing");
            access_denied(&self.caller.arn, &action, Some(&arn), Refusal::NoKeyPolicyAllow)
        })?;
        // Listing the key's aliases costs a pass over all aliases: only
        // when a policy asks.
        let wants_aliases = key_policy.tests(RESOURCE_ALIASES)
            || self
                .caller
                .identity
                .iter()
                .any(|p| p.tests(RESOURCE_ALIASES));
        if wants_aliases {
            // Not decidable while an alias record is of a newer kmsgate
            // (its target unknown): a retryable error, never a verdict
            // on a partial list.
            self.store.all_aliases()?;
        }
        self.request_facts(&key, &u, operation, wants_aliases, &mut facts);
        let request = policy::Request {
            principal_arn: &self.caller.arn,
            account: &self.caller.account,
            action: &action,
            resource: &arn,
            facts: &facts,
        };
        let by_grant = grant_allows(&key, &self.caller.arn, operation, &u, new_grant);
        let verdict = policy::decide(&request, &key_policy, &self.caller.identity, by_grant);
        let refusal = match verdict {
            Ok(()) => return Ok(key),
            Err(r) => r,
        };
        // A grant token vouches for a grant that this gateway may not have
        // seen yet (another gateway made it): read the key afresh once.
        if !by_grant
            && u.grant_tokens.is_some_and(|t| !t.is_empty())
            && !matches!(
                refusal,
                Refusal::DenyInKeyPolicy | Refusal::DenyInIdentityPolicy
            )
            && let Some(fresh) = self.store.fresh_key(key.id()).await?
            && grant_allows(&fresh, &self.caller.arn, operation, &u, new_grant)
        {
            // The fresh record's policy may have changed too: an explicit
            // Deny in it still wins over the grant.
            let fresh_policy = fresh.key_policy(realm).map_err(|_| {
                access_denied(
                    &self.caller.arn,
                    &action,
                    Some(&arn),
                    Refusal::NoKeyPolicyAllow,
                )
            })?;
            policy::decide(&request, &fresh_policy, &self.caller.identity, true)
                .map_err(|r| access_denied(&self.caller.arn, &action, Some(&arn), r))?;
            return Ok(fresh);
        }
        Err(access_denied(
            &self.caller.arn,
            &action,
            Some(&arn),
            refusal,
        ))
    }

    /// Authorizes `operation` on `resource` (an alias ARN) by the caller's
    /// identity policies alone, as AWS authorizes an alias, which has no
    /// resource policy. A principal the identity policies do not allow is
    /// refused; nothing is skipped.
    pub fn authorize_by_identity(&self, operation: &str, resource: &str) -> Result<(), KmsError> {
        let action = format!("kms:{operation}");
        let request = policy::Request {
            principal_arn: &self.caller.arn,
            account: &self.caller.account,
            action: &action,
            resource,
            facts: &self.caller.facts,
        };
        policy::decide_identity(&request, &self.caller.identity)
            .map_err(|r| access_denied(&self.caller.arn, &action, Some(resource), r))
    }

    /// Authorizes `operation` on a key not made yet (CreateKey's tags) by
    /// the caller's identity policies alone, as AWS does: the permission
    /// must cover every key of the account and region, so the request's
    /// resource is `arn:...:key/*` and an Allow scoped to some keys does
    /// not match it.
    pub fn authorize_on_any_key(&self, operation: &str) -> Result<(), KmsError> {
        let realm = self.store.realm();
        let any_key = format!(
            "arn:{}:kms:{}:{}:key/*",
            realm.partition, realm.region, realm.account_id
        );
        let action = format!("kms:{operation}");
        let request = policy::Request {
            principal_arn: &self.caller.arn,
            account: &self.caller.account,
            action: &action,
            resource: &any_key,
            facts: &self.caller.facts,
        };
        policy::decide_identity(&request, &self.caller.identity)
            .map_err(|r| access_denied(&self.caller.arn, &action, None, r))
    }

    /// The condition keys a request on `key` sets.
    fn request_facts(
        &self,
        key: &Key,
        u: &Use,
        operation: &str,
        with_aliases: bool,
        facts: &mut Facts,
    ) {
        facts.set_one("kms:KeySpec", key.record.key_spec.as_str());
        facts.set_one("kms:KeyUsage", key.record.key_usage.as_str());
        if let Some(c) = u.context {
            facts.set_encryption_context(c.iter());
        }
        if let Some(extra) = u.extra {
            facts.extend(extra);
        }
        if TAKES_CONTEXT.contains(&operation) {
            facts.set_one(
                "kms:EncryptionAlgorithm",
                u.algorithm.unwrap_or(SYMMETRIC_DEFAULT),
            );
        }
        if MAC_OPERATIONS.contains(&operation)
            && let Some(a) = u.algorithm
        {
            facts.set_one("kms:MacAlgorithm", a);
        }
        if SIGNING_OPERATIONS.contains(&operation)
            && let Some(a) = u.algorithm
        {
            facts.set_one("kms:SigningAlgorithm", a);
        }
        if operation == "DeriveSharedSecret"
            && let Some(a) = u.algorithm
        {
            facts.set_one("kms:KeyAgreementAlgorithm", a);
        }
        if let Some(alias) = u.key_id.and_then(request_alias) {
            facts.set_one("kms:RequestAlias", alias);
        }
        if with_aliases && let Ok(aliases) = self.store.all_aliases() {
            let names: Vec<String> = aliases
                .into_iter()
                .filter(|a| &a.target == key.id())
                .map(|a| a.name)
                .collect();
            if !names.is_empty() {
                facts.set("kms:ResourceAliases", names);
            }
        }
    }
}

/// `alias/app` from `alias/app` or `arn:...:alias/app`.
fn request_alias(key_id: &str) -> Option<String> {
    if key_id.starts_with("alias/") {
        return Some(key_id.to_owned());
    }
    key_id
        .split_once(":alias/")
        .filter(|_| key_id.starts_with("arn:"))
        .map(|(_, name)| format!("alias/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(equals: Option<&[(&str, &str)]>, subset: Option<&[(&str, &str)]>) -> GrantRecord {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        GrantRecord {
            grant_id: "0".repeat(64),
            name: None,
            grantee: "arn:aws:iam::111122223333:user/app".into(),
            retiring: None,
            operations: vec!["Decrypt".into()],
            context_equals: equals.map(map),
            context_subset: subset.map(map),
            issuer: "arn:aws:iam::111122223333:user/admin".into(),
            created: 0.0,
        }
    }

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn grant_constraints() {
        let eq = grant(Some(&[("app", "billing")]), None);
        assert!(constraints_admit(&eq, &ctx(&[("app", "billing")])));
        assert!(constraints_admit(&eq, &ctx(&[("APP", "billing")])));
        assert!(!constraints_admit(&eq, &ctx(&[("app", "Billing")])));
        assert!(!constraints_admit(
            &eq,
            &ctx(&[("app", "billing"), ("x", "y")])
        ));
        assert!(!constraints_admit(&eq, &ctx(&[])));
        let sub = grant(None, Some(&[("app", "billing")]));
        assert!(constraints_admit(
            &sub,
            &ctx(&[("app", "billing"), ("x", "y")])
        ));
        assert!(!constraints_admit(&sub, &ctx(&[("x", "y")])));
        assert!(constraints_admit(
            &sub,
            &ctx(&[("APP", "billing"), ("app", "billing")])
        ));
        assert!(!constraints_admit(
            &sub,
            &ctx(&[("APP", "billing"), ("app", "payroll")])
        ));
        assert!(!constraints_admit(
            &sub,
            &ctx(&[("APP", "payroll"), ("app", "billing")])
        ));
        assert!(!constraints_admit(
            &eq,
            &ctx(&[("APP", "billing"), ("app", "payroll")])
        ));
        // An equals constraint with case-duplicate keys admits no context
        // with a key it lacks.
        let dup = grant(Some(&[("app", "billing"), ("APP", "billing")]), None);
        assert!(!constraints_admit(
            &dup,
            &ctx(&[("app", "billing"), ("x", "y")])
        ));
        assert!(constraints_admit(
            &dup,
            &ctx(&[("app", "billing"), ("App", "billing")])
        ));
        assert!(constraints_admit(&grant(None, None), &ctx(&[])));
    }

    #[test]
    fn a_grant_covers_only_grants_within_it() {
        let with_ops = |mut g: GrantRecord, ops: &[&str]| {
            g.operations = ops.iter().map(|o| o.to_string()).collect();
            g
        };
        let pairs = |p: &[(&str, &str)]| Some(ctx(p));
        let parent = with_ops(
            grant(None, Some(&[("app", "billing")])),
            &["Encrypt", "CreateGrant"],
        );
        let child = |ops: &[&str], eq: Option<&[(&str, &str)]>, sub: Option<&[(&str, &str)]>| {
            with_ops(grant(eq, sub), ops)
        };
        let billing: &[(&str, &str)] = &[("app", "billing")];
        assert!(grant_covers(
            &parent,
            &child(&["Encrypt"], None, Some(billing))
        ));
        assert!(grant_covers(
            &parent,
            &child(
                &["Encrypt", "CreateGrant"],
                None,
                Some(&[("APP", "billing"), ("x", "y")])
            )
        ));
        assert!(grant_covers(
            &parent,
            &child(&["Encrypt"], Some(&[("app", "billing"), ("x", "y")]), None)
        ));
        assert!(!grant_covers(
            &parent,
            &child(&["Decrypt"], None, Some(billing))
        ));
        assert!(!grant_covers(&parent, &child(&["Encrypt"], None, None)));
        assert!(!grant_covers(
            &parent,
            &child(&["Encrypt"], None, Some(&[("x", "y")]))
        ));
        assert!(!grant_covers(
            &parent,
            &child(&["Encrypt"], Some(&[("app", "Billing")]), None)
        ));

        let mut equals = parent.clone();
        (equals.context_equals, equals.context_subset) = (pairs(billing), None);
        assert!(grant_covers(
            &equals,
            &child(&["Encrypt"], Some(billing), None)
        ));
        assert!(!grant_covers(
            &equals,
            &child(&["Encrypt"], None, Some(billing))
        ));
        assert!(!grant_covers(
            &equals,
            &child(&["Encrypt"], Some(&[("app", "billing"), ("x", "y")]), None)
        ));

        let open = with_ops(grant(None, None), &["Encrypt", "CreateGrant"]);
        assert!(grant_covers(&open, &child(&["Encrypt"], None, None)));
        assert!(!grant_covers(&open, &child(&["Decrypt"], None, None)));
    }

    #[test]
    fn every_operation_is_an_action_policies_may_name() {
        use crate::ops::operation::Operation;
        use crate::policy::Kind;
        let names = Operation::ALL
            .iter()
            .map(|o| o.name())
            .filter(|n| *n != "ReEncrypt")
            .chain(["ReEncryptFrom", "ReEncryptTo"]);
        for name in names {
            let doc = format!(
                r#"{{"Statement":{{"Effect":"Deny","Action":"kms:{name}","Resource":"*"}}}}"#
            );
            assert!(Policy::parse(&doc, Kind::Identity, "aws").is_ok(), "{name}");
        }
    }

    #[test]
    fn request_aliases() {
        assert_eq!(request_alias("alias/app").as_deref(), Some("alias/app"));
        assert_eq!(
            request_alias("arn:aws:kms:us-east-1:111122223333:alias/app").as_deref(),
            Some("alias/app")
        );
        assert_eq!(request_alias("1234abcd-12ab-34cd-56ef-1234567890ab"), None);
    }
}
