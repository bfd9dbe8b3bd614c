//! SIGHUP during start-up (issue 20, item 4): `systemctl reload` sends it
//! whenever the operator asks, and a start-up on a big token takes
//! seconds. SIGHUP's default action ends a process, so `serve`, the
//! supervisor and every worker catch it from their first statements, keep
//! one that comes during start-up and act on it (a reload) once serving.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::common::faulty::Faults;
use crate::common::*;
use crate::workers::{alive, kill, workers_of};

/// A `serve` started by [`spawn`], killed (with its workers) when dropped.
pub(crate) struct Started {
    pub(crate) child: Child,
    line: std::sync::mpsc::Receiver<String>,
    log: std::path::PathBuf,
    at_catch: Option<AtCatch>,
}

impl Started {
    /// Waits up to `limit` for the "listening" line; the endpoint, or the
    /// exit status and the log.
    pub(crate) fn endpoint(&mut self, limit: Duration) -> Result<String, String> {
        let line = self.line.recv_timeout(limit).unwrap_or_default();
        match line.trim().strip_prefix("kmsgate listening on ") {
            Some(e) => Ok(e.to_owned()),
            None => Err(format!(
                "no listening line; exit status {:?}; log:\n{}",
                self.child.try_wait(),
                self.log()
            )),
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, and waits for the supervisor or gateway to end.
    pub(crate) fn stop(mut self) {
        kill("TERM", self.child.id());
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(40) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let workers = workers_of(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in workers {
            if alive(pid) {
                kill("KILL", pid);
            }
        }
        if std::thread::panicking() {
            eprintln!("--- log ---\n{}", self.log());
        }
    }
}

/// Sends `signal` to `pid` at once (no `kill` process in between).
pub(crate) fn send(pid: u32, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    kill_process(pid, signal).unwrap();
}

/// Starts `kmsgate serve` on `token` with `args` (as common's
/// `spawn_serve` does) and, when `hup_at_once`, sends SIGHUP the moment
/// the process exists, before reading anything from it.
pub(crate) fn spawn(
    token: &Token,
    args: &[&str],
    env: &[(String, String)],
    log: &Path,
    hup_at_once: bool,
) -> Started {
    spawn_in(&[], token, args, env, log, hup_at_once)
}

/// As [`spawn`], run by the command `wrapper` (empty: none).
fn spawn_in(
    wrapper: &[&str],
    token: &Token,
    args: &[&str],
    env: &[(String, String)],
    log: &Path,
    hup_at_once: bool,
) -> Started {
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(kmsgate_bin());
            c
        }
        None => Command::new(kmsgate_bin()),
    };
    let mut child = command
        .env("SOFTHSM2_CONF", token.softhsm_conf())
        .env("KRYOPTIC_CONF", token.kryoptic_conf())
        .env("KMSGATE_LOG", "info")
        .args(["serve", "--config"])
        .arg(token.config())
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("kmsgate starts");
    let mut at_catch = None;
    if hup_at_once {
        // The instant the process catches SIGHUP (nothing can catch it
        // before its own code runs: the dynamic loader and the runtime's
        // set-up come first), what it has done so far.
        let spawned = Instant::now();
        while !catches_sighup(child.id()) {
            assert!(
                spawned.elapsed() < Duration::from_secs(60),
                "SIGHUP never caught: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        let maps =
            std::fs::read_to_string(format!("/proc/{}/maps", child.id())).unwrap_or_default();
        at_catch = Some(AtCatch {
            after: spawned.elapsed(),
            module_loaded: maps.contains("softhsm") || maps.contains("kryoptic"),
            logged: std::fs::metadata(log).map_or(0, |m| m.len()),
        });
        // Tokio installs its handler a moment before its stream listens:
        // a SIGHUP in between is caught but not seen, harmlessly (nothing
        // has been read yet), and so not the reload this test looks for.
        std::thread::sleep(Duration::from_millis(2));
        send(child.id(), Signal::HUP);
    }
    let stdout = child.stdout.take().unwrap();
    let (tx, line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut l = String::new();
        let _ = BufReader::new(stdout).read_line(&mut l);
        let _ = tx.send(l);
    });
    Started {
        child,
        line,
        log: log.to_owned(),
        at_catch,
    }
}

/// What a process had done when it first caught SIGHUP.
#[derive(Debug)]
struct AtCatch {
    after: Duration,
    /// The PKCS#11 module was loaded (the token opened).
    module_loaded: bool,
    /// Bytes it had logged.
    logged: u64,
}

/// Whether `pid` has a handler for SIGHUP (/proc/PID/status `SigCgt`).
fn catches_sighup(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & 1 != 0)
}

/// Waits up to `limit` for `done`.
pub(crate) fn eventually(limit: Duration, done: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// 20 starts each of a single gateway and of a supervisor with two
/// workers, each sent SIGHUP the instant it catches it: that is before it
/// has logged anything or loaded the token's module (its first
/// statements), and every one comes up, serves, and acts on the SIGHUP
/// once serving (one reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_at_the_first_instant_of_start_up_leaves_the_gateway_serving() {
    const STARTS: usize = 20;
    let token = Token::new();
    let mut longest = Duration::ZERO;
    for (workers, reloaded) in [
        ("1", "SIGHUP: no [tls] configured, nothing to reload"),
        ("2", "SIGHUP forwarded to the workers"),
    ] {
        for n in 0..STARTS {
            let log = token.path().join(format!("hup-{workers}-{n}.log"));
            let mut gw = spawn(&token, &["--workers", workers], &[], &log, true);
            let caught = gw.at_catch.take().unwrap();
            assert!(
                !caught.module_loaded && caught.logged == 0,
                "--workers {workers}, start {n}: SIGHUP is caught only after start-up work: {caught:?}"
            );
            longest = longest.max(caught.after);
            let endpoint = gw
                .endpoint(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("--workers {workers}, start {n}: {e}"));
            let kms = client_at(&endpoint, ACCESS_KEY, SECRET, REGION);
            create_key(&kms).await;
            assert!(
                eventually(Duration::from_secs(10), || gw.log().contains(reloaded)),
                "--workers {workers}, start {n}: the SIGHUP was not acted on once serving:\n{}",
                gw.log()
            );
            assert!(
                matches!(gw.child.try_wait(), Ok(None)),
                "--workers {workers}, start {n}: exited"
            );
            gw.stop();
        }
    }
    eprintln!("SIGHUP caught at most {longest:?} after the spawn returned");
}

/// The rule that makes every process's first object search wait `stall`:
/// a start-up as slow as that of a token with thousands of objects.
fn slow_start(faults: &Faults, stall: &str) {
    faults.set(&format!("C_FindObjectsInit stall {stall} once"));
}

/// A supervisor with two workers whose start-ups are slow (each worker's
/// first object search stalls 3 s): SIGHUP to the supervisor and to the
/// worker that is starting, during the start, leaves both serving; and
/// after a worker was killed, SIGHUP while its replacement starts slowly
/// reaches the replacement once it is ready, and kills nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_during_a_slow_start_leaves_supervisor_and_workers_serving() {
    let token = Token::faulty();
    let faults = token.faults();
    slow_start(&faults, "3s");
    let log = token.path().join("slow.log");
    let mut gw = spawn(
        &token,
        &["--workers", "2"],
        &token.faulty_env(),
        &log,
        false,
    );
    // Worker 1 is in its slow start.
    assert!(
        eventually(Duration::from_secs(30), || workers_of(gw.pid()).len() == 1),
        "worker 1 started"
    );
    std::thread::sleep(Duration::from_millis(500));
    let starting = workers_of(gw.pid());
    send(gw.pid(), Signal::HUP);
    for &pid in &starting {
        send(pid, Signal::HUP);
    }
    let endpoint = gw
        .endpoint(Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("after SIGHUP during start-up: {e}"));
    let kms = client_at(&endpoint, ACCESS_KEY, SECRET, REGION);
    create_key(&kms).await;
    let workers = workers_of(gw.pid());
    assert_eq!(workers.len(), 2, "two workers serve");
    assert!(
        workers.contains(&starting[0]),
        "the worker that got SIGHUP while starting still runs: {starting:?} {workers:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            let log = gw.log();
            log.contains("SIGHUP forwarded to the workers")
                && log
                    .matches("SIGHUP: no [tls] configured, nothing to reload")
                    .count()
                    >= 2
        }),
        "the SIGHUPs were acted on once serving"
    );
    assert!(!gw.log().contains("worker exited"), "{}", gw.log());

    // A replacement worker starting slowly gets SIGHUP only once ready.
    slow_start(&faults, "3s");
    let victim = workers[0];
    kill("KILL", victim);
    assert!(
        eventually(Duration::from_secs(30), || {
            let now = workers_of(gw.pid());
            now.len() == 2 && !now.contains(&victim)
        }),
        "a replacement started"
    );
    std::thread::sleep(Duration::from_millis(500));
    send(gw.pid(), Signal::HUP);
    assert!(
        eventually(Duration::from_secs(60), || gw
            .log()
            .contains("SIGHUP during its start-up forwarded")),
        "the replacement got the SIGHUP once ready"
    );
    create_key(&kms).await;
    let log = gw.log();
    assert_eq!(
        log.matches("worker exited").count(),
        1,
        "only the killed worker exited:\n{log}"
    );
    assert!(!log.contains("did not start"), "{log}");
    assert_eq!(workers_of(gw.pid()).len(), 2);
    gw.stop();
}

