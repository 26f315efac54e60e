//! The connections a gRPC port holds, by their addresses, with how many
//! calls each has alive and how many of those are stalled on their client
//! ([`CallWait`]) — so that when the node's bound on live calls is reached
//! ([`crate::ops::responses`]), the connection whose client holds the node
//! up the most can be told to close and give its calls back.
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
//! HTTP/2 streams waiting for a window the client never opens, or its
//! requests for bodies it never sends). The one to close is the one with
//! the most calls stalled on their client, not the one with the most calls
//! alive: a parent sends a child all its searches over one connection,
//! hundreds at once under load, and sends and reads each as it goes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
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

/// One connection's share: its calls alive, each with whether it waits on
/// the client; when it last started a call; whether it has been told to
/// close.
#[derive(Debug)]
pub struct ConnectionLoad {
    live: AtomicUsize,
    calls: Mutex<HashMap<u64, Arc<CallWait>>>,
    next_call: AtomicU64,
    opened: Instant,
    /// When the last call (health checks included) started, in ms after
    /// `opened`.
    last_call_ms: AtomicU64,
    called: AtomicBool,
    evicted: AtomicBool,
    read: AtomicWaker,
    write: AtomicWaker,
    /// Answer bytes handed to the transport and not yet written to the
    /// socket, as far as can be told (see [`ConnectionLoad::unwritten`]).
    unwritten: AtomicU64,
    /// Answers waiting for `unwritten` to fall.
    writable: Mutex<Vec<Waker>>,
}

/// The most answer bytes a connection may have handed to the transport and
/// not written to its socket: past it, answers wait with their calls
/// (counted, their permits held) instead of piling up in h2's buffers,
/// which take up to 400 KiB a stream from a client that announces a large
/// window and then does not read its socket.
pub const MAX_UNWRITTEN: u64 = 1 << 20;

/// How long a call must have waited on its client to count as stalled:
/// for a whole message of its request (a request's headers without its
/// body, or a message trickled a byte at a time), or for a frame of its
/// answer to be taken. Far longer than a client that sends and reads as it
/// goes ever makes one wait, even under load.
pub const STALLED_AFTER: Duration = Duration::from_millis(500);

const NOT_WAITING: u64 = u64::MAX;

/// Which way a call waits on its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// For its request's next message (or the end of it).
    Request,
    /// For its answer's frame to be taken.
    Response,
}

/// Whether one call waits on its client, each way, and since when. A call
/// the node itself is working on (its handler running, or its streaming
/// answer not ready) does not wait on its client, however long it takes.
#[derive(Debug)]
pub struct CallWait {
    base: Instant,
    /// ms after `base` since when the call has waited for its request, or
    /// [`NOT_WAITING`].
    request_ms: AtomicU64,
    /// The same, for its answer to be taken.
    response_ms: AtomicU64,
}

impl CallWait {
    fn new(base: Instant) -> Self {
        CallWait {
            base,
            request_ms: AtomicU64::new(NOT_WAITING),
            response_ms: AtomicU64::new(NOT_WAITING),
        }
    }

