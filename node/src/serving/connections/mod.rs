//! The accept path every node serves on: a cap on the connections held at
//! once, a clean refusal past it, no busy loop when descriptors run out, and
//! connections on which nothing moves closed.
//!
//! tonic's own `TcpIncoming` accepts for as long as `accept()` succeeds and
//! retries at once when it fails. A node out of descriptors (`EMFILE`) then
//! spins on the connection that stays in the backlog — a core busy, no log
//! line, no answer — until every other connection closes, and nothing ever
//! closes a connection whose peer fell silent. Here, instead:
//!
//! - each accepted connection holds a permit of a node-wide cap
//!   ([`ConnectionLimits::max_connections`]), released when the connection is
//!   dropped; at the cap, on a gRPC port ([`Incoming::with_peers`]), a
//!   connection that never made a call, else the one that has gone longest
//!   without one (none for [`EVICT_AFTER_IDLE`] at least), is closed to make
//!   room,
//!   so that clients opening connections and never calling cannot keep
//!   others out; when every connection is calling, a new connection is
//!   accepted and closed at once, so its client fails fast instead of
//!   waiting in the backlog, and the node keeps the descriptors its own
//!   channels, index files and logs need;
//! - when `accept()` fails for want of descriptors or memory, the node logs
//!   it (rate-limited) and pauses [`ACCEPT_BACKOFF`] before trying again;
//! - a connection on which no byte has been read or written for
//!   [`ConnectionLimits::idle_timeout`] fails its next read, which ends it;
//! - on a gRPC port each connection is known by its addresses with the
//!   calls it has alive and those stalled on its client ([`peers`]), so
//!   that the one stalling most can be closed when the node's bound on live
//!   calls is reached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// At the connection cap, a connection that has carried no call for this
/// long may be closed to make room for a new one.
pub const EVICT_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Connections a listener that makes room at its cap may hold past it, for
/// newcomers whose evicted connections have not closed yet (each closes as
/// soon as its task runs): past that too, newcomers are refused.
pub const EVICTION_SLACK: usize = 16;

/// The idle timeout when `--idle-timeout-secs` is not given: long enough that
/// a quiet but live client is never cut off for pausing (and live HTTP/2
/// peers are pinged well within it anyway), short enough that silent
/// connections cannot pile up for long.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest idle timeout: a year, which is as good as never and keeps
/// deadlines far from the clock's overflow.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long accepting pauses after `accept()` failed for want of descriptors
/// or memory: short enough that a freed descriptor is used within a blink,
/// long enough that retrying costs nothing (ten tries a second).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The longest interval between the HTTP/2 pings a node sends its peers.
pub const MAX_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);

/// The longest a node waits for a peer to answer its ping before it closes
/// the connection as dead.
pub const MAX_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// At most one warning of each kind (refusals, accept failures) this often: a
/// flood of connections must not turn into a flood of log lines.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// The least number of descriptors kept back from the cap for what the node
/// opens itself: channels to its children, index files, logs, the runtime.
const MIN_RESERVE: u64 = 64;

/// The default cap never exceeds this, whatever the descriptor limit (an
/// unlimited one included).
const MAX_DEFAULT_CONNECTIONS: u64 = 1 << 20;

/// The cap when the descriptor limit cannot be read: what the derivation
/// gives for the common limit of 1,024.
const FALLBACK_MAX_CONNECTIONS: usize = 896;

/// Why a connection was closed to make room for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionReason {
    /// At the node's bound on live calls, it had the most calls stalled on
    /// its client ([`crate::ops::responses`]).
    StalledCalls,
    /// At the gRPC port's connection cap, it had gone longest without a
    /// call ([`Incoming::with_peers`]).
    ConnectionCap,
    /// At the HTTP port's slots, it had waited longest for a request
    /// ([`crate::ops::http_slots`]).
    HttpSlots,
}

impl EvictionReason {
    /// Every reason, in the order [`evictions`] gives them.
    pub const ALL: [EvictionReason; 3] = [
        EvictionReason::StalledCalls,
        EvictionReason::ConnectionCap,
        EvictionReason::HttpSlots,
    ];

    /// The reason's label on `searchtree_connections_evicted_total`.
    pub fn label(self) -> &'static str {
        match self {
            EvictionReason::StalledCalls => "stalled_calls",
            EvictionReason::ConnectionCap => "connection_cap",
            EvictionReason::HttpSlots => "http_slots",
        }
    }
}

static EVICTIONS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// Counts a connection closed to make room, for the node's metrics.
pub fn count_eviction(reason: EvictionReason) {
    EVICTIONS[reason as usize].fetch_add(1, Ordering::Relaxed);
}

/// Connections this process closed to make room, by reason.
pub fn evictions() -> [(EvictionReason, u64); 3] {
    EvictionReason::ALL.map(|reason| (reason, EVICTIONS[reason as usize].load(Ordering::Relaxed)))
}

