//! `topology.toml`: which nodes make up a tree and how they connect.
//!
//! ```toml
//! [root]
//! listen = "127.0.0.1:0"            # port 0: pick a free port at start-up
//! children = ["parent-0", "parent-1"]
//! # canary = true                   # try unseen queries on one leaf first
//!
//! [[parent]]
//! name = "parent-0"
//! listen = "127.0.0.1:0"
//! children = ["leaf-0", "leaf-1"]   # leaves or other parents
//!
//! [[leaf]]
//! name = "leaf-0"
//! shard = 0
//! index = "shards/shard-000"        # relative to this file
//! listen = "127.0.0.1:0"
//! # Testing only: make this leaf misbehave on purpose.
//! # inject_delay_ms = 2000          # delay chosen requests this long
//! # inject_delay_prob = 0.01        # probability a request is delayed
//! # inject_error_prob = 0.0         # probability a request fails UNAVAILABLE
//! # inject_crash_on = "boom"        # abort on a query containing this
//! ```
//!
//! [`Topology::plan`] validates a topology and orders its nodes so that every
//! node starts after its children, which `searchtree up` relies on to hand
//! each parent its children's actual addresses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::shard_dir_name;

/// The default listen address: loopback, any free port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:0";

fn default_listen() -> String {
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
    /// Time between health checks, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_interval_ms: Option<u64>,
    /// Slow-start window of a returning replica, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start_ms: Option<u64>,
    /// Budget of a request that names none, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_budget_ms: Option<u64>,
    /// Probation threshold (times the peers' p90); 0 turns probation off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probation_factor: Option<f64>,
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
        if let Some(v) = self.health_interval_ms {
            flags.push(format!("--health-interval-ms={v}"));
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
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f(n: &f64) -> bool {
    *n == 0.0
}

/// A topology that is not valid; the message names the offending entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topology: {0}")]
pub struct TopologyError(pub String);

fn invalid<T>(msg: impl Into<String>) -> Result<T, TopologyError> {
    Err(TopologyError(msg.into()))
}

/// One node to start, with everything needed to start it.
#[derive(Debug, Clone, PartialEq)]
pub enum PlannedNode {
    /// A leaf: its shard and absolute index directory.
    Leaf {
        /// Name.
        name: String,
        /// Listen address.
        listen: String,
        /// Shard served.
        shard: u32,
        /// Absolute path of the shard directory.
        index: PathBuf,
        /// Faults to inject, as `--inject-*` flags for the leaf.
        inject: Vec<String>,
    },
    /// A parent or the root: its children, each with the shards below it.
    Inner {
        /// Name (`root` for the root).
        name: String,
        /// Listen address.
        listen: String,
        /// Children: the names of one child's replicas (one name for a
        /// child without replicas), with the shards below it.
        children: Vec<(Vec<String>, Vec<u32>)>,
        /// Whether this is the root.
        is_root: bool,
        /// Flags from the topology's `[routing]` table (and, for the root, its
        /// own keys such as `canary`).
        routing: Vec<String>,
    },
}

impl PlannedNode {
    /// The node's name.
    pub fn name(&self) -> &str {
        match self {
            PlannedNode::Leaf { name, .. } | PlannedNode::Inner { name, .. } => name,
        }
    }
}

/// A validated topology, nodes in start order: every node after its children,
/// the root last.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Nodes in start order.
    pub nodes: Vec<PlannedNode>,
    /// Shards in the tree (`0..num_shards`).
    pub num_shards: u32,
}

/// The name the root goes by in messages.
pub const ROOT_NAME: &str = "root";

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

    /// The topology `searchtree build` writes: the root over `parents`
    /// parents (or directly over the leaves when 0), shards split evenly and
    /// contiguously among the parents, `replicas` leaves per shard, every
    /// node on `127.0.0.1:0`.
    pub fn generate(
        num_shards: u32,
        parents: u32,
        replicas: u32,
    ) -> Result<Topology, TopologyError> {
        if replicas == 0 {
            return invalid("a shard needs at least one replica");
        }
        if num_shards == 0 {
            return invalid("a tree needs at least one shard");
        }
        if parents > num_shards {
            return invalid(format!(
                "{parents} parents over {num_shards} shards would leave a parent without children; use at most {num_shards}"
            ));
        }
        let leaf_name = |s: u32, r: u32| {
            if replicas == 1 {
                format!("leaf-{s}")
            } else {
                format!("leaf-{s}-{r}")
            }
        };
        let leaves: Vec<LeafNode> = (0..num_shards)
            .flat_map(|s| (0..replicas).map(move |r| (s, r)))
            .map(|(s, r)| LeafNode {
                name: leaf_name(s, r),
                shard: s,
                index: Path::new("shards").join(shard_dir_name(s)),
                listen: default_listen(),
                inject_delay_ms: 0,
                inject_delay_prob: 0.0,
                inject_error_prob: 0.0,
                inject_crash_on: None,
            })
            .collect();
        let parents: Vec<ParentNode> = (0..parents)
            .map(|p| {
                let (lo, hi) = (p * num_shards / parents, (p + 1) * num_shards / parents);
                ParentNode {
                    name: format!("parent-{p}"),
                    listen: default_listen(),
                    children: (lo..hi)
                        .flat_map(|s| (0..replicas).map(move |r| leaf_name(s, r)))
                        .collect(),
                }
            })
            .collect();
        let root_children = if parents.is_empty() {
            leaves.iter().map(|l| l.name.clone()).collect()
        } else {
            parents.iter().map(|p| p.name.clone()).collect()
        };
        Ok(Topology {
            root: RootNode {
                listen: default_listen(),
                children: root_children,
                canary: false,
                canary_remember_secs: None,
            },
            parents,
            leaves,
            routing: Routing::default(),
        })
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

    /// Validates the tree's shape (no filesystem access) and orders its
    /// nodes for start-up.
    pub fn plan(&self) -> Result<Plan, TopologyError> {
        let mut kinds: HashMap<&str, &'static str> = HashMap::new();
        for (name, kind) in self
            .leaves
            .iter()
            .map(|l| (l.name.as_str(), "leaf"))
            .chain(self.parents.iter().map(|p| (p.name.as_str(), "parent")))
        {
            if name.is_empty() || name == ROOT_NAME {
                return invalid(format!("{kind} name {name:?} is reserved or empty"));
            }
            if kinds.insert(name, kind).is_some() {
                return invalid(format!("the name {name:?} is used by two nodes"));
            }
        }
        let parents: HashMap<&str, &ParentNode> =
            self.parents.iter().map(|p| (p.name.as_str(), p)).collect();
        let leaves: HashMap<&str, &LeafNode> =
            self.leaves.iter().map(|l| (l.name.as_str(), l)).collect();

        // Every child exists and has exactly one parent.
        let mut parent_of: HashMap<&str, &str> = HashMap::new();
        let inner = std::iter::once((ROOT_NAME, &self.root.children))
            .chain(self.parents.iter().map(|p| (p.name.as_str(), &p.children)));
        for (name, children) in inner {
            let what = describe(name, &kinds);
            if children.is_empty() {
                return invalid(format!("{what} has no children"));
            }
            for child in children {
                if !kinds.contains_key(child.as_str()) {
                    return invalid(format!("{what}: unknown child {child:?}"));
                }
                if let Some(other) = parent_of.insert(child, name) {
                    return invalid(format!(
                        "{} is a child of both {} and {}",
                        describe(child, &kinds),
                        describe(other, &kinds),
                        what
                    ));
                }
            }
        }

        // Walk down from the root: find cycles and order nodes children-first.
        let mut order = Vec::new();
        let mut state: HashMap<&str, bool> = HashMap::new(); // false: on the path, true: done
        let mut path = vec![ROOT_NAME];
        for child in &self.root.children {
            visit(child, &parents, &mut state, &mut path, &mut order)?;
        }
        let mut unreached: Vec<&str> = kinds
            .keys()
            .copied()
            .filter(|n| !state.contains_key(n))
            .collect();
        unreached.sort_unstable();
        if let Some(&name) = unreached.first() {
            // Follow the parents up: either they loop, or they stop short of the root.
            let mut chain = vec![name];
            let mut at = name;
            while let Some(&up) = parent_of.get(at) {
                if let Some(pos) = chain.iter().position(|n| *n == up) {
                    let mut cycle: Vec<&str> = chain[pos..].to_vec();
                    cycle.push(up);
                    cycle.reverse();
                    return invalid(format!("cycle: {}", cycle.join(" -> ")));
                }
                chain.push(up);
                at = up;
            }
            return invalid(format!(
                "{} is not below the root (nothing would send it queries)",
                describe(name, &kinds)
            ));
        }

        // Shards: each of 0..n served by one leaf, or by replicas that are
        // children of the same node (which chooses among them).
        let mut served: BTreeMap<u32, &str> = BTreeMap::new();
        for leaf in &self.leaves {
            if let Some(other) = served.insert(leaf.shard, &leaf.name)
                && parent_of.get(other) != parent_of.get(leaf.name.as_str())
            {
                return invalid(format!(
                    "shard {} is listed twice, under different parents: by leaf {other:?} and leaf {:?} \
                     (replicas of a shard must be children of the same node)",
                    leaf.shard, leaf.name
                ));
            }
        }
        let num_shards = served.keys().next_back().map_or(0, |m| m + 1);
        if let Some(missing) = (0..num_shards).find(|s| !served.contains_key(s)) {
            return invalid(format!(
                "shard {missing} is missing: no leaf serves it (leaves serve shards {:?})",
                served.keys().collect::<Vec<_>>()
            ));
        }

        // Shards below each node, for the children specs.
        let mut below: HashMap<&str, BTreeSet<u32>> = HashMap::new();
        let mut nodes = Vec::new();
        for name in order {
            if let Some(leaf) = leaves.get(name) {
                below.insert(name, BTreeSet::from([leaf.shard]));
                nodes.push(PlannedNode::Leaf {
                    name: leaf.name.clone(),
                    listen: leaf.listen.clone(),
                    shard: leaf.shard,
                    index: leaf.index.clone(),
                    inject: leaf.inject_flags()?,
                });
            } else {
                let p = parents[name];
                let mut node = inner_node(name, &p.listen, &p.children, &leaves, &mut below, false);
                set_routing(&mut node, self.routing.flags());
                nodes.push(node);
            }
        }
        let mut root = inner_node(
            ROOT_NAME,
            &self.root.listen,
            &self.root.children,
            &leaves,
            &mut below,
            true,
        );
        let mut root_flags = self.routing.flags();
        if self.root.canary {
            root_flags.push("--canary".into());
        }
        if let Some(secs) = self.root.canary_remember_secs {
            root_flags.push(format!("--canary-remember-secs={secs}"));
        }
        set_routing(&mut root, root_flags);
        nodes.push(root);
        Ok(Plan { nodes, num_shards })
    }
}

impl LeafNode {
    /// The leaf's fault-injection settings as command-line flags, checked.
    fn inject_flags(&self) -> Result<Vec<String>, TopologyError> {
        let mut flags = Vec::new();
        for (key, p) in [
            ("inject_delay_prob", self.inject_delay_prob),
            ("inject_error_prob", self.inject_error_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return invalid(format!(
                    "leaf {:?}: {key} = {p} is not a probability between 0 and 1",
                    self.name
                ));
            }
        }
        if self.inject_delay_ms > 0 && self.inject_delay_prob > 0.0 {
            flags.push(format!("--inject-delay-ms={}", self.inject_delay_ms));
            flags.push(format!("--inject-delay-prob={}", self.inject_delay_prob));
        }
        if self.inject_error_prob > 0.0 {
            flags.push(format!("--inject-error-prob={}", self.inject_error_prob));
        }
        if let Some(term) = &self.inject_crash_on {
            if term.is_empty() {
                return invalid(format!(
                    "leaf {:?}: inject_crash_on must not be empty",
                    self.name
                ));
            }
            flags.push(format!("--inject-crash-on={term}"));
        }
        Ok(flags)
    }
}

fn describe(name: &str, kinds: &HashMap<&str, &'static str>) -> String {
    match kinds.get(name) {
        Some(kind) => format!("{kind} {name:?}"),
        None => "the root".into(),
    }
}

fn visit<'a>(
    name: &'a str,
    parents: &HashMap<&str, &'a ParentNode>,
    state: &mut HashMap<&'a str, bool>,
    path: &mut Vec<&'a str>,
    order: &mut Vec<&'a str>,
) -> Result<(), TopologyError> {
    match state.get(name) {
        Some(true) => return Ok(()),
        Some(false) => {
            let start = path.iter().position(|n| *n == name).unwrap_or(0);
            let mut cycle = path[start..].to_vec();
            cycle.push(name);
            return invalid(format!("cycle: {}", cycle.join(" -> ")));
        }
        None => {}
    }
    state.insert(name, false);
    path.push(name);
    if let Some(parent) = parents.get(name) {
        for child in &parent.children {
            visit(child, parents, state, path, order)?;
        }
    }
    path.pop();
    state.insert(name, true);
    order.push(name);
    Ok(())
}

