//! Every LLM dollar and token is counted and budgeted (audits L6-3/4/5/7/10/11, U6-4):
//! answers without usage, LLM planning (day budget, run cost, `planning.llm_timeout`,
//! one retry, the cause of a fallback), failed and cancelled tasks' cost, and a bounded
//! call's fair share of the run budget. The provider is a real OpenAI-compatible HTTP
//! server on loopback.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use genesis::core::{Task, TaskId, TaskKind, Usd};
use genesis::daao::{Budget, ModelCatalog};
use genesis::htdag::{Limits, LlmDecomposer, TaskDag};
use genesis::llm::{ProviderConfig, ProviderKind};
use genesis::providers::{LlmAgent, LlmConfig, LlmPlanner, LlmProviders};
use genesis::resilience::{BreakerConfig, DegradationLevel};
use genesis::run::{
    Agent, AgentError, AgentOutput, AgentRequest, AgentSet, CostBounds, DaySpend, ExecutorConfig,
    RunEvent, RunStatus, TaskStatus,
};
use genesis::store::{RunStore, SqliteStore};
use genesis::{Orchestrator, OrchestratorBuilder, PlanOptions, RunOptions};

fn usd(v: f64) -> Usd {
    Usd::new(v).unwrap()
}

/// What the fake provider does with one request.
#[derive(Clone)]
enum Act {
    /// Answers `content`, with usage (100 in, 50 out) or without.
    Answer { content: String, usage: bool },
    /// Refuses with `status` and a `retry-after` header of `seconds`.
    Refuse { status: u16, seconds: u64 },
    /// Answers as `default` would, after `delay`.
    Slow(Duration),
}

/// A scripted OpenAI-compatible provider: requests take the queued acts in order, then
/// `default` (a valid two-phase plan with usage when `None`).
struct Provider {
    queue: Mutex<VecDeque<Act>>,
    default: Mutex<Option<Act>>,
    calls: AtomicUsize,
}

fn plan_answer(prompt: &str) -> String {
    if prompt.contains("top-level phases") {
        serde_json::json!({"phases": [
            {"kind": "design", "description": "Design the invoice data model"},
            {"kind": "backend", "description": "Build the invoice API", "depends_on": [0]}
        ]})
        .to_string()
    } else if prompt.contains("Break this phase") {
        serde_json::json!({"subtasks": [
            {"kind": "backend", "description": "Write the invoice endpoints"}
        ]})
        .to_string()
    } else {
        "done".to_owned()
    }
}

