//! `searchtree stats`: a node's counters (or several nodes', summed).

use std::collections::BTreeMap;

use clap::Args;
use searchtree_proto::pb::GetStatsRequest;
use searchtree_proto::pb::node_stats_client::NodeStatsClient;

/// Print the counters of one or more nodes (`searchtree.v1.NodeStats`) as
/// JSON; with several addresses, also their sums.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// A node's address, HOST:PORT; repeat for several.
    #[arg(long = "addr", required = true)]
    pub addrs: Vec<String>,
}

/// Fetches and prints the counters.
pub async fn run(args: &StatsArgs) -> anyhow::Result<()> {
    let mut nodes = serde_json::Map::new();
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for addr in &args.addrs {
        let channel = crate::node_call::connect(addr, "node").await?;
        let mut client = NodeStatsClient::new(channel);
        let stats = client
            .get_stats(GetStatsRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("{addr}: {}", crate::node_call::describe_status(&s)))?
            .into_inner();
        let counters: BTreeMap<String, u64> = stats.counters.into_iter().collect();
        for (k, v) in &counters {
            *total.entry(k.clone()).or_default() += v;
        }
        nodes.insert(
            addr.clone(),
            serde_json::json!({ "role": stats.role, "counters": counters }),
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "nodes": nodes, "total": total }))?
    );
    Ok(())
}
