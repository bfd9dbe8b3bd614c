//! Token sessions on dedicated worker threads, and recovery from faults.
//!
//! cryptoki calls block, and a `Session` is `Send` but not `Sync`, so each
//! worker thread owns one session slot for its whole life and work is sent to
//! the workers over one bounded queue. The async side never blocks: it
//! enqueues a closure and awaits a oneshot reply, for at most the call
//! deadline.
//!
//! Back-pressure and deadlines (DESIGN.md decision 10):
//! * a full queue refuses work at once ([`HsmError::Busy`]);
//! * work that waited past its queue deadline is answered with
//!   [`HsmError::QueueTimeout`] without touching the token;
//! * a caller waits at most the call deadline for its answer
//!   ([`HsmError::CallTimeout`]), even if the token never returns. A worker
//!   stuck in a call keeps its session until the call returns, so a stuck
//!   session is never handed to anyone else.
//!
//! Recovery (decision 9): a job whose error says its session is broken makes
//! the worker drop that session and open (and log in) a fresh one for the
//! next job. A fatal error (the library or device is gone) marks the link
//! for a reset: the next worker to run takes the write side of the link's
//! lock, which waits for every call in flight to return, closes every
//! session, finalises the library, initialises it again, finds the token and
//! logs in. Each reset bumps the *generation*; object handles carry the
//! generation they were found in and are refused in any other, because a
//! re-initialised library may hand the same handle number to another
//! object. Failed resets are retried with exponential backoff and jitter
//! (from `rand`), so gateways that lost the same token do not retry in
//! lockstep. While a reset is pending, work is answered at once with
//! [`HsmError::Unavailable`], a retryable error.
//!
//! CKR_GENERAL_ERROR is fatal on some HSMs but routine on SoftHSM2 (races,
//! bad tags): it discards the session, and only [`GENERAL_ERRORS_FATAL`] of
//! them in a row, with no success between, are taken as fatal.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::HsmError;
use super::error::Fault;

/// A session lent to a job, with the generation of the library
/// initialisation it belongs to. Only this layer can look inside.
pub struct TokenSession<'a> {
    pub(super) session: &'a Session,
    pub(super) generation: u64,
}

impl TokenSession<'_> {
    /// Refuses a handle made in another generation.
    pub(super) fn check(&self, generation: u64) -> Result<(), HsmError> {
        if generation == self.generation {
            Ok(())
        } else {
            Err(HsmError::StaleGeneration)
        }
    }
}

