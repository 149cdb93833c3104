//! The executor under misbehaving HTTP agents (audit R8), through real HTTP agents on a
//! loopback service scripted per agent: a busy or hung agent no longer holds back tasks
//! its idle alternatives could run (D3), a hung agent costs a bounded time (H1), a 429
//! is back-pressure, not a fault (H2), a failed task says what each agent did (H5), an
//! overspent budget leaves a trace (H4), and refinement rounds go through the agent's
//! breaker (H7).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use genesis::core::{AgentId, Task, TaskId, TaskKind, Usd};
use genesis::halo::{AgentRegistry, RoutingRules};
use genesis::htdag::{Limits, TaskDag};
use genesis::resilience::BreakerState;
use genesis::run::backends::{HttpAgent, HttpAgentConfig};
use genesis::run::{
    AgentSet, EventReceiver, ExecutorConfig, RunEvent, RunHandle, RunResult, RunStatus, TaskStatus,
};
use genesis::{Orchestrator, Plan, PlanOptions, RunOptions};
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

/// What the scripted service answers one call of an agent with.
#[derive(Debug, Clone)]
enum Reply {
    /// 200 with `{"output", "cost_usd"}`.
    Ok(f64),
    /// This status, with this `Retry-After` if any, and this body.
    Status(u16, Option<&'static str>, String),
    /// Nothing until the agent's gate is opened ([`Service::release`]), then `Ok(0.0)`.
    Hold,
    /// `Ok(0.0)` after this long (of the test's clock: paused in the tests that use it).
    After(Duration),
}

/// A loopback agent service: each agent answers its script in order, the last reply
/// repeating (`Ok(0.0)` for an agent without one); every call is recorded.
#[derive(Default)]
struct Service {
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    gates: Mutex<HashMap<String, Arc<Semaphore>>>,
    calls: Mutex<Vec<(String, Instant)>>,
    called: Notify,
}

impl Service {
    fn script(&self, agent: &AgentId, replies: Vec<Reply>) {
        self.scripts
            .lock()
            .unwrap()
            .insert(agent.to_string(), replies.into());
    }

    fn gate(&self, agent: &str) -> Arc<Semaphore> {
        Arc::clone(
            self.gates
                .lock()
                .unwrap()
                .entry(agent.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(0))),
        )
    }

    /// Lets every held call of `agent` answer, now and later.
    fn release(&self, agent: &AgentId) {
        self.gate(agent.as_str()).add_permits(1 << 20);
    }

    fn next(&self, agent: &str) -> Reply {
        let mut scripts = self.scripts.lock().unwrap();
        match scripts.get_mut(agent) {
            Some(q) if q.len() > 1 => q.pop_front().unwrap(),
            Some(q) => q.front().cloned().unwrap_or(Reply::Ok(0.0)),
            None => Reply::Ok(0.0),
        }
    }

