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
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota};
use http::{HeaderMap, Method, Uri};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

use super::sigv4::{Credential, SignatureError, Verifier};
use crate::config::{Config, ConfigError, XksEffect, XksRuleConfig, read_secret, valid_xks_secret};

/// The SigV4 service name of the XKS proxy API.
pub const XKS_SERVICE: &str = "kms-xks-proxy";
/// The clock skew Appendix A allows.
pub const XKS_MAX_SKEW: Duration = Duration::from_secs(300);
/// The rule a request is denied by when the store has allow rules and
/// none of them matches it (named in its audit record).
pub const NO_ALLOW_RULE: &str = "no allow rule matched";

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

/// One store's mTLS requirement: a verifier built from its CA alone, and
/// the subject name the leaf must carry.
struct StoreMtls {
    verifier: Arc<dyn ClientCertVerifier>,
    subject: String,
}

/// One store's credentials, mTLS requirement and authorization rules.
struct StoreAuth {
    verifier: Verifier,
    mtls: Option<StoreMtls>,
    rules: Vec<Rule>,
}

/// A store's request-rate limit: this process's share of
/// `max_requests_per_second`.
struct Limit {
    per_second: NonZeroU32,
    limiter: DefaultDirectRateLimiter,
}

/// The credentials of every XKS store, by store name, replaced whole on
/// reload; and the stores' rate limits, which a reload keeps unless the
/// store's rate changed (a SIGHUP grants no fresh burst).
pub struct XksAuth {
    stores: RwLock<Arc<HashMap<String, StoreAuth>>>,
    limits: RwLock<Arc<HashMap<String, Arc<Limit>>>>,
    /// The processes that serve the stores (`serve --workers N`): each
    /// enforces 1/N of a store's rate, rounded up.
    workers: u32,
}

impl std::fmt::Debug for XksAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XksAuth")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
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
        let mtls = match &store.mtls {
            Some(m) => Some(StoreMtls {
                verifier: store_verifier(&m.client_ca_file).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "xks store '{}': mtls.client_ca_file {}: {e}",
                        store.name,
                        m.client_ca_file.display()
                    ))
                })?,
                subject: m.subject.clone(),
            }),
            None => None,
        };
        let rules = store.authorization.iter().map(Rule::from).collect();
        out.insert(
            store.name.clone(),
            StoreAuth {
                verifier,
                mtls,
                rules,
            },
        );
    }
    Ok(out)
}

/// A client certificate verifier that accepts chains to the CAs in `path`
/// and nothing else (rustls/webpki's own checks: signatures, validity,
/// client-auth usage).
fn store_verifier(path: &std::path::Path) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read PEM certificates: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate found".into());
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    // ring, named as the listener names it (http/tls.rs).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())
}

/// The rate limits of `config`'s stores, each `workers`' share; a limit
/// whose rate is unchanged from `old` is kept as it is.
fn limits(
    config: &Config,
    workers: u32,
    old: &HashMap<String, Arc<Limit>>,
) -> HashMap<String, Arc<Limit>> {
    let mut out = HashMap::new();
    for store in &config.xks.stores {
        let share = store.max_requests_per_second.div_ceil(workers.max(1));
        let per_second = NonZeroU32::new(share).unwrap_or(NonZeroU32::MIN);
        let limit = match old.get(&store.name) {
            Some(l) if l.per_second == per_second => l.clone(),
            _ => Arc::new(Limit {
                per_second,
                limiter: DefaultDirectRateLimiter::direct(Quota::per_second(per_second)),
            }),
        };
        out.insert(store.name.clone(), limit);
    }
    out
}

impl XksAuth {
    /// Reads every store's secrets and mTLS CA; one process serves the
    /// stores.
    pub fn from_config(config: &Config) -> Result<XksAuth, ConfigError> {
        Self::for_workers(config, 1)
    }

