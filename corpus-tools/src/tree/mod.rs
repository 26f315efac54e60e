//! The running tree: what `searchtree up` (and `demo`) need to start a tree
//! of node processes and keep it alive.
//!
//! - [`topology`]: `topology.toml`, its validation into a start plan, and
//!   the check that every leaf's index holds the shard it is said to;
//! - [`binaries`]: where the node binaries are;
//! - [`supervisor`]: starting the nodes children-first, readiness, and
//!   restarting the ones that die.

pub mod binaries;
pub mod supervisor;
pub mod topology;
