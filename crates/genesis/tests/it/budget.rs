//! Money: a caller's budget is capped by the operator's, calls in flight together
//! cannot overspend a run's or a day's budget (reservations), and every call's cost is
//! counted once in `genesis_cost_usd`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Json;
use axum::routing::post;
use genesis::core::{Task, TaskId, TaskKind, Usd};
use genesis::daao::{Budget, BudgetScope};
use genesis::htdag::{Limits, TaskDag};
use genesis::llm::{LlmClient, ModelPrice, ScriptedClient, Usage};
use genesis::providers::{LlmAgent, LlmProviders};
use genesis::run::backends::{HttpAgent, HttpAgentConfig};
use genesis::run::{
    Agent, AgentError, AgentOutput, AgentRequest, AgentSet, DaySpend, ExecutorConfig, RunEvent,
    RunStatus, TaskStatus,
};
use genesis::{GenesisError, Orchestrator, Plan, PlanOptions, RunOptions};

fn usd(v: f64) -> Usd {
    Usd::new(v).unwrap()
}

/// A plan of `n` independent tasks (they run at the same time), each estimated at
/// `estimate`.
fn parallel_plan(genesis: &Orchestrator, n: usize, estimate: f64) -> Plan {
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
    }
    let mut plan = genesis
        .plan_dag("Write the invoice endpoints", &dag, &PlanOptions::default())
        .unwrap();
    for t in &mut plan.tasks {
        assert!(t.depends_on.is_empty());
        t.model.as_mut().unwrap().estimated_cost = usd(estimate);
    }
    plan
}

/// Charges `cost` per call, after waiting (up to a minute of paused time) until
/// `parties` calls are in flight at once: without reservations, every task of a
/// parallel plan passes the budget check before any of them has charged.
struct Barrier {
    barrier: tokio::sync::Barrier,
    cost: f64,
    calls: AtomicUsize,
}

impl Barrier {
    fn new(parties: usize, cost: f64) -> Arc<Self> {
        Arc::new(Barrier {
            barrier: tokio::sync::Barrier::new(parties),
            cost,
            calls: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Agent for Barrier {
    async fn execute(&self, request: AgentRequest) -> Result<AgentOutput, AgentError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = tokio::time::timeout(Duration::from_secs(60), self.barrier.wait()).await;
        Ok(AgentOutput {
            text: format!("done {}", request.task.id),
            cost: usd(self.cost),
            ..AgentOutput::default()
        })
    }
}

/// The `budget_exceeded` events of `events`.
fn budget_events(events: &[RunEvent]) -> Vec<&RunEvent> {
    events
        .iter()
        .filter(|e| matches!(e, RunEvent::BudgetExceeded { .. }))
        .collect()
}

async fn drain(mut rx: tokio::sync::broadcast::Receiver<RunEvent>) -> Vec<RunEvent> {
    let mut events = Vec::new();
    while let Ok(e) = rx.recv().await {
        let last = matches!(e, RunEvent::RunFinished { .. });
        events.push(e);
        if last {
            break;
        }
    }
    events
}

#[tokio::test(start_paused = true)]
async fn tasks_in_flight_together_cannot_overspend_the_run_budget() {
    let agent = Barrier::new(2, 0.10);
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Arc::clone(&agent) as Arc<dyn Agent>))
        .build()
        .unwrap();
    let plan = parallel_plan(&genesis, 2, 0.10);
    let options = RunOptions {
        budget: Some(usd(0.15)),
        ..RunOptions::default()
    };
    let mut run = genesis.execute(plan, options).unwrap();
    let events = tokio::spawn(drain(run.events()));
    let result = run.wait().await;
    let events = events.await.unwrap();
    assert!(
        result.cost.as_f64() <= 0.15 + 1e-9,
        "spent {} of a $0.15 budget",
        result.cost
    );
    assert_eq!(agent.calls.load(Ordering::SeqCst), 1, "only one call fits");
    assert_eq!(result.status, RunStatus::Failed);
    let failed: Vec<_> = result
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", result.tasks);
    // The second task waited for the first call to settle (its $0.10 estimate left room
    // for it until then), then found the money spent.
    let reason = failed[0].error.as_deref().unwrap();
    assert!(reason.contains("rule: budget_run"), "{reason}");
    assert!(
        reason.contains("spent $0.1000 + reserved $0.0000"),
        "{reason}"
    );
    match budget_events(&events).as_slice() {
        [
            RunEvent::BudgetExceeded {
                task_id,
                scope,
                spent,
                reserved,
                requested,
                limit,
            },
        ] => {
            assert_eq!(task_id, &failed[0].task_id);
            assert_eq!(*scope, BudgetScope::Run);
            assert_eq!((*spent, *reserved), (usd(0.10), Usd::ZERO));
            assert_eq!((*requested, *limit), (usd(0.10), usd(0.15)));
        }
        other => panic!("expected one budget_exceeded event, got {other:?}"),
    }
    // The structured event comes with (right before) the failure it explains.
    let at = events
        .iter()
        .position(|e| matches!(e, RunEvent::BudgetExceeded { .. }))
        .unwrap();
    assert!(
        matches!(&events[at + 1], RunEvent::TaskFailed { task_id, .. } if *task_id == failed[0].task_id),
        "{events:?}"
    );
}

/// Answers after a second at a tenth of its estimated cost.
struct Cheap(AtomicUsize);

#[async_trait]
impl Agent for Cheap {
    async fn execute(&self, request: AgentRequest) -> Result<AgentOutput, AgentError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(AgentOutput {
            text: format!("done {}", request.task.id),
            cost: usd(0.04),
            ..AgentOutput::default()
        })
    }
}

