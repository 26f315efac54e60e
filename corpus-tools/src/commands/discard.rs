//! `searchtree discard`: throw away what a load staged and nobody wants
//! published (a load stopped halfway, or one staged with `--no-publish`).

use std::collections::BTreeMap;
use std::fmt::Write;

use anyhow::anyhow;
use clap::Args;
use searchtree_proto::pb::{DiscardRequest, DiscardResponse};

use crate::live::client::connect;
use crate::node_call::describe_status;

/// Throw away every operation staged in a running tree (loaded, not yet
/// published); the tree keeps serving its current version, and the next
/// publish includes only what is loaded after this.
#[derive(Debug, Args)]
pub struct DiscardArgs {
    /// The root's address, HOST:PORT.
    #[arg(long)]
    pub root: String,
}

/// What a discard did: the operations thrown away per shard (replicas of a
/// shard staged the same ones), and the replicas that kept theirs.
pub fn render_discarded(r: &DiscardResponse) -> String {
    let mut per_shard: BTreeMap<u32, u64> = BTreeMap::new();
    for s in &r.shards {
        let ops = per_shard.entry(s.shard).or_default();
        *ops = (*ops).max(s.staged_ops);
    }
    let total: u64 = per_shard.values().sum();
    let shards: Vec<String> = per_shard
        .iter()
        .map(|(shard, ops)| format!("shard {shard}: {ops}"))
        .collect();
    let mut out = format!(
        "discarded {total} staged operations ({})\n",
        if shards.is_empty() {
            "no leaf answered".to_string()
        } else {
            shards.join(", ")
        }
    );
    if !r.replicas_failed.is_empty() {
        let _ = writeln!(
            out,
            "  replicas that kept theirs (left out of the next version; they catch up by copying it): {}",
            r.replicas_failed.join(", ")
        );
    }
    out
}

/// Runs the discard and prints what it did.
pub async fn run(args: &DiscardArgs) -> anyhow::Result<()> {
    let client = connect(&args.root).await?;
    let response = client
        .clone()
        .discard(DiscardRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| anyhow!("discard failed: {}", describe_status(&s)))?;
    print!("{}", render_discarded(&response));
    Ok(())
}

#[cfg(test)]
mod tests {
    use searchtree_proto::pb::ShardDiscard;

    use super::*;

    #[test]
    fn a_discard_counts_each_shard_once_and_names_who_kept_theirs() {
        let shard = |shard, replica: &str, staged_ops| ShardDiscard {
            shard,
            replica: replica.into(),
            staged_ops,
        };
        let mut r = DiscardResponse {
            shards: vec![shard(0, "a", 40), shard(0, "b", 40), shard(1, "c", 2)],
            replicas_failed: vec![],
        };
        assert_eq!(
            render_discarded(&r),
            "discarded 42 staged operations (shard 0: 40, shard 1: 2)\n"
        );
        r.replicas_failed = vec!["127.0.0.1:9".into()];
        assert!(render_discarded(&r).ends_with("they catch up by copying it): 127.0.0.1:9\n"));
    }
}
