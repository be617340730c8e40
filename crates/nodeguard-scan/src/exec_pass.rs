//! The exec-driven pass: reading just the exec'd processes, holding back what is still in the
//! container runtime's set-up, retaining what was read past its exit, and merging the reads
//! into the latest report when they raise something new.
//!
//! Its cost follows the execs, not the node: each read process is evaluated once, with its
//! container as the last report knows it ([`crate::LastScan`]), and the findings it raises
//! are checked once against the open ones ([`Scanner::pending_execs_matter`]). Only a read
//! that raises a finding not yet open, or brings a container the last report does not know,
//! costs a merge into the latest report ([`Scanner::merge_execs`]).

use crate::{enrich, hash_executables, redact_cmdlines, Error, Scanner};
use nodeguard_collect::{CollectedProcess, Snapshot};
use nodeguard_model::{
    Container, ExecHistory, ExecObservation, Finding, PodLookup, Process, Report, ScanStats,
    Timestamp, SCHEMA_VERSION,
};
use nodeguard_policy::{evaluate, Evidence};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exec reads that raise nothing new wait for a later merge or the next full scan; past this
/// many waiting, the oldest are left to the next full scan (they are retained, so it reports
/// them even when they exited): the wait is bounded in memory and never costs a merge.
pub const EXEC_PENDING_MAX: usize = 1024;

/// At most this many exec-read processes are retained; beyond it the oldest reads that raised
/// nothing go first, then the oldest that raised a finding (only those are counted as the
/// `exec_retention_overflow` error, with a warning).
pub const EXEC_RETAINED_MAX: usize = 4096;

/// Of the retained reads, at most this many that raised no finding: they only list a process
/// that exited as `exited` until the next full scan (what it was stays in the exec history).
/// Past it the oldest of them go, uncounted: a node exec'ing `true` a hundred times a second
/// reaches it in seconds, and neither its memory nor its error counter should follow.
pub const EXEC_RETAINED_PLAIN_MAX: usize = 1024;

/// How long an exec'd process caught inside the container runtime's own set-up
/// ([`nodeguard_collect::runtime::in_runtime_init`]) is held back, waiting for the exec of the
/// container's entrypoint in the same pid. Past it the process is read as it is.
pub const EXEC_INIT_GRACE: Duration = Duration::from_secs(1);

/// At most this many processes are held back at once; beyond it they are read as they are.
pub const EXEC_HELD_MAX: usize = 512;

/// Findings raised by reads and not yet checked against the open ones, at most: past it the
/// reads are merged (checked by the evaluation of the merge instead).
const UNCHECKED_MAX: usize = 4 * EXEC_PENDING_MAX;

/// What an exec-driven pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecPassStats {
    /// Exec'd processes read and evaluated.
    pub read: usize,
    /// Exec'd processes gone before they could be read (nothing is known of them).
    pub vanished: usize,
    /// Processes held back because they were still in the container runtime's set-up.
    pub held: usize,
}

/// The state of the exec passes between full scans: reads waiting to be merged, reads
/// retained past their exit, processes held back in the runtime's set-up, and the history.
#[derive(Debug)]
pub(crate) struct ExecPasses {
    /// Processes read by exec-driven passes, by pid (a later exec of the same pid replaces
    /// its entry), with their container as read then.
    retained: BTreeMap<i32, Retained>,
    /// The retained reads that raised nothing, by age (`read_at`, pid), oldest first: the
    /// bounds drop from the front without sorting the whole set at each exec once it is full.
    quiet_by_age: BTreeSet<(Instant, i32)>,
    /// The retained reads that raised a finding, by age; dropped only when no quiet one is
    /// left.
    raised_by_age: BTreeSet<(Instant, i32)>,
    /// Every exec-read process as it was read, for `--since` queries (bounded; shared with
    /// the API).
    history: Arc<ExecHistory>,
    /// Exec reads not yet merged into a report.
    pending: Option<PendingExecs>,
    /// Exec'd processes read inside the runtime's set-up (`runc init`), by pid, with when
    /// they were first held back: read again with every exec pass until they exec the
    /// container's entrypoint, vanish, or [`EXEC_INIT_GRACE`] passes.
    held_back: BTreeMap<i32, Instant>,
}

