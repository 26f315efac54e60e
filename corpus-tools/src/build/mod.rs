//! Corpus and build: `searchtree build` reads a corpus and writes one
//! tantivy index per shard, each with the corpus-wide statistics it scores
//! with, plus a manifest and a topology.
//!
//! - [`corpus`], [`dir_corpus`]: the corpus readers (JSON Lines, plain or
//!   gzipped; a directory of text files);
//! - [`sharding`]: which shard a document goes to;
//! - [`manifest`]: what a build records about itself;
//! - `out`: what `--out` may be, and the staging directory a build is
//!   assembled in, so that a failed build never replaces a good one.
//!
//! The shards themselves are written by the leaf crate
//! (`searchtree_leaf::shard::write`), beside the code that reads them.

pub mod corpus;
pub mod dir_corpus;
pub mod manifest;
mod out;
/// Which shard a document goes to (shared with the nodes that route loads).
pub use searchtree_proto::sharding;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use indicatif::ProgressBar;
use searchtree_leaf::schema;
use searchtree_leaf::shard::{ShardDocument, ShardWriter, write_scoring};

use self::corpus::{CorpusReader, Document, FieldNames, Source};
use self::dir_corpus::DirReader;
use self::manifest::{
    InputInfo, MANIFEST_FILE, MANIFEST_FORMAT, Manifest, ShardEntry, shard_dir_name,
};
use self::out::{Staging, check_paths, inspect_target};
use self::sharding::{SHARDING_FUNCTION, shard_of};
use crate::tree::topology::Topology;

/// Name of the topology file a build writes.
pub const TOPOLOGY_FILE: &str = "topology.toml";
/// Name of the directory holding the shards in a build's output.
const SHARDS_DIR: &str = "shards";
/// The most shards a build makes. Each shard gets its own tantivy writer,
/// which tantivy gives at least ~16 MiB of indexing memory and a thread, and
/// becomes one leaf process under `up`: 256 shards can take 4 GiB while
/// indexing a large corpus and 256 processes serving it, past what one
/// machine running the whole tree sensibly holds.
pub const MAX_SHARDS: u32 = 256;
/// The most replicas (leaves per shard) a generated topology has: each is
/// its own process under `up`, all on one machine, so more than a handful
/// buys nothing but load.
pub const MAX_REPLICAS: u32 = 16;
/// Memory tantivy may use for indexing, over all shards' writers together
/// (each is still given at least tantivy's floor per thread).
const TOTAL_INDEXING_MEMORY: usize = 512 << 20;

/// Where the corpus comes from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A JSON Lines file, optionally gzipped.
    Lines(PathBuf),
    /// A directory of text files, one document per file.
    Dir(PathBuf),
}

impl Input {
    fn path(&self) -> &Path {
        match self {
            Input::Lines(p) | Input::Dir(p) => p,
        }
    }

