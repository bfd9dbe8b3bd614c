//! What kmsgate stores about a key and an alias, as persisted on the token.
//!
//! Records are JSON in the `CKA_VALUE` of a private data object. JSON keeps
//! them readable with any PKCS#11 tool when an operator must look, and the
//! `format` field lets a later version change the layout knowingly.
//!
//! Old and new gateways share a token during a rolling upgrade, so a
//! gateway must never rewrite what it does not fully understand (DESIGN.md
//! decision 20). Every record struct denies unknown fields and every enum
//! unknown values, and a record is read in two steps ([`parse`]): first
//! its [`Header`] (format and revision, whatever else it holds), then the
//! whole record. One that is complete JSON with a header but of a newer
//! [`FORMAT`], or that the full read refuses, is [`Foreign`]: it keeps its
//! revision in the commit protocol, nothing reads its content, and no
//! write or sweep of this gateway touches it. Only a record whose header
//! does not parse (a write cut short) is unreadable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::import_record::{ImportRecord, Origin};
use super::spec::{KeySpec, KeyUsage};

/// Label prefix of every object kmsgate creates.
pub const LABEL_PREFIX: &str = "kmsgate/";

/// The record layout this build writes and reads, for every kind of record
/// (keys, aliases). A record of a higher format is [`Foreign`]. Bumping it
/// is this one line, once a layout change makes older builds misread a
/// record; a newer build still reads every lower format.
pub const FORMAT: u32 = 1;

/// What kind of record a data object's label names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKind {
    /// `kmsgate/key/<uuid>`: a key's record.
    Key(Uuid),
    /// `kmsgate/alias/...`: an alias record; the name with its `alias/`
    /// prefix.
    Alias(String),
    /// Anything else (another program's object, or a kind of record a
    /// newer kmsgate writes): left alone by every read, write and sweep.
    Other,
}

pub fn record_kind(label: &str) -> RecordKind {
    let Some(rest) = label.strip_prefix(LABEL_PREFIX) else {
        return RecordKind::Other;
    };
    if let Some(id) = rest.strip_prefix("key/") {
        // Exactly a key id: `key/<uuid>/...` is no key record.
        return match Uuid::try_parse(id) {
            Ok(id) if key_label(&id) == label => RecordKind::Key(id),
            _ => RecordKind::Other,
        };
    }
    if rest.starts_with("alias/") {
        return RecordKind::Alias(rest.to_owned());
    }
    RecordKind::Other
}

/// What every record holds, read without knowing the rest of it.
#[derive(Debug, Deserialize)]
struct Header {
    format: u32,
    #[serde(default)]
    revision: u64,
}

/// A record this build does not fully understand: a newer format, an
/// unknown field or enum value. It is never rewritten and never read as
/// absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    pub revision: u64,
    pub format: u32,
    /// What this build met, briefly (`format 2`, ``unknown field `x` ``).
    pub reason: String,
}

/// A record object's value as this build reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed<T> {
    Understood(T),
    Foreign(Foreign),
    /// Not a complete record with a header (a write cut short).
    Unreadable(String),
}

impl<T> Parsed<T> {
    /// The record's revision, if it has a header.
    pub fn revision(&self) -> Option<u64>
    where
        T: Revisioned,
    {
        match self {
            Parsed::Understood(r) => Some(r.revision()),
            Parsed::Foreign(f) => Some(f.revision),
            Parsed::Unreadable(_) => None,
        }
    }
}

/// Reads a record in two steps: its header, then all of it.
pub fn parse<T: Revisioned>(value: &[u8]) -> Parsed<T> {
    let header = match serde_json::from_slice::<Header>(value) {
        Ok(h) => h,
        Err(e) => return Parsed::Unreadable(e.to_string()),
    };
    let foreign = |reason: String| {
        Parsed::Foreign(Foreign {
            revision: header.revision,
            format: header.format,
            reason,
        })
    };
    if header.format > FORMAT {
        return foreign(format!("format {}", header.format));
    }
    match serde_json::from_slice::<T>(value) {
        Ok(r) => Parsed::Understood(r),
        Err(e) => foreign(brief(&e)),
    }
}

