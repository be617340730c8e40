//! The writable (upper) layer of a running container, kept between scans as a tree of its
//! directories, so that a pass costs what changed rather than what is there.
//!
//! Why this finds what a full walk finds: creating, removing or renaming an entry (a file,
//! a hard link, a copy-up from an image layer) changes its directory's mtime and ctime. A
//! directory whose `(ino, mtime, ctime)` is what it was when it was last listed holds the same
//! names, so its files need no look; only a changed directory is listed again, and a new
//! subdirectory is walked in full. Comparing ctime too defeats a container that sets a
//! directory's mtime back with `utimensat` (that sets the ctime to now: nobody can set it).
//! What a directory's times do not show is a change to an existing file's inode: `chmod u+s`
//! or a new `security.capability` changes only that file's ctime. Those are found by the
//! re-check ([`Pass::Recheck`], on the filesystem interval): it lists directories again in
//! rounds, at most `recheck_files` entries per layer and pass, continuing where it stopped;
//! [`LayerTree::recheck_age`] is how long ago the last complete round started (every entry
//! has been looked at since), exported as the staleness of the inventory. The files already
//! found (setuid/setgid/capability candidates, a few per layer) are stat'ed on every pass, so
//! a changed or removed one never outlives a pass.
//!
//! Timestamps are taken from a coarse clock: an entry made in the same tick just after a
//! directory was stat'ed leaves its times as they were read. A directory whose ctime is less
//! than [`SETTLE`] old when it is listed is therefore listed again on the next pass (and a
//! candidate file's likewise examined again).
//!
//! Cost per pass with nothing changed: one `fstatat` per directory, plus an `openat` and a
//! `close` per directory that has subdirectories or candidates; files are not looked at. The
//! walk discipline is the full walk's: every name is resolved relative to its parent's fd with
//! `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`, a directory opened is checked to be the inode stat'ed,
//! and other filesystems are not entered.
//!
//! Bounds: at most [`MAX_DEPTH`] levels (so at most that many fds per thread) and a number of
//! directories per layer and in total (an atomic shared by all layers); past either, the
//! layer's tree is dropped and the layer is walked in full as before (counted as
//! `incremental_fallbacks`). At most [`MAX_NOTES`] lasting warnings are kept per layer.

use crate::sys::{self, EntryType, Stat};
use crate::walk::FileSink;
use crate::walk::{Candidate, RootResult, WalkConfig, Worker, REDIRECT_XATTR};
use crate::MAX_CANDIDATES_PER_ROOT;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Directory levels a tree follows; a deeper layer is walked in full each pass instead.
pub(crate) const MAX_DEPTH: usize = 48;
/// Directories one layer's tree may hold (about 150 bytes each).
pub(crate) const MAX_DIRS_PER_LAYER: usize = 100_000;
/// Directories all trees together may hold.
pub(crate) const MAX_DIRS_TOTAL: usize = 400_000;
/// Lasting warnings (metacopy, invalid capability, redirect) repeated per layer and pass.
pub(crate) const MAX_NOTES: usize = 100;
/// A directory changed less than this long before it was listed is listed again next pass.
/// (The kernel stamps times from a clock that advances once a jiffy, 1-10 ms.)
pub(crate) const SETTLE: Duration = Duration::from_millis(100);

/// What a pass looks at besides changed directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Changed directories only (a process scan).
    Changes,
    /// Also lists unchanged directories not yet looked at in this round, up to this many
    /// entries (a filesystem scan).
    Recheck { files: u64 },
}

/// Why a tree was given up for this pass; the layer is walked in full instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    TooManyDirs,
    TooDeep,
}

impl Fallback {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Fallback::TooManyDirs => "more directories than the incremental cache holds",
            Fallback::TooDeep => "deeper than the incremental cache follows",
        }
    }
}

