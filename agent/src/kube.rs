//! Wiring of the Kubernetes side: pod metadata for the scan, Events from the state.

use crate::cli::KubeArg;
use anyhow::{Context, Result};
use nodeguard_kube::{EventConfig, EventPublisher, KubeMode, PodWatch};
use nodeguard_model::{EventStats, NodeState, PodLookup};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// The running Kubernetes parts.
pub struct KubeParts {
    pods: PodWatch,
    events: Option<Arc<EventPublisher>>,
}

impl KubeParts {
    pub fn pods(&self) -> Arc<dyn PodLookup> {
        self.pods.lookup()
    }

    pub fn event_stats(&self) -> Option<Arc<dyn Fn() -> EventStats + Send + Sync>> {
        let events = Arc::clone(self.events.as_ref()?);
        Some(Arc::new(move || events.stats()))
    }

    pub async fn shutdown(self) {
        drop(self.events);
        drop(self.pods);
    }
}

/// Connects as `mode` says; `None` when there is no cluster to talk to.
pub async fn start(
    mode: KubeArg,
    node: &str,
    state_dir: Option<PathBuf>,
    events: bool,
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
    let events = events.then(|| {
        let config = EventConfig::for_node(node, state_dir);
        Arc::new(EventPublisher::start(client, config, state))
    });
    tracing::info!(node, events = events.is_some(), "watching this node's pods");
    Ok(Some(KubeParts { pods, events }))
}
