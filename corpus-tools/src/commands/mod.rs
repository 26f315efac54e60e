//! One module per `searchtree` subcommand.

pub mod bench;
pub mod build;
pub mod certs;
pub mod demo;
pub mod discard;
pub mod load;
pub mod members;
pub mod publish;
pub mod query;
pub mod restart;
pub mod simulate;
pub mod stats;
pub mod up;
pub mod verify;
pub mod versions;
