//! The gateway's configuration file (TOML).
//!
//! Secrets are never written in the file itself: the user PIN and each
//! credential's secret access key are read from a file or an environment
//! variable named here, and held in `secrecy` types from then on.
//! See `docs/configuration.md` for the reference.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;
use zeroize::Zeroizing;

mod auth;
mod http;
#[cfg(test)]
mod reference;
mod workers;
mod xks;

pub use crate::hsm::{IvSource, ReadBack};
pub use auth::{AuthConfig, CredentialConfig, PrincipalConfig, valid_user_name};
pub use http::{HttpConfig, MetricsConfig, TlsConfig};
pub use workers::{MAX_WORKERS, WorkerThreads, Workers};
pub use xks::{
    XksConfig, XksCredentialConfig, XksEffect, XksKeyConfig, XksMtlsConfig, XksRuleConfig,
    XksStoreConfig, XksUsage, valid_external_key_id, valid_prefix, valid_xks_access_key_id,
    valid_xks_secret,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration in {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on, `127.0.0.1:8080` unless set here or by `--listen`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The log filter (`info`, `warn`, `kmsgate=debug,info`: tracing's
    /// EnvFilter syntax), applied at start and again on SIGHUP; unset: the
    /// `KMSGATE_LOG` environment variable, else `info`.
    #[serde(default)]
    pub log_level: Option<String>,
    /// Where this config was read from (set by [`Config::load`]).
    #[serde(skip)]
    pub path: PathBuf,
    /// Gateway processes on the token: a number or `auto` (one per core,
    /// the default); `--workers` overrides it. 1: one process, no
    /// supervisor.
    #[serde(default)]
    pub workers: Workers,
    /// Async runtime threads in each worker process (with `workers` past
    /// 1): a number or `auto` (the cores shared out among the workers).
    #[serde(default)]
    pub worker_threads: WorkerThreads,
    /// ARN partition, region and account: SDKs and the Encryption SDK parse
    /// the key ARNs, and sign for the region the ARN names.
    #[serde(default = "default_partition")]
    pub partition: String,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default = "default_account")]
    pub account_id: String,
    /// Request bodies larger than this are refused before parsing.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    pub hsm: HsmConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub keys: KeysConfig,
    #[serde(default)]
    pub http: HttpConfig,
    /// TLS on the listener; plain HTTP when absent.
    pub tls: Option<TlsConfig>,
    /// Serve plain HTTP on an address that is not a loopback address.
    /// Refused unless set: requests, plaintexts and data keys would cross
    /// the network unencrypted.
    #[serde(default)]
    pub insecure_plain_http: bool,
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// kmsgate as an XKS proxy for AWS KMS external key stores; off unless
    /// a store is configured.
    #[serde(default)]
    pub xks: XksConfig,
}

/// Key lifecycle, GCM usage and multi-gateway settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// GCM encryptions one key version may do before the key rotates to a
    /// new version (random 96-bit IVs: NIST caps them at 2^32; 2^30 keeps
    /// the chance of an IV collision near 2^-37).
    #[serde(default = "default_gcm_bound")]
    pub gcm_usage_bound: u64,
    /// Encryptions a gateway reserves, and persists on the token, at a time.
    #[serde(default = "default_gcm_block")]
    pub gcm_reserve_block: u64,
    /// RotateKeyOnDemand calls allowed per key.
    #[serde(default = "default_on_demand")]
    pub max_on_demand_rotations: u32,
    /// How often the gateway looks for changes other gateways made on the
    /// shared token; the bound on how stale its view can be.
    #[serde(default = "default_sync_ms")]
    pub sync_interval_ms: u64,
    /// How often due rotations and deletions are looked for.
    #[serde(default = "default_scheduler_ms")]
    pub scheduler_interval_ms: u64,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            gcm_usage_bound: default_gcm_bound(),
            gcm_reserve_block: default_gcm_block(),
            max_on_demand_rotations: default_on_demand(),
            sync_interval_ms: default_sync_ms(),
            scheduler_interval_ms: default_scheduler_ms(),
        }
    }
}

