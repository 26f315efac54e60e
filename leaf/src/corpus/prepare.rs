//! Prepare: the candidate of the next version, in `versions/vN.tmp`, and
//! what the publish needs of it — this shard's exact totals and digest,
//! and its terms' document frequencies (for the corpus-wide sums).
//!
//! From the staging area, the candidate is the current version's segments,
//! less the documents deleted or upserted since, with the staged segments:
//! untouched segments linked, segments that lost a few documents linked
//! with a delete file, the others merged into one ([`super::segments`]). From a build, it is
//! that build's shard directory, linked file by file, once it passed the
//! checks `searchtree verify` makes of a shard.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use searchtree_proto::pb::{FieldTerms, PrepareChunk, ShardSummary};
use tantivy::schema::IndexRecordOption;
use tantivy::termdict::TermMerger;
use tantivy::{BitSet, DocAddress, DocSet, Index, TERMINATED, TantivyDocument, Term};

use super::deleted_terms::{DeletedTerms, FieldDeleted};
use super::local::{LocalTotals, SegmentTotals, TokenCounter, write_segment_totals};
use super::segments::{VersionSegments, alive_bitset, keeps_deletes};
use super::store::{Candidate, CorpusStore};
use super::{CorpusError, fsio};
use crate::schema;
use crate::shard::check::check_shard;
use crate::shard::manifest::{MANIFEST_FILE, Manifest};
use crate::shard::{SHARD_META_FILE, read_meta};
use crate::stats::DOC_FREQS_FILE;

/// The most terms one `PrepareChunk` (or `InstallChunk`) carries.
pub const TERMS_PER_CHUNK: usize = 16_384;

impl CorpusStore {
    /// Builds candidate `version` — from the staging area, or from the
    /// build in `from_build` (`DIR/shards/shard-NNN`) when it is not empty
    /// — and keeps it until Install. A version held but not current (a
    /// publish that failed after Install) is built again.
    pub fn prepare(&mut self, version: u64, from_build: &str) -> Result<ShardSummary, CorpusError> {
        let current = self.held.current();
        if version <= current {
            return Err(CorpusError::Precondition(format!(
                "cannot prepare version {version}: shard {} is at version {current} already",
                self.build.shard
            )));
        }
        self.check_version_step(version)?;
        if self.dirs.contains_key(&version) {
            self.drop_version(version)?;
        }
        if let Some(old) = self.candidate.take() {
            fsio::remove_dir_if_exists(&old.dir)?;
        }
        // A candidate writes at most the staged documents again (the
        // current version's segments are linked), or a copy of the build.
        let writes = if from_build.is_empty() {
            super::disk::dir_bytes(self.staging.dir())?
        } else {
            super::disk::dir_bytes(&build_shard(Path::new(from_build), self.build.shard))?
        };
        self.check_disk(writes, &format!("preparing version {version}"))?;
        let tmp = self.tmp_dir(version);
        fsio::remove_dir_if_exists(&tmp)?;
        std::fs::create_dir_all(&tmp)?;
        let candidate = if from_build.is_empty() {
            self.prepare_staged(version, &tmp)
        } else {
            self.prepare_from_build(version, Path::new(from_build), &tmp)
        };
        let candidate = match candidate {
            Ok(candidate) => candidate,
            Err(e) => {
                let _ = fsio::remove_dir_if_exists(&tmp);
                return Err(e);
            }
        };
        candidate.local.write(&tmp)?;
        if !candidate.segment_totals.is_empty() {
            write_segment_totals(&tmp, &candidate.segment_totals)?;
        }
        fsio::sync_files(&tmp)?;
        fsio::sync_dir(&self.versions_root())?;
        let summary = ShardSummary {
            shard: self.build.shard,
            replica: self.settings.name.clone(),
            num_docs: candidate.local.num_docs,
            num_tokens: candidate.local.num_tokens.clone().into_iter().collect(),
            digest: candidate.local.digest(),
            staged_ops: candidate.staged_ops,
        };
        self.candidate = Some(candidate);
        Ok(summary)
    }

