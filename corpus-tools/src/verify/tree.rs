//! A running tree is consistent when every leaf is reachable, every leaf's
//! current version is the same (and the one the root pins), and the
//! replicas of each shard hold the same content (equal digests).

use std::collections::{BTreeMap, BTreeSet};

use searchtree_proto::pb::{LeafVersions, VersionsResponse};

use super::Report;

/// Checks what a root's Versions answered.
pub fn check(response: &VersionsResponse) -> Report {
    let mut report = Report::default();
    if let Some(note) = crate::commands::versions::below_the_root(&response.role) {
        report.problem(note.trim_start_matches("note: ").to_string());
    }
    let leaves = &response.leaves;
    if leaves.is_empty() {
        report.problem("the root reports no leaves");
        return report;
    }
    let name = |l: &LeafVersions| format!("shard {} replica {}", l.shard, l.replica);
    let reachable: Vec<&LeafVersions> = leaves.iter().filter(|l| l.reachable).collect();
    for l in leaves.iter().filter(|l| !l.reachable) {
        let what = if l.misplaced {
            "is not that shard's"
        } else {
            "is unreachable"
        };
        report.problem(format!("{} {what}: {}", name(l), l.error));
    }
    if reachable.len() == leaves.len() {
        report.ok(format!("all {} leaves reachable", leaves.len()));
    }

    let mut by_version: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for l in &reachable {
        by_version.entry(l.current).or_default().push(name(l));
    }
    match by_version.len() {
        0 => {}
        1 => {
            let (&version, _) = by_version.iter().next().expect("one version");
            report.ok(format!("every reachable leaf is at version {version}"));
            if response.pinned != 0 && response.pinned != version {
                report.problem(format!(
                    "the root pins version {} but the leaves are at version {version}",
                    response.pinned
                ));
            } else if response.pinned == version {
                report.ok(format!("the root pins version {version}"));
            }
        }
        _ => {
            let groups: Vec<String> = by_version
                .iter()
                .map(|(v, names)| format!("version {v}: {}", names.join(", ")))
                .collect();
            report.problem(format!(
                "leaves disagree on the current version (pinned {}): {}",
                response.pinned,
                groups.join("; ")
            ));
        }
    }

    let mut shards: BTreeMap<u32, Vec<&LeafVersions>> = BTreeMap::new();
    for l in &reachable {
        shards.entry(l.shard).or_default().push(l);
    }
    let mut agreeing = 0;
    for (shard, replicas) in &shards {
        let digests: BTreeSet<(&str, u64)> = replicas
            .iter()
            .map(|l| (l.digest.as_str(), l.current))
            .collect();
        if digests.len() == 1 {
            agreeing += 1;
            continue;
        }
        let each: Vec<String> = replicas
            .iter()
            .map(|l| {
                format!(
                    "{} at version {} has {} documents, digest {}",
                    l.replica, l.current, l.num_docs, l.digest
                )
            })
            .collect();
        report.problem(format!(
            "shard {shard}: replicas differ: {}",
            each.join("; ")
        ));
    }
    if agreeing == shards.len() {
        let docs: u64 = shards.values().map(|r| r[0].num_docs).sum();
        report.ok(format!(
            "the replicas of each of {} shards hold the same content ({docs} documents in all)",
            shards.len()
        ));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(shard: u32, replica: &str, current: u64, digest: &str) -> LeafVersions {
        LeafVersions {
            shard,
            replica: replica.into(),
            reachable: true,
            current,
            installed: vec![current],
            num_docs: 10,
            digest: digest.into(),
            ..LeafVersions::default()
        }
    }

    #[test]
    fn a_consistent_tree_passes() {
        let report = check(&VersionsResponse {
            leaves: vec![
                leaf(0, "a", 2, "x"),
                leaf(0, "b", 2, "x"),
                leaf(1, "c", 2, "y"),
            ],
            pinned: 2,
            role: "root".into(),
        });
        assert!(report.passed(), "{report:?}");
        assert_eq!(
            report.render(),
            "ok: all 3 leaves reachable\nok: every reachable leaf is at version 2\n\
             ok: the root pins version 2\n\
             ok: the replicas of each of 2 shards hold the same content (20 documents in all)\n"
        );
    }

    #[test]
    fn each_kind_of_inconsistency_is_named() {
        let mut gone = leaf(1, "d", 0, "");
        gone.reachable = false;
        gone.error = "connection refused".into();
        let mut wrong = leaf(1, "a", 0, "");
        wrong.reachable = false;
        wrong.misplaced = true;
        wrong.error = "named as a replica of shard(s) 1, it answers for shard(s) 0".into();
        let report = check(&VersionsResponse {
            leaves: vec![
                leaf(0, "a", 2, "x"),
                leaf(0, "b", 2, "z"),
                leaf(1, "c", 3, "y"),
                gone,
                wrong,
            ],
            pinned: 2,
            role: "root".into(),
        });
        assert_eq!(
            report.problems,
            [
                "shard 1 replica d is unreachable: connection refused",
                "shard 1 replica a is not that shard's: named as a replica of shard(s) 1, it \
                 answers for shard(s) 0",
                "leaves disagree on the current version (pinned 2): version 2: shard 0 replica a, \
                 shard 0 replica b; version 3: shard 1 replica c",
                "shard 0: replicas differ: a at version 2 has 10 documents, digest x; \
                 b at version 2 has 10 documents, digest z",
            ]
        );
        assert!(report.render().starts_with("problem: shard 1 replica d"));

        let pinned_elsewhere = check(&VersionsResponse {
            leaves: vec![leaf(0, "a", 2, "x")],
            pinned: 1,
            role: "root".into(),
        });
        assert_eq!(
            pinned_elsewhere.problems,
            ["the root pins version 1 but the leaves are at version 2"]
        );
    }
}

#[cfg(test)]
mod below_the_root_tests {
    use super::*;

    #[test]
    fn a_check_asked_of_a_parent_is_not_a_pass() {
        let report = check(&VersionsResponse {
            leaves: vec![LeafVersions {
                shard: 0,
                replica: "a".into(),
                reachable: true,
                current: 1,
                installed: vec![1],
                ..LeafVersions::default()
            }],
            pinned: 0,
            role: "parent".into(),
        });
        assert!(!report.passed());
        assert!(
            report.problems[0].starts_with("this is a parent, not the tree's root"),
            "{report:?}"
        );
    }
}
