//! Every gateway must answer alike once the sync bound has passed.

use std::collections::BTreeSet;
use std::time::Duration;

use super::super::history;
use super::Report;
use super::model::Model;
use super::observe::{self, Read, Snapshot, snapshot};

/// Every gateway's snapshot, compared with the first's. A difference is
/// read again after one more sync bound (a deletion or a scheduled
/// rotation may fall due between two gateways' reads); what still differs
/// then is a violation.
pub async fn settled_snapshots(
    model: &Model,
    info: &history::RunInfo,
    clients: &[aws_sdk_kms::Client],
    report: &mut Report,
) -> Vec<Snapshot> {
    let mut keys: BTreeSet<String> = model.keys.keys().cloned().collect();
    for kms in clients {
        if let Read::Ok(listed) = observe::list_keys(kms, &mut 0).await {
            keys.extend(listed);
        }
    }
    let mut snaps = Vec::new();
    for kms in clients {
        snaps.push(snapshot(kms, &keys).await);
    }
    let mut diffs = differences(&snaps);
    if !diffs.is_empty() {
        tokio::time::sleep(Duration::from_millis(info.sync_bound_ms.max(1000))).await;
        snaps.clear();
        for kms in clients {
            snaps.push(snapshot(kms, &keys).await);
        }
        diffs = differences(&snaps);
    }
    for d in diffs {
        report.violation(d);
    }
    let requests: usize = snaps.iter().map(|s| s.requests).sum();
    report.check(format!(
        "{} gateways' answers compared for {} keys, their key lists and aliases ({requests} reads)",
        clients.len(),
        keys.len()
    ));
    snaps
}

pub fn differences(snaps: &[Snapshot]) -> Vec<String> {
    let mut out = Vec::new();
    let first = &snaps[0];
    for (g, s) in snaps.iter().enumerate().skip(1) {
        if s.listed != first.listed {
            out.push(format!(
                "ListKeys differs: gateway 0 {:?}, gateway {g} {:?}",
                first.listed, s.listed
            ));
        }
        if s.aliases != first.aliases {
            out.push(format!(
                "ListAliases differs: gateway 0 {:?}, gateway {g} {:?}",
                first.aliases, s.aliases
            ));
        }
        for (key, view) in &first.keys {
            if s.keys.get(key) != Some(view) {
                out.push(format!(
                    "key {key} differs: gateway 0 {view:?}, gateway {g} {:?}",
                    s.keys.get(key)
                ));
            }
        }
    }
    out
}
