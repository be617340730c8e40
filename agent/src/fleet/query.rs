//! `nodeguard fleet query findings|processes|containers`: one question to every node's
//! agent, answered with a NODE column, then every node that did not answer and why.
//!
//! The order matters for what leaks where: list Nodes and Leases with the caller's
//! kubeconfig, mint one 10-minute token for the responder ServiceAccount with audience
//! `nodeguard` (the caller's own credentials never leave for a node), then dial each Node's
//! own address (never one from a Lease) and send that token only after the agent's
//! certificate matched its Lease's fingerprint (or `--ca-file`). A node with no Lease, no
//! address or no fingerprint is listed, not dialled.
//!
//! Cost: at most `--concurrency` agents are in flight, each bounded by `--timeout` and
//! `--max-answer-mib`; an answer is printed as it arrives and dropped, so memory follows the
//! concurrency, not the fleet. What is kept per node is its name and, for the ones that fail,
//! a reason line.

use super::rows::{Kind, Printer, Unanswered};
use super::EXIT_INCOMPLETE;
use crate::cli::{FleetQueryArgs, FleetWhat};
use anyhow::{Context, Result};
use nodeguard_api::fleet_client::{get_from_agent, AgentCall, AgentFailure, AgentTrust};
use nodeguard_api::{ContainersQuery, ProcessesQuery};
use nodeguard_kube::fleet::{fleet_nodes, mint_token, FleetNode};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

/// The request every agent gets: kind and `/v1/…?filters`.
pub fn request(what: FleetWhat) -> Result<(Kind, String)> {
    Ok(match what {
        FleetWhat::Findings {
            namespace,
            pod,
            container,
            kind,
            severity,
            since,
        } => {
            let query =
                crate::query::findings_query(namespace, pod, container, kind, severity, since)?;
            (
                Kind::Findings,
                path("/v1/findings", &query.to_query_string()),
            )
        }
        FleetWhat::Processes {
            container,
            sha256,
            pid,
        } => {
            let query = ProcessesQuery {
                container,
                sha256,
                pid,
                ..ProcessesQuery::default()
            };
            // Checked here as the agent would, so a typo fails once, not on every node.
            ProcessesQuery::parse(Some(&query.to_query_string())).map_err(anyhow::Error::from)?;
            (
                Kind::Processes,
                path("/v1/processes", &query.to_query_string()),
            )
        }
        FleetWhat::Containers { namespace, pod } => {
            let query = ContainersQuery {
                namespace,
                pod,
                container: None,
            };
            (
                Kind::Containers,
                path("/v1/containers", &query.to_query_string()),
            )
        }
    })
}

fn path(endpoint: &str, query: &str) -> String {
    if query.is_empty() {
        endpoint.to_string()
    } else {
        format!("{endpoint}?{query}")
    }
}

/// How one node is asked, or why it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Dial {
        node: String,
        /// The Node's own address (an IP or a host name to resolve).
        address: String,
        port: u16,
        trust: PlannedTrust,
    },
    Skip(Unanswered),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedTrust {
    Pinned(String),
    CaFile,
}

/// The plan for one node: its address from the Node, port and fingerprint from its Lease.
pub fn plan(node: &FleetNode, default_port: u16, have_ca: bool) -> Plan {
    let skip = |reason: &'static str, message: &str| {
        Plan::Skip(Unanswered {
            node: node.name.clone(),
            reason,
            message: message.to_string(),
        })
    };
    let Some(lease) = &node.lease else {
        return skip(
            "no-lease",
            "no agent Lease for this node (agent missing or never registered)",
        );
    };
    let Some(address) = &node.address else {
        return skip("no-address", "the Node has no address in its status");
    };
    let trust = match (&lease.cert_sha256, have_ca) {
        (_, true) => PlannedTrust::CaFile,
        (Some(pin), false) => PlannedTrust::Pinned(pin.clone()),
        (None, false) => {
            return skip(
                "no-fingerprint",
                "the Lease names no certificate fingerprint (agent without TLS?) and no --ca-file was given: no token is sent to an unverified agent",
            )
        }
    };
    Plan::Dial {
        node: node.name.clone(),
        address: address.clone(),
        port: lease.api_port.unwrap_or(default_port),
        trust,
    }
}

