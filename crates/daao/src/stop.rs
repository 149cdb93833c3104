//! TUMIX-style early stopping of refinement loops.
//!
//! An agent configured to refine runs rounds: each round produces an answer that a
//! judge scores. More rounds cost money; after a point they stop helping. TUMIX showed
//! that stopping once answers converge keeps most of the quality at a fraction of the
//! cost. [`ConvergenceStop`] is the deterministic default policy.

use serde::{Deserialize, Serialize};

/// One finished refinement round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefinementRound {
    /// The judge's quality score in `[0, 1]`.
    pub score: f64,
    /// A fingerprint of the answer (e.g. a hash of its normalised text): equal
    /// fingerprints mean the answer did not change.
    pub fingerprint: u64,
}

/// Whether to run another round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum StopDecision {
    /// Run another round.
    Continue,
    /// Stop, keeping the best answer so far, for this reason.
    Stop {
        /// Why refinement stopped.
        reason: String,
    },
}

/// Decides when refinement stops.
pub trait StopPolicy: Send + Sync {
    /// Given the rounds so far (oldest first), decide whether to run another.
    fn decide(&self, rounds: &[RefinementRound]) -> StopDecision;
}

/// Stops at the first of: `max_rounds` reached; a score at or above `target_score`;
/// after `min_rounds`, an answer identical to the previous one (converged) or an
/// improvement smaller than `min_improvement`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConvergenceStop {
    /// Rounds always run (default 2).
    pub min_rounds: usize,
    /// Rounds never exceeded (default 5).
    pub max_rounds: usize,
    /// A score that is good enough (default 0.9).
    pub target_score: f64,
    /// Smallest improvement worth another round (default 0.02).
    pub min_improvement: f64,
}

impl Default for ConvergenceStop {
    fn default() -> Self {
        ConvergenceStop {
            min_rounds: 2,
            max_rounds: 5,
            target_score: 0.9,
            min_improvement: 0.02,
        }
    }
}

impl StopPolicy for ConvergenceStop {
    fn decide(&self, rounds: &[RefinementRound]) -> StopDecision {
        let n = rounds.len();
        let stop = |reason: String| StopDecision::Stop { reason };
        if n >= self.max_rounds.max(1) {
            return stop(format!("reached max_rounds {}", self.max_rounds.max(1)));
        }
        let Some(last) = rounds.last() else {
            return StopDecision::Continue;
        };
        if last.score >= self.target_score {
            return stop(format!(
                "score {:.2} reached target_score {:.2}",
                last.score, self.target_score
            ));
        }
        if n < self.min_rounds || n < 2 {
            return StopDecision::Continue;
        }
        let prev = &rounds[n - 2];
        if last.fingerprint == prev.fingerprint {
            return stop(format!("answer unchanged after round {n} (converged)"));
        }
        let gain = last.score - prev.score;
        if gain < self.min_improvement {
            return stop(format!(
                "improvement {gain:.3} below min_improvement {:.3}",
                self.min_improvement
            ));
        }
        StopDecision::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(score: f64, fingerprint: u64) -> RefinementRound {
        RefinementRound { score, fingerprint }
    }

    #[test]
    fn stops_for_each_reason() {
        let p = ConvergenceStop::default();
        assert_eq!(p.decide(&[]), StopDecision::Continue);
        assert_eq!(p.decide(&[r(0.5, 1)]), StopDecision::Continue);
        assert!(matches!(p.decide(&[r(0.95, 1)]), StopDecision::Stop { .. }));
        assert!(
            matches!(p.decide(&[r(0.5, 1), r(0.6, 1)]), StopDecision::Stop { reason } if reason.contains("converged"))
        );
        assert!(
            matches!(p.decide(&[r(0.5, 1), r(0.51, 2)]), StopDecision::Stop { reason } if reason.contains("min_improvement"))
        );
        assert_eq!(p.decide(&[r(0.5, 1), r(0.6, 2)]), StopDecision::Continue);
        let many: Vec<_> = (0..5).map(|i| r(0.1 * i as f64, i)).collect();
        assert!(
            matches!(p.decide(&many), StopDecision::Stop { reason } if reason.contains("max_rounds"))
        );
    }
}
