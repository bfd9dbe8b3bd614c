//! Who may do what to which key: IAM's policy grammar and AWS KMS's
//! evaluation of key policies, identity policies and grants.
//!
//! A leaf module like [`crate::blob`]: it knows JSON and strings, not the
//! token, HTTP or the client's error texts. `ops` gathers what a request
//! needs (the key policy, the principal's identity policies, the grants)
//! and asks [`decide`]; `error` turns a refusal into AWS's words.
//!
//! Evaluation, as AWS KMS does it (DESIGN.md decision 14):
//! 1. an explicit Deny in the key policy or an identity policy refuses;
//! 2. the key policy allows the principal directly (its user ARN, or `*`);
//! 3. or the key policy allows the principal's account (root ARN or
//!    account id), which delegates to identity policies, and one of them
//!    allows;
//! 4. or a grant allows;
//! 5. else refused, saying which kind of policy lacked an allow.

pub mod condition;
pub mod document;
pub mod variable;
pub mod wildcard;

pub use condition::Facts;
pub use document::{Effect, Kind, Policy, PolicyError, PrincipalRef};
pub use variable::Who;

/// AWS's default key policy, as GetKeyPolicy returns it for a key created
/// without one: the account may do everything, through identity policies.
pub fn default_key_policy(partition: &str, account: &str) -> String {
    format!(
        "{{\n  \"Version\" : \"2012-10-17\",\n  \"Id\" : \"key-default-1\",\n  \"Statement\" : [ {{\n    \"Sid\" : \"Enable IAM User Permissions\",\n    \"Effect\" : \"Allow\",\n    \"Principal\" : {{\n      \"AWS\" : \"arn:{partition}:iam::{account}:root\"\n    }},\n    \"Action\" : \"kms:*\",\n    \"Resource\" : \"*\"\n  }} ]\n}}"
    )
}

/// Who is asking, for what, on which resource.
pub struct Request<'a> {
    /// `arn:{partition}:iam::{account}:user/{name}`.
    pub principal_arn: &'a str,
    pub account: &'a str,
    /// `kms:Decrypt`.
    pub action: &'a str,
    /// A key ARN, an alias ARN (CreateAlias, UpdateAlias and DeleteAlias
    /// are authorized on the alias too), or `*` for operations on no key
    /// (CreateKey, ListKeys).
    pub resource: &'a str,
    pub facts: &'a Facts,
}

impl Request<'_> {
    /// What the policy variables stand for.
    fn who(&self) -> Who<'_> {
        Who {
            arn: self.principal_arn,
            account: self.account,
        }
    }
}

/// What one policy says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Said {
    deny: bool,
    /// An Allow naming the principal itself (or `*`); for identity
    /// policies, any Allow.
    allow_direct: bool,
    /// An Allow naming the principal's account.
    allow_account: bool,
}

impl Policy {
    fn say(&self, req: &Request) -> Said {
        let mut said = Said::default();
        let who = req.who();
        for s in &self.statements {
            if !s.actions.matches(req.action, &who)
                || !s.resources.matches(req.resource, &who)
                || !s.conditions.iter().all(|c| c.holds(req.facts, &who))
            {
                continue;
            }
            let (direct, account) = if s.principals.is_empty() {
                (true, false)
            } else {
                let direct = s.principals.iter().any(|p| match p {
                    PrincipalRef::Anyone => true,
                    PrincipalRef::User(arn) => arn == req.principal_arn,
                    PrincipalRef::Account(_) => false,
                });
                let account = s
                    .principals
                    .iter()
                    .any(|p| matches!(p, PrincipalRef::Account(a) if a == req.account));
                (direct, account)
            };
            match s.effect {
                Effect::Deny if direct || account => said.deny = true,
                Effect::Allow => {
                    said.allow_direct |= direct;
                    said.allow_account |= account;
                }
                Effect::Deny => {}
            }
        }
        said
    }
}