    fn prepare_staged(&mut self, version: u64, tmp: &Path) -> Result<Candidate, CorpusError> {
        let current = self.held.current();
        let mut local = self.local(current)?;
        let base = self
            .held
            .get(current)
            .map_err(|e| CorpusError::Precondition(e.to_string()))?;
        let base_shard = base.shard();
        let fields = base_shard.fields;

        // The staged documents enter: a segment as it was indexed by its
        // totals at once, any other document by document.
        let started = Instant::now();
        let (staged, staged_segments) = self.staging.snapshot()?;
        let committed = started.elapsed();
        let mut counter = TokenCounter::new(self.staging.index(), fields)?;
        let mut staged_ids = BTreeSet::new();
        let mut staged_totals = HashMap::new();
        let mut docs_read = 0u64;
        for (ord, reader) in staged.segment_readers().iter().enumerate() {
            let totals = match self.staging.indexed_totals(reader, &mut staged_ids)? {
                Some(totals) => totals,
                None => {
                    let mut totals = LocalTotals::default();
                    for doc in reader.doc_ids_alive() {
                        let stored: TantivyDocument =
                            staged.doc(DocAddress::new(ord as u32, doc))?;
                        let tokens = counter.count(&stored);
                        totals.add(&tokens);
                        staged_ids.insert(tokens.id);
                        docs_read += 1;
                    }
                    totals
                }
            };
            local.absorb(&totals);
            staged_totals.insert(reader.segment_id(), totals);
        }

        let entered = started.elapsed();
        // The published documents deleted or replaced leave: each segment
        // of the current version is kept, dropped or merged without them.
        // A segment that leaves whole takes its totals out at once when the
        // version has them; otherwise each leaving document is counted.
        let mut parts = VersionSegments::default();
        let base_dir = self.dir_of(current)?.to_path_buf();
        let base_totals = self.segment_totals(current)?;
        let base_searcher = base_shard.reader.searcher();
        let base_segments = base_shard.index.searchable_segments()?;
        let mut counter = TokenCounter::new(&base_shard.index, fields)?;
        // The ids whose published copy leaves, looked up in every segment.
        let leaving: Vec<Term> = self
            .staging
            .deleted()
            .iter()
            .chain(&staged_ids)
            .map(|id| Term::from_field_text(fields.id, id))
            .collect();
        // The terms of the documents kept segments hold deleted, carried
        // for the segments kept again.
        let mut deleted_terms = DeletedTerms::read(&base_dir)?;
        for (ord, reader) in base_searcher.segment_readers().iter().enumerate() {
            let mut alive = BitSet::with_max_value_and_full(reader.max_doc());
            if let Some(deleted) = reader.alive_bitset() {
                for doc in 0..reader.max_doc() {
                    if deleted.is_deleted(doc) {
                        alive.remove(doc);
                    }
                }
            }
            let mut removed = Vec::new();
            let ids = reader.inverted_index(fields.id)?;
            for term in &leaving {
                let Some(mut postings) = ids.read_postings(term, IndexRecordOption::Basic)? else {
                    continue;
                };
                let mut doc = postings.doc();
                while doc != TERMINATED {
                    if alive.contains(doc) {
                        alive.remove(doc);
                        removed.push(doc);
                    }
                    doc = postings.advance();
                }
            }
            let segment = base_segments
                .iter()
                .find(|s| s.id() == reader.segment_id())
                .cloned()
                .ok_or_else(|| {
                    CorpusError::Precondition(format!(
                        "version {current} lists segment {} but does not open it",
                        reader.segment_id().uuid_string()
                    ))
                })?;
            let mut totals = base_totals.get(&segment.id().uuid_string()).cloned();
            if removed.is_empty() {
                parts.keep(segment, &base_dir, totals);
                continue;
            }
            let whole = removed.len() as u32 == reader.num_docs();
            // A segment that lost a few documents is kept with a delete
            // file; the terms of those documents are counted as they leave.
            let id = segment.id().uuid_string();
            let keep_deletes =
                !whole && keeps_deletes(reader.max_doc() - alive.len() as u32, reader.max_doc());
            match totals.as_mut() {
                Some(segment_totals) if whole => local.subtract(segment_totals),
                _ => {
                    for &doc in &removed {
                        let address = DocAddress::new(ord as u32, doc);
                        let stored: TantivyDocument = base_searcher.doc(address)?;
                        let tokens = if keep_deletes {
                            deleted_terms.add_document(&id, &mut counter, &stored)
                        } else {
                            counter.count(&stored)
                        };
                        local.remove(&tokens);
                        if let Some(segment_totals) = totals.as_mut() {
                            segment_totals.remove(&tokens);
                        }
                        docs_read += 1;
                    }
                }
            }
            if keep_deletes {
                parts.keep_with_deletes(segment, &base_dir, alive, version, totals);
            } else if !whole {
                parts.merge(segment, Some(alive_bitset(&alive)?), totals);
            }
        }

        let left = started.elapsed();
        let staging_dir = self.staging.dir().to_path_buf();
        for segment in staged_segments {
            let meta = segment.meta();
            let totals = staged_totals.remove(&segment.id());
            if meta.num_docs() == 0 {
                continue;
            } else if meta.has_deletes() {
                parts.merge(segment, None, totals);
            } else {
                parts.keep(segment, &staging_dir, totals);
            }
        }
        let written = parts.write(
            base_shard.index.schema(),
            base_shard.index.settings().clone(),
            tmp,
        )?;
        deleted_terms.retain_segments(|id| written.kept_ids.iter().any(|k| k == id));
        deleted_terms.write(tmp)?;
        let ms = |d: Duration| d.as_millis() as u64;
        tracing::info!(
            version,
            kept = written.kept,
            with_deletes = written.with_deletes,
            merged = written.merged,
            docs_read,
            commit_ms = ms(committed),
            entered_ms = ms(entered - committed),
            left_ms = ms(left - entered),
            write_ms = ms(started.elapsed() - left),
            "candidate written: segments kept (of which with a new delete file), segments \
             merged into one, \
             documents read to carry the totals (segments entering as indexed or leaving \
             whole are not); the staging area's commit, the totals of the documents entering \
             and leaving, the segments' writing"
        );
        let merged = Index::open_in_dir(tmp)?;
        let docs: u64 = merged
            .searchable_segment_metas()?
            .iter()
            .map(|m| u64::from(m.num_docs()))
            .sum();
        if docs != local.num_docs {
            return Err(CorpusError::Precondition(format!(
                "the candidate of version {version} has {docs} documents, its totals say {}",
                local.num_docs
            )));
        }
        Ok(Candidate {
            version,
            dir: tmp.to_path_buf(),
            local,
            segment_totals: written.totals,
            docs_read,
            from_build: None,
            staged_ops: self.staging.ops(),
        })
    }

