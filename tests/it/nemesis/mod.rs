//! The nemesis: a cluster of gateways (each `serve --workers 2`) on one
//! SoftHSM2 token behind faulty-pkcs11, clients doing every kind of write
//! while a nemesis kills and stops processes, fails and stalls the token,
//! hides its directory, fills its disk and moves the test clock forward;
//! then the checker (check.rs) judges the history (history.rs) against
//! what the gateways and the token say once the faults have stopped.
//!
//! `short` is the bounded form `scripts/test` runs (about 90 s of load);
//! `long` (ignored) is what `scripts/nemesis [SECONDS] [--seed N]` runs.
//! `NEMESIS_SEED` replays a run: the same seed gives the same fault
//! schedule and the same sequence of client choices; the timing, and so
//! what each choice meets, differs (docs/testing.md, "Nemesis").
//!
//! The run's directory holds `run.json`, `history.jsonl` (sorted by `seq`
//! at the end), `faults.jsonl` and `notes.txt`; `long` keeps it (with a
//! copy of the token directory, and in `logs/` the gateways' logs,
//! faulty-pkcs11's, the config and the test clock) and prints its path,
//! `short` keeps it only when it fails (or with `NEMESIS_KEEP=1`).
//!
//! `NEMESIS_FOCUS=races` (`scripts/nemesis --focus races`) keeps the same
//! cluster, clients and checker but changes the mix so that two known
//! windows are hit often: the combined `C_CreateObject` + `C_DestroyObject`
//! device error under many CreateKey and RotateKeyOnDemand (a retried write
//! that makes a key object twice), and 7-day deletions whose date the clock
//! jumps just past while destroy calls stall, cancelled at once through
//! another gateway (the cancel-versus-destroy race). See [`Focus`].

mod check;
mod cluster;
pub(crate) mod faults;
// The runner writes every field; the checker reads only some.
#[allow(dead_code)]
pub mod history;
mod workload;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use cluster::Cluster;
use history::{Fault, Op, RunInfo};

/// The entry of a weighted table (`(choice, weight)`, weights not all 0)
/// that the random number `r` falls on.
fn weighted<K: Copy>(table: &[(K, u64)], r: u64) -> K {
    let total: u64 = table.iter().map(|(_, w)| w).sum();
    let mut x = r % total;
    for (kind, w) in table {
        if x < *w {
            return *kind;
        }
        x -= w;
    }
    table[0].0
}

/// Clients, each a tokio task owning its keys and aliases.
const CLIENTS: u32 = 5;
const GCM_USAGE_BOUND: u64 = 10;
const SYNC_INTERVAL_MS: u64 = 200;
const SCHEDULER_INTERVAL_MS: u64 = 300;
/// After this long without faults every gateway gives the same answer
/// (several sync and scheduler rounds, on a loaded machine).
const SYNC_BOUND_MS: u64 = 5_000;

/// What the clients and the nemesis write down, as they go.
pub struct Recorder {
    started: Instant,
    seq: AtomicU64,
    history: Mutex<std::fs::File>,
    faults: Mutex<std::fs::File>,
    ops: Mutex<BTreeMap<(String, String), u64>>,
    fault_kinds: Mutex<BTreeMap<String, u64>>,
}

impl Recorder {
    fn new(dir: &Path) -> Recorder {
        let open = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        Recorder {
            started: Instant::now(),
            seq: AtomicU64::new(0),
            history: Mutex::new(open("history.jsonl")),
            faults: Mutex::new(open("faults.jsonl")),
            ops: Mutex::new(BTreeMap::new()),
            fault_kinds: Mutex::new(BTreeMap::new()),
        }
    }

    /// Milliseconds since the run began.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst)
    }

    pub fn op(&self, op: &Op) {
        let line = serde_json::to_string(op).unwrap();
        writeln!(self.history.lock().unwrap(), "{line}").unwrap();
        let value = serde_json::to_value(op).unwrap();
        let name = value["call"]["op"].as_str().unwrap_or("?").to_owned();
        let outcome = match &op.outcome {
            history::Outcome::Ok { .. } => "Ok".to_owned(),
            history::Outcome::Err { code, .. } => code.clone(),
            history::Outcome::Unknown { .. } => "Unknown".to_owned(),
        };
        *self.ops.lock().unwrap().entry((name, outcome)).or_default() += 1;
    }

    pub fn fault(&self, fault: &Fault) {
        let line = serde_json::to_string(fault).unwrap();
        writeln!(self.faults.lock().unwrap(), "{line}").unwrap();
        *self
            .fault_kinds
            .lock()
            .unwrap()
            .entry(fault.kind.clone())
            .or_default() += 1;
    }
}

