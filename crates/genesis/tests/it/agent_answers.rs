//! What an HTTP agent's 2xx answer must be (audit R8 D2): one that says it is JSON must be
//! the agent answer; plain text stays plain text.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use genesis::Orchestrator;
use genesis::run::backends::{HttpAgent, HttpAgentConfig};
use genesis::run::{Agent, AgentSet, RunEvent, RunStatus};

/// Calls per route of the stub service.
#[derive(Default)]
struct Calls {
    broken: AtomicUsize,
    good: AtomicUsize,
}

/// One stub agent service: `/cut` answers JSON cut off, `/shape` JSON of another shape,
/// `/text` plain text that looks like broken JSON, `/good` the agent answer.
async fn serve(calls: Arc<Calls>) -> String {
    async fn broken(State(c): State<Arc<Calls>>, body: &'static str) -> impl IntoResponse {
        c.broken.fetch_add(1, Ordering::SeqCst);
        (
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
    }
    let app = axum::Router::new()
        .route(
            "/cut",
            post(|s: State<Arc<Calls>>| broken(s, r#"{"output": "half", "cost_usd": 4.0"#)),
        )
        .route(
            "/shape",
            post(|s: State<Arc<Calls>>| broken(s, r#"{"result": "x", "cost_usd": 4.0}"#)),
        )
        .route(
            "/text",
            post(|State(c): State<Arc<Calls>>| async move {
                c.broken.fetch_add(1, Ordering::SeqCst);
                (
                    [(header::CONTENT_TYPE, "text/plain")],
                    r#"{"output": "half""#,
                )
            }),
        )
        .route(
            "/good",
            post(|State(c): State<Arc<Calls>>| async move {
                c.good.fetch_add(1, Ordering::SeqCst);
                axum::Json(serde_json::json!({"output": "good answer", "cost_usd": 0.01}))
            }),
        )
        .with_state(calls);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn http_agent(id: &str, url: String) -> Arc<dyn Agent> {
    let client = genesis::llm::http_client_builder()
        .unwrap()
        .build()
        .unwrap();
    Arc::new(HttpAgent::new(
        id,
        HttpAgentConfig {
            timeout: Duration::from_secs(10),
            ..HttpAgentConfig::new(url)
        },
        client,
    ))
}

/// Runs a one-task-with-alternatives plan whose first agent is served by `route`, every
/// other agent by `/good`; returns the run's result, its events and the calls.
async fn run_with_first_agent_at(
    route: &str,
) -> (genesis::run::RunResult, Vec<RunEvent>, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    let base = serve(Arc::clone(&calls)).await;
    let (plan, task, first) = crate::run::bug_fix_plan(&Orchestrator::builder().build().unwrap());
    let plan = genesis::Plan {
        tasks: vec![genesis::PlannedTask {
            depends_on: Vec::new(),
            parent: None,
            ..task
        }],
        ..plan
    };
    let g = Orchestrator::builder()
        .agents(
            AgentSet::new()
                .with(
                    first.clone(),
                    http_agent(first.as_str(), format!("{base}{route}")),
                )
                .with_fallback(http_agent("good", format!("{base}/good"))),
        )
        .build()
        .unwrap();
    let mut handle = g.execute(plan, Default::default()).unwrap();
    let mut rx = handle.events();
    let result = handle.wait().await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (result, events, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_answer_that_is_not_the_agent_answer_fails_the_attempt_and_moves_on() {
    for route in ["/cut", "/shape"] {
        let (result, events, calls) = run_with_first_agent_at(route).await;
        assert_eq!(
            result.status,
            RunStatus::Succeeded,
            "{route}: {:#?}",
            result.tasks
        );
        let t = &result.tasks[0];
        // The broken body is not the task's output, and it was not retried.
        assert_eq!(t.output.as_deref(), Some("good answer"), "{route}");
        assert_eq!(calls.broken.load(Ordering::SeqCst), 1, "{route}");
        assert_eq!(calls.good.load(Ordering::SeqCst), 1, "{route}");
        let why = events
            .iter()
            .find_map(|e| match e {
                RunEvent::TaskRerouted { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{route}: no reroute in {events:#?}"));
        assert!(
            why.contains("rule: agent_answer") && why.contains("declared JSON"),
            "{route}: {why}"
        );
        // Only the good answer's cost is charged (the broken one's cannot be trusted).
        assert!(
            (result.cost.as_f64() - 0.01).abs() < 1e-9,
            "{route}: {}",
            result.cost
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_text_answer_is_the_output_as_written() {
    let (result, _, calls) = run_with_first_agent_at("/text").await;
    assert_eq!(result.status, RunStatus::Succeeded);
    assert_eq!(
        result.tasks[0].output.as_deref(),
        Some(r#"{"output": "half""#)
    );
    assert_eq!(calls.good.load(Ordering::SeqCst), 0);
}
