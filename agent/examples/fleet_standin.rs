//! Many stand-in agents for `bench/fleet_query_bench.sh`: each listens on its own loopback
//! address (127.1.x.y, one port for all) with its own self-signed certificate, through the
//! agent's own TLS server (`nodeguard_api::serve_tls`), and answers `GET /v1/processes` with
//! the same body: a real agent's answer captured by the bench. One in 40 accepts connections
//! and never answers (blackholed), one in 40 answers after `--slow` (slow). Tokens are not
//! checked (the real agents' check is measured by tests/api_auth.rs).
//!
//! It writes the Nodes and Leases the API server needs (a `v1/List` each) and then serves
//! until killed:
//!
//!     fleet_standin --agents 1000 --port 19717 --body processes.json \
//!         --namespace nodeguard --nodes nodes.json --leases leases.json

use axum::routing::get;
use axum::Router;
use nodeguard_api::tls::{CertSource, ServerTls, TlsSettings, TlsVersion};
use nodeguard_model::fleet;
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

struct Args {
    agents: usize,
    port: u16,
    body: String,
    namespace: String,
    nodes: String,
    leases: String,
    slow: Duration,
}

fn args() -> Args {
    let mut a = Args {
        agents: 1000,
        port: 19717,
        body: String::new(),
        namespace: "nodeguard".into(),
        nodes: "nodes.json".into(),
        leases: "leases.json".into(),
        slow: Duration::from_secs(3),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--agents" => a.agents = value.parse().expect("--agents N"),
            "--port" => a.port = value.parse().expect("--port P"),
            "--body" => a.body = value,
            "--namespace" => a.namespace = value,
            "--nodes" => a.nodes = value,
            "--leases" => a.leases = value,
            "--slow" => a.slow = Duration::from_millis(value.parse().expect("--slow MS")),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// The i-th agent's address: 127.1.0.1, …, 127.1.0.250, 127.1.1.1, …
fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8)
}

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Answers,
    Blackholed,
    Slow,
}

fn behaviour(i: usize) -> Behaviour {
    match i % 40 {
        7 => Behaviour::Blackholed,
        27 => Behaviour::Slow,
        _ => Behaviour::Answers,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    // Served as the same bytes every time (a reference count, no copy): the bench measures
    // the client, not the stand-in rendering its answer.
    let body = axum::body::Bytes::from(std::fs::read(&args.body).expect("--body FILE"));
    let mut nodes = Vec::new();
    let mut leases = Vec::new();
    for i in 0..args.agents {
        let ip = address(i);
        let name = format!("standin-{i:04}");
        let addr = SocketAddr::new(IpAddr::V4(ip), args.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let tls = ServerTls::new(TlsSettings {
            source: CertSource::SelfSigned {
                dns_names: vec![name.clone()],
                ips: vec![IpAddr::V4(ip)],
            },
            min_version: TlsVersion::Tls12,
            reload_interval: Duration::from_secs(3600),
            served_cert_file: None,
        })
        .expect("a self-signed certificate");
        let fingerprint = tls
            .served()
            .fingerprint
            .replace(':', "")
            .to_ascii_lowercase();
        nodes.push(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"nodeguard-bench": "standin"}},
            "status": {"addresses": [{"type": "InternalIP", "address": ip.to_string()}]}
        }));
        leases.push(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": fleet::lease_name(&name), "namespace": args.namespace,
                "annotations": {
                    (fleet::ANNOTATION_NODE): name,
                    (fleet::ANNOTATION_API_PORT): args.port.to_string(),
                    (fleet::ANNOTATION_CERT_SHA256): fingerprint,
                }},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 90}
        }));
        match behaviour(i) {
            Behaviour::Blackholed => {
                tokio::spawn(async move {
                    let mut held = Vec::new();
                    while let Ok((stream, _)) = listener.accept().await {
                        held.push(stream);
                    }
                });
            }
            kind => {
                let body = body.clone();
                let delay = if kind == Behaviour::Slow {
                    args.slow
                } else {
                    Duration::ZERO
                };
                let router = Router::new().route(
                    "/v1/processes",
                    get(move || {
                        let body = body.clone();
                        async move {
                            tokio::time::sleep(delay).await;
                            (
                                [(axum::http::header::CONTENT_TYPE, "application/json")],
                                body,
                            )
                        }
                    }),
                );
                let serving = nodeguard_api::serve_tls(
                    listener,
                    router,
                    std::future::pending(),
                    nodeguard_api::ServeLimits::default(),
                    &tls,
                );
                tokio::spawn(serving);
            }
        }
    }
    let list = |items| json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    std::fs::write(&args.nodes, list(nodes)).expect("write --nodes");
    std::fs::write(&args.leases, list(leases)).expect("write --leases");
    println!("serving {} stand-in agents", args.agents);
    std::future::pending::<()>().await;
}
