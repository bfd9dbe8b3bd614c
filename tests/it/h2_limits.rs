//! HTTP/2 under hostile clients: many streams per connection that send a
//! head and part of a body and stall (the h2 form of slowloris), and a body
//! timeout on one stream.

use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};

use crate::common::{Gateway, Token};

/// The default limits these tests rely on (docs/configuration.md `[http]`):
/// pre-authentication body bytes one connection may hold, and the HTTP/2
/// flow-control window the gateway grants a connection.
const CONNECTION_BODY_BYTES: u64 = 256 * 1024;
const H2_WINDOW: u64 = 64 * 1024;

/// An h2c (prior knowledge) connection, its driver running in a task.
async fn h2c(
    addr: &str,
) -> (
    SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    (send, tokio::spawn(connection))
}

/// A KMS request head (unsigned: it never gets as far as the signature)
/// declaring a `declared`-byte body.
fn head(addr: &str, declared: usize) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "TrentService.GenerateRandom")
        .header("content-length", declared.to_string())
        .body(())
        .unwrap()
}

/// Starts up to `streams` streams on `send`, each sending `part` of a
/// `declared`-byte body and then nothing (the h2 crate queues the streams
/// past the gateway's SETTINGS_MAX_CONCURRENT_STREAMS until a slot frees).
/// Returns the stalled streams.
async fn stall(
    mut send: SendRequest<Bytes>,
    addr: &str,
    streams: usize,
    declared: usize,
    part: &Bytes,
) -> Vec<(ResponseFuture, SendStream<Bytes>)> {
    let mut stalled = Vec::new();
    for _ in 0..streams {
        send = match tokio::time::timeout(Duration::from_millis(500), send.ready()).await {
            Ok(Ok(send)) => send,
            _ => break,
        };
        let Ok((response, mut body)) = send.send_request(head(addr, declared), false) else {
            break;
        };
        body.send_data(part.clone(), false).unwrap();
        stalled.push((response, body));
    }
    stalled
}

