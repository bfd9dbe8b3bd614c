//! Imported key material (BYOK): EXTERNAL keys, their import parameters,
//! the import itself, the deletion and the expiry of the material.
//!
//! An EXTERNAL key is created with no key version and stays PendingImport
//! until material is imported. GetParametersForImport makes an RSA wrapping
//! pair on the token and records, in the key's record (under the commit
//! protocol), what the import token stands for: the SHA-256 of the token,
//! the wrapping pair's label, the wrapping algorithm and the expiry. The
//! token itself is opaque random bytes (with the key id), so it is checked
//! against the record and cannot be forged, altered or moved to another
//! key. A newer GetParametersForImport supersedes the older parameters.
//!
//! ImportKeyMaterial unwraps the material on the token straight into the
//! key's version 1 ([`crate::hsm::import`]), reads it back like every write,
//! and compares its check value with the one recorded at the first import:
//! only the same material may come back after a deletion or expiry, so old
//! ciphertexts decrypt again and nothing else can pose as the key. Wrapping
//! pairs that are no longer needed (superseded, used, expired) are
//! destroyed.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::error::{StoreError, lock_poisoned, token};
use super::record::{LABEL_PREFIX, key_label, version_id, version_label};
use super::write::new_record_object;
use super::{Key, KeyRecord, KeySpec, KeyState, KeyStore, KeyUsage, Tag, VersionRecord};
use crate::hsm::import::{self as hsm_import, Refusal, SecretKind};
use crate::hsm::objects;

pub use super::import_record::{
    ImportRecord, ImportedMaterial, Origin, PendingImport, WrappingAlgorithm,
};
use super::import_rules::{TOKEN_FORMAT, TOKEN_LEN, check_token, digest_hex, without_material};
pub(super) use super::import_rules::{import_due, wrapping_label};

/// What the token made of imported material.
enum Unwrapped {
    /// Stored and confirmed, with its check value (hex).
    Stored(String),
    /// Not the material first imported into the key.
    Mismatch,
    Refused(Refusal),
}

/// What imported material becomes on the token.
#[derive(Clone, Copy)]
enum Material {
    Secret(SecretKind),
    /// The private half of a key pair, with its public half beside it.
    Pair(KeySpec, KeyUsage),
}

/// What GetParametersForImport answers.
pub struct ImportParameters {
    pub import_token: Vec<u8>,
    /// DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// Epoch seconds.
    pub valid_to: f64,
}

/// How long import parameters are valid, as AWS's.
pub const PARAMETERS_LIFETIME_SECS: f64 = 24.0 * 3600.0;
/// How long a wrapping pair may take to generate (RSA-4096 on a software
/// token takes seconds).
const PAIR_DEADLINE: Duration = Duration::from_secs(60);

fn import_label(id: &Uuid, nonce: &str) -> String {
    format!("{LABEL_PREFIX}import/{id}/{nonce}")
}

