//! Finding what a name refers to: in the cache, else on the token.
//!
//! A name the cache does not know is looked up on the token before it is
//! declared missing (another gateway may have created it). "Not found" is
//! believed only from a healthy listing ([`super::read_records`]); a name
//! found missing is remembered until the change marker moves, so repeated
//! lookups of unknown names do not each list the token.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::error::{StoreError, lock_poisoned, token, unreadable};
use super::record::{Foreign, RecordKind, alias_label, key_label, record_kind, version_label};
use super::{
    AliasEntry, AliasRecord, ForeignEntry, Key, KeyRecord, KeyStore, Latest, build_key,
    latest_contested, read_records,
};
use crate::arn::KeyRef;
use crate::hsm::objects::{self, DataHandle, MasterKeyVersion};

/// How long a gateway waits before it lists the token again when a key or
/// alias it knows was missing from a listing ([`relisted`]).
const RELIST_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// A record's latest revision as `read` lists it. A record this gateway
/// knows (`known`) that one listing misses is listed again after
/// [`RELIST_PAUSE`]: another process may be replacing it at this moment (a
/// new revision written, the old one destroyed), and SoftHSM2 in this
/// process can list the token between the two without seeing either. A
/// second listing that misses it too may still be SoftHSM2's: it drops an
/// object whose file it once read half-written (another process was
/// writing it) and never reads that file again until it is initialised
/// afresh. So `reread` asks for a re-initialisation (at most one per 5 s,
/// see `Pool::request_reread`) and a third listing, after it, decides.
/// Unknown names never pause, so random ids cannot stall anyone.
pub(super) async fn relisted<T, Fut>(
    read: impl Fn() -> Fut,
    known: impl FnOnce() -> Result<bool, StoreError>,
    reread: impl FnOnce() -> bool,
) -> Result<Latest<T>, StoreError>
where
    Fut: std::future::Future<Output = Result<Latest<T>, StoreError>>,
{
    let found = read().await?;
    if matches!(found, Latest::Absent) && known()? {
        tokio::time::sleep(RELIST_PAUSE).await;
        let again = read().await?;
        if matches!(again, Latest::Absent) && reread() {
            return read().await;
        }
        return Ok(again);
    }
    Ok(found)
}

/// How often a read waits for a contested record ([`latest_contested`]) to
/// settle before it takes the listing as it is. A commit settles in the
/// job that wrote it, so one pause is nearly always enough; only a writer
/// killed between writing and settling leaves the contest standing, until
/// the record's next commit removes both.
const CONTEST_ROUNDS: u32 = 20;

/// `read`, again after [`RELIST_PAUSE`] while what it listed is contested
/// (`true` beside the record): a reader that took one of two rival
/// revisions might cache the one that loses.
async fn uncontested<T, Fut>(label: &str, read: impl Fn() -> Fut) -> Result<Latest<T>, StoreError>
where
    Fut: std::future::Future<Output = Result<(bool, Latest<T>), StoreError>>,
{
    for _ in 0..CONTEST_ROUNDS {
        let (contested, found) = read().await?;
        if !contested {
            return Ok(found);
        }
        tokio::time::sleep(RELIST_PAUSE).await;
    }
    let (contested, found) = read().await?;
    if contested {
        tracing::warn!(
            label,
            "two revisions of a record are still contested; taking one (its next commit settles it)"
        );
    }
    Ok(found)
}

impl KeyStore {
    /// A key as the cache has it; [`StoreError::Foreign`] if its latest
    /// record is foreign (until the sync sees it replaced).
    pub(super) fn cached_key(&self, id: &Uuid) -> Result<Option<Arc<Key>>, StoreError> {
        let cache = self.cache.read().map_err(lock_poisoned)?;
        if let Some(f) = cache.foreign_keys.get(id) {
            let record = f.record.clone();
            drop(cache);
            return Err(self.foreign_met(&key_label(id), &record));
        }
        Ok(cache.keys.get(id).cloned())
    }

    /// Whether the cache has key `id`, understood or foreign.
    fn knows_key(&self, id: &Uuid) -> Result<bool, StoreError> {
        let cache = self.cache.read().map_err(lock_poisoned)?;
        Ok(cache.keys.contains_key(id) || cache.foreign_keys.contains_key(id))
    }

    /// A key by id: from the cache, else from the token (another gateway
    /// may have created it).
    pub async fn key_by_id(&self, id: &Uuid) -> Result<Option<Arc<Key>>, StoreError> {
        if let Some(k) = self.cached_key(id)? {
            return Ok(Some(k));
        }
        self.reload_key(id).await
    }

    /// A key read afresh from the token, for a request that carries grant
    /// tokens: a grant another gateway made a moment ago is then seen.
    pub async fn fresh_key(&self, id: &Uuid) -> Result<Option<Arc<Key>>, StoreError> {
        self.reload_key(id).await
    }