    /// When each call of `agent` came.
    fn calls_of(&self, agent: &AgentId) -> Vec<Instant> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, _)| a == agent.as_str())
            .map(|(_, at)| *at)
            .collect()
    }

    /// Waits (bounded) until `agent` has been called `n` times.
    async fn wait_calls(&self, agent: &AgentId, n: usize) {
        within(&format!("call {n} of {agent}"), async {
            loop {
                let notified = self.called.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.calls_of(agent).len() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

async fn answer(
    State(service): State<Arc<Service>>,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let agent = body["agent"].as_str().unwrap_or_default().to_owned();
    let task = body["task"]["id"].as_str().unwrap_or_default().to_owned();
    let reply = service.next(&agent);
    service
        .calls
        .lock()
        .unwrap()
        .push((agent.clone(), Instant::now()));
    service.called.notify_waiters();
    let ok = |cost: f64| {
        Json(json!({"output": format!("{task} done by {agent}"), "cost_usd": cost})).into_response()
    };
    match reply {
        Reply::Ok(cost) => ok(cost),
        Reply::Status(code, retry_after, body) => {
            let status = StatusCode::from_u16(code).unwrap();
            match retry_after {
                Some(after) => (status, [("retry-after", after)], body).into_response(),
                None => (status, body).into_response(),
            }
        }
        Reply::Hold => {
            let gate = service.gate(&agent);
            gate.acquire().await.unwrap().forget();
            ok(0.0)
        }
        Reply::After(after) => {
            tokio::time::sleep(after).await;
            ok(0.0)
        }
    }
}

/// Bounds a wait in a test: fails naming `what` if it takes over 20 s.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    within_secs(20, what, f).await
}

/// Bounds a wait in a test: fails naming `what` if it takes over `secs` of the test's
/// clock (virtual under a paused clock, where an idle runtime skips ahead).
async fn within_secs<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {secs} s"))
}

/// The default catalogue and rules, with `caps` as the agents' `max_concurrent_tasks`.
fn registry(caps: &[(&AgentId, u32)]) -> AgentRegistry {
    let mut table: toml::Table = toml::from_str(genesis::defaults::AGENTS_TOML).unwrap();
    for agent in table["agent"].as_array_mut().unwrap() {
        let id = agent["id"].as_str().unwrap().to_owned();
        if let Some((_, cap)) = caps.iter().find(|(a, _)| a.as_str() == id) {
            agent
                .as_table_mut()
                .unwrap()
                .insert("max_concurrent_tasks".into(), i64::from(*cap).into());
        }
    }
    AgentRegistry::from_toml_str(&toml::to_string(&table).unwrap()).unwrap()
}

/// The service on loopback, and an orchestrator whose every agent is an HTTP agent on
/// it (timeout 60 s), with `caps` and the executor settings `executor` (TOML).
async fn setup(caps: &[(&AgentId, u32)], executor: &str) -> (Arc<Service>, Orchestrator) {
    let service = Arc::new(Service::default());
    let app = axum::Router::new()
        .route("/task", post(answer))
        .with_state(Arc::clone(&service));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = genesis::llm::http_client_builder()
        .unwrap()
        .build()
        .unwrap();
    let agent = HttpAgent::new(
        "scripted",
        HttpAgentConfig {
            timeout: Duration::from_secs(60),
            ..HttpAgentConfig::new(format!("http://{addr}/task"))
        },
        client,
    );
    let config: ExecutorConfig = toml::from_str(executor).unwrap();
    let genesis = Orchestrator::builder()
        .registry(registry(caps))
        .rules(RoutingRules::from_toml_str(genesis::defaults::ROUTING_RULES_TOML).unwrap())
        .agents(AgentSet::new().with_fallback(Arc::new(agent)))
        .executor_config(config)
        .build()
        .unwrap();
    (service, genesis)
}

/// A one-task plan ("Write a user guide for the payment service"), and the task's
/// candidate agents: its agent, then its alternatives (at least two in all).
fn one_task(genesis: &Orchestrator) -> (Plan, Vec<AgentId>) {
    let plan = genesis
        .plan_sync("Write a user guide for the payment service")
        .unwrap();
    assert_eq!(plan.tasks.len(), 1, "{:?}", plan.tasks);
    let task = &plan.tasks[0];
    let mut candidates = vec![task.agent.clone().unwrap()];
    for alt in &task.route.alternatives {
        if !candidates.contains(&alt.agent) {
            candidates.push(alt.agent.clone());
        }
    }
    assert!(
        candidates.len() >= 2,
        "needs an alternative: {candidates:?}"
    );
    (plan, candidates)
}

/// The candidates of the one-task plan under the default catalogue.
fn candidates() -> Vec<AgentId> {
    let genesis = Orchestrator::builder().build().unwrap();
    one_task(&genesis).1
}

fn start(genesis: &Orchestrator, plan: &Plan) -> (RunHandle, EventReceiver<RunEvent>) {
    let options = RunOptions::default();
    let mut handle = genesis.execute(plan.clone(), options).unwrap();
    let events = handle.events();
    (handle, events)
}

/// The run's events until its end.
fn drain(events: &mut EventReceiver<RunEvent>) -> Vec<RunEvent> {
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    seen
}

/// Waits (bounded) for the first event of the run that `wanted` matches.
async fn event(
    events: &mut EventReceiver<RunEvent>,
    what: &str,
    wanted: impl Fn(&RunEvent) -> bool,
) -> RunEvent {
    within(what, async {
        loop {
            let e = events.recv().await.unwrap();
            if wanted(&e) {
                return e;
            }
        }
    })
    .await
}

fn breaker_state(genesis: &Orchestrator, agent: &AgentId) -> Option<BreakerState> {
    genesis
        .executor()
        .breakers()
        .peek(&format!("agent:{agent}"))
        .map(|b| b.state())
}

fn succeeded_on(result: &RunResult) -> Option<&AgentId> {
    let task = &result.tasks[0];
    assert_eq!(task.status, TaskStatus::Succeeded, "{task:?}");
    task.agent.as_ref()
}

/// D3: the first agent's only slot is taken by a call that hangs; a second task goes to
/// the idle alternative at once instead of queueing behind it (it waited 10.4 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_agent_is_passed_over_for_an_idle_alternative() {
    let c = candidates();
    let (service, genesis) = setup(&[(&c[0], 1)], "").await;
    let (plan, again) = one_task(&genesis);
    assert_eq!(again, c);
    service.script(&c[0], vec![Reply::Hold]);
    let (first, _) = start(&genesis, &plan);
    service.wait_calls(&c[0], 1).await;
    let (second, mut events) = start(&genesis, &plan);
    let result = within("the second run's end", second.wait()).await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:?}", result.tasks);
    assert_eq!(succeeded_on(&result), Some(&c[1]));
    assert_eq!(
        service.calls_of(&c[0]).len(),
        1,
        "the full agent was not called"
    );
    let rerouted = reroutes(&mut events);
    assert_eq!(rerouted.len(), 1, "{rerouted:?}");
    assert_eq!((&rerouted[0].0, &rerouted[0].1), (&c[0], &c[1]));
    assert!(
        rerouted[0].2.contains("max_concurrent_tasks 1"),
        "{}",
        rerouted[0].2
    );
    first.cancel();
}

