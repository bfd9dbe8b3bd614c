//! Server-side verification of AWS Signature Version 4.
//!
//! Real clients (the AWS SDKs, the CLI, the Encryption SDK) sign every request
//! with SigV4; kmsgate recomputes the signature from the request as received
//! and the secret in its config, and accepts the request only when the two
//! agree, the credential is scoped to this region and to `kms`, the request
//! time is within the allowed clock skew, and the signature covers what the
//! request does.
//!
//! The checks run in the order AWS runs them, because the order decides which
//! exception a client sees when several things are wrong: presence of the
//! authentication parameters, the date format, the clock skew, the headers
//! that must be signed (`host`, then `x-amz-date` and every other `x-amz-*`
//! header present), the algorithm, the credential scope, the access key id,
//! the payload hash, and last the signature itself.
//!
//! What must be signed, and why: `x-amz-target` names the operation, so a
//! signature that leaves it out could be replayed as any other operation;
//! the payload hash is always the SHA-256 of the body received
//! (`UNSIGNED-PAYLOAD` is refused), so the parameters cannot be changed
//! either. `content-type` need not be signed, as at AWS: the AWS SDK for
//! JavaScript v2 never signs it. The presigned form (`X-Amz-*` in the query
//! string) is refused unless the config enables it, and then obeys the same
//! rules.
//!
//! Modules: [`params`] reads the authentication parameters of either form,
//! [`dates`] the request time, [`canonical`] builds the canonical request
//! and decides what must be signed, [`verify`] checks time, scope and
//! signature with the cached signing keys; [`error`] names each refusal.

mod canonical;
mod dates;
mod error;
mod params;
mod verify;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use http::header::AUTHORIZATION;
use http::{HeaderMap, Method, Uri};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub use error::{DateMismatch, ScopeMismatch, SignatureError, UnsignedHeader};

use canonical::{canonical_request, check_signed_headers, payload_hash};
use dates::{format_amz_date, parse_amz_date, parse_http_date, unix_seconds};
use params::{DateSource, header_params, parse_query, query_params};
use verify::hmac_sha256;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service a TrentService request is signed for.
const SERVICE: &str = "kms";
const TERMINATOR: &str = "aws4_request";
const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
const X_AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";

/// An access key the gateway accepts, and the principal it authenticates.
pub struct Credential {
    pub access_key_id: String,
    pub secret: SecretString,
    pub principal: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"[REDACTED]")
            .field("principal", &self.principal)
            .finish()
    }
}

/// Who sent a request. Anonymous requests (only when the config allows them)
/// are `name: "anonymous"` with an empty access key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub access_key_id: String,
}

