//! The run contract a library user relies on when they embed the executor with their
//! own agents and journal: a journal that panics, agents that return too much, run
//! handles dropped mid-run, and the token counts agents report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use genesis::core::{RunId, Usd};
use genesis::run::{
    Agent, AgentError, AgentOutput, AgentRequest, AgentSet, RunEvent, RunJournal, RunStatus,
    TaskStatus,
};
use genesis::{Orchestrator, Plan, RunOptions};

const REQUEST: &str = "Fix the crash when uploading large files";

/// What each call of [`Echo`] costs.
const CALL_COST: f64 = 0.001;

/// Answers every task at once (or after `takes`), costing [`CALL_COST`] and reporting
/// 100 input and 20 output tokens; counts the calls it started.
#[derive(Default)]
struct Echo {
    takes: Duration,
    started: AtomicUsize,
}

#[async_trait]
impl Agent for Echo {
    async fn execute(&self, request: AgentRequest) -> Result<AgentOutput, AgentError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.takes).await;
        Ok(AgentOutput {
            text: format!("done {}", request.task.id),
            cost: Usd::new(CALL_COST).unwrap(),
            input_tokens: 100,
            output_tokens: 20,
            ..AgentOutput::default()
        })
    }
}

/// An orchestrator whose every agent is `agent`, and its plan of [`REQUEST`].
fn setup(agent: Arc<dyn Agent>) -> (Orchestrator, Plan) {
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(agent))
        .build()
        .unwrap();
    let plan = genesis.plan_sync(REQUEST).unwrap();
    (genesis, plan)
}

/// A journal that panics when asked to record an event of kind `panic_on`, written
/// inline (`blocks` false) or from the executor's journal thread.
struct Panicky {
    blocks: bool,
    panic_on: &'static str,
    panics: AtomicU64,
}

impl RunJournal for Panicky {
    fn record(
        &self,
        _: &RunId,
        event: &RunEvent,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if event.kind() == self.panic_on {
            self.panics.fetch_add(1, Ordering::SeqCst);
            panic!("journal bug on {}", event.kind());
        }
        Ok(())
    }

    fn blocks(&self) -> bool {
        self.blocks
    }
}

/// A journal that panics is taken as one that fails its writes, whether it is written
/// inline or from the journal thread. Inline, the panic used to kill the run (status
/// failed, no tasks, $0, no `run_finished`); then the run went on to the end without a
/// journal. Now the run stops at the write that failed (audit D1): no task starts after
/// it, the result keeps the reports and the money spent and says why, and subscribers
/// get `run_interrupted`, never a `task_succeeded` that was not journaled.
#[tokio::test]
async fn a_journal_that_panics_stops_the_run_inline_or_threaded() {
    for blocks in [false, true] {
        let agent = Arc::new(Echo::default());
        let (genesis, plan) = setup(agent.clone());
        let journal = Arc::new(Panicky {
            blocks,
            panic_on: "task_succeeded",
            panics: AtomicU64::new(0),
        });
        let options = RunOptions {
            journal: Some(journal.clone()),
            ..RunOptions::default()
        };
        let mut handle = genesis.execute(plan.clone(), options).unwrap();
        let mut events = handle.events();
        let result = tokio::time::timeout(Duration::from_secs(30), handle.wait())
            .await
            .unwrap();
        // The first write and its two retries.
        assert!(
            journal.panics.load(Ordering::SeqCst) >= 3,
            "blocks: {blocks}"
        );
        assert_eq!(result.status, RunStatus::Running, "blocks: {blocks}");
        let stopped = result.interrupted.clone().expect("the result says why");
        assert_eq!(stopped.rule, "journal_unavailable");
        assert!(stopped.reason.contains("panicked"), "{}", stopped.reason);
        assert_eq!(result.tasks.len(), plan.tasks.len(), "blocks: {blocks}");
        let calls = agent.started.load(Ordering::SeqCst);
        assert!(
            calls < plan.tasks.len(),
            "blocks: {blocks}: {calls} calls, the run went on"
        );
        assert!(
            (result.cost.as_f64() - CALL_COST * calls as f64).abs() < 1e-9,
            "blocks: {blocks}: cost {}",
            result.cost
        );
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e.kind());
        }
        assert_eq!(seen.last(), Some(&"run_interrupted"), "blocks: {blocks}");
        assert!(!seen.contains(&"task_succeeded"), "{seen:?}");
        assert!(!seen.contains(&"run_finished"), "{seen:?}");
    }
}

