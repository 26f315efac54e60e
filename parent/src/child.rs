//! A parent's view of a child: anything that answers a search for some shards.
//!
//! The fan-out is written against the [`Child`] trait, so unit tests can use
//! in-process children with scripted latency and failures, while nodes use
//! [`GrpcChild`] to call a real leaf or parent over the network.

use std::time::Duration;

use futures::future::BoxFuture;
use searchtree_node::frames::{FrameChannel, Keepalive};
use searchtree_node::ops::client::{
    ChildTransport, NodeChannel, NodeFrameChannel, child_transport, frame_channel,
};
use searchtree_proto::pb::search_client::SearchClient;
use searchtree_proto::pb::{FetchRequest, FetchResponse, SearchRequest, SearchResponse};
use searchtree_proto::query::truncate_bytes;
use tonic::Code;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How a child failed to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildError {
    /// The request itself is bad: every child would refuse it, so the whole
    /// search fails with `INVALID_ARGUMENT`.
    #[error("{0}")]
    InvalidArgument(String),
    /// The child did not answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The child could not be reached, is not serving (draining, shutting
    /// down), answered for other shards, or no replica of it is known.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The child is up but refused the request for load
    /// (`RESOURCE_EXHAUSTED`): another replica may have room, and the child
    /// itself stays in rotation — ejecting a replica for shedding load would
    /// push its load onto its siblings.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The child answered with an error.
    #[error("error: {0}")]
    Failed(String),
    /// The connection broke while the child was answering: it may have
    /// crashed on this very request, so the request is not retried on
    /// another replica (which it might crash too).
    #[error("connection lost mid-request (the node may have crashed): {0}")]
    Lost(String),
}

/// How a leaf's refusal of a snapshot version it does not hold begins, as
/// [`ChildError`] renders it: the status code, then the leaf's
/// `version-missing:` prefix (`VERSION_MISSING` in the leaf's searcher).
const VERSION_MISSING: &str = "FailedPrecondition: version-missing:";

impl ChildError {
    /// Whether another replica might succeed where this one failed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ChildError::Unavailable(_) | ChildError::Overloaded(_))
    }

    /// If this is a leaf's refusal of the version a request is pinned to,
    /// the rest of its message (which lists the versions the leaf holds):
    /// replica groups catch such a replica up, and a shard failing so is
    /// counted as [`FailureReason::VersionMissing`](searchtree_proto::pb::FailureReason).
    pub fn version_missing(&self) -> Option<&str> {
        match self {
            ChildError::Failed(msg) => msg.strip_prefix(VERSION_MISSING),
            _ => None,
        }
    }
}

/// The longest child message kept, in bytes: a child's message travels on
/// in coverage and in status messages, which must stay small.
pub const MAX_CHILD_MESSAGE_BYTES: usize = 512;

/// An in-process child's failure, as a parent sees it.
impl From<crate::error::NodeError> for ChildError {
    fn from(err: crate::error::NodeError) -> Self {
        use crate::error::NodeError as E;
        match err {
            E::Invalid(msg) => ChildError::InvalidArgument(msg),
            E::Timeout(msg) => ChildError::Timeout(msg),
            E::Unavailable(msg) => ChildError::Unavailable(msg),
            E::Overloaded(msg) => ChildError::Overloaded(msg),
            // As a gRPC child's would read (see `From<tonic::Status>`).
            E::VersionMissing(msg) => ChildError::Failed(format!("FailedPrecondition: {msg}")),
            E::Internal(msg) => ChildError::Failed(msg),
        }
    }
}

