//! A smoothed estimate of a round trip and of its variation, and what to
//! keep back for it: one estimator for every place that must leave time for
//! a hop (the fan-out's searches, the fetch routing, the root's fetch phase).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What is kept back for a hop to a child not yet measured.
pub const HOP_INITIAL: Duration = Duration::from_millis(3);
/// The least kept back for a hop: a deadline timer may fire up to 1 ms late,
/// at the child and here.
pub const HOP_FLOOR: Duration = Duration::from_millis(1);
/// The most kept back for a hop.
pub const HOP_CEILING: Duration = Duration::from_millis(20);

/// A smoothed estimate of a duration and its variation, kept the way TCP
/// estimates its retransmission timeout (Jacobson/Karels, RFC 6298), so the
/// time kept back for it is `mean + 4 × mean deviation`: a jittery link or a
/// loaded machine (a debug build) gets a wider margin than a steady one.
/// Lock-free; races between concurrent updates only lose a sample.
#[derive(Debug, Default)]
pub struct RoundTrip {
    /// Smoothed duration, µs (0: nothing measured yet).
    mean_us: AtomicU64,
    /// Smoothed mean deviation, µs.
    dev_us: AtomicU64,
}

impl RoundTrip {
    /// What to keep back: `initial` until a sample has been seen, then
    /// `mean + 4 × deviation` within `[floor, ceiling]`.
    pub fn reserve(&self, initial: Duration, floor: Duration, ceiling: Duration) -> Duration {
        let mean = self.mean_us.load(Ordering::Relaxed);
        if mean == 0 {
            return initial;
        }
        let dev = self.dev_us.load(Ordering::Relaxed);
        Duration::from_micros(mean + 4 * dev).clamp(floor, ceiling.max(floor))
    }

    /// What to keep back for the hop to a child and back, within
    /// [`HOP_FLOOR`]..[`HOP_CEILING`] ([`HOP_INITIAL`] before a sample).
    pub fn hop_reserve(&self) -> Duration {
        self.reserve(HOP_INITIAL, HOP_FLOOR, HOP_CEILING)
    }

    /// Folds in one sample, in microseconds.
    pub fn observe(&self, sample_us: u64) {
        let sample = sample_us.max(1);
        let mean = self.mean_us.load(Ordering::Relaxed);
        if mean == 0 {
            self.mean_us.store(sample, Ordering::Relaxed);
            self.dev_us.store(sample / 2, Ordering::Relaxed);
            return;
        }
        let dev = self.dev_us.load(Ordering::Relaxed);
        // RFC 6298: dev += (|mean - sample| - dev) / 4; mean += (sample - mean) / 8.
        self.dev_us
            .store((3 * dev + mean.abs_diff(sample)) / 4, Ordering::Relaxed);
        self.mean_us
            .store(((7 * mean + sample) / 8).max(1), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_round_trip_reserve_follows_samples_within_its_bounds() {
        let rt = RoundTrip::default();
        assert_eq!(rt.reserve(ms(3), ms(1), ms(20)), ms(3), "initial");
        for _ in 0..50 {
            rt.observe(400);
        }
        assert_eq!(rt.reserve(ms(3), ms(1), ms(20)), ms(1), "floor");
        for _ in 0..50 {
            rt.observe(100_000);
        }
        assert_eq!(rt.reserve(ms(3), ms(1), ms(20)), ms(20), "ceiling");
    }

    #[test]
    fn hop_reserve_starts_conservative_and_widens_with_jitter() {
        let steady = RoundTrip::default();
        assert_eq!(steady.hop_reserve(), HOP_INITIAL);
        for _ in 0..50 {
            steady.observe(300);
        }
        // 300 µs with no variation: the 1 ms floor.
        assert_eq!(steady.hop_reserve(), HOP_FLOOR);

        let jittery = RoundTrip::default();
        for i in 0..50 {
            jittery.observe(if i % 2 == 0 { 500 } else { 2500 });
        }
        let r = jittery.hop_reserve();
        assert!(r > Duration::from_millis(4) && r < HOP_CEILING, "{r:?}");
    }
}
