//! The nemesis itself: one fault at a time, at random moments, every
//! choice (the pause before it, its kind, its target, how long it lasts)
//! from its own seeded generator, and each fault written to faults.jsonl
//! with its start and end. Kinds:
//!
//! - processes: `kill-worker`, `stop-worker` (SIGSTOP, then SIGCONT),
//!   `kill-supervisor` (its workers stop by themselves; the gateway is
//!   started again on a new port a moment later), `stop-supervisor`,
//!   `kill-readback` and `stop-readback` (a worker's read-back helper);
//! - the token, through faulty-pkcs11 (every process on the token obeys
//!   the same control file; a `once` rule fires once in each):
//!   `token-fault` (device errors, among them a `C_CreateObject` failure
//!   between making a key object and writing its record) and `token-stall`,
//!   each held 0.3 to 3 s and then cleared. faulty-pkcs11 cannot drop
//!   objects, so that fault is not here;
//! - `clock-jump`: the test clock 1 to 12 (one time in three 40 to 100)
//!   days forward (never back), so that deletions and rotations fall due
//!   during the run, and 121 days once three quarters of the run have
//!   passed, so that every rotation period has ended by then. The file is replaced atomically: a gateway never reads it
//!   half-written (and so as no offset). `Op::clock_days` is read at send,
//!   so it may lag a jump that happens while the request is on its way;
//!   the jump's fault record brackets it;
//! - the token's storage: `token-dir-unreadable` (the token's directory
//!   under `tokens/` chmod 000; where that does not stop its owner, i.e.
//!   as root, an empty read-only tmpfs mounted over it instead, so that
//!   nothing there can be read or written) and `disk-full` (the tmpfs the
//!   token directory lives on filled to the last byte; not run, and said
//!   so in notes.txt, where it did not mount), each for 0.3 to 3 s.
//!
//! The client hang-ups (`client-half-close`, `client-timeout`) are the
//! clients' own (workload.rs).
//!
//! With `NEMESIS_FOCUS=races` ([`super::Focus::Races`]) the pauses are
//! shorter (0.3 to 1.5 s) and the kinds are [`FOCUS_TABLE`]'s: the token
//! fault is always the combined `C_CreateObject` + `C_DestroyObject`
//! device error (held 0.3 to 1.5 s, so that each process meets it in a
//! CreateKey or a rotation), `deletion-due` (every `C_DestroyObject`
//! stalled 300 to 1000 ms, then the clock 7 days forward, onto the
//! deletion dates of the clients' 7-day deletions, held 1.5 to 3 s: a
//! scheduler that has decided to destroy takes long to do it while the
//! clients cancel; the jump is announced in `Run::jump_at_ms`, so that
//! waiting clients may cancel just before it), plain 7-day clock jumps,
//! and kills.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::history::Fault;
use super::{Focus, Run};
use crate::common::Token;
use crate::common::disk::free_bytes;
use crate::workers::kill;

#[derive(Clone, Copy, Debug)]
enum Kind {
    KillWorker,
    StopWorker,
    KillSupervisor,
    StopSupervisor,
    KillReadback,
    StopReadback,
    TokenFault,
    TokenStall,
    ClockJump,
    DirUnreadable,
    DiskFull,
    /// Focus only: destroy calls stalled, then the clock onto the
    /// deletion dates.
    DeletionDue,
}

const TABLE: &[(Kind, u64)] = &[
    (Kind::KillWorker, 3),
    (Kind::StopWorker, 2),
    (Kind::KillSupervisor, 1),
    (Kind::StopSupervisor, 1),
    (Kind::KillReadback, 2),
    (Kind::StopReadback, 1),
    (Kind::TokenFault, 4),
    (Kind::TokenStall, 2),
    (Kind::ClockJump, 6),
    (Kind::DirUnreadable, 1),
    (Kind::DiskFull, 1),
];

/// `NEMESIS_FOCUS=races`.
const FOCUS_TABLE: &[(Kind, u64)] = &[
    (Kind::KillWorker, 2),
    (Kind::KillSupervisor, 1),
    (Kind::TokenFault, 6),
    (Kind::ClockJump, 2),
    (Kind::DeletionDue, 4),
];

/// The token fault of the focus mix: a write that fails after its key
/// object was made, and the clean-up that would remove that object.
const CREATE_THEN_DESTROY: &str = "C_CreateObject fail 0x30 once\nC_DestroyObject fail 0x30 once";

