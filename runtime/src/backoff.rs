//! Exponential backoff, the one implementation every retry uses: [`doubled`] (a delay that
//! doubles per failure up to a cap: supervisor restarts, a member's registrations and
//! reports) and [`Backoff`] (the same ceiling with seeded jitter: reconnects). No clock reads.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde::{Deserialize, Serialize};

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackoffConfig {
    /// First delay, before jitter.
    pub base_ms: u64,
    /// Largest delay, before jitter.
    pub max_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base_ms: 100,
            max_ms: 10_000,
        }
    }
}

/// `base` doubled once per earlier failure, at most `cap` (never below `base`).
pub fn doubled(base: Duration, failures: u32, cap: Duration) -> Duration {
    base.saturating_mul(1u32 << failures.min(16))
        .min(cap.max(base))
}

/// "Equal jitter" exponential backoff: attempt `n` waits between half and all of
/// `min(max, base·2ⁿ)`, so a fleet that lost its server does not return in one wave.
#[derive(Debug)]
pub struct Backoff {
    cfg: BackoffConfig,
    attempt: u32,
    rng: SmallRng,
}

impl Backoff {
    /// A backoff whose jitter comes from `seed`.
    pub fn new(cfg: BackoffConfig, seed: u64) -> Backoff {
        Backoff {
            cfg,
            attempt: 0,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = doubled(
            Duration::from_millis(self.cfg.base_ms.max(1)),
            self.attempt,
            Duration::from_millis(self.cfg.max_ms),
        )
        .as_millis() as u64;
        self.attempt = self.attempt.saturating_add(1);
        let ms = ceiling / 2 + self.rng.random_range(0..=ceiling - ceiling / 2);
        Duration::from_millis(ms)
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_within_bounds_and_resets() {
        let mut b = Backoff::new(
            BackoffConfig {
                base_ms: 100,
                max_ms: 1000,
            },
            7,
        );
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for c in ceilings {
            let d = b.next_delay().as_millis() as u64;
            assert!(d >= c / 2 && d <= c, "{d} not in [{}, {c}]", c / 2);
        }
        b.reset();
        assert!(b.next_delay().as_millis() <= 100);
    }

    #[test]
    fn same_seed_same_delays() {
        let cfg = BackoffConfig::default();
        let a: Vec<_> = {
            let mut b = Backoff::new(cfg, 42);
            (0..8).map(|_| b.next_delay()).collect()
        };
        let mut b = Backoff::new(cfg, 42);
        let again: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert_eq!(a, again);
    }
}
