//! What a parent knows about one replica: whether it is in rotation, how busy
//! and how fast it is.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::child::Child;

/// Latencies kept per replica, for its recent percentiles.
const RECENT: usize = 32;

/// How long a replica that refused a request for load gets no new requests
/// while a sibling in rotation can take them: about the pushback nodes
/// themselves ask for. It doubles with each refusal in a row (a replica
/// wedged at its limit is asked less and less), up to
/// [`MAX_OVERLOAD_BACKOFF`], and an answer resets it.
pub const OVERLOAD_BACKOFF: Duration = Duration::from_millis(50);
/// The longest a replica refusing for load is left alone at a time.
pub const MAX_OVERLOAD_BACKOFF: Duration = Duration::from_secs(1);

/// Whether a replica receives traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Receives traffic (ramping up if it came back recently).
    In,
    /// Failed a health check or a request: no traffic until it passes checks.
    Ejected,
    /// Persistently much slower than its peers: only shadow traffic, to see
    /// whether it recovers.
    Probation,
    /// Refused a request pinned to `version`, which it does not hold (it
    /// missed a load or a publish): no traffic, whatever its health checks
    /// say, until it has copied the version from a sibling (catch-up); then
    /// it returns through probation.
    Behind {
        /// The newest version it was asked for and lacks.
        version: u64,
    },
}

/// Mutable state of a replica, behind the replica's lock.
#[derive(Debug)]
pub struct ReplicaState {
    /// Whether it receives traffic.
    pub rotation: Rotation,
    /// Consecutive successful health checks while ejected.
    pub consecutive_ok: u32,
    /// Consecutive failed health checks while in rotation.
    pub consecutive_failed: u32,
    /// When it last came back into rotation (start of its slow start).
    pub back_since: Option<Instant>,
    /// Until when it is left alone for having refused a request for load
    /// (still in rotation: when no sibling can answer, it is asked anyway).
    pub busy_until: Option<Instant>,
    /// Refusals for load since its last answer.
    pub overloads_in_a_row: u32,
    /// Health checks in a row that timed out while this node ran late.
    pub inconclusive_in_a_row: u32,
    /// Smoothed latency, µs (0: not measured yet).
    pub ewma_us: f64,
    /// Recent latencies, µs.
    pub recent: VecDeque<u64>,
    /// The snapshot version of its last answer (0: none known), so that a
    /// sibling behind knows whom to copy a version from.
    pub answered: u64,
    /// The newest version it refused as lacking while no sibling was known
    /// to hold it (0: none): it is behind only once a sibling answers at
    /// that version, so that a request naming a version no replica holds
    /// takes none out of rotation.
    pub refused_unconfirmed: u64,
    /// Whether a catch-up task runs for it (at most one does).
    pub catching_up: bool,
    /// It refused a catch-up as an inner node does (it answers for leaves
    /// below it, which their own parent keeps current): checks of the
    /// replicas' versions pass it by.
    pub not_a_leaf: bool,
}

impl ReplicaState {
    fn new() -> Self {
        ReplicaState {
            rotation: Rotation::In,
            consecutive_ok: 0,
            consecutive_failed: 0,
            back_since: None,
            busy_until: None,
            overloads_in_a_row: 0,
            inconclusive_in_a_row: 0,
            ewma_us: 0.0,
            recent: VecDeque::with_capacity(RECENT),
            answered: 0,
            refused_unconfirmed: 0,
            catching_up: false,
            not_a_leaf: false,
        }
    }

    /// Records a latency sample.
    pub fn observe(&mut self, latency: Duration) {
        let us = latency.as_micros() as u64;
        self.ewma_us = if self.ewma_us == 0.0 {
            us as f64
        } else {
            0.8 * self.ewma_us + 0.2 * us as f64
        };
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(us);
    }

    /// The `q` quantile of recent latencies, if there are at least `min` samples.
    pub fn recent_quantile(&self, q: f64, min: usize) -> Option<u64> {
        if self.recent.len() < min.max(1) {
            return None;
        }
        let i = ((self.recent.len() - 1) as f64 * q).round() as usize;
        Some(nth_smallest(&self.recent, i))
    }

    /// Share of its normal traffic the replica gets now: 0 out of rotation
    /// or while it sheds load; ramping linearly from 10 % to 100 % over
    /// `slow_start` after it came back, so a recovered replica is not
    /// flooded at once.
    pub fn weight(&self, now: Instant, slow_start: Duration) -> f64 {
        if self.busy(now) {
            return 0.0;
        }
        self.rotation_weight(now, slow_start)
    }

