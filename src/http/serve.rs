//! The serving loop: accepts connections under the connection limit, serves
//! each with hyper (HTTP/1.1 keep-alive and h2c prior knowledge on one
//! port; under TLS, HTTP/1.1 and h2 negotiated by ALPN), applies the
//! timeouts, and drains on shutdown.
//!
//! A TLS handshake is part of the connection's first request head: it
//! counts against the connection limit and must finish, with that head,
//! within the header timeout. A failed handshake closes the connection.
//!
//! axum's own `serve` has no connection limit and no header, body or idle
//! timeout, so anyone able to open TCP connections could exhaust the file
//! descriptors; this loop is the same hyper underneath with those added.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use super::budget::BodyBudget;
use super::conn::{Admit, Close, ConnState, RequestGuard, TrackedIo, Tracker};
use super::tls::{ClientCert, Tls, client_cert_of};
use super::{fdlimit, refusal};
use crate::audit::AuditLog;

/// Limits and timeouts of the serving loop (the `[http]` config table).
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// HTTP/2 streams in flight on one connection at most.
    pub max_concurrent_streams: u32,
    /// Body bytes one connection may be receiving before authentication
    /// ([`budget`](super::budget)), and all of them together.
    pub connection_body_bytes: usize,
    pub pending_body_bytes: usize,
    /// Serve TLS rather than plain HTTP.
    pub tls: Option<Arc<Tls>>,
}

/// How a drain on shutdown went.
#[derive(Debug, Clone, Copy)]
pub struct Drained {
    pub connections: usize,
    pub cut: usize,
    pub deadline_hit: bool,
}

/// Serves `router` on `listener` until `shutdown` completes; then stops
/// accepting at once, lets requests in flight finish within the grace
/// period, closes idle connections, and cuts what is left at the deadline.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServeSettings,
    audit: Arc<AuditLog>,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<Drained> {
    let limit = fdlimit::connection_limit(settings.max_connections);
    let tracker = Arc::new(Tracker::new(
        limit,
        settings.header_timeout,
        settings.idle_timeout,
    ));
    let serving = Arc::new(Serving {
        builder: builder(&settings),
        body_total: BodyBudget::total(settings.pending_body_bytes),
        connection_body_bytes: settings.connection_body_bytes,
    });
    let reaper = tokio::spawn(reap(
        tracker.clone(),
        settings.header_timeout.min(settings.idle_timeout),
    ));

    let mut accept_errors = RateLimited::default();
    let mut refusals = RateLimited::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => match tracker.admit(peer) {
                Admit::Yes(conn) => {
                    let _ = stream.set_nodelay(true);
                    // The configuration in use now: a reload affects only
                    // connections accepted after it.
                    let tls = settings.tls.as_ref().map(|t| t.acceptor());
                    tokio::spawn(serve_connection(
                        serving.clone(),
                        stream,
                        tls,
                        conn,
                        tracker.clone(),
                        router.clone(),
                        audit.clone(),
                    ));
                }
                Admit::No => {
                    drop(stream);
                    if let Some(suppressed) = refusals.due() {
                        tracing::warn!(
                            %peer,
                            limit,
                            suppressed,
                            "connection limit reached and none idle: new connection closed"
                        );
                    }
                }
            },
            Err(e) => {
                let pause = accept_pause(&e);
                if is_out_of_descriptors(&e) {
                    tracker.shed_one();
                }
                if let Some(suppressed) = accept_errors.due() {
                    tracing::warn!(error = %e, suppressed, "accept failed");
                }
                if !pause.is_zero() {
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
    drop(listener);
    let drained = drain(&tracker, settings.shutdown_grace).await;
    reaper.abort();
    let c = &tracker.counters;
    tracing::info!(
        connections = drained.connections,
        cut = drained.cut,
        deadline_hit = drained.deadline_hit,
        shed = c.shed.load(Ordering::Relaxed),
        refused = c.refused.load(Ordering::Relaxed),
        header_timeouts = c.header_timeouts.load(Ordering::Relaxed),
        idle_closed = c.idle_closed.load(Ordering::Relaxed),
        "connections drained"
    );
    Ok(drained)
}

fn builder(settings: &ServeSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Our reaper applies the header timeout (hyper's would also close idle
    // keep-alive connections at the header timeout). hyper's head limit is
    // set above ours so that our check answers first, AWS-shaped.
    let hyper_head_limit = (2 * settings.max_header_bytes).max(8192);
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(hyper_head_limit);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(hyper_head_limit).unwrap_or(u32::MAX))
        .max_concurrent_streams(settings.max_concurrent_streams)
        // What a connection's unread request data can take before the
        // body budget is asked: one window, whatever its stream count.
        .initial_stream_window_size(H2_WINDOW)
        .initial_connection_window_size(H2_WINDOW);
    builder
}

/// The HTTP/2 flow-control window of a stream and of a connection: data a
/// client may send that the gateway has not read yet.
pub const H2_WINDOW: u32 = 64 * 1024;

/// What every connection is served with.
struct Serving {
    builder: auto::Builder<TokioExecutor>,
    /// The process's budget of request bodies before authentication.
    body_total: Arc<Semaphore>,
    connection_body_bytes: usize,
}

async fn serve_connection(
    serving: Arc<Serving>,
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    conn: Arc<ConnState>,
    tracker: Arc<Tracker>,
    router: Router,
    audit: Arc<AuditLog>,
) {
    match tls {
        None => serve_io(&serving, stream, None, &conn, &tracker, router, &audit).await,
        Some(acceptor) => {
            if let Some(stream) = handshake(acceptor, stream, &conn).await {
                let cert = client_cert_of(stream.get_ref().1);
                serve_io(&serving, stream, cert, &conn, &tracker, router, &audit).await;
            }
        }
    }
    tracker.remove(&conn);
}

/// The TLS handshake, abandoned when the connection is told to close: by
/// the header timeout (the handshake is part of the first request head),
/// to make room at the connection limit, or by the shutdown.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    conn: &ConnState,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accept = acceptor.accept(stream);
    tokio::pin!(accept);
    loop {
        tokio::select! {
            accepted = accept.as_mut() => {
                return match accepted {
                    Ok(stream) => Some(stream),
                    Err(e) => {
                        tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake failed");
                        None
                    }
                };
            }
            () = conn.wake.notified() => {
                let why = conn.close_reason();
                if why != Close::Open {
                    tracing::debug!(peer = %conn.peer, reason = ?why, "TLS handshake abandoned");
                    return None;
                }
            }
        }
    }
}

async fn serve_io<S>(
    serving: &Serving,
    stream: S,
    cert: Option<ClientCert>,
    conn: &Arc<ConnState>,
    tracker: &Arc<Tracker>,
    router: Router,
    audit: &AuditLog,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(TrackedIo::new(stream, conn.clone(), tracker.clone()));
    let (svc_conn, svc_tracker) = (conn.clone(), tracker.clone());
    // Shared by the connection's requests (HTTP/2 streams).
    let budget = BodyBudget::for_connection(serving.connection_body_bytes, &serving.body_total);
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        // The peer's address, for the audit record's sourceIPAddress.
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(svc_conn.peer));
        request.extensions_mut().insert(budget.clone());
        let guard = RequestGuard::begin(&svc_conn, &svc_tracker);
        if let Some(cert) = &cert {
            request.extensions_mut().insert(cert.clone());
        }
        let mut router = router.clone();
        let conn = svc_conn.clone();
        async move {
            let mut response = router.call(request).await;
            // HTTP/2 has no `Connection: close` (hyper drops it). The
            // stream itself is reset once answered, its body unread; the
            // connection is sent away (GOAWAY), as an HTTP/1.1 one is
            // closed after a body timeout.
            if let Ok(r) = &mut response
                && conn.is_h2()
                && r.headers_mut().remove(http::header::CONNECTION).is_some()
            {
                conn.go_away(Close::BodyTimeout);
            }
            drop(guard);
            response
        }
    });
    let connection = serving.builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut graceful = false;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break Some(result),
            () = conn.wake.notified() => {
                let why = conn.close_reason();
                if why.is_hard() {
                    tracing::debug!(peer = %conn.peer, reason = ?why, "connection cut");
                    break None;
                }
                if why != Close::Open && !graceful {
                    graceful = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    };
    if let Some(Err(e)) = result {
        match e.downcast_ref::<hyper::Error>() {
            Some(he) if he.is_parse() => refusal::parse_refused(audit, he, conn.peer),
            _ => tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error"),
        }
    }
}

