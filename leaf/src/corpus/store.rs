//! The version store: a leaf's data directory (see [`super`]) and the
//! versions it holds open. Every method blocks (file system, tantivy): the
//! service calls them on the blocking pool, one at a time.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use searchtree_proto::pb::{DocOp, LeafVersions, LoadAck, LoadBatch};
use serde::{Deserialize, Serialize};

use super::disk::DiskFloor;
use super::held::HeldVersions;
use super::local::{LocalTotals, SegmentTotals, read_segment_totals};
use super::staging::{Placement, Staging};
use super::{CorpusError, fsio};
use crate::searcher::{ShardSearcher, VERSION_MISSING};
use crate::shard::{Shard, ShardMeta, read_meta};

const CURRENT_FILE: &str = "CURRENT";
const VERSIONS_DIR: &str = "versions";
const STAGING_DIR: &str = "staging";
const TMP_SUFFIX: &str = ".tmp";

/// How the leaf's searchers are set up, for every version it opens.
#[derive(Debug, Clone, Default)]
pub struct SearcherSettings {
    /// The name (address) reported as the source of answers.
    pub name: String,
    /// Shards with fewer documents are scored exhaustively.
    pub min_pruned_docs: u64,
}

impl SearcherSettings {
    /// Opens the shard directory `dir` as a searcher.
    pub fn open(&self, dir: &Path) -> Result<ShardSearcher, CorpusError> {
        let mut searcher = ShardSearcher::new(Shard::open(dir)?);
        searcher.set_name(self.name.clone());
        searcher.set_min_pruned_docs(self.min_pruned_docs);
        Ok(searcher)
    }
}

/// Opens a version the leaf starts with, once its files have passed their
/// checksums: a damaged file would otherwise serve searches that look
/// normal while every call that reads the whole shard (versions, loads,
/// publishes) panicked inside tantivy, and the errors would point at the
/// network.
pub(super) fn open_intact(
    settings: &SearcherSettings,
    dir: &Path,
) -> Result<ShardSearcher, CorpusError> {
    let searcher = settings.open(dir)?;
    crate::shard::check::intact(&searcher.shard().index).map_err(|damage| {
        CorpusError::Precondition(format!(
            "{}: {damage}; the shard is damaged: build it again, or copy it again from where \
             it was built",
            dir.display()
        ))
    })?;
    Ok(searcher)
}

/// The most a new version (prepared or copied) may be above the highest
/// a leaf holds. Versions go up one a publish, and a replica behind copies
/// its siblings' version, so no sound step comes near it; a version near
/// `u64::MAX`, taken from a hostile or broken caller, would leave no
/// version to follow it.
pub const MAX_VERSION_STEP: u64 = 1_000_000;

/// The content of `CURRENT`.
#[derive(Debug, Serialize, Deserialize)]
struct Current {
    version: u64,
    /// The version it replaced, kept for queries still pinned to it (absent
    /// from files written before it was recorded: then `version - 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<u64>,
}

/// A version built by Prepare and not yet installed.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its number.
    pub version: u64,
    /// Its directory (`versions/vN.tmp`).
    pub dir: PathBuf,
    /// Its exact local totals.
    pub local: LocalTotals,
    /// Each of its segments' own totals, where known.
    pub segment_totals: SegmentTotals,
    /// Stored documents read to carry the totals forward (none when every
    /// segment entered as the staging area indexed it or left whole).
    pub docs_read: u64,
    /// The build's input checksum, when it is a copy of a build's shard;
    /// `None` when it was built from the staging area.
    pub from_build: Option<String>,
    /// Staged operations it includes (or, from a build, discards).
    pub staged_ops: u64,
}

/// A leaf's versions on disk and in memory, and its staging area.
pub struct CorpusStore {
    pub(super) data: PathBuf,
    pub(super) build_dir: PathBuf,
    pub(super) build: ShardMeta,
    pub(super) settings: SearcherSettings,
    pub(super) held: Arc<HeldVersions>,
    /// The directory of each held version.
    pub(super) dirs: BTreeMap<u64, PathBuf>,
    locals: HashMap<u64, LocalTotals>,
    pub(super) staging: Staging,
    pub(super) candidate: Option<Candidate>,
    /// The free space every writing step leaves ([`DiskFloor`]).
    pub(super) disk: DiskFloor,
    /// Held locked while the store is open ([`super::owner`]).
    _lock: std::fs::File,
}