/// What the clients and the nemesis share.
pub struct Run {
    pub cluster: Arc<Cluster>,
    pub rec: Recorder,
    /// The test clock's offset in days (forward only).
    pub clock_days: AtomicU64,
    /// Which mix the clients and the nemesis use.
    pub focus: Focus,
    /// Focus mode: when (ms since the run began) the nemesis's next
    /// `deletion-due` clock jump lands, 0 if none is announced.
    pub jump_at_ms: AtomicU64,
    stop: AtomicBool,
    notes: Mutex<Vec<String>>,
}

impl Run {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// A line for notes.txt and the summary (a fault not run, and why).
    pub fn note(&self, line: String) {
        eprintln!("nemesis: {line}");
        self.notes.lock().unwrap().push(line);
    }
}

/// The mix of operations and faults (`NEMESIS_FOCUS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    /// Every kind of write and fault (workload.rs, faults.rs tables).
    All,
    /// `races`: many CreateKey, RotateKeyOnDemand and 7-day deletions,
    /// cancels sent at once when the clock passes a deletion date, to
    /// another gateway than the one that scheduled it; mostly the
    /// combined create-then-destroy device error, clock jumps landing on
    /// deletion dates while destroy calls stall, and kills.
    Races,
}

fn focus_from_env() -> Focus {
    match std::env::var("NEMESIS_FOCUS") {
        Ok(s) if s == "races" => Focus::Races,
        Ok(s) if s.is_empty() || s == "all" => Focus::All,
        Ok(s) => panic!("NEMESIS_FOCUS={s}: races or all"),
        Err(_) => Focus::All,
    }
}

struct Settings {
    seconds: u64,
    seed: u64,
    gateways: u32,
    /// The token directory's tmpfs, for the full-disk fault.
    disk_kib: u64,
    /// Keep the run's directory even when the run passes.
    keep: bool,
    faults: bool,
    focus: Focus,
}

fn seed_from_env() -> u64 {
    match std::env::var("NEMESIS_SEED") {
        Ok(s) if !s.is_empty() => s
            .parse()
            .unwrap_or_else(|_| panic!("NEMESIS_SEED={s}: a number")),
        _ => rand::rng().random(),
    }
}

