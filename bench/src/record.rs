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
    /// Latency in µs of the requests answered with a response (partial or
    /// not, in time or late) alone: fast rejections and errors would
    /// otherwise flatter the tail. Same bounds as `latency`.
    pub latency_ok: Histogram<u64>,
    /// Responses that were complete (not partial, every shard answered) and
    /// came back within `budget`: what goodput counts.
    pub good: u64,
    /// The requests' budget, against which `good` is judged (from intended
    /// send time, as users feel it); `None`: any complete answer is good.
    pub budget: Option<Duration>,
    /// The load tester's own CPU use over the measured window, as a fraction
    /// of one core (see [`crate::cpu`]); `None` if not measured.
    pub loadgen_cpu: Option<f64>,
    /// Whether the target ran inside the load tester's process (so
    /// `loadgen_cpu` includes the searching itself).
    pub target_in_process: bool,
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
    /// The slowest path of each profiled answer ([`crate::tail`]).
    pub slow_paths: Vec<crate::tail::SlowPath>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            latency: histogram(),
            sent: 0,
            completed: 0,
            latency_ok: histogram(),
            good: 0,
            budget: None,
            loadgen_cpu: None,
            target_in_process: false,
            errors: BTreeMap::new(),
            partial: 0,
            coverage_sum: 0.0,
            coverage_min: 1.0,
            saturated: 0,
            invalid_queries: Vec::new(),
            slow_paths: Vec::new(),
        }
    }
}

/// An empty histogram with the fixed bounds above.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIGS).expect("valid bounds")
}

impl Recorder {
    /// A recorder for requests sent with `budget_ms` (0: the root's default,
    /// unknown here, so any complete answer counts as good).
    pub fn with_budget(budget_ms: u32) -> Self {
        Recorder {
            budget: (budget_ms > 0).then(|| Duration::from_millis(u64::from(budget_ms))),
            ..Recorder::default()
        }
    }

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
                self.latency_ok.saturating_record(us);
                self.partial += u64::from(r.partial);
                let full = r
                    .coverage
                    .as_ref()
                    .is_none_or(|c| c.shards_ok >= c.shards_total);
                let fraction = r.coverage.as_ref().map_or(1.0, |c| {
                    if c.shards_total == 0 {
                        1.0
                    } else {
                        f64::from(c.shards_ok) / f64::from(c.shards_total)
                    }
                });
                self.coverage_sum += fraction;
                self.coverage_min = self.coverage_min.min(fraction);
                if let Some(profile) = &r.profile {
                    self.slow_paths.push(crate::tail::slow_path(us, profile));
                }
                let in_time = self.budget.is_none_or(|b| latency <= b);
                if !r.partial && full && in_time {
                    self.good += 1;
                }
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

    /// Requests the tree refused for overload (`RESOURCE_EXHAUSTED`): shed on
    /// purpose, fast and cheap, unlike every other error.
    pub fn rejected(&self) -> u64 {
        self.errors.get(REJECTED).copied().unwrap_or(0)
    }
}

/// The code name of a request shed for overload.
pub const REJECTED: &str = "RESOURCE_EXHAUSTED";

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

#[cfg(test)]
mod tests {
    use super::*;
    use searchtree_proto::pb::Coverage;

    fn answer(partial: bool, shards_ok: u32) -> Result<SearchResponse, tonic::Status> {
        Ok(SearchResponse {
            partial,
            coverage: Some(Coverage {
                shards_total: 4,
                shards_ok,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// One of each outcome, with a 100 ms budget.
    fn mixed() -> Recorder {
        let mut r = Recorder::with_budget(100);
        let ms = Duration::from_millis;
        r.sent = 7;
        r.record(ms(10), "q", &answer(false, 4)); // complete, in budget: good
        r.record(ms(100), "q", &answer(false, 4)); // exactly at the budget: good
        r.record(ms(20), "q", &answer(true, 3)); // partial
        r.record(ms(30), "q", &answer(false, 3)); // missing a shard, not marked partial
        r.record(ms(400), "q", &answer(false, 4)); // complete but late
        r.record(
            ms(1),
            "q",
            &Err(tonic::Status::resource_exhausted("overloaded")),
        );
        r.record(ms(2), "q", &Err(tonic::Status::internal("boom")));
        r
    }

    #[test]
    fn only_complete_answers_within_the_budget_are_good() {
        let r = mixed();
        assert_eq!(r.completed, 5);
        assert_eq!(r.good, 2);
        assert_eq!(r.partial, 1);
    }

    #[test]
    fn latency_ok_holds_answers_alone() {
        let r = mixed();
        assert_eq!(r.latency.len(), 7);
        assert_eq!(r.latency_ok.len(), 5);
        // The 1 ms rejection and the 2 ms error are in `latency`, not here.
        assert!(r.latency_ok.min() >= 9_990, "{}", r.latency_ok.min());
        assert!(r.latency.min() <= 1_001);
        assert!(r.latency_ok.max() >= 399_000);
    }

    #[test]
    fn rejections_are_counted_apart_from_other_errors() {
        let r = mixed();
        assert_eq!(r.rejected(), 1);
        assert_eq!(r.error_count(), 2);
        assert_eq!(r.errors["INTERNAL"], 1);
        assert_eq!(r.completed + r.error_count(), r.sent);
    }

    #[test]
    fn without_a_budget_any_complete_answer_is_good() {
        let mut r = Recorder::with_budget(0);
        r.record(Duration::from_secs(5), "q", &answer(false, 4));
        r.record(Duration::from_secs(5), "q", &answer(true, 4));
        r.record(
            Duration::from_millis(1),
            "q",
            &Ok(SearchResponse::default()),
        );
        assert_eq!(r.good, 2);
    }

    #[test]
    fn abandoned_requests_are_not_answers() {
        let mut r = Recorder::with_budget(100);
        r.record_abandoned(Duration::from_secs(30));
        assert_eq!((r.good, r.latency_ok.len(), r.latency.len()), (0, 0, 1));
    }
}
