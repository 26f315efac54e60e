//! What a node did over the last minute or so, for `GetStatus`: its
//! searches' latencies and its answers' coverage, in two windows that move
//! by the clock, so that what the status page calls "the last minute" is
//! that, for a node that has stopped getting searches as for a busy one,
//! and a node that recovered stops showing its old partial answers.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// How long each of the two windows lasts: figures cover the last one to
/// two of them.
pub const WINDOW: Duration = Duration::from_secs(30);

/// The longest latency recorded, in µs (an hour); longer ones count as it.
const MAX_US: u64 = 3_600_000_000;

/// One window's searches and answers.
struct Window {
    /// Search latencies, in µs.
    latencies: Histogram<u64>,
    /// The sum of the answers' coverage (shards that answered over shards
    /// asked, each between 0 and 1).
    coverage_sum: f64,
    /// Answers whose coverage is summed.
    answers: u64,
}

impl Window {
    fn new() -> Self {
        Window {
            latencies: Histogram::new_with_bounds(1, MAX_US, 2).expect("valid bounds"),
            coverage_sum: 0.0,
            answers: 0,
        }
    }

    fn reset(&mut self) {
        self.latencies.reset();
        self.coverage_sum = 0.0;
        self.answers = 0;
    }
}

/// The figures of the recent windows, as of one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Searches over the windows.
    pub searches: u64,
    /// Their p50, p99 and p99.9, in µs (0 without searches).
    pub percentiles: [u64; 3],
    /// Answers over the windows whose coverage `coverage_mean` averages.
    pub answers: u64,
    /// The mean coverage of those answers (0 without answers: then it
    /// means nothing).
    pub coverage_mean: f64,
}

/// Searches and answers of the last minute or so.
pub struct Recent {
    current: Window,
    previous: Window,
    since: Instant,
}

impl Recent {
    /// Empty windows, the current one starting at `now`.
    pub fn new(now: Instant) -> Self {
        Recent {
            current: Window::new(),
            previous: Window::new(),
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

    /// Records a search that took `elapsed`, at `now`.
    pub fn record_search(&mut self, elapsed: Duration, now: Instant) {
        self.rotate(now);
        let us = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self.current.latencies.record(us.min(MAX_US));
    }

    /// Records an answer, at `now`, in which `coverage` of the shards asked
    /// answered (clamped to 0–1).
    pub fn record_answer(&mut self, coverage: f64, now: Instant) {
        self.rotate(now);
        let coverage = if coverage.is_nan() {
            0.0
        } else {
            coverage.clamp(0.0, 1.0)
        };
        self.current.coverage_sum += coverage;
        self.current.answers += 1;
    }

    /// The figures over the windows as of `now`.
    pub fn figures(&mut self, now: Instant) -> Figures {
        self.rotate(now);
        let mut both = self.current.latencies.clone();
        let _ = both.add(&self.previous.latencies);
        let q = |q: f64| {
            if both.is_empty() {
                0
            } else {
                both.value_at_quantile(q)
            }
        };
        let answers = self.current.answers + self.previous.answers;
        let coverage_sum = self.current.coverage_sum + self.previous.coverage_sum;
        Figures {
            searches: both.len(),
            percentiles: [q(0.5), q(0.99), q(0.999)],
            answers,
            coverage_mean: if answers == 0 {
                0.0
            } else {
                coverage_sum / answers as f64
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_of_more_than_two_windows_ago_are_no_longer_reported() {
        let start = Instant::now();
        let mut recent = Recent::new(start);
        for ms in 1..=10 {
            recent.record_search(Duration::from_millis(ms), start);
        }
        assert_eq!(recent.figures(start).searches, 10);
        // No search since: a window later they are still recent...
        assert_eq!(recent.figures(start + WINDOW).searches, 10);
        // ... two windows later they are not.
        let later = recent.figures(start + 3 * WINDOW);
        assert_eq!(later.searches, 0);
        assert_eq!(later.percentiles, [0, 0, 0]);
        // Nor after a long pause with no read in between.
        let mut idle = Recent::new(start);
        idle.record_search(Duration::from_millis(5), start);
        assert_eq!(idle.figures(start + 10 * WINDOW).searches, 0);
    }

    #[test]
    fn coverage_is_the_mean_of_recent_answers_only() {
        let start = Instant::now();
        let mut recent = Recent::new(start);
        // An outage: half the shards answer.
        for _ in 0..100 {
            recent.record_answer(0.5, start);
        }
        let during = recent.figures(start);
        assert_eq!(during.answers, 100);
        assert!((during.coverage_mean - 0.5).abs() < 1e-9, "{during:?}");
        // Recovered: every shard answers from then on.
        let recovered = start + WINDOW;
        for _ in 0..100 {
            recent.record_answer(1.0, recovered);
        }
        let both = recent.figures(recovered);
        assert!((both.coverage_mean - 0.75).abs() < 1e-9, "{both:?}");
        // Two windows after the outage only the recovered answers count.
        let after = recovered + WINDOW;
        recent.record_answer(1.0, after);
        let figures = recent.figures(after);
        assert_eq!(figures.answers, 101);
        assert_eq!(figures.coverage_mean, 1.0, "{figures:?}");
        // And with no answer for two windows there is no coverage to show.
        let idle = recent.figures(after + 2 * WINDOW);
        assert_eq!((idle.answers, idle.coverage_mean), (0, 0.0));
    }

    #[test]
    fn coverage_out_of_range_is_clamped() {
        let start = Instant::now();
        let mut recent = Recent::new(start);
        recent.record_answer(f64::NAN, start);
        recent.record_answer(2.0, start);
        assert_eq!(recent.figures(start).coverage_mean, 0.5);
    }
}
