//! What `NodeStats.GetStatus` says of a node, for the status page: its
//! health (serving or draining), uptime, recent search latency
//! percentiles and answers' coverage ([`recent`]), and what its role adds
//! (version, children and their replicas' states).

mod recent;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use searchtree_proto::pb::{ChildStatus, GetStatusResponse, SearchResponse};

use recent::{Figures, Recent};

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

fn recent() -> &'static Mutex<Recent> {
    static RECENT: OnceLock<Mutex<Recent>> = OnceLock::new();
    RECENT.get_or_init(|| Mutex::new(Recent::new(Instant::now())))
}

/// Records one search's latency.
pub fn record_search(elapsed: Duration) {
    recent()
        .lock()
        .expect("recent figures lock")
        .record_search(elapsed, Instant::now());
}

/// The share of the shards asked that answered `response` in full
/// (shards that answered over shards asked; 0 without a coverage).
pub fn coverage_of(response: &SearchResponse) -> f64 {
    response.coverage.as_ref().map_or(0.0, |c| {
        f64::from(c.shards_ok) / f64::from(c.shards_total.max(1))
    })
}

/// Records one answer, for the recent coverage `GetStatus` reports (see
/// [`coverage_of`]).
pub fn record_answer(response: &SearchResponse) {
    let coverage = coverage_of(response);
    recent()
        .lock()
        .expect("recent figures lock")
        .record_answer(coverage, Instant::now());
}

/// The figures of the recent windows, now.
fn recent_figures() -> Figures {
    recent()
        .lock()
        .expect("recent figures lock")
        .figures(Instant::now())
}

/// When the process started (for uptime).
fn started() -> Instant {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

/// What a role adds to its status.
#[derive(Debug, Clone, Default)]
pub struct RoleStatus {
    /// The version it answers at by default (0: none known).
    pub version: u64,
    /// Its children, as it sees them.
    pub children: Vec<ChildStatus>,
    /// A leaf's disk: what its status page shows next to the floor it keeps.
    pub disk: DiskStatus,
}

/// The free space of a leaf's disk, as its gauges last read it (all 0 for
/// an inner node), so that the status page shows a leaf nearing the floor
/// at which its loads are refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStatus {
    /// Bytes free on the file system the leaf writes to.
    pub free_bytes: u64,
    /// That file system's size in bytes.
    pub total_bytes: u64,
    /// The bytes `--min-free-disk` keeps free there.
    pub floor_bytes: u64,
}

/// How a role reports what only it knows.
pub type RoleStatusFn = Arc<dyn Fn() -> RoleStatus + Send + Sync>;

/// The status of this process, a node called `node` of `role`.
pub fn status(node: &str, role: &str, extra: Option<&RoleStatusFn>) -> GetStatusResponse {
    let figures = recent_figures();
    let [p50, p99, p999] = figures.percentiles;
    let role_status = extra.map(|f| f()).unwrap_or_default();
    GetStatusResponse {
        node: node.to_string(),
        role: role.to_string(),
        health: health().to_string(),
        version: role_status.version,
        uptime_s: started().elapsed().as_secs(),
        requests: figures.searches,
        p50_us: p50,
        p99_us: p99,
        p999_us: p999,
        coverage_mean: figures.coverage_mean,
        answers: figures.answers,
        children: role_status.children,
        disk_free_bytes: role_status.disk.free_bytes,
        disk_total_bytes: role_status.disk.total_bytes,
        disk_floor_bytes: role_status.disk.floor_bytes,
    }
}

/// Starts the uptime clock; called when the node starts serving.
pub fn start_clock() {
    let _ = started();
}

#[cfg(test)]
mod tests {
    use searchtree_proto::pb::Coverage;

    use super::*;

    #[test]
    fn reports_recent_figures_health_and_what_the_role_adds() {
        let answer = |shards_ok| SearchResponse {
            coverage: Some(Coverage {
                shards_total: 2,
                shards_ok,
                ..Default::default()
            }),
            ..Default::default()
        };
        for ms in 1..=100 {
            record_search(Duration::from_millis(ms));
            record_answer(&answer(if ms <= 50 { 2 } else { 1 }));
        }
        let extra: RoleStatusFn = Arc::new(|| RoleStatus {
            version: 7,
            children: Vec::new(),
            disk: DiskStatus {
                free_bytes: 3,
                total_bytes: 10,
                floor_bytes: 1,
            },
        });
        let s = status("127.0.0.1:1", "parent", Some(&extra));
        assert_eq!(s.role, "parent");
        assert_eq!(s.version, 7);
        assert_eq!(
            (s.disk_free_bytes, s.disk_total_bytes, s.disk_floor_bytes),
            (3, 10, 1)
        );
        assert!(s.requests >= 100);
        assert!((45_000..=55_000).contains(&s.p50_us), "{s:?}");
        assert!(s.p99_us >= 98_000, "{s:?}");
        assert_eq!(s.answers, 100);
        assert!((s.coverage_mean - 0.75).abs() < 1e-9, "{s:?}");
        assert_eq!(s.health, "SERVING");
    }
}
