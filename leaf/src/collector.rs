//! A top-k collector whose ties are broken by document id, plus a hit count.
//!
//! tantivy's `TopDocs` breaks score ties by internal doc address, which
//! differs between a shard and a whole-corpus index. For the tree's answer to
//! equal the one-index answer exactly, every shard must keep the top-k under
//! the same total order the parents merge with: score descending, then id
//! ascending. Within a segment, the id fast field's term ordinals sort like
//! the ids themselves, so the per-segment heap compares ordinals; when
//! segments are merged, hits are ordered by score and, within a segment, by
//! ordinal, and ids are resolved to strings only for runs of equal scores
//! that span segments (and for the top k when the caller wants ids). A
//! caller that reads every survivor's stored document anyway (for its
//! title and snippet) can take the id from there instead
//! ([`TopById::ids_from_documents`]): then only those ties between segments
//! read ids from the fast field. Resolving one from the
//! fast field walks a block of its term dictionary, and cost a tenth of a
//! leaf's CPU on short documents (BENCHMARKS.md, "Ids from the documents").
//!
//! The collector also stops early, between documents, once its [`Stop`] says
//! so — the request's deadline has passed or its caller has gone — and then
//! reports how far it got, so a leaf can answer with its best hits so far
//! instead of nothing, and no CPU is spent on answers nobody will read.
//!
//! Given a [`Pruning`], the collector lets tantivy skip documents that cannot
//! reach the top-k (block-max WAND, `Weight::for_each_pruning`): the answer is
//! the same, but the match count then covers only the documents scored and is
//! marked as a lower bound. See the [`pruning`] module for what keeps the
//! answer exact.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{self, AtomicBool};
use std::time::Instant;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::StrColumn;
use tantivy::query::Weight;
use tantivy::{DocAddress, DocId, DocSet, Score, SegmentOrdinal, SegmentReader, TERMINATED};

mod candidates;
pub mod pruning;
pub use pruning::{Pruning, prunable};

use candidates::Candidates;

/// Matching documents collected between two looks at the clock.
const CHECK_EVERY: u32 = 256;

/// Documents handed over by a pruned search between two looks at the clock:
/// fewer than [`CHECK_EVERY`], as skipped documents pass in between.
const CHECK_EVERY_PRUNED: u32 = 16;

/// When a search must stop: at a deadline, or when cancelled.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    /// Stop once this instant has passed.
    pub deadline: Option<Instant>,
    /// Stop once this is set (the caller went away).
    pub cancelled: Arc<AtomicBool>,
}

impl Stop {
    /// Whether the search should stop now.
    pub fn now(&self) -> bool {
        self.cancelled.load(atomic::Ordering::Relaxed)
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// Collects the `k` best documents by (score desc, id asc) and counts matches.
pub struct TopById {
    k: usize,
    id_field: String,
    stop: Stop,
    pruning: Option<Pruning>,
    ids_from_documents: bool,
}

impl TopById {
    /// A collector of the best `k` hits, ids read from the fast field `id_field`.
    pub fn new(k: usize, id_field: &str) -> Self {
        assert!(k > 0, "top-k needs k > 0");
        TopById {
            k,
            id_field: id_field.to_string(),
            stop: Stop::default(),
            pruning: None,
            ids_from_documents: false,
        }
    }

    /// The same collector, leaving a hit's id unresolved ([`Collected::id`]
    /// `None`) when the hits' order does not need it, because the caller
    /// reads each hit's stored document, id included, anyway.
    pub fn ids_from_documents(mut self, yes: bool) -> Self {
        self.ids_from_documents = yes;
        self
    }

    /// The same collector, letting tantivy skip documents that cannot reach
    /// the top-k when `pruning` is given (`None`: score every match).
    pub fn with_pruning(mut self, pruning: Option<Pruning>) -> Self {
        self.pruning = pruning;
        self
    }

    /// The same collector, stopping early when `stop` says so.
    pub fn with_stop(mut self, stop: Stop) -> Self {
        self.stop = stop;
        self
    }
}

/// A collected hit: its score, where it is, and its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    /// BM25 score.
    pub score: Score,
    /// Where the document lives in the index.
    pub address: DocAddress,
    /// The document's corpus id; `None` only if the collector was asked to
    /// leave ids to the stored documents and the order did not need them.
    pub id: Option<String>,
}

/// The collector's result: the best hits in order, and how many matched.
#[derive(Debug, Default)]
pub struct TopHits {
    /// At most k hits, best first.
    pub hits: Vec<Collected>,
    /// Documents that matched (among those searched).
    pub total: u64,
    /// Documents examined: all of them unless the search stopped early.
    pub docs_searched: u64,
    /// Whether the search stopped before examining every document.
    pub stopped: bool,
    /// Whether `total` may be short of the matches: documents were skipped
    /// by pruning, or the search stopped early.
    pub total_is_lower_bound: bool,
}

/// One heap entry; ordered so that the *worst* entry is the heap's maximum.
#[derive(Clone, Copy)]
struct Entry {
    score: Score,
    id_ord: u64,
    doc: DocId,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.id_ord.cmp(&other.id_ord))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}

