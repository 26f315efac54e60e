//! Replica groups: several children serving the same shards, and how a parent
//! chooses among them, notices dead or slow ones, and routes around them.
//!
//! - **Health.** Every replica is checked with `grpc.health.v1` every
//!   `health_interval` (with `health_timeout`); errors on real traffic count
//!   too. A replica that fails is ejected at once; one that comes back returns
//!   after `rise` consecutive good checks, with **slow start**: its share of
//!   traffic ramps from 10 % to 100 % over `slow_start`.
//! - **Probation.** A replica whose recent p90 is persistently more than
//!   `probation_factor` times its peers' median is taken out of rotation and
//!   sent a trickle of shadow requests (copies whose answers are ignored); it
//!   returns when its p90 does. The last replica in rotation is never taken out.
//! - **Choice** among replicas in rotation: [`Policy`].
//! - **Retries.** A request that fails with a retryable error (unavailable,
//!   connection refused) goes once more to another replica, if time remains.
//! - **Hedging.** A request not answered after the group's recent p95 latency
//!   (at least `hedge_min_delay`) is sent to a second replica too; the first
//!   answer wins and the other call is dropped (cancelled). A token bucket
//!   caps hedges at `hedge_ratio` of requests.

pub mod policy;
pub mod state;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use searchtree_proto::Counters;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use tokio::time::Instant;

use policy::Candidate;
pub use policy::Policy;
use state::{InFlight, Replica, Rotation};

use crate::child::{Child, ChildError};

/// The counters replica groups keep, to be included in their node's set.
pub const REPLICA_COUNTERS: &[&str] = &[
    "replica_calls",
    "retries",
    "hedges_sent",
    "hedges_won",
    "ejections",
    "returns",
    "probations",
    "shadow_requests",
];

/// How a group treats its replicas.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// How a replica is chosen.
    pub policy: Policy,
    /// Time between health checks of each replica.
    pub health_interval: Duration,
    /// How long a health check may take.
    pub health_timeout: Duration,
    /// Consecutive good checks before an ejected replica returns.
    pub rise: u32,
    /// Over how long a returning replica's share of traffic ramps up.
    pub slow_start: Duration,
    /// Retries after a retryable error, each to another replica.
    pub retries: u32,
    /// Hedges allowed per request, on average (0 turns hedging off).
    pub hedge_ratio: f64,
    /// The least time to wait before hedging.
    pub hedge_min_delay: Duration,
    /// A replica slower than this many times its peers goes on probation.
    pub probation_factor: f64,
    /// One request in this many is shadowed to each replica on probation.
    pub shadow_every: usize,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            policy: Policy::default(),
            health_interval: Duration::from_millis(250),
            health_timeout: Duration::from_millis(100),
            rise: 2,
            slow_start: Duration::from_secs(3),
            retries: 1,
            hedge_ratio: 0.05,
            hedge_min_delay: Duration::from_millis(2),
            probation_factor: 3.0,
            shadow_every: 20,
        }
    }
}

/// Latencies the group keeps for its hedge delay.
const GROUP_RECENT: usize = 256;
/// Samples needed before the group hedges (its p95 means something).
const HEDGE_MIN_SAMPLES: usize = 20;
/// Samples a replica needs before probation can judge it.
const PROBATION_MIN_SAMPLES: usize = 16;
/// Latencies below this are never "slow", whatever the ratio.
const PROBATION_FLOOR_US: u64 = 2_000;
/// One hedge token, in the bucket's unit.
const TOKEN: u64 = 1000;
/// The most hedge tokens saved up.
const HEDGE_BURST: u64 = 10 * TOKEN;
/// No retry is sent with less time left than this.
const MIN_RETRY_BUDGET: Duration = Duration::from_millis(1);

/// Why a call was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Primary,
    Retry,
    Hedge,
}

