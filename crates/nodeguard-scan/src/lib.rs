//! One scan of a node, from `/proc` to an immutable [`Report`].
//!
//! The flow goes one way: collect (processes, containers, cgroup limits, overlay layers) →
//! hash executables (cached by file identity) → walk container filesystems (cached per
//! image layer) → enrich with pod metadata → evaluate the policy → [`Report`]. A
//! [`Scanner`] keeps the caches between scans, so the daemon's steady state costs little;
//! the one-shot CLI makes one and drops it.
//!
//! Nothing here publishes anything: sinks (CLI output, metrics, HTTP API, Kubernetes
//! Events) receive the finished report.

pub use nodeguard_collect::held::{HeldProcess, HoldStats, Holder, Unheld, HOLD_BUDGET_DEFAULT};
use nodeguard_collect::{CollectOptions, CollectedProcess, Collector, Snapshot};
use nodeguard_fscan::{ContainerRoot, FsScanner, RootSpec, WalkBudget};
use nodeguard_hash::{hash_keyed, Algorithms, DigestCache};
use nodeguard_model::{
    Container, ExecHistory, ExecObservation, FileEntry, Process, Report, Runtime, ScanStats,
    Timestamp, SCHEMA_VERSION,
};
pub use nodeguard_model::{NoPods, PodLookup};
use nodeguard_policy::{evaluate, Evidence, FsGap, Policy};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a scan could not run at all. Everything short of this is a warning in the report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("collecting processes failed: {0}")]
    Collect(#[from] nodeguard_collect::Error),
}

/// How to scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub collect: CollectOptions,
    /// The node's name, as the report and Events name it.
    pub node_name: String,
    pub algorithms: Algorithms,
    /// Files larger than this are not hashed (and say so).
    pub max_hash_size: u64,
    /// Threads for hashing and for filesystem walks.
    pub threads: usize,
    /// Entries the digest cache may hold.
    pub hash_cache_entries: usize,
    /// Budget per container root for the filesystem walk.
    pub walk_budget: WalkBudget,
    /// Keep command lines verbatim. By default (`false`) secrets in them are redacted as
    /// soon as they are collected ([`nodeguard_model::redact_cmdline`]), so they never enter
    /// the report, the state, the API, Events or logs.
    pub show_secrets: bool,
    /// How long a process read by an exec-driven pass ([`Scanner::scan_execs`]) stays in
    /// reports after it is gone: its findings stay open at least this long after the read,
    /// and until the first full scan after that no longer sees it running.
    pub exec_retention: Duration,
}

/// [`ScanOptions::exec_retention`] by default: long enough for several Prometheus scrapes
/// and the Events publisher to see a process that lived for milliseconds.
pub const DEFAULT_EXEC_RETENTION: Duration = Duration::from_secs(300);

/// Exec reads that raise nothing new wait for a later merge; past this many, they are merged
/// anyway (the wait is bounded in memory).
pub const EXEC_PENDING_MAX: usize = 1024;

/// At most this many exec-read processes are retained; beyond it the oldest reads go first
/// (counted as the `exec_retention_overflow` error, with a warning).
pub const EXEC_RETAINED_MAX: usize = 4096;

/// How long an exec'd process caught inside the container runtime's own set-up
/// ([`nodeguard_collect::runtime::in_runtime_init`]) is held back, waiting for the exec of the
/// container's entrypoint in the same pid. Past it the process is read as it is.
pub const EXEC_INIT_GRACE: Duration = Duration::from_secs(1);

/// At most this many processes are held back at once; beyond it they are read as they are.
pub const EXEC_HELD_MAX: usize = 512;

impl ScanOptions {
    /// Defaults for a node whose `/proc` and cgroup fs are at the usual places.
    pub fn new(proc_root: PathBuf, cgroup_root: PathBuf, node_name: String) -> ScanOptions {
        let host_root = proc_root.join("1/root");
        ScanOptions {
            collect: CollectOptions {
                proc_root,
                cgroup_root,
                host_root,
            },
            node_name,
            algorithms: Algorithms::SHA256,
            max_hash_size: 512 * 1024 * 1024,
            threads: std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(2),
            hash_cache_entries: 65_536,
            walk_budget: WalkBudget {
                max_files: 1_000_000,
                max_duration: Duration::from_secs(60),
                max_hash_bytes: 512 * 1024 * 1024,
            },
            show_secrets: false,
            exec_retention: DEFAULT_EXEC_RETENTION,
        }
    }
}

/// What a scan covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanScope {
    /// Processes, containers, limits, and the writable layers of containers whose image
    /// layers are cached; other files from the last filesystem scan are kept.
    Processes,
    /// Processes and a fresh walk of every container filesystem.
    ProcessesAndFilesystems,
}

/// Scans a node, keeping caches between scans.
pub struct Scanner {
    options: ScanOptions,
    /// Keeps what does not change without an exec between scans (see [`Collector`]).
    collector: Collector,
    policy: Arc<Policy>,
    /// The one digest cache: executables and setuid/capability files alike.
    digests: Arc<DigestCache>,
    filesystems: FsScanner,
    /// Files from the last filesystem scan, kept for process-only scans.
    last_files: Vec<FileEntry>,
    /// Containers whose last filesystem inventory was incomplete.
    last_gaps: Vec<FsGap>,
    last_fs_stats: FsCounters,
    /// Processes read by exec-driven passes, by pid (a later exec of the same pid replaces
    /// its entry), with their container as read then.
    recent_execs: BTreeMap<i32, Retained>,
    /// Every exec-read process as it was read, for `--since` queries (bounded; shared with
    /// the API).
    exec_history: Arc<ExecHistory>,
    /// Exec reads not yet merged into a report.
    pending_execs: Option<PendingExecs>,
    /// Exec'd processes read inside the runtime's set-up (`runc init`), by pid, with when
    /// they were first held back: read again with every exec pass until they exec the
    /// container's entrypoint, vanish, or [`EXEC_INIT_GRACE`] passes.
    held_back: BTreeMap<i32, Instant>,
    /// From the last full scan, for the evaluation of exec-driven passes.
    last_cap_last_cap: u32,
    last_host_bounding: Option<u64>,
    /// Where the last scan's time went.
    last_phases: ScanPhases,
}

/// How long the parts of one scan took, wall time (logged at debug level as "scan phases";
/// not part of the report): to see where a slow scan spends it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanPhases {
    /// The collection pass, in its parts.
    pub collect: nodeguard_collect::PassPhases,
    /// Collection as a whole.
    pub collected: Duration,
    /// Redacting command lines.
    pub redact: Duration,
    /// Hashing executables (cache lookups, mostly).
    pub hash: Duration,
    /// Walking container filesystems: the whole walk in a filesystem scan; in a process
    /// scan the writable layers only, on a thread of its own beside redaction and hashing.
    pub filesystems: Duration,
    /// Evaluating the policy.
    pub evaluate: Duration,
}

/// What exec reads gathered for the next merge.
#[derive(Debug, Default)]
struct PendingExecs {
    processes: Vec<Process>,
    containers: Vec<Container>,
    stats: ScanStats,
    warnings: Vec<String>,
}

