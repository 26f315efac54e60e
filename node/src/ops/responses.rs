//! A node-wide bound on responses alive at once: from the moment a call is
//! taken until its response body has been sent (or dropped).
//!
//! A response a client does not read stays in the node, bytes and all,
//! while HTTP/2 flow control holds it back; the handler has returned, so
//! admission control and the in-flight bounds no longer count it. A client
//! that opens many streams, sets its receive window to 0 and never reads
//! grew a root from 32 MB to 2 GB in 6 s until it aborted. Each call now
//! holds a permit until its body is done; past [`MAX_LIVE_RESPONSES`] a new
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

use crate::serving::connections::peers::{CallWait, ConnectionLoad, MakeRoom, PeerKey, Peers};
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

/// A response body that holds its call's permit until it is done, and
/// marks the call waiting on its client while a frame it handed over is
/// not taken.
pub struct Held {
    body: tonic::body::Body,
    wait: Option<Arc<CallWait>>,
    _permit: ResponsePermit,
}

impl Held {
    /// `body`, holding `permit` as long as it lives.
    pub fn new(body: tonic::body::Body, permit: ResponsePermit) -> Self {
        Held {
            body,
            wait: permit.wait(),
            _permit: permit,
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
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Some(wait) = &self.wait {
            match &polled {
                // Handed over: the transport polls again once it has sent
                // it, which a client that does not read never lets it do.
                Poll::Ready(Some(Ok(_))) => {
                    wait.not_waiting();
                    wait.waiting();
                }
                // The node's own work (a stream's next message), or done.
                _ => wait.not_waiting(),
            }
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

/// A request body that marks its call waiting on its client while the rest
/// of the request has not come (a client that sends headers and never the
/// body holds its call's permit otherwise unseen).
pub struct Receiving {
    body: tonic::body::Body,
    wait: Arc<CallWait>,
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
            Poll::Pending => self.wait.waiting(),
            Poll::Ready(_) => self.wait.not_waiting(),
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
        tonic::body::Body::new(Receiving { body: self, wait })
    }
}

impl Watched for () {
    fn watched(self, _wait: Arc<CallWait>) -> Self {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::connections::peers::STALLED_AFTER;

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

    /// A body of one frame, as a unary answer's message.
    struct OneFrame(Option<Bytes>);

    impl Body for OneFrame {
        type Data = Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
            Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
        }
    }

    /// An answer whose message the transport has taken and cannot send: a
    /// client that does not read it.
    async fn unread(permit: ResponsePermit) -> Held {
        let mut held = Held::new(
            tonic::body::Body::new(OneFrame(Some(Bytes::from_static(b"hits")))),
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
}