    /// Reads a key's latest record and version handles from the token into
    /// the cache; `None` (and out of the cache) only if a healthy listing of
    /// the token has no record of it.
    pub(super) async fn reload_key(&self, id: &Uuid) -> Result<Option<Arc<Key>>, StoreError> {
        let label = key_label(id);
        if self.is_absent(&label)? {
            return Ok(None);
        }
        let found = relisted(
            || uncontested(&label, || self.read_key(id, &label)),
            || self.knows_key(id),
            || self.hsm.pool().request_reread(),
        )
        .await?;
        match found {
            Latest::Found(_, key) => {
                let key = Arc::new(key);
                let mut cache = self.cache.write().map_err(lock_poisoned)?;
                cache.foreign_keys.remove(id);
                cache.keys.insert(*id, key.clone());
                Ok(Some(key))
            }
            Latest::Absent => {
                let mut cache = self.cache.write().map_err(lock_poisoned)?;
                cache.keys.remove(id);
                cache.foreign_keys.remove(id);
                drop(cache);
                self.mark_absent(label)?;
                Ok(None)
            }
            Latest::Unreadable => Err(unreadable(&label)),
            Latest::Foreign(handle, record) => Err(self.keep_foreign(&label, handle, record)?),
        }
    }

    /// A key's latest record and version handles, as one listing of the
    /// token has them.
    /// `true` beside it if the listing was contested ([`latest_contested`]).
    async fn read_key(&self, id: &Uuid, label: &str) -> Result<(bool, Latest<Key>), StoreError> {
        let read_label = label.to_owned();
        let id = *id;
        self.hsm
            .pool()
            .run(move |s| {
                let (latest, contested) =
                    latest_contested::<KeyRecord>(read_records(s, &read_label)?);
                let (meta, record) = match latest {
                    Latest::Found(m, r) => (m, r),
                    Latest::Absent => return Ok((contested, Latest::Absent)),
                    Latest::Unreadable => return Ok((contested, Latest::Unreadable)),
                    Latest::Foreign(h, f) => return Ok((contested, Latest::Foreign(h, f))),
                };
                let mut handles = HashMap::new();
                for v in &record.versions {
                    let l = version_label(&id, v.version, &v.nonce);
                    if let Some(h) = objects::find_master_key(s, &l)? {
                        handles.insert(l, h);
                    }
                }
                Ok((
                    contested,
                    Latest::Found(meta, build_key(record, meta, |l| handles.get(l).copied())),
                ))
            })
            .await
            .map_err(token)
    }

    /// The handle of one of a key's versions that its record lists. A
    /// version the cached key lacks (a listing during a token fault can miss
    /// objects) is looked up on the token again, so the key heals as soon as
    /// the token does instead of staying broken until restart. Still missing:
    /// the library is re-initialised (rate-limited) so that the module reads
    /// its storage afresh, and the answer is
    /// [`StoreError::PrimaryVersionMissing`], a retryable 5xx.
    pub(super) async fn version_handle(
        &self,
        key: &Arc<Key>,
        version: u32,
    ) -> Result<(Arc<Key>, MasterKeyVersion), StoreError> {
        if let Some(h) = key.version(version) {
            return Ok((key.clone(), h));
        }
        let fresh = self
            .reload_key(key.id())
            .await?
            .ok_or_else(|| self.key_not_found(key.id()))?;
        match fresh.version(version) {
            Some(h) => Ok((fresh, h)),
            None => {
                tracing::error!(key_id = %key.id(), version, "key version missing on the token");
                // The record says the object exists: have the module read
                // its storage again, and the next request finds it.
                self.hsm.pool().request_reread();
                Err(StoreError::PrimaryVersionMissing {
                    arn: self.realm.key_arn(key.id()),
                })
            }
        }
    }

    async fn alias(&self, name: &str) -> Result<Option<AliasEntry>, StoreError> {
        {
            let cache = self.cache.read().map_err(lock_poisoned)?;
            if let Some(f) = cache.foreign_aliases.get(name) {
                let record = f.record.clone();
                drop(cache);
                return Err(self.foreign_met(&alias_label(name), &record));
            }
            if let Some(a) = cache.aliases.get(name).cloned() {
                return Ok(Some(a));
            }
        }
        self.reload_alias(name).await
    }