/// The counters of two passes added up (what a merged report counts).
fn merge_stats(mut a: ScanStats, b: ScanStats) -> ScanStats {
    a.processes_vanished += b.processes_vanished;
    a.processes_denied += b.processes_denied;
    a.bytes_hashed += b.bytes_hashed;
    a.files_hashed += b.files_hashed;
    a.hash_cache_hits += b.hash_cache_hits;
    a.hash_cache_misses += b.hash_cache_misses;
    for (kind, n) in b.errors {
        *a.errors.entry(kind).or_insert(0) += n;
    }
    a
}

/// A process an exec-driven pass read, kept so that its findings outlive it (while its
/// container runs).
#[derive(Debug, Clone)]
struct Retained {
    process: Process,
    read_at: Instant,
}

#[derive(Debug, Clone, Default)]
struct FsCounters {
    files_walked: u64,
    layers_walked: u64,
    layers_cached: u64,
    walks_truncated: u64,
}

impl Scanner {
    pub fn new(options: ScanOptions, policy: Arc<Policy>) -> Scanner {
        let digests = Arc::new(DigestCache::new(options.hash_cache_entries));
        let filesystems = FsScanner::with_digest_cache(
            options.walk_budget.clone(),
            options.threads,
            Arc::clone(&digests),
            algorithms_for(&options, &policy),
        );
        Scanner {
            collector: Collector::new(options.collect.clone()),
            options,
            policy,
            digests,
            filesystems,
            last_files: Vec::new(),
            last_gaps: Vec::new(),
            last_fs_stats: FsCounters::default(),
            recent_execs: BTreeMap::new(),
            exec_history: Arc::new(ExecHistory::default()),
            pending_execs: None,
            held_back: BTreeMap::new(),
            last_cap_last_cap: nodeguard_collect::DEFAULT_CAP_LAST_CAP,
            last_host_bounding: None,
            last_phases: ScanPhases::default(),
        }
    }

    /// The log of exec-time observations this scanner records into (for the API's
    /// `/v1/execs`).
    pub fn exec_history(&self) -> Arc<ExecHistory> {
        Arc::clone(&self.exec_history)
    }

    pub fn options(&self) -> &ScanOptions {
        &self.options
    }

    /// How long exec-read processes stay in reports after they exit
    /// ([`ScanOptions::exec_retention`]).
    pub fn set_exec_retention(&mut self, retention: Duration) {
        self.options.exec_retention = retention;
    }

    /// Swaps the policy used from the next scan on (SIGHUP reload).
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.policy = policy;
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Where the last scan's time went (see [`ScanPhases`]).
    pub fn last_phases(&self) -> ScanPhases {
        self.last_phases
    }

    /// Runs one scan.
    pub fn scan(&mut self, scope: ScanScope, pods: &dyn PodLookup) -> Result<Report, Error> {
        let started = Instant::now();
        let scanned_at = Timestamp::now();
        self.digests.next_generation();
        self.filesystems
            .set_algorithms(algorithms_for(&self.options, &self.policy));

        let Snapshot {
            processes,
            mut containers,
            mut stats,
            mut warnings,
            cap_last_cap,
            host_namespaces: _,
            host_bounding,
            processes_reused,
            processes_watched,
        } = self.collector.collect()?;
        let mut phases = ScanPhases {
            collect: self.collector.last_phases(),
            collected: started.elapsed(),
            ..ScanPhases::default()
        };
        let mut mark = Instant::now();
        let mut lap = || {
            let now = Instant::now();
            std::mem::replace(&mut mark, now).elapsed()
        };
        tracing::debug!(
            processes = processes.len(),
            reused = processes_reused,
            watched = processes_watched,
            "processes collected"
        );
        for container in &mut containers {
            enrich(container, pods);
        }
        // A process scan walks the containers' writable layers on a thread of its own while
        // the command lines are redacted and the executables hashed (independent work).
        let writable = match scope {
            ScanScope::Processes => self.writable_roots(&containers),
            ScanScope::ProcessesAndFilesystems => None,
        };
        let mut processes = processes;
        let Scanner {
            options,
            policy,
            digests,
            filesystems,
            ..
        } = self;
        let (mut processes, walked) = std::thread::scope(|scope| {
            let walker = writable.map(|roots| {
                scope.spawn(move || {
                    let t = Instant::now();
                    let walked = filesystems.scan_writable(&roots);
                    (walked, t.elapsed())
                })
            });
            if !options.show_secrets {
                redact_cmdlines(&mut processes);
            }
            phases.redact = lap();
            let processes = hash_executables(
                options,
                policy,
                digests,
                processes,
                &HashMap::new(),
                &mut stats,
                &mut warnings,
            );
            phases.hash = lap();
            let walked = walker.map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            (processes, walked)
        });
        self.last_cap_last_cap = cap_last_cap;
        self.last_host_bounding = host_bounding;
        // A full scan re-reads every process: exec reads not yet merged are in it, or
        // retained; what those reads cost is counted with this scan.
        if let Some(pending) = self.pending_execs.take() {
            stats = merge_stats(stats, pending.stats);
        }
        self.keep_recent_execs(&mut processes, &containers);

        let mut walk_took = None;
        if scope == ScanScope::ProcessesAndFilesystems {
            self.scan_filesystems(&containers, &mut stats, &mut warnings);
        } else {
            // Keep what the last walk found for containers that still exist.
            let alive: BTreeSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
            self.last_files
                .retain(|f| alive.contains(f.container_id.as_str()));
            self.last_gaps
                .retain(|g| alive.contains(g.container_id.as_str()));
            if let Some(((output, covered), took)) = walked {
                self.keep_writable_walk(output, covered, &mut stats, &mut warnings);
                walk_took = Some(took);
            }
        }
        phases.filesystems = walk_took.unwrap_or(lap());
        let files = self.last_files.clone();
        stats.files_walked = self.last_fs_stats.files_walked;
        stats.layers_walked = self.last_fs_stats.layers_walked;
        stats.layers_cached = self.last_fs_stats.layers_cached;
        stats.walks_truncated = self.last_fs_stats.walks_truncated;

        let findings = evaluate(
            &self.policy,
            &Evidence {
                processes: &processes,
                containers: &containers,
                files: &files,
                cap_last_cap,
                gaps: &self.last_gaps,
                host_bounding,
            },
        );
        phases.evaluate = lap();
        tracing::debug!(
            list_us = phases.collect.list.as_micros() as u64,
            read_us = phases.collect.read.as_micros() as u64,
            containers_us = phases.collect.containers.as_micros() as u64,
            layers_us = phases.collect.layers.as_micros() as u64,
            collect_us = phases.collected.as_micros() as u64,
            redact_us = phases.redact.as_micros() as u64,
            hash_us = phases.hash.as_micros() as u64,
            filesystems_us = phases.filesystems.as_micros() as u64,
            evaluate_us = phases.evaluate.as_micros() as u64,
            "scan phases"
        );
        self.last_phases = phases;

        stats.containers_seen = containers.len() as u64;
        Ok(Report {
            schema_version: SCHEMA_VERSION,
            node: self.options.node_name.clone(),
            scanned_at,
            duration_ms: started.elapsed().as_millis() as u64,
            containers,
            processes,
            files,
            findings,
            stats,
            warnings,
        })
    }

