//! A load gives way to the queries the root answers meanwhile.
//!
//! A load's indexing shares the leaves' cores with the queries they serve,
//! and unpaced it slows them: the query p99 during back-to-back loads was
//! 2.4–3.5× idle's (BENCHMARKS.md, "Loading into a running tree").
//! `searchtree load --max-rate N` caps a load by hand, but the rate that
//! keeps queries fast depends on the machine and on the query traffic, and
//! the root sees both: it answers every query and forwards every batch. So
//! it paces loads itself, as background work that yields to foreground
//! work:
//!
//! - **The idle tail.** Queries answered while no load or publish runs show
//!   the tree's idle latency. Their p99 (over the last [`IDLE_SAMPLES`] to
//!   twice that many) times `tolerance` is the threshold past which a query
//!   counts as slowed.
//! - **A share of slowed queries.** While a load or a publish runs, every
//!   query answered moves the load's rate. One within the threshold raises
//!   it by a factor `1 + up`; one past it cuts it by `1 − down` (a tenth).
//!   With `up = down × slow_share ÷ (1 − slow_share)` the rate settles
//!   where `slow_share` of the queries are slowed: at the defaults (twice
//!   the idle p99, 1 %), where the p99 of the queries answered during a
//!   load is twice idle's.
//! - **Only while it matters.** Until the first slowed query, while no
//!   query has been answered for [`QUERIES_RECENT`], or while no idle p99 is
//!   known yet, batches go at once: there is nothing to protect, or nothing
//!   yet to protect it against. The first cut starts from the best rate a
//!   load achieved unpaced (over a second, or over a whole load). The rate
//!   rises only while it holds a load back.
//! - **Publishes count.** A leaf acknowledges a batch once it is logged
//!   durably and indexes it behind that; the publish that follows waits for
//!   that indexing to finish. So a faster load leaves its publish more to
//!   do, and the queries a publish slows move the rate as a load's do (they
//!   do not count as idle either).
//! - **Small steps.** A paced batch goes in chunks of a tenth of a second's
//!   operations ([`crate::load_chunks`]).
//! - **Backpressure, not a queue.** The root waits before it takes the next
//!   batch from the client's stream; the client's window of unacknowledged
//!   batches fills and it waits too (gRPC flow control between them).
//!
//! The rate is kept from one load to the next, since loads often come back
//! to back (a load, its publish, the next load).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// A query slower than this many times the idle p99 was slowed by a load.
pub const DEFAULT_TOLERANCE: f64 = 2.0;

/// The share of queries a load may slow: 1 %, so that the tolerance bounds
/// the p99.
pub const DEFAULT_SLOW_SHARE: f64 = 0.01;

/// The rate a load is never held below, operations a second, so that it
/// always finishes.
pub const DEFAULT_MIN_RATE: f64 = 1000.0;

/// How much one slowed query cuts the rate.
const DOWN: f64 = 0.1;

/// With no query answered for this long, a load is not paced.
pub const QUERIES_RECENT: Duration = Duration::from_secs(1);

/// Idle queries the idle p99 is taken over (between this and twice this,
/// the newest).
pub const IDLE_SAMPLES: u64 = 5000;

/// The fewest idle queries an idle p99 is taken from.
pub const IDLE_MIN_SAMPLES: u64 = 200;

/// A paced load's chunks hold this long's operations at its rate.
pub const CHUNK_TIME: Duration = Duration::from_millis(100);

/// The fewest operations a paced chunk holds (unless its batch has fewer).
pub const MIN_CHUNK: usize = 100;

/// How long the achieved rate is measured over.
const ACHIEVED_WINDOW: Duration = Duration::from_secs(1);

/// How a root paces loads (see the module's doc).
#[derive(Debug, Clone, Copy)]
pub struct LoadPaceConfig {
    /// A query past `tolerance` × the idle p99 was slowed.
    pub tolerance: f64,
    /// The share of queries a load may slow (0–1, exclusive).
    pub slow_share: f64,
    /// The rate a load is never held below, operations a second.
    pub min_rate: f64,
}

impl Default for LoadPaceConfig {
    fn default() -> Self {
        LoadPaceConfig {
            tolerance: DEFAULT_TOLERANCE,
            slow_share: DEFAULT_SLOW_SHARE,
            min_rate: DEFAULT_MIN_RATE,
        }
    }
}

