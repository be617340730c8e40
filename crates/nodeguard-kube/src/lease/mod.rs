//! The heartbeat Lease: each agent keeps a `coordination.k8s.io/v1` Lease
//! `nodeguard-<node>` in its own namespace, the way kubelet keeps its node Lease, so
//! `nodeguard fleet status` can tell a watched node from one whose agent is down, stuck or
//! missing. The contract (names, annotations) is `nodeguard_model::fleet`.
//!
//! One task (the publishers' loop, `crate::publish`) owns it: it reads the Lease at start
//! (creating it when absent) and renews it once per interval with the latest state's
//! heartbeat (last scan, open findings per severity, the served certificate's fingerprint).
//! Annotation changes ride on the renewal: never more than one write per interval, plus a
//! create after someone deleted the Lease. `planner.rs` decides when and what (pure),
//! `object.rs` builds the object (pure), `send.rs` talks to the API server. RBAC: `get`,
//! `create`, `update` on `leases` in the agent's namespace only (`manifests/role-lease.yaml`).

mod object;
mod planner;
mod send;

use self::object::Holder;
use self::planner::{Op, Planner};
use self::send::Sender;
use crate::publish::outcome::SendError;
use crate::publish::send::SendContext;
use crate::publish::{self, Publisher, Task};
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp as JiffTimestamp;
use nodeguard_model::fleet::{cert_sha256_hex, lease_name, Heartbeat, LeaseStats, SeverityCounts};
use nodeguard_model::{NodeState, ScanKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The serving certificate's SHA-256 (any of `AB:CD:…` or hex), asked at each renewal:
/// a reloaded certificate shows in the next one. `None` for plain HTTP.
pub type CertFingerprint = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// What the agent writes into its Lease besides the state. [`LeaseConfig::new`] gives the
/// defaults.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub node_name: String,
    /// The agent's own namespace (`POD_NAMESPACE`).
    pub namespace: String,
    /// `spec.holderIdentity`: the pod's name (`POD_NAME`), else the host's.
    pub holder_identity: String,
    /// The renewal interval (the agent's process scan interval); the Lease holds for 3 ×.
    pub interval: Duration,
    pub api_port: u16,
    /// `addr:port` the API listens on (informational).
    pub api_endpoint: String,
    pub version: String,
    /// One API request, at most (10 s, and never more than the interval).
    pub request_timeout: Duration,
}

impl LeaseConfig {
    pub fn new(
        node_name: impl Into<String>,
        namespace: impl Into<String>,
        holder_identity: impl Into<String>,
        interval: Duration,
        api_endpoint: std::net::SocketAddr,
    ) -> LeaseConfig {
        LeaseConfig {
            node_name: node_name.into(),
            namespace: namespace.into(),
            holder_identity: holder_identity.into(),
            interval,
            api_port: api_endpoint.port(),
            api_endpoint: api_endpoint.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            request_timeout: Duration::from_secs(10).min(interval.max(Duration::from_secs(1))),
        }
    }

    /// The interval in whole seconds (at least 1), as the annotation carries it.
    fn interval_seconds(&self) -> u64 {
        let ms = self.interval.as_millis();
        u64::try_from(ms.div_ceil(1000)).unwrap_or(u64::MAX).max(1)
    }

    fn holder(&self) -> Holder {
        let duration = self
            .interval_seconds()
            .saturating_mul(u64::from(nodeguard_model::fleet::STALE_AFTER_INTERVALS));
        Holder {
            name: lease_name(&self.node_name),
            namespace: self.namespace.clone(),
            identity: self.holder_identity.clone(),
            duration_seconds: i32::try_from(duration).unwrap_or(i32::MAX),
        }
    }

    /// The heartbeat from the latest state (none before the first scan).
    fn heartbeat(&self, state: Option<&NodeState>, cert_sha256: Option<String>) -> Heartbeat {
        Heartbeat {
            node: self.node_name.clone(),
            api_port: self.api_port,
            api_endpoint: self.api_endpoint.clone(),
            cert_sha256,
            version: self.version.clone(),
            last_scan: state
                .and_then(|s| s.last_scans.get(&ScanKind::Processes))
                .map(|run| run.finished_at),
            // Bounded by the open findings the policy keeps (folded per container and kind).
            findings: state.map_or_else(SeverityCounts::default, |s| {
                SeverityCounts::count(s.findings.iter().map(|f| f.finding.severity))
            }),
            interval_seconds: self.interval_seconds(),
        }
    }
}

