//! Running plans: agents, the executor, run events and results.
//!
//! Mental model: the executor walks the plan's DAG as a ready set. A task starts when
//! everything it waits for has succeeded; it runs on its assigned agent behind a
//! per-agent concurrency limit and circuit breaker, with a per-attempt timeout and
//! retries with backoff for transient failures, all within the task's deadline; when
//! the agent keeps failing, its breaker is open or its slots are all taken, the task is
//! re-routed to the next-ranked alternative. Every state
//! change is an [`RunEvent`], journaled (see [`RunJournal`]) before dependents are
//! released, and broadcast to subscribers.

mod agent;
pub mod backends;
mod executor;
mod writer;

use genesis_core::{AgentId, ModelId, RunId, TaskId, Usd};
use genesis_daao::{BudgetScope, DayTotal};
use serde::{Deserialize, Serialize};

pub use agent::{
    Agent, AgentError, AgentOutput, AgentRequest, AgentSet, CostBounds, FollowUp, TaskInput,
};
pub use executor::{
    AgreementJudge, CancelOnDrop, Executor, ExecutorConfig, Judge, RefineConfig, Refinement,
    RunHandle,
};
/// The event channel's receiver ([`RunHandle::events`]) and the run's cancellation
/// token ([`RunHandle::cancellation`]), re-exported so callers name the exact versions
/// this crate uses without pinning tokio and tokio-util to match.
pub use tokio::sync::broadcast::{Receiver as EventReceiver, error::RecvError};
pub use tokio_util::sync::CancellationToken;

