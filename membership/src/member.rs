//! What a node says about itself in etcd, and where: one key per node under
//! the tree's prefix, `/searchtree/<tree>/members/<address>`, whose value is
//! a [`Member`] in JSON.

use serde::{Deserialize, Serialize};

/// The prefix every key of a tree lives under.
pub fn tree_prefix(tree: &str) -> String {
    format!("/searchtree/{tree}/members/")
}

/// The key of the node at `addr` in `tree`.
pub fn member_key(tree: &str, addr: &str) -> String {
    format!("{}{addr}", tree_prefix(tree))
}

/// A registered node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its gRPC address, as its callers reach it (`HOST:PORT`).
    pub addr: String,
    /// `leaf`, `parent` or `root`.
    pub role: String,
    /// The shards it serves (a leaf: its own; an inner node: every shard
    /// below it), ascending.
    pub shards: Vec<u32>,
    /// Its HTTP (metrics) address, if it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Its process id, for operators on its machine.
    #[serde(default)]
    pub pid: u32,
}

impl Member {
    /// The record as stored.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a member serialises")
    }

    /// A record read back; `None` for a value that is not one (written by
    /// something else under the prefix), which is then ignored.
    pub fn from_json(value: &[u8]) -> Option<Member> {
        serde_json::from_slice(value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_round_trips_and_garbage_is_ignored() {
        let m = Member {
            addr: "10.0.0.7:7000".into(),
            role: "leaf".into(),
            shards: vec![3],
            http: Some("10.0.0.7:9100".into()),
            pid: 42,
        };
        assert_eq!(Member::from_json(&m.to_json()), Some(m));
        assert_eq!(Member::from_json(b"not json"), None);
        assert_eq!(
            member_key("demo", "10.0.0.7:7000"),
            "/searchtree/demo/members/10.0.0.7:7000"
        );
    }
}