fn answer(content: String, usage: bool) -> Response {
    let mut body = serde_json::json!({
        "id": "x", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    });
    if usage {
        body["usage"] =
            serde_json::json!({"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150});
    }
    Json(body).into_response()
}

async fn chat(State(p): State<Arc<Provider>>, Json(body): Json<serde_json::Value>) -> Response {
    p.calls.fetch_add(1, Ordering::SeqCst);
    let prompt = body["messages"].to_string();
    let queued = p.queue.lock().unwrap().pop_front();
    let act = queued.or_else(|| p.default.lock().unwrap().clone());
    match act {
        None => answer(plan_answer(&prompt), true),
        Some(Act::Answer { content, usage }) => answer(content, usage),
        Some(Act::Refuse { status, seconds }) => {
            let mut r = (
                StatusCode::from_u16(status).unwrap(),
                Json(serde_json::json!({"error": {"message": "slow down"}})),
            )
                .into_response();
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
            r
        }
        Some(Act::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            answer(plan_answer(&prompt), true)
        }
    }
}

/// Starts the provider; returns it and its base URL.
async fn provider(queue: Vec<Act>, default: Option<Act>) -> (Arc<Provider>, String) {
    let p = Arc::new(Provider {
        queue: Mutex::new(queue.into()),
        default: Mutex::new(default),
        calls: AtomicUsize::new(0),
    });
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(Arc::clone(&p));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (p, format!("http://{addr}/v1"))
}

/// Providers for `gpt-4o-mini` (catalogue price: $0.15 / $0.60 per million) at `url`.
fn providers(url: &str) -> LlmProviders {
    let config = LlmConfig {
        providers: vec![
            ProviderConfig::new(ProviderKind::Openai, "gpt-4o-mini").with_base_url(url),
        ],
        ..LlmConfig::default()
    };
    let catalog = ModelCatalog::from_toml_str(genesis::defaults::MODELS_TOML).unwrap();
    LlmProviders::from_config(&config, &catalog, BreakerConfig::default()).unwrap()
}

/// An orchestrator planning with the LLM at `url`.
fn llm_planning(url: &str) -> OrchestratorBuilder {
    let planner = LlmPlanner::new(providers(url)).unwrap();
    Orchestrator::builder().decomposer(Arc::new(LlmDecomposer::new(planner)))
}

/// What one planner call with usage (100 in, 50 out) costs on gpt-4o-mini.
const CALL_COST: f64 = 100.0 * 0.15 / 1e6 + 50.0 * 0.60 / 1e6;

/// A day with nothing spent yet, and plan options that charge it.
fn fresh_day() -> (DaySpend, PlanOptions) {
    let day = DaySpend::new(Usd::ZERO);
    let options = PlanOptions {
        day: Some(day.clone()),
        ..PlanOptions::default()
    };
    (day, options)
}

fn close(a: Usd, b: f64) -> bool {
    (a.as_f64() - b).abs() < 1e-12
}

const REQUEST: &str = "Build a SaaS business for invoices";

/// L6-5: plan-mode calls were in `genesis_cost_usd` but not in the day's spend,
/// and run-mode planning was not in the run's cost. Now the plan says what planning
/// cost, the day is charged, and a run of the plan starts from it (tasks' costs plus
/// planning make the run's cost and tokens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planning_is_charged_to_the_day_and_to_the_run_it_plans() {
    let (p, url) = provider(vec![], None).await;
    let agent = Arc::new(Fixed(0.001));
    let genesis = llm_planning(&url)
        .agents(AgentSet::new().with_fallback(agent as Arc<dyn Agent>))
        .budget(Budget {
            per_run: None,
            per_day: Some(usd(10.0)),
            per_subject_day: None,
        })
        .build()
        .unwrap();
    let (day, options) = fresh_day();
    let plan = genesis.plan_with(REQUEST, &options).await.unwrap();
    assert_eq!(plan.decomposer, "llm:gpt-4o-mini");
    assert_eq!(
        p.calls.load(Ordering::SeqCst),
        3,
        "1 phase call + 2 subtask calls"
    );
    let planning = plan.planning.expect("planning spend recorded");
    assert_eq!(planning.calls, 3);
    assert_eq!((planning.input_tokens, planning.output_tokens), (300, 150));
    assert!(close(planning.cost, 3.0 * CALL_COST), "{}", planning.cost);
    assert!(close(day.spent(), 3.0 * CALL_COST), "day {}", day.spent());
    assert_eq!(day.reserved(), Usd::ZERO);

    let tasks = plan.tasks.len();
    let run = genesis
        .execute(
            plan,
            RunOptions {
                day: Some(day.clone()),
                ..RunOptions::default()
            },
        )
        .unwrap();
    let result = run.wait().await;
    assert_eq!(result.status, RunStatus::Succeeded);
    let tasks_cost: Usd = result.tasks.iter().map(|t| t.cost).sum();
    assert!(close(tasks_cost, 0.001 * tasks as f64), "{tasks_cost}");
    assert!(
        close(result.cost, tasks_cost.as_f64() + planning.cost.as_f64()),
        "run {} = tasks {tasks_cost} + planning {}",
        result.cost,
        planning.cost
    );
    assert_eq!(result.planning, Some(planning));
    assert_eq!(
        result.input_tokens, 300,
        "the planning's tokens count with the run"
    );
    // The day was charged once for the planning, then for the tasks.
    assert!(close(day.spent(), result.cost.as_f64()), "{}", day.spent());
}

/// V-2: `planning.calls` counted the phase call and its repair turn as one call, so a
/// plan reported fewer paid calls than the provider answered. Every HTTP call counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_turn_counts_as_a_planning_call_of_its_own() {
    let bad = Act::Answer {
        content: "Sure! {phases: [".into(),
        usage: true,
    };
    let (p, url) = provider(vec![bad], None).await;
    let plan = llm_planning(&url)
        .build()
        .unwrap()
        .plan(REQUEST)
        .await
        .unwrap();
    assert_eq!(
        plan.decomposer, "llm:gpt-4o-mini",
        "{:?}",
        plan.degradation_reason
    );
    let sent = p.calls.load(Ordering::SeqCst);
    assert_eq!(sent, 4, "phase call, its repair turn, 2 subtask calls");
    let planning = plan.planning.unwrap();
    assert_eq!(planning.calls, 4, "every HTTP call the provider answered");
    assert_eq!((planning.input_tokens, planning.output_tokens), (400, 200));
    assert!(close(planning.cost, 4.0 * CALL_COST), "{}", planning.cost);
}

