//! The pure half of the publisher: state and time in, jobs out.
//!
//! [`Planner`] owns every decision — the diff of open findings against the announced set,
//! admission by severity, per-object and node-wide budgets, summaries for what is over
//! budget, the queue bound, retry or give up after a request — and does no I/O: no client,
//! no clock (every method takes `now`, and `wall` where a wall-clock time is recorded), no
//! files. Its tests drive it with plain values. The task in `mod.rs` feeds it states, hands
//! the [`Request`]s it returns to the sender and reports each outcome back with
//! [`Planner::on_done`].
//!
//! What it plans is generic where that was cheap: a job is "announce this finding about this
//! object", "say it is gone", or "summarize what was over this object's budget"; how that is
//! worded and sent (an Event today) lives in `render.rs` and `send.rs`.

use super::ledger::{self, Announced};
use super::render;
use super::EventConfig;
use crate::publish::limits::{Pace, TokenBucket};
use crate::publish::outcome::SendError;
use crate::publish::placement::{self, Target};
use nodeguard_model::{
    EventStats, FindingKind, NodeState, ScanKind, Severity, Timestamp, TrackedFinding,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;

/// Work waiting for the API server.
pub(crate) enum Job {
    Announce(Box<Pending>),
    Resolve(String),
    Summary(Target),
}

/// A new finding ready to announce; `entry.at` is set when the API server accepts it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pending {
    pub entry: Announced,
    pub note: String,
    /// Orders it among other objects' work with as many Events so far.
    pub severity: Severity,
    /// When it was planned: with the finding id it names the Event, so a retry of a create
    /// that did reach the API server meets `AlreadyExists` instead of making a second Event.
    pub planned: SystemTime,
}

/// Findings over an object's budget, waiting for its summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SummaryAcc {
    pub ids: BTreeMap<String, FindingKind>,
    /// The worst finding it covers: orders the summary among other work.
    pub worst: Option<Severity>,
    /// When the summary was first planned (names its Event, kept across retries).
    pub planned: Option<SystemTime>,
}

/// What a request is about; handed back with its outcome.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sent {
    Announce(Box<Pending>),
    /// The announced entry being resolved (a copy, for the note).
    Resolve(Box<Announced>),
    Summary {
        target: Target,
        acc: SummaryAcc,
    },
}

pub(crate) struct Planner {
    cfg: EventConfig,
    stats: EventStats,
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
    /// Per-object buckets, one for high and critical findings and one for the rest, so
    /// that medium findings never spend what a new high one needs.
    buckets: HashMap<(Target, bool), TokenBucket>,
    /// Requests given out per object (kept while the object has work queued or announced
    /// findings): the next request goes to the object with the fewest, so a new pod's first
    /// Event does not wait behind another object's backlog under the node-wide cap.
    given: HashMap<Target, u64>,
    /// The node-wide bucket and the backoff.
    pace: Pace,
    /// The announced set changed since it was last saved.
    dirty: bool,
}