/// Replicas of one child, behaving as one child.
pub struct ReplicaGroup {
    name: String,
    shards: Vec<u32>,
    replicas: Vec<Replica>,
    config: ReplicaConfig,
    counters: Arc<Counters>,
    turn: AtomicUsize,
    rng: Mutex<u64>,
    /// Hedge tokens, in thousandths (integers: no rounding drift).
    hedge_tokens: Mutex<u64>,
    recent: Mutex<VecDeque<u64>>,
    me: Weak<ReplicaGroup>,
}

impl ReplicaGroup {
    /// A group over `replicas` (which must serve the same shards), counting
    /// into `counters` (which must include [`REPLICA_COUNTERS`]). Call
    /// [`ReplicaGroup::spawn_health_checks`] to start checking them.
    pub fn new(
        replicas: Vec<Arc<dyn Child>>,
        config: ReplicaConfig,
        counters: Arc<Counters>,
    ) -> Arc<Self> {
        assert!(!replicas.is_empty(), "a replica group needs a replica");
        let shards = replicas[0].shards().to_vec();
        let name = replicas
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join("|");
        Arc::new_cyclic(|me| ReplicaGroup {
            name,
            shards,
            replicas: replicas.into_iter().map(Replica::new).collect(),
            config,
            counters,
            turn: AtomicUsize::new(0),
            rng: Mutex::new(0x5eed),
            hedge_tokens: Mutex::new(TOKEN),
            recent: Mutex::new(VecDeque::with_capacity(GROUP_RECENT)),
            me: me.clone(),
        })
    }

