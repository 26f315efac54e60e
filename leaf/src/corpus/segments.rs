//! Which segments a new version is made of, and writing them into its
//! directory.
//!
//! A publish rewrites as little as it can:
//!
//! - a segment of the current version that no staged operation touched,
//!   and a staged segment without deletes, are **kept**: their files are
//!   linked into the new version, not rewritten;
//! - a segment that lost a few of its documents is kept too, its files
//!   linked and a **delete file** written beside them, as Lucene keeps
//!   deletes, while at most [`MAX_DELETED_SHARE`] of its documents are
//!   deleted; the terms of its deleted documents are counted
//!   ([`super::deleted_terms`]), so that a term's local document frequency
//!   stays exact: its segments' dictionaries' less those counts;
//! - a segment all of whose documents left is **dropped**;
//! - the rest — segments past that share of deletes, staged segments with
//!   deletes — are **merged** into one new segment, without the documents
//!   that left.
//!
//! Each part carries its segment's exact totals where they are known, so
//! that the version records every segment's own ([`SEGMENT_TOTALS_FILE`]).
//!
//! Past [`MAX_VERSION_SEGMENTS`] the smallest kept segments join the merge,
//! so that a tree published often searches a bounded number of segments
//! per shard. Before, every publish merged the whole shard into one
//! segment, whatever the size of the change; and until segments kept
//! their deletes, a load that replaced one document of a shard's large
//! segment rewrote it (BENCHMARKS.md, "Loading into a running tree",
//! "Small changes to a large shard").

use std::path::{Path, PathBuf};

use tantivy::directory::MmapDirectory;
use tantivy::directory::{Directory, OwnedBytes, TerminatingWrite};
use tantivy::fastfield::{AliveBitSet, write_alive_bitset};
use tantivy::index::SegmentComponent;
use tantivy::schema::Schema;
use tantivy::{BitSet, Index, IndexSettings, Segment};

#[cfg(doc)]
use super::local::SEGMENT_TOTALS_FILE;
use super::local::{LocalTotals, SegmentTotals};
use super::{CorpusError, fsio};

/// The most segments a version keeps; past them, the smallest are merged
/// until at most half as many remain. Each segment costs a query its own
/// scorers and survivors: a bundled-corpus tree of 8 segments a shard
/// peaked at 0.81 of one built at once, of 2 at 0.98 (BENCHMARKS.md,
/// "What several segments cost a query").
pub const MAX_VERSION_SEGMENTS: usize = 4;

/// The share of a segment's documents that may be deleted while a version
/// keeps it; past it, the segment is merged without them. Lucene's tiered
/// merge policy lets deletes reach a third of an index by default
/// (`deletesPctAllowed`, 20 at the least): each deleted document costs a
/// search a posting skipped, and the disk its bytes, until the merge.
pub const MAX_DELETED_SHARE: f64 = 0.2;

/// Whether a segment of `max_doc` documents with `deleted` of them deleted
/// may be kept with its deletes.
pub fn keeps_deletes(deleted: u32, max_doc: u32) -> bool {
    f64::from(deleted) <= MAX_DELETED_SHARE * f64::from(max_doc)
}

/// tantivy's file naming a directory's segments.
const META_FILE: &str = "meta.json";

/// The segments of a version being prepared.
#[derive(Default)]
pub struct VersionSegments {
    kept: Vec<Kept>,
    merged: Vec<Merged>,
}

/// A segment kept, the directory its files are linked from, and the
/// documents it keeps alive if this version deletes some of them.
struct Kept {
    segment: Segment,
    from: PathBuf,
    totals: Option<LocalTotals>,
    deletes: Option<NewDeletes>,
}

/// Documents of a kept segment this version deletes: the segment's
/// documents still alive, and the number its delete file is named by.
struct NewDeletes {
    alive: BitSet,
    opstamp: u64,
}

/// A segment merged into the new one, less the documents `alive` lacks,
/// and the totals of the documents it brings, where known.
struct Merged {
    segment: Segment,
    alive: Option<AliveBitSet>,
    totals: Option<LocalTotals>,
}

/// What a version's directory was made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Segments linked as they were (for the publish's log).
    pub kept: usize,
    /// Segments merged into one (for the publish's log).
    pub merged: usize,
    /// Kept segments this version wrote a delete file for (for the
    /// publish's log).
    pub with_deletes: usize,
    /// The ids of the kept segments.
    pub kept_ids: Vec<String>,
    /// The totals of each of the version's segments whose parts all had
    /// theirs.
    pub totals: SegmentTotals,
}

impl VersionSegments {
    /// Keeps `segment` (of the index in `from`, without deletes) as it is;
    /// `totals` are its own, if known.
    pub fn keep(&mut self, segment: Segment, from: &Path, totals: Option<LocalTotals>) {
        self.kept.push(Kept {
            segment,
            from: from.to_path_buf(),
            totals,
            deletes: None,
        });
    }

    /// Keeps `segment` (of the index in `from`) with only the documents in
    /// `alive`: its files linked, a delete file named by `opstamp` written;
    /// `totals` are those of the documents it keeps, if known.
    pub fn keep_with_deletes(
        &mut self,
        segment: Segment,
        from: &Path,
        alive: BitSet,
        opstamp: u64,
        totals: Option<LocalTotals>,
    ) {
        self.kept.push(Kept {
            segment,
            from: from.to_path_buf(),
            totals,
            deletes: Some(NewDeletes { alive, opstamp }),
        });
    }

