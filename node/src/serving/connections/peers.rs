//! The connections a gRPC port holds, by their addresses, with how many
//! calls each has alive and how many of its responses are waiting to be
//! sent — so that when the node's bound on live calls is reached
//! ([`crate::ops::responses`]), the connection whose client reads the
//! least can be told to close and give its calls back.
//!
//! The same entries let a port at its connection cap make room: a
//! connection that never made a call, else the one that has gone longest
//! without one, gives its place to a newcomer ([`Peers::idlest`], used by
//! [`super::Incoming`]), so clients that open connections and never call
//! cannot keep others out.
//!
//! A call is alive from the moment it is taken until its response has been
//! sent; a client that never reads its responses keeps them all alive. A
//! node-wide bound keeps such a client from exhausting memory, but on its
//! own it let that client take every call's place: everyone else was
//! refused for as long as it kept its connections open. Closing a
//! connection is the one way to get back what it holds (its responses sit in
//! HTTP/2 streams waiting for a window the client never opens). The one to
//! close is the one with the most responses answered and not sent, not the
//! one with the most calls alive: a parent sends a child all its searches
//! over one connection, hundreds at once under load, and reads each answer
//! as it comes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Context;
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::time::Instant;

/// A connection's addresses, ours and the peer's: unique among live
/// connections (a peer's address alone is not, on a wildcard listener).
pub type PeerKey = (SocketAddr, SocketAddr);

/// The connections of one port, by their addresses.
#[derive(Debug, Default)]
pub struct Peers {
    by_key: Mutex<HashMap<PeerKey, Arc<ConnectionLoad>>>,
}

/// One connection's share: its calls alive and, of those, the ones
/// answered but not yet sent; when it last started a call; whether it has
/// been told to close.
#[derive(Debug)]
pub struct ConnectionLoad {
    live: AtomicUsize,
    unsent: AtomicUsize,
    opened: Instant,
    /// When the last call (health checks included) started, in ms after
    /// `opened`.
    last_call_ms: AtomicU64,
    called: AtomicBool,
    evicted: AtomicBool,
    read: AtomicWaker,
    write: AtomicWaker,
}

/// A connection's entry in [`Peers`], removed when dropped.
#[derive(Debug)]
pub struct Registered {
    peers: Arc<Peers>,
    key: PeerKey,
    load: Arc<ConnectionLoad>,
}

impl Peers {
    /// Enters a new connection between `local` and `remote`.
    pub fn register(self: &Arc<Self>, local: SocketAddr, remote: SocketAddr) -> Registered {
        let load = Arc::new(ConnectionLoad {
            live: AtomicUsize::new(0),
            unsent: AtomicUsize::new(0),
            opened: Instant::now(),
            last_call_ms: AtomicU64::new(0),
            called: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            read: AtomicWaker::new(),
            write: AtomicWaker::new(),
        });
        let key = (local, remote);
        self.lock().insert(key, Arc::clone(&load));
        Registered {
            peers: Arc::clone(self),
            key,
            load,
        }
    }

    /// The connection between `local` and `remote`, if it is held.
    pub fn get(&self, local: SocketAddr, remote: SocketAddr) -> Option<Arc<ConnectionLoad>> {
        self.lock().get(&(local, remote)).cloned()
    }

    /// The connection with the most responses answered but not sent (a
    /// client not reading them), and how many, among those not already
    /// told to close. A client that reads its answers has a few unsent at
    /// most, however many calls it has alive: the tree's own parent sends
    /// a child all its searches over one connection.
    pub fn most_unsent(&self) -> Option<(SocketAddr, Arc<ConnectionLoad>, usize)> {
        self.lock()
            .iter()
            .filter(|(_, load)| !load.is_evicted())
            .map(|((_, remote), load)| (*remote, Arc::clone(load), load.unsent()))
            .max_by_key(|&(remote, _, unsent)| (unsent, std::cmp::Reverse(remote)))
    }

    /// Whether a connection told to close still holds calls: their permits
    /// are on their way back.
    pub fn eviction_pending(&self) -> bool {
        self.lock()
            .values()
            .any(|load| load.is_evicted() && load.live() > 0)
    }

    /// The connection to give its place to a newcomer, among those with no
    /// call alive, none started for at least `min_idle`, and not already
    /// told to close: first one that never made a call (the oldest), else
    /// the one longest without a call.
    pub fn idlest(&self, min_idle: Duration) -> Option<(SocketAddr, Arc<ConnectionLoad>)> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, load)| !load.is_evicted() && load.live() == 0)
            .map(|((_, remote), load)| (*remote, Arc::clone(load), load.idle_for(now)))
            .filter(|&(_, _, idle)| idle >= min_idle)
            .max_by_key(|&(remote, ref load, idle)| {
                (!load.has_called(), idle, std::cmp::Reverse(remote))
            })
            .map(|(remote, load, _)| (remote, load))
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerKey, Arc<ConnectionLoad>>> {
        self.by_key.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut by_key = self.peers.lock();
        if by_key
            .get(&self.key)
            .is_some_and(|load| Arc::ptr_eq(load, &self.load))
        {
            by_key.remove(&self.key);
        }
    }
}

