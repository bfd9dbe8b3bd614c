//! The `Condition` block: operators, set qualifiers and the request's
//! condition keys.
//!
//! Supported operators: `StringEquals`, `StringNotEquals`,
//! `StringEqualsIgnoreCase`, `StringNotEqualsIgnoreCase`, `StringLike`,
//! `StringNotLike`, `Bool` and `Null`, each optionally with an `IfExists`
//! suffix (not `Null`) and a `ForAllValues:` or `ForAnyValue:` qualifier.
//! Condition key names are compared without regard to case, as IAM does;
//! values by the operator.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::document::{PolicyError, strings};
use super::variable::{Template, Who};
use super::wildcard::glob_tokens;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Bool,
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qualifier {
    Single,
    ForAllValues,
    ForAnyValue,
}

#[derive(Debug, Clone)]
pub struct Condition {
    op: Op,
    negated: bool,
    if_exists: bool,
    qualifier: Qualifier,
    /// Lowercase.
    key: String,
    /// With their policy variables (string operators under Version
    /// 2012-10-17).
    values: Vec<Template>,
}

/// The condition keys kmsgate sets (lowercase). `kms:encryptioncontext:*`
/// stands for one key per encryption-context pair.
const KNOWN_KEYS: &[&str] = &[
    "kms:encryptioncontextkeys",
    "kms:requestalias",
    "kms:resourcealiases",
    "kms:calleraccount",
    "kms:grantisforawsresource",
    "kms:keyspec",
    "kms:keyusage",
    "kms:encryptionalgorithm",
    "kms:macalgorithm",
    "kms:signingalgorithm",
    "kms:messagetype",
    "kms:datakeypairspec",
    "kms:keyagreementalgorithm",
    "kms:grantoperations",
    "kms:granteeprincipal",
    "kms:retiringprincipal",
    "aws:principalarn",
    "aws:username",
];

fn known_key(key: &str) -> bool {
    KNOWN_KEYS.contains(&key)
        || key
            .strip_prefix("kms:encryptioncontext:")
            .is_some_and(|k| !k.is_empty())
}