/// One directory as it was when last listed.
struct DirNode {
    name: Box<CStr>,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// Listed at least once (a new node is listed on its first visit).
    listed: bool,
    /// Its times were too recent to trust when it was listed: list it again.
    unsettled: bool,
    /// The re-check round it was last listed in.
    round: u32,
    /// Entries it held when last listed (what listing it again costs).
    entries: u32,
    subdirs: Vec<DirNode>,
    /// Setuid/setgid/capability files directly in it.
    files: Vec<Candidate>,
    /// Candidates past the layer's bound, directly in it.
    omitted: u32,
    notes: Vec<(&'static str, String)>,
}

impl DirNode {
    fn new(name: Box<CStr>, ino: u64) -> DirNode {
        DirNode {
            name,
            ino,
            mtime: (0, 0),
            ctime: (0, 0),
            listed: false,
            unsettled: false,
            round: 0,
            entries: 0,
            subdirs: Vec::new(),
            files: Vec::new(),
            omitted: 0,
            notes: Vec::new(),
        }
    }

    /// Directories in this subtree, itself included.
    fn count(&self) -> usize {
        1 + self.subdirs.iter().map(DirNode::count).sum::<usize>()
    }
}

/// One writable layer's directories between scans.
pub(crate) struct LayerTree {
    dev: u64,
    ino: u64,
    root: DirNode,
    dirs: usize,
    /// Candidates held (at most [`MAX_CANDIDATES_PER_ROOT`]).
    kept: usize,
    notes: usize,
    round: u32,
    round_started: Instant,
    /// When the last complete re-check round started: every entry was looked at since.
    checked_since: Instant,
}

impl LayerTree {
    fn new(dev: u64, ino: u64) -> LayerTree {
        let now = Instant::now();
        LayerTree {
            dev,
            ino,
            root: DirNode::new(c".".into(), ino),
            dirs: 1,
            kept: 0,
            notes: 0,
            round: 1,
            round_started: now,
            checked_since: now,
        }
    }

    /// Directories held.
    pub(crate) fn dirs(&self) -> usize {
        self.dirs
    }

    /// How long ago every entry was last looked at, at the latest.
    pub(crate) fn recheck_age(&self) -> Duration {
        self.checked_since.elapsed()
    }

    /// Starts a new re-check round now (events were lost: whatever the current round already
    /// listed may have changed unseen since).
    pub(crate) fn restart_round(&mut self) {
        self.round = self.round.wrapping_add(1);
        self.round_started = Instant::now();
    }
}

/// Counters of one pass over one layer, beside the worker's [`crate::FsStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PassCounts {
    /// Directories found unchanged (stat'ed, not listed).
    pub unchanged: u64,
    /// Directories listed (new, changed, unsettled or re-checked).
    pub listed: u64,
    /// Directories listed only because an event named them (their times were unchanged).
    pub by_event: u64,
}

/// The outcome of one pass over one layer.
pub(crate) enum Refreshed {
    Done(Box<Done>),
    /// Walk this layer in full instead; no tree is kept.
    Fallback(Fallback),
}

/// What the layer holds now (as a full walk's result) and the tree to keep (none when the
/// layer could not be opened).
pub(crate) struct Done {
    pub result: RootResult,
    pub tree: Option<LayerTree>,
    pub counts: PassCounts,
}

