//! The operator side of searchtree: turning a corpus into sharded indexes,
//! starting trees of node processes from a topology, and querying them.
//! The `searchtree` binary is a thin command-line front over this library;
//! the end-to-end tests drive the same code.
#![warn(missing_docs)]

pub mod binaries;
pub mod bundled;
pub mod commands;
pub mod corpus;
pub mod dir_corpus;
pub mod indexer;
pub mod manifest;
pub mod output;
pub mod sharding;
pub mod supervisor;
pub mod topology;
