//! The authentication parameters of a request, from either form: the
//! `Authorization` header (with the time in `X-Amz-Date` or `Date`), or the
//! presigned form's `X-Amz-*` query parameters.

use http::HeaderMap;
use http::header::DATE;

use super::{SignatureError, X_AMZ_DATE};

/// AWS caps presigned requests at one week.
const MAX_PRESIGN_EXPIRES_SECS: u64 = 604_800;

/// Where the request time came from: it decides how the string to sign
/// names it and which header must be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DateSource {
    AmzDateHeader,
    DateHeader,
    Query,
}

/// The authentication parameters of a request, from either form.
pub(super) struct AuthParams {
    pub algorithm: String,
    pub credential: String,
    pub signed_headers: String,
    pub signature: String,
    pub date: String,
    pub date_source: DateSource,
    /// `X-Amz-Expires` of a presigned request.
    pub expires: Option<u64>,
}

/// A query string as percent-decoded (name, value) pairs, in order.
pub(super) type Query = [(Vec<u8>, Vec<u8>)];

/// The parameters of an `Authorization: AWS4-HMAC-SHA256 Credential=...,
/// SignedHeaders=..., Signature=...` header, plus the request date.
pub(super) fn header_params(
    value: &str,
    headers: &HeaderMap,
) -> Result<AuthParams, SignatureError> {
    let value = value.trim();
    let (algorithm, rest) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((value, ""));
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, val)) = part.split_once('=') else {
            return Err(SignatureError::NotKeyValue {
                part: part.to_owned(),
                authorization: redact_signature(value),
            });
        };
        let slot = match key.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => continue,
        };
        slot.get_or_insert(val.trim().to_owned());
    }

    let credential = credential.filter(|c| !c.is_empty());
    let signature = signature.filter(|s| !s.is_empty());
    let date = match (headers.get(X_AMZ_DATE), headers.get(DATE)) {
        (Some(v), _) => Some((v, DateSource::AmzDateHeader)),
        (None, Some(v)) => Some((v, DateSource::DateHeader)),
        (None, None) => None,
    };
    // An empty SignedHeaders passes here and fails the `host` check later, as
    // with AWS.
    match (credential, signed_headers, signature, date) {
        (Some(credential), Some(signed_headers), Some(signature), Some((date, date_source))) => {
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
        (credential, signed_headers, signature, date) => Err(SignatureError::MissingHeaderParams {
            credential: credential.is_none(),
            signed_headers: signed_headers.is_none(),
            signature: signature.is_none(),
            date: date.is_none(),
            authorization: redact_signature(value),
        }),
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
pub(super) fn query_params(query: &Query) -> Result<AuthParams, SignatureError> {
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .filter(|v| !v.is_empty())
    };
    let mut missing = Vec::new();
    let mut require = |name: &'static str| {
        let value = get(name);
        if value.is_none() {
            missing.push(name);
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
        return Err(SignatureError::MissingQueryParams(missing));
    };
    let expires = match get("X-Amz-Expires") {
        None => None,
        Some(raw) => match raw.parse::<u64>() {
            Ok(secs) if secs <= MAX_PRESIGN_EXPIRES_SECS => Some(secs),
            Ok(_) => {
                return Err(SignatureError::ExpiresTooLong {
                    max_secs: MAX_PRESIGN_EXPIRES_SECS,
                });
            }
            Err(_) => return Err(SignatureError::ExpiresNotNumber),
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

/// Splits a raw query string into percent-decoded pairs. `+` is kept as it
/// is: SigV4 clients encode a space as `%20`. A malformed escape stays as it
/// is (and then cannot match what the client signed).
pub(super) fn parse_query(query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let decode = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_percent_escapes_stay_as_they_are() {
        let query = parse_query("a=%41%4a%zz%+1%4");
        assert_eq!(query, [(b"a".to_vec(), b"AJ%zz%+1%4".to_vec())]);
    }

    #[test]
    fn the_signature_is_redacted_where_the_header_is_echoed() {
        assert_eq!(
            redact_signature("AWS4-HMAC-SHA256 Credential=a/b, Signature=0123, SignedHeaders=host"),
            "AWS4-HMAC-SHA256 Credential=a/b, Signature=[redacted], SignedHeaders=host"
        );
    }
}
