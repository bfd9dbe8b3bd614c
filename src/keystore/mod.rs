//! Keys, key versions and aliases: what the names in a request refer to.
//!
//! The token is the only state (DESIGN.md decision 3). This module holds a
//! cache of it: every key record, every alias and the object handle of every
//! key version are read once at start-up, so the hot path never calls
//! C_FindObjects. A name the cache does not know is looked up on the token
//! before it is declared missing, so a key or alias created by another
//! gateway on the same token is found on first use.
//!
//! Mutations are serialised inside the process (one async mutex): SoftHSM2
//! 2.6.1 races on concurrent object creation, and a read-modify-write of a
//! record must not interleave with another.

pub mod record;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;
use zeroize::Zeroizing;

use crate::arn::{KeyRef, Realm};
use crate::blob::{self, EncryptionContext, Header};
use crate::error::KmsError;
use crate::hsm::objects::{self, DataHandle, MasterKeyVersion};
use crate::hsm::{Hsm, HsmError, crypto};
use record::Revisioned;
pub use record::{AliasRecord, KeyRecord, KeyState, Tag, key_material_id};
use record::{LABEL_PREFIX, alias_label, key_label, version_id, version_label};

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
        let arn = realm.key_arn(self.id());
        match self.record.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::Disabled(format!("{arn} is disabled."))),
            KeyState::PendingDeletion => Err(KmsError::InvalidState(format!(
                "{arn} is pending deletion."
            ))),
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

/// A ciphertext produced by the token, with the version that made it.
pub struct Sealed {
    pub blob: Vec<u8>,
    pub version: u32,
    /// Present unless the token wrapped a data key without exposing it.
    pub plaintext: Option<Zeroizing<Vec<u8>>>,
}

pub struct KeyStore {
    hsm: Arc<Hsm>,
    realm: Realm,
    cache: RwLock<Cache>,
    /// Serialises every change to token objects inside this process.
    writes: tokio::sync::Mutex<()>,
}

