//! Metrics: what every layer counts and times, under names written here
//! only, exported in the Prometheus text format (`[metrics]` in the config,
//! docs/operations.md "Metrics").
//!
//! The layers record through the `metrics` facade, by the functions below;
//! with no `[metrics] listen` configured no recorder is installed and each
//! of them costs a load of the facade's no-op recorder. With one, the
//! process installs `metrics-exporter-prometheus`'s recorder. A single
//! gateway serves its own endpoint; under a supervisor every worker
//! labels its series `worker="N"` and answers the supervisor's scrape on
//! its control channel, and the supervisor serves them all at once
//! ([`merge`]), so one scrape sees every process.
//!
//! Label values are bounded: operations are TrentService's names (anything
//! else is `unknown`), outcomes are AWS error names, functions are PKCS#11
//! function names. Key ids appear only with `metrics.key_labels = true`.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

pub const REQUESTS: &str = "kmsgate_requests_total";
pub const REQUEST_SECONDS: &str = "kmsgate_request_duration_seconds";
pub const THROTTLED: &str = "kmsgate_throttled_total";
pub const TIMEOUTS: &str = "kmsgate_timeouts_total";
pub const TOKEN_CALL_SECONDS: &str = "kmsgate_token_call_duration_seconds";
pub const TOKEN_WAIT_SECONDS: &str = "kmsgate_token_queue_wait_seconds";
pub const TOKEN_SESSIONS: &str = "kmsgate_token_sessions";
pub const TOKEN_SESSIONS_BUSY: &str = "kmsgate_token_sessions_busy";
pub const TOKEN_QUEUED: &str = "kmsgate_token_queued";
pub const TOKEN_RESETS: &str = "kmsgate_token_resets_total";
pub const TOKEN_HEALTHY: &str = "kmsgate_token_healthy";
pub const READY: &str = "kmsgate_ready";
pub const GCM_BOUND: &str = "kmsgate_gcm_usage_bound";
pub const GCM_MAX_RATIO: &str = "kmsgate_gcm_usage_max_ratio";
pub const GCM_RESERVED: &str = "kmsgate_gcm_encryptions_reserved";
pub const ROTATIONS: &str = "kmsgate_key_rotations_total";
pub const DELETIONS: &str = "kmsgate_key_deletions_total";
pub const SYNC_ROUNDS: &str = "kmsgate_sync_rounds_total";
pub const SYNC_RELOADS: &str = "kmsgate_sync_reloads_total";
pub const SYNC_LAG: &str = "kmsgate_sync_lag_seconds";
pub const AUDIT_WRITE_SECONDS: &str = "kmsgate_audit_write_duration_seconds";
pub const AUDIT_LOST: &str = "kmsgate_audit_records_lost_total";
pub const CONNECTIONS: &str = "kmsgate_connections_open";
pub const WORKERS_UP: &str = "kmsgate_workers_up";
pub const WORKER_RESTARTS: &str = "kmsgate_worker_restarts_total";
pub const BUILD_INFO: &str = "kmsgate_build_info";
pub const XKS_REQUESTS: &str = "kmsgate_xks_requests_total";
pub const XKS_REQUEST_SECONDS: &str = "kmsgate_xks_request_duration_seconds";

/// Latency buckets, in seconds: 100 µs (a SoftHSM2 call) to 10 s (an RSA
/// key pair on a software token).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
/// When the last sync round succeeded (ms since the epoch; 0: never).
static LAST_SYNC_MS: AtomicU64 = AtomicU64::new(0);
/// `metrics.key_labels`.
static KEY_LABELS: AtomicBool = AtomicBool::new(false);
/// Sessions in the token pool, set again at each scrape.
static SESSIONS: AtomicU64 = AtomicU64::new(0);

