//! Admission at the root: whole queries are admitted or shed before any
//! fan-out, under a concurrency limit that follows measured latency, above a
//! floor that follows the tree's measured capacity.
//!
//! A query shed at the root costs one cheap `RESOURCE_EXHAUSTED`; a query
//! admitted by some leaves and not others would cost all of the work and
//! give none of the answer, so the decision is made once, here.
//!
//! The limit is Netflix concurrency-limits' *Gradient2*, with two additions
//! for a tree that answers at its deadline:
//!
//! - Each finished query is a sample of its round trip (`rtt`). A long-term
//!   estimate (`long_rtt`) stands for the latency without queueing: it falls
//!   at once to a faster sample and rises slowly (an exponential average over
//!   a hundred times `long_window` samples), so a standing queue is taken for the
//!   new normal only slowly — and while it is, answers that miss their
//!   budget cut the limit (below). Samples taken with no more than the floor
//!   in flight (below: at most a quarter of the budget's worth of queueing)
//!   move it at the normal pace, so a tree that got slower for good is learnt
//!   once the limit has come down. The latest sample is the short-term one.
//! - `gradient = clamp(tolerance × long_rtt / rtt, 0.5, 1)`: 1 while latency
//!   stays within `tolerance` of normal, down to 0.5 as queues build.
//! - `new = limit × gradient + √limit` (the square root is the queue allowed
//!   for bursts), smoothed: `limit += smoothing × (new − limit)`, clamped to
//!   `[floor, max_limit]`.
//! - The limit grows only while it is used (more than half of it in flight):
//!   an idle tree learns nothing about its capacity.
//! - **Addition: drops.** A query whose shards timed out was capped by its
//!   budget, so its `rtt` understates the overload; one whose shards were
//!   refused by overloaded leaves (which refuse at once what they cannot
//!   start in time) was cut short. Such an answer counts as a drop: the limit
//!   is cut by `drop_factor` (AIMD's multiplicative decrease). The root
//!   cannot tell a refusal from a dead shard (both fail the shard), so a
//!   dead shard's answers are drops too, and the floor (which they do not
//!   lower, below) is what keeps the limit up meanwhile.
//! - **Addition: a floor from Little's law.** A fixed floor is right for one
//!   tree only: 32 in flight is ~18 ms of queue for a tree that answers
//!   1,700 queries/s, but ~107 ms — more than a 100 ms budget — for one that
//!   answers 300/s, where it kept the limit from ever coming down far enough
//!   (BENCHMARKS.md, "Overload"). So the floor is what the tree gets through
//!   in a quarter of the budget:
//!   `floor = clamp(answered/s × budget × FLOOR_QUEUE_SHARE, 1, min_limit)`.
//!   By Little's law, `floor` queries ahead of a new one hold it up for
//!   `floor ÷ answered/s` = a quarter of the budget at most, which leaves
//!   the other three quarters for its own search, the hops and per-level
//!   reserves, and a tail of a few times the mean.
//!   - `answered/s` is the rate of answered work: a complete answer counts
//!     1, a partial one the share of its shards that answered, so refusals
//!     by overloaded leaves (fast, and no work) do not inflate it, and a dead
//!     shard only scales it. It is taken in windows of `RATE_WINDOW` of time
//!     during which the tree was saturated, exponentially smoothed.
//!   - Saturated: otherwise the rate is the offered load, not what the tree
//!     can do. The tree is saturated while the limit is in use (the same
//!     "more than half in flight" as above), or while it is overloaded below
//!     the limit: from an answer with shards refused while the latest answer
//!     queued (its round trip past `tolerance × long_rtt`, and past
//!     `long_rtt` by more than a quarter of the budget) until an answer that
//!     did not. When overloaded leaves refuse shards at once, queries finish
//!     early and the limit may never be half in flight, yet the shards that
//!     were taken queued. Neither a dead shard (cut short, but fast), nor a
//!     stalled child (every answer waits out its budget, but nothing is
//!     refused and little is in flight), nor a tree under light load with
//!     noisy latency (slow now and then, never cut short) is saturated.
//!   - `budget` is the exponential average of the time admitted queries had
//!     left (`default_budget` before the first).
//!   - The configured `min_limit` is the floor's ceiling, and the floor
//!     until a rate is measured.
//!   - Should the tree speed up, the floor recovers upward by itself: at
//!     the floor, round trips are then shorter than a quarter of the budget,
//!     so the rate measured there (in flight ÷ round trip) puts the floor
//!     higher, until the queue is a quarter of the budget or the ceiling is
//!     reached.
//! - **No ceiling from the rate.** The limit could also be capped at
//!   `answered/s × budget`, past which every answer waits out its budget;
//!   but past it answers time out, and the drop rule already cuts the limit
//!   on every such answer, at once. A cap from a smoothed rate would be a
//!   slower copy of the same signal, and in every overload run measured the
//!   collapse came from the floor holding the limit up, never from the limit
//!   staying above `answered/s × budget` with a floor low enough.
//!
//! Written here rather than taken from a crate: the crates found (tower-acc,
//! tower-resilience-adaptive) wrap a tower service and queue requests at a
//! per-service limit, where the root must refuse at once, count partial
//! answers as drops, and run under tokio's paused clock in tests.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How the limit adapts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionConfig {
    /// The ceiling of the floor (queries in flight): the limit never falls
    /// below the floor, which follows the tree's measured capacity up to
    /// this, and is this until a rate is measured.
    pub min_limit: usize,
    /// The limit never rises above this.
    pub max_limit: usize,
    /// The limit at start.
    pub initial_limit: usize,
    /// How far latency may rise over the long-term average before the limit
    /// comes down.
    pub tolerance: f64,
    /// The weight of one update (0–1).
    pub smoothing: f64,
    /// Samples the long-term average spans.
    pub long_window: usize,
    /// The factor the limit is cut by when a query timed out.
    pub drop_factor: f64,
    /// What a shed client is told to wait before retrying
    /// (`grpc-retry-pushback-ms`).
    pub pushback: Duration,
    /// Batch queries are shed once this share of the limit is in flight,
    /// leaving the rest to interactive ones.
    pub batch_max_share: f64,
    /// The share of the limit batch queries keep whatever the load (and
    /// interactive ones cannot take): batch work is never starved.
    pub batch_guaranteed_share: f64,
    /// The budget the floor assumes until queries have been seen (the
    /// tree's default budget).
    pub default_budget: Duration,
}

