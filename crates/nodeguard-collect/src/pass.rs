//! What one pass over the proc root shares with its parts and keeps for the next: the
//! log of warnings and error counts, the containers seen while reading, the host root, and
//! [`Reuse`] (what the previous pass found, kept open or remembered).

use crate::cgroup::ContainerRef;
use crate::layer::{FileIdentity, HostRoot, Located};
use crate::limits::KeptFiles;
use crate::mountinfo::ContainerRoot;
use crate::process::{Failure, PidDir, Remembered};
use crate::CollectOptions;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nodeguard_model::{DeviceAccess, ScanStats};
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

/// Warnings and error counts gathered during one collection.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub(crate) stats: ScanStats,
    pub(crate) warnings: Vec<String>,
    pub(crate) seen: HashSet<String>,
}

impl Log {
    pub(crate) fn error(&mut self, kind: &str, message: String) {
        self.stats.count_error(kind);
        self.warn(message);
    }

    /// A warning, once per distinct text.
    pub(crate) fn warn(&mut self, message: String) {
        if self.seen.insert(message.clone()) {
            self.warnings.push(message);
        }
    }

    /// Adds what another log gathered (a reader thread's).
    pub(crate) fn absorb(&mut self, other: Log) {
        let stats = other.stats;
        self.stats.processes_vanished += stats.processes_vanished;
        self.stats.processes_denied += stats.processes_denied;
        for (kind, n) in stats.errors {
            *self.stats.errors.entry(kind).or_insert(0) += n;
        }
        for warning in other.warnings {
            self.warn(warning);
        }
    }

    pub(crate) fn failure(&mut self, failure: Failure) {
        match failure {
            Failure::Vanished => self.stats.processes_vanished += 1,
            Failure::Denied => self.stats.processes_denied += 1,
            Failure::Error(e) => self.error("proc", e.to_string()),
        }
    }
}

/// What is known about one container while processes are read.
pub(crate) struct ContainerSeed {
    pub(crate) reference: ContainerRef,
    /// Index into the process list of the first (lowest-pid) process.
    pub(crate) first: usize,
    pub(crate) pids: Vec<i32>,
    pub(crate) root: Option<ContainerRoot>,
}

