//! What every node binary does around its search service: log setup, binding,
//! the readiness line, health and reflection services, and clean shutdown.
//!
//! Keeping this in one place means every node speaks `grpc.health.v1.Health`
//! and server reflection (v1 and v1alpha, so any `grpcurl` works) the same way,
//! and holds the same [`connections`] limits and HTTP/2 settings.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::counters::{CounterSnapshot, StatsService};
use crate::ops::OpsArgs;
use searchtree_proto::pb::corpus_server::{Corpus, CorpusServer};
use searchtree_proto::pb::node_stats_server::NodeStatsServer;
use searchtree_proto::pb::search_server::{Search, SearchServer};

pub mod connections;
pub mod request_stream;

pub use connections::{ConnectionArgs, ConnectionLimits};

/// The prefix of the one line a node prints on stdout once it is listening,
/// followed by its actual address. `searchtree up` reads it to learn the port
/// a node picked when its topology said port 0.
pub const LISTENING_PREFIX: &str = "LISTENING ";

/// Sends `tracing` output to stderr (stdout carries the readiness line),
/// filtered by `RUST_LOG`, `info` by default; and counts panics from here
/// on ([`crate::panics`]).
pub fn init_tracing() {
    crate::panics::count_panics();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Checks a `--listen` value before anything starts: `HOST:PORT`, the port
/// a number up to 65535 (0 picks a free one), the host a name or an address
/// (IPv6 in brackets). A value that cannot be listened on is then refused
/// by the flag parser, so `searchtree up` names the node before starting
/// any, instead of a node dying at start-up.
pub fn listen_address(s: &str) -> Result<String, String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "{s:?} is not HOST:PORT (e.g. 127.0.0.1:7000, or port 0 for any free one)"
        ));
    };
    if host.is_empty() || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']'))) {
        return Err(format!(
            "{s:?} has no host, or an IPv6 address without brackets ([::1]:7000)"
        ));
    }
    port.parse::<u16>()
        .map_err(|_| format!("{s:?}: the port {port:?} is not a number from 0 to 65535"))?;
    Ok(s.to_string())
}

/// Binds a listener; `addr` may use port 0 to let the OS pick a free port.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    bind_with(addr, false).await
}

/// Binds a listener, with SO_REUSEPORT when `reuse_port` (so a replacement
/// process can listen on the same address before this one drains).
pub async fn bind_with(addr: &str, reuse_port: bool) -> std::io::Result<TcpListener> {
    let context =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    if !reuse_port {
        return TcpListener::bind(addr).await.map_err(context);
    }
    let resolved = tokio::net::lookup_host(addr)
        .await
        .map_err(context)?
        .next()
        .ok_or_else(|| context(std::io::Error::other("no address")))?;
    let socket = if resolved.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(context)?;
    socket.set_reuseaddr(true).map_err(context)?;
    #[cfg(unix)]
    socket.set_reuseport(true).map_err(context)?;
    socket.bind(resolved).map_err(context)?;
    socket.listen(1024).map_err(context)
}

/// Prints the readiness line `LISTENING HOST:PORT` on stdout and flushes it.
pub fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the supervisor went away) must not stop the node.
    let _ = writeln!(out, "{LISTENING_PREFIX}{addr}");
    let _ = out.flush();
}

/// Resolves when the process is asked to stop: Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}

/// HTTP/2 streams one connection may have open at once (hyper's default is
/// 200). A parent sends every search of its callers to a child over one
/// connection, so for the tree's own traffic this is a node-wide concurrency
/// limit: past it, requests would wait in the caller's HTTP/2 client, where
/// no deadline-aware queue or counter sees them. The leaf's own queue (which
/// refuses what waited past its deadline) is the place to wait.
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// How many streams the peer may cancel before this node has taken them up.
/// Past it (h2's default is 20) the whole connection is torn down with
/// ENHANCE_YOUR_CALM, and every request on it fails with `h2 protocol error`.
/// The limit guards against rapid-reset floods, but a tree cancels by design:
/// a parent drops the calls of children that missed the deadline, and a node
/// resuming from a stall (a pause, swapping, SIGSTOP) reads at once every
/// request its caller sent and cancelled meanwhile — about 1,300 after a 3 s
/// stall under 16 queries in flight. Only streams read but not yet handed to
/// the server count, and they are handed over as soon as the bytes read so far
/// are processed: this bounds the size of one burst, not a rate.
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 16_384;

