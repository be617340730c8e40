//! The walk engine: a small pool of threads that walk many roots (layers or merged container
//! roots) at once, sharing subtrees of a big root when a thread runs out of work.
//!
//! Invariants:
//! - Everything below a root is reached with `openat(parent_fd, name, O_NOFOLLOW|O_DIRECTORY)`
//!   or `fstatat(parent_fd, name, AT_SYMLINK_NOFOLLOW)`. A directory re-opened later (fd
//!   eviction, shared subtree) is re-opened by names from an open ancestor fd and must have
//!   the `(dev, ino)` recorded when it was first seen, else it is skipped.
//! - Iterative depth-first walk; each thread keeps at most [`MAX_DIR_FDS`] directory fds open
//!   however deep the tree is.
//! - `-xdev`: a directory whose `st_dev` differs from the root's is not entered (non-directory
//!   entries are judged on their own, as `find -xdev` does). A directory whose `(dev, ino)`
//!   is one of its own ancestors (a bind-mount loop) is not entered.
//! - Only regular files are stat'ed for their mode, have their `security.capability` read
//!   and, when interesting, are opened — with `O_NONBLOCK|O_NOCTTY|O_NOFOLLOW` and a re-check
//!   that the opened inode is the regular file that was stat'ed.

use crate::sys::{self, DirReader, EntryType, Stat};
use crate::{FsStats, WalkBudget};
use nodeguard_hash::{Algorithms, DigestCache, FileIdentity};
use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Directory fds one thread keeps open at most; deeper ancestors are closed and re-opened.
pub(crate) const MAX_DIR_FDS: usize = 24;
/// Warnings kept per scan; the rest are counted.
pub(crate) const MAX_WARNINGS: usize = 100;

/// The read buffer of a worker that hashes a file.
pub(crate) const HASH_BUFFER_SIZE: usize = 128 * 1024;
/// Entries between two checks of the time budget.
const TIME_CHECK_EVERY: u64 = 64;

pub(crate) const REDIRECT_XATTR: &CStr = c"trusted.overlay.redirect";

/// The identity the digest cache knows this file by.
pub(crate) fn identity(st: &Stat) -> FileIdentity {
    FileIdentity::new(st.dev, st.ino, st.size, st.mtime, st.ctime)
}

/// One root to walk.
#[derive(Debug, Clone)]
pub(crate) struct WalkRoot {
    pub path: PathBuf,
    /// Names the root in warnings, e.g. `upper layer /x of container abc`.
    pub label: String,
    /// `(dev, ino)` the root had when its cache key was taken, if it was.
    pub expect: Option<(u64, u64)>,
    /// An overlay upper dir: files may be metacopy-only copies whose data is elsewhere.
    pub upper: bool,
}

/// A setuid/setgid/file-capability file, its path relative to the root it was found under.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Candidate {
    /// Raw path bytes relative to the root, `/`-separated, no leading slash.
    pub rel: Vec<u8>,
    pub stat: Stat,
    pub caps: Option<String>,
    pub sha256: Option<String>,
    pub sha512: Option<String>,
}

/// The outcome of walking one root.
#[derive(Debug, Default)]
pub(crate) struct RootResult {
    pub candidates: Vec<Candidate>,
    /// The root's own stat when it could be opened.
    pub root_stat: Option<Stat>,
    /// The root could not be walked at all.
    pub failed: bool,
    pub truncated: bool,
    /// Why the walk was cut short, when it was.
    pub truncated_why: Option<String>,
    /// setuid/setgid/capability files found past [`MAX_CANDIDATES_PER_ROOT`]: counted, not
    /// kept (nor hashed), so one root cannot grow the agent's memory without bound.
    pub omitted: u64,
}

/// The most setuid/setgid/file-capability files kept per walked root. A real image holds
/// a dozen; a container that makes 100,000 (a one-line loop in its writable layer) must not
/// take the agent's memory with it.
pub const MAX_CANDIDATES_PER_ROOT: usize = 1000;