/// What exec reads gathered for the next merge.
#[derive(Debug, Default)]
pub(crate) struct PendingExecs {
    /// The latest read of each pid.
    pub(crate) processes: BTreeMap<i32, Process>,
    /// Their containers as read, by id.
    pub(crate) containers: BTreeMap<String, Container>,
    pub(crate) stats: ScanStats,
    pub(crate) warnings: Vec<String>,
    /// Findings the reads raised, not yet checked against the open ones.
    unchecked: Vec<Finding>,
    /// Something in these reads is new to the sinks: they must be merged.
    must_merge: bool,
}

/// A process an exec-driven pass read, kept so that its findings outlive it (while its
/// container runs).
#[derive(Debug, Clone)]
pub(crate) struct Retained {
    pub(crate) process: Process,
    pub(crate) read_at: Instant,
    /// The read raised a finding naming its pid.
    pub(crate) raised: bool,
}

/// One exec pass's reads, evaluated, for [`ExecPasses::record`].
pub(crate) struct Reads {
    pub(crate) processes: Vec<Process>,
    /// Their containers as read (pod metadata added).
    pub(crate) fresh: Vec<Container>,
    /// What the processes raise (with their containers as the last report knows them).
    pub(crate) findings: Vec<Finding>,
    /// A container of these reads is not in the last report.
    pub(crate) new_container: bool,
    pub(crate) stats: ScanStats,
    pub(crate) warnings: Vec<String>,
}

