//! What kmsgate stores about a key and an alias, as persisted on the token.
//!
//! Records are JSON in the `CKA_VALUE` of a private data object. JSON keeps
//! them readable with any PKCS#11 tool when an operator must look, and the
//! `format` field lets a later version change the layout knowingly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::import_record::{ImportRecord, Origin};
use super::spec::{KeySpec, KeyUsage};

/// Label prefix of every object kmsgate creates.
pub const LABEL_PREFIX: &str = "kmsgate/";

pub fn key_label(id: &Uuid) -> String {
    format!("{LABEL_PREFIX}key/{id}")
}

/// The label of a key version's token object. The nonce makes it unique
/// even when two gateways race to create the same version number: only the
/// one whose record commits is ever used, and the other is destroyed.
pub fn version_label(id: &Uuid, version: u32, nonce: &str) -> String {
    if nonce.is_empty() {
        // Versions made before labels had a nonce.
        return format!("{LABEL_PREFIX}key/{id}/v{version}");
    }
    format!("{LABEL_PREFIX}key/{id}/v{version}/{nonce}")
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
    /// An EXTERNAL key with no key material: imported material deleted,
    /// expired, or never imported.
    PendingImport,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
            KeyState::PendingImport => "PendingImport",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// How a version came to be, as ListKeyRotations reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RotationType {
    /// By the rotation schedule, or because the version reached its GCM
    /// usage bound.
    Automatic,
    OnDemand,
}

impl RotationType {
    pub fn as_str(self) -> &'static str {
        match self {
            RotationType::Automatic => "AUTOMATIC",
            RotationType::OnDemand => "ON_DEMAND",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u32,
    /// Part of the token object's label (see [`version_label`]); empty for
    /// versions made before labels had one.
    #[serde(default)]
    pub nonce: String,
    /// Epoch seconds.
    pub created: f64,
    /// None for a key's first version.
    #[serde(default)]
    pub rotation: Option<RotationType>,
    /// GCM encryptions reserved under this version, by all gateways
    /// together. Reserved in blocks and persisted before use, so it is never
    /// below the number actually done.
    #[serde(default)]
    pub encryptions_reserved: u64,
}

/// Automatic rotation settings, present while rotation is enabled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotationSchedule {
    pub period_days: u32,
    /// Epoch seconds.
    pub next_rotation: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub format: u32,
    /// Incremented by every change; the highest revision on the token wins.
    #[serde(default)]
    pub revision: u64,
    /// This revision's random id, then those of the revisions it was made
    /// from, newest first (at most [`LINEAGE`]): a writer whose revision
    /// another process built on before it settled finds its change carried
    /// ([`super::commit`]). Set by the commit, never by a change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<String>,
    pub key_id: Uuid,
    /// Epoch seconds.
    pub created: f64,
    /// Absent in records written before keys had a spec: those are all
    /// symmetric encryption keys.
    #[serde(default)]
    pub key_spec: KeySpec,
    #[serde(default)]
    pub key_usage: KeyUsage,
    pub description: String,
    pub state: KeyState,
    /// Epoch seconds; set only while pending deletion.
    pub deletion_date: Option<f64>,
    pub pending_window_days: Option<u32>,
    /// A scheduler committed to destroying the key (its state stays
    /// PendingDeletion): the revision that sets this is the decision, taken
    /// through the commit protocol, so a CancelKeyDeletion committed before
    /// it wins and one after it is refused ([`super::destroy`]). A key left
    /// so by a crash is finished by the next scheduler round of any gateway.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub destroying: bool,
    pub tags: Vec<Tag>,
    pub versions: Vec<VersionRecord>,
    pub primary_version: u32,
    #[serde(default)]
    pub rotation: Option<RotationSchedule>,
    #[serde(default)]
    pub on_demand_rotations: u32,
    /// The key policy document exactly as it was put; `None`: AWS's default
    /// key policy (the account may do everything through identity policies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The key's grants, oldest first. They live in the key's record, so a
    /// grant is committed, replicated and deleted with its key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantRecord>,
    /// Where the key material comes from; EXTERNAL keys hold imported
    /// material ([`super::import`]).
    #[serde(default, skip_serializing_if = "Origin::is_aws_kms")]
    pub origin: Origin,
    /// An EXTERNAL key's import state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportRecord>,
}

/// A grant: a principal may do some operations with a key, optionally only
/// with a given encryption context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// 64 lowercase hex characters.
    pub grant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Principal ARN.
    pub grantee: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retiring: Option<String>,
    /// Operation names (`Decrypt`, `GenerateDataKey`, ...).
    pub operations: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_equals: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_subset: Option<BTreeMap<String, String>>,
    /// ARN of the principal that created the grant.
    pub issuer: String,
    /// Epoch seconds.
    pub created: f64,
}

impl KeyRecord {
    pub const FORMAT: u32 = 1;