/// The root's pace for loads: fed every query's round trip, asked before
/// every batch.
#[derive(Debug)]
pub struct LoadPace {
    config: LoadPaceConfig,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Loads and publishes under way.
    busy: usize,
    /// Loads under way (their batches streaming or being committed).
    loading: usize,
    /// Idle round trips, in microseconds: the newest and the ones before.
    idle: Histogram<u64>,
    idle_before: Histogram<u64>,
    /// Past this (µs), a query was slowed; fixed when a load or publish
    /// starts.
    threshold_us: Option<u64>,
    /// Operations a second a load may go at (`None`: at once, until a
    /// query is slowed).
    rate: Option<f64>,
    /// When the last query was answered.
    last_query: Option<Instant>,
    /// When the last batch went, and its operations.
    last_batch: Option<(Instant, u64)>,
    /// Whether the pace held the latest batch back.
    holding: bool,
    /// When the load under way sent its first batch, and the operations
    /// it sent.
    load_started: Option<Instant>,
    load_ops: u64,
    /// Operations sent since `achieved_since`.
    achieved_ops: u64,
    achieved_since: Option<Instant>,
    /// The highest rate a load achieved unpaced, over a whole window or
    /// over the whole load: where a first cut starts.
    best_achieved: f64,
    /// Queries answered and slowed while busy, and cuts (for the log).
    busy_queries: u64,
    slowed: u64,
    cuts: u64,
    /// Queries answered during publishes alone, and of which slowed.
    publish_queries: u64,
    publish_slowed: u64,
}

/// What a load or publish under way holds: queries answered meanwhile pace
/// loads instead of showing the idle tail.
#[derive(Debug)]
pub struct Busy(Arc<LoadPace>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().expect("load pace lock");
        state.busy -= 1;
    }
}

/// What a load under way holds: queries answered meanwhile move its rate.
#[derive(Debug)]
pub struct Loading(Arc<LoadPace>);

impl Loading {
    /// Logs what the pace did, once the load has ended.
    pub fn log_load_end(self) {
        self.0.log_load_end();
    }
}

impl Drop for Loading {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().expect("load pace lock");
        state.loading -= 1;
        // An unpaced load's whole rate, from its first batch to its last
        // acknowledgement: leaves acknowledge a batch once it is logged, so
        // a short load's batches can all go within one window.
        if let (None, Some(started)) = (state.rate, state.load_started) {
            let took = started.elapsed();
            if took >= ACHIEVED_WINDOW / 5 {
                let achieved = state.load_ops as f64 / took.as_secs_f64();
                state.best_achieved = state.best_achieved.max(achieved);
            }
        }
    }
}

/// What a load's pace did, for its log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceSummary {
    /// The rate a load may go at now (`None`: unpaced).
    pub rate: Option<f64>,
    /// Past this, a query was slowed (`None`: no idle p99 known).
    pub threshold: Option<Duration>,
    /// Queries answered during loads and publishes, since the root started.
    pub queries: u64,
    /// Of which past the threshold.
    pub slowed: u64,
    /// Cuts of the rate.
    pub cuts: u64,
    /// Queries answered during publishes alone (no load under way), since
    /// the root started.
    pub publish_queries: u64,
    /// Of which past the threshold.
    pub publish_slowed: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl State {
    fn summary(&self) -> PaceSummary {
        PaceSummary {
            rate: self.rate,
            threshold: self.threshold_us.map(Duration::from_micros),
            queries: self.busy_queries,
            slowed: self.slowed,
            cuts: self.cuts,
            publish_queries: self.publish_queries,
            publish_slowed: self.publish_slowed,
        }
    }

    /// The rate loads go at now, if the pace holds them back: once a query
    /// was slowed, with an idle tail known and queries coming.
    fn pacing(&self, now: Instant) -> Option<f64> {
        let rate = self.rate?;
        let queries_coming = self
            .last_query
            .is_some_and(|q| now.duration_since(q) <= QUERIES_RECENT);
        (self.threshold_us.is_some() && queries_coming).then_some(rate)
    }
}

