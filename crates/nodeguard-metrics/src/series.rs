//! Every series derived from the daemon's state, computed and written at scrape time by a
//! custom collector from the latest state on the channel, so a gone container's series
//! simply are not written and nothing is added up here (the daemon keeps the totals).

use crate::StateReceiver;
use nodeguard_model::{
    short_id, Container, DenialCounters, DenialReason, EventStats, ExecEventSource, ExecEventStats,
    Finding, FindingKind, ImageIndexProgress, ImageVerdict, NodeState, PolicyReportStats, ScanKind,
    ScanTotals, Severity, Totals, SCAN_DURATION_BUCKETS,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::watch;

const SCAN_KINDS: [ScanKind; 2] = [ScanKind::Processes, ScanKind::Filesystems];

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
    pub policy_weakened: Vec<&'static str>,
    pub exec: ExecEventStats,
    pub fs_recheck_age: u64,
    pub fs_events: nodeguard_model::FsEventStats,
    /// Container processes by image verdict (in `ImageVerdict::NAMES` order), when image
    /// verification is on.
    pub image_verdicts: Option<[u64; 4]>,
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
            .totals
            .errors
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        policy_loaded_at: state.policy_loaded_at.unix_seconds(),
        policy_weakened: state.policy_weakened.clone(),
        exec: state.exec_events,
        fs_recheck_age: report.stats.fs_recheck_age_seconds,
        fs_events: report.stats.fs_events,
        image_verdicts: image_verdicts(report),
    }
}

