//! What every searchtree server shares, so that a leaf, a parent and the
//! root are served, configured and observed the same way:
//!
//! - [`serving`]: log setup, binding, the readiness line `up` reads, the
//!   standard health service and reflection, connection limits, HTTP/2
//!   settings and clean shutdown;
//! - [`counters`]: typed counters per role, served over `NodeStats`;
//! - [`query_args`]: the query-limit flags every node takes;
//! - [`ops`]: the operations flags (HTTP port for metrics, TLS, admin
//!   calls, tracing, drain) and the HTTP server;
//! - [`frames`]: calls between nodes as frames over TCP, without HTTP/2;
//! - [`panics`]: the count of panics a node caught and lived through;
//! - [`allocator`]: the global allocator of every binary, the CLI's too.
//!
//! The API itself (generated code, validated requests) stays in
//! `searchtree-proto`, which clients use without any of this.
#![warn(missing_docs)]

pub mod allocator;
pub mod background;
pub mod counters;
pub mod frames;
pub mod ops;
pub mod panics;
pub mod query_args;
pub mod serving;

pub use counters::Counters;