/// L6-5: two paid invalid-JSON answers (the call and its repair turn) were dropped
/// (cost +0, tokens +0) and L6-10: the fallback's reason only said "decomposer
/// llm:gpt-4o-mini failed". Both answers are charged, and the reason names the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_planner_answers_are_charged_and_the_fallback_names_the_cause() {
    let bad = Act::Answer {
        content: "Sure! {phases: [".into(),
        usage: true,
    };
    let (p, url) = provider(vec![bad.clone(), bad], None).await;
    let genesis = llm_planning(&url).build().unwrap();
    let (day, options) = fresh_day();
    let plan = genesis.plan_with(REQUEST, &options).await.unwrap();
    assert_eq!(p.calls.load(Ordering::SeqCst), 2);
    assert_eq!(plan.decomposer, "heuristic");
    assert_eq!(plan.degradation, DegradationLevel::LlmFallback);
    let planning = plan.planning.unwrap();
    assert_eq!(planning.calls, 2, "the call and its repair turn");
    assert_eq!((planning.input_tokens, planning.output_tokens), (200, 100));
    assert!(close(planning.cost, 2.0 * CALL_COST), "{}", planning.cost);
    assert!(close(day.spent(), 2.0 * CALL_COST));
    let reason = plan.degradation_reason.unwrap();
    assert!(
        reason.contains("invalid JSON") || reason.contains("does not parse"),
        "{reason}"
    );

    // A structural fault: the reason names the rule.
    let forward = Act::Answer {
        content: serde_json::json!({"phases": [
            {"kind": "design", "description": "a", "depends_on": [1]},
            {"kind": "design", "description": "b"}
        ]})
        .to_string(),
        usage: true,
    };
    let (_, url) = provider(vec![forward], None).await;
    let plan = llm_planning(&url)
        .build()
        .unwrap()
        .plan(REQUEST)
        .await
        .unwrap();
    let reason = plan.degradation_reason.unwrap();
    assert!(reason.contains("rule: depends_on_earlier"), "{reason}");
    assert!(!reason.contains('\n'), "{reason}");
}

/// L6-5: the day budget did not bound planning. A call the day's budget cannot cover
/// is not made: the heuristic plan is used, naming the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planning_falls_back_when_the_day_budget_cannot_cover_a_call() {
    let (p, url) = provider(vec![], None).await;
    let genesis = llm_planning(&url)
        .budget(Budget {
            per_run: None,
            per_day: Some(usd(0.0001)),
            per_subject_day: None,
        })
        .build()
        .unwrap();
    let (day, options) = fresh_day();
    let plan = genesis.plan_with(REQUEST, &options).await.unwrap();
    assert_eq!(
        p.calls.load(Ordering::SeqCst),
        0,
        "no call beyond the budget"
    );
    assert_eq!(plan.decomposer, "heuristic");
    let reason = plan.degradation_reason.unwrap();
    assert!(reason.contains("rule: budget_day"), "{reason}");
    assert_eq!(plan.planning, None);
    assert_eq!(day.spent(), Usd::ZERO);
}

