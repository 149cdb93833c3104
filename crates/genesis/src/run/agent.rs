//! The `Agent` trait: what the executor calls to get a task done.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use genesis_core::{AgentId, ModelId, RunId, Task, TaskId, Usd};
use genesis_resilience::Retry;
use serde::{Deserialize, Serialize};

/// The result of a task a child depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInput {
    /// The task that produced it.
    pub task_id: TaskId,
    /// Its output as passed on: the agent's text as written, or, when the injection
    /// screen flagged it under the `sanitize` policy, its quarantine
    /// ([`genesis_security::quarantine`]: a note naming the rule, then the text in the
    /// untrusted-content envelope).
    pub output: String,
    /// The rule the screen flagged the output for, when `output` is its quarantine
    /// (absent otherwise): the text is then already in its envelope, and must not be
    /// fenced again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<String>,
}

/// Everything an agent gets for one attempt at one task.
#[derive(Debug, Clone)]
pub struct AgentRequest {
    /// The run.
    pub run_id: RunId,
    /// Who asked (the subject the run's feature flags are evaluated for).
    pub subject: Arc<str>,
    /// The user's request, for context.
    pub request: Arc<str>,
    /// The task.
    pub task: Task,
    /// The agent the executor is calling (it may be a re-routed alternative).
    pub agent: AgentId,
    /// The model DAAO chose, for agents that call an LLM.
    pub model: Option<ModelId>,
    /// Outputs of the tasks this one waits for.
    pub inputs: Vec<TaskInput>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The previous round's answer when the agent refines (TUMIX), else `None`: as
    /// written, or its quarantine when the screen flagged it (see
    /// [`AgentRequest::previous_quarantined`]).
    pub previous: Option<String>,
    /// The rule the screen flagged the previous answer for, when `previous` is its
    /// quarantine (as [`TaskInput::quarantined`]); `None` otherwise.
    pub previous_quarantined: Option<String>,
    /// The most this attempt may cost: the money set aside for it under the run's and
    /// the day's budgets, when the agent bounded its cost ([`Agent::cost_bounds`]) and
    /// a budget is in force. An agent that can, stays within it (an LLM agent lowers
    /// the call's output token limit); `None`: no limit.
    ///
    /// It leaves room for the run's other tasks: with a run budget, a call is set aside
    /// at most a fair share of what is left of it — what is neither spent nor reserved,
    /// times this task's planned cost estimate over the estimates of the tasks not yet
    /// started plus its own (an equal split when the plan has no estimates) — and never
    /// less than its floor. So the first of three equal tasks gets a third of the
    /// budget, not all of it (audit U6-4), a task planned on a dearer model gets more,
    /// and the last task left may use everything that remains. The
    /// day's budget is shared by runs and not divided. An answer that reports no token
    /// usage is charged this amount in full.
    pub max_cost: Option<Usd>,
}

impl AgentRequest {
    /// A first attempt at `task` on `agent` in run `run_id`, with no inputs, model,
    /// previous answer or cost limit, the task's description as the request and
    /// `anonymous` as the subject: a starting point for calling an [`Agent`] directly
    /// (a unit test of your own agent, say). Set the public fields for the rest.
    ///
    /// ```
    /// use genesis::core::{RunId, Task, TaskId, TaskKind};
    /// use genesis::run::AgentRequest;
    ///
    /// let task = Task::new(TaskId::new("t1"), TaskKind::Generic, "Summarise the report");
    /// let mut request = AgentRequest::new(RunId::new("run_1"), task, "writer");
    /// request.attempt = 2;
    /// assert_eq!(&*request.request, "Summarise the report");
    /// ```
    pub fn new(run_id: RunId, task: Task, agent: impl Into<AgentId>) -> Self {
        AgentRequest {
            run_id,
            subject: Arc::from("anonymous"),
            request: Arc::from(task.description.as_str()),
            task,
            agent: agent.into(),
            model: None,
            inputs: Vec::new(),
            attempt: 1,
            previous: None,
            previous_quarantined: None,
            max_cost: None,
        }
    }
}

