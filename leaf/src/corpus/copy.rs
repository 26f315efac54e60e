//! Copying a version between replicas of a shard: CopyVersion streams the
//! files of a version directory in [`CHUNK_BYTES`] pieces; CatchUp writes
//! them into `versions/vN.tmp`, makes them durable and renames the
//! directory into place, so a half-copied version is never opened.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use searchtree_proto::pb::FileChunk;

use super::disk::DiskFloor;
use super::store::CorpusStore;
use super::{CorpusError, fsio};

/// The most bytes of a file one `FileChunk` carries.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Streams the files of the version in `dir`, one after another, each in
/// order, the last chunk of each marked; stops early when `send` returns
/// false (nobody listens). Returns the bytes sent.
pub fn read_version(
    dir: &Path,
    mut send: impl FnMut(FileChunk) -> bool,
) -> Result<u64, CorpusError> {
    let mut bytes = 0;
    for name in fsio::version_files(dir)? {
        let mut file = File::open(dir.join(&name))?;
        let mut buffer = vec![0u8; CHUNK_BYTES];
        let mut pending: Option<Vec<u8>> = None;
        loop {
            let n = read_full(&mut file, &mut buffer)?;
            if let Some(data) = pending.take() {
                let last = n == 0;
                bytes += data.len() as u64;
                let chunk = FileChunk {
                    name: name.clone(),
                    data,
                    last,
                };
                if !send(chunk) {
                    return Ok(bytes);
                }
                if last {
                    break;
                }
            } else if n == 0 {
                // An empty file: one empty last chunk.
                let chunk = FileChunk {
                    name: name.clone(),
                    data: Vec::new(),
                    last: true,
                };
                if !send(chunk) {
                    return Ok(bytes);
                }
                break;
            }
            pending = Some(buffer[..n].to_vec());
        }
    }
    Ok(bytes)
}

/// Reads until `buffer` is full or the file ends.
fn read_full(file: &mut File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Writes a copied version's files into its temporary directory.
pub struct VersionWriter {
    dir: PathBuf,
    open: Option<(String, File)>,
    bytes: u64,
    /// Checked at every chunk: a copy's size is known only at its end, and
    /// a source that sends without end must not fill the disk.
    floor: DiskFloor,
}

impl VersionWriter {
    /// A writer into the (fresh, empty) directory `dir` that refuses a
    /// chunk which would leave less than `floor` free.
    pub fn new(dir: PathBuf, floor: DiskFloor) -> Self {
        VersionWriter {
            dir,
            open: None,
            bytes: 0,
            floor,
        }
    }

    /// Writes one chunk: the next piece of the file being written, or the
    /// first of a new one.
    pub fn write(&mut self, chunk: &FileChunk) -> Result<(), CorpusError> {
        let name = &chunk.name;
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
            return Err(CorpusError::Invalid(format!(
                "a copied version names a file {name:?}"
            )));
        }
        self.floor.check(
            &self.dir,
            chunk.data.len() as u64,
            &format!("a copied version's next chunk (after {} bytes)", self.bytes),
        )?;
        if self.open.as_ref().is_none_or(|(open, _)| open != name) {
            if let Some((open, _)) = &self.open {
                return Err(CorpusError::Invalid(format!(
                    "file {open} of the copied version ended without its last chunk"
                )));
            }
            self.open = Some((name.clone(), File::create(self.dir.join(name))?));
        }
        let (_, file) = self.open.as_mut().expect("a file is open");
        file.write_all(&chunk.data)?;
        self.bytes += chunk.data.len() as u64;
        if chunk.last {
            let (_, file) = self.open.take().expect("a file is open");
            file.sync_all()?;
        }
        Ok(())
    }

    /// Checks the copy is complete and makes the directory durable; returns
    /// the bytes written.
    pub fn finish(self) -> Result<u64, CorpusError> {
        if let Some((open, _)) = self.open {
            return Err(CorpusError::Invalid(format!(
                "the copy ended in the middle of file {open}"
            )));
        }
        fsio::sync_dir(&self.dir)?;
        Ok(self.bytes)
    }
}

impl CorpusStore {
    /// A fresh temporary directory to copy version `version` into.
    pub fn begin_copy(&mut self, version: u64) -> Result<PathBuf, CorpusError> {
        self.check_version_step(version)?;
        self.check_disk(0, &format!("copying version {version}"))?;
        let tmp = self.tmp_dir(version);
        if self.candidate.as_ref().is_some_and(|c| c.dir == tmp) {
            self.candidate = None;
        }
        fsio::remove_dir_if_exists(&tmp)?;
        std::fs::create_dir_all(&tmp)?;
        Ok(tmp)
    }

    /// Moves a version copied into `tmp` into place and opens it; makes it
    /// current if `activate`.
    pub fn adopt_copy(
        &mut self,
        version: u64,
        tmp: &Path,
        activate: bool,
    ) -> Result<(), CorpusError> {
        if version == self.held.current() {
            return Err(CorpusError::Precondition(format!(
                "version {version} is this leaf's current one already"
            )));
        }
        let meta = crate::shard::read_meta(tmp)?;
        if (meta.shard, meta.num_shards, meta.version)
            != (self.build.shard, self.build.num_shards, version)
        {
            let _ = fsio::remove_dir_if_exists(tmp);
            return Err(CorpusError::Precondition(format!(
                "the copy is version {} of shard {} of {}, not version {version} of shard {} of {}",
                meta.version, meta.shard, meta.num_shards, self.build.shard, self.build.num_shards
            )));
        }
        // Opened and checked whole where it was copied to, before it takes
        // a version's place: a copy that is damaged or not a shard never
        // becomes a version this leaf opens again at every start.
        if let Err(damage) = super::store::open_intact(&self.settings, tmp) {
            let _ = fsio::remove_dir_if_exists(tmp);
            return Err(CorpusError::Precondition(format!(
                "the copy of version {version} does not open: {damage}"
            )));
        }
        if self.dirs.contains_key(&version) {
            self.drop_version(version)?;
        }
        let dir = self.version_dir(version);
        fsio::remove_dir_if_exists(&dir)?;
        std::fs::rename(tmp, &dir)?;
        fsio::sync_dir(&self.versions_root())?;
        self.hold(version, dir)?;
        if activate {
            self.activate(version)?;
        }
        Ok(())
    }
}
