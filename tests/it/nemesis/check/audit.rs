//! The audit trail as the checker reads it: every configured path `P`
//! stands for the chains written under it (`P` itself, or a worker's
//! `P.wN`), each with its rotated files (`….000001` or
//! `….20261207T181500Z-000001`, ...) before it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::super::history::{self, Op, Outcome};
use super::Report;
use super::model::{Model, key_id_of, op_name};
use super::observe::{Read, Snapshot};
use crate::common::Token;

/// The chains under `path`, each as its files oldest first.
pub fn chains(path: &Path) -> Vec<Vec<PathBuf>> {
    let (Some(dir), Some(stem)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n == stem || n.starts_with(&format!("{stem}.")))
                .collect()
        })
        .unwrap_or_default();
    // `….000001` (before names carried the time) or
    // `….20261207T181500Z-000001`; either way they sort in chain order.
    let rotated = |n: &str| {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        n.rsplit_once('.').is_some_and(|(_, tail)| {
            (tail.len() == 6 && digits(tail))
                || tail.split_once('-').is_some_and(|(stamp, n)| {
                    stamp.len() == 16 && stamp.ends_with('Z') && n.len() == 6 && digits(n)
                })
        })
    };
    // A chain's newest file: P, or P.wN (not a rotated file).
    let mut bases: Vec<&String> = names
        .iter()
        .filter(|n| {
            !rotated(n)
                && (n.as_str() == stem
                    || n[stem.len() + 1..]
                        .strip_prefix('w')
                        .is_some_and(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit())))
        })
        .collect();
    bases.sort();
    bases
        .into_iter()
        .map(|base| {
            let mut files: Vec<&String> = names
                .iter()
                .filter(|n| {
                    rotated(n)
                        && n.rsplit_once('.')
                            .is_some_and(|(head, _)| head == base.as_str())
                })
                .collect();
            files.sort();
            files.push(base);
            files.into_iter().map(|n| dir.join(n)).collect()
        })
        .collect()
}

/// The records of a trail.
#[derive(Debug, Default)]
pub struct Trail {
    /// Request id -> (eventName, httpStatus).
    pub requests: BTreeMap<String, (String, u64)>,
    /// Key id -> CreateKey answered 200.
    pub created: BTreeMap<String, String>,
    /// Key id -> RotateKeyOnDemand answered 200 or 5xx (count).
    pub rotated_on_demand: BTreeMap<String, usize>,
    /// (eventName, key id) -> count of service events.
    pub service: BTreeMap<(String, String), usize>,
    /// Alias name -> the target keys of its CreateAlias/UpdateAlias
    /// answered 200 or 5xx.
    pub alias_targets: BTreeMap<String, Vec<String>>,
    pub records: usize,
    pub files: usize,
    /// CreateKey records answered 5xx (the key may stand; its id is not
    /// in the record).
    pub create_key_5xx: usize,
}

fn key_of_arn(v: &Value) -> Option<String> {
    v.as_str().and_then(key_id_of)
}

impl Trail {
    pub fn read(chains: &[Vec<PathBuf>]) -> Trail {
        let mut t = Trail::default();
        for file in chains.iter().flatten() {
            t.files += 1;
            let text = std::fs::read_to_string(file).unwrap_or_default();
            for line in text.lines() {
                let Ok(r) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                t.records += 1;
                let name = r["eventName"].as_str().unwrap_or_default().to_owned();
                if r["eventType"] == "AwsServiceEvent" {
                    if let Some(key) = r["serviceEventDetails"]["keyId"].as_str() {
                        *t.service.entry((name, key.to_owned())).or_default() += 1;
                    }
                    continue;
                }
                let status = r["httpStatus"].as_u64().unwrap_or(0);
                if let Some(id) = r["requestID"].as_str() {
                    t.requests.insert(id.to_owned(), (name.clone(), status));
                }
                // A 5xx answer may have taken effect (a commit whose outcome
                // stayed open, say): its record is the change's evidence.
                if status != 200 && status < 500 {
                    continue;
                }
                if name == "CreateKey" && status >= 500 {
                    t.create_key_5xx += 1;
                }
                match name.as_str() {
                    "CreateKey" => {
                        if let Some(key) = r["responseElements"]["keyMetadata"]["keyId"].as_str() {
                            t.created.insert(
                                key.to_owned(),
                                r["requestID"].as_str().unwrap_or_default().to_owned(),
                            );
                        }
                    }
                    "RotateKeyOnDemand" => {
                        if let Some(key) = key_of_arn(&r["resources"][0]["ARN"]) {
                            *t.rotated_on_demand.entry(key).or_default() += 1;
                        }
                    }
                    "CreateAlias" | "UpdateAlias" => {
                        if let (Some(alias), Some(key)) = (
                            r["requestParameters"]["aliasName"].as_str(),
                            r["requestParameters"]["targetKeyId"]
                                .as_str()
                                .and_then(key_id_of),
                        ) {
                            t.alias_targets
                                .entry(alias.to_owned())
                                .or_default()
                                .push(key);
                        }
                    }
                    _ => {}
                }
            }
        }
        t
    }

