//! Serde configuration for every primitive, grouped under [`ResilienceConfig`].
//!
//! All structs use `deny_unknown_fields` and fill missing fields from their defaults;
//! durations are written in humantime (`"60s"`, `"250ms"`). Call
//! [`ResilienceConfig::validate`] after loading: the runtime types assume valid values.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Every resilience knob the facade needs, as one `[resilience]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ResilienceConfig {
    /// Circuit breakers (one per provider and one per agent).
    pub breaker: BreakerConfig,
    /// Retry schedule.
    pub retry: RetryConfig,
    /// Per-key concurrency limits.
    pub bulkhead: BulkheadConfig,
    /// Per-call deadline.
    pub timeout: TimeoutConfig,
    /// Automatic degradation thresholds.
    pub degradation: DegradationConfig,
}

/// The struct is `#[non_exhaustive]` (new knobs are not breaking changes), so outside this
/// crate it is built from its defaults with the `with_*` setters, each nested config
/// likewise:
///
/// ```
/// use std::time::Duration;
/// use genesis_resilience::{BulkheadConfig, ResilienceConfig, TimeoutConfig};
///
/// let config = ResilienceConfig::default()
///     .with_bulkhead(BulkheadConfig::default().with_max_concurrent(8))
///     .with_timeout(TimeoutConfig::default().with_call(Duration::from_secs(20)));
/// config.validate().unwrap();
/// assert_eq!(config.timeout.call, Duration::from_secs(20));
/// ```
impl ResilienceConfig {
    /// Sets `breaker`: the circuit-breaker thresholds. Setters do not validate; call
    /// `validate` once built.
    #[must_use]
    pub fn with_breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// Sets `retry`: the retry schedule. Setters do not validate; call `validate` once
    /// built.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Sets `bulkhead`: the per-key concurrency limits. Setters do not validate; call
    /// `validate` once built.
    #[must_use]
    pub fn with_bulkhead(mut self, bulkhead: BulkheadConfig) -> Self {
        self.bulkhead = bulkhead;
        self
    }

    /// Sets `timeout`: the per-call deadline. Setters do not validate; call `validate` once
    /// built.
    #[must_use]
    pub fn with_timeout(mut self, timeout: TimeoutConfig) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets `degradation`: the automatic degradation thresholds. Setters do not validate;
    /// call `validate` once built.
    #[must_use]
    pub fn with_degradation(mut self, degradation: DegradationConfig) -> Self {
        self.degradation = degradation;
        self
    }

    /// Checks every nested config.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first field that breaks its rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.breaker.validate()?;
        self.retry.validate()?;
        self.bulkhead.validate()?;
        self.timeout.validate()?;
        self.degradation.validate()
    }
}

fn invalid(field: &'static str, rule: &'static str, value: impl std::fmt::Debug) -> ConfigError {
    ConfigError::Invalid {
        field,
        rule,
        value: format!("{value:?}"),
    }
}

fn check_fraction(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(field, "between 0 and 1", value))
    }
}

/// Circuit-breaker thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker (default 5).
    pub failure_threshold: u32,
    /// Failure-rate trip over a sliding window, in addition to the consecutive count.
    pub failure_rate: FailureRateConfig,
    /// How long an open breaker rejects before admitting a probe (default 60 s).
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
    /// Probes admitted at a time while half-open (default 1).
    pub half_open_max_probes: u32,
    /// Successful probes that close a half-open breaker (default 2).
    pub success_threshold: u32,
    /// Most breakers a [`BreakerRegistry`](crate::BreakerRegistry) keeps (default 1024);
    /// least-recently-used closed breakers are evicted first.
    pub max_keys: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            failure_rate: FailureRateConfig::default(),
            cool_down: Duration::from_secs(60),
            half_open_max_probes: 1,
            success_threshold: 2,
            max_keys: 1024,
        }
    }
}

/// The struct is `#[non_exhaustive]` (new knobs are not breaking changes), so outside this
/// crate it is built from its defaults with the `with_*` setters:
///
/// ```
/// use std::time::Duration;
/// use genesis_resilience::{BreakerConfig, FailureRateConfig};
///
/// let config = BreakerConfig::default()
///     .with_failure_threshold(3)
///     .with_cool_down(Duration::from_secs(10))
///     .with_failure_rate(FailureRateConfig::default().with_enabled(false));
/// config.validate().unwrap();
/// assert_eq!(config.failure_threshold, 3);
/// ```
impl BreakerConfig {
    /// Sets `failure_threshold`: consecutive failures that open a closed breaker. Setters do not validate; call `validate` once built.
    #[must_use]
    pub fn with_failure_threshold(mut self, failure_threshold: u32) -> Self {
        self.failure_threshold = failure_threshold;
        self
    }

