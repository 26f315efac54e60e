//! Durable file-system steps the version store is built from: a file
//! replaced atomically, a directory's entries made durable, a directory
//! copied by hard links. Each says what it guarantees after a crash.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` so that after a crash it holds either the
/// old or the new content: write a sibling temporary file, fsync it, rename
/// it over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp-write");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    sync_dir(parent_of(path))
}

/// Makes the entries of `dir` (files created, renamed or removed in it)
/// durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes every file directly in `dir`, and `dir`'s entries, durable.
pub fn sync_files(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// The regular files directly in `dir` that make up a version, by name,
/// sorted: tantivy's lock files are left out.
pub fn version_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.starts_with(".tantivy-") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Fills the (existing) directory `to` with the version files of `from`
/// except those in `skip`: hard links where the file system allows (a
/// version's files are never modified in place), copies elsewhere.
pub fn link_or_copy_files(from: &Path, to: &Path, skip: &[&str]) -> std::io::Result<u64> {
    link_or_copy_matching(from, to, |name| !skip.contains(&name))
}

/// Fills the (existing) directory `to` with the version files of `from`
/// whose name `wanted` accepts, linked or copied as [`link_or_copy_files`]
/// does.
pub fn link_or_copy_matching(
    from: &Path,
    to: &Path,
    wanted: impl Fn(&str) -> bool,
) -> std::io::Result<u64> {
    let mut bytes = 0;
    for name in version_files(from)? {
        if !wanted(&name) {
            continue;
        }
        let (src, dst) = (from.join(&name), to.join(&name));
        if fs::hard_link(&src, &dst).is_err() {
            fs::copy(&src, &dst)?;
        }
        bytes += fs::metadata(&dst)?.len();
    }
    Ok(bytes)
}

/// Removes `dir` and everything in it, if it exists.
pub fn remove_dir_if_exists(dir: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes the file `path`, if it exists.
pub fn remove_file_if_exists(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
