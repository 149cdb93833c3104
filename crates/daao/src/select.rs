//! Picking the cheapest capable model for a task.

use std::sync::Arc;

use genesis_core::decimal::push_fixed2;
use genesis_core::{ModelId, Task, Usd};
use serde::{Deserialize, Serialize};

use crate::{DifficultyEstimator, HeuristicDifficulty, ModelCatalog, ModelSpec};

/// The model chosen for one task, with its reasoning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelChoice {
    /// The chosen model.
    pub model: ModelId,
    /// The task's estimated difficulty in `[0, 1]`.
    pub difficulty: f64,
    /// The expected cost of the task on this model.
    pub estimated_cost: Usd,
    /// Why this model: the capability it has against the difficulty it needs.
    pub reason: String,
}

/// Chooses the cheapest model whose capability covers a task's difficulty plus a safety
/// margin; when none does, the strongest model.
#[derive(Clone)]
pub struct ModelSelector {
    catalog: ModelCatalog,
    estimator: Arc<dyn DifficultyEstimator>,
    margin: f64,
    output_share: f64,
}

impl std::fmt::Debug for ModelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSelector")
            .field("catalog", &self.catalog)
            .field("margin", &self.margin)
            .finish_non_exhaustive()
    }
}

impl ModelSelector {
    /// A selector over `catalog` with the heuristic estimator, a margin of 0.05 and 40%
    /// of a task's tokens assumed to be output.
    pub fn new(catalog: ModelCatalog) -> Self {
        ModelSelector {
            catalog,
            estimator: Arc::new(HeuristicDifficulty),
            margin: 0.05,
            output_share: 0.4,
        }
    }

    /// Replaces the difficulty estimator.
    #[must_use]
    pub fn with_estimator(mut self, estimator: Arc<dyn DifficultyEstimator>) -> Self {
        self.estimator = estimator;
        self
    }

    /// Sets the capability margin added to a task's difficulty (clamped to `[0, 0.5]`).
    #[must_use]
    pub fn with_margin(mut self, margin: f64) -> Self {
        self.margin = if margin.is_finite() {
            margin.clamp(0.0, 0.5)
        } else {
            0.05
        };
        self
    }

    /// The catalogue.
    pub fn catalog(&self) -> &ModelCatalog {
        &self.catalog
    }

    /// Estimates the difficulty of `task`.
    pub fn difficulty(&self, task: &Task) -> f64 {
        let d = self.estimator.estimate(task);
        if d.is_finite() {
            d.clamp(0.0, 1.0)
        } else {
            1.0
        }
    }

    /// Chooses a model for `task`.
    pub fn select(&self, task: &Task) -> ModelChoice {
        let difficulty = self.difficulty(task);
        self.select_for(task, difficulty)
    }

    /// The strongest model for `task`, whatever its difficulty: for when cost routing is
    /// off (an operator's feature flag). `why` is written into the reason
    /// ("cost routing off: {why}; strongest model (capability 0.95)"); the difficulty is
    /// still estimated and reported.
    pub fn select_strongest(&self, task: &Task, why: &str) -> ModelChoice {
        let difficulty = self.difficulty(task);
        let m = self.catalog.strongest();
        let mut reason = String::with_capacity(64 + why.len());
        reason.push_str("cost routing off: ");
        reason.push_str(why);
        reason.push_str("; strongest model (capability ");
        push_fixed2(&mut reason, m.capability);
        reason.push(')');
        self.choice(task, m, difficulty, reason)
    }

    /// Chooses a model for `task` at a known difficulty.
    pub fn select_for(&self, task: &Task, difficulty: f64) -> ModelChoice {
        let need = (difficulty + self.margin).min(1.0);
        let capable = self.catalog.models().iter().find(|m| m.capability >= need);
        // Built by hand: this runs for every task of every plan, and `format!` with
        // floats was a fifth of model selection.
        let mut reason = String::with_capacity(96);
        let spec = match capable {
            Some(m) => {
                reason.push_str("cheapest model with capability ");
                push_fixed2(&mut reason, m.capability);
                reason.push_str(" >= difficulty ");
                push_fixed2(&mut reason, difficulty);
                reason.push_str(" + margin ");
                push_fixed2(&mut reason, self.margin);
                m
            }
            None => {
                let m = self.catalog.strongest();
                reason.push_str("no model reaches difficulty ");
                push_fixed2(&mut reason, difficulty);
                reason.push_str(" + margin ");
                push_fixed2(&mut reason, self.margin);
                reason.push_str("; strongest model (capability ");
                push_fixed2(&mut reason, m.capability);
                reason.push(')');
                m
            }
        };
        self.choice(task, spec, difficulty, reason)
    }

    /// `spec` for `task`, priced for the task's tokens (`output_share` of them output).
    fn choice(
        &self,
        task: &Task,
        spec: &ModelSpec,
        difficulty: f64,
        reason: String,
    ) -> ModelChoice {
        let tokens = u64::from(task.estimated_tokens);
        let output = (tokens as f64 * self.output_share).round() as u64;
        ModelChoice {
            model: spec.id.clone(),
            difficulty,
            estimated_cost: spec.cost(tokens.saturating_sub(output), output),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genesis_core::{TaskId, TaskKind};

    #[test]
    fn strongest_ignores_difficulty_and_says_why() {
        let catalog = ModelCatalog::from_toml_str(
            r#"
[[model]]
id = "small"
provider = "openai"
capability = 0.5
input_per_million = 0.15
output_per_million = 0.60
[[model]]
id = "large"
provider = "openai"
capability = 1.0
input_per_million = 2.50
output_per_million = 10.0
"#,
        )
        .unwrap();
        let selector = ModelSelector::new(catalog);
        let easy = Task::new(TaskId::new("t"), TaskKind::Support, "Say thanks");
        assert_eq!(selector.select(&easy).model.as_str(), "small");
        let fixed = selector.select_strongest(&easy, "feature flag daao_cost_routing is off");
        assert_eq!(fixed.model.as_str(), "large");
        assert_eq!(
            fixed.reason,
            "cost routing off: feature flag daao_cost_routing is off; strongest model (capability 1.00)"
        );
        assert_eq!(fixed.difficulty, selector.difficulty(&easy));
        assert!(fixed.estimated_cost > selector.select(&easy).estimated_cost);
    }
}
