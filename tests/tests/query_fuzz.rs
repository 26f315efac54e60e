//! Property tests of the query path: whatever the query string, the real
//! validation and a real shard either answer or refuse it as the caller's
//! mistake (`INVALID_ARGUMENT`), with a short message — never a panic, never
//! an internal error, never a stack overflow.
//!
//! Three generators: arbitrary Unicode strings, soup made of the grammar's
//! special characters, and a grammar-aware generator that nests groups,
//! quotes, fields, ranges, sets, wildcards, fuzzy and slop suffixes, boosts
//! and boolean operators, then mutates the result (cuts it, repeats it,
//! unbalances it). Case counts are fixed so CI time is bounded.

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use searchtree_leaf::collector::Stop;
use searchtree_leaf::searcher::SearchError;
use searchtree_leaf::{Shard, ShardSearcher};
use searchtree_proto::pb::SearchRequest;
use searchtree_proto::{QueryLimits, RequestError, SearchParams};
use searchtree_tests::fixture;

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// Longest error message allowed: it travels in an HTTP/2 header.
const MAX_MESSAGE: usize = 300;

fn searcher() -> &'static ShardSearcher {
    static SEARCHER: OnceLock<ShardSearcher> = OnceLock::new();
    SEARCHER.get_or_init(|| {
        let shard = Shard::open(&fixture(TMP).sharded.join("shards/shard-000")).expect("shard");
        ShardSearcher::new(shard)
    })
}

/// What a leaf does with `query`, minus the network: validate, then search.
/// Returns Err with a reason when the outcome is not acceptable.
fn run(query: &str) -> Result<(), String> {
    let request = SearchRequest {
        query: query.to_string(),
        top_k: 10,
        ..Default::default()
    };
    let params = match SearchParams::validate(&request, &QueryLimits::default()) {
        Ok(params) => params,
        Err(err) => {
            // Every RequestError maps to INVALID_ARGUMENT.
            let status = tonic::Status::from(err.clone());
            if status.code() != tonic::Code::InvalidArgument {
                return Err(format!("{err:?} is {:?}", status.code()));
            }
            return check_message(&err.to_string());
        }
    };
    let stop = Stop {
        deadline: None,
        cancelled: Arc::default(),
    };
    match searcher().search(&params, stop) {
        Ok(_) => Ok(()),
        Err(err @ SearchError::InvalidQuery { .. }) => check_message(&err.to_string()),
        Err(err) => Err(format!("internal error for a valid-looking query: {err}")),
    }
}

fn check_message(msg: &str) -> Result<(), String> {
    if msg.len() > MAX_MESSAGE {
        return Err(format!("message of {} bytes: {msg}", msg.len()));
    }
    Ok(())
}

/// A fixed number of cases from a fixed seed, so CI is repeatable; set
/// `QUERY_FUZZ_SEED` (and `QUERY_FUZZ_CASES`) to explore further.
fn config(cases: u32) -> Config {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    Config {
        cases: env("QUERY_FUZZ_CASES").map_or(cases, |n: u64| n as u32),
        rng_seed: RngSeed::Fixed(env("QUERY_FUZZ_SEED").unwrap_or(0x5eed)),
        failure_persistence: None,
        ..Config::default()
    }
}

const WORDS: &[&str] = &[
    "paris", "london", "river", "the", "of", "city", "rust", "music", "war", "ab", "z", "1999",
    "-5", "héllo", "東京", "", " ", "AND", "OR", "NOT", "IN", "TO",
];
const FIELDS: &[&str] = &["title", "body", "id", "nosuch", "title.x", "", "\"title\""];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_string),
        1 => "[a-zA-Z0-9*?~^\\\\:]{1,12}",
    ]
}

fn field() -> impl Strategy<Value = &'static str> {
    prop::sample::select(FIELDS)
}

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => word(),
        2 => (field(), word()).prop_map(|(f, w)| format!("{f}:{w}")),
        2 => prop::collection::vec(word(), 1..5).prop_map(|ws| format!("\"{}\"", ws.join(" "))),
        1 => (word(), word(), any::<bool>(), any::<bool>()).prop_map(|(a, b, li, ui)| {
            format!("{}{a} TO {b}{}", if li { '[' } else { '{' }, if ui { ']' } else { '}' })
        }),
        1 => (field(), word()).prop_map(|(f, w)| format!("{f}:>={w}")),
        1 => (field(), prop::collection::vec(word(), 0..6))
            .prop_map(|(f, ws)| format!("{f}: IN [{}]", ws.join(" "))),
        1 => field().prop_map(|f| format!("{f}:*")),
        1 => Just("*".to_string()),
        1 => word().prop_map(|w| format!("\"{w}\"*")),
        1 => (word(), any::<u32>()).prop_map(|(w, n)| format!("\"{w} x\"~{n}")),
        1 => (word(), 0u8..4).prop_map(|(w, n)| format!("{w}~{n}")),
        1 => (field(), word()).prop_map(|(f, w)| format!("{f}:/{w}.*/")),
    ]
}

