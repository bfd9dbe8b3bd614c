//! The XKS spec's error table: `errorName`, HTTP status, and the
//! single-line JSON body `{"errorName":..,"errorMessage":..}` (AWS's
//! compliance client parses the last line of the answer). Every refusal of
//! an XKS request, from any layer, is one of these.

use http::StatusCode;
use serde::Serialize;

use crate::hsm::{Fault, HsmError};
use crate::keystore::StoreError;

/// The spec's error names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XksErrorName {
    Validation,
    InvalidState,
    InvalidCiphertext,
    InvalidKeyUsage,
    AuthenticationFailed,
    AccessDenied,
    KeyNotFound,
    InvalidUriPath,
    Throttling,
    UnsupportedOperation,
    DependencyTimeout,
    Internal,
    /// Not the spec's: a method other than POST on an XKS path (the spec
    /// requires 405 and names no error for it); sent as ValidationException.
    MethodNotAllowed,
}

impl XksErrorName {
    pub fn as_str(self) -> &'static str {
        match self {
            XksErrorName::Validation | XksErrorName::MethodNotAllowed => "ValidationException",
            XksErrorName::InvalidState => "InvalidStateException",
            XksErrorName::InvalidCiphertext => "InvalidCiphertextException",
            XksErrorName::InvalidKeyUsage => "InvalidKeyUsageException",
            XksErrorName::AuthenticationFailed => "AuthenticationFailedException",
            XksErrorName::AccessDenied => "AccessDeniedException",
            XksErrorName::KeyNotFound => "KeyNotFoundException",
            XksErrorName::InvalidUriPath => "InvalidUriPathException",
            XksErrorName::Throttling => "ThrottlingException",
            XksErrorName::UnsupportedOperation => "UnsupportedOperationException",
            XksErrorName::DependencyTimeout => "DependencyTimeoutException",
            XksErrorName::Internal => "InternalException",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            XksErrorName::Validation
            | XksErrorName::InvalidState
            | XksErrorName::InvalidCiphertext
            | XksErrorName::InvalidKeyUsage => StatusCode::BAD_REQUEST,
            XksErrorName::AuthenticationFailed => StatusCode::UNAUTHORIZED,
            XksErrorName::AccessDenied => StatusCode::FORBIDDEN,
            XksErrorName::KeyNotFound | XksErrorName::InvalidUriPath => StatusCode::NOT_FOUND,
            XksErrorName::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            XksErrorName::Throttling => StatusCode::TOO_MANY_REQUESTS,
            XksErrorName::UnsupportedOperation => StatusCode::NOT_IMPLEMENTED,
            XksErrorName::DependencyTimeout => StatusCode::SERVICE_UNAVAILABLE,
            XksErrorName::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An XKS refusal: its name and a message (printable ASCII, under 512
/// characters, never a secret).
#[derive(Debug, Clone)]
pub struct XksError {
    pub name: XksErrorName,
    pub message: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    error_name: &'static str,
    error_message: &'a str,
}

impl XksError {
    pub fn new(name: XksErrorName, message: impl Into<String>) -> XksError {
        XksError {
            name,
            message: printable(&message.into()),
        }
    }

    pub fn validation(message: impl Into<String>) -> XksError {
        XksError::new(XksErrorName::Validation, message)
    }

    pub fn invalid_ciphertext() -> XksError {
        XksError::new(
            XksErrorName::InvalidCiphertext,
            "The ciphertext, ciphertext metadata, initialization vector, additional authenticated data or authentication tag is corrupted, missing or otherwise invalid.",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.name.status()
    }

    pub fn error_name(&self) -> &'static str {
        self.name.as_str()
    }

    /// The answer's body: one line of JSON.
    pub fn body(&self) -> String {
        serde_json::to_string(&Body {
            error_name: self.name.as_str(),
            error_message: &self.message,
        })
        .unwrap_or_else(|_| format!("{{\"errorName\":\"{}\"}}", self.name.as_str()))
    }
}

/// `s` as the spec allows a message: printable ASCII, under 512 characters.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(511)
        .collect()
}

impl From<StoreError> for XksError {
    fn from(e: StoreError) -> Self {
        use XksErrorName as N;
        match e {
            StoreError::KeyRef(_)
            | StoreError::KeyNotFound { .. }
            | StoreError::AliasNotFound { .. } => XksError::new(
                N::KeyNotFound,
                "The external key is not found: the kmsgate key it names does not exist.",
            ),
            StoreError::Disabled { arn } => {
                XksError::new(N::InvalidState, format!("{arn} is disabled."))
            }
            StoreError::PendingDeletion { arn } => {
                XksError::new(N::InvalidState, format!("{arn} is pending deletion."))
            }
            StoreError::PendingImport { arn } => {
                XksError::new(N::InvalidState, format!("{arn} is pending import."))
            }
            StoreError::UsageLimit { arn } => XksError::new(
                N::InvalidState,
                format!(
                    "{arn} has reached its AES-GCM usage limit and its imported key material is never replaced; it still decrypts."
                ),
            ),
            StoreError::NoSuchVersion => XksError::invalid_ciphertext(),
            StoreError::Token(e) => token_fault(&e),
            StoreError::Unreadable { .. }
            | StoreError::Foreign { .. }
            | StoreError::Conflict
            | StoreError::UsageNotReserved
            | StoreError::PrimaryVersionMissing { .. } => XksError::new(
                N::Internal,
                "The key store is unavailable for the moment. Retry the request.",
            ),
            _ => XksError::new(N::Internal, "Internal error in the key store."),
        }
    }
}

/// A token failure by its class: always a retryable 5xx (or throttling),
/// never a 4xx, except a tag that does not verify (DESIGN.md decision 13).
fn token_fault(e: &HsmError) -> XksError {
    use XksErrorName as N;
    match e.fault() {
        Fault::Busy => XksError::new(N::Throttling, "The key manager is saturated. Retry."),
        Fault::Timeout => XksError::new(
            N::DependencyTimeout,
            "The key manager did not answer in time. Retry the request.",
        ),
        Fault::BadInput if matches!(e, HsmError::BadTag) => XksError::invalid_ciphertext(),
        _ => XksError::new(
            N::Internal,
            "The key manager (HSM) failed. Retry the request.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_one_line_with_a_printable_message() {
        let e = XksError::validation("bad\nvalue é");
        let body = e.body();
        assert!(!body.contains('\n'), "{body}");
        assert_eq!(
            body,
            r#"{"errorName":"ValidationException","errorMessage":"bad?value ?"}"#
        );
        assert_eq!(
            XksError::new(XksErrorName::KeyNotFound, "x").status(),
            StatusCode::NOT_FOUND
        );
    }
}
