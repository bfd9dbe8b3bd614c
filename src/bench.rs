//! `kmsgate bench-token`: the token's raw ceiling for GenerateDataKey.
//!
//! One GenerateDataKey costs the token one C_GenerateRandom (data key and IV
//! together) and one AES-GCM C_Encrypt under the master key version, with
//! the blob header and the encoded encryption context as AAD. This module
//! does exactly that work, through the real hsm layer ([`Hsm::open`] and
//! [`crypto::generate_data_key`]), on N OS threads that each own a session
//! outside the pool, with no HTTP, no JSON, no SigV4 and no queue. The rate
//! it reaches is the ceiling the gateway's GenerateDataKey is compared with
//! (`scripts/bench`, docs/benchmarks.md).
//!
//! `--op encrypt` and `--op decrypt` measure the token work of Encrypt (a
//! 12-byte IV from the RNG, C_Encrypt of `--bytes` bytes) and of Decrypt (one
//! C_Decrypt of a data key's ciphertext) the same way, so that every HTTP
//! workload has a ceiling to be compared with.
//!
//! The master key version it uses is a throw-away one labelled
//! `kmsgate/bench/<uuid>`, created at the start and destroyed at the end; it
//! has no key record, so the key store never lists it.

use std::io::Write;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;
use zeroize::Zeroizing;

use crate::blob::{self, EncryptionContext, Header};
use crate::config::{Config, IvSource};
use crate::hsm::objects::{self, MasterKeyVersion};
use crate::hsm::{Hsm, HsmError, OwnedSession, TokenSession, crypto};
use crate::server::{StartError, hsm_settings};

/// The token work one request of an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// C_GenerateRandom (key and IV) + C_Encrypt of the key.
    GenerateDataKey,
    /// C_GenerateRandom (IV) + C_Encrypt of `bytes` bytes.
    Encrypt,
    /// C_Decrypt of the ciphertext of a `bytes`-byte data key.
    Decrypt,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::GenerateDataKey => "generate-data-key",
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
        }
    }

    /// The plaintext lengths the KMS operation accepts.
    fn max_bytes(self) -> usize {
        match self {
            // GenerateDataKey's NumberOfBytes.
            Op::GenerateDataKey | Op::Decrypt => 1024,
            // Encrypt's Plaintext.
            Op::Encrypt => 4096,
        }
    }
}

impl std::str::FromStr for Op {
    type Err = String;

    fn from_str(s: &str) -> Result<Op, String> {
        match s {
            "generate-data-key" => Ok(Op::GenerateDataKey),
            "encrypt" => Ok(Op::Encrypt),
            "decrypt" => Ok(Op::Decrypt),
            _ => Err(format!(
                "unknown op '{s}' (generate-data-key, encrypt or decrypt)"
            )),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub op: Op,
    /// OS threads, each with its own logged-in session.
    pub threads: usize,
    /// How long every thread loops.
    pub duration: Duration,
    /// Data key or plaintext length (GenerateDataKey's AES_256 is 32).
    pub bytes: usize,
}

/// What one thread did.
#[derive(Debug, Clone)]
pub struct ThreadResult {
    pub ops: u64,
    pub elapsed: Duration,
}

impl ThreadResult {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Report {
    pub threads: Vec<ThreadResult>,
    /// From the common start to the last thread's end.
    pub wall: Duration,
    /// The process's CPU time (user + system) over the run, in clock ticks
    /// (`getconf CLK_TCK` per second), where /proc has it.
    pub cpu_ticks: Option<u64>,
    pub op: Op,
    pub bytes: usize,
}

impl Report {
    pub fn total_ops(&self) -> u64 {
        self.threads.iter().map(|t| t.ops).sum()
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.total_ops() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// One machine-readable line: `key=value` pairs separated by spaces.
    pub fn line(&self) -> String {
        let per_thread: Vec<String> = self
            .threads
            .iter()
            .map(|t| format!("{:.1}", t.ops_per_sec()))
            .collect();
        format!(
            "raw_ops_per_sec={:.1} op={} threads={} seconds={:.2} bytes={} ops={} errors=0 per_thread_ops_per_sec={} cpu_ticks={} peak_rss_kib={}",
            self.ops_per_sec(),
            self.op.name(),
            self.threads.len(),
            self.wall.as_secs_f64(),
            self.bytes,
            self.total_ops(),
            per_thread.join(","),
            self.cpu_ticks
                .map_or_else(|| "unknown".to_owned(), |t| t.to_string()),
            peak_rss_kib().map_or_else(|| "unknown".to_owned(), |k| k.to_string()),
        )
    }
}

/// This process's peak resident set size (VmHWM), where /proc has it: the
/// token library's own memory, with the token's objects loaded.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// This process's CPU time so far (utime + stime), in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Opens the token named in `config`, runs the benchmark and prints its
/// line on stdout.
pub fn run_from_config(config: &Config, options: &Options) -> Result<Report, StartError> {
    if options.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    if options.duration.is_zero() {
        return Err("--seconds must be more than 0".into());
    }
    let max = options.op.max_bytes();
    if !(1..=max).contains(&options.bytes) {
        return Err(format!("--bytes must be 1-{max} for --op {}", options.op.name()).into());
    }
    let hsm = Hsm::open(hsm_settings(config)?)?;
    let result = run(&hsm, options);
    hsm.shutdown();
    let report = result?;
    let mut out = std::io::stdout();
    writeln!(out, "{}", report.line())?;
    out.flush()?;
    Ok(report)
}

/// Runs the benchmark on an open token: creates the throw-away master key
/// version, loops on `options.threads` threads, destroys the key.
pub fn run(hsm: &Hsm, options: &Options) -> Result<Report, StartError> {
    let control = hsm.open_session()?;
    let key_id = Uuid::new_v4();
    let label = format!("kmsgate/bench/{key_id}");
    let key = objects::generate_master_key(&control.lend(), &label, key_id.as_bytes(), false)?;
    tracing::info!(
        %label,
        op = options.op.name(),
        threads = options.threads,
        seconds = options.duration.as_secs_f64(),
        "bench-token: master key version created"
    );
    let result = run_with_key(hsm, &control.lend(), key, key_id, options);
    if let Err(e) = objects::destroy_master_key(&control.lend(), key) {
        tracing::warn!(%label, error = %e, "bench-token: could not destroy the bench key");
    }
    result
}

fn run_with_key(
    hsm: &Hsm,
    control: &TokenSession,
    key: MasterKeyVersion,
    key_id: Uuid,
    options: &Options,
) -> Result<Report, StartError> {
    // What the operations pass as AAD: the 22-byte blob header and a
    // one-pair encryption context, canonically encoded.
    let header = Header {
        key_id,
        key_version: 1,
    };
    let context = EncryptionContext::from([("purpose".to_owned(), "bench".to_owned())]);
    let aad = blob::aad(&header, &context);
    let iv_source = hsm.capabilities().iv_source;

    // The work is real: a data key decrypts back to its plaintext. Its
    // ciphertext is what `--op decrypt` decrypts.
    let probe = crypto::generate_data_key(control, key, iv_source, &aad, options.bytes)?;
    let back = crypto::decrypt(control, key, iv_source, &probe.iv, &aad, &probe.ciphertext)?;
    if probe.plaintext.as_deref().map(Vec::as_slice) != Some(back.as_slice())
        || back.len() != options.bytes
    {
        return Err("bench-token: a data key did not decrypt to its plaintext".into());
    }
    let work = Work {
        op: options.op,
        key,
        iv_source,
        aad,
        plaintext: crypto::random(control, options.bytes)?,
        iv: probe.iv,
        ciphertext: probe.ciphertext,
        bytes: options.bytes,
    };

    let mut sessions = Vec::with_capacity(options.threads);
    for _ in 0..options.threads {
        sessions.push(hsm.open_session()?);
    }
    let gate = Gate::default();
    let (results, wall, cpu_ticks) = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(n, session)| {
                let (gate, work) = (&gate, &work);
                std::thread::Builder::new()
                    .name(format!("bench-{n}"))
                    .spawn_scoped(scope, move || worker(session, work, options.duration, gate))
            })
            .collect();
        // Start every thread at once, or none if one could not be started.
        let cpu_before = cpu_ticks();
        gate.open(handles.iter().all(Result::is_ok));
        let start = Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(HsmError::Setup("a bench thread panicked".into()))),
                Err(e) => Err(HsmError::Setup(format!("cannot start a bench thread: {e}"))),
            })
            .collect();
        let wall = start.elapsed();
        let cpu = cpu_ticks()
            .zip(cpu_before)
            .map(|(after, before)| after.saturating_sub(before));
        (results, wall, cpu)
    });
    let mut threads = Vec::with_capacity(results.len());
    for r in results {
        threads.push(r?);
    }
    Ok(Report {
        threads,
        wall,
        cpu_ticks,
        op: options.op,
        bytes: options.bytes,
    })
}

