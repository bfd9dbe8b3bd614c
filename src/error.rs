//! The errors a client can see, and the one place they map onto the wire.
//!
//! Every failure that reaches a client is a [`KmsError`]. The layers below
//! `ops` keep their own error types, which carry data and no client text:
//! the token's [`HsmError`] (with its [`Fault`] class), the key store's
//! [`StoreError`] and [`KeyRefError`] for a KeyId that cannot name a key.
//! They become a `KmsError` here, through `From`, so the exception name,
//! the HTTP status and the message text AWS KMS would send are decided in
//! this file: a token fault by its class (busy: ThrottlingException; a
//! deadline: DependencyTimeoutException; a rejected GCM tag:
//! InvalidCiphertextException; unavailable, fatal, stale:
//! KeyUnavailableException; not durable and everything else:
//! KMSInternalException; never NotFoundException or AccessDenied), the
//! key store's findings by what they are. A refused SigV4 signature is a
//! `SignatureError`, worded as AWS's front end words it in [`signature`]. `auth` and
//! `ops` build a `KmsError` directly only for what is theirs to judge
//! (permissions, request validation).

use http::StatusCode;

use crate::arn::KeyRefError;
use crate::hsm::{Fault, HsmError};
use crate::keystore::StoreError;
use crate::policy::{PolicyError, Refusal};

mod key_use;
mod signature;

pub use key_use::{
    RSA_CONTEXT, RSA_KEY_ID_REQUIRED, digest_length, incompatible_algorithm,
    invalid_peer_public_key, oaep_too_long, wrong_key_usage,
};
pub use signature::SIGNATURE_MISMATCH;

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
    /// VerifyMac of a MAC that does not verify. AWS sends no message.
    #[error("KMSInvalidMacException")]
    InvalidMac,
    /// Verify's answer to a signature that does not verify (not SigV4's
    /// InvalidSignatureException).
    #[error("KMSInvalidSignatureException")]
    KmsInvalidSignature,
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
    #[error("MalformedPolicyDocumentException: {0}")]
    MalformedPolicyDocument(String),
    #[error("InvalidGrantTokenException: {0}")]
    InvalidGrantToken(String),
    #[error("InvalidGrantIdException: {0}")]
    InvalidGrantId(String),
    #[error("InvalidImportTokenException: {0}")]
    InvalidImportToken(String),
    #[error("ExpiredImportTokenException: {0}")]
    ExpiredImportToken(String),
    #[error("IncorrectKeyMaterialException: {0}")]
    IncorrectKeyMaterial(String),
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
            KmsError::InvalidMac => "KMSInvalidMacException",
            KmsError::KmsInvalidSignature => "KMSInvalidSignatureException",
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
            KmsError::MalformedPolicyDocument(_) => "MalformedPolicyDocumentException",
            KmsError::InvalidGrantToken(_) => "InvalidGrantTokenException",
            KmsError::InvalidGrantId(_) => "InvalidGrantIdException",
            KmsError::InvalidImportToken(_) => "InvalidImportTokenException",
            KmsError::ExpiredImportToken(_) => "ExpiredImportTokenException",
            KmsError::IncorrectKeyMaterial(_) => "IncorrectKeyMaterialException",
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
            KmsError::InvalidCiphertext | KmsError::InvalidMac | KmsError::KmsInvalidSignature => {
                None
            }
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
            | KmsError::MalformedPolicyDocument(m)
            | KmsError::InvalidGrantToken(m)
            | KmsError::InvalidGrantId(m)
            | KmsError::InvalidImportToken(m)
            | KmsError::ExpiredImportToken(m)
            | KmsError::IncorrectKeyMaterial(m)
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

/// The message of a KMSInternalException for a request that cannot be
/// audited (the audit log cannot be written): kmsgate's text.
pub const AUDIT_UNAVAILABLE: &str =
    "The request cannot be audited because the audit log cannot be written. Retry the request.";

pub type KmsResult<T> = Result<T, KmsError>;

