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
//! # min_pruned_docs = 0             # prune even small shards (default 16384)
//! # inline_search_cost = 0          # every search on the blocking pool (default 8192)
//! # max_concurrent_searches = 2     # search slots (default: one per CPU)
//! # max_queued_searches = 128       # waiting requests before refusals (default: 64 a slot)
//! # min_free_disk = "1GiB"          # free disk kept; writes that would leave less are refused (default 5%)
//! ```
//!
//! [`Topology::plan`] validates a topology and orders its nodes so that every
//! node starts after its children, which `searchtree up` relies on to hand
//! each parent its children's actual addresses.
//!
//! It is split along its seams: `format` (the file), `generate` (the
//! topology a build writes), `plan` (validation and start order) and
//! `checks` (that the index directories hold what the topology says) and
//! `addresses` (every node its own address, none already served).

mod addresses;
mod checks;
mod contract;
mod format;
mod generate;
mod plan;

pub use addresses::check_free as check_addresses_free;
pub use checks::check_indexes;
pub use contract::check_args;
pub use format::{DEFAULT_LISTEN, LeafNode, ParentNode, RootNode, Routing, Topology};
pub use plan::{Plan, PlannedNode, ROOT_NAME};

/// A topology that is not valid; the message names the offending entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topology: {0}")]
pub struct TopologyError(pub String);

fn invalid<T>(msg: impl Into<String>) -> Result<T, TopologyError> {
    Err(TopologyError(msg.into()))
}

#[cfg(test)]
mod tests {
    //! Helpers shared by the submodules' tests.
    use super::Topology;

    pub(super) fn parse(text: &str) -> Topology {
        toml::from_str(text).unwrap()
    }

    pub(super) fn error(text: &str) -> String {
        parse(text).plan().unwrap_err().0
    }

    pub(super) fn leaf(name: &str, shard: u32) -> String {
        format!("[[leaf]]\nname = \"{name}\"\nshard = {shard}\nindex = \"x\"\n")
    }
}