    /// Sets `failure_rate`: the sliding-window failure-rate trip. Setters do not validate; call `validate` once built.
    #[must_use]
    pub fn with_failure_rate(mut self, failure_rate: FailureRateConfig) -> Self {
        self.failure_rate = failure_rate;
        self
    }

    /// Sets `cool_down`: how long an open breaker rejects before a probe. Setters do not validate; call `validate` once built.
    #[must_use]
    pub fn with_cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }

    /// Sets `half_open_max_probes`: probes admitted at a time while half-open. Setters do not validate; call `validate` once built.
    #[must_use]
    pub fn with_half_open_max_probes(mut self, half_open_max_probes: u32) -> Self {
        self.half_open_max_probes = half_open_max_probes;
        self
    }

    /// Sets `success_threshold`: successful probes that close a half-open breaker. Setters do not validate; call `validate` once built.
    #[must_use]
    pub fn with_success_threshold(mut self, success_threshold: u32) -> Self {
        self.success_threshold = success_threshold;
        self
    }

    /// Sets `max_keys`: most breakers a registry keeps. Setters do not validate; call `validate` once built.
    #[must_use]
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Checks the breaker rules.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 {
            return Err(invalid(
                "breaker.failure_threshold",
                "at least 1",
                self.failure_threshold,
            ));
        }
        if self.cool_down.is_zero() {
            return Err(invalid(
                "breaker.cool_down",
                "greater than zero",
                self.cool_down,
            ));
        }
        if self.cool_down > crate::breaker::MAX_COOL_DOWN {
            return Err(invalid(
                "breaker.cool_down",
                "at most 365 days",
                self.cool_down,
            ));
        }
        if self.half_open_max_probes == 0 {
            return Err(invalid(
                "breaker.half_open_max_probes",
                "at least 1",
                self.half_open_max_probes,
            ));
        }
        if self.success_threshold == 0 {
            return Err(invalid(
                "breaker.success_threshold",
                "at least 1",
                self.success_threshold,
            ));
        }
        if self.max_keys == 0 {
            return Err(invalid("breaker.max_keys", "at least 1", self.max_keys));
        }
        self.failure_rate.validate()
    }
}

/// Opens a closed breaker when the failure rate over a sliding window reaches a threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FailureRateConfig {
    /// Whether the rate trip is active (default true).
    pub enabled: bool,
    /// Failure fraction in `(0, 1]` that opens the breaker (default 0.5).
    pub threshold: f64,
    /// Length of the sliding window (default 60 s, kept as 10 buckets).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Fewest calls in the window before the rate is trusted (default 20).
    pub min_calls: u32,
}

impl Default for FailureRateConfig {
    fn default() -> Self {
        FailureRateConfig {
            enabled: true,
            threshold: 0.5,
            window: Duration::from_secs(60),
            min_calls: 20,
        }
    }
}

/// Built outside this crate from its defaults with the `with_*` setters (see
/// [`BreakerConfig`]).
impl FailureRateConfig {
    /// Sets `enabled`: whether the rate trip is active. Setters do not validate; call `validate` once built.
    #[must_use]
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets `threshold`: the failure fraction in `(0, 1]` that opens the breaker. Setters do not validate; call `validate` once built.
    #[must_use]
    pub fn with_threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }

    /// Sets `window`: the length of the sliding window. Setters do not validate; call `validate` once built.
    #[must_use]
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Sets `min_calls`: the fewest calls in the window before the rate is trusted. Setters do not validate; call `validate` once built.
    #[must_use]
    pub fn with_min_calls(mut self, min_calls: u32) -> Self {
        self.min_calls = min_calls;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(invalid(
                "breaker.failure_rate.threshold",
                "in (0, 1]",
                self.threshold,
            ));
        }
        if self.window < Duration::from_millis(10) {
            return Err(invalid(
                "breaker.failure_rate.window",
                "at least 10ms",
                self.window,
            ));
        }
        if self.min_calls == 0 {
            return Err(invalid(
                "breaker.failure_rate.min_calls",
                "at least 1",
                self.min_calls,
            ));
        }
        Ok(())
    }
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BackoffConfig {
    /// Ceiling of the first retry's delay; retry `n` draws from `[0, min(cap, base * 2^n)]`
    /// (default 200 ms).
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// Largest delay ever returned, and the largest `Retry-After` honoured (default 60 s).
    #[serde(with = "humantime_serde")]
    pub cap: Duration,
    /// Retries after the first attempt (default 3, so at most 4 attempts).
    pub max_retries: u32,
}

