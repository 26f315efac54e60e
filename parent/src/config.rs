//! Command-line configuration of a parent node.

use std::sync::Arc;

use clap::Parser;

use crate::child::{Child, GrpcChild};
use crate::fanout::FanOut;
use crate::spec::ChildSpec;

/// Fan searches out to child nodes and merge their answers.
#[derive(Debug, Parser)]
#[command(name = "searchtree-parent", version)]
pub struct ParentConfig {
    /// Address to listen on; port 0 picks a free port, printed as
    /// `LISTENING HOST:PORT` on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// A child, as SHARDS@HOST:PORT (e.g. `0-1@127.0.0.1:7001`): the shards
    /// below it and its address. Repeat for each child.
    #[arg(long = "child", required = true)]
    pub children: Vec<ChildSpec>,
}

/// Checks that no shard is below two children, and builds the gRPC fan-out.
pub fn fanout_over(children: &[ChildSpec]) -> anyhow::Result<FanOut> {
    let mut seen = std::collections::BTreeMap::new();
    for spec in children {
        for shard in &spec.shards {
            if let Some(other) = seen.insert(*shard, &spec.addr) {
                anyhow::bail!(
                    "shard {shard} is below two children ({other} and {}); each shard must be below exactly one",
                    spec.addr
                );
            }
        }
    }
    let clients = children
        .iter()
        .map(|spec| Ok(Arc::new(GrpcChild::new(spec.clone())?) as Arc<dyn Child>))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(FanOut::new(clients))
}
