//! One contract between `up` and the nodes it starts: a node's command line
//! is built in one place ([`PlannedNode::args`]) from the nodes' own types
//! (`ChildSpec` for `--child`), and checked with that node's own flag parser
//! and validation ([`check_args`]) before anything starts. A typo in a
//! replica policy or an out-of-range hedge ratio is then a topology error
//! that names the node, not a process that dies at start-up.

use std::collections::HashMap;

use clap::Parser;
use searchtree_leaf::config::LeafConfig;
use searchtree_parent::ChildSpec;
use searchtree_parent::config::{InnerArgs, ParentConfig};
use searchtree_root::config::RootConfig;

use super::{Plan, PlannedNode, TopologyError};

/// The addresses that stand in for the children's while checking flags
/// (ports are known only once the children are up): one per node, distinct.
fn placeholder_addrs(plan: &Plan) -> HashMap<&str, String> {
    plan.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name(), format!("127.0.0.1:{}", i + 1)))
        .collect()
}

impl PlannedNode {
    /// The node's command-line arguments (without the program name), each
    /// child's replicas named by `addr_of(name)`.
    pub fn args(&self, addr_of: impl Fn(&str) -> Option<String>) -> Vec<String> {
        match self {
            PlannedNode::Leaf {
                listen,
                index,
                inject,
                data_dir,
                ..
            } => {
                let mut args = vec![
                    "--index".to_string(),
                    index.display().to_string(),
                    "--listen".to_string(),
                    listen.clone(),
                ];
                if let Some(dir) = data_dir {
                    args.push("--data-dir".into());
                    args.push(dir.display().to_string());
                }
                args.extend(inject.iter().cloned());
                args
            }
            PlannedNode::Inner {
                listen,
                children,
                routing,
                ..
            } => {
                let mut args = vec!["--listen".to_string(), listen.clone()];
                args.extend(routing.iter().cloned());
                for (replicas, shards) in children {
                    let spec = ChildSpec {
                        shards: shards.clone(),
                        addrs: replicas.iter().filter_map(|r| addr_of(r)).collect(),
                    };
                    args.push("--child".into());
                    args.push(spec.to_string());
                }
                args
            }
        }
    }
}

/// Parses every planned node's arguments as that node will, and runs the
/// node's own checks on them (faults, replica settings, timing, query
/// limits), so that `up` refuses a bad topology before starting anything.
pub fn check_args(plan: &Plan) -> Result<(), TopologyError> {
    let addrs = placeholder_addrs(plan);
    for node in &plan.nodes {
        let args = node.args(|name| Some(addrs[name].clone()));
        check_node(node, args).map_err(|e| TopologyError(format!("{}: {e}", node.name())))?;
    }
    Ok(())
}

fn check_node(node: &PlannedNode, args: Vec<String>) -> Result<(), String> {
    match node {
        PlannedNode::Leaf { .. } => {
            let config = LeafConfig::try_parse_from(with_program("searchtree-leaf", args))
                .map_err(first_line)?;
            config.faults()?;
            config.query_limits.limits()?;
        }
        PlannedNode::Inner { is_root: true, .. } => {
            let config = RootConfig::try_parse_from(with_program("searchtree-root", args))
                .map_err(first_line)?;
            check_inner(&config.inner)?;
            config.admission().map_err(|e| e.to_string())?;
            config.load_pace().map_err(|e| e.to_string())?;
        }
        PlannedNode::Inner { .. } => {
            let config = ParentConfig::try_parse_from(with_program("searchtree-parent", args))
                .map_err(first_line)?;
            check_inner(&config.inner)?;
        }
    }
    Ok(())
}

fn check_inner(inner: &InnerArgs) -> Result<(), String> {
    inner.replica_config().map_err(|e| e.to_string())?;
    inner.timing().map_err(|e| e.to_string())?;
    inner.cache().map_err(|e| e.to_string())?;
    inner.query_limits.limits()?;
    Ok(())
}

fn with_program(program: &str, args: Vec<String>) -> Vec<String> {
    std::iter::once(program.to_string()).chain(args).collect()
}