/// The run's re-routes so far: (from, to, reason).
fn reroutes(events: &mut EventReceiver<RunEvent>) -> Vec<(AgentId, AgentId, String)> {
    drain(events)
        .into_iter()
        .filter_map(|e| match e {
            RunEvent::TaskRerouted {
                from, to, reason, ..
            } => Some((from, to, reason)),
            _ => None,
        })
        .collect()
}

/// Every candidate of the one-task plan with one slot, each held by a run whose call
/// hangs: the candidates, the service, the orchestrator, the plan and the held runs.
async fn every_candidate_full() -> (
    Vec<AgentId>,
    Arc<Service>,
    Orchestrator,
    Plan,
    Vec<(RunHandle, EventReceiver<RunEvent>)>,
) {
    let c = candidates();
    let caps: Vec<(&AgentId, u32)> = c.iter().map(|a| (a, 1)).collect();
    let (service, genesis) = setup(&caps, "").await;
    let (plan, _) = one_task(&genesis);
    let mut held = Vec::new();
    for agent in &c {
        service.script(agent, vec![Reply::Hold]);
        let (handle, events) = start(&genesis, &plan);
        service.wait_calls(agent, 1).await;
        held.push((handle, events));
    }
    (c, service, genesis, plan, held)
}

/// D3: when every candidate is full, the task waits for whichever frees up first (here
/// the last one), not for its first choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_candidate_is_full_the_task_takes_the_first_that_frees_up() {
    let (c, service, genesis, plan, held) = every_candidate_full().await;
    let (waiting, mut events) = start(&genesis, &plan);
    let last = c.last().unwrap();
    service.script(last, vec![Reply::Ok(0.0)]);
    service.release(last);
    let result = within("the waiting run's end", waiting.wait()).await;
    assert_eq!(succeeded_on(&result), Some(last));
    assert_eq!(service.calls_of(last).len(), 2);
    for agent in &c[..c.len() - 1] {
        assert_eq!(service.calls_of(agent).len(), 1, "{agent} was still full");
    }
    // One re-route, from the first choice (verification V8: it named the last busy
    // candidate, as if that had been the first choice). Its reason depends on whether
    // the task got to wait before `last` freed up.
    let rerouted = reroutes(&mut events);
    assert_eq!(rerouted.len(), 1, "{rerouted:?}");
    assert_eq!((&rerouted[0].0, &rerouted[0].1), (&c[0], last));
    let waited = format!(
        "every candidate agent was busy (all slots taken, max_concurrent_tasks); {last} freed a slot first"
    );
    let raced = format!(
        "agent {} is busy: all 1 of its slots are taken (max_concurrent_tasks 1)",
        c[0]
    );
    assert!(
        rerouted[0].2 == waited || rerouted[0].2 == raced,
        "{}",
        rerouted[0].2
    );
    for (handle, _) in held {
        handle.cancel();
    }
}