impl From<tonic::Status> for ChildError {
    fn from(status: tonic::Status) -> Self {
        let msg = truncate_bytes(status.message(), MAX_CHILD_MESSAGE_BYTES);
        match status.code() {
            Code::InvalidArgument => ChildError::InvalidArgument(msg),
            Code::DeadlineExceeded | Code::Cancelled => ChildError::Timeout(msg),
            Code::Unavailable => ChildError::Unavailable(msg),
            Code::ResourceExhausted => ChildError::Overloaded(msg),
            // What tonic reports when the connection dies under a request
            // already sent (e.g. the child aborted): the h2 stream ends with
            // no status. Refused connections are UNAVAILABLE instead.
            Code::Unknown if msg.starts_with("transport error") => ChildError::Lost(msg),
            code => ChildError::Failed(format!("{code:?}: {msg}")),
        }
    }
}

/// Checks that `response` answers for `shards`, the shards its child was
/// asked for: its coverage counts that many shards, and every shard it
/// names (answered, failed, timed out) and every hit's shard is one of
/// them. A node at the address serves other shards when the address is
/// wrong or its registration in etcd names shards it does not serve; its
/// hits merged as those of the shards asked for would duplicate some
/// documents and leave others out, under a coverage that says all is well.
/// The error says what the answer covered instead.
///
/// A canary (`canary`) searches one shard below the child, not all of them:
/// its answer counts fewer shards, still none but the child's.
pub fn check_answer_shards(
    shards: &[u32],
    canary: bool,
    response: &SearchResponse,
) -> Result<(), String> {
    let Some(coverage) = &response.coverage else {
        return Ok(());
    };
    let named = coverage
        .sources
        .iter()
        .map(|s| s.shard)
        .chain(coverage.failures.iter().map(|f| f.shard))
        .chain(response.hits.iter().map(|h| h.shard));
    let mut foreign: Vec<u32> = named.filter(|s| !shards.contains(s)).collect();
    let counted = coverage.shards_total as usize;
    let count_fits = if canary {
        counted <= shards.len()
    } else {
        counted == shards.len()
    };
    if foreign.is_empty() && count_fits {
        return Ok(());
    }
    foreign.sort_unstable();
    foreign.dedup();
    let wanted = crate::spec::format_shards(shards);
    Err(if foreign.is_empty() {
        format!(
            "answered for {} shard(s), not the {} of shards {wanted}: not the node of these shards",
            coverage.shards_total,
            shards.len()
        )
    } else {
        format!(
            "answered for shard(s) {}, not {wanted}: the node at this address serves other shards (a wrong address, or a wrong registration)",
            crate::spec::format_shards(&foreign)
        )
    })
}

/// A child of a parent.
pub trait Child: Send + Sync {
    /// A name for logs and failure messages (its address, for gRPC children).
    fn name(&self) -> &str;
    /// The shards below this child.
    fn shards(&self) -> &[u32];
    /// Searches the child, which has `budget` to answer in. Dropping the
    /// future cancels the call.
    fn search(
        &self,
        request: SearchRequest,
        budget: Duration,
    ) -> BoxFuture<'_, Result<SearchResponse, ChildError>>;

    /// Fetches titles and snippets of documents in this child's shards (the
    /// second phase of a two-phase search); the child has `budget` to
    /// answer in. Dropping the future cancels the call.
    fn fetch(
        &self,
        request: FetchRequest,
        budget: Duration,
    ) -> BoxFuture<'_, Result<FetchResponse, ChildError>>;

    /// The child's replicas (their addresses) and whether each is in
    /// rotation, for the status page. A child that is not a replica group
    /// (an in-process one: every child a node calls over gRPC is a group, of
    /// one replica or more) is not health-checked by its parent: `unchecked`.
    fn replica_states(&self) -> Vec<(String, &'static str)> {
        vec![(self.name().to_string(), "unchecked")]
    }

    /// Asks the child whether it is serving (`grpc.health.v1`). Children
    /// that cannot tell are assumed to be.
    fn check_health(&self) -> BoxFuture<'_, Result<(), ChildError>> {
        Box::pin(async { Ok(()) })
    }
}

