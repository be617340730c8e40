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
//! `--max-answer-mib`. An answer is read as it arrives: its items are cut out of the bytes
//! ([`super::items`]), rendered into lines in the agent's own task and handed to the printer
//! in batches of about [`BATCH_BYTES`] through a channel of `--concurrency` places, so memory
//! follows the concurrency (one item and one batch per agent), not the answers' size or the
//! fleet's. Time spent waiting for a place (stdout read slowly, `| less`) is not counted
//! against an agent's `--timeout`. What is kept per node is its name and, for the ones that
//! fail, a reason line.

use super::items::{ItemSplitter, ItemsError};
use super::rows::{Batch, Kind, NodeLead, Printer, Render, Unanswered};
use super::EXIT_INCOMPLETE;
use crate::cli::{FleetQueryArgs, FleetWhat};
use anyhow::{Context, Result};
use nodeguard_api::fleet_client::{open_from_agent, AgentCall, AgentFailure, AgentTrust};
use nodeguard_kube::fleet::{fleet_nodes, mint_token, FleetNode};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// The request every agent gets: kind and `/v1/…?filters` (the filters of `nodeguard
/// query`, checked once here, not on every node).
pub fn request(what: FleetWhat) -> Result<(Kind, String)> {
    Ok(match what {
        FleetWhat::Findings(filters) => {
            let query = crate::query::findings_query(filters)?;
            (
                Kind::Findings,
                path("/v1/findings", &query.to_query_string()),
            )
        }
        FleetWhat::Processes(filters) => {
            let query = crate::query::processes_query(filters)?;
            (
                Kind::Processes,
                path("/v1/processes", &query.to_query_string()),
            )
        }
        FleetWhat::Containers(filters) => {
            let query = crate::query::containers_query(filters);
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

/// Rendered lines are handed to the printer in batches of about this size.
pub const BATCH_BYTES: usize = 64 * 1024;

/// What an agent's task tells the printer.
enum Message {
    /// Lines of one node's answer, in order.
    Rows(Batch),
    /// That node is done.
    Done(Outcome),
}

/// How one node ended.
struct Outcome {
    index: usize,
    /// The agent's slot, held until its end is printed: at most `--concurrency` agents are
    /// alive at once, waiting ones included.
    _slot: tokio::sync::OwnedSemaphorePermit,
    result: Result<(), Unanswered>,
}

/// One agent's question, as its task needs it.
struct Ask {
    node: String,
    call: AgentCall,
    address: String,
    port: u16,
    timeout: std::time::Duration,
    kind: Kind,
    render: Render,
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
    let render = printer.render();
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

    let (sender, mut receiver) = mpsc::channel::<Message>(usize::from(args.concurrency));
    let slots = Arc::new(Semaphore::new(usize::from(args.concurrency)));
    let mut pending: Vec<Option<String>> = Vec::with_capacity(dials.len());
    let per_agent = args.timeout;
    let handshake_timeout = args.connect_timeout.min(args.timeout);
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
                let ask = Ask {
                    node,
                    call: AgentCall {
                        // Set once the address is resolved.
                        addr: SocketAddr::from(([0, 0, 0, 0], port)),
                        trust,
                        path_and_query: path_and_query.clone(),
                        max_body,
                        handshake_timeout,
                    },
                    address,
                    port,
                    timeout: per_agent,
                    kind,
                    render,
                };
                tokio::spawn(async move {
                    let result = ask.run(&token, &sender).await;
                    let _ = sender
                        .send(Message::Done(Outcome {
                            index,
                            _slot: permit,
                            result,
                        }))
                        .await;
                });
            }
        })
    };

    let deadline = Instant::now() + args.deadline;
    let mut left = pending.len();
    while left > 0 {
        let message = match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(message)) => message,
            Ok(None) | Err(_) => break,
        };
        let outcome = match message {
            Message::Rows(batch) => {
                printer.rows(&batch)?;
                continue;
            }
            Message::Done(outcome) => outcome,
        };
        if let Some(slot) = pending.get_mut(outcome.index) {
            *slot = None;
        }
        left -= 1;
        match outcome.result {
            Ok(()) => printer.answered()?,
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

impl Ask {
    /// Asks the agent and sends its rows as they are read; within `timeout`, not counting
    /// the time spent waiting for the printer.
    async fn run(&self, token: &str, out: &mpsc::Sender<Message>) -> Result<(), Unanswered> {
        let mut deadline = Instant::now() + self.timeout;
        let mut rows_sent = 0usize;
        let unanswered = |reason: &'static str, message: String| Unanswered {
            node: self.node.clone(),
            reason,
            message,
        };
        let failed = |failure: AgentFailure, rows: usize| {
            let mut message = failure.to_string();
            if rows > 0 {
                message.push_str(&format!(" (after {rows} rows were printed)"));
            }
            unanswered(failure.reason(), message)
        };
        let timed_out = |rows: usize| failed_timeout(&self.node, self.timeout, rows);
        let opened = tokio::time::timeout_at(deadline, async {
            let mut call = self.call.clone();
            call.addr = resolve(&self.address, self.port).await?;
            open_from_agent(&call, token).await
        })
        .await;
        let mut answer = match opened {
            Ok(Ok(answer)) => answer,
            Ok(Err(failure)) => return Err(failed(failure, 0)),
            Err(_) => return Err(timed_out(0)),
        };
        let lead: NodeLead = self.render.lead(&self.node);
        let mut splitter = ItemSplitter::new(self.kind.list_key());
        let mut batch = Batch::default();
        loop {
            let chunk = match tokio::time::timeout_at(deadline, answer.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(failure)) => return Err(failed(failure, rows_sent)),
                Err(_) => return Err(timed_out(rows_sent)),
            };
            splitter
                .feed(&chunk, |item| self.render.item(&lead, item, &mut batch))
                .map_err(|e: ItemsError| failed(AgentFailure::Answer(e.to_string()), rows_sent))?;
            if batch.lines.len() >= BATCH_BYTES {
                let waited = Instant::now();
                rows_sent += batch.rows;
                if out
                    .send(Message::Rows(std::mem::take(&mut batch)))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
                deadline += waited.elapsed();
            }
        }
        drop(answer);
        splitter
            .finish()
            .map_err(|e| failed(AgentFailure::Answer(e.to_string()), rows_sent))?;
        if batch.rows > 0 {
            let _ = out.send(Message::Rows(batch)).await;
        }
        Ok(())
    }
}

fn failed_timeout(node: &str, timeout: std::time::Duration, rows: usize) -> Unanswered {
    let mut message = format!("no answer within {timeout:?}");
    if rows > 0 {
        message =
            format!("answer not complete within {timeout:?} (after {rows} rows were printed)");
    }
    Unanswered {
        node: node.to_string(),
        reason: "timeout",
        message,
    }
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
    use crate::cli::ProcessesFilters;
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
        let (kind, path) = request(FleetWhat::Processes(ProcessesFilters {
            sha256: Some("AB".repeat(32)),
            ..ProcessesFilters::default()
        }))
        .unwrap();
        assert_eq!(kind, Kind::Processes);
        assert_eq!(path, format!("/v1/processes?sha256={}", "AB".repeat(32)));
        assert!(request(FleetWhat::Processes(ProcessesFilters {
            sha256: Some("abc".into()),
            ..ProcessesFilters::default()
        }))
        .is_err());
        let (_, path) = request(FleetWhat::Containers(Default::default())).unwrap();
        assert_eq!(path, "/v1/containers");
    }
}
