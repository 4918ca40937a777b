//! Exponential backoff: the one definition of "wait, doubling, up to a cap" that the outbox
//! relay, the event workers, the bridge and notification delivery share.

use std::time::Duration;

/// Waits that start at `first` and double after each failure, never longer than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exponential {
    pub first: Duration,
    pub max: Duration,
}

impl Exponential {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    /// The wait after `failures` failures in a row (1, 2, 3, ...): `first`, 2×`first`,
    /// 4×`first`, ..., capped at `max`. Zero failures wait nothing.
    pub fn after(&self, failures: u32) -> Duration {
        let Some(doublings) = failures.checked_sub(1) else {
            return Duration::ZERO;
        };
        // The doubling stops at 2^31 × `first`: far beyond any cap a caller sets, and the
        // shift cannot overflow.
        self.first
            .saturating_mul(1_u32 << doublings.min(31))
            .min(self.max)
    }

    /// A counter of failures in a row that hands out the next wait.
    pub fn start(self) -> Backoff {
        Backoff {
            policy: self,
            failures: 0,
        }
    }
}

/// Failures in a row under an [`Exponential`] policy.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: Exponential,
    failures: u32,
}

impl Backoff {
    /// Counts one more failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.policy.after(self.failures)
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Exponential =
        Exponential::new(Duration::from_millis(100), Duration::from_secs(5));

    #[test]
    fn doubles_from_first_up_to_the_cap() {
        let waits: Vec<u64> = (0..9).map(|n| POLICY.after(n).as_millis() as u64).collect();
        assert_eq!(waits, [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(POLICY.after(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn a_backoff_counts_failures_until_reset() {
        let mut backoff = POLICY.start();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
        assert_eq!(backoff.next_delay(), Duration::from_millis(200));
        assert_eq!(backoff.next_delay(), Duration::from_millis(400));
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn never_overflows() {
        let huge = Exponential::new(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        assert_eq!(huge.after(40), Duration::MAX);
    }
}