/// When every candidate is full and the first choice frees up first, the task just
/// waited for it: no re-route (it was announced from the last busy candidate to the
/// first choice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_candidate_is_full_and_the_first_choice_frees_up_there_is_no_reroute() {
    let (c, service, genesis, plan, held) = every_candidate_full().await;
    let (waiting, mut events) = start(&genesis, &plan);
    service.script(&c[0], vec![Reply::Ok(0.0)]);
    service.release(&c[0]);
    let result = within("the waiting run's end", waiting.wait()).await;
    assert_eq!(succeeded_on(&result), Some(&c[0]));
    let rerouted: Vec<_> = drain(&mut events)
        .into_iter()
        .filter(|e| matches!(e, RunEvent::TaskRerouted { .. }))
        .collect();
    assert!(rerouted.is_empty(), "{rerouted:?}");
    for (handle, _) in held {
        handle.cancel();
    }
}

/// D3: a task backing off between retries (a 503 asking for 30 s) does not hold its
/// agent's only slot meanwhile: another task calls that agent at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_slot_is_free_while_its_task_backs_off() {
    let c = candidates();
    let (service, genesis) = setup(&[(&c[0], 1)], "").await;
    let (plan, _) = one_task(&genesis);
    service.script(
        &c[0],
        vec![
            Reply::Status(503, Some("30"), "busy".into()),
            Reply::Ok(0.0),
        ],
    );
    let (first, mut events) = start(&genesis, &plan);
    let retrying = event(&mut events, "the first run's retry", |e| {
        matches!(e, RunEvent::TaskRetrying { .. })
    })
    .await;
    let RunEvent::TaskRetrying { delay_ms, .. } = retrying else {
        unreachable!()
    };
    assert!(delay_ms >= 30_000, "{delay_ms}");
    let (second, _) = start(&genesis, &plan);
    let result = within("the second run's end", second.wait()).await;
    assert_eq!(succeeded_on(&result), Some(&c[0]));
    first.cancel();
}

/// D3: an agent whose breaker is open is passed over before its slot is awaited, with
/// the breaker named as the reason (here its slot is also taken by a hung call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_is_skipped_before_its_slot_is_awaited() {
    let c = candidates();
    let (service, genesis) = setup(&[(&c[0], 1)], "").await;
    let (plan, _) = one_task(&genesis);
    service.script(&c[0], vec![Reply::Hold]);
    let (first, _) = start(&genesis, &plan);
    service.wait_calls(&c[0], 1).await;
    let breaker = genesis
        .executor()
        .breakers()
        .get(&format!("agent:{}", c[0]));
    for _ in 0..20 {
        if let Ok(permit) = breaker.try_acquire_owned(Instant::now()) {
            permit.failure(Instant::now());
        }
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    let (second, mut events) = start(&genesis, &plan);
    let result = within("the second run's end", second.wait()).await;
    assert_eq!(succeeded_on(&result), Some(&c[1]));
    let reason = drain(&mut events)
        .into_iter()
        .find_map(|e| match e {
            RunEvent::TaskRerouted { reason, .. } => Some(reason),
            _ => None,
        })
        .unwrap();
    assert!(reason.contains("is open, next probe in"), "{reason}");
    first.cancel();
}

/// H1: a hung agent (each call cut at its 60 s timeout) is called twice, not four
/// times (4 x 60 s), before the task moves on to its alternative.
#[tokio::test(start_paused = true)]
async fn a_hung_agent_is_retried_once_then_the_task_moves_on() {
    let c = candidates();
    let (service, genesis) = setup(&[], "").await;
    let (plan, _) = one_task(&genesis);
    service.script(&c[0], vec![Reply::Hold]);
    let began = Instant::now();
    let (handle, mut events) = start(&genesis, &plan);
    let result = within_secs(3_600, "the run's end", handle.wait()).await;
    assert_eq!(succeeded_on(&result), Some(&c[1]));
    assert_eq!(service.calls_of(&c[0]).len(), 2);
    assert_eq!(result.tasks[0].attempts, 3);
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(120) && took < Duration::from_secs(125),
        "{took:?}"
    );
    let reason = drain(&mut events)
        .into_iter()
        .find_map(|e| match e {
            RunEvent::TaskRerouted { reason, .. } => Some(reason),
            _ => None,
        })
        .unwrap();
    assert!(reason.contains("timed out after 60s"), "{reason}");
    assert!(reason.contains("retried at most once"), "{reason}");
}

