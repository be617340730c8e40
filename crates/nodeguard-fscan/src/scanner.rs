//! [`FsScanner`]: plans which roots to walk (each distinct image layer once, cached layers not
//! at all), walks them in parallel, and composes each container's view.

use crate::events::FsEvents;
use crate::incremental::{self, LayerJob, LayerTree, Pass, Refreshed};
use crate::overlay;
use crate::sys;
use crate::walk::MAX_CANDIDATES_PER_ROOT;
use crate::walk::{self, Candidate, RootResult, WalkConfig, WalkRoot};
use crate::{ContainerRoot, FsScanOutput, FsStats, Incomplete, RootSpec, WalkBudget};
use nodeguard_hash::{Algorithms, DigestCache};
use nodeguard_model::OverlayLayers;
use nodeguard_model::{escape_path, FileEntry, FsEventSource, FsEventStats, Layer};
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Identity of a lower layer directory: an unchanged layer keeps all four.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LayerKey {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
}

struct CachedLayer {
    key: LayerKey,
    candidates: Arc<Vec<Candidate>>,
    /// Candidates past the per-root bound, counted when the layer was walked.
    omitted: u64,
}

/// Scans container filesystems; keeps the per-layer cache and the digest cache between
/// scans, so a daemon keeps one for its lifetime.
pub struct FsScanner {
    budget: WalkBudget,
    threads: usize,
    layers: HashMap<PathBuf, CachedLayer>,
    /// Digests by file identity: bounded, and shareable with executable hashing
    /// ([`FsScanner::with_digest_cache`]) so a setuid binary that also runs is read once.
    digests: Arc<DigestCache>,
    algorithms: Algorithms,
    /// Writable layers kept as directory trees between scans (`incremental.rs`), by path.
    uppers: HashMap<PathBuf, LayerTree>,
    /// Directories all `uppers` hold.
    upper_dirs: AtomicUsize,
    /// Writable layers whose tree passed a bound: walked in full until the next full scan.
    uppers_too_big: HashSet<PathBuf>,
    incremental: bool,
    /// Entries per writable layer a full scan lists again although unchanged.
    recheck_files: u64,
    /// The event source naming directories with changed inodes (`events.rs`), if any.
    events: Option<FsEvents>,
    events_source: FsEventSource,
    /// Directories listed because an event named them, since the source started.
    events_dirs_listed: u64,
    /// Whether each writable layer is on a marked filesystem (found once per layer).
    events_covered: HashMap<PathBuf, bool>,
}

/// Entries per writable layer a filesystem scan re-checks by default: a layer of up to this
/// many files is re-checked in full on every filesystem scan.
pub const DEFAULT_RECHECK_FILES: u64 = 250_000;

/// Entries of the digest cache an [`FsScanner::new`] makes for itself.
const OWN_DIGEST_CACHE_ENTRIES: usize = 65_536;

/// Where one container's candidates come from.
enum Source {
    Walk(usize),
    Cached(Arc<Vec<Candidate>>),
    Missing,
}

impl FsScanner {
    /// `threads` walkers at most (at least one).
    /// Files are hashed with SHA-256 into a digest cache of its own.
    pub fn new(budget: WalkBudget, threads: usize) -> FsScanner {
        FsScanner::with_digest_cache(
            budget,
            threads,
            Arc::new(DigestCache::new(OWN_DIGEST_CACHE_ENTRIES)),
            Algorithms::SHA256,
        )
    }

    /// Files are hashed with `algorithms` into `digests` (the scan's one cache).
    pub fn with_digest_cache(
        budget: WalkBudget,
        threads: usize,
        digests: Arc<DigestCache>,
        algorithms: Algorithms,
    ) -> FsScanner {
        FsScanner {
            budget,
            threads: threads.max(1),
            layers: HashMap::new(),
            digests,
            algorithms,
            uppers: HashMap::new(),
            upper_dirs: AtomicUsize::new(0),
            uppers_too_big: HashSet::new(),
            incremental: true,
            recheck_files: DEFAULT_RECHECK_FILES,
            events: None,
            events_source: FsEventSource::Off,
            events_dirs_listed: 0,
            events_covered: HashMap::new(),
        }
    }

