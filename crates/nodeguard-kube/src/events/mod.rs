//! Publishes findings as core/v1 Events (see `send.rs` for why not `events.k8s.io/v1`).
//!
//! One task owns everything. It keeps only the newest [`NodeState`] (a `watch` channel, so
//! the scanner never waits for it) and diffs its open findings against the set it has
//! announced:
//!
//! - a new finding of at least [`EventConfig::min_severity`] (medium by default; lower ones
//!   stay in PolicyReports, metrics and the API) → a `Warning` Event, reason [`nodeguard_model::FindingKind::reason`] (`SetuidFile`), action
//!   `Scan`, regarding the Pod (or the Node for host findings, containers outside pods, and
//!   pods' containers whose metadata has not arrived within
//!   [`EventConfig::pod_metadata_wait`]; until then such a finding waits), field path
//!   `spec.containers{NAME}.findings{ID}` (or `findings{ID}`);
//! - an announced finding no longer open → a `Normal` Event, reason `<Reason>Resolved`
//!   (`SetuidFileResolved`), same regarding and field path;
//! - more new findings on one object than its budget → one `Warning` `FindingsSummary`
//!   Event for that object (at most one per [`EventConfig::summary_interval`]).
//!
//! Protection of the API server: a token bucket per regarded object (burst 25, one more per
//! 5 minutes, like client-go's spam filter; high and critical findings have a bucket of
//! their own, so medium ones never spend what a new high one needs), a node-wide bucket
//! (1/s, burst 20) spent on the worst finding first (a new high or critical finding goes
//! next whatever waits), then on the object given the fewest requests so far (so among
//! equals a new pod is not stuck behind the start-up backlog of the others), a bounded
//! queue (findings that do not fit are counted in `queue_overflow` and offered again on the
//! next state; a full queue drops its least severe announcement for a worse finding), exponential backoff with jitter after 5xx, 429, timeouts and transport errors,
//! a per-request timeout. Requests run beside the diffing, so a hanging API server delays
//! Events but never state updates. Work that failed is retried while it still applies, under
//! the same Event name (planning time and finding id): a create that timed out but reached
//! the API server meets `409 AlreadyExists` on retry, which counts as sent, not a duplicate.
//!
//! The code is split in three: `planner.rs` decides (pure: state and time in, requests out),
//! `send.rs` talks to the API server (the client, nothing else), and this file's
//! `EventTask` joins them in `crate::publish`'s loop (the one the PolicyReport publisher
//! runs too) and persists the announced set.
//!
//! Restarts: the announced set is written atomically to `state_dir` and read at start, so a
//! restart announces nothing twice. Without a state directory (or with an unreadable file)
//! the publisher starts from an empty set and announces what is open again: reading the
//! set back from the API server would need `list` on Events cluster-wide, which the shipped
//! ClusterRole does not grant (it would let the agent read every namespace's Events).

pub(crate) mod ledger;
mod planner;
mod render;
mod send;

use self::planner::{Planner, Sent};
use self::send::{EventType, Outgoing, Sender};
use crate::publish::outcome::SendError;
use crate::publish::send::SendContext;
use crate::publish::{self, Publisher, Task};
use futures::future::BoxFuture;
use nodeguard_model::{EventStats, NodeState, Severity};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

/// Reason of the Event that stands in for findings over an object's budget.
pub const FINDINGS_SUMMARY_REASON: &str = "FindingsSummary";
/// Appended to a finding's reason for the `Normal` Event that says it is gone.
pub const RESOLVED_SUFFIX: &str = "Resolved";
const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
const PERSIST_RETRY: Duration = Duration::from_secs(30);

