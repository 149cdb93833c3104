//! Exponential backoff with full jitter, a cap, a retry limit and `Retry-After`.

use std::time::Duration;

use crate::config::BackoffConfig;
use crate::rng::SplitMix64;

/// Why a retry schedule stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GiveUp {
    /// Every allowed retry was used.
    #[error("all {max_retries} retries used")]
    MaxRetries {
        /// The configured retry limit.
        max_retries: u32,
    },
    /// The server asked for a longer pause than the cap allows; retrying earlier would be
    /// refused again, so the schedule stops instead.
    #[error("retry-after {retry_after:?} exceeds the backoff cap {cap:?}")]
    RetryAfterTooLong {
        /// What the server asked for.
        retry_after: Duration,
        /// The configured cap.
        cap: Duration,
    },
}

/// The retry schedule: delay before retry `n` (0-based) is drawn uniformly from
/// `[0, min(cap, base · 2ⁿ)]` ("full jitter"), raised to the server's `Retry-After` when
/// one was given; no delay ever exceeds `cap`.
///
/// Thread-safe and lock-free (`&self`): one `Backoff` can serve every concurrent retry
/// loop. Seed it with [`Backoff::with_seed`] for reproducible jitter in tests.
///
/// ```
/// use std::time::Duration;
/// use genesis_resilience::{Backoff, BackoffConfig, GiveUp};
///
/// let backoff = Backoff::with_seed(BackoffConfig::default(), 42);
/// let first = backoff.delay(0, None).unwrap();
/// assert!(first <= Duration::from_millis(200));
/// // A server's Retry-After is a floor.
/// let hinted = backoff.delay(1, Some(Duration::from_secs(5))).unwrap();
/// assert!(hinted >= Duration::from_secs(5));
/// // Three retries by default.
/// assert_eq!(backoff.delay(3, None), Err(GiveUp::MaxRetries { max_retries: 3 }));
/// ```
#[derive(Debug)]
pub struct Backoff {
    base_nanos: u64,
    cap: Duration,
    max_retries: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// A schedule whose jitter is seeded from process entropy.
    pub fn new(config: BackoffConfig) -> Self {
        Self::build(config, SplitMix64::from_entropy())
    }

    /// A schedule with reproducible jitter.
    pub fn with_seed(config: BackoffConfig, seed: u64) -> Self {
        Self::build(config, SplitMix64::new(seed))
    }

    fn build(config: BackoffConfig, rng: SplitMix64) -> Self {
        Backoff {
            base_nanos: duration_nanos(config.base),
            cap: config.cap,
            max_retries: config.max_retries,
            rng,
        }
    }

    /// The configured retry limit.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The configured cap.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// Upper bound of the jitter range for retry `retry`: `min(cap, base · 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let cap = duration_nanos(self.cap);
        let exp = if retry >= 64 {
            u64::MAX
        } else {
            self.base_nanos.saturating_mul(1u64 << retry)
        };
        Duration::from_nanos(exp.min(cap))
    }

    /// The pause before retry `retry` (0 is the first retry, after the first failure).
    ///
    /// # Errors
    /// [`GiveUp::MaxRetries`] once `retry >= max_retries`; [`GiveUp::RetryAfterTooLong`]
    /// when `retry_after` exceeds the cap.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Result<Duration, GiveUp> {
        if retry >= self.max_retries {
            return Err(GiveUp::MaxRetries {
                max_retries: self.max_retries,
            });
        }
        let jittered = Duration::from_nanos(self.rng.up_to(duration_nanos(self.ceiling(retry))));
        match retry_after {
            Some(after) if after > self.cap => Err(GiveUp::RetryAfterTooLong {
                retry_after: after,
                cap: self.cap,
            }),
            Some(after) => Ok(jittered.max(after)),
            None => Ok(jittered),
        }
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(base_ms: u64, cap_ms: u64, max_retries: u32) -> BackoffConfig {
        BackoffConfig {
            base: Duration::from_millis(base_ms),
            cap: Duration::from_millis(cap_ms),
            max_retries,
        }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = Backoff::with_seed(config(100, 1_000, 10), 1);
        let ceilings: Vec<u128> = (0..6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(b.ceiling(200), Duration::from_secs(1));
    }

    #[test]
    fn same_seed_same_schedule_and_jitter_spreads() {
        let a = Backoff::with_seed(config(1_000, 60_000, 5), 9);
        let b = Backoff::with_seed(config(1_000, 60_000, 5), 9);
        let da: Vec<_> = (0..5).map(|n| a.delay(n, None).unwrap()).collect();
        let db: Vec<_> = (0..5).map(|n| b.delay(n, None).unwrap()).collect();
        assert_eq!(da, db);
        // Full jitter: many draws for retry 0 are spread over [0, base], not bunched.
        let draws: Vec<_> = (0..2_000).map(|_| a.delay(0, None).unwrap()).collect();
        let mean = draws.iter().map(Duration::as_secs_f64).sum::<f64>() / draws.len() as f64;
        assert!((0.45..0.55).contains(&mean), "mean {mean}");
        assert!(draws.iter().any(|d| *d < Duration::from_millis(100)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(900)));
    }

    #[test]
    fn retry_after_is_a_floor_but_never_above_cap() {
        let b = Backoff::with_seed(config(10, 5_000, 3), 3);
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(4))).unwrap(),
            Duration::from_secs(4)
        );
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(6))),
            Err(GiveUp::RetryAfterTooLong {
                retry_after: Duration::from_secs(6),
                cap: Duration::from_secs(5)
            })
        );
    }

    proptest! {
        #[test]
        fn delays_stay_within_zero_and_cap(
            base_ms in 1u64..10_000,
            extra_ms in 0u64..100_000,
            max_retries in 0u32..20,
            retry in 0u32..40,
            after_ms in proptest::option::of(0u64..200_000),
            seed in any::<u64>(),
        ) {
            let cap_ms = base_ms + extra_ms;
            let b = Backoff::with_seed(config(base_ms, cap_ms, max_retries), seed);
            let after = after_ms.map(Duration::from_millis);
            match b.delay(retry, after) {
                Ok(d) => {
                    prop_assert!(retry < max_retries);
                    prop_assert!(d <= Duration::from_millis(cap_ms));
                    prop_assert!(d <= b.ceiling(retry).max(after.unwrap_or_default()));
                    if let Some(after) = after {
                        prop_assert!(d >= after);
                    }
                }
                Err(GiveUp::MaxRetries { .. }) => prop_assert!(retry >= max_retries),
                Err(GiveUp::RetryAfterTooLong { retry_after, cap }) => {
                    prop_assert!(retry_after > cap);
                }
            }
        }
    }
}