    fn prepare_from_build(
        &mut self,
        version: u64,
        build: &Path,
        tmp: &Path,
    ) -> Result<Candidate, CorpusError> {
        let shard = self.build.shard;
        let source = build_shard(build, shard);
        let not_a_build = |why: String| {
            CorpusError::Precondition(format!(
                "{} is not a searchtree build ({why}); give --from-build the directory \
                 `searchtree build --out` made, the one holding {MANIFEST_FILE} and shards/",
                build.display()
            ))
        };
        if !build.join(MANIFEST_FILE).is_file() {
            return Err(not_a_build(format!("it has no {MANIFEST_FILE}")));
        }
        let meta = read_meta(&source).map_err(|e| not_a_build(e.to_string()))?;
        if (meta.shard, meta.num_shards) != (shard, self.build.num_shards) {
            return Err(CorpusError::Precondition(format!(
                "{} is shard {} of {}, this leaf serves shard {shard} of {}",
                source.display(),
                meta.shard,
                meta.num_shards,
                self.build.num_shards
            )));
        }
        check_build_shard(build, shard, &source)?;
        // The scoring files are written by Install; the linked files are
        // never written to (the build stays as it was).
        fsio::link_or_copy_files(
            &source,
            tmp,
            &[
                SHARD_META_FILE,
                DOC_FREQS_FILE,
                super::local::LOCAL_FILE,
                super::local::SEGMENT_TOTALS_FILE,
            ],
        )?;
        let index = Index::open_in_dir(tmp)?;
        let fields = crate::schema::fields_of(&index.schema())?;
        let searcher = index.reader()?.searcher();
        if searcher.segment_readers().len() > 1 {
            return Err(CorpusError::Precondition(format!(
                "{} has {} segments; a shard must be one",
                source.display(),
                searcher.segment_readers().len()
            )));
        }
        let local = LocalTotals::of_undeleted(&searcher, fields)?;
        Ok(Candidate {
            version,
            dir: tmp.to_path_buf(),
            local,
            segment_totals: SegmentTotals::new(),
            docs_read: 0,
            from_build: Some(meta.input_checksum),
            staged_ops: self.staging.ops(),
        })
    }
}

