//! The nemesis's checker: reads the clients' history (`history.jsonl`),
//! the audit files and the token afterwards (through every gateway), and
//! reports every way they disagree with what was acknowledged:
//!
//! * a write acknowledged and then not in effect, with no later write to
//!   explain it: each key's state, rotation setting, tags, policy and
//!   grants, and each alias, against the fold of its owner's history
//!   ([`model`]), an `Unknown` outcome counting as either;
//! * a key destroyed (NotFound, or gone from ListKeys) that was not
//!   pending deletion past its date by the test clock;
//! * an acknowledged ciphertext that no longer decrypts to its plaintext
//!   while its key exists (a disabled key is enabled for the check and
//!   disabled again; a key whose imported material was deleted gets the
//!   history's material again and loses it again afterwards);
//! * two gateways giving different answers (after the sync bound, and once
//!   more after another bound, so a deletion falling due mid-read is not
//!   a finding);
//! * a Decrypt acknowledged during the run that answered another
//!   plaintext than the acknowledged ciphertext's;
//! * more acknowledged GCM encryptions under one key version (the blob's
//!   header names it) than `gcm_usage_bound`;
//! * an acknowledged request with no audit record, a key on the token with
//!   no audited CreateKey, a destroyed key with no DeleteKey service event,
//!   more rotations than audited rotations explain, an alias with no
//!   audited CreateAlias/UpdateAlias to its target;
//! * an audit chain that `kmsgate audit verify` rejects;
//! * `kmsgate check-keys` failing.

mod audit;
mod ciphertexts;
mod gateways;
mod model;
mod observe;
mod states;
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use super::history::{self, Fault, Op};
use crate::common::Token;
use model::{Clock, Model};

/// The checker's verdict: each violation (the history's own first) naming
/// the requests involved, and each check made with its count.
#[derive(Debug, Default)]
pub struct Report {
    pub violations: Vec<String>,
    pub checks: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} violations", self.violations.len())?;
        for v in &self.violations {
            writeln!(f, "  VIOLATION: {v}")?;
        }
        for c in &self.checks {
            writeln!(f, "  check: {c}")?;
        }
        Ok(())
    }
}

impl Report {
    fn violation(&mut self, v: String) {
        self.violations.push(v);
    }
    fn check(&mut self, c: String) {
        self.checks.push(c);
    }
}

/// Checks the run in `dir` against the token behind `clients` (one per
/// gateway, all live, faults over, the sync bound waited).
pub async fn check(
    dir: &Path,
    info: &history::RunInfo,
    clients: &[aws_sdk_kms::Client],
    token: &Token,
) -> Report {
    let mut report = Report::default();
    let ops: Vec<Op> = read_lines(&dir.join("history.jsonl"), "history", &mut report);
    let faults: Vec<Fault> = read_lines(&dir.join("faults.jsonl"), "faults", &mut report);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &faults {
        *kinds.entry(f.kind.as_str()).or_default() += 1;
    }
    report.check(format!(
        "{} operations and {} faults read ({kinds:?})",
        ops.len(),
        faults.len()
    ));
    if clients.is_empty() {
        report.violation("no gateway to check against".into());
        return report;
    }

    let clock = Clock::read(&token.clock_file());
    let mut model = Model::fold(&ops, clock);
    report.violations.append(&mut model.violations);
    report.check(format!(
        "{} keys and {} aliases folded from their owners' histories (test clock +{} days; \
         {} CreateKeys of unknown outcome; {} operations on keys the history never saw created)",
        model.keys.len(),
        model.aliases.len(),
        clock.days,
        model.unknown_creates,
        model.ops_on_unknown_keys
    ));

    ciphertexts::check_gcm_uses(&model, info, &mut report);
    ciphertexts::check_decrypts_in_history(&ops, &model, &mut report);

    let snaps = gateways::settled_snapshots(&model, info, clients, &mut report).await;
    states::check_states(&model, &snaps[0], clock, &mut report);
    let kills = faults
        .iter()
        .filter(|f| f.kind == "kill-worker" || f.kind == "kill-supervisor")
        .count();
    audit::check_audit(info, &ops, &model, &snaps, kills, &mut report);
    ciphertexts::check_ciphertexts(&model, &snaps[0], info, clients, &mut report).await;
    audit::verify_audit_chains(info, token, &mut report);
    check_keys(info, token, &mut report);
    key_objects_once_per_label(token, &mut report);
    report
}

/// Every key object on the token carries a label of its own: two with one
/// label are a write made twice (a retry after a fault), and a restart may
/// pick either, so that what one made no longer decrypts under the other.
/// Read with pkcs11-tool, so that it does not depend on the build checked.
fn key_objects_once_per_label(token: &Token, report: &mut Report) {
    let listing = crate::common::list_objects(token);
    // A key pair's halves share a label: count per kind of object.
    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    let mut kind = None;
    for line in listing.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            kind = line
                .contains("Key Object")
                .then(|| line.split(';').next().unwrap_or(line).trim().to_owned());
        } else if let Some(kind) = &kind
            && let Some(label) = line.trim().strip_prefix("label:")
        {
            *labels
                .entry(format!("{kind} {}", label.trim()))
                .or_default() += 1;
        }
    }
    let twice: Vec<_> = labels.iter().filter(|(_, n)| **n > 1).collect();
    if twice.is_empty() {
        report.check(format!(
            "{} key objects on the token, each with a label of its own",
            labels.len()
        ));
    } else {
        for (label, n) in twice {
            report.violation(format!(
                "{n} key objects labelled {label} (a write made twice: a restart may pick either)"
            ));
        }
    }
}

/// One JSON value per line; a missing file is empty, a bad line a
/// violation.
fn read_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    report: &mut Report,
) -> Vec<T> {
    let Ok(text) = std::fs::read_to_string(path) else {
        if what == "history" {
            report.violation(format!("no history at {}", path.display()));
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str(line) {
            Ok(v) => out.push(v),
            Err(e) => report.violation(format!("{what} line {} does not parse: {e}", n + 1)),
        }
    }
    out
}

/// `kmsgate check-keys` on the run's config, with the fault module's
/// environment (a nemesis token may be behind faulty-pkcs11).
fn check_keys(info: &history::RunInfo, token: &Token, report: &mut Report) {
    let out = Command::new(crate::common::kmsgate_bin())
        .env("SOFTHSM2_CONF", token.softhsm_conf())
        .env("KRYOPTIC_CONF", token.kryoptic_conf())
        .env("KMSGATE_TEST_CLOCK_OFFSET_FILE", token.clock_file())
        .envs(token.faulty_env())
        .args(["check-keys", "--config", &info.config])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            report.check(format!(
                "kmsgate check-keys clean: {}",
                stdout.lines().last().unwrap_or_default()
            ));
        }
        Ok(out) => report.violation(format!(
            "kmsgate check-keys fails ({}): {} {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => report.violation(format!("kmsgate check-keys does not run: {e}")),
    }
}
