//! The commit protocol of [`super::write`], written once for every record
//! that is replaced, never modified, on the token: keys (with their key
//! policies and grants, which are fields of the key record) and aliases.
//!
//! [`KeyStore::commit_revision`] reads the latest revision from the token,
//! lets the caller's change make the next one, writes it with [`commit`]
//! (confirmed durable, kept only if no rival revision exists) and tries
//! again after [`back_off`] when another gateway's change won, up to
//! [`MAX_ATTEMPTS`] times. What a kind of record needs beside that plugs
//! in: [`Committable`] says how its unreadable latest object is treated and
//! what is logged on a retry, and a [`Companion`] is created on the token in
//! the same write job before the record (a key's new version on rotation)
//! and destroyed again if the commit loses or fails. Publishing the result
//! to the cache is the caller's, under the same writes lock.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{StoreError, token, unreadable};
use super::record::Revisioned;
use super::write::to_json;
use super::{KeyStore, Latest, latest, read_records};
use crate::hsm::objects::{self, DataHandle};
use crate::hsm::readback::Confirmer;
use crate::hsm::{HsmError, TokenSession};

/// How often a change is tried before the client is told to retry.
pub(super) const MAX_ATTEMPTS: u32 = 8;

#[derive(Deserialize)]
struct Revision {
    #[serde(default)]
    revision: u64,
}

/// The revision a record object holds; `None` for one that does not parse
/// (a write cut short), which is no rival to a new revision: committing one
/// replaces it.
fn revision_of(value: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Revision>(value)
        .ok()
        .map(|r| r.revision)
}

/// Steps 2 and 3 for one record, on the token: creates the new revision,
/// confirms it durable, and keeps it only if no rival revision exists.
/// `None` on a conflict.
pub(super) fn commit(
    s: &TokenSession,
    confirm: &Confirmer,
    label: &str,
    value: &[u8],
    revision: u64,
) -> Result<Option<DataHandle>, HsmError> {
    let ours = super::write::new_record_object(s, confirm, label, value)?;
    let all = objects::read_data(s, Some(label))?;
    let rival = all
        .iter()
        .any(|o| o.handle != ours && revision_of(&o.value).is_some_and(|r| r >= revision));
    if rival {
        objects::destroy_data(s, ours)?;
        return Ok(None);
    }
    for o in all.iter().filter(|o| o.handle != ours) {
        // Another gateway may have removed it already.
        let _ = objects::destroy_data(s, o.handle);
    }
    Ok(Some(ours))
}

/// A short random pause before trying again, growing with the attempt.
pub(super) async fn back_off(attempt: u32) {
    let jitter = rand::random_range(0..20u64);
    tokio::time::sleep(Duration::from_millis(5 + jitter + 10 * u64::from(attempt))).await;
}

/// A kind of record the commit loop writes.
pub(super) trait Committable: Revisioned + Serialize + Send + 'static {
    /// The latest object under `label` does not parse. By default that is
    /// an error ([`StoreError::Unreadable`]); a kind that returns `Ok`
    /// writes its next revision as if there were no record, and the commit
    /// (which counts no unreadable object as a rival) removes the damaged
    /// one.
    fn unreadable(label: &str) -> Result<(), StoreError> {
        Err(unreadable(label))
    }

    /// Called when another gateway's change won over `self`, before the
    /// loop tries again.
    fn retrying(&self, _attempt: u32) {}
}

/// What a write job creates on the token beside a record's new revision,
/// before committing it, and destroys again if the commit does not win or
/// fails. `()` for nothing.
pub(super) trait Companion: Clone + Send + Sync + 'static {
    /// What was created.
    type Made: Send + 'static;

    /// Creates it and confirms it durable; leaves nothing behind on error.
    fn create(&self, s: &TokenSession, confirm: &Confirmer) -> Result<Self::Made, HsmError>;

    /// Removes what [`create`](Self::create) made (best effort).
    fn destroy(s: &TokenSession, made: Self::Made);
}

