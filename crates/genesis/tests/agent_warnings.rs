//! Audit G10 H3: fields of an agent's answer that Genesis does not know are accepted,
//! but each run logs one warning per agent and field, naming both, so a typo such as
//! `cost_us` (its cost is then 0) is visible.
//!
//! Its own test binary, with a global subscriber installed before any callsite exists
//! (see `task_logs.rs` for why a scoped or late one can miss events).

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::routing::post;
use genesis::core::{RunId, Task, TaskId, TaskKind};
use genesis::run::backends::{HttpAgent, HttpAgentConfig};
use genesis::run::{Agent, AgentRequest};

#[path = "common/logs.rs"]
mod logs;
use logs::Logs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_answer_fields_are_warned_about_once_per_run_agent_and_field() {
    let logs = Logs::capture(tracing::Level::WARN);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/task",
        post(|| async {
            axum::Json(serde_json::json!({
                "output": "done", "cost_us": 0.5, "trace": {"spans": 3}
            }))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = genesis::llm::http_client_builder()
        .unwrap()
        .build()
        .unwrap();
    let agent = HttpAgent::new(
        "coder",
        HttpAgentConfig {
            timeout: Duration::from_secs(10),
            ..HttpAgentConfig::new(format!("http://{addr}/task"))
        },
        client,
    );
    let task = Task::new(TaskId::new("t1"), TaskKind::Implement, "Fix the parser");
    // Two calls in one run, one in another.
    for run in ["run_a", "run_a", "run_b"] {
        let out = agent
            .execute(AgentRequest::new(RunId::new(run), task.clone(), "coder"))
            .await
            .unwrap();
        // Accepted: the output is used, and the typo's cost is not charged.
        assert_eq!(out.text, "done");
        assert_eq!(out.cost, genesis::core::Usd::ZERO);
    }
    let text = logs.text();
    let warned = |field: &str| {
        text.lines()
            .filter(|l| {
                l.contains("WARN")
                    && l.contains("agent coder answered with field")
                    && l.contains(&format!("field={field}"))
            })
            .map(|l| l.contains("run_a"))
            .collect::<Vec<bool>>()
    };
    // One warning per run: run_a's, then run_b's.
    assert_eq!(warned("cost_us"), [true, false], "{text}");
    assert_eq!(warned("trace"), [true, false], "{text}");
}