fn boosted() -> impl Strategy<Value = String> {
    let boost = prop_oneof![
        Just("2".to_string()),
        Just("0.5".to_string()),
        Just("1e308".to_string()),
        Just("99999".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("NaN".to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
    ];
    (leaf(), prop::option::of(boost)).prop_map(|(l, b)| match b {
        Some(b) => format!("{l}^{b}"),
        None => l,
    })
}

/// A query from the grammar: nested groups, operators and prefixes.
fn grammar_query() -> impl Strategy<Value = String> {
    boosted().prop_recursive(6, 64, 6, |inner| {
        let op = prop::sample::select(&[" ", " AND ", " OR ", " AND NOT ", " "][..]);
        let prefix = prop::sample::select(&["", "+", "-", "NOT ", ""][..]);
        prop_oneof![
            (prop::collection::vec(inner.clone(), 1..5), op).prop_map(|(parts, op)| parts.join(op)),
            (prefix, inner.clone()).prop_map(|(p, q)| format!("{p}({q})")),
            (field(), inner).prop_map(|(f, q)| format!("{f}:({q})")),
        ]
    })
}

/// A grammar query, mutated the way hostile or broken clients do.
fn mutated_query() -> impl Strategy<Value = String> {
    (
        grammar_query(),
        0u8..6,
        1usize..3000,
        any::<prop::sample::Index>(),
    )
        .prop_map(|(q, how, n, at)| match how {
            0 => q,
            1 => {
                let cut = at.index(q.len() + 1);
                let cut = (0..=cut)
                    .rev()
                    .find(|&i| q.is_char_boundary(i))
                    .unwrap_or(0);
                q[..cut].to_string()
            }
            2 => format!("{}{q}", "(".repeat(n)),
            3 => format!("{q}{}", "\"".repeat(n)),
            4 => format!("{}{q}", "NOT ".repeat(n / 4)),
            _ => q.repeat(n % 20 + 1),
        })
}

proptest! {
    #![proptest_config(config(1500))]
    #[test]
    fn grammar_aware_queries_are_answered_or_refused_as_invalid(q in mutated_query()) {
        prop_assert_eq!(run(&q), Ok(()), "query {:?}", q);
    }
}

proptest! {
    #![proptest_config(config(1500))]
    #[test]
    fn arbitrary_strings_are_answered_or_refused_as_invalid(q in any::<String>()) {
        prop_assert_eq!(run(&q), Ok(()), "query {:?}", q);
    }
}

proptest! {
    #![proptest_config(config(1500))]
    #[test]
    fn special_character_soup_is_answered_or_refused_as_invalid(
        q in "[()\\[\\]{}\"':^~*+\\-/<>=!\\\\ aANDORTNI0-9.]{0,200}"
    ) {
        prop_assert_eq!(run(&q), Ok(()), "query {:?}", q);
    }
}

/// The deepest nesting any configuration allows parses and searches on a
/// quarter of the stack a worker thread has (2 MiB): the margin that makes
/// the hard limit safe.
#[test]
fn the_hard_nesting_limit_is_safe_on_a_small_stack() {
    let limits = QueryLimits {
        max_nesting: searchtree_proto::query::HARD_MAX_NESTING,
        ..QueryLimits::default()
    };
    let deepest = [
        format!("{}paris{}", "(".repeat(100), ")".repeat(100)),
        format!("{}paris{}", "(a OR ".repeat(100), ")".repeat(100)),
        format!("{}paris", "NOT ".repeat(99)),
        format!("{}paris{}", "title:(".repeat(100), ")".repeat(100)),
        format!("{}paris", "(".repeat(100)), // unbalanced: a syntax error
    ];
    searcher(); // open the shard on this thread's ample stack
    std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            for q in deepest {
                let request = SearchRequest {
                    query: q,
                    ..Default::default()
                };
                if let Ok(params) = SearchParams::validate(&request, &limits) {
                    let stop = Stop {
                        deadline: None,
                        cancelled: Arc::default(),
                    };
                    let _ = searcher().search(&params, stop);
                }
            }
        })
        .unwrap()
        .join()
        .expect("no stack overflow");
}

/// The findings that started this, retried exactly.
#[test]
fn known_queries_of_death_are_refused_quickly() {
    for q in [
        "(".repeat(2200),
        "(".repeat(4096),
        "NOT ".repeat(1000) + "a",
        "title:(".repeat(500),
        "\"".repeat(3000),
        "title:*".to_string(),
        "body:*".to_string(),
        format!("title:{}", "\"".repeat(4000)),
    ] {
        let request = SearchRequest {
            query: q.clone(),
            ..Default::default()
        };
        let err = SearchParams::try_from(&request).expect_err(&q[..q.len().min(40)]);
        assert!(matches!(err, RequestError::Query(_)), "{err:?}");
        assert!(err.to_string().len() <= MAX_MESSAGE, "{err}");
    }
}

/// Queries the generators once found trouble with, kept as regressions.
#[test]
fn found_by_the_generators() {
    for q in [
        "paris -5~0",
        "(title:*^48951488108292250000000000000000000000000000000000000000000)",
    ] {
        assert_eq!(run(q), Ok(()), "{q}");
    }
}