/// L6-3: `planning.llm_timeout` was never read; slow planning outlasted the request.
/// It bounds the whole decomposition: the heuristic plan comes back at it, naming it,
/// and the call cut off is charged what was set aside for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_llm_planning_falls_back_at_llm_timeout() {
    let (_, url) = provider(vec![], Some(Act::Slow(Duration::from_secs(30)))).await;
    let genesis = llm_planning(&url)
        .llm_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let (day, options) = fresh_day();
    let started = std::time::Instant::now();
    let plan = tokio::time::timeout(
        Duration::from_secs(10),
        genesis.plan_with(REQUEST, &options),
    )
    .await
    .expect("planning must end at llm_timeout, not wait for the provider")
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(plan.decomposer, "heuristic");
    let reason = plan.degradation_reason.unwrap();
    assert!(reason.contains("planning.llm_timeout"), "{reason}");
    assert!(reason.contains("rule: llm_timeout"), "{reason}");
    let planning = plan.planning.unwrap();
    assert_eq!(planning.calls, 1);
    assert!(
        planning.cost > Usd::ZERO,
        "the call cut off may have been billed"
    );
    assert!(close(day.spent(), planning.cost.as_f64()));
    assert_eq!(day.reserved(), Usd::ZERO);
}

/// L6-10: one 429 gave a heuristic plan. A 429 whose Retry-After fits in what is left
/// of `llm_timeout` is retried once; one that does not fit is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_planner_call_is_retried_once_when_its_retry_after_fits() {
    /// Plans after one 429 with `Retry-After: seconds`; the plan and the calls made.
    async fn plan_after_429(seconds: u64) -> (genesis::Plan, usize) {
        let (p, url) = provider(
            vec![Act::Refuse {
                status: 429,
                seconds,
            }],
            None,
        )
        .await;
        let plan = llm_planning(&url)
            .build()
            .unwrap()
            .plan(REQUEST)
            .await
            .unwrap();
        (plan, p.calls.load(Ordering::SeqCst))
    }
    let (plan, calls) = plan_after_429(0).await;
    assert_eq!(
        plan.decomposer, "llm:gpt-4o-mini",
        "{:?}",
        plan.degradation_reason
    );
    assert_eq!(calls, 4, "the 429, then 3 calls");

    let (plan, calls) = plan_after_429(60).await;
    assert_eq!(calls, 1, "a wait past llm_timeout is not made");
    assert_eq!(plan.decomposer, "heuristic");
    assert!(plan.degradation_reason.unwrap().contains("429"));
}

/// L6-4: an answer without `usage` cost $0, so budgets never filled. A call held to a
/// cost limit is charged that limit; one without a limit, an upper-bound estimate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_usage_is_charged_its_reservation_or_an_estimate() {
    let no_usage = Act::Answer {
        content: "done".into(),
        usage: false,
    };
    let (_, url) = provider(vec![], Some(no_usage)).await;
    let agent = LlmAgent::new(providers(&url), Default::default());
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Arc::new(agent)))
        .build()
        .unwrap();
    let mut plan = genesis.plan_sync("Fix the login bug").unwrap();
    for t in &mut plan.tasks {
        t.model.as_mut().unwrap().model = "gpt-4o-mini".into();
    }
    // Without a budget: no limit to hold the call to, so an estimate.
    let result = genesis
        .execute(plan.clone(), RunOptions::default())
        .unwrap()
        .wait()
        .await;
    assert_eq!(result.status, RunStatus::Succeeded);
    for t in &result.tasks {
        assert!(t.cost > Usd::ZERO, "{} cost nothing", t.task_id);
        assert_eq!(t.input_tokens, 0, "unknown tokens are not made up");
    }
    let sum: Usd = result.tasks.iter().map(|t| t.cost).sum();
    assert!(close(result.cost, sum.as_f64()));

    // With a budget every call is held to what was set aside, and charged it.
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    // The journal holds the run before its events, as the server's store does.
    let id = crate::support::create_run(&store, &plan);
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut run = genesis
        .execute(
            plan,
            RunOptions {
                run_id: Some(id),
                budget: Some(usd(0.05)),
                journal: Some(store.clone()),
                ..RunOptions::default()
            },
        )
        .unwrap();
    let mut rx = run.events();
    let seen = Arc::clone(&events);
    let collect = tokio::spawn(async move {
        while let Ok(e) = rx.recv().await {
            let last = matches!(e, RunEvent::RunFinished { .. });
            seen.lock().unwrap().push(e);
            if last {
                break;
            }
        }
    });
    let result = run.wait().await;
    collect.await.unwrap();
    assert_eq!(result.status, RunStatus::Succeeded);
    let bounded: Usd = result.tasks.iter().map(|t| t.cost).sum();
    // Each call's reservation (its prompt at a token per byte and its output limit) is
    // above the estimate of the same call, whose answer is 4 bytes.
    assert!(bounded > sum, "reservation {bounded} <= estimate {sum}");
    assert!(close(result.cost, bounded.as_f64()));
    assert!(result.cost.as_f64() <= 0.05 + 1e-9);
}

