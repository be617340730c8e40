//! The watch loop of `nodeguard run`.
//!
//! Scans processes every `interval` and container filesystems every `fs_interval` (each
//! with jitter, so a fleet of agents does not scan in lockstep). A process scan also walks
//! the writable layers of containers whose image layers the last filesystem scan cached, so
//! a file planted in a running container shows within `interval`; the slow walk of image
//! layers waits for `fs_interval`. It keeps the [`FindingLedger`]
//! (first/last seen, resolution), and publishes each new [`NodeState`] on a
//! `tokio::sync::watch` channel that keeps only the newest. Sinks — metrics, the HTTP API,
//! Kubernetes Events — read that channel at their own pace: a slow sink never delays a
//! scan, and a scan never holds anything a sink waits for.
//!
//! Scans run on a blocking thread; the caches inside the [`Scanner`] live across scans.
//!
//! With an [`ExecFeed`] (the kernel's process-events connector), each exec is handled at
//! once: execs arriving within [`EXEC_COALESCE`] of each other form one batch (at most
//! [`EXEC_BATCH_MAX`] pids), the scanner reads just those processes at once
//! ([`Scanner::read_execs`]), and at most every [`EXEC_PUBLISH_GAP`] merges what it read
//! into the latest report ([`Scanner::merge_execs`]), which is published like a scan's. Lost events (the kernel's buffer or the feed's channel overflowed) bring the next
//! full scan forward to [`RECONCILE_AFTER_LOSS`] from then. The feed only feeds this loop;
//! sinks still only read the state channel.

use nodeguard_model::{
    ExecEventSource, ExecEventStats, FindingLedger, NodeState, PodLookup, Report, ScanKind,
    ScanRun, Severity, Timestamp,
};
use nodeguard_policy::Policy;
pub use nodeguard_procevents::{ExecEvent, Stats as ExecFeedStats};
use nodeguard_scan::{ScanScope, Scanner};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};

/// The latest state, `None` until the first scan completes.
pub type StateSender = watch::Sender<Option<Arc<NodeState>>>;
pub type StateReceiver = watch::Receiver<Option<Arc<NodeState>>>;

/// Why the loop stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the scan thread failed: {0}")]
    ScanThread(String),
}

/// When to scan.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Between process scans.
    pub interval: Duration,
    /// Between filesystem scans.
    pub fs_interval: Duration,
    /// Fraction of the interval added or removed at random (0.1 = ±10%).
    pub jitter: f64,
}

