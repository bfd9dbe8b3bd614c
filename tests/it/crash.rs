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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState, RotationType};

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

// ---------------------------------------------------------------- the load

struct Load {
    kms: aws_sdk_kms::Client,
    model: Shared,
    killed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    round: usize,
}

impl Load {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }

    async fn pause(rng: &mut Rng, max_ms: u64) {
        tokio::time::sleep(Duration::from_millis(rng.range(0, max_ms))).await;
    }

    async fn create_keys(self, mut rng: Rng) {
        for _ in 0..CREATES_PER_ROUND {
            Self::pause(&mut rng, WRITE_PAUSE_MS).await;
            if !self.running() {
                return;
            }
            lock(&self.model).creates_in_flight += 1;
            let sent = Instant::now();
            match self.kms.create_key().description("crash work").send().await {
                Ok(out) => {
                    note_latency(&self.model, "CreateKey", sent);
                    let id = out.key_metadata.unwrap().key_id;
                    let mut m = lock(&self.model);
                    m.creates_in_flight -= 1;
                    m.acked.creates += 1;
                    m.keys.insert(
                        id,
                        KeyModel {
                            kind: Kind::Work,
                            deletion: Deletion::No,
                            rotations: 0,
                            rotations_in_flight: 0,
                        },
                    );
                }
                Err(e) => return note_error(&self.model, &self.killed, "CreateKey", &e),
            }
        }
    }

    async fn write_aliases(self, mut rng: Rng) {
        while self.running() {
            Self::pause(&mut rng, 30).await;
            let name = format!("alias/crash-{}", rng.range(0, ALIASES as u64 - 1));
            let (exists, target) = {
                let mut m = lock(&self.model);
                let keys = m.work_keys();
                let current = m.aliases.get(&name).and_then(|a| a.target.clone());
                let others: Vec<String> = keys
                    .into_iter()
                    .filter(|k| Some(k) != current.as_ref())
                    .collect();
                let Some(target) = rng.pick(&others).cloned() else {
                    continue;
                };
                let a = m.aliases.entry(name.clone()).or_default();
                if a.target.is_none() && !a.in_flight.is_empty() {
                    // Its creation's fate is unknown until the next check.
                    continue;
                }
                a.in_flight.push(target.clone());
                (a.target.is_some(), target)
            };
            let sent = Instant::now();
            let result = if exists {
                self.kms
                    .update_alias()
                    .alias_name(&name)
                    .target_key_id(&target)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("UpdateAlias {name} -> {target}: {e:?}"))
            } else {
                self.kms
                    .create_alias()
                    .alias_name(&name)
                    .target_key_id(&target)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("CreateAlias {name} -> {target}: {e:?}"))
            };
            match result {
                Ok(()) => {
                    note_latency(&self.model, "alias write", sent);
                    let mut m = lock(&self.model);
                    m.acked.alias_writes += 1;
                    let a = m.aliases.get_mut(&name).unwrap();
                    a.target = Some(target);
                    a.in_flight.clear();
                }
                Err(e) => return note_error(&self.model, &self.killed, "alias write", &e),
            }
        }
    }

    async fn rotate(self, mut rng: Rng) {
        for _ in 0..ROTATIONS_PER_ROUND {
            Self::pause(&mut rng, WRITE_PAUSE_MS).await;
            if !self.running() {
                return;
            }
            let key = {
                let mut m = lock(&self.model);
                let Some(key) = rng.pick(&m.work_keys()).cloned() else {
                    return;
                };
                m.keys.get_mut(&key).unwrap().rotations_in_flight += 1;
                key
            };
            let sent = Instant::now();
            match self.kms.rotate_key_on_demand().key_id(&key).send().await {
                Ok(_) => {
                    note_latency(&self.model, "RotateKeyOnDemand", sent);
                    let mut m = lock(&self.model);
                    m.acked.rotations += 1;
                    let k = m.keys.get_mut(&key).unwrap();
                    k.rotations += 1;
                    k.rotations_in_flight -= 1;
                }
                Err(e) => {
                    return note_error(&self.model, &self.killed, "RotateKeyOnDemand", &e);
                }
            }
        }
    }

    async fn schedule(&self, key: &str) -> bool {
        lock(&self.model).keys.get_mut(key).unwrap().deletion = Deletion::Maybe;
        let sent = Instant::now();
        match self
            .kms
            .schedule_key_deletion()
            .key_id(key)
            .pending_window_in_days(7)
            .send()
            .await
        {
            Ok(out) => {
                note_latency(&self.model, "ScheduleKeyDeletion", sent);
                assert_eq!(out.key_state, Some(KeyState::PendingDeletion));
                let mut m = lock(&self.model);
                m.acked.deletions += 1;
                m.keys.get_mut(key).unwrap().deletion = Deletion::Yes;
                true
            }
            Err(e) => {
                note_error(&self.model, &self.killed, "ScheduleKeyDeletion", &e);
                false
            }
        }
    }

    async fn delete_keys(self, mut rng: Rng) {
        // Doomed keys of earlier rounds whose scheduling never happened.
        let leftovers: Vec<String> = lock(&self.model)
            .keys
            .iter()
            .filter(|(_, k)| k.kind == Kind::Doomed && k.deletion == Deletion::No)
            .map(|(id, _)| id.clone())
            .collect();
        for key in leftovers {
            Self::pause(&mut rng, 20).await;
            if !self.running() || !self.schedule(&key).await {
                return;
            }
        }
        for _ in 0..DOOMED_PER_ROUND {
            Self::pause(&mut rng, WRITE_PAUSE_MS).await;
            if !self.running() {
                return;
            }
            lock(&self.model).creates_in_flight += 1;
            let sent = Instant::now();
            let key = match self
                .kms
                .create_key()
                .description("crash doomed")
                .send()
                .await
            {
                Ok(out) => {
                    note_latency(&self.model, "CreateKey", sent);
                    out.key_metadata.unwrap().key_id
                }
                Err(e) => return note_error(&self.model, &self.killed, "CreateKey", &e),
            };
            {
                let mut m = lock(&self.model);
                m.creates_in_flight -= 1;
                m.acked.creates += 1;
                m.keys.insert(
                    key.clone(),
                    KeyModel {
                        kind: Kind::Doomed,
                        deletion: Deletion::No,
                        rotations: 0,
                        rotations_in_flight: 0,
                    },
                );
            }
            Self::pause(&mut rng, WRITE_PAUSE_MS).await;
            if !self.running() || !self.schedule(&key).await {
                return;
            }
        }
    }

    async fn data_keys(self, mut rng: Rng, task: usize) {
        let mut n = 0;
        while self.running() {
            // Busy, not saturating: writes must still get a session.
            Self::pause(&mut rng, 6).await;
            let Some(key) = rng.pick(&lock(&self.model).work_keys()).cloned() else {
                return;
            };
            n += 1;
            let context = HashMap::from([
                ("crash-round".to_owned(), self.round.to_string()),
                ("request".to_owned(), format!("{task}-{n}")),
            ]);
            let sent = Instant::now();
            match self
                .kms
                .generate_data_key()
                .key_id(&key)
                .key_spec(DataKeySpec::Aes256)
                .set_encryption_context(Some(context.clone()))
                .send()
                .await
            {
                Ok(out) => {
                    note_latency(&self.model, "GenerateDataKey", sent);
                    let plaintext = out.plaintext.unwrap().into_inner();
                    assert_eq!(plaintext.len(), 32);
                    let mut m = lock(&self.model);
                    m.acked.data_keys += 1;
                    m.samples.push_back(Sample {
                        blob: out.ciphertext_blob.unwrap(),
                        context,
                        plaintext,
                        key_id: key,
                    });
                    while m.samples.len() > SAMPLE {
                        m.samples.pop_front();
                    }
                }
                Err(e) => return note_error(&self.model, &self.killed, "GenerateDataKey", &e),
            }
        }
    }
}

