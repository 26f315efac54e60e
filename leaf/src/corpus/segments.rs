//! Which segments a new version is made of, and writing them into its
//! directory.
//!
//! A version's segments never hold deleted documents: a term's local
//! document frequency is then the sum of its segments' term dictionaries
//! (what the publish exchanges), and each segment's own counts are exact.
//! Within that rule a publish rewrites as little as it can:
//!
//! - a segment of the current version that no staged operation touched,
//!   and a staged segment without deletes, are **kept**: their files are
//!   linked into the new version, not rewritten;
//! - a segment all of whose documents left is **dropped**;
//! - the rest — segments of the current version that lost some of their
//!   documents, staged segments with deletes — are **merged** into one new
//!   segment, without the documents that left.
//!
//! Each part carries its segment's exact totals where they are known, so
//! that the version records every segment's own ([`SEGMENT_TOTALS_FILE`]).
//!
//! Past [`MAX_VERSION_SEGMENTS`] the smallest kept segments join the merge,
//! so that a tree published often searches a bounded number of segments
//! per shard. Before, every publish merged the whole shard into one
//! segment, whatever the size of the change (BENCHMARKS.md, "Loading into
//! a running tree").

use std::path::{Path, PathBuf};

use tantivy::directory::MmapDirectory;
use tantivy::fastfield::AliveBitSet;
use tantivy::schema::Schema;
use tantivy::{Index, IndexSettings, Segment};

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

/// tantivy's file naming a directory's segments.
const META_FILE: &str = "meta.json";

/// The segments of a version being prepared.
#[derive(Default)]
pub struct VersionSegments {
    kept: Vec<Kept>,
    merged: Vec<Merged>,
}

/// A segment kept as it is, and the directory its files are linked from.
struct Kept {
    segment: Segment,
    from: PathBuf,
    totals: Option<LocalTotals>,
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
    fn bound(&mut self) {
        let total = self.kept.len() + usize::from(!self.merged.is_empty());
        if total <= MAX_VERSION_SEGMENTS {
            return;
        }
        self.kept
            .sort_by_key(|k| std::cmp::Reverse(k.segment.meta().num_docs()));
        while self.kept.len() + 1 > MAX_VERSION_SEGMENTS / 2 {
            let smallest = self.kept.pop().expect("more kept segments than the bound");
            self.merge(smallest.segment, None, smallest.totals);
        }
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
        self.bound();
        let mut written = Written {
            kept: self.kept.len(),
            merged: self.merged.len(),
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
        let mut meta = Index::open_in_dir(dir)?.load_metas()?;
        for kept in self.kept {
            let id = kept.segment.id().uuid_string();
            let prefix = format!("{id}.");
            fsio::link_or_copy_matching(&kept.from, dir, |name| name.starts_with(&prefix))?;
            meta.segments.push(kept.segment.meta().clone());
            if let Some(totals) = kept.totals {
                written.totals.insert(id, totals);
            }
        }
        let mut bytes = serde_json::to_vec_pretty(&meta)?;
        bytes.push(b'\n');
        fsio::write_atomic(&dir.join(META_FILE), &bytes)?;
        Ok(written)
    }
}
