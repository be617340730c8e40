//! Prometheus series for nodeguard. This is the only crate that links prometheus-client.
//!
//! [`Metrics::register`] puts every `nodeguard_*` series into a registry the binary creates
//! and hands down (no globals), and reads the daemon's watch channel of [`NodeState`] like
//! every other sink: each scrape renders every series from the latest state there (open
//! findings, counts, and the running totals the daemon keeps in `NodeState::totals`), so the
//! series of a container that is gone disappear with it and nothing is counted twice. The
//! daemon does not know this crate. [`Metrics::set_event_stats`] adds the Events publisher's
//! counters, read from its own watch channel at scrape time.
//!
//! [`encode`] writes OpenMetrics, which Prometheus asks for; [`encode_text`] writes the
//! Prometheus text format 0.0.4 for other clients (`curl | promtool check metrics`);
//! [`Format::negotiate`] picks one from an `Accept` header.
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use nodeguard_metrics::{encode, Metrics, CONTENT_TYPE};
//!
//! // The daemon keeps `state_tx` and publishes each new `Arc<NodeState>` on it.
//! let (state_tx, state_rx) = tokio::sync::watch::channel(None);
//! let mut registry = Registry::default();
//! let _metrics = Metrics::register(&mut registry, state_rx);
//! let body = encode(&registry).unwrap(); // serve with CONTENT_TYPE
//! assert!(body.contains("nodeguard_scans_total{scan_type=\"processes\",result=\"success\"} 0\n"));
//! assert!(body.ends_with("# EOF\n"));
//! # let _ = (CONTENT_TYPE, state_tx);
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
//! | `nodeguard_fs_recheck_age_seconds` | gauge | |
//! | `nodeguard_fs_events_source` | gauge | source |
//! | `nodeguard_fs_events_total` | counter | |
//! | `nodeguard_fs_events_dirs_listed_total` | counter | |
//! | `nodeguard_fs_events_lost_total` | counter | |
//! | `nodeguard_fs_events_unmarked_layers` | gauge | |
//! | `nodeguard_hashed_bytes_total` | counter | |
//! | `nodeguard_hash_cache_hits_total` | counter | |
//! | `nodeguard_hash_cache_misses_total` | counter | |
//! | `nodeguard_errors_total` | counter | kind |
//! | `nodeguard_processes_vanished_total` | counter | |
//! | `nodeguard_policy_reloads_total` | counter | result |
//! | `nodeguard_policy_loaded_timestamp_seconds` | gauge | |
//! | `nodeguard_policy_weakened` | gauge | setting |
//! | `nodeguard_exec_events_source` | gauge | source |
//! | `nodeguard_exec_events_total` | counter | |
//! | `nodeguard_exec_events_lost_total` | counter | |
//! | `nodeguard_exec_processes_unread_total` | counter | |
//! | `nodeguard_exec_processes_held_total` | counter | |
//! | `nodeguard_exec_events_unheld_total` | counter | reason |
//! | `nodeguard_exec_passes_total` | counter | |
//! | `nodeguard_events_total` | counter | result |
//! | `nodeguard_events_queued` | gauge | |
//! | `nodeguard_policy_report_writes_total` | counter | result |
//! | `nodeguard_policy_reports` | gauge | |
//! | `nodeguard_policy_report_results_omitted` | gauge | |
//! | `nodeguard_policy_report_crds_installed` | gauge | |
//! | `nodeguard_lease_writes_total` | counter | result |
//! | `nodeguard_api_denials_total` | counter | reason |
//! | `nodeguard_image_verdicts` | gauge | verdict |
//! | `nodeguard_image_layers_indexed_total` | counter | |
//! | `nodeguard_image_layers_from_disk_total` | counter | |
//! | `nodeguard_image_layers_refused_total` | counter | |
//! | `nodeguard_image_layer_read_bytes_total` | counter | |
//! | `nodeguard_images` | gauge | state |
//! | `nodeguard_image_index_disk_bytes` | gauge | |
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
//! first event. Gauges that mirror the state (and `nodeguard_errors_total`, whose kinds are
//! not known in advance) are absent until the daemon publishes its first state;
//! `nodeguard_events_*` are absent unless an Events channel is set, `nodeguard_policy_report*`
//! unless a PolicyReport channel is set (`..._crds_installed` also until the first look),
//! `nodeguard_api_denials_total` unless the API's counters are set
//! ([`Metrics::set_api_denials`]; every reason from 0 then). `nodeguard_image_verdicts`
//! (current container processes by image verdict: `verified`, `mismatch`,
//! `not_from_image`, `unverifiable`) is written once a container of the report has an image
//! identity, i.e. with image verification on; `nodeguard_image_layer*`,
//! `nodeguard_images` and `nodeguard_image_index_disk_bytes` only when the indexer's progress channel is set
//! ([`Metrics::set_image_index_progress`]).
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
/// The upper bounds of `nodeguard_scan_duration_seconds`'s buckets, in seconds (the daemon
/// counts durations into them).
pub use nodeguard_model::SCAN_DURATION_BUCKETS;
/// The registry type [`Metrics::register`] fills, re-exported so that the binary can create
/// it without linking prometheus-client itself.
pub use prometheus_client::registry::Registry;