impl Companion for () {
    type Made = ();

    fn create(&self, _: &TokenSession, _: &Confirmer) -> Result<(), HsmError> {
        Ok(())
    }

    fn destroy(_: &TokenSession, (): ()) {}
}

impl<C: Companion> Companion for Option<C> {
    type Made = Option<C::Made>;

    fn create(&self, s: &TokenSession, confirm: &Confirmer) -> Result<Self::Made, HsmError> {
        self.as_ref().map(|c| c.create(s, confirm)).transpose()
    }

    fn destroy(s: &TokenSession, made: Self::Made) {
        if let Some(m) = made {
            C::destroy(s, m);
        }
    }
}

/// What a change makes of the latest record on the token.
pub(super) enum Next<R, C> {
    /// Nothing to write: the latest record stays in force.
    Keep,
    /// Write this record as the next revision (the loop numbers it),
    /// creating `C` beside it.
    Write(R, C),
}

/// How [`KeyStore::commit_revision`] ended.
pub(super) enum Outcome<R, M> {
    /// The change wrote nothing: the latest record on the token, and its
    /// object.
    Kept(DataHandle, R),
    /// The new revision committed: its object, the record, and what was
    /// created beside it.
    Committed(DataHandle, R, M),
}

impl KeyStore {
    /// The commit protocol for the record labelled `label`. `change` gets
    /// the latest record on the token (`None` if there is none) and may
    /// refuse; it may run more than once (on a conflict with another
    /// gateway), each time on the then-latest record. The caller holds the
    /// writes lock (`_writes`) until it has published the outcome.
    ///
    /// The caller's refusal comes back as it was made: the error type `E`
    /// is the caller's, and the key store's own failures become an `E`
    /// through `From<StoreError>`.
    pub(super) async fn commit_revision<R, C, F, E>(
        &self,
        _writes: &tokio::sync::MutexGuard<'_, ()>,
        label: &str,
        mut change: F,
    ) -> Result<Outcome<R, C::Made>, E>
    where
        R: Committable,
        C: Companion,
        F: FnMut(Option<&R>) -> Result<Next<R, C>, E>,
        E: From<StoreError>,
    {
        for attempt in 0..MAX_ATTEMPTS {
            let read_label = label.to_owned();
            let latest_on_token = self
                .hsm
                .pool()
                .run(move |s| Ok(latest::<R>(read_records(s, &read_label)?)))
                .await
                .map_err(token)?;
            let current = match latest_on_token {
                Latest::Unreadable => {
                    R::unreadable(label)?;
                    None
                }
                other => other.found(label)?,
            };
            let (mut record, companion) = match change(current.as_ref().map(|(_, r)| r))? {
                Next::Keep => {
                    return match current {
                        Some((handle, base)) => Ok(Outcome::Kept(handle, base)),
                        None => Err(StoreError::Internal(format!(
                            "a change kept {label}, which is not on the token"
                        ))
                        .into()),
                    };
                }
                Next::Write(record, companion) => (record, companion),
            };
            record.set_revision(current.as_ref().map_or(0, |(_, r)| r.revision() + 1));
            let value = to_json(&record)?;
            let (l, revision) = (label.to_owned(), record.revision());
            let confirm = self.hsm.confirmer();
            let committed = self
                .write_job(move |s| {
                    let made = companion.create(s, &confirm)?;
                    match commit(s, &confirm, &l, &value, revision) {
                        Ok(Some(handle)) => Ok(Some((handle, made))),
                        other => {
                            C::destroy(s, made);
                            other.map(|_| None)
                        }
                    }
                })
                .await
                .map_err(token)?;
            match committed {
                Some((handle, made)) => return Ok(Outcome::Committed(handle, record, made)),
                None => {
                    record.retrying(attempt);
                    back_off(attempt).await;
                }
            }
        }
        Err(StoreError::Conflict.into())
    }
}
