//! The commit protocol of [`super::write`], written once for every record
//! that is replaced, never modified, on the token: keys (with their key
//! policies and grants, which are fields of the key record) and aliases.
//!
//! [`KeyStore::commit_revision`] reads the latest revision from the token,
//! lets the caller's change make the next one, writes it (confirmed
//! durable) and keeps it only if [`settle`] finds no rival revision, and
//! tries again after [`back_off`] when another gateway's change won, up to
//! [`MAX_ATTEMPTS`] times.
//!
//! Once the new revision is made, the outcome is what the token holds,
//! never what an error says: a job that fails after that point (the rival
//! listing, or removing a losing revision) leaves the revision and its
//! companion in place, and [`KeyStore::settle_open`] reads the token again
//! on a fresh session until it can tell whether the revision won, carried
//! its change into a later revision, or lost and is removed. Only then is
//! the companion destroyed, so no record ever names a missing object. A
//! failure before the revision exists is tried again from a fresh read
//! (the change runs again and names any new key version afresh), so an
//! object whose clean-up failed never shares its label with a retry's.
//!
//! What a kind of record needs beside that plugs in: [`Committable`] says
//! how its unreadable latest object is treated and what is logged on a
//! retry, and a [`Companion`] is created on the token in the same write job
//! before the record (a key's new version on rotation) and destroyed again
//! if the record is not made or loses. Publishing the result to the cache
//! is the caller's, under the same writes lock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::{StoreError, token, unreadable};
use super::lookup::relisted;
use super::record::{LINEAGE, Revisioned, foreign};
use super::write::{WRITE_RETRIES, retry_write, to_json};
use super::{KeyStore, Latest, latest, read_records};
use crate::hsm::objects::{self, DataHandle};
use crate::hsm::readback::Confirmer;
use crate::hsm::{Fault, HsmError, TokenSession};

/// How often a change is tried before the client is told to retry.
pub(super) const MAX_ATTEMPTS: u32 = 8;

#[derive(Deserialize)]
struct Revision {
    #[serde(default)]
    revision: u64,
    #[serde(default)]
    lineage: Vec<String>,
}

/// Whether the record object `value` was made from the revision whose
/// value is `ours` (or from one made from it): `ours`' id is in its
/// lineage. Then it carries our change, even if it removed our object.
fn carries(value: &[u8], ours: &[u8]) -> bool {
    let parse = |v: &[u8]| serde_json::from_slice::<Revision>(v).ok();
    match (
        parse(value),
        parse(ours).and_then(|o| o.lineage.into_iter().next()),
    ) {
        (Some(r), Some(id)) => r.lineage.iter().skip(1).any(|l| *l == id),
        _ => false,
    }
}

/// The revision a record object holds; `None` for one that does not parse
/// (a write cut short), which is no rival to a new revision: committing one
/// replaces it.
fn revision_of(value: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Revision>(value)
        .ok()
        .map(|r| r.revision)
}

/// How the rival check of one write ended.
pub(super) enum Settled {
    /// Our revision is the record in force: its object.
    Won(DataHandle),
    /// Our change is in force inside a later revision that another
    /// process wrote on top of ours (it names our companion): that
    /// revision's object and value.
    Carried(DataHandle, Vec<u8>),
    /// A rival won; our revision is removed.
    Lost,
}

/// Step 3 for our revision `ours` of the record `label` (holding `value`
/// at `revision`): decides from what the token holds whether it won. An
/// error leaves the outcome open: our revision may stand, so nothing it
/// names may be destroyed.
pub(super) fn settle(
    s: &TokenSession,
    (label, value, revision): (&str, &[u8], u64),
    ours: DataHandle,
    names_companion: &dyn Fn(&[u8]) -> bool,
) -> Result<Settled, HsmError> {
    let all = read_records(s, label)?;
    // Handles compare only within one library generation; after a
    // re-initialisation our object is the one holding our value.
    let current = ours.is_current(s);
    let mine = |o: &objects::DataObject| {
        if current {
            o.handle == ours
        } else {
            o.value == value
        }
    };
    // Another process may have read our revision before we settled it and
    // made its own on top: our change is then in force inside it once that
    // revision has won. It is a commit of its own, which a rival may still
    // beat; its winning is seen in its clean-up, which removes our object
    // (a winner removes every other object of the record). Until then the
    // outcome is open, and is read again ([`KeyStore::settle_open`]).
    let carrier = all
        .iter()
        .filter(|o| !mine(o) && (names_companion(&o.value) || carries(&o.value, value)))
        .max_by_key(|o| revision_of(&o.value));
    let ours = all.iter().find(|o| mine(o)).map(|o| o.handle);
    match (ours, carrier) {
        (None, Some(carrier)) => {
            return Ok(Settled::Carried(carrier.handle, carrier.value.clone()));
        }
        (Some(_), Some(_)) => {
            return Err(HsmError::NotDurable(
                "a later revision made on top of this one has not settled yet".into(),
            ));
        }
        _ => {}
    }
    let Some(ours) = ours else {
        // Gone: never stored, or removed by a later revision that does not
        // carry our change.
        return Ok(Settled::Lost);
    };
    let rival = all
        .iter()
        .any(|o| o.handle != ours && revision_of(&o.value).is_some_and(|r| r >= revision));
    if rival {
        objects::destroy_data(s, ours)?;
        return Ok(Settled::Lost);
    }
    // An older revision that this build does not understand stays: it is
    // no rival, and only a build that understands it may remove it.
    for o in all
        .iter()
        .filter(|o| o.handle != ours && foreign(label, &o.value).is_none())
    {
        // Another gateway may have removed it already.
        let _ = objects::destroy_data(s, o.handle);
    }
    Ok(Settled::Won(ours))
}

