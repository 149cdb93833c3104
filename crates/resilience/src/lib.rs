//! Keeping Genesis working when agents and LLM providers fail: circuit breakers,
//! backoff and retry, timeouts, bulkheads and degradation levels.
//!
//! Mental model: every outbound call passes `bulkhead → breaker → timeout → call`, inside
//! a retry loop that only retries what [`Classify`] calls transient; breaker states and
//! the budget drive the [`DegradationLevel`] the planner reads.
//!
//! * Pure policy types take the current time as an argument and are testable without a
//!   runtime: [`CircuitBreaker`], [`Backoff`], [`Degradation`].
//! * Thread-safe wrappers: [`SharedBreaker`] (a `std::sync::Mutex` around the state
//!   machine), [`BreakerRegistry`] (bounded, LRU eviction of closed breakers),
//!   [`Bulkhead`] (per-key semaphores), [`SharedDegradation`] (lock-free reads).
//! * Plain async API: [`retry`] / [`retry_with`], [`SharedBreaker::call`],
//!   [`Timeout::run`], [`Bulkhead::acquire`].
//! * Tower adapters: [`BreakerLayer`] and [`RetryPolicy`] (a `tower::retry::Policy`);
//!   timeouts, concurrency limits and load shedding reuse tower's own layers.
//! * [`Resilience`] builds all of them from one config: provider and agent breaker
//!   registries, the shared backoff, the bulkhead, the timeout and the degradation level.
//! * Configuration: [`ResilienceConfig`] groups [`BreakerConfig`], [`RetryConfig`],
//!   [`BulkheadConfig`], [`TimeoutConfig`] and [`DegradationConfig`].
//!
//! All async code uses `tokio::time`, so tests run on tokio's paused clock.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use std::time::Duration;
//! use genesis_resilience::{
//!     retry_with, Backoff, BreakerRegistry, Bulkhead, ResilienceConfig, ResilienceError, Retry,
//!     Timeout,
//! };
//!
//! #[derive(Debug, PartialEq)]
//! enum AgentError { Overloaded, Resilience(ResilienceError) }
//! impl From<ResilienceError> for AgentError {
//!     fn from(e: ResilienceError) -> Self { AgentError::Resilience(e) }
//! }
//!
//! let config = ResilienceConfig::default();
//! let breakers = BreakerRegistry::new(config.breaker.clone());
//! let bulkhead = Bulkhead::new(config.bulkhead.clone());
//! let backoff = Backoff::with_seed(config.retry.clone(), 7);
//! let timeout = Timeout::new(Duration::from_secs(30));
//! let classify = |e: &AgentError| match e {
//!     AgentError::Overloaded => Retry::Yes { after: Some(Duration::from_secs(1)) },
//!     AgentError::Resilience(r) => genesis_resilience::Classify::classify(r),
//! };
//!
//! let mut attempts = 0;
//! let answer = retry_with(&backoff, classify, || {
//!     attempts += 1;
//!     let fail = attempts == 1;
//!     let breaker = breakers.get("agent:coder");
//!     let bulkhead = &bulkhead;
//!     async move {
//!         let _slot = bulkhead.acquire("agent:coder").await?;
//!         breaker
//!             .call_with(classify, timeout.run(async move {
//!                 if fail { Err(AgentError::Overloaded) } else { Ok("done") }
//!             }))
//!             .await
//!     }
//! })
//! .await;
//! assert_eq!(answer.unwrap(), "done");
//! assert_eq!(attempts, 2);
//! # }
//! ```

mod backoff;
mod breaker;
mod bulkhead;
mod classify;
mod config;
mod degradation;
mod error;
mod kit;
mod retry;
mod rng;
mod timeout;

pub use backoff::{Backoff, GiveUp};
pub use breaker::{
    Admitted, BreakerCounts, BreakerLayer, BreakerPermit, BreakerRegistry, BreakerService,
    BreakerState, CircuitBreaker, Permit, Rejected, SharedBreaker, StateChangeHook, Transition,
    TripCause,
};
pub use bulkhead::{Bulkhead, BulkheadPermit};
pub use classify::{
    Classify, ClassifyWith, Retry, UseClassify, classify_error_chain, classify_http_status,
    parse_retry_after,
};
pub use config::{
    BackoffConfig, BreakerConfig, BulkheadConfig, DegradationConfig, FailureRateConfig,
    ResilienceConfig, RetryConfig, TimeoutConfig,
};
pub use degradation::{
    Degradation, DegradationLevel, DegradationSignals, LevelChange, LevelChangeHook,
    SharedDegradation, UnknownDegradationLevel,
};
pub use error::{ConfigError, ResilienceError};
pub use kit::{Resilience, ResilienceBuilder};
pub use retry::{RetryError, RetryPolicy, retry, retry_with};
pub use timeout::Timeout;
