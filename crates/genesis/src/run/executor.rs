//! The DAG executor.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::FutureExt;
use genesis_core::{AgentId, ModelId, RunId, Task, TaskId, Usd};
use genesis_daao::{
    BudgetExceeded, BudgetScope, ConvergenceStop, CostLedger, RefinementRound, Reservation,
    StopDecision, StopPolicy,
};
use genesis_htdag::{DagUpdate, TaskDag, TaskNode};
use genesis_resilience::{
    Backoff, BackoffConfig, BreakerConfig, BreakerRegistry, BreakerState, GiveUp, ResilienceError,
    Retry, SharedBreaker,
};
use genesis_security::{Action, Checkpoint, Guard, Policy};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, broadcast};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info_span, warn};

use super::writer::JournalWriter;
use super::{
    AgentError, AgentOutput, AgentRequest, AgentSet, CostBounds, RunEvent, RunInterrupted,
    RunJournal, RunResult, RunStatus, TaskInput, TaskReport, TaskStatus,
};
use crate::{Plan, PlannedTask};

/// Executor settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorConfig {
    /// Tasks in flight per run (default 100).
    pub max_concurrency: usize,
    /// Agent calls in flight across all runs of this executor (default 100): the
    /// server-wide limit on concurrent tasks.
    pub max_tasks_in_flight: usize,
    /// Longest one attempt may take (default 120 s; an agent's own timeout may be
    /// shorter). A timed-out attempt is retried at most once on the same agent before
    /// the task moves on to its next alternative.
    #[serde(with = "humantime_serde")]
    pub task_timeout: Duration,
    /// Retries per agent before re-routing. A `Retry-After` within the cap is waited
    /// plus a jitter drawn from `[0, min(base, Retry-After / 10)]` (never over the
    /// cap), so clients told the same time do not all come back at once.
    pub retry: BackoffConfig,
    /// Per-agent circuit breakers.
    pub breaker: BreakerConfig,
    /// Agents that refine their answers, and when to stop.
    pub refine: RefineConfig,
    /// Screen agent outputs for indirect injection before passing them on (default on).
    /// A flagged output is never rewritten: the task's output, its `task_succeeded`
    /// event and the run's answer are the agent's text as written, marked with the rule
    /// that flagged it (`flagged` on the event and the [`TaskReport`]). What is passed
    /// on to other agents — dependents' [`TaskInput`]s and the previous answer of a
    /// refinement round — is quarantined ([`genesis_security::quarantine`]) under
    /// `security.policies.agent_output = "sanitize"` (the default), passed as written
    /// under `"audit"`; under `"block"` a flagged output fails the attempt
    /// ([`AgentError::Blocked`]) and the task moves on to its alternatives.
    pub screen_outputs: bool,
    /// Event channel capacity per run (default 1,024): a subscriber that falls this
    /// far behind misses events (`RecvError::Lagged`); the server's event streams read
    /// the journal and only use the channel as a wake-up, so they miss nothing. The
    /// channel's slots are allocated when the run starts (about 100 bytes each), so
    /// this is per-run memory: 4,096 took 38 MB of 73 MB with 100 runs in flight.
    pub event_buffer: usize,
    /// When every candidate agent's breaker is open, how many times a task waits half
    /// a cool-down for a probe before it fails (default 4).
    pub max_breaker_waits: u32,
    /// Largest output accepted from one agent call, in bytes (default 1 MiB; 0: no
    /// limit): the output's text plus the descriptions of the follow-ups it proposes,
    /// checked before the output is screened, stored or passed on. An attempt over it
    /// fails with [`AgentError::OutputTooLarge`] and is charged what the agent
    /// reported; like a rejection, it is not retried on the same agent (it would
    /// answer as much again) and the task moves on to its alternatives. A refinement
    /// round over it ends refinement with the best answer so far. Applies to every
    /// agent, your own included; [`CommandAgentConfig::max_output_bytes`] also bounds
    /// what a command agent reads.
    ///
    /// [`CommandAgentConfig::max_output_bytes`]: super::backends::CommandAgentConfig::max_output_bytes
    pub max_output_bytes: usize,
    /// Longest a run may take in this process, from its start (or its resumption
    /// after a restart) to its end (default 1 h; `0s`: no limit). When it passes, the
    /// attempts in flight are dropped (charged as for a cancelled run), the tasks not
    /// finished fail and their dependents are skipped, each naming the rule
    /// `run_timeout`, and the run ends `failed`. Without it, a task's own limits
    /// (`task_timeout` per attempt, retries, alternatives, breaker waits) bound a run
    /// only through the product of all of them.
    #[serde(with = "humantime_serde")]
    pub run_timeout: Duration,
    /// Longest one task may work on its agents over all its attempts, retries, backoff
    /// waits, breaker waits and candidate agents (default 10 min; `0s`: no limit). Its
    /// clock runs from the task's start but stops while the task waits for a call
    /// slot — a server-wide one (`max_tasks_in_flight`) or one of a busy agent's
    /// (`max_concurrent_tasks`): queueing behind other work is not the task's work
    /// (audit P9 F1: under a backlog, acknowledged runs failed on it having never
    /// called an agent). Those waits are bounded by `run_timeout` (and a server's
    /// admission cap bounds the backlog); the task's `queued_ms` and the
    /// `genesis_task_queue_seconds` histogram tell them. Each call is cut at what is
    /// left of it (as well as at `task_timeout`); when it passes, the task fails
    /// naming the rule `task_deadline` and this value, with each agent's failure so
    /// far, and its dependents are skipped. A retry whose backoff would end past it is
    /// not made: the task moves on to its next alternative. Without it, a hung agent
    /// cost a task its `(max_retries + 1) x timeout` on every candidate (audit R8:
    /// 4 x 60 s per agent; 24 min over 6 candidates).
    #[serde(with = "humantime_serde")]
    pub task_deadline: Duration,
}

/// The default [`ExecutorConfig::max_output_bytes`]: 1 MiB, as for command agents.
/// Screening dominates the cost of a large answer (debug build: a 9-task run of 1 MB
/// answers took 2.1 s screened, 28 ms not; of 50 MB answers, 115 s and 1.5 GB).
const DEFAULT_MAX_OUTPUT_BYTES: usize = 1 << 20;

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            max_concurrency: 100,
            max_tasks_in_flight: 100,
            task_timeout: Duration::from_secs(120),
            retry: BackoffConfig::default(),
            breaker: BreakerConfig::default(),
            refine: RefineConfig::default(),
            screen_outputs: true,
            event_buffer: 1024,
            max_breaker_waits: 4,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            run_timeout: Duration::from_secs(3600),
            task_deadline: Duration::from_secs(600),
        }
    }
}

/// How refining agents refine in one run: set per run from the `tumix_early_stopping`
/// feature flag and the degradation level (see [`crate::Stages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refinement {
    /// Rounds until the stop policy says stop (TUMIX early stopping).
    #[default]
    EarlyStop,
    /// Rounds until `max_rounds` of [`RefineConfig::stop`]: early stopping off.
    AllRounds,
    /// No refinement rounds (the `minimal` degradation level).
    Off,
}

/// TUMIX refinement: which agents refine, and the stop policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefineConfig {
    /// Agents whose answers are refined over rounds.
    pub agents: Vec<AgentId>,
    /// When to stop refining.
    pub stop: ConvergenceStop,
}

/// Scores a refinement round in `[0, 1]`.
pub trait Judge: Send + Sync {
    /// The score of `answer` for `task`, given the previous round's answer.
    fn score(&self, task: &Task, answer: &str, previous: Option<&str>) -> f64;
}

/// The deterministic default judge: agreement between consecutive answers (token-set
/// similarity). Answers that stop changing have converged — TUMIX's signal that more
/// rounds will not help.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgreementJudge;

impl Judge for AgreementJudge {
    fn score(&self, _task: &Task, answer: &str, previous: Option<&str>) -> f64 {
        let Some(prev) = previous else {
            return 0.0;
        };
        let a = tokens(answer);
        let b = tokens(prev);
        if a.is_empty() && b.is_empty() {
            return 1.0;
        }
        let inter = a.iter().filter(|t| b.contains(*t)).count() as f64;
        let union = (a.len() + b.len()) as f64 - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

fn tokens(s: &str) -> std::collections::HashSet<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn fingerprint(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for w in s.split_whitespace() {
        w.to_lowercase().hash(&mut h);
    }
    h.finish()
}

/// The id of the `k`-th task (from 1) of the run's `update`-th follow-up update (from
/// 1), proposed by `after`: `{after}.f{update}_{k}`. [`updates_in`] reads it back.
fn followup_id(after: &TaskId, update: usize, k: usize) -> TaskId {
    TaskId::new(format!("{after}.f{update}_{k}"))
}

/// Follow-up updates a (stored) plan already holds: its distinct `(proposer, update)`
/// pairs among tasks that wait only for their proposer and carry a [`followup_id`].
/// A resumed run's DAG is rebuilt from the plan and starts counting at zero; this is
/// what it had applied before the restart.
fn updates_in(plan: &Plan) -> usize {
    let mut updates = std::collections::HashSet::new();
    for t in &plan.tasks {
        let [after] = t.depends_on.as_slice() else {
            continue;
        };
        let Some((update, k)) =
            t.id.as_str()
                .strip_prefix(after.as_str())
                .and_then(|rest| rest.strip_prefix(".f"))
                .and_then(|rest| rest.split_once('_'))
        else {
            continue;
        };
        if let (Ok(update), Ok(_)) = (update.parse::<usize>(), k.parse::<usize>()) {
            updates.insert((after.as_str(), update));
        }
    }
    updates.len()
}

/// The rule a run names when it stops because its journal refused a write.
const JOURNAL_UNAVAILABLE: &str = "journal_unavailable";

/// How long a failed journal write waits before each retry: two retries, at most
/// half a second in all, then the run stops. Every error is retried alike: a store
/// briefly unable to write (a disk a cleanup is freeing, an I/O hiccup) gets that
/// long, on top of the up to 5 s the SQLite store waits for a lock in each write.
const JOURNAL_RETRY_DELAYS: [Duration; 2] =
    [Duration::from_millis(100), Duration::from_millis(400)];

/// Shared by a run's scheduler and its attempts: set once a journal write failed for
/// good, and the run stops.
#[derive(Default)]
struct Halt {
    /// Cancelled when the run stops: the scheduler aborts the attempts in flight.
    token: CancellationToken,
    /// Why (the first failure only).
    cause: OnceLock<String>,
}

/// Where one run's events go: its journal, then its subscribers. The run's scheduler
/// and each of its task attempts hold a clone.
#[derive(Clone)]
struct EventSink {
    exec: Arc<ExecInner>,
    journal: Arc<dyn RunJournal>,
    run_id: RunId,
    sender: broadcast::Sender<RunEvent>,
    halt: Arc<Halt>,
}

impl EventSink {
    /// As [`EventSink::emit_all`] for one event.
    async fn emit(&self, event: RunEvent) -> bool {
        self.emit_all(vec![event]).await
    }

    /// True once a journal write failed for good: the run stops.
    fn halted(&self) -> bool {
        self.halt.token.is_cancelled()
    }

    /// Journals `events` all or none (see [`RunJournal::record_all`]; through the
    /// executor's journal thread when the journal blocks), then broadcasts them in
    /// order: journal before release. Returns whether they were journaled.
    ///
    /// A failed write is retried after each of [`JOURNAL_RETRY_DELAYS`]; when it still
    /// fails, the run stops (rule `journal_unavailable`, logged once per run at
    /// `error`): its scheduler starts no task and aborts the attempts in flight, and
    /// the events are not broadcast. Once stopped, nothing more is journaled or
    /// broadcast. The journal keeps what it had, so the run resumes after a restart
    /// and does again only what was not journaled; work done unjournaled is at most
    /// what was in flight when the write failed.
    async fn emit_all(&self, events: Vec<RunEvent>) -> bool {
        let (exec, journal, run_id) = (&self.exec, &self.journal, &self.run_id);
        if self.halted() {
            return false;
        }
        let (events, journaled) = match exec.writer.write(journal, run_id, events).await {
            (events, Ok(())) => (events, Ok(())),
            // Boxed: the retries' timers would otherwise sit in every future that emits
            // (each task attempt's), which are moved when spawned; a third larger
            // attempt made a 100-task chain 35% slower.
            (events, Err(e)) => Box::pin(self.retry_write(events, e)).await,
        };
        match journaled {
            Ok(()) => {
                // A panic in the observer must not end the run (or kill the attempt
                // that emitted): logged, and the events are still broadcast.
                let observed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    journal.journaled(run_id, &events);
                }));
                if let Err(panic) = observed {
                    let kinds: Vec<&str> = events.iter().map(RunEvent::kind).collect();
                    error!(
                        run_id = %run_id,
                        error = %panic_message(panic.as_ref()),
                        events = ?kinds,
                        "the journal panicked in journaled()"
                    );
                }
                for event in events {
                    // No subscribers is fine.
                    let _ = self.sender.send(event);
                }
                true
            }
            Err(e) => {
                let kinds: Vec<&str> = events.iter().map(RunEvent::kind).collect();
                let cause = format!("the journal refused a write: {e}");
                if self.halt.cause.set(cause).is_ok() {
                    error!(
                        run_id = %run_id,
                        rule = JOURNAL_UNAVAILABLE,
                        error = %e,
                        events = ?kinds,
                        "cannot journal run events: stopping the run; it stays journaled as running and resumes at the next start"
                    );
                } else {
                    debug!(run_id = %run_id, error = %e, events = ?kinds, "cannot journal run events of a stopped run");
                }
                self.halt.token.cancel();
                false
            }
        }
    }
}

impl EventSink {
    /// Writes `events` again after each of [`JOURNAL_RETRY_DELAYS`] until a write
    /// succeeds, the run stops, or the delays run out (then `Err` with the last error).
    async fn retry_write(
        &self,
        mut events: Vec<RunEvent>,
        mut error: Box<dyn std::error::Error + Send + Sync>,
    ) -> (
        Vec<RunEvent>,
        Result<(), Box<dyn std::error::Error + Send + Sync>>,
    ) {
        let (exec, journal, run_id) = (&self.exec, &self.journal, &self.run_id);
        for delay in JOURNAL_RETRY_DELAYS {
            if self.halted() || events.is_empty() {
                break;
            }
            debug!(run_id = %run_id, error = %error, delay = ?delay, "cannot journal run events; retrying");
            tokio::time::sleep(delay).await;
            let (back, journaled) = exec.writer.write(journal, run_id, events).await;
            events = back;
            match journaled {
                Ok(()) => return (events, Ok(())),
                Err(e) => error = e,
            }
        }
        (events, Err(error))
    }
}

/// Follow-up routing: the orchestrator supplies this so agent-proposed tasks are routed
/// and priced like planned ones.
pub(crate) trait Replanner: Send + Sync {
    /// Plans follow-ups `nodes` (already in the DAG, after `after`), keeping their
    /// parent, depth and dependency on `after`.
    fn plan_tasks(&self, after: &TaskId, nodes: &[TaskNode]) -> Vec<PlannedTask>;
}

/// One agent's go at one task: every agent that was called counts, not only the one
/// that finally delivered (a task re-routed after its first agent kept failing teaches
/// a failure and a success).
#[derive(Debug, Clone)]
pub(crate) struct AgentTry {
    pub(crate) agent: AgentId,
    pub(crate) success: bool,
    /// From the agent's first call to its last answer, retries and backoff included.
    pub(crate) latency: Duration,
    pub(crate) cost: Usd,
}

/// Feedback: the orchestrator supplies this so finished runs teach the router which
/// agent did which task and how it went. Called once per run, before the run's
/// `run_finished` event; it must be quick (the orchestrator buffers and applies the
/// outcomes in batches).
pub(crate) trait Learner: Send + Sync {
    fn learn(&self, run_id: &RunId, tries: Vec<(Task, AgentTry)>);
}

/// Runs plans on agents. Cheap to clone; breakers are shared across runs so an agent
/// that fails in one run is avoided in the next.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<ExecInner>,
}

struct ExecInner {
    agents: AgentSet,
    config: ExecutorConfig,
    breakers: BreakerRegistry,
    backoff: Backoff,
    guard: Guard,
    judge: Arc<dyn Judge>,
    stop: Arc<dyn StopPolicy>,
    agent_limits: Mutex<HashMap<AgentId, Arc<Semaphore>>>,
    agent_caps: Mutex<HashMap<AgentId, usize>>,
    global: Arc<Semaphore>,
    /// Writes the runs' events to journals that block.
    writer: JournalWriter,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("agents", &self.inner.agents)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Completes at `deadline`, or never without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A running (or finished) run: its events, cancellation and final result.
///
/// # Dropping the handle does not stop the run
///
/// The run is a task of its own on the runtime, as with [`tokio::spawn`]: dropping the
/// handle, or a [`RunHandle::wait`] future before it completes, detaches the run, which
/// goes on to the end — calling, and paying, its agents — and journals as usual.
/// Accepted work is never lost that way (a server answers `202` and lets the run
/// outlive the request). To stop it, call [`RunHandle::cancel`] (or cancel the
/// [`RunHandle::cancellation`] token); to stop it when the code waiting for it goes
/// away — a request handler whose client disconnected — wait through
/// [`RunHandle::cancel_on_drop`] instead.
#[derive(Debug)]
pub struct RunHandle {
    run_id: RunId,
    events: broadcast::Sender<RunEvent>,
    first: Option<broadcast::Receiver<RunEvent>>,
    cancel: CancellationToken,
    join: tokio::task::JoinHandle<RunResult>,
    /// The run's money, for the result of a run whose task ended abnormally.
    ledger: CostLedger,
}

impl RunHandle {
    /// The run id.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// The event stream. The first call gets every event since the start; later calls
    /// get events from the moment of the call.
    pub fn events(&mut self) -> broadcast::Receiver<RunEvent> {
        self.first.take().unwrap_or_else(|| self.events.subscribe())
    }

    /// The run's event sender (to hand out subscriptions later).
    pub fn sender(&self) -> broadcast::Sender<RunEvent> {
        self.events.clone()
    }