impl CorpusStore {
    /// Opens the store in `data` (created if absent) over the build in
    /// `build_dir`: the current version (CURRENT's, else the build) and
    /// every installed version from the one before it on, all searchable.
    /// Candidates left half-written by a crash are removed. A directory
    /// another leaf holds, or one of another shard or build, is refused first.
    pub fn open(
        build_dir: &Path,
        data: &Path,
        settings: SearcherSettings,
    ) -> Result<CorpusStore, CorpusError> {
        let build = read_meta(build_dir)?;
        let lock = super::owner::claim(data, build_dir, &build)?;
        let versions = data.join(VERSIONS_DIR);
        std::fs::create_dir_all(&versions)?;
        let (current, previous) = match std::fs::read(data.join(CURRENT_FILE)) {
            Ok(bytes) => {
                let file = serde_json::from_slice::<Current>(&bytes)?;
                let previous = file
                    .previous
                    .unwrap_or_else(|| file.version.saturating_sub(1));
                (file.version, previous)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (build.version, build.version),
            Err(e) => return Err(e.into()),
        };
        let mut on_disk = BTreeMap::new();
        if current == build.version {
            on_disk.insert(build.version, build_dir.to_path_buf());
        }
        for entry in std::fs::read_dir(&versions)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(TMP_SUFFIX) {
                fsio::remove_dir_if_exists(&entry.path())?;
            } else if let Some(version) = parse_version_dir(&name) {
                on_disk.insert(version, entry.path());
            }
        }
        if !on_disk.contains_key(&current) && current != build.version {
            return Err(CorpusError::Precondition(format!(
                "{} names version {current}, but {} is missing",
                data.join(CURRENT_FILE).display(),
                version_dir(data, current).display()
            )));
        }
        // The build is also a version (the first), kept as the one replaced.
        if previous == build.version && current != build.version {
            on_disk
                .entry(build.version)
                .or_insert(build_dir.to_path_buf());
        }
        let current_dir = on_disk
            .get(&current)
            .cloned()
            .unwrap_or_else(|| build_dir.to_path_buf());
        let held = Arc::new(HeldVersions::new(open_intact(&settings, &current_dir)?));
        let mut dirs = BTreeMap::from([(current, current_dir)]);
        for (version, dir) in on_disk {
            if version == current {
                continue;
            }
            // Older versions but the one replaced: released before the
            // stop, or installed by a publish that never activated them.
            if version < current && version != previous {
                if dir != build_dir {
                    fsio::remove_dir_if_exists(&dir)?;
                }
                continue;
            }
            // Only the current version must open for the leaf to serve; a
            // damaged other one (the one replaced, or one installed and
            // never activated) is dropped, and copied again if it is ever
            // needed.
            match open_intact(&settings, &dir) {
                Ok(searcher) => {
                    held.insert(searcher);
                    dirs.insert(version, dir);
                }
                Err(damage) => {
                    tracing::warn!(version, %damage, "dropping a version that does not open");
                    if dir != build_dir {
                        fsio::remove_dir_if_exists(&dir)?;
                    }
                }
            }
        }
        let staging = Staging::open(&data.join(STAGING_DIR), current)?;
        Ok(CorpusStore {
            data: data.to_path_buf(),
            build_dir: build_dir.to_path_buf(),
            build,
            settings,
            held,
            dirs,
            locals: HashMap::new(),
            staging,
            candidate: None,
            disk: DiskFloor::default(),
            _lock: lock,
        })
    }

    /// The same store, keeping `floor` free on its file system instead of
    /// the default ([`super::disk::DEFAULT_MIN_FREE`]).
    pub fn with_disk_floor(mut self, floor: DiskFloor) -> Self {
        self.disk = floor;
        self
    }

    /// The free space every writing step leaves.
    pub fn disk_floor(&self) -> DiskFloor {
        self.disk
    }

    /// Refuses `step` if writing about `needed` bytes into the data
    /// directory would leave less than the floor free.
    pub(super) fn check_disk(&self, needed: u64, step: &str) -> Result<(), CorpusError> {
        self.disk.check(&self.data, needed, step)
    }

    /// The versions searches pick from.
    pub fn held(&self) -> Arc<HeldVersions> {
        Arc::clone(&self.held)
    }

    /// This shard's place in the corpus.
    pub fn placement(&self) -> Placement {
        Placement {
            shard: self.build.shard,
            num_shards: self.build.num_shards,
        }
    }

    /// The staging area.
    pub fn staging(&self) -> &Staging {
        &self.staging
    }

    /// The staging area, to apply loaded operations to.
    pub fn staging_mut(&mut self) -> &mut Staging {
        &mut self.staging
    }