    /// Whether writable layers are kept as directory trees between scans (on by default):
    /// a process scan then lists only directories whose times changed, and a filesystem scan
    /// re-checks up to [`Self::set_recheck_files`] entries per layer. Off: every scan walks
    /// every writable layer in full.
    pub fn set_incremental(&mut self, on: bool) {
        if on != self.incremental {
            self.incremental = on;
            self.forget_uppers();
        }
    }

    /// Entries per writable layer a filesystem scan lists again although their directories
    /// did not change (what finds a `chmod u+s` on an existing file); a bigger layer is
    /// re-checked over several filesystem scans. At least 1.
    pub fn set_recheck_files(&mut self, files: u64) {
        self.recheck_files = files.max(1);
    }

    /// The event source for writable layers: with one, a directory it names is listed again
    /// on the next pass although its times did not change (a `chmod u+s` on an existing file
    /// is then seen by the next process scan), and lost events start a re-check round at
    /// once. `source` is what the report says (`Unavailable` when it was asked for but could
    /// not be had). Needs [`Self::set_incremental`] on (the default) to matter.
    pub fn set_events(&mut self, source: FsEventSource, events: Option<FsEvents>) {
        self.events_source = source;
        self.events = events;
        self.events_covered.clear();
    }

    fn forget_uppers(&mut self) {
        self.uppers.clear();
        self.uppers_too_big.clear();
        self.upper_dirs.store(0, Ordering::Relaxed);
    }

    /// Directories the writable-layer trees hold, over all layers.
    pub fn cached_upper_dirs(&self) -> usize {
        self.upper_dirs.load(Ordering::Relaxed)
    }

    /// Drops the trees of writable layers not in `keep`.
    fn prune_uppers(&mut self, keep: &HashSet<&Path>) {
        let total = &self.upper_dirs;
        self.uppers.retain(|path, tree| {
            let kept = keep.contains(path.as_path());
            if !kept {
                total.fetch_sub(tree.dirs(), Ordering::Relaxed);
            }
            kept
        });
        self.uppers_too_big
            .retain(|path| keep.contains(path.as_path()));
        self.events_covered
            .retain(|path, _| keep.contains(path.as_path()));
    }

    /// Digests to compute from the next scan on. Cached layers hashed with other digests are
    /// walked again, so every file has what was asked for.
    pub fn set_algorithms(&mut self, algorithms: Algorithms) {
        if algorithms != self.algorithms {
            self.algorithms = algorithms;
            self.layers.clear();
            self.forget_uppers();
        }
    }

    /// Forgets every cached layer and digest: the next scan walks and hashes everything.
    pub fn clear_cache(&mut self) {
        self.layers.clear();
        self.forget_uppers();
        self.digests.clear();
    }

    /// Number of lower layers currently cached.
    pub fn cached_layers(&self) -> usize {
        self.layers.len()
    }

    /// Scans every container root: each distinct lower dir once (or from the cache), each
    /// upper dir and merged root every time.
    pub fn scan(&mut self, roots: &[ContainerRoot]) -> FsScanOutput {
        self.scan_roots(roots, true)
    }

    /// The fast scan between full ones: walks only the writable (upper) layers of overlay
    /// roots whose image layers are all cached and unchanged, and composes those containers
    /// from the cache. Writable layers are small; image layers and merged roots wait for
    /// [`Self::scan`]. Returns the output and the ids of the containers it covers (the
    /// others' files are whatever the last full scan found). The layer cache is not pruned.
    pub fn scan_writable(&mut self, roots: &[ContainerRoot]) -> (FsScanOutput, Vec<String>) {
        self.prune_uppers(&upper_dirs(roots));
        let covered: Vec<ContainerRoot> = roots
            .iter()
            .filter(|root| match &root.spec {
                RootSpec::Overlay(OverlayLayers { lower_dirs, .. }) => {
                    lower_dirs.iter().all(|dir| {
                        let cached = self.layers.get(dir).map(|c| c.key);
                        cached.is_some() && layer_key(dir).ok() == cached
                    })
                }
                RootSpec::Merged { .. } => false,
            })
            .cloned()
            .collect();
        let ids = covered.iter().map(|r| r.container_id.clone()).collect();
        (self.scan_roots(&covered, false), ids)
    }

