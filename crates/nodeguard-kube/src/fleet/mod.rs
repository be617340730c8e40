//! The responder's side of the fleet: questions about every node, asked with the caller's
//! own kubeconfig and RBAC (list nodes; list leases in the agents' namespace; for a query,
//! create a token for the responder ServiceAccount).
//!
//! - `cluster.rs`: the Nodes (their own addresses) and the agents' Leases, listed in pages
//!   and cut down to small views at once. Both commands read the cluster only through it.
//! - `status.rs`: `nodeguard fleet status`, decided purely from those views.
//! - `query.rs`: `nodeguard fleet query`: each Node joined with its Lease's port and
//!   certificate fingerprint, and the narrow token the agents are asked with.

mod cluster;
mod query;
mod status;

pub use cluster::{
    lease_view, list_leases, list_nodes, node_address, node_view, LeaseView, NodeView,
};
pub use query::{fleet_nodes, join, mint_token, FleetNode, LeaseFacts, TOKEN_LIFETIME};
pub use status::{classify, Coverage, FleetStatus, NodeStatus, Summary};

use crate::Error;

/// Lists the Nodes and the agents' Leases in `namespace` and classifies them now.
pub async fn status(
    client: &kube::Client,
    namespace: &str,
    cli_version: &str,
) -> Result<FleetStatus, Error> {
    let (nodes, leases) = futures::try_join!(list_nodes(client), list_leases(client, namespace))?;
    Ok(classify(
        namespace,
        &nodes,
        leases,
        cluster::now(),
        cli_version,
    ))
}

/// A client from `kubeconfig` (its current context), or as kube infers one (`KUBECONFIG`,
/// `~/.kube/config`, the in-cluster service account) when `None`.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, Error> {
    let mut config = match kubeconfig {
        Some(path) => {
            let file =
                kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                    path: path.to_path_buf(),
                    source: Box::new(source),
                })?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: path.to_path_buf(),
                    source: Box::new(source),
                })?
        }
        None => kube::Config::infer().await.map_err(Error::NoConfig)?,
    };
    if config.read_timeout.is_none() {
        config.read_timeout = Some(crate::READ_TIMEOUT);
    }
    let cluster_url = config.cluster_url.to_string();
    kube::Client::try_from(config).map_err(|source| Error::Client {
        cluster_url,
        source: Box::new(source),
    })
}
