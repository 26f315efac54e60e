//! Command-line configuration of inner nodes (parents, and the root).

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser};
use searchtree_node::ops::OpsArgs;
use searchtree_node::query_args::QueryLimitArgs;
use searchtree_node::serving::ConnectionArgs;
use searchtree_proto::BudgetPolicy;

use crate::cache::{self, CacheConfig};
use crate::child::{Child, GrpcChild};
use crate::corpus::{CorpusChildren, CorpusNode};
use crate::counters::{InnerCounters, inner_counters};
use crate::discovery::DiscoveredChild;
use crate::fanout::{EarlyAnswer, FanOutOptions};
use crate::node::{InnerNode, InnerTiming};
use crate::replica::{Policy, ReplicaConfig, ReplicaGroup};
use crate::spec::{ChildSpec, format_shards};
use searchtree_membership::TreeMembership;

/// Fan searches out to child nodes and merge their answers.
#[derive(Debug, Parser)]
#[command(name = "searchtree-parent", version)]
pub struct ParentConfig {
    /// Address to listen on; port 0 picks a free port, printed as
    /// `LISTENING HOST:PORT` on stdout.
    #[arg(long, default_value = "127.0.0.1:0", value_parser = searchtree_node::serving::listen_address)]
    pub listen: String,
    /// How many connections it holds, and when it closes an idle one.
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// Metrics, TLS, admin calls, tracing and drain.
    #[command(flatten)]
    pub ops: OpsArgs,
    /// The children and the timing.
    #[command(flatten)]
    pub inner: InnerArgs,
}

/// Every child of a node, those of them found in etcd, and those that are
/// replica groups (told of every Activate, see
/// [`CorpusNode::follow_activations`]).
pub type Children = (
    Vec<Arc<dyn Child>>,
    Vec<DiscoveredChild>,
    Vec<Arc<ReplicaGroup>>,
);

/// Flags every inner node takes.
#[derive(Debug, Args)]
pub struct InnerArgs {
    /// A child, as SHARDS@HOST:PORT[,HOST:PORT...] (e.g. `0-1@127.0.0.1:7001`):
    /// the shards below it and its address — several addresses are replicas
    /// of it. With --etcd, SHARDS alone (e.g. `0-1`): its replicas are the
    /// nodes registered in the tree as serving exactly those shards. Repeat
    /// for each child.
    #[arg(long = "child", required = true)]
    pub children: Vec<ChildSpec>,
    /// How a replica is chosen: round_robin, least_outstanding or latency_aware.
    #[arg(long, default_value_t = Policy::default())]
    pub replica_policy: Policy,
    /// Time between health checks of each replica, in milliseconds.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..))]
    pub health_interval_ms: u64,
    /// How long a health check may take, in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub health_timeout_ms: u64,
    /// Consecutive failed health checks before a replica is taken out of
    /// rotation (a refused or failed request takes it out at once). A check
    /// that times out while this node's own timer runs late (the node is
    /// the slow one) is not counted.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub health_fall: u32,
    /// Over how long a replica back from an outage ramps up to its full
    /// share of traffic, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub slow_start_ms: u64,
    /// Retries after a retryable error, each to another replica.
    #[arg(long, default_value_t = 1)]
    pub retries: u32,
    /// Retries allowed per request on average, beyond a burst of ten and
    /// one a second, so that a group whose replicas all shed load is not
    /// sent every request twice (1 lets every request retry; 0 leaves only
    /// the burst and the one a second).
    #[arg(long, default_value_t = crate::replica::RETRY_RATIO)]
    pub retry_ratio: f64,
    /// Hedged requests allowed per request on average (0 turns hedging off).
    #[arg(long, default_value_t = 0.05)]
    pub hedge_ratio: f64,
    /// The least time to wait before hedging, in milliseconds.
    #[arg(long, default_value_t = 2.0)]
    pub hedge_min_delay_ms: f64,
    /// A replica whose recent p90 is more than this many times its peers'
    /// goes on probation (0 turns probation off).
    #[arg(long, default_value_t = 3.0)]
    pub probation_factor: f64,
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
    /// The most requests this node works on at once; past it a request is
    /// refused at once with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = crate::node::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Each child is asked for only as many hits as it holds of the top-k
    /// with this probability, and asked again for the rest when its answer
    /// shows it might hold more (answers stay exact). 1 asks every child
    /// for all k.
    #[arg(long, default_value_t = crate::child_k::DEFAULT_CHILD_K_PROBABILITY)]
    pub child_k_probability: f64,
    /// Early answer: once this fraction of the shards has answered, wait at
    /// most --early-answer-wait-ms for the rest instead of until the
    /// deadline (0, the default, always waits until the deadline).
    #[arg(long, default_value_t = 0.0)]
    pub early_answer_coverage: f64,
    /// How long to wait for stragglers once --early-answer-coverage is
    /// reached, in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    pub early_answer_wait_ms: f64,
    /// Size of the result cache of complete answers, in MiB (0 turns it
    /// off).
    #[arg(long, default_value_t = cache::DEFAULT_CACHE_MB)]
    pub cache_mb: u64,
    /// How long a cached answer is served, in seconds: it bounds how long
    /// a node that sees only hits serves a snapshot the tree has left.
    #[arg(long, default_value_t = cache::DEFAULT_TTL.as_secs())]
    pub cache_ttl_secs: u64,
    /// How complex a query may be.
    #[command(flatten)]
    pub query_limits: QueryLimitArgs,
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