/// Current container processes by image verdict, when any container has an image identity
/// (image verification on).
fn image_verdicts(report: &nodeguard_model::Report) -> Option<[u64; 4]> {
    if report.containers.iter().all(|c| c.image.is_none()) {
        return None;
    }
    let mut counts = [0u64; 4];
    for verdict in report
        .processes
        .iter()
        .filter_map(|p| p.image_verdict.as_ref())
    {
        let name = verdict.name();
        if let Some(i) = ImageVerdict::NAMES.iter().position(|n| *n == name) {
            counts[i] += 1;
        }
    }
    Some(counts)
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

/// Writes every nodeguard series at scrape time from the latest state on the daemon's
/// channel and the latest counters on the Events publisher's.
#[derive(Debug)]
pub(crate) struct StateCollector {
    pub state: StateReceiver,
    pub events: Arc<RwLock<Option<watch::Receiver<EventStats>>>>,
    pub policy_reports: Arc<RwLock<Option<watch::Receiver<PolicyReportStats>>>>,
    pub denials: Arc<RwLock<Option<Arc<DenialCounters>>>>,
    pub lease: Arc<RwLock<Option<watch::Receiver<nodeguard_model::fleet::LeaseStats>>>>,
    pub image_index: Arc<RwLock<Option<watch::Receiver<ImageIndexProgress>>>>,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        // Clone the Arc out at once: a held borrow would block the daemon's next send.
        let state = self.state.borrow().clone();
        let none = Totals::default();
        let totals = state.as_ref().map_or(&none, |s| &s.totals);
        if let Some(state) = &state {
            encode_gauges(&mut encoder, &state_gauges(state))?;
        }
        encode_scans(&mut encoder, totals)?;

        let mut m = encoder.encode_descriptor(
            "findings_detected",
            "Findings that appeared since the agent started, by kind and severity (a finding that resolves and comes back counts again).",
            None,
            MetricType::Counter,
        )?;
        for kind in FindingKind::ALL {
            for severity in Severity::ALL {
                let n = totals
                    .findings_detected
                    .get(&(*kind, severity))
                    .copied()
                    .unwrap_or(0);
                let labels = [("kind", kind.as_str()), ("severity", severity.as_str())];
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }

        counter(
            &mut encoder,
            "hashed",
            "Bytes of executables and files read to compute digests since the agent started.",
            Some(&Unit::Bytes),
            totals.bytes_hashed,
        )?;
        counter(
            &mut encoder,
            "hash_cache_hits",
            "Digests served from the file-identity cache since the agent started.",
            None,
            totals.hash_cache_hits,
        )?;
        counter(
            &mut encoder,
            "hash_cache_misses",
            "Digests that had to read the file since the agent started.",
            None,
            totals.hash_cache_misses,
        )?;
        counter(
            &mut encoder,
            "processes_vanished",
            "Processes that exited while being read (expected races, not errors) since the agent started.",
            None,
            totals.processes_vanished,
        )?;

        let events = self
            .events
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|rx| *rx.borrow());
        if let Some(stats) = events {
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
        let denials = self
            .denials
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(denials) = denials {
            let mut m = encoder.encode_descriptor(
                "api_denials",
                "Requests the API refused since the agent started, by reason: missing_token, oversized_token (over 8 KiB, refused before any review), invalid_token (401), forbidden (403), unavailable (no decision: 503). Logged once per interval with a summary, not per request.",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in DenialReason::ALL.iter().zip(denials.snapshot()) {
                ConstCounter::new(n).encode(m.encode_family(&[("reason", reason.as_str())])?)?;
            }
        }
        let lease = self
            .lease
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|rx| *rx.borrow());
        let image_index = self
            .image_index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|rx| *rx.borrow());
        if let Some(stats) = lease {
            let mut m = encoder.encode_descriptor(
                "lease_writes",
                "Writes of this node's heartbeat Lease since the agent started: created (at start or after a deletion), renewed (one per interval at most), failed (refused or failed in transit).",
                None,
                MetricType::Counter,
            )?;
            for (result, n) in [
                ("created", stats.created),
                ("renewed", stats.renewed),
                ("failed", stats.failed),
            ] {
                ConstCounter::new(n).encode(m.encode_family(&[("result", result)])?)?;
            }
        }
        if let Some(progress) = image_index {
            encode_image_index(&mut encoder, &progress)?;
        }
        let reports = self
            .policy_reports
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|rx| *rx.borrow());
        if let Some(stats) = reports {
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

/// Scan counts and durations, and policy reloads. Every scan type and outcome is written
/// from the start (at 0), so that `rate()` and `increase()` see the first event.
fn encode_scans(encoder: &mut DescriptorEncoder, totals: &Totals) -> Result<(), fmt::Error> {
    let none = ScanTotals::default();
    let mut m = encoder.encode_descriptor(
        "scan_duration",
        "Time taken by each scan, failed scans included",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for kind in SCAN_KINDS {
        let h = &totals.scans.get(&kind).unwrap_or(&none).durations;
        let buckets: Vec<(f64, u64)> = SCAN_DURATION_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(h.counts.iter().copied())
            .collect();
        m.encode_family(&[("scan_type", kind.as_str())])?
            .encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &buckets, None)?;
    }

    let mut m = encoder.encode_descriptor(
        "scans",
        "Scans by type and outcome since the agent started",
        None,
        MetricType::Counter,
    )?;
    for kind in SCAN_KINDS {
        let o = totals.scans.get(&kind).unwrap_or(&none).outcomes;
        for (result, n) in [("success", o.ok), ("failure", o.failed)] {
            let labels = [("scan_type", kind.as_str()), ("result", result)];
            ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
        }
    }

    let mut m = encoder.encode_descriptor(
        "policy_reloads",
        "Policy reload attempts by outcome since the agent started; on failure the previous policy stays in force",
        None,
        MetricType::Counter,
    )?;
    let o = totals.policy_reloads;
    for (result, n) in [("success", o.ok), ("failure", o.failed)] {
        ConstCounter::new(n).encode(m.encode_family(&[("result", result)])?)?;
    }
    Ok(())
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

    gauge(
        encoder,
        "fs_recheck_age",
        "How long ago every entry of the containers' writable layers was last looked at, at the latest: a chmod or xattr change on an existing file there shows within this age (new, removed and renamed files within a process interval).",
        Some(&Unit::Seconds),
        g.fs_recheck_age,
    )?;

    let mut m = encoder.encode_descriptor(
        "fs_events_source",
        "1 for where a chmod or xattr change on an existing file of a writable layer is learnt of: fanotify (the next process scan), off or unavailable (the filesystem scan's re-check).",
        None,
        MetricType::Gauge,
    )?;
    for source in nodeguard_model::FsEventSource::ALL {
        let value = u64::from(g.fs_events.source == source);
        ConstGauge::new(value).encode(m.encode_family(&[("source", source.as_str())])?)?;
    }
    counter(
        encoder,
        "fs_events",
        "Attribute-change events read from fanotify since the agent started.",
        None,
        g.fs_events.events,
    )?;
    counter(
        encoder,
        "fs_events_dirs_listed",
        "Directories of writable layers listed again because a fanotify event named them, since the agent started.",
        None,
        g.fs_events.dirs_listed,
    )?;
    counter(
        encoder,
        "fs_events_lost",
        "Times fanotify events were lost since the agent started (queue overflow, too many directories between two scans, a read error); each starts a re-check of every writable layer at once.",
        None,
        g.fs_events.lost,
    )?;
    gauge(
        encoder,
        "fs_events_unmarked_layers",
        "Writable layers on a filesystem without a fanotify mark while the event source runs: a chmod there is seen at the re-check only.",
        None,
        g.fs_events.unmarked_layers,
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

    let mut m = encoder.encode_descriptor(
        "exec_events_source",
        "1 for where the agent learns of execs: netlink (the kernel's process-events connector, each exec evaluated at once) or polling (the scans on the interval only, when the connector is unavailable or off).",
        None,
        MetricType::Gauge,
    )?;
    for source in ExecEventSource::ALL {
        let value = u64::from(g.exec.source == source);
        ConstGauge::new(value).encode(m.encode_family(&[("source", source.as_str())])?)?;
    }
    counter(
        encoder,
        "exec_events",
        "Exec events received from the kernel since the agent started.",
        None,
        g.exec.events,
    )?;
    counter(
        encoder,
        "exec_events_lost",
        "Exec events lost since the agent started (the socket overran, counted once per overrun, or the daemon's queue was full); each loss brings a full scan forward.",
        None,
        g.exec.lost,
    )?;
    counter(
        encoder,
        "exec_processes_unread",
        "Exec'd processes that exited before the agent could read them, since the agent started.",
        None,
        g.exec.unread,
    )?;
    counter(
        encoder,
        "exec_processes_held",
        "Exec'd processes taken hold of as their event arrived (their /proc directory, executable and small files, read later even after they exited), since the agent started.",
        None,
        g.exec.held,
    )?;
    let mut m = encoder.encode_descriptor(
        "exec_events_unheld",
        "Exec'd processes that could not be held when their event arrived, by reason (exited, denied, budget, reused, error), since the agent started; they are read by pid instead, if still there.",
        None,
        MetricType::Counter,
    )?;
    for (reason, n) in g.exec.unheld.by_reason() {
        ConstCounter::new(n).encode(m.encode_family(&[("reason", reason)])?)?;
    }
    counter(
        encoder,
        "exec_passes",
        "States published from exec reads (each merges the processes read since the last one into the report and evaluates it) since the agent started.",
        None,
        g.exec.passes,
    )?;

    gauge(
        encoder,
        "policy_loaded_timestamp",
        "When the policy in force was loaded, in seconds since the Unix epoch.",
        Some(&Unit::Seconds),
        g.policy_loaded_at,
    )?;

    let mut m = encoder.encode_descriptor(
        "policy_weakened",
        "1 for each setting of the policy in force that switches a whole check off (see README, Policy)",
        None,
        MetricType::Gauge,
    )?;
    for setting in &g.policy_weakened {
        ConstGauge::new(1).encode(m.encode_family(&[("setting", *setting)])?)?;
    }

    if let Some(counts) = &g.image_verdicts {
        let mut m = encoder.encode_descriptor(
            "image_verdicts",
            "Container processes of the last scan by image verdict: verified (bytes equal the image's file), mismatch (they differ: image_content_mismatch), not_from_image (writable layer or a volume), unverifiable (image unknown, store not mounted, blobs discarded, still indexing).",
            None,
            MetricType::Gauge,
        )?;
        for (verdict, n) in ImageVerdict::NAMES.iter().zip(counts) {
            ConstGauge::new(*n).encode(m.encode_family(&[("verdict", *verdict)])?)?;
        }
    }
    Ok(())
}

/// The background image indexer's progress.
fn encode_image_index(
    encoder: &mut DescriptorEncoder,
    p: &ImageIndexProgress,
) -> Result<(), fmt::Error> {
    counter(
        encoder,
        "image_layers_indexed",
        "Image layers read from the runtime's store, checked against their diff_id and indexed, since the agent started.",
        None,
        p.layers_indexed,
    )?;
    counter(
        encoder,
        "image_layers_from_disk",
        "Image layer indexes taken from the on-disk cache under --state-dir (no layer read) since the agent started.",
        None,
        p.layers_from_disk,
    )?;
    counter(
        encoder,
        "image_layers_refused",
        "Image layers refused (a bound broken, not a tar), found altered (diff_id mismatch) or missing, since the agent started.",
        None,
        p.layers_refused,
    )?;
    counter(
        encoder,
        "image_layer_read",
        "Uncompressed image layer bytes read by the indexer since the agent started.",
        Some(&Unit::Bytes),
        p.bytes_read,
    )?;
    let mut m = encoder.encode_descriptor(
        "images",
        "Images the indexer knows, by state: queued (waiting to be indexed), ready, unverifiable.",
        None,
        MetricType::Gauge,
    )?;
    for (state, n) in [
        ("queued", p.images_queued),
        ("ready", p.images_ready),
        ("unverifiable", p.images_unverifiable),
    ] {
        ConstGauge::new(n).encode(m.encode_family(&[("state", state)])?)?;
    }
    gauge(
        encoder,
        "image_index_disk",
        "Bytes of image layer indexes on disk under --state-dir.",
        Some(&Unit::Bytes),
        p.disk_bytes,
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