impl Condition {
    /// `{"StringEquals": {"kms:EncryptionContext:app": "x"}, ...}`.
    /// `substitute`: the policy's Version is 2012-10-17, so the values of
    /// string operators may hold policy variables.
    pub fn parse_block(
        block: &Map<String, Value>,
        substitute: bool,
    ) -> Result<Vec<Condition>, PolicyError> {
        let mut out = Vec::new();
        for (operator, keys) in block {
            let (qualifier, rest) = if let Some(r) = operator.strip_prefix("ForAllValues:") {
                (Qualifier::ForAllValues, r)
            } else if let Some(r) = operator.strip_prefix("ForAnyValue:") {
                (Qualifier::ForAnyValue, r)
            } else {
                (Qualifier::Single, operator.as_str())
            };
            let (rest, if_exists) = match rest.strip_suffix("IfExists") {
                Some(r) => (r, true),
                None => (rest, false),
            };
            let (op, negated) = match rest {
                "StringEquals" => (Op::StringEquals, false),
                "StringNotEquals" => (Op::StringEquals, true),
                "StringEqualsIgnoreCase" => (Op::StringEqualsIgnoreCase, false),
                "StringNotEqualsIgnoreCase" => (Op::StringEqualsIgnoreCase, true),
                "StringLike" => (Op::StringLike, false),
                "StringNotLike" => (Op::StringLike, true),
                "Bool" => (Op::Bool, false),
                "Null" if !if_exists => (Op::Null, false),
                _ => {
                    return Err(PolicyError(format!(
                        "Policy contains an unsupported condition operator: {operator}."
                    )));
                }
            };
            let Value::Object(keys) = keys else {
                return Err(PolicyError(format!(
                    "The condition operator {operator} must map condition keys to values."
                )));
            };
            for (key, values) in keys {
                let lower = key.to_ascii_lowercase();
                if !known_key(&lower) {
                    return Err(PolicyError(format!(
                        "Policy contains an unsupported condition key: {key}."
                    )));
                }
                let values = strings(values, "A condition value").or_else(|e| match values {
                    Value::Bool(b) => Ok(vec![b.to_string()]),
                    _ => Err(e),
                })?;
                let values = match op {
                    // A value other than true or false would never match.
                    Op::Bool | Op::Null => values
                        .iter()
                        .map(|v| match v.to_ascii_lowercase().as_str() {
                            "true" | "false" => Ok(Template::plain(v)),
                            _ => Err(PolicyError(format!(
                                "The condition operator {operator} takes true or false, not: {v}."
                            ))),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => values
                        .iter()
                        .map(|v| Template::parse(v, substitute))
                        .collect::<Result<Vec<_>, _>>()?,
                };
                out.push(Condition {
                    op,
                    negated,
                    if_exists,
                    qualifier,
                    key: lower,
                    values,
                });
            }
        }
        Ok(out)
    }

    /// The condition key, lowercase.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether the condition holds for `facts`, asked by `who`.
    pub fn holds(&self, facts: &Facts, who: &Who) -> bool {
        let present = facts.get(&self.key);
        if self.op == Op::Null {
            let absent = present.is_none_or(|v| v.is_empty());
            return self.values.iter().any(|want| {
                match want.expand(who).to_ascii_lowercase().as_str() {
                    "true" => absent,
                    "false" => !absent,
                    _ => false,
                }
            });
        }
        let request_values: &[String] = present.map(Vec::as_slice).unwrap_or_default();
        // Whether one request value matches the policy's values, the
        // operator's negation applied.
        let fits = |v: &String| self.values.iter().any(|p| self.equal(p, v, who)) != self.negated;
        match self.qualifier {
            Qualifier::ForAllValues => request_values.iter().all(fits),
            Qualifier::ForAnyValue => request_values.iter().any(fits),
            Qualifier::Single if request_values.is_empty() => self.if_exists || self.negated,
            Qualifier::Single if self.negated => request_values.iter().all(fits),
            Qualifier::Single => request_values.iter().any(fits),
        }
    }

    fn equal(&self, policy: &Template, request: &str, who: &Who) -> bool {
        match self.op {
            Op::StringEquals => policy.expand(who) == request,
            Op::StringEqualsIgnoreCase | Op::Bool => {
                policy.expand(who).eq_ignore_ascii_case(request)
            }
            Op::StringLike => glob_tokens(&policy.tokens(Some(who)), request.as_bytes(), false),
            Op::Null => false,
        }
    }
}

/// A request's condition keys and their values, by lowercase key name.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    values: BTreeMap<String, Vec<String>>,
}

impl Facts {
    pub fn new() -> Facts {
        Facts::default()
    }

    /// Sets `key` (any case) to one or more values.
    pub fn set(&mut self, key: &str, values: Vec<String>) {
        self.values.insert(key.to_ascii_lowercase(), values);
    }

    pub fn set_one(&mut self, key: &str, value: impl Into<String>) {
        self.set(key, vec![value.into()]);
    }

    /// `kms:EncryptionContext:<k>` for each pair and
    /// `kms:EncryptionContextKeys`.
    pub fn set_encryption_context<'a>(
        &mut self,
        pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) {
        let mut keys = Vec::new();
        for (k, v) in pairs {
            self.set_one(&format!("kms:EncryptionContext:{k}"), v.clone());
            keys.push(k.clone());
        }
        self.set("kms:EncryptionContextKeys", keys);
    }

    /// Adds (or replaces) every key of `other`.
    pub fn extend(&mut self, other: &Facts) {
        for (k, v) in &other.values {
            self.values.insert(k.clone(), v.clone());
        }
    }

