//! Keyed rate limiting (governor GCRA) per client IP and per agent, with bounded memory.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use genesis_core::AgentId;
use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use serde::{Deserialize, Serialize};

use crate::SecurityError;

/// Rate-limit settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per minute per client IP. Default 100.
    pub per_ip_per_minute: u32,
    /// Burst per client IP. Default 20.
    pub per_ip_burst: u32,
    /// Sustained calls per minute per agent. Default 200.
    pub per_agent_per_minute: u32,
    /// Burst per agent. Default 40.
    pub per_agent_burst: u32,
    /// Keys tracked per limiter before idle keys are evicted. Default 100,000.
    pub max_keys: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_ip_per_minute: 100,
            per_ip_burst: 20,
            per_agent_per_minute: 200,
            per_agent_burst: 40,
            max_keys: 100_000,
        }
    }
}

type Inner<K, C> =
    governor::RateLimiter<K, DefaultKeyedStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A keyed rate limiter: one GCRA cell per key (an IP address, an agent id). Memory stays
/// bounded: when more than `max_keys` keys are tracked, keys whose state is
/// indistinguishable from a fresh key (fully replenished, e.g. idle for 12 s at 100/min
/// with burst 20) are evicted. Only keys active within one replenish period survive, so
/// the table exceeds `max_keys` only while that many clients are genuinely active. Call
/// [`RateLimiter::retain_recent`] periodically (e.g. every minute) as well.
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr};
/// use genesis_security::{RateLimitConfig, RateLimiter, SecurityError};
///
/// let limiter = RateLimiter::per_client_ip(&RateLimitConfig::default())?;
/// let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
/// for _ in 0..20 {
///     limiter.check(&ip)?; // the burst
/// }
/// let err = limiter.check(&ip).unwrap_err();
/// assert!(err.retry_after().is_some());
/// # Ok::<(), SecurityError>(())
/// ```
pub struct RateLimiter<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    inner: Inner<K, C>,
    clock: C,
    scope: &'static str,
    max_keys: usize,
    over_cap_checks: AtomicU64,
}

impl<K: Hash + Eq + Clone, C: Clock> std::fmt::Debug for RateLimiter<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("scope", &self.scope)
            .field("max_keys", &self.max_keys)
            .field("tracked_keys", &self.inner.len())
            .finish()
    }
}

fn quota(field: &'static str, per_minute: u32, burst: u32) -> Result<Quota, SecurityError> {
    let invalid = |value: u32| SecurityError::InvalidConfig {
        field,
        value: value.to_string(),
        reason: "must be at least 1",
    };
    let per_minute = NonZeroU32::new(per_minute).ok_or_else(|| invalid(per_minute))?;
    let burst = NonZeroU32::new(burst).ok_or_else(|| invalid(burst))?;
    Ok(Quota::per_minute(per_minute).allow_burst(burst))
}

impl RateLimiter<IpAddr> {
    /// The per-client-IP limiter (default 100/min, burst 20) on the monotonic clock.
    ///
    /// # Errors
    /// [`SecurityError::InvalidConfig`] for a zero rate or burst.
    pub fn per_client_ip(config: &RateLimitConfig) -> Result<Self, SecurityError> {
        Self::per_client_ip_with_clock(config, DefaultClock::default())
    }
}

