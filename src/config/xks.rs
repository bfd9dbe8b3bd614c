//! `[xks]`: kmsgate as an XKS proxy for AWS KMS external key stores
//! (docs/xks.md). One or more logical key stores, each under its own URI
//! path prefix, with its own SigV4 credentials (service `kms-xks-proxy`),
//! the kmsgate keys it exposes and how, optional mTLS, secondary
//! authorization rules and a request-rate limit. Nothing is exposed unless
//! a store names it here.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Config, ConfigError};

/// Longest path prefix the XKS spec allows.
pub const MAX_PREFIX_LEN: usize = 128;
/// Longest externalKeyId the XKS spec allows.
pub const MAX_EXTERNAL_KEY_ID_LEN: usize = 128;
/// The longest a cached health answer may be served (the spec's minute).
pub const MAX_HEALTH_CACHE_SECS: u64 = 60;
/// AWS's default request quota for one external key store.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 1800;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksConfig {
    /// What `kmsgate xks show` prints as `XksProxyUriEndpoint`:
    /// `https://` and the FQDN (and port, if not 443) that AWS KMS calls.
    pub uri_endpoint: Option<String>,
    /// How long a `/health` answer may be reused, in seconds (at most 60).
    #[serde(default = "default_health_cache_secs")]
    pub health_cache_secs: u64,
    /// The logical key stores (`[[xks.stores]]`).
    #[serde(default)]
    pub stores: Vec<XksStoreConfig>,
}

impl Default for XksConfig {
    fn default() -> Self {
        XksConfig {
            uri_endpoint: None,
            health_cache_secs: default_health_cache_secs(),
            stores: Vec::new(),
        }
    }
}

/// One logical key store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksStoreConfig {
    /// The store's name: in audit records, metrics and `kmsgate xks show`.
    pub name: String,
    /// The URI path prefix: `""` or `/` and up to 128 characters from
    /// `A-Za-z0-9/_-`, not ending in `/`. The store answers under
    /// `<prefix>/kms/xks/v1` (its `XksProxyUriPath`). With `""` it answers
    /// `/kms/xks/v1/...`, and also `//kms/xks/v1/...`, which a client that
    /// joins a slash and an empty prefix sends (and signs as sent).
    pub path_prefix: String,
    /// The region of the AWS KMS that calls this store: the SigV4 scope.
    pub region: String,
    /// Requests per second this store serves across all of this gateway's
    /// workers; beyond it, ThrottlingException (429).
    #[serde(default = "default_rps")]
    pub max_requests_per_second: u32,
    /// The SigV4 credentials AWS KMS signs with (service
    /// `kms-xks-proxy`); two at once while one is rotated. Re-read on
    /// SIGHUP.
    pub credentials: Vec<XksCredentialConfig>,
    /// The kmsgate keys this store exposes as external keys.
    #[serde(default)]
    pub keys: Vec<XksKeyConfig>,
    /// mTLS for this store's requests: the client certificate must chain
    /// to this CA and carry this subject name.
    pub mtls: Option<XksMtlsConfig>,
    /// Secondary authorization: deny rules first, then, if any allow rule
    /// is given, a request must match one. Health is never subject to them.
    #[serde(default)]
    pub authorization: Vec<XksRuleConfig>,
}

/// An XKS proxy authentication credential.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksCredentialConfig {
    /// 20–30 characters from `A-Z2-7`, as AWS KMS requires.
    pub access_key_id: String,
    /// The secret (43–64 characters from `A-Za-z0-9+/=`): a file holding
    /// it, or an environment variable.
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
}

/// How an exposed key may be used through XKS (the spec's `keyUsage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XksUsage {
    /// ENCRYPT and DECRYPT: what AWS KMS needs to create a key on it.
    EncryptDecrypt,
    Encrypt,
    Decrypt,
    /// Neither: metadata answers, encrypt and decrypt are refused.
    None,
}

/// A kmsgate key exposed as an external key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksKeyConfig {
    /// The externalKeyId AWS KMS names it by (`XksKeyId`): up to 128
    /// characters from `A-Za-z0-9._-`. Unset: the kmsgate key id, when
    /// `key` is one.
    pub external_key_id: Option<String>,
    /// The kmsgate key: a key id, a key ARN or an alias name
    /// (`alias/...`). A SYMMETRIC_DEFAULT key.
    pub key: String,
    #[serde(default = "default_usage")]
    pub usage: XksUsage,
}