/// How many streams this node may reset because the peer broke the protocol
/// on them before the connection is closed (hyper's default, set here so it
/// stays put): the tree never provokes such resets, so the guard against
/// peers that do ("MadeYouReset") keeps its default strength.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// The gRPC server every node runs, with its HTTP/2 settings: keepalive pings
/// derived from `limits` (see [`ConnectionLimits::keepalive_interval`]) so a
/// dead peer is noticed and a live one never looks idle, and stream limits
/// that suit a tree that cancels calls by design.
pub fn grpc_server(limits: &ConnectionLimits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        // Pings are sent even on connections without requests, and the
        // connection is closed if one goes unanswered for the timeout.
        .http2_keepalive_interval(Some(limits.keepalive_interval()))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout()))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
}

/// The largest message of the `Corpus` service a node accepts or sends: a
/// batch of documents, or a chunk of term statistics.
pub const MAX_CORPUS_MESSAGE_BYTES: usize = 64 << 20;

/// The `Corpus` service of a node, with message limits that fit batches of
/// documents and chunks of statistics.
pub fn corpus_service<C: Corpus>(corpus: C) -> CorpusServer<C> {
    CorpusServer::new(corpus)
        .max_decoding_message_size(MAX_CORPUS_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CORPUS_MESSAGE_BYTES)
}

/// How a node is served, beyond its services: connection limits, the
/// operations flags, and what its role adds to the HTTP port.
#[derive(Default)]
pub struct ServeOptions {
    /// Connections held at once and idle timeout.
    pub limits: ConnectionLimits,
    /// The operations flags the node was started with.
    pub ops: OpsArgs,
    /// Routes the role adds to its HTTP port (the root's status page),
    /// merged with the ones every node serves.
    pub http_routes: axum::Router,
    /// What the role adds to `NodeStats.GetStatus`.
    pub status: Option<crate::ops::status::RoleStatusFn>,
    /// Where the node registers (with --etcd), as what role, serving which
    /// shards.
    pub member: Option<(
        searchtree_membership::TreeMembership,
        &'static str,
        Vec<u32>,
    )>,
}

impl ServeOptions {
    /// Options with `limits` and `ops`, and no role-specific HTTP routes.
    pub fn new(limits: ConnectionLimits, ops: OpsArgs) -> Self {
        ServeOptions {
            limits,
            ops,
            http_routes: axum::Router::new(),
            status: None,
            member: None,
        }
    }

    /// Registers the node in `membership` (from its --etcd flags; none
    /// without them) as `role` (`leaf`, `parent`, `root`) serving `shards`.
    pub fn with_member(
        mut self,
        membership: Option<searchtree_membership::TreeMembership>,
        role: &'static str,
        shards: Vec<u32>,
    ) -> Self {
        self.member = membership.map(|m| (m, role, shards));
        self
    }

    /// Adds what the role reports in `NodeStats.GetStatus`.
    pub fn with_status(mut self, status: crate::ops::status::RoleStatusFn) -> Self {
        self.status = Some(status);
        self
    }

    /// Adds routes to the node's HTTP port.
    pub fn with_http_routes(mut self, routes: axum::Router) -> Self {
        self.http_routes = self.http_routes.merge(routes);
        self
    }
}

