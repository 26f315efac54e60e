//! Searching one shard: parse, score with corpus-wide statistics, collect the
//! top-k by (score, id), and fetch titles and snippets for the survivors.

use std::time::Instant;

use searchtree_proto::SearchParams;
use searchtree_proto::pb::{
    Coverage, FailureReason, Hit, SearchResponse, ShardFailure, ShardSource,
};
use searchtree_proto::query::{NOTHING_TO_MATCH, Quoted, truncate_chars};
use tantivy::query::{Query, QueryParser, QueryParserError};
use tantivy::schema::Value;
use tantivy::{Searcher, TantivyDocument};

use crate::collector::{Pruning, Stop, TopById};
use crate::schema;
use crate::shard::Shard;
use crate::snippet::Presenter;
use crate::sum_order;

/// Shards with fewer documents are scored exhaustively: their posting
/// lists span a few 128-document blocks, with little to skip, and block-max
/// pruning cost more than it saved (BENCHMARKS.md, "Block-max pruning":
/// 1.09-1.16x the exhaustive time on a 2,472-document shard, 0.97-1.05x on
/// 10,033 documents, 0.49-0.94x on 100,330).
pub const MIN_PRUNED_DOCS: u64 = 16_384;

/// The longest part of tantivy's explanation quoted in an error, in
/// characters: its messages may echo the query, which must stay short.
const REASON_CHARS: usize = 160;

/// Why a shard search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query cannot be parsed or asks what the schema cannot answer:
    /// the caller must change it.
    #[error("invalid query {query}: {reason}")]
    InvalidQuery {
        /// The query, quoted and truncated.
        query: Quoted,
        /// tantivy's explanation, truncated.
        reason: String,
    },
    /// The index failed while searching.
    #[error("search failed: {0}")]
    Index(tantivy::TantivyError),
    /// The request is pinned to a version this leaf does not hold; the
    /// message starts with [`VERSION_MISSING`].
    #[error("{0}")]
    VersionMissing(String),
}

/// How every refusal of a version the leaf does not hold begins, so that a
/// replica group can tell it from other failures and start a catch-up.
pub const VERSION_MISSING: &str = "version-missing:";

impl SearchError {
    /// Sorts a tantivy error raised while searching for `query`: errors
    /// about what the query asks (a field or feature the schema lacks) are
    /// the caller's; the rest are the index's.
    fn from_tantivy(query: &str, err: tantivy::TantivyError) -> Self {
        use tantivy::TantivyError as E;
        match err {
            E::SchemaError(reason) | E::InvalidArgument(reason) | E::FieldNotFound(reason) => {
                SearchError::InvalidQuery {
                    query: Quoted::new(query),
                    reason: truncate_chars(&reason, REASON_CHARS),
                }
            }
            other => SearchError::Index(other),
        }
    }
}

/// Searches one shard. Cheap to share: all state is immutable.
pub struct ShardSearcher {
    shard: Shard,
    parser: QueryParser,
    /// How this leaf names itself in `coverage.sources` (its address).
    name: String,
    /// Shards with fewer documents are not pruned.
    min_pruned_docs: u64,
}

impl ShardSearcher {
    /// A searcher over `shard`, parsing queries against its title and body.
    pub fn new(shard: Shard) -> Self {
        let parser =
            QueryParser::for_index(&shard.index, vec![shard.fields.title, shard.fields.body]);
        ShardSearcher {
            shard,
            parser,
            name: String::new(),
            min_pruned_docs: MIN_PRUNED_DOCS,
        }
    }

    /// Scores shards of fewer than `docs` documents exhaustively (0 prunes
    /// every shard).
    pub fn set_min_pruned_docs(&mut self, docs: u64) {
        self.min_pruned_docs = docs;
    }

    /// Sets the name (address) this leaf reports as the source of its answers.
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// The shard being searched.
    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// Parses a query the way every shard does, its conjunctions arranged
    /// to add up in the query's order on every shard ([`sum_order`]).
    pub fn parse(&self, query: &str) -> Result<Box<dyn Query>, SearchError> {
        let parsed = self
            .parser
            .parse_query(query)
            .map_err(|e| SearchError::InvalidQuery {
                query: Quoted::new(query),
                reason: match e {
                    // tantivy's words for it ("only excluding terms given")
                    // puzzle a person who typed punctuation alone.
                    QueryParserError::AllButQueryForbidden => NOTHING_TO_MATCH.into(),
                    e => truncate_chars(&e.to_string(), REASON_CHARS),
                },
            })?;
        let fields = [self.shard.fields.title, self.shard.fields.body];
        crate::prefix_terms::check(query, &self.shard.index, &self.shard.reader, &fields).map_err(
            |reason| SearchError::InvalidQuery {
                query: Quoted::new(query),
                reason,
            },
        )?;
        Ok(sum_order::in_query_order(parsed.as_ref()).unwrap_or(parsed))
    }

