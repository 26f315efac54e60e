//! What `NodeStats.GetStatus` says of a node, for the status page: its
//! health (serving or draining), uptime, recent search latency
//! percentiles, and what its role adds (version, coverage, children and
//! their replicas' states).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use searchtree_proto::pb::{ChildStatus, GetStatusResponse};

/// Whether this process is draining (it reports NOT_SERVING).
static DRAINING: AtomicBool = AtomicBool::new(false);

/// Marks this process as draining.
pub fn set_draining() {
    DRAINING.store(true, Ordering::Relaxed);
}

/// The health a node reports: `SERVING`, or `NOT_SERVING` once draining.
pub fn health() -> &'static str {
    if DRAINING.load(Ordering::Relaxed) {
        "NOT_SERVING"
    } else {
        "SERVING"
    }
}

/// How long each of the two windows of recent latencies lasts: percentiles
/// cover the last one to two of them.
const WINDOW: Duration = Duration::from_secs(30);

/// Search latencies of the last minute or so, in microseconds.
struct Recent {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    since: Instant,
}

impl Recent {
    fn new(now: Instant) -> Self {
        let new = || Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds");
        Recent {
            current: new(),
            previous: new(),
            since: now,
        }
    }

    /// Brings the windows up to `now`, whether or not searches came
    /// meanwhile: a window older than [`WINDOW`] becomes the previous one,
    /// and one older than two windows is forgotten with it, so that a node
    /// that stopped getting searches stops reporting old ones.
    fn rotate(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.since);
        if age >= 2 * WINDOW {
            self.current.reset();
            self.previous.reset();
            self.since = now;
        } else if age >= WINDOW {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.reset();
            self.since = now;
        }
    }

    fn record(&mut self, elapsed: Duration, now: Instant) {
        self.rotate(now);
        let us = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self.current.record(us.min(3_600_000_000));
    }

    /// Searches over the windows as of `now`, and their p50, p99 and
    /// p99.9 in µs.
    fn percentiles(&mut self, now: Instant) -> (u64, [u64; 3]) {
        self.rotate(now);
        let mut both = self.current.clone();
        let _ = both.add(&self.previous);
        let q = |q: f64| {
            if both.is_empty() {
                0
            } else {
                both.value_at_quantile(q)
            }
        };
        (both.len(), [q(0.5), q(0.99), q(0.999)])
    }
}

fn recent() -> &'static Mutex<Recent> {
    static RECENT: OnceLock<Mutex<Recent>> = OnceLock::new();
    RECENT.get_or_init(|| Mutex::new(Recent::new(Instant::now())))
}

/// Records one search's latency.
pub fn record_search(elapsed: Duration) {
    recent()
        .lock()
        .expect("recent latencies lock")
        .record(elapsed, Instant::now());
}

/// Searches over the recent windows, and their p50, p99 and p99.9 in µs.
fn recent_percentiles() -> (u64, [u64; 3]) {
    recent()
        .lock()
        .expect("recent latencies lock")
        .percentiles(Instant::now())
}

/// When the process started (for uptime).
fn started() -> Instant {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

/// What a role adds to its status.
#[derive(Debug, Clone, Default)]
pub struct RoleStatus {
    /// The version it answers at by default.
    pub version: u64,
    /// Mean coverage of its answers (inner nodes; 1 for a leaf).
    pub coverage_mean: f64,
    /// Its children, as it sees them.
    pub children: Vec<ChildStatus>,
}

/// How a role reports what only it knows.
pub type RoleStatusFn = Arc<dyn Fn() -> RoleStatus + Send + Sync>;

/// The status of this process, a node called `node` of `role`.
pub fn status(node: &str, role: &str, extra: Option<&RoleStatusFn>) -> GetStatusResponse {
    let (requests, [p50, p99, p999]) = recent_percentiles();
    let role_status = extra.map(|f| f()).unwrap_or_default();
    GetStatusResponse {
        node: node.to_string(),
        role: role.to_string(),
        health: health().to_string(),
        version: role_status.version,
        uptime_s: started().elapsed().as_secs(),
        requests,
        p50_us: p50,
        p99_us: p99,
        p999_us: p999,
        coverage_mean: role_status.coverage_mean,
        children: role_status.children,
    }
}

/// Starts the uptime clock; called when the node starts serving.
pub fn start_clock() {
    let _ = started();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_of_more_than_two_windows_ago_are_no_longer_reported() {
        let start = Instant::now();
        let mut recent = Recent::new(start);
        for ms in 1..=10 {
            recent.record(Duration::from_millis(ms), start);
        }
        assert_eq!(recent.percentiles(start).0, 10);
        // No search since: a window later they are still recent...
        assert_eq!(recent.percentiles(start + WINDOW).0, 10);
        // ... two windows later they are not.
        assert_eq!(recent.percentiles(start + 3 * WINDOW).0, 0);
        assert_eq!(recent.percentiles(start + 3 * WINDOW).1, [0, 0, 0]);
        // Nor after a long pause with no read in between.
        let mut idle = Recent::new(start);
        idle.record(Duration::from_millis(5), start);
        assert_eq!(idle.percentiles(start + 10 * WINDOW).0, 0);
    }

    #[test]
    fn reports_recent_percentiles_health_and_what_the_role_adds() {
        for ms in 1..=100 {
            record_search(Duration::from_millis(ms));
        }
        let extra: RoleStatusFn = Arc::new(|| RoleStatus {
            version: 7,
            coverage_mean: 0.5,
            children: Vec::new(),
        });
        let s = status("127.0.0.1:1", "parent", Some(&extra));
        assert_eq!(s.role, "parent");
        assert_eq!(s.version, 7);
        assert!(s.requests >= 100);
        assert!((45_000..=55_000).contains(&s.p50_us), "{s:?}");
        assert!(s.p99_us >= 98_000, "{s:?}");
        assert_eq!(s.health, "SERVING");
    }
}
