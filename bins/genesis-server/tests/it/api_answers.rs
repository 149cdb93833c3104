//! What the API answers in the corners a newcomer's audit walked into: run mode without
//! agent backends, idempotent replays of finished runs, listing cursors, 405s, and the
//! messages of bad queries, bodies and repeated cancels.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Stub, TempDir, TestServer, config, error_rule, page_ids};

const SMALL: &str = "Fix the login bug";

async fn server(tag: &str) -> (TempDir, Stub, TestServer) {
    let dir = TempDir::new(tag);
    let stub = Stub::start(Duration::ZERO).await;
    let s = TestServer::start(config(dir.path(), &stub.url), &[]).await;
    (dir, stub, s)
}

/// The candidates of a planned task: its agent, then its routing alternatives.
fn candidates(task: &Value) -> Vec<String> {
    task["agent"]
        .as_str()
        .into_iter()
        .chain(
            task["route"]["alternatives"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["agent"].as_str()),
        )
        .map(str::to_owned)
        .collect()
}

/// Audit item 1: with the default configuration (no `[backends]`, `llm.agents = false`)
/// a run was answered 202 and then failed every task with "no backend is configured
/// for agent ...". It is refused before it is journaled, naming the task, its agents
/// and what to configure; plan mode is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_no_backend_can_carry_out_is_refused_before_it_is_journaled() {
    let dir = TempDir::new("no-backends");
    let stub = Stub::start(Duration::ZERO).await;
    let mut c = config(dir.path(), &stub.url);
    c.backends.clear();
    let s = TestServer::start(c, &[]).await;

    let (status, _, plan) = s.post("/api/tasks", json!({"description": SMALL})).await;
    assert_eq!(status, 200, "plan mode needs no backend: {plan}");
    let first = &plan["tasks"][0];

    let (status, _, body) = s
        .post(
            "/api/tasks",
            json!({"description": SMALL, "mode": "run", "idempotency_key": "nb-1"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_rule(&body), "agent_backend");
    assert_eq!(body["error"]["category"], "config");
    let message = body["error"]["message"].as_str().unwrap();
    let task = first["id"].as_str().unwrap();
    assert!(message.contains(&format!("task {task} ")), "{message}");
    for agent in candidates(first) {
        assert!(message.contains(&agent), "{message} should name {agent}");
    }
    assert!(message.contains("[backends."), "{message}");
    assert!(message.contains("llm.agents = true"), "{message}");
    // Nothing was journaled, nothing was called, and the key is still free.
    let (_, _, list) = s.get("/api/tasks").await;
    assert_eq!(page_ids(&list), Vec::<String>::new(), "{list}");
    assert_eq!(stub.total_calls(), 0);
}

/// The check looks at every candidate of a task, as the executor does: a task whose
/// own agent has no backend but one of whose alternatives has runs (re-routed), and a
/// plan with one task no candidate of which is served is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_accepted_when_every_task_has_a_served_candidate() {
    let (_dir, _stub, planner) = server("alt-plan").await;
    let (status, _, plan) = planner
        .post("/api/tasks", json!({"description": SMALL}))
        .await;
    assert_eq!(status, 200, "{plan}");
    let tasks = plan["tasks"].as_array().unwrap();
    // Serve each task's last candidate only.
    let served: BTreeSet<String> = tasks
        .iter()
        .map(|t| candidates(t).last().cloned().unwrap())
        .collect();
    let primaries: BTreeSet<String> = tasks
        .iter()
        .filter_map(|t| t["agent"].as_str().map(str::to_owned))
        .collect();
    assert!(
        primaries.iter().any(|a| !served.contains(a)),
        "some task must depend on an alternative: served {served:?}, agents {primaries:?}"
    );

    let dir = TempDir::new("alt-run");
    let stub = Stub::start(Duration::ZERO).await;
    let mut c = config(dir.path(), &stub.url);
    c.backends.retain(|id, _| served.contains(id));
    let s = TestServer::start(c.clone(), &[]).await;
    let id = s.submit(SMALL).await;
    let run = s.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");

    // Take away the backend of one task's every candidate: refused.
    let victim = tasks
        .iter()
        .find(|t| candidates(t).len() == 1)
        .or_else(|| tasks.first())
        .unwrap();
    let dir = TempDir::new("alt-refused");
    let mut c = config(dir.path(), &stub.url);
    let gone = candidates(victim);
    c.backends.retain(|id, _| !gone.contains(id));
    let s = TestServer::start(c, &[]).await;
    let (status, _, body) = s
        .post("/api/tasks", json!({"description": SMALL, "mode": "run"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_rule(&body), "agent_backend");
}

/// Audit item 2: a replayed submission (same idempotency key) said `"status":
/// "running"` whatever its run had become.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_submission_reports_the_status_its_run_has_now() {
    let (_dir, _stub, s) = server("replay-status").await;
    let body = json!({"description": SMALL, "mode": "run", "idempotency_key": "replay-1"});
    let (status, _, first) = s.post("/api/tasks", body.clone()).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["status"], "running");
    let id = first["run_id"].as_str().unwrap();
    let run = s.wait_finished(id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (status, _, again) = s.post("/api/tasks", body).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["existing"], true);
    assert_eq!(again["run_id"], id);
    assert_eq!(again["status"], "succeeded", "{again}");
}

