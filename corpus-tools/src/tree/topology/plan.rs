//! Validating a topology's shape and ordering its nodes for start-up:
//! every node after its children, the root last, replicas of a shard
//! grouped into one child of the node above them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::format::{LeafNode, ParentNode, Topology, cache_flags};
use super::{TopologyError, invalid};

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
        /// The leaf's own state (`--data-dir`): versions loaded and
        /// published since the build. `None`: it serves its build read-only.
        data_dir: Option<PathBuf>,
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

    /// The address the node listens on, as planned (port 0: any).
    pub fn listen(&self) -> &str {
        match self {
            PlannedNode::Leaf { listen, .. } | PlannedNode::Inner { listen, .. } => listen,
        }
    }

    /// The node's role: `leaf`, `parent` or `root`.
    pub fn role(&self) -> &'static str {
        match self {
            PlannedNode::Leaf { .. } => "leaf",
            PlannedNode::Inner { is_root: true, .. } => "root",
            PlannedNode::Inner { .. } => "parent",
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

impl Plan {
    /// Gives every leaf a state directory of its own, `dir/<leaf name>`:
    /// the same on every restart of the leaf, so what it loaded and
    /// published survives it.
    pub fn set_state_dir(&mut self, dir: &Path) {
        for node in &mut self.nodes {
            if let PlannedNode::Leaf { name, data_dir, .. } = node {
                *data_dir = Some(dir.join(name.as_str()));
            }
        }
    }
}

/// The name the root goes by in messages.
pub const ROOT_NAME: &str = "root";

/// The longest node name, in bytes.
const MAX_NAME_BYTES: usize = 64;

/// Whether `name` can stand as one path component under the state
/// directory as it is: no separator, no `.` or `..`, nothing hidden, and
/// no two names that differ only in how they spell a path (`l1`, `./l1`).
fn plain_name(name: &str) -> bool {
    name.len() <= MAX_NAME_BYTES
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Topology {
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
            if !plain_name(name) {
                return invalid(format!(
                    "{kind} name {name:?} must be at most {MAX_NAME_BYTES} letters, digits, '-', '_' \
                     and '.', not starting with '.': it names the leaf's state directory, its log \
                     lines and its entry in the nodes file"
                ));
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
                    data_dir: None,
                });
            } else {
                let p = parents[name];
                let mut node = inner_node(name, &p.listen, &p.children, &leaves, &mut below, false);
                let mut flags = self.routing.flags();
                flags.extend(cache_flags(p.cache_mb, p.cache_ttl_secs));
                set_routing(&mut node, flags);
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
        root_flags.extend(cache_flags(self.root.cache_mb, self.root.cache_ttl_secs));
        if self.root.canary {
            root_flags.push("--canary".into());
        }
        if let Some(secs) = self.root.canary_remember_secs {
            root_flags.push(format!("--canary-remember-secs={secs}"));
        }
        if self.root.one_phase {
            root_flags.push("--one-phase".into());
        }
        if self.root.admission == Some(false) {
            root_flags.push("--no-admission".into());
        }
        if let Some(n) = self.root.admission_min_limit {
            root_flags.push(format!("--admission-min-limit={n}"));
        }
        if let Some(n) = self.root.admission_initial_limit {
            root_flags.push(format!("--admission-initial-limit={n}"));
        }
        if self.root.load_pace == Some(false) {
            root_flags.push("--no-load-pace".into());
        }
        if let Some(x) = self.root.load_tolerance {
            root_flags.push(format!("--load-tolerance={x}"));
        }
        if let Some(x) = self.root.load_slow_share {
            root_flags.push(format!("--load-slow-share={x}"));
        }
        set_routing(&mut root, root_flags);
        nodes.push(root);
        let plan = Plan { nodes, num_shards };
        super::check_args(&plan)?;
        super::addresses::check_distinct(&plan)?;
        Ok(plan)
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
        if let Some(docs) = self.min_pruned_docs {
            flags.push(format!("--min-pruned-docs={docs}"));
        }
        if let Some(cost) = self.inline_search_cost {
            flags.push(format!("--inline-search-cost={cost}"));
        }
        if let Some(n) = self.max_concurrent_searches {
            flags.push(format!("--max-concurrent-searches={n}"));
        }
        if let Some(n) = self.max_queued_searches {
            flags.push(format!("--max-queued-searches={n}"));
        }
        if let Some(floor) = &self.min_free_disk {
            flags.push(format!("--min-free-disk={floor}"));
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

#[cfg(test)]
mod tests {
    use super::super::tests::{error, leaf, parse};
    use super::*;

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
    fn names_that_are_not_one_plain_path_component_are_refused() {
        for name in [
            "../../escape",
            "/tmp/abs",
            "./l1",
            "a/b",
            ".hidden",
            "..",
            "sp ace",
        ] {
            let e = error(&format!("[root]\nchildren = [{name:?}]\n{}", leaf(name, 0)));
            assert!(e.contains("letters, digits"), "{name}: {e}");
        }
        for name in ["leaf-0", "eu_west.1", "L0"] {
            let text = format!("[root]\nchildren = [{name:?}]\n{}", leaf(name, 0));
            assert!(parse(&text).plan().is_ok(), "{name}");
        }
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
    fn each_leaf_gets_a_state_directory_named_after_it() {
        let mut plan = parse(&format!(
            "[root]\nchildren = [\"leaf-0\", \"leaf-1\"]\n{}{}",
            leaf("leaf-0", 0),
            leaf("leaf-1", 1)
        ))
        .plan()
        .unwrap();
        let leaf_args = |plan: &Plan| plan.nodes[1].args(|_| Some(String::new()));
        assert!(!leaf_args(&plan).contains(&"--data-dir".to_string()));
        plan.set_state_dir(Path::new("/srv/tree/state"));
        let args = leaf_args(&plan);
        let at = args.iter().position(|a| a == "--data-dir").unwrap();
        assert_eq!(args[at + 1], "/srv/tree/state/leaf-1");
        let PlannedNode::Leaf { data_dir, .. } = &plan.nodes[0] else {
            panic!()
        };
        assert_eq!(
            data_dir.as_deref(),
            Some(Path::new("/srv/tree/state/leaf-0"))
        );
        assert!(
            matches!(&plan.nodes[2], PlannedNode::Inner { .. }),
            "the root has no state directory"
        );
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
}
