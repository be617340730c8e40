//! The exec-driven pass: reading just the exec'd processes, holding back what is still in the
//! container runtime's set-up, retaining what was read past its exit, and merging the reads
//! into the latest report.

use crate::{enrich, hash_executables, redact_cmdlines, Error, Scanner};
use nodeguard_collect::Collector;
use nodeguard_collect::{CollectedProcess, Snapshot};
use nodeguard_model::PodLookup;
use nodeguard_model::{
    Container, ExecObservation, Process, Report, ScanStats, Timestamp, SCHEMA_VERSION,
};
use nodeguard_policy::{evaluate, Evidence};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

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

/// What exec reads gathered for the next merge.
#[derive(Debug, Default)]
pub(crate) struct PendingExecs {
    pub(crate) processes: Vec<Process>,
    pub(crate) containers: Vec<Container>,
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

/// A process an exec-driven pass read, kept so that its findings outlive it (while its
/// container runs).
#[derive(Debug, Clone)]
pub(crate) struct Retained {
    pub(crate) process: Process,
    pub(crate) read_at: Instant,
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
        self.collector.execs_seen(pids);
        let wanted: Vec<i32> = pids.iter().chain(self.held_back.keys()).copied().collect();
        let Snapshot {
            processes: mut collected,
            containers: mut fresh,
            stats: mut pass_stats,
            mut warnings,
            ..
        } = nodeguard_collect::collect_pids(&self.options.collect, &wanted)?;
        let held = self.hold_back_runtime_init(&mut collected, &mut fresh);
        if !self.options.show_secrets {
            redact_cmdlines(&mut collected);
        }
        let read = hash_executables(
            &self.options,
            &self.policy,
            &self.digests,
            collected,
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
    pub(crate) fn keep_recent_execs(
        &mut self,
        processes: &mut Vec<Process>,
        containers: &[Container],
    ) {
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
    pub(crate) fn bound_recent_execs(&mut self, stats: &mut ScanStats, warnings: &mut Vec<String>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{container, process, scanner};
    use crate::{ScanOptions, EXEC_INIT_GRACE};
    use nodeguard_model::NoPods;
    use nodeguard_policy::Policy;
    use std::sync::Arc;

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
}