/// Estimates hold room only while their call is made, and a task that would fit once
/// the calls in flight settle waits for them instead of failing: three $0.40 estimates
/// against $1.00, one call at a time or all at once, all run (review R5: queued tasks
/// held reservations, and the third task failed with $0.02 spent).
#[tokio::test(start_paused = true)]
async fn a_task_that_fits_once_calls_in_flight_settle_waits_instead_of_failing() {
    for in_flight in [1, 3] {
        let agent = Arc::new(Cheap(AtomicUsize::new(0)));
        let genesis = Orchestrator::builder()
            .agents(AgentSet::new().with_fallback(Arc::clone(&agent) as Arc<dyn Agent>))
            .executor_config(ExecutorConfig {
                max_tasks_in_flight: in_flight,
                ..ExecutorConfig::default()
            })
            .build()
            .unwrap();
        let plan = parallel_plan(&genesis, 3, 0.40);
        let options = RunOptions {
            budget: Some(usd(1.0)),
            ..RunOptions::default()
        };
        let result = genesis.execute(plan, options).unwrap().wait().await;
        assert_eq!(result.status, RunStatus::Succeeded, "{:?}", result.tasks);
        assert_eq!(agent.0.load(Ordering::SeqCst), 3);
        assert!(
            (result.cost.as_f64() - 0.12).abs() < 1e-9,
            "{}",
            result.cost
        );
    }
}

#[tokio::test(start_paused = true)]
async fn runs_in_flight_together_cannot_overspend_the_daily_budget() {
    let agent = Barrier::new(2, 0.10);
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Arc::clone(&agent) as Arc<dyn Agent>))
        .budget(Budget {
            per_run: None,
            per_day: Some(usd(0.15)),
            per_subject_day: None,
        })
        .build()
        .unwrap();
    let day = DaySpend::new(Usd::ZERO);
    let start = || {
        let options = RunOptions {
            day: Some(day.clone()),
            ..RunOptions::default()
        };
        genesis
            .execute(parallel_plan(&genesis, 1, 0.10), options)
            .unwrap()
    };
    let (a, b) = (start(), start());
    let (a, b) = tokio::join!(a.wait(), b.wait());
    assert!(
        day.spent().as_f64() <= 0.15 + 1e-9,
        "two runs spent {} of a $0.15 day",
        day.spent()
    );
    assert_eq!(day.reserved(), Usd::ZERO, "every reservation was settled");
    assert_eq!(agent.calls.load(Ordering::SeqCst), 1);
    let mut statuses = [a.status, b.status];
    statuses.sort_by_key(|s| s.as_str());
    assert_eq!(statuses, [RunStatus::Failed, RunStatus::Succeeded]);
    let reason = [a, b]
        .iter()
        .flat_map(|r| r.tasks.iter())
        .find_map(|t| t.error.clone())
        .unwrap();
    assert!(reason.contains("rule: budget_day"), "{reason}");
}