/// How one write attempt ended, with what it created beside the record.
enum Decided<M> {
    /// Our revision is in force ([`Settled::Won`]).
    Won(DataHandle, M),
    /// Our change is in force inside a later revision ([`Settled::Carried`]).
    Carried(DataHandle, Vec<u8>, M),
    /// A rival won; our revision and companion are removed.
    Lost,
}

/// A write attempt whose revision was made and confirmed, and whose
/// outcome is not settled yet.
struct Attempt<C: Companion> {
    ours: DataHandle,
    made: C::Made,
    companion: C,
}

/// Where a write job leaves its [`Attempt`] when it fails after making its
/// revision: [`KeyStore::settle_open`] takes it from there.
type Pending<C> = Arc<Mutex<Option<Attempt<C>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The attempt left in `pending`, if any (the lock is not held on).
fn take<C: Companion>(pending: &Pending<C>) -> Option<Attempt<C>> {
    lock(pending).take()
}

impl<C: Companion> Attempt<C> {
    /// [`settle`]s this attempt: a lost one's companion is destroyed; on an
    /// error the attempt goes back to `pending`, its companion kept.
    fn settle(
        self,
        s: &TokenSession,
        record: (&str, &[u8], u64),
        pending: &Pending<C>,
    ) -> Result<Decided<C::Made>, HsmError> {
        let names = |v: &[u8]| self.companion.named_in(v);
        match settle(s, record, self.ours, &names) {
            Ok(Settled::Won(h)) => Ok(Decided::Won(h, self.made)),
            Ok(Settled::Carried(h, v)) => Ok(Decided::Carried(h, v, self.made)),
            Ok(Settled::Lost) => {
                C::destroy(s, self.made);
                Ok(Decided::Lost)
            }
            Err(e) => {
                *lock(pending) = Some(self);
                Err(e)
            }
        }
    }
}

/// How often an open outcome is read again before the client is told to
/// retry.
const RESOLVE_ATTEMPTS: u32 = 4;

