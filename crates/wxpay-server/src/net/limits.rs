//! What one connection may cost: how long it may take to send a request's headers, how long it
//! may sit idle between requests, how many may be open at once, and how long a stop waits for
//! open requests.
//!
//! hyper's own `header_read_timeout` (HTTP/1 only) also counts the idle time before the next
//! request on a kept-alive connection, and HTTP/2 has none, so both timeouts are enforced here,
//! the same way for HTTP/1, HTTP/2 and TLS, from what the connection does: a connection with no
//! request in progress is *idle* until its first byte arrives, then *reading a request* until a
//! complete request head reaches the router.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The limits of the listeners (`WXPAY_HEADER_TIMEOUT_SECS`, `WXPAY_IDLE_TIMEOUT_SECS`,
/// `WXPAY_MAX_CONNECTIONS`, `WXPAY_SHUTDOWN_TIMEOUT_SECS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From a request's first byte (or a TLS handshake's) to its complete head.
    pub header_timeout: Duration,
    /// A connection with no request in progress and nothing received is closed after this.
    pub idle_timeout: Duration,
    /// Connections open at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long a stop waits for requests in progress before closing their connections.
    pub shutdown_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a connection was closed by its watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// Bytes came but no complete request within the header timeout.
    Header,
    /// Nothing happened within the idle timeout.
    Idle,
}

/// No request head is being read.
const NOT_READING: u64 = u64::MAX;

/// What one connection is doing, shared by its IO (bytes in), its service (requests) and the
/// task that serves it (which closes it when a timeout passes).
///
/// The hot path is a few atomic operations: the watcher ([`Activity::expired`]) sleeps until
/// the deadline it computed and re-checks then, so that a request that starts or ends moves the
/// deadline without waking it. Only the first byte of a request head wakes it, since the header
/// deadline can be earlier than the idle one it sleeps towards.
#[derive(Debug)]
pub struct Activity {
    /// Times are milliseconds since this.
    base: Instant,
    in_flight: AtomicUsize,
    idle_since: AtomicU64,
    reading_since: AtomicU64,
    reading_started: Notify,
}

impl Activity {
    /// A connection just accepted: idle.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            reading_since: AtomicU64::new(NOT_READING),
            reading_started: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(NOT_READING - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn bytes_in(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.reading_since.load(Ordering::Acquire) == NOT_READING
            && self
                .reading_since
                .compare_exchange(
                    NOT_READING,
                    self.now_ms(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            self.reading_started.notify_one();
        }
    }

    /// A request reached the router; the guard marks its end.
    #[must_use]
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.reading_since.store(NOT_READING, Ordering::Release);
        RequestGuard(self.clone())
    }

    /// The deadline of the current phase, or `None` while a request is in progress.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Expired)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.reading_since.load(Ordering::Acquire) {
            NOT_READING => Some((
                self.at(self.idle_since.load(Ordering::Acquire)) + limits.idle_timeout,
                Expired::Idle,
            )),
            since => Some((self.at(since) + limits.header_timeout, Expired::Header)),
        }
    }

    /// Completes when a timeout passes (never while a request is in progress).
    pub async fn expired(&self, limits: &ConnectionLimits) -> Expired {
        // While a request is in progress, look again this often (its end moves the idle
        // deadline later, which needs no wake-up).
        let recheck = limits.header_timeout.min(limits.idle_timeout);
        loop {
            let started = self.reading_started.notified();
            let (at, why) = match self.deadline(limits) {
                Some(deadline) => deadline,
                None => (Instant::now() + recheck, Expired::Idle),
            };
            tokio::select! {
                () = tokio::time::sleep_until(at) => {
                    // Still the same deadline, and it passed: expired. Otherwise the phase moved
                    // on meanwhile; compute again.
                    if let Some((now_at, now_why)) = self.deadline(limits)
                        && now_at <= Instant::now()
                        && now_why == why
                    {
                        return why;
                    }
                }
                () = started => {}
            }
        }
    }
}

/// Marks the end of a request when dropped.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        // The idle time counts from the end of the last request.
        activity
            .idle_since
            .store(activity.now_ms(), Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream that tells its [`Activity`] when bytes arrive.
#[derive(Debug)]
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_in();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