pub(crate) struct WalkConfig<'a> {
    pub budget: &'a WalkBudget,
    pub threads: usize,
    /// The digests to compute, and the cache (shared with executable hashing) they are kept
    /// in between scans.
    pub algorithms: Algorithms,
    pub digests: &'a DigestCache,
}

/// What the walk of all roots produced, in the order of the roots given.
pub(crate) struct WalkOutput {
    pub results: Vec<RootResult>,
    pub stats: FsStats,
    pub warnings: Vec<String>,
    pub suppressed_warnings: u64,
}

struct RootState<'a> {
    idx: usize,
    root: &'a WalkRoot,
    fd: OwnedFd,
    dev: u64,
    ino: u64,
    files: AtomicU64,
    started: Instant,
    truncated: AtomicBool,
    /// Candidates kept (or about to be) for this root.
    kept: AtomicUsize,
}

struct Job<'a> {
    root: Arc<RootState<'a>>,
    /// Path of the directory relative to the root (empty for the root itself).
    rel: Vec<u8>,
    /// `(dev, ino)` of each directory from the root down to the parent of `rel`.
    chain: Vec<(u64, u64)>,
}

enum Work<'a> {
    Start(usize),
    Subtree(Job<'a>),
}

struct Queue<'a> {
    jobs: VecDeque<Job<'a>>,
    next_root: usize,
    busy: usize,
}

struct Shared<'a> {
    roots: &'a [WalkRoot],
    cfg: &'a WalkConfig<'a>,
    queue: Mutex<Queue<'a>>,
    wake: Condvar,
    idle: AtomicUsize,
    queued: AtomicUsize,
    results: Vec<Mutex<RootResult>>,
}

/// Walks every root with `cfg.threads` threads.
pub(crate) fn walk_roots(roots: &[WalkRoot], cfg: &WalkConfig<'_>) -> WalkOutput {
    let threads = cfg.threads.max(1);
    let shared = Shared {
        roots,
        cfg,
        queue: Mutex::new(Queue {
            jobs: VecDeque::new(),
            next_root: 0,
            busy: 0,
        }),
        wake: Condvar::new(),
        idle: AtomicUsize::new(0),
        queued: AtomicUsize::new(0),
        results: roots.iter().map(|_| Mutex::default()).collect(),
    };
    let mut stats = FsStats::default();
    let mut warnings = Vec::new();
    let mut suppressed = 0u64;
    let workers: Vec<Worker> = if threads == 1 || roots.is_empty() {
        let mut w = Worker::new();
        w.run(&shared);
        vec![w]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut w = Worker::new();
                        w.run(&shared);
                        w
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        })
    };
    for w in workers {
        stats.add(&w.stats);
        for warning in w.warnings {
            if warnings.len() < MAX_WARNINGS {
                warnings.push(warning);
            } else {
                suppressed += 1;
            }
        }
        suppressed += w.suppressed;
    }
    let mut results: Vec<RootResult> = shared
        .results
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    for r in &mut results {
        r.candidates.sort_by(|a, b| a.rel.cmp(&b.rel));
        r.candidates.dedup_by(|a, b| a.rel == b.rel);
    }
    WalkOutput {
        results,
        stats,
        warnings,
        suppressed_warnings: suppressed,
    }
}

struct Frame {
    fd: Option<OwnedFd>,
    dev: u64,
    ino: u64,
    /// End of this directory's path in the worker's path buffer.
    path_len: usize,
    /// Start of this directory's own name in the path buffer.
    name_start: usize,
    /// Subdirectories still to visit, taken from the back.
    pending: Vec<CString>,
}

/// One walking thread's buffers, counters and warnings.
pub(crate) struct Worker {
    pub(crate) reader: DirReader,
    pub(crate) stats: FsStats,
    pub(crate) warnings: Vec<String>,
    pub(crate) suppressed: u64,
    pub(crate) xattr_buf: [u8; 64],
    pub(crate) hash_buf: Vec<u8>,
}

