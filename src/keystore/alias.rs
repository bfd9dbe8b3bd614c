//! Changing aliases, with the commit protocol of [`super::commit`]: an
//! alias record is written as a new revision, confirmed durable, and kept
//! only if no rival revision appeared meanwhile.
//!
//! UpdateAlias and DeleteAlias are authorized on the key the alias names,
//! so each names the key its caller was authorized on, and the change is
//! made only while the token's latest record still names that key (for an
//! update, inside the commit; for a removal, in the job that removes).
//! Another gateway may have moved the alias since this one cached it: then
//! nothing is written, and the caller authorizes afresh on the key the
//! token names.

use uuid::Uuid;

use super::commit::{Committable, Next, Outcome};
use super::error::{StoreError, lock_poisoned, token};
use super::record::{LABEL_PREFIX, alias_label};
use super::{AliasEntry, AliasRecord, KeyStore, Latest, latest, read_records};
use crate::hsm::objects;

impl Committable for AliasRecord {
    /// A record that does not parse is treated as absent: CreateAlias
    /// writes revision 0 beside it, and the commit, which counts no
    /// unreadable object as a rival, removes the damaged one.
    fn unreadable(label: &str) -> Result<(), StoreError> {
        let alias = label.strip_prefix(LABEL_PREFIX).unwrap_or(label);
        tracing::warn!(alias, "replacing an unreadable alias record");
        Ok(())
    }
}

/// Why DeleteAlias removed nothing.
enum Kept {
    /// The token's latest record names this key, not the one expected.
    Moved(Uuid),
    /// The token's latest record is foreign.
    Foreign(super::record::Foreign),
}

/// Why a conditional alias change wrote nothing.
enum Moved {
    /// The token's latest record names this key, not the one expected.
    To(Uuid),
    Store(StoreError),
}

impl From<StoreError> for Moved {
    fn from(e: StoreError) -> Moved {
        Moved::Store(e)
    }
}

impl KeyStore {
    /// Creates `alias_name` (with prefix) for `target`.
    pub async fn create_alias(&self, alias_name: &str, target: &Uuid) -> Result<(), StoreError> {
        let now = self.now();
        self.write_alias(alias_name, |existing| match existing {
            Some(_) => Err(StoreError::AliasExists {
                arn: self.realm.alias_arn(alias_name),
            }),
            None => Ok(AliasRecord {
                format: AliasRecord::FORMAT,
                revision: 0,
                lineage: Vec::new(),
                name: alias_name.to_owned(),
                target: *target,
                created: now,
                updated: now,
            }),
        })
        .await
    }

    /// Points an existing alias at `target`, provided the token's latest
    /// record still names `from`: the key the caller was authorized to move
    /// it away from. The check is part of the commit, so a rival change
    /// through another gateway makes it run again on the rival's record.
    /// `Ok(Some(now))`: nothing was written, the alias names `now` on the
    /// token (and in the cache from here on); the caller decides afresh.
    pub async fn update_alias(
        &self,
        alias_name: &str,
        from: &Uuid,
        target: &Uuid,
    ) -> Result<Option<Uuid>, StoreError> {
        let now = self.now();
        let written = self
            .write_alias(alias_name, |existing| match existing {
                None => Err(Moved::Store(self.alias_not_found(alias_name))),
                Some(r) if r.target != *from => Err(Moved::To(r.target)),
                Some(r) => Ok(AliasRecord {
                    target: *target,
                    updated: now,
                    ..r.clone()
                }),
            })
            .await;
        match written {
            Ok(()) => Ok(None),
            Err(Moved::To(now)) => {
                self.reload_alias(alias_name).await?;
                Ok(Some(now))
            }
            Err(Moved::Store(e)) => Err(e),
        }
    }

    /// Writes an alias record with the commit protocol: `make` gets the
    /// latest record on the token (if any) and returns the new one.
    async fn write_alias<F, E>(&self, alias_name: &str, mut make: F) -> Result<(), E>
    where
        F: FnMut(Option<&AliasRecord>) -> Result<AliasRecord, E>,
        E: From<StoreError>,
    {
        let writes = self.writes.lock().await;
        let label = alias_label(alias_name);
        let outcome = self
            .commit_revision(&writes, &label, |current| {
                Ok::<_, E>(Next::Write(make(current)?, ()))
            })
            .await?;
        let (handle, record) = match outcome {
            Outcome::Committed(handle, record, ()) => (handle, record),
            Outcome::Kept(handle, record) => (handle, record),
        };
        self.cache
            .write()
            .map_err(lock_poisoned)?
            .aliases
            .insert(alias_name.to_owned(), AliasEntry { handle, record });
        self.announce().await;
        Ok(())
    }

    /// Removes an alias, provided the token's latest record still names
    /// `from`, the key the caller was authorized on (checked in the same
    /// job as the removal). `Ok(Some(now))`: nothing was removed, the alias
    /// names `now` on the token (and in the cache from here on).
    pub async fn delete_alias(
        &self,
        alias_name: &str,
        from: &Uuid,
    ) -> Result<Option<Uuid>, StoreError> {
        let _guard = self.writes.lock().await;
        let label = alias_label(alias_name);
        let confirm = self.hsm.confirmer();
        let from = *from;
        let removed = self
            .hsm
            .pool()
            .run(move |s| {
                let all = read_records(s, &label)?;
                match latest::<AliasRecord>(all.clone()) {
                    Latest::Found(_, r) if r.target != from => {
                        return Ok(Err(Kept::Moved(r.target)));
                    }
                    // Not this build's to remove (DESIGN.md decision 20).
                    Latest::Foreign(_, f) => return Ok(Err(Kept::Foreign(f))),
                    _ => {}
                }
                for o in &all {
                    let _ = objects::destroy_data(s, o.handle);
                }
                if !all.is_empty() {
                    confirm.data_gone(s, &label)?;
                }
                Ok(Ok(!all.is_empty()))
            })
            .await
            .map_err(token)?;
        let removed = match removed {
            Ok(removed) => removed,
            Err(Kept::Moved(now)) => {
                self.reload_alias(alias_name).await?;
                return Ok(Some(now));
            }
            Err(Kept::Foreign(f)) => {
                return Err(self.foreign_met(&alias_label(alias_name), &f));
            }
        };
        self.cache
            .write()
            .map_err(lock_poisoned)?
            .aliases
            .remove(alias_name);
        self.announce().await;
        if !removed {
            return Err(self.alias_not_found(alias_name));
        }
        Ok(None)
    }
}
