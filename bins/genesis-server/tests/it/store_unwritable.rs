//! Audit D1: a run store that stops taking writes (a full disk, a read-only file). The
//! runs went on without a journal and were paid for again after every restart, `/ready`
//! stayed green, and start-up resumed runs onto a store that could not journal them.
//! The failure is injected through the store's own switch
//! ([`genesis::store::SqliteStore::set_query_only`]): the tests run as root, for whom
//! a read-only file is still writable.

use std::collections::HashMap;
use std::time::Duration;

use genesis_server::AppState;

use crate::support::{Stub, TempDir, TestServer, config, error_rule};

/// Waits (bounded) until `done` holds, polling every 10 ms.
async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stops_taking_writes_stops_its_runs_and_fails_readiness() {
    let dir = TempDir::new("store-unwritable");
    let stub = Stub::start(Duration::from_millis(200)).await;
    let server = TestServer::start(config(dir.path(), &stub.url), &[]).await;
    let (status, _, ready) = server.get("/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["store_writable"], true, "{ready}");
    let (_, _, health) = server.get("/health").await;
    assert_eq!(health["store"]["writable"], true, "{health}");

    let id = server.submit("Build a SaaS business for invoices").await;
    let (_, _, run) = server.get(&format!("/api/tasks/{id}")).await;
    let n = run["tasks"].as_array().unwrap().len();
    until(
        "the run's first agent call",
        Duration::from_secs(10),
        || !stub.calls_for(&id).is_empty(),
    )
    .await;
    server.state.sqlite_store().set_query_only(true).unwrap();
    until("the run stops", Duration::from_secs(10), || {
        !server.state.runs().is_live(&id)
    })
    .await;
    let before: HashMap<String, u32> = stub.calls_for(&id);
    assert!(
        before.len() < n,
        "the run went on without a journal: {} of {n} tasks called",
        before.len()
    );

    let (status, _, ready) = server.get("/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["ready"], false);
    assert_eq!(
        ready["checks"]["store"], true,
        "reads still answer: {ready}"
    );
    assert_eq!(ready["checks"]["store_writable"], false, "{ready}");
    assert_eq!(ready["reason"]["rule"], "store_unwritable", "{ready}");
    let message = ready["reason"]["message"].as_str().unwrap();
    assert!(message.contains("readonly"), "{message}");
    let (status, _, health) = server.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["store"]["writable"], false, "{health}");
    assert!(
        health["store"]["error"]
            .as_str()
            .unwrap()
            .contains("readonly"),
        "{health}"
    );
    let (_, _, status_page) = server.get("/api/status").await;
    assert_eq!(status_page["store"]["writable"], false, "{status_page}");
    // The store keeps the run as it was: running, not live, resumable.
    let (_, _, run) = server.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(run["status"], "running", "{run}");
    assert_eq!(run["live"], false, "{run}");
    // Its event stream replays what was journaled, says the run stopped and why, and
    // ends (verification V6: it polled on until the stream's lifetime, an hour).
    let events = tokio::time::timeout(
        Duration::from_secs(10),
        server
            .client
            .get(server.url(&format!("/api/tasks/{id}/events")))
            .send()
            .await
            .unwrap()
            .text(),
    )
    .await
    .expect("the event stream of a stopped run ends")
    .unwrap();
    let last = events
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .next_back()
        .unwrap_or_default();
    assert!(
        last.contains("\"type\":\"run_interrupted\"") && last.contains("journal_unavailable"),
        "{events}"
    );
    let (status, _, refused) = server
        .post(
            "/api/tasks",
            serde_json::json!({"description": "Fix the login bug", "mode": "run"}),
        )
        .await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(error_rule(&refused), "run_store");

    // Writable again: ready at the next probe (`/ready` probes at most once a second),
    // and the run resumes (as at a restart) doing again only what was not journaled.
    server.state.sqlite_store().set_query_only(false).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, ready) = server.get("/ready").await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready 5 s after the store took writes again: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(genesis_server::resume(&server.state).unwrap(), 1);
    let run = server.wait_finished(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let after = stub.calls_for(&id);
    assert_eq!(after.len(), n, "{after:?}");
    for (task, calls) in &after {
        let limit = if before.contains_key(task) { 2 } else { 1 };
        assert!(
            *calls <= limit,
            "{task} called {calls} times (before the stop: {:?})",
            before.get(task)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_a_store_that_does_not_take_writes_and_resumes_nothing() {
    let dir = TempDir::new("store-unwritable-start");
    let stub = Stub::start(Duration::ZERO).await;
    let (journal, id, _) = crate::journal_run(&dir, "Build a SaaS business for invoices");
    drop(journal);
    let state = AppState::from_config(config(dir.path(), &stub.url), &[], None).unwrap();
    state.sqlite_store().set_query_only(true).unwrap();
    let err = genesis_server::resume(&state).unwrap_err();
    let text = genesis::core::error_chain(&err);
    assert!(text.contains("(rule: store_unwritable)"), "{text}");
    let data_dir = dir.path().join("data").display().to_string();
    assert!(text.contains(&data_dir), "{text}");
    assert!(text.contains("readonly"), "{text}");
    assert_eq!(state.runs().running(), 0);
    assert_eq!(stub.total_calls(), 0, "no run resumed");
    let run = state.runs().store().get_run(id.as_str()).unwrap().unwrap();
    assert_eq!(run.status, genesis::run::RunStatus::Running);
    // Once it takes writes, the next start resumes the run.
    state.sqlite_store().set_query_only(false).unwrap();
    assert_eq!(genesis_server::resume(&state).unwrap(), 1);
}
