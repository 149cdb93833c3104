//! Degradation levels, entered and left automatically from breaker and budget state.
//!
//! * `full` — LLM planning, learned routing, refinement loops.
//! * `llm_fallback` — heuristic planning, no LLM calls for decisions (every LLM provider's
//!   breaker is open, or the budget is low).
//! * `minimal` — routing by task kind only, no refinement loops (many agents failing, or
//!   the budget is nearly or fully spent).
//!
//! Degrading is immediate; recovering waits until the better level has been indicated for
//! `recovery_hold`, so the level does not flap while half-open breakers probe.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::breaker::{BreakerCounts, BreakerRegistry};
use crate::config::DegradationConfig;

/// How much of Genesis is running. Ordered from best (`Full`) to worst (`Minimal`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DegradationLevel {
    /// Everything on.
    #[default]
    Full,
    /// Heuristic planning; no LLM calls for planning decisions.
    LlmFallback,
    /// Routing by task kind only; no refinement loops.
    Minimal,
}

impl DegradationLevel {
    /// Every level, best first.
    pub const ALL: [DegradationLevel; 3] = [
        DegradationLevel::Full,
        DegradationLevel::LlmFallback,
        DegradationLevel::Minimal,
    ];

    /// The snake_case name used in JSON, plans and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DegradationLevel::Full => "full",
            DegradationLevel::LlmFallback => "llm_fallback",
            DegradationLevel::Minimal => "minimal",
        }
    }

    /// Gauge value for metrics: 0 full, 1 llm_fallback, 2 minimal.
    pub fn as_gauge(self) -> u8 {
        self as u8
    }

    /// Whether planners may call an LLM (decomposition, scoring, judging).
    pub fn allows_llm_planning(self) -> bool {
        self == DegradationLevel::Full
    }

    /// Whether routing may use learned or lexical matching beyond the task kind.
    pub fn allows_learned_routing(self) -> bool {
        self != DegradationLevel::Minimal
    }

    /// Whether refinement loops (TUMIX rounds) may run.
    pub fn allows_refinement(self) -> bool {
        self != DegradationLevel::Minimal
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => DegradationLevel::Full,
            1 => DegradationLevel::LlmFallback,
            _ => DegradationLevel::Minimal,
        }
    }
}

impl fmt::Display for DegradationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unrecognised degradation level name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown degradation level `{name}`: expected full, llm_fallback or minimal")]
pub struct UnknownDegradationLevel {
    /// The rejected name.
    pub name: String,
}

impl FromStr for DegradationLevel {
    type Err = UnknownDegradationLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DegradationLevel::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| UnknownDegradationLevel { name: s.to_owned() })
    }
}

/// What the degradation policy looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DegradationSignals {
    /// Breaker states of the LLM providers.
    pub llm_providers: BreakerCounts,
    /// Breaker states of the agents.
    pub agents: BreakerCounts,
    /// Fraction of the budget left, in `[0, 1]`; `None` without a budget.
    pub budget_remaining: Option<f64>,
}

impl DegradationSignals {
    /// Signals read from a provider registry and an agent registry at `now`.
    pub fn from_registries(
        llm_providers: &BreakerRegistry,
        agents: &BreakerRegistry,
        budget_remaining: Option<f64>,
        now: Instant,
    ) -> Self {
        DegradationSignals {
            llm_providers: llm_providers.counts(now),
            agents: agents.counts(now),
            budget_remaining,
        }
    }
}

/// A level change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelChange {
    /// Level before.
    pub from: DegradationLevel,
    /// Level after.
    pub to: DegradationLevel,
}