/// Default [`AdmissionConfig::min_limit`], the floor's ceiling: high enough
/// that bursts of an open-loop load well within capacity are never shed on a
/// noisy machine (measured: with a fixed floor of 8, a debug tree at 600/s
/// shed 16% of queries while answering the rest in full within 35 ms at
/// p99), and what a tree that answers 1,300/s or more in a 100 ms budget
/// keeps as its floor.
pub const DEFAULT_MIN_LIMIT: usize = 32;
/// Default [`AdmissionConfig::max_limit`].
pub const DEFAULT_MAX_LIMIT: usize = 1024;
/// Default [`AdmissionConfig::initial_limit`].
pub const DEFAULT_INITIAL_LIMIT: usize = 64;
/// Default [`AdmissionConfig::batch_max_share`].
pub const DEFAULT_BATCH_MAX_SHARE: f64 = 0.5;
/// Default [`AdmissionConfig::batch_guaranteed_share`].
pub const DEFAULT_BATCH_GUARANTEED_SHARE: f64 = 0.1;
/// Default [`AdmissionConfig::pushback`].
pub const DEFAULT_PUSHBACK: Duration = Duration::from_millis(50);
/// Default [`AdmissionConfig::default_budget`]: the inner nodes' default.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(100);

/// The share of the budget the queue at the floor may take: the floor is
/// what the tree answers in this share of the budget (see the module docs).
/// A quarter leaves three quarters for the query's own search, the hops and
/// the reserves each level keeps, and a tail of a few times the mean.
pub const FLOOR_QUEUE_SHARE: f64 = 0.25;

/// Time with the limit in use over which one sample of the answered rate is
/// taken: long enough for ~75 answers at 300/s.
const RATE_WINDOW: Duration = Duration::from_millis(250);

/// The weight of one window's sample in the smoothed answered rate: the
/// rate follows a change within a few windows (about a second in use).
const RATE_SMOOTHING: f64 = 0.3;

/// The weight of one query's budget in the smoothed typical budget.
const BUDGET_SMOOTHING: f64 = 0.05;

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            min_limit: DEFAULT_MIN_LIMIT,
            max_limit: DEFAULT_MAX_LIMIT,
            initial_limit: DEFAULT_INITIAL_LIMIT,
            tolerance: 1.5,
            smoothing: 0.2,
            long_window: 600,
            drop_factor: 0.9,
            pushback: DEFAULT_PUSHBACK,
            batch_max_share: DEFAULT_BATCH_MAX_SHARE,
            batch_guaranteed_share: DEFAULT_BATCH_GUARANTEED_SHARE,
            default_budget: DEFAULT_BUDGET,
        }
    }
}