/// Serves `search` and `corpus` on `listener` beside the node's counters,
/// the standard health service and server reflection, as `options` say
/// (and HTTP on `--metrics-listen` when given), until `shutdown` resolves;
/// in-flight requests finish.
pub async fn serve<S: Search, C: Corpus>(
    listener: TcpListener,
    search: S,
    corpus: C,
    counters: std::sync::Arc<dyn CounterSnapshot>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let limits = options.limits;
    let local = listener.local_addr()?;
    let policy = std::sync::Arc::new(
        crate::ops::auth::AuthPolicy::from_args(
            &options.ops.auth,
            options.ops.tls.tls_client_ca.is_some(),
        )
        .map_err(ServeError::Config)?,
    );
    let tls = options
        .ops
        .tls
        .grpc_server()
        .map_err(|e| ServeError::Config(e.to_string()))?;
    for problem in options
        .ops
        .tls
        .check_certificate_for(dialed_host(&options, local).as_deref())
        .map_err(|e| ServeError::Config(e.to_string()))?
    {
        tracing::warn!("{problem}");
    }
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<SearchServer<S>>().await;

    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let http_listener = match &options.ops.metrics_listen {
        Some(addr) => Some(crate::ops::http::bind(addr, options.ops.drain.reuse_port).await?),
        None => None,
    };
    let http_local = http_listener.as_ref().and_then(|l| l.local_addr().ok());
    let registration = register(&options, local, http_local)?.map(std::sync::Arc::new);

    // One shutdown for both servers, after the drain (see
    // [`crate::ops::drain`]).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reporter = health_reporter.clone();
    let withdrawing = registration.clone();
    tokio::spawn(crate::ops::drain::drain_on(
        shutdown,
        options.ops.drain.clone(),
        async move {
            reporter.set_not_serving::<SearchServer<S>>().await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            // Out of etcd too, so that parents drop it at once.
            if let Some(registration) = withdrawing {
                registration.withdraw(WITHDRAW_WAIT).await;
            }
        },
        move || {
            let _ = stop_tx.send(true);
        },
    ));
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let http = match http_listener {
        Some(http_listener) => {
            let routes = crate::ops::metrics::routes(std::sync::Arc::clone(&counters))
                .merge(options.http_routes);
            let http_tls = options
                .ops
                .tls
                .http_server()
                .map_err(|e| ServeError::Config(e.to_string()))?;
            Some(tokio::spawn(crate::ops::http::serve(
                http_listener,
                routes,
                std::sync::Arc::clone(&policy),
                http_tls,
                stopped(),
            )))
        }
        None => None,
    };

    crate::ops::trace::set_sample_ratio(options.ops.otlp.otlp_sample_ratio);
    if let Some(endpoint) = &options.ops.otlp.otlp_endpoint {
        crate::ops::otlp::start(endpoint, counters.role(), local.to_string())
            .map_err(ServeError::Config)?;
    }
    crate::ops::status::start_clock();
    log_limits(&limits);
    // Our own accept loop rather than tonic's TcpIncoming: it caps the
    // connections held, refuses the rest cleanly, backs off instead of
    // spinning when descriptors run out, closes idle connections, and keeps
    // TCP_NODELAY (which tonic's builder setting does not apply here).
    let incoming = connections::Incoming::with_peers(listener, limits);
    // One budget for every connection of this server, which closes the
    // connection with the most stalled calls to make room (see
    // [`crate::ops::responses`]).
    let responses = crate::ops::responses::ResponseBudget::new(
        crate::ops::responses::MAX_LIVE_RESPONSES,
        incoming.peers(),
    );
    let search = SearchServer::new(search);
    // The port takes calls as frames too (see [`crate::frames`]), served by
    // the same stack as HTTP/2's; over TLS, the handshake says which.
    let frames = frames_stack(
        search.clone(),
        std::sync::Arc::clone(&policy),
        responses.clone(),
    );
    // Registered before the readiness line, so that a node started after
    // this one (its parent) finds it in its first view of the membership.
    if let Some(registration) = &registration
        && !registration.registered(FIRST_REGISTRATION_WAIT).await
    {
        tracing::warn!(
            "not registered in etcd yet: serving, and registering as soon as it answers"
        );
    }
    announce(local);
    tracing::info!(
        %local,
        tls = options.ops.tls.tls_cert.is_some(),
        mutual_tls = policy.mutual_tls,
        admin_token = policy.admin_token.is_some(),
        search_token = policy.search_token.is_some(),
        "serving"
    );
    let router = grpc_server(&limits)
        // Outermost, so it runs first: a request's clock starts when its
        // headers reach the node, not when a busy runtime gets round to its
        // handler (see [`arrival`]).
        .layer(tower::util::MapRequestLayer::new(
            stamp_arrival
                as fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body>,
        ))
        // Who may call what (before any service runs), each request within
        // its trace (log lines carry the trace id; calls to children pass
        // it on), every call's latency by method and status.
        .layer(tower::layer::layer_fn(move |inner| {
            crate::ops::layer::Operated::new(
                inner,
                std::sync::Arc::clone(&policy),
                responses.clone(),
            )
        }))
        .add_service(search)
        .add_service(corpus_service(corpus))
        .add_service(NodeStatsServer::new(StatsService {
            counters,
            node: local.to_string(),
            status: options.status,
        }))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let mut frames_done = match tls {
        None => {
            let (grpc, frames_done) =
                sort_connections(incoming, frames, stopped.clone(), by_first_bytes);
            router.serve_with_incoming_shutdown(grpc, stopped()).await?;
            frames_done
        }
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let sort = move |connection| by_handshake(acceptor.clone(), connection);
            let (grpc, frames_done) = sort_connections(incoming, frames, stopped.clone(), sort);
            router.serve_with_incoming_shutdown(grpc, stopped()).await?;
            frames_done
        }
    };
    // Calls read off connections of frames are answered too.
    let _ = frames_done.recv().await;
    if let Some(http) = http {
        let _ = http.await;
    }
    drop(registration);
    Ok(())
}

