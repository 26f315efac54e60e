//! The tree's answers equal one whole-corpus index's: same ids, same order,
//! same scores, same match counts — through real processes over loopback.
//! With `exact_total_hits` the counts are equal; without it the leaves prune
//! (block-max WAND) and the counts may fall short, but only when the answer
//! says so — the hits are the same either way.

use searchtree::build::TOPOLOGY_FILE;
use searchtree::bundled;
use searchtree::tree::topology::Topology;
use searchtree_proto::pb::search_client::SearchClient;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use searchtree_tests::oracle::{Expected, Oracle, assert_same_hits};
use searchtree_tests::{Fixture, GENEROUS_BUDGET_MS, client, fixture, send, start_tree};
use tonic::transport::Channel;

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// Whether the answer counted every match, or may have pruned.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Count {
    Exact,
    Pruned,
}

/// Searches with or without `exact_total_hits`.
async fn search(
    root: &mut SearchClient<Channel>,
    query: &str,
    top_k: u32,
    count: Count,
) -> SearchResponse {
    send(
        root,
        SearchRequest {
            query: query.into(),
            top_k,
            budget_ms: GENEROUS_BUDGET_MS,
            exact_total_hits: count == Count::Exact,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{query:?}: {e}"))
}

/// The fixture's tree with its topology changed by `change`, written to
/// `name` beside the fixture's topology.
async fn start_changed_tree(
    fx: &Fixture,
    name: &str,
    change: impl FnOnce(&mut Topology),
) -> searchtree::tree::supervisor::Tree {
    let mut topology = Topology::load(&fx.sharded.join(TOPOLOGY_FILE)).expect("topology");
    change(&mut topology);
    let path = fx.sharded.join(name);
    std::fs::write(&path, topology.to_toml()).expect("write topology");
    start_tree(&path).await
}

/// The fixture's tree with every leaf pruning, small as its shards are
/// (`min_pruned_docs = 0`; by default shards this small are scored
/// exhaustively), written to `name` beside the fixture's topology.
async fn start_pruning_tree(fx: &Fixture, name: &str) -> searchtree::tree::supervisor::Tree {
    start_changed_tree(fx, name, |topology| {
        for leaf in &mut topology.leaves {
            leaf.min_pruned_docs = Some(0);
        }
    })
    .await
}

/// Checks one answer against the oracle; says whether its count fell short.
fn assert_same(
    query: &str,
    k: usize,
    count: Count,
    got: &SearchResponse,
    want: &(Vec<Expected>, u64),
) -> bool {
    assert_same_hits(&format!("query {query:?} top-{k}"), &got.hits, &want.0);
    match count {
        Count::Exact => {
            assert_eq!(
                got.total_hits, want.1,
                "query {query:?}: match counts differ"
            );
            assert!(!got.total_hits_is_lower_bound, "query {query:?}");
        }
        Count::Pruned => {
            assert!(
                got.total_hits <= want.1,
                "query {query:?}: {} matches counted, {} exist",
                got.total_hits,
                want.1
            );
            if got.total_hits < want.1 {
                assert!(got.total_hits_is_lower_bound, "query {query:?}: unflagged");
            }
        }
    }
    let c = got.coverage.as_ref().expect("coverage");
    assert_eq!((c.shards_ok, c.shards_total), (4, 4), "query {query:?}");
    assert!(!got.partial, "query {query:?}");
    got.total_hits < want.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_top10_equals_one_index_for_every_bundled_query() {
    let fx = fixture(TMP);
    let oracle = Oracle::open(&fx.whole.join("shards/shard-000"));
    let tree = start_pruning_tree(fx, "pruning.toml").await;
    let mut root = client(tree.root_addr()).await;

    let queries = bundled::queries();
    assert!(queries.len() >= 200, "only {} queries", queries.len());
    let (mut nonempty, mut short) = (0, 0);
    for query in &queries {
        let want = oracle.top_k(query, 10);
        nonempty += usize::from(!want.0.is_empty());
        for count in [Count::Exact, Count::Pruned] {
            let got = search(&mut root, query, 10, count).await;
            short += usize::from(assert_same(query, 10, count, &got, &want));
        }
    }
    // Prefix phrases whose last word begins few enough words for every
    // shard to expand them all, as one index does.
    for query in [
        "\"new yor\"*",
        "\"united kingd\"*",
        "\"albert einste\"*",
        "\"the volc\"*",
    ] {
        let want = oracle.top_k(query, 10);
        assert!(!want.0.is_empty(), "{query} finds nothing");
        for count in [Count::Exact, Count::Pruned] {
            let got = search(&mut root, query, 10, count).await;
            assert_same(query, 10, count, &got, &want);
        }
    }
    // The comparison means something only if the queries find things, and
    // if pruning did skip documents.
    assert!(nonempty >= 200, "only {nonempty} queries had hits");
    // (A leaf holds a quarter of the corpus: many queries match fewer than
    // k of its documents, and then nothing is skipped.)
    assert!(
        short >= 10,
        "pruning skipped documents in only {short} queries"
    );
    tree.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_depths_of_k_and_of_tree_agree_too() {
    let fx = fixture(TMP);
    let oracle = Oracle::open(&fx.whole.join("shards/shard-000"));

    // Three levels: root -> top -> (mid -> leaf-0, leaf-1), leaf-2; root -> leaf-3.
    let topology = fx.dir.join("deep.toml");
    let shards = fx.sharded.join("shards");
    std::fs::write(
        &topology,
        format!(
            r#"
[root]
children = ["top", "leaf-3"]

[[parent]]
name = "top"
children = ["mid", "leaf-2"]

[[parent]]
name = "mid"
children = ["leaf-0", "leaf-1"]

{}"#,
            (0..4)
                .map(|s| format!(
                    "[[leaf]]\nname = \"leaf-{s}\"\nshard = {s}\nmin_pruned_docs = 0\nindex = \"{}\"\n",
                    shards.join(format!("shard-{s:03}")).display()
                ))
                .collect::<String>()
        ),
    )
    .unwrap();
    let tree = start_tree(&topology).await;
    let mut root = client(tree.root_addr()).await;
    for query in bundled::queries().iter().step_by(10) {
        for k in [1, 3, 50] {
            let want = oracle.top_k(query, k as usize);
            for count in [Count::Exact, Count::Pruned] {
                let got = search(&mut root, query, k, count).await;
                assert_same(query, k as usize, count, &got, &want);
            }
        }
    }
    tree.shutdown().await;
}

/// Queries whose top scores tie among many documents: common words in
/// short titles (every "The ..." title of two words scores alike), so the
/// top-k is decided by ids, across shards, at the pruning threshold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ties_at_the_kth_score_break_by_id_with_and_without_pruning() {
    let fx = fixture(TMP);
    let oracle = Oracle::open(&fx.whole.join("shards/shard-000"));
    let tree = start_pruning_tree(fx, "pruning-ties.toml").await;
    let mut root = client(tree.root_addr()).await;
    let mut tied = 0;
    for query in [
        "the",
        "a",
        "of",
        "title:the",
        "title:of",
        "title:list",
        "title:river",
    ] {
        for k in [1, 10, 25, 50] {
            let want = oracle.top_k(query, k as usize);
            let all = oracle.top_k(query, 10 * k as usize).0;
            // Ties at the k-th score beyond the top-k: the id decided.
            if let Some(kth) = want.0.last() {
                tied += usize::from(all.iter().skip(k as usize).any(|h| h.score == kth.score));
            }
            for count in [Count::Exact, Count::Pruned] {
                let got = search(&mut root, query, k, count).await;
                assert_same(query, k as usize, count, &got, &want);
            }
        }
    }
    assert!(tied >= 8, "only {tied} searches had ties at the k-th score");
    tree.shutdown().await;
}

/// Conjunctions of three or more required terms. tantivy adds a
/// conjunction's scores in the order of its clauses' posting-list lengths,
/// and a shard's lengths are its own, not the corpus's: without the leaves
/// adding in one index's order, a shard's sum could differ from one index's
/// in the last bit, and an exact tie (broken by id) would break by that bit
/// instead ([`searchtree_leaf::sum_order`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conjunctions_of_three_or_more_terms_add_up_as_one_index_does() {
    let fx = fixture(TMP);
    let oracle = Oracle::open(&fx.whole.join("shards/shard-000"));
    let tree = start_tree(&fx.sharded.join(TOPOLOGY_FILE)).await;
    let mut root = client(tree.root_addr()).await;
    let common = [
        "the", "of", "and", "in", "to", "a", "is", "first", "on", "was",
    ];
    let mut queries: Vec<String> = Vec::new();
    for n in 3..=5 {
        for start in 0..common.len() {
            let words: Vec<String> = (0..n)
                .map(|i| format!("+{}", common[(start + i * 3) % common.len()]))
                .collect();
            queries.push(words.join(" "));
        }
    }
    queries.push("+to +the +first +on".into());
    // The bundled queries of three or more words, every word required.
    for query in bundled::queries() {
        let words: Vec<&str> = query
            .split_whitespace()
            .filter(|w| w.chars().all(char::is_alphanumeric))
            .collect();
        if words.len() >= 3 {
            queries.push(
                words
                    .iter()
                    .map(|w| format!("+{w}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
    }
    let mut nonempty = 0;
    for query in &queries {
        for k in [10, 37, 50] {
            let want = oracle.top_k(query, k as usize);
            nonempty += usize::from(!want.0.is_empty());
            let got = search(&mut root, query, k, Count::Exact).await;
            assert_same(query, k as usize, Count::Exact, &got, &want);
        }
    }
    assert!(nonempty >= 60, "only {nonempty} searches had hits");
    tree.shutdown().await;
}

/// Titles and snippets are one index's too, in one phase (each leaf fills
/// its hits) and in two (the root fetches them for the global top-k): a
/// snippet is the body passage whose query terms weigh most, rarer terms
/// more, and a leaf weighs them by the corpus's frequencies, not its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn titles_and_snippets_are_one_index_s_in_both_phases() {
    let fx = fixture(TMP);
    let oracle = Oracle::open(&fx.whole.join("shards/shard-000"));
    for one_phase in [true, false] {
        let name = format!("phases-{one_phase}.toml");
        let tree = start_changed_tree(fx, &name, |t| t.root.one_phase = one_phase).await;
        let mut root = client(tree.root_addr()).await;
        let mut snippets = 0;
        let mut queries = bundled::queries();
        queries.extend([
            "letter alphabet",
            "common law",
            "french language",
            "planetary nebula",
        ]);
        for query in queries {
            let got = search(&mut root, query, 10, Count::Exact).await;
            assert_eq!(got.hits_unfetched, 0, "{query:?}");
            let ids: Vec<&str> = got.hits.iter().map(|h| h.doc_id.as_str()).collect();
            for (hit, (title, snippet)) in got.hits.iter().zip(oracle.presented(query, &ids)) {
                assert_eq!(hit.title, title, "{query:?}: title of {}", hit.doc_id);
                assert_eq!(
                    hit.snippet, snippet,
                    "{query:?} (one phase: {one_phase}): snippet of {}",
                    hit.doc_id
                );
                snippets += usize::from(snippet.contains("<b>"));
            }
        }
        assert!(
            snippets >= 1000,
            "only {snippets} snippets highlight a term"
        );
        tree.shutdown().await;
    }
}
