//! Keeping the cache right when other gateways share the token.
//!
//! Listing a token's objects costs time in proportion to how many there are
//! (on SoftHSM2 with 10,000 keys, listing once a second halved throughput),
//! so gateways tell each other that something changed: after every write a
//! gateway sets the label of the change marker (a data object with
//! `CKA_APPLICATION` `kmsgate/changes`) to a new random value. Every sync
//! interval each gateway reads the marker's label, one attribute of one
//! object. Only when it moved does the gateway do a full sync: it lists the
//! handles of kmsgate's data objects (one C_FindObjects, no values read). A
//! record is never modified in place, so any change shows up as a handle
//! this gateway has not seen, and a removal as a cached handle that is gone;
//! only those records are read again. A change made through one gateway is
//! therefore seen by the others within one sync interval plus one round.
//!
//! The marker is read before the full sync that it triggers, so a change
//! made during that sync moves it again and is picked up next round. The
//! labels read and the handles listed are kept only when the round read
//! every record that changed: a round that fails part-way (a token fault)
//! leaves the next round to find the marker moved and do it all again, so
//! one failure costs one sync interval, not the wait for a full sync. A full
//! sync also runs every [`FULL_SYNC_EVERY`] rounds regardless, which heals
//! the rare case of two gateways creating a marker each at the same moment.
//!
//! A change whose marker move failed (a token fault, a queue timeout under
//! load, a marker handle from before a re-initialisation) leaves the move
//! owed: the gateway's next timed rounds move the marker until one
//! succeeds, so the others see the change one interval after the fault
//! ends, never only at the next full sync. The workers of a supervisor are
//! told at once that such a change needs a relist ([`super::peers`]).

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use crate::hsm::TokenSession;

use super::error::{StoreError, lock_poisoned, token};
use super::record::{AliasRecord, Parsed, RecordKind, record_kind};
use super::{KeyRecord, KeyStore, parse_record, prove_listing};
use crate::hsm::objects::{self, DataHandle};

/// Rounds between full syncs when the marker has not moved.
pub const FULL_SYNC_EVERY: u32 = 60;

/// The change markers this gateway knows, and their labels as last read.
pub struct Markers {
    handles: Vec<DataHandle>,
    labels: Vec<Option<String>>,
    rounds: u32,
    /// A change of this gateway's is on the token but the marker could not
    /// be moved after it: the next sync round moves it.
    unannounced: bool,
}

fn new_mark() -> String {
    format!("kmsgate/changes/{}", uuid::Uuid::new_v4().simple())
}

impl Markers {
    /// Finds the token's change markers, creating one if there is none.
    pub fn find_or_create(s: &TokenSession) -> Result<Markers, crate::hsm::HsmError> {
        let mut handles = objects::find_markers(s)?;
        if handles.is_empty() {
            handles.push(objects::create_marker(s, &new_mark())?);
        }
        let labels = read_labels(s, &handles)?;
        Ok(Markers {
            handles,
            labels,
            rounds: 0,
            unannounced: false,
        })
    }

    /// Finds the token's change markers, which are always there once the
    /// store has loaded: none found is a listing that cannot prove itself
    /// (the token's storage unreadable), never a reason to make one, which
    /// would let a listing that lost every record pass for a healthy one.
    fn find(s: &TokenSession) -> Result<Markers, crate::hsm::HsmError> {
        let handles = objects::find_markers(s)?;
        if handles.is_empty() {
            return Err(crate::hsm::HsmError::IncompleteListing);
        }
        let labels = read_labels(s, &handles)?;
        Ok(Markers {
            handles,
            labels,
            rounds: 0,
            unannounced: false,
        })
    }

    /// Takes the markers and labels a full sync found, keeping whether a
    /// move is still owed.
    fn replace(&mut self, found: Markers) {
        let unannounced = self.unannounced;
        *self = Markers {
            unannounced,
            ..found
        };
    }
}

fn read_labels(
    s: &TokenSession,
    handles: &[DataHandle],
) -> Result<Vec<Option<String>>, crate::hsm::HsmError> {
    // A marker handle from before a re-initialisation reads as gone, which
    // makes the round look the markers up again.
    handles
        .iter()
        .map(|h| match objects::read_label(s, *h) {
            Err(e) if e.handle_is_stale() => Ok(None),
            other => other,
        })
        .collect()
}

/// What one sync round found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub keys_reloaded: usize,
    pub aliases_reloaded: usize,
}

impl SyncReport {
    /// Keys and aliases reloaded.
    pub fn reloads(&self) -> usize {
        self.keys_reloaded + self.aliases_reloaded
    }
}

