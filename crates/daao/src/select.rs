//! Picking the cheapest capable model for a task.

use std::sync::Arc;

use genesis_core::{ModelId, Task, Usd};
use serde::{Deserialize, Serialize};

use crate::{DifficultyEstimator, HeuristicDifficulty, ModelCatalog};

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

/// Appends `x` with two decimals, like `{:.2}` (exact halves may round the other way),
/// without the formatting machinery.
fn push_fixed2(out: &mut String, x: f64) {
    if !x.is_finite() || x.abs() >= 1e15 {
        out.push_str(&format!("{x:.2}"));
        return;
    }
    let hundredths = (x.abs() * 100.0).round() as u64;
    if x < 0.0 && hundredths > 0 {
        out.push('-');
    }
    let whole = hundredths / 100;
    let frac = hundredths % 100;
    let mut digits = [0u8; 20];
    let mut n = whole;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
    out.push('.');
    out.push(char::from(b'0' + (frac / 10) as u8));
    out.push(char::from(b'0' + (frac % 10) as u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_fixed2_matches_float_formatting() {
        for x in [
            0.0, 0.004, 0.005, 0.05, 0.1, 0.123, 0.5, 0.999, 0.996, 1.0, 2.345_6, 17.0, -0.25,
            -0.001,
        ] {
            let mut ours = String::new();
            push_fixed2(&mut ours, x);
            let std = format!("{x:.2}");
            // Rounding of exact halves may differ in the last digit; nothing else may.
            let diff = (ours.parse::<f64>().unwrap() - std.parse::<f64>().unwrap()).abs();
            assert!(diff <= 0.010_000_1, "{x}: {ours} vs {std}");
            assert_eq!(ours.split('.').nth(1).map(str::len), Some(2), "{ours}");
        }
        let fixed2 = |x: f64| {
            let mut s = String::new();
            push_fixed2(&mut s, x);
            s
        };
        assert_eq!(fixed2(0.35), "0.35");
        assert_eq!(fixed2(1.0), "1.00");
        assert_eq!(fixed2(-0.001), "0.00");
        assert_eq!(fixed2(-2.5), "-2.50");
        assert_eq!(fixed2(123.456), "123.46");
        assert_eq!(fixed2(f64::NAN), "NaN");
    }
}