    /// Applies a loaded batch to the staging area, counted against the
    /// current version; answers once it is committed durably.
    pub fn load(&mut self, batch: &LoadBatch) -> Result<LoadAck, CorpusError> {
        let mut acks = self.load_group(std::slice::from_ref(batch))?;
        Ok(acks.pop().expect("one ack per batch"))
    }

    /// Stages `batches` in order with one durable commit for all of them
    /// (see [`Staging::apply_group`]), one acknowledgement each.
    pub fn load_group(&mut self, batches: &[LoadBatch]) -> Result<Vec<LoadAck>, CorpusError> {
        if let Some(version) = self.publishing() {
            // Activating it empties the staging area: a batch staged now
            // would be acknowledged and then lost (another root's publish
            // running beside this load, or one that stopped half-way).
            return Err(CorpusError::Precondition(format!(
                "version {version} is being published here (prepared or installed, not yet \
                 activated), and a batch staged now would be left out of it: rerun the load \
                 once that publish has ended; if it failed, run `searchtree publish` again"
            )));
        }
        // The log takes each operation once and the staged index about as
        // much again.
        let bytes: u64 = batches.iter().map(|b| b.encoded_len() as u64).sum();
        self.check_disk(bytes.saturating_mul(2), "a load's batch")?;
        let current = self.held.current();
        let published = self
            .held
            .get(current)
            .map_err(|e| CorpusError::Precondition(e.to_string()))?;
        let placement = self.placement();
        let searcher = published.shard().reader.searcher();
        let ops: Vec<&[DocOp]> = batches.iter().map(|b| b.ops.as_slice()).collect();
        let mut acks = self
            .staging
            .apply_group(&ops, placement, &searcher, current)?;
        for (ack, batch) in acks.iter_mut().zip(batches) {
            ack.seq = batch.seq;
        }
        Ok(acks)
    }

    /// The version a publish has prepared or installed here and not yet
    /// activated, if any.
    pub fn publishing(&self) -> Option<u64> {
        let current = self.held.current();
        self.candidate
            .as_ref()
            .map(|c| c.version)
            .or_else(|| self.dirs.keys().copied().find(|&v| v > current))
    }

    /// The directory of held version `version`.
    pub fn dir_of(&self, version: u64) -> Result<&Path, CorpusError> {
        self.dirs
            .get(&version)
            .map(PathBuf::as_path)
            .ok_or_else(|| self.missing(version))
    }

    /// The refusal of a version this leaf does not hold.
    pub(super) fn missing(&self, version: u64) -> CorpusError {
        CorpusError::Precondition(format!(
            "{VERSION_MISSING} shard {} holds versions {:?}, not {version}",
            self.build.shard,
            self.held.numbers()
        ))
    }

    /// The exact local totals of held version `version`: its `local.json`,
    /// or for a build (which has none) read from its segment once.
    pub fn local(&mut self, version: u64) -> Result<LocalTotals, CorpusError> {
        if let Some(local) = self.locals.get(&version) {
            return Ok(local.clone());
        }
        let dir = self.dir_of(version)?.to_path_buf();
        let local = match LocalTotals::read(&dir)? {
            Some(local) => local,
            None => {
                let searcher = self
                    .held
                    .get(version)
                    .map_err(|e| CorpusError::Precondition(e.to_string()))?;
                let shard = searcher.shard();
                LocalTotals::of_undeleted(&shard.reader.searcher(), shard.fields)?
            }
        };
        self.locals.insert(version, local.clone());
        Ok(local)
    }

    /// Each segment's own totals in held version `version`: its
    /// [`super::local::SEGMENT_TOTALS_FILE`], or for a version of one
    /// segment without it (a build) its local totals; none otherwise.
    pub fn segment_totals(&mut self, version: u64) -> Result<SegmentTotals, CorpusError> {
        let dir = self.dir_of(version)?.to_path_buf();
        if let Some(totals) = read_segment_totals(&dir)? {
            return Ok(totals);
        }
        let searcher = self
            .held
            .get(version)
            .map_err(|e| CorpusError::Precondition(e.to_string()))?;
        let ids = searcher.shard().index.searchable_segment_ids()?;
        let mut totals = SegmentTotals::new();
        if let [id] = ids.as_slice() {
            totals.insert(id.uuid_string(), self.local(version)?);
        }
        Ok(totals)
    }