/// Keeps the heartbeat Lease from its own task ([`crate::publish::Publisher`]; its counters
/// are [`LeaseStats`]). Dropping the state sender ends the task; the Lease stays and goes
/// stale, which is what `fleet status` should see of a stopped agent.
pub type LeaseWriter = Publisher<LeaseStats>;

impl Publisher<LeaseStats> {
    /// Spawns the Lease writer on the current tokio runtime; returns at once.
    pub fn start(
        client: kube::Client,
        config: LeaseConfig,
        cert: CertFingerprint,
        state: watch::Receiver<Option<Arc<NodeState>>>,
    ) -> LeaseWriter {
        let holder = config.holder();
        let sender = Sender::new(
            SendContext::new(client, config.request_timeout),
            &holder.namespace,
            &holder.name,
        );
        publish::spawn(
            move || {
                let seed = publish::jitter_seed(&config.node_name, 0x6c62_272e_07bb_0142);
                LeaseTask {
                    planner: Planner::new(config.interval, seed, Instant::now()),
                    sender,
                    holder,
                    config,
                    cert,
                    state: None,
                    held: None,
                }
            },
            state,
        )
    }
}

struct LeaseTask {
    planner: Planner,
    sender: Sender,
    holder: Holder,
    config: LeaseConfig,
    cert: CertFingerprint,
    state: Option<Arc<NodeState>>,
    /// The Lease as last read or written: the base of the next renewal.
    held: Option<Lease>,
}

impl Task for LeaseTask {
    type Stats = LeaseStats;
    type Request = (Op, Option<Lease>);
    type Answer = Result<Lease, SendError>;
    const NAME: &'static str = "Lease writer";

    fn on_state(&mut self, st: Arc<NodeState>) {
        // Kept for the next renewal; a state never causes a write by itself.
        self.state = Some(st);
    }

    fn next_request(&mut self, now: Instant) -> Option<(Op, Option<Lease>)> {
        let op = match self.planner.next_request(now)? {
            Op::Renew if self.held.is_none() => Op::Read,
            op => op,
        };
        let body = match op {
            Op::Read => None,
            Op::Create | Op::Renew => {
                let base = if op == Op::Renew {
                    self.held.as_ref()
                } else {
                    None
                };
                let cert = (self.cert)().as_deref().and_then(cert_sha256_hex);
                let beat = self.config.heartbeat(self.state.as_deref(), cert);
                Some(object::lease(
                    base,
                    &self.holder,
                    &beat,
                    JiffTimestamp::now(),
                ))
            }
        };
        Some((op, body))
    }

    fn send(
        &self,
        request: (Op, Option<Lease>),
    ) -> BoxFuture<'static, ((Op, Option<Lease>), Result<Lease, SendError>)> {
        let sender = self.sender.clone();
        Box::pin(async move {
            let answer = match &request {
                (Op::Read, _) | (_, None) => sender.read().await,
                (Op::Create, Some(lease)) => sender.create(lease).await,
                (Op::Renew, Some(lease)) => sender.replace(lease).await,
            };
            (request, answer)
        })
    }

    fn next_wake(&mut self, _now: Instant, busy: bool) -> Option<Instant> {
        (!busy).then(|| self.planner.due())
    }

    fn on_done(&mut self, (op, _): (Op, Option<Lease>), answer: Result<Lease, SendError>) {
        let result = match answer {
            Ok(lease) => {
                self.held = Some(lease);
                Ok(())
            }
            Err(e) => {
                log_failure(op, &self.holder, &e, self.planner.stats().failed);
                if matches!(e, SendError::NotFound(_)) {
                    self.held = None;
                }
                Err(e)
            }
        };
        self.planner.on_done(op, result, Instant::now());
    }

    fn stats(&self) -> LeaseStats {
        self.planner.stats()
    }
}