/// Per-segment half of [`TopById`].
pub struct SegmentTop {
    k: usize,
    segment: SegmentOrdinal,
    ids: StrColumn,
    heap: BinaryHeap<Entry>,
    total: u64,
    max_doc: DocId,
    /// Live documents (a kept segment may hold deleted ones).
    num_docs: DocId,
    /// The document the search stopped at, if it stopped early.
    stopped_at: Option<DocId>,
    /// Whether tantivy was ever allowed to skip a document.
    pruned: bool,
}

impl SegmentTop {
    /// Offers a document to the heap (without counting it as a match).
    fn insert(&mut self, doc: DocId, score: Score) {
        // Every document has exactly one id; a missing one sorts last.
        let id_ord = self.ids.ords().first(doc).unwrap_or(u64::MAX);
        let entry = Entry { score, id_ord, doc };
        if self.heap.len() < self.k {
            self.heap.push(entry);
        } else if let Some(mut worst) = self.heap.peek_mut()
            && entry < *worst
        {
            *worst = entry;
        }
    }

    /// The threshold for tantivy: `-∞` until the heap holds k hits, then
    /// just below the k-th score (see [`pruning::threshold_below`]).
    fn threshold(&self, slack: f32) -> Score {
        match self.heap.peek() {
            Some(worst) if self.heap.len() == self.k => {
                pruning::threshold_below(worst.score, slack)
            }
            _ => Score::NEG_INFINITY,
        }
    }
}

/// What a segment hands to the merge: its survivors, best first, and the
/// column to resolve their ids from.
pub struct SegmentFruit {
    segment: SegmentOrdinal,
    ids: StrColumn,
    entries: Vec<Entry>,
    total: u64,
    docs_searched: u64,
    stopped: bool,
    pruned: bool,
}

impl SegmentCollector for SegmentTop {
    type Fruit = SegmentFruit;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.total += 1;
        self.insert(doc, score);
    }

    fn harvest(self) -> SegmentFruit {
        let entries = self.heap.into_sorted_vec();
        // Documents are visited in id order: stopping at d means [0, d) were
        // seen, of which the live share where the segment holds deleted
        // documents (spread over its ids as they came).
        let docs_searched = match self.stopped_at {
            None => u64::from(self.num_docs),
            Some(d) if self.num_docs == self.max_doc => u64::from(d),
            Some(d) => u64::from(d) * u64::from(self.num_docs) / u64::from(self.max_doc.max(1)),
        };
        SegmentFruit {
            segment: self.segment,
            ids: self.ids,
            entries,
            total: self.total,
            docs_searched,
            stopped: self.stopped_at.is_some(),
            pruned: self.pruned,
        }
    }
}

