//! The errors a client can see, and the one place they map onto the wire.
//!
//! Every failure that reaches a client is a [`KmsError`]. Lower layers (the
//! token, the key store, SigV4 verification) keep their own error types and
//! convert into this one, so the exception name, the HTTP status and the
//! message text AWS KMS would send are decided here and nowhere else.

use http::StatusCode;

/// An error as AWS KMS reports it: an exception name (`__type`), an HTTP
/// status and, for most exceptions, a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    #[error("ValidationException: {0}")]
    Validation(String),
    #[error("SerializationException: {0}")]
    Serialization(String),
    #[error("UnknownOperationException")]
    UnknownOperation,
    #[error("NotFoundException: {0}")]
    NotFound(String),
    #[error("DisabledException: {0}")]
    Disabled(String),
    #[error("KMSInvalidStateException: {0}")]
    InvalidState(String),
    /// AWS sends this one with no message member at all.
    #[error("InvalidCiphertextException")]
    InvalidCiphertext,
    #[error("IncorrectKeyException")]
    IncorrectKey,
    #[error("AccessDeniedException: {0}")]
    AccessDenied(String),
    #[error("AlreadyExistsException: {0}")]
    AlreadyExists(String),
    #[error("InvalidAliasNameException: {0}")]
    InvalidAliasName(String),
    #[error("InvalidMarkerException: {0}")]
    InvalidMarker(String),
    #[error("LimitExceededException: {0}")]
    LimitExceeded(String),
    #[error("TagException: {0}")]
    Tag(String),
    #[error("InvalidKeyUsageException: {0}")]
    InvalidKeyUsage(String),
    #[error("UnsupportedOperationException")]
    UnsupportedOperation(Option<String>),
    #[error("DryRunOperationException")]
    DryRunOperation,
    #[error("MissingAuthenticationTokenException: {0}")]
    MissingAuthenticationToken(String),
    #[error("IncompleteSignatureException: {0}")]
    IncompleteSignature(String),
    #[error("UnrecognizedClientException")]
    UnrecognizedClient,
    #[error("InvalidSignatureException: {0}")]
    InvalidSignature(String),
    #[error("ThrottlingException")]
    Throttling,
    #[error("RequestEntityTooLargeException: {0}")]
    PayloadTooLarge(String),
    /// The client did not send its request (the body) in time. The name is
    /// one the SDKs classify as transient, so they retry it.
    #[error("RequestTimeoutException: {0}")]
    RequestTimeout(String),
    #[error("DependencyTimeoutException: {0}")]
    DependencyTimeout(String),
    #[error("KeyUnavailableException: {0}")]
    KeyUnavailable(String),
    #[error("KMSInternalException: {0}")]
    Internal(String),
}