/// How many connections a node holds at once, and when it closes a silent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections held at once; past it the one longest without a call
    /// makes room, or a new connection is closed at once.
    pub max_connections: usize,
    /// A connection on which no byte moved for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// The cap derived from the descriptor limit, and [`DEFAULT_IDLE_TIMEOUT`].
    fn default() -> Self {
        ConnectionLimits {
            max_connections: default_max_connections(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl ConnectionLimits {
    /// How often the node pings an HTTP/2 peer it has not heard from: half
    /// the idle timeout, at most [`MAX_KEEPALIVE_INTERVAL`]. A peer that
    /// answers pings is therefore never idle — the tree's own parents above
    /// all, whatever their own settings — and one that stops answering is
    /// dropped after [`Self::keepalive_timeout`]; the idle timeout is left
    /// with connections that carry nothing at all (TCP that never started
    /// HTTP/2, or a peer that stopped reading what it is sent).
    pub fn keepalive_interval(&self) -> Duration {
        (self.idle_timeout / 2)
            .min(MAX_KEEPALIVE_INTERVAL)
            .max(Duration::from_millis(1))
    }

    /// How long a ping may go unanswered before the connection is closed as
    /// dead: the ping interval, at most [`MAX_KEEPALIVE_TIMEOUT`].
    pub fn keepalive_timeout(&self) -> Duration {
        self.keepalive_interval().min(MAX_KEEPALIVE_TIMEOUT)
    }
}

/// The flags every node takes for its connection limits; each node's
/// configuration flattens them in, so leaves, parents and the root agree.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Connections held at once; past it the connection that has carried
    /// no call for longest (at least 1 s) is closed to make room, or, when
    /// every connection is calling, a new one is accepted and closed at
    /// once. Default: the descriptor limit (`ulimit -n`) less an
    /// eighth of it (at least 64), kept for the node's own channels, index
    /// files and logs.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Close a connection on which no byte has been read or written for this
    /// many seconds. HTTP/2 peers are pinged at half this (at most every
    /// 60 s), so only connections that carry nothing at all reach it.
    #[arg(long, default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=MAX_IDLE_TIMEOUT.as_secs()))]
    pub idle_timeout_secs: u64,
}

impl ConnectionArgs {
    /// The limits these flags ask for.
    pub fn limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self
                .max_connections
                .map_or_else(default_max_connections, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX)
                }),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
        }
    }
}

/// The process's soft descriptor limit (`RLIMIT_NOFILE`), `u64::MAX` when
/// unlimited, `None` when it cannot be read.
pub fn descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given, which lives
        // for the whole call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return None;
        }
        if limit.rlim_cur == libc::RLIM_INFINITY {
            return Some(u64::MAX);
        }
        // rlim_t is u64 on Linux but not on every unix.
        #[allow(clippy::useless_conversion)]
        let soft = u64::try_from(limit.rlim_cur).unwrap_or(u64::MAX);
        Some(soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The default cap: the descriptor limit less a reserve for what the node
/// opens itself (see [`cap_for_descriptor_limit`]).
pub fn default_max_connections() -> usize {
    descriptor_limit().map_or(FALLBACK_MAX_CONNECTIONS, cap_for_descriptor_limit)
}

/// The cap for a soft descriptor limit of `limit`: the limit less an eighth
/// of it (at least 64), or half the limit if that leaves less; at least 1.
/// 1,024 descriptors give 896 connections, 256 give 192.
pub fn cap_for_descriptor_limit(limit: u64) -> usize {
    let limit = limit.min(MAX_DEFAULT_CONNECTIONS);
    let reserve = (limit / 8).max(MIN_RESERVE);
    let cap = if limit > 2 * reserve {
        limit - reserve
    } else {
        limit / 2
    };
    usize::try_from(cap.max(1)).unwrap_or(usize::MAX)
}

/// What the accept path has done since the node started, for logs and tests.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    accepted: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    idle_closed: AtomicU64,
    accept_errors: AtomicU64,
}

impl ConnectionStats {
    /// Connections accepted and served.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed at once because the node was at its cap.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed at the cap to make room for a new one.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Connections closed because nothing moved on them for the idle timeout.
    pub fn idle_closed(&self) -> u64 {
        self.idle_closed.load(Ordering::Relaxed)
    }

    /// `accept()` failures that made the node pause (out of descriptors or
    /// memory, or anything else not caused by one connection).
    pub fn accept_errors(&self) -> u64 {
        self.accept_errors.load(Ordering::Relaxed)
    }
}

/// Lets a warning through at most once every [`WARN_EVERY`], counting what it
/// held back so the next one can say how many there were.
#[derive(Debug, Default)]
pub(super) struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(held back since the last one)` if a warning may be logged now.
    pub(super) fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < WARN_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

mod connection;
mod incoming;
pub mod peers;
#[cfg(test)]
mod tests;

pub use connection::Connection;
pub use incoming::Incoming;
