//! The acknowledged ciphertexts: their GCM uses per key version (the
//! blob's header names the version), what Decrypt answered for them during
//! the run, and whether they still decrypt.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use aws_sdk_kms::primitives::Blob;

use super::super::history::{self, Call, Op, Outcome};
use super::Report;
use super::model::{self, Model, b64};
use super::observe::{Read, Snapshot, retried};

/// No key version did more acknowledged GCM encryptions than the bound
/// (the gateway rotates, or an EXTERNAL key refuses, at it).
pub fn check_gcm_uses(model: &Model, info: &history::RunInfo, report: &mut Report) {
    let mut most = 0;
    for ((key, version), (n, last)) in &model.gcm_uses {
        most = most.max(*n);
        if *n > info.gcm_usage_bound {
            report.violation(format!(
                "key {key} version {version}: {n} acknowledged GCM encryptions, above the bound of {} \
                 (the last: {} seq {}, request {})",
                info.gcm_usage_bound, last.op, last.seq, last.request_id
            ));
        }
    }
    report.check(format!(
        "{} key versions' acknowledged GCM encryptions counted against the bound of {} (most: {most})",
        model.gcm_uses.len(),
        info.gcm_usage_bound
    ));
}

/// Every acknowledged ciphertext decrypts to its plaintext while its key
/// exists. A disabled key is enabled for it and disabled again; a key whose
/// imported material is deleted gets the history's material again (the
/// newest that imports) and loses it again afterwards. Keys pending
/// deletion cannot decrypt and are left alone.
pub async fn check_ciphertexts(
    model: &Model,
    snap: &Snapshot,
    info: &history::RunInfo,
    clients: &[aws_sdk_kms::Client],
    report: &mut Report,
) {
    let mut by_key: BTreeMap<Option<&str>, Vec<&model::Ciphertext>> = BTreeMap::new();
    for ct in &model.ciphertexts {
        by_key.entry(ct.key.as_deref()).or_default().push(ct);
    }
    let (mut decrypted, mut revived, mut skipped_gone, mut skipped_pending) = (0, 0, 0, 0);
    let first = &clients[0];
    let mut next = 0;
    for (key, cts) in by_key {
        let state = key
            .and_then(|k| snap.keys.get(k))
            .map(|v| (v.not_found(), v.described.ok().map(|d| d.state.clone())));
        match state {
            Some((true, _)) => {
                skipped_gone += cts.len();
                continue;
            }
            Some((false, Some(s))) if s == "PendingDeletion" => {
                skipped_pending += cts.len();
                continue;
            }
            Some((false, Some(s))) if s == "Disabled" => {
                let key = key.unwrap_or_default();
                if let Some(f) =
                    Read::failure(&retried(|| first.enable_key().key_id(key).send()).await)
                {
                    report.violation(format!(
                        "key {key}: EnableKey for the decrypt check fails: {f}"
                    ));
                    continue;
                }
                revived += 1;
                for ct in &cts {
                    decrypted += 1;
                    decrypt_one(first, 0, ct, report).await;
                }
                if let Some(f) =
                    Read::failure(&retried(|| first.disable_key().key_id(key).send()).await)
                {
                    report.violation(format!(
                        "key {key}: DisableKey after the decrypt check fails: {f}"
                    ));
                }
            }
            Some((false, Some(s))) if s == "PendingImport" => {
                let key = key.unwrap_or_default();
                let materials = model
                    .keys
                    .get(key)
                    .map(|k| k.materials.clone())
                    .unwrap_or_default();
                if materials.is_empty() {
                    skipped_pending += cts.len();
                    continue;
                }
                if !reimport(first, key, &materials).await {
                    report.violation(format!(
                        "key {key}: none of the {} materials the history imported imports again, \
                         so its {} acknowledged ciphertexts (first: seq {}, request {}) cannot decrypt",
                        materials.len(),
                        cts.len(),
                        cts[0].seq,
                        cts[0].request_id
                    ));
                    continue;
                }
                revived += 1;
                for ct in &cts {
                    decrypted += 1;
                    decrypt_one(first, 0, ct, report).await;
                }
                if let Some(f) = Read::failure(
                    &retried(|| first.delete_imported_key_material().key_id(key).send()).await,
                ) {
                    report.violation(format!(
                        "key {key}: DeleteImportedKeyMaterial after the decrypt check fails: {f}"
                    ));
                }
            }
            _ => {
                for ct in &cts {
                    let g = next % clients.len();
                    next += 1;
                    decrypted += 1;
                    decrypt_one(&clients[g], g, ct, report).await;
                }
            }
        }
    }
    if revived > 0 {
        // The keys disabled (or emptied) again are so everywhere after the
        // sync bound, as the history left them.
        tokio::time::sleep(Duration::from_millis(info.sync_bound_ms)).await;
    }
    report.check(format!(
        "{decrypted} acknowledged ciphertexts decrypted ({revived} keys enabled or re-imported for it \
         and put back); {skipped_gone} not, their key destroyed; {skipped_pending} not, their key \
         pending deletion or without material"
    ));
}

