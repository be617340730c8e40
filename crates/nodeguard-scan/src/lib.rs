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

pub mod image_verdicts;
pub mod runtime_images;

pub use image_verdicts::{
    Expected, ImageContents, ImageIndexes, ImageJudge, ImageName, ImageStatus,
};
pub use nodeguard_collect::held::{
    Grip, HeldProcess, HoldStats, Holder, Unheld, HOLD_BUDGET_DEFAULT,
};
use nodeguard_collect::{CollectOptions, CollectedProcess, Snapshot};
use nodeguard_fscan::{ContainerRoot, FsScanner, FsStats, RootSpec, WalkBudget};
use nodeguard_hash::{hash_keyed, Algorithms, DigestCache};
use nodeguard_model::{
    Container, ExecHistory, FileEntry, Process, Report, RootFs, Runtime, ScanStats, Timestamp,
    SCHEMA_VERSION,
};
pub use nodeguard_model::{NoPods, PodLookup};

mod exec_pass;
use exec_pass::{merge_stats, ExecPasses};
pub use exec_pass::{
    ExecPassStats, EXEC_HELD_MAX, EXEC_INIT_GRACE, EXEC_PENDING_MAX, EXEC_RETAINED_MAX,
};
pub use nodeguard_collect::{Collector, KeptMountNamespaces};
use nodeguard_policy::{evaluate, Evidence, FsGap, Policy};
use std::collections::{BTreeSet, HashMap};
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
    /// Keep writable layers as directory trees between scans
    /// ([`FsScanner::set_incremental`]).
    pub fs_incremental: bool,
    /// Entries per writable layer a filesystem scan re-checks
    /// ([`FsScanner::set_recheck_files`]).
    pub fs_recheck_files: u64,
    /// Keep command lines verbatim. By default (`false`) secrets in them are redacted as
    /// soon as they are collected ([`nodeguard_model::redact_cmdline`]), so they never enter
    /// the report, the state, the API, Events or logs.
    pub show_secrets: bool,
    /// How long a process read by an exec-driven pass ([`Scanner::read_execs`]) stays in
    /// reports after it is gone: its findings stay open at least this long after the read,
    /// and until the first full scan after that no longer sees it running.
    pub exec_retention: Duration,
}

/// [`ScanOptions::exec_retention`] by default: long enough for several Prometheus scrapes
/// and the Events publisher to see a process that lived for milliseconds.
pub const DEFAULT_EXEC_RETENTION: Duration = Duration::from_secs(300);

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
            fs_incremental: true,
            fs_recheck_files: nodeguard_fscan::DEFAULT_RECHECK_FILES,
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
    /// Counters of the latest walks: the last full walk's, with the figures of writable
    /// layers from the latest walk of them (either scope).
    last_fs_stats: FsStats,
    /// The exec-driven passes' state (see [`exec_pass`]).
    execs: ExecPasses,
    /// What the last report said of the node beyond processes and files.
    last: LastScan,
    /// Where the last scan's time went.
    last_phases: ScanPhases,
    /// Image verification, when on ([`Scanner::set_image_judge`]).
    images: Option<ImageJudge>,
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

/// What the last report said of the node beyond its processes and files, for the exec passes
/// between full scans: set by each full scan, its containers updated by each merge.
#[derive(Debug)]
struct LastScan {
    cap_last_cap: u32,
    host_bounding: Option<u64>,
    /// The last report's containers, sorted by id.
    containers: Vec<Container>,
}

impl LastScan {
    /// The last report's container `id`, found without a scan of them all.
    fn container(&self, id: &str) -> Option<&Container> {
        self.containers
            .binary_search_by(|c| c.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.containers[i])
    }
}

impl Scanner {
    pub fn new(options: ScanOptions, policy: Arc<Policy>) -> Scanner {
        let digests = Arc::new(DigestCache::new(options.hash_cache_entries));
        let mut filesystems = FsScanner::with_digest_cache(
            options.walk_budget.clone(),
            options.threads,
            Arc::clone(&digests),
            algorithms_for(&options, &policy),
        );
        filesystems.set_incremental(options.fs_incremental);
        filesystems.set_recheck_files(options.fs_recheck_files);
        Scanner {
            collector: Collector::new(options.collect.clone()),
            options,
            policy,
            digests,
            filesystems,
            last_files: Vec::new(),
            last_gaps: Vec::new(),
            last_fs_stats: FsStats::default(),
            execs: ExecPasses::default(),
            last: LastScan {
                cap_last_cap: nodeguard_collect::DEFAULT_CAP_LAST_CAP,
                host_bounding: None,
                containers: Vec::new(),
            },
            last_phases: ScanPhases::default(),
            images: None,
        }
    }

    /// Turns image verification on: from the next scan, containers get their `image` and
    /// container processes (and image-layer files) their `image_verdict`
    /// (see [`image_verdicts`]).
    pub fn set_image_judge(&mut self, judge: ImageJudge) {
        self.images = Some(judge);
    }

    /// The image indexer's progress, when image verification is on.
    pub fn image_index_progress(&self) -> Option<nodeguard_model::ImageIndexProgress> {
        self.images.as_ref().map(ImageJudge::progress)
    }

    /// The log of exec-time observations this scanner records into (for the API's
    /// `/v1/execs`).
    pub fn exec_history(&self) -> Arc<ExecHistory> {
        Arc::clone(self.execs.history())
    }

