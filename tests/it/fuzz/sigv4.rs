//! `Verifier::verify`, the SigV4 check of every request, on hostile input.
//!
//! The verifier is built as `kmsgate::server::build` builds it: the
//! configured credentials, the region, the clock skew, no anonymous access,
//! and presigned URLs off (the default) or on.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4::SigningParams;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use kmsgate::auth::{Credential, Verifier};
use kmsgate::error::KmsError;
use proptest::prelude::*;
use secrecy::SecretString;

const ACCESS_KEY: &str = "AKIAKMSGATEFUZZ00001";
const SECRET: &str = "kmsgate/fuzz+secret0123456789abcdefghijKL";
const REGION: &str = "us-east-1";
const HOST: &str = "127.0.0.1:8080";
/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600;
const T0_AMZ: &str = "20260101T000000Z";
const T0_DAY: &str = "20260101";

/// The exceptions an authentication failure may be, all client faults.
const AUTH_ERRORS: &[&str] = &[
    "MissingAuthenticationTokenException",
    "IncompleteSignatureException",
    "InvalidSignatureException",
    "UnrecognizedClientException",
];

fn verifier() -> Verifier {
    verifier_with_presigned(false)
}

fn verifier_with_presigned(allow: bool) -> Verifier {
    Verifier::new(
        vec![Credential {
            access_key_id: ACCESS_KEY.into(),
            secret: SecretString::from(SECRET),
            principal: "fuzzer".into(),
        }],
        REGION.into(),
        Duration::from_secs(300),
        false,
    )
    .allow_presigned_urls(allow)
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A request as the server sees it: origin-form URI, headers, body.
#[derive(Debug, Clone)]
struct Req {
    uri: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Req {
    fn new(uri: &str, extra: &[(&str, &[u8])]) -> Req {
        let mut headers = vec![
            ("host".to_owned(), HOST.as_bytes().to_vec()),
            (
                "content-type".to_owned(),
                b"application/x-amz-json-1.1".to_vec(),
            ),
            ("x-amz-target".to_owned(), b"TrentService.ListKeys".to_vec()),
        ];
        for (k, v) in extra {
            headers.push(((*k).to_owned(), v.to_vec()));
        }
        Req {
            uri: uri.to_owned(),
            headers,
            body: b"{}".to_vec(),
        }
    }

    /// Verifies at `now`. `None` when the generated input is not even a
    /// valid HTTP request (a URI or header value hyper would refuse): the
    /// verifier never sees those.
    fn verify(&self, verifier: &Verifier, now: u64) -> Option<Result<String, KmsError>> {
        let uri: Uri = self.uri.parse().ok()?;
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).ok()?,
                HeaderValue::from_bytes(v).ok()?,
            );
        }
        Some(
            verifier
                .verify(&Method::POST, &uri, &headers, &self.body, at(now))
                .map(|p| p.name)
                .map_err(KmsError::from),
        )
    }
}

/// The error must be one of the authentication exceptions, a 4xx, with a
/// message where AWS sends one.
fn assert_auth_error(result: &Result<String, KmsError>) -> Result<&'static str, TestCaseError> {
    let err = match result {
        Ok(p) => return Err(TestCaseError::fail(format!("accepted as {p}"))),
        Err(e) => e,
    };
    let name = err.type_name();
    prop_assert!(
        AUTH_ERRORS.contains(&name),
        "unexpected exception {name}: {err:?}"
    );
    prop_assert_eq!(err.status().as_u16(), 400, "{:?}", err);
    prop_assert!(err.message().is_some_and(|m| !m.is_empty()), "{:?}", err);
    let body: serde_json::Value = serde_json::from_slice(&err.body()).unwrap();
    prop_assert_eq!(body["__type"].as_str(), Some(name));
    Ok(name)
}