/// Brings `tree` (or a new one) up to date with the layer at `path`.
pub(crate) fn refresh(
    worker: &mut Worker,
    cfg: &WalkConfig<'_>,
    job: LayerJob,
    pass: Pass,
    dirty: &HashSet<(u64, u64)>,
    total_dirs: &AtomicUsize,
) -> Refreshed {
    let LayerJob { path, label, tree } = job;
    let (path, label) = (path.as_path(), label.as_str());
    let mut result = RootResult::default();
    let opened = sys::open_root(path).and_then(|fd| Ok((sys::fstat(fd.as_fd())?, fd)));
    let (st, fd) = match opened {
        Ok(v) => v,
        Err(e) => {
            if let Some(t) = tree {
                total_dirs.fetch_sub(t.dirs, Ordering::Relaxed);
            }
            worker.stats.count_error("root_open");
            worker.warn(format!("cannot open {label}: {e}"));
            result.failed = true;
            return Refreshed::Done(Box::new(Done {
                result,
                tree: None,
                counts: PassCounts::default(),
            }));
        }
    };
    result.root_stat = Some(st);
    let mut tree = match tree {
        Some(t) if (t.dev, t.ino) == (st.dev, st.ino) => t,
        other => {
            // New, or the layer directory was replaced: start over.
            if let Some(t) = other {
                total_dirs.fetch_sub(t.dirs, Ordering::Relaxed);
            }
            total_dirs.fetch_add(1, Ordering::Relaxed);
            LayerTree::new(st.dev, st.ino)
        }
    };
    let mut pass = Walker {
        worker,
        cfg,
        label,
        dev: st.dev,
        round: tree.round,
        recheck_left: match pass {
            Pass::Changes => None,
            Pass::Recheck { files } => Some(files),
        },
        round_incomplete: false,
        started: Instant::now(),
        entries: 0,
        truncated: None,
        counts: PassCounts::default(),
        added: 0,
        removed: 0,
        total_dirs,
        dirty,
        layer_dirs: tree.dirs,
        chain: Vec::new(),
        sink: TreeSink {
            label,
            kept: Cell::new(tree.kept),
            notes: Cell::new(tree.notes),
            found: RefCell::new(Vec::new()),
            new_notes: RefCell::new(Vec::new()),
            omitted: Cell::new(0),
        },
    };
    let mut rel = Vec::new();
    let outcome = pass.visit(&mut tree.root, fd, st, &mut rel, 0);
    tree.dirs = (tree.dirs + pass.added).saturating_sub(pass.removed);
    tree.kept = pass.sink.kept.get();
    tree.notes = pass.sink.notes.get();
    let counts = pass.counts;
    let round_incomplete = pass.round_incomplete;
    let recheck_pass = pass.recheck_left.is_some();
    let truncated = pass.truncated.take();
    drop(pass);
    if let Err(fallback) = outcome {
        total_dirs.fetch_sub(tree.dirs, Ordering::Relaxed);
        return Refreshed::Fallback(fallback);
    }
    if let Some(why) = truncated {
        worker.stats.walks_truncated += 1;
        worker.warn(format!(
            "walk of {label} truncated: {why}; results for it are partial"
        ));
        result.truncated = true;
        result.truncated_why = Some(why);
    } else if recheck_pass && !round_incomplete {
        // Every directory was listed in this round: the round is complete.
        tree.checked_since = tree.round_started;
        tree.round = tree.round.wrapping_add(1);
        tree.round_started = Instant::now();
    }
    collect(&tree.root, &mut result);
    result.candidates.sort_by(|a, b| a.rel.cmp(&b.rel));
    Refreshed::Done(Box::new(Done {
        result,
        tree: Some(tree),
        counts,
    }))
}

/// The tree's candidates and omitted count into `result`.
fn collect(node: &DirNode, result: &mut RootResult) {
    result.candidates.extend(node.files.iter().cloned());
    result.omitted += u64::from(node.omitted);
    for sub in &node.subdirs {
        collect(sub, result);
    }
}

/// One pass over one tree.
struct Walker<'p, 'c> {
    worker: &'p mut Worker,
    cfg: &'p WalkConfig<'c>,
    label: &'p str,
    dev: u64,
    round: u32,
    /// Entries the re-check may still list this pass (`None`: not a re-check pass).
    recheck_left: Option<u64>,
    /// A directory was left unlisted in this round.
    round_incomplete: bool,
    started: Instant,
    /// Entries listed this pass, against the walk budget.
    entries: u64,
    truncated: Option<String>,
    counts: PassCounts,
    added: usize,
    removed: usize,
    total_dirs: &'p AtomicUsize,
    /// Directories `(dev, ino)` an event source says hold a changed inode
    /// (`events.rs`): listed again although their times are unchanged.
    dirty: &'p HashSet<(u64, u64)>,
    layer_dirs: usize,
    /// Inodes of the directories from the layer's root down to the one being visited: a
    /// subdirectory that is one of them (a bind-mount loop) is not entered, as in the full
    /// walk.
    chain: Vec<u64>,
    sink: TreeSink<'p>,
}