    /// A new subscription to the run's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.events.subscribe()
    }

    /// Asks the run to stop: in-flight attempts are dropped, pending tasks cancelled.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// A token that cancels the run when cancelled (for servers that hold runs by id).
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits for the run to end. Dropping this future before it completes does not
    /// stop the run (see [`RunHandle`]; [`CancelOnDrop::wait`] does).
    pub async fn wait(mut self) -> RunResult {
        let joined = (&mut self.join).await;
        self.result(joined)
    }

    /// Turns the handle into a guard that cancels the run when it is dropped before
    /// the run ended: dropped itself, or its [`CancelOnDrop::wait`] future dropped
    /// mid-run (a request handler cancelled because its client went away). No agent
    /// call starts after that; calls in flight are dropped, unfinished tasks end
    /// cancelled and the run ends `cancelled`, journaled as for [`RunHandle::cancel`].
    #[must_use = "dropping the guard cancels the run at once"]
    pub fn cancel_on_drop(self) -> CancelOnDrop {
        CancelOnDrop {
            handle: self,
            armed: true,
        }
    }

    /// The run's result from its task's end. A task that ended abnormally (its
    /// runtime shut down, or a bug the run could not recover from) leaves no task
    /// reports; the result still carries the money spent, and `run_finished` is
    /// broadcast so subscribers do not wait for ever (with no token totals: they are
    /// summed over the task reports it lost).
    fn result(&self, joined: Result<RunResult, tokio::task::JoinError>) -> RunResult {
        match joined {
            Ok(r) => r,
            Err(e) => {
                error!(run_id = %self.run_id, error = %e, "executor task ended abnormally");
                // The task never reached `run_ended`: counted here.
                count_run_end(RUN_FAILED);
                let cost = self.ledger.spent();
                let _ = self.events.send(RunEvent::RunFinished {
                    status: RunStatus::Failed,
                    cost,
                    input_tokens: 0,
                    output_tokens: 0,
                });
                RunResult {
                    run_id: self.run_id.clone(),
                    status: RunStatus::Failed,
                    answer: String::new(),
                    tasks: Vec::new(),
                    cost,
                    input_tokens: 0,
                    output_tokens: 0,
                    planning: None,
                    interrupted: None,
                }
            }
        }
    }
}

/// The `status` label of a run that ended failed in `genesis_runs_total`.
const RUN_FAILED: &str = "failed";

/// Counts a run's end in `genesis_runs_total{status}`.
fn count_run_end(status: &'static str) {
    metrics::counter!(
        genesis_telemetry::catalogue::RUNS_TOTAL,
        genesis_telemetry::catalogue::labels::STATUS => status
    )
    .increment(1);
}

/// The end of a run, once, wherever it was started (server, CLI, embedding): counted
/// in `genesis_runs_total{status}` (`interrupted` when its journal refused a write),
/// and its `orchestrate` span gets the status, and the error status with why when it
/// failed or was interrupted, so failed runs are found by span status in the traces.
fn run_ended(span: &tracing::Span, result: &RunResult) {
    let status = if result.interrupted.is_some() {
        "interrupted"
    } else {
        result.status.as_str()
    };
    count_run_end(status);
    span.record("status", status);
    if let Some(stopped) = &result.interrupted {
        span.record(
            "otel.status_description",
            format!("run interrupted (rule: {})", stopped.rule).as_str(),
        );
    } else if result.status == RunStatus::Failed {
        let (failed, first) = result.failures();
        let why = match first {
            Some(t) => format!(
                "run failed: {failed} task(s) failed, first {}: {}",
                t.task_id,
                t.error.as_deref().unwrap_or("no reason recorded")
            ),
            None => "run failed".to_owned(),
        };
        span.record("otel.status_description", why.as_str());
    }
}

/// The end of a task on its `task` span: `outcome` (`succeeded`, `failed`), the agent
/// calls made (`attempts`), the agent that answered or failed last (`final_agent`), and
/// for a failure the error status with the reason.
fn task_ended(span: &tracing::Span, outcome: &Outcome) {
    match outcome {
        Outcome::Succeeded {
            agent, attempts, ..
        } => {
            span.record("outcome", "succeeded");
            // Integers as i64: tracing-opentelemetry exports unsigned values as text.
            span.record("attempts", i64::from(*attempts));
            span.record("final_agent", tracing::field::display(agent));
        }
        Outcome::Failed {
            agent,
            reason,
            attempts,
            ..
        } => {
            span.record("outcome", "failed");
            span.record("attempts", i64::from(*attempts));
            if let Some(agent) = agent {
                span.record("final_agent", tracing::field::display(agent));
            }
            span.record("otel.status_description", reason.as_str());
        }
    }
}

/// Records `outcome = "cancelled"` on a task span whose attempt was dropped before it
/// ended (the run was cancelled or past its deadline).
struct TaskSpanEnd(Option<tracing::Span>);

impl TaskSpanEnd {
    /// The attempt ended with `outcome`: recorded, and nothing more at drop.
    fn ended(&mut self, outcome: &Outcome) {
        if let Some(span) = self.0.take() {
            task_ended(&span, outcome);
        }
    }
}

impl Drop for TaskSpanEnd {
    fn drop(&mut self) {
        if let Some(span) = &self.0 {
            span.record("outcome", "cancelled");
        }
    }
}

/// A [`RunHandle`] that cancels its run when dropped before the run ended (see
/// [`RunHandle::cancel_on_drop`]). For code whose interest in the run ends with it:
/// the run's spending stops when the guard (or its [`CancelOnDrop::wait`] future) goes
/// away.
#[derive(Debug)]
pub struct CancelOnDrop {
    handle: RunHandle,
    /// False once the run's result was taken: nothing left to cancel.
    armed: bool,
}

impl CancelOnDrop {
    /// The run id.
    pub fn run_id(&self) -> &RunId {
        self.handle.run_id()
    }

    /// The event stream, as [`RunHandle::events`].
    pub fn events(&mut self) -> broadcast::Receiver<RunEvent> {
        self.handle.events()
    }

    /// The run's event sender, as [`RunHandle::sender`].
    pub fn sender(&self) -> broadcast::Sender<RunEvent> {
        self.handle.sender()
    }

    /// A new subscription to the run's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.handle.subscribe()
    }

    /// Asks the run to stop now.
    pub fn cancel(&self) {
        self.handle.cancel();
    }

    /// Waits for the run to end. Dropping this future before it completes cancels
    /// the run.
    pub async fn wait(mut self) -> RunResult {
        let joined = (&mut self.handle.join).await;
        self.armed = false;
        self.handle.result(joined)
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed && !self.handle.join.is_finished() {
            self.handle.cancel();
        }
    }
}

/// Per-run inputs the orchestrator prepares.
pub(crate) struct RunSpec {
    pub(crate) run_id: RunId,
    /// Who asked (passed to agents).
    pub(crate) subject: Arc<str>,
    /// How refining agents refine in this run.
    pub(crate) refinement: Refinement,
    pub(crate) plan: Plan,
    pub(crate) dag: TaskDag,
    pub(crate) ledger: CostLedger,
    pub(crate) journal: Arc<dyn RunJournal>,
    pub(crate) replanner: Arc<dyn Replanner>,
    /// Where the run's agent outcomes go when it ends (`None`: nowhere).
    pub(crate) learner: Option<Arc<dyn Learner>>,
    /// Tasks finished before a restart: they are not run again.
    pub(crate) resumed: Vec<TaskReport>,
    /// The correlation id of the request that started the run: a field of the run's
    /// `orchestrate` span (absent when `None`).
    pub(crate) correlation_id: Option<String>,
}

impl Executor {
    /// An executor over `agents`. Breaker state changes are exported as the
    /// `genesis_breaker_state` gauge and passed to `on_breaker_change`, if given.
    pub fn new(
        agents: AgentSet,
        config: ExecutorConfig,
        guard: Guard,
        on_breaker_change: Option<genesis_resilience::StateChangeHook>,
    ) -> Self {
        let hook: genesis_resilience::StateChangeHook = Arc::new(move |key, from, to| {
            let v = match to {
                genesis_resilience::BreakerState::Closed => 0.0,
                genesis_resilience::BreakerState::HalfOpen => 1.0,
                genesis_resilience::BreakerState::Open => 2.0,
            };
            metrics::gauge!(
                genesis_telemetry::catalogue::BREAKER_STATE,
                genesis_telemetry::catalogue::labels::KEY => key.to_owned()
            )
            .set(v);
            if let Some(user) = &on_breaker_change {
                user(key, from, to);
            }
        });
        let breakers = BreakerRegistry::new(config.breaker.clone()).with_hook(hook);
        let global = Arc::new(Semaphore::new(config.max_tasks_in_flight.max(1)));
        let backoff = Backoff::new(config.retry.clone());
        Executor {
            inner: Arc::new(ExecInner {
                agents,
                breakers,
                backoff,
                guard,
                judge: Arc::new(AgreementJudge),
                stop: Arc::new(config.refine.stop.clone()),
                config,
                agent_limits: Mutex::new(HashMap::new()),
                agent_caps: Mutex::new(HashMap::new()),
                global,
                writer: JournalWriter::default(),
            }),
        }
    }

    /// The shared per-agent breakers (for status pages and degradation).
    pub fn breakers(&self) -> &BreakerRegistry {
        &self.inner.breakers
    }

    /// Tasks currently running on `agent`, across runs.
    pub fn in_flight(&self, agent: &str) -> usize {
        let limits = self
            .inner
            .agent_limits
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        limits.get(agent).map_or(0, |sem| {
            let cap = self
                .inner
                .agent_caps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(agent)
                .copied()
                .unwrap_or(0);
            cap.saturating_sub(sem.available_permits())
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ExecutorConfig {
        &self.inner.config
    }

    /// Starts a run on the current tokio runtime.
    pub(crate) fn start(&self, spec: RunSpec, agent_caps: HashMap<AgentId, u32>) -> RunHandle {
        let (tx, rx) = broadcast::channel(self.inner.config.event_buffer.max(16));
        let cancel = CancellationToken::new();
        let run_id = spec.run_id.clone();
        {
            let mut limits = self
                .inner
                .agent_limits
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut caps = self
                .inner
                .agent_caps
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for (agent, cap) in agent_caps {
                let cap = cap.max(1) as usize;
                caps.entry(agent.clone()).or_insert(cap);
                limits
                    .entry(agent)
                    .or_insert_with(|| Arc::new(Semaphore::new(cap)));
            }
        }
        let span = info_span!(
            "orchestrate",
            run_id = %run_id,
            correlation_id = tracing::field::Empty,
            status = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty
        );
        if let Some(id) = &spec.correlation_id {
            span.record("correlation_id", id.as_str());
        }
        let ledger = spec.ledger.clone();
        let runner = Runner::new(Arc::clone(&self.inner), spec, tx.clone(), cancel.clone());
        let ended = span.clone();
        let join = tokio::spawn(
            async move {
                let result = runner.run().await;
                run_ended(&ended, &result);
                result
            }
            .instrument(span),
        );
        RunHandle {
            run_id,
            events: tx,
            first: Some(rx),
            cancel,
            join,
            ledger,
        }
    }
}

struct Slot {
    planned: PlannedTask,
    task: Task,
    status: TaskStatus,
    waiting: usize,
    report: TaskReport,
    /// Tokens its calls that answered reported so far, shared with its attempt while
    /// it runs: a task cancelled, timed out or whose attempt died keeps them.
    tokens: Arc<TokenMeter>,
}

impl Slot {
    /// Copies the tokens its calls reported so far, what it was charged, the calls it
    /// made and the model of the latest one onto its report, and returns the tokens
    /// (input, output): for a task that ends other than by succeeding.
    fn keep_tokens(&mut self) -> (u64, u64) {
        let (input, output) = self.tokens.get();
        self.report.input_tokens = input;
        self.report.output_tokens = output;
        self.report.cost = self.tokens.cost();
        self.report.attempts = self.report.attempts.max(self.tokens.calls());
        if self.tokens.calls() > 0 {
            self.report.model = self.tokens.model();
        }
        (input, output)
    }
}

/// What a spawned task attempt returns to the scheduler.
enum Outcome {
    Succeeded {
        agent: AgentId,
        /// The model of the call that answered.
        model: Option<ModelId>,
        /// The agent's answer as written.
        output: AgentOutput,
        /// The rule the injection screen flagged it for, if it did.
        flagged: Option<String>,
        attempts: u32,
        /// Time on its agents: from its first call's start to the answer, waits for a
        /// call slot excluded.
        duration: Duration,
        /// Time it waited for call slots (see [`Attempt::queue`]).
        queued: Duration,
        tries: Vec<AgentTry>,
    },
    Failed {
        agent: Option<AgentId>,
        reason: String,
        attempts: u32,
        cost: Usd,
        tries: Vec<AgentTry>,
        /// Set when a reservation was refused: the task failed on a budget.
        budget: Option<BudgetExceeded>,
    },
}

/// Tokens agents reported ([`AgentOutput::input_tokens`], `output_tokens`), summed
/// over a task's calls as they answer. The task's attempt adds to it and the scheduler
/// reads it when the task ends, however it ends: the attempt may be aborted (the run
/// cancelled or past its deadline) or die before it returns its outcome.
///
/// It also keeps what the run was charged for the task and how many agent calls it
/// made ([`Attempt::call`] counts them), for a task that ends other than by succeeding:
/// its report and its `task_failed`/`task_skipped` carry them (audit L6-7).
#[derive(Debug, Default)]
struct TokenMeter {
    input: AtomicU64,
    output: AtomicU64,
    /// Dollars charged, as `f64` bits.
    cost: AtomicU64,
    /// Agent calls made.
    calls: AtomicU32,
    /// The model of the latest call that started ([`super::Agent::model`]).
    model: Mutex<Option<ModelId>>,
}

impl TokenMeter {
    /// Adds what `output` reported (saturating).
    fn add(&self, output: &AgentOutput) {
        let add = |total: &AtomicU64, n: u64| {
            // The closure never returns `None`, so the update cannot fail.
            let _ = total.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(n))
            });
        };
        add(&self.input, output.input_tokens);
        add(&self.output, output.output_tokens);
    }

    /// Adds what a call that answered with nothing usable reported
    /// ([`AgentError::Unusable`]); other failures report none.
    fn add_unusable(&self, error: &AgentError) {
        if let AgentError::Unusable {
            input_tokens,
            output_tokens,
            ..
        } = error
        {
            self.add(&AgentOutput {
                input_tokens: *input_tokens,
                output_tokens: *output_tokens,
                ..AgentOutput::default()
            });
        }
    }

    /// Input and output tokens so far.
    fn get(&self) -> (u64, u64) {
        (
            self.input.load(Ordering::Relaxed),
            self.output.load(Ordering::Relaxed),
        )
    }

    /// Adds `amount` to what the task was charged.
    fn charge(&self, amount: Usd) {
        let _ = self
            .cost
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + amount.as_f64()).to_bits())
            });
    }

    /// What the task was charged so far.
    fn cost(&self) -> Usd {
        Usd::saturating(f64::from_bits(self.cost.load(Ordering::Relaxed)))
    }

    /// Counts one agent call.
    fn call(&self) {
        let _ = self
            .calls
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(1))
            });
    }

    /// Agent calls made so far.
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Records the model of a call about to start (`None`: its agent calls none).
    fn set_model(&self, model: Option<ModelId>) {
        *self.model.lock().unwrap_or_else(|p| p.into_inner()) = model;
    }

    /// The model of the latest call that started.
    fn model(&self) -> Option<ModelId> {
        self.model.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What one agent call is charged to its task's meter, mirroring [`CallMoney`]: what
/// an answer cost, the call's limit when it was held to one and may have been billed
/// without an answer, and that limit too when the call is dropped mid-way (the task
/// cancelled or past the run's deadline).
struct CallCharge {
    meter: Arc<TokenMeter>,
    held: Option<Usd>,
    open: bool,
}

impl CallCharge {
    fn done(mut self, result: &Result<AgentOutput, AgentError>) {
        self.open = false;
        match result {
            Ok(output) => self.meter.charge(output.cost),
            // It answered, with nothing usable: charged what it reported, as `CallMoney`.
            Err(AgentError::Unusable { cost, .. }) => self.meter.charge(*cost),
            Err(e) if e.may_have_cost() => {
                if let Some(held) = self.held {
                    self.meter.charge(held);
                }
            }
            Err(_) => {}
        }
    }
}

impl Drop for CallCharge {
    fn drop(&mut self) {
        if self.open
            && let Some(held) = self.held
        {
            self.meter.charge(held);
        }
    }
}

/// Longest a call waits for room in the budget before it tries again without being
/// woken ([`CostLedger::released`] wakes it when a call in flight settles): a bound on
/// the cost of a missed wake-up, never the normal path.
const BUDGET_WAIT_FALLBACK: Duration = Duration::from_secs(1);

/// The money set aside for one agent call while the call is under way. A bounded call
/// (its agent was held to what was set aside: [`AgentRequest::max_cost`]) that was sent
/// but brought no usable answer back — it timed out, its answer was lost or unusable
/// ([`AgentError::may_have_cost`]), or its task was cancelled and this was dropped
/// mid-call — may be billed up to that amount: it is charged that, and counted in
/// `genesis_cost_usd` as the provider layer counts a call that answered. Any
/// other call that fails gives the money back.
struct CallMoney {
    reservation: Option<Reservation>,
    bounded: bool,
}

impl CallMoney {
    fn new(reservation: Reservation, bounded: bool) -> Self {
        CallMoney {
            reservation: Some(reservation),
            bounded,
        }
    }

    /// The call answered and cost `actual`, which is charged even when a bounded call
    /// reports more than it was allowed (the money is gone; the breach is logged).
    fn settle(mut self, actual: Usd) {
        if let Some(r) = self.reservation.take() {
            // A thousandth of a cent of slack: float sums of token prices may land a
            // hair above what was set aside without the agent having broken its limit.
            if self.bounded && actual.as_f64() > r.amount().as_f64() + 1e-5 {
                tracing::warn!(
                    allowed = %r.amount(),
                    reported = %actual,
                    "an agent call cost more than its max_cost allowed; charged in full"
                );
            }
            r.settle(actual);
        }
    }

    /// The call failed with `error`; returns what it is charged (see [`CallMoney`]).
    /// A call that answered with nothing usable ([`AgentError::Unusable`]) is charged
    /// what it reported, as an answer is.
    fn failed(mut self, error: &AgentError) -> Usd {
        if let AgentError::Unusable { cost, .. } = error {
            self.settle(*cost);
            return *cost;
        }
        match self.reservation.take() {
            Some(r) if self.bounded && error.may_have_cost() => charge_in_full(r),
            // Dropped, the reservation is released.
            _ => Usd::ZERO,
        }
    }
}

impl Drop for CallMoney {
    fn drop(&mut self) {
        if let Some(r) = self.reservation.take()
            && self.bounded
        {
            charge_in_full(r);
        }
    }
}

/// Settles `reservation` at its whole amount, counted in `genesis_cost_usd`.
fn charge_in_full(reservation: Reservation) -> Usd {
    let charged = reservation.amount();
    reservation.settle(charged);
    metrics::gauge!(genesis_telemetry::catalogue::COST_USD).increment(charged.as_f64());
    charged
}

/// The text of a panic's payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<no message>".to_owned())
}

