//! The ranges the load tester's numeric settings must fall in, and parsers
//! that refuse a value outside them with the range named.
//!
//! A setting out of range does not fail loudly on its own: a sweep's rate
//! step of 0 repeats one rate forever and a negative one ends in a panic in
//! the arrival schedule, an in-flight limit of 0 waits forever for its first
//! permit, and a top-k above what nodes accept turns every request into an
//! error in a report that looks like any other. So every value is checked
//! where it is parsed, before anything is connected or sent, against the
//! ranges here; [`crate::schedule::LoadConfig::check`] checks the same ranges
//! for callers of the library.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use crate::record::HIGHEST_US;

/// The highest rate, requests per second, the load tester is asked for:
/// above what one tester's pacing thread can send (each send is a wake-up
/// of tens of microseconds), so a higher figure is a typo, not a test.
pub const MAX_RATE: f64 = 1_000_000.0;

/// The most gRPC connections (or closed-loop workers): each is an HTTP/2
/// connection with its keep-alive pings, and a few are enough to load any
/// root (requests are multiplexed on each).
pub const MAX_CONNECTIONS: usize = 1024;

/// The highest limit on requests in flight: tokio's semaphore refuses far
/// more, and a million in flight is already unbounded for any tree.
pub const MAX_IN_FLIGHT: usize = 1_000_000;

/// The longest measured duration, warm-up or capacity run: a day. Longer
/// runs are better done as several, and the clock arithmetic of a run must
/// not overflow.
pub const MAX_RUN: Duration = Duration::from_secs(86_400);

/// The longest `--timeout`: the top of the latency histograms
/// ([`HIGHEST_US`]), beyond which a latency could not be told apart.
pub const MAX_TIMEOUT: Duration = Duration::from_micros(HIGHEST_US);

/// The longest budget a request may carry, ms: the top of the latency
/// histograms too (answers later than that cannot be judged against it).
pub const MAX_BUDGET_MS: u32 = (HIGHEST_US / 1000) as u32;

/// The highest p99 a sweep's SLO may name, ms: the histograms' top.
pub const MAX_SLO_MS: f64 = (HIGHEST_US / 1000) as f64;

/// The highest Zipf exponent: at 100 the first query already takes all but
/// 1e-30 of the draws; a higher one is a typo.
pub const MAX_ZIPF: f64 = 100.0;

/// The highest step-load factor of capacity: 100 × C is far past any
/// overload worth measuring.
pub const MAX_FACTOR: f64 = 100.0;

/// The most runs a `--sweep` may plan, from `--rate` to `--max-rate` by
/// `--step`: each run lasts a warm-up and a duration, so more would take
/// days (and a tiny step is a mistake, not a plan).
pub const MAX_SWEEP_RUNS: u64 = 1000;

/// `s` as a whole number within `min..=max` (of `unit`), or why not, with
/// the range named.
pub fn whole<T>(s: &str, min: T, max: T, unit: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + Display + Copy,
{
    let range = format!("a whole number from {min} to {max} ({unit})");
    match s.trim().parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        Ok(_) => Err(format!("{s} is out of range: give {range}")),
        Err(_) => Err(format!("{s:?} is not {range}")),
    }
}

/// `s` as a number above 0 and at most `max` (of `unit`), or why not:
/// NaN and infinities are refused, as are 0 and negative values.
pub fn positive(s: &str, max: f64, unit: &str) -> Result<f64, String> {
    let range = format!("a number above 0 and at most {max} ({unit})");
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= max => Ok(v),
        Ok(_) => Err(format!("{s} is out of range: give {range}")),
        Err(_) => Err(format!("{s:?} is not {range}")),
    }
}

/// `s` as a number within `min..=max` (of `unit`), or why not: NaN and
/// infinities are refused.
pub fn within(s: &str, min: f64, max: f64, unit: &str) -> Result<f64, String> {
    let range = format!("a number from {min} to {max} ({unit})");
    match s.trim().parse::<f64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        Ok(_) => Err(format!("{s} is out of range: give {range}")),
        Err(_) => Err(format!("{s:?} is not {range}")),
    }
}

