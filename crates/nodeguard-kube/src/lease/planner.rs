//! When the heartbeat Lease is written and what the next request is. Pure: time comes in
//! as arguments, answers come in sorted (`SendError`).
//!
//! One renewal per interval, at most: annotation changes wait for the next renewal and ride
//! on it, so a busy node writes no more than a quiet one. Errors back off (from 1 s,
//! doubling, jittered, up to the interval); a `404` on renewal (someone deleted the Lease)
//! creates it again at once; a `409` (the Lease changed under us, or exists already at
//! create) reads it again and retries once at once, then backs off.

use crate::publish::limits::Backoff;
use crate::publish::outcome::SendError;
use nodeguard_model::fleet::LeaseStats;
use std::time::Duration;
use tokio::time::Instant;

/// The request to make next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Read the Lease (at start and after a conflict): learn its resourceVersion.
    Read,
    /// Create it (absent).
    Create,
    /// Renew it: replace it as last read or written, with a new renewTime and the current
    /// annotations.
    Renew,
}

#[derive(Debug)]
pub(crate) struct Planner {
    interval: Duration,
    op: Op,
    due: Instant,
    /// A conflict was already retried at once since the last success.
    conflict_retried: bool,
    backoff: Backoff,
    stats: LeaseStats,
}

impl Planner {
    /// Reads the Lease at once, then renews every `interval`.
    pub(crate) fn new(interval: Duration, seed: u64, now: Instant) -> Planner {
        let interval = interval.max(Duration::from_secs(1));
        Planner {
            interval,
            op: Op::Read,
            due: now,
            conflict_retried: false,
            backoff: Backoff::new(Duration::from_secs(1), interval, seed),
            stats: LeaseStats::default(),
        }
    }

    /// The request to make now, if one is due.
    pub(crate) fn next_request(&self, now: Instant) -> Option<Op> {
        (now >= self.due).then_some(self.op)
    }

    /// When the next request is due.
    pub(crate) fn due(&self) -> Instant {
        self.due
    }

    pub(crate) fn stats(&self) -> LeaseStats {
        self.stats
    }

    /// The answer to `op`, made at `now`.
    pub(crate) fn on_done(&mut self, op: Op, answer: Result<(), SendError>, now: Instant) {
        let write = op != Op::Read;
        match (op, answer) {
            (Op::Read, Ok(())) => self.go(Op::Renew, now),
            (Op::Read, Err(SendError::NotFound(_))) => self.go(Op::Create, now),
            (Op::Create, Ok(())) => {
                self.stats.created += 1;
                self.succeeded(now);
            }
            (Op::Renew, Ok(())) => {
                self.stats.renewed += 1;
                self.succeeded(now);
            }
            (Op::Renew, Err(SendError::NotFound(_))) => {
                // Deleted under us: create it again, now.
                self.stats.failed += 1;
                self.go(Op::Create, now);
            }
            (_, Err(SendError::Conflict(_))) => {
                // Changed under us, or created by a previous run: read it and retry, once at
                // once, later with backoff.
                if write {
                    self.stats.failed += 1;
                }
                if std::mem::replace(&mut self.conflict_retried, true) {
                    self.back_off(Op::Read, now);
                } else {
                    self.go(Op::Read, now);
                }
            }
            (op, Err(_)) => {
                // A write that failed in transit may have been applied: the next renewal
                // then meets a 409 and reads again.
                if write {
                    self.stats.failed += 1;
                }
                self.back_off(op, now);
            }
        }
    }

    fn go(&mut self, op: Op, now: Instant) {
        self.op = op;
        self.due = now;
    }

    fn back_off(&mut self, op: Op, now: Instant) {
        self.op = op;
        self.due = now + self.backoff.next_delay();
    }

