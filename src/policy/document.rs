//! Parsing IAM's JSON policy grammar (the subset kmsgate evaluates) into a
//! [`Policy`]. What is outside the subset is refused with a reason, never
//! silently ignored: a policy that says more than kmsgate understands must
//! not be taken to say less.

use serde_json::{Map, Value};

use super::condition::Condition;
use super::variable::{Template, Who};
use super::wildcard::{Pattern, glob_tokens, intersects, shape, tokens};

/// Why a policy document was refused. The text is for the caller (it ends
/// up in MalformedPolicyDocumentException or a start-up error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

fn bad<T>(msg: impl Into<String>) -> Result<T, PolicyError> {
    Err(PolicyError(msg.into()))
}

/// Where a policy is attached: on a key (it names principals) or on a
/// principal (it must not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Key,
    Identity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// Who a key policy statement is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalRef {
    /// `"*"`: every authenticated principal.
    Anyone,
    /// An account (its root ARN or its 12-digit id): every principal of the
    /// account, whose own identity policies must then allow the request.
    Account(String),
    /// One IAM user, by ARN.
    User(String),
}

/// A list of patterns, or its complement (`NotAction`, `NotResource`).
#[derive(Debug, Clone)]
pub struct Matcher {
    pub negated: bool,
    pub patterns: Vec<Pattern>,
}

impl Matcher {
    /// Whether `value` matches, the policy variables standing for `who`.
    pub fn matches(&self, value: &str, who: &Who) -> bool {
        self.patterns.iter().any(|p| p.matches(value, who)) != self.negated
    }
}

#[derive(Debug, Clone)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    /// Empty for identity policies.
    pub principals: Vec<PrincipalRef>,
    pub actions: Matcher,
    pub resources: Matcher,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub statements: Vec<Statement>,
}

impl Policy {
    /// Whether a condition of this policy tests `key` (lowercase): lets a
    /// caller skip working out a condition key no policy asks about.
    pub fn tests(&self, key: &str) -> bool {
        self.statements
            .iter()
            .any(|s| s.conditions.iter().any(|c| c.key() == key))
    }
}

const VERSIONS: &[&str] = &["2012-10-17", "2008-10-17"];

impl Policy {
    /// Parses `text` as a policy of `kind`. `partition` is the one key and
    /// principal ARNs must be in.
    pub fn parse(text: &str, kind: Kind, partition: &str) -> Result<Policy, PolicyError> {
        let doc: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => return bad("The policy is not valid JSON."),
        };
        let Value::Object(doc) = doc else {
            return bad("The policy must be a JSON object.");
        };
        for field in doc.keys() {
            if !["Version", "Id", "Statement"].contains(&field.as_str()) {
                return bad(format!("Policy contains an unsupported element: {field}."));
            }
        }
        // Policy variables exist only in the 2012-10-17 grammar; before
        // it, `${...}` is text.
        let substitute = match doc.get("Version") {
            None => false,
            Some(Value::String(v)) if VERSIONS.contains(&v.as_str()) => v == "2012-10-17",
            Some(_) => return bad("The policy Version must be 2012-10-17 or 2008-10-17."),
        };
        if let Some(id) = doc.get("Id")
            && !id.is_string()
        {
            return bad("The policy Id must be a string.");
        }
        let statements = match doc.get("Statement") {
            Some(Value::Array(list)) => list.iter().collect::<Vec<_>>(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => return bad("The policy must contain a Statement."),
        };
        if statements.is_empty() {
            return bad("The policy must contain at least one Statement.");
        }
        let statements = statements
            .into_iter()
            .map(|s| match s {
                Value::Object(s) => statement(s, kind, partition, substitute),
                _ => bad("Each Statement must be a JSON object."),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy { statements })
    }
}

fn statement(
    s: &Map<String, Value>,
    kind: Kind,
    partition: &str,
    substitute: bool,
) -> Result<Statement, PolicyError> {
    const FIELDS: &[&str] = &[
        "Sid",
        "Effect",
        "Principal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    ];
    for field in s.keys() {
        if !FIELDS.contains(&field.as_str()) {
            return bad(format!(
                "Policy contains a statement with an unsupported element: {field}."
            ));
        }
    }
    let sid = match s.get("Sid") {
        None => None,
        Some(Value::String(v)) => Some(v.clone()),
        Some(_) => return bad("A statement's Sid must be a string."),
    };
    let effect = match s.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        _ => return bad("Each statement's Effect must be Allow or Deny."),
    };
    let principals = match (kind, s.get("Principal")) {
        (Kind::Key, Some(p)) => principals(p, partition)?,
        (Kind::Key, None) => return bad("Policy contains a statement with no principal."),
        (Kind::Identity, None) => Vec::new(),
        (Kind::Identity, Some(_)) => {
            return bad("An identity policy must not name a Principal.");
        }
    };
    let actions = either(s, "Action", "NotAction", action_pattern)?;
    let resources = either(s, "Resource", "NotResource", |r| {
        resource_pattern(r, partition, kind, substitute)
    })?;
    let conditions = match s.get("Condition") {
        None => Vec::new(),
        Some(Value::Object(c)) => Condition::parse_block(c, substitute)?,
        Some(_) => return bad("A statement's Condition must be a JSON object."),
    };
    Ok(Statement {
        sid,
        effect,
        principals,
        actions,
        resources,
        conditions,
    })
}

/// A string or a non-empty list of strings.
pub(super) fn strings(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(list) if !list.is_empty() => list
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                _ => bad(format!("{what} must be a string or a list of strings.")),
            })
            .collect(),
        _ => bad(format!("{what} must be a string or a list of strings.")),
    }
}