/// How much slower the no-queue latency estimate rises than a plain
/// exponential average over `long_window` would.
const RISE_SLOWDOWN: f64 = 100.0;

/// The adaptive limit and what is in flight under it.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: f64,
    /// The limit's current floor (see the module docs).
    floor: f64,
    in_flight: usize,
    /// Of which batch queries.
    batch_in_flight: usize,
    /// Long-term average round trip, seconds (0: no sample yet).
    long_rtt: f64,
    /// The smoothed time admitted queries had left, seconds.
    budget: f64,
    throughput: Throughput,
    /// When a query was last shed.
    last_shed: Option<Instant>,
}

impl State {
    /// Whether what the tree answers now is what it can answer, not what it
    /// is offered: queries in flight, and either the limit in use (more than
    /// half of it in flight) and binding (a query shed within the last
    /// [`RATE_WINDOW`]), or the tree overloaded below it. A limit that
    /// drops have cut is "in use" by whatever the clients send, so without
    /// sheds the rate would be the offered load: a closed loop of a few
    /// clients, or a stalled child that makes every answer wait out a short
    /// budget, would pull the floor down to what they happen to send.
    fn saturated(&self, now: Instant) -> bool {
        let binding = self
            .last_shed
            .is_some_and(|at| now.saturating_duration_since(at) < RATE_WINDOW);
        self.in_flight > 0
            && ((binding && self.in_flight as f64 >= self.limit / 2.0)
                || self.throughput.overloaded)
    }
}

/// The tree's rate of answered work, measured only while the tree is
/// saturated ([`State::saturated`]): between two events (a query admitted,
/// finished or cancelled), the time counts if it was saturated throughout,
/// and so does the work answered at the second.
#[derive(Debug)]
struct Throughput {
    /// Smoothed answered queries per second (`None`: not yet measured).
    rate: Option<f64>,
    /// Answered work in the current window.
    answered: f64,
    /// Time in use in the current window, seconds.
    busy: f64,
    /// The last event.
    last: Instant,
    /// Whether the tree has been saturated since `last`.
    saturated: bool,
    /// Whether the latest answer with work in it queued (see
    /// [`Admission::queued`]).
    queued: bool,
    /// Whether the tree is overloaded below the limit: since a drop while
    /// the latest answer queued, no answer came back without queueing.
    overloaded: bool,
}

impl Throughput {
    fn new() -> Self {
        Throughput {
            rate: None,
            answered: 0.0,
            busy: 0.0,
            last: Instant::now(),
            saturated: false,
            queued: false,
            overloaded: false,
        }
    }

    /// Counts the time since the last event if the tree was saturated, and
    /// `answered` with it; closes the window once it holds
    /// [`RATE_WINDOW`] of such time, and says whether it did.
    fn event(&mut self, now: Instant, answered: f64) -> bool {
        if self.saturated {
            self.busy += now.saturating_duration_since(self.last).as_secs_f64();
            self.answered += answered;
        }
        self.last = now;
        if self.busy < RATE_WINDOW.as_secs_f64() {
            return false;
        }
        let sample = self.answered / self.busy;
        self.rate = Some(match self.rate {
            None => sample,
            Some(rate) => rate + RATE_SMOOTHING * (sample - rate),
        });
        self.answered = 0.0;
        self.busy = 0.0;
        true
    }
}

/// A query admitted: hold it while the query runs, then [`Permit::finish`]
/// it with how it went. Dropping it unfinished (a cancelled query) frees
/// the slot without a sample.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    started: Instant,
    in_flight: usize,
    batch: bool,
    done: bool,
}

/// Why a query was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// The whole limit was in flight.
    AtLimit,
    /// Its class had used its share: a batch query past the batch maximum
    /// share, or an interactive one up against the share kept for batch.
    OverShare,
}

/// Why a query was not admitted, and what to tell its client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shed {
    /// Which bound refused it.
    pub reason: ShedReason,
    /// Queries in flight when it was refused.
    pub in_flight: usize,
    /// The limit then.
    pub limit: usize,
    /// How long the client should wait before retrying.
    pub pushback: Duration,
}

