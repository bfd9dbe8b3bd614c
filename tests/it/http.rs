//! The HTTP layer under hostile clients: slow heads and bodies, floods of
//! idle connections, wrong paths, panics, probes and a graceful shutdown.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Gateway, RawResponse, Token, error_of};

/// Sends `request` as is and reads until the gateway closes (`connection:
/// close` requests) or 5 s pass.
fn send(addr: &str, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    RawResponse::parse(&bytes)
}

/// Whether the gateway closed `stream` (EOF or reset), without blocking.
fn is_closed(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    let closed = match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// The audit lines of the gateway's log.
fn audit_lines(gw: &Gateway) -> Vec<String> {
    gw.log()
        .lines()
        .filter(|l| l.contains("kmsgate::audit"))
        .map(str::to_owned)
        .collect()
}

fn assert_aws_shaped(r: &RawResponse, status: u16, error_type: &str) {
    assert_eq!(r.status, status, "status of {:?}", r.body);
    assert_eq!(r.body["__type"], error_type);
    assert_eq!(r.header("x-amzn-errortype"), Some(error_type));
    assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.1"));
    assert!(r.header("x-amzn-requestid").is_some(), "no request id");
}

/// One SDK call's latency, which must stay normal under attack.
async fn timed_generate_random(client: &aws_sdk_kms::Client) -> Duration {
    let started = Instant::now();
    client
        .generate_random()
        .number_of_bytes(16)
        .send()
        .await
        .unwrap();
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_at_the_header_timeout_while_clients_are_served() {
    let gw = Gateway::start_on(Token::with_config("[http]\nheader_timeout_ms = 1500\n"));
    let addr = gw.addr.clone();
    let opened = Instant::now();
    // 300 connections that send a partial head, one more byte every 200 ms.
    let attack = std::thread::spawn(move || {
        let mut streams: Vec<TcpStream> = (0..300)
            .map(|_| {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.write_all(b"POST / HTTP/1.1\r\nhost: kms\r\nx-slow: ")
                    .unwrap();
                s
            })
            .collect();
        let mut closed_at = vec![None; streams.len()];
        while closed_at.iter().any(Option::is_none) && opened.elapsed() < Duration::from_secs(6) {
            for (s, at) in streams.iter_mut().zip(closed_at.iter_mut()) {
                if at.is_none() && (s.write_all(b"a").is_err() || is_closed(s)) {
                    *at = Some(opened.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        closed_at
    });
    // Clients keep being served while the attack lasts (about 1.5 s, until
    // the header timeout cuts it): calls keep completing, and fast. A gateway
    // blocked by the attack would complete one or two calls, each waiting
    // for the cut. (A single call may take a second longer, when its new
    // connection's SYN is retransmitted while 300 others are accepted: a
    // bound on every call flaked on that.)
    let client = gw.client();
    let mut latencies = Vec::new();
    while !attack.is_finished() {
        let latency = timed_generate_random(&client).await;
        assert!(latency < Duration::from_secs(3), "a call took {latency:?}");
        latencies.push(latency);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies.sort();
    assert!(
        latencies.len() >= 5,
        "only {} calls completed during the attack: {latencies:?}",
        latencies.len()
    );
    let median = latencies[latencies.len() / 2];
    assert!(
        median < Duration::from_millis(250),
        "median call {median:?} during the attack: {latencies:?}"
    );
    let closed_at = attack.join().unwrap();
    // When a cut is noticed, not when it happened: the loop above writes to
    // and polls 300 sockets every 200 ms, and in the full suite, on 2 busy
    // cores, a pass has once taken over a second (3.85 s seen). 4.5 s still
    // tells a cut at the timeout from a connection left open (6 s).
    for at in &closed_at {
        let at = at.expect("a slowloris connection stayed open for 6 s");
        assert!(
            at >= Duration::from_millis(1200) && at < Duration::from_millis(4500),
            "cut after {at:?}, header timeout 1.5 s"
        );
    }
}

#[test]
fn a_body_that_never_arrives_is_answered_at_the_body_timeout() {
    let gw = Gateway::start_on(Token::with_config("[http]\nbody_timeout_ms = 1000\n"));
    let request = format!(
        "POST / HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-amz-json-1.1\r\n\
         x-amz-target: TrentService.GenerateRandom\r\ncontent-length: 100\r\n\r\n{{",
        gw.addr
    );
    let started = Instant::now();
    let r = send(&gw.addr, request.as_bytes());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(2500),
        "answered after {elapsed:?}, body timeout 1 s"
    );
    assert_aws_shaped(&r, 408, "RequestTimeoutException");
    let id = r.header("x-amzn-requestid").unwrap();
    assert!(
        gw.log_has(|l| l.contains("kmsgate::audit")
            && l.contains(id)
            && l.contains("\"httpStatus\":408")),
        "no audit record for {id}:\n{:#?}",
        audit_lines(&gw)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_idle_connections_are_shed_and_clients_served() {
    let gw = Gateway::start_on(Token::with_config("[http]\nmax_connections = 100\n"));
    let client = gw.client();
    timed_generate_random(&client).await;
    let rss_before = gw.rss_kib();
    let addr = gw.addr.clone();
    let flood = move || {
        let streams: Vec<TcpStream> = (0..500)
            .map(|_| TcpStream::connect(&addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        streams
    };
    let mut first = tokio::task::spawn_blocking(flood.clone()).await.unwrap();
    let rss_after_first = gw.rss_kib();
    let mut second = tokio::task::spawn_blocking(flood).await.unwrap();
    let rss_after_second = gw.rss_kib();

    let latency = timed_generate_random(&client).await;
    assert!(latency < Duration::from_secs(1), "a call took {latency:?}");
    let open = first
        .iter_mut()
        .chain(second.iter_mut())
        .map(|s| !is_closed(s))
        .filter(|open| *open)
        .count();
    eprintln!(
        "connection flood: 1000 idle connections against a limit of 100, {} shed, {open} open; \
         a client call took {latency:?}; RSS {rss_before} KiB before, {rss_after_first} KiB \
         after 500, {rss_after_second} KiB after 1000",
        1000 - open
    );
    assert!(open <= 101, "{open} of 1000 idle connections still open");
    assert!(
        gw.open_fds() < 300,
        "gateway holds {} descriptors",
        gw.open_fds()
    );
    assert!(
        rss_after_second < rss_after_first + 10 * 1024,
        "memory grew from {rss_after_first} KiB to {rss_after_second} KiB"
    );
    assert!(gw.log().contains("connection limit"));
}

#[test]
fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let gw = Gateway::start_on(Token::with_config("[http]\nidle_timeout_ms = 1000\n"));
    let mut stream = TcpStream::connect(&gw.addr).unwrap();
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nhost: {}\r\n\r\n", gw.addr).as_bytes())
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let eof = stream.read(&mut buf);
    let idle = answered.elapsed();
    assert!(matches!(eof, Ok(0)), "expected a close, got {eof:?}");
    assert!(
        idle >= Duration::from_millis(800) && idle < Duration::from_millis(2500),
        "closed after {idle:?} idle, idle timeout 1 s"
    );
}

#[test]
fn refusals_before_an_operation_are_aws_shaped_and_audited() {
    let gw = Gateway::start();
    let host = &gw.addr;

    let wrong_method = send(
        host,
        format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    );
    assert_aws_shaped(&wrong_method, 405, "UnknownOperationException");
    assert_eq!(wrong_method.header("allow"), Some("POST"));

    let wrong_path = send(
        host,
        format!(
            "POST /nope HTTP/1.1\r\nhost: {host}\r\nx-amz-target: TrentService.ListKeys\r\n\
             content-length: 2\r\nconnection: close\r\n\r\n{{}}"
        )
        .as_bytes(),
    );
    assert_aws_shaped(&wrong_path, 404, "UnknownOperationException");

    // Past our head limit (16 KiB) but within hyper's: shaped by us.
    let big = "a".repeat(20 * 1024);
    let big_head = send(
        host,
        format!("POST / HTTP/1.1\r\nhost: {host}\r\nx-big: {big}\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_aws_shaped(&big_head, 431, "RequestEntityTooLargeException");

    // Refused by hyper's parser: not shaped, but audited.
    let garbage = send(host, b"THIS IS NOT HTTP\r\n\r\n");
    assert_eq!(garbage.status, 400);
    let huge = "a".repeat(100 * 1024);
    let huge_head = send(
        host,
        format!("POST / HTTP/1.1\r\nhost: {host}\r\nx-huge: {huge}\r\n\r\n").as_bytes(),
    );
    assert_eq!(huge_head.status, 431);

    std::thread::sleep(Duration::from_millis(300));
    let audit = audit_lines(&gw);
    for (r, status) in [(&wrong_method, 405), (&wrong_path, 404), (&big_head, 431)] {
        let id = r.header("x-amzn-requestid").unwrap();
        assert!(
            audit
                .iter()
                .any(|l| l.contains(id) && l.contains(&format!("\"httpStatus\":{status}"))),
            "no audit record for {id}:\n{audit:#?}"
        );
    }
    assert!(
        audit
            .iter()
            .any(|l| l.contains("\"eventName\":\"ListKeys\"") && l.contains("\"httpStatus\":404"))
    );
    for status in [400, 431] {
        assert!(
            audit.iter().any(|l| l.contains("MalformedHttpRequest")
                && l.contains(&format!("\"httpStatus\":{status}"))),
            "hyper's {status} is not audited:\n{audit:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_internal_exception_and_the_gateway_stays_up() {
    let gw = Gateway::start_on_with_env(
        Token::new(),
        &[("KMSGATE_TEST_PANIC_OPERATION", "GenerateRandom")],
    );
    let client = gw.client();
    let err = client
        .generate_random()
        .number_of_bytes(16)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&err).0, "KMSInternalException");
    let raw = gw.raw(
        Some("TrentService.GenerateRandom"),
        br#"{"NumberOfBytes":8}"#,
        true,
    );
    assert_eq!(raw.status, 500);
    assert_eq!(raw.error_type(), "KMSInternalException");
    assert!(raw.header("x-amzn-requestid").is_some());
    client.list_keys().send().await.unwrap();
    let log = gw.log();
    assert!(log.contains("KMSGATE_TEST_PANIC_OPERATION is set"));
    assert!(log.contains("request handler panicked"));
    assert!(log.contains("ERROR"));
}

#[test]
fn health_and_readiness_probes_answer_200_over_http1_and_h2c() {
    let gw = Gateway::start();
    for path in ["/healthz", "/readyz"] {
        let r = send(
            &gw.addr,
            format!(
                "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
                gw.addr
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 200, "{path}");
        assert!(r.body["status"].is_string(), "{path}: {:?}", r.body);
    }
    // h2c through an independent client: curl is required (scripts/test
    // installs it), never skipped when missing.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-S",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg("--http2-prior-knowledge")
        .arg(format!("{}/readyz", gw.endpoint))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "curl does not run ({e}): install it (apt-get install -y curl; scripts/test does)"
            )
        });
    assert!(
        out.status.success(),
        "curl --http2-prior-knowledge failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
    assert!(
        !audit_lines(&gw)
            .iter()
            .any(|l| l.contains("\"httpStatus\":200")),
        "probes are not audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight_and_exits_zero() {
    let mut gw = Gateway::start_on(Token::with_config("[http]\nshutdown_grace_ms = 5000\n"));
    let client = gw.client();
    let key = crate::common::create_key(&client).await;
    let stopping = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..20 {
        let (client, key, stopping) = (client.clone(), key.clone(), stopping.clone());
        loops.push(tokio::spawn(async move {
            let (mut ok, mut failures) = (0usize, Vec::new());
            loop {
                let sent_while_stopping = stopping.load(Ordering::SeqCst);
                match client
                    .generate_data_key()
                    .key_id(&key)
                    .number_of_bytes(32)
                    .send()
                    .await
                {
                    Ok(_) => ok += 1,
                    // After SIGTERM: a connection refused or closed before
                    // the request was read. Nothing was answered.
                    Err(aws_sdk_kms::error::SdkError::DispatchFailure(_))
                        if stopping.load(Ordering::SeqCst) =>
                    {
                        break;
                    }
                    Err(e) => {
                        failures.push(format!("stopping={sent_while_stopping}: {e:?}"));
                        break;
                    }
                }
            }
            (ok, failures)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stopping.store(true, Ordering::SeqCst);
    let (status, took) = tokio::task::block_in_place(|| gw.stop_and_wait(Duration::from_secs(8)));
    let mut answered = 0;
    for l in loops {
        let (ok, failures) = l.await.unwrap();
        assert!(failures.is_empty(), "requests failed: {failures:#?}");
        answered += ok;
    }
    let status = status.expect("the gateway did not exit within 8 s");
    assert_eq!(status.code(), Some(0), "log:\n{}", gw.log());
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    assert!(answered > 20, "only {answered} answered before SIGTERM");
    let audited = audit_lines(&gw)
        .iter()
        .filter(|l| {
            l.contains("\"eventName\":\"GenerateDataKey\"") && l.contains("\"httpStatus\":200")
        })
        .count();
    assert_eq!(audited, answered, "one audit record per 200 answered");
    let log = gw.log();
    assert!(log.contains("connections drained"), "log:\n{log}");
    assert!(log.contains("deadline_hit=false"), "log:\n{log}");
}

/// Sends `method path` over h2c to `addr` with a 2,048-byte body in two
/// halves, and asserts that no answer comes before the second half (an
/// answer before the body makes hyper reset the stream, which curl reports
/// as error 92 instead of the answer). Returns the status and the JSON body.
pub(crate) async fn h2_answer_after_body(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
) -> (u16, serde_json::Value) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let head = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .header("content-length", "2048")
        .body(())
        .unwrap();
    let (mut response, mut stream) = send.send_request(head, false).unwrap();
    stream
        .send_data(bytes::Bytes::from(vec![b' '; 1024]), false)
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut response)
            .await
            .is_err(),
        "{method} {path}: answered before the body was in"
    );
    stream
        .send_data(bytes::Bytes::from(vec![b' '; 1024]), true)
        .unwrap();
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        text.extend_from_slice(&chunk);
    }
    (status, serde_json::from_slice(&text).unwrap())
}

/// Over HTTP/2 a request to a path or with a method kmsgate does not serve
/// is answered once its body is in, not while the client still sends it.
#[tokio::test]
async fn over_http2_a_refused_path_or_method_is_answered_after_its_body() {
    let gw = Gateway::start();
    for (method, path, status) in [("POST", "/nope", 404), ("PUT", "/", 405)] {
        let (got, v) =
            h2_answer_after_body(&gw.addr, method, path, "application/x-amz-json-1.1").await;
        assert_eq!(got, status, "{method} {path}");
        assert_eq!(v["__type"], "UnknownOperationException", "{method} {path}");
    }
}
