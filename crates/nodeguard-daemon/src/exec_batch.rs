//! How exec events are gathered into the batches the loop reads.
//!
//! Each exec is held by the event thread the moment its event arrives (a process may live a
//! millisecond); the loop only reads what was held, so it need not wake per exec. It wakes
//! for the first event of a batch, sleeps a window, then takes everything queued meanwhile
//! (at most [`EXEC_BATCH_MAX`] pids): one wake-up of the loop, one hand-off to a blocking
//! thread and back, per batch, whatever the number of execs in it. On this VM such a
//! round costs about as much CPU as reading several execs.
//!
//! The window is as long as it may be while what stays held until its batch is read stays
//! small: every exec queued is a held process (two descriptors, a place in the holder's
//! budget). From the rate the last batch came at, the window is what brings
//! [`EXEC_HELD_PER_BATCH`] execs, within [`EXEC_COALESCE_MIN`] and [`EXEC_COALESCE`]: 50 ms
//! up to 1,280 execs a second, 5 ms from 12,800. Without holds (`--exec-hold off`) a
//! process is read by pid when its batch is, so the window stays [`EXEC_COALESCE_MIN`].

use crate::ExecEvent;
use nodeguard_scan::HeldProcess;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The longest the loop gathers further execs after the first of a batch.
pub const EXEC_COALESCE: Duration = Duration::from_millis(50);
/// The shortest window: under a storm, and always without holds.
pub const EXEC_COALESCE_MIN: Duration = Duration::from_millis(5);
/// Execs a window is sized to bring at the last batch's rate: a quarter of the holder's
/// default budget ([`nodeguard_scan::HOLD_BUDGET_DEFAULT`]).
pub const EXEC_HELD_PER_BATCH: usize = 64;
/// The most pids one exec-driven read covers; the rest wait for the next.
pub const EXEC_BATCH_MAX: usize = 512;

/// One batch: the distinct pids exec'd, the processes held at their exec (for a pid that
/// exec'd twice, only a hold of the later exec, the program it runs now, unless that exec
/// could not be held), and whether a loss was announced meanwhile.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) pids: Vec<i32>,
    pub(crate) held: Vec<HeldProcess>,
    pub(crate) lost: bool,
    /// Events taken (an exec of a pid already in the batch counts again).
    pub(crate) events: usize,
}

impl Batch {
    fn take(&mut self, event: ExecEvent) {
        self.events += 1;
        match event {
            nodeguard_procevents::ExecEvent::Exec { pid, held } => {
                if !self.pids.contains(&pid) {
                    self.pids.push(pid);
                }
                // What was held before this exec of the pid is another program's, unless
                // this exec could not be held: then the earlier hold is all there is of the
                // pid (a memfd loader whose payload exited before its own hold; grabbed
                // late, the earlier hold may even be the payload).
                if let Some(hold) = held {
                    self.held.retain(|h| h.pid != pid);
                    self.held.push(hold);
                }
            }
            nodeguard_procevents::ExecEvent::Lost => self.lost = true,
        }
    }
}

/// Gathers batches, choosing each one's window from the rate the last one came at.
#[derive(Debug)]
pub(crate) struct Gatherer {
    window: Duration,
    /// Whether events carry held processes (else the window stays the shortest).
    held: bool,
}

impl Gatherer {
    /// A gatherer for a feed whose events carry held processes (`held`) or bare pids.
    pub(crate) fn new(held: bool) -> Gatherer {
        Gatherer {
            window: if held {
                EXEC_COALESCE
            } else {
                EXEC_COALESCE_MIN
            },
            held,
        }
    }