/// Runs the load on `gw` for `kill_after`, then kills the gateway with
/// SIGKILL while requests are in flight; returns the token.
async fn load_and_kill(
    gw: Gateway,
    model: &Shared,
    rng: &mut Rng,
    round: usize,
    kill_after: Duration,
) -> Arc<Token> {
    let killed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let load = || Load {
        kms: gw.client(),
        model: model.clone(),
        killed: killed.clone(),
        stop: stop.clone(),
        round,
    };
    let tasks = vec![
        tokio::spawn(load().create_keys(rng.fork())),
        tokio::spawn(load().write_aliases(rng.fork())),
        tokio::spawn(load().rotate(rng.fork())),
        tokio::spawn(load().delete_keys(rng.fork())),
        tokio::spawn(load().data_keys(rng.fork(), 0)),
        tokio::spawn(load().data_keys(rng.fork(), 1)),
    ];
    tokio::time::sleep(kill_after).await;
    killed.store(true, Ordering::SeqCst);
    let token = gw.crash();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        // A task still waiting on the dead gateway after this long is
        // abandoned; what it sent stays recorded as in flight.
        let abort = t.abort_handle();
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(joined) => joined.expect("a load task panicked"),
            Err(_) => abort.abort(),
        }
    }
    token
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

/// Runs `jobs` with at most 6 in flight; each returns its failures.
async fn all<F>(jobs: Vec<F>) -> Vec<String>
where
    F: Future<Output = Vec<String>> + Send + 'static,
{
    let limit = Arc::new(tokio::sync::Semaphore::new(6));
    let mut set = tokio::task::JoinSet::new();
    for job in jobs {
        let limit = limit.clone();
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            job.await
        });
    }
    let mut failures = Vec::new();
    while let Some(r) = set.join_next().await {
        failures.extend(r.expect("a check panicked"));
    }
    failures
}

