//! The loop's schedule as a plain value: when the next process scan and filesystem scan are
//! due, when the exec reads waiting are merged, and what a loss of exec events brings forward.
//!
//! No clock and no randomness here: every method takes `now` (and the jittered intervals, which
//! the loop draws), so its tests drive it with plain `Instant`s. The loop in `lib.rs` asks it
//! what is due and tells it what happened.

use nodeguard_scan::ScanScope;
use std::time::{Duration, Instant};

/// After lost exec events, the next full scan starts this soon (unless one is due sooner).
pub const RECONCILE_AFTER_LOSS: Duration = Duration::from_secs(1);

/// Exec reads are merged into the report and published at most this often (a burst of execs
/// that raise something new makes one new state per gap, not one per exec). The first such
/// read after a quiet spell is merged at once.
pub const EXEC_PUBLISH_GAP: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Timetable {
    next_process: Instant,
    next_fs: Instant,
    /// No scan has completed yet: the first is a process scan (the agent is ready sooner),
    /// the first filesystem scan follows right after it.
    first: bool,
    /// When the exec reads waiting are merged, once they matter.
    merge_at: Option<Instant>,
    last_merge: Option<Instant>,
}

impl Timetable {
    /// Both scans due at once (`now`).
    pub(crate) fn new(now: Instant) -> Timetable {
        Timetable {
            next_process: now,
            next_fs: now,
            first: true,
            merge_at: None,
            last_merge: None,
        }
    }

    /// The scan due at `now`, if one is.
    pub(crate) fn scan_due(&self, now: Instant) -> Option<ScanScope> {
        if now < self.next_process && now < self.next_fs {
            return None;
        }
        Some(if now >= self.next_fs && !self.first {
            ScanScope::ProcessesAndFilesystems
        } else {
            ScanScope::Processes
        })
    }

    /// When the next scan is due.
    pub(crate) fn next_scan(&self) -> Instant {
        self.next_process.min(self.next_fs)
    }

    /// A scan of `scope` ended at `done` (`ok`: it produced a report). `interval` and
    /// `fs_interval` are the (jittered) gaps to the next ones. A successful scan read every
    /// process, so the exec reads waiting are in it and no merge is due.
    pub(crate) fn scan_done(
        &mut self,
        scope: ScanScope,
        done: Instant,
        ok: bool,
        interval: Duration,
        fs_interval: Duration,
    ) {
        if scope == ScanScope::ProcessesAndFilesystems {
            self.next_fs = done + fs_interval;
        }
        if self.first {
            self.first = false;
            self.next_fs = done;
        }
        self.next_process = done + interval;
        if ok {
            self.merge_at = None;
        }
    }

    /// A process scan at once (a policy was reloaded: re-evaluate so it shows).
    pub(crate) fn scan_now(&mut self, now: Instant) {
        self.next_process = now;
    }

    /// Exec events were lost at `now`: the next full scan comes within
    /// [`RECONCILE_AFTER_LOSS`]. Returns whether that brought it forward.
    pub(crate) fn events_lost(&mut self, now: Instant) -> bool {
        let soon = now + RECONCILE_AFTER_LOSS;
        if soon < self.next_process {
            self.next_process = soon;
            true
        } else {
            false
        }
    }

    /// Exec reads waiting raise something new: merge them at once, or
    /// [`EXEC_PUBLISH_GAP`] after the last merge, whichever is later (a merge already due
    /// stays as it is).
    pub(crate) fn reads_matter(&mut self, now: Instant) {
        if self.merge_at.is_none() {
            let after_gap = self.last_merge.map_or(now, |last| last + EXEC_PUBLISH_GAP);
            self.merge_at = Some(now.max(after_gap));
        }
    }

    /// When the reads waiting are merged, if they are to be.
    pub(crate) fn merge_due(&self) -> Option<Instant> {
        self.merge_at
    }

    /// The merge due is starting.
    pub(crate) fn merge_started(&mut self) {
        self.merge_at = None;
    }

