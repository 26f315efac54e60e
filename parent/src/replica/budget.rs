//! Token buckets that cap extra calls at a share of requests: hedges at
//! `hedge_ratio`, retries at `retry_ratio` ([`RETRY_RATIO`] by default) plus
//! [`RETRIES_PER_SECOND`].
//! Each request earns its share of a token; each extra call spends a whole
//! one; up to ten saved up absorb a burst. Without a cap on retries, a group whose replicas all shed load
//! would see every refused request twice (as gRPC's `retryThrottling` and
//! Finagle's retry budget also guard against).

use std::sync::Mutex;

use tokio::time::Instant;

/// One token, in the bucket's unit.
const TOKEN: u64 = 1000;
/// The most tokens saved up.
const BURST: u64 = 10 * TOKEN;
/// Retries allowed per request, on average, beyond the burst, by default.
pub const RETRY_RATIO: f64 = 0.2;
/// Retries allowed per second whatever the traffic, so that a quiet group
/// can still retry now and then.
pub const RETRIES_PER_SECOND: f64 = 1.0;

/// Extra calls earned as a share of requests (and, optionally, with time).
#[derive(Debug)]
pub struct TokenBucket {
    /// Tokens now, in thousandths, and when time last earned some.
    state: Mutex<(u64, Instant)>,
    /// What each request earns, in thousandths.
    per_request: u64,
    /// What each second earns, in thousandths.
    per_second: u64,
}

impl TokenBucket {
    /// A bucket earning `ratio` of a token per request, starting with one
    /// token: hedges.
    pub fn new(ratio: f64) -> Self {
        Self::with(ratio, 0.0, TOKEN)
    }

    /// A bucket earning `ratio` of a token per request and `per_second`
    /// tokens a second, starting full: retries.
    pub fn full(ratio: f64, per_second: f64) -> Self {
        Self::with(ratio, per_second, BURST)
    }

    fn with(ratio: f64, per_second: f64, tokens: u64) -> Self {
        let thousandths = |x: f64| (x.max(0.0) * TOKEN as f64).round() as u64;
        TokenBucket {
            state: Mutex::new((tokens, Instant::now())),
            per_request: thousandths(ratio.min(1.0)),
            per_second: thousandths(per_second),
        }
    }

    /// Whether every request earns a whole token: then every extra call is
    /// allowed, even when many requests have earned theirs at once (which
    /// the burst's cap would otherwise drop).
    fn unlimited(&self) -> bool {
        self.per_request >= TOKEN
    }

    /// A request's share of a token.
    pub fn earn(&self) {
        let mut state = self.state.lock().expect("tokens lock");
        state.0 = (state.0 + self.per_request).min(BURST);
    }

    /// Spends a token if there is one.
    pub fn take(&self) -> bool {
        if self.unlimited() {
            return true;
        }
        let mut state = self.state.lock().expect("tokens lock");
        if self.per_second > 0 {
            let now = Instant::now();
            // Whole milliseconds only, the rest kept for the next take.
            let ms = now.saturating_duration_since(state.1).as_millis() as u64;
            state.0 = (state.0 + self.per_second.saturating_mul(ms) / 1000).min(BURST);
            state.1 += std::time::Duration::from_millis(ms);
        }
        if state.0 >= TOKEN {
            state.0 -= TOKEN;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn extra_calls_are_a_share_of_requests_after_a_small_burst() {
        let bucket = TokenBucket::new(0.2);
        // One token to start with.
        assert!(bucket.take());
        assert!(!bucket.take());
        // 100 requests earn 20 tokens, of which 10 are kept.
        for _ in 0..100 {
            bucket.earn();
        }
        assert_eq!((0..20).filter(|_| bucket.take()).count(), 10);
        // Then one extra call per five requests.
        for _ in 0..50 {
            bucket.earn();
        }
        assert_eq!((0..20).filter(|_| bucket.take()).count(), 10);
        // A ratio of 0 earns nothing beyond the first token.
        let none = TokenBucket::new(0.0);
        assert!(none.take());
        none.earn();
        assert!(!none.take());
        // A ratio of 1 allows every extra call, even after more requests
        // at once than the burst holds.
        let all = TokenBucket::full(1.0, 0.0);
        for _ in 0..50 {
            all.earn();
        }
        assert_eq!((0..50).filter(|_| all.take()).count(), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_start_full_and_time_earns_some_whatever_the_traffic() {
        let bucket = TokenBucket::full(RETRY_RATIO, RETRIES_PER_SECOND);
        assert_eq!((0..20).filter(|_| bucket.take()).count(), 10);
        tokio::time::advance(Duration::from_millis(2500)).await;
        assert_eq!((0..20).filter(|_| bucket.take()).count(), 2);
        // Time earns at most the burst.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!((0..20).filter(|_| bucket.take()).count(), 10);
    }
}