impl LoadPace {
    /// A pace with `config` and nothing learnt yet.
    pub fn new(config: LoadPaceConfig) -> Self {
        LoadPace {
            config,
            state: Mutex::new(State {
                busy: 0,
                loading: 0,
                idle: histogram(),
                idle_before: histogram(),
                threshold_us: None,
                rate: None,
                last_query: None,
                last_batch: None,
                holding: false,
                achieved_ops: 0,
                achieved_since: None,
                best_achieved: 0.0,
                load_started: None,
                load_ops: 0,
                busy_queries: 0,
                slowed: 0,
                cuts: 0,
                publish_queries: 0,
                publish_slowed: 0,
            }),
        }
    }

    /// Marks a load or publish under way until the guard is dropped, and
    /// fixes the threshold from the idle tail known now.
    pub fn busy(self: &Arc<Self>) -> Busy {
        let mut state = self.state.lock().expect("load pace lock");
        if state.busy == 0 {
            state.threshold_us = self.threshold(&state);
        }
        state.busy += 1;
        Busy(Arc::clone(self))
    }

    /// Marks a load under way until the guard is dropped (within a
    /// [`LoadPace::busy`]): its batches are measured afresh.
    pub fn loading(self: &Arc<Self>) -> Loading {
        let mut state = self.state.lock().expect("load pace lock");
        state.loading += 1;
        state.last_batch = None;
        state.achieved_ops = 0;
        state.achieved_since = None;
        state.load_started = None;
        state.load_ops = 0;
        state.holding = false;
        Loading(Arc::clone(self))
    }

    fn threshold(&self, state: &State) -> Option<u64> {
        let mut idle = state.idle.clone();
        idle.add(&state.idle_before).ok()?;
        (idle.len() >= IDLE_MIN_SAMPLES)
            .then(|| (idle.value_at_quantile(0.99) as f64 * self.config.tolerance) as u64)
    }

    /// A query was answered in `round_trip`; returns what the pace has done
    /// since, for the gauges (one lock a query, not two).
    pub fn on_query(&self, round_trip: Duration) -> PaceSummary {
        let mut state = self.state.lock().expect("load pace lock");
        self.count_query(&mut state, round_trip);
        state.summary()
    }

    fn count_query(&self, state: &mut State, round_trip: Duration) {
        let now = Instant::now();
        let us = (round_trip.as_micros() as u64).max(1);
        state.last_query = Some(now);
        if state.busy == 0 {
            state.idle.saturating_record(us);
            if state.idle.len() >= IDLE_SAMPLES {
                let newest = std::mem::replace(&mut state.idle, histogram());
                state.idle_before = newest;
            }
            return;
        }
        let Some(threshold) = state.threshold_us else {
            return;
        };
        if state.loading == 0 {
            // A publish's: it commits what the load staged, so a faster
            // load leaves it more to do. It moves the rate too.
            state.publish_queries += 1;
            state.publish_slowed += u64::from(us > threshold);
        }
        state.busy_queries += 1;
        let share = self.config.slow_share;
        if us > threshold {
            state.slowed += 1;
            // The first cut starts from the best rate a load achieved
            // unpaced (none measured yet: no cut). A load's first moments
            // (opening streams, a first batch) say nothing of its rate.
            let from = match state.rate {
                Some(rate) => rate,
                None if state.best_achieved > 0.0 => state.best_achieved,
                None => return,
            };
            state.cuts += 1;
            state.rate = Some((from * (1.0 - DOWN)).max(self.config.min_rate));
            tracing::debug!(
                from = from.round(),
                to = state.rate.map(|r| r.round()),
                query_ms = us as f64 / 1e3,
                "a query slowed during a load: the load's rate cut"
            );
        } else if state.holding
            && let Some(rate) = state.rate
        {
            let up = DOWN * share / (1.0 - share);
            state.rate = Some(rate * (1.0 + up));
        }
    }

    /// How long the next batch waits, if at all, once the last one went.
    pub fn wait(&self) -> Option<Duration> {
        let now = Instant::now();
        let state = self.state.lock().expect("load pace lock");
        let rate = state.pacing(now)?;
        let (at, ops) = state.last_batch?;
        let due = at + Duration::from_secs_f64(ops as f64 / rate);
        (due > now).then(|| due - now)
    }