/// Why a request was refused; `error` words it as AWS does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    DenyInKeyPolicy,
    DenyInIdentityPolicy,
    /// The key policy delegates to identity policies, and none allows.
    NoIdentityAllow,
    /// The key policy allows neither the principal nor its account.
    NoKeyPolicyAllow,
}

/// Decides a request on a key. `grant_allows` is whether one of the key's
/// grants allows it (grants never override a Deny).
pub fn decide(
    req: &Request,
    key_policy: &Policy,
    identity: &[Policy],
    grant_allows: bool,
) -> Result<(), Refusal> {
    let key = key_policy.say(req);
    if key.deny {
        return Err(Refusal::DenyInKeyPolicy);
    }
    let ids: Vec<Said> = identity.iter().map(|p| p.say(req)).collect();
    if ids.iter().any(|s| s.deny) {
        return Err(Refusal::DenyInIdentityPolicy);
    }
    let identity_allows = ids.iter().any(|s| s.allow_direct);
    if key.allow_direct || (key.allow_account && identity_allows) || grant_allows {
        return Ok(());
    }
    if key.allow_account {
        Err(Refusal::NoIdentityAllow)
    } else {
        Err(Refusal::NoKeyPolicyAllow)
    }
}

/// Decides a request on no key (CreateKey, ListKeys, ...): identity
/// policies alone.
pub fn decide_identity(req: &Request, identity: &[Policy]) -> Result<(), Refusal> {
    let ids: Vec<Said> = identity.iter().map(|p| p.say(req)).collect();
    if ids.iter().any(|s| s.deny) {
        return Err(Refusal::DenyInIdentityPolicy);
    }
    if ids.iter().any(|s| s.allow_direct) {
        Ok(())
    } else {
        Err(Refusal::NoIdentityAllow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "111122223333";
    const APP: &str = "arn:aws:iam::111122223333:user/app";
    const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn key_policy(text: &str) -> Policy {
        Policy::parse(text, Kind::Key, "aws").unwrap()
    }

    fn identity(text: &str) -> Policy {
        Policy::parse(text, Kind::Identity, "aws").unwrap()
    }

    fn ask(action: &str, facts: &Facts) -> Request<'static> {
        // Leaked for brevity in tests only.
        let facts: &'static Facts = Box::leak(Box::new(facts.clone()));
        let action: &'static str = Box::leak(action.to_owned().into_boxed_str());
        Request {
            principal_arn: APP,
            account: ACCOUNT,
            action,
            resource: KEY,
            facts,
        }
    }

    fn data_key_only() -> Policy {
        identity(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:GenerateDataKey*","kms:Decrypt"],"Resource":"*"}]}"#,
        )
    }

    #[test]
    fn the_default_policy_delegates_to_identity_policies() {
        let default = key_policy(&default_key_policy("aws", ACCOUNT));
        let f = Facts::new();
        assert_eq!(
            decide(&ask("kms:Decrypt", &f), &default, &[data_key_only()], false),
            Ok(())
        );
        assert_eq!(
            decide(
                &ask("kms:DisableKey", &f),
                &default,
                &[data_key_only()],
                false
            ),
            Err(Refusal::NoIdentityAllow)
        );
        assert_eq!(
            decide(&ask("kms:Decrypt", &f), &default, &[], false),
            Err(Refusal::NoIdentityAllow)
        );
        // A grant is enough on its own.
        assert_eq!(decide(&ask("kms:Decrypt", &f), &default, &[], true), Ok(()));
    }

    #[test]
    fn a_key_policy_naming_the_user_needs_no_identity_policy() {
        let p = key_policy(&format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{APP}"}},"Action":"kms:Encrypt","Resource":"*"}}]}}"#
        ));
        let f = Facts::new();
        assert_eq!(decide(&ask("kms:Encrypt", &f), &p, &[], false), Ok(()));
        assert_eq!(
            decide(&ask("kms:Decrypt", &f), &p, &[data_key_only()], false),
            Err(Refusal::NoKeyPolicyAllow)
        );
    }

    #[test]
    fn an_explicit_deny_beats_every_allow() {
        let p = key_policy(&format!(
            r#"{{"Statement":[
                {{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}},
                {{"Effect":"Deny","Principal":{{"AWS":"{ACCOUNT}"}},"Action":"kms:Decrypt","Resource":"*",
                  "Condition":{{"StringNotEquals":{{"kms:EncryptionContext:app":"billing"}}}}}}]}}"#
        ));
        let mut billing = Facts::new();
        let (k, v) = ("app".to_string(), "billing".to_string());
        billing.set_encryption_context([(&k, &v)]);
        assert_eq!(
            decide(&ask("kms:Decrypt", &billing), &p, &[], false),
            Ok(())
        );
        assert_eq!(
            decide(&ask("kms:Decrypt", &Facts::new()), &p, &[], true),
            Err(Refusal::DenyInKeyPolicy)
        );
        let deny_id =
            identity(r#"{"Statement":{"Effect":"Deny","Action":"kms:Encrypt","Resource":"*"}}"#);
        assert_eq!(
            decide(&ask("kms:Encrypt", &billing), &p, &[deny_id], false),
            Err(Refusal::DenyInIdentityPolicy)
        );
    }

    #[test]
    fn aliases_are_decided_on_their_arn_with_variables_substituted() {
        let p = identity(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"kms:*Alias","Resource":"arn:aws:kms:*:${aws:PrincipalAccount}:alias/${aws:username}-*"},
                {"Effect":"Deny","Action":"kms:DeleteAlias","Resource":"arn:aws:kms:*:111122223333:alias/*-prod"}]}"#,
        );
        let f = Facts::new();
        let on = |action: &'static str, alias: &'static str| Request {
            resource: alias,
            ..ask(action, &f)
        };
        let ids = std::slice::from_ref(&p);
        let own = "arn:aws:kms:us-east-1:111122223333:alias/app-db";
        assert_eq!(decide_identity(&on("kms:CreateAlias", own), ids), Ok(()));
        assert_eq!(
            decide_identity(
                &on(
                    "kms:CreateAlias",
                    "arn:aws:kms:us-east-1:111122223333:alias/other-db"
                ),
                ids
            ),
            Err(Refusal::NoIdentityAllow)
        );
        assert_eq!(
            decide_identity(
                &on(
                    "kms:DeleteAlias",
                    "arn:aws:kms:us-east-1:111122223333:alias/app-prod"
                ),
                ids
            ),
            Err(Refusal::DenyInIdentityPolicy)
        );
        // An alias pattern says nothing about keys.
        let default = key_policy(&default_key_policy("aws", ACCOUNT));
        assert_eq!(
            decide(&ask("kms:CreateAlias", &f), &default, ids, false),
            Err(Refusal::NoIdentityAllow)
        );
    }

    #[test]
    fn not_action_and_resource_patterns() {
        let p = identity(
            r#"{"Statement":{"Effect":"Allow","NotAction":["kms:ScheduleKeyDeletion","kms:Disable*"],"Resource":"arn:aws:kms:*:111122223333:key/*"}}"#,
        );
        let f = Facts::new();
        let default = key_policy(&default_key_policy("aws", ACCOUNT));
        assert!(
            decide(
                &ask("kms:Encrypt", &f),
                &default,
                std::slice::from_ref(&p),
                false
            )
            .is_ok()
        );
        assert!(
            decide(
                &ask("kms:DisableKey", &f),
                &default,
                std::slice::from_ref(&p),
                false
            )
            .is_err()
        );
        let no_key = Request {
            resource: "*",
            ..ask("kms:CreateKey", &f)
        };
        assert_eq!(
            decide_identity(&no_key, std::slice::from_ref(&p)),
            Err(Refusal::NoIdentityAllow)
        );
        assert_eq!(
            decide_identity(&no_key, &[data_key_only()]),
            Err(Refusal::NoIdentityAllow)
        );
        let admin = identity(r#"{"Statement":{"Effect":"Allow","Action":"kms:*","Resource":"*"}}"#);
        assert_eq!(decide_identity(&no_key, &[admin]), Ok(()));
    }
}