    pub(super) async fn reload_alias(&self, name: &str) -> Result<Option<AliasEntry>, StoreError> {
        let label = alias_label(name);
        if self.is_absent(&label)? {
            return Ok(None);
        }
        let read_once = || async {
            let read_label = label.clone();
            self.hsm
                .pool()
                .run(move |s| {
                    let (latest, contested) =
                        latest_contested::<AliasRecord>(read_records(s, &read_label)?);
                    Ok((contested, latest))
                })
                .await
                .map_err(token)
        };
        let read = || uncontested(&label, read_once);
        let known = || {
            let cache = self.cache.read().map_err(lock_poisoned)?;
            Ok(cache.aliases.contains_key(name) || cache.foreign_aliases.contains_key(name))
        };
        // No re-initialisation for an alias: DeleteAlias through another
        // worker or gateway is routine, and every other process would pay
        // for it. A dropped alias object heals at the next one.
        let found = relisted(read, known, || false).await?;
        let mut cache = self.cache.write().map_err(lock_poisoned)?;
        match found {
            Latest::Found(handle, record) => {
                let entry = AliasEntry { handle, record };
                cache.foreign_aliases.remove(name);
                cache.aliases.insert(name.to_owned(), entry.clone());
                Ok(Some(entry))
            }
            Latest::Absent => {
                cache.aliases.remove(name);
                cache.foreign_aliases.remove(name);
                drop(cache);
                self.mark_absent(label)?;
                Ok(None)
            }
            Latest::Unreadable => Err(unreadable(&label)),
            Latest::Foreign(handle, record) => {
                drop(cache);
                Err(self.keep_foreign(&label, handle, record)?)
            }
        }
    }

    /// Puts the foreign record found under `label` in the cache in place
    /// of what the cache had, and answers the error for it
    /// ([`KeyStore::foreign_met`]).
    pub(super) fn keep_foreign(
        &self,
        label: &str,
        handle: DataHandle,
        record: Foreign,
    ) -> Result<StoreError, StoreError> {
        let error = self.foreign_met(label, &record);
        let entry = ForeignEntry { handle, record };
        let mut cache = self.cache.write().map_err(lock_poisoned)?;
        match record_kind(label) {
            RecordKind::Key(id) => {
                cache.keys.remove(&id);
                cache.foreign_keys.insert(id, entry);
            }
            RecordKind::Alias(name) => {
                cache.aliases.remove(&name);
                cache.foreign_aliases.insert(name, entry);
            }
            RecordKind::Other => {}
        }
        Ok(error)
    }

    /// Whether the cache holds the record labelled `label`, and whether a
    /// listing that misses it may ask for a re-initialisation (keys only,
    /// as in [`reload_key`](Self::reload_key) and
    /// [`reload_alias`](Self::reload_alias)).
    pub(super) fn knows(&self, label: &str) -> Result<(bool, bool), StoreError> {
        let cache = self.cache.read().map_err(lock_poisoned)?;
        Ok(match record_kind(label) {
            RecordKind::Key(id) => (cache.keys.contains_key(&id), true),
            RecordKind::Alias(name) => (cache.aliases.contains_key(&name), false),
            RecordKind::Other => (false, false),
        })
    }

    fn is_absent(&self, label: &str) -> Result<bool, StoreError> {
        Ok(self.absent.lock().map_err(lock_poisoned)?.contains(label))
    }

    /// Remembers that `label` is not on the token (bounded; cleared by every
    /// full sync).
    fn mark_absent(&self, label: String) -> Result<(), StoreError> {
        let mut absent = self.absent.lock().map_err(lock_poisoned)?;
        if absent.len() < 10_000 {
            absent.insert(label);
        }
        Ok(())
    }

    /// Resolves a KeyId parameter (key id, key ARN, alias name, alias ARN)
    /// to a key: [`StoreError::KeyRef`] if it cannot name one,
    /// [`StoreError::KeyNotFound`] or [`StoreError::AliasNotFound`] if it
    /// names none (a well-formed multi-Region id always names none).
    pub async fn resolve(&self, key_id_param: &str) -> Result<Arc<Key>, StoreError> {
        match self.realm.parse_key_ref(key_id_param)? {
            KeyRef::Key(id) => self
                .key_by_id(&id)
                .await?
                .ok_or_else(|| self.key_not_found(&id)),
            // kmsgate makes no multi-Region keys: a well-formed id names none.
            KeyRef::MultiRegion(id) => Err(StoreError::KeyNotFound {
                arn: self.realm.key_arn(&id),
            }),
            KeyRef::Alias(name) => {
                let entry = self
                    .alias(&name)
                    .await?
                    .ok_or_else(|| self.alias_not_found(&name))?;
                self.key_by_id(&entry.record.target)
                    .await?
                    .ok_or_else(|| self.key_not_found(&entry.record.target))
            }
        }
    }

    /// The key an alias (with prefix) points at, if the alias exists.
    pub async fn alias_target(&self, alias_name: &str) -> Result<Option<Uuid>, StoreError> {
        Ok(self.alias(alias_name).await?.map(|e| e.record.target))
    }

    pub(super) fn key_not_found(&self, id: &Uuid) -> StoreError {
        StoreError::KeyNotFound {
            arn: self.realm.key_arn(id),
        }
    }

    pub(super) fn alias_not_found(&self, alias_name: &str) -> StoreError {
        StoreError::AliasNotFound {
            arn: self.realm.alias_arn(alias_name),
        }
    }
}
