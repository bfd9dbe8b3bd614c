//! What an EXTERNAL key's record holds about its import
//! ([`super::import`]): its origin, the pending import parameters and the
//! imported material; and the rules on them (the import token's check,
//! the record without its material, the expiry).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::StoreError;
use super::record::version_label;
use super::{KeyRecord, KeyState};

use crate::hsm::import::Unwrapping;

/// Where a key's material comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Origin {
    #[default]
    #[serde(rename = "AWS_KMS")]
    AwsKms,
    #[serde(rename = "EXTERNAL")]
    External,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::AwsKms => "AWS_KMS",
            Origin::External => "EXTERNAL",
        }
    }

    pub fn is_aws_kms(&self) -> bool {
        *self == Origin::AwsKms
    }
}

/// How the caller wraps the material (GetParametersForImport's
/// WrappingAlgorithm), as kmsgate supports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WrappingAlgorithm {
    #[serde(rename = "RSAES_OAEP_SHA_1")]
    RsaesOaepSha1,
    #[serde(rename = "RSAES_OAEP_SHA_256")]
    RsaesOaepSha256,
    #[serde(rename = "RSA_AES_KEY_WRAP_SHA_1")]
    RsaAesKeyWrapSha1,
    #[serde(rename = "RSA_AES_KEY_WRAP_SHA_256")]
    RsaAesKeyWrapSha256,
}

impl WrappingAlgorithm {
    pub const ALL: [WrappingAlgorithm; 4] = [
        WrappingAlgorithm::RsaesOaepSha1,
        WrappingAlgorithm::RsaesOaepSha256,
        WrappingAlgorithm::RsaAesKeyWrapSha1,
        WrappingAlgorithm::RsaAesKeyWrapSha256,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WrappingAlgorithm::RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
            WrappingAlgorithm::RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
            WrappingAlgorithm::RsaAesKeyWrapSha1 => "RSA_AES_KEY_WRAP_SHA_1",
            WrappingAlgorithm::RsaAesKeyWrapSha256 => "RSA_AES_KEY_WRAP_SHA_256",
        }
    }

    pub fn parse(s: &str) -> Option<WrappingAlgorithm> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub(super) fn unwrapping(self) -> Unwrapping {
        match self {
            WrappingAlgorithm::RsaesOaepSha1 => Unwrapping::OaepSha1,
            WrappingAlgorithm::RsaesOaepSha256 => Unwrapping::OaepSha256,
            WrappingAlgorithm::RsaAesKeyWrapSha1 => Unwrapping::RsaAesSha1,
            WrappingAlgorithm::RsaAesKeyWrapSha256 => Unwrapping::RsaAesSha256,
        }
    }
}

/// An EXTERNAL key's import state, in its record.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImportRecord {
    /// The parameters of the latest GetParametersForImport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingImport>,
    /// Hex SHA-256 of the check value the token computed with the material
    /// at its first import ([`hsm_import::Imported`]); never the material.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_value: Option<String>,
    /// The material now on the token, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub material: Option<ImportedMaterial>,
    /// GCM encryptions reserved under version 1 before its material was
    /// deleted: the same material coming back carries on counting.
    #[serde(default)]
    pub encryptions_reserved: u64,
}

/// What an import token stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingImport {
    /// Hex SHA-256 of the import token.
    pub token_digest: String,
    /// The wrapping pair's label; `None` once the pair is destroyed
    /// (expired).
    pub wrapping_label: Option<String>,
    pub algorithm: WrappingAlgorithm,
    pub wrapping_bits: u32,
    /// Epoch seconds.
    pub valid_to: f64,
}

/// Imported material on the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedMaterial {
    /// Epoch seconds.
    pub imported: f64,
    /// Epoch seconds; `None`: KEY_MATERIAL_DOES_NOT_EXPIRE.
    pub valid_to: Option<f64>,
}

/// The import token's format byte and length (format, key id, random).
pub(super) const TOKEN_FORMAT: u8 = 1;
pub(super) const TOKEN_LEN: usize = 1 + 16 + 32;

pub(super) fn digest_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks `import_token` against the record's pending parameters.
pub(super) fn check_token<'r>(
    r: &'r KeyRecord,
    import_token: &[u8],
    now: f64,
) -> Result<&'r PendingImport, StoreError> {
    let pending = r.import.as_ref().and_then(|i| i.pending.as_ref());
    let ours = import_token.len() == TOKEN_LEN
        && import_token[0] == TOKEN_FORMAT
        && import_token[1..17] == *r.key_id.as_bytes();
    match pending {
        Some(p) if ours && p.token_digest == digest_hex(import_token) => {
            if p.valid_to <= now || p.wrapping_label.is_none() {
                Err(StoreError::ExpiredImportToken)
            } else {
                Ok(p)
            }
        }
        _ => Err(StoreError::InvalidImportToken),
    }
}

/// The record's state once its material is gone: PendingImport, unless
/// the key is pending deletion (it stays so).
pub(super) fn without_material(r: &mut KeyRecord) -> Vec<String> {
    let id = r.key_id;
    let labels = r
        .versions
        .iter()
        .map(|v| version_label(&id, v.version, &v.nonce))
        .collect();
    let reserved = r
        .versions
        .iter()
        .map(|v| v.encryptions_reserved)
        .max()
        .unwrap_or(0);
    r.versions.clear();
    if r.state != KeyState::PendingDeletion {
        r.state = KeyState::PendingImport;
    }
    let import = r.import.get_or_insert_with(ImportRecord::default);
    import.material = None;
    import.encryptions_reserved = import.encryptions_reserved.max(reserved);
    labels
}

/// Whether an EXTERNAL key's material or its wrapping pair has expired.
pub(crate) fn import_due(r: &KeyRecord, now: f64) -> bool {
    let Some(i) = &r.import else {
        return false;
    };
    let material = i
        .material
        .as_ref()
        .and_then(|m| m.valid_to)
        .is_some_and(|t| t <= now);
    let pair = i
        .pending
        .as_ref()
        .is_some_and(|p| p.wrapping_label.is_some() && p.valid_to <= now);
    material || pair
}

/// The wrapping pair a key's record names, to destroy with the key.
pub(crate) fn wrapping_label(r: &KeyRecord) -> Option<String> {
    r.import
        .as_ref()
        .and_then(|i| i.pending.as_ref())
        .and_then(|p| p.wrapping_label.clone())
}
