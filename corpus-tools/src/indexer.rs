//! `searchtree build`: corpus in, one tantivy index per shard out, each with
//! the corpus-wide statistics it scores with, plus a manifest and a topology.
//!
//! The output is assembled in a hidden staging directory beside the target
//! and renamed into place only when complete, so a failed or interrupted
//! build never leaves a half-built index where a good one was. The target is
//! replaced only when it is absent, an empty directory, or a previous build
//! of this tool (recognised by its manifest): a build never deletes or moves
//! anything else, and never its own input.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use searchtree_leaf::schema;
use searchtree_leaf::shard::{ShardDocument, ShardWriter, write_scoring};

use crate::corpus::{CorpusReader, Document, FieldNames, Source};
use crate::dir_corpus::DirReader;
use crate::manifest::{
    InputInfo, MANIFEST_FILE, MANIFEST_FORMAT, Manifest, ShardEntry, shard_dir_name,
};
use crate::sharding::{SHARDING_FUNCTION, shard_of};
use crate::topology::Topology;

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
    write_synced(&dir.join(TOPOLOGY_FILE), topology.to_toml().as_bytes())?;
    Ok((manifest, skipped_examples))
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

/// What the output path holds, which decides whether a build may take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Nothing: the build is renamed into place.
    Absent,
    /// An empty directory: the build is renamed over it.
    Empty,
    /// A previous build of this tool and nothing else: moved aside, and
    /// removed once the new build is in place.
    PreviousBuild,
}

/// Says what `out` holds, refusing anything a build must not replace: a
/// file, a symbolic link, a directory with a foreign (or no) manifest, and
/// a previous build that also holds files a build does not write (a rebuild
/// would delete them).
fn inspect_target(out: &Path) -> anyhow::Result<Target> {
    let meta = match std::fs::symlink_metadata(out) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Target::Absent),
        Err(e) => return Err(e).with_context(|| format!("--out {}", out.display())),
    };
    let refuse = |why: String| {
        anyhow!(
            "--out {}: {why}; refusing to replace it (a build replaces only an empty \
             directory or a previous build)",
            out.display()
        )
    };
    if meta.file_type().is_symlink() {
        return Err(refuse("is a symbolic link; name a directory".into()));
    }
    if !meta.is_dir() {
        return Err(refuse("is an existing file, not a directory".into()));
    }
    let entries = dir_entries(out)?;
    let Some(first) = entries.first() else {
        return Ok(Target::Empty);
    };
    if !entries.iter().any(|name| name == MANIFEST_FILE) {
        return Err(refuse(format!(
            "is a directory but not a previous build: it holds {} entries (e.g. {first:?}) \
             and no {MANIFEST_FILE}",
            entries.len()
        )));
    }
    let manifest = Manifest::read(out)
        .map_err(|e| refuse(format!("is not a previous build of this tool: {e:#}")))?;
    manifest.check_ours().map_err(|why| {
        refuse(format!(
            "is not a previous build of this tool: its {MANIFEST_FILE} {why}"
        ))
    })?;
    let foreign = |name: &str| {
        refuse(format!(
            "is a previous build but also holds {name:?}, which a build does not write \
             and a rebuild would delete; move it out first"
        ))
    };
    for name in &entries {
        if name != MANIFEST_FILE && name != TOPOLOGY_FILE && name != SHARDS_DIR {
            return Err(foreign(name));
        }
    }
    let shards = out.join(SHARDS_DIR);
    if shards.exists() {
        if !is_real_dir(&shards) {
            return Err(foreign(SHARDS_DIR));
        }
        let expected: HashSet<String> = manifest
            .shards
            .iter()
            .map(|e| shard_dir_name(e.shard))
            .collect();
        for name in dir_entries(&shards)? {
            if !expected.contains(&name) || !is_real_dir(&shards.join(&name)) {
                return Err(foreign(&format!("{SHARDS_DIR}/{name}")));
            }
        }
    }
    Ok(Target::PreviousBuild)
}

/// The names in directory `dir`, sorted.
fn dir_entries(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<Vec<String>>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    names.sort();
    Ok(names)
}

/// Whether `path` is a directory itself, not a symbolic link to one.
fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Refuses an input inside the output, which a rebuild would delete, and,
/// for a directory corpus, an output inside the input, which the build would
/// read back as documents.
fn check_paths(input: &Input, out: &Path) -> anyhow::Result<()> {
    let (input_path, out_path) = (resolved(input.path())?, resolved(out)?);
    if input_path == out_path {
        bail!(
            "{} {} and --out {} are the same; choose an --out of its own",
            input.flag(),
            input.path().display(),
            out.display()
        );
    }
    if input_path.starts_with(&out_path) {
        bail!(
            "{} {} lies inside --out {}, which a build replaces; choose an --out outside it",
            input.flag(),
            input.path().display(),
            out.display()
        );
    }
    if matches!(input, Input::Dir(_)) && out_path.starts_with(&input_path) {
        bail!(
            "--out {} lies inside --input-dir {}, so the build would read its own output; \
             choose an --out outside it",
            out.display(),
            input.path().display()
        );
    }
    Ok(())
}

