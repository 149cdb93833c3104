//! Money through the server: a client's `budget_usd` is capped by `budget.per_run`,
//! `genesis_cost_usd` counts each agent call once (LLM and HTTP agents alike),
//! `genesis_budget_exceeded_total` names the budget that ran out, and a run budget
//! holds even when every LLM call writes as much as it may.
//!
//! The metric tests serve the app on a current-thread runtime inside
//! `metrics::with_local_recorder`: the server, its runs and their agent calls all run
//! on that thread, so the local recorder sees exactly this server's metrics, whatever
//! other tests of this binary record into the global one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use genesis::GenesisConfig;
use genesis::core::Usd;
use genesis::llm::ProviderConfig;
use serde_json::{Value, json};

use crate::support::{AGENTS, Stub, TempDir, TestServer, config, error_rule};

const REQUEST: &str = "Build a SaaS business for invoices";

fn usd(v: f64) -> Usd {
    Usd::new(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_above_budget_per_run_is_refused_naming_both() {
    let dir = TempDir::new("budget-cap");
    let stub = Stub::start(Duration::ZERO).await;
    let mut c = config(dir.path(), &stub.url);
    c.budget.per_run = Some(usd(1.0));
    let s = TestServer::start(c, &[]).await;
    for mode in ["run", "plan"] {
        let (status, _, body) = s
            .post(
                "/api/tasks",
                json!({"description": "Fix the login bug", "mode": mode, "budget_usd": 1000.0}),
            )
            .await;
        assert_eq!(status, 400, "{mode}: {body}");
        assert_eq!(error_rule(&body), "budget_usd");
        assert_eq!(body["error"]["category"], "validation", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("$1000.0000") && message.contains("$1.0000"),
            "{message}"
        );
    }
    assert_eq!(stub.total_calls(), 0, "no run was started");
    // At or below the cap the client's budget holds.
    let (status, _, body) = s
        .post(
            "/api/tasks",
            json!({"description": "Fix the login bug", "mode": "run", "budget_usd": 0.5}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["run_id"].as_str().unwrap();
    let run = s.wait_finished(id, Duration::from_secs(30)).await;
    assert_eq!(run["budget"], 0.5, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
}

/// An OpenAI-compatible chat endpoint on loopback: 100 prompt and 50 completion tokens
/// per call.
async fn chat(State(calls): State<Arc<AtomicUsize>>, Json(_): Json<Value>) -> Json<Value> {
    calls.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "id": "x", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "done by the model"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
    }))
}

async fn llm_service(calls: Arc<AtomicUsize>) -> String {
    serve_chat(
        axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(calls),
    )
    .await
}

/// Serves `app` (an OpenAI-compatible chat endpoint) on loopback; returns its base URL.
async fn serve_chat(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

/// A server config whose every agent is an LLM agent on gpt-4o-mini at `base_url`,
/// with a 16,384-token output limit and a run budget of `budget` dollars.
fn llm_agents_config(
    dir: &std::path::Path,
    stub_url: &str,
    base_url: &str,
    budget: f64,
) -> GenesisConfig {
    let mut c = config(dir, stub_url);
    c.backends.clear();
    c.llm.agents = true;
    c.llm.providers = vec![
        serde_json::from_value::<ProviderConfig>(json!({
            "kind": "openai", "base_url": base_url,
            "model": "gpt-4o-mini", "timeout": "10s", "max_tokens": 16384
        }))
        .unwrap(),
    ];
    c.budget.per_run = Some(usd(budget));
    c
}

/// The value of the series `name` (with its labels, as rendered) in a Prometheus text
/// rendering, or 0 when absent.
fn series(rendered: &str, name: &str) -> f64 {
    rendered
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Runs `body` on a current-thread runtime with a local Prometheus recorder; returns
/// its result and the rendered metrics.
fn with_metrics<T>(body: impl std::future::Future<Output = T>) -> (T, String) {
    let recorder = genesis::telemetry::build_prometheus_recorder().unwrap();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = metrics::with_local_recorder(&recorder, || runtime.block_on(body));
    (out, handle.render())
}

#[test]
fn each_agent_call_is_counted_once_in_the_cost_metric() {
    let dir = TempDir::new("cost-once");
    let llm_calls = Arc::new(AtomicUsize::new(0));
    let ((run, http_calls), rendered) = with_metrics(async {
        let stub = Stub::start(Duration::ZERO).await;
        let base_url = llm_service(Arc::clone(&llm_calls)).await;
        let mut c = config(dir.path(), &stub.url);
        // Half the agents are HTTP services, the other half LLM agents.
        for id in &AGENTS[..AGENTS.len() / 2] {
            c.backends.remove(*id);
        }
        c.llm.agents = true;
        c.llm.providers = vec![
            serde_json::from_value::<ProviderConfig>(json!({
                "kind": "openai", "base_url": base_url, "model": "gpt-4o-mini", "timeout": "10s"
            }))
            .unwrap(),
        ];
        let s = TestServer::start(c, &[]).await;
        let id = s.submit(REQUEST).await;
        let run = s.wait_finished(&id, Duration::from_secs(60)).await;
        (run, stub.total_calls())
    });
    assert_eq!(run["status"], "succeeded", "{run}");
    let llm_calls = llm_calls.load(Ordering::SeqCst);
    assert!(
        http_calls > 0 && llm_calls > 0,
        "both kinds ran: {http_calls} HTTP, {llm_calls} LLM calls"
    );
    let cost = run["cost"].as_f64().unwrap();
    assert!(cost > 0.0, "{run}");
    let counted = series(&rendered, "genesis_cost_usd");
    assert!(
        (counted - cost).abs() < 1e-9,
        "genesis_cost_usd {counted}, the run spent {cost} ({http_calls} HTTP calls at $0.001, {llm_calls} LLM calls)"
    );
}

#[test]
fn a_spent_daily_budget_is_counted_with_scope_daily() {
    let dir = TempDir::new("budget-scope");
    let (run, rendered) = with_metrics(async {
        let stub = Stub::start(Duration::ZERO).await;
        let mut c = config(dir.path(), &stub.url);
        // Room for a few $0.001 tasks, run one at a time.
        c.budget.per_day = Some(usd(0.0035));
        c.executor.max_concurrency = 1;
        let s = TestServer::start(c, &[]).await;
        let id = s.submit(REQUEST).await;
        s.wait_finished(&id, Duration::from_secs(60)).await
    });
    assert_eq!(run["status"], "failed", "{run}");
    let reasons: Vec<&str> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["error"].as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("rule: budget_day")),
        "{reasons:?}"
    );
    let daily = series(&rendered, r#"genesis_budget_exceeded_total{scope="daily"}"#);
    assert!(daily >= 1.0, "{rendered}");
    assert_eq!(
        series(&rendered, r#"genesis_budget_exceeded_total{scope="run"}"#),
        0.0,
        "{rendered}"
    );
}

/// An OpenAI-compatible chat endpoint on loopback whose model always writes as much as
/// it may: every call uses the request's whole `max_tokens` (16,384, the test's
/// provider default, when absent), with one prompt token per 4 bytes of text. Records
/// each call's `max_tokens`.
async fn greedy_chat(
    State(limits): State<Arc<Mutex<Vec<u64>>>>,
    Json(req): Json<Value>,
) -> Json<Value> {
    let max_tokens = req["max_tokens"].as_u64().unwrap_or(16_384);
    let bytes: usize = req["messages"].as_array().map_or(0, |m| {
        m.iter()
            .filter_map(|x| x["content"].as_str())
            .map(str::len)
            .sum()
    });
    limits.lock().unwrap().push(max_tokens);
    let prompt = bytes / 4;
    Json(json!({
        "id": "x", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "done at length"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": max_tokens, "total_tokens": prompt as u64 + max_tokens}
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_budget_holds_when_every_llm_call_writes_its_whole_limit() {
    let dir = TempDir::new("budget-greedy");
    let limits = Arc::new(Mutex::new(Vec::new()));
    let base_url = serve_chat(
        axum::Router::new()
            .route("/v1/chat/completions", post(greedy_chat))
            .with_state(Arc::clone(&limits)),
    )
    .await;
    let stub = Stub::start(Duration::ZERO).await;
    // Every agent is an LLM agent on gpt-4o-mini ($0.15 / $0.60 per million tokens)
    // with a 16,384-token output limit: a call writing all of it costs about $0.01,
    // far above the planned estimates ($0.0003-0.002 a task, $0.0147 for the plan),
    // and several run at once. Reserving only the estimates, two calls in flight
    // spent $0.0197 of the $0.016 budget.
    let budget = 0.016;
    let c = llm_agents_config(dir.path(), &stub.url, &base_url, budget);
    let s = TestServer::start(c, &[]).await;
    let id = s.submit(REQUEST).await;
    let run = s.wait_finished(&id, Duration::from_secs(60)).await;
    let limits = limits.lock().unwrap().clone();
    let cost = run["cost"].as_f64().unwrap();
    assert!(
        limits.len() >= 2,
        "the budget pays for a few calls: {limits:?}, {run}"
    );
    assert!(
        cost <= budget + 1e-9,
        "spent ${cost} of a ${budget} budget over {} calls (max_tokens {limits:?})",
        limits.len()
    );
    // The last calls were held to what was left: fewer output tokens than the default.
    assert!(limits.iter().any(|&m| m < 16_384), "{limits:?}");
    assert!(limits.iter().all(|&m| m >= 64), "{limits:?}");
}

/// A chat endpoint that never answers in time.
async fn slow_chat(Json(_): Json<Value>) -> Json<Value> {
    tokio::time::sleep(Duration::from_secs(30)).await;
    Json(json!({}))
}

/// An LLM call that times out was sent and may be billed up to what was set aside for
/// it: that is charged, so the run's spend never passes its budget and is not reported
/// as $0 (review R7: the reservation was given back, and each retry sent another call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_llm_call_is_charged_what_was_set_aside() {
    let dir = TempDir::new("budget-timeout");
    let base_url =
        serve_chat(axum::Router::new().route("/v1/chat/completions", post(slow_chat))).await;
    let stub = Stub::start(Duration::ZERO).await;
    let budget = 0.016;
    let mut c = llm_agents_config(dir.path(), &stub.url, &base_url, budget);
    c.executor.task_timeout = Duration::from_millis(200);
    let s = TestServer::start(c, &[]).await;
    let id = s.submit(REQUEST).await;
    let run = s.wait_finished(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "failed", "{run}");
    let cost = run["cost"].as_f64().unwrap();
    assert!(cost > 0.0, "timed-out calls are charged: {run}");
    assert!(cost <= budget + 1e-9, "spent ${cost} of ${budget}");
}

/// A planner endpoint whose first call (the request's phases) answers at once, with
/// usage, and whose later calls (the phases' subtasks) never answer.
async fn first_call_only(
    State(calls): State<Arc<AtomicUsize>>,
    Json(_): Json<Value>,
) -> Json<Value> {
    if calls.fetch_add(1, Ordering::SeqCst) > 0 {
        std::future::pending::<()>().await;
    }
    let phases = json!({"phases": [
        {"kind": "design", "description": "Design the invoice data model"},
        {"kind": "backend", "description": "Build the invoice API", "depends_on": [0]}
    ]});
    Json(json!({
        "id": "x", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": phases.to_string()}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
    }))
}

/// Verification V-1: a client that hung up mid-plan (its request dropped by the
/// server) took the planning with it, and what the planner's calls had cost was in
/// today's spend only until a restart (the store never had it). Planning now goes on
/// to `planning.llm_timeout` and its cost is in the store: the day's spend read back
/// after a restart is the one counted before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planning_a_client_hung_up_on_is_kept_in_the_day_spend_across_a_restart() {
    let dir = TempDir::new("budget-hangup");
    let calls = Arc::new(AtomicUsize::new(0));
    let base_url = serve_chat(
        axum::Router::new()
            .route("/v1/chat/completions", post(first_call_only))
            .with_state(Arc::clone(&calls)),
    )
    .await;
    let stub = Stub::start(Duration::ZERO).await;
    let configured = || {
        let mut c = config(dir.path(), &stub.url);
        c.planning.decomposer = genesis::config::DecomposerKind::Llm;
        c.planning.llm_timeout = Duration::from_secs(2);
        c.llm.providers = vec![
            serde_json::from_value::<ProviderConfig>(json!({
                "kind": "openai", "base_url": base_url,
                "model": "gpt-4o-mini", "timeout": "30s", "max_tokens": 1024
            }))
            .unwrap(),
        ];
        c
    };
    let s = TestServer::start(configured(), &[]).await;
    let (client, url) = (s.client.clone(), s.url("/api/tasks"));
    let request = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({"description": REQUEST, "mode": "plan"}))
            .send()
            .await
    });
    // The phase call was answered (paid for) and a subtask call is in flight: hang up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while calls.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the planner's second call never came ({} calls)",
            calls.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    request.abort();
    let _ = request.await;
    // Shutdown's drain waits for planning in progress.
    genesis_server::drain(&s.state, Duration::from_secs(30)).await;
    let spent = s.state.runs().spent_today().unwrap().as_f64();
    let one_call = 100.0 * 0.15 / 1e6 + 50.0 * 0.60 / 1e6;
    assert!(
        spent >= one_call,
        "the paid phase call counts today: ${spent}"
    );

    let restarted = TestServer::start(configured(), &[]).await;
    let (status, _, body) = restarted.get("/api/status").await;
    assert_eq!(status, 200, "{body}");
    let read_back = body["budget"]["spent_today"].as_f64().unwrap();
    assert!(
        (read_back - spent).abs() < 1e-9,
        "today's spend after the restart ${read_back}, before it ${spent}: {body}"
    );
}

/// Polls the run as `who` until it leaves `running` (at most 60 s).
async fn finished_as(s: &TestServer, who: crate::isolation::As<'_>, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = crate::isolation::get(s, who, &format!("/api/tasks/{id}")).await;
        assert_eq!(status, 200, "{body}");
        if body["status"] != "running" {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {id} still running: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Audit S6/V6 (left open): `budget.per_day` is one pool for every caller, so one API
/// key could spend it all. `budget.per_subject_day` holds each caller's runs to their
/// own daily cap: once alice's runs spent hers, her next run is refused with 429 naming
/// it, while bob's runs go on from his own. After a restart each caller's total is read
/// back from its runs: alice is still refused, carol is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_callers_daily_cap_stops_its_runs_and_not_the_others() {
    use crate::isolation::{As, post};
    const ALICE: &str = "key-alice-budget-000000000000";
    const BOB: &str = "key-bob-budget-1111111111111111";
    const CAROL: &str = "key-carol-budget-222222222222222";
    let dir = TempDir::new("budget-subject");
    let stub = Stub::start(Duration::ZERO).await;
    let configured = || {
        let mut c = config(dir.path(), &stub.url);
        c.server.api_keys = [ALICE, BOB, CAROL]
            .map(|k| genesis::core::Secret::new(k.to_owned()))
            .into();
        // One task per run, planned at $0.00099 and charged the stub's $0.001: two runs
        // a caller; the day has room for far more.
        c.budget.per_subject_day = Some(usd(0.002));
        c.budget.per_day = Some(usd(10.0));
        c
    };
    let s = TestServer::start(configured(), &[]).await;
    let run = json!({"description": "Write a launch announcement", "mode": "run"});
    let run_as = |key: &'static str| {
        let (s, run) = (&s, run.clone());
        async move {
            let (status, body) = post(s, As::Key(key), "/api/tasks", run).await;
            assert_eq!(status, 202, "{key}: {body}");
            let id = body["run_id"].as_str().unwrap().to_owned();
            let finished = finished_as(s, As::Key(key), &id).await;
            assert_eq!(finished["status"], "succeeded", "{finished}");
        }
    };
    run_as(ALICE).await;
    run_as(ALICE).await;
    let (status, body) = post(&s, As::Key(ALICE), "/api/tasks", run.clone()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(error_rule(&body), "budget_subject_day");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("$0.0020") && message.contains("budget.per_subject_day"),
        "{message}"
    );
    // Bob spends from his own cap, not from what alice left of a shared one.
    run_as(BOB).await;
    run_as(BOB).await;
    genesis_server::drain(&s.state, Duration::from_secs(30)).await;

    let restarted = TestServer::start(configured(), &[]).await;
    let (status, body) = post(&restarted, As::Key(ALICE), "/api/tasks", run.clone()).await;
    assert_eq!(
        status, 429,
        "alice's spend is read back after the restart: {body}"
    );
    assert_eq!(error_rule(&body), "budget_subject_day");
    let (status, body) = post(&restarted, As::Key(CAROL), "/api/tasks", run).await;
    assert_eq!(
        status, 202,
        "a caller who spent nothing is not refused: {body}"
    );
}