/// `v` as people read it in a message: plain decimals for ordinary
/// magnitudes, scientific notation for the rest (Rust's `Display` writes
/// 1e-300 with three hundred digits).
pub fn show(v: f64) -> String {
    if v == 0.0 || !v.is_finite() || (1e-4..1e15).contains(&v.abs()) {
        v.to_string()
    } else {
        format!("{v:e}")
    }
}

/// The runs a sweep from `rate` to `max_rate` by `step` makes, or why it
/// cannot be made: `max_rate` below `rate`, or more than
/// [`MAX_SWEEP_RUNS`] runs.
pub fn sweep_runs(rate: f64, step: f64, max_rate: f64) -> Result<u64, String> {
    if max_rate < rate {
        return Err(format!(
            "--max-rate {} is below --rate {}: a sweep steps up from --rate to --max-rate",
            show(max_rate),
            show(rate)
        ));
    }
    let runs = ((max_rate - rate) / step).floor() + 1.0;
    if runs > MAX_SWEEP_RUNS as f64 {
        return Err(format!(
            "a sweep from --rate {} to --max-rate {} by --step {} is {} runs: \
             at most {MAX_SWEEP_RUNS} (raise --step or lower --max-rate)",
            show(rate),
            show(max_rate),
            show(step),
            show(runs)
        ));
    }
    Ok(runs as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_name_their_range() {
        assert_eq!(whole::<u32>("7", 1, 10, "hits"), Ok(7));
        let err = whole::<u32>("0", 1, 10, "hits").unwrap_err();
        assert_eq!(
            err,
            "0 is out of range: give a whole number from 1 to 10 (hits)"
        );
        for bad in ["-1", "2.5", "1e3", "many", "99999999999999999999"] {
            let err = whole::<usize>(bad, 1, 10, "hits").unwrap_err();
            assert!(err.contains("from 1 to 10"), "{bad}: {err}");
        }
    }

    #[test]
    fn positive_numbers_refuse_zero_negative_nan_and_infinity() {
        assert_eq!(positive("0.5", 10.0, "requests per second"), Ok(0.5));
        assert_eq!(positive("10", 10.0, "requests per second"), Ok(10.0));
        for bad in ["0", "-60", "NaN", "inf", "-inf", "1e300", "10.01", "fast"] {
            let err = positive(bad, 10.0, "requests per second").unwrap_err();
            assert!(
                err.contains("above 0 and at most 10") && err.contains(bad),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn ranges_include_their_ends() {
        assert_eq!(within("0", 0.0, 1.0, "x"), Ok(0.0));
        assert_eq!(within("1", 0.0, 1.0, "x"), Ok(1.0));
        for bad in ["-0.1", "1.1", "NaN", "inf"] {
            assert!(within(bad, 0.0, 1.0, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_are_shown_readably() {
        assert_eq!(show(100.0), "100");
        assert_eq!(show(0.001), "0.001");
        assert_eq!(show(1e-300), "1e-300");
        assert_eq!(show(1e300), "1e300");
        assert_eq!(show(f64::NAN), "NaN");
    }

    #[test]
    fn sweeps_are_bounded() {
        assert_eq!(sweep_runs(100.0, 100.0, 5000.0), Ok(50));
        assert_eq!(sweep_runs(100.0, 100.0, 100.0), Ok(1));
        let err = sweep_runs(100.0, 0.001, 5000.0).unwrap_err();
        assert!(err.contains("4900001 runs: at most 1000"), "{err}");
        let err = sweep_runs(1.0, 1e-300, 2.0).unwrap_err();
        assert!(
            err.contains("by --step 1e-300 is ") && err.contains("e299 runs: at most 1000"),
            "{err}"
        );
        let err = sweep_runs(500.0, 100.0, 50.0).unwrap_err();
        assert!(err.contains("--max-rate 50 is below --rate 500"), "{err}");
    }
}
