use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown --kube mode {0:?} (expected auto, on or off)")]
    UnknownMode(String),
    #[error("--kube on, but no Kubernetes configuration was found (no in-cluster service account, no KUBECONFIG or ~/.kube/config): {0}")]
    NoConfig(#[source] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client for {cluster_url}: {source}")]
    Client {
        cluster_url: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("reading the announced-findings file {path}: {source}")]
    StateRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the announced-findings file {path} is not valid: {source}")]
    StateParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing the announced-findings file {path}: {source}")]
    StateWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot list {what}: {source}")]
    List {
        what: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("too many {what} to list (over a million)")]
    TooMany { what: &'static str },
    #[error("cannot use the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: Box<kube::config::KubeconfigError>,
    },
    #[error("cannot {what}: {source}")]
    Fleet {
        what: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("cannot {what}: {reason}")]
    FleetAnswer { what: String, reason: String },
}
