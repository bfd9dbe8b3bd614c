//! Authorization: what a principal may do.
//!
//! Each credential in the config may carry an `allow` list of actions, in
//! IAM's spelling: `kms:Decrypt`, a prefix pattern such as `kms:Describe*`
//! or `kms:GenerateDataKey*`, or `kms:*`. A credential without one may call
//! every operation. A refused request is AccessDeniedException with IAM's
//! wording, and is audited like any other.

use std::collections::HashMap;

use super::Principal;
use crate::error::KmsError;

/// One allowed action: an exact operation name, or a prefix (from `Foo*`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Exact(String),
    Prefix(String),
}

impl Action {
    fn parse(pattern: &str) -> Result<Action, String> {
        let Some(rest) = pattern.strip_prefix("kms:") else {
            return Err(format!("action '{pattern}' must start with 'kms:'"));
        };
        let valid = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric());
        match rest.strip_suffix('*') {
            Some(prefix) if valid(prefix) => Ok(Action::Prefix(prefix.to_owned())),
            None if !rest.is_empty() && valid(rest) => Ok(Action::Exact(rest.to_owned())),
            _ => Err(format!(
                "action '{pattern}' must be kms:<Operation>, kms:<Prefix>* or kms:*"
            )),
        }
    }

    fn allows(&self, operation: &str) -> bool {
        match self {
            Action::Exact(op) => op == operation,
            Action::Prefix(p) => operation.starts_with(p.as_str()),
        }
    }
}

/// The allow lists of the credentials that have one, by access key id.
#[derive(Debug, Default)]
pub struct Authorizer {
    rules: HashMap<String, Vec<Action>>,
    /// For IAM-style principal ARNs in refusals.
    partition: String,
    account_id: String,
}

impl Authorizer {
    pub fn new(partition: &str, account_id: &str) -> Authorizer {
        Authorizer {
            rules: HashMap::new(),
            partition: partition.to_owned(),
            account_id: account_id.to_owned(),
        }
    }

    /// Restricts `access_key_id` to `patterns`. Errors name the bad pattern.
    pub fn restrict(&mut self, access_key_id: &str, patterns: &[String]) -> Result<(), String> {
        let actions = patterns
            .iter()
            .map(|p| Action::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        self.rules.insert(access_key_id.to_owned(), actions);
        Ok(())
    }

    /// Whether `principal` may call `operation` (a TrentService operation
    /// name such as `Decrypt`).
    pub fn check(&self, principal: &Principal, operation: &str) -> Result<(), KmsError> {
        let Some(actions) = self.rules.get(&principal.access_key_id) else {
            return Ok(());
        };
        if actions.iter().any(|a| a.allows(operation)) {
            return Ok(());
        }
        Err(KmsError::AccessDenied(format!(
            "User: arn:{}:iam::{}:user/{} is not authorized to perform: kms:{operation} because no identity-based policy allows the kms:{operation} action",
            self.partition, self.account_id, principal.name
        )))
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
    fn exact_prefix_and_star_patterns() {
        let mut a = Authorizer::new("aws", "111122223333");
        a.restrict(
            "AKIDAPP",
            &["kms:Decrypt".into(), "kms:GenerateDataKey*".into()],
        )
        .unwrap();
        let p = principal();
        assert!(a.check(&p, "Decrypt").is_ok());
        assert!(a.check(&p, "GenerateDataKey").is_ok());
        assert!(a.check(&p, "GenerateDataKeyWithoutPlaintext").is_ok());
        let e = a.check(&p, "CreateKey").unwrap_err();
        assert_eq!(e.type_name(), "AccessDeniedException");
        assert_eq!(
            e.message().unwrap(),
            "User: arn:aws:iam::111122223333:user/app is not authorized to perform: kms:CreateKey because no identity-based policy allows the kms:CreateKey action"
        );
        a.restrict("AKIDAPP", &["kms:*".into()]).unwrap();
        assert!(a.check(&p, "ScheduleKeyDeletion").is_ok());
    }

    #[test]
    fn credentials_without_a_list_may_do_everything() {
        let a = Authorizer::new("aws", "111122223333");
        assert!(a.check(&principal(), "ScheduleKeyDeletion").is_ok());
    }

    #[test]
    fn malformed_patterns_are_refused() {
        let mut a = Authorizer::new("aws", "111122223333");
        for bad in ["Decrypt", "kms:", "kms:De*crypt", "iam:*", "kms:Decrypt "] {
            assert!(a.restrict("AKIDAPP", &[bad.into()]).is_err(), "{bad}");
        }
    }
}
