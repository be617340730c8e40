//! One pass over the proc root: processes, then the containers they belong to.

use crate::cgroup::ContainerRef;
use crate::layer::{locate, FileIdentity, HostRoot, Located};
use crate::limits::{container_paths, detect_layout, CgroupLayout, KeptFiles, LimitsReader};
use crate::mountinfo::{container_root, ContainerRoot, WritableMount};
use crate::process::{
    read_process, shared_with_host, CgroupMemo, ExeLinks, Failure, PidDir, RawProcess, Remembered,
};
use crate::runtime::{
    first_started_per_pod, host_bounding, looks_like_sandbox, runtime_from_ancestors,
};
use crate::script::{locate_script, FoundScript};
use crate::{CollectOptions, CollectedProcess, Error, Snapshot};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nodeguard_model::{
    escape_path, CgroupVersion, Confinement, Container, DeviceAccess, Layer, MountRef, Namespaces,
    Process, Runtime, ScanStats, Script,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `cap_last_cap` when the kernel does not say (Linux 5.9+: CAP_CHECKPOINT_RESTORE).
pub const DEFAULT_CAP_LAST_CAP: u32 = 40;

/// Reading mountinfo stops here; a container with more mounts than this is not normal.
const MOUNTINFO_MAX: usize = 4 << 20;

/// Warnings and error counts gathered during one collection.
#[derive(Debug, Default)]
struct Log {
    stats: ScanStats,
    warnings: Vec<String>,
    seen: HashSet<String>,
}

impl Log {
    fn error(&mut self, kind: &str, message: String) {
        self.stats.count_error(kind);
        self.warn(message);
    }

    /// A warning, once per distinct text.
    fn warn(&mut self, message: String) {
        if self.seen.insert(message.clone()) {
            self.warnings.push(message);
        }
    }

    /// Adds what another log gathered (a reader thread's).
    fn absorb(&mut self, other: Log) {
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

    fn failure(&mut self, failure: Failure) {
        match failure {
            Failure::Vanished => self.stats.processes_vanished += 1,
            Failure::Denied => self.stats.processes_denied += 1,
            Failure::Error(e) => self.error("proc", e.to_string()),
        }
    }
}

fn list_pids(proc_root: &Path) -> Result<Vec<i32>, Error> {
    let proc_error = |source| Error::ProcRoot {
        path: proc_root.to_path_buf(),
        source,
    };
    // Read with `getdents64` into one buffer: no allocation per entry (std's `read_dir`
    // makes two), which counts with a thousand processes listed every pass.
    let mut dir = nix::dir::Dir::open(
        proc_root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| proc_error(e.into()))?;
    let mut pids = Vec::with_capacity(1024);
    for entry in dir.iter() {
        // A listing cut short would hide processes: the pass fails (and says so).
        let entry = entry.map_err(|e| proc_error(e.into()))?;
        if let Some(pid) = std::str::from_utf8(entry.file_name().to_bytes())
            .ok()
            .and_then(|n| n.parse::<i32>().ok())
            .filter(|p| *p > 0)
        {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

fn read_cap_last_cap(proc_root: &Path, log: &mut Log) -> u32 {
    let path = proc_root.join("sys/kernel/cap_last_cap");
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(v) if v < 64 => v,
            _ => {
                log.warn(format!(
                    "{}: unexpected value {:?}, assuming {DEFAULT_CAP_LAST_CAP}",
                    path.display(),
                    text.trim()
                ));
                DEFAULT_CAP_LAST_CAP
            }
        },
        Err(e) => {
            log.warn(format!(
                "{}: {e}, assuming {DEFAULT_CAP_LAST_CAP}",
                path.display()
            ));
            DEFAULT_CAP_LAST_CAP
        }
    }
}

/// What is known about one container while processes are read.
struct ContainerSeed {
    reference: ContainerRef,
    /// Index into the process list of the first (lowest-pid) process.
    first: usize,
    pids: Vec<i32>,
    root: Option<ContainerRoot>,
}

/// Runs of pids per reader thread (see [`read_all`]).
const RUNS_PER_THREAD: usize = 4;

/// Reading processes is syscall-bound (about 20 per process); above this many pids the work
/// is split over threads, one per core.
const PIDS_PER_THREAD: usize = 200;

/// The processes of a contiguous run of pids, with the containers they belong to.
#[derive(Default)]
struct Chunk {
    raws: Vec<RawProcess>,
    seeds: BTreeMap<String, ContainerSeed>,
    log: Log,
    /// Handles opened by this pass on processes it read, to keep for the next one.
    opened: Vec<PidDir>,
    /// Pids read through the handle kept from an earlier pass (kept on).
    held_read: Vec<i32>,
}

fn read_chunk(
    proc_fd: &OwnedFd,
    pids: &[i32],
    host_namespaces: &Namespaces,
    known: &Known,
    budget: usize,
) -> Chunk {
    let mut chunk = Chunk::default();
    // `stat`, `status`, `cmdline` and `cgroup` fit in a page; each read zero-fills the spare
    // capacity it reads into, so a buffer grown by a container's `mountinfo` is kept apart.
    let mut buf = Vec::with_capacity(4096);
    let mut mountinfo = Vec::new();
    let mut kthread_ns = None;
    let mut cgroups = CgroupMemo::default();
    let mut exe_links = ExeLinks::default();
    let mut room = budget;
    for &pid in pids {
        // A handle kept from an earlier pass reaches only the process it was opened on: when
        // that one is gone the pid may be another process's already, so it is opened afresh.
        let held = known.dir(pid);
        let mut fresh = None;
        let mut result = held.map(|dir| {
            read_process(
                dir,
                &mut buf,
                &mut kthread_ns,
                &mut cgroups,
                &mut exe_links,
                known.get(pid),
                known.execs_watched,
            )
        });
        if held.is_none() || matches!(result, Some(Err(Failure::Vanished))) {
            let dir = match PidDir::open(proc_fd, pid) {
                Ok(d) => d,
                Err(f) => {
                    chunk.log.failure(f);
                    continue;
                }
            };
            // Not the handle the known entry was read through: its start time decides.
            let known_here = if held.is_none() { known.get(pid) } else { None };
            result = Some(read_process(
                &dir,
                &mut buf,
                &mut kthread_ns,
                &mut cgroups,
                &mut exe_links,
                known_here,
                false,
            ));
            fresh = Some(dir);
        }
        let mut raw = match result {
            Some(Ok(r)) => r,
            Some(Err(f)) => {
                chunk.log.failure(f);
                continue;
            }
            None => continue,
        };
        let dir = match (&fresh, held) {
            (Some(d), _) => d,
            (None, Some(d)) => d,
            (None, None) => continue,
        };
        for (kind, note) in raw.notes.drain(..) {
            chunk.log.error(kind, note);
        }
        raw.process.namespaces.shared_with_host =
            shared_with_host(&raw.process.namespaces, host_namespaces);
        if let Some(reference) = &raw.container {
            let seed = chunk
                .seeds
                .entry(reference.cgroup.id.clone())
                .or_insert_with(|| ContainerSeed {
                    reference: ContainerRef::clone(reference),
                    first: chunk.raws.len(),
                    pids: Vec::new(),
                    root: None,
                });
            seed.pids.push(pid);
            // The root filesystem, from the first process that shows a mount at `/`. A
            // chrooted one does not: the next process may, and failing that the host's
            // mount table does (`roots_from_host_mounts`).
            // What this process showed before is reused until it execs.
            if seed.root.is_none() {
                let remembered = raw.remember.as_ref().and_then(|r| r.mount_root.get());
                match remembered {
                    Some(root) => seed.root = root.clone(),
                    None => match dir.read_to_end("mountinfo", &mut mountinfo, MOUNTINFO_MAX) {
                        Ok(()) => {
                            seed.root = container_root(&mountinfo);
                            if let Some(r) = &raw.remember {
                                let _ = r.mount_root.set(seed.root.clone());
                            }
                        }
                        Err(Failure::Error(e)) => chunk.log.error("mountinfo", e.to_string()),
                        Err(_) => {}
                    },
                }
            }
        }
        chunk.raws.push(raw);
        if held.is_some() && fresh.is_none() {
            chunk.held_read.push(pid);
        }
        if let Some(dir) = fresh {
            if room > 0 {
                room -= 1;
                chunk.opened.push(dir);
            }
        }
    }
    chunk
}

/// Reads every pid (sorted), on several threads when there are many, and merges the runs
/// back in pid order.
fn read_all(
    proc_fd: &OwnedFd,
    pids: &[i32],
    host_namespaces: &Namespaces,
    known: &Known,
    log: &mut Log,
    threads: usize,
    budget: usize,
) -> (Vec<RawProcess>, BTreeMap<String, ContainerSeed>, Chunk) {
    let chunks: Vec<Chunk> = if threads <= 1 || pids.len() < 2 {
        vec![read_chunk(proc_fd, pids, host_namespaces, known, budget)]
    } else {
        // Runs of pids are not equal work (kernel threads sit at the low pids, a full read's
        // turn costs a warm read's several times): each thread takes the next of several
        // runs per thread until none is left, and the runs are merged back in pid order.
        let runs: Vec<&[i32]> = pids
            .chunks(pids.len().div_ceil(threads * RUNS_PER_THREAD))
            .collect();
        let share = budget / runs.len();
        let next = AtomicUsize::new(0);
        let mut done: Vec<(usize, Chunk)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(run) = runs.get(i) else { break };
                            mine.push((i, read_chunk(proc_fd, run, host_namespaces, known, share)));
                        }
                        mine
                    })
                })
                .collect();
            handles.into_iter().flat_map(joined).collect()
        });
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, chunk)| chunk).collect()
    };
    let mut raws = Vec::with_capacity(pids.len());
    let mut seeds: BTreeMap<String, ContainerSeed> = BTreeMap::new();
    // Only the handles of the pass (`opened`, `held_read`) are gathered here.
    let mut handles = Chunk::default();
    for mut chunk in chunks {
        let offset = raws.len();
        raws.extend(chunk.raws);
        handles.opened.append(&mut chunk.opened);
        handles.held_read.append(&mut chunk.held_read);
        for (id, mut seed) in chunk.seeds {
            match seeds.get_mut(&id) {
                Some(existing) => {
                    existing.pids.append(&mut seed.pids);
                    if existing.root.is_none() {
                        existing.root = seed.root;
                    }
                }
                None => {
                    seed.first += offset;
                    seeds.insert(id, seed);
                }
            }
        }
        log.absorb(chunk.log);
    }
    (raws, seeds, handles)
}

