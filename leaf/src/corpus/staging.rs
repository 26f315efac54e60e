//! The staging area: loaded document operations waiting for the next
//! version, kept durably so that an acknowledged batch survives a crash.
//!
//! ```text
//! staging/
//!   meta.json, ...   a tantivy index in the shard schema: the upserted
//!                    documents (an id upserted twice keeps its last copy)
//!   ops.log          one JSON line per acknowledged group of batches: the
//!                    version it was counted against, its operations (the
//!                    documents whole), the ids it deleted
//! ```
//!
//! A group is durable once its line is in `ops.log` (fsync'd), not once
//! tantivy has committed it: the index commits when a version is prepared
//! and every [`COMMIT_AFTER_BYTES`] of operations, and records in its
//! commit how many lines it holds. A leaf that stops with operations not
//! committed applies those lines again when it opens the staging area.
//! Once the index has committed them, the lines' documents are not needed
//! again: the log is rewritten as one line that stands for them all (their
//! counts and deleted ids, no documents), so that it holds at most about
//! [`COMMIT_AFTER_BYTES`] of documents however long the load.
//! A commit per group made a segment per group, about six a leaf for a
//! load of 50,000 documents into four shards, which the indexing then paid
//! for in term dictionaries built again and deletes applied to every
//! segment (BENCHMARKS.md, "Loading into a running tree").
//!
//! An upsert deletes any staged copy of its id and adds the document; a
//! delete deletes any staged copy and records the id. When a version is
//! prepared, the published documents whose id is deleted or upserted here
//! are dropped and the staged documents merged in ([`super::prepare`]).
//! Applying the same operations twice yields the same staging area, so a
//! resent batch is harmless.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use searchtree_proto::pb::{DocOp, LoadAck, RefusedOp};
use searchtree_proto::sharding::{id_refusal, shard_of};
use serde::{Deserialize, Serialize};
use tantivy::index::SegmentId;
use tantivy::indexer::NoMergePolicy;
use tantivy::schema::IndexRecordOption;
use tantivy::{DocSet, TERMINATED};
use tantivy::{
    Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, Segment, SegmentReader,
    TantivyDocument, Term, doc,
};

use super::CorpusError;
use super::fsio;
use super::local::{ContentHasher, LocalTotals};
use crate::schema::{self, Fields};

const LOG_FILE: &str = "ops.log";

/// Staged segments merged into one past this many.
pub const MAX_SEGMENTS: usize = 16;

/// Bytes of staged documents the index holds uncommitted at most: past
/// them it commits, so that a restart applies at most this much again.
pub const COMMIT_AFTER_BYTES: usize = 64 << 20;

/// The staging index's indexing memory: a load's documents go into one
/// segment per commit rather than one per 16 MiB (the build gives each
/// shard as much, `corpus-tools`' `TOTAL_INDEXING_MEMORY`).
const STAGING_MEMORY: usize = 128 << 20;

/// One line of `ops.log`. Written borrowing the batch's text (a load's
/// documents are not copied to be logged), read back owning it.
#[derive(Debug, Serialize, Deserialize)]
struct LogRecord<'a> {
    /// The current version when the batch was applied.
    base: u64,
    /// Operations applied.
    ops: u64,
    /// Ids deleted.
    deleted: Vec<String>,
    /// The operations applied, in order, to apply them again if the index
    /// had not committed them (empty in lines written when every group was
    /// committed before its line, and in a line standing for several).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    applied: Vec<LoggedOp<'a>>,
    /// How many lines this one stands for: more than one once committed
    /// lines were rewritten as one (their documents dropped).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    lines: u64,
}

/// A log line stands for itself unless it says otherwise.
fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

/// One applied operation in `ops.log`.
#[derive(Debug, Serialize, Deserialize)]
struct LoggedOp<'a> {
    id: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    delete: bool,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    title: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    body: Cow<'a, str>,
}

impl<'a> LoggedOp<'a> {
    /// `op` as logged: its text borrowed, none for a delete.
    fn of(op: &'a DocOp) -> Self {
        let text = |s: &'a str| Cow::Borrowed(if op.delete { "" } else { s });
        LoggedOp {
            id: Cow::Borrowed(&op.id),
            delete: op.delete,
            title: text(&op.title),
            body: text(&op.body),
        }
    }
}

