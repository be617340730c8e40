//! Collects what runs on a node — without hashing anything and without judging it.
//!
//! [`collect`] walks a proc root once and returns a [`Snapshot`]: every process with its
//! executable path, ids, capabilities, `no_new_privs`, seccomp mode and namespaces; the
//! container each belongs to (from `/proc/PID/cgroup`: containerd, CRI-O, Docker, Podman,
//! systemd and cgroupfs drivers, cgroup v1 and v2); each container's cgroup limits and the
//! overlay layers of its root filesystem; and, per process, which layer its executable comes
//! from plus a [`FileIdentity`] the hasher can key its cache on.
//!
//! Every root is a parameter ([`CollectOptions`]), so the same code reads the host's `/proc`
//! from a DaemonSet (`hostPID`) or a fixture tree in a test. Processes that exit while being
//! read, or that the agent may not read, are counted, not reported; malformed files become
//! warnings. Only an unusable proc root is an error.
//!
//! ```no_run
//! let snapshot = nodeguard_collect::collect(&nodeguard_collect::CollectOptions::default())?;
//! for c in &snapshot.containers {
//!     println!("{} {:?} {} pids", c.id, c.runtime, c.pids.len());
//! }
//! # Ok::<(), nodeguard_collect::Error>(())
//! ```
//!
//! The building blocks are public and mostly pure: [`cgroup`] (attribution from cgroup
//! text), [`limits`] (cgroup limit files), [`mountinfo`] (overlay layers), [`process`]
//! (procfs parsers), [`layer`] (symlink-safe lookup inside layer directories).

mod bounded_read;
pub mod cgroup;
mod collect;
pub mod confinement;
mod containers;
mod error;
mod exec_reuse;
pub mod held;
pub mod layer;
pub mod limits;
mod mount_roots;
pub mod mountinfo;
mod pass;
pub mod process;
pub mod procfs;
pub mod runtime;
pub mod script;

pub use cgroup::{attribute, attribute_path, attribute_text, parse_cgroup_file, ContainerRef};
pub use collect::{resolve_host_root, DEFAULT_CAP_LAST_CAP};
pub use error::Error;
pub use layer::FileIdentity;
pub use limits::{detect_layout, CgroupLayout, LimitsReader};
pub use mount_roots::KeptMountNamespaces;
pub use mountinfo::{container_root, parse_mountinfo};
pub use pass::PassPhases;

use nodeguard_model::{Container, Namespaces, Process, ScanStats};
use std::path::{Path, PathBuf};

/// Where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectOptions {
    /// The proc filesystem: `/proc`, or the host's `/proc` in a DaemonSet with `hostPID`.
    pub proc_root: PathBuf,
    /// The host's cgroup filesystem: `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
    /// Where host paths (overlay `lowerdir`/`upperdir`) are reachable: `<proc_root>/1/root`
    /// by default. Pass `/` when the agent shares the host's mount namespace and may not
    /// follow pid 1's root link.
    pub host_root: PathBuf,
}

impl CollectOptions {
    /// Options for a proc root, the others derived: `/sys/fs/cgroup`, `<proc_root>/1/root`.
    pub fn with_proc_root(proc_root: impl AsRef<Path>) -> CollectOptions {
        let proc_root = proc_root.as_ref().to_path_buf();
        CollectOptions {
            host_root: proc_root.join("1/root"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            proc_root,
        }
    }
}

impl Default for CollectOptions {
    fn default() -> CollectOptions {
        CollectOptions::with_proc_root("/proc")
    }
}

/// Everything one pass saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Sorted by pid (kernel threads included, flagged).
    pub processes: Vec<CollectedProcess>,
    /// Sorted by id; `pod` is `None` (the Kubernetes watch fills it).
    pub containers: Vec<Container>,
    /// `processes_seen` counts the processes reported (kernel threads included);
    /// vanished and denied ones are counted apart. `errors` by kind: `proc`, `cgroup`,
    /// `mountinfo`, `layer`.
    pub stats: ScanStats,
    pub warnings: Vec<String>,
    /// `<proc_root>/sys/kernel/cap_last_cap` ([`DEFAULT_CAP_LAST_CAP`] and a warning when
    /// unreadable).
    pub cap_last_cap: u32,
    /// Namespaces of pid 1 (all `None`, with a warning, when unreadable).
    pub host_namespaces: Namespaces,
    /// The host's capability bounding set: pid 1's, else the union of the host processes'
    /// (see [`runtime::host_bounding`]); `None` when no host process showed one.
    pub host_bounding: Option<u64>,
    /// Processes whose command line, namespaces, cgroup attribution and container root were
    /// taken from an earlier full read by the same [`Collector`] rather than read again.
    pub processes_reused: u64,
    /// Of those, the processes read the short way because exec events were watched and
    /// complete (`status` and the `exe` link only; see [`Collector::watch_execs`]).
    pub processes_watched: u64,
}