/// The `budget_exceeded` event of a call of `task_id` refused by `e`.
fn budget_event(task_id: &TaskId, e: &BudgetExceeded) -> RunEvent {
    RunEvent::BudgetExceeded {
        task_id: task_id.clone(),
        scope: e.scope,
        spent: e.spent,
        reserved: e.reserved,
        requested: e.requested,
        limit: e.limit,
    }
}

struct Runner {
    exec: Arc<ExecInner>,
    run_id: RunId,
    subject: Arc<str>,
    refinement: Refinement,
    request: Arc<str>,
    dag: TaskDag,
    slots: Vec<Slot>,
    index: HashMap<TaskId, usize>,
    /// The run's money: clones (one per task attempt) share its totals.
    ledger: CostLedger,
    /// The run's journal and subscribers.
    sink: EventSink,
    replanner: Arc<dyn Replanner>,
    learner: Option<Arc<dyn Learner>>,
    /// Every agent call's outcome so far, by slot.
    tries: Vec<(usize, AgentTry)>,
    cancel: CancellationToken,
    resumed: usize,
    /// What planning the run's plan spent (in the ledger's spent already).
    planning: Option<crate::PlanningSpend>,
    /// Tasks not started yet, for the fair share of the run budget a bounded call is
    /// set aside (see [`AgentRequest::max_cost`]); updated as the run goes.
    pending: Arc<Waiting>,
    /// When the run's deadline passes (`executor.run_timeout`), once it started.
    deadline: Option<Instant>,
    /// The budgets found overspent (see [`Attempt::overspent`]).
    overspent: Arc<AtomicU8>,
}

/// A run's tasks not started yet and the sum of their planned cost estimates, for the
/// fair share of a run budget (see [`Attempt::fair_ceiling`]). Relaxed atomics: a
/// share computed from a count one task behind is still a fair share.
#[derive(Default)]
struct Waiting {
    tasks: AtomicUsize,
    /// `f64` bits of the estimates' sum, in dollars.
    estimate: AtomicU64,
}

impl Waiting {
    fn set(&self, tasks: usize, estimate: f64) {
        self.tasks.store(tasks, Ordering::Relaxed);
        self.estimate.store(estimate.to_bits(), Ordering::Relaxed);
    }

    /// One task with `estimate` started.
    fn started(&self, estimate: f64) {
        let _ = self
            .tasks
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
        let _ = self
            .estimate
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) - estimate).max(0.0).to_bits())
            });
    }

    /// Tasks waiting, and their estimates' sum.
    fn get(&self) -> (usize, f64) {
        (
            self.tasks.load(Ordering::Relaxed),
            f64::from_bits(self.estimate.load(Ordering::Relaxed)),
        )
    }
}

/// The cost the plan estimated for a task (0 when it has no model choice).
fn planned_estimate(task: &PlannedTask) -> Usd {
    task.model.as_ref().map_or(Usd::ZERO, |m| m.estimated_cost)
}

impl Runner {
    fn new(
        exec: Arc<ExecInner>,
        spec: RunSpec,
        events: broadcast::Sender<RunEvent>,
        cancel: CancellationToken,
    ) -> Self {
        let done: HashMap<TaskId, TaskReport> = spec
            .resumed
            .into_iter()
            .filter(|r| {
                matches!(
                    r.status,
                    TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Skipped
                )
            })
            .map(|r| (r.task_id.clone(), r))
            .collect();
        let mut slots = Vec::with_capacity(spec.plan.tasks.len());
        let mut index = HashMap::with_capacity(spec.plan.tasks.len());
        let resumed = done.len();
        // A DAG rebuilt from a stored plan counts no updates; the plan's follow-ups are
        // the ones applied before the restart, held to `max_updates` with later ones.
        let updates = updates_in(&spec.plan);
        let planning = spec.plan.planning;
        for planned in spec.plan.tasks {
            let Some(task) = spec.dag.task(planned.id.as_str()).cloned() else {
                continue;
            };
            let report = done
                .get(&planned.id)
                .cloned()
                .unwrap_or_else(|| TaskReport {
                    task_id: planned.id.clone(),
                    status: TaskStatus::Pending,
                    agent: planned.agent.clone(),
                    model: None,
                    attempts: 0,
                    output: None,
                    flagged: None,
                    truncated: false,
                    error: None,
                    cost: Usd::ZERO,
                    input_tokens: 0,
                    output_tokens: 0,
                });
            index.insert(planned.id.clone(), slots.len());
            slots.push(Slot {
                status: report.status,
                planned,
                task,
                waiting: 0,
                report,
                tokens: Arc::default(),
            });
        }
        let sink = EventSink {
            exec: Arc::clone(&exec),
            journal: spec.journal,
            run_id: spec.run_id.clone(),
            sender: events,
            halt: Arc::default(),
        };
        let mut runner = Runner {
            exec,
            run_id: spec.run_id,
            subject: spec.subject,
            refinement: spec.refinement,
            request: Arc::from(spec.plan.request.as_str()),
            dag: {
                let mut dag = spec.dag;
                dag.restore_updates(updates);
                dag
            },
            slots,
            index,
            ledger: spec.ledger,
            sink,
            replanner: spec.replanner,
            learner: spec.learner,
            tries: Vec::new(),
            cancel,
            resumed,
            planning,
            pending: Arc::default(),
            deadline: None,
            overspent: Arc::default(),
        };
        runner.recount();
        runner
    }

