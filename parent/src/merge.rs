//! Merging children's answers into one: a pure, associative function.
//!
//! Like tantivy's `Collector::merge_fruits`, merging is independent of how the
//! tree groups its leaves: merging `[a, b, c]` at once, or `[merge(a, b), c]`,
//! gives the same response. That is what lets a tree of any depth return the
//! same top-k as one index over the whole corpus.

use searchtree_proto::hit_order;
use searchtree_proto::pb::{Coverage, Hit, SearchResponse};

/// Merges children's responses into the best `top_k` hits overall, with
/// match counts summed, coverage combined and the children's snapshots
/// listed (one name when they agree) and the highest version named. `took_us` and `hits_unfetched` are
/// left at 0 for the caller to fill in.
pub fn merge(top_k: usize, parts: impl IntoIterator<Item = SearchResponse>) -> SearchResponse {
    let mut parts: Vec<SearchResponse> = parts.into_iter().collect();
    let mut out = SearchResponse {
        hits: best_hits(top_k, &mut parts),
        coverage: Some(Coverage::default()),
        ..Default::default()
    };
    let coverage = out.coverage.as_mut().expect("just set");
    let (failures, sources) = parts
        .iter()
        .filter_map(|p| p.coverage.as_ref())
        .fold((0, 0), |(f, s), c| {
            (f + c.failures.len(), s + c.sources.len())
        });
    coverage.failures.reserve_exact(failures);
    coverage.sources.reserve_exact(sources);
    out.snapshot = snapshots(&parts);
    for part in parts {
        out.total_hits += part.total_hits;
        out.total_hits_is_lower_bound |= part.total_hits_is_lower_bound;
        out.partial |= part.partial;
        out.version = out.version.max(part.version);
        if let Some(c) = part.coverage {
            add_coverage(coverage, c);
        }
    }
    coverage.failures.sort_by_key(|f| f.shard);
    coverage.sources.sort_by_key(|s| s.shard);
    out.partial |= coverage.shards_ok < coverage.shards_total;
    // Matches in shards that did not answer, or were cut short, are not
    // counted: a partial answer's count is a lower bound.
    out.total_hits_is_lower_bound |= out.partial;
    out
}

/// The snapshots `parts` were answered from, each named once, sorted,
/// comma-separated. Usually every part names the same one (a tree answers
/// at one version), which is kept without taking any apart.
fn snapshots(parts: &[SearchResponse]) -> String {
    let mut named = parts
        .iter()
        .map(|p| p.snapshot.as_str())
        .filter(|s| !s.is_empty());
    let Some(first) = named.next() else {
        return String::new();
    };
    if !first.contains(',') && named.all(|s| s == first) {
        return first.to_owned();
    }
    let all: std::collections::BTreeSet<&str> = parts
        .iter()
        .flat_map(|p| p.snapshot.split(','))
        .filter(|s| !s.is_empty())
        .collect();
    all.into_iter().collect::<Vec<_>>().join(",")
}

/// The best `top_k` hits of all `parts`, in order, taken out of them. They
/// are chosen by position, so only the winners move (a parent merging many
/// children's hits spent its time copying the losers).
fn best_hits(top_k: usize, parts: &mut [SearchResponse]) -> Vec<Hit> {
    let mut order = Vec::new();
    rank_best(top_k, parts.len(), |p| &parts[p].hits, &mut order);
    order
        .into_iter()
        .map(|(p, i)| std::mem::take(&mut parts[p as usize].hits[i as usize]))
        .collect()
}

/// Fills `order` with the positions (answer, hit) of the best `top_k` hits
/// of `answers` answers, whose hits `hits(answer)` gives, best first. The
/// order is total (ties broken by id), so selecting and sorting unstably is
/// exact.
pub(crate) fn rank_best<'a>(
    top_k: usize,
    answers: usize,
    hits: impl Fn(usize) -> &'a [Hit],
    order: &mut Vec<(u32, u32)>,
) {
    order.clear();
    if top_k == 0 {
        return;
    }
    for p in 0..answers {
        order.extend((0..hits(p).len() as u32).map(|i| (p as u32, i)));
    }
    let hit = |&(p, i): &(u32, u32)| &hits(p as usize)[i as usize];
    let by_rank = |a: &(u32, u32), b: &(u32, u32)| hit_order(hit(a), hit(b));
    if order.len() > top_k {
        order.select_nth_unstable_by(top_k - 1, by_rank);
        order.truncate(top_k);
    }
    order.sort_unstable_by(by_rank);
}