#[tokio::test]
async fn a_run_budget_above_the_configured_one_is_refused_naming_both() {
    let genesis = Orchestrator::builder()
        .budget(Budget {
            per_run: Some(usd(1.0)),
            per_day: None,
            per_subject_day: None,
        })
        .build()
        .unwrap();
    let above = PlanOptions {
        budget: Some(usd(1000.0)),
        ..PlanOptions::default()
    };
    let err = genesis
        .plan_with("Fix the crash when uploading large files", &above)
        .await
        .unwrap_err();
    match &err {
        GenesisError::BudgetAboveLimit { requested, limit } => {
            assert_eq!((*requested, *limit), (usd(1000.0), usd(1.0)));
        }
        other => panic!("expected BudgetAboveLimit, got {other:?}"),
    }
    assert_eq!((err.rule(), err.http_status()), ("budget_usd".into(), 400));
    let message = err.to_string();
    assert!(
        message.contains("$1000.0000") && message.contains("$1.0000"),
        "{message}"
    );
    // At or below the cap, the caller's budget applies.
    assert_eq!(genesis.run_budget(Some(usd(0.5))).unwrap(), Some(usd(0.5)));
    assert_eq!(genesis.run_budget(Some(usd(1.0))).unwrap(), Some(usd(1.0)));
    assert_eq!(genesis.run_budget(None).unwrap(), Some(usd(1.0)));
    let below = PlanOptions {
        budget: Some(usd(0.5)),
        ..PlanOptions::default()
    };
    let plan = genesis
        .plan_with("Fix the crash when uploading large files", &below)
        .await
        .unwrap();
    // Executing is capped the same way.
    let err = genesis
        .execute(
            plan,
            RunOptions {
                budget: Some(usd(2.0)),
                ..RunOptions::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, GenesisError::BudgetAboveLimit { requested, limit } if requested == usd(2.0) && limit == usd(1.0)),
        "{err:?}"
    );
    // Without a configured cap, any budget goes.
    let uncapped = Orchestrator::builder().build().unwrap();
    assert_eq!(
        uncapped.run_budget(Some(usd(1000.0))).unwrap(),
        Some(usd(1000.0))
    );
}