    fn scan_filesystems(
        &mut self,
        containers: &[Container],
        stats: &mut ScanStats,
        warnings: &mut Vec<String>,
    ) {
        // Image layers are host paths: reach them the way the collector does.
        let host_root = nodeguard_collect::resolve_host_root(&self.options.collect);
        let roots: Vec<ContainerRoot> = containers
            .iter()
            .filter_map(|c| {
                container_root(&self.options.collect.proc_root, host_root.as_deref(), c)
            })
            .collect();
        let output = self.filesystems.scan(&roots);
        for (kind, count) in &output.stats.errors {
            *stats.errors.entry(format!("fs_{kind}")).or_insert(0) += count;
        }
        // setuid/file-capability files hashed by this walk (layer-cached ones are not read).
        stats.files_hashed += output.stats.files_hashed;
        stats.bytes_hashed += output.stats.bytes_hashed;
        warnings.extend(output.warnings);
        self.last_fs_stats = FsCounters {
            files_walked: output.stats.files_walked,
            layers_walked: output.stats.layers_walked,
            layers_cached: output.stats.layers_cached,
            walks_truncated: output.stats.walks_truncated,
        };
        self.last_gaps = gaps(output.incomplete, warnings);
        self.last_files = output.files;
    }
}

impl Scanner {
    /// The containers' roots for a walk of their writable layers, once a filesystem scan
    /// has cached their image layers (`None` before: nothing to compare against).
    ///
    /// Between filesystem scans each process scan walks the writable layers of the containers
    /// whose image layers the last filesystem scan cached, so a file planted in (or removed
    /// from) a running container's writable layer shows within a process-scan interval. Image
    /// layers (slow, and unchanging) wait for the filesystem interval; a container not yet
    /// covered keeps what the last filesystem scan found.
    fn writable_roots(&self, containers: &[Container]) -> Option<Vec<ContainerRoot>> {
        if self.filesystems.cached_layers() == 0 {
            return None;
        }
        let host_root = nodeguard_collect::resolve_host_root(&self.options.collect);
        Some(
            containers
                .iter()
                .filter(|c| !c.sandbox)
                .filter_map(|c| {
                    container_root(&self.options.collect.proc_root, host_root.as_deref(), c)
                })
                .collect(),
        )
    }

    /// What a walk of writable layers found replaces what the last walks found for the
    /// containers it covered.
    fn keep_writable_walk(
        &mut self,
        output: nodeguard_fscan::FsScanOutput,
        covered: Vec<String>,
        stats: &mut ScanStats,
        warnings: &mut Vec<String>,
    ) {
        if covered.is_empty() {
            return;
        }
        for (kind, count) in &output.stats.errors {
            *stats.errors.entry(format!("fs_{kind}")).or_insert(0) += count;
        }
        stats.files_hashed += output.stats.files_hashed;
        stats.bytes_hashed += output.stats.bytes_hashed;
        warnings.extend(output.warnings);
        let covered: BTreeSet<&str> = covered.iter().map(String::as_str).collect();
        self.last_files
            .retain(|f| !covered.contains(f.container_id.as_str()));
        self.last_gaps
            .retain(|g| !covered.contains(g.container_id.as_str()));
        self.last_gaps.extend(gaps(output.incomplete, warnings));
        self.last_files.extend(output.files);
        self.last_files
            .sort_by(|a, b| (&a.container_id, &a.path).cmp(&(&b.container_id, &b.path)));
    }
}

/// Pod metadata for a container: names, and what the pod's status says over the process
/// table (a listed container is never a sandbox, whatever it runs; an unlisted one in a
/// fully started pod is; the runtime its `containerID` scheme names).
fn enrich(container: &mut Container, pods: &dyn PodLookup) {
    let uid = container.pod_uid.as_deref();
    container.pod = pods.pod_for(uid, &container.id);
    if container.pod_uid.is_some() {
        if let Some(sandbox) = pods.is_sandbox(uid, &container.id) {
            container.sandbox = sandbox;
        }
    }
    if container.runtime == Runtime::Unknown {
        if let Some(runtime) = pods.runtime_of(uid, &container.id) {
            container.runtime = runtime;
        }
    }
}

/// What an exec-driven pass did, beside its report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecPassStats {
    /// Exec'd processes read and evaluated.
    pub read: usize,
    /// Exec'd processes gone before they could be read (nothing is known of them).
    pub vanished: usize,
    /// Processes held back because they were still in the container runtime's set-up.
    pub held: usize,
}

impl Scanner {
    /// An exec-driven pass in one call: [`Scanner::read_execs`] then
    /// [`Scanner::merge_execs`].
    pub fn scan_execs(
        &mut self,
        pids: &[i32],
        base: &Report,
        pods: &dyn PodLookup,
    ) -> Result<(Report, ExecPassStats), Error> {
        let pass = self.read_execs(pids, pods)?;
        Ok((self.merge_execs(base, pods), pass))
    }

    /// Reads the processes `pids` (just exec'd) the way a scan does — attribution to a
    /// container, executable layer, hash through the one digest cache — and keeps them for
    /// the next [`Scanner::merge_execs`]. Reading is what must happen at once (a process may
    /// live milliseconds); merging and evaluating, which cost as much as the node is big, can
    /// wait and cover several reads.
    ///
    /// A process still inside the container runtime's set-up (runc's `runc init` stages, in
    /// the new container's cgroup but with the runtime's capabilities, namespaces and
    /// executable) is not the container's process yet: it is held back and read again with
    /// each pass (`pids` may then be empty) until it execs the entrypoint, vanishes or has
    /// waited [`EXEC_INIT_GRACE`] ([`Scanner::held_back_until`] says when that is). Read at
    /// once, a new pod's sandbox looked like a privileged container of its own, with the
    /// host's pid namespace, until the next full scan.
    ///
    /// Each process read is retained for [`ScanOptions::exec_retention`] while its container
    /// runs: when it exits, later reports (full scans included) still carry it as it was
    /// read, so a process that lived for milliseconds keeps its findings open long enough
    /// for every sink to see them. Once its container is gone, the next full scan drops it
    /// (open findings describe the node as it is now); what it was and what it raised stay
    /// in [`Scanner::exec_history`], which `pods` names the pods of.
    pub fn read_execs(
        &mut self,
        pids: &[i32],
        pods: &dyn PodLookup,
    ) -> Result<ExecPassStats, Error> {
        self.read_held_execs(pids, Vec::new(), pods)
    }