/// What `ops.log` says when a leaf opens its staging area.
struct LogContents {
    /// Operations applied, over every line.
    ops: u64,
    /// Ids deleted, over every line.
    deleted: BTreeSet<String>,
    /// Whether a line was counted against a version older than the
    /// current one (its operations are published already).
    stale: bool,
    /// The oldest version a line was counted against.
    base: Option<u64>,
    /// Whole lines (a torn last line is a batch never acknowledged).
    lines: u64,
    /// The operations of the lines from the one asked for on, in order:
    /// those the index has not committed. Earlier lines' documents are
    /// not kept, so a long log is not held in memory whole.
    to_apply: Vec<LoggedOp<'static>>,
}

impl LogContents {
    fn read(path: &Path, apply_from: u64, current: u64) -> Result<Self, CorpusError> {
        let mut contents = LogContents {
            ops: 0,
            deleted: BTreeSet::new(),
            stale: false,
            base: None,
            lines: 0,
            to_apply: Vec::new(),
        };
        let Ok(file) = File::open(path) else {
            return Ok(contents);
        };
        for line in BufReader::new(file).lines() {
            let Ok(record) = serde_json::from_str::<LogRecord>(&line?) else {
                break;
            };
            contents.stale |= record.base < current;
            contents.base = Some(contents.base.map_or(record.base, |b| b.min(record.base)));
            contents.ops += record.ops;
            contents.deleted.extend(record.deleted);
            if contents.lines >= apply_from {
                contents.to_apply.extend(record.applied);
            }
            contents.lines += record.lines.max(1);
        }
        Ok(contents)
    }
}

/// Where this shard sits in the corpus, to refuse documents of others.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    /// This shard's number.
    pub shard: u32,
    /// Shards in the corpus.
    pub num_shards: u32,
}

/// The staging area of one leaf.
pub struct Staging {
    dir: PathBuf,
    index: Index,
    writer: IndexWriter,
    reader: IndexReader,
    fields: Fields,
    ops: u64,
    deleted: BTreeSet<String>,
    /// Whether each id the staged operations touched is there after them,
    /// by a hash of the id (8 bytes an id, where the ids themselves would
    /// take tens): what a load's counts are taken against before the
    /// published version. A hash shared by two ids would only miscount.
    /// An id that is there has its staged copy's content hash, for the
    /// totals of segments as they were indexed ([`Staging::indexed_totals`]).
    present: HashMap<u64, Option<u64>>,
    hasher: ContentHasher,
    /// Segments made by this process's commits and not merged since:
    /// tantivy's token counts are exact in them while they have no deletes.
    indexed: HashSet<SegmentId>,
    log: File,
    /// The oldest version a line of `ops.log` was counted against.
    base: Option<u64>,
    /// Lines in `ops.log` (a line standing for several counts as they do),
    /// and how many of them the index has committed.
    lines: u64,
    committed_lines: u64,
    /// Bytes of `ops.log` lines written since the index last committed.
    uncommitted_bytes: usize,
}

