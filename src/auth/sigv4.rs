//! Server-side verification of AWS Signature Version 4.
//!
//! Real clients (the AWS SDKs, the CLI, the Encryption SDK) sign every request
//! with SigV4; kmsgate recomputes the signature from the request as received
//! and the secret in its config, and accepts the request only when the two
//! agree, the credential is scoped to this region and to `kms`, and the
//! request time is within the allowed clock skew.
//!
//! The checks run in the order AWS runs them, because the order decides which
//! exception a client sees when several things are wrong: presence of the
//! authentication parameters, the date format, the clock skew, `host` among
//! the signed headers, the algorithm, the credential scope, the access key id,
//! and last the signature itself.
//!
//! Both forms of SigV4 are accepted: the `Authorization` header, and the
//! presigned form with `X-Amz-Algorithm`, `X-Amz-Signature`, ... in the query
//! string.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use http::header::{AUTHORIZATION, DATE};
use http::{HeaderMap, Method, Uri};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::KmsError;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "kms";
const TERMINATOR: &str = "aws4_request";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
const X_AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";
/// AWS caps presigned requests at one week.
const MAX_PRESIGN_EXPIRES_SECS: u64 = 604_800;

const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the \
     signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
     service documentation for details.";

type HmacSha256 = Hmac<Sha256>;

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
    max_skew: Duration,
    allow_anonymous: bool,
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
            .field("max_skew", &self.max_skew)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}

/// Where the request time came from: it decides how the string to sign
/// names it and which header must be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateSource {
    AmzDateHeader,
    DateHeader,
    Query,
}

/// The authentication parameters of a request, from either form.
struct AuthParams {
    algorithm: String,
    credential: String,
    signed_headers: String,
    signature: String,
    date: String,
    date_source: DateSource,
    /// `X-Amz-Expires` of a presigned request.
    expires: Option<u64>,
}

impl Verifier {
    /// A verifier for the `kms` service in `region`. If two credentials share
    /// an access key id, the first one wins (the config rejects duplicates
    /// before this point).
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
            max_skew,
            allow_anonymous,
            signing_keys: Mutex::new(HashMap::new()),
        }
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
    ) -> Result<Principal, KmsError> {
        let query = parse_query(uri.query().unwrap_or(""));
        let query_auth = query.iter().any(|(k, _)| k == b"X-Amz-Algorithm");
        let header_auth = headers.get(AUTHORIZATION);

        let params = match (header_auth, query_auth) {
            (Some(_), true) => {
                return Err(KmsError::InvalidSignature(
                    "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' \
                     as HTTP header."
                        .into(),
                ));
            }
            (Some(value), false) => {
                let value = value.to_str().unwrap_or("");
                // AWS treats an Authorization header of another scheme as no
                // authentication at all.
                if !value.trim_start().starts_with("AWS4-") {
                    return self.unauthenticated();
                }
                header_params(value, headers)?
            }
            (None, true) => query_params(&query)?,
            (None, false) => return self.unauthenticated(),
        };

        let request_time = match params.date_source {
            DateSource::DateHeader => parse_http_date(&params.date),
            DateSource::AmzDateHeader | DateSource::Query => parse_amz_date(&params.date),
        }
        .ok_or_else(|| {
            KmsError::IncompleteSignature(format!(
                "Date must be in ISO-8601 'basic format'. Got '{}'. See \
                 http://en.wikipedia.org/wiki/ISO_8601",
                params.date
            ))
        })?;
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
            return Err(KmsError::IncompleteSignature(format!(
                "Unsupported AWS 'algorithm': '{}' (only {ALGORITHM} for now). ",
                params.algorithm
            )));
        }

        let (access_key_id, scope_date) = self.check_scope(&params.credential, &amz_date)?;
        let credential = self
            .credentials
            .get(access_key_id)
            .ok_or(KmsError::UnrecognizedClient)?;
        // kmsgate's credentials are long-term keys; a session token belongs to
        // some other issuer's temporary credentials and is never valid here.
        if headers.contains_key(X_AMZ_SECURITY_TOKEN)
            || query
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(X_AMZ_SECURITY_TOKEN.as_bytes()))
        {
            return Err(KmsError::UnrecognizedClient);
        }

        let payload_hash = payload_hash(headers, body)?;
        let canonical = canonical_request(
            method,
            uri,
            &query,
            headers,
            &signed,
            &params,
            &payload_hash,
        );
        let scope = format!("{scope_date}/{}/{SERVICE}/{TERMINATOR}", self.region);
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
            Err(KmsError::InvalidSignature(SIGNATURE_MISMATCH.into()))
        }
    }

    fn unauthenticated(&self) -> Result<Principal, KmsError> {
        if self.allow_anonymous {
            Ok(Principal::anonymous())
        } else {
            Err(KmsError::MissingAuthenticationToken(
                "Missing Authentication Token".into(),
            ))
        }
    }

    /// The request time must be within the skew of now, in both directions;
    /// a presigned request may instead be as old as its `X-Amz-Expires`.
    fn check_time(&self, request: i64, now: i64, expires: Option<u64>) -> Result<(), KmsError> {
        let skew = i64::try_from(self.max_skew.as_secs()).unwrap_or(i64::MAX);
        let max_age = expires.map_or(skew, |e| i64::try_from(e).unwrap_or(i64::MAX));
        let earliest = now.saturating_sub(max_age);
        if request < earliest {
            return Err(KmsError::InvalidSignature(format!(
                "Signature expired: {} is now earlier than {} ({} - {}.)",
                format_amz_date(request),
                format_amz_date(earliest),
                format_amz_date(now),
                window_text(max_age),
            )));
        }
        let latest = now.saturating_add(skew);
        if request > latest {
            return Err(KmsError::InvalidSignature(format!(
                "Signature not yet current: {} is still later than {} ({} + {}.)",
                format_amz_date(request),
                format_amz_date(latest),
                format_amz_date(now),
                window_text(skew),
            )));
        }
        Ok(())
    }

    /// Splits `keyid/date/region/service/terminator` and checks the scope.
    /// Returns the access key id and the scope date.
    fn check_scope<'a>(
        &self,
        credential: &'a str,
        amz_date: &str,
    ) -> Result<(&'a str, &'a str), KmsError> {
        let parts: Vec<&str> = credential.trim_end_matches('/').split('/').collect();
        let [key_id, date, region, service, terminator] = parts[..] else {
            return Err(KmsError::IncompleteSignature(format!(
                "Credential must have exactly 5 slash-delimited elements, e.g. \
                 keyid/date/region/service/term, got '{credential}'"
            )));
        };
        // AWS reports every scope problem at once.
        let mut msg = String::new();
        if region != self.region {
            msg.push_str("Credential should be scoped to a valid region. ");
        }
        if service != SERVICE {
            msg.push_str("Credential should be scoped to correct service: 'kms'. ");
        }
        if terminator != TERMINATOR {
            msg.push_str(&format!(
                "Credential should be scoped with a valid terminator: '{TERMINATOR}', not \
                 '{terminator}'. "
            ));
        }
        let request_day = amz_date.get(..8).unwrap_or(amz_date);
        if date != request_day {
            msg.push_str(&format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
                 from HTTP: '{date}' != '{request_day}', from '{amz_date}'."
            ));
        }
        if msg.is_empty() {
            Ok((key_id, date))
        } else {
            Err(KmsError::InvalidSignature(msg))
        }
    }

    /// The signing key of `credential` for one scope day, from the cache or
    /// derived and cached.
    fn signing_key(
        &self,
        credential: &Credential,
        day: i64,
        scope_date: &str,
    ) -> Result<SigningKey, KmsError> {
        let cache_key = (day, credential.access_key_id.clone());
        // A poisoned lock only means another thread panicked mid-insert; every
        // entry is written whole, so the map is still sound.
        if let Some(key) = self
            .signing_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cache_key)
        {
            return Ok(key.clone());
        }

        let mut seed = Zeroizing::new(Vec::with_capacity(4 + 64));
        seed.extend_from_slice(b"AWS4");
        seed.extend_from_slice(credential.secret.expose_secret().as_bytes());
        let k_date = Zeroizing::new(hmac_sha256(&seed, scope_date.as_bytes())?);
        let k_region = Zeroizing::new(hmac_sha256(k_date.as_slice(), self.region.as_bytes())?);
        let k_service = Zeroizing::new(hmac_sha256(k_region.as_slice(), SERVICE.as_bytes())?);
        let key = Zeroizing::new(hmac_sha256(k_service.as_slice(), TERMINATOR.as_bytes())?);

        let mut cache = self.signing_keys.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|(d, _), _| (d - day).abs() <= 1);
        cache.insert(cache_key, key.clone());
        Ok(key)
    }
}

