//! Changing what is on the token, safely when several gateways share it.
//!
//! A record is never modified in place (tokens need not allow it: SoftHSM2
//! refuses to change CKA_VALUE); a change creates the record's next revision
//! as a new object and then removes the old one. PKCS#11 has no
//! compare-and-swap, so gateways sharing a token use optimistic concurrency:
//!
//! 1. read the latest revision `r` from the token (not from the cache);
//! 2. create revision `r + 1` (and, for a rotation, the new key version's
//!    object first);
//! 3. read every object with the record's label again. If any other object
//!    has a revision `>= r + 1`, another gateway changed the record at the
//!    same time: destroy what step 2 created and start again from step 1
//!    after a short random pause. Otherwise destroy the older revisions and
//!    publish the change to the cache.
//!
//! Once step 2's record exists, a failure no longer decides anything: the
//! token is read again until it shows whether the revision won
//! ([`super::commit`]), and a rotation's new version is destroyed only when
//! no record names it. A failure before that starts again from step 1, and
//! every attempt names its new key version afresh.
//!
//! Every object a change creates is confirmed durable before anything older
//! is removed or the client is answered (DESIGN.md decision 12): the token's
//! [`Confirmer`] reads it back through an independent view of the token
//! (by default a helper process with its own PKCS#11 context, which sees
//! what a restart would see). A change that cannot be confirmed destroys
//! what it created and fails with a retryable error, leaving the previous
//! revision in force. Removals are confirmed the same way.
//!
//! A writer publishes only after step 3 found no rival, and a rival that
//! comes later sees the published revision and yields; two writers that see
//! each other both yield and retry. So exactly one of two concurrent changes
//! based on the same revision wins, and nothing is ever encrypted under a
//! key version whose record did not commit. A crash between steps leaves at
//! most an extra object that readers skip (they take the highest revision).
//!
//! Steps 1 to 3 and the retries are [`KeyStore::commit_revision`]
//! ([`super::commit`]), shared by keys and aliases; this module adds what
//! keys need (a rotation's new version object, created in the same write
//! job) and creates keys; [`super::destroy`] destroys them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::commit::{Committable, Companion, Next, Outcome, back_off};
use super::error::{StoreError, lock_poisoned, token};
use super::record::{RotationType, VersionRecord, key_label, version_id, version_label};
use super::spec::{KeySpec, KeyUsage};
use super::{Key, KeyRecord, KeyStore, Tag};
use crate::hsm::keypair::{self, PairPurpose};
use crate::hsm::objects::{self, DataHandle, MasterKeyVersion};
use crate::hsm::readback::Confirmer;
use crate::hsm::{Fault, HsmError, TokenSession};

/// A new key version to create with a change.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion {
    pub rotation: RotationType,
    /// Encryptions reserved under it from the start ([`super::usage`]).
    pub reserved: u64,
}

/// What a change asks for.
pub enum Change {
    /// The record is to be written as edited.
    Edit,
    /// The record is to be written as edited, with a new primary version.
    Rotate(NewVersion),
}

/// Creates a record's object on the token and confirms it durable;
/// destroys it again if it cannot be confirmed.
pub(super) fn new_record_object(
    s: &TokenSession,
    confirm: &Confirmer,
    label: &str,
    value: &[u8],
) -> Result<DataHandle, HsmError> {
    try_new_record_object(s, confirm, label, value).map_err(|(e, _)| e)
}

/// As [`new_record_object`], saying on error whether the record may still
/// stand: `Some(handle)` when it could be neither confirmed nor removed
/// (then nothing it names may be destroyed; the token decides later).
pub(super) fn try_new_record_object(
    s: &TokenSession,
    confirm: &Confirmer,
    label: &str,
    value: &[u8],
) -> Result<DataHandle, (HsmError, Option<DataHandle>)> {
    let handle = objects::create_data(s, label, value).map_err(|e| (e, None))?;
    if let Err(e) = confirm.data_stored(s, label, value) {
        return Err(match objects::destroy_data(s, handle) {
            Ok(()) => (e, None),
            Err(_) => (e, Some(handle)),
        });
    }
    Ok(handle)
}