    /// Builds the inner node these flags describe — its children over
    /// gRPC, its timing, and counters for `role` — and its side of the
    /// `Corpus` service. Children named by shards alone are found in etcd
    /// through `membership` (which they then require), and followed from
    /// then on.
    pub async fn build(
        &self,
        role: &'static str,
        membership: Option<TreeMembership>,
    ) -> anyhow::Result<(InnerNode, Arc<CorpusNode>)> {
        let counters = inner_counters(role);
        let (children, discovered, groups) = self.grpc_children(&counters)?;
        let node = self.node_over(role, children, counters)?;
        let corpus = self.corpus_node()?;
        for group in &groups {
            corpus.follow_activations(group);
        }
        if !discovered.is_empty() {
            let Some(membership) = membership else {
                anyhow::bail!(
                    "--child {} names no address: its replicas are found in etcd, which needs --etcd and --tree",
                    format_shards(&discovered[0].shards)
                );
            };
            let own = crate::discovery::OwnRecord {
                addr: membership.advertise.clone(),
                role: role.to_string(),
                shards: node.shards(),
                instance: searchtree_membership::member::this_instance(),
            };
            crate::discovery::follow(membership, own, discovered, Arc::clone(&corpus)).await;
        }
        Ok((node, corpus))
    }

    /// The inner node over `children`, configured by these flags.
    fn node_over(
        &self,
        role: &'static str,
        children: Vec<Arc<dyn Child>>,
        counters: Arc<InnerCounters>,
    ) -> anyhow::Result<InnerNode> {
        let node = InnerNode::new(role, children, self.timing()?, counters)
            .with_query_limits(self.query_limits.limits().map_err(anyhow::Error::msg)?)
            .with_max_in_flight(self.max_in_flight)
            .with_cache(self.cache()?)
            .with_fanout_options(self.fanout_options()?);
        tracing::info!(
            children = self.children.len(),
            shards = node.shards_total(),
            policy = %self.replica_policy,
            cache_mb = self.cache_mb,
            "{role} configured"
        );
        Ok(node)
    }

    /// The node's side of the `Corpus` service: every replica of every
    /// child, connected lazily.
    fn corpus_node(&self) -> anyhow::Result<Arc<CorpusNode>> {
        Ok(Arc::new(CorpusNode::new(CorpusChildren::from_specs(
            &self.children,
        )?)))
    }

    /// How children are asked and awaited.
    pub fn fanout_options(&self) -> anyhow::Result<FanOutOptions> {
        if !(self.child_k_probability > 0.0 && self.child_k_probability <= 1.0) {
            anyhow::bail!(
                "--child-k-probability {} must be above 0 and at most 1",
                self.child_k_probability
            );
        }
        if !(0.0..=1.0).contains(&self.early_answer_coverage) {
            anyhow::bail!(
                "--early-answer-coverage {} must be between 0 and 1",
                self.early_answer_coverage
            );
        }
        if !(0.0..=60_000.0).contains(&self.early_answer_wait_ms) {
            anyhow::bail!(
                "--early-answer-wait-ms {} must be between 0 and 60000",
                self.early_answer_wait_ms
            );
        }
        Ok(FanOutOptions {
            child_k_probability: self.child_k_probability,
            early_answer: (self.early_answer_coverage > 0.0).then(|| EarlyAnswer {
                coverage: self.early_answer_coverage,
                wait: Duration::from_secs_f64(self.early_answer_wait_ms / 1000.0),
            }),
        })
    }

    /// The result cache's settings, unless `--cache-mb 0` turns it off.
    pub fn cache(&self) -> anyhow::Result<Option<CacheConfig>> {
        if self.cache_mb == 0 {
            return Ok(None);
        }
        let Some(max_bytes) = self.cache_mb.checked_mul(1 << 20) else {
            anyhow::bail!("--cache-mb {} is too large", self.cache_mb);
        };
        if !(1..=cache::MAX_TTL.as_secs()).contains(&self.cache_ttl_secs) {
            anyhow::bail!(
                "--cache-ttl-secs {} must be between 1 and {} (a day; --cache-mb 0 turns the cache off)",
                self.cache_ttl_secs,
                cache::MAX_TTL.as_secs()
            );
        }
        Ok(Some(CacheConfig {
            max_bytes,
            ttl: Duration::from_secs(self.cache_ttl_secs),
        }))
    }

