//! What exec-time reads saw, kept for responders after the processes (and their pods) are gone.
//!
//! Open findings describe the node as it is now: once a container is gone, its findings
//! resolve at the next scan. What a short-lived process did is history, not state: each
//! process an exec-driven pass reads is recorded here as an [`ExecObservation`] (the process
//! as read, its pod, the findings it raised then), and `GET /v1/execs?since=10m` answers
//! from it. The history is bounded in entries, bytes and age; what the caps push out is
//! counted ([`ExecHistoryStats::dropped`]), never silently lost. The caps push out the oldest
//! observation that raised no finding first: a container exec'ing `true` a hundred times a
//! second cannot flush a dropped binary's observation out of the history within seconds. An
//! observation with findings goes to the caps only when none without is left.

use crate::{Finding, PodRef, Process, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// One process as an exec-driven pass read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecObservation {
    /// When it was read (right after its exec).
    pub observed_at: Timestamp,
    #[serde(flatten)]
    pub process: Process,
    /// The Kubernetes identity of its container when it was read; null for host processes
    /// and containers without known pod metadata.
    pub pod: Option<PodRef>,
    /// The findings this process raised when it was read (by the policy then in force).
    pub findings: Vec<Finding>,
}

impl ExecObservation {
    /// About what its JSON takes: what the byte cap counts.
    pub fn approx_bytes(&self) -> usize {
        let p = &self.process;
        let strings = p.command.len()
            + p.cmdline.len()
            + p.exe.as_ref().map_or(0, String::len)
            + p.container_id.as_ref().map_or(0, String::len)
            + p.sha256.as_ref().map_or(0, String::len)
            + p.sha512.as_ref().map_or(0, String::len)
            + p.hash_error.as_ref().map_or(0, String::len)
            + p.exe_mount
                .as_ref()
                .map_or(0, |m| m.mount_point.len() + m.fstype.len())
            + p.script.as_ref().map_or(0, |s| {
                s.path.len()
                    + s.mount
                        .as_ref()
                        .map_or(0, |m| m.mount_point.len() + m.fstype.len())
                    + s.sha256.as_ref().map_or(0, String::len)
                    + s.hash_error.as_ref().map_or(0, String::len)
            });
        let pod = self.pod.as_ref().map_or(0, |r| {
            r.namespace.len()
                + r.name.len()
                + r.container_name.as_ref().map_or(0, String::len)
                + r.image.as_ref().map_or(0, String::len)
                + r.image_id.as_ref().map_or(0, String::len)
                + 100
        });
        let findings: usize = self
            .findings
            .iter()
            .map(|f| {
                300 + f.id.len()
                    + f.subject.len()
                    + f.message.len()
                    + f.path.as_ref().map_or(0, String::len)
                    + f.container_id.as_ref().map_or(0, String::len)
            })
            .sum();
        // Numbers, capability sets, namespaces and field names.
        1024 + strings + pod + findings
    }
}

/// How much the history holds and what it had to let go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecHistoryStats {
    /// Observations held now.
    pub entries: usize,
    /// About how many bytes they take (see [`ExecObservation::approx_bytes`]).
    pub bytes: usize,
    /// Observations pushed out by the entry or byte cap before their age limit, since start.
    pub dropped: u64,
    pub max_entries: usize,
    pub max_bytes: usize,
    /// Observations older than this are forgotten, in seconds.
    pub max_age_secs: u64,
}

/// A bounded, shared log of [`ExecObservation`]s, oldest first. The scanner records into it
/// and the API reads it; the lock is held only to push or to copy out.
#[derive(Debug)]
pub struct ExecHistory {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_bytes: usize,
    max_age: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    /// Observations that raised a finding, oldest first.
    flagged: VecDeque<(ExecObservation, usize)>,
    /// Observations that raised none, oldest first: what the caps push out first.
    quiet: VecDeque<(ExecObservation, usize)>,
    bytes: usize,
    dropped: u64,
}

impl Inner {
    fn len(&self) -> usize {
        self.flagged.len() + self.quiet.len()
    }

