//! Token totals end to end: every task's tokens count, whatever its end (succeeded,
//! failed after its agents answered, timed out or cancelled mid-refinement), in the
//! task's report, its `task_failed` / `task_skipped` event, the run's `run_finished`
//! and result, the store, and a run resumed after a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use genesis::core::{AgentId, TaskId, Usd};
use genesis::run::{
    Agent, AgentError, AgentOutput, AgentRequest, AgentSet, ExecutorConfig, RunEvent, RunResult,
    RunStatus, TaskStatus,
};
use genesis::store::{RunStore, SqliteStore};
use genesis::{Orchestrator, Plan, RunOptions};
use tokio::sync::{Notify, broadcast};

use crate::{Dying, journaled, resuming, stored};

const REQUEST: &str = "Fix the crash when uploading large files";

/// Tokens every call of the test agents reports.
const IN: u64 = 100;
const OUT: u64 = 20;

/// `max_output_bytes` of the runs here: [`FailsAfterUsage`]'s long answer is over it.
const MAX_OUTPUT: usize = 64;

/// Answers every call, reporting [`IN`] / [`OUT`] tokens; for the task `fails` it
/// answers more than [`MAX_OUTPUT`] bytes, so that task fails (on every candidate
/// agent) after its agents reported usage.
struct FailsAfterUsage {
    fails: TaskId,
}

#[async_trait]
impl Agent for FailsAfterUsage {
    async fn execute(&self, request: AgentRequest) -> Result<AgentOutput, AgentError> {
        let text = if request.task.id == self.fails {
            "x".repeat(MAX_OUTPUT * 2)
        } else {
            format!("done {}", request.task.id)
        };
        Ok(AgentOutput {
            text,
            cost: Usd::new(0.001).unwrap(),
            input_tokens: IN,
            output_tokens: OUT,
            ..AgentOutput::default()
        })
    }
}

/// Answers a task's first round (reporting [`IN`] / [`OUT`] tokens) and never answers
/// a refinement round; counts the first rounds it answered, and notifies when a
/// refinement round starts.
#[derive(Default)]
struct AnswersThenHangs {
    answered: AtomicUsize,
    notify: Notify,
}

#[async_trait]
impl Agent for AnswersThenHangs {
    async fn execute(&self, request: AgentRequest) -> Result<AgentOutput, AgentError> {
        if request.previous.is_some() {
            self.notify.notify_one();
            std::future::pending::<()>().await;
        }
        // Counted in the poll that answers, as the executor counts the tokens: an
        // abort between polls cannot separate the two.
        self.answered.fetch_add(1, Ordering::SeqCst);
        Ok(AgentOutput {
            text: format!("first answer of {}", request.task.id),
            cost: Usd::ZERO,
            input_tokens: IN,
            output_tokens: OUT,
            ..AgentOutput::default()
        })
    }
}

/// The plan of [`REQUEST`] and its first root task (it has dependents).
fn plan_and_root() -> (Plan, TaskId) {
    let plan = crate::support::plan_of(REQUEST);
    let root = plan
        .tasks
        .iter()
        .find(|t| t.depends_on.is_empty() && t.parent.is_none())
        .unwrap()
        .id
        .clone();
    (plan, root)
}

/// An orchestrator whose every agent is `agent`, with `config`.
fn orchestrator(agent: Arc<dyn Agent>, config: ExecutorConfig) -> Orchestrator {
    Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(agent))
        .executor_config(config)
        .build()
        .unwrap()
}

fn small_outputs() -> ExecutorConfig {
    ExecutorConfig {
        max_output_bytes: MAX_OUTPUT,
        ..ExecutorConfig::default()
    }
}

/// (input, output) summed over the result's task reports.
fn summed(result: &RunResult) -> (u64, u64) {
    result.tasks.iter().fold((0, 0), |(i, o), t| {
        (i + t.input_tokens, o + t.output_tokens)
    })
}

