//! The XKS requests and answers as serde structs, in the spec's member
//! names, and the validation of every member the spec defines. Members the
//! spec does not define are ignored (it says fields may be added, in
//! `requestMetadata` and elsewhere); a required member missing, a member
//! of the wrong type, Base64 that does not decode or a length the spec
//! does not allow is ValidationException.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::error::XksError;

/// The spec's longest `ciphertextMetadata`.
pub const MAX_METADATA: usize = 20;
/// The longest AAD the spec's 2-byte length prefix can carry.
pub const MAX_AAD: usize = u16::MAX as usize;

/// `requestMetadata`: every member optional here, so that a missing one is
/// told apart from a malformed body.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMetadata {
    pub aws_principal_arn: Option<String>,
    pub aws_source_vpc: Option<String>,
    pub aws_source_vpce: Option<String>,
    pub kms_key_arn: Option<String>,
    pub kms_operation: Option<String>,
    pub kms_request_id: Option<String>,
    pub kms_via_service: Option<String>,
}

/// GetKeyMetadata and GetHealthStatus: only `requestMetadata`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataOnly {
    pub request_metadata: Option<RequestMetadata>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptRequest {
    pub request_metadata: Option<RequestMetadata>,
    /// Moved into zeroizing memory as soon as it is parsed.
    pub plaintext: Option<String>,
    pub encryption_algorithm: Option<String>,
    pub additional_authenticated_data: Option<String>,
    pub ciphertext_data_integrity_value_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptRequest {
    pub request_metadata: Option<RequestMetadata>,
    pub ciphertext: Option<String>,
    pub ciphertext_metadata: Option<String>,
    pub encryption_algorithm: Option<String>,
    pub additional_authenticated_data: Option<String>,
    pub authentication_tag: Option<String>,
    pub initialization_vector: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataResponse {
    pub key_spec: &'static str,
    pub key_usage: Vec<&'static str>,
    pub key_status: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptResponse {
    pub ciphertext: String,
    pub ciphertext_metadata: String,
    pub initialization_vector: String,
    pub authentication_tag: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphertext_data_integrity_value: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    pub xks_proxy_fleet_size: usize,
    pub xks_proxy_vendor: &'static str,
    pub xks_proxy_model: String,
    pub ekm_vendor: String,
    pub ekm_fleet_details: Vec<EkmDetails>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EkmDetails {
    pub id: String,
    pub model: String,
    pub health_status: &'static str,
}

/// Parses a request body: not JSON, not an object or a member of the
/// wrong type is ValidationException.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, XksError> {
    serde_json::from_slice(body).map_err(|e| {
        XksError::validation(format!(
            "The request body is not a valid XKS request: {}",
            e.classify_name()
        ))
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "malformed JSON",
            serde_json::error::Category::Data => "a member has the wrong type",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// A required member.
pub fn required<'a, T: ?Sized>(value: Option<&'a T>, name: &str) -> Result<&'a T, XksError> {
    value.ok_or_else(|| XksError::validation(format!("{name} is required.")))
}

/// `requestMetadata` with the members every operation but health needs
/// (`awsPrincipalArn`, `kmsOperation`, `kmsRequestId`), and `kmsKeyArn`
/// where `key_arn` says so. Values are never validated beyond presence
/// (the spec: `kmsRequestId` is opaque, unknown `kmsOperation`s are
/// accepted).
pub fn check_metadata(
    m: Option<&RequestMetadata>,
    key_arn: bool,
    health: bool,
) -> Result<(), XksError> {
    let m = required(m, "requestMetadata")?;
    if !health {
        required(
            m.aws_principal_arn.as_deref(),
            "requestMetadata.awsPrincipalArn",
        )?;
    }
    required(m.kms_operation.as_deref(), "requestMetadata.kmsOperation")?;
    required(m.kms_request_id.as_deref(), "requestMetadata.kmsRequestId")?;
    if key_arn {
        required(m.kms_key_arn.as_deref(), "requestMetadata.kmsKeyArn")?;
    }
    Ok(())
}

/// A Base64 member decoded.
pub fn decode(value: &str, name: &str) -> Result<Vec<u8>, XksError> {
    STANDARD
        .decode(value)
        .map_err(|_| XksError::validation(format!("{name} is not valid Base64.")))
}

/// A Base64 member decoded into zeroizing memory (a plaintext).
pub fn decode_secret(value: &str, name: &str) -> Result<Zeroizing<Vec<u8>>, XksError> {
    decode(value, name).map(Zeroizing::new)
}

pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// `encryptionAlgorithm` must be AES_GCM.
pub fn check_algorithm(value: Option<&str>) -> Result<(), XksError> {
    match required(value, "encryptionAlgorithm")? {
        "AES_GCM" => Ok(()),
        _ => Err(XksError::validation("encryptionAlgorithm must be AES_GCM.")),
    }
}

/// The optional AAD, decoded, at most what its 2-byte length can carry.
pub fn aad(value: Option<&str>) -> Result<Vec<u8>, XksError> {
    let aad = match value {
        Some(v) => decode(v, "additionalAuthenticatedData")?,
        None => Vec::new(),
    };
    if aad.len() > MAX_AAD {
        return Err(XksError::validation(format!(
            "additionalAuthenticatedData is longer than {MAX_AAD} bytes."
        )));
    }
    Ok(aad)
}