/// Seconds since the epoch, with millisecond precision (what AWS sends).
pub fn now_epoch() -> f64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
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
    pub async fn load(hsm: Arc<Hsm>, realm: Realm) -> Result<KeyStore, HsmError> {
        let (data, keys) = hsm
            .pool()
            .run(|s| Ok((objects::read_data(s, None)?, objects::list_master_keys(s)?)))
            .await?;
        let handles: HashMap<String, MasterKeyVersion> = keys.into_iter().collect();
        let mut records: HashMap<Uuid, (DataHandle, KeyRecord)> = HashMap::new();
        let mut aliases: HashMap<String, (DataHandle, AliasRecord)> = HashMap::new();
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
            cache: RwLock::new(cache),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    pub fn realm(&self) -> &Realm {
        &self.realm
    }

    pub fn hsm(&self) -> &Hsm {
        &self.hsm
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
        let label = key_label(id);
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
                    let l = version_label(&id, v.version);
                    if let Some(h) = objects::find_master_key(s, &l)? {
                        handles.insert(l, h);
                    }
                }
                Ok(Some(build_key(record, meta, |l| handles.get(l).copied())))
            })
            .await
            .map_err(hsm_to_kms)?;
        let Some(key) = found else {
            return Ok(None);
        };
        let key = Arc::new(key);
        self.cache
            .write()
            .map_err(|_| lock_poisoned())?
            .keys
            .entry(id)
            .or_insert_with(|| key.clone());
        Ok(Some(key))
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
        let label = alias_label(name);
        let found = self
            .hsm
            .pool()
            .run(move |s| Ok(latest::<AliasRecord>(objects::read_data(s, Some(&label))?)))
            .await
            .map_err(hsm_to_kms)?;
        let Some((handle, record)) = found else {
            return Ok(None);
        };
        let entry = AliasEntry { handle, record };
        self.cache
            .write()
            .map_err(|_| lock_poisoned())?
            .aliases
            .insert(name.to_owned(), entry.clone());
        Ok(Some(entry))
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

    /// Creates a key: its first version on the token, then its record.
    pub async fn create_key(
        &self,
        description: String,
        tags: Vec<Tag>,
    ) -> Result<Arc<Key>, KmsError> {
        let _guard = self.writes.lock().await;
        let id = Uuid::new_v4();
        let record = KeyRecord::new(id, now_epoch(), description, tags);
        let value = serde_json::to_vec(&record).map_err(|e| KmsError::Internal(e.to_string()))?;
        let wrap = self.hsm.capabilities().gcm_wrap;
        let (meta, handle) = self
            .hsm
            .pool()
            .run(move |s| {
                let handle = objects::generate_master_key(
                    s,
                    &version_label(&id, 1),
                    &version_id(&id, 1),
                    wrap,
                )?;
                match objects::create_data(s, &key_label(&id), &value) {
                    Ok(meta) => Ok((meta, handle)),
                    Err(e) => {
                        // Leave no orphan key object behind.
                        let _ = objects::destroy_master_key(s, handle);
                        Err(e)
                    }
                }
            })
            .await
            .map_err(hsm_to_kms)?;
        let key = Arc::new(Key {
            record,
            meta,
            versions: HashMap::from([(1, handle)]),
        });
        self.cache
            .write()
            .map_err(|_| lock_poisoned())?
            .keys
            .insert(id, key.clone());
        tracing::info!(key_id = %id, "key created");
        Ok(key)
    }

    /// Changes a key's record: `change` sees the current record and may
    /// refuse; the new record is written to the token before the cache.
    pub async fn update_key<F>(&self, id: &Uuid, change: F) -> Result<Arc<Key>, KmsError>
    where
        F: FnOnce(&mut KeyRecord) -> Result<(), KmsError>,
    {
        let _guard = self.writes.lock().await;
        let current = self
            .key_by_id(id)
            .await?
            .ok_or_else(|| self.realm.key_not_found(id))?;
        let mut record = current.record.clone();
        change(&mut record)?;
        if record == current.record {
            return Ok(current);
        }
        record.revision += 1;
        let value = serde_json::to_vec(&record).map_err(|e| KmsError::Internal(e.to_string()))?;
        let (old, label) = (current.meta, key_label(id));
        let meta = self
            .hsm
            .pool()
            .run(move |s| objects::replace_data(s, old, &label, &value))
            .await
            .map_err(hsm_to_kms)?;
        let key = Arc::new(Key {
            record,
            meta,
            versions: current.versions.clone(),
        });
        self.cache
            .write()
            .map_err(|_| lock_poisoned())?
            .keys
            .insert(*id, key.clone());
        Ok(key)
    }

    /// Creates `alias_name` (with prefix) for `target`.
    pub async fn create_alias(&self, alias_name: &str, target: &Uuid) -> Result<(), KmsError> {
        let _guard = self.writes.lock().await;
        if self.alias(alias_name).await?.is_some() {
            return Err(KmsError::AlreadyExists(format!(
                "An alias with the name {} already exists",
                self.realm.alias_arn(alias_name)
            )));
        }
        let now = now_epoch();
        let record = AliasRecord {
            format: 1,
            revision: 0,
            name: alias_name.to_owned(),
            target: *target,
            created: now,
            updated: now,
        };
        let value = serde_json::to_vec(&record).map_err(|e| KmsError::Internal(e.to_string()))?;
        let label = alias_label(alias_name);
        let handle = self
            .hsm
            .pool()
            .run(move |s| objects::create_data(s, &label, &value))
            .await
            .map_err(hsm_to_kms)?;
        self.cache
            .write()
            .map_err(|_| lock_poisoned())?
            .aliases
            .insert(alias_name.to_owned(), AliasEntry { handle, record });
        Ok(())
    }

    /// Points an existing alias at another key.
    pub async fn update_alias(&self, alias_name: &str, target: &Uuid) -> Result<(), KmsError> {
        let _guard = self.writes.lock().await;
        let entry = self
            .alias(alias_name)
            .await?
            .ok_or_else(|| self.realm.alias_not_found(alias_name))?;
        let mut record = entry.record.clone();
        record.target = *target;
        record.updated = now_epoch();
        record.revision += 1;
        let value = serde_json::to_vec(&record).map_err(|e| KmsError::Internal(e.to_string()))?;
        let (old, label) = (entry.handle, alias_label(alias_name));
        let handle = self
            .hsm
            .pool()
            .run(move |s| objects::replace_data(s, old, &label, &value))
            .await
            .map_err(hsm_to_kms)?;
        self.cache
            .write()
            .map_err(|_| lock_poisoned())?
            .aliases
            .insert(alias_name.to_owned(), AliasEntry { handle, record });
        Ok(())
    }

    pub async fn delete_alias(&self, alias_name: &str) -> Result<(), KmsError> {
        let _guard = self.writes.lock().await;
        let entry = self
            .alias(alias_name)
            .await?
            .ok_or_else(|| self.realm.alias_not_found(alias_name))?;
        let handle = entry.handle;
        self.hsm
            .pool()
            .run(move |s| objects::destroy_data(s, handle))
            .await
            .map_err(hsm_to_kms)?;
        self.cache
            .write()
            .map_err(|_| lock_poisoned())?
            .aliases
            .remove(alias_name);
        Ok(())
    }

    /// Encrypts `plaintext` under the key's primary version.
    pub async fn encrypt(
        &self,
        key: &Key,
        context: &EncryptionContext,
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Sealed, KmsError> {
        let (version, handle, header) = self.primary(key)?;
        let aad = blob::aad(&header, context);
        let iv_source = self.hsm.capabilities().iv_source;
        let (iv, ct) = self
            .hsm
            .pool()
            .run(move |s| crypto::encrypt(s, handle, iv_source, &aad, &plaintext))
            .await
            .map_err(hsm_to_kms)?;
        Ok(Sealed {
            blob: blob::assemble(&header, &iv, &ct),
            version,
            plaintext: None,
        })
    }

    /// Makes a data key of `len` bytes on the token, sealed under the key's
    /// primary version. Without `want_plaintext`, and where the token can,
    /// the data key is wrapped without its plaintext leaving the token.
    pub async fn generate_data_key(
        &self,
        key: &Key,
        context: &EncryptionContext,
        len: usize,
        want_plaintext: bool,
    ) -> Result<Sealed, KmsError> {
        let (version, handle, header) = self.primary(key)?;
        let aad = blob::aad(&header, context);
        let caps = self.hsm.capabilities();
        let iv_source = caps.iv_source;
        let wrap = caps.gcm_wrap && !want_plaintext;
        let dk = self
            .hsm
            .pool()
            .run(move |s| {
                if wrap {
                    crypto::generate_wrapped_data_key(s, handle, iv_source, &aad, len)
                } else {
                    crypto::generate_data_key(s, handle, iv_source, &aad, len)
                }
            })
            .await
            .map_err(hsm_to_kms)?;
        Ok(Sealed {
            blob: blob::assemble(&header, &dk.iv, &dk.ciphertext),
            version,
            plaintext: if want_plaintext { dk.plaintext } else { None },
        })
    }

    /// Decrypts a parsed blob with the version it names.
    pub async fn decrypt(
        &self,
        key: &Key,
        parsed: &blob::ParsedBlob<'_>,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let handle = key
            .version(parsed.header.key_version)
            .ok_or(KmsError::InvalidCiphertext)?;
        let aad = blob::aad(&parsed.header, context);
        let iv = parsed.iv;
        let ct = parsed.ciphertext_and_tag.to_vec();
        self.hsm
            .pool()
            .run(move |s| crypto::decrypt(s, handle, &iv, &aad, &ct))
            .await
            .map_err(hsm_to_kms)
    }

    /// Bytes from the token's RNG.
    pub async fn random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        self.hsm
            .pool()
            .run(move |s| crypto::random(s, len))
            .await
            .map_err(hsm_to_kms)
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

    fn primary(&self, key: &Key) -> Result<(u32, MasterKeyVersion, Header), KmsError> {
        let version = key.record.primary_version;
        let handle = key.version(version).ok_or_else(|| {
            tracing::error!(key_id = %key.id(), version, "primary key version missing on the token");
            KmsError::KeyUnavailable(format!(
                "{} is unavailable.",
                self.realm.key_arn(key.id())
            ))
        })?;
        Ok((
            version,
            handle,
            Header {
                key_id: *key.id(),
                key_version: version,
            },
        ))
    }
}

fn build_key(
    record: KeyRecord,
    meta: DataHandle,
    find: impl Fn(&str) -> Option<MasterKeyVersion>,
) -> Key {
    let mut versions = HashMap::new();
    for v in &record.versions {
        match find(&version_label(&record.key_id, v.version)) {
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