    pub fn service_events(&self, name: &str, key: &str) -> usize {
        self.service
            .get(&(name.to_owned(), key.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

/// Audit paths' chains and what they hold against the history and the
/// token.
pub fn check_audit(
    info: &history::RunInfo,
    ops: &[Op],
    model: &Model,
    snaps: &[Snapshot],
    kills: usize,
    report: &mut Report,
) {
    if info.audit_files.is_empty() {
        report.violation("the run has no audit files (RunInfo.audit_files is empty)".into());
        return;
    }
    let chains: Vec<_> = info
        .audit_files
        .iter()
        .flat_map(|p| chains(Path::new(p)))
        .collect();
    let trail = Trail::read(&chains);
    if trail.records == 0 {
        report.violation(format!("no audit records under {:?}", info.audit_files));
        return;
    }

    let mut acked = 0;
    for op in ops {
        let Outcome::Ok { request_id, .. } = &op.outcome else {
            continue;
        };
        acked += 1;
        let name = op_name(&op.call);
        match trail.requests.get(request_id) {
            None => report.violation(format!(
                "acknowledged {name} seq {} (request {request_id}, gateway {}) has no audit record",
                op.seq, op.gateway
            )),
            Some((audited, status)) if *audited != name || *status != 200 => {
                report.violation(format!(
                    "acknowledged {name} seq {} (request {request_id}) is audited as {audited} \
                     with status {status}",
                    op.seq
                ))
            }
            Some(_) => {}
        }
    }

    // Token changes: every key there was created by an audited request;
    // every key gone was destroyed by an audited service event; every
    // rotation is an audited request or service event. One known gap is
    // allowed, and counted: a gateway process SIGKILLed between a token
    // write and its record (DESIGN 22 covers hang-ups and shutdown, not a
    // killed process), at most one change per kill; and a key whose
    // CreateKey answered 5xx (its record could be neither confirmed nor
    // removed, so the key stands) has a record without its key id.
    let mut unaudited: Vec<String> = Vec::new();
    let mut on_token: BTreeSet<&String> = BTreeSet::new();
    for s in snaps {
        if let Read::Ok(listed) = &s.listed {
            on_token.extend(listed);
        }
    }
    for key in &on_token {
        if !trail.created.contains_key(*key) {
            unaudited.push(format!(
                "key {key} is on the token but no audited CreateKey made it"
            ));
        }
    }
    let snap = &snaps[0];
    let mut destroyed = 0;
    for key in model.keys.keys().filter(|k| snap.gone(k)) {
        destroyed += 1;
        if trail.service_events("DeleteKey", key) == 0 {
            unaudited.push(format!(
                "key {key} was destroyed but the audit trail has no DeleteKey service event for it"
            ));
        }
    }
    let mut rotations = 0;
    for (key, view) in &snap.keys {
        if let Some(Read::Ok(n)) = view.rotations {
            rotations += n;
            let explained = trail.rotated_on_demand.get(key).copied().unwrap_or(0)
                + trail.service_events("RotateKey", key);
            for _ in explained..n {
                unaudited.push(format!(
                    "key {key} has {n} rotations but the audit trail explains {explained} \
                     (RotateKeyOnDemand answered 200 or 5xx, RotateKey service events)"
                ));
            }
        }
    }
    let mut aliases = 0;
    if let Read::Ok(seen) = &snap.aliases {
        for (name, target) in seen.iter().filter(|(n, _)| !n.starts_with("alias/aws/")) {
            aliases += 1;
            let target = target.as_deref().and_then(key_id_of);
            let audited = trail.alias_targets.get(name);
            if !target
                .as_ref()
                .is_some_and(|t| audited.is_some_and(|a| a.contains(t)))
            {
                unaudited.push(format!(
                    "alias {name} names {target:?} but no audited CreateAlias or UpdateAlias set that \
                     (audited targets {audited:?})"
                ));
            }
        }
    }
    let allowance = kills + trail.create_key_5xx;
    if unaudited.len() > allowance {
        for u in &unaudited {
            report.violation(format!(
                "{u} ({} such token changes, more than the {allowance} that {kills} SIGKILLs of \
                 gateway processes and {} CreateKeys answered 5xx explain)",
                unaudited.len(),
                trail.create_key_5xx
            ));
        }
    } else {
        report.check(format!(
            "{} token changes without an audit record of their own, within the {allowance} that \
             {kills} SIGKILLs of gateway processes and {} CreateKeys answered 5xx explain{}",
            unaudited.len(),
            trail.create_key_5xx,
            unaudited
                .first()
                .map(|u| format!(" (the first: {u})"))
                .unwrap_or_default()
        ));
    }
    report.check(format!(
        "{acked} acknowledged requests looked up in {} audit records ({} files, {} chains); {} keys \
         on the token, {destroyed} destroyed, {rotations} rotations and {aliases} aliases matched to \
         audited requests and service events",
        trail.records,
        trail.files,
        chains.len(),
        on_token.len()
    ));
}

/// `kmsgate audit verify` on each chain.
pub fn verify_audit_chains(info: &history::RunInfo, token: &Token, report: &mut Report) {
    let mut verified = 0;
    for path in &info.audit_files {
        let chains = chains(Path::new(path));
        if chains.is_empty() {
            report.violation(format!("no audit file at {path}"));
        }
        for files in chains {
            let mut args = vec!["audit".to_owned(), "verify".to_owned()];
            args.extend(files.iter().map(|f| f.display().to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (ok, stdout, stderr) = token.run_cli(&args);
            verified += 1;
            if !ok {
                report.violation(format!(
                    "kmsgate audit verify {files:?} fails: {}{}",
                    stdout.trim(),
                    stderr.trim()
                ));
            }
        }
    }
    report.check(format!("{verified} audit chains verified"));
}
