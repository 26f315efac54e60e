//! Where the tail comes from: with profiled requests (`--profile-tail`),
//! each answer's slowest path through the tree — at every level, the child
//! whose round trip was longest — split into what each level spent on its
//! own and what each hop cost. Over the requests at or above the p99, the
//! report says which leaf (shard and replica) was most often on that path
//! and how the time divides between the levels.

use std::collections::BTreeMap;

use searchtree_proto::pb::NodeProfile;
use serde::Serialize;

/// One answer's slowest path: its latency, the leaf at the end of the path,
/// and the time spent per part, µs.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowPath {
    /// The request's latency, µs (as the load tester measured it).
    pub latency_us: u64,
    /// The leaf at the end of the slowest path: `shard N @ADDRESS`.
    pub leaf: String,
    /// Time per part of the path, µs, e.g. `root self`, `hop root→parent`,
    /// `parent self`, `hop parent→leaf`, `leaf queue`, `leaf search`.
    pub parts: Vec<(String, u64)>,
}

/// Follows the slowest child at every level of `profile`.
pub fn slow_path(latency_us: u64, profile: &NodeProfile) -> SlowPath {
    let mut parts = Vec::new();
    let mut leaf = String::new();
    let mut node = profile;
    loop {
        let slowest = node.children.iter().max_by_key(|c| c.round_trip_us);
        match slowest {
            Some(child) => {
                parts.push((
                    format!("{} self", node.role),
                    node.total_us.saturating_sub(child.round_trip_us),
                ));
                let below = child.profile.as_ref();
                let to = below.map_or("child", |p| p.role.as_str());
                parts.push((format!("hop {}→{to}", node.role), child.hop_us));
                match below {
                    Some(p) => node = p,
                    None => {
                        leaf = format!(
                            "shards {:?} @{} ({})",
                            child.shards, child.replica, child.outcome
                        );
                        parts.push((format!("{to} ({})", child.outcome), child.round_trip_us));
                        break;
                    }
                }
                if node.children.is_empty() {
                    leaf = format!(
                        "shard {} @{}",
                        node.shards.first().copied().unwrap_or_default(),
                        child.replica
                    );
                }
            }
            None => {
                if node.queue_us > 0 || node.search_us > 0 {
                    parts.push((format!("{} queue", node.role), node.queue_us));
                    parts.push((format!("{} search", node.role), node.search_us));
                } else {
                    parts.push((format!("{} self", node.role), node.total_us));
                }
                break;
            }
        }
    }
    if let Some(fetch) = Some(profile.fetch_us).filter(|&f| f > 0) {
        parts.push(("root fetch phase".into(), fetch));
    }
    SlowPath {
        latency_us,
        leaf,
        parts,
    }
}

/// What set the tail: over the requests at or above the p99.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TailReport {
    /// The p99 latency the tail starts at, µs.
    pub threshold_us: u64,
    /// Profiled requests at or above it.
    pub requests: u64,
    /// How often each leaf was at the end of the slowest path.
    pub slowest_leaf: BTreeMap<String, u64>,
    /// Mean time per part of the slowest path, µs.
    pub mean_us: BTreeMap<String, f64>,
}

/// Summarises the slow paths of the requests at or above `threshold_us`.
pub fn report(paths: &[SlowPath], threshold_us: u64) -> TailReport {
    let tail: Vec<&SlowPath> = paths
        .iter()
        .filter(|p| p.latency_us >= threshold_us)
        .collect();
    let mut slowest_leaf = BTreeMap::new();
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    for p in &tail {
        *slowest_leaf.entry(p.leaf.clone()).or_insert(0) += 1;
        for (part, us) in &p.parts {
            *sums.entry(part.clone()).or_insert(0) += us;
        }
    }
    let n = tail.len().max(1) as f64;
    TailReport {
        threshold_us,
        requests: tail.len() as u64,
        slowest_leaf,
        mean_us: sums.into_iter().map(|(k, v)| (k, v as f64 / n)).collect(),
    }
}

impl TailReport {
    /// The report for people.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "tail:      {} profiled requests at or above p99 {:.2}ms",
            self.requests,
            self.threshold_us as f64 / 1000.0
        );
        let mut parts: Vec<_> = self.mean_us.iter().collect();
        parts.sort_by(|a, b| b.1.total_cmp(a.1));
        let total: f64 = parts.iter().map(|(_, v)| **v).sum::<f64>().max(1e-9);
        for (part, us) in parts {
            let _ = writeln!(
                out,
                "           {part:<24} {:>8.2}ms  {:>5.1}%",
                us / 1000.0,
                100.0 * us / total
            );
        }
        let mut leaves: Vec<_> = self.slowest_leaf.iter().collect();
        leaves.sort_by(|a, b| b.1.cmp(a.1));
        for (leaf, count) in leaves {
            let _ = writeln!(
                out,
                "           slowest leaf {leaf}: {count} ({:.0}%)",
                100.0 * *count as f64 / self.requests.max(1) as f64
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use searchtree_proto::pb::ChildProfile;

    fn leaf(shard: u32, search: u64) -> NodeProfile {
        NodeProfile {
            role: "leaf".into(),
            shards: vec![shard],
            total_us: search + 100,
            queue_us: 100,
            search_us: search,
            ..Default::default()
        }
    }

    fn call(shards: Vec<u32>, rt: u64, hop: u64, p: NodeProfile) -> ChildProfile {
        ChildProfile {
            shards,
            replica: "127.0.0.1:1".into(),
            round_trip_us: rt,
            hop_us: hop,
            outcome: "ok".into(),
            profile: Some(p),
            ..Default::default()
        }
    }

    #[test]
    fn follows_the_slowest_child_to_a_leaf_and_attributes_the_tail() {
        let parent = NodeProfile {
            role: "parent".into(),
            shards: vec![0, 1],
            total_us: 9_000,
            children: vec![
                call(vec![0], 2_000, 500, leaf(0, 1_400)),
                call(vec![1], 8_500, 400, leaf(1, 8_000)),
            ],
            ..Default::default()
        };
        let root = NodeProfile {
            role: "root".into(),
            shards: vec![0, 1],
            total_us: 10_000,
            fetch_us: 300,
            children: vec![call(vec![0, 1], 9_600, 600, parent)],
            ..Default::default()
        };
        let p = slow_path(11_000, &root);
        assert_eq!(p.leaf, "shard 1 @127.0.0.1:1");
        let part = |name: &str| p.parts.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(part("root self"), Some(400));
        assert_eq!(part("hop root→parent"), Some(600));
        assert_eq!(part("parent self"), Some(500));
        assert_eq!(part("hop parent→leaf"), Some(400));
        assert_eq!(part("leaf search"), Some(8_000));
        assert_eq!(part("root fetch phase"), Some(300));

        let fast = SlowPath {
            latency_us: 1_000,
            leaf: "shard 0 @x".into(),
            parts: vec![],
        };
        let r = report(&[p, fast], 5_000);
        assert_eq!(r.requests, 1);
        assert_eq!(r.slowest_leaf["shard 1 @127.0.0.1:1"], 1);
        assert_eq!(r.mean_us["leaf search"], 8_000.0);
        assert!(r.text().contains("leaf search"));
    }
}