/// RotateKeyOnDemand of an EXTERNAL key with no new material imported
/// for rotation, in AWS's words.
pub fn no_material_pending_rotation(key_arn: &str) -> KmsError {
    KmsError::InvalidState(format!(
        "No available key material pending rotation for the key: {key_arn}."
    ))
}

/// GetParametersForImport with a wrapping algorithm or key spec kmsgate
/// does not offer: RSAES_PKCS1_V1_5 (which AWS no longer accepts either)
/// and the SM2 ones (China Regions only on AWS).
pub fn unsupported_wrapping(algorithm: &str, key_spec: &str) -> KmsError {
    if algorithm == "RSAES_PKCS1_V1_5" {
        return KmsError::Validation(
            "The RSAES_PKCS1_V1_5 wrapping algorithm is not supported. Use RSAES_OAEP_SHA_256 or RSA_AES_KEY_WRAP_SHA_256.".into(),
        );
    }
    KmsError::UnsupportedOperation(Some(format!(
        "WrappingAlgorithm {algorithm} with WrappingKeySpec {key_spec} is not supported by kmsgate: use an RSA wrapping key spec with an RSAES_OAEP or RSA_AES_KEY_WRAP algorithm."
    )))
}

/// GetParametersForImport with an RSAES_OAEP wrapping algorithm for key
/// material it cannot wrap: an RSA private key, or (with an RSA_2048
/// wrapping key) an ECC_NIST_P521 one; AWS's rule.
pub fn wrapping_unfit(algorithm: &str, wrapping_key_spec: &str, key_spec: &str) -> KmsError {
    KmsError::Validation(format!(
        "The {algorithm} wrapping algorithm with the {wrapping_key_spec} wrapping key spec cannot wrap key material of KeySpec {key_spec}. Use RSA_AES_KEY_WRAP_SHA_1 or RSA_AES_KEY_WRAP_SHA_256."
    ))
}

/// The rules for ImportKeyMaterial's ValidTo and ExpirationModel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidToRule {
    /// KEY_MATERIAL_EXPIRES (the default) without a ValidTo.
    Required,
    /// A ValidTo with KEY_MATERIAL_DOES_NOT_EXPIRE.
    Forbidden,
    /// A ValidTo that is not in the future.
    Past,
    /// A ValidTo more than 365 days ahead.
    TooFar,
}

/// ValidationException for a broken [`ValidToRule`], in AWS's words
/// where recorded.
pub fn valid_to_rule(rule: ValidToRule) -> KmsError {
    KmsError::Validation(
        match rule {
            ValidToRule::Required => {
                "A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES"
            }
            ValidToRule::Forbidden => {
                "The parameter ValidTo cannot be specified for a key with an expiration model of KEY_MATERIAL_DOES_NOT_EXPIRE"
            }
            ValidToRule::Past => "ValidTo must be in the future",
            ValidToRule::TooFar => "ValidTo must be at most 365 days in the future",
        }
        .into(),
    )
}

/// CreateKey with Origin EXTERNAL for a key spec whose material kmsgate
/// cannot import.
pub fn external_spec_unsupported(key_spec: &str) -> KmsError {
    KmsError::UnsupportedOperation(Some(format!(
        "Origin EXTERNAL with KeySpec {key_spec} is not supported by kmsgate."
    )))
}

/// ImportKeyMaterial with ImportType NEW_KEY_MATERIAL (a rotation of
/// imported material), which kmsgate does not do.
pub fn new_key_material_unsupported() -> KmsError {
    KmsError::UnsupportedOperation(Some(
        "kmsgate does not rotate imported key material: ImportType NEW_KEY_MATERIAL is not supported.".into(),
    ))
}

/// DeleteImportedKeyMaterial naming a KeyMaterialId the key does not have.
pub fn no_such_material(material_id: &str, key_arn: &str) -> KmsError {
    KmsError::NotFound(format!(
        "Key material {material_id} does not exist for key {key_arn}"
    ))
}