impl KmsError {
    /// The exception name sent as `__type` and `X-Amzn-ErrorType`.
    pub fn type_name(&self) -> &'static str {
        match self {
            KmsError::Validation(_) => "ValidationException",
            KmsError::Serialization(_) => "SerializationException",
            KmsError::UnknownOperation => "UnknownOperationException",
            KmsError::NotFound(_) => "NotFoundException",
            KmsError::Disabled(_) => "DisabledException",
            KmsError::InvalidState(_) => "KMSInvalidStateException",
            KmsError::InvalidCiphertext => "InvalidCiphertextException",
            KmsError::IncorrectKey => "IncorrectKeyException",
            KmsError::AccessDenied(_) => "AccessDeniedException",
            KmsError::AlreadyExists(_) => "AlreadyExistsException",
            KmsError::InvalidAliasName(_) => "InvalidAliasNameException",
            KmsError::InvalidMarker(_) => "InvalidMarkerException",
            KmsError::LimitExceeded(_) => "LimitExceededException",
            KmsError::Tag(_) => "TagException",
            KmsError::InvalidKeyUsage(_) => "InvalidKeyUsageException",
            KmsError::UnsupportedOperation(_) => "UnsupportedOperationException",
            KmsError::DryRunOperation => "DryRunOperationException",
            KmsError::MissingAuthenticationToken(_) => "MissingAuthenticationTokenException",
            KmsError::IncompleteSignature(_) => "IncompleteSignatureException",
            KmsError::UnrecognizedClient => "UnrecognizedClientException",
            KmsError::InvalidSignature(_) => "InvalidSignatureException",
            KmsError::Throttling => "ThrottlingException",
            KmsError::PayloadTooLarge(_) => "RequestEntityTooLargeException",
            KmsError::RequestTimeout(_) => "RequestTimeoutException",
            KmsError::DependencyTimeout(_) => "DependencyTimeoutException",
            KmsError::KeyUnavailable(_) => "KeyUnavailableException",
            KmsError::Internal(_) => "KMSInternalException",
        }
    }

    /// Client faults are 400; the three server faults of the KMS model are 500.
    pub fn status(&self) -> StatusCode {
        match self {
            KmsError::DependencyTimeout(_)
            | KmsError::KeyUnavailable(_)
            | KmsError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            KmsError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            KmsError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The `message` member, or `None` where AWS sends none.
    pub fn message(&self) -> Option<String> {
        match self {
            KmsError::InvalidCiphertext => None,
            KmsError::UnsupportedOperation(m) => m.clone(),
            KmsError::UnknownOperation => None,
            KmsError::IncorrectKey => Some(
                "The key ID in the request does not identify a CMK that can perform this operation."
                    .to_owned(),
            ),
            KmsError::UnrecognizedClient => {
                Some("The security token included in the request is invalid.".to_owned())
            }
            KmsError::Throttling => Some("Rate exceeded".to_owned()),
            KmsError::DryRunOperation => Some(
                "The request would have succeeded, but the DryRun option is set.".to_owned(),
            ),
            KmsError::Validation(m)
            | KmsError::Serialization(m)
            | KmsError::NotFound(m)
            | KmsError::Disabled(m)
            | KmsError::InvalidState(m)
            | KmsError::AccessDenied(m)
            | KmsError::AlreadyExists(m)
            | KmsError::InvalidAliasName(m)
            | KmsError::InvalidMarker(m)
            | KmsError::LimitExceeded(m)
            | KmsError::Tag(m)
            | KmsError::InvalidKeyUsage(m)
            | KmsError::MissingAuthenticationToken(m)
            | KmsError::IncompleteSignature(m)
            | KmsError::InvalidSignature(m)
            | KmsError::PayloadTooLarge(m)
            | KmsError::RequestTimeout(m)
            | KmsError::DependencyTimeout(m)
            | KmsError::KeyUnavailable(m)
            | KmsError::Internal(m) => Some(m.clone()),
        }
    }

    /// The JSON error body: `{"__type": ..., "message": ...}`, with no
    /// `message` member where AWS sends none.
    pub fn body(&self) -> Vec<u8> {
        let mut body = serde_json::Map::new();
        body.insert("__type".into(), self.type_name().into());
        if let Some(m) = self.message() {
            body.insert("message".into(), m.into());
        }
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// The message of a KMSInternalException for a failure the gateway cannot
/// explain to the client (a bug: a handler panicked). AWS's generic text.
pub const INTERNAL_FAILURE: &str =
    "The request processing has failed because of an unknown error, exception or failure.";

pub type KmsResult<T> = Result<T, KmsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_ciphertext_has_no_message_member() {
        let body: serde_json::Value =
            serde_json::from_slice(&KmsError::InvalidCiphertext.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"__type": "InvalidCiphertextException"})
        );
    }

    #[test]
    fn server_faults_are_500_client_faults_400() {
        assert_eq!(KmsError::Internal("x".into()).status(), 500);
        assert_eq!(KmsError::DependencyTimeout("x".into()).status(), 500);
        assert_eq!(KmsError::KeyUnavailable("x".into()).status(), 500);
        assert_eq!(KmsError::NotFound("x".into()).status(), 400);
        assert_eq!(KmsError::Throttling.status(), 400);
    }
}