impl Admission {
    /// An admission controller starting at `config.initial_limit`, with the
    /// floor at `config.min_limit` until the tree's rate is measured.
    pub fn new(config: AdmissionConfig) -> Arc<Self> {
        let floor = Self::floor_ceiling(&config);
        let initial = config
            .initial_limit
            .clamp(floor as usize, config.max_limit.max(1));
        Arc::new(Admission {
            config,
            state: Mutex::new(State {
                limit: initial as f64,
                floor,
                in_flight: 0,
                batch_in_flight: 0,
                long_rtt: 0.0,
                budget: config.default_budget.as_secs_f64(),
                throughput: Throughput::new(),
                last_shed: None,
            }),
        })
    }

    /// The most the floor may be: `min_limit`, within `[1, max_limit]`.
    fn floor_ceiling(c: &AdmissionConfig) -> f64 {
        c.min_limit.clamp(1, c.max_limit.max(1)) as f64
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.state.lock().expect("admission state").limit as usize
    }

    /// The limit's current floor: what the tree answers in a quarter of the
    /// typical budget, at most `min_limit` (see the module docs).
    pub fn floor(&self) -> usize {
        self.state.lock().expect("admission state").floor as usize
    }

    /// What a shed client is told to wait before retrying.
    pub fn pushback(&self) -> Duration {
        self.config.pushback
    }

    /// Queries in flight.
    pub fn in_flight(&self) -> usize {
        self.state.lock().expect("admission state").in_flight
    }

    /// Admits a query with `budget` left if its class may have one more in
    /// flight: an interactive query while fewer than the limit are in
    /// flight (less the share guaranteed to batch work), a batch query while
    /// fewer than its maximum share are, or while batch work is below its
    /// guaranteed share. Its budget joins the typical budget either way.
    pub fn try_acquire(self: &Arc<Self>, batch: bool, budget: Duration) -> Result<Permit, Shed> {
        let now = Instant::now();
        let mut s = self.state.lock().expect("admission state");
        s.budget += BUDGET_SMOOTHING * (budget.as_secs_f64() - s.budget);
        if s.throughput.event(now, 0.0) {
            self.refresh_floor(&mut s);
        }
        let limit = s.limit as usize;
        let c = &self.config;
        let share = |f: f64| (s.limit * f.clamp(0.0, 1.0)).floor() as usize;
        let admit = if batch {
            s.in_flight < limit
                && (s.in_flight < share(c.batch_max_share)
                    || s.batch_in_flight < share(c.batch_guaranteed_share))
        } else {
            let interactive = s.in_flight - s.batch_in_flight;
            let reserved = share(c.batch_guaranteed_share).saturating_sub(s.batch_in_flight);
            s.in_flight + reserved < limit && interactive < limit
        };
        if !admit {
            s.last_shed = Some(now);
            return Err(Shed {
                reason: if s.in_flight >= limit {
                    ShedReason::AtLimit
                } else {
                    ShedReason::OverShare
                },
                in_flight: s.in_flight,
                limit,
                pushback: c.pushback,
            });
        }
        s.in_flight += 1;
        if batch {
            s.batch_in_flight += 1;
        }
        s.throughput.saturated = s.saturated(now);
        Ok(Permit {
            admission: Arc::clone(self),
            started: now,
            in_flight: s.in_flight,
            batch,
            done: false,
        })
    }

    /// Learns from one finished query: its round trip, how many were in
    /// flight when it started, and whether it was cut short by time. A
    /// sample alone, outside any permit, says nothing about the rate the
    /// tree answers at: only [`Permit::finish`] measures that.
    pub fn on_sample(&self, rtt: Duration, in_flight: usize, dropped: bool) {
        let mut s = self.state.lock().expect("admission state");
        self.update(&mut s, rtt.as_secs_f64().max(1e-6), in_flight, dropped);
    }

    /// Puts the floor where the measured rate and the typical budget say,
    /// and the limit back above it.
    fn refresh_floor(&self, s: &mut State) {
        let ceiling = Self::floor_ceiling(&self.config);
        s.floor = match s.throughput.rate {
            None => ceiling,
            Some(rate) => (rate * s.budget * FLOOR_QUEUE_SHARE).clamp(1.0, ceiling),
        };
        s.limit = s.limit.max(s.floor);
    }

    /// Whether an answer of round trip `rtt` (seconds) queued: past
    /// `tolerance × long_rtt` (the gradient's own bound), and by more than
    /// the queue the floor allows, a quarter of the budget (past noise).
    fn queued(&self, s: &State, rtt: f64) -> bool {
        let wait = rtt - s.long_rtt;
        rtt > self.config.tolerance * s.long_rtt && wait > s.budget * FLOOR_QUEUE_SHARE
    }

