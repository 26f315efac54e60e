//! One accepted connection: it holds its permit of the cap until dropped,
//! fails its next read once nothing has moved on it for the idle timeout,
//! and fails its reads and writes once it is evicted
//! ([`super::peers`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::peers::Registered;
use super::{ConnectionStats, MAX_IDLE_TIMEOUT};

/// A served connection: the socket, its permit of the connection cap
/// (released when the connection is dropped), its idle timer, and its entry
/// among the port's peers.
#[derive(Debug)]
pub struct Connection<T = TcpStream> {
    pub(super) io: T,
    idle: IdleTimer,
    registered: Option<Registered>,
    _permit: OwnedSemaphorePermit,
}

impl<T> Connection<T> {
    pub(super) fn new(
        io: T,
        permit: OwnedSemaphorePermit,
        idle_timeout: Duration,
        stats: Arc<ConnectionStats>,
        registered: Option<Registered>,
    ) -> Self {
        let now = Instant::now();
        let idle_timeout = idle_timeout.min(MAX_IDLE_TIMEOUT);
        Connection {
            io,
            idle: IdleTimer {
                timeout: idle_timeout,
                last_progress: now,
                sleep: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
                expired: false,
                stats,
            },
            registered,
            _permit: permit,
        }
    }

    /// The error of a read or write once the connection was evicted.
    fn evicted(&self) -> Option<io::Error> {
        let load = self.registered.as_ref()?.load();
        load.is_evicted().then(evicted_error)
    }

    /// Whether an eviction must end a read or write that would wait.
    fn evicted_while_pending(&self, cx: &Context<'_>, write: bool) -> bool {
        self.registered.as_ref().is_some_and(|r| {
            if write {
                r.load().wake_write_on_evict(cx)
            } else {
                r.load().wake_read_on_evict(cx)
            }
        })
    }
}

fn evicted_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed by the node to make room: at its bound on live calls it \
         held the most calls stalled on the client, or at the connection cap it had \
         gone longest without a call",
    )
}

/// When a connection has been idle too long. Progress only records the time;
/// the timer is moved when it fires early, so a busy connection does not
/// touch the timer wheel on every read.
#[derive(Debug)]
struct IdleTimer {
    timeout: Duration,
    last_progress: Instant,
    sleep: Pin<Box<Sleep>>,
    expired: bool,
    stats: Arc<ConnectionStats>,
}

impl IdleTimer {
    fn progress(&mut self) {
        self.last_progress = Instant::now();
    }

    /// Ready with the error to fail the connection with once nothing has
    /// moved for the timeout; registers for a wake-up until then.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        while !self.expired {
            ready!(self.sleep.as_mut().poll(cx));
            let deadline = self.last_progress + self.timeout;
            if Instant::now() >= deadline {
                self.expired = true;
                self.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(timeout = ?self.timeout, "closing an idle connection");
            } else {
                // Something moved since the timer was set: wait for the rest.
                self.sleep.as_mut().reset(deadline);
            }
        }
        Poll::Ready(self.error())
    }

    fn error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connection idle for {:?}", self.timeout),
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Connection<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idle.expired {
            return Poll::Ready(Err(this.idle.error()));
        }
        if let Some(e) = this.evicted() {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.idle.progress();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.evicted_while_pending(cx, false) => {
                Poll::Ready(Err(evicted_error()))
            }
            Poll::Pending => this.idle.poll_expired(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Connection<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.idle.expired {
            return Poll::Ready(Err(this.idle.error()));
        }
        if let Some(e) = this.evicted() {
            return Poll::Ready(Err(e));
        }
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.idle.progress();
                    if let Some(registered) = &this.registered {
                        registered.load().written(n);
                    }
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.evicted_while_pending(cx, true) => {
                Poll::Ready(Err(evicted_error()))
            }
            // A peer that stopped reading is as idle as one that stopped
            // writing.
            Poll::Pending => this.idle.poll_expired(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.idle.expired {
            return Poll::Ready(Err(this.idle.error()));
        }
        if let Some(e) = this.evicted() {
            return Poll::Ready(Err(e));
        }
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.idle.progress();
                    if let Some(registered) = &this.registered {
                        registered.load().written(n);
                    }
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.evicted_while_pending(cx, true) => {
                Poll::Ready(Err(evicted_error()))
            }
            Poll::Pending => this.idle.poll_expired(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connection<TcpStream> {
    /// Whether the peer's first bytes are `magic` (consumed if so, left for
    /// the next reader if not). Waiting for them is bounded as any read is:
    /// an error once the connection has been idle for its timeout, is
    /// evicted, or the peer closed first.
    pub async fn starts_with(&mut self, magic: &[u8]) -> io::Result<bool> {
        let mut first = vec![0; magic.len()];
        loop {
            let n = std::future::poll_fn(|cx| self.poll_peek(cx, &mut first)).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if first[..n] != magic[..n] {
                return Ok(false);
            }
            if n == magic.len() {
                tokio::io::AsyncReadExt::read_exact(&mut self.io, &mut first).await?;
                self.idle.progress();
                return Ok(true);
            }
            // The start of it so far: wait for the rest (rare: the caller
            // writes it in one segment).
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Peeks at what the peer sent, failing as [`AsyncRead::poll_read`]
    /// does when the connection is idle too long or evicted.
    fn poll_peek(&mut self, cx: &mut Context<'_>, into: &mut [u8]) -> Poll<io::Result<usize>> {
        if self.idle.expired {
            return Poll::Ready(Err(self.idle.error()));
        }
        if let Some(e) = self.evicted() {
            return Poll::Ready(Err(e));
        }
        let mut buf = ReadBuf::new(into);
        match self.io.poll_peek(cx, &mut buf) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending if self.evicted_while_pending(cx, false) => {
                Poll::Ready(Err(evicted_error()))
            }
            Poll::Pending => self.idle.poll_expired(cx).map(Err),
        }
    }
}

impl Connected for Connection<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    /// The peer's and our address, as tonic's own TCP listener gives them,
    /// so `Request::remote_addr` keeps working.
    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}
