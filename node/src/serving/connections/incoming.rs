//! Accepting connections under the node-wide cap: at it, make room by
//! closing the connection that has gone longest without a call, or refuse
//! cleanly; back off when descriptors run out, never spin.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connection::Connection;
use super::peers::Peers;
use super::{
    ACCEPT_BACKOFF, ConnectionLimits, ConnectionStats, EVICT_AFTER_IDLE, EVICTION_SLACK, Throttle,
};

/// A listener that hands out at most [`ConnectionLimits::max_connections`]
/// connections at once, refuses the rest cleanly and never spins.
#[derive(Debug)]
pub struct Incoming {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    /// Permits in all: the cap, plus [`EVICTION_SLACK`] when connections
    /// are evicted to make room (newcomers then hold the slack until the
    /// connections they evicted close).
    capacity: usize,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    /// The connections held, when this listener makes room at the cap.
    peers: Option<Arc<Peers>>,
    refusals: Throttle,
    evictions: Throttle,
    failures: Throttle,
}

impl Incoming {
    /// Accepts on `listener` within `limits`; at the cap a newcomer is
    /// refused.
    pub fn new(listener: TcpListener, limits: ConnectionLimits) -> Self {
        Self::build(listener, limits, None)
    }

    /// As [`Self::new`], but knowing each connection by its addresses with
    /// the calls it has alive ([`Self::peers`], for
    /// [`crate::ops::responses`]), and making room at the cap: a connection
    /// that never called, else the one longest without a call (at least
    /// [`EVICT_AFTER_IDLE`]), is closed for the newcomer.
    pub fn with_peers(listener: TcpListener, limits: ConnectionLimits) -> Self {
        Self::build(listener, limits, Some(Arc::default()))
    }

    fn build(listener: TcpListener, limits: ConnectionLimits, peers: Option<Arc<Peers>>) -> Self {
        let cap = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        let slack = if peers.is_some() { EVICTION_SLACK } else { 0 };
        let capacity = (cap + slack).min(Semaphore::MAX_PERMITS);
        Incoming {
            listener,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            limits,
            stats: Arc::default(),
            peers,
            refusals: Throttle::default(),
            evictions: Throttle::default(),
            failures: Throttle::default(),
        }
    }

    /// What this listener has done so far.
    pub fn stats(&self) -> Arc<ConnectionStats> {
        Arc::clone(&self.stats)
    }

    /// The connections held, by their addresses, with the calls each has
    /// alive (see [`crate::ops::responses`]); `None` unless made
    /// [`Self::with_peers`].
    pub fn peers(&self) -> Option<Arc<Peers>> {
        self.peers.clone()
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
                    let permit = if self.open() < self.limits.max_connections {
                        Arc::clone(&self.permits).try_acquire_owned().ok()
                    } else {
                        self.make_room(peer)
                    };
                    let Some(permit) = permit else {
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
                    let registered = match (&self.peers, stream.local_addr()) {
                        (Some(peers), Ok(local)) => Some(peers.register(local, peer)),
                        _ => None,
                    };
                    return Connection::new(
                        stream,
                        permit,
                        self.limits.idle_timeout,
                        Arc::clone(&self.stats),
                        registered,
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

    /// At the cap: closes a connection that never made a call, else the
    /// one that has gone longest without one (none alive, none started for
    /// [`EVICT_AFTER_IDLE`]), and lends the newcomer a permit of the slack
    /// until it closes. `None` when every connection is calling, or the
    /// slack is spent on connections still closing: the newcomer is the one
    /// to refuse. Never waits: the accept loop goes on.
    fn make_room(&mut self, newcomer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        let peers = self.peers.as_ref()?;
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok()?;
        let (idlest, load) = peers.idlest(EVICT_AFTER_IDLE)?;
        let idle = load.idle_for(tokio::time::Instant::now());
        let never_called = !load.has_called();
        load.evict();
        let total = self.stats.evicted.fetch_add(1, Ordering::Relaxed) + 1;
        super::count_eviction(super::EvictionReason::ConnectionCap);
        if let Some(held_back) = self.evictions.ready() {
            tracing::warn!(
                %newcomer,
                evicted = %idlest,
                ?idle,
                never_called,
                max_connections = self.limits.max_connections,
                evicted_total = total,
                evicted_since_last_warning = held_back,
                "at the connection cap: closed the connection longest without a call \
                 to make room"
            );
        }
        Some(permit)
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
                "connection refused: the node is at its connection cap, every \
                 connection with a call alive or started in the last second"
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
