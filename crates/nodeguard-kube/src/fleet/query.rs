//! What `nodeguard fleet query` needs beyond [`super::list_nodes`] and [`super::list_leases`]:
//! each node joined with the two facts its agent's Lease gives (API port, serving
//! certificate's fingerprint), and a narrow token minted for the responder ServiceAccount.
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

use super::{LeaseView, NodeView};
use crate::audiences::FLEET_AUDIENCE;
use crate::Error;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::Api;
use nodeguard_model::fleet::lease_name;
use std::collections::HashMap;
use std::time::Duration;

/// The lifetime asked for a minted token: the shortest TokenRequest allows.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// One node and what its agent's Lease says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetNode {
    pub name: String,
    /// The node's own address: InternalIP, else ExternalIP, else Hostname.
    pub address: Option<String>,
    /// `None`: no Lease [`lease_name`]`(name)` (no agent, or one that never registered).
    pub lease: Option<LeaseFacts>,
}

/// What `nodeguard fleet query` reads from a Lease (checked by
/// [`nodeguard_model::fleet::HeartbeatClaims`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseFacts {
    /// The API port; `None` when absent or not a port number.
    pub api_port: Option<u16>,
    /// 64 lowercase hex digits; `None` when absent or malformed.
    pub cert_sha256: Option<String>,
}

impl From<LeaseView> for LeaseFacts {
    fn from(view: LeaseView) -> LeaseFacts {
        LeaseFacts {
            api_port: view.claims.api_port,
            cert_sha256: view.claims.cert_sha256,
        }
    }
}

/// Every Node with its agent's Lease, in name order. A Lease is matched by its name
/// ([`lease_name`] of the Node), never by what its annotations claim.
pub fn join(nodes: Vec<NodeView>, leases: Vec<LeaseView>) -> Vec<FleetNode> {
    let mut by_name: HashMap<String, LeaseView> =
        leases.into_iter().map(|l| (l.name.clone(), l)).collect();
    let mut out: Vec<FleetNode> = nodes
        .into_iter()
        .map(|node| FleetNode {
            lease: by_name
                .remove(&lease_name(&node.name))
                .map(LeaseFacts::from),
            address: node.address,
            name: node.name,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Lists the Nodes and the agents' Leases in `namespace` and joins them.
pub async fn fleet_nodes(client: &kube::Client, namespace: &str) -> Result<Vec<FleetNode>, Error> {
    let (nodes, leases) = futures::try_join!(
        super::list_nodes(client),
        super::list_leases(client, namespace)
    )?;
    Ok(join(nodes, leases))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::lease_view;
    use k8s_openapi::api::coordination::v1::Lease;
    use nodeguard_model::fleet::{
        ANNOTATION_API_ENDPOINT, ANNOTATION_API_PORT, ANNOTATION_CERT_SHA256,
    };
    use serde_json::json;

    fn lease(name: &str, annotations: serde_json::Value) -> LeaseView {
        let lease: Lease =
            serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}}))
                .unwrap();
        lease_view(&lease).unwrap()
    }

    fn node(name: &str) -> NodeView {
        NodeView {
            name: name.into(),
            address: Some(format!("10.0.0.{}", name.len())),
        }
    }

    #[test]
    fn lease_annotations_are_checked_before_use() {
        let good = lease(
            "nodeguard-n1",
            json!({
                (ANNOTATION_API_PORT): "9717",
                (ANNOTATION_CERT_SHA256): "AB".repeat(32),
                (ANNOTATION_API_ENDPOINT): "198.51.100.1:1",
            }),
        );
        assert_eq!(
            LeaseFacts::from(good),
            LeaseFacts {
                api_port: Some(9717),
                cert_sha256: Some("ab".repeat(32)),
            }
        );
        let bad = lease(
            "nodeguard-n1",
            json!({(ANNOTATION_API_PORT): "0", (ANNOTATION_CERT_SHA256): "AB:CD"}),
        );
        assert_eq!(LeaseFacts::from(bad), LeaseFacts::default());
        let bad = lease(
            "nodeguard-n1",
            json!({(ANNOTATION_API_PORT): "70000", (ANNOTATION_CERT_SHA256): "zz".repeat(32)}),
        );
        assert_eq!(LeaseFacts::from(bad), LeaseFacts::default());
    }

    #[test]
    fn leases_join_their_nodes_by_name_only_and_nodes_come_out_in_name_order() {
        let long = "x".repeat(250);
        let joined = join(
            vec![node("b"), node(&long), node("a")],
            vec![
                // Claims another node in its annotations: the name decides.
                lease(
                    "nodeguard-a",
                    json!({"nodeguard.io/node": "b", (ANNOTATION_API_PORT): "1"}),
                ),
                lease(&lease_name(&long), json!({(ANNOTATION_API_PORT): "2"})),
                lease("nodeguard-gone", json!({(ANNOTATION_API_PORT): "3"})),
            ],
        );
        let names: Vec<_> = joined.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b", long.as_str()]);
        assert_eq!(joined[0].lease.as_ref().unwrap().api_port, Some(1));
        assert_eq!(joined[1].lease, None);
        assert_eq!(joined[2].lease.as_ref().unwrap().api_port, Some(2));
        assert_eq!(joined[0].address.as_deref(), Some("10.0.0.1"));
    }
}