/// An agent charging a fixed amount per call.
struct Fixed(f64);

#[async_trait]
impl Agent for Fixed {
    async fn execute(&self, request: AgentRequest) -> Result<AgentOutput, AgentError> {
        Ok(AgentOutput {
            text: format!("done {}", request.task.id),
            cost: usd(self.0),
            ..AgentOutput::default()
        })
    }
}

/// Bounds its cost (floor $0.20, ceiling $5) and spends whatever it is allowed; with
/// `hang`, never answers.
struct Spender {
    hang: bool,
    allowed: Mutex<Vec<Usd>>,
}

#[async_trait]
impl Agent for Spender {
    fn cost_bounds(&self, _: &AgentRequest) -> Option<CostBounds> {
        Some(CostBounds {
            floor: usd(0.2),
            ceiling: usd(5.0),
        })
    }

    async fn execute(&self, request: AgentRequest) -> Result<AgentOutput, AgentError> {
        let max = request.max_cost.unwrap();
        self.allowed.lock().unwrap().push(max);
        if self.hang {
            std::future::pending::<()>().await;
        }
        Ok(AgentOutput {
            text: "done".into(),
            cost: max,
            ..AgentOutput::default()
        })
    }
}

/// `n` tasks in a chain (each waits for the one before).
fn chain(genesis: &Orchestrator, n: usize) -> genesis::Plan {
    let mut dag = TaskDag::new(Limits::default());
    for k in 1..=n {
        dag.add_task(
            Task::new(
                TaskId::new(format!("t{k}")),
                TaskKind::Implement,
                format!("Write the invoice endpoint number {k}"),
            ),
            None,
        )
        .unwrap();
        if k > 1 {
            dag.add_dependency(
                &TaskId::new(format!("t{}", k - 1)),
                &TaskId::new(format!("t{k}")),
            )
            .unwrap();
        }
    }
    genesis
        .plan_dag("Write the invoice endpoints", &dag, &PlanOptions::default())
        .unwrap()
}

/// U6-4: the first task was handed the whole run budget as `max_cost`, spent it, and
/// the next tasks failed `budget_run`. A bounded call gets a fair share of what is left.
#[tokio::test(start_paused = true)]
async fn a_bounded_call_leaves_room_for_the_runs_other_tasks() {
    let agent = Arc::new(Spender {
        hang: false,
        allowed: Mutex::new(Vec::new()),
    });
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Arc::clone(&agent) as Arc<dyn Agent>))
        .build()
        .unwrap();
    let plan = chain(&genesis, 3);
    let result = genesis
        .execute(
            plan,
            RunOptions {
                budget: Some(usd(1.0)),
                ..RunOptions::default()
            },
        )
        .unwrap()
        .wait()
        .await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:?}", result.tasks);
    let allowed = agent.allowed.lock().unwrap().clone();
    assert_eq!(allowed.len(), 3);
    for a in &allowed {
        assert!((a.as_f64() - 1.0 / 3.0).abs() < 1e-9, "{allowed:?}");
    }
    assert!(result.cost.as_f64() <= 1.0 + 1e-9);
}

