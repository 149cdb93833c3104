//! What the router learned from finished runs, apart from the catalogue it was given.
//!
//! An agent's learned state is its success rate, its outcome statistics, its examples
//! and the plans it served ([`genesis_halo::Router::record_outcomes`] changes only
//! these). Kept apart from descriptions, skills and kinds, it can be stored (the server
//! keeps it in its run store) and laid over the configured catalogue at the next start:
//! an operator's edits to the catalogue stay in force and what was learned is not lost.

use genesis_core::AgentId;
use genesis_halo::{AgentProfile, AgentRegistry, OutcomeStats};
use serde::{Deserialize, Serialize};

/// One agent's learned state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedState {
    /// Success rate, in `[0, 1]`.
    pub success_rate: f64,
    /// Recorded outcomes.
    pub outcomes: OutcomeStats,
    /// Examples, configured and learned (the configured ones are kept when laid over).
    pub examples: Vec<String>,
    /// Plans (run ids) the agent served successfully.
    pub plans: Vec<String>,
}

impl LearnedState {
    fn of(profile: &AgentProfile) -> Self {
        LearnedState {
            success_rate: profile.success_rate,
            outcomes: profile.outcomes,
            examples: profile.examples.clone(),
            plans: profile.plans.clone(),
        }
    }
}

/// The learned state of every agent that has learned something (recorded outcomes or
/// plans), in registry order.
pub fn learned_states(registry: &AgentRegistry) -> Vec<(AgentId, LearnedState)> {
    registry
        .iter()
        .filter(|p| p.outcomes.total() > 0 || !p.plans.is_empty())
        .map(|p| (p.id.clone(), LearnedState::of(p)))
        .collect()
}

/// What [`apply_learned`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Agents whose learned state was laid over.
    pub agents: usize,
    /// Stored agents that are no longer in the catalogue (ignored).
    pub unknown: usize,
}

/// Lays `states` over `registry`: success rate, outcomes and plans are replaced; stored
/// examples join the configured ones (deduplicated, at most `max_examples` per agent,
/// configured ones first). Agents not in `registry` are skipped and counted. Rates out
/// of `[0, 1]` (a hand-edited store) are clamped.
///
/// # Errors
/// The resulting registry is invalid (cannot happen for a valid `registry`: ids,
/// descriptions and kinds are not touched).
pub fn apply_learned(
    registry: &AgentRegistry,
    states: &[(AgentId, LearnedState)],
    max_examples: usize,
) -> Result<(AgentRegistry, Applied), genesis_halo::HaloError> {
    let mut applied = Applied::default();
    let mut profiles = registry.as_slice().to_vec();
    for (id, state) in states {
        let Some(i) = registry.index_of(id.as_str()) else {
            applied.unknown += 1;
            continue;
        };
        let Some(p) = profiles.get_mut(i) else {
            continue;
        };
        p.success_rate = if state.success_rate.is_finite() {
            state.success_rate.clamp(0.0, 1.0)
        } else {
            p.success_rate
        };
        p.outcomes = state.outcomes;
        p.plans.clone_from(&state.plans);
        p.plans.truncate(max_examples);
        for e in &state.examples {
            if p.examples.len() >= max_examples {
                break;
            }
            let e = e.trim();
            if !e.is_empty() && !p.examples.iter().any(|x| x.trim() == e) {
                p.examples.push(e.to_owned());
            }
        }
        applied.agents += 1;
    }
    Ok((AgentRegistry::new(profiles)?, applied))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn registry() -> AgentRegistry {
        AgentRegistry::new(vec![
            AgentProfile::new("a", "writes code").with_example("Add an endpoint"),
            AgentProfile::new("b", "writes docs"),
        ])
        .unwrap()
    }

    #[test]
    fn learned_state_is_laid_over_the_configured_catalogue() {
        let mut learned = LearnedState::of(registry().get("a").unwrap());
        learned.success_rate = 0.4;
        learned.outcomes.failures = 3;
        learned.examples = vec!["Add an endpoint".into(), "Fix the login bug".into()];
        learned.plans = vec!["run_1".into()];
        let stored = vec![
            (AgentId::new("a"), learned),
            (
                AgentId::new("gone"),
                LearnedState::of(&AgentProfile::new("gone", "x")),
            ),
        ];
        let (merged, applied) = apply_learned(&registry(), &stored, 500).unwrap();
        assert_eq!(
            applied,
            Applied {
                agents: 1,
                unknown: 1
            }
        );
        let a = merged.get("a").unwrap();
        assert_eq!(a.success_rate, 0.4);
        assert_eq!(a.outcomes.failures, 3);
        assert_eq!(a.examples, ["Add an endpoint", "Fix the login bug"]);
        assert_eq!(a.plans, ["run_1"]);
        assert_eq!(a.description, "writes code");
        assert_eq!(merged.get("b"), registry().get("b"));
        // Only agents that learned something are stored.
        let states = learned_states(&merged);
        assert_eq!(states.len(), 1);
        assert_eq!(states[0].0.as_str(), "a");
    }

    #[test]
    fn bad_stored_values_are_bounded() {
        let mut learned = LearnedState::of(registry().get("a").unwrap());
        learned.success_rate = f64::NAN;
        learned.examples = (0..10).map(|i| format!("example {i}")).collect();
        let (merged, _) = apply_learned(&registry(), &[(AgentId::new("a"), learned)], 4).unwrap();
        let a = merged.get("a").unwrap();
        assert_eq!(a.success_rate, registry().get("a").unwrap().success_rate);
        assert_eq!(a.examples.len(), 4);
        let mut learned = LearnedState::of(a);
        learned.success_rate = 7.0;
        let (merged, _) = apply_learned(&registry(), &[(AgentId::new("a"), learned)], 4).unwrap();
        assert_eq!(merged.get("a").unwrap().success_rate, 1.0);
    }
}