/// Generates a key version's object of kind `(spec, usage)` on the token
/// and confirms it durable; destroys it again if it cannot be confirmed.
fn new_version_object(
    s: &TokenSession,
    confirm: &Confirmer,
    id: &Uuid,
    version: u32,
    label: &str,
    (spec, usage): (KeySpec, KeyUsage),
    wrap: bool,
) -> Result<MasterKeyVersion, HsmError> {
    let cka_id = version_id(id, version);
    if let Some(kind) = super::signing::pair_kind(spec) {
        let purpose = match usage {
            KeyUsage::EncryptDecrypt => PairPurpose::Decrypt,
            KeyUsage::KeyAgreement => PairPurpose::Derive,
            _ => PairPurpose::Sign,
        };
        let handle = keypair::generate_key_pair(s, label, &cka_id, kind, purpose)?;
        if let Err(e) = confirm.pair_stored(s, label) {
            // Takes the public key along.
            let _ = objects::destroy_master_key(s, handle);
            return Err(e);
        }
        return Ok(handle);
    }
    let handle = match spec.hmac_key_len() {
        Some(len) => objects::generate_hmac_key(s, label, &cka_id, len)?,
        None => objects::generate_master_key(s, label, &cka_id, wrap)?,
    };
    if let Err(e) = confirm.key_stored(s, label, spec.hmac_key_len().unwrap_or(32)) {
        let _ = objects::destroy_master_key(s, handle);
        return Err(e);
    }
    Ok(handle)
}

/// A rotation's new key version: created on the token in the same write
/// job as the record that names it, before it, and destroyed again if that
/// record does not commit.
#[derive(Clone)]
struct NewVersionObject {
    key_id: Uuid,
    version: u32,
    label: String,
    spec: KeySpec,
    wrap: bool,
}

impl Companion for NewVersionObject {
    type Made = (u32, MasterKeyVersion);

    fn create(&self, s: &TokenSession, confirm: &Confirmer) -> Result<Self::Made, HsmError> {
        let (id, v) = (&self.key_id, self.version);
        let handle = new_version_object(
            s,
            confirm,
            id,
            v,
            &self.label,
            (self.spec, KeyUsage::EncryptDecrypt),
            self.wrap,
        )?;
        Ok((v, handle))
    }

    fn destroy(s: &TokenSession, (_, handle): Self::Made) {
        let _ = objects::destroy_master_key(s, handle);
    }

    /// A key record names this version by its label (its nonce is this
    /// attempt's own).
    fn named_in(&self, value: &[u8]) -> bool {
        serde_json::from_slice::<KeyRecord>(value).is_ok_and(|r| {
            r.versions
                .iter()
                .any(|v| version_label(&self.key_id, v.version, &v.nonce) == self.label)
        })
    }
}

impl Committable for KeyRecord {
    fn retrying(&self, attempt: u32) {
        tracing::info!(key_id = %self.key_id, attempt, "concurrent change on the token; retrying");
    }
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Internal(e.to_string()))
}

