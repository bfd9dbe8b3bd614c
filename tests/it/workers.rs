//! `kmsgate serve --workers N` (DESIGN.md decision 15): worker processes
//! on one token share one listening socket under a supervisor that serves
//! nothing, restarts a dead worker, and stops them all on SIGTERM.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::lifecycle::{ROUND_LOG, rounds_ended, whole_rounds_since};

/// A supervisor started as `serve --workers N`. Killed, with its workers,
/// when dropped.
pub(crate) struct Supervised {
    child: Child,
    pub(crate) endpoint: String,
    log: PathBuf,
    /// Kept so the token outlives the processes using it.
    _token: Arc<Token>,
}

/// A token whose config audits to `audit.jsonl` in the token's directory.
fn auditing_token() -> Arc<Token> {
    let token = Token::new();
    let path = token.path().join("audit.jsonl");
    let mut config = std::fs::read_to_string(token.config()).unwrap();
    config.push_str(&format!("\n[audit]\npath = \"{}\"\n", path.display()));
    std::fs::write(token.config(), config).unwrap();
    token
}

impl Supervised {
    pub(crate) fn start(token: Arc<Token>, workers: &str) -> Supervised {
        Self::start_with_env(token, workers, &[])
    }

    /// As [`start`](Self::start), with extra environment variables (the
    /// workers inherit them).
    pub(crate) fn start_with_env(
        token: Arc<Token>,
        workers: &str,
        env: &[(&str, &str)],
    ) -> Supervised {
        let log = token.path().join(format!("supervisor-{workers}.log"));
        let (child, endpoint) = spawn_serve(
            &token,
            &["--workers", workers],
            env,
            &log,
            Duration::from_secs(60),
        );
        Supervised {
            endpoint,
            child,
            log,
            _token: token,
        }
    }

    /// The pids of the supervisor's worker processes now.
    pub(crate) fn workers(&self) -> Vec<u32> {
        workers_of(self.child.id())
    }

