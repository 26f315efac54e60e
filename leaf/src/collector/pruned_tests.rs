//! The pruned collector against the exhaustive one on real tantivy indexes:
//! same hits bit for bit, honest counts, and stops that still stop.

use std::sync::Arc;
use std::sync::atomic::{self, AtomicBool, AtomicU32};

use tantivy::collector::Collector;
use tantivy::query::{
    Bm25StatisticsProvider, EnableScoring, Explanation, Query, QueryParser, Scorer, TermQuery,
    Weight,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocId, Index, Score, Searcher, SegmentReader, Term, doc};

use super::{CHECK_EVERY_PRUNED, Pruning, Stop, TopById, TopHits};
use crate::schema;

/// Corpus statistics that differ from the index's own: every field `factor`
/// times longer on average (as a shard's own averages differ from the
/// corpus's).
struct LongerFields {
    searcher: Searcher,
    factor: u64,
}

impl Bm25StatisticsProvider for LongerFields {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        Ok(self.searcher.total_num_tokens(field)? * self.factor)
    }
    fn total_num_docs(&self) -> tantivy::Result<u64> {
        self.searcher.total_num_docs()
    }
    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        self.searcher.doc_freq(term)
    }
}

const WORDS: [&str; 8] = [
    "river", "stone", "music", "light", "ancient", "city", "war", "song",
];

/// 3,000 random documents over a small vocabulary (so terms span many
/// 128-posting blocks) and 400 identical ones (every score ties), with ids
/// in shuffled order, in two segments.
fn random_index() -> (Index, schema::Fields) {
    let (schema, fields) = schema::build();
    let index = Index::create_in_ram(schema);
    let mut writer = index.writer_with_num_threads(1, 20 << 20).unwrap();
    let mut rng = fastrand::Rng::with_seed(42);
    let mut ids: Vec<u32> = (0..3400).collect();
    rng.shuffle(&mut ids);
    let mut ids = ids.into_iter();
    let text = |rng: &mut fastrand::Rng, max: usize| {
        let n = rng.usize(1..=max);
        (0..n)
            // Skewed: low words are common.
            .map(|_| WORDS[rng.usize(0..WORDS.len()).min(rng.usize(0..WORDS.len()))])
            .collect::<Vec<_>>()
            .join(" ")
    };
    for i in 0..3000 {
        let (title, body) = (text(&mut rng, 4), text(&mut rng, 40));
        let id = format!("d{:05}", ids.next().unwrap());
        writer
            .add_document(doc!(fields.id => id, fields.title => title, fields.body => body))
            .unwrap();
        if i == 1700 {
            writer.commit().unwrap();
        }
    }
    for _ in 0..400 {
        let id = format!("d{:05}", ids.next().unwrap());
        writer
            .add_document(
                doc!(fields.id => id, fields.title => "tie", fields.body => "tie tie knot"),
            )
            .unwrap();
    }
    writer.commit().unwrap();
    (index, fields)
}

fn search(
    searcher: &Searcher,
    query: &dyn Query,
    stats: &dyn Bm25StatisticsProvider,
    k: usize,
    pruned: bool,
) -> TopHits {
    let pruning = if pruned {
        Pruning::for_query(query, searcher, stats).unwrap()
    } else {
        None
    };
    let collector = TopById::new(k, schema::ID).with_pruning(pruning);
    searcher
        .search_with_statistics_provider(query, &collector, stats)
        .unwrap()
}

fn hits(top: &TopHits) -> Vec<(String, u32)> {
    top.hits
        .iter()
        .map(|h| (h.id.clone().unwrap(), h.score.to_bits()))
        .collect()
}

#[test]
fn pruned_hits_equal_exhaustive_hits_bit_for_bit() {
    let (index, fields) = random_index();
    let searcher = index.reader().unwrap().searcher();
    assert_eq!(searcher.segment_readers().len(), 2);
    let parser = QueryParser::for_index(&index, vec![fields.title, fields.body]);
    let own = searcher.clone();
    let longer = LongerFields {
        searcher: searcher.clone(),
        factor: 7,
    };
    let queries = [
        "river",
        "song",
        "title:music",
        "body:war",
        "title:river title:stone",
        "+body:light +body:city",
        "+body:river +body:ancient",
        "tie",
        "knot",
        "title:tie",
        "tie knot", // a union of four terms
        "river stone music",
        "ancient city war song light",
        "title:river title:stone title:music",
        "title:tie body:tie body:knot",
        "+body:river +body:stone +body:music", // three MUST terms: not pruned
        "music -river",                        // an exclusion: not pruned
        "\"river stone\"",                     // a phrase: not pruned
    ];
    let (mut skipped, mut prunable) = (0, 0);
    for stats in [&own as &dyn Bm25StatisticsProvider, &longer] {
        for query in queries {
            let parsed = parser.parse_query(query).unwrap();
            for k in [1, 10, 50] {
                let exact = search(&searcher, &*parsed, stats, k, false);
                let pruned = search(&searcher, &*parsed, stats, k, true);
                assert_eq!(hits(&pruned), hits(&exact), "{query} top-{k}");
                assert!(!exact.total_is_lower_bound, "{query} top-{k}");
                assert!(pruned.total <= exact.total, "{query} top-{k}");
                if pruned.total < exact.total {
                    assert!(pruned.total_is_lower_bound, "{query} top-{k}");
                    skipped += 1;
                }
                assert!(!exact.hits.is_empty(), "{query} matches nothing");
                prunable += usize::from(super::prunable(&*parsed));
            }
        }
    }
    // The comparison means something only if pruning did skip documents.
    assert!(
        skipped >= prunable / 3,
        "pruning skipped in {skipped} of {prunable} prunable searches"
    );
}