fn new_nonce() -> String {
    Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// How often a write's token job is tried again after a retryable fault.
pub(super) const WRITE_RETRIES: u32 = 2;

/// Whether a write job that failed so is tried again: a retryable fault,
/// or CKR_TEMPLATE_INCONSISTENT for one of kmsgate's own templates, which
/// SoftHSM2 2.6.1 gives when it loses the object-store race of SoftHSMv2
/// issue 573 (the same template works at once on the next attempt).
pub(super) fn retry_write(e: &HsmError) -> bool {
    e.fault() == Fault::Retryable || e.rv() == Some(cryptoki::error::RvError::TemplateInconsistent)
}

/// How long CreateKey may wait for the token to generate a key pair.
pub(super) const KEY_PAIR_DEADLINE: Duration = Duration::from_secs(60);

impl KeyStore {
    /// Runs a write's token job, and runs it again (twice at most, after a
    /// short random pause) when the token failed in a way that another
    /// attempt may not: SoftHSM2 2.6.1 races on object creation across
    /// sessions (SoftHSMv2 issue 573) and answers CKR_GENERAL_ERROR. Every
    /// write job undoes what it created when it fails, or names what it
    /// creates afresh on each run (CreateKey), so running it again is safe.
    /// The commit protocol does not come here: it decides from the token
    /// ([`super::commit`]).
    pub(super) async fn write_job<T, F>(&self, job: F) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: Fn(&TokenSession) -> Result<T, HsmError> + Clone + Send + 'static,
    {
        self.write_job_patient(Duration::ZERO, job).await
    }

    /// As [`write_job`](Self::write_job), waiting for the token at least
    /// `at_least` (key pair generation).
    pub(super) async fn write_job_patient<T, F>(
        &self,
        at_least: Duration,
        job: F,
    ) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: Fn(&TokenSession) -> Result<T, HsmError> + Clone + Send + 'static,
    {
        let mut attempt = 0;
        loop {
            let this = job.clone();
            match self
                .hsm
                .pool()
                .run_patient(at_least, move |s| this(s))
                .await
            {
                Err(e) if retry_write(&e) && attempt < WRITE_RETRIES => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "a write failed at the token; trying again");
                    back_off(attempt).await;
                }
                other => return other,
            }
        }
    }

    /// Creates a key of `spec`: its first version on the token, then its
    /// record.
    pub async fn create_key(
        &self,
        spec: KeySpec,
        usage: KeyUsage,
        description: String,
        tags: Vec<Tag>,
        policy: Option<String>,
    ) -> Result<Arc<Key>, StoreError> {
        let _guard = self.writes.lock().await;
        let mut record =
            KeyRecord::new(Uuid::new_v4(), self.now(), description, tags, String::new());
        record.policy = policy;
        record.key_spec = spec;
        record.key_usage = usage;
        let wrap = self.hsm.capabilities().gcm_wrap;
        let confirm = self.hsm.confirmer();
        // Generating a key pair (RSA above all) takes seconds on a software
        // token: past the request deadline the client would be told to retry
        // while the key is still being made.
        let patience = if spec.is_asymmetric() {
            KEY_PAIR_DEADLINE
        } else {
            Duration::ZERO
        };
        let template = record;
        // An attempt whose record could be neither confirmed nor removed
        // may have made its key: the attempts after it make another key, so
        // that no two records of one revision name different versions.
        let stranded = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (meta, handle, record) = self
            .write_job_patient(patience, move |s| {
                // Every attempt names its version afresh: a retry after a
                // clean-up that failed never makes a second object under
                // the first attempt's label, and the read-back confirms
                // this attempt's object.
                let mut record = template.clone();
                if stranded.load(std::sync::atomic::Ordering::SeqCst) {
                    record.key_id = Uuid::new_v4();
                }
                let id = record.key_id;
                let nonce = new_nonce();
                let label = version_label(&id, 1, &nonce);
                if let Some(v) = record.versions.first_mut() {
                    v.nonce = nonce;
                }
                let value = serde_json::to_vec(&record)
                    .map_err(|_| HsmError::Unexpected("a key record does not serialise"))?;
                let handle = new_version_object(s, &confirm, &id, 1, &label, (spec, usage), wrap)?;
                match try_new_record_object(s, &confirm, &key_label(&id), &value) {
                    Ok(meta) => Ok((meta, handle, record)),
                    Err((e, None)) => {
                        // Leave no orphan key object behind (best effort:
                        // one left here has a label no record names).
                        let _ = objects::destroy_master_key(s, handle);
                        Err(e)
                    }
                    Err((e, Some(_))) => {
                        // The record may stand (its removal failed too): a
                        // key the client was told failed, which it may find
                        // later, but never a record naming a missing
                        // version (a nemesis finding).
                        tracing::warn!(key_id = %id, error = %e, "a new key's record could be neither confirmed nor removed; its version is kept");
                        stranded.store(true, std::sync::atomic::Ordering::SeqCst);
                        Err(e)
                    }
                }
            })
            .await
            .map_err(token)?;
        let id = record.key_id;
        let key = Arc::new(Key {
            policy: std::sync::OnceLock::new(),
            record,
            meta,
            versions: HashMap::from([(1, handle)]),
        });
        self.cache
            .write()
            .map_err(lock_poisoned)?
            .keys
            .insert(id, key.clone());
        self.announce().await;
        tracing::info!(key_id = %id, "key created");
        Ok(key)
    }

    /// Changes a key's record: `change` edits a copy of the latest record
    /// from the token and may refuse; nothing is written if it changes
    /// nothing. It may run more than once (on a conflict with another
    /// gateway), each time on the then-latest record.
    ///
    /// The caller's refusal comes back as it was made: the error type `E`
    /// is the caller's, and the key store's own failures become an `E`
    /// through `From<StoreError>`.
    pub async fn update_key<F, E>(&self, id: &Uuid, mut change: F) -> Result<Arc<Key>, E>
    where
        F: FnMut(&mut KeyRecord) -> Result<(), E>,
        E: From<StoreError>,
    {
        self.modify(id, |r| change(r).map(|()| Change::Edit)).await
    }

    /// The general form of [`update_key`](Self::update_key): `change` may
    /// also ask for a new primary version (a rotation), whose token object
    /// the commit creates with the record ([`NewVersionObject`]).
    pub(super) async fn modify<F, E>(&self, id: &Uuid, mut change: F) -> Result<Arc<Key>, E>
    where
        F: FnMut(&mut KeyRecord) -> Result<Change, E>,
        E: From<StoreError>,
    {
        let writes = self.writes.lock().await;
        let wrap = self.hsm.capabilities().gcm_wrap;
        let outcome = self
            .commit_revision(&writes, &key_label(id), |latest| {
                self.next_key_record(id, latest, &mut change, wrap)
            })
            .await?;
        match outcome {
            Outcome::Kept(meta, base) => Ok(self.publish(base, meta, None).await?),
            Outcome::Committed(meta, record, created) => {
                let rotated = created.map(|(v, _)| v);
                let key = self.publish(record, meta, created).await?;
                self.announce().await;
                if let Some(v) = rotated {
                    tracing::info!(key_id = %id, version = v, "key rotated");
                }
                Ok(key)
            }
        }
    }

    /// The next revision of key `id`'s record: the latest on the token as
    /// `change` edits it, with a new version for a rotation.
    fn next_key_record<F, E>(
        &self,
        id: &Uuid,
        latest: Option<&KeyRecord>,
        change: &mut F,
        wrap: bool,
    ) -> Result<Next<KeyRecord, Option<NewVersionObject>>, E>
    where
        F: FnMut(&mut KeyRecord) -> Result<Change, E>,
        E: From<StoreError>,
    {
        // The cache keeps the key: one listing that misses a record can
        // fall between another process's new revision and the old one's
        // removal. A key really deleted elsewhere leaves the cache through
        // the sync, which lists again before it believes a miss
        // (lookup.rs, `relisted`).
        let Some(base) = latest else {
            return Err(self.key_not_found(id).into());
        };
        let mut record = base.clone();
        let new_version = match change(&mut record)? {
            // Nothing to write: the record just read is the latest.
            Change::Edit if record == *base => return Ok(Next::Keep),
            // A key being destroyed changes no more (super::destroy).
            _ if base.destroying => {
                let arn = self.realm.key_arn(id);
                return Err(StoreError::PendingDeletion { arn }.into());
            }
            Change::Edit => None,
            Change::Rotate(_) if record.key_spec != KeySpec::SymmetricDefault => {
                // The operations refuse first; this keeps any other
                // key from gaining an AES version.
                return Err(StoreError::Internal(format!(
                    "key {id} is not a symmetric encryption key and does not rotate"
                ))
                .into());
            }
            Change::Rotate(_) if !record.origin.is_aws_kms() => {
                // Every rotation path refuses first; this keeps the token
                // from ever making material for a key whose material is
                // only what its owner imported (DESIGN.md decision 23).
                return Err(StoreError::Internal(format!(
                    "key {id} has imported key material and does not rotate"
                ))
                .into());
            }
            Change::Rotate(spec) => {
                let version = record.next_version();
                let nonce = new_nonce();
                let label = version_label(id, version, &nonce);
                record.versions.push(VersionRecord {
                    version,
                    nonce,
                    created: self.now(),
                    rotation: Some(spec.rotation),
                    encryptions_reserved: spec.reserved,
                });
                record.primary_version = version;
                Some(NewVersionObject {
                    key_id: *id,
                    version,
                    label,
                    spec: record.key_spec,
                    wrap,
                })
            }
        };
        Ok(Next::Write(record, new_version))
    }

    /// RotateKeyOnDemand: a new primary version now, within the per-key
    /// limit of on-demand rotations.
    pub async fn rotate_on_demand(&self, id: &Uuid) -> Result<Arc<Key>, StoreError> {
        let max = self.policy.max_on_demand_rotations;
        let realm = &self.realm;
        self.modify(id, |r| {
            super::usable(r, realm)?;
            if r.on_demand_rotations >= max {
                return Err(StoreError::OnDemandRotationLimit {
                    arn: realm.key_arn(&r.key_id),
                });
            }
            r.on_demand_rotations += 1;
            Ok(Change::Rotate(NewVersion {
                rotation: RotationType::OnDemand,
                reserved: 0,
            }))
        })
        .await
        .inspect(|_| crate::telemetry::rotation("on_demand"))
    }

    /// Puts a committed record in the cache, with its version handles: the
    /// one just created, those already cached, and any others found on the
    /// token.
    async fn publish(
        &self,
        record: KeyRecord,
        meta: DataHandle,
        created: Option<(u32, MasterKeyVersion)>,
    ) -> Result<Arc<Key>, StoreError> {
        let id = record.key_id;
        // Straight from the cache: a foreign revision the sync found is
        // superseded by the one just committed.
        let mut versions = self
            .cache
            .read()
            .map_err(lock_poisoned)?
            .keys
            .get(&id)
            .map(|k| k.versions.clone())
            .unwrap_or_default();
        if let Some((v, h)) = created {
            versions.insert(v, h);
        }
        let missing: Vec<String> = record
            .versions
            .iter()
            .filter(|v| !versions.contains_key(&v.version))
            .map(|v| version_label(&id, v.version, &v.nonce))
            .collect();
        if !missing.is_empty() {
            let found = self
                .hsm
                .pool()
                .run(move |s| {
                    let mut out = HashMap::new();
                    for l in missing {
                        if let Some(h) = objects::find_master_key(s, &l)? {
                            out.insert(l, h);
                        }
                    }
                    Ok(out)
                })
                .await
                .map_err(token)?;
            for v in &record.versions {
                if let Some(h) = found.get(&version_label(&id, v.version, &v.nonce)) {
                    versions.insert(v.version, *h);
                }
            }
        }
        let key = Arc::new(Key {
            policy: std::sync::OnceLock::new(),
            record,
            meta,
            versions,
        });
        let mut cache = self.cache.write().map_err(lock_poisoned)?;
        cache.foreign_keys.remove(&id);
        cache.keys.insert(id, key.clone());
        Ok(key)
    }
}