/// Answers every task with `bytes` bytes of text, costing [`CALL_COST`] and reporting
/// 100 input and 20 output tokens; records which (task, agent) it was called for.
struct Huge {
    bytes: usize,
    calls: std::sync::Mutex<Vec<(String, String)>>,
}

impl Huge {
    fn new(bytes: usize) -> Arc<Huge> {
        Arc::new(Huge {
            bytes,
            calls: std::sync::Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl Agent for Huge {
    async fn execute(&self, request: AgentRequest) -> Result<AgentOutput, AgentError> {
        self.calls
            .lock()
            .unwrap()
            .push((request.task.id.to_string(), request.agent.to_string()));
        Ok(AgentOutput {
            text: "word ".repeat(self.bytes / 5),
            cost: Usd::new(CALL_COST).unwrap(),
            input_tokens: 100,
            output_tokens: 20,
            ..AgentOutput::default()
        })
    }
}

/// Every agent's output is held to `max_output_bytes` (default 1 MiB) before it is
/// screened or stored: an attempt over it fails naming the rule, the agent, the size
/// and the limit; it is charged what the agent reported and not retried on the same
/// agent, and the task moves on to its alternatives. A user's own agent returning
/// 50 MB per task used to take 115 s and 1.5 GB for one run.
#[tokio::test]
async fn an_agent_output_over_max_output_bytes_fails_its_attempt() {
    let agent = Huge::new(2 << 20);
    let (genesis, plan) = setup(agent.clone());
    assert_eq!(genesis.executor().config().max_output_bytes, 1 << 20);
    let result = genesis
        .execute(plan.clone(), RunOptions::default())
        .unwrap()
        .wait()
        .await;
    assert_eq!(result.status, RunStatus::Failed);
    let calls = agent.calls.lock().unwrap().clone();
    assert!(!calls.is_empty());
    // Not retried on the same agent: one call per (task, agent).
    let distinct: std::collections::HashSet<&(String, String)> = calls.iter().collect();
    assert_eq!(distinct.len(), calls.len(), "{calls:?}");
    let first = &result.tasks[0];
    assert_eq!(first.status, TaskStatus::Failed);
    let error = first.error.clone().unwrap_or_default();
    let (_, last_agent) = calls
        .iter()
        .rfind(|(t, _)| *t == first.task_id.as_str())
        .unwrap();
    assert!(
        error.contains(&format!(
            "output of agent {last_agent} is 2097150 bytes, over max_output_bytes 1048576"
        )),
        "{error}"
    );
    assert!(first.output.is_none());
    // Charged what the agent reported, with its tokens.
    let first_calls = calls
        .iter()
        .filter(|(t, _)| *t == first.task_id.as_str())
        .count();
    assert_eq!(first.attempts as usize, first_calls);
    assert!((first.cost.as_f64() - CALL_COST * first_calls as f64).abs() < 1e-9);
    assert_eq!(first.input_tokens, 100 * first_calls as u64);
    assert!((result.cost.as_f64() - CALL_COST * calls.len() as f64).abs() < 1e-9);
    assert!(result.answer.len() < 1 << 20, "{}", result.answer.len());
}

/// An agent that answers too much loses the task to the next-ranked alternative,
/// which does it; the limit is set in `ExecutorConfig`, and 0 turns it off.
#[tokio::test]
async fn a_task_whose_agent_answers_too_much_is_rerouted_and_the_limit_is_configurable() {
    let plan = setup(Arc::new(Echo::default())).1;
    let first = &plan.tasks[0];
    assert!(!first.route.alternatives.is_empty(), "{first:?}");
    let primary = first.agent.clone().unwrap();
    let huge = Huge::new(100);
    let genesis = Orchestrator::builder()
        .agents(
            AgentSet::new()
                .with(primary.clone(), huge.clone())
                .with_fallback(Arc::new(Echo::default())),
        )
        .executor_config(genesis::run::ExecutorConfig {
            max_output_bytes: 64,
            ..Default::default()
        })
        .build()
        .unwrap();
    let mut run = genesis
        .execute(plan.clone(), RunOptions::default())
        .unwrap();
    let mut events = run.events();
    let result = run.wait().await;
    assert_eq!(result.tasks[0].status, TaskStatus::Succeeded, "{result:?}");
    assert_ne!(result.tasks[0].agent.as_ref(), Some(&primary));
    let mut rerouted = None;
    while let Ok(e) = events.try_recv() {
        if let RunEvent::TaskRerouted { from, reason, .. } = e {
            rerouted.get_or_insert((from, reason));
        }
    }
    let (from, reason) = rerouted.unwrap();
    assert_eq!(from, primary);
    assert_eq!(
        reason,
        format!("output of agent {primary} is 100 bytes, over max_output_bytes 64")
    );
    // 0: no limit.
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Huge::new(2 << 20)))
        .executor_config(genesis::run::ExecutorConfig {
            max_output_bytes: 0,
            screen_outputs: false,
            ..Default::default()
        })
        .build()
        .unwrap();
    let result = genesis
        .execute(plan, RunOptions::default())
        .unwrap()
        .wait()
        .await;
    assert_eq!(result.status, RunStatus::Succeeded);
}

/// `(started calls, run_finished status, tasks cancelled)` of a run of [`REQUEST`] on
/// an agent that takes 300 ms, whose waiter goes away at 100 ms by `drop_at`.
async fn dropped_mid_run(
    drop_at: impl AsyncFnOnce(genesis::run::RunHandle),
) -> (usize, usize, Option<RunStatus>, usize, usize) {
    let agent = Arc::new(Echo {
        takes: Duration::from_millis(300),
        ..Echo::default()
    });
    let (genesis, plan) = setup(agent.clone());
    let handle = genesis
        .execute(plan.clone(), RunOptions::default())
        .unwrap();
    let mut events = handle.subscribe();
    drop_at(handle).await;
    let at_drop = agent.started.load(Ordering::SeqCst);
    let mut status = None;
    let mut cancelled = 0;
    while let Ok(e) = events.recv().await {
        match e {
            RunEvent::TaskSkipped { reason, .. } if reason == "run cancelled" => cancelled += 1,
            RunEvent::RunFinished { status: s, .. } => {
                status = Some(s);
                break;
            }
            _ => {}
        }
    }
    // Long enough for every task of the plan to have run, had the run gone on.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = agent.started.load(Ordering::SeqCst);
    (at_drop, after, status, cancelled, plan.tasks.len())
}

/// A guard from `cancel_on_drop` cancels its run when it is dropped, or when its
/// `wait()` future is (a request handler whose client went away): no agent call
/// starts after that, and the unfinished tasks end cancelled. A plain `RunHandle`
/// dropped mid-run detaches the run, which runs to its end (documented; the server
/// relies on it).
#[tokio::test(start_paused = true)]
async fn dropping_a_cancel_on_drop_guard_stops_the_run() {
    let (at_drop, after, status, cancelled, tasks) = dropped_mid_run(async |handle| {
        let guard = handle.cancel_on_drop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(guard);
    })
    .await;
    assert!(at_drop > 0 && at_drop < tasks, "{at_drop} of {tasks}");
    assert_eq!(after, at_drop, "calls started after the guard was dropped");
    assert_eq!(status, Some(RunStatus::Cancelled));
    assert_eq!(cancelled, tasks, "every task was unfinished at 100 ms");

    let (at_drop, after, status, cancelled, tasks) = dropped_mid_run(async |handle| {
        let wait = handle.cancel_on_drop().wait();
        assert!(
            tokio::time::timeout(Duration::from_millis(100), wait)
                .await
                .is_err()
        );
    })
    .await;
    assert_eq!(after, at_drop, "calls started after wait() was dropped");
    assert_eq!(status, Some(RunStatus::Cancelled));
    assert_eq!(cancelled, tasks);

    let (_, after, status, cancelled, tasks) = dropped_mid_run(async |handle| {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(handle);
    })
    .await;
    assert_eq!(after, tasks, "a dropped RunHandle detaches its run");
    assert_eq!(status, Some(RunStatus::Succeeded));
    assert_eq!(cancelled, 0);
}

/// A guard whose run ended cancels nothing when dropped, and `wait()` through it
/// gives the result as the handle's does.
#[tokio::test]
async fn a_cancel_on_drop_guard_waits_like_the_handle() {
    let (genesis, plan) = setup(Arc::new(Echo::default()));
    let result = genesis
        .execute(plan, RunOptions::default())
        .unwrap()
        .cancel_on_drop()
        .wait()
        .await;
    assert_eq!(result.status, RunStatus::Succeeded);
}

/// The tokens agents report are carried: on each task's report (every call that
/// answered: refinement rounds too), in the run's totals and on `task_succeeded`.
/// They used to be dropped.
#[tokio::test]
async fn reported_tokens_reach_task_reports_run_totals_and_events() {
    let agent = Arc::new(Echo::default());
    let (_, plan) = setup(agent.clone());
    // Every agent refines: a task's calls are its attempts.
    let agents: Vec<genesis::core::AgentId> =
        plan.tasks.iter().filter_map(|t| t.agent.clone()).collect();
    let mut config = genesis::run::ExecutorConfig::default();
    config.refine.agents = agents;
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(agent.clone()))
        .executor_config(config)
        .build()
        .unwrap();
    let mut run = genesis.execute(plan, RunOptions::default()).unwrap();
    let mut events = run.events();
    let result = run.wait().await;
    assert_eq!(result.status, RunStatus::Succeeded);
    let calls = agent.started.load(Ordering::SeqCst) as u64;
    assert!(calls > result.tasks.len() as u64, "no refinement rounds");
    for t in &result.tasks {
        assert_eq!(t.input_tokens, 100 * u64::from(t.attempts), "{t:?}");
        assert_eq!(t.output_tokens, 20 * u64::from(t.attempts), "{t:?}");
    }
    assert_eq!(result.input_tokens, 100 * calls);
    assert_eq!(result.output_tokens, 20 * calls);
    let mut from_events = 0;
    while let Ok(e) = events.try_recv() {
        if let RunEvent::TaskSucceeded {
            task_id,
            input_tokens,
            output_tokens,
            ..
        } = e
        {
            let report = result.tasks.iter().find(|t| t.task_id == task_id).unwrap();
            assert_eq!(
                (input_tokens, output_tokens),
                (report.input_tokens, report.output_tokens)
            );
            from_events += input_tokens;
        }
    }
    assert_eq!(from_events, result.input_tokens);
    // In the JSON, and absent from JSON stored before they were: 0.
    let json = serde_json::to_value(&result).unwrap();
    assert_eq!(json["input_tokens"], 100 * calls);
    assert_eq!(
        json["tasks"][0]["output_tokens"],
        20 * u64::from(result.tasks[0].attempts)
    );
}

/// Runs, reports and events stored before token counts were recorded still load.
#[test]
fn json_stored_without_token_counts_still_loads() {
    let result: genesis::run::RunResult = serde_json::from_str(
        r#"{"run_id": "r1", "status": "succeeded", "answer": "", "cost": 0.5,
            "tasks": [{"task_id": "t1", "status": "succeeded", "agent": "qa", "attempts": 1,
                       "output": "done", "error": null, "cost": 0.5}]}"#,
    )
    .unwrap();
    assert_eq!((result.input_tokens, result.tasks[0].output_tokens), (0, 0));
    let event: RunEvent = serde_json::from_str(
        r#"{"type": "task_succeeded", "task_id": "t1", "agent": "qa", "output": "done",
            "cost": 0.5, "attempts": 1, "duration_ms": 5}"#,
    )
    .unwrap();
    assert!(matches!(
        event,
        RunEvent::TaskSucceeded {
            input_tokens: 0,
            output_tokens: 0,
            ..
        }
    ));
}