    /// The operations the next chunk of a batch holds, of `remaining` (see
    /// [`crate::load_chunks`]): a tenth of a second's at the rate while the
    /// pace holds loads back (at least [`MIN_CHUNK`]), else all of them.
    pub fn chunk_size(&self, remaining: usize) -> usize {
        let state = self.state.lock().expect("load pace lock");
        match state.pacing(Instant::now()) {
            Some(rate) => ((rate * CHUNK_TIME.as_secs_f64()).round() as usize)
                .max(MIN_CHUNK)
                .min(remaining),
            None => remaining,
        }
    }

    /// A batch of `ops` operations goes now; `held` says whether it waited
    /// for the pace.
    pub fn sent(&self, ops: u64, held: bool) {
        let now = Instant::now();
        let mut state = self.state.lock().expect("load pace lock");
        state.last_batch = Some((now, ops));
        state.holding = held;
        state.load_started.get_or_insert(now);
        state.load_ops += ops;
        // The operations sent over a window, this batch's in the next one.
        let since = *state.achieved_since.get_or_insert(now);
        let elapsed = now.duration_since(since);
        if elapsed >= ACHIEVED_WINDOW {
            if state.rate.is_none() {
                let achieved = state.achieved_ops as f64 / elapsed.as_secs_f64();
                state.best_achieved = state.best_achieved.max(achieved);
            }
            state.achieved_ops = 0;
            state.achieved_since = Some(now);
        }
        state.achieved_ops += ops;
    }

    /// Waits as long as the pace asks before a batch of `ops` operations,
    /// then counts it as sent.
    pub async fn before_batch(&self, ops: u64) {
        let mut held = false;
        // The rate may fall while a batch waits: wait in steps, asking
        // again after each.
        while let Some(wait) = self.wait() {
            held = true;
            tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
        }
        self.sent(ops, held);
    }

    /// Sets the rate, as cuts would have (for tests elsewhere in the crate).
    #[cfg(test)]
    pub(crate) fn set_rate_for_test(&self, rate: f64) {
        self.state.lock().expect("load pace lock").rate = Some(rate);
    }

    /// What the pace has done, for logs and gauges.
    pub fn summary(&self) -> PaceSummary {
        self.state.lock().expect("load pace lock").summary()
    }