    /// The batch that begins with `first`: what `receiver` queued within the window after
    /// it, up to [`EXEC_BATCH_MAX`] pids.
    pub(crate) async fn gather(
        &mut self,
        first: ExecEvent,
        receiver: &mut mpsc::Receiver<ExecEvent>,
    ) -> Batch {
        let started = Instant::now();
        let mut batch = Batch::default();
        batch.take(first);
        tokio::time::sleep(self.window).await;
        while batch.pids.len() < EXEC_BATCH_MAX {
            match receiver.try_recv() {
                Ok(event) => batch.take(event),
                Err(_) => break,
            }
        }
        if self.held {
            // The window that would have brought EXEC_HELD_PER_BATCH at this batch's rate.
            let took = started.elapsed().max(self.window);
            let sized = took.mul_f64(EXEC_HELD_PER_BATCH as f64 / batch.events.max(1) as f64);
            self.window = sized.clamp(EXEC_COALESCE_MIN, EXEC_COALESCE);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Gatherer {
        /// The window the next batch is gathered over.
        fn window(&self) -> Duration {
            self.window
        }
    }

    fn exec(pid: i32) -> ExecEvent {
        nodeguard_procevents::ExecEvent::Exec { pid, held: None }
    }

    /// Execs spread over most of the window (a shell's pipeline, a build step's burst) are
    /// read as one batch: the loop wakes once for them, not once per 5 ms of them.
    #[tokio::test(start_paused = true)]
    async fn a_burst_within_the_window_is_one_batch() {
        let (sender, mut receiver) = mpsc::channel(64);
        let burst = tokio::spawn(async move {
            for pid in 2..=10 {
                tokio::time::sleep(Duration::from_millis(4)).await;
                sender.send(exec(pid)).await.unwrap();
            }
            sender
        });
        let mut gatherer = Gatherer::new(true);
        let batch = gatherer.gather(exec(1), &mut receiver).await;
        assert_eq!(batch.pids, (1..=10).collect::<Vec<_>>());
        assert!(!batch.lost);
        let sender = burst.await.unwrap();
        assert!(
            receiver.try_recv().is_err(),
            "nothing left for a second batch"
        );
        drop(sender);
    }

    /// A storm (here 200 execs in one window) shortens the next window, down to the
    /// shortest, so what is held until its batch is read stays bounded; batches at an
    /// ordinary rate bring the long window back. A loss is passed on.
    #[tokio::test(start_paused = true)]
    async fn a_storm_shortens_the_window_and_quiet_batches_restore_it() {
        let (sender, mut receiver) = mpsc::channel(1024);
        let mut gatherer = Gatherer::new(true);
        assert_eq!(gatherer.window(), EXEC_COALESCE);
        for pid in 2..=200 {
            sender.try_send(exec(pid)).unwrap();
        }
        sender
            .try_send(nodeguard_procevents::ExecEvent::Lost)
            .unwrap();
        let batch = gatherer.gather(exec(1), &mut receiver).await;
        assert_eq!(batch.pids.len(), 200);
        assert!(batch.lost);
        // 201 events in 50 ms: the window that brings 64 is about 16 ms.
        let window = gatherer.window();
        assert!(window < EXEC_COALESCE / 3, "{window:?}");
        for pid in 300..1300 {
            sender.try_send(exec(pid)).unwrap();
        }
        gatherer.gather(exec(299), &mut receiver).await;
        assert_eq!(gatherer.window(), EXEC_COALESCE_MIN);

        // Quiet again: one exec per batch.
        while receiver.try_recv().is_ok() {}
        gatherer.gather(exec(2000), &mut receiver).await;
        gatherer.gather(exec(2001), &mut receiver).await;
        assert_eq!(gatherer.window(), EXEC_COALESCE);
    }

    /// Without holds a process is read by pid with its batch: the window stays the
    /// shortest, whatever the rate.
    #[tokio::test(start_paused = true)]
    async fn without_holds_the_window_stays_the_shortest() {
        let (_sender, mut receiver) = mpsc::channel(8);
        let mut gatherer = Gatherer::new(false);
        assert_eq!(gatherer.window(), EXEC_COALESCE_MIN);
        gatherer.gather(exec(1), &mut receiver).await;
        assert_eq!(gatherer.window(), EXEC_COALESCE_MIN);
    }

    /// A batch stops at [`EXEC_BATCH_MAX`] distinct pids; the rest wait for the next, and a
    /// pid exec'd twice counts once.
    #[tokio::test(start_paused = true)]
    async fn a_batch_holds_at_most_the_maximum_of_distinct_pids() {
        let (sender, mut receiver) = mpsc::channel(2048);
        for pid in 1..=(EXEC_BATCH_MAX as i32 + 10) {
            sender.try_send(exec(pid)).unwrap();
        }
        let batch = Gatherer::new(true).gather(exec(1), &mut receiver).await;
        assert_eq!(batch.pids.len(), EXEC_BATCH_MAX);
        assert_eq!(batch.pids.iter().filter(|p| **p == 1).count(), 1);
        let mut left = 0;
        while receiver.try_recv().is_ok() {
            left += 1;
        }
        assert_eq!(left, 10);
    }
}