/// A unit of work: it gets a session (or why there is none) and returns the
/// error it ended with, if any, so the worker can act on its class.
type Job = Box<dyn FnOnce(Result<&TokenSession<'_>, HsmError>) -> Option<Fault> + Send>;

struct Envelope {
    job: Job,
    deadline: Instant,
    /// Whether anyone still waits for the answer.
    abandoned: Box<dyn Fn() -> bool + Send>,
}

/// CKR_GENERAL_ERRORs in a row (no job succeeding between) that are taken
/// as a fatal fault.
pub const GENERAL_ERRORS_FATAL: u32 = 3;

/// How long a reset waits for calls in flight to return before it gives up
/// and tries again later.
const RESET_WAIT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

struct LinkState {
    /// `None` while the library is not usable (a reset failed).
    slot: Option<Slot>,
    generation: u64,
}

/// The library, the token in it, and what is needed to reach it again.
pub(super) struct Link {
    pkcs11: Pkcs11,
    label: String,
    pin: AuthPin,
    state: RwLock<LinkState>,
    /// Holds the login for the process (closing a token's last session logs
    /// it out).
    login: Mutex<Option<Session>>,
    /// One slot per worker; taken out and closed by a reset.
    sessions: Vec<Mutex<Option<Session>>>,
    /// A fatal error was seen: the library must be re-initialised.
    reset_needed: AtomicBool,
    resetting: Mutex<()>,
    /// Earliest moment of the next reset attempt, as nanoseconds since
    /// `epoch`, and the current backoff.
    next_attempt: AtomicU64,
    backoff: Mutex<Duration>,
    epoch: Instant,
    /// The last health check or job succeeded at the token.
    healthy: AtomicBool,
    /// CKR_GENERAL_ERRORs since the last job that succeeded.
    general_errors: AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Link {
    /// Initialises the library, finds the token and logs in.
    pub(super) fn open(
        pkcs11: Pkcs11,
        label: String,
        pin: AuthPin,
        workers: usize,
    ) -> Result<Link, HsmError> {
        initialize(&pkcs11)?;
        let slot = find_token(&pkcs11, &label)?;
        let login = open_logged_in(&pkcs11, slot, &pin, 8)?;
        Ok(Link {
            pkcs11,
            label,
            pin,
            state: RwLock::new(LinkState {
                slot: Some(slot),
                generation: 1,
            }),
            login: Mutex::new(Some(login)),
            sessions: (0..workers).map(|_| Mutex::new(None)).collect(),
            reset_needed: AtomicBool::new(false),
            resetting: Mutex::new(()),
            next_attempt: AtomicU64::new(0),
            backoff: Mutex::new(BACKOFF_MIN),
            epoch: Instant::now(),
            healthy: AtomicBool::new(true),
            general_errors: AtomicU32::new(0),
        })
    }

    pub(super) fn pkcs11(&self) -> &Pkcs11 {
        &self.pkcs11
    }

    pub(super) fn slot(&self) -> Result<(Slot, u64), HsmError> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        match state.slot {
            Some(slot) => Ok((slot, state.generation)),
            None => Err(HsmError::Unavailable(
                "the token is being reconnected".into(),
            )),
        }
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.reset_needed.load(Ordering::Relaxed)
    }

    fn mark_fatal(&self) {
        if !self.reset_needed.swap(true, Ordering::SeqCst) {
            tracing::error!("the PKCS#11 library will be re-initialised");
        }
        self.healthy.store(false, Ordering::Relaxed);
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Re-initialises the library if a fatal error asked for it and the
    /// backoff allows. Returns whether the link is usable now.
    fn try_reset(&self) -> bool {
        if !self.reset_needed.load(Ordering::SeqCst) {
            return true;
        }
        let Ok(_one) = self.resetting.try_lock() else {
            return false;
        };
        if !self.reset_needed.load(Ordering::SeqCst) {
            return true;
        }
        if self.now_nanos() < self.next_attempt.load(Ordering::SeqCst) {
            return false;
        }
        // Wait for the calls in flight: finalising under them is undefined.
        let waited = Instant::now();
        let mut state = loop {
            match self.state.try_write() {
                Ok(g) => break g,
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) if waited.elapsed() < RESET_WAIT => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => {
                    tracing::warn!("token calls still in flight; re-initialisation postponed");
                    self.schedule_retry();
                    return false;
                }
            }
        };
        for slot in &self.sessions {
            lock(slot).take();
        }
        lock(&self.login).take();
        state.slot = None;
        if let Err(e) = self.pkcs11.clone().finalize() {
            tracing::debug!(error = %e, "C_Finalize before re-initialisation failed");
        }
        let reconnected = initialize(&self.pkcs11).and_then(|()| {
            let slot = find_token(&self.pkcs11, &self.label)?;
            let login = open_logged_in(&self.pkcs11, slot, &self.pin, 2)?;
            Ok((slot, login))
        });
        match reconnected {
            Ok((slot, login)) => {
                state.slot = Some(slot);
                *lock(&self.login) = Some(login);
                state.generation += 1;
                *lock(&self.backoff) = BACKOFF_MIN;
                self.reset_needed.store(false, Ordering::SeqCst);
                self.healthy.store(true, Ordering::Relaxed);
                tracing::info!(
                    generation = state.generation,
                    "PKCS#11 library re-initialised; token reconnected"
                );
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-initialising the PKCS#11 library failed; will retry");
                self.schedule_retry();
                false
            }
        }
    }

    /// Exponential backoff with jitter in [0.5, 1.5) of the step.
    fn schedule_retry(&self) {
        let mut backoff = lock(&self.backoff);
        let step = *backoff;
        *backoff = (step * 2).min(BACKOFF_MAX);
        let jitter = rand::random_range(0.5..1.5);
        let delay = step.mul_f64(jitter);
        let at = self
            .now_nanos()
            .saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX));
        self.next_attempt.store(at, Ordering::SeqCst);
    }

    /// Closes every session, logs out and finalises the library.
    pub(super) fn close(&self) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        for slot in &self.sessions {
            lock(slot).take();
        }
        if let Some(login) = lock(&self.login).take() {
            let _ = login.logout();
        }
        state.slot = None;
        if let Err(e) = self.pkcs11.clone().finalize() {
            tracing::warn!(error = %e, "C_Finalize failed");
        }
    }
}