    pub fn new(
        key_id: Uuid,
        created: f64,
        description: String,
        tags: Vec<Tag>,
        nonce: String,
    ) -> KeyRecord {
        KeyRecord {
            format: Self::FORMAT,
            revision: 0,
            lineage: Vec::new(),
            key_id,
            created,
            key_spec: KeySpec::SymmetricDefault,
            key_usage: KeyUsage::EncryptDecrypt,
            description,
            state: KeyState::Enabled,
            deletion_date: None,
            pending_window_days: None,
            destroying: false,
            tags,
            versions: vec![VersionRecord {
                version: 1,
                nonce,
                created,
                rotation: None,
                encryptions_reserved: 0,
            }],
            primary_version: 1,
            rotation: None,
            on_demand_rotations: 0,
            policy: None,
            grants: Vec::new(),
            origin: Origin::AwsKms,
            import: None,
        }
    }

    pub fn version(&self, v: u32) -> Option<&VersionRecord> {
        self.versions.iter().find(|r| r.version == v)
    }

    pub fn version_mut(&mut self, v: u32) -> Option<&mut VersionRecord> {
        self.versions.iter_mut().find(|r| r.version == v)
    }

    pub fn next_version(&self) -> u32 {
        self.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1
    }

    /// The key's deletion is under way at `now` (epoch seconds): its
    /// waiting period has ended, or a gateway has begun destroying it
    /// (whatever this gateway's clock says). It can no longer be cancelled.
    pub fn deletion_under_way(&self, now: f64) -> bool {
        self.state == KeyState::PendingDeletion
            && (self.destroying || self.deletion_date.is_some_and(|d| d <= now))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub format: u32,
    /// Incremented by every change; the highest revision on the token wins.
    #[serde(default)]
    pub revision: u64,
    /// This revision's random id, then those of the revisions it was made
    /// from, newest first (at most [`LINEAGE`]): a writer whose revision
    /// another process built on before it settled finds its change carried
    /// ([`super::commit`]). Set by the commit, never by a change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<String>,
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

/// How many revision ids a record's `lineage` keeps.
pub const LINEAGE: usize = 8;

/// A record that is replaced, never modified, on the token.
pub trait Revisioned: serde::de::DeserializeOwned {
    fn revision(&self) -> u64;
    fn set_revision(&mut self, revision: u64);
    fn lineage(&self) -> &[String];
    fn set_lineage(&mut self, lineage: Vec<String>);
}

impl Revisioned for KeyRecord {
    fn revision(&self) -> u64 {
        self.revision
    }

    fn set_revision(&mut self, revision: u64) {
        self.revision = revision;
    }

    fn lineage(&self) -> &[String] {
        &self.lineage
    }

    fn set_lineage(&mut self, lineage: Vec<String>) {
        self.lineage = lineage;
    }
}

impl Revisioned for AliasRecord {
    fn revision(&self) -> u64 {
        self.revision
    }

    fn set_revision(&mut self, revision: u64) {
        self.revision = revision;
    }

    fn lineage(&self) -> &[String] {
        &self.lineage
    }

    fn set_lineage(&mut self, lineage: Vec<String>) {
        self.lineage = lineage;
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
    fn records_written_before_versions_had_nonces_still_read() {
        let id = Uuid::new_v4();
        let old = format!(
            r#"{{"format":1,"revision":2,"key_id":"{id}","created":1.0,"description":"",
            "state":"Enabled","deletion_date":null,"pending_window_days":null,"tags":[],
            "versions":[{{"version":1,"created":1.0}}],"primary_version":1}}"#
        );
        let r: KeyRecord = serde_json::from_str(&old).unwrap();
        assert_eq!(r.versions[0].nonce, "");
        assert_eq!(r.versions[0].encryptions_reserved, 0);
        assert_eq!(version_label(&id, 1, ""), format!("kmsgate/key/{id}/v1"));
        assert!(r.rotation.is_none());
        assert_eq!(r.key_spec, KeySpec::SymmetricDefault);
        assert_eq!(r.key_usage, KeyUsage::EncryptDecrypt);
    }

    #[test]
    fn hmac_record_round_trips_with_its_spec() {
        let mut r = KeyRecord::new(Uuid::new_v4(), 1.5, "d".into(), vec![], "ab".into());
        r.key_spec = KeySpec::Hmac384;
        r.key_usage = KeyUsage::GenerateVerifyMac;
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""key_spec":"HMAC_384""#), "{text}");
        assert!(text.contains(r#""key_usage":"GENERATE_VERIFY_MAC""#));
        let back: KeyRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(r, back);
    }

    #[test]
    fn the_destroying_mark_is_written_only_when_set_and_reads_back() {
        let mut r = KeyRecord::new(Uuid::new_v4(), 1.5, "d".into(), vec![], "ab".into());
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("destroying"), "{text}");
        r.state = KeyState::PendingDeletion;
        r.deletion_date = Some(100.0);
        assert!(!r.deletion_under_way(99.0));
        assert!(r.deletion_under_way(100.0));
        r.destroying = true;
        assert!(r.deletion_under_way(0.0));
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""destroying":true"#), "{text}");
        let back: KeyRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(r, back);
    }

    #[test]
    fn record_round_trips_through_json() {
        let r = KeyRecord::new(Uuid::new_v4(), 1.5, "d".into(), vec![], "ab".into());
        let back: KeyRecord = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(r, back);
    }
}