impl Principal {
    /// The principal of an unsigned request, when anonymous access is allowed.
    pub fn anonymous() -> Principal {
        Principal {
            name: "anonymous".to_owned(),
            access_key_id: String::new(),
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.access_key_id.is_empty()
    }
}

/// A derived SigV4 signing key: secret material, wiped on drop.
type SigningKey = Zeroizing<[u8; 32]>;

/// Verifies SigV4 signatures against a fixed set of credentials.
pub struct Verifier {
    credentials: HashMap<String, Credential>,
    region: String,
    /// The service of the credential scope: `kms`, or `kms-xks-proxy` for
    /// the XKS proxy API.
    service: String,
    /// The canonical URI is the path exactly as received (each segment
    /// encoded once more, but no empty or dot segment removed), as the XKS
    /// spec's Appendix A requires: an empty prefix is sent, and signed, as
    /// `//kms/xks/v1/...`.
    path_as_sent: bool,
    max_skew: Duration,
    allow_anonymous: bool,
    /// Whether the presigned form (authentication in the query string) is
    /// accepted at all.
    allow_presigned_urls: bool,
    /// Signing keys by (scope day as days since 1970-01-01, access key id).
    /// Deriving one costs four HMACs and it changes once a day, so caching it
    /// takes most of the work off every request. A std `Mutex` because it is
    /// held only for one map lookup or insert, never across an await. Only
    /// the days next to the newest one are kept (a request's scope day is
    /// within the clock skew of now), so the map holds at most three days'
    /// worth of keys for the configured credentials.
    signing_keys: Mutex<HashMap<(i64, String), SigningKey>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&str> = self.credentials.keys().map(String::as_str).collect();
        ids.sort_unstable();
        f.debug_struct("Verifier")
            .field("access_key_ids", &ids)
            .field("region", &self.region)
            .field("service", &self.service)
            .field("max_skew", &self.max_skew)
            .field("allow_anonymous", &self.allow_anonymous)
            .field("allow_presigned_urls", &self.allow_presigned_urls)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for the `kms` service in `region`, accepting the
    /// `Authorization` header form only. If two credentials share an access
    /// key id, the first one wins (the config rejects duplicates before this
    /// point).
    pub fn new(
        credentials: Vec<Credential>,
        region: String,
        max_skew: Duration,
        allow_anonymous: bool,
    ) -> Verifier {
        let mut by_id = HashMap::with_capacity(credentials.len());
        for credential in credentials {
            by_id
                .entry(credential.access_key_id.clone())
                .or_insert(credential);
        }
        Verifier {
            credentials: by_id,
            region,
            service: SERVICE.to_owned(),
            path_as_sent: false,
            max_skew,
            allow_anonymous,
            allow_presigned_urls: false,
            signing_keys: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies signatures scoped to `service` instead of `kms`.
    pub fn for_service(mut self, service: &str) -> Verifier {
        self.service = service.to_owned();
        self
    }

    /// Takes the canonical URI as the path was sent, without removing
    /// empty or dot segments (the XKS proxy API).
    pub fn path_as_sent(mut self) -> Verifier {
        self.path_as_sent = true;
        self
    }

    /// Accepts the presigned form (authentication in the query string) as
    /// well, under the same rules of what must be signed.
    pub fn allow_presigned_urls(mut self, allow: bool) -> Verifier {
        self.allow_presigned_urls = allow;
        self
    }

    /// Checks the request's SigV4 signature and returns who signed it.
    ///
    /// `headers`: the request's headers; `body`: the raw body bytes; `now`:
    /// the server clock.
    pub fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Principal, SignatureError> {
        let query = parse_query(uri.query().unwrap_or(""));
        let query_auth = query.iter().any(|(k, _)| k == b"X-Amz-Algorithm");
        let header_auth = headers.get(AUTHORIZATION);

        let params = match (header_auth, query_auth) {
            (Some(_), true) => return Err(SignatureError::HeaderAndQuery),
            (Some(value), false) => {
                let value = value.to_str().unwrap_or("");
                // AWS treats an Authorization header of another scheme as no
                // authentication at all.
                if !value.trim_start().starts_with("AWS4-") {
                    return self.unauthenticated();
                }
                header_params(value, headers)?
            }
            (None, true) if !self.allow_presigned_urls => {
                return Err(SignatureError::QueryAuthDisabled);
            }
            (None, true) => query_params(&query)?,
            (None, false) => return self.unauthenticated(),
        };

        let request_time = match params.date_source {
            DateSource::DateHeader => parse_http_date(&params.date),
            DateSource::AmzDateHeader | DateSource::Query => parse_amz_date(&params.date),
        }
        .ok_or_else(|| SignatureError::MalformedDate(params.date.clone()))?;
        // The string to sign always names the time in the basic format, even
        // when it came from a `Date` header.
        let amz_date = format_amz_date(request_time);
        self.check_time(request_time, unix_seconds(now), params.expires)?;

        let signed: Vec<String> = params
            .signed_headers
            .split(';')
            .map(str::to_ascii_lowercase)
            .collect();
        check_signed_headers(&signed, params.date_source, uri, headers)?;

        if params.algorithm != ALGORITHM {
            return Err(SignatureError::UnsupportedAlgorithm(params.algorithm));
        }

        let (access_key_id, scope_date) = self.check_scope(&params.credential, &amz_date)?;
        let credential = self
            .credentials
            .get(access_key_id)
            .ok_or(SignatureError::UnknownAccessKey)?;
        // kmsgate's credentials are long-term keys; a session token belongs to
        // some other issuer's temporary credentials and is never valid here.
        if headers.contains_key(X_AMZ_SECURITY_TOKEN)
            || query
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(X_AMZ_SECURITY_TOKEN.as_bytes()))
        {
            return Err(SignatureError::SessionToken);
        }

        let payload_hash = payload_hash(headers, &query, body)?;
        let canonical = canonical_request(
            method,
            uri,
            &query,
            headers,
            &signed,
            &params,
            &payload_hash,
            self.path_as_sent,
        );
        let scope = format!("{scope_date}/{}/{}/{TERMINATOR}", self.region, self.service);
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(&canonical))
        );

        let key = self.signing_key(credential, request_time.div_euclid(86_400), scope_date)?;
        let expected = hmac_sha256(key.as_slice(), string_to_sign.as_bytes())?;
        let provided = hex::decode(params.signature.as_bytes()).unwrap_or_default();
        if bool::from(expected.as_slice().ct_eq(provided.as_slice())) {
            Ok(Principal {
                name: credential.principal.clone(),
                access_key_id: credential.access_key_id.clone(),
            })
        } else {
            // Neither holds a secret, and they are what a client author needs
            // to find a signing bug.
            tracing::debug!(
                canonical_request = %String::from_utf8_lossy(&canonical),
                string_to_sign = %string_to_sign,
                "SigV4 signature mismatch"
            );
            Err(SignatureError::Mismatch)
        }
    }

    fn unauthenticated(&self) -> Result<Principal, SignatureError> {
        if self.allow_anonymous {
            Ok(Principal::anonymous())
        } else {
            Err(SignatureError::Missing)
        }
    }
}
