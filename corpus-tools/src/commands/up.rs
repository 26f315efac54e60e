//! `searchtree up`: start a tree from its topology and keep it running.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use searchtree_node::serving::shutdown_signal;

use crate::tree::binaries::NodeBinaries;
use crate::tree::supervisor::{self, RestartPolicy, StartOptions, Tree};
use crate::tree::topology::{self, Topology};

/// Start every node of a topology as its own process, print
/// `READY root=HOST:PORT` once all are serving, and run until Ctrl-C/SIGTERM,
/// restarting any node that dies on the address it had.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The topology file (as written by `searchtree build`).
    #[arg(long)]
    pub topology: PathBuf,
    /// Never restart a node that dies: the tree serves without it, and a
    /// dead root ends `up` with an error.
    #[arg(long)]
    pub no_restart: bool,
    /// Restarts of the root allowed within a minute; one more ends `up`
    /// with an error (as do 5 failed starts of the root in a row).
    #[arg(long, default_value_t = RestartPolicy::default().max_root_restarts)]
    pub max_root_restarts: u32,
    /// Async worker threads per node. Unset: the machine's cores shared
    /// among the tree's nodes (at least one each); 0: each node's default,
    /// one per core (for nodes that have a machine each).
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// Where the leaves keep what is loaded and published into the running
    /// tree: one directory per leaf, named after it, kept across restarts.
    /// Default: `state/` beside the topology file. (A rebuild into the
    /// same directory refuses to discard it.)
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Once the tree is ready, write a JSON list of its nodes here (name,
    /// role, pid, gRPC and HTTP addresses, and `up`'s own pid), kept
    /// current as nodes restart.
    #[arg(long)]
    pub nodes_file: Option<PathBuf>,
    /// Do not give the nodes an HTTP port (by default each serves
    /// Prometheus metrics at `/metrics` on a free port of its host, and the
    /// root its status page).
    #[arg(long)]
    pub no_metrics: bool,
    /// Run the tree with TLS between every pair of nodes and to clients,
    /// and admin calls behind a token, with the certificates in this
    /// directory (made by `searchtree certs` — or here, if it has none).
    /// Clients then need `--tls-ca DIR/ca.pem` (and `--token-file
    /// DIR/admin.token` for admin calls).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// With --tls-dir: mutual TLS; every caller must present a certificate
    /// signed by the CA (`--client-cert DIR/client.pem --client-key
    /// DIR/client.key`).
    #[arg(long, requires = "tls_dir")]
    pub mtls: bool,
    /// With --tls-dir: searching needs the admin token too (by default
    /// searching is open to anyone who can reach the root over TLS).
    #[arg(long, requires = "tls_dir")]
    pub protect_search: bool,
    /// Every node exports a span per request served to this OTLP/gRPC
    /// collector (e.g. `http://127.0.0.1:4317`).
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// The share of new traces whose spans are exported, 0 to 1 (every
    /// node's --otlp-sample-ratio; default: all).
    #[arg(long, requires = "otlp_endpoint",
          value_parser = searchtree_node::ops::otlp::parse_ratio)]
    pub otlp_sample_ratio: Option<f64>,
    /// How inner nodes call their children's searches and fetches (every
    /// node's --child-transport): `frames` (the default, cheaper a hop) or
    /// `grpc` (HTTP/2). With --tls-dir, frames go over TLS.
    #[arg(long, value_enum)]
    pub child_transport: Option<searchtree_node::ops::client::ChildTransport>,
    /// etcd endpoints (comma-separated): the nodes register there and
    /// parents find their children there, rather than being given their
    /// addresses (needs --tree).
    #[arg(long, requires = "tree")]
    pub etcd: Option<String>,
    /// The tree's name in etcd (with --etcd).
    #[arg(long, requires = "etcd")]
    pub tree: Option<String>,
    /// How the nodes reach etcd: TLS, a user (passed on to every node).
    #[command(flatten)]
    pub etcd_access: searchtree_membership::EtcdAccessArgs,
}