/// The result of a scoped thread; its panic, if it panicked, goes on in the caller.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Reader threads for `pids` processes: one per core, none for a few hundred.
fn reader_threads(pids: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(pids.div_ceil(PIDS_PER_THREAD)).clamp(1, 8)
}

/// Whether `pid` under the proc root is a kernel thread (pid 2 is kthreadd on a host's proc,
/// but an ordinary process in a container's pid namespace).
fn is_kernel_thread_pid(proc_fd: &OwnedFd, pid: i32) -> bool {
    let mut buf = Vec::new();
    PidDir::open(proc_fd, pid)
        .and_then(|d| d.read("stat", &mut buf, 4096))
        .ok()
        .and_then(|()| crate::process::parse_stat(&buf).ok())
        .is_some_and(|s| s.flags & crate::process::PF_KTHREAD != 0)
}

/// Containers none of whose processes show a mount at `/` — each of them chrooted, so the
/// kernel hides every mount above its root — get their root from the host's mount table:
/// the overlay whose device is the one `/proc/PID/root` lives on. Without this a process
/// could hide its container's image and writable layers from the walk (and its drift) by
/// chrooting into a subdirectory.
///
/// The runtime may have mounted the overlay in a mount namespace of its own rather than
/// the host's; then the mount table of the container's monitor (the first host process
/// above it: shim or conmon, which lives where the runtime mounts) is searched too.
fn roots_from_host_mounts(
    proc_fd: &OwnedFd,
    proc_root: &Path,
    raws: &[RawProcess],
    seeds: &mut BTreeMap<String, ContainerSeed>,
    log: &mut Log,
) {
    use std::os::unix::fs::MetadataExt;
    if seeds.values().all(|s| s.root.is_some()) {
        return;
    }
    // The host's mount namespace: pid 1's, or kthreadd's when pid 1 may not be read.
    let mut buf = Vec::new();
    let host_mounts = [1, 2].into_iter().find_map(|pid| {
        if pid == 2 && !is_kernel_thread_pid(proc_fd, 2) {
            return None;
        }
        PidDir::open(proc_fd, pid)
            .and_then(|d| d.read_to_end("mountinfo", &mut buf, MOUNTINFO_MAX))
            .ok()
            .map(|()| crate::mountinfo::parse_mountinfo(&buf).0)
    });
    let Some(host_mounts) = host_mounts else {
        log.error(
            "mountinfo",
            "the host's mount table is unreadable: roots of chrooted containers stay unknown"
                .to_string(),
        );
        return;
    };
    for (id, seed) in seeds.iter_mut().filter(|(_, s)| s.root.is_none()) {
        let dev = seed.pids.iter().find_map(|pid| {
            std::fs::metadata(proc_root.join(pid.to_string()).join("root"))
                .ok()
                .map(|m| m.dev())
        });
        let Some(dev) = dev else { continue };
        let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
        let is_ours = |m: &&crate::mountinfo::MountInfo| {
            u64::from(m.major) == major && u64::from(m.minor) == minor && m.fstype == "overlay"
        };
        let mut found = host_mounts.iter().rev().find(is_ours).cloned();
        if found.is_none() {
            if let Some(monitor) = crate::runtime::monitor_pid(raws, seed.first, id) {
                let mut buf = Vec::new();
                found = PidDir::open(proc_fd, monitor)
                    .and_then(|d| d.read_to_end("mountinfo", &mut buf, MOUNTINFO_MAX))
                    .ok()
                    .and_then(|()| {
                        crate::mountinfo::parse_mountinfo(&buf)
                            .0
                            .iter()
                            .rev()
                            .find(is_ours)
                            .cloned()
                    });
            }
        }
        if let Some(mount) = found {
            log.warn(format!(
                "container {}: its processes are chrooted; root found in the host's mounts by device {major}:{minor}",
                &id[..12.min(id.len())]
            ));
            seed.root = Some(ContainerRoot {
                rootfs: nodeguard_model::RootFs {
                    fstype: mount.fstype.clone(),
                    layers: crate::mountinfo::overlay_layers(&mount.super_options),
                },
                // Chrooted processes see their mounts apart from the host's: none known.
                writable_mounts: Vec::new(),
                // The host's table, not the container's: it says nothing of its masks.
                masked_paths: None,
            });
        } else {
            log.error(
                "mountinfo",
                format!(
                    "container {}: root filesystem unknown (no process shows a mount at /, and device {major}:{minor} is no overlay in the host's mounts)",
                    &id[..12.min(id.len())]
                ),
            );
        }
    }
}

/// The namespaces of pid 1. When they cannot be read (some sandboxes refuse even root),
/// kthreadd's: kernel threads live in the initial namespaces, which are the host's.
fn host_namespaces(proc_fd: &OwnedFd, proc_root: &Path, log: &mut Log) -> Namespaces {
    let why = match PidDir::open(proc_fd, 1).and_then(|d| d.namespaces()) {
        Ok(ns) if ns != Namespaces::default() => return ns,
        Ok(_) | Err(Failure::Vanished) => "no pid 1 or no ns links".to_string(),
        Err(Failure::Denied) => "permission denied".to_string(),
        Err(Failure::Error(e)) => e.to_string(),
    };
    if is_kernel_thread_pid(proc_fd, 2) {
        if let Ok(ns) = PidDir::open(proc_fd, 2).and_then(|d| d.namespaces()) {
            if ns != Namespaces::default() {
                log.warn(format!(
                    "host namespaces: pid 1 under {} unreadable ({why}); using kernel thread pid 2's (the initial namespaces)",
                    proc_root.display()
                ));
                return ns;
            }
        }
    }
    log.warn(format!(
        "host namespaces (pid 1 under {}) unreadable: {why}; shared_with_host left empty",
        proc_root.display()
    ));
    Namespaces::default()
}

/// The path under which host paths are reachable: `opts.host_root`, or kthreadd's root when
/// that is the default `<proc>/1/root` and pid 1 may not be followed. `None` when neither
/// can be opened. Filesystem walks use it to reach image layers the way `collect` does.
pub fn resolve_host_root(opts: &CollectOptions) -> Option<std::path::PathBuf> {
    let mut log = Log::default();
    open_host_root(opts, &mut log).map(|h| h.path().to_path_buf())
}