    /// How replica groups behave.
    pub fn replica_config(&self) -> anyhow::Result<ReplicaConfig> {
        for (flag, ratio) in [
            ("--hedge-ratio", self.hedge_ratio),
            ("--retry-ratio", self.retry_ratio),
        ] {
            if !(0.0..=1.0).contains(&ratio) {
                anyhow::bail!("{flag} {ratio} must be between 0 and 1");
            }
        }
        if !(0.0..=60_000.0).contains(&self.hedge_min_delay_ms) {
            anyhow::bail!(
                "--hedge-min-delay-ms {} must be between 0 and 60000",
                self.hedge_min_delay_ms
            );
        }
        Ok(ReplicaConfig {
            policy: self.replica_policy,
            health_interval: Duration::from_millis(self.health_interval_ms.max(1)),
            health_timeout: Duration::from_millis(self.health_timeout_ms.max(1)),
            fall: self.health_fall,
            slow_start: Duration::from_millis(self.slow_start_ms),
            retries: self.retries,
            retry_ratio: self.retry_ratio,
            hedge_ratio: self.hedge_ratio,
            hedge_min_delay: Duration::from_secs_f64(self.hedge_min_delay_ms / 1000.0),
            probation_factor: if self.probation_factor > 0.0 {
                self.probation_factor
            } else {
                f64::INFINITY
            },
            ..ReplicaConfig::default()
        })
    }

    /// Checks that no shard is below two children, and connects (lazily) to
    /// each child over gRPC; every child becomes a health-checked replica
    /// group counting into `counters` — of its addresses, one or several, or
    /// of those found in etcd (returned also as discovered, to be followed).
    pub fn grpc_children(&self, counters: &Arc<InnerCounters>) -> anyhow::Result<Children> {
        let mut seen = std::collections::BTreeMap::new();
        for spec in &self.children {
            for shard in &spec.shards {
                if let Some(other) = seen.insert(*shard, spec.to_string()) {
                    anyhow::bail!(
                        "shard {shard} is below two children ({other} and {spec}); each shard must be below exactly one"
                    );
                }
            }
        }
        let config = self.replica_config()?;
        let mut discovered = Vec::new();
        let mut groups = Vec::new();
        let children = self
            .children
            .iter()
            .map(|spec| {
                if spec.is_discovered() {
                    let group = ReplicaGroup::discovered(
                        spec.shards.clone(),
                        config.clone(),
                        Arc::clone(counters),
                    );
                    group.spawn_health_checks();
                    group.spawn_version_checks();
                    groups.push(Arc::clone(&group));
                    discovered.push(DiscoveredChild {
                        shards: spec.shards.clone(),
                        group: Arc::clone(&group),
                    });
                    return Ok(group as Arc<dyn Child>);
                }
                // One address is a group of one: health-checked and judged
                // by its answers like any replica, so that its state is
                // known (a lone replica still gets every request).
                let replicas = spec
                    .addrs
                    .iter()
                    .map(|addr| {
                        Ok(Arc::new(GrpcChild::new(addr, spec.shards.clone())?) as Arc<dyn Child>)
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let group = ReplicaGroup::new(replicas, config.clone(), Arc::clone(counters));
                group.spawn_health_checks();
                group.spawn_version_checks();
                groups.push(Arc::clone(&group));
                Ok(group as Arc<dyn Child>)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((children, discovered, groups))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(extra: &[&str]) -> InnerArgs {
        let mut args = vec!["searchtree-parent", "--child", "0@127.0.0.1:1"];
        args.extend_from_slice(extra);
        ParentConfig::try_parse_from(args).unwrap().inner
    }

    #[test]
    fn durations_a_timer_cannot_hold_are_refused_not_panicked_on() {
        for delay in ["inf", "1e300", "-1", "NaN"] {
            let err = flags(&[&format!("--hedge-min-delay-ms={delay}")])
                .replica_config()
                .unwrap_err()
                .to_string();
            assert!(err.contains("between 0 and 60000"), "{delay}: {err}");
        }
        assert!(
            flags(&["--hedge-min-delay-ms", "0"])
                .replica_config()
                .is_ok()
        );
        let err = flags(&["--cache-ttl-secs", "40000000000"])
            .cache()
            .unwrap_err()
            .to_string();
        assert!(err.contains("between 1 and 86400"), "{err}");
        assert!(
            flags(&["--cache-ttl-secs", "86400"])
                .cache()
                .unwrap()
                .is_some()
        );
    }
}
