//! Executor tests: real HTTP agents on loopback, ordering, parallelism, data flow, cost,
//! re-routing, cancellation, resumption, and a chaos run.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Json;
use axum::extract::State;
use axum::routing::post;
use genesis::Orchestrator;
use genesis::core::{AgentId, Usd};
use genesis::resilience::BreakerState;
use genesis::run::backends::{HttpAgent, HttpAgentConfig};
use genesis::run::{
    Agent, AgentError, AgentOutput, AgentRequest, AgentSet, ExecutorConfig, RunEvent, RunStatus,
    TaskStatus,
};

/// What the stub agent service saw.
#[derive(Default)]
struct Seen {
    /// task id -> (start seq, end seq)
    spans: Mutex<HashMap<String, (usize, usize)>>,
    /// task id -> input task ids and outputs
    inputs: Mutex<HashMap<String, Vec<(String, String)>>>,
    clock: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    calls: AtomicUsize,
}

async fn agent_endpoint(
    State(seen): State<Arc<Seen>>,
    Json(body): Json<serde_json::Value>,
) -> Json<serde_json::Value> {
    let task = body["task"]["id"].as_str().unwrap_or_default().to_owned();
    let start = seen.clock.fetch_add(1, Ordering::SeqCst);
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
    seen.calls.fetch_add(1, Ordering::SeqCst);
    let inputs: Vec<(String, String)> = body["inputs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    (
                        i["task_id"].as_str().unwrap_or_default().to_owned(),
                        i["output"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    seen.inputs.lock().unwrap().insert(task.clone(), inputs);
    // Real time on a real server: long enough for siblings to overlap.
    tokio::time::sleep(Duration::from_millis(30)).await;
    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
    let end = seen.clock.fetch_add(1, Ordering::SeqCst);
    seen.spans
        .lock()
        .unwrap()
        .insert(task.clone(), (start, end));
    Json(serde_json::json!({"output": format!("result of {task}"), "cost_usd": 0.01}))
}

async fn start_agent_service(seen: Arc<Seen>) -> String {
    let app = axum::Router::new()
        .route("/task", post(agent_endpoint))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}/task")
}

fn http_client() -> reqwest::Client {
    genesis::llm::http_client_builder()
        .unwrap()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_plan_on_http_agents_in_order_in_parallel_with_data_flow_and_cost() {
    let seen = Arc::new(Seen::default());
    let url = start_agent_service(Arc::clone(&seen)).await;
    let client = http_client();
    let agent: Arc<dyn Agent> = Arc::new(HttpAgent::new(
        "http",
        HttpAgentConfig {
            timeout: Duration::from_secs(10),
            ..HttpAgentConfig::new(url)
        },
        client,
    ));
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(agent))
        .build()
        .unwrap();
    let plan = genesis
        .plan_sync("Build a SaaS business for invoices")
        .unwrap();
    assert!(plan.tasks.len() >= 20, "{} tasks", plan.tasks.len());
    let dag = plan.to_dag(genesis.limits()).unwrap();
    let mut handle = genesis.execute(plan.clone(), Default::default()).unwrap();
    let mut events = handle.events();
    let result = handle.wait().await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:#?}", result.tasks);
    assert_eq!(
        seen.calls.load(Ordering::SeqCst),
        plan.tasks.len(),
        "each task ran exactly once"
    );

    // Order: every task started after all of its prerequisites finished.
    let spans = seen.spans.lock().unwrap();
    for t in &plan.tasks {
        let (start, _) = spans[t.id.as_str()];
        for p in dag.prerequisites(t.id.as_str()) {
            let (_, end) = spans[p.as_str()];
            assert!(
                end < start,
                "{} started before its prerequisite {p} finished",
                t.id
            );
        }
    }
    // Parallelism: independent tasks overlapped.
    assert!(
        seen.max_in_flight.load(Ordering::SeqCst) >= 2,
        "no parallelism observed"
    );
    // Data flow: each task received its prerequisites' outputs.
    let inputs = seen.inputs.lock().unwrap();
    for t in &plan.tasks {
        let got: HashSet<&str> = inputs[t.id.as_str()]
            .iter()
            .map(|(id, _)| id.as_str())
            .collect();
        for p in dag.prerequisites(t.id.as_str()) {
            assert!(
                got.contains(p.as_str()),
                "{} did not receive the output of {p}",
                t.id
            );
        }
        for (id, out) in &inputs[t.id.as_str()] {
            assert_eq!(out, &format!("result of {id}"));
        }
    }
    // Cost: recorded per task and in total.
    let want = 0.01 * plan.tasks.len() as f64;
    assert!(
        (result.cost.as_f64() - want).abs() < 1e-9,
        "cost {} want {want}",
        result.cost
    );
    assert!(result.answer.contains("result of t1"));
    // Events: started and succeeded for every task, then run_finished.
    let mut kinds: HashMap<&'static str, usize> = HashMap::new();
    while let Ok(e) = events.try_recv() {
        *kinds.entry(e.kind()).or_default() += 1;
    }
    assert_eq!(kinds.get("task_succeeded").copied(), Some(plan.tasks.len()));
    assert_eq!(kinds.get("run_finished").copied(), Some(1));
}

/// An agent that fails in scripted ways.
struct Flaky {
    calls: AtomicUsize,
    fail_first: usize,
    transient: bool,
}

/// A bug-fix plan, its first task that has ranked alternatives, and that task's agent.
pub(crate) fn bug_fix_plan(
    genesis: &Orchestrator,
) -> (genesis::Plan, genesis::PlannedTask, AgentId) {
    let plan = genesis
        .plan_sync("Fix the crash when uploading large files")
        .unwrap();
    let task = plan
        .tasks
        .iter()
        .find(|t| !t.route.alternatives.is_empty())
        .expect("some task has ranked alternatives")
        .clone();
    let first = task.agent.clone().unwrap();
    (plan, task, first)
}

/// An agent that fails its first `fail_first` calls, transiently or not.
fn flaky(fail_first: usize, transient: bool) -> Arc<Flaky> {
    Arc::new(Flaky {
        calls: AtomicUsize::new(0),
        fail_first,
        transient,
    })
}

#[async_trait]
impl Agent for Flaky {
    async fn execute(&self, r: AgentRequest) -> Result<AgentOutput, AgentError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.fail_first {
            return Err(if self.transient {
                AgentError::Transient {
                    agent: r.agent,
                    message: "503".into(),
                    retry_after: None,
                }
            } else {
                AgentError::Rejected {
                    agent: r.agent,
                    message: "400".into(),
                }
            });
        }
        Ok(AgentOutput {
            text: format!("{} by {}", r.task.id, r.agent),
            cost: Usd::new(0.001).unwrap(),
            ..AgentOutput::default()
        })
    }
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_and_rejections_reroute() {
    let retried = Arc::new(Flaky {
        calls: AtomicUsize::new(0),
        fail_first: 2,
        transient: true,
    });
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(retried.clone()))
        .build()
        .unwrap();
    let plan = genesis.plan_sync("Write a haiku about autumn").unwrap();
    let result = genesis
        .execute(plan, Default::default())
        .unwrap()
        .wait()
        .await;
    assert_eq!(result.status, RunStatus::Succeeded);
    assert_eq!(result.tasks[0].attempts, 3);

    // The assigned agent rejects: the task moves to the next-ranked alternative.
    let (plan, task, first) = bug_fix_plan(&genesis);
    let bad: Arc<dyn Agent> = flaky(usize::MAX, false);
    let good: Arc<dyn Agent> = flaky(0, false);
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with(first.clone(), bad).with_fallback(good))
        .build()
        .unwrap();
    let mut handle = genesis.execute(plan, Default::default()).unwrap();
    let mut events = handle.events();
    let result = handle.wait().await;
    let report = result.tasks.iter().find(|t| t.task_id == task.id).unwrap();
    assert_eq!(report.status, TaskStatus::Succeeded, "{report:?}");
    assert_ne!(report.agent.as_ref(), Some(&first));
    let mut rerouted = false;
    while let Ok(e) = events.try_recv() {
        if let RunEvent::TaskRerouted { task_id, from, .. } = e
            && task_id == task.id
        {
            assert_eq!(from, first);
            rerouted = true;
        }
    }
    assert!(rerouted);
}

