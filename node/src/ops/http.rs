//! The node's HTTP port: what operators' tools speak rather than gRPC
//! (Prometheus scrapes, a browser). It runs beside the gRPC server, on its
//! own listener, and stops with it.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;

use tokio::net::TcpListener;

/// The prefix of the line a node prints on stdout once its HTTP port is
/// listening, followed by the actual address (see [`crate::serving::LISTENING_PREFIX`]).
pub const HTTP_PREFIX: &str = "HTTP ";

/// Binds the HTTP port (with SO_REUSEPORT when `reuse_port`) and announces
/// it on stdout as `HTTP HOST:PORT`.
pub async fn bind(addr: &str, reuse_port: bool) -> std::io::Result<TcpListener> {
    let listener = crate::serving::bind_with(addr, reuse_port).await?;
    let local = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{HTTP_PREFIX}{local}");
    let _ = out.flush();
    Ok(listener)
}

/// Serves `router` on `listener` until `shutdown` resolves. An error is
/// logged, not returned: the HTTP port failing must not stop the node from
/// answering searches.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let local: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?local, "serving HTTP");
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
}