/// The stack a call read off a connection of frames goes through: the same
/// arrival stamp, credentials check, permits, trace and timing as a call
/// over HTTP/2, then the search service.
fn frames_stack<S: Search>(
    search: SearchServer<S>,
    policy: std::sync::Arc<crate::ops::auth::AuthPolicy>,
    responses: crate::ops::responses::ResponseBudget,
) -> impl crate::frames::server::CallService {
    // The search service itself answers `UNIMPLEMENTED` for any other
    // path: no router in between.
    tower::util::MapRequest::new(
        crate::ops::layer::Operated::new(search, policy, responses),
        stamp_arrival as fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body>,
    )
}

/// What a new connection turned out to be.
enum Sorted<G, F, I> {
    /// An HTTP/2 connection, for tonic.
    Grpc(G),
    /// A connection of frames (its [`crate::frames::wire::MAGIC`] read),
    /// and what its calls carry of their caller.
    Frames(F, I),
    /// Neither: it closed, went silent, or failed its handshake.
    Closed,
}

/// Accepts connections until `stopped`, sorting each with `sort` on a task
/// of its own: connections of frames are served here, the others passed
/// on, as the stream tonic serves. The receiver ends once every connection
/// of frames is done.
fn sort_connections<F, Fut, S, SFut, G, FIo, I>(
    mut incoming: connections::Incoming,
    frames: impl crate::frames::server::CallService + Sync,
    stopped: F,
    sort: S,
) -> (
    impl futures::Stream<Item = Result<G, std::convert::Infallible>> + Send,
    tokio::sync::mpsc::Receiver<()>,
)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
    S: Fn(connections::Connection) -> SFut + Send + Sync + 'static,
    SFut: Future<Output = Sorted<G, FIo, I>> + Send + 'static,
    G: Send + 'static,
    FIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    I: crate::frames::server::PeerInfo,
{
    let (to_grpc, for_grpc) = tokio::sync::mpsc::channel(64);
    let (frames_live, frames_done) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let stop = stopped();
        tokio::pin!(stop);
        loop {
            let connection = tokio::select! {
                () = &mut stop => break,
                connection = incoming.accept() => connection,
            };
            let (to_grpc, frames, stopped, live) = (
                to_grpc.clone(),
                frames.clone(),
                stopped.clone(),
                frames_live.clone(),
            );
            let sorted = sort(connection);
            tokio::spawn(async move {
                // A connection silent until the node stops, or for its
                // idle timeout, or evicted meanwhile, is simply closed.
                let sorted = tokio::select! {
                    sorted = sorted => sorted,
                    () = stopped() => return,
                };
                match sorted {
                    Sorted::Frames(io, info) => {
                        crate::frames::server::serve_connection(
                            io,
                            info,
                            frames,
                            MAX_CONCURRENT_STREAMS as usize,
                            stopped(),
                        )
                        .await;
                        drop(live);
                    }
                    Sorted::Grpc(connection) => {
                        let _ = to_grpc.send(connection).await;
                    }
                    Sorted::Closed => {}
                }
            });
        }
        // Dropping `incoming` closes the listener, as tonic's would.
    });
    let stream = futures::stream::unfold(for_grpc, |mut rx| async move {
        rx.recv().await.map(|connection| (Ok(connection), rx))
    });
    (stream, frames_done)
}

