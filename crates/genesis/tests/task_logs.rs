//! L6 finding 12: the task's log lines name the model its call uses (the `task` span's
//! `model` field), not only the plan.
//!
//! Its own test binary, and so its own process: `tracing` caches per callsite whether any
//! subscriber wants it, process-wide. In the shared `it` binary another test's thread
//! could register the executor's callsites, with no subscriber of its own, between this
//! test installing its subscriber and running, and the cached "nobody wants it" left the
//! `task` span unrecorded (about one run in ten). Alone here, the subscriber is global
//! before any callsite exists.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Json;
use axum::routing::post;
use genesis::core::{Task, TaskId, TaskKind};
use genesis::htdag::{Limits, TaskDag};
use genesis::run::RunStatus;
use genesis::{PlanOptions, RunOptions};
use serde_json::{Value, json};

#[path = "common/logs.rs"]
mod logs;
use logs::Logs;

/// A fake OpenAI chat-completions provider that answers every call with "ok".
async fn chat(Json(_): Json<Value>) -> Json<Value> {
    Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tasks_log_lines_name_the_model() {
    let logs = Logs::capture(tracing::Level::DEBUG);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/v1/chat/completions", post(chat));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config: genesis::GenesisConfig = toml::from_str(&format!(
        r#"
[llm]
agents = true
[[llm.providers]]
kind = "openai"
base_url = "http://{addr}/v1"
model = "gpt-4o-mini"
api_key = "sk-test"
timeout = "5s"
"#
    ))
    .unwrap();
    let genesis = genesis::orchestrator_from_config(&config, &[]).unwrap();
    let mut dag = TaskDag::new(Limits::default());
    dag.add_task(
        Task::new(
            TaskId::new("t1"),
            TaskKind::Document,
            "Write the release notes",
        ),
        None,
    )
    .unwrap();
    let plan = genesis
        .plan_dag("Write the release notes", &dag, &PlanOptions::default())
        .unwrap();
    let result = genesis
        .execute(plan, RunOptions::default())
        .unwrap()
        .wait()
        .await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:?}", result.tasks);
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("task{task_id=t1") && l.contains("model=gpt-4o-mini")),
        "{text}"
    );
}