#[test]
fn ties_at_the_kth_score_still_reach_the_heap() {
    let (index, fields) = random_index();
    let searcher = index.reader().unwrap().searcher();
    let query = TermQuery::new(
        Term::from_field_text(fields.title, "tie"),
        IndexRecordOption::WithFreqs,
    );
    for k in [1, 10, 50] {
        let top = search(&searcher, &query, &searcher, k, true);
        // 400 identical documents: the best are the lowest ids among them,
        // whichever order they were indexed in.
        let exact = search(&searcher, &query, &searcher, 400, false);
        let mut ids: Vec<_> = exact.hits.iter().map(|h| h.id.clone().unwrap()).collect();
        ids.sort();
        let got: Vec<_> = top.hits.iter().map(|h| h.id.clone().unwrap()).collect();
        assert_eq!(got, ids[..k], "top-{k}");
        // Every tie is handed over (a tie may win on its id), so here
        // nothing could be skipped: the count is exact.
        assert_eq!(top.total, 400, "top-{k}");
    }
}

#[test]
fn counts_are_exact_when_nothing_was_skipped() {
    let (index, fields) = random_index();
    let searcher = index.reader().unwrap().searcher();
    let parser = QueryParser::for_index(&index, vec![fields.title, fields.body]);
    let query = parser.parse_query("river").unwrap();
    let exact = search(&searcher, &*query, &searcher, 10, false);
    // Fewer matches than k: the threshold never rose, nothing was skipped.
    let all = search(
        &searcher,
        &*query,
        &searcher,
        exact.total as usize + 1,
        true,
    );
    assert_eq!(all.total, exact.total);
    assert!(!all.total_is_lower_bound);
    // Top-1 among many: documents were skipped and the count says so.
    let one = search(&searcher, &*query, &searcher, 1, true);
    assert!(one.total < exact.total, "{} of {}", one.total, exact.total);
    assert!(one.total_is_lower_bound);
}

/// One segment whose stored block maxima are wrong under longer corpus
/// fields: for the term `t`, block A (128 documents "t t t"), block B (127
/// documents "t" and one with `t` ten times among 100 words), and a short
/// last block. Under this segment's average length (~2.4 words) B's best
/// pair is a one-word "t"; under the corpus's (1,000) it is the long one,
/// which scores above every document of A.
fn flipped_block_index() -> (Index, schema::Fields) {
    let (schema, fields) = schema::build();
    let index = Index::create_in_ram(schema);
    let mut writer = index.writer_with_num_threads(1, 20 << 20).unwrap();
    let long = format!("{}{}", "t ".repeat(10), "x ".repeat(90));
    let bodies = std::iter::repeat_n("t t t", 128)
        .chain(std::iter::repeat_n("t", 60))
        .chain([long.as_str()])
        .chain(std::iter::repeat_n("t", 67 + 5));
    for (i, body) in bodies.enumerate() {
        writer
            .add_document(doc!(fields.id => format!("d{i:04}"), fields.body => body))
            .unwrap();
    }
    writer.commit().unwrap();
    (index, fields)
}

#[test]
fn block_maxima_are_trusted_only_within_the_averages_ratio() {
    let (index, fields) = flipped_block_index();
    let searcher = index.reader().unwrap().searcher();
    assert_eq!(searcher.segment_readers().len(), 1);
    let stats = LongerFields {
        searcher: searcher.clone(),
        factor: 420, // average body length ~2.4 words here, ~1,000 "corpus-wide"
    };
    let query = TermQuery::new(
        Term::from_field_text(fields.body, "t"),
        IndexRecordOption::WithFreqs,
    );
    let exact = search(&searcher, &query, &stats, 1, false);
    assert_eq!(
        exact.hits[0].id.as_deref(),
        Some("d0188"),
        "the long document wins"
    );

    let pruning = Pruning::for_query(&query, &searcher, &stats)
        .unwrap()
        .unwrap();
    let slack = pruning.slack(&searcher.segment_readers()[0]).unwrap();
    assert!((400.0..450.0).contains(&slack), "slack {slack}");
    let run = |pruning: Pruning| {
        searcher
            .search_with_statistics_provider(
                &query,
                &TopById::new(1, schema::ID).with_pruning(Some(pruning)),
                &stats,
            )
            .unwrap()
    };
    // Trusting the stored maxima skips block B and loses the best hit...
    let trusting = run(pruning.clone().with_fixed_slack(1.0));
    assert_eq!(trusting.hits[0].id.as_deref(), Some("d0000"));
    // ...the ratio of the averages keeps it.
    assert_eq!(hits(&run(pruning)), hits(&exact));
}