/// Where a listing's files go (interior mutability: [`FileSink`] takes `&self`).
struct TreeSink<'l> {
    label: &'l str,
    /// Candidates the tree holds.
    kept: Cell<usize>,
    /// Notes the tree holds.
    notes: Cell<usize>,
    found: RefCell<Vec<Candidate>>,
    new_notes: RefCell<Vec<(&'static str, String)>>,
    /// Candidates past the bound in the directory being listed.
    omitted: Cell<u32>,
}

impl FileSink for TreeSink<'_> {
    fn label(&self) -> &str {
        self.label
    }

    fn upper(&self) -> bool {
        true
    }

    fn reserve(&self) -> bool {
        if self.kept.get() >= MAX_CANDIDATES_PER_ROOT {
            self.omitted.set(self.omitted.get().saturating_add(1));
            return false;
        }
        self.kept.set(self.kept.get() + 1);
        true
    }

    fn push(&self, candidate: Candidate) {
        self.found.borrow_mut().push(candidate);
    }

    fn note(&self, kind: &'static str, warning: &str) {
        if self.notes.get() < MAX_NOTES {
            self.notes.set(self.notes.get() + 1);
            self.new_notes
                .borrow_mut()
                .push((kind, warning.to_string()));
        }
    }
}

/// A stat's times are recent enough that a change in the same clock tick could hide.
fn unsettled(st: &Stat) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let ctime = u128::try_from(st.ctime.0).unwrap_or(0) * 1_000_000_000
        + u128::try_from(st.ctime.1).unwrap_or(0);
    // A ctime in the future (a clock set back) is not settled either.
    ctime + SETTLE.as_nanos() >= now
}

impl Walker<'_, '_> {
    /// An event named this directory of the layer (one hash lookup; the set is empty
    /// without an event source).
    fn is_named(&self, ino: u64) -> bool {
        !self.dirty.is_empty() && self.dirty.contains(&(self.dev, ino))
    }

    /// [`Walker::is_named`], counted (once per directory visited).
    fn named_by_event(&mut self, ino: u64) -> bool {
        let named = self.is_named(ino);
        if named {
            self.counts.by_event += 1;
        }
        named
    }

    /// Visits `node`, open as `fd` (stat'ed as `st`, before anything was read from it).
    fn visit(
        &mut self,
        node: &mut DirNode,
        fd: OwnedFd,
        st: Stat,
        rel: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), Fallback> {
        if depth > MAX_DEPTH {
            return Err(Fallback::TooDeep);
        }
        self.chain.push(st.ino);
        let visited = self.visit_node(node, fd, st, rel, depth);
        self.chain.pop();
        visited
    }

    /// [`Walker::visit`] with `node` on the chain.
    fn visit_node(
        &mut self,
        node: &mut DirNode,
        fd: OwnedFd,
        st: Stat,
        rel: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), Fallback> {
        let changed = !node.listed
            || node.unsettled
            || (st.mtime, st.ctime) != (node.mtime, node.ctime)
            || self.named_by_event(st.ino);
        let due = node.round != self.round;
        let recheck = due && self.recheck_left.is_some_and(|left| left > 0);
        if (changed || recheck) && self.truncated.is_none() {
            self.list(node, fd.as_fd(), st, rel)?;
        } else {
            if due {
                self.round_incomplete = true;
            }
            self.counts.unchanged += 1;
            self.check_files(node, fd.as_fd(), rel);
            for (kind, warning) in &node.notes {
                self.worker.stats.count_error(kind);
                self.worker.warn(warning.clone());
            }
        }
        let mut i = 0;
        while i < node.subdirs.len() {
            match self.visit_child(&mut node.subdirs[i], fd.as_fd(), rel, depth)? {
                true => i += 1,
                false => {
                    let gone = node.subdirs.swap_remove(i);
                    self.drop_subtree(&gone);
                }
            }
        }
        Ok(())
    }

