//! Changing the corpus of a running tree from the command line: reading
//! `searchtree load`'s input into operations ([`ops`]), a pipe's on a
//! thread of its own ([`read_ahead`]), cutting them into batches
//! ([`batches`]), streaming the batches to the root with a bounded
//! number unacknowledged ([`window`]), at most as fast as asked
//! ([`pace`]), and adding up what the acks say
//! ([`tally`]). [`client`] connects to the root's `Corpus` service.
//!
//! The root applies batches in the order sent and every operation is
//! idempotent by id, so the answer to any failure is the same: rerun the
//! same command.

pub mod batches;
pub mod client;
pub mod ops;
pub mod pace;
pub mod read_ahead;
pub mod tally;
pub mod window;