/// Device errors (CKR_DEVICE_ERROR, 0x30), in every step of a write: a
/// key made and its record not written, a record revision not made, a
/// marker not moved, an old revision not destroyed, a listing or a read
/// failing, encryption and random numbers failing. An entry may hold
/// several rules, one per line.
const DEVICE_ERRORS: &[&str] = &[
    "C_GenerateKey fail 0x30 once",
    "C_CreateObject fail 0x30 once",
    "C_CreateObject fail 0x30 for 1s",
    "C_SetAttributeValue fail 0x30 once",
    "C_DestroyObject fail 0x30 once",
    // A write that fails after its key object was made, and the clean-up
    // that would remove that object: the retry must not make it twice.
    "C_CreateObject fail 0x30 once\nC_DestroyObject fail 0x30 once",
    "C_FindObjectsInit fail 0x30 once",
    "C_FindObjects fail 0x30 once",
    "C_GetAttributeValue fail 0x30 once",
    "C_Encrypt fail 0x30 for 1s",
    "C_Decrypt fail 0x30 once",
    "C_GenerateRandom fail 0x30 once",
    "C_UnwrapKey fail 0x30 once",
    "* fail 0x30 for 500ms",
];

/// Stalls: the whole token, or one step of a write.
const STALLS: &[&str] = &[
    "* stall for 2s",
    "C_CreateObject stall 1s once",
    "C_DestroyObject stall 800ms forever",
    "C_FindObjects stall 1500ms once",
    "C_SetAttributeValue stall 1s once",
    "C_Encrypt stall 300ms forever",
];

fn pick(focus: Focus, r: u64) -> Kind {
    match focus {
        Focus::All => super::weighted(TABLE, r),
        Focus::Races => super::weighted(FOCUS_TABLE, r),
    }
}

