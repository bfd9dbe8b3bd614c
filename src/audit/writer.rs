//! Where records go, and when a request may be answered.
//!
//! With a file, one writer thread owns it. Requests hand it their rendered
//! record; the thread takes everything that arrived since its last write,
//! links it, writes it in one `write` and (sync mode) one `fdatasync`, then
//! wakes every request of the batch: a group commit, so a busy gateway
//! syncs once per batch, not once per request.
//!
//! In sync mode a request is answered only after its record is on disk. If
//! a batch cannot be written (a full disk, an I/O error) its requests are
//! told so and answered 500, and the log is marked failing: until a write
//! succeeds again, requests are refused before their operation runs
//! (their own records are the writes that find out when the disk is back).
//! In async mode nothing waits; records that cannot be written, or that
//! find the queue full, are counted and logged, never dropped silently.
//!
//! With no file, records go to the process log on the `kmsgate::audit`
//! target (one `record=` field holding the line), still chained.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::chain::{ChainStart, ChainState};
use super::file::ChainFile;
use super::record::{self, Event, Realm, ServiceEvent, XksEvent};
use super::{AuditConfig, Durability};
use crate::telemetry;

/// Async mode: records waiting for the writer at most; more are lost (and
/// counted).
const ASYNC_QUEUE_LIMIT: usize = 100_000;

/// The record of a request could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unaudited;

/// The audit log of one gateway process.
pub struct AuditLog {
    realm: Realm,
    context_values: bool,
    sink: Sink,
}

enum Sink {
    /// The process log; the mutex orders the chain.
    ProcessLog(Mutex<ChainState>),
    File {
        shared: Arc<Shared>,
        durability: Durability,
        writer: Option<JoinHandle<()>>,
    },
}

struct Shared {
    queue: Mutex<Queue>,
    arrived: Condvar,
    /// The last write failed (and none succeeded since).
    failing: AtomicBool,
    /// Records never written.
    lost: AtomicU64,
}

#[derive(Default)]
struct Queue {
    entries: Vec<Entry>,
    closed: bool,
}

struct Entry {
    record: String,
    written: Option<oneshot::Sender<bool>>,
}

impl AuditLog {
    /// The audit log `config` describes: its file opened (the chain
    /// continued from its last line), or the process log.
    pub fn open(config: &AuditConfig, realm: Realm) -> io::Result<AuditLog> {
        let sink = match &config.path {
            None => {
                tracing::info!("no [audit] path: audit records go to the process log");
                let chain = match config.worker {
                    // Workers share the process log: each chain says whose it is.
                    Some(worker) => ChainState::begin_declared(ChainStart {
                        worker,
                        pid: std::process::id(),
                    }),
                    None => ChainState::begin(),
                };
                Sink::ProcessLog(Mutex::new(chain))
            }
            Some(path) => {
                let sync = config.durability == Durability::Sync;
                let file = ChainFile::open(path, config.max_file_bytes.max(1), sync)?;
                let shared = Arc::new(Shared {
                    queue: Mutex::new(Queue::default()),
                    arrived: Condvar::new(),
                    failing: AtomicBool::new(false),
                    lost: AtomicU64::new(0),
                });
                let thread_shared = shared.clone();
                let writer = std::thread::Builder::new()
                    .name("audit-writer".into())
                    .spawn(move || write_loop(&thread_shared, file))?;
                Sink::File {
                    shared,
                    durability: config.durability,
                    writer: Some(writer),
                }
            }
        };
        Ok(AuditLog {
            realm,
            context_values: config.log_context_values,
            sink,
        })
    }

    /// Sync mode only: the last write failed, so a request must not run.
    pub fn is_failing(&self) -> bool {
        match &self.sink {
            Sink::File {
                shared,
                durability: Durability::Sync,
                ..
            } => shared.failing.load(Ordering::Acquire),
            _ => false,
        }
    }

    /// Records never written (async mode, or sync-mode batches that failed).
    pub fn lost(&self) -> u64 {
        match &self.sink {
            Sink::File { shared, .. } => shared.lost.load(Ordering::Relaxed),
            Sink::ProcessLog(_) => 0,
        }
    }

    /// Writes the record of `event`. In sync mode, returns once it is on
    /// disk, or `Err` if it cannot be written; otherwise at once.
    pub async fn commit(&self, event: &Event<'_>) -> Result<(), Unaudited> {
        let record = record::render(event, &self.realm, self.context_values);
        self.commit_record(record).await
    }

