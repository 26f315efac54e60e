//! The root of the search tree: what clients call over gRPC. It applies the
//! request policy for the whole tree on top of the parent's fan-out.
#![warn(missing_docs)]

pub mod config;
pub mod service;

pub use service::RootService;