/// A serde error without the list of what was expected (every field name)
/// and the position, at most 120 characters.
fn brief(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = text.split(", expected").next().unwrap_or(&text);
    let text = text.split(" at line ").next().unwrap_or(text);
    text.chars().take(120).collect()
}

/// The record a data object holds is foreign ([`Foreign`]), by its label's
/// kind; `None` for an understood or unreadable record and for objects of
/// other kinds.
pub fn foreign(label: &str, value: &[u8]) -> Option<Foreign> {
    match record_kind(label) {
        RecordKind::Key(_) => parse::<KeyRecord>(value).foreign(),
        RecordKind::Alias(_) => parse::<AliasRecord>(value).foreign(),
        RecordKind::Other => None,
    }
}

impl<T> Parsed<T> {
    fn foreign(self) -> Option<Foreign> {
        match self {
            Parsed::Foreign(f) => Some(f),
            _ => None,
        }
    }
}

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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct RotationSchedule {
    pub period_days: u32,
    /// Epoch seconds.
    pub next_rotation: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
    pub const FORMAT: u32 = FORMAT;

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
#[serde(deny_unknown_fields)]
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

impl AliasRecord {
    pub const FORMAT: u32 = FORMAT;
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

    /// A record as this build writes it, as JSON to edit.
    fn written() -> serde_json::Value {
        let mut r = KeyRecord::new(Uuid::new_v4(), 1.5, "d".into(), vec![], "ab".into());
        r.revision = 7;
        r.tags.push(Tag {
            key: "k".into(),
            value: "v".into(),
        });
        r.rotation = Some(RotationSchedule {
            period_days: 90,
            next_rotation: 2.0,
        });
        r.grants.push(GrantRecord {
            grant_id: "g".into(),
            name: None,
            grantee: "arn".into(),
            retiring: None,
            operations: vec!["Decrypt".into()],
            context_equals: None,
            context_subset: None,
            issuer: "arn".into(),
            created: 1.0,
        });
        r.import = Some(ImportRecord::default());
        serde_json::to_value(&r).unwrap()
    }

    fn parsed(v: &serde_json::Value) -> Parsed<KeyRecord> {
        parse::<KeyRecord>(&serde_json::to_vec(v).unwrap())
    }

    fn foreign_reason(v: &serde_json::Value) -> String {
        match parsed(v) {
            Parsed::Foreign(f) => {
                assert_eq!(f.revision, 7, "a foreign record keeps its revision");
                f.reason
            }
            other => panic!("not foreign: {other:?}"),
        }
    }

    #[test]
    fn every_record_is_written_with_the_format_this_build_reads() {
        let v = written();
        assert_eq!(v["format"], FORMAT);
        assert_eq!(KeyRecord::FORMAT, FORMAT);
        assert_eq!(AliasRecord::FORMAT, FORMAT);
        assert!(matches!(parsed(&v), Parsed::Understood(r) if r.revision == 7));
    }

    #[test]
    fn a_record_of_the_next_format_is_foreign_and_one_of_this_format_is_read() {
        let mut v = written();
        v["format"] = (FORMAT + 1).into();
        assert_eq!(foreign_reason(&v), format!("format {}", FORMAT + 1));
        match parsed(&v) {
            Parsed::Foreign(f) => assert_eq!(f.format, FORMAT + 1),
            other => panic!("{other:?}"),
        }
        v["format"] = FORMAT.into();
        assert!(matches!(parsed(&v), Parsed::Understood(_)));
    }

    #[test]
    fn unknown_enum_values_make_a_record_foreign() {
        for (field, value) in [
            ("key_spec", "ML_DSA_65"),
            ("key_usage", "WRAP_UNWRAP"),
            ("state", "Creating"),
            ("origin", "EXTERNAL_KEY_STORE"),
        ] {
            let mut v = written();
            v[field] = value.into();
            let reason = foreign_reason(&v);
            assert!(reason.contains(value), "{field}: {reason}");
            assert!(!reason.contains("expected"), "brief: {reason}");
        }
        let mut v = written();
        v["versions"][0]["rotation"] = "ON_SCHEDULE".into();
        assert!(foreign_reason(&v).contains("ON_SCHEDULE"));
    }

    #[test]
    fn an_unknown_field_at_any_level_makes_a_record_foreign() {
        let mut cases: Vec<fn(&mut serde_json::Value)> = Vec::new();
        cases.push(|v| v["multi_region"] = true.into());
        cases.push(|v| v["versions"][0]["hsm"] = "b".into());
        cases.push(|v| v["tags"][0]["kind"] = "x".into());
        cases.push(|v| v["rotation"]["jitter"] = 1.into());
        cases.push(|v| v["grants"][0]["constraints"] = 1.into());
        cases.push(|v| v["import"]["origin_hsm"] = 1.into());
        cases.push(|v| {
            v["import"]["material"] = serde_json::json!({"imported": 1.0, "valid_to": null, "x": 1})
        });
        cases.push(|v| {
            v["import"]["pending"] = serde_json::json!({"token_digest": "d", "wrapping_label": null,
                "algorithm": "RSAES_OAEP_SHA_256", "wrapping_bits": 2048, "valid_to": 1.0, "x": 1})
        });
        for (i, edit) in cases.into_iter().enumerate() {
            let mut v = written();
            edit(&mut v);
            let reason = foreign_reason(&v);
            assert!(reason.starts_with("unknown field"), "case {i}: {reason}");
        }
    }

    #[test]
    fn a_record_cut_short_is_unreadable_not_foreign() {
        let text = serde_json::to_vec(&written()).unwrap();
        for cut in [0, 1, 20, text.len() / 2, text.len() - 1] {
            assert!(
                matches!(parse::<KeyRecord>(&text[..cut]), Parsed::Unreadable(_)),
                "cut at {cut}"
            );
        }
        // Complete JSON without a format is no record either.
        assert!(matches!(
            parse::<KeyRecord>(br#"{"revision":3}"#),
            Parsed::Unreadable(_)
        ));
    }

    #[test]
    fn alias_records_follow_the_same_rules() {
        let a = AliasRecord {
            format: AliasRecord::FORMAT,
            revision: 2,
            name: "alias/a".into(),
            target: Uuid::new_v4(),
            created: 1.0,
            updated: 1.0,
            lineage: Vec::new(),
        };
        let mut v = serde_json::to_value(&a).unwrap();
        let label = alias_label("alias/a");
        let bytes = |v: &serde_json::Value| serde_json::to_vec(v).unwrap();
        assert_eq!(parse::<AliasRecord>(&bytes(&v)), Parsed::Understood(a));
        assert_eq!(foreign(&label, &bytes(&v)), None);
        v["format"] = (FORMAT + 1).into();
        let f = foreign(&label, &bytes(&v)).unwrap();
        assert_eq!((f.revision, f.format), (2, FORMAT + 1));
        v["format"] = FORMAT.into();
        v["targets"] = serde_json::json!([]);
        assert!(foreign(&label, &bytes(&v)).is_some());
        // Objects of another kind are never judged.
        assert_eq!(foreign("kmsgate/xks/a", &bytes(&v)), None);
    }

    #[test]
    fn a_label_names_a_record_kind_exactly() {
        let id = Uuid::new_v4();
        assert_eq!(record_kind(&key_label(&id)), RecordKind::Key(id));
        assert_eq!(
            record_kind(&alias_label("alias/a/b")),
            RecordKind::Alias("alias/a/b".into())
        );
        for other in [
            format!("kmsgate/key/{id}/v1/n"),
            format!("kmsgate/key/{}", id.simple()),
            format!("kmsgate/import/{id}/n"),
            "kmsgate/changes/x".to_owned(),
            "kmsgate/peers/1".to_owned(),
            format!("other/key/{id}"),
        ] {
            assert_eq!(record_kind(&other), RecordKind::Other, "{other}");
        }
    }

    #[test]
    fn record_round_trips_through_json() {
        let r = KeyRecord::new(Uuid::new_v4(), 1.5, "d".into(), vec![], "ab".into());
        let back: KeyRecord = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(r, back);
    }
}
