//! Prometheus series for nodeguard. This is the only crate that links prometheus-client.
//!
//! [`Metrics::register`] puts every `nodeguard_*` series into a registry the binary creates
//! and hands down (no globals). The daemon then reports to the returned [`Metrics`]:
//! - [`Metrics::scan_finished`] after each scan (duration histogram, scan counters);
//! - [`Metrics::state_changed`] with each new [`NodeState`]. Open findings, process and
//!   container counts are rendered from the latest state at scrape time, so the series of a
//!   container that is gone disappear with it;
//! - [`Metrics::policy_reload`] after each policy reload attempt.
//!
//! [`encode`] writes OpenMetrics, which Prometheus asks for; [`encode_text`] writes the
//! Prometheus text format 0.0.4 for other clients (`curl | promtool check metrics`);
//! [`Format::negotiate`] picks one from an `Accept` header.
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use nodeguard_metrics::{encode, Metrics, CONTENT_TYPE};
//! use nodeguard_model::ScanKind;
//! use std::time::Duration;
//!
//! let mut registry = Registry::default();
//! let metrics = Metrics::register(&mut registry);
//! metrics.scan_finished(ScanKind::Processes, Duration::from_millis(42), true);
//! let body = encode(&registry).unwrap(); // serve with CONTENT_TYPE
//! assert!(body.contains("nodeguard_scans_total{scan_type=\"processes\",result=\"success\"} 1\n"));
//! assert!(body.ends_with("# EOF\n"));
//! # let _ = CONTENT_TYPE;
//! ```
//!
//! # Series
//!
//! | name | type | labels |
//! |---|---|---|
//! | `nodeguard_findings` | gauge | kind, severity, namespace, pod, container |
//! | `nodeguard_findings_detected_total` | counter | kind, severity |
//! | `nodeguard_scan_duration_seconds` | histogram | scan_type |
//! | `nodeguard_scans_total` | counter | scan_type, result |
//! | `nodeguard_last_scan_timestamp_seconds` | gauge | scan_type |
//! | `nodeguard_processes` | gauge | scope |
//! | `nodeguard_containers` | gauge | |
//! | `nodeguard_hashed_bytes_total` | counter | |
//! | `nodeguard_hash_cache_hits_total` | counter | |
//! | `nodeguard_hash_cache_misses_total` | counter | |
//! | `nodeguard_errors_total` | counter | kind |
//! | `nodeguard_processes_vanished_total` | counter | |
//! | `nodeguard_policy_reloads_total` | counter | result |
//! | `nodeguard_policy_loaded_timestamp_seconds` | gauge | |
//! | `nodeguard_policy_weakened` | gauge | setting |
//! | `nodeguard_events_total` | counter | result |
//! | `nodeguard_events_queued` | gauge | |
//! | `nodeguard_policy_report_writes_total` | counter | result |
//! | `nodeguard_policy_reports` | gauge | |
//! | `nodeguard_policy_report_results_omitted` | gauge | |
//! | `nodeguard_policy_report_crds_installed` | gauge | |
//! | `nodeguard_build_info` | info (gauge in 0.0.4) | version |
//!
//! `container` on `nodeguard_findings` is the Kubernetes container name when known, else the
//! first 12 characters of the container id; host findings have `container=""` (and empty
//! `namespace`/`pod`), which Prometheus stores as "no such label": select them with
//! `{container=""}`. An empty value was chosen over a literal `host` so that a container
//! named `host` is never mistaken for the host.
//!
//! Counters exist from the start at 0 for every label value known in advance (every finding
//! kind x severity, scan type x result, policy reload result), so `increase()` sees the
//! first event. Gauges that mirror the state are absent until the first state arrives;
//! `nodeguard_events_*` are absent unless an Events source is set, `nodeguard_policy_report*`
//! unless a PolicyReport source is set (`..._crds_installed` also until the first list).
//!
//! `namespace`, `pod` and `container` are also the target labels a PodMonitor or
//! ServiceMonitor attaches: scrape nodeguard with `honorLabels: true` (`honor_labels`), as
//! for kube-state-metrics, or Prometheus stores them as `exported_*`.

mod format;
mod process;
mod series;

pub use format::{
    encode, encode_as, encode_text, CachedEncoder, Error, Format, CONTENT_TYPE, TEXT_CONTENT_TYPE,
};
/// The registry type [`Metrics::register`] fills, re-exported so that the binary can create
/// it without linking prometheus-client itself.
pub use prometheus_client::registry::Registry;
pub use series::{EventStatsSource, PolicyReportStatsSource};

use nodeguard_model::{NodeState, ScanKind};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Unit;
use series::{Shared, StateCollector};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds of the scan duration buckets, in seconds: 1 ms to 2 minutes.
pub const SCAN_DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

const SCAN_KINDS: [ScanKind; 2] = [ScanKind::Processes, ScanKind::Filesystems];

/// Handles to nodeguard's series. Cheap to clone; every clone updates the same series.
#[derive(Debug, Clone)]
pub struct Metrics {
    shared: Arc<Shared>,
    scan_duration: Family<ScanLabels, Histogram, fn() -> Histogram>,
    scans: Family<ScanResultLabels, Counter>,
    policy_reloads: Family<ResultLabel, Counter>,
    policy_weakened: Family<SettingLabel, Gauge>,
}

