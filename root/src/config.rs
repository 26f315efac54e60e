//! Command-line configuration of the root node.

use clap::Parser;
use searchtree_parent::config::InnerArgs;

/// The root of a search tree: the node clients call.
#[derive(Debug, Parser)]
#[command(name = "searchtree-root", version)]
pub struct RootConfig {
    /// Address to listen on; port 0 picks a free port, printed as
    /// `LISTENING HOST:PORT` on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// The children and the timing.
    #[command(flatten)]
    pub inner: InnerArgs,
}