/// A root of the full walk as a [`FileSink`]: candidates go to its result, at most
/// [`MAX_CANDIDATES_PER_ROOT`] across all threads.
struct RootSink<'s, 'a, 'b> {
    sh: &'s Shared<'a>,
    root: &'s RootState<'b>,
}

impl FileSink for RootSink<'_, '_, '_> {
    fn label(&self) -> &str {
        &self.root.root.label
    }

    fn upper(&self) -> bool {
        self.root.root.upper
    }

    fn reserve(&self) -> bool {
        // Reserved before the (unlocked) hashing, so parallel walkers of one root never keep
        // more than the bound.
        if self.root.kept.fetch_add(1, Ordering::Relaxed) >= MAX_CANDIDATES_PER_ROOT {
            lock(&self.sh.results[self.root.idx]).omitted += 1;
            return false;
        }
        true
    }

    fn push(&self, candidate: Candidate) {
        lock(&self.sh.results[self.root.idx])
            .candidates
            .push(candidate);
    }
}

/// Why the walk of a job stopped early.
enum Stop {
    Budget,
}

impl Worker {
    pub(crate) fn new() -> Worker {
        Worker {
            reader: DirReader::default(),
            stats: FsStats::default(),
            warnings: Vec::new(),
            suppressed: 0,
            xattr_buf: [0u8; 64],
            // Made on the first file hashed: most walks (a writable layer each process scan)
            // hash nothing.
            hash_buf: Vec::new(),
        }
    }