    /// Whether the event source watches the filesystem of writable layer `upper` (`true`
    /// without a source); found once per layer, said once when not.
    fn layer_watched(&mut self, upper: &Path, label: &str, warnings: &mut Vec<String>) -> bool {
        let Some(events) = &self.events else {
            return true;
        };
        if let Some(watched) = self.events_covered.get(upper) {
            return *watched;
        }
        let watched = events.covers(upper);
        if !watched {
            warnings.push(format!(
                "{label} is on a filesystem without a fanotify mark: a chmod or xattr change \
                 on an existing file there is seen at the re-check only (--fs-events-paths)"
            ));
        }
        self.events_covered.insert(upper.to_path_buf(), watched);
        watched
    }

    fn event_stats(&self, unmarked_layers: u64) -> FsEventStats {
        let totals = self
            .events
            .as_ref()
            .map(FsEvents::totals)
            .unwrap_or_default();
        FsEventStats {
            source: self.events_source,
            events: totals.events,
            dirs_listed: self.events_dirs_listed,
            lost: totals.lost,
            unmarked_layers,
        }
    }

    fn scan_roots(&mut self, roots: &[ContainerRoot], full: bool) -> FsScanOutput {
        if full {
            self.prune_uppers(&upper_dirs(roots));
            // A layer that outgrew its tree gets another chance once per full scan.
            self.uppers_too_big.clear();
        }
        let mut stats = FsStats::default();
        // What the event source named since the last pass; a loss re-checks every layer now.
        let changes = self.events.as_ref().map(FsEvents::take).unwrap_or_default();
        if changes.lost {
            for tree in self.uppers.values_mut() {
                tree.restart_round();
            }
        }
        let mut unmarked_layers = 0u64;
        // Writable layers brought up to date from their trees: (container index, path).
        let mut incremental_roots: Vec<(usize, PathBuf)> = Vec::new();
        let mut incremental_jobs: Vec<LayerJob> = Vec::new();
        let mut warnings = Vec::new();
        let mut walk_roots: Vec<WalkRoot> = Vec::new();
        let mut lower_sources: HashMap<PathBuf, Source> = HashMap::new();
        let mut lower_keys: HashMap<PathBuf, LayerKey> = HashMap::new();
        let mut other_sources: HashMap<(usize, bool), usize> = HashMap::new();

        // Which containers use each lower dir, for warnings.
        let mut users: HashMap<&Path, Vec<&str>> = HashMap::new();
        for root in roots {
            if let RootSpec::Overlay(OverlayLayers { lower_dirs, .. }) = &root.spec {
                for dir in lower_dirs {
                    users
                        .entry(dir.as_path())
                        .or_default()
                        .push(&root.container_id);
                }
            }
        }

        for (ci, root) in roots.iter().enumerate() {
            match &root.spec {
                RootSpec::Merged { root: path } => {
                    other_sources.insert((ci, false), walk_roots.len());
                    walk_roots.push(WalkRoot {
                        path: path.clone(),
                        label: format!(
                            "root {} of container {}",
                            path.display(),
                            root.container_id
                        ),
                        expect: None,
                        upper: false,
                    });
                }
                RootSpec::Overlay(OverlayLayers {
                    lower_dirs,
                    upper_dir,
                }) => {
                    for dir in lower_dirs {
                        if lower_sources.contains_key(dir) {
                            continue;
                        }
                        let label = lower_label(dir, users.get(dir.as_path()));
                        let key = match layer_key(dir) {
                            Ok(key) => key,
                            Err(e) => {
                                stats.count_error("root_open");
                                warnings.push(format!("cannot open {label}: {e}"));
                                lower_sources.insert(dir.clone(), Source::Missing);
                                continue;
                            }
                        };
                        lower_keys.insert(dir.clone(), key);
                        match self.layers.get(dir) {
                            Some(cached) if cached.key == key => {
                                stats.layers_cached += 1;
                                lower_sources.insert(
                                    dir.clone(),
                                    Source::Cached(Arc::clone(&cached.candidates)),
                                );
                            }
                            _ => {
                                lower_sources.insert(dir.clone(), Source::Walk(walk_roots.len()));
                                walk_roots.push(WalkRoot {
                                    path: dir.clone(),
                                    label,
                                    expect: Some((key.dev, key.ino)),
                                    upper: false,
                                });
                            }
                        }
                    }
                    if let Some(upper) = upper_dir {
                        let label = format!(
                            "upper layer {} of container {}",
                            upper.display(),
                            root.container_id
                        );
                        let shared = incremental_roots.iter().any(|(_, p)| p == upper);
                        if self.incremental && !shared && !self.uppers_too_big.contains(upper) {
                            if !self.layer_watched(upper, &label, &mut warnings) {
                                unmarked_layers += 1;
                            }
                            incremental_roots.push((ci, upper.clone()));
                            incremental_jobs.push(LayerJob {
                                path: upper.clone(),
                                label,
                                tree: self.uppers.remove(upper),
                            });
                        } else {
                            other_sources.insert((ci, true), walk_roots.len());
                            walk_roots.push(WalkRoot {
                                path: upper.clone(),
                                label,
                                expect: None,
                                upper: true,
                            });
                        }
                    }
                }
            }
        }

        let cfg = WalkConfig {
            budget: &self.budget,
            threads: self.threads,
            algorithms: self.algorithms,
            digests: &self.digests,
        };
        // Writable layers from their trees first: one that outgrows its tree joins the walk.
        let mut refreshed: Vec<(usize, walk::RootResult)> = Vec::new();
        let mut suppressed_warnings = 0u64;
        if !incremental_jobs.is_empty() {
            let pass = if full || changes.lost {
                Pass::Recheck {
                    files: self.recheck_files,
                }
            } else {
                Pass::Changes
            };
            let (outcomes, workers) = incremental::refresh_all(
                incremental_jobs,
                &cfg,
                pass,
                &changes.dirs,
                &self.upper_dirs,
            );
            for w in workers {
                stats.add(&w.stats);
                for warning in w.warnings {
                    if warnings.len() < walk::MAX_WARNINGS {
                        warnings.push(warning);
                    } else {
                        suppressed_warnings += 1;
                    }
                }
                suppressed_warnings += w.suppressed;
            }
            for ((ci, path), outcome) in incremental_roots.into_iter().zip(outcomes) {
                match outcome {
                    Refreshed::Done(done) => {
                        let incremental::Done {
                            result,
                            tree,
                            counts,
                        } = *done;
                        if !result.failed {
                            stats.layers_walked += 1;
                            stats.layers_incremental += 1;
                        }
                        stats.dirs_unchanged += counts.unchanged;
                        self.events_dirs_listed += counts.by_event;
                        if let Some(tree) = tree {
                            let age = tree.recheck_age().as_secs();
                            stats.recheck_age_seconds = stats.recheck_age_seconds.max(age);
                            self.uppers.insert(path, tree);
                        }
                        refreshed.push((ci, result));
                    }
                    Refreshed::Fallback(why) => {
                        stats.incremental_fallbacks += 1;
                        let label = format!(
                            "upper layer {} of container {}",
                            path.display(),
                            roots[ci].container_id
                        );
                        if warnings.len() < walk::MAX_WARNINGS {
                            warnings.push(format!("{label}: walked in full: {}", why.reason()));
                        }
                        other_sources.insert((ci, true), walk_roots.len());
                        walk_roots.push(WalkRoot {
                            label,
                            path: path.clone(),
                            expect: None,
                            upper: true,
                        });
                        self.uppers_too_big.insert(path);
                    }
                }
            }
        }
        stats.events = self.event_stats(unmarked_layers);
        let walked = walk::walk_roots(&walk_roots, &cfg);
        stats.add(&walked.stats);
        warnings.extend(walked.warnings);
        let mut results: Vec<RootResult> = walked.results;
        for (ci, result) in refreshed {
            other_sources.insert((ci, true), results.len());
            results.push(result);
        }

        // Freshly walked lower layers go into the cache unless their walk was cut short.
        let mut lower_candidates: HashMap<PathBuf, Arc<Vec<Candidate>>> = HashMap::new();
        // Lower layers whose inventory is partial: (why the walk stopped, files omitted).
        let mut lower_gaps: HashMap<&Path, (Option<String>, u64)> = HashMap::new();
        for (dir, source) in &lower_sources {
            match source {
                Source::Cached(c) => {
                    lower_candidates.insert(dir.clone(), Arc::clone(c));
                    let omitted = self.layers.get(dir).map_or(0, |l| l.omitted);
                    if omitted > 0 {
                        lower_gaps.insert(dir.as_path(), (None, omitted));
                    }
                }
                Source::Walk(i) => {
                    let result = &mut results[*i];
                    if result.truncated || result.omitted > 0 {
                        lower_gaps.insert(
                            dir.as_path(),
                            (result.truncated_why.clone(), result.omitted),
                        );
                    }
                    let candidates = Arc::new(std::mem::take(&mut result.candidates));
                    if !result.truncated && !result.failed {
                        if let Some(st) = result.root_stat {
                            let key = LayerKey {
                                dev: st.dev,
                                ino: st.ino,
                                mtime: st.mtime,
                            };
                            // Cache under the key taken before the walk only if the layer
                            // did not change while it was walked.
                            if lower_keys.get(dir) == Some(&key) {
                                self.layers.insert(
                                    dir.clone(),
                                    CachedLayer {
                                        key,
                                        candidates: Arc::clone(&candidates),
                                        omitted: result.omitted,
                                    },
                                );
                            }
                        }
                    }
                    lower_candidates.insert(dir.clone(), candidates);
                }
                Source::Missing => {}
            }
        }
        // Layers no container uses any more leave the cache (a full scan sees them all).
        if full {
            self.layers.retain(|dir, _| lower_sources.contains_key(dir));
        }

        let incomplete = incomplete_roots(roots, &other_sources, &results, &lower_gaps);

        let mut files = Vec::new();
        for (ci, root) in roots.iter().enumerate() {
            match &root.spec {
                RootSpec::Merged { .. } => {
                    if let Some(i) = other_sources.get(&(ci, false)) {
                        for c in &results[*i].candidates {
                            files.push(entry(&root.container_id, c, Layer::Unknown));
                        }
                    }
                }
                RootSpec::Overlay(OverlayLayers {
                    lower_dirs,
                    upper_dir,
                }) => {
                    let upper = other_sources
                        .get(&(ci, true))
                        .map(|i| &results[*i].candidates);
                    compose_overlay(
                        &root.container_id,
                        lower_dirs,
                        upper_dir.as_deref(),
                        upper.map(Vec::as_slice).unwrap_or(&[]),
                        &lower_candidates,
                        &mut files,
                        &mut stats,
                        &mut warnings,
                    );
                }
            }
        }
        files.sort_by(|a, b| (&a.container_id, &a.path).cmp(&(&b.container_id, &b.path)));

        let suppressed_warnings = suppressed_warnings + walked.suppressed_warnings;
        if suppressed_warnings > 0 {
            warnings.push(format!("{suppressed_warnings} more warnings not shown"));
        }
        FsScanOutput {
            incomplete,
            files,
            stats,
            warnings,
        }
    }
}