/// The host root; when it is the default `<proc>/1/root` and pid 1 may not be followed,
/// kthreadd's root (the initial mount namespace's `/`).
fn open_host_root(opts: &CollectOptions, log: &mut Log) -> Option<HostRoot> {
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
    processes: HashMap<i32, Arc<Remembered>>,
    located: LocatedCache,
    /// Passes made so far.
    pass: u64,
    /// Each process is read in full at least once in this many passes.
    full_read_every: u64,
    /// The same while exec events are watched and complete (see
    /// [`crate::Collector::set_full_read_every_watched`]).
    full_read_every_watched: u64,
    /// An open `/proc/PID` (and, once read through it, its `status`: two descriptors) per
    /// process the last pass read, at most `dir_budget` of them.
    dirs: HashMap<i32, PidDir>,
    dir_budget: usize,
    /// Whether an exec event source reports every exec to [`Reuse::execd`].
    execs_watched: bool,
    /// Events may have been lost (or were not watched) since the last pass began.
    execs_lost: bool,
    /// Pids that exec'd since the last pass began.
    execd: HashSet<i32>,
    /// Cgroup limit files the last pass read, open, per reader slot.
    limit_files: [KeptFiles; LIMIT_READERS],
    /// What each container's devices cgroup allowed when last read (see [`read_devices`]).
    devices: HashMap<String, DeviceAccess>,
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
const LIMIT_FILES_MAX: usize = 1024;

/// Pids remembered as exec'd between passes; past this many the next pass re-checks all.
const EXECD_MAX: usize = 1 << 16;

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
    fn limit_files_max(&self) -> usize {
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
    container: String,
    exe: Vec<u8>,
    located: Located,
    /// Looked up or used by the pass under way.
    used: bool,
    /// The lookup failed: not kept for the next pass.
    failed: bool,
}

/// The previous pass's entries as one pass may use them: a process whose turn for a full read
/// has come gets none. Turns go by pid, so about one process in `full_read_every` is read in
/// full each pass rather than all of them in one.
struct Known<'a> {
    processes: &'a HashMap<i32, Arc<Remembered>>,
    pass: u64,
    every: u64,
    dirs: &'a HashMap<i32, PidDir>,
    /// Exec events were watched and complete since the last pass began: a known process
    /// read through its kept handle has not exec'd unless it is in `execd`.
    execs_watched: bool,
    execd: &'a HashSet<i32>,
}

impl Known<'_> {
    fn get(&self, pid: i32) -> Option<&Arc<Remembered>> {
        let turn = (self.pass + u64::from(pid.unsigned_abs())).is_multiple_of(self.every);
        if turn || self.execd.contains(&pid) {
            None
        } else {
            self.processes.get(&pid)
        }
    }

    fn dir(&self, pid: i32) -> Option<&PidDir> {
        self.dirs.get(&pid)
    }
}

/// A full read of every process: what [`crate::collect`] does.
pub(crate) fn collect(opts: &CollectOptions) -> Result<Snapshot, Error> {
    collect_with(opts, None, &mut Reuse::new(1))
}

/// One pass: [`collect`] with a fixed number of reader threads (tests), else
/// [`reader_threads`], reusing and then replacing what the previous pass kept.
pub(crate) fn collect_with(
    opts: &CollectOptions,
    threads: Option<usize>,
    reuse: &mut Reuse,
) -> Result<Snapshot, Error> {
    collect_from(opts, threads, reuse, None)
}

/// [`collect`] restricted to `pids` (the exec'd processes of an event-driven pass): the
/// same full reads, attribution and layers, for those processes and the containers they are
/// in. A pid that is gone is counted as vanished. Everything that needs the whole process
/// table (a bare-id container's runtime from its monitor, the host's bounding set from host
/// processes other than pid 1, the pod's sandbox among several containers) is only as good
/// as the pids given; the caller keeps what the last full pass said about known containers.
pub(crate) fn collect_pids(opts: &CollectOptions, pids: &[i32]) -> Result<Snapshot, Error> {
    collect_held(opts, pids, Vec::new())
}

/// [`collect_pids`] over `pids` and the processes `held` at their exec (`crate::held`):
/// each of those is read through its handle, from what was captured while it ran, so one
/// that has exited since is read as it was. The handles are closed when this returns.
pub(crate) fn collect_held(
    opts: &CollectOptions,
    pids: &[i32],
    held: Vec<PidDir>,
) -> Result<Snapshot, Error> {
    let mut pids: Vec<i32> = pids
        .iter()
        .copied()
        .chain(held.iter().map(|d| d.pid))
        .filter(|p| *p > 0)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    let mut reuse = Reuse::new(1);
    // Read through as kept handles with nothing remembered: a full read of each.
    reuse.dirs.extend(held.into_iter().map(|d| (d.pid, d)));
    collect_from(opts, Some(1), &mut reuse, Some(pids))
}

/// One pass over `only` (sorted) or, when `None`, every pid under the proc root.
fn collect_from(
    opts: &CollectOptions,
    threads: Option<usize>,
    reuse: &mut Reuse,
    only: Option<Vec<i32>>,
) -> Result<Snapshot, Error> {
    let proc_fd: OwnedFd = nix::fcntl::open(
        &opts.proc_root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::ProcRoot {
        path: opts.proc_root.clone(),
        source: e.into(),
    })?;
    let started = Instant::now();
    let pids = match only {
        Some(pids) => pids,
        None => list_pids(&opts.proc_root)?,
    };
    let mut log = Log::default();
    let cap_last_cap = read_cap_last_cap(&opts.proc_root, &mut log);

    let host_namespaces = host_namespaces(&proc_fd, &opts.proc_root, &mut log);

    let listed = Instant::now();
    let threads = threads.unwrap_or_else(|| reader_threads(pids.len()));
    reuse.pass += 1;
    // What the event source says about the time since the last pass began; from now on
    // it speaks about the time since this one began.
    let execs_watched = reuse.execs_watched && !reuse.execs_lost;
    reuse.execs_lost = false;
    let execd = std::mem::take(&mut reuse.execd);
    let budget = reuse.dir_budget.saturating_sub(reuse.dirs.len());
    let known = Known {
        processes: &reuse.processes,
        pass: reuse.pass,
        every: if execs_watched {
            reuse.full_read_every_watched
        } else {
            reuse.full_read_every
        },
        dirs: &reuse.dirs,
        execs_watched,
        execd: &execd,
    };
    let (mut raws, mut seeds, handles) = read_all(
        &proc_fd,
        &pids,
        &host_namespaces,
        &known,
        &mut log,
        threads,
        budget,
    );
    let read = Instant::now();
    let reused = raws.iter().filter(|r| r.reused).count() as u64;
    let watched = raws.iter().filter(|r| r.watched).count() as u64;
    let mut remembered = HashMap::with_capacity(raws.len());
    remembered.extend(
        raws.iter_mut()
            .filter_map(|r| Some((r.process.pid, r.remember.take()?))),
    );
    reuse.processes = remembered;
    // The handles this pass read through stay (the runs were merged in pid order, so
    // `held_read` is sorted), the others are closed; the new ones join them.
    reuse
        .dirs
        .retain(|pid, _| handles.held_read.binary_search(pid).is_ok());
    reuse
        .dirs
        .extend(handles.opened.into_iter().map(|d| (d.pid, d)));
    roots_from_host_mounts(&proc_fd, &opts.proc_root, &raws, &mut seeds, &mut log);

    // Containers (their cgroup limits) and the executables' layers are independent: with
    // reader threads to spare, the layers are looked up beside the containers.
    let keep_max = reuse.limit_files_max();
    let (limit_files, located) = (&mut reuse.limit_files, &mut reuse.located);
    let mut layer_log = Log::default();
    let mut layers_took = Duration::ZERO;
    let mut locate = || {
        let t = Instant::now();
        let found = locate_layers(opts, &seeds, &raws, located, &mut layer_log);
        let outside = outside_image(opts, &seeds, &raws, &found);
        layers_took = t.elapsed();
        (found, outside)
    };
    let (containers, found) = if threads > 1 {
        std::thread::scope(|scope| {
            let layers = scope.spawn(locate);
            let containers =
                build_containers(opts, &seeds, &raws, limit_files, keep_max, true, &mut log);
            let found = joined(layers);
            (containers, found)
        })
    } else {
        let found = locate();
        let containers =
            build_containers(opts, &seeds, &raws, limit_files, keep_max, false, &mut log);
        (containers, found)
    };
    log.absorb(layer_log);
    let mut containers = containers;
    let every = if execs_watched {
        reuse.full_read_every_watched
    } else {
        reuse.full_read_every
    };
    read_devices(
        opts,
        &seeds,
        &raws,
        &mut containers,
        &mut reuse.devices,
        (reuse.pass, every),
        &mut log,
    );
    let processes = attach_layers(raws, found);
    reuse.phases = PassPhases {
        list: listed - started,
        read: read - listed,
        containers: read.elapsed(),
        layers: layers_took,
        read_in_full: processes
            .iter()
            .filter(|p| !p.process.kernel_thread)
            .count()
            .saturating_sub(reused as usize),
    };

    let host_bounding = host_bounding(&processes.iter().map(|p| &p.process).collect::<Vec<_>>());
    let mut stats = log.stats;
    stats.processes_seen = processes.len() as u64;
    stats.kernel_threads = processes.iter().filter(|p| p.process.kernel_thread).count() as u64;
    stats.containers_seen = containers.len() as u64;
    Ok(Snapshot {
        processes,
        containers,
        stats,
        warnings: log.warnings,
        cap_last_cap,
        host_namespaces,
        host_bounding,
        processes_reused: reused,
        processes_watched: watched,
    })
}

