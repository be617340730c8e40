//! Publishes findings as `events.k8s.io/v1` Events through kube's [`Recorder`].
//!
//! One task owns everything. It keeps only the newest [`NodeState`] (a `watch` channel, so
//! the scanner never waits for it) and diffs its open findings against the set it has
//! announced:
//!
//! - a new finding → a `Warning` Event, reason [`FindingKind::reason`] (`SetuidFile`), action
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
//! 5 minutes, like client-go's spam filter), a node-wide bucket (1/s, burst 20), a bounded
//! queue (findings that do not fit are counted in `queue_overflow` and offered again on the
//! next state), exponential backoff with jitter after 5xx, 429, timeouts and transport errors,
//! a per-request timeout. Requests run beside the diffing, so a hanging API server delays
//! Events but never state updates. Work that failed is retried while it still applies.
//!
//! Restarts: the announced set is written atomically to `state_dir` and read at start;
//! without a state file the publisher recovers it from the API server (a list of
//! `events.k8s.io` Events with `fieldSelector=reportingController=nodeguard`, filtered to this
//! node's `reportingInstance`, the finding id read back from the field path) before it
//! announces anything. Entries older than the Event TTL are dropped, so such findings are
//! announced again.

mod ledger;
mod limits;
mod render;

use self::ledger::{Announced, Target, TargetKind};
use self::limits::{Backoff, TokenBucket};
use futures::future::{BoxFuture, OptionFuture};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::ListParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Api;
use nodeguard_model::{
    EventStats, Finding, FindingKind, NodeState, Report, ScanKind, Timestamp, TrackedFinding,
};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

/// Reason of the Event that stands in for findings over an object's budget.
pub const FINDINGS_SUMMARY_REASON: &str = "FindingsSummary";
/// Appended to a finding's reason for the `Normal` Event that says it is gone.
pub const RESOLVED_SUFFIX: &str = "Resolved";
/// The `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "nodeguard";
const ACTION: &str = "Scan";
const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
const PERSIST_RETRY: Duration = Duration::from_secs(30);
const LIST_PAGE: u32 = 500;

/// How the publisher behaves. [`EventConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct EventConfig {
    /// `reportingInstance` of every Event, and the Node regarded by host findings.
    pub node_name: String,
    /// The Node's uid for `regarding.uid`; looked up (`get nodes`) when `None` and
    /// `lookup_node_uid` is set.
    pub node_uid: Option<String>,
    /// Whether to `get` the Node for its uid. Off in the shipped DaemonSet, whose ClusterRole
    /// grants nothing on nodes: Node Events then carry no uid (`kubectl get events
    /// --field-selector regarding.name=NODE` still finds them).
    pub lookup_node_uid: bool,
    /// Where the announced set is kept across restarts (a hostPath in the DaemonSet).
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
    /// At most one summary Event per object this often (7 minutes: longer than the 6 minutes
    /// kube's Recorder folds repeats into a series, so each summary keeps its own note).
    pub summary_interval: Duration,
    /// How long a finding of a pod's container (one with a pod uid) waits for the pod's
    /// metadata before its Event regards the Node instead (1 minute). The pod watch may not
    /// have listed yet (agent start, slow API server) or seen the container yet (kubelet
    /// status lag); an Event sent to the Node then would never move to the Pod.
    pub pod_metadata_wait: Duration,
}

impl EventConfig {
    pub fn new(node_name: impl Into<String>) -> EventConfig {
        EventConfig {
            node_name: node_name.into(),
            node_uid: None,
            lookup_node_uid: true,
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
        }
    }
}

