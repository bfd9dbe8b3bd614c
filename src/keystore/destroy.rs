//! Destroying a key for good, at the end of its deletion waiting period:
//! its aliases, its versions' token objects (both halves of a pair, and an
//! import's wrapping pair) and its record, each removal confirmed.

use uuid::Uuid;

use super::error::{StoreError, lock_poisoned, token};
use super::record::{alias_label, key_label, version_label};
use super::{AliasRecord, KeyRecord, KeyStore, latest, read_records};
use crate::hsm::objects;

impl KeyStore {
    pub(super) fn forget_key(&self, id: &Uuid) -> Result<(), StoreError> {
        self.cache.write().map_err(lock_poisoned)?.keys.remove(id);
        Ok(())
    }

    /// Destroys a key for good: its aliases, every version's token object
    /// and its record. Its ciphertexts can never be decrypted again.
    /// `still_due` is checked on the latest record first, so a deletion
    /// cancelled meanwhile (through any gateway) is not carried out.
    pub(super) async fn destroy_key<F>(&self, id: &Uuid, still_due: F) -> Result<bool, StoreError>
    where
        F: Fn(&KeyRecord) -> bool,
    {
        let _guard = self.writes.lock().await;
        let label = key_label(id);
        let read_label = label.clone();
        let latest_on_token = self
            .hsm
            .pool()
            .run(move |s| Ok(latest::<KeyRecord>(read_records(s, &read_label)?)))
            .await
            .map_err(token)?
            .found(&label)?;
        let Some((_, record)) = latest_on_token else {
            self.forget_key(id)?;
            return Ok(false);
        };
        if !still_due(&record) {
            return Ok(false);
        }
        let key_id = *id;
        let confirm = self.hsm.confirmer();
        self.hsm
            .pool()
            .run(move |s| {
                // Aliases first: an alias must never name a missing key.
                for o in objects::read_data(s, None)? {
                    if o.label.starts_with(&alias_label("alias/"))
                        && serde_json::from_slice::<AliasRecord>(&o.value)
                            .is_ok_and(|a| a.target == key_id)
                    {
                        let _ = objects::destroy_data(s, o.handle);
                    }
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
                let label = key_label(&key_id);
                for o in objects::read_data(s, Some(&label))? {
                    let _ = objects::destroy_data(s, o.handle);
                }
                confirm.data_gone(s, &label)
            })
            .await
            .map_err(token)?;
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
}
