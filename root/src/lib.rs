//! The root of the search tree: what clients call over gRPC. It enforces the
//! latency budget like every inner node, and decides what a client is told
//! about an incomplete answer (strict mode, nothing answered).
#![warn(missing_docs)]

pub mod admission;
pub mod canary;
pub mod config;
pub mod corpus;
pub mod fetch_phase;
pub mod idle_load;
pub mod load_chunks;
pub mod load_pace;
pub mod node;
pub mod pin;
pub mod policy;
pub mod service;
pub mod status;

pub use node::RootNode;
pub use service::RootService;