/// Everything a thread needs for one operation; shared read-only.
struct Work {
    op: Op,
    key: MasterKeyVersion,
    iv_source: IvSource,
    aad: Vec<u8>,
    /// What `Op::Encrypt` encrypts.
    plaintext: Zeroizing<Vec<u8>>,
    /// What `Op::Decrypt` decrypts.
    iv: [u8; crypto::IV_LEN],
    ciphertext: Vec<u8>,
    bytes: usize,
}

impl Work {
    fn once(&self, session: &TokenSession) -> Result<(), HsmError> {
        match self.op {
            Op::GenerateDataKey => {
                let dk = crypto::generate_data_key(
                    session,
                    self.key,
                    self.iv_source,
                    &self.aad,
                    self.bytes,
                )?;
                std::hint::black_box(&dk);
            }
            Op::Encrypt => {
                let sealed = crypto::encrypt(
                    session,
                    self.key,
                    self.iv_source,
                    &self.aad,
                    &self.plaintext,
                )?;
                std::hint::black_box(&sealed);
            }
            Op::Decrypt => {
                let plain = crypto::decrypt(
                    session,
                    self.key,
                    self.iv_source,
                    &self.iv,
                    &self.aad,
                    &self.ciphertext,
                )?;
                std::hint::black_box(&plain);
            }
        }
        Ok(())
    }
}

fn worker(
    session: OwnedSession,
    work: &Work,
    duration: Duration,
    gate: &Gate,
) -> Result<ThreadResult, HsmError> {
    if !gate.wait() {
        return Err(HsmError::Setup("bench aborted before it started".into()));
    }
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < duration {
        work.once(&session.lend())?;
        ops += 1;
    }
    Ok(ThreadResult {
        ops,
        elapsed: start.elapsed(),
    })
}

/// Holds the threads until all are ready, then lets them go (or not) at once.
#[derive(Default)]
struct Gate {
    go: Mutex<Option<bool>>,
    opened: Condvar,
}

impl Gate {
    fn open(&self, go: bool) {
        *self.go.lock().unwrap_or_else(|e| e.into_inner()) = Some(go);
        self.opened.notify_all();
    }

    /// Blocks until [`Gate::open`]; answers whether to run.
    fn wait(&self) -> bool {
        let mut go = self.go.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(go) = *go {
                return go;
            }
            go = self.opened.wait(go).unwrap_or_else(|e| e.into_inner());
        }
    }
}
