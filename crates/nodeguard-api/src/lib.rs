//! The HTTP JSON query API of the nodeguard agent, and the client `nodeguard query` uses.
//!
//! Incident responders ask a running agent what it saw in its last complete scan: which
//! findings are open (and since when), which containers run on the node, and where a given
//! executable digest runs. The API is served on the same port as `/metrics`:
//!
//! | path | what |
//! | --- | --- |
//! | `GET /healthz` | 200 while the process serves; 503 when scans stopped completing ([`Freshness`]) |
//! | `GET /readyz` | 503 until the first complete scan, then 200 with the last scan time; 503 when it is stale ([`Freshness`]) |
//! | `GET /metrics` | the metrics text, rendered by the caller's closure |
//! | `GET /v1/report` | the last full [`Report`](nodeguard_model::Report) |
//! | `GET /v1/findings` | open findings with first/last seen, filtered by namespace, pod, container, kind, minimum severity, since |
//! | `GET /v1/containers` | containers with their pod metadata, filtered by namespace, pod, container |
//! | `GET /v1/processes` | processes with their pod metadata, filtered by container (or `host`), sha256, pid, namespace, pod |
//! | `GET /v1/execs` | the history of exec-time observations (each process as read at its exec, its pod, the findings it raised), filtered by since (`10m` or a time), namespace, pod, container; bounded, with what was dropped |
//!
//! `docs/openapi.json` documents every path, parameter and response; the tests validate real
//! responses against it. Errors are JSON `{"error": "...", "status": N}`.
//!
//! The API never blocks a scan and is never blocked by one: the daemon publishes each new
//! [`NodeState`](nodeguard_model::NodeState) on a `tokio::sync::watch` channel and handlers
//! only clone the `Arc` out of it, serializing afterwards. Requests are bounded in time and
//! number ([`RequestLimits`]) and connections in number and age ([`ServeLimits`]), so a slow
//! or hostile client cannot stall the agent.
//!
//! ```no_run
//! # async fn example(
//! #     state: tokio::sync::watch::Receiver<Option<std::sync::Arc<nodeguard_model::NodeState>>>,
//! # ) -> std::io::Result<()> {
//! use std::sync::Arc;
//! let ctx = nodeguard_api::ApiContext {
//!     state,
//!     metrics: Arc::new(|_accept| {
//!         Ok(nodeguard_api::MetricsBody {
//!             text: String::from("# EOF\n"),
//!             content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
//!         })
//!     }),
//!     exec_history: None,
//! };
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:9717").await?;
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! nodeguard_api::serve(listener, nodeguard_api::router(ctx), shutdown).await
//! # }
//! ```

pub mod auth;
pub mod client;
mod error;
pub mod fleet_client;
pub mod query;
mod serve;
mod server;
pub mod tls;
pub mod types;

pub use auth::{
    AccessDecision, AuthOptions, Authorizer, DecisionFuture, Denial, DenialCounters, DenialLog,
    DenialReason, MAX_TOKEN_BYTES,
};
pub use error::Error;
pub use query::{ContainersQuery, ExecsQuery, FindingsQuery, ProcessesQuery, Since};
pub use serve::{
    serve, serve_tls, serve_with_limits, ServeLimits, DEFAULT_MAX_HEAD_BYTES,
    PLAIN_HTTP_TO_TLS_ANSWER,
};
pub use server::{
    paths, probe_router, router, router_with_auth, router_with_freshness, router_with_limits,
    with_freshness, ApiContext, Freshness, MetricsBody, MetricsRenderer, RequestLimits,
};
pub use tls::{CertSource, ServedCert, ServerTls, TlsSettings, TlsVersion};

/// The port the agent serves `/metrics` and the API on by default.
pub const DEFAULT_PORT: u16 = 9717;

/// The port the agent serves its probes (`/healthz`, `/readyz`) on by default: a listener of
/// their own, so no load on the API port can starve them.
pub const DEFAULT_PROBE_PORT: u16 = 9718;