    pub(crate) fn warn(&mut self, msg: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(msg);
        } else {
            self.suppressed += 1;
        }
    }

    fn run<'a>(&mut self, sh: &Shared<'a>) {
        let threads = sh.cfg.threads.max(1);
        loop {
            let work = {
                let mut q = match sh.queue.lock() {
                    Ok(q) => q,
                    Err(p) => p.into_inner(),
                };
                loop {
                    if let Some(job) = q.jobs.pop_front() {
                        sh.queued.fetch_sub(1, Ordering::Relaxed);
                        q.busy += 1;
                        break Some(Work::Subtree(job));
                    }
                    if q.next_root < sh.roots.len() {
                        let idx = q.next_root;
                        q.next_root += 1;
                        q.busy += 1;
                        break Some(Work::Start(idx));
                    }
                    if q.busy == 0 {
                        sh.wake.notify_all();
                        break None;
                    }
                    if threads == 1 {
                        break None;
                    }
                    sh.idle.fetch_add(1, Ordering::Relaxed);
                    q = match sh.wake.wait(q) {
                        Ok(q) => q,
                        Err(p) => p.into_inner(),
                    };
                    sh.idle.fetch_sub(1, Ordering::Relaxed);
                }
            };
            let Some(work) = work else { return };
            // Marks this thread idle again even if the job unwinds, so no thread waits forever.
            let _busy = BusyGuard(sh);
            match work {
                Work::Start(idx) => self.start_root(sh, idx),
                Work::Subtree(job) => self.walk_job(sh, job),
            }
        }
    }

    fn start_root<'a>(&mut self, sh: &Shared<'a>, idx: usize) {
        let root = &sh.roots[idx];
        let opened = sys::open_root(&root.path).and_then(|fd| {
            let st = sys::fstat(fd.as_fd())?;
            Ok((fd, st))
        });
        let (fd, st) = match opened {
            Ok(v) => v,
            Err(e) => {
                self.stats.count_error("root_open");
                self.warn(format!("cannot open {}: {e}", root.label));
                lock(&sh.results[idx]).failed = true;
                return;
            }
        };
        if let Some((dev, ino)) = root.expect {
            if (dev, ino) != (st.dev, st.ino) {
                self.stats.count_error("walk_changed");
                self.warn(format!(
                    "{} was replaced while the scan started; walking the new directory",
                    root.label
                ));
            }
        }
        lock(&sh.results[idx]).root_stat = Some(st);
        self.stats.layers_walked += 1;
        self.stats.dirs_walked += 1;
        let state = Arc::new(RootState {
            idx,
            root,
            fd,
            dev: st.dev,
            ino: st.ino,
            files: AtomicU64::new(0),
            started: Instant::now(),
            truncated: AtomicBool::new(false),
            kept: AtomicUsize::new(0),
        });
        self.walk_job(
            sh,
            Job {
                root: state,
                rel: Vec::new(),
                chain: Vec::new(),
            },
        );
    }

    /// Marks the root truncated (once) and says so.
    fn truncate(&mut self, root: &RootState<'_>, sh: &Shared<'_>, why: &str) {
        if !root.truncated.swap(true, Ordering::Relaxed) {
            self.stats.walks_truncated += 1;
            let mut result = lock(&sh.results[root.idx]);
            result.truncated = true;
            result.truncated_why = Some(why.to_string());
            drop(result);
            self.warn(format!(
                "walk of {} truncated: {why}; results for it are partial",
                root.root.label
            ));
        }
    }

    /// Counts `entries` more files against the root's budget; checks the clock every
    /// [`TIME_CHECK_EVERY`] files or when `time_check` is set.
    fn over_budget(
        &mut self,
        root: &RootState<'_>,
        sh: &Shared<'_>,
        entries: u64,
        time_check: bool,
    ) -> bool {
        if root.truncated.load(Ordering::Relaxed) {
            return true;
        }
        let budget = sh.cfg.budget;
        let seen = root.files.fetch_add(entries, Ordering::Relaxed) + entries;
        if seen > budget.max_files {
            self.truncate(
                root,
                sh,
                &format!("more than {} files (max_files)", budget.max_files),
            );
            return true;
        }
        if (time_check || (entries > 0 && seen.is_multiple_of(TIME_CHECK_EVERY)))
            && root.started.elapsed() > budget.max_duration
        {
            self.truncate(
                root,
                sh,
                &format!("took longer than {:?} (max_duration)", budget.max_duration),
            );
            return true;
        }
        false
    }

    /// Opens `job.rel` from the root by names, checking every ancestor is the directory it
    /// was when the job was made.
    fn open_job_dir(&mut self, job: &Job<'_>) -> Option<(OwnedFd, Stat)> {
        let root = &job.root;
        if job.rel.is_empty() {
            // A fresh open file description of the root (a dup would share its offset).
            let fd = match sys::open_dir_at(root.fd.as_fd(), c".") {
                Ok(fd) => fd,
                Err(e) => {
                    self.count_io("walk_io", &e);
                    return None;
                }
            };
            let st = match sys::fstat(fd.as_fd()) {
                Ok(st) if (st.dev, st.ino) == (root.dev, root.ino) => st,
                _ => {
                    self.stats.count_error("walk_changed");
                    return None;
                }
            };
            return Some((fd, st));
        }
        let mut cur: Option<OwnedFd> = None;
        let components: Vec<&[u8]> = job.rel.split(|b| *b == b'/').collect();
        let last = components.len() - 1;
        for (i, comp) in components.iter().enumerate() {
            let name = CString::new(*comp).ok()?;
            let parent = match &cur {
                Some(fd) => fd.as_fd(),
                None => root.fd.as_fd(),
            };
            let fd = match sys::open_dir_at(parent, &name) {
                Ok(fd) => fd,
                Err(e) => {
                    self.count_open_dir_error(&e);
                    return None;
                }
            };
            let st = match sys::fstat(fd.as_fd()) {
                Ok(st) => st,
                Err(e) => {
                    self.count_io("walk_io", &e);
                    return None;
                }
            };
            if i < last && job.chain.get(i + 1) != Some(&(st.dev, st.ino)) {
                self.stats.count_error("walk_changed");
                return None;
            }
            cur = Some(fd);
            if i == last {
                return cur.map(|fd| (fd, st));
            }
        }
        None
    }

    pub(crate) fn count_io(&mut self, kind: &str, e: &io::Error) {
        match e.raw_os_error() {
            Some(libc::ENOENT) => self.stats.vanished += 1,
            Some(libc::EACCES) | Some(libc::EPERM) => self.stats.count_error("walk_permission"),
            _ => self.stats.count_error(kind),
        }
    }

    pub(crate) fn count_open_dir_error(&mut self, e: &io::Error) {
        match e.raw_os_error() {
            // Replaced by a symlink or a non-directory between readdir and open.
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => self.stats.count_error("walk_changed"),
            _ => self.count_io("walk_io", e),
        }
    }

    fn walk_job<'a>(&mut self, sh: &Shared<'a>, job: Job<'a>) {
        let root = Arc::clone(&job.root);
        if root.truncated.load(Ordering::Relaxed) {
            return;
        }
        let Some((fd, st)) = self.open_job_dir(&job) else {
            return;
        };
        if !job.rel.is_empty() {
            if st.dev != root.dev {
                self.stats.mounts_skipped += 1;
                return;
            }
            if job.chain.contains(&(st.dev, st.ino)) {
                self.loop_found(&root, &job.rel);
                return;
            }
            self.stats.dirs_walked += 1;
            self.check_redirect(&root, fd.as_fd(), &job.rel);
        }
        let mut path = job.rel.clone();
        let name_start = job
            .rel
            .iter()
            .rposition(|b| *b == b'/')
            .map_or(0, |p| p + 1);
        let mut frames = vec![Frame {
            fd: Some(fd),
            dev: st.dev,
            ino: st.ino,
            path_len: path.len(),
            name_start,
            pending: Vec::new(),
        }];
        if self.read_dir(sh, &root, &mut frames[0], &path).is_err() {
            return;
        }
        while let Some(top) = frames.len().checked_sub(1) {
            path.truncate(frames[top].path_len);
            if frames[top].pending.is_empty() {
                frames.pop();
                continue;
            }
            if frames[top].fd.is_none() && !self.reopen(&job, &mut frames, &path) {
                // The directory changed under us: give up on it.
                frames.pop();
                continue;
            }
            let Some(name) = frames[top].pending.pop() else {
                continue;
            };
            let Some(parent_fd) = frames[top].fd.as_ref() else {
                continue;
            };
            let child = match sys::open_dir_at(parent_fd.as_fd(), &name) {
                Ok(fd) => fd,
                Err(e) => {
                    self.count_open_dir_error(&e);
                    continue;
                }
            };
            let cst = match sys::fstat(child.as_fd()) {
                Ok(st) => st,
                Err(e) => {
                    self.count_io("walk_io", &e);
                    continue;
                }
            };
            if cst.dev != root.dev {
                self.stats.mounts_skipped += 1;
                continue;
            }
            push_component(&mut path, name.to_bytes());
            let key = (cst.dev, cst.ino);
            if job.chain.contains(&key) || frames.iter().any(|f| (f.dev, f.ino) == key) {
                self.loop_found(&root, &path);
                continue;
            }
            self.stats.dirs_walked += 1;
            self.check_redirect(&root, child.as_fd(), &path);
            let name_start = path.len() - name.to_bytes().len();
            frames.push(Frame {
                fd: Some(child),
                dev: cst.dev,
                ino: cst.ino,
                path_len: path.len(),
                name_start,
                pending: Vec::new(),
            });
            evict_fds(&mut frames);
            let new_top = frames.len() - 1;
            if self
                .read_dir(sh, &root, &mut frames[new_top], &path)
                .is_err()
            {
                return;
            }
            if sh.idle.load(Ordering::Relaxed) > 0 && sh.queued.load(Ordering::Relaxed) == 0 {
                self.donate(sh, &job, &mut frames, &path);
            }
        }
    }

    /// A renamed image directory in an upper layer (`redirect_dir`): its image files show at
    /// the new path in the container, which the layer composition does not model. Say so.
    fn check_redirect(&mut self, root: &RootState<'_>, dir: BorrowedFd<'_>, rel: &[u8]) {
        if !root.root.upper {
            return;
        }
        let mut buf = [0u8; 256];
        if let Ok(Some(n)) = sys::fget_xattr(dir, REDIRECT_XATTR, &mut buf) {
            self.stats.count_error("overlay_redirect");
            self.warn(format!(
                "{}: /{} is a renamed image directory (overlay redirect to {}); image files \
                 below it are reported at their old path",
                root.root.label,
                nodeguard_model::escape_path(rel),
                nodeguard_model::escape_path(&buf[..n.min(buf.len())])
            ));
        }
    }

    fn loop_found(&mut self, root: &RootState<'_>, rel: &[u8]) {
        self.stats.count_error("walk_loop");
        self.warn(format!(
            "directory loop in {} at /{} (bind mount?): not entered",
            root.root.label,
            nodeguard_model::escape_path(rel)
        ));
    }

    /// Reads one directory: files are examined now, subdirectories queued in the frame.
    fn read_dir(
        &mut self,
        sh: &Shared<'_>,
        root: &Arc<RootState<'_>>,
        frame: &mut Frame,
        path: &[u8],
    ) -> Result<(), Stop> {
        let Some(fd) = frame.fd.as_ref() else {
            return Ok(());
        };
        if self.over_budget(root, sh, 0, true) {
            return Err(Stop::Budget);
        }
        let dir = fd.as_fd();
        let sink = RootSink {
            sh,
            root: root.as_ref(),
        };
        let mut reader = std::mem::take(&mut self.reader);
        let mut stopped = false;
        let res = reader.for_each(dir, |name, kind| {
            self.stats.files_walked += 1;
            if self.over_budget(root, sh, 1, false) {
                stopped = true;
                return false;
            }
            match kind {
                EntryType::Dir => frame.pending.push(name.to_owned()),
                EntryType::Regular => self.examine(sh.cfg, &sink, dir, name, None, path),
                EntryType::Unknown => match sys::stat_at(dir, name) {
                    Ok(st) if st.is_dir() => frame.pending.push(name.to_owned()),
                    Ok(st) if st.is_reg() => self.examine(sh.cfg, &sink, dir, name, Some(st), path),
                    Ok(_) => {}
                    Err(e) => self.count_io("walk_io", &e),
                },
                EntryType::Other => {}
            }
            true
        });
        self.reader = reader;
        if let Err(e) = res {
            self.count_io("walk_io", &e);
        }
        if stopped {
            return Err(Stop::Budget);
        }
        Ok(())
    }

    /// Re-opens the top frame's directory from the nearest ancestor that still has an fd
    /// (or from the root), checking each directory is the one first seen.
    fn reopen(&mut self, job: &Job<'_>, frames: &mut [Frame], path: &[u8]) -> bool {
        let top = frames.len() - 1;
        let mut start = (0..top).rev().find(|i| frames[*i].fd.is_some());
        if start.is_none() && frames[0].fd.is_none() {
            match self.open_job_dir(job) {
                Some((fd, st)) if (st.dev, st.ino) == (frames[0].dev, frames[0].ino) => {
                    frames[0].fd = Some(fd);
                    start = Some(0);
                }
                Some(_) => {
                    self.stats.count_error("walk_changed");
                    return false;
                }
                None => return false,
            }
        }
        let Some(start) = start else { return false };
        for k in start + 1..=top {
            let Ok(name) = CString::new(&path[frames[k].name_start..frames[k].path_len]) else {
                return false;
            };
            let Some(parent) = frames[k - 1].fd.as_ref() else {
                return false;
            };
            let fd = match sys::open_dir_at(parent.as_fd(), &name) {
                Ok(fd) => fd,
                Err(e) => {
                    self.count_open_dir_error(&e);
                    return false;
                }
            };
            match sys::fstat(fd.as_fd()) {
                Ok(st) if (st.dev, st.ino) == (frames[k].dev, frames[k].ino) => {}
                _ => {
                    self.stats.count_error("walk_changed");
                    return false;
                }
            }
            self.stats.dirs_reopened += 1;
            frames[k].fd = Some(fd);
            evict_fds_below(frames, k);
        }
        true
    }

    /// Hands half the pending subdirectories of the shallowest busy frame to idle threads.
    fn donate<'a>(&mut self, sh: &Shared<'a>, job: &Job<'a>, frames: &mut [Frame], path: &[u8]) {
        let total: usize = frames.iter().map(|f| f.pending.len()).sum();
        if total < 2 {
            return;
        }
        let Some(k) = frames.iter().position(|f| !f.pending.is_empty()) else {
            return;
        };
        let take = frames[k].pending.len().div_ceil(2).min(64);
        let names: Vec<CString> = frames[k].pending.drain(..take).collect();
        let mut chain = job.chain.clone();
        chain.extend(frames[..=k].iter().map(|f| (f.dev, f.ino)));
        let base = &path[..frames[k].path_len];
        let jobs: Vec<Job<'a>> = names
            .into_iter()
            .map(|name| {
                let mut rel = base.to_vec();
                push_component(&mut rel, name.to_bytes());
                Job {
                    root: Arc::clone(&job.root),
                    rel,
                    chain: chain.clone(),
                }
            })
            .collect();
        let n = jobs.len();
        let mut q = lock(&sh.queue);
        q.jobs.extend(jobs);
        sh.queued.fetch_add(n, Ordering::Relaxed);
        drop(q);
        self.stats.subtrees_shared += n as u64;
        sh.wake.notify_all();
    }
}