/// Publishes findings as Events from its own task. Dropping the state sender ends the task
/// (after saving the announced set); dropping the publisher does not.
pub struct EventPublisher {
    stats: Arc<Mutex<EventStats>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventPublisher {
    /// Spawns the publisher on the current tokio runtime; returns at once.
    pub fn start(
        client: kube::Client,
        config: EventConfig,
        state: watch::Receiver<Option<Arc<NodeState>>>,
    ) -> EventPublisher {
        let stats = Arc::new(Mutex::new(EventStats::default()));
        let worker = Worker::new(client, config, stats.clone());
        let task = tokio::spawn(worker.run(state));
        EventPublisher { stats, task }
    }

    /// Counters since start; never waits on the API server.
    pub fn stats(&self) -> EventStats {
        *self
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until the task has ended (the state sender was dropped and the announced set
    /// saved).
    /// A reader of the counters that outlives the publisher, for metrics at scrape time.
    pub fn stats_source(&self) -> Arc<dyn Fn() -> EventStats + Send + Sync> {
        let stats = Arc::clone(&self.stats);
        Arc::new(move || {
            *stats
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        })
    }

    pub async fn join(self) {
        if let Err(error) = self.task.await {
            tracing::error!(%error, "event publisher task failed");
        }
    }
}

/// Work waiting for the API server.
enum Job {
    Announce(Box<Pending>),
    Resolve(String),
    Summary(Target),
}

/// A Warning ready to go; `entry.at` is set when the API server accepts it.
struct Pending {
    entry: Announced,
    note: String,
}

/// Findings over an object's budget, waiting for its summary Event.
#[derive(Default)]
struct SummaryAcc {
    ids: BTreeMap<String, FindingKind>,
}

/// What a request in flight was about.
enum Sent {
    Announce(Box<Pending>),
    Resolve(String),
    Summary { target: Target, acc: SummaryAcc },
    Recover(Vec<Announced>),
}

enum UidOutcome {
    Unchanged,
    Known(String),
    GaveUp(String),
}

enum SendError {
    /// 5xx, 429, 409, timeouts, transport: try again after a backoff.
    Retryable(String),
    /// The API server refused it for good (403, 404, 422, ...).
    Permanent(String),
}

struct Attempt {
    sent: Sent,
    uid: UidOutcome,
    result: Result<(), SendError>,
}

struct Worker {
    client: kube::Client,
    recorder: Recorder,
    cfg: EventConfig,
    stats: Arc<Mutex<EventStats>>,
    started_at: SystemTime,
    latest: Option<Arc<NodeState>>,
    open: HashSet<String>,
    announced: HashMap<String, Announced>,
    queue: VecDeque<Job>,
    /// Ids with an Announce or Resolve queued or in flight.
    queued: HashSet<String>,
    /// Objects with a Summary queued or in flight.
    summary_queued: HashSet<Target>,
    /// Over-budget findings by id → the object whose summary will cover them.
    summarizing: HashMap<String, Target>,
    pending_summaries: HashMap<Target, SummaryAcc>,
    last_summary: HashMap<Target, Instant>,
    /// Findings the API server refused for good; forgotten when they resolve.
    rejected: HashSet<String>,
    /// Ids already counted in `queue_overflow`.
    overflowed: HashSet<String>,
    buckets: HashMap<Target, TokenBucket>,
    node_bucket: TokenBucket,
    backoff: Backoff,
    next_attempt: Instant,
    /// The announced set is known (loaded, recovered, or given up on): admission may start.
    recovered: bool,
    node_uid: Option<String>,
    node_uid_settled: bool,
    dirty: bool,
    next_persist: Instant,
}

impl Worker {
    fn new(client: kube::Client, cfg: EventConfig, stats: Arc<Mutex<EventStats>>) -> Worker {
        let now = Instant::now();
        let instance = render::clip(&cfg.node_name, 128);
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: REPORTING_CONTROLLER.to_string(),
                instance: Some(instance),
            },
        );
        let seed = cfg
            .node_name
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
            ^ SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        Worker {
            recorder,
            client,
            stats,
            started_at: SystemTime::now(),
            latest: None,
            open: HashSet::new(),
            announced: HashMap::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            summary_queued: HashSet::new(),
            summarizing: HashMap::new(),
            pending_summaries: HashMap::new(),
            last_summary: HashMap::new(),
            rejected: HashSet::new(),
            overflowed: HashSet::new(),
            buckets: HashMap::new(),
            node_bucket: TokenBucket::per_second(cfg.node_rate_per_sec, cfg.node_burst, now),
            backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max, seed),
            next_attempt: now,
            recovered: false,
            node_uid: cfg.node_uid.clone(),
            node_uid_settled: cfg.node_uid.is_some() || !cfg.lookup_node_uid,
            dirty: false,
            next_persist: now,
            cfg,
        }
    }

