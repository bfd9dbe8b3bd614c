//! Keeping the cache right when other gateways share the token.
//!
//! Every sync interval this gateway lists the handles of kmsgate's data
//! objects on the token (one C_FindObjects, no values read). A record is
//! never modified in place, so any change made elsewhere shows up as a
//! handle this gateway has not seen, and a removal as a cached handle that
//! is gone. Only those records are read again. A change made through one
//! gateway is therefore seen by the others within one sync interval plus
//! the time of one sync round.

use std::collections::HashSet;

use super::record::AliasRecord;
use super::{KeyRecord, KeyStore, LABEL_PREFIX, hsm_to_kms, lock_poisoned, parse_record};
use crate::error::KmsError;
use crate::hsm::objects::{self, DataHandle};

/// What one sync round found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub keys_reloaded: usize,
    pub aliases_reloaded: usize,
}

impl KeyStore {
    /// One sync round (see the module docs).
    pub async fn sync_once(&self) -> Result<SyncReport, KmsError> {
        let current: HashSet<DataHandle> = self
            .hsm
            .pool()
            .run(objects::data_handles)
            .await
            .map_err(hsm_to_kms)?
            .into_iter()
            .collect();
        let new: Vec<DataHandle> = {
            let mut seen = self.seen.lock().map_err(|_| lock_poisoned())?;
            let new = current.difference(&seen).copied().collect();
            *seen = current.clone();
            new
        };
        let objs = if new.is_empty() {
            Vec::new()
        } else {
            self.hsm
                .pool()
                .run(move |s| objects::read_data_objects(s, &new))
                .await
                .map_err(hsm_to_kms)?
        };

        let mut keys = HashSet::new();
        let mut aliases = HashSet::new();
        {
            let cache = self.cache.read().map_err(|_| lock_poisoned())?;
            for o in &objs {
                let Some(rest) = o.label.strip_prefix(LABEL_PREFIX) else {
                    continue;
                };
                if rest.starts_with("key/") {
                    if let Some(r) = parse_record::<KeyRecord>(o) {
                        let stale = cache
                            .keys
                            .get(&r.key_id)
                            .is_none_or(|k| k.record.revision < r.revision);
                        if stale {
                            keys.insert(r.key_id);
                        }
                    }
                } else if rest.starts_with("alias/")
                    && let Some(r) = parse_record::<AliasRecord>(o)
                {
                    let stale = cache.aliases.get(&r.name).is_none_or(|a| {
                        a.record.revision < r.revision || a.record.target != r.target
                    });
                    if stale {
                        aliases.insert(r.name);
                    }
                }
            }
            // Removed (or replaced) elsewhere: the cached handle is gone.
            for (id, k) in &cache.keys {
                if !current.contains(&k.meta) {
                    keys.insert(*id);
                }
            }
            for (name, a) in &cache.aliases {
                if !current.contains(&a.handle) {
                    aliases.insert(name.clone());
                }
            }
        }
        let report = SyncReport {
            keys_reloaded: keys.len(),
            aliases_reloaded: aliases.len(),
        };
        for id in keys {
            self.reload_key(&id).await?;
        }
        for name in aliases {
            self.reload_alias(&name).await?;
        }
        if report != SyncReport::default() {
            tracing::debug!(?report, "cache synced with the token");
        }
        Ok(report)
    }
}