    /// As [`from_config`](Self::from_config), in one of `workers` processes
    /// that share the stores' rate limits.
    pub fn for_workers(config: &Config, workers: usize) -> Result<XksAuth, ConfigError> {
        let workers = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
        Ok(XksAuth {
            stores: RwLock::new(Arc::new(build(config)?)),
            limits: RwLock::new(Arc::new(limits(config, workers, &HashMap::new()))),
            workers,
        })
    }

    /// Replaces every store's credentials, mTLS CA and rules with those of
    /// `config` (SIGHUP); on error the ones in use stay. Rate limits follow
    /// the new rates.
    pub fn reload(&self, config: &Config) -> Result<(), ConfigError> {
        let fresh = Arc::new(build(config)?);
        let old = self.current_limits();
        let fresh_limits = Arc::new(limits(config, self.workers, &old));
        *self.stores.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = fresh_limits;
        Ok(())
    }

    fn current(&self) -> Arc<HashMap<String, StoreAuth>> {
        self.stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn current_limits(&self) -> Arc<HashMap<String, Arc<Limit>>> {
        self.limits
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
    /// Else the chain must verify against the store's CA alone (whatever
    /// other CA the listener accepts at the handshake), and the leaf's
    /// subject CN or one of its DNS subjectAltNames must be the store's
    /// `subject` (compared without regard to ASCII case, as host names
    /// are).
    pub fn check_client_cert(
        &self,
        store: &str,
        chain: Option<&[CertificateDer<'static>]>,
    ) -> Result<(), XksAuthError> {
        let stores = self.current();
        let Some(mtls) = stores.get(store).and_then(|s| s.mtls.as_ref()) else {
            return Ok(());
        };
        let Some((leaf, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return Err(XksAuthError::ClientCert(
                "this key store requires a client certificate (mTLS) and none was presented".into(),
            ));
        };
        mtls.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| {
                XksAuthError::ClientCert(format!(
                    "the client certificate is not valid for this key store: {e}"
                ))
            })?;
        if !names_of(leaf)
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&mtls.subject))
        {
            return Err(XksAuthError::ClientCert(
                "the client certificate does not carry the subject name this key store requires"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Secondary authorization of a request to `store` (never of health):
    /// the first deny rule that matches refuses it, by name; then, if the
    /// store has allow rules, one must match, or the request is refused
    /// by [`NO_ALLOW_RULE`].
    pub fn authorize(&self, store: &str, facts: &RequestFacts<'_>) -> Result<(), XksAuthError> {
        let stores = self.current();
        let Some(s) = stores.get(store) else {
            return Ok(());
        };
        decide(&s.rules, facts)
    }

    /// Takes one request from the store's rate limit.
    pub fn throttle(&self, store: &str) -> Result<(), XksAuthError> {
        let limits = self.current_limits();
        match limits.get(store) {
            Some(l) if l.limiter.check().is_err() => Err(XksAuthError::Throttled),
            _ => Ok(()),
        }
    }
}

/// The leaf's subject common names and DNS subjectAltNames.
fn names_of(leaf: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    names
}

/// One secondary authorization rule, as configured.
struct Rule {
    name: String,
    effect: XksEffect,
    aws_principal_arn: Vec<String>,
    kms_via_service: Vec<String>,
    kms_operation: Vec<String>,
    aws_source_vpc: Vec<String>,
    aws_source_vpce: Vec<String>,
}

impl From<&XksRuleConfig> for Rule {
    fn from(r: &XksRuleConfig) -> Rule {
        Rule {
            name: r.name.clone(),
            effect: r.effect,
            aws_principal_arn: r.aws_principal_arn.clone(),
            kms_via_service: r.kms_via_service.clone(),
            kms_operation: r.kms_operation.clone(),
            aws_source_vpc: r.aws_source_vpc.clone(),
            aws_source_vpce: r.aws_source_vpce.clone(),
        }
    }
}

impl Rule {
    /// Every field the rule sets matches one of its patterns; a field the
    /// request lacks never matches a field the rule sets.
    fn matches(&self, facts: &RequestFacts<'_>) -> bool {
        let field = |patterns: &[String], value: Option<&str>| {
            patterns.is_empty() || value.is_some_and(|v| patterns.iter().any(|p| string_like(p, v)))
        };
        field(&self.aws_principal_arn, facts.aws_principal_arn)
            && field(&self.kms_via_service, facts.kms_via_service)
            && field(&self.kms_operation, facts.kms_operation)
            && field(&self.aws_source_vpc, facts.aws_source_vpc)
            && field(&self.aws_source_vpce, facts.aws_source_vpce)
    }
}

fn decide(rules: &[Rule], facts: &RequestFacts<'_>) -> Result<(), XksAuthError> {
    if let Some(r) = rules
        .iter()
        .find(|r| r.effect == XksEffect::Deny && r.matches(facts))
    {
        return Err(XksAuthError::Denied {
            rule: r.name.clone(),
        });
    }
    let mut allows = rules
        .iter()
        .filter(|r| r.effect == XksEffect::Allow)
        .peekable();
    if allows.peek().is_none() {
        return Ok(());
    }
    if allows.any(|r| r.matches(facts)) {
        Ok(())
    } else {
        Err(XksAuthError::Denied {
            rule: NO_ALLOW_RULE.into(),
        })
    }
}

/// IAM's StringLike: `*` matches any run of characters (none included),
/// `?` exactly one; everything else itself, case-sensitively.
fn string_like(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let (mut i, mut j) = (0, 0);
    // Where the last `*` was, and the value position it is trying to end at.
    let mut star: Option<(usize, usize)> = None;
    while j < v.len() {
        if i < p.len() && (p[i] == '?' || (p[i] != '*' && p[i] == v[j])) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{
        SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode, sign,
    };
    use aws_sigv4::sign::v4::SigningParams;

    use super::*;

    const KEY_A: &str = "AKIA4GBY3I6JCE5M2HPM";
    const KEY_B: &str = "BKIA4GBY3I6JCE5M2HPM";
    const SECRET_A: &str = "K3t2XHqBzqxgJZgBX1k1Lg7Yq9eSj0aC3x4W5b6N7m8=";
    const SECRET_B: &str = "L3t2XHqBzqxgJZgBX1k1Lg7Yq9eSj0aC3x4W5b6N7m8=";
    const REGION: &str = "eu-west-1";
    const BODY: &[u8] =
        br#"{"requestMetadata":{"kmsRequestId":"r","kmsOperation":"KmsHealthCheck"}}"#;
    /// 2026-01-01T00:00:00Z.
    const T0: u64 = 1_767_225_600;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A config with one store `s` (prefix "", two credentials from the
    /// environment) and `extra` appended to the store's table.
    fn config(extra: &str) -> Config {
        // SAFETY (test only): the variables are set to the same values by
        // every test that reads them.
        unsafe {
            std::env::set_var("XKS_UNIT_SECRET_A", SECRET_A);
            std::env::set_var("XKS_UNIT_SECRET_B", SECRET_B);
        }
        let text = format!(
            r#"
            [hsm]
            module = "/usr/lib/softhsm/libsofthsm2.so"
            token_label = "kmsgate"
            pin_env = "KMSGATE_PIN"
            [[xks.stores]]
            name = "s"
            path_prefix = ""
            region = "{REGION}"
            {extra}
            [[xks.stores.credentials]]
            access_key_id = "{KEY_A}"
            secret_env = "XKS_UNIT_SECRET_A"
            [[xks.stores.credentials]]
            access_key_id = "{KEY_B}"
            secret_env = "XKS_UNIT_SECRET_B"
            "#
        );
        toml::from_str(&text).unwrap()
    }

    struct Signed {
        key: &'static str,
        secret: &'static str,
        region: &'static str,
        service: &'static str,
        time: SystemTime,
        /// curl's `--aws-sigv4`: content-type signed, the port in Host.
        curl: bool,
        normalise: bool,
        path: &'static str,
    }

    impl Default for Signed {
        fn default() -> Self {
            Signed {
                key: KEY_A,
                secret: SECRET_A,
                region: REGION,
                service: XKS_SERVICE,
                time: at(T0),
                curl: false,
                normalise: false,
                path: "/kms/xks/v1/health",
            }
        }
    }

    impl Signed {
        /// Signs as AWS KMS does (`host;x-amz-date`, content-type added
        /// after signing), or as curl does.
        fn request(self) -> http::Request<Vec<u8>> {
            let identity = Credentials::new(self.key, self.secret, None, None, "t").into();
            let mut settings = SigningSettings::default();
            settings.uri_path_normalization_mode = if self.normalise {
                UriPathNormalizationMode::Enabled
            } else {
                UriPathNormalizationMode::Disabled
            };
            let params = SigningParams::builder()
                .identity(&identity)
                .region(self.region)
                .name(self.service)
                .time(self.time)
                .settings(settings)
                .build()
                .unwrap()
                .into();
            let host = if self.curl {
                "xks.example.com:8443"
            } else {
                "xks.example.com"
            };
            let mut request = http::Request::builder()
                .method("POST")
                .uri(format!("https://{host}{}", self.path))
                .header("host", host);
            if self.curl {
                request = request.header("content-type", "application/json");
            }
            let mut request = request.body(BODY.to_vec()).unwrap();
            let headers: Vec<(String, String)> = request
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            let signable = SignableRequest::new(
                "POST",
                request.uri().to_string(),
                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                SignableBody::Bytes(BODY),
            )
            .unwrap();
            let (instructions, _) = sign(signable, &params).unwrap().into_parts();
            instructions.apply_to_request_http1x(&mut request);
            if !self.curl {
                request
                    .headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
            }
            request
        }
    }

    fn signed_headers(request: &http::Request<Vec<u8>>) -> String {
        let auth = request.headers()["authorization"].to_str().unwrap();
        auth.split("SignedHeaders=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_owned()
    }

    fn check(
        auth: &XksAuth,
        request: &http::Request<Vec<u8>>,
        now: u64,
    ) -> Result<String, XksAuthError> {
        let uri: Uri = request.uri().path().parse().unwrap();
        auth.authenticate(
            "s",
            request.method(),
            &uri,
            request.headers(),
            request.body(),
            at(now),
        )
    }

    #[test]
    fn aws_and_curl_style_signatures_with_either_credential_are_accepted() {
        let auth = XksAuth::from_config(&config("")).unwrap();
        let aws = Signed::default().request();
        assert_eq!(signed_headers(&aws), "host;x-amz-date");
        assert_eq!(check(&auth, &aws, T0).unwrap(), KEY_A);
        let curl = Signed {
            curl: true,
            ..Signed::default()
        }
        .request();
        assert_eq!(signed_headers(&curl), "content-type;host;x-amz-date");
        assert_eq!(check(&auth, &curl, T0).unwrap(), KEY_A);
        let b = Signed {
            key: KEY_B,
            secret: SECRET_B,
            ..Signed::default()
        }
        .request();
        assert_eq!(check(&auth, &b, T0).unwrap(), KEY_B);
    }

    #[test]
    fn the_path_is_verified_as_sent() {
        let auth = XksAuth::from_config(&config("")).unwrap();
        let as_sent = Signed {
            path: "//kms/xks/v1/health",
            ..Signed::default()
        }
        .request();
        assert_eq!(check(&auth, &as_sent, T0).unwrap(), KEY_A);
        let normalised = Signed {
            path: "//kms/xks/v1/health",
            normalise: true,
            ..Signed::default()
        }
        .request();
        assert!(matches!(
            check(&auth, &normalised, T0),
            Err(XksAuthError::Signature(SignatureError::Mismatch))
        ));
    }

    #[test]
    fn scope_time_secret_body_and_key_are_checked() {
        let auth = XksAuth::from_config(&config("")).unwrap();
        let refused = |r: http::Request<Vec<u8>>, now: u64| {
            matches!(check(&auth, &r, now), Err(XksAuthError::Signature(_)))
        };
        assert!(refused(
            Signed {
                service: "kms",
                ..Signed::default()
            }
            .request(),
            T0
        ));
        assert!(refused(
            Signed {
                region: "us-east-1",
                ..Signed::default()
            }
            .request(),
            T0
        ));
        assert!(refused(
            Signed {
                secret: SECRET_B,
                ..Signed::default()
            }
            .request(),
            T0
        ));
        assert!(refused(
            Signed {
                key: "CKIA4GBY3I6JCE5M2HPM",
                ..Signed::default()
            }
            .request(),
            T0
        ));
        assert!(refused(Signed::default().request(), T0 + 360));
        assert!(refused(Signed::default().request(), T0 - 360));
        assert!(!refused(Signed::default().request(), T0 + 290));
        let mut tampered = Signed::default().request();
        tampered.body_mut()[3] ^= 1;
        assert!(refused(tampered, T0));
        // An unknown store authenticates nobody.
        let r = Signed::default().request();
        let uri: Uri = r.uri().path().parse().unwrap();
        assert!(
            auth.authenticate("other", r.method(), &uri, r.headers(), r.body(), at(T0))
                .is_err()
        );
    }

    #[test]
    fn a_kms_signature_never_verifies_for_xks_nor_the_reverse() {
        // The TrentService verifier, with the same credential and region.
        let kms = Verifier::new(
            vec![Credential {
                access_key_id: KEY_A.into(),
                secret: secrecy::SecretString::from(SECRET_A),
                principal: "a".into(),
            }],
            REGION.into(),
            XKS_MAX_SKEW,
            false,
        );
        let xks_signed = Signed::default().request();
        let uri: Uri = xks_signed.uri().path().parse().unwrap();
        assert!(matches!(
            kms.verify(
                xks_signed.method(),
                &uri,
                xks_signed.headers(),
                xks_signed.body(),
                at(T0)
            ),
            Err(SignatureError::Scope(_))
        ));
        let kms_signed = Signed {
            service: "kms",
            ..Signed::default()
        }
        .request();
        assert!(
            kms.verify(
                kms_signed.method(),
                &uri,
                kms_signed.headers(),
                kms_signed.body(),
                at(T0)
            )
            .is_ok()
        );
        let auth = XksAuth::from_config(&config("")).unwrap();
        assert!(matches!(
            check(&auth, &kms_signed, T0),
            Err(XksAuthError::Signature(SignatureError::Scope(_)))
        ));
    }

    #[test]
    fn a_reload_swaps_the_credentials_and_a_failed_one_keeps_them() {
        let auth = XksAuth::from_config(&config("")).unwrap();
        let b = Signed {
            key: KEY_B,
            secret: SECRET_B,
            ..Signed::default()
        }
        .request();
        assert!(check(&auth, &b, T0).is_ok());
        let only_a = config("").xks.stores.into_iter().map(|mut s| {
            s.credentials.truncate(1);
            s
        });
        let mut c = config("");
        c.xks.stores = only_a.collect();
        auth.reload(&c).unwrap();
        assert!(check(&auth, &b, T0).is_err());
        assert!(check(&auth, &Signed::default().request(), T0).is_ok());
        let mut broken = config("");
        broken.xks.stores[0].credentials[1].secret_env = Some("XKS_UNIT_NO_SUCH_VARIABLE".into());
        assert!(auth.reload(&broken).is_err());
        assert!(
            check(&auth, &b, T0).is_err(),
            "the failed reload changed nothing"
        );
        assert!(check(&auth, &Signed::default().request(), T0).is_ok());
    }

    #[test]
    fn string_like_matches_as_iam_does() {
        assert!(string_like("*", ""));
        assert!(string_like("*", "anything"));
        assert!(string_like(
            "ec2.*.amazonaws.com",
            "ec2.us-east-1.amazonaws.com"
        ));
        assert!(!string_like(
            "ec2.*.amazonaws.com",
            "s3.us-east-1.amazonaws.com"
        ));
        assert!(string_like("a?c", "abc"));
        assert!(!string_like("a?c", "ac"));
        assert!(!string_like("a?c", "abbc"));
        assert!(string_like("*role/Admin*", "arn:aws:iam::1:role/AdminOps"));
        assert!(
            !string_like("*role/admin*", "arn:aws:iam::1:role/AdminOps"),
            "case-sensitive"
        );
        assert!(string_like("a*b*c", "aXbYbZc"));
        assert!(!string_like("a*b*c", "aXbYbZ"));
        assert!(string_like("exact", "exact"));
        assert!(!string_like("exact", "exactly"));
        assert!(!string_like("exactly", "exact"));
        assert!(string_like("**?", "x"));
    }

    fn rule(name: &str, effect: XksEffect) -> Rule {
        Rule {
            name: name.into(),
            effect,
            aws_principal_arn: vec![],
            kms_via_service: vec![],
            kms_operation: vec![],
            aws_source_vpc: vec![],
            aws_source_vpce: vec![],
        }
    }

    fn denied_by(r: Result<(), XksAuthError>) -> Option<String> {
        match r {
            Ok(()) => None,
            Err(XksAuthError::Denied { rule }) => Some(rule),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn deny_rules_come_first_then_one_allow_rule_must_match() {
        let facts = RequestFacts {
            aws_principal_arn: Some("arn:aws:iam::111122223333:role/App"),
            kms_via_service: Some("s3.eu-west-1.amazonaws.com"),
            kms_operation: Some("Encrypt"),
            ..RequestFacts::default()
        };
        // No rules: allowed.
        assert_eq!(denied_by(decide(&[], &facts)), None);
        let mut allow_s3 = rule("allow-s3", XksEffect::Allow);
        allow_s3.kms_via_service = vec!["s3.*.amazonaws.com".into(), "ebs.*".into()];
        let mut deny_app = rule("deny-app", XksEffect::Deny);
        deny_app.aws_principal_arn = vec!["arn:aws:iam::*:role/Ap?".into()];
        let mut deny_later = rule("deny-later", XksEffect::Deny);
        deny_later.kms_operation = vec!["*".into()];
        assert_eq!(
            denied_by(decide(std::slice::from_ref(&allow_s3), &facts)),
            None
        );
        let rules = [allow_s3, deny_app, deny_later];
        assert_eq!(
            denied_by(decide(&rules, &facts)).as_deref(),
            Some("deny-app")
        );
        let other = RequestFacts {
            aws_principal_arn: Some("arn:aws:iam::111122223333:role/Batch"),
            ..facts
        };
        assert_eq!(
            denied_by(decide(&rules, &other)).as_deref(),
            Some("deny-later")
        );
        let rules = &rules[..1];
        // An allow rule set: a request it does not match is denied.
        let rds = RequestFacts {
            kms_via_service: Some("rds.eu-west-1.amazonaws.com"),
            ..facts
        };
        assert_eq!(
            denied_by(decide(rules, &rds)).as_deref(),
            Some(NO_ALLOW_RULE)
        );
        // An absent field never matches a rule that sets it.
        let direct = RequestFacts {
            kms_via_service: None,
            ..facts
        };
        assert_eq!(
            denied_by(decide(rules, &direct)).as_deref(),
            Some(NO_ALLOW_RULE)
        );
        // Every field a rule sets must match.
        let mut both = rule("both", XksEffect::Allow);
        both.kms_via_service = vec!["s3.*".into()];
        both.aws_source_vpc = vec!["vpc-1*".into()];
        assert_eq!(
            denied_by(decide(std::slice::from_ref(&both), &facts)).as_deref(),
            Some(NO_ALLOW_RULE)
        );
        let in_vpc = RequestFacts {
            aws_source_vpc: Some("vpc-123"),
            ..facts
        };
        assert_eq!(
            denied_by(decide(std::slice::from_ref(&both), &in_vpc)),
            None
        );
    }

    #[test]
    fn rules_come_from_the_config_and_unknown_stores_are_not_judged() {
        let auth = XksAuth::from_config(&config(
            r#"[[xks.stores.authorization]]
            name = "no-ebs"
            effect = "deny"
            kms_via_service = ["ebs.*"]"#,
        ))
        .unwrap();
        let ebs = RequestFacts {
            kms_via_service: Some("ebs.eu-west-1.amazonaws.com"),
            ..RequestFacts::default()
        };
        assert_eq!(
            denied_by(auth.authorize("s", &ebs)).as_deref(),
            Some("no-ebs")
        );
        assert_eq!(
            denied_by(auth.authorize("s", &RequestFacts::default())),
            None
        );
    }

    #[test]
    fn the_rate_limit_is_the_workers_share_and_survives_an_unchanged_reload() {
        let c = config("max_requests_per_second = 5");
        let one = XksAuth::from_config(&c).unwrap();
        let passed = (0..50).filter(|_| one.throttle("s").is_ok()).count();
        assert!((5..=6).contains(&passed), "{passed}");
        one.reload(&c).unwrap();
        assert!(one.throttle("s").is_err(), "a reload grants no fresh burst");
        // 5 over 2 workers: 3 each.
        let share = XksAuth::for_workers(&c, 2).unwrap();
        let passed = (0..50).filter(|_| share.throttle("s").is_ok()).count();
        assert!((3..=4).contains(&passed), "{passed}");
        assert!(share.throttle("unknown").is_ok());
    }

    mod mtls {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, SanType,
        };

        use super::*;

        struct Ca {
            issuer: Issuer<'static, KeyPair>,
            pem: String,
        }

        fn ca(name: &str) -> Ca {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::default();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.self_signed(&key).unwrap();
            Ca {
                pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        fn leaf(ca: &Ca, cn: &str, dns: &[&str]) -> Vec<CertificateDer<'static>> {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.subject_alt_names = dns
                .iter()
                .map(|d| SanType::DnsName((*d).try_into().unwrap()))
                .collect();
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &ca.issuer).unwrap();
            vec![cert.der().clone()]
        }

        #[test]
        fn the_chain_must_reach_the_stores_ca_and_name_its_subject() {
            let dir = tempfile::tempdir().unwrap();
            let right = ca("right CA");
            let other = ca("other CA");
            let path = dir.path().join("ca.pem");
            std::fs::write(&path, &right.pem).unwrap();
            let c = config(&format!(
                "[xks.stores.mtls]\nclient_ca_file = \"{}\"\nsubject = \"cks.kms.eu-west-1.amazonaws.com\"",
                path.display()
            ));
            let auth = XksAuth::from_config(&c).unwrap();
            let ok = |chain: Vec<CertificateDer<'static>>| {
                auth.check_client_cert("s", Some(&chain)).is_ok()
            };
            assert!(ok(leaf(&right, "cks.kms.eu-west-1.amazonaws.com", &[])));
            assert!(ok(leaf(
                &right,
                "someone",
                &["cks.kms.eu-west-1.amazonaws.com"]
            )));
            assert!(!ok(leaf(&right, "cks.kms.us-east-1.amazonaws.com", &[])));
            assert!(!ok(leaf(&other, "cks.kms.eu-west-1.amazonaws.com", &[])));
            assert!(matches!(
                auth.check_client_cert("s", None),
                Err(XksAuthError::ClientCert(_))
            ));
            assert!(matches!(
                auth.check_client_cert("s", Some(&[])),
                Err(XksAuthError::ClientCert(_))
            ));
            // A store without [mtls] asks nothing.
            let plain = XksAuth::from_config(&config("")).unwrap();
            assert!(plain.check_client_cert("s", None).is_ok());
            // A CA file that does not load fails the build (and a reload).
            std::fs::write(&path, "not a certificate").unwrap();
            assert!(XksAuth::from_config(&c).is_err());
            assert!(auth.reload(&c).is_err());
            assert!(ok(leaf(&right, "cks.kms.eu-west-1.amazonaws.com", &[])));
        }
    }
}
