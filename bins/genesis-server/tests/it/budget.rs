//! Money through the server: a client's `budget_usd` is capped by `budget.per_run`,
//! `genesis_cost_usd_total` counts each agent call once (LLM and HTTP agents alike),
//! and `genesis_budget_exceeded_total` names the budget that ran out.
//!
//! The metric tests serve the app on a current-thread runtime inside
//! `metrics::with_local_recorder`: the server, its runs and their agent calls all run
//! on that thread, so the local recorder sees exactly this server's metrics, whatever
//! other tests of this binary record into the global one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
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
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(calls);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
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
    let counted = series(&rendered, "genesis_cost_usd_total");
    assert!(
        (counted - cost).abs() < 1e-9,
        "genesis_cost_usd_total {counted}, the run spent {cost} ({http_calls} HTTP calls at $0.001, {llm_calls} LLM calls)"
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
