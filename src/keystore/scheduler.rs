//! Dated work: automatic rotations that are due, and deletions whose
//! waiting period has ended.
//!
//! Every gateway runs the scheduler; the work is still done once. A due
//! rotation is a change under the commit protocol of [`super::write`] that
//! re-checks, on the latest record, that the rotation is still due: of two
//! gateways racing, one commits and the other then finds nothing due. A
//! deletion is decided the same way: a revision that marks the key as
//! being destroyed, committed only if the latest record is still due, so
//! a CancelKeyDeletion through another gateway either commits first (and
//! the key is kept) or is refused ([`super::destroy`]).
//!
//! Keys are isolated from each other: a key whose rotation or deletion fails
//! is logged and retried later with exponential backoff, and the round goes
//! on with the other keys.

use uuid::Uuid;

use super::events::RotationReason;
use super::write::{Change, NewVersion};
use super::{KeyRecord, KeyState, KeyStore, RotationType, StoreError};
use crate::telemetry;

/// What one scheduler round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DueReport {
    pub rotated: Vec<Uuid>,
    pub deleted: Vec<Uuid>,
    /// Keys whose due work failed this round (retried after a backoff).
    pub failed: Vec<Uuid>,
}

/// When a key whose due work failed may be tried again.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retry {
    failures: u32,
    not_before: std::time::Instant,
}

/// The backoff after `failures` failures in a row: 1 s doubling to 10 min.
fn backoff(failures: u32) -> std::time::Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(10);
    std::time::Duration::from_secs(secs.min(600))
}

/// Due, or begun by a gateway that did not finish (a crash): either way
/// [`KeyStore::destroy_key`] carries it out.
fn deletion_due(r: &KeyRecord, now: f64) -> bool {
    r.deletion_under_way(now)
}

fn rotation_due(r: &KeyRecord, now: f64) -> bool {
    // Only symmetric encryption keys rotate (EnableKeyRotation refuses
    // others; this holds even for a record edited by hand).
    r.state == KeyState::Enabled
        && r.key_spec == super::KeySpec::SymmetricDefault
        && r.rotation.as_ref().is_some_and(|s| s.next_rotation <= now)
}

impl KeyStore {
    /// Does the work that is due now, key by key: one key's failure is
    /// logged and retried later, and never stops the others.
    pub async fn run_due(&self) -> Result<DueReport, StoreError> {
        let mut report = DueReport::default();
        for key in self.all_keys()? {
            let now = self.now();
            let id = *key.id();
            let deletion = deletion_due(&key.record, now);
            if !deletion && super::import::import_due(&key.record, now) && !self.deferred(&id) {
                match self.expire_import(&id).await {
                    Ok(_) => self.clear_retry(&id),
                    Err(e) => {
                        let wait = self.defer(&id);
                        tracing::warn!(key_id = %id, work = "import expiry", error = %e,
                            retry_in_secs = wait.as_secs(), "scheduled work failed for this key; the others go on");
                        report.failed.push(id);
                    }
                }
                continue;
            }
            if !(deletion || rotation_due(&key.record, now)) || self.deferred(&id) {
                continue;
            }
            let outcome = if deletion {
                self.destroy_key(&id, |r| deletion_due(r, self.now())).await
            } else {
                self.rotate_if_due(&id).await
            };
            match outcome {
                Ok(done) => {
                    self.clear_retry(&id);
                    if done && deletion {
                        telemetry::deletion();
                        self.key_deleted(id).await;
                        report.deleted.push(id);
                    } else if done {
                        telemetry::rotation("scheduled");
                        self.key_rotated(id, RotationReason::Scheduled).await;
                        report.rotated.push(id);
                    }
                }
                Err(e) => {
                    let wait = self.defer(&id);
                    tracing::warn!(
                        key_id = %id,
                        work = if deletion { "deletion" } else { "rotation" },
                        error = %e,
                        retry_in_secs = wait.as_secs(),
                        "scheduled work failed for this key; the others go on"
                    );
                    report.failed.push(id);
                }
            }
        }
        Ok(report)
    }

    async fn rotate_if_due(&self, id: &Uuid) -> Result<bool, StoreError> {
        let mut rotated = false;
        self.modify::<_, StoreError>(id, |r| {
            let now = self.now();
            rotated = rotation_due(r, now);
            if !rotated {
                return Ok(Change::Edit);
            }
            if let Some(s) = r.rotation.as_mut() {
                s.next_rotation = now + f64::from(s.period_days) * 86_400.0;
            }
            Ok(Change::Rotate(NewVersion {
                rotation: RotationType::Automatic,
                reserved: 0,
            }))
        })
        .await?;
        Ok(rotated)
    }

    fn deferred(&self, id: &Uuid) -> bool {
        self.retries
            .lock()
            .map(|r| {
                r.get(id)
                    .is_some_and(|r| std::time::Instant::now() < r.not_before)
            })
            .unwrap_or(false)
    }

    /// Records one more failure for `id`; returns the wait before the next try.
    fn defer(&self, id: &Uuid) -> std::time::Duration {
        let Ok(mut retries) = self.retries.lock() else {
            return backoff(1);
        };
        let failures = retries.get(id).map_or(0, |r| r.failures) + 1;
        let wait = backoff(failures);
        retries.insert(
            *id,
            Retry {
                failures,
                not_before: std::time::Instant::now() + wait,
            },
        );
        wait
    }

    fn clear_retry(&self, id: &Uuid) {
        if let Ok(mut r) = self.retries.lock() {
            r.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(40), Duration::from_secs(600));
    }
}