/// How the publisher behaves. [`EventConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct EventConfig {
    /// `reportingInstance` of every Event, and the Node regarded by host findings.
    pub node_name: String,
    /// The `involvedObject.uid` of Node Events. `None` (the default) uses the node's name,
    /// as kubelet does for its own Node Events: `kubectl describe node` (checked with v1.20.2)
    /// shows only Node Events whose uid is the node's name. Never looked up: the shipped
    /// ClusterRole grants nothing on nodes.
    pub node_uid: Option<String>,
    /// Where the announced set is kept across restarts (a hostPath in the DaemonSet).
    /// Without it a restart announces every open finding again.
    pub state_dir: Option<PathBuf>,
    /// Events one object may get at once (25).
    pub per_object_burst: u32,
    /// One more Event per object every this long (5 minutes).
    pub per_object_refill: Duration,
    /// Events per second for the whole node (1.0).
    pub node_rate_per_sec: f64,
    /// Events the node may send at once (20).
    pub node_burst: u32,
    /// Events waiting to be sent, at most (1024).
    pub queue_capacity: usize,
    /// How long the API server keeps Events (`--event-ttl`, 1 h): announcements older than
    /// this may be repeated after a restart.
    pub event_ttl: Duration,
    /// One API request, at most (10 s).
    pub request_timeout: Duration,
    /// First retry delay after an API server error (1 s), doubling up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest retry delay (5 minutes).
    pub backoff_max: Duration,
    /// At most one summary Event per object this often (7 minutes), so a burst of findings
    /// on one object costs it a handful of Events, not one per planning round.
    pub summary_interval: Duration,
    /// How long a finding of a pod's container (one with a pod uid) waits for the pod's
    /// metadata before its Event regards the Node instead (1 minute). The pod watch may not
    /// have listed yet (agent start, slow API server) or seen the container yet (kubelet
    /// status lag); an Event sent to the Node then would never move to the Pod.
    pub pod_metadata_wait: Duration,
    /// Findings below this severity get no Event (medium): they stay in PolicyReports,
    /// metrics and the query API. Events are for what someone should act on.
    pub min_severity: Severity,
}

impl EventConfig {
    pub fn new(node_name: impl Into<String>) -> EventConfig {
        EventConfig {
            node_name: node_name.into(),
            node_uid: None,
            state_dir: None,
            per_object_burst: 25,
            per_object_refill: Duration::from_secs(300),
            node_rate_per_sec: 1.0,
            node_burst: 20,
            queue_capacity: 1024,
            event_ttl: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            summary_interval: Duration::from_secs(420),
            pod_metadata_wait: Duration::from_secs(60),
            min_severity: Severity::Medium,
        }
    }
}

/// Publishes findings as Events from its own task ([`crate::publish::Publisher`]; its
/// counters are [`EventStats`]). Dropping the state sender ends the task (after saving the
/// announced set); dropping the publisher does not.
pub type EventPublisher = Publisher<EventStats>;

impl Publisher<EventStats> {
    /// Spawns the Event publisher on the current tokio runtime; returns at once.
    pub fn start(
        client: kube::Client,
        config: EventConfig,
        state: watch::Receiver<Option<Arc<NodeState>>>,
    ) -> EventPublisher {
        let sender = Sender::new(
            SendContext::new(client, config.request_timeout),
            &config.node_name,
        );
        publish::spawn(move || EventTask::new(sender, config), state)
    }
}

/// The Event side of the publisher's loop: the planner, the sender, and saving the
/// announced set.
struct EventTask {
    planner: Planner,
    sender: Sender,
    persist: Persist,
    per_object_burst: u32,
    node_uid: Option<String>,
}

impl EventTask {
    fn new(sender: Sender, cfg: EventConfig) -> EventTask {
        let announced = load(&cfg);
        let persist = Persist::new(cfg.state_dir.clone(), &cfg.node_name);
        let seed = publish::jitter_seed(&cfg.node_name, nodeguard_model::FNV_BASIS);
        let per_object_burst = cfg.per_object_burst;
        let node_uid = Some(
            cfg.node_uid
                .clone()
                .unwrap_or_else(|| cfg.node_name.clone()),
        );
        let planner = Planner::new(cfg, announced, Instant::now(), SystemTime::now(), seed);
        EventTask {
            planner,
            sender,
            persist,
            per_object_burst,
            node_uid,
        }
    }
}

impl Task for EventTask {
    type Stats = EventStats;
    type Request = Sent;
    type Answer = Result<(), SendError>;
    const NAME: &'static str = "event publisher";

    fn on_state(&mut self, st: Arc<NodeState>) {
        self.planner.on_state(st, Instant::now(), SystemTime::now());
    }

    fn prepare(&mut self, now: Instant) {
        self.planner.schedule_summaries(now);
    }

    fn next_request(&mut self, now: Instant) -> Option<Sent> {
        self.planner.next_request(now)
    }