/// The name of the leaves' state directory beside a topology file.
pub const STATE_DIR: &str = "state";

/// The leaves' state directory for a tree started from `topology` when
/// none is named: `state/` beside the topology file.
pub fn default_state_dir(topology: &Path) -> PathBuf {
    match topology.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(STATE_DIR),
        _ => PathBuf::from(STATE_DIR),
    }
}

impl UpArgs {
    /// The restart policy these flags ask for.
    pub fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy {
            restart: !self.no_restart,
            max_root_restarts: self.max_root_restarts,
            ..RestartPolicy::default()
        }
    }
}

/// Validates the topology and starts its tree, node logs forwarded; each
/// leaf keeps its state in `state_dir/<leaf name>` (absolute, as the nodes
/// run elsewhere).
pub async fn start_tree(
    path: &Path,
    state_dir: &Path,
    options: &StartOptions,
) -> anyhow::Result<Tree> {
    let mut plan = Topology::load(path)?.plan()?;
    topology::check_indexes(&plan)?;
    topology::check_addresses_free(&plan)?;
    let state_dir = std::path::absolute(state_dir)
        .with_context(|| format!("--state-dir {}", state_dir.display()))?;
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    plan.set_state_dir(&state_dir);
    let bins = NodeBinaries::locate()?;
    supervisor::start(&plan, &bins, options).await
}

/// Prints the one readiness line on stdout.
pub fn print_ready(tree: &Tree) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "READY root={}", tree.root_addr());
    let _ = out.flush();
}

/// Serves until asked to stop, restarting nodes that die as `policy` says,
/// then stops the tree. An error means the root could not be kept alive.
pub async fn serve_until_stopped(mut tree: Tree, policy: &RestartPolicy) -> anyhow::Result<()> {
    let result = tree.supervise(policy, shutdown_signal()).await;
    match &result {
        Ok(()) => tracing::info!("stopping the tree"),
        Err(_) => tracing::error!("giving up on the root; stopping the tree"),
    }
    log_restart_summary(&tree);
    tree.shutdown().await;
    result
}

/// Logs how often each node was restarted, so an operator sees at a glance
/// whether the tree was healthy.
fn log_restart_summary(tree: &Tree) {
    let restarted: Vec<String> = tree
        .restart_counts()
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(name, count)| format!("{name}={count}"))
        .collect();
    if restarted.is_empty() {
        tracing::info!("restarts: none");
    } else {
        tracing::warn!("restarts: {}", restarted.join(" "));
    }
}

/// Makes the certificates in `dir` if it has none, sets `up`'s own calls
/// (health checks) to use them, and returns the flags that make every node
/// serve TLS, call its children over TLS and require the admin token.
fn secure_tree(dir: &Path, mtls: bool, protect_search: bool) -> anyhow::Result<Vec<String>> {
    use crate::certs::{self, CertDir, files};
    let certs = CertDir(dir.to_path_buf());
    if !certs.is_complete() {
        let hosts: Vec<String> = certs::DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect();
        certs::generate(dir, &hosts)?;
        tracing::info!(dir = %dir.display(), "made development certificates");
    }
    let file = |name: &str| {
        std::path::absolute(certs.file(name))
            .map(|p| p.display().to_string())
            .with_context(|| format!("{}", certs.file(name).display()))
    };
    crate::client_args::ClientArgs {
        tls_ca: Some(certs.file(files::CA)),
        client_cert: Some(certs.file(files::NODE)),
        client_key: Some(certs.file(files::NODE_KEY)),
        token_file: Some(certs.file(files::ADMIN_TOKEN)),
    }
    .install()?;
    let mut flags = vec![
        "--tls-cert".to_string(),
        file(files::NODE)?,
        "--tls-key".into(),
        file(files::NODE_KEY)?,
        "--tls-ca".into(),
        file(files::CA)?,
        "--admin-token-file".into(),
        file(files::ADMIN_TOKEN)?,
    ];
    if mtls {
        flags.extend(["--tls-client-ca".into(), file(files::CA)?]);
    }
    if protect_search {
        flags.extend(["--search-token-file".into(), file(files::ADMIN_TOKEN)?]);
    }
    tracing::info!(
        "TLS on: clients call with --tls-ca {}{} (admin calls: --token-file {})",
        file(files::CA)?,
        if mtls {
            format!(
                " --client-cert {} --client-key {}",
                file(files::CLIENT)?,
                file(files::CLIENT_KEY)?
            )
        } else {
            String::new()
        },
        file(files::ADMIN_TOKEN)?
    );
    Ok(flags)
}