fn default_gcm_bound() -> u64 {
    1 << 30
}
fn default_gcm_block() -> u64 {
    1 << 20
}
fn default_on_demand() -> u32 {
    10
}
fn default_sync_ms() -> u64 {
    1000
}
fn default_scheduler_ms() -> u64 {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (`libsofthsm2.so`, a vendor's library).
    pub module: PathBuf,
    /// Label of the token that holds kmsgate's keys.
    pub token_label: String,
    /// The token's serial number, where several tokens share the label
    /// (HSM partitions, HA group members).
    #[serde(default)]
    pub token_serial: Option<String>,
    /// The slot id, for modules whose slot ids are stable (an HA group's
    /// virtual slot); SoftHSM2 renumbers its slots.
    #[serde(default)]
    pub slot_id: Option<u64>,
    /// The user PIN: a file holding it, or an environment variable.
    pub pin_file: Option<PathBuf>,
    pub pin_env: Option<String>,
    /// Sessions in the worker pool. SoftHSM2 serialises internally and gets
    /// slower past two threads in one process, so the default is 2.
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    /// Requests that may wait for a session; more are refused at once with
    /// ThrottlingException.
    #[serde(default = "default_queue_depth")]
    pub queue_depth: usize,
    /// How long a request may wait for a session before it fails with
    /// ThrottlingException.
    #[serde(default = "default_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
    /// The longest a request waits for the token, queue included: past it
    /// the client gets DependencyTimeoutException even if the call never
    /// returns.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    #[serde(default)]
    pub iv_source: IvSource,
    /// How writes are confirmed durable before they are acknowledged.
    #[serde(default)]
    pub read_back: ReadBack,
    /// Random bytes (data keys, IVs) drawn from the token this many at a
    /// time and handed out from a zeroizing buffer; 0 (the default): one
    /// C_GenerateRandom per use. At most 1 MiB.
    #[serde(default)]
    pub random_block_bytes: usize,
    /// Use C_WrapKey for GenerateDataKeyWithoutPlaintext where the token
    /// advertises CKF_WRAP for CKM_AES_GCM. `false` forces C_Encrypt.
    #[serde(default = "default_true")]
    pub use_wrap_when_available: bool,
}

impl HsmConfig {
    /// The token this config names.
    pub fn token(&self) -> crate::hsm::select::TokenSelector {
        crate::hsm::select::TokenSelector {
            label: self.token_label.clone(),
            serial: self.token_serial.clone(),
            slot_id: self.slot_id,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_partition() -> String {
    "aws".into()
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_account() -> String {
    "111122223333".into()
}
fn default_max_body() -> usize {
    64 * 1024
}
/// The largest `hsm.random_block_bytes`.
const MAX_RANDOM_BLOCK: usize = 1 << 20;

fn default_sessions() -> usize {
    2
}
fn default_queue_depth() -> usize {
    4096
}
fn default_queue_timeout_ms() -> u64 {
    2000
}
fn default_call_timeout_ms() -> u64 {
    5000
}
fn default_true() -> bool {
    true
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.path = path.to_owned();
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(level) = &self.log_level
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(level)
        {
            return Err(ConfigError::Invalid(format!(
                "log_level `{level}` is not a log filter: {e}"
            )));
        }
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::Invalid(
                "account_id must be 12 digits".to_owned(),
            ));
        }
        let simple = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !simple(&self.region) {
            return Err(ConfigError::Invalid(format!(
                "region '{}' must be lowercase letters, digits and '-'",
                self.region
            )));
        }
        if !simple(&self.partition) {
            return Err(ConfigError::Invalid(format!(
                "partition '{}' must be lowercase letters, digits and '-'",
                self.partition
            )));
        }
        if self.keys.gcm_usage_bound == 0 || self.keys.gcm_reserve_block == 0 {
            return Err(ConfigError::Invalid(
                "keys.gcm_usage_bound and keys.gcm_reserve_block must be at least 1".into(),
            ));
        }
        if self.keys.gcm_usage_bound > 1 << 32 {
            return Err(ConfigError::Invalid(
                "keys.gcm_usage_bound must not exceed 2^32 (the limit for random GCM IVs)".into(),
            ));
        }
        if self.keys.sync_interval_ms == 0 || self.keys.scheduler_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "keys.sync_interval_ms and keys.scheduler_interval_ms must be at least 1".into(),
            ));
        }
        let h = &self.http;
        if h.max_connections == 0
            || h.header_timeout_ms == 0
            || h.body_timeout_ms == 0
            || h.idle_timeout_ms == 0
        {
            return Err(ConfigError::Invalid(
                "http.max_connections and the http timeouts must be at least 1".into(),
            ));
        }
        h.check_body_limits().map_err(ConfigError::Invalid)?;
        if h.max_header_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "http.max_header_bytes must be at least 1024".into(),
            ));
        }
        if self.hsm.random_block_bytes > MAX_RANDOM_BLOCK {
            return Err(ConfigError::Invalid(format!(
                "hsm.random_block_bytes must be at most {MAX_RANDOM_BLOCK}, got {}",
                self.hsm.random_block_bytes
            )));
        }
        if self.hsm.sessions == 0 {
            return Err(ConfigError::Invalid(
                "hsm.sessions must be at least 1".into(),
            ));
        }
        if self.hsm.pin_file.is_some() == self.hsm.pin_env.is_some() {
            return Err(ConfigError::Invalid(
                "set exactly one of hsm.pin_file and hsm.pin_env".into(),
            ));
        }
        if let Some(tls) = &self.tls
            && tls.client_cert_principal
            && tls.client_ca_file.is_none()
        {
            return Err(ConfigError::Invalid(
                "tls.client_cert_principal needs tls.client_ca_file (client certificates are only asked for with a CA to check them against)".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.auth.credentials {
            if !seen.insert(c.access_key_id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "credential {} is listed twice",
                    c.access_key_id
                )));
            }
            if c.secret_file.is_some() == c.secret_env.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "credential {}: set exactly one of secret_file and secret_env",
                    c.access_key_id
                )));
            }
        }
        self.validate_principals()?;
        self.validate_xks()?;
        if self.auth.credentials.is_empty() && !self.auth.allow_anonymous {
            return Err(ConfigError::Invalid(
                "no [[auth.credentials]] and allow_anonymous is false: no request could succeed"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The environment variables this config reads secrets from:
    /// `hsm.pin_env` and every credential's `secret_env`, XKS stores' too.
    pub fn secret_env(&self) -> Vec<String> {
        self.hsm
            .pin_env
            .iter()
            .chain(
                self.auth
                    .credentials
                    .iter()
                    .filter_map(|c| c.secret_env.as_ref()),
            )
            .chain(
                self.xks
                    .stores
                    .iter()
                    .flat_map(|s| &s.credentials)
                    .filter_map(|c| c.secret_env.as_ref()),
            )
            .cloned()
            .collect()
    }

    /// Refuses plain HTTP on an address other hosts can reach, unless the
    /// config opts in with `insecure_plain_http`.
    pub fn check_transport(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        if self.tls.is_some() || listen.ip().is_loopback() || self.insecure_plain_http {
            return Ok(());
        }
        Err(ConfigError::Invalid(format!(
            "refusing to serve plain HTTP on {listen}, which is not a loopback address: \
             configure [tls], or set insecure_plain_http = true to accept that requests, \
             plaintexts and data keys cross the network unencrypted"
        )))
    }
}

/// Reads a secret from a file (trailing newline removed) or an environment
/// variable. The error names where it looked, never what it found. What
/// was read is wiped once the secret is copied out of it.
pub fn read_secret(file: Option<&Path>, env: Option<&str>) -> Result<SecretString, ConfigError> {
    match (file, env) {
        (Some(path), _) => {
            let read = |source| ConfigError::Read {
                path: path.to_owned(),
                source,
            };
            let bytes = Zeroizing::new(std::fs::read(path).map_err(read)?);
            let text = std::str::from_utf8(&bytes).map_err(|_| {
                read(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "stream did not contain valid UTF-8",
                ))
            })?;
            let trimmed = text.trim_end_matches(['\n', '\r']);
            if trimmed.is_empty() {
                return Err(ConfigError::Invalid(format!("{} is empty", path.display())));
            }
            Ok(SecretString::from(trimmed))
        }
        (None, Some(var)) => match std::env::var(var).map(Zeroizing::new) {
            Ok(v) if !v.is_empty() => Ok(SecretString::from(v.as_str())),
            _ => Err(ConfigError::Invalid(format!(
                "environment variable {var} is not set"
            ))),
        },
        (None, None) => Err(ConfigError::Invalid("no secret source given".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [hsm]
        module = "/usr/lib/softhsm/libsofthsm2.so"
        token_label = "kmsgate"
        pin_env = "KMSGATE_PIN"
        [[auth.credentials]]
        access_key_id = "AKIDEXAMPLE"
        secret_env = "KMSGATE_SECRET"
        allow = ["kms:*"]
    "#;

    #[test]
    fn defaults_are_filled_in() {
        let c: Config = toml::from_str(MINIMAL).unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.hsm.sessions, 2);
        assert_eq!(c.hsm.iv_source, IvSource::Caller);
        assert!(!c.auth.allow_anonymous);
        assert!(!c.auth.allow_presigned_urls);
        assert_eq!(c.http.max_connections, 4096);
        assert_eq!(c.http.shutdown_grace_ms, 10_000);
    }

    #[test]
    fn http_timeouts_must_be_positive() {
        let text = format!("{MINIMAL}\n[http]\nheader_timeout_ms = 0\n");
        let c: Config = toml::from_str(&text).unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text = format!("pin = \"1234\"\n{MINIMAL}");
        assert!(toml::from_str::<Config>(&text).is_err());
    }

    #[test]
    fn a_credential_without_an_identity_policy_is_refused_with_the_migration() {
        let text = MINIMAL.replace("allow = [\"kms:*\"]", "");
        let c: Config = toml::from_str(&text).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("allow = [\"kms:*\"]"), "{e}");
        let with_principal =
            format!("{text}\n[[auth.principals]]\nname = \"AKIDEXAMPLE\"\npolicies = []\n");
        let c: Config = toml::from_str(&with_principal).unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn two_keys_of_one_principal_must_agree_on_allow() {
        let second = |allow: &str| {
            format!(
                "{MINIMAL}\n[[auth.credentials]]\naccess_key_id = \"AKIDNEXT\"\nsecret_env = \"S2\"\nprincipal = \"AKIDEXAMPLE\"\nallow = {allow}\n"
            )
        };
        let c: Config = toml::from_str(&second("[\"kms:*\"]")).unwrap();
        c.validate().unwrap();
        let c: Config = toml::from_str(&second("[\"kms:Decrypt\"]")).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("different"));
    }

    #[test]
    fn plain_http_off_loopback_needs_the_opt_in() {
        let c: Config = toml::from_str(MINIMAL).unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(c.check_transport("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(c.check_transport("[::1]:8080".parse().unwrap()).is_ok());
        let err = c.check_transport(any).unwrap_err().to_string();
        assert!(err.contains("insecure_plain_http"), "{err}");
        let c: Config = toml::from_str(&format!("insecure_plain_http = true\n{MINIMAL}")).unwrap();
        assert!(c.check_transport(any).is_ok());
        let tls = format!(
            "{MINIMAL}\n[tls]\ncert_chain_file = \"c.pem\"\nprivate_key_file = \"k.pem\"\n"
        );
        let c: Config = toml::from_str(&tls).unwrap();
        assert!(c.check_transport(any).is_ok());
    }

    #[test]
    fn client_cert_principal_needs_a_client_ca() {
        let tls = format!(
            "{MINIMAL}\n[tls]\ncert_chain_file = \"c.pem\"\nprivate_key_file = \"k.pem\"\nclient_cert_principal = true\n"
        );
        let c: Config = toml::from_str(&tls).unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn account_must_be_twelve_digits() {
        let text = format!("account_id = \"12345\"\n{MINIMAL}");
        let c: Config = toml::from_str(&text).unwrap();
        assert!(c.validate().is_err());
    }
}
