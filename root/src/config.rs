//! Command-line configuration of the root node.

use clap::Parser;
use searchtree_parent::config::InnerArgs;
use searchtree_proto::serving::ConnectionArgs;

/// The root of a search tree: the node clients call.
#[derive(Debug, Parser)]
#[command(name = "searchtree-root", version)]
pub struct RootConfig {
    /// Address to listen on; port 0 picks a free port, printed as
    /// `LISTENING HOST:PORT` on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// How many connections it holds, and when it closes an idle one.
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// The children and the timing.
    #[command(flatten)]
    pub inner: InnerArgs,
}
