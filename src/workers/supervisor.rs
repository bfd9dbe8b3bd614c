//! The supervisor of `serve --workers N`: binds the listener, starts the
//! workers, restarts the dead, forwards signals, and serves nothing.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions, kill_process, waitpid};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::{READY, WORKER_ARG};
use crate::hsm::{HsmError, PIN_REFUSED_EXIT};
use crate::server::StartError;

/// Time between two workers' start-ups at least: concurrent C_Login from
/// several processes has failed with CKR_GENERAL_ERROR on SoftHSM2, so
/// one worker logs in (and loads its key store) at a time.
const STAGGER: Duration = Duration::from_millis(200);
/// The first restart delay of a worker that died; it doubles on every
/// further death up to [`MAX_BACKOFF`], and falls back to this once a
/// worker has run for [`HEALTHY`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const HEALTHY: Duration = Duration::from_secs(10);
/// How long a worker may take from start to `ready`.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How often orphans are looked for without a SIGCHLD.
const REAP_INTERVAL: Duration = Duration::from_secs(5);

/// What the supervisor needs to run its workers.
pub struct Options {
    /// The configuration file, passed on to the workers.
    pub config: PathBuf,
    /// The global `--log-format`, passed on.
    pub log_format: String,
    pub workers: usize,
    /// Async runtime threads in each worker (`worker_threads`, resolved).
    pub threads: usize,
    /// The bound listener every worker inherits.
    pub listener: std::net::TcpListener,
    /// `[metrics] listen`, bound: served here, from every worker's answer.
    pub metrics: Option<tokio::net::TcpListener>,
    pub pin: SecretString,
    /// `hsm.pin_env`: removed from the workers' environment.
    pub pin_env: Option<String>,
    /// Once every worker is ready, this line goes to stdout (the line a
    /// single gateway prints, for scripts that started it on port 0).
    pub announce: String,
    /// How long workers may take to stop on SIGTERM before they are
    /// killed (their drain grace and the token's shutdown).
    pub stop_timeout: Duration,
    /// SIGHUP, caught since the first statements of `serve`.
    pub hangups: crate::server::Hangups,
}

/// Shared by the supervisor and the slots: the live workers' pids, and
/// whether the supervisor is stopping. One lock, so that a worker started
/// during a stop is either signalled by the stop or sees it.
///
/// SIGHUP goes only to workers that said `ready`: one still starting may
/// not catch it yet (between its exec and its first statements the
/// default action would end it). `hangups` counts the SIGHUPs forwarded;
/// a worker that becomes ready after one that came since it was started
/// gets it then, so it reloads what it may have read before the change.
#[derive(Default)]
struct Live {
    stopping: bool,
    pids: Vec<Option<u32>>,
    ready: Vec<bool>,
    hangups: u64,
}

enum Event {
    Ready(usize),
    /// Worker `.0` did not start, why, and whether the token refused the
    /// PIN.
    Failed(usize, String, bool),
}

/// Why a worker did not start.
struct Failed {
    why: String,
    /// It exited with [`PIN_REFUSED_EXIT`]: not restarted until SIGHUP.
    pin_refused: bool,
}

impl From<String> for Failed {
    fn from(why: String) -> Failed {
        Failed {
            why,
            pin_refused: false,
        }
    }
}

struct Shared {
    options: Options,
    exe: PathBuf,
    /// The workers' change counters file (keystore::peers).
    changes: PathBuf,
    live: Mutex<Live>,
    /// Held by the slot that is starting a worker; holds when the last
    /// start finished.
    starting: tokio::sync::Mutex<Option<Instant>>,
    /// The control channel of each serving worker (by index), for scrapes.
    controls: Vec<tokio::sync::Mutex<Option<BufReader<tokio::net::UnixStream>>>>,
    /// The PIN the workers get, read again on SIGHUP.
    pin: Mutex<SecretString>,
    /// Where the workers say that the token refused the PIN
    /// ([`super::pin_marker`]).
    pin_marker: PathBuf,
    /// Counts SIGHUPs (and the stop): a slot whose worker exited because
    /// the token refused the PIN waits for the next before it starts one
    /// again, so restarts never become a stream of logins.
    reloads: tokio::sync::watch::Sender<u64>,
}

/// The PIN line a worker reads first on its control channel (hex, then a
/// newline), in one buffer allocated at its final size (no reallocation
/// leaves a copy behind) and wiped when dropped.
fn pin_line(pin: &SecretString) -> Zeroizing<Vec<u8>> {
    let pin = pin.expose_secret().as_bytes();
    let mut line = Zeroizing::new(vec![b'\n'; 2 * pin.len() + 1]);
    if let Some(hex) = line.get_mut(..2 * pin.len()) {
        // Cannot fail: `hex` is exactly twice as long as the PIN.
        let _ = hex::encode_to_slice(pin, hex);
    }
    line
}

