//! A throttled provider (429 with `Retry-After`) through the real executor and a fake
//! OpenAI-compatible provider on loopback (verification M, finding 3): a task whose agent
//! gave up on a 429 was re-routed at once to an alternative on the same provider and
//! model, which got the same 429 within milliseconds, and the task failed. Now
//! alternatives on other upstreams go first, and one on the throttled provider and model
//! is called only once the `Retry-After` has passed: waited for when it fits the
//! backoff cap and the run's deadline, else not at all (rule `provider_throttled`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use genesis::core::{AgentId, Task, TaskId, TaskKind};
use genesis::htdag::{Limits, TaskDag};
use genesis::run::{RunEvent, RunResult, RunStatus, TaskStatus};
use genesis::{Orchestrator, Plan, PlanOptions, RunOptions};
use serde_json::json;

/// One scripted answer of the fake provider.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// A 429 with this header (`retry-after` in seconds, or `retry-after-ms`).
    Throttle(&'static str, &'static str),
}

/// A fake OpenAI chat-completions provider: answers its queue in order, then "ok";
/// records when each call came.
#[derive(Default)]
struct Fake {
    queue: Mutex<VecDeque<Answer>>,
    calls: Mutex<Vec<Instant>>,
}

impl Fake {
    fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }
}

async fn chat(State(fake): State<Arc<Fake>>) -> Response {
    fake.calls.lock().unwrap().push(Instant::now());
    let next = fake.queue.lock().unwrap().pop_front();
    match next {
        Some(Answer::Throttle(header, value)) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header, value)],
            Json(json!({"error": {"message": "Rate limit reached for requests", "type": "requests"}})),
        )
            .into_response(),
        None => Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok from the provider"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
        }))
        .into_response(),
    }
}

/// The fake provider on loopback, scripted with `queue`, and an orchestrator whose
/// agents are LLM agents on it; `extra` is appended to the config.
async fn setup(queue: Vec<Answer>, extra: &str) -> (Arc<Fake>, Orchestrator) {
    let fake = Arc::new(Fake {
        queue: Mutex::new(queue.into()),
        calls: Mutex::default(),
    });
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(Arc::clone(&fake));
    let genesis = crate::answers::llm_orchestrator(app, extra).await;
    (fake, genesis)
}

/// A one-task plan, and the task's candidate agents (its agent, then its alternatives).
fn one_task(genesis: &Orchestrator) -> (Plan, Vec<AgentId>) {
    let mut dag = TaskDag::new(Limits::default());
    dag.add_task(
        Task::new(
            TaskId::new("t1"),
            TaskKind::Implement,
            "Write the invoice endpoint",
        ),
        None,
    )
    .unwrap();
    let plan = genesis
        .plan_dag("Write the invoice endpoint", &dag, &PlanOptions::default())
        .unwrap();
    let task = &plan.tasks[0];
    let mut candidates = vec![task.agent.clone().unwrap()];
    for alt in &task.route.alternatives {
        if !candidates.contains(&alt.agent) {
            candidates.push(alt.agent.clone());
        }
    }
    (plan, candidates)
}

/// Runs `plan` to its end; its result and every event.
async fn run(genesis: &Orchestrator, plan: Plan) -> (RunResult, Vec<RunEvent>) {
    let mut handle = genesis.execute(plan, RunOptions::default()).unwrap();
    let mut events = handle.events();
    let result = handle.wait().await;
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    (result, seen)
}

/// The agents the task was started on, in order.
fn started(events: &[RunEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::TaskStarted { agent, .. } => Some(agent.to_string()),
            _ => None,
        })
        .collect()
}

/// `(from, to, reason)` of every re-route.
fn rerouted(events: &[RunEvent]) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::TaskRerouted {
                from, to, reason, ..
            } => Some((from.to_string(), to.to_string(), reason.clone())),
            _ => None,
        })
        .collect()
}

/// The repro: `retry-after: 120` over the 60 s backoff cap. Every alternative calls the
/// same provider and model, so none is called: the task fails at once, naming the
/// provider, the model, the retry-after, the cap and the agents not called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_over_the_cap_fails_the_task_instead_of_burning_its_alternatives() {
    let (fake, genesis) = setup(vec![Answer::Throttle("retry-after", "120"); 8], "").await;
    let (plan, candidates) = one_task(&genesis);
    assert!(
        candidates.len() >= 2,
        "needs an alternative: {candidates:?}"
    );
    let (result, events) = run(&genesis, plan).await;
    assert_eq!(result.status, RunStatus::Failed, "{:?}", result.tasks);
    assert_eq!(fake.calls().len(), 1, "one call to the throttled provider");
    assert_eq!(started(&events), [candidates[0].to_string()]);
    assert!(rerouted(&events).is_empty(), "{:?}", rerouted(&events));
    let task = &result.tasks[0];
    assert_eq!(task.status, TaskStatus::Failed);
    let error = task.error.clone().unwrap();
    for part in [
        "llm:openai (model gpt-4o-mini) is throttled",
        "status 429",
        "retry-after 120s exceeds the backoff cap 60s (executor.retry.cap)",
        "rule: provider_throttled",
    ] {
        assert!(error.contains(part), "{part:?} not in {error}");
    }
    for alternative in &candidates[1..] {
        assert!(
            error.contains(alternative.as_str()),
            "{alternative} not named: {error}"
        );
    }
    // The model the failed call used is on the failure and the report.
    assert_eq!(task.model.as_ref().map(|m| m.as_str()), Some("gpt-4o-mini"));
    let failed = events.iter().find(|e| e.kind() == "task_failed").unwrap();
    assert_eq!(
        serde_json::to_value(failed).unwrap()["model"],
        "gpt-4o-mini"
    );
}

