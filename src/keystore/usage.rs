//! The GCM usage bound (DESIGN.md decision 5).
//!
//! AES-GCM with random 96-bit IVs is safe for a bounded number of
//! encryptions under one key: after n of them the chance that two share an
//! IV is about n²/2^97. NIST SP 800-38D caps random-IV use at 2^32; the
//! default bound here is 2^30, where the chance is about 2^-37.
//!
//! Every key version's record counts the encryptions reserved under it by
//! all gateways together. A gateway reserves a block at a time (2^20 by
//! default), writes the reservation to the token, and only then spends it,
//! from an in-memory budget that costs one atomic operation per request. A
//! crash loses the unspent rest of a block, so the persisted count is never
//! below the true one. When a reservation would pass the bound, the key
//! rotates instead: a new primary version takes over, and the old one keeps
//! decrypting. A key with imported material (origin EXTERNAL) does not:
//! its material is only ever what its owner imported, so at the bound it
//! refuses to encrypt ([`StoreError::UsageLimit`]) and keeps decrypting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

use super::error::{StoreError, lock_poisoned};
use super::write::{Change, NewVersion};
use super::{Key, KeyStore, RotationType};
use crate::hsm::objects::MasterKeyVersion;

/// What this gateway may still encrypt under one key's primary version.
///
/// The version and the count left under it are one atomic word (version in
/// the high 32 bits, count in the low 32), so a take reads and spends both
/// at once: a `set` for a new version can never let a take meant for the
/// old version spend the new one's count, nor the other way round. A count
/// fits in 32 bits because a grant is at most one block, and blocks are
/// clamped to the bound, which is at most 2^32 (the config refuses more).
#[derive(Default)]
pub struct Budget {
    packed: AtomicU64,
    /// One refill at a time per key.
    refill: tokio::sync::Mutex<()>,
}

/// `version` and `remaining` as one word. A grant of exactly 2^32 (a block
/// as large as the largest bound) keeps 2^32 - 1: one encryption less is
/// spent than was reserved, which is the safe side.
fn pack(version: u32, remaining: u64) -> u64 {
    let remaining = remaining.min(u64::from(u32::MAX));
    (u64::from(version) << 32) | remaining
}

/// The version of a packed word, and the count left under it.
fn unpack(packed: u64) -> (u32, u64) {
    ((packed >> 32) as u32, packed & u64::from(u32::MAX))
}

impl Budget {
    fn try_take(&self, version: u32) -> bool {
        self.packed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                let (v, remaining) = unpack(p);
                (v == version && remaining > 0).then(|| pack(v, remaining - 1))
            })
            .is_ok()
    }

    fn set(&self, version: u32, remaining: u64) {
        self.packed
            .store(pack(version, remaining), Ordering::Release);
    }
}

impl KeyStore {
    fn budget(&self, id: &Uuid) -> Result<Arc<Budget>, StoreError> {
        if let Some(b) = self.budgets.read().map_err(lock_poisoned)?.get(id) {
            return Ok(b.clone());
        }
        Ok(self
            .budgets
            .write()
            .map_err(lock_poisoned)?
            .entry(*id)
            .or_default()
            .clone())
    }

    /// Takes one encryption from the key's primary version, reserving a new
    /// block (or rotating the key) when the budget is spent. Returns the key
    /// as it now is, the version to encrypt under, and its handle.
    pub(super) async fn take_encryption(
        &self,
        key: &Arc<Key>,
    ) -> Result<(Arc<Key>, u32, MasterKeyVersion), StoreError> {
        if key.record.key_usage != super::KeyUsage::EncryptDecrypt
            || key.record.key_spec != super::KeySpec::SymmetricDefault
        {
            return Err(StoreError::Internal(format!(
                "key {} is not a symmetric encryption key",
                key.id()
            )));
        }
        let id = *key.id();
        let budget = self.budget(&id)?;
        let mut key = key.clone();
        for _ in 0..4 {
            let version = key.record.primary_version;
            if budget.try_take(version) {
                let (key, handle) = self.version_handle(&key, version).await?;
                return Ok((key, version, handle));
            }
            let _refill = budget.refill.lock().await;
            // Another request may have refilled while this one waited.
            key = self.cached_key(&id)?.unwrap_or(key);
            let version = key.record.primary_version;
            if budget.try_take(version) {
                let (key, handle) = self.version_handle(&key, version).await?;
                return Ok((key, version, handle));
            }
            let (fresh, version, granted) = self.reserve(&id).await?;
            budget.set(version, granted);
            key = fresh;
            // The version reserved under, even if another process has made
            // a newer one primary since.
            if budget.try_take(version) {
                let (key, handle) = self.version_handle(&key, version).await?;
                return Ok((key, version, handle));
            }
        }
        Err(StoreError::UsageNotReserved)
    }