    /// [`ReplicaState::weight`] as if it were not shedding load: what it
    /// gets when every replica in rotation is.
    pub fn rotation_weight(&self, now: Instant, slow_start: Duration) -> f64 {
        if self.rotation != Rotation::In {
            return 0.0;
        }
        match self.back_since {
            Some(since) if !slow_start.is_zero() => {
                let f =
                    now.saturating_duration_since(since).as_secs_f64() / slow_start.as_secs_f64();
                f.clamp(0.1, 1.0)
            }
            _ => 1.0,
        }
    }

    /// Whether it is left alone for now, having refused for load.
    pub fn busy(&self, now: Instant) -> bool {
        self.busy_until.is_some_and(|until| now < until)
    }

    /// It refused a request for load at `now`: left alone for a back-off
    /// that doubles with each refusal in a row.
    pub fn overloaded(&mut self, now: Instant) {
        let doublings = self.overloads_in_a_row.min(5);
        self.overloads_in_a_row = self.overloads_in_a_row.saturating_add(1);
        let backoff = (OVERLOAD_BACKOFF * (1 << doublings)).min(MAX_OVERLOAD_BACKOFF);
        self.busy_until = Some(now + backoff);
    }

    /// It answered: whatever load it refused before is past.
    pub fn answered_now(&mut self) {
        self.overloads_in_a_row = 0;
        self.busy_until = None;
    }

    /// It leaves or re-enters rotation: counts of checks in a row start
    /// again.
    pub fn reset_checks(&mut self) {
        self.consecutive_ok = 0;
        self.consecutive_failed = 0;
        self.inconclusive_in_a_row = 0;
    }
}

/// A replica: the child itself, its requests in flight and its state.
pub struct Replica {
    /// The child.
    pub child: Arc<dyn Child>,
    /// Requests in flight to it.
    pub outstanding: AtomicUsize,
    /// Everything else.
    pub state: std::sync::Mutex<ReplicaState>,
}

impl Replica {
    /// A replica in rotation, nothing measured yet.
    pub fn new(child: Arc<dyn Child>) -> Self {
        Replica {
            child,
            outstanding: AtomicUsize::new(0),
            state: std::sync::Mutex::new(ReplicaState::new()),
        }
    }

    /// A replica that has just appeared (registered in etcd): out of
    /// rotation until health checks bring it in, with slow start.
    pub fn joining(child: Arc<dyn Child>) -> Self {
        let replica = Replica::new(child);
        replica.lock().rotation = Rotation::Ejected;
        replica
    }

    /// Locks its state.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, ReplicaState> {
        self.state.lock().expect("replica state lock")
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }
}

/// Counts a request in flight to a replica for as long as it lives.
pub struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    /// Counts one more request in flight.
    pub fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The `i`-th smallest of `window` (0: the least), by selection on a copy.
pub(super) fn nth_smallest(window: &VecDeque<u64>, i: usize) -> u64 {
    let mut v: Vec<u64> = window.iter().copied().collect();
    *v.select_nth_unstable(i).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_ramps_from_a_tenth_to_full() {
        let now = Instant::now();
        let mut s = ReplicaState::new();
        let window = Duration::from_secs(10);
        assert_eq!(s.weight(now, window), 1.0);
        s.back_since = Some(now);
        assert_eq!(s.weight(now, window), 0.1);
        assert!((s.weight(now + Duration::from_secs(5), window) - 0.5).abs() < 1e-9);
        assert_eq!(s.weight(now + Duration::from_secs(20), window), 1.0);
        s.rotation = Rotation::Ejected;
        assert_eq!(s.weight(now + Duration::from_secs(20), window), 0.0);
    }

    #[test]
    fn a_replica_shedding_load_is_left_alone_longer_at_each_refusal_in_a_row() {
        let now = Instant::now();
        let mut s = ReplicaState::new();
        s.overloaded(now);
        assert_eq!(s.weight(now, Duration::ZERO), 0.0);
        assert_eq!(s.rotation_weight(now, Duration::ZERO), 1.0);
        assert_eq!(s.weight(now + OVERLOAD_BACKOFF, Duration::ZERO), 1.0);
        // Refusing again and again: 100, 200, 400, 800 ms, then 1 s at most.
        let mut backoffs = Vec::new();
        for _ in 0..6 {
            s.overloaded(now);
            backoffs.push(s.busy_until.unwrap() - now);
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            backoffs,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        // An answer resets it.
        s.answered_now();
        s.overloaded(now);
        assert_eq!(s.busy_until.unwrap() - now, OVERLOAD_BACKOFF);
    }

    #[test]
    fn recent_quantiles_need_enough_samples() {
        let mut s = ReplicaState::new();
        for ms in 1..=10 {
            s.observe(Duration::from_millis(ms));
        }
        assert_eq!(s.recent_quantile(0.9, 20), None);
        assert_eq!(s.recent_quantile(0.9, 10), Some(9_000));
        assert_eq!(s.recent_quantile(0.0, 1), Some(1_000));
    }
}
