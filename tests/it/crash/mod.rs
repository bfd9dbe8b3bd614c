//! Crash safety under load: the gateway is killed with SIGKILL at random
//! moments while CreateKey, CreateAlias/UpdateAlias, RotateKeyOnDemand,
//! ScheduleKeyDeletion and GenerateDataKey requests are in flight, then
//! restarted on the same token, many times over. A model of everything the
//! gateway acknowledged (HTTP 200) persists across the crashes; after each
//! restart the token must still hold all of it, must show no half-made key,
//! every recorded ciphertext must still decrypt, and `kmsgate check-keys`
//! (run while the gateway is down) must be clean.
//!
//! A request that was in flight at the kill was not acknowledged: it may or
//! may not have landed. The model records each such attempt and allows
//! exactly those outcomes; after the check the observed outcome becomes the
//! model's, so every later round holds it strictly.
//!
//! `KMSGATE_CRASH_ITERATIONS` (default 50) sets the number of crashes,
//! `KMSGATE_CRASH_SEED` replays the random choices (kill moments, targets) of
//! an earlier run; the seed is printed at the start.
//!
//! This module holds the model of what was acknowledged and the test
//! itself; `load` drives the traffic and the kill, `verify` checks the
//! token after each restart against the model.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState, RotationType};

mod load;
mod verify;

use load::load_and_kill;
use verify::{check_keys, verify};

const CONFIG: &str = "[keys]\nmax_on_demand_rotations = 100000\n";
/// Ciphertexts kept for verification: the newest ones.
const SAMPLE: usize = 200;
/// Per-round caps on the slow, token-growing writes, so the token (and so the
/// verification of every key after every restart) stays small. Each writer
/// spreads its writes over the round with random pauses of up to
/// `WRITE_PAUSE_MS`, so that the kill finds some of them in flight.
const CREATES_PER_ROUND: usize = 4;
const DOOMED_PER_ROUND: usize = 2;
const ROTATIONS_PER_ROUND: usize = 6;
const WRITE_PAUSE_MS: u64 = 30;
const ALIASES: usize = 6;
/// Keys created before the first round, so every task has targets at once.
const SEED_KEYS: usize = 3;
/// The longest any single request of the verification may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- randomness

/// xorshift64*: enough for kill moments and target choices, and replayable.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-enough in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[(self.next() % items.len() as u64) as usize])
        }
    }
    fn fork(&mut self) -> Rng {
        Rng::new(self.next())
    }
}

// ---------------------------------------------------------------- the model

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// Target of aliases, rotations and data keys; never deleted.
    Work,
    /// Created to be scheduled for deletion.
    Doomed,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Deletion {
    No,
    /// ScheduleKeyDeletion sent, not acknowledged.
    Maybe,
    /// ScheduleKeyDeletion acknowledged.
    Yes,
}

#[derive(Debug)]
struct KeyModel {
    kind: Kind,
    deletion: Deletion,
    /// Acknowledged on-demand rotations.
    rotations: usize,
    /// On-demand rotations sent but not acknowledged.
    rotations_in_flight: usize,
}

#[derive(Debug, Default)]
struct AliasModel {
    /// The last acknowledged target; None while the alias's creation was not
    /// acknowledged (it may not exist).
    target: Option<String>,
    /// Targets of writes sent but not acknowledged.
    in_flight: Vec<String>,
}

#[derive(Clone)]
struct Sample {
    blob: Blob,
    context: HashMap<String, String>,
    plaintext: Vec<u8>,
    key_id: String,
}

#[derive(Default)]
struct Model {
    keys: BTreeMap<String, KeyModel>,
    /// CreateKey requests sent but not acknowledged since the last check.
    creates_in_flight: usize,
    aliases: BTreeMap<String, AliasModel>,
    samples: VecDeque<Sample>,
    /// Errors answered while the gateway was still alive: none are expected.
    errors_before_kill: Vec<String>,
    /// Acknowledged writes over the whole run.
    acked: Counts,
    /// Per operation: acknowledged requests, total and longest time to the
    /// answer (ms).
    latency: BTreeMap<&'static str, (usize, u128, u128)>,
}

