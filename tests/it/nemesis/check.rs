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
//! * more acknowledged GCM encryptions under one key version (the blob's
//!   header names it) than `gcm_usage_bound`;
//! * an acknowledged request with no audit record, a key on the token with
//!   no audited CreateKey, a destroyed key with no DeleteKey service event,
//!   more rotations than audited rotations explain, an alias with no
//!   audited CreateAlias/UpdateAlias to its target;
//! * an audit chain that `kmsgate audit verify` rejects;

mod audit;
mod ciphertexts;
mod model;
mod observe;
mod states;
mod tests;

use std::collections::BTreeMap;
use std::path::Path;

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

    // What gateway 0 answers now.
    let keys = model.keys.keys().cloned().collect();
    let snaps = [observe::snapshot(&clients[0], &keys).await];
    states::check_states(&model, &snaps[0], clock, &mut report);
    audit::check_audit(info, &ops, &model, &snaps, &mut report);
    ciphertexts::check_ciphertexts(&model, &snaps[0], info, clients, &mut report).await;
    audit::verify_audit_chains(info, token, &mut report);
    report
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