fn either(
    s: &Map<String, Value>,
    name: &str,
    not_name: &str,
    pattern: impl Fn(&str) -> Result<Pattern, PolicyError>,
) -> Result<Matcher, PolicyError> {
    let (negated, v) = match (s.get(name), s.get(not_name)) {
        (Some(v), None) => (false, v),
        (None, Some(v)) => (true, v),
        (Some(_), Some(_)) => {
            return bad(format!(
                "A statement must not have both {name} and {not_name}."
            ));
        }
        (None, None) => return bad(format!("Each statement must have {name} or {not_name}.")),
    };
    let patterns = strings(v, name)?
        .iter()
        .map(|p| pattern(p))
        .collect::<Result<_, _>>()?;
    Ok(Matcher { negated, patterns })
}

/// AWS KMS's IAM actions (lowercase): its operations, with ReEncrypt's
/// two halves in place of ReEncrypt, and the permission-only
/// SynchronizeMultiRegionKey.
const ACTIONS: &[&str] = &[
    "kms:cancelkeydeletion",
    "kms:connectcustomkeystore",
    "kms:createalias",
    "kms:createcustomkeystore",
    "kms:creategrant",
    "kms:createkey",
    "kms:decapsulate",
    "kms:decrypt",
    "kms:deletealias",
    "kms:deletecustomkeystore",
    "kms:deleteimportedkeymaterial",
    "kms:derivesharedsecret",
    "kms:describecustomkeystores",
    "kms:describekey",
    "kms:disablekey",
    "kms:disablekeyrotation",
    "kms:disconnectcustomkeystore",
    "kms:enablekey",
    "kms:enablekeyrotation",
    "kms:encapsulate",
    "kms:encrypt",
    "kms:generatedatakey",
    "kms:generatedatakeypair",
    "kms:generatedatakeypairwithoutplaintext",
    "kms:generatedatakeywithoutplaintext",
    "kms:generatemac",
    "kms:generaterandom",
    "kms:getkeylastusage",
    "kms:getkeypolicy",
    "kms:getkeyrotationstatus",
    "kms:getparametersforimport",
    "kms:getpublickey",
    "kms:importkeymaterial",
    "kms:listaliases",
    "kms:listgrants",
    "kms:listkeypolicies",
    "kms:listkeyrotations",
    "kms:listkeys",
    "kms:listresourcetags",
    "kms:listretirablegrants",
    "kms:putkeypolicy",
    "kms:reencryptfrom",
    "kms:reencryptto",
    "kms:replicatekey",
    "kms:retiregrant",
    "kms:revokegrant",
    "kms:rotatekeyondemand",
    "kms:schedulekeydeletion",
    "kms:sign",
    "kms:synchronizemultiregionkey",
    "kms:tagresource",
    "kms:untagresource",
    "kms:updatealias",
    "kms:updatecustomkeystore",
    "kms:updatekeydescription",
    "kms:updateprimaryregion",
    "kms:verify",
    "kms:verifymac",
];