    /// [`Scanner::read_execs`] of `pids` and of the processes `held` when their exec event
    /// arrived ([`Holder`]): those are read from what was captured while they ran and
    /// hashed from their held executable, so a process that lived for a millisecond is
    /// read with its digest. A held process's pid need not be in `pids`.
    pub fn read_held_execs(
        &mut self,
        pids: &[i32],
        held: Vec<HeldProcess>,
        pods: &dyn PodLookup,
    ) -> Result<ExecPassStats, Error> {
        let mut pids = pids.to_vec();
        let mut dirs = Vec::with_capacity(held.len());
        let mut exes = HashMap::with_capacity(held.len());
        for process in held {
            let (dir, exe) = process.into_parts();
            if !pids.contains(&dir.pid) {
                pids.push(dir.pid);
            }
            if let Some(exe) = exe {
                exes.insert(dir.pid, exe);
            }
            dirs.push(dir);
        }
        let pids = pids.as_slice();
        self.collector.execs_seen(pids);
        let wanted: Vec<i32> = pids.iter().chain(self.held_back.keys()).copied().collect();
        let Snapshot {
            processes: mut collected,
            containers: mut fresh,
            stats: mut pass_stats,
            mut warnings,
            ..
        } = nodeguard_collect::collect_held(&self.options.collect, &wanted, dirs)?;
        let held = self.hold_back_runtime_init(&mut collected, &mut fresh);
        if !self.options.show_secrets {
            redact_cmdlines(&mut collected);
        }
        let read = hash_executables(
            &self.options,
            &self.policy,
            &self.digests,
            collected,
            &exes,
            &mut pass_stats,
            &mut warnings,
        );
        // A batch holds up to 512 pids: a set, not a scan of the reads per pid.
        let read_pids: BTreeSet<i32> = read.iter().map(|p| p.pid).collect();
        let requested: BTreeSet<i32> = pids.iter().copied().collect();
        let pass = ExecPassStats {
            read: read.len(),
            held,
            vanished: requested
                .iter()
                .filter(|pid| !read_pids.contains(pid) && !self.held_back.contains_key(pid))
                .count(),
        };
        for c in &mut fresh {
            enrich(c, pods);
        }
        self.record_history(&read, &fresh);
        let now = Instant::now();
        for p in &read {
            self.recent_execs.insert(
                p.pid,
                Retained {
                    process: p.clone(),
                    read_at: now,
                },
            );
        }
        self.bound_recent_execs(&mut pass_stats, &mut warnings);
        let pending = self.pending_execs.get_or_insert_with(PendingExecs::default);
        pending
            .processes
            .retain(|p| !read.iter().any(|r| r.pid == p.pid));
        pending.processes.extend(read);
        for c in fresh {
            if !pending.containers.iter().any(|known| known.id == c.id) {
                pending.containers.push(c);
            }
        }
        pending.stats = merge_stats(std::mem::take(&mut pending.stats), pass_stats);
        pending.warnings.extend(warnings);
        Ok(pass)
    }

    /// Whether an exec event source reports every exec to [`Scanner::read_execs`] or
    /// [`Scanner::execs_seen`] and every loss to [`Scanner::exec_events_lost`]. While it
    /// does, a scan re-reads only what changes without an exec of the processes it knows
    /// (see [`Collector::watch_execs`]).
    pub fn watch_execs(&mut self, on: bool) {
        self.collector.watch_execs(on);
    }

    /// Scans within which each process is read in full at least once (without exec events).
    pub const FULL_READ_EVERY: u32 = Collector::FULL_READ_EVERY;

    /// See [`Collector::set_full_read_every_watched`].
    pub fn set_full_read_every_watched(&mut self, passes: u32) {
        self.collector.set_full_read_every_watched(passes);
    }

    /// These processes exec'd but are not read now: the next scan reads them in full.
    pub fn execs_seen(&mut self, pids: &[i32]) {
        self.collector.execs_seen(pids);
    }

    /// Exec events were lost: the next scan re-checks every process as without events.
    pub fn exec_events_lost(&mut self) {
        self.collector.execs_lost();
    }

    /// Takes out of `collected` (and their containers out of `fresh`) the processes still in
    /// the runtime's set-up, holding them back within [`EXEC_INIT_GRACE`] and
    /// [`EXEC_HELD_MAX`]; forgets held-back pids that were not read (gone) or no longer are
    /// in the set-up. Returns how many are held back now.
    fn hold_back_runtime_init(
        &mut self,
        collected: &mut Vec<CollectedProcess>,
        fresh: &mut Vec<Container>,
    ) -> usize {
        let now = Instant::now();
        let held_before = std::mem::take(&mut self.held_back);
        collected.retain(|cp| {
            let pid = cp.process.pid;
            if !nodeguard_collect::runtime::in_runtime_init(&cp.process) {
                return true;
            }
            let since = held_before.get(&pid).copied().unwrap_or(now);
            if now.duration_since(since) >= EXEC_INIT_GRACE || self.held_back.len() >= EXEC_HELD_MAX
            {
                return true;
            }
            self.held_back.insert(pid, since);
            false
        });
        if !self.held_back.is_empty() {
            for c in fresh.iter_mut() {
                c.pids.retain(|pid| !self.held_back.contains_key(pid));
            }
            fresh.retain(|c| !c.pids.is_empty());
        }
        self.held_back.len()
    }

    /// When the processes held back in the runtime's set-up are due to be read as they are,
    /// if any are: the caller runs [`Scanner::read_execs`] then, with no new pids, unless an
    /// exec pass came first.
    pub fn held_back_until(&self) -> Option<Instant> {
        self.held_back
            .values()
            .min()
            .map(|since| *since + EXEC_INIT_GRACE)
    }

    /// Whether reads wait for [`Scanner::merge_execs`].
    pub fn has_pending_execs(&self) -> bool {
        self.pending_execs.is_some()
    }

    /// Whether the reads waiting to be merged change what sinks act on: a container `base`
    /// does not know, a finding (of those processes with their containers, by the policy in
    /// force) that `is_open` does not know, or more than [`EXEC_PENDING_MAX`] reads waiting.
    /// Most execs on a node raise nothing new; their reads wait for a later merge or the
    /// next full scan instead of costing a merge of the whole report each.
    pub fn pending_execs_matter(&self, base: &Report, is_open: impl Fn(&str) -> bool) -> bool {
        let Some(pending) = &self.pending_execs else {
            return false;
        };
        if pending.processes.len() > EXEC_PENDING_MAX
            || pending
                .containers
                .iter()
                .any(|c| !base.containers.iter().any(|known| known.id == c.id))
        {
            return true;
        }
        let ids: BTreeSet<&str> = pending
            .processes
            .iter()
            .filter_map(|p| p.container_id.as_deref())
            .collect();
        let containers: Vec<Container> = base
            .containers
            .iter()
            .filter(|c| ids.contains(c.id.as_str()))
            .cloned()
            .collect();
        let findings = evaluate(
            &self.policy,
            &Evidence {
                processes: &pending.processes,
                containers: &containers,
                files: &[],
                cap_last_cap: self.last_cap_last_cap,
                gaps: &[],
                host_bounding: self.last_host_bounding,
            },
        );
        findings.iter().any(|f| !is_open(&f.id))
    }

