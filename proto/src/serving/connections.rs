//! The accept path every node serves on: a cap on the connections held at
//! once, a clean refusal past it, no busy loop when descriptors run out, and
//! connections on which nothing moves closed.
//!
//! tonic's own `TcpIncoming` accepts for as long as `accept()` succeeds and
//! retries at once when it fails. A node out of descriptors (`EMFILE`) then
//! spins on the connection that stays in the backlog — a core busy, no log
//! line, no answer — until every other connection closes, and nothing ever
//! closes a connection whose peer fell silent. Here, instead:
//!
//! - each accepted connection holds a permit of a node-wide cap
//!   ([`ConnectionLimits::max_connections`]), released when the connection is
//!   dropped; at the cap a new connection is accepted and closed at once, so
//!   its client fails fast instead of waiting in the backlog, and the node
//!   keeps the descriptors its own channels, index files and logs need;
//! - when `accept()` fails for want of descriptors or memory, the node logs
//!   it (rate-limited) and pauses [`ACCEPT_BACKOFF`] before trying again;
//! - a connection on which no byte has been read or written for
//!   [`ConnectionLimits::idle_timeout`] fails its next read, which ends it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The idle timeout when `--idle-timeout-secs` is not given: long enough that
/// a quiet but live client is never cut off for pausing (and live HTTP/2
/// peers are pinged well within it anyway), short enough that silent
/// connections cannot pile up for long.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest idle timeout: a year, which is as good as never and keeps
/// deadlines far from the clock's overflow.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long accepting pauses after `accept()` failed for want of descriptors
/// or memory: short enough that a freed descriptor is used within a blink,
/// long enough that retrying costs nothing (ten tries a second).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The longest interval between the HTTP/2 pings a node sends its peers.
pub const MAX_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);

/// The longest a node waits for a peer to answer its ping before it closes
/// the connection as dead.
pub const MAX_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// At most one warning of each kind (refusals, accept failures) this often: a
/// flood of connections must not turn into a flood of log lines.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// The least number of descriptors kept back from the cap for what the node
/// opens itself: channels to its children, index files, logs, the runtime.
const MIN_RESERVE: u64 = 64;

/// The default cap never exceeds this, whatever the descriptor limit (an
/// unlimited one included).
const MAX_DEFAULT_CONNECTIONS: u64 = 1 << 20;

/// The cap when the descriptor limit cannot be read: what the derivation
/// gives for the common limit of 1,024.
const FALLBACK_MAX_CONNECTIONS: usize = 896;

/// How many connections a node holds at once, and when it closes a silent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections held at once; past it a new connection is closed at once.
    pub max_connections: usize,
    /// A connection on which no byte moved for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// The cap derived from the descriptor limit, and [`DEFAULT_IDLE_TIMEOUT`].
    fn default() -> Self {
        ConnectionLimits {
            max_connections: default_max_connections(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl ConnectionLimits {
    /// How often the node pings an HTTP/2 peer it has not heard from: half
    /// the idle timeout, at most [`MAX_KEEPALIVE_INTERVAL`]. A peer that
    /// answers pings is therefore never idle — the tree's own parents above
    /// all, whatever their own settings — and one that stops answering is
    /// dropped after [`Self::keepalive_timeout`]; the idle timeout is left
    /// with connections that carry nothing at all (TCP that never started
    /// HTTP/2, or a peer that stopped reading what it is sent).
    pub fn keepalive_interval(&self) -> Duration {
        (self.idle_timeout / 2)
            .min(MAX_KEEPALIVE_INTERVAL)
            .max(Duration::from_millis(1))
    }

    /// How long a ping may go unanswered before the connection is closed as
    /// dead: the ping interval, at most [`MAX_KEEPALIVE_TIMEOUT`].
    pub fn keepalive_timeout(&self) -> Duration {
        self.keepalive_interval().min(MAX_KEEPALIVE_TIMEOUT)
    }
}

/// The flags every node takes for its connection limits; each node's
/// configuration flattens them in, so leaves, parents and the root agree.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Connections held at once; past it a new connection is accepted and
    /// closed at once. Default: the descriptor limit (`ulimit -n`) less an
    /// eighth of it (at least 64), kept for the node's own channels, index
    /// files and logs.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Close a connection on which no byte has been read or written for this
    /// many seconds. HTTP/2 peers are pinged at half this (at most every
    /// 60 s), so only connections that carry nothing at all reach it.
    #[arg(long, default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=MAX_IDLE_TIMEOUT.as_secs()))]
    pub idle_timeout_secs: u64,
}

impl ConnectionArgs {
    /// The limits these flags ask for.
    pub fn limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self
                .max_connections
                .map_or_else(default_max_connections, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX)
                }),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
        }
    }
}