    async fn run(mut self, mut state: watch::Receiver<Option<Arc<NodeState>>>) {
        self.load();
        let first = state.borrow_and_update().clone();
        if let Some(st) = first {
            self.on_state(st);
        }
        let mut inflight: Option<BoxFuture<'static, Attempt>> = None;
        loop {
            let now = Instant::now();
            self.schedule_summaries(now);
            if inflight.is_none() {
                inflight = self.start_next(now);
            }
            self.persist(now, false);
            self.publish_queue_len();
            let wake = self.next_wake(now, inflight.is_some());
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // Clone the Arc out at once: a held borrow would block the sender.
                    let st = state.borrow_and_update().clone();
                    if let Some(st) = st {
                        self.on_state(st);
                    }
                }
                Some(attempt) = OptionFuture::from(inflight.as_mut()) => {
                    inflight = None;
                    self.on_done(attempt);
                }
                _ = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
            }
        }
        self.persist(Instant::now(), true);
        tracing::debug!("event publisher stopped: the state sender is gone");
    }

    fn stat(&self, f: impl FnOnce(&mut EventStats)) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut stats);
    }

    fn publish_queue_len(&self) {
        let len = self.queue.len() as u64;
        self.stat(|s| s.queued = len);
    }

    /// Reads the announced set from `state_dir`; without a state directory (or with an
    /// unreadable file), the API server is asked first.
    fn load(&mut self) {
        let Some(dir) = &self.cfg.state_dir else {
            return;
        };
        match ledger::load(dir, self.cfg.event_ttl, SystemTime::now()) {
            Ok(Some(entries)) => {
                tracing::info!(
                    announced = entries.len(),
                    path = %ledger::state_path(dir).display(),
                    "loaded the set of findings already announced as Events"
                );
                for e in entries {
                    self.announced.insert(e.id.clone(), e);
                }
                self.recovered = true;
            }
            // A state directory without the file: the agent's first start on this node (the
            // file is written as soon as anything is announced). Nothing was announced, and
            // the API server need not be asked (the ClusterRole grants no `list` on events).
            Ok(None) => {
                tracing::info!(
                    path = %ledger::state_path(dir).display(),
                    "no announced-findings file yet: first start on this node"
                );
                self.recovered = true;
            }
            Err(error) => {
                tracing::warn!(%error, "ignoring the announced-findings file; asking the API server instead");
            }
        }
    }

    /// Diffs a new state against what was announced and queues the difference.
    fn on_state(&mut self, st: Arc<NodeState>) {
        let now = Instant::now();
        let wall = SystemTime::now();
        self.open = st.findings.iter().map(|t| t.finding.id.clone()).collect();
        self.latest = Some(st.clone());

        // Queued work the new state makes moot.
        let open = &self.open;
        let queued = &mut self.queued;
        self.queue.retain(|job| match job {
            Job::Announce(p) if !open.contains(&p.entry.id) => {
                queued.remove(&p.entry.id);
                false
            }
            Job::Resolve(id) if open.contains(id) => {
                queued.remove(id);
                false
            }
            _ => true,
        });
        let announced = &self.announced;
        self.rejected.retain(|id| open.contains(id));
        self.overflowed
            .retain(|id| open.contains(id) || announced.contains_key(id));
        self.summarizing.retain(|id, _| open.contains(id));
        for acc in self.pending_summaries.values_mut() {
            acc.ids.retain(|id, _| open.contains(id));
        }
        self.pending_summaries.retain(|_, acc| !acc.ids.is_empty());
        let pending = &self.pending_summaries;
        let summary_queued = &mut self.summary_queued;
        self.queue.retain(|job| match job {
            Job::Summary(target) if !pending.contains_key(target) => {
                summary_queued.remove(target);
                false
            }
            _ => true,
        });

        // Announced findings that are gone.
        let mut resolve = Vec::new();
        let mut forget = Vec::new();
        for (id, entry) in &mut self.announced {
            if open.contains(id) {
                entry.unconfirmed = false;
                continue;
            }
            if self.queued.contains(id) {
                continue;
            }
            if entry.summarized {
                forget.push(id.clone());
            } else if entry.unconfirmed {
                // From before this process: wait until the scans that would report it have
                // run, or until its Event has expired anyway.
                if ledger::expired(entry.at, self.cfg.event_ttl, wall) {
                    forget.push(id.clone());
                } else if scans_ran_since(&st, entry.kind, self.started_at) {
                    resolve.push(id.clone());
                }
            } else {
                resolve.push(id.clone());
            }
        }
        for id in forget {
            self.announced.remove(&id);
            self.dirty = true;
        }
        resolve.sort();
        for id in resolve {
            if self.queue.len() >= self.cfg.queue_capacity {
                self.count_overflow(&id);
                continue;
            }
            self.queued.insert(id.clone());
            self.queue.push_back(Job::Resolve(id));
        }

        if self.recovered {
            self.admit(&st, now);
        }
        self.schedule_summaries(now);
        self.buckets.retain(|_, b| !b.is_full(now));
        self.publish_queue_len();
    }

    /// Queues Warnings for new findings within their objects' budgets; the rest wait for
    /// a summary.
    fn admit(&mut self, st: &NodeState, now: Instant) {
        let mut new: Vec<&TrackedFinding> = st
            .findings
            .iter()
            .filter(|t| {
                let id = &t.finding.id;
                !self.announced.contains_key(id)
                    && !self.queued.contains(id)
                    && !self.summarizing.contains_key(id)
                    && !self.rejected.contains(id)
            })
            .collect();
        // The budget goes to the worst findings first.
        new.sort_by(|a, b| {
            b.finding
                .severity
                .cmp(&a.finding.severity)
                .then(a.first_seen.cmp(&b.first_seen))
                .then(a.finding.id.cmp(&b.finding.id))
        });
        let mut overflow = Vec::new();
        let mut rate_limited = 0u64;
        let wall = SystemTime::now();
        for t in new {
            let f = &t.finding;
            if self.queue.len() >= self.cfg.queue_capacity {
                overflow.push(f.id.clone());
                continue;
            }
            let placement = render::place(f, &st.report, &self.cfg.node_name);
            if placement.target.kind == TargetKind::Node
                && awaits_pod_metadata(f, &st.report)
                && wall
                    .duration_since(t.first_seen.0)
                    .unwrap_or(Duration::ZERO)
                    < self.cfg.pod_metadata_wait
            {
                // Offered again with the next state, which may know the pod.
                continue;
            }
            let bucket = self
                .buckets
                .entry(placement.target.clone())
                .or_insert_with(|| {
                    TokenBucket::new(self.cfg.per_object_burst, self.cfg.per_object_refill, now)
                });
            if bucket.try_take(now) {
                let note = render::warning_note(f, &placement);
                let entry = Announced {
                    id: f.id.clone(),
                    kind: f.kind,
                    at: Timestamp::now(),
                    target: placement.target,
                    field_path: Some(placement.field_path),
                    subject: f.path.clone().unwrap_or_else(|| f.subject.clone()),
                    container: placement.container,
                    summarized: false,
                    unconfirmed: false,
                };
                self.queued.insert(f.id.clone());
                self.queue
                    .push_back(Job::Announce(Box::new(Pending { entry, note })));
            } else {
                rate_limited += 1;
                self.summarizing
                    .insert(f.id.clone(), placement.target.clone());
                self.pending_summaries
                    .entry(placement.target)
                    .or_default()
                    .ids
                    .insert(f.id.clone(), f.kind);
            }
        }
        if rate_limited > 0 {
            self.stat(|s| s.rate_limited += rate_limited);
        }
        for id in overflow {
            self.count_overflow(&id);
        }
    }

    fn count_overflow(&mut self, id: &str) {
        if self.overflowed.insert(id.to_string()) {
            self.stat(|s| s.queue_overflow += 1);
        }
    }

    /// Queues a summary for each object with over-budget findings whose last summary is old
    /// enough.
    fn schedule_summaries(&mut self, now: Instant) {
        let interval = self.cfg.summary_interval;
        self.last_summary.retain(|_, at| now < *at + interval);
        let mut due: Vec<Target> = self
            .pending_summaries
            .keys()
            .filter(|t| !self.summary_queued.contains(*t) && !self.last_summary.contains_key(*t))
            .cloned()
            .collect();
        due.sort();
        for target in due {
            if self.queue.len() >= self.cfg.queue_capacity {
                break;
            }
            self.summary_queued.insert(target.clone());
            self.queue.push_back(Job::Summary(target));
        }
    }

    /// When the loop must look again without any input.
    fn next_wake(&mut self, now: Instant, busy: bool) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        if !busy {
            if !self.recovered {
                at(self.next_attempt);
            } else if !self.queue.is_empty() {
                at(self.next_attempt.max(self.node_bucket.ready_at(now)));
            }
        }
        if self.queue.len() < self.cfg.queue_capacity {
            for target in self.pending_summaries.keys() {
                if let Some(last) = self.last_summary.get(target) {
                    if !self.summary_queued.contains(target) {
                        at(*last + self.cfg.summary_interval);
                    }
                }
            }
        }
        if self.dirty && self.cfg.state_dir.is_some() {
            at(self.next_persist);
        }
        wake
    }

    /// Starts the next request if backoff and the node-wide bucket allow.
    fn start_next(&mut self, now: Instant) -> Option<BoxFuture<'static, Attempt>> {
        if now < self.next_attempt {
            return None;
        }
        if !self.recovered {
            return Some(self.recover_request());
        }
        loop {
            // Drop moot work without spending a token on it.
            let moot = match self.queue.front()? {
                Job::Resolve(id) => !self.announced.contains_key(id),
                Job::Summary(target) => !self.pending_summaries.contains_key(target),
                Job::Announce(_) => false,
            };
            if moot {
                match self.queue.pop_front() {
                    Some(Job::Resolve(id)) => {
                        self.queued.remove(&id);
                    }
                    Some(Job::Summary(target)) => {
                        self.summary_queued.remove(&target);
                    }
                    _ => {}
                }
                continue;
            }
            if !self.node_bucket.try_take(now) {
                return None;
            }
            let job = self.queue.pop_front()?;
            if let Some(request) = self.send_request(job) {
                return Some(request);
            }
        }
    }

    fn send_request(&mut self, job: Job) -> Option<BoxFuture<'static, Attempt>> {
        let (sent, target, field_path, event) = match job {
            Job::Announce(p) => {
                let event = Event {
                    type_: EventType::Warning,
                    reason: p.entry.kind.reason().to_string(),
                    note: Some(p.note.clone()),
                    action: ACTION.to_string(),
                    secondary: None,
                };
                let target = p.entry.target.clone();
                let fp = p.entry.field_path.clone();
                (Sent::Announce(p), target, fp, event)
            }
            Job::Resolve(id) => {
                let Some(entry) = self.announced.get(&id) else {
                    self.queued.remove(&id);
                    return None;
                };
                let event = Event {
                    type_: EventType::Normal,
                    reason: format!("{}{RESOLVED_SUFFIX}", entry.kind.reason()),
                    note: Some(render::resolved_note(entry)),
                    action: ACTION.to_string(),
                    secondary: None,
                };
                let (target, fp) = (entry.target.clone(), entry.field_path.clone());
                (Sent::Resolve(id), target, fp, event)
            }
            Job::Summary(target) => {
                let acc = self.pending_summaries.remove(&target).unwrap_or_default();
                let kinds = acc.ids.values().copied().collect();
                let note =
                    render::summary_note(&target, acc.ids.len(), &kinds, self.cfg.per_object_burst);
                let event = Event {
                    type_: EventType::Warning,
                    reason: FINDINGS_SUMMARY_REASON.to_string(),
                    note: Some(note),
                    action: ACTION.to_string(),
                    secondary: None,
                };
                (
                    Sent::Summary {
                        target: target.clone(),
                        acc,
                    },
                    target,
                    None,
                    event,
                )
            }
        };
        let need_uid = target.kind == TargetKind::Node && !self.node_uid_settled;
        let node_uid = self.node_uid.clone();
        let recorder = self.recorder.clone();
        let client = self.client.clone();
        let node = self.cfg.node_name.clone();
        let timeout = self.cfg.request_timeout;
        Some(Box::pin(async move {
            let mut uid = UidOutcome::Unchanged;
            let mut node_uid = node_uid;
            if need_uid {
                match tokio::time::timeout(timeout, fetch_node_uid(&client, &node)).await {
                    Ok(Ok(found)) => {
                        node_uid = found.clone();
                        uid = match found {
                            Some(u) => UidOutcome::Known(u),
                            None => UidOutcome::GaveUp("the Node has no uid".into()),
                        };
                    }
                    Ok(Err(e)) => match classify(&e) {
                        SendError::Permanent(msg) => uid = UidOutcome::GaveUp(msg),
                        retry => {
                            return Attempt {
                                sent,
                                uid,
                                result: Err(retry),
                            }
                        }
                    },
                    Err(_) => {
                        return Attempt {
                            sent,
                            uid,
                            result: Err(SendError::Retryable(format!(
                                "looking up Node {node} timed out after {timeout:?}"
                            ))),
                        }
                    }
                }
            }
            let reference = render::reference(&target, field_path.as_deref(), node_uid.as_deref());
            let result =
                match tokio::time::timeout(timeout, recorder.publish(&event, &reference)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(classify(&e)),
                    Err(_) => Err(SendError::Retryable(format!(
                        "no answer within {timeout:?}"
                    ))),
                };
            Attempt { sent, uid, result }
        }))
    }

    fn recover_request(&self) -> BoxFuture<'static, Attempt> {
        let client = self.client.clone();
        let node = self.cfg.node_name.clone();
        let ttl = self.cfg.event_ttl;
        let timeout = self.cfg.request_timeout;
        Box::pin(async move {
            let (sent, result) = match list_announced(&client, &node, ttl, timeout).await {
                Ok(entries) => (Sent::Recover(entries), Ok(())),
                Err(e) => (Sent::Recover(Vec::new()), Err(e)),
            };
            Attempt {
                sent,
                uid: UidOutcome::Unchanged,
                result,
            }
        })
    }

    fn on_done(&mut self, attempt: Attempt) {
        let now = Instant::now();
        match attempt.uid {
            UidOutcome::Unchanged => {}
            UidOutcome::Known(uid) => {
                self.node_uid = Some(uid);
                self.node_uid_settled = true;
            }
            UidOutcome::GaveUp(why) => {
                tracing::warn!(node = %self.cfg.node_name, %why, "cannot look up the Node's uid; Node Events will carry none");
                self.node_uid_settled = true;
            }
        }
        match attempt.result {
            Ok(()) => {
                self.backoff.reset();
                self.succeeded(attempt.sent, now);
            }
            Err(SendError::Retryable(why)) => {
                self.stat(|s| s.failed += 1);
                let delay = self.backoff.next_delay();
                self.next_attempt = now + delay;
                tracing::warn!(%why, retry_in = ?delay, failures = self.backoff.failures(), "the API server did not take an Event; backing off");
                self.retry(attempt.sent);
            }
            Err(SendError::Permanent(why)) => {
                self.stat(|s| s.failed += 1);
                tracing::warn!(%why, "the API server refused an Event; not retrying it");
                self.give_up(attempt.sent, now);
            }
        }
        self.publish_queue_len();
    }

    fn succeeded(&mut self, sent: Sent, now: Instant) {
        match sent {
            Sent::Announce(p) => {
                let mut entry = p.entry;
                entry.at = Timestamp::now();
                self.queued.remove(&entry.id);
                self.overflowed.remove(&entry.id);
                self.announced.insert(entry.id.clone(), entry);
                self.stat(|s| s.sent += 1);
            }
            Sent::Resolve(id) => {
                self.queued.remove(&id);
                self.announced.remove(&id);
                self.overflowed.remove(&id);
                self.stat(|s| s.sent += 1);
            }
            Sent::Summary { target, acc } => {
                self.summary_queued.remove(&target);
                self.last_summary.insert(target.clone(), now);
                for (id, kind) in acc.ids {
                    if self.summarizing.remove(&id).is_some() {
                        self.announced.insert(
                            id.clone(),
                            Announced {
                                id,
                                kind,
                                at: Timestamp::now(),
                                target: target.clone(),
                                field_path: None,
                                subject: String::new(),
                                container: None,
                                summarized: true,
                                unconfirmed: false,
                            },
                        );
                    }
                }
                self.stat(|s| {
                    s.sent += 1;
                    s.summaries += 1;
                });
            }
            Sent::Recover(entries) => {
                tracing::info!(
                    announced = entries.len(),
                    "recovered the findings this node announced from the API server"
                );
                for e in entries {
                    self.announced.entry(e.id.clone()).or_insert(e);
                }
                self.finish_recovery();
                return;
            }
        }
        self.dirty = true;
    }

    fn retry(&mut self, sent: Sent) {
        match sent {
            Sent::Announce(p) => {
                if self.open.contains(&p.entry.id) {
                    self.queue.push_front(Job::Announce(p));
                } else {
                    self.queued.remove(&p.entry.id);
                }
            }
            Sent::Resolve(id) => {
                if self.open.contains(&id) {
                    self.queued.remove(&id);
                } else {
                    self.queue.push_front(Job::Resolve(id));
                }
            }
            Sent::Summary { target, mut acc } => {
                acc.ids
                    .retain(|id, _| self.summarizing.get(id) == Some(&target));
                let pending = self.pending_summaries.entry(target.clone()).or_default();
                pending.ids.append(&mut acc.ids);
                self.queue.push_front(Job::Summary(target));
            }
            Sent::Recover(_) => {}
        }
    }

    fn give_up(&mut self, sent: Sent, now: Instant) {
        match sent {
            Sent::Announce(p) => {
                self.queued.remove(&p.entry.id);
                self.rejected.insert(p.entry.id);
            }
            Sent::Resolve(id) => {
                self.queued.remove(&id);
                self.announced.remove(&id);
                self.dirty = true;
            }
            Sent::Summary { target, acc } => {
                self.summary_queued.remove(&target);
                self.last_summary.insert(target, now);
                for id in acc.ids.into_keys() {
                    self.summarizing.remove(&id);
                    self.rejected.insert(id);
                }
            }
            Sent::Recover(_) => {
                tracing::warn!("cannot list existing Events (RBAC needs events list); findings announced before a restart may be announced again");
                self.finish_recovery();
            }
        }
    }

    fn finish_recovery(&mut self) {
        self.recovered = true;
        self.dirty = true;
        if let Some(st) = self.latest.clone() {
            self.on_state(st);
        }
    }

    fn persist(&mut self, now: Instant, force: bool) {
        let Some(dir) = &self.cfg.state_dir else {
            self.dirty = false;
            return;
        };
        if !self.dirty || (!force && now < self.next_persist) {
            return;
        }
        match ledger::save(dir, &self.cfg.node_name, self.announced.values()) {
            Ok(()) => {
                self.dirty = false;
                self.next_persist = now + PERSIST_INTERVAL;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot save the announced findings; a restart may repeat Events");
                self.next_persist = now + PERSIST_RETRY;
            }
        }
    }
}

