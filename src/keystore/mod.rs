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

pub mod clock;
mod crypto;
pub mod record;
pub mod scheduler;
pub mod sync;
mod usage;
mod write;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use uuid::Uuid;

use crate::arn::{KeyRef, Realm};
use crate::error::KmsError;
use crate::hsm::objects::{self, DataHandle, MasterKeyVersion};
use crate::hsm::{Hsm, HsmError};
pub use clock::Clock;
pub use crypto::Sealed;
pub use record::{
    AliasRecord, KeyRecord, KeyState, RotationSchedule, RotationType, Tag, VersionRecord,
    key_material_id,
};
use record::{LABEL_PREFIX, Revisioned, alias_label, key_label, version_label};

/// A key as the cache holds it: its record and the handles of its versions.
#[derive(Debug)]
pub struct Key {
    pub record: KeyRecord,
    meta: DataHandle,
    versions: HashMap<u32, MasterKeyVersion>,
}

impl Key {
    pub fn id(&self) -> &Uuid {
        &self.record.key_id
    }

    fn version(&self, v: u32) -> Option<MasterKeyVersion> {
        self.versions.get(&v).copied()
    }

    /// Usable for cryptography: Enabled. AWS's texts otherwise.
    pub fn check_usable(&self, realm: &Realm) -> Result<(), KmsError> {
        usable(&self.record, realm)
    }
}

/// A key record is usable for cryptography (and for rotation settings) only
/// while Enabled; AWS's exceptions and texts otherwise.
pub fn usable(record: &KeyRecord, realm: &Realm) -> Result<(), KmsError> {
    let arn = realm.key_arn(&record.key_id);
    match record.state {
        KeyState::Enabled => Ok(()),
        KeyState::Disabled => Err(KmsError::Disabled(format!("{arn} is disabled."))),
        KeyState::PendingDeletion => Err(KmsError::InvalidState(format!(
            "{arn} is pending deletion."
        ))),
    }
}

/// How one key version is protected on the token.
#[derive(Debug, Clone)]
pub struct Custody {
    pub key_id: Uuid,
    pub version: u32,
    pub sensitive: bool,
    pub extractable: bool,
    pub never_extractable: bool,
    pub value_readable: bool,
    pub wrapped_out: bool,
}

impl Custody {
    /// What DESIGN.md decision 2 requires of every master key version.
    pub fn is_safe(&self) -> bool {
        self.sensitive
            && !self.extractable
            && self.never_extractable
            && !self.value_readable
            && !self.wrapped_out
    }
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

#[derive(Default)]
struct Cache {
    keys: HashMap<Uuid, Arc<Key>>,
    aliases: BTreeMap<String, AliasEntry>,
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
}

/// Maps token failures to what a client sees. Details stay in the log.
pub fn hsm_to_kms(e: HsmError) -> KmsError {
    match e {
        HsmError::Busy => KmsError::Throttling,
        HsmError::QueueTimeout => KmsError::DependencyTimeout(
            "The key store did not answer in time. Retry the request.".into(),
        ),
        HsmError::BadTag => KmsError::InvalidCiphertext,
        e if e.session_is_broken() => {
            tracing::error!(error = %e, "token unavailable");
            KmsError::KeyUnavailable("The key store is unavailable. Retry the request.".into())
        }
        e => {
            tracing::error!(error = %e, "token operation failed");
            KmsError::Internal("An internal error occurred in the key store.".into())
        }
    }
}

fn lock_poisoned() -> KmsError {
    KmsError::Internal("An internal error occurred in the key store.".into())
}

impl KeyStore {
    /// Reads every kmsgate object on the token into the cache.
    pub async fn load(
        hsm: Arc<Hsm>,
        realm: Realm,
        policy: KeyPolicy,
        clock: Box<dyn Clock>,
    ) -> Result<KeyStore, HsmError> {
        let (data, keys, markers) = hsm
            .pool()
            .run_within(std::time::Duration::from_secs(120), |s| {
                let markers = sync::Markers::find_or_create(s)?;
                Ok((
                    objects::read_data(s, None)?,
                    objects::list_master_keys(s)?,
                    markers,
                ))
            })
            .await?;
        let handles: HashMap<String, MasterKeyVersion> = keys.into_iter().collect();
        let mut records: HashMap<Uuid, (DataHandle, KeyRecord)> = HashMap::new();
        let mut aliases: HashMap<String, (DataHandle, AliasRecord)> = HashMap::new();
        let seen = data.iter().map(|o| o.handle).collect();
        for obj in data {
            let Some(rest) = obj.label.strip_prefix(LABEL_PREFIX) else {
                continue;
            };
            if rest.starts_with("key/") {
                if let Some(r) = parse_record::<KeyRecord>(&obj) {
                    keep_latest(&mut records, r.key_id, obj.handle, r);
                }
            } else if rest.starts_with("alias/")
                && let Some(r) = parse_record::<AliasRecord>(&obj)
            {
                keep_latest(&mut aliases, r.name.clone(), obj.handle, r);
            }
        }
        let mut cache = Cache::default();
        for (id, (meta, record)) in records {
            let key = build_key(record, meta, |l| handles.get(l).copied());
            cache.keys.insert(id, Arc::new(key));
        }
        for (name, (handle, record)) in aliases {
            cache.aliases.insert(name, AliasEntry { handle, record });
        }
        tracing::info!(
            keys = cache.keys.len(),
            aliases = cache.aliases.len(),
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
        })
    }