/// The parameters of an `Authorization: AWS4-HMAC-SHA256 Credential=...,
/// SignedHeaders=..., Signature=...` header, plus the request date.
fn header_params(value: &str, headers: &HeaderMap) -> Result<AuthParams, KmsError> {
    let value = value.trim();
    let (algorithm, rest) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((value, ""));
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, val)) = part.split_once('=') else {
            return Err(KmsError::IncompleteSignature(format!(
                "'{part}' not a valid key=value pair (missing equal-sign) in Authorization \
                 header: '{}'.",
                redact_signature(value)
            )));
        };
        let slot = match key.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => continue,
        };
        slot.get_or_insert(val.trim().to_owned());
    }

    let mut msg = String::new();
    let credential = credential.filter(|c| !c.is_empty());
    let signature = signature.filter(|s| !s.is_empty());
    if credential.is_none() {
        msg.push_str("Authorization header requires 'Credential' parameter. ");
    }
    // An empty SignedHeaders passes here and fails the `host` check later, as
    // with AWS.
    if signed_headers.is_none() {
        msg.push_str("Authorization header requires 'SignedHeaders' parameter. ");
    }
    if signature.is_none() {
        msg.push_str("Authorization header requires 'Signature' parameter. ");
    }
    let date = match (headers.get(X_AMZ_DATE), headers.get(DATE)) {
        (Some(v), _) => Some((v, DateSource::AmzDateHeader)),
        (None, Some(v)) => Some((v, DateSource::DateHeader)),
        (None, None) => {
            msg.push_str(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
                 header. ",
            );
            None
        }
    };
    match (credential, signed_headers, signature, date) {
        (Some(credential), Some(signed_headers), Some(signature), Some((date, date_source)))
            if msg.is_empty() =>
        {
            Ok(AuthParams {
                algorithm: algorithm.to_owned(),
                credential,
                signed_headers,
                signature,
                date: String::from_utf8_lossy(date.as_bytes()).into_owned(),
                date_source,
                expires: None,
            })
        }
        _ => Err(KmsError::IncompleteSignature(format!(
            "{msg}Authorization={}",
            redact_signature(value)
        ))),
    }
}

