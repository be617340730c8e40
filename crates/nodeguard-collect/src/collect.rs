//! One pass over the proc root: processes, then the containers they belong to.

use crate::bounded_read::read_into;
use crate::cgroup::ContainerRef;
use crate::containers::{
    attach_layers, build_containers, locate_layers, outside_image, read_devices,
};
use crate::exec_reuse::{ExecFacts, ExecReuse, LOCATED_MAX};
use crate::mount_roots::MountRoots;
use crate::mountinfo::{container_root, ContainerRoot};
use crate::pass::{
    is_kernel_thread_pid, joined, open_host_root, ContainerSeed, Log, PassPhases, Reuse,
};
use crate::process::{
    read_process, shared_with_host, CgroupMemo, ExeLinks, Failure, PidDir, RawProcess, Remembered,
};
use crate::runtime::host_bounding;
use crate::{CollectOptions, Error, Snapshot};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nodeguard_model::{Container, Namespaces};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `cap_last_cap` when the kernel does not say (Linux 5.9+: CAP_CHECKPOINT_RESTORE).
pub const DEFAULT_CAP_LAST_CAP: u32 = 40;

/// Reading mountinfo stops here; a container with more mounts than this is not normal.
const MOUNTINFO_MAX: usize = 4 << 20;

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
                let mnt = raw.process.namespaces.mnt;
                // An exec read: the root kept for this mount namespace, while its table
                // has not changed.
                let kept = known
                    .roots
                    .zip(mnt)
                    .and_then(|(roots, ns)| lock(roots).get(ns, &mut mountinfo, MOUNTINFO_MAX));
                match (remembered, kept) {
                    (Some(root), _) => seed.root = root.clone(),
                    (None, Some(root)) => seed.root = root,
                    (None, None) => {
                        // An exec read keeps the live file, read through it (newer than
                        // what a hold captured): a change after its opening shows later.
                        let mut keep = known
                            .roots
                            .and(mnt)
                            .and_then(|_| dir.open_live("mountinfo"));
                        let from_kept = keep.as_mut().is_some_and(|file| {
                            read_into(&mut mountinfo, MOUNTINFO_MAX, false, |chunk, _| {
                                file.read(chunk)
                            })
                            .is_ok()
                        });
                        if !from_kept {
                            keep = None;
                        }
                        let read = match from_kept {
                            true => Ok(()),
                            false => dir.read_to_end("mountinfo", &mut mountinfo, MOUNTINFO_MAX),
                        };
                        match read {
                            Ok(()) => {
                                seed.root = match known.roots {
                                    Some(roots) => {
                                        lock(roots).parse_and_keep(mnt, keep, &mountinfo)
                                    }
                                    None => container_root(&mountinfo),
                                };
                                if let Some(r) = &raw.remember {
                                    let _ = r.mount_root.set(seed.root.clone());
                                }
                            }
                            Err(Failure::Error(e)) => chunk.log.error("mountinfo", e.to_string()),
                            Err(_) => {}
                        }
                    }
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

/// Reader threads for `pids` processes: one per core, none for a few hundred.
fn reader_threads(pids: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(pids.div_ceil(PIDS_PER_THREAD)).clamp(1, 8)
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
    /// Container roots kept by mount namespace (exec reads).
    roots: Option<&'a Mutex<MountRoots>>,
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

/// The lock of state exec reads share; a panic elsewhere while holding it leaves nothing
/// half-done that a later read could trip on (each entry is replaced whole).
fn lock(roots: &Mutex<MountRoots>) -> std::sync::MutexGuard<'_, MountRoots> {
    roots.lock().unwrap_or_else(|p| p.into_inner())
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
    collect_from(opts, threads, reuse, None, None)
}

/// [`collect`] restricted to `pids` (the exec'd processes of an event-driven pass): the
/// same full reads, attribution and layers, for those processes and the containers they are
/// in. A pid that is gone is counted as vanished. Everything that needs the whole process
/// table (a bare-id container's runtime from its monitor, the host's bounding set from host
/// processes other than pid 1, the pod's sandbox among several containers) is only as good
/// as the pids given; the caller keeps what the last full pass said about known containers.
pub(crate) fn collect_pids(opts: &CollectOptions, pids: &[i32]) -> Result<Snapshot, Error> {
    collect_held(opts, pids, Vec::new(), None)
}

/// [`collect_pids`] over `pids` and the processes `held` at their exec (`crate::held`):
/// each of those is read through its handle, from what was captured while it ran, so one
/// that has exited since is read as it was. The handles are closed when this returns.
pub(crate) fn collect_held(
    opts: &CollectOptions,
    pids: &[i32],
    held: Vec<PidDir>,
    exec: Option<&mut ExecReuse>,
) -> Result<Snapshot, Error> {
    let mut pids: Vec<i32> = pids
        .iter()
        .copied()
        .chain(held.iter().map(|d| d.pid))
        .filter(|p| *p > 0)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    match exec {
        None => {
            let mut reuse = Reuse::new(1);
            // Read through as kept handles with nothing remembered: a full read of each.
            reuse.dirs.extend(held.into_iter().map(|d| (d.pid, d)));
            collect_from(opts, Some(1), &mut reuse, Some(pids), None)
        }
        Some(exec) => {
            let ExecReuse {
                reuse,
                roots,
                host,
                known,
            } = exec;
            reuse.dirs.clear();
            reuse.dirs.extend(held.into_iter().map(|d| (d.pid, d)));
            let facts = ExecFacts {
                roots: &roots.0,
                host: host.as_ref(),
                known,
            };
            let snapshot = collect_from(opts, Some(1), reuse, Some(pids), Some(facts));
            // Only the layer lookups (and what the containers built kept) outlive the read.
            reuse.dirs.clear();
            reuse.processes.clear();
            if reuse.located.len() > LOCATED_MAX {
                reuse.located.clear();
            }
            snapshot
        }
    }
}

/// One pass over `only` (sorted) or, when `None`, every pid under the proc root; an exec
/// read (`exec`) takes what does not change per exec from [`ExecFacts`].
fn collect_from(
    opts: &CollectOptions,
    threads: Option<usize>,
    reuse: &mut Reuse,
    only: Option<Vec<i32>>,
    exec: Option<ExecFacts<'_>>,
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
    let (cap_last_cap, host_namespaces) = match exec.as_ref().and_then(|e| e.host) {
        Some((cap_last_cap, host_namespaces)) => (*cap_last_cap, host_namespaces.clone()),
        None => (
            read_cap_last_cap(&opts.proc_root, &mut log),
            host_namespaces(&proc_fd, &opts.proc_root, &mut log),
        ),
    };

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
        roots: exec.as_ref().map(|e| e.roots),
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
    // An exec read takes the containers the last full pass built from it.
    let known_containers = exec.as_ref().map(|e| e.known);
    let skip = |id: &str| known_containers.is_some_and(|k| k.contains_key(id));
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
    let mut build = |threaded: bool| {
        build_containers(
            opts,
            &seeds,
            &raws,
            limit_files,
            keep_max,
            threaded,
            &skip,
            &mut log,
        )
    };
    let (containers, found) = if threads > 1 {
        std::thread::scope(|scope| {
            let layers = scope.spawn(locate);
            let containers = build(true);
            (containers, joined(layers))
        })
    } else {
        let found = locate();
        (build(false), found)
    };
    log.absorb(layer_log);
    let mut containers = containers;
    let built = containers.len();
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
    if let Some(known) = known_containers {
        for (id, seed) in &seeds {
            if let Some(container) = known.get(id) {
                containers.push(Container {
                    pids: seed.pids.clone(),
                    ..container.clone()
                });
            }
        }
        if containers.len() > built {
            containers.sort_by(|a, b| a.id.cmp(&b.id));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::FileIdentity;
    use crate::pass::*;
    use crate::CollectedProcess;
    use nodeguard_model::Layer;
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
    fn exec_reads_take_what_did_not_change_from_the_collector() {
        let fx = fixture();
        // A copy of the cgroup tree, to take container A's away after the full pass.
        let cgroups = tempfile::tempdir().unwrap();
        copy_tree(&fx.opts.cgroup_root, cgroups.path());
        let opts = CollectOptions {
            cgroup_root: cgroups.path().to_path_buf(),
            ..fx.opts.clone()
        };
        let mut collector = crate::Collector::new(opts.clone());
        // Before any full pass an exec read is a full read of its processes.
        let cold = collector.collect_held(&[200], Vec::new()).unwrap();
        assert_eq!(
            cold.processes,
            collect_pids(&opts, &[200]).unwrap().processes
        );
        assert_eq!(collector.exec_mountinfo_parses(), 1);

        let full = collector.collect().unwrap();
        let known = full
            .containers
            .iter()
            .find(|c| c.id == ID_A)
            .unwrap()
            .clone();
        for dir in walk_dirs(cgroups.path()) {
            if dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(ID_A))
            {
                fs::remove_dir_all(&dir).unwrap();
            }
        }
        for _ in 0..20 {
            let snap = collector.collect_held(&[201, 200], Vec::new()).unwrap();
            // The processes as a fresh read sees them (layers included) ...
            for p in &snap.processes {
                assert_eq!(p, process(&full, p.process.pid));
            }
            // ... their container as the full pass built it, with the pids read: its cgroup
            // files (gone now) were not read again.
            assert_eq!(
                snap.containers,
                [Container {
                    pids: vec![200, 201],
                    ..known.clone()
                }]
            );
            assert!(snap.warnings.is_empty(), "{:?}", snap.warnings);
        }
        // One mount namespace, one table parsed (by the first read): a fixture's
        // `mountinfo` is a plain file, whose poll never reports a change.
        assert_eq!(collector.exec_mountinfo_parses(), 1);
        // A read that does not go through the collector reads the cgroup files again.
        let fresh = collect_pids(&opts, &[200]).unwrap();
        assert_ne!(fresh.containers[0].limits, known.limits);
    }

    fn walk_dirs(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(root).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk_dirs(&entry.path()));
                out.push(entry.path());
            }
        }
        out
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