/// Crate-internal pieces the orchestrator uses to start runs.
pub(crate) mod executor_internals {
    pub(crate) use super::executor::{AgentTry, Learner, Replanner, RunSpec};
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskStatus {
    /// Waiting for its prerequisites.
    Pending,
    /// An attempt is in flight.
    Running,
    /// Done; its output is recorded.
    Succeeded,
    /// Every candidate agent failed, or the budget ran out.
    Failed,
    /// Not run because a prerequisite failed.
    Skipped,
    /// Not run because the run was cancelled.
    Cancelled,
}

impl TaskStatus {
    /// True for states a task never leaves.
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskStatus::Pending | TaskStatus::Running)
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RunStatus {
    /// Accepted, not finished.
    Running,
    /// Every task succeeded.
    Succeeded,
    /// At least one task failed (or was skipped because of one).
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl RunStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// One state change of a run. Serialised with a `type` tag (`task_started`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RunEvent {
    /// The executor started (or resumed) the run.
    RunStarted {
        /// Tasks in the run.
        tasks: usize,
        /// Tasks already finished before this start (resumed runs).
        resumed: usize,
    },
    /// An attempt started.
    TaskStarted {
        /// The task.
        task_id: TaskId,
        /// The agent.
        agent: AgentId,
        /// Attempt number on this agent, from 1.
        attempt: u32,
        /// The model the attempt calls ([`Agent::model`]: an LLM agent's, the model
        /// DAAO planned the task on); absent for agents that call none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<ModelId>,
    },
    /// An attempt failed transiently; another follows after `delay_ms`.
    TaskRetrying {
        /// The task.
        task_id: TaskId,
        /// The agent.
        agent: AgentId,
        /// The attempt that failed.
        attempt: u32,
        /// Wait before the next attempt.
        delay_ms: u64,
        /// What failed.
        reason: String,
    },
    /// The task moved to another agent.
    TaskRerouted {
        /// The task.
        task_id: TaskId,
        /// The agent given up on.
        from: AgentId,
        /// The next-ranked alternative.
        to: AgentId,
        /// Why.
        reason: String,
    },
    /// A refinement round finished (TUMIX).
    TaskRefined {
        /// The task.
        task_id: TaskId,
        /// Round number, from 1.
        round: u32,
        /// The judge's score.
        score: f64,
        /// Whether refinement stops here, and why.
        stop: Option<String>,
    },
    /// The task succeeded.
    TaskSucceeded {
        /// The task.
        task_id: TaskId,
        /// The agent that did it.
        agent: AgentId,
        /// The model that produced the answer: that of the attempt that answered
        /// ([`Agent::model`]; its refinement rounds call the same), which may differ from
        /// the one a first `task_started` named when the task was re-routed. Absent for
        /// agents that call none, and in events journaled before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<ModelId>,
        /// Its output: the agent's text as written (a flagged output too; what its
        /// dependents are passed is quarantined instead, see `flagged`).
        output: String,
        /// The rule the injection screen flagged the output for (e.g.
        /// `feature:"instructions"`), absent when it passed clean: the output is
        /// returned as written, and passed on to dependents and refinement rounds
        /// quarantined (policy `sanitize`) or as written (policy `audit`). Absent in
        /// events journaled before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flagged: Option<String>,
        /// True when the answer was cut at its token limit ([`AgentOutput::truncated`]);
        /// absent when it was not.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
        /// What it cost, retries and rounds included.
        cost: Usd,
        /// Input tokens its agents reported, retries and rounds included (0 when they
        /// report none; absent in events journaled before it was recorded).
        #[serde(default)]
        input_tokens: u64,
        /// Output tokens its agents reported, as `input_tokens`.
        #[serde(default)]
        output_tokens: u64,
        /// Attempts across all agents.
        attempts: u32,
        /// Time on its agents, in milliseconds: from its first call's start to the
        /// answer, retries, backoff, re-routes and refinement rounds included; the time
        /// it waited for a call slot (`queued_ms`) is not (it was before audit P9 F5,
        /// so overload read as a slow agent).
        duration_ms: u64,
        /// Time it waited for call slots, in milliseconds: a server-wide one
        /// (`executor.max_tasks_in_flight`) or one of a busy agent's
        /// (`max_concurrent_tasks`). Not counted in `duration_ms` nor against
        /// `executor.task_deadline`; 0 in events journaled before it was recorded.
        #[serde(default)]
        queued_ms: u64,
    },
    /// The task failed for good.
    TaskFailed {
        /// The task.
        task_id: TaskId,
        /// Why.
        reason: String,
        /// Attempts across all agents.
        attempts: u32,
        /// The model of its last agent call that started ([`Agent::model`]); absent
        /// when no call was made or its agent calls no model, and in events journaled
        /// before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<ModelId>,
        /// Input tokens its agents reported before it failed: every call that answered
        /// (an answer refused as too large or screened out, a refinement round), retries
        /// and re-routes included; 0 when none answered (a failed call reports none).
        /// Absent in events journaled before it was recorded.
        #[serde(default)]
        input_tokens: u64,
        /// Output tokens its agents reported before it failed, as `input_tokens`.
        #[serde(default)]
        output_tokens: u64,
        /// What the run was charged for it: every call that answered, and a call held
        /// to a cost limit that timed out, lost its answer or was cut off (the run's
        /// deadline), at that limit. 0 in events journaled before it was recorded.
        #[serde(default)]
        cost: Usd,
    },
    /// An agent call of the task was refused because its estimated cost would break a
    /// budget. Journaled with the `task_failed` that follows it; a refinement round
    /// refused this way ends refinement with the best answer so far instead.
    BudgetExceeded {
        /// The task.
        task_id: TaskId,
        /// The budget: `run`, `day` or `subject_day` (the rule is `budget_{scope}`).
        scope: BudgetScope,
        /// Already spent in that scope.
        spent: Usd,
        /// Reserved by calls in flight in that scope.
        reserved: Usd,
        /// The call's estimated cost.
        requested: Usd,
        /// The limit.
        limit: Usd,
    },
    /// A call of the task answered and was charged what it reported, which took a
    /// budget over its limit: its agent has no cost limit (an HTTP or command backend
    /// without `max_cost_usd`) and reported more than was set aside for it. Nothing
    /// fails (the work is done and paid for), and the next call that does not fit is
    /// refused as usual; emitted once per run and budget, with a warning log naming the
    /// rule `budget_{scope}`.
    BudgetOverspent {
        /// The task whose call settled over the limit.
        task_id: TaskId,
        /// The budget: `run`, `day` or `subject_day` (the rule is `budget_{scope}`).
        scope: BudgetScope,
        /// Spent in that scope once the call settled.
        spent: Usd,
        /// The limit.
        limit: Usd,
    },
    /// The task will not run (or, when the run was cancelled while it ran, not finish).
    TaskSkipped {
        /// The task.
        task_id: TaskId,
        /// Why (the failed prerequisite, or cancellation).
        reason: String,
        /// Input tokens its agents reported before the run was cancelled or timed out
        /// while the task ran (calls that answered, as for `task_failed`); 0 for a task
        /// that never started. Absent in events journaled before it was recorded.
        #[serde(default)]
        input_tokens: u64,
        /// Output tokens, as `input_tokens`.
        #[serde(default)]
        output_tokens: u64,
        /// What the run was charged for it before it was cancelled (as for
        /// `task_failed`); 0 for a task that never started, and in events journaled
        /// before it was recorded.
        #[serde(default)]
        cost: Usd,
        /// Agent calls it made before it was cancelled; 0 for a task that never
        /// started, and in events journaled before it was recorded.
        #[serde(default)]
        attempts: u32,
    },
    /// An agent's output added follow-up tasks (dynamic replanning).
    TasksAdded {
        /// The task whose output proposed them.
        after: TaskId,
        /// The new tasks, routed.
        tasks: Vec<crate::PlannedTask>,
    },
    /// A proposed update was refused (limits, cycle, injection); nothing changed.
    UpdateRejected {
        /// The task whose output proposed it.
        after: TaskId,
        /// Why.
        reason: String,
    },
    /// Money spent so far.
    Cost {
        /// Total for the run.
        spent: Usd,
    },
    /// The run could not be started or resumed, so none of it runs (a `run_finished`
    /// with status `failed` follows). Emitted by the server, not the executor.
    RunRejected {
        /// The rule or limit that refused it (e.g. `max_tasks`).
        rule: String,
        /// Why, naming the value.
        reason: String,
    },
    /// The run stopped before its end because its journal refused a write (rule
    /// `journal_unavailable`): no task starts, the attempts in flight were aborted, and
    /// the journal still holds the run as running, so it resumes at the next start.
    /// Broadcast to subscribers only, never journaled (the journal is what failed),
    /// and the run's last event in this process: no `run_finished` follows.
    RunInterrupted {
        /// `journal_unavailable`.
        rule: String,
        /// Why, with the journal's error.
        reason: String,
    },
    /// The run ended.
    RunFinished {
        /// Final status.
        status: RunStatus,
        /// Total cost.
        cost: Usd,
        /// Input tokens of the whole run: the sum over all its tasks, succeeded, failed,
        /// skipped and cancelled, plus its planning ([`RunResult::input_tokens`]), tasks
        /// finished before a restart included. Absent in events journaled before it was
        /// recorded.
        #[serde(default)]
        input_tokens: u64,
        /// Output tokens of the whole run, as `input_tokens`.
        #[serde(default)]
        output_tokens: u64,
    },
}

impl RunEvent {
    /// The event's `type` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            RunEvent::RunStarted { .. } => "run_started",
            RunEvent::TaskStarted { .. } => "task_started",
            RunEvent::TaskRetrying { .. } => "task_retrying",
            RunEvent::TaskRerouted { .. } => "task_rerouted",
            RunEvent::TaskRefined { .. } => "task_refined",
            RunEvent::TaskSucceeded { .. } => "task_succeeded",
            RunEvent::TaskFailed { .. } => "task_failed",
            RunEvent::BudgetExceeded { .. } => "budget_exceeded",
            RunEvent::BudgetOverspent { .. } => "budget_overspent",
            RunEvent::TaskSkipped { .. } => "task_skipped",
            RunEvent::TasksAdded { .. } => "tasks_added",
            RunEvent::UpdateRejected { .. } => "update_rejected",
            RunEvent::Cost { .. } => "cost",
            RunEvent::RunRejected { .. } => "run_rejected",
            RunEvent::RunInterrupted { .. } => "run_interrupted",
            RunEvent::RunFinished { .. } => "run_finished",
        }
    }
}