/// The pids of this process's children that have exited and wait to be
/// reaped (state `Z` in /proc).
fn zombie_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) state ppid ...": comm may hold spaces.
            let mut fields = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace())
                .into_iter()
                .flatten();
            fields.next() == Some("Z") && fields.next() == Some(me.as_str())
        })
        .collect()
}

fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, sig);
    }
}

impl Shared {
    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn signal_all(&self, sig: Signal) -> usize {
        let pids: Vec<u32> = self.live().pids.iter().flatten().copied().collect();
        for &pid in &pids {
            signal(pid, sig);
        }
        pids.len()
    }

    /// Forwards a SIGHUP to the ready workers (see [`Live`]); returns to
    /// how many.
    fn forward_hangup(&self) -> usize {
        let mut live = self.live();
        live.hangups += 1;
        let mut sent = 0;
        for (pid, ready) in live.pids.iter().zip(&live.ready) {
            if let (Some(pid), true) = (pid, ready) {
                signal(*pid, Signal::HUP);
                sent += 1;
            }
        }
        sent
    }

    /// Reaps every zombie child that is not a worker. As PID 1 (in a
    /// container) the supervisor inherits every orphan of its namespace,
    /// read-back helpers of killed workers among them, and nobody else
    /// would wait for them. A worker is left to its slot, which waits for
    /// it through tokio and logs its status: a pid in `live.pids` is never
    /// waited for here, and a worker is registered under the same lock it
    /// is spawned under, so none can be reaped before it is known.
    fn reap_orphans(&self) -> usize {
        let live = self.live();
        let mut reaped = 0;
        for pid in zombie_children() {
            if live.pids.iter().flatten().any(|&p| p == pid) {
                continue;
            }
            if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw)
                && matches!(waitpid(Some(p), WaitOptions::NOHANG), Ok(Some(_)))
            {
                reaped += 1;
            }
        }
        reaped
    }

    /// Every process's metrics as one exposition: the supervisor's own
    /// and each serving worker's ([`super::metrics`]).
    async fn scrape(&self) -> String {
        let up = self.live().pids.iter().flatten().count();
        crate::telemetry::workers_up(up);
        let mut texts = vec![crate::telemetry::render()];
        for (index, control) in self.controls.iter().enumerate() {
            let mut control = control.lock().await;
            let Some(c) = control.as_mut() else {
                continue;
            };
            match tokio::time::timeout(super::metrics::ANSWER_TIMEOUT, super::metrics::ask(c)).await
            {
                Ok(Ok(text)) => texts.push(text),
                Ok(Err(e)) => tracing::warn!(worker = index, error = %e, "metrics: no answer"),
                Err(_) => tracing::warn!(worker = index, "metrics: no answer in time"),
            }
        }
        crate::telemetry::merge(&texts)
    }

    /// Starts worker `index` and waits until it says `ready`. The child
    /// is registered (and so reached by a stop) as soon as it exists.
    async fn start(&self, index: usize) -> Result<(Child, tokio::net::UnixStream), Failed> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| format!("cannot make a control channel: {e}"))?;
        let listener = self
            .options
            .listener
            .try_clone()
            .map_err(|e| format!("cannot share the listener: {e}"))?;
        let mut command = Command::new(&self.exe);
        command
            .args([
                "--log-format",
                &self.options.log_format,
                WORKER_ARG,
                "--config",
            ])
            .arg(&self.options.config)
            .arg("--index")
            .arg(index.to_string())
            .arg("--threads")
            .arg(self.options.threads.to_string())
            .arg("--changes")
            .arg(&self.changes)
            .arg("--workers")
            .arg(self.options.workers.to_string())
            .stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::from(OwnedFd::from(theirs)))
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(var) = &self.options.pin_env {
            command.env_remove(var);
        }
        // Spawned and registered under one lock: see `reap_orphans`.
        let (mut child, pid, hangups) = {
            let mut live = self.live();
            let child = command
                .spawn()
                .map_err(|e| format!("cannot start a worker: {e}"))?;
            let pid = child.id().unwrap_or(0);
            live.pids[index] = Some(pid);
            if live.stopping {
                signal(pid, Signal::TERM);
            }
            (child, pid, live.hangups)
        };
        drop(command);
        ours.set_nonblocking(true)
            .map_err(|e| format!("control channel: {e}"))?;
        let ours =
            tokio::net::UnixStream::from_std(ours).map_err(|e| format!("control channel: {e}"))?;
        let mut control = BufReader::new(ours);
        let greeting = pin_line(&self.pin.lock().unwrap_or_else(|e| e.into_inner()));
        let handshake = async {
            control.get_mut().write_all(&greeting).await?;
            let mut line = String::new();
            control.read_line(&mut line).await?;
            Ok::<_, std::io::Error>(line)
        };
        let answer = tokio::time::timeout(START_TIMEOUT, handshake).await;
        match answer {
            Ok(Ok(line)) if line.trim_end() == READY => {
                let mut live = self.live();
                live.ready[index] = true;
                if live.hangups != hangups {
                    signal(pid, Signal::HUP);
                    tracing::info!(worker = index, "SIGHUP during its start-up forwarded");
                }
                drop(live);
                Ok((child, control.into_inner()))
            }
            other => {
                // Its exit status says whether the token refused the PIN.
                let exited = match &other {
                    Ok(Ok(_)) => tokio::time::timeout(Duration::from_secs(5), child.wait())
                        .await
                        .ok()
                        .and_then(Result::ok),
                    _ => None,
                };
                let _ = child.kill().await;
                self.live().pids[index] = None;
                Err(Failed {
                    pin_refused: exited.and_then(|s| s.code()) == Some(i32::from(PIN_REFUSED_EXIT)),
                    why: match other {
                        Err(_) => format!("no answer within {START_TIMEOUT:?}"),
                        Ok(Err(e)) => format!("control channel: {e}"),
                        Ok(Ok(_)) => "it exited during start-up (its log says why)".to_owned(),
                    },
                })
            }
        }
    }

    /// Worker `index`'s slot: starts it (one start at a time, [`STAGGER`]
    /// apart), waits for it to exit, and starts it again after the
    /// backoff, until the supervisor stops.
    async fn slot(self: Arc<Self>, index: usize, events: mpsc::UnboundedSender<Event>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut last = self.starting.lock().await;
            if let Some(at) = *last {
                tokio::time::sleep_until((at + STAGGER).into()).await;
            }
            if self.live().stopping {
                return;
            }
            let started = Instant::now();
            let reloads = *self.reloads.borrow();
            let result = self.start(index).await;
            *last = Some(Instant::now());
            drop(last);
            match result {
                Ok((mut child, control)) => {
                    let pid = child.id().unwrap_or(0);
                    tracing::info!(worker = index, pid, "worker ready");
                    *self.controls[index].lock().await = Some(BufReader::new(control));
                    let _ = events.send(Event::Ready(index));
                    let status = child.wait().await;
                    drop(self.controls[index].lock().await.take());
                    let stopping = {
                        let mut live = self.live();
                        live.pids[index] = None;
                        live.ready[index] = false;
                        live.stopping
                    };
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    if stopping {
                        tracing::info!(worker = index, pid, %status, "worker stopped");
                        return;
                    }
                    if started.elapsed() >= HEALTHY {
                        backoff = FIRST_BACKOFF;
                    }
                    crate::telemetry::worker_restart();
                    tracing::warn!(
                        worker = index,
                        pid,
                        %status,
                        restart_in_ms = backoff.as_millis() as u64,
                        "worker exited; restarting"
                    );
                }
                Err(f) if f.pin_refused => {
                    let _ = events.send(Event::Failed(index, f.why, true));
                    tracing::error!(
                        worker = index,
                        "the token refused the PIN: the worker is not started again until SIGHUP"
                    );
                    let mut next = self.reloads.subscribe();
                    if *next.borrow_and_update() == reloads {
                        let _ = next.changed().await;
                    }
                    backoff = FIRST_BACKOFF;
                    continue;
                }
                Err(f) => {
                    if self.live().stopping {
                        return;
                    }
                    tracing::error!(
                        worker = index,
                        error = %f.why,
                        restart_in_ms = backoff.as_millis() as u64,
                        "worker did not start"
                    );
                    let _ = events.send(Event::Failed(index, f.why, false));
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Runs the workers until SIGTERM or SIGINT, then stops them all (SIGTERM:
/// each drains and closes its sessions) and returns. Fails, stopping what
/// was started, if a worker does not come up at start-up.
pub async fn run(mut options: Options) -> Result<(), StartError> {
    // A SIGHUP during start-up waits in the stream and is acted on once
    // every worker is ready.
    let mut hup = std::mem::replace(&mut options.hangups, crate::server::Hangups::none());
    use tokio::signal::unix::{SignalKind, signal as on};
    let mut term = on(SignalKind::terminate())?;
    let mut int = on(SignalKind::interrupt())?;
    let n = options.workers;
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the kmsgate binary: {e}"))?;
    // The change counters the workers share (keystore::peers): a file
    // only this user may open, removed when the supervisor ends.
    let changes = std::env::temp_dir().join(format!(
        "kmsgate-{}-{}.changes",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    crate::keystore::peers::create(&changes, n)
        .map_err(|e| format!("cannot create {}: {e}", changes.display()))?;
    let pin_marker = super::pin_marker(&changes);
    let _remove = super::shared_files(&changes).map(RemoveOnDrop);
    let mut shared = Arc::new(Shared {
        exe,
        changes,
        live: Mutex::new(Live {
            stopping: false,
            pids: vec![None; n + 1],
            ready: vec![false; n + 1],
            hangups: 0,
        }),
        starting: tokio::sync::Mutex::new(None),
        controls: (0..=n).map(|_| tokio::sync::Mutex::new(None)).collect(),
        pin: Mutex::new(options.pin.clone()),
        pin_marker,
        reloads: tokio::sync::watch::Sender::new(0),
        options,
    });
    let metrics = Arc::get_mut(&mut shared)
        .and_then(|s| s.options.metrics.take())
        .map(|listener| {
            let shared = shared.clone();
            tokio::spawn(crate::http::metrics::serve(
                listener,
                Arc::new(move || {
                    let shared = shared.clone();
                    Box::pin(async move { shared.scrape().await })
                }),
            ))
        });
    // Orphans are reaped on every SIGCHLD, and every few seconds in case
    // one was missed.
    let mut chld = on(SignalKind::child())?;
    let reaper = {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = chld.recv() => {}
                    () = tokio::time::sleep(REAP_INTERVAL) => {}
                }
                let reaped = shared.reap_orphans();
                if reaped > 0 {
                    tracing::debug!(reaped, "orphaned processes reaped");
                }
            }
        })
    };
    let (events, mut ready) = mpsc::unbounded_channel();
    let slots: Vec<_> = (1..=n)
        .map(|i| tokio::spawn(shared.clone().slot(i, events.clone())))
        .collect();
    drop(events);
    tracing::info!(workers = n, "supervisor starting workers");

    let mut up = vec![false; n + 1];
    let mut pin_refused = false;
    let started = loop {
        tokio::select! {
            event = ready.recv() => match event {
                Some(Event::Ready(i)) => {
                    up[i] = true;
                    if up.iter().filter(|u| **u).count() == n {
                        break Ok(());
                    }
                }
                Some(Event::Failed(i, e, refused)) => {
                    pin_refused = refused;
                    break Err(format!("worker {i} did not start: {e}"));
                }
                None => break Err("the workers ended".to_owned()),
            },
            _ = term.recv() => break Err("stopped during start-up".to_owned()),
            _ = int.recv() => break Err("stopped during start-up".to_owned()),
        }
    };
    if started.is_ok() {
        use std::io::Write;
        let mut out = std::io::stdout();
        writeln!(out, "{}", shared.options.announce)?;
        out.flush()?;
        tracing::info!(workers = n, "all workers ready");
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                () = hup.recv() => {
                    let config = crate::server::reread_log_level(&shared.options.config);
                    // The PIN as it is now, for the workers started from
                    // here on; and a refusal is tried once more.
                    if let Some(pin) = config.as_ref().and_then(|c| crate::server::user_pin(c).ok()) {
                        *shared.pin.lock().unwrap_or_else(|e| e.into_inner()) = pin;
                    }
                    let _ = std::fs::remove_file(&shared.pin_marker);
                    let sent = shared.forward_hangup();
                    shared.reloads.send_modify(|n| *n += 1);
                    tracing::info!(workers = sent, "SIGHUP forwarded to the workers");
                }
                // Later events are logged by the slots themselves.
                _ = ready.recv() => {}
            }
        }
    }
    stop(&shared, slots).await;
    reaper.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    started.map_err(|e| {
        if pin_refused {
            Box::new(HsmError::PinRefused(e)) as StartError
        } else {
            e.into()
        }
    })
}

