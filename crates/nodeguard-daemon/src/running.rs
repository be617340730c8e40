//! The running loop: what wakes it (the schedule, exec events, a merge due, control
//! messages) and what it does then. Decisions about time live in [`Timetable`]; blocking work
//! goes through one helper ([`Running::blocking`]); a policy reload through one
//! ([`Running::reload_and_republish`]).

use crate::exec_batch::{Batch, Gatherer};
use crate::timetable::Timetable;
use crate::{
    add, jittered, next_exec, process_cpu, publish, refresh_exec, release_freed_memory,
    reload_policy, scope_name, Book, Control, Error, ExecFeed, ExecFeedStats, ExecWake, Schedule,
    StateSender,
};
use nodeguard_model::{
    ExecEventSource, NodeState, PodLookup, ScanKind, ScanRun, Severity, Timestamp,
};
use nodeguard_scan::{HoldStats, ScanScope, Scanner};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Whether the loop goes on after a step, or a shutdown arrived meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Continue,
    Shutdown,
}

/// Everything the loop holds while it runs.
pub(crate) struct Running {
    /// `None` only while a pass runs on a blocking thread.
    pub(crate) scanner: Option<Scanner>,
    pub(crate) book: Book,
    pub(crate) timetable: Timetable,
    pub(crate) schedule: Schedule,
    pub(crate) policy: crate::PolicySource,
    pub(crate) pods: Arc<dyn PodLookup>,
    pub(crate) exec_feed: Option<ExecFeed>,
    /// Gathers exec events into batches.
    pub(crate) gatherer: Gatherer,
    pub(crate) feed_stats: Option<Arc<ExecFeedStats>>,
    /// The holder's counters, when exec'd processes are held at their event.
    pub(crate) hold_stats: Option<Arc<HoldStats>>,
    /// Losses the feed's counter showed so far.
    pub(crate) lost_seen: u64,
    pub(crate) state: StateSender,
    pub(crate) control: mpsc::Receiver<Control>,
    /// A reload arrived while a pass ran: done when it ends.
    pub(crate) reload_pending: bool,
}

