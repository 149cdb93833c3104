//! Turning a request into a [`TaskDag`].

use async_trait::async_trait;

use crate::{HtdagError, Limits, TaskDag};

mod heuristic;
mod llm;

pub use heuristic::{FAMILY_THRESHOLD, Family, HeuristicDecomposer};
pub use llm::{LlmDecomposer, PlannerModel, Screen};

/// Breaks a request into a task DAG.
///
/// Implementations must return a DAG that respects `limits` (the [`TaskDag`] API enforces
/// it) and must not panic on any input.
#[async_trait]
pub trait Decomposer: Send + Sync {
    /// A short name recorded in the plan (`"heuristic"`, `"llm:gpt-4o-mini"`).
    fn name(&self) -> &str;

    /// Decomposes `request`.
    ///
    /// # Errors
    /// Limit violations, or a failure of the backing service.
    async fn decompose(&self, request: &str, limits: &Limits) -> Result<TaskDag, HtdagError>;
}

#[async_trait]
impl Decomposer for HeuristicDecomposer {
    fn name(&self) -> &str {
        "heuristic"
    }

    async fn decompose(&self, request: &str, limits: &Limits) -> Result<TaskDag, HtdagError> {
        self.decompose_sync(request, limits)
    }
}
