//! What the daemon knows between scans: the latest report and the findings it has tracked
//! since they appeared. Sinks (metrics, HTTP API, Events) read a [`NodeState`].

use crate::finding::Finding;
use crate::report::{Report, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A finding with the times it was first and last seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackedFinding {
    #[serde(flatten)]
    pub finding: Finding,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// What changed between two scans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingChanges {
    /// Findings that were not open before this scan.
    pub appeared: Vec<TrackedFinding>,
    /// Findings that were open and are no longer seen (the container is gone, the file
    /// removed, the policy changed).
    pub resolved: Vec<TrackedFinding>,
}

/// Open findings by id, with first/last seen times. A finding stays open while scans keep
/// reporting it and is dropped on the first scan that does not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingLedger {
    open: BTreeMap<String, TrackedFinding>,
}

impl FindingLedger {
    /// Records the findings of a scan made at `now`.
    pub fn apply(&mut self, findings: &[Finding], now: Timestamp) -> FindingChanges {
        let mut changes = FindingChanges::default();
        let mut next = BTreeMap::new();
        for finding in findings {
            let tracked = match self.open.remove(&finding.id) {
                Some(previous) => TrackedFinding {
                    finding: finding.clone(),
                    first_seen: previous.first_seen,
                    last_seen: now,
                },
                None => {
                    let t = TrackedFinding {
                        finding: finding.clone(),
                        first_seen: now,
                        last_seen: now,
                    };
                    changes.appeared.push(t.clone());
                    t
                }
            };
            next.insert(finding.id.clone(), tracked);
        }
        changes.resolved = std::mem::take(&mut self.open).into_values().collect();
        self.open = next;
        changes
    }

    pub fn open(&self) -> impl Iterator<Item = &TrackedFinding> {
        self.open.values()
    }

    /// Whether the finding with this id is open (without a pass over the open ones).
    pub fn is_open(&self, id: &str) -> bool {
        self.open.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// Which kind of scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanKind {
    /// Processes, executables, capabilities, cgroup limits.
    Processes,
    /// Walks of container filesystems.
    Filesystems,
}

impl ScanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanKind::Processes => "processes",
            ScanKind::Filesystems => "filesystems",
        }
    }
}

/// When a kind of scan last completed and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScanRun {
    pub finished_at: Timestamp,
    pub duration_ms: u64,
}

/// The daemon's view of the node after its latest scan, shared immutably with every sink.
///
/// The daemon publishes one after every scan (a failed scan republishes the previous report
/// with updated [`Totals`]) and after every policy reload attempt, so a sink that renders
/// the latest state (metrics at scrape time) sees every count.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    pub report: Arc<Report>,
    /// Open findings, ordered by id, with first/last seen.
    pub findings: Vec<TrackedFinding>,
    /// When each kind of scan last completed (successfully) and how long it took.
    pub last_scans: BTreeMap<ScanKind, ScanRun>,
    pub policy_loaded_at: Timestamp,
    /// The settings of the policy in force that switch a whole check off
    /// (`Policy::weakened`), sorted.
    pub policy_weakened: Vec<&'static str>,
    /// Running totals since the agent started.
    pub totals: Totals,
    /// Where exec events come from and what they amounted to since start.
    pub exec_events: ExecEventStats,
}

/// Monotonic counts since the agent started, kept by the daemon (the only place they are
/// added up: sinks render them as they are).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Scans by kind: outcomes and the distribution of their durations.
    pub scans: BTreeMap<ScanKind, ScanTotals>,
    /// Policy reload attempts: `ok` reloaded, `failed` refused (the previous policy stayed).
    pub policy_reloads: Outcomes,
    /// Findings that appeared, by kind and severity (one that resolves and comes back counts
    /// again).
    pub findings_detected: BTreeMap<(crate::FindingKind, crate::Severity), u64>,
    /// Errors by kind (`scan` for a scan that failed whole, the report's `stats.errors`
    /// kinds for errors that did not stop a scan).
    pub errors: BTreeMap<String, u64>,
    /// Sums of the successful scans' `ScanStats` counters.
    pub bytes_hashed: u64,
    pub hash_cache_hits: u64,
    pub hash_cache_misses: u64,
    pub processes_vanished: u64,
}