/// Verification V6: an equal split held a task planned on the dearest model to a
/// fourteenth of the budget and cut its answer short while most of the budget was left.
/// The share follows the tasks' planned estimates: the middle task, planned at three
/// times the others, gets three times their share.
#[tokio::test(start_paused = true)]
async fn the_fair_share_follows_the_tasks_planned_estimates() {
    let agent = Arc::new(Spender {
        hang: false,
        allowed: Mutex::new(Vec::new()),
    });
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Arc::clone(&agent) as Arc<dyn Agent>))
        .build()
        .unwrap();
    let mut plan = chain(&genesis, 3);
    for (t, estimate) in plan.tasks.iter_mut().zip([0.1, 0.3, 0.1]) {
        t.model.as_mut().unwrap().estimated_cost = usd(estimate);
    }
    let result = genesis
        .execute(
            plan,
            RunOptions {
                budget: Some(usd(1.0)),
                ..RunOptions::default()
            },
        )
        .unwrap()
        .wait()
        .await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:?}", result.tasks);
    let allowed: Vec<f64> = agent
        .allowed
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.as_f64())
        .collect();
    // t1: 1.0 × 0.1 / 0.5; t2: what is left, 0.8, × 0.3 / 0.4; t3: the rest.
    let want = [0.2, 0.6, 0.2];
    assert_eq!(allowed.len(), 3, "{allowed:?}");
    for (a, w) in allowed.iter().zip(want) {
        assert!((a - w).abs() < 1e-9, "{allowed:?} against {want:?}");
    }
    assert!(result.cost.as_f64() <= 1.0 + 1e-9);
}

/// L6-7: a task failed by the run's deadline said `attempts: 0` and `cost: 0` though
/// its call was charged. It carries both, in its event, its report and the store.
/// (Real clock: the journal writes on a thread of its own, which a paused clock would
/// not wait for before jumping to the deadline.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_failed_by_the_run_deadline_keeps_its_cost_and_attempts() {
    let agent = Arc::new(Spender {
        hang: true,
        allowed: Mutex::new(Vec::new()),
    });
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Arc::clone(&agent) as Arc<dyn Agent>))
        .executor_config(ExecutorConfig {
            run_timeout: Duration::from_millis(500),
            task_timeout: Duration::from_secs(60),
            ..ExecutorConfig::default()
        })
        .build()
        .unwrap();
    let plan = chain(&genesis, 1);
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let id = crate::support::create_run(&store, &plan);
    let mut run = genesis
        .execute(
            plan,
            RunOptions {
                run_id: Some(id.clone()),
                budget: Some(usd(1.0)),
                journal: Some(store.clone()),
                ..RunOptions::default()
            },
        )
        .unwrap();
    let mut rx = run.events();
    let result = tokio::time::timeout(Duration::from_secs(30), run.wait())
        .await
        .expect("the run ends at its deadline");
    let mut failed = None;
    while let Ok(e) = rx.try_recv() {
        if let RunEvent::TaskFailed { attempts, cost, .. } = e {
            failed = Some((attempts, cost));
        }
    }
    assert_eq!(result.status, RunStatus::Failed);
    let task = &result.tasks[0];
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.attempts, 1);
    assert!(
        close(task.cost, 1.0),
        "charged what was set aside: {}",
        task.cost
    );
    assert!(close(result.cost, 1.0));
    let (attempts, cost) = failed.expect("a task_failed event");
    assert_eq!(attempts, 1);
    assert!(close(cost, 1.0));
    let stored = store.get_run(id.as_str()).unwrap().unwrap();
    assert!(close(stored.tasks[0].cost, 1.0), "{}", stored.tasks[0].cost);
    assert_eq!(stored.tasks[0].attempts, 1);
}
