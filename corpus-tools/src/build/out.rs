//! `--out`: what a build may replace, and the staging directory it is
//! built in.
//!
//! A build writes into a hidden staging directory beside `--out` and renames
//! it into place only when complete, so a failed or interrupted build never
//! leaves a half-built index where a good one was. `--out` is replaced only
//! when it is absent, an empty directory, or a previous build of this tool
//! (recognised by its manifest) holding nothing a build does not write; and
//! never when the corpus lies inside it (or, for a directory corpus, it lies
//! inside the corpus).

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use tempfile::TempDir;

use super::manifest::{MANIFEST_FILE, Manifest, shard_dir_name};
use super::{Input, SHARDS_DIR, TOPOLOGY_FILE};
use crate::commands::up::STATE_DIR;

/// What the output path holds, which decides whether a build may take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
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
pub(super) fn inspect_target(out: &Path) -> anyhow::Result<Target> {
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
        if name == STATE_DIR {
            // What a tree over this build loaded and published since: a
            // rebuild would silently discard it.
            return Err(refuse(format!(
                "is a previous build, but a tree started over it keeps what was loaded into it \
                 in {STATE_DIR:?}, which a rebuild would discard; remove {} first if that is \
                 intended, or build elsewhere and switch a running tree to it with \
                 `searchtree publish --from-build`",
                out.join(STATE_DIR).display()
            )));
        }
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
pub(super) fn check_paths(input: &Input, out: &Path) -> anyhow::Result<()> {
    if let Input::Lines(path) = input
        && path.is_dir()
    {
        bail!(
            "--input {} is a directory: --input takes a JSON Lines file (plain or .gz); for a \
             directory of text files, one document each, use --input-dir",
            path.display()
        );
    }
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

/// The hidden directory a build writes into before it replaces its target:
/// a sibling of the target, so that the final rename is atomic, and removed
/// when dropped unless it was moved into place — so a failed build leaves
/// nothing behind. While the build runs it holds an advisory lock on the
/// directory, which tells a later build that a staging directory left
/// behind by a killed build is abandoned rather than in use.
pub(super) struct Staging {
    dir: TempDir,
    /// Holds the lock until the staging directory is dropped.
    _lock: File,
    target: PathBuf,
}

impl Staging {
    pub(super) fn new(target: &Path) -> anyhow::Result<Staging> {
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
        // Refused before any work, as well as at the swap.
        drop(searchtree_leaf::shard::in_use::take_all(target)?);
        let dir = tempfile::Builder::new()
            .prefix(&staging_prefix(&name))
            .tempdir_in(&parent)
            .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
        let lock = try_lock_dir(dir.path())
            .ok()
            .flatten()
            .with_context(|| format!("locking {}", dir.path().display()))?;
        Ok(Staging {
            dir,
            _lock: lock,
            target: target.to_path_buf(),
        })
    }

    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn discard(self) {
        drop(self);
    }

    /// Moves the finished build into place, or discards it if the target
    /// may not be replaced after all.
    pub(super) fn commit(self) -> anyhow::Result<()> {
        // On an error the staging directory is dropped, and removed.
        self.replace_target()?;
        // It is the target now: nothing is left to remove.
        let _ = self.dir.keep();
        Ok(())
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
            return std::fs::rename(self.path(), &self.target).map_err(into_target);
        }
        // Not a build a running leaf serves (the locks last until the swap
        // is done).
        let _previous = searchtree_leaf::shard::in_use::take_all(&self.target)?;
        // One atomic swap where the system has it: the previous build then
        // sits at the staging path, which a build killed before removing it
        // leaves for the next build to clear (it is not locked).
        if exchange(self.path(), &self.target).map_err(into_target)? {
            let _ = std::fs::remove_dir_all(self.path());
            return Ok(());
        }
        let old = self.path().with_file_name(format!(
            "{}{}",
            set_aside_prefix(&file_name(&self.target)),
            std::process::id()
        ));
        std::fs::rename(&self.target, &old)
            .with_context(|| format!("moving aside {}", self.target.display()))?;
        if let Err(e) = std::fs::rename(self.path(), &self.target) {
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

/// Swaps directories `a` and `b` in one step (`renameat2` with
/// `RENAME_EXCHANGE`): true if done, false if the system or file system
/// cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let done = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if done == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => Ok(false),
        _ => Err(err),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<bool> {
    Ok(false)
}

/// The start of the names a previous build is moved aside to, while the
/// new one takes its place, where no atomic swap is to be had.
fn set_aside_prefix(target_name: &str) -> String {
    format!(".{target_name}.old-")
}

/// The start of the names of `target`'s staging directories.
fn staging_prefix(target_name: &str) -> String {
    format!(".{target_name}.partial-")
}

/// Removes staging directories left by builds that were killed: a build
/// holds a lock on its staging directory while it runs, so one whose lock
/// can be taken belongs to no running build. A previous build moved aside
/// by a build killed before it put the new one in its place is put back.
fn remove_abandoned(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = staging_prefix(name);
    let aside = set_aside_prefix(name);
    for entry in entries.flatten() {
        let path = entry.path();
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = entry_name.strip_prefix(&aside)
            && is_real_dir(&path)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let target = parent.join(name);
            if target.exists() {
                tracing::info!(dir = %path.display(), "removing a previous build left aside");
                let _ = std::fs::remove_dir_all(&path);
            } else if std::fs::rename(&path, &target).is_ok() {
                tracing::warn!(
                    dir = %target.display(),
                    "put back the previous build, which a killed build had moved aside"
                );
            }
            continue;
        }
        if !entry.file_name().to_string_lossy().starts_with(&prefix) || !is_real_dir(&path) {
            continue;
        }
        if let Ok(Some(_lock)) = try_lock_dir(&path) {
            tracing::info!(dir = %path.display(), "removing abandoned partial build");
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Takes an exclusive advisory lock on directory `dir` without waiting:
/// `Some` holds it until the file is dropped or the process dies, `None`
/// means another holder has it. (`flock` through libc: `File::try_lock`
/// is newer than the workspace's minimum Rust.)
fn try_lock_dir(dir: &Path) -> std::io::Result<Option<File>> {
    use std::os::fd::AsRawFd;
    let file = File::open(dir)?;
    // SAFETY: flock on a descriptor we own has no memory effects.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(Some(file));
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == std::io::ErrorKind::WouldBlock {
        Ok(None)
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{corpus, message, options, scratch};
    use super::*;
    use crate::build::build;

    #[test]
    fn only_nothing_an_empty_directory_or_a_previous_build_may_be_replaced() {
        let scratch = scratch();
        let dir = scratch.path();
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

        let input = corpus(dir, 3);
        let build_dir = dir.join("index");
        build(&options(&input, &build_dir, 2)).unwrap();
        assert_eq!(inspect_target(&build_dir).unwrap(), Target::PreviousBuild);
        std::fs::write(build_dir.join("mine.toml"), "keep me").unwrap();
        let err = message(inspect_target(&build_dir));
        assert!(err.contains("also holds \"mine.toml\""), "{err}");
        std::fs::remove_file(build_dir.join("mine.toml")).unwrap();
        std::fs::create_dir_all(build_dir.join("state/leaf-0")).unwrap();
        let err = message(inspect_target(&build_dir));
        assert!(err.contains("keeps what was loaded into it"), "{err}");
        std::fs::remove_dir_all(build_dir.join("state")).unwrap();
        std::fs::create_dir(build_dir.join("shards/shard-007")).unwrap();
        let err = message(inspect_target(&build_dir));
        assert!(err.contains("also holds \"shards/shard-007\""), "{err}");
    }

    #[test]
    fn input_and_output_may_not_contain_each_other() {
        let scratch = scratch();
        let dir = scratch.path();
        let input = corpus(dir, 1);
        // A directory given as --input is pointed to --input-dir.
        let err = message(check_paths(
            &Input::Lines(dir.to_path_buf()),
            &dir.join("../elsewhere"),
        ));
        assert!(err.contains("use --input-dir"), "{err}");
        // Beside each other is fine, even in a directory not yet made.
        assert!(check_paths(&Input::Lines(input.clone()), &dir.join("a/b/index")).is_ok());
        let err = message(check_paths(&Input::Lines(input.clone()), dir));
        assert!(err.contains("c.jsonl lies inside --out"), "{err}");
        // Another spelling of the same place is seen through.
        let dotted = dir.join("sub/..");
        std::fs::create_dir(dir.join("sub")).unwrap();
        assert!(check_paths(&Input::Lines(input.clone()), &dotted).is_err());
        let err = message(check_paths(&Input::Dir(dir.join("sub")), &dir.join("sub")));
        assert!(err.contains("are the same"), "{err}");
        let err = message(check_paths(
            &Input::Dir(dir.to_path_buf()),
            &dir.join("x/index"),
        ));
        assert!(err.contains("lies inside --input-dir"), "{err}");
    }

    #[test]
    fn a_previous_build_moved_aside_by_a_killed_build_is_put_back() {
        let scratch = scratch();
        let dir = scratch.path();
        // A build killed between moving the old build aside and putting
        // the new one in its place (a pid no process has).
        let aside = dir.join(format!("{}999999999", set_aside_prefix("index")));
        std::fs::create_dir(&aside).unwrap();
        std::fs::write(aside.join("manifest.json"), "{}").unwrap();
        remove_abandoned(dir, "index");
        assert!(dir.join("index/manifest.json").exists(), "put back");
        assert!(!aside.exists());
        // With the target there, a leftover is only removed.
        std::fs::create_dir(&aside).unwrap();
        remove_abandoned(dir, "index");
        assert!(!aside.exists() && dir.join("index/manifest.json").exists());
    }

    #[test]
    fn two_directories_are_swapped_in_one_step() {
        let scratch = scratch();
        let (a, b) = (scratch.path().join("a"), scratch.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("new"), "").unwrap();
        std::fs::write(b.join("old"), "").unwrap();
        if exchange(&a, &b).unwrap() {
            assert!(b.join("new").exists() && a.join("old").exists());
        }
    }

    #[test]
    fn abandoned_staging_directories_are_removed_and_live_ones_kept() {
        let scratch = scratch();
        let dir = scratch.path();
        let out = dir.join("index");
        // Left by a build that was killed: nobody holds its lock.
        let abandoned = dir.join(".index.partial-killed");
        std::fs::create_dir(&abandoned).unwrap();
        let live = Staging::new(&out).unwrap();
        assert!(live.path().starts_with(dir), "a sibling of --out");
        assert!(!abandoned.exists());
        // A second build leaves the first one's staging directory alone.
        let second = Staging::new(&out).unwrap();
        assert!(live.path().is_dir());
        assert_ne!(live.path(), second.path());
        second.discard();
        live.discard();
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
    }
}
