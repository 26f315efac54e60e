//! What the root tells a client about an incomplete answer.
//!
//! A partial answer is still an answer: the client gets it, with `coverage`
//! saying what is missing. The root turns it into an error only when nothing
//! at all could be answered, or when the client asked for strict mode with
//! `min_coverage` and the answer falls short.
//!
//! The code tells the client whether asking again may help: a shard that ran
//! out of time or failed may answer next time (`DEADLINE_EXCEEDED`,
//! `UNAVAILABLE`), but when every shard refused because it does not hold
//! the version the request is pinned to, none will (`FAILED_PRECONDITION`).
//! When every shard refused for load, the tree is past its capacity and the
//! client is told so as the root itself would (`RESOURCE_EXHAUSTED`).

use searchtree_parent::{InnerCounter, NodeError};
use searchtree_proto::SearchParams;
use searchtree_proto::pb::{Coverage, FailureReason, SearchResponse};
use searchtree_proto::query::truncate_bytes;

/// The longest status message the root sends, in bytes: it travels in an
/// HTTP/2 header (`grpc-message`, percent-encoded), and clients refuse
/// headers past a few kilobytes. With hundreds of shards failing, the
/// details are cut; the response's coverage is not sent with an error, so
/// the headline and the first failures are what the client learns.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 1024;

/// Why an answer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No shard answered.
    NothingAnswered,
    /// Fewer shards answered than `min_coverage` asks for.
    BelowMinCoverage,
}

impl Refusal {
    /// The counter this refusal bumps.
    pub fn counter(self) -> InnerCounter {
        match self {
            Refusal::NothingAnswered => InnerCounter::NothingAnswered,
            Refusal::BelowMinCoverage => InnerCounter::StrictRefusals,
        }
    }
}

/// Passes `response` through, or refuses it: `DEADLINE_EXCEEDED` when shards
/// are missing because time ran out, `FAILED_PRECONDITION` when no shard
/// answered and every one lacks the version asked for, `RESOURCE_EXHAUSTED`
/// when none answered and every one refused for load, `UNAVAILABLE` when
/// they failed otherwise. The message carries the coverage and what went
/// wrong with each missing shard.
pub fn judge(
    params: &SearchParams,
    response: SearchResponse,
) -> Result<SearchResponse, (Refusal, NodeError)> {
    let c = response.coverage.clone().unwrap_or_default();
    if c.shards_total == 0 {
        return Ok(response);
    }
    let refusal = if c.shards_ok == 0 {
        Refusal::NothingAnswered
    } else if f64::from(c.shards_ok) / f64::from(c.shards_total) < params.min_coverage {
        Refusal::BelowMinCoverage
    } else {
        return Ok(response);
    };
    let timed_out = c.shards_timed_out > 0;
    let all_failed_with = |reason: FailureReason| {
        refusal == Refusal::NothingAnswered
            && !timed_out
            && !c.failures.is_empty()
            && c.failures.iter().all(|f| f.reason == reason as i32)
    };
    let version_missing = all_failed_with(FailureReason::VersionMissing);
    let overloaded = all_failed_with(FailureReason::Overloaded);
    let headline = match refusal {
        Refusal::NothingAnswered if version_missing => format!(
            "no shard could answer: none holds version {}",
            params.version
        ),
        Refusal::NothingAnswered if overloaded => {
            "no shard could answer: every one is at its limit; retry after a moment".to_string()
        }
        Refusal::NothingAnswered => "no shard could answer".to_string(),
        Refusal::BelowMinCoverage => format!(
            "coverage {} is below min_coverage {:.1}%",
            describe(&c),
            params.min_coverage * 100.0
        ),
    };
    let details: Vec<String> = c
        .failures
        .iter()
        .map(|f| format!("shard {}: {}", f.shard, f.message))
        .collect();
    let message = truncate_bytes(
        &format!("{headline}: {}", details.join("; ")),
        MAX_STATUS_MESSAGE_BYTES,
    );
    let error = if timed_out {
        NodeError::Timeout(message)
    } else if version_missing {
        NodeError::VersionMissing(message)
    } else if overloaded {
        NodeError::Overloaded(message)
    } else {
        NodeError::Unavailable(message)
    };
    Err((refusal, error))
}

fn describe(c: &Coverage) -> String {
    format!(
        "{}/{} shards ({:.1}%; {} timed out, {} failed)",
        c.shards_ok,
        c.shards_total,
        100.0 * f64::from(c.shards_ok) / f64::from(c.shards_total),
        c.shards_timed_out,
        c.shards_failed
    )
}

#[cfg(test)]
mod tests {
    use searchtree_proto::pb::{FailureReason, ShardFailure};

    use super::*;

    fn params(min_coverage: f64) -> SearchParams {
        SearchParams {
            hops: 0,
            profile: Default::default(),
            query: "q".into(),
            top_k: 10,
            budget: None,
            min_coverage,
            canary: false,
            priority: searchtree_proto::pb::Priority::Interactive,
            exact_total_hits: false,
            ids_only: false,
            version: 0,
        }
    }