/// Never answers (until dropped); counts the calls it started.
#[derive(Default)]
struct Hangs {
    started: AtomicUsize,
}

#[async_trait]
impl Agent for Hangs {
    async fn execute(&self, _: AgentRequest) -> Result<AgentOutput, AgentError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

/// Library-user audit: with the defaults a hanging agent held a task for
/// `task_timeout` × attempts × alternatives (about 16 minutes) and nothing bounded the
/// run as a whole. `executor.run_timeout` does.
#[tokio::test]
async fn a_run_past_its_deadline_ends_failed_naming_the_rule() {
    let agent = Arc::new(Hangs::default());
    let config = genesis::run::ExecutorConfig {
        run_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(agent.clone() as Arc<dyn Agent>))
        .executor_config(config)
        .build()
        .unwrap();
    let plan = genesis.plan_sync(REQUEST).unwrap();
    assert!(plan.tasks.len() > 1, "{plan:?}");
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        genesis
            .execute(plan.clone(), RunOptions::default())
            .unwrap()
            .wait(),
    )
    .await
    .expect("the run ends at its deadline");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(result.status, RunStatus::Failed);
    assert_eq!(result.tasks.len(), plan.tasks.len());
    assert!(agent.started.load(Ordering::SeqCst) > 0);
    for t in &result.tasks {
        assert!(
            matches!(t.status, TaskStatus::Failed | TaskStatus::Skipped),
            "{t:?}"
        );
        let error = t.error.as_deref().unwrap_or_default();
        assert!(error.contains("rule: run_timeout"), "{t:?}");
        assert!(error.contains("300ms"), "{t:?}");
    }
    // The tasks in flight failed; those never started were skipped.
    assert!(result.tasks.iter().any(|t| t.status == TaskStatus::Failed));
}