/// Each container with a root whose walk stopped early or whose candidates were capped.
fn incomplete_roots(
    roots: &[ContainerRoot],
    other_sources: &HashMap<(usize, bool), usize>,
    results: &[RootResult],
    lower_gaps: &HashMap<&Path, (Option<String>, u64)>,
) -> Vec<Incomplete> {
    let mut out = Vec::new();
    for (ci, root) in roots.iter().enumerate() {
        let mut reasons = Vec::new();
        let mut omitted = 0u64;
        let mut note = |what: &str, why: Option<&str>, n: u64| {
            if let Some(why) = why {
                reasons.push(format!("{what}: walk stopped: {why}"));
            }
            if n > 0 {
                reasons.push(format!(
                    "{what}: more than {MAX_CANDIDATES_PER_ROOT} setuid/setgid/capability files"
                ));
                omitted += n;
            }
        };
        for (upper, what) in [(false, "root"), (true, "writable layer")] {
            if let Some(r) = other_sources.get(&(ci, upper)).map(|i| &results[*i]) {
                let why = r
                    .truncated_why
                    .as_deref()
                    .or(r.truncated.then_some("budget"));
                note(what, why, r.omitted);
            }
        }
        if let RootSpec::Overlay(OverlayLayers { lower_dirs, .. }) = &root.spec {
            for dir in lower_dirs {
                if let Some((why, n)) = lower_gaps.get(dir.as_path()) {
                    note("image layer", why.as_deref(), *n);
                }
            }
        }
        if !reasons.is_empty() {
            reasons.dedup();
            out.push(Incomplete {
                container_id: root.container_id.clone(),
                reason: reasons.join("; "),
                files_omitted: omitted,
            });
        }
    }
    out
}