/// H1: `executor.task_deadline` bounds a task over all its attempts and candidates: with
/// every agent hung (60 s per call), the task fails at 150 s naming the rule and value.
#[tokio::test(start_paused = true)]
async fn a_task_past_its_deadline_fails_naming_task_deadline() {
    let defaults: ExecutorConfig = toml::from_str("").unwrap();
    let value = serde_json::to_value(&defaults).unwrap();
    assert_eq!(value["task_deadline"], "10m", "the default");
    let c = candidates();
    let (service, genesis) = setup(&[], "task_deadline = \"150s\"").await;
    let (plan, _) = one_task(&genesis);
    for agent in &c {
        service.script(agent, vec![Reply::Hold]);
    }
    let began = Instant::now();
    let (handle, _) = start(&genesis, &plan);
    let result = within_secs(3_600, "the run's end", handle.wait()).await;
    let took = began.elapsed();
    assert_eq!(result.status, RunStatus::Failed);
    assert!(
        took >= Duration::from_secs(150) && took < Duration::from_secs(152),
        "{took:?}"
    );
    let error = result.tasks[0].error.clone().unwrap();
    assert!(
        error.contains("executor.task_deadline is 150s (rule: task_deadline)"),
        "{error}"
    );
    // Both agents called got their failure named: the first twice timed out, the
    // second cut at the deadline.
    assert!(
        error.contains(&format!("{}: agent {} timed out", c[0], c[0])),
        "{error}"
    );
    assert_eq!(service.calls_of(&c[0]).len(), 2);
    assert_eq!(service.calls_of(&c[1]).len(), 1);
}

/// H2: an HTTP agent's 429 is back-pressure: it is retried after its `Retry-After` plus
/// a jitter (at most a tenth of it and of the backoff base), and does not count on the
/// agent's breaker (here two failures would open it).
#[tokio::test(start_paused = true)]
async fn a_throttled_http_agent_is_retried_with_jitter_and_keeps_its_breaker_closed() {
    let c = candidates();
    let (service, genesis) = setup(&[], "[breaker]\nfailure_threshold = 2\n").await;
    let (plan, _) = one_task(&genesis);
    service.script(
        &c[0],
        vec![Reply::Status(429, Some("1"), "slow down".into())],
    );
    let (handle, _) = start(&genesis, &plan);
    let result = within("the run's end", handle.wait()).await;
    assert_eq!(succeeded_on(&result), Some(&c[1]));
    let calls = service.calls_of(&c[0]);
    assert_eq!(calls.len(), 4, "all three retries used");
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    for gap in &gaps {
        assert!(
            *gap >= Duration::from_secs(1) && *gap <= Duration::from_millis(1_100),
            "{gaps:?}"
        );
    }
    assert!(
        gaps.iter().any(|g| *g > Duration::from_secs(1)),
        "no jitter over the retry-after: {gaps:?}"
    );
    assert_ne!(breaker_state(&genesis, &c[0]), Some(BreakerState::Open));
    assert_eq!(
        genesis
            .executor()
            .breakers()
            .peek(&format!("agent:{}", c[0]))
            .map(|b| b.snapshot().consecutive_failures()),
        Some(0)
    );
}

