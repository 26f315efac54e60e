//! The load tester behind `searchtree bench`: load tests that measure tail
//! latency honestly. It is a library of its own, not part of the operator
//! CLI, because it stands apart from building and running a tree (as
//! neon's `pagebench` does from its storage): the CLI only parses flags and
//! prints what this crate measures, and the end-to-end tests drive the same
//! loops directly.
//!
//! The default mode is **open loop**: requests are scheduled at a fixed
//! arrival rate whatever the replies do, and each request's latency is
//! measured from its *intended* send time. A closed-loop tester (send, wait,
//! send again) slows down exactly when the server stalls and so never sees
//! the queue a stall builds up — coordinated omission. Here a 1 s stall shows
//! up in every request that was due during it, as it would for real users.
//!
//! - [`schedule`]: arrival times and the open- and closed-loop drivers;
//! - [`target`]: what is measured — a tree's root over gRPC, or one index
//!   in-process (the floor of what the tree adds);
//! - [`record`]: what is recorded, in an HDR histogram with fixed bounds;
//! - [`report`]: the report, as text, JSON and HdrHistogram's `.hgrm`;
//! - [`plot`]: latency by percentile as an SVG chart;
//! - [`queries`]: which query each request sends — the list in order, or
//!   Zipf-distributed draws from it, as query logs repeat;
//! - [`limits`]: the range of every setting, and parsers that refuse
//!   values outside it with the range named;
//! - [`priority`]: the tester's threads at a real-time priority, so that
//!   its own wait for a core is not reported as the tree's latency;
//! - [`cpu`]: the load tester's own CPU use, to tell when it, not the
//!   tree, limited a run;
//! - [`steps`]: the step-load scenario — capacity from a closed loop, then
//!   open-loop steps from 0.5× to 4× it, with goodput and p99 against
//!   offered load.
#![warn(missing_docs)]

pub mod cpu;
pub mod limits;
pub mod plot;
pub mod priority;
pub mod queries;
pub mod record;
pub mod report;
pub mod schedule;
pub mod steps;
pub mod tail;
pub mod target;
