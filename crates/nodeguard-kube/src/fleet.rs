//! What `nodeguard fleet query` needs from the API server: every Node's own address, each
//! agent's heartbeat Lease (its API port and serving certificate's fingerprint), and a
//! narrow token minted for the responder ServiceAccount.
//!
//! **Addresses come from Nodes only.** Agents write their Leases, so a compromised node could
//! point its Lease anywhere; a Node's `status.addresses` is written by its kubelet and the
//! node controller. Only the port and the certificate fingerprint are read from a Lease: a
//! hostile Lease can point its own node's address at another port of that node, or make its
//! own node unreachable, nothing else.
//!
//! **Tokens are minted, never forwarded.** [`mint_token`] asks TokenRequest for a token of
//! the responder ServiceAccount with audience [`FLEET_AUDIENCE`] and the shortest lifetime
//! the API server allows (600 s), so what reaches a thousand agents is worthless at the API
//! server and soon everywhere else. The caller's RBAC decides whether it may mint one
//! (`create` on `serviceaccounts/token` for that ServiceAccount).
//!
//! Lists are read in pages of [`PAGE`] and only the few fields used are kept, so a cluster's
//! Node objects (images, conditions: kilobytes each) never sit in memory all at once.

use crate::audiences::FLEET_AUDIENCE;
use crate::Error;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::Api;
use std::collections::HashMap;
use std::time::Duration;

/// The heartbeat Lease contract shared with the Lease writer (issue 23): a Lease named
/// `nodeguard-<node>` in the agent's namespace, with these annotations.
pub mod lease_keys {
    /// The Lease of node `N` is `nodeguard-N`.
    pub const NAME_PREFIX: &str = "nodeguard-";
    pub const NODE: &str = "nodeguard.io/node";
    /// The port the agent's API listens on.
    pub const API_PORT: &str = "nodeguard.io/api-port";
    /// `addr:port`, informational only: never dialled.
    pub const API_ENDPOINT: &str = "nodeguard.io/api-endpoint";
    /// Lowercase hex SHA-256 of the DER serving leaf certificate; absent without TLS.
    pub const CERT_SHA256: &str = "nodeguard.io/cert-sha256";
    pub const VERSION: &str = "nodeguard.io/version";
    pub const LAST_SCAN: &str = "nodeguard.io/last-scan";
    pub const FINDINGS: &str = "nodeguard.io/findings";
    pub const INTERVAL_SECONDS: &str = "nodeguard.io/interval-seconds";
}

/// Objects asked for per list call.
pub const PAGE: u32 = 250;

/// The lifetime asked for a minted token: the shortest TokenRequest allows.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// One node and what its agent's Lease says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetNode {
    pub name: String,
    /// The node's own address: InternalIP, else ExternalIP, else Hostname.
    pub address: Option<String>,
    /// `None`: no Lease `nodeguard-<name>` (no agent, or one that never registered).
    pub lease: Option<LeaseFacts>,
}

/// What `nodeguard fleet query` reads from a Lease (bounded, checked).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseFacts {
    /// The API port; `None` when absent or not a port number.
    pub api_port: Option<u16>,
    /// 64 lowercase hex digits; `None` when absent or malformed.
    pub cert_sha256: Option<String>,
}

/// The node's address to dial, from its status only.
pub fn node_address(node: &Node) -> Option<String> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|kind| {
            addresses
                .iter()
                .find(|a| a.type_ == *kind && !a.address.trim().is_empty())
        })
        .map(|a| a.address.trim().to_string())
}

/// Port and fingerprint from a Lease's annotations.
pub fn lease_facts(lease: &Lease) -> LeaseFacts {
    let annotations = lease.metadata.annotations.as_ref();
    let get = |key: &str| annotations.and_then(|a| a.get(key)).map(|v| v.trim());
    LeaseFacts {
        api_port: get(lease_keys::API_PORT)
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0),
        cert_sha256: get(lease_keys::CERT_SHA256)
            .map(|f| f.to_ascii_lowercase())
            .filter(|f| f.len() == 64 && f.bytes().all(|b| b.is_ascii_hexdigit())),
    }
}