/// What one dial gave.
struct Outcome {
    index: usize,
    node: String,
    /// The agent's slot, held until its answer is printed: at most `--concurrency` answers
    /// are alive at once, waiting ones included.
    _slot: tokio::sync::OwnedSemaphorePermit,
    result: Result<Vec<u8>, Unanswered>,
}

pub async fn run(args: FleetQueryArgs) -> Result<ExitCode> {
    let (kind, path_and_query) = request(args.what)?;
    let ca = match &args.ca_file {
        Some(file) => {
            match nodeguard_api::client::ClientTls::from_ca_file(file).context("--ca-file")? {
                nodeguard_api::client::ClientTls::Trust(ders) => Some(AgentTrust::roots(&ders)?),
                _ => None,
            }
        }
        None => None,
    };
    let client = nodeguard_kube::fleet::client(args.kubeconfig.as_deref())
        .await
        .context("cannot build a Kubernetes client")?;
    let nodes = fleet_nodes(&client, &args.namespace).await?;
    let mut printer = Printer::new(kind, args.output, nodes.len());
    let mut dials = Vec::new();
    for node in &nodes {
        match plan(node, args.port, ca.is_some()) {
            Plan::Skip(why) => printer.unanswered(why)?,
            dial => dials.push(dial),
        }
    }
    drop(nodes);
    // Minted only when there is someone to ask, after everything else was read.
    let token: Arc<str> = if dials.is_empty() {
        Arc::from("")
    } else {
        Arc::from(mint_token(&client, &args.namespace, &args.service_account).await?)
    };
    drop(client);

    let (sender, mut receiver) = mpsc::channel::<Outcome>(usize::from(args.concurrency));
    let slots = Arc::new(Semaphore::new(usize::from(args.concurrency)));
    let mut pending: Vec<Option<String>> = Vec::with_capacity(dials.len());
    let per_agent = args.timeout;
    let max_body = args.max_answer_mib.saturating_mul(1024 * 1024);
    let dispatcher = {
        let dials: Vec<Plan> = dials;
        for plan in &dials {
            if let Plan::Dial { node, .. } = plan {
                pending.push(Some(node.clone()));
            }
        }
        let ca = ca.clone();
        tokio::spawn(async move {
            for (index, plan) in dials.into_iter().enumerate() {
                let Plan::Dial {
                    node,
                    address,
                    port,
                    trust,
                } = plan
                else {
                    continue;
                };
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let trust = match trust {
                    PlannedTrust::Pinned(pin) => AgentTrust::Pinned(pin),
                    PlannedTrust::CaFile => match &ca {
                        Some(ca) => ca.clone(),
                        None => continue,
                    },
                };
                let sender = sender.clone();
                let token = token.clone();
                let path_and_query = path_and_query.clone();
                tokio::spawn(async move {
                    let result = tokio::time::timeout(per_agent, async {
                        let addr = resolve(&address, port).await?;
                        let call = AgentCall {
                            addr,
                            trust,
                            path_and_query,
                            max_body,
                        };
                        get_from_agent(&call, &token).await
                    })
                    .await;
                    let result = match result {
                        Ok(Ok(body)) => Ok(body),
                        Ok(Err(failure)) => Err(Unanswered {
                            node: node.clone(),
                            reason: failure.reason(),
                            message: failure.to_string(),
                        }),
                        Err(_) => Err(Unanswered {
                            node: node.clone(),
                            reason: "timeout",
                            message: format!("no answer within {per_agent:?}"),
                        }),
                    };
                    let _ = sender
                        .send(Outcome {
                            index,
                            node,
                            _slot: permit,
                            result,
                        })
                        .await;
                });
            }
        })
    };

    let deadline = tokio::time::Instant::now() + args.deadline;
    let mut left = pending.len();
    while left > 0 {
        let outcome = match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(outcome)) => outcome,
            Ok(None) | Err(_) => break,
        };
        if let Some(slot) = pending.get_mut(outcome.index) {
            *slot = None;
        }
        left -= 1;
        match outcome.result {
            Ok(body) => printer.answer(&outcome.node, &body)?,
            Err(why) => printer.unanswered(why)?,
        }
    }
    dispatcher.abort();
    for node in pending.into_iter().flatten() {
        printer.unanswered(Unanswered {
            node,
            reason: "deadline",
            message: format!(
                "not answered within the overall --deadline {:?}",
                args.deadline
            ),
        })?;
    }
    let complete = printer.finish()?;
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INCOMPLETE)
    })
}