/// The retry schedule is fully described by its backoff; the two names are one type.
pub type RetryConfig = BackoffConfig;

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(60),
            max_retries: 3,
        }
    }
}

/// The struct is `#[non_exhaustive]`, so outside this crate it is built from its defaults
/// with the `with_*` setters:
///
/// ```
/// use std::time::Duration;
/// use genesis_resilience::{Backoff, BackoffConfig};
///
/// let config = BackoffConfig::default()
///     .with_base(Duration::from_millis(50))
///     .with_cap(Duration::from_secs(2))
///     .with_max_retries(5);
/// config.validate().unwrap();
/// let backoff = Backoff::new(config);
/// # let _ = backoff;
/// ```
impl BackoffConfig {
    /// Sets `base`: the ceiling of the first retry's delay. Setters do not validate; call `validate` once built.
    #[must_use]
    pub fn with_base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Sets `cap`: the largest delay ever returned, and the largest `Retry-After` honoured. Setters do not validate; call `validate` once built.
    #[must_use]
    pub fn with_cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// Sets `max_retries`: retries after the first attempt. Setters do not validate; call `validate` once built.
    #[must_use]
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Checks the backoff rules.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.base.is_zero() {
            return Err(invalid("retry.base", "greater than zero", self.base));
        }
        if self.cap < self.base {
            return Err(invalid("retry.cap", "at least retry.base", self.cap));
        }
        if self.max_retries > 100 {
            return Err(invalid(
                "retry.max_retries",
                "at most 100",
                self.max_retries,
            ));
        }
        Ok(())
    }
}

/// Per-key concurrency limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BulkheadConfig {
    /// Calls in flight per key (default 8).
    pub max_concurrent: usize,
    /// How long [`Bulkhead::acquire`](crate::Bulkhead::acquire) waits for a slot before
    /// rejecting; zero rejects at once (default 10 s).
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Idle keys kept before the least useful are dropped (default 1024).
    pub max_keys: usize,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        BulkheadConfig {
            max_concurrent: 8,
            max_wait: Duration::from_secs(10),
            max_keys: 1024,
        }
    }
}

/// Built outside this crate from its defaults with the `with_*` setters (see
/// [`ResilienceConfig`]).
impl BulkheadConfig {
    /// Sets `max_concurrent`: calls in flight per key. Setters do not validate; call
    /// `validate` once built. `validate` refuses 0 and more than
    /// [`tokio::sync::Semaphore::MAX_PERMITS`].
    #[must_use]
    pub fn with_max_concurrent(mut self, max_concurrent: usize) -> Self {
        self.max_concurrent = max_concurrent;
        self
    }

    /// Sets `max_wait`: how long an acquire waits for a slot before rejecting; zero rejects
    /// at once. Any value is valid.
    #[must_use]
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Sets `max_keys`: idle keys kept before the least useful are dropped. Setters do not
    /// validate; call `validate` once built. `validate` refuses 0.
    #[must_use]
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Checks the bulkhead rules.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent == 0 {
            return Err(invalid(
                "bulkhead.max_concurrent",
                "at least 1",
                self.max_concurrent,
            ));
        }
        if self.max_concurrent > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(invalid(
                "bulkhead.max_concurrent",
                "at most the semaphore limit",
                self.max_concurrent,
            ));
        }
        if self.max_keys == 0 {
            return Err(invalid("bulkhead.max_keys", "at least 1", self.max_keys));
        }
        Ok(())
    }
}

/// Per-call deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TimeoutConfig {
    /// Deadline of one attempt (default 60 s; LLM completions can be slow).
    #[serde(with = "humantime_serde")]
    pub call: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            call: Duration::from_secs(60),
        }
    }
}

/// Built outside this crate from its defaults with the `with_*` setters (see
/// [`ResilienceConfig`]).
impl TimeoutConfig {
    /// Sets `call`: the deadline of one attempt. Setters do not validate; call `validate`
    /// once built. `validate` refuses zero.
    #[must_use]
    pub fn with_call(mut self, call: Duration) -> Self {
        self.call = call;
        self
    }

    /// Checks the timeout rules.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when the deadline is zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.call.is_zero() {
            return Err(invalid("timeout.call", "greater than zero", self.call));
        }
        Ok(())
    }
}