    fn get(&self, key: &str) -> Option<&Vec<String>> {
        self.values.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHO: Who = Who {
        arn: "arn:aws:iam::111122223333:user/app",
        account: "111122223333",
    };

    fn cond(json: &str) -> Vec<Condition> {
        let v: Value = serde_json::from_str(json).unwrap();
        Condition::parse_block(v.as_object().unwrap(), true).unwrap()
    }

    fn context(pairs: &[(&str, &str)]) -> Facts {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut f = Facts::new();
        f.set_encryption_context(owned.iter().map(|(k, v)| (k, v)));
        f
    }

    fn holds(json: &str, facts: &Facts) -> bool {
        cond(json).iter().all(|c| c.holds(facts, &WHO))
    }

    #[test]
    fn string_equals_on_an_encryption_context_value() {
        let c = r#"{"StringEquals":{"kms:EncryptionContext:app":"billing"}}"#;
        assert!(holds(c, &context(&[("app", "billing")])));
        assert!(!holds(c, &context(&[("app", "Billing")])));
        assert!(!holds(c, &context(&[])));
        // Key names are not case-sensitive.
        assert!(holds(c, &context(&[("APP", "billing")])));
    }

    #[test]
    fn negated_operators_hold_when_the_key_is_absent() {
        let c = r#"{"StringNotEquals":{"kms:EncryptionContext:app":"billing"}}"#;
        assert!(holds(c, &context(&[])));
        assert!(holds(c, &context(&[("app", "hr")])));
        assert!(!holds(c, &context(&[("app", "billing")])));
    }

    #[test]
    fn set_qualifiers() {
        let all = r#"{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["app","env"]}}"#;
        assert!(holds(all, &context(&[("app", "x")])));
        assert!(holds(all, &context(&[])));
        assert!(!holds(all, &context(&[("app", "x"), ("other", "y")])));
        let any = r#"{"ForAnyValue:StringLike":{"kms:EncryptionContextKeys":"ap*"}}"#;
        assert!(holds(any, &context(&[("x", "1"), ("app", "2")])));
        assert!(!holds(any, &context(&[])));
    }

    #[test]
    fn null_bool_and_if_exists() {
        let null = r#"{"Null":{"kms:EncryptionContextKeys":"false"}}"#;
        assert!(holds(null, &context(&[("a", "b")])));
        assert!(!holds(null, &context(&[])));
        let mut f = Facts::new();
        f.set_one("kms:GrantIsForAWSResource", "false");
        assert!(holds(r#"{"Bool":{"kms:GrantIsForAWSResource":false}}"#, &f));
        assert!(!holds(
            r#"{"Bool":{"kms:GrantIsForAWSResource":"true"}}"#,
            &f
        ));
        let if_exists = r#"{"StringEqualsIfExists":{"kms:RequestAlias":"alias/app"}}"#;
        assert!(holds(if_exists, &f));
        f.set_one("kms:RequestAlias", "alias/other");
        assert!(!holds(if_exists, &f));
    }

    #[test]
    fn policy_variables_in_string_values() {
        let mut f = Facts::new();
        f.set_one("kms:GranteePrincipal", WHO.arn);
        let own = r#"{"StringEquals":{"kms:GranteePrincipal":"${aws:PrincipalArn}"}}"#;
        assert!(holds(own, &f));
        let like = r#"{"StringLike":{"kms:GranteePrincipal":"*:user/${aws:username}"}}"#;
        assert!(holds(like, &f));
        f.set_one(
            "kms:GranteePrincipal",
            "arn:aws:iam::111122223333:user/other",
        );
        assert!(!holds(own, &f));
        assert!(!holds(like, &f));
        // Under the old grammar the same text is literal.
        let v: Value = serde_json::from_str(own).unwrap();
        let old = Condition::parse_block(v.as_object().unwrap(), false).unwrap();
        f.set_one("kms:GranteePrincipal", "${aws:PrincipalArn}");
        assert!(old[0].holds(&f, &WHO));
        assert!(!holds(own, &f));
    }

    #[test]
    fn unsupported_operators_and_keys_are_refused() {
        for block in [
            r#"{"NumericLessThan":{"kms:KeySpec":"1"}}"#,
            r#"{"StringEquals":{"aws:SourceIp":"10.0.0.1"}}"#,
            r#"{"StringEquals":["kms:KeySpec"]}"#,
            r#"{"NullIfExists":{"kms:KeySpec":"true"}}"#,
            r#"{"Bool":{"kms:GrantIsForAWSResource":"yes"}}"#,
            r#"{"Null":{"kms:KeySpec":"${aws:username}"}}"#,
            r#"{"StringEquals":{"kms:GranteePrincipal":"${aws:userid}"}}"#,
        ] {
            let v: Value = serde_json::from_str(block).unwrap();
            assert!(
                Condition::parse_block(v.as_object().unwrap(), true).is_err(),
                "{block}"
            );
        }
    }
}