/// Every event received so far on `events`.
fn drain(events: &mut broadcast::Receiver<RunEvent>) -> Vec<RunEvent> {
    std::iter::from_fn(|| events.try_recv().ok()).collect()
}

/// The token totals of the `run_finished` in `events`.
fn finished_totals(events: &[RunEvent]) -> (u64, u64) {
    match events.iter().rev().find(|e| e.kind() == "run_finished") {
        Some(RunEvent::RunFinished {
            input_tokens,
            output_tokens,
            ..
        }) => (*input_tokens, *output_tokens),
        other => panic!("no run_finished: {other:?} in {events:?}"),
    }
}

/// A task whose agents answered but whose answers were refused (over the size limit)
/// fails keeping their tokens, on its report and its `task_failed`; its dependents are
/// skipped with none; and `run_finished` carries the run's totals over every task,
/// equal to the result's (`run_finished` had no token totals: a client of the event
/// stream had to add up `task_succeeded` events and missed the failed task's).
#[tokio::test]
async fn run_finished_carries_the_totals_of_every_task_failed_ones_included() {
    let (plan, root) = plan_and_root();
    let agent = Arc::new(FailsAfterUsage {
        fails: root.clone(),
    });
    let genesis = orchestrator(agent, small_outputs());
    let mut run = genesis.execute(plan, RunOptions::default()).unwrap();
    let mut events = run.events();
    let result = tokio::time::timeout(Duration::from_secs(30), run.wait())
        .await
        .expect("the run did not finish within 30 s");
    assert_eq!(result.status, RunStatus::Failed);
    let failed = result.tasks.iter().find(|t| t.task_id == root).unwrap();
    assert_eq!(failed.status, TaskStatus::Failed, "{failed:?}");
    assert!(failed.attempts >= 1, "{failed:?}");
    let attempts = u64::from(failed.attempts);
    assert_eq!(
        (failed.input_tokens, failed.output_tokens),
        (IN * attempts, OUT * attempts),
        "{failed:?}"
    );
    assert!(
        result.tasks.iter().any(|t| t.status == TaskStatus::Skipped),
        "the failed task's dependents were not skipped: {:?}",
        result.tasks
    );
    let events = drain(&mut events);
    let mut from_task_events = (0, 0);
    for e in &events {
        let (task_id, i, o) = match e {
            RunEvent::TaskSucceeded {
                task_id,
                input_tokens,
                output_tokens,
                ..
            }
            | RunEvent::TaskFailed {
                task_id,
                input_tokens,
                output_tokens,
                ..
            }
            | RunEvent::TaskSkipped {
                task_id,
                input_tokens,
                output_tokens,
                ..
            } => (task_id, *input_tokens, *output_tokens),
            _ => continue,
        };
        let report = result.tasks.iter().find(|t| t.task_id == *task_id).unwrap();
        assert_eq!((i, o), (report.input_tokens, report.output_tokens), "{e:?}");
        from_task_events = (from_task_events.0 + i, from_task_events.1 + o);
    }
    let totals = summed(&result);
    assert!(
        totals.0 > failed.input_tokens,
        "only the failed task counted"
    );
    assert_eq!((result.input_tokens, result.output_tokens), totals);
    assert_eq!(from_task_events, totals);
    assert_eq!(finished_totals(&events), totals);
    // In the event's JSON, and absent from `run_finished` journaled before: 0.
    let json = serde_json::to_value(events.last().unwrap()).unwrap();
    assert_eq!(json["input_tokens"], totals.0, "{json}");
    let old: RunEvent =
        serde_json::from_str(r#"{"type": "run_finished", "status": "failed", "cost": 0.5}"#)
            .unwrap();
    assert!(matches!(
        old,
        RunEvent::RunFinished {
            input_tokens: 0,
            output_tokens: 0,
            ..
        }
    ));
    for old in [
        r#"{"type": "task_failed", "task_id": "t1", "reason": "boom", "attempts": 2}"#,
        r#"{"type": "task_skipped", "task_id": "t2", "reason": "run cancelled"}"#,
    ] {
        let e: RunEvent = serde_json::from_str(old).unwrap();
        assert!(
            matches!(
                e,
                RunEvent::TaskFailed {
                    input_tokens: 0,
                    output_tokens: 0,
                    ..
                } | RunEvent::TaskSkipped {
                    input_tokens: 0,
                    output_tokens: 0,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

/// How the run in [`a_task_stopped_mid_refinement_keeps_the_tokens_of_its_rounds`] ends.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Deadline,
    Cancel,
}

/// A task whose first round answered and whose refinement round was in flight when
/// the run's deadline passed (or the run was cancelled) keeps the first round's
/// tokens: on its report, its `task_failed` (`task_skipped` "run cancelled") and in
/// `run_finished`. They used to be dropped with the attempt: 0.
#[tokio::test(start_paused = true)]
async fn a_task_stopped_mid_refinement_keeps_the_tokens_of_its_rounds() {
    for stop in [Stop::Deadline, Stop::Cancel] {
        let (plan, _) = plan_and_root();
        let agent = Arc::new(AnswersThenHangs::default());
        let mut config = ExecutorConfig {
            task_timeout: Duration::from_secs(24 * 3600),
            run_timeout: match stop {
                Stop::Deadline => Duration::from_secs(600),
                Stop::Cancel => Duration::ZERO,
            },
            ..ExecutorConfig::default()
        };
        config.refine.agents = plan
            .tasks
            .iter()
            .filter_map(|t| t.agent.clone())
            .collect::<Vec<AgentId>>();
        let genesis = orchestrator(agent.clone(), config);
        let mut run = genesis.execute(plan, RunOptions::default()).unwrap();
        let mut events = run.events();
        if let Stop::Cancel = stop {
            tokio::time::timeout(Duration::from_secs(30), agent.notify.notified())
                .await
                .expect("no refinement round started within 30 s");
            run.cancel();
        }
        let result = tokio::time::timeout(Duration::from_secs(3600), run.wait())
            .await
            .expect("the run did not finish");
        let answered = agent.answered.load(Ordering::SeqCst);
        assert!(answered >= 1, "{stop:?}: no first round answered");
        let (want_status, want_task) = match stop {
            Stop::Deadline => (RunStatus::Failed, TaskStatus::Failed),
            Stop::Cancel => (RunStatus::Cancelled, TaskStatus::Cancelled),
        };
        assert_eq!(result.status, want_status, "{stop:?}");
        // No task finished: each one that answered a first round was stopped in its
        // refinement round, keeping that round's tokens; the others spent none.
        assert!(
            result
                .tasks
                .iter()
                .all(|t| t.status == want_task || t.status == TaskStatus::Skipped),
            "{stop:?}: {:?}",
            result.tasks
        );
        let with_tokens: Vec<_> = result
            .tasks
            .iter()
            .filter(|t| (t.input_tokens, t.output_tokens) != (0, 0))
            .collect();
        assert_eq!(with_tokens.len(), answered, "{stop:?}: {:?}", result.tasks);
        for t in &with_tokens {
            assert_eq!(
                (t.status, t.input_tokens, t.output_tokens),
                (want_task, IN, OUT),
                "{stop:?}: {t:?}"
            );
        }
        let stopped = answered;
        let totals = summed(&result);
        assert_eq!(
            totals,
            (IN * stopped as u64, OUT * stopped as u64),
            "{stop:?}"
        );
        assert_eq!((result.input_tokens, result.output_tokens), totals);
        let events = drain(&mut events);
        let ended: u64 = events
            .iter()
            .map(|e| match e {
                RunEvent::TaskFailed { input_tokens, .. }
                | RunEvent::TaskSkipped { input_tokens, .. } => *input_tokens,
                _ => 0,
            })
            .sum();
        assert_eq!(ended, totals.0, "{stop:?}: {events:?}");
        assert_eq!(finished_totals(&events), totals, "{stop:?}");
    }
}

/// A failed task's tokens are stored with it and survive reopening the store: the
/// stored run's totals equal the run's. The store used to write tokens for succeeded
/// tasks only.
#[tokio::test]
async fn failed_task_tokens_are_stored_and_survive_reopening() {
    let dir = crate::TempDir::new("tokens-store");
    let (plan, root) = plan_and_root();
    let id = {
        let store = Arc::new(SqliteStore::open(&dir).unwrap());
        let id = crate::support::create_run(&store, &plan);
        let genesis = orchestrator(
            Arc::new(FailsAfterUsage {
                fails: root.clone(),
            }),
            small_outputs(),
        );
        let result = genesis
            .execute(plan.clone(), journaled(&id, store.clone()))
            .unwrap()
            .wait()
            .await;
        assert_eq!(result.status, RunStatus::Failed);
        let failed = result.tasks.iter().find(|t| t.task_id == root).unwrap();
        assert!(failed.input_tokens > 0, "{failed:?}");
        id
    };
    let store = SqliteStore::open(&dir).unwrap();
    let record = stored(&store, &id);
    let failed = record.tasks.iter().find(|t| t.task_id == root).unwrap();
    assert_eq!(failed.status, TaskStatus::Failed, "{failed:?}");
    let attempts = u64::from(failed.attempts);
    assert_eq!(
        (failed.input_tokens, failed.output_tokens),
        (IN * attempts, OUT * attempts),
        "{failed:?}"
    );
    for t in record
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Skipped)
    {
        assert_eq!((t.input_tokens, t.output_tokens), (0, 0), "{t:?}");
    }
    let succeeded = record
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Succeeded)
        .count() as u64;
    let want = (IN * (attempts + succeeded), OUT * (attempts + succeeded));
    assert_eq!(record.token_totals(), want, "{:?}", record.tasks);
    // The journaled `run_finished` carries the same totals.
    let events: Vec<RunEvent> = store
        .events_since(id.as_str(), 0)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(finished_totals(&events), want);
}

/// A run that crashed right after a task failed keeps that task's tokens when it is
/// resumed: the resumed run's result and `run_finished` count them with the tokens
/// of the tasks run after the restart.
#[tokio::test]
async fn a_resumed_run_keeps_the_tokens_of_a_task_that_failed_before_the_restart() {
    let (plan, root) = plan_and_root();
    let (store, id) = crate::stored_run(&plan);
    // The crash: nothing after the failure's write is journaled.
    let dying = Dying::after(&store, |e| matches!(e, RunEvent::TaskFailed { .. }));
    let agent = Arc::new(FailsAfterUsage {
        fails: root.clone(),
    });
    let genesis = orchestrator(agent.clone(), small_outputs());
    genesis
        .execute(plan.clone(), journaled(&id, dying))
        .unwrap()
        .wait()
        .await;
    let record = stored(&store, &id);
    assert_eq!(
        record.status,
        RunStatus::Running,
        "the crash came before the end"
    );
    let before = record
        .tasks
        .iter()
        .find(|t| t.task_id == root)
        .unwrap()
        .clone();
    assert_eq!(before.status, TaskStatus::Failed, "{before:?}");
    assert!(
        before.input_tokens > 0,
        "no tokens stored with the failure: {before:?}"
    );

    let mut run = genesis.execute(plan, resuming(&store, &record)).unwrap();
    let mut events = run.events();
    let result = tokio::time::timeout(Duration::from_secs(30), run.wait())
        .await
        .expect("the resumed run did not finish within 30 s");
    let after = result.tasks.iter().find(|t| t.task_id == root).unwrap();
    assert_eq!(
        (after.status, after.input_tokens, after.output_tokens),
        (before.status, before.input_tokens, before.output_tokens)
    );
    let totals = summed(&result);
    assert!(totals.0 >= before.input_tokens);
    assert_eq!((result.input_tokens, result.output_tokens), totals);
    assert_eq!(finished_totals(&drain(&mut events)), totals);
    // And the store agrees once the resumed run ended.
    let record = stored(&store, &id);
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.token_totals(), totals);
}