/// How long a connection attempt to a child may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a parent pings a child it has not heard from, requests or not.
/// Children close connections on which nothing moved for their idle timeout
/// (300 s by default); the pings keep the parent's one long-lived connection
/// from ever looking idle, even through a quiet night. (Children ping their
/// callers too, at half their idle timeout; these pings do not rely on that.)
/// They also find a child whose host vanished without a reset, which no
/// deadline would ever notice: every call to it would time out, forever.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long a ping may go unanswered before the connection to the child is
/// dropped, so that the next call reconnects instead of waiting on a dead
/// one. Generous: a child that is busy or briefly paused answers late, and
/// dropping its connection would only cost a reconnect.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The endpoint of the node at `addr` (HOST:PORT) with the settings every
/// call from an inner node to a child uses (connect timeout, no Nagle,
/// keepalive pings), shared by searches and corpus calls.
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(searchtree_node::ops::client::endpoint(addr)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// A child reached over gRPC. Connects lazily and reconnects by itself, so a
/// child that is down at start-up or restarts later is picked up again.
pub struct GrpcChild {
    addr: String,
    shards: Vec<u32>,
    client: SearchClient<NodeChannel>,
    /// Searches and fetches go as frames when the process calls its
    /// children so ([`child_transport`]); health checks stay on gRPC.
    frames: Option<SearchClient<NodeFrameChannel>>,
    health: HealthClient<NodeChannel>,
}

impl GrpcChild {
    /// A client for the child at `addr` (HOST:PORT) serving `shards`; no
    /// connection is made yet.
    pub fn new(addr: &str, shards: Vec<u32>) -> Result<Self, tonic::transport::Error> {
        let channel = searchtree_node::ops::client::channel(endpoint(addr)?.connect_lazy());
        let frames = (child_transport() == ChildTransport::Frames).then(|| {
            SearchClient::new(frame_channel(FrameChannel::new(
                addr,
                CONNECT_TIMEOUT,
                Keepalive {
                    interval: KEEPALIVE_INTERVAL,
                    timeout: KEEPALIVE_TIMEOUT,
                },
            )))
        });
        Ok(GrpcChild {
            addr: addr.to_string(),
            shards,
            client: SearchClient::new(channel.clone()),
            frames,
            health: HealthClient::new(channel),
        })
    }
}

impl Child for GrpcChild {
    fn name(&self) -> &str {
        &self.addr
    }

    fn shards(&self) -> &[u32] {
        &self.shards
    }

    fn check_health(&self) -> BoxFuture<'_, Result<(), ChildError>> {
        let mut health = self.health.clone();
        Box::pin(async move {
            let response = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await?;
            match response.get_ref().status() {
                ServingStatus::Serving => Ok(()),
                other => Err(ChildError::Unavailable(format!("health: {other:?}"))),
            }
        })
    }

    fn search(
        &self,
        request: SearchRequest,
        budget: Duration,
    ) -> BoxFuture<'_, Result<SearchResponse, ChildError>> {
        let canary = request.canary;
        let mut request = tonic::Request::new(request);
        // Sent as the grpc-timeout header: the child's exact deadline.
        request.set_timeout(budget);
        Box::pin(async move {
            let response = match &self.frames {
                Some(frames) => frames.clone().search(request).await,
                None => self.client.clone().search(request).await,
            }?
            .into_inner();
            // Another replica, if any, answers for the right shards; this
            // one is ejected as if unreachable.
            check_answer_shards(&self.shards, canary, &response)
                .map_err(ChildError::Unavailable)?;
            Ok(response)
        })
    }

    fn fetch(
        &self,
        request: FetchRequest,
        budget: Duration,
    ) -> BoxFuture<'_, Result<FetchResponse, ChildError>> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(budget);
        Box::pin(async move {
            let response = match &self.frames {
                Some(frames) => frames.clone().fetch(request).await,
                None => self.client.clone().fetch(request).await,
            }?;
            Ok(response.into_inner())
        })
    }
}