/// The process's soft descriptor limit (`RLIMIT_NOFILE`), `u64::MAX` when
/// unlimited, `None` when it cannot be read.
pub fn descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given, which lives
        // for the whole call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return None;
        }
        if limit.rlim_cur == libc::RLIM_INFINITY {
            return Some(u64::MAX);
        }
        // rlim_t is u64 on Linux but not on every unix.
        #[allow(clippy::useless_conversion)]
        let soft = u64::try_from(limit.rlim_cur).unwrap_or(u64::MAX);
        Some(soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The default cap: the descriptor limit less a reserve for what the node
/// opens itself (see [`cap_for_descriptor_limit`]).
pub fn default_max_connections() -> usize {
    descriptor_limit().map_or(FALLBACK_MAX_CONNECTIONS, cap_for_descriptor_limit)
}

/// The cap for a soft descriptor limit of `limit`: the limit less an eighth
/// of it (at least 64), or half the limit if that leaves less; at least 1.
/// 1,024 descriptors give 896 connections, 256 give 192.
pub fn cap_for_descriptor_limit(limit: u64) -> usize {
    let limit = limit.min(MAX_DEFAULT_CONNECTIONS);
    let reserve = (limit / 8).max(MIN_RESERVE);
    let cap = if limit > 2 * reserve {
        limit - reserve
    } else {
        limit / 2
    };
    usize::try_from(cap.max(1)).unwrap_or(usize::MAX)
}

/// What the accept path has done since the node started, for logs and tests.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    accepted: AtomicU64,
    refused: AtomicU64,
    idle_closed: AtomicU64,
    accept_errors: AtomicU64,
}

impl ConnectionStats {
    /// Connections accepted and served.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed at once because the node was at its cap.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed because nothing moved on them for the idle timeout.
    pub fn idle_closed(&self) -> u64 {
        self.idle_closed.load(Ordering::Relaxed)
    }

    /// `accept()` failures that made the node pause (out of descriptors or
    /// memory, or anything else not caused by one connection).
    pub fn accept_errors(&self) -> u64 {
        self.accept_errors.load(Ordering::Relaxed)
    }
}

/// Lets a warning through at most once every [`WARN_EVERY`], counting what it
/// held back so the next one can say how many there were.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(held back since the last one)` if a warning may be logged now.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < WARN_EVERY => {
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

/// A listener that hands out at most [`ConnectionLimits::max_connections`]
/// connections at once, refuses the rest cleanly and never spins.
#[derive(Debug)]
pub struct Incoming {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    capacity: usize,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    refusals: Throttle,
    failures: Throttle,
}

impl Incoming {
    /// Accepts on `listener` within `limits`.
    pub fn new(listener: TcpListener, limits: ConnectionLimits) -> Self {
        let capacity = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Incoming {
            listener,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            limits,
            stats: Arc::default(),
            refusals: Throttle::default(),
            failures: Throttle::default(),
        }
    }

    /// What this listener has done so far.
    pub fn stats(&self) -> Arc<ConnectionStats> {
        Arc::clone(&self.stats)
    }