/// AccessDeniedException in AWS's words, for `principal_arn` refused
/// `action` (`kms:Decrypt`) on `resource` (a key ARN; `None` for an
/// operation on no key, where AWS names no resource).
pub fn access_denied(
    principal_arn: &str,
    action: &str,
    resource: Option<&str>,
    refusal: Refusal,
) -> KmsError {
    let on = resource
        .map(|r| format!(" on resource: {r}"))
        .unwrap_or_default();
    let why = match refusal {
        Refusal::DenyInKeyPolicy => "with an explicit deny in a resource-based policy".to_owned(),
        Refusal::DenyInIdentityPolicy => {
            "with an explicit deny in an identity-based policy".to_owned()
        }
        Refusal::NoIdentityAllow => {
            format!("because no identity-based policy allows the {action} action")
        }
        Refusal::NoKeyPolicyAllow => {
            format!("because no resource-based policy allows the {action} action")
        }
    };
    KmsError::AccessDenied(format!(
        "User: {principal_arn} is not authorized to perform: {action}{on} {why}"
    ))
}

/// A key policy that does not parse, or says what kmsgate cannot evaluate.
impl From<PolicyError> for KmsError {
    fn from(e: PolicyError) -> Self {
        KmsError::MalformedPolicyDocument(e.0)
    }
}

/// AWS's refusal of a key policy under which the caller could not change
/// the policy again (unless BypassPolicyLockoutSafetyCheck is set).
pub const POLICY_LOCKOUT: &str =
    "The new key policy will not allow you to update the key policy in the future.";

/// A signed request whose TLS client certificate does not name the signing
/// principal (`tls.client_cert_principal`). AWS has no such check; the
/// exception is the one AWS uses for every refusal of a valid signature.
pub fn client_cert_mismatch(principal: &str) -> KmsError {
    KmsError::AccessDenied(format!(
        "User: {principal} is not authorized to perform this request: the TLS client certificate does not name this principal"
    ))
}

/// AWS's text for every 5xx the key store gives for a token it cannot use.
const STORE_UNAVAILABLE: &str = "The key store is unavailable. Retry the request.";
/// The text of a KMSInternalException for a failure inside the key store.
const STORE_INTERNAL: &str = "An internal error occurred in the key store.";

impl From<KeyRefError> for KmsError {
    fn from(e: KeyRefError) -> Self {
        KmsError::NotFound(match e {
            KeyRefError::MalformedArn { arn } => format!("Invalid arn {arn}"),
            KeyRefError::OtherRegion { region } => format!("Invalid arn {region}"),
            KeyRefError::MalformedKeyId { key_id } => format!("Invalid keyId '{key_id}'"),
        })
    }
}