/// Installs the Prometheus recorder for this process; `worker` labels
/// every series of a worker process; `key_labels` is
/// `metrics.key_labels`. Idempotent: a second call keeps the first
/// recorder.
pub fn install(worker: Option<usize>, key_labels: bool) -> Result<(), String> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    KEY_LABELS.store(key_labels, Ordering::Relaxed);
    let mut builder = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .map_err(|e| format!("metrics: {e}"))?
        // Per-key gauges of deleted keys go away. Every gauge that is not
        // set again at each scrape (or more often) is set in `render`.
        .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(600)));
    if let Some(n) = worker {
        builder = builder.add_global_label("worker", n.to_string());
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| format!("metrics: {e}"))?;
    let _ = HANDLE.set(handle);
    describe();
    // Histograms are summed into their buckets when rendered; the upkeep
    // keeps that work small between scrapes.
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(|| {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                if let Some(h) = HANDLE.get() {
                    h.run_upkeep();
                }
            }
        })
        .map_err(|e| format!("metrics: cannot start the upkeep thread: {e}"))?;
    Ok(())
}

/// Whether [`install`] ran (a metrics endpoint is configured).
pub fn enabled() -> bool {
    HANDLE.get().is_some()
}

/// This process's metrics in the text format (empty if not installed).
pub fn render() -> String {
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let sessions = SESSIONS.load(Ordering::Relaxed);
    if sessions != 0 {
        gauge!(TOKEN_SESSIONS).set(sessions as f64);
    }
    if LAST_SYNC_MS.load(Ordering::Relaxed) != 0 {
        gauge!(SYNC_LAG).set(sync_lag().as_secs_f64());
    }
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS,
        "KMS requests answered, by operation and outcome (ok or the AWS error name)"
    );
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Time from a request's arrival to its answer, audit record included"
    );
    describe_counter!(
        THROTTLED,
        "Work refused for load: a full token queue (ThrottlingException), a connection shed or refused at the limit"
    );
    describe_counter!(
        TIMEOUTS,
        "Deadlines passed: token queue, token call, request head, request body"
    );
    describe_histogram!(
        TOKEN_CALL_SECONDS,
        Unit::Seconds,
        "Time of PKCS#11 calls, by function"
    );
    describe_histogram!(
        TOKEN_WAIT_SECONDS,
        Unit::Seconds,
        "Time token work waited in the queue for a session"
    );
    describe_gauge!(TOKEN_SESSIONS, "Sessions in the token pool");
    describe_gauge!(TOKEN_SESSIONS_BUSY, "Pool sessions running token work now");
    describe_gauge!(TOKEN_QUEUED, "Token work waiting for a session now");
    describe_counter!(
        TOKEN_RESETS,
        "PKCS#11 library re-initialisations after a fault"
    );
    describe_gauge!(TOKEN_HEALTHY, "1 while the token answers, 0 after a fault");
    describe_gauge!(READY, "1 while /readyz answers 200");
    describe_gauge!(
        GCM_BOUND,
        "AES-GCM encryptions one key version may do (keys.gcm_usage_bound)"
    );
    describe_gauge!(
        GCM_MAX_RATIO,
        "Highest share of the GCM bound reserved by any primary key version"
    );
    describe_gauge!(
        GCM_RESERVED,
        "GCM encryptions reserved per key version (metrics.key_labels only)"
    );
    describe_counter!(ROTATIONS, "Key rotations made by this process, by type");
    describe_counter!(
        DELETIONS,
        "Keys deleted (pending window over) by this process"
    );
    describe_counter!(SYNC_ROUNDS, "Sync rounds with the token, by result");
    describe_counter!(
        SYNC_RELOADS,
        "Cached keys and aliases reloaded because another process changed them"
    );
    describe_gauge!(
        SYNC_LAG,
        Unit::Seconds,
        "Time since the last successful sync round: the bound on how far this process may be behind other gateways"
    );
    describe_histogram!(
        AUDIT_WRITE_SECONDS,
        Unit::Seconds,
        "Time to write a batch of audit records, by sink"
    );
    describe_counter!(AUDIT_LOST, "Audit records that could not be written");
    describe_gauge!(CONNECTIONS, "Open client connections");
    describe_gauge!(WORKERS_UP, "Worker processes serving (supervisor)");
    describe_counter!(WORKER_RESTARTS, "Worker processes restarted (supervisor)");
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label");
    describe_counter!(
        XKS_REQUESTS,
        "XKS proxy API requests answered, by store, operation and outcome (ok or the XKS error name)"
    );
    describe_histogram!(
        XKS_REQUEST_SECONDS,
        Unit::Seconds,
        "Time from an XKS request's arrival to its answer, audit record included"
    );
}