/// Runs `f` off the async threads (signals, process starts, file
/// systems).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Runs the nemesis until `end_ms` (milliseconds since the run began): a
/// pause of 0.5 to 3 s, a fault, and again.
pub async fn nemesis(seed: u64, run: Arc<Run>, end_ms: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    // The clients make their first keys in peace.
    sleep_ms(2_000).await;
    let mut planned_jump = true;
    loop {
        let r: [u64; 6] = std::array::from_fn(|_| rng.random());
        let focus = run.focus;
        sleep_ms(match focus {
            Focus::All => 500 + r[0] % 2_500,
            Focus::Races => 300 + r[0] % 1_200,
        })
        .await;
        if run.rec.now_ms() >= end_ms {
            break;
        }
        // Whatever the draws, once the run is three quarters through, every
        // rotation period (at most 120 days) the clients set has ended.
        if planned_jump && run.rec.now_ms() >= end_ms / 4 * 3 {
            planned_jump = false;
            let start_ms = run.rec.now_ms();
            let total = run.clock_days.load(Ordering::SeqCst) + 121;
            set_clock_days(&run.cluster.token, total);
            run.clock_days.store(total, Ordering::SeqCst);
            run.rec.fault(&Fault {
                start_ms,
                end_ms: run.rec.now_ms(),
                kind: "clock-jump".into(),
                target: "the test clock".into(),
                detail: format!("+121 days (planned at 3/4 of the run), now {total} days ahead"),
            });
            continue;
        }
        let kind = pick(focus, r[1]);
        let g = (r[2] % u64::from(run.cluster.gateways())) as u32;
        // How long a fault with a duration lasts: 0.3 to 3 s (focus: 0.3
        // to 1.5 s).
        let hold = match focus {
            Focus::All => 300 + r[3] % 2_700,
            Focus::Races => 300 + r[3] % 1_200,
        };
        let start_ms = run.rec.now_ms();
        let done = match kind {
            Kind::KillWorker => {
                let workers = run.cluster.workers(g);
                pick_pid(&workers, r[4]).map(|pid| {
                    kill("KILL", pid);
                    (
                        "kill-worker",
                        format!("gateway {g} worker {pid}"),
                        String::new(),
                    )
                })
            }
            Kind::StopWorker => {
                let workers = run.cluster.workers(g);
                match pick_pid(&workers, r[4]) {
                    Some(pid) => Some(stop_for(pid, hold, "stop-worker", g).await),
                    None => None,
                }
            }
            Kind::KillSupervisor => {
                let down = 1_000 + r[4] % 3_000;
                let cluster = run.cluster.clone();
                let pid = blocking(move || cluster.kill_supervisor(g)).await;
                match pid {
                    Some(pid) => {
                        sleep_ms(down).await;
                        let cluster = run.cluster.clone();
                        let restarted = blocking(move || cluster.restart_if_down(g)).await;
                        let detail = match restarted {
                            Ok(started) => {
                                let (endpoint, errors) = started.unwrap_or_default();
                                if !errors.is_empty() {
                                    run.note(format!(
                                        "gateway {g} failed to start again after kill-supervisor \
                                         at {start_ms} ms before it did:\n{errors}"
                                    ));
                                }
                                format!("down {down} ms, started again at {endpoint}")
                            }
                            Err(errors) => {
                                run.note(format!(
                                    "FINDING: gateway {g} did not start again after \
                                     kill-supervisor at {start_ms} ms:\n{errors}"
                                ));
                                format!("down {down} ms, did not start again")
                            }
                        };
                        Some((
                            "kill-supervisor",
                            format!("gateway {g} supervisor {pid}"),
                            detail,
                        ))
                    }
                    None => None,
                }
            }
            Kind::StopSupervisor => match run.cluster.supervisor(g) {
                Some(pid) => Some(stop_for(pid, hold, "stop-supervisor", g).await),
                None => None,
            },
            Kind::TokenFault | Kind::TokenStall => {
                let (kind, rules) = match kind {
                    Kind::TokenFault => ("token-fault", DEVICE_ERRORS),
                    _ => ("token-stall", STALLS),
                };
                let rule = match (kind, focus) {
                    ("token-fault", Focus::Races) => CREATE_THEN_DESTROY,
                    _ => rules[(r[4] % rules.len() as u64) as usize],
                };
                let faults = run.cluster.token.faults();
                let set = faults.clone();
                blocking(move || set.set(rule)).await;
                sleep_ms(hold).await;
                blocking(move || faults.clear()).await;
                Some((
                    kind,
                    "the token".to_owned(),
                    format!("{}, held {hold} ms", rule.replace('\n', "; ")),
                ))
            }
            Kind::DeletionDue => {
                let stall = 300 + r[4] % 700;
                let held = 1_500 + r[5] % 1_500;
                let rule = format!("C_DestroyObject stall {stall}ms forever");
                let faults = run.cluster.token.faults();
                let set = faults.clone();
                blocking(move || set.set(&rule)).await;
                // Every process reloads the plan within ~100 ms of a call;
                // clients waiting for the jump may cancel just before it.
                run.jump_at_ms
                    .store(run.rec.now_ms() + 150, Ordering::SeqCst);
                sleep_ms(150).await;
                let total = run.clock_days.load(Ordering::SeqCst) + 7;
                set_clock_days(&run.cluster.token, total);
                run.clock_days.store(total, Ordering::SeqCst);
                run.jump_at_ms.store(0, Ordering::SeqCst);
                sleep_ms(held).await;
                blocking(move || faults.clear()).await;
                Some((
                    "deletion-due",
                    "the token and the test clock".to_owned(),
                    format!(
                        "C_DestroyObject stall {stall}ms forever, then +7 days (now {total} days \
                         ahead) 150 ms later, held {held} ms"
                    ),
                ))
            }
            Kind::ClockJump if focus == Focus::Races => {
                // Onto the deletion dates of the clients' 7-day deletions.
                let total = run.clock_days.load(Ordering::SeqCst) + 7;
                set_clock_days(&run.cluster.token, total);
                run.clock_days.store(total, Ordering::SeqCst);
                Some((
                    "clock-jump",
                    "the test clock".to_owned(),
                    format!("+7 days, now {total} days ahead"),
                ))
            }
            Kind::ClockJump => {
                // Mostly a few days (deletion windows end); now and then
                // a month or two (rotation periods end).
                let days = if r[5].is_multiple_of(3) {
                    40 + r[4] % 61
                } else {
                    1 + r[4] % 12
                };
                let total = run.clock_days.load(Ordering::SeqCst) + days;
                set_clock_days(&run.cluster.token, total);
                run.clock_days.store(total, Ordering::SeqCst);
                Some((
                    "clock-jump",
                    "the test clock".to_owned(),
                    format!("+{days} days, now {total} days ahead"),
                ))
            }
            Kind::DirUnreadable => match run.cluster.token_subdir() {
                Some(dir) => {
                    let how = blocking({
                        let dir = dir.clone();
                        move || hide(&dir)
                    })
                    .await;
                    if let Hidden::Not(why) = &how {
                        run.note(format!("token-dir-unreadable: could not hide it: {why}"));
                        None
                    } else {
                        sleep_ms(hold).await;
                        let undone = blocking({
                            let (dir, how) = (dir.clone(), how.clone());
                            move || unhide(&dir, &how)
                        })
                        .await;
                        Some((
                            "token-dir-unreadable",
                            dir.display().to_string(),
                            format!("{how:?} for {hold} ms{undone}"),
                        ))
                    }
                }
                None => None,
            },
            Kind::DiskFull if run.cluster.disk.is_none() => None,
            Kind::DiskFull => {
                let cluster = run.cluster.clone();
                let free = blocking(move || {
                    if let Some(disk) = &cluster.disk {
                        disk.fill();
                    }
                    free_bytes(&cluster.token.path().join("tokens"))
                })
                .await;
                sleep_ms(hold).await;
                let cluster = run.cluster.clone();
                blocking(move || {
                    if let Some(disk) = &cluster.disk {
                        disk.free();
                    }
                })
                .await;
                Some((
                    "disk-full",
                    "the token's file system".to_owned(),
                    format!("filled ({free} bytes left) for {hold} ms"),
                ))
            }
            Kind::KillReadback | Kind::StopReadback => {
                // The helpers of any gateway, starting with `g`.
                let n = run.cluster.gateways();
                let helpers: Vec<(u32, u32)> = (0..n)
                    .map(|i| (g + i) % n)
                    .flat_map(|g| run.cluster.helpers(g).into_iter().map(move |p| (g, p)))
                    .collect();
                match helpers.get((r[4] % helpers.len().max(1) as u64) as usize) {
                    Some(&(g, pid)) if matches!(kind, Kind::KillReadback) => {
                        kill("KILL", pid);
                        Some((
                            "kill-readback",
                            format!("gateway {g} read-back helper {pid}"),
                            String::new(),
                        ))
                    }
                    Some(&(g, pid)) => Some(stop_for(pid, hold, "stop-readback", g).await),
                    None => None,
                }
            }
        };
        match done {
            Some((kind, target, detail)) => run.rec.fault(&Fault {
                start_ms,
                end_ms: run.rec.now_ms(),
                kind: kind.into(),
                target,
                detail,
            }),
            None => run.note(format!(
                "{kind:?} at {start_ms} ms not done: no target (gateway {g})"
            )),
        }
    }
}

