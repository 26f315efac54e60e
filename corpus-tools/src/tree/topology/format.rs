//! The topology file itself: the types `topology.toml` is read into and
//! written from, reading it, and writing it back as TOML.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default listen address: loopback, any free port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:0";

pub(super) fn default_listen() -> String {
    DEFAULT_LISTEN.into()
}

/// A whole tree as written in `topology.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The node clients call.
    pub root: RootNode,
    /// Inner nodes.
    #[serde(default, rename = "parent", skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<ParentNode>,
    /// Leaves: one per shard, or several (replicas) under the same parent.
    #[serde(default, rename = "leaf")]
    pub leaves: Vec<LeafNode>,
    /// How inner nodes treat replicas, for every parent and the root.
    #[serde(default, skip_serializing_if = "Routing::is_default")]
    pub routing: Routing,
}

/// Replica handling settings passed to every inner node (each optional;
/// unset means the node's default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// `round_robin`, `least_outstanding` or `latency_aware`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_policy: Option<String>,
    /// Hedged requests per request on average; 0 turns hedging off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge_ratio: Option<f64>,
    /// Retries to another replica after a retryable error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Retries per request on average, beyond a burst; 1 lets every
    /// request retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ratio: Option<f64>,
    /// Time between health checks, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_interval_ms: Option<u64>,
    /// Health checks timed out in a row before a replica is taken out of
    /// rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_fall: Option<u32>,
    /// Slow-start window of a returning replica, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start_ms: Option<u64>,
    /// Budget of a request that names none, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_budget_ms: Option<u64>,
    /// Probation threshold (times the peers' p90); 0 turns probation off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probation_factor: Option<f64>,
    /// Each child is asked for its share of the top-k with this
    /// probability, and again when it might hold more; 1 asks for all k.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_k_probability: Option<f64>,
    /// Early answer: the fraction of shards after which stragglers get only
    /// `early_answer_wait_ms` more (0: wait until the deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_answer_coverage: Option<f64>,
    /// How long stragglers are waited for once `early_answer_coverage` is
    /// reached, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_answer_wait_ms: Option<f64>,
}

impl Routing {
    fn is_default(&self) -> bool {
        *self == Routing::default()
    }

    /// The settings as flags for `searchtree-parent` and `searchtree-root`.
    pub fn flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(v) = &self.replica_policy {
            flags.push(format!("--replica-policy={v}"));
        }
        if let Some(v) = self.hedge_ratio {
            flags.push(format!("--hedge-ratio={v}"));
        }
        if let Some(v) = self.retries {
            flags.push(format!("--retries={v}"));
        }
        if let Some(v) = self.retry_ratio {
            flags.push(format!("--retry-ratio={v}"));
        }
        if let Some(v) = self.health_interval_ms {
            flags.push(format!("--health-interval-ms={v}"));
        }
        if let Some(v) = self.health_fall {
            flags.push(format!("--health-fall={v}"));
        }
        if let Some(v) = self.slow_start_ms {
            flags.push(format!("--slow-start-ms={v}"));
        }
        if let Some(v) = self.default_budget_ms {
            flags.push(format!("--default-budget-ms={v}"));
        }
        if let Some(v) = self.probation_factor {
            flags.push(format!("--probation-factor={v}"));
        }
        if let Some(v) = self.child_k_probability {
            flags.push(format!("--child-k-probability={v}"));
        }
        if let Some(v) = self.early_answer_coverage {
            flags.push(format!("--early-answer-coverage={v}"));
        }
        if let Some(v) = self.early_answer_wait_ms {
            flags.push(format!("--early-answer-wait-ms={v}"));
        }
        flags
    }
}