/// Sorts a plaintext connection by its first bytes: those that start with
/// [`crate::frames::wire::MAGIC`] are frames, the others HTTP/2.
async fn by_first_bytes(
    mut connection: connections::Connection,
) -> Sorted<
    connections::Connection,
    connections::Connection,
    tonic::transport::server::TcpConnectInfo,
> {
    use tonic::transport::server::Connected;
    match connection.starts_with(crate::frames::wire::MAGIC).await {
        Ok(true) => {
            let info = connection.connect_info();
            Sorted::Frames(connection, info)
        }
        Ok(false) => Sorted::Grpc(connection),
        Err(_) => Sorted::Closed,
    }
}

/// How long a caller may take over its TLS handshake on the gRPC port.
const TLS_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

/// The stream of a connection that speaks TLS.
type TlsConnection = tokio_rustls::server::TlsStream<connections::Connection>;

/// Sorts a connection to a port that serves TLS: its handshake is made
/// here, and the protocol it agreed (ALPN) sorts it:
/// [`crate::ops::tls::FRAMES_ALPN`] is frames (its
/// [`crate::frames::wire::MAGIC`] read inside TLS), anything else HTTP/2,
/// passed on encrypted to tonic. A handshake that fails or takes longer
/// than [`TLS_HANDSHAKE`] closes the connection.
async fn by_handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    connection: connections::Connection,
) -> Sorted<
    TlsConnection,
    TlsConnection,
    tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>,
> {
    use tokio::io::AsyncReadExt;
    use tonic::transport::server::Connected;
    let mut stream = match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(connection)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "a TLS handshake failed");
            return Sorted::Closed;
        }
        Err(_) => return Sorted::Closed,
    };
    if stream.get_ref().1.alpn_protocol() != Some(crate::ops::tls::FRAMES_ALPN) {
        return Sorted::Grpc(stream);
    }
    let mut magic = [0; crate::frames::wire::MAGIC.len()];
    match stream.read_exact(&mut magic).await {
        Ok(_) if &magic == crate::frames::wire::MAGIC => {
            let info = stream.connect_info();
            Sorted::Frames(stream, info)
        }
        _ => Sorted::Closed,
    }
}

