//! Keys, key versions and aliases: what the names in a request refer to.
//!
//! The token is the only state (DESIGN.md decision 3). This module holds a
//! cache of it: every key record, every alias and the object handle of every
//! key version are read once at start-up, so the hot path never calls
//! C_FindObjects. The cache is kept right in three ways:
//!
//! * a name the cache does not know is looked up on the token before it is
//!   declared missing, and so is a key version a ciphertext names that the
//!   cache does not know (another gateway may have created either);
//! * every change is written to the token before the cache
//!   ([`write`]), with optimistic concurrency between gateways;
//! * a background sync ([`sync`]) notices what other gateways changed on
//!   the shared token, so a key disabled through one gateway is refused by
//!   the others within one sync interval.
//!
//! Dated work (automatic rotation, deletion at the end of the waiting
//! period) is done by the [`scheduler`]; GCM usage is bounded per key
//! version by [`usage`].
//!
//! Every fallible function returns a [`StoreError`] ([`error`]): what went
//! wrong and the data to say so, never a client's text. The callbacks that
//! let `ops` change a record ([`KeyStore::update_key`]) return the caller's
//! own error type, so a refusal from `ops` comes back unchanged.

mod alias;
pub mod clock;
mod commit;
mod crypto;
mod custody;
mod data_key_pair;
mod der;
mod destroy;
pub mod error;
pub mod events;
pub mod import;
mod import_pair;
mod import_record;
mod import_rules;
pub mod key_agreement;
mod lookup;
pub mod peers;
mod pkcs8;
pub mod record;
mod rsa_encryption;
pub mod scheduler;
mod signing;
pub mod spec;
pub mod sync;
mod usage;
mod write;
pub mod xks;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use uuid::Uuid;

use crate::arn::Realm;
use crate::hsm::objects::{self, DataHandle, MasterKeyVersion};
use crate::hsm::{Hsm, HsmError, TokenSession};
use crate::policy::{self, Policy, PolicyError};
pub use clock::Clock;
pub use crypto::Sealed;
pub use custody::Custody;
pub use data_key_pair::DataKeyPair;
pub use error::StoreError;
use error::{lock_poisoned, unreadable};
pub use import::{ImportParameters, Origin, WrappingAlgorithm};
pub use key_agreement::KeyAgreementAlgorithm;
pub use record::{
    AliasRecord, GrantRecord, KeyRecord, KeyState, RotationSchedule, RotationType, Tag,
    VersionRecord, key_material_id,
};
use record::{Foreign, LABEL_PREFIX, Parsed, RecordKind, Revisioned, record_kind, version_label};
pub use rsa_encryption::EncryptionAlgorithm;
pub use signing::{MessageType, SigningAlgorithm};
pub use spec::{KeySpec, KeyUsage, MacAlgorithm};

/// A key as the cache holds it: its record and the handles of its versions.
#[derive(Debug)]
pub struct Key {
    pub record: KeyRecord,
    meta: DataHandle,
    versions: HashMap<u32, MasterKeyVersion>,
    /// The key policy, parsed on first use. A record change makes a new
    /// `Key`, so this never outlives the text it was parsed from.
    policy: OnceLock<Arc<Policy>>,
}

impl Key {
    pub fn id(&self) -> &Uuid {
        &self.record.key_id
    }

    fn version(&self, v: u32) -> Option<MasterKeyVersion> {
        self.versions.get(&v).copied()
    }

    /// The key policy in force: the record's, or AWS's default. A stored
    /// policy that no longer parses (it was checked when it was put) is an
    /// error, which callers treat as a refusal.
    pub fn key_policy(&self, realm: &Realm) -> Result<Arc<Policy>, PolicyError> {
        if let Some(p) = self.policy.get() {
            return Ok(p.clone());
        }
        let text = match &self.record.policy {
            Some(t) => t.clone(),
            None => policy::default_key_policy(&realm.partition, &realm.account_id),
        };
        let parsed = Arc::new(Policy::parse(&text, policy::Kind::Key, &realm.partition)?);
        Ok(self.policy.get_or_init(|| parsed).clone())
    }

    /// Usable for cryptography: Enabled. [`StoreError::Disabled`] or
    /// [`StoreError::PendingDeletion`] otherwise.
    pub fn check_usable(&self, realm: &Realm) -> Result<(), StoreError> {
        usable(&self.record, realm)
    }
}

