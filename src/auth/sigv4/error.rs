//! Why a signature was refused: the facts, not the words.
//!
//! The exception a client sees and its text are AWS's, and are chosen in
//! `crate::error` (`From<SignatureError> for KmsError`), the one place where
//! AWS's names and messages live.

/// A refused signature, one variant per check, in the order the checks run
/// (see the module documentation of [`super`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// No SigV4 authentication at all, and anonymous access is off.
    Missing,
    /// An `Authorization` header and `X-Amz-Algorithm` in the query string.
    HeaderAndQuery,
    /// Query-string (presigned) authentication, which the config does not
    /// enable.
    QueryAuthDisabled,
    /// A part of the `Authorization` header without `=`. `authorization` is
    /// the header with its signature redacted.
    NotKeyValue { part: String, authorization: String },
    /// Parameters the `Authorization` header form needs; each flag says
    /// whether that one is missing.
    MissingHeaderParams {
        credential: bool,
        signed_headers: bool,
        signature: bool,
        date: bool,
        authorization: String,
    },
    /// The query parameters the presigned form needs and lacks, in order.
    MissingQueryParams(Vec<&'static str>),
    /// `X-Amz-Expires` past the one-week limit.
    ExpiresTooLong { max_secs: u64 },
    /// `X-Amz-Expires` that is not a number.
    ExpiresNotNumber,
    /// A request date that is not in the expected format, as received.
    MalformedDate(String),
    /// The request time is too far in the past. Times in SigV4's basic
    /// format; `window_secs` is the allowed age.
    Expired {
        request: String,
        earliest: String,
        now: String,
        window_secs: i64,
    },
    /// The request time is too far in the future.
    NotYetCurrent {
        request: String,
        latest: String,
        now: String,
        window_secs: i64,
    },
    /// A header that must be signed and is not in the signed headers.
    Unsigned(UnsignedHeader),
    /// A header named among the signed headers that the request lacks.
    SignedHeaderAbsent(String),
    /// An algorithm other than AWS4-HMAC-SHA256.
    UnsupportedAlgorithm(String),
    /// A credential that is not `keyid/date/region/service/terminator`.
    MalformedCredential(String),
    /// A credential scoped to something else than this endpoint.
    Scope(ScopeMismatch),
    /// An access key id the config does not know.
    UnknownAccessKey,
    /// A session token: temporary credentials of some other issuer.
    SessionToken,
    /// An `x-amz-content-sha256` that opts out of signing the body
    /// (`UNSIGNED-PAYLOAD`, `STREAMING-...`), as received.
    UnsignedPayload(String),
    /// An `x-amz-content-sha256` that is not the body's SHA-256.
    ContentSha256Mismatch,
    /// The signature is not the one the secret gives.
    Mismatch,
    /// HMAC refused a key (cannot happen; mapped rather than unwrapped).
    Internal,
}

/// A header that must be signed, by the rule that requires it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsignedHeader {
    /// `host` (or `:authority`), always.
    Host,
    /// `x-amz-date`, when the request has it.
    AmzDate,
    /// Any other `x-amz-*` header the request has, by its (lower-case) name.
    Amz(String),
}

/// What is wrong with a credential scope; AWS reports every part at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeMismatch {
    pub region: bool,
    pub service: bool,
    /// The terminator given, when it is not `aws4_request`.
    pub terminator: Option<String>,
    /// The scope day, when it is not the request's.
    pub date: Option<DateMismatch>,
}

/// A scope day other than the request's day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateMismatch {
    pub scope: String,
    pub request_day: String,
    pub request_time: String,
}