/// A KMS request answered: `operation` is a TrentService operation name
/// or `unknown`, `outcome` is `ok` or an AWS error name (the caller keeps
/// the label set bounded whatever clients send).
pub fn request(operation: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(REQUESTS, "operation" => operation, "outcome" => outcome).increment(1);
    histogram!(REQUEST_SECONDS, "operation" => operation).record(elapsed);
}

/// An XKS proxy API request answered: `store` is a configured store's name
/// (or `unknown` for a path no store has), `operation` one of
/// metadata/encrypt/decrypt/health (or `unknown`), `outcome` `ok` or an
/// XKS error name: a bounded label set whatever clients send.
pub fn xks_request(store: &str, operation: &'static str, outcome: &'static str, elapsed: Duration) {
    let store = store.to_owned();
    counter!(XKS_REQUESTS, "store" => store.clone(), "operation" => operation, "outcome" => outcome)
        .increment(1);
    histogram!(XKS_REQUEST_SECONDS, "store" => store, "operation" => operation).record(elapsed);
}

/// Why work was refused for load.
#[derive(Debug, Clone, Copy)]
pub enum Throttle {
    TokenQueueFull,
    ConnectionShed,
    ConnectionRefused,
}

pub fn throttled(why: Throttle) {
    let reason = match why {
        Throttle::TokenQueueFull => "token_queue_full",
        Throttle::ConnectionShed => "connection_shed",
        Throttle::ConnectionRefused => "connection_refused",
    };
    counter!(THROTTLED, "reason" => reason).increment(1);
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy)]
pub enum Timeout {
    TokenQueue,
    TokenCall,
    RequestHead,
    RequestBody,
}

pub fn timed_out(which: Timeout) {
    let kind = match which {
        Timeout::TokenQueue => "token_queue",
        Timeout::TokenCall => "token_call",
        Timeout::RequestHead => "request_head",
        Timeout::RequestBody => "request_body",
    };
    counter!(TIMEOUTS, "kind" => kind).increment(1);
}

/// A PKCS#11 call took `elapsed`.
pub fn token_call(function: &'static str, elapsed: Duration) {
    histogram!(TOKEN_CALL_SECONDS, "function" => function).record(elapsed);
}

/// Token work waited `elapsed` for a session.
pub fn token_wait(elapsed: Duration) {
    histogram!(TOKEN_WAIT_SECONDS).record(elapsed);
}

pub fn token_sessions(n: usize) {
    SESSIONS.store(n as u64, Ordering::Relaxed);
}

/// A session started (`true`) or finished (`false`) a piece of work.
pub fn token_busy(started: bool) {
    let g = gauge!(TOKEN_SESSIONS_BUSY);
    if started {
        g.increment(1.0);
    } else {
        g.decrement(1.0);
    }
}

pub fn token_queued(n: usize) {
    gauge!(TOKEN_QUEUED).set(n as f64);
}

pub fn token_reset() {
    counter!(TOKEN_RESETS).increment(1);
}

/// Readiness, as `/readyz` would answer now.
pub fn health(ready: bool, token_healthy: bool) {
    gauge!(READY).set(f64::from(u8::from(ready)));
    gauge!(TOKEN_HEALTHY).set(f64::from(u8::from(token_healthy)));
}

/// One key version's GCM encryptions reserved so far.
pub struct GcmUsage {
    pub key_id: String,
    pub version: u32,
    pub reserved: u64,
}

/// The GCM usage of the primary versions, against `bound`.
pub fn gcm_usage(bound: u64, usage: &[GcmUsage]) {
    gauge!(GCM_BOUND).set(bound as f64);
    let max = usage.iter().map(|u| u.reserved).max().unwrap_or(0);
    gauge!(GCM_MAX_RATIO).set(if bound == 0 {
        0.0
    } else {
        max as f64 / bound as f64
    });
    if KEY_LABELS.load(Ordering::Relaxed) {
        for u in usage {
            gauge!(GCM_RESERVED, "key_id" => u.key_id.clone(), "version" => u.version.to_string())
                .set(u.reserved as f64);
        }
    }
}

