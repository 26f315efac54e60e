//! A node-wide bound on responses alive at once: from the moment a call is
//! taken until the last of its response body has been handed to the
//! transport (or dropped), which [`Held`] does a slice at a time as the
//! client takes them.
//!
//! A response a client does not read stays in the node, bytes and all,
//! while HTTP/2 flow control holds it back; the handler has returned, so
//! admission control and the in-flight bounds no longer count it. A client
//! that opens many streams, sets its receive window to 0 and never reads
//! grew a root from 32 MB to 2 GB in 6 s until it aborted. Each call now
//! holds a permit until its body is done (a client opening a window of one
//! byte got each answer buffered whole in h2, its permit given back, and a
//! root to 3.3 GB: hence the slices); past [`MAX_LIVE_RESPONSES`] a new
//! call is refused with `RESOURCE_EXHAUSTED` (health checks are exempt: a
//! saturated node is still alive). A connection that dies drops its bodies,
//! and their permits with them.
//!
//! The bound alone let the client that filled it keep everyone else out.
//! So each call's wait on its client is watched ([`Held`] for its answer,
//! [`Receiving`] for its request), and when the bound is reached, a call
//! from a connection with fewer calls stalled on their client than the
//! connection with the most (by two or more) closes that connection
//! ([`crate::serving::connections::peers`]) and waits, at most
//! [`EVICTION_WAIT`], for the permits it gives back; while a closed
//! connection's permits are still on their way back, callers wait for them
//! rather than close another. A client that sends and reads as it goes is
//! served however many calls another client stalls on one connection, and
//! the one that stalls most is the one refused. (A client that spreads its
//! stalled calls thinly over many connections is not told apart from
//! honest ones: the protection is by connection, not by client.)

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::serving::connections::peers::{
    CallWait, ConnectionLoad, Direction, MakeRoom, PeerKey, Peers,
};
use crate::serving::connections::{EvictionReason, count_eviction};

/// The most calls a node holds at once, handlers running or responses
/// unsent: far above what the tree's own traffic needs (a parent's
/// searches to a child are bounded by its in-flight limit), and at ~230 KB
/// for the largest search response (1000 hits with snippets), about 470 MB
/// at worst.
pub const MAX_LIVE_RESPONSES: usize = 2048;

/// How long a call that closed a connection waits for the permits it
/// gave back: the closed connection's streams end as soon as its
/// task runs again, well within this.
pub const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// The permits of one node's gRPC server.
#[derive(Debug, Clone)]
pub struct ResponseBudget {
    permits: Arc<Semaphore>,
    max: usize,
    peers: Option<Arc<Peers>>,
    evictions: Arc<AtomicU64>,
}

impl Default for ResponseBudget {
    fn default() -> Self {
        ResponseBudget::new(MAX_LIVE_RESPONSES, None)
    }
}

/// What [`ResponseBudget::try_admit`] decided.
#[derive(Debug)]
pub enum Admission {
    /// Admitted, with its permit (none for a health check).
    Granted(Option<ResponsePermit>),
    /// The bound is reached.
    Full,
}

/// A call's permit, given back (with its connection's share) when dropped.
#[derive(Debug)]
pub struct ResponsePermit {
    _permit: OwnedSemaphorePermit,
    call: Option<(Arc<ConnectionLoad>, u64, Arc<CallWait>)>,
}

impl ResponsePermit {
    /// Whether the call waits on its client, for the bodies that tell.
    pub fn wait(&self) -> Option<Arc<CallWait>> {
        self.call.as_ref().map(|(_, _, wait)| Arc::clone(wait))
    }

    /// The connection the call came on.
    fn load(&self) -> Option<Arc<ConnectionLoad>> {
        self.call.as_ref().map(|(load, _, _)| Arc::clone(load))
    }
}

impl Drop for ResponsePermit {
    fn drop(&mut self) {
        if let Some((load, id, _)) = &self.call {
            load.ended(*id);
        }
    }
}

impl ResponseBudget {
    /// A budget of `max` live responses; with `peers` (the connections of
    /// the port it guards), the connection with the most stalled calls
    /// is closed to make room for one with fewer.
    pub fn new(max: usize, peers: Option<Arc<Peers>>) -> Self {
        ResponseBudget {
            permits: Arc::new(Semaphore::new(max)),
            max,
            peers,
            evictions: Arc::default(),
        }
    }

