//! Distributed tracing: with traces exported, an HTTP agent is sent the W3C
//! `traceparent` of the task calling it, so the agent's spans join the run's trace.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use genesis::run::backends::{HttpAgent, HttpAgentConfig};
use genesis::run::{Agent, AgentSet, RunStatus};
use genesis::{Orchestrator, RunOptions};
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// An agent service that records the `traceparent` header of every call.
async fn recording_service(seen: Arc<Mutex<Vec<Option<String>>>>) -> String {
    let app = axum::Router::new().route(
        "/task",
        post(move |headers: axum::http::HeaderMap| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(
                    headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                );
                axum::Json(serde_json::json!({"output": "done", "cost_usd": 0.0}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/task")
}

/// Runs "Fix the login bug" on one HTTP agent serving every task; the `traceparent`
/// headers it was sent, one per call.
async fn run_on_http_agent() -> Vec<Option<String>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let url = recording_service(Arc::clone(&seen)).await;
    let mut config = HttpAgentConfig::new(url);
    config.timeout = Duration::from_secs(10);
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
    let plan = genesis.plan("Fix the login bug").await.unwrap();
    let result = genesis
        .execute(plan, RunOptions::default())
        .unwrap()
        .wait()
        .await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:?}", result.tasks);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), result.tasks.len(), "one call per task");
    seen
}

/// Audit D5 finding 8: nothing was passed on to the backends, so an agent's own traces
/// could not be joined to the run's. With an OpenTelemetry layer (what an OTLP
/// endpoint installs), every call carries a valid `traceparent`: version 00, sampled,
/// all in the run's one trace, each from its own task span.
#[tokio::test]
async fn http_agents_are_sent_the_traceparent_of_the_task_calling_them() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // A current-thread runtime: the run's spawned tasks run on this thread, under this
    // subscriber.
    let _default = tracing::subscriber::set_default(subscriber);
    let seen = run_on_http_agent().await;
    let headers: Vec<Vec<String>> = seen
        .iter()
        .map(|h| {
            let h = h.as_deref().expect("every call carries a traceparent");
            h.split('-').map(str::to_owned).collect()
        })
        .collect();
    for h in &headers {
        assert_eq!(
            h.iter().map(String::len).collect::<Vec<_>>(),
            [2, 32, 16, 2],
            "{h:?}"
        );
        assert_eq!((h[0].as_str(), h[3].as_str()), ("00", "01"), "{h:?}");
    }
    assert!(
        headers.iter().all(|h| h[1] == headers[0][1]),
        "one trace for the run: {headers:?}"
    );
    let mut spans: Vec<&str> = headers.iter().map(|h| h[2].as_str()).collect();
    spans.sort_unstable();
    spans.dedup();
    assert_eq!(
        spans.len(),
        headers.len(),
        "each call from its own task span"
    );
}

/// Without an exporter (no OpenTelemetry layer), no header is invented.
#[tokio::test]
async fn without_trace_export_no_traceparent_is_sent() {
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry());
    let seen = run_on_http_agent().await;
    assert!(seen.iter().all(Option::is_none), "{seen:?}");
}
