//! Publishes open findings as `wgpolicyk8s.io/v1alpha2` PolicyReports, where Kyverno, Trivy
//! Operator and Kubescape users (and Policy Reporter) already look.
//!
//! Per node: one `PolicyReport` named `nodeguard-<node>` in each namespace with findings of
//! that namespace's pods, and one `ClusterPolicyReport` of the same name for host findings
//! and containers without a known pod; all labelled `app.kubernetes.io/managed-by:
//! nodeguard` and `nodeguard.io/node: <node>`, so nodes never write each other's reports.
//! One result per open finding: policy `nodeguard`, rule the finding kind, severity, result
//! `fail`, the Pod (or the Node) in `resources`, properties `finding_id`, `node`,
//! `container`, `container_id`, `image`, `path`, `subject`, `digest`, `pid` where known.
//!
//! Like the Event publisher, one task owns everything: it keeps only the newest state (a
//! `watch` channel, so scans never wait for it) and runs one request at a time beside the
//! planning. `planner.rs` decides (pure), `render.rs` says what a report holds (pure),
//! `send.rs` talks to the API server. Guards: a report is written only when its content
//! changed (results compared without timestamps, so a restart rewrites nothing), a node-wide
//! token bucket, exponential backoff with jitter after errors, a per-request timeout, at most
//! [`PolicyReportConfig::max_results`] results and [`PolicyReportConfig::max_bytes`] per
//! report (the worst findings kept; the rest counted in a last `warn` result, rule
//! `results_omitted`). Without the CRDs the publisher says so once, exports
//! `crds_installed = false` and lists again every [`PolicyReportConfig::unavailable_retry`].

mod planner;
mod render;
mod send;

use self::planner::{Op, Planner};
use self::send::{Outcome, SendError, Sender};
use futures::future::{BoxFuture, OptionFuture};
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

/// Publishes PolicyReports from its own task. Dropping the state sender ends the task.
pub struct PolicyReportPublisher {
    stats: watch::Receiver<PolicyReportStats>,
    task: tokio::task::JoinHandle<()>,
}

impl PolicyReportPublisher {
    /// Spawns the publisher on the current tokio runtime; returns at once.
    pub fn start(
        client: kube::Client,
        config: PolicyReportConfig,
        state: watch::Receiver<Option<Arc<NodeState>>>,
    ) -> PolicyReportPublisher {
        let (stats_tx, stats) = watch::channel(PolicyReportStats::default());
        let sender = Sender::new(client, &config.node_name, config.request_timeout);
        let task = tokio::spawn(run(sender, config, stats_tx, state));
        PolicyReportPublisher { stats, task }
    }

    /// Counters since start; never waits on the API server.
    pub fn stats(&self) -> PolicyReportStats {
        *self.stats.borrow()
    }

    /// The counters' channel (as for Events), for metrics at scrape time; it outlives the
    /// publisher.
    pub fn stats_channel(&self) -> watch::Receiver<PolicyReportStats> {
        self.stats.clone()
    }

    /// Waits until the task has ended (the state sender was dropped).
    pub async fn join(self) {
        if let Err(error) = self.task.await {
            tracing::error!(%error, "PolicyReport publisher task failed");
        }
    }
}

struct Attempt {
    op: Op,
    result: Result<Outcome, SendError>,
}

async fn run(
    sender: Sender,
    cfg: PolicyReportConfig,
    shared: watch::Sender<PolicyReportStats>,
    mut state: watch::Receiver<Option<Arc<NodeState>>>,
) {
    let seed = cfg
        .node_name
        .bytes()
        .fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
        ^ SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut planner = Planner::new(cfg, Instant::now(), seed);
    let mut have_state = false;
    if let Some(st) = state.borrow_and_update().clone() {
        planner.on_state(&st, SystemTime::now());
        have_state = true;
    }
    let mut inflight: Option<BoxFuture<'static, Attempt>> = None;
    loop {
        let now = Instant::now();
        // Nothing is listed or written before the first scan: an empty state would delete
        // the reports a restarted agent is about to find again.
        if inflight.is_none() && have_state {
            inflight = planner.next_request(now).map(|op| {
                let sender = sender.clone();
                Box::pin(async move {
                    let result = sender.execute(&op).await;
                    Attempt { op, result }
                }) as BoxFuture<'static, Attempt>
            });
        }
        publish(&shared, planner.stats());
        let wake = if have_state {
            planner.next_wake(now, inflight.is_some())
        } else {
            None
        };
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    break;
                }
                let st = state.borrow_and_update().clone();
                if let Some(st) = st {
                    planner.on_state(&st, SystemTime::now());
                    have_state = true;
                }
            }
            Some(done) = OptionFuture::from(inflight.as_mut()) => {
                inflight = None;
                planner.on_done(done.op, done.result, Instant::now());
            }
            _ = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
        }
    }
    publish(&shared, planner.stats());
    tracing::debug!("PolicyReport publisher stopped: the state sender is gone");
}

fn publish(shared: &watch::Sender<PolicyReportStats>, stats: PolicyReportStats) {
    shared.send_if_modified(|current| {
        let changed = *current != stats;
        *current = stats;
        changed
    });
}
