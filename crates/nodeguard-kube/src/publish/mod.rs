//! What the Event and PolicyReport publishers share: the handle ([`Publisher`]), the task
//! that feeds a planner states and runs its requests ([`Task`], [`spawn`]), the node-wide
//! pace of requests (`limits.rs`: token bucket, backoff) and the send context (`send.rs`:
//! the client, the per-request timeout, how API errors are sorted) and where a finding belongs
//! (`placement.rs`: the Pod or the Node).
//!
//! Each publisher is one task that owns everything. It keeps only the newest
//! [`NodeState`] (a `watch` channel, so the scanner never waits for it), runs one request at
//! a time beside the planning (a hanging API server delays its writes but never state
//! updates) and publishes its counters on a `watch` channel of their own, which metrics read
//! at scrape time: the same shape as the daemon's state channel (newest value only, the
//! writer never waits on a reader).

pub(crate) mod limits;
pub(crate) mod outcome;
pub(crate) mod placement;
pub(crate) mod send;

use futures::future::{BoxFuture, OptionFuture};
use nodeguard_model::{fnv1a, NodeState};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;
use tokio::time::Instant;

/// A publisher running in its own task, with counters `S`. Dropping the state sender ends
/// the task; dropping the publisher does not.
pub struct Publisher<S> {
    stats: watch::Receiver<S>,
    task: tokio::task::JoinHandle<()>,
    name: &'static str,
}

impl<S: Copy> Publisher<S> {
    /// Counters since start; never waits on the API server.
    pub fn stats(&self) -> S {
        *self.stats.borrow()
    }

    /// The counters' channel, which the publisher's task updates as they change: a reader
    /// (metrics, at scrape time) that outlives the publisher, fed the way the daemon feeds
    /// the sinks.
    pub fn stats_channel(&self) -> watch::Receiver<S> {
        self.stats.clone()
    }

    /// Waits until the task has ended (the state sender was dropped and whatever the
    /// publisher keeps was saved).
    pub async fn join(self) {
        if let Err(error) = self.task.await {
            tracing::error!(%error, "{} task failed", self.name);
        }
    }
}

/// One publisher's side of the loop [`spawn`] runs: a planner and a sender behind plain
/// calls. Methods that take `now` are called with the loop's clock; the rest read the clocks
/// they need themselves (the planners under them are pure).
pub(crate) trait Task: Send + 'static {
    type Stats: Copy + PartialEq + Default + Send + Sync + 'static;
    /// A planned request, handed back with its answer.
    type Request: Send + 'static;
    type Answer: Send + 'static;
    /// For logs: "event publisher", "PolicyReport publisher".
    const NAME: &'static str;

    /// A new state.
    fn on_state(&mut self, st: Arc<NodeState>);
    /// At the top of each round, before a request is chosen.
    fn prepare(&mut self, _now: Instant) {}
    /// The next request, if one may go now.
    fn next_request(&mut self, now: Instant) -> Option<Self::Request>;
    /// Sends `request` (the future owns what it needs).
    fn send(&self, request: Self::Request) -> BoxFuture<'static, (Self::Request, Self::Answer)>;
    /// After a request was chosen (or not): bookkeeping of the round.
    fn settle(&mut self, _now: Instant) {}
    /// When there is something to do without new input; `busy` while a request is in
    /// flight.
    fn next_wake(&mut self, now: Instant, busy: bool) -> Option<Instant>;
    /// The answer to a request [`Task::next_request`] gave out.
    fn on_done(&mut self, request: Self::Request, answer: Self::Answer);
    fn stats(&self) -> Self::Stats;
    /// The state sender is gone: last words before the task ends.
    fn stop(&mut self) {}
}

/// Spawns the task `make` builds (in the task, so what it reads, such as a state file,
/// never holds up the caller) on the current tokio runtime, fed by `state`; returns at once.
pub(crate) fn spawn<T: Task>(
    make: impl FnOnce() -> T + Send + 'static,
    state: watch::Receiver<Option<Arc<NodeState>>>,
) -> Publisher<T::Stats> {
    let (shared, stats) = watch::channel(T::Stats::default());
    let task = tokio::spawn(async move { drive(make(), shared, state).await });
    Publisher {
        stats,
        task,
        name: T::NAME,
    }
}

/// The task: feeds states to the planner, runs one request at a time beside it.
async fn drive<T: Task>(
    mut task: T,
    shared: watch::Sender<T::Stats>,
    mut state: watch::Receiver<Option<Arc<NodeState>>>,
) {
    let first = state.borrow_and_update().clone();
    if let Some(st) = first {
        task.on_state(st);
    }
    let mut inflight: Option<BoxFuture<'static, (T::Request, T::Answer)>> = None;
    loop {
        let now = Instant::now();
        task.prepare(now);
        if inflight.is_none() {
            inflight = task.next_request(now).map(|request| task.send(request));
        }
        task.settle(now);
        publish(&shared, task.stats());
        let wake = task.next_wake(now, inflight.is_some());
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    break;
                }
                // Clone the Arc out at once: a held borrow would block the sender.
                let st = state.borrow_and_update().clone();
                if let Some(st) = st {
                    task.on_state(st);
                }
            }
            Some((request, answer)) = OptionFuture::from(inflight.as_mut()) => {
                inflight = None;
                task.on_done(request, answer);
            }
            _ = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
        }
    }
    // A request already sent may have been taken by the API server: its answer decides what
    // is saved (an Event created but not recorded would be announced again after a restart).
    // The send's own timeout bounds this wait.
    if let Some(pending) = inflight.take() {
        let (request, answer) = pending.await;
        task.on_done(request, answer);
    }
    task.stop();
    publish(&shared, task.stats());
    tracing::debug!("{} stopped: the state sender is gone", T::NAME);
}

fn publish<S: Copy + PartialEq>(shared: &watch::Sender<S>, stats: S) {
    shared.send_if_modified(|current| {
        let changed = *current != stats;
        *current = stats;
        changed
    });
}

/// A seed for a publisher's backoff jitter: the node's name from `basis` and the time, so a
/// fleet of agents does not retry in step.
pub(crate) fn jitter_seed(node_name: &str, basis: u64) -> u64 {
    fnv1a(basis, node_name.bytes())
        ^ SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
}