/// Readers of cgroup limit files, each on its own thread when reader threads are used: a
/// container goes to a slot by its id (a fixed hash), so each slot's reader finds the
/// handles it kept for the same containers last pass.
const LIMIT_READERS: usize = 2;

/// The slot of a container's limit reads (see [`LIMIT_READERS`]).
fn limit_slot(id: &str) -> usize {
    id.bytes().fold(0usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    }) % LIMIT_READERS
}

/// What was read of one container's cgroup limits.
struct ContainerLimits {
    limits: nodeguard_model::Limits,
    pod_limits: Option<nodeguard_model::Limits>,
    node_allocatable: Option<nodeguard_model::Limits>,
    effective: nodeguard_model::Limits,
    unknown: Vec<String>,
    /// Messages for the log, in the order found.
    problems: Vec<String>,
}

/// The limits of the container `id` whose first process read `file` as its cgroup file: its
/// own, its pod's and the node allocatable above them, and the effective ones.
fn read_container_limits(
    reader: &mut LimitsReader,
    id: &str,
    seed: &ContainerSeed,
    first: &RawProcess,
    file: &crate::cgroup::CgroupFile,
) -> ContainerLimits {
    let reference = &seed.reference;
    let pid = first.process.pid;
    let (own_paths, pod_paths) = container_paths(file, reader.layout(), id);
    let mut problems = Vec::new();
    let mut own = reader.own(&own_paths, pid);
    problems.append(&mut own.problems);
    // A pod container is bounded by its own cgroup and its pod's; the levels above
    // (kubepods: node allocatable; the QoS class) are reported apart.
    let pod_uid = reference.cgroup.pod_uid.as_ref();
    let floor = match (pod_uid, &pod_paths) {
        (None, _) => None,
        (Some(_), Some(pod_paths)) => Some(pod_paths.clone()),
        (Some(_), None) => Some(own_paths.clone()),
    };
    let (mut pod_limits, mut node_allocatable) = (None, None);
    if pod_uid.is_some() {
        if let Some(pod_paths) = &pod_paths {
            let pod = reader.own(pod_paths, pid);
            problems.extend(pod.problems);
            pod_limits = Some(pod.limits);
            node_allocatable = reader.node_allocatable(pod_paths);
        }
    }
    let effective = reader.effective(&own_paths, &own, floor.as_ref());
    problems.extend(effective.problems);
    let hint = if reference.cgroup.relative_to_namespace {
        " (cgroup paths were relative to the agent's cgroup namespace; run it in the host cgroup namespace)"
    } else {
        ""
    };
    ContainerLimits {
        limits: own.limits,
        pod_limits,
        node_allocatable,
        effective: effective.limits,
        unknown: effective.unknown.iter().map(|s| s.to_string()).collect(),
        problems: problems
            .into_iter()
            .map(|problem| format!("container {id}: {problem}{hint}"))
            .collect(),
    }
}

/// The containers of `seeds`, their cgroup limits read through `kept` (one map of handles
/// per [`LIMIT_READERS`] slot, each read on a thread of its own when `parallel`).
fn build_containers(
    opts: &CollectOptions,
    seeds: &BTreeMap<String, ContainerSeed>,
    raws: &[RawProcess],
    kept: &mut [KeptFiles; LIMIT_READERS],
    keep_max: usize,
    parallel: bool,
    log: &mut Log,
) -> Vec<Container> {
    let layout = detect_layout(&opts.cgroup_root);
    let mut readers: Vec<LimitsReader> = kept
        .iter_mut()
        .map(|k| {
            LimitsReader::with_layout(
                &opts.cgroup_root,
                layout.clone(),
                std::mem::take(k),
                keep_max,
            )
        })
        .collect();
    let layout_known = layout != CgroupLayout::Unknown;
    if !layout_known && !seeds.is_empty() {
        log.error(
            "cgroup",
            format!(
                "cgroup root {} is neither cgroup v2 nor v1: limits not read",
                opts.cgroup_root.display()
            ),
        );
    }
    if let CgroupLayout::V1 {
        memory, cpu, pids, ..
    } = &layout
    {
        for (name, dir) in [("memory", memory), ("cpu", cpu), ("pids", pids)] {
            if dir.is_none() && !seeds.is_empty() {
                log.warn(format!(
                    "cgroup root {} has no {name} hierarchy: {name} limits are unknown",
                    opts.cgroup_root.display()
                ));
            }
        }
    }
    // The version users must look at for the limits: on a hybrid host runc also names the
    // container in the controller-less v2 tree, but the limits live in v1.
    let limits_version = match layout {
        CgroupLayout::V2 => Some(CgroupVersion::V2),
        CgroupLayout::V1 { .. } => Some(CgroupVersion::V1),
        CgroupLayout::Unknown => None,
    };

    // The limit reads, by slot; nothing is read for a container without a cgroup file.
    let read_slot = |reader: &mut LimitsReader, slot: usize| -> Vec<(&str, ContainerLimits)> {
        seeds
            .iter()
            .filter(|(id, _)| limit_slot(id) == slot)
            .filter_map(|(id, seed)| {
                let first = &raws[seed.first];
                let file = first.cgroup.as_ref().filter(|_| layout_known)?;
                Some((
                    id.as_str(),
                    read_container_limits(reader, id, seed, first, file),
                ))
            })
            .collect()
    };
    let mut read: HashMap<&str, ContainerLimits> = HashMap::with_capacity(seeds.len());
    if parallel && seeds.len() > 1 {
        let slots: Vec<Vec<(&str, ContainerLimits)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = readers
                .iter_mut()
                .enumerate()
                .map(|(slot, reader)| scope.spawn(move || read_slot(reader, slot)))
                .collect();
            handles.into_iter().map(joined).collect()
        });
        read.extend(slots.into_iter().flatten());
    } else {
        for (slot, reader) in readers.iter_mut().enumerate() {
            read.extend(read_slot(reader, slot));
        }
    }
    for (k, reader) in kept.iter_mut().zip(readers) {
        *k = reader.into_kept();
    }

    let mut containers = Vec::with_capacity(seeds.len());
    // Containers that look like their pod's sandbox: (pod uid, start ticks, pid, index).
    let mut sandbox_candidates: Vec<(String, Option<u64>, i32, usize)> = Vec::new();
    for (id, seed) in seeds {
        let reference = &seed.reference;
        let mut container = Container {
            image: None,
            id: id.clone(),
            runtime: reference.cgroup.runtime,
            pod_uid: reference.cgroup.pod_uid.clone(),
            qos: reference.cgroup.qos,
            cgroup: reference.cgroup.container_path.clone(),
            cgroup_driver: reference.cgroup.driver,
            cgroup_version: limits_version.unwrap_or(reference.version),
            limits: Default::default(),
            pod_limits: None,
            effective_limits: Default::default(),
            unknown_limits: Vec::new(),
            node_allocatable: None,
            sandbox: false,
            exited: false,
            pids: seed.pids.clone(),
            rootfs: seed.root.as_ref().map(|r| r.rootfs.clone()),
            pod: None,
            confinement: Confinement {
                devices: DeviceAccess::Unknown,
                masked_paths: seed.root.as_ref().and_then(|r| r.masked_paths.clone()),
            },
        };
        if container.runtime == Runtime::Unknown {
            // A bare id under kubepods (containerd's CRI with the cgroupfs driver): the
            // monitor above the container's first process says which runtime it is.
            if let Some(runtime) = runtime_from_ancestors(raws, seed.first, id) {
                container.runtime = runtime;
            }
        }
        if container.pod_uid.is_some() {
            let processes: Vec<&Process> = seed
                .pids
                .iter()
                .filter_map(|pid| {
                    raws.binary_search_by_key(pid, |r| r.process.pid)
                        .ok()
                        .map(|i| &raws[i].process)
                })
                .collect();
            if let (Some(uid), [p]) = (&container.pod_uid, processes.as_slice()) {
                if looks_like_sandbox(&processes) {
                    let start = raws
                        .binary_search_by_key(&p.pid, |r| r.process.pid)
                        .ok()
                        .and_then(|i| raws[i].start_ticks);
                    sandbox_candidates.push((uid.clone(), start, p.pid, containers.len()));
                }
            }
        }
        match read.remove(id.as_str()) {
            None => {
                // Nothing could be read: unknown, not unlimited (the cgroup root's warning, or
                // the process's unreadable cgroup file, says why once).
                container.unknown_limits = ["memory", "cpu", "pids"].map(String::from).to_vec();
            }
            Some(limits) => {
                container.limits = limits.limits;
                container.pod_limits = limits.pod_limits;
                container.node_allocatable = limits.node_allocatable;
                container.effective_limits = limits.effective;
                container.unknown_limits = limits.unknown;
                for problem in limits.problems {
                    log.error("cgroup", problem);
                }
            }
        }
        containers.push(container);
    }
    let candidates: Vec<(&str, Option<u64>, i32, usize)> = sandbox_candidates
        .iter()
        .map(|(uid, start, pid, i)| (uid.as_str(), *start, *pid, *i))
        .collect();
    for i in first_started_per_pod(&candidates) {
        if let Some(container) = containers.get_mut(i) {
            container.sandbox = true;
        }
    }
    containers
}

