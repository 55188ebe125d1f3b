//! `space`: the free-space watermark of the data directory.
//!
//! Below a floor of free space on the file system that holds the redb file,
//! new starts and schedule fires are refused (HTTP 507), while the operations
//! already running go on: the headroom above a full disk is kept for their
//! transitions. Checked at every start (one `statvfs`), so writes resume by
//! themselves as soon as space returns. A node on PostgreSQL keeps its
//! records in the database, whose own disk-full errors become 503s.

use std::path::{Path, PathBuf};

/// The default floor: the larger of this and 1% of the file system.
pub const DEFAULT_MIN_FREE: u64 = 256 << 20;

/// The free space of the data directory against its floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    /// The data directory.
    pub path: PathBuf,
    /// Bytes free for the server's user.
    pub free: u64,
    /// The floor: `min_free_mib` if set, else the default.
    pub floor: u64,
}

impl Space {
    /// Reads the free space of `dir`'s file system; `min_free` is the
    /// configured floor, if any. `None` if the file system cannot be read.
    pub fn of(dir: &Path, min_free: Option<u64>) -> Option<Space> {
        let stat = rustix::fs::statvfs(dir).ok()?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        let total = stat.f_blocks.saturating_mul(stat.f_frsize);
        let floor = min_free.unwrap_or_else(|| DEFAULT_MIN_FREE.max(total / 100));
        Some(Space { path: dir.to_owned(), free, floor })
    }

    /// Whether new work must be refused.
    pub fn low(&self) -> bool {
        self.free < self.floor
    }

    /// What a refused start is told.
    pub fn refusal(&self) -> String {
        format!(
            "the data directory {} has {} bytes free, below the floor of {} bytes (min_free_mib); \
             new operations are refused until space is freed, and running ones go on",
            self.path.display(),
            self.free,
            self.floor
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_above_the_free_space_is_low_and_the_default_is_at_least_256_mib() {
        let dir = tempfile::tempdir().unwrap();
        let space = Space::of(dir.path(), None).expect("a real file system");
        assert!(space.floor >= DEFAULT_MIN_FREE);
        let high = Space::of(dir.path(), Some(space.free + (1 << 40))).unwrap();
        assert!(high.low(), "{high:?}");
        assert!(high.refusal().contains("min_free_mib") && high.refusal().contains(&dir.path().display().to_string()));
        assert!(!Space::of(dir.path(), Some(0)).unwrap().low());
    }
}
