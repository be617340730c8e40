//! The series derived from the daemon's state, computed once per state change and written
//! at scrape time by a custom collector, so a gone container's series simply are not written.

use nodeguard_model::{
    short_id, Container, EventStats, Finding, FindingKind, NodeState, PolicyReportStats, Report,
    ScanKind, Severity,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// Where the Events publisher's counters come from, read at scrape time.
pub type EventStatsSource = Arc<dyn Fn() -> EventStats + Send + Sync>;
/// Where the PolicyReport publisher's counters come from at scrape time.
pub type PolicyReportStatsSource = Arc<dyn Fn() -> PolicyReportStats + Send + Sync>;

/// Number of open findings sharing one label set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct OpenFindings {
    pub kind: &'static str,
    pub severity: &'static str,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub count: u64,
}

/// Gauges that mirror the latest state; absent until the daemon hands over its first state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StateGauges {
    pub findings: Vec<OpenFindings>,
    pub last_scans: Vec<(ScanKind, f64)>,
    pub container_processes: u64,
    pub host_processes: u64,
    pub containers: u64,
    pub errors: Vec<(String, u64)>,
    pub policy_loaded_at: f64,
}

/// Sums of per-scan report counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReportTotals {
    pub hashed_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub processes_vanished: u64,
}

/// Everything the collector writes, immutable once built.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    pub gauges: Option<StateGauges>,
    /// `NodeState::findings_detected`, one value per `(kind, severity)` in the order of
    /// [`FindingKind::ALL`] x [`Severity::ALL`]; combinations never seen are 0.
    pub detected: Vec<u64>,
    pub totals: ReportTotals,
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot {
            gauges: None,
            detected: vec![0; FindingKind::ALL.len() * Severity::ALL.len()],
            totals: ReportTotals::default(),
        }
    }
}

/// What only the writer (the daemon's state updates) touches.
#[derive(Debug, Default)]
struct Writer {
    totals: ReportTotals,
    last_report: Option<Arc<Report>>,
}

/// State shared between [`crate::Metrics`] handles and the registered collector.
#[derive(Default)]
pub(crate) struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    writer: Mutex<Writer>,
    events: RwLock<Option<EventStatsSource>>,
    policy_reports: RwLock<Option<PolicyReportStatsSource>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("snapshot", &self.snapshot)
            .field("events_source_set", &self.events_source().is_some())
            .finish()
    }
}

impl Shared {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn set_events_source(&self, source: EventStatsSource) {
        *self.events.write().unwrap_or_else(PoisonError::into_inner) = Some(source);
    }

    pub fn set_policy_reports_source(&self, source: PolicyReportStatsSource) {
        *self
            .policy_reports
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(source);
    }