impl Registered {
    /// This connection's share.
    pub fn load(&self) -> &Arc<ConnectionLoad> {
        &self.load
    }
}

impl ConnectionLoad {
    /// Calls alive on this connection.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Calls answered whose responses are not yet sent.
    pub fn unsent(&self) -> usize {
        self.unsent.load(Ordering::Relaxed)
    }

    /// One more call alive; [`Self::ended`] when its response is sent.
    pub fn started(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    /// A call that holds nothing (a health check) was made: the connection
    /// is in use.
    pub fn touch(&self) {
        let since_opened = Instant::now().duration_since(self.opened);
        let ms = u64::try_from(since_opened.as_millis()).unwrap_or(u64::MAX);
        self.last_call_ms.store(ms, Ordering::Relaxed);
        self.called.store(true, Ordering::Relaxed);
    }

    /// A call's handler answered; its response waits to be sent until
    /// [`Self::sent`].
    pub fn answered(&self) {
        self.unsent.fetch_add(1, Ordering::Relaxed);
    }

    /// A response counted by [`Self::answered`] was sent or dropped.
    pub fn sent(&self) {
        self.unsent.fetch_sub(1, Ordering::Relaxed);
    }

    /// A call's response was sent or dropped.
    pub fn ended(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether the connection has made a call (health checks included).
    pub fn has_called(&self) -> bool {
        self.called.load(Ordering::Relaxed)
    }

    /// How long since the connection last started a call (or opened).
    pub fn idle_for(&self, now: Instant) -> Duration {
        let last = self.opened + Duration::from_millis(self.last_call_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }

    /// Tells the connection to close: its next read or write fails, and a
    /// read or write waiting now is woken to fail.
    pub fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.read.wake();
        self.write.wake();
    }

    /// Whether the connection has been told to close.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Registers a pending read to be woken by [`Self::evict`]; true if it
    /// was evicted meanwhile (the read must fail now rather than wait).
    pub(super) fn wake_read_on_evict(&self, cx: &Context<'_>) -> bool {
        self.read.register(cx.waker());
        self.is_evicted()
    }

    /// As [`Self::wake_read_on_evict`], for a pending write.
    pub(super) fn wake_write_on_evict(&self, cx: &Context<'_>) -> bool {
        self.write.register(cx.waker());
        self.is_evicted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_connection_with_most_unsent_is_named_and_entries_leave_with_their_connections() {
        let peers = Arc::new(Peers::default());
        let local = addr(50051);
        let a = peers.register(local, addr(1001));
        let b = peers.register(local, addr(1002));
        // `b` has more calls alive, but reads its answers; `a` does not.
        for _ in 0..5 {
            b.load().started();
        }
        for _ in 0..3 {
            a.load().started();
            a.load().answered();
        }
        let (remote, load, unsent) = peers.most_unsent().unwrap();
        assert_eq!((remote, unsent), (addr(1001), 3));
        assert!(!peers.eviction_pending());
        load.evict();
        assert!(a.load().is_evicted());
        assert!(peers.eviction_pending(), "a's calls are still alive");
        assert_eq!(peers.most_unsent().unwrap().0, addr(1002));
        for _ in 0..3 {
            a.load().sent();
            a.load().ended();
        }
        assert!(!peers.eviction_pending());
        assert_eq!(peers.get(local, addr(1002)).unwrap().live(), 5);
        drop(a);
        assert_eq!(peers.len(), 1);
        drop(b);
        assert!(peers.is_empty());
    }

    #[test]
    fn one_remote_address_on_two_local_ones_is_two_connections() {
        let peers = Arc::new(Peers::default());
        let remote = addr(40000);
        let a = peers.register(addr(50051), remote);
        let b = peers.register(SocketAddr::from(([127, 0, 0, 2], 50051)), remote);
        assert_eq!(peers.len(), 2);
        a.load().started();
        assert_eq!(peers.get(addr(50051), remote).unwrap().live(), 1);
        drop(b);
        assert_eq!(peers.get(addr(50051), remote).unwrap().live(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_called_gives_way_before_a_quiet_client() {
        let peers = Arc::new(Peers::default());
        let local = addr(50051);
        let quiet = peers.register(local, addr(1001));
        quiet.load().touch();
        tokio::time::advance(Duration::from_secs(10)).await;
        let never = peers.register(local, addr(1002));
        tokio::time::advance(Duration::from_secs(2)).await;
        // `quiet` went 12 s without a call, `never` was opened 2 s ago and
        // never called: `never` goes first.
        assert_eq!(peers.idlest(Duration::from_secs(1)).unwrap().0, addr(1002));
        drop(never);
        assert_eq!(peers.idlest(Duration::from_secs(1)).unwrap().0, addr(1001));
        // A health check counts as a call.
        quiet.load().touch();
        assert!(peers.idlest(Duration::from_secs(1)).is_none());
    }
}
