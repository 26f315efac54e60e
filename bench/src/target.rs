//! What a load test sends requests to.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use searchtree_leaf::fault::{FaultConfig, Faults};
use searchtree_leaf::service::LeafTiming;
use searchtree_leaf::{LeafService, Shard, ShardSearcher};
use searchtree_proto::pb::search_client::SearchClient;
use searchtree_proto::pb::search_server::Search;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use tonic::transport::{Channel, Endpoint};

/// Something that answers searches.
pub trait Target: Send + Sync + 'static {
    /// Sends one search.
    fn search(
        &self,
        request: SearchRequest,
    ) -> BoxFuture<'static, Result<SearchResponse, tonic::Status>>;
    /// A one-line description for the report.
    fn describe(&self) -> String;
    /// Whether searching runs inside this process, so that the load
    /// tester's CPU use includes it (and says nothing about the tester alone).
    fn in_process(&self) -> bool {
        false
    }
}

/// A tree's root, over `connections` HTTP/2 connections used in turn.
pub struct GrpcTarget {
    addr: String,
    clients: Vec<SearchClient<Channel>>,
    next: AtomicUsize,
}

impl GrpcTarget {
    /// Connects to `addr` (HOST:PORT) `connections` times.
    pub async fn connect(addr: &str, connections: usize) -> anyhow::Result<Self> {
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            let channel = Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to {addr}: {e}"))?;
            clients.push(SearchClient::new(channel).max_decoding_message_size(64 << 20));
        }
        Ok(GrpcTarget {
            addr: addr.to_string(),
            clients,
            next: AtomicUsize::new(0),
        })
    }
}

impl Target for GrpcTarget {
    fn search(
        &self,
        request: SearchRequest,
    ) -> BoxFuture<'static, Result<SearchResponse, tonic::Status>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        let mut client = self.clients[i].clone();
        Box::pin(async move {
            client
                .search(request)
                .await
                .map(tonic::Response::into_inner)
        })
    }

    fn describe(&self) -> String {
        format!(
            "tree root {} ({} connections)",
            self.addr,
            self.clients.len()
        )
    }
}

/// One index searched in-process by the leaf's own service — the same
/// validation, deadline handling, concurrency limit, scoring and snippets,
/// with no network and no tree: the floor of what the tree adds.
pub struct DirectTarget {
    dir: String,
    service: Arc<LeafService>,
}

impl DirectTarget {
    /// Opens the shard directory `dir` (e.g. `OUT/shards/shard-000` of a
    /// `--shards 1` build).
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let shard = Shard::open(dir)?;
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let service = LeafService::new(
            ShardSearcher::new(shard),
            cpus,
            LeafTiming {
                policy: Default::default(),
                reserve: std::time::Duration::from_millis(1),
            },
            Faults::new(FaultConfig::default(), 0),
        );
        Ok(DirectTarget {
            dir: dir.display().to_string(),
            service: Arc::new(service),
        })
    }
}

impl Target for DirectTarget {
    fn search(
        &self,
        request: SearchRequest,
    ) -> BoxFuture<'static, Result<SearchResponse, tonic::Status>> {
        let service = Arc::clone(&self.service);
        Box::pin(async move {
            service
                .search(tonic::Request::new(request))
                .await
                .map(tonic::Response::into_inner)
        })
    }

    fn describe(&self) -> String {
        format!("one index in-process ({})", self.dir)
    }

    fn in_process(&self) -> bool {
        true
    }
}
