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
//! decrypting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use uuid::Uuid;

use super::error::{StoreError, lock_poisoned};
use super::write::{Change, NewVersion};
use super::{Key, KeyStore, RotationType};
use crate::hsm::objects::MasterKeyVersion;

/// What this gateway may still encrypt under one key's primary version.
#[derive(Default)]
pub struct Budget {
    version: AtomicU32,
    remaining: AtomicU64,
    /// One refill at a time per key.
    refill: tokio::sync::Mutex<()>,
}

impl Budget {
    fn try_take(&self, version: u32) -> bool {
        self.version.load(Ordering::Acquire) == version
            && self
                .remaining
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1))
                .is_ok()
    }

    fn set(&self, version: u32, remaining: u64) {
        self.remaining.store(0, Ordering::Release);
        self.version.store(version, Ordering::Release);
        self.remaining.store(remaining, Ordering::Release);
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
        }
        Err(StoreError::UsageNotReserved)
    }

    /// Reserves a block of encryptions under the primary version, on the
    /// token; rotates the key if the version has reached the bound.
    async fn reserve(&self, id: &Uuid) -> Result<(Arc<Key>, u32, u64), StoreError> {
        let bound = self.policy.gcm_usage_bound;
        let block = self.policy.gcm_reserve_block.clamp(1, bound.max(1));
        let mut granted = 0;
        let mut rotated = false;
        let key = self
            .modify(id, |r| {
                let primary = r.primary_version;
                let Some(v) = r.version_mut(primary) else {
                    return Err(StoreError::Internal("primary version has no record".into()));
                };
                let left = bound.saturating_sub(v.encryptions_reserved);
                rotated = left == 0;
                if rotated {
                    granted = block;
                    return Ok(Change::Rotate(NewVersion {
                        rotation: RotationType::Automatic,
                        reserved: block,
                    }));
                }
                granted = left.min(block);
                v.encryptions_reserved += granted;
                Ok(Change::Edit)
            })
            .await?;
        if rotated {
            crate::telemetry::rotation("gcm_bound");
            self.key_rotated(*id, super::events::RotationReason::GcmUsageBound)
                .await;
        }
        let version = key.record.primary_version;
        Ok((key, version, granted))
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
}
