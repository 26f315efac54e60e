//! A node-wide bound on responses alive at once: from the moment a call is
//! taken until its response body has been sent (or dropped).
//!
//! A response a client does not read stays in the node, bytes and all,
//! while HTTP/2 flow control holds it back; the handler has returned, so
//! admission control and the in-flight bounds no longer count it. A client
//! that opens many streams, sets its receive window to 0 and never reads
//! grew a root from 32 MB to 2 GB in 6 s until it aborted. Each call now
//! holds a permit until its body is done; past [`MAX_LIVE_RESPONSES`] a new
//! call is refused at once with `RESOURCE_EXHAUSTED` (health checks are
//! exempt: a saturated node is still alive). A connection that dies drops
//! its bodies, and their permits with them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The most calls a node holds at once, handlers running or responses
/// unsent: far above what the tree's own traffic needs (a parent's
/// searches to a child are bounded by its in-flight limit), and at ~230 KB
/// for the largest search response (1000 hits with snippets), about 470 MB
/// at worst.
pub const MAX_LIVE_RESPONSES: usize = 2048;

/// The permits of one node's gRPC server.
#[derive(Debug, Clone)]
pub struct ResponseBudget {
    permits: Arc<Semaphore>,
}

impl Default for ResponseBudget {
    fn default() -> Self {
        ResponseBudget::new(MAX_LIVE_RESPONSES)
    }
}

impl ResponseBudget {
    /// A budget of `max` live responses.
    pub fn new(max: usize) -> Self {
        ResponseBudget {
            permits: Arc::new(Semaphore::new(max)),
        }
    }

    /// A permit for a call to `path`, or the refusal to send at once.
    /// Health checks need none.
    pub fn admit(&self, path: &str) -> Result<Option<OwnedSemaphorePermit>, tonic::Status> {
        if path.starts_with("/grpc.health.v1.Health/") {
            return Ok(None);
        }
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => Err(tonic::Status::resource_exhausted(format!(
                "this node holds {MAX_LIVE_RESPONSES} calls whose responses are not yet sent \
                 (clients not reading them?): retry later"
            ))),
        }
    }

    /// Permits free now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

/// A response body that holds its call's permit until it is done.
pub struct Held {
    body: tonic::body::Body,
    _permit: OwnedSemaphorePermit,
}

impl Held {
    /// `body`, holding `permit` as long as it lives.
    pub fn new(body: tonic::body::Body, permit: OwnedSemaphorePermit) -> Self {
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

    #[test]
    fn a_permit_lasts_as_long_as_its_body_and_past_the_bound_calls_are_refused() {
        let budget = ResponseBudget::new(2);
        let a = budget
            .admit("/searchtree.v1.Search/Search")
            .unwrap()
            .unwrap();
        let b = budget
            .admit("/searchtree.v1.Search/Search")
            .unwrap()
            .unwrap();
        let refused = budget.admit("/searchtree.v1.Search/Search").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        // Health checks are answered whatever the load.
        assert!(
            budget
                .admit("/grpc.health.v1.Health/Check")
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
}