impl Running {
    pub(crate) async fn run(mut self) -> Result<(), Error> {
        loop {
            if self.reload_pending {
                self.reload_and_republish().await;
            }
            if let Some(scope) = self.timetable.scan_due(Instant::now()) {
                if self.scan(scope).await? == Step::Shutdown {
                    return Ok(());
                }
                continue;
            }
            let wake = self.timetable.next_scan();
            let merge_at = self.timetable.merge_due();
            let reread_at = self.scanner.as_ref().and_then(Scanner::held_back_until);
            let step = tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => Step::Continue,
                woken = next_exec(&mut self.exec_feed, reread_at) => self.on_exec(woken).await?,
                _ = tokio::time::sleep_until(merge_at.unwrap_or(wake).into()), if merge_at.is_some() => {
                    self.merge().await?
                }
                msg = self.control.recv() => match msg {
                    Some(Control::ReloadPolicy) => {
                        self.reload_pending = true;
                        Step::Continue
                    }
                    Some(Control::Shutdown) | None => {
                        tracing::info!("shutting down");
                        Step::Shutdown
                    }
                },
            };
            if step == Step::Shutdown {
                return Ok(());
            }
        }
    }

    fn scanner(&mut self) -> Result<&mut Scanner, Error> {
        self.scanner
            .as_mut()
            .ok_or_else(|| Error::ScanThread("scanner lost".into()))
    }

    /// Runs `work` on the scanner on a blocking thread while answering control messages: a
    /// reload waits for it (`reload_pending`), a shutdown leaves it behind (the runtime's
    /// shutdown timeout bounds that) and returns `None`.
    async fn blocking<T: Send + 'static>(
        &mut self,
        what: &'static str,
        work: impl FnOnce(&mut Scanner) -> T + Send + 'static,
    ) -> Result<Option<T>, Error> {
        let Some(mut scanner) = self.scanner.take() else {
            return Err(Error::ScanThread("scanner lost".into()));
        };
        let mut joined = tokio::task::spawn_blocking(move || {
            let out = work(&mut scanner);
            (scanner, out)
        });
        loop {
            tokio::select! {
                joined = &mut joined => {
                    let (scanner, out) = joined.map_err(|e| Error::ScanThread(e.to_string()))?;
                    self.scanner = Some(scanner);
                    return Ok(Some(out));
                }
                msg = self.control.recv() => match msg {
                    Some(Control::ReloadPolicy) => self.reload_pending = true,
                    Some(Control::Shutdown) | None => {
                        tracing::info!("shutting down during {what}");
                        return Ok(None);
                    }
                },
            }
        }
    }

    /// Re-reads the policy file, publishes the outcome (counted either way) and brings a
    /// process scan to now so that the new policy shows.
    async fn reload_and_republish(&mut self) {
        self.reload_pending = false;
        if let Some(scanner) = self.scanner.as_mut() {
            reload_policy(scanner, &self.policy, &mut self.book).await;
        }
        self.book.republish(&self.state);
        self.timetable.scan_now(Instant::now());
    }

    /// `report` as the new state with the feed's latest counters: the state, and how many
    /// findings appeared and resolved (the caller sends it).
    fn publish(&mut self, report: nodeguard_model::Report) -> (Arc<NodeState>, usize, usize) {
        refresh_exec(
            &mut self.book.exec,
            self.feed_stats.as_deref(),
            self.hold_stats.as_deref(),
            &self.exec_feed,
        );
        publish(&mut self.book, report)
    }

    /// One scan, its report published (or its failure counted and republished).
    async fn scan(&mut self, scope: ScanScope) -> Result<Step, Error> {
        // Losses no event announced yet (the reader's channel was full).
        if let Some(lost_now) = self.feed_stats.as_ref().map(|s| s.lost()) {
            if lost_now > self.lost_seen {
                self.lost_seen = lost_now;
                self.scanner()?.collector().execs_lost();
            }
        }
        let pods = Arc::clone(&self.pods);
        let started = Instant::now();
        let cpu_before = process_cpu();
        let Some(result) = self
            .blocking("a scan", move |s| s.scan(scope, pods.as_ref()))
            .await?
        else {
            return Ok(Step::Shutdown);
        };
        let elapsed = started.elapsed();
        // The whole agent's CPU meanwhile (the scan's reader threads included): on a busy
        // machine the wall time says more about the others than about the scan.
        let cpu_ms = process_cpu().zip(cpu_before).map(|(after, before)| {
            (after.saturating_sub(before).as_secs_f64() * 1e4).round() / 10.0
        });
        let book = &mut self.book;
        let ok = result.is_ok();
        match result {
            Ok(report) => {
                let kinds: &[ScanKind] = match scope {
                    ScanScope::Processes => &[ScanKind::Processes],
                    ScanScope::ProcessesAndFilesystems => {
                        &[ScanKind::Processes, ScanKind::Filesystems]
                    }
                };
                for kind in kinds {
                    book.scan_finished(*kind, elapsed, true);
                    book.last_scans.insert(
                        *kind,
                        ScanRun {
                            finished_at: Timestamp::now(),
                            duration_ms: elapsed.as_millis() as u64,
                        },
                    );
                }
                let (next, appeared, resolved) = self.publish(report);
                release_freed_memory();
                let mut open = [0usize; 4];
                for t in &next.findings {
                    open[t.finding.severity as usize] += 1;
                }
                // One line per scan; only new high/critical findings get their own.
                tracing::info!(
                    scope = scope_name(scope),
                    duration_ms = elapsed.as_millis() as u64,
                    cpu_ms,
                    processes = next.report.processes.len(),
                    containers = next.report.containers.len(),
                    findings = next.findings.len(),
                    critical = open[Severity::Critical as usize],
                    high = open[Severity::High as usize],
                    medium = open[Severity::Medium as usize],
                    low = open[Severity::Low as usize],
                    new = appeared,
                    resolved,
                    warnings = next.report.warnings.len(),
                    "scan complete"
                );
                self.state.send_replace(Some(next));
            }
            Err(err) => {
                // Counted as a failed process scan (a filesystem scan runs inside one), and
                // published so that every sink sees the failure.
                book.scan_finished(ScanKind::Processes, elapsed, false);
                add(&mut book.totals.errors, "scan", 1);
                tracing::error!(error = %err, "scan failed");
                book.republish(&self.state);
            }
        }
        self.timetable.scan_done(
            scope,
            Instant::now(),
            ok,
            jittered(self.schedule.interval, self.schedule.jitter),
            jittered(self.schedule.fs_interval, self.schedule.jitter),
        );
        Ok(Step::Continue)
    }

    /// What the exec side of the loop does when woken: read the batch's processes at once
    /// (a process may live milliseconds); merging waits until their reads matter.
    async fn on_exec(&mut self, woken: ExecWake) -> Result<Step, Error> {
        let (pids, held) = match woken {
            ExecWake::Closed => {
                tracing::warn!(
                    "exec events stopped; processes are now seen by the scans on the interval only"
                );
                self.exec_feed = None;
                self.book.exec.source = ExecEventSource::Polling;
                self.scanner()?.collector().watch_execs(false);
                return Ok(Step::Continue);
            }
            // Nothing new: the held-back processes are read with an empty batch.
            ExecWake::Reread => (Vec::new(), Vec::new()),
            ExecWake::Event(first) => {
                let Some(feed) = self.exec_feed.as_mut() else {
                    return Ok(Step::Continue);
                };
                let Batch {
                    pids, held, lost, ..
                } = self.gatherer.gather(first, &mut feed.receiver).await;
                let lost_now = feed.stats.lost();
                if lost || lost_now > self.lost_seen {
                    self.lost_seen = lost_now;
                    self.scanner()?.collector().execs_lost();
                    if self.timetable.events_lost(Instant::now()) {
                        tracing::warn!(
                            lost = lost_now,
                            "exec events were lost; a full scan follows in {:?}",
                            crate::RECONCILE_AFTER_LOSS
                        );
                    }
                }
                // Before the first scan there is nothing to add to; that scan is due, and
                // told of these execs in case it already read those processes.
                if self.book.last.is_none() || pids.is_empty() {
                    self.scanner()?.collector().execs_seen(&pids);
                    return Ok(Step::Continue);
                }
                (pids, held)
            }
        };
        let pods = Arc::clone(&self.pods);
        let Some(result) = self
            .blocking("an exec pass", move |s| {
                s.read_held_execs(&pids, held, pods.as_ref())
            })
            .await?
        else {
            return Ok(Step::Shutdown);
        };
        match result {
            Ok(pass) => {
                self.book.exec.unread = self.book.exec.unread.saturating_add(pass.vanished as u64);
            }
            Err(err) => {
                add(&mut self.book.totals.errors, "exec_pass", 1);
                tracing::error!(error = %err, "reading exec'd processes failed");
            }
        }
        // Each read's findings are checked once against the open ones: reads that raise
        // nothing new (most execs) wait for a later merge or the next scan, and cost no
        // merge of the whole report.
        let ledger = &self.book.ledger;
        let matters = self
            .scanner
            .as_mut()
            .is_some_and(|s| s.pending_execs_matter(|id| ledger.is_open(id)));
        if matters {
            self.timetable.reads_matter(Instant::now());
        }
        Ok(Step::Continue)
    }

    /// Merges the exec reads waiting into the latest report and publishes it.
    async fn merge(&mut self) -> Result<Step, Error> {
        self.timetable.merge_started();
        let Some(base) = self.book.last.clone() else {
            return Ok(Step::Continue);
        };
        let pods = Arc::clone(&self.pods);
        let started = Instant::now();
        let Some(report) = self
            .blocking("an exec pass", move |s| {
                // Nothing waits when a scan took the reads since they mattered.
                s.has_pending_execs()
                    .then(|| s.merge_execs(&base.report, pods.as_ref()))
            })
            .await?
        else {
            return Ok(Step::Shutdown);
        };
        if let Some(report) = report {
            self.timetable.merged(Instant::now());
            self.book.exec.passes = self.book.exec.passes.saturating_add(1);
            let (next, appeared, resolved) = self.publish(report);
            tracing::debug!(
                duration_ms = started.elapsed().as_millis() as u64,
                new = appeared,
                resolved,
                "exec pass published"
            );
            self.state.send_replace(Some(next));
        }
        Ok(Step::Continue)
    }
}