/// `kmsgate check-keys` on the stopped gateway's token: exit 0, 0 unsafe,
/// and at least one version per acknowledged key and rotation.
///
/// `check-keys` used to die of SIGSEGV now and then after printing a clean
/// report (its pool threads were still in the library at exit; it now shuts
/// the token down first). A death by a signal is collected in `segfaults`
/// and fails the test at its end, so that one run also shows every other
/// finding.
fn check_keys(
    token: &Token,
    model: &Shared,
    checks: &Checks,
    round: usize,
    segfaults: &mut Vec<String>,
) {
    // As Token::run_cli, but keeping the exit status (a signal shows there).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kmsgate"))
        .env("SOFTHSM2_CONF", token.softhsm_conf())
        .env("KRYOPTIC_CONF", token.kryoptic_conf())
        .env("KMSGATE_TEST_CLOCK_OFFSET_FILE", token.clock_file())
        .arg("check-keys")
        .arg("--config")
        .arg(token.config())
        .output()
        .expect("kmsgate runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report_complete = stdout
        .trim_end()
        .ends_with(" key versions checked, 0 unsafe");
    if out.status.code().is_none() && report_complete {
        segfaults.push(format!("round {round}: check-keys {}", out.status));
    } else {
        assert!(
            out.status.success(),
            "round {round}: check-keys failed after the crash ({}):\n{stdout}\n{stderr}",
            out.status
        );
    }
    let summary = stdout.lines().last().unwrap_or_default().trim().to_owned();
    let versions: usize = summary
        .strip_suffix(" key versions checked, 0 unsafe")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!("round {round}: check-keys does not report 0 unsafe: {summary:?}\n{stdout}")
        });
    assert!(
        !stdout.contains("UNSAFE"),
        "round {round}: check-keys lists an unsafe version:\n{stdout}"
    );
    let expected: usize = lock(model).keys.values().map(|k| 1 + k.rotations).sum();
    assert!(
        versions >= expected,
        "round {round}: check-keys saw {versions} key versions, the acknowledged keys and rotations need {expected}"
    );
    Checks::add(&checks.check_keys_runs, 1);
    Checks::add(&checks.versions_checked, versions);
    // Key objects of writes cut short before their record: never used,
    // listed so that they can be counted.
    let orphans = stdout
        .lines()
        .filter(|l| l.starts_with("orphan key object "))
        .count();
    checks.orphans.fetch_max(orphans, Ordering::Relaxed);
}

async fn list_keys(kms: &aws_sdk_kms::Client) -> Vec<String> {
    let mut ids = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let out = within(
            "ListKeys",
            kms.list_keys()
                .limit(1000)
                .set_marker(marker.clone())
                .send(),
        )
        .await
        .unwrap_or_else(|e| panic!("ListKeys: {:?}", error_of(&e)));
        ids.extend(
            out.keys
                .unwrap_or_default()
                .into_iter()
                .filter_map(|k| k.key_id),
        );
        if !out.truncated {
            return ids;
        }
        marker = out.next_marker;
    }
}

async fn on_demand_rotations(kms: &aws_sdk_kms::Client, key: &str) -> Result<usize, String> {
    let mut n = 0;
    let mut marker: Option<String> = None;
    loop {
        let out = within(
            "ListKeyRotations",
            kms.list_key_rotations()
                .key_id(key)
                .limit(1000)
                .set_marker(marker.clone())
                .send(),
        )
        .await
        .map_err(|e| format!("ListKeyRotations {key}: {:?}", error_of(&e)))?;
        n += out
            .rotations
            .unwrap_or_default()
            .iter()
            .filter(|r| r.rotation_type == Some(RotationType::OnDemand))
            .count();
        if !out.truncated {
            return Ok(n);
        }
        marker = out.next_marker;
    }
}