impl KeyStore {
    /// Tells the other gateways that this one changed something on the
    /// token, by moving the change marker. If the marker cannot be moved
    /// (a token fault, a queue timeout, a handle from before a
    /// re-initialisation), the move is owed: every timed sync round tries
    /// again until it succeeds, so the change is still seen elsewhere within
    /// the staleness bound plus the fault. The other workers of a supervisor
    /// are told at once either way; when the marker did not move they are
    /// told to relist the token instead of trusting it ([`super::peers`]).
    pub(super) async fn announce(&self) {
        if let Ok(mut absent) = self.absent.lock() {
            absent.clear();
        }
        let moved = self.move_marker().await;
        if let Some(peers) = &self.peers {
            peers.bump(!moved);
        }
    }

    /// Moves the change marker; false (and the move left owed) if it could
    /// not. The owed flag is taken before the move starts, so a move that
    /// succeeds comes after every change whose failed move set it.
    async fn move_marker(&self) -> bool {
        let handles = match self.markers.lock() {
            Ok(mut m) => {
                m.unannounced = false;
                m.handles.clone()
            }
            Err(_) => return false,
        };
        let result = self
            .hsm
            .pool()
            .run(move |s| {
                for h in handles {
                    objects::set_label(s, h, &new_mark())?;
                }
                Ok(())
            })
            .await;
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not move the change marker");
                if let Ok(mut m) = self.markers.lock() {
                    m.unannounced = true;
                }
                false
            }
        }
    }

    /// Moves the change marker if a change's move failed before: every
    /// timed sync round, and once more when the gateway stops.
    pub async fn move_owed_marker(&self) {
        let owed = self.markers.lock().is_ok_and(|m| m.unannounced);
        if owed && self.move_marker().await {
            tracing::info!("change marker moved after an earlier failure");
        }
    }

    /// Before a request is answered: if another worker of this supervisor
    /// changed something since this one last caught up, runs a sync round
    /// first, so that what a client just changed through one worker holds
    /// on the next request whichever worker takes it ([`super::peers`]).
    /// A worker bumps its counter only after it moved the marker, so a
    /// round that starts after the bump was read and finds the marker where
    /// the last full sync left it has seen the change already; if the
    /// other worker could not move the marker, it says so and the round
    /// relists the token rather than trust the marker. A failed round is
    /// logged and the request goes on; the next request tries again, and
    /// so do the timed rounds.
    pub async fn catch_up(&self) {
        let Some(peers) = &self.peers else {
            return;
        };
        if peers.moved().is_none() {
            return;
        }
        let _one = peers.catching_up.lock().await;
        // Another request may have caught up while this one waited.
        let Some(now) = peers.moved() else {
            return;
        };
        match self.sync_round(now.relist).await {
            Ok(report) => {
                crate::telemetry::sync_round(true, report.reloads());
                peers.caught_up(now);
            }
            Err(e) => {
                crate::telemetry::sync_round(false, 0);
                tracing::warn!(error = %e, "catching up with another worker's change failed");
            }
        }
    }

    /// One sync round (see the module docs). Its outcome is the store's
    /// readiness: a failed round (the token faulted, or its listing came
    /// back without the change marker) makes [`is_ready`](Self::is_ready)
    /// false until a round succeeds. A pool health check goes first, so a
    /// fatal fault is noticed, and recovered from, even with no traffic.
    pub async fn sync_once(&self) -> Result<SyncReport, StoreError> {
        let result = match self.hsm.pool().health_check().await {
            Ok(()) => self.sync_round(false).await,
            Err(e) => Err(token(e)),
        };
        // After the round, which looks the markers up again when a handle
        // went stale.
        self.move_owed_marker().await;
        let ok = result.is_ok();
        crate::telemetry::sync_round(ok, result.as_ref().map_or(0, SyncReport::reloads));
        if self.synced.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!("token usable again");
            } else {
                tracing::warn!("token not usable: not ready");
            }
        }
        result
    }

    /// Whether the token answered the last sync round (for `/readyz`).
    pub fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed) && self.hsm.is_healthy()
    }

    /// A sync round; `relist`: a full sync even if the marker has not
    /// moved.
    async fn sync_round(&self, relist: bool) -> Result<SyncReport, StoreError> {
        let _one = self.rounds.lock().await;
        let (handles, last, due) = {
            let mut m = self.markers.lock().map_err(lock_poisoned)?;
            m.rounds += 1;
            (
                m.handles.clone(),
                m.labels.clone(),
                relist || m.rounds >= FULL_SYNC_EVERY,
            )
        };
        let labels = self
            .hsm
            .pool()
            .run(move |s| read_labels(s, &handles))
            .await
            .map_err(token)?;
        let moved = labels != last || labels.iter().any(Option::is_none);
        if !moved && !due {
            return Ok(SyncReport::default());
        }
        // Full sync. Markers are looked up again too (one may have been
        // created by another gateway at the same moment as ours). They are
        // kept only once the round has read what changed: a round that
        // fails half-way leaves the old labels, so the next round sees the
        // marker moved and tries again, instead of the change waiting for
        // the next due full sync. None found is a fault, never a reason
        // to make one ([`Markers::find`]): the store loaded with one.
        let markers = self
            .hsm
            .pool()
            .run(Markers::find)
            .await
            .map_err(|e| self.listing_failed(e))?;
        self.absent.lock().map_err(lock_poisoned)?.clear();
        let report = self.full_sync().await?;
        self.markers.lock().map_err(lock_poisoned)?.replace(markers);
        Ok(report)
    }

    /// The error of a sync listing that failed with `e`. One that could
    /// not prove itself (the change markers, always on the token, not
    /// found) also asks for the module to read its storage afresh (at most
    /// once per 5 s, `Pool::request_reread`): SoftHSM2 drops the objects
    /// it failed to read while its directory was out of reach and sees
    /// them again only once initialised anew.
    fn listing_failed(&self, e: crate::hsm::HsmError) -> StoreError {
        if matches!(e, crate::hsm::HsmError::IncompleteListing) {
            self.hsm.pool().request_reread();
        }
        token(e)
    }

    /// Re-reads every record whose object is new or gone since the last
    /// full sync. The handles listed count as seen only when every record
    /// that changed was read, so a failed round leaves them new for the
    /// next one.
    async fn full_sync(&self) -> Result<SyncReport, StoreError> {
        let current: HashSet<DataHandle> = self
            .hsm
            .pool()
            .run(|s| {
                // A handle missing from this listing means a record gone
                // only if the listing is proven healthy.
                let handles = objects::data_handles(s)?;
                prove_listing(s)?;
                Ok(handles)
            })
            .await
            .map_err(|e| self.listing_failed(e))?
            .into_iter()
            .collect();
        let new: Vec<DataHandle> = {
            let seen = self.seen.lock().map_err(lock_poisoned)?;
            current.difference(&seen).copied().collect()
        };
        let objs = if new.is_empty() {
            Vec::new()
        } else {
            self.hsm
                .pool()
                .run(move |s| objects::read_data_objects(s, &new))
                .await
                .map_err(token)?
        };

        let mut keys = HashSet::new();
        let mut aliases = HashSet::new();
        {
            let cache = self.cache.read().map_err(lock_poisoned)?;
            // By the label, and the revision of the record's header: a
            // foreign record is reloaded (and so kept) like any other.
            for o in &objs {
                match record_kind(&o.label) {
                    RecordKind::Key(id) => {
                        let Some(revision) = parse_record::<KeyRecord>(o).revision() else {
                            continue;
                        };
                        let cached = cache.keys.get(&id).map(|k| k.record.revision);
                        let foreign = cache.foreign_keys.get(&id).map(|f| f.record.revision);
                        if cached.or(foreign).is_none_or(|r| r < revision) {
                            keys.insert(id);
                        }
                    }
                    RecordKind::Alias(name) => {
                        let parsed = parse_record::<AliasRecord>(o);
                        let Some(revision) = parsed.revision() else {
                            continue;
                        };
                        let target = match &parsed {
                            Parsed::Understood(r) => Some(r.target),
                            _ => None,
                        };
                        let stale =
                            match (cache.aliases.get(&name), cache.foreign_aliases.get(&name)) {
                                (Some(a), _) => {
                                    a.record.revision < revision || Some(a.record.target) != target
                                }
                                (None, Some(f)) => f.record.revision < revision,
                                (None, None) => true,
                            };
                        if stale {
                            aliases.insert(name);
                        }
                    }
                    RecordKind::Other => {}
                }
            }
            // Removed (or replaced) elsewhere: the cached handle is gone.
            for (id, k) in &cache.keys {
                if !current.contains(&k.meta) {
                    keys.insert(*id);
                }
            }
            for (id, f) in &cache.foreign_keys {
                if !current.contains(&f.handle) {
                    keys.insert(*id);
                }
            }
            for (name, a) in &cache.aliases {
                if !current.contains(&a.handle) {
                    aliases.insert(name.clone());
                }
            }
            for (name, f) in &cache.foreign_aliases {
                if !current.contains(&f.handle) {
                    aliases.insert(name.clone());
                }
            }
        }
        let report = SyncReport {
            keys_reloaded: keys.len(),
            aliases_reloaded: aliases.len(),
        };
        // A foreign record is kept as such by its reload (and logged).
        for id in keys {
            match self.reload_key(&id).await {
                Ok(_) | Err(StoreError::Foreign { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for name in aliases {
            match self.reload_alias(&name).await {
                Ok(_) | Err(StoreError::Foreign { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        *self.seen.lock().map_err(lock_poisoned)? = current;
        if report != SyncReport::default() {
            tracing::debug!(?report, "cache synced with the token");
        }
        Ok(report)
    }
}
