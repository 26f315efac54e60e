//! How long a node may take to answer: the request's budget.
//!
//! A request's budget is the smaller of its `budget_ms` and the gRPC deadline
//! its caller set (`grpc-timeout`); with neither, the node's default applies,
//! and no budget exceeds the node's maximum. Parents hand their children what
//! remains minus a reserve for their own merge and the hop back, so that every
//! level's partial answer reaches its caller before the caller's deadline.

use std::time::Duration;

/// `d` in whole microseconds, saturating: how every `*_us` field of the API
/// is filled.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A node's budget limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetPolicy {
    /// Used when a request has neither `budget_ms` nor a gRPC deadline.
    pub default: Duration,
    /// No request may take longer than this.
    pub max: Duration,
}

/// The default budget of a request that names none.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(100);
/// The longest budget a node grants by default.
pub const MAX_BUDGET: Duration = Duration::from_secs(30);

impl Default for BudgetPolicy {
    fn default() -> Self {
        BudgetPolicy {
            default: DEFAULT_BUDGET,
            max: MAX_BUDGET,
        }
    }
}

impl BudgetPolicy {
    /// The effective budget given the request's `budget_ms` and gRPC deadline.
    pub fn budget(&self, budget_ms: Option<Duration>, grpc_timeout: Option<Duration>) -> Duration {
        let asked = match (budget_ms, grpc_timeout) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => self.default,
        };
        asked.min(self.max)
    }

    /// The effective budget of a tonic request whose `budget_ms` is given.
    pub fn budget_of<T>(
        &self,
        request: &tonic::Request<T>,
        budget_ms: Option<Duration>,
    ) -> Duration {
        self.budget(budget_ms, grpc_timeout(request))
    }
}

/// The deadline a gRPC caller set on `request` (its `grpc-timeout` header),
/// for adapters to hand to tonic-free logic.
pub fn grpc_timeout<T>(request: &tonic::Request<T>) -> Option<Duration> {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit
/// (`H`ours, `M`inutes, `S`econds, `m`illis, `u`micros, `n`anos).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_smaller_of_budget_and_deadline_capped_by_the_maximum() {
        let policy = BudgetPolicy {
            default: 100 * MS,
            max: 1000 * MS,
        };
        assert_eq!(policy.budget(None, None), 100 * MS);
        assert_eq!(policy.budget(Some(50 * MS), None), 50 * MS);
        assert_eq!(policy.budget(None, Some(70 * MS)), 70 * MS);
        assert_eq!(policy.budget(Some(50 * MS), Some(30 * MS)), 30 * MS);
        assert_eq!(policy.budget(Some(50 * MS), Some(80 * MS)), 50 * MS);
        assert_eq!(policy.budget(Some(5000 * MS), None), 1000 * MS);
    }

    #[test]
    fn reads_grpc_timeout_headers() {
        assert_eq!(parse_grpc_timeout("100m"), Some(100 * MS));
        assert_eq!(parse_grpc_timeout("2S"), Some(2000 * MS));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("1500u"),
            Some(Duration::from_micros(1500))
        );
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "10", "10x", "123456789S", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn tonic_requests_with_a_timeout_are_read() {
        let mut request = tonic::Request::new(());
        request.set_timeout(Duration::from_millis(40));
        let policy = BudgetPolicy::default();
        assert_eq!(policy.budget_of(&request, Some(90 * MS)), 40 * MS);
        assert_eq!(
            policy.budget_of(&tonic::Request::new(()), None),
            DEFAULT_BUDGET
        );
    }
}
