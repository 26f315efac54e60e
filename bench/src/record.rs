//! What a load test records about each request.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use searchtree_proto::pb::SearchResponse;

/// The histogram's range: 1 µs to 5 minutes, 3 significant digits. Fixed
/// bounds, so it never resizes (and skews nothing) mid-run; a latency beyond
/// the top is recorded at the top, and counted in `saturated`.
pub const LOWEST_US: u64 = 1;
/// See [`LOWEST_US`].
pub const HIGHEST_US: u64 = 300_000_000;
/// See [`LOWEST_US`].
pub const SIGFIGS: u8 = 3;

/// Everything measured over the recorded (post-warm-up) requests.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Latency in µs, from intended send time to completion.
    pub latency: Histogram<u64>,
    /// Requests sent.
    pub sent: u64,
    /// Requests answered with a response.
    pub completed: u64,
    /// Requests answered with an error, by gRPC code name.
    pub errors: BTreeMap<String, u64>,
    /// Completed responses marked partial.
    pub partial: u64,
    /// Sum of the shard-coverage fractions of completed responses.
    pub coverage_sum: f64,
    /// The lowest shard-coverage fraction seen.
    pub coverage_min: f64,
    /// Latencies beyond the histogram's top.
    pub saturated: u64,
    /// Queries refused as invalid, with their text (the first few).
    pub invalid_queries: Vec<(String, String)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            latency: Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIGS)
                .expect("valid bounds"),
            sent: 0,
            completed: 0,
            errors: BTreeMap::new(),
            partial: 0,
            coverage_sum: 0.0,
            coverage_min: 1.0,
            saturated: 0,
            invalid_queries: Vec::new(),
        }
    }
}

impl Recorder {
    /// Records one finished request: its latency and what came back.
    pub fn record(
        &mut self,
        latency: Duration,
        query: &str,
        result: &Result<SearchResponse, tonic::Status>,
    ) {
        let us = (latency.as_micros() as u64).max(LOWEST_US);
        if us > HIGHEST_US {
            self.saturated += 1;
        }
        self.latency.saturating_record(us);
        match result {
            Ok(r) => {
                self.completed += 1;
                self.partial += u64::from(r.partial);
                let fraction = r.coverage.as_ref().map_or(1.0, |c| {
                    if c.shards_total == 0 {
                        1.0
                    } else {
                        f64::from(c.shards_ok) / f64::from(c.shards_total)
                    }
                });
                self.coverage_sum += fraction;
                self.coverage_min = self.coverage_min.min(fraction);
            }
            Err(status) => {
                *self.errors.entry(code_name(status.code())).or_default() += 1;
                if status.code() == tonic::Code::InvalidArgument && self.invalid_queries.len() < 10
                {
                    self.invalid_queries
                        .push((query.to_string(), status.message().to_string()));
                }
            }
        }
    }

    /// Records a request still unanswered when the run gave up on it.
    pub fn record_abandoned(&mut self, waited: Duration) {
        self.latency
            .saturating_record((waited.as_micros() as u64).max(LOWEST_US));
        *self.errors.entry("CLIENT_GAVE_UP".into()).or_default() += 1;
    }

    /// Errors of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The gRPC name of a status code, as in the spec (`DEADLINE_EXCEEDED`).
pub fn code_name(code: tonic::Code) -> String {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
    .to_string()
}
