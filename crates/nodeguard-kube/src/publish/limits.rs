//! Token buckets and retry backoff for the publishers, and [`Pace`], the node-wide pace of
//! one publisher's requests built from them. Pure: time comes in as arguments.

use nodeguard_model::SplitMix64;
use std::time::Duration;
use tokio::time::Instant;

/// A token bucket: starts full with `burst` tokens and gains one every `refill_every`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    burst: f64,
    tokens: f64,
    refill_every: Duration,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(burst: u32, refill_every: Duration, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            burst,
            tokens: burst,
            refill_every: refill_every.max(Duration::from_micros(1)),
            last: now,
        }
    }

    /// A bucket that refills `per_second` tokens a second.
    pub(crate) fn per_second(per_second: f64, burst: u32, now: Instant) -> TokenBucket {
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            1.0
        };
        TokenBucket::new(burst, Duration::from_secs_f64(1.0 / per_second), now)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now.max(self.last);
        let gained = elapsed.as_secs_f64() / self.refill_every.as_secs_f64();
        self.tokens = (self.tokens + gained).min(self.burst);
    }

    /// Takes a token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be there (`now` if there is one).
    pub(crate) fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            now
        } else {
            now + self.refill_every.mul_f64(1.0 - self.tokens)
        }
    }

    /// A full bucket is the same as a new one: it can be forgotten.
    pub(crate) fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Exponential backoff with "equal jitter": the n-th delay is between half and all of
/// `initial * 2^n` (capped at `max`), so a fleet of agents does not retry in step.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
    rng: SplitMix64,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            initial: initial.max(Duration::from_millis(1)),
            max: max.max(initial),
            failures: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// The delay before the next attempt after one more failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let exp = self.failures.min(30);
        self.failures = self.failures.saturating_add(1);
        let full = self
            .initial
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max)
            .min(self.max);
        let half = full / 2;
        half + half.mul_f64(self.rng.next_unit())
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

/// The node-wide pace of one publisher's requests: a token bucket, and exponential backoff
/// after failures (no request before `next_attempt`).
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    bucket: TokenBucket,
    backoff: Backoff,
    next_attempt: Instant,
}

impl Pace {
    /// `per_second` requests a second, `burst` at once; retries from `backoff_initial`
    /// doubling up to `backoff_max`, jittered from `seed`.
    pub(crate) fn new(
        per_second: f64,
        burst: u32,
        backoff_initial: Duration,
        backoff_max: Duration,
        seed: u64,
        now: Instant,
    ) -> Pace {
        Pace {
            bucket: TokenBucket::per_second(per_second, burst, now),
            backoff: Backoff::new(backoff_initial, backoff_max, seed),
            next_attempt: now,
        }
    }

    /// Whether a backoff (or a hold) keeps requests back at `now`.
    pub(crate) fn held(&self, now: Instant) -> bool {
        now < self.next_attempt
    }

    /// Takes a token of the node-wide bucket if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.bucket.try_take(now)
    }

    /// When the next request may go: after the backoff, with a token.
    pub(crate) fn ready_at(&mut self, now: Instant) -> Instant {
        self.next_attempt.max(self.bucket.ready_at(now))
    }

    /// A request succeeded: the next failure backs off from the start.
    pub(crate) fn succeeded(&mut self) {
        self.backoff.reset();
    }

    /// A request failed: no request for the next backoff delay, which is returned.
    pub(crate) fn failed(&mut self, now: Instant) -> Duration {
        let delay = self.backoff.next_delay();
        self.next_attempt = now + delay;
        delay
    }

    /// No request before `until`, whatever the backoff says.
    pub(crate) fn hold_until(&mut self, until: Instant) {
        self.next_attempt = until;
    }

    /// Failures since the last success.
    pub(crate) fn failures(&self) -> u32 {
        self.backoff.failures()
    }

    #[cfg(test)]
    pub(crate) fn next_attempt(&self) -> Instant {
        self.next_attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_one_per_interval() {
        let t0 = Instant::now();
        let five_min = Duration::from_secs(300);
        let mut b = TokenBucket::new(25, five_min, t0);
        assert_eq!((0..100).filter(|_| b.try_take(t0)).count(), 25);
        assert!(!b.try_take(t0 + Duration::from_secs(299)));
        let ready = b.ready_at(t0 + Duration::from_secs(299));
        let err = ready
            .max(t0 + five_min)
            .duration_since(ready.min(t0 + five_min));
        assert!(err < Duration::from_millis(1), "{ready:?}");
        assert!(b.try_take(t0 + five_min));
        assert!(!b.try_take(t0 + five_min));
        // A long quiet period refills to the burst, never beyond.
        let later = t0 + Duration::from_secs(86_400);
        assert!(b.is_full(later));
        assert_eq!((0..100).filter(|_| b.try_take(later)).count(), 25);
    }

    #[test]
    fn node_bucket_rate_is_per_second() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_second(2.0, 20, t0);
        assert_eq!((0..50).filter(|_| b.try_take(t0)).count(), 20);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!((0..50).filter(|_| b.try_take(t1)).count(), 20);
        let t2 = t1 + Duration::from_secs(3);
        assert_eq!((0..50).filter(|_| b.try_take(t2)).count(), 6);
        // Nonsense rates fall back to one a second rather than dividing by zero.
        let mut z = TokenBucket::per_second(0.0, 1, t0);
        assert!(z.try_take(t0));
        assert_eq!(z.ready_at(t0), t0 + Duration::from_secs(1));
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300), 42);
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        for (n, d) in delays.iter().enumerate() {
            let full = Duration::from_secs(1u64 << n).min(Duration::from_secs(300));
            assert!(
                *d >= full / 2 && *d <= full,
                "delay {n} = {d:?}, full {full:?}"
            );
        }
        assert_eq!(b.failures(), 12);
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    /// A fleet seeded apart spreads its first retry over the whole jitter window, so agents
    /// do not retry in step.
    #[test]
    fn backoff_jitter_spreads_across_seeds() {
        let first: Vec<Duration> = (0..1000u64)
            .map(|seed| {
                Backoff::new(Duration::from_secs(1), Duration::from_secs(300), seed).next_delay()
            })
            .collect();
        let (min, max) = (first.iter().min(), first.iter().max());
        assert!(min < Some(&Duration::from_millis(550)), "{min:?}");
        assert!(max > Some(&Duration::from_millis(950)), "{max:?}");
    }
}