    /// Writes the record of a service event, in the same chain as the
    /// requests'; returns as [`AuditLog::commit`] does.
    pub async fn commit_service(&self, event: &ServiceEvent<'_>) -> Result<(), Unaudited> {
        let record = record::render_service(event, &self.realm);
        self.commit_record(record).await
    }

    /// Writes the record of an XKS proxy API request, in the same chain;
    /// returns as [`AuditLog::commit`] does.
    pub async fn commit_xks(&self, event: &XksEvent<'_>) -> Result<(), Unaudited> {
        let record = record::render_xks(event, &self.realm);
        self.commit_record(record).await
    }

    async fn commit_record(&self, record: String) -> Result<(), Unaudited> {
        match &self.sink {
            Sink::ProcessLog(chain) => {
                to_process_log(chain, &record);
                Ok(())
            }
            Sink::File {
                shared,
                durability: Durability::Sync,
                ..
            } => {
                let (tx, rx) = oneshot::channel();
                if !shared.push(record, Some(tx)) {
                    return Err(Unaudited);
                }
                match rx.await {
                    Ok(true) => Ok(()),
                    _ => Err(Unaudited),
                }
            }
            Sink::File { shared, .. } => {
                shared.push(record, None);
                Ok(())
            }
        }
    }

    /// Writes the record of `event` without waiting: for a request already
    /// answered (one that hyper's parser refused).
    pub fn submit(&self, event: &Event<'_>) {
        let record = record::render(event, &self.realm, self.context_values);
        match &self.sink {
            Sink::ProcessLog(chain) => to_process_log(chain, &record),
            Sink::File { shared, .. } => {
                shared.push(record, None);
            }
        }
    }
}

fn to_process_log(chain: &Mutex<ChainState>, record: &str) {
    let start = Instant::now();
    let mut chain = chain.lock().unwrap_or_else(|p| p.into_inner());
    let line = chain.link(record);
    tracing::info!(target: "kmsgate::audit", record = %line);
    chain.advance(&line);
    drop(chain);
    telemetry::audit_write("process_log", start.elapsed());
}

impl Shared {
    /// Queues a record; `false` if it was lost instead (queue closed or,
    /// without a waiter, full).
    fn push(&self, record: String, written: Option<oneshot::Sender<bool>>) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.closed || (written.is_none() && q.entries.len() >= ASYNC_QUEUE_LIMIT) {
            drop(q);
            let lost = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
            telemetry::audit_lost(1);
            if lost.is_power_of_two() {
                tracing::error!(lost, "audit records lost: the audit writer is behind");
            }
            return false;
        }
        q.entries.push(Entry { record, written });
        drop(q);
        self.arrived.notify_one();
        true
    }
}

/// The writer thread: a batch at a time until the log is dropped and the
/// queue is empty.
fn write_loop(shared: &Shared, mut file: ChainFile) {
    let mut last_error_log: Option<Instant> = None;
    loop {
        let batch = {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            while q.entries.is_empty() && !q.closed {
                q = shared.arrived.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.entries.is_empty() {
                break;
            }
            std::mem::take(&mut q.entries)
        };
        let records: Vec<String> = batch.iter().map(|e| e.record.clone()).collect();
        let start = Instant::now();
        let appended = file.append(&records);
        telemetry::audit_write("file", start.elapsed());
        let ok = match appended {
            Ok(()) => {
                if shared.failing.swap(false, Ordering::AcqRel) {
                    tracing::warn!(
                        lost = shared.lost.load(Ordering::Relaxed),
                        "the audit log is writable again; requests are served"
                    );
                }
                true
            }
            Err(e) => {
                shared.failing.store(true, Ordering::Release);
                let lost = shared.lost.fetch_add(batch.len() as u64, Ordering::Relaxed)
                    + batch.len() as u64;
                telemetry::audit_lost(batch.len() as u64);
                let due = last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                if due {
                    last_error_log = Some(Instant::now());
                    tracing::error!(
                        error = %e,
                        lost,
                        "cannot write the audit log: requests fail until it is writable again"
                    );
                }
                false
            }
        };
        for entry in batch {
            if let Some(tx) = entry.written {
                let _ = tx.send(ok);
            }
        }
    }
    file.close();
}

impl Drop for AuditLog {
    /// Writes what is queued, then stops the writer thread.
    fn drop(&mut self) {
        if let Sink::File { shared, writer, .. } = &mut self.sink {
            shared
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .closed = true;
            shared.arrived.notify_all();
            if let Some(w) = writer.take() {
                let _ = w.join();
            }
            let lost = shared.lost.load(Ordering::Relaxed);
            if lost > 0 {
                tracing::warn!(lost, "audit records were lost while this gateway ran");
            }
        }
    }
}
