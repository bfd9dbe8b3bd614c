//! Token sessions on dedicated worker threads.
//!
//! cryptoki calls block, and a `Session` is `Send` but not `Sync`, so each
//! session lives on its own OS thread for its whole life and work is sent to
//! it over one bounded queue that all workers share. The async side never
//! blocks: it enqueues a closure and awaits a oneshot reply.
//!
//! Back-pressure is explicit (DESIGN.md decision 10): a full queue refuses
//! work at once ([`HsmError::Busy`]), and work that waited past its deadline
//! is answered with [`HsmError::QueueTimeout`] without touching the token.
//! Either becomes a fast, retryable error for the client, never a hang.
//!
//! The number of sessions is a measured choice, not the core count: SoftHSM2
//! serialises internally and gets slower past two threads in one process.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::{HsmError, open_logged_in};

/// A unit of work: it gets the worker's session (or why there is none) and
/// answers whether that session must be discarded.
type Job = Box<dyn FnOnce(Result<&Session, HsmError>) -> bool + Send>;

struct Envelope {
    job: Job,
    deadline: Instant,
}

pub struct Pool {
    sender: Option<Sender<Envelope>>,
    workers: Vec<JoinHandle<()>>,
    queue_timeout: Duration,
}

impl Pool {
    pub(super) fn start(
        pkcs11: Pkcs11,
        slot: Slot,
        pin: AuthPin,
        sessions: usize,
        queue_depth: usize,
        queue_timeout: Duration,
    ) -> Result<Pool, HsmError> {
        let (sender, receiver) = crossbeam_channel::bounded::<Envelope>(queue_depth.max(1));
        let mut workers = Vec::with_capacity(sessions);
        for n in 0..sessions {
            // Open every session before serving, so a bad token fails start-up.
            let session = open_logged_in(&pkcs11, slot, &pin)?;
            let worker = Worker {
                pkcs11: pkcs11.clone(),
                slot,
                pin: pin.clone(),
                session: Some(session),
                receiver: receiver.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("pkcs11-{n}"))
                .spawn(move || worker.run())
                .map_err(|e| HsmError::Setup(format!("cannot start worker thread: {e}")))?;
            workers.push(handle);
        }
        Ok(Pool {
            sender: Some(sender),
            workers,
            queue_timeout,
        })
    }

    /// Runs `f` with a session on a worker thread and returns its result,
    /// or fails fast if it cannot start within the queue deadline.
    pub async fn run<T, F>(&self, f: F) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: FnOnce(&Session) -> Result<T, HsmError> + Send + 'static,
    {
        self.run_within(self.queue_timeout, f).await
    }

    /// As [`run`](Self::run), with its own deadline: start-up work is not
    /// a client request and must not fail on a short request deadline.
    pub async fn run_within<T, F>(&self, deadline: Duration, f: F) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: FnOnce(&Session) -> Result<T, HsmError> + Send + 'static,
    {
        let sender = self.sender.as_ref().ok_or(HsmError::Closed)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |session| {
            let result = session.and_then(f);
            let broken = matches!(&result, Err(e) if e.session_is_broken());
            // The requester may have gone away (client disconnected); fine.
            let _ = reply.send(result);
            broken
        });
        let envelope = Envelope {
            job,
            deadline: Instant::now() + deadline,
        };
        match sender.try_send(envelope) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(HsmError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(HsmError::Closed),
        }
        answer.await.map_err(|_| HsmError::Closed)?
    }

    /// Stops accepting work, lets the workers drain the queue, and joins them.
    pub fn shutdown(mut self) {
        self.sender = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

struct Worker {
    pkcs11: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    session: Option<Session>,
    receiver: Receiver<Envelope>,
}

impl Worker {
    fn run(mut self) {
        while let Ok(Envelope { job, deadline }) = self.receiver.recv() {
            if Instant::now() > deadline {
                job(Err(HsmError::QueueTimeout));
                continue;
            }
            if self.session.is_none() {
                match open_logged_in(&self.pkcs11, self.slot, &self.pin) {
                    Ok(s) => {
                        tracing::info!("token session re-opened");
                        self.session = Some(s);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot re-open a token session");
                        job(Err(e));
                        continue;
                    }
                }
            }
            let Some(session) = self.session.as_ref() else {
                continue;
            };
            if job(Ok(session)) {
                tracing::warn!("discarding a broken token session");
                self.session = None;
            }
        }
    }
}