fn nonce() -> String {
    Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// The kind of secret an imported key of `spec` holds.
fn secret_kind(spec: KeySpec, wrap: bool) -> Option<SecretKind> {
    match spec {
        KeySpec::SymmetricDefault => Some(SecretKind::Aes256 { wrap }),
        s => s.hmac_key_len().map(SecretKind::Hmac),
    }
}

/// Whether keys of `spec` can be imported into kmsgate.
pub fn importable(spec: KeySpec) -> bool {
    secret_kind(spec, false).is_some() || super::signing::pair_kind(spec).is_some()
}

impl KeyStore {
    fn wrong_origin(&self, r: &KeyRecord) -> StoreError {
        StoreError::WrongOrigin {
            arn: self.realm.key_arn(&r.key_id),
            origin: r.origin.as_str(),
        }
    }

    /// CreateKey with Origin EXTERNAL: a record with no key material,
    /// PendingImport.
    pub async fn create_external_key(
        &self,
        spec: KeySpec,
        usage: KeyUsage,
        description: String,
        tags: Vec<Tag>,
        policy: Option<String>,
    ) -> Result<Arc<Key>, StoreError> {
        let _guard = self.writes.lock().await;
        let id = Uuid::new_v4();
        let mut record = KeyRecord::new(id, self.now(), description, tags, String::new());
        record.policy = policy;
        record.key_spec = spec;
        record.key_usage = usage;
        record.versions.clear();
        record.state = KeyState::PendingImport;
        record.origin = Origin::External;
        record.import = Some(ImportRecord::default());
        let value = super::write::to_json(&record)?;
        let confirm = self.hsm.confirmer();
        let meta = self
            .write_job(move |s| new_record_object(s, &confirm, &key_label(&id), &value))
            .await
            .map_err(token)?;
        let key = Arc::new(Key {
            policy: std::sync::OnceLock::new(),
            record,
            meta,
            versions: Default::default(),
        });
        self.cache
            .write()
            .map_err(lock_poisoned)?
            .keys
            .insert(id, key.clone());
        self.announce().await;
        tracing::info!(key_id = %id, "EXTERNAL key created, pending import");
        Ok(key)
    }

    /// GetParametersForImport: a new wrapping pair on the token and an
    /// import token, which supersede any earlier ones.
    pub async fn parameters_for_import(
        &self,
        id: &Uuid,
        algorithm: WrappingAlgorithm,
        bits: u32,
    ) -> Result<ImportParameters, StoreError> {
        let label = import_label(id, &nonce());
        let confirm = self.hsm.confirmer();
        let l = label.clone();
        let how = algorithm.unwrapping();
        // A wrapping algorithm the token cannot unwrap with is refused now,
        // not after the caller has wrapped its material.
        // A write job: tried again on SoftHSM2's object-creation race, so
        // whatever an attempt made (a failed C_GenerateKeyPair may have
        // made part of the pair) is destroyed when it fails.
        let (public, lacks) = self
            .write_job_patient(PAIR_DEADLINE, move |s| {
                let made = hsm_import::generate_wrapping_pair(s, &l, u64::from(bits))
                    .and_then(|()| confirm.pair_stored(s, &l))
                    .and_then(|()| {
                        Ok((
                            hsm_import::wrapping_public_key(s, &l)?,
                            hsm_import::lacks_unwrapping(s, &l, how)?,
                        ))
                    });
                if !matches!(made, Ok((_, None))) {
                    let _ = hsm_import::destroy_wrapping_pair(s, &l);
                }
                made
            })
            .await
            .map_err(token)?;
        if let Some(mechanism) = lacks {
            return Err(StoreError::ImportUnsupported(mechanism));
        }
        let public_key = super::der::public_key_der(&public)
            .map_err(|e| StoreError::Internal(format!("public key: {e}")))?;
        let mut import_token = Vec::with_capacity(TOKEN_LEN);
        import_token.push(TOKEN_FORMAT);
        import_token.extend_from_slice(id.as_bytes());
        import_token.extend_from_slice(&rand::random::<[u8; 32]>());
        let valid_to = self.now() + PARAMETERS_LIFETIME_SECS;
        let pending = PendingImport {
            token_digest: digest_hex(&import_token),
            wrapping_label: Some(label.clone()),
            algorithm,
            wrapping_bits: bits,
            valid_to,
        };
        let mut superseded = None;
        let changed = self
            .update_key(id, |r| {
                if r.origin != Origin::External {
                    return Err(self.wrong_origin(r));
                }
                if r.state == KeyState::PendingDeletion {
                    return Err(StoreError::PendingDeletion {
                        arn: self.realm.key_arn(id),
                    });
                }
                let import = r.import.get_or_insert_with(ImportRecord::default);
                superseded = import
                    .pending
                    .replace(pending.clone())
                    .and_then(|p| p.wrapping_label);
                Ok(())
            })
            .await;
        let destroy = match &changed {
            Ok(_) => superseded,
            Err(_) => Some(label),
        };
        self.destroy_pair(destroy).await;
        changed?;
        Ok(ImportParameters {
            import_token,
            public_key,
            valid_to,
        })
    }

    /// Destroys a wrapping pair that is no longer needed (best effort: a
    /// pair left behind can unwrap nothing any record accepts).
    async fn destroy_pair(&self, label: Option<String>) {
        let Some(label) = label else {
            return;
        };
        let l = label.clone();
        if let Err(e) = self
            .hsm
            .pool()
            .run(move |s| hsm_import::destroy_wrapping_pair(s, &l))
            .await
        {
            tracing::warn!(%label, error = %e, "wrapping key pair not destroyed");
        }
    }

    /// Destroys key version objects a committed record no longer names.
    async fn destroy_versions(&self, labels: Vec<String>) -> Result<(), StoreError> {
        if labels.is_empty() {
            return Ok(());
        }
        self.hsm
            .pool()
            .run(move |s| {
                for l in &labels {
                    while let Some(h) = objects::find_master_key(s, l)? {
                        objects::destroy_master_key(s, h)?;
                    }
                }
                Ok(())
            })
            .await
            .map_err(token)
    }

    /// ImportKeyMaterial: unwraps `wrapped` on the token into the key's
    /// version 1 and enables the key. `valid_to`: when the material
    /// expires (`None`: never).
    pub async fn import_key_material(
        &self,
        id: &Uuid,
        import_token: &[u8],
        wrapped: &[u8],
        valid_to: Option<f64>,
    ) -> Result<Arc<Key>, StoreError> {
        let arn = self.realm.key_arn(id);
        let Some(fresh) = self.reload_key(id).await? else {
            return Err(self.key_not_found(id));
        };
        let r = &fresh.record;
        if r.origin != Origin::External {
            return Err(self.wrong_origin(r));
        }
        let pending = check_token(r, import_token, self.now())?.clone();
        match r.state {
            KeyState::PendingImport => {}
            KeyState::PendingDeletion => return Err(StoreError::PendingDeletion { arn }),
            _ => return Err(StoreError::MaterialPresent { arn }),
        }
        let wrap = self.hsm.capabilities().gcm_wrap;
        let kind = match secret_kind(r.key_spec, wrap) {
            Some(kind) => Material::Secret(kind),
            None if importable(r.key_spec) => Material::Pair(r.key_spec, r.key_usage),
            None => {
                return Err(StoreError::Internal(format!(
                    "key {id} of spec {} cannot hold imported material",
                    r.key_spec.as_str()
                )));
            }
        };
        let modulus_len = pending.wrapping_bits as usize / 8;
        let oaep = matches!(
            pending.algorithm,
            WrappingAlgorithm::RsaesOaepSha1 | WrappingAlgorithm::RsaesOaepSha256
        );
        if (oaep && wrapped.len() != modulus_len) || (!oaep && wrapped.len() <= modulus_len) {
            return Err(StoreError::EncryptedKeySize);
        }
        let expected = r.import.as_ref().and_then(|i| i.check_value.clone());
        let version_nonce = nonce();
        let label = version_label(id, 1, &version_nonce);
        let (confirm, l, wrapped) = (self.hsm.confirmer(), label.clone(), wrapped.to_vec());
        let wrapping_label = pending.wrapping_label.clone().unwrap_or_default();
        let cka_id = version_id(id, 1);
        let unwrapping = pending.algorithm.unwrapping();
        let made = self
            .write_job(move |s| {
                let made = match kind {
                    Material::Secret(kind) => hsm_import::unwrap_material(
                        s,
                        &wrapping_label,
                        unwrapping,
                        &wrapped,
                        kind,
                        &l,
                        &cka_id,
                    )?
                    .map(|i| (i.key, i.check_value)),
                    Material::Pair(spec, usage) => super::import_pair::unwrap_pair(
                        s,
                        &wrapping_label,
                        unwrapping,
                        &wrapped,
                        (spec, usage),
                        &l,
                        &cka_id,
                    )?,
                };
                let (key, check) = match made {
                    Ok((key, check)) => (key, hex::encode(check)),
                    Err(refusal) => return Ok(Unwrapped::Refused(refusal)),
                };
                let outcome = if expected.as_ref().is_some_and(|e| *e != check) {
                    Ok(Unwrapped::Mismatch)
                } else {
                    match kind {
                        Material::Secret(_) => confirm.secret_stored(s, &l),
                        Material::Pair(..) => confirm.pair_stored(s, &l),
                    }
                    .map(|()| Unwrapped::Stored(check))
                };
                if !matches!(outcome, Ok(Unwrapped::Stored(_))) {
                    // Takes an imported key's public half along.
                    let _ = objects::destroy_master_key(s, key);
                }
                outcome
            })
            .await
            .map_err(token)?;
        let check = match made {
            Unwrapped::Stored(check) => check,
            Unwrapped::Mismatch => return Err(StoreError::IncorrectKeyMaterial),
            Unwrapped::Refused(Refusal::Undecryptable) => {
                return Err(StoreError::MaterialUndecryptable);
            }
            Unwrapped::Refused(Refusal::WrongLength) => {
                return Err(StoreError::MaterialWrongLength {
                    key_spec: r.key_spec.as_str(),
                });
            }
            Unwrapped::Refused(Refusal::WrongKey) => {
                return Err(StoreError::MaterialWrongKey {
                    key_spec: r.key_spec.as_str(),
                });
            }
            Unwrapped::Refused(Refusal::Unsupported(what)) => {
                return Err(StoreError::ImportUnsupported(what));
            }
        };
        let now = self.now();
        let committed = self
            .update_key(id, |r| {
                check_token(r, import_token, now)?;
                if r.state != KeyState::PendingImport {
                    return Err(StoreError::MaterialPresent {
                        arn: self.realm.key_arn(id),
                    });
                }
                let import = r.import.get_or_insert_with(ImportRecord::default);
                import.pending = None;
                import.check_value.get_or_insert_with(|| check.clone());
                import.material = Some(ImportedMaterial {
                    imported: now,
                    valid_to,
                });
                let reserved = import.encryptions_reserved;
                r.versions = vec![VersionRecord {
                    version: 1,
                    nonce: version_nonce.clone(),
                    created: now,
                    rotation: None,
                    encryptions_reserved: reserved,
                }];
                r.primary_version = 1;
                r.state = KeyState::Enabled;
                Ok(())
            })
            .await;
        if let Err(e) = committed {
            let _ = self.destroy_versions(vec![label]).await;
            return Err(e);
        }
        self.destroy_pair(pending.wrapping_label).await;
        tracing::info!(key_id = %id, "key material imported");
        self.reload_key(id)
            .await?
            .ok_or_else(|| self.key_not_found(id))
    }

    /// DeleteImportedKeyMaterial: the key's material is destroyed and the
    /// key is PendingImport.
    pub async fn delete_imported_material(&self, id: &Uuid) -> Result<Arc<Key>, StoreError> {
        let mut gone = Vec::new();
        self.update_key(id, |r| {
            if r.origin != Origin::External {
                return Err(self.wrong_origin(r));
            }
            gone = without_material(r);
            Ok(())
        })
        .await?;
        self.destroy_versions(gone).await?;
        tracing::info!(key_id = %id, "imported key material deleted");
        self.reload_key(id)
            .await?
            .ok_or_else(|| self.key_not_found(id))
    }

    /// The scheduler's import work for key `id`: expired material is
    /// destroyed (the key becomes PendingImport) and an expired wrapping
    /// pair too. Answers whether anything was done.
    pub(super) async fn expire_import(&self, id: &Uuid) -> Result<bool, StoreError> {
        let (mut gone, mut pair) = (Vec::new(), None);
        self.update_key(id, |r| {
            gone.clear();
            pair = None;
            let now = self.now();
            if !import_due(r, now) {
                return Ok::<_, StoreError>(());
            }
            let material_expired = r
                .import
                .as_ref()
                .and_then(|i| i.material.as_ref())
                .and_then(|m| m.valid_to)
                .is_some_and(|t| t <= now);
            if material_expired {
                gone = without_material(r);
            }
            if let Some(p) = r.import.as_mut().and_then(|i| i.pending.as_mut())
                && p.valid_to <= now
            {
                pair = p.wrapping_label.take();
            }
            Ok(())
        })
        .await?;
        let done = !gone.is_empty() || pair.is_some();
        let material_gone = !gone.is_empty();
        self.destroy_versions(gone).await?;
        if material_gone {
            self.material_expired(*id).await;
        }
        self.destroy_pair(pair).await;
        if done {
            tracing::info!(key_id = %id, "expired imported material or import parameters destroyed");
            self.reload_key(id).await?;
        }
        Ok(done)
    }
}
