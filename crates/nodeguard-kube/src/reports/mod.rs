//! Publishes open findings as `wgpolicyk8s.io/v1alpha2` PolicyReports, where Kyverno, Trivy
//! Operator and Kubescape users (and Policy Reporter) already look.
//!
//! Per node: one `PolicyReport` named `nodeguard-<node>` in each namespace with findings of
//! that namespace's pods, and one `ClusterPolicyReport` of the same name for host findings
//! and containers without a known pod; all labelled `app.kubernetes.io/managed-by:
//! nodeguard` and `nodeguard.io/node: <node>`, so nodes never write each other's reports.
//! One result per open finding: policy `nodeguard`, rule the finding kind, severity, result
//! `fail`, the Pod (or the Node) in `resources`, properties `finding_id`, `node`,
//! `container`, `container_id`, `image`, `path`, `subject`, `digest`, `pid` where known,
//! and the image verdict of that pid's executable (`image_verdict`, `image_layer`,
//! `expected_digest`, `image_digest`, `image_verdict_reason`) when image verification is on.
//!
//! Like the Event publisher, one task owns everything (the loop, the handle and the counters'
//! channel are `crate::publish`'s): it keeps only the newest state (a `watch` channel, so
//! scans never wait for it) and runs one request at a time beside the planning. `planner.rs`
//! decides (pure), `render.rs` says what a report holds (pure),
//! `send.rs` talks to the API server. Guards: a report is written only when its content
//! changed (results compared without timestamps, so a restart rewrites nothing), a node-wide
//! token bucket, exponential backoff with jitter after errors, a per-request timeout, at most
//! [`PolicyReportConfig::max_results`] results and [`PolicyReportConfig::max_bytes`] per
//! report (the worst findings kept; the rest counted in a last `warn` result, rule
//! `results_omitted`). Without the CRDs the publisher says so once, exports
//! `crds_installed = false` and lists again every [`PolicyReportConfig::unavailable_retry`].

mod image_properties;
mod planner;
mod render;
mod send;

use self::planner::{Op, Outcome, Planner};
use self::send::Sender;
use crate::publish::outcome::SendError;
use crate::publish::send::SendContext;
use crate::publish::{self, Publisher, Task};
use futures::future::BoxFuture;
use nodeguard_model::{NodeState, PolicyReportStats};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

/// How the PolicyReport publisher behaves. [`PolicyReportConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct PolicyReportConfig {
    /// Whose reports these are: names, labels and the `node` property.
    pub node_name: String,
    /// Results per report, at most (500).
    pub max_results: usize,
    /// Bytes of results per report, at most (1 MiB; the API server stores at most 1.5 MiB).
    pub max_bytes: usize,
    /// Writes per second for the node (0.2) ...
    pub writes_per_sec: f64,
    /// ... and at once (10).
    pub write_burst: u32,
    /// One API request, at most (10 s).
    pub request_timeout: Duration,
    /// First retry delay after an error (1 s), doubling up to `backoff_max` (5 minutes).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How often to look again for CRDs that were not installed (10 minutes).
    pub unavailable_retry: Duration,
    /// How long a pod's container waits for its pod's metadata before its findings go to
    /// the ClusterPolicyReport (1 minute), as for Events.
    pub pod_metadata_wait: Duration,
}

impl PolicyReportConfig {
    pub fn new(node_name: impl Into<String>) -> PolicyReportConfig {
        PolicyReportConfig {
            node_name: node_name.into(),
            max_results: 500,
            max_bytes: 1024 * 1024,
            writes_per_sec: 0.2,
            write_burst: 10,
            request_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            unavailable_retry: Duration::from_secs(600),
            pod_metadata_wait: Duration::from_secs(60),
        }
    }
}

/// Publishes PolicyReports from its own task ([`crate::publish::Publisher`]; its counters
/// are [`PolicyReportStats`]). Dropping the state sender ends the task.
pub type PolicyReportPublisher = Publisher<PolicyReportStats>;

impl Publisher<PolicyReportStats> {
    /// Spawns the PolicyReport publisher on the current tokio runtime; returns at once.
    pub fn start(
        client: kube::Client,
        config: PolicyReportConfig,
        state: watch::Receiver<Option<Arc<NodeState>>>,
    ) -> PolicyReportPublisher {
        let sender = Sender::new(
            SendContext::new(client, config.request_timeout),
            &config.node_name,
        );
        publish::spawn(
            move || {
                // Another basis than the Events': one node's two publishers jitter apart.
                let seed = publish::jitter_seed(&config.node_name, 0x9e37_79b9_7f4a_7c15);
                ReportTask {
                    planner: Planner::new(config, Instant::now(), seed),
                    sender,
                    have_state: false,
                }
            },
            state,
        )
    }
}

/// The PolicyReport side of the publisher's loop.
struct ReportTask {
    planner: Planner,
    sender: Sender,
    /// Nothing is listed or written before the first scan: an empty state would delete the
    /// reports a restarted agent is about to find again.
    have_state: bool,
}

impl Task for ReportTask {
    type Stats = PolicyReportStats;
    type Request = Op;
    type Answer = Result<Outcome, SendError>;
    const NAME: &'static str = "PolicyReport publisher";

    fn on_state(&mut self, st: Arc<NodeState>) {
        self.planner.on_state(&st, SystemTime::now());
        self.have_state = true;
    }

    fn next_request(&mut self, now: Instant) -> Option<Op> {
        if !self.have_state {
            return None;
        }
        self.planner.next_request(now)
    }

    fn send(&self, op: Op) -> BoxFuture<'static, (Op, Result<Outcome, SendError>)> {
        let sender = self.sender.clone();
        Box::pin(async move {
            let result = sender.execute(&op).await;
            (op, result)
        })
    }

    fn next_wake(&mut self, now: Instant, busy: bool) -> Option<Instant> {
        if !self.have_state {
            return None;
        }
        self.planner.next_wake(now, busy)
    }

    fn on_done(&mut self, op: Op, result: Result<Outcome, SendError>) {
        self.planner.on_done(op, result, Instant::now());
    }

    fn stats(&self) -> PolicyReportStats {
        self.planner.stats()
    }
}