impl Planner {
    /// A planner that already announced `announced` (read back from the state file) and
    /// whose process started at `started_at`. `seed` feeds the backoff's jitter.
    pub(crate) fn new(
        cfg: EventConfig,
        announced: Vec<Announced>,
        now: Instant,
        started_at: SystemTime,
        seed: u64,
    ) -> Planner {
        Planner {
            stats: EventStats::default(),
            started_at,
            latest: None,
            open: HashSet::new(),
            announced: announced.into_iter().map(|e| (e.id.clone(), e)).collect(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            summary_queued: HashSet::new(),
            summarizing: HashMap::new(),
            pending_summaries: HashMap::new(),
            last_summary: HashMap::new(),
            rejected: HashSet::new(),
            overflowed: HashSet::new(),
            buckets: HashMap::new(),
            given: HashMap::new(),
            pace: Pace::new(
                cfg.node_rate_per_sec,
                cfg.node_burst,
                cfg.backoff_initial,
                cfg.backoff_max,
                seed,
                now,
            ),
            dirty: false,
            cfg,
        }
    }

    /// Counters so far, with `queued` as it is now.
    pub(crate) fn stats(&self) -> EventStats {
        let mut s = self.stats;
        s.queued = self.queue.len() as u64;
        s
    }

    /// The announced set, for saving.
    pub(crate) fn announced(&self) -> impl Iterator<Item = &Announced> {
        self.announced.values()
    }

    /// Whether the announced set changed since [`Planner::mark_saved`].
    pub(crate) fn dirty(&self) -> bool {
        self.dirty
    }

    pub(crate) fn mark_saved(&mut self) {
        self.dirty = false;
    }

    /// Diffs a new state against what was announced and queues the difference.
    pub(crate) fn on_state(&mut self, st: Arc<NodeState>, now: Instant, wall: SystemTime) {
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

        self.admit(&st, now, wall);
        self.schedule_summaries(now);
        self.buckets.retain(|_, b| !b.is_full(now));
        let mut live: HashSet<Target> = self.announced.values().map(|e| e.target.clone()).collect();
        for job in &self.queue {
            if let Some(target) = self.job_target(job) {
                live.insert(target.clone());
            }
        }
        live.extend(self.pending_summaries.keys().cloned());
        self.given.retain(|t, _| live.contains(t));
    }

    /// Queues announcements for new findings within their objects' budgets; the rest wait
    /// for a summary.
    fn admit(&mut self, st: &NodeState, now: Instant, wall: SystemTime) {
        let mut new: Vec<&TrackedFinding> = st
            .findings
            .iter()
            .filter(|t| {
                let id = &t.finding.id;
                // Below the Event threshold: PolicyReports, metrics and the API carry it.
                t.finding.severity >= self.cfg.min_severity
                    && !self.announced.contains_key(id)
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
        for t in new {
            let f = &t.finding;
            let placement = placement::place(f, &st.report, &self.cfg.node_name);
            if placement::waits_for_pod(t, &placement, &st.report, self.cfg.pod_metadata_wait, wall)
            {
                // Offered again with the next state, which may know the pod.
                continue;
            }
            if self.queue.len() >= self.cfg.queue_capacity {
                // A full queue makes room for a worse finding: its least severe
                // announcement leaves (offered again with a later state).
                match self.evict_below(f.severity) {
                    Some(evicted) => overflow.push(evicted),
                    None => {
                        overflow.push(f.id.clone());
                        continue;
                    }
                }
            }
            let urgent = f.severity >= Severity::High;
            let bucket = self
                .buckets
                .entry((placement.target.clone(), urgent))
                .or_insert_with(|| {
                    TokenBucket::new(self.cfg.per_object_burst, self.cfg.per_object_refill, now)
                });
            if bucket.try_take(now) {
                let note = render::warning_note(f, &placement);
                let entry = Announced {
                    id: f.id.clone(),
                    kind: f.kind,
                    at: Timestamp(wall),
                    target: placement.target,
                    field_path: Some(placement.field_path),
                    subject: f.path.clone().unwrap_or_else(|| f.subject.clone()),
                    container: placement.container,
                    summarized: false,
                    unconfirmed: false,
                };
                self.queued.insert(f.id.clone());
                self.queue.push_back(Job::Announce(Box::new(Pending {
                    entry,
                    note,
                    severity: f.severity,
                    planned: wall,
                })));
            } else {
                rate_limited += 1;
                self.summarizing
                    .insert(f.id.clone(), placement.target.clone());
                let acc = self.pending_summaries.entry(placement.target).or_default();
                acc.planned.get_or_insert(wall);
                acc.worst = acc.worst.max(Some(f.severity));
                acc.ids.insert(f.id.clone(), f.kind);
            }
        }
        self.stats.rate_limited += rate_limited;
        for id in overflow {
            self.count_overflow(&id);
        }
    }

    /// Drops the queued announcement of lowest severity below `severity` (the newest of
    /// those), and returns its finding id.
    fn evict_below(&mut self, severity: Severity) -> Option<String> {
        let index = self
            .queue
            .iter()
            .enumerate()
            .filter_map(|(i, job)| match job {
                Job::Announce(p) if p.severity < severity => Some((p.severity, Reverse(i))),
                _ => None,
            })
            .min()
            .map(|(_, Reverse(i))| i)?;
        let Some(Job::Announce(p)) = self.queue.remove(index) else {
            return None;
        };
        self.queued.remove(&p.entry.id);
        Some(p.entry.id)
    }

    fn count_overflow(&mut self, id: &str) {
        if self.overflowed.insert(id.to_string()) {
            self.stats.queue_overflow += 1;
        }
    }

    /// Queues a summary for each object with over-budget findings whose last summary is old
    /// enough.
    pub(crate) fn schedule_summaries(&mut self, now: Instant) {
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

    /// When the planner has something to do without any input (a request the backoff or
    /// the node bucket holds back, a summary coming due); `busy` while a request is in
    /// flight.
    pub(crate) fn next_wake(&mut self, now: Instant, busy: bool) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        if !busy && !self.queue.is_empty() {
            at(self.pace.ready_at(now));
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
        wake
    }

    /// The next request, if backoff and the node-wide bucket allow one now: the worst
    /// finding first, then the job of the object that was given the fewest requests so far,
    /// then the oldest job. Under the node-wide cap a new high or critical finding goes next
    /// whatever waits, and among equals a new object's first Event (and a resolution) does
    /// not wait behind the backlog of objects that already have many.
    pub(crate) fn next_request(&mut self, now: Instant) -> Option<Sent> {
        if self.pace.held(now) {
            return None;
        }
        self.drop_moot();
        let index = self.pick()?;
        if !self.pace.try_take(now) {
            return None;
        }
        let sent = match self.queue.remove(index)? {
            Job::Announce(p) => Sent::Announce(p),
            Job::Resolve(id) => {
                // drop_moot() kept only resolutions of announced findings.
                let entry = self.announced.get(&id)?.clone();
                Sent::Resolve(Box::new(entry))
            }
            Job::Summary(target) => {
                let acc = self.pending_summaries.remove(&target).unwrap_or_default();
                Sent::Summary { target, acc }
            }
        };
        *self.given.entry(sent_target(&sent).clone()).or_default() += 1;
        Some(sent)
    }

    /// Drops queued work that no longer applies, without spending a token on it.
    fn drop_moot(&mut self) {
        let announced = &self.announced;
        let pending = &self.pending_summaries;
        let queued = &mut self.queued;
        let summary_queued = &mut self.summary_queued;
        self.queue.retain(|job| match job {
            Job::Resolve(id) if !announced.contains_key(id) => {
                queued.remove(id);
                false
            }
            Job::Summary(target) if !pending.contains_key(target) => {
                summary_queued.remove(target);
                false
            }
            _ => true,
        });
    }

    /// The object a queued job is about.
    fn job_target<'a>(&'a self, job: &'a Job) -> Option<&'a Target> {
        match job {
            Job::Announce(p) => Some(&p.entry.target),
            Job::Resolve(id) => self.announced.get(id).map(|e| &e.target),
            Job::Summary(target) => Some(target),
        }
    }

    /// Where in the queue the next request comes from (see [`Planner::next_request`]). A
    /// summary counts as the worst finding it covers, a resolution as a medium one (after
    /// new high and critical findings, before a backlog of low ones).
    fn pick(&self) -> Option<usize> {
        self.queue
            .iter()
            .enumerate()
            .min_by_key(|(index, job)| {
                let severity = match job {
                    Job::Announce(p) => p.severity,
                    Job::Summary(target) => self
                        .pending_summaries
                        .get(target)
                        .and_then(|acc| acc.worst)
                        .unwrap_or(Severity::High),
                    Job::Resolve(_) => Severity::Medium,
                };
                let given = self
                    .job_target(job)
                    .and_then(|t| self.given.get(t))
                    .copied()
                    .unwrap_or(0);
                (Reverse(severity), given, *index)
            })
            .map(|(index, _)| index)
    }

    /// Takes the outcome of a request [`Planner::next_request`] gave out.
    pub(crate) fn on_done(
        &mut self,
        sent: Sent,
        result: Result<(), SendError>,
        now: Instant,
        wall: SystemTime,
    ) {
        match result {
            Ok(()) => {
                self.pace.succeeded();
                self.succeeded(sent, now, wall);
            }
            // A conflict other than `AlreadyExists` (which the sender takes as sent) is
            // retried; a 404 is refused for good.
            Err(SendError::Retryable(why) | SendError::Conflict(why)) => {
                self.stats.failed += 1;
                if let Some(given) = self.given.get_mut(sent_target(&sent)) {
                    *given = given.saturating_sub(1);
                }
                let delay = self.pace.failed(now);
                tracing::warn!(%why, retry_in = ?delay, failures = self.pace.failures(), "the API server did not take an Event; backing off");
                self.retry(sent);
            }
            Err(SendError::Permanent(why) | SendError::NotFound(why)) => {
                self.stats.failed += 1;
                tracing::warn!(%why, "the API server refused an Event; not retrying it");
                self.give_up(sent, now);
            }
        }
    }

    fn succeeded(&mut self, sent: Sent, now: Instant, wall: SystemTime) {
        match sent {
            Sent::Announce(p) => {
                let mut entry = p.entry;
                entry.at = Timestamp(wall);
                self.queued.remove(&entry.id);
                self.overflowed.remove(&entry.id);
                self.announced.insert(entry.id.clone(), entry);
                self.stats.sent += 1;
            }
            Sent::Resolve(entry) => {
                self.queued.remove(&entry.id);
                self.announced.remove(&entry.id);
                self.overflowed.remove(&entry.id);
                self.stats.sent += 1;
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
                                at: Timestamp(wall),
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
                self.stats.sent += 1;
                self.stats.summaries += 1;
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
            Sent::Resolve(entry) => {
                if self.open.contains(&entry.id) {
                    self.queued.remove(&entry.id);
                } else {
                    self.queue.push_front(Job::Resolve(entry.id));
                }
            }
            Sent::Summary { target, mut acc } => {
                acc.ids
                    .retain(|id, _| self.summarizing.get(id) == Some(&target));
                let pending = self.pending_summaries.entry(target.clone()).or_default();
                pending.ids.append(&mut acc.ids);
                pending.worst = pending.worst.max(acc.worst);
                // The retry keeps the name of the request that may have reached the server.
                pending.planned = acc.planned.or(pending.planned);
                self.queue.push_front(Job::Summary(target));
            }
        }
    }

    fn give_up(&mut self, sent: Sent, now: Instant) {
        match sent {
            Sent::Announce(p) => {
                self.queued.remove(&p.entry.id);
                self.rejected.insert(p.entry.id);
            }
            Sent::Resolve(entry) => {
                self.queued.remove(&entry.id);
                self.announced.remove(&entry.id);
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
        }
    }
}

/// The object a request is about.
fn sent_target(sent: &Sent) -> &Target {
    match sent {
        Sent::Announce(p) => &p.entry.target,
        Sent::Resolve(entry) => &entry.target,
        Sent::Summary { target, .. } => target,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::placement::TargetKind;
    use nodeguard_model::{CgroupVersion, Finding, Severity};
    use std::time::Duration;

    const CID: &str = "c0ffee0000000000000000000000000000000000000000000000000000000001";
    const CID2: &str = "c0ffee0000000000000000000000000000000000000000000000000000000002";

    /// Plain values for time: a monotonic and a wall clock that tests move by hand.
    struct Clock {
        now: Instant,
        wall: SystemTime,
    }

    impl Clock {
        fn new() -> Clock {
            Clock {
                now: Instant::now(),
                wall: SystemTime::now(),
            }
        }
        fn advance(&mut self, by: Duration) {
            self.now += by;
            self.wall += by;
        }
    }

    /// A planner with nothing announced yet; no client exists anywhere in these tests.
    fn planner(cfg: EventConfig, clock: &Clock) -> Planner {
        Planner::new(cfg, Vec::new(), clock.now, clock.wall, 7)
    }

    fn finding(path: &str, severity: Severity) -> Finding {
        let mut f = Finding::new(FindingKind::SetuidFile, severity, Some(CID), path, "m");
        f.path = Some(path.to_string());
        f
    }

    fn state(findings: &[&Finding]) -> Arc<NodeState> {
        let findings: Vec<Finding> = findings.iter().map(|f| (*f).clone()).collect();
        Arc::new(nodeguard_testkit::model::state(
            "node-a",
            vec![nodeguard_testkit::model::container(CID)
                .cgroup("/kubepods/x")
                .cgroup_version(CgroupVersion::V2)
                .pod(
                    Some("uid-1"),
                    Some(nodeguard_testkit::model::pod_ref("shop", "web-0", "app")),
                )
                .build()],
            &findings,
            Timestamp::now(),
        ))
    }

    /// What the queue holds, as `A:<path>`, `R:<id>`, `S`.
    fn queue(w: &Planner) -> Vec<String> {
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
    fn accept_front(w: &mut Planner, clock: &Clock) {
        let sent = match w.queue.pop_front().unwrap() {
            Job::Announce(p) => Sent::Announce(p),
            Job::Resolve(id) => Sent::Resolve(Box::new(w.announced[&id].clone())),
            Job::Summary(target) => {
                let acc = w.pending_summaries.remove(&target).unwrap_or_default();
                Sent::Summary { target, acc }
            }
        };
        w.on_done(sent, Ok(()), clock.now, clock.wall);
    }

    fn stats(w: &Planner) -> EventStats {
        w.stats()
    }

    #[test]
    fn budget_summary_overflow_and_refill_over_time() {
        let mut cfg = EventConfig::new("node-a");
        cfg.per_object_burst = 2;
        cfg.queue_capacity = 3;
        let mut clock = Clock::new();
        let mut w = planner(cfg, &clock);
        // All high or critical: one bucket of the object's.
        let (a, b, c, d, e) = (
            finding("/a", Severity::High),
            finding("/b", Severity::Critical),
            finding("/c", Severity::Critical),
            finding("/d", Severity::High),
            finding("/e", Severity::High),
        );
        w.on_state(state(&[&a, &b, &c]), clock.now, clock.wall);
        // The budget goes to the worst two; the third waits for a summary.
        let mut q = queue(&w);
        q[..2].sort();
        assert_eq!(q, ["A:/b", "A:/c", "S"]);
        assert_eq!(stats(&w).rate_limited, 1);

        // The queue is full: d does not fit, counted once however often it is offered.
        for _ in 0..3 {
            w.on_state(state(&[&a, &b, &c, &d]), clock.now, clock.wall);
        }
        assert_eq!(queue(&w).len(), 3);
        assert!(!queue(&w).contains(&"A:/d".to_string()));
        assert_eq!(stats(&w).queue_overflow, 1);

        for _ in 0..3 {
            accept_front(&mut w, &clock);
        }
        assert_eq!(stats(&w).summaries, 1);
        assert!(w.announced[&a.id].summarized);
        // Room again, but no budget: d waits for the next summary, which is 7 minutes off.
        w.on_state(state(&[&a, &b, &c, &d]), clock.now, clock.wall);
        assert!(queue(&w).is_empty());
        assert_eq!(stats(&w).rate_limited, 2);

        // Five minutes refill one token: a new finding gets its own Event.
        clock.advance(Duration::from_secs(300));
        w.on_state(state(&[&a, &b, &c, &d, &e]), clock.now, clock.wall);
        assert_eq!(queue(&w), ["A:/e"]);
        accept_front(&mut w, &clock);
        clock.advance(Duration::from_secs(120));
        w.schedule_summaries(clock.now);
        assert_eq!(queue(&w), ["S"]);
        assert_eq!(w.pending_summaries.values().next().unwrap().ids.len(), 1);
        accept_front(&mut w, &clock);

        // Resolutions: Events for what was announced one by one, silence for the summarized.
        w.on_state(state(&[]), clock.now, clock.wall);
        let mut q = queue(&w);
        q.sort();
        let mut want: Vec<String> = [&b, &c, &e].iter().map(|f| format!("R:{}", f.id)).collect();
        want.sort();
        assert_eq!(q, want);
        assert!(!w.announced.contains_key(&a.id) && !w.announced.contains_key(&d.id));
        // A finding back before its Resolved went out: the Resolved is dropped.
        w.on_state(state(&[&b]), clock.now, clock.wall);
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

    fn queued_targets(w: &Planner) -> Vec<(TargetKind, String)> {
        w.queue
            .iter()
            .filter_map(|j| match j {
                Job::Announce(p) => Some((p.entry.target.kind.clone(), p.entry.subject.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn pod_findings_wait_for_their_pod_then_fall_back_to_the_node() {
        let clock = Clock::new();
        let a = finding("/a", Severity::High);
        let known = state(&[&a]);

        // The pod watch has not listed yet: nothing goes to the Node; then the pod is known.
        let mut w = planner(EventConfig::new("node-a"), &clock);
        w.on_state(
            without_pod_metadata(&known, Timestamp(clock.wall)),
            clock.now,
            clock.wall,
        );
        assert!(queue(&w).is_empty(), "{:?}", queue(&w));
        w.on_state(known.clone(), clock.now, clock.wall);
        assert_eq!(queued_targets(&w), [(TargetKind::Pod, "/a".to_string())]);

        // The pod never shows up: after the wait, the Node rather than nothing.
        let mut w = planner(EventConfig::new("node-a"), &clock);
        let long_ago = Timestamp(clock.wall - Duration::from_secs(61));
        w.on_state(
            without_pod_metadata(&known, long_ago),
            clock.now,
            clock.wall,
        );
        assert_eq!(queued_targets(&w), [(TargetKind::Node, "/a".to_string())]);
    }

    #[test]
    fn failures_back_off_and_keep_the_work() {
        let mut cfg = EventConfig::new("node-a");
        cfg.backoff_initial = Duration::from_secs(1);
        let mut clock = Clock::new();
        let mut w = planner(cfg, &clock);
        let a = finding("/a", Severity::High);
        w.on_state(state(&[&a]), clock.now, clock.wall);
        let Some(Job::Announce(p)) = w.queue.pop_front() else {
            panic!("nothing queued")
        };
        w.on_done(
            Sent::Announce(p),
            Err(SendError::Retryable("500".into())),
            clock.now,
            clock.wall,
        );
        assert_eq!(queue(&w), ["A:/a"], "kept for a retry");
        let now = clock.now;
        assert!(w.pace.next_attempt() > now, "backing off");
        assert!(
            w.next_request(now).is_none(),
            "no request during the backoff"
        );
        assert_eq!(w.next_wake(now, false), Some(w.pace.next_attempt()));
        clock.advance(Duration::from_secs(1));
        assert!(w.next_request(clock.now).is_some(), "retried after it");

        // Refused for good: not retried, not offered again while it stays open.
        let b = finding("/b", Severity::High);
        w.on_state(state(&[&a, &b]), clock.now, clock.wall);
        let Some(Job::Announce(p)) = w.queue.pop_front() else {
            panic!("nothing queued")
        };
        w.on_done(
            Sent::Announce(p),
            Err(SendError::Permanent("422".into())),
            clock.now,
            clock.wall,
        );
        w.on_state(state(&[&a, &b]), clock.now, clock.wall);
        assert!(queue(&w).is_empty());
        assert_eq!(stats(&w).failed, 2);
    }

    /// The planner, the Event wording and the sender together against a fake API server that
    /// stores the first create but never answers it: the planner retries after its backoff
    /// under the same name, the API server says `409 AlreadyExists`, the finding counts as
    /// announced, and the API server holds one Event for it, not two.
    #[tokio::test]
    async fn a_timed_out_create_that_reached_the_server_is_retried_under_its_name_not_repeated() {
        use super::super::send::tests::{mock_sender, storing_server};
        let (sender, handle) = mock_sender(Duration::from_millis(300));
        let server = storing_server(handle, 2);
        let mut clock = Clock::new();
        let mut w = planner(EventConfig::new("node-a"), &clock);
        let a = finding("/a", Severity::High);
        w.on_state(state(&[&a]), clock.now, clock.wall);

        let sent = w.next_request(clock.now).expect("an Event to send");
        let result = sender
            .create(&super::super::outgoing(&sent, 25), None)
            .await;
        assert!(matches!(result, Err(SendError::Retryable(_))), "{result:?}");
        w.on_done(sent, result, clock.now, clock.wall);
        assert!(!w.announced.contains_key(&a.id));

        // The next scans: still open; the retry comes after the backoff.
        clock.advance(Duration::from_secs(5));
        w.on_state(state(&[&a]), clock.now, clock.wall);
        let sent = w.next_request(clock.now).expect("the retry");
        let result = sender
            .create(&super::super::outgoing(&sent, 25), None)
            .await;
        assert_eq!(result, Ok(()));
        w.on_done(sent, result, clock.now, clock.wall);
        assert!(w.announced.contains_key(&a.id));
        clock.advance(Duration::from_secs(5));
        w.on_state(state(&[&a]), clock.now, clock.wall);
        assert!(w.next_request(clock.now).is_none(), "announced once");

        let (stored, names) = server.await.unwrap();
        assert_eq!(names.len(), 2);
        assert_eq!(stored.len(), 1, "one Event for one finding: {names:?}");
        assert_eq!(stats(&w).sent, 1);
    }

    /// Under the node-wide cap, a pod that appears while other objects' start-up backlog is
    /// still queued gets its first Event next, and its resolution does not wait behind the
    /// backlog either.
    #[test]
    fn a_new_objects_first_event_and_its_resolution_go_before_anothers_backlog() {
        let mut clock = Clock::new();
        let mut cfg = EventConfig::new("node-a");
        cfg.min_severity = Severity::Low;
        let mut w = planner(cfg, &clock);
        let backlog: Vec<Finding> = (0..15)
            .map(|i| finding(&format!("/old{i}"), Severity::Low))
            .collect();
        let refs: Vec<&Finding> = backlog.iter().collect();
        w.on_state(state(&refs), clock.now, clock.wall);
        // Five of the fifteen go out.
        for _ in 0..5 {
            let sent = w.next_request(clock.now).expect("within the node's burst");
            w.on_done(sent, Ok(()), clock.now, clock.wall);
        }
        // A new pod's container with a medium finding.
        let mut late = finding("/late", Severity::Medium);
        late.container_id = Some(CID2.to_string());
        let mut st = (*state(&refs)).clone();
        let mut report = (*st.report).clone();
        report.containers.push(
            nodeguard_testkit::model::container(CID2)
                .cgroup("/kubepods/y")
                .cgroup_version(CgroupVersion::V2)
                .pod(
                    Some("uid-2"),
                    Some(nodeguard_testkit::model::pod_ref("shop", "late", "main")),
                )
                .build(),
        );
        report.findings.push(late.clone());
        st.report = Arc::new(report);
        st.findings.push(TrackedFinding {
            finding: late.clone(),
            first_seen: Timestamp(clock.wall),
            last_seen: Timestamp(clock.wall),
        });
        let with_late = Arc::new(st);
        clock.advance(Duration::from_secs(1));
        w.on_state(with_late.clone(), clock.now, clock.wall);
        let Some(Sent::Announce(p)) = w.next_request(clock.now) else {
            panic!("no announcement")
        };
        assert_eq!(p.entry.subject, "/late", "the new pod first");
        assert_eq!(p.entry.target.name, "late");
        w.on_done(Sent::Announce(p), Ok(()), clock.now, clock.wall);

        // The pod is gone while the backlog still waits: its Resolved goes next.
        clock.advance(Duration::from_secs(1));
        w.on_state(state(&refs), clock.now, clock.wall);
        let Some(Sent::Resolve(entry)) = w.next_request(clock.now) else {
            panic!("no resolution")
        };
        assert_eq!(entry.id, late.id);
        // The backlog resumes after it.
        assert!(matches!(w.next_request(clock.now), Some(Sent::Announce(_))));
    }

    fn on_host(path: &str, severity: Severity) -> Finding {
        let mut f = Finding::new(FindingKind::SetuidFile, severity, None, path, "m");
        f.path = Some(path.to_string());
        f
    }

    /// Sends what the node-wide bucket allows at `clock` and says which subjects went.
    fn send_ready(w: &mut Planner, clock: &Clock) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(sent) = w.next_request(clock.now) {
            if let Sent::Announce(p) = &sent {
                out.push(p.entry.subject.clone());
            }
            w.on_done(sent, Ok(()), clock.now, clock.wall);
        }
        out
    }

    /// The operator's node: hundreds of open low findings still draining at one Event a
    /// second, the Node given more Events than the pod. A new high finding on the Node goes
    /// out with the next token, not after the backlog.
    #[test]
    fn a_new_high_finding_goes_before_hundreds_of_waiting_low_ones() {
        let mut cfg = EventConfig::new("node-a");
        cfg.min_severity = Severity::Low;
        cfg.per_object_burst = 1000;
        let mut clock = Clock::new();
        let mut w = planner(cfg, &clock);
        let host: Vec<Finding> = (0..300)
            .map(|i| on_host(&format!("/host{i}"), Severity::Low))
            .collect();
        let pod: Vec<Finding> = (0..300)
            .map(|i| finding(&format!("/pod{i}"), Severity::Low))
            .collect();
        let host_refs: Vec<&Finding> = host.iter().collect();
        w.on_state(state(&host_refs), clock.now, clock.wall);
        assert_eq!(send_ready(&mut w, &clock).len(), 20, "the node's burst");
        let mut all: Vec<&Finding> = host.iter().chain(&pod).collect();
        w.on_state(state(&all), clock.now, clock.wall);
        for _ in 0..10 {
            clock.advance(Duration::from_secs(1));
            assert_eq!(send_ready(&mut w, &clock).len(), 1, "one a second");
        }
        assert!(stats(&w).queued > 500, "{:?}", stats(&w));

        let planted = on_host("/usr/local/bin/planted", Severity::High);
        all.push(&planted);
        w.on_state(state(&all), clock.now, clock.wall);
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            send_ready(&mut w, &clock),
            ["/usr/local/bin/planted"],
            "the high one with the next token"
        );
        assert!(stats(&w).queued > 500);

        // With a full queue of lower findings, a new critical one still gets in: the least
        // severe announcement makes room (counted, offered again later).
        let mut cfg = EventConfig::new("node-a");
        cfg.min_severity = Severity::Low;
        cfg.queue_capacity = 10;
        cfg.per_object_burst = 1000;
        let mut w = planner(cfg, &clock);
        let mediums: Vec<Finding> = (0..10)
            .map(|i| on_host(&format!("/m{i}"), Severity::Medium))
            .collect();
        let mut refs: Vec<&Finding> = mediums.iter().collect();
        w.on_state(state(&refs), clock.now, clock.wall);
        assert_eq!(stats(&w).queued, 10);
        let critical = on_host("/c", Severity::Critical);
        refs.push(&critical);
        w.on_state(state(&refs), clock.now, clock.wall);
        assert_eq!(stats(&w).queued, 10);
        assert_eq!(stats(&w).queue_overflow, 1);
        assert_eq!(send_ready(&mut w, &clock)[0], "/c");
    }

    /// By default only what someone should act on (medium and up) becomes an Event; the
    /// threshold is a setting.
    #[test]
    fn low_findings_get_no_event_by_default_and_the_threshold_is_configurable() {
        let clock = Clock::new();
        let (low, medium, high) = (
            on_host("/low", Severity::Low),
            on_host("/medium", Severity::Medium),
            on_host("/high", Severity::High),
        );
        let st = state(&[&low, &medium, &high]);

        let mut w = planner(EventConfig::new("node-a"), &clock);
        w.on_state(st.clone(), clock.now, clock.wall);
        let mut sent = send_ready(&mut w, &clock);
        sent.sort();
        assert_eq!(sent, ["/high", "/medium"]);
        // Never later either, and never counted as rate limited or overflowing.
        w.on_state(st.clone(), clock.now, clock.wall);
        assert!(send_ready(&mut w, &clock).is_empty());
        assert_eq!((stats(&w).rate_limited, stats(&w).queue_overflow), (0, 0));

        let mut cfg = EventConfig::new("node-a");
        cfg.min_severity = Severity::High;
        let mut w = planner(cfg, &clock);
        w.on_state(st.clone(), clock.now, clock.wall);
        assert_eq!(send_ready(&mut w, &clock), ["/high"]);

        let mut cfg = EventConfig::new("node-a");
        cfg.min_severity = Severity::Low;
        let mut w = planner(cfg, &clock);
        w.on_state(st, clock.now, clock.wall);
        assert_eq!(send_ready(&mut w, &clock), ["/high", "/medium", "/low"]);
    }
}
