//! The operations side every node shares: the flags an operator sets on any
//! node (its HTTP port for metrics, TLS, who may call admin methods,
//! tracing export, drain), and the HTTP server behind `--metrics-listen`.
//!
//! Each concern keeps its flags in its own `Args` struct, flattened into
//! [`OpsArgs`], which every node's configuration flattens in turn: one place
//! to look for what a node can be told about its operation.

pub mod http;
pub mod metrics;
pub mod timing;
pub mod trace;

use clap::Args;

/// The operations flags every node takes.
#[derive(Debug, Clone, Default, Args)]
pub struct OpsArgs {
    /// Serve HTTP on this address (port 0 picks a free port): Prometheus
    /// metrics at `GET /metrics`, and on the root the status page at `/`.
    /// The address is printed as `HTTP HOST:PORT` on stdout. Off by default.
    #[arg(long)]
    pub metrics_listen: Option<String>,
}