/// The result of a scoped thread; its panic, if it panicked, goes on in the caller.
pub(crate) fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Whether `pid` under the proc root is a kernel thread (pid 2 is kthreadd on a host's proc,
/// but an ordinary process in a container's pid namespace).
pub(crate) fn is_kernel_thread_pid(proc_fd: &OwnedFd, pid: i32) -> bool {
    let mut buf = Vec::new();
    PidDir::open(proc_fd, pid)
        .and_then(|d| d.read("stat", &mut buf, 4096))
        .ok()
        .and_then(|()| crate::process::parse_stat(&buf).ok())
        .is_some_and(|s| s.flags & crate::process::PF_KTHREAD != 0)
}

/// The host root; when it is the default `<proc>/1/root` and pid 1 may not be followed,
/// kthreadd's root (the initial mount namespace's `/`).
pub(crate) fn open_host_root(opts: &CollectOptions, log: &mut Log) -> Option<HostRoot> {
    let err = match HostRoot::open(&opts.host_root) {
        Ok(h) => return Some(h),
        Err(e) => e,
    };
    if opts.host_root == opts.proc_root.join("1/root") {
        let fallback = opts.proc_root.join("2/root");
        let kthreadd = nix::fcntl::open(
            &opts.proc_root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .is_ok_and(|fd| is_kernel_thread_pid(&fd, 2));
        if kthreadd {
            if let Ok(h) = HostRoot::open(&fallback) {
                log.warn(format!(
                    "host root {} not reachable ({err}); using {} (kthreadd's root)",
                    opts.host_root.display(),
                    fallback.display()
                ));
                return Some(h);
            }
        }
    }
    log.error(
        "layer",
        format!(
            "host root {} not reachable ({err}): executables' layers are unknown",
            opts.host_root.display()
        ),
    );
    None
}

/// What one pass keeps for the next: per pid, what the last full read of the process found
/// ([`Remembered`]); per (container, executable path, running file), where the executable
/// was found in the container's layers. Only what the last pass saw is kept, so the cache is
/// bounded by the processes and executables running now, and a gone process's entry is
/// dropped at the next pass.
#[derive(Debug)]
pub(crate) struct Reuse {
    pub(crate) processes: HashMap<i32, Arc<Remembered>>,
    pub(crate) located: LocatedCache,
    /// Passes made so far.
    pub(crate) pass: u64,
    /// Each process is read in full at least once in this many passes.
    pub(crate) full_read_every: u64,
    /// The same while exec events are watched and complete (see
    /// [`crate::Collector::set_full_read_every_watched`]).
    pub(crate) full_read_every_watched: u64,
    /// An open `/proc/PID` (and, once read through it, its `status`: two descriptors) per
    /// process the last pass read, at most `dir_budget` of them.
    pub(crate) dirs: HashMap<i32, PidDir>,
    pub(crate) dir_budget: usize,
    /// Whether an exec event source reports every exec to [`Reuse::execd`].
    pub(crate) execs_watched: bool,
    /// Events may have been lost (or were not watched) since the last pass began.
    pub(crate) execs_lost: bool,
    /// Pids that exec'd since the last pass began.
    pub(crate) execd: HashSet<i32>,
    /// Cgroup limit files the last pass read, open, per reader slot.
    pub(crate) limit_files: [KeptFiles; LIMIT_READERS],
    /// What each container's devices cgroup allowed when last read (see [`read_devices`]).
    pub(crate) devices: HashMap<String, DeviceAccess>,
    /// Where the last pass's time went.
    pub(crate) phases: PassPhases,
}

/// How long the parts of one pass took, wall time: to see where a slow pass spends it (the
/// scan logs them at debug level). Not part of any report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassPhases {
    /// Listing the proc root and reading what every pass reads once (pid 1's namespaces).
    pub list: Duration,
    /// Reading the processes, on the reader threads.
    pub read: Duration,
    /// Attributing containers and reading their cgroup limits, and finding the layer each
    /// container executable comes from (beside it, on another thread, with reader threads
    /// to spare).
    pub containers: Duration,
    /// Of that, the layers.
    pub layers: Duration,
    /// Processes read in full, kernel threads aside (the others reused an earlier full
    /// read).
    pub read_in_full: usize,
}

/// The most cgroup limit files kept open between passes (about four per container).
pub(crate) const LIMIT_FILES_MAX: usize = 1024;

/// Pids remembered as exec'd between passes; past this many the next pass re-checks all.
pub(crate) const EXECD_MAX: usize = 1 << 16;

impl Reuse {
    pub(crate) fn new(full_read_every: u32) -> Reuse {
        Reuse {
            processes: HashMap::new(),
            located: HashMap::new(),
            pass: 0,
            full_read_every: u64::from(full_read_every.max(1)),
            full_read_every_watched: u64::from(full_read_every.max(1)),
            dirs: HashMap::new(),
            dir_budget: 0,
            execs_watched: false,
            execs_lost: true,
            execd: HashSet::new(),
            limit_files: Default::default(),
            devices: HashMap::new(),
            phases: PassPhases::default(),
        }
    }

    pub(crate) fn processes(&self) -> usize {
        self.processes.len()
    }

    pub(crate) fn held_dirs(&self) -> usize {
        self.dirs.len()
    }

    pub(crate) fn set_dir_budget(&mut self, budget: usize) {
        self.dir_budget = budget;
        if self.dirs.len() > budget {
            self.dirs.clear();
        }
        let max = self.limit_files_max();
        for kept in &mut self.limit_files {
            if kept.len() > max {
                kept.clear();
            }
        }
    }

    /// Cgroup limit files kept open between passes by each reader slot: together an eighth
    /// of the descriptors the process handles may take, at most [`LIMIT_FILES_MAX`].
    pub(crate) fn limit_files_max(&self) -> usize {
        (self.dir_budget / 4).min(LIMIT_FILES_MAX) / LIMIT_READERS
    }

    pub(crate) fn watch_execs(&mut self, on: bool) {
        if on != self.execs_watched {
            self.execs_watched = on;
            self.execs_lost = true;
        }
    }

    pub(crate) fn execs_seen(&mut self, pids: &[i32]) {
        if self.execd.len() + pids.len() > EXECD_MAX {
            self.execs_lost = true;
            self.execd.clear();
        } else {
            self.execd.extend(pids);
        }
    }

    pub(crate) fn execs_lost(&mut self) {
        self.execs_lost = true;
    }

    pub(crate) fn set_full_read_every_watched(&mut self, passes: u32) {
        self.full_read_every_watched = u64::from(passes.max(1));
    }
}

/// Where executables were found in their containers' layers, by the running file's identity
/// (a `Copy` key: a lookup allocates nothing), then container and path.
pub(crate) type LocatedCache = HashMap<FileIdentity, Vec<LocatedEntry>>;

#[derive(Debug)]
pub(crate) struct LocatedEntry {
    pub(crate) container: String,
    pub(crate) exe: Vec<u8>,
    pub(crate) located: Located,
    /// Looked up or used by the pass under way.
    pub(crate) used: bool,
    /// The lookup failed: not kept for the next pass.
    pub(crate) failed: bool,
}

/// Readers of cgroup limit files, each on its own thread when reader threads are used: a
/// container goes to a slot by its id (a fixed hash), so each slot's reader finds the
/// handles it kept for the same containers last pass.
pub(crate) const LIMIT_READERS: usize = 2;