/// Everything acknowledged is there after the restart; unacknowledged
/// writes either landed or not, and their observed outcome becomes the
/// model's.
async fn verify(gw: &Gateway, model: &Shared, checks: &Arc<Checks>, round: usize) {
    let kms = gw.client();
    let mut failures = Vec::new();

    // No half-made key: every listed key is an acknowledged one or one of the
    // CreateKey requests in flight at a kill, and is whole (below).
    let listed = list_keys(&kms).await;
    {
        let mut m = lock(model);
        let unknown: Vec<&String> = listed.iter().filter(|k| !m.keys.contains_key(*k)).collect();
        Checks::add(&checks.unanswered[CREATE], m.creates_in_flight);
        Checks::add(&checks.landed[CREATE], unknown.len());
        if unknown.len() > m.creates_in_flight {
            failures.push(format!(
                "ListKeys shows {} keys nobody was told about, but only {} CreateKey requests were unanswered: {unknown:?}",
                unknown.len(),
                m.creates_in_flight
            ));
        }
        for id in unknown.into_iter().cloned().collect::<Vec<_>>() {
            m.keys.insert(
                id,
                KeyModel {
                    kind: Kind::Work,
                    deletion: Deletion::No,
                    rotations: 0,
                    rotations_in_flight: 0,
                },
            );
        }
        // What was not listed now never landed.
        m.creates_in_flight = 0;
        for id in m.keys.keys() {
            if !listed.contains(id) {
                // LOST WRITE: an acknowledged CreateKey is not listed.
                failures.push(format!("acknowledged key {id} is not in ListKeys"));
            }
        }
    }

    // Every key describes OK, in the state acknowledged; every Enabled one
    // makes a data key; rotated keys list their rotations.
    type Todo = (String, Deletion, usize, usize);
    let todo: Vec<Todo> = lock(model)
        .keys
        .iter()
        .map(|(id, k)| (id.clone(), k.deletion, k.rotations, k.rotations_in_flight))
        .collect();
    let mut jobs = Vec::new();
    for (id, deletion, rotations, in_flight) in todo {
        let kms = kms.clone();
        let model = model.clone();
        let checks = checks.clone();
        jobs.push(async move {
            let mut failures = Vec::new();
            let meta = match within("DescribeKey", kms.describe_key().key_id(&id).send()).await {
                Ok(out) => out.key_metadata.unwrap(),
                Err(e) => {
                    // LOST WRITE (or a half-made key): a listed or acknowledged
                    // key that does not describe.
                    return vec![format!("DescribeKey {id}: {:?}", error_of(&e))];
                }
            };
            Checks::add(&checks.keys_described, 1);
            let state = meta.key_state.clone();
            let pending = match (deletion, &state) {
                (Deletion::Yes | Deletion::Maybe, Some(KeyState::PendingDeletion)) => true,
                (Deletion::No | Deletion::Maybe, Some(KeyState::Enabled)) => false,
                _ => {
                    failures.push(format!(
                        "key {id}: state {state:?}, but its deletion was {deletion:?}"
                    ));
                    return failures;
                }
            };
            if deletion == Deletion::Maybe {
                Checks::add(&checks.unanswered[DELETION], 1);
                Checks::add(&checks.landed[DELETION], pending as usize);
            }
            if pending {
                Checks::add(&checks.pending_deletion, 1);
                lock(&model).keys.get_mut(&id).unwrap().deletion = Deletion::Yes;
            } else {
                lock(&model).keys.get_mut(&id).unwrap().deletion = Deletion::No;
                let out = within(
                    "GenerateDataKey",
                    kms.generate_data_key()
                        .key_id(&id)
                        .key_spec(DataKeySpec::Aes256)
                        .encryption_context("crash-check", &id)
                        .send(),
                )
                .await;
                match out {
                    Ok(out) if out.plaintext.as_ref().map(|p| p.as_ref().len()) == Some(32) => {
                        Checks::add(&checks.data_keys, 1)
                    }
                    Ok(out) => failures.push(format!("GenerateDataKey {id}: {out:?}")),
                    Err(e) => failures.push(format!(
                        "Enabled key {id} cannot GenerateDataKey (half-made?): {:?}",
                        error_of(&e)
                    )),
                }
            }
            if rotations + in_flight > 0 {
                match on_demand_rotations(&kms, &id).await {
                    Ok(n) if n >= rotations && n <= rotations + in_flight => {
                        Checks::add(&checks.rotated_keys, 1);
                        Checks::add(&checks.rotations_listed, n);
                        Checks::add(&checks.unanswered[ROTATION], in_flight);
                        Checks::add(&checks.landed[ROTATION], n - rotations);
                        let mut m = lock(&model);
                        let k = m.keys.get_mut(&id).unwrap();
                        k.rotations = n;
                        k.rotations_in_flight = 0;
                    }
                    // LOST WRITE when n < rotations: an acknowledged rotation
                    // is missing.
                    Ok(n) => failures.push(format!(
                        "key {id}: {n} on-demand rotations listed, {rotations} acknowledged and {in_flight} unanswered"
                    )),
                    Err(e) => failures.push(e),
                }
            }
            failures
        });
    }
    failures.extend(all(jobs).await);

    // Aliases resolve to their last acknowledged target or to the target of
    // a write in flight at a kill.
    let aliases: Vec<(String, Option<String>, Vec<String>)> = lock(model)
        .aliases
        .iter()
        .map(|(n, a)| (n.clone(), a.target.clone(), a.in_flight.clone()))
        .collect();
    for (name, target, in_flight) in aliases {
        let out = within("DescribeKey alias", kms.describe_key().key_id(&name).send()).await;
        let got = match out {
            Ok(out) => Some(out.key_metadata.unwrap().key_id),
            Err(e) if error_of(&e).0 == "NotFoundException" => None,
            Err(e) => {
                failures.push(format!("DescribeKey {name}: {:?}", error_of(&e)));
                continue;
            }
        };
        let allowed =
            got.as_ref() == target.as_ref() || got.as_ref().is_some_and(|g| in_flight.contains(g));
        if !allowed {
            // LOST WRITE: the alias does not point where the last
            // acknowledged write put it (nor where an unanswered one would).
            failures.push(format!(
                "{name} resolves to {got:?}; acknowledged {target:?}, unanswered {in_flight:?}"
            ));
            continue;
        }
        Checks::add(&checks.aliases, 1);
        if !in_flight.is_empty() {
            Checks::add(&checks.unanswered[ALIAS], 1);
            Checks::add(&checks.landed[ALIAS], (got != target) as usize);
        }
        let mut m = lock(model);
        match got {
            Some(g) => {
                let a = m.aliases.get_mut(&name).unwrap();
                a.target = Some(g);
                a.in_flight.clear();
            }
            None => {
                m.aliases.remove(&name);
            }
        }
    }

    // Every ciphertext that was returned still decrypts with its context.
    let samples: Vec<Sample> = lock(model).samples.iter().cloned().collect();
    let mut jobs = Vec::new();
    for Sample {
        blob,
        context,
        plaintext,
        key_id: key,
    } in samples
    {
        let kms = kms.clone();
        let checks = checks.clone();
        jobs.push(async move {
            let out = within(
                "Decrypt",
                kms.decrypt()
                    .ciphertext_blob(blob)
                    .set_encryption_context(Some(context.clone()))
                    .send(),
            )
            .await;
            match out {
                Ok(out)
                    if out.plaintext.as_ref().map(|p| p.as_ref()) == Some(&plaintext[..])
                        && out.key_id.as_deref() == Some(key_arn(&key).as_str()) =>
                {
                    Checks::add(&checks.ciphertexts, 1);
                    vec![]
                }
                Ok(out) => vec![format!(
                    "ciphertext under {key} ({context:?}) decrypts to the wrong plaintext or key: {:?}",
                    out.key_id
                )],
                Err(e) => vec![format!(
                    "ciphertext under {key} ({context:?}) no longer decrypts: {:?}",
                    error_of(&e)
                )],
            }
        });
    }
    failures.extend(all(jobs).await);

    assert!(
        failures.is_empty(),
        "round {round}: after the restart {} checks failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        gateway_logs(&gw.token)
    );
}

/// The last lines (audit records left out) of the two newest gateway logs:
/// the killed gateway's and the restarted one's.
fn gateway_logs(token: &Token) -> String {
    let mut logs: Vec<(usize, std::path::PathBuf)> = std::fs::read_dir(token.path())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let n = name
                        .strip_prefix("gateway-")?
                        .strip_suffix(".log")?
                        .parse()
                        .ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    let mut out = String::new();
    for (_, path) in logs.iter().rev().take(2).rev() {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("kmsgate::audit"))
            .collect();
        out.push_str(&format!("--- {} (last lines) ---\n", path.display()));
        for l in &lines[lines.len().saturating_sub(25)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
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
