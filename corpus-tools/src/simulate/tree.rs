//! The simulated tree: the real inner-node code (`InnerNode`: fan-out,
//! deadlines, merge; `ReplicaGroup`: health checks, probation, retries,
//! hedging) over simulated leaves, in one process, each inner node a child
//! of the one above it (`InnerNode` is a [`Child`] itself).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures::future::BoxFuture;
use searchtree_parent::child::{Child, ChildError};
use searchtree_parent::counters::inner_counters;
use searchtree_parent::fanout::FanOutOptions;
use searchtree_parent::node::{InnerNode, InnerTiming};
use searchtree_parent::replica::{ReplicaConfig, ReplicaGroup};
use searchtree_proto::BudgetPolicy;
use searchtree_proto::pb::{FetchRequest, FetchResponse, SearchRequest, SearchResponse};

use super::leaf::{LeafModel, SimLeaf};

/// The shape and settings of a simulated tree.
#[derive(Debug, Clone)]
pub struct TreeShape {
    /// Shards, one leaf group each.
    pub leaves: u32,
    /// Children per inner node (the last node of a level may have fewer).
    pub fanout: u32,
    /// Replicas of each leaf.
    pub replicas: u32,
    /// Dead replicas per shard (of `replicas`), placed on the first shards'
    /// last replicas: `dead_fraction` of all leaf processes.
    pub dead_fraction: f64,
    /// Hedged requests per request in each replica group.
    pub hedge_ratio: f64,
    /// Each child is asked for its likely share of the top-k with this
    /// probability, and again when it might hold more (as the serving
    /// tree does; 1 asks every child for all k).
    pub child_k_probability: f64,
    /// Time each inner node keeps back for its merge and the hop up.
    pub reserve: Duration,
    /// One network hop's delay, each way.
    pub hop: Duration,
    /// Seed for every draw.
    pub seed: u64,
}

/// An inner node as its parent's child with a network hop's delay each way
/// (without one, the `InnerNode` is the child itself).
struct Hop {
    node: InnerNode,
    hop: Duration,
}

impl Child for Hop {
    fn name(&self) -> &str {
        Child::name(&self.node)
    }

    fn shards(&self) -> &[u32] {
        Child::shards(&self.node)
    }

    fn search(
        &self,
        request: SearchRequest,
        budget: Duration,
    ) -> BoxFuture<'_, Result<SearchResponse, ChildError>> {
        Box::pin(async move {
            tokio::time::sleep(self.hop).await;
            let left = budget.saturating_sub(self.hop);
            let answer = Child::search(&self.node, request, left).await?;
            tokio::time::sleep(self.hop).await;
            Ok(answer)
        })
    }

    fn fetch(
        &self,
        request: FetchRequest,
        budget: Duration,
    ) -> BoxFuture<'_, Result<FetchResponse, ChildError>> {
        Child::fetch(&self.node, request, budget)
    }
}

/// The levels a tree of `leaves` under nodes of `fanout` children has
/// above its leaves (1: the root alone).
pub fn inner_levels(leaves: u32, fanout: u32) -> u32 {
    let mut levels = 1;
    let mut width = u64::from(fanout);
    while width < u64::from(leaves) {
        width *= u64::from(fanout);
        levels += 1;
    }
    levels
}

/// Builds the tree: every shard's leaves (a replica group when there are
/// several), then inner nodes level by level up to the root, which is
/// returned with the count of leaf requests every leaf adds to.
pub fn build(shape: &TreeShape, model: LeafModel) -> (InnerNode, Arc<AtomicU64>) {
    let model = Arc::new(model);
    let requests = Arc::new(AtomicU64::new(0));
    let replica_config = ReplicaConfig {
        hedge_ratio: shape.hedge_ratio,
        ..ReplicaConfig::default()
    };
    let counters = inner_counters("parent");
    let total = shape.leaves * shape.replicas;
    let dead = ((shape.dead_fraction * f64::from(total)).round() as u32).min(total);
    let mut level: Vec<Arc<dyn Child>> = (0..shape.leaves)
        .map(|shard| {
            let mut replicas: Vec<Arc<dyn Child>> = (0..shape.replicas)
                .map(|r| {
                    // The dead ones: the last replica of the first shards,
                    // then the one before, and so on.
                    let index = (shape.replicas - 1 - r) * shape.leaves + shard;
                    Arc::new(SimLeaf::new(
                        shard,
                        r,
                        Arc::clone(&model),
                        shape.seed,
                        index < dead,
                        Arc::clone(&requests),
                    )) as Arc<dyn Child>
                })
                .collect();
            if replicas.len() == 1 {
                return replicas.remove(0);
            }
            let group = ReplicaGroup::new(replicas, replica_config.clone(), Arc::clone(&counters));
            group.spawn_health_checks();
            group as Arc<dyn Child>
        })
        .collect();
    // Every inner node grants what its parent passes down, up to the
    // longest budget a simulated query may have: a node's own limit must
    // not cut a long budget short below the root.
    let timing = InnerTiming {
        policy: BudgetPolicy {
            default: super::MAX_BUDGET,
            max: super::MAX_BUDGET,
        },
        reserve: shape.reserve,
    };
    let options = FanOutOptions {
        // A simulated leaf's scores are independent draws, so the global
        // top-k falls on shards as the binomial bound assumes.
        child_k_probability: shape.child_k_probability,
        early_answer: None,
    };
    let node = |name: String, children: Vec<Arc<dyn Child>>| {
        InnerNode::new(name, children, timing, Arc::clone(&counters))
            .with_max_in_flight(usize::MAX)
            .with_fanout_options(options)
    };
    let fanout = shape.fanout.max(2) as usize;
    loop {
        if level.len() <= fanout {
            return (node("root".into(), level), requests);
        }
        let mut next = Vec::with_capacity(level.len().div_ceil(fanout));
        let mut children = level.into_iter().peekable();
        let mut i = 0;
        while children.peek().is_some() {
            let group: Vec<Arc<dyn Child>> = children.by_ref().take(fanout).collect();
            let inner = node(format!("inner-{i}"), group);
            i += 1;
            next.push(if shape.hop.is_zero() {
                Arc::new(inner) as Arc<dyn Child>
            } else {
                Arc::new(Hop {
                    node: inner,
                    hop: shape.hop,
                })
            });
        }
        level = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_fanout() {
        assert_eq!(inner_levels(4, 4), 1);
        assert_eq!(inner_levels(5, 4), 2);
        assert_eq!(inner_levels(10_000, 22), 3);
        assert_eq!(inner_levels(10_000, 100), 2);
        assert_eq!(inner_levels(10_001, 100), 3);
    }
}