/// H5: a task every candidate failed names each one's failure, each cut short, and a
/// `Retry-After` over the cap names the key `executor.retry.cap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_names_each_candidates_failure_briefly() {
    let c = candidates();
    let (service, genesis) = setup(&[], "").await;
    let (plan, _) = one_task(&genesis);
    service.script(
        &c[0],
        vec![Reply::Status(503, Some("120"), "overloaded".into())],
    );
    for agent in &c[1..] {
        service.script(agent, vec![Reply::Status(400, None, "x".repeat(5_000))]);
    }
    let (handle, _) = start(&genesis, &plan);
    let result = within("the run's end", handle.wait()).await;
    assert_eq!(result.status, RunStatus::Failed);
    let error = result.tasks[0].error.clone().unwrap();
    assert!(
        error.starts_with(&format!("all {} candidate agents failed: ", c.len())),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "{}: agent {} failed transiently: http 503",
            c[0], c[0]
        )),
        "{error}"
    );
    assert!(
        error.contains("retry-after 120s exceeds the backoff cap 60s (executor.retry.cap)"),
        "{error}"
    );
    for agent in &c[1..] {
        assert!(
            error.contains(&format!(
                "{agent}: agent {agent} rejected the task: http 400"
            )),
            "{agent}: {error}"
        );
    }
    assert!(
        error.len() < 400 * c.len(),
        "{} bytes: {error}",
        error.len()
    );
}

/// H5, verification V8: an agent's failure was overwritten in the task's error by the
/// later "circuit breaker is open" of the breaker that failure opened, so the error no
/// longer said what went wrong.
#[tokio::test(start_paused = true)]
async fn the_failure_that_opened_a_breaker_is_the_one_a_task_error_names() {
    let c = candidates();
    let (service, genesis) = setup(
        &[],
        "[breaker]\nfailure_threshold = 1\ncool_down = \"10s\"\n",
    )
    .await;
    let (plan, _) = one_task(&genesis);
    for agent in &c {
        service.script(agent, vec![Reply::Status(500, None, "boom".into())]);
    }
    let (handle, _) = start(&genesis, &plan);
    let result = within("the run's end", handle.wait()).await;
    assert_eq!(result.status, RunStatus::Failed);
    let error = result.tasks[0].error.clone().unwrap();
    for agent in &c {
        assert!(
            error.contains(&format!(
                "{agent}: agent {agent} failed transiently: http 500"
            )),
            "{agent}: {error}"
        );
    }
}

/// H5: the wait for an open breaker is said in rounded units (`8.8s`, not
/// `8.765999999s`).
#[tokio::test(start_paused = true)]
async fn an_open_breakers_wait_is_rounded_in_messages() {
    let c = candidates();
    let (service, genesis) = setup(
        &[],
        "[breaker]\nfailure_threshold = 1\ncool_down = \"10s\"\n",
    )
    .await;
    let (plan, _) = one_task(&genesis);
    service.script(&c[0], vec![Reply::Status(500, None, "boom".into())]);
    let (handle, _) = start(&genesis, &plan);
    let result = within("the first run's end", handle.wait()).await;
    assert_eq!(succeeded_on(&result), Some(&c[1]));
    assert_eq!(breaker_state(&genesis, &c[0]), Some(BreakerState::Open));
    tokio::time::advance(Duration::from_millis(1_234)).await;
    let (handle, mut events) = start(&genesis, &plan);
    within("the second run's end", handle.wait()).await;
    let reason = drain(&mut events)
        .into_iter()
        .find_map(|e| match e {
            RunEvent::TaskRerouted { reason, .. } => Some(reason),
            _ => None,
        })
        .unwrap();
    let wait = reason
        .split("next probe in ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .unwrap_or_else(|| panic!("{reason}"));
    let decimals = wait.split('.').nth(1).map_or(0, str::len);
    assert!(decimals <= 1, "{wait:?} in {reason}");
    let secs: f64 = wait.parse().unwrap();
    assert!((8.0..=8.8).contains(&secs), "{reason}");
}

/// H4: a call without a cost limit that reports more than the run's budget has left
/// still succeeds (the work is done and paid for), and the run records a
/// `budget_overspent` event naming the rule, the limit and the spend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_overspent_by_a_call_records_a_budget_overspent_event() {
    let c = candidates();
    let (service, genesis) = setup(&[], "").await;
    let (plan, _) = one_task(&genesis);
    service.script(&c[0], vec![Reply::Ok(0.09)]);
    let options = RunOptions {
        budget: Some(Usd::new(0.05).unwrap()),
        ..RunOptions::default()
    };
    let mut handle = genesis.execute(plan, options).unwrap();
    let mut events = handle.events();
    let result = within("the run's end", handle.wait()).await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:?}", result.tasks);
    let overspent: Vec<serde_json::Value> = drain(&mut events)
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .filter(|e| e["type"] == "budget_overspent")
        .collect();
    assert_eq!(overspent.len(), 1, "{overspent:?}");
    let e = &overspent[0];
    assert_eq!(e["scope"], "run");
    assert_eq!(e["task_id"], "t1");
    assert!((e["limit"].as_f64().unwrap() - 0.05).abs() < 1e-9, "{e}");
    assert!(e["spent"].as_f64().unwrap() >= 0.09 - 1e-9, "{e}");
}

