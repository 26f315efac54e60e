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
    /// A number its process drew at start ([`this_instance`]), by which a
    /// node tells its own record from the others: 0 in records written by
    /// anything else.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub instance: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// This process's instance number: random, drawn once, never 0, below
/// 2^53 (exact as a JSON number in any reader). A node
/// registers with it, and an inner node leaves records that carry it out
/// of its children, so that it never counts itself as a replica of one of
/// its children (a parent over a single child registers with exactly that
/// child's shards) whatever address it registered under.
pub fn this_instance() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static INSTANCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *INSTANCE.get_or_init(|| {
        // RandomState is seeded randomly per process.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(now.as_nanos());
        }
        // Below 2^53: exact in readers that hold JSON numbers as doubles.
        (h.finish() >> 11).max(1)
    })
}

impl Member {
    /// The record as stored.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a member serialises")
    }

    /// A record read back; `None` for a value that is not one (written by
    /// something else under the prefix), which is then ignored.
    pub fn from_json(value: &[u8]) -> Option<Member> {
        Member::parse(value).ok()
    }

    /// A record read back, or why the value is not one: what `searchtree
    /// members` shows of a record every node ignores.
    pub fn parse(value: &[u8]) -> Result<Member, String> {
        serde_json::from_slice(value).map_err(|e| e.to_string())
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
            instance: this_instance(),
        };
        assert_eq!(Member::from_json(&m.to_json()), Some(m));
        assert!((1..1 << 53).contains(&this_instance()));
        assert_eq!(this_instance(), this_instance());
        // A record without the number (written by hand) reads as 0.
        let by_hand = br#"{"addr":"a:1","role":"leaf","shards":[0]}"#;
        assert_eq!(Member::from_json(by_hand).unwrap().instance, 0);
        assert_eq!(Member::from_json(b"not json"), None);
        assert_eq!(
            Member::parse(br#"{"addr":"a:1","role":"leaf"}"#).unwrap_err(),
            "missing field `shards` at line 1 column 28"
        );
        assert_eq!(
            member_key("demo", "10.0.0.7:7000"),
            "/searchtree/demo/members/10.0.0.7:7000"
        );
    }
}
