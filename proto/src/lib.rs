//! The searchtree wire API and the validated types every node and client
//! shares.
//!
//! Every node — leaf, parent, root — serves the same `searchtree.v1.Search`
//! service, so a parent cannot tell a leaf from another parent and a tree can
//! be of any depth. This crate holds:
//!
//! - [`pb`]: the code generated from `searchtree/v1/search.proto`;
//! - [`request`]: the request as a node validates it on receipt;
//! - [`fetch`]: the same for a fetch (the second phase of a two-phase search);
//! - [`query`]: the complexity limits a query is checked against first;
//! - [`ordering`]: the one order of hits every node agrees on;
//! - [`deadline`]: how long a request may take, and how that travels down;
//! - [`sharding`]: which shard a document id lives in (builds, loads, routing);
//!
//! How a node is served (health, reflection, connection limits, counters)
//! is `searchtree-node`'s business.
//!
//! It deliberately does not depend on tantivy, so clients and parents stay
//! lean; it uses only tantivy's small query-grammar crate, to check queries.
#![warn(missing_docs)]

pub mod deadline;
pub mod fetch;
pub mod forwarded;
pub mod hops;
pub mod ordering;
pub mod query;
pub mod request;
pub mod sharding;

/// The OpenTelemetry trace export (OTLP/gRPC): what a node sends its spans
/// as, and what a collector receives.
#[allow(missing_docs, clippy::all)]
pub mod otlp {
    tonic::include_proto!("opentelemetry.proto.collector.trace.v1");
}

/// Code generated from `searchtree/v1/search.proto` and `corpus.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("searchtree.v1");

    /// The encoded descriptor set of the API, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/searchtree_descriptor.bin"));
}

pub use deadline::BudgetPolicy;
pub use fetch::{FetchError, FetchParams, MAX_DOC_ID_BYTES};
pub use ordering::hit_order;
pub use query::QueryLimits;
pub use request::{DEFAULT_TOP_K, MAX_TOP_K, RequestError, SearchParams};