struct BusyGuard<'s, 'a>(&'s Shared<'a>);

impl Drop for BusyGuard<'_, '_> {
    fn drop(&mut self) {
        let mut q = lock(&self.0.queue);
        q.busy -= 1;
        if q.busy == 0 && q.jobs.is_empty() {
            self.0.wake.notify_all();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

pub(crate) fn push_component(path: &mut Vec<u8>, name: &[u8]) {
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
}

/// Keeps at most [`MAX_DIR_FDS`] directory fds open, closing the shallowest first (they are
/// needed last and can be re-opened by name).
fn evict_fds(frames: &mut [Frame]) {
    let top = frames.len().saturating_sub(1);
    evict_fds_below(frames, top);
}

fn evict_fds_below(frames: &mut [Frame], keep_from: usize) {
    let mut open = frames.iter().filter(|f| f.fd.is_some()).count();
    for frame in frames.iter_mut().take(keep_from) {
        if open <= MAX_DIR_FDS {
            break;
        }
        if frame.fd.take().is_some() {
            open -= 1;
        }
    }
}

/// Where the files a walk finds go.
pub(crate) trait FileSink {
    /// Names the root in warnings, e.g. `upper layer /x of container abc`.
    fn label(&self) -> &str;
    /// An overlay upper dir: files may be metacopy-only copies whose data is elsewhere.
    fn upper(&self) -> bool;
    /// Takes a place for one more candidate; `false` (and the file counted as omitted) when
    /// the root already holds [`crate::MAX_CANDIDATES_PER_ROOT`].
    fn reserve(&self) -> bool;
    fn push(&self, candidate: Candidate);
    /// A warning that is a property of a file (it holds until the file changes), so a
    /// pass that does not look at the file again can repeat it.
    fn note(&self, _kind: &'static str, _warning: &str) {}
}