/// The key of `id` in [`Staging`]'s `present`.
fn id_key(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

impl Staging {
    /// Opens (or creates) the staging area in `dir`. Operations recorded
    /// against a version older than `current` were published already (the
    /// leaf stopped between activating a version and emptying its staging
    /// area): they are dropped.
    pub fn open(dir: &Path, current: u64) -> Result<Staging, CorpusError> {
        std::fs::create_dir_all(dir)?;
        let index = if dir.join("meta.json").exists() {
            Index::open_in_dir(dir)?
        } else {
            Index::create_in_dir(dir, schema::build().0)?
        };
        let fields = schema::fields_of(&index.schema())?;
        let writer: IndexWriter =
            index
                .writer_with_num_threads(1, STAGING_MEMORY)
                .map_err(|e| match e {
                    tantivy::TantivyError::LockFailure(..) => CorpusError::Precondition(format!(
                        "{}: another leaf is using this data directory; give each leaf its own \
                     --data-dir (under `searchtree up`, each tree its own --state-dir)",
                        dir.display()
                    )),
                    other => other.into(),
                })?;
        writer.set_merge_policy(Box::new(NoMergePolicy));
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let log_path = dir.join(LOG_FILE);
        let committed = committed_lines(&index)?;
        let hasher = ContentHasher::new(&index.schema(), fields.id);
        let mut log = LogContents::read(&log_path, committed, current)?;
        // A commit covering more lines than the log holds is from before
        // the log was emptied (a leaf stopped inside `clear`): it covers
        // none of these.
        let covered = if committed > log.lines { 0 } else { committed };
        if covered < committed && log.lines > 0 {
            log = LogContents::read(&log_path, 0, current)?;
        }
        let LogContents {
            ops,
            deleted,
            stale,
            base,
            lines,
            to_apply,
        } = log;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        fsio::sync_dir(dir)?;
        let mut staging = Staging {
            dir: dir.to_path_buf(),
            index,
            writer,
            reader,
            fields,
            ops,
            deleted,
            present: HashMap::new(),
            hasher,
            indexed: HashSet::new(),
            log,
            base,
            lines,
            committed_lines: covered,
            uncommitted_bytes: 0,
        };
        if stale {
            staging.clear()?;
        } else {
            // Acknowledged before the leaf stopped, not yet in the index.
            for op in &to_apply {
                staging.stage(&op.id, op.delete, &op.title, &op.body)?;
            }
            if !to_apply.is_empty() {
                tracing::info!(
                    operations = to_apply.len(),
                    "applied staged operations the index had not committed"
                );
            }
            if !to_apply.is_empty() || committed != covered {
                staging.commit()?;
            }
            staging.present = staging.staged_ids()?;
        }
        Ok(staging)
    }

    /// Operations staged since the last version.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Ids deleted since the last version (some may be upserted again).
    pub fn deleted(&self) -> &BTreeSet<String> {
        &self.deleted
    }

    /// Applies a batch in order and commits it durably before returning
    /// (see [`Staging::apply_group`]).
    pub fn apply(
        &mut self,
        ops: &[DocOp],
        placement: Placement,
        published: &Searcher,
        base: u64,
    ) -> Result<LoadAck, CorpusError> {
        let mut acks = self.apply_group(&[ops], placement, published, base)?;
        Ok(acks.pop().expect("one ack per batch"))
    }

    /// Applies batches in order and makes them durable, together, before
    /// returning one acknowledgement per batch: a group commit, so that
    /// batches queued behind one another cost one log line and one fsync
    /// rather than one each (the index commits apart, see the module
    /// documentation). Counts each operation
    /// against `published` (the current version's searcher) and refuses
    /// the invalid ones. `base` is the current version's number.
    pub fn apply_group(
        &mut self,
        batches: &[&[DocOp]],
        placement: Placement,
        published: &Searcher,
        base: u64,
    ) -> Result<Vec<LoadAck>, CorpusError> {
        let mut acks = Vec::with_capacity(batches.len());
        let mut deleted = Vec::new();
        let mut applied = 0u64;
        let mut logged = Vec::new();
        let fields = self.fields;
        // Whether each id met in this group is there after its last op (with
        // its content hash), so that an id upserted twice is added once and
        // then replaced, and one added then deleted is deleted (not missing).
        let mut present: HashMap<&str, Option<u64>> = HashMap::new();
        for ops in batches {
            let mut ack = LoadAck {
                ok: true,
                ..Default::default()
            };
            for op in *ops {
                if let Some(reason) = refusal(&op.id, placement) {
                    ack.refused.push(RefusedOp {
                        line: op.line,
                        id: op.id.clone(),
                        reason,
                    });
                    continue;
                }
                let exists = match present.get(op.id.as_str()) {
                    Some(now) => now.is_some(),
                    None => match self.present.get(&id_key(&op.id)) {
                        Some(now) => now.is_some(),
                        // The published copy, unless a delete file hides it.
                        None => {
                            crate::fetch::find(published, Term::from_field_text(fields.id, &op.id))?
                                .is_some()
                        }
                    },
                };
                let content = self.stage(&op.id, op.delete, &op.title, &op.body)?;
                present.insert(op.id.as_str(), content);
                logged.push(LoggedOp::of(op));
                if op.delete {
                    deleted.push(op.id.clone());
                    if exists {
                        ack.deleted += 1;
                    } else {
                        ack.delete_missing += 1;
                    }
                } else if exists {
                    ack.replaced += 1;
                } else {
                    ack.added += 1;
                }
                applied += 1;
            }
            acks.push(ack);
        }
        if applied == 0 {
            return Ok(acks);
        }
        // The next batches count against what this one staged.
        self.present
            .extend(present.into_iter().map(|(id, now)| (id_key(id), now)));
        let record = LogRecord {
            base,
            ops: applied,
            deleted,
            applied: logged,
            lines: 1,
        };
        let mut line = serde_json::to_vec(&record)?;
        line.push(b'\n');
        // Durable from here: a restart applies the line again if the index
        // has not committed it.
        self.log.write_all(&line)?;
        self.log.sync_data()?;
        self.lines += 1;
        self.base = Some(self.base.map_or(base, |b| b.min(base)));
        self.uncommitted_bytes += line.len();
        self.ops += applied;
        self.deleted.extend(record.deleted);
        if self.uncommitted_bytes >= COMMIT_AFTER_BYTES {
            self.commit()?;
        }
        Ok(acks)
    }

    /// What the staging area holds, as [`Staging`]'s `present`: every id of
    /// a live staged document with its content hash, and every id deleted
    /// since and not staged again (read once, when a leaf opens its staging
    /// area after a restart).
    fn staged_ids(&self) -> Result<HashMap<u64, Option<u64>>, CorpusError> {
        self.reader.reload()?;
        let mut present: HashMap<u64, Option<u64>> =
            self.deleted.iter().map(|id| (id_key(id), None)).collect();
        for segment in self.reader.searcher().segment_readers() {
            let inverted = segment.inverted_index(self.fields.id)?;
            let alive = segment.alive_bitset();
            let store = segment.get_store_reader(1)?;
            let mut terms = inverted.terms().stream()?;
            while terms.advance() {
                let mut postings = inverted
                    .read_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)?;
                let mut doc = postings.doc();
                while doc != TERMINATED {
                    if alive.is_none_or(|a| a.is_alive(doc)) {
                        let stored: TantivyDocument = store.get(doc)?;
                        present.insert(
                            id_key(&String::from_utf8_lossy(terms.key())),
                            Some(self.hasher.hash(&stored)),
                        );
                        break;
                    }
                    doc = postings.advance();
                }
            }
        }
        Ok(present)
    }

    /// Puts one operation into the index (uncommitted): any staged copy of
    /// `id` deleted, and the document added unless the operation deletes.
    /// Returns the added document's content hash.
    fn stage(
        &self,
        id: &str,
        delete: bool,
        title: &str,
        body: &str,
    ) -> tantivy::Result<Option<u64>> {
        let fields = self.fields;
        self.writer
            .delete_term(Term::from_field_text(fields.id, id));
        if delete {
            return Ok(None);
        }
        let document = doc!(
            fields.id => id,
            fields.title => title,
            fields.body => body,
        );
        let content = self.hasher.hash(&document);
        self.writer.add_document(document)?;
        Ok(Some(content))
    }

    /// The exact totals of a staged segment as it was indexed — made by a
    /// commit of this process, not merged since, without deletes — read
    /// from tantivy's counts and the content hashes kept as it was staged,
    /// with its ids inserted into `ids`; `None` for any other segment,
    /// whose documents are counted one by one.
    pub fn indexed_totals(
        &self,
        segment: &SegmentReader,
        ids: &mut BTreeSet<String>,
    ) -> Result<Option<LocalTotals>, CorpusError> {
        if segment.has_deletes() || !self.indexed.contains(&segment.segment_id()) {
            return Ok(None);
        }
        let content = |id: &str| self.present.get(&id_key(id)).copied().flatten();
        // Ids are inserted as they are read: on a `None` part way, the
        // caller counts the segment document by document, which inserts
        // the same ids again.
        Ok(LocalTotals::of_indexed(segment, self.fields, content, ids)?)
    }

    /// Commits the index, recording how many lines of `ops.log` it holds,
    /// and merges its segments if there are too many.
    fn commit(&mut self) -> Result<(), CorpusError> {
        let before: HashSet<SegmentId> = self.index.searchable_segment_ids()?.into_iter().collect();
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&self.lines.to_string());
        prepared.commit()?;
        // No merge policy runs: every new segment is one the indexing made.
        for id in self.index.searchable_segment_ids()? {
            if !before.contains(&id) {
                self.indexed.insert(id);
            }
        }
        self.committed_lines = self.lines;
        self.uncommitted_bytes = 0;
        self.shorten_log()?;
        self.compact()
    }

    /// Rewrites `ops.log`, every line of which the index has just
    /// committed, as one line standing for them all: their counts, the ids
    /// they deleted, none of their documents. Atomic: a leaf stopped on the
    /// way finds the old log or the new one, and either says the index
    /// holds every line.
    fn shorten_log(&mut self) -> Result<(), CorpusError> {
        let Some(base) = self.base else {
            return Ok(());
        };
        let record = LogRecord {
            base,
            ops: self.ops,
            deleted: self.deleted.iter().cloned().collect(),
            applied: Vec::new(),
            lines: self.lines,
        };
        let mut line = serde_json::to_vec(&record)?;
        line.push(b'\n');
        self.replace_log(&line)
    }

    /// Replaces `ops.log` with `bytes` atomically and appends to the new
    /// file from then on. The handle appended to is the one `bytes` were
    /// written with, taken over as soon as the rename has put it in place,
    /// so that no acknowledged line can go to a file no longer named
    /// `ops.log`.
    fn replace_log(&mut self, bytes: &[u8]) -> Result<(), CorpusError> {
        let path = self.dir.join(LOG_FILE);
        let tmp = path.with_extension("tmp-write");
        fsio::remove_file_if_exists(&tmp)?;
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        self.log = file;
        fsio::sync_dir(&self.dir)?;
        Ok(())
    }

    /// Merges the staged segments into one once there are
    /// [`MAX_SEGMENTS`] (each commit of the index makes one): every delete
    /// is applied to every segment, so their number bounds the cost of a
    /// commit.
    /// Synchronous, under the store's lock, so no snapshot sees it half done.
    fn compact(&mut self) -> Result<(), CorpusError> {
        let segments = self.index.searchable_segment_ids()?;
        if segments.len() >= MAX_SEGMENTS {
            self.writer.merge(&segments).wait()?;
            self.writer.garbage_collect_files().wait()?;
            // A merge estimates the token counts of documents it drops.
            self.indexed.clear();
        }
        Ok(())
    }

    /// Every staged document, the index committed first: a searcher over
    /// them and the segments it reads (with their own deletes).
    pub fn snapshot(&mut self) -> Result<(Searcher, Vec<Segment>), CorpusError> {
        if self.committed_lines < self.lines {
            self.commit()?;
        }
        self.reader.reload()?;
        let searcher = self.reader.searcher();
        let ids: BTreeSet<_> = searcher
            .segment_readers()
            .iter()
            .map(|r| r.segment_id())
            .collect();
        let segments = self
            .index
            .searchable_segments()?
            .into_iter()
            .filter(|s| ids.contains(&s.id()))
            .collect();
        Ok((searcher, segments))
    }

    /// The staging index (for its settings and tokenizers).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The staging area's directory (a version may keep a staged segment,
    /// its files linked from here).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Empties the staging area durably: its operations are part of a
    /// version now, or superseded by one.
    pub fn clear(&mut self) -> Result<(), CorpusError> {
        // The log first: were the leaf to stop between the two steps, staged
        // documents without their log are re-applied upserts (harmless),
        // while a log without its documents would delete published ones.
        self.replace_log(b"")?;
        self.writer.delete_all_documents()?;
        self.lines = 0;
        self.base = None;
        self.commit()?;
        self.ops = 0;
        self.deleted.clear();
        self.present.clear();
        self.indexed.clear();
        Ok(())
    }
}

/// How many lines of `ops.log` the index's last commit holds: its payload,
/// or 0 for an index never committed with one (lines written then carry no
/// operations to apply again, each group having been committed first).
fn committed_lines(index: &Index) -> Result<u64, CorpusError> {
    Ok(index
        .load_metas()?
        .payload
        .and_then(|p| p.parse().ok())
        .unwrap_or(0))
}

/// Why an operation's id is refused, if it is.
fn refusal(id: &str, placement: Placement) -> Option<String> {
    if let Some(reason) = id_refusal(id) {
        return Some(reason);
    }
    let owner = shard_of(id, placement.num_shards);
    (owner != placement.shard).then(|| {
        format!(
            "id belongs to shard {owner} of {}, not to shard {}",
            placement.num_shards, placement.shard
        )
    })
}