/// A key record is usable for cryptography (and for rotation settings) only
/// while Enabled.
pub fn usable(record: &KeyRecord, realm: &Realm) -> Result<(), StoreError> {
    let arn = || realm.key_arn(&record.key_id);
    match record.state {
        KeyState::Enabled => Ok(()),
        KeyState::Disabled => Err(StoreError::Disabled { arn: arn() }),
        KeyState::PendingDeletion => Err(StoreError::PendingDeletion { arn: arn() }),
        KeyState::PendingImport => Err(StoreError::PendingImport { arn: arn() }),
    }
}

/// A record on the token that does not parse (a write cut short), as found
/// at start-up. It is skipped in favour of the newest valid revision, and
/// never read as "no key".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableRecord {
    pub label: String,
    /// A valid revision of the same record exists, so nothing is lost.
    pub superseded: bool,
}

/// Limits on how keys are used, from the config.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    /// GCM encryptions one key version may do before the key rotates.
    pub gcm_usage_bound: u64,
    /// Encryptions reserved (and persisted) at a time by one gateway.
    pub gcm_reserve_block: u64,
    /// RotateKeyOnDemand calls allowed per key.
    pub max_on_demand_rotations: u32,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            gcm_usage_bound: 1 << 30,
            gcm_reserve_block: 1 << 20,
            max_on_demand_rotations: 10,
        }
    }
}

#[derive(Debug, Clone)]
struct AliasEntry {
    handle: DataHandle,
    record: AliasRecord,
}

/// A record whose latest revision this build does not understand
/// ([`Foreign`]), as the cache holds it in place of its content: requests
/// that need it are refused ([`StoreError::Foreign`]), and the sync sees
/// when its object is replaced or gone.
#[derive(Debug, Clone)]
struct ForeignEntry {
    handle: DataHandle,
    record: Foreign,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<Uuid, Arc<Key>>,
    aliases: BTreeMap<String, AliasEntry>,
    /// Keys and aliases whose latest record is foreign; never also in
    /// `keys` or `aliases`.
    foreign_keys: HashMap<Uuid, ForeignEntry>,
    foreign_aliases: BTreeMap<String, ForeignEntry>,
}

pub struct KeyStore {
    hsm: Arc<Hsm>,
    realm: Realm,
    policy: KeyPolicy,
    clock: Box<dyn Clock>,
    cache: RwLock<Cache>,
    /// Serialises every change to token objects inside this process
    /// (SoftHSM2 2.6.1 races on concurrent object creation). Between
    /// processes, [`write`]'s commit protocol decides.
    writes: tokio::sync::Mutex<()>,
    /// GCM usage budgets, by key id ([`usage`]).
    budgets: RwLock<HashMap<Uuid, Arc<usage::Budget>>>,
    /// Data object handles the last full sync saw ([`sync`]).
    seen: Mutex<std::collections::HashSet<DataHandle>>,
    /// The change markers and the labels the last sync read ([`sync`]).
    markers: Mutex<sync::Markers>,
    /// Labels of records looked up on the token and not found, valid until
    /// the change marker moves (anything created anywhere moves it), so
    /// repeated lookups of unknown names do not each list the token.
    absent: Mutex<std::collections::HashSet<String>>,
    /// Keys whose scheduled work failed, and when to try again
    /// ([`scheduler`]).
    retries: Mutex<HashMap<Uuid, scheduler::Retry>>,
    /// Records found at start-up that do not parse ([`UnreadableRecord`]).
    unreadable: Vec<UnreadableRecord>,
    /// Key objects found at start-up that no record names.
    orphans: Vec<String>,
    /// The last sync with the token succeeded (for readiness).
    synced: std::sync::atomic::AtomicBool,
    /// One sync round at a time: a round that finds the marker unmoved may
    /// then trust that no other round is still loading what moved it.
    rounds: tokio::sync::Mutex<()>,
    /// The change counters shared with the other workers of a supervisor
    /// ([`peers`]); `None` in a single process.
    peers: Option<peers::PeerChanges>,
    /// Where the store's service events go ([`events`]); `None`: only logged.
    events: Option<Arc<dyn events::EventSink>>,
    /// Foreign records already logged, by label and revision: each is
    /// logged once, not once per request.
    foreign_logged: Mutex<std::collections::HashSet<(String, u64)>>,
}