/// H7: refinement rounds go through the agent's breaker: a round that fails counts on
/// it like any call (here the threshold is one failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refinement_rounds_count_on_the_agents_breaker() {
    let c = candidates();
    let executor = format!(
        "[breaker]\nfailure_threshold = 1\n[retry]\nmax_retries = 0\n[refine]\nagents = [\"{}\"]\n",
        c[0]
    );
    let (service, genesis) = setup(&[], &executor).await;
    let (plan, _) = one_task(&genesis);
    service.script(
        &c[0],
        vec![
            Reply::Ok(0.0),
            Reply::Status(503, None, "round failed".into()),
        ],
    );
    let (handle, mut events) = start(&genesis, &plan);
    let result = within("the run's end", handle.wait()).await;
    assert_eq!(succeeded_on(&result), Some(&c[0]));
    assert_eq!(
        service.calls_of(&c[0]).len(),
        2,
        "one round after the answer"
    );
    assert!(
        drain(&mut events).iter().any(|e| matches!(
            e,
            RunEvent::TaskRefined { stop: Some(why), .. } if why.contains("round 2 failed")
        )),
        "the round failed"
    );
    assert_eq!(breaker_state(&genesis, &c[0]), Some(BreakerState::Open));
}

/// Verification V8: a refinement round cut short by the task's deadline read as the
/// agent's own timeout ("timed out after 407ms"), naming neither the deadline nor its
/// rule.
#[tokio::test(start_paused = true)]
async fn a_refinement_round_cut_by_the_task_deadline_says_so() {
    let c = candidates();
    let executor = format!(
        "task_deadline = \"5s\"\n[refine]\nagents = [\"{}\"]\n",
        c[0]
    );
    let (service, genesis) = setup(&[], &executor).await;
    let (plan, _) = one_task(&genesis);
    service.script(&c[0], vec![Reply::Ok(0.0), Reply::Hold]);
    let (handle, mut events) = start(&genesis, &plan);
    let result = within("the run's end", handle.wait()).await;
    assert_eq!(
        succeeded_on(&result),
        Some(&c[0]),
        "the first answer stands"
    );
    let stop = drain(&mut events)
        .into_iter()
        .find_map(|e| match e {
            RunEvent::TaskRefined {
                stop: Some(why), ..
            } => Some(why),
            _ => None,
        })
        .unwrap();
    assert!(
        stop.contains("round 2 was cut at the task's deadline (executor.task_deadline 5s, rule: task_deadline)"),
        "{stop}"
    );
}

/// A plan of `n` independent tasks (they start together), every one on `agent` alone.
fn parallel_on(genesis: &Orchestrator, n: usize, agent: &AgentId) -> Plan {
    let mut dag = TaskDag::new(Limits::default());
    for k in 1..=n {
        let task = Task::new(
            TaskId::new(format!("t{k}")),
            TaskKind::Document,
            format!("Write user guide number {k} for the payment service"),
        );
        dag.add_task(task, None).unwrap();
    }
    let mut plan = genesis
        .plan_dag("Write the user guides", &dag, &PlanOptions::default())
        .unwrap();
    for t in &mut plan.tasks {
        assert!(t.depends_on.is_empty());
        t.agent = Some(agent.clone());
        t.route.alternatives.clear();
    }
    plan
}

/// Per task that succeeded: its `duration_ms` and `queued_ms`, by task id.
fn timings(events: &[RunEvent]) -> Vec<(String, u64, u64)> {
    let mut out: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::TaskSucceeded {
                task_id,
                duration_ms,
                queued_ms,
                ..
            } => Some((task_id.to_string(), *duration_ms, *queued_ms)),
            _ => None,
        })
        .collect();
    out.sort_by_key(|(_, _, queued)| *queued);
    out
}