/// One process and the cache key of its executable.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectedProcess {
    /// `sha256`, `sha512`, `hash_error` are left `None` for the hasher.
    pub process: Process,
    /// The identity of the file the executable is: the layer file when it was found in the
    /// container's overlay layers (shared by every container of the image), else the stat of
    /// `/proc/PID/exe`. `None` for kernel threads, zombies and races.
    pub exe_identity: Option<FileIdentity>,
    /// The file of `process.script`, as the process sees it (to hash it through
    /// [`script::open_script`]).
    pub script_identity: Option<FileIdentity>,
}

/// Collects processes and containers under `opts`, reading every process in full. Fails
/// only when the proc root itself cannot be opened or listed.
pub fn collect(opts: &CollectOptions) -> Result<Snapshot, Error> {
    collect::collect(opts)
}

/// [`collect`] for the given pids only (an exec-driven pass): the processes that still exist
/// and the containers they belong to, each read in full. Fails only when the proc root
/// cannot be opened.
pub fn collect_pids(opts: &CollectOptions, pids: &[i32]) -> Result<Snapshot, Error> {
    collect::collect_pids(opts, pids)
}

/// [`collect_pids`] for `pids` and the processes held at their exec (`held`, see [`held`]):
/// those are read from what was captured while they ran, so a process that lived for a
/// millisecond is read as it was. Their executables are hashed from the descriptors
/// [`held::HeldProcess::into_parts`] gives beside the handles.
pub fn collect_held(
    opts: &CollectOptions,
    pids: &[i32],
    held: Vec<process::PidDir>,
) -> Result<Snapshot, Error> {
    collect::collect_held(opts, pids, held, None)
}

/// Collects again and again, reading in full only what is new or due.
///
/// A process is known by its pid and start time (field 22 of `/proc/PID/stat`; a pid reused
/// by another process has another start time) and by what `execve` replaces
/// ([`process::ExecIdentity`]: the `exe` link and the file it points at, `comm`, the image
/// addresses in `stat`; exec keeps pid and start time). While those hold, a pass reads only
/// `stat`, `status` (ids, capabilities, `no_new_privs`, seccomp: a process changes these on
/// itself without an exec) and the `exe` link (a deleted executable) with its stat; command
/// line, namespaces, cgroup attribution, container root and the executable's layer come from
/// the last full read. What does change without an exec — a process moved to another cgroup,
/// `setns`/`unshare`, an `argv` rewritten in place — is caught by a full read of every process
/// at least once in [`Collector::FULL_READ_EVERY`] passes (in turns by pid, so each pass reads
/// about that fraction in full). Container limits are read once per container each pass.
/// Entries of processes that are gone are dropped at every pass, so memory follows what runs.
///
/// ```no_run
/// let mut collector = nodeguard_collect::Collector::new(Default::default());
/// let cold = collector.collect()?;
/// let warm = collector.collect()?; // re-reads only what can change
/// # Ok::<(), nodeguard_collect::Error>(())
/// ```
#[derive(Debug)]
pub struct Collector {
    options: CollectOptions,
    reuse: pass::Reuse,
    /// What exec reads keep (see [`Collector::collect_held`]).
    exec: exec_reuse::ExecReuse,
}

impl Collector {
    /// Passes within which every process is read in full at least once.
    pub const FULL_READ_EVERY: u32 = 6;
    /// The most `/proc/PID` handles kept open between passes.
    pub const DIR_BUDGET_MAX: usize = 8192;

    pub fn new(options: CollectOptions) -> Collector {
        Collector::with_full_read_every(options, Collector::FULL_READ_EVERY)
    }

    /// A collector that reads every process in full at least once in `passes` passes (1:
    /// always, like [`collect`]).
    pub fn with_full_read_every(options: CollectOptions, passes: u32) -> Collector {
        let mut reuse = pass::Reuse::new(passes);
        reuse.set_dir_budget(default_dir_budget());
        Collector {
            options,
            reuse,
            exec: exec_reuse::ExecReuse::default(),
        }
    }