    /// Puts the processes read since the last merge into `base` (the latest report) in place
    /// of what it said about those pids, and evaluates the whole with the policy in force.
    /// Containers `base` knows keep what the full scan said of them (runtime, sandbox,
    /// limits), with the new pids added; a container first seen in these reads is taken from
    /// them alone until the next full scan. Files, filesystem gaps, `cap_last_cap` and the
    /// host's bounding set are the last full scan's. The report's stats count the reads
    /// merged (hashes, errors, vanished processes), so totals summed over reports stay right.
    pub fn merge_execs(&mut self, base: &Report, pods: &dyn PodLookup) -> Report {
        let started = Instant::now();
        let scanned_at = Timestamp::now();
        let PendingExecs {
            processes: read,
            containers: fresh,
            stats: pass_stats,
            warnings,
        } = self.pending_execs.take().unwrap_or_default();

        let mut containers = base.containers.clone();
        for mut container in fresh {
            match containers.iter_mut().find(|c| c.id == container.id) {
                Some(known) => {
                    for pid in container.pids {
                        if !known.pids.contains(&pid) {
                            known.pids.push(pid);
                        }
                    }
                    known.pids.sort_unstable();
                }
                None => {
                    enrich(&mut container, pods);
                    containers.push(container);
                }
            }
        }
        containers.sort_by(|a, b| a.id.cmp(&b.id));

        let replaced: BTreeSet<i32> = read.iter().map(|p| p.pid).collect();
        let mut processes: Vec<Process> = base
            .processes
            .iter()
            .filter(|p| !replaced.contains(&p.pid))
            .cloned()
            .chain(read)
            .collect();
        processes.sort_by_key(|p| p.pid);

        let findings = evaluate(
            &self.policy,
            &Evidence {
                processes: &processes,
                containers: &containers,
                files: &base.files,
                cap_last_cap: self.last_cap_last_cap,
                gaps: &self.last_gaps,
                host_bounding: self.last_host_bounding,
            },
        );
        let stats = ScanStats {
            processes_seen: processes.len() as u64,
            kernel_threads: base.stats.kernel_threads,
            containers_seen: containers.len() as u64,
            files_walked: base.stats.files_walked,
            layers_walked: base.stats.layers_walked,
            layers_cached: base.stats.layers_cached,
            walks_truncated: base.stats.walks_truncated,
            ..pass_stats
        };
        let mut all_warnings = base.warnings.clone();
        for w in warnings {
            if !all_warnings.contains(&w) {
                all_warnings.push(w);
            }
        }
        Report {
            schema_version: SCHEMA_VERSION,
            node: self.options.node_name.clone(),
            scanned_at,
            duration_ms: started.elapsed().as_millis() as u64,
            containers,
            processes,
            files: base.files.clone(),
            findings,
            stats,
            warnings: all_warnings,
        }
    }

    /// Records each process read into the history, with the findings it raises by itself
    /// (those naming its pid) with its container as read.
    fn record_history(&self, read: &[Process], fresh: &[Container]) {
        if read.is_empty() {
            return;
        }
        let findings = evaluate(
            &self.policy,
            &Evidence {
                processes: read,
                containers: fresh,
                files: &[],
                cap_last_cap: self.last_cap_last_cap,
                gaps: &[],
                host_bounding: self.last_host_bounding,
            },
        );
        let observed_at = Timestamp::now();
        for p in read {
            let pod = p
                .container_id
                .as_deref()
                .and_then(|id| fresh.iter().find(|c| c.id == id))
                .and_then(|c| c.pod.clone());
            self.exec_history.record(ExecObservation {
                observed_at,
                process: p.clone(),
                pod,
                findings: findings
                    .iter()
                    .filter(|f| f.pid == Some(p.pid))
                    .cloned()
                    .collect(),
            });
        }
    }

    /// Processes read by exec passes since at most the retention window: how many.
    pub fn retained_execs(&self) -> usize {
        self.recent_execs.len()
    }

    /// A full scan's processes and containers, plus each exec-read process that is no
    /// longer running (no process with its pid, executable and container), was read within
    /// the retention window, and whose container (if it had one) still runs. Entries past
    /// the window are dropped here, and so are entries this scan sees running (a process a
    /// full scan has seen is reported like any other from then on) and entries whose
    /// container is gone: open findings describe the node as it is now, so when a pod goes,
    /// its findings resolve at this scan, not a retention window later. What such a process
    /// did stays in [`Scanner::exec_history`]. Retention is for what only an exec read ever
    /// saw, in a container that still runs (or on the host).
    fn keep_recent_execs(&mut self, processes: &mut Vec<Process>, containers: &[Container]) {
        let retention = self.options.exec_retention;
        let alive: BTreeSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
        self.recent_execs.retain(|_, r| {
            r.read_at.elapsed() <= retention
                && r.process
                    .container_id
                    .as_deref()
                    .is_none_or(|id| alive.contains(id))
        });
        if self.recent_execs.is_empty() {
            return;
        }
        let running: BTreeSet<(i32, Option<&str>, Option<&str>)> = processes
            .iter()
            .map(|p| (p.pid, p.exe.as_deref(), p.container_id.as_deref()))
            .collect();
        self.recent_execs.retain(|_, r| {
            let p = &r.process;
            !running.contains(&(p.pid, p.exe.as_deref(), p.container_id.as_deref()))
        });
        // Marked exited, so that nobody takes them for what runs now.
        for r in self.recent_execs.values() {
            let mut process = r.process.clone();
            process.exited = true;
            processes.push(process);
        }
        processes.sort_by_key(|p| p.pid);
    }

    /// Keeps at most [`EXEC_RETAINED_MAX`] retained reads, dropping the oldest — counted
    /// and warned about, never silently.
    fn bound_recent_execs(&mut self, stats: &mut ScanStats, warnings: &mut Vec<String>) {
        let excess = self.recent_execs.len().saturating_sub(EXEC_RETAINED_MAX);
        if excess == 0 {
            return;
        }
        let mut by_age: Vec<(Instant, i32)> = self
            .recent_execs
            .iter()
            .map(|(pid, r)| (r.read_at, *pid))
            .collect();
        by_age.sort_unstable();
        for (_, pid) in by_age.into_iter().take(excess) {
            self.recent_execs.remove(&pid);
        }
        *stats
            .errors
            .entry("exec_retention_overflow".to_string())
            .or_insert(0) += excess as u64;
        warnings.push(format!(
            "more than {EXEC_RETAINED_MAX} exec-read processes within the retention window: the {excess} oldest are no longer retained after they exit"
        ));
    }
}

/// The policy's view of incomplete inventories; a warning for each that left files out.
fn gaps(incomplete: Vec<nodeguard_fscan::Incomplete>, warnings: &mut Vec<String>) -> Vec<FsGap> {
    incomplete
        .into_iter()
        .map(|g| {
            if g.files_omitted > 0 {
                warnings.push(format!(
                    "container {}: inventory truncated: {} setuid/setgid/capability files \
                     not listed ({})",
                    g.container_id, g.files_omitted, g.reason
                ));
            }
            FsGap {
                container_id: g.container_id,
                reason: g.reason,
                files_omitted: g.files_omitted,
            }
        })
        .collect()
}