    /// A permit for a call to `path` from `peer`, or the refusal to send.
    /// Health checks need none.
    pub async fn admit(
        &self,
        path: &str,
        peer: Option<PeerKey>,
    ) -> Result<Option<ResponsePermit>, tonic::Status> {
        match self.try_admit(path, peer) {
            Admission::Granted(permit) => Ok(permit),
            Admission::Full => self.admit_by_eviction(peer).await,
        }
    }

    /// [`Self::admit`] when it can be decided at once: a permit, or
    /// [`Admission::Full`] when the call must close another connection
    /// and wait ([`Self::admit_by_eviction`]) or be refused.
    pub fn try_admit(&self, path: &str, peer: Option<PeerKey>) -> Admission {
        if path.starts_with("/grpc.health.v1.Health/") {
            if let Some(load) = self.load_of(peer) {
                load.touch();
            }
            return Admission::Granted(None);
        }
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => Admission::Granted(Some(self.grant(permit, peer))),
            Err(_) => Admission::Full,
        }
    }

    /// The rest of [`Self::admit`] once the bound is reached: closes the
    /// connection with the most calls stalled on their client if the
    /// caller's has fewer ([`Peers::make_room_for`]; or, while a closed one's
    /// permits are still coming back, closes nothing), and waits for a
    /// permit at most [`EVICTION_WAIT`]; otherwise the refusal.
    pub async fn admit_by_eviction(
        &self,
        peer: Option<PeerKey>,
    ) -> Result<Option<ResponsePermit>, tonic::Status> {
        let Some(peers) = &self.peers else {
            return Err(self.refusal());
        };
        match peers.make_room_for(peer) {
            MakeRoom::Refuse => return Err(self.refusal()),
            MakeRoom::Pending => {}
            MakeRoom::Evicted {
                peer: evicted,
                stalled,
                live,
                caller_stalled,
            } => {
                let total = self.evictions.fetch_add(1, Ordering::Relaxed) + 1;
                count_eviction(EvictionReason::StalledCalls);
                tracing::warn!(
                    %evicted,
                    evicted_stalled_calls = stalled,
                    evicted_live_calls = live,
                    caller = ?peer.map(|(_, remote)| remote),
                    caller_stalled_calls = caller_stalled,
                    bound = self.max,
                    evictions_so_far = total,
                    "at the bound on live calls: closed the connection with the most calls \
                     stalled on their client (not reading answers, or not sending requests)"
                );
            }
        }
        match tokio::time::timeout(EVICTION_WAIT, Arc::clone(&self.permits).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(self.grant(permit, peer))),
            _ => Err(tonic::Status::resource_exhausted(format!(
                "this node holds {} calls whose responses are not yet sent, and those of the \
                 connection closed to make room did not come back within {:?}: retry later",
                self.max, EVICTION_WAIT
            ))),
        }
    }

    fn grant(&self, permit: OwnedSemaphorePermit, peer: Option<PeerKey>) -> ResponsePermit {
        let call = self.load_of(peer).map(|load| {
            let (id, wait) = load.started();
            (load, id, wait)
        });
        ResponsePermit {
            _permit: permit,
            call,
        }
    }

    fn load_of(&self, peer: Option<PeerKey>) -> Option<Arc<ConnectionLoad>> {
        let (local, remote) = peer?;
        self.peers.as_ref()?.get(local, remote)
    }

    fn refusal(&self) -> tonic::Status {
        tonic::Status::resource_exhausted(format!(
            "this node holds {} calls whose responses are not yet sent (clients slow to \
             send or read?), and none can be freed for this call now: retry later",
            self.max
        ))
    }

    /// Permits free now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Connections closed so far to make room.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

/// The most of an answer's message handed to the transport at once. hyper
/// takes a frame from the body as soon as the stream has a byte of window,
/// and h2 buffers all of it: a whole answer handed over at once would be
/// buffered in h2, its permit given back, for a client that opens a window
/// of one byte and reads no more. Handed over in slices, a stream holds
/// about two slices beyond the window its client granted (one in h2, one
/// in hyper's hand), and the rest stays with the call, counted. What the
/// client's window allows but its socket does not take is bounded per
/// connection by [`crate::serving::connections::peers::MAX_UNWRITTEN`].
pub const MAX_SLICE: usize = 16 * 1024;

