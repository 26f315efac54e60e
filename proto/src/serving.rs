//! What every node binary does around its search service: log setup, binding,
//! the readiness line, health and reflection services, and clean shutdown.
//!
//! Keeping this in one place means every node speaks `grpc.health.v1.Health`
//! and server reflection (v1 and v1alpha, so any `grpcurl` works) the same way.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::pb::node_stats_server::NodeStatsServer;
use crate::pb::search_server::{Search, SearchServer};
use crate::stats::{Counters, StatsService};

/// The prefix of the one line a node prints on stdout once it is listening,
/// followed by its actual address. `searchtree up` reads it to learn the port
/// a node picked when its topology said port 0.
pub const LISTENING_PREFIX: &str = "LISTENING ";

/// Sends `tracing` output to stderr (stdout carries the readiness line),
/// filtered by `RUST_LOG`, `info` by default.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Binds a listener; `addr` may use port 0 to let the OS pick a free port.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
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

/// Serves `search` on `listener` beside the node's counters, the standard
/// health service and server reflection, until `shutdown` resolves;
/// in-flight requests finish.
pub async fn serve<S: Search>(
    listener: TcpListener,
    search: S,
    counters: std::sync::Arc<Counters>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let local = listener.local_addr()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<SearchServer<S>>().await;

    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    announce(local);
    tracing::info!(%local, "serving");
    tonic::transport::Server::builder()
        .add_service(SearchServer::new(search))
        .add_service(NodeStatsServer::new(StatsService(counters)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        // No Nagle: a response's header, data and trailer frames must not
        // wait for the peer's ACK, which would add latency at every hop.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
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
}