/// `kms:Decrypt`, `kms:GenerateDataKey*`, `kms:*`, `*`: compared without
/// regard to case, as IAM compares actions. A pattern that matches no KMS
/// action (`kms:Decrpyt`, `kms:ReEncrypt`) is refused: it would never
/// apply, and a Deny written with it would fail open.
fn action_pattern(a: &str) -> Result<Pattern, PolicyError> {
    let lower = a.to_ascii_lowercase();
    if lower == "*" {
        return Ok(Pattern::new("kms:*", true));
    }
    let Some(rest) = lower.strip_prefix("kms:") else {
        return bad(format!(
            "Policy contains a statement with an action that is not a kms action: {a}."
        ));
    };
    if rest.is_empty()
        || !rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '*' || c == '?')
    {
        return bad(format!(
            "Policy contains a statement with an invalid action: {a}."
        ));
    }
    let toks: Vec<_> = tokens(&lower).collect();
    if !ACTIONS
        .iter()
        .any(|action| glob_tokens(&toks, action.as_bytes(), false))
    {
        return bad(format!(
            "Policy contains a statement with an action that AWS KMS does not have: {a}."
        ));
    }
    Ok(Pattern::new(&lower, true))
}

/// `*`, or a pattern of KMS key ARNs or alias ARNs
/// (`arn:aws:kms:*:111122223333:key/*`, `...:alias/prod-*`), with policy
/// variables under Version 2012-10-17. A pattern that can name neither a
/// key nor an alias is refused. A key policy is about its key alone (AWS
/// authorizes an alias by the caller's IAM policies): there, a pattern that
/// cannot name a key would never apply, and is refused.
fn resource_pattern(
    r: &str,
    partition: &str,
    kind: Kind,
    substitute: bool,
) -> Result<Pattern, PolicyError> {
    let template = Template::parse(r, substitute)?;
    let toks = template.tokens(None);
    let can_name = |resource: &str| {
        intersects(
            &toks,
            &shape(&format!("arn:{partition}:kms:*:*:{resource}/*")),
        )
    };
    let (key, alias) = (can_name("key"), can_name("alias"));
    if !key && !alias {
        return bad(format!(
            "Policy contains a statement with an invalid resource: {r}."
        ));
    }
    if kind == Kind::Key && !key {
        return bad(format!(
            "Policy contains a statement with a resource that is not the key: {r}. A key policy's Resource is the key itself (\"*\" or the key's ARN); aliases are authorized by identity policies."
        ));
    }
    Ok(Pattern::of(template))
}

const INVALID_PRINCIPALS: &str = "Policy contains a statement with one or more invalid principals.";