#[tokio::test(start_paused = true)]
async fn a_failed_task_skips_its_dependents_with_a_reason() {
    let failing: Arc<dyn Agent> = Arc::new(Flaky {
        calls: AtomicUsize::new(0),
        fail_first: usize::MAX,
        transient: false,
    });
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(failing))
        .build()
        .unwrap();
    let plan = genesis
        .plan_sync("Fix the crash when uploading large files")
        .unwrap();
    let result = genesis
        .execute(plan, Default::default())
        .unwrap()
        .wait()
        .await;
    assert_eq!(result.status, RunStatus::Failed);
    for t in &result.tasks {
        assert!(
            matches!(t.status, TaskStatus::Failed | TaskStatus::Skipped),
            "{t:?}"
        );
        assert!(t.error.as_deref().is_some_and(|e| !e.is_empty()), "{t:?}");
    }
    assert!(result.tasks.iter().any(|t| t.status == TaskStatus::Skipped));
}

#[tokio::test(start_paused = true)]
async fn budget_stops_llm_spending() {
    let agent: Arc<dyn Agent> = Arc::new(Flaky {
        calls: AtomicUsize::new(0),
        fail_first: 0,
        transient: false,
    });
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(agent))
        .build()
        .unwrap();
    let plan = genesis
        .plan_sync("Build a SaaS business for invoices")
        .unwrap();
    let options = genesis::RunOptions {
        budget: Some(Usd::new(0.000_000_1).unwrap()),
        ..Default::default()
    };
    let result = genesis.execute(plan, options).unwrap().wait().await;
    assert_eq!(result.status, RunStatus::Failed);
    let reason = result.tasks.iter().find_map(|t| t.error.clone()).unwrap();
    assert!(reason.contains("budget"), "{reason}");
}