/// The pids of `parent`'s children that are zombies (exited, not reaped).
fn zombies_of(parent: u32) -> Vec<u32> {
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
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&parent.to_string().as_str()) {
            pids.push(pid);
        }
    }
    pids
}

/// As PID 1 of a PID namespace, as in the container, the supervisor
/// inherits every orphan: a worker with a live read-back helper is killed,
/// the helper exits (its input closed) and becomes the supervisor's child.
/// Within 15 s no zombie is left among the supervisor's children, and the
/// killed worker's own exit status still reached its slot (the reaper
/// does not steal it; the log names pids as the namespace sees them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_pid_1_the_supervisor_reaps_orphaned_read_back_helpers() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: unshare --pid needs root");
        return;
    }
    let token = Token::new();
    let log = token.path().join("pid1.log");
    let mut ns = spawn_in(
        &[
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child=SIGTERM",
        ],
        &token,
        &["--workers", "2"],
        &[],
        &log,
        false,
    );
    let endpoint = ns
        .endpoint(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the supervisor as PID 1: {e}"));
    let supervisor = crate::workers::children_of(ns.pid(), "serve");
    assert_eq!(supervisor.len(), 1, "unshare's child is the supervisor");
    let supervisor = supervisor[0];
    let status = std::fs::read_to_string(format!("/proc/{supervisor}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
        "the supervisor is PID 1 in its namespace:\n{status}"
    );
    // Writes until a worker has a read-back helper.
    let mut with_helper = None;
    for _ in 0..40 {
        create_key(&client_at(&endpoint, ACCESS_KEY, SECRET, REGION)).await;
        with_helper = workers_of(supervisor).into_iter().find_map(|w| {
            let helpers = crate::workers::children_of(w, "__read-back-helper");
            helpers.first().map(|h| (w, *h))
        });
        if with_helper.is_some() {
            break;
        }
    }
    let (victim, helper) = with_helper.expect("a worker started a read-back helper");
    kill("KILL", victim);
    let gone = eventually(Duration::from_secs(15), || {
        !Path::new(&format!("/proc/{helper}")).exists() && zombies_of(supervisor).is_empty()
    });
    assert!(
        gone,
        "orphaned helper {helper} of killed worker {victim} not reaped; zombies of the supervisor: {:?}",
        zombies_of(supervisor)
    );
    assert!(
        eventually(Duration::from_secs(30), || workers_of(supervisor).len()
            == 2),
        "the killed worker was replaced"
    );
    let logged = ns.log();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("worker exited; restarting") && l.contains("SIGKILL")),
        "the slot saw its worker's own status (SIGKILL):\n{logged}"
    );
    create_key(&client_at(&endpoint, ACCESS_KEY, SECRET, REGION)).await;
    ns.stop();
    assert!(eventually(Duration::from_secs(40), || !alive(supervisor)));
}