/// The end state of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskReport {
    /// The task.
    pub task_id: TaskId,
    /// Final status.
    pub status: TaskStatus,
    /// The agent that finished it (or last tried).
    pub agent: Option<AgentId>,
    /// The model that produced its output (see [`RunEvent::TaskSucceeded`]'s `model`),
    /// or, for a task that did not succeed, the model of its last agent call that
    /// started. Absent when no call was made or its agents call no model, and from
    /// reports stored before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelId>,
    /// Attempts across all agents.
    pub attempts: u32,
    /// Output, when it succeeded: the agent's text as written.
    pub output: Option<String>,
    /// The rule the injection screen flagged the output for, absent when it passed
    /// clean (see [`RunEvent::TaskSucceeded`]'s `flagged`): the output is as written;
    /// dependents were passed it quarantined. Absent from reports stored before it was
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flagged: Option<String>,
    /// True when the output was cut at its token limit ([`AgentOutput::truncated`]);
    /// absent when it was not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// What the run was charged for it, whatever its end (see `task_failed`'s
    /// `cost`): the tasks' costs sum to the run's cost less its planning.
    pub cost: Usd,
    /// Input tokens its agents reported ([`AgentOutput::input_tokens`]) over every call
    /// that answered, retries, re-routes and refinement rounds included, whatever the
    /// task's end (a failed, timed-out or cancelled task keeps what its calls that
    /// answered reported; a call that failed reports none); 0 when they report none
    /// (absent from reports stored before it was recorded).
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens its agents reported ([`AgentOutput::output_tokens`]), counted as
    /// `input_tokens`.
    #[serde(default)]
    pub output_tokens: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The run.
    pub run_id: RunId,
    /// Final status.
    pub status: RunStatus,
    /// The aggregated answer: the outputs of the top-level tasks, in order.
    pub answer: String,
    /// Per-task outcomes, in plan order.
    pub tasks: Vec<TaskReport>,
    /// Total cost: the tasks' costs plus its planning's ([`RunResult::planning`]).
    pub cost: Usd,
    /// Input tokens of the whole run: the sum over [`RunResult::tasks`], plus its
    /// planning's.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens of the whole run, as `input_tokens`.
    #[serde(default)]
    pub output_tokens: u64,
    /// What LLM planning of the run's plan spent ([`crate::Plan::planning`]), included
    /// in `cost` and the token totals; absent when no planner call was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planning: Option<crate::PlanningSpend>,
    /// Set when the run stopped before its end because its journal refused a write
    /// (rule `journal_unavailable`, see [`RunJournal::record`]). `status` is then
    /// [`RunStatus::Running`]: the journal holds the run as unfinished, and a server
    /// resumes it at its next start (doing again only what was not journaled). The
    /// tasks are as far as they got in this process; those whose attempts were aborted
    /// are `running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<RunInterrupted>,
}