fn set_routing(node: &mut PlannedNode, flags: Vec<String>) {
    if let PlannedNode::Inner { routing, .. } = node {
        *routing = flags;
    }
}

/// An inner node's plan: leaf children serving the same shard become one
/// child with several replicas.
fn inner_node<'a>(
    name: &'a str,
    listen: &str,
    children: &[String],
    leaves: &HashMap<&str, &LeafNode>,
    below: &mut HashMap<&'a str, BTreeSet<u32>>,
    is_root: bool,
) -> PlannedNode {
    let mut grouped: Vec<(Vec<String>, Vec<u32>)> = Vec::new();
    let mut by_shard: HashMap<u32, usize> = HashMap::new();
    for child in children {
        let shards: Vec<u32> = below[child.as_str()].iter().copied().collect();
        if let Some(leaf) = leaves.get(child.as_str()) {
            if let Some(&i) = by_shard.get(&leaf.shard) {
                grouped[i].0.push(child.clone());
                continue;
            }
            by_shard.insert(leaf.shard, grouped.len());
        }
        grouped.push((vec![child.clone()], shards));
    }
    let all = grouped
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .collect();
    below.insert(name, all);
    PlannedNode::Inner {
        name: name.to_string(),
        listen: listen.to_string(),
        children: grouped,
        is_root,
        routing: Vec::new(),
    }
}

