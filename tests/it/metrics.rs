//! The Prometheus endpoint (`[metrics] listen`): scraped while the gateway
//! is under load, it has every family operators alert on, with values that
//! follow what the test made happen; under a supervisor one scrape sees
//! every worker. The families, their types and labels are read from the
//! table in docs/operations.md, and each of them is checked by one of the
//! tests here (those that need a token fault, a full audit disk or a dead
//! worker by the tests that make them happen).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::disk::SmallDisk;
use crate::common::*;
use crate::workers::{Supervised, kill};

/// The address `GET /metrics` is served on, from the process's log.
pub fn metrics_addr(log: impl Fn() -> String) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(addr) = log().lines().find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("metrics="))
                .map(|a| a.trim_matches('"').to_owned())
        }) {
            return addr;
        }
        assert!(Instant::now() < until, "no metrics address in the log");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /metrics`: the status line and the body.
pub fn scrape(addr: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_owned();
    // Chunked or not: the exposition's lines survive, chunk sizes are
    // lines of hex digits that match no sample below.
    (status, body.to_owned())
}

/// Samples by their full name with labels: `name{a="b"} value`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("kmsgate_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of the samples whose series starts with `prefix` and has every
/// one of `labels`.
pub fn sum(text: &str, prefix: &str, labels: &[&str]) -> f64 {
    samples(text)
        .iter()
        .filter(|(k, _)| {
            (k.starts_with(&format!("{prefix}{{")) || k.as_str() == prefix)
                && labels.iter().all(|l| k.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

/// A family as the table in docs/operations.md "Metrics" lists it.
#[derive(Debug, Clone)]
struct Family {
    name: String,
    kind: String,
    labels: Vec<String>,
}

/// The backticked words of a table cell.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The families docs/operations.md lists, with their types and labels
/// (a row may name two families, with one type each or one for both).
fn documented() -> Vec<Family> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let section = text
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/operations.md has a Metrics section");
    let mut families = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `kmsgate_")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let names = backticked(cells[1]);
        let kinds: Vec<&str> = cells[2].split(',').map(str::trim).collect();
        assert!(
            kinds.len() == 1 || kinds.len() == names.len(),
            "types do not match the names: {row}"
        );
        for (i, name) in names.iter().enumerate() {
            families.push(Family {
                name: name.clone(),
                kind: kinds[i.min(kinds.len() - 1)].to_owned(),
                labels: backticked(cells[3]),
            });
        }
    }
    assert!(families.len() >= 20, "{families:?}");
    families
}

/// The documented family called `name`.
fn family(name: &str) -> Family {
    documented()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("docs/operations.md does not list {name}"))
}

/// The label names of a sample line (`name{a="x",b="y"} 1`).
fn label_names(sample: &str) -> Vec<String> {
    let Some((_, rest)) = sample.split_once('{') else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut rest = rest;
    while let Some((name, after)) = rest.split_once("=\"") {
        names.push(name.trim_start_matches(',').to_owned());
        // The value ends at the first quote not escaped.
        let mut escaped = false;
        let end = after
            .char_indices()
            .find(|&(_, c)| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end
            })
            .map_or(after.len(), |(i, _)| i);
        rest = &after[(end + 1).min(after.len())..];
        if rest.starts_with('}') {
            break;
        }
    }
    names
}

/// What is wrong with `f` in the exposition `body`: its `# TYPE` line,
/// and samples that are missing or whose label names are not the
/// documented ones plus `extra` (and `le` on a histogram's buckets).
fn family_problems(body: &str, f: &Family, extra: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let declared = format!("# TYPE {} {}", f.name, f.kind);
    if !body.lines().any(|l| l == declared) {
        problems.push(format!("no `{declared}`"));
    }
    let mut seen = 0;
    for sample in body.lines().filter(|l| !l.starts_with('#')) {
        let name = sample.split(['{', ' ']).next().unwrap_or_default();
        let bucket = f.kind == "histogram" && name == format!("{}_bucket", f.name);
        let own = name == f.name
            || (f.kind == "histogram"
                && (bucket
                    || name == format!("{}_sum", f.name)
                    || name == format!("{}_count", f.name)));
        if !own {
            continue;
        }
        seen += 1;
        let mut got = label_names(sample);
        got.sort();
        let mut want: Vec<String> = f
            .labels
            .iter()
            .cloned()
            .chain(extra.iter().map(|l| (*l).to_owned()))
            .chain(bucket.then(|| "le".to_owned()))
            .collect();
        want.sort();
        if got != want {
            problems.push(format!("labels {got:?}, documented {want:?}: {sample}"));
        }
    }
    if seen == 0 {
        problems.push("no sample".into());
    }
    problems
}

