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
use std::sync::{Arc, Mutex, PoisonError};
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

#[derive(Debug)]
struct Phase {
    in_flight: usize,
    idle_since: Instant,
    reading_since: Option<Instant>,
}

/// What one connection is doing, shared by its IO (bytes in), its service (requests) and the
/// task that serves it (which closes it when a timeout passes).
#[derive(Debug)]
pub struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    /// A connection just accepted: idle.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            phase: Mutex::new(Phase {
                in_flight: 0,
                idle_since: Instant::now(),
                reading_since: None,
            }),
            changed: Notify::new(),
        })
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bytes_in(&self) {
        let mut phase = self.phase();
        if phase.in_flight == 0 && phase.reading_since.is_none() {
            phase.reading_since = Some(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// A request reached the router; the guard marks its end.
    #[must_use]
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        {
            let mut phase = self.phase();
            phase.in_flight += 1;
            phase.reading_since = None;
        }
        self.changed.notify_one();
        RequestGuard(self.clone())
    }

    /// Completes when a timeout passes (never while a request is in progress).
    pub async fn expired(&self, limits: &ConnectionLimits) -> Expired {
        loop {
            let notified = self.changed.notified();
            let deadline = {
                let phase = self.phase();
                if phase.in_flight > 0 {
                    None
                } else if let Some(since) = phase.reading_since {
                    Some((since + limits.header_timeout, Expired::Header))
                } else {
                    Some((phase.idle_since + limits.idle_timeout, Expired::Idle))
                }
            };
            match deadline {
                None => notified.await,
                Some((at, why)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => return why,
                        () = notified => {}
                    }
                }
            }
        }
    }
}

/// Marks the end of a request when dropped.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        {
            let mut phase = self.0.phase();
            phase.in_flight = phase.in_flight.saturating_sub(1);
            if phase.in_flight == 0 {
                phase.idle_since = Instant::now();
                phase.reading_since = None;
            }
        }
        self.0.changed.notify_one();
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
