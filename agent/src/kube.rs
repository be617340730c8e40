//! Wiring of the Kubernetes side: pod metadata for the scan, Events from the state.

use crate::cli::KubeArg;
use anyhow::{Context, Result};
use nodeguard_kube::{
    CertFingerprint, EventConfig, EventPublisher, KubeMode, LeaseConfig, LeaseWriter, PodWatch,
    PolicyReportConfig, PolicyReportPublisher,
};
use nodeguard_model::{EventStats, NodeState, PodLookup, PolicyReportStats, Severity};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long shutdown waits for the Events publisher to save its announced set.
const SAVE_GRACE: Duration = Duration::from_secs(3);

/// The running Kubernetes parts.
pub struct KubeParts {
    client: nodeguard_kube::Client,
    pods: PodWatch,
    events: Option<EventPublisher>,
    reports: Option<PolicyReportPublisher>,
}

impl KubeParts {
    pub fn pods(&self) -> Arc<dyn PodLookup> {
        self.pods.lookup()
    }

    /// Starts the heartbeat Lease writer (`nodeguard-<node>` in `namespace`, else the
    /// client's default namespace: the service account's in a pod).
    pub fn start_lease(
        &self,
        mut config: LeaseConfig,
        namespace: Option<String>,
        cert: CertFingerprint,
        state: watch::Receiver<Option<Arc<NodeState>>>,
    ) -> LeaseWriter {
        config.namespace = namespace
            .filter(|ns| !ns.trim().is_empty())
            .unwrap_or_else(|| self.client.default_namespace().to_string());
        tracing::info!(
            namespace = %config.namespace,
            lease = %nodeguard_model::fleet::lease_name(&config.node_name),
            holder = %config.holder_identity,
            "keeping the heartbeat Lease"
        );
        LeaseWriter::start(self.client.clone(), config, cert, state)
    }

    /// The Events publisher's counters channel, if Events are published.
    pub fn event_stats(&self) -> Option<watch::Receiver<EventStats>> {
        self.events.as_ref().map(EventPublisher::stats_channel)
    }

    /// The PolicyReport publisher's counters channel, if reports are published.
    pub fn policy_report_stats(&self) -> Option<watch::Receiver<PolicyReportStats>> {
        self.reports
            .as_ref()
            .map(PolicyReportPublisher::stats_channel)
    }

    /// Stops the pod watch and lets the publisher save its announced set. Call after the
    /// state sender is gone (the daemon has stopped), which is what ends the publisher.
    pub async fn shutdown(self) {
        self.pods.stop();
        if let Some(events) = self.events {
            if tokio::time::timeout(SAVE_GRACE, events.join())
                .await
                .is_err()
            {
                tracing::warn!("the Events publisher did not stop in time");
            }
        }
    }
}

/// Connects as `mode` says; `None` when there is no cluster to talk to.
pub async fn start(
    mode: KubeArg,
    node: &str,
    state_dir: Option<PathBuf>,
    // The Events' threshold; `None`: no Events.
    events: Option<Severity>,
    policy_reports: bool,
    state: watch::Receiver<Option<Arc<NodeState>>>,
) -> Result<Option<KubeParts>> {
    let mode = match mode {
        KubeArg::Auto => KubeMode::Auto,
        KubeArg::On => KubeMode::On,
        KubeArg::Off => KubeMode::Off,
    };
    let Some(client) = nodeguard_kube::connect(mode)
        .await
        .context("cannot reach the Kubernetes API server")?
    else {
        tracing::info!("no Kubernetes cluster configured: pod metadata and Events are off");
        return Ok(None);
    };
    let pods = PodWatch::start(client.clone(), node);
    let lease_client = client.clone();
    let events = events.map(|min_severity| {
        let config = EventConfig {
            state_dir,
            min_severity,
            ..EventConfig::new(node)
        };
        EventPublisher::start(client.clone(), config, state.clone())
    });
    let reports = policy_reports
        .then(|| PolicyReportPublisher::start(client, PolicyReportConfig::new(node), state));
    tracing::info!(
        node,
        events = events.is_some(),
        policy_reports = reports.is_some(),
        "watching this node's pods"
    );
    Ok(Some(KubeParts {
        client: lease_client,
        pods,
        events,
        reports,
    }))
}