    pub fn realm(&self) -> &Realm {
        &self.realm
    }

    pub fn policy(&self) -> &KeyPolicy {
        &self.policy
    }

    /// Whether the token answered its last health check (for /readyz).
    pub fn is_ready(&self) -> bool {
        true
    }

    /// The store's clock: epoch seconds.
    pub fn now(&self) -> f64 {
        self.clock.now()
    }

    fn cached_key(&self, id: &Uuid) -> Result<Option<Arc<Key>>, KmsError> {
        Ok(self
            .cache
            .read()
            .map_err(|_| lock_poisoned())?
            .keys
            .get(id)
            .cloned())
    }

    /// A key by id: from the cache, else from the token (another gateway
    /// may have created it).
    pub async fn key_by_id(&self, id: &Uuid) -> Result<Option<Arc<Key>>, KmsError> {
        if let Some(k) = self.cached_key(id)? {
            return Ok(Some(k));
        }
        self.reload_key(id).await
    }

    /// Reads a key's latest record and version handles from the token into
    /// the cache; `None` (and out of the cache) if the token has none.
    async fn reload_key(&self, id: &Uuid) -> Result<Option<Arc<Key>>, KmsError> {
        let label = key_label(id);
        if self.is_absent(&label)? {
            return Ok(None);
        }
        let absent_label = label.clone();
        let id = *id;
        let found = self
            .hsm
            .pool()
            .run(move |s| {
                let Some((meta, record)) =
                    latest::<KeyRecord>(objects::read_data(s, Some(&label))?)
                else {
                    return Ok(None);
                };
                let mut handles = HashMap::new();
                for v in &record.versions {
                    let l = version_label(&id, v.version, &v.nonce);
                    if let Some(h) = objects::find_master_key(s, &l)? {
                        handles.insert(l, h);
                    }
                }
                Ok(Some(build_key(record, meta, |l| handles.get(l).copied())))
            })
            .await
            .map_err(hsm_to_kms)?;
        let mut cache = self.cache.write().map_err(|_| lock_poisoned())?;
        match found {
            Some(key) => {
                let key = Arc::new(key);
                cache.keys.insert(id, key.clone());
                Ok(Some(key))
            }
            None => {
                cache.keys.remove(&id);
                drop(cache);
                self.mark_absent(absent_label)?;
                Ok(None)
            }
        }
    }

    async fn alias(&self, name: &str) -> Result<Option<AliasEntry>, KmsError> {
        if let Some(a) = self
            .cache
            .read()
            .map_err(|_| lock_poisoned())?
            .aliases
            .get(name)
            .cloned()
        {
            return Ok(Some(a));
        }
        self.reload_alias(name).await
    }

    async fn reload_alias(&self, name: &str) -> Result<Option<AliasEntry>, KmsError> {
        let label = alias_label(name);
        if self.is_absent(&label)? {
            return Ok(None);
        }
        let absent_label = label.clone();
        let found = self
            .hsm
            .pool()
            .run(move |s| Ok(latest::<AliasRecord>(objects::read_data(s, Some(&label))?)))
            .await
            .map_err(hsm_to_kms)?;
        let mut cache = self.cache.write().map_err(|_| lock_poisoned())?;
        match found {
            Some((handle, record)) => {
                let entry = AliasEntry { handle, record };
                cache.aliases.insert(name.to_owned(), entry.clone());
                Ok(Some(entry))
            }
            None => {
                cache.aliases.remove(name);
                drop(cache);
                self.mark_absent(absent_label)?;
                Ok(None)
            }
        }
    }