impl Metrics {
    /// Registers every nodeguard series into `registry` under the `nodeguard_` prefix. Pass
    /// the root registry (or one without a prefix) to get the names documented above.
    pub fn register(registry: &mut Registry) -> Metrics {
        // The agent's own CPU, memory and fds under the standard unprefixed process_* names.
        registry.register_collector(Box::new(process::ProcessCollector));
        let registry = registry.sub_registry_with_prefix("nodeguard");
        registry.register(
            "build",
            "nodeguard build; the value is always 1",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );

        let scan_duration: Family<ScanLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(scan_duration_histogram);
        registry.register_with_unit(
            "scan_duration",
            "Time taken by each scan, failed scans included",
            Unit::Seconds,
            scan_duration.clone(),
        );
        let scans = Family::<ScanResultLabels, Counter>::default();
        registry.register(
            "scans",
            "Scans by type and outcome since the agent started",
            scans.clone(),
        );
        let policy_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reload attempts by outcome since the agent started; on failure the previous policy stays in force",
            policy_reloads.clone(),
        );

        let policy_weakened = Family::<SettingLabel, Gauge>::default();
        registry.register(
            "policy_weakened",
            "1 for each setting of the policy in force that switches a whole check off (see README, Policy)",
            policy_weakened.clone(),
        );

        // Every series that a counter or histogram can have exists from the start, at 0, so
        // that rate() and increase() see the first event.
        for scan_type in SCAN_KINDS {
            drop(scan_duration.get_or_create(&ScanLabels { scan_type }));
            for result in [Outcome::Success, Outcome::Failure] {
                drop(scans.get_or_create(&ScanResultLabels { scan_type, result }));
            }
        }
        for result in [Outcome::Success, Outcome::Failure] {
            drop(policy_reloads.get_or_create(&ResultLabel { result }));
        }

        let shared = Arc::new(Shared::default());
        registry.register_collector(Box::new(StateCollector {
            shared: Arc::clone(&shared),
        }));
        Metrics {
            shared,
            scan_duration,
            scans,
            policy_reloads,
            policy_weakened,
        }
    }

    /// Sets `nodeguard_policy_weakened{setting}` to 1 for each setting given (the policy in
    /// force's `Policy::weakened()`), and drops the series of settings no longer weakened.
    pub fn policy_weakened(&self, settings: &[&str]) {
        self.policy_weakened.clear();
        for setting in settings {
            self.policy_weakened
                .get_or_create(&SettingLabel {
                    setting: (*setting).to_string(),
                })
                .set(1);
        }
    }

    /// Records one scan: its duration (failed scans included) and its outcome.
    pub fn scan_finished(&self, kind: ScanKind, duration: Duration, ok: bool) {
        self.scan_duration
            .get_or_create(&ScanLabels { scan_type: kind })
            .observe(duration.as_secs_f64());
        self.scans
            .get_or_create(&ScanResultLabels {
                scan_type: kind,
                result: Outcome::from_ok(ok),
            })
            .inc();
    }

    /// Makes `state` the one scrapes render: open findings, last scan times, process and
    /// container counts, error counters. The per-scan counters of `state.report.stats`
    /// (bytes hashed, hash cache hits and misses, vanished processes) are added to their
    /// totals once per distinct report. Aggregation happens here, not at scrape time.
    pub fn state_changed(&self, state: &Arc<NodeState>) {
        self.shared.update(state);
    }

    /// Records a policy reload attempt. This is the source of
    /// `nodeguard_policy_reloads_total`; `NodeState::policy_reload_failures` is not read.
    pub fn policy_reload(&self, ok: bool) {
        self.policy_reloads
            .get_or_create(&ResultLabel {
                result: Outcome::from_ok(ok),
            })
            .inc();
    }

    /// Sets where `nodeguard_events_total` and `nodeguard_events_queued` come from; the
    /// source is called once per scrape. Without a source these series are absent.
    pub fn set_event_stats_source(
        &self,
        source: Arc<dyn Fn() -> nodeguard_model::EventStats + Send + Sync>,
    ) {
        self.shared.set_events_source(source);
    }

    /// Sets where `nodeguard_policy_report_writes_total`, `nodeguard_policy_reports`,
    /// `nodeguard_policy_report_results_omitted` and `nodeguard_policy_report_crds_installed`
    /// come from; called once per scrape. Without a source these series are absent.
    pub fn set_policy_report_stats_source(&self, source: PolicyReportStatsSource) {
        self.shared.set_policy_reports_source(source);
    }
}

fn scan_duration_histogram() -> Histogram {
    Histogram::new(SCAN_DURATION_BUCKETS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    fn from_ok(ok: bool) -> Outcome {
        if ok {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), fmt::Error> {
        fmt::Write::write_str(
            encoder,
            match self {
                Outcome::Success => "success",
                Outcome::Failure => "failure",
            },
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ScanLabels {
    scan_type: ScanKind,
}

impl EncodeLabelSet for ScanLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        prometheus_client::encoding::EncodeLabel::encode(
            &("scan_type", self.scan_type.as_str()),
            encoder.encode_label(),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ScanResultLabels {
    scan_type: ScanKind,
    result: Outcome,
}

impl EncodeLabelSet for ScanResultLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("scan_type", self.scan_type.as_str()).encode(encoder.encode_label())?;
        ("result", self.result).encode(encoder.encode_label())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SettingLabel {
    setting: String,
}

impl EncodeLabelSet for SettingLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        prometheus_client::encoding::EncodeLabel::encode(
            &("setting", self.setting.as_str()),
            encoder.encode_label(),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ResultLabel {
    result: Outcome,
}

impl EncodeLabelSet for ResultLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        prometheus_client::encoding::EncodeLabel::encode(
            &("result", self.result),
            encoder.encode_label(),
        )
    }
}
