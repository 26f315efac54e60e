//! A top-k collector whose ties are broken by document id, plus a hit count.
//!
//! tantivy's `TopDocs` breaks score ties by internal doc address, which
//! differs between a shard and a whole-corpus index. For the tree's answer to
//! equal the one-index answer exactly, every shard must keep the top-k under
//! the same total order the parents merge with: score descending, then id
//! ascending. Within a segment, the id fast field's term ordinals sort like
//! the ids themselves, so the per-segment heap compares ordinals; ids are
//! resolved to strings only for the few survivors, when segments are merged.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::StrColumn;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

use searchtree_proto::ordering::score_then_id;

/// Collects the `k` best documents by (score desc, id asc) and counts matches.
pub struct TopById {
    k: usize,
    id_field: String,
}

impl TopById {
    /// A collector of the best `k` hits, ids read from the fast field `id_field`.
    pub fn new(k: usize, id_field: &str) -> Self {
        assert!(k > 0, "top-k needs k > 0");
        TopById {
            k,
            id_field: id_field.to_string(),
        }
    }
}

/// A collected hit: its score, where it is, and its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    /// BM25 score.
    pub score: Score,
    /// Where the document lives in the index.
    pub address: DocAddress,
    /// The document's corpus id.
    pub id: String,
}

/// The collector's result: the best hits in order, and how many matched.
#[derive(Debug, Default)]
pub struct TopHits {
    /// At most k hits, best first.
    pub hits: Vec<Collected>,
    /// All documents that matched.
    pub total: u64,
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
}

/// What a segment hands to the merge: its survivors with resolved ids.
pub struct SegmentFruit {
    hits: Result<Vec<Collected>, String>,
    total: u64,
}

impl SegmentCollector for SegmentTop {
    type Fruit = SegmentFruit;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.total += 1;
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

    fn harvest(self) -> SegmentFruit {
        let mut id = String::new();
        let hits = self
            .heap
            .into_sorted_vec()
            .into_iter()
            .map(|e| {
                id.clear();
                match self.ids.ord_to_str(e.id_ord, &mut id) {
                    Ok(true) => Ok(Collected {
                        score: e.score,
                        address: DocAddress::new(self.segment, e.doc),
                        id: id.clone(),
                    }),
                    Ok(false) => Err(format!("document {} has no id", e.doc)),
                    Err(err) => Err(format!("reading id of document {}: {err}", e.doc)),
                }
            })
            .collect();
        SegmentFruit {
            hits,
            total: self.total,
        }
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
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(&self, fruits: Vec<SegmentFruit>) -> tantivy::Result<TopHits> {
        let mut out = TopHits::default();
        for fruit in fruits {
            out.total += fruit.total;
            out.hits
                .extend(fruit.hits.map_err(tantivy::TantivyError::InternalError)?);
        }
        out.hits
            .sort_by(|a, b| score_then_id(a.score, &a.id, b.score, &b.id));
        out.hits.truncate(self.k);
        Ok(out)
    }
}
