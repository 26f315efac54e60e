//! The connections a gRPC port holds, by peer address, with how many calls
//! each has alive — so that when the node's bound on live calls is reached
//! ([`crate::ops::responses`]), the connection holding the most can be told
//! to close and give them back.
//!
//! The same entries let a port at its connection cap make room: the
//! connection that has carried no call for longest gives its place to a
//! newcomer ([`Peers::idlest`], used by [`super::Incoming`]), so clients
//! that open connections and never call cannot keep others out.
//!
//! A call is alive from the moment it is taken until its response has been
//! sent; a client that never reads its responses keeps them all alive. A
//! node-wide bound keeps such a client from exhausting memory, but on its
//! own it let that client take every call's place: everyone else was
//! refused for as long as it kept its connections open. Closing a
//! connection is the one way to get back what it holds (its responses sit in
//! HTTP/2 streams waiting for a window the client never opens), and the
//! connection holding the most is the one to close: a client whose calls
//! are answered and read as they come holds a few at most.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Context;

use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::time::Instant;

/// The connections of one port, by their peer's address.
#[derive(Debug, Default)]
pub struct Peers {
    by_addr: Mutex<HashMap<SocketAddr, Arc<ConnectionLoad>>>,
}

/// One connection's share: its calls alive, when it last started one, and
/// whether it has been told to close.
#[derive(Debug)]
pub struct ConnectionLoad {
    live: AtomicUsize,
    opened: Instant,
    /// When the last call started, in ms after `opened` (0: none yet).
    last_call_ms: AtomicU64,
    evicted: AtomicBool,
    read: AtomicWaker,
    write: AtomicWaker,
}

/// A connection's entry in [`Peers`], removed when dropped.
#[derive(Debug)]
pub struct Registered {
    peers: Arc<Peers>,
    addr: SocketAddr,
    load: Arc<ConnectionLoad>,
}

impl Peers {
    /// Enters a new connection from `addr`.
    pub fn register(self: &Arc<Self>, addr: SocketAddr) -> Registered {
        let load = Arc::new(ConnectionLoad {
            live: AtomicUsize::new(0),
            opened: Instant::now(),
            last_call_ms: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            read: AtomicWaker::new(),
            write: AtomicWaker::new(),
        });
        self.lock().insert(addr, Arc::clone(&load));
        Registered {
            peers: Arc::clone(self),
            addr,
            load,
        }
    }

    /// The connection from `addr`, if it is held.
    pub fn get(&self, addr: SocketAddr) -> Option<Arc<ConnectionLoad>> {
        self.lock().get(&addr).cloned()
    }

    /// The connection with the most calls alive, and how many, among those
    /// not already told to close.
    pub fn heaviest(&self) -> Option<(SocketAddr, Arc<ConnectionLoad>, usize)> {
        self.lock()
            .iter()
            .filter(|(_, load)| !load.is_evicted())
            .map(|(addr, load)| (*addr, Arc::clone(load), load.live()))
            .max_by_key(|&(addr, _, live)| (live, std::cmp::Reverse(addr)))
    }

    /// The connection that has gone longest without a call (none alive,
    /// none started for at least `min_idle`), among those not already told
    /// to close: the one to give its place to a newcomer.
    pub fn idlest(&self, min_idle: Duration) -> Option<(SocketAddr, Arc<ConnectionLoad>)> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, load)| !load.is_evicted() && load.live() == 0)
            .map(|(addr, load)| (*addr, Arc::clone(load), load.idle_for(now)))
            .filter(|&(_, _, idle)| idle >= min_idle)
            .max_by_key(|&(addr, _, idle)| (idle, std::cmp::Reverse(addr)))
            .map(|(addr, load, _)| (addr, load))
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<ConnectionLoad>>> {
        self.by_addr.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut by_addr = self.peers.lock();
        // A new connection from the same address may have replaced this one.
        if by_addr
            .get(&self.addr)
            .is_some_and(|load| Arc::ptr_eq(load, &self.load))
        {
            by_addr.remove(&self.addr);
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

    /// One more call alive; [`Self::ended`] when its response is sent.
    pub fn started(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
        let since_opened = Instant::now().duration_since(self.opened);
        let ms = u64::try_from(since_opened.as_millis()).unwrap_or(u64::MAX);
        self.last_call_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the connection last started a call (or opened).
    pub fn idle_for(&self, now: Instant) -> Duration {
        let last = self.opened + Duration::from_millis(self.last_call_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }

    /// A call's response was sent or dropped.
    pub fn ended(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
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

    #[test]
    fn the_heaviest_connection_not_yet_evicted_is_named_and_entries_leave_with_their_connections() {
        let peers = Arc::new(Peers::default());
        let a = peers.register("127.0.0.1:1001".parse().unwrap());
        let b = peers.register("127.0.0.1:1002".parse().unwrap());
        for _ in 0..3 {
            a.load().started();
        }
        b.load().started();
        let (addr, load, live) = peers.heaviest().unwrap();
        assert_eq!((addr, live), (a.addr, 3));
        load.evict();
        assert!(a.load().is_evicted());
        assert_eq!(peers.heaviest().unwrap().0, b.addr);
        assert_eq!(peers.get(b.addr).unwrap().live(), 1, "looked up by address");
        b.load().ended();
        drop(a);
        // `b` has no call alive but started one just now: too recent to
        // give way.
        assert!(peers.idlest(Duration::from_secs(1)).is_none());
        assert_eq!(peers.idlest(Duration::ZERO).unwrap().0, b.addr);
        assert_eq!(peers.len(), 1);
        drop(b);
        assert!(peers.is_empty());
    }
}
