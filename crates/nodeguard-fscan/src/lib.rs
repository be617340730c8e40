//! Finds what an attacker leaves on disk inside container filesystems: regular files with the
//! setuid or setgid bit and files carrying file capabilities (`security.capability`).
//!
//! The walk is built to run as root over untrusted trees:
//! - it never follows a symlink: everything below a root is reached with `openat`/`fstatat`
//!   relative to a directory fd, with `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`;
//! - it never opens FIFOs, sockets or devices, and opens a regular file (to hash it) only with
//!   `O_NONBLOCK|O_NOCTTY|O_NOFOLLOW`, re-checking that the opened inode is the one stat'ed;
//! - it stays on the root's filesystem (`find -xdev`), steps over bind-mount loops, survives
//!   deep trees with a bounded number of open fds, huge directories, hostile names and files
//!   vanishing mid-walk, and stops a root at a file-count or time budget.
//!
//! For overlay containers it walks each image layer (lower dir) once however many containers
//! share it, caches that result while the layer directory is unchanged, checks each
//! container's writable (upper) layer every scan — listing only the directories whose times
//! changed since the last scan, and re-checking the rest within a budget on full scans
//! (`incremental.rs`; [`FsScanner::set_incremental`]) — and applies overlayfs' rules (shadowing, whiteouts,
//! opaque directories) so the result equals what `find MERGED/. -xdev -perm /6000 -type f`
//! plus `getcap` report on the container's merged root.
//!
//! ```no_run
//! use nodeguard_fscan::{ContainerRoot, FsScanner, RootSpec, WalkBudget};
//!
//! let mut scanner = FsScanner::new(WalkBudget::default(), 2);
//! let out = scanner.scan(&[ContainerRoot {
//!     container_id: "abc".into(),
//!     spec: RootSpec::Merged { root: "/proc/1234/root".into() },
//! }]);
//! for file in &out.files {
//!     println!("{} {:?} {:?}", file.path, file.capabilities, file.sha256);
//! }
//! ```
//!
//! Semantics worth knowing:
//! - `-xdev` is `find`'s: a directory on another filesystem than its root is not entered
//!   (volumes, `/proc`, `/sys` inside a merged root), but a single file bind-mounted from
//!   elsewhere is a file the container sees and is reported, as `find -xdev` does.
//! - A root path itself (`/proc/PID/root`, a layer path from mountinfo) is trusted and opened
//!   once, following links; nothing below it is ever resolved by path again.
//! - `security.capability` is read with `getxattrat(2)` relative to the directory fd (Linux
//!   6.13+), else with `lgetxattr` on `/proc/self/fd/DIRFD/NAME` — our own open directory,
//!   the entry itself not followed.
//! - Capabilities are rendered like `getcap -n`: libcap 2.66's text, plus ` [rootid=N]` for a
//!   v3 (namespaced) capability.
//! - Lower layers are cached by (path, dev, inode, mtime of the layer root): a layer changed
//!   in place below its root is not seen until [`FsScanner::clear_cache`]. Merged roots are
//!   walked every scan, upper layers checked every scan (new, removed and renamed entries;
//!   a `chmod`/xattr change on an existing file at the re-check of a full scan). Digests are
//!   reused while dev, inode, size, mtime and ctime are unchanged: the bounded
//!   `nodeguard_hash::DigestCache`, keyed by [`nodeguard_model::FileIdentity`].
//! - Files are hashed with `nodeguard_hash::digest_reader` from the fd the walk opened, with
//!   the digests [`FsScanner::set_algorithms`] asks for (SHA-256 by default).
//!
//! Corners the overlay composition does not model (a merged walk has none of them):
//! image files below a directory the container renamed (`redirect_dir=on`, off by default)
//! are not reported — a warning and an `overlay_redirect` error count say so; metadata-only
//! copy-ups (`metacopy=on`) are reported from the upper layer with the right mode but no
//! digest (`metacopy_unhashed`); overlays mounted with `userxattr` (rootless) keep their
//! opaque flag in `user.overlay.opaque`, which is not trusted here because a container user
//! could set it to hide image files.

