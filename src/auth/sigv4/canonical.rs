//! What the signature covers: the rules for which headers must be signed,
//! the payload hash, and the SigV4 canonical request built from the request
//! as received.

use http::{HeaderMap, Method, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
use sha2::{Digest, Sha256};

use super::params::{AuthParams, DateSource, Query};
use super::{SignatureError, UnsignedHeader, X_AMZ_CONTENT_SHA256, X_AMZ_DATE};

/// SigV4's URI encoding leaves only `A-Z a-z 0-9 - _ . ~` as they are.
const SIGV4_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The prefix of the headers that carry AWS request parameters; every one
/// present must be signed.
const AMZ_PREFIX: &str = "x-amz-";

/// The payload-hash values by which a client opts out of signing the body.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const STREAMING_PREFIX: &str = "STREAMING-";

/// The headers a signature must cover, in the order they are checked:
/// `host` (so a request cannot be replayed against another endpoint),
/// `x-amz-date` when present (it carries the time), and every other
/// `x-amz-*` header present (`x-amz-target` names the operation: unsigned,
/// the signature of a DescribeKey could be replayed as DisableKey). Then
/// every header named as signed must be present. That is AWS's rule and no
/// stricter: `content-type` may stay unsigned, as the AWS SDK for
/// JavaScript v2 always leaves it (the body it describes is covered by the
/// payload hash either way).
pub(super) fn check_signed_headers(
    signed: &[String],
    date_source: DateSource,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), SignatureError> {
    let is_signed = |name: &str| signed.iter().any(|h| h == name);
    if !is_signed("host") {
        return Err(SignatureError::Unsigned(UnsignedHeader::Host));
    }
    let has_amz_date = date_source == DateSource::AmzDateHeader || headers.contains_key(X_AMZ_DATE);
    if has_amz_date && !is_signed(X_AMZ_DATE) {
        return Err(SignatureError::Unsigned(UnsignedHeader::AmzDate));
    }
    // Sorted, so that which one is named does not depend on header order.
    let mut unsigned: Vec<&str> = headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with(AMZ_PREFIX) && !is_signed(k))
        .collect();
    unsigned.sort_unstable();
    if let Some(name) = unsigned.first() {
        return Err(SignatureError::Unsigned(UnsignedHeader::Amz(
            (*name).to_owned(),
        )));
    }
    for name in signed {
        // Over HTTP/2 the host travels as `:authority`, which `http` keeps in
        // the URI rather than among the headers.
        let present =
            headers.contains_key(name.as_str()) || (name == "host" && uri.authority().is_some());
        if !present {
            return Err(SignatureError::SignedHeaderAbsent(name.clone()));
        }
    }
    Ok(())
}

/// The payload hash of the canonical request: always the SHA-256 of the
/// body received, so the signature covers the operation's parameters. An
/// `x-amz-content-sha256` (header, or parameter of a presigned request) must
/// state that same hash; `UNSIGNED-PAYLOAD` and the `STREAMING-*` values,
/// which exist for large S3 uploads, are refused.
pub(super) fn payload_hash(
    headers: &HeaderMap,
    query: &Query,
    body: &[u8],
) -> Result<String, SignatureError> {
    let computed = hex::encode(Sha256::digest(body));
    let stated_in_headers = headers
        .get_all(X_AMZ_CONTENT_SHA256)
        .iter()
        .map(|v| v.as_bytes());
    let stated_in_query = query
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(X_AMZ_CONTENT_SHA256.as_bytes()))
        .map(|(_, v)| v.as_slice());
    for stated in stated_in_headers.chain(stated_in_query) {
        if stated == UNSIGNED_PAYLOAD.as_bytes() || stated.starts_with(STREAMING_PREFIX.as_bytes())
        {
            return Err(SignatureError::UnsignedPayload(
                String::from_utf8_lossy(stated).into_owned(),
            ));
        }
        if !stated.eq_ignore_ascii_case(computed.as_bytes()) {
            return Err(SignatureError::ContentSha256Mismatch);
        }
    }
    Ok(computed)
}

/// The SigV4 canonical request, as bytes because header values may hold
/// non-UTF-8 octets that the client signed as they are.
#[allow(clippy::too_many_arguments)] // each is one input of the canonical request
pub(super) fn canonical_request(
    method: &Method,
    uri: &Uri,
    query: &Query,
    headers: &HeaderMap,
    signed: &[String],
    params: &AuthParams,
    payload_hash: &str,
    path_as_sent: bool,
) -> Vec<u8> {
    let presigned = params.date_source == DateSource::Query;
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b'\n');
    let path = if path_as_sent {
        encoded_as_sent(uri.path())
    } else {
        canonical_uri(uri.path())
    };
    out.extend_from_slice(path.as_bytes());
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
        out.extend(percent_encode(segment.as_bytes(), SIGV4_ENCODE));
    }
    let ends_with_slash = ["/", "/.", "/.."].iter().any(|s| path.ends_with(s));
    if out.is_empty() || (ends_with_slash && !out.ends_with('/')) {
        out.push('/');
    }
    out
}

/// The path as sent, each segment encoded once more, no segment removed
/// (the XKS proxy API's canonical URI).
fn encoded_as_sent(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    path.split('/')
        .map(|segment| percent_encode(segment.as_bytes(), SIGV4_ENCODE).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// The canonical query string: every parameter (except the signature of a
/// presigned request) decoded, re-encoded strictly and sorted.
fn canonical_query(query: &Query, presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| !(presigned && k == b"X-Amz-Signature"))
        .map(|(k, v)| {
            (
                percent_encode(k, SIGV4_ENCODE).to_string(),
                percent_encode(v, SIGV4_ENCODE).to_string(),
            )
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

#[cfg(test)]
mod tests {
    use super::super::params::parse_query;
    use super::*;

    #[test]
    fn the_canonical_uri_encodes_each_segment_once_more() {
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a%20b/c"), "/a%2520b/c");
        assert_eq!(canonical_uri("/a/./b/../c/"), "/a/c/");
        assert_eq!(canonical_uri("//a//b"), "/a/b");
        assert_eq!(canonical_uri("/~a-b_c.d"), "/~a-b_c.d");
        // The XKS proxy API signs the path as sent.
        assert_eq!(
            encoded_as_sent("//kms/xks/v1/health"),
            "//kms/xks/v1/health"
        );
        assert_eq!(encoded_as_sent("/p/./a%20b"), "/p/./a%2520b");
    }

    #[test]
    fn the_canonical_query_is_decoded_reencoded_and_sorted() {
        let query = parse_query("b=2&a=x%2Fy&a=1&c&d=%7e+");
        assert_eq!(canonical_query(&query, false), "a=1&a=x%2Fy&b=2&c=&d=~%2B");
        let presigned = parse_query("X-Amz-Signature=ab&X-Amz-Date=1");
        assert_eq!(canonical_query(&presigned, true), "X-Amz-Date=1");
        let bytes = parse_query("k=%00%ff%e9");
        assert_eq!(canonical_query(&bytes, false), "k=%00%FF%E9");
    }

    #[test]
    fn header_values_are_trimmed_and_spaces_collapsed() {
        let mut out = Vec::new();
        push_trimmed(&mut out, b"  a   b \t c  ");
        assert_eq!(out, b"a b \t c");
    }
}
