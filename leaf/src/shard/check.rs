//! Checking one shard of a build against the build's manifest: its
//! `shard.json` agrees with `manifest.json`, it opens with its scoring
//! files, its files pass tantivy's checksums, its schema is the build's,
//! and every id sits in the shard it hashes to, once.
//!
//! `searchtree verify DIR` runs this for every shard (and then checks the
//! corpus-wide statistics across them); a leaf runs it for its own shard
//! before it serves a build as a new version (a hot swap), so a damaged
//! build is refused rather than served.

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use searchtree_proto::sharding::shard_of;
use tantivy::Searcher;

use super::manifest::{MANIFEST_FILE, Manifest};
use super::{SHARD_META_FILE, Shard, read_meta};
use crate::stats::{DOC_FREQS_FILE, DocFreqs};

/// Misplaced or duplicate ids named per shard; the rest are counted.
const EXAMPLES: usize = 5;

/// Checks shard `number` of the build `manifest` describes, in
/// `shard_dir`, adding what is wrong to `problems`; `ids` gathers the ids
/// seen, so that one held by two shards is named too. Returns the opened
/// shard's searcher, its stored frequencies and the number of misplaced or
/// duplicate ids, or `None` if it does not open.
pub fn check_shard(
    manifest: &Manifest,
    number: u32,
    shard_dir: &Path,
    ids: &mut HashSet<String>,
    problems: &mut Vec<String>,
) -> Option<(Searcher, DocFreqs, usize)> {
    let shown = shard_dir.display();
    let meta = match read_meta(shard_dir) {
        Ok(meta) => meta,
        Err(e) => {
            problems.push(format!("shard {number}: {e}"));
            return None;
        }
    };
    let meta_path = shard_dir.join(SHARD_META_FILE);
    let Some(entry) = manifest.shards.get(number as usize) else {
        problems.push(format!(
            "shard {number}: {MANIFEST_FILE} lists {} shards",
            manifest.shards.len()
        ));
        return None;
    };
    let mut disagree = |what: &str, here: String, there: String| {
        problems.push(format!(
            "{}: {what} {here} differs from {MANIFEST_FILE}'s {there}",
            meta_path.display()
        ));
    };
    if meta.shard != number {
        disagree("shard", meta.shard.to_string(), number.to_string());
    }
    if meta.num_shards != manifest.num_shards {
        disagree(
            "num_shards",
            meta.num_shards.to_string(),
            manifest.num_shards.to_string(),
        );
    }
    if meta.num_docs != entry.num_docs {
        disagree(
            "num_docs",
            meta.num_docs.to_string(),
            entry.num_docs.to_string(),
        );
    }
    if meta.corpus != manifest.corpus {
        disagree(
            "corpus",
            format!("{:?}", meta.corpus),
            format!("{:?}", manifest.corpus),
        );
    }
    if meta.input_checksum != manifest.input.checksum {
        disagree(
            "input_checksum",
            format!("{:?}", meta.input_checksum),
            format!("{:?}", manifest.input.checksum),
        );
    }

    let shard = match Shard::open(shard_dir) {
        Ok(shard) => shard,
        Err(e) => {
            problems.push(format!("shard {number} does not open: {e}"));
            if let Ok(index) = tantivy::Index::open_in_dir(shard_dir)
                && let Err(damage) = intact(&index)
            {
                problems.push(format!("{shown}: {damage}"));
            }
            return None;
        }
    };
    if let Err(damage) = intact(&shard.index) {
        problems.push(format!("{shown}: {damage}"));
        // Damaged files are not read further: tantivy may panic on them.
        return None;
    }
    if serde_json::to_value(shard.index.schema()).ok().as_ref() != Some(&manifest.schema) {
        problems.push(format!(
            "{shown}: the index's schema is not the one {MANIFEST_FILE} records"
        ));
    }
    let searcher = shard.reader.searcher();
    if searcher.num_docs() != meta.num_docs {
        problems.push(format!(
            "{shown}: the index holds {} documents but {SHARD_META_FILE} says {}",
            searcher.num_docs(),
            meta.num_docs
        ));
    }
    // Files that pass their checksums may still not be what tantivy wrote
    // (a checksum computed over damaged bytes): a panic reading them is a
    // problem found, not the end of the check.
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_ids(&searcher, &shard, manifest.num_shards, number, ids)
    }))
    .unwrap_or_else(|panic| {
        let why = crate::error::panic_text(&*panic).unwrap_or("a panic");
        Err(tantivy::TantivyError::InternalError(format!(
            "the index is damaged ({})",
            searchtree_proto::query::truncate_chars(why, 120)
        )))
    });
    let misplaced = match checked {
        Ok(wrong) => {
            for what in &wrong {
                problems.push(format!("{shown}: {what}"));
            }
            wrong.len()
        }
        Err(e) => {
            problems.push(format!("{shown}: reading ids failed: {e}"));
            1
        }
    };
    let path = shard_dir.join(DOC_FREQS_FILE);
    let stored = match File::open(&path).and_then(|f| DocFreqs::read_from(BufReader::new(f))) {
        Ok(stored) => stored,
        Err(e) => {
            problems.push(format!("{}: {e}", path.display()));
            return None;
        }
    };
    Some((searcher, stored, misplaced))
}

/// Whether every file of `index` passes its checksum; if not, what is
/// wrong, the damaged files named. Used by the checks of a build and by a
/// leaf opening the versions it starts with.
pub fn intact(index: &tantivy::Index) -> Result<(), String> {
    let bad = index
        .validate_checksum()
        .map_err(|e| format!("checking checksums failed: {e}"))?;
    if bad.is_empty() {
        return Ok(());
    }
    let mut names: Vec<String> = bad.iter().map(|p| p.display().to_string()).collect();
    names.sort();
    Err(format!(
        "files whose checksum does not match their content: {}",
        names.join(", ")
    ))
}

/// What is wrong with the ids of one shard: ids whose hash names another
/// shard, ids held by two documents (here or in an earlier shard), deleted
/// documents (a build has none). At most [`EXAMPLES`] of each, then a count.
fn check_ids(
    searcher: &Searcher,
    shard: &Shard,
    num_shards: u32,
    number: u32,
    ids: &mut HashSet<String>,
) -> tantivy::Result<Vec<String>> {
    let mut misplaced = Vec::new();
    let mut duplicate = Vec::new();
    let mut wrong = Vec::new();
    for segment in searcher.segment_readers() {
        if segment.num_deleted_docs() > 0 {
            wrong.push(format!(
                "{} deleted documents in a segment (a build has none)",
                segment.num_deleted_docs()
            ));
        }
        let inverted = segment.inverted_index(shard.fields.id)?;
        let mut terms = inverted.terms().stream()?;
        while terms.advance() {
            let id = String::from_utf8_lossy(terms.key()).into_owned();
            let home = shard_of(&id, num_shards);
            if home != number {
                misplaced.push(format!("{id:?} (belongs in shard {home})"));
            }
            if terms.value().doc_freq > 1 || !ids.insert(id.clone()) {
                duplicate.push(format!("{id:?}"));
            }
        }
    }
    for (what, list) in [
        ("documents in the wrong shard", misplaced),
        ("ids held by more than one document", duplicate),
    ] {
        if !list.is_empty() {
            let more = list.len().saturating_sub(EXAMPLES);
            let shown: Vec<&str> = list.iter().take(EXAMPLES).map(String::as_str).collect();
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            wrong.push(format!("{} {what}: {}{tail}", list.len(), shown.join(", ")));
        }
    }
    Ok(wrong)
}
