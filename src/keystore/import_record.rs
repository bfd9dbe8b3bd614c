//! What an EXTERNAL key's record holds about its import
//! ([`super::import`]): its origin, the pending import parameters and the
//! imported material. Data only, so that the key record
//! ([`super::record`]) can hold it without depending on the import code;
//! the rules on it are [`super::import_rules`].

use serde::{Deserialize, Serialize};

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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct ImportedMaterial {
    /// Epoch seconds.
    pub imported: f64,
    /// Epoch seconds; `None`: KEY_MATERIAL_DOES_NOT_EXPIRE.
    pub valid_to: Option<f64>,
}