/// Whether the finding's container belongs to a pod (the cgroup path names a pod uid), so
/// its Event should regard that Pod once the pod watch knows it.
fn awaits_pod_metadata(finding: &Finding, report: &Report) -> bool {
    finding
        .container_id
        .as_deref()
        .and_then(|id| report.container(id))
        .is_some_and(|c| c.pod_uid.is_some())
}

/// Which scans report a kind of finding: a finding from before a restart is resolved only
/// after those have run in this process.
fn scan_kinds(kind: FindingKind) -> &'static [ScanKind] {
    match kind {
        FindingKind::SetuidFile | FindingKind::SetgidFile | FindingKind::FileCapability => {
            &[ScanKind::Filesystems]
        }
        FindingKind::DeniedBinary => &[ScanKind::Processes, ScanKind::Filesystems],
        _ => &[ScanKind::Processes],
    }
}

fn scans_ran_since(st: &NodeState, kind: FindingKind, since: SystemTime) -> bool {
    scan_kinds(kind).iter().all(|k| {
        st.last_scans
            .get(k)
            .is_some_and(|run| run.finished_at.0 >= since)
    })
}

fn classify(e: &kube::Error) -> SendError {
    match e {
        kube::Error::Api(status)
            if status.code >= 500 || status.code == 429 || status.code == 409 =>
        {
            SendError::Retryable(e.to_string())
        }
        kube::Error::Api(_) | kube::Error::SerdeError(_) | kube::Error::BuildRequest(_) => {
            SendError::Permanent(e.to_string())
        }
        _ => SendError::Retryable(e.to_string()),
    }
}

