//! Book-keeping of open client connections: the connection limit, the
//! header and idle timeouts, and load shedding.
//!
//! Every connection has a [`ConnState`] that its I/O wrapper and its
//! request futures update with atomics: requests in flight, when the last
//! one ended, and when the head of the next one started to arrive. One
//! reaper task ([`Tracker::reap`]) reads them a few times per timeout and
//! tells connections to close; the connection's own task does the closing.
//! So no per-connection timer exists, and memory is bounded by the
//! connection limit.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::telemetry::{self, Throttle, Timeout};

/// Why a connection is told to close. Larger values win: a hard close
/// overrides a graceful one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Close {
    Open = 0,
    /// No request in flight for the idle timeout: graceful.
    Idle = 1,
    /// An HTTP/2 stream's body did not arrive within the body timeout:
    /// graceful (GOAWAY; the other streams finish).
    BodyTimeout = 2,
    /// The gateway is shutting down: graceful (requests in flight finish).
    Drain = 3,
    /// The request head did not arrive within the header timeout: cut.
    HeaderTimeout = 4,
    /// Closed to make room for a new connection at the limit: cut.
    Shed = 5,
    /// The shutdown deadline passed: cut.
    Cut = 6,
}

impl Close {
    fn from_u8(v: u8) -> Close {
        match v {
            0 => Close::Open,
            1 => Close::Idle,
            2 => Close::BodyTimeout,
            3 => Close::Drain,
            4 => Close::HeaderTimeout,
            5 => Close::Shed,
            _ => Close::Cut,
        }
    }

    /// Whether the connection is dropped at once rather than shut down
    /// gracefully.
    pub fn is_hard(self) -> bool {
        self >= Close::HeaderTimeout
    }
}

/// What the reaper and the accept loop know about one connection.
pub struct ConnState {
    id: u64,
    pub peer: SocketAddr,
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection opened), in ms since
    /// the tracker's epoch.
    last_active_ms: AtomicU64,
    /// When the first byte of a request head arrived, ms since the epoch
    /// plus one; 0 while no head is arriving.
    head_started_ms: AtomicU64,
    /// The client sent the HTTP/2 preface: requests are streams, and only
    /// the idle timeout applies to the connection.
    h2: AtomicBool,
    close: AtomicU8,
    /// Wakes the connection's task when `close` changes.
    pub wake: Notify,
}

impl ConnState {
    pub fn close_reason(&self) -> Close {
        Close::from_u8(self.close.load(Ordering::Acquire))
    }

    /// Whether the client speaks HTTP/2 on this connection.
    pub fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Acquire)
    }

    /// Tells the connection to close gracefully for `why`.
    pub fn go_away(&self, why: Close) {
        debug_assert!(!why.is_hard());
        self.tell(why);
    }

    fn tell(&self, why: Close) {
        let before = self.close.fetch_max(why as u8, Ordering::AcqRel);
        if before < why as u8 {
            self.wake.notify_one();
        }
    }
}

/// Counts a request in flight on a connection for as long as it lives.
pub struct RequestGuard {
    conn: Arc<ConnState>,
    tracker: Arc<Tracker>,
}

