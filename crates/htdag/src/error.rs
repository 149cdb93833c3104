//! Errors of the task DAG and the decomposers.

use genesis_core::{ErrorCategory, TaskId};

/// Why a DAG operation or a decomposition was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HtdagError {
    /// The request is empty (or only white space and invisible characters).
    #[error("request is empty (rule: non_empty_request)")]
    EmptyRequest,
    /// The request exceeds the length limit.
    #[error(
        "request is {len} characters, over the limit of {max} set by limits.max_request_chars (rule: max_request_chars)"
    )]
    RequestTooLong {
        /// Characters in the request.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A task's id is empty (or only white space): events, journals and dependencies
    /// could not name it.
    #[error("task id is empty (rule: non_empty_task_id)")]
    EmptyTaskId,
    /// A task id was used twice.
    #[error("task id {id} already exists in the dag")]
    DuplicateTask {
        /// The repeated id.
        id: TaskId,
    },
    /// An operation referenced a task that does not exist.
    #[error("unknown task {id}")]
    UnknownTask {
        /// The missing id.
        id: TaskId,
    },
    /// A task would depend on itself.
    #[error("task {id} cannot depend on itself")]
    SelfDependency {
        /// The task.
        id: TaskId,
    },
    /// Adding the dependency would close a cycle; `path` lists it, first id repeated last.
    #[error("dependency would create a cycle: {}", display_path(path))]
    CycleDetected {
        /// The cycle, e.g. `[a, b, c, a]`.
        path: Vec<TaskId>,
    },
    /// The DAG would hold more tasks than allowed.
    #[error(
        "dag would hold {count} tasks, over the limit of {max} set by limits.max_tasks (rule: max_tasks)"
    )]
    TooManyTasks {
        /// Tasks after the operation.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A task would sit deeper in the hierarchy than allowed.
    #[error(
        "task {id} would be at depth {depth}, over the limit of {max} set by limits.max_depth (rule: max_depth)"
    )]
    TooDeep {
        /// The task.
        id: TaskId,
        /// Its depth (top-level tasks are at depth 1).
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// One update adds more subtasks than allowed.
    #[error(
        "update adds {count} subtasks, over the limit of {max} set by limits.max_subtasks_per_update (rule: max_subtasks_per_update)"
    )]
    TooManySubtasks {
        /// Subtasks in the update.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The DAG has already been updated the maximum number of times.
    #[error("dag has had {count} updates, the limit is {max} (rule: max_updates)")]
    TooManyUpdates {
        /// Updates applied so far.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A decomposer produced no tasks.
    #[error("decomposer {decomposer} produced no tasks")]
    EmptyDecomposition {
        /// Name of the decomposer.
        decomposer: String,
    },
    /// A decomposer backed by an external service failed.
    #[error("decomposer {decomposer} failed")]
    Decomposer {
        /// Name of the decomposer.
        decomposer: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl HtdagError {
    /// The pipeline category of this error.
    pub fn category(&self) -> ErrorCategory {
        match self {
            HtdagError::EmptyRequest | HtdagError::RequestTooLong { .. } => ErrorCategory::Security,
            HtdagError::TooManyTasks { .. }
            | HtdagError::TooDeep { .. }
            | HtdagError::TooManySubtasks { .. }
            | HtdagError::TooManyUpdates { .. } => ErrorCategory::Resource,
            _ => ErrorCategory::Decomposition,
        }
    }

    /// True when the error is the caller's input, not a fault of Genesis.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            HtdagError::EmptyRequest
                | HtdagError::RequestTooLong { .. }
                | HtdagError::TooManyTasks { .. }
                | HtdagError::TooDeep { .. }
                | HtdagError::TooManySubtasks { .. }
                | HtdagError::TooManyUpdates { .. }
        )
    }
}

fn display_path(path: &[TaskId]) -> String {
    let parts: Vec<&str> = path.iter().map(TaskId::as_str).collect();
    parts.join(" -> ")
}