/// A request signed by the AWS SDK's signer, in header or query form.
fn signed(body: &[u8], presigned: bool) -> Req {
    let identity = Credentials::new(ACCESS_KEY, SECRET, None, None, "fuzz").into();
    let mut settings = SigningSettings::default();
    if presigned {
        settings.signature_location = aws_sigv4::http_request::SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(900));
    }
    let params = SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("kms")
        .time(at(T0))
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let mut req = Req::new("/", &[]);
    req.body = body.to_vec();
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.clone()).unwrap()))
        .collect();
    let signable = SignableRequest::new(
        "POST",
        format!("http://{HOST}/"),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    for (k, v) in instructions.headers() {
        req.headers.push((k.to_owned(), v.as_bytes().to_vec()));
    }
    let params: Vec<String> = instructions
        .params()
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    if !params.is_empty() {
        req.uri = format!("/?{}", params.join("&"));
    }
    req
}

/// SigV4's URI encoding, for building query strings.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Junk and near-miss pieces for the parts of the `Authorization` header.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,20}",
        "(?s).{0,10}",
        Just(String::new()),
        Just(ACCESS_KEY.to_owned()),
        Just(T0_DAY.to_owned()),
        Just(REGION.to_owned()),
        Just("kms".to_owned()),
        Just("aws4_request".to_owned()),
        Just("host;x-amz-date".to_owned()),
        "[0-9a-f]{64}",
        "[=,;/ ]{1,4}",
    ]
}

/// `Authorization` values: arbitrary text, arbitrary bytes, and headers
/// assembled from junk and valid-looking parameters in any order.
fn authorization() -> impl Strategy<Value = Vec<u8>> {
    let structured = (
        prop_oneof![
            Just("AWS4-HMAC-SHA256".to_owned()),
            Just("AWS4-HMAC-SHA512".to_owned()),
            Just("AWS4-".to_owned()),
            piece()
        ],
        prop::collection::vec(
            (
                prop_oneof![
                    Just("Credential".to_owned()),
                    Just("SignedHeaders".to_owned()),
                    Just("Signature".to_owned()),
                    piece()
                ],
                prop::option::of(prop::collection::vec(piece(), 0..6)),
            ),
            0..6,
        ),
        prop_oneof![Just(", "), Just(","), Just(" "), Just(",,")],
    )
        .prop_map(|(alg, params, sep)| {
            let params: Vec<String> = params
                .into_iter()
                .map(|(k, v)| match v {
                    None => k,
                    Some(parts) => format!("{k}={}", parts.join("/")),
                })
                .collect();
            format!("{alg} {}", params.join(sep)).into_bytes()
        });
    prop_oneof![
        3 => structured,
        1 => "[ -~]{0,80}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..80),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| [b"AWS4-HMAC-SHA256 ".as_slice(), &b].concat()),
    ]
}

/// `X-Amz-Date` / `Date` values: junk, near-misses of the basic format,
/// and valid dates far from now.
fn date_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(T0_AMZ.to_owned()),
        "[0-9]{8}T[0-9]{6}Z",
        "[0-9T:Z-]{0,20}",
        "(?s).{0,20}",
        "[ -~]{0,30}",
        Just("Thu, 01 Jan 2026 00:00:00 GMT".to_owned()),
        "(Mon|Thu|Sun), [0-9]{2} (Jan|Feb|Foo) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        Just("99991231T235959Z".to_owned()),
        Just("00000229T000000Z".to_owned()),
    ]
}

/// Presigned-form query strings: the `X-Amz-*` parameters with junk or
/// valid values, percent escapes (also malformed ones), and raw junk.
fn query() -> impl Strategy<Value = String> {
    let names = prop_oneof![
        Just("X-Amz-Algorithm"),
        Just("X-Amz-Credential"),
        Just("X-Amz-Date"),
        Just("X-Amz-Expires"),
        Just("X-Amz-SignedHeaders"),
        Just("X-Amz-Signature"),
        Just("X-Amz-Security-Token"),
        Just("x-amz-algorithm"),
        Just("Action"),
    ];
    let value = prop_oneof![
        piece().prop_map(|p| encode(&p)),
        Just("AWS4-HMAC-SHA256".to_owned()),
        Just(encode(&format!(
            "{ACCESS_KEY}/{T0_DAY}/{REGION}/kms/aws4_request"
        ))),
        Just(T0_AMZ.to_owned()),
        Just("host".to_owned()),
        "[0-9]{1,25}",
        "-[0-9]{1,3}",
        "[%0-9a-fA-FgG+]{0,12}",
    ];
    let structured =
        prop::collection::vec((names, prop::option::of(value)), 0..9).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("&")
        });
    prop_oneof![
        3 => structured,
        1 => "[!-~]{0,60}",
        1 => "[&=%0-9A-Za-z-]{0,60}",
    ]
}