/// A response body that holds its call's permit until it is done, hands
/// its messages over in slices of at most [`MAX_SLICE`] while its
/// connection has fewer than [`crate::serving::connections::peers::MAX_UNWRITTEN`] bytes handed over and not
/// written, and marks the call waiting on its client while a slice it
/// handed over is not taken, or while it waits for room.
pub struct Held {
    body: tonic::body::Body,
    rest: Option<Bytes>,
    wait: Option<Arc<CallWait>>,
    load: Option<Arc<ConnectionLoad>>,
    _permit: ResponsePermit,
}

impl Held {
    /// `body`, holding `permit` as long as it lives.
    pub fn new(body: tonic::body::Body, permit: ResponsePermit) -> Self {
        Held {
            body,
            rest: None,
            wait: permit.wait(),
            load: permit.load(),
            _permit: permit,
        }
    }

    fn not_waiting(&self) {
        if let Some(wait) = &self.wait {
            wait.not_waiting(Direction::Response);
        }
    }
}

impl Body for Held {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if self.rest.is_none() {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.rest = Some(data),
                    // Trailers: the end, sent without window.
                    Err(frame) => {
                        self.not_waiting();
                        return Poll::Ready(Some(Ok(frame)));
                    }
                },
                // The node's own work (a stream's next message), or done.
                other => {
                    self.not_waiting();
                    return other;
                }
            }
        }
        let rest = self.rest.take().unwrap_or_default();
        let len = rest.len().min(MAX_SLICE);
        if let Some(load) = &self.load
            && !load.may_hand_over(len, cx)
        {
            // The connection's socket is not taking what it was handed:
            // the rest waits here, counted, for the client to read.
            self.rest = Some(rest);
            if let Some(wait) = &self.wait {
                wait.waiting(Direction::Response);
            }
            return Poll::Pending;
        }
        let mut rest = rest;
        let slice = rest.split_to(len);
        if !rest.is_empty() {
            self.rest = Some(rest);
        }
        // The transport polls again once the stream has window for more,
        // which a client that does not read never gives it.
        if let Some(wait) = &self.wait {
            wait.waiting_afresh(Direction::Response);
        }
        Poll::Ready(Some(Ok(Frame::data(slice))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let hint = self.body.size_hint();
        let Some(rest) = &self.rest else {
            return hint;
        };
        let rest = rest.len() as u64;
        let mut with_rest = SizeHint::new();
        with_rest.set_lower(hint.lower() + rest);
        if let Some(upper) = hint.upper() {
            with_rest.set_upper(upper + rest);
        }
        with_rest
    }
}

/// A request body that marks its call waiting on its client while a
/// message of it is awaited: from the first time the transport has nothing
/// more of it until the whole message has come, the wait starting afresh
/// at every [`MAX_SLICE`] bytes that do come. A client that sends headers
/// and never the body, or trickles a message a byte at a time, holds its
/// call's permit otherwise unseen; a client sending a large message at any
/// useful speed never waits that long. It reads the gRPC framing (a flag
/// byte, a 4-byte length, the message) to know where messages end.
pub struct Receiving {
    body: tonic::body::Body,
    wait: Arc<CallWait>,
    /// Bytes of the current message's 5-byte prefix seen so far.
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message's payload still to come.
    payload_left: usize,
    /// Bytes come since the wait last started afresh.
    since_refresh: usize,
}

impl Receiving {
    fn new(body: tonic::body::Body, wait: Arc<CallWait>) -> Self {
        Receiving {
            body,
            wait,
            prefix: [0; 5],
            prefix_len: 0,
            payload_left: 0,
            since_refresh: 0,
        }
    }

    /// Follows `data` through the framing: a message ended stops the wait,
    /// and every [`MAX_SLICE`] bytes of one start it afresh.
    fn received(&mut self, mut data: &[u8]) {
        self.since_refresh += data.len();
        if self.since_refresh >= MAX_SLICE {
            self.since_refresh = 0;
            self.wait.refresh(Direction::Request);
        }
        while !data.is_empty() {
            if self.payload_left > 0 {
                let take = self.payload_left.min(data.len());
                self.payload_left -= take;
                data = &data[take..];
                if self.payload_left == 0 {
                    self.message_ended();
                }
                continue;
            }
            let take = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            self.prefix_len += take;
            data = &data[take..];
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                let [_, a, b, c, d] = self.prefix;
                self.payload_left = u32::from_be_bytes([a, b, c, d]) as usize;
                if self.payload_left == 0 {
                    self.message_ended();
                }
            }
        }
    }

    fn message_ended(&mut self) {
        self.since_refresh = 0;
        self.wait.not_waiting(Direction::Request);
    }
}