/// Every Node with its agent's Lease (from `namespace`), in name order.
pub async fn fleet_nodes(client: &kube::Client, namespace: &str) -> Result<Vec<FleetNode>, Error> {
    let mut leases: HashMap<String, LeaseFacts> = HashMap::new();
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = lease_api
            .list(&params)
            .await
            .map_err(|source| Error::Fleet {
                what: format!("list leases in namespace {namespace}"),
                source: Box::new(source),
            })?;
        for lease in &page.items {
            if let Some(node) = lease
                .metadata
                .name
                .as_deref()
                .and_then(|n| n.strip_prefix(lease_keys::NAME_PREFIX))
            {
                leases.insert(node.to_string(), lease_facts(lease));
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let node_api: Api<Node> = Api::all(client.clone());
    let mut nodes = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = node_api
            .list(&params)
            .await
            .map_err(|source| Error::Fleet {
                what: "list nodes".to_string(),
                source: Box::new(source),
            })?;
        for node in &page.items {
            let Some(name) = node.metadata.name.clone() else {
                continue;
            };
            nodes.push(FleetNode {
                address: node_address(node),
                lease: leases.remove(&name),
                name,
            });
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

/// A token for `service_account` in `namespace`, audience [`FLEET_AUDIENCE`], valid for
/// [`TOKEN_LIFETIME`].
pub async fn mint_token(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
) -> Result<String, Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![FLEET_AUDIENCE.to_string()]),
            expiration_seconds: Some(TOKEN_LIFETIME.as_secs() as i64),
            ..Default::default()
        }),
        ..Default::default()
    };
    let what =
        || format!("mint a token for serviceaccount {namespace}/{service_account} (TokenRequest)");
    let answer = api
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .map_err(|source| Error::Fleet {
            what: what(),
            source: Box::new(source),
        })?;
    answer
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty() && t.len() <= nodeguard_model::MAX_TOKEN_BYTES)
        .ok_or_else(|| Error::FleetAnswer {
            what: what(),
            reason: "the answer holds no usable token".to_string(),
        })
}

/// A client from the caller's kubeconfig (`KUBECONFIG`, `~/.kube/config`, else in-cluster).
pub async fn caller_client() -> Result<kube::Client, Error> {
    match crate::connect(crate::KubeMode::On).await? {
        Some(client) => Ok(client),
        None => Err(Error::FleetAnswer {
            what: "find a cluster".to_string(),
            reason: "no Kubernetes configuration".to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(addresses: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {"addresses": addresses}
        }))
        .unwrap()
    }

    #[test]
    fn the_internal_ip_is_dialled_before_external_ip_and_hostname() {
        let all = json!([
            {"type": "Hostname", "address": "n1.example"},
            {"type": "ExternalIP", "address": "203.0.113.7"},
            {"type": "InternalIP", "address": "10.0.0.7"}
        ]);
        assert_eq!(node_address(&node(all)).as_deref(), Some("10.0.0.7"));
        let external = json!([
            {"type": "Hostname", "address": "n1.example"},
            {"type": "ExternalIP", "address": "203.0.113.7"}
        ]);
        assert_eq!(
            node_address(&node(external)).as_deref(),
            Some("203.0.113.7")
        );
        let host =
            json!([{"type": "InternalIP", "address": " "}, {"type": "Hostname", "address": "n1"}]);
        assert_eq!(node_address(&node(host)).as_deref(), Some("n1"));
        assert_eq!(node_address(&node(json!([]))), None);
    }

    #[test]
    fn lease_annotations_are_checked_before_use() {
        let lease = |annotations: serde_json::Value| -> Lease {
            serde_json::from_value(
                json!({"metadata": {"name": "nodeguard-n1", "annotations": annotations}}),
            )
            .unwrap()
        };
        let fp = "AB".repeat(32);
        let good = lease(json!({
            (lease_keys::API_PORT): "9717",
            (lease_keys::CERT_SHA256): fp,
            (lease_keys::API_ENDPOINT): "198.51.100.1:1",
        }));
        assert_eq!(
            lease_facts(&good),
            LeaseFacts {
                api_port: Some(9717),
                cert_sha256: Some("ab".repeat(32)),
            }
        );
        let bad = lease(json!({
            (lease_keys::API_PORT): "0",
            (lease_keys::CERT_SHA256): "AB:CD",
        }));
        assert_eq!(lease_facts(&bad), LeaseFacts::default());
        let bad = lease(
            json!({(lease_keys::API_PORT): "70000", (lease_keys::CERT_SHA256): "zz".repeat(32)}),
        );
        assert_eq!(lease_facts(&bad), LeaseFacts::default());
    }
}