use nodeguard_model::fleet::LeaseStats;
use nodeguard_model::{
    DenialCounters, EventStats, ImageIndexProgress, NodeState, PolicyReportStats,
};
use prometheus_client::metrics::info::Info;
use series::StateCollector;
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::watch;

/// The daemon's channel: the latest state, `None` until the first scan completes.
pub type StateReceiver = watch::Receiver<Option<Arc<NodeState>>>;

/// A handle to nodeguard's series, to plug in the Events publisher's counters.
#[derive(Debug, Clone)]
pub struct Metrics {
    events: Arc<RwLock<Option<watch::Receiver<EventStats>>>>,
    policy_reports: Arc<RwLock<Option<watch::Receiver<PolicyReportStats>>>>,
    denials: Arc<RwLock<Option<Arc<DenialCounters>>>>,
    lease: Arc<RwLock<Option<watch::Receiver<LeaseStats>>>>,
    image_index: Arc<RwLock<Option<watch::Receiver<ImageIndexProgress>>>>,
}

impl Metrics {
    /// Registers every nodeguard series into `registry` under the `nodeguard_` prefix,
    /// rendered at each scrape from the latest state on `state`. Pass the root registry (or
    /// one without a prefix) to get the names documented above.
    pub fn register(registry: &mut Registry, state: StateReceiver) -> Metrics {
        // The agent's own CPU, memory and fds under the standard unprefixed process_* names.
        registry.register_collector(Box::new(process::ProcessCollector));
        let registry = registry.sub_registry_with_prefix("nodeguard");
        registry.register(
            "build",
            "nodeguard build; the value is always 1",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let events = Arc::new(RwLock::new(None));
        let policy_reports = Arc::new(RwLock::new(None));
        let denials = Arc::new(RwLock::new(None));
        let lease = Arc::new(RwLock::new(None));
        let image_index = Arc::new(RwLock::new(None));
        registry.register_collector(Box::new(StateCollector {
            state,
            events: Arc::clone(&events),
            policy_reports: Arc::clone(&policy_reports),
            denials: Arc::clone(&denials),
            lease: Arc::clone(&lease),
            image_index: Arc::clone(&image_index),
        }));
        Metrics {
            events,
            policy_reports,
            denials,
            lease,
            image_index,
        }
    }

    /// Adds `nodeguard_events_total` and `nodeguard_events_queued`, read from the Events
    /// publisher's counters channel at each scrape. Without it these series are absent.
    pub fn set_event_stats(&self, stats: watch::Receiver<EventStats>) {
        *self.events.write().unwrap_or_else(PoisonError::into_inner) = Some(stats);
    }

    /// Adds `nodeguard_policy_report_writes_total`, `nodeguard_policy_reports`,
    /// `nodeguard_policy_report_results_omitted` and `nodeguard_policy_report_crds_installed`,
    /// read from the PolicyReport publisher's counters channel at each scrape. Without it
    /// these series are absent.
    pub fn set_policy_report_stats(&self, stats: watch::Receiver<PolicyReportStats>) {
        *self
            .policy_reports
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(stats);
    }

    /// Adds `nodeguard_api_denials_total{reason}`: requests the API refused, counted by its
    /// auth layer. Without it the series is absent.
    pub fn set_api_denials(&self, denials: Arc<DenialCounters>) {
        *self.denials.write().unwrap_or_else(PoisonError::into_inner) = Some(denials);
    }

    /// Adds `nodeguard_lease_writes_total{result}` (created, renewed, failed): the
    /// heartbeat Lease's writes, read from its writer's counters channel at each scrape.
    /// Without it the series is absent.
    pub fn set_lease_stats(&self, stats: watch::Receiver<LeaseStats>) {
        *self.lease.write().unwrap_or_else(PoisonError::into_inner) = Some(stats);
    }

    /// Adds the image indexer's progress (`nodeguard_image_layers_indexed_total`,
    /// `..._from_disk_total`, `..._refused_total`, `nodeguard_image_layer_read_bytes_total`,
    /// `nodeguard_images{state}`, `nodeguard_image_index_disk_bytes`), read from its
    /// channel at each scrape.
    pub fn set_image_index_progress(&self, progress: watch::Receiver<ImageIndexProgress>) {
        *self
            .image_index
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(progress);
    }
}