fn seconds_from_env(default: u64) -> u64 {
    std::env::var("NEMESIS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The short form: about 90 s of load under faults, two gateways.
#[test]
fn short() {
    run(Settings {
        seconds: seconds_from_env(90),
        seed: seed_from_env(),
        gateways: 2,
        disk_kib: 32 * 1024,
        keep: std::env::var("NEMESIS_KEEP").is_ok(),
        faults: std::env::var("NEMESIS_NO_FAULTS").is_err(),
        focus: Focus::All,
    });
}

/// The long form, run by `scripts/nemesis`: three gateways, the run's
/// directory kept.
#[test]
#[ignore = "long: scripts/nemesis runs it"]
fn long() {
    run(Settings {
        seconds: seconds_from_env(300),
        seed: seed_from_env(),
        gateways: 3,
        disk_kib: 128 * 1024,
        keep: true,
        faults: std::env::var("NEMESIS_NO_FAULTS").is_err(),
        focus: focus_from_env(),
    });
}

fn run_dir(seed: u64) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("nemesis")
        .join(format!("run-{stamp}-seed-{seed}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(s: Settings) {
    eprintln!(
        "nemesis: seed {} ({} s, {} gateways, focus {:?}; replay with NEMESIS_SEED={})",
        s.seed, s.seconds, s.gateways, s.focus, s.seed
    );
    let dir = run_dir(s.seed);
    eprintln!("nemesis: seed {}, run directory {}", s.seed, dir.display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let passed = runtime.block_on(run_async(&s, &dir));
    eprintln!("nemesis: seed {}, run directory {}", s.seed, dir.display());
    if passed.is_ok() && !s.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let Err(report) = passed {
        panic!(
            "nemesis seed {}: the checker found violations (run directory {}):\n{report}",
            s.seed,
            dir.display()
        );
    }
}

async fn run_async(s: &Settings, dir: &Path) -> Result<(), String> {
    let config = cluster::keys_config(GCM_USAGE_BOUND, SYNC_INTERVAL_MS, SCHEDULER_INTERVAL_MS);
    let (gateways, disk_kib) = (s.gateways, s.disk_kib);
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&config, gateways, disk_kib))
        .await
        .unwrap();
    let cluster = Arc::new(cluster);
    let run = Arc::new(Run {
        cluster: cluster.clone(),
        rec: Recorder::new(dir),
        clock_days: AtomicU64::new(0),
        focus: s.focus,
        jump_at_ms: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        notes: Mutex::new(Vec::new()),
    });
    if s.focus != Focus::All {
        run.note(format!(
            "focus {:?}: the mix of NEMESIS_FOCUS (mod.rs, Focus)",
            s.focus
        ));
    }
    if let Some(e) = &cluster.disk_error {
        run.note(format!(
            "disk-full not run: the token directory's tmpfs did not mount: {}",
            e.trim()
        ));
    }

    // One generator for the nemesis and one per client, all from the seed.
    let mut root = StdRng::seed_from_u64(s.seed);
    let nemesis_seed: u64 = root.random();
    let client_seeds: Vec<u64> = (0..CLIENTS).map(|_| root.random()).collect();
    let mut clients = Vec::new();
    for (id, seed) in client_seeds.into_iter().enumerate() {
        clients.push(tokio::spawn(workload::client(id as u32, seed, run.clone())));
    }
    let end_ms = s.seconds * 1000;
    let nemesis = if s.faults {
        Some(tokio::spawn(faults::nemesis(
            nemesis_seed,
            run.clone(),
            end_ms,
        )))
    } else {
        None
    };
    while run.rec.now_ms() < end_ms {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(n) = nemesis {
        n.await.unwrap();
    }
    run.stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    // Every fault ends; every gateway is up; the sync bound passes.
    {
        let run = run.clone();
        tokio::task::spawn_blocking(move || faults::stop_all(&run))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(SYNC_BOUND_MS)).await;

    let info = RunInfo {
        seed: s.seed,
        seconds: s.seconds,
        gateways: s.gateways,
        workers_per_gateway: 2,
        gcm_usage_bound: GCM_USAGE_BOUND,
        sync_bound_ms: SYNC_BOUND_MS,
        token_dir: cluster.token.path().join("tokens").display().to_string(),
        audit_files: (0..cluster.gateways())
            .map(|g| cluster.audit_path(g).display().to_string())
            .collect(),
        config: cluster.token.config().display().to_string(),
    };
    finish_files(dir, &info, &run);
    let clients = cluster.fresh_clients();
    let report = check::check(dir, &info, &clients, &cluster.token).await;

    let ops = run.rec.ops.lock().unwrap().clone();
    let faults = run.rec.fault_kinds.lock().unwrap().clone();
    let mut summary = format!(
        "nemesis: seed {} (focus {:?})\nfaults done:\n",
        s.seed, s.focus
    );
    for (kind, n) in &faults {
        summary.push_str(&format!("  {kind}: {n}\n"));
    }
    summary.push_str("operations done (operation, outcome: count):\n");
    for ((op, outcome), n) in &ops {
        summary.push_str(&format!("  {op}, {outcome}: {n}\n"));
    }
    summary.push_str(&format!("checks made: {}\n", report.checks.len()));
    for c in &report.checks {
        summary.push_str(&format!("  {c}\n"));
    }
    for n in run.notes.lock().unwrap().iter() {
        summary.push_str(&format!("note: {n}\n"));
    }
    eprintln!("{summary}");

    // What the runner itself saw go wrong (a gateway that would not start
    // again) counts as much as what the checker finds.
    let mut violations = report.violations;
    violations.extend(
        run.notes
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n.starts_with("FINDING"))
            .map(|n| format!("runner: {n}")),
    );
    if s.keep || !violations.is_empty() {
        // The logs and the token, for a look afterwards (the temp dir
        // goes with the test).
        let logs = dir.join("logs");
        let _ = std::fs::create_dir_all(&logs);
        for log in cluster.logs() {
            if let Some(name) = log.file_name() {
                let _ = std::fs::copy(&log, logs.join(name));
            }
        }
        let _ = std::fs::copy(cluster.token.faults().log_file(), logs.join("faults.log"));
        for name in ["kmsgate.toml", "softhsm2.conf", "clock-offset"] {
            let _ = std::fs::copy(cluster.token.path().join(name), logs.join(name));
        }
        cluster::copy_dir(&cluster.token.path().join("tokens"), &dir.join("token"));
    }
    let cluster = run.cluster.clone();
    drop(run);
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations.join("\n"))
    }
}

/// run.json, notes.txt, and history.jsonl sorted by `seq` (the clients
/// write each operation when it ends).
fn finish_files(dir: &Path, info: &RunInfo, run: &Run) {
    std::fs::write(
        dir.join("run.json"),
        serde_json::to_string_pretty(info).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), run.notes.lock().unwrap().join("\n")).unwrap();
    let path = dir.join("history.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut ops: Vec<Op> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    ops.sort_by_key(|o| o.seq);
    let mut out = String::new();
    for op in &ops {
        out.push_str(&serde_json::to_string(op).unwrap());
        out.push('\n');
    }
    std::fs::write(&path, out).unwrap();
}