/// Refuses shard `shard` of the build in `build` (its directory `source`)
/// unless it passes the checks `searchtree verify` makes of a shard: a
/// damaged build would otherwise become the tree's version and answer
/// wrongly.
fn check_build_shard(build: &Path, shard: u32, source: &Path) -> Result<(), CorpusError> {
    let refuse = |what: String| {
        CorpusError::Precondition(format!(
            "the build {} is damaged, shard {shard} refuses it (`searchtree verify {}` \
             checks it all): {what}",
            build.display(),
            build.display()
        ))
    };
    let manifest = Manifest::read(build).map_err(|e| refuse(format!("{e:#}")))?;
    manifest
        .check_ours()
        .map_err(|why| refuse(format!("{}: {why}", build.join(MANIFEST_FILE).display())))?;
    let mut problems = Vec::new();
    check_shard(&manifest, shard, source, &mut HashSet::new(), &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(refuse(problems.join("; ")))
    }
}

/// Streams the terms of the version in `dir` with their (local) document
/// frequencies, every indexed field but the id (see
/// [`super::install::UNIQUE_ID_FREQ`]), at most [`TERMS_PER_CHUNK`] terms per
/// chunk, until `send` returns false (nobody listens). A term's frequency
/// is the sum of its segments', less the deleted documents of each that
/// hold it ([`DeletedTerms`]); a term only deleted documents hold is sent
/// with 0, so that the install finds every term of the version's
/// dictionaries.
pub fn term_chunks(
    dir: &Path,
    mut send: impl FnMut(PrepareChunk) -> bool,
) -> Result<(), CorpusError> {
    let index = Index::open_in_dir(dir)?;
    let searcher = index.reader()?.searcher();
    let schema = index.schema();
    let segments = searcher.segment_readers();
    if segments.is_empty() {
        return Ok(());
    }
    let deleted = DeletedTerms::read(dir)?;
    let segment_ids: Vec<String> = segments
        .iter()
        .map(|s| s.segment_id().uuid_string())
        .collect();
    let mut chunk = PrepareChunk::default();
    let mut in_chunk = 0;
    for (field, entry) in schema.fields() {
        // Ids are unique in the corpus: an id term's frequency is 1
        // everywhere, known without exchanging one term per document.
        if !entry.is_indexed() || entry.name() == schema::ID {
            continue;
        }
        let inverted = segments
            .iter()
            .map(|s| s.inverted_index(field))
            .collect::<tantivy::Result<Vec<_>>>()?;
        let streams = inverted
            .iter()
            .map(|i| i.terms().stream())
            .collect::<std::io::Result<Vec<_>>>()?;
        let deleted_by_ord: Vec<Option<&FieldDeleted>> = segment_ids
            .iter()
            .map(|id| deleted.field(id, entry.name()))
            .collect();
        let mut terms = TermMerger::new(streams);
        let mut current = FieldTerms {
            field: entry.name().to_string(),
            ..Default::default()
        };
        while terms.advance() {
            let doc_freq: u64 = terms
                .current_segment_ords_and_term_infos()
                .map(|(ord, info)| {
                    let gone = deleted_by_ord[ord]
                        .and_then(|d| d.get(terms.key()))
                        .copied()
                        .unwrap_or(0);
                    u64::from(info.doc_freq.saturating_sub(gone))
                })
                .sum();
            current.terms.push(terms.key().to_vec());
            current.doc_freqs.push(doc_freq);
            in_chunk += 1;
            if in_chunk == TERMS_PER_CHUNK {
                let name = current.field.clone();
                chunk.terms.push(std::mem::replace(
                    &mut current,
                    FieldTerms {
                        field: name,
                        ..Default::default()
                    },
                ));
                if !send(std::mem::take(&mut chunk)) {
                    return Ok(());
                }
                in_chunk = 0;
            }
        }
        if !current.terms.is_empty() {
            chunk.terms.push(current);
        }
    }
    if !chunk.terms.is_empty() {
        send(chunk);
    }
    Ok(())
}

/// The directory of shard `shard` in the build `build` (`searchtree build
/// --out`).
fn build_shard(build: &Path, shard: u32) -> std::path::PathBuf {
    build
        .join("shards")
        .join(crate::shard::manifest::shard_dir_name(shard))
}
