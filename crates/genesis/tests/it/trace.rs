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

/// Installs, once per process, a global subscriber that records every span (a bare
/// `Registry`), under the per-test subscribers these tests set on their own threads.
///
/// `tracing` caches per callsite, process-wide, whether any subscriber wants it. In this
/// shared test binary another test's thread, with no subscriber, can register the
/// executor's callsites while a test here installs its own; the "nobody wants it" the
/// other thread computed can then land after the test's rebuild of the cache, and the
/// run's `orchestrate` and `task` spans were not recorded (about one full-suite run in
/// six under load). With a global subscriber that wants every span, no callsite is ever
/// cached as unwanted; each thread's own subscriber still decides what it records.
fn spans_everywhere() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Nothing else in this binary installs a global subscriber.
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    });
}

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
/// all in the run's one trace, each from its own span (the call's `agent.call`, a child
/// of its task's).
#[tokio::test]
async fn http_agents_are_sent_the_traceparent_of_the_task_calling_them() {
    spans_everywhere();
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
    assert_eq!(spans.len(), headers.len(), "each call from its own span");
}

/// Without an exporter (no OpenTelemetry layer), no header is invented.
#[tokio::test]
async fn without_trace_export_no_traceparent_is_sent() {
    spans_everywhere();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry());
    let seen = run_on_http_agent().await;
    assert!(seen.iter().all(Option::is_none), "{seen:?}");
}

// ------------------------------------------------ span content (audit R7 items 8, 10)

