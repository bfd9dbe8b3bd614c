//! Destroying a key for good, at the end of its deletion waiting period:
//! its aliases, its versions' token objects (both halves of a pair, and an
//! import's wrapping pair) and its record, each removal confirmed.
//!
//! Deciding to destroy is a change of the key's record under the commit
//! protocol ([`super::write`]), never a check followed by an act: the
//! revision that marks the key as being destroyed ([`KeyRecord::destroying`])
//! commits only if the latest record is still due, and a rival revision
//! makes it lose (DESIGN.md decision 21). So a CancelKeyDeletion through
//! any gateway either commits first, and the destroyer then finds the key
//! no longer due and keeps it, or finds the mark and is refused. Only then
//! are the objects destroyed, the record's last. A key left marked by a
//! crash stays PendingDeletion (never usable) until the next scheduler
//! round of any gateway finishes it.

use uuid::Uuid;

use super::error::{StoreError, lock_poisoned, token};
use super::record::{Parsed, RecordKind, foreign, key_label, parse, record_kind, version_label};
use super::write::Change;
use super::{AliasRecord, KeyRecord, KeyState, KeyStore};
use crate::hsm::objects;

impl KeyStore {
    pub(super) fn forget_key(&self, id: &Uuid) -> Result<(), StoreError> {
        self.cache.write().map_err(lock_poisoned)?.keys.remove(id);
        Ok(())
    }

    /// Destroys a key for good: its aliases, every version's token object
    /// and its record. Its ciphertexts can never be decrypted again.
    /// `still_due` decides, on the latest record, whether the key is to be
    /// destroyed; a key already marked as being destroyed is finished
    /// whatever it says. Answers whether the key was destroyed.
    pub(super) async fn destroy_key<F>(&self, id: &Uuid, still_due: F) -> Result<bool, StoreError>
    where
        F: Fn(&KeyRecord) -> bool,
    {
        let Some(record) = self.mark_destroying(id, still_due).await? else {
            return Ok(false);
        };
        let _guard = self.writes.lock().await;
        let key_id = *id;
        let confirm = self.hsm.confirmer();
        let kept = self
            .hsm
            .pool()
            .run(move |s| {
                // Aliases first: an alias must never name a missing key.
                // A record this build does not understand, of the key or
                // of an alias that may name it (its text holds the key
                // id), is not this build's to remove: then nothing is
                // destroyed, and the key (marked, never usable again)
                // waits for a gateway that understands it.
                let label = key_label(&key_id);
                let mut ours = Vec::new();
                for o in objects::read_data(s, None)? {
                    let mine = match record_kind(&o.label) {
                        RecordKind::Key(id) => id == key_id,
                        RecordKind::Alias(_) => names(&o.value, &key_id),
                        RecordKind::Other => false,
                    };
                    if !mine {
                        continue;
                    }
                    if let Some(f) = foreign(&o.label, &o.value) {
                        return Ok(Some((o.label, f)));
                    }
                    if let Parsed::Understood(a) = parse::<AliasRecord>(&o.value)
                        && a.target == key_id
                    {
                        ours.push(o.handle);
                    }
                }
                for h in ours {
                    let _ = objects::destroy_data(s, h);
                }
                for v in &record.versions {
                    let l = version_label(&key_id, v.version, &v.nonce);
                    while let Some(h) = objects::find_master_key(s, &l)? {
                        objects::destroy_master_key(s, h)?;
                    }
                }
                if let Some(l) = super::import::wrapping_label(&record) {
                    crate::hsm::import::destroy_wrapping_pair(s, &l)?;
                }
                for o in objects::read_data(s, Some(&label))? {
                    let _ = objects::destroy_data(s, o.handle);
                }
                confirm.data_gone(s, &label).map(|()| None)
            })
            .await
            .map_err(token)?;
        if let Some((label, f)) = kept {
            return Err(self.foreign_met(&label, &f));
        }
        {
            let mut cache = self.cache.write().map_err(lock_poisoned)?;
            cache.keys.remove(id);
            cache.aliases.retain(|_, a| a.record.target != *id);
        }
        if let Ok(mut b) = self.budgets.write() {
            b.remove(id);
        }
        self.announce().await;
        tracing::info!(key_id = %id, "key deleted: its versions are destroyed on the token");
        Ok(true)
    }

    /// Commits the decision to destroy key `id`: a revision marking it as
    /// being destroyed, if `still_due` holds on the latest record. Returns
    /// the marked record, or `None` if the key is not to be destroyed (a
    /// cancel committed first) or is already gone.
    async fn mark_destroying<F>(
        &self,
        id: &Uuid,
        still_due: F,
    ) -> Result<Option<KeyRecord>, StoreError>
    where
        F: Fn(&KeyRecord) -> bool,
    {
        let marked = self
            .modify::<_, StoreError>(id, |r| {
                if !r.destroying && still_due(r) {
                    r.destroying = true;
                }
                Ok(Change::Edit)
            })
            .await;
        match marked {
            Ok(key) if key.record.destroying && key.record.state == KeyState::PendingDeletion => {
                Ok(Some(key.record.clone()))
            }
            Ok(_) => Ok(None),
            // A healthy listing found no record: destroyed already.
            Err(StoreError::KeyNotFound { .. }) => {
                self.forget_key(id)?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether a record's text holds key `id` (hyphenated or simple): a record
/// this build cannot read may name the key only then.
fn names(value: &[u8], id: &Uuid) -> bool {
    let text = String::from_utf8_lossy(value);
    text.contains(&id.hyphenated().to_string()) || text.contains(&id.simple().to_string())
}
