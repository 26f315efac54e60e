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
//! So when it is reached, a call from a connection with fewer responses
//! waiting to be sent than the connection with the most (by two or more)
//! closes that connection ([`crate::serving::connections::peers`]) and
//! waits, at most [`EVICTION_WAIT`], for the permits it gives back; while a
//! closed connection's permits are still on their way back, callers wait
//! for them rather than close another. A client that reads its answers is
//! served however many unread ones another client piles up, and the one
//! that reads least is the one refused.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::serving::connections::peers::{ConnectionLoad, PeerKey, Peers};

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
    load: Option<Arc<ConnectionLoad>>,
    answered: bool,
}

impl ResponsePermit {
    /// The call's handler answered: its response now waits to be sent.
    fn answered(&mut self) {
        if let (Some(load), false) = (&self.load, self.answered) {
            load.answered();
            self.answered = true;
        }
    }
}

impl Drop for ResponsePermit {
    fn drop(&mut self) {
        if let Some(load) = &self.load {
            if self.answered {
                load.sent();
            }
            load.ended();
        }
    }
}

impl ResponseBudget {
    /// A budget of `max` live responses; with `peers` (the connections of
    /// the port it guards), the connection with the most unsent responses
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
    /// connection with the most unsent responses if the caller's has fewer
    /// (unless a closed one's permits are still coming back), and waits for
    /// a permit at most [`EVICTION_WAIT`]; otherwise the refusal.
    pub async fn admit_by_eviction(
        &self,
        peer: Option<PeerKey>,
    ) -> Result<Option<ResponsePermit>, tonic::Status> {
        let pending = self.peers.as_ref().is_some_and(|p| p.eviction_pending());
        if !pending && !self.evict_for(self.load_of(peer).as_ref(), peer) {
            return Err(self.refusal());
        }
        match tokio::time::timeout(EVICTION_WAIT, Arc::clone(&self.permits).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(self.grant(permit, peer))),
            _ => Err(self.refusal()),
        }
    }

    fn grant(&self, permit: OwnedSemaphorePermit, peer: Option<PeerKey>) -> ResponsePermit {
        let load = self.load_of(peer);
        if let Some(load) = &load {
            load.started();
        }
        ResponsePermit {
            _permit: permit,
            load,
            answered: false,
        }
    }

    fn load_of(&self, peer: Option<PeerKey>) -> Option<Arc<ConnectionLoad>> {
        let (local, remote) = peer?;
        self.peers.as_ref()?.get(local, remote)
    }

    /// Closes the connection with the most responses waiting to be sent,
    /// if it has at least two more than the caller's (`mine`, from `peer`):
    /// true if one was closed.
    fn evict_for(&self, mine: Option<&Arc<ConnectionLoad>>, peer: Option<PeerKey>) -> bool {
        let Some(peers) = &self.peers else {
            return false;
        };
        let Some((addr, heaviest, unsent)) = peers.most_unsent() else {
            return false;
        };
        let my_unsent = mine.map_or(0, |l| l.unsent());
        if mine.is_some_and(|l| Arc::ptr_eq(l, &heaviest)) || unsent < my_unsent + 2 {
            return false;
        }
        heaviest.evict();
        let total = self.evictions.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            evicted = %addr,
            evicted_unsent_responses = unsent,
            evicted_live_calls = heaviest.live(),
            caller = ?peer.map(|(_, remote)| remote),
            caller_unsent_responses = my_unsent,
            bound = self.max,
            evictions_so_far = total,
            "at the bound on live calls: closed the connection with the most responses \
             it has not read"
        );
        true
    }

    fn refusal(&self) -> tonic::Status {
        tonic::Status::resource_exhausted(format!(
            "this node holds {} calls whose responses are not yet sent, and no other \
             connection has more of them unread than this one: retry later",
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

/// A response body that holds its call's permit until it is done.
pub struct Held {
    body: tonic::body::Body,
    _permit: ResponsePermit,
}

impl Held {
    /// `body`, holding `permit` as long as it lives.
    pub fn new(body: tonic::body::Body, mut permit: ResponsePermit) -> Self {
        permit.answered();
        Held {
            body,
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
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test(start_paused = true)]
    async fn at_the_bound_the_connection_reading_least_is_closed_and_only_one_at_a_time() {
        let peers = Arc::new(Peers::default());
        let register = |k: PeerKey| peers.register(k.0, k.1);
        let (unread, parent, other, light, late) = (key(1), key(2), key(3), key(4), key(5));
        let (unread_conn, parent_conn, other_conn) =
            (register(unread), register(parent), register(other));
        let (_light_conn, _late_conn) = (register(light), register(late));
        let budget = ResponseBudget::new(6, Some(Arc::clone(&peers)));
        let admit = |k: PeerKey| {
            let budget = budget.clone();
            tokio::spawn(async move { budget.admit(SEARCH, Some(k)).await })
        };

        // A parent's searches still running (many alive, none answered),
        // and a client that does not read its three answers.
        let mut searches = Vec::new();
        for _ in 0..3 {
            searches.push(budget.admit(SEARCH, Some(parent)).await.unwrap().unwrap());
        }
        let mut unread_answers = Vec::new();
        for _ in 0..3 {
            let permit = budget.admit(SEARCH, Some(unread)).await.unwrap().unwrap();
            unread_answers.push(Held::new(tonic::body::Body::empty(), permit));
        }
        assert_eq!(
            (parent_conn.load().live(), unread_conn.load().unsent()),
            (3, 3)
        );

        // The reader-less connection itself is refused, and not closed.
        let refused = budget.admit(SEARCH, Some(unread)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(!unread_conn.load().is_evicted());

        // The parent, with the most calls alive, asks again: the
        // connection that reads least is closed, not the parent's.
        let waiting = admit(parent);
        tokio::task::yield_now().await;
        assert!(unread_conn.load().is_evicted());
        assert!(!parent_conn.load().is_evicted());
        unread_answers.clear();
        searches.push(waiting.await.unwrap().unwrap().unwrap());
        assert_eq!(budget.evictions(), 1);

        // Full again (two answers unread on `other`). Two callers at once
        // close one connection between them, and wait for its permits.
        let mut other_answers = Vec::new();
        for _ in 0..2 {
            let permit = budget.admit(SEARCH, Some(other)).await.unwrap().unwrap();
            other_answers.push(Held::new(tonic::body::Body::empty(), permit));
        }
        let first = admit(light);
        tokio::task::yield_now().await;
        let second = admit(late);
        tokio::task::yield_now().await;
        assert!(other_conn.load().is_evicted());
        assert_eq!(budget.evictions(), 2, "the second caller closed another");
        assert!(!parent_conn.load().is_evicted());
        other_answers.clear();
        first.await.unwrap().unwrap().unwrap();
        second.await.unwrap().unwrap().unwrap();

        // A closed connection that does not give its calls back: callers
        // are refused after the wait.
        let stuck = key(6);
        let stuck_conn = register(stuck);
        let mut stuck_answers = Vec::new();
        while let Admission::Granted(Some(permit)) = budget.try_admit(SEARCH, Some(stuck)) {
            stuck_answers.push(Held::new(tonic::body::Body::empty(), permit));
        }
        let refused = budget.admit(SEARCH, Some(light)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(stuck_conn.load().is_evicted());
    }
}