/// clap's message without its usage lines.
fn first_line(err: clap::Error) -> String {
    let text = err.to_string();
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{error, parse};

    const TREE: &str = "[root]\nchildren = [\"leaf-0\", \"leaf-1\"]\n\
        [[leaf]]\nname = \"leaf-0\"\nshard = 0\nindex = \"s0\"\n\
        [[leaf]]\nname = \"leaf-1\"\nshard = 1\nindex = \"s1\"\n";

    #[test]
    fn node_flags_are_checked_by_the_nodes_own_parsers_before_start() {
        assert!(parse(TREE).plan().is_ok());
        let bad_policy = error(&format!("{TREE}[routing]\nreplica_policy = \"fastest\"\n"));
        assert!(
            bad_policy.contains("root") && bad_policy.contains("fastest"),
            "{bad_policy}"
        );
        let bad_ratio = error(&format!("{TREE}[routing]\nhedge_ratio = 3.0\n"));
        assert!(bad_ratio.contains("--hedge-ratio 3"), "{bad_ratio}");
        let bad_retries = error(&format!("{TREE}[routing]\nretry_ratio = -0.5\n"));
        assert!(bad_retries.contains("--retry-ratio -0.5"), "{bad_retries}");
        let busy_checks = error(&format!("{TREE}[routing]\nhealth_interval_ms = 0\n"));
        assert!(busy_checks.contains("health-interval-ms"), "{busy_checks}");
        for (listen, should_say) in [
            ("127.0.0.1:70000", "from 0 to 65535"),
            ("nonsense", "not HOST:PORT"),
            (":7000", "no host"),
        ] {
            let tree = TREE.replacen("[root]\n", &format!("[root]\nlisten = \"{listen}\"\n"), 1);
            let err = error(&tree);
            assert!(
                err.contains("root") && err.contains(should_say),
                "{listen}: {err}"
            );
        }
    }

    #[test]
    fn cache_keys_reach_each_inner_node_and_are_checked() {
        let tree = "[root]\nchildren = [\"parent-0\"]\ncache_mb = 0\n\
            [[parent]]\nname = \"parent-0\"\nchildren = [\"leaf-0\"]\n\
            cache_mb = 16\ncache_ttl_secs = 5\n\
            [[leaf]]\nname = \"leaf-0\"\nshard = 0\nindex = \"s0\"\n";
        let plan = parse(tree).plan().unwrap();
        let args = |name: &str| {
            let node = plan.nodes.iter().find(|n| n.name() == name).unwrap();
            node.args(|_| Some("127.0.0.1:1".into()))
        };
        assert!(args("root").contains(&"--cache-mb=0".to_string()));
        let parent = args("parent-0");
        assert!(parent.contains(&"--cache-mb=16".to_string()), "{parent:?}");
        assert!(parent.contains(&"--cache-ttl-secs=5".to_string()));
        let bad_ttl = error(&tree.replace("cache_ttl_secs = 5", "cache_ttl_secs = 0"));
        assert!(
            bad_ttl.contains("parent-0") && bad_ttl.contains("--cache-ttl-secs"),
            "{bad_ttl}"
        );
        // The cache crate panics on a time-to-live past 1,000 years: the
        // node refuses it first, and `up` before starting anything.
        let huge_ttl = error(&tree.replace("cache_ttl_secs = 5", "cache_ttl_secs = 40000000000"));
        assert!(
            huge_ttl.contains("parent-0") && huge_ttl.contains("between 1 and 86400"),
            "{huge_ttl}"
        );
    }

    #[test]
    fn load_pace_keys_reach_the_root_and_are_checked() {
        let tree = TREE.replacen(
            "[root]\n",
            "[root]\nload_tolerance = 1.5\nload_slow_share = 0.02\n",
            1,
        );
        let plan = parse(&tree).plan().unwrap();
        let root = plan.nodes.last().unwrap();
        let args = root.args(|_| Some("127.0.0.1:1".into()));
        assert!(
            args.contains(&"--load-tolerance=1.5".to_string()),
            "{args:?}"
        );
        assert!(
            args.contains(&"--load-slow-share=0.02".to_string()),
            "{args:?}"
        );
        assert!(!args.contains(&"--no-load-pace".to_string()));
        let off = TREE.replacen("[root]\n", "[root]\nload_pace = false\n", 1);
        let off = parse(&off).plan().unwrap();
        let args = off
            .nodes
            .last()
            .unwrap()
            .args(|_| Some("127.0.0.1:1".into()));
        assert!(args.contains(&"--no-load-pace".to_string()), "{args:?}");
        let lax = error(&tree.replace("load_tolerance = 1.5", "load_tolerance = 0.5"));
        assert!(
            lax.contains("root") && lax.contains("--load-tolerance 0.5 must be at least 1"),
            "{lax}"
        );
        let all = error(&tree.replace("load_slow_share = 0.02", "load_slow_share = 1.0"));
        assert!(all.contains("--load-slow-share 1 must be above 0"), "{all}");
    }

    #[test]
    fn a_leafs_slots_queue_and_inline_cost_reach_it_and_are_checked() {
        let tree = TREE.replace(
            "index = \"s0\"\n",
            "index = \"s0\"\nmax_concurrent_searches = 1\nmax_queued_searches = 3\n\
             inline_search_cost = 0\n",
        );
        let plan = parse(&tree).plan().unwrap();
        let leaf = plan.nodes.iter().find(|n| n.name() == "leaf-0").unwrap();
        let args = leaf.args(|_| Some("127.0.0.1:1".into()));
        assert!(
            args.contains(&"--max-concurrent-searches=1".to_string()),
            "{args:?}"
        );
        assert!(
            args.contains(&"--max-queued-searches=3".to_string()),
            "{args:?}"
        );
        assert!(
            args.contains(&"--inline-search-cost=0".to_string()),
            "{args:?}"
        );
        let no_slot =
            error(&tree.replace("max_concurrent_searches = 1", "max_concurrent_searches = 0"));
        assert!(
            no_slot.contains("leaf-0") && no_slot.contains("at least 1"),
            "{no_slot}"
        );
    }

    #[test]
    fn children_are_passed_as_the_parents_own_spec_type() {
        let plan = parse(TREE).plan().unwrap();
        let root = plan.nodes.last().unwrap();
        let args = root.args(|name| Some(format!("{name}.example:7000")));
        assert!(
            args.windows(2)
                .any(|w| w == ["--child", "0@leaf-0.example:7000"])
        );
        assert!(
            args.windows(2)
                .any(|w| w == ["--child", "1@leaf-1.example:7000"])
        );
    }
}