/// A span exporter keeping what it is given (the SDK's exporter interface, not our code).
#[derive(Debug, Clone, Default)]
struct Kept(Arc<Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

impl opentelemetry_sdk::trace::SpanExporter for Kept {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

/// An agent that refuses every task (not retried).
struct Refusing;

#[async_trait::async_trait]
impl Agent for Refusing {
    async fn execute(
        &self,
        _: genesis::run::AgentRequest,
    ) -> Result<genesis::run::AgentOutput, genesis::run::AgentError> {
        Err(genesis::run::AgentError::Rejected {
            agent: "refusing".into(),
            message: "refused on purpose".into(),
        })
    }
}

/// An agent that answers every task.
struct Answering;

#[async_trait::async_trait]
impl Agent for Answering {
    async fn execute(
        &self,
        r: genesis::run::AgentRequest,
    ) -> Result<genesis::run::AgentOutput, genesis::run::AgentError> {
        Ok(genesis::run::AgentOutput {
            text: format!("done {}", r.task.id),
            ..Default::default()
        })
    }
}

fn attribute<'s>(
    span: &'s opentelemetry_sdk::trace::SpanData,
    key: &str,
) -> Option<&'s opentelemetry::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

/// Spans kept in memory: the store, its provider, a subscriber exporting to it, and a
/// current-thread runtime (everything the test runs stays on its thread).
fn kept_spans() -> (
    Kept,
    opentelemetry_sdk::trace::SdkTracerProvider,
    impl tracing::Subscriber + Send + Sync,
    tokio::runtime::Runtime,
) {
    spans_everywhere();
    let kept = Kept::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(kept.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (kept, provider, subscriber, runtime)
}

/// Plans "Fix the login bug" and runs it on `agent` inside a `request` span, with spans
/// kept and metrics recorded locally (a current-thread runtime: the run's tasks run on
/// this thread); the run's status, the spans, and the Prometheus text.
fn traced_run(
    agent: Arc<dyn Agent>,
) -> (RunStatus, Vec<opentelemetry_sdk::trace::SpanData>, String) {
    let recorder = genesis::telemetry::build_prometheus_recorder().unwrap();
    let (kept, provider, subscriber, runtime) = kept_spans();
    let status = metrics::with_local_recorder(&recorder, || {
        let _default = tracing::subscriber::set_default(subscriber);
        runtime.block_on(async {
            use tracing::Instrument as _;
            let genesis = Orchestrator::builder()
                .agents(AgentSet::new().with_fallback(agent))
                .build()
                .unwrap();
            let request = tracing::info_span!("request");
            let plan = genesis
                .plan("Fix the login bug")
                .instrument(request.clone())
                .await
                .unwrap();
            let handle = request
                .in_scope(|| genesis.execute(plan, RunOptions::default()))
                .unwrap();
            let status = handle.wait().await.status;
            drop(request);
            status
        })
    });
    provider.force_flush().unwrap();
    let spans = kept.0.lock().unwrap().clone();
    (status, spans, recorder.handle().render())
}

/// Audit R7 item 8: a failed run's `orchestrate` span and its failed `task` span had an
/// empty status, and the task span no outcome, attempts or final agent. Now both have
/// the error status with why; the task span says `outcome`, `attempts` (an integer) and
/// `final_agent`. Item 10: the run is counted in `genesis_runs_total{status="failed"}`.
#[test]
fn a_failed_run_has_error_status_on_its_spans_and_is_counted() {
    let (status, spans, metrics) = traced_run(Arc::new(Refusing));
    assert_eq!(status, RunStatus::Failed);
    let failed: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "task" && attribute(s, "outcome") == Some(&"failed".into()))
        .collect();
    assert!(!failed.is_empty(), "no failed task span: {spans:#?}");
    for task in &failed {
        match &task.status {
            opentelemetry::trace::Status::Error { description } => {
                assert!(description.contains("refused on purpose"), "{description}");
            }
            other => panic!("task status {other:?}"),
        }
        // An integer (not the text tracing-opentelemetry makes of unsigned values): the
        // calls made on the task's candidate agents.
        assert!(
            matches!(attribute(task, "attempts"), Some(opentelemetry::Value::I64(n)) if *n >= 1),
            "{task:#?}"
        );
        assert!(attribute(task, "final_agent").is_some(), "{task:#?}");
    }
    let run = spans.iter().find(|s| s.name == "orchestrate").unwrap();
    assert_eq!(attribute(run, "status"), Some(&"failed".into()));
    match &run.status {
        opentelemetry::trace::Status::Error { description } => {
            assert!(
                description.starts_with("run failed: ")
                    && description.contains("refused on purpose"),
                "{description}"
            );
        }
        other => panic!("orchestrate status {other:?}"),
    }
    assert!(
        metrics.contains(r#"genesis_runs_total{status="failed"} 1"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"genesis_runs_total{status="succeeded"}"#),
        "{metrics}"
    );
}

/// A succeeded run: its task spans say `succeeded` with an unset status, and the run
/// is counted once as `succeeded`. Audit R7 item 8: planning had no spans; its
/// stages (screen, decompose, route, validate) are children of the request's span.
#[test]
fn plan_stages_are_children_of_the_request_and_a_succeeded_run_is_counted() {
    let (status, spans, metrics) = traced_run(Arc::new(Answering));
    assert_eq!(status, RunStatus::Succeeded);
    let request = spans.iter().find(|s| s.name == "request").unwrap();
    let request_id = request.span_context.span_id();
    for stage in [
        "plan.screen",
        "plan.decompose",
        "plan.route",
        "plan.validate",
    ] {
        let span = spans
            .iter()
            .find(|s| s.name == stage)
            .unwrap_or_else(|| panic!("no {stage} span: {spans:#?}"));
        assert_eq!(
            span.parent_span_id, request_id,
            "{stage} is not under request"
        );
    }
    let tasks: Vec<_> = spans.iter().filter(|s| s.name == "task").collect();
    assert!(!tasks.is_empty());
    for task in tasks {
        assert_eq!(
            attribute(task, "outcome"),
            Some(&"succeeded".into()),
            "{task:#?}"
        );
        assert_eq!(task.status, opentelemetry::trace::Status::Unset);
    }
    assert!(
        metrics.contains(r#"genesis_runs_total{status="succeeded"} 1"#),
        "{metrics}"
    );
}

/// Verification V7: the `llm.call` span exported its token counts as text and a call
/// refused with 429 had an empty status. Counts are integers now, and a failed call has
/// the error status with why, like failed tasks and runs.
#[test]
fn llm_call_spans_have_integer_counts_and_error_status_on_failure() {
    use genesis::llm::{CompletionRequest, LlmClient as _, OpenAiClient, ProviderConfig};
    let (kept, provider, subscriber, runtime) = kept_spans();
    let _default = tracing::subscriber::set_default(subscriber);
    runtime.block_on(async {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            post(move || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    use axum::response::IntoResponse as _;
                    if n == 0 {
                        return axum::Json(serde_json::json!({
                            "id": "x", "object": "chat.completion", "model": "gpt-4o-mini",
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46}
                        }))
                        .into_response();
                    }
                    (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        axum::Json(serde_json::json!({"error": {"message": "slow down"}})),
                    )
                        .into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let config: ProviderConfig = serde_json::from_value(serde_json::json!({
            "kind": "openai", "base_url": format!("http://{addr}/v1"),
            "model": "gpt-4o-mini", "api_key": "sk-test", "max_tokens": 256
        }))
        .unwrap();
        let client = OpenAiClient::new(config).unwrap();
        client
            .complete(&CompletionRequest::user("hello"))
            .await
            .unwrap();
        assert!(client.complete(&CompletionRequest::user("again")).await.is_err());
    });
    provider.force_flush().unwrap();
    let spans = kept.0.lock().unwrap().clone();
    let calls: Vec<_> = spans.iter().filter(|s| s.name == "llm.call").collect();
    assert_eq!(calls.len(), 2, "{spans:#?}");
    let (ok, refused) = (calls[0], calls[1]);
    assert_eq!(
        attribute(ok, "gen_ai.usage.input_tokens"),
        Some(&opentelemetry::Value::I64(12))
    );
    assert_eq!(
        attribute(ok, "gen_ai.usage.output_tokens"),
        Some(&opentelemetry::Value::I64(34))
    );
    assert_eq!(
        attribute(ok, "gen_ai.request.max_tokens"),
        Some(&opentelemetry::Value::I64(256))
    );
    assert!(
        !matches!(ok.status, opentelemetry::trace::Status::Error { .. }),
        "{ok:#?}"
    );
    match &refused.status {
        opentelemetry::trace::Status::Error { description } => {
            assert!(description.contains("429"), "{description}");
        }
        other => panic!("a refused call's status {other:?}"),
    }
}

/// Audit R7 item 8 (hardening): an HTTP agent's call had no span of its own. Each call
/// is now an `agent.call` client span, a child of its task's span, with the status code
/// as an integer; the `traceparent` the agent is sent is that span's, so the agent's own
/// spans hang under the call.
#[test]
fn http_agent_calls_are_client_spans_under_their_task_and_carry_their_context() {
    let (kept, provider, subscriber, runtime) = kept_spans();
    let seen = {
        let _default = tracing::subscriber::set_default(subscriber);
        runtime.block_on(run_on_http_agent())
    };
    provider.force_flush().unwrap();
    let spans = kept.0.lock().unwrap().clone();
    let calls: Vec<_> = spans.iter().filter(|s| s.name == "agent.call").collect();
    assert_eq!(calls.len(), seen.len(), "one span per call: {spans:#?}");
    let tasks: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "task")
        .map(|s| s.span_context.span_id())
        .collect();
    for call in &calls {
        assert!(
            tasks.contains(&call.parent_span_id),
            "an agent.call under a task span: {call:#?}"
        );
        assert_eq!(call.span_kind, opentelemetry::trace::SpanKind::Client);
        assert_eq!(
            attribute(call, "http.response.status_code"),
            Some(&opentelemetry::Value::I64(200))
        );
        assert!(attribute(call, "server.address").is_some(), "{call:#?}");
    }
    let mut sent: Vec<String> = seen
        .iter()
        .map(|h| h.as_deref().unwrap().split('-').nth(2).unwrap().to_owned())
        .collect();
    let mut ids: Vec<String> = calls
        .iter()
        .map(|c| c.span_context.span_id().to_string())
        .collect();
    sent.sort();
    ids.sort();
    assert_eq!(sent, ids, "each traceparent is its call's span");
}
