//! Command-line configuration of inner nodes (parents, and the root).

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser};
use searchtree_proto::BudgetPolicy;

use crate::child::{Child, GrpcChild};
use crate::node::InnerTiming;
use crate::spec::ChildSpec;

/// Fan searches out to child nodes and merge their answers.
#[derive(Debug, Parser)]
#[command(name = "searchtree-parent", version)]
pub struct ParentConfig {
    /// Address to listen on; port 0 picks a free port, printed as
    /// `LISTENING HOST:PORT` on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// The children and the timing.
    #[command(flatten)]
    pub inner: InnerArgs,
}

/// Flags every inner node takes.
#[derive(Debug, Args)]
pub struct InnerArgs {
    /// A child, as SHARDS@HOST:PORT (e.g. `0-1@127.0.0.1:7001`): the shards
    /// below it and its address. Repeat for each child.
    #[arg(long = "child", required = true)]
    pub children: Vec<ChildSpec>,
    /// Budget of a request that names none (no budget_ms, no gRPC deadline).
    #[arg(long, default_value_t = 100)]
    pub default_budget_ms: u64,
    /// The longest budget granted to any request.
    #[arg(long, default_value_t = 30_000)]
    pub max_budget_ms: u64,
    /// Time kept back from each request's deadline for this node's merge and
    /// the hop back to its caller; children get the rest (less the measured
    /// cost of the hop to them).
    #[arg(long, default_value_t = 3.0)]
    pub reserve_ms: f64,
}

impl InnerArgs {
    /// The node's timing.
    pub fn timing(&self) -> anyhow::Result<InnerTiming> {
        if !(0.0..1000.0).contains(&self.reserve_ms) {
            anyhow::bail!(
                "--reserve-ms {} must be between 0 and 1000",
                self.reserve_ms
            );
        }
        Ok(InnerTiming {
            policy: BudgetPolicy {
                default: Duration::from_millis(self.default_budget_ms),
                max: Duration::from_millis(self.max_budget_ms),
            },
            reserve: Duration::from_secs_f64(self.reserve_ms / 1000.0),
        })
    }

    /// Checks that no shard is below two children, and connects (lazily) to
    /// each child over gRPC.
    pub fn grpc_children(&self) -> anyhow::Result<Vec<Arc<dyn Child>>> {
        let mut seen = std::collections::BTreeMap::new();
        for spec in &self.children {
            for shard in &spec.shards {
                if let Some(other) = seen.insert(*shard, &spec.addr) {
                    anyhow::bail!(
                        "shard {shard} is below two children ({other} and {}); each shard must be below exactly one",
                        spec.addr
                    );
                }
            }
        }
        self.children
            .iter()
            .map(|spec| Ok(Arc::new(GrpcChild::new(spec.clone())?) as Arc<dyn Child>))
            .collect()
    }
}