/// The flags every node of the tree starts with, from `up`'s own.
fn node_flags(args: &UpArgs) -> anyhow::Result<Vec<String>> {
    // Every node can be replaced on its address while it drains
    // (`searchtree restart --rolling`).
    let mut flags = vec!["--reuse-port".to_string()];
    if let Some(dir) = &args.tls_dir {
        flags.extend(secure_tree(dir, args.mtls, args.protect_search)?);
    }
    if let Some(endpoint) = &args.otlp_endpoint {
        flags.push(format!("--otlp-endpoint={endpoint}"));
    }
    if let Some(ratio) = args.otlp_sample_ratio {
        flags.push(format!("--otlp-sample-ratio={ratio}"));
    }
    if let Some(transport) = args.child_transport {
        let name = transport.to_possible_value().expect("not skipped");
        flags.push(format!("--child-transport={}", name.get_name()));
    }
    if args.etcd.is_some() {
        // Read here first, so that a missing file is named before any
        // node starts.
        args.etcd_access.security().map_err(anyhow::Error::msg)?;
        flags.extend(args.etcd_access.to_flags().map_err(anyhow::Error::msg)?);
    }
    Ok(flags)
}

/// Runs `up`.
pub async fn run(args: &UpArgs) -> anyhow::Result<()> {
    let options = StartOptions {
        default_log: Some("info".into()),
        forward_logs: true,
        worker_threads: args.worker_threads,
        metrics: !args.no_metrics,
        node_args: node_flags(args)?,
        membership: args.etcd.clone().zip(args.tree.clone()),
    };
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => default_state_dir(&args.topology),
    };
    let mut tree = start_tree(&args.topology, &state_dir, &options).await?;
    for node in tree.nodes_file().nodes {
        tracing::info!(
            node = %node.name,
            addr = %node.grpc,
            http = ?node.http,
            pid = node.pid.unwrap_or_default(),
            "node serving"
        );
    }
    if let Some(path) = &args.nodes_file {
        tree.keep_nodes_file(path.clone())?;
    }
    print_ready(&tree);
    if let Some(http) = tree.root_http() {
        // The nodes' HTTP ports speak TLS when the tree does.
        let scheme = if args.tls_dir.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!("status page: {scheme}://{http}/");
    }
    serve_until_stopped(tree, &args.restart_policy()).await
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use searchtree_node::ops::client::ChildTransport;

    use super::*;

    #[derive(Parser)]
    struct Up {
        #[command(flatten)]
        args: UpArgs,
    }

    #[derive(Parser)]
    struct Node {
        #[command(flatten)]
        ops: searchtree_node::ops::OpsArgs,
    }

    fn node_transport(up: &[&str]) -> ChildTransport {
        let up = Up::try_parse_from(["up", "--topology", "t.toml"].iter().chain(up)).unwrap();
        let flags = node_flags(&up.args).unwrap();
        let node = Node::try_parse_from(std::iter::once("node".to_string()).chain(flags)).unwrap();
        node.ops.child_transport
    }

    #[test]
    fn child_transport_reaches_every_node_as_the_node_parses_it() {
        assert_eq!(node_transport(&[]), ChildTransport::Frames);
        assert_eq!(
            node_transport(&["--child-transport", "grpc"]),
            ChildTransport::Grpc
        );
        assert_eq!(
            node_transport(&["--child-transport", "frames"]),
            ChildTransport::Frames
        );
    }
}