/// An alternative on another upstream (a command agent) is tried before the ones on the
/// throttled provider, which are never called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_task_goes_first_to_an_alternative_on_another_upstream() {
    // Learn the candidates, then serve the third with a local command.
    let (_, genesis) = setup(Vec::new(), "").await;
    let (_, candidates) = one_task(&genesis);
    assert!(
        candidates.len() >= 3,
        "needs two alternatives: {candidates:?}"
    );
    let local = &candidates[2];
    let backend = format!(
        r#"
[backends.{local}]
type = "command"
program = "/bin/sh"
args = ["-c", "cat >/dev/null; echo '{{\"output\": \"done locally\"}}'"]
allowed_programs = ["/bin/sh"]
"#
    );
    let (fake, genesis) = setup(vec![Answer::Throttle("retry-after", "120")], &backend).await;
    let (plan, again) = one_task(&genesis);
    assert_eq!(again, candidates, "the backend does not change the route");
    let (result, events) = run(&genesis, plan).await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:?}", result.tasks);
    let task = &result.tasks[0];
    assert_eq!(task.agent.as_ref(), Some(local));
    assert_eq!(task.output.as_deref(), Some("done locally"));
    assert_eq!(fake.calls().len(), 1, "the second LLM agent was not called");
    assert_eq!(
        started(&events),
        [candidates[0].to_string(), local.to_string()]
    );
    let rerouted = rerouted(&events);
    assert_eq!(rerouted.len(), 1, "{rerouted:?}");
    assert_eq!(
        (rerouted[0].0.as_str(), rerouted[0].1.as_str()),
        (candidates[0].as_str(), local.as_str())
    );
    assert!(rerouted[0].2.contains("status 429"), "{}", rerouted[0].2);
    // A command agent calls no model.
    assert_eq!(task.model, None);
}

/// With its retries used on a 429 whose `retry-after-ms` fits the cap, the task waits
/// for it to pass before calling an alternative on the same provider and model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_within_the_cap_is_waited_out_before_an_alternative_on_the_same_provider() {
    let (fake, genesis) = setup(
        vec![Answer::Throttle("retry-after-ms", "300")],
        "[executor.retry]\nmax_retries = 0\n",
    )
    .await;
    let (plan, candidates) = one_task(&genesis);
    assert!(
        candidates.len() >= 2,
        "needs an alternative: {candidates:?}"
    );
    let (result, events) = run(&genesis, plan).await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:?}", result.tasks);
    assert_eq!(result.tasks[0].agent.as_ref(), Some(&candidates[1]));
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    let gap = calls[1] - calls[0];
    assert!(
        gap >= Duration::from_millis(300),
        "the alternative was called {gap:?} after the 429, within its retry-after"
    );
    let rerouted = rerouted(&events);
    assert_eq!(rerouted.len(), 1, "{rerouted:?}");
    assert!(
        rerouted[0]
            .2
            .contains("for llm:openai's retry-after before calling"),
        "{}",
        rerouted[0].2
    );
}

/// A `Retry-After` within the cap that ends after the run's deadline is not waited for:
/// the task fails at once, naming the deadline, instead of calling the alternative early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_past_the_runs_deadline_fails_the_task_at_once() {
    let (fake, genesis) = setup(
        vec![Answer::Throttle("retry-after", "30")],
        "[executor]\nrun_timeout = \"20s\"\n[executor.retry]\nmax_retries = 0\n",
    )
    .await;
    let (plan, candidates) = one_task(&genesis);
    assert!(
        candidates.len() >= 2,
        "needs an alternative: {candidates:?}"
    );
    let began = Instant::now();
    let (result, events) = run(&genesis, plan).await;
    assert_eq!(result.status, RunStatus::Failed, "{:?}", result.tasks);
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "failed at once, not at the deadline"
    );
    assert_eq!(fake.calls().len(), 1);
    assert!(rerouted(&events).is_empty());
    let error = result.tasks[0].error.clone().unwrap();
    for part in [
        "retry-after 30s would pass the run's deadline (executor.run_timeout 20s)",
        "rule: provider_throttled",
    ] {
        assert!(error.contains(part), "{part:?} not in {error}");
    }
}