/// The counters of two passes added up (what a merged report counts).
pub(crate) fn merge_stats(mut a: ScanStats, b: ScanStats) -> ScanStats {
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

impl Default for ExecPasses {
    fn default() -> ExecPasses {
        ExecPasses {
            retained: BTreeMap::new(),
            quiet_by_age: BTreeSet::new(),
            raised_by_age: BTreeSet::new(),
            history: Arc::new(ExecHistory::default()),
            pending: None,
            held_back: BTreeMap::new(),
        }
    }
}

impl ExecPasses {
    pub(crate) fn history(&self) -> &Arc<ExecHistory> {
        &self.history
    }

    /// The reads not yet merged, taken (a full scan re-reads every process: they are in it,
    /// or retained).
    pub(crate) fn take_pending(&mut self) -> Option<PendingExecs> {
        self.pending.take()
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    pub(crate) fn retained_len(&self) -> usize {
        self.retained.len()
    }

    /// Records one pass's reads: into the history (each with the findings naming its pid),
    /// the retained set, and the reads waiting for a merge (bounded by
    /// [`EXEC_PENDING_MAX`]). Nothing here grows with the node: each step is per read.
    pub(crate) fn record(&mut self, reads: Reads, now: Instant) {
        let Reads {
            processes,
            fresh,
            findings,
            new_container,
            mut stats,
            mut warnings,
        } = reads;
        let observed_at = Timestamp::now();
        for p in &processes {
            let pod = p
                .container_id
                .as_deref()
                .and_then(|id| fresh.iter().find(|c| c.id == id))
                .and_then(|c| c.pod.clone());
            let raised: Vec<Finding> = findings
                .iter()
                .filter(|f| f.pid == Some(p.pid))
                .cloned()
                .collect();
            let raised_any = !raised.is_empty();
            self.history.record(ExecObservation {
                observed_at,
                process: p.clone(),
                pod,
                findings: raised,
            });
            self.retain(p.clone(), now, raised_any);
        }
        self.bound_retained(&mut stats, &mut warnings);
        let pending = self.pending.get_or_insert_with(PendingExecs::default);
        for p in processes {
            pending.processes.insert(p.pid, p);
        }
        // Beyond the bound the lowest pids wait for the next full scan (retained, so it
        // reports them even if they exited meanwhile); their findings were checked or are.
        while pending.processes.len() > EXEC_PENDING_MAX {
            pending.processes.pop_first();
        }
        for c in fresh {
            pending.containers.entry(c.id.clone()).or_insert(c);
        }
        pending.must_merge |= new_container;
        if pending.unchecked.len() + findings.len() > UNCHECKED_MAX {
            pending.must_merge = true;
            pending.unchecked.clear();
        } else if !pending.must_merge {
            pending.unchecked.extend(findings);
        }
        pending.stats = merge_stats(std::mem::take(&mut pending.stats), stats);
        pending.warnings.extend(warnings);
    }

    /// Retains `process` read at `now` (`raised`: it raised a finding), in place of an
    /// earlier read of its pid (O(log n)).
    fn retain(&mut self, process: Process, now: Instant, raised: bool) {
        let pid = process.pid;
        let entry = Retained {
            process,
            read_at: now,
            raised,
        };
        if let Some(before) = self.retained.insert(pid, entry) {
            self.by_age(before.raised).remove(&(before.read_at, pid));
        }
        self.by_age(raised).insert((now, pid));
    }

    /// The age index of the retained reads that raised a finding, or of those that did not.
    fn by_age(&mut self, raised: bool) -> &mut BTreeSet<(Instant, i32)> {
        if raised {
            &mut self.raised_by_age
        } else {
            &mut self.quiet_by_age
        }
    }

    /// Drops the oldest retained read, those that raised nothing first; whether the one
    /// dropped raised a finding.
    fn drop_oldest(&mut self) -> Option<bool> {
        let (raised, (_, pid)) = match self.quiet_by_age.pop_first() {
            Some(quiet) => (false, quiet),
            None => (true, self.raised_by_age.pop_first()?),
        };
        self.retained.remove(&pid);
        Some(raised)
    }

    /// Whether the reads waiting change what sinks act on (see
    /// [`Scanner::pending_execs_matter`]). Each finding is checked once.
    pub(crate) fn pending_matter(&mut self, is_open: impl Fn(&str) -> bool) -> bool {
        let Some(pending) = self.pending.as_mut() else {
            return false;
        };
        if !pending.must_merge {
            pending.must_merge = pending.unchecked.iter().any(|f| !is_open(&f.id));
        }
        pending.unchecked.clear();
        pending.must_merge
    }

    /// Takes out of `collected` (and their containers out of `fresh`) the processes still in
    /// the runtime's set-up, holding them back within [`EXEC_INIT_GRACE`] and
    /// [`EXEC_HELD_MAX`]; forgets held-back pids that were not read (gone) or no longer are
    /// in the set-up. Returns how many are held back now.
    pub(crate) fn hold_back_runtime_init(
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

    pub(crate) fn held_back_pids(&self) -> impl Iterator<Item = i32> + '_ {
        self.held_back.keys().copied()
    }

    pub(crate) fn is_held_back(&self, pid: i32) -> bool {
        self.held_back.contains_key(&pid)
    }

    /// See [`Scanner::held_back_until`].
    pub(crate) fn held_back_until(&self) -> Option<Instant> {
        self.held_back
            .values()
            .min()
            .map(|since| *since + EXEC_INIT_GRACE)
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
    pub(crate) fn keep_retained(
        &mut self,
        processes: &mut Vec<Process>,
        containers: &[Container],
        retention: Duration,
    ) {
        let alive: BTreeSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
        self.retained.retain(|_, r| {
            r.read_at.elapsed() <= retention
                && r.process
                    .container_id
                    .as_deref()
                    .is_none_or(|id| alive.contains(id))
        });
        if self.retained.is_empty() {
            self.quiet_by_age.clear();
            self.raised_by_age.clear();
            return;
        }
        let running: BTreeSet<(i32, Option<&str>, Option<&str>)> = processes
            .iter()
            .map(|p| (p.pid, p.exe.as_deref(), p.container_id.as_deref()))
            .collect();
        self.retained.retain(|_, r| {
            let p = &r.process;
            !running.contains(&(p.pid, p.exe.as_deref(), p.container_id.as_deref()))
        });
        // Once per full scan: the age indexes follow what is still retained.
        let retained = &self.retained;
        let kept = |(at, pid): &(Instant, i32)| retained.get(pid).is_some_and(|r| r.read_at == *at);
        self.quiet_by_age.retain(kept);
        self.raised_by_age.retain(kept);
        // Marked exited, so that nobody takes them for what runs now.
        for r in self.retained.values() {
            let mut process = r.process.clone();
            process.exited = true;
            processes.push(process);
        }
        processes.sort_by_key(|p| p.pid);
    }

    /// Keeps at most [`EXEC_RETAINED_PLAIN_MAX`] retained reads that raised nothing and
    /// [`EXEC_RETAINED_MAX`] in all, dropping the oldest that raised nothing first; a read
    /// that raised a finding dropped is counted and warned about, never silently.
    fn bound_retained(&mut self, stats: &mut ScanStats, warnings: &mut Vec<String>) {
        // Each retained read has its one entry in one of the age indexes.
        while self.quiet_by_age.len() > EXEC_RETAINED_PLAIN_MAX {
            self.drop_oldest();
        }
        let mut excess = 0usize;
        while self.retained.len() > EXEC_RETAINED_MAX {
            match self.drop_oldest() {
                Some(true) => excess += 1,
                Some(false) => {}
                None => break,
            }
        }
        if excess == 0 {
            return;
        }
        *stats
            .errors
            .entry("exec_retention_overflow".to_string())
            .or_insert(0) += excess as u64;
        warnings.push(format!(
            "more than {EXEC_RETAINED_MAX} exec-read processes that raised a finding within the retention window: the {excess} oldest are no longer retained after they exit"
        ));
    }
}

impl Scanner {
    /// Reads the processes `pids` (just exec'd) the way a scan does — attribution to a
    /// container, executable layer, hash through the one digest cache — evaluates each once,
    /// and keeps them for the next [`Scanner::merge_execs`]. Reading is what must happen at
    /// once (a process may live milliseconds); merging, which costs as much as the node is
    /// big, happens only when [`Scanner::pending_execs_matter`], and covers every read since.
    ///
    /// A process still inside the container runtime's set-up (runc's `runc init` stages, in
    /// the new container's cgroup but with the runtime's capabilities, namespaces and
    /// executable) is not the container's process yet: it is held back and read again with
    /// each pass (`pids` may then be empty) until it execs the entrypoint, vanishes or has
    /// waited [`EXEC_INIT_GRACE`] ([`Scanner::held_back_until`] says when that is). Read at
    /// once, a new pod's sandbox looked like a privileged container of its own, with the
    /// host's pid namespace, until the next full scan.
    ///
    /// Each process read is retained for [`crate::ScanOptions::exec_retention`] while its
    /// container runs: when it exits, later reports (full scans included) still carry it as
    /// it was read, so a process that lived for milliseconds keeps its findings open long
    /// enough for every sink to see them. Once its container is gone, the next full scan
    /// drops it (open findings describe the node as it is now); what it was and what it
    /// raised stay in [`Scanner::exec_history`], which `pods` names the pods of.
    pub fn read_execs(
        &mut self,
        pids: &[i32],
        pods: &dyn PodLookup,
    ) -> Result<ExecPassStats, Error> {
        self.read_held_execs(pids, Vec::new(), pods)
    }

    /// [`Scanner::read_execs`] of `pids` and of the processes `held` when their exec event
    /// arrived ([`crate::Holder`]): those are read from what was captured while they ran and
    /// hashed from their held executable, so a process that lived for a millisecond is
    /// read with its digest. A held process's pid need not be in `pids`.
    pub fn read_held_execs(
        &mut self,
        pids: &[i32],
        held: Vec<crate::HeldProcess>,
        pods: &dyn PodLookup,
    ) -> Result<ExecPassStats, Error> {
        let mut pids = pids.to_vec();
        let mut dirs = Vec::with_capacity(held.len());
        let mut exes = std::collections::HashMap::with_capacity(held.len());
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
        let wanted: Vec<i32> = pids
            .iter()
            .copied()
            .chain(self.execs.held_back_pids())
            .collect();
        let Snapshot {
            processes: mut collected,
            containers: mut fresh,
            mut stats,
            mut warnings,
            ..
        } = self.collector.collect_held(&wanted, dirs)?;
        let held = self
            .execs
            .hold_back_runtime_init(&mut collected, &mut fresh);
        if !self.options.show_secrets {
            redact_cmdlines(&mut collected);
        }
        let read = hash_executables(
            &self.options,
            &self.policy,
            &self.digests,
            collected,
            &exes,
            &mut stats,
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
                .filter(|pid| !read_pids.contains(pid) && !self.execs.is_held_back(**pid))
                .count(),
        };
        for c in &mut fresh {
            enrich(c, pods);
        }
        let (findings, new_container) = self.evaluate_reads(&read, &fresh);
        self.execs.record(
            Reads {
                processes: read,
                fresh,
                findings,
                new_container,
                stats,
                warnings,
            },
            Instant::now(),
        );
        Ok(pass)
    }

    /// What the processes just read raise, with their containers as the last report knows
    /// them (limits, sandbox, pod) or, for a container it does not know, as read; and
    /// whether such a container was among them. Costs as much as the reads, not the node.
    fn evaluate_reads(&self, read: &[Process], fresh: &[Container]) -> (Vec<Finding>, bool) {
        let ids: BTreeSet<&str> = read
            .iter()
            .filter_map(|p| p.container_id.as_deref())
            .collect();
        let mut new_container = false;
        let containers: Vec<Container> = ids
            .iter()
            .filter_map(|id| match self.last.container(id) {
                Some(known) => Some(known.clone()),
                None => {
                    new_container = true;
                    fresh.iter().find(|c| c.id == *id).cloned()
                }
            })
            .collect();
        if read.is_empty() {
            return (Vec::new(), new_container);
        }
        let findings = evaluate(
            &self.policy,
            &Evidence {
                processes: read,
                containers: &containers,
                files: &[],
                cap_last_cap: self.last.cap_last_cap,
                gaps: &[],
                host_bounding: self.last.host_bounding,
            },
        );
        (findings, new_container)
    }

    /// When the processes held back in the runtime's set-up are due to be read as they are,
    /// if any are: the caller runs [`Scanner::read_execs`] then, with no new pids, unless an
    /// exec pass came first.
    pub fn held_back_until(&self) -> Option<Instant> {
        self.execs.held_back_until()
    }

    /// Whether reads wait for [`Scanner::merge_execs`].
    pub fn has_pending_execs(&self) -> bool {
        self.execs.has_pending()
    }

    /// Whether the reads waiting to be merged change what sinks act on: a container the last
    /// report does not know, or a finding (of those processes, by the policy in force when
    /// they were read) that `is_open` does not know. Each read's findings are checked once,
    /// by the first call after the read; once the reads matter they matter until merged.
    /// Most execs on a node raise nothing new; their reads wait for a later merge or the next
    /// full scan instead of costing a merge of the whole report each.
    pub fn pending_execs_matter(&mut self, is_open: impl Fn(&str) -> bool) -> bool {
        self.execs.pending_matter(is_open)
    }

    /// Puts the processes read since the last merge into `base` (the latest report) in place
    /// of what it said about those pids, and evaluates the whole with the policy in force.
    /// Containers the last report knows keep what the full scan said of them (runtime,
    /// sandbox, limits), with the new pids added; a container first seen in these reads is
    /// taken from them alone until the next full scan. Files, filesystem gaps,
    /// `cap_last_cap` and the host's bounding set are the last full scan's. The report's
    /// stats count the reads merged (hashes, errors, vanished processes), so totals summed
    /// over reports stay right.
    pub fn merge_execs(&mut self, base: &Report, pods: &dyn PodLookup) -> Report {
        let started = Instant::now();
        let scanned_at = Timestamp::now();
        let PendingExecs {
            processes: read,
            containers: fresh,
            stats: pass_stats,
            warnings,
            ..
        } = self.execs.take_pending().unwrap_or_default();

        let mut containers = base.containers.clone();
        for (_, mut container) in fresh {
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

        let mut processes: Vec<Process> = base
            .processes
            .iter()
            .filter(|p| !read.contains_key(&p.pid))
            .cloned()
            .collect();
        processes.extend(read.into_values());
        processes.sort_by_key(|p| p.pid);
        if let Some(images) = &mut self.images {
            images.judge(&mut containers, &mut processes, false);
        }

        let files = self.last_files.clone();
        let findings = evaluate(
            &self.policy,
            &Evidence {
                processes: &processes,
                containers: &containers,
                files: &files,
                cap_last_cap: self.last.cap_last_cap,
                gaps: &self.last_gaps,
                host_bounding: self.last.host_bounding,
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
            fs_recheck_age_seconds: base.stats.fs_recheck_age_seconds,
            fs_incremental_fallbacks: base.stats.fs_incremental_fallbacks,
            fs_events: base.stats.fs_events,
            ..pass_stats
        };
        let mut all_warnings = base.warnings.clone();
        for w in warnings {
            if !all_warnings.contains(&w) {
                all_warnings.push(w);
            }
        }
        self.last.containers.clone_from(&containers);
        Report {
            schema_version: SCHEMA_VERSION,
            node: self.options.node_name.clone(),
            scanned_at,
            duration_ms: started.elapsed().as_millis() as u64,
            containers,
            processes,
            files,
            findings,
            stats,
            warnings: all_warnings,
        }
    }

    /// Processes read by exec passes since at most the retention window: how many.
    pub fn retained_execs(&self) -> usize {
        self.execs.retained_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{container, process};
    use crate::ScanOptions;
    use nodeguard_model::NoPods;
    use nodeguard_policy::Policy;
    use std::sync::Arc;

    fn retain(s: &mut ExecPasses, p: Process) {
        s.retain(p, Instant::now(), true);
    }

    /// A process read at exec that exited comes back into a full scan's report while the
    /// retention window lasts and its container still runs; one still running is not
    /// doubled, and from then on is reported like any process; once its container is gone
    /// (the pod was deleted) it is dropped at once, so the pod's findings resolve at this
    /// scan; after the window it is dropped too.
    #[test]
    fn exec_read_processes_outlive_their_exit_while_their_container_runs() {
        let mut s = ExecPasses::default();
        let retention = Duration::from_secs(300);
        let c = container(None);
        retain(&mut s, process(42, "/bin/evil", Some(&c.id)));
        retain(&mut s, process(43, "/bin/sleep", Some(&c.id)));
        retain(&mut s, process(44, "/bin/hostprobe", None));

        // 43 still runs (same pid, executable and container); 42 has exited, its container
        // runs on.
        let mut processes = vec![process(43, "/bin/sleep", Some(&c.id))];
        let containers = vec![c.clone()];
        s.keep_retained(&mut processes, &containers, retention);
        let pids: Vec<(i32, bool)> = processes.iter().map(|p| (p.pid, p.exited)).collect();
        assert_eq!(
            pids,
            [(42, true), (43, false), (44, true)],
            "the exited ones say so"
        );

        // The container is gone: its process is not brought back (nor is 43, which a scan
        // reported already); the host's short-lived process stays for the window.
        let mut processes = vec![process(42, "/bin/other", None)];
        s.keep_retained(&mut processes, &[], retention);
        let seen: Vec<(i32, Option<&str>)> = processes
            .iter()
            .map(|p| (p.pid, p.exe.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [(42, Some("/bin/other")), (44, Some("/bin/hostprobe"))],
            "{processes:?}"
        );
        assert_eq!(s.retained_len(), 1);

        // Past the window: nothing comes back, and the entries are gone.
        std::thread::sleep(Duration::from_millis(2));
        let mut processes = vec![];
        s.keep_retained(&mut processes, &[], Duration::ZERO);
        assert!(processes.is_empty());
        assert_eq!(s.retained_len(), 0);
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
        let pending = s.execs.pending.as_ref().expect("reads wait to be merged");
        assert!(pending
            .processes
            .get(&w)
            .is_some_and(|p| p.cmdline == "runc init"));
        waiting.kill().unwrap();
        waiting.wait().unwrap();
    }

    fn reads(processes: Vec<Process>, findings: Vec<Finding>, new_container: bool) -> Reads {
        Reads {
            processes,
            fresh: vec![],
            findings,
            new_container,
            stats: ScanStats::default(),
            warnings: vec![],
        }
    }

    /// Only reads that raise a finding not yet open, or bring a container the last report
    /// does not know, are worth a merge of the whole report; each finding is checked once,
    /// and reads that matter keep mattering until merged.
    #[test]
    fn pending_exec_reads_matter_only_when_they_raise_something_new() {
        let mut s = ExecPasses::default();
        assert!(!s.pending_matter(|_| false), "nothing pending");

        let raised = Finding::new(
            nodeguard_model::FindingKind::DeniedBinary,
            nodeguard_model::Severity::Critical,
            None,
            "/tmp/evil",
            "m",
        );
        s.record(
            reads(
                vec![process(42, "/tmp/evil", None)],
                vec![raised.clone()],
                false,
            ),
            Instant::now(),
        );
        assert!(!s.pending_matter(|_| true), "already open");
        let checked = std::cell::Cell::new(0);
        assert!(
            !s.pending_matter(|_| {
                checked.set(checked.get() + 1);
                false
            }),
            "checked once: not again"
        );
        assert_eq!(checked.get(), 0);
        s.record(
            reads(vec![process(43, "/tmp/evil", None)], vec![raised], false),
            Instant::now(),
        );
        assert!(s.pending_matter(|_| false), "a new finding");
        assert!(s.pending_matter(|_| true), "matters until merged");
        assert!(s.take_pending().is_some());
        assert!(!s.pending_matter(|_| false), "merged");

        s.record(
            reads(vec![process(44, "/bin/sh", None)], vec![], true),
            Instant::now(),
        );
        assert!(s.pending_matter(|_| true), "a new container");
    }

    /// Reads that raise nothing new wait in bounded memory and never cost a merge: past
    /// the bound the lowest pids are left to the next full scan, which still lists the
    /// youngest [`EXEC_RETAINED_PLAIN_MAX`] of them as exited (they raised nothing).
    #[test]
    fn pending_exec_reads_are_bounded_without_a_merge() {
        let mut s = ExecPasses::default();
        for pid in 1..=(EXEC_PENDING_MAX as i32 + 5) {
            s.record(
                reads(vec![process(pid, "/bin/true", None)], vec![], false),
                Instant::now(),
            );
        }
        assert!(!s.pending_matter(|_| true));
        let pending = s.take_pending().expect("pending");
        assert_eq!(pending.processes.len(), EXEC_PENDING_MAX);
        assert_eq!(pending.processes.keys().next(), Some(&6));
        let mut processes = vec![];
        s.keep_retained(&mut processes, &[], Duration::from_secs(300));
        assert_eq!(
            processes.len(),
            EXEC_RETAINED_PLAIN_MAX,
            "retained up to their bound"
        );
        assert_eq!(
            processes.last().map(|p| p.pid),
            Some(EXEC_PENDING_MAX as i32 + 5)
        );
    }

    /// A read is evaluated with its container as the last report knows it (here a pod's
    /// sandbox: nothing of the pod's runs in it, so it raises nothing), and a container the
    /// last report does not know is evaluated as read and makes the reads matter.
    #[test]
    fn reads_are_evaluated_with_their_container_as_the_last_report_knows_it() {
        let mut s = crate::tests::scanner();
        let mut known = container(None);
        known.sandbox = true;
        s.last.containers = vec![known.clone()];
        let root = process(42, "/pause", Some(&known.id));
        let (findings, new_container) = s.evaluate_reads(std::slice::from_ref(&root), &[]);
        assert!(findings.is_empty(), "{findings:?}");
        assert!(!new_container);

        let mut fresh = container(None);
        fresh.id = "b".repeat(64);
        let other = process(43, "/bin/sh", Some(&fresh.id));
        let (findings, new_container) = s.evaluate_reads(&[other], &[fresh]);
        assert!(new_container);
        assert!(
            findings
                .iter()
                .any(|f| f.kind == nodeguard_model::FindingKind::RunsAsRoot),
            "{findings:?}"
        );
    }

    /// The bound drops the reads read longest ago, by read time, not by pid: a pid read
    /// again counts from its new read; and the age index follows what a full scan keeps.
    #[test]
    fn retained_overflow_drops_the_oldest_reads_a_pid_read_again_is_young() {
        let mut s = ExecPasses::default();
        let t0 = Instant::now();
        let at = |i: u64| t0 + Duration::from_micros(i);
        for pid in 1..=(EXEC_RETAINED_MAX as i32 + 2) {
            s.retain(process(pid, "/bin/x", None), at(pid as u64), true);
        }
        s.retain(process(1, "/bin/y", None), at(10_000), true);
        let mut stats = ScanStats::default();
        s.bound_retained(&mut stats, &mut Vec::new());
        assert_eq!(s.retained_len(), EXEC_RETAINED_MAX);
        assert_eq!(stats.errors.get("exec_retention_overflow"), Some(&2));
        assert!(s.retained.contains_key(&1), "read again: the youngest");
        assert!(!s.retained.contains_key(&2) && !s.retained.contains_key(&3));
        assert_eq!(
            s.quiet_by_age.len() + s.raised_by_age.len(),
            s.retained.len()
        );

        // A full scan that sees pid 1 running drops it from retention, and from the index.
        let mut processes = vec![process(1, "/bin/y", None)];
        s.keep_retained(&mut processes, &[], Duration::from_secs(300));
        assert!(!s.retained.contains_key(&1));
        assert_eq!(
            s.quiet_by_age.len() + s.raised_by_age.len(),
            s.retained.len()
        );
    }

    /// Beyond the bound the oldest reads are dropped, counted and warned about.
    #[test]
    fn retained_exec_reads_are_bounded_and_overflow_is_counted() {
        let mut s = ExecPasses::default();
        for pid in 1..=(EXEC_RETAINED_MAX as i32 + 3) {
            retain(&mut s, process(pid, "/bin/x", None));
        }
        let mut stats = ScanStats::default();
        let mut warnings = Vec::new();
        s.bound_retained(&mut stats, &mut warnings);
        assert_eq!(s.retained_len(), EXEC_RETAINED_MAX);
        assert_eq!(stats.errors.get("exec_retention_overflow"), Some(&3));
        assert_eq!(warnings.len(), 1);
        // The first three (oldest) went.
        assert!(!s.retained.contains_key(&1) && !s.retained.contains_key(&3));
        assert!(s.retained.contains_key(&4));
    }
    /// A node exec'ing `true` all the time: reads that raised nothing are kept to their own
    /// bound, oldest out first, and none of that is an error; a read that raised a finding
    /// is not pushed out by them, however many come after it.
    #[test]
    fn reads_that_raised_nothing_go_first_and_uncounted() {
        let mut s = ExecPasses::default();
        let t0 = Instant::now();
        let at = |i: u64| t0 + Duration::from_micros(i);
        s.retain(process(1, "/tmp/dropped", None), at(1), true);
        let mut stats = ScanStats::default();
        let mut warnings = Vec::new();
        for pid in 2..=(EXEC_RETAINED_MAX as i32 * 2) {
            s.retain(process(pid, "/bin/true", None), at(pid as u64), false);
            s.bound_retained(&mut stats, &mut warnings);
        }
        assert!(
            s.retained.contains_key(&1),
            "the read that raised a finding stays"
        );
        assert_eq!(s.retained_len(), EXEC_RETAINED_PLAIN_MAX + 1);
        assert_eq!(stats.errors.get("exec_retention_overflow"), None);
        assert!(warnings.is_empty(), "{warnings:?}");
        // The youngest plain reads are the ones kept.
        let last = EXEC_RETAINED_MAX as i32 * 2;
        assert!(s.retained.contains_key(&last));
        assert!(!s
            .retained
            .contains_key(&(last - EXEC_RETAINED_PLAIN_MAX as i32)));
        assert_eq!(
            s.quiet_by_age.len() + s.raised_by_age.len(),
            s.retained.len()
        );

        // A pid read again without a finding moves to the plain reads.
        s.retain(process(1, "/bin/sh", None), at(10_000_000), false);
        s.bound_retained(&mut stats, &mut warnings);
        assert_eq!(s.retained_len(), EXEC_RETAINED_PLAIN_MAX);
        assert_eq!(
            s.quiet_by_age.len() + s.raised_by_age.len(),
            s.retained.len()
        );
    }
}