/// The pure degradation policy: feed it signals and the time, read the level.
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use genesis_resilience::{
///     BreakerCounts, Degradation, DegradationConfig, DegradationLevel, DegradationSignals,
/// };
///
/// let mut policy = Degradation::new(DegradationConfig::default());
/// let t0 = Instant::now();
/// let all_open = DegradationSignals {
///     llm_providers: BreakerCounts { closed: 0, open: 2, half_open: 0 },
///     ..Default::default()
/// };
/// policy.update(&all_open, t0);
/// assert_eq!(policy.level(), DegradationLevel::LlmFallback);
/// // Recovery waits for the hold (30 s by default).
/// policy.update(&DegradationSignals::default(), t0);
/// assert_eq!(policy.level(), DegradationLevel::LlmFallback);
/// policy.update(&DegradationSignals::default(), t0 + Duration::from_secs(30));
/// assert_eq!(policy.level(), DegradationLevel::Full);
/// ```
#[derive(Debug, Clone)]
pub struct Degradation {
    config: DegradationConfig,
    level: DegradationLevel,
    improving_since: Option<Instant>,
}

impl Degradation {
    /// Starts at `full`.
    pub fn new(config: DegradationConfig) -> Self {
        Degradation {
            config,
            level: DegradationLevel::Full,
            improving_since: None,
        }
    }

    /// The current level.
    pub fn level(&self) -> DegradationLevel {
        self.level
    }

    /// The level the signals indicate right now, before hysteresis.
    pub fn indicated(&self, signals: &DegradationSignals) -> DegradationLevel {
        let c = &self.config;
        let budget = signals.budget_remaining.filter(|b| !b.is_nan());
        let agents = &signals.agents;
        if budget.is_some_and(|b| b <= 0.0 || b < c.minimal_budget_fraction)
            || (agents.open > 0 && agents.open_fraction() >= c.minimal_agent_open_fraction)
        {
            return DegradationLevel::Minimal;
        }
        let providers = &signals.llm_providers;
        if budget.is_some_and(|b| b < c.llm_fallback_budget_fraction)
            || (providers.open > 0 && providers.open_fraction() >= c.llm_fallback_open_fraction)
        {
            return DegradationLevel::LlmFallback;
        }
        DegradationLevel::Full
    }

    /// Re-evaluates at `now`; returns the change, if any.
    pub fn update(&mut self, signals: &DegradationSignals, now: Instant) -> Option<LevelChange> {
        let target = self.indicated(signals);
        if target > self.level {
            self.improving_since = None;
            return Some(self.set(target));
        }
        if target == self.level {
            self.improving_since = None;
            return None;
        }
        let since = *self.improving_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= self.config.recovery_hold {
            self.improving_since = None;
            return Some(self.set(target));
        }
        None
    }

    fn set(&mut self, to: DegradationLevel) -> LevelChange {
        let from = self.level;
        self.level = to;
        LevelChange { from, to }
    }
}

/// Called with `(from, to)` on every level change; the facade wires it to a gauge.
pub type LevelChangeHook = Arc<dyn Fn(DegradationLevel, DegradationLevel) + Send + Sync>;

/// A [`Degradation`] shared between the planner (lock-free reads of [`level`](Self::level))
/// and whoever feeds it signals, with `tracing` events (warn when degrading, info when
/// recovering) and an optional [`LevelChangeHook`].
pub struct SharedDegradation {
    level: AtomicU8,
    policy: Mutex<Degradation>,
    hook: Option<LevelChangeHook>,
}

impl fmt::Debug for SharedDegradation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedDegradation")
            .field("level", &self.level())
            .finish()
    }
}

impl SharedDegradation {
    /// Starts at `full`.
    pub fn new(config: DegradationConfig) -> Self {
        SharedDegradation {
            level: AtomicU8::new(DegradationLevel::Full.as_gauge()),
            policy: Mutex::new(Degradation::new(config)),
            hook: None,
        }
    }