/// The writable layers of `roots`.
fn upper_dirs(roots: &[ContainerRoot]) -> HashSet<&Path> {
    roots
        .iter()
        .filter_map(|root| match &root.spec {
            RootSpec::Overlay(OverlayLayers {
                upper_dir: Some(upper),
                ..
            }) => Some(upper.as_path()),
            _ => None,
        })
        .collect()
}

fn lower_label(dir: &Path, users: Option<&Vec<&str>>) -> String {
    let users = users.map(Vec::as_slice).unwrap_or(&[]);
    let mut unique: Vec<&str> = Vec::new();
    for u in users {
        if !unique.contains(u) {
            unique.push(u);
        }
    }
    let shown: Vec<&str> = unique.iter().take(3).copied().collect();
    let more = unique.len().saturating_sub(shown.len());
    let mut label = format!(
        "image layer {} (container {}",
        dir.display(),
        shown.join(", ")
    );
    if more > 0 {
        label.push_str(&format!(" and {more} more"));
    }
    label.push(')');
    label
}

fn layer_key(dir: &Path) -> std::io::Result<LayerKey> {
    let fd = sys::open_root(dir)?;
    let st = sys::fstat(fd.as_fd())?;
    Ok(LayerKey {
        dev: st.dev,
        ino: st.ino,
        mtime: st.mtime,
    })
}