/// How many attempts succeeded and failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub ok: u64,
    pub failed: u64,
}

impl Outcomes {
    pub fn record(&mut self, ok: bool) {
        let n = if ok { &mut self.ok } else { &mut self.failed };
        *n = n.saturating_add(1);
    }
}

/// One kind of scan since start: outcomes and durations (failed scans included).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanTotals {
    pub outcomes: Outcomes,
    pub durations: DurationHistogram,
}

/// Upper bounds of the scan duration buckets, in seconds: 1 ms to 2 minutes (the buckets of
/// `nodeguard_scan_duration_seconds`).
pub const SCAN_DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Durations counted into [`SCAN_DURATION_BUCKETS`] (and one bucket above the last bound),
/// with their sum: a histogram kept as plain numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DurationHistogram {
    /// Per bucket, not cumulative: `counts[i]` holds durations in
    /// `(SCAN_DURATION_BUCKETS[i-1], SCAN_DURATION_BUCKETS[i]]`; the last, those above the
    /// last bound.
    pub counts: [u64; SCAN_DURATION_BUCKETS.len() + 1],
    pub sum_seconds: f64,
    pub count: u64,
}

impl DurationHistogram {
    pub fn observe(&mut self, duration: std::time::Duration) {
        let secs = duration.as_secs_f64();
        let i = SCAN_DURATION_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(SCAN_DURATION_BUCKETS.len());
        self.counts[i] = self.counts[i].saturating_add(1);
        self.sum_seconds += secs;
        self.count = self.count.saturating_add(1);
    }
}

/// Where the daemon learns of execs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecEventSource {
    /// The kernel's process-events connector: each exec is read and evaluated at once.
    Netlink,
    /// No event source: processes are seen by the scans on the interval only.
    #[default]
    Polling,
}

impl ExecEventSource {
    pub const ALL: [ExecEventSource; 2] = [ExecEventSource::Netlink, ExecEventSource::Polling];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecEventSource::Netlink => "netlink",
            ExecEventSource::Polling => "polling",
        }
    }
}

/// Exec events since the agent started (monotonic counters, for `_total` series).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecEventStats {
    pub source: ExecEventSource,
    /// Exec events received from the kernel.
    pub events: u64,
    /// Exec events known to be lost (socket overrun, full channel); each loss brings a full
    /// scan forward.
    pub lost: u64,
    /// Exec'd processes that were gone before they could be read.
    pub unread: u64,
    /// States published from exec reads (each merges every read since the previous one).
    pub passes: u64,
    /// Exec'd processes taken hold of as their event arrived (their directory, executable
    /// and small files, read later even when they have exited).
    pub held: u64,
    /// Exec'd processes that could not be held, by reason (read by pid instead, if still
    /// there).
    pub unheld: UnheldExecs,
}

/// Exec'd processes that could not be held when their event arrived, by reason (counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnheldExecs {
    /// Gone (exited and reaped, or a zombie without an executable) before the hold.
    pub exited: u64,
    /// The agent may not open it.
    pub denied: u64,
    /// Too many processes held at once, or no descriptors left.
    pub budget: u64,
    /// The pid was another process's by then.
    pub reused: u64,
    /// Anything else.
    pub error: u64,
}