/// One SDK call's latency.
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
async fn stalled_h2_streams_hold_no_more_memory_than_the_limits_allow_while_clients_are_served() {
    // Default limits: 64 KiB bodies, a 10 s body timeout (longer than the
    // attack below lasts).
    let gw = Gateway::start();
    let client = gw.client();
    timed_generate_random(&client).await;
    let rss_before = gw.rss_kib();

    // 16 connections x 128 streams, each sending 60000 bytes of a declared
    // 65536-byte body: 123 MB if every stream's part is buffered.
    const CONNECTIONS: usize = 16;
    const STREAMS: usize = 128;
    let part = Bytes::from(vec![b'x'; 60_000]);
    let mut attacks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (addr, part) = (gw.addr.clone(), part.clone());
        attacks.push(tokio::spawn(async move {
            let (send, driver) = h2c(&addr).await;
            let stalled = stall(send, &addr, STREAMS, 65_536, &part).await;
            (stalled, driver)
        }));
    }
    let mut held = Vec::new();
    for a in attacks {
        held.push(a.await.unwrap());
    }
    let started: usize = held.iter().map(|(s, _)| s.len()).sum();

    // While the streams stall: clients are served, and the gateway's
    // memory is sampled.
    let mut rss_peak = 0;
    let mut latencies = Vec::new();
    for _ in 0..6 {
        latencies.push(timed_generate_random(&client).await);
        rss_peak = rss_peak.max(gw.rss_kib());
        tokio::time::sleep(Duration::from_millis(400)).await;
        rss_peak = rss_peak.max(gw.rss_kib());
    }
    let grown_kib = rss_peak.saturating_sub(rss_before);
    // What the limits allow: each connection's body budget plus what its
    // flow-control window lets the HTTP/2 layer hold, with 16 MiB for the
    // streams' own state, the allocator and the runtime.
    let bound_kib = CONNECTIONS as u64 * (CONNECTION_BODY_BYTES + H2_WINDOW) / 1024 + 16 * 1024;
    eprintln!(
        "h2 stalled streams: {started} started on {CONNECTIONS} connections; RSS {rss_before} KiB \
         before, {rss_peak} KiB at peak (+{grown_kib} KiB, bound {bound_kib} KiB); \
         client calls took {latencies:?}"
    );
    assert!(
        grown_kib < bound_kib,
        "{started} stalled h2 streams grew the gateway by {grown_kib} KiB, bound {bound_kib} KiB"
    );
    for latency in &latencies {
        assert!(
            *latency < Duration::from_secs(3),
            "a call took {latency:?}: {latencies:?}"
        );
    }
    // The attack was still in place when the last sample was taken.
    for (_, driver) in &held {
        assert!(!driver.is_finished(), "an attacking connection was closed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_h2_body_is_answered_at_the_body_timeout_its_stream_reset_and_the_connection_sent_away()
 {
    let gw = Gateway::start_on(Token::with_config("[http]\nbody_timeout_ms = 1000\n"));
    let (send, driver) = h2c(&gw.addr).await;
    let mut send = send.ready().await.unwrap();
    let (response, mut body) = send.send_request(head(&gw.addr, 100), false).unwrap();
    body.send_data(Bytes::from_static(b"{"), false).unwrap();
    let started = Instant::now();

    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("no answer within 5 s")
        .unwrap();
    let answered = started.elapsed();
    assert!(
        answered >= Duration::from_millis(900) && answered < Duration::from_millis(2500),
        "answered after {answered:?}, body timeout 1 s"
    );
    assert_eq!(response.status(), 408);
    assert_eq!(
        response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok()),
        Some("RequestTimeoutException")
    );
    assert!(response.headers().get("x-amzn-requestid").is_some());
    assert!(
        response.headers().get("connection").is_none(),
        "a connection header over HTTP/2"
    );
    let error = read_all(response.into_body()).await;
    assert!(error.contains("RequestTimeoutException"), "{error}");

    // The rest of the body is not wanted: the stream is reset.
    let reset = tokio::time::timeout(
        Duration::from_secs(2),
        std::future::poll_fn(|cx| body.poll_reset(cx)),
    )
    .await
    .expect("the stalled stream was not reset");
    assert!(
        matches!(reset, Ok(h2::Reason::NO_ERROR | h2::Reason::CANCEL)),
        "{reset:?}"
    );

    // And the connection is told to go away (GOAWAY, then closed), as an
    // HTTP/1.1 connection is closed after a body timeout: it does not stay
    // open until the idle timeout (60 s).
    let ended = tokio::time::timeout(Duration::from_secs(3), driver).await;
    assert!(
        ended.is_ok(),
        "the connection stayed open {:?} after the body timeout",
        started.elapsed()
    );
    drop(send);

    // The gateway still serves h2 on a new connection.
    let (send, _driver) = h2c(&gw.addr).await;
    let mut send = send.ready().await.unwrap();
    let probe = http::Request::builder()
        .uri(format!("http://{}/healthz", gw.addr))
        .body(())
        .unwrap();
    let (response, _) = send.send_request(probe, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_the_connections_body_budget_is_refused_with_throttling_exception() {
    let gw = Gateway::start();
    let (send, _driver) = h2c(&gw.addr).await;
    // Four 64 KiB bodies spend the connection's 256 KiB; the fifth stream
    // to ask finds none within a second and is refused, AWS-shaped, instead
    // of being read (it would have waited for the 10 s body timeout).
    let stalled = stall(send, &gw.addr, 5, 65_536, &Bytes::from_static(b"{")).await;
    assert_eq!(stalled.len(), 5);
    let mut bodies = Vec::new();
    let mut waiting = Vec::new();
    for (response, body) in stalled {
        bodies.push(body);
        waiting.push(tokio::spawn(response));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (answered, still): (Vec<_>, Vec<_>) = waiting.into_iter().partition(|w| w.is_finished());
    assert_eq!(
        (answered.len(), still.len()),
        (1, 4),
        "one of five streams is refused, the four within the budget wait for their bodies"
    );
    let response = answered.into_iter().next().unwrap().await.unwrap().unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok()),
        Some("ThrottlingException")
    );
    assert!(response.headers().get("x-amzn-requestid").is_some());
    let error = read_all(response.into_body()).await;
    assert!(error.contains("ThrottlingException"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_wide_body_budget_is_shared_by_every_connection() {
    let gw = Gateway::start_on(Token::with_config(
        "[http]\nconnection_body_bytes = 131072\npending_body_bytes = 131072\n",
    ));
    // Two 64 KiB bodies on one connection spend the whole process's budget:
    // a stream on another connection, within its own connection's budget,
    // is refused.
    let (send, _first) = h2c(&gw.addr).await;
    let part = Bytes::from_static(b"{");
    let holding = stall(send, &gw.addr, 2, 65_536, &part).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (send, _second) = h2c(&gw.addr).await;
    let mut refused = stall(send, &gw.addr, 1, 65_536, &part).await;
    let (response, _body) = refused.pop().unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("the stream past the process's budget was not answered within 5 s")
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok()),
        Some("ThrottlingException")
    );
    // Over HTTP/1.1 too, every body needs budget: a signed GenerateRandom
    // is refused until the holders give theirs back.
    let raw = gw.raw(
        Some("TrentService.GenerateRandom"),
        br#"{"NumberOfBytes":8}"#,
        true,
    );
    assert_eq!(raw.status, 400, "{:?}", raw.body);
    assert_eq!(raw.error_type(), "ThrottlingException");
    drop(holding);
    // Giving up the stalled streams (RST_STREAM) gives the budget back.
    let mut served = None;
    for _ in 0..20 {
        let raw = gw.raw(
            Some("TrentService.GenerateRandom"),
            br#"{"NumberOfBytes":8}"#,
            true,
        );
        if raw.status == 200 {
            served = Some(raw);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served.is_some(),
        "no budget came back once the streams were reset"
    );
}

async fn read_all(mut body: RecvStream) -> String {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
