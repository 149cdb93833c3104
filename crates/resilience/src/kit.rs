//! [`Resilience`]: every primitive built from one [`ResilienceConfig`], as the facade
//! holds them.

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::breaker::{BreakerRegistry, SharedBreaker, StateChangeHook};
use crate::bulkhead::Bulkhead;
use crate::config::ResilienceConfig;
use crate::degradation::{
    DegradationLevel, DegradationSignals, LevelChangeHook, SharedDegradation,
};
use crate::error::ConfigError;
use crate::timeout::Timeout;

/// The resilience kit of one orchestrator: a breaker registry for LLM providers and one for
/// agents (separate, so names never collide and hooks can label them), the shared backoff,
/// the per-agent bulkhead, the call timeout and the degradation level.
///
/// ```
/// use tokio::time::Instant;
/// use genesis_resilience::{BreakerState, DegradationLevel, Resilience, ResilienceConfig};
///
/// let kit = Resilience::builder(ResilienceConfig::default()).seed(7).build().unwrap();
/// let breaker = kit.agent_breaker("coder");
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// assert_eq!(kit.refresh_degradation(Some(0.5), Instant::now()), DegradationLevel::Full);
/// assert_eq!(kit.refresh_degradation(Some(0.0), Instant::now()), DegradationLevel::Minimal);
/// ```
pub struct Resilience {
    providers: BreakerRegistry,
    agents: BreakerRegistry,
    backoff: Arc<Backoff>,
    bulkhead: Bulkhead,
    timeout: Timeout,
    degradation: SharedDegradation,
}

impl fmt::Debug for Resilience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resilience")
            .field("providers", &self.providers)
            .field("agents", &self.agents)
            .field("bulkhead", &self.bulkhead)
            .field("timeout", &self.timeout)
            .field("degradation", &self.degradation)
            .finish()
    }
}

impl Resilience {
    /// Starts a builder over `config`.
    pub fn builder(config: ResilienceConfig) -> ResilienceBuilder {
        ResilienceBuilder {
            config,
            seed: None,
            provider_hook: None,
            agent_hook: None,
            level_hook: None,
        }
    }

    /// The breaker of LLM provider `provider`.
    pub fn provider_breaker(&self, provider: &str) -> Arc<SharedBreaker> {
        self.providers.get(provider)
    }

    /// The breaker of agent `agent`.
    pub fn agent_breaker(&self, agent: &str) -> Arc<SharedBreaker> {
        self.agents.get(agent)
    }

    /// The provider breakers.
    pub fn providers(&self) -> &BreakerRegistry {
        &self.providers
    }

    /// The agent breakers.
    pub fn agents(&self) -> &BreakerRegistry {
        &self.agents
    }

    /// The shared retry schedule (for [`retry_with`](crate::retry_with) or
    /// [`RetryPolicy`](crate::RetryPolicy)).
    pub fn backoff(&self) -> &Arc<Backoff> {
        &self.backoff
    }

    /// The per-agent bulkhead.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    /// The per-attempt timeout.
    pub fn timeout(&self) -> Timeout {
        self.timeout
    }

    /// The degradation level holder (lock-free [`level`](SharedDegradation::level)).
    pub fn degradation(&self) -> &SharedDegradation {
        &self.degradation
    }

    /// Re-evaluates the degradation level from both registries and the budget left
    /// (`None` without a budget) at `now`; returns the level after.
    pub fn refresh_degradation(
        &self,
        budget_remaining: Option<f64>,
        now: Instant,
    ) -> DegradationLevel {
        let signals = DegradationSignals::from_registries(
            &self.providers,
            &self.agents,
            budget_remaining,
            now,
        );
        self.degradation.update(&signals, now)
    }
}

/// Builds a [`Resilience`]; see [`Resilience::builder`].
#[must_use = "call build() to get the Resilience"]
pub struct ResilienceBuilder {
    config: ResilienceConfig,
    seed: Option<u64>,
    provider_hook: Option<StateChangeHook>,
    agent_hook: Option<StateChangeHook>,
    level_hook: Option<LevelChangeHook>,
}

impl fmt::Debug for ResilienceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceBuilder")
            .field("config", &self.config)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl ResilienceBuilder {
    /// Seeds the backoff jitter (reproducible runs and tests); otherwise process entropy.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Hook for provider-breaker state changes.
    pub fn provider_hook(mut self, hook: StateChangeHook) -> Self {
        self.provider_hook = Some(hook);
        self
    }

    /// Hook for agent-breaker state changes.
    pub fn agent_hook(mut self, hook: StateChangeHook) -> Self {
        self.agent_hook = Some(hook);
        self
    }

    /// Hook for degradation level changes.
    pub fn level_hook(mut self, hook: LevelChangeHook) -> Self {
        self.level_hook = Some(hook);
        self
    }

    /// Validates the config and builds every primitive.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first field that breaks its rule.
    pub fn build(self) -> Result<Resilience, ConfigError> {
        let c = self.config;
        c.validate()?;
        let mut providers = BreakerRegistry::new(c.breaker.clone());
        if let Some(hook) = self.provider_hook {
            providers = providers.with_hook(hook);
        }
        let mut agents = BreakerRegistry::new(c.breaker);
        if let Some(hook) = self.agent_hook {
            agents = agents.with_hook(hook);
        }
        let backoff = match self.seed {
            Some(seed) => Backoff::with_seed(c.retry, seed),
            None => Backoff::new(c.retry),
        };
        let mut degradation = SharedDegradation::new(c.degradation);
        if let Some(hook) = self.level_hook {
            degradation = degradation.with_hook(hook);
        }
        Ok(Resilience {
            providers,
            agents,
            backoff: Arc::new(backoff),
            bulkhead: Bulkhead::new(c.bulkhead),
            timeout: Timeout::from_config(&c.timeout),
            degradation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerState;
    use std::sync::Mutex;

    #[test]
    fn invalid_config_is_rejected() {
        let mut config = ResilienceConfig::default();
        config.bulkhead.max_concurrent = 0;
        let err = Resilience::builder(config).build().unwrap_err();
        assert!(err.to_string().contains("bulkhead.max_concurrent"), "{err}");
    }

    #[test]
    fn hooks_are_wired_per_registry() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (p, a) = (Arc::clone(&seen), Arc::clone(&seen));
        let kit = Resilience::builder(ResilienceConfig::default())
            .provider_hook(Arc::new(move |k, _, to| {
                p.lock().unwrap().push(format!("provider {k} {to}"));
            }))
            .agent_hook(Arc::new(move |k, _, to| {
                a.lock().unwrap().push(format!("agent {k} {to}"));
            }))
            .build()
            .unwrap();
        let now = Instant::now();
        for breaker in [kit.provider_breaker("openai"), kit.agent_breaker("openai")] {
            for _ in 0..5 {
                breaker.try_acquire(now).unwrap().failure(now);
            }
            assert_eq!(breaker.state(), BreakerState::Open);
        }
        assert_eq!(
            *seen.lock().unwrap(),
            vec!["provider openai open", "agent openai open"]
        );
        assert_eq!(kit.providers().len(), 1);
        assert_eq!(kit.agents().len(), 1);
    }
}