    /// Recomputes how many unfinished prerequisites each pending task has.
    fn recount(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].status != TaskStatus::Pending {
                continue;
            }
            let id = self.slots[i].planned.id.clone();
            let waiting = self
                .dag
                .prerequisites(id.as_str())
                .iter()
                .filter(|p| {
                    self.index
                        .get(p.as_str())
                        .is_none_or(|&j| self.slots[j].status != TaskStatus::Succeeded)
                })
                .count();
            self.slots[i].waiting = waiting;
        }
    }

    async fn emit(&self, event: RunEvent) {
        self.sink.emit(event).await;
    }

    /// Journals `events` all or none, then broadcasts them (see [`EventSink::emit_all`];
    /// a write that fails stops the run, which [`Runner::drive`] sees).
    async fn emit_all(&self, events: Vec<RunEvent>) {
        self.sink.emit_all(events).await;
    }

    /// Runs the plan to its end. A panic in the run's own task (a bug: agents',
    /// journals' and attempts' panics are caught where they happen) does not lose the
    /// run: the tasks it left unfinished fail, naming the panic, and the result keeps
    /// every finished task's report and the money spent; `run_finished` is journaled
    /// and broadcast as usual.
    async fn run(mut self) -> RunResult {
        let driven = AssertUnwindSafe(self.drive()).catch_unwind().await;
        match driven {
            Ok(result) => result,
            // The attempts in flight were dropped with the future (their money is
            // given back or charged as for a cancelled run, see `CallMoney`); the
            // slots hold where every task was.
            Err(panic) => self.recover(&panic_message(panic.as_ref())).await,
        }
    }

    /// Ends a run whose task panicked with `message` (see [`Runner::run`]).
    async fn recover(&mut self, message: &str) -> RunResult {
        error!(run_id = %self.run_id, error = %message, "the run panicked; its unfinished tasks fail");
        let reason = format!("the run stopped: it panicked: {message}");
        let mut events = Vec::new();
        for slot in &mut self.slots {
            if slot.status.is_terminal() {
                continue;
            }
            slot.status = TaskStatus::Failed;
            slot.report.status = TaskStatus::Failed;
            slot.report.error = Some(reason.clone());
            let (input_tokens, output_tokens) = slot.keep_tokens();
            events.push(RunEvent::TaskFailed {
                task_id: slot.planned.id.clone(),
                reason: reason.clone(),
                attempts: slot.report.attempts,
                model: slot.report.model.clone(),
                input_tokens,
                output_tokens,
                cost: slot.report.cost,
            });
        }
        if !events.is_empty() {
            self.emit_all(events).await;
        }
        let status = if self.slots.iter().all(|s| s.status == TaskStatus::Succeeded) {
            RunStatus::Succeeded
        } else if self.cancel.is_cancelled() {
            RunStatus::Cancelled
        } else {
            RunStatus::Failed
        };
        // No learning: the panic may have come from there.
        self.finished(status).await
    }

    /// Journals and broadcasts `run_finished` with `status`, and returns the result.
    /// Its token totals are summed over every task's report, whatever the task's end.
    async fn finished(&self, status: RunStatus) -> RunResult {
        let cost = self.spent();
        let tasks: Vec<TaskReport> = self.slots.iter().map(|s| s.report.clone()).collect();
        // The run's planning counts with its tasks (its cost is in the ledger already).
        let planned = self
            .planning
            .map_or((0, 0), |p| (p.input_tokens, p.output_tokens));
        let input_tokens = tasks
            .iter()
            .fold(planned.0, |n, t| n.saturating_add(t.input_tokens));
        let output_tokens = tasks
            .iter()
            .fold(planned.1, |n, t| n.saturating_add(t.output_tokens));
        self.emit(RunEvent::RunFinished {
            status,
            cost,
            input_tokens,
            output_tokens,
        })
        .await;
        if self.sink.halted() {
            return self.interrupted();
        }
        RunResult {
            run_id: self.run_id.clone(),
            status,
            answer: self.answer(),
            tasks,
            cost,
            input_tokens,
            output_tokens,
            planning: self.planning,
            interrupted: None,
        }
    }

    /// The result of a run stopped because its journal refused a write (see
    /// [`EventSink::emit_all`]): status `running` (the journal still holds the run as
    /// running, and it resumes at the next start), the tasks as far as they got here
    /// (those whose attempts were aborted stay `running`), the money spent, and why.
    /// Subscribers get `run_interrupted` (not journaled: the journal is what failed).
    fn interrupted(&self) -> RunResult {
        let reason = self
            .sink
            .halt
            .cause
            .get()
            .cloned()
            .unwrap_or_else(|| "the journal refused a write".to_owned());
        let reason = format!("{reason} (rule: {JOURNAL_UNAVAILABLE})");
        let _ = self.sink.sender.send(RunEvent::RunInterrupted {
            rule: JOURNAL_UNAVAILABLE.to_owned(),
            reason: reason.clone(),
        });
        let tasks: Vec<TaskReport> = self
            .slots
            .iter()
            .map(|s| {
                let mut report = s.report.clone();
                if !s.status.is_terminal() {
                    report.status = s.status;
                    let (input, output) = s.tokens.get();
                    report.input_tokens = input;
                    report.output_tokens = output;
                }
                report
            })
            .collect();
        let input_tokens = tasks
            .iter()
            .fold(0u64, |n, t| n.saturating_add(t.input_tokens));
        let output_tokens = tasks
            .iter()
            .fold(0u64, |n, t| n.saturating_add(t.output_tokens));
        RunResult {
            run_id: self.run_id.clone(),
            status: RunStatus::Running,
            answer: self.answer(),
            tasks,
            cost: self.spent(),
            input_tokens,
            output_tokens,
            planning: self.planning,
            interrupted: Some(RunInterrupted {
                rule: JOURNAL_UNAVAILABLE.to_owned(),
                reason,
            }),
        }
    }

    async fn drive(&mut self) -> RunResult {
        let mut started = vec![RunEvent::RunStarted {
            tasks: self.slots.len(),
            resumed: self.resumed,
        }];
        // Resumed runs: tasks that finished before the restart are not run again, and
        // the dependents of those that failed are skipped, journaled with the start (a
        // journal written before failures and skips were one write may hold a failure
        // without them); everything else re-enters the ready set.
        let failed: Vec<TaskId> = self
            .slots
            .iter()
            .filter(|s| s.status == TaskStatus::Failed)
            .map(|s| s.planned.id.clone())
            .collect();
        for id in &failed {
            started.extend(self.skip_dependents(id));
        }
        self.emit_all(started).await;
        let mut ready: VecDeque<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].status == TaskStatus::Pending && self.slots[i].waiting == 0)
            .collect();
        let mut inflight: JoinSet<(usize, Outcome)> = JoinSet::new();
        // The slot each attempt in flight runs: an attempt that dies instead of
        // returning its outcome still fails its task.
        let mut running: HashMap<tokio::task::Id, usize> = HashMap::new();
        let max = self.exec.config.max_concurrency.max(1);
        let mut cancelled = false;
        let run_timeout = self.exec.config.run_timeout;
        let deadline = (!run_timeout.is_zero())
            .then(|| tokio::time::Instant::now().checked_add(run_timeout))
            .flatten();
        self.deadline = deadline;
        let mut timed_out = false;
        // Set when a journal write failed for good (see `EventSink::emit_all`): no task
        // starts, the attempts in flight are aborted, and nothing more is journaled.
        let halt = self.sink.halt.token.clone();
        let mut halted = false;
        // The tasks not started yet, for the fair share of a run budget (see
        // `Attempt::fair_ceiling`): recounted as tasks finish, skip or are added, and
        // only with a run budget (no share to divide without one).
        let shares_budget = self.ledger.remaining().is_some();
        loop {
            if shares_budget {
                let (tasks, estimate) = self
                    .slots
                    .iter()
                    .filter(|s| s.status == TaskStatus::Pending)
                    .fold((0usize, 0.0f64), |(n, sum), s| {
                        (n + 1, sum + planned_estimate(&s.planned).as_f64())
                    });
                self.pending.set(tasks, estimate);
            }
            if !halted && halt.is_cancelled() {
                halted = true;
                inflight.abort_all();
            }
            while inflight.len() < max && !cancelled && !timed_out && !halted {
                let Some(i) = ready.pop_front() else { break };
                if self.slots[i].status != TaskStatus::Pending {
                    continue;
                }
                self.slots[i].status = TaskStatus::Running;
                self.pending
                    .started(planned_estimate(&self.slots[i].planned).as_f64());
                let attempt = self.attempt_future(i);
                running.insert(inflight.spawn(attempt).id(), i);
            }
            if inflight.is_empty() {
                break;
            }
            let joined = tokio::select! {
                joined = inflight.join_next_with_id() => joined,
                () = halt.cancelled(), if !halted => {
                    halted = true;
                    inflight.abort_all();
                    continue;
                }
                () = self.cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                    inflight.abort_all();
                    continue;
                }
                () = until(deadline), if !timed_out && !cancelled => {
                    timed_out = true;
                    warn!(run_id = %self.run_id, run_timeout = ?run_timeout, "the run's deadline passed; ending it");
                    inflight.abort_all();
                    continue;
                }
            };
            match joined {
                Some(Ok((id, (i, outcome)))) => {
                    running.remove(&id);
                    self.finish(i, outcome, &mut ready).await;
                }
                Some(Err(e)) if e.is_cancelled() => {
                    running.remove(&e.id());
                }
                Some(Err(e)) => {
                    let id = e.id();
                    // Agent calls' panics are caught in the attempt (`Attempt::call`);
                    // this is anything else in it (a judge, a stop policy).
                    let reason = match e.try_into_panic() {
                        Ok(panic) => {
                            format!("its attempt panicked: {}", panic_message(panic.as_ref()))
                        }
                        Err(e) => format!("its attempt ended abnormally: {e}"),
                    };
                    let Some(i) = running.remove(&id) else {
                        error!(run_id = %self.run_id, reason = %reason, "an unknown task attempt died");
                        continue;
                    };
                    error!(
                        run_id = %self.run_id,
                        task_id = %self.slots[i].planned.id,
                        reason = %reason,
                        "a task attempt died"
                    );
                    let report = &self.slots[i].report;
                    let outcome = Outcome::Failed {
                        agent: report.agent.clone(),
                        reason,
                        attempts: report.attempts,
                        cost: Usd::ZERO,
                        tries: Vec::new(),
                        budget: None,
                    };
                    self.finish(i, outcome, &mut ready).await;
                }
                None => break,
            }
        }
        if halted {
            // The journal keeps the run as it was: it resumes at the next start.
            return self.interrupted();
        }
        let unfinished = if cancelled {
            self.cancel_unfinished()
        } else if timed_out {
            self.time_out_unfinished(run_timeout)
        } else {
            self.close_unfinished()
        };
        if !unfinished.is_empty() {
            self.emit_all(unfinished).await;
        }
        let status = if cancelled {
            RunStatus::Cancelled
        } else if self.slots.iter().all(|s| s.status == TaskStatus::Succeeded) {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
        self.learn();
        self.finished(status).await
    }

    /// Ends the tasks a cancelled run did not finish as cancelled; returns their
    /// `task_skipped` "run cancelled" events.
    fn cancel_unfinished(&mut self) -> Vec<RunEvent> {
        let mut events = Vec::new();
        for slot in &mut self.slots {
            if !slot.status.is_terminal() {
                slot.status = TaskStatus::Cancelled;
                slot.report.status = TaskStatus::Cancelled;
                slot.report.error = Some("run cancelled".into());
                let (input_tokens, output_tokens) = slot.keep_tokens();
                events.push(RunEvent::TaskSkipped {
                    task_id: slot.planned.id.clone(),
                    reason: "run cancelled".into(),
                    input_tokens,
                    output_tokens,
                    cost: slot.report.cost,
                    attempts: slot.report.attempts,
                });
            }
        }
        events
    }

    /// Ends the tasks a run whose deadline passed did not finish: those in flight fail,
    /// those not started are skipped, each naming the rule `run_timeout` and its value.
    fn time_out_unfinished(&mut self, run_timeout: Duration) -> Vec<RunEvent> {
        let reason = format!(
            "the run's deadline passed: executor.run_timeout is {run_timeout:?} (rule: run_timeout)"
        );
        let mut events = Vec::new();
        for slot in &mut self.slots {
            let event = match slot.status {
                TaskStatus::Running => {
                    slot.status = TaskStatus::Failed;
                    let (input_tokens, output_tokens) = slot.keep_tokens();
                    RunEvent::TaskFailed {
                        task_id: slot.planned.id.clone(),
                        reason: reason.clone(),
                        attempts: slot.report.attempts,
                        model: slot.report.model.clone(),
                        input_tokens,
                        output_tokens,
                        cost: slot.report.cost,
                    }
                }
                TaskStatus::Pending => {
                    slot.status = TaskStatus::Skipped;
                    RunEvent::TaskSkipped {
                        task_id: slot.planned.id.clone(),
                        reason: reason.clone(),
                        input_tokens: 0,
                        output_tokens: 0,
                        cost: Usd::ZERO,
                        attempts: 0,
                    }
                }
                _ => continue,
            };
            slot.report.status = slot.status;
            slot.report.error = Some(reason.clone());
            events.push(event);
        }
        events
    }

    /// Ends the tasks a run that was not cancelled left unfinished, and returns their
    /// events. This is a bug (every attempt reports to `finish`, and every failure
    /// skips its dependents), logged at `error`; the tasks still end with their real
    /// reason, never as cancelled: a task whose attempt never reported fails, and a
    /// task left waiting is skipped, naming a prerequisite that did not succeed.
    fn close_unfinished(&mut self) -> Vec<RunEvent> {
        let mut events = Vec::new();
        for slot in &mut self.slots {
            if slot.status != TaskStatus::Running {
                continue;
            }
            let reason = "its attempt ended without an outcome".to_owned();
            error!(run_id = %self.run_id, task_id = %slot.planned.id, reason = %reason, "a run that was not cancelled left a task unfinished");
            slot.status = TaskStatus::Failed;
            slot.report.status = TaskStatus::Failed;
            slot.report.error = Some(reason.clone());
            let (input_tokens, output_tokens) = slot.keep_tokens();
            events.push(RunEvent::TaskFailed {
                task_id: slot.planned.id.clone(),
                reason,
                attempts: slot.report.attempts,
                model: slot.report.model.clone(),
                input_tokens,
                output_tokens,
                cost: slot.report.cost,
            });
        }
        for i in 0..self.slots.len() {
            if self.slots[i].status != TaskStatus::Pending {
                continue;
            }
            let id = self.slots[i].planned.id.clone();
            let blocker = self
                .dag
                .prerequisites(id.as_str())
                .into_iter()
                .find_map(|p| {
                    let status = self.slots[*self.index.get(p.as_str())?].status;
                    (status != TaskStatus::Succeeded).then(|| (p.clone(), status))
                });
            let reason = match blocker {
                Some((p, TaskStatus::Failed)) => format!("prerequisite {p} failed"),
                Some((p, status)) => {
                    format!(
                        "prerequisite {p} did not succeed (it is {})",
                        status.as_str()
                    )
                }
                None => "it never became ready".to_owned(),
            };
            error!(run_id = %self.run_id, task_id = %id, reason = %reason, "a run that was not cancelled left a task unfinished");
            let slot = &mut self.slots[i];
            slot.status = TaskStatus::Skipped;
            slot.report.status = TaskStatus::Skipped;
            slot.report.error = Some(reason.clone());
            events.push(RunEvent::TaskSkipped {
                task_id: id,
                reason,
                input_tokens: 0,
                output_tokens: 0,
                cost: Usd::ZERO,
                attempts: 0,
            });
        }
        events
    }

    /// Hands the run's agent outcomes to the learner.
    fn learn(&mut self) {
        let Some(learner) = self.learner.clone() else {
            return;
        };
        if self.tries.is_empty() {
            return;
        }
        let tries: Vec<(Task, AgentTry)> = std::mem::take(&mut self.tries)
            .into_iter()
            .filter_map(|(i, t)| Some((self.slots.get(i)?.task.clone(), t)))
            .collect();
        learner.learn(&self.run_id, tries);
    }

    fn spent(&self) -> Usd {
        self.ledger.spent()
    }

    /// Outputs of top-level tasks, in plan order.
    fn answer(&self) -> String {
        let mut out = String::new();
        for s in self.slots.iter().filter(|s| s.planned.parent.is_none()) {
            if let Some(text) = &s.report.output {
                if !out.is_empty() {
                    out.push_str("\n\n");
                }
                out.push_str(&format!(
                    "## {} — {}\n{}",
                    s.planned.id, s.planned.description, text
                ));
            }
        }
        out
    }

    async fn finish(&mut self, i: usize, outcome: Outcome, ready: &mut VecDeque<usize>) {
        match outcome {
            Outcome::Succeeded {
                agent,
                model,
                output,
                flagged,
                attempts,
                duration,
                queued,
                tries,
            } => {
                self.tries.extend(tries.into_iter().map(|t| (i, t)));
                let task_id = self.slots[i].planned.id.clone();
                let followups = output.followups.clone();
                {
                    let slot = &mut self.slots[i];
                    slot.status = TaskStatus::Succeeded;
                    slot.report.status = TaskStatus::Succeeded;
                    slot.report.agent = Some(agent.clone());
                    slot.report.model = model.clone();
                    slot.report.attempts = attempts;
                    slot.report.output = Some(output.text.clone());
                    slot.report.flagged = flagged.clone();
                    slot.report.truncated = output.truncated;
                    slot.report.cost = output.cost;
                    slot.report.input_tokens = output.input_tokens;
                    slot.report.output_tokens = output.output_tokens;
                }
                let mut events = vec![
                    RunEvent::TaskSucceeded {
                        task_id: task_id.clone(),
                        agent,
                        model,
                        output: output.text,
                        flagged,
                        truncated: output.truncated,
                        cost: output.cost,
                        input_tokens: output.input_tokens,
                        output_tokens: output.output_tokens,
                        attempts,
                        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                        queued_ms: u64::try_from(queued.as_millis()).unwrap_or(u64::MAX),
                    },
                    RunEvent::Cost {
                        spent: self.spent(),
                    },
                ];
                if !followups.is_empty() {
                    events.extend(self.add_followups(&task_id, &followups));
                }
                // Journal before releasing dependents, the success together with the
                // follow-ups it proposed: a crash after this point never re-runs the
                // task, and never keeps the success without its follow-ups.
                self.emit_all(events).await;
                if followups.is_empty() {
                    // Release dependents incrementally: O(out-degree), not O(tasks).
                    let dependents: Vec<usize> = self
                        .dag
                        .dependents(task_id.as_str())
                        .into_iter()
                        .filter_map(|d| self.index.get(d.as_str()).copied())
                        .collect();
                    for j in dependents {
                        let slot = &mut self.slots[j];
                        if slot.status == TaskStatus::Pending {
                            slot.waiting = slot.waiting.saturating_sub(1);
                            if slot.waiting == 0 {
                                ready.push_back(j);
                            }
                        }
                    }
                } else {
                    // New tasks and edges: recount everything once.
                    self.recount();
                    for (j, slot) in self.slots.iter().enumerate() {
                        if slot.status == TaskStatus::Pending
                            && slot.waiting == 0
                            && !ready.contains(&j)
                        {
                            ready.push_back(j);
                        }
                    }
                }
            }
            Outcome::Failed {
                agent,
                reason,
                attempts,
                cost,
                tries,
                budget,
            } => {
                self.tries.extend(tries.into_iter().map(|t| (i, t)));
                let task_id = self.slots[i].planned.id.clone();
                {
                    let slot = &mut self.slots[i];
                    slot.status = TaskStatus::Failed;
                    slot.report.status = TaskStatus::Failed;
                    slot.report.agent = agent;
                    slot.report.attempts = attempts;
                    slot.report.error = Some(reason.clone());
                    slot.report.cost = cost;
                }
                let (input_tokens, output_tokens) = self.slots[i].keep_tokens();
                let (attempts, charged, model) = (
                    self.slots[i].report.attempts,
                    self.slots[i].report.cost,
                    self.slots[i].report.model.clone(),
                );
                warn!(run_id = %self.run_id, task_id = %task_id, reason = %reason, "task failed");
                // What refused the task, structured, before the failure it explains.
                let mut events: Vec<RunEvent> =
                    budget.iter().map(|e| budget_event(&task_id, e)).collect();
                events.push(RunEvent::TaskFailed {
                    task_id: task_id.clone(),
                    reason,
                    attempts,
                    model,
                    input_tokens,
                    output_tokens,
                    cost: charged,
                });
                // Failed calls cost money too: keep the run's journaled total current.
                if charged > Usd::ZERO || cost > Usd::ZERO {
                    events.push(RunEvent::Cost {
                        spent: self.spent(),
                    });
                }
                // The failure and the skips it causes in one write: a crash never
                // keeps the failure with its dependents still pending.
                events.extend(self.skip_dependents(&task_id));
                self.emit_all(events).await;
            }
        }
    }

    /// Marks every transitive dependent of a failed task that is still pending as
    /// skipped; returns their `task_skipped` events, to journal with the failure.
    fn skip_dependents(&mut self, failed: &TaskId) -> Vec<RunEvent> {
        let mut stack: Vec<TaskId> = self
            .dag
            .dependents(failed.as_str())
            .into_iter()
            .cloned()
            .collect();
        let mut skipped = Vec::new();
        while let Some(id) = stack.pop() {
            let Some(&j) = self.index.get(id.as_str()) else {
                continue;
            };
            if self.slots[j].status != TaskStatus::Pending {
                continue;
            }
            let reason = format!("prerequisite {failed} failed");
            self.slots[j].status = TaskStatus::Skipped;
            self.slots[j].report.status = TaskStatus::Skipped;
            self.slots[j].report.error = Some(reason.clone());
            skipped.push(RunEvent::TaskSkipped {
                task_id: id.clone(),
                reason,
                input_tokens: 0,
                output_tokens: 0,
                cost: Usd::ZERO,
                attempts: 0,
            });
            stack.extend(self.dag.dependents(id.as_str()).into_iter().cloned());
        }
        skipped
    }

    /// Dynamic replanning: follow-ups become dependents of `after`, under its parent.
    /// Returns the event to journal with `after`'s success: the tasks added, or why the
    /// update was refused (`None` when `after` is not in the DAG).
    fn add_followups(&mut self, after: &TaskId, followups: &[super::FollowUp]) -> Option<RunEvent> {
        let parent = self.dag.get(after.as_str())?.parent.clone();
        let update = self.dag.updates_applied() + 1;
        let mut tasks = Vec::with_capacity(followups.len());
        for (k, f) in followups.iter().enumerate() {
            if let Err(e) = self
                .exec
                .guard
                .screen(Checkpoint::Decomposition, &f.description)
            {
                return Some(RunEvent::UpdateRejected {
                    after: after.clone(),
                    reason: e.to_string(),
                });
            }
            let id = followup_id(after, update, k + 1);
            tasks.push(Task::new(id, f.kind, f.description.clone()));
        }
        let update = DagUpdate {
            parent,
            dependencies: tasks
                .iter()
                .map(|t| (after.clone(), t.id.clone()))
                .collect(),
            subtasks: tasks.clone(),
        };
        if let Err(e) = self.dag.apply_update(update) {
            return Some(RunEvent::UpdateRejected {
                after: after.clone(),
                reason: e.to_string(),
            });
        }
        let nodes: Vec<TaskNode> = tasks
            .iter()
            .filter_map(|t| self.dag.get(t.id.as_str()).cloned())
            .collect();
        let planned = self.replanner.plan_tasks(after, &nodes);
        for (task, p) in tasks.into_iter().zip(planned.iter().cloned()) {
            self.index.insert(task.id.clone(), self.slots.len());
            self.slots.push(Slot {
                report: TaskReport {
                    task_id: task.id.clone(),
                    status: TaskStatus::Pending,
                    agent: p.agent.clone(),
                    model: None,
                    attempts: 0,
                    output: None,
                    flagged: None,
                    truncated: false,
                    error: None,
                    cost: Usd::ZERO,
                    input_tokens: 0,
                    output_tokens: 0,
                },
                planned: p,
                task,
                status: TaskStatus::Pending,
                waiting: 0,
                tokens: Arc::default(),
            });
        }
        Some(RunEvent::TasksAdded {
            after: after.clone(),
            tasks: planned,
        })
    }

    /// Builds the future that runs task `i` to success or final failure.
    fn attempt_future(
        &self,
        i: usize,
    ) -> impl std::future::Future<Output = (usize, Outcome)> + Send + 'static {
        let slot = &self.slots[i];
        // Prerequisites' outputs as passed on: quarantined when the screen flagged them
        // (a report resumed from the store keeps its flag), else as written.
        let inputs: Vec<TaskInput> = self
            .dag
            .prerequisites(slot.planned.id.as_str())
            .iter()
            .filter_map(|p| {
                let j = *self.index.get(p.as_str())?;
                let report = &self.slots[j].report;
                let (output, quarantined) = pass_on(
                    &self.exec.guard,
                    report.output.as_deref()?,
                    report.flagged.as_deref(),
                );
                Some(TaskInput {
                    task_id: (*p).clone(),
                    output,
                    quarantined,
                })
            })
            .collect();
        let mut candidates: Vec<AgentId> = Vec::new();
        if let Some(a) = &slot.planned.agent {
            candidates.push(a.clone());
        }
        for alt in &slot.planned.route.alternatives {
            if !candidates.contains(&alt.agent) {
                candidates.push(alt.agent.clone());
            }
        }
        let attempt = Attempt {
            exec: Arc::clone(&self.exec),
            run_id: self.run_id.clone(),
            subject: Arc::clone(&self.subject),
            refinement: self.refinement,
            request: Arc::clone(&self.request),
            task: slot.task.clone(),
            model: slot.planned.model.as_ref().map(|m| m.model.clone()),
            estimate: planned_estimate(&slot.planned),
            inputs,
            candidates,
            ledger: self.ledger.clone(),
            sink: self.sink.clone(),
            tokens: Arc::clone(&slot.tokens),
            pending: Arc::clone(&self.pending),
            deadline: self.deadline,
            task_deadline: Some(self.exec.config.task_deadline)
                .filter(|d| !d.is_zero())
                .and_then(|d| Instant::now().checked_add(d)),
            queued: Arc::new(AtomicU64::new(0)),
            overspent: Arc::clone(&self.overspent),
        };
        let queued = Arc::clone(&attempt.queued);
        // The agent's id as text, absent when the plan names none (not the Debug text of
        // the `Option`).
        let span = info_span!(
            "task",
            task_id = %slot.planned.id,
            agent = tracing::field::Empty,
            model = tracing::field::Empty,
            outcome = tracing::field::Empty,
            attempts = tracing::field::Empty,
            final_agent = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty
        );
        if let Some(agent) = &slot.planned.agent {
            span.record("agent", tracing::field::display(agent));
        }
        let mut end = TaskSpanEnd(Some(span.clone()));
        // Built on the heap: the attempt's state machine is a few kilobytes, and
        // spawning moves it (a 100-task chain spent a quarter of its time in memmove).
        Box::pin(
            async move {
                let outcome = attempt.run().await;
                // Every task that ended, however: how long it queued for call slots.
                metrics::histogram!(genesis_telemetry::catalogue::TASK_QUEUE_SECONDS)
                    .record(Duration::from_nanos(queued.load(Ordering::Relaxed)).as_secs_f64());
                end.ended(&outcome);
                (i, outcome)
            }
            .instrument(span),
        )
    }
}

/// One task's journey through its candidate agents.
struct Attempt {
    exec: Arc<ExecInner>,
    run_id: RunId,
    subject: Arc<str>,
    refinement: Refinement,
    request: Arc<str>,
    task: Task,
    model: Option<genesis_core::ModelId>,
    estimate: Usd,
    inputs: Vec<TaskInput>,
    candidates: Vec<AgentId>,
    ledger: CostLedger,
    /// The run's journal and subscribers.
    sink: EventSink,
    /// The task's tokens (its slot's meter).
    tokens: Arc<TokenMeter>,
    /// The run's tasks not started yet (see [`Attempt::fair_ceiling`]).
    pending: Arc<Waiting>,
    /// When the run's deadline passes (`executor.run_timeout`), if it has one: a
    /// throttled upstream's `Retry-After` is only waited out when it ends before.
    deadline: Option<Instant>,
    /// When the task's deadline (`executor.task_deadline`) passes if it never waits for
    /// a call slot, if it has one: every such wait moves it later by as long (see
    /// [`Attempt::task_deadline`]).
    task_deadline: Option<Instant>,
    /// Nanoseconds the task waited for call slots so far (see [`Attempt::queue`]);
    /// shared with its scheduler, which records it when the task ends.
    queued: Arc<AtomicU64>,
    /// The budgets the run was found over after a call settled, one bit per
    /// [`BudgetScope`] (see [`Attempt::overspent`]): each is reported once per run.
    overspent: Arc<AtomicU8>,
}

/// What throttling is shared by: agents calling the same upstream
/// ([`super::Agent::upstream`]) and model.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ThrottleKey {
    upstream: String,
    model: Option<ModelId>,
}