    /// Connections open now (accepted and not yet dropped).
    pub fn open(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    /// The next connection to serve. Connections past the cap are closed on
    /// the way; errors of one connection are skipped; running out of
    /// descriptors or memory pauses for [`ACCEPT_BACKOFF`]. Never fails.
    pub async fn accept(&mut self) -> Connection {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
                        self.refuse(stream, peer);
                        continue;
                    };
                    // No Nagle: a response's header, data and trailer frames
                    // must not wait for the peer's ACK, which would add
                    // latency at every hop.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                    }
                    self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    return Connection::new(
                        stream,
                        permit,
                        self.limits.idle_timeout,
                        Arc::clone(&self.stats),
                    );
                }
                Err(e) if is_connection_error(&e) => {
                    // That one connection is gone; the listener is fine.
                    tracing::debug!(error = %e, "a connection failed before it was accepted");
                }
                Err(e) => {
                    self.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = self.failures.ready() {
                        tracing::warn!(
                            error = %e,
                            open = self.open(),
                            max_connections = self.limits.max_connections,
                            similar_since_last_warning = held_back,
                            "cannot accept connections ({}); pausing {:?} before retrying",
                            if is_resource_exhaustion(&e) {
                                "out of descriptors or memory"
                            } else {
                                "listener error"
                            },
                            ACCEPT_BACKOFF,
                        );
                    }
                    // The pending connection stays in the backlog and the
                    // listener stays readable: retrying at once would spin.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    /// Closes a connection accepted past the cap: its client sees the
    /// connection end at once instead of hanging in the backlog.
    fn refuse(&mut self, stream: TcpStream, peer: SocketAddr) {
        drop(stream);
        let total = self.stats.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(held_back) = self.refusals.ready() {
            tracing::warn!(
                %peer,
                max_connections = self.limits.max_connections,
                refused_total = total,
                refused_since_last_warning = held_back,
                "connection refused: the node is at its connection cap"
            );
        }
    }

    /// The connections as the stream tonic's `serve_with_incoming_shutdown`
    /// takes. Dropping it closes the listener.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<Connection, std::convert::Infallible>> + Send {
        futures::stream::unfold(self, |mut incoming| async move {
            let connection = incoming.accept().await;
            Some((Ok(connection), incoming))
        })
    }
}

/// Errors of one connection (it was reset or aborted before we accepted it);
/// Linux's accept(2) also passes on pending network errors of the new socket.
fn is_connection_error(e: &io::Error) -> bool {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    ) {
        return true;
    }
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(
                libc::EPROTO
                    | libc::ENETDOWN
                    | libc::ENOPROTOOPT
                    | libc::EHOSTDOWN
                    | libc::EHOSTUNREACH
                    | libc::ENETUNREACH
                    | libc::EOPNOTSUPP
                    | libc::EPERM
                    | libc::ETIMEDOUT
            )
        )
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// The process or system is out of descriptors, or the kernel out of memory.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        )
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// A served connection: the socket, its permit of the connection cap
/// (released when the connection is dropped), and its idle timer.
#[derive(Debug)]
pub struct Connection<T = TcpStream> {
    io: T,
    idle: IdleTimer,
    _permit: OwnedSemaphorePermit,
}

impl<T> Connection<T> {
    fn new(
        io: T,
        permit: OwnedSemaphorePermit,
        idle_timeout: Duration,
        stats: Arc<ConnectionStats>,
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
            _permit: permit,
        }
    }
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
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.idle.progress();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
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
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.idle.progress();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
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
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.idle.progress();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
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

