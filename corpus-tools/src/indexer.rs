//! `searchtree build`: corpus in, one tantivy index per shard out, each with
//! the corpus-wide statistics it scores with, plus a manifest and a topology.
//!
//! The output is assembled in a hidden staging directory beside the target
//! and renamed into place only when complete, so a failed or interrupted
//! build never leaves a half-built index where a good one was.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use searchtree_leaf::schema::{self, Fields};
use searchtree_leaf::shard::{ShardMeta, write_scoring_files};
use searchtree_leaf::stats;
use tantivy::indexer::NoMergePolicy;
use tantivy::{Index, IndexWriter, TantivyDocument, doc};

use crate::corpus::{CorpusReader, FieldNames, Source};
use crate::dir_corpus::DirReader;
use crate::manifest::{InputInfo, MANIFEST_FILE, Manifest, ShardEntry, shard_dir_name};
use crate::sharding::{SHARDING_FUNCTION, shard_of};
use crate::topology::Topology;

/// Name of the topology file a build writes.
pub const TOPOLOGY_FILE: &str = "topology.toml";
/// Memory tantivy may use for indexing, over all shards' writers together.
const TOTAL_INDEXING_MEMORY: usize = 512 << 20;
/// tantivy's floor per indexing thread.
const MIN_MEMORY_PER_THREAD: usize = 16 << 20;

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
    /// Output directory (replaced when the build succeeds).
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
pub fn build(opts: &BuildOptions) -> anyhow::Result<BuildReport> {
    let started = Instant::now();
    if opts.shards == 0 {
        bail!("--shards must be at least 1");
    }
    let topology = Topology::generate(opts.shards, opts.parents, opts.replicas)?;
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

fn build_into(
    opts: &BuildOptions,
    topology: &Topology,
    dir: &Path,
) -> anyhow::Result<(Manifest, Vec<String>)> {
    let (schema, fields) = schema::build();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = (cores / opts.shards as usize).clamp(1, 8);
    let memory = (TOTAL_INDEXING_MEMORY / opts.shards as usize / threads)
        .max(MIN_MEMORY_PER_THREAD)
        * threads;
    let mut writers = Vec::with_capacity(opts.shards as usize);
    let mut indexes = Vec::with_capacity(opts.shards as usize);
    for shard in 0..opts.shards {
        let shard_dir = dir.join("shards").join(shard_dir_name(shard));
        std::fs::create_dir_all(&shard_dir)
            .with_context(|| format!("creating {}", shard_dir.display()))?;
        let index = Index::create_in_dir(&shard_dir, schema.clone())?;
        let writer: IndexWriter = index.writer_with_num_threads(threads, memory)?;
        writer.set_merge_policy(Box::new(NoMergePolicy));
        writers.push(writer);
        indexes.push(index);
    }

    let input = opts.input.path();
    let mut reader = opts.input.open(&opts.fields)?;
    let input_bytes = reader.total_bytes();
    let bar = progress_bar(opts.progress, input_bytes);
    let mut seen: HashSet<String> = HashSet::new();
    let mut shard_docs = vec![0u64; opts.shards as usize];
    let (mut documents, mut skipped) = (0u64, 0u64);
    let mut skipped_examples = Vec::new();
    while let Some(item) = reader.next() {
        match item? {
            Ok(document) => {
                if let Some(dup) = seen.replace(document.id.clone()) {
                    bail!(
                        "{}:{}: duplicate id {dup:?}: ids must be unique in a corpus",
                        input.display(),
                        reader.location()
                    );
                }
                let shard = shard_of(&document.id, opts.shards) as usize;
                writers[shard].add_document(to_tantivy(&fields, document))?;
                shard_docs[shard] += 1;
                documents += 1;
            }
            Err(line_error) if opts.skip_invalid => {
                skipped += 1;
                if skipped_examples.len() < 10 {
                    skipped_examples.push(line_error.to_string());
                }
            }
            Err(line_error) => bail!("{line_error} (use --skip-invalid to skip such lines)"),
        }
        if documents % 512 == 0 {
            bar.set_position(reader.bytes_read());
            bar.set_message(format!("{documents} docs"));
        }
    }
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
    if documents == 0 {
        bail!("{}: no documents", input.display());
    }
    bar.set_position(input_bytes);
    bar.set_message(format!("{documents} docs; committing and merging"));

    // Commit and merge each shard into one segment, shards in parallel.
    std::thread::scope(|scope| {
        let handles: Vec<_> = writers
            .into_iter()
            .zip(&indexes)
            .map(|(writer, index)| scope.spawn(move || finish_shard(writer, index)))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("merge thread panicked"))
    })?;

    bar.set_message("computing corpus-wide statistics");
    let searchers = indexes
        .iter()
        .map(|index| Ok(index.reader()?.searcher()))
        .collect::<tantivy::Result<Vec<_>>>()?;
    let (corpus, doc_freqs) = stats::compute(&searchers)?;
    let mut entries = Vec::new();
    for (shard, table) in doc_freqs.iter().enumerate() {
        let shard_dir = dir.join("shards").join(shard_dir_name(shard as u32));
        let meta = ShardMeta {
            shard: shard as u32,
            num_shards: opts.shards,
            num_docs: shard_docs[shard],
            corpus: corpus.clone(),
            input_checksum: checksum.clone(),
        };
        write_scoring_files(&shard_dir, &meta, table)?;
        entries.push(ShardEntry {
            shard: shard as u32,
            dir: format!("shards/{}", shard_dir_name(shard as u32)),
            num_docs: shard_docs[shard],
        });
    }
    bar.finish_and_clear();

    let manifest = Manifest {
        format: 1,
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
        schema: serde_json::to_value(&schema)?,
    };
    write_synced(
        &dir.join(MANIFEST_FILE),
        (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes(),
    )?;
    write_synced(&dir.join(TOPOLOGY_FILE), topology.to_toml().as_bytes())?;
    Ok((manifest, skipped_examples))
}

fn to_tantivy(fields: &Fields, d: crate::corpus::Document) -> TantivyDocument {
    doc!(fields.id => d.id, fields.title => d.title, fields.body => d.body)
}

/// Commits a shard's writer and merges its segments into one.
fn finish_shard(mut writer: IndexWriter, index: &Index) -> anyhow::Result<()> {
    writer.commit()?;
    let segments = index.searchable_segment_ids()?;
    if segments.len() > 1 {
        writer.merge(&segments).wait()?;
    }
    writer.garbage_collect_files().wait()?;
    writer.wait_merging_threads()?;
    Ok(())
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
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} indexing [{bar:30}] {bytes}/{total_bytes} ({eta}) {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The hidden directory a build writes into before it replaces its target.
struct Staging {
    staging: PathBuf,
    target: PathBuf,
}

impl Staging {
    fn new(target: &Path) -> anyhow::Result<Staging> {
        let name = target
            .file_name()
            .with_context(|| format!("{} has no directory name", target.display()))?
            .to_string_lossy()
            .into_owned();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        remove_abandoned(&parent, &name);
        let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
        Ok(Staging {
            staging,
            target: target.to_path_buf(),
        })
    }

    fn path(&self) -> &Path {
        &self.staging
    }

    fn discard(self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }

    /// Moves the finished build into place. The old output, if any, is moved
    /// aside first and removed only after the new one is in place.
    fn commit(self) -> anyhow::Result<()> {
        let old = self.staging.with_file_name(format!(
            ".{}.old-{}",
            file_name(&self.target),
            std::process::id()
        ));
        let had_old = self.target.exists();
        if had_old {
            std::fs::rename(&self.target, &old)
                .with_context(|| format!("moving aside {}", self.target.display()))?;
        }
        if let Err(e) = std::fs::rename(&self.staging, &self.target) {
            if had_old {
                let _ = std::fs::rename(&old, &self.target);
            }
            return Err(e).with_context(|| format!("moving build into {}", self.target.display()));
        }
        if had_old {
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(())
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Removes staging directories left by builds that were killed.
fn remove_abandoned(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!(".{name}.partial-");
    for entry in entries.flatten() {
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = entry_name.strip_prefix(&prefix) else {
            continue;
        };
        let alive = Path::new("/proc").join(pid).exists();
        if !alive {
            tracing::info!(dir = %entry.path().display(), "removing abandoned partial build");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