/// The `genesis_cost_usd` value a Prometheus rendering holds (0 when absent).
fn cost_total(rendered: &str) -> f64 {
    rendered
        .lines()
        .find_map(|l| l.strip_prefix("genesis_cost_usd "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// An HTTP agent service on loopback charging $0.01 per call.
async fn priced_service() -> String {
    let app = axum::Router::new().route(
        "/task",
        post(|Json(body): Json<serde_json::Value>| async move {
            let task = body["task"]["id"].as_str().unwrap_or("?").to_owned();
            Json(serde_json::json!({"output": format!("done {task}"), "cost_usd": 0.01}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/task")
}

/// A run with an HTTP agent and LLM agents: the cost metric ends at the run's cost,
/// each call counted once where it was made (the run's tasks all run on this thread,
/// so a local recorder sees them).
#[test]
fn every_agent_call_is_counted_once_in_the_cost_metric() {
    let recorder = genesis::telemetry::build_prometheus_recorder().unwrap();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let llm = Arc::new(ScriptedClient::new("gpt-4o-mini").with_price(ModelPrice {
        input_per_million: usd(1.0),
        output_per_million: usd(2.0),
    }));
    for _ in 0..2 {
        llm.push_text_with_usage(
            "done by the model",
            Usage {
                input_tokens: 1000,
                output_tokens: 500,
            },
        );
    }
    let result = metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let url = priced_service().await;
            let providers = LlmProviders::from_clients(
                vec![Arc::clone(&llm) as Arc<dyn LlmClient>],
                Default::default(),
            );
            // Planned over the models a provider serves, as `orchestrator_from_config`
            // does: the LLM tasks get gpt-4o-mini.
            let catalog = Orchestrator::builder()
                .build()
                .unwrap()
                .selector()
                .catalog()
                .clone();
            let planner = Orchestrator::builder()
                .models(providers.served_catalog(&catalog).unwrap())
                .build()
                .unwrap();
            let plan = parallel_plan(&planner, 3, 0.001);
            let http_agent = plan.tasks[0].agent.clone().unwrap();
            assert!(
                plan.tasks[1..]
                    .iter()
                    .all(|t| t.agent.as_ref() == Some(&http_agent)),
                "the same kind routes to the same agent"
            );
            let http: Arc<dyn Agent> = Arc::new(HttpAgent::new(
                http_agent.clone(),
                HttpAgentConfig {
                    timeout: Duration::from_secs(10),
                    ..HttpAgentConfig::new(url)
                },
                genesis::llm::http_client_builder()
                    .unwrap()
                    .build()
                    .unwrap(),
            ));
            let model: Arc<dyn Agent> =
                Arc::new(LlmAgent::new(providers, std::collections::HashMap::new()));
            // One task on the HTTP agent, the other two on another agent run by an LLM.
            let other = planner
                .router()
                .registry()
                .iter()
                .map(|a| a.id.clone())
                .find(|a| *a != http_agent)
                .unwrap();
            let mut plan = plan;
            for t in &mut plan.tasks[1..] {
                t.agent = Some(other.clone());
                t.route.alternatives.clear();
            }
            let genesis = Orchestrator::builder()
                .agents(AgentSet::new().with(http_agent, http).with(other, model))
                .build()
                .unwrap();
            genesis
                .execute(plan, RunOptions::default())
                .unwrap()
                .wait()
                .await
        })
    });
    assert_eq!(result.status, RunStatus::Succeeded, "{:?}", result.tasks);
    assert_eq!(llm.calls(), 2);
    // $0.01 (HTTP) + 2 x (1000 x $1 + 500 x $2) / 1M (LLM).
    let want = 0.01 + 2.0 * 0.002;
    assert!(
        (result.cost.as_f64() - want).abs() < 1e-9,
        "{}",
        result.cost
    );
    let counted = cost_total(&handle.render());
    assert!(
        (counted - want).abs() < 1e-9,
        "genesis_cost_usd {counted}, the run spent {want}"
    );
}

/// What a loopback HTTP agent saw: each request's `max_cost_usd` (absent = `None`) and
/// the most requests it held at once.
#[derive(Default)]
struct Seen {
    limits: std::sync::Mutex<Vec<Option<f64>>>,
    in_flight: AtomicUsize,
    most: AtomicUsize,
    arrived: tokio::sync::Notify,
}

/// An HTTP agent on loopback that records what it is sent, then answers `cost_usd`
/// after `takes` (or never, with `None`).
async fn limited_service(seen: Arc<Seen>, takes: Option<Duration>, cost: f64) -> String {
    let app = axum::Router::new().route(
        "/task",
        post(move |Json(body): Json<serde_json::Value>| {
            let seen = Arc::clone(&seen);
            async move {
                seen.limits
                    .lock()
                    .unwrap()
                    .push(body.get("max_cost_usd").and_then(serde_json::Value::as_f64));
                let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                seen.most.fetch_max(now, Ordering::SeqCst);
                seen.arrived.notify_one();
                match takes {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
                seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                Json(serde_json::json!({"output": "done", "cost_usd": cost}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/task")
}

fn http_agent(url: String, max_cost: Option<f64>) -> Arc<dyn Agent> {
    let mut config = HttpAgentConfig::new(url);
    config.max_cost_usd = max_cost.map(usd);
    Arc::new(HttpAgent::new(
        "http",
        config,
        genesis::llm::http_client_builder()
            .unwrap()
            .build()
            .unwrap(),
    ))
}

/// An HTTP agent with `max_cost_usd` sets aside its whole limit per call, is sent that
/// limit, and so cannot pass a budget however low the plan's estimates are: three
/// calls with a $0.05 limit against $0.12 run at most two at a time. Without the limit
/// the request carries none and the three run together on their estimates.
#[tokio::test]
async fn an_http_agent_with_a_cost_limit_is_sent_it_and_held_to_it() {
    for limit in [Some(0.05), None] {
        let seen = Arc::new(Seen::default());
        let url = limited_service(Arc::clone(&seen), Some(Duration::from_millis(200)), 0.02).await;
        let genesis = Orchestrator::builder()
            .agents(AgentSet::new().with_fallback(http_agent(url, limit)))
            .build()
            .unwrap();
        let plan = parallel_plan(&genesis, 3, 0.001);
        let options = RunOptions {
            budget: Some(usd(0.12)),
            ..RunOptions::default()
        };
        let result = genesis.execute(plan, options).unwrap().wait().await;
        assert_eq!(result.status, RunStatus::Succeeded, "{:?}", result.tasks);
        assert!(
            (result.cost.as_f64() - 0.06).abs() < 1e-9,
            "{}",
            result.cost
        );
        let limits = seen.limits.lock().unwrap().clone();
        assert_eq!(limits, vec![limit; 3], "limit {limit:?}");
        let most = seen.most.load(Ordering::SeqCst);
        match limit {
            Some(_) => assert_eq!(most, 2, "two $0.05 limits fit in $0.12, not three"),
            None => assert_eq!(most, 3, "$0.001 estimates all fit"),
        }
    }
}

/// Cancelling a run with a call in flight on an HTTP agent that has a cost limit
/// charges the run that limit (the service may still bill it); without a limit the
/// estimate is given back.
#[tokio::test]
async fn a_cancelled_http_call_with_a_cost_limit_is_charged_the_limit() {
    for (limit, charged) in [(Some(0.05), 0.05), (None, 0.0)] {
        let seen = Arc::new(Seen::default());
        let url = limited_service(Arc::clone(&seen), None, 0.02).await;
        let genesis = Orchestrator::builder()
            .agents(AgentSet::new().with_fallback(http_agent(url, limit)))
            .build()
            .unwrap();
        let plan = parallel_plan(&genesis, 1, 0.001);
        let options = RunOptions {
            budget: Some(usd(1.0)),
            ..RunOptions::default()
        };
        let handle = genesis.execute(plan, options).unwrap();
        seen.arrived.notified().await;
        handle.cancel();
        let result = handle.wait().await;
        assert_eq!(result.status, RunStatus::Cancelled);
        assert!(
            (result.cost.as_f64() - charged).abs() < 1e-9,
            "limit {limit:?}: cost {}",
            result.cost
        );
    }
}

/// `min_cost_usd` must come with `max_cost_usd` and not above it; the error names the
/// agent, the rule and both values.
#[test]
fn backend_cost_limits_that_disagree_are_refused() {
    let config = |limits: &str| -> genesis::GenesisConfig {
        toml::from_str(&format!(
            "[backends.qa]\ntype = \"http\"\nurl = \"http://127.0.0.1:9/task\"\n{limits}\n"
        ))
        .unwrap()
    };
    let err =
        genesis::orchestrator_from_config(&config("min_cost_usd = 0.5\nmax_cost_usd = 0.2"), &[])
            .err()
            .unwrap()
            .to_string();
    assert!(
        err.contains("backends.qa: min_cost_usd $0.5000 is above max_cost_usd $0.2000 (rule: backend_cost_limits)"),
        "{err}"
    );
    let err = genesis::orchestrator_from_config(&config("min_cost_usd = 0.5"), &[])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("min_cost_usd $0.5000 needs max_cost_usd (rule: backend_cost_limits)"),
        "{err}"
    );
    assert!(
        genesis::orchestrator_from_config(&config("min_cost_usd = 0.2\nmax_cost_usd = 0.2"), &[])
            .is_ok()
    );
}

/// A loopback HTTP service that counts its requests, answers `200` with a
/// `content-length` it never finishes sending (it is at work and may bill), and stalls.
async fn stalling_service(requests: Arc<AtomicUsize>) -> String {
    raw_service(
        requests,
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"output\":",
        Some(Duration::from_secs(30)),
    )
    .await
}

/// A loopback HTTP service that counts the requests it read in full and writes `reply`
/// (nothing, a status line and headers, or part of a body) as the answer; then it
/// holds the connection open for `stall`, or closes it at once (`None`).
async fn raw_service(
    requests: Arc<AtomicUsize>,
    reply: &'static [u8],
    stall: Option<Duration>,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let requests = Arc::clone(&requests);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                // The request, as it arrives (until the client has sent it all).
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(50), sock.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                }
                requests.fetch_add(1, Ordering::SeqCst);
                let _ = sock.write_all(reply).await;
                match stall {
                    Some(stall) => tokio::time::sleep(stall).await,
                    None => {
                        let _ = sock.shutdown().await;
                    }
                }
            });
        }
    });
    format!("http://{addr}/task")
}

/// Review R9: an HTTP agent with `max_cost_usd` whose call times out after the service
/// answered its headers (the body stalls past `timeout`) is a timeout like one with no
/// answer at all: every such call is charged its limit, and the budget stops the
/// retries. (It was a transient error: the limit was given back and retried, so 20
/// calls that may each be billed $0.05 cost the run $0.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_http_call_that_stalls_in_its_body_is_charged_its_limit() {
    let requests = Arc::new(AtomicUsize::new(0));
    let url = stalling_service(Arc::clone(&requests)).await;
    let mut config = HttpAgentConfig::new(url);
    config.timeout = Duration::from_millis(300);
    config.max_cost_usd = Some(usd(0.05));
    let agent: Arc<dyn Agent> = Arc::new(HttpAgent::new(
        "http",
        config,
        genesis::llm::http_client_builder()
            .unwrap()
            .build()
            .unwrap(),
    ));
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(agent))
        .build()
        .unwrap();
    let plan = parallel_plan(&genesis, 1, 0.001);
    let options = RunOptions {
        budget: Some(usd(0.10)),
        ..RunOptions::default()
    };
    let result = genesis.execute(plan, options).unwrap().wait().await;
    assert_eq!(result.status, RunStatus::Failed, "{:?}", result.tasks);
    let calls = requests.load(Ordering::SeqCst);
    assert_eq!(calls, 2, "two $0.05 limits fit in $0.10");
    assert!(
        (result.cost.as_f64() - 0.10).abs() < 1e-9,
        "{}",
        result.cost
    );
    let error = result.tasks[0].error.clone().unwrap_or_default();
    assert!(error.contains("rule: budget_run"), "{error}");
}

/// Runs one task on an HTTP agent at `url` with a $0.05 `max_cost_usd` under a $0.10
/// run budget; returns the run's cost and its task's error.
async fn capped_run(url: String, max_response_bytes: Option<usize>) -> (f64, String) {
    let mut config = HttpAgentConfig::new(url);
    config.timeout = Duration::from_secs(5);
    config.max_cost_usd = Some(usd(0.05));
    if let Some(max) = max_response_bytes {
        config.max_response_bytes = max;
    }
    let client = genesis::llm::http_client_builder()
        .unwrap()
        .build()
        .unwrap();
    let agent: Arc<dyn Agent> = Arc::new(HttpAgent::new("http", config, client));
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(agent))
        .build()
        .unwrap();
    let plan = parallel_plan(&genesis, 1, 0.001);
    let options = RunOptions {
        budget: Some(usd(0.10)),
        ..RunOptions::default()
    };
    let result = genesis.execute(plan, options).unwrap().wait().await;
    assert_eq!(result.status, RunStatus::Failed, "{:?}", result.tasks);
    let error = result.tasks[0].error.clone().unwrap_or_default();
    (result.cost.as_f64(), error)
}

/// A capped HTTP call the service may have done and billed, but whose answer was lost
/// or unusable, is charged its limit like a timeout: the connection closed after the
/// request was sent, a 2xx body that broke off, a 2xx body over `max_response_bytes`.
/// Two such calls use up a $0.10 budget. (Each gave its $0.05 back before, so the
/// budget never stopped them.) A call the service refused (503) or that never reached
/// it (nothing listening) still costs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_http_call_whose_answer_is_lost_is_charged_its_limit_and_a_refused_one_is_not() {
    let lost: [(&str, &'static [u8], Option<usize>); 3] = [
        ("closed after the request", b"", None),
        (
            "body broke off",
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"output\":",
            None,
        ),
        (
            "body too large",
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 64\r\n\r\n0123456789012345678901234567890123456789012345678901234567890123",
            Some(16),
        ),
    ];
    for (case, reply, max) in lost {
        let requests = Arc::new(AtomicUsize::new(0));
        let url = raw_service(Arc::clone(&requests), reply, None).await;
        let (cost, error) = capped_run(url, max).await;
        assert!((cost - 0.10).abs() < 1e-9, "{case}: cost {cost}, {error}");
        assert_eq!(requests.load(Ordering::SeqCst), 2, "{case}: {error}");
        assert!(error.contains("rule: budget_run"), "{case}: {error}");
    }

    let requests = Arc::new(AtomicUsize::new(0));
    let url = raw_service(
        Arc::clone(&requests),
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy",
        None,
    )
    .await;
    let (cost, error) = capped_run(url, None).await;
    assert_eq!(cost, 0.0, "503: {error}");
    assert!(requests.load(Ordering::SeqCst) > 2, "503: {error}");
    assert!(error.contains("503"), "{error}");

    // Nothing listens on a port just freed.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/task", closed.local_addr().unwrap());
    drop(closed);
    let (cost, error) = capped_run(url, None).await;
    assert_eq!(cost, 0.0, "unreachable: {error}");
    assert!(error.contains("cannot reach"), "{error}");
}
