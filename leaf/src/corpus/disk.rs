//! The free space a leaf keeps on its data directory's file system.
//!
//! A full disk is a way to take a node down that no single request looks
//! like: a load's batches, a publish's candidate or a copy from a sibling
//! each write what they are sent, and once the file system is full the
//! staging log, `CURRENT` and tantivy's own commits fail half-way. So every
//! step that writes refuses, before it writes, when what it would write
//! leaves less than `--min-free-disk` free (Elasticsearch's flood-stage
//! watermark plays the same part), with `RESOURCE_EXHAUSTED` and the
//! figures; searches go on at the current version, and the refused step
//! can be sent again once there is room. A copy checks again at every
//! chunk, since its size is known only at its end.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::CorpusError;
use crate::node::{LeafCounter, LeafCounters};

/// How much of its file system a leaf leaves free.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    /// At least this many bytes.
    Bytes(u64),
    /// At least this percentage of the file system's size.
    Percent(f64),
}

/// The floor a leaf keeps unless told otherwise: a share of the file
/// system (Elasticsearch's flood stage is the same 95 % full), so that a
/// small volume (a 1 GiB claim on Kubernetes) keeps tens of megabytes and
/// a large disk more, enough for its log, `CURRENT` and its logs after any
/// refusal.
pub const DEFAULT_MIN_FREE: &str = "5%";

impl FromStr for MinFree {
    type Err = String;

    /// `5%`, or a size in bytes with an optional binary unit: `1GiB`,
    /// `512MiB`, `64KiB`, `1TiB` (also `G`, `M`, `K`, `T`).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(percent) = s.strip_suffix('%') {
            let p: f64 = percent
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a percentage such as 5%"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("{s:?} is not a percentage between 0% and 100%"));
            }
            return Ok(MinFree::Percent(p));
        }
        let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &s[digits.len()..];
        let shift = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kib" => 10,
            "m" | "mib" => 20,
            "g" | "gib" => 30,
            "t" | "tib" => 40,
            _ => {
                return Err(format!(
                    "{s:?}: unknown unit {unit:?}; use a percentage (5%) or a size (512MiB, 1GiB)"
                ));
            }
        };
        let n: u64 = digits
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a size such as 1GiB or a percentage such as 5%"))?;
        n.checked_mul(1 << shift)
            .map(MinFree::Bytes)
            .ok_or_else(|| format!("{s:?} is larger than any disk"))
    }
}

impl fmt::Display for MinFree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MinFree::Bytes(n) => write!(f, "{}", Bytes(*n)),
            MinFree::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// A file system's size and what an unprivileged writer may still use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes a process without privileges can still write.
    pub available: u64,
    /// The file system's size in bytes.
    pub total: u64,
}

/// The space of the file system holding `dir` (`statvfs`).
pub fn space(dir: &Path) -> std::io::Result<Space> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and
    // `stat` is memory for one `statvfs`, filled by the call when it
    // returns 0.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the call returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    Ok(space_of(&stat))
}

/// The sizes in a `statvfs`, in bytes.
// The fields' widths differ between targets (u32 on some 32-bit ones).
#[allow(clippy::unnecessary_cast)]
fn space_of(stat: &libc::statvfs) -> Space {
    let block = stat.f_frsize as u64;
    Space {
        available: (stat.f_bavail as u64).saturating_mul(block),
        total: (stat.f_blocks as u64).saturating_mul(block),
    }
}

/// The floor a leaf's writing steps keep: checked before each writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskFloor {
    min_free: MinFree,
}

impl Default for DiskFloor {
    fn default() -> Self {
        DiskFloor::new(DEFAULT_MIN_FREE.parse().expect("the default parses"))
    }
}

impl DiskFloor {
    /// A floor of `min_free`.
    pub fn new(min_free: MinFree) -> Self {
        DiskFloor { min_free }
    }

    /// The floor asked for.
    pub fn min_free(&self) -> MinFree {
        self.min_free
    }

    /// The bytes this floor keeps free on a file system of `total` bytes.
    pub fn kept(&self, total: u64) -> u64 {
        match self.min_free {
            MinFree::Bytes(n) => n,
            MinFree::Percent(p) => (total as f64 * p / 100.0).ceil() as u64,
        }
    }