/// mTLS for one store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksMtlsConfig {
    /// The root CA (PEM) the client certificate must chain to.
    pub client_ca_file: PathBuf,
    /// The subject name the client certificate must carry (its CN or a
    /// DNS name of its subjectAltName): AWS KMS presents
    /// `cks.kms.<region>.amazonaws.com`.
    pub subject: String,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XksEffect {
    Allow,
    Deny,
}

/// One secondary authorization rule: it matches a request when every
/// field it sets matches (a field matches when any of its patterns does;
/// `*` and `?` are wildcards, as in IAM's StringLike).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksRuleConfig {
    /// Named in the audit record of a request it denies.
    pub name: String,
    pub effect: XksEffect,
    #[serde(default)]
    pub aws_principal_arn: Vec<String>,
    #[serde(default)]
    pub kms_via_service: Vec<String>,
    #[serde(default)]
    pub kms_operation: Vec<String>,
    #[serde(default)]
    pub aws_source_vpc: Vec<String>,
    #[serde(default)]
    pub aws_source_vpce: Vec<String>,
}

fn default_health_cache_secs() -> u64 {
    10
}
fn default_rps() -> u32 {
    DEFAULT_REQUESTS_PER_SECOND
}
fn default_usage() -> XksUsage {
    XksUsage::EncryptDecrypt
}

/// An access key id AWS KMS accepts for an XKS proxy.
pub fn valid_xks_access_key_id(id: &str) -> bool {
    (20..=30).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

/// A secret access key AWS KMS accepts for an XKS proxy.
pub fn valid_xks_secret(secret: &str) -> bool {
    (43..=64).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
}

/// A path prefix the spec allows: empty, or `/` followed by up to 127
/// more of `A-Za-z0-9/_-`, not ending in `/` (the store answers under
/// `<prefix>/kms/xks/v1`).
pub fn valid_prefix(prefix: &str) -> bool {
    prefix.is_empty()
        || (prefix.len() <= MAX_PREFIX_LEN
            && prefix.starts_with('/')
            && !prefix.ends_with('/')
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b)))
}