/// Checks the families called `names` in `body` (see [`family_problems`]).
pub(crate) fn assert_families(body: &str, names: &[&str], extra: &[&str]) {
    let problems: Vec<String> = names
        .iter()
        .flat_map(|n| {
            family_problems(body, &family(n), extra)
                .into_iter()
                .map(move |p| format!("{n}: {p}"))
        })
        .collect();
    assert!(problems.is_empty(), "{}\n{body}", problems.join("\n"));
}

/// The families a healthy single gateway under load shows
/// ([`scraped_under_load_the_endpoint_has_every_family_with_values_that_follow_the_traffic`]).
const UNDER_LOAD: &[&str] = &[
    "kmsgate_requests_total",
    "kmsgate_request_duration_seconds",
    "kmsgate_throttled_total",
    "kmsgate_timeouts_total",
    "kmsgate_token_call_duration_seconds",
    "kmsgate_token_queue_wait_seconds",
    "kmsgate_token_sessions",
    "kmsgate_token_sessions_busy",
    "kmsgate_token_queued",
    "kmsgate_token_healthy",
    "kmsgate_ready",
    "kmsgate_gcm_usage_bound",
    "kmsgate_gcm_usage_max_ratio",
    "kmsgate_gcm_encryptions_reserved",
    "kmsgate_key_rotations_total",
    "kmsgate_key_deletions_total",
    "kmsgate_sync_rounds_total",
    "kmsgate_sync_reloads_total",
    "kmsgate_sync_lag_seconds",
    "kmsgate_audit_write_duration_seconds",
    "kmsgate_connections_open",
    "kmsgate_build_info",
];
/// The families only a fault makes
/// ([`a_token_fault_and_a_full_audit_disk_are_counted`]).
const AFTER_FAULTS: &[&str] = &[
    "kmsgate_token_resets_total",
    "kmsgate_audit_records_lost_total",
];
/// The supervisor's own families
/// ([`under_a_supervisor_one_scrape_sees_every_worker_with_each_family_declared_once`]).
const SUPERVISOR: &[&str] = &["kmsgate_workers_up", "kmsgate_worker_restarts_total"];
/// The XKS proxy API's families (`xks::metrics`).
pub(crate) const XKS: &[&str] = &[
    "kmsgate_xks_requests_total",
    "kmsgate_xks_request_duration_seconds",
];

