//! The topology `searchtree build` writes beside the shards it builds.

use std::path::Path;

use super::format::{LeafNode, ParentNode, RootNode, Routing, Topology, default_listen};
use super::{TopologyError, invalid};
use crate::build::manifest::shard_dir_name;

impl Topology {
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
                min_pruned_docs: None,
                inline_search_cost: None,
                max_concurrent_searches: None,
                max_queued_searches: None,
                min_free_disk: None,
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
                    cache_mb: None,
                    cache_ttl_secs: None,
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
                one_phase: false,
                admission: None,
                admission_min_limit: None,
                admission_initial_limit: None,
                load_pace: None,
                load_tolerance: None,
                load_slow_share: None,
                cache_mb: None,
                cache_ttl_secs: None,
            },
            parents,
            leaves,
            routing: Routing::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::super::{PlannedNode, Topology};

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
}