/// An upstream that throttled one of the task's agents until it gave up on it
/// ([`AgentError::Throttled`]; its retries used, or a `Retry-After` over the backoff
/// cap). The task's other agents on the same upstream and model are called last, and
/// not before the `Retry-After` has passed.
struct Throttle {
    key: ThrottleKey,
    /// The agent that was throttled.
    agent: AgentId,
    /// Its last error.
    message: String,
    /// The `Retry-After` it was given and when that ends, if it was given one.
    window: Option<(Duration, Option<Instant>)>,
}

/// Whether a candidate on a throttled upstream and model is called now.
enum Gate {
    /// Its upstream's `Retry-After` has passed, or none was given.
    Go,
    /// After waiting this long for the `Retry-After` to pass.
    Wait(Duration),
    /// Not at all: the wait does not fit (why).
    Skip(String),
}

/// The rule a task names when it fails because every agent left calls a throttled
/// upstream and model whose `Retry-After` cannot be waited out.
const PROVIDER_THROTTLED: &str = "provider_throttled";

/// The rule a task names when it fails because its deadline passed
/// (`executor.task_deadline`).
const TASK_DEADLINE: &str = "task_deadline";

/// Retries of a timed-out attempt on the same agent before the task moves on. Not a
/// setting: an agent that hung twice in a row is likely hung, and the task's
/// alternatives and `task_deadline` serve better than more waits of a full timeout; an
/// agent that is only slow needs a longer `timeout`, not more attempts (audit R8 H1:
/// 4 x 60 s on one hung agent).
const MAX_TIMEOUT_RETRIES: u32 = 1;

/// Longest a candidate's failure is told in a task's error (see [`brief`]).
const MAX_FAILURE_CHARS: usize = 240;

/// Records that `agent` failed (or was passed over) with `why`: the last failure, and
/// the agent's latest in `failures` (one entry per agent, in the order they first
/// failed).
/// Records that `agent` was passed over without a call (its breaker is open) with
/// `why`: the last failure, and the agent's entry in `failures` only when it has none,
/// so the failure that opened the breaker is the one a task's error names
/// (verification V8: "qa: circuit breaker is open" hid qa's 500).
fn note_passed_over(
    last: &mut Option<(AgentId, String)>,
    failures: &mut Vec<(AgentId, String)>,
    agent: &AgentId,
    why: String,
) {
    if !failures.iter().any(|(a, _)| a == agent) {
        failures.push((agent.clone(), why.clone()));
    }
    *last = Some((agent.clone(), why));
}

fn note(
    last: &mut Option<(AgentId, String)>,
    failures: &mut Vec<(AgentId, String)>,
    agent: &AgentId,
    why: String,
) {
    match failures.iter_mut().find(|(a, _)| a == agent) {
        Some(entry) => entry.1.clone_from(&why),
        None => failures.push((agent.clone(), why.clone())),
    }
    *last = Some((agent.clone(), why));
}