    /// Sends the Event a planned request stands for.
    fn send(&self, sent: Sent) -> BoxFuture<'static, (Sent, Result<(), SendError>)> {
        let sender = self.sender.clone();
        let out = outgoing(&sent, self.per_object_burst);
        let node_uid = self.node_uid.clone();
        Box::pin(async move {
            let result = sender.create(&out, node_uid.as_deref()).await;
            (sent, result)
        })
    }

    fn settle(&mut self, now: Instant) {
        self.persist.maybe_save(&mut self.planner, now, false);
    }

    fn next_wake(&mut self, now: Instant, busy: bool) -> Option<Instant> {
        [
            self.planner.next_wake(now, busy),
            self.persist.wake(&self.planner),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_done(&mut self, sent: Sent, result: Result<(), SendError>) {
        self.planner
            .on_done(sent, result, Instant::now(), SystemTime::now());
    }

    fn stats(&self) -> EventStats {
        self.planner.stats()
    }

    fn stop(&mut self) {
        self.persist
            .maybe_save(&mut self.planner, Instant::now(), true);
    }
}

/// The Event a planned request stands for: the Event-specific wording of a generic job.
fn outgoing(sent: &Sent, per_object_burst: u32) -> Outgoing {
    match sent {
        Sent::Announce(p) => Outgoing {
            type_: EventType::Warning,
            reason: p.entry.kind.reason().to_string(),
            note: p.note.clone(),
            target: p.entry.target.clone(),
            field_path: p.entry.field_path.clone(),
            planned: p.planned,
            key: format!("warning/{}", p.entry.id),
        },
        // One Resolved per accepted Warning: the Warning's acceptance time names it.
        Sent::Resolve(entry) => Outgoing {
            type_: EventType::Normal,
            reason: format!("{}{RESOLVED_SUFFIX}", entry.kind.reason()),
            note: render::resolved_note(entry),
            target: entry.target.clone(),
            field_path: entry.field_path.clone(),
            planned: entry.at.0,
            key: format!("resolved/{}", entry.id),
        },
        Sent::Summary { target, acc } => {
            let kinds = acc.ids.values().copied().collect();
            Outgoing {
                type_: EventType::Warning,
                reason: FINDINGS_SUMMARY_REASON.to_string(),
                note: render::summary_note(target, acc.ids.len(), &kinds, per_object_burst),
                target: target.clone(),
                field_path: None,
                // Never without a planning time; if it were, a fresh name rather than one
                // that could meet an older summary's Event and be taken as sent.
                planned: acc.planned.unwrap_or_else(SystemTime::now),
                key: "summary".to_string(),
            }
        }
    }
}

/// Reads the announced set from `state_dir`. Without a state directory, or with a file that
/// cannot be read, the set starts empty and open findings are announced again.
fn load(cfg: &EventConfig) -> Vec<ledger::Announced> {
    let Some(dir) = &cfg.state_dir else {
        tracing::info!("no state directory: findings open now are announced as Events, and again after a restart");
        return Vec::new();
    };
    match ledger::load(dir, cfg.event_ttl, SystemTime::now()) {
        Ok(Some(entries)) => {
            tracing::info!(
                announced = entries.len(),
                path = %ledger::state_path(dir).display(),
                "loaded the set of findings already announced as Events"
            );
            entries
        }
        // A state directory without the file: the agent's first start on this node (the
        // file is written as soon as anything is announced).
        Ok(None) => {
            tracing::info!(
                path = %ledger::state_path(dir).display(),
                "no announced-findings file yet: first start on this node"
            );
            Vec::new()
        }
        Err(error) => {
            tracing::warn!(%error, "ignoring the announced-findings file; findings open now are announced again");
            Vec::new()
        }
    }
}

/// When and where the announced set is saved: at most once per [`PERSIST_INTERVAL`], and
/// at the end.
struct Persist {
    dir: Option<PathBuf>,
    node: String,
    next: Instant,
}

impl Persist {
    fn new(dir: Option<PathBuf>, node: &str) -> Persist {
        Persist {
            dir,
            node: node.to_string(),
            next: Instant::now(),
        }
    }

    fn wake(&self, planner: &Planner) -> Option<Instant> {
        (self.dir.is_some() && planner.dirty()).then_some(self.next)
    }

    fn maybe_save(&mut self, planner: &mut Planner, now: Instant, force: bool) {
        let Some(dir) = &self.dir else {
            planner.mark_saved();
            return;
        };
        if !planner.dirty() || (!force && now < self.next) {
            return;
        }
        match ledger::save(dir, &self.node, planner.announced()) {
            Ok(()) => {
                planner.mark_saved();
                self.next = now + PERSIST_INTERVAL;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot save the announced findings; a restart may repeat Events");
                self.next = now + PERSIST_RETRY;
            }
        }
    }
}