mod caps;
mod events;
mod examine;
mod incremental;
mod overlay;
mod scanner;
mod sys;
mod walk;

pub use caps::{decode_file_capability, CapRevision, FileCaps};
pub use events::{
    mark as mark_fs_events, EventTotals, EventsError, FsEvents, Marks, DEFAULT_PENDING_DIRS,
};
pub use scanner::{FsScanner, DEFAULT_RECHECK_FILES};
pub use walk::MAX_CANDIDATES_PER_ROOT;

use nodeguard_model::{OverlayLayers, ScanStats};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Limits for the walk of one root (a layer or a merged container root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkBudget {
    /// Directory entries one root's walk may look at before it stops (truncated).
    pub max_files: u64,
    /// Wall time one root's walk may take before it stops (truncated).
    pub max_duration: Duration,
    /// Files larger than this are reported without a digest.
    pub max_hash_bytes: u64,
}

impl Default for WalkBudget {
    fn default() -> WalkBudget {
        WalkBudget {
            max_files: 5_000_000,
            max_duration: Duration::from_secs(120),
            max_hash_bytes: 256 * 1024 * 1024,
        }
    }
}

/// How to reach one container's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// Overlay container: walk each lower dir (host path) once across all containers, the upper
    /// on its own. `lower_dirs` are top first, as in the overlay's `lowerdir=` option, and
    /// reachable from here (below the host root the agent sees the node's files at).
    Overlay(OverlayLayers),
    /// Anything else: walk the merged root, e.g. `/proc/PID/root`.
    Merged { root: PathBuf },
}

/// One container to scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRoot {
    pub container_id: String,
    pub spec: RootSpec,
}

/// Counters of one [`FsScanner::scan`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsStats {
    /// Directory entries looked at (all types), over every walked root.
    pub files_walked: u64,
    /// Directories entered.
    pub dirs_walked: u64,
    /// Roots walked this scan: lower and upper layers, and merged roots.
    pub layers_walked: u64,
    /// Lower layers whose cached result was used instead of a walk.
    pub layers_cached: u64,
    /// Roots whose walk a file or time budget cut short.
    pub walks_truncated: u64,
    pub files_hashed: u64,
    pub bytes_hashed: u64,
    /// Digests reused from the previous scan (same dev, inode, size, mtime, ctime).
    pub hash_cache_hits: u64,
    /// Entries that disappeared between being listed and being looked at (not errors).
    pub vanished: u64,
    /// Directories on another filesystem than their root's, not entered (`-xdev`).
    pub mounts_skipped: u64,
    /// Directories re-opened by name after their fd was closed to bound open fds.
    pub dirs_reopened: u64,
    /// Subtrees handed from a busy thread to an idle one.
    pub subtrees_shared: u64,
    /// Writable layers brought up to date from their directory cache instead of walked.
    #[serde(default)]
    pub layers_incremental: u64,
    /// Directories of those layers found unchanged (stat'ed, not listed).
    #[serde(default)]
    pub dirs_unchanged: u64,
    /// Writable layers walked in full because their directory cache would pass its bound
    /// (too many directories, too deep).
    #[serde(default)]
    pub incremental_fallbacks: u64,
    /// How long ago every entry of the writable layers walked this scan was last looked at,
    /// at the latest (the oldest layer's): a `chmod` or an xattr change on an existing file
    /// shows within this age. 0 for layers walked in full.
    #[serde(default)]
    pub recheck_age_seconds: u64,
    /// The event source for writable layers ([`FsScanner::set_events`]): its state and
    /// counters since it started.
    #[serde(default)]
    pub events: nodeguard_model::FsEventStats,
    /// Errors by kind: `walk_permission`, `walk_loop`, `walk_changed`, `walk_io`,
    /// `root_open`, `xattr_invalid`, `xattr_io`, `hash_too_large`, `hash_io`,
    /// `metacopy_unhashed`, `overlay_redirect`, `overlay_lookup`.
    pub errors: BTreeMap<String, u64>,
}