/// Each agent's failure, briefly: `qa: ...; spec: ...`.
fn summary(failures: &[(AgentId, String)]) -> String {
    failures
        .iter()
        .map(|(agent, why)| format!("{agent}: {}", brief(why)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `text` when it is at most [`MAX_FAILURE_CHARS`] characters, else its start and its
/// end around an ellipsis: the end keeps the rule or key a message closes with. The cut
/// falls between words where a space is near (audit G10 D6: `at li…1 column 19`).
fn brief(text: &str) -> String {
    let chars = text.chars().count();
    if chars <= MAX_FAILURE_CHARS {
        return text.to_owned();
    }
    let tail = MAX_FAILURE_CHARS / 4;
    let head: String = text.chars().take(MAX_FAILURE_CHARS - tail - 3).collect();
    let end: String = text.chars().skip(chars - tail).collect();
    // A space in the last third of the head, or the first third of the end.
    let head = match head.rfind(' ') {
        Some(i) if i >= head.len() * 2 / 3 => head[..i].to_owned(),
        _ => head,
    };
    let end = match end.find(' ') {
        Some(i) if i <= end.len() / 3 => end[i + 1..].to_owned(),
        _ => end,
    };
    format!("{head} … {end}")
}

/// A duration as people read it in a message: `350ms`, `9.8s` (one decimal under ten
/// seconds), `120s` (whole seconds).
pub(crate) fn short(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    if d < Duration::from_secs(10) {
        let tenths = (d.as_millis() + 50) / 100;
        return if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        };
    }
    format!("{}s", (d.as_millis() + 500) / 1000)
}

/// An agent breaker's refusal, its wait rounded (`next probe in 9.8s`).
fn breaker_message(e: &ResilienceError) -> String {
    match e {
        ResilienceError::CircuitOpen { key, retry_in } => {
            format!(
                "circuit breaker `{key}` is open, next probe in {}",
                short(*retry_in)
            )
        }
        other => other.to_string(),
    }
}

/// Why an agent is passed over without a call: its `breaker` is open (or half-open
/// with every probe taken), read without keeping a probe; `None` when it admits.
fn breaker_open(breaker: &Arc<SharedBreaker>) -> Option<String> {
    let now = Instant::now();
    match breaker.effective_state(now) {
        BreakerState::Closed => None,
        // Asking is the only way to know whether a probe slot is free; a permit
        // dropped unreported counts nothing.
        _ => breaker
            .try_acquire_owned(now)
            .err()
            .map(|e| breaker_message(&e)),
    }
}

/// Why the retries of an agent stopped, naming the setting.
fn given_up(give_up: &GiveUp) -> String {
    match give_up {
        GiveUp::RetryAfterTooLong { retry_after, cap } => format!(
            "retry-after {} exceeds the backoff cap {} (executor.retry.cap)",
            short(*retry_after),
            short(*cap)
        ),
        GiveUp::MaxRetries { max_retries } => {
            format!("all {max_retries} retries used (executor.retry.max_retries)")
        }
        other => other.to_string(),
    }
}

impl Attempt {
    /// Journals and broadcasts `event`. When it cannot be journaled the run is
    /// stopping (see [`EventSink::emit_all`]): this attempt waits to be aborted by its
    /// scheduler and calls no agent meanwhile.
    async fn emit(&self, event: RunEvent) {
        if !self.sink.emit(event).await {
            std::future::pending::<()>().await;
        }
    }

    async fn run(self) -> Outcome {
        let started = Instant::now();
        // When its first call started, and how long it had queued by then: the task's
        // duration is its time on agents from there (audit P9 F5).
        let mut on_agents: Option<(Instant, Duration)> = None;
        let mut attempts = 0u32;
        let mut cost = Usd::ZERO;
        // The last failure (for re-route reasons), and each candidate's latest, in the
        // order they failed (for the task's error: audit R8 H5).
        let mut last: Option<(AgentId, String)> = None;
        let mut failures: Vec<(AgentId, String)> = Vec::new();
        let mut tries: Vec<AgentTry> = Vec::new();
        if self.candidates.is_empty() {
            return Outcome::Failed {
                agent: None,
                reason: format!("task {} has no agent", self.task.id),
                attempts,
                cost,
                tries,
                budget: None,
            };
        }
        // Upstreams that throttled the task's agents (see `Throttle`), and the throttle
        // keys of its candidates (worked out once the first throttle is seen).
        let mut throttles: Vec<Throttle> = Vec::new();
        let mut keys: Vec<Option<ThrottleKey>> = Vec::new();
        // When every candidate's breaker is open, wait for the cool-down to let a probe
        // through (bounded), instead of failing work because of a transient outage.
        let mut open_waits = 0u32;
        // Candidates not called because the upstream and model they call throttled the
        // task: the agent, the throttle (an index into `throttles`) and why.
        let mut skipped: Vec<(AgentId, usize, String)> = Vec::new();
        // Ends the task at its deadline (`executor.task_deadline`), naming each agent's
        // failure so far.
        macro_rules! past_deadline {
            () => {{
                let (agent, _) = last.clone().unzip();
                return Outcome::Failed {
                    agent,
                    reason: self.deadline_reason(started, &failures, last.as_ref()),
                    attempts,
                    cost,
                    tries,
                    budget: None,
                };
            }};
        }
        loop {
            let mut all_open = true;
            // Candidates in plan order; once an upstream throttled one, those on other
            // upstreams go first (see `Attempt::next_candidate`).
            let mut left: Vec<usize> = (0..self.candidates.len()).collect();
            // Candidates passed over because every slot of theirs was taken
            // (`max_concurrent_tasks`): the first of them to free up is called once no
            // other candidate is left (capacity is soft).
            let mut full: Vec<usize> = Vec::new();
            // Whether a candidate was passed over or given up on: the next one called
            // is a re-route. And the candidate whose re-route was announced already
            // (before waiting for a throttled upstream's `Retry-After`).
            let mut moved = false;
            let mut announced: Option<usize> = None;
            skipped.clear();
            while !left.is_empty() || !full.is_empty() {
                if !throttles.is_empty() && keys.is_empty() {
                    keys = self.throttle_keys();
                }
                // The candidate to call, its slot, backend and breaker.
                let (ci, slot, backend, breaker) = if left.is_empty() {
                    // Every candidate left is full: the first to free up is called.
                    let Some((at, slot)) = self.first_free(&full).await else {
                        past_deadline!();
                    };
                    let ci = full.remove(at);
                    let agent = &self.candidates[ci];
                    if failures.is_empty() && skipped.is_empty() {
                        // Every candidate was only busy. The first choice, after its
                        // wait, is no re-route; another one is a re-route from the first
                        // choice (verification V8: it named the last busy candidate).
                        if ci == 0 {
                            moved = false;
                        } else {
                            last = Some((
                                self.candidates[0].clone(),
                                format!(
                                    "every candidate agent was busy (all slots taken, max_concurrent_tasks); {agent} freed a slot first"
                                ),
                            ));
                        }
                    }
                    let Some(backend) = self.exec.agents.get(agent.as_str()).cloned() else {
                        continue;
                    };
                    let breaker = self.exec.breakers.get(&format!("agent:{agent}"));
                    if let Some(why) = breaker_open(&breaker) {
                        note_passed_over(&mut last, &mut failures, agent, why);
                        moved = true;
                        continue;
                    }
                    (ci, slot, backend, breaker)
                } else {
                    let (ci, gate) = self.next_candidate(&mut left, &keys, &throttles);
                    let agent = &self.candidates[ci];
                    match gate {
                        Gate::Go => {}
                        Gate::Wait(wait) => {
                            if moved {
                                self.reroute(&last, agent, Some((ci, wait)), &keys).await;
                                announced = Some(ci);
                            }
                            if !self.pause(wait).await {
                                past_deadline!();
                            }
                        }
                        Gate::Skip(why) => {
                            // Not called: its upstream said to come back later than we
                            // wait.
                            all_open = false;
                            let t = keys
                                .get(ci)
                                .and_then(Option::as_ref)
                                .and_then(|k| throttles.iter().position(|t| t.key == *k))
                                .unwrap_or(0);
                            skipped.push((agent.clone(), t, why));
                            continue;
                        }
                    }
                    let Some(backend) = self.exec.agents.get(agent.as_str()).cloned() else {
                        all_open = false;
                        let why = AgentError::NoBackend {
                            agent: agent.clone(),
                        }
                        .to_string();
                        note(&mut last, &mut failures, agent, why);
                        moved = true;
                        continue;
                    };
                    // An open breaker is passed over before any slot is taken (audit
                    // R8 D3: tasks queued for a failing agent's slots).
                    let breaker = self.exec.breakers.get(&format!("agent:{agent}"));
                    if let Some(why) = breaker_open(&breaker) {
                        note_passed_over(&mut last, &mut failures, agent, why);
                        moved = true;
                        continue;
                    }
                    match self.try_slot(agent) {
                        Ok(slot) => (ci, slot, backend, breaker),
                        Err(why) => {
                            // Busy, not failed: only the re-route says so, from the
                            // first busy choice unless an earlier one failed.
                            all_open = false;
                            if full.is_empty() && failures.is_empty() {
                                last = Some((agent.clone(), why));
                            }
                            full.push(ci);
                            moved = true;
                            continue;
                        }
                    }
                };
                let agent = &self.candidates[ci];
                if moved && announced != Some(ci) {
                    self.reroute(&last, agent, None, &keys).await;
                }
                moved = true;
                let mut slot = slot;
                let mut retry = 0u32;
                let mut timeouts = 0u32;
                // This agent's go: when its first call started, how long the task had
                // queued by then, and what it had cost.
                let agent_started = Instant::now();
                let queued_before = self.queued();
                let cost_before = cost;
                let agent_try = |success: bool, cost: Usd| AgentTry {
                    agent: agent.clone(),
                    success,
                    latency: agent_started
                        .elapsed()
                        .saturating_sub(self.queued().saturating_sub(queued_before)),
                    cost: cost - cost_before,
                };
                loop {
                    if self.deadline_passed() {
                        if retry > 0 {
                            tries.push(agent_try(false, cost));
                        }
                        past_deadline!();
                    }
                    // Money is set aside on the run and the day before the call (up
                    // to the call's bounded cost, else its estimate), so tasks in
                    // flight together cannot overspend; it is settled to the actual
                    // cost after, or given back (dropped) when the call fails or the
                    // task is cancelled. An agent that bounded its cost is held to
                    // what was set aside.
                    let mut request = self.request(agent, retry + 1, None);
                    let bounds = backend.cost_bounds(&request);
                    let (global, reservation) = match self.reserve_for_call(true, bounds).await {
                        Some(Ok(r)) => r,
                        Some(Err(e)) => {
                            // The budget ran out: not the agent's doing, unless its own
                            // failed calls came first.
                            if retry > 0 {
                                tries.push(agent_try(false, cost));
                            }
                            return Outcome::Failed {
                                agent: Some(agent.clone()),
                                reason: e.to_string(),
                                attempts,
                                cost,
                                tries,
                                budget: Some(e),
                            };
                        }
                        None => {
                            if retry > 0 {
                                tries.push(agent_try(false, cost));
                            }
                            past_deadline!();
                        }
                    };
                    request.max_cost = self.max_cost(bounds, &reservation);
                    let permit = match breaker.try_acquire_owned(Instant::now()) {
                        Ok(p) => p,
                        Err(e) => {
                            note_passed_over(&mut last, &mut failures, agent, breaker_message(&e));
                            break;
                        }
                    };
                    all_open = false;
                    attempts += 1;
                    retry += 1;
                    let model = backend.model(&request);
                    if let Some(m) = &model {
                        tracing::Span::current().record("model", tracing::field::display(m));
                    }
                    // What a provider's throttling is shared by, should it throttle.
                    let upstream = backend.upstream(&request);
                    self.tokens.set_model(model.clone());
                    on_agents.get_or_insert_with(|| (Instant::now(), self.queued()));
                    self.emit(RunEvent::TaskStarted {
                        task_id: self.task.id.clone(),
                        agent: agent.clone(),
                        attempt: retry,
                        model: model.clone(),
                    })
                    .await;
                    let money = CallMoney::new(reservation, request.max_cost.is_some());
                    let result = self.call(&backend, request).await;
                    // The server-wide slot is held for the call only, not for backoff
                    // sleeps or refinement.
                    drop(global);
                    // A call cut short by the task's deadline was not given its time:
                    // it counts on nothing.
                    let cut = result.is_err() && self.deadline_passed();
                    // Transient failures and panics count against the agent; a
                    // rejection, a throttled call or a blocked output does not.
                    match &result {
                        Ok(_) => permit.success(Instant::now()),
                        Err(e) if e.trips_breaker() && !cut => permit.failure(Instant::now()),
                        Err(_) => drop(permit),
                    }
                    match result {
                        Ok(output) => {
                            cost += output.cost;
                            money.settle(output.cost);
                            self.tokens.add(&output);
                            // The model the agent says answered (an HTTP or command
                            // agent's `model`) over the one named before the call.
                            let model = output.model.clone().or(model);
                            if output.model.is_some() {
                                self.tokens.set_model(model.clone());
                            }
                            self.overspent().await;
                            // Too large or screened out: like a rejection, not
                            // retried here; the task moves on to its alternatives.
                            let (output, flagged) = match self
                                .within_limit(agent, output)
                                .and_then(|o| self.screen(agent, o))
                            {
                                Ok(o) => o,
                                Err(e) => {
                                    note(&mut last, &mut failures, agent, e.to_string());
                                    break;
                                }
                            };
                            let (output, flagged) = self
                                .refine(
                                    &backend,
                                    &breaker,
                                    agent,
                                    (output, flagged),
                                    &mut attempts,
                                    &mut cost,
                                )
                                .await;
                            tries.push(agent_try(true, cost));
                            let (input_tokens, output_tokens) = self.tokens.get();
                            let queued = self.queued();
                            let (first_call, queued_before) =
                                on_agents.unwrap_or((started, Duration::ZERO));
                            return Outcome::Succeeded {
                                agent: agent.clone(),
                                model,
                                output: AgentOutput {
                                    cost,
                                    input_tokens,
                                    output_tokens,
                                    ..output
                                },
                                flagged,
                                attempts,
                                duration: first_call
                                    .elapsed()
                                    .saturating_sub(queued.saturating_sub(queued_before)),
                                queued,
                                tries,
                            };
                        }
                        Err(e) => {
                            // A failed call costs nothing and its room is free again
                            // before any backoff sleep, unless it was bounded and timed
                            // out, or answered with nothing usable (see `CallMoney`).
                            cost += money.failed(&e);
                            self.tokens.add_unusable(&e);
                            let reason = e.to_string();
                            if cut {
                                note(
                                    &mut last,
                                    &mut failures,
                                    agent,
                                    format!("{reason} (cut at the task's deadline)"),
                                );
                                tries.push(agent_try(false, cost));
                                past_deadline!();
                            }
                            let throttled = match &e {
                                AgentError::Throttled { retry_after, .. } => Some(*retry_after),
                                _ => None,
                            };
                            if matches!(e, AgentError::Timeout { .. }) {
                                timeouts += 1;
                                if timeouts > MAX_TIMEOUT_RETRIES {
                                    // A hung agent tends to stay hung: the task's
                                    // alternatives are a better bet (audit R8 H1).
                                    note(
                                        &mut last,
                                        &mut failures,
                                        agent,
                                        format!(
                                            "{reason}; a timed-out attempt is retried at most once on the same agent"
                                        ),
                                    );
                                    break;
                                }
                            }
                            match e.retry() {
                                Retry::Yes { after } => {
                                    match self.exec.backoff.delay(retry - 1, after) {
                                        Ok(delay) => {
                                            let delay = self.jittered(delay, after);
                                            if !self.fits_deadline(delay) {
                                                note(
                                                    &mut last,
                                                    &mut failures,
                                                    agent,
                                                    format!(
                                                        "{reason}; its next retry in {} would pass the task's deadline (executor.task_deadline {})",
                                                        short(delay),
                                                        short(self.exec.config.task_deadline)
                                                    ),
                                                );
                                                break;
                                            }
                                            // Kept as the agent's failure until a later
                                            // one replaces it: a retry refused by the
                                            // breaker this failure opened must not hide
                                            // it (verification V8).
                                            note(&mut last, &mut failures, agent, reason.clone());
                                            // The agent's slot is free while the task
                                            // backs off (audit R8 D3), from before its
                                            // `task_retrying` on; taken again to retry.
                                            let limited = slot.take().is_some();
                                            self.emit(RunEvent::TaskRetrying {
                                                task_id: self.task.id.clone(),
                                                agent: agent.clone(),
                                                attempt: retry,
                                                delay_ms: u64::try_from(delay.as_millis())
                                                    .unwrap_or(u64::MAX),
                                                reason,
                                            })
                                            .await;
                                            tokio::time::sleep(delay).await;
                                            if limited {
                                                // Queued, not worked: off the deadline.
                                                slot = self.queue(self.slot(agent)).await;
                                            }
                                        }
                                        Err(give_up) => {
                                            // Given up on a throttled upstream: its other
                                            // agents on it wait their turn.
                                            if let (Some(retry_after), Some(upstream)) =
                                                (throttled, upstream)
                                            {
                                                let key = ThrottleKey {
                                                    upstream,
                                                    model: model.clone(),
                                                };
                                                throttles.retain(|t| t.key != key);
                                                throttles.push(Throttle {
                                                    key,
                                                    agent: agent.clone(),
                                                    message: reason.clone(),
                                                    window: retry_after.map(|after| {
                                                        (after, Instant::now().checked_add(after))
                                                    }),
                                                });
                                            }
                                            note(
                                                &mut last,
                                                &mut failures,
                                                agent,
                                                format!("{reason}; {}", given_up(&give_up)),
                                            );
                                            break;
                                        }
                                    }
                                }
                                Retry::No => {
                                    note(&mut last, &mut failures, agent, reason);
                                    break;
                                }
                            }
                        }
                    }
                }
                drop(slot);
                // Left without an answer after calling it: the agent failed the task
                // (an open breaker before any call is not a try).
                if retry > 0 {
                    tries.push(agent_try(false, cost));
                }
            }
            if !all_open || open_waits >= self.exec.config.max_breaker_waits {
                break;
            }
            open_waits += 1;
            if !self
                .pause(self.exec.config.breaker.cool_down / 2 + Duration::from_millis(1))
                .await
            {
                past_deadline!();
            }
        }
        let (agent, reason) = last.map_or((None, "no candidate agent".to_owned()), |(a, r)| {
            (Some(a), r)
        });
        let throttled = skipped
            .first()
            .and_then(|(_, t, why)| Some((throttles.get(*t)?, why)));
        let reason = match throttled {
            Some((throttle, why)) => {
                Self::throttled_reason(throttle, why, &skipped, agent.as_ref(), &reason)
            }
            None if failures.is_empty() => reason,
            None => format!(
                "all {} candidate agents failed: {}",
                self.candidates.len(),
                summary(&failures)
            ),
        };
        Outcome::Failed {
            agent,
            reason,
            attempts,
            cost,
            tries,
            budget: None,
        }
    }

    /// Emits the `task_rerouted` of a move to `agent`, from the agent given up on last
    /// (`last`, with its failure as the reason); `wait`: the candidate is called after
    /// waiting this long for its throttled upstream's `Retry-After`.
    async fn reroute(
        &self,
        last: &Option<(AgentId, String)>,
        agent: &AgentId,
        wait: Option<(usize, Duration)>,
        keys: &[Option<ThrottleKey>],
    ) {
        let (from, mut reason) = last
            .clone()
            .unwrap_or_else(|| (self.candidates[0].clone(), String::new()));
        if let Some((ci, wait)) = wait {
            let upstream = keys
                .get(ci)
                .and_then(Option::as_ref)
                .map_or("", |k| k.upstream.as_str());
            reason.push_str(&format!(
                "; waiting {} ms for {upstream}'s retry-after before calling {agent}, which calls the same upstream and model",
                wait.as_millis()
            ));
        }
        self.emit(RunEvent::TaskRerouted {
            task_id: self.task.id.clone(),
            from,
            to: agent.clone(),
            reason,
        })
        .await;
    }

    /// The agent's concurrency limit (`max_concurrent_tasks`), if it has one.
    fn limit(&self, agent: &AgentId) -> Option<Arc<Semaphore>> {
        self.exec
            .agent_limits
            .lock()
            .ok()
            .and_then(|m| m.get(agent).cloned())
    }

    /// One of `agent`'s slots if one is free now (`None` inside: it has no limit), else
    /// why not.
    fn try_slot(&self, agent: &AgentId) -> Result<Option<OwnedSemaphorePermit>, String> {
        let Some(limit) = self.limit(agent) else {
            return Ok(None);
        };
        match limit.try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(TryAcquireError::Closed) => Ok(None),
            Err(TryAcquireError::NoPermits) => {
                let cap = self
                    .exec
                    .agent_caps
                    .lock()
                    .ok()
                    .and_then(|m| m.get(agent).copied())
                    .unwrap_or(0);
                Err(format!(
                    "agent {agent} is busy: all {cap} of its slots are taken (max_concurrent_tasks {cap})"
                ))
            }
        }
    }

    /// One of `agent`'s slots, waiting for one to free up (`None`: it has no limit).
    async fn slot(&self, agent: &AgentId) -> Option<OwnedSemaphorePermit> {
        self.limit(agent)?.acquire_owned().await.ok()
    }

    /// Waits for a slot of whichever of the `full` candidates frees one first: its
    /// index in `full` and the slot (`None` when `full` is empty). A wait in the queue:
    /// off the task's deadline (see [`Attempt::queue`]).
    async fn first_free(&self, full: &[usize]) -> Option<(usize, Option<OwnedSemaphorePermit>)> {
        let waits: Vec<_> = full
            .iter()
            .map(|&ci| {
                let limit = self.limit(&self.candidates[ci]);
                Box::pin(async move {
                    match limit {
                        Some(limit) => limit.acquire_owned().await.ok(),
                        None => None,
                    }
                })
            })
            .collect();
        if waits.is_empty() {
            return None;
        }
        let (slot, at, _) = self.queue(futures_util::future::select_all(waits)).await;
        Some((at, slot))
    }

    /// When the task's deadline passes (`executor.task_deadline`), if it has one: its
    /// start plus the deadline plus every wait for a call slot so far.
    fn task_deadline(&self) -> Option<Instant> {
        self.task_deadline
            .map(|d| d.checked_add(self.queued()).unwrap_or(d))
    }

    /// How long the task has waited for call slots so far.
    fn queued(&self) -> Duration {
        Duration::from_nanos(self.queued.load(Ordering::Relaxed))
    }

    /// `f`, a wait for a call slot (server-wide, `executor.max_tasks_in_flight`, or an
    /// agent's, `max_concurrent_tasks`), timed into [`Attempt::queued`]: the time is
    /// the queue's, not the task's work, so it moves the task's deadline later by as
    /// long and is not part of its duration (audit P9 F1, F5). Not cut at the task's
    /// deadline: the run's deadline (`executor.run_timeout`) ends the wait, as does
    /// cancelling the run.
    async fn queue<F: std::future::Future>(&self, f: F) -> F::Output {
        let from = Instant::now();
        let out = f.await;
        let waited = u64::try_from(from.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if waited > 0 {
            self.queued.fetch_add(waited, Ordering::Relaxed);
        }
        out
    }

    /// `f`'s output, or `None` when the task's deadline passes first.
    async fn by_deadline<T>(&self, f: impl std::future::Future<Output = T>) -> Option<T> {
        match self.task_deadline() {
            Some(deadline) => tokio::time::timeout_at(deadline, f).await.ok(),
            None => Some(f.await),
        }
    }

    /// True once the task's deadline has passed.
    fn deadline_passed(&self) -> bool {
        self.task_deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// True when a wait of `d` from now ends before the task's deadline.
    fn fits_deadline(&self, d: Duration) -> bool {
        self.task_deadline().is_none_or(|deadline| {
            Instant::now()
                .checked_add(d)
                .is_some_and(|end| end < deadline)
        })
    }

    /// Sleeps `d`, or until the task's deadline when that comes first: false then.
    async fn pause(&self, d: Duration) -> bool {
        if self.fits_deadline(d) {
            tokio::time::sleep(d).await;
            return true;
        }
        if let Some(deadline) = self.task_deadline() {
            tokio::time::sleep_until(deadline).await;
        }
        false
    }

    /// Why a task failed at its deadline: the rule, its value, the time it queued for
    /// call slots (not counted) if any, each agent's failure, and the last agent passed
    /// over when it is not among them.
    fn deadline_reason(
        &self,
        started: Instant,
        failures: &[(AgentId, String)],
        last: Option<&(AgentId, String)>,
    ) -> String {
        let queued = self.queued();
        let mut reason = format!(
            "the task's deadline passed after {}: executor.task_deadline is {:?} (rule: {TASK_DEADLINE})",
            short(started.elapsed().saturating_sub(queued)),
            self.exec.config.task_deadline
        );
        if !queued.is_zero() {
            reason.push_str(&format!(
                "; the {} it waited for call slots is not counted",
                short(queued)
            ));
        }
        if !failures.is_empty() {
            reason.push_str("; ");
            reason.push_str(&summary(failures));
        }
        if let Some((agent, why)) = last
            && !failures.iter().any(|(a, _)| a == agent)
        {
            reason.push_str(&format!("; {agent}: {}", brief(why)));
        }
        reason
    }

    /// The pause before a retry: the backoff's `delay`, and when the agent sent a
    /// `Retry-After`, that plus a jitter drawn from `[0, min(base, Retry-After / 10)]`
    /// so that clients told the same time do not all come back at once (audit R8 H2);
    /// never over the backoff cap.
    fn jittered(&self, delay: Duration, after: Option<Duration>) -> Duration {
        let Some(after) = after else {
            return delay;
        };
        let backoff = &self.exec.backoff;
        let base = backoff.ceiling(0);
        let bound = base.min(after / 10);
        if bound.is_zero() {
            return delay;
        }
        // A draw from `[0, base]` of the backoff's own generator, scaled to the bound.
        let draw = backoff.delay(0, None).unwrap_or(Duration::ZERO);
        let jitter = bound.mul_f64((draw.as_secs_f64() / base.as_secs_f64()).min(1.0));
        after.saturating_add(jitter).max(delay).min(backoff.cap())
    }

    /// After a call settled: when the run's, the day's or the caller's day's spend is
    /// now over its budget (a call without a cost limit reported more than was set
    /// aside for it), says so once per run and budget — a warning and a
    /// `budget_overspent` event naming the rule, the limit and the spend (audit R8 H4).
    /// The work is done and paid for: nothing fails.
    async fn overspent(&self) {
        let budget = self.ledger.budget();
        if budget.per_run.is_none() && budget.per_day.is_none() && budget.per_subject_day.is_none()
        {
            return;
        }
        let scopes = [
            (BudgetScope::Run, budget.per_run, Some(self.ledger.spent())),
            (
                BudgetScope::Day,
                budget.per_day,
                Some(self.ledger.day_spent()),
            ),
            (
                BudgetScope::SubjectDay,
                budget.per_subject_day,
                self.ledger.subject_day_spent(),
            ),
        ];
        for (bit, (scope, limit, spent)) in scopes.into_iter().enumerate() {
            let (Some(limit), Some(spent)) = (limit, spent) else {
                continue;
            };
            // As `CallMoney::settle`: float sums may land a hair over.
            if spent.as_f64() <= limit.as_f64() + 1e-9 {
                continue;
            }
            let flag = 1u8 << bit;
            if self.overspent.fetch_or(flag, Ordering::Relaxed) & flag != 0 {
                continue;
            }
            warn!(
                run_id = %self.run_id,
                task_id = %self.task.id,
                scope = scope.as_str(),
                %spent,
                %limit,
                rule = %format!("budget_{}", scope.as_str()),
                "an agent call without a cost limit cost more than was set aside and took a budget over its limit"
            );
            self.emit(RunEvent::BudgetOverspent {
                task_id: self.task.id.clone(),
                scope,
                spent,
                limit,
            })
            .await;
        }
    }

    /// Why a task failed with candidates left uncalled because their upstream and model
    /// throttled it (rule `provider_throttled`): the upstream, the model, the agent it
    /// throttled and its error (the provider's `Retry-After` in it), why the wait does
    /// not fit, the agents not called, and the last failure when it came from another
    /// agent.
    fn throttled_reason(
        throttle: &Throttle,
        why: &str,
        skipped: &[(AgentId, usize, String)],
        last_agent: Option<&AgentId>,
        last: &str,
    ) -> String {
        let names: Vec<&str> = skipped.iter().map(|(a, _, _)| a.as_str()).collect();
        let model = throttle
            .key
            .model
            .as_ref()
            .map_or(String::new(), |m| format!(" (model {m})"));
        let mut reason = format!(
            "{upstream}{model} is throttled: {message}; {why}, so {names}, on the same upstream and model, {verb} not called (rule: {PROVIDER_THROTTLED})",
            upstream = throttle.key.upstream,
            message = throttle.message,
            names = names.join(", "),
            verb = if names.len() == 1 { "was" } else { "were" },
        );
        if last_agent.is_some_and(|a| *a != throttle.agent) {
            reason.push_str(&format!("; last failure: {last}"));
        }
        reason
    }

    /// The throttle key of each candidate (`None` for one whose agent shares no
    /// upstream, or has no backend).
    fn throttle_keys(&self) -> Vec<Option<ThrottleKey>> {
        self.candidates
            .iter()
            .map(|agent| {
                let backend = self.exec.agents.get(agent.as_str())?;
                let request = self.request(agent, 1, None);
                Some(ThrottleKey {
                    upstream: backend.upstream(&request)?,
                    model: backend.model(&request),
                })
            })
            .collect()
    }

    /// Takes the next candidate to try out of `left` (indexes into the candidates) and
    /// says whether to call it now. Without throttles, the first left. Once an upstream
    /// throttled the task, candidates on other upstreams come first, then those on a
    /// throttled upstream with another model, then those on a throttled upstream and
    /// model, each in plan order; one of the last is called once its upstream's
    /// `Retry-After` has passed: at once when it has, after waiting for it when the
    /// wait fits the backoff cap and ends before the run's deadline, else not at all.
    fn next_candidate(
        &self,
        left: &mut Vec<usize>,
        keys: &[Option<ThrottleKey>],
        throttles: &[Throttle],
    ) -> (usize, Gate) {
        if throttles.is_empty() {
            return (left.remove(0), Gate::Go);
        }
        let key = |ci: usize| keys.get(ci).and_then(Option::as_ref);
        let rank = |ci: usize| match key(ci) {
            Some(k) if throttles.iter().any(|t| t.key == *k) => 2,
            Some(k) if throttles.iter().any(|t| t.key.upstream == k.upstream) => 1,
            _ => 0,
        };
        let at = left
            .iter()
            .enumerate()
            .min_by_key(|(_, ci)| rank(**ci))
            .map_or(0, |(at, _)| at);
        let ci = left.remove(at);
        let Some(throttle) = key(ci).and_then(|k| throttles.iter().find(|t| t.key == *k)) else {
            return (ci, Gate::Go);
        };
        let Some((retry_after, until)) = throttle.window else {
            // No `Retry-After` to wait out: its own retries back off.
            return (ci, Gate::Go);
        };
        let now = Instant::now();
        let wait = match until {
            Some(until) => until.saturating_duration_since(now),
            None => retry_after,
        };
        if wait.is_zero() {
            return (ci, Gate::Go);
        }
        let cap = self.exec.backoff.cap();
        if retry_after > cap {
            return (
                ci,
                Gate::Skip(format!(
                    "its retry-after {retry_after:?} exceeds the backoff cap {cap:?} (executor.retry.cap)"
                )),
            );
        }
        if let Some(deadline) = self.deadline
            && now.checked_add(wait).is_none_or(|end| end >= deadline)
        {
            return (
                ci,
                Gate::Skip(format!(
                    "waiting out its retry-after {retry_after:?} would pass the run's deadline (executor.run_timeout {:?})",
                    self.exec.config.run_timeout
                )),
            );
        }
        (ci, Gate::Wait(wait))
    }

    /// A server-wide call slot, then money set aside on the run and the day (as much of
    /// `bounds`' ceiling as fits, at least its floor; without bounds, the estimate), in
    /// that order: only calls about to be made hold money, not tasks queued
    /// for a slot. When the budget is short only because of calls in flight
    /// ([`BudgetExceeded::fits_once_settled`]) and `wait` is set, waits until one of
    /// them is settled or released (woken by the ledger, [`CostLedger::released`]; the
    /// slot is given back meanwhile) and tries again; otherwise the refusal is returned.
    /// `None` when the task's deadline passes while it waits for room (a wait for the
    /// slot is not cut: see [`Attempt::queue`]).
    async fn reserve_for_call(
        &self,
        wait: bool,
        bounds: Option<CostBounds>,
    ) -> Option<Result<(Option<OwnedSemaphorePermit>, Reservation), BudgetExceeded>> {
        loop {
            // Taken at once when one is free (no timer armed on the usual path).
            let global = match Arc::clone(&self.exec.global).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(TryAcquireError::Closed) => None,
                // Queued, not worked: off the task's deadline.
                Err(TryAcquireError::NoPermits) => self
                    .queue(Arc::clone(&self.exec.global).acquire_owned())
                    .await
                    .ok(),
            };
            // Taken before the attempt: a call settling between the refusal and the
            // wait below makes it resolve at once instead of being missed.
            let released = self.ledger.released();
            let reserved = match bounds {
                Some(b) => self
                    .ledger
                    .reserve_between(b.floor, self.fair_ceiling(b.ceiling)),
                None => self.ledger.reserve(self.estimate),
            };
            match reserved {
                Ok(reservation) => return Some(Ok((global, reservation))),
                Err(e) if wait && e.fits_once_settled() => {
                    drop(global);
                    // Only a safety net: the ledger wakes us when room may be free.
                    let _ = self
                        .by_deadline(tokio::time::timeout(BUDGET_WAIT_FALLBACK, released))
                        .await?;
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The most a bounded call may be set aside (at least its floor, which
    /// [`CostLedger::reserve_between`] keeps): `ceiling`, but with a run budget no more
    /// than a fair share of what is left of it — neither spent nor reserved — so the
    /// first task does not take the whole budget and fail the others (audit U6-4; see
    /// [`AgentRequest::max_cost`]). The share is this task's planned estimate over the
    /// estimates of the tasks not started yet plus its own, so a task planned on a
    /// dearer model gets more (verification V6: an equal split held a task on the
    /// dearest model to a fourteenth of the budget, and cut its answer short while most
    /// of the budget was left); without estimates, an equal split.
    fn fair_ceiling(&self, ceiling: Usd) -> Usd {
        let Some(left) = self.ledger.remaining() else {
            return ceiling;
        };
        let (waiting, others) = self.pending.get();
        if waiting == 0 {
            return ceiling;
        }
        let own = self.estimate.as_f64();
        let fraction = if own > 0.0 {
            own / (own + others)
        } else {
            1.0 / (waiting as f64 + 1.0)
        };
        let share = Usd::saturating(left.as_f64() * fraction);
        if share < ceiling { share } else { ceiling }
    }

    /// The request for one attempt (no cost limit yet: see [`Attempt::max_cost`]).
    fn request(
        &self,
        agent: &AgentId,
        attempt: u32,
        previous: Option<(String, Option<String>)>,
    ) -> AgentRequest {
        let (previous, previous_quarantined) = previous.unzip();
        AgentRequest {
            run_id: self.run_id.clone(),
            subject: Arc::clone(&self.subject),
            request: Arc::clone(&self.request),
            task: self.task.clone(),
            agent: agent.clone(),
            model: self.model.clone(),
            inputs: self.inputs.clone(),
            attempt,
            previous,
            previous_quarantined: previous_quarantined.flatten(),
            max_cost: None,
        }
    }

    /// The cost limit of an attempt: what was set aside for it, when its agent bounded
    /// its cost and a run or day budget is in force (without one nothing needs
    /// holding back).
    fn max_cost(&self, bounds: Option<CostBounds>, reservation: &Reservation) -> Option<Usd> {
        let budget = self.ledger.budget();
        let limited = budget.per_run.is_some() || budget.per_day.is_some();
        (bounds.is_some() && limited).then(|| reservation.amount())
    }

    /// One agent call, bounded by the task timeout. A call that panics (a bug in the
    /// agent) is an [`AgentError::Panicked`] failure like any other, not a lost task.
    async fn call(
        &self,
        backend: &Arc<dyn super::Agent>,
        request: AgentRequest,
    ) -> Result<AgentOutput, AgentError> {
        let agent = request.agent.clone();
        // Cut at the task's deadline too (see `ExecutorConfig::task_deadline`), in whole
        // milliseconds (the timeout is told in the error).
        let timeout = match self.task_deadline() {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let left =
                    Duration::from_millis(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
                self.exec.config.task_timeout.min(left)
            }
            None => self.exec.config.task_timeout,
        };
        // Counted on the task's meter whatever happens to the call, even if the task is
        // cancelled mid-call (see `CallCharge`).
        self.tokens.call();
        let charge = CallCharge {
            meter: Arc::clone(&self.tokens),
            held: request.max_cost,
            open: true,
        };
        // The agent's future is dropped once it panicked, never polled again, so no
        // state it may have left broken is observed: asserting unwind safety is sound.
        let call = AssertUnwindSafe(backend.execute(request)).catch_unwind();
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => Err(AgentError::Panicked {
                agent,
                message: panic_message(panic.as_ref()),
            }),
            Err(_) => Err(AgentError::Timeout {
                agent,
                after: timeout,
            }),
        };
        charge.done(&result);
        result
    }

    /// Refuses an output over [`ExecutorConfig::max_output_bytes`] (its text and its
    /// follow-ups' descriptions), before anything else reads it; the oversized output
    /// is dropped here.
    fn within_limit(
        &self,
        agent: &AgentId,
        output: AgentOutput,
    ) -> Result<AgentOutput, AgentError> {
        let max = self.exec.config.max_output_bytes;
        if max == 0 {
            return Ok(output);
        }
        let bytes = output.followups.iter().fold(output.text.len(), |n, f| {
            n.saturating_add(f.description.len())
        });
        if bytes <= max {
            return Ok(output);
        }
        warn!(
            run_id = %self.run_id,
            task_id = %self.task.id,
            agent = %agent,
            bytes,
            max,
            "an agent's output is over max_output_bytes; the attempt fails"
        );
        Err(AgentError::OutputTooLarge {
            agent: agent.clone(),
            bytes,
            max,
        })
    }

    /// Screens an output for indirect injection before dependents see it. The output
    /// is returned as written, with the rule that flagged it (`None` when it passed
    /// clean, or screening is off); under the `block` policy a flagged output fails
    /// the attempt. What is passed on is decided by [`pass_on`].
    fn screen(
        &self,
        agent: &AgentId,
        output: AgentOutput,
    ) -> Result<(AgentOutput, Option<String>), AgentError> {
        if !self.exec.config.screen_outputs {
            return Ok((output, None));
        }
        match self
            .exec
            .guard
            .screen(Checkpoint::AgentOutput, &output.text)
        {
            Ok(screened) => {
                let flagged = match screened.action {
                    Action::Passed => None,
                    Action::Sanitized | Action::Audited => Some(screened.scan.top_reason()),
                };
                Ok((output, flagged))
            }
            Err(e) => Err(AgentError::Blocked {
                agent: agent.clone(),
                rule: e.to_string(),
            }),
        }
    }

    /// TUMIX: for refining agents, run rounds until the stop policy says stop; keep the
    /// best-scored answer, with the rule that flagged it, if any. A later round
    /// replaces the best only when it scores strictly higher. A failed round (an error,
    /// an empty or refused answer, an output over the size limit or screened out), one
    /// that answered nothing (empty after trimming) or one the budget refused ends
    /// refinement with the best answer so far. Every round that answered adds its cost
    /// and tokens. Each round is given the previous round's answer as [`pass_on`]
    /// passes outputs on (quarantined when flagged). Whatever ends refinement, the last
    /// `task_refined` says why in its `stop`. Rounds go through the agent's circuit
    /// breaker like any call (audit R8 H7): an open breaker ends refinement, and a
    /// round's outcome counts on it.
    async fn refine(
        &self,
        backend: &Arc<dyn super::Agent>,
        breaker: &Arc<SharedBreaker>,
        agent: &AgentId,
        first: (AgentOutput, Option<String>),
        attempts: &mut u32,
        cost: &mut Usd,
    ) -> (AgentOutput, Option<String>) {
        if self.refinement == Refinement::Off || !self.exec.config.refine.agents.contains(agent) {
            return first;
        }
        let max_rounds = self.exec.config.refine.stop.max_rounds.max(1);
        let mut rounds = vec![RefinementRound {
            score: self.exec.judge.score(&self.task, &first.0.text, None),
            fingerprint: fingerprint(&first.0.text),
        }];
        let mut best_score = rounds[0].score;
        let mut previous = pass_on(&self.exec.guard, &first.0.text, first.1.as_deref());
        let mut previous_text = first.0.text.clone();
        let mut best = first;
        loop {
            let decision = match self.refinement {
                Refinement::AllRounds if rounds.len() >= max_rounds => StopDecision::Stop {
                    reason: format!("reached max_rounds {max_rounds} (early stopping off)"),
                },
                Refinement::AllRounds => StopDecision::Continue,
                _ => self.exec.stop.decide(&rounds),
            };
            let stop = match &decision {
                StopDecision::Stop { reason } => Some(reason.clone()),
                StopDecision::Continue => None,
            };
            self.emit(RunEvent::TaskRefined {
                task_id: self.task.id.clone(),
                round: u32::try_from(rounds.len()).unwrap_or(u32::MAX),
                score: rounds.last().map_or(0.0, |r| r.score),
                stop: stop.clone(),
            })
            .await;
            if stop.is_some() {
                return best;
            }
            // Another round is optional: no waiting for room in the budget, nor past
            // the task's deadline.
            let mut request = self.request(agent, *attempts + 1, Some(previous.clone()));
            let bounds = backend.cost_bounds(&request);
            let round_number = u32::try_from(rounds.len() + 1).unwrap_or(u32::MAX);
            if self.deadline_passed() {
                self.end_refinement(
                    round_number,
                    format!(
                        "round {round_number} was not made: the task's deadline passed (executor.task_deadline {}, rule: {TASK_DEADLINE})",
                        short(self.exec.config.task_deadline)
                    ),
                )
                .await;
                return best;
            }
            let (global, reservation) = match self.reserve_for_call(false, bounds).await {
                Some(Ok(r)) => r,
                None => {
                    self.end_refinement(
                        round_number,
                        format!(
                            "round {round_number} was not made: the task's deadline passed (executor.task_deadline {}, rule: {TASK_DEADLINE})",
                            short(self.exec.config.task_deadline)
                        ),
                    )
                    .await;
                    return best;
                }
                Some(Err(e)) => {
                    // No room for another round: keep the best answer so far.
                    self.emit(budget_event(&self.task.id, &e)).await;
                    self.end_refinement(
                        round_number,
                        format!("round {round_number} was not made: {e}"),
                    )
                    .await;
                    return best;
                }
            };
            request.max_cost = self.max_cost(bounds, &reservation);
            let permit = match breaker.try_acquire_owned(Instant::now()) {
                Ok(p) => p,
                Err(e) => {
                    // The reservation and the call slot are given back (dropped).
                    self.end_refinement(
                        round_number,
                        format!("round {round_number} was not made: {}", breaker_message(&e)),
                    )
                    .await;
                    return best;
                }
            };
            let money = CallMoney::new(reservation, request.max_cost.is_some());
            *attempts += 1;
            let round = self.call(backend, request).await;
            drop(global);
            let cut = round.is_err() && self.deadline_passed();
            match &round {
                Ok(_) => permit.success(Instant::now()),
                Err(e) if e.trips_breaker() && !cut => permit.failure(Instant::now()),
                Err(_) => drop(permit),
            }
            // A failed round ends refinement with the best answer so far; what it is
            // charged is as in `run` (see `CallMoney`).
            let out = match round {
                Ok(out) => out,
                Err(e) => {
                    *cost += money.failed(&e);
                    self.tokens.add_unusable(&e);
                    let why = if cut {
                        // Cut short by the task's deadline, not by the agent's timeout
                        // (verification V8: "timed out after 407ms").
                        format!(
                            "round {round_number} was cut at the task's deadline (executor.task_deadline {}, rule: {TASK_DEADLINE}): {e}",
                            short(self.exec.config.task_deadline)
                        )
                    } else {
                        format!("round {round_number} failed: {e}")
                    };
                    self.end_refinement(round_number, why).await;
                    return best;
                }
            };
            *cost += out.cost;
            money.settle(out.cost);
            self.tokens.add(&out);
            self.overspent().await;
            let (out, flagged) = match self
                .within_limit(agent, out)
                .and_then(|o| self.screen(agent, o))
            {
                Ok(o) => o,
                Err(e) => {
                    self.end_refinement(round_number, format!("round {round_number} failed: {e}"))
                        .await;
                    return best;
                }
            };
            if out.text.trim().is_empty() {
                // Nothing to judge or to keep: the best answer so far stands.
                self.emit(RunEvent::TaskRefined {
                    task_id: self.task.id.clone(),
                    round: round_number,
                    score: 0.0,
                    stop: Some(format!(
                        "round {round_number} answered nothing (rule: empty_answer); keeping the best answer"
                    )),
                })
                .await;
                return best;
            }
            let score = self
                .exec
                .judge
                .score(&self.task, &out.text, Some(&previous_text));
            rounds.push(RefinementRound {
                score,
                fingerprint: fingerprint(&out.text),
            });
            previous = pass_on(&self.exec.guard, &out.text, flagged.as_deref());
            previous_text = out.text.clone();
            if score > best_score {
                best_score = score;
                best = (out, flagged);
            }
        }
    }

    /// The `task_refined` of a refinement round that failed or was not made, with
    /// score 0: refinement stops here, `why`, and the best answer so far is kept.
    async fn end_refinement(&self, round: u32, why: String) {
        self.emit(RunEvent::TaskRefined {
            task_id: self.task.id.clone(),
            round,
            score: 0.0,
            stop: Some(format!("{why}; keeping the best answer so far")),
        })
        .await;
    }
}

/// An output as it is passed on to another agent (a dependent's [`TaskInput`], a
/// refinement round's previous answer): quarantined ([`genesis_security::quarantine`],
/// returned with the rule) when the screen flagged it for `flagged` and the
/// `agent_output` policy is `sanitize`; else as written.
fn pass_on(guard: &Guard, text: &str, flagged: Option<&str>) -> (String, Option<String>) {
    match flagged {
        Some(rule)
            if guard.policies().for_checkpoint(Checkpoint::AgentOutput) == Policy::Sanitize =>
        {
            (
                genesis_security::quarantine(text, rule),
                Some(rule.to_owned()),
            )
        }
        _ => (text.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations in messages are rounded (audit R8 H5: `next probe in 9.817507338s`).
    #[test]
    fn durations_in_messages_are_rounded() {
        for (d, want) in [
            (Duration::from_nanos(9_817_507_338), "9.8s"),
            (Duration::from_millis(9_960), "10s"),
            (Duration::from_millis(2_000), "2s"),
            (Duration::from_millis(350), "350ms"),
            (Duration::from_millis(120_400), "120s"),
        ] {
            assert_eq!(short(d), want, "{d:?}");
        }
    }

    /// A long failure keeps its start and its end (where the rule or key is named),
    /// within the bound; a short one is kept whole.
    #[test]
    fn long_failures_are_cut_in_the_middle() {
        assert_eq!(
            brief("agent qa rejected the task"),
            "agent qa rejected the task"
        );
        let long = format!("agent qa: {} (executor.retry.cap)", "é".repeat(1_000));
        let cut = brief(&long);
        assert_eq!(cut.chars().count(), MAX_FAILURE_CHARS);
        assert!(cut.starts_with("agent qa: é"), "{cut}");
        assert!(cut.ends_with("(executor.retry.cap)"), "{cut}");
        assert!(cut.contains('…'), "{cut}");
        // Between words where there are some (audit G10 D6: `at li…1 column 19`).
        let words = format!(
            "{} (rule: agent_answer)",
            "parsing a string at line 1 ".repeat(20)
        );
        let cut = brief(&words);
        assert!(cut.chars().count() <= MAX_FAILURE_CHARS, "{cut}");
        let (head, end) = cut.split_once(" … ").unwrap();
        let whole = |w: &str| "parsing a string at line 1 (rule: agent_answer)".contains(w);
        assert!(head.split(' ').chain(end.split(' ')).all(whole), "{cut}");
        assert!(end.ends_with("(rule: agent_answer)"), "{cut}");
    }

    /// A plan with follow-ups as a run journals them: `(proposer, update, tasks)`.
    fn plan_with(followups: &[(&str, usize, usize)]) -> Plan {
        let mut plan = crate::Orchestrator::builder()
            .build()
            .unwrap()
            .plan_sync("Fix the crash when uploading large files")
            .unwrap();
        let template = plan.tasks[0].clone();
        for &(after, update, n) in followups {
            for k in 1..=n {
                let mut t = template.clone();
                t.id = followup_id(&TaskId::new(after), update, k);
                t.depends_on = vec![TaskId::new(after)];
                plan.tasks.push(t);
            }
        }
        plan
    }

    #[test]
    fn follow_up_updates_are_counted_back_from_a_stored_plan() {
        assert_eq!(updates_in(&plan_with(&[])), 0);
        // Two tasks in one update count once; the proposer's id may hold dots.
        assert_eq!(updates_in(&plan_with(&[("t1.2", 1, 2)])), 1);
        assert_eq!(
            updates_in(&plan_with(&[("t1", 1, 1), ("t1.2", 2, 3), ("t2", 3, 1)])),
            3
        );
        // Runs resumed before the count was restored numbered from 1 again: the
        // proposer tells those updates apart.
        assert_eq!(updates_in(&plan_with(&[("t1", 1, 1), ("t2", 1, 1)])), 2);
    }

    #[test]
    fn tasks_that_only_look_like_follow_ups_are_not_counted() {
        let mut plan = plan_with(&[]);
        let mut t = plan.tasks[0].clone();
        // Not waiting for the task its id names.
        t.id = TaskId::new("t1.f1_1");
        t.depends_on = Vec::new();
        plan.tasks.push(t.clone());
        // Not numbered.
        t.id = TaskId::new("t1.fix_it");
        t.depends_on = vec![TaskId::new("t1")];
        plan.tasks.push(t);
        assert_eq!(updates_in(&plan), 0);
    }

    /// Records when (on tokio's clock) each call started, answers after `takes`, and
    /// costs a tenth of the $0.60 estimate.
    struct Timed {
        takes: Duration,
        started: Mutex<Vec<Instant>>,
    }

    #[async_trait::async_trait]
    impl super::super::Agent for Timed {
        async fn execute(&self, request: AgentRequest) -> Result<AgentOutput, AgentError> {
            self.started
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Instant::now());
            tokio::time::sleep(self.takes).await;
            Ok(AgentOutput {
                text: format!("done {}", request.task.id),
                cost: Usd::new(0.06).unwrap(),
                ..AgentOutput::default()
            })
        }
    }

    /// A task that fits once the call in flight settles starts its call the moment that
    /// call settles: the settlement wakes it. Two $0.60 estimates against $1.00: the
    /// second waits for the first call, which settles after 730 ms (at $0.06). Polling
    /// (5 ms doubling to 100 ms) would start it at the first poll after that, 755 ms.
    #[tokio::test(start_paused = true)]
    async fn a_task_waiting_for_room_in_the_budget_is_woken_when_a_call_settles() {
        let takes = Duration::from_millis(730);
        let agent = Arc::new(Timed {
            takes,
            started: Mutex::new(Vec::new()),
        });
        let genesis = crate::Orchestrator::builder()
            .agents(
                AgentSet::new().with_fallback(Arc::clone(&agent) as Arc<dyn super::super::Agent>),
            )
            .build()
            .unwrap();
        let mut dag = TaskDag::new(genesis_htdag::Limits::default());
        for k in 1..=2 {
            dag.add_task(
                Task::new(
                    TaskId::new(format!("t{k}")),
                    genesis_core::TaskKind::Implement,
                    format!("Write the invoice endpoint number {k}"),
                ),
                None,
            )
            .unwrap();
        }
        let mut plan = genesis
            .plan_dag(
                "Write the invoice endpoints",
                &dag,
                &crate::PlanOptions::default(),
            )
            .unwrap();
        for t in &mut plan.tasks {
            t.model.as_mut().unwrap().estimated_cost = Usd::new(0.60).unwrap();
        }
        let options = crate::RunOptions {
            budget: Some(Usd::new(1.0).unwrap()),
            ..crate::RunOptions::default()
        };
        let t0 = Instant::now();
        let result = genesis.execute(plan, options).unwrap().wait().await;
        assert_eq!(result.status, RunStatus::Succeeded, "{:?}", result.tasks);
        let started: Vec<Duration> = agent
            .started
            .lock()
            .unwrap()
            .iter()
            .map(|at| at.duration_since(t0))
            .collect();
        assert_eq!(
            started,
            [Duration::ZERO, takes],
            "the second call starts when the first settles"
        );
        assert!(
            (result.cost.as_f64() - 0.12).abs() < 1e-9,
            "{}",
            result.cost
        );
    }

    /// Starts its call and never answers; bounds its cost as an LLM agent does
    /// (`bounded`) or not.
    struct Hanging {
        bounded: bool,
        started: tokio::sync::Notify,
    }

    #[async_trait::async_trait]
    impl super::super::Agent for Hanging {
        async fn execute(&self, _: AgentRequest) -> Result<AgentOutput, AgentError> {
            self.started.notify_one();
            std::future::pending().await
        }

        fn cost_bounds(&self, _: &AgentRequest) -> Option<super::super::CostBounds> {
            self.bounded.then(|| super::super::CostBounds {
                floor: Usd::new(0.01).unwrap(),
                ceiling: Usd::new(0.05).unwrap(),
            })
        }
    }

    /// Cancelling a run drops its calls in flight. A bounded call was sent and may be
    /// billed up to what was set aside for it: the run is charged that, as for a
    /// timeout, so the budget still holds. An unbounded call gives its estimate back.
    #[tokio::test]
    async fn a_cancelled_run_is_charged_for_its_bounded_call_in_flight() {
        for (bounded, charged) in [(true, 0.05), (false, 0.0)] {
            let agent = Arc::new(Hanging {
                bounded,
                started: tokio::sync::Notify::new(),
            });
            let genesis = crate::Orchestrator::builder()
                .agents(
                    AgentSet::new()
                        .with_fallback(Arc::clone(&agent) as Arc<dyn super::super::Agent>),
                )
                .build()
                .unwrap();
            let mut dag = TaskDag::new(genesis_htdag::Limits::default());
            dag.add_task(
                Task::new(
                    TaskId::new("t1"),
                    genesis_core::TaskKind::Implement,
                    "Write the invoice endpoint",
                ),
                None,
            )
            .unwrap();
            let plan = genesis
                .plan_dag(
                    "Write the invoice endpoint",
                    &dag,
                    &crate::PlanOptions::default(),
                )
                .unwrap();
            let options = crate::RunOptions {
                budget: Some(Usd::new(1.0).unwrap()),
                ..crate::RunOptions::default()
            };
            let handle = genesis.execute(plan, options).unwrap();
            agent.started.notified().await;
            handle.cancel();
            let result = handle.wait().await;
            assert_eq!(result.status, RunStatus::Cancelled, "bounded: {bounded}");
            assert!(
                (result.cost.as_f64() - charged).abs() < 1e-9,
                "bounded: {bounded}, cost {}",
                result.cost
            );
        }
    }

    /// An agent whose call panics (a bug in a custom agent); with `in_bounds`, it
    /// panics in [`Agent::cost_bounds`](super::super::Agent::cost_bounds) instead,
    /// outside the call.
    #[derive(Default)]
    struct Panics {
        in_bounds: bool,
        calls: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl super::super::Agent for Panics {
        async fn execute(&self, _: AgentRequest) -> Result<AgentOutput, AgentError> {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            panic!("agent bug")
        }

        fn cost_bounds(&self, _: &AgentRequest) -> Option<super::super::CostBounds> {
            assert!(!self.in_bounds, "bounds bug");
            None
        }
    }

    /// Fails every call without retries.
    struct Fails;

    #[async_trait::async_trait]
    impl super::super::Agent for Fails {
        async fn execute(&self, request: AgentRequest) -> Result<AgentOutput, AgentError> {
            Err(AgentError::Rejected {
                agent: request.agent,
                message: "no".into(),
            })
        }
    }

    /// Keeps every write (one `record_all` group, or one `record`) in memory, in order.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<Vec<RunEvent>>>);

    impl Recorded {
        /// Every event, in order.
        fn events(&self) -> Vec<RunEvent> {
            self.0.lock().unwrap().concat()
        }

        /// The write that holds `wanted`.
        fn write_with(&self, wanted: impl Fn(&RunEvent) -> bool) -> Vec<RunEvent> {
            let writes = self.0.lock().unwrap();
            writes
                .iter()
                .find(|w| w.iter().any(&wanted))
                .cloned()
                .unwrap_or_default()
        }
    }

    impl RunJournal for Recorded {
        fn record(
            &self,
            _: &RunId,
            event: &RunEvent,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            self.0.lock().unwrap().push(vec![event.clone()]);
            Ok(())
        }

        fn record_all(
            &self,
            _: &RunId,
            events: &[RunEvent],
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            self.0.lock().unwrap().push(events.to_vec());
            Ok(())
        }

        fn blocks(&self) -> bool {
            false
        }
    }

    /// An orchestrator over `agent` (for every agent id) and its plan where `t2`
    /// waits for `t1`.
    fn two_step_plan(
        agent: Arc<dyn super::super::Agent>,
        config: ExecutorConfig,
    ) -> (crate::Orchestrator, Plan) {
        let genesis = crate::Orchestrator::builder()
            .agents(AgentSet::new().with_fallback(agent))
            .executor_config(config)
            .build()
            .unwrap();
        let mut dag = TaskDag::new(genesis_htdag::Limits::default());
        for (id, what) in [
            ("t1", "Write the invoice endpoint"),
            ("t2", "Test the invoice endpoint"),
        ] {
            dag.add_task(
                Task::new(TaskId::new(id), genesis_core::TaskKind::Implement, what),
                None,
            )
            .unwrap();
        }
        dag.add_dependency(&TaskId::new("t1"), &TaskId::new("t2"))
            .unwrap();
        let plan = genesis
            .plan_dag(
                "Write and test the invoice endpoint",
                &dag,
                &crate::PlanOptions::default(),
            )
            .unwrap();
        (genesis, plan)
    }

    /// Runs the two-step plan on `agent` with a [`Recorded`] journal.
    async fn run_two_steps(
        agent: Arc<dyn super::super::Agent>,
        config: ExecutorConfig,
    ) -> (crate::Orchestrator, RunResult, Arc<Recorded>) {
        let (genesis, plan) = two_step_plan(agent, config);
        let journal = Arc::new(Recorded::default());
        let options = crate::RunOptions {
            journal: Some(Arc::clone(&journal) as Arc<dyn RunJournal>),
            ..crate::RunOptions::default()
        };
        let result = genesis.execute(plan, options).unwrap().wait().await;
        (genesis, result, journal)
    }

    /// `(task, status, error)` of each task of `result`.
    fn outcomes(result: &RunResult) -> Vec<(String, TaskStatus, String)> {
        result
            .tasks
            .iter()
            .map(|t| {
                let error = t.error.clone().unwrap_or_default();
                (t.task_id.to_string(), t.status, error)
            })
            .collect()
    }

    /// A panic in an agent's call is a failed call: the task moves on to its
    /// alternatives and then fails, naming the panic, and its dependents are skipped.
    /// Nothing is "run cancelled" in a run nobody cancelled (the panic used to kill the
    /// attempt, leave its task running forever and end both tasks as cancelled).
    #[tokio::test]
    async fn a_panicking_agent_fails_its_task_and_its_dependents_are_skipped() {
        let agent = Arc::new(Panics::default());
        let (genesis, plan) = two_step_plan(
            Arc::clone(&agent) as Arc<dyn super::super::Agent>,
            ExecutorConfig::default(),
        );
        let mut candidates: Vec<AgentId> = plan.tasks[0].agent.iter().cloned().collect();
        for alt in &plan.tasks[0].route.alternatives {
            if !candidates.contains(&alt.agent) {
                candidates.push(alt.agent.clone());
            }
        }
        let journal = Arc::new(Recorded::default());
        let options = crate::RunOptions {
            journal: Some(Arc::clone(&journal) as Arc<dyn RunJournal>),
            ..crate::RunOptions::default()
        };
        let result = genesis.execute(plan, options).unwrap().wait().await;
        assert_eq!(result.status, RunStatus::Failed);
        let outcomes = outcomes(&result);
        assert_eq!(outcomes[0].1, TaskStatus::Failed, "{outcomes:?}");
        assert!(
            outcomes[0].2.contains("panicked: agent bug"),
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes[1],
            (
                "t2".to_owned(),
                TaskStatus::Skipped,
                "prerequisite t1 failed".to_owned()
            )
        );
        // Not retried on the same agent, re-routed: one call per candidate.
        assert_eq!(
            agent.calls.load(std::sync::atomic::Ordering::Relaxed),
            candidates.len()
        );
        assert_eq!(result.tasks[0].attempts as usize, candidates.len());
        let events = journal.events();
        assert!(
            events.iter().any(|e| matches!(e,
                RunEvent::TaskFailed { task_id, reason, .. }
                    if task_id.as_str() == "t1" && reason.contains("panicked: agent bug"))),
            "{events:?}"
        );
        assert!(
            !events.iter().any(|e| matches!(e,
                RunEvent::TaskSkipped { reason, .. } if reason == "run cancelled")),
            "{events:?}"
        );
    }

    /// A panicking call counts against the agent's breaker like a transient failure,
    /// so an agent that always panics is soon avoided (its permit used to be dropped
    /// unreported, as if the call had never been made).
    #[tokio::test]
    async fn an_agent_that_panics_trips_its_breaker() {
        let mut config = ExecutorConfig::default();
        config.breaker.failure_threshold = 1;
        let (genesis, result, _) = run_two_steps(Arc::new(Panics::default()), config).await;
        let agent = result.tasks[0].agent.clone().unwrap();
        let breaker = genesis.executor().breakers().get(&format!("agent:{agent}"));
        assert_eq!(
            breaker.state(),
            genesis_resilience::BreakerState::Open,
            "{:?}",
            outcomes(&result)
        );
    }

    /// A panic in the attempt outside the agent's call (here in the agent's
    /// `cost_bounds`) still fails the task with the panic as its reason, and skips
    /// its dependents: the attempt's task is found from the dead attempt's id.
    #[tokio::test]
    async fn a_task_whose_attempt_dies_fails_and_its_dependents_are_skipped() {
        let agent = Panics {
            in_bounds: true,
            ..Panics::default()
        };
        let (_genesis, result, _) = run_two_steps(Arc::new(agent), ExecutorConfig::default()).await;
        assert_eq!(result.status, RunStatus::Failed);
        let outcomes = outcomes(&result);
        assert_eq!(outcomes[0].1, TaskStatus::Failed, "{outcomes:?}");
        assert!(
            outcomes[0].2.contains("its attempt panicked: bounds bug"),
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes[1],
            (
                "t2".to_owned(),
                TaskStatus::Skipped,
                "prerequisite t1 failed".to_owned()
            )
        );
    }

    /// Feedback that panics (a bug in the learner).
    struct PanickingLearner;

    impl Learner for PanickingLearner {
        fn learn(&self, _: &RunId, _: Vec<(Task, AgentTry)>) {
            panic!("learner bug")
        }
    }

    /// Routes no follow-ups (the plans here propose none).
    struct NoFollowUps;

    impl Replanner for NoFollowUps {
        fn plan_tasks(&self, _: &TaskId, _: &[TaskNode]) -> Vec<PlannedTask> {
            Vec::new()
        }
    }

    /// A panic in the run's own task (here the learner's, after both tasks finished)
    /// does not lose the run: the result keeps every task's report and the money
    /// spent, and `run_finished` is journaled and broadcast. It used to come back as
    /// failed with no tasks and $0, and no `run_finished` was sent.
    #[tokio::test]
    async fn a_run_whose_task_panics_keeps_its_reports_and_money_and_finishes() {
        let agent = Arc::new(Timed {
            takes: Duration::ZERO,
            started: Mutex::new(Vec::new()),
        });
        let (genesis, plan) = two_step_plan(agent, ExecutorConfig::default());
        let dag = plan.to_dag(&genesis_htdag::Limits::default()).unwrap();
        let journal = Arc::new(Recorded::default());
        let spec = RunSpec {
            run_id: RunId::new("r-panics"),
            subject: Arc::from("tests"),
            refinement: Refinement::Off,
            plan,
            dag,
            ledger: CostLedger::default(),
            journal: Arc::clone(&journal) as Arc<dyn RunJournal>,
            replanner: Arc::new(NoFollowUps),
            learner: Some(Arc::new(PanickingLearner)),
            resumed: Vec::new(),
            correlation_id: None,
        };
        let handle = genesis.executor().start(spec, HashMap::new());
        let mut events = handle.subscribe();
        let result = handle.wait().await;
        assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
        assert_eq!(
            outcomes(&result),
            [
                ("t1".to_owned(), TaskStatus::Succeeded, String::new()),
                ("t2".to_owned(), TaskStatus::Succeeded, String::new())
            ]
        );
        assert!(
            (result.cost.as_f64() - 0.12).abs() < 1e-9,
            "{}",
            result.cost
        );
        let finished = |e: &RunEvent| {
            matches!(e, RunEvent::RunFinished { status: RunStatus::Succeeded, cost, .. }
                if (cost.as_f64() - 0.12).abs() < 1e-9)
        };
        assert!(
            journal.events().iter().any(finished),
            "{:?}",
            journal.events()
        );
        let mut broadcast = Vec::new();
        while let Ok(e) = events.try_recv() {
            broadcast.push(e);
        }
        assert!(broadcast.iter().any(finished), "{broadcast:?}");
    }

    /// A failure and the skips it causes are journaled in one write: a crash between
    /// two writes used to leave the dependents pending behind a failed task.
    #[tokio::test]
    async fn a_failure_is_journaled_with_the_skips_it_causes() {
        let (_genesis, result, journal) =
            run_two_steps(Arc::new(Fails), ExecutorConfig::default()).await;
        assert_eq!(result.status, RunStatus::Failed);
        let write = journal.write_with(|e| matches!(e, RunEvent::TaskFailed { .. }));
        let kinds: Vec<String> = write
            .iter()
            .map(|e| match e {
                RunEvent::TaskFailed { task_id, .. } => format!("failed {task_id}"),
                RunEvent::TaskSkipped {
                    task_id, reason, ..
                } => {
                    format!("skipped {task_id}: {reason}")
                }
                e => e.kind().to_owned(),
            })
            .collect();
        assert_eq!(kinds, ["failed t1", "skipped t2: prerequisite t1 failed"]);
    }

    /// A run resumed from a journal that holds a failure without the skips it caused
    /// (written before they were one write) skips the dependents at the start, with
    /// the usual reason, and journals the skips; they used to wait for ever and end
    /// as cancelled in a run nobody cancelled.
    #[tokio::test]
    async fn a_resumed_run_skips_the_dependents_of_a_task_that_failed_before_the_restart() {
        let (genesis, plan) = two_step_plan(Arc::new(Fails), ExecutorConfig::default());
        let resumed = vec![TaskReport {
            task_id: TaskId::new("t1"),
            status: TaskStatus::Failed,
            agent: None,
            model: None,
            attempts: 1,
            output: None,
            flagged: None,
            truncated: false,
            error: Some("boom".into()),
            cost: Usd::ZERO,
            input_tokens: 0,
            output_tokens: 0,
        }];
        let journal = Arc::new(Recorded::default());
        let options = crate::RunOptions {
            resumed,
            journal: Some(Arc::clone(&journal) as Arc<dyn RunJournal>),
            ..crate::RunOptions::default()
        };
        let result = genesis.execute(plan, options).unwrap().wait().await;
        assert_eq!(result.status, RunStatus::Failed);
        assert_eq!(
            outcomes(&result),
            [
                ("t1".to_owned(), TaskStatus::Failed, "boom".to_owned()),
                (
                    "t2".to_owned(),
                    TaskStatus::Skipped,
                    "prerequisite t1 failed".to_owned()
                )
            ]
        );
        let skipped = journal.events().into_iter().find_map(|e| match e {
            RunEvent::TaskSkipped {
                task_id, reason, ..
            } => Some((task_id.to_string(), reason)),
            _ => None,
        });
        assert_eq!(
            skipped,
            Some(("t2".to_owned(), "prerequisite t1 failed".to_owned()))
        );
    }
}
