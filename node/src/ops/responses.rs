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
//! So when it is reached, a call from a connection holding fewer calls than
//! the heaviest connection closes that connection
//! ([`crate::serving::connections::peers`]) and waits, at most
//! [`EVICTION_WAIT`], for the permits it gave back: a client that reads its
//! answers is served however many unread ones another client piles up, and
//! the one holding the most is the one refused.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::serving::connections::peers::{ConnectionLoad, Peers};

/// The most calls a node holds at once, handlers running or responses
/// unsent: far above what the tree's own traffic needs (a parent's
/// searches to a child are bounded by its in-flight limit), and at ~230 KB
/// for the largest search response (1000 hits with snippets), about 470 MB
/// at worst.
pub const MAX_LIVE_RESPONSES: usize = 2048;

/// How long a call that closed the heaviest connection waits for the
/// permits it gave back: the closed connection's streams end as soon as its
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
}

impl Drop for ResponsePermit {
    fn drop(&mut self) {
        if let Some(load) = &self.load {
            load.ended();
        }
    }
}

impl ResponseBudget {
    /// A budget of `max` live responses; with `peers` (the connections of
    /// the port it guards), the heaviest connection is closed to make room
    /// for a lighter one.
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
        peer: Option<SocketAddr>,
    ) -> Result<Option<ResponsePermit>, tonic::Status> {
        match self.try_admit(path, peer) {
            Admission::Granted(permit) => Ok(permit),
            Admission::Full => self.admit_by_eviction(peer).await,
        }
    }

    /// [`Self::admit`] when it can be decided at once: a permit, or
    /// [`Admission::Full`] when the call must close the heaviest connection
    /// and wait ([`Self::admit_by_eviction`]) or be refused.
    pub fn try_admit(&self, path: &str, peer: Option<SocketAddr>) -> Admission {
        if path.starts_with("/grpc.health.v1.Health/") {
            return Admission::Granted(None);
        }
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => Admission::Granted(Some(self.grant(permit, peer))),
            Err(_) => Admission::Full,
        }
    }

    /// The rest of [`Self::admit`] once the bound is reached: closes the
    /// heaviest connection if the caller's holds fewer calls, and waits for
    /// a permit at most [`EVICTION_WAIT`]; otherwise the refusal.
    pub async fn admit_by_eviction(
        &self,
        peer: Option<SocketAddr>,
    ) -> Result<Option<ResponsePermit>, tonic::Status> {
        let mine = peer.and_then(|addr| self.peers.as_ref()?.get(addr));
        if !self.evict_for(mine.as_ref(), peer) {
            return Err(self.refusal());
        }
        match tokio::time::timeout(EVICTION_WAIT, Arc::clone(&self.permits).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(self.grant(permit, peer))),
            _ => Err(self.refusal()),
        }
    }

    fn grant(&self, permit: OwnedSemaphorePermit, peer: Option<SocketAddr>) -> ResponsePermit {
        let load = peer.and_then(|addr| self.peers.as_ref()?.get(addr));
        if let Some(load) = &load {
            load.started();
        }
        ResponsePermit {
            _permit: permit,
            load,
        }
    }

    /// Closes the connection holding the most live calls, if it holds at
    /// least two more than the caller's (`mine`, from `peer`): true if one
    /// was closed.
    fn evict_for(&self, mine: Option<&Arc<ConnectionLoad>>, peer: Option<SocketAddr>) -> bool {
        let Some(peers) = &self.peers else {
            return false;
        };
        let Some((addr, heaviest, live)) = peers.heaviest() else {
            return false;
        };
        let my_live = mine.map_or(0, |l| l.live());
        if mine.is_some_and(|l| Arc::ptr_eq(l, &heaviest)) || live < my_live + 2 {
            return false;
        }
        heaviest.evict();
        let total = self.evictions.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            evicted = %addr,
            evicted_live_calls = live,
            caller = ?peer,
            caller_live_calls = my_live,
            bound = self.max,
            evictions_so_far = total,
            "at the bound on live calls: closed the connection holding the most \
             (a client not reading its responses?)"
        );
        true
    }

    fn refusal(&self) -> tonic::Status {
        tonic::Status::resource_exhausted(format!(
            "this node holds {} calls whose responses are not yet sent, and this \
             connection holds as many as any (client not reading them?): retry later",
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
    pub fn new(body: tonic::body::Body, permit: ResponsePermit) -> Self {
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

    #[tokio::test(start_paused = true)]
    async fn at_the_bound_the_heaviest_connection_is_closed_for_a_lighter_one() {
        let peers = Arc::new(Peers::default());
        let heavy_addr: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let light_addr: SocketAddr = "127.0.0.1:1002".parse().unwrap();
        let heavy = peers.register(heavy_addr);
        let light = peers.register(light_addr);
        let budget = ResponseBudget::new(4, Some(Arc::clone(&peers)));
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(
                budget
                    .admit(SEARCH, Some(heavy_addr))
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        assert_eq!(heavy.load().live(), 4);

        // The heavy connection itself is refused at once, and not closed.
        let refused = budget.admit(SEARCH, Some(heavy_addr)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(!heavy.load().is_evicted());

        // A lighter one closes it and gets a permit once the closed
        // connection's calls are dropped.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.admit(SEARCH, Some(light_addr)).await }
        });
        tokio::task::yield_now().await;
        assert!(heavy.load().is_evicted());
        assert_eq!(budget.evictions(), 1);
        held.clear();
        let permit = waiting.await.unwrap().unwrap().unwrap();
        assert_eq!(light.load().live(), 1);
        assert_eq!(heavy.load().live(), 0);
        drop(permit);
        assert_eq!(light.load().live(), 0);

        // A closed connection that does not give its calls back: the
        // caller is refused after the wait.
        let third: SocketAddr = "127.0.0.1:1003".parse().unwrap();
        let stuck = peers.register(third);
        for _ in 0..4 {
            held.push(budget.admit(SEARCH, Some(third)).await.unwrap().unwrap());
        }
        let refused = budget.admit(SEARCH, Some(light_addr)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(stuck.load().is_evicted());
    }
}
