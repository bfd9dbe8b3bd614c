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
//! them within [`GENERAL_ERROR_WINDOW`] are taken as fatal.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::HsmError;
use super::error::Fault;
use super::link::{Link, lock, open_logged_in, reconnecting};
use super::metered::Metered;
use super::random::RandomSource;
use crate::telemetry::{self, Throttle, Timeout};

/// A session lent to a job, with the generation of the library
/// initialisation it belongs to. Only this layer can look inside.
pub struct TokenSession<'a> {
    pub(super) session: Metered<'a>,
    pub(super) generation: u64,
    pub(super) random: &'a RandomSource,
}

impl TokenSession<'_> {
    /// Fills `out` with bytes from the token's RNG ([`RandomSource`]).
    pub(super) fn random_into(&self, out: &mut [u8]) -> Result<(), HsmError> {
        self.random.fill(self.session, out)
    }

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
    queued: Instant,
    deadline: Instant,
    /// Set when the caller stopped waiting (its call deadline passed).
    abandoned: Arc<AtomicBool>,
}

/// CKR_GENERAL_ERRORs within [`GENERAL_ERROR_WINDOW`] that are taken as a
/// fatal fault. Successes of other calls between them prove nothing: a
/// SoftHSM2 whose token directory went away answers C_GetSessionInfo but
/// CKR_GENERAL_ERROR to anything touching objects, and only a
/// re-initialisation makes it read the directory again.
pub const GENERAL_ERRORS_FATAL: u32 = 3;
pub const GENERAL_ERROR_WINDOW: Duration = Duration::from_secs(10);

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
}

impl Pool {
    pub(super) fn start(link: Arc<Link>, settings: PoolSettings) -> Result<Pool, HsmError> {
        let (sender, receiver) =
            crossbeam_channel::bounded::<Envelope>(settings.queue_depth.max(1));
        let mut workers = Vec::with_capacity(settings.sessions);
        let (slot, _) = link.slot()?;
        for n in 0..link.sessions.len() {
            // Open every session before serving, so a bad token fails start-up.
            *lock(&link.sessions[n]) = Some(open_logged_in(
                link.pkcs11(),
                slot,
                &link.pin(),
                &link.gate,
                8,
            )?);
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
        telemetry::token_sessions(workers.len());
        Ok(Pool {
            link,
            sender: Some(sender),
            workers,
            queue_timeout: settings.queue_timeout,
            call_timeout: settings.call_timeout,
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

    /// As [`run`](Self::run), with a call deadline at least `at_least`:
    /// for work that is slow by nature (generating an RSA key pair takes
    /// seconds on a software token).
    pub async fn run_patient<T, F>(&self, at_least: Duration, f: F) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: FnOnce(&TokenSession<'_>) -> Result<T, HsmError> + Send + 'static,
    {
        self.run_within(self.queue_timeout, self.call_timeout.max(at_least), f)
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
        let abandoned = Arc::new(AtomicBool::new(false));
        let link = self.link.clone();
        let job: Job = Box::new(move |session| {
            let result = session.and_then(f);
            let general = match &result {
                Err(e) if e.is_general_error() => link.count_general_error(),
                _ => 0,
            };
            let failure = match &result {
                Err(e) if general >= GENERAL_ERRORS_FATAL => {
                    tracing::error!(error = %e, within_secs = GENERAL_ERROR_WINDOW.as_secs(), repeated = general, "CKR_GENERAL_ERROR keeps coming: taken as fatal");
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
        let now = Instant::now();
        let envelope = Envelope {
            job,
            queued: now,
            deadline: now + queue_deadline,
            abandoned: abandoned.clone(),
        };
        match sender.try_send(envelope) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                telemetry::throttled(Throttle::TokenQueueFull);
                return Err(HsmError::Busy);
            }
            Err(TrySendError::Disconnected(_)) => return Err(HsmError::Closed),
        }
        match tokio::time::timeout(call_deadline, answer).await {
            Ok(Ok(result)) => result,
            // The worker dropped the job without answering: it panicked.
            Ok(Err(_)) => Err(HsmError::Closed),
            Err(_) => {
                abandoned.store(true, Ordering::Relaxed);
                telemetry::timed_out(Timeout::TokenCall);
                Err(HsmError::CallTimeout(
                    u64::try_from(call_deadline.as_millis()).unwrap_or(u64::MAX),
                ))
            }
        }
    }

    /// Token work waiting for a session now.
    pub fn queued(&self) -> usize {
        self.sender.as_ref().map_or(0, Sender::len)
    }

    /// Whether the token is usable as far as this process knows: no reset
    /// pending and the last call did not fail at the device.
    pub fn is_healthy(&self) -> bool {
        self.link.is_healthy()
    }

    /// See [`Link::request_reread`].
    pub fn request_reread(&self) -> bool {
        self.link.request_reread()
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
            queued,
            deadline,
            abandoned,
        }) = self.receiver.recv()
        {
            let now = Instant::now();
            telemetry::token_wait(now - queued);
            if now > deadline {
                telemetry::timed_out(Timeout::TokenQueue);
                job(Err(HsmError::QueueTimeout));
                continue;
            }
            if abandoned.load(Ordering::Relaxed) {
                job(Err(HsmError::QueueTimeout));
                continue;
            }
            if !self.link.try_reset() {
                job(Err(reconnecting()));
                continue;
            }
            telemetry::token_busy(true);
            self.serve(job);
            telemetry::token_busy(false);
        }
    }

    fn serve(&self, job: Job) {
        let state = self.link.state.read().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = state.slot else {
            job(Err(reconnecting()));
            return;
        };
        let mut session = lock(&self.link.sessions[self.n]);
        if session.is_none() {
            match open_logged_in(
                self.link.pkcs11(),
                slot,
                &self.link.pin(),
                &self.link.gate,
                2,
            ) {
                Ok(s) => {
                    tracing::info!("token session re-opened");
                    *session = Some(s);
                }
                // Logged once, where it was refused.
                Err(e @ HsmError::PinRefused(_)) => {
                    self.link.healthy.store(false, Ordering::Relaxed);
                    job(Err(e));
                    return;
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
            session: Metered(s),
            generation: state.generation,
            random: &self.link.random,
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