impl RequestGuard {
    pub fn begin(conn: &Arc<ConnState>, tracker: &Arc<Tracker>) -> RequestGuard {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.head_started_ms.store(0, Ordering::Release);
        RequestGuard {
            conn: conn.clone(),
            tracker: tracker.clone(),
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.conn
            .last_active_ms
            .store(self.tracker.now_ms(), Ordering::Release);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counters for the log.
#[derive(Default)]
pub struct Counters {
    pub shed: AtomicU64,
    pub refused: AtomicU64,
    pub header_timeouts: AtomicU64,
    pub idle_closed: AtomicU64,
}

/// The open connections.
pub struct Tracker {
    epoch: Instant,
    limit: usize,
    header_timeout_ms: u64,
    idle_timeout_ms: u64,
    next_id: AtomicU64,
    /// A std mutex: held only for a map update or a scan, never across an
    /// await.
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    pub counters: Counters,
}

/// What [`Tracker::admit`] decided.
pub enum Admit {
    Yes(Arc<ConnState>),
    /// At the limit with no idle connection to close: drop the new one.
    No,
}

impl Tracker {
    pub fn new(limit: usize, header_timeout: Duration, idle_timeout: Duration) -> Tracker {
        Tracker {
            epoch: Instant::now(),
            limit,
            header_timeout_ms: header_timeout.as_millis() as u64,
            idle_timeout_ms: idle_timeout.as_millis() as u64,
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers a new connection. At the limit, the connection idle the
    /// longest (no request in flight; a half-sent head counts as idle) is
    /// cut to make room; with none idle the new one is refused.
    pub fn admit(&self, peer: SocketAddr) -> Admit {
        let now = self.now_ms();
        let mut conns = self.lock();
        if conns.len() >= self.limit {
            // Connections already being cut are leaving: they do not count.
            let open = conns
                .values()
                .filter(|c| !c.close_reason().is_hard())
                .count();
            if open >= self.limit {
                match oldest_idle(&conns) {
                    Some(victim) => {
                        victim.tell(Close::Shed);
                        self.counters.shed.fetch_add(1, Ordering::Relaxed);
                        telemetry::throttled(Throttle::ConnectionShed);
                    }
                    None => {
                        self.counters.refused.fetch_add(1, Ordering::Relaxed);
                        telemetry::throttled(Throttle::ConnectionRefused);
                        return Admit::No;
                    }
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(ConnState {
            id,
            peer,
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(now),
            // The first request's head is due from the moment of connecting.
            head_started_ms: AtomicU64::new(now + 1),
            h2: AtomicBool::new(false),
            close: AtomicU8::new(Close::Open as u8),
            wake: Notify::new(),
        });
        conns.insert(id, conn.clone());
        Admit::Yes(conn)
    }

    /// Cuts the connection idle the longest, to free a file descriptor when
    /// accept fails for want of one. Returns whether one was found.
    pub fn shed_one(&self) -> bool {
        let conns = self.lock();
        match oldest_idle(&conns) {
            Some(victim) => {
                victim.tell(Close::Shed);
                self.counters.shed.fetch_add(1, Ordering::Relaxed);
                telemetry::throttled(Throttle::ConnectionShed);
                true
            }
            None => false,
        }
    }

    pub fn remove(&self, conn: &ConnState) {
        self.lock().remove(&conn.id);
    }

    /// Tells every connection to close for `why`.
    pub fn close_all(&self, why: Close) {
        for c in self.lock().values() {
            c.tell(why);
        }
    }

    /// Applies the header and idle timeouts. Called a few times per timeout.
    pub fn reap(&self) {
        let now = self.now_ms();
        let conns = self.lock();
        telemetry::connections(conns.len());
        for c in conns.values() {
            let reason = c.close_reason();
            if reason.is_hard() {
                continue;
            }
            let head = c.head_started_ms.load(Ordering::Acquire);
            if head != 0
                && !c.h2.load(Ordering::Acquire)
                && now.saturating_sub(head - 1) >= self.header_timeout_ms
            {
                self.counters
                    .header_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                telemetry::timed_out(Timeout::RequestHead);
                c.tell(Close::HeaderTimeout);
            } else if reason == Close::Open
                && c.in_flight.load(Ordering::Acquire) == 0
                && now.saturating_sub(c.last_active_ms.load(Ordering::Acquire))
                    >= self.idle_timeout_ms
            {
                self.counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                c.tell(Close::Idle);
            }
        }
    }
}

fn oldest_idle(conns: &HashMap<u64, Arc<ConnState>>) -> Option<&Arc<ConnState>> {
    conns
        .values()
        .filter(|c| c.in_flight.load(Ordering::Acquire) == 0 && !c.close_reason().is_hard())
        .min_by_key(|c| c.last_active_ms.load(Ordering::Acquire))
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The connection's socket (or its TLS stream: then the bytes seen are
/// the decrypted ones), noting when request bytes arrive.
pub struct TrackedIo<S> {
    inner: S,
    conn: Arc<ConnState>,
    tracker: Arc<Tracker>,
    /// Bytes of the HTTP/2 preface matched so far; `None` once the client
    /// is known to speak HTTP/1.
    preface: Option<usize>,
}

impl<S> TrackedIo<S> {
    pub fn new(inner: S, conn: Arc<ConnState>, tracker: Arc<Tracker>) -> TrackedIo<S> {
        TrackedIo {
            inner,
            conn,
            tracker,
            preface: Some(0),
        }
    }

    fn on_bytes(&mut self, bytes: &[u8]) {
        if let Some(matched) = self.preface {
            let want = &H2_PREFACE[matched..];
            let n = want.len().min(bytes.len());
            if bytes[..n] != want[..n] {
                self.preface = None;
            } else if matched + n == H2_PREFACE.len() {
                self.preface = None;
                self.conn.h2.store(true, Ordering::Release);
                self.conn.head_started_ms.store(0, Ordering::Release);
                return;
            } else {
                self.preface = Some(matched + n);
                return;
            }
        }
        let c = &self.conn;
        if !c.h2.load(Ordering::Acquire)
            && c.in_flight.load(Ordering::Acquire) == 0
            && c.head_started_ms.load(Ordering::Acquire) == 0
        {
            c.head_started_ms
                .store(self.tracker.now_ms() + 1, Ordering::Release);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            self.as_mut().get_mut().on_bytes(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(limit: usize) -> Arc<Tracker> {
        Arc::new(Tracker::new(
            limit,
            Duration::from_secs(10),
            Duration::from_secs(60),
        ))
    }

    fn admit(t: &Tracker) -> Option<Arc<ConnState>> {
        match t.admit(SocketAddr::from(([127, 0, 0, 1], 1))) {
            Admit::Yes(c) => Some(c),
            Admit::No => None,
        }
    }

    #[test]
    fn at_the_limit_the_longest_idle_connection_makes_room() {
        let t = tracker(2);
        let old = admit(&t).unwrap();
        let busy = admit(&t).unwrap();
        let _request = RequestGuard::begin(&busy, &t);
        let new = admit(&t).expect("an idle connection is shed for the new one");
        assert_eq!(old.close_reason(), Close::Shed);
        assert_eq!(busy.close_reason(), Close::Open);
        assert_eq!(new.close_reason(), Close::Open);
    }

    #[test]
    fn at_the_limit_with_every_connection_busy_the_new_one_is_refused() {
        let t = tracker(1);
        let busy = admit(&t).unwrap();
        let _request = RequestGuard::begin(&busy, &t);
        assert!(admit(&t).is_none());
        assert_eq!(busy.close_reason(), Close::Open);
    }

    #[test]
    fn a_hard_close_overrides_a_graceful_one_and_not_the_reverse() {
        let t = tracker(4);
        let c = admit(&t).unwrap();
        c.tell(Close::Drain);
        c.tell(Close::Cut);
        c.tell(Close::Idle);
        assert_eq!(c.close_reason(), Close::Cut);
    }
}