    /// Merges `segment` into the version's new segment, less the documents
    /// `alive` does not hold (and less its own deletes); `totals` are those
    /// of the documents it brings, if known.
    pub fn merge(
        &mut self,
        segment: Segment,
        alive: Option<AliveBitSet>,
        totals: Option<LocalTotals>,
    ) {
        self.merged.push(Merged {
            segment,
            alive,
            totals,
        });
    }

    /// Moves the smallest kept segments into the merge while the version
    /// would have more than [`MAX_VERSION_SEGMENTS`].
    fn bound(&mut self) -> Result<(), CorpusError> {
        let total = self.kept.len() + usize::from(!self.merged.is_empty());
        if total <= MAX_VERSION_SEGMENTS {
            return Ok(());
        }
        self.kept
            .sort_by_key(|k| std::cmp::Reverse(k.segment.meta().num_docs()));
        while self.kept.len() + 1 > MAX_VERSION_SEGMENTS / 2 {
            let smallest = self.kept.pop().expect("more kept segments than the bound");
            // The merge drops the segment's own deletes, and these.
            let alive = match smallest.deletes {
                Some(deletes) => Some(alive_bitset(&deletes.alive)?),
                None => None,
            };
            self.merge(smallest.segment, alive, smallest.totals);
        }
        Ok(())
    }

    /// Writes the version into the (empty) directory `dir`: the merged
    /// segment written there, the kept ones linked, and one `meta.json`
    /// naming them all.
    pub fn write(
        mut self,
        schema: Schema,
        settings: IndexSettings,
        dir: &Path,
    ) -> Result<Written, CorpusError> {
        self.bound()?;
        let mut written = Written {
            kept: self.kept.len(),
            merged: self.merged.len(),
            with_deletes: self.kept.iter().filter(|k| k.deletes.is_some()).count(),
            kept_ids: Vec::with_capacity(self.kept.len()),
            totals: SegmentTotals::new(),
        };
        if self.merged.is_empty() {
            Index::builder()
                .schema(schema)
                .settings(settings)
                .create_in_dir(dir)?;
        } else {
            let mut totals = Some(LocalTotals::default());
            let mut segments = Vec::with_capacity(self.merged.len());
            let mut alive = Vec::with_capacity(self.merged.len());
            for part in self.merged {
                totals = totals.zip(part.totals).map(|(mut sum, part)| {
                    sum.absorb(&part);
                    sum
                });
                segments.push(part.segment);
                alive.push(part.alive);
            }
            tantivy::indexer::merge_filtered_segments(
                &segments,
                settings,
                alive,
                MmapDirectory::open(dir).map_err(tantivy::TantivyError::from)?,
            )?;
            let ids = Index::open_in_dir(dir)?.searchable_segment_ids()?;
            if let (Some(totals), [id]) = (totals, ids.as_slice()) {
                written.totals.insert(id.uuid_string(), totals);
            }
        }
        if self.kept.is_empty() {
            return Ok(written);
        }
        let index = Index::open_in_dir(dir)?;
        let mut meta = index.load_metas()?;
        for kept in self.kept {
            let id = kept.segment.id().uuid_string();
            let prefix = format!("{id}.");
            let segment_meta = match kept.deletes {
                None => {
                    fsio::link_or_copy_matching(&kept.from, dir, |name| name.starts_with(&prefix))?;
                    kept.segment.meta().clone()
                }
                Some(deletes) => {
                    // The files but the old delete file; the new one names
                    // every document deleted so far.
                    fsio::link_or_copy_matching(&kept.from, dir, |name| {
                        name.starts_with(&prefix) && !name.ends_with(".del")
                    })?;
                    let max_doc = kept.segment.meta().max_doc();
                    let deleted = max_doc - deletes.alive.len() as u32;
                    let segment_meta = kept
                        .segment
                        .meta()
                        .clone()
                        .with_delete_meta(deleted, deletes.opstamp);
                    // Through the index's directory, which adds the footer
                    // (checksum) every index file carries.
                    let path = segment_meta.relative_path(SegmentComponent::Delete);
                    let mut file = index
                        .directory()
                        .open_write(&path)
                        .map_err(tantivy::TantivyError::from)?;
                    write_alive_bitset(&deletes.alive, &mut file)?;
                    file.terminate()?;
                    segment_meta
                }
            };
            meta.segments.push(segment_meta);
            if let Some(totals) = kept.totals {
                written.totals.insert(id.clone(), totals);
            }
            written.kept_ids.push(id);
        }
        let mut bytes = serde_json::to_vec_pretty(&meta)?;
        bytes.push(b'\n');
        fsio::write_atomic(&dir.join(META_FILE), &bytes)?;
        Ok(written)
    }
}

/// `alive` (the documents of a segment to keep) as a merge takes it.
pub fn alive_bitset(alive: &BitSet) -> Result<AliveBitSet, CorpusError> {
    let mut bytes = Vec::new();
    write_alive_bitset(alive, &mut bytes)?;
    Ok(AliveBitSet::open(OwnedBytes::new(bytes)))
}