/// The socket address of a Node's address: an IP as it is, a host name resolved.
async fn resolve(address: &str, port: u16) -> Result<SocketAddr, AgentFailure> {
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((address, port))
        .await
        .map_err(|e| AgentFailure::Refused(format!("cannot resolve {address}: {e}")))?
        .next()
        .ok_or_else(|| AgentFailure::Refused(format!("{address} resolves to nothing")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeguard_kube::fleet::LeaseFacts;

    fn node(address: Option<&str>, lease: Option<LeaseFacts>) -> FleetNode {
        FleetNode {
            name: "n1".into(),
            address: address.map(str::to_string),
            lease,
        }
    }

    #[test]
    fn only_a_node_with_a_lease_an_address_and_a_way_to_check_its_agent_is_dialled() {
        let pin = "ab".repeat(32);
        let lease = LeaseFacts {
            api_port: Some(19717),
            cert_sha256: Some(pin.clone()),
        };
        assert_eq!(
            plan(&node(Some("10.0.0.7"), Some(lease.clone())), 9717, false),
            Plan::Dial {
                node: "n1".into(),
                address: "10.0.0.7".into(),
                port: 19717,
                trust: PlannedTrust::Pinned(pin),
            }
        );
        let reason = |p: Plan| match p {
            Plan::Skip(u) => u.reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason(plan(&node(Some("10.0.0.7"), None), 9717, false)),
            "no-lease"
        );
        assert_eq!(
            reason(plan(&node(None, Some(lease)), 9717, false)),
            "no-address"
        );
        let plain = LeaseFacts {
            api_port: None,
            cert_sha256: None,
        };
        assert_eq!(
            reason(plan(
                &node(Some("10.0.0.7"), Some(plain.clone())),
                9717,
                false
            )),
            "no-fingerprint"
        );
        // With --ca-file the CA decides, and the default port stands in for a missing one.
        assert_eq!(
            plan(&node(Some("10.0.0.7"), Some(plain)), 9717, true),
            Plan::Dial {
                node: "n1".into(),
                address: "10.0.0.7".into(),
                port: 9717,
                trust: PlannedTrust::CaFile,
            }
        );
    }

    #[test]
    fn the_filters_become_the_agents_query_string_and_bad_ones_fail_once() {
        let (kind, path) = request(FleetWhat::Processes {
            container: None,
            sha256: Some("AB".repeat(32)),
            pid: None,
        })
        .unwrap();
        assert_eq!(kind, Kind::Processes);
        assert_eq!(path, format!("/v1/processes?sha256={}", "AB".repeat(32)));
        assert!(request(FleetWhat::Processes {
            container: None,
            sha256: Some("abc".into()),
            pid: None,
        })
        .is_err());
        let (_, path) = request(FleetWhat::Containers {
            namespace: None,
            pod: None,
        })
        .unwrap();
        assert_eq!(path, "/v1/containers");
    }
}