impl KeyStore {
    /// Settles a write attempt whose job failed after its revision was made
    /// and confirmed (the rival listing failed, or removing a lost revision
    /// did): reads the token again, on a fresh session, until it says
    /// whether the revision won. Still open after [`RESOLVE_ATTEMPTS`]: the
    /// revision and its companion stay on the token (a record never names
    /// a missing object; a companion no record names is an orphan that is
    /// never used), and the error goes to the client, which retries.
    async fn settle_open<C: Companion>(
        &self,
        label: &str,
        value: &[u8],
        revision: u64,
        open: Attempt<C>,
        first: HsmError,
    ) -> Result<Decided<C::Made>, HsmError> {
        let pending: Pending<C> = Arc::new(Mutex::new(Some(open)));
        let mut last = first;
        for round in 1..=RESOLVE_ATTEMPTS {
            tracing::warn!(error = %last, label, round, "a commit's outcome is open; reading the token to settle it");
            back_off(round).await;
            let job = {
                let (l, value) = (label.to_owned(), value.to_vec());
                let pending = pending.clone();
                move |s: &TokenSession| {
                    let Some(open) = take(&pending) else {
                        // A round that timed out took it and still runs.
                        return Err(HsmError::Busy);
                    };
                    open.settle(s, (&l, &value, revision), &pending)
                }
            };
            match self.hsm.pool().run(job).await {
                Ok(decided) => return Ok(decided),
                Err(e) if e.fault() == Fault::Timeout => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
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

    /// Whether a record object's value names what this creates (then
    /// destroying it would leave that record naming a missing object).
    fn named_in(&self, _value: &[u8]) -> bool {
        false
    }
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

    fn named_in(&self, value: &[u8]) -> bool {
        self.as_ref().is_some_and(|c| c.named_in(value))
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
        let mut write_retries = 0;
        for attempt in 0..MAX_ATTEMPTS {
            // A record this gateway knows that one listing misses is listed
            // again before the change is told it is gone (lookup.rs,
            // `relisted`): a write must not answer NotFoundException where
            // a read would find the record (DESIGN.md decision 13).
            let read = || {
                let read_label = label.to_owned();
                async move {
                    self.hsm
                        .pool()
                        .run(move |s| Ok(latest::<R>(read_records(s, &read_label)?)))
                        .await
                        .map_err(token)
                }
            };
            let (known, reread) = self.knows(label)?;
            let latest_on_token = relisted(
                read,
                || Ok(known),
                || reread && self.hsm.pool().request_reread(),
            )
            .await?;
            let current = match latest_on_token {
                Latest::Unreadable => {
                    R::unreadable(label)?;
                    None
                }
                // Never a revision on top of one this build does not
                // understand (DESIGN.md decision 20).
                // The cache takes it too: reads refuse from now on, not
                // only after the next sync.
                Latest::Foreign(h, f) => return Err(self.keep_foreign(label, h, f)?.into()),
                other => other.found(label)?,
            };
            if current.is_some() {
                // Seen on the token: a lookup must not answer from an
                // earlier "not found" (a change refused here, say
                // AlreadyExists, is then what this gateway serves too).
                self.absent
                    .lock()
                    .map_err(super::error::lock_poisoned)?
                    .remove(label);
            }
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
            let mut lineage = vec![Uuid::new_v4().simple().to_string()[..16].to_owned()];
            if let Some((_, base)) = &current {
                lineage.extend(base.lineage().iter().take(LINEAGE - 1).cloned());
            }
            record.set_lineage(lineage);
            let value = to_json(&record)?;
            let revision = record.revision();
            let pending: Pending<C> = Arc::new(Mutex::new(None));
            let job = {
                let (l, value) = (label.to_owned(), value.clone());
                let (confirm, pending) = (self.hsm.confirmer(), pending.clone());
                move |s: &TokenSession| {
                    let made = companion.create(s, &confirm)?;
                    let ours = match super::write::try_new_record_object(s, &confirm, &l, &value) {
                        Ok(h) => h,
                        Err((e, None)) => {
                            C::destroy(s, made);
                            return Err(e);
                        }
                        // Not confirmed, and not removed either: the
                        // revision may stand, so the token decides
                        // (`settle_open`), and the companion it may name
                        // stays until then.
                        Err((e, Some(ours))) => {
                            *lock(&pending) = Some(Attempt {
                                ours,
                                made,
                                companion,
                            });
                            return Err(e);
                        }
                    };
                    // From here on our revision may be in force: what the
                    // token holds decides, and an error leaves both it and
                    // the companion to `settle_open`.
                    let attempt = Attempt {
                        ours,
                        made,
                        companion,
                    };
                    attempt.settle(s, (&l, &value, revision), &pending)
                }
            };
            let decided = match self.hsm.pool().run(job).await {
                Ok(decided) => decided,
                Err(e) => match take(&pending) {
                    // Our revision was made: settle it before anything else.
                    Some(open) => self
                        .settle_open(label, &value, revision, open, e)
                        .await
                        .map_err(token)?,
                    // Nothing of this attempt is left: try the change again
                    // from a fresh read, which names a new version afresh
                    // (never two objects under one label).
                    None if retry_write(&e) && write_retries < WRITE_RETRIES => {
                        write_retries += 1;
                        tracing::warn!(error = %e, attempt = write_retries, "a write failed at the token; trying again");
                        back_off(write_retries).await;
                        continue;
                    }
                    None => return Err(token(e).into()),
                },
            };
            match decided {
                Decided::Won(handle, made) => return Ok(Outcome::Committed(handle, record, made)),
                Decided::Carried(handle, carrier, made) => {
                    let carrier = serde_json::from_slice::<R>(&carrier)
                        .map_err(|e| StoreError::Internal(e.to_string()))?;
                    return Ok(Outcome::Committed(handle, carrier, made));
                }
                Decided::Lost => {
                    record.retrying(attempt);
                    back_off(attempt).await;
                }
            }
        }
        Err(StoreError::Conflict.into())
    }
}