    fn side(&self, direction: Direction) -> &AtomicU64 {
        match direction {
            Direction::Request => &self.request_ms,
            Direction::Response => &self.response_ms,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(Instant::now().duration_since(self.base).as_millis())
            .unwrap_or(NOT_WAITING - 1)
    }

    /// From now on the call waits on its client that way, unless it
    /// already did: then since then.
    pub fn waiting(&self, direction: Direction) {
        let _ = self.side(direction).compare_exchange(
            NOT_WAITING,
            self.now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The call waits on its client that way from now on, whatever it
    /// waited for before (the client moved: a message came, a frame was
    /// taken, and the next is awaited).
    pub fn waiting_afresh(&self, direction: Direction) {
        self.side(direction).store(self.now_ms(), Ordering::Relaxed);
    }

    /// If the call waits on its client that way, it does so afresh from now
    /// (the client moved, though the wait is not over).
    pub fn refresh(&self, direction: Direction) {
        let now = self.now_ms();
        let _ = self
            .side(direction)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |since| {
                (since != NOT_WAITING).then_some(now)
            });
    }

    /// The call does not wait on its client that way.
    pub fn not_waiting(&self, direction: Direction) {
        self.side(direction).store(NOT_WAITING, Ordering::Relaxed);
    }

    /// Whether the call has waited on its client, either way, for
    /// [`STALLED_AFTER`] or longer.
    pub fn stalled(&self, now: Instant) -> bool {
        [&self.request_ms, &self.response_ms]
            .into_iter()
            .any(|side| {
                let since = side.load(Ordering::Relaxed);
                since != NOT_WAITING
                    && now.saturating_duration_since(self.base + Duration::from_millis(since))
                        >= STALLED_AFTER
            })
    }
}

/// What [`Peers::make_room_for`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum MakeRoom {
    /// A connection closed earlier still holds calls: wait for them.
    Pending,
    /// No connection has enough more calls stalled than the caller's.
    Refuse,
    /// This connection was told to close.
    Evicted {
        /// Its peer's address.
        peer: SocketAddr,
        /// Its calls stalled on their client.
        stalled: usize,
        /// Its calls alive.
        live: usize,
        /// The caller's connection's calls stalled.
        caller_stalled: usize,
    },
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
            calls: Mutex::default(),
            next_call: AtomicU64::new(0),
            opened: Instant::now(),
            last_call_ms: AtomicU64::new(0),
            called: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            read: AtomicWaker::new(),
            write: AtomicWaker::new(),
            unwritten: AtomicU64::new(0),
            writable: Mutex::default(),
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

    /// Makes room at the bound on live calls for a call from `caller`:
    /// closes the connection with the most calls stalled on their client
    /// (see [`CallWait`]), if it has at least two more than the caller's,
    /// among those not already told to close. Decided under one lock, so
    /// that callers arriving together close one connection between them:
    /// while a closed connection still holds calls, their permits are on
    /// their way back, and nothing more is closed (and a caller whose own
    /// connection stalls calls is refused rather than queued for them).
    pub fn make_room_for(&self, caller: Option<PeerKey>) -> MakeRoom {
        let by_key = self.lock();
        let now = Instant::now();
        let mine = caller
            .and_then(|key| by_key.get(&key))
            .map_or(0, |load| load.stalled(now));
        if by_key
            .values()
            .any(|load| load.is_evicted() && load.live() > 0)
        {
            // Only a caller that stalls nothing waits for them: a stalling
            // client's calls queued first would take what was freed.
            return if mine == 0 {
                MakeRoom::Pending
            } else {
                MakeRoom::Refuse
            };
        }
        let Some((key, load, stalled)) = by_key
            .iter()
            .filter(|(key, load)| !load.is_evicted() && Some(**key) != caller)
            .map(|(key, load)| (*key, load, load.stalled(now)))
            .max_by_key(|&(key, _, stalled)| (stalled, std::cmp::Reverse(key)))
        else {
            return MakeRoom::Refuse;
        };
        if stalled < mine + 2 {
            return MakeRoom::Refuse;
        }
        load.evict();
        MakeRoom::Evicted {
            peer: key.1,
            stalled,
            live: load.live(),
            caller_stalled: mine,
        }
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

    /// Calls that have waited on their client for [`STALLED_AFTER`] or
    /// longer, now.
    pub fn stalled(&self, now: Instant) -> usize {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.values().filter(|call| call.stalled(now)).count()
    }

    /// One more call alive: its wait on the client, to be given back with
    /// [`Self::ended`] when its response is sent.
    pub fn started(&self) -> (u64, Arc<CallWait>) {
        self.live.fetch_add(1, Ordering::Relaxed);
        self.touch();
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let wait = Arc::new(CallWait::new(self.opened));
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.insert(id, Arc::clone(&wait));
        (id, wait)
    }

    /// A call that holds nothing (a health check) was made: the connection
    /// is in use.
    pub fn touch(&self) {
        let since_opened = Instant::now().duration_since(self.opened);
        let ms = u64::try_from(since_opened.as_millis()).unwrap_or(u64::MAX);
        self.last_call_ms.store(ms, Ordering::Relaxed);
        self.called.store(true, Ordering::Relaxed);
    }

    /// The call `id` (from [`Self::started`]) ended: its response was
    /// sent or dropped.
    pub fn ended(&self, id: u64) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.remove(&id);
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

    /// Bytes of answers handed to the transport and not yet written, as far
    /// as can be told: what was handed over, less every byte written since
    /// (frames' own bytes included), never below zero — so a connection
    /// that was read for a long while builds no credit for later.
    pub fn unwritten(&self) -> u64 {
        self.unwritten.load(Ordering::Relaxed)
    }

    /// Whether `len` more bytes of an answer may be handed to the
    /// transport now; if not, `cx` is woken once the socket takes bytes.
    pub fn may_hand_over(&self, len: usize, cx: &Context<'_>) -> bool {
        if self.unwritten() < MAX_UNWRITTEN || self.is_evicted() {
            self.unwritten.fetch_add(len as u64, Ordering::Relaxed);
            return true;
        }
        let mut writable = self.writable.lock().unwrap_or_else(|e| e.into_inner());
        // Written meanwhile?
        if self.unwritten() < MAX_UNWRITTEN {
            drop(writable);
            self.unwritten.fetch_add(len as u64, Ordering::Relaxed);
            return true;
        }
        writable.push(cx.waker().clone());
        false
    }

    /// The socket took `n` bytes (the connection says so as it writes):
    /// answers waiting for room go on.
    pub fn written(&self, n: usize) {
        let _ = self
            .unwritten
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u != 0).then(|| u.saturating_sub(n as u64))
            });
        if self.unwritten() < MAX_UNWRITTEN {
            let waiting = {
                let mut writable = self.writable.lock().unwrap_or_else(|e| e.into_inner());
                if writable.is_empty() {
                    return;
                }
                std::mem::take(&mut *writable)
            };
            for waker in waiting {
                waker.wake();
            }
        }
    }

    /// Tells the connection to close: its next read or write fails, and a
    /// read or write waiting now is woken to fail.
    pub fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.read.wake();
        self.write.wake();
        let waiting = std::mem::take(&mut *self.writable.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in waiting {
            waker.wake();
        }
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

    #[tokio::test(start_paused = true)]
    async fn the_connection_with_most_calls_stalled_on_their_client_is_closed_one_at_a_time() {
        let peers = Arc::new(Peers::default());
        let local = addr(50051);
        let (unread, parent, caller) = (
            (local, addr(1001)),
            (local, addr(1002)),
            (local, addr(1003)),
        );
        let a = peers.register(unread.0, unread.1);
        let b = peers.register(parent.0, parent.1);
        let _c = peers.register(caller.0, caller.1);
        // `b` (a parent) has more calls alive, its searches running; `a`'s
        // three answers wait for a client that does not read them.
        let searches: Vec<_> = (0..5).map(|_| b.load().started()).collect();
        let unread_calls: Vec<_> = (0..3).map(|_| a.load().started()).collect();
        for (_, wait) in &unread_calls {
            wait.waiting(Direction::Response);
        }
        // A brief wait on the parent's side is not a stall.
        searches[0].1.waiting(Direction::Request);
        tokio::time::advance(STALLED_AFTER).await;
        searches[1].1.waiting(Direction::Request);
        assert_eq!(b.load().stalled(Instant::now()), 1);
        assert_eq!(
            peers.make_room_for(Some(caller)),
            MakeRoom::Evicted {
                peer: addr(1001),
                stalled: 3,
                live: 3,
                caller_stalled: 0
            }
        );
        assert!(a.load().is_evicted() && !b.load().is_evicted());
        // Its calls are still alive: the next caller waits for them.
        assert_eq!(peers.make_room_for(Some(caller)), MakeRoom::Pending);
        for (id, _) in unread_calls {
            a.load().ended(id);
        }
        // The parent has one call stalled, the caller none: not enough.
        assert_eq!(peers.make_room_for(Some(caller)), MakeRoom::Refuse);
        // A call that moves again is no longer stalled.
        searches[0].1.not_waiting(Direction::Request);
        assert_eq!(b.load().stalled(Instant::now()), 0);
        assert_eq!(peers.get(local, addr(1002)).unwrap().live(), 5);
        drop(a);
        assert_eq!(peers.len(), 2);
    }

    #[test]
    fn one_remote_address_on_two_local_ones_is_two_connections() {
        let peers = Arc::new(Peers::default());
        let remote = addr(40000);
        let a = peers.register(addr(50051), remote);
        let b = peers.register(SocketAddr::from(([127, 0, 0, 2], 50051)), remote);
        assert_eq!(peers.len(), 2);
        let _call = a.load().started();
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
