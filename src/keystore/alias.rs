//! Changing aliases, with the commit protocol of [`super::commit`]: an
//! alias record is written as a new revision, confirmed durable, and kept
//! only if no rival revision appeared meanwhile.

use uuid::Uuid;

use super::commit::{Committable, Next, Outcome};
use super::error::{StoreError, lock_poisoned, token};
use super::record::{LABEL_PREFIX, alias_label};
use super::{AliasEntry, AliasRecord, KeyStore, read_records};
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

impl KeyStore {
    /// Creates `alias_name` (with prefix) for `target`.
    pub async fn create_alias(&self, alias_name: &str, target: &Uuid) -> Result<(), StoreError> {
        let now = self.now();
        self.write_alias(alias_name, |existing| match existing {
            Some(_) => Err(StoreError::AliasExists {
                arn: self.realm.alias_arn(alias_name),
            }),
            None => Ok(AliasRecord {
                format: 1,
                revision: 0,
                name: alias_name.to_owned(),
                target: *target,
                created: now,
                updated: now,
            }),
        })
        .await
    }

    /// Points an existing alias at another key.
    pub async fn update_alias(&self, alias_name: &str, target: &Uuid) -> Result<(), StoreError> {
        let now = self.now();
        self.write_alias(alias_name, |existing| match existing {
            None => Err(self.alias_not_found(alias_name)),
            Some(r) => Ok(AliasRecord {
                target: *target,
                updated: now,
                ..r.clone()
            }),
        })
        .await
    }

    /// Writes an alias record with the commit protocol: `make` gets the
    /// latest record on the token (if any) and returns the new one.
    async fn write_alias<F>(&self, alias_name: &str, mut make: F) -> Result<(), StoreError>
    where
        F: FnMut(Option<&AliasRecord>) -> Result<AliasRecord, StoreError>,
    {
        let writes = self.writes.lock().await;
        let label = alias_label(alias_name);
        let outcome = self
            .commit_revision(&writes, &label, |current| {
                Ok::<_, StoreError>(Next::Write(make(current)?, ()))
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

    pub async fn delete_alias(&self, alias_name: &str) -> Result<(), StoreError> {
        let _guard = self.writes.lock().await;
        let label = alias_label(alias_name);
        let confirm = self.hsm.confirmer();
        let removed = self
            .hsm
            .pool()
            .run(move |s| {
                let all = read_records(s, &label)?;
                for o in &all {
                    let _ = objects::destroy_data(s, o.handle);
                }
                if !all.is_empty() {
                    confirm.data_gone(s, &label)?;
                }
                Ok(!all.is_empty())
            })
            .await
            .map_err(token)?;
        self.cache
            .write()
            .map_err(lock_poisoned)?
            .aliases
            .remove(alias_name);
        self.announce().await;
        if !removed {
            return Err(self.alias_not_found(alias_name));
        }
        Ok(())
    }
}
