//! What `nodeguard fleet` reads from the API server with the caller's credentials: the
//! Nodes (each one's own address, which no agent can write) and the agents' Leases in one
//! namespace. Both are listed in pages, each object turned into a small view at once, so
//! memory follows the number of nodes, not the size of their objects (a Node carries its
//! image list).

use crate::Error;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::Api;
use nodeguard_model::fleet::{HeartbeatClaims, LEASE_NAME_PREFIX};
use nodeguard_model::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Objects per list page.
const PAGE: u32 = 500;
/// Pages per list, at most: 2,000 pages of 500 is a million objects.
const MAX_PAGES: usize = 2_000;

/// A Node as the fleet commands need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// The address to dial: `status.addresses` InternalIP, else ExternalIP, else Hostname.
    pub address: Option<String>,
}

/// An agent's Lease as the fleet commands need it. Everything but the name was written by
/// the agent (or whoever holds `update` on leases in the namespace): claims, not facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub name: String,
    pub holder: Option<String>,
    pub renew_time: Option<Timestamp>,
    pub duration_seconds: Option<i32>,
    pub claims: HeartbeatClaims,
}

/// The address a fleet query dials for `node`: InternalIP, else ExternalIP, else Hostname
/// (the first of each kind).
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

pub fn node_view(node: &Node) -> Option<NodeView> {
    Some(NodeView {
        name: node.metadata.name.clone()?,
        address: node_address(node),
    })
}

pub fn lease_view(lease: &Lease) -> Option<LeaseView> {
    let name = lease.metadata.name.clone()?;
    let spec = lease.spec.as_ref();
    let renew_time = spec
        .and_then(|s| s.renew_time.as_ref())
        .and_then(|t| system_time(t.0));
    let empty = Default::default();
    Some(LeaseView {
        name,
        holder: spec.and_then(|s| s.holder_identity.clone()),
        renew_time,
        duration_seconds: spec.and_then(|s| s.lease_duration_seconds),
        claims: HeartbeatClaims::from_annotations(
            lease.metadata.annotations.as_ref().unwrap_or(&empty),
        ),
    })
}

fn system_time(t: k8s_openapi::jiff::Timestamp) -> Option<Timestamp> {
    let nanos = t.as_nanosecond();
    if nanos < 0 {
        return None;
    }
    let nanos = u64::try_from(nanos).ok()?;
    Some(Timestamp(UNIX_EPOCH + Duration::from_nanos(nanos)))
}

/// Every Node, in pages.
pub async fn list_nodes(client: &kube::Client) -> Result<Vec<NodeView>, Error> {
    let api: Api<Node> = Api::all(client.clone());
    list_pages(&api, "nodes", node_view).await
}

/// The agents' Leases in `namespace` (names starting `nodeguard-`), in pages.
pub async fn list_leases(client: &kube::Client, namespace: &str) -> Result<Vec<LeaseView>, Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let mut views = list_pages(&api, "leases", lease_view).await?;
    views.retain(|l| l.name.starts_with(LEASE_NAME_PREFIX));
    Ok(views)
}

async fn list_pages<K, V>(
    api: &Api<K>,
    what: &'static str,
    view: impl Fn(&K) -> Option<V>,
) -> Result<Vec<V>, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    for _ in 0..MAX_PAGES {
        let page = api.list(&params).await.map_err(|source| Error::List {
            what,
            source: Box::new(source),
        })?;
        out.extend(page.items.iter().filter_map(&view));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
    Err(Error::TooMany { what })
}

/// Now, for callers that classify.
pub fn now() -> Timestamp {
    Timestamp(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(addresses: serde_json::Value) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "status": {"addresses": addresses},
        }))
        .unwrap()
    }

    #[test]
    fn the_internal_address_wins_then_external_then_hostname() {
        let n = node(serde_json::json!([
            {"type": "Hostname", "address": "n1.example"},
            {"type": "ExternalIP", "address": "203.0.113.5"},
            {"type": "InternalIP", "address": "10.0.0.5"},
        ]));
        assert_eq!(node_address(&n).as_deref(), Some("10.0.0.5"));
        let n = node(serde_json::json!([
            {"type": "Hostname", "address": "n1.example"},
            {"type": "ExternalIP", "address": "203.0.113.5"},
        ]));
        assert_eq!(node_address(&n).as_deref(), Some("203.0.113.5"));
        let n = node(serde_json::json!([{"type": "Hostname", "address": "n1.example"}]));
        assert_eq!(node_address(&n).as_deref(), Some("n1.example"));
        assert_eq!(node_address(&node(serde_json::json!([]))), None);
    }

    #[test]
    fn a_lease_view_reads_spec_and_claims() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "nodeguard-n1", "annotations": {
                "nodeguard.io/version": "0.1.0", "nodeguard.io/api-port": "not a port"}},
            "spec": {"holderIdentity": "pod-1", "leaseDurationSeconds": 90,
                     "renewTime": "2026-12-07T07:00:00.123456Z"},
        }))
        .unwrap();
        let v = lease_view(&lease).unwrap();
        assert_eq!(v.holder.as_deref(), Some("pod-1"));
        assert_eq!(v.duration_seconds, Some(90));
        assert_eq!(
            v.renew_time.unwrap().to_string(),
            "2026-12-07T07:00:00.123Z"
        );
        assert_eq!(v.claims.version.as_deref(), Some("0.1.0"));
        assert_eq!(v.claims.api_port, None);
    }
}