/// What one attempt at a task can cost, as an agent bounds it before the call
/// ([`Agent::cost_bounds`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostBounds {
    /// The least worth calling with: a useful answer cannot be had for less (for an
    /// LLM agent, its prompt at the most tokens it can be, plus a few output tokens).
    pub floor: Usd,
    /// The most the attempt can cost if nothing limits it (for an LLM agent, the
    /// prompt plus the full output token limit).
    pub ceiling: Usd,
}

/// A successful attempt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentOutput {
    /// The result. With the follow-ups' descriptions, held to
    /// [`ExecutorConfig::max_output_bytes`](super::ExecutorConfig::max_output_bytes)
    /// (default 1 MiB): a larger answer fails the attempt.
    pub text: String,
    /// What the attempt cost.
    pub cost: Usd,
    /// LLM input tokens used, if any: summed into the task's
    /// [`TaskReport::input_tokens`](super::TaskReport::input_tokens) and the run's total.
    #[serde(default)]
    pub input_tokens: u64,
    /// LLM output tokens used, if any (as `input_tokens`).
    #[serde(default)]
    pub output_tokens: u64,
    /// The model that produced the answer, when the agent says so after the call (an
    /// HTTP or command agent's `model`): shown as the task's `model` on its
    /// `task_succeeded` event and report in place of [`Agent::model`]'s. `None`: the
    /// model [`Agent::model`] named before the call, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelId>,
    /// Follow-up tasks the agent proposes (dynamic replanning); they become dependents
    /// of this task, subject to the DAG's update limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followups: Vec<FollowUp>,
    /// True when the answer was cut at its token limit (an LLM agent: finish reason
    /// `length` / `max_tokens`), so the text is incomplete. Shown as `truncated` on the
    /// task's `task_succeeded` event and report.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// A follow-up task proposed by an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowUp {
    /// Task kind (snake_case name).
    pub kind: genesis_core::TaskKind,
    /// What to do.
    pub description: String,
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A transient failure (429, 5xx, connection reset): worth retrying.
    #[error("agent {agent} failed transiently: {message}")]
    Transient {
        /// The agent.
        agent: AgentId,
        /// What happened.
        message: String,
        /// The service's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The agent, or the upstream it shares, refused the call for now without doing the
    /// work: an HTTP agent answered 429, or an LLM agent's provider rate-limited it
    /// (429) or the provider's circuit breaker is open. Retried like
    /// [`AgentError::Transient`] (after `retry_after` when given, plus a small jitter),
    /// but not counted on the agent's circuit breaker: a throttled agent is busy, not
    /// broken (audit R8 H2: four 429s and one more failure opened an HTTP agent's
    /// breaker), and a provider's own breaker counts the provider's failures. Costs
    /// nothing.
    #[error("agent {agent} was throttled: {message}")]
    Throttled {
        /// The agent.
        agent: AgentId,
        /// What happened.
        message: String,
        /// When the provider said to come back, if it did.
        retry_after: Option<Duration>,
    },
    /// The attempt took longer than its timeout.
    #[error("agent {agent} timed out after {}", super::executor::short(*after))]
    Timeout {
        /// The agent.
        agent: AgentId,
        /// The timeout.
        after: Duration,
    },
    /// The request was sent, so the service may have done — and billed — the work, but
    /// no usable answer came back: the connection broke after the request went out,
    /// the answer broke off, or it came back (2xx) unusable (larger than allowed,
    /// malformed). A call held to a cost limit ([`AgentRequest::max_cost`]) is charged
    /// that limit, as for a timeout. Retried at once when `retryable` (an answer that
    /// was lost), not when it came back unusable (it would again).
    #[error("agent {agent} sent no usable answer: {message}")]
    Unanswered {
        /// The agent.
        agent: AgentId,
        /// What happened.
        message: String,
        /// Whether another attempt on the same agent may help.
        retryable: bool,
    },
    /// The agent refused the task (a 4xx, invalid input): retrying the same agent will
    /// not help, another agent might.
    #[error("agent {agent} rejected the task: {message}")]
    Rejected {
        /// The agent.
        agent: AgentId,
        /// Why.
        message: String,
    },
    /// No backend is configured for the agent.
    #[error("no backend is configured for agent {agent}")]
    NoBackend {
        /// The agent.
        agent: AgentId,
    },
    /// The agent's output was screened out as an injection.
    #[error("output of agent {agent} was blocked by the injection screen (rule: {rule})")]
    Blocked {
        /// The agent.
        agent: AgentId,
        /// The rule that fired.
        rule: String,
    },
    /// The agent answered with more than the executor accepts
    /// ([`ExecutorConfig::max_output_bytes`](super::ExecutorConfig::max_output_bytes)):
    /// the output is dropped unread and the attempt charged what the agent reported.
    /// Not retried on the same agent (it would answer as much again); the task moves
    /// on to its alternatives. Does not count on the agent's circuit breaker.
    #[error("output of agent {agent} is {bytes} bytes, over max_output_bytes {max}")]
    OutputTooLarge {
        /// The agent.
        agent: AgentId,
        /// The output's size: its text plus its follow-ups' descriptions.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The agent answered, and the answer may have been paid for, but there is nothing
    /// in it to use: an answer that is empty after trimming (rule `empty_answer`: an LLM
    /// agent's, or an HTTP or command agent's `output` or text body) or an LLM agent's
    /// refusal (rule `refused`, with the refusal's text). Charged
    /// what the agent reported (`cost`), its tokens counted; like a rejection, not
    /// retried on the same agent (it would answer the same), and the task moves on to
    /// its alternatives. Does not count on the agent's circuit breaker.
    #[error("agent {agent} gave no usable answer: {message} (rule: {rule})")]
    Unusable {
        /// The agent.
        agent: AgentId,
        /// The rule: `empty_answer` or `refused`.
        rule: String,
        /// What came back (the refusal's text, the finish reason).
        message: String,
        /// What the call cost.
        cost: Usd,
        /// Input tokens the call reported.
        input_tokens: u64,
        /// Output tokens the call reported.
        output_tokens: u64,
    },
    /// The agent's call panicked (a bug in the agent). Not retried on the same agent;
    /// the task moves on to its alternatives, and the call counts as a failure on the
    /// agent's circuit breaker.
    #[error("agent {agent} panicked: {message}")]
    Panicked {
        /// The agent.
        agent: AgentId,
        /// The panic's message (`"<no message>"` when it carried none).
        message: String,
    },
}

impl AgentError {
    /// Retry classification for the resilience layer.
    pub fn retry(&self) -> Retry {
        match self {
            AgentError::Transient { retry_after, .. }
            | AgentError::Throttled { retry_after, .. } => Retry::Yes {
                after: *retry_after,
            },
            AgentError::Timeout { .. }
            | AgentError::Unanswered {
                retryable: true, ..
            } => Retry::NOW,
            _ => Retry::No,
        }
    }

    /// True when the attempt may have cost money although it failed: the request
    /// reached the service (or may have) and its answer was lost to a timeout or a
    /// broken connection, or came back unusable. A call held to a cost limit is then
    /// charged that limit; any other failure (nothing sent, or the service answered
    /// that it did not do the work: a non-2xx status) gives its money back.
    pub fn may_have_cost(&self) -> bool {
        matches!(
            self,
            AgentError::Timeout { .. } | AgentError::Unanswered { .. }
        )
    }

    /// True when the failure counts against the agent's circuit breaker: the
    /// transient failures that are retried, except a throttled provider
    /// ([`AgentError::Throttled`]), and panics (an agent that always panics must trip its
    /// breaker, though retrying it is pointless).
    pub fn trips_breaker(&self) -> bool {
        match self {
            AgentError::Panicked { .. } => true,
            AgentError::Throttled { .. } => false,
            _ => matches!(self.retry(), Retry::Yes { .. }),
        }
    }
}

/// Something that can carry out tasks: an LLM with a role prompt, an HTTP service, a
/// local command, or your own type.
#[async_trait]
pub trait Agent: Send + Sync {
    /// Carries out one attempt at a task.
    ///
    /// # Errors
    /// [`AgentError`]; classify transient failures as `Transient` or `Timeout` so the
    /// executor retries them. A call that panics is taken as
    /// [`AgentError::Panicked`]: not retried, counted on the agent's breaker.
    async fn execute(&self, request: AgentRequest) -> Result<AgentOutput, AgentError>;

    /// What an attempt at `request` can cost, when the agent can bound it before the
    /// call. The executor then sets aside up to [`CostBounds::ceiling`] (at least the
    /// floor) of the budgets and passes what it set aside as
    /// [`AgentRequest::max_cost`], which the agent must not exceed: a budget then
    /// holds even when a call costs more than planned. `None` (the default): the
    /// planned estimate is set aside, and a call that costs more is still charged in
    /// full.
    fn cost_bounds(&self, request: &AgentRequest) -> Option<CostBounds> {
        let _ = request;
        None
    }

    /// The model an attempt at `request` calls, when the agent calls one (an LLM agent:
    /// the model DAAO planned the task on): shown as `model` on the attempt's
    /// `task_started` event and on the task's log lines. `None` (the default): the
    /// agent calls no model, or does not say.
    fn model(&self, request: &AgentRequest) -> Option<ModelId> {
        let _ = request;
        None
    }

    /// The upstream service an attempt at `request` calls that other agents may share,
    /// when it calls one (an LLM agent: `llm:<provider>`, the key of its provider's
    /// breaker). Agents on the same upstream and [`Agent::model`] are throttled
    /// together: once an agent gave up on an [`AgentError::Throttled`], the executor
    /// re-routes the task to alternatives on other upstreams first, and calls an
    /// alternative on the same upstream and model only once the `Retry-After` it was
    /// given has passed — waiting for it when the wait fits the backoff cap
    /// (`executor.retry.cap`) and the run's deadline, else not calling it (the task
    /// fails with rule `provider_throttled` when nothing else is left). `None` (the
    /// default): the agent shares none, or does not say.
    fn upstream(&self, request: &AgentRequest) -> Option<String> {
        let _ = request;
        None
    }
}

/// Agents by id, plus an optional fallback used for every agent without its own backend.
#[derive(Clone, Default)]
pub struct AgentSet {
    agents: HashMap<AgentId, Arc<dyn Agent>>,
    fallback: Option<Arc<dyn Agent>>,
}

impl std::fmt::Debug for AgentSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&str> = self.agents.keys().map(AgentId::as_str).collect();
        ids.sort_unstable();
        f.debug_struct("AgentSet")
            .field("agents", &ids)
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl AgentSet {
    /// An empty set.
    pub fn new() -> Self {
        AgentSet::default()
    }

    /// Registers the backend for one agent id.
    #[must_use]
    pub fn with(mut self, id: impl Into<AgentId>, agent: Arc<dyn Agent>) -> Self {
        self.agents.insert(id.into(), agent);
        self
    }

    /// Registers a backend used for every agent without its own.
    #[must_use]
    pub fn with_fallback(mut self, agent: Arc<dyn Agent>) -> Self {
        self.fallback = Some(agent);
        self
    }

    /// The backend for `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<dyn Agent>> {
        self.agents.get(id).or(self.fallback.as_ref())
    }

    /// True when some backend serves `id`.
    pub fn serves(&self, id: &str) -> bool {
        self.get(id).is_some()
    }
}
