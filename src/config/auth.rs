//! `[auth]`: the credentials that may sign requests, the principals they
//! sign as, and the principals' identity policies.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Config, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Accept unsigned requests. Off unless set explicitly.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// How far a request's X-Amz-Date may be from the gateway's clock.
    #[serde(default = "default_skew")]
    pub max_clock_skew_secs: u64,
    /// Accept the presigned form of SigV4 (authentication in the query
    /// string). Off: no AWS KMS client needs it, and a URL is easier to
    /// leak than a header.
    #[serde(default)]
    pub allow_presigned_urls: bool,
    #[serde(default)]
    pub credentials: Vec<CredentialConfig>,
    /// Principals and their identity policies.
    #[serde(default)]
    pub principals: Vec<PrincipalConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: false,
            max_clock_skew_secs: default_skew(),
            allow_presigned_urls: false,
            credentials: Vec::new(),
            principals: Vec::new(),
        }
    }
}

/// A principal (an IAM user, `arn:{partition}:iam::{account}:user/{name}`)
/// and the identity policies attached to it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    pub name: String,
    /// Identity policy documents (IAM JSON), inline.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Identity policy documents, one JSON file each.
    #[serde(default)]
    pub policy_files: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    pub access_key_id: String,
    /// The secret access key: a file holding it, or an environment variable.
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
    /// The principal (IAM user name) this key signs as; the access key id
    /// when not set. Two credentials may name one principal: that is how a
    /// secret is rotated without downtime.
    pub principal: Option<String>,
    /// Shorthand for an identity policy of the principal: these IAM actions
    /// (`kms:Decrypt`, `kms:GenerateDataKey*`, `kms:*`) allowed on every
    /// resource. Credentials of one principal must not list different ones.
    pub allow: Option<Vec<String>>,
}

impl CredentialConfig {
    pub fn principal_name(&self) -> &str {
        self.principal.as_deref().unwrap_or(&self.access_key_id)
    }
}

/// An IAM user name: 1-64 of letters, digits and `+=,.@_-`.
pub fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

fn default_skew() -> u64 {
    300
}

impl Config {
    /// Every principal is a valid IAM user name and has an identity policy
    /// (or an `allow` list), and credentials of one principal agree on
    /// their `allow` lists. Before identity policies, a credential without
    /// `allow` could do everything; such a config is refused with the
    /// migration spelled out rather than quietly losing or keeping access.
    pub(super) fn validate_principals(&self) -> Result<(), ConfigError> {
        let mut named = std::collections::HashSet::new();
        for p in &self.auth.principals {
            if !valid_user_name(&p.name) {
                return Err(ConfigError::Invalid(format!(
                    "principal name '{}' must be 1-64 letters, digits or +=,.@_-",
                    p.name
                )));
            }
            if !named.insert(p.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "principal {} is listed twice under [[auth.principals]]",
                    p.name
                )));
            }
        }
        let mut allow_of: std::collections::HashMap<&str, (&str, &Option<Vec<String>>)> =
            std::collections::HashMap::new();
        for c in &self.auth.credentials {
            let name = c.principal_name();
            if !valid_user_name(name) {
                return Err(ConfigError::Invalid(format!(
                    "credential {}: principal '{name}' must be 1-64 letters, digits or +=,.@_-",
                    c.access_key_id
                )));
            }
            if c.allow.is_none() && !named.contains(name) {
                return Err(ConfigError::Invalid(format!(
                    "credential {} (principal {name}) has no identity policy, so it could use no key. \
                     Before identity policies such a credential could do everything; to keep that, \
                     add `allow = [\"kms:*\"]` to it, or give it a narrower list, or a policy under \
                     [[auth.principals]] name = \"{name}\"",
                    c.access_key_id
                )));
            }
            if let Some((other, allow)) = allow_of.insert(name, (&c.access_key_id, &c.allow))
                && *allow != c.allow
            {
                return Err(ConfigError::Invalid(format!(
                    "credentials {other} and {} both sign as principal {name} but have different \
                     `allow` lists: an allow list belongs to the principal, so give both the same one",
                    c.access_key_id
                )));
            }
        }
        Ok(())
    }
}