    /// Makes held version `version` current: durably (CURRENT), then for
    /// searches; empties the staging area when moving forward (the version
    /// includes or supersedes it) and releases versions older than the one
    /// before.
    /// Returns the version it replaced.
    pub fn activate(&mut self, version: u64) -> Result<u64, CorpusError> {
        let previous = self.held.current();
        if version == previous {
            return Ok(previous);
        }
        if !self.dirs.contains_key(&version) {
            return Err(self.missing(version));
        }
        let bytes = serde_json::to_vec(&Current {
            version,
            previous: Some(previous),
        })?;
        fsio::write_atomic(&self.data.join(CURRENT_FILE), &bytes)?;
        let released = self
            .held
            .activate(version)
            .ok_or_else(|| self.missing(version))?;
        for old in released {
            self.locals.remove(&old);
            if let Some(dir) = self.dirs.remove(&old)
                && dir != self.build_dir
            {
                fsio::remove_dir_if_exists(&dir)?;
            }
        }
        fsio::sync_dir(&self.data.join(VERSIONS_DIR))?;
        // A newer version includes (or, from a build, supersedes) what was
        // staged; going back to an older one leaves the staging area alone.
        if version > previous {
            self.staging.clear()?;
        }
        if let Some(candidate) = self.candidate.take_if(|c| c.version <= version) {
            fsio::remove_dir_if_exists(&candidate.dir)?;
        }
        Ok(previous)
    }

    /// Throws away every staged operation, durably (`Corpus.Discard`);
    /// returns how many there were.
    pub fn discard_staged(&mut self) -> Result<u64, CorpusError> {
        let ops = self.staging.ops();
        self.staging.clear()?;
        Ok(ops)
    }

    /// What this leaf holds, as `Versions` reports it.
    pub fn versions(&mut self) -> Result<LeafVersions, CorpusError> {
        let current = self.held.current();
        let local = self.local(current)?;
        let snapshot = self
            .held
            .get(current)
            .map(|s| s.shard().meta.input_checksum.clone())
            .unwrap_or_default();
        Ok(LeafVersions {
            shard: self.build.shard,
            replica: self.settings.name.clone(),
            reachable: true,
            error: String::new(),
            current,
            installed: self.held.numbers(),
            staged_ops: self.staging.ops(),
            num_docs: local.num_docs,
            digest: local.digest(),
            snapshot,
            misplaced: false,
        })
    }

    /// Holds the complete version directory `dir` (renamed into place) as
    /// version `version`, searchable by number.
    pub(super) fn hold(&mut self, version: u64, dir: PathBuf) -> Result<(), CorpusError> {
        let searcher = self.settings.open(&dir)?;
        let found = searcher.shard().meta.version;
        if found != version {
            return Err(CorpusError::Precondition(format!(
                "{} holds version {found}, not {version}",
                dir.display()
            )));
        }
        self.locals.remove(&version);
        self.held.insert(searcher);
        self.dirs.insert(version, dir);
        Ok(())
    }

    /// Forgets held version `version` (not the current one) and removes
    /// its directory: it is about to be built again.
    pub(super) fn drop_version(&mut self, version: u64) -> Result<(), CorpusError> {
        if version == self.held.current() {
            return Ok(());
        }
        self.held.remove(version);
        self.locals.remove(&version);
        if let Some(dir) = self.dirs.remove(&version)
            && dir != self.build_dir
        {
            fsio::remove_dir_if_exists(&dir)?;
        }
        Ok(())
    }

    /// Refuses `version` if it jumps more than [`MAX_VERSION_STEP`] above
    /// the highest version this shard holds.
    pub(super) fn check_version_step(&self, version: u64) -> Result<(), CorpusError> {
        let highest = self
            .held
            .numbers()
            .into_iter()
            .max()
            .unwrap_or(0)
            .max(self.held.current());
        if version > highest.saturating_add(MAX_VERSION_STEP) {
            return Err(CorpusError::Invalid(format!(
                "version {version} is more than {MAX_VERSION_STEP} above the highest shard {} \
                 holds ({highest}): a publish makes the version one above the highest any leaf \
                 holds, and a replica behind copies its siblings'",
                self.build.shard
            )));
        }
        Ok(())
    }

    /// Where version `version` lives once complete.
    pub(super) fn version_dir(&self, version: u64) -> PathBuf {
        version_dir(&self.data, version)
    }

    /// Where version `version` is written before it is complete.
    pub(super) fn tmp_dir(&self, version: u64) -> PathBuf {
        let mut dir = version_dir(&self.data, version).into_os_string();
        dir.push(TMP_SUFFIX);
        PathBuf::from(dir)
    }

    /// The directory holding every version directory.
    pub(super) fn versions_root(&self) -> PathBuf {
        self.data.join(VERSIONS_DIR)
    }
}

fn version_dir(data: &Path, version: u64) -> PathBuf {
    data.join(VERSIONS_DIR).join(format!("v{version:08}"))
}

fn parse_version_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix('v')?;
    (digits.len() >= 8 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}