/// Four tasks that each take 45 s on their agent queue behind one call slot (`slots`:
/// `max_tasks_in_flight = 1`, or the agent's `max_concurrent_tasks` 1) under a 100 s
/// `task_deadline`: the last waits 135 s yet all succeed (audit P9 F1: the deadline
/// counted the wait, and runs failed on it having never called an agent), and each
/// task's `duration_ms` is its 45 s on the agent, its wait in `queued_ms` (F5).
async fn check_queued_tasks_keep_their_deadline(slots: &str) {
    let c = candidates();
    let caps: Vec<(&AgentId, u32)> = if slots == "agent" {
        vec![(&c[0], 1)]
    } else {
        Vec::new()
    };
    let executor = if slots == "agent" {
        "task_deadline = \"100s\"\n"
    } else {
        "task_deadline = \"100s\"\nmax_tasks_in_flight = 1\n"
    };
    let (service, genesis) = setup(&caps, executor).await;
    service.script(&c[0], vec![Reply::After(Duration::from_secs(45))]);
    let plan = parallel_on(&genesis, 4, &c[0]);
    let began = Instant::now();
    let (handle, mut events) = start(&genesis, &plan);
    let result = within_secs(3_600, "the run's end", handle.wait()).await;
    let took = began.elapsed();
    assert_eq!(
        result.status,
        RunStatus::Succeeded,
        "{slots}: {:?}",
        result.tasks
    );
    assert_eq!(service.calls_of(&c[0]).len(), 4, "{slots}: one call each");
    // One at a time: 4 x 45 s.
    assert!(
        took >= Duration::from_secs(180) && took < Duration::from_secs(182),
        "{slots}: {took:?}"
    );
    let timings = timings(&drain(&mut events));
    assert_eq!(timings.len(), 4, "{slots}: {timings:?}");
    for (k, (task, duration, queued)) in timings.iter().enumerate() {
        assert!(
            (45_000..46_000).contains(duration),
            "{slots}: {task} took {duration} ms on its agent: {timings:?}"
        );
        let waited = 45_000 * k as u64;
        assert!(
            (waited..waited + 1_000).contains(queued),
            "{slots}: {task} queued {queued} ms, not about {waited}: {timings:?}"
        );
    }
}

/// P9 F1/F5 for the server-wide call slots (`executor.max_tasks_in_flight`).
#[tokio::test(start_paused = true)]
async fn a_task_queued_for_a_server_wide_slot_past_its_deadline_still_runs() {
    check_queued_tasks_keep_their_deadline("global").await;
}

/// P9 F1/F5 for a busy agent's slots (`max_concurrent_tasks`).
#[tokio::test(start_paused = true)]
async fn a_task_queued_for_a_busy_agents_slot_past_its_deadline_still_runs() {
    check_queued_tasks_keep_their_deadline("agent").await;
}

/// The deadline still bounds the work: a task that queued for the only call slot and
/// then meets a hung agent fails at its deadline counted from when it got the slot,
/// and its error tells the wait it did not count.
#[tokio::test(start_paused = true)]
async fn a_queued_task_still_fails_at_its_deadline_on_a_hung_agent() {
    let c = candidates();
    let (service, genesis) =
        setup(&[], "task_deadline = \"100s\"\nmax_tasks_in_flight = 1\n").await;
    // The first call answers after 50 s; every later one hangs (cut at the deadline).
    service.script(
        &c[0],
        vec![Reply::After(Duration::from_secs(50)), Reply::Hold],
    );
    let plan = parallel_on(&genesis, 2, &c[0]);
    let began = Instant::now();
    let (handle, _) = start(&genesis, &plan);
    let result = within_secs(3_600, "the run's end", handle.wait()).await;
    let took = began.elapsed();
    assert_eq!(result.status, RunStatus::Failed, "{:?}", result.tasks);
    // 50 s queued, then 100 s of work (two 60 s agent timeouts would pass it).
    assert!(
        took >= Duration::from_secs(150) && took < Duration::from_secs(152),
        "{took:?}"
    );
    let failed: Vec<_> = result
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", result.tasks);
    let error = failed[0].error.clone().unwrap();
    assert!(
        error.starts_with("the task's deadline passed after 100s: executor.task_deadline is 100s (rule: task_deadline); the 50s it waited for call slots is not counted"),
        "{error}"
    );
}