/// Removes a file when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Stops every worker: SIGTERM, then SIGKILL for those still running after
/// the stop timeout. Returns once every worker has been reaped.
async fn stop(shared: &Shared, slots: Vec<tokio::task::JoinHandle<()>>) {
    let sent = {
        let mut live = shared.live();
        live.stopping = true;
        drop(live);
        shared.signal_all(Signal::TERM)
    };
    // Wakes the slots that wait for a SIGHUP: they see the stop.
    shared.reloads.send_modify(|n| *n += 1);
    tracing::info!(workers = sent, "stopping the workers");
    let deadline = tokio::time::Instant::now() + shared.options.stop_timeout;
    for mut slot in slots {
        if tokio::time::timeout_at(deadline, &mut slot).await.is_err() {
            let killed = shared.signal_all(Signal::KILL);
            tracing::warn!(workers = killed, "workers did not stop in time; killed");
            let _ = slot.await;
        }
    }
    tracing::info!("all workers stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_line_is_the_hex_pin_and_a_newline_in_one_wiped_buffer() {
        let line: Zeroizing<Vec<u8>> = pin_line(&SecretString::from("pin 4711"));
        assert_eq!(
            &line[..],
            format!("{}\n", hex::encode("pin 4711")).as_bytes()
        );
        assert_eq!(line.capacity(), line.len());
    }
}
