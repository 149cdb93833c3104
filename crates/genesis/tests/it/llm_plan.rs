//! LLM decomposition against a real OpenAI-compatible server on loopback: it degrades to
//! the heuristic decomposer while the provider is down, and resumes once the breaker
//! closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use genesis::GenesisConfig;
use genesis::resilience::DegradationLevel;

struct Provider {
    up: AtomicBool,
    calls: AtomicUsize,
}

async fn chat(State(p): State<Arc<Provider>>, Json(body): Json<serde_json::Value>) -> Response {
    p.calls.fetch_add(1, Ordering::SeqCst);
    if !p.up.load(Ordering::SeqCst) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": {"message": "down"}})),
        )
            .into_response();
    }
    let prompt = body["messages"].to_string();
    let content = if prompt.contains("top-level phases") {
        serde_json::json!({"phases": [
            {"kind": "design", "description": "Design the invoice data model"},
            {"kind": "backend", "description": "Build the invoice API", "depends_on": [0]}
        ]})
    } else {
        serde_json::json!({"subtasks": [
            {"kind": "backend", "description": "Write the invoice endpoints"},
            {"kind": "test", "description": "Test the invoice endpoints", "depends_on": [0]}
        ]})
    };
    Json(serde_json::json!({
        "id": "x", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content.to_string()}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
    }))
    .into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrades_while_the_provider_is_down_and_resumes_after_the_breaker_closes() {
    let provider = Arc::new(Provider {
        up: AtomicBool::new(false),
        calls: AtomicUsize::new(0),
    });
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(Arc::clone(&provider));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let toml = format!(
        r#"
[planning]
decomposer = "llm"
[executor.breaker]
failure_threshold = 2
cool_down = "300ms"
[[llm.providers]]
kind = "openai"
base_url = "http://{addr}/v1"
model = "gpt-4o-mini"
timeout = "5s"
"#
    );
    let dir = crate::TempDir::new("llm-plan");
    let path = dir.join("llm.toml");
    std::fs::write(&path, toml).unwrap();
    let config = GenesisConfig::load(&[path], Vec::new()).unwrap();
    let genesis = genesis::orchestrator_from_config(&config, &[]).unwrap();

    // Down: every plan still comes back, from the heuristic decomposer, marked degraded.
    for _ in 0..3 {
        let plan = genesis
            .plan("Build a SaaS business for invoices")
            .await
            .unwrap();
        assert_eq!(plan.decomposer, "heuristic");
        assert_eq!(plan.degradation, DegradationLevel::LlmFallback);
        assert!(
            plan.degradation_reason
                .as_deref()
                .unwrap()
                .contains("llm:gpt-4o-mini")
        );
        assert!(plan.render_tree().contains("llm_fallback"));
    }
    // The breaker opened after 2 failures: the third plan did not call the provider.
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);

    // Back up: once the cool-down passes, a probe goes through and LLM planning resumes.
    provider.up.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let plan = genesis
        .plan("Build a SaaS business for invoices")
        .await
        .unwrap();
    assert_eq!(plan.decomposer, "llm:gpt-4o-mini");
    assert_eq!(plan.degradation, DegradationLevel::Full);
    assert_eq!(plan.tasks.len(), 6, "2 phases x (1 + 2 subtasks)");
    assert_eq!(plan.task("t2").unwrap().depends_on[0].as_str(), "t1");
    assert!(plan.validation.passed);
}