#[test]
fn every_family_docs_operations_md_lists_is_checked_and_every_family_the_code_names_is_listed() {
    let listed: std::collections::BTreeSet<String> =
        documented().into_iter().map(|f| f.name).collect();
    let checked: std::collections::BTreeSet<String> = [UNDER_LOAD, AFTER_FAULTS, SUPERVISOR, XKS]
        .concat()
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        listed, checked,
        "listed in docs/operations.md / checked here"
    );
    // The names are written in src/telemetry.rs only.
    let code =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/telemetry.rs")).unwrap();
    let named: std::collections::BTreeSet<String> = code
        .split('"')
        .filter(|w| {
            w.starts_with("kmsgate_") && w.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(
        named, listed,
        "named in src/telemetry.rs / listed in docs/operations.md"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scraped_under_load_the_endpoint_has_every_family_with_values_that_follow_the_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let token = Token::with_config(&format!(
        r#"
[metrics]
listen = "127.0.0.1:0"
key_labels = true

[keys]
sync_interval_ms = 200
scheduler_interval_ms = 200

[http]
max_connections = 8
header_timeout_ms = 400

[audit]
path = "{}/audit.jsonl"
"#,
        dir.path().display()
    ));
    let gw = Gateway::start_on(token.clone());
    let addr = metrics_addr(|| gw.log());
    let client = gw.client();

    let key = create_key(&client).await;
    let doomed = create_key(&client).await;
    client
        .schedule_key_deletion()
        .key_id(&doomed)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    client
        .rotate_key_on_demand()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    let missing = client
        .describe_key()
        .key_id("11111111-2222-3333-4444-555555555555")
        .send()
        .await;
    assert!(missing.is_err());
    // A key made through a second gateway on the token: this one reloads
    // it at its next sync round.
    // Its own audit trail: one process writes a chain at a time.
    let config = std::fs::read_to_string(token.config()).unwrap();
    let other_config = dir.path().join("other.toml");
    std::fs::write(
        &other_config,
        config.replace("/audit.jsonl\"", "/other-audit.jsonl\""),
    )
    .unwrap();
    let (mut other, endpoint) = spawn_serve_with(
        &token,
        &other_config,
        &[],
        &[],
        &dir.path().join("other.log"),
        Duration::from_secs(30),
    );
    create_key(&client_at(&endpoint, ACCESS_KEY, SECRET, REGION)).await;
    let _ = other.kill();
    let _ = other.wait();

    // Load: four clients encrypting and decrypting while the endpoint is
    // scraped over and over.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, key, stop) = (gw.client(), key.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let blob = encrypt(&client, &key, b"metrics load").await;
                assert_eq!(decrypt(&client, blob).await, b"metrics load");
                n += 1;
            }
            n
        }));
    }
    let scraper = {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut last = 0.0;
            for _ in 0..10 {
                let (status, body) = scrape(&addr);
                assert!(status.contains("200"), "{status}");
                let ok = sum(&body, "kmsgate_requests_total", &["outcome=\"ok\""]);
                assert!(ok >= last, "a counter went down: {last} then {ok}");
                last = ok;
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    scraper.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut round_trips = 0;
    for l in load {
        round_trips += l.await.unwrap();
    }
    assert!(round_trips > 0);
    // A head that never finishes (the header timeout), and idle
    // connections past the connection limit (shed).
    let mut slow = TcpStream::connect(&gw.addr).unwrap();
    slow.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let idle: Vec<_> = (0..10)
        .map(|_| TcpStream::connect(&gw.addr).unwrap())
        .collect();
    // The deletion falls due.
    token.set_clock_days_ahead(8);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Counted once its record is written (the deletion's own, too).
    let deleted = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (_, body) = scrape(&addr);
        if (sum(&body, "kmsgate_key_deletions_total", &[]) >= 1.0
            && sum(&body, "kmsgate_sync_reloads_total", &[]) >= 1.0)
            || Instant::now() > deleted
        {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop((slow, idle));

    let encrypts = sum(
        &body,
        "kmsgate_requests_total",
        &["operation=\"Encrypt\"", "outcome=\"ok\""],
    );
    assert!(
        encrypts >= f64::from(round_trips),
        "{encrypts} Encrypts counted, {round_trips} made\n{body}"
    );
    assert_eq!(
        sum(
            &body,
            "kmsgate_requests_total",
            &["operation=\"DescribeKey\"", "outcome=\"NotFoundException\""]
        ),
        1.0
    );
    assert!(
        sum(
            &body,
            "kmsgate_request_duration_seconds_count",
            &["operation=\"Decrypt\""]
        ) >= f64::from(round_trips)
    );
    assert!(
        body.contains(
            "kmsgate_request_duration_seconds_bucket{operation=\"Encrypt\",le=\"0.005\"}"
        )
    );
    for function in [
        "C_Encrypt",
        "C_Decrypt",
        "C_GenerateRandom",
        "C_CreateObject",
        "C_FindObjects",
    ] {
        assert!(
            sum(
                &body,
                "kmsgate_token_call_duration_seconds_count",
                &[&format!("function=\"{function}\"")]
            ) >= 1.0,
            "no {function} timings\n{body}"
        );
    }
    assert_eq!(sum(&body, "kmsgate_token_sessions", &[]), 2.0);
    assert!(body.contains("kmsgate_token_sessions_busy"));
    assert!(body.contains("kmsgate_token_queued"));
    assert!(sum(&body, "kmsgate_token_queue_wait_seconds_count", &[]) >= f64::from(round_trips));
    assert!(
        sum(
            &body,
            "kmsgate_throttled_total",
            &["reason=\"connection_shed\""]
        ) >= 1.0,
        "{body}"
    );
    assert!(
        sum(&body, "kmsgate_timeouts_total", &["kind=\"request_head\""]) >= 1.0,
        "{body}"
    );
    // GCM: a block of 2^20 reserved of the 2^30 bound, on the key's new
    // primary version.
    assert_eq!(
        sum(&body, "kmsgate_gcm_usage_bound", &[]),
        f64::from(1u32 << 30)
    );
    assert_eq!(sum(&body, "kmsgate_gcm_usage_max_ratio", &[]), 1.0 / 1024.0);
    assert_eq!(
        sum(
            &body,
            "kmsgate_gcm_encryptions_reserved",
            &[&format!("key_id=\"{key}\""), "version=\"2\""]
        ),
        f64::from(1u32 << 20),
        "{body}"
    );
    assert_eq!(
        sum(
            &body,
            "kmsgate_key_rotations_total",
            &["type=\"on_demand\""]
        ),
        1.0
    );
    assert_eq!(
        sum(&body, "kmsgate_key_deletions_total", &[]),
        1.0,
        "{body}"
    );
    assert!(sum(&body, "kmsgate_sync_rounds_total", &["result=\"ok\""]) >= 3.0);
    let lag = sum(&body, "kmsgate_sync_lag_seconds", &[]);
    assert!((0.0..5.0).contains(&lag), "sync lag {lag}");
    assert!(
        sum(
            &body,
            "kmsgate_audit_write_duration_seconds_count",
            &["sink=\"file\""]
        ) >= 1.0
    );
    assert_eq!(sum(&body, "kmsgate_ready", &[]), 1.0);
    assert_eq!(sum(&body, "kmsgate_token_healthy", &[]), 1.0);
    assert!(
        sum(&body, "kmsgate_sync_reloads_total", &[]) >= 1.0,
        "the other gateway's key was not reloaded\n{body}"
    );
    // A connection held open is counted (the gauge is set as the
    // connections are reaped, several times per head timeout).
    let held = TcpStream::connect(&gw.addr).unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, now) = scrape(&addr);
        if sum(&now, "kmsgate_connections_open", &[]) >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "a held connection not counted\n{now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    assert_eq!(
        sum(
            &body,
            "kmsgate_build_info",
            &[&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))]
        ),
        1.0,
        "{body}"
    );
    // Every family docs/operations.md lists for a gateway of its own is
    // there, declared with its type and carrying its documented labels.
    assert_families(&body, UNDER_LOAD, &[]);
    // No secret or plaintext in it, and nothing but the metrics path.
    assert!(!body.contains(SECRET) && !body.contains(PIN));
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /other HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
}

