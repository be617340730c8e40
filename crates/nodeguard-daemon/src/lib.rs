//! The watch loop of `nodeguard run`.
//!
//! Scans processes every `interval` and container filesystems every `fs_interval` (each
//! with jitter, so a fleet of agents does not scan in lockstep). A process scan also walks
//! the writable layers of containers whose image layers the last filesystem scan cached, so
//! a file planted in a running container shows within `interval`; the slow walk of image
//! layers waits for `fs_interval`. It keeps the [`FindingLedger`]
//! (first/last seen, resolution) and every running total ([`Totals`]: scans, policy
//! reloads, errors, findings detected), and publishes a new [`NodeState`] after each scan,
//! failed ones included, and each policy reload attempt on a `tokio::sync::watch` channel
//! that keeps only the newest. Sinks — metrics, the HTTP API, Kubernetes Events — read that
//! channel at their own pace: a slow sink never delays a scan, and a scan never holds
//! anything a sink waits for. The daemon knows no sink.
//!
//! Scans run on a blocking thread; the caches inside the [`Scanner`] live across scans.
//!
//! With an [`ExecFeed`] (the kernel's process-events connector), each exec is handled at
//! once: execs arriving within a window after the first form one batch (at most
//! [`EXEC_BATCH_MAX`] pids; the window is [`EXEC_COALESCE`], shorter under a storm and
//! without holds, `exec_batch`), the scanner reads just those processes at once
//! ([`Scanner::read_execs`]); when what was read raises something new, it is merged into the
//! latest report ([`Scanner::merge_execs`]) at most every [`EXEC_PUBLISH_GAP`] and published
//! like a scan's. Lost events (the kernel's buffer or the feed's channel overflowed) bring the
//! next full scan forward to [`RECONCILE_AFTER_LOSS`] from then. The feed only feeds this
//! loop; sinks still only read the state channel.

use nodeguard_model::{
    ExecEventSource, ExecEventStats, FindingLedger, NodeState, PodLookup, Report, ScanKind,
    ScanRun, Severity, Timestamp, Totals,
};
use nodeguard_policy::Policy;
pub use nodeguard_procevents::Stats as ExecFeedStats;
use nodeguard_scan::{Collector, ScanScope, Scanner};
pub use nodeguard_scan::{
    Grip, HeldProcess, HoldStats, Holder, KeptMountNamespaces, HOLD_BUDGET_DEFAULT,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};

mod exec_batch;
mod policy_source;
mod running;
mod timetable;
pub use exec_batch::{EXEC_BATCH_MAX, EXEC_COALESCE, EXEC_COALESCE_MIN, EXEC_HELD_PER_BATCH};
pub use policy_source::PolicySource;
use policy_source::{warn_weakened, weakened_settings, ReloadFailure};
use running::Running;
use timetable::Timetable;
pub use timetable::{EXEC_PUBLISH_GAP, RECONCILE_AFTER_LOSS};

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
    /// Where the policy the scanner was built with came from ([`PolicySource::load`]);
    /// read again on [`Control::ReloadPolicy`].
    pub policy: PolicySource,
    pub pods: Arc<dyn PodLookup>,
    /// Exec events, or `None` to scan on the schedule only (polling).
    pub exec_feed: Option<ExecFeed>,
}

/// An exec event as the loop takes it: the process held when the event arrived, if it could
/// be ([`nodeguard_scan::Holder`]).
pub type ExecEvent = nodeguard_procevents::ExecEvent<HeldProcess>;

/// Exec events for the loop: the receiving end of the event source's bounded channel and
/// its counters, and those of the holder that took hold of each process (`None`: events
/// carry bare pids, read when their batch is).
pub struct ExecFeed {
    pub receiver: mpsc::Receiver<ExecEvent>,
    pub stats: Arc<ExecFeedStats>,
    pub hold_stats: Option<Arc<HoldStats>>,
    /// The holder's slot for the collector's kept mount namespaces
    /// ([`Holder::kept_mount_namespaces_slot`]), filled when the daemon runs.
    pub kept_mount_namespaces: Option<Arc<std::sync::OnceLock<KeptMountNamespaces>>>,
}

/// While exec events are watched, every process is still read in full about this often (at
/// least every [`Collector::FULL_READ_EVERY`] scans, at most every 60): what only a full
/// read sees (a process moved to another cgroup, `setns`, a rewritten `argv`) shows within
/// it. Without events the full read stays every [`Collector::FULL_READ_EVERY`] scans.
pub const FULL_READ_PERIOD_WATCHED: Duration = Duration::from_secs(180);