    /// Refuses `step` (what is being written, for the message) if writing
    /// about `needed` more bytes under `dir` would leave less than the
    /// floor free.
    pub fn check(&self, dir: &Path, needed: u64, step: &str) -> Result<(), CorpusError> {
        let space = space(dir)?;
        self.check_space(space, needed, step, dir)
    }

    /// [`DiskFloor::check`] against a space already read.
    pub fn check_space(
        &self,
        space: Space,
        needed: u64,
        step: &str,
        dir: &Path,
    ) -> Result<(), CorpusError> {
        let kept = self.kept(space.total);
        if space.available.saturating_sub(needed) >= kept && space.available >= needed {
            return Ok(());
        }
        Err(CorpusError::DiskFull(format!(
            "{step} refused: it needs about {} on the file system of {}, which has {} free of {}, \
             and this leaf keeps {} free (--min-free-disk {}); free some space or move --data-dir, \
             then send it again (searches go on at the current version)",
            Bytes(needed),
            dir.display(),
            Bytes(space.available),
            Bytes(space.total),
            Bytes(kept),
            self.min_free,
        )))
    }
}

/// The total size of the files directly in `dir` (0 if it does not
/// exist): what a step that rewrites them may write again. Shards and the
/// staging area are flat directories; a directory named by a request is
/// not walked further.
pub fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut bytes = 0u64;
    for entry in entries {
        // tantivy's own threads remove files as they merge: one gone
        // between the listing and its size takes no room.
        let metadata = match entry.and_then(|e| e.metadata()) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if metadata.is_file() {
            bytes = bytes.saturating_add(metadata.len());
        }
    }
    Ok(bytes)
}

/// How often [`watch`] reads the file system: a load can write a gigabyte
/// in less, but a scraper reads every 15–60 s, and the writing steps check
/// for themselves.
pub const WATCH_EVERY: Duration = Duration::from_secs(5);

/// Keeps the gauges `disk_free_bytes`, `disk_total_bytes` and
/// `disk_floor_bytes` current for the file system of `dir`, so that an
/// operator sees a leaf nearing its floor before its loads are refused
/// (as node exporters show a machine's disks, but per leaf and next to
/// the floor it keeps). `floor` is `None` for a leaf that never writes (no
/// data directory): its floor reads 0. Reads once before returning, then
/// every [`WATCH_EVERY`] on a thread of its own, since `statvfs` on a
/// stuck network file system blocks; the thread ends with the process.
pub fn watch(dir: PathBuf, floor: Option<DiskFloor>, counters: Arc<LeafCounters>) {
    report(&dir, floor, &counters);
    let started = std::thread::Builder::new()
        .name("disk-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(WATCH_EVERY);
                report(&dir, floor, &counters);
            }
        });
    if let Err(e) = started {
        tracing::error!(%e, "cannot start the disk watch: the disk gauges stay as first read");
    }
}

/// The disk as the gauges last read it, for the leaf's status.
pub fn status(counters: &LeafCounters) -> searchtree_node::ops::status::DiskStatus {
    searchtree_node::ops::status::DiskStatus {
        free_bytes: counters.get(LeafCounter::DiskFreeBytes),
        total_bytes: counters.get(LeafCounter::DiskTotalBytes),
        floor_bytes: counters.get(LeafCounter::DiskFloorBytes),
    }
}

/// Sets the disk gauges from one reading of `dir`'s file system; a failed
/// reading leaves them as they were and is logged.
fn report(dir: &Path, floor: Option<DiskFloor>, counters: &LeafCounters) {
    match space(dir) {
        Ok(space) => {
            counters.set(LeafCounter::DiskFreeBytes, space.available);
            counters.set(LeafCounter::DiskTotalBytes, space.total);
            counters.set(
                LeafCounter::DiskFloorBytes,
                floor.map_or(0, |f| f.kept(space.total)),
            );
        }
        Err(e) => {
            tracing::warn!(%e, dir = %dir.display(), "cannot read the free space of the leaf's disk");
        }
    }
}