#[tokio::test]
async fn under_a_supervisor_one_scrape_sees_every_worker_with_each_family_declared_once() {
    let token = Token::with_config(
        r#"
[metrics]
listen = "127.0.0.1:0"
"#,
    );
    let gw = Supervised::start(token, "2");
    let addr = metrics_addr(|| gw.log());
    create_key(&gw.client()).await;
    // A worker killed and replaced: the supervisor counts the restart.
    let workers = gw.workers();
    assert_eq!(workers.len(), 2);
    kill("KILL", workers[0]);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let now = gw.workers();
        if now.len() == 2 && !now.contains(&workers[0]) {
            break;
        }
        assert!(Instant::now() < until, "worker {} not replaced", workers[0]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The replacement answers the scrape once it is ready.
    let until = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let addr = addr.clone();
        let (status, body) = tokio::task::spawn_blocking(move || scrape(&addr))
            .await
            .unwrap();
        assert!(status.contains("200"), "{status}");
        if sum(&body, "kmsgate_workers_up", &[]) == 2.0
            && ["1", "2"].iter().all(|w| {
                sum(
                    &body,
                    "kmsgate_token_sessions",
                    &[&format!("worker=\"{w}\"")],
                ) == 2.0
            })
        {
            break body;
        }
        assert!(
            Instant::now() < until,
            "not both workers in the scrape\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        sum(&body, "kmsgate_worker_restarts_total", &[]),
        1.0,
        "{body}"
    );
    // The CreateKey was served by a worker still running, or by the one
    // killed (its series went with it).
    assert!(
        sum(
            &body,
            "kmsgate_requests_total",
            &["operation=\"CreateKey\"", "outcome=\"ok\""]
        ) <= 1.0,
        "{body}"
    );
    // The supervisor's own families carry no worker label; the workers'
    // carry theirs.
    assert_families(&body, SUPERVISOR, &[]);
    assert_families(
        &body,
        &["kmsgate_token_sessions", "kmsgate_sync_rounds_total"],
        &["worker"],
    );
    let mut declared = std::collections::HashSet::new();
    for line in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(
            declared.insert(line.to_owned()),
            "declared twice: {line}\n{body}"
        );
    }
    assert!(declared.len() >= 10, "{body}");
}