/// When Genesis degrades and how long health must hold before it recovers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DegradationConfig {
    /// Fraction of LLM-provider breakers open at or above which planning stops calling
    /// LLMs (`llm_fallback`); default 1.0, i.e. every provider is open.
    pub llm_fallback_open_fraction: f64,
    /// Remaining budget fraction below which planning stops calling LLMs (default 0.1).
    pub llm_fallback_budget_fraction: f64,
    /// Fraction of agent breakers open at or above which Genesis goes `minimal`
    /// (default 0.5).
    pub minimal_agent_open_fraction: f64,
    /// Remaining budget fraction below which Genesis goes `minimal`; an exhausted budget
    /// (0) always does (default 0.02).
    pub minimal_budget_fraction: f64,
    /// How long a better level must be indicated before Genesis moves up to it; degrading
    /// is immediate (default 30 s).
    #[serde(with = "humantime_serde")]
    pub recovery_hold: Duration,
}

impl Default for DegradationConfig {
    fn default() -> Self {
        DegradationConfig {
            llm_fallback_open_fraction: 1.0,
            llm_fallback_budget_fraction: 0.1,
            minimal_agent_open_fraction: 0.5,
            minimal_budget_fraction: 0.02,
            recovery_hold: Duration::from_secs(30),
        }
    }
}

/// Built outside this crate from its defaults with the `with_*` setters (see
/// [`ResilienceConfig`]):
///
/// ```
/// use std::time::Duration;
/// use genesis_resilience::{DegradationConfig, ResilienceConfig};
///
/// let config = ResilienceConfig::default().with_degradation(
///     DegradationConfig::default()
///         .with_minimal_agent_open_fraction(0.75)
///         .with_recovery_hold(Duration::from_secs(5)),
/// );
/// config.validate().unwrap();
/// ```
impl DegradationConfig {
    /// Sets `llm_fallback_open_fraction`: the fraction of LLM-provider breakers open at or
    /// above which planning stops calling LLMs. Setters do not validate; call `validate`
    /// once built. `validate` refuses values outside `[0, 1]`.
    #[must_use]
    pub fn with_llm_fallback_open_fraction(mut self, llm_fallback_open_fraction: f64) -> Self {
        self.llm_fallback_open_fraction = llm_fallback_open_fraction;
        self
    }

    /// Sets `llm_fallback_budget_fraction`: the remaining budget fraction below which
    /// planning stops calling LLMs. Setters do not validate; call `validate` once built.
    /// `validate` refuses values outside `[0, 1]`, and values below
    /// `minimal_budget_fraction`.
    #[must_use]
    pub fn with_llm_fallback_budget_fraction(mut self, llm_fallback_budget_fraction: f64) -> Self {
        self.llm_fallback_budget_fraction = llm_fallback_budget_fraction;
        self
    }

    /// Sets `minimal_agent_open_fraction`: the fraction of agent breakers open at or above
    /// which Genesis goes `minimal`. Setters do not validate; call `validate` once built.
    /// `validate` refuses values outside `[0, 1]`.
    #[must_use]
    pub fn with_minimal_agent_open_fraction(mut self, minimal_agent_open_fraction: f64) -> Self {
        self.minimal_agent_open_fraction = minimal_agent_open_fraction;
        self
    }

    /// Sets `minimal_budget_fraction`: the remaining budget fraction below which Genesis
    /// goes `minimal`. Setters do not validate; call `validate` once built. `validate`
    /// refuses values outside `[0, 1]`, and values above `llm_fallback_budget_fraction`.
    #[must_use]
    pub fn with_minimal_budget_fraction(mut self, minimal_budget_fraction: f64) -> Self {
        self.minimal_budget_fraction = minimal_budget_fraction;
        self
    }

    /// Sets `recovery_hold`: how long a better level must be indicated before Genesis moves
    /// up to it. Any value is valid.
    #[must_use]
    pub fn with_recovery_hold(mut self, recovery_hold: Duration) -> Self {
        self.recovery_hold = recovery_hold;
        self
    }