fn principals(p: &Value, partition: &str) -> Result<Vec<PrincipalRef>, PolicyError> {
    let list = match p {
        Value::String(s) if s == "*" => return Ok(vec![PrincipalRef::Anyone]),
        Value::Object(m) => {
            if m.keys().any(|k| k != "AWS") {
                return bad(INVALID_PRINCIPALS);
            }
            match m.get("AWS") {
                Some(v) => strings(v, "Principal")?,
                None => return bad(INVALID_PRINCIPALS),
            }
        }
        _ => return bad(INVALID_PRINCIPALS),
    };
    list.iter()
        .map(|s| principal(s, partition))
        .collect::<Option<Vec<_>>>()
        .map_or_else(|| bad(INVALID_PRINCIPALS), Ok)
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn principal(s: &str, partition: &str) -> Option<PrincipalRef> {
    if s == "*" {
        return Some(PrincipalRef::Anyone);
    }
    if is_account(s) {
        return Some(PrincipalRef::Account(s.to_owned()));
    }
    let rest = s.strip_prefix(&format!("arn:{partition}:iam::"))?;
    let (account, resource) = rest.split_once(':')?;
    if !is_account(account) {
        return None;
    }
    if resource == "root" {
        return Some(PrincipalRef::Account(account.to_owned()));
    }
    // kmsgate's users have no path: `user/dept/app` would name no one.
    let name = resource.strip_prefix("user/")?;
    let valid = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(valid) {
        return None;
    }
    Some(PrincipalRef::User(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, Kind::Key, "aws")
    }

    #[test]
    fn the_default_key_policy_parses() {
        let p = key(&super::super::default_key_policy("aws", "111122223333")).unwrap();
        assert_eq!(p.statements.len(), 1);
        assert_eq!(
            p.statements[0].principals,
            vec![PrincipalRef::Account("111122223333".into())]
        );
    }

    #[test]
    fn malformed_documents_are_refused_with_a_reason() {
        let cases = [
            ("not json", "not valid JSON"),
            ("[]", "JSON object"),
            (r#"{"Version":"2012-10-17"}"#, "Statement"),
            (r#"{"Statement":[]}"#, "at least one"),
            (
                r#"{"Statement":[{"Effect":"Permit","Principal":"*","Action":"kms:*","Resource":"*"}]}"#,
                "Effect",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#,
                "no principal",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"kms:*","Resource":"*"}]}"#,
                "invalid principals",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"s3.amazonaws.com"},"Action":"kms:*","Resource":"*"}]}"#,
                "invalid principals",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"*"}]}"#,
                "not a kms action",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","NotAction":"kms:Decrypt","Resource":"*"}]}"#,
                "both",
            ),
            (
                r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":["kms:Encrypt","kms:Decrpyt"],"Resource":"*"}]}"#,
                "does not have: kms:Decrpyt",
            ),
            (
                r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"kms:ReEncrypt","Resource":"*"}]}"#,
                "does not have: kms:ReEncrypt",
            ),
            (
                r#"{"Statement":[{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:user/dept/app"},"Action":"kms:*","Resource":"*"}]}"#,
                "invalid principals",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"arn:aws:s3:::b"}]}"#,
                "invalid resource",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"2020"}}}]}"#,
                "DateLessThan",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","NotPrincipal":"x"}]}"#,
                "NotPrincipal",
            ),
        ];
        for (text, want) in cases {
            let e = key(text).unwrap_err();
            assert!(e.0.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn identity_policies_name_no_principal() {
        let ok = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":["kms:Decrypt","kms:GenerateDataKey*"],"Resource":"arn:aws:kms:*:111122223333:key/*"}}"#;
        Policy::parse(ok, Kind::Identity, "aws").unwrap();
        let with =
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}}"#;
        assert!(Policy::parse(with, Kind::Identity, "aws").is_err());
    }

    #[test]
    fn resources_name_keys_or_aliases_and_key_policies_only_keys() {
        let doc = |version: &str, resource: &str| {
            format!(
                r#"{{{version}"Statement":{{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"{resource}"}}}}"#
            )
        };
        let v12 = r#""Version":"2012-10-17","#;
        let alias = "arn:aws:kms:us-east-1:111122223333:alias/prod-*";
        for ok in [
            "*",
            "arn:aws:kms:*",
            "arn:aws:kms:*:111122223333:key/*",
            "arn:aws:kms:us-east-1:111122223333:*",
        ] {
            key(&doc(v12, ok)).unwrap();
        }
        let e = key(&doc(v12, alias)).unwrap_err();
        assert!(e.0.contains("not the key"), "{e}");
        let identity = |text: &str| Policy::parse(text, Kind::Identity, "aws");
        let no_principal = |d: String| d.replace(r#""Principal":"*","#, "");
        identity(&no_principal(doc(v12, alias))).unwrap();
        identity(&no_principal(doc(
            v12,
            "arn:aws:kms:us-east-1:111122223333:alias/${aws:username}/*",
        )))
        .unwrap();
        for bad in [
            "arn:aws:kms:us-east-1:111122223333:grant/*",
            "arn:aws:kms:us-east-1:111122223333:key",
            "arn:aws:iam::111122223333:user/*",
        ] {
            let e = identity(&no_principal(doc(v12, bad))).unwrap_err();
            assert!(e.0.contains("invalid resource"), "{e}");
        }
        // Variables: refused when unknown under 2012-10-17, text before it
        // (a key ARN holds no `:` after `key/`: as text, that one never
        // names a key).
        let unknown = "arn:aws:kms:us-east-1:111122223333:key/${aws:userid}";
        let e = key(&doc(v12, unknown)).unwrap_err();
        assert!(e.0.contains("unsupported policy variable"), "{e}");
        let e = key(&doc(r#""Version":"2008-10-17","#, unknown)).unwrap_err();
        assert!(e.0.contains("invalid resource"), "{e}");
        let literal = "arn:aws:kms:us-east-1:111122223333:key/${x}";
        key(&doc(r#""Version":"2008-10-17","#, literal)).unwrap();
        key(&doc("", literal)).unwrap();
        assert!(key(&doc(v12, literal)).is_err());
    }

    #[test]
    fn principals_of_every_accepted_form() {
        let p = key(r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":["111122223333","arn:aws:iam::111122223333:root","arn:aws:iam::111122223333:user/app","*"]},"Action":"kms:*","Resource":"*"}}"#).unwrap();
        assert_eq!(
            p.statements[0].principals,
            vec![
                PrincipalRef::Account("111122223333".into()),
                PrincipalRef::Account("111122223333".into()),
                PrincipalRef::User("arn:aws:iam::111122223333:user/app".into()),
                PrincipalRef::Anyone,
            ]
        );
    }
}