/// The header as echoed in error messages: it holds no secret, but the
/// signature is of no use to anyone reading an error.
fn redact_signature(value: &str) -> String {
    value
        .split(',')
        .map(|part| match part.trim_start().strip_prefix("Signature=") {
            Some(_) => {
                let indent = &part[..part.len() - part.trim_start().len()];
                format!("{indent}Signature=[redacted]")
            }
            None => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The parameters of a presigned request (`X-Amz-*` in the query string).
fn query_params(query: &[(Vec<u8>, Vec<u8>)]) -> Result<AuthParams, KmsError> {
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .filter(|v| !v.is_empty())
    };
    let mut msg = String::new();
    let mut require = |name: &str| {
        let value = get(name);
        if value.is_none() {
            msg.push_str(&format!(
                "AWS query-string parameters must include '{name}'. "
            ));
        }
        value
    };
    let algorithm = require("X-Amz-Algorithm");
    let credential = require("X-Amz-Credential");
    let signature = require("X-Amz-Signature");
    let signed_headers = require("X-Amz-SignedHeaders");
    let date = require("X-Amz-Date");
    let (Some(algorithm), Some(credential), Some(signature), Some(signed_headers), Some(date)) =
        (algorithm, credential, signature, signed_headers, date)
    else {
        return Err(KmsError::IncompleteSignature(format!(
            "{msg}Re-examine the query-string parameters."
        )));
    };
    let expires = match get("X-Amz-Expires") {
        None => None,
        Some(raw) => match raw.parse::<u64>() {
            Ok(secs) if secs <= MAX_PRESIGN_EXPIRES_SECS => Some(secs),
            Ok(_) => {
                return Err(KmsError::IncompleteSignature(format!(
                    "X-Amz-Expires must be less than a week (in seconds) that is \
                     {MAX_PRESIGN_EXPIRES_SECS}"
                )));
            }
            Err(_) => {
                return Err(KmsError::IncompleteSignature(
                    "X-Amz-Expires should be a number".into(),
                ));
            }
        },
    };
    Ok(AuthParams {
        algorithm,
        credential,
        signed_headers,
        signature,
        date,
        date_source: DateSource::Query,
        expires,
    })
}

/// `host` must be signed (so a request cannot be replayed against another
/// endpoint), so must `x-amz-date` when it carries the time, and every signed
/// header must be present.
fn check_signed_headers(
    signed: &[String],
    date_source: DateSource,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), KmsError> {
    if !signed.iter().any(|h| h == "host") {
        return Err(KmsError::InvalidSignature(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    if date_source == DateSource::AmzDateHeader && !signed.iter().any(|h| h == X_AMZ_DATE) {
        return Err(KmsError::InvalidSignature(
            "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    for name in signed {
        // Over HTTP/2 the host travels as `:authority`, which `http` keeps in
        // the URI rather than among the headers.
        let present =
            headers.contains_key(name.as_str()) || (name == "host" && uri.authority().is_some());
        if !present {
            return Err(KmsError::IncompleteSignature(format!(
                "'{name}' is named as a SignedHeader, but it does not exist in the HTTP request."
            )));
        }
    }
    Ok(())
}

/// The payload hash of the canonical request. The body is always hashed, so
/// a stated `x-amz-content-sha256` must match it; `UNSIGNED-PAYLOAD` is the
/// one value that opts out, and is then what the client signed.
fn payload_hash(headers: &HeaderMap, body: &[u8]) -> Result<String, KmsError> {
    let stated = headers.get(X_AMZ_CONTENT_SHA256).map(|v| v.as_bytes());
    if stated == Some(UNSIGNED_PAYLOAD.as_bytes()) {
        return Ok(UNSIGNED_PAYLOAD.to_owned());
    }
    let computed = hex::encode(Sha256::digest(body));
    match stated {
        Some(stated) if !stated.eq_ignore_ascii_case(computed.as_bytes()) => {
            Err(KmsError::InvalidSignature(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .into(),
            ))
        }
        _ => Ok(computed),
    }
}

/// The SigV4 canonical request, as bytes because header values may hold
/// non-UTF-8 octets that the client signed as they are.
fn canonical_request(
    method: &Method,
    uri: &Uri,
    query: &[(Vec<u8>, Vec<u8>)],
    headers: &HeaderMap,
    signed: &[String],
    params: &AuthParams,
    payload_hash: &str,
) -> Vec<u8> {
    let presigned = params.date_source == DateSource::Query;
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri(uri.path()).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query(query, presigned).as_bytes());
    out.push(b'\n');
    for name in signed {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        let mut first = true;
        for value in headers.get_all(name.as_str()) {
            if !first {
                out.push(b',');
            }
            first = false;
            push_trimmed(&mut out, value.as_bytes());
        }
        if first
            && name == "host"
            && let Some(authority) = uri.authority()
        {
            out.extend_from_slice(authority.as_str().as_bytes());
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    // The list exactly as the client sent it: that is what it signed.
    out.extend_from_slice(params.signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

/// Appends a header value trimmed, with runs of spaces collapsed to one.
fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ws(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |i| i + 1);
    let mut previous_space = false;
    for &b in &value[start..end] {
        if b == b' ' {
            if previous_space {
                continue;
            }
            previous_space = true;
        } else {
            previous_space = false;
        }
        out.push(b);
    }
}

/// The canonical URI of a non-S3 service: the path as received, with dot and
/// empty segments removed, each segment URI-encoded once more (so `%20`
/// becomes `%2520`, as the AWS SDKs sign it). For KMS it is always `/`.
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for segment in &segments {
        out.push('/');
        uri_encode(segment.as_bytes(), &mut out);
    }
    let ends_with_slash = ["/", "/.", "/.."].iter().any(|s| path.ends_with(s));
    if out.is_empty() || (ends_with_slash && !out.ends_with('/')) {
        out.push('/');
    }
    out
}

/// The canonical query string: every parameter (except the signature of a
/// presigned request) decoded, re-encoded strictly and sorted.
fn canonical_query(query: &[(Vec<u8>, Vec<u8>)], presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| !(presigned && k == b"X-Amz-Signature"))
        .map(|(k, v)| {
            let (mut key, mut value) = (String::new(), String::new());
            uri_encode(k, &mut key);
            uri_encode(v, &mut value);
            (key, value)
        })
        .collect();
    pairs.sort_unstable();
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Splits a raw query string into percent-decoded pairs. `+` is kept as it
/// is: SigV4 clients encode a space as `%20`.
fn parse_query(query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes; a malformed escape stays as it is (and then cannot
/// match what the client signed).
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Both digits are checked: `from_str_radix` alone would take "+1".
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && hex.iter().all(u8::is_ascii_hexdigit)
            && let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(hex), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// SigV4's URI encoding: everything but `A-Z a-z 0-9 - _ . ~` as `%XX`,
/// upper-case hex.
fn uri_encode(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<[u8; 32], KmsError> {
    // HMAC takes keys of any length, so this error cannot happen; it is
    // mapped rather than unwrapped to keep the server free of panics.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key)
        .map_err(|_| KmsError::Internal("HMAC key rejected".into()))?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().into())
}

/// "5 min" for whole minutes (as AWS words it), else seconds.
fn window_text(secs: i64) -> String {
    if secs % 60 == 0 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} sec")
    }
}

// ---- Calendar arithmetic (proleptic Gregorian, UTC) ----
//
// Hand-written so that a date parser is not a dependency of the hot path; the
// day count is the classic era-based conversion (400-year eras of 146097
// days, years starting in March so the leap day falls at a year's end).

/// Seconds since 1970-01-01T00:00:00Z, negative before it.
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Days since 1970-01-01 of a civil date (`month` 1–12, `day` 1–31).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Seconds since the epoch of a validated civil date and time.
fn to_unix(date: (i64, u32, u32), time: (u32, u32, u32)) -> Option<i64> {
    let (year, month, day) = date;
    let (hour, minute, second) = time;
    let valid = (1..=12).contains(&month)
        && day >= 1
        && day <= days_in_month(year, month)
        && hour < 24
        && minute < 60
        && second < 60;
    valid.then(|| {
        days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second)
    })
}

/// The decimal value of an all-digit slice.
fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |n, d| {
        n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

/// Parses SigV4's `YYYYMMDDTHHMMSSZ` into seconds since the epoch.
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    to_unix(
        (
            i64::from(digits(&b[0..4])?),
            digits(&b[4..6])?,
            digits(&b[6..8])?,
        ),
        (digits(&b[9..11])?, digits(&b[11..13])?, digits(&b[13..15])?),
    )
}

/// Formats seconds since the epoch as SigV4's `YYYYMMDDTHHMMSSZ`.
fn format_amz_date(secs: i64) -> String {
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses an HTTP `Date` header in the IMF-fixdate form
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form HTTP/1.1 senders use.
fn parse_http_date(s: &str) -> Option<i64> {
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    const WEEKDAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    let b = s.as_bytes();
    let shape_ok = b.len() == 29
        && WEEKDAYS.contains(&&b[0..3])
        && &b[3..5] == b", "
        && b[7] == b' '
        && b[11] == b' '
        && b[16] == b' '
        && b[19] == b':'
        && b[22] == b':'
        && &b[25..] == b" GMT";
    if !shape_ok {
        return None;
    }
    let month = MONTHS.iter().position(|m| *m == &b[8..11])? as u32 + 1;
    to_unix(
        (i64::from(digits(&b[12..16])?), month, digits(&b[5..7])?),
        (
            digits(&b[17..19])?,
            digits(&b[20..22])?,
            digits(&b[23..25])?,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{
        PayloadChecksumKind, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
        sign,
    };
    use aws_sigv4::sign::v4::SigningParams;

    const ACCESS_KEY: &str = "AKIDKMSGATETEST";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYKMSGATEKEY";
    const REGION: &str = "us-east-1";
    const BODY: &[u8] = b"{}";
    /// 2026-01-01T00:00:00Z.
    const T0: u64 = 1_767_225_600;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn verifier(allow_anonymous: bool) -> Verifier {
        Verifier::new(
            vec![Credential {
                access_key_id: ACCESS_KEY.into(),
                secret: SecretString::from(SECRET),
                principal: "alice".into(),
            }],
            REGION.into(),
            Duration::from_secs(300),
            allow_anonymous,
        )
    }

    /// How the test client signs; the defaults are what the AWS SDK for KMS
    /// does.
    struct Signer {
        access_key: &'static str,
        secret: &'static str,
        region: &'static str,
        service: &'static str,
        time: SystemTime,
        body: &'static [u8],
        signable_body: Option<SignableBody<'static>>,
        settings: SigningSettings,
    }

    impl Default for Signer {
        fn default() -> Self {
            Signer {
                access_key: ACCESS_KEY,
                secret: SECRET,
                region: REGION,
                service: "kms",
                time: at(T0),
                body: BODY,
                signable_body: None,
                settings: SigningSettings::default(),
            }
        }
    }

    impl Signer {
        /// `POST /` for ListKeys, signed with the `aws-sigv4` crate.
        fn request(self) -> http::Request<Vec<u8>> {
            let identity =
                Credentials::new(self.access_key, self.secret, None, None, "test").into();
            let params = SigningParams::builder()
                .identity(&identity)
                .region(self.region)
                .name(self.service)
                .time(self.time)
                .settings(self.settings)
                .build()
                .unwrap()
                .into();
            let mut request = http::Request::builder()
                .method("POST")
                .uri("http://127.0.0.1:8080/")
                .header("content-type", "application/x-amz-json-1.1")
                .header("x-amz-target", "TrentService.ListKeys")
                .header("host", "127.0.0.1:8080")
                .body(self.body.to_vec())
                .unwrap();
            let headers: Vec<(String, String)> = request
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            let signable = SignableRequest::new(
                "POST",
                request.uri().to_string(),
                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                self.signable_body.unwrap_or(SignableBody::Bytes(self.body)),
            )
            .unwrap();
            let (instructions, _) = sign(signable, &params).unwrap().into_parts();
            instructions.apply_to_request_http1x(&mut request);
            request
        }
    }

    /// Verifies as the server sees it: an origin-form URI (path and query).
    fn check(
        verifier: &Verifier,
        request: &http::Request<Vec<u8>>,
        now: u64,
    ) -> Result<Principal, KmsError> {
        let uri: Uri = request
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .parse()
            .unwrap();
        verifier.verify(
            request.method(),
            &uri,
            request.headers(),
            request.body(),
            at(now),
        )
    }

    fn alice() -> Principal {
        Principal {
            name: "alice".into(),
            access_key_id: ACCESS_KEY.into(),
        }
    }

    fn mismatch() -> KmsError {
        KmsError::InvalidSignature(SIGNATURE_MISMATCH.into())
    }

    fn authorization(request: &http::Request<Vec<u8>>) -> String {
        request.headers()[AUTHORIZATION]
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn set_authorization(request: &mut http::Request<Vec<u8>>, value: &str) {
        request
            .headers_mut()
            .insert(AUTHORIZATION, value.parse().unwrap());
    }

    #[test]
    fn a_request_signed_by_the_aws_sdk_signer_is_accepted() {
        let request = Signer::default().request();
        assert_eq!(check(&verifier(false), &request, T0), Ok(alice()));
    }

    #[test]
    fn a_wrong_secret_is_invalid_signature() {
        let request = Signer {
            secret: "not-the-secret",
            ..Signer::default()
        }
        .request();
        assert_eq!(check(&verifier(false), &request, T0), Err(mismatch()));
    }

    #[test]
    fn an_unknown_access_key_is_unrecognized_client() {
        let request = Signer {
            access_key: "AKIDSOMEONEELSE",
            ..Signer::default()
        }
        .request();
        assert_eq!(
            check(&verifier(false), &request, T0),
            Err(KmsError::UnrecognizedClient)
        );
    }

    #[test]
    fn a_tampered_body_is_invalid_signature() {
        let mut request = Signer::default().request();
        *request.body_mut() = br#"{"Limit":1}"#.to_vec();
        assert_eq!(check(&verifier(false), &request, T0), Err(mismatch()));
    }

    #[test]
    fn a_tampered_signed_header_is_invalid_signature() {
        let mut request = Signer::default().request();
        request.headers_mut().insert(
            "x-amz-target",
            "TrentService.ScheduleKeyDeletion".parse().unwrap(),
        );
        assert_eq!(check(&verifier(false), &request, T0), Err(mismatch()));
    }

    #[test]
    fn another_method_or_path_is_invalid_signature() {
        let request = Signer::default().request();
        let verifier = verifier(false);
        let put = verifier.verify(
            &Method::PUT,
            &"/".parse().unwrap(),
            request.headers(),
            request.body(),
            at(T0),
        );
        assert_eq!(put, Err(mismatch()));
        let other_path = verifier.verify(
            request.method(),
            &"/other".parse().unwrap(),
            request.headers(),
            request.body(),
            at(T0),
        );
        assert_eq!(other_path, Err(mismatch()));
    }

    #[test]
    fn a_credential_scoped_to_another_region_is_invalid_signature() {
        let request = Signer {
            region: "eu-west-1",
            ..Signer::default()
        }
        .request();
        assert_eq!(
            check(&verifier(false), &request, T0),
            Err(KmsError::InvalidSignature(
                "Credential should be scoped to a valid region. ".into()
            ))
        );
    }

    #[test]
    fn a_credential_scoped_to_another_service_is_invalid_signature() {
        let request = Signer {
            service: "s3",
            ..Signer::default()
        }
        .request();
        assert_eq!(
            check(&verifier(false), &request, T0),
            Err(KmsError::InvalidSignature(
                "Credential should be scoped to correct service: 'kms'. ".into()
            ))
        );
    }

    #[test]
    fn a_scope_date_other_than_the_request_date_is_invalid_signature() {
        let mut request = Signer::default().request();
        let header = authorization(&request).replace("/20260101/", "/20251231/");
        set_authorization(&mut request, &header);
        let Err(KmsError::InvalidSignature(msg)) = check(&verifier(false), &request, T0) else {
            panic!("expected InvalidSignature");
        };
        assert!(
            msg.starts_with("Date in Credential scope does not match"),
            "{msg}"
        );
        assert!(msg.contains("'20251231' != '20260101'"), "{msg}");
    }

    #[test]
    fn a_bad_terminator_is_invalid_signature() {
        let mut request = Signer::default().request();
        let header = authorization(&request).replace("/aws4_request", "/aws5_request");
        set_authorization(&mut request, &header);
        let Err(KmsError::InvalidSignature(msg)) = check(&verifier(false), &request, T0) else {
            panic!("expected InvalidSignature");
        };
        assert!(msg.contains("valid terminator"), "{msg}");
    }

    #[test]
    fn a_credential_without_five_elements_is_incomplete_signature() {
        let mut request = Signer::default().request();
        let header = authorization(&request).replace("/us-east-1/kms/", "/us-east-1/");
        set_authorization(&mut request, &header);
        let Err(KmsError::IncompleteSignature(msg)) = check(&verifier(false), &request, T0) else {
            panic!("expected IncompleteSignature");
        };
        assert!(msg.starts_with("Credential must have exactly 5"), "{msg}");
    }

    #[test]
    fn a_request_six_minutes_old_has_an_expired_signature() {
        let request = Signer::default().request();
        assert_eq!(
            check(&verifier(false), &request, T0 + 360),
            Err(KmsError::InvalidSignature(
                "Signature expired: 20260101T000000Z is now earlier than 20260101T000100Z \
                 (20260101T000600Z - 5 min.)"
                    .into()
            ))
        );
    }

    #[test]
    fn a_request_six_minutes_ahead_is_not_yet_current() {
        let request = Signer::default().request();
        assert_eq!(
            check(&verifier(false), &request, T0 - 360),
            Err(KmsError::InvalidSignature(
                "Signature not yet current: 20260101T000000Z is still later than \
                 20251231T235900Z (20251231T235400Z + 5 min.)"
                    .into()
            ))
        );
    }

    #[test]
    fn a_request_exactly_at_the_skew_limit_is_accepted() {
        let request = Signer::default().request();
        assert_eq!(check(&verifier(false), &request, T0 + 300), Ok(alice()));
        assert_eq!(check(&verifier(false), &request, T0 - 300), Ok(alice()));
        assert!(check(&verifier(false), &request, T0 + 301).is_err());
    }

    #[test]
    fn no_authorization_is_missing_authentication_token() {
        let request = http::Request::builder()
            .method("POST")
            .uri("/")
            .header("host", "127.0.0.1:8080")
            .body(BODY.to_vec())
            .unwrap();
        assert_eq!(
            check(&verifier(false), &request, T0),
            Err(KmsError::MissingAuthenticationToken(
                "Missing Authentication Token".into()
            ))
        );
    }

    #[test]
    fn an_authorization_of_another_scheme_is_missing_authentication_token() {
        let mut request = Signer::default().request();
        set_authorization(&mut request, "Bearer abc");
        assert!(matches!(
            check(&verifier(false), &request, T0),
            Err(KmsError::MissingAuthenticationToken(_))
        ));
    }

    #[test]
    fn anonymous_access_when_allowed_gives_the_anonymous_principal() {
        let request = http::Request::builder()
            .method("POST")
            .uri("/")
            .body(BODY.to_vec())
            .unwrap();
        let principal = check(&verifier(true), &request, T0).unwrap();
        assert_eq!(principal.name, "anonymous");
        assert_eq!(principal.access_key_id, "");
        assert!(principal.is_anonymous());
    }

    #[test]
    fn anonymous_access_does_not_excuse_a_bad_signature() {
        let request = Signer {
            secret: "not-the-secret",
            ..Signer::default()
        }
        .request();
        assert_eq!(check(&verifier(true), &request, T0), Err(mismatch()));
        let good = Signer::default().request();
        assert_eq!(check(&verifier(true), &good, T0), Ok(alice()));
    }

    #[test]
    fn missing_authorization_parameters_are_incomplete_signature() {
        let mut request = Signer::default().request();
        set_authorization(
            &mut request,
            "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature=0123abcd",
        );
        let Err(KmsError::IncompleteSignature(msg)) = check(&verifier(false), &request, T0) else {
            panic!("expected IncompleteSignature");
        };
        assert!(
            msg.starts_with("Authorization header requires 'Credential' parameter. "),
            "{msg}"
        );
        assert!(msg.contains("Authorization=AWS4-HMAC-SHA256 "), "{msg}");
        assert!(
            !msg.contains("0123abcd"),
            "the signature is not echoed: {msg}"
        );
    }

    #[test]
    fn a_parameter_without_equal_sign_is_incomplete_signature() {
        let mut request = Signer::default().request();
        let header = authorization(&request).replace("Credential=", "Credential ");
        set_authorization(&mut request, &header);
        let Err(KmsError::IncompleteSignature(msg)) = check(&verifier(false), &request, T0) else {
            panic!("expected IncompleteSignature");
        };
        assert!(msg.contains("not a valid key=value pair"), "{msg}");
    }

    #[test]
    fn missing_x_amz_date_is_incomplete_signature() {
        let mut request = Signer::default().request();
        request.headers_mut().remove(X_AMZ_DATE);
        let Err(KmsError::IncompleteSignature(msg)) = check(&verifier(false), &request, T0) else {
            panic!("expected IncompleteSignature");
        };
        assert!(
            msg.starts_with(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
                 header."
            ),
            "{msg}"
        );
    }

    #[test]
    fn a_malformed_x_amz_date_is_incomplete_signature() {
        let mut request = Signer::default().request();
        request
            .headers_mut()
            .insert(X_AMZ_DATE, "2026-01-01T00:00:00Z".parse().unwrap());
        let Err(KmsError::IncompleteSignature(msg)) = check(&verifier(false), &request, T0) else {
            panic!("expected IncompleteSignature");
        };
        assert!(
            msg.starts_with("Date must be in ISO-8601 'basic format'"),
            "{msg}"
        );
    }

    #[test]
    fn a_date_header_stands_in_for_x_amz_date() {
        let mut request = Signer::default().request();
        request.headers_mut().remove(X_AMZ_DATE);
        let header = authorization(&request).replace(";x-amz-date", "");
        set_authorization(&mut request, &header);
        request
            .headers_mut()
            .insert(DATE, "Thu, 01 Jan 2026 00:00:00 GMT".parse().unwrap());
        // Ten minutes later the time from the Date header is out of skew.
        let Err(KmsError::InvalidSignature(msg)) = check(&verifier(false), &request, T0 + 600)
        else {
            panic!("expected InvalidSignature");
        };
        assert!(
            msg.starts_with("Signature expired: 20260101T000000Z is now earlier"),
            "{msg}"
        );
        // In time, it gets as far as the signature (which signed x-amz-date).
        assert_eq!(check(&verifier(false), &request, T0), Err(mismatch()));
    }

    #[test]
    fn host_must_be_signed() {
        let mut request = Signer::default().request();
        let header = authorization(&request).replace("host;", "");
        assert!(!header.contains("host"));
        set_authorization(&mut request, &header);
        assert_eq!(
            check(&verifier(false), &request, T0),
            Err(KmsError::InvalidSignature(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into()
            ))
        );
    }

    #[test]
    fn x_amz_date_must_be_signed_when_it_carries_the_time() {
        let mut request = Signer::default().request();
        let header = authorization(&request).replace(";x-amz-date", "");
        set_authorization(&mut request, &header);
        assert_eq!(
            check(&verifier(false), &request, T0),
            Err(KmsError::InvalidSignature(
                "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.".into()
            ))
        );
    }

    #[test]
    fn a_signed_header_missing_from_the_request_is_incomplete_signature() {
        let mut request = Signer::default().request();
        request.headers_mut().remove("x-amz-target");
        assert_eq!(
            check(&verifier(false), &request, T0),
            Err(KmsError::IncompleteSignature(
                "'x-amz-target' is named as a SignedHeader, but it does not exist in the HTTP \
                 request."
                    .into()
            ))
        );
    }

    #[test]
    fn an_unsupported_algorithm_is_incomplete_signature() {
        let mut request = Signer::default().request();
        let header = authorization(&request).replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256");
        set_authorization(&mut request, &header);
        let Err(KmsError::IncompleteSignature(msg)) = check(&verifier(false), &request, T0) else {
            panic!("expected IncompleteSignature");
        };
        assert!(msg.starts_with("Unsupported AWS 'algorithm'"), "{msg}");
    }

    #[test]
    fn a_signed_content_sha256_header_is_accepted() {
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let request = Signer {
            settings,
            ..Signer::default()
        }
        .request();
        assert_eq!(
            request.headers()[X_AMZ_CONTENT_SHA256],
            hex::encode(Sha256::digest(BODY))
        );
        assert_eq!(check(&verifier(false), &request, T0), Ok(alice()));
    }

    #[test]
    fn a_content_sha256_that_does_not_match_the_body_is_invalid_signature() {
        let mut request = Signer::default().request();
        request.headers_mut().insert(
            X_AMZ_CONTENT_SHA256,
            hex::encode(Sha256::digest(b"something else"))
                .parse()
                .unwrap(),
        );
        let Err(KmsError::InvalidSignature(msg)) = check(&verifier(false), &request, T0) else {
            panic!("expected InvalidSignature");
        };
        assert!(msg.contains("'x-amz-content-sha256'"), "{msg}");
    }

    #[test]
    fn unsigned_payload_is_signed_as_the_literal() {
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let mut request = Signer {
            settings,
            signable_body: Some(SignableBody::UnsignedPayload),
            ..Signer::default()
        }
        .request();
        assert_eq!(request.headers()[X_AMZ_CONTENT_SHA256], UNSIGNED_PAYLOAD);
        assert_eq!(check(&verifier(false), &request, T0), Ok(alice()));
        // The client chose not to sign the body, so a changed body still passes.
        *request.body_mut() = br#"{"Limit":1}"#.to_vec();
        assert_eq!(check(&verifier(false), &request, T0), Ok(alice()));
    }

    #[test]
    fn a_session_token_is_unrecognized_client() {
        let mut request = Signer::default().request();
        request
            .headers_mut()
            .insert(X_AMZ_SECURITY_TOKEN, "FwoGZXIvYXdzE".parse().unwrap());
        assert_eq!(
            check(&verifier(false), &request, T0),
            Err(KmsError::UnrecognizedClient)
        );
    }

    fn presigned(expires: Duration) -> http::Request<Vec<u8>> {
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(expires);
        Signer {
            settings,
            ..Signer::default()
        }
        .request()
    }

    #[test]
    fn a_presigned_request_is_accepted_until_it_expires() {
        let request = presigned(Duration::from_secs(900));
        assert!(request.uri().query().unwrap().contains("X-Amz-Signature="));
        assert!(!request.headers().contains_key(AUTHORIZATION));
        assert_eq!(check(&verifier(false), &request, T0 + 900), Ok(alice()));
        let Err(KmsError::InvalidSignature(msg)) = check(&verifier(false), &request, T0 + 901)
        else {
            panic!("expected InvalidSignature");
        };
        assert!(msg.starts_with("Signature expired:"), "{msg}");
    }

    #[test]
    fn a_presigned_request_with_a_changed_query_is_invalid_signature() {
        let request = presigned(Duration::from_secs(900));
        let tampered = request
            .uri()
            .path_and_query()
            .unwrap()
            .as_str()
            .replace("X-Amz-Expires=900", "X-Amz-Expires=901");
        let result = verifier(false).verify(
            request.method(),
            &tampered.parse().unwrap(),
            request.headers(),
            request.body(),
            at(T0),
        );
        assert_eq!(result, Err(mismatch()));
    }

    #[test]
    fn header_and_query_authentication_together_are_rejected() {
        let mut request = presigned(Duration::from_secs(900));
        set_authorization(&mut request, &authorization(&Signer::default().request()));
        let Err(KmsError::InvalidSignature(msg)) = check(&verifier(false), &request, T0) else {
            panic!("expected InvalidSignature");
        };
        assert!(msg.starts_with("Found both"), "{msg}");
    }

    #[test]
    fn signing_keys_are_cached_per_day_and_old_days_dropped() {
        let verifier = verifier(false);
        for day in 0..4u64 {
            let time = T0 + day * 86_400;
            let request = Signer {
                time: at(time),
                ..Signer::default()
            }
            .request();
            assert_eq!(check(&verifier, &request, time), Ok(alice()));
            // A second request the same day is served from the cache.
            assert_eq!(check(&verifier, &request, time), Ok(alice()));
        }
        let cache = verifier.signing_keys.lock().unwrap();
        let t0_day = i64::try_from(T0 / 86_400).unwrap();
        let mut days: Vec<i64> = cache.keys().map(|(d, _)| d - t0_day).collect();
        days.sort_unstable();
        assert_eq!(days, [2, 3]);
    }

    #[test]
    fn a_cached_key_gives_the_same_answer_as_a_fresh_one() {
        let verifier = verifier(false);
        let good = Signer::default().request();
        let bad = Signer {
            secret: "not-the-secret",
            ..Signer::default()
        }
        .request();
        assert_eq!(check(&verifier, &good, T0), Ok(alice()));
        assert_eq!(check(&verifier, &bad, T0), Err(mismatch()));
        assert_eq!(check(&verifier, &good, T0), Ok(alice()));
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let verifier = verifier(false);
        // Fill the signing-key cache too, so that it is covered.
        check(&verifier, &Signer::default().request(), T0).unwrap();
        let credential = Credential {
            access_key_id: ACCESS_KEY.into(),
            secret: SecretString::from(SECRET),
            principal: "alice".into(),
        };
        for text in [format!("{verifier:?}"), format!("{credential:?}")] {
            assert!(!text.contains(SECRET), "{text}");
            assert!(!text.contains("K7MDENG"), "{text}");
            assert!(text.contains(ACCESS_KEY), "{text}");
        }
        assert!(format!("{credential:?}").contains("[REDACTED]"));
    }

    #[test]
    fn the_canonical_uri_encodes_each_segment_once_more() {
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a%20b/c"), "/a%2520b/c");
        assert_eq!(canonical_uri("/a/./b/../c/"), "/a/c/");
        assert_eq!(canonical_uri("//a//b"), "/a/b");
    }

    #[test]
    fn the_canonical_query_is_decoded_reencoded_and_sorted() {
        let query = parse_query("b=2&a=x%2Fy&a=1&c&d=%7e+");
        assert_eq!(canonical_query(&query, false), "a=1&a=x%2Fy&b=2&c=&d=~%2B");
        let presigned = parse_query("X-Amz-Signature=ab&X-Amz-Date=1");
        assert_eq!(canonical_query(&presigned, true), "X-Amz-Date=1");
    }

    #[test]
    fn malformed_percent_escapes_stay_as_they_are() {
        assert_eq!(percent_decode("%41%4a%zz%+1%4"), b"AJ%zz%+1%4");
    }

    #[test]
    fn header_values_are_trimmed_and_spaces_collapsed() {
        let mut out = Vec::new();
        push_trimmed(&mut out, b"  a   b \t c  ");
        assert_eq!(out, b"a b \t c");
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(2026, 1, 1) * 86_400, T0 as i64);
        assert_eq!(days_from_civil(1600, 1, 1), -135_140);
    }

    #[test]
    fn civil_from_days_inverts_days_from_civil() {
        let mut expected = (1599, 12, 31);
        let first = days_from_civil(1600, 1, 1);
        for days in first..first + 400 * 366 * 2 {
            // Step the expected date by one day, by hand.
            let (mut y, mut m, mut d) = expected;
            d += 1;
            if d > days_in_month(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
            expected = (y, m, d);
            assert_eq!(civil_from_days(days), expected, "day {days}");
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn amz_dates_parse_and_format() {
        assert_eq!(parse_amz_date("20260101T000000Z"), Some(T0 as i64));
        assert_eq!(parse_amz_date("19700101T000001Z"), Some(1));
        assert_eq!(parse_amz_date("20240229T235959Z"), Some(1_709_251_199));
        assert_eq!(format_amz_date(1_709_251_199), "20240229T235959Z");
        assert_eq!(format_amz_date(-1), "19691231T235959Z");
        for secs in [0, 1, 86_399, 951_782_400, T0 as i64, 4_102_444_800] {
            assert_eq!(parse_amz_date(&format_amz_date(secs)), Some(secs));
        }
    }

    #[test]
    fn malformed_amz_dates_are_rejected() {
        for bad in [
            "",
            "20260101",
            "2026-01-01T00:00:00Z",
            "20260101T000000z",
            "20260101 000000Z",
            "20230229T000000Z",
            "20261301T000000Z",
            "20260001T000000Z",
            "20260100T000000Z",
            "20260431T000000Z",
            "20260101T240000Z",
            "20260101T006000Z",
            "20260101T000060Z",
            "2026+101T000000Z",
            "20260101T00000\u{e9}",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn http_dates_parse() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Thu, 01 Jan 2026 00:00:00 GMT"),
            Some(T0 as i64)
        );
        for bad in [
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn skew_windows_are_worded_in_minutes_or_seconds() {
        assert_eq!(window_text(300), "5 min");
        assert_eq!(window_text(90), "90 sec");
    }
}