/// Where a container's files can be read: its image layers and writable layer when its
/// root is an overlay whose directories the agent can reach, else its merged root through
/// a process of it.
fn container_root(
    proc_root: &Path,
    host_root: Option<&Path>,
    container: &Container,
) -> Option<ContainerRoot> {
    let overlay = host_root
        .zip(container.rootfs.as_ref())
        .filter(|(_, r)| r.fstype == "overlay" && !r.lower_dirs.is_empty())
        .map(|(host_root, r)| RootSpec::Overlay {
            lower_dirs: r.lower_dirs.iter().map(|d| under(host_root, d)).collect(),
            upper_dir: r.upper_dir.as_ref().map(|d| under(host_root, d)),
        })
        .filter(|spec| match spec {
            RootSpec::Overlay { lower_dirs, .. } => lower_dirs.iter().all(|d| d.is_dir()),
            RootSpec::Merged { .. } => true,
        });
    let spec = match overlay {
        Some(spec) => spec,
        None => {
            let pid = container.pids.first()?;
            RootSpec::Merged {
                root: proc_root.join(pid.to_string()).join("root"),
            }
        }
    };
    Some(ContainerRoot {
        container_id: container.id.clone(),
        spec,
    })
}

/// A host path as reached from the agent: `host_root` + the absolute path. `RootFs` paths are
/// escaped text (`escape_path`); the bytes are restored before use.
fn under(host_root: &Path, host_path: &str) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let raw =
        nodeguard_model::unescape_path(host_path).unwrap_or_else(|| host_path.as_bytes().to_vec());
    let relative = raw
        .iter()
        .position(|b| *b != b'/')
        .map_or(&raw[..0], |start| &raw[start..]);
    host_root.join(std::ffi::OsStr::from_bytes(relative))
}

/// The executables' digests (from the cache, or read on a miss: through the executable held
/// at the exec, `held_exes` by pid, else `/proc/PID/exe`), filled into the processes; a
/// process that exited before its executable could be read is dropped and counted as
/// vanished.
fn hash_executables(
    options: &ScanOptions,
    policy: &Policy,
    digests: &DigestCache,
    collected: Vec<CollectedProcess>,
    held_exes: &HashMap<i32, std::fs::File>,
    stats: &mut ScanStats,
    warnings: &mut Vec<String>,
) -> Vec<Process> {
    let proc_root = &options.collect.proc_root;
    // Jobs by index: the identity to look up, the pid whose `exe` is read on a miss.
    let mut keys = Vec::new();
    let mut pids = Vec::new();
    let mut job_of = Vec::with_capacity(collected.len());
    for cp in &collected {
        if cp.process.kernel_thread || cp.process.exe.is_none() {
            job_of.push(None);
            continue;
        }
        job_of.push(Some(keys.len()));
        keys.push(cp.exe_identity);
        pids.push(cp.process.pid);
    }
    let before = digests.stats();
    let algorithms = algorithms_for(options, policy);
    let results = hash_keyed(
        digests,
        &keys,
        |i| match held_exes.get(&pids[i]) {
            Some(exe) => held_exe_path(exe),
            None => exe_path(proc_root, pids[i]),
        },
        algorithms,
        options.max_hash_size,
        options.threads,
    );
    let after = digests.stats();
    stats.hash_cache_hits += after.hits - before.hits;
    stats.hash_cache_misses += after.misses - before.misses;
    stats.bytes_hashed += after.bytes_hashed - before.bytes_hashed;
    stats.files_hashed += after.files_hashed - before.files_hashed;

    let mut results: Vec<Option<_>> = results.into_iter().map(Some).collect();
    collected
        .into_iter()
        .zip(job_of)
        .filter_map(|(cp, job)| {
            let mut process = cp.process;
            if let (Some(script), Some(identity)) = (process.script.as_mut(), cp.script_identity) {
                hash_script(
                    proc_root,
                    process.pid,
                    script,
                    &identity,
                    digests,
                    options.max_hash_size,
                    stats,
                );
            }
            let Some(job) = job else {
                return Some(process);
            };
            match results[job].take() {
                Some(Ok(digests)) => {
                    process.sha256 = digests.sha256_hex();
                    process.sha512 = digests.sha512_hex();
                    Some(process)
                }
                // Exited between being listed and being hashed: it is not running.
                Some(Err(e)) if e.is_vanished() => {
                    stats.processes_vanished += 1;
                    stats.processes_seen = stats.processes_seen.saturating_sub(1);
                    None
                }
                Some(Err(e)) => {
                    stats.count_error("hash");
                    process.hash_error = Some(e.to_string());
                    if !matches!(e, nodeguard_hash::Error::TooLarge { .. }) {
                        warnings.push(format!("pid {}: {e}", process.pid));
                    }
                    Some(process)
                }
                None => Some(process),
            }
        })
        .collect()
}

/// The SHA-256 of a script an interpreter runs from outside the image, through the digest
/// cache (keyed by the file as the process sees it): opened inside the process's root as it
/// was located (`nodeguard_collect::script::open_script`: no symlink out of the container, no
/// FIFO), and only while it is still that file. Bounded like executables: one file per
/// interpreter process, each distinct file read once while cached, at most `max_size` bytes.
fn hash_script(
    proc_root: &Path,
    pid: i32,
    script: &mut nodeguard_model::Script,
    identity: &nodeguard_model::FileIdentity,
    digests: &DigestCache,
    max_size: u64,
    stats: &mut ScanStats,
) {
    if let Some(cached) = digests.lookup(identity, Algorithms::SHA256) {
        stats.hash_cache_hits += 1;
        script.sha256 = cached.sha256_hex();
        return;
    }
    stats.hash_cache_misses += 1;
    let Some(path) = nodeguard_model::unescape_path(&script.path) else {
        return;
    };
    let read = nodeguard_collect::script::open_script(proc_root, pid, &path, identity).and_then(
        |mut file| {
            if identity.size > max_size {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!("{} bytes, over the {max_size}-byte limit", identity.size),
                ));
            }
            let mut buf = vec![0u8; 64 * 1024];
            nodeguard_hash::digest_reader(&mut file, Algorithms::SHA256, &mut buf, max_size)
        },
    );
    match read {
        Ok(got) => {
            stats.bytes_hashed += got.bytes;
            stats.files_hashed += 1;
            script.sha256 = got.sha256_hex();
            digests.store(*identity, got);
        }
        Err(e) => {
            stats.count_error("hash");
            script.hash_error = Some(format!("cannot hash script {}: {e}", script.path));
        }
    }
}

/// Secrets in the processes' command lines replaced (see [`nodeguard_model::redact_cmdline`]);
/// a command line without any is left as it is.
fn redact_cmdlines(processes: &mut [CollectedProcess]) {
    for collected in processes {
        let cmdline = &mut collected.process.cmdline;
        if let std::borrow::Cow::Owned(redacted) = nodeguard_model::redact_cmdline(cmdline) {
            *cmdline = redacted;
        }
    }
}