impl RunResult {
    /// How many tasks failed, and the task to name when saying why the run failed: the
    /// first failed one in plan order, else the first with an error (a skipped task
    /// names why).
    pub fn failures(&self) -> (usize, Option<&TaskReport>) {
        let failed = self
            .tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Failed)
            .count();
        let first = self
            .tasks
            .iter()
            .find(|t| t.status == TaskStatus::Failed)
            .or_else(|| self.tasks.iter().find(|t| t.error.is_some()));
        (failed, first)
    }
}

/// Why a run stopped before its end ([`RunResult::interrupted`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInterrupted {
    /// The rule: `journal_unavailable`.
    pub rule: String,
    /// Why, with the journal's error.
    pub reason: String,
}

/// Durable record of run events. The executor calls [`RunJournal::record`] for every
/// event *before* it releases dependents of a finished task or reports the run
/// finished, so a crash never loses a finished task's output.
pub trait RunJournal: Send + Sync {
    /// Persists one event.
    ///
    /// # Errors
    /// Storage failures. The executor retries a failed write twice (after 100 ms, then
    /// 400 ms); when it still fails, the run stops rather than do work it cannot
    /// journal (rule `journal_unavailable`, logged once per run at `error`): no task
    /// starts, the attempts in flight are aborted, and the run's result says so
    /// ([`RunResult::interrupted`]). What the journal kept stays: after a restart the
    /// run resumes and does again only what was not journaled. A journal that panics
    /// while writing, inline or on the journal thread, is taken as one that failed
    /// the write.
    fn record(
        &self,
        run_id: &RunId,
        event: &RunEvent,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// Persists events that belong together (a task's success, the run's cost and the
    /// follow-ups its output added) all or none: a crash never keeps the success but
    /// loses the follow-ups. The default records them one by one; durable journals
    /// should override it with one transaction.
    ///
    /// # Errors
    /// As [`RunJournal::record`]; an implementation that overrides this method keeps
    /// none of the events when it fails.
    fn record_all(
        &self,
        run_id: &RunId,
        events: &[RunEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        events.iter().try_for_each(|e| self.record(run_id, e))
    }

    /// Persists the event groups of several runs, each one all or none as
    /// [`RunJournal::record_all`] does, and returns one result per group, in order.
    /// The executor hands a blocking journal ([`RunJournal::blocks`]) everything its
    /// runs asked to journal while the previous write was under way in one call, so
    /// a journal that can make them durable together (one transaction, one fsync:
    /// group commit) should override it. The default records the groups one by one.
    fn record_groups(
        &self,
        groups: &[(&RunId, &[RunEvent])],
    ) -> Vec<Result<(), Box<dyn std::error::Error + Send + Sync>>> {
        groups
            .iter()
            .map(|(run_id, events)| self.record_all(run_id, events))
            .collect()
    }

    /// Called on the run's own task once `events` were journaled, before they are
    /// broadcast, for observers that must count each journaled event once (metrics):
    /// the writes themselves may run on the executor's journal thread, where a
    /// thread-local metrics recorder, for one, is not in force. The default does
    /// nothing.
    fn journaled(&self, run_id: &RunId, events: &[RunEvent]) {
        let _ = (run_id, events);
    }

    /// True (the default) when a write may block the calling thread (disk, network,
    /// a lock held by others). The executor then writes from a thread of its own that
    /// takes the writes of all its runs ([`RunJournal::record_groups`]); a run's task
    /// waits for its write without holding a runtime worker, so a slow write stalls
    /// only the runs that wait for it and no thread is started per waiting run.
    /// Journals that only touch memory return `false` and are written inline.
    fn blocks(&self) -> bool {
        true
    }
}

/// What all runs sharing it have spent today, and reserved for calls in flight, for
/// the daily budget (`budget.per_day`). Clones share one total: give every run of a
/// day the same `DaySpend` (through [`crate::RunOptions::day`]) so concurrent runs
/// cannot each spend the whole daily budget: every agent call reserves its estimated
/// cost on it before it is made. Starting a new total at midnight is the owner's job.
#[derive(Debug, Clone, Default)]
pub struct DaySpend(DayTotal);

impl DaySpend {
    /// A day total starting at `spent` (what was spent today before, e.g. by runs
    /// journaled before a restart).
    pub fn new(spent: Usd) -> Self {
        DaySpend(DayTotal::new(spent))
    }

    /// Spent so far (settled calls).
    pub fn spent(&self) -> Usd {
        self.0.spent()
    }

    /// Reserved by agent calls in flight, not yet settled.
    pub fn reserved(&self) -> Usd {
        self.0.reserved()
    }

    /// The shared total, for the run's cost ledger.
    pub(crate) fn shared(&self) -> DayTotal {
        self.0.clone()
    }
}

/// A journal that keeps nothing (library use without durability).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoJournal;

impl RunJournal for NoJournal {
    fn record(
        &self,
        _: &RunId,
        _: &RunEvent,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }

    fn blocks(&self) -> bool {
        false
    }
}