    fn log_load_end(&self) {
        let summary = self.summary();
        tracing::info!(
            rate = summary.rate.map(|r| r.round()),
            threshold_ms = summary.threshold.map(|t| t.as_secs_f64() * 1e3),
            queries_while_busy = summary.queries,
            slowed = summary.slowed,
            cuts = summary.cuts,
            publish_queries = summary.publish_queries,
            publish_slowed = summary.publish_slowed,
            "load ended; its pace (operations/s, none: unpaced)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn pace() -> Arc<LoadPace> {
        Arc::new(LoadPace::new(LoadPaceConfig::default()))
    }

    /// `n` idle queries of `ms` each, 10 ms apart.
    async fn idle_queries(pace: &LoadPace, n: u64, ms: u64) {
        for _ in 0..n {
            pace.on_query(MS * ms as u32);
            tokio::time::sleep(10 * MS).await;
        }
    }

    /// A load sending `ops` a batch every `every` for `for_`.
    async fn batches(pace: &LoadPace, ops: u64, every: Duration, for_: Duration) {
        let end = Instant::now() + for_;
        while Instant::now() < end {
            pace.before_batch(ops).await;
            tokio::time::sleep(every).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_load_is_not_paced_without_an_idle_tail_or_without_queries() {
        let pace = pace();
        // No idle tail known: a slowed query cannot be told from a normal one.
        let busy = pace.busy();
        let loading = pace.loading();
        pace.sent(1000, false);
        pace.on_query(500 * MS);
        assert_eq!(pace.wait(), None);
        assert_eq!(pace.summary().rate, None);
        drop((loading, busy));
        // Queries answered while busy did not count as idle ones.
        idle_queries(&pace, IDLE_MIN_SAMPLES - 1, 2).await;
        assert_eq!(pace.busy().0.summary().threshold, None);
        idle_queries(&pace, 1, 2).await;
        let busy = pace.busy();
        let threshold = pace.summary().threshold.unwrap().as_secs_f64();
        assert!(
            (threshold - 0.004).abs() < 0.00004,
            "twice the idle p99: {threshold}"
        );
        let _loading = pace.loading();
        // Slowed before the load sent anything: not its doing.
        pace.on_query(20 * MS);
        assert_eq!(pace.summary().rate, None);
        batches(&pace, 1000, 100 * MS, Duration::from_secs(2)).await;
        pace.on_query(20 * MS);
        let rate = pace.summary().rate.expect("paced once a query is slowed");
        assert!((9_000.0..=10_500.0).contains(&rate), "{rate}");
        pace.sent(1000, false);
        assert!(pace.wait().is_some());
        // No query for a second: nothing to protect, the load goes at once.
        tokio::time::sleep(QUERIES_RECENT + MS).await;
        assert_eq!(pace.wait(), None);
        drop(busy);
    }

    #[tokio::test(start_paused = true)]
    async fn each_slowed_query_cuts_and_fast_ones_raise_only_a_held_load() {
        let pace = pace();
        idle_queries(&pace, 1000, 2).await;
        let _busy = pace.busy();
        let _loading = pace.loading();
        batches(&pace, 1000, 100 * MS, Duration::from_secs(2)).await;
        pace.on_query(20 * MS);
        let cut = pace.summary();
        assert_eq!((cut.slowed, cut.cuts), (1, 1));
        let rate = cut.rate.unwrap();
        assert!((9_000.0..=10_500.0).contains(&rate), "{rate}");
        // The next batch waits 1000 operations ÷ the rate.
        pace.sent(1000, false);
        let wait = pace.wait().unwrap();
        assert!(wait > 90 * MS && wait <= 1000 * MS / 9, "{wait:?}");
        // A fast query does not raise the rate of a load the pace did not
        // hold back...
        pace.on_query(2 * MS);
        assert_eq!(pace.summary().rate, Some(rate));
        // ...but does once it held one.
        pace.before_batch(1000).await;
        pace.on_query(2 * MS);
        let raised = pace.summary().rate.unwrap();
        assert!(raised > rate);
        // Every slowed query cuts, a burst of them as many times.
        for _ in 0..4 {
            pace.on_query(20 * MS);
        }
        let after = pace.summary();
        assert_eq!((after.slowed, after.cuts), (5, 5));
        let expected = raised * 0.9f64.powi(4);
        assert!((after.rate.unwrap() - expected).abs() < 1.0, "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_load_s_whole_rate_is_where_a_cut_during_its_publish_starts() {
        let pace = pace();
        idle_queries(&pace, 1000, 2).await;
        let busy = pace.busy();
        // Leaves acknowledge batches as soon as they are logged: all six go
        // at once, and the load ends a second later.
        let loading = pace.loading();
        for _ in 0..6 {
            pace.before_batch(8000).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(loading);
        // Its publish slows a query: the cut starts from 48,000 a second.
        pace.on_query(20 * MS);
        let rate = pace.summary().rate.unwrap();
        assert!((rate - 43_200.0).abs() < 100.0, "{rate}");
        let summary = pace.summary();
        assert_eq!((summary.publish_queries, summary.publish_slowed), (1, 1));
        drop(busy);
    }

    /// A tree where a load faster than 20,000 operations a second slows
    /// every query: the pace settles just under that rate, slowing few.
    #[tokio::test(start_paused = true)]
    async fn the_rate_settles_where_queries_stop_being_slowed() {
        let pace = pace();
        idle_queries(&pace, 1000, 2).await;
        let _busy = pace.busy();
        let _loading = pace.loading();
        let queries = {
            let pace = Arc::clone(&pace);
            tokio::spawn(async move {
                let mut rates = Vec::new();
                for _ in 0..6000 {
                    tokio::time::sleep(10 * MS).await;
                    let rate = pace.summary().rate.unwrap_or(f64::INFINITY);
                    pace.on_query(if rate > 20_000.0 { 20 * MS } else { 2 * MS });
                    rates.push(rate);
                }
                rates
            })
        };
        // The tree takes at most 100,000 operations a second.
        batches(&pace, 1000, 10 * MS, Duration::from_secs(60)).await;
        let rates = queries.await.unwrap();
        // Once settled (the first cuts come down from the 100,000 the load
        // achieved unpaced), about one query in 100 is slowed.
        let late = &rates[3000..];
        let mean = late.iter().sum::<f64>() / late.len() as f64;
        assert!((15_000.0..=20_000.0).contains(&mean), "{mean}");
        let slowed = late.iter().filter(|&&rate| rate > 20_000.0).count();
        assert!((15..=45).contains(&slowed), "{slowed} of {}", late.len());
    }
}
