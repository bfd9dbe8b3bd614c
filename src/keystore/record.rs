//! What kmsgate stores about a key and an alias, as persisted on the token.
//!
//! Records are JSON in the `CKA_VALUE` of a private data object. JSON keeps
//! them readable with any PKCS#11 tool when an operator must look, and the
//! `format` field lets a later version change the layout knowingly.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Label prefix of every object kmsgate creates.
pub const LABEL_PREFIX: &str = "kmsgate/";

pub fn key_label(id: &Uuid) -> String {
    format!("{LABEL_PREFIX}key/{id}")
}

pub fn version_label(id: &Uuid, version: u32) -> String {
    format!("{LABEL_PREFIX}key/{id}/v{version}")
}

/// `alias_name` includes its `alias/` prefix.
pub fn alias_label(alias_name: &str) -> String {
    format!("{LABEL_PREFIX}{alias_name}")
}

/// CKA_ID of a key version: the key's 16 UUID bytes and the version.
pub fn version_id(id: &Uuid, version: u32) -> Vec<u8> {
    let mut v = id.as_bytes().to_vec();
    v.extend_from_slice(&version.to_be_bytes());
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u32,
    /// Epoch seconds.
    pub created: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub format: u32,
    /// Incremented by every change; the highest revision on the token wins.
    #[serde(default)]
    pub revision: u64,
    pub key_id: Uuid,
    /// Epoch seconds.
    pub created: f64,
    pub description: String,
    pub state: KeyState,
    /// Epoch seconds; set only while pending deletion.
    pub deletion_date: Option<f64>,
    pub pending_window_days: Option<u32>,
    pub tags: Vec<Tag>,
    pub versions: Vec<VersionRecord>,
    pub primary_version: u32,
}

impl KeyRecord {
    pub const FORMAT: u32 = 1;

    pub fn new(key_id: Uuid, created: f64, description: String, tags: Vec<Tag>) -> KeyRecord {
        KeyRecord {
            format: Self::FORMAT,
            revision: 0,
            key_id,
            created,
            description,
            state: KeyState::Enabled,
            deletion_date: None,
            pending_window_days: None,
            tags,
            versions: vec![VersionRecord {
                version: 1,
                created,
            }],
            primary_version: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub format: u32,
    /// Incremented by every change; the highest revision on the token wins.
    #[serde(default)]
    pub revision: u64,
    /// Includes the `alias/` prefix.
    pub name: String,
    pub target: Uuid,
    pub created: f64,
    pub updated: f64,
}

/// The `KeyMaterialId` of a key version: 64 lowercase hex characters, as
/// AWS's BackingKeyIdType. Derived, so every gateway computes the same one.
pub fn key_material_id(id: &Uuid, version: u32) -> String {
    let mut h = Sha256::new();
    h.update(b"kmsgate key material\0");
    h.update(version_id(id, version));
    hex::encode(h.finalize())
}

/// A record that is replaced, never modified, on the token.
pub trait Revisioned: serde::de::DeserializeOwned {
    fn revision(&self) -> u64;
}

impl Revisioned for KeyRecord {
    fn revision(&self) -> u64 {
        self.revision
    }
}

impl Revisioned for AliasRecord {
    fn revision(&self) -> u64 {
        self.revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_material_id_is_64_lowercase_hex_and_differs_per_version() {
        let id = Uuid::new_v4();
        let a = key_material_id(&id, 1);
        let b = key_material_id(&id, 2);
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_ne!(a, b);
    }

    #[test]
    fn record_round_trips_through_json() {
        let r = KeyRecord::new(Uuid::new_v4(), 1.5, "d".into(), vec![]);
        let back: KeyRecord = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(r, back);
    }
}