    /// Checks one subdirectory and visits it when it needs it; `false` when it is gone (or is
    /// no longer a directory of this filesystem).
    fn visit_child(
        &mut self,
        child: &mut DirNode,
        parent: BorrowedFd<'_>,
        rel: &mut Vec<u8>,
        depth: usize,
    ) -> Result<bool, Fallback> {
        let cst = match sys::stat_at(parent, &child.name) {
            Ok(st) => st,
            Err(e) => {
                self.worker.count_io("walk_io", &e);
                return Ok(false);
            }
        };
        if !cst.is_dir() {
            return Ok(false);
        }
        if cst.dev != self.dev {
            self.worker.stats.mounts_skipped += 1;
            return Ok(false);
        }
        if self.chain.contains(&cst.ino) {
            // One of its own ancestors (a bind mount on the host): kept by name, never entered,
            // and said every pass as the full walk says it.
            let mut path = rel.clone();
            push_name(&mut path, child.name.to_bytes());
            self.worker.stats.count_error("walk_loop");
            self.worker.warn(format!(
                "directory loop in {} at /{} (bind mount?): not entered",
                self.label,
                nodeguard_model::escape_path(&path)
            ));
            return Ok(true);
        }
        if child.ino == 0 {
            // Seen in its parent's listing, not visited yet (no inode is 0).
            child.ino = cst.ino;
        } else if cst.ino != child.ino {
            // Replaced by another directory of the same name: a new subtree.
            let old = std::mem::replace(child, DirNode::new(child.name.clone(), cst.ino));
            self.drop_subtree(&old);
            self.add_dir()?;
        }
        let changed = !child.listed
            || child.unsettled
            || (cst.mtime, cst.ctime) != (child.mtime, child.ctime)
            || self.is_named(cst.ino);
        let due = child.round != self.round && self.recheck_left.is_some();
        if due && self.recheck_left == Some(0) {
            self.round_incomplete = true;
        }
        let recheck = due && self.recheck_left.is_some_and(|left| left > 0);
        if !changed && !recheck && child.subdirs.is_empty() && child.files.is_empty() {
            // An unchanged leaf: nothing in it to look at.
            self.counts.unchanged += 1;
            for (kind, warning) in &child.notes {
                self.worker.stats.count_error(kind);
                self.worker.warn(warning.clone());
            }
            return Ok(true);
        }
        let fd = match sys::open_dir_at(parent, &child.name) {
            Ok(fd) => fd,
            Err(e) => {
                self.worker.count_open_dir_error(&e);
                return Ok(false);
            }
        };
        let st = match sys::fstat(fd.as_fd()) {
            Ok(st) if st.is_dir() && (st.dev, st.ino) == (self.dev, cst.ino) => st,
            Ok(_) => {
                // Swapped between the stat and the open: look again next pass.
                self.worker.stats.count_error("walk_changed");
                child.unsettled = true;
                return Ok(true);
            }
            Err(e) => {
                self.worker.count_io("walk_io", &e);
                return Ok(false);
            }
        };
        let len = rel.len();
        push_name(rel, child.name.to_bytes());
        let visited = self.visit(child, fd, st, rel, depth + 1);
        rel.truncate(len);
        visited.map(|()| true)
    }

