//! The fetch phase of a two-phase search on one shard: find each document
//! by its id, load it from the store, and build its title and snippet the
//! way the query phase would have ([`crate::snippet`]).
//!
//! The root asks for titles and snippets of the global top-k only, so each
//! leaf loads a handful of documents instead of its own top-k.

use std::time::Instant;

use searchtree_proto::FetchParams;
use searchtree_proto::pb::{FetchResponse, Hit};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, DocSet, Searcher, TERMINATED, TantivyDocument, Term};

use crate::collector::Stop;
use crate::searcher::{SearchError, ShardSearcher};
use crate::snippet::Presenter;

impl ShardSearcher {
    /// Fetches the documents of `params` that live in this shard (a document
    /// of another shard is `not_found`), until `stop` says to give up: the
    /// documents not reached by then come back `unfetched`. Blocking: call
    /// it off the async workers.
    pub fn fetch(&self, params: &FetchParams, stop: &Stop) -> Result<FetchResponse, SearchError> {
        let started = Instant::now();
        let query = self.parse(&params.query)?;
        let searcher = self.shard().reader.searcher();
        let fields = self.shard().fields;
        let stats = &self.shard().stats;
        let shard = self.shard().meta.shard;
        let mut presenter = None;
        let mut response = FetchResponse::default();
        for doc in &params.docs {
            if stop.now() {
                response.unfetched.push(doc.clone());
                continue;
            }
            let address = if doc.shard == shard {
                find(&searcher, Term::from_field_text(fields.id, &doc.doc_id))
                    .map_err(SearchError::Index)?
            } else {
                None
            };
            let Some(address) = address else {
                response.not_found.push(doc.clone());
                continue;
            };
            let presenter = match &mut presenter {
                Some(p) => p,
                none => none.insert(
                    Presenter::new(&searcher, stats, &*query, fields)
                        .map_err(SearchError::Index)?,
                ),
            };
            let stored: TantivyDocument = searcher.doc(address).map_err(SearchError::Index)?;
            let (title, snippet) = presenter.title_and_snippet(&stored);
            response.hits.push(Hit {
                doc_id: doc.doc_id.clone(),
                shard,
                title,
                snippet,
                ..Default::default()
            });
        }
        response.took_us = started.elapsed().as_micros() as u64;
        Ok(response)
    }
}

/// The live document whose (unique) `id` term is `term`, if any.
pub(crate) fn find(searcher: &Searcher, term: Term) -> tantivy::Result<Option<DocAddress>> {
    for (ord, segment) in searcher.segment_readers().iter().enumerate() {
        let index = segment.inverted_index(term.field())?;
        let Some(mut postings) = index.read_postings(&term, IndexRecordOption::Basic)? else {
            continue;
        };
        let mut doc = postings.doc();
        while doc != TERMINATED {
            if segment
                .alive_bitset()
                .is_none_or(|alive| alive.is_alive(doc))
            {
                return Ok(Some(DocAddress::new(ord as u32, doc)));
            }
            doc = postings.advance();
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use searchtree_proto::SearchParams;
    use searchtree_proto::pb::{DocRef, FetchRequest, SearchRequest};

    use super::*;
    use crate::shard::Shard;
    use crate::shard::write::{ShardDocument, ShardWriter, write_scoring};

    /// A two-document shard (number 0 of 1) in a fresh directory.
    fn shard(name: &str) -> (ShardSearcher, std::path::PathBuf) {
        shard_of(
            name,
            &[
                ("a", "Paris", "paris is the capital of france, on the seine"),
                ("b", "Rome", "rome is the capital of italy, on the tiber"),
            ],
        )
    }

    /// A shard (number 0 of 1) of `docs` (id, title, body) in a fresh directory.
    fn shard_of(name: &str, docs: &[(&str, &str, &str)]) -> (ShardSearcher, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("st-fetch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut writer = ShardWriter::create(&dir, 1, 0).unwrap();
        for &(id, title, body) in docs {
            let document = ShardDocument {
                id: id.into(),
                title: title.into(),
                body: body.into(),
            };
            writer.add(document).unwrap();
        }
        let written = writer.finish().unwrap();
        write_scoring(&[written], "sum").unwrap();
        (ShardSearcher::new(Shard::open(&dir).unwrap()), dir)
    }

    fn doc(id: &str, shard: u32) -> DocRef {
        DocRef {
            doc_id: id.into(),
            shard,
        }
    }

    fn params(query: &str, docs: Vec<DocRef>) -> FetchParams {
        let req = FetchRequest {
            hops: 0,
            query: query.into(),
            docs,
            budget_ms: 0,
            version: 0,
        };
        FetchParams::validate(&req, &Default::default()).unwrap()
    }

    #[test]
    fn fetched_hits_equal_what_the_query_phase_would_show() {
        let (searcher, dir) = shard("equal");
        let search = SearchParams::try_from(&SearchRequest {
            query: "capital seine".into(),
            ..Default::default()
        })
        .unwrap();
        let one_phase = searcher.search(&search, Stop::default()).unwrap().hits;
        assert_eq!(one_phase.len(), 2);
        let refs = one_phase.iter().map(|h| doc(&h.doc_id, h.shard)).collect();
        let fetched = searcher
            .fetch(&params("capital seine", refs), &Stop::default())
            .unwrap();
        assert!(fetched.not_found.is_empty() && fetched.unfetched.is_empty());
        for (full, got) in one_phase.iter().zip(&fetched.hits) {
            assert_eq!((&got.doc_id, &got.title), (&full.doc_id, &full.title));
            assert_eq!(got.snippet, full.snippet);
        }
        assert!(fetched.hits[0].snippet.contains("<b>"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_snippet_is_looked_for_only_in_the_first_megabyte_of_a_body() {
        use crate::snippet::MAX_ANALYZED_BYTES;
        let filler = "filler ".repeat(MAX_ANALYZED_BYTES / 7 + 1);
        let late = format!("early words {filler} needle");
        let (searcher, dir) = shard_of(
            "huge",
            &[("late", "Huge", &late), ("small", "Small", "a needle here")],
        );
        let refs = vec![doc("late", 0), doc("small", 0)];
        let fetched = searcher
            .fetch(&params("needle", refs), &Stop::default())
            .unwrap();
        let snippet = |id: &str| {
            let hit = fetched.hits.iter().find(|h| h.doc_id == id).unwrap();
            hit.snippet.clone()
        };
        // The huge body's only match lies past the analyzed prefix: it gets
        // no highlighted passage; short bodies as before.
        assert!(!snippet("late").contains("needle"), "{}", snippet("late"));
        assert!(snippet("small").contains("<b>needle</b>"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_ids_and_other_shards_are_not_found_and_a_stop_leaves_the_rest() {
        let (searcher, dir) = shard("missing");
        let asked = vec![doc("zzz", 0), doc("a", 3), doc("b", 0)];
        let fetched = searcher
            .fetch(&params("rome", asked), &Stop::default())
            .unwrap();
        assert_eq!(fetched.not_found, vec![doc("zzz", 0), doc("a", 3)]);
        assert_eq!(fetched.hits[0].title, "Rome");

        let stopped = Stop {
            deadline: None,
            cancelled: Arc::new(AtomicBool::new(true)),
        };
        let fetched = searcher
            .fetch(&params("rome", vec![doc("b", 0)]), &stopped)
            .unwrap();
        assert_eq!(fetched.unfetched, vec![doc("b", 0)]);
        assert!(fetched.hits.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