    /// Runs a search that gives up when `stop` says so: at its deadline it
    /// answers with the best hits found so far, marked as a timed-out shard
    /// (a soft timeout). Blocking: call it off the async workers.
    ///
    /// Unless `exact_total_hits` is asked for, or the shard is smaller than
    /// its `min_pruned_docs` ([`MIN_PRUNED_DOCS`] by default), documents that cannot reach the top-k may be
    /// skipped (block-max pruning, same hits); `total_hits` then says it is a
    /// lower bound.
    pub fn search(&self, params: &SearchParams, stop: Stop) -> Result<SearchResponse, SearchError> {
        let started = Instant::now();
        let query = self.parse(&params.query)?;
        self.search_parsed(params, query, stop, started)
    }

    /// [`search`](Self::search) with `query` already parsed from
    /// `params.query` by [`parse`](Self::parse), as a leaf's plan of it
    /// ([`crate::cost::plan`]) did on receipt.
    pub fn search_query(
        &self,
        params: &SearchParams,
        query: Box<dyn Query>,
        stop: Stop,
    ) -> Result<SearchResponse, SearchError> {
        self.search_parsed(params, query, stop, Instant::now())
    }

    fn search_parsed(
        &self,
        params: &SearchParams,
        query: Box<dyn Query>,
        stop: Stop,
        started: Instant,
    ) -> Result<SearchResponse, SearchError> {
        let searcher = self.shard.reader.searcher();
        let cancelled = stop.cancelled.clone();
        let pruning = if params.exact_total_hits || searcher.num_docs() < self.min_pruned_docs {
            None
        } else {
            // The same statistics as the scores, so the same BM25 weights
            // bound the blocks.
            Pruning::for_query(&*query, &searcher, &self.shard.stats)
                .map_err(|e| SearchError::from_tantivy(&params.query, e))?
        };
        let top = searcher
            .search_with_statistics_provider(
                &*query,
                &TopById::new(params.top_k, schema::ID)
                    .with_stop(stop)
                    .with_pruning(pruning)
                    // Hits with titles and snippets read their stored
                    // documents, ids included.
                    .ids_from_documents(!params.ids_only),
                &self.shard.stats,
            )
            .map_err(|e| SearchError::from_tantivy(&params.query, e))?;
        let hits = if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
            Vec::new() // nobody is waiting: skip fetching titles and snippets
        } else if params.ids_only {
            top.hits
                .into_iter()
                .map(|c| self.bare_hit(c.score, c.id.unwrap_or_default()))
                .collect()
        } else {
            self.hits(&searcher, &*query, top.hits)
                .map_err(|e| SearchError::from_tantivy(&params.query, e))?
        };
        let docs_total = self.shard.meta.num_docs;
        let shard = self.shard.meta.shard;
        let coverage = if top.stopped {
            Coverage {
                shards_total: 1,
                shards_timed_out: 1,
                docs_total,
                docs_searched: top.docs_searched,
                failures: vec![ShardFailure {
                    shard,
                    reason: FailureReason::Timeout as i32,
                    message: format!(
                        "shard {shard} searched {} of {docs_total} documents before its deadline",
                        top.docs_searched
                    ),
                }],
                ..Default::default()
            }
        } else {
            Coverage {
                shards_total: 1,
                shards_ok: 1,
                docs_total,
                docs_searched: docs_total,
                sources: vec![ShardSource {
                    shard,
                    replica: self.name.clone(),
                    ..Default::default()
                }],
                ..Default::default()
            }
        };
        Ok(SearchResponse {
            profile: Default::default(),
            hits,
            total_hits: top.total,
            coverage: Some(coverage),
            partial: top.stopped,
            took_us: started.elapsed().as_micros() as u64,
            // Cut short at its deadline, the shard counted only what it searched.
            total_hits_is_lower_bound: top.total_is_lower_bound || top.stopped,
            hits_unfetched: 0,
            snapshot: self.shard.meta.input_checksum.clone(),
            version: self.shard.meta.version,
        })
    }

    /// A hit as the query phase returns it: id, score and shard only.
    fn bare_hit(&self, score: f32, doc_id: String) -> Hit {
        Hit {
            doc_id,
            score,
            shard: self.shard.meta.shard,
            ..Default::default()
        }
    }

    fn hits(
        &self,
        searcher: &Searcher,
        query: &dyn Query,
        collected: Vec<crate::collector::Collected>,
    ) -> tantivy::Result<Vec<Hit>> {
        if collected.is_empty() {
            return Ok(Vec::new());
        }
        let presenter = Presenter::new(searcher, &self.shard.stats, query, self.shard.fields)?;
        collected
            .into_iter()
            .map(|c| {
                let doc: TantivyDocument = searcher.doc(c.address)?;
                let id = match c.id {
                    Some(id) => id,
                    None => doc
                        .get_first(self.shard.fields.id)
                        .and_then(|v| v.as_str())
                        .ok_or_else(|| {
                            tantivy::TantivyError::InternalError(format!(
                                "stored document {:?} has no id",
                                c.address
                            ))
                        })?
                        .to_string(),
                };
                let (title, snippet) = presenter.title_and_snippet(&doc);
                Ok(Hit {
                    title,
                    snippet,
                    ..self.bare_hit(c.score, id)
                })
            })
            .collect()
    }
}