/// The root node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootNode {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Names of its children.
    pub children: Vec<String>,
    /// Send a query the root has not seen recently to one leaf first, and
    /// fan out only if that leaf survived it (`--canary`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary: bool,
    /// How long a query that passed its canary goes without one, in seconds
    /// (unset: the root's default; 0: every query gets a canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_remember_secs: Option<u64>,
    /// Search in one phase (`--one-phase`): leaves fill titles and snippets
    /// for their own top-k, instead of the root fetching them for the global
    /// top-k (two phases, the default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_phase: bool,
    /// Admission control at the root (on unless `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<bool>,
    /// The admission limit's floor (unset: the root's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_min_limit: Option<usize>,
    /// The admission limit at start (unset: the root's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_initial_limit: Option<usize>,
    /// Result cache size in MiB; 0 turns it off (unset: the node's
    /// default, `--cache-mb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_mb: Option<u64>,
    /// How long a cached answer is served, in seconds (unset: the node's
    /// default, `--cache-ttl-secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl_secs: Option<u64>,
    /// Loads paced by the queries answered meanwhile (on unless `false`,
    /// `--no-load-pace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_pace: Option<bool>,
    /// How many times the idle p99 a query may take during a load (unset:
    /// the root's default, `--load-tolerance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_tolerance: Option<f64>,
    /// The share of queries a load may slow past that (unset: the root's
    /// default, `--load-slow-share`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_slow_share: Option<f64>,
}

/// An inner node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentNode {
    /// Unique name.
    pub name: String,
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Names of its children.
    pub children: Vec<String>,
    /// Result cache size in MiB; 0 turns it off (unset: the node's
    /// default, `--cache-mb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_mb: Option<u64>,
    /// How long a cached answer is served, in seconds (unset: the node's
    /// default, `--cache-ttl-secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl_secs: Option<u64>,
}

/// An inner node's result-cache keys (`cache_mb`, `cache_ttl_secs`) as
/// flags for `searchtree-parent` and `searchtree-root`.
pub fn cache_flags(cache_mb: Option<u64>, cache_ttl_secs: Option<u64>) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(v) = cache_mb {
        flags.push(format!("--cache-mb={v}"));
    }
    if let Some(v) = cache_ttl_secs {
        flags.push(format!("--cache-ttl-secs={v}"));
    }
    flags
}

/// A leaf serving one shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafNode {
    /// Unique name.
    pub name: String,
    /// The shard it serves.
    pub shard: u32,
    /// The shard's directory, relative to the topology file.
    pub index: PathBuf,
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Testing: delay chosen requests by this many milliseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inject_delay_ms: u64,
    /// Testing: probability (0–1) that a request is delayed.
    #[serde(default, skip_serializing_if = "is_zero_f")]
    pub inject_delay_prob: f64,
    /// Testing: probability (0–1) that a request fails with UNAVAILABLE.
    #[serde(default, skip_serializing_if = "is_zero_f")]
    pub inject_error_prob: f64,
    /// Testing: abort the process on a query containing this string (a
    /// query of death, to test canaries and restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject_crash_on: Option<String>,
    /// Shards with fewer documents are scored without block-max pruning
    /// (unset: the leaf's default, `--min-pruned-docs`; 0 prunes every
    /// shard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_pruned_docs: Option<u64>,
    /// Searches estimated at most this run on the thread that received them
    /// (unset: the leaf's default, `--inline-search-cost`; 0 sends every
    /// search to the blocking pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_search_cost: Option<u64>,
    /// Searches run at once (unset: the leaf's default, one per CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_searches: Option<usize>,
    /// Requests that may wait for a search slot before more are refused
    /// with RESOURCE_EXHAUSTED (unset: 64 per slot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_searches: Option<usize>,
    /// Free space kept on the leaf's state directory's file system, a size
    /// (`"512MiB"`) or a percentage (`"5%"`); writing steps that would
    /// leave less are refused (unset: the leaf's default, 5%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_free_disk: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f(n: &f64) -> bool {
    *n == 0.0
}

impl Topology {
    /// Reads a topology file. Relative index paths are resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> anyhow::Result<Topology> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut topology: Topology =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for leaf in &mut topology.leaves {
            if leaf.index.is_relative() {
                leaf.index = base.join(&leaf.index);
            }
        }
        Ok(topology)
    }

    /// The topology as TOML, with a header saying how to read it.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("a topology always serializes");
        format!(
            "# searchtree topology: {} parent(s), {} leaves.\n\
             # Index paths are relative to this file; a port of 0 picks a free port.\n\
             # Start it with: searchtree up --topology <this file>\n\n{body}",
            self.parents.len(),
            self.leaves.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Topology>("[root]\nchildren = []\nchildrn = []\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