impl TopById {
    /// Collects one segment through tantivy's block-max WAND: tantivy hands
    /// over only documents scoring above the threshold returned to it, and
    /// skips blocks that cannot. The threshold stays strictly below the
    /// k-th score, so every document that could enter the top-k on its id
    /// is still handed over.
    ///
    /// The callback cannot end tantivy's loop: once the [`Stop`] says so it
    /// returns an infinite threshold, which ends block-max WAND at its next
    /// look at the bounds (every block is then skipped without decoding).
    /// Documents before the one at which the stop was noticed were scored
    /// or proven unable to compete: that is `docs_searched`.
    fn collect_pruned(
        &self,
        pruning: &Pruning,
        weight: &dyn Weight,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentFruit> {
        let mut top = self.for_segment(segment, reader)?;
        if self.stop.now() {
            top.stopped_at = Some(0);
            return Ok(top.harvest());
        }
        let slack = pruning.slack(reader)?;
        // A union of three or more terms: tantivy's sums only choose
        // candidates, scored again below in the query's order.
        let mut rescorer = pruning.rescorer(reader)?;
        let mut candidates = rescorer.as_ref().map(|_| Candidates::new(self.k, slack));
        let alive = reader.alive_bitset();
        let mut since_check = 0u32;
        let mut stopped_at = None;
        let mut pruned = false;
        weight.for_each_pruning(Score::NEG_INFINITY, reader, &mut |doc, score| {
            if stopped_at.is_some() {
                return Score::INFINITY;
            }
            since_check += 1;
            if since_check == CHECK_EVERY_PRUNED {
                since_check = 0;
                if self.stop.now() {
                    stopped_at = Some(doc);
                    return Score::INFINITY;
                }
            }
            let threshold = match &mut candidates {
                Some(candidates) if alive.is_none_or(|a| a.is_alive(doc)) => {
                    top.total += 1;
                    candidates.push(doc, score)
                }
                Some(candidates) => candidates.threshold(),
                None => {
                    if alive.is_none_or(|a| a.is_alive(doc)) {
                        top.collect(doc, score);
                    }
                    top.threshold(slack)
                }
            };
            pruned |= threshold > Score::NEG_INFINITY;
            threshold
        })?;
        if let (Some(rescorer), Some(candidates)) = (&mut rescorer, candidates) {
            for (doc, _) in candidates.finish() {
                let score = rescorer.score(doc).ok_or_else(|| {
                    tantivy::TantivyError::InternalError(format!(
                        "document {doc} was handed over but matches no clause"
                    ))
                })?;
                top.insert(doc, score);
            }
        }
        top.stopped_at = stopped_at;
        top.pruned = pruned;
        Ok(top.harvest())
    }
}

impl Collector for TopById {
    type Fruit = TopHits;
    type Child = SegmentTop;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentTop> {
        let ids = reader.fast_fields().str(&self.id_field)?.ok_or_else(|| {
            tantivy::TantivyError::SchemaError(format!(
                "field {:?} is not a string fast field",
                self.id_field
            ))
        })?;
        Ok(SegmentTop {
            k: self.k,
            segment,
            ids,
            heap: BinaryHeap::with_capacity(self.k + 1),
            total: 0,
            max_doc: reader.max_doc(),
            num_docs: reader.num_docs(),
            stopped_at: None,
            pruned: false,
        })
    }