fn initialize(pkcs11: &Pkcs11) -> Result<(), HsmError> {
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn find_token(pkcs11: &Pkcs11, label: &str) -> Result<Slot, HsmError> {
    for slot in pkcs11.get_slots_with_initialized_token()? {
        let info = pkcs11.get_token_info(slot)?;
        if info.label().trim_end() == label {
            return Ok(slot);
        }
    }
    Err(HsmError::Setup(format!(
        "no initialised token labelled '{label}'"
    )))
}

/// Opens a read-write session and logs the user in, retrying with backoff
/// and jitter up to `attempts` times: concurrent logins from several
/// processes sometimes fail with CKR_GENERAL_ERROR on SoftHSM2.
/// CKR_USER_ALREADY_LOGGED_IN is success.
pub(super) fn open_logged_in(
    pkcs11: &Pkcs11,
    slot: Slot,
    pin: &AuthPin,
    attempts: u32,
) -> Result<Session, HsmError> {
    let mut delay = Duration::from_millis(20);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = pkcs11.open_rw_session(slot).and_then(|session| {
            match session.login(UserType::User, Some(pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
                Err(e) => Err(e),
            }
        });
        match result {
            Ok(session) => return Ok(session),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(HsmError::Setup("the token rejected the user PIN".into()));
            }
            Err(e) if attempt < attempts => {
                tracing::warn!(error = %e, attempt, "opening a logged-in session failed; retrying");
                std::thread::sleep(delay.mul_f64(rand::random_range(0.5..1.5)));
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Settings of the pool.
pub(super) struct PoolSettings {
    pub sessions: usize,
    pub queue_depth: usize,
    pub queue_timeout: Duration,
    pub call_timeout: Duration,
}

pub struct Pool {
    link: Arc<Link>,
    sender: Option<Sender<Envelope>>,
    workers: Vec<JoinHandle<()>>,
    queue_timeout: Duration,
    call_timeout: Duration,
    in_flight: Arc<AtomicU64>,
}

impl Pool {
    pub(super) fn start(link: Arc<Link>, settings: PoolSettings) -> Result<Pool, HsmError> {
        let (sender, receiver) =
            crossbeam_channel::bounded::<Envelope>(settings.queue_depth.max(1));
        let mut workers = Vec::with_capacity(settings.sessions);
        let (slot, _) = link.slot()?;
        for n in 0..link.sessions.len() {
            // Open every session before serving, so a bad token fails start-up.
            *lock(&link.sessions[n]) = Some(open_logged_in(link.pkcs11(), slot, &link.pin, 8)?);
            let worker = Worker {
                n,
                link: link.clone(),
                receiver: receiver.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("pkcs11-{n}"))
                .spawn(move || worker.run())
                .map_err(|e| HsmError::Setup(format!("cannot start worker thread: {e}")))?;
            workers.push(handle);
        }
        Ok(Pool {
            link,
            sender: Some(sender),
            workers,
            queue_timeout: settings.queue_timeout,
            call_timeout: settings.call_timeout,
            in_flight: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Runs `f` with a session on a worker thread and returns its result.
    /// Fails fast if it cannot start within the queue deadline, and gives
    /// up waiting at the call deadline.
    pub async fn run<T, F>(&self, f: F) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: FnOnce(&TokenSession<'_>) -> Result<T, HsmError> + Send + 'static,
    {
        self.run_within(self.queue_timeout, self.call_timeout, f)
            .await
    }

    /// As [`run`](Self::run), with deadlines of its own: start-up work is
    /// not a client request and must not fail on a short request deadline.
    pub async fn run_within<T, F>(
        &self,
        queue_deadline: Duration,
        call_deadline: Duration,
        f: F,
    ) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: FnOnce(&TokenSession<'_>) -> Result<T, HsmError> + Send + 'static,
    {
        let sender = self.sender.as_ref().ok_or(HsmError::Closed)?;
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<T, HsmError>>();
        let gone = Arc::new(AtomicBool::new(false));
        let link = self.link.clone();
        let job: Job = Box::new(move |session| {
            let ran = session.is_ok();
            let result = session.and_then(f);
            let general = match &result {
                Err(e) if e.is_general_error() => {
                    link.general_errors.fetch_add(1, Ordering::SeqCst) + 1
                }
                Ok(_) if ran => {
                    link.general_errors.store(0, Ordering::SeqCst);
                    0
                }
                _ => 0,
            };
            let failure = match &result {
                Err(e) if general >= GENERAL_ERRORS_FATAL => {
                    tracing::error!(error = %e, repeated = general, "CKR_GENERAL_ERROR keeps coming: taken as fatal");
                    link.general_errors.store(0, Ordering::SeqCst);
                    Some(Fault::Fatal)
                }
                Err(e) if e.is_fatal() => {
                    tracing::error!(error = %e, "fatal token error");
                    Some(Fault::Fatal)
                }
                Err(e) if e.session_is_broken() => {
                    tracing::warn!(error = %e, "token session failed");
                    Some(Fault::Retryable)
                }
                _ => None,
            };
            // The requester may have gone away (deadline, disconnect); fine.
            let _ = reply.send(result);
            failure
        });
        let abandoned = {
            let gone = gone.clone();
            Box::new(move || gone.load(Ordering::Relaxed))
        };
        let envelope = Envelope {
            job,
            deadline: Instant::now() + queue_deadline,
            abandoned,
        };
        match sender.try_send(envelope) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(HsmError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(HsmError::Closed),
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let outcome = tokio::time::timeout(call_deadline, answer).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Ok(Ok(result)) => result,
            // The worker dropped the job without answering: it panicked.
            Ok(Err(_)) => Err(HsmError::Closed),
            Err(_) => {
                gone.store(true, Ordering::Relaxed);
                Err(HsmError::CallTimeout(
                    u64::try_from(call_deadline.as_millis()).unwrap_or(u64::MAX),
                ))
            }
        }
    }

    /// Whether the token is usable as far as this process knows: no reset
    /// pending and the last call did not fail at the device.
    pub fn is_healthy(&self) -> bool {
        self.link.is_healthy()
    }

    /// Asks the token something cheap, through the pool, so that a fault is
    /// noticed (and a reset attempted) even when no request comes.
    pub async fn health_check(&self) -> Result<(), HsmError> {
        let result = self
            .run(|s| {
                s.session.get_session_info()?;
                Ok(())
            })
            .await;
        match &result {
            Ok(()) => self.link.healthy.store(true, Ordering::Relaxed),
            Err(e) if !matches!(e, HsmError::Busy | HsmError::QueueTimeout) => {
                self.link.healthy.store(false, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        result
    }

    /// Stops accepting work, lets the workers drain the queue, and joins
    /// them, waiting at most `grace` for a worker stuck in a token call.
    /// Returns whether every worker has finished (only then may the library
    /// be finalised).
    pub fn shutdown(mut self, grace: Duration) -> bool {
        self.stop(grace)
    }

    fn stop(&mut self, grace: Duration) -> bool {
        self.sender = None;
        let until = Instant::now() + grace;
        while self.workers.iter().any(|w| !w.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut all = true;
        for w in self.workers.drain(..) {
            if w.is_finished() {
                let _ = w.join();
            } else {
                all = false;
            }
        }
        if !all {
            tracing::warn!("a token call is still in flight; its worker thread is left behind");
        }
        all
    }
}

/// A pool dropped without [`Pool::shutdown`] (an error during start-up)
/// still joins its workers, so none is inside the library when it unloads.
impl Drop for Pool {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.stop(SHUTDOWN_GRACE);
        }
    }
}

/// How long shutdown waits for a call in flight before leaving it behind.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

struct Worker {
    n: usize,
    link: Arc<Link>,
    receiver: Receiver<Envelope>,
}

impl Worker {
    fn run(self) {
        while let Ok(Envelope {
            job,
            deadline,
            abandoned,
        }) = self.receiver.recv()
        {
            if Instant::now() > deadline {
                job(Err(HsmError::QueueTimeout));
                continue;
            }
            if abandoned() {
                job(Err(HsmError::QueueTimeout));
                continue;
            }
            if !self.link.try_reset() {
                job(Err(HsmError::Unavailable(
                    "the token is being reconnected".into(),
                )));
                continue;
            }
            self.serve(job);
        }
    }

    fn serve(&self, job: Job) {
        let state = self.link.state.read().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = state.slot else {
            job(Err(HsmError::Unavailable(
                "the token is being reconnected".into(),
            )));
            return;
        };
        let mut session = lock(&self.link.sessions[self.n]);
        if session.is_none() {
            match open_logged_in(self.link.pkcs11(), slot, &self.link.pin, 2) {
                Ok(s) => {
                    tracing::info!("token session re-opened");
                    *session = Some(s);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot re-open a token session");
                    if e.is_fatal() {
                        self.link.mark_fatal();
                    }
                    self.link.healthy.store(false, Ordering::Relaxed);
                    job(Err(e));
                    return;
                }
            }
        }
        let Some(s) = session.as_ref() else {
            return;
        };
        let lent = TokenSession {
            session: s,
            generation: state.generation,
        };
        // A panicking job must not take the worker (and its session) down.
        let failure = match std::panic::catch_unwind(AssertUnwindSafe(|| job(Ok(&lent)))) {
            Ok(f) => f,
            Err(_) => {
                tracing::error!("a token job panicked; its session is discarded");
                Some(Fault::Retryable)
            }
        };
        if let Some(fault) = failure {
            tracing::warn!("discarding a broken token session");
            *session = None;
            self.link.healthy.store(false, Ordering::Relaxed);
            if fault == Fault::Fatal {
                self.link.mark_fatal();
            }
        }
    }
}