    /// Reserves a block of encryptions under the primary version, on the
    /// token; rotates the key if the version has reached the bound, unless
    /// its material was imported: such a key refuses instead.
    async fn reserve(&self, id: &Uuid) -> Result<(Arc<Key>, u32, u64), StoreError> {
        let bound = self.policy.gcm_usage_bound;
        let block = self.policy.gcm_reserve_block.clamp(1, bound.max(1));
        let mut granted = 0;
        let mut under = 0;
        let mut rotated = false;
        let key = self
            .modify(id, |r| {
                let primary = r.primary_version;
                let imported = !r.origin.is_aws_kms();
                let Some(v) = r.version_mut(primary) else {
                    return Err(StoreError::Internal("primary version has no record".into()));
                };
                let left = bound.saturating_sub(v.encryptions_reserved);
                // A BYOK key's material is only what its owner imported
                // (DESIGN.md decision 23): it stops here. A primary version
                // the token made for it (rotated at the bound before
                // kmsgate refused so) means the imported one reached the
                // bound: it stops too.
                if imported && (left == 0 || v.rotation.is_some()) {
                    return Err(StoreError::UsageLimit {
                        arn: self.realm.key_arn(id),
                    });
                }
                rotated = left == 0;
                if rotated {
                    granted = block;
                    under = r.next_version();
                    return Ok(Change::Rotate(NewVersion {
                        rotation: RotationType::Automatic,
                        reserved: block,
                    }));
                }
                granted = left.min(block);
                under = primary;
                v.encryptions_reserved += granted;
                Ok(Change::Edit)
            })
            .await?;
        if rotated {
            crate::telemetry::rotation("gcm_bound");
            self.key_rotated(*id, super::events::RotationReason::GcmUsageBound)
                .await;
        }
        // The block is granted under the version it was reserved under.
        // The record that committed may be a later revision another
        // process made on top of ours (it carries our reservation), whose
        // primary version may be a newer one: its blocks are not ours.
        Ok((key, under, granted))
    }
}

impl KeyStore {
    /// The GCM encryptions reserved under every symmetric key's primary
    /// version, as this process last saw the records (for the metrics);
    /// and the bound they count against.
    pub fn gcm_usage(&self) -> Result<(u64, Vec<crate::telemetry::GcmUsage>), StoreError> {
        let cache = self.cache.read().map_err(lock_poisoned)?;
        let usage = cache
            .keys
            .values()
            .filter(|k| k.record.key_spec == super::KeySpec::SymmetricDefault)
            .filter_map(|k| {
                let v = k.record.version(k.record.primary_version)?;
                Some(crate::telemetry::GcmUsage {
                    key_id: k.id().to_string(),
                    version: v.version,
                    reserved: v.encryptions_reserved,
                })
            })
            .collect();
        Ok((self.policy.gcm_usage_bound, usage))
    }

    /// Token work waiting for a session now.
    pub fn token_queued(&self) -> usize {
        self.hsm.pool().queued()
    }

    /// Whether the token answers, as far as this process knows.
    pub fn token_healthy(&self) -> bool {
        self.hsm.is_healthy()
    }

    /// The code the token refused the user PIN with, while no login is
    /// tried (for `/readyz`).
    pub fn pin_refused(&self) -> Option<&'static str> {
        self.hsm.pin_refused()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    #[test]
    fn a_budget_spends_exactly_what_was_set_for_its_version() {
        let b = Budget::default();
        assert!(!b.try_take(0), "an empty budget grants nothing");
        b.set(7, 3);
        assert!(!b.try_take(6));
        assert!(!b.try_take(8));
        assert!((0..3).all(|_| b.try_take(7)));
        assert!(!b.try_take(7), "three were set");
        b.set(u32::MAX, 1);
        assert!(!b.try_take(7));
        assert!(b.try_take(u32::MAX));
        assert!(!b.try_take(u32::MAX));
    }

    #[test]
    fn version_and_count_pack_into_one_word() {
        for (v, r) in [(0, 0), (1, 5), (u32::MAX, 0), (7, u64::from(u32::MAX))] {
            assert_eq!(unpack(pack(v, r)), (v, r));
        }
        // A count never spills into the version.
        assert_eq!(unpack(pack(3, 1 << 32)), (3, u64::from(u32::MAX)));
        assert_eq!(unpack(pack(3, u64::MAX)), (3, u64::from(u32::MAX)));
    }

    #[test]
    fn a_grant_past_u32_is_clamped_never_wrapped() {
        let b = Budget::default();
        // The largest block: the bound's maximum, 2^32.
        b.set(1, 1 << 32);
        assert!(b.try_take(1), "2^32 did not wrap to 0");
        b.set(2, (1 << 32) + 5);
        assert!(b.try_take(2));
        assert!(!b.try_take(1));
    }

    /// A take that names a version whose count is spent must fail, even
    /// while another thread sets a fresh count for the next version: the
    /// version and the count are read together. (With the two atomics
    /// this replaced, takes of version 1 passed on version 2's count.)
    #[test]
    fn a_racing_set_never_lets_a_spent_version_take_the_next_ones_count() {
        let b = Arc::new(Budget::default());
        b.set(1, 0);
        let wrong = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let takers: Vec<_> = (0..2)
            .map(|_| {
                let (b, wrong, stop) = (b.clone(), wrong.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        // Version 1 never has anything to spend.
                        if b.try_take(1) {
                            wrong.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) && wrong.load(Ordering::Relaxed) == 0 {
            // Each version holds for a moment, so that a take which read
            // version 1 just before the switch meets version 2's count.
            b.set(2, 1 << 20);
            (0..200).for_each(|_| std::hint::spin_loop());
            b.set(1, 0);
            (0..200).for_each(|_| std::hint::spin_loop());
        }
        stop.store(true, Ordering::Relaxed);
        takers.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(
            wrong.load(Ordering::Relaxed),
            0,
            "takes of version 1 granted from version 2's count"
        );
    }
}