/// The host other nodes dial to reach this one: its advertised address's
/// (with --etcd --advertise), else the one it listens on; `None` for a
/// wildcard address, which no caller dials.
fn dialed_host(options: &ServeOptions, local: SocketAddr) -> Option<String> {
    if let Some(advertise) = options
        .member
        .as_ref()
        .and_then(|(m, _, _)| m.advertise.as_deref())
    {
        return Some(
            host_of(advertise)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        );
    }
    (!local.ip().is_unspecified()).then(|| local.ip().to_string())
}

/// The host of a `HOST:PORT` address, brackets of an IPv6 one kept.
pub(crate) fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// How long a starting node waits to be registered in etcd before it says
/// it is listening anyway.
const FIRST_REGISTRATION_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a draining node waits for etcd to confirm it is deregistered.
const WITHDRAW_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Registers the node in etcd if it was given a membership: its advertised
/// address (or the one it listens on), role, shards and HTTP address.
fn register(
    options: &ServeOptions,
    local: SocketAddr,
    http: Option<SocketAddr>,
) -> Result<Option<searchtree_membership::Registration>, ServeError> {
    let Some((membership, role, shards)) = &options.member else {
        return Ok(None);
    };
    let addr = match &membership.advertise {
        Some(addr) => addr.clone(),
        None if local.ip().is_unspecified() => {
            return Err(ServeError::Config(format!(
                "listening on {local}, a wildcard address: say with --advertise HOST:PORT where callers reach this node"
            )));
        }
        None => local.to_string(),
    };
    // The HTTP port at the advertised host.
    let http = http.map(|h| {
        let host = host_of(&addr);
        if h.ip().is_unspecified() {
            format!("{host}:{}", h.port())
        } else {
            h.to_string()
        }
    });
    let member = searchtree_membership::Member {
        addr: addr.clone(),
        role: role.to_string(),
        shards: shards.clone(),
        http,
        pid: std::process::id(),
        instance: searchtree_membership::member::this_instance(),
    };
    let key = searchtree_membership::member::member_key(&membership.tree, &addr);
    tracing::info!(key, etcd = ?membership.etcd.endpoint_names(), "registering in etcd");
    Ok(Some(searchtree_membership::Registration::start(
        membership.etcd.clone(),
        key,
        member,
        membership.ttl,
    )))
}

/// When a request reached this node: stamped on every request before any
/// handler runs, so that its deadline (the caller's `grpc-timeout`) counts
/// from there.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub Instant);

fn stamp_arrival<B>(mut request: http::Request<B>) -> http::Request<B> {
    request.extensions_mut().insert(Arrival(Instant::now()));
    request
}

/// When `request` reached this node (now, for a request that did not come
/// through [`serve`], e.g. in a test).
pub fn arrival<T>(request: &tonic::Request<T>) -> Instant {
    request
        .extensions()
        .get::<Arrival>()
        .map_or_else(Instant::now, |a| a.0)
}

/// Logs the limits in force, and warns if the cap exceeds what the
/// descriptor limit allows (accepting then backs off when descriptors run
/// out, instead of refusing cleanly).
fn log_limits(limits: &ConnectionLimits) {
    let descriptors = connections::descriptor_limit();
    tracing::info!(
        max_connections = limits.max_connections,
        idle_timeout_s = limits.idle_timeout.as_secs_f64(),
        keepalive_interval_s = limits.keepalive_interval().as_secs_f64(),
        descriptor_limit = ?descriptors,
        "connection limits"
    );
    if let Some(limit) = descriptors
        && u64::try_from(limits.max_connections).unwrap_or(u64::MAX) >= limit
    {
        tracing::warn!(
            max_connections = limits.max_connections,
            descriptor_limit = limit,
            "--max-connections is not below the descriptor limit: past the limit, \
             new connections wait in the backlog instead of being refused"
        );
    }
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(searchtree_proto::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Why a node could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener could not be used.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The reflection service could not be built from the descriptors.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The operations flags could not be applied (a certificate or token
    /// file missing or unreadable).
    #[error("{0}")]
    Config(String),
}
