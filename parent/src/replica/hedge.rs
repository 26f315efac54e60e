//! Hedging: when a request is sent to a second replica. The delay is the
//! group's recent p95 latency (at least `hedge_min_delay`); a token bucket
//! ([`super::budget`]), earning `hedge_ratio` of a token per request, caps
//! hedges at that share of requests. (The hedge itself is sent by the
//! group's search.)

use std::collections::VecDeque;
use std::time::Duration;

use super::ReplicaGroup;
use super::state::nth_smallest;

/// Latencies the group keeps for its hedge delay.
pub(super) const GROUP_RECENT: usize = 256;
/// Samples needed before the group hedges (its p95 means something).
const HEDGE_MIN_SAMPLES: usize = 20;
/// Answers between two reviews of a group: its hedge delay worked out
/// again, and its replicas' probation.
const REVIEW_EVERY: u64 = 8;

/// A group's recent latencies (µs) and the p95 they give, worked out
/// every [`REVIEW_EVERY`] answers rather than per request: sorting the
/// window for every request was most of a replica group's own cost.
pub(super) struct RecentLatencies {
    window: VecDeque<u64>,
    /// Answers observed.
    seen: u64,
    /// The window's p95 at the last review, once it held enough samples.
    p95: Option<u64>,
}

impl RecentLatencies {
    pub(super) fn new() -> Self {
        RecentLatencies {
            window: VecDeque::with_capacity(GROUP_RECENT),
            seen: 0,
            p95: None,
        }
    }

    /// Adds one answer's latency. Returns whether the group is due a review
    /// (every [`REVIEW_EVERY`] answers); the p95 is worked out again then,
    /// and as soon as the window first holds enough samples.
    pub(super) fn observe(&mut self, us: u64) -> bool {
        if self.window.len() == GROUP_RECENT {
            self.window.pop_front();
        }
        self.window.push_back(us);
        self.seen += 1;
        let review = self.seen.is_multiple_of(REVIEW_EVERY);
        if self.window.len() >= HEDGE_MIN_SAMPLES && (review || self.p95.is_none()) {
            let i = (self.window.len() - 1) * 95 / 100;
            self.p95 = Some(nth_smallest(&self.window, i));
        }
        review
    }
}

impl ReplicaGroup {
    /// How long to wait before hedging a request among `replicas`: the
    /// group's recent p95, at least the configured minimum; None when
    /// hedging is off, there is no second replica, or nothing is measured yet.
    pub(super) fn hedge_delay(&self, replicas: usize) -> Option<Duration> {
        if self.config.hedge_ratio <= 0.0 || replicas < 2 {
            return None;
        }
        let p95 = self.recent.lock().expect("recent lock").p95?;
        Some(Duration::from_micros(p95).max(self.config.hedge_min_delay))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tokio::time::Instant;

    use super::super::testing::{fakes, group, ms, request, round_robin, send};
    use super::*;
    use crate::child::Child;
    use crate::counters::InnerCounter;
    use crate::replica::{Policy, ReplicaConfig};

    #[tokio::test(start_paused = true)]
    async fn hedges_fire_after_the_delay_and_the_first_answer_wins() {
        let r = fakes(2, ms(1));
        let g = group(&r, round_robin());
        send(&g, 40).await; // measures the group: p95 = 1 ms, hedge delay = 2 ms floor
        assert_eq!(
            g.counters.get(InnerCounter::HedgesSent),
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
        assert_eq!(g.counters.get(InnerCounter::HedgesSent), 1);
        assert_eq!(g.counters.get(InnerCounter::HedgesWon), 1);
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
        let hedges = g.counters.get(InnerCounter::HedgesSent);
        // 1 initial token + 0.05 per request (440 requests) = 23 at most.
        assert!(hedges <= 23, "{hedges} hedges for 440 requests");
        assert!(hedges >= 1);
    }

    #[test]
    fn the_p95_is_known_from_enough_samples_and_follows_every_review() {
        let mut recent = RecentLatencies::new();
        let reviews: usize = (1..HEDGE_MIN_SAMPLES as u64)
            .map(|us| recent.observe(us) as usize)
            .sum();
        assert_eq!(reviews, (HEDGE_MIN_SAMPLES - 1) / REVIEW_EVERY as usize);
        assert_eq!(recent.p95, None, "too few samples");
        recent.observe(HEDGE_MIN_SAMPLES as u64);
        assert_eq!(recent.p95, Some(19), "p95 of 1..=20 µs");
        // A slower group: the p95 follows at the next review, not before.
        let mut seen = HEDGE_MIN_SAMPLES as u64;
        while !recent.observe(1_000) {
            seen += 1;
            assert_eq!(recent.p95, Some(19));
        }
        assert!((seen + 1).is_multiple_of(REVIEW_EVERY));
        for _ in 0..GROUP_RECENT {
            recent.observe(1_000);
        }
        assert_eq!(recent.p95, Some(1_000));
        assert_eq!(recent.window.len(), GROUP_RECENT, "the window is bounded");
    }

    #[test]
    fn the_hedge_bucket_earns_a_twentieth_per_request() {
        let g = group(&fakes(2, ms(1)), ReplicaConfig::default());
        for _ in 0..100 {
            g.hedge_budget.earn();
        }
        // One token to start with and 100 x 0.05 earned.
        let granted = (0..10).filter(|_| g.hedge_budget.take()).count();
        assert_eq!(granted, 6);
        for _ in 0..1000 {
            g.hedge_budget.earn();
        }
        assert_eq!(
            (0..20).filter(|_| g.hedge_budget.take()).count(),
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
        assert_eq!(g.counters.get(InnerCounter::HedgesSent), 0);
    }
}
