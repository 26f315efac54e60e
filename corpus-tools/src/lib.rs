//! The operator side of searchtree: turning a corpus into sharded indexes,
//! starting trees of node processes from a topology, and querying them.
//! The `searchtree` binary is a thin command-line front over this library;
//! the end-to-end tests drive the same code.
//!
//! The modules follow the two things an operator does:
//!
//! - [`build`]: corpus and build — reading a corpus (JSON Lines or a
//!   directory), assigning documents to shards, writing the shards (with the
//!   leaf crate's writer) into a staging directory that replaces `--out`
//!   only when complete, and the manifest;
//! - [`tree`]: the running tree — the topology file and its checks, finding
//!   the node binaries, and the supervisor that starts the nodes
//!   children-first and restarts the ones that die;
//! - [`live`]: changing a running tree's corpus — reading operations,
//!   batching them, streaming them to the root with bounded batches in
//!   flight, and summing up the acks;
//! - [`verify`]: checking a build on disk or a running tree;
//! - [`certs`] and [`client_args`]: development certificates, and how the
//!   CLI calls a tree (TLS, client certificate, token); [`connection_hint`]:
//!   which flag to change when a call fails on TLS; [`closed_output`]:
//!   a closed pipe ends it quietly;
//! - [`commands`]: one module per subcommand, the thin layer that parses
//!   flags and prints; [`output`] is how they show a search response
//!   ([`waterfall`], its profile), and
//!   [`bundled`] the corpus and queries shipped in the binary.
//!
//! The load tester behind `searchtree bench` is a crate of its own,
//! `searchtree-bench`.
#![warn(missing_docs)]

pub use searchtree_node::allocator;
pub mod build;
pub mod bundled;
pub mod certs;
pub mod client_args;
pub mod closed_output;
pub mod commands;
pub mod connection_hint;
pub mod live;
pub mod node_call;
pub mod output;
pub mod simulate;
pub mod tree;
pub mod verify;
pub mod waterfall;
