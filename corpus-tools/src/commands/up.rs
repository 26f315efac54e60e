//! `searchtree up`: start a tree from its topology and keep it running.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use searchtree_proto::serving::shutdown_signal;

use crate::binaries::NodeBinaries;
use crate::supervisor::{self, StartOptions, Tree};
use crate::topology::{self, Topology};

/// Start every node of a topology as its own process, print
/// `READY root=HOST:PORT` once all are serving, and run until Ctrl-C/SIGTERM.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The topology file (as written by `searchtree build`).
    #[arg(long)]
    pub topology: PathBuf,
}

/// Validates the topology and starts its tree, node logs forwarded.
pub async fn start_tree(path: &std::path::Path, options: &StartOptions) -> anyhow::Result<Tree> {
    let plan = Topology::load(path)?.plan()?;
    topology::check_indexes(&plan)?;
    let bins = NodeBinaries::locate()?;
    supervisor::start(&plan, &bins, options).await
}

/// Prints the one readiness line on stdout.
pub fn print_ready(tree: &Tree) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "READY root={}", tree.root_addr());
    let _ = out.flush();
}

/// Serves until asked to stop; a node that dies is reported, the rest go on.
pub async fn serve_until_stopped(mut tree: Tree) {
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(exit) = tree.next_exit() => {
                tracing::error!(
                    node = %exit.name,
                    status = ?exit.status,
                    "node exited; the rest of the tree keeps serving without it"
                );
            }
        }
    }
    tracing::info!("stopping the tree");
    tree.shutdown().await;
}

/// Runs `up`.
pub async fn run(args: &UpArgs) -> anyhow::Result<()> {
    let options = StartOptions {
        default_log: Some("info".into()),
        forward_logs: true,
    };
    let tree = start_tree(&args.topology, &options).await?;
    for (name, addr) in tree.addresses() {
        tracing::info!(%name, %addr, "node serving");
    }
    print_ready(&tree);
    serve_until_stopped(tree).await;
    Ok(())
}