    /// Lists `node` again: its files are examined, its subdirectories matched by name (kept
    /// ones keep their trees, new ones start empty and are listed when visited).
    fn list(
        &mut self,
        node: &mut DirNode,
        dir: BorrowedFd<'_>,
        st: Stat,
        rel: &[u8],
    ) -> Result<(), Fallback> {
        self.counts.listed += 1;
        self.worker.stats.dirs_walked += 1;
        // Forget what the last listing found here.
        self.sink
            .kept
            .set(self.sink.kept.get().saturating_sub(node.files.len()));
        self.sink
            .notes
            .set(self.sink.notes.get().saturating_sub(node.notes.len()));
        node.files.clear();
        node.notes.clear();
        self.sink.omitted.set(0);
        if !rel.is_empty() {
            let mut buf = [0u8; 256];
            if let Ok(Some(n)) = sys::fget_xattr(dir, REDIRECT_XATTR, &mut buf) {
                let warning = format!(
                    "{}: /{} is a renamed image directory (overlay redirect to {}); image \
                     files below it are reported at their old path",
                    self.label,
                    nodeguard_model::escape_path(rel),
                    nodeguard_model::escape_path(&buf[..n.min(buf.len())])
                );
                self.worker.stats.count_error("overlay_redirect");
                self.sink.note("overlay_redirect", &warning);
                self.worker.warn(warning);
            }
        }
        let mut dirs: Vec<CString> = Vec::new();
        let mut entries = 0u64;
        let mut reader = std::mem::take(&mut self.worker.reader);
        let cfg = self.cfg;
        let budget = cfg.budget;
        let res = reader.for_each(dir, |name, kind| {
            entries += 1;
            self.worker.stats.files_walked += 1;
            if self.entries + entries > budget.max_files {
                self.truncated = Some(format!("more than {} files (max_files)", budget.max_files));
                return false;
            }
            if entries.is_multiple_of(64) && self.started.elapsed() > budget.max_duration {
                self.truncated = Some(format!(
                    "took longer than {:?} (max_duration)",
                    budget.max_duration
                ));
                return false;
            }
            match kind {
                EntryType::Dir => dirs.push(name.to_owned()),
                EntryType::Regular => self.worker.examine(cfg, &self.sink, dir, name, None, rel),
                EntryType::Unknown => match sys::stat_at(dir, name) {
                    Ok(st) if st.is_dir() => dirs.push(name.to_owned()),
                    Ok(st) if st.is_reg() => {
                        self.worker
                            .examine(cfg, &self.sink, dir, name, Some(st), rel)
                    }
                    Ok(_) => {}
                    Err(e) => self.worker.count_io("walk_io", &e),
                },
                EntryType::Other => {}
            }
            true
        });
        self.worker.reader = reader;
        if let Err(e) = res {
            self.worker.count_io("walk_io", &e);
        }
        self.entries += entries;
        if let Some(left) = self.recheck_left.as_mut() {
            *left = left.saturating_sub(entries);
        }
        node.files = std::mem::take(&mut *self.sink.found.borrow_mut());
        node.notes = std::mem::take(&mut *self.sink.new_notes.borrow_mut());
        node.omitted = self.sink.omitted.get();
        if self.truncated.is_some() {
            // Not fully listed: keep it marked so the next pass lists it again. The
            // subdirectories seen are kept, the others stay until then.
            node.listed = false;
            return Ok(());
        }
        node.listed = true;
        node.unsettled = unsettled(&st);
        node.mtime = st.mtime;
        node.ctime = st.ctime;
        node.round = self.round;
        node.entries = u32::try_from(entries).unwrap_or(u32::MAX);
        // Match the subdirectories by name (sorted: a directory may hold very many).
        let mut old = std::mem::take(&mut node.subdirs);
        old.sort_by(|a, b| a.name.cmp(&b.name));
        let matches: Vec<Option<usize>> = dirs
            .iter()
            .map(|name| {
                old.binary_search_by(|probe| (*probe.name).cmp(name.as_c_str()))
                    .ok()
            })
            .collect();
        let mut kept: Vec<Option<DirNode>> = old.into_iter().map(Some).collect();
        let mut subdirs = Vec::with_capacity(dirs.len());
        for (name, found) in dirs.into_iter().zip(matches) {
            match found.and_then(|i| kept.get_mut(i).and_then(Option::take)) {
                Some(n) => subdirs.push(n),
                None => {
                    self.add_dir()?;
                    subdirs.push(DirNode::new(name.into_boxed_c_str(), 0));
                }
            }
        }
        for gone in kept.into_iter().flatten() {
            self.drop_subtree(&gone);
        }
        node.subdirs = subdirs;
        Ok(())
    }