/// A byte count as people read it (binary units).
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_parse_as_sizes_or_percentages() {
        assert_eq!("5%".parse(), Ok(MinFree::Percent(5.0)));
        assert_eq!("0".parse(), Ok(MinFree::Bytes(0)));
        assert_eq!("1GiB".parse(), Ok(MinFree::Bytes(1 << 30)));
        assert_eq!("512m".parse(), Ok(MinFree::Bytes(512 << 20)));
        assert_eq!("64 KiB".parse(), Ok(MinFree::Bytes(64 << 10)));
        for bad in ["", "-1", "5 apples", "101%", "x%", "99999999999TiB"] {
            let err = bad.parse::<MinFree>().unwrap_err();
            assert!(err.contains(&format!("{:?}", bad.trim())), "{bad}: {err}");
        }
    }

    #[test]
    fn the_default_floor_fits_a_small_volume() {
        // A Kubernetes leaf's 1 GiB claim keeps about 51 MiB back, not all
        // of it.
        let kept = DiskFloor::default().kept(1 << 30);
        assert_eq!(kept, ((1u64 << 30) as f64 * 0.05).ceil() as u64);
        assert!(kept < 64 << 20, "{kept}");
    }

    #[test]
    fn a_step_is_refused_when_it_would_leave_less_than_the_floor() {
        let space = Space {
            available: 10 << 30,
            total: 100 << 30,
        };
        let dir = Path::new("/data");
        let floor = DiskFloor::new(MinFree::Bytes(1 << 30));
        assert!(floor.check_space(space, 9 << 30, "a load", dir).is_ok());
        let refused = floor
            .check_space(space, (9 << 30) + 1, "a load", dir)
            .unwrap_err();
        let status = tonic::Status::from(refused);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("a load refused"), "{status:?}");
        assert!(
            status.message().contains("10.0 GiB free of 100.0 GiB"),
            "{status:?}"
        );
        assert!(
            status.message().contains("--min-free-disk 1.0 GiB"),
            "{status:?}"
        );

        // 5% of 100 GiB is 5 GiB.
        let percent = DiskFloor::new(MinFree::Percent(5.0));
        assert!(percent.check_space(space, 5 << 30, "x", dir).is_ok());
        assert!(percent.check_space(space, (5 << 30) + 1, "x", dir).is_err());
        // No floor still refuses what does not fit at all.
        let none = DiskFloor::new(MinFree::Bytes(0));
        assert!(none.check_space(space, 10 << 30, "x", dir).is_ok());
        assert!(none.check_space(space, (10 << 30) + 1, "x", dir).is_err());
    }

    #[test]
    fn the_space_of_a_real_directory_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let space = space(tmp.path()).unwrap();
        assert!(
            space.total > 0 && space.available <= space.total,
            "{space:?}"
        );
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        std::fs::write(tmp.path().join("a"), [0u8; 100]).unwrap();
        std::fs::write(tmp.path().join("sub/b"), [0u8; 23]).unwrap();
        assert_eq!(dir_bytes(tmp.path()).unwrap(), 100, "files directly in it");
        assert_eq!(dir_bytes(&tmp.path().join("absent")).unwrap(), 0);
        let everything = DiskFloor::new(MinFree::Percent(100.0));
        assert!(everything.check(tmp.path(), 0, "x").is_err());
    }

    #[test]
    fn the_watch_sets_the_disk_gauges_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let counters = LeafCounters::new("leaf");
        watch(
            tmp.path().to_path_buf(),
            Some(DiskFloor::new(MinFree::Percent(50.0))),
            Arc::clone(&counters),
        );
        let total = counters.get(LeafCounter::DiskTotalBytes);
        let free = counters.get(LeafCounter::DiskFreeBytes);
        assert!(total > 0 && free <= total, "{free} of {total}");
        assert_eq!(
            counters.get(LeafCounter::DiskFloorBytes),
            DiskFloor::new(MinFree::Percent(50.0)).kept(total)
        );
        let shown = status(&counters);
        assert_eq!((shown.total_bytes, shown.free_bytes), (total, free));

        // A leaf that never writes keeps no floor.
        let read_only = LeafCounters::new("leaf");
        watch(tmp.path().to_path_buf(), None, Arc::clone(&read_only));
        assert_eq!(read_only.get(LeafCounter::DiskFloorBytes), 0);
        assert_eq!(read_only.get(LeafCounter::DiskTotalBytes), total);

        // A directory that cannot be read leaves the gauges as they were.
        report(&tmp.path().join("absent"), None, &read_only);
        assert_eq!(read_only.get(LeafCounter::DiskTotalBytes), total);
    }
}