    /// Checks every replica's health every `health_interval` until the group
    /// is dropped.
    pub fn spawn_health_checks(self: &Arc<Self>) {
        let group = Arc::downgrade(self);
        let interval = self.config.health_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(group) = group.upgrade() else { return };
                group.check_all().await;
            }
        });
    }

    /// Checks every replica once, all at once.
    pub async fn check_all(&self) {
        let checks = self.replicas.iter().enumerate().map(|(i, r)| async move {
            let ok = matches!(
                tokio::time::timeout(self.config.health_timeout, r.child.check_health()).await,
                Ok(Ok(()))
            );
            self.on_health(i, ok);
        });
        futures::future::join_all(checks).await;
    }

    /// Whether each replica is in rotation, ejected or on probation.
    pub fn rotations(&self) -> Vec<Rotation> {
        self.replicas.iter().map(|r| r.lock().rotation).collect()
    }

    fn on_health(&self, i: usize, ok: bool) {
        let mut s = self.replicas[i].lock();
        match (s.rotation, ok) {
            (Rotation::In | Rotation::Probation, false) => {
                s.rotation = Rotation::Ejected;
                s.consecutive_ok = 0;
                drop(s);
                self.counters.inc("ejections");
                tracing::warn!(
                    replica = self.replicas[i].child.name(),
                    "ejected: health check failed"
                );
            }
            (Rotation::Ejected, true) => {
                s.consecutive_ok += 1;
                if s.consecutive_ok >= self.config.rise {
                    s.rotation = Rotation::In;
                    s.back_since = Some(Instant::now());
                    // What it measured before the outage says nothing now.
                    s.recent.clear();
                    s.ewma_us = 0.0;
                    drop(s);
                    self.counters.inc("returns");
                    tracing::info!(
                        replica = self.replicas[i].child.name(),
                        "back in rotation (slow start)"
                    );
                }
            }
            (Rotation::Ejected, false) => s.consecutive_ok = 0,
            (Rotation::In | Rotation::Probation, true) => {}
        }
    }

    fn on_failure(&self, i: usize, err: &ChildError, elapsed: Duration) {
        match err {
            // Passive health: the replica is gone, refusing work, or died
            // under a request.
            ChildError::Unavailable(_) | ChildError::Lost(_) => {
                let mut s = self.replicas[i].lock();
                if s.rotation != Rotation::Ejected {
                    s.rotation = Rotation::Ejected;
                    s.consecutive_ok = 0;
                    drop(s);
                    self.counters.inc("ejections");
                    tracing::warn!(replica = self.replicas[i].child.name(), %err, "ejected: request failed");
                }
            }
            // Too slow: at least this slow, as far as the numbers go.
            ChildError::Timeout(_) => self.replicas[i].lock().observe(elapsed),
            ChildError::InvalidArgument(_) | ChildError::Failed(_) => {}
        }
    }

    fn on_success(&self, i: usize, latency: Duration) {
        self.replicas[i].lock().observe(latency);
        let mut recent = self.recent.lock().expect("recent lock");
        if recent.len() == GROUP_RECENT {
            recent.pop_front();
        }
        recent.push_back(latency.as_micros() as u64);
        let review = recent.len().is_multiple_of(8);
        drop(recent);
        if review {
            self.review_probation();
        }
    }

    /// Puts persistently slow replicas on probation, and returns recovered ones.
    fn review_probation(&self) {
        let p90s: Vec<(Rotation, Option<u64>)> = self
            .replicas
            .iter()
            .map(|r| {
                let s = r.lock();
                (s.rotation, s.recent_quantile(0.9, PROBATION_MIN_SAMPLES))
            })
            .collect();
        let in_rotation = p90s.iter().filter(|(r, _)| *r == Rotation::In).count();
        for (i, (rotation, p90)) in p90s.iter().enumerate() {
            let Some(p90) = *p90 else { continue };
            // The median p90 of the *other* replicas in rotation.
            let mut others: Vec<u64> = p90s
                .iter()
                .enumerate()
                .filter(|(j, (r, _))| *j != i && *r == Rotation::In)
                .filter_map(|(_, (_, p))| *p)
                .collect();
            if others.is_empty() {
                continue;
            }
            others.sort_unstable();
            let median = others[others.len() / 2] as f64;
            let slow =
                p90 > PROBATION_FLOOR_US && p90 as f64 > self.config.probation_factor * median;
            let mut s = self.replicas[i].lock();
            match rotation {
                Rotation::In if slow && in_rotation > 1 => {
                    s.rotation = Rotation::Probation;
                    s.recent.clear();
                    drop(s);
                    self.counters.inc("probations");
                    tracing::warn!(
                        replica = self.replicas[i].child.name(),
                        p90_us = p90,
                        median_us = median,
                        "on probation: slow"
                    );
                    return; // one at a time; never the last in rotation
                }
                Rotation::Probation if !slow => {
                    s.rotation = Rotation::In;
                    s.back_since = Some(Instant::now());
                    drop(s);
                    self.counters.inc("returns");
                    tracing::info!(replica = self.replicas[i].child.name(), "off probation");
                }
                _ => {}
            }
        }
    }

    fn coin(&self) -> f64 {
        let mut state = self.rng.lock().expect("rng lock");
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Chooses a replica not in `exclude`: among those in rotation by the
    /// policy; if none is, any remaining one (an answer from a replica that
    /// looks down beats no answer).
    fn pick(&self, exclude: &[usize]) -> Option<usize> {
        let now = Instant::now();
        let candidates: Vec<Candidate> = self
            .replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| !exclude.contains(i))
            .filter_map(|(i, r)| {
                let s = r.lock();
                let weight = s.weight(now, self.config.slow_start);
                (weight > 0.0).then(|| Candidate {
                    index: i,
                    weight,
                    in_flight: r.in_flight(),
                    ewma_us: s.ewma_us,
                })
            })
            .collect();
        if candidates.is_empty() {
            return (0..self.replicas.len()).find(|i| !exclude.contains(i));
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let chosen = self
            .config
            .policy
            .pick(&candidates, turn, &mut || self.coin());
        // Slow start, whatever the policy: a replica ramping up keeps the
        // request with probability equal to its weight, else the policy
        // chooses among the others. (A policy drawn to a fresh, idle replica
        // would otherwise send it everything at once.)
        let weight = candidates
            .iter()
            .find(|c| c.index == chosen)
            .map_or(1.0, |c| c.weight);
        if weight < 1.0 && self.coin() >= weight {
            let others: Vec<Candidate> = candidates
                .into_iter()
                .filter(|c| c.index != chosen)
                .collect();
            if !others.is_empty() {
                return Some(self.config.policy.pick(&others, turn, &mut || self.coin()));
            }
        }
        Some(chosen)
    }

    /// How long to wait before hedging: the group's recent p95, at least the
    /// configured minimum; None when hedging is off or not yet measured.
    fn hedge_delay(&self) -> Option<Duration> {
        if self.config.hedge_ratio <= 0.0 || self.replicas.len() < 2 {
            return None;
        }
        let recent = self.recent.lock().expect("recent lock");
        if recent.len() < HEDGE_MIN_SAMPLES {
            return None;
        }
        let mut v: Vec<u64> = recent.iter().copied().collect();
        drop(recent);
        v.sort_unstable();
        let p95 = v[(v.len() - 1) * 95 / 100];
        Some(Duration::from_micros(p95).max(self.config.hedge_min_delay))
    }

    /// Earns this request's share of a hedge.
    fn earn_hedge_token(&self) {
        let earned = (self.config.hedge_ratio * TOKEN as f64).round() as u64;
        let mut tokens = self.hedge_tokens.lock().expect("tokens lock");
        *tokens = (*tokens + earned).min(HEDGE_BURST);
    }

    /// Spends a hedge token if there is one.
    fn take_hedge_token(&self) -> bool {
        let mut tokens = self.hedge_tokens.lock().expect("tokens lock");
        if *tokens >= TOKEN {
            *tokens -= TOKEN;
            true
        } else {
            false
        }
    }

    /// Sends a copy of the request to replicas on probation, now and then;
    /// the answers only feed their latency numbers.
    fn shadow(&self, request: &SearchRequest, budget: Duration, turn: usize) {
        if self.config.shadow_every == 0 || !turn.is_multiple_of(self.config.shadow_every) {
            return;
        }
        for (i, r) in self.replicas.iter().enumerate() {
            if r.lock().rotation != Rotation::Probation {
                continue;
            }
            let Some(group) = self.me.upgrade() else {
                return;
            };
            let request = request.clone();
            self.counters.inc("shadow_requests");
            tokio::spawn(async move {
                let replica = &group.replicas[i];
                let _in_flight = InFlight::new(&replica.outstanding);
                let started = Instant::now();
                let result = replica.child.search(request, budget).await;
                let elapsed = started.elapsed();
                match result {
                    Ok(_) | Err(ChildError::Timeout(_)) => {
                        replica.lock().observe(elapsed);
                        group.review_probation();
                    }
                    Err(err) => group.on_failure(i, &err, elapsed),
                }
            });
        }
    }

    async fn call(
        &self,
        i: usize,
        kind: Kind,
        request: SearchRequest,
        budget: Duration,
    ) -> (usize, Kind, Instant, Result<SearchResponse, ChildError>) {
        let replica = &self.replicas[i];
        let _in_flight = InFlight::new(&replica.outstanding);
        let started = Instant::now();
        self.counters.inc("replica_calls");
        let result = replica.child.search(request, budget).await;
        (i, kind, started, result)
    }

    async fn search_replicas(
        &self,
        request: SearchRequest,
        budget: Duration,
    ) -> Result<SearchResponse, ChildError> {
        let start = Instant::now();
        let deadline = start + budget;
        let turn = self.turn.load(Ordering::Relaxed);
        self.shadow(&request, budget, turn);
        self.earn_hedge_token();

        let first = self
            .pick(&[])
            .ok_or_else(|| ChildError::Unavailable(format!("{}: no replica", self.name)))?;
        let mut tried = vec![first];
        let mut flights = FuturesUnordered::new();
        flights.push(self.call(first, Kind::Primary, request.clone(), budget));
        let mut retries_left = self.config.retries;
        let hedge_at = self
            .hedge_delay()
            .map(|d| start + d)
            .filter(|at| *at < deadline);
        let mut hedge_armed = hedge_at.is_some();

        loop {
            let hedge_timer = async {
                match hedge_at {
                    Some(at) if hedge_armed => tokio::time::sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                Some((i, kind, started, result)) = flights.next() => match result {
                    Ok(mut response) => {
                        self.on_success(i, started.elapsed());
                        if kind == Kind::Hedge {
                            self.counters.inc("hedges_won");
                            // The primary lost the race: it was at least this slow.
                            self.replicas[first].lock().observe(start.elapsed());
                        }
                        if let Some(c) = response.coverage.as_mut() {
                            for source in &mut c.sources {
                                source.hedged |= kind == Kind::Hedge;
                                source.retried |= kind == Kind::Retry;
                            }
                        }
                        // Returning drops the other call in flight, cancelling it.
                        return Ok(response);
                    }
                    Err(ChildError::InvalidArgument(msg)) => return Err(ChildError::InvalidArgument(msg)),
                    Err(err) => {
                        self.on_failure(i, &err, started.elapsed());
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        if flights.is_empty()
                            && err.is_retryable()
                            && retries_left > 0
                            && remaining > MIN_RETRY_BUDGET
                            && let Some(j) = self.pick(&tried)
                        {
                            retries_left -= 1;
                            tried.push(j);
                            self.counters.inc("retries");
                            flights.push(self.call(j, Kind::Retry, request.clone(), remaining));
                            continue;
                        }
                        if flights.is_empty() {
                            return Err(err);
                        }
                    }
                },
                _ = hedge_timer => {
                    hedge_armed = false;
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if !remaining.is_zero()
                        && let Some(j) = self.pick(&tried)
                        && self.take_hedge_token()
                    {
                        tried.push(j);
                        self.counters.inc("hedges_sent");
                        flights.push(self.call(j, Kind::Hedge, request.clone(), remaining));
                    }
                }
            }
        }
    }
}

impl Child for ReplicaGroup {
    fn name(&self) -> &str {
        &self.name
    }

    fn shards(&self) -> &[u32] {
        &self.shards
    }

    fn search(
        &self,
        request: SearchRequest,
        budget: Duration,
    ) -> BoxFuture<'_, Result<SearchResponse, ChildError>> {
        Box::pin(self.search_replicas(request, budget))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeChild;
    use crate::node::inner_counters;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn request() -> SearchRequest {
        SearchRequest {
            query: "q".into(),
            top_k: 10,
            ..Default::default()
        }
    }

    fn fakes(n: usize, delay: Duration) -> Vec<Arc<FakeChild>> {
        (0..n)
            .map(|i| {
                Arc::new(FakeChild::answering(0, delay, &[("a", 1.0)]).named(&format!("r{i}")))
            })
            .collect()
    }

    fn group(replicas: &[Arc<FakeChild>], config: ReplicaConfig) -> Arc<ReplicaGroup> {
        let children = replicas
            .iter()
            .map(|r| Arc::clone(r) as Arc<dyn Child>)
            .collect();
        ReplicaGroup::new(children, config, inner_counters("parent", &[]))
    }

    fn round_robin() -> ReplicaConfig {
        ReplicaConfig {
            policy: Policy::RoundRobin,
            ..ReplicaConfig::default()
        }
    }

    async fn send(g: &ReplicaGroup, n: usize) {
        for _ in 0..n {
            g.search(request(), ms(1000)).await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_fails_its_health_check_is_ejected_and_returns_slowly() {
        let r = fakes(2, ms(1));
        let g = group(&r, round_robin());
        r[1].set_down(true);
        g.check_all().await;
        assert_eq!(g.rotations(), [Rotation::In, Rotation::Ejected]);
        send(&g, 20).await;
        assert_eq!(
            (r[0].calls(), r[1].calls()),
            (20, 0),
            "no traffic to an ejected replica"
        );

        // Back up: one good check is not enough, two are.
        r[1].set_down(false);
        g.check_all().await;
        assert_eq!(g.rotations()[1], Rotation::Ejected);
        g.check_all().await;
        assert_eq!(g.rotations()[1], Rotation::In);

        // Slow start: right after its return it gets ~10% of its turns...
        send(&g, 200).await;
        let early = r[1].calls();
        assert!(
            (5..=25).contains(&early),
            "early share {early} of 200 turns"
        );
        // ...and its full half once the window (3 s) has passed.
        tokio::time::advance(ms(3000)).await;
        let before = r[1].calls();
        send(&g, 200).await;
        assert_eq!(r[1].calls() - before, 100);
        assert_eq!(g.counters.get("ejections"), 1);
        assert_eq!(g.counters.get("returns"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_holds_for_every_policy() {
        for policy in [Policy::LatencyAware, Policy::LeastOutstanding] {
            let r = fakes(2, ms(1));
            let g = group(
                &r,
                ReplicaConfig {
                    policy,
                    ..ReplicaConfig::default()
                },
            );
            send(&g, 50).await;
            r[1].set_down(true);
            g.check_all().await;
            r[1].set_down(false);
            g.check_all().await;
            g.check_all().await;
            let before = r[1].calls();
            send(&g, 200).await;
            let early = r[1].calls() - before;
            assert!(
                (2..=30).contains(&early),
                "{policy}: {early} of 200 right after return"
            );
            tokio::time::advance(ms(3000)).await;
            let before = r[1].calls();
            send(&g, 200).await;
            let later = r[1].calls() - before;
            assert!(
                (70..=130).contains(&later),
                "{policy}: {later} of 200 after the ramp"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_request_ejects_its_replica_and_is_retried_on_another() {
        let r = fakes(2, ms(1));
        let g = group(&r, round_robin());
        r[0].set_down(true);
        let response = g.search(request(), ms(100)).await.unwrap();
        let source = &response.coverage.unwrap().sources[0];
        assert_eq!(source.replica, "r1");
        assert!(source.retried);
        assert_eq!(g.rotations()[0], Rotation::Ejected, "passive health");
        assert_eq!(g.counters.get("retries"), 1);
        // Never to the same replica: with both down the request fails after one retry.
        r[1].set_down(true);
        let err = g.search(request(), ms(100)).await.unwrap_err();
        assert!(matches!(err, ChildError::Unavailable(_)));
        assert_eq!(r[0].calls() + r[1].calls(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_without_time_left() {
        let r = fakes(2, ms(1));
        r[0].set_delay(ms(10));
        let g = group(&r, round_robin());
        // r0 is picked first and fails... after its whole budget is spent.
        let failing = Arc::new(
            FakeChild::failing(0, ms(10), ChildError::Unavailable("gone".into())).named("f"),
        );
        let g2 = ReplicaGroup::new(
            vec![
                failing.clone() as Arc<dyn Child>,
                r[1].clone() as Arc<dyn Child>,
            ],
            round_robin(),
            inner_counters("parent", &[]),
        );
        let err = g2.search(request(), ms(10)).await.unwrap_err();
        assert!(matches!(err, ChildError::Unavailable(_)));
        assert_eq!(r[1].calls(), 0, "no retry after the deadline");
        drop(g);
    }

    #[tokio::test(start_paused = true)]
    async fn hedges_fire_after_the_delay_and_the_first_answer_wins() {
        let r = fakes(2, ms(1));
        let g = group(&r, round_robin());
        send(&g, 40).await; // measures the group: p95 = 1 ms, hedge delay = 2 ms floor
        assert_eq!(
            g.counters.get("hedges_sent"),
            0,
            "fast answers are never hedged"
        );

        r[0].set_delay(ms(500)); // r0 turns slow
        let start = Instant::now();
        let response = g.search(request(), ms(1000)).await.unwrap(); // r0's turn
        assert_eq!(start.elapsed(), ms(3), "hedge at 2 ms, answered 1 ms later");
        let source = &response.coverage.unwrap().sources[0];
        assert_eq!((source.replica.as_str(), source.hedged), ("r1", true));
        assert_eq!(
            r[0].cancelled.load(Ordering::SeqCst),
            1,
            "the loser is cancelled"
        );
        assert_eq!(g.counters.get("hedges_sent"), 1);
        assert_eq!(g.counters.get("hedges_won"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn hedges_stay_within_their_budget() {
        let r = fakes(2, ms(1));
        let g = group(
            &r,
            ReplicaConfig {
                policy: Policy::RoundRobin,
                probation_factor: f64::INFINITY,
                ..ReplicaConfig::default()
            },
        );
        send(&g, 40).await;
        r[0].set_delay(ms(50)); // half the primaries are now slow
        send(&g, 400).await;
        let hedges = g.counters.get("hedges_sent");
        // 1 initial token + 0.05 per request (440 requests) = 23 at most.
        assert!(hedges <= 23, "{hedges} hedges for 440 requests");
        assert!(hedges >= 1);
    }

    #[test]
    fn the_hedge_bucket_earns_a_twentieth_per_request() {
        let g = group(&fakes(2, ms(1)), ReplicaConfig::default());
        for _ in 0..100 {
            g.earn_hedge_token();
        }
        // One token to start with and 100 x 0.05 earned.
        let granted = (0..10).filter(|_| g.take_hedge_token()).count();
        assert_eq!(granted, 6);
        for _ in 0..1000 {
            g.earn_hedge_token();
        }
        assert_eq!(
            (0..20).filter(|_| g.take_hedge_token()).count(),
            10,
            "bursts are capped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_hedge_when_the_budget_ends_before_the_hedge_delay() {
        let r = fakes(2, ms(1));
        let g = group(&r, round_robin());
        send(&g, 40).await;
        r[0].set_delay(ms(500));
        let _ = g.search(request(), Duration::from_micros(1500)).await;
        assert_eq!(g.counters.get("hedges_sent"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_persistently_slow_replica_goes_on_probation_and_comes_back() {
        let r = fakes(3, ms(3));
        let g = group(
            &r,
            ReplicaConfig {
                policy: Policy::RoundRobin,
                hedge_ratio: 0.0,
                shadow_every: 2,
                ..ReplicaConfig::default()
            },
        );
        r[2].set_delay(ms(30));
        send(&g, 120).await;
        assert_eq!(
            g.rotations(),
            [Rotation::In, Rotation::In, Rotation::Probation]
        );
        // On probation it only gets shadow copies.
        let primary_before = r[2].calls();
        send(&g, 40).await;
        let shadows = r[2].calls() - primary_before;
        assert!(
            (15..=25).contains(&shadows),
            "{shadows} shadow requests for 40"
        );
        // It recovers; the shadow traffic shows it and it returns.
        r[2].set_delay(ms(3));
        for _ in 0..80 {
            send(&g, 1).await;
            tokio::time::advance(ms(5)).await; // let shadow copies finish
        }
        assert_eq!(g.rotations()[2], Rotation::In);
        assert!(g.counters.get("probations") >= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_replica_in_rotation_is_never_put_on_probation() {
        let r = fakes(2, ms(3));
        let g = group(
            &r,
            ReplicaConfig {
                policy: Policy::RoundRobin,
                hedge_ratio: 0.0,
                ..ReplicaConfig::default()
            },
        );
        r[0].set_down(true);
        g.check_all().await;
        r[1].set_delay(ms(50));
        send(&g, 100).await;
        assert_eq!(g.rotations(), [Rotation::Ejected, Rotation::In]);
    }
}