    /// Checks the degradation rules.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_fraction(
            "degradation.llm_fallback_open_fraction",
            self.llm_fallback_open_fraction,
        )?;
        check_fraction(
            "degradation.llm_fallback_budget_fraction",
            self.llm_fallback_budget_fraction,
        )?;
        check_fraction(
            "degradation.minimal_agent_open_fraction",
            self.minimal_agent_open_fraction,
        )?;
        check_fraction(
            "degradation.minimal_budget_fraction",
            self.minimal_budget_fraction,
        )?;
        if self.minimal_budget_fraction > self.llm_fallback_budget_fraction {
            return Err(invalid(
                "degradation.minimal_budget_fraction",
                "at most degradation.llm_fallback_budget_fraction",
                self.minimal_budget_fraction,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_issue_and_validate() {
        let config = ResilienceConfig::default();
        assert_eq!(config.breaker.failure_threshold, 5);
        assert_eq!(config.breaker.cool_down, Duration::from_secs(60));
        assert_eq!(config.breaker.half_open_max_probes, 1);
        assert_eq!(config.breaker.success_threshold, 2);
        assert_eq!(config.retry.cap, Duration::from_secs(60));
        assert_eq!(config.retry.max_retries, 3);
        config.validate().unwrap();
    }

    #[test]
    fn toml_round_trip_with_humantime_and_partial_tables() {
        let text = r#"
            [breaker]
            failure_threshold = 3
            cool_down = "30s"
            [breaker.failure_rate]
            enabled = false
            [retry]
            base = "50ms"
            [bulkhead]
            max_wait = "0s"
        "#;
        let config: ResilienceConfig = toml::from_str(text).unwrap();
        assert_eq!(config.breaker.failure_threshold, 3);
        assert_eq!(config.breaker.cool_down, Duration::from_secs(30));
        assert!(!config.breaker.failure_rate.enabled);
        assert_eq!(config.breaker.success_threshold, 2);
        assert_eq!(config.retry.base, Duration::from_millis(50));
        assert_eq!(config.retry.cap, Duration::from_secs(60));
        assert_eq!(config.bulkhead.max_wait, Duration::ZERO);
        let back: ResilienceConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
        assert_eq!(back, config);
    }

    /// Every config built with its setters equals its struct-literal form: each setter
    /// sets its own field and nothing else.
    #[test]
    fn setters_build_the_struct_literal_form() {
        let bulkhead = BulkheadConfig {
            max_concurrent: 3,
            max_wait: Duration::from_millis(250),
            max_keys: 64,
        };
        let timeout = TimeoutConfig {
            call: Duration::from_secs(7),
        };
        let degradation = DegradationConfig {
            llm_fallback_open_fraction: 0.8,
            llm_fallback_budget_fraction: 0.3,
            minimal_agent_open_fraction: 0.6,
            minimal_budget_fraction: 0.05,
            recovery_hold: Duration::from_secs(9),
        };
        let breaker = BreakerConfig::default().with_failure_threshold(4);
        let retry = BackoffConfig::default().with_max_retries(1);
        let literal = ResilienceConfig {
            breaker: breaker.clone(),
            retry: retry.clone(),
            bulkhead: bulkhead.clone(),
            timeout: timeout.clone(),
            degradation: degradation.clone(),
        };
        let built_bulkhead = BulkheadConfig::default()
            .with_max_concurrent(3)
            .with_max_wait(Duration::from_millis(250))
            .with_max_keys(64);
        assert_eq!(built_bulkhead, bulkhead);
        let built_timeout = TimeoutConfig::default().with_call(Duration::from_secs(7));
        assert_eq!(built_timeout, timeout);
        let built_degradation = DegradationConfig::default()
            .with_llm_fallback_open_fraction(0.8)
            .with_llm_fallback_budget_fraction(0.3)
            .with_minimal_agent_open_fraction(0.6)
            .with_minimal_budget_fraction(0.05)
            .with_recovery_hold(Duration::from_secs(9));
        assert_eq!(built_degradation, degradation);
        let built = ResilienceConfig::default()
            .with_breaker(breaker)
            .with_retry(retry)
            .with_bulkhead(built_bulkhead)
            .with_timeout(built_timeout)
            .with_degradation(built_degradation);
        assert_eq!(built, literal);
        built.validate().unwrap();
        // Setters do not validate: what they set is refused by `validate`, naming it.
        let refused = ResilienceConfig::default()
            .with_bulkhead(BulkheadConfig::default().with_max_concurrent(0))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(refused.contains("bulkhead.max_concurrent"), "{refused}");
        let refused = TimeoutConfig::default()
            .with_call(Duration::ZERO)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(refused.contains("timeout.call"), "{refused}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<ResilienceConfig>("[breaker]\nfailure_treshold = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("failure_treshold"), "{err}");
    }

    #[test]
    fn validation_names_field_and_value() {
        let mut config = ResilienceConfig::default();
        config.breaker.failure_threshold = 0;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid resilience config: `breaker.failure_threshold` must be at least 1, got 0"
        );
        let mut config = ResilienceConfig::default();
        config.retry.cap = Duration::from_millis(1);
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("retry.cap")
        );
        let mut config = ResilienceConfig::default();
        config.degradation.minimal_budget_fraction = 1.5;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("minimal_budget_fraction")
        );
        let mut config = ResilienceConfig::default();
        config.breaker.failure_rate.threshold = 0.0;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("failure_rate.threshold")
        );
    }
}