    fn answer(ok: u32, timed_out: u32, failed: u32) -> SearchResponse {
        let failures = (0..timed_out)
            .map(|s| (s, FailureReason::Timeout))
            .chain((timed_out..timed_out + failed).map(|s| (s, FailureReason::Unavailable)))
            .map(|(shard, reason)| ShardFailure {
                shard,
                reason: reason as i32,
                message: format!("leaf-{shard}: trouble"),
            })
            .collect();
        SearchResponse {
            coverage: Some(Coverage {
                shards_total: ok + timed_out + failed,
                shards_ok: ok,
                shards_timed_out: timed_out,
                shards_failed: failed,
                failures,
                ..Default::default()
            }),
            partial: ok < ok + timed_out + failed,
            ..Default::default()
        }
    }

    #[test]
    fn partial_answers_pass_unless_strict() {
        assert!(judge(&params(0.0), answer(3, 1, 0)).is_ok());
        assert!(judge(&params(0.75), answer(3, 1, 0)).is_ok());
        assert!(judge(&params(1.0), answer(4, 0, 0)).is_ok());
    }

    #[test]
    fn strict_mode_says_why_with_the_right_code() {
        let (refusal, err) = judge(&params(1.0), answer(3, 1, 0)).unwrap_err();
        assert_eq!(refusal, Refusal::BelowMinCoverage);
        let NodeError::Timeout(msg) = err else {
            panic!("{err:?}")
        };
        assert!(msg.contains("3/4 shards (75.0%"), "{msg}");
        assert!(msg.contains("below min_coverage 100.0%"));
        assert!(msg.contains("shard 0: leaf-0: trouble"));

        let (_, err) = judge(&params(0.9), answer(3, 0, 1)).unwrap_err();
        assert!(matches!(err, NodeError::Unavailable(_)));
    }

    #[test]
    fn nothing_answered_is_an_error_even_when_not_strict() {
        let (refusal, err) = judge(&params(0.0), answer(0, 0, 4)).unwrap_err();
        assert_eq!(refusal, Refusal::NothingAnswered);
        assert!(
            matches!(err, NodeError::Unavailable(ref m) if m.starts_with("no shard could answer"))
        );
        let (_, err) = judge(&params(0.0), answer(0, 4, 0)).unwrap_err();
        assert!(matches!(err, NodeError::Timeout(_)));
    }

    /// `answer` with the failures of `shards` reported as version-missing.
    fn lacking(mut response: SearchResponse, shards: &[u32]) -> SearchResponse {
        let c = response.coverage.as_mut().unwrap();
        for f in c.failures.iter_mut().filter(|f| shards.contains(&f.shard)) {
            f.reason = FailureReason::VersionMissing as i32;
            f.message = format!(
                "leaf-{}: error: FailedPrecondition: version-missing: shard {} holds versions [1], not 9",
                f.shard, f.shard
            );
        }
        response
    }

    #[test]
    fn a_version_no_shard_holds_is_a_failed_precondition_not_worth_retrying() {
        let pinned = SearchParams {
            version: 9,
            ..params(0.0)
        };
        let (refusal, err) = judge(&pinned, lacking(answer(0, 0, 2), &[0, 1])).unwrap_err();
        assert_eq!(refusal, Refusal::NothingAnswered);
        let NodeError::VersionMissing(msg) = err else {
            panic!("{err:?}")
        };
        assert!(
            msg.starts_with("no shard could answer: none holds version 9: shard 0: "),
            "{msg}"
        );
        assert!(msg.contains("version-missing: shard 1 holds versions [1], not 9"));
        // Mixed with other failures, or with shards out of time: retryable.
        let (_, err) = judge(&pinned, lacking(answer(0, 0, 2), &[0])).unwrap_err();
        assert!(matches!(err, NodeError::Unavailable(_)), "{err:?}");
        let (_, err) = judge(&pinned, lacking(answer(0, 1, 1), &[1])).unwrap_err();
        assert!(matches!(err, NodeError::Timeout(_)), "{err:?}");
        // Some shards answered: a partial answer, as for any failure.
        assert!(judge(&pinned, lacking(answer(1, 0, 1), &[1])).is_ok());
    }

    #[test]
    fn every_shard_refusing_for_load_is_resource_exhausted() {
        let mut all = answer(0, 0, 3);
        for f in &mut all.coverage.as_mut().unwrap().failures {
            f.reason = FailureReason::Overloaded as i32;
        }
        let (refusal, err) = judge(&params(0.0), all.clone()).unwrap_err();
        assert_eq!(refusal, Refusal::NothingAnswered);
        let NodeError::Overloaded(msg) = err else {
            panic!("{err:?}")
        };
        assert!(msg.contains("every one is at its limit; retry"), "{msg}");
        // One of them down for another reason: the tree is not just busy.
        all.coverage.as_mut().unwrap().failures[2].reason = FailureReason::Unavailable as i32;
        let (_, err) = judge(&params(0.0), all).unwrap_err();
        assert!(matches!(err, NodeError::Unavailable(_)), "{err:?}");
    }
}