fn entry(container_id: &str, c: &Candidate, layer: Layer) -> FileEntry {
    let mut path = Vec::with_capacity(c.rel.len() + 1);
    path.push(b'/');
    path.extend_from_slice(&c.rel);
    FileEntry {
        image_verdict: None,
        container_id: container_id.to_string(),
        path: escape_path(&path),
        setuid: c.stat.mode & libc::S_ISUID != 0,
        setgid: c.stat.mode & libc::S_ISGID != 0,
        capabilities: c.caps.clone(),
        mode: c.stat.mode & 0o7777,
        uid: c.stat.uid,
        gid: c.stat.gid,
        size: c.stat.size,
        sha256: c.sha256.clone(),
        sha512: c.sha512.clone(),
        layer,
    }
}

/// Applies overlayfs' rules to one container: upper files are always visible; a lower file
/// is visible unless a layer above it (upper first, then the lowers above it) hides it.
#[allow(clippy::too_many_arguments)]
fn compose_overlay(
    container_id: &str,
    lower_dirs: &[PathBuf],
    upper_dir: Option<&Path>,
    upper: &[Candidate],
    lowers: &HashMap<PathBuf, Arc<Vec<Candidate>>>,
    files: &mut Vec<FileEntry>,
    stats: &mut FsStats,
    warnings: &mut Vec<String>,
) {
    for c in upper {
        files.push(entry(container_id, c, Layer::Upper));
    }
    // Layers above lower k: the upper, then lowers 0..k. Opened lazily, once per container.
    let mut above: Vec<(&Path, Option<Option<OwnedFd>>)> = Vec::new();
    if let Some(u) = upper_dir {
        above.push((u, None));
    }
    let mut seen: HashSet<&[u8]> = upper.iter().map(|c| c.rel.as_slice()).collect();
    for dir in lower_dirs {
        if let Some(cands) = lowers.get(dir) {
            for c in cands.iter() {
                if seen.contains(c.rel.as_slice()) {
                    continue;
                }
                let mut hidden = false;
                for (path, fd) in above.iter_mut() {
                    let fd = fd.get_or_insert_with(|| match sys::open_root(path) {
                        Ok(fd) => Some(fd),
                        Err(e) => {
                            stats.count_error("overlay_lookup");
                            warnings.push(format!(
                                "container {container_id}: cannot open layer {}: {e}; \
                                 files below it may be reported although it hides them",
                                path.display()
                            ));
                            None
                        }
                    });
                    let Some(fd) = fd else { continue };
                    match overlay::hides(fd.as_fd(), &c.rel) {
                        Ok(true) => {
                            hidden = true;
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            stats.count_error("overlay_lookup");
                            warnings.push(format!(
                                "container {container_id}: cannot check /{} in layer {}: {e}; \
                                 reported as visible",
                                escape_path(&c.rel),
                                path.display()
                            ));
                        }
                    }
                }
                if !hidden {
                    files.push(entry(container_id, c, Layer::Image));
                }
            }
            for c in cands.iter() {
                seen.insert(c.rel.as_slice());
            }
        }
        above.push((dir.as_path(), None));
    }
}