proptest! {
    #![proptest_config(crate::fuzz::config("target/fuzz-regressions/sigv4.txt", 512))]

    /// Any `Authorization` value with any date header is refused with an
    /// authentication exception; one of another scheme (or not text) counts
    /// as no authentication at all.
    #[test]
    fn hostile_authorization_headers_are_refused(
        auth in authorization(),
        date in prop::option::of(date_value()),
        http_date in prop::option::of(date_value()),
        now in prop_oneof![Just(T0), any::<u64>().prop_map(|s| s % 8_000_000_000)],
    ) {
        let mut extra: Vec<(&str, &[u8])> = vec![("authorization", &auth)];
        if let Some(d) = &date {
            extra.push(("x-amz-date", d.as_bytes()));
        }
        if let Some(d) = &http_date {
            extra.push(("date", d.as_bytes()));
        }
        let Some(result) = Req::new("/", &extra).verify(&verifier(), now) else {
            return Ok(());
        };
        let name = assert_auth_error(&result)?;
        // A value that is not visible ASCII cannot be read as text at all,
        // and counts as no authentication.
        let scheme_is_aws4 = HeaderValue::from_bytes(&auth)
            .ok()
            .and_then(|v| v.to_str().ok().map(|a| a.trim_start().starts_with("AWS4-")))
            .unwrap_or(false);
        if !scheme_is_aws4 {
            prop_assert_eq!(name, "MissingAuthenticationTokenException");
        } else {
            prop_assert_ne!(name, "MissingAuthenticationTokenException");
        }
    }

    /// A well-formed header with any `X-Amz-Date`: a value that is not the
    /// basic format is IncompleteSignature, any other failure comes later.
    #[test]
    fn hostile_amz_dates_are_refused(date in date_value(), signature in "[0-9a-f]{64}") {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{T0_DAY}/{REGION}/kms/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature={signature}"
        );
        let extra: Vec<(&str, &[u8])> =
            vec![("authorization", auth.as_bytes()), ("x-amz-date", date.as_bytes())];
        let Some(result) = Req::new("/", &extra).verify(&verifier(), T0) else {
            return Ok(());
        };
        let name = assert_auth_error(&result)?;
        let basic_format = date.len() == 16
            && date.bytes().enumerate().all(|(i, b)| match i {
                8 => b == b'T',
                15 => b == b'Z',
                _ => b.is_ascii_digit(),
            });
        if !basic_format {
            prop_assert_eq!(name, "IncompleteSignatureException");
        }
    }

    /// Credential scopes of any shape get the exception AWS gives: not five
    /// elements is IncompleteSignature, a wrong region, service, terminator
    /// or day InvalidSignature, an unknown key UnrecognizedClient, and a
    /// perfect scope with a made-up signature InvalidSignature.
    #[test]
    fn hostile_credential_scopes_are_refused(
        parts in prop::collection::vec(
            prop_oneof![
                2 => piece().prop_filter("no separators", |p| !p.contains(['/', ',', ' ', '\t', '\n', '\r'])),
                1 => Just(String::new()),
            ],
            0..8,
        ),
        valid in prop::collection::vec(any::<bool>(), 5),
        signature in "[0-9a-f]{64}",
    ) {
        // Mostly valid parts with a few replaced, so every check is reached.
        let real = [ACCESS_KEY, T0_DAY, REGION, "kms", "aws4_request"];
        let scope: Vec<String> = if parts.len() == 5 {
            parts
                .iter()
                .zip(real)
                .zip(&valid)
                .map(|((p, r), keep)| if *keep { r.to_owned() } else { p.clone() })
                .collect()
        } else {
            parts.clone()
        };
        let credential = scope.join("/");
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={credential}, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={signature}"
        );
        let extra: Vec<(&str, &[u8])> =
            vec![("authorization", auth.as_bytes()), ("x-amz-date", T0_AMZ.as_bytes())];
        let Some(result) = Req::new("/", &extra).verify(&verifier(), T0) else {
            return Ok(());
        };
        let name = assert_auth_error(&result)?;
        let elements: Vec<&str> = credential.trim().trim_end_matches('/').split('/').collect();
        let expected = if !credential.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            // Not visible ASCII: the header cannot be read as text.
            "MissingAuthenticationTokenException"
        } else if credential.trim().is_empty() || elements.len() != 5 {
            "IncompleteSignatureException"
        } else if elements[1..] != real[1..] {
            "InvalidSignatureException"
        } else if elements[0] != ACCESS_KEY {
            "UnrecognizedClientException"
        } else {
            "InvalidSignatureException"
        };
        prop_assert_eq!(name, expected, "credential {:?}", credential);
    }

    /// Any presigned-form query string is refused, whether presigned URLs
    /// are enabled or not; without `X-Amz-Algorithm` it is no
    /// authentication at all, and with it and presigned URLs off it is
    /// refused before any of it is read.
    #[test]
    fn hostile_presigned_queries_are_refused(
        query in query(),
        with_date_header in any::<bool>(),
        presigned_enabled in any::<bool>(),
    ) {
        let uri = format!("/?{query}");
        let extra: Vec<(&str, &[u8])> = if with_date_header {
            vec![("x-amz-date", T0_AMZ.as_bytes())]
        } else {
            vec![]
        };
        let verifier = verifier_with_presigned(presigned_enabled);
        let Some(result) = Req::new(&uri, &extra).verify(&verifier, T0) else {
            return Ok(());
        };
        let name = assert_auth_error(&result)?;
        let has_algorithm = Uri::try_from(uri.as_str())
            .ok()
            .and_then(|u| u.query().map(|q| {
                q.split('&').any(|p| p.split_once('=').map_or(p, |(k, _)| k) == "X-Amz-Algorithm")
            }))
            .unwrap_or(false);
        if !has_algorithm {
            prop_assert_eq!(name, "MissingAuthenticationTokenException");
        } else if !presigned_enabled {
            prop_assert_eq!(name, "IncompleteSignatureException");
            let message = result.unwrap_err().message().unwrap_or_default();
            prop_assert!(message.contains("query-string authentication"), "{}", message);
        }
    }

    /// An `x-amz-*` header added to a signed request (either form) is
    /// refused by name: it is not covered by the signature.
    #[test]
    fn an_added_x_amz_header_is_refused(
        suffix in "[a-z0-9-]{1,16}",
        value in "[ -~]{0,30}",
        presigned in any::<bool>(),
    ) {
        let mut req = signed(b"{}", presigned);
        let name = format!("x-amz-{suffix}");
        let already_signed = req.headers.iter().any(|(k, _)| *k == name);
        req.headers.push((name.clone(), value.into_bytes()));
        let Some(result) = req.verify(&verifier_with_presigned(true), T0) else {
            return Ok(());
        };
        prop_assert_eq!(assert_auth_error(&result)?, "InvalidSignatureException");
        if !already_signed {
            let message = result.unwrap_err().message().unwrap_or_default();
            let expected = if name == "x-amz-date" { "'X-Amz-Date'".to_owned() } else { format!("'{name}'") };
            prop_assert_eq!(
                message,
                format!("{expected} must be a 'SignedHeader' in the AWS Authorization.")
            );
        }
    }

    /// Dropping `host`, `x-amz-date` or `x-amz-target` from the signed
    /// headers of a signed request is refused, whatever else is wrong with
    /// the signature, and whether `content-type` (which need not be signed)
    /// is among them or not.
    #[test]
    fn a_required_header_left_out_of_the_signature_is_refused(
        which in 0usize..3,
        with_content_type in any::<bool>(),
        signature in "[0-9a-f]{64}",
    ) {
        let mut names = vec!["host", "x-amz-date", "x-amz-target"];
        names.remove(which);
        if with_content_type {
            names.insert(0, "content-type");
        }
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{T0_DAY}/{REGION}/kms/aws4_request, \
             SignedHeaders={}, Signature={signature}",
            names.join(";")
        );
        let extra: Vec<(&str, &[u8])> =
            vec![("authorization", auth.as_bytes()), ("x-amz-date", T0_AMZ.as_bytes())];
        let result = Req::new("/", &extra).verify(&verifier(), T0).unwrap();
        prop_assert_eq!(assert_auth_error(&result)?, "InvalidSignatureException");
        let message = result.unwrap_err().message().unwrap_or_default();
        prop_assert!(message.ends_with("must be a 'SignedHeader' in the AWS Authorization."), "{}", message);
    }

    /// A request signed by the AWS SDK's signer is accepted; changing any
    /// one character of any of its headers (the signature included), of its
    /// query string or of its body is refused.
    #[test]
    fn a_changed_character_of_a_signed_request_is_refused(
        body in prop::collection::vec(any::<u8>(), 1..64),
        presigned in any::<bool>(),
        which in any::<prop::sample::Index>(),
        at_char in any::<prop::sample::Index>(),
        replacement in 0x21u8..0x7f,
        body_delta in 1u8..=255,
    ) {
        let verifier = verifier_with_presigned(true);
        let req = signed(&body, presigned);
        prop_assert_eq!(req.verify(&verifier, T0).unwrap(), Ok("fuzzer".to_owned()));

        // Targets: each header value, the query string, the body.
        let targets = req.headers.len() + 2;
        let target = which.index(targets);
        let mut changed = req.clone();
        if target == targets - 1 {
            let i = at_char.index(changed.body.len());
            changed.body[i] = changed.body[i].wrapping_add(body_delta);
        } else {
            let is_query = target == targets - 2;
            if is_query && !presigned {
                return Ok(());
            }
            let mut text = if is_query {
                changed.uri.strip_prefix("/?").unwrap_or("").as_bytes().to_vec()
            } else {
                changed.headers[target].1.clone()
            };
            let i = at_char.index(text.len());
            let old = text[i];
            if old == replacement || equivalent(&changed, target, is_query, &text, i, replacement) {
                return Ok(());
            }
            text[i] = replacement;
            if is_query {
                changed.uri = format!("/?{}", String::from_utf8(text).unwrap());
            } else {
                changed.headers[target].1 = text;
            }
        }
        let Some(result) = changed.verify(&verifier, T0) else {
            return Ok(());
        };
        assert_auth_error(&result)?;
    }
}