    fn policy_reports_source(&self) -> Option<PolicyReportStatsSource> {
        self.policy_reports
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn events_source(&self) -> Option<EventStatsSource> {
        self.events
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Builds the series of `state`. The per-scan counters of a report are added once: a
    /// state carrying the same report as the previous one (same `Arc`, or the same scan
    /// time) adds nothing.
    pub fn update(&self, state: &NodeState) {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let same_report = writer.last_report.as_ref().is_some_and(|last| {
            Arc::ptr_eq(last, &state.report) || last.scanned_at == state.report.scanned_at
        });
        if !same_report {
            let stats = &state.report.stats;
            let t = &mut writer.totals;
            t.hashed_bytes = t.hashed_bytes.saturating_add(stats.bytes_hashed);
            t.cache_hits = t.cache_hits.saturating_add(stats.hash_cache_hits);
            t.cache_misses = t.cache_misses.saturating_add(stats.hash_cache_misses);
            t.processes_vanished = t
                .processes_vanished
                .saturating_add(stats.processes_vanished);
            writer.last_report = Some(Arc::clone(&state.report));
        }
        let snapshot = Arc::new(Snapshot {
            gauges: Some(state_gauges(state)),
            detected: detected(state),
            totals: writer.totals,
        });
        // Swapped while the writer lock is held, so two updates land in call order.
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = snapshot;
    }
}

fn detected(state: &NodeState) -> Vec<u64> {
    let mut out = Vec::with_capacity(FindingKind::ALL.len() * Severity::ALL.len());
    for kind in FindingKind::ALL {
        for severity in Severity::ALL {
            let n = state
                .findings_detected
                .get(&(*kind, severity))
                .copied()
                .unwrap_or(0);
            out.push(n);
        }
    }
    out
}

fn state_gauges(state: &NodeState) -> StateGauges {
    let report = &state.report;
    let containers: HashMap<&str, &Container> = report
        .containers
        .iter()
        .map(|c| (c.id.as_str(), c))
        .collect();
    let mut open: BTreeMap<(&'static str, &'static str, String, String, String), u64> =
        BTreeMap::new();
    for tracked in &state.findings {
        let f = &tracked.finding;
        let (namespace, pod, container) = finding_place(f, &containers);
        *open
            .entry((
                f.kind.as_str(),
                f.severity.as_str(),
                namespace,
                pod,
                container,
            ))
            .or_insert(0) += 1;
    }
    let findings = open
        .into_iter()
        .map(
            |((kind, severity, namespace, pod, container), count)| OpenFindings {
                kind,
                severity,
                namespace,
                pod,
                container,
                count,
            },
        )
        .collect();
    let (container_processes, host_processes) = report
        .processes
        .iter()
        .filter(|p| !p.kernel_thread)
        .fold((0, 0), |(c, h), p| match p.container_id {
            Some(_) => (c + 1, h),
            None => (c, h + 1),
        });
    StateGauges {
        findings,
        last_scans: state
            .last_scans
            .iter()
            .map(|(kind, run)| (*kind, run.finished_at.unix_seconds()))
            .collect(),
        container_processes,
        host_processes,
        containers: report.containers.len() as u64,
        errors: state
            .errors_total
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        policy_loaded_at: state.policy_loaded_at.unix_seconds(),
    }
}

/// `(namespace, pod, container)` labels of a finding: Kubernetes names from the finding, else
/// from the report's container; the container's name when known, else its short id; all
/// empty for a host finding.
fn finding_place(f: &Finding, containers: &HashMap<&str, &Container>) -> (String, String, String) {
    let Some(id) = f.container_id.as_deref() else {
        return Default::default();
    };
    let pod_ref = containers.get(id).and_then(|c| c.pod.as_ref());
    let namespace = f
        .namespace
        .clone()
        .or_else(|| pod_ref.map(|p| p.namespace.clone()))
        .unwrap_or_default();
    let pod = f
        .pod
        .clone()
        .or_else(|| pod_ref.map(|p| p.name.clone()))
        .unwrap_or_default();
    let container = f
        .container_name
        .clone()
        .or_else(|| pod_ref.and_then(|p| p.container_name.clone()))
        .unwrap_or_else(|| short_id(id).to_string());
    (namespace, pod, container)
}

/// Writes the state-derived series at scrape time.
#[derive(Debug)]
pub(crate) struct StateCollector {
    pub shared: Arc<Shared>,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let snapshot = self.shared.snapshot();
        if let Some(gauges) = &snapshot.gauges {
            encode_gauges(&mut encoder, gauges)?;
        }

        let mut m = encoder.encode_descriptor(
            "findings_detected",
            "Findings that appeared since the agent started, by kind and severity (a finding that resolves and comes back counts again).",
            None,
            MetricType::Counter,
        )?;
        let mut values = snapshot.detected.iter();
        for kind in FindingKind::ALL {
            for severity in Severity::ALL {
                let n = values.next().copied().unwrap_or(0);
                let labels = [("kind", kind.as_str()), ("severity", severity.as_str())];
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }

        let t = snapshot.totals;
        counter(
            &mut encoder,
            "hashed",
            "Bytes of executables and files read to compute digests since the agent started.",
            Some(&Unit::Bytes),
            t.hashed_bytes,
        )?;
        counter(
            &mut encoder,
            "hash_cache_hits",
            "Digests served from the file-identity cache since the agent started.",
            None,
            t.cache_hits,
        )?;
        counter(
            &mut encoder,
            "hash_cache_misses",
            "Digests that had to read the file since the agent started.",
            None,
            t.cache_misses,
        )?;
        counter(
            &mut encoder,
            "processes_vanished",
            "Processes that exited while being read (expected races, not errors) since the agent started.",
            None,
            t.processes_vanished,
        )?;

        if let Some(source) = self.shared.events_source() {
            let stats = source();
            let mut m = encoder.encode_descriptor(
                "events",
                "Kubernetes Events by outcome since the agent started: sent, failed, rate_limited, queue_overflow (dropped), summary (sent in place of findings over budget).",
                None,
                MetricType::Counter,
            )?;
            for (result, n) in [
                ("sent", stats.sent),
                ("failed", stats.failed),
                ("rate_limited", stats.rate_limited),
                ("queue_overflow", stats.queue_overflow),
                ("summary", stats.summaries),
            ] {
                ConstCounter::new(n).encode(m.encode_family(&[("result", result)])?)?;
            }
            gauge(
                &mut encoder,
                "events_queued",
                "Kubernetes Events waiting in the publisher's queue.",
                None,
                stats.queued,
            )?;
        }
        if let Some(source) = self.shared.policy_reports_source() {
            let stats = source();
            let mut m = encoder.encode_descriptor(
                "policy_report_writes",
                "PolicyReport and ClusterPolicyReport writes (create, update, delete) since the agent started: written (accepted), failed (refused, or failed in transit; lists included).",
                None,
                MetricType::Counter,
            )?;
            for (result, n) in [("written", stats.written), ("failed", stats.failed)] {
                ConstCounter::new(n).encode(m.encode_family(&[("result", result)])?)?;
            }
            gauge(
                &mut encoder,
                "policy_reports",
                "PolicyReports and ClusterPolicyReports this node's agent keeps in the cluster.",
                None,
                stats.reports,
            )?;
            gauge(
                &mut encoder,
                "policy_report_results_omitted",
                "Open findings left out of this node's PolicyReports because a report reached its size cap.",
                None,
                stats.results_omitted,
            )?;
            if let Some(installed) = stats.crds_installed {
                gauge(
                    &mut encoder,
                    "policy_report_crds_installed",
                    "1 when the wgpolicyk8s.io/v1alpha2 PolicyReport CRDs are served (and listable), 0 when not: reports are off until they are.",
                    None,
                    u64::from(installed),
                )?;
            }
        }
        Ok(())
    }
}

fn encode_gauges(encoder: &mut DescriptorEncoder, g: &StateGauges) -> Result<(), fmt::Error> {
    let mut m = encoder.encode_descriptor(
        "findings",
        "Open findings by kind, severity and place; container is the Kubernetes container name, else the 12-character container id, empty for host findings.",
        None,
        MetricType::Gauge,
    )?;
    for f in &g.findings {
        let labels = [
            ("kind", f.kind),
            ("severity", f.severity),
            ("namespace", f.namespace.as_str()),
            ("pod", f.pod.as_str()),
            ("container", f.container.as_str()),
        ];
        ConstGauge::new(f.count).encode(m.encode_family(&labels)?)?;
    }

    let mut m = encoder.encode_descriptor(
        "last_scan_timestamp",
        "When the last scan of each type completed, in seconds since the Unix epoch.",
        Some(&Unit::Seconds),
        MetricType::Gauge,
    )?;
    for (kind, at) in &g.last_scans {
        ConstGauge::new(*at).encode(m.encode_family(&[("scan_type", kind.as_str())])?)?;
    }

    let mut m = encoder.encode_descriptor(
        "processes",
        "Processes seen by the last scan (kernel threads excluded), in containers or on the host.",
        None,
        MetricType::Gauge,
    )?;
    for (scope, n) in [
        ("container", g.container_processes),
        ("host", g.host_processes),
    ] {
        ConstGauge::new(n).encode(m.encode_family(&[("scope", scope)])?)?;
    }

    gauge(
        encoder,
        "containers",
        "Containers seen by the last scan.",
        None,
        g.containers,
    )?;

    let mut m = encoder.encode_descriptor(
        "errors",
        "Errors that did not stop a scan, by kind, since the agent started.",
        None,
        MetricType::Counter,
    )?;
    for (kind, n) in &g.errors {
        ConstCounter::new(*n).encode(m.encode_family(&[("kind", kind.as_str())])?)?;
    }

    gauge(
        encoder,
        "policy_loaded_timestamp",
        "When the policy in force was loaded, in seconds since the Unix epoch.",
        Some(&Unit::Seconds),
        g.policy_loaded_at,
    )
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> Result<(), fmt::Error> {
    let m = encoder.encode_descriptor(name, help, unit, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: N,
) -> Result<(), fmt::Error> {
    let m = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}