    /// A merge was published at `now`: the next waits [`EXEC_PUBLISH_GAP`].
    pub(crate) fn merged(&mut self, now: Instant) {
        self.last_merge = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(10);
    const FS_INTERVAL: Duration = Duration::from_secs(600);

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    /// The first scan is a process scan, the first filesystem scan follows right after it,
    /// then each comes at its own interval.
    #[test]
    fn a_process_scan_first_then_a_filesystem_scan_then_each_at_its_interval() {
        let t0 = Instant::now();
        let mut t = Timetable::new(t0);
        assert_eq!(t.scan_due(t0), Some(ScanScope::Processes));
        t.scan_done(
            ScanScope::Processes,
            secs(t0, 1.0),
            true,
            INTERVAL,
            FS_INTERVAL,
        );
        assert_eq!(
            t.scan_due(secs(t0, 1.0)),
            Some(ScanScope::ProcessesAndFilesystems)
        );
        t.scan_done(
            ScanScope::ProcessesAndFilesystems,
            secs(t0, 3.0),
            true,
            INTERVAL,
            FS_INTERVAL,
        );
        assert_eq!(t.scan_due(secs(t0, 12.9)), None);
        assert_eq!(t.next_scan(), secs(t0, 13.0));
        assert_eq!(t.scan_due(secs(t0, 13.0)), Some(ScanScope::Processes));
        t.scan_done(
            ScanScope::Processes,
            secs(t0, 13.1),
            true,
            INTERVAL,
            FS_INTERVAL,
        );
        assert_eq!(t.next_scan(), secs(t0, 23.1));
        assert_eq!(
            t.scan_due(secs(t0, 603.0)),
            Some(ScanScope::ProcessesAndFilesystems)
        );
    }

    /// A loss brings the next full scan forward to a second from then, never later than it
    /// was due.
    #[test]
    fn a_loss_of_exec_events_brings_the_reconciliation_forward() {
        let t0 = Instant::now();
        let mut t = Timetable::new(t0);
        t.scan_done(
            ScanScope::Processes,
            t0,
            true,
            Duration::from_secs(3600),
            FS_INTERVAL,
        );
        t.scan_done(
            ScanScope::ProcessesAndFilesystems,
            t0,
            true,
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        assert_eq!(t.scan_due(secs(t0, 60.0)), None);
        assert!(t.events_lost(secs(t0, 60.0)), "brought forward");
        assert_eq!(t.scan_due(secs(t0, 60.9)), None);
        assert_eq!(t.scan_due(secs(t0, 61.0)), Some(ScanScope::Processes));
        assert!(!t.events_lost(secs(t0, 60.5)), "one is due sooner already");
        assert_eq!(t.next_scan(), secs(t0, 61.0));
    }

    /// Reads that matter are merged at once after a quiet spell, then at most every
    /// EXEC_PUBLISH_GAP; a completed scan takes them (no merge due), a failed one does not.
    #[test]
    fn merges_come_at_once_after_a_quiet_spell_then_at_most_every_gap() {
        let t0 = Instant::now();
        let mut t = Timetable::new(t0);
        assert_eq!(t.merge_due(), None);
        t.reads_matter(t0);
        assert_eq!(t.merge_due(), Some(t0), "the first at once");
        t.merge_started();
        t.merged(t0);
        t.reads_matter(secs(t0, 0.1));
        assert_eq!(t.merge_due(), Some(t0 + EXEC_PUBLISH_GAP));
        t.reads_matter(secs(t0, 0.2));
        assert_eq!(
            t.merge_due(),
            Some(t0 + EXEC_PUBLISH_GAP),
            "one merge covers both"
        );

        t.scan_done(
            ScanScope::Processes,
            secs(t0, 0.2),
            false,
            INTERVAL,
            FS_INTERVAL,
        );
        assert_eq!(
            t.merge_due(),
            Some(t0 + EXEC_PUBLISH_GAP),
            "a failed scan read nothing"
        );
        t.scan_done(
            ScanScope::Processes,
            secs(t0, 0.2),
            true,
            INTERVAL,
            FS_INTERVAL,
        );
        assert_eq!(t.merge_due(), None, "the scan read them");

        t.reads_matter(secs(t0, 5.0));
        assert_eq!(t.merge_due(), Some(secs(t0, 5.0)), "quiet since: at once");
    }

    /// A reload scans at once.
    #[test]
    fn a_reload_brings_a_process_scan_to_now() {
        let t0 = Instant::now();
        let mut t = Timetable::new(t0);
        t.scan_done(ScanScope::Processes, t0, true, INTERVAL, FS_INTERVAL);
        t.scan_done(
            ScanScope::ProcessesAndFilesystems,
            t0,
            true,
            INTERVAL,
            FS_INTERVAL,
        );
        t.scan_now(secs(t0, 2.0));
        assert_eq!(t.scan_due(secs(t0, 2.0)), Some(ScanScope::Processes));
    }
}