    /// The command-line flag that names this input, for messages.
    fn flag(&self) -> &'static str {
        match self {
            Input::Lines(_) => "--input",
            Input::Dir(_) => "--input-dir",
        }
    }

    fn open(&self, fields: &FieldNames) -> anyhow::Result<Box<dyn Source>> {
        Ok(match self {
            Input::Lines(p) => Box::new(CorpusReader::open(p, fields.clone())?),
            Input::Dir(p) => Box::new(DirReader::open(p)?),
        })
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The corpus.
    pub input: Input,
    /// Number of shards.
    pub shards: u32,
    /// Output directory: absent, empty, or a previous build, which is
    /// replaced when the build succeeds.
    pub out: PathBuf,
    /// Parents in the generated topology (0: leaves directly under the root).
    pub parents: u32,
    /// Leaves per shard in the generated topology (replicas of the shard).
    pub replicas: u32,
    /// JSON keys of the document parts.
    pub fields: FieldNames,
    /// Skip invalid lines (counted and reported) instead of failing.
    pub skip_invalid: bool,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

/// What a build did.
#[derive(Debug)]
pub struct BuildReport {
    /// The manifest written.
    pub manifest: Manifest,
    /// The first few skipped lines (or files), for the operator to look at.
    pub skipped_examples: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Builds the shards, manifest and topology for `opts`.
///
/// Refuses, before writing anything, shard or replica counts out of range,
/// an input inside the output (or, for a directory corpus, the output inside
/// the input), and an output that is neither absent, an empty directory nor
/// a previous build; and, before creating any shard, a corpus with fewer
/// documents than shards.
pub fn build(opts: &BuildOptions) -> anyhow::Result<BuildReport> {
    let started = Instant::now();
    check_counts(opts.shards, opts.replicas)?;
    let topology = Topology::generate(opts.shards, opts.parents, opts.replicas)?;
    check_paths(&opts.input, &opts.out)?;
    inspect_target(&opts.out)?;
    let staging = Staging::new(&opts.out)?;
    let result = build_into(opts, &topology, staging.path());
    let (manifest, skipped_examples) = match result {
        Ok(done) => done,
        Err(err) => {
            staging.discard();
            return Err(err);
        }
    };
    staging.commit()?;
    Ok(BuildReport {
        manifest,
        skipped_examples,
        elapsed: started.elapsed(),
    })
}

/// Refuses shard and replica counts outside what a build supports.
fn check_counts(shards: u32, replicas: u32) -> anyhow::Result<()> {
    if !(1..=MAX_SHARDS).contains(&shards) {
        bail!("--shards must be between 1 and {MAX_SHARDS}, not {shards}");
    }
    if !(1..=MAX_REPLICAS).contains(&replicas) {
        bail!("--replicas must be between 1 and {MAX_REPLICAS}, not {replicas}");
    }
    Ok(())
}

/// Refuses a corpus too small to give every shard a document.
fn check_enough_documents(documents: usize, shards: u32) -> anyhow::Result<()> {
    if documents < shards as usize {
        bail!(
            "{documents} documents cannot fill {shards} shards: use --shards {documents} or fewer"
        );
    }
    Ok(())
}

fn build_into(
    opts: &BuildOptions,
    topology: &Topology,
    dir: &Path,
) -> anyhow::Result<(Manifest, Vec<String>)> {
    let input = opts.input.path();
    let reader = opts.input.open(&opts.fields)?;
    let input_bytes = reader.total_bytes();
    let bar = progress_bar(opts.progress, input_bytes);
    let mut corpus = Documents {
        reader,
        input,
        skip_invalid: opts.skip_invalid,
        seen: HashSet::new(),
        skipped: 0,
        skipped_examples: Vec::new(),
    };
    // As many documents as there are shards are read before any shard is
    // created, so a corpus too small for the shard count is refused before
    // a writer (with its threads and memory) exists.
    let mut first = Vec::with_capacity(opts.shards as usize);
    while first.len() < opts.shards as usize {
        match corpus.next_document()? {
            Some(document) => first.push(document),
            None => break,
        }
    }
    if first.is_empty() {
        if corpus.skipped > 0 {
            bail!(
                "{}: no documents: every one of its {} lines with a document was invalid and \
                 skipped (--skip-invalid), e.g. {}",
                input.display(),
                corpus.skipped,
                corpus.skipped_examples.first().map_or("", String::as_str)
            );
        }
        bail!("{}: no documents", input.display());
    }
    check_enough_documents(first.len(), opts.shards)
        .with_context(|| input.display().to_string())?;

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = (cores / opts.shards as usize).clamp(1, 8);
    let memory = TOTAL_INDEXING_MEMORY / opts.shards as usize;
    let mut writers = (0..opts.shards)
        .map(|shard| {
            let shard_dir = dir.join(SHARDS_DIR).join(shard_dir_name(shard));
            ShardWriter::create(&shard_dir, threads, memory)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut documents = 0u64;
    let mut first = first.into_iter();
    loop {
        let document = match first.next() {
            Some(document) => document,
            None => match corpus.next_document()? {
                Some(document) => document,
                None => break,
            },
        };
        let shard = shard_of(&document.id, opts.shards) as usize;
        writers[shard].add(ShardDocument::from(document))?;
        documents += 1;
        if documents.is_multiple_of(512) {
            bar.set_position(corpus.reader.bytes_read());
            bar.set_message(format!("{documents} docs"));
        }
    }
    let Documents {
        reader,
        mut skipped,
        mut skipped_examples,
        ..
    } = corpus;
    let checksum = reader.checksum();
    let lines = reader.location();
    let (passed_over, examples) = reader.passed_over();
    drop(reader);
    skipped += passed_over;
    skipped_examples.extend(
        examples
            .into_iter()
            .take(10 - skipped_examples.len().min(10)),
    );
    bar.set_position(input_bytes);
    bar.set_message(format!("{documents} docs; committing and merging"));

    // Commit and merge each shard into one segment, shards in parallel.
    let shards = std::thread::scope(|scope| {
        let handles: Vec<_> = writers
            .into_iter()
            .map(|writer| scope.spawn(move || writer.finish()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("merge thread panicked"))
            .collect::<Result<Vec<_>, _>>()
    })?;

    bar.set_message("computing corpus-wide statistics");
    let corpus = write_scoring(&shards, &checksum)?;
    let entries = shards
        .iter()
        .zip(0..)
        .map(|(written, shard)| ShardEntry {
            shard,
            dir: format!("{SHARDS_DIR}/{}", shard_dir_name(shard)),
            num_docs: written.num_docs(),
        })
        .collect();
    bar.finish_and_clear();

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        created_unix: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        input: InputInfo {
            path: input.display().to_string(),
            checksum,
            bytes: input_bytes,
            lines,
            documents,
            skipped,
            fields: [
                opts.fields.id.clone(),
                opts.fields.title.clone(),
                opts.fields.body.clone(),
            ],
        },
        sharding: SHARDING_FUNCTION.into(),
        num_shards: opts.shards,
        shards: entries,
        corpus,
        schema: serde_json::to_value(schema::build().0)?,
    };
    write_synced(
        &dir.join(MANIFEST_FILE),
        (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes(),
    )?;
    let mut topology = topology.clone();
    topology.root.one_phase = prefers_one_phase(&manifest.corpus);
    write_synced(&dir.join(TOPOLOGY_FILE), topology.to_toml().as_bytes())?;
    Ok((manifest, skipped_examples))
}

/// Mean body length, in tokens, below which a generated topology searches
/// in one phase. Measured (BENCHMARKS.md, "Two-phase search"): on the
/// bundled summaries (79 tokens a document) one phase answered about a
/// third more queries per second than two; on linux-doc (649 tokens) two
/// phases answered 12% more at k = 10 and 72% more at k = 50. Building a
/// snippet costs in proportion to the document, the fetch round trip does
/// not; the threshold sits between the two measured corpora.
pub const ONE_PHASE_MAX_MEAN_BODY_TOKENS: u64 = 256;

/// Whether a corpus of these totals is better served in one phase: its
/// documents are so short that snippets for every leaf's top-k cost less
/// than the fetch phase's extra round trip through the tree.
pub fn prefers_one_phase(corpus: &searchtree_leaf::stats::CorpusTotals) -> bool {
    let body = corpus.num_tokens.get(schema::BODY).copied().unwrap_or(0);
    body < ONE_PHASE_MAX_MEAN_BODY_TOKENS.saturating_mul(corpus.num_docs.max(1))
}

/// The corpus's valid documents in order: ids checked to be unique, invalid
/// lines (or files) refused or, with `skip_invalid`, counted and passed over.
struct Documents<'a> {
    reader: Box<dyn Source>,
    input: &'a Path,
    skip_invalid: bool,
    seen: HashSet<String>,
    skipped: u64,
    skipped_examples: Vec<String>,
}

impl Documents<'_> {
    /// The next valid document, `None` at the end of the corpus.
    fn next_document(&mut self) -> anyhow::Result<Option<Document>> {
        while let Some(item) = self.reader.next() {
            match item? {
                Ok(document) => {
                    if let Some(dup) = self.seen.replace(document.id.clone()) {
                        bail!(
                            "{}:{}: duplicate id {dup:?}: ids must be unique in a corpus",
                            self.input.display(),
                            self.reader.location()
                        );
                    }
                    return Ok(Some(document));
                }
                Err(bad) if self.skip_invalid => {
                    self.skipped += 1;
                    if self.skipped_examples.len() < 10 {
                        self.skipped_examples.push(bad.to_string());
                    }
                }
                Err(bad) => {
                    let what = if bad.line.is_some() { "lines" } else { "files" };
                    bail!("{bad} (use --skip-invalid to skip such {what})")
                }
            }
        }
        Ok(None)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

fn progress_bar(enabled: bool, len: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    crate::output::byte_progress("indexing", len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh scratch directory for one test, removed when dropped.
    pub(super) fn scratch() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    pub(super) fn corpus(dir: &Path, documents: usize) -> PathBuf {
        let path = dir.join("c.jsonl");
        let lines: String = (0..documents)
            .map(|i| format!("{{\"id\":\"d{i}\",\"body\":\"word number {i}\"}}\n"))
            .collect();
        std::fs::write(&path, lines).unwrap();
        path
    }

    #[test]
    fn short_documents_get_one_phase_long_ones_two() {
        let totals = |docs: u64, body: u64| searchtree_leaf::stats::CorpusTotals {
            num_docs: docs,
            num_tokens: [(schema::BODY.to_string(), body)].into(),
        };
        assert!(
            prefers_one_phase(&totals(10_033, 791_112)),
            "bundled: 79 a document"
        );
        assert!(
            !prefers_one_phase(&totals(8_847, 5_740_000)),
            "linux-doc: 649"
        );
        assert!(prefers_one_phase(&totals(0, 0)));

        let dir = scratch();
        let input = corpus(dir.path(), 8);
        let out = dir.path().join("out");
        build(&options(&input, &out, 2)).unwrap();
        let topology = Topology::load(&out.join(TOPOLOGY_FILE)).unwrap();
        assert!(topology.root.one_phase, "three-word documents");
    }

    pub(super) fn options(input: &Path, out: &Path, shards: u32) -> BuildOptions {
        BuildOptions {
            input: Input::Lines(input.to_path_buf()),
            shards,
            out: out.to_path_buf(),
            parents: 0,
            replicas: 1,
            fields: FieldNames::default(),
            skip_invalid: false,
            progress: false,
        }
    }

    pub(super) fn message(result: anyhow::Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", result.unwrap_err())
    }

    #[test]
    fn a_file_of_only_invalid_lines_says_they_were_skipped() {
        let scratch = scratch();
        let input = scratch.path().join("junk.jsonl");
        std::fs::write(&input, "not json\n{\"id\": 3}\n").unwrap();
        let mut opts = options(&input, &scratch.path().join("out"), 1);
        opts.skip_invalid = true;
        let err = message(build(&opts));
        assert!(
            err.contains("every one of its 2 lines") && err.contains("junk.jsonl:1"),
            "{err}"
        );
    }

    #[test]
    fn shard_and_replica_counts_are_bounded() {
        assert!(check_counts(1, 1).is_ok());
        assert!(check_counts(MAX_SHARDS, MAX_REPLICAS).is_ok());
        assert!(message(check_counts(0, 1)).contains("between 1 and 256, not 0"));
        assert!(message(check_counts(100_000, 1)).contains("not 100000"));
        assert!(message(check_counts(4, 0)).contains("--replicas"));
        assert!(message(check_counts(4, MAX_REPLICAS + 1)).contains("--replicas"));
        assert!(check_enough_documents(5, 5).is_ok());
        assert_eq!(
            message(check_enough_documents(5, 6)),
            "5 documents cannot fill 6 shards: use --shards 5 or fewer"
        );
    }

    #[test]
    fn builds_into_an_empty_directory_and_over_a_previous_build_only() {
        let scratch = scratch();
        let dir = scratch.path();
        let input = corpus(dir, 3);
        let out = dir.join("index");
        std::fs::create_dir(&out).unwrap();
        let report = build(&options(&input, &out, 2)).unwrap();
        assert_eq!(report.manifest.input.documents, 3);
        let report = build(&options(&input, &out, 3)).unwrap();
        assert_eq!(Manifest::read(&out).unwrap().num_shards, 3);
        assert_eq!(report.manifest.shards.len(), 3);

        // More shards than documents: refused, and the good build stays.
        let err = message(build(&options(&input, &out, 4)));
        assert!(err.contains("3 documents cannot fill 4 shards"), "{err}");
        assert_eq!(Manifest::read(&out).unwrap().num_shards, 3);

        // A corpus inside the output is never replaced.
        let inside = corpus(&out, 3);
        let err = message(build(&options(&inside, &out, 2)));
        assert!(err.contains("lies inside --out"), "{err}");
        assert!(inside.exists());
        let hidden: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(hidden.is_empty(), "left behind: {hidden:?}");
    }
}