    fn succeeded(&mut self, now: Instant) {
        self.backoff.reset();
        self.conflict_retried = false;
        self.op = Op::Renew;
        self.due = now + self.interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(10);

    fn ok() -> Result<(), SendError> {
        Ok(())
    }
    fn err(e: fn(String) -> SendError) -> Result<(), SendError> {
        Err(e("for the test".into()))
    }

    /// Runs the planner for `span`, answering every request with `answer`, and returns the
    /// requests made.
    fn run(
        p: &mut Planner,
        t0: Instant,
        span: Duration,
        mut answer: impl FnMut(Op) -> Result<(), SendError>,
    ) -> Vec<(Duration, Op)> {
        let mut made = Vec::new();
        let mut now = t0;
        while now < t0 + span {
            if let Some(op) = p.next_request(now) {
                made.push((now - t0, op));
                p.on_done(op, answer(op), now);
            } else {
                now = p.due().max(now + Duration::from_millis(1));
            }
        }
        made
    }

    #[test]
    fn an_absent_lease_is_created_then_renewed_once_per_interval() {
        let t0 = Instant::now();
        let mut p = Planner::new(INTERVAL, 1, t0);
        let mut exists = false;
        let made = run(&mut p, t0, Duration::from_secs(100), |op| match op {
            Op::Read if !exists => err(SendError::NotFound),
            Op::Create => {
                exists = true;
                ok()
            }
            _ => ok(),
        });
        let ops: Vec<Op> = made.iter().map(|(_, op)| *op).collect();
        assert_eq!(&ops[..3], &[Op::Read, Op::Create, Op::Renew]);
        let writes = made.iter().filter(|(_, op)| *op != Op::Read).count();
        assert_eq!(
            writes, 10,
            "one create then one renewal every 10 s in 100 s"
        );
        for pair in made[1..].windows(2) {
            assert_eq!(pair[1].0 - pair[0].0, INTERVAL, "{made:?}");
        }
        assert_eq!(
            p.stats(),
            LeaseStats {
                created: 1,
                renewed: 9,
                failed: 0
            }
        );
    }

    #[test]
    fn an_existing_lease_is_read_and_renewed_at_once() {
        let t0 = Instant::now();
        let mut p = Planner::new(INTERVAL, 1, t0);
        let made = run(&mut p, t0, Duration::from_secs(1), |_| ok());
        assert_eq!(
            made,
            vec![(Duration::ZERO, Op::Read), (Duration::ZERO, Op::Renew)]
        );
    }

    #[test]
    fn a_deleted_lease_is_created_again_at_once() {
        let t0 = Instant::now();
        let mut p = Planner::new(INTERVAL, 1, t0);
        run(&mut p, t0, Duration::from_secs(1), |_| ok());
        let t1 = p.due();
        assert_eq!(p.next_request(t1), Some(Op::Renew));
        p.on_done(Op::Renew, err(SendError::NotFound), t1);
        assert_eq!(p.next_request(t1), Some(Op::Create));
        p.on_done(Op::Create, ok(), t1);
        assert_eq!(p.stats().created, 1);
        assert_eq!(p.next_request(t1), None);
        assert_eq!(p.due(), t1 + INTERVAL);
    }

    #[test]
    fn a_conflict_is_read_and_retried_once_then_backs_off() {
        let t0 = Instant::now();
        let mut p = Planner::new(INTERVAL, 1, t0);
        p.on_done(Op::Read, ok(), t0);
        p.on_done(Op::Renew, err(SendError::Conflict), t0);
        assert_eq!(p.next_request(t0), Some(Op::Read), "re-read at once");
        p.on_done(Op::Read, ok(), t0);
        assert_eq!(p.next_request(t0), Some(Op::Renew));
        p.on_done(Op::Renew, err(SendError::Conflict), t0);
        assert_eq!(p.next_request(t0), None, "a second conflict waits");
        assert!(p.due() > t0 && p.due() <= t0 + Duration::from_secs(1));
        assert_eq!(p.next_request(p.due()), Some(Op::Read));
        // A success makes the next conflict retry at once again.
        let t1 = p.due();
        p.on_done(Op::Read, ok(), t1);
        p.on_done(Op::Renew, ok(), t1);
        let t2 = p.due();
        p.on_done(Op::Renew, err(SendError::Conflict), t2);
        assert_eq!(p.next_request(t2), Some(Op::Read));
        assert_eq!(p.stats().failed, 3);
    }

    #[test]
    fn errors_back_off_exponentially_up_to_the_interval() {
        let t0 = Instant::now();
        let mut p = Planner::new(INTERVAL, 7, t0);
        let made = run(&mut p, t0, Duration::from_secs(120), |_| {
            err(SendError::Retryable)
        });
        // 1, 2, 4, 8, then up to the interval (10), jittered: never a burst.
        assert!((10..=30).contains(&made.len()), "{made:?}");
        for pair in made.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            assert!(gap >= Duration::from_millis(500), "{made:?}");
            assert!(gap <= INTERVAL, "{made:?}");
        }
        assert_eq!(p.stats().failed, 0, "failed reads are not writes");
        // A write that fails counts.
        p.on_done(Op::Renew, err(SendError::Permanent), t0);
        assert_eq!(p.stats().failed, 1);
    }

    #[test]
    fn a_refused_renewal_keeps_renewing_after_backoff() {
        let t0 = Instant::now();
        let mut p = Planner::new(INTERVAL, 1, t0);
        p.on_done(Op::Read, ok(), t0);
        p.on_done(Op::Renew, err(SendError::Permanent), t0);
        let t1 = p.due();
        assert!(t1 > t0);
        assert_eq!(p.next_request(t1), Some(Op::Renew));
    }
}