impl UnheldExecs {
    /// `(reason, count)` for every reason, in a fixed order (label values of metrics).
    pub fn by_reason(&self) -> [(&'static str, u64); 5] {
        [
            ("exited", self.exited),
            ("denied", self.denied),
            ("budget", self.budget),
            ("reused", self.reused),
            ("error", self.error),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FindingKind, Severity};
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> Timestamp {
        Timestamp(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn finding(subject: &str) -> Finding {
        Finding::new(
            FindingKind::RunsAsRoot,
            Severity::Medium,
            Some("c1"),
            subject,
            "m",
        )
    }

    #[test]
    fn tracks_first_and_last_seen_and_resolution() {
        let mut ledger = FindingLedger::default();
        let changes = ledger.apply(&[finding("a"), finding("b")], at(10));
        assert_eq!(changes.appeared.len(), 2);
        assert!(changes.resolved.is_empty());

        let changes = ledger.apply(&[finding("a")], at(20));
        assert!(changes.appeared.is_empty());
        assert_eq!(changes.resolved.len(), 1);
        assert_eq!(changes.resolved[0].finding.subject, "b");
        let a = ledger.open().next().unwrap();
        assert_eq!((a.first_seen, a.last_seen), (at(10), at(20)));

        let changes = ledger.apply(&[finding("a"), finding("b")], at(30));
        assert_eq!(changes.appeared.len(), 1, "b came back: it is new again");
        assert_eq!(changes.appeared[0].first_seen, at(30));
        assert_eq!(ledger.len(), 2);
    }

    #[test]
    fn durations_fall_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let mut h = DurationHistogram::default();
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_micros(1_001));
        h.observe(Duration::from_secs(121));
        assert_eq!(h.counts[0], 1, "1 ms is within the 1 ms bucket");
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[SCAN_DURATION_BUCKETS.len()], 1, "above 2 minutes");
        assert_eq!(h.count, 3);
        assert!((h.sum_seconds - 121.002_001).abs() < 1e-9);
    }

    #[test]
    fn tracked_finding_serializes_flat() {
        let t = TrackedFinding {
            finding: finding("a"),
            first_seen: at(0),
            last_seen: at(1),
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["kind"], "runs_as_root");
        assert_eq!(v["first_seen"], "1970-01-01T00:00:00.000Z");
    }
}

/// Kubernetes metadata for containers, supplied by whoever watches the API server; the scan
/// asks it for every container it finds.
pub trait PodLookup: Send + Sync {
    /// The pod and container a container id belongs to, if known.
    fn pod_for(&self, pod_uid: Option<&str>, container_id: &str) -> Option<crate::PodRef>;

    /// Whether the container is its pod's sandbox (pause), as the pod's status tells:
    /// `Some(false)` when the id is one of `status.containerStatuses` (or the init or
    /// ephemeral lists), `Some(true)` when the pod is known, every container in its status
    /// has an id, and this id is none of them; `None` when the status cannot tell.
    fn is_sandbox(&self, _pod_uid: Option<&str>, _container_id: &str) -> Option<bool> {
        None
    }

    /// The runtime the pod's status names by its `containerID` scheme (`containerd://`,
    /// `cri-o://`, `docker://`), for this container or, for its sandbox, the pod's others.
    fn runtime_of(&self, _pod_uid: Option<&str>, _container_id: &str) -> Option<crate::Runtime> {
        None
    }
}

/// No cluster: no pod metadata.
pub struct NoPods;

impl PodLookup for NoPods {
    fn pod_for(&self, _: Option<&str>, _: &str) -> Option<crate::PodRef> {
        None
    }
}

/// Counters and state of the PolicyReport publisher since start, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReportStats {
    /// Report writes (create, update, delete) the API server accepted.
    pub written: u64,
    /// Report writes and lists the API server refused or that failed in transit.
    pub failed: u64,
    /// Reports this node's agent keeps in the cluster now.
    pub reports: u64,
    /// Open findings left out of the reports now because a report reached its cap.
    pub results_omitted: u64,
    /// Whether the wgpolicyk8s.io CRDs are served; `None` until the first list answered.
    pub crds_installed: Option<bool>,
}

/// Counters of the Kubernetes Events publisher since start, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventStats {
    /// Events the API server accepted.
    pub sent: u64,
    /// Events the API server refused or that failed in transit.
    pub failed: u64,
    /// Events not sent because a per-object or node-wide rate limit was exhausted.
    pub rate_limited: u64,
    /// Events dropped because the bounded queue was full.
    pub queue_overflow: u64,
    /// Summary events sent in place of findings over an object's budget.
    pub summaries: u64,
    /// Events waiting in the queue now.
    pub queued: u64,
}