    fn update(&self, s: &mut State, rtt: f64, in_flight: usize, dropped: bool) {
        let c = &self.config;
        // The floor is at most `min_limit` clamped to `max_limit`.
        let max = c.max_limit.max(1) as f64;
        if dropped {
            s.limit = (s.limit * c.drop_factor).clamp(s.floor, max);
            return;
        }
        let alpha = 2.0 / (c.long_window.max(1) as f64 + 1.0);
        if s.long_rtt == 0.0 || rtt < s.long_rtt {
            // Falls at once to a faster sample: it is the latency without
            // queueing we are after.
            s.long_rtt = rtt;
        } else if in_flight as f64 <= s.floor {
            // So little in flight that at most a quarter of the budget of
            // queue is in this sample: if the tree got slower for good,
            // learn it at the normal pace.
            s.long_rtt += alpha * (rtt - s.long_rtt);
        } else {
            // Rises slowly: a queue must not become the new normal quickly.
            s.long_rtt += alpha / RISE_SLOWDOWN * (rtt - s.long_rtt);
        }
        // An underused limit says nothing about capacity.
        if (in_flight as f64) < s.limit / 2.0 {
            return;
        }
        let gradient = (c.tolerance * s.long_rtt / rtt).clamp(0.5, 1.0);
        let new_limit = s.limit * gradient + s.limit.sqrt();
        s.limit = (s.limit + c.smoothing * (new_limit - s.limit)).clamp(s.floor, max);
    }
}

