//! What a load test sends requests to.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use searchtree_leaf::corpus::HeldVersions;
use searchtree_leaf::fault::{FaultConfig, Faults};
use searchtree_leaf::service::LeafTiming;
use searchtree_leaf::{LeafService, Shard, ShardSearcher};
use searchtree_node::ops::client::NodeChannel;
use searchtree_proto::pb::search_client::SearchClient;
use searchtree_proto::pb::search_server::Search;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

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

/// How the load tester keeps its connections to a root alive, and replaces
/// them when they fail or go silent.
///
/// A load test drives a tree into overload on purpose, and cancels every
/// request it gives up on (`--timeout`) with an HTTP/2 reset. Neither may cost
/// the run its connections: a connection that the root closed (or that broke)
/// is replaced before the next request goes out, and one on which nothing
/// comes back at all — a wedged peer, a lost network path, which no deadline
/// would ever notice — is found by keepalive pings and dropped, so that the
/// next request reconnects instead of waiting on it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// How long a TCP connection attempt may take before the request that
    /// needed it fails (and the next one tries again).
    pub connect_timeout: Duration,
    /// How often an HTTP/2 PING is sent on a connection, requests or not.
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
}

impl Default for Liveness {
    /// Shorter than a node's own settings for its children (30 s and 20 s in
    /// `parent/src/child.rs`): a load tester lives for seconds to minutes and
    /// should learn within ~10 s that a connection went silent, so a stall
    /// shows up as a bounded dip in the run rather than as every later
    /// request on that connection given up. The cost is one PING every 5 s
    /// per connection. The root must allow it: its server drops a client that
    /// pings too often only when told to (`http2_keepalive_*` is about its own
    /// pings), and hyper's server accepts PINGs at any rate by default.
    fn default() -> Self {
        Liveness {
            connect_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(5),
        }
    }
}

/// A tree's root, over `connections` HTTP/2 connections used in turn.
///
/// Each connection is a tonic [`Channel`], which reconnects by itself: when
/// its connection is closed (by the root, by a failed keepalive PING, or by
/// an I/O error), the requests in flight on it fail with a transport error
/// (counted under their gRPC code, usually `UNAVAILABLE` or `UNKNOWN`) and
/// the next request opens a new connection. The tester never has to be
/// restarted to get its connections back.
pub struct GrpcTarget {
    connections: Connections<SearchClient<NodeChannel>>,
}

impl GrpcTarget {
    /// Connects to `addr` (HOST:PORT) `connections` times, with the default
    /// [`Liveness`].
    pub async fn connect(addr: &str, connections: usize) -> anyhow::Result<Self> {
        Self::connect_with(addr, connections, Liveness::default()).await
    }

    /// Connects to `addr` (HOST:PORT) `connections` times with `liveness`
    /// (tests use short keepalives to see a silent connection replaced
    /// quickly). Fails if the first connection cannot be made, so that a
    /// wrong address is reported at once rather than as a run of errors.
    pub async fn connect_with(
        addr: &str,
        connections: usize,
        liveness: Liveness,
    ) -> anyhow::Result<Self> {
        let connections = Connections::open(addr, connections, liveness, |channel| {
            SearchClient::new(channel).max_decoding_message_size(64 << 20)
        })
        .await?;
        Ok(GrpcTarget { connections })
    }
}

/// A node's address and the clients of the HTTP/2 connections a target
/// opened to it, used in turn so that requests spread over them.
struct Connections<C> {
    addr: String,
    clients: Vec<C>,
    next: AtomicUsize,
}