    /// Keeps the handles of at most `handles` processes open between passes (a `/proc/PID`
    /// directory and its `status`: two descriptors each), and cgroup limit files for at most
    /// a quarter as many (default: half of the open-file limit above a reserve, at most
    /// [`Collector::DIR_BUDGET_MAX`] processes). Processes beyond it are opened by path each
    /// pass and never read the short way.
    pub fn set_dir_budget(&mut self, handles: usize) {
        self.reuse.set_dir_budget(handles);
    }

    /// The mount namespaces exec reads keep roots for, to share with the exec holder
    /// ([`held::Holder::kept_mount_namespaces_slot`]).
    pub fn kept_mount_namespaces(&self) -> KeptMountNamespaces {
        self.exec.roots.clone()
    }

    /// `/proc/PID` handles kept open now.
    pub fn held_dirs(&self) -> usize {
        self.reuse.held_dirs()
    }

    /// Whether an exec event source will tell [`Collector::execs_seen`] of every exec (and
    /// [`Collector::execs_lost`] of every loss). While it does, a known process read through
    /// its kept handle is read the short way: `status` and the `exe` link only. Turning it
    /// on counts as a loss: the first pass after it re-checks every process.
    pub fn watch_execs(&mut self, on: bool) {
        self.reuse.watch_execs(on);
    }

    /// While exec events are watched and none was lost, each process is read in full at
    /// least once in `passes` passes instead of the number given at construction. A full read
    /// is what sees the changes no exec announces and `status` does not show: a move to
    /// another cgroup, `setns`/`unshare`, a rewritten `argv`. The daemon stretches it to a
    /// fixed time (see `nodeguard_daemon`), so at short intervals those show later than the
    /// next few passes, and exec-driven changes still show at once.
    pub fn set_full_read_every_watched(&mut self, passes: u32) {
        self.reuse.set_full_read_every_watched(passes);
    }

    /// These processes exec'd: the next pass reads them in full.
    pub fn execs_seen(&mut self, pids: &[i32]) {
        self.reuse.execs_seen(pids);
    }

    /// Exec events were lost: the next pass re-checks every process's exec identity
    /// (`stat`, the `exe` link and its stat) as if no events were watched.
    pub fn execs_lost(&mut self) {
        self.reuse.execs_lost();
    }

    pub fn options(&self) -> &CollectOptions {
        &self.options
    }

    /// One pass (see [`Collector`]). Fails only when the proc root itself cannot be opened
    /// or listed; the kept entries are then left as they were.
    pub fn collect(&mut self) -> Result<Snapshot, Error> {
        let snapshot = collect::collect_with(&self.options, None, &mut self.reuse)?;
        self.exec.full_pass_done(
            snapshot.cap_last_cap,
            &snapshot.host_namespaces,
            &snapshot.containers,
        );
        Ok(snapshot)
    }

    /// [`collect_held`] as an exec read of this collector: it costs as much as the processes
    /// read, not their containers. The host's facts (`cap_last_cap`, pid 1's namespaces) and
    /// the containers the last [`Collector::collect`] built are taken from it (with the
    /// exec'd pids); a container it did not see is built from the read. Container roots are
    /// kept per mount namespace and parsed again only when that namespace's mount table
    /// changed (procfs marks an open `mountinfo` when it does), and executables' layer
    /// lookups are kept across reads (bounded). Before the first pass, or for a new
    /// container, the read is a full [`collect_held`].
    pub fn collect_held(
        &mut self,
        pids: &[i32],
        held: Vec<process::PidDir>,
    ) -> Result<Snapshot, Error> {
        collect::collect_held(&self.options, pids, held, Some(&mut self.exec))
    }

    /// `mountinfo` tables exec reads of this collector parsed so far: once per mount
    /// namespace, and again after its mounts changed.
    pub fn exec_mountinfo_parses(&self) -> u64 {
        self.exec.mountinfo_parses()
    }

    /// Where the last pass's time went.
    pub fn last_phases(&self) -> PassPhases {
        self.reuse.phases
    }

    /// Processes kept for the next pass.
    pub fn remembered(&self) -> usize {
        self.reuse.processes()
    }
}

/// Processes whose handles fit in half the open-file limit left after a reserve for
/// everything else (sockets, files hashed, walks): two descriptors each, and the limit files
/// kept beside them (an eighth more); at most [`Collector::DIR_BUDGET_MAX`]; 0 when the
/// limit is unknown.
fn default_dir_budget() -> usize {
    const RESERVE: u64 = 512;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    let spare = limit.rlim_cur.saturating_sub(RESERVE) / 2 / 2;
    usize::try_from(spare).map_or(Collector::DIR_BUDGET_MAX, |n| {
        n.min(Collector::DIR_BUDGET_MAX)
    })
}