/// Hooks for whoever counts scans (the metrics crate implements this in the agent).
pub trait ScanObserver: Send + Sync {
    fn scan_finished(&self, kind: ScanKind, duration: Duration, ok: bool);
    fn state_changed(&self, state: &Arc<NodeState>);
    fn policy_reload(&self, ok: bool);
    /// The settings of the policy now in force that switch a check off
    /// (`Policy::weakened`), after each successful reload.
    fn policy_weakened(&self, _settings: &[&'static str]) {}
}

/// An observer that does nothing.
pub struct NoObserver;

impl ScanObserver for NoObserver {
    fn scan_finished(&self, _: ScanKind, _: Duration, _: bool) {}
    fn state_changed(&self, _: &Arc<NodeState>) {}
    fn policy_reload(&self, _: bool) {}
}

/// Requests to the running loop.
#[derive(Debug)]
pub enum Control {
    /// Re-read the policy file (SIGHUP). A broken file is refused; the old policy stays.
    ReloadPolicy,
    /// Stop after the scan in progress, if any.
    Shutdown,
}

/// Everything the loop needs.
pub struct Daemon {
    pub scanner: Scanner,
    pub schedule: Schedule,
    /// The policy file to reload on [`Control::ReloadPolicy`], if any.
    pub policy_path: Option<PathBuf>,
    pub pods: Arc<dyn PodLookup>,
    pub observer: Arc<dyn ScanObserver>,
    /// Exec events, or `None` to scan on the schedule only (polling).
    pub exec_feed: Option<ExecFeed>,
}

/// Exec events for the loop: the receiving end of the event source's bounded channel and
/// its counters.
pub struct ExecFeed {
    pub receiver: mpsc::Receiver<ExecEvent>,
    pub stats: Arc<ExecFeedStats>,
}

/// How long the loop gathers further execs after the first of a batch.
pub const EXEC_COALESCE: Duration = Duration::from_millis(5);
/// The most pids one exec-driven pass reads; the rest wait for the next pass.
pub const EXEC_BATCH_MAX: usize = 512;
/// Exec reads are merged into the report and published at most this often (a burst of execs
/// makes one new state per gap, not one per exec: each merge costs as much as the node is
/// big). The first exec after a quiet spell is published at once.
pub const EXEC_PUBLISH_GAP: Duration = Duration::from_millis(250);
/// After lost exec events, the next full scan starts this soon (unless one is due sooner).
pub const RECONCILE_AFTER_LOSS: Duration = Duration::from_secs(1);

/// Counters that outlive single scans.
struct Totals {
    ledger: FindingLedger,
    last_scans: BTreeMap<ScanKind, ScanRun>,
    findings_detected: BTreeMap<(nodeguard_model::FindingKind, nodeguard_model::Severity), u64>,
    errors_total: BTreeMap<String, u64>,
    policy_reload_failures: u64,
    policy_loaded_at: Timestamp,
    exec: ExecEventStats,
}

/// What waiting for a blocking pass ended with.
enum Waited<T> {
    Done(T),
    Shutdown,
}

/// Waits for a pass on a blocking thread while answering control messages: a reload waits
/// for the pass (`reload_pending`), a shutdown leaves it behind (the runtime's shutdown
/// timeout bounds that).
async fn wait_blocking<T>(
    mut joined: tokio::task::JoinHandle<T>,
    control: &mut mpsc::Receiver<Control>,
    reload_pending: &mut bool,
) -> Result<Waited<T>, Error> {
    loop {
        tokio::select! {
            joined = &mut joined => {
                return joined.map(Waited::Done).map_err(|e| Error::ScanThread(e.to_string()));
            }
            msg = control.recv() => match msg {
                Some(Control::ReloadPolicy) => *reload_pending = true,
                Some(Control::Shutdown) | None => {
                    tracing::info!("shutting down during a scan");
                    return Ok(Waited::Shutdown);
                }
            },
        }
    }
}

/// The next exec event, or never when there is no feed.
async fn next_exec(feed: &mut Option<ExecFeed>) -> Option<ExecEvent> {
    match feed {
        Some(feed) => feed.receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// A batch of exec'd pids: the first event, and what arrives within [`EXEC_COALESCE`], up
/// to [`EXEC_BATCH_MAX`] distinct pids. `true` when a loss was announced meanwhile.
async fn gather(first: ExecEvent, receiver: &mut mpsc::Receiver<ExecEvent>) -> (Vec<i32>, bool) {
    let mut pids = Vec::new();
    let mut lost = false;
    let mut take = |event: ExecEvent, pids: &mut Vec<i32>| match event {
        ExecEvent::Exec { pid } => {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        ExecEvent::Lost => lost = true,
    };
    take(first, &mut pids);
    tokio::time::sleep(EXEC_COALESCE).await;
    while pids.len() < EXEC_BATCH_MAX {
        match receiver.try_recv() {
            Ok(event) => take(event, &mut pids),
            Err(_) => break,
        }
    }
    (pids, lost)
}

impl Daemon {
    /// Runs until [`Control::Shutdown`] arrives or the control channel closes.
    pub async fn run(
        self,
        state: StateSender,
        mut control: mpsc::Receiver<Control>,
    ) -> Result<(), Error> {
        let Daemon {
            scanner,
            schedule,
            policy_path,
            pods,
            observer,
            exec_feed,
        } = self;
        let mut exec_feed = exec_feed;
        let mut scanner = Some(scanner);
        let mut totals = Totals {
            ledger: FindingLedger::default(),
            last_scans: BTreeMap::new(),
            findings_detected: BTreeMap::new(),
            errors_total: BTreeMap::new(),
            policy_reload_failures: 0,
            policy_loaded_at: Timestamp::now(),
            exec: ExecEventStats {
                source: if exec_feed.is_some() {
                    ExecEventSource::Netlink
                } else {
                    ExecEventSource::Polling
                },
                ..ExecEventStats::default()
            },
        };
        let feed_stats = exec_feed.as_ref().map(|f| Arc::clone(&f.stats));
        let mut lost_seen = 0u64;
        let mut latest: Option<Arc<NodeState>> = None;
        // When the exec reads waiting in the scanner are merged and published.
        let mut merge_at: Option<Instant> = None;
        let mut last_merge = Instant::now();
        // The first scan is a process scan so the agent is ready quickly; the first
        // filesystem scan follows right after it.
        let mut next_process = Instant::now();
        let mut next_fs = Instant::now();
        let mut first = true;
        loop {
            let now = Instant::now();
            if now >= next_process || now >= next_fs {
                let scope = if now >= next_fs && !first {
                    ScanScope::ProcessesAndFilesystems
                } else {
                    ScanScope::Processes
                };
                let Some(mut owned) = scanner.take() else {
                    return Err(Error::ScanThread("scanner lost".into()));
                };
                let pods = Arc::clone(&pods);
                let started = Instant::now();
                let joined = tokio::task::spawn_blocking(move || {
                    let result = owned.scan(scope, pods.as_ref());
                    (owned, result)
                });
                let mut reload_pending = false;
                let (owned, result) =
                    match wait_blocking(joined, &mut control, &mut reload_pending).await? {
                        Waited::Done(done) => done,
                        Waited::Shutdown => return Ok(()),
                    };
                scanner = Some(owned);
                let elapsed = started.elapsed();
                match result {
                    Ok(report) => {
                        let kinds: &[ScanKind] = match scope {
                            ScanScope::Processes => &[ScanKind::Processes],
                            ScanScope::ProcessesAndFilesystems => {
                                &[ScanKind::Processes, ScanKind::Filesystems]
                            }
                        };
                        for kind in kinds {
                            observer.scan_finished(*kind, elapsed, true);
                            totals.last_scans.insert(
                                *kind,
                                ScanRun {
                                    finished_at: Timestamp::now(),
                                    duration_ms: elapsed.as_millis() as u64,
                                },
                            );
                        }
                        refresh_exec(&mut totals.exec, feed_stats.as_deref(), &exec_feed);
                        let (next, appeared, resolved) = publish(&mut totals, report);
                        observer.state_changed(&next);
                        let mut open = [0usize; 4];
                        for t in &next.findings {
                            open[t.finding.severity as usize] += 1;
                        }
                        // One line per scan; only new high/critical findings get their own.
                        tracing::info!(
                            scope = scope_name(scope),
                            duration_ms = elapsed.as_millis() as u64,
                            processes = next.report.processes.len(),
                            containers = next.report.containers.len(),
                            findings = next.findings.len(),
                            critical = open[Severity::Critical as usize],
                            high = open[Severity::High as usize],
                            medium = open[Severity::Medium as usize],
                            low = open[Severity::Low as usize],
                            new = appeared,
                            resolved,
                            warnings = next.report.warnings.len(),
                            "scan complete"
                        );
                        latest = Some(Arc::clone(&next));
                        state.send_replace(Some(next));
                        // The scan read every process: nothing waits to be merged.
                        merge_at = None;
                    }
                    Err(err) => {
                        observer.scan_finished(ScanKind::Processes, elapsed, false);
                        *totals.errors_total.entry("scan".into()).or_insert(0) += 1;
                        tracing::error!(error = %err, "scan failed");
                    }
                }
                let done = Instant::now();
                if scope == ScanScope::ProcessesAndFilesystems {
                    next_fs = done + jittered(schedule.fs_interval, schedule.jitter);
                }
                if first {
                    first = false;
                    next_fs = done;
                }
                next_process = done + jittered(schedule.interval, schedule.jitter);
                if reload_pending {
                    if let Some(s) = scanner.as_mut() {
                        reload_policy(s, policy_path.as_ref(), &mut totals, observer.as_ref())
                            .await;
                        next_process = Instant::now();
                    }
                }
                continue;
            }

            let wake = next_process.min(next_fs);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                event = next_exec(&mut exec_feed) => {
                    let Some(first) = event else {
                        tracing::warn!("exec events stopped; processes are now seen by the scans on the interval only");
                        exec_feed = None;
                        totals.exec.source = ExecEventSource::Polling;
                        continue;
                    };
                    let Some(feed) = exec_feed.as_mut() else { continue };
                    let (pids, lost) = gather(first, &mut feed.receiver).await;
                    let lost_now = feed.stats.lost();
                    if lost || lost_now > lost_seen {
                        lost_seen = lost_now;
                        let soon = Instant::now() + RECONCILE_AFTER_LOSS;
                        if soon < next_process {
                            tracing::warn!(lost = lost_now, "exec events were lost; a full scan follows in {RECONCILE_AFTER_LOSS:?}");
                            next_process = soon;
                        }
                    }
                    // Before the first scan there is nothing to add to; that scan is due.
                    if latest.is_none() || pids.is_empty() {
                        continue;
                    }
                    // Read at once (a process may live milliseconds); merge and publish at
                    // most every EXEC_PUBLISH_GAP, each merge covering every read since.
                    let Some(owned) = scanner.take() else {
                        return Err(Error::ScanThread("scanner lost".into()));
                    };
                    let joined = tokio::task::spawn_blocking(move || {
                        let mut owned = owned;
                        let result = owned.read_execs(&pids);
                        (owned, result)
                    });
                    let mut reload_pending = false;
                    let (owned, result) =
                        match wait_blocking(joined, &mut control, &mut reload_pending).await? {
                            Waited::Done(done) => done,
                            Waited::Shutdown => return Ok(()),
                        };
                    match result {
                        Ok(pass) => totals.exec.unread += pass.vanished as u64,
                        Err(err) => {
                            *totals.errors_total.entry("exec_pass".into()).or_insert(0) += 1;
                            tracing::error!(error = %err, "reading exec'd processes failed");
                        }
                    }
                    if owned.has_pending_execs() && merge_at.is_none() {
                        merge_at = Some(Instant::now().max(last_merge + EXEC_PUBLISH_GAP));
                    }
                    scanner = Some(owned);
                    if reload_pending {
                        if let Some(s) = scanner.as_mut() {
                            reload_policy(s, policy_path.as_ref(), &mut totals, observer.as_ref()).await;
                            next_process = Instant::now();
                        }
                    }
                }
                _ = tokio::time::sleep_until(merge_at.unwrap_or(wake).into()), if merge_at.is_some() => {
                    merge_at = None;
                    let Some(base) = latest.clone() else { continue };
                    let Some(owned) = scanner.take() else {
                        return Err(Error::ScanThread("scanner lost".into()));
                    };
                    let pods = Arc::clone(&pods);
                    let started = Instant::now();
                    let joined = tokio::task::spawn_blocking(move || {
                        let mut owned = owned;
                        // Reads that raise nothing new wait (bounded) for a later merge or
                        // the next scan: most execs on a node are of that kind.
                        let open: BTreeSet<&str> =
                            base.findings.iter().map(|t| t.finding.id.as_str()).collect();
                        let report = owned
                            .pending_execs_matter(&base.report, |id| open.contains(id))
                            .then(|| owned.merge_execs(&base.report, pods.as_ref()));
                        (owned, report)
                    });
                    let mut reload_pending = false;
                    let (owned, report) =
                        match wait_blocking(joined, &mut control, &mut reload_pending).await? {
                            Waited::Done(done) => done,
                            Waited::Shutdown => return Ok(()),
                        };
                    scanner = Some(owned);
                    let Some(report) = report else {
                        if reload_pending {
                            if let Some(s) = scanner.as_mut() {
                                reload_policy(s, policy_path.as_ref(), &mut totals, observer.as_ref()).await;
                                next_process = Instant::now();
                            }
                        }
                        continue;
                    };
                    last_merge = Instant::now();
                    totals.exec.passes += 1;
                    refresh_exec(&mut totals.exec, feed_stats.as_deref(), &exec_feed);
                    let (next, appeared, resolved) = publish(&mut totals, report);
                    observer.state_changed(&next);
                    tracing::debug!(
                        duration_ms = started.elapsed().as_millis() as u64,
                        new = appeared,
                        resolved,
                        "exec pass published"
                    );
                    latest = Some(Arc::clone(&next));
                    state.send_replace(Some(next));
                    if reload_pending {
                        if let Some(s) = scanner.as_mut() {
                            reload_policy(s, policy_path.as_ref(), &mut totals, observer.as_ref()).await;
                            next_process = Instant::now();
                        }
                    }
                }
                msg = control.recv() => match msg {
                    Some(Control::ReloadPolicy) => {
                        if let Some(s) = scanner.as_mut() {
                            reload_policy(s, policy_path.as_ref(), &mut totals, observer.as_ref()).await;
                            // Re-evaluate soon so the new policy shows.
                            next_process = Instant::now();
                        }
                    }
                    Some(Control::Shutdown) | None => {
                        tracing::info!("shutting down");
                        return Ok(());
                    }
                },
            }
        }
    }
}

async fn reload_policy(
    scanner: &mut Scanner,
    path: Option<&PathBuf>,
    totals: &mut Totals,
    observer: &dyn ScanObserver,
) {
    let Some(path) = path.cloned() else {
        tracing::warn!("reload requested but no policy file is configured; keeping defaults");
        return;
    };
    let loaded = tokio::task::spawn_blocking(move || Policy::load(&path)).await;
    match loaded {
        Ok(Ok(policy)) => {
            let weakened = policy.weakened();
            for (setting, why) in &weakened {
                tracing::warn!(setting, "policy weakens a check: {why}");
            }
            observer.policy_weakened(&weakened.iter().map(|(s, _)| *s).collect::<Vec<_>>());
            scanner.set_policy(Arc::new(policy));
            totals.policy_loaded_at = Timestamp::now();
            observer.policy_reload(true);
            tracing::info!("policy reloaded");
        }
        Ok(Err(err)) => {
            totals.policy_reload_failures += 1;
            observer.policy_reload(false);
            tracing::error!(error = %err, "policy reload refused; the previous policy stays in force");
        }
        Err(err) => {
            totals.policy_reload_failures += 1;
            observer.policy_reload(false);
            tracing::error!(error = %err, "policy reload failed");
        }
    }
}

fn scope_name(scope: ScanScope) -> &'static str {
    match scope {
        ScanScope::Processes => "processes",
        ScanScope::ProcessesAndFilesystems => "processes_and_filesystems",
    }
}

/// The new state, and how many findings appeared and resolved. Only new high and critical
/// findings are logged one by one (the scan's summary line counts the rest): a first scan of
/// a busy node has hundreds of findings, and a log line each buries the ones that matter.
fn publish(totals: &mut Totals, report: Report) -> (Arc<NodeState>, usize, usize) {
    let changes = totals.ledger.apply(&report.findings, report.scanned_at);
    for t in &changes.appeared {
        *totals
            .findings_detected
            .entry((t.finding.kind, t.finding.severity))
            .or_insert(0) += 1;
        if t.finding.severity < Severity::High {
            continue;
        }
        tracing::warn!(
            id = %t.finding.id,
            kind = %t.finding.kind,
            severity = %t.finding.severity,
            container = t.finding.container_id.as_deref().unwrap_or("host"),
            detail = %t.finding.message,
            "new finding"
        );
    }
    for t in changes
        .resolved
        .iter()
        .filter(|t| t.finding.severity >= Severity::High)
    {
        tracing::info!(id = %t.finding.id, kind = %t.finding.kind, "finding resolved");
    }
    let (appeared, resolved) = (changes.appeared.len(), changes.resolved.len());
    for (kind, n) in &report.stats.errors {
        *totals.errors_total.entry(kind.clone()).or_insert(0) += n;
    }
    let state = Arc::new(NodeState {
        report: Arc::new(report),
        findings: totals.ledger.open().cloned().collect(),
        last_scans: totals.last_scans.clone(),
        findings_detected: totals.findings_detected.clone(),
        errors_total: totals.errors_total.clone(),
        policy_reload_failures: totals.policy_reload_failures,
        policy_loaded_at: totals.policy_loaded_at,
        exec_events: totals.exec,
    });
    (state, appeared, resolved)
}

/// Copies the feed's counters into the state's; a feed whose reader stopped is polling.
fn refresh_exec(exec: &mut ExecEventStats, stats: Option<&ExecFeedStats>, feed: &Option<ExecFeed>) {
    if let Some(stats) = stats {
        exec.events = stats.events();
        exec.lost = stats.lost();
        if stats.stopped() || feed.is_none() {
            exec.source = ExecEventSource::Polling;
        }
    }
}

/// `base` ± `fraction` at random, never below a tenth of `base`.
pub fn jittered(base: Duration, fraction: f64) -> Duration {
    let fraction = fraction.clamp(0.0, 0.9);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // A cheap spread in [-1, 1): enough to de-synchronise agents, not cryptography.
    let unit = (splitmix(u64::from(nanos) ^ u64::from(std::process::id())) % 2_000_000) as f64
        / 1_000_000.0
        - 1.0;
    base.mul_f64(1.0 + fraction * unit)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(30), 0.1);
            assert!(
                d >= Duration::from_secs(27) && d <= Duration::from_secs(33),
                "{d:?}"
            );
        }
        assert_eq!(
            jittered(Duration::from_secs(5), 0.0),
            Duration::from_secs(5)
        );
    }
}