    /// Drives the scorer ourselves (rather than `Weight::for_each`) so the
    /// search can stop between documents; with a [`Pruning`], through
    /// `Weight::for_each_pruning` instead.
    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentFruit> {
        if let Some(pruning) = &self.pruning {
            return self.collect_pruned(pruning, weight, segment, reader);
        }
        let mut top = self.for_segment(segment, reader)?;
        if self.stop.now() {
            top.stopped_at = Some(0);
            return Ok(top.harvest());
        }
        let mut scorer = weight.scorer(reader, 1.0)?;
        let alive = reader.alive_bitset();
        let mut doc = scorer.doc();
        let mut since_check = 0u32;
        while doc != TERMINATED {
            since_check += 1;
            if since_check == CHECK_EVERY {
                since_check = 0;
                if self.stop.now() {
                    top.stopped_at = Some(doc);
                    break;
                }
            }
            if alive.is_none_or(|a| a.is_alive(doc)) {
                top.collect(doc, scorer.score());
            }
            doc = scorer.advance();
        }
        Ok(top.harvest())
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(&self, fruits: Vec<SegmentFruit>) -> tantivy::Result<TopHits> {
        let mut out = TopHits::default();
        let mut entries = Vec::new();
        for (index, fruit) in fruits.iter().enumerate() {
            out.total += fruit.total;
            out.docs_searched += fruit.docs_searched;
            out.stopped |= fruit.stopped;
            out.total_is_lower_bound |= fruit.pruned || fruit.stopped;
            entries.extend(fruit.entries.iter().map(|&e| (index, e)));
        }
        // Score first; within a segment the ordinals sort like the ids, so
        // only ties between segments need the ids themselves.
        entries.sort_by(|(a_fruit, a), (b_fruit, b)| {
            b.score
                .total_cmp(&a.score)
                .then(a_fruit.cmp(b_fruit))
                .then(a.id_ord.cmp(&b.id_ord))
        });
        let resolve = |&(index, e): &(usize, Entry)| -> tantivy::Result<String> {
            let mut id = String::new();
            let found = fruits[index]
                .ids
                .ord_to_str(e.id_ord, &mut id)
                .map_err(|err| {
                    tantivy::TantivyError::InternalError(format!(
                        "reading id of document {}: {err}",
                        e.doc
                    ))
                })?;
            if !found {
                return Err(tantivy::TantivyError::InternalError(format!(
                    "document {} has no id",
                    e.doc
                )));
            }
            Ok(id)
        };
        let mut ids: Vec<Option<String>> = vec![None; entries.len()];
        let mut order: Vec<usize> = (0..entries.len()).collect();
        let mut start = 0;
        while start < entries.len() && start < self.k {
            let score = entries[start].1.score;
            let end = start
                + entries[start..]
                    .iter()
                    .take_while(|(_, e)| e.score.total_cmp(&score).is_eq())
                    .count();
            let run = &entries[start..end];
            let segments_tied = run.iter().any(|(index, _)| *index != run[0].0);
            if segments_tied {
                for i in start..end {
                    ids[i] = Some(resolve(&entries[i])?);
                }
                order[start..end].sort_by(|&a, &b| ids[a].cmp(&ids[b]));
            }
            start = end;
        }
        if !self.ids_from_documents {
            for &i in order.iter().take(self.k) {
                if ids[i].is_none() {
                    ids[i] = Some(resolve(&entries[i])?);
                }
            }
        }
        for &i in order.iter().take(self.k) {
            let (index, e) = entries[i];
            out.hits.push(Collected {
                score: e.score,
                address: DocAddress::new(fruits[index].segment, e.doc),
                id: ids[i].take(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod pruned_tests;

#[cfg(test)]
mod tests {
    use tantivy::query::{EnableScoring, Explanation, Query, Scorer, TermQuery};
    use tantivy::schema::IndexRecordOption;
    use tantivy::{Index, Term, doc};

    use super::*;
    use crate::schema;

    /// An in-RAM index of `n` identical documents (so every score ties),
    /// inserted with ids in descending order.
    fn index(n: usize) -> (Index, schema::Fields) {
        let (schema, fields) = schema::build();
        let index = Index::create_in_ram(schema);
        let mut writer = index.writer_with_num_threads(1, 20 << 20).unwrap();
        for i in (0..n).rev() {
            writer
                .add_document(doc!(fields.id => format!("doc-{i:05}"), fields.body => "same words"))
                .unwrap();
        }
        writer.commit().unwrap();
        (index, fields)
    }

    fn query(fields: schema::Fields) -> TermQuery {
        TermQuery::new(
            Term::from_field_text(fields.body, "same"),
            IndexRecordOption::WithFreqs,
        )
    }

    fn run(index: &Index, fields: schema::Fields, collector: &TopById) -> TopHits {
        index
            .reader()
            .unwrap()
            .searcher()
            .search(&query(fields), collector)
            .unwrap()
    }

    /// A weight whose scorer sets `cancel` when it advances for the
    /// `after`-th time: the caller going away in the middle of a segment,
    /// after the collector's first look at its [`Stop`].
    struct CancelAfter {
        inner: Box<dyn Weight>,
        after: u32,
        cancel: Arc<AtomicBool>,
    }

    struct CancellingScorer {
        inner: Box<dyn Scorer>,
        left: u32,
        cancel: Arc<AtomicBool>,
    }

    impl Weight for CancelAfter {
        fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
            Ok(Box::new(CancellingScorer {
                inner: self.inner.scorer(reader, boost)?,
                left: self.after,
                cancel: Arc::clone(&self.cancel),
            }))
        }

        fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
            self.inner.explain(reader, doc)
        }
    }

    impl DocSet for CancellingScorer {
        fn advance(&mut self) -> DocId {
            self.left = self.left.saturating_sub(1);
            if self.left == 0 {
                self.cancel.store(true, atomic::Ordering::Relaxed);
            }
            self.inner.advance()
        }

        fn doc(&self) -> DocId {
            self.inner.doc()
        }

        fn size_hint(&self) -> u32 {
            self.inner.size_hint()
        }
    }

    impl Scorer for CancellingScorer {
        fn score(&mut self) -> Score {
            self.inner.score()
        }
    }

    #[test]
    fn ties_are_broken_by_id_not_by_insertion_order() {
        let (index, fields) = index(1000);
        let top = run(&index, fields, &TopById::new(3, schema::ID));
        let ids: Vec<_> = top.hits.iter().map(|h| h.id.as_deref().unwrap()).collect();
        assert_eq!(ids, ["doc-00000", "doc-00001", "doc-00002"]);
        assert_eq!(
            (top.total, top.docs_searched, top.stopped),
            (1000, 1000, false)
        );
    }

    /// `index(n)`'s documents again, written in two commits (two segments),
    /// the second half first.
    fn two_segment_index(n: usize) -> (Index, schema::Fields) {
        let (schema, fields) = schema::build();
        let index = Index::create_in_ram(schema);
        let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(1, 20 << 20).unwrap();
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        for half in [n / 2..n, 0..n / 2] {
            for i in half.rev() {
                writer
                    .add_document(
                        doc!(fields.id => format!("doc-{i:05}"), fields.body => "same words"),
                    )
                    .unwrap();
            }
            writer.commit().unwrap();
        }
        (index, fields)
    }

    #[test]
    fn ids_left_to_the_documents_are_resolved_only_across_segments() {
        let lazy = |k| TopById::new(k, schema::ID).ids_from_documents(true);
        // One segment: the order is the ordinals', no id is read.
        let (one, fields) = index(40);
        let top = run(&one, fields, &lazy(3));
        assert!(top.hits.iter().all(|h| h.id.is_none()));
        let searcher = one.reader().unwrap().searcher();
        let stored: Vec<String> = top
            .hits
            .iter()
            .map(|h| {
                let doc: tantivy::TantivyDocument = searcher.doc(h.address).unwrap();
                let id = doc.get_first(fields.id).unwrap();
                tantivy::schema::Value::as_str(&id).unwrap().to_string()
            })
            .collect();
        assert_eq!(stored, ["doc-00000", "doc-00001", "doc-00002"]);
        // Two segments holding hits: ties between them need the ids.
        let (two, fields) = two_segment_index(40);
        assert_eq!(two.reader().unwrap().searcher().segment_readers().len(), 2);
        let top = run(&two, fields, &lazy(3));
        let ids: Vec<_> = top.hits.iter().map(|h| h.id.as_deref().unwrap()).collect();
        assert_eq!(ids, ["doc-00000", "doc-00001", "doc-00002"]);
        // Resolved or not, the same documents in the same order.
        let eager = run(&two, fields, &TopById::new(3, schema::ID));
        assert_eq!(eager.hits, top.hits);
    }

    #[test]
    fn hits_of_two_segments_that_do_not_tie_keep_their_ids_unresolved() {
        // The first segment's documents say "same" twice and score higher
        // than the second's; ties stay within a segment.
        let (schema, fields) = schema::build();
        let index = Index::create_in_ram(schema);
        let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(1, 20 << 20).unwrap();
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        for (ids, body) in [(10..20, "same same words"), (0..10, "same words")] {
            for i in ids.rev() {
                writer
                    .add_document(doc!(fields.id => format!("doc-{i:05}"), fields.body => body))
                    .unwrap();
            }
            writer.commit().unwrap();
        }
        assert_eq!(
            index.reader().unwrap().searcher().segment_readers().len(),
            2
        );
        let lazy = TopById::new(12, schema::ID).ids_from_documents(true);
        let top = run(&index, fields, &lazy);
        assert!(top.hits.iter().all(|h| h.id.is_none()), "{:?}", top.hits);
        let eager = run(&index, fields, &TopById::new(12, schema::ID));
        let ids: Vec<_> = eager.hits.iter().map(|h| h.id.clone().unwrap()).collect();
        let want: Vec<_> = (10..20)
            .chain(0..2)
            .map(|i| format!("doc-{i:05}"))
            .collect();
        assert_eq!(ids, want, "higher scores first, then ids");
        let addresses = |t: &TopHits| t.hits.iter().map(|h| h.address).collect::<Vec<_>>();
        assert_eq!(addresses(&top), addresses(&eager));
    }

    #[test]
    fn a_cancelled_search_stops_and_says_how_far_it_got() {
        let (index, fields) = index(1000);
        let stop = Stop::default();
        stop.cancelled.store(true, atomic::Ordering::Relaxed);
        let top = run(&index, fields, &TopById::new(3, schema::ID).with_stop(stop));
        assert!(top.stopped);
        assert_eq!((top.total, top.docs_searched), (0, 0));
    }

    #[test]
    fn a_future_deadline_lets_the_search_finish() {
        let (index, fields) = index(600);
        let stop = Stop {
            deadline: Some(Instant::now() + std::time::Duration::from_secs(60)),
            ..Default::default()
        };
        let top = run(&index, fields, &TopById::new(5, schema::ID).with_stop(stop));
        assert!(!top.stopped);
        assert_eq!(top.total, 600);
    }

    #[test]
    fn a_search_cancelled_midway_stops_at_its_next_look_at_the_clock() {
        let (index, fields) = index(1000);
        let searcher = index.reader().unwrap().searcher();
        assert_eq!(
            searcher.segment_readers().len(),
            1,
            "one segment, in id order"
        );
        // Cancelled after the 1st or the 300th document: the collector only
        // notices at its next check, every CHECK_EVERY (256) documents.
        for (after, seen) in [(1, CHECK_EVERY - 1), (300, 2 * CHECK_EVERY - 1)] {
            let stop = Stop::default();
            let weight = CancelAfter {
                inner: query(fields)
                    .weight(EnableScoring::enabled_from_searcher(&searcher))
                    .unwrap(),
                after,
                cancel: Arc::clone(&stop.cancelled),
            };
            let collector = TopById::new(3, schema::ID).with_stop(stop);
            let fruit = collector
                .collect_segment(&weight, 0, &searcher.segment_readers()[0])
                .unwrap();
            let top = collector.merge_fruits(vec![fruit]).unwrap();
            assert!(top.stopped, "cancelled after {after}");
            assert_eq!(
                (top.total, top.docs_searched),
                (u64::from(seen), u64::from(seen)),
                "cancelled after {after}"
            );
            // The best hits among the documents seen: ids were inserted in
            // descending order, so those hold the `seen` highest ids, and the
            // best hits are the lowest of them.
            let ids: Vec<_> = top.hits.iter().map(|h| h.id.as_deref().unwrap()).collect();
            let first = 1000 - seen;
            let expected: Vec<String> = (first..first + 3).map(|i| format!("doc-{i:05}")).collect();
            assert_eq!(ids, expected, "cancelled after {after}");
        }
    }
}
