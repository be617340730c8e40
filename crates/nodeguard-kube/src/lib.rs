//! The Kubernetes side of nodeguard: who a container is, and telling the cluster what was found.
//!
//! This is the only crate that links `kube` and `k8s-openapi`; everything else meets it through
//! plain model types ([`nodeguard_model::PodLookup`], [`nodeguard_model::NodeState`],
//! [`nodeguard_model::EventStats`]).
//!
//! - [`connect`] builds a client from the in-cluster service account or a kubeconfig, as
//!   `--kube auto|on|off` asks.
//! - [`PodWatch`] keeps a store of the pods scheduled on this node (a kube reflector with the
//!   field selector `spec.nodeName=NODE`) and answers container id → pod, container, image
//!   lookups from it without ever waiting on the API server.
//! - [`EventPublisher`] turns changes in the set of open findings into core/v1 Events (as
//!   kubelet sends them, which every API server version accepts about the Node in `default`):
//!   a `Warning` when a finding appears, a `Normal` `<Reason>Resolved` when it goes,
//!   rate-limited per object and per node, retried with backoff while the API server is down,
//!   and not repeated across restarts when a state directory keeps the announced set.
//! - [`PolicyReportPublisher`] keeps the open findings in `wgpolicyk8s.io/v1alpha2`
//!   PolicyReports (one per namespace and node) and a ClusterPolicyReport (host findings),
//!   written only when they change, capped in size, rate-limited and backed off like Events.
//!
//! ```no_run
//! # async fn wire() -> Result<(), nodeguard_kube::Error> {
//! use nodeguard_kube::{connect, EventConfig, EventPublisher, KubeMode, PodWatch};
//! let (_tx, rx) = tokio::sync::watch::channel(None);
//! if let Some(client) = connect(KubeMode::Auto).await? {
//!     let pods = PodWatch::start(client.clone(), "node-a");
//!     let _lookup = pods.lookup(); // hand to the scanner
//!     let events = EventPublisher::start(client, EventConfig::new("node-a"), rx);
//!     let _stats = events.stats(); // for metrics
//! }
//! # Ok(()) }
//! ```

mod audiences;
mod auth;
mod error;
mod events;
pub mod fleet;
mod lease;
mod pods;
mod publish;
mod reports;
mod state_file;

pub use audiences::FLEET_AUDIENCE;
pub use auth::{kubeconfig_token, AccessDecision, AuthConfig, KubeAuthorizer};
pub use error::Error;
pub use events::{EventConfig, EventPublisher, FINDINGS_SUMMARY_REASON, RESOLVED_SUFFIX};
/// The client type [`connect`] gives, so the binary can keep one without linking kube.
pub use kube::Client;
pub use lease::{CertFingerprint, LeaseConfig, LeaseWriter};
pub use pods::{pod_ref_for, PodWatch};
pub use publish::Publisher;
pub use reports::{PolicyReportConfig, PolicyReportPublisher};

use std::time::Duration;

/// How the agent finds a cluster (`--kube auto|on|off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KubeMode {
    /// Use the in-cluster service account or a kubeconfig if there is one, else run without a
    /// cluster.
    #[default]
    Auto,
    /// A cluster is required: fail start-up when no configuration is found.
    On,
    /// No cluster at all.
    Off,
}

impl std::str::FromStr for KubeMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(KubeMode::Auto),
            "on" => Ok(KubeMode::On),
            "off" => Ok(KubeMode::Off),
            other => Err(Error::UnknownMode(other.to_string())),
        }
    }
}

/// kube sets no read timeout, so a list or get to a hung API server would wait forever (the
/// watcher has its own idle timeout for watches, which the server ends after 290 s).
const READ_TIMEOUT: Duration = Duration::from_secs(295);

/// Builds a client as `mode` asks. `Ok(None)` means: run without a cluster.
///
/// `Auto` and `On` try, in kube's order, `KUBECONFIG` / `~/.kube/config` and then the
/// in-cluster service account. An unreachable API server is not an error here: the watch and
/// the publisher retry on their own.
pub async fn connect(mode: KubeMode) -> Result<Option<kube::Client>, Error> {
    if mode == KubeMode::Off {
        return Ok(None);
    }
    let mut config = match kube::Config::infer().await {
        Ok(config) => config,
        Err(source) if mode == KubeMode::Auto => {
            tracing::info!(error = %source, "no Kubernetes configuration found; running without a cluster");
            return Ok(None);
        }
        Err(source) => return Err(Error::NoConfig(source)),
    };
    if config.read_timeout.is_none() {
        config.read_timeout = Some(READ_TIMEOUT);
    }
    let cluster_url = config.cluster_url.to_string();
    kube::Client::try_from(config)
        .map(Some)
        .map_err(|source| Error::Client {
            cluster_url,
            source: Box::new(source),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_from_the_flag_values() {
        assert_eq!("auto".parse::<KubeMode>().unwrap(), KubeMode::Auto);
        assert_eq!("on".parse::<KubeMode>().unwrap(), KubeMode::On);
        assert_eq!("off".parse::<KubeMode>().unwrap(), KubeMode::Off);
        let err = "maybe".parse::<KubeMode>().unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
    }

    #[tokio::test]
    async fn off_never_looks_for_a_cluster() {
        assert!(connect(KubeMode::Off).await.unwrap().is_none());
    }
}