/// Adds `other`'s counts and failures to `into`.
pub fn add_coverage(into: &mut Coverage, other: Coverage) {
    into.shards_total += other.shards_total;
    into.shards_ok += other.shards_ok;
    into.shards_timed_out += other.shards_timed_out;
    into.shards_failed += other.shards_failed;
    into.docs_total += other.docs_total;
    into.docs_searched += other.docs_searched;
    into.failures.extend(other.failures);
    into.sources.extend(other.sources);
}

#[cfg(test)]
mod tests {
    use super::*;
    use searchtree_proto::pb::{FailureReason, Hit, ShardFailure};

    fn hit(id: &str, score: f32, shard: u32) -> Hit {
        Hit {
            doc_id: id.into(),
            score,
            shard,
            ..Default::default()
        }
    }

    fn answer(shard: u32, hits: &[(&str, f32)]) -> SearchResponse {
        SearchResponse {
            hits: hits.iter().map(|(id, s)| hit(id, *s, shard)).collect(),
            total_hits: hits.len() as u64 * 3,
            coverage: Some(Coverage {
                shards_total: 1,
                shards_ok: 1,
                docs_total: 10,
                docs_searched: 10,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn failed(shard: u32) -> SearchResponse {
        SearchResponse {
            coverage: Some(Coverage {
                shards_total: 1,
                shards_failed: 1,
                failures: vec![ShardFailure {
                    shard,
                    reason: FailureReason::Unavailable as i32,
                    message: "down".into(),
                }],
                ..Default::default()
            }),
            partial: true,
            ..Default::default()
        }
    }

    fn ids(r: &SearchResponse) -> Vec<&str> {
        r.hits.iter().map(|h| h.doc_id.as_str()).collect()
    }

    fn parts() -> Vec<SearchResponse> {
        vec![
            answer(0, &[("d", 3.0), ("a", 2.0), ("x", 0.5)]),
            answer(1, &[("c", 3.0), ("b", 2.0)]),
            failed(2),
            answer(3, &[("e", 2.0), ("f", 1.0)]),
        ]
    }

    #[test]
    fn orders_by_score_then_id_and_truncates() {
        let merged = merge(4, parts());
        assert_eq!(ids(&merged), ["c", "d", "a", "b"]);
        assert_eq!(merged.total_hits, 21);
    }

    #[test]
    fn fewer_hits_than_top_k_are_all_returned() {
        let merged = merge(100, parts());
        assert_eq!(ids(&merged), ["c", "d", "a", "b", "e", "f", "x"]);
    }

    #[test]
    fn any_grouping_gives_the_same_answer() {
        let flat = merge(3, parts());
        for split in 1..4 {
            let (left, right) = {
                let mut p = parts();
                let right = p.split_off(split);
                (p, right)
            };
            let nested = merge(3, [merge(3, left), merge(3, right)]);
            assert_eq!(nested, flat, "split at {split}");
        }
        let p = parts();
        let reversed = merge(3, p.into_iter().rev());
        assert_eq!(reversed, flat);
    }

    #[test]
    fn coverage_sums_and_marks_partial() {
        let merged = merge(3, parts());
        let c = merged.coverage.unwrap();
        assert_eq!((c.shards_total, c.shards_ok, c.shards_failed), (4, 3, 1));
        assert_eq!((c.docs_total, c.docs_searched), (30, 30));
        assert_eq!(c.failures.len(), 1);
        assert!(merged.partial);
        let full = merge(3, [answer(0, &[("a", 1.0)]), answer(1, &[])]);
        assert!(!full.partial);
    }

    #[test]
    fn snapshots_agree_or_are_listed_and_lower_bounds_spread() {
        let at = |snapshot: &str, lower: bool| SearchResponse {
            snapshot: snapshot.into(),
            total_hits_is_lower_bound: lower,
            ..answer(0, &[])
        };
        let same = merge(3, [at("v1", false), at("v1", false)]);
        assert_eq!(same.snapshot, "v1");
        assert!(!same.total_hits_is_lower_bound);
        // A shard missing: its matches are not counted.
        let partial = merge(3, [at("v1", false), at("v1", false), failed(2)]);
        assert_eq!(partial.snapshot, "v1");
        assert!(partial.partial && partial.total_hits_is_lower_bound);
        let mixed = merge(3, [at("v2", true), at("v1", false)]);
        assert_eq!(mixed.snapshot, "v1,v2");
        assert!(mixed.total_hits_is_lower_bound);
        let nested = merge(3, [mixed, at("v1", false)]);
        assert_eq!(nested.snapshot, "v1,v2");
    }

    #[test]
    fn ties_across_children_break_by_id() {
        let merged = merge(
            2,
            [
                answer(0, &[("m", 1.0), ("z", 1.0)]),
                answer(1, &[("b", 1.0), ("n", 1.0)]),
            ],
        );
        assert_eq!(ids(&merged), ["b", "m"]);
    }
}
