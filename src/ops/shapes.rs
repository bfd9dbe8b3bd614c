//! Shapes and checks that several operations share.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use super::validate::Violations;
use crate::arn::Realm;
use crate::error::{KmsError, incompatible_algorithm};
use crate::keystore::{
    EncryptionAlgorithm, Key, KeySpec, KeyState, KeyUsage, StoreError, key_material_id,
};

/// Standard base64; padding optional on input, always written on output.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A blob member (base64 in JSON).
#[derive(Clone, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

/// A sensitive blob member: zeroed on drop, never printed.
pub struct SecretBlob(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl std::fmt::Debug for SecretBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBlob(<redacted>)")
    }
}

fn decode<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = Zeroizing::new(String::deserialize(d)?);
    B64.decode(s.as_bytes())
        .map_err(|_| serde::de::Error::custom("Invalid base64 in a blob member"))
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        decode(d).map(Blob)
    }
}

impl<'de> Deserialize<'de> for SecretBlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        decode(d).map(|v| SecretBlob(Zeroizing::new(v)))
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(&self.0))
    }
}

impl Serialize for SecretBlob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(B64.encode(&*self.0));
        s.serialize_str(&text)
    }
}

pub const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";
pub const ENCRYPTION_ALGORITHMS: &[&str] = &[
    "SYMMETRIC_DEFAULT",
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "SM2PKE",
];

/// Validates a KeyId-typed member (1 to 2048 characters).
pub fn check_key_id(v: &mut Violations, member: &str, key_id: &Option<String>) {
    if v.required(member, key_id)
        && let Some(k) = key_id
    {
        v.str_len(member, k, 1, 2048);
    }
}

/// Validates an optional EncryptionAlgorithm member.
pub fn check_algorithm(v: &mut Violations, member: &str, alg: &Option<String>) {
    if let Some(a) = alg {
        v.enum_value(member, a, ENCRYPTION_ALGORITHMS);
    }
}

/// The algorithm of an RSA encryption key: one of its spec's, required
/// (AWS's text when it is missing or does not fit).
pub fn require_rsa_algorithm(
    alg: &Option<String>,
    spec: KeySpec,
) -> Result<EncryptionAlgorithm, KmsError> {
    let name = alg.as_deref().unwrap_or(SYMMETRIC_DEFAULT);
    EncryptionAlgorithm::parse(name)
        .filter(|a| spec.rsa_encryption_algorithms().contains(a))
        .ok_or_else(|| incompatible_algorithm(name, spec.as_str()))
}

/// A symmetric key does only SYMMETRIC_DEFAULT.
pub fn require_symmetric(alg: &Option<String>) -> Result<(), KmsError> {
    match alg.as_deref() {
        None | Some(SYMMETRIC_DEFAULT) => Ok(()),
        Some(other) => Err(KmsError::InvalidKeyUsage(format!(
            "Algorithm {other} is incompatible with key spec SYMMETRIC_DEFAULT."
        ))),
    }
}

/// DryRun: everything checked, nothing done.
pub fn dry_run(flag: Option<bool>) -> Result<(), KmsError> {
    if flag == Some(true) {
        return Err(KmsError::DryRunOperation);
    }
    Ok(())
}

#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct TagShape {
    pub tag_key: String,
    pub tag_value: String,
}

/// KeyMetadata as AWS returns it for an AWS_KMS key: symmetric keys list
/// their EncryptionAlgorithms and CurrentKeyMaterialId, HMAC keys their
/// MacAlgorithms, signing keys their SigningAlgorithms, and none the
/// others'.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    #[serde(rename = "AWSAccountId")]
    pub aws_account_id: String,
    pub key_id: String,
    pub arn: String,
    pub creation_date: f64,
    pub enabled: bool,
    pub description: String,
    pub key_usage: &'static str,
    pub key_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_deletion_window_in_days: Option<u32>,
    pub origin: &'static str,
    pub key_manager: &'static str,
    pub customer_master_key_spec: &'static str,
    pub key_spec: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_algorithms: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_algorithms: Option<[&'static str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_algorithms: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_agreement_algorithms: Option<Vec<&'static str>>,
    pub multi_region: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_key_material_id: Option<String>,
    /// EXTERNAL keys with imported material only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_model: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<f64>,
}

