//! Graceful drain: on SIGTERM a node first says NOT_SERVING on its health
//! check while it keeps serving, so that its parents (which check every
//! few hundred milliseconds) take it out of rotation; then it refuses new
//! requests (HTTP/2 GOAWAY: callers open a new connection elsewhere), lets
//! the ones in flight finish, and exits. A second signal, or the drain
//! timeout, ends it at once.
//!
//! With `--reuse-port`, a replacement process can bind the same address
//! before this one drains, so a node without replicas (the root, a parent)
//! is restarted with no moment at which nothing listens.

use std::future::Future;
use std::time::Duration;

use clap::Args;

/// The drain flags of a node.
#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// On SIGTERM, report NOT_SERVING for this long, still serving, before
    /// refusing new requests: long enough for the parents' health checks to
    /// take the node out of rotation (they check every 250 ms by default).
    #[arg(long, default_value_t = 1000)]
    pub drain_notice_ms: u64,
    /// After that, how long requests in flight are waited for before the
    /// node exits anyway.
    #[arg(long, default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// Bind the gRPC and HTTP ports with SO_REUSEPORT, so that a
    /// replacement can listen on the same address before this process
    /// drains (`searchtree up` restarts nodes this way).
    #[arg(long)]
    pub reuse_port: bool,
}

impl Default for DrainArgs {
    fn default() -> Self {
        DrainArgs {
            drain_notice_ms: 1000,
            drain_timeout_ms: 10_000,
            reuse_port: false,
        }
    }
}

impl DrainArgs {
    /// How long NOT_SERVING is reported before new requests are refused.
    pub fn notice(&self) -> Duration {
        Duration::from_millis(self.drain_notice_ms)
    }

    /// How long requests in flight are waited for.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

/// Runs the drain once `signal` resolves: `not_serving` (the health
/// reporter's switch), the notice, then `stop` (the servers' graceful
/// shutdown); past the timeout, or on a second Ctrl-C/SIGTERM, the process
/// exits.
pub async fn drain_on<F, N>(
    signal: impl Future<Output = ()>,
    args: DrainArgs,
    not_serving: N,
    stop: F,
) where
    N: Future<Output = ()>,
    F: FnOnce(),
{
    signal.await;
    crate::ops::status::set_draining();
    tracing::info!(
        notice_ms = args.drain_notice_ms,
        "draining: health says NOT_SERVING; still serving while callers notice"
    );
    not_serving.await;
    tokio::select! {
        _ = tokio::time::sleep(args.notice()) => {}
        _ = crate::serving::shutdown_signal() => {
            tracing::warn!("second stop signal: exiting without draining");
            std::process::exit(1);
        }
    }
    tracing::info!("draining: refusing new requests, finishing those in flight");
    stop();
    tokio::select! {
        _ = tokio::time::sleep(args.timeout()) => {
            tracing::warn!(timeout_ms = args.drain_timeout_ms, "drain timed out with requests still in flight: exiting");
            std::process::exit(1);
        }
        _ = crate::serving::shutdown_signal() => {
            tracing::warn!("second stop signal: exiting before requests in flight finished");
            std::process::exit(1);
        }
    }
}