async fn reimport(kms: &aws_sdk_kms::Client, key: &str, materials: &[Vec<u8>]) -> bool {
    use aws_sdk_kms::types::{AlgorithmSpec, WrappingKeySpec};
    for material in materials.iter().rev() {
        let alg = AlgorithmSpec::RsaesOaepSha1;
        let p = crate::import::parameters(kms, key, alg.clone(), WrappingKeySpec::Rsa2048).await;
        let wrapped = crate::import::wrap(&p.public_key, &alg, material);
        if crate::import::import(kms, key, &p.token, wrapped)
            .await
            .is_ok()
        {
            return true;
        }
    }
    false
}

async fn decrypt_one(
    kms: &aws_sdk_kms::Client,
    gateway: usize,
    ct: &model::Ciphertext,
    report: &mut Report,
) {
    let context: Option<std::collections::HashMap<String, String>> =
        (!ct.context.is_empty()).then(|| ct.context.iter().cloned().collect());
    let answer = retried(|| {
        kms.decrypt()
            .ciphertext_blob(Blob::new(ct.blob.clone()))
            .set_encryption_context(context.clone())
            .send()
    })
    .await;
    let wrong = match &answer {
        Read::Ok(out) => match out.plaintext() {
            Some(p) if p.as_ref() == ct.plaintext.as_slice() => return,
            Some(p) => format!("another plaintext ({} bytes)", p.as_ref().len()),
            None => "no plaintext".to_owned(),
        },
        Read::Refused(code) => code.clone(),
        Read::Failed(f) => f.clone(),
    };
    let mut v = format!(
        "acknowledged ciphertext of {} seq {} (request {}",
        ct.op, ct.seq, ct.request_id
    );
    let _ = write!(
        v,
        ", key {}, version {}) does not decrypt on gateway {gateway}: {wrong}",
        ct.key.as_deref().unwrap_or("?"),
        ct.key_version.map_or("?".to_owned(), |n| n.to_string())
    );
    report.violation(v);
}

/// Every Decrypt acknowledged during the run of an acknowledged
/// ciphertext answered its plaintext.
pub fn check_decrypts_in_history(ops: &[Op], model: &Model, report: &mut Report) {
    let made: BTreeMap<&[u8], &model::Ciphertext> = model
        .ciphertexts
        .iter()
        .map(|ct| (ct.blob.as_slice(), ct))
        .collect();
    let mut checked = 0;
    for op in ops {
        let (
            Call::Decrypt { ciphertext_b64, .. },
            Outcome::Ok {
                request_id, result, ..
            },
        ) = (&op.call, &op.outcome)
        else {
            continue;
        };
        let Some(ct) = b64(ciphertext_b64).and_then(|blob| made.get(blob.as_slice()).copied())
        else {
            continue;
        };
        checked += 1;
        let answered = result.plaintext_b64.as_deref().and_then(b64);
        if answered.as_deref() != Some(ct.plaintext.as_slice()) {
            report.violation(format!(
                "Decrypt seq {} (request {request_id}, gateway {}) answered {} for the ciphertext of \
                 {} seq {} (request {})",
                op.seq,
                op.gateway,
                match &answered {
                    Some(p) => format!("another plaintext ({} bytes)", p.len()),
                    None => "no plaintext".to_owned(),
                },
                ct.op,
                ct.seq,
                ct.request_id
            ));
        }
    }
    report.check(format!(
        "{checked} Decrypts acknowledged during the run of acknowledged ciphertexts gave their plaintext"
    ));
}