    /// The supervisor's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client of its own (a connection pool of its own).
    pub(crate) fn client(&self) -> aws_sdk_kms::Client {
        client_at(&self.endpoint, ACCESS_KEY, SECRET, REGION)
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the supervisor and waits up to `limit` for it.
    pub(crate) fn signal_and_wait(
        &mut self,
        signal: &str,
        limit: Duration,
    ) -> Option<std::process::ExitStatus> {
        kill(signal, self.child.id());
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // SIGTERM first, so that the supervisor stops its workers and
        // removes their counters file; SIGKILL what is left after 10 s.
        let workers = self.workers();
        kill("TERM", self.child.id());
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(10) && matches!(self.child.try_wait(), Ok(None))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in workers {
            if alive(pid) {
                kill("KILL", pid);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("kmsgate::audit: record="))
                .collect();
            eprintln!(
                "--- supervisor log (no audit records) ---\n{}",
                lines.join("\n")
            );
        }
    }
}

pub(crate) fn kill(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status();
}

/// The live (not zombie) processes whose parent is `parent` and whose
/// command line names the worker subcommand.
pub(crate) fn workers_of(parent: u32) -> Vec<u32> {
    children_of(parent, "__worker")
}

/// The live (not zombie) processes whose parent is `parent` and whose
/// command line contains `needle` (a subcommand such as `__worker` or
/// `__read-back-helper`).
pub(crate) fn children_of(parent: u32, needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if fields.get(1) == Some(&parent.to_string().as_str())
            && fields.first() != Some(&"Z")
            && String::from_utf8_lossy(&cmdline).contains(needle)
        {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// Waits up to `limit` for `done`.
fn eventually(limit: Duration, done: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// The audit records of `operation` in the audit file at `path`.
fn events(path: &std::path::Path, operation: &str) -> usize {
    let quoted = format!("\"{operation}\"");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&quoted))
        .count()
}

#[tokio::test]
async fn two_workers_share_the_port_each_with_its_own_audit_chain_and_no_pin_on_a_command_line() {
    let token = auditing_token();
    let gw = Supervised::start(token.clone(), "2");
    let workers = gw.workers();
    assert_eq!(workers.len(), 2, "two worker processes: {workers:?}");
    assert!(!workers.contains(&gw.child.id()));
    for pid in &workers {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        for (what, bytes) in [("command line", cmdline), ("environment", environ)] {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(PIN),
                "the PIN is in worker {pid}'s {what}"
            );
        }
    }

    let key = create_key(&gw.client()).await;
    let w1 = token.path().join("audit.jsonl.w1");
    let w2 = token.path().join("audit.jsonl.w2");
    // Every request on a client of its own, so on a connection of its own,
    // which either worker may accept.
    let mut requests = 0;
    while requests < 400
        && (events(&w1, "GenerateDataKey") == 0 || events(&w2, "GenerateDataKey") == 0)
    {
        gw.client()
            .generate_data_key()
            .key_id(&key)
            .number_of_bytes(32)
            .send()
            .await
            .expect("GenerateDataKey through either worker");
        requests += 1;
    }
    assert!(
        events(&w1, "GenerateDataKey") > 0 && events(&w2, "GenerateDataKey") > 0,
        "after {requests} connections both workers served some: w1 {}, w2 {}",
        events(&w1, "GenerateDataKey"),
        events(&w2, "GenerateDataKey")
    );
    assert!(
        !token.path().join("audit.jsonl").exists(),
        "no shared audit file"
    );
    for file in [&w1, &w2] {
        let (ok, out, err) = token.run_cli(&["audit", "verify", file.to_str().unwrap()]);
        assert!(
            ok && out.starts_with("OK"),
            "{}: {out}{err}",
            file.display()
        );
    }
}

#[tokio::test]
async fn a_killed_worker_fails_only_its_requests_in_flight_and_is_replaced() {
    const CLIENTS: usize = 4;
    let gw = Supervised::start(Token::new(), "2");
    let key = create_key(&gw.client()).await;
    let before = gw.workers();
    assert_eq!(before.len(), 2);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..CLIENTS {
        let (client, key, stop, ok, failed) = (
            gw.client(),
            key.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let r = client
                    .generate_data_key()
                    .key_id(&key)
                    .number_of_bytes(32)
                    .send()
                    .await;
                let counter = if r.is_ok() { &ok } else { &failed };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = before[0];
    kill("KILL", victim);
    let mut replaced = false;
    for _ in 0..600 {
        let now = gw.workers();
        if now.len() == 2 && !now.contains(&victim) {
            replaced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        replaced,
        "a new worker replaced {victim}: {:?}",
        gw.workers()
    );
    let ok_when_replaced = ok.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert!(
        failed <= CLIENTS,
        "{failed} requests failed; at most the {CLIENTS} in flight on the killed worker may"
    );
    assert!(ok > ok_when_replaced, "requests kept succeeding: {ok}");
    // Fresh connections after the restart all succeed.
    for _ in 0..20 {
        gw.client()
            .generate_data_key()
            .key_id(&key)
            .number_of_bytes(32)
            .send()
            .await
            .expect("GenerateDataKey after the restart");
    }
    let log = gw.log();
    assert!(
        log.contains("worker exited; restarting") && log.contains(&format!("pid={victim}")),
        "the supervisor logs the exit:\n{log}"
    );
}

#[test]
fn sigterm_stops_the_supervisor_and_every_worker() {
    let mut gw = Supervised::start(Token::new(), "2");
    let workers = gw.workers();
    assert_eq!(workers.len(), 2);
    let status = gw.signal_and_wait("TERM", Duration::from_secs(40));
    assert!(
        status.is_some_and(|s| s.success()),
        "the supervisor exits cleanly on SIGTERM: {status:?}"
    );
    for pid in workers {
        assert!(!alive(pid), "worker {pid} outlived its supervisor");
    }
    let log = gw.log();
    assert!(
        log.contains("all workers stopped") && log.matches("token sessions closed").count() == 2,
        "each worker closed its sessions:\n{log}"
    );
}

/// SIGHUP to the supervisor reaches every worker (each reloads its TLS
/// files; without `[tls]` each says there is nothing to reload), and no
/// worker is stopped or restarted by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reaches_every_worker_and_restarts_none() {
    let gw = Supervised::start(Token::new(), "2");
    let before = gw.workers();
    assert_eq!(before.len(), 2);
    kill("HUP", gw.child.id());
    let reached = eventually(Duration::from_secs(10), || {
        let log = gw.log();
        log.contains("SIGHUP forwarded to the workers")
            && log
                .matches("SIGHUP: no [tls] configured, nothing to reload")
                .count()
                == 2
    });
    assert!(reached, "both workers got SIGHUP:\n{}", gw.log());
    let mut after = gw.workers();
    after.sort_unstable();
    let mut before = before;
    before.sort_unstable();
    assert_eq!(after, before, "no worker was restarted");
    assert!(!gw.log().contains("worker exited"), "{}", gw.log());
    let kms = gw.client();
    create_key(&kms).await;
}

#[test]
fn workers_stop_when_their_supervisor_is_killed() {
    let mut gw = Supervised::start(Token::new(), "2");
    let workers = gw.workers();
    assert_eq!(workers.len(), 2);
    // The change counters file the workers share, from a worker's
    // command line (`--changes PATH`).
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", workers[0])).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let changes = args
        .iter()
        .position(|a| a == "--changes")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from)
        .expect("a worker has --changes");
    assert!(changes.exists());
    let _ = gw.signal_and_wait("KILL", Duration::from_secs(5));
    assert!(
        eventually(Duration::from_secs(30), || workers
            .iter()
            .all(|p| !alive(*p))),
        "workers {workers:?} stop once the supervisor is gone"
    );
    assert!(
        !changes.exists(),
        "the workers remove the counters file of a killed supervisor"
    );
}

#[tokio::test]
async fn a_due_rotation_happens_exactly_once_with_two_workers() {
    let token = Token::with_config("[keys]\nsync_interval_ms = 100\nscheduler_interval_ms = 100\n");
    let gw = Supervised::start_with_env(token.clone(), "2", &[ROUND_LOG]);
    let ids = keys_rotating_every_90_days(&gw.client(), 3).await;
    token.set_clock_days_ahead(91);
    for id in &ids {
        let mut rotated = false;
        for _ in 0..200 {
            if !rotations(&gw.client(), id).await.is_empty() {
                rotated = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(rotated, "key {id} rotated when due");
    }
    // Whole scheduler rounds on both workers, begun after every rotation
    // was seen, change nothing; asked on fresh connections, so of either
    // worker.
    let before = rounds_ended(&gw.log());
    whole_rounds_since(|| gw.log(), &before, &[1, 2], Duration::from_secs(10)).await;
    for id in &ids {
        for _ in 0..6 {
            assert_eq!(rotations(&gw.client(), id).await.len(), 1, "key {id}");
        }
    }
}

#[tokio::test]
async fn a_change_through_one_worker_holds_on_the_next_request_whichever_worker_takes_it() {
    let token = auditing_token();
    // Timed sync rounds far apart: only the shared change counters can make
    // the other worker see a change in time.
    let mut config = std::fs::read_to_string(token.config()).unwrap();
    config.push_str("\n[keys]\nsync_interval_ms = 600000\n");
    std::fs::write(token.config(), config).unwrap();
    let gw = Supervised::start(token.clone(), "2");
    let kms = gw.client();
    let keys = [create_key(&kms).await, create_key(&kms).await];
    kms.create_alias()
        .alias_name("alias/flip")
        .target_key_id(&keys[0])
        .send()
        .await
        .unwrap();
    // Both workers learn where the alias points (each request on a
    // connection of its own, which either worker may accept).
    for _ in 0..20 {
        assert_eq!(
            key_metadata(&gw.client(), "alias/flip").await.key_id,
            keys[0]
        );
    }
    for round in 1..=6 {
        let target = &keys[round % 2];
        gw.client()
            .update_alias()
            .alias_name("alias/flip")
            .target_key_id(target)
            .send()
            .await
            .unwrap();
        for _ in 0..8 {
            assert_eq!(
                &key_metadata(&gw.client(), "alias/flip").await.key_id,
                target,
                "round {round}: a worker answered from before the UpdateAlias"
            );
        }
    }
    // A disabled key is refused at once by both workers.
    gw.client()
        .disable_key()
        .key_id(&keys[0])
        .send()
        .await
        .unwrap();
    for _ in 0..8 {
        let e = gw
            .client()
            .encrypt()
            .key_id(&keys[0])
            .plaintext(aws_sdk_kms::primitives::Blob::new(b"x".to_vec()))
            .send()
            .await
            .expect_err("Encrypt under a disabled key");
        assert_eq!(
            aws_sdk_kms::error::ProvideErrorMetadata::code(&e),
            Some("DisabledException")
        );
    }
    let (w1, w2) = (
        token.path().join("audit.jsonl.w1"),
        token.path().join("audit.jsonl.w2"),
    );
    assert!(
        events(&w1, "DescribeKey") > 0 && events(&w2, "DescribeKey") > 0,
        "both workers answered DescribeKey: w1 {}, w2 {}",
        events(&w1, "DescribeKey"),
        events(&w2, "DescribeKey")
    );
}

/// A supervisor is killed while its workers have requests in flight: the
/// orphaned workers finish them and write their audit records, and the
/// workers of a new supervisor, which audit to the same files, must not
/// append to them until the old ones are gone. Each file stays one chain
/// that `audit verify` accepts, and every Encrypt that was answered is in
/// it. (A nemesis finding: both wrote the same files at once, and every
/// chain of a 30-minute run broke as "reordered".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_of_a_new_supervisor_wait_for_orphaned_workers_before_continuing_their_audit_chains()
 {
    // Held calls must not meet the token deadline (5 s by default).
    let token = Token::with_faulty_hsm("call_timeout_ms = 30000", "");
    let audit = token.path().join("audit.jsonl");
    let mut config = std::fs::read_to_string(token.config()).unwrap();
    config.push_str(&format!("\n[audit]\npath = \"{}\"\n", audit.display()));
    std::fs::write(token.config(), config).unwrap();
    let env = token.faulty_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let faults = token.faults();

    let mut old = Supervised::start_with_env(token.clone(), "2", &env);
    let key = create_key(&old.client()).await;
    let old_workers = old.workers();
    // Encrypts held by the token for 4 s each, on connections of their
    // own, so that both workers hold some.
    faults.set("C_Encrypt stall 4s forever");
    let mut in_flight = Vec::new();
    for i in 0..6u8 {
        let (kms, key) = (old.client(), key.clone());
        in_flight.push(tokio::spawn(async move {
            kms.encrypt()
                .key_id(key)
                .plaintext(aws_sdk_kms::primitives::Blob::new(vec![i; 8]))
                .send()
                .await
        }));
    }
    let f = faults.clone();
    tokio::task::spawn_blocking(move || {
        assert!(f.wait_for_count("stall C_Encrypt", 2, Duration::from_secs(20)) >= 2);
    })
    .await
    .unwrap();
    assert!(
        old.signal_and_wait("KILL", Duration::from_secs(5))
            .is_some()
    );
    assert!(
        old_workers.iter().all(|p| alive(*p)),
        "the orphans still serve"
    );

    // The new supervisor's workers audit to the same two files.
    let new = Supervised::start_with_env(token.clone(), "2", &env);
    for _ in 0..20 {
        new.client()
            .describe_key()
            .key_id(&key)
            .send()
            .await
            .expect("DescribeKey through the new workers");
    }
    let mut answered = 0;
    for request in in_flight {
        if request.await.unwrap().is_ok() {
            answered += 1;
        }
    }
    assert!(
        eventually(Duration::from_secs(30), || old_workers
            .iter()
            .all(|p| !alive(*p))),
        "the orphans stop"
    );
    drop(new);

    let w1 = token.path().join("audit.jsonl.w1");
    let w2 = token.path().join("audit.jsonl.w2");
    assert_eq!(
        events(&w1, "Encrypt") + events(&w2, "Encrypt"),
        6,
        "every Encrypt held in the orphans is audited ({answered} were answered)"
    );
    assert!(events(&w1, "DescribeKey") + events(&w2, "DescribeKey") >= 20);
    for file in [&w1, &w2] {
        let (ok, out, err) = token.run_cli(&["audit", "verify", file.to_str().unwrap()]);
        assert!(
            ok && out.starts_with("OK"),
            "{}: {out}{err}",
            file.display()
        );
    }
}
