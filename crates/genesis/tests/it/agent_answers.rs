//! What an HTTP agent's 2xx answer must be (audit R8 D2): one that says it is JSON must be
//! the agent answer; plain text stays plain text, exactly as written (audit G10 H2); an
//! empty output is no answer (G10 H1); the tokens and model it reports reach the task's
//! report, events and stored run (G10 H3, D5); a negative cost is malformed (G10 D4), as
//! is an implausible token count (V10 #4); an invisible output is empty (V10 #7).

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
use genesis::store::SqliteStore;

/// A `text/plain` answer whose text happens to be the agent-answer JSON.
const TEXT_THAT_IS_JSON: &str = r#"{"output": "parsed-from-text", "cost_usd": 0.5}"#;

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
            "/empty-json",
            post(|s: State<Arc<Calls>>| broken(s, r#"{"output": " \n\t", "cost_usd": 0.02}"#)),
        )
        .route(
            "/empty-text",
            post(|State(c): State<Arc<Calls>>| async move {
                c.broken.fetch_add(1, Ordering::SeqCst);
                ([(header::CONTENT_TYPE, "text/plain")], "")
            }),
        )
        .route(
            "/text-json",
            post(|State(c): State<Arc<Calls>>| async move {
                c.broken.fetch_add(1, Ordering::SeqCst);
                (
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    TEXT_THAT_IS_JSON,
                )
            }),
        )
        .route(
            "/negative-cost",
            post(|s: State<Arc<Calls>>| broken(s, r#"{"output": "done", "cost_usd": -5}"#)),
        )
        .route(
            "/usage",
            post(|State(c): State<Arc<Calls>>| async move {
                c.broken.fetch_add(1, Ordering::SeqCst);
                axum::Json(serde_json::json!({
                    "output": "done by coder", "cost_usd": 0.03,
                    "input_tokens": 120, "output_tokens": 45, "model": "coder-model-v1",
                    "cost_us": 0.5, "trace": {"spans": 3}
                }))
            }),
        )
        .route(
            "/invisible",
            post(|s: State<Arc<Calls>>| {
                broken(
                    s,
                    r#"{"output": " \n\t\u00a0\u200b\u200c\u200d\u2060\ufeff ", "cost_usd": 0.02}"#,
                )
            }),
        )
        .route(
            "/huge-input-tokens",
            post(|s: State<Arc<Calls>>| {
                broken(
                    s,
                    r#"{"output": "done", "input_tokens": 10000000000000000000, "output_tokens": 5}"#,
                )
            }),
        )
        .route(
            "/huge-output-tokens",
            post(|s: State<Arc<Calls>>| {
                broken(
                    s,
                    r#"{"output": "done", "input_tokens": 5, "output_tokens": 9223372036854775808}"#,
                )
            }),
        )
        .route(
            "/most-tokens",
            post(|s: State<Arc<Calls>>| {
                broken(
                    s,
                    r#"{"output": "done", "input_tokens": 100000000, "output_tokens": 100000000}"#,
                )
            }),
        )
        .route(
            "/refuse",
            post(|State(c): State<Arc<Calls>>| async move {
                c.broken.fetch_add(1, Ordering::SeqCst);
                (axum::http::StatusCode::BAD_REQUEST, "déjà vu ".repeat(40))
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
    let (result, events, calls, _) = run_stored(route).await;
    (result, events, calls)
}

/// As [`run_with_first_agent_at`], journaled to a SQLite store; also returns the run
/// as stored, read back from the store reopened.
async fn run_stored(
    route: &str,
) -> (
    genesis::run::RunResult,
    Vec<RunEvent>,
    Arc<Calls>,
    genesis::store::RunRecord,
) {
    let dir = crate::TempDir::new("agent-answers");
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
    let id = {
        let store = Arc::new(SqliteStore::open(&dir).unwrap());
        crate::support::create_run(&store, &plan)
    };
    let store = Arc::new(SqliteStore::open(&dir).unwrap());
    let mut handle = g
        .execute(plan, crate::journaled(&id, store.clone()))
        .unwrap();
    let mut rx = handle.events();
    let result = handle.wait().await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    drop(store);
    let record = crate::stored(&SqliteStore::open(&dir).unwrap(), &id);
    (result, events, calls, record)
}

/// Why the first agent was given up on (the task's `task_rerouted`).
fn reroute_reason(route: &str, events: &[RunEvent]) -> String {
    events
        .iter()
        .find_map(|e| match e {
            RunEvent::TaskRerouted { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{route}: no reroute in {events:#?}"))
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

/// Audit G10 H1: an answer whose output is empty or blank — JSON `output` or a text body
/// — is no answer: the attempt fails with rule `empty_answer` (charged the cost it
/// reports, like an LLM agent's empty answer), is not retried on the agent, and the
/// task moves to its alternative; never a silent success with an empty output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_answer_fails_the_attempt_and_moves_on() {
    for (route, charged) in [("/empty-json", 0.02), ("/empty-text", 0.0)] {
        let (result, events, calls) = run_with_first_agent_at(route).await;
        assert_eq!(
            result.status,
            RunStatus::Succeeded,
            "{route}: {:#?}",
            result.tasks
        );
        assert_eq!(
            result.tasks[0].output.as_deref(),
            Some("good answer"),
            "{route}"
        );
        assert_eq!(calls.broken.load(Ordering::SeqCst), 1, "{route}");
        assert_eq!(calls.good.load(Ordering::SeqCst), 1, "{route}");
        let why = reroute_reason(route, &events);
        assert!(
            why.contains("rule: empty_answer") && why.contains("the answer is empty"),
            "{route}: {why}"
        );
        assert!(
            (result.cost.as_f64() - (0.01 + charged)).abs() < 1e-9,
            "{route}: {}",
            result.cost
        );
    }
}

/// Audit G10 H2: a `text/plain` answer whose text is the agent-answer JSON is the output
/// exactly as written, and charged nothing from its text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_text_answer_is_never_read_as_json() {
    let (result, _, calls) = run_with_first_agent_at("/text-json").await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:#?}", result.tasks);
    assert_eq!(result.tasks[0].output.as_deref(), Some(TEXT_THAT_IS_JSON));
    assert_eq!(result.cost, genesis::core::Usd::ZERO);
    assert_eq!(calls.good.load(Ordering::SeqCst), 0);
}

/// Audit G10 D4: a negative `cost_usd` is a malformed answer (rule `agent_answer`,
/// naming the value), not a free one: the task moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_cost_is_a_malformed_answer() {
    let (result, events, calls) = run_with_first_agent_at("/negative-cost").await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:#?}", result.tasks);
    assert_eq!(result.tasks[0].output.as_deref(), Some("good answer"));
    assert_eq!(calls.broken.load(Ordering::SeqCst), 1);
    let why = reroute_reason("/negative-cost", &events);
    assert!(
        why.contains("cost_usd -5 is not a cost") && why.contains("rule: agent_answer"),
        "{why}"
    );
}

/// Audit G10 H3 / D5: the tokens and model an HTTP agent reports reach the task's
/// report, its `task_succeeded`, the run's totals and the stored run; fields Genesis
/// does not know (`cost_us`, a typo) are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokens_and_model_an_agent_reports_reach_the_report_events_and_store() {
    let (result, events, calls, stored) = run_stored("/usage").await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:#?}", result.tasks);
    assert_eq!(calls.good.load(Ordering::SeqCst), 0);
    let t = &result.tasks[0];
    assert_eq!(t.output.as_deref(), Some("done by coder"));
    assert_eq!((t.input_tokens, t.output_tokens), (120, 45), "{t:?}");
    assert_eq!(t.model.as_ref().map(|m| m.as_str()), Some("coder-model-v1"));
    assert!((t.cost.as_f64() - 0.03).abs() < 1e-9, "{}", t.cost);
    assert_eq!((result.input_tokens, result.output_tokens), (120, 45));
    let succeeded = events
        .iter()
        .find_map(|e| match e {
            RunEvent::TaskSucceeded {
                model,
                input_tokens,
                output_tokens,
                ..
            } => Some((model.clone(), *input_tokens, *output_tokens)),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (
            succeeded.0.as_ref().map(|m| m.as_str()),
            succeeded.1,
            succeeded.2
        ),
        (Some("coder-model-v1"), 120, 45)
    );
    let s = &stored.tasks[0];
    assert_eq!(
        (
            s.model.as_ref().map(|m| m.as_str()),
            s.input_tokens,
            s.output_tokens
        ),
        (Some("coder-model-v1"), 120, 45),
        "{s:?}"
    );
    assert_eq!(stored.token_totals(), (120, 45));
}

/// Audit G10 D6: an agent's error body is quoted cut between words, never inside a
/// character, saying how many bytes were left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_body_is_cut_between_words_saying_what_was_left_out() {
    let (result, events, _) = run_with_first_agent_at("/refuse").await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:#?}", result.tasks);
    let why = reroute_reason("/refuse", &events);
    let quoted = why.split_once("Bad Request: ").unwrap().1;
    assert!(quoted.contains("more bytes)"), "{why}");
    for word in quoted.split_whitespace() {
        // The ellipsis closes the last whole word.
        let word = word.trim_end_matches('…');
        assert!(
            ["déjà", "vu", "", "more", "bytes)"].contains(&word)
                || (word.starts_with('(') && word[1..].parse::<usize>().is_ok()),
            "{word:?} in {why}"
        );
    }
}

/// The run's token totals in its `run_finished`.
fn finished_tokens(events: &[RunEvent]) -> (u64, u64) {
    events
        .iter()
        .find_map(|e| match e {
            RunEvent::RunFinished {
                input_tokens,
                output_tokens,
                ..
            } => Some((*input_tokens, *output_tokens)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no run_finished in {events:#?}"))
}

/// Audit V10 #7: an output of only whitespace and invisible format characters (NBSP,
/// U+200B, U+200C, U+200D, U+2060, U+FEFF) is empty, and the message says what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_of_invisible_characters_is_empty() {
    let (result, events, calls) = run_with_first_agent_at("/invisible").await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:#?}", result.tasks);
    assert_eq!(result.tasks[0].output.as_deref(), Some("good answer"));
    assert_eq!(calls.broken.load(Ordering::SeqCst), 1);
    let why = reroute_reason("/invisible", &events);
    assert!(
        why.contains("the answer is empty (10 characters, all whitespace or invisible)")
            && why.contains("rule: empty_answer"),
        "{why}"
    );
    assert!(
        (result.cost.as_f64() - 0.03).abs() < 1e-9,
        "{}",
        result.cost
    );
}

/// Audit V10 #4: a token count above a hundred million per answer is a malformed answer
/// (rule `agent_answer`, naming the field and value), so it reaches no total; the report,
/// the stored run and `run_finished` agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_implausible_token_count_is_a_malformed_answer() {
    for (route, field) in [
        ("/huge-input-tokens", "input_tokens 10000000000000000000"),
        ("/huge-output-tokens", "output_tokens 9223372036854775808"),
    ] {
        let (result, events, calls, stored) = run_stored(route).await;
        assert_eq!(
            result.status,
            RunStatus::Succeeded,
            "{route}: {:#?}",
            result.tasks
        );
        assert_eq!(result.tasks[0].output.as_deref(), Some("good answer"));
        assert_eq!(calls.broken.load(Ordering::SeqCst), 1, "{route}");
        let why = reroute_reason(route, &events);
        assert!(
            why.contains(&format!(
                "{field} is not a plausible token count (at most 100000000 per answer)"
            )) && why.contains("rule: agent_answer"),
            "{route}: {why}"
        );
        assert_eq!(
            (result.input_tokens, result.output_tokens),
            (0, 0),
            "{route}"
        );
        assert_eq!(finished_tokens(&events), (0, 0), "{route}");
        assert_eq!(stored.token_totals(), (0, 0), "{route}");
    }
    // The bound itself is accepted, and every total says the same.
    let (result, events, calls, stored) = run_stored("/most-tokens").await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:#?}", result.tasks);
    assert_eq!(calls.good.load(Ordering::SeqCst), 0);
    let most = (100_000_000, 100_000_000);
    let t = &result.tasks[0];
    assert_eq!((t.input_tokens, t.output_tokens), most);
    assert_eq!((result.input_tokens, result.output_tokens), most);
    assert_eq!(finished_tokens(&events), most);
    assert_eq!(stored.token_totals(), most);
}