fn pick_pid(pids: &[u32], r: u64) -> Option<u32> {
    pids.get((r % pids.len().max(1) as u64) as usize).copied()
}

/// SIGSTOP, `ms` milliseconds, SIGCONT.
async fn stop_for(pid: u32, ms: u64, kind: &'static str, g: u32) -> (&'static str, String, String) {
    kill("STOP", pid);
    sleep_ms(ms).await;
    kill("CONT", pid);
    (
        kind,
        format!("gateway {g} pid {pid}"),
        format!("stopped {ms} ms"),
    )
}

/// Moves the test clock to `days` ahead of the system time, replacing its
/// file atomically (Token::set_clock_days_ahead writes it in place).
fn set_clock_days(token: &Token, days: u64) {
    let file = token.clock_file();
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, (days * 86_400).to_string()).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
}

/// How the token directory was hidden.
#[derive(Clone, Debug)]
pub(crate) enum Hidden {
    /// chmod 000 (the old mode, to restore).
    Chmod(u32),
    /// An empty read-only tmpfs mounted over it.
    Mounted,
    /// Neither worked: why.
    Not(String),
}

/// Makes `dir` unreadable and unwritable for the gateways.
pub(crate) fn hide(dir: &Path) -> Hidden {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return Hidden::Not("no such directory".into());
    };
    let mode = meta.permissions().mode() & 0o7777;
    if std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o000)).is_ok() {
        if std::fs::read_dir(dir).is_err() {
            return Hidden::Chmod(mode);
        }
        // chmod does not stop root, whom the gateways run as here.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
    }
    match Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=4k,mode=0000", "tmpfs"])
        .arg(dir)
        .output()
    {
        Ok(out) if out.status.success() => Hidden::Mounted,
        Ok(out) => Hidden::Not(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(e) => Hidden::Not(e.to_string()),
    }
}

/// Undoes [`hide`]; returns what went wrong, if anything.
pub(crate) fn unhide(dir: &Path, how: &Hidden) -> String {
    use std::os::unix::fs::PermissionsExt;
    let done = match how {
        Hidden::Chmod(mode) => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode)).is_ok()
        }
        Hidden::Mounted => Command::new("umount")
            .arg("-l")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success()),
        Hidden::Not(_) => true,
    };
    if done {
        String::new()
    } else {
        format!("; undoing {how:?} FAILED")
    }
}

/// Ends every fault and starts every gateway that is down (blocking).
pub fn stop_all(run: &Run) {
    run.cluster.token.faults().clear();
    for g in 0..run.cluster.gateways() {
        for pid in run.cluster.workers(g) {
            kill("CONT", pid);
        }
        for pid in run.cluster.helpers(g) {
            kill("CONT", pid);
        }
        if let Some(pid) = run.cluster.supervisor(g) {
            kill("CONT", pid);
        }
        match run.cluster.restart_if_down(g) {
            Err(errors) => run.note(format!(
                "FINDING: gateway {g} did not start again at the end:\n{errors}"
            )),
            Ok(Some((_, errors))) if !errors.is_empty() => run.note(format!(
                "gateway {g} failed to start again at the end before it did:\n{errors}"
            )),
            Ok(_) => {}
        }
    }
}