impl FsStats {
    pub fn count_error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_insert(0) += 1;
    }

    /// Total of all error counts.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn add(&mut self, other: &FsStats) {
        self.files_walked += other.files_walked;
        self.dirs_walked += other.dirs_walked;
        self.layers_walked += other.layers_walked;
        self.layers_cached += other.layers_cached;
        self.walks_truncated += other.walks_truncated;
        self.files_hashed += other.files_hashed;
        self.bytes_hashed += other.bytes_hashed;
        self.hash_cache_hits += other.hash_cache_hits;
        self.vanished += other.vanished;
        self.mounts_skipped += other.mounts_skipped;
        self.dirs_reopened += other.dirs_reopened;
        self.subtrees_shared += other.subtrees_shared;
        self.layers_incremental += other.layers_incremental;
        self.dirs_unchanged += other.dirs_unchanged;
        self.incremental_fallbacks += other.incremental_fallbacks;
        self.recheck_age_seconds = self.recheck_age_seconds.max(other.recheck_age_seconds);
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_insert(0) += n;
        }
    }

    /// Adds what this walk did to a report's counters: the files it hashed and its errors
    /// (as `fs_KIND`). Every walk counts, the full ones and those of writable layers alone.
    pub fn add_walk_to(&self, stats: &mut ScanStats) {
        stats.files_hashed += self.files_hashed;
        stats.bytes_hashed += self.bytes_hashed;
        for (kind, n) in &self.errors {
            *stats.errors.entry(format!("fs_{kind}")).or_insert(0) += n;
        }
    }

    /// Sets a report's figures of the filesystems from these counters of the latest walks
    /// (kept between scans, so a process scan shows what the last walks found): the one
    /// place [`FsStats`] becomes [`ScanStats`]. `vanished`, `mounts_skipped`,
    /// `dirs_reopened`, `subtrees_shared` have no field there.
    pub fn show_in(&self, stats: &mut ScanStats) {
        stats.files_walked = self.files_walked;
        stats.layers_walked = self.layers_walked;
        stats.layers_cached = self.layers_cached;
        stats.walks_truncated = self.walks_truncated;
        stats.fs_recheck_age_seconds = self.recheck_age_seconds;
        stats.fs_incremental_fallbacks = self.incremental_fallbacks;
        stats.fs_events = self.events;
    }
}

/// A container whose inventory is incomplete: a root of it (its writable layer, merged
/// root, or an image layer it uses) was cut short by the walk budget, or held more
/// setuid/setgid/capability files than [`MAX_CANDIDATES_PER_ROOT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incomplete {
    pub container_id: String,
    /// Why, one line: `writable layer: more than 5 files (max_files)`.
    pub reason: String,
    /// Files found but left out of the inventory.
    pub files_omitted: u64,
}

/// What one scan found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FsScanOutput {
    /// Containers whose `files` below are not all of them, in the order of the roots given.
    pub incomplete: Vec<Incomplete>,
    /// Setuid/setgid/file-capability files as each container sees them, sorted by container
    /// and path.
    pub files: Vec<nodeguard_model::FileEntry>,
    pub stats: FsStats,
    /// Truncated walks, unreadable roots, unhashed files, loops: one line each (capped).
    pub warnings: Vec<String>,
}

/// This crate's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("security.capability value is {len} bytes, too short for its header")]
    CapabilityTooShort { len: usize },
    #[error(
        "security.capability revision {magic:#010x} needs {expected} bytes, the value has {len}"
    )]
    CapabilityLength {
        magic: u32,
        expected: usize,
        len: usize,
    },
    #[error("security.capability has unknown revision (magic_etc {magic:#010x})")]
    CapabilityRevision { magic: u32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_can_move_to_a_blocking_thread() {
        fn send<T: Send + 'static>() {}
        send::<FsScanner>();
        send::<FsScanOutput>();
    }
}
