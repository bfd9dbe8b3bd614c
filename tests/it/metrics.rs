//! The Prometheus endpoint (`[metrics] listen`): scraped while the gateway
//! is under load, it has every family operators alert on, with values that
//! follow what the test made happen; under a supervisor one scrape sees
//! every worker.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;

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
        if sum(&body, "kmsgate_key_deletions_total", &[]) >= 1.0 || Instant::now() > deleted {
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
    let log = token.path().join("supervisor.log");
    let (mut child, endpoint) = spawn_serve(
        &token,
        &["--workers", "2"],
        &[],
        &log,
        Duration::from_secs(60),
    );
    let addr = metrics_addr(|| std::fs::read_to_string(&log).unwrap_or_default());
    let gw_client = client_at(&endpoint, ACCESS_KEY, SECRET, REGION);
    create_key(&gw_client).await;

    let (status, body) = tokio::task::spawn_blocking(move || scrape(&addr))
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(status.contains("200"), "{status}");
    for w in ["1", "2"] {
        assert_eq!(
            sum(
                &body,
                "kmsgate_token_sessions",
                &[&format!("worker=\"{w}\"")]
            ),
            2.0,
            "worker {w} missing\n{body}"
        );
    }
    assert_eq!(
        sum(
            &body,
            "kmsgate_requests_total",
            &["operation=\"CreateKey\"", "outcome=\"ok\""]
        ),
        1.0,
        "{body}"
    );
    assert_eq!(sum(&body, "kmsgate_workers_up", &[]), 2.0);
    let mut declared = std::collections::HashSet::new();
    for line in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(
            declared.insert(line.to_owned()),
            "declared twice: {line}\n{body}"
        );
    }
    assert!(declared.len() >= 10, "{body}");
}
