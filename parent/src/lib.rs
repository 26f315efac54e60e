//! A parent of the search tree: fans a search out to its children (leaves or
//! other parents, which speak the same API) under the request's deadline,
//! merges their top-k into one and passes it up. A child may be a group of
//! replicas, among which the parent chooses ([`replica`]). The root builds on
//! this crate's [`InnerNode`].
#![warn(missing_docs)]

pub mod cache;
pub mod child;
pub mod child_k;
pub mod config;
pub mod corpus;
pub mod counters;
pub mod discovery;
pub mod error;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
#[cfg(any(test, feature = "test-util"))]
pub mod fake_corpus;
pub mod fanout;
pub mod fetch;
pub mod merge;
pub mod node;
pub mod replica;
pub mod round_trip;
pub mod service;
pub mod spec;

pub use child::{Child, ChildError, GrpcChild};
pub use counters::{InnerCounter, InnerCounters};
pub use error::NodeError;
pub use fanout::{EarlyAnswer, FanOut, FanOutOptions};
pub use merge::merge;
pub use node::{InnerNode, InnerTiming};
pub use service::ParentService;
pub use spec::ChildSpec;