    /// Pushes out the oldest quiet observation, else the oldest flagged one (counted).
    fn push_out_one(&mut self) {
        let out = match self.quiet.pop_front() {
            Some(entry) => Some(entry),
            None => self.flagged.pop_front(),
        };
        if let Some((_, size)) = out {
            self.bytes -= size;
            self.dropped = self.dropped.saturating_add(1);
        }
    }
}

impl Default for ExecHistory {
    fn default() -> Self {
        ExecHistory::new(
            ExecHistory::DEFAULT_ENTRIES,
            ExecHistory::DEFAULT_BYTES,
            ExecHistory::DEFAULT_MAX_AGE,
        )
    }
}

impl ExecHistory {
    /// At most this many observations (4,096).
    pub const DEFAULT_ENTRIES: usize = 4096;
    /// At most about this many bytes of them (2 MiB; the heap they hold is ~1.15 times
    /// that, measured with `nodeguard-scan`'s `exec_history` example): the agent's steady
    /// RSS is ~20 MiB.
    pub const DEFAULT_BYTES: usize = 2 << 20;
    /// Kept at most this long (1 hour, the API server's default Event TTL).
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);

    pub fn new(max_entries: usize, max_bytes: usize, max_age: Duration) -> ExecHistory {
        ExecHistory {
            inner: Mutex::new(Inner::default()),
            max_entries: max_entries.max(1),
            max_bytes,
            max_age,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing a panicking holder leaves half-done matters here: take the data as it is.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds an observation, pushing out the oldest past the caps (counted; those that raised
    /// no finding first) and those past the age limit (not counted: they would have gone
    /// anyway). One larger than the whole byte cap is not kept (counted).
    pub fn record(&self, observation: ExecObservation) {
        let size = observation.approx_bytes();
        let now = observation.observed_at;
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        if size > self.max_bytes {
            inner.dropped = inner.dropped.saturating_add(1);
            return;
        }
        while inner.len() > 0
            && (inner.len() >= self.max_entries || inner.bytes + size > self.max_bytes)
        {
            inner.push_out_one();
        }
        inner.bytes += size;
        if observation.findings.is_empty() {
            inner.quiet.push_back((observation, size));
        } else {
            inner.flagged.push_back((observation, size));
        }
    }

    fn expire(&self, inner: &mut Inner, now: Timestamp) {
        let max_age = self.max_age;
        let mut expired = 0;
        for queue in [&mut inner.flagged, &mut inner.quiet] {
            while let Some((front, size)) = queue.front() {
                let age = now
                    .0
                    .duration_since(front.observed_at.0)
                    .unwrap_or_default();
                if age <= max_age {
                    break;
                }
                expired += *size;
                queue.pop_front();
            }
        }
        inner.bytes -= expired;
    }

    /// The observations made at or after `since`, oldest first, that `keep` accepts.
    pub fn since(
        &self,
        since: Timestamp,
        now: Timestamp,
        keep: impl Fn(&ExecObservation) -> bool,
    ) -> Vec<ExecObservation> {
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        let wanted = |queue: &VecDeque<(ExecObservation, usize)>| -> Vec<ExecObservation> {
            queue
                .iter()
                .map(|(o, _)| o)
                .filter(|o| o.observed_at >= since && keep(o))
                .cloned()
                .collect()
        };
        let (flagged, quiet) = (wanted(&inner.flagged), wanted(&inner.quiet));
        drop(inner);
        // Each queue is in the order recorded; one merge puts the two back into it.
        let mut out = Vec::with_capacity(flagged.len() + quiet.len());
        let (mut flagged, mut quiet) =
            (flagged.into_iter().peekable(), quiet.into_iter().peekable());
        loop {
            let take_flagged = match (flagged.peek(), quiet.peek()) {
                (Some(f), Some(q)) => f.observed_at <= q.observed_at,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_flagged {
                flagged.next()
            } else {
                quiet.next()
            };
            out.extend(next);
        }
        out
    }

    pub fn stats(&self) -> ExecHistoryStats {
        let inner = self.lock();
        ExecHistoryStats {
            entries: inner.len(),
            bytes: inner.bytes,
            dropped: inner.dropped,
            max_entries: self.max_entries,
            max_bytes: self.max_bytes,
            max_age_secs: self.max_age.as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn observation(pid: i32, at: SystemTime, cmdline_len: usize) -> ExecObservation {
        let process = Process {
            pid,
            ppid: 1,
            command: "sh".into(),
            cmdline: "x".repeat(cmdline_len),
            exe: Some("/bin/sh".into()),
            ..Process::default()
        };
        ExecObservation {
            observed_at: Timestamp(at),
            process,
            pod: None,
            findings: Vec::new(),
        }
    }

    #[test]
    fn bounded_by_entries_bytes_and_age_and_counts_what_the_caps_push_out() {
        let t0 = SystemTime::now();
        let h = ExecHistory::new(3, 100_000, Duration::from_secs(60));
        for pid in 1..=5 {
            h.record(observation(pid, t0 + Duration::from_secs(pid as u64), 10));
        }
        let pids: Vec<i32> = h
            .since(Timestamp(t0), Timestamp(t0), |_| true)
            .iter()
            .map(|o| o.process.pid)
            .collect();
        assert_eq!(pids, [3, 4, 5]);
        assert_eq!(h.stats().dropped, 2);
        // `since` filters; the byte cap holds however long the command lines are.
        let later = h.since(
            Timestamp(t0 + Duration::from_secs(5)),
            Timestamp(t0),
            |_| true,
        );
        assert_eq!(later.len(), 1);
        let h = ExecHistory::new(1000, 10_000, Duration::from_secs(60));
        for pid in 1..=20 {
            h.record(observation(pid, t0, 3000));
        }
        let s = h.stats();
        assert!(s.bytes <= 10_000 && s.entries == 2, "{s:?}");
        assert_eq!(s.dropped, 18);
        h.record(observation(99, t0, 20_000));
        assert_eq!(h.stats().dropped, 19, "one over the whole cap is not kept");
        // Past the age limit: gone without counting as dropped.
        let empty = h.since(
            Timestamp(t0),
            Timestamp(t0 + Duration::from_secs(61)),
            |_| true,
        );
        assert!(empty.is_empty());
        assert_eq!(h.stats().entries, 0);
        assert_eq!(h.stats().dropped, 19);
    }

    /// A busy container exec'ing harmless commands cannot flush out the observation of a
    /// process that raised a finding: the caps take the quiet ones first, and only when
    /// none is left the oldest flagged one. Listing stays in the order recorded.
    #[test]
    fn a_flood_of_quiet_execs_pushes_out_quiet_ones_before_a_flagged_one() {
        let t0 = SystemTime::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let flagged = |pid: i32, s: u64| {
            let mut o = observation(pid, at(s), 10);
            o.findings.push(crate::Finding::new(
                crate::FindingKind::BinaryDrift,
                crate::Severity::High,
                None,
                "/tmp/dropped",
                "dropped",
            ));
            o
        };
        let h = ExecHistory::new(4, 1_000_000, Duration::from_secs(3600));
        h.record(observation(1, at(1), 10));
        h.record(flagged(2, 2));
        for pid in 3..=100 {
            h.record(observation(pid, at(pid as u64), 10));
        }
        let pids = |h: &ExecHistory| -> Vec<i32> {
            h.since(Timestamp(t0), Timestamp(at(100)), |_| true)
                .iter()
                .map(|o| o.process.pid)
                .collect()
        };
        assert_eq!(
            pids(&h),
            [2, 98, 99, 100],
            "the flagged one stays, in time order"
        );
        assert_eq!(h.stats().dropped, 96);
        // Only flagged ones left: the oldest of them goes.
        for pid in 101..=104 {
            h.record(flagged(pid, pid as u64));
        }
        assert_eq!(pids(&h), [101, 102, 103, 104]);
        assert_eq!(h.stats().dropped, 100);
    }
}