/// Returns to the kernel the memory a scan freed. glibc keeps what a thread freed in that
/// thread's arena, mapped: the scan's reader threads and the blocking pool left the agent's
/// resident memory well above what it uses. musl (the image's build) returns freed memory
/// by itself.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer; it only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Scans per full read of each process while exec events are watched, at `interval`.
pub fn full_read_passes_watched(interval: Duration) -> u32 {
    let passes = FULL_READ_PERIOD_WATCHED.as_secs_f64() / interval.as_secs_f64().max(0.001);
    // Clamped, then converted: within 6..=60 the cast is exact.
    passes
        .ceil()
        .clamp(f64::from(Collector::FULL_READ_EVERY), 60.0) as u32
}

/// What outlives single scans: the ledger, the running totals, and the last state
/// published (a failed scan or a policy reload republishes its report).
struct Book {
    ledger: FindingLedger,
    last_scans: BTreeMap<ScanKind, ScanRun>,
    totals: Totals,
    policy_loaded_at: Timestamp,
    policy_weakened: Vec<&'static str>,
    last: Option<Arc<NodeState>>,
    exec: ExecEventStats,
}

impl Book {
    fn new(policy: &Policy) -> Book {
        Book {
            exec: ExecEventStats::default(),
            ledger: FindingLedger::default(),
            last_scans: BTreeMap::new(),
            totals: Totals::default(),
            policy_loaded_at: Timestamp::now(),
            policy_weakened: weakened_settings(policy),
            last: None,
        }
    }

    /// The last report again with the current totals, if a scan has succeeded yet. Before
    /// the first report there is no state to publish: the counts wait for it (and `/readyz`
    /// says not ready meanwhile).
    fn republish(&mut self, state: &StateSender) {
        let Some(last) = &self.last else {
            return;
        };
        let next = Arc::new(NodeState {
            report: Arc::clone(&last.report),
            findings: last.findings.clone(),
            last_scans: self.last_scans.clone(),
            policy_loaded_at: self.policy_loaded_at,
            policy_weakened: self.policy_weakened.clone(),
            totals: self.totals.clone(),
            exec_events: self.exec,
        });
        self.last = Some(Arc::clone(&next));
        state.send_replace(Some(next));
    }
}

/// CPU time (user and system) of this process so far, `None` when the kernel does not say.
fn process_cpu() -> Option<Duration> {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the struct it is given.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let micros = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
    };
    Some(Duration::from_micros(
        micros(usage.ru_utime) + micros(usage.ru_stime),
    ))
}

/// The next exec event, or never when there is no feed.
/// What wakes the exec side of the loop.
enum ExecWake {
    /// An exec event (or a loss) from the feed.
    Event(ExecEvent),
    /// The feed's reader stopped.
    Closed,
    /// Processes held back in the runtime's set-up are due ([`Scanner::held_back_until`]).
    Reread,
}