/// Checks that every leaf's index directory holds the shard the topology
/// says it does, and that all of them come from the same build.
pub fn check_indexes(plan: &Plan) -> Result<(), TopologyError> {
    let mut build: Option<(String, u32, &str)> = None;
    for node in &plan.nodes {
        let PlannedNode::Leaf {
            name, shard, index, ..
        } = node
        else {
            continue;
        };
        if !index.is_dir() {
            return invalid(format!(
                "leaf {name:?}: index directory {} does not exist",
                index.display()
            ));
        }
        let meta = searchtree_leaf::shard::read_meta(index)
            .map_err(|e| TopologyError(format!("leaf {name:?}: {e}")))?;
        if meta.shard != *shard {
            return invalid(format!(
                "leaf {name:?} is said to serve shard {shard} but {} holds shard {}",
                index.display(),
                meta.shard
            ));
        }
        if meta.num_shards != plan.num_shards {
            return invalid(format!(
                "leaf {name:?}: {} is one of {} shards but the topology has {}",
                index.display(),
                meta.num_shards,
                plan.num_shards
            ));
        }
        match &build {
            Some((sum, _, other)) if *sum != meta.input_checksum => {
                return invalid(format!(
                    "leaves {other:?} and {name:?} serve shards of different builds ({sum} vs {})",
                    meta.input_checksum
                ));
            }
            Some(_) => {}
            None => build = Some((meta.input_checksum.clone(), meta.shard, name)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Topology {
        toml::from_str(text).unwrap()
    }

    fn error(text: &str) -> String {
        parse(text).plan().unwrap_err().0
    }

    fn leaf(name: &str, shard: u32) -> String {
        format!("[[leaf]]\nname = \"{name}\"\nshard = {shard}\nindex = \"x\"\n")
    }

    #[test]
    fn generated_topology_round_trips_and_plans_children_first() {
        let t = Topology::generate(4, 2, 1).unwrap();
        let text = t.to_toml();
        assert_eq!(parse(&text), t);
        let plan = t.plan().unwrap();
        assert_eq!(plan.num_shards, 4);
        let names: Vec<&str> = plan.nodes.iter().map(PlannedNode::name).collect();
        assert_eq!(
            names,
            [
                "leaf-0", "leaf-1", "parent-0", "leaf-2", "leaf-3", "parent-1", "root"
            ]
        );
        let PlannedNode::Inner { children, .. } = &plan.nodes[6] else {
            panic!()
        };
        assert_eq!(
            children,
            &[
                (vec!["parent-0".into()], vec![0, 1]),
                (vec!["parent-1".into()], vec![2, 3])
            ]
        );
    }

    #[test]
    fn generate_without_parents_hangs_leaves_off_the_root() {
        let t = Topology::generate(3, 0, 1).unwrap();
        assert_eq!(t.root.children, ["leaf-0", "leaf-1", "leaf-2"]);
        assert!(Topology::generate(2, 3, 1).is_err());
        assert!(Topology::generate(0, 0, 1).is_err());
        assert!(Topology::generate(2, 1, 0).is_err());
    }

    #[test]
    fn replicas_of_a_shard_become_one_child_with_several_addresses() {
        let mut t = Topology::generate(4, 2, 2).unwrap();
        t.routing.replica_policy = Some("round_robin".into());
        assert_eq!(parse(&t.to_toml()), t);
        assert_eq!(
            t.parents[0].children,
            ["leaf-0-0", "leaf-0-1", "leaf-1-0", "leaf-1-1"]
        );
        let plan = t.plan().unwrap();
        assert_eq!(plan.num_shards, 4);
        let PlannedNode::Inner {
            children, routing, ..
        } = plan.nodes.iter().find(|n| n.name() == "parent-0").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            children,
            &[
                (vec!["leaf-0-0".into(), "leaf-0-1".into()], vec![0]),
                (vec!["leaf-1-0".into(), "leaf-1-1".into()], vec![1])
            ]
        );
        assert_eq!(routing, &["--replica-policy=round_robin"]);
        // Replicas under different parents cannot be chosen among: refused.
        let mut split = t.clone();
        split.parents[0].children.retain(|c| c != "leaf-0-1");
        split.parents[1].children.push("leaf-0-1".into());
        assert!(
            split
                .plan()
                .unwrap_err()
                .0
                .contains("under different parents")
        );
    }

    #[test]
    fn deep_trees_are_fine() {
        let text = format!(
            "[root]\nchildren = [\"top\"]\n[[parent]]\nname = \"top\"\nchildren = [\"mid\", \"leaf-2\"]\n\
             [[parent]]\nname = \"mid\"\nchildren = [\"leaf-0\", \"leaf-1\"]\n{}{}{}",
            leaf("leaf-0", 0),
            leaf("leaf-1", 1),
            leaf("leaf-2", 2)
        );
        let plan = parse(&text).plan().unwrap();
        let names: Vec<&str> = plan.nodes.iter().map(PlannedNode::name).collect();
        assert_eq!(names, ["leaf-0", "leaf-1", "mid", "leaf-2", "top", "root"]);
    }

    #[test]
    fn unknown_child_is_named() {
        let e = error(&format!(
            "[root]\nchildren = [\"leaf-0\", \"leaf-9\"]\n{}",
            leaf("leaf-0", 0)
        ));
        assert!(e.contains("unknown child \"leaf-9\""), "{e}");
    }

    #[test]
    fn cycles_are_named() {
        let e = error(&format!(
            "[root]\nchildren = [\"leaf-0\"]\n[[parent]]\nname = \"a\"\nchildren = [\"b\"]\n\
             [[parent]]\nname = \"b\"\nchildren = [\"a\"]\n{}",
            leaf("leaf-0", 0)
        ));
        assert_eq!(e, "cycle: a -> b -> a");
        let e = error(&format!(
            "[root]\nchildren = [\"leaf-0\"]\n[[parent]]\nname = \"a\"\nchildren = [\"a\"]\n{}",
            leaf("leaf-0", 0)
        ));
        assert_eq!(e, "cycle: a -> a");
    }

    #[test]
    fn nodes_not_below_the_root_are_named() {
        let e = error(&format!(
            "[root]\nchildren = [\"leaf-0\"]\n{}{}",
            leaf("leaf-0", 0),
            leaf("leaf-1", 1)
        ));
        assert!(e.contains("leaf \"leaf-1\" is not below the root"), "{e}");
    }

    #[test]
    fn shards_missing_or_twice_are_named() {
        let e = error(&format!(
            "[root]\nchildren = [\"leaf-0\", \"leaf-2\"]\n{}{}",
            leaf("leaf-0", 0),
            leaf("leaf-2", 2)
        ));
        assert!(e.contains("shard 1 is missing"), "{e}");
        let e = error(&format!(
            "[root]\nchildren = [\"p\", \"l1\"]\n[[parent]]\nname = \"p\"\nchildren = [\"l0\"]\n{}{}",
            leaf("l0", 0),
            leaf("l1", 0)
        ));
        assert!(
            e.contains("shard 0 is listed twice, under different parents"),
            "{e}"
        );
        // Under the same node, two leaves of a shard are replicas: fine.
        let ok = parse(&format!(
            "[root]\nchildren = [\"l0\", \"l1\"]\n{}{}",
            leaf("l0", 0),
            leaf("l1", 0)
        ));
        assert_eq!(ok.plan().unwrap().num_shards, 1);
    }

    #[test]
    fn a_node_with_two_parents_or_none_is_refused() {
        let e = error(&format!(
            "[root]\nchildren = [\"p\", \"leaf-0\"]\n[[parent]]\nname = \"p\"\nchildren = [\"leaf-0\"]\n{}",
            leaf("leaf-0", 0)
        ));
        assert!(e.contains("child of both"), "{e}");
        let e = error(&format!(
            "[root]\nchildren = [\"leaf-0\"]\n[[parent]]\nname = \"p\"\nchildren = []\n{}",
            leaf("leaf-0", 0)
        ));
        assert!(e.contains("parent \"p\" has no children"), "{e}");
    }

    #[test]
    fn fault_injection_becomes_leaf_flags() {
        let t = parse(
            "[root]\nchildren = [\"leaf-0\"]\n[[leaf]]\nname = \"leaf-0\"\nshard = 0\nindex = \"x\"\n\
             inject_delay_ms = 2000\ninject_delay_prob = 0.5\ninject_error_prob = 0.1\n",
        );
        let PlannedNode::Leaf { inject, .. } = &t.plan().unwrap().nodes[0] else {
            panic!()
        };
        assert_eq!(
            inject,
            &[
                "--inject-delay-ms=2000",
                "--inject-delay-prob=0.5",
                "--inject-error-prob=0.1"
            ]
        );
        let mut bad = t.clone();
        bad.leaves[0].inject_error_prob = 2.0;
        assert!(bad.plan().unwrap_err().0.contains("inject_error_prob = 2"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Topology>("[root]\nchildren = []\nchildrn = []\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn missing_index_directory_is_named() {
        let t = parse(&format!(
            "[root]\nchildren = [\"leaf-0\"]\n{}",
            "[[leaf]]\nname = \"leaf-0\"\nshard = 0\nindex = \"/nonexistent/shard\"\n"
        ));
        let e = check_indexes(&t.plan().unwrap()).unwrap_err().0;
        assert!(
            e.contains("leaf \"leaf-0\": index directory /nonexistent/shard does not exist"),
            "{e}"
        );
    }
}