    pub fn options(&self) -> &ScanOptions {
        &self.options
    }

    /// How long exec-read processes stay in reports after they exit
    /// ([`ScanOptions::exec_retention`]).
    pub fn set_exec_retention(&mut self, retention: Duration) {
        self.options.exec_retention = retention;
    }

    /// The event source for writable layers (`--fs-events`): see
    /// [`nodeguard_fscan::FsScanner::set_events`].
    pub fn set_fs_events(
        &mut self,
        source: nodeguard_model::FsEventSource,
        events: Option<nodeguard_fscan::FsEvents>,
    ) {
        self.filesystems.set_events(source, events);
        self.last_fs_stats.events.source = source;
    }

    /// Swaps the policy used from the next scan on (SIGHUP reload).
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.policy = policy;
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The collector, to tell it of exec events ([`Collector::watch_execs`],
    /// [`Collector::execs_seen`], [`Collector::execs_lost`]) and how often to read each
    /// process in full while they are watched.
    pub fn collector(&mut self) -> &mut Collector {
        &mut self.collector
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
        // A full scan re-reads every process: exec reads not yet merged are in it, or
        // retained; what those reads cost is counted with this scan.
        if let Some(pending) = self.execs.take_pending() {
            stats = merge_stats(stats, pending.stats);
        }
        self.execs
            .keep_retained(&mut processes, &containers, self.options.exec_retention);

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
        let mut files = self.last_files.clone();
        if let Some(images) = &mut self.images {
            // A lookup per container and per process: the digests are the ones just computed.
            images.judge(&mut containers, &mut processes, true);
            images.judge_files(&mut files);
        }
        self.last_fs_stats.show_in(&mut stats);

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
        self.last = LastScan {
            cap_last_cap,
            host_bounding,
            containers: sorted_by_id(&containers),
        };
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
        // setuid/file-capability files hashed by this walk (layer-cached ones are not read).
        output.stats.add_walk_to(stats);
        warnings.extend(output.warnings);
        self.last_fs_stats = output.stats;
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
        self.last_fs_stats.recheck_age_seconds = output.stats.recheck_age_seconds;
        self.last_fs_stats.incremental_fallbacks = output.stats.incremental_fallbacks;
        self.last_fs_stats.events = output.stats.events;
        output.stats.add_walk_to(stats);
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
        .zip(container.rootfs.as_ref().and_then(RootFs::overlay))
        .filter(|(_, layers)| !layers.lower_dirs.is_empty())
        .map(|(host_root, layers)| layers.under(host_root))
        .filter(|layers| layers.lower_dirs.iter().all(|d| d.is_dir()))
        .map(RootSpec::Overlay);
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

/// A copy of `containers` sorted by id (for [`LastScan::container`]).
fn sorted_by_id(containers: &[Container]) -> Vec<Container> {
    let mut sorted = containers.to_vec();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    sorted
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
pub(crate) mod tests {
    use super::*;
    use nodeguard_model::{CgroupDriver, CgroupVersion, Limits, OverlayLayers, Runtime};

    pub(crate) fn container(rootfs: Option<RootFs>) -> Container {
        Container {
            image: None,
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

    pub(crate) fn process(pid: i32, exe: &str, container_id: Option<&str>) -> Process {
        Process {
            pid,
            ppid: 1,
            command: "x".into(),
            cmdline: exe.into(),
            container_id: container_id.map(str::to_string),
            exe: Some(exe.into()),
            sha256: Some("ab".repeat(32)),
            ..Process::default()
        }
    }

    pub(crate) fn scanner() -> Scanner {
        let options = ScanOptions::new(
            "/nonexistent/proc".into(),
            "/nonexistent/cg".into(),
            "n".into(),
        );
        Scanner::new(options, Arc::new(Policy::default()))
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
            layers: OverlayLayers {
                lower_dirs: vec!["/var/lib/c/2/fs".into(), "/var/lib/c/1/fs".into()],
                upper_dir: Some("/var/lib/c/9/fs".into()),
            },
        };
        let root = container_root(Path::new("/proc"), Some(host.path()), &container(Some(fs)));
        assert_eq!(
            root.unwrap().spec,
            RootSpec::Overlay(OverlayLayers {
                lower_dirs: vec![
                    host.path().join("var/lib/c/2/fs"),
                    host.path().join("var/lib/c/1/fs")
                ],
                upper_dir: Some(host.path().join("var/lib/c/9/fs")),
            })
        );
        let other = RootFs {
            fstype: "ext4".into(),
            layers: OverlayLayers::default(),
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
            layers: OverlayLayers {
                lower_dirs: vec!["/layers/l1".into()],
                upper_dir: Some("/layers/up".into()),
            },
        };
        let c = container(Some(rootfs.clone()));
        let root = container_root(Path::new("/proc"), Some(dir.path()), &c).unwrap();
        assert_eq!(
            root.spec,
            RootSpec::Overlay(OverlayLayers {
                lower_dirs: vec![dir.path().join("layers/l1")],
                upper_dir: Some(dir.path().join("layers/up")),
            })
        );
        // A lower dir that is not there (another mount namespace): the merged root.
        let missing = RootFs {
            layers: OverlayLayers {
                lower_dirs: vec!["/nope".into()],
                ..rootfs.layers
            },
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
