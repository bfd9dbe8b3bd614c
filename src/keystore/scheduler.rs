//! Dated work: automatic rotations that are due, and deletions whose
//! waiting period has ended.
//!
//! Every gateway runs the scheduler; the work is still done once. A due
//! rotation is a change under the commit protocol of [`super::write`] that
//! re-checks, on the latest record, that the rotation is still due: of two
//! gateways racing, one commits and the other then finds nothing due. A
//! deletion re-checks the latest record too, and destroying what is
//! already destroyed is harmless.

use uuid::Uuid;

use super::write::{Change, NewVersion};
use super::{KeyRecord, KeyState, KeyStore, RotationType};
use crate::error::KmsError;

/// What one scheduler round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DueReport {
    pub rotated: Vec<Uuid>,
    pub deleted: Vec<Uuid>,
}

fn deletion_due(r: &KeyRecord, now: f64) -> bool {
    r.state == KeyState::PendingDeletion && r.deletion_date.is_some_and(|d| d <= now)
}

fn rotation_due(r: &KeyRecord, now: f64) -> bool {
    r.state == KeyState::Enabled && r.rotation.as_ref().is_some_and(|s| s.next_rotation <= now)
}

impl KeyStore {
    /// Does the work that is due now.
    pub async fn run_due(&self) -> Result<DueReport, KmsError> {
        let mut report = DueReport::default();
        for key in self.all_keys()? {
            let now = self.now();
            let id = *key.id();
            if deletion_due(&key.record, now) {
                if self
                    .destroy_key(&id, |r| deletion_due(r, self.now()))
                    .await?
                {
                    report.deleted.push(id);
                }
            } else if rotation_due(&key.record, now) {
                let mut rotated = false;
                self.modify(&id, |r| {
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
                if rotated {
                    report.rotated.push(id);
                }
            }
        }
        Ok(report)
    }
}