impl Permit {
    /// The query finished: `dropped` if some of its shards ran out of time
    /// or were refused by overloaded leaves (the answer was capped by the
    /// budget or cut short), `refused` if some were refused (failed rather
    /// than timed out), and `answered` the share of its shards that
    /// answered (1 for a complete answer, 0 for an error): the work the
    /// tree did for it, which the floor's rate counts.
    pub fn finish(mut self, dropped: bool, refused: bool, answered: f64) {
        self.done = true;
        let now = Instant::now();
        let rtt = now.saturating_duration_since(self.started);
        let admission = Arc::clone(&self.admission);
        let mut s = admission.state.lock().expect("admission state");
        let window_closed = s.throughput.event(now, answered.clamp(0.0, 1.0));
        s.in_flight -= 1;
        if self.batch {
            s.batch_in_flight -= 1;
        }
        if window_closed {
            admission.refresh_floor(&mut s);
        }
        let rtt = rtt.as_secs_f64().max(1e-6);
        if answered > 0.0 && s.long_rtt > 0.0 {
            // Only an answer with work in it tells whether work queues: one
            // refused everywhere at once comes back fast either way.
            s.throughput.queued = admission.queued(&s, rtt);
            if !s.throughput.queued {
                s.throughput.overloaded = false;
            }
        }
        // Shards refused by overloaded nodes while answers queue: overload
        // below the limit. Shards that only timed out do not count here: a
        // stalled or partitioned child makes every answer wait out its
        // budget with little in flight, which is a failure, not a queue
        // (and a real queue fills the limit, the other way to saturation).
        if dropped && refused && s.throughput.queued {
            s.throughput.overloaded = true;
        }
        admission.update(&mut s, rtt, self.in_flight, dropped);
        s.throughput.saturated = s.saturated(now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            let now = Instant::now();
            let mut s = self.admission.state.lock().expect("admission state");
            if s.throughput.event(now, 0.0) {
                self.admission.refresh_floor(&mut s);
            }
            s.in_flight -= 1;
            if self.batch {
                s.batch_in_flight -= 1;
            }
            s.throughput.saturated = s.saturated(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The budget every query of these tests has.
    const BUDGET: Duration = Duration::from_millis(100);

    /// Limits small enough for the model below to move them.
    fn config() -> AdmissionConfig {
        AdmissionConfig {
            min_limit: 8,
            max_limit: 512,
            initial_limit: 32,
            ..AdmissionConfig::default()
        }
    }

    /// A server that serves `capacity` queries at once in `base`, and
    /// queues the rest: a query's round trip grows with what is in flight.
    fn model_rtt(base: Duration, capacity: usize, in_flight: usize) -> Duration {
        base.mul_f64((in_flight as f64 / capacity as f64).max(1.0))
    }

    /// Many clients keep as many queries in flight as they are allowed:
    /// the limit's steady state for a server of `capacity`.
    fn drive(a: &Admission, base: Duration, capacity: usize, samples: usize) {
        for _ in 0..samples {
            let in_flight = a.limit();
            a.on_sample(model_rtt(base, capacity, in_flight), in_flight, false);
        }
    }

    #[test]
    fn converges_near_capacity_under_steady_overload() {
        let a = Admission::new(config());
        drive(&a, ms(10), 40, 3000);
        let limit = a.limit();
        // Within the tolerance (1.5x) of capacity, plus the burst allowance.
        assert!((30..=75).contains(&limit), "limit {limit} for capacity 40");
        // And stays there.
        drive(&a, ms(10), 40, 1000);
        assert!(a.limit().abs_diff(limit) <= 10, "{} vs {limit}", a.limit());
    }

    #[test]
    fn drops_when_latency_rises_and_recovers_when_it_falls() {
        let a = Admission::new(config());
        drive(&a, ms(10), 40, 3000);
        let before = a.limit();
        // The servers get 4x slower (a slow leaf, a noisy neighbour): the
        // same concurrency now queues.
        drive(&a, ms(40), 10, 200);
        let slow = a.limit();
        assert!(
            slow < before / 2,
            "limit {slow} after slowing, was {before}"
        );
        // Back to normal: the limit comes back.
        drive(&a, ms(10), 40, 3000);
        assert!(a.limit() >= before * 3 / 4, "{} vs {before}", a.limit());
    }

    #[test]
    fn batch_work_is_shed_first_within_its_guaranteed_share() {
        let a = Admission::new(AdmissionConfig {
            min_limit: 10,
            initial_limit: 10,
            max_limit: 10,
            batch_max_share: 0.5,
            batch_guaranteed_share: 0.2,
            ..config()
        });
        // Batch alone: up to half the limit.
        let batch: Vec<_> = (0..5)
            .map(|_| a.try_acquire(true, BUDGET).unwrap())
            .collect();
        let shed = a.try_acquire(true, BUDGET).unwrap_err();
        assert_eq!(
            shed.reason,
            ShedReason::OverShare,
            "batch past its maximum share"
        );
        // Interactive takes the rest.
        let interactive: Vec<_> = (0..5)
            .map(|_| a.try_acquire(false, BUDGET).unwrap())
            .collect();
        let shed = a.try_acquire(false, BUDGET).unwrap_err();
        assert_eq!(shed.reason, ShedReason::AtLimit, "the limit is reached");
        drop(batch);
        // With interactive work filling the tree, batch still has its
        // guaranteed 2 slots, which interactive work cannot take.
        let more: Vec<_> = (0..3)
            .map(|_| a.try_acquire(false, BUDGET).unwrap())
            .collect();
        let shed = a.try_acquire(false, BUDGET).unwrap_err();
        assert_eq!(shed.reason, ShedReason::OverShare, "2 slots kept for batch");
        let guaranteed: Vec<_> = (0..2)
            .map(|_| a.try_acquire(true, BUDGET).unwrap())
            .collect();
        assert!(a.try_acquire(true, BUDGET).is_err());
        assert_eq!(a.in_flight(), 10);
        drop((interactive, more, guaranteed));
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn a_tree_that_got_slower_for_good_is_learnt() {
        let a = Admission::new(config());
        drive(&a, ms(10), 40, 3000);
        let before = a.limit();
        // Twice as slow for good, same capacity: the limit dips, then the
        // new latency is taken as normal and the limit comes back.
        drive(&a, ms(20), 40, 5000);
        assert!(a.limit() >= before / 2, "{} vs {before}", a.limit());
    }

    #[test]
    fn an_idle_or_underused_limit_does_not_grow_and_timeouts_cut_it() {
        let a = Admission::new(config());
        for _ in 0..1000 {
            a.on_sample(ms(5), 1, false);
        }
        assert_eq!(a.limit(), 32);
        a.on_sample(ms(100), 30, true);
        assert_eq!(a.limit(), 28, "32 x 0.9");
        for _ in 0..100 {
            a.on_sample(ms(100), 30, true);
        }
        assert_eq!(a.limit(), 8, "never below the floor");
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_limit_queries_are_shed_at_once_and_slots_come_back() {
        let a = Admission::new(AdmissionConfig {
            min_limit: 2,
            initial_limit: 2,
            ..config()
        });
        let first = a.try_acquire(false, BUDGET).unwrap();
        let second = a.try_acquire(false, BUDGET).unwrap();
        let shed = a.try_acquire(false, BUDGET).unwrap_err();
        assert_eq!((shed.in_flight, shed.limit), (2, 2));
        assert_eq!(shed.pushback, DEFAULT_PUSHBACK);
        tokio::time::advance(ms(20)).await;
        first.finish(false, false, 1.0);
        drop(second); // cancelled: frees the slot, no sample
        assert_eq!(a.in_flight(), 0);
        assert!(a.try_acquire(false, BUDGET).is_ok());
    }

    /// A tree behind the admission, on the paused clock: `slots` searches
    /// at once, each taking `service`. Queries wait for a slot in arrival
    /// order; one that could not finish within its budget is refused at
    /// once, as leaves refuse what they cannot start in time: a drop, with
    /// nothing answered.
    struct FakeTree {
        free_at: Vec<Instant>,
        service: Duration,
        running: Vec<(Instant, Permit)>,
        answered: usize,
        /// The share of its shards each answer has.
        share: f64,
        /// Whether each answer counts as a drop (a shard failed).
        dropped: bool,
    }

    impl FakeTree {
        fn new(slots: usize, service: Duration) -> Self {
            FakeTree {
                free_at: vec![Instant::now(); slots],
                service,
                running: Vec::new(),
                answered: 0,
                share: 1.0,
                dropped: false,
            }
        }

        /// Takes an admitted query with `budget` left.
        fn start(&mut self, permit: Permit, budget: Duration) {
            let now = Instant::now();
            let slot = (0..self.free_at.len())
                .min_by_key(|&i| self.free_at[i])
                .expect("a slot");
            let done = self.free_at[slot].max(now) + self.service;
            if done > now + budget {
                permit.finish(true, true, 0.0);
                return;
            }
            self.free_at[slot] = done;
            self.running.push((done, permit));
        }

        /// Answers in full every query done by now.
        fn answer_due(&mut self) {
            let now = Instant::now();
            let (done, running) = std::mem::take(&mut self.running)
                .into_iter()
                .partition::<Vec<_>, _>(|(at, _)| *at <= now);
            self.running = running;
            for (_, permit) in done {
                permit.finish(self.dropped, self.dropped, self.share);
                self.answered += 1;
            }
        }
    }

    /// Offers `per_ms` queries with `budget` every millisecond for `millis`
    /// ms; returns how many the tree answered meanwhile.
    async fn offer(
        a: &Arc<Admission>,
        tree: &mut FakeTree,
        per_ms: usize,
        budget: Duration,
        millis: u64,
    ) -> usize {
        let answered = tree.answered;
        for _ in 0..millis {
            tokio::time::advance(ms(1)).await;
            tree.answer_due();
            for _ in 0..per_ms {
                if let Ok(permit) = a.try_acquire(false, budget) {
                    tree.start(permit, budget);
                }
            }
        }
        tree.answered - answered
    }

    fn measured_rate(a: &Admission) -> Option<f64> {
        a.state.lock().unwrap().throughput.rate
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_child_is_not_overload_and_keeps_the_floor() {
        // Batches of 16 queries with 40 ms budgets; half the tree stalled,
        // so every answer is partial (shards timed out, none refused) and
        // comes at its budget. Nothing queues at the root.
        let a = Admission::new(AdmissionConfig::default());
        for _ in 0..200 {
            let permits: Vec<_> = (0..16)
                .map(|_| a.try_acquire(false, ms(40)).expect("admitted"))
                .collect();
            tokio::time::advance(ms(40)).await;
            for permit in permits {
                permit.finish(true, false, 0.5);
            }
        }
        assert_eq!(a.floor(), DEFAULT_MIN_LIMIT, "no rate measured");
        assert!(a.limit() >= DEFAULT_MIN_LIMIT, "limit {}", a.limit());
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_slow_tree_the_floor_falls_to_a_quarter_budget_of_answers() {
        // 3 slots of 10 ms: 300 answers/s, offered 1,000/s. The configured
        // floor of 32 would be 107 ms of queue, past the budget.
        let a = Admission::new(AdmissionConfig::default());
        let mut tree = FakeTree::new(3, ms(10));
        offer(&a, &mut tree, 1, BUDGET, 5000).await;
        let rate = measured_rate(&a).expect("measured under load");
        assert!((280.0..=310.0).contains(&rate), "rate {rate}");
        // 300/s x 100 ms x 1/4 = 7.5.
        assert!((6..=8).contains(&a.floor()), "floor {}", a.floor());
        assert!(a.limit() < 16, "limit {}", a.limit());
        // And the tree answers at its capacity meanwhile.
        let answered = offer(&a, &mut tree, 1, BUDGET, 2000).await;
        assert!(answered >= 570, "{answered} answered in 2 s at 300/s");
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_fast_tree_the_floor_stays_at_the_configured_one() {
        // 20 slots of 2 ms: 10,000/s, offered 20,000/s. A quarter of the
        // budget is 250 answers: the configured 32 is the lower.
        let a = Admission::new(AdmissionConfig::default());
        let mut tree = FakeTree::new(20, ms(2));
        offer(&a, &mut tree, 20, BUDGET, 3000).await;
        let rate = measured_rate(&a).expect("measured under load");
        assert!(rate > 5000.0, "rate {rate}");
        assert_eq!(a.floor(), DEFAULT_MIN_LIMIT);
        assert!(a.limit() >= DEFAULT_MIN_LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_recovers_when_the_tree_speeds_up() {
        let a = Admission::new(AdmissionConfig::default());
        let mut tree = FakeTree::new(3, ms(10));
        offer(&a, &mut tree, 1, BUDGET, 5000).await;
        assert!(a.floor() <= 8, "floor {} while slow", a.floor());
        // 10x faster (3,000/s, floor 75 but for the ceiling), and offered 5,000/s.
        tree.service = ms(1);
        offer(&a, &mut tree, 5, BUDGET, 5000).await;
        assert_eq!(a.floor(), DEFAULT_MIN_LIMIT);
        assert!(a.limit() >= DEFAULT_MIN_LIMIT, "limit {}", a.limit());
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_follows_the_budgets_queries_bring() {
        // The same slow tree under 40 ms budgets: 300 x 40 ms / 4 = 3.
        let a = Admission::new(AdmissionConfig::default());
        let mut tree = FakeTree::new(3, ms(10));
        offer(&a, &mut tree, 1, ms(40), 5000).await;
        assert!((2..=3).contains(&a.floor()), "floor {}", a.floor());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_shard_under_light_load_leaves_the_floor_alone() {
        // 20 slots of 2 ms (10,000/s) offered 1,000/s; then one shard of
        // four dies: every answer is a drop with 3/4 of its shards, but
        // fast. Nothing queues: the tree is not saturated, and the floor
        // keeps the limit up while the drops push it down.
        let a = Admission::new(AdmissionConfig::default());
        let mut tree = FakeTree::new(20, ms(2));
        offer(&a, &mut tree, 1, BUDGET, 1000).await;
        tree.share = 0.75;
        tree.dropped = true;
        offer(&a, &mut tree, 1, BUDGET, 5000).await;
        assert_eq!(measured_rate(&a), None);
        assert_eq!(a.floor(), DEFAULT_MIN_LIMIT);
        assert_eq!(
            a.limit(),
            DEFAULT_MIN_LIMIT,
            "cut by the drops to the floor"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_tree_keeps_its_floor_and_partial_answers_count_their_share() {
        let a = Admission::new(AdmissionConfig {
            min_limit: 8,
            initial_limit: 8,
            max_limit: 8,
            ..config()
        });
        let budget = ms(40);
        // One query at a time, well under the limit: the offered load is
        // not the tree's capacity, and nothing is measured.
        for _ in 0..1000 {
            let permit = a.try_acquire(false, budget).unwrap();
            tokio::time::advance(ms(5)).await;
            permit.finish(false, false, 1.0);
        }
        assert_eq!(measured_rate(&a), None);
        assert_eq!(a.floor(), 8);
        // The limit (8) full, of a tree of 8 slots of 10 ms, every answer
        // missing half its shards: half the work of 800/s is answered,
        // 400/s, and the floor is 400 x 40 ms / 4 = 4 (complete answers
        // would make it 8).
        let mut tree = FakeTree::new(8, ms(10));
        tree.share = 0.5;
        offer(&a, &mut tree, 2, budget, 3000).await;
        let rate = measured_rate(&a).expect("measured while in use");
        assert!((390.0..=410.0).contains(&rate), "rate {rate}");
        // (3.9-4: the floor in whole queries is rounded down.)
        assert!((3..=4).contains(&a.floor()), "floor {}", a.floor());
    }
}