    fn is_absent(&self, label: &str) -> Result<bool, KmsError> {
        Ok(self
            .absent
            .lock()
            .map_err(|_| lock_poisoned())?
            .contains(label))
    }

    /// Remembers that `label` is not on the token (bounded; cleared by every
    /// full sync).
    fn mark_absent(&self, label: String) -> Result<(), KmsError> {
        let mut absent = self.absent.lock().map_err(|_| lock_poisoned())?;
        if absent.len() < 10_000 {
            absent.insert(label);
        }
        Ok(())
    }

    /// Resolves a KeyId parameter (key id, key ARN, alias name, alias ARN)
    /// to a key, or AWS's NotFoundException.
    pub async fn resolve(&self, key_id_param: &str) -> Result<Arc<Key>, KmsError> {
        match self.realm.parse_key_ref(key_id_param)? {
            KeyRef::Key(id) => self
                .key_by_id(&id)
                .await?
                .ok_or_else(|| self.realm.key_not_found(&id)),
            KeyRef::Alias(name) => {
                let entry = self
                    .alias(&name)
                    .await?
                    .ok_or_else(|| self.realm.alias_not_found(&name))?;
                self.key_by_id(&entry.record.target)
                    .await?
                    .ok_or_else(|| self.realm.key_not_found(&entry.record.target))
            }
        }
    }

    /// Every key, ordered by key id.
    pub fn all_keys(&self) -> Result<Vec<Arc<Key>>, KmsError> {
        let cache = self.cache.read().map_err(|_| lock_poisoned())?;
        let mut keys: Vec<Arc<Key>> = cache.keys.values().cloned().collect();
        keys.sort_by(|a, b| a.id().cmp(b.id()));
        Ok(keys)
    }

    /// Every alias, ordered by name.
    pub fn all_aliases(&self) -> Result<Vec<AliasRecord>, KmsError> {
        let cache = self.cache.read().map_err(|_| lock_poisoned())?;
        Ok(cache.aliases.values().map(|a| a.record.clone()).collect())
    }

    /// How every version of every key is protected, as the token reports
    /// it. For `kmsgate check-keys`, the operator's custody check.
    pub async fn custody_report(&self) -> Result<Vec<Custody>, KmsError> {
        let mut versions = Vec::new();
        for key in self.all_keys()? {
            let mut vs: Vec<_> = key.versions.iter().map(|(v, h)| (*v, *h)).collect();
            vs.sort_by_key(|(v, _)| *v);
            versions.extend(vs.into_iter().map(|(v, h)| (*key.id(), v, h)));
        }
        self.hsm
            .pool()
            .run(move |s| {
                let mut out = Vec::with_capacity(versions.len());
                for (key_id, version, h) in versions {
                    let (sensitive, extractable, never_extractable) =
                        objects::key_protection(s, h)?;
                    let value_readable = matches!(objects::try_read_key_value(s, h), Ok(Some(_)));
                    let wrapped_out = objects::try_wrap_out(s, h)?;
                    out.push(Custody {
                        key_id,
                        version,
                        sensitive,
                        extractable,
                        never_extractable,
                        value_readable,
                        wrapped_out,
                    });
                }
                Ok(out)
            })
            .await
            .map_err(hsm_to_kms)
    }
}

/// Builds a cached key from its record, finding each version's handle with
/// `find` (by label).
fn build_key(
    record: KeyRecord,
    meta: DataHandle,
    find: impl Fn(&str) -> Option<MasterKeyVersion>,
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
        record,
        meta,
        versions,
    }
}

fn parse_record<T: Revisioned>(obj: &objects::DataObject) -> Option<T> {
    match serde_json::from_slice::<T>(&obj.value) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(label = %obj.label, error = %e, "unreadable record skipped");
            None
        }
    }
}

/// Keeps the record with the highest revision under each name.
fn keep_latest<K: Eq + std::hash::Hash, T: Revisioned>(
    map: &mut HashMap<K, (DataHandle, T)>,
    name: K,
    handle: DataHandle,
    record: T,
) {
    if map
        .get(&name)
        .is_none_or(|(_, r)| r.revision() < record.revision())
    {
        map.insert(name, (handle, record));
    }
}

/// The latest record among objects that share one label.
fn latest<T: Revisioned>(objs: Vec<objects::DataObject>) -> Option<(DataHandle, T)> {
    objs.iter()
        .filter_map(|o| parse_record::<T>(o).map(|r| (o.handle, r)))
        .max_by_key(|(_, r)| r.revision())
}