#[cfg(test)]
mod tests {
    use tonic::Status;

    use super::*;

    #[test]
    fn statuses_map_to_kinds_that_stay_distinct() {
        let kind = |s: Status| ChildError::from(s);
        assert!(matches!(
            kind(Status::invalid_argument("bad")),
            ChildError::InvalidArgument(_)
        ));
        assert!(matches!(
            kind(Status::deadline_exceeded("late")),
            ChildError::Timeout(_)
        ));
        assert!(matches!(
            kind(Status::unavailable("tcp connect error")),
            ChildError::Unavailable(_)
        ));
        assert!(matches!(
            kind(Status::resource_exhausted("busy")),
            ChildError::Overloaded(_)
        ));
        assert!(matches!(
            kind(Status::unknown("transport error")),
            ChildError::Lost(_)
        ));
        assert!(matches!(
            kind(Status::internal("boom")),
            ChildError::Failed(_)
        ));
        // Only a refusal is retried elsewhere: a lost connection may mean the
        // request itself killed the node.
        assert!(ChildError::Unavailable(String::new()).is_retryable());
        assert!(ChildError::Overloaded(String::new()).is_retryable());
        assert!(!ChildError::Lost(String::new()).is_retryable());
    }

    #[test]
    fn an_answer_for_other_shards_is_refused() {
        use searchtree_proto::pb::{Coverage, Hit, ShardFailure, ShardSource};
        let answer = |total: u32, sources: &[u32], failures: &[u32], hits: &[u32]| SearchResponse {
            hits: hits
                .iter()
                .map(|&shard| Hit {
                    shard,
                    ..Default::default()
                })
                .collect(),
            coverage: Some(Coverage {
                shards_total: total,
                sources: sources
                    .iter()
                    .map(|&shard| ShardSource {
                        shard,
                        ..Default::default()
                    })
                    .collect(),
                failures: failures
                    .iter()
                    .map(|&shard| ShardFailure {
                        shard,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        // The shards asked for: answered, or some of them failed.
        assert_eq!(
            check_answer_shards(&[0], false, &answer(1, &[0], &[], &[0, 0])),
            Ok(())
        );
        assert_eq!(
            check_answer_shards(&[0, 1], false, &answer(2, &[1], &[0], &[1])),
            Ok(())
        );
        // A leaf of shard 1 at the address of shard 0's: its hits, its source.
        let err = check_answer_shards(&[0], false, &answer(1, &[1], &[], &[])).unwrap_err();
        assert!(err.contains("shard(s) 1, not 0"), "{err}");
        assert!(check_answer_shards(&[0], false, &answer(1, &[0], &[], &[1])).is_err());
        assert!(check_answer_shards(&[2, 3], false, &answer(2, &[], &[1], &[])).is_err());
        // A node over fewer shards than asked for (shards 0-1 for 0-3).
        let err =
            check_answer_shards(&[0, 1, 2, 3], false, &answer(2, &[0, 1], &[], &[])).unwrap_err();
        assert!(err.contains("2 shard(s), not the 4"), "{err}");
        // An answer without coverage says nothing to check.
        assert_eq!(
            check_answer_shards(&[0], false, &SearchResponse::default()),
            Ok(())
        );
        // A canary searches one of the child's shards, answered or crashed;
        // still none of another child's.
        assert_eq!(
            check_answer_shards(&[2, 3], true, &answer(1, &[2], &[], &[2])),
            Ok(())
        );
        assert_eq!(
            check_answer_shards(&[2, 3], true, &answer(1, &[], &[3], &[])),
            Ok(())
        );
        assert!(check_answer_shards(&[2, 3], true, &answer(1, &[1], &[], &[1])).is_err());
    }

    #[test]
    fn long_messages_are_cut() {
        let err = ChildError::from(Status::internal("x".repeat(100_000)));
        assert!(err.to_string().len() < MAX_CHILD_MESSAGE_BYTES + 64);
    }
}