/// A key rotated: `kind` is `automatic` (schedule or GCM bound) or
/// `on_demand`.
pub fn rotation(kind: &'static str) {
    counter!(ROTATIONS, "type" => kind).increment(1);
}

pub fn deletion() {
    counter!(DELETIONS).increment(1);
}

/// A sync round ended; `reloads` keys and aliases were reloaded.
pub fn sync_round(ok: bool, reloads: usize) {
    counter!(SYNC_ROUNDS, "result" => if ok { "ok" } else { "failed" }).increment(1);
    if ok {
        LAST_SYNC_MS.store(now_ms(), Ordering::Relaxed);
        if reloads > 0 {
            counter!(SYNC_RELOADS).increment(reloads as u64);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn sync_lag() -> Duration {
    Duration::from_millis(now_ms().saturating_sub(LAST_SYNC_MS.load(Ordering::Relaxed)))
}

/// A batch of audit records written to `sink` (`file` or `process_log`).
pub fn audit_write(sink: &'static str, elapsed: Duration) {
    histogram!(AUDIT_WRITE_SECONDS, "sink" => sink).record(elapsed);
}

pub fn audit_lost(n: u64) {
    counter!(AUDIT_LOST).increment(n);
}

pub fn connections(open: usize) {
    gauge!(CONNECTIONS).set(open as f64);
}

pub fn workers_up(n: usize) {
    gauge!(WORKERS_UP).set(n as f64);
}

pub fn worker_restart() {
    counter!(WORKER_RESTARTS).increment(1);
}

/// Joins expositions of several processes into one: each family's `HELP`
/// and `TYPE` once, then the samples of every process in turn. (Each
/// process's series differ by their `worker` label.)
pub fn merge(texts: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut families: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    for text in texts {
        let mut current: Option<String> = None;
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            let (name, header) = if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                (rest.split(' ').next().unwrap_or_default().to_owned(), true)
            } else if line.starts_with('#') {
                continue;
            } else {
                let sample = line.split(['{', ' ']).next().unwrap_or_default();
                let family = match &current {
                    Some(f) if sample.starts_with(f.as_str()) => f.clone(),
                    _ => sample.to_owned(),
                };
                (family, false)
            };
            let entry = families.entry(name.clone()).or_insert_with(|| {
                order.push(name.clone());
                (Vec::new(), Vec::new())
            });
            if header {
                if !entry.0.iter().any(|h| h == line) {
                    entry.0.push(line.to_owned());
                }
            } else {
                entry.1.push(line.to_owned());
            }
            current = Some(name);
        }
    }
    let mut out = String::new();
    for name in order {
        let (headers, samples) = &families[&name];
        for line in headers.iter().chain(samples) {
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_families_have_one_header_and_every_process_samples() {
        let one = "# HELP a_total A.\n# TYPE a_total counter\na_total{worker=\"1\"} 3\n\n\
                   # TYPE h histogram\nh_bucket{worker=\"1\",le=\"1\"} 1\nh_sum{worker=\"1\"} 0.5\nh_count{worker=\"1\"} 1\n";
        let two = "# HELP a_total A.\n# TYPE a_total counter\na_total{worker=\"2\"} 4\n\n\
                   # TYPE b gauge\nb{worker=\"2\"} 1\n";
        let merged = merge(&[one.to_owned(), two.to_owned()]);
        assert_eq!(merged.matches("# TYPE a_total counter").count(), 1);
        let a = merged.find("a_total{worker=\"1\"}").unwrap();
        let a2 = merged.find("a_total{worker=\"2\"}").unwrap();
        let h = merged.find("# TYPE h histogram").unwrap();
        // Both processes' samples sit together under the one header.
        assert!(a < a2 && a2 < h, "{merged}");
        assert!(merged.contains("h_count{worker=\"1\"} 1"));
        assert!(merged.contains("# TYPE b gauge\nb{worker=\"2\"} 1"));
    }
}
