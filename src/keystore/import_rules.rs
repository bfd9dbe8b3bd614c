//! The rules on an EXTERNAL key's import record
//! ([`super::import_record`]): the import token's check, the record without
//! its material, the expiry.

use sha2::{Digest, Sha256};

use super::error::StoreError;
use super::import_record::{ImportRecord, PendingImport};
use super::record::version_label;
use super::{KeyRecord, KeyState};

/// The import token's format byte and length (format, key id, random).
pub(super) const TOKEN_FORMAT: u8 = 1;
pub(super) const TOKEN_LEN: usize = 1 + 16 + 32;

pub(super) fn digest_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks `import_token` against the record's pending parameters.
pub(super) fn check_token<'r>(
    r: &'r KeyRecord,
    import_token: &[u8],
    now: f64,
) -> Result<&'r PendingImport, StoreError> {
    let pending = r.import.as_ref().and_then(|i| i.pending.as_ref());
    let ours = import_token.len() == TOKEN_LEN
        && import_token[0] == TOKEN_FORMAT
        && import_token[1..17] == *r.key_id.as_bytes();
    match pending {
        Some(p) if ours && p.token_digest == digest_hex(import_token) => {
            if p.valid_to <= now || p.wrapping_label.is_none() {
                Err(StoreError::ExpiredImportToken)
            } else {
                Ok(p)
            }
        }
        _ => Err(StoreError::InvalidImportToken),
    }
}

/// The record's state once its material is gone: PendingImport, unless
/// the key is pending deletion (it stays so).
pub(super) fn without_material(r: &mut KeyRecord) -> Vec<String> {
    let id = r.key_id;
    let labels = r
        .versions
        .iter()
        .map(|v| version_label(&id, v.version, &v.nonce))
        .collect();
    let reserved = r
        .versions
        .iter()
        .map(|v| v.encryptions_reserved)
        .max()
        .unwrap_or(0);
    r.versions.clear();
    if r.state != KeyState::PendingDeletion {
        r.state = KeyState::PendingImport;
    }
    let import = r.import.get_or_insert_with(ImportRecord::default);
    import.material = None;
    import.encryptions_reserved = import.encryptions_reserved.max(reserved);
    labels
}

/// Whether an EXTERNAL key's material or its wrapping pair has expired.
pub(crate) fn import_due(r: &KeyRecord, now: f64) -> bool {
    let Some(i) = &r.import else {
        return false;
    };
    let material = i
        .material
        .as_ref()
        .and_then(|m| m.valid_to)
        .is_some_and(|t| t <= now);
    let pair = i
        .pending
        .as_ref()
        .is_some_and(|p| p.wrapping_label.is_some() && p.valid_to <= now);
    material || pair
}

/// The wrapping pair a key's record names, to destroy with the key.
pub(crate) fn wrapping_label(r: &KeyRecord) -> Option<String> {
    r.import
        .as_ref()
        .and_then(|i| i.pending.as_ref())
        .and_then(|p| p.wrapping_label.clone())
}