/// Delegates to a real weight, setting `cancel` at the `after`-th document
/// tantivy hands over, and counting them all.
struct CancelDuringPruning {
    inner: Box<dyn Weight>,
    after: u32,
    cancel: Arc<AtomicBool>,
    handed: Arc<AtomicU32>,
}

impl Weight for CancelDuringPruning {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        self.inner.scorer(reader, boost)
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        self.inner.explain(reader, doc)
    }

    fn for_each_pruning(
        &self,
        threshold: Score,
        reader: &SegmentReader,
        callback: &mut dyn FnMut(DocId, Score) -> Score,
    ) -> tantivy::Result<()> {
        self.inner
            .for_each_pruning(threshold, reader, &mut |doc, score| {
                let n = self.handed.fetch_add(1, atomic::Ordering::Relaxed) + 1;
                if n == self.after {
                    self.cancel.store(true, atomic::Ordering::Relaxed);
                }
                callback(doc, score)
            })
    }
}

#[test]
fn a_stop_ends_tantivys_pruning_loop() {
    // 1,000 identical documents: every one ties and is handed over.
    let (schema, fields) = schema::build();
    let index = Index::create_in_ram(schema);
    let mut writer = index.writer_with_num_threads(1, 20 << 20).unwrap();
    for i in 0..1000 {
        writer
            .add_document(doc!(fields.id => format!("doc-{i:05}"), fields.body => "same words"))
            .unwrap();
    }
    writer.commit().unwrap();
    let searcher = index.reader().unwrap().searcher();
    let term = |w| {
        Box::new(TermQuery::new(
            Term::from_field_text(fields.body, w),
            IndexRecordOption::WithFreqs,
        )) as Box<dyn Query>
    };
    let one_term = term("same");
    let two_terms: Box<dyn Query> = Box::new(tantivy::query::BooleanQuery::union(vec![
        term("same"),
        term("words"),
    ]));
    for query in [one_term, two_terms] {
        let stop = Stop::default();
        let handed = Arc::new(AtomicU32::new(0));
        let weight = CancelDuringPruning {
            inner: query
                .weight(EnableScoring::enabled_from_searcher(&searcher))
                .unwrap(),
            after: 20,
            cancel: Arc::clone(&stop.cancelled),
            handed: Arc::clone(&handed),
        };
        let collector = TopById::new(3, schema::ID)
            .with_stop(stop)
            .with_pruning(Pruning::for_query(&*query, &searcher, &searcher).unwrap());
        let fruit = collector
            .collect_segment(&weight, 0, &searcher.segment_readers()[0])
            .unwrap();
        let top = collector.merge_fruits(vec![fruit]).unwrap();
        // Noticed at the next look at the clock; tantivy then hands over
        // nothing more: the infinite threshold ended its loop.
        assert_eq!(
            handed.load(atomic::Ordering::Relaxed),
            CHECK_EVERY_PRUNED * 2
        );
        let seen = u64::from(CHECK_EVERY_PRUNED * 2 - 1);
        assert!(top.stopped && top.total_is_lower_bound);
        assert_eq!((top.total, top.docs_searched), (seen, seen), "{query:?}");
        let ids: Vec<_> = top.hits.iter().map(|h| h.id.as_deref().unwrap()).collect();
        assert_eq!(ids, ["doc-00000", "doc-00001", "doc-00002"]);
    }
}

/// Why unions of three or more terms are scored again: tantivy's block-max
/// sums of the same terms differ from its scorer's in the last bit for
/// some documents (here, with nothing skipped at all).
#[test]
fn block_max_sums_of_three_terms_differ_from_the_scorers_own() {
    let (index, fields) = random_index();
    let searcher = index.reader().unwrap().searcher();
    let parser = QueryParser::for_index(&index, vec![fields.title, fields.body]);
    let query = parser.parse_query("ancient city war song light").unwrap();
    let weight = query
        .weight(EnableScoring::enabled_from_searcher(&searcher))
        .unwrap();
    let mut differ = 0;
    for reader in searcher.segment_readers() {
        let mut own = std::collections::HashMap::new();
        weight
            .for_each(reader, &mut |doc, score| {
                own.insert(doc, score);
            })
            .unwrap();
        let mut handed = 0;
        weight
            .for_each_pruning(Score::NEG_INFINITY, reader, &mut |doc, score| {
                handed += 1;
                differ += usize::from(own[&doc].to_bits() != score.to_bits());
                Score::NEG_INFINITY
            })
            .unwrap();
        assert_eq!(handed, own.len());
    }
    assert!(differ > 0, "every block-max sum equalled the scorer's");
}
