//! Authorization, the identity side: the identity policies attached to
//! each principal (DESIGN.md decision 14).
//!
//! Principals are IAM users of the configured account. Each has identity
//! policies: documents under `[[auth.principals]]`, and the `allow` list
//! of its credentials, which is shorthand for "Allow these actions on every
//! resource". Operations on a key are decided in `ops` against the key
//! policy, these identity policies and the key's grants; operations on no
//! key (CreateKey, ListKeys, ListAliases, GenerateRandom,
//! ListRetirableGrants) are decided here, by identity policies alone.

use std::collections::HashMap;
use std::sync::Arc;

use super::Principal;
use crate::policy::{self, Facts, Kind, Policy, PolicyError, Refusal};

/// A request the identity policies refuse: who asked, for what, and why
/// not. The layers above word it as AWS does (`crate::error::access_denied`,
/// with no resource: these operations are on no key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub principal_arn: String,
    /// `kms:<Operation>`.
    pub action: String,
    pub refusal: Refusal,
}

/// The identity policies of every principal, by principal name.
#[derive(Debug, Default)]
pub struct Authorizer {
    identities: HashMap<String, Arc<[Policy]>>,
    partition: String,
    account_id: String,
}

impl Authorizer {
    pub fn new(partition: &str, account_id: &str) -> Authorizer {
        Authorizer {
            identities: HashMap::new(),
            partition: partition.to_owned(),
            account_id: account_id.to_owned(),
        }
    }

    /// Attaches an identity policy document to `principal`. The error says
    /// what is wrong with the document.
    pub fn attach(&mut self, principal: &str, document: &str) -> Result<(), PolicyError> {
        let p = Policy::parse(document, Kind::Identity, &self.partition)?;
        let list = self.identities.entry(principal.to_owned()).or_default();
        let mut v = list.to_vec();
        v.push(p);
        *list = v.into();
        Ok(())
    }

    /// Attaches the identity policy an `allow` list stands for.
    pub fn allow(&mut self, principal: &str, actions: &[String]) -> Result<(), PolicyError> {
        let doc = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{ "Effect": "Allow", "Action": actions, "Resource": "*" }],
        });
        self.attach(principal, &doc.to_string())
    }

    /// Makes `principal` known with no identity policy (it may still be
    /// named by key policies and grants).
    pub fn declare(&mut self, principal: &str) {
        self.identities.entry(principal.to_owned()).or_default();
    }

    /// The identity policies of `principal`.
    pub fn identity(&self, principal: &Principal) -> Arc<[Policy]> {
        self.identities
            .get(&principal.name)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    pub fn principal_arn(&self, principal: &Principal) -> String {
        format!(
            "arn:{}:iam::{}:user/{}",
            self.partition, self.account_id, principal.name
        )
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The condition keys every request has: who is calling.
    pub fn base_facts(&self, principal: &Principal) -> Facts {
        let mut f = Facts::new();
        f.set_one("kms:CallerAccount", self.account_id.clone());
        f.set_one("kms:GrantIsForAWSResource", "false");
        f.set_one("aws:PrincipalArn", self.principal_arn(principal));
        f.set_one("aws:username", principal.name.clone());
        f
    }

    /// Whether `principal` may call `operation`, an operation on no key,
    /// by its identity policies alone.
    pub fn check(&self, principal: &Principal, operation: &str) -> Result<(), Denied> {
        let arn = self.principal_arn(principal);
        let action = format!("kms:{operation}");
        let facts = self.base_facts(principal);
        let request = policy::Request {
            principal_arn: &arn,
            account: &self.account_id,
            action: &action,
            resource: "*",
            facts: &facts,
        };
        policy::decide_identity(&request, &self.identity(principal)).map_err(|refusal| Denied {
            principal_arn: arn,
            action,
            refusal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            name: "app".into(),
            access_key_id: "AKIDAPP".into(),
        }
    }

    #[test]
    fn allow_lists_are_identity_policies() {
        let mut a = Authorizer::new("aws", "111122223333");
        a.allow("app", &["kms:Decrypt".into(), "kms:List*".into()])
            .unwrap();
        let p = principal();
        assert!(a.check(&p, "ListKeys").is_ok());
        assert!(a.check(&p, "ListAliases").is_ok());
        assert_eq!(
            a.check(&p, "CreateKey"),
            Err(Denied {
                principal_arn: "arn:aws:iam::111122223333:user/app".into(),
                action: "kms:CreateKey".into(),
                refusal: Refusal::NoIdentityAllow,
            })
        );
        a.allow("app", &["kms:*".into()]).unwrap();
        assert!(a.check(&p, "CreateKey").is_ok());
    }

    #[test]
    fn a_principal_without_policies_may_do_nothing_on_its_own() {
        let mut a = Authorizer::new("aws", "111122223333");
        a.declare("app");
        assert_eq!(
            a.check(&principal(), "ListKeys").map_err(|d| d.refusal),
            Err(Refusal::NoIdentityAllow)
        );
    }

    #[test]
    fn an_identity_deny_wins() {
        let mut a = Authorizer::new("aws", "111122223333");
        a.allow("app", &["kms:*".into()]).unwrap();
        a.attach(
            "app",
            r#"{"Statement":{"Effect":"Deny","Action":"kms:CreateKey","Resource":"*"}}"#,
        )
        .unwrap();
        assert_eq!(
            a.check(&principal(), "CreateKey"),
            Err(Denied {
                principal_arn: "arn:aws:iam::111122223333:user/app".into(),
                action: "kms:CreateKey".into(),
                refusal: Refusal::DenyInIdentityPolicy,
            })
        );
    }

    #[test]
    fn malformed_patterns_are_refused() {
        let mut a = Authorizer::new("aws", "111122223333");
        for bad in ["Decrypt", "kms:", "iam:*", "kms:Decrypt "] {
            assert!(a.allow("app", &[bad.into()]).is_err(), "{bad}");
        }
    }
}