/// An externalKeyId the spec allows.
pub fn valid_external_key_id(id: &str) -> bool {
    (1..=MAX_EXTERNAL_KEY_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl XksKeyConfig {
    /// The externalKeyId: as configured, else `key` when it is a bare key
    /// id.
    pub fn external_id(&self) -> Option<&str> {
        match &self.external_key_id {
            Some(id) => Some(id),
            None if uuid::Uuid::parse_str(&self.key).is_ok() => Some(&self.key),
            None => None,
        }
    }
}

impl Config {
    /// Stores have unique names and prefixes, valid prefixes, regions,
    /// credentials and external key ids, and each credential names
    /// exactly one secret source.
    pub(super) fn validate_xks(&self) -> Result<(), ConfigError> {
        let x = &self.xks;
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if x.health_cache_secs > MAX_HEALTH_CACHE_SECS {
            return invalid(format!(
                "xks.health_cache_secs must be at most {MAX_HEALTH_CACHE_SECS} (the XKS spec allows a cached health answer for a minute)"
            ));
        }
        if let Some(e) = &x.uri_endpoint
            && !e.starts_with("https://")
        {
            return invalid(format!(
                "xks.uri_endpoint '{e}' must start with https:// (AWS KMS calls external key stores over HTTPS only)"
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut prefixes = std::collections::HashSet::new();
        for s in &x.stores {
            if s.name.is_empty()
                || s.name.len() > 64
                || !s
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
            {
                return invalid(format!(
                    "xks store name '{}' must be 1-64 of A-Za-z0-9_-",
                    s.name
                ));
            }
            if !names.insert(s.name.as_str()) {
                return invalid(format!("two xks stores are named '{}'", s.name));
            }
            if !valid_prefix(&s.path_prefix) {
                return invalid(format!(
                    "xks store '{}': path_prefix '{}' must be empty or start with '/', not end with '/', and be at most {MAX_PREFIX_LEN} of A-Za-z0-9/_-",
                    s.name, s.path_prefix
                ));
            }
            if !prefixes.insert(s.path_prefix.as_str()) {
                return invalid(format!(
                    "xks store '{}': another store has path_prefix '{}'",
                    s.name, s.path_prefix
                ));
            }
            if s.region.is_empty()
                || !s
                    .region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return invalid(format!(
                    "xks store '{}': region '{}' must be lowercase letters, digits and '-'",
                    s.name, s.region
                ));
            }
            if s.max_requests_per_second == 0 {
                return invalid(format!(
                    "xks store '{}': max_requests_per_second must be at least 1",
                    s.name
                ));
            }
            if s.credentials.is_empty() {
                return invalid(format!(
                    "xks store '{}' needs at least one credential",
                    s.name
                ));
            }
            let mut ids = std::collections::HashSet::new();
            for c in &s.credentials {
                if !valid_xks_access_key_id(&c.access_key_id) {
                    return invalid(format!(
                        "xks store '{}': access_key_id '{}' must be 20-30 characters from A-Z and 2-7 (AWS KMS refuses others)",
                        s.name, c.access_key_id
                    ));
                }
                if !ids.insert(c.access_key_id.as_str()) {
                    return invalid(format!(
                        "xks store '{}': access_key_id '{}' is listed twice",
                        s.name, c.access_key_id
                    ));
                }
                if c.secret_file.is_some() == c.secret_env.is_some() {
                    return invalid(format!(
                        "xks store '{}', credential {}: set exactly one of secret_file and secret_env",
                        s.name, c.access_key_id
                    ));
                }
            }
            let mut external = std::collections::HashSet::new();
            for k in &s.keys {
                let Some(id) = k.external_id() else {
                    return invalid(format!(
                        "xks store '{}': key '{}' is not a key id, so it needs an external_key_id",
                        s.name, k.key
                    ));
                };
                if !valid_external_key_id(id) {
                    return invalid(format!(
                        "xks store '{}': external_key_id '{id}' must be 1-{MAX_EXTERNAL_KEY_ID_LEN} of A-Za-z0-9._-",
                        s.name
                    ));
                }
                if !external.insert(id.to_owned()) {
                    return invalid(format!(
                        "xks store '{}': external_key_id '{id}' is listed twice",
                        s.name
                    ));
                }
            }
            if let Some(m) = &s.mtls
                && m.subject.is_empty()
            {
                return invalid(format!(
                    "xks store '{}': mtls.subject must name the client certificate's subject",
                    s.name
                ));
            }
            let mut rules = std::collections::HashSet::new();
            for r in &s.authorization {
                if r.name.is_empty() || !rules.insert(r.name.as_str()) {
                    return invalid(format!(
                        "xks store '{}': every authorization rule needs a name of its own ('{}')",
                        s.name, r.name
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_key_ids_and_secrets_follow_aws_rules() {
        assert!(valid_xks_access_key_id("AKIA4GBY3I6JCE5M2HPM"));
        assert!(!valid_xks_access_key_id("AKIA4GBY3I6JCE5M2HP")); // 19
        assert!(!valid_xks_access_key_id("AKIA4GBY3I6JCE5M2HP1")); // 1 is not base32
        assert!(!valid_xks_access_key_id("akia4gby3i6jce5m2hpm"));
        assert!(valid_xks_secret(&"a".repeat(43)));
        assert!(!valid_xks_secret(&"a".repeat(42)));
        assert!(!valid_xks_secret(&"a".repeat(65)));
        assert!(!valid_xks_secret(&format!("{}-", "a".repeat(43))));
    }

    #[test]
    fn prefixes_and_external_key_ids_follow_the_spec() {
        assert!(valid_prefix(""));
        assert!(valid_prefix("/example/prefix"));
        assert!(!valid_prefix("example"));
        assert!(!valid_prefix("/trailing/"));
        assert!(!valid_prefix("/dot.s"));
        assert!(!valid_prefix(&format!("/{}", "a".repeat(128))));
        assert!(valid_external_key_id("a.b-c_D9"));
        assert!(!valid_external_key_id(""));
        assert!(!valid_external_key_id("a/b"));
        assert!(!valid_external_key_id(&"a".repeat(129)));
    }
}