/// Sets the creation time of every stored run to `at` (another connection to the
/// server's store file).
fn set_created_at(dir: &TempDir, at: i64) {
    let db = rusqlite::Connection::open(dir.path().join("data").join("genesis.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute("UPDATE runs SET created_at = ?1", [at]).unwrap();
}

/// Deletes run `id` with its rows, as retention does.
fn delete_run(dir: &TempDir, id: &str) {
    let db = rusqlite::Connection::open(dir.path().join("data").join("genesis.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    for table in ["events", "tasks"] {
        db.execute(&format!("DELETE FROM {table} WHERE run_id = ?1"), [id])
            .unwrap();
    }
    db.execute("DELETE FROM runs WHERE id = ?1", [id]).unwrap();
}

/// Audit item 3: an unknown cursor (`?cursor=zzz`, or the id of a run deleted by
/// retention since) silently restarted the listing from the newest run. `next_cursor`
/// is now a position that does not need its run; a plain run id still works while the
/// run is stored; anything else is 400 `cursor`. Pages stay stable with equal creation
/// times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_cursors_outlive_their_run_and_unknown_ones_are_refused() {
    let (dir, _stub, s) = server("cursor").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = s.submit(SMALL).await;
        s.wait_finished(&id, Duration::from_secs(20)).await;
        ids.push(id);
    }
    // All created in the same millisecond: ties are ordered by id, descending.
    set_created_at(&dir, 1_700_000_000_000);
    let mut want = ids.clone();
    want.sort_unstable_by(|a, b| b.cmp(a));

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut tokens = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/tasks?limit=2&cursor={c}"),
            None => "/api/tasks?limit=2".to_owned(),
        };
        let (status, _, body) = s.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        seen.extend(page_ids(&body));
        match body["next_cursor"].as_str() {
            Some(next) => {
                tokens.push(next.to_owned());
                cursor = Some(next.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(seen, want, "every run once, newest first, ties by id");

    // The run the first page ended on is deleted (retention): its token still works.
    let (_, _, first) = s.get("/api/tasks?limit=2").await;
    let token = first["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(token, tokens[0]);
    let ended_on = &want[1];
    assert!(!token.is_empty() && token != *ended_on, "{token}");
    delete_run(&dir, ended_on);
    let (status, _, body) = s.get(&format!("/api/tasks?limit=2&cursor={token}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(page_ids(&body), want[2..4].to_vec(), "{body}");

    // A plain run id (older clients) pages from that run while it is stored.
    let (status, _, body) = s
        .get(&format!("/api/tasks?limit=2&cursor={}", want[2]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(page_ids(&body), want[3..5].to_vec(), "{body}");

    // Anything else is refused, naming the value: garbage, the deleted run's id.
    for bad in ["zzz", ended_on.as_str()] {
        let (status, _, body) = s.get(&format!("/api/tasks?cursor={bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(error_rule(&body), "cursor");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("{bad:?}")), "{message}");
    }
}

/// Audit item 4: a known path with the wrong method was 405 with an empty body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_is_405_with_the_error_body_and_allow() {
    let (_dir, _stub, s) = server("method").await;
    let (status, headers, body) = s.get("/api/tasks/run-x/cancel").await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(error_rule(&body), "method", "{body}");
    assert_eq!(body["error"]["category"], "validation");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("GET") && message.contains("/api/tasks/run-x/cancel"),
        "{message}"
    );
    assert_eq!(headers["allow"], "POST");

    let r = s.client.delete(s.url("/api/tasks")).send().await.unwrap();
    let (status, headers, body) = crate::support::split(r).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(error_rule(&body), "method");
    let allow = headers["allow"].to_str().unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}

/// Audit item 5: `?limit=abc` was rule `query` with "Failed to deserialize query
/// string: ...".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_list_queries_name_the_value_under_their_own_rule() {
    let (_dir, _stub, s) = server("queries").await;
    let lower = |m: &str| m.chars().next().is_some_and(char::is_lowercase);
    for (query, rule, names) in [
        ("limit=abc", "limit", "\"abc\""),
        ("limit=-3", "limit", "\"-3\""),
        ("limit=0", "limit", "\"0\""),
        ("status=bogus", "status", "\"bogus\""),
        ("colour=red", "query", "colour"),
    ] {
        let (status, _, body) = s.get(&format!("/api/tasks?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(error_rule(&body), rule, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{query}: {message}");
        assert!(lower(message), "{query}: {message}");
        assert!(!message.contains("Failed to"), "{query}: {message}");
    }
}

/// Audit O11 L3: query parameters on endpoints that take none were ignored, so
/// `POST /api/tasks?mode=run` planned (200) when the client meant a run. They are 400
/// `query`, naming the endpoint and what was sent; nothing is planned or started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_on_endpoints_that_take_none_are_refused() {
    let (_dir, _stub, s) = server("no-query").await;
    let (status, _, body) = s
        .post("/api/tasks?mode=run", json!({"description": SMALL}))
        .await;
    assert_eq!(
        (status, error_rule(&body)),
        (400, "query".to_owned()),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("POST /api/tasks takes no query parameters, got \"mode=run\""),
        "{message}"
    );
    let (_, _, runs) = s.get("/api/tasks").await;
    assert_eq!(runs["runs"], json!([]), "no run was started");
    for path in [
        "/api/tasks/run_x/events?last_event_id=3",
        "/api/tasks/run_x/events?x",
    ] {
        let (status, _, body) = s.get(path).await;
        assert_eq!(
            (status, error_rule(&body)),
            (400, "query".to_owned()),
            "{path}: {body}"
        );
    }
    let (status, _, body) = s.post("/api/tasks/run_x/cancel?now=1", json!(null)).await;
    assert_eq!(
        (status, error_rule(&body)),
        (400, "query".to_owned()),
        "{body}"
    );
    // Without a query, the same requests reach their handlers (an unknown run: 404).
    let (status, _, _) = s.get("/api/tasks/run_x/events").await;
    assert_eq!(status, 404);
}

/// Audit item 5: a body that is JSON but not a task (a missing or unknown field) was
/// reported as "request body is not valid json".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_body_that_is_not_a_task_says_what_is_wrong() {
    let (_dir, _stub, s) = server("bodies").await;
    for (bad, names) in [
        (json!({"mode": "plan"}), "missing field `description`"),
        (
            json!({"description": SMALL, "colour": "red"}),
            "unknown field `colour`",
        ),
        (json!({"description": SMALL, "mode": "later"}), "`later`"),
    ] {
        let (status, _, body) = s.post("/api/tasks", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(error_rule(&body), "json_body");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{message} should say {names}");
        assert!(
            !message.contains("not valid json"),
            "{bad} is valid json: {message}"
        );
    }
    let r = s
        .client
        .post(s.url("/api/tasks"))
        .header("content-type", "application/json")
        .body("{\"description\": ")
        .send()
        .await
        .unwrap();
    let (status, _, body) = crate::support::split(r).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_rule(&body), "json_body");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("not valid json"), "{message}");

    // Audit O11 M2: `"mode": null` was "not valid json"; M1: an array was read as a
    // task by position (and a run started).
    for (bad, names) in [
        (json!({"description": SMALL, "mode": null}), "null"),
        (
            json!([SMALL, null, "run"]),
            "a task is a JSON object, not an array",
        ),
        (json!(SMALL), "not a string"),
    ] {
        let (status, _, body) = s.post("/api/tasks", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(error_rule(&body), "json_body");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("request body is json but not a task") && message.contains(names),
            "{bad}: {message} should say {names}"
        );
    }
    // A number out of f64's range is valid JSON (verification V11 L-1).
    let r = s
        .client
        .post(s.url("/api/tasks"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"description\": \"{SMALL}\", \"budget_usd\": 1e400}}"
        ))
        .send()
        .await
        .unwrap();
    let (status, _, body) = crate::support::split(r).await;
    assert_eq!(
        (status, error_rule(&body)),
        (400, "json_body".to_owned()),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("request body is json but not a task: a number out of range"),
        "{message}"
    );
    let (_, _, runs) = s.get("/api/tasks").await;
    assert_eq!(runs["runs"], json!([]), "no run was started");
}

/// Audit O11 M4: a body sent without a JSON content type (none, `text/plain`, a form:
/// what a web page can send to a server on the user's machine without a preflight) was
/// planned, or run. It is 415 `content_type`; JSON types with parameters or a `+json`
/// suffix are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_declared_json_is_415() {
    let (_dir, _stub, s) = server("content-type").await;
    let task = json!({"description": SMALL, "mode": "run"}).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
    ] {
        let mut r = s.client.post(s.url("/api/tasks")).body(task.clone());
        if let Some(t) = content_type {
            r = r.header("content-type", t);
        }
        let (status, _, body) = crate::support::split(r.send().await.unwrap()).await;
        assert_eq!(status, 415, "{content_type:?}: {body}");
        assert_eq!(error_rule(&body), "content_type");
        let message = body["error"]["message"].as_str().unwrap();
        let named = match content_type {
            Some(t) => format!("got {t:?}"),
            None => "got none".to_owned(),
        };
        assert!(
            message.contains("Content-Type: application/json") && message.contains(&named),
            "{message}"
        );
    }
    let (_, _, runs) = s.get("/api/tasks").await;
    assert_eq!(runs["runs"], json!([]), "no run was started");
    let plan = json!({"description": SMALL}).to_string();
    for content_type in [
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/vnd.genesis+json",
    ] {
        let r = s
            .client
            .post(s.url("/api/tasks"))
            .header("content-type", content_type)
            .body(plan.clone());
        let (status, _, body) = crate::support::split(r.send().await.unwrap()).await;
        assert_eq!(status, 200, "{content_type}: {body}");
    }
}

/// Audit item 5: a cancel retried after its 202 was lost answered 409 "run ... is
/// cancelled and cannot be cancelled". A repeated cancel answers as done (200 with the
/// status the run ended with); a run that ended before any cancel is still 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_cancel_answers_as_done_and_a_finished_run_still_conflicts() {
    let dir = TempDir::new("cancel-again");
    let stub = Stub::start(Duration::from_secs(3)).await;
    let s = TestServer::start(config(dir.path(), &stub.url), &[]).await;
    let id = s.submit(SMALL).await;
    let cancel = format!("/api/tasks/{id}/cancel");
    let (status, _, body) = s.post(&cancel, json!({})).await;
    assert_eq!(status, 202, "{body}");
    // While it is still cancelling, a retry is the same 202.
    let (status, _, again) = s.post(&cancel, json!({})).await;
    assert!(
        (status == 202 && again["status"] == "cancelling")
            || (status == 200 && again["status"] == "cancelled"),
        "{status} {again}"
    );
    let run = s.wait_finished(&id, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    let (status, _, again) = s.post(&cancel, json!({})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["run_id"], id.as_str());
    assert_eq!(again["status"], "cancelled");
    assert_eq!(
        again["cancel_requested_at_ms"],
        run["cancel_requested_at_ms"]
    );

    let (_dir, _stub, quick) = server("cancel-late").await;
    let id = quick.submit(SMALL).await;
    let run = quick.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (status, _, body) = quick
        .post(&format!("/api/tasks/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(error_rule(&body), "run_not_running");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("succeeded"),
        "{body}"
    );
}

/// Audit G1 item 2: a run capped only by `budget.per_run` read `"budget": null`; it
/// reports the cap in force (the `budget_usd` asked for, else `budget.per_run`).
/// Item 6: its `cost` (tasks of $0.001 each) prints without float noise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_reports_the_budget_that_caps_it_and_a_clean_cost() {
    let dir = TempDir::new("budget-field");
    let stub = Stub::start(Duration::ZERO).await;
    let mut c = config(dir.path(), &stub.url);
    c.budget.per_run = Some(genesis::core::Usd::new(2.5).unwrap());
    let s = TestServer::start(c, &[]).await;
    let long = "Design the database schema, then build the REST API, then write integration tests";
    let id = s.submit(long).await;
    let run = s.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["budget"], json!(2.5), "{run}");
    // Each task cost $0.001: the total is a whole number of thousandths, printed so.
    let tasks = run["tasks"].as_array().unwrap().len();
    assert!(tasks >= 3, "{run}");
    let cost = run["cost"].to_string();
    assert_eq!(cost, format!("{}", tasks as f64 / 1000.0), "{run}");

    let (status, _, body) = s
        .post(
            "/api/tasks",
            json!({"description": SMALL, "mode": "run", "budget_usd": 0.75}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["run_id"].as_str().unwrap();
    let run = s.wait_finished(id, Duration::from_secs(20)).await;
    assert_eq!(run["budget"], json!(0.75), "{run}");
}

/// Audit G1 item 3: a run that ended without any output (here cancelled before its
/// first task answered) read `"answer": ""`; it reads `null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_ended_without_output_has_a_null_answer() {
    let dir = TempDir::new("null-answer");
    let stub = Stub::start(Duration::from_secs(5)).await;
    let s = TestServer::start(config(dir.path(), &stub.url), &[]).await;
    let id = s.submit(SMALL).await;
    let (status, _, body) = s.post(&format!("/api/tasks/{id}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    let run = s.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(
        run.as_object().unwrap().contains_key("answer"),
        "the field is always there: {run}"
    );
    assert_eq!(run["answer"], Value::Null, "{run}");
    assert_eq!(run["partial"], false, "{run}");
}