    /// Stats the candidates of an unchanged directory: one changed (mode, owner, times,
    /// size) or gone is examined again.
    fn check_files(&mut self, node: &mut DirNode, dir: BorrowedFd<'_>, rel: &[u8]) {
        if node.files.is_empty() {
            return;
        }
        let old = std::mem::take(&mut node.files);
        for c in old {
            let name_bytes = c.rel.rsplit(|b| *b == b'/').next().unwrap_or(&c.rel);
            let Ok(name) = CString::new(name_bytes) else {
                continue;
            };
            match sys::stat_at(dir, &name) {
                Ok(st) if st == c.stat && !unsettled(&st) => node.files.push(c),
                Ok(st) => {
                    self.sink.kept.set(self.sink.kept.get().saturating_sub(1));
                    self.worker
                        .examine(self.cfg, &self.sink, dir, &name, Some(st), rel);
                    node.files.append(&mut self.sink.found.borrow_mut());
                }
                Err(e) => {
                    self.sink.kept.set(self.sink.kept.get().saturating_sub(1));
                    self.worker.count_io("walk_io", &e);
                }
            }
        }
    }

    fn add_dir(&mut self) -> Result<(), Fallback> {
        self.added += 1;
        let total = self.total_dirs.fetch_add(1, Ordering::Relaxed) + 1;
        if self.layer_dirs + self.added - self.removed > MAX_DIRS_PER_LAYER
            || total > MAX_DIRS_TOTAL
        {
            return Err(Fallback::TooManyDirs);
        }
        Ok(())
    }

    fn drop_subtree(&mut self, gone: &DirNode) {
        let n = gone.count();
        self.removed += n;
        self.total_dirs.fetch_sub(n, Ordering::Relaxed);
        let (files, notes) = subtree_kept(gone);
        self.sink
            .kept
            .set(self.sink.kept.get().saturating_sub(files));
        self.sink
            .notes
            .set(self.sink.notes.get().saturating_sub(notes));
    }
}

fn subtree_kept(node: &DirNode) -> (usize, usize) {
    node.subdirs
        .iter()
        .map(subtree_kept)
        .fold((node.files.len(), node.notes.len()), |a, b| {
            (a.0 + b.0, a.1 + b.1)
        })
}

fn push_name(rel: &mut Vec<u8>, name: &[u8]) {
    if !rel.is_empty() {
        rel.push(b'/');
    }
    rel.extend_from_slice(name);
}

/// One layer for [`refresh_all`].
pub(crate) struct LayerJob {
    pub path: std::path::PathBuf,
    pub label: String,
    pub tree: Option<LayerTree>,
}

/// Refreshes every layer on up to `cfg.threads` threads; outcomes in the order of `jobs`,
/// and the workers (their counters and warnings).
pub(crate) fn refresh_all(
    jobs: Vec<LayerJob>,
    cfg: &WalkConfig<'_>,
    pass: Pass,
    dirty: &HashSet<(u64, u64)>,
    total_dirs: &AtomicUsize,
) -> (Vec<Refreshed>, Vec<Worker>) {
    let n = jobs.len();
    let threads = cfg.threads.max(1).min(n);
    let slots: Vec<std::sync::Mutex<Option<LayerJob>>> = jobs
        .into_iter()
        .map(|j| std::sync::Mutex::new(Some(j)))
        .collect();
    let outcomes: Vec<std::sync::Mutex<Option<Refreshed>>> =
        (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let run = || {
        let mut worker = Worker::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            let Some(job) = lock(&slots[i]).take() else {
                continue;
            };
            let out = refresh(&mut worker, cfg, job, pass, dirty, total_dirs);
            *lock(&outcomes[i]) = Some(out);
        }
        worker
    };
    let workers = if threads <= 1 {
        vec![run()]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(run)).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    };
    let outcomes = outcomes
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| {
                    Refreshed::Done(Box::new(Done {
                        result: RootResult {
                            failed: true,
                            ..RootResult::default()
                        },
                        tree: None,
                        counts: PassCounts::default(),
                    }))
                })
        })
        .collect();
    (outcomes, workers)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