    /// Calls `hook` on every level change.
    #[must_use]
    pub fn with_hook(mut self, hook: LevelChangeHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The current level (one atomic load).
    pub fn level(&self) -> DegradationLevel {
        DegradationLevel::from_u8(self.level.load(Ordering::Acquire))
    }

    /// Re-evaluates at `now` and returns the level after.
    pub fn update(&self, signals: &DegradationSignals, now: Instant) -> DegradationLevel {
        let (change, level) = {
            let mut policy = self.policy.lock().unwrap_or_else(PoisonError::into_inner);
            let change = policy.update(signals, now);
            let level = policy.level();
            self.level.store(level.as_gauge(), Ordering::Release);
            (change, level)
        };
        if let Some(LevelChange { from, to }) = change {
            if to > from {
                // The signals as numbers, one field each (not the Debug text of
                // the struct), so a log query can filter on them.
                tracing::warn!(
                    %from,
                    %to,
                    llm_providers_open = signals.llm_providers.open,
                    llm_providers_half_open = signals.llm_providers.half_open,
                    llm_providers_closed = signals.llm_providers.closed,
                    agents_open = signals.agents.open,
                    agents_half_open = signals.agents.half_open,
                    agents_closed = signals.agents.closed,
                    budget_remaining = signals.budget_remaining,
                    "degradation level lowered"
                );
            } else {
                tracing::info!(%from, %to, "degradation level recovered");
            }
            if let Some(hook) = &self.hook {
                hook(from, to);
            }
        }
        level
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn counts(closed: usize, open: usize, half_open: usize) -> BreakerCounts {
        BreakerCounts {
            closed,
            open,
            half_open,
        }
    }

    fn check(signals: DegradationSignals, expect: DegradationLevel) {
        let policy = Degradation::new(DegradationConfig::default());
        assert_eq!(policy.indicated(&signals), expect, "{signals:?}");
    }

    #[test]
    fn indicated_levels() {
        use DegradationLevel::*;
        check(DegradationSignals::default(), Full);
        let s = |p, a, b| DegradationSignals {
            llm_providers: p,
            agents: a,
            budget_remaining: b,
        };
        check(s(counts(1, 1, 0), counts(4, 0, 0), None), Full);
        check(s(counts(0, 2, 0), counts(4, 0, 0), None), LlmFallback);
        // A provider past its cool-down (half-open) is worth trying again.
        check(s(counts(0, 1, 1), counts(4, 0, 0), None), Full);
        check(s(counts(2, 0, 0), counts(2, 2, 0), None), Minimal);
        check(s(counts(2, 0, 0), counts(3, 1, 0), None), Full);
        check(s(counts(2, 0, 0), counts(0, 0, 0), Some(0.5)), Full);
        check(s(counts(2, 0, 0), counts(0, 0, 0), Some(0.05)), LlmFallback);
        check(s(counts(2, 0, 0), counts(0, 0, 0), Some(0.01)), Minimal);
        check(s(counts(2, 0, 0), counts(0, 0, 0), Some(0.0)), Minimal);
        check(s(counts(0, 0, 0), counts(0, 0, 0), Some(f64::NAN)), Full);
    }

    #[test]
    fn names_round_trip() {
        for level in DegradationLevel::ALL {
            let json = serde_json::to_string(&level).unwrap();
            assert_eq!(json, format!("\"{}\"", level.as_str()));
            assert_eq!(level.as_str().parse::<DegradationLevel>().unwrap(), level);
        }
        assert_eq!(
            "degraded"
                .parse::<DegradationLevel>()
                .unwrap_err()
                .to_string(),
            "unknown degradation level `degraded`: expected full, llm_fallback or minimal"
        );
        assert!(DegradationLevel::Full < DegradationLevel::Minimal);
    }

    #[test]
    fn degrades_at_once_recovers_after_hold_and_resets_on_relapse() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let shared = SharedDegradation::new(DegradationConfig::default()).with_hook(Arc::new(
            move |from, to| sink.lock().unwrap().push((from, to)),
        ));
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let bad = DegradationSignals {
            budget_remaining: Some(0.0),
            ..Default::default()
        };
        let good = DegradationSignals::default();
        assert_eq!(shared.update(&bad, t0), DegradationLevel::Minimal);
        assert_eq!(shared.update(&good, t0 + s), DegradationLevel::Minimal);
        assert_eq!(shared.update(&bad, t0 + 20 * s), DegradationLevel::Minimal);
        // The relapse restarted the hold.
        assert_eq!(shared.update(&good, t0 + 21 * s), DegradationLevel::Minimal);
        assert_eq!(shared.update(&good, t0 + 50 * s), DegradationLevel::Minimal);
        assert_eq!(shared.update(&good, t0 + 51 * s), DegradationLevel::Full);
        assert_eq!(shared.level(), DegradationLevel::Full);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (DegradationLevel::Full, DegradationLevel::Minimal),
                (DegradationLevel::Minimal, DegradationLevel::Full)
            ]
        );
    }
}