/// Fills in each container's device access (`devices.list` on cgroup v1, see
/// [`crate::confinement`]). A runtime writes a container's device list once, while it sets
/// the container up, and never widens it, so a restricted answer is kept in `known` and
/// read again only at the container's turn, once in `every` passes (`turn` is this pass and
/// `every`): one file per new or privileged container per pass, not one per container.
/// "Every device" is read again each pass: before the runtime writes the list, a new
/// cgroup shows its parent's, which is every device. Entries of gone containers are
/// dropped.
fn read_devices(
    opts: &CollectOptions,
    seeds: &BTreeMap<String, ContainerSeed>,
    raws: &[RawProcess],
    containers: &mut [Container],
    known: &mut HashMap<String, DeviceAccess>,
    turn: (u64, u64),
    log: &mut Log,
) {
    let (pass, every) = turn;
    known.retain(|id, _| seeds.contains_key(id));
    if seeds.is_empty() {
        return;
    }
    let hierarchy = crate::confinement::devices_hierarchy(&opts.cgroup_root);
    for container in containers.iter_mut() {
        let Some(seed) = seeds.get(&container.id) else {
            continue;
        };
        let due = (pass + limit_slot(&container.id) as u64).is_multiple_of(every.max(1));
        if let Some(access) = known.get(&container.id).filter(|_| !due) {
            container.confinement.devices = *access;
            continue;
        }
        let Some(file) = raws[seed.first].cgroup.as_ref() else {
            continue;
        };
        match crate::confinement::read_device_access(hierarchy.as_deref(), file, &container.id) {
            Ok(access) => {
                container.confinement.devices = access;
                if access == DeviceAccess::Restricted {
                    known.insert(container.id.clone(), access);
                } else {
                    known.remove(&container.id);
                }
            }
            // Removed between the process read and now: the container is going.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log.error(
                "cgroup",
                format!(
                    "container {}: devices.list: {e}: device access unknown",
                    container.id
                ),
            ),
        }
    }
}

/// The layer (and, through the layer, the identity) of each container process's
/// executable, by index into `raws`: `None` for processes with no container root to look in.
/// `kept` holds the previous pass's lookups: an executable already located in a container
/// (same path, same running file) is not looked up again, and asking costs no allocation;
/// entries this pass did not use are dropped, and so are failed lookups (the next pass tries,
/// and warns, again; within a pass one failure is told once).
fn locate_layers(
    opts: &CollectOptions,
    seeds: &BTreeMap<String, ContainerSeed>,
    raws: &[RawProcess],
    kept: &mut LocatedCache,
    log: &mut Log,
) -> Vec<Option<Located>> {
    let mut host: Option<Option<HostRoot>> = None;
    let mut out = Vec::with_capacity(raws.len());
    for raw in raws {
        let seed = raw.container.as_ref().and_then(|c| seeds.get(&c.cgroup.id));
        let (Some(seed), Some(exe)) = (seed, raw.exe_path.as_ref()) else {
            out.push(None);
            continue;
        };
        let layers = seed.root.as_ref().and_then(|r| r.rootfs.overlay());
        let mut located = Located {
            layer: Layer::Unknown,
            identity: None,
        };
        if let (Some(layers), Some(running), false) =
            (layers, raw.exe_identity, raw.process.exe_deleted)
        {
            let host = host.get_or_insert_with(|| open_host_root(opts, log));
            if let Some(host) = host {
                let id = seed.reference.cgroup.id.as_str();
                let entries = kept.entry(running).or_default();
                match entries
                    .iter_mut()
                    .find(|e| e.container == id && e.exe == *exe)
                {
                    Some(entry) => {
                        entry.used = true;
                        located = entry.located;
                    }
                    None => {
                        let failed = match locate(host, layers, exe, &running) {
                            Ok(got) => {
                                located = got;
                                false
                            }
                            Err(e) => {
                                log.error("layer", format!("container {id}: {e}"));
                                true
                            }
                        };
                        entries.push(LocatedEntry {
                            container: id.to_string(),
                            exe: exe.clone(),
                            located,
                            used: true,
                            failed,
                        });
                    }
                }
            }
        }
        out.push(Some(located));
    }
    kept.retain(|_, entries| {
        entries.retain_mut(|e| std::mem::take(&mut e.used) && !e.failed);
        !entries.is_empty()
    });
    out
}

/// What runs from outside the image for one process: the writable mount its executable is
/// on, and the script it runs from the writable layer or a writable mount.
#[derive(Debug, Default)]
struct Outside {
    exe_mount: Option<WritableMount>,
    script: Option<FoundScript>,
}

/// For each process of `raws` (by index, beside `located`): whether its executable, not found
/// in the layers, is on a writable mount of its container ([`ContainerRoot::writable_mount_of`]
/// by path and device), and whether the script it runs as an interpreter is outside the image
/// ([`locate_script`]). Scripts are looked up once per (container, path) in a pass.
fn outside_image(
    opts: &CollectOptions,
    seeds: &BTreeMap<String, ContainerSeed>,
    raws: &[RawProcess],
    located: &[Option<Located>],
) -> Vec<Outside> {
    let mut host: Option<Option<HostRoot>> = None;
    let mut scripts: HashMap<(&str, &[u8]), Option<FoundScript>> = HashMap::new();
    let mut out = Vec::with_capacity(raws.len());
    for (raw, located) in raws.iter().zip(located) {
        let mut outside = Outside::default();
        let seed = raw.container.as_ref().and_then(|c| seeds.get(&c.cgroup.id));
        let root = seed.and_then(|s| s.root.as_ref());
        let (Some(root), Some(located)) = (root, located) else {
            out.push(outside);
            continue;
        };
        if let (Layer::Unknown, Some(exe), Some(running), false) = (
            located.layer,
            raw.exe_path.as_deref(),
            raw.exe_identity,
            raw.process.exe_deleted,
        ) {
            outside.exe_mount = root.writable_mount_of(exe, running.dev).cloned();
        }
        if let (Some(path), Some(container)) = (raw.script.as_deref(), raw.container.as_ref()) {
            let key = (container.cgroup.id.as_str(), path);
            outside.script = match scripts.get(&key) {
                Some(found) => found.clone(),
                None => {
                    // An unreachable host root was already told by `locate_layers`.
                    let host = host
                        .get_or_insert_with(|| open_host_root(opts, &mut Log::default()))
                        .as_ref();
                    // Gone, not a regular file, not there: nothing runs from it.
                    let found = locate_script(&opts.proc_root, raw.process.pid, path, root, host)
                        .unwrap_or_default();
                    scripts.insert(key, found.clone());
                    found
                }
            };
        }
        out.push(outside);
    }
    out
}