fn exe_path(proc_root: &Path, pid: i32) -> PathBuf {
    proc_root.join(pid.to_string()).join("exe")
}

/// A path that opens the file `exe` is open on: the agent's own descriptor, through its own
/// `/proc/self/fd` (a deleted file or a memfd reopens too). The file stays what it was when
/// the process was held, whatever happened to the process since.
fn held_exe_path(exe: &std::fs::File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", exe.as_raw_fd()))
}

/// The digests every scan computes, of executables and files alike: what was asked for, and
/// SHA-512 too when the policy pins SHA-512 digests.
fn algorithms_for(options: &ScanOptions, policy: &Policy) -> Algorithms {
    let mut algorithms = options.algorithms;
    algorithms.sha512 |= policy.needs_sha512();
    algorithms
}

/// The node's name: `NODE_NAME` (the downward API sets it in the DaemonSet), else the
/// kernel's hostname under `proc_root`, else `unknown`.
pub fn node_name(proc_root: &Path) -> String {
    if let Ok(name) = std::env::var("NODE_NAME") {
        if !name.trim().is_empty() {
            return name.trim().to_string();
        }
    }
    std::fs::read_to_string(proc_root.join("sys/kernel/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeguard_model::{CgroupDriver, CgroupVersion, Limits, RootFs, Runtime};

    fn container(rootfs: Option<RootFs>) -> Container {
        Container {
            id: "a".repeat(64),
            runtime: Runtime::Containerd,
            pod_uid: None,
            qos: None,
            cgroup: "/kubepods/x".into(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            cgroup_version: CgroupVersion::V1,
            limits: Limits::default(),
            pod_limits: None,
            effective_limits: Limits::default(),
            unknown_limits: Vec::new(),
            node_allocatable: None,
            sandbox: false,
            exited: false,
            pids: vec![42, 43],
            rootfs,
            pod: None,
            confinement: Default::default(),
        }
    }

    fn process(pid: i32, exe: &str, container_id: Option<&str>) -> Process {
        Process {
            pid,
            ppid: 1,
            command: "x".into(),
            cmdline: exe.into(),
            container_id: container_id.map(str::to_string),
            exe: Some(exe.into()),
            exe_deleted: false,
            exe_layer: None,
            exe_mount: None,
            script: None,
            sha256: Some("ab".repeat(32)),
            sha512: None,
            hash_error: None,
            uid: 0,
            gid: 0,
            uids: Default::default(),
            gids: Default::default(),
            capabilities: Default::default(),
            capability_masks: Default::default(),
            no_new_privs: None,
            seccomp: None,
            namespaces: Default::default(),
            kernel_thread: false,
            exited: false,
        }
    }

    fn scanner() -> Scanner {
        let options = ScanOptions::new(
            "/nonexistent/proc".into(),
            "/nonexistent/cg".into(),
            "n".into(),
        );
        Scanner::new(options, Arc::new(Policy::default()))
    }

    fn retain(s: &mut Scanner, p: Process) {
        s.recent_execs.insert(
            p.pid,
            Retained {
                process: p,
                read_at: Instant::now(),
            },
        );
    }

    /// A process read at exec that exited comes back into a full scan's report while the
    /// retention window lasts and its container still runs; one still running is not
    /// doubled, and from then on is reported like any process; once its container is gone
    /// (the pod was deleted) it is dropped at once, so the pod's findings resolve at this
    /// scan; after the window it is dropped too.
    #[test]
    fn exec_read_processes_outlive_their_exit_while_their_container_runs() {
        let mut s = scanner();
        let c = container(None);
        retain(&mut s, process(42, "/bin/evil", Some(&c.id)));
        retain(&mut s, process(43, "/bin/sleep", Some(&c.id)));
        retain(&mut s, process(44, "/bin/hostprobe", None));

        // 43 still runs (same pid, executable and container); 42 has exited, its container
        // runs on.
        let mut processes = vec![process(43, "/bin/sleep", Some(&c.id))];
        let containers = vec![c.clone()];
        s.keep_recent_execs(&mut processes, &containers);
        let pids: Vec<(i32, bool)> = processes.iter().map(|p| (p.pid, p.exited)).collect();
        assert_eq!(
            pids,
            [(42, true), (43, false), (44, true)],
            "the exited ones say so"
        );

        // The container is gone: its process is not brought back (nor is 43, which a scan
        // reported already); the host's short-lived process stays for the window.
        let mut processes = vec![process(42, "/bin/other", None)];
        s.keep_recent_execs(&mut processes, &[]);
        let seen: Vec<(i32, Option<&str>)> = processes
            .iter()
            .map(|p| (p.pid, p.exe.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [(42, Some("/bin/other")), (44, Some("/bin/hostprobe"))],
            "{processes:?}"
        );
        assert_eq!(s.retained_execs(), 1);

        // Past the window: nothing comes back, and the entries are gone.
        s.set_exec_retention(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        let mut processes = vec![];
        s.keep_recent_execs(&mut processes, &[]);
        assert!(processes.is_empty());
        assert_eq!(s.retained_execs(), 0);
    }

    /// A process that looks like runc's set-up (`runc init`, here perl renaming itself) is
    /// held back, not read; past the grace it is read as it is; one that vanishes while
    /// held back is forgotten. Real processes under the real /proc.
    #[test]
    fn processes_in_the_runtimes_set_up_are_held_back_then_read_or_forgotten() {
        let spawn = || {
            std::process::Command::new("perl")
                .args(["-e", "$0 = 'runc init'; sleep 60"])
                .spawn()
                .expect("perl runs")
        };
        let cmdline_is_set = |pid: u32| {
            for _ in 0..500 {
                if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"runc init\0")
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("perl did not rename itself");
        };
        let options = ScanOptions::new("/proc".into(), "/sys/fs/cgroup".into(), "n".into());
        let mut s = Scanner::new(options, Arc::new(Policy::default()));
        let (mut waiting, mut dying) = (spawn(), spawn());
        cmdline_is_set(waiting.id());
        cmdline_is_set(dying.id());
        let (w, d) = (waiting.id() as i32, dying.id() as i32);
        let me = std::process::id() as i32;

        let pass = s.read_execs(&[w, d, me], &NoPods).unwrap();
        assert_eq!((pass.read, pass.held, pass.vanished), (1, 2, 0), "{pass:?}");
        // The history records what was read, not what waits in the runtime's set-up.
        let history = s.exec_history();
        let recorded: Vec<i32> = history
            .since(Timestamp(std::time::UNIX_EPOCH), Timestamp::now(), |_| true)
            .iter()
            .map(|o| o.process.pid)
            .collect();
        assert_eq!(recorded, [me]);
        let due = s.held_back_until().expect("held back until the grace ends");
        assert!(due > Instant::now() && due <= Instant::now() + EXEC_INIT_GRACE);

        dying.kill().unwrap();
        dying.wait().unwrap();
        let pass = s.read_execs(&[], &NoPods).unwrap();
        assert_eq!(
            (pass.read, pass.held),
            (0, 1),
            "the gone one is forgotten: {pass:?}"
        );

        std::thread::sleep(EXEC_INIT_GRACE);
        let pass = s.read_execs(&[], &NoPods).unwrap();
        assert_eq!(
            (pass.read, pass.held),
            (1, 0),
            "read as it is after the grace: {pass:?}"
        );
        assert_eq!(s.held_back_until(), None);
        assert_eq!(history.stats().entries, 2, "the held-back one once read");
        let pending = s.pending_execs.as_ref().expect("reads wait to be merged");
        assert!(pending
            .processes
            .iter()
            .any(|p| p.pid == w && p.cmdline == "runc init"));
        waiting.kill().unwrap();
        waiting.wait().unwrap();
    }

    fn empty_report() -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            node: "n".into(),
            scanned_at: Timestamp::now(),
            duration_ms: 0,
            containers: vec![],
            processes: vec![],
            files: vec![],
            findings: vec![],
            stats: ScanStats::default(),
            warnings: vec![],
        }
    }

    /// Only reads that raise a finding not yet open (or bring a new container, or pile up)
    /// are worth a merge of the whole report.
    #[test]
    fn pending_exec_reads_matter_only_when_they_raise_something_new() {
        let digest = "ab".repeat(32);
        let policy = Policy::from_yaml_str(
            &format!("version: 1\ndenied_binaries:\n  - sha256: {digest}\n    reason: test\n"),
            "test.yaml",
        )
        .unwrap();
        let mut s = scanner();
        s.set_policy(Arc::new(policy));
        let base = empty_report();
        assert!(!s.pending_execs_matter(&base, |_| false), "nothing pending");

        s.pending_execs = Some(PendingExecs {
            processes: vec![process(42, "/tmp/evil", None)],
            ..PendingExecs::default()
        });
        assert!(
            s.pending_execs_matter(&base, |_| false),
            "a new denied_binary"
        );
        assert!(!s.pending_execs_matter(&base, |_| true), "already open");

        let mut benign = process(43, "/bin/sh", None);
        benign.sha256 = Some("cd".repeat(32));
        s.pending_execs = Some(PendingExecs {
            processes: vec![benign.clone(); EXEC_PENDING_MAX + 1],
            ..PendingExecs::default()
        });
        assert!(s.pending_execs_matter(&base, |_| true), "too many waiting");
        s.pending_execs = Some(PendingExecs {
            processes: vec![benign],
            containers: vec![container(None)],
            ..PendingExecs::default()
        });
        assert!(s.pending_execs_matter(&base, |_| true), "a new container");
    }

    /// Beyond the bound the oldest reads are dropped, counted and warned about.
    #[test]
    fn retained_exec_reads_are_bounded_and_overflow_is_counted() {
        let mut s = scanner();
        for pid in 1..=(EXEC_RETAINED_MAX as i32 + 3) {
            retain(&mut s, process(pid, "/bin/x", None));
        }
        let mut stats = ScanStats::default();
        let mut warnings = Vec::new();
        s.bound_recent_execs(&mut stats, &mut warnings);
        assert_eq!(s.retained_execs(), EXEC_RETAINED_MAX);
        assert_eq!(stats.errors.get("exec_retention_overflow"), Some(&3));
        assert_eq!(warnings.len(), 1);
        // The first three (oldest) went.
        assert!(!s.recent_execs.contains_key(&1) && !s.recent_execs.contains_key(&3));
        assert!(s.recent_execs.contains_key(&4));
    }

    #[test]
    fn host_paths_are_unescaped_under_the_host_root() {
        use std::os::unix::ffi::OsStrExt;
        let p = under(Path::new("/proc/2/root"), "/var/lib/a\\x20b/\\xff");
        assert_eq!(p.as_os_str().as_bytes(), b"/proc/2/root/var/lib/a b/\xff");
        assert_eq!(under(Path::new("/h"), "/"), PathBuf::from("/h"));
    }

    /// What fscan's own `RootSpec::for_container` was tested for, on the function in use:
    /// lower dirs keep their order (top first) under the host root, and a root that is not
    /// an overlay (or not known) is walked merged.
    #[test]
    fn overlay_roots_become_layer_specs_under_the_host_root() {
        let host = tempfile::tempdir().unwrap();
        for d in ["var/lib/c/2/fs", "var/lib/c/1/fs"] {
            std::fs::create_dir_all(host.path().join(d)).unwrap();
        }
        let fs = RootFs {
            fstype: "overlay".into(),
            lower_dirs: vec!["/var/lib/c/2/fs".into(), "/var/lib/c/1/fs".into()],
            upper_dir: Some("/var/lib/c/9/fs".into()),
        };
        let root = container_root(Path::new("/proc"), Some(host.path()), &container(Some(fs)));
        assert_eq!(
            root.unwrap().spec,
            RootSpec::Overlay {
                lower_dirs: vec![
                    host.path().join("var/lib/c/2/fs"),
                    host.path().join("var/lib/c/1/fs")
                ],
                upper_dir: Some(host.path().join("var/lib/c/9/fs")),
            }
        );
        let other = RootFs {
            fstype: "ext4".into(),
            lower_dirs: vec![],
            upper_dir: None,
        };
        let merged = RootSpec::Merged {
            root: "/proc/42/root".into(),
        };
        let root = container_root(
            Path::new("/proc"),
            Some(host.path()),
            &container(Some(other)),
        );
        assert_eq!(root.unwrap().spec, merged);
        let root = container_root(Path::new("/proc"), Some(host.path()), &container(None));
        assert_eq!(root.unwrap().spec, merged);
    }

    #[test]
    fn overlay_layers_are_walked_when_reachable_else_the_merged_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("layers/l1")).unwrap();
        let rootfs = RootFs {
            fstype: "overlay".into(),
            lower_dirs: vec!["/layers/l1".into()],
            upper_dir: Some("/layers/up".into()),
        };
        let c = container(Some(rootfs.clone()));
        let root = container_root(Path::new("/proc"), Some(dir.path()), &c).unwrap();
        assert_eq!(
            root.spec,
            RootSpec::Overlay {
                lower_dirs: vec![dir.path().join("layers/l1")],
                upper_dir: Some(dir.path().join("layers/up")),
            }
        );
        // A lower dir that is not there (another mount namespace): the merged root.
        let missing = RootFs {
            lower_dirs: vec!["/nope".into()],
            ..rootfs
        };
        let root = container_root(
            Path::new("/proc"),
            Some(dir.path()),
            &container(Some(missing)),
        );
        assert_eq!(
            root.unwrap().spec,
            RootSpec::Merged {
                root: PathBuf::from("/proc/42/root")
            }
        );
        // No host root at all, or not an overlay: the merged root too.
        let root = container_root(Path::new("/proc"), None, &c).unwrap();
        assert!(matches!(root.spec, RootSpec::Merged { .. }));
        let root = container_root(Path::new("/proc"), Some(dir.path()), &container(None));
        assert!(matches!(root.unwrap().spec, RootSpec::Merged { .. }));
    }
}
