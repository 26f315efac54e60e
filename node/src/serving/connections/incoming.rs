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
    ACCEPT_BACKOFF, ConnectionLimits, ConnectionStats, EVICT_AFTER_IDLE, EVICTION_WAIT, Throttle,
};

/// A listener that hands out at most [`ConnectionLimits::max_connections`]
/// connections at once, refuses the rest cleanly and never spins.
#[derive(Debug)]
pub struct Incoming {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    capacity: usize,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    peers: Arc<Peers>,
    refusals: Throttle,
    evictions: Throttle,
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
            peers: Arc::default(),
            refusals: Throttle::default(),
            evictions: Throttle::default(),
            failures: Throttle::default(),
        }
    }

    /// What this listener has done so far.
    pub fn stats(&self) -> Arc<ConnectionStats> {
        Arc::clone(&self.stats)
    }

    /// The connections held, by peer address, with the calls each has
    /// alive (see [`crate::ops::responses`]).
    pub fn peers(&self) -> Arc<Peers> {
        Arc::clone(&self.peers)
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
                    let permit = match Arc::clone(&self.permits).try_acquire_owned() {
                        Ok(permit) => permit,
                        Err(_) => match self.make_room(peer).await {
                            Some(permit) => permit,
                            None => {
                                self.refuse(stream, peer);
                                continue;
                            }
                        },
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
                        Some(self.peers.register(peer)),
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

    /// At the cap: closes the connection that has gone longest without a
    /// call (none alive, none started for [`EVICT_AFTER_IDLE`]) and waits
    /// at most [`EVICTION_WAIT`] for its permit. `None` when every
    /// connection is calling: the newcomer is the one to refuse.
    async fn make_room(&mut self, newcomer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        let (idlest, load) = self.peers.idlest(EVICT_AFTER_IDLE)?;
        let idle = load.idle_for(tokio::time::Instant::now());
        load.evict();
        let total = self.stats.evicted.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(held_back) = self.evictions.ready() {
            tracing::warn!(
                %newcomer,
                evicted = %idlest,
                ?idle,
                max_connections = self.limits.max_connections,
                evicted_total = total,
                evicted_since_last_warning = held_back,
                "at the connection cap: closed the connection longest without a call \
                 to make room"
            );
        }
        tokio::time::timeout(EVICTION_WAIT, Arc::clone(&self.permits).acquire_owned())
            .await
            .ok()?
            .ok()
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