/// Blocks until cancelled.
struct Hang;

#[async_trait]
impl Agent for Hang {
    async fn execute(&self, _: AgentRequest) -> Result<AgentOutput, AgentError> {
        std::future::pending::<()>().await;
        Ok(AgentOutput::default())
    }
}

#[tokio::test(start_paused = true)]
async fn cancellation_stops_the_run() {
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Arc::new(Hang)))
        .executor_config(ExecutorConfig {
            task_timeout: Duration::from_secs(3600),
            ..ExecutorConfig::default()
        })
        .build()
        .unwrap();
    let plan = genesis
        .plan_sync("Build a SaaS business for invoices")
        .unwrap();
    let handle = genesis.execute(plan, Default::default()).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    handle.cancel();
    let result = handle.wait().await;
    assert_eq!(result.status, RunStatus::Cancelled);
    assert!(
        result
            .tasks
            .iter()
            .all(|t| t.status == TaskStatus::Cancelled)
    );
}

#[tokio::test(start_paused = true)]
async fn resumed_runs_do_not_rerun_finished_tasks() {
    let counting = Arc::new(Flaky {
        calls: AtomicUsize::new(0),
        fail_first: 0,
        transient: false,
    });
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(counting.clone()))
        .build()
        .unwrap();
    let plan = genesis
        .plan_sync("Fix the crash when uploading large files")
        .unwrap();
    let first = genesis
        .execute(plan.clone(), Default::default())
        .unwrap()
        .wait()
        .await;
    let done: Vec<_> = first.tasks.iter().take(3).cloned().collect();
    let before = counting.calls.load(Ordering::SeqCst);
    let options = genesis::RunOptions {
        resumed: done.clone(),
        ..Default::default()
    };
    let second = genesis.execute(plan.clone(), options).unwrap().wait().await;
    assert_eq!(second.status, RunStatus::Succeeded);
    assert_eq!(
        counting.calls.load(Ordering::SeqCst) - before,
        plan.tasks.len() - done.len()
    );
    for d in &done {
        let t = second
            .tasks
            .iter()
            .find(|t| t.task_id == d.task_id)
            .unwrap();
        assert_eq!(t.output, d.output, "resumed output kept");
    }
}

/// Fails 30% of calls and hangs past the timeout on 5%, deterministically per call.
struct Chaos {
    seq: AtomicUsize,
    succeeded: Mutex<HashMap<String, usize>>,
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^ (x >> 33)
}