impl RateLimiter<AgentId> {
    /// The per-agent limiter (default 200/min, burst 40) on the monotonic clock.
    ///
    /// # Errors
    /// [`SecurityError::InvalidConfig`] for a zero rate or burst.
    pub fn per_agent(config: &RateLimitConfig) -> Result<Self, SecurityError> {
        Self::per_agent_with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<IpAddr, C> {
    /// The per-client-IP limiter on a given clock (tests pass a fake clock).
    ///
    /// # Errors
    /// [`SecurityError::InvalidConfig`] for a zero rate or burst.
    pub fn per_client_ip_with_clock(
        config: &RateLimitConfig,
        clock: C,
    ) -> Result<Self, SecurityError> {
        let q = quota(
            "rate_limits.per_ip_per_minute",
            config.per_ip_per_minute,
            config.per_ip_burst,
        )?;
        Ok(Self::new(q, "client_ip", config.max_keys, clock))
    }
}

impl<C: Clock + Clone> RateLimiter<AgentId, C> {
    /// The per-agent limiter on a given clock (tests pass a fake clock).
    ///
    /// # Errors
    /// [`SecurityError::InvalidConfig`] for a zero rate or burst.
    pub fn per_agent_with_clock(config: &RateLimitConfig, clock: C) -> Result<Self, SecurityError> {
        let q = quota(
            "rate_limits.per_agent_per_minute",
            config.per_agent_per_minute,
            config.per_agent_burst,
        )?;
        Ok(Self::new(q, "agent", config.max_keys, clock))
    }
}

impl<K: Hash + Eq + Clone + std::fmt::Display, C: Clock + Clone> RateLimiter<K, C> {
    /// A keyed limiter with an explicit quota; `scope` names it in errors.
    pub fn new(quota: Quota, scope: &'static str, max_keys: usize, clock: C) -> Self {
        RateLimiter {
            inner: governor::RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
            scope,
            max_keys: max_keys.max(1),
            over_cap_checks: AtomicU64::new(0),
        }
    }

    /// Admits one call for `key`.
    ///
    /// # Errors
    /// [`SecurityError::RateLimited`] with the `Retry-After` duration.
    pub fn check(&self, key: &K) -> Result<(), SecurityError> {
        let result = self.inner.check_key(key);
        if self.inner.len() > self.max_keys {
            // Over the cap: evict idle keys. A sweep walks the map, so it runs at most once
            // per max_keys / 8 checks, which keeps its cost amortised O(1) per check.
            let n = self.over_cap_checks.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of((self.max_keys as u64 / 8).max(1)) {
                self.retain_recent();
                if self.inner.len() > self.max_keys {
                    tracing::warn!(
                        scope = self.scope,
                        tracked = self.inner.len(),
                        max_keys = self.max_keys,
                        "rate limiter holds more active keys than max_keys"
                    );
                }
            }
        }
        result.map_err(|not_until| self.limited(key, not_until.wait_time_from(self.clock.now())))
    }

    fn limited(&self, key: &K, retry_after: Duration) -> SecurityError {
        tracing::debug!(scope = self.scope, key = %key, ?retry_after, "rate limited");
        SecurityError::RateLimited {
            scope: self.scope,
            key: key.to_string(),
            retry_after,
        }
    }

    /// Evicts keys whose state equals a fresh key's (fully replenished) and shrinks the map.
    pub fn retain_recent(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }

    /// Keys currently tracked.
    pub fn tracked_keys(&self) -> usize {
        self.inner.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    #[test]
    fn per_ip_burst_then_retry_after() {
        let clock = FakeRelativeClock::default();
        let l = RateLimiter::per_client_ip_with_clock(&RateLimitConfig::default(), clock.clone())
            .unwrap();
        for _ in 0..20 {
            l.check(&ip(1)).unwrap();
        }
        let err = l.check(&ip(1)).unwrap_err();
        // 100/min replenishes one cell every 600 ms.
        assert_eq!(err.retry_after(), Some(Duration::from_millis(600)));
        assert!(matches!(
            err,
            SecurityError::RateLimited {
                scope: "client_ip",
                ..
            }
        ));
        // Another IP has its own bucket.
        l.check(&ip(2)).unwrap();
        clock.advance(Duration::from_millis(600));
        l.check(&ip(1)).unwrap();
        assert!(l.check(&ip(1)).is_err());
    }

    #[test]
    fn sustained_rate_is_100_per_minute() {
        let clock = FakeRelativeClock::default();
        let l = RateLimiter::per_client_ip_with_clock(&RateLimitConfig::default(), clock.clone())
            .unwrap();
        let mut admitted = 0;
        for _ in 0..6_000 {
            // One attempt every 10 ms for a minute.
            if l.check(&ip(1)).is_ok() {
                admitted += 1;
            }
            clock.advance(Duration::from_millis(10));
        }
        assert!((119..=121).contains(&admitted), "{admitted}"); // burst 20 + 100
    }

    #[test]
    fn per_agent_limit() {
        let clock = FakeRelativeClock::default();
        let l = RateLimiter::per_agent_with_clock(&RateLimitConfig::default(), clock).unwrap();
        let agent = AgentId::new("coder");
        for _ in 0..40 {
            l.check(&agent).unwrap();
        }
        let err = l.check(&agent).unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_millis(300)));
        assert!(err.to_string().contains("agent coder"));
    }

    #[test]
    fn memory_is_bounded() {
        let clock = FakeRelativeClock::default();
        let config = RateLimitConfig {
            max_keys: 4,
            ..RateLimitConfig::default()
        };
        let l = RateLimiter::per_client_ip_with_clock(&config, clock.clone()).unwrap();
        for n in 0..4 {
            l.check(&ip(n)).unwrap();
        }
        assert_eq!(l.tracked_keys(), 4);
        // All keys active: nothing can be evicted yet.
        l.check(&ip(9)).unwrap();
        assert_eq!(l.tracked_keys(), 5);
        // Once they are idle (fully replenished) they are evicted on the next check.
        clock.advance(Duration::from_secs(60));
        for n in 10..20 {
            clock.advance(Duration::from_secs(13));
            l.check(&ip(n)).unwrap();
            assert!(l.tracked_keys() <= 5, "{}", l.tracked_keys());
        }
        // Eviction does not reset an active key's budget.
        for _ in 0..19 {
            l.check(&ip(19)).unwrap();
        }
        assert!(l.check(&ip(19)).is_err());
    }

    #[test]
    fn zero_quota_is_rejected() {
        let config = RateLimitConfig {
            per_ip_burst: 0,
            ..RateLimitConfig::default()
        };
        assert!(matches!(
            RateLimiter::per_client_ip(&config),
            Err(SecurityError::InvalidConfig { .. })
        ));
    }
}