/// The processes with their executables' layers (from [`locate_layers`]) filled in, and what
/// they run from outside the image ([`outside_image`]).
fn attach_layers(
    raws: Vec<RawProcess>,
    (located, outside): (Vec<Option<Located>>, Vec<Outside>),
) -> Vec<CollectedProcess> {
    raws.into_iter()
        .zip(located)
        .zip(outside)
        .map(|((raw, located), outside)| {
            let mut process = raw.process;
            let mut identity = raw.exe_identity;
            if let Some(located) = located {
                process.exe_layer = Some(located.layer);
                if located.identity.is_some() {
                    identity = located.identity;
                }
            }
            process.exe_mount = outside.exe_mount.map(|m| mount_ref(&m));
            let script_identity = outside.script.as_ref().map(|s| s.identity);
            process.script = outside.script.map(|s| Script {
                path: escape_path(&s.path),
                mount: s.mount.as_ref().map(mount_ref),
                sha256: None,
                hash_error: None,
            });
            CollectedProcess {
                process,
                exe_identity: identity,
                script_identity,
            }
        })
        .collect()
}

fn mount_ref(m: &WritableMount) -> MountRef {
    MountRef {
        mount_point: escape_path(&m.mount_point),
        fstype: m.fstype.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeguard_model::{CgroupDriver, CgroupVersion, Limits, QosClass, Runtime, SeccompMode};
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    const ID_A: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const ID_B: &str = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    const UID_A: &str = "1234abcd-5678-90ef-1234-567890abcdef";
    const UID_B: &str = "9999aaaa-0000-1111-2222-333344445555";
    const HOST_NS: [u64; 7] = [
        4026531836, 4026531840, 4026531839, 4026531838, 4026531841, 4026531837, 4026531835,
    ];
    const NS_NAMES: [&str; 7] = ["pid", "net", "ipc", "uts", "mnt", "user", "cgroup"];

    fn testdata(case: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(case)
    }

    /// Copies directories and regular files (not symlinks).
    fn copy_tree(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                copy_tree(&entry.path(), &target);
            } else if kind.is_file() && entry.file_name() != ".keep" {
                fs::copy(entry.path(), &target).unwrap();
            }
        }
    }

    fn write(path: &Path, content: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    /// A hard link of `file` at the same absolute path inside `layer` (so a stat of the
    /// exe link and of the layer file see one inode, as through a real overlay).
    fn link_into_layer(layer: &Path, file: &Path) {
        let inside = layer.join(file.strip_prefix("/").unwrap());
        fs::create_dir_all(inside.parent().unwrap()).unwrap();
        fs::hard_link(file, inside).unwrap();
    }

    fn ns_links(proc: &Path, pid: i32, inodes: [u64; 7]) {
        let dir = proc.join(pid.to_string()).join("ns");
        fs::create_dir_all(&dir).unwrap();
        for (name, ino) in NS_NAMES.iter().zip(inodes) {
            symlink(format!("{name}:[{ino}]"), dir.join(name)).unwrap();
        }
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        opts: CollectOptions,
        image_nginx: PathBuf,
        drift_miner: PathBuf,
        deleted_nginx: PathBuf,
        host_app: PathBuf,
    }

    /// testdata/proc-basic, plus what git cannot hold: exe and ns links, and the overlay
    /// layer directories of container A under a fake host root.
    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().to_path_buf();
        let proc = t.join("proc");
        copy_tree(&testdata("proc-basic"), &proc);

        let bin = t.join("hostbin");
        for name in ["init", "sshd", "junk", "app"] {
            write(&bin.join(name), format!("#!{name}").as_bytes());
        }
        for (pid, name) in [(1, "init"), (100, "sshd"), (401, "junk"), (300, "app")] {
            symlink(bin.join(name), proc.join(format!("{pid}/exe"))).unwrap();
        }

        // Container A: nginx from the image (lower layer l2), a miner dropped into the
        // upper layer, and a worker whose binary was deleted.
        let image_nginx = t.join("image/usr/sbin/nginx");
        write(&image_nginx, b"nginx binary");
        let drift_miner = t.join("drift/tmp/miner");
        write(&drift_miner, b"miner binary");
        let deleted_nginx = t.join("image/usr/sbin/nginx (deleted)");
        write(&deleted_nginx, b"old nginx");
        let host = t.join("host");
        for d in [
            "layers/l1/usr/sbin",
            "layers/l2",
            "layers/upper",
            "layers/work",
        ] {
            fs::create_dir_all(host.join(d)).unwrap();
        }
        // l1 carries an unrelated file; the first lower layer that has nginx is l2.
        write(&host.join("layers/l1/usr/sbin/other"), b"other");
        link_into_layer(&host.join("layers/l2"), &image_nginx);
        link_into_layer(&host.join("layers/upper"), &drift_miner);
        symlink(&image_nginx, proc.join("200/exe")).unwrap();
        symlink(&drift_miner, proc.join("201/exe")).unwrap();
        symlink(&deleted_nginx, proc.join("202/exe")).unwrap();
        symlink(&image_nginx, proc.join("203/exe")).unwrap();

        for pid in [1, 2, 10, 100, 401] {
            ns_links(&proc, pid, HOST_NS);
        }
        let mut container_ns = HOST_NS.map(|i| i + 1000);
        container_ns[5] = HOST_NS[5]; // same user namespace as the host
        for pid in [200, 201, 202, 203] {
            ns_links(&proc, pid, container_ns);
        }
        let mut host_net = HOST_NS.map(|i| i + 2000);
        host_net[1] = HOST_NS[1]; // hostNetwork
        ns_links(&proc, 300, host_net);

        let opts = CollectOptions {
            proc_root: proc,
            cgroup_root: testdata("v2").join("sys/fs/cgroup"),
            host_root: host,
        };
        Fixture {
            _tmp: tmp,
            opts,
            image_nginx,
            drift_miner,
            deleted_nginx,
            host_app: bin.join("app"),
        }
    }

    fn identity(path: &Path) -> FileIdentity {
        crate::layer::identity_of(&nix::sys::stat::stat(path).unwrap())
    }

    fn process(snap: &Snapshot, pid: i32) -> &CollectedProcess {
        snap.processes
            .iter()
            .find(|p| p.process.pid == pid)
            .unwrap_or_else(|| panic!("pid {pid} missing"))
    }

    #[test]
    fn fixture_processes_counts_and_warnings() {
        let fx = fixture();
        let snap = collect(&fx.opts).unwrap();
        let pids: Vec<i32> = snap.processes.iter().map(|p| p.process.pid).collect();
        // 400 (truncated status) and 403 (garbage stat) are skipped with a warning, 402 (no
        // files: exited) counted as vanished.
        assert_eq!(pids, [1, 2, 10, 100, 200, 201, 202, 203, 300, 401, 404]);
        assert_eq!(snap.stats.processes_seen, 11);
        assert_eq!(snap.stats.kernel_threads, 2);
        assert_eq!(snap.stats.processes_vanished, 1);
        assert_eq!(snap.stats.processes_denied, 0);
        assert_eq!(snap.stats.containers_seen, 2);
        assert_eq!(
            snap.stats.errors.get("proc"),
            Some(&2),
            "{:?}",
            snap.warnings
        );
        // 401's garbage cgroup file, and container B's missing cpu.max.
        assert_eq!(
            snap.stats.errors.get("cgroup"),
            Some(&2),
            "{:?}",
            snap.warnings
        );
        assert_eq!(snap.stats.errors.get("layer"), None, "{:?}", snap.warnings);
        let has = |needle: &str| snap.warnings.iter().any(|w| w.contains(needle));
        assert!(has("pid 400: malformed status"), "{:?}", snap.warnings);
        assert!(has("pid 403: malformed stat"), "{:?}", snap.warnings);
        assert!(has("pid 401: 3 malformed line(s)"), "{:?}", snap.warnings);
        assert!(
            has(&format!("container {ID_B}")) && has("cpu.max"),
            "{:?}",
            snap.warnings
        );
        assert_eq!(snap.warnings.len(), 4, "{:?}", snap.warnings);
        assert_eq!(snap.cap_last_cap, 40);
        assert_eq!(snap.host_namespaces.net, Some(HOST_NS[1]));
    }

    #[test]
    fn fixture_process_fields() {
        let fx = fixture();
        let snap = collect(&fx.opts).unwrap();

        let init = &process(&snap, 1).process;
        assert_eq!(init.command, "systemd");
        assert_eq!(init.cmdline, "/sbin/init splash");
        assert_eq!(init.namespaces.shared_with_host, NS_NAMES);
        assert_eq!(init.container_id, None);
        assert_eq!(init.exe_layer, None);

        for pid in [2, 10] {
            let k = process(&snap, pid);
            assert!(k.process.kernel_thread, "pid {pid}");
            assert_eq!((k.process.exe.as_deref(), k.exe_identity), (None, None));
        }

        let nginx = &process(&snap, 200).process;
        assert_eq!(nginx.container_id.as_deref(), Some(ID_A));
        assert_eq!((nginx.uid, nginx.gid, nginx.uids.saved), (101, 101, 101));
        assert_eq!(&*nginx.capability_masks.effective, "00000000a80425fb");
        assert!(nginx.capabilities.effective.contains(&"CAP_NET_RAW".into()));
        assert_eq!(nginx.capabilities.effective.len(), 14);
        assert_eq!(nginx.no_new_privs, Some(true));
        assert_eq!(nginx.seccomp, Some(SeccompMode::Filter));
        assert_eq!(nginx.namespaces.shared_with_host, ["user"]);
        assert_eq!(nginx.namespaces.pid, Some(HOST_NS[0] + 1000));
        assert_eq!(nginx.cmdline, "nginx: master process nginx -g daemon off;");
        assert_eq!(nginx.exe.as_deref(), fx.image_nginx.to_str());
        assert!(!nginx.kernel_thread);

        let app = &process(&snap, 300).process;
        assert_eq!(app.namespaces.shared_with_host, ["net"]);

        let junk = &process(&snap, 401).process;
        assert_eq!(junk.container_id, None);

        let zombie = process(&snap, 404);
        assert_eq!(zombie.process.exe, None);
        assert!(!zombie.process.kernel_thread);
        assert_eq!(zombie.process.namespaces.pid, None);
    }

    #[test]
    fn fixture_layers_and_identities() {
        let fx = fixture();
        let snap = collect(&fx.opts).unwrap();
        let image = identity(&fx.image_nginx);

        let master = process(&snap, 200);
        assert_eq!(master.process.exe_layer, Some(Layer::Image));
        assert_eq!(master.exe_identity, Some(image));
        // Another process of the same binary: the same identity, so one hash.
        assert_eq!(process(&snap, 203).exe_identity, Some(image));

        let miner = process(&snap, 201);
        assert_eq!(miner.process.exe_layer, Some(Layer::Upper));
        assert_eq!(miner.exe_identity, Some(identity(&fx.drift_miner)));

        let deleted = process(&snap, 202);
        assert!(deleted.process.exe_deleted);
        assert_eq!(deleted.process.exe.as_deref(), fx.image_nginx.to_str());
        assert_eq!(deleted.process.exe_layer, Some(Layer::Unknown));
        assert_eq!(deleted.exe_identity, Some(identity(&fx.deleted_nginx)));

        // Not an overlay root: layer unknown, identity of the running file.
        let app = process(&snap, 300);
        assert_eq!(app.process.exe_layer, Some(Layer::Unknown));
        assert_eq!(app.exe_identity, Some(identity(&fx.host_app)));
    }

    #[test]
    fn fixture_containers() {
        let fx = fixture();
        let snap = collect(&fx.opts).unwrap();
        let ids: Vec<&str> = snap.containers.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, [ID_A, ID_B]);

        let a = &snap.containers[0];
        assert_eq!(a.pids, [200, 201, 202, 203]);
        assert_eq!(a.runtime, Runtime::Unknown);
        assert_eq!(a.pod_uid.as_deref(), Some(UID_A));
        assert_eq!(a.qos, Some(QosClass::Burstable));
        assert_eq!(a.cgroup, format!("/kubepods/burstable/pod{UID_A}/{ID_A}"));
        assert_eq!(
            (a.cgroup_driver, a.cgroup_version),
            (CgroupDriver::Cgroupfs, CgroupVersion::V2)
        );
        assert_eq!(
            a.limits,
            Limits {
                memory_bytes: Some(268_435_456),
                cpu_cores: Some(0.5),
                pids: None
            }
        );
        assert_eq!(
            a.pod_limits,
            Some(Limits {
                memory_bytes: Some(134_217_728),
                cpu_cores: Some(2.0),
                pids: Some(100)
            })
        );
        assert_eq!(
            a.effective_limits,
            Limits {
                memory_bytes: Some(134_217_728),
                cpu_cores: Some(0.5),
                pids: Some(100)
            }
        );
        let rootfs = a.rootfs.as_ref().unwrap();
        assert_eq!(rootfs.fstype, "overlay");
        assert_eq!(
            rootfs.layers.lower_dirs,
            ["/layers/l1", "/layers/l2"].map(std::path::Path::new)
        );
        assert_eq!(
            rootfs.layers.upper_dir.as_deref(),
            Some(std::path::Path::new("/layers/upper"))
        );
        assert_eq!(a.pod, None);

        // Pure v2: device access is a BPF program's, unknown (never "restricted"); A's own
        // mount table masks nothing, B's masks what runtimes mask.
        assert_eq!(
            a.confinement,
            nodeguard_model::Confinement {
                devices: nodeguard_model::DeviceAccess::Unknown,
                masked_paths: Some(vec![]),
            }
        );
        let b = &snap.containers[1];
        assert_eq!(
            b.confinement,
            nodeguard_model::Confinement {
                devices: nodeguard_model::DeviceAccess::Unknown,
                masked_paths: Some(
                    ["/proc/keys", "/sys", "/sys/firmware"]
                        .map(String::from)
                        .to_vec()
                ),
            }
        );
        assert_eq!(b.pids, [300]);
        assert_eq!(b.runtime, Runtime::Crio);
        assert_eq!(b.pod_uid.as_deref(), Some(UID_B));
        assert_eq!(b.qos, Some(QosClass::Besteffort));
        assert_eq!(b.cgroup_driver, CgroupDriver::Systemd);
        // cpu.max is missing in the fixture: that limit unknown (None), the rest read.
        assert_eq!(
            b.limits,
            Limits {
                memory_bytes: Some(1 << 30),
                cpu_cores: None,
                pids: Some(4096)
            }
        );
        assert_eq!(b.pod_limits, Some(Limits::default()));
        assert_eq!(b.rootfs.as_ref().map(|r| r.fstype.as_str()), Some("ext4"));
        assert_eq!(
            b.rootfs.as_ref().map(|r| r.layers.lower_dirs.len()),
            Some(0)
        );
    }

    #[test]
    fn reader_threads_merge_to_the_same_snapshot() {
        let fx = fixture();
        let proc = &fx.opts.proc_root;
        // 300 more processes: container A's nginx and host sshd, interleaved, so container A
        // spans every thread's run of pids.
        for pid in 1000..1300 {
            let (from, exe) = if pid % 2 == 0 {
                (200, &fx.image_nginx)
            } else {
                (100, &fx.host_app)
            };
            let dir = proc.join(pid.to_string());
            copy_tree(&proc.join(from.to_string()), &dir);
            let stat = fs::read_to_string(dir.join("stat")).unwrap();
            let stat = stat.replacen(&from.to_string(), &pid.to_string(), 1);
            fs::write(dir.join("stat"), stat).unwrap();
            symlink(exe, dir.join("exe")).unwrap();
            ns_links(
                proc,
                pid,
                HOST_NS.map(|i| if pid % 2 == 0 { i + 1000 } else { i }),
            );
        }
        let one = collect_with(&fx.opts, Some(1), &mut Reuse::new(1)).unwrap();
        for threads in [2, 3, 7] {
            let many = collect_with(&fx.opts, Some(threads), &mut Reuse::new(1)).unwrap();
            assert_eq!(one, many, "{threads} threads");
        }
        assert_eq!(one.processes.len(), 311);
        assert_eq!(one.containers[0].pids.len(), 4 + 150);
        assert_eq!(one.containers[0].pids[..5], [200, 201, 202, 203, 1000]);
        assert!(one
            .processes
            .iter()
            .filter(|p| p.process.pid >= 1000 && p.process.pid % 2 == 0)
            .all(|p| p.process.exe_layer == Some(Layer::Image)));
    }

    /// A v1 devices cgroup is read for a new container, a restricted answer kept and read
    /// again at the container's turn (once in `every` passes); "every device" is read each
    /// pass (a new cgroup shows its parent's until the runtime writes its list).
    #[test]
    fn device_access_is_kept_and_read_again_at_its_turn() {
        use nodeguard_model::DeviceAccess::{All, Restricted};
        let fx = fixture();
        let cgroup_root = fx._tmp.path().join("cgroup");
        let path = format!("kubepods/burstable/pod{UID_A}/{ID_A}");
        let list = cgroup_root.join("devices").join(&path).join("devices.list");
        write(&cgroup_root.join("devices/devices.list"), b"a *:* rwm\n");
        write(&list, b"a *:* rwm\n");
        let cgroup = format!("5:devices:/{path}\n0::/{path}\n");
        for pid in [200, 201, 202, 203] {
            write(
                &fx.opts.proc_root.join(format!("{pid}/cgroup")),
                cgroup.as_bytes(),
            );
        }
        let opts = CollectOptions {
            cgroup_root,
            ..fx.opts.clone()
        };
        let every = 3;
        let mut kept_once = false;
        // Each shift starts the change at another phase of the container's turn.
        for shift in 0..every {
            let mut reuse = Reuse::new(every);
            let mut pass = || {
                collect_with(&opts, Some(1), &mut reuse)
                    .unwrap()
                    .containers
                    .iter()
                    .find(|c| c.id == ID_A)
                    .map(|c| c.confinement.devices)
            };
            // Every device (the parent's list, before the runtime writes one): read each pass.
            fs::write(&list, b"a *:* rwm\n").unwrap();
            assert_eq!(pass(), Some(All));
            fs::write(&list, b"c 1:3 rwm\n").unwrap();
            assert_eq!(pass(), Some(Restricted));
            for _ in 0..shift {
                assert_eq!(pass(), Some(Restricted));
            }
            // Restricted is kept: a change (no runtime makes one) shows at the turn.
            fs::write(&list, b"a *:* rwm\n").unwrap();
            let seen: Vec<_> = (0..every).map(|_| pass()).collect();
            assert_eq!(
                seen.last().copied().flatten(),
                Some(All),
                "read again within {every} passes: {seen:?}"
            );
            kept_once |= seen[0] == Some(Restricted);
        }
        assert!(kept_once, "a restricted answer is kept between turns");
    }

    /// The exec-driven pass reads exactly the pids asked for, each as the full pass reads
    /// it, with its container; a pid that is gone is counted as vanished.
    #[test]
    fn a_pass_over_some_pids_reads_them_as_the_full_pass_does() {
        let fx = fixture();
        let full = collect(&fx.opts).unwrap();
        let some = collect_pids(&fx.opts, &[201, 200, 200, 99_999, -3]).unwrap();
        let pids: Vec<i32> = some.processes.iter().map(|p| p.process.pid).collect();
        assert_eq!(pids, [200, 201]);
        for p in &some.processes {
            assert_eq!(p, process(&full, p.process.pid));
        }
        assert_eq!(some.stats.processes_vanished, 1);
        let full_container = full
            .containers
            .iter()
            .find(|c| c.pids.contains(&200))
            .unwrap();
        assert_eq!(some.containers.len(), 1);
        assert_eq!(some.containers[0].id, full_container.id);
        assert_eq!(some.containers[0].rootfs, full_container.rootfs);
        assert_eq!(some.containers[0].limits, full_container.limits);
        assert_eq!(some.containers[0].pids, [200, 201]);
    }

    #[test]
    fn unreachable_host_root_leaves_layers_unknown() {
        let mut fx = fixture();
        fx.opts.host_root = fx.opts.proc_root.join("no-such-root");
        let snap = collect(&fx.opts).unwrap();
        let master = process(&snap, 200);
        assert_eq!(master.process.exe_layer, Some(Layer::Unknown));
        // Still a usable cache key: the running file.
        assert_eq!(master.exe_identity, Some(identity(&fx.image_nginx)));
        assert_eq!(snap.stats.errors.get("layer"), Some(&1));
        assert!(
            snap.warnings.iter().any(|w| w.contains("host root")),
            "{:?}",
            snap.warnings
        );
    }

    #[test]
    fn missing_pieces_are_warnings() {
        let fx = fixture();
        let proc = &fx.opts.proc_root;
        fs::remove_file(proc.join("sys/kernel/cap_last_cap")).unwrap();
        fs::remove_dir_all(proc.join("1/ns")).unwrap();
        fs::remove_dir_all(proc.join("2/ns")).unwrap();
        let opts = CollectOptions {
            cgroup_root: proc.join("no-cgroup-fs"),
            ..fx.opts.clone()
        };
        let snap = collect(&opts).unwrap();
        assert_eq!(snap.cap_last_cap, DEFAULT_CAP_LAST_CAP);
        assert_eq!(snap.host_namespaces, Namespaces::default());
        assert!(snap
            .processes
            .iter()
            .all(|p| p.process.namespaces.shared_with_host.is_empty()));
        assert!(snap
            .containers
            .iter()
            .all(|c| c.limits == Limits::default()));
        let has = |needle: &str| snap.warnings.iter().any(|w| w.contains(needle));
        assert!(has("cap_last_cap"), "{:?}", snap.warnings);
        assert!(has("host namespaces"), "{:?}", snap.warnings);
        assert!(has("neither cgroup v2 nor v1"), "{:?}", snap.warnings);
    }

    #[test]
    fn host_namespaces_fall_back_to_kthreadd() {
        let fx = fixture();
        fs::remove_dir_all(fx.opts.proc_root.join("1/ns")).unwrap();
        let snap = collect(&fx.opts).unwrap();
        assert_eq!(snap.host_namespaces.pid, Some(HOST_NS[0]));
        assert_eq!(
            process(&snap, 100).process.namespaces.shared_with_host,
            NS_NAMES
        );
        assert!(
            snap.warnings
                .iter()
                .any(|w| w.contains("using kernel thread pid 2")),
            "{:?}",
            snap.warnings
        );
        // A pid 2 that is not a kernel thread (a container's pid namespace) is not used.
        let stat = fx.opts.proc_root.join("2/stat");
        let text = fs::read_to_string(&stat)
            .unwrap()
            .replace(" 2129984 ", " 4194560 ");
        fs::write(&stat, text).unwrap();
        let snap = collect(&fx.opts).unwrap();
        assert_eq!(snap.host_namespaces, Namespaces::default());
    }

    #[test]
    fn unusable_proc_root_is_the_only_error() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let err = collect(&CollectOptions::with_proc_root(&missing)).unwrap_err();
        assert!(matches!(err, Error::ProcRoot { .. }));
        assert!(err.to_string().contains("nope"), "{err}");
        // An empty proc root is usable, just empty.
        let snap = collect(&CollectOptions::with_proc_root(tmp.path())).unwrap();
        assert!(snap.processes.is_empty());
    }

    #[test]
    fn real_proc_finds_this_process() {
        let opts = CollectOptions {
            host_root: PathBuf::from("/"),
            ..CollectOptions::default()
        };
        let snap = collect(&opts).unwrap();
        let me = std::process::id() as i32;
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
                .unwrap()
        };
        let p = process(&snap, me);
        let euid: u32 = field("Uid:")
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(p.process.uid, euid);
        assert_eq!(&*p.process.capability_masks.effective, field("CapEff:"));
        assert_eq!(
            p.process.exe.as_deref(),
            std::env::current_exe().unwrap().to_str()
        );
        assert_eq!(p.exe_identity, Some(identity(Path::new("/proc/self/exe"))));
        assert!(!p.process.kernel_thread);
        assert!(snap
            .processes
            .windows(2)
            .all(|w| w[0].process.pid < w[1].process.pid));
        assert!(snap.stats.processes_seen > 1);
    }
}