impl Body for Receiving {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            // Awaiting the client: since now, or since the message began.
            Poll::Pending => self.wait.waiting(Direction::Request),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received(data);
                }
            }
            Poll::Ready(_) => self.wait.not_waiting(Direction::Request),
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Request bodies whose wait on the client can be watched
/// ([`Receiving`]); `()` (in benchmarks) has nothing to wait for.
pub trait Watched: Sized {
    /// This body, telling `wait` when the call waits on its client.
    fn watched(self, wait: Arc<CallWait>) -> Self;
}

impl Watched for tonic::body::Body {
    fn watched(self, wait: Arc<CallWait>) -> Self {
        tonic::body::Body::new(Receiving::new(self, wait))
    }
}

impl Watched for () {
    fn watched(self, _wait: Arc<CallWait>) -> Self {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::connections::peers::{Registered, STALLED_AFTER};
    use http_body_util::Full;

    const SEARCH: &str = "/searchtree.v1.Search/Search";

    #[tokio::test]
    async fn a_permit_lasts_as_long_as_its_body_and_past_the_bound_calls_are_refused() {
        let budget = ResponseBudget::new(2, None);
        let a = budget.admit(SEARCH, None).await.unwrap().unwrap();
        let b = budget.admit(SEARCH, None).await.unwrap().unwrap();
        let refused = budget.admit(SEARCH, None).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        // Health checks are answered whatever the load.
        assert!(
            budget
                .admit("/grpc.health.v1.Health/Check", None)
                .await
                .unwrap()
                .is_none()
        );
        let held = Held::new(tonic::body::Body::empty(), a);
        assert_eq!(budget.available(), 0);
        drop(held);
        assert_eq!(budget.available(), 1);
        drop(b);
        assert_eq!(budget.available(), 2);
    }

    fn key(port: u16) -> PeerKey {
        (
            std::net::SocketAddr::from(([127, 0, 0, 1], 50051)),
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        )
    }

    /// A budget of `slots` permits whose calls come on one connection,
    /// `key(port)`: the connection's entry (registered while it lives), the
    /// budget, and the key its calls are admitted with.
    fn one_connection(port: u16, slots: usize) -> (Registered, ResponseBudget, PeerKey) {
        let peers = Arc::new(Peers::default());
        let k = key(port);
        (
            peers.register(k.0, k.1),
            ResponseBudget::new(slots, Some(peers)),
            k,
        )
    }

    /// An answer whose message the transport has taken and cannot send: a
    /// client that does not read it.
    async fn unread(permit: ResponsePermit) -> Held {
        let mut held = Held::new(
            tonic::body::Body::new(Full::new(Bytes::from_static(b"hits"))),
            permit,
        );
        let frame = futures::future::poll_fn(|cx| Pin::new(&mut held).poll_frame(cx)).await;
        assert!(matches!(frame, Some(Ok(_))));
        held
    }

    /// A request that never gets its body: a client that sent headers only.
    async fn bodiless(permit: &ResponsePermit) -> tonic::body::Body {
        struct Never;
        impl Body for Never {
            type Data = Bytes;
            type Error = tonic::Status;
            fn poll_frame(
                self: Pin<&mut Self>,
                _cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
                Poll::Pending
            }
        }
        let mut body = tonic::body::Body::new(Never).watched(permit.wait().unwrap());
        let polled =
            futures::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        assert!(polled.is_pending());
        body
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_bound_the_connection_stalling_most_is_closed_and_only_one_at_a_time() {
        let peers = Arc::new(Peers::default());
        let register = |k: PeerKey| peers.register(k.0, k.1);
        let (unread_key, parent, other, light, late) = (key(1), key(2), key(3), key(4), key(5));
        let (unread_conn, parent_conn, other_conn) =
            (register(unread_key), register(parent), register(other));
        let (_light_conn, _late_conn) = (register(light), register(late));
        let budget = ResponseBudget::new(6, Some(Arc::clone(&peers)));
        let admit = |k: PeerKey| {
            let budget = budget.clone();
            tokio::spawn(async move { budget.admit(SEARCH, Some(k)).await })
        };

        // A parent's searches still running (many alive, none waiting on
        // the parent), and a client that does not read its three answers.
        let mut searches = Vec::new();
        for _ in 0..3 {
            searches.push(budget.admit(SEARCH, Some(parent)).await.unwrap().unwrap());
        }
        let mut unread_answers = Vec::new();
        for _ in 0..3 {
            let permit = budget
                .admit(SEARCH, Some(unread_key))
                .await
                .unwrap()
                .unwrap();
            unread_answers.push(unread(permit).await);
        }
        tokio::time::advance(STALLED_AFTER).await;
        let now = tokio::time::Instant::now();
        assert_eq!(parent_conn.load().live(), 3);
        assert_eq!(parent_conn.load().stalled(now), 0);
        assert_eq!(unread_conn.load().stalled(now), 3);

        // The reader-less connection itself is refused, and not closed.
        let refused = budget.admit(SEARCH, Some(unread_key)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(!unread_conn.load().is_evicted());

        // The parent, with the most calls alive, asks again: the
        // connection stalling the most is closed, not the parent's.
        let waiting = admit(parent);
        tokio::task::yield_now().await;
        assert!(unread_conn.load().is_evicted());
        assert!(!parent_conn.load().is_evicted());
        unread_answers.clear();
        searches.push(waiting.await.unwrap().unwrap().unwrap());
        assert_eq!(budget.evictions(), 1);

        // Full again: two calls on `other` whose requests never get their
        // body. Two callers at once close one connection between them, and
        // wait for its permits.
        let mut other_calls = Vec::new();
        for _ in 0..2 {
            let permit = budget.admit(SEARCH, Some(other)).await.unwrap().unwrap();
            let body = bodiless(&permit).await;
            other_calls.push((permit, body));
        }
        tokio::time::advance(STALLED_AFTER).await;
        let first = admit(light);
        tokio::task::yield_now().await;
        let second = admit(late);
        tokio::task::yield_now().await;
        assert!(other_conn.load().is_evicted());
        assert_eq!(budget.evictions(), 2, "the second caller closed another");
        assert!(!parent_conn.load().is_evicted());
        other_calls.clear();
        first.await.unwrap().unwrap().unwrap();
        second.await.unwrap().unwrap().unwrap();

        // A closed connection that does not give its calls back: callers
        // are refused after the wait, saying so.
        let stuck = key(6);
        let stuck_conn = register(stuck);
        let mut stuck_answers = Vec::new();
        while let Admission::Granted(Some(permit)) = budget.try_admit(SEARCH, Some(stuck)) {
            stuck_answers.push(unread(permit).await);
        }
        tokio::time::advance(STALLED_AFTER).await;
        let refused = budget.admit(SEARCH, Some(light)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("did not come back"),
            "{refused:?}"
        );
        assert!(stuck_conn.load().is_evicted());
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_goes_over_in_slices_and_its_permit_stays_until_the_last() {
        let (conn, budget, k) = one_connection(7, 1);
        let permit = budget.admit(SEARCH, Some(k)).await.unwrap().unwrap();
        let message = Bytes::from(vec![7u8; 2 * MAX_SLICE + 100]);
        let mut held = Held::new(tonic::body::Body::new(Full::new(message.clone())), permit);
        async fn next(held: &mut Held) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
            futures::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *held).poll_frame(cx))).await
        }
        let mut got = Vec::new();
        // The first slice handed over; a client that takes no more leaves
        // the call waiting on it, stalled after a while, permit held.
        let Poll::Ready(Some(Ok(first))) = next(&mut held).await else {
            panic!("no first slice")
        };
        got.extend_from_slice(first.data_ref().unwrap());
        assert_eq!(got.len(), MAX_SLICE);
        tokio::time::advance(STALLED_AFTER).await;
        assert_eq!(conn.load().stalled(tokio::time::Instant::now()), 1);
        assert_eq!(budget.available(), 0);
        // Taken: the rest follows, then the end.
        while let Poll::Ready(Some(Ok(frame))) = next(&mut held).await {
            got.extend_from_slice(frame.data_ref().unwrap());
        }
        assert_eq!(got, message, "the slices make the message");
        assert_eq!(conn.load().stalled(tokio::time::Instant::now()), 0);
        drop(held);
        assert_eq!(budget.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_message_trickled_a_byte_at_a_time_stalls_its_call() {
        let (conn, budget, k) = one_connection(8, 2);
        let permit = budget.admit(SEARCH, Some(k)).await.unwrap().unwrap();
        let wait = permit.wait().unwrap();
        let mut receiving = Receiving::new(tonic::body::Body::empty(), wait);
        let stalled = || conn.load().stalled(tokio::time::Instant::now()) > 0;
        // What the transport does: bytes come, then it has nothing more.
        let arrive = |receiving: &mut Receiving, bytes: &[u8]| {
            receiving.received(bytes);
            receiving.wait.waiting(Direction::Request);
        };
        // A 10-byte message: its prefix, then a byte every 400 ms.
        arrive(&mut receiving, &[0, 0, 0, 0, 10]);
        for _ in 0..3 {
            tokio::time::advance(Duration::from_millis(400)).await;
            arrive(&mut receiving, &[1]);
        }
        assert!(stalled(), "a message trickled over 1.2 s is a stall");
        // The rest comes: the message is whole, the call no longer waits.
        receiving.received(&[1; 7]);
        assert!(!stalled());
        // Two whole messages in one frame, the second's start in it too,
        // then the node works on them: no wait on the client meanwhile,
        // however long.
        receiving.received(&[0, 0, 0, 0, 1, 9, 0, 0, 0, 0, 0, 0, 0]);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!stalled());
        // The rest of that message's prefix, then a large message at a
        // useful speed: 16 KiB every 400 ms is no stall.
        let size = 4 * MAX_SLICE as u32;
        arrive(&mut receiving, &[0, 0]);
        arrive(&mut receiving, &size.to_be_bytes()[1..]);
        for _ in 0..4 {
            tokio::time::advance(Duration::from_millis(400)).await;
            assert!(!stalled());
            arrive(&mut receiving, &vec![0; MAX_SLICE]);
        }
        assert!(!stalled());
        drop(permit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_that_looked_for_more_and_works_on_what_it_has_is_no_stall() {
        let (conn, budget, k) = one_connection(9, 2);
        let permit = budget.admit(SEARCH, Some(k)).await.unwrap().unwrap();
        let wait = permit.wait().unwrap();
        let handler = crate::ops::layer::ClientWait::new(Arc::clone(&wait));
        let stalled = || conn.load().stalled(tokio::time::Instant::now()) > 0;
        // A message came; the handler looks for another without waiting
        // (nothing yet), then commits what it has for 2 s.
        let mut receiving = Receiving::new(tonic::body::Body::empty(), wait);
        receiving.received(&[0, 0, 0, 0, 1, 7]);
        receiving.wait.waiting(Direction::Request);
        handler.working();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!stalled(), "the node's commit is not the client's stall");
        // It waits for the next message again: from now on, the client's.
        receiving.wait.waiting(Direction::Request);
        tokio::time::advance(STALLED_AFTER).await;
        assert!(stalled());
        drop(permit);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_wait_with_their_calls_while_the_socket_takes_nothing() {
        let (conn, budget, k) = one_connection(9, 128);
        let answer = |permit| {
            Held::new(
                tonic::body::Body::new(Full::new(Bytes::from(vec![1u8; MAX_SLICE]))),
                permit,
            )
        };
        let poll = |held: &mut Held| {
            let waker = futures::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            Pin::new(held)
                .poll_frame(&mut cx)
                .map(|f| f.map(|f| f.is_ok()))
        };
        let admit = || match budget.try_admit(SEARCH, Some(k)) {
            Admission::Granted(Some(permit)) => permit,
            _ => panic!("a permit"),
        };
        // A client whose window takes anything, whose socket takes nothing:
        // answers go over until a MiB is handed over and not written...
        let mut handed = Vec::new();
        while conn.load().unwritten() < crate::serving::connections::peers::MAX_UNWRITTEN {
            let mut held = answer(admit());
            assert_eq!(poll(&mut held), Poll::Ready(Some(true)));
            handed.push(held);
        }
        assert_eq!(handed.len(), 64);
        // ...then the next waits, its permit held, stalled in time.
        let permit = admit();
        let mut waiting = answer(permit);
        assert!(poll(&mut waiting).is_pending());
        tokio::time::advance(STALLED_AFTER).await;
        assert!(conn.load().stalled(tokio::time::Instant::now()) >= 1);
        // The socket takes bytes: it goes on.
        conn.load().written(2 * MAX_SLICE);
        assert_eq!(poll(&mut waiting), Poll::Ready(Some(true)));
    }
}