/// Whether putting `replacement` at `i` of `text` (a header value or the
/// query string) leaves what SigV4 signs the same, so that accepting it is
/// right: another case of a hex digit of the signature or of a `%XX` escape,
/// and a `,` for the space after a comma in `Authorization` (empty
/// parameters are skipped).
fn equivalent(
    req: &Req,
    target: usize,
    is_query: bool,
    text: &[u8],
    i: usize,
    replacement: u8,
) -> bool {
    let old = text[i];
    let case_flip = old.is_ascii_hexdigit() && old.eq_ignore_ascii_case(&replacement);
    if is_query {
        let in_escape = (i >= 1 && text[i - 1] == b'%') || (i >= 2 && text[i - 2] == b'%');
        let in_signature = find(text, b"X-Amz-Signature=").is_some_and(|s| i >= s + 16)
            && !text[find(text, b"X-Amz-Signature=").unwrap()..i].contains(&b'&');
        return case_flip && (in_escape || in_signature);
    }
    if req.headers[target].0 != "authorization" {
        return false;
    }
    let in_signature = find(text, b"Signature=").is_some_and(|s| i >= s + 10)
        && !text[find(text, b"Signature=").unwrap()..i].contains(&b',');
    (case_flip && in_signature)
        || (old == b' ' && replacement == b',' && i > 0 && text[i - 1] == b',')
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
