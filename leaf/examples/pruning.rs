//! Leaf search time with block-max pruning against without, side by side in
//! one run, on a shard built by `searchtree build`.
//!
//! ```sh
//! cargo run --release -p searchtree-leaf --example pruning -- \
//!     SHARD_DIR QUERIES_FILE [ROUNDS]
//! ```
//!
//! Every query runs `ROUNDS` times each way, alternating which goes first,
//! through the leaf's own `ShardSearcher::search` (query phase only: ids and
//! scores, no snippets). Each pair of answers must hold the same hits.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use searchtree_leaf::collector::{Stop, prunable};
use searchtree_leaf::{Shard, ShardSearcher};
use searchtree_proto::SearchParams;
use searchtree_proto::pb::{Priority, SearchResponse};

/// Time spent one way and the other, for one class of queries.
#[derive(Default)]
struct Tally {
    queries: usize,
    exact: Duration,
    pruned: Duration,
    short_counts: usize,
}

fn params(query: &str, top_k: usize, exact: bool) -> SearchParams {
    SearchParams {
        hops: 0,
        profile: Default::default(),
        query: query.to_string(),
        top_k,
        budget: None,
        min_coverage: 0.0,
        canary: false,
        priority: Priority::Interactive,
        exact_total_hits: exact,
        ids_only: true,
        version: 0,
    }
}

fn timed(searcher: &ShardSearcher, p: &SearchParams) -> anyhow::Result<(Duration, SearchResponse)> {
    let started = Instant::now();
    let response = searcher.search(p, Stop::default())?;
    Ok((started.elapsed(), response))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(queries)) = (args.first(), args.get(1)) else {
        bail!("usage: pruning SHARD_DIR QUERIES_FILE [ROUNDS]");
    };
    let rounds: usize = args.get(2).map_or(Ok(20), |r| r.parse())?;
    let queries = std::fs::read_to_string(queries).context("reading queries")?;
    let queries: Vec<&str> = queries.lines().filter(|q| !q.trim().is_empty()).collect();
    let searcher = ShardSearcher::new(Shard::open(&PathBuf::from(dir))?);
    println!(
        "{} documents, {} queries, {rounds} rounds each way",
        searcher.shard().meta.num_docs,
        queries.len()
    );
    println!(
        "| top_k | queries | n | exhaustive ms | pruned ms | pruned / exhaustive | counts short |"
    );
    println!("|---|---|---|---|---|---|---|");
    for top_k in [1, 10, 50] {
        let mut classes: [Tally; 3] = Default::default();
        for query in &queries {
            let parsed = searcher.parse(query)?;
            let mut terms = 0;
            parsed.query_terms(&mut |_, _| terms += 1);
            let class = match (prunable(&*parsed), terms <= 2) {
                (true, true) => &mut classes[0],
                (true, false) => &mut classes[1],
                (false, _) => &mut classes[2],
            };
            class.queries += 1;
            let (exact_p, pruned_p) = (params(query, top_k, true), params(query, top_k, false));
            for round in 0..rounds {
                let ((te, e), (tp, p)) = if round % 2 == 0 {
                    let e = timed(&searcher, &exact_p)?;
                    (e, timed(&searcher, &pruned_p)?)
                } else {
                    let p = timed(&searcher, &pruned_p)?;
                    (timed(&searcher, &exact_p)?, p)
                };
                let ids = |r: &SearchResponse| -> Vec<(String, u32)> {
                    r.hits
                        .iter()
                        .map(|h| (h.doc_id.clone(), h.score.to_bits()))
                        .collect()
                };
                if ids(&e) != ids(&p) {
                    bail!("{query:?} top-{top_k}: pruned hits differ");
                }
                class.exact += te;
                class.pruned += tp;
                if round == 0 && p.total_hits < e.total_hits {
                    class.short_counts += 1;
                }
            }
        }
        let mut all = Tally::default();
        let names = [
            "one or two terms",
            "unions of 3+ terms (rescored)",
            "others (not pruned)",
        ];
        for (name, t) in names.into_iter().zip(&classes) {
            row(top_k, name, t, rounds);
            all.queries += t.queries;
            all.exact += t.exact;
            all.pruned += t.pruned;
            all.short_counts += t.short_counts;
        }
        row(top_k, "all", &all, rounds);
    }
    Ok(())
}

fn row(top_k: usize, name: &str, t: &Tally, rounds: usize) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / rounds as f64;
    println!(
        "| {top_k} | {name} | {} | {:.1} | {:.1} | {:.2} | {} |",
        t.queries,
        ms(t.exact),
        ms(t.pruned),
        t.pruned.as_secs_f64() / t.exact.as_secs_f64().max(1e-9),
        t.short_counts
    );
}