impl<C: Clone> Connections<C> {
    /// Opens `connections` HTTP/2 connections to `addr` with `liveness`,
    /// each carrying this process's token and trace like a node's own
    /// calls, and wraps each in a client with `client`. Fails if the first
    /// connection cannot be made, so that a wrong address is reported at
    /// once rather than as a run of errors.
    async fn open(
        addr: &str,
        connections: usize,
        liveness: Liveness,
        client: impl Fn(NodeChannel) -> C,
    ) -> anyhow::Result<Self> {
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            let channel = searchtree_node::ops::client::endpoint(addr)?
                .connect_timeout(liveness.connect_timeout)
                // Requests are small and latency is what is measured: no
                // Nagle delay on top of the tree's.
                .tcp_nodelay(true)
                .http2_keep_alive_interval(liveness.keepalive_interval)
                .keep_alive_timeout(liveness.keepalive_timeout)
                // Ping idle connections too: between runs (a sweep's steps,
                // a step-load's capacity run) or while every request on the
                // connection was given up on, a silent connection would
                // otherwise only be found by the next requests timing out.
                .keep_alive_while_idle(true)
                // `connect` (not `connect_lazy`) checks the address up front;
                // once connected, tonic's reconnecting channel never fails
                // for good: a failed reconnect fails one request, and the
                // next one tries again.
                .connect()
                .await
                .with_context(|| format!("cannot connect to {addr}"))?;
            clients.push(client(searchtree_node::ops::client::channel(channel)));
        }
        Ok(Connections {
            addr: addr.to_string(),
            clients,
            next: AtomicUsize::new(0),
        })
    }

    /// The client whose turn it is.
    fn next(&self) -> C {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].clone()
    }

    /// "ADDR (N connections)", for a target's description.
    fn describe(&self) -> String {
        format!("{} ({} connections)", self.addr, self.clients.len())
    }
}

impl Target for GrpcTarget {
    fn search(
        &self,
        request: SearchRequest,
    ) -> BoxFuture<'static, Result<SearchResponse, tonic::Status>> {
        let mut client = self.connections.next();
        Box::pin(async move {
            client
                .search(request)
                .await
                .map(tonic::Response::into_inner)
        })
    }

    fn describe(&self) -> String {
        format!("tree root {}", self.connections.describe())
    }
}

/// Any node's standard gRPC health check (`grpc.health.v1.Health/Check`)
/// instead of a search: the round trip of gRPC itself — HTTP/2 framing,
/// protobuf, the kernel's loopback or network, waking each side's threads —
/// with no search, no fan-out and no node's own work behind it.
///
/// Every hop of a tree pays that round trip once, so measured at the rate
/// of a load test it is the floor under each level's share of the tree's
/// latency, which no change to searching or merging can go below. A health
/// check answered `SERVING` counts as a complete answer; any other status
/// as `UNAVAILABLE`.
pub struct PingTarget {
    connections: Connections<HealthClient<NodeChannel>>,
}

impl PingTarget {
    /// Connects to the node at `addr` (HOST:PORT) `connections` times, with
    /// the default [`Liveness`].
    pub async fn connect(addr: &str, connections: usize) -> anyhow::Result<Self> {
        let connections =
            Connections::open(addr, connections, Liveness::default(), HealthClient::new).await?;
        Ok(PingTarget { connections })
    }
}