impl Connected for Connection<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    /// The peer's and our address, as tonic's own TCP listener gives them,
    /// so `Request::remote_addr` keeps working.
    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_default_cap_keeps_a_reserve_of_descriptors() {
        assert_eq!(cap_for_descriptor_limit(1024), 896);
        assert_eq!(cap_for_descriptor_limit(256), 192);
        assert_eq!(cap_for_descriptor_limit(100), 50);
        assert_eq!(cap_for_descriptor_limit(1), 1);
        assert_eq!(cap_for_descriptor_limit(u64::MAX), 917_504);
        let limits = ConnectionLimits::default();
        assert!(limits.max_connections >= 1);
        assert_eq!(limits.keepalive_interval(), Duration::from_secs(60));
        assert_eq!(limits.keepalive_timeout(), Duration::from_secs(20));
        let short = ConnectionLimits {
            idle_timeout: Duration::from_secs(2),
            ..limits
        };
        assert_eq!(short.keepalive_interval(), Duration::from_secs(1));
        assert_eq!(short.keepalive_timeout(), Duration::from_secs(1));
    }

    #[test]
    fn warnings_are_rate_limited() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let mut throttle = Throttle::default();
            assert_eq!(throttle.ready(), Some(0));
            assert_eq!(throttle.ready(), None);
            assert_eq!(throttle.ready(), None);
            tokio::time::advance(WARN_EVERY).await;
            assert_eq!(throttle.ready(), Some(2));
            assert_eq!(throttle.ready(), None);
        });
    }

    /// Echoes what `conn` reads until it ends, then drops it.
    async fn echo(mut conn: Connection) {
        let mut buf = [0u8; 64];
        while let Ok(n) = conn.read(&mut buf).await {
            if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    }

    async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
        stream.write_all(message).await?;
        let mut back = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        assert_eq!(back, message);
        Ok(())
    }

    /// Whether the server ended `stream` within a second (EOF or reset).
    async fn closed_at_once(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn at_the_cap_a_new_connection_is_closed_at_once_and_the_others_keep_working() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Incoming::new(
            listener,
            ConnectionLimits {
                max_connections: 2,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
            },
        );
        let stats = incoming.stats();
        tokio::spawn(async move {
            loop {
                let conn = incoming.accept().await;
                assert!(conn.io.nodelay().unwrap(), "TCP_NODELAY is kept");
                tokio::spawn(echo(conn));
            }
        });

        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        round_trip(&mut a, b"a").await.unwrap();
        round_trip(&mut b, b"b").await.unwrap();

        let mut refused = TcpStream::connect(addr).await.unwrap();
        assert!(closed_at_once(&mut refused).await, "not closed at the cap");
        assert_eq!(stats.refused(), 1);
        round_trip(&mut a, b"still a").await.unwrap();
        round_trip(&mut b, b"still b").await.unwrap();

        // A closed connection gives its permit back.
        drop(a);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut c = TcpStream::connect(addr).await.unwrap();
            if round_trip(&mut c, b"c").await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "the freed permit was not reused");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.accepted(), 3);
        round_trip(&mut b, b"b again").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_closed_once_nothing_moved_for_the_idle_timeout() {
        let timeout = Duration::from_secs(10);
        let stats = Arc::new(ConnectionStats::default());
        let permits = Arc::new(Semaphore::new(1));
        let permit = Arc::clone(&permits).try_acquire_owned().unwrap();
        let (mut peer, server) = tokio::io::duplex(64);
        let mut conn = Connection::new(server, permit, timeout, Arc::clone(&stats));
        let start = Instant::now();
        let mut buf = [0u8; 8];

        // Bytes read and bytes written both count as progress.
        tokio::time::advance(Duration::from_secs(8)).await;
        peer.write_all(b"x").await.unwrap();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 1);
        tokio::time::advance(Duration::from_secs(8)).await;
        conn.write_all(b"y").await.unwrap();
        tokio::time::advance(Duration::from_secs(8)).await;
        // 24 s in, 8 s after the last byte: not idle yet.
        let early = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await;
        assert!(early.is_err(), "closed early: {early:?}");
        assert_eq!(stats.idle_closed(), 0);

        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(26));
        assert_eq!(stats.idle_closed(), 1);
        // It stays closed, and its permit is held until it is dropped.
        assert!(conn.write_all(b"z").await.is_err());
        assert_eq!(permits.available_permits(), 0);
        drop(conn);
        assert_eq!(permits.available_permits(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_tcp_connection_is_closed_at_the_idle_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Incoming::new(
            listener,
            ConnectionLimits {
                max_connections: 4,
                idle_timeout: Duration::from_secs(30),
            },
        );
        let stats = incoming.stats();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let conn = incoming.accept().await;
        let start = Instant::now();
        let served = tokio::spawn(echo(conn));
        let mut buf = [0u8; 1];
        // The server ends the connection: the client reads EOF.
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        served.await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(30));
        assert_eq!(stats.idle_closed(), 1);
        assert_eq!(incoming.open(), 0);
    }
}