/// A failure is logged at warn the first time and every 100th after, at debug otherwise:
/// a missing Role must be visible, not a log flood.
fn log_failure(op: Op, holder: &Holder, error: &SendError, failed_before: u64) {
    let (kind, message) = match error {
        SendError::Retryable(m) => ("retryable", m),
        SendError::NotFound(m) => ("not found", m),
        SendError::Conflict(m) => ("conflict", m),
        SendError::Permanent(m) => ("refused", m),
    };
    // A 404 on read (first start) and a 409 (someone else's write) are expected.
    let expected = matches!(
        (op, error),
        (Op::Read, SendError::NotFound(_)) | (_, SendError::Conflict(_))
    );
    if expected {
        tracing::debug!(?op, lease = %holder.name, kind, "heartbeat Lease: {message}");
    } else if failed_before.is_multiple_of(100) {
        tracing::warn!(
            ?op,
            lease = %holder.name,
            namespace = %holder.namespace,
            kind,
            error = %message,
            "cannot keep the heartbeat Lease (needs get, create, update on leases in this namespace: manifests/role-lease.yaml); retrying with backoff"
        );
    } else {
        tracing::debug!(?op, lease = %holder.name, kind, error = %message, "heartbeat Lease write failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::send::tests::{respond, status};
    use nodeguard_model::{Finding, FindingKind, ScanRun, Severity, Timestamp};
    use serde_json::{json, Value};

    /// The Lease as the API server answers a write of `body`: with a resourceVersion.
    fn stored(body: &Value, version: &str) -> http::Response<kube::client::Body> {
        let mut body = body.clone();
        body["metadata"]["resourceVersion"] = json!(version);
        body["apiVersion"] = json!("coordination.k8s.io/v1");
        body["kind"] = json!("Lease");
        respond(200, body)
    }

    /// Against a mocked API server: absent at start (created), renewed one interval later
    /// with the stored version and the state's heartbeat, deleted by someone (404 on
    /// renewal: created again at once), then renewed. Each write is counted.
    #[tokio::test]
    async fn the_writer_creates_renews_and_recreates_a_deleted_lease() {
        let (service, mut handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let client = kube::Client::new(service, "default");
        let mut state = nodeguard_testkit::model::state(
            "node-a",
            vec![],
            &[Finding::new(
                FindingKind::RunsAsRoot,
                Severity::High,
                Some("c1"),
                "x",
                "m",
            )],
            Timestamp::now(),
        );
        state.last_scans.insert(
            ScanKind::Processes,
            ScanRun {
                finished_at: Timestamp::now(),
                duration_ms: 5,
            },
        );
        let (_tx, rx) = watch::channel(Some(Arc::new(state)));
        let config = LeaseConfig::new(
            "node-a",
            "guard",
            "pod-1",
            Duration::from_secs(1),
            "0.0.0.0:9717".parse().unwrap(),
        );
        let cert: CertFingerprint = Arc::new(|| Some("AB:".repeat(31) + "AB"));
        let started = std::time::Instant::now();
        let writer = LeaseWriter::start(client, config, cert, rx);

        let mut seen = Vec::new();
        for (i, answer) in ["404", "create", "renew-404", "create", "renew"]
            .into_iter()
            .enumerate()
        {
            let (request, send) =
                tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                    .await
                    .expect("a request within 5 s")
                    .expect("a request");
            let line = format!("{} {}", request.method(), request.uri().path());
            let body = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            seen.push((line, body.clone(), started.elapsed()));
            send.send_response(match answer {
                "404" | "renew-404" => status(404, "NotFound"),
                _ => stored(&body, &format!("{}", 10 + i)),
            });
        }
        let lines: Vec<&str> = seen.iter().map(|(l, _, _)| l.as_str()).collect();
        let path = "/apis/coordination.k8s.io/v1/namespaces/guard/leases";
        let named = format!("{path}/nodeguard-node-a");
        assert_eq!(
            lines,
            [
                format!("GET {named}"),
                format!("POST {path}"),
                format!("PUT {named}"),
                format!("POST {path}"),
                format!("PUT {named}"),
            ]
        );
        let created = &seen[1].1;
        assert_eq!(created["spec"]["holderIdentity"], "pod-1");
        assert_eq!(created["spec"]["leaseDurationSeconds"], 3);
        let notes = &created["metadata"]["annotations"];
        assert_eq!(
            notes["nodeguard.io/findings"],
            "critical=0,high=1,medium=0,low=0"
        );
        assert_eq!(notes["nodeguard.io/cert-sha256"], "ab".repeat(32));
        assert_eq!(notes["nodeguard.io/api-port"], "9717");
        assert!(notes["nodeguard.io/last-scan"].is_string());
        // The renewal replaces what was stored, one interval after the create.
        assert_eq!(seen[2].1["metadata"]["resourceVersion"], "11");
        let gap = seen[2].2 - seen[1].2;
        assert!(gap >= Duration::from_millis(900), "renewed after {gap:?}");
        // The deleted Lease is created again at once, without a version.
        assert!(seen[3].1["metadata"].get("resourceVersion").is_none());
        assert!(seen[3].2 - seen[2].2 < Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            writer.stats(),
            LeaseStats {
                created: 2,
                renewed: 1,
                failed: 1
            }
        );
    }
}