/// A token fault (the device gone for 1.5 s, so the library is
/// re-initialised) and a full audit disk (a batch of records lost) are
/// counted in the two families a healthy run never shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_fault_and_a_full_audit_disk_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let disk = match SmallDisk::mount(dir.path(), 256) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SKIPPED: cannot mount a small tmpfs (needs root): {e}");
            return;
        }
    };
    let token = Token::with_faulty_hsm(
        "call_timeout_ms = 1000\nqueue_timeout_ms = 1000",
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:0\"\n\n[audit]\npath = \"{}/audit.log\"\n",
            dir.path().display()
        ),
    );
    let gw = Gateway::start_faulty_on(token);
    let addr = metrics_addr(|| gw.log());
    let kms = gw.client();
    let key = create_key(&kms).await;
    let served = || async {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let r = kms
                .generate_data_key()
                .key_id(&key)
                .number_of_bytes(32)
                .send()
                .await;
            if r.is_ok() {
                return;
            }
            assert!(Instant::now() < until, "not served again: {r:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };

    let faults = gw.faults();
    faults.set("* fail 0x32 for 1500ms");
    for _ in 0..3 {
        let r = kms
            .generate_data_key()
            .key_id(&key)
            .number_of_bytes(32)
            .send()
            .await;
        assert!(r.is_err(), "served with the device gone");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The read-back helper, a process of its own, would start the rule's
    // window afresh: the fault ends for good before the service resumes.
    faults.clear();
    served().await;

    disk.fill();
    let mut refused = 0;
    for _ in 0..10 {
        let r = kms
            .generate_data_key()
            .key_id(&key)
            .number_of_bytes(32)
            .send()
            .await;
        refused += usize::from(r.is_err());
    }
    assert!(
        refused >= 1,
        "every request served with the audit disk full"
    );
    disk.free();
    served().await;

    let (status, body) = tokio::task::spawn_blocking(move || scrape(&addr))
        .await
        .unwrap();
    assert!(status.contains("200"), "{status}");
    assert!(
        sum(&body, "kmsgate_token_resets_total", &[]) >= 1.0,
        "{body}"
    );
    assert!(
        sum(&body, "kmsgate_audit_records_lost_total", &[]) >= 1.0,
        "{body}"
    );
    assert_eq!(sum(&body, "kmsgate_token_healthy", &[]), 1.0, "{body}");
    assert_families(&body, AFTER_FAULTS, &[]);
}