/// Reads kmsgate's data objects with `label`. An empty answer is believed
/// only if the same listing finds the change marker, which is always on the
/// token: a failing token (its storage moved, unreadable, out of file
/// descriptors) answers with nothing, and that must never read as "no key"
/// (DESIGN.md decision 13).
pub(crate) fn read_records(
    s: &TokenSession,
    label: &str,
) -> Result<Vec<objects::DataObject>, HsmError> {
    let found = objects::read_data(s, Some(label))?;
    if found.is_empty() {
        prove_listing(s)?;
    }
    Ok(found)
}

/// Proves that a listing of the token can be believed when it misses
/// something: the change marker, always on the token, must be found.
pub(crate) fn prove_listing(s: &TokenSession) -> Result<(), HsmError> {
    if objects::find_markers(s)?.is_empty() {
        return Err(HsmError::IncompleteListing);
    }
    Ok(())
}

/// How long [`KeyStore::load`] keeps trying to read the token before it
/// gives up (and the process exits, to be restarted).
const LOAD_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// Every kmsgate data object and every key object on the token, with the
/// change markers, for [`KeyStore::load`]. Each search is proven right
/// after it is made, and once more after the objects it found were read
/// (a read skips an object that vanished meanwhile): a token whose storage
/// is unreadable (SoftHSM2's directory hidden or out of reach) lists
/// nothing, and that must never load as "no keys" (DESIGN.md decision 13).
/// A listing that cannot prove itself, like any other token fault, is
/// tried again with backoff for up to [`LOAD_RETRY_FOR`]: the process
/// does not serve (nor say it is ready) until the store has loaded.
async fn read_everything(
    hsm: &Hsm,
) -> Result<
    (
        Vec<objects::DataObject>,
        Vec<(String, MasterKeyVersion)>,
        sync::Markers,
    ),
    HsmError,