#[async_trait]
impl Agent for Chaos {
    async fn execute(&self, r: AgentRequest) -> Result<AgentOutput, AgentError> {
        let n = self.seq.fetch_add(1, Ordering::SeqCst) as u64;
        let roll = mix(n ^ 0x9e3779b97f4a7c15) % 100;
        if roll < 5 {
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        if roll < 35 {
            return Err(AgentError::Transient {
                agent: r.agent,
                message: "chaos".into(),
                retry_after: None,
            });
        }
        *self
            .succeeded
            .lock()
            .unwrap()
            .entry(r.task.id.to_string())
            .or_default() += 1;
        Ok(AgentOutput {
            text: "ok".into(),
            ..AgentOutput::default()
        })
    }
}

#[tokio::test(start_paused = true)]
async fn chaos_a_thousand_tasks_end_accounted_for() {
    let chaos = Arc::new(Chaos {
        seq: AtomicUsize::new(0),
        succeeded: Mutex::new(HashMap::new()),
    });
    let transitions: Arc<Mutex<Vec<(String, BreakerState)>>> = Arc::default();
    let log = Arc::clone(&transitions);
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(chaos.clone()))
        .executor_config({
            // Trip on a 30% failure rate over the window, so the breakers have work.
            let mut c = ExecutorConfig {
                task_timeout: Duration::from_secs(30),
                ..ExecutorConfig::default()
            };
            c.breaker.failure_rate.threshold = 0.3;
            c.breaker.failure_rate.min_calls = 10;
            c
        })
        .on_breaker_change(Arc::new(move |key, _from, to| {
            log.lock().unwrap().push((key.to_owned(), to))
        }))
        .build()
        .unwrap();
    // 100 independent bug-fix clauses of 10 tasks each = 1,000 tasks.
    let request: String = (0..100)
        .map(|i| format!("Fix crash number {i}. "))
        .collect();
    let plan = match genesis.plan_sync(&request) {
        Ok(p) => p,
        Err(genesis::GenesisError::InvalidPlan { plan, .. }) => *plan,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(plan.tasks.len(), 1_000);
    // Make the 100 clauses independent of each other (the decomposer chains them), so a
    // failure does not skip the rest and every agent keeps getting traffic.
    let mut plan = plan;
    for t in &mut plan.tasks {
        if t.depth == 1 {
            t.depends_on.clear();
        }
    }
    let started = tokio::time::Instant::now();
    let handle = genesis.execute(plan.clone(), Default::default()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(24 * 3600), handle.wait())
        .await
        .expect("run finished within a bounded (virtual) time");
    assert_eq!(result.tasks.len(), 1_000, "no task lost");
    let mut succeeded = 0;
    for t in &result.tasks {
        match t.status {
            TaskStatus::Succeeded => succeeded += 1,
            TaskStatus::Failed | TaskStatus::Skipped => {
                assert!(
                    t.error.as_deref().is_some_and(|e| !e.is_empty()),
                    "{t:?} has no reason"
                );
            }
            other => panic!("task {} ended {other:?}", t.task_id),
        }
    }
    // No task ran again after it succeeded.
    for (task, n) in chaos.succeeded.lock().unwrap().iter() {
        assert_eq!(*n, 1, "task {task} succeeded {n} times");
    }
    assert!(succeeded > 0);
    // Breakers opened under the failure rate and recovered (closed again) later.
    let transitions = transitions.lock().unwrap();
    assert!(
        transitions.iter().any(|(_, s)| *s == BreakerState::Open),
        "no breaker opened"
    );
    let reopened_keys: HashSet<&str> = transitions
        .iter()
        .filter(|(_, s)| *s == BreakerState::Open)
        .map(|(k, _)| k.as_str())
        .collect();
    assert!(
        transitions
            .iter()
            .any(|(k, s)| *s == BreakerState::Closed && reopened_keys.contains(k.as_str())),
        "no breaker recovered"
    );
    eprintln!(
        "chaos: {succeeded}/1000 succeeded, {} breaker transitions, {:?} virtual time",
        transitions.len(),
        started.elapsed()
    );
    let agents: HashSet<AgentId> = plan.tasks.iter().filter_map(|t| t.agent.clone()).collect();
    assert!(agents.len() > 1);
}

#[tokio::test(start_paused = true)]
async fn finished_runs_teach_the_router() {
    let (plan, task, first) = bug_fix_plan(&Orchestrator::builder().build().unwrap());
    let agents = || {
        AgentSet::new()
            .with(first.clone(), flaky(usize::MAX, false))
            .with_fallback(flaky(0, false))
    };

    let genesis = Orchestrator::builder().agents(agents()).build().unwrap();
    let before = genesis.router().registry();
    let rate_before = before.get(first.as_str()).unwrap().success_rate;
    let handle = genesis.execute(plan.clone(), Default::default()).unwrap();
    let run_id = handle.run_id().clone();
    let result = handle.wait().await;
    let report = result.tasks.iter().find(|t| t.task_id == task.id).unwrap();
    assert_eq!(report.status, TaskStatus::Succeeded, "{report:?}");
    let winner = report.agent.clone().unwrap();

    // Outcomes are applied in batches (at most a second after the run); flushing
    // applies them now.
    assert!(genesis.flush_learning() > 0);
    assert_eq!(genesis.flush_learning(), 0, "a batch is applied once");
    let after = genesis.router().registry();
    let loser = after.get(first.as_str()).unwrap();
    assert!(loser.outcomes.failures >= 1, "{:?}", loser.outcomes);
    assert!(
        loser.success_rate < rate_before,
        "{} -> {}",
        rate_before,
        loser.success_rate
    );
    let won = after.get(winner.as_str()).unwrap();
    assert!(won.outcomes.successes >= 1, "{:?}", won.outcomes);
    let description = plan.task(task.id.as_str()).unwrap().description.clone();
    assert!(
        won.examples.contains(&description),
        "{winner} did not learn {description:?}: {:?}",
        won.examples
    );
    assert!(
        won.plans.iter().any(|p| p == run_id.as_str()),
        "{:?}",
        won.plans
    );
    // Every agent that was called counted once per task: here an agent either
    // answers or rejects at its only call, so that is one outcome per attempt (a task
    // whose only agent rejected fails, and its dependents never run).
    let recorded: u64 = after.iter().map(|a| a.outcomes.total()).sum();
    let attempts: u64 = result.tasks.iter().map(|t| u64::from(t.attempts)).sum();
    assert_eq!(recorded, attempts, "{:?}", result.tasks);

    // Switched off, the registry is left as it was.
    let quiet = Orchestrator::builder()
        .agents(agents())
        .learn_from_runs(false)
        .build()
        .unwrap();
    let untouched = quiet.router().registry();
    let result = quiet
        .execute(plan, Default::default())
        .unwrap()
        .wait()
        .await;
    assert!(result.tasks.iter().any(|t| t.attempts > 0));
    assert_eq!(quiet.flush_learning(), 0);
    assert!(Arc::ptr_eq(&untouched, &quiet.router().registry()));
    assert!(untouched.iter().all(|a| a.outcomes.total() == 0));
}

/// The candidates of a planned task: its agent, then its routing alternatives.
fn candidates(t: &genesis::PlannedTask) -> Vec<AgentId> {
    t.agent
        .iter()
        .chain(t.route.alternatives.iter().map(|a| &a.agent))
        .cloned()
        .collect()
}

/// Audit G1 item 1: the server refused (422 `agent_backend`) a plan with a task no
/// backend serves, but a library caller of `execute` got a run whose tasks each failed
/// "no backend is configured". `execute` now refuses it up front, naming the rule, the
/// task, its agents and what to configure, before any agent is called or the day's
/// spend is touched.
#[tokio::test(start_paused = true)]
async fn execute_refuses_a_plan_with_a_task_no_backend_serves_before_calling_anyone() {
    let counting = flaky(0, false);
    let (plan, victim) = {
        let planner = Orchestrator::builder().build().unwrap();
        let plan = planner
            .plan_sync("Fix the crash when uploading large files")
            .unwrap();
        let victim = plan.tasks[0].clone();
        (plan, victim)
    };
    let gone = candidates(&victim);
    assert!(!gone.is_empty(), "{victim:?}");
    // The tasks left without a served candidate: the victim, and any other task whose
    // candidates are all among its.
    let unserved: Vec<genesis::core::TaskId> = plan
        .tasks
        .iter()
        .filter(|t| candidates(t).iter().all(|a| gone.contains(a)))
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(unserved[0], victim.id);
    // Every agent the plan names is served, except the candidates of the first task.
    let mut agents = AgentSet::new();
    for t in &plan.tasks {
        for a in candidates(t) {
            if !gone.contains(&a) {
                agents = agents.with(a, counting.clone() as Arc<dyn Agent>);
            }
        }
    }
    let genesis = Orchestrator::builder().agents(agents).build().unwrap();
    let found: Vec<_> = genesis
        .unserved_tasks(&plan)
        .iter()
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(found, unserved);
    let day = genesis::run::DaySpend::new(Usd::ZERO);
    let options = genesis::RunOptions {
        day: Some(day.clone()),
        ..Default::default()
    };
    let err = genesis.execute(plan.clone(), options).unwrap_err();
    assert!(
        matches!(&err, genesis::GenesisError::UnservedAgents { task, agents, others }
            if *task == victim.id && *agents == gone && *others == unserved.len() - 1),
        "{err:?}"
    );
    assert_eq!(err.rule(), "agent_backend");
    assert_eq!(err.http_status(), 422);
    assert_eq!(err.category(), genesis::core::ErrorCategory::Config);
    let message = err.to_string();
    assert!(
        message.contains(&format!("task {} ", victim.id)),
        "{message}"
    );
    for a in &gone {
        assert!(message.contains(a.as_str()), "{message} should name {a}");
    }
    for part in ["[backends.", "llm.agents = true", "rule: agent_backend"] {
        assert!(message.contains(part), "{message}");
    }
    assert_eq!(
        genesis.check_served(&plan).unwrap_err().to_string(),
        message
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        counting.calls.load(Ordering::SeqCst),
        0,
        "no agent was called"
    );
    assert_eq!(day.spent(), Usd::ZERO, "nothing was charged");
    assert_eq!(day.reserved(), Usd::ZERO, "nothing was set aside");

    // A resumed run whose unserved tasks already ended before the restart runs the rest.
    let done = unserved
        .iter()
        .map(|id| genesis::run::TaskReport {
            task_id: id.clone(),
            status: TaskStatus::Succeeded,
            agent: victim.agent.clone(),
            model: None,
            attempts: 1,
            output: Some("done before the restart".into()),
            flagged: None,
            truncated: false,
            error: None,
            cost: Usd::ZERO,
            input_tokens: 0,
            output_tokens: 0,
        })
        .collect();
    let options = genesis::RunOptions {
        resumed: done,
        ..Default::default()
    };
    let result = genesis.execute(plan.clone(), options).unwrap().wait().await;
    assert_eq!(result.status, RunStatus::Succeeded, "{result:?}");
    assert_eq!(
        counting.calls.load(Ordering::SeqCst),
        plan.tasks.len() - unserved.len(),
        "every other task ran once"
    );
}

/// Library-user audit: `execute` outside a tokio runtime panicked ("there is no reactor
/// running") though it returns a `Result`.
#[test]
fn execute_outside_a_tokio_runtime_is_an_error_naming_the_rule() {
    let counting = flaky(0, false);
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(counting.clone() as Arc<dyn Agent>))
        .build()
        .unwrap();
    let plan = genesis
        .plan_sync("Fix the crash when uploading large files")
        .unwrap();
    let err = genesis
        .execute(plan, genesis::RunOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, genesis::GenesisError::NoRuntime { .. }),
        "{err:?}"
    );
    assert_eq!(err.rule(), "tokio_runtime");
    let message = err.to_string();
    assert!(message.contains("Orchestrator::execute"), "{message}");
    assert!(message.contains("tokio runtime"), "{message}");
    assert_eq!(counting.calls.load(Ordering::SeqCst), 0);
}

/// Library-user audit: a plan emptied of its tasks ran and reported `succeeded`, while
/// validation refuses the same plan (`structure.empty`).
#[tokio::test]
async fn execute_refuses_a_plan_without_tasks() {
    let counting = flaky(0, false);
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(counting.clone() as Arc<dyn Agent>))
        .build()
        .unwrap();
    let mut plan = genesis
        .plan_sync("Fix the crash when uploading large files")
        .unwrap();
    plan.tasks.clear();
    let err = genesis
        .execute(plan, genesis::RunOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, genesis::GenesisError::InvalidPlan { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("structure.empty"), "{err}");
    assert_eq!(err.http_status(), 422);
    assert_eq!(counting.calls.load(Ordering::SeqCst), 0);
}