/// Audit U6: `.registry(own catalogue)` alone failed to build (`rule
/// "security-sensitive" names unknown agent "security"`): the built-in rules stayed in
/// force. A custom registry without `.rules` now routes with no rules; rules given
/// explicitly still apply and are still checked.
#[test]
fn an_own_catalogue_builds_without_the_built_in_rules() {
    use genesis::halo::{AgentRegistry, RouteLayer, RoutingRules, Rule};
    const MINE: &str = r#"
[[agent]]
id = "ledger"
description = "Reconciles ledgers and books invoices"

[[agent]]
id = "mailer"
description = "Writes and sends customer emails"
"#;
    let registry = || AgentRegistry::from_toml_str(MINE).unwrap();
    let genesis = Orchestrator::builder()
        .registry(registry())
        .build()
        .unwrap();
    let plan = genesis.plan_sync("Reconcile the ledger for March").unwrap();
    assert!(!plan.tasks.is_empty());
    for t in &plan.tasks {
        assert_ne!(t.route.layer, RouteLayer::Rule, "{t:?}");
        assert_eq!(
            t.agent.as_ref().map(|a| a.as_str()),
            Some("ledger"),
            "{t:?}"
        );
    }
    // Explicit rules still route first.
    let rules = RoutingRules::new(vec![Rule::new("mail", "mailer", 10).with_keyword("ledger")]);
    let genesis = Orchestrator::builder()
        .registry(registry())
        .rules(rules)
        .build()
        .unwrap();
    let plan = genesis.plan_sync("Reconcile the ledger for March").unwrap();
    assert!(
        plan.tasks.iter().any(|t| t.route.layer == RouteLayer::Rule
            && t.agent.as_ref().is_some_and(|a| a.as_str() == "mailer")),
        "{:?}",
        plan.tasks
    );
    // And rules naming agents the catalogue lacks are refused, as before.
    let bad = RoutingRules::new(vec![Rule::new("r", "security", 1).with_keyword("x")]);
    let err = Orchestrator::builder()
        .registry(registry())
        .rules(bad)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("security"), "{err}");
}