impl KeyMetadata {
    pub fn of(realm: &Realm, key: &Key) -> KeyMetadata {
        let r = &key.record;
        let symmetric = r.key_spec == KeySpec::SymmetricDefault;
        let material = r.import.as_ref().and_then(|i| i.material.as_ref());
        KeyMetadata {
            aws_account_id: realm.account_id.clone(),
            key_id: r.key_id.to_string(),
            arn: realm.key_arn(&r.key_id),
            creation_date: r.created,
            enabled: r.state == KeyState::Enabled,
            description: r.description.clone(),
            key_usage: r.key_usage.as_str(),
            key_state: r.state.as_str(),
            deletion_date: r.deletion_date,
            pending_deletion_window_in_days: r.pending_window_days,
            origin: r.origin.as_str(),
            key_manager: "CUSTOMER",
            customer_master_key_spec: r.key_spec.as_str(),
            key_spec: r.key_spec.as_str(),
            encryption_algorithms: (r.key_usage == KeyUsage::EncryptDecrypt).then(|| {
                if symmetric {
                    vec![SYMMETRIC_DEFAULT]
                } else {
                    r.key_spec
                        .rsa_encryption_algorithms()
                        .iter()
                        .map(|a| a.as_str())
                        .collect()
                }
            }),
            mac_algorithms: r.key_spec.mac_algorithm().map(|a| [a.as_str()]),
            signing_algorithms: (r.key_usage == KeyUsage::SignVerify).then(|| {
                r.key_spec
                    .signing_algorithms()
                    .iter()
                    .map(|a| a.as_str())
                    .collect()
            }),
            key_agreement_algorithms: (r.key_usage == KeyUsage::KeyAgreement).then(|| {
                r.key_spec
                    .key_agreement_algorithms()
                    .iter()
                    .map(|a| a.as_str())
                    .collect()
            }),
            multi_region: false,
            current_key_material_id: (symmetric && !r.versions.is_empty())
                .then(|| key_material_id(&r.key_id, r.primary_version)),
            expiration_model: material.map(|m| match m.valid_to {
                Some(_) => "KEY_MATERIAL_EXPIRES",
                None => "KEY_MATERIAL_DOES_NOT_EXPIRE",
            }),
            valid_to: material.and_then(|m| m.valid_to),
        }
    }
}

/// Pagination over a sorted list: `Limit` 1 to 1000, `Marker` is the
/// sort key of the first entry of the next page.
pub fn check_paging(v: &mut Violations, limit: Option<i64>, marker: &Option<String>) {
    if let Some(l) = limit {
        v.int_range("limit", l, 1, 1000);
    }
    if let Some(m) = marker {
        v.str_len("marker", m, 1, 1024);
        v.pattern(
            "marker",
            m,
            m.chars().all(|c| ('\u{20}'..='\u{FF}').contains(&c)),
            "[\\u0020-\\u00FF]*",
        );
    }
}

/// The request of operations that take only a KeyId.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyIdRequest {
    pub key_id: Option<String>,
}

impl KeyIdRequest {
    /// The validated KeyId.
    pub fn key_id(&self) -> Result<&str, KmsError> {
        let mut v = Violations::new();
        check_key_id(&mut v, "keyId", &self.key_id);
        v.finish()?;
        Ok(self.key_id.as_deref().unwrap_or_default())
    }
}

/// An empty JSON object, the response of operations with no output.
#[derive(Debug, Serialize)]
pub struct Empty {}

/// KMSInvalidStateException for a key that is pending deletion (the same
/// refusal the key store gives, with the text written in [`crate::error`]).
pub fn pending_deletion(realm: &Realm, key: &Key) -> KmsError {
    StoreError::PendingDeletion {
        arn: realm.key_arn(key.id()),
    }
    .into()
}
