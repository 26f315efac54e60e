//! A leaf of the search tree: one shard of the corpus in a tantivy index,
//! searched with corpus-wide BM25 statistics so its scores are comparable with
//! every other shard's and equal to one whole-corpus index's.
//!
//! This crate also owns the shard's on-disk format ([`shard`], [`stats`],
//! [`schema`]), which `searchtree build` writes.
#![warn(missing_docs)]

pub mod collector;
pub mod config;
pub mod corpus;
pub mod cost;
pub mod error;
pub mod fault;
pub mod fetch;
pub mod highlight;
pub mod node;
pub mod prefix_terms;
pub mod schema;
pub mod searcher;
pub mod service;
pub mod shard;
pub mod snippet;
pub mod stats;
pub mod sum_order;

pub use error::LeafError;
pub use node::LeafNode;
pub use searcher::ShardSearcher;
pub use service::LeafService;
pub use shard::Shard;