impl From<StoreError> for KmsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::KeyRef(e) => e.into(),
            StoreError::KeyNotFound { arn } => {
                KmsError::NotFound(format!("Key '{arn}' does not exist"))
            }
            StoreError::AliasNotFound { arn } => {
                KmsError::NotFound(format!("Alias {arn} is not found."))
            }
            StoreError::AliasExists { arn } => {
                KmsError::AlreadyExists(format!("An alias with the name {arn} already exists"))
            }
            StoreError::Disabled { arn } => KmsError::Disabled(format!("{arn} is disabled.")),
            StoreError::PendingDeletion { arn } => {
                KmsError::InvalidState(format!("{arn} is pending deletion."))
            }
            StoreError::PendingImport { arn } => {
                KmsError::InvalidState(format!("{arn} is pending import."))
            }
            StoreError::WrongOrigin { arn, origin } => KmsError::UnsupportedOperation(Some(
                format!("{arn} origin is {origin} which is not valid for this operation."),
            )),
            StoreError::InvalidImportToken => KmsError::InvalidImportToken(
                "The import token is not valid for this key. Use the ImportToken of the key's latest GetParametersForImport.".into(),
            ),
            StoreError::ExpiredImportToken => KmsError::ExpiredImportToken(
                "The import token has expired. Call GetParametersForImport for a new one.".into(),
            ),
            StoreError::IncorrectKeyMaterial => KmsError::IncorrectKeyMaterial(
                "The key material does not match the key material previously imported into this KMS key.".into(),
            ),
            StoreError::MaterialUndecryptable => KmsError::InvalidCiphertext,
            StoreError::EncryptedKeySize => {
                KmsError::Validation("Invalid encrypted key size.".into())
            }
            StoreError::MaterialWrongLength { key_spec } => KmsError::IncorrectKeyMaterial(
                format!("The key material is not valid for a KMS key of spec {key_spec}: it has the wrong length."),
            ),
            StoreError::MaterialWrongKey { key_spec } => KmsError::IncorrectKeyMaterial(format!(
                "The key material is not valid for a KMS key of spec {key_spec}: it is not a private key of that type and size or curve."
            )),
            StoreError::MaterialPresent { arn } => KmsError::InvalidState(format!(
                "{arn} already has imported key material. Delete it with DeleteImportedKeyMaterial before importing again."
            )),
            StoreError::ImportUnsupported(what) => KmsError::UnsupportedOperation(Some(format!(
                "The token cannot unwrap with {what}, which this WrappingAlgorithm needs. Use another WrappingAlgorithm."
            ))),
            StoreError::OnDemandRotationLimit { arn } => KmsError::LimitExceeded(format!(
                "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: {arn}"
            )),
            // Not LimitExceededException: SDKs retry that one as a
            // throttle (botocore's standard retry mode lists it), and this
            // key will never encrypt again. The key's state is what stops
            // it, as for a key pending import.
            StoreError::UsageLimit { arn } => KmsError::InvalidState(format!(
                "{arn} has reached its usage limit for AES-GCM encryption: its imported key material has made as many encryptions as one key may safely make, and kmsgate never replaces imported material. It still decrypts. To encrypt, import new key material into a new key and use that key."
            )),
            StoreError::PrimaryVersionMissing { arn } => {
                KmsError::KeyUnavailable(format!("{arn} is unavailable."))
            }
            StoreError::NoSuchVersion => KmsError::InvalidCiphertext,
            StoreError::Unreadable { .. } => KmsError::KeyUnavailable(STORE_UNAVAILABLE.into()),
            StoreError::Foreign { .. } => KmsError::Internal(
                "The key store holds a record written by a newer kmsgate, which this gateway neither reads nor changes. Retry the request.".into(),
            ),
            StoreError::Conflict => KmsError::Internal(
                "The key was being changed concurrently by another gateway. Retry the request."
                    .into(),
            ),
            StoreError::UsageNotReserved => KmsError::Internal(
                "Could not reserve GCM encryptions for the key. Retry the request.".into(),
            ),
            StoreError::Token(e) => token_fault(&e),
            StoreError::LockPoisoned => KmsError::Internal(STORE_INTERNAL.into()),
            StoreError::Internal(detail) => KmsError::Internal(detail),
        }
    }
}

/// A token failure, by its class: always a retryable 5xx (or throttling),
/// never NotFoundException or AccessDeniedException (DESIGN.md decision
/// 13). The details were logged where the failure was met. Not a `From`:
/// a token failure reaches a client only through the key store.
fn token_fault(e: &HsmError) -> KmsError {
    match e.fault() {
        Fault::Busy => KmsError::Throttling,
        Fault::Timeout => KmsError::DependencyTimeout(
            "The key store did not answer in time. Retry the request.".into(),
        ),
        Fault::BadInput if matches!(e, HsmError::BadTag) => KmsError::InvalidCiphertext,
        Fault::Retryable | Fault::Fatal | Fault::StaleHandle => {
            KmsError::KeyUnavailable(STORE_UNAVAILABLE.into())
        }
        Fault::NotDurable => KmsError::Internal(
            "The key store could not confirm the change. Nothing was changed; retry the request."
                .into(),
        ),
        Fault::BadInput | Fault::Setup => KmsError::Internal(STORE_INTERNAL.into()),
    }
}

#[cfg(test)]
mod tests;