/// `path` made absolute, with symbolic links resolved in the part of it
/// that exists, so two spellings of one place compare equal.
fn resolved(path: &Path) -> anyhow::Result<PathBuf> {
    let absolute =
        std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(mut real) = existing.canonicalize() {
            real.extend(rest.iter().rev());
            return Ok(real);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return Ok(absolute),
        }
    }
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
        if is_real_dir(&staging) {
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

    /// Moves the finished build into place, or discards it if the target
    /// may not be replaced after all.
    fn commit(self) -> anyhow::Result<()> {
        let result = self.replace_target();
        if result.is_err() {
            self.discard();
        }
        result
    }

    /// The target is looked at again, as it may have changed while the
    /// build ran. A previous build is moved aside first and removed only
    /// after the new one is in place.
    fn replace_target(&self) -> anyhow::Result<()> {
        let into_target = |e: std::io::Error| {
            anyhow::Error::new(e).context(format!("moving build into {}", self.target.display()))
        };
        if inspect_target(&self.target)? != Target::PreviousBuild {
            // Absent or an empty directory: rename(2) replaces either, and
            // fails if anything has appeared there meanwhile.
            return std::fs::rename(&self.staging, &self.target).map_err(into_target);
        }
        let old = self.staging.with_file_name(format!(
            ".{}.old-{}",
            file_name(&self.target),
            std::process::id()
        ));
        std::fs::rename(&self.target, &old)
            .with_context(|| format!("moving aside {}", self.target.display()))?;
        if let Err(e) = std::fs::rename(&self.staging, &self.target) {
            let _ = std::fs::rename(&old, &self.target);
            return Err(into_target(e));
        }
        let _ = std::fs::remove_dir_all(&old);
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
        let ours = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
        let alive = Path::new("/proc").join(pid).exists();
        if ours && !alive && is_real_dir(&entry.path()) {
            tracing::info!(dir = %entry.path().display(), "removing abandoned partial build");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh scratch directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("st-indexer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn corpus(dir: &Path, documents: usize) -> PathBuf {
        let path = dir.join("c.jsonl");
        let lines: String = (0..documents)
            .map(|i| format!("{{\"id\":\"d{i}\",\"body\":\"word number {i}\"}}\n"))
            .collect();
        std::fs::write(&path, lines).unwrap();
        path
    }

    fn options(input: &Path, out: &Path, shards: u32) -> BuildOptions {
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

    fn message(result: anyhow::Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", result.unwrap_err())
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
    fn only_nothing_an_empty_directory_or_a_previous_build_may_be_replaced() {
        let dir = scratch("target");
        assert_eq!(inspect_target(&dir.join("new")).unwrap(), Target::Absent);
        std::fs::create_dir(dir.join("empty")).unwrap();
        assert_eq!(inspect_target(&dir.join("empty")).unwrap(), Target::Empty);

        std::fs::write(dir.join("file"), "keep me").unwrap();
        assert!(message(inspect_target(&dir.join("file"))).contains("is an existing file"));
        std::os::unix::fs::symlink(dir.join("empty"), dir.join("link")).unwrap();
        assert!(message(inspect_target(&dir.join("link"))).contains("symbolic link"));

        let foreign = dir.join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("notes.txt"), "keep me").unwrap();
        let err = message(inspect_target(&foreign));
        assert!(
            err.contains("not a previous build: it holds 1 entries (e.g. \"notes.txt\")"),
            "{err}"
        );
        std::fs::write(foreign.join(MANIFEST_FILE), "{}").unwrap();
        let err = message(inspect_target(&foreign));
        assert!(
            err.contains("is not a previous build of this tool"),
            "{err}"
        );

        let input = corpus(&dir, 3);
        let build_dir = dir.join("index");
        build(&options(&input, &build_dir, 2)).unwrap();
        assert_eq!(inspect_target(&build_dir).unwrap(), Target::PreviousBuild);
        std::fs::write(build_dir.join("mine.toml"), "keep me").unwrap();
        let err = message(inspect_target(&build_dir));
        assert!(err.contains("also holds \"mine.toml\""), "{err}");
        std::fs::remove_file(build_dir.join("mine.toml")).unwrap();
        std::fs::create_dir(build_dir.join("shards/shard-007")).unwrap();
        let err = message(inspect_target(&build_dir));
        assert!(err.contains("also holds \"shards/shard-007\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn input_and_output_may_not_contain_each_other() {
        let dir = scratch("paths");
        let input = corpus(&dir, 1);
        // Beside each other is fine, even in a directory not yet made.
        assert!(check_paths(&Input::Lines(input.clone()), &dir.join("a/b/index")).is_ok());
        let err = message(check_paths(&Input::Lines(input.clone()), &dir));
        assert!(err.contains("c.jsonl lies inside --out"), "{err}");
        // Another spelling of the same place is seen through.
        let dotted = dir.join("sub/..");
        std::fs::create_dir(dir.join("sub")).unwrap();
        assert!(check_paths(&Input::Lines(input.clone()), &dotted).is_err());
        let err = message(check_paths(&Input::Dir(dir.join("sub")), &dir.join("sub")));
        assert!(err.contains("are the same"), "{err}");
        let err = message(check_paths(&Input::Dir(dir.clone()), &dir.join("x/index")));
        assert!(err.contains("lies inside --input-dir"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn builds_into_an_empty_directory_and_over_a_previous_build_only() {
        let dir = scratch("build");
        let input = corpus(&dir, 3);
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
        let hidden: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(hidden.is_empty(), "left behind: {hidden:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