async fn next_exec(feed: &mut Option<ExecFeed>, reread_at: Option<Instant>) -> ExecWake {
    let event = async {
        match feed {
            Some(feed) => feed.receiver.recv().await,
            None => std::future::pending().await,
        }
    };
    let reread = async {
        match reread_at {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        event = event => event.map_or(ExecWake::Closed, ExecWake::Event),
        _ = reread => ExecWake::Reread,
    }
}

/// Copies the feed's counters into the state's; a feed whose reader stopped is polling.
fn refresh_exec(
    exec: &mut ExecEventStats,
    stats: Option<&ExecFeedStats>,
    hold: Option<&HoldStats>,
    feed: &Option<ExecFeed>,
) {
    if let Some(hold) = hold {
        exec.held = hold.held();
        exec.unheld = hold.unheld();
    }
    if let Some(stats) = stats {
        exec.events = stats.events();
        exec.lost = stats.lost();
        if stats.stopped() || feed.is_none() {
            exec.source = ExecEventSource::Polling;
        }
    }
}

impl Daemon {
    /// Runs until [`Control::Shutdown`] arrives or the control channel closes.
    pub async fn run(
        self,
        state: StateSender,
        control: mpsc::Receiver<Control>,
    ) -> Result<(), Error> {
        let Daemon {
            mut scanner,
            schedule,
            policy,
            pods,
            exec_feed,
        } = self;
        warn_weakened(scanner.policy());
        let mut book = Book::new(scanner.policy());
        book.exec.source = if exec_feed.is_some() {
            ExecEventSource::Netlink
        } else {
            ExecEventSource::Polling
        };
        // Every exec reaches the scanner (read, or noted before the first scan) and every
        // loss is passed on, so its scans may skip re-checking what only an exec changes.
        let collector = scanner.collector();
        collector.watch_execs(exec_feed.is_some());
        if let Some(slot) = exec_feed
            .as_ref()
            .and_then(|f| f.kept_mount_namespaces.as_ref())
        {
            // The holder copies no mount table of a namespace this collector keeps.
            let _ = slot.set(collector.kept_mount_namespaces());
        }
        collector.set_full_read_every_watched(full_read_passes_watched(schedule.interval));
        Running {
            scanner: Some(scanner),
            book,
            timetable: Timetable::new(Instant::now()),
            schedule,
            policy,
            pods,
            feed_stats: exec_feed.as_ref().map(|f| Arc::clone(&f.stats)),
            hold_stats: exec_feed.as_ref().and_then(|f| f.hold_stats.clone()),
            gatherer: exec_batch::Gatherer::new(
                exec_feed.as_ref().is_some_and(|f| f.hold_stats.is_some()),
            ),
            exec_feed,
            lost_seen: 0,
            state,
            control,
            reload_pending: false,
        }
        .run()
        .await
    }
}

impl Book {
    fn scan_finished(&mut self, kind: ScanKind, elapsed: Duration, ok: bool) {
        let scans = self.totals.scans.entry(kind).or_default();
        scans.outcomes.record(ok);
        scans.durations.observe(elapsed);
    }
}

fn add(totals: &mut BTreeMap<String, u64>, kind: &str, n: u64) {
    let total = totals.entry(kind.to_string()).or_insert(0);
    *total = total.saturating_add(n);
}

async fn reload_policy(scanner: &mut Scanner, source: &PolicySource, book: &mut Book) {
    match source.reload().await {
        Err(ReloadFailure::NoFile) => {
            tracing::warn!("reload requested but no policy file is configured; keeping defaults");
        }
        Ok(policy) => {
            book.policy_weakened = weakened_settings(&policy);
            scanner.set_policy(Arc::new(policy));
            book.policy_loaded_at = Timestamp::now();
            book.totals.policy_reloads.record(true);
            tracing::info!("policy reloaded");
        }
        Err(ReloadFailure::Refused(err)) => {
            book.totals.policy_reloads.record(false);
            tracing::error!(error = %err, "policy reload refused; the previous policy stays in force");
        }
        Err(ReloadFailure::Failed(err)) => {
            book.totals.policy_reloads.record(false);
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
/// Longest finding message in a "new finding" log line; the sinks carry it whole.
const MAX_LOG_DETAIL_BYTES: usize = 1024;

fn publish(book: &mut Book, report: Report) -> (Arc<NodeState>, usize, usize) {
    let changes = book.ledger.apply(&report.findings, report.scanned_at);
    let totals = &mut book.totals;
    for t in &changes.appeared {
        let n = totals
            .findings_detected
            .entry((t.finding.kind, t.finding.severity))
            .or_insert(0);
        *n = n.saturating_add(1);
        if t.finding.severity < Severity::High {
            continue;
        }
        tracing::warn!(
            id = %t.finding.id,
            kind = %t.finding.kind,
            severity = %t.finding.severity,
            container = %nodeguard_model::clean(t.finding.container_id.as_deref().unwrap_or("host"), 64),
            detail = %nodeguard_model::clean(&t.finding.message, MAX_LOG_DETAIL_BYTES),
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
    let stats = &report.stats;
    for (kind, n) in &stats.errors {
        add(&mut totals.errors, kind, *n);
    }
    totals.bytes_hashed = totals.bytes_hashed.saturating_add(stats.bytes_hashed);
    totals.hash_cache_hits = totals.hash_cache_hits.saturating_add(stats.hash_cache_hits);
    totals.hash_cache_misses = totals
        .hash_cache_misses
        .saturating_add(stats.hash_cache_misses);
    totals.processes_vanished = totals
        .processes_vanished
        .saturating_add(stats.processes_vanished);
    let state = Arc::new(NodeState {
        report: Arc::new(report),
        findings: book.ledger.open().cloned().collect(),
        last_scans: book.last_scans.clone(),
        policy_loaded_at: book.policy_loaded_at,
        policy_weakened: book.policy_weakened.clone(),
        totals: book.totals.clone(),
        exec_events: book.exec,
    });
    book.last = Some(Arc::clone(&state));
    (state, appeared, resolved)
}

/// `base` ± `fraction` at random, never below a tenth of `base`.
pub fn jittered(base: Duration, fraction: f64) -> Duration {
    let fraction = fraction.clamp(0.0, 0.9);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // A cheap spread in [-1, 1): enough to de-synchronise agents, not cryptography.
    let seed = u64::from(nanos) ^ u64::from(std::process::id());
    let unit =
        (nodeguard_model::SplitMix64::new(seed).next_u64() % 2_000_000) as f64 / 1_000_000.0 - 1.0;
    base.mul_f64(1.0 + fraction * unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeguard_model::{Finding, FindingKind, ScanStats, SCHEMA_VERSION};

    /// With exec events, a process is read in full about every three minutes: more scans
    /// apart at short intervals, never fewer than without events, never over 60 apart.
    #[test]
    fn full_reads_while_watched_come_about_every_three_minutes() {
        let at = |secs: f64| full_read_passes_watched(Duration::from_secs_f64(secs));
        assert_eq!(at(10.0), 18);
        assert_eq!(at(7.0), 26);
        assert_eq!(at(30.0), Collector::FULL_READ_EVERY);
        assert_eq!(at(3600.0), Collector::FULL_READ_EVERY);
        assert_eq!(at(1.0), 60);
        assert_eq!(at(0.0), 60);
    }

    fn report(at_secs: u64, findings: Vec<Finding>, bytes_hashed: u64) -> Report {
        let mut errors = BTreeMap::new();
        errors.insert("hash".to_string(), 1);
        Report {
            schema_version: SCHEMA_VERSION,
            node: "n".into(),
            scanned_at: Timestamp(UNIX_EPOCH + Duration::from_secs(at_secs)),
            duration_ms: 1,
            containers: vec![],
            processes: vec![],
            files: vec![],
            findings,
            stats: ScanStats {
                bytes_hashed,
                hash_cache_hits: 2,
                processes_vanished: 1,
                errors,
                ..ScanStats::default()
            },
            warnings: vec![],
        }
    }

    fn root(subject: &str) -> Finding {
        Finding::new(
            FindingKind::RunsAsRoot,
            Severity::Medium,
            Some("c"),
            subject,
            "m",
        )
    }

    #[test]
    fn totals_add_each_scan_once_and_a_failed_scan_or_reload_republishes_them() {
        let (tx, rx) = watch::channel(None);
        let mut book = Book::new(&Policy::default());
        book.republish(&tx);
        assert!(rx.borrow().is_none(), "no state before the first report");

        let (first, appeared, _) = publish(&mut book, report(10, vec![root("a")], 100));
        assert_eq!(appeared, 1);
        let (second, _, _) = publish(&mut book, report(20, vec![root("a"), root("b")], 5));
        let t = &second.totals;
        assert_eq!(
            (t.bytes_hashed, t.hash_cache_hits, t.processes_vanished),
            (105, 4, 2)
        );
        assert_eq!(t.errors.get("hash"), Some(&2));
        assert_eq!(
            t.findings_detected
                .get(&(FindingKind::RunsAsRoot, Severity::Medium)),
            Some(&2),
            "a counted when it appeared, b too; a again is not new"
        );
        assert_eq!(
            first.totals.bytes_hashed, 100,
            "a published state never changes"
        );

        book.scan_finished(ScanKind::Processes, Duration::from_millis(3), false);
        add(&mut book.totals.errors, "scan", 1);
        book.totals.policy_reloads.record(false);
        book.republish(&tx);
        let after = rx.borrow().clone().expect("republished");
        assert!(Arc::ptr_eq(&after.report, &second.report), "same report");
        assert_eq!(after.findings, second.findings);
        let scans = &after.totals.scans[&ScanKind::Processes];
        assert_eq!((scans.outcomes.ok, scans.outcomes.failed), (0, 1));
        assert_eq!(scans.durations.count, 1);
        assert_eq!(after.totals.errors.get("scan"), Some(&1));
        assert_eq!(after.totals.policy_reloads.failed, 1);
        assert_eq!(after.totals.bytes_hashed, 105, "not added again");
    }

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