async fn reap(tracker: Arc<Tracker>, shortest: Duration) {
    let period = (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        tracker.reap();
    }
}

async fn drain(tracker: &Tracker, grace: Duration) -> Drained {
    let open = tracker.len();
    tracker.close_all(Close::Drain);
    let deadline = Instant::now() + grace;
    while !tracker.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cut = tracker.len();
    if cut > 0 {
        tracker.close_all(Close::Cut);
        let give_up = Instant::now() + Duration::from_secs(1);
        while !tracker.is_empty() && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Drained {
        connections: open - cut.min(open),
        cut,
        deadline_hit: cut > 0,
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let code = e.raw_os_error();
    code == Some(Errno::MFILE.raw_os_error()) || code == Some(Errno::NFILE.raw_os_error())
}

/// How long to wait after a failed accept: a while when the process or
/// the system is out of resources (accepting again at once would spin),
/// not at all when only that one connection failed.
fn accept_pause(e: &io::Error) -> Duration {
    use rustix::io::Errno;
    let per_connection = [
        Errno::CONNABORTED,
        Errno::CONNRESET,
        Errno::INTR,
        Errno::PROTO,
    ];
    match e.raw_os_error() {
        Some(code) if per_connection.iter().any(|e| e.raw_os_error() == code) => Duration::ZERO,
        _ if is_out_of_descriptors(e) => Duration::from_millis(100),
        _ => Duration::from_millis(20),
    }
}

/// At most one log line a second, counting the ones left out.
#[derive(Default)]
struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    /// `Some(suppressed since the last line)` when a line may be written.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;

    #[test]
    fn accept_pauses_when_out_of_descriptors_not_for_one_aborted_connection() {
        let err = |e: Errno| io::Error::from_raw_os_error(e.raw_os_error());
        assert_eq!(accept_pause(&err(Errno::MFILE)), Duration::from_millis(100));
        assert_eq!(accept_pause(&err(Errno::NFILE)), Duration::from_millis(100));
        assert_eq!(accept_pause(&err(Errno::CONNABORTED)), Duration::ZERO);
        assert!(is_out_of_descriptors(&err(Errno::MFILE)));
    }

    #[test]
    fn a_rate_limited_log_counts_what_it_left_out() {
        let mut log = RateLimited::default();
        assert_eq!(log.due(), Some(0));
        assert_eq!(log.due(), None);
        assert_eq!(log.due(), None);
        log.last = Some(Instant::now() - Duration::from_secs(2));
        assert_eq!(log.due(), Some(2));
    }
}