#[derive(Default, Clone, Copy, Debug)]
struct Counts {
    creates: usize,
    alias_writes: usize,
    rotations: usize,
    deletions: usize,
    data_keys: usize,
}

impl Model {
    fn work_keys(&self) -> Vec<String> {
        self.keys
            .iter()
            .filter(|(_, k)| k.kind == Kind::Work && k.deletion == Deletion::No)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

type Shared = Arc<Mutex<Model>>;

fn note_latency(model: &Shared, op: &'static str, sent: Instant) {
    let ms = sent.elapsed().as_millis();
    let mut m = lock(model);
    let e = m.latency.entry(op).or_default();
    e.0 += 1;
    e.1 += ms;
    e.2 = e.2.max(ms);
}

fn lock(model: &Shared) -> std::sync::MutexGuard<'_, Model> {
    model.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records an error of a load request. After the kill every error is the
/// crash's (and the write's fate is unknown); before it, none is expected.
fn note_error<E: std::fmt::Debug>(model: &Shared, killed: &AtomicBool, op: &str, e: &E) {
    if !killed.load(Ordering::SeqCst) {
        lock(model).errors_before_kill.push(format!("{op}: {e:?}"));
    }
}

// ---------------------------------------------------------------- the checks

#[derive(Default)]
struct Checks {
    keys_described: AtomicUsize,
    pending_deletion: AtomicUsize,
    aliases: AtomicUsize,
    rotated_keys: AtomicUsize,
    rotations_listed: AtomicUsize,
    ciphertexts: AtomicUsize,
    data_keys: AtomicUsize,
    check_keys_runs: AtomicUsize,
    versions_checked: AtomicUsize,
    /// Writes unanswered at a kill, and how many of them had landed.
    unanswered: [AtomicUsize; 4],
    landed: [AtomicUsize; 4],
    /// The most orphan key objects check-keys listed.
    orphans: AtomicUsize,
}

/// Indexes of `Checks::unanswered` and `Checks::landed`.
const CREATE: usize = 0;
const ALIAS: usize = 1;
const ROTATION: usize = 2;
const DELETION: usize = 3;

impl Checks {
    fn add(c: &AtomicUsize, n: usize) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    fn get(c: &AtomicUsize) -> usize {
        c.load(Ordering::Relaxed)
    }
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(REQUEST_LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {REQUEST_LIMIT:?}"))
}

// ---------------------------------------------------------------- the test

#[tokio::test]
async fn acknowledged_writes_survive_sigkill_under_load() {
    let iterations: usize = std::env::var("KMSGATE_CRASH_ITERATIONS")
        .ok()
        .map(|v| v.parse().expect("KMSGATE_CRASH_ITERATIONS is a number"))
        .unwrap_or(50);
    let seed: u64 = std::env::var("KMSGATE_CRASH_SEED")
        .ok()
        .map(|v| v.parse().expect("KMSGATE_CRASH_SEED is a number"))
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash: {iterations} iterations, KMSGATE_CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let model: Shared = Arc::default();
    let checks = Arc::new(Checks::default());
    let mut segfaults = Vec::new();

    let token = Token::with_config(CONFIG);
    let mut gw = Gateway::start_on(token);
    let kms = gw.client();
    for _ in 0..SEED_KEYS {
        let id = within("CreateKey", create_key(&kms)).await;
        lock(&model).keys.insert(
            id,
            KeyModel {
                kind: Kind::Work,
                deletion: Deletion::No,
                rotations: 0,
                rotations_in_flight: 0,
            },
        );
    }

    for round in 1..=iterations {
        let kill_after = Duration::from_millis(rng.range(30, 300));
        let token = load_and_kill(gw, &model, &mut rng, round, kill_after).await;
        let errors = std::mem::take(&mut lock(&model).errors_before_kill);
        assert!(
            errors.is_empty(),
            "round {round}: requests failed while the gateway was up:\n{}",
            errors.join("\n")
        );
        check_keys(&token, &model, &checks, round, &mut segfaults);
        gw = Gateway::start_on(token);
        verify(&gw, &model, &checks, round).await;
        if round % 10 == 0 || round == iterations {
            let m = lock(&model);
            println!(
                "crash: round {round} done after {:.1} s: {} keys, {} aliases, {} samples",
                started.elapsed().as_secs_f64(),
                m.keys.len(),
                m.aliases.len(),
                m.samples.len()
            );
        }
    }
    drop(gw);

    let m = lock(&model);
    let a = m.acked;
    let c = &checks;
    assert!(
        iterations == 0 || Checks::get(&c.ciphertexts) > 0,
        "no ciphertext was ever checked: the load did nothing"
    );
    if iterations >= 20 {
        // Otherwise the run proved little: every kind of write must have been
        // both acknowledged and caught in flight by a kill at least once.
        for (what, acked) in [
            ("CreateKey", a.creates),
            ("alias write", a.alias_writes),
            ("RotateKeyOnDemand", a.rotations),
            ("ScheduleKeyDeletion", a.deletions),
        ] {
            assert!(
                acked > 0,
                "no {what} was acknowledged in {iterations} rounds"
            );
        }
        for (what, i) in [
            ("CreateKey", CREATE),
            ("alias write", ALIAS),
            ("RotateKeyOnDemand", ROTATION),
            ("ScheduleKeyDeletion", DELETION),
        ] {
            assert!(
                Checks::get(&c.unanswered[i]) > 0,
                "no {what} was in flight at any of {iterations} kills"
            );
        }
    }
    println!(
        "crash summary: {iterations} iterations (SIGKILL + restart) in {:.1} s; acknowledged: {} CreateKey, {} alias writes, {} RotateKeyOnDemand, {} ScheduleKeyDeletion, {} GenerateDataKey; \
         checked: {} key descriptions ({} pending deletion), {} GenerateDataKey on Enabled keys, {} alias resolutions, {} rotated-key listings ({} on-demand rotations), {} ciphertexts decrypted, {} check-keys runs ({} key versions); \
         unanswered at a kill (landed): {} CreateKey ({}), {} alias writes ({}), {} rotations ({}), {} ScheduleKeyDeletion ({}); at most {} orphan key objects; final: {} keys, {} aliases",
        started.elapsed().as_secs_f64(),
        a.creates,
        a.alias_writes,
        a.rotations,
        a.deletions,
        a.data_keys,
        Checks::get(&c.keys_described),
        Checks::get(&c.pending_deletion),
        Checks::get(&c.data_keys),
        Checks::get(&c.aliases),
        Checks::get(&c.rotated_keys),
        Checks::get(&c.rotations_listed),
        Checks::get(&c.ciphertexts),
        Checks::get(&c.check_keys_runs),
        Checks::get(&c.versions_checked),
        Checks::get(&c.unanswered[CREATE]),
        Checks::get(&c.landed[CREATE]),
        Checks::get(&c.unanswered[ALIAS]),
        Checks::get(&c.landed[ALIAS]),
        Checks::get(&c.unanswered[ROTATION]),
        Checks::get(&c.landed[ROTATION]),
        Checks::get(&c.unanswered[DELETION]),
        Checks::get(&c.landed[DELETION]),
        Checks::get(&c.orphans),
        m.keys.len(),
        m.aliases.len(),
    );
    for (op, (n, total, max)) in &m.latency {
        println!(
            "crash latency: {op}: {n} acknowledged, mean {} ms, max {max} ms",
            total / (*n as u128).max(1)
        );
    }
    // See check_keys.
    assert!(
        segfaults.is_empty(),
        "kmsgate check-keys died of a signal after a clean report in {} of {iterations} runs:\n{}",
        segfaults.len(),
        segfaults.join("\n")
    );
}
