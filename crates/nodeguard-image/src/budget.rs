//! Keeping the indexing thread within a fraction of one core: it measures its own CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) and sleeps until its share of the wall clock is back under budget.

use std::time::{Duration, Instant};

/// The window over which the share is measured; debt older than this is forgotten, so a long
/// idle spell does not buy a long burst.
const WINDOW: Duration = Duration::from_secs(2);
/// No single sleep is longer than this (the thread must notice a shutdown).
const MAX_SLEEP: Duration = Duration::from_millis(500);

/// The calling thread's CPU time.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// A CPU budget for the calling thread: `pace()` sleeps as needed.
pub(crate) struct CpuBudget {
    /// Fraction of one core, in (0, 1]; 1 or more means no pacing.
    fraction: f64,
    window_wall: Instant,
    window_cpu: Duration,
    /// Time slept (for the bench's report).
    pub slept: Duration,
}

impl CpuBudget {
    pub(crate) fn new(fraction: f64) -> CpuBudget {
        let fraction = if fraction.is_finite() && fraction > 0.0 {
            fraction
        } else {
            0.25
        };
        CpuBudget {
            fraction,
            window_wall: Instant::now(),
            window_cpu: thread_cpu_time(),
            slept: Duration::ZERO,
        }
    }

    /// How long to sleep now, from CPU used and wall time passed in this window.
    pub(crate) fn debt(fraction: f64, cpu_used: Duration, wall: Duration) -> Duration {
        if fraction >= 1.0 {
            return Duration::ZERO;
        }
        let needed_wall = cpu_used.as_secs_f64() / fraction;
        let debt = needed_wall - wall.as_secs_f64();
        if debt > 0.0 {
            Duration::from_secs_f64(debt).min(MAX_SLEEP)
        } else {
            Duration::ZERO
        }
    }

    /// Sleeps until the thread's CPU share in the current window is within budget.
    pub(crate) fn pace(&mut self) {
        let cpu = thread_cpu_time();
        let wall = self.window_wall.elapsed();
        let sleep = Self::debt(self.fraction, cpu.saturating_sub(self.window_cpu), wall);
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
            self.slept += sleep;
        }
        if self.window_wall.elapsed() > WINDOW {
            self.window_wall = Instant::now();
            self.window_cpu = thread_cpu_time();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_is_what_brings_the_share_back_to_budget() {
        let ms = Duration::from_millis;
        // 100 ms of CPU at a quarter core needs 400 ms of wall time: 300 ms left to sleep.
        assert_eq!(CpuBudget::debt(0.25, ms(100), ms(100)), ms(300));
        assert_eq!(CpuBudget::debt(0.25, ms(100), ms(500)), Duration::ZERO);
        assert_eq!(CpuBudget::debt(1.0, ms(100), ms(1)), Duration::ZERO);
        assert_eq!(CpuBudget::debt(0.01, ms(100), ms(1)), MAX_SLEEP);
    }

    #[test]
    fn a_busy_thread_is_held_near_its_share() {
        let mut budget = CpuBudget::new(0.05);
        let start = Instant::now();
        let cpu0 = thread_cpu_time();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(600) {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            budget.pace();
        }
        std::hint::black_box(x);
        let share = (thread_cpu_time() - cpu0).as_secs_f64() / start.elapsed().as_secs_f64();
        // On a contended machine the thread may get less than its share, never much more
        // (one window of slack: the first pace() can only follow the first burst).
        assert!(share < 0.2, "share {share}");
        assert!(!budget.slept.is_zero());
    }
}