async fn fetch_node_uid(client: &kube::Client, node: &str) -> Result<Option<String>, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    Ok(api.get(node).await?.metadata.uid)
}

/// The findings this node announced and did not resolve, read back from the Events the API
/// server still has.
async fn list_announced(
    client: &kube::Client,
    node: &str,
    ttl: Duration,
    timeout: Duration,
) -> Result<Vec<Announced>, SendError> {
    let api: Api<K8sEvent> = Api::all(client.clone());
    let mut params = ListParams::default()
        .fields(&format!("reportingController={REPORTING_CONTROLLER}"))
        .limit(LIST_PAGE);
    let now = SystemTime::now();
    // Latest word per finding id: Some(entry) announced, None resolved.
    let mut latest: HashMap<String, (SystemTime, Option<Announced>)> = HashMap::new();
    loop {
        let page = match tokio::time::timeout(timeout, api.list(&params)).await {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => return Err(classify(&e)),
            Err(_) => {
                return Err(SendError::Retryable(format!(
                    "listing Events: no answer within {timeout:?}"
                )))
            }
        };
        for ev in page.items {
            if let Some((id, at, entry)) = recovered_entry(&ev, node) {
                if ledger::expired(Timestamp(at), ttl, now) {
                    continue;
                }
                let newer = latest.get(&id).is_none_or(|(t, _)| at >= *t);
                if newer {
                    latest.insert(id, (at, entry));
                }
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    Ok(latest.into_values().filter_map(|(_, e)| e).collect())
}

/// (finding id, time, Some(announced) for a Warning or None for a Resolved) from one of our
/// Events.
fn recovered_entry(ev: &K8sEvent, node: &str) -> Option<(String, SystemTime, Option<Announced>)> {
    if ev.reporting_controller.as_deref() != Some(REPORTING_CONTROLLER)
        || ev.reporting_instance.as_deref() != Some(&render::clip(node, 128))
    {
        return None;
    }
    let regarding = ev.regarding.as_ref()?;
    let field_path = regarding.field_path.as_deref()?;
    let id = render::finding_id_of(field_path)?.to_string();
    let at: SystemTime = ev
        .series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(ev.event_time.as_ref().map(|t| t.0))?
        .into();
    let reason = ev.reason.as_deref()?;
    let (kind, resolved) = match reason.strip_suffix(RESOLVED_SUFFIX) {
        Some(base) if ev.type_.as_deref() == Some("Normal") => (base, true),
        _ => (reason, false),
    };
    let kind: FindingKind = kind.parse().ok()?;
    if resolved {
        return Some((id, at, None));
    }
    let target = match regarding.kind.as_deref()? {
        "Pod" => Target {
            kind: TargetKind::Pod,
            namespace: regarding.namespace.clone(),
            name: regarding.name.clone()?,
            uid: regarding.uid.clone(),
        },
        "Node" => Target::node(regarding.name.as_deref()?),
        _ => return None,
    };
    let entry = Announced {
        id: id.clone(),
        kind,
        at: Timestamp(at),
        target,
        field_path: Some(field_path.to_string()),
        subject: String::new(),
        container: None,
        summarized: false,
        unconfirmed: true,
    };
    Some((id, at, Some(entry)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeguard_model::{
        CgroupDriver, CgroupVersion, Container, Finding, Limits, PodRef, Report, Runtime,
        ScanStats, Severity,
    };

    const CID: &str = "c0ffee0000000000000000000000000000000000000000000000000000000001";

    fn worker(cfg: EventConfig) -> Worker {
        // Building a client connects nowhere; these tests never send.
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let mut w = Worker::new(client, cfg, Arc::default());
        w.recovered = true;
        w
    }

    fn finding(path: &str, severity: Severity) -> Finding {
        let mut f = Finding::new(FindingKind::SetuidFile, severity, Some(CID), path, "m");
        f.path = Some(path.to_string());
        f
    }

    fn state(findings: &[&Finding]) -> Arc<NodeState> {
        let now = Timestamp::now();
        let report = Report {
            schema_version: 1,
            node: "node-a".into(),
            scanned_at: now,
            duration_ms: 1,
            containers: vec![Container {
                id: CID.into(),
                runtime: Runtime::Containerd,
                pod_uid: Some("uid-1".into()),
                qos: None,
                cgroup: "/kubepods/x".into(),
                cgroup_driver: CgroupDriver::Cgroupfs,
                cgroup_version: CgroupVersion::V2,
                limits: Limits::default(),
                pod_limits: None,
                effective_limits: Limits::default(),
                unknown_limits: Vec::new(),
                node_allocatable: None,
                sandbox: false,
                pids: vec![1],
                rootfs: None,
                pod: Some(PodRef {
                    namespace: "shop".into(),
                    name: "web-0".into(),
                    container_name: Some("app".into()),
                    image: None,
                    image_id: None,
                }),
            }],
            processes: vec![],
            files: vec![],
            findings: findings.iter().map(|f| (*f).clone()).collect(),
            stats: ScanStats::default(),
            warnings: vec![],
        };
        Arc::new(NodeState {
            report: Arc::new(report),
            findings: findings
                .iter()
                .map(|f| TrackedFinding {
                    finding: (*f).clone(),
                    first_seen: now,
                    last_seen: now,
                })
                .collect(),
            last_scans: BTreeMap::new(),
            findings_detected: BTreeMap::new(),
            errors_total: BTreeMap::new(),
            policy_reload_failures: 0,
            policy_loaded_at: now,
        })
    }

    /// What the queue holds, as `A:<path>`, `R:<id>`, `S`.
    fn queue(w: &Worker) -> Vec<String> {
        w.queue
            .iter()
            .map(|j| match j {
                Job::Announce(p) => format!("A:{}", p.entry.subject),
                Job::Resolve(id) => format!("R:{id}"),
                Job::Summary(_) => "S".to_string(),
            })
            .collect()
    }

    /// Pretends the API server accepted the job at the head of the queue.
    fn accept_front(w: &mut Worker) {
        let sent = match w.queue.pop_front().unwrap() {
            Job::Announce(p) => Sent::Announce(p),
            Job::Resolve(id) => Sent::Resolve(id),
            Job::Summary(target) => {
                let acc = w.pending_summaries.remove(&target).unwrap_or_default();
                Sent::Summary { target, acc }
            }
        };
        w.on_done(Attempt {
            sent,
            uid: UidOutcome::Unchanged,
            result: Ok(()),
        });
    }

    fn stats(w: &Worker) -> EventStats {
        *w.stats.lock().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn budget_summary_overflow_and_refill_over_time() {
        let mut cfg = EventConfig::new("node-a");
        cfg.per_object_burst = 2;
        cfg.queue_capacity = 3;
        let mut w = worker(cfg);
        let (a, b, c, d, e) = (
            finding("/a", Severity::Low),
            finding("/b", Severity::Critical),
            finding("/c", Severity::High),
            finding("/d", Severity::Low),
            finding("/e", Severity::Low),
        );
        w.on_state(state(&[&a, &b, &c]));
        // The budget goes to the worst two; the third waits for a summary.
        assert_eq!(queue(&w), ["A:/b", "A:/c", "S"]);
        assert_eq!(stats(&w).rate_limited, 1);

        // The queue is full: d does not fit, counted once however often it is offered.
        for _ in 0..3 {
            w.on_state(state(&[&a, &b, &c, &d]));
        }
        assert_eq!(queue(&w), ["A:/b", "A:/c", "S"]);
        assert_eq!(stats(&w).queue_overflow, 1);

        for _ in 0..3 {
            accept_front(&mut w);
        }
        assert_eq!(stats(&w).summaries, 1);
        assert!(w.announced[&a.id].summarized);
        // Room again, but no budget: d waits for the next summary, which is 7 minutes off.
        w.on_state(state(&[&a, &b, &c, &d]));
        assert!(queue(&w).is_empty());
        assert_eq!(stats(&w).rate_limited, 2);

        // Five minutes refill one token: a new finding gets its own Event.
        tokio::time::advance(Duration::from_secs(300)).await;
        w.on_state(state(&[&a, &b, &c, &d, &e]));
        assert_eq!(queue(&w), ["A:/e"]);
        accept_front(&mut w);
        tokio::time::advance(Duration::from_secs(120)).await;
        w.schedule_summaries(Instant::now());
        assert_eq!(queue(&w), ["S"]);
        assert_eq!(w.pending_summaries.values().next().unwrap().ids.len(), 1);
        accept_front(&mut w);

        // Resolutions: Events for what was announced one by one, silence for the summarized.
        w.on_state(state(&[]));
        let mut q = queue(&w);
        q.sort();
        let mut want: Vec<String> = [&b, &c, &e].iter().map(|f| format!("R:{}", f.id)).collect();
        want.sort();
        assert_eq!(q, want);
        assert!(!w.announced.contains_key(&a.id) && !w.announced.contains_key(&d.id));
        // A finding back before its Resolved went out: the Resolved is dropped.
        w.on_state(state(&[&b]));
        assert_eq!(queue(&w).len(), 2);
        assert!(!queue(&w).contains(&format!("R:{}", b.id)));
    }

    /// `st` as the scan would report it before the pod watch knows the container's pod.
    fn without_pod_metadata(st: &NodeState, first_seen: Timestamp) -> Arc<NodeState> {
        let mut report = (*st.report).clone();
        report.containers[0].pod = None;
        let mut st = st.clone();
        st.report = Arc::new(report);
        for t in &mut st.findings {
            t.first_seen = first_seen;
        }
        Arc::new(st)
    }

    fn queued_targets(w: &Worker) -> Vec<(TargetKind, String)> {
        w.queue
            .iter()
            .filter_map(|j| match j {
                Job::Announce(p) => Some((p.entry.target.kind.clone(), p.entry.subject.clone())),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn pod_findings_wait_for_their_pod_then_fall_back_to_the_node() {
        let a = finding("/a", Severity::High);
        let known = state(&[&a]);

        // The pod watch has not listed yet: nothing goes to the Node; then the pod is known.
        let mut w = worker(EventConfig::new("node-a"));
        w.on_state(without_pod_metadata(&known, Timestamp::now()));
        assert!(queue(&w).is_empty(), "{:?}", queue(&w));
        w.on_state(known.clone());
        assert_eq!(queued_targets(&w), [(TargetKind::Pod, "/a".to_string())]);

        // The pod never shows up: after the wait, the Node rather than nothing.
        let mut w = worker(EventConfig::new("node-a"));
        let long_ago = Timestamp(SystemTime::now() - Duration::from_secs(61));
        w.on_state(without_pod_metadata(&known, long_ago));
        assert_eq!(queued_targets(&w), [(TargetKind::Node, "/a".to_string())]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_keep_the_work() {
        let mut cfg = EventConfig::new("node-a");
        cfg.backoff_initial = Duration::from_secs(1);
        let mut w = worker(cfg);
        let a = finding("/a", Severity::High);
        w.on_state(state(&[&a]));
        let Some(Job::Announce(p)) = w.queue.pop_front() else {
            panic!("nothing queued")
        };
        w.on_done(Attempt {
            sent: Sent::Announce(p),
            uid: UidOutcome::Unchanged,
            result: Err(SendError::Retryable("500".into())),
        });
        assert_eq!(queue(&w), ["A:/a"], "kept for a retry");
        let now = Instant::now();
        assert!(w.next_attempt > now, "backing off");
        assert!(w.start_next(now).is_none(), "no request during the backoff");
        assert_eq!(w.next_wake(now, false), Some(w.next_attempt));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(w.start_next(Instant::now()).is_some(), "retried after it");

        // Refused for good: not retried, not offered again while it stays open.
        let b = finding("/b", Severity::High);
        w.on_state(state(&[&a, &b]));
        let Some(Job::Announce(p)) = w.queue.pop_front() else {
            panic!("nothing queued")
        };
        w.on_done(Attempt {
            sent: Sent::Announce(p),
            uid: UidOutcome::Unchanged,
            result: Err(SendError::Permanent("422".into())),
        });
        w.on_state(state(&[&a, &b]));
        assert!(queue(&w).is_empty());
        assert_eq!(stats(&w).failed, 2);
    }
}
