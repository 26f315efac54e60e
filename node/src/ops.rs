//! The operations side every node shares: the flags an operator sets on any
//! node (its HTTP port for metrics, TLS, who may call admin methods,
//! tracing export, drain, membership in etcd), and the HTTP server behind `--metrics-listen`.
//!
//! Each concern keeps its flags in its own `Args` struct, flattened into
//! [`OpsArgs`], which every node's configuration flattens in turn: one place
//! to look for what a node can be told about its operation.

pub mod auth;
pub mod bounded_status;
pub mod client;
pub mod drain;
pub mod http;
pub mod http_slots;
pub mod layer;
pub mod metrics;
pub mod otlp;
pub mod responses;
pub mod status;
pub mod timing;
pub mod tls;
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
    /// TLS: the node's certificate, the CA it trusts, mutual TLS.
    #[command(flatten)]
    pub tls: tls::TlsArgs,
    /// Who may call admin methods and search.
    #[command(flatten)]
    pub auth: auth::AuthArgs,
    /// Graceful drain on SIGTERM.
    #[command(flatten)]
    pub drain: drain::DrainArgs,
    /// Membership in etcd: where the node registers, and finds children.
    #[command(flatten)]
    pub membership: searchtree_membership::MembershipArgs,
    /// Span export over OTLP.
    #[command(flatten)]
    pub otlp: otlp::OtlpArgs,
    /// How an inner node calls its children's searches and fetches:
    /// `frames` (searchtree's own framing over TCP, or over TLS with
    /// --tls-ca; cheaper than HTTP/2 on every hop) or `grpc`.
    #[arg(long, value_enum, default_value_t = client::ChildTransport::Frames)]
    pub child_transport: client::ChildTransport,
}

impl OpsArgs {
    /// Sets how this process calls other nodes (TLS against --tls-ca, with
    /// its own certificate; its admin token), from these flags. Call once,
    /// at start-up, before any channel is made.
    pub fn install_client_security(&self) -> Result<(), String> {
        let tls = self.tls.client().map_err(|e| e.to_string())?;
        let frames_tls = self.tls.frames_client().map_err(|e| e.to_string())?;
        let token = self
            .auth
            .admin_token_file
            .as_deref()
            .map(auth::read_token)
            .transpose()?;
        client::set_security(client::ClientSecurity {
            tls,
            frames_tls,
            token,
        })?;
        client::set_child_transport(self.child_transport)
    }
}