impl Target for PingTarget {
    fn search(
        &self,
        _request: SearchRequest,
    ) -> BoxFuture<'static, Result<SearchResponse, tonic::Status>> {
        let mut client = self.connections.next();
        Box::pin(async move {
            let status = client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await?
                .into_inner()
                .status();
            match status {
                ServingStatus::Serving => Ok(SearchResponse::default()),
                other => Err(tonic::Status::unavailable(format!(
                    "the node's health is {}",
                    other.as_str_name()
                ))),
            }
        })
    }

    fn describe(&self) -> String {
        format!("health checks of node {}", self.connections.describe())
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
            Arc::new(HeldVersions::new(ShardSearcher::new(shard))),
            cpus,
            LeafTiming {
                policy: Default::default(),
                reserve: Duration::from_millis(1),
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

#[cfg(test)]
mod tests {
    //! The tester's connections through a proxy the test controls: one the
    //! proxy closes, and one it leaves open but silent, are both replaced.

    use std::sync::Mutex;
    use std::time::Instant;

    use searchtree_proto::pb::search_server::SearchServer;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;

    use super::*;

    /// Answers every search with an empty response.
    struct Empty;

    #[tonic::async_trait]
    impl Search for Empty {
        async fn search(
            &self,
            _: tonic::Request<SearchRequest>,
        ) -> Result<tonic::Response<SearchResponse>, tonic::Status> {
            Ok(tonic::Response::new(SearchResponse::default()))
        }

        async fn fetch(
            &self,
            _: tonic::Request<searchtree_proto::pb::FetchRequest>,
        ) -> Result<tonic::Response<searchtree_proto::pb::FetchResponse>, tonic::Status> {
            Ok(tonic::Response::new(Default::default()))
        }
    }

    /// What the proxy does to the connections it has open.
    #[derive(Clone, Copy)]
    enum Action {
        /// Close them, as a root that drops a connection would.
        Close,
        /// Keep them open but pass nothing more either way: a wedged peer.
        Silence,
    }

    /// A TCP proxy in front of an [`Empty`] server.
    struct Proxy {
        addr: String,
        accepted: Arc<AtomicUsize>,
        open: Arc<Mutex<Vec<oneshot::Sender<Action>>>>,
    }

    impl Proxy {
        async fn start() -> Proxy {
            let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let server_addr = server.local_addr().unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(SearchServer::new(Empty))
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(server)),
            );
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let accepted = Arc::new(AtomicUsize::new(0));
            let open = Arc::new(Mutex::new(Vec::new()));
            let (a, o) = (Arc::clone(&accepted), Arc::clone(&open));
            tokio::spawn(async move {
                loop {
                    let (mut client, _) = listener.accept().await.unwrap();
                    a.fetch_add(1, Ordering::SeqCst);
                    let (tx, mut rx) = oneshot::channel();
                    o.lock().unwrap().push(tx);
                    tokio::spawn(async move {
                        let mut server = TcpStream::connect(server_addr).await.unwrap();
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            action = &mut rx => match action {
                                Ok(Action::Silence) => {
                                    // Both sockets stay open, unread.
                                    std::future::pending::<()>().await;
                                }
                                Ok(Action::Close) | Err(_) => {}
                            },
                        }
                    });
                }
            });
            Proxy {
                addr,
                accepted,
                open,
            }
        }

        fn act(&self, action: Action) {
            for tx in self.open.lock().unwrap().drain(..) {
                let _ = tx.send(action);
            }
        }

        fn accepted(&self) -> usize {
            self.accepted.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn a_ping_is_answered_while_the_node_serves_and_fails_when_it_does_not() {
        let (reporter, health) = tonic_health::server::health_reporter();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let ping = PingTarget::connect(&addr, 2).await.unwrap();
        assert!(ping.describe().contains(&addr));
        for _ in 0..3 {
            let answer = ping.search(SearchRequest::default()).await.unwrap();
            assert!(!answer.partial);
        }
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let refused = ping.search(SearchRequest::default()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(refused.message().contains("NOT_SERVING"), "{refused:?}");
    }

    async fn search(target: &GrpcTarget) -> Result<SearchResponse, tonic::Status> {
        target.search(SearchRequest::default()).await
    }

    #[tokio::test]
    async fn a_closed_connection_is_replaced_by_the_next_request() {
        let proxy = Proxy::start().await;
        let target = GrpcTarget::connect(&proxy.addr, 1).await.unwrap();
        search(&target).await.unwrap();
        assert_eq!(proxy.accepted(), 1);
        proxy.act(Action::Close);
        // The request that meets the closed connection may fail (if it went
        // out before the close was seen); the one after it goes out on a
        // new connection.
        let first = search(&target).await;
        if first.is_err() {
            search(&target).await.unwrap();
        }
        assert_eq!(proxy.accepted(), 2);
        for _ in 0..5 {
            search(&target).await.unwrap();
        }
        assert_eq!(proxy.accepted(), 2, "one new connection, kept");
    }

    #[tokio::test]
    async fn a_silent_connection_is_dropped_by_keepalive_and_replaced() {
        let proxy = Proxy::start().await;
        let keepalive = Duration::from_millis(200);
        let target = GrpcTarget::connect_with(
            &proxy.addr,
            1,
            Liveness {
                connect_timeout: Duration::from_secs(1),
                keepalive_interval: keepalive,
                keepalive_timeout: keepalive,
            },
        )
        .await
        .unwrap();
        search(&target).await.unwrap();
        proxy.act(Action::Silence);
        // A request on the silent connection fails once a PING goes
        // unanswered, rather than waiting forever (or for the tester's
        // timeout).
        let sent = Instant::now();
        let stuck = tokio::time::timeout(Duration::from_secs(5), search(&target)).await;
        let waited = sent.elapsed();
        assert!(matches!(stuck, Ok(Err(_))), "{stuck:?}");
        assert!(
            waited < Duration::from_secs(2),
            "failed only after {waited:?}"
        );
        // The next request goes out on a new connection.
        search(&target).await.unwrap();
        assert_eq!(proxy.accepted(), 2);

        // Idle, silent: keepalive pings idle connections too, so the next
        // request finds the silent one already replaced and does not fail.
        proxy.act(Action::Silence);
        tokio::time::sleep(5 * keepalive).await;
        search(&target).await.unwrap();
        assert_eq!(proxy.accepted(), 3);
    }
}