> {
    let started = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        let result = hsm
            .pool()
            .run_within(
                std::time::Duration::from_secs(120),
                std::time::Duration::from_secs(600),
                |s| {
                    let markers = sync::Markers::find_or_create(s)?;
                    let handles = objects::data_handles(s)?;
                    prove_listing(s)?;
                    let data = objects::read_data_objects(s, &handles)?;
                    let keys = objects::list_master_keys(s, prove_listing)?;
                    prove_listing(s)?;
                    Ok((data, keys, markers))
                },
            )
            .await;
        match result {
            Ok(found) => return Ok(found),
            Err(e) if load_may_retry(&e) && started.elapsed() < LOAD_RETRY_FOR => {
                // SoftHSM2 sees objects it failed to read again only once
                // initialised anew (at most once per 5 s).
                if matches!(e, HsmError::IncompleteListing) {
                    hsm.pool().request_reread();
                }
                tracing::warn!(
                    error = %e,
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "cannot load the key store from the token yet (a token fault, or a listing that cannot prove itself): not serving until it loads"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A load that failed with `e` may succeed later: a token fault, not a
/// refused PIN (tried once per operator action), a closed pool or a
/// setup error.
fn load_may_retry(e: &HsmError) -> bool {
    use crate::hsm::Fault;
    !matches!(e, HsmError::PinRefused(_) | HsmError::Closed)
        && !matches!(e.fault(), Fault::BadInput | Fault::Setup)
}

impl KeyStore {
    /// Reads every kmsgate object on the token into the cache
    /// ([`read_everything`]).
    pub async fn load(
        hsm: Arc<Hsm>,
        realm: Realm,
        policy: KeyPolicy,
        clock: Box<dyn Clock>,
    ) -> Result<KeyStore, HsmError> {
        let (data, keys, markers) = read_everything(&hsm).await?;
        let handles: HashMap<String, MasterKeyVersion> = keys.into_iter().collect();
        let mut records: HashMap<Uuid, (DataHandle, Parsed<KeyRecord>)> = HashMap::new();
        let mut aliases: HashMap<String, (DataHandle, Parsed<AliasRecord>)> = HashMap::new();
        let seen = data.iter().map(|o| o.handle).collect();
        let mut valid_labels = std::collections::HashSet::new();
        let mut unreadable_labels = Vec::new();
        for obj in data {
            // By the label: a foreign record's content is not read.
            let valid = match record_kind(&obj.label) {
                RecordKind::Key(id) => {
                    keep_latest(&mut records, id, obj.handle, parse_record(&obj))
                }
                RecordKind::Alias(name) => {
                    keep_latest(&mut aliases, name, obj.handle, parse_record(&obj))
                }
                RecordKind::Other => continue,
            };
            if valid {
                valid_labels.insert(obj.label);
            } else {
                unreadable_labels.push(obj.label);
            }
        }
        let unreadable = unreadable_labels
            .into_iter()
            .map(|label| UnreadableRecord {
                superseded: valid_labels.contains(&label),
                label,
            })
            .collect();
        let mut cache = Cache::default();
        // Key objects no record names (a write cut short between creating
        // the version's object and committing its record) are the ones no
        // key claims while the cache is built. Never used; reported by
        // check-keys.
        let key_prefix = format!("{LABEL_PREFIX}key/");
        let mut unclaimed: std::collections::HashSet<&str> = handles
            .keys()
            .map(String::as_str)
            .filter(|l| l.starts_with(&key_prefix))
            .collect();
        let mut foreign_logged = std::collections::HashSet::new();
        for (id, (meta, record)) in records {
            let record = match record {
                Parsed::Understood(r) => r,
                Parsed::Foreign(f) => {
                    // Its versions are named by what this build cannot
                    // read: they are its, never orphans.
                    let own = format!("{}/", record::key_label(&id));
                    unclaimed.retain(|l| !l.starts_with(&own));
                    log_foreign(&mut foreign_logged, &record::key_label(&id), &f);
                    let entry = ForeignEntry {
                        handle: meta,
                        record: f,
                    };
                    cache.foreign_keys.insert(id, entry);
                    continue;
                }
                Parsed::Unreadable(_) => continue,
            };
            let key = build_key(record, meta, |l| {
                unclaimed.remove(l);
                handles.get(l).copied()
            });
            cache.keys.insert(id, Arc::new(key));
        }
        let mut orphans: Vec<String> = unclaimed.into_iter().map(str::to_owned).collect();
        orphans.sort();
        for (name, (handle, record)) in aliases {
            match record {
                Parsed::Understood(record) => {
                    cache.aliases.insert(name, AliasEntry { handle, record });
                }
                Parsed::Foreign(record) => {
                    log_foreign(&mut foreign_logged, &record::alias_label(&name), &record);
                    let entry = ForeignEntry { handle, record };
                    cache.foreign_aliases.insert(name, entry);
                }
                Parsed::Unreadable(_) => {}
            }
        }
        tracing::info!(
            keys = cache.keys.len(),
            aliases = cache.aliases.len(),
            foreign = cache.foreign_keys.len() + cache.foreign_aliases.len(),
            "key store loaded from the token"
        );
        Ok(KeyStore {
            hsm,
            realm,
            policy,
            clock,
            cache: RwLock::new(cache),
            writes: tokio::sync::Mutex::new(()),
            budgets: RwLock::new(HashMap::new()),
            seen: Mutex::new(seen),
            markers: Mutex::new(markers),
            absent: Mutex::new(std::collections::HashSet::new()),
            retries: Mutex::new(HashMap::new()),
            unreadable,
            orphans,
            synced: std::sync::atomic::AtomicBool::new(true),
            rounds: tokio::sync::Mutex::new(()),
            peers: None,
            events: None,
            foreign_logged: Mutex::new(foreign_logged),
        })
    }

    pub fn realm(&self) -> &Realm {
        &self.realm
    }

    pub fn policy(&self) -> &KeyPolicy {
        &self.policy
    }

    /// The store's clock: epoch seconds.
    pub fn now(&self) -> f64 {
        self.clock.now()
    }

    /// Shares change counters with the other workers of a supervisor, so
    /// that a client sees its own changes whichever worker answers
    /// ([`peers`]).
    pub fn share_changes(&mut self, peers: peers::PeerChanges) {
        self.peers = Some(peers);
    }

    /// Every key, ordered by key id.
    pub fn all_keys(&self) -> Result<Vec<Arc<Key>>, StoreError> {
        let cache = self.cache.read().map_err(lock_poisoned)?;
        let mut keys: Vec<Arc<Key>> = cache.keys.values().cloned().collect();
        keys.sort_by(|a, b| a.id().cmp(b.id()));
        Ok(keys)
    }

    /// Ids of the keys whose latest record is foreign ([`Foreign`]): they
    /// exist, but nothing else of them can be told.
    pub fn foreign_key_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        let cache = self.cache.read().map_err(lock_poisoned)?;
        let mut ids: Vec<Uuid> = cache.foreign_keys.keys().copied().collect();
        ids.sort();
        Ok(ids)
    }

    /// Every alias, ordered by name. [`StoreError::Foreign`] while an
    /// alias record is foreign: its target is unknown, so no list of
    /// aliases (or of a key's aliases) can be told.
    pub fn all_aliases(&self) -> Result<Vec<AliasRecord>, StoreError> {
        let cache = self.cache.read().map_err(lock_poisoned)?;
        if let Some((name, f)) = cache.foreign_aliases.iter().next() {
            let (label, record) = (record::alias_label(name), f.record.clone());
            drop(cache);
            return Err(self.foreign_met(&label, &record));
        }
        Ok(cache.aliases.values().map(|a| a.record.clone()).collect())
    }

    /// The error for a foreign record under `label`; logs it the first
    /// time this gateway meets this revision of it.
    pub(crate) fn foreign_met(&self, label: &str, f: &Foreign) -> StoreError {
        if let Ok(mut logged) = self.foreign_logged.lock() {
            log_foreign(&mut logged, label, f);
        }
        StoreError::Foreign {
            label: label.to_owned(),
            format: f.format,
        }
    }

    /// Records found at start-up that do not parse, for `kmsgate check-keys`.
    pub fn unreadable_records(&self) -> &[UnreadableRecord] {
        &self.unreadable
    }

    /// Labels of key objects found at start-up that no record names (a
    /// CreateKey or rotation cut short before its record committed; another
    /// gateway's write in progress looks the same for a moment). They are
    /// never used; `kmsgate check-keys` lists them.
    pub fn orphan_key_objects(&self) -> &[String] {
        &self.orphans
    }
}

/// Builds a cached key from its record, finding each version's handle with
/// `find` (by label).
fn build_key(
    record: KeyRecord,
    meta: DataHandle,
    mut find: impl FnMut(&str) -> Option<MasterKeyVersion>,
) -> Key {
    let mut versions = HashMap::new();
    for v in &record.versions {
        match find(&version_label(&record.key_id, v.version, &v.nonce)) {
            Some(h) => {
                versions.insert(v.version, h);
            }
            None => tracing::warn!(
                key_id = %record.key_id,
                version = v.version,
                "key version object missing on the token"
            ),
        }
    }
    Key {
        policy: OnceLock::new(),
        record,
        meta,
        versions,
    }
}

/// Logs a foreign record once per label and revision (`logged` holds
/// those already logged): what it is, what this build met in it, and which
/// format this build understands.
fn log_foreign(logged: &mut std::collections::HashSet<(String, u64)>, label: &str, f: &Foreign) {
    if logged.len() < 10_000 && logged.insert((label.to_owned(), f.revision)) {
        tracing::warn!(
            label,
            revision = f.revision,
            format = f.format,
            met = %f.reason,
            understands = record::FORMAT,
            "record written by a newer kmsgate (or holding what this build does not understand): left as it is; requests that need it answer a retryable error until this gateway is upgraded"
        );
    }
}

/// A record object's value, read in two steps ([`record::parse`]); an
/// unreadable one is logged.
fn parse_record<T: Revisioned>(obj: &objects::DataObject) -> Parsed<T> {
    let parsed = record::parse::<T>(&obj.value);
    if let Parsed::Unreadable(e) = &parsed {
        tracing::warn!(label = %obj.label, error = %e, "unreadable record skipped");
    }
    parsed
}

/// Keeps the record with the highest revision under each name, understood
/// or foreign (a foreign revision wins a tie: it is never overruled by
/// what this build understands); false for an unreadable record, which
/// is not kept.
fn keep_latest<K: Eq + std::hash::Hash, T: Revisioned>(
    map: &mut HashMap<K, (DataHandle, Parsed<T>)>,
    name: K,
    handle: DataHandle,
    record: Parsed<T>,
) -> bool {
    if record.revision().is_none() {
        return false;
    }
    if map.get(&name).is_none_or(|(_, r)| supersedes(&record, r)) {
        map.insert(name, (handle, record));
    }
    true
}

/// `record` is a later revision than `than` (both have headers), or the
/// same revision and foreign: a foreign revision is never overruled by
/// what this build understands.
fn supersedes<T: Revisioned>(record: &Parsed<T>, than: &Parsed<T>) -> bool {
    let (ours, theirs) = (record.revision(), than.revision());
    ours > theirs || (ours == theirs && matches!(record, Parsed::Foreign(_)))
}

/// What the objects that share one label hold.
#[derive(Debug)]
pub(crate) enum Latest<T> {
    /// The valid record with the highest revision.
    Found(DataHandle, T),
    /// No object (in a listing proven healthy by [`read_records`]).
    Absent,
    /// Objects, but none parses: never to be read as "absent".
    Unreadable,
    /// The highest revision is a record this build does not understand
    /// ([`Foreign`]): never read, never rewritten, never "absent".
    Foreign(DataHandle, Foreign),
}

impl<T> Latest<T> {
    /// The record, `None` if absent, [`StoreError::Unreadable`] if unreadable.
    pub(crate) fn found(self, label: &str) -> Result<Option<(DataHandle, T)>, StoreError> {
        match self {
            Latest::Found(h, t) => Ok(Some((h, t))),
            Latest::Absent => Ok(None),
            Latest::Unreadable => Err(unreadable(label)),
            Latest::Foreign(_, f) => Err(StoreError::Foreign {
                label: label.to_owned(),
                format: f.format,
            }),
        }
    }
}

/// The latest valid record among objects that share one label. Records
/// that do not parse (a write cut short) are skipped in favour of the newest
/// valid revision.
pub(crate) fn latest<T: Revisioned>(objs: Vec<objects::DataObject>) -> Latest<T> {
    latest_contested(objs).0
}

/// [`latest`], and whether two objects of the record hold its latest
/// revision: two commits of that revision are settling (one wins, the other
/// is removed in a moment), so neither may be taken as the record yet.
pub(crate) fn latest_contested<T: Revisioned>(objs: Vec<objects::DataObject>) -> (Latest<T>, bool) {
    if objs.is_empty() {
        return (Latest::Absent, false);
    }
    let parsed: Vec<(DataHandle, Parsed<T>)> = objs
        .iter()
        .map(|o| (o.handle, parse_record::<T>(o)))
        .collect();
    let top = parsed.iter().filter_map(|(_, r)| r.revision()).max();
    let contested = parsed
        .iter()
        .filter(|(_, r)| r.revision().is_some() && r.revision() == top)
        .count()
        > 1;
    let mut best: Option<(DataHandle, Parsed<T>)> = None;
    for (h, r) in parsed {
        if r.revision().is_some() && best.as_ref().is_none_or(|(_, b)| supersedes(&r, b)) {
            best = Some((h, r));
        }
    }
    let found = match best {
        Some((h, Parsed::Understood(r))) => Latest::Found(h, r),
        Some((h, Parsed::Foreign(f))) => Latest::Foreign(h, f),
        Some((_, Parsed::Unreadable(_))) | None => Latest::Unreadable,
    };
    (found, contested)
}

#[cfg(test)]
mod tests {
    use super::record::{Foreign, Parsed};
    use super::*;

    fn alias(revision: u64) -> Parsed<AliasRecord> {
        Parsed::Understood(AliasRecord {
            format: AliasRecord::FORMAT,
            revision,
            name: "alias/a".into(),
            target: Uuid::nil(),
            created: 0.0,
            updated: 0.0,
            lineage: Vec::new(),
        })
    }

    fn foreign(revision: u64) -> Parsed<AliasRecord> {
        Parsed::Foreign(Foreign {
            revision,
            format: record::FORMAT + 1,
            reason: "format 2".into(),
        })
    }

    #[test]
    fn a_load_is_tried_again_after_token_faults_only() {
        assert!(load_may_retry(&HsmError::IncompleteListing));
        assert!(load_may_retry(&HsmError::Unavailable(
            "reconnecting".into()
        )));
        assert!(load_may_retry(&HsmError::QueueTimeout));
        assert!(!load_may_retry(&HsmError::PinRefused(
            "CKR_PIN_INCORRECT".into()
        )));
        assert!(!load_may_retry(&HsmError::Setup("no token".into())));
        assert!(!load_may_retry(&HsmError::Closed));
    }

    #[test]
    fn a_foreign_revision_wins_over_lower_and_equal_understood_ones_only() {
        assert!(supersedes(&foreign(3), &alias(2)));
        assert!(supersedes(&foreign(3), &alias(3)));
        assert!(!supersedes(&alias(3), &foreign(3)));
        assert!(supersedes(&alias(4), &foreign(3)));
        assert!(!supersedes(&foreign(2), &alias(3)));
        assert!(supersedes(&alias(0), &Parsed::Unreadable(String::new())));
    }
}
