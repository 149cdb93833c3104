//! Resumed runs and budgets across runs: the money a run spent before a restart stays
//! spent, a run that cannot resume ends failed, and concurrent runs share one daily
//! budget.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use genesis::core::Usd;
use genesis::run::RunEvent;
use serde_json::{Value, json};

use crate::journal::journal_crash;
use crate::journal_run;
use crate::support::{Stub, TempDir, TestServer, config};

fn usd(v: f64) -> Usd {
    Usd::new(v).unwrap()
}

/// Journals a run of `request` in the data directory of `dir`, as a server that crashed
/// would leave it: its first root task succeeded (costing `task_cost`) and the run had
/// spent `run_cost`. Returns the run id and the number of tasks.
fn journal_crashed_run(
    dir: &TempDir,
    request: &str,
    task_cost: f64,
    run_cost: f64,
) -> (String, usize) {
    let (store, id, plan) = journal_run(dir, request);
    journal_crash(&store, &id, &plan, task_cost, run_cost);
    (id.to_string(), plan.tasks.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_adds_to_what_it_spent_before_the_restart() {
    let dir = TempDir::new("resume-cost");
    let stub = Stub::start(Duration::ZERO).await;
    // $0.50 for the finished task, $0.20 more on calls that failed before the crash.
    let (id, n) = journal_crashed_run(&dir, "Build a SaaS business for invoices", 0.5, 0.7);
    let server = TestServer::start(config(dir.path(), &stub.url), &[]).await;
    let run = server.wait_finished(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        stub.calls_for(&id).len(),
        n - 1,
        "the finished task did not run again"
    );
    let want = 0.7 + 0.001 * (n - 1) as f64;
    let cost = run["cost"].as_f64().unwrap();
    assert!((cost - want).abs() < 1e-9, "run cost {cost}, want {want}");
    let (_, _, status) = server.get("/api/status").await;
    let today = status["budget"]["spent_today"].as_f64().unwrap();
    assert!(
        (today - want).abs() < 1e-9,
        "spent today {today}, want {want}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_resume_ends_failed_naming_the_rule() {
    let dir = TempDir::new("resume-fails");
    let stub = Stub::start(Duration::ZERO).await;
    let (id, n) = journal_crashed_run(&dir, "Build a SaaS business for invoices", 0.5, 0.5);
    // The limits were lowered while the server was down: the plan no longer fits.
    let mut c = config(dir.path(), &stub.url);
    c.limits.max_tasks = 3;
    assert!(n > 3);
    let server = TestServer::start(c, &[]).await;
    let (status, _, run) = server.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["live"], false);
    // What it spent before the restart stays spent.
    assert!((run["cost"].as_f64().unwrap() - 0.5).abs() < 1e-9, "{run}");
    let events = server.state.runs().store().events_since(&id, 0).unwrap();
    let text: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(&e.event).unwrap())
        .collect();
    let why = text
        .iter()
        .find(|t| t.contains("max_tasks"))
        .unwrap_or_else(|| panic!("no event names the rule: {text:#?}"));
    assert!(why.contains("over the limit of 3"), "{why}");
    assert!(why.contains("run_rejected"), "{why}");
    assert!(
        matches!(
            events.last().map(|e| &e.event),
            Some(RunEvent::RunFinished { .. })
        ),
        "{text:#?}"
    );
    assert_eq!(stub.total_calls(), 0);
    // Not resumed again at the next start.
    assert_eq!(genesis_server::resume(&server.state).unwrap(), 0);
}

/// An agent service that charges `cost` per task after `delay`.
async fn priced_stub(cost: f64, delay: Duration) -> String {
    let app = axum::Router::new().route(
        "/tasks",
        post(move |Json(body): Json<Value>| async move {
            tokio::time::sleep(delay).await;
            let task = body["task"]["id"].as_str().unwrap_or("?").to_owned();
            Json(json!({"output": format!("done {task}"), "cost_usd": cost}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/tasks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_share_one_daily_budget() {
    let dir = TempDir::new("day-budget");
    // Five cents a task; a run of this request alone would spend about a dollar.
    let url = priced_stub(0.05, Duration::from_millis(30)).await;
    let mut c = config(dir.path(), &url);
    let per_day = 0.5;
    c.budget.per_day = Some(usd(per_day));
    // One task at a time per run: at most one call per run is in flight when the
    // budget runs out.
    c.executor.max_concurrency = 1;
    let server = Arc::new(TestServer::start(c, &[]).await);
    let submit =
        |s: Arc<TestServer>| async move { s.submit("Build a SaaS business for invoices").await };
    // Both accepted before either has spent anything.
    let (a, b) = tokio::join!(submit(Arc::clone(&server)), submit(Arc::clone(&server)));
    let mut total = 0.0;
    for id in [&a, &b] {
        let run = server.wait_finished(id, Duration::from_secs(60)).await;
        assert_eq!(
            run["status"], "failed",
            "the daily budget stops {id}: {run}"
        );
        let cost = run["cost"].as_f64().unwrap();
        assert!(cost > 0.0, "{id} ran too: {run}");
        total += cost;
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
    }
    // The two runs together: within the daily budget plus the one call per run that
    // was in flight when it ran out.
    assert!(
        total <= per_day + 2.0 * 0.05 + 1e-9,
        "two concurrent runs spent {total} against a daily budget of {per_day}"
    );
    assert!(total >= per_day - 2.0 * 0.05, "spent only {total}");
    let (_, _, status) = server.get("/api/status").await;
    let today = status["budget"]["spent_today"].as_f64().unwrap();
    assert!(
        (today - total).abs() < 1e-9,
        "spent today {today}, runs {total}"
    );
    // Once the day's spend reaches the budget, a new run is refused at the door.
    if today >= per_day {
        let (code, _, body) = server
            .post(
                "/api/tasks",
                json!({"description": "Fix the login bug", "mode": "run"}),
            )
            .await;
        assert_eq!(code, 429, "{body}");
    }
}

/// `server.retention`: finished runs created and last updated before it are deleted
/// (their id answers 404, their idempotency key starts a new run); a recent run and
/// one still running are kept; `0s` keeps everything; less than a day is refused at
/// start, naming the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_past_their_retention_are_deleted_and_others_kept() {
    let dir = TempDir::new("retention");
    let stub = Stub::start(Duration::ZERO).await;
    let mut cfg = config(dir.path(), &stub.url);
    cfg.server.retention = Duration::from_secs(3_600);
    let err = genesis_server::AppState::from_config(cfg.clone(), &[], None).unwrap_err();
    assert!(
        err.to_string()
            .contains("server.retention 3600s is below one day")
            && err.to_string().contains("rule: retention_min"),
        "{err}"
    );
    cfg.server.retention = Duration::from_secs(30 * 86_400);
    let s = TestServer::start(cfg, &[]).await;
    let submit = |key: &'static str| {
        let s = &s;
        async move {
            let (status, _, body) = s
                .post(
                    "/api/tasks",
                    json!({"description": "Fix the login bug", "mode": "run", "idempotency_key": key}),
                )
                .await;
            assert_eq!(status, 202, "{body}");
            (
                body["run_id"].as_str().unwrap().to_owned(),
                body["existing"] == json!(true),
            )
        }
    };
    let (old, _) = submit("old").await;
    let (recent, _) = submit("recent").await;
    for id in [&old, &recent] {
        let run = s.wait_finished(id, Duration::from_secs(10)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    // A run journaled 40 days ago that never finished (it would resume) is kept too.
    let (store, stuck, _) = crate::journal_run(&dir, "Write the release notes");
    drop(store);
    let db = rusqlite::Connection::open(dir.path().join("data").join("genesis.db")).unwrap();
    let long_ago = |id: &str| {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            - 40 * 86_400_000;
        db.execute(
            "UPDATE runs SET created_at = ?2, updated_at = ?2 WHERE id = ?1",
            rusqlite::params![id, at],
        )
        .unwrap();
    };
    long_ago(&old);
    long_ago(stuck.as_str());
    let state = Arc::clone(&s.state);
    let deleted = tokio::task::spawn_blocking(move || genesis_server::apply_retention(&state))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted, 1);
    let (status, _, body) = s.get(&format!("/api/tasks/{old}")).await;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = s.get(&format!("/api/tasks/{old}/events")).await;
    assert_eq!(status, 404, "{body}");
    for kept in [recent.as_str(), stuck.as_str()] {
        let (status, _, body) = s.get(&format!("/api/tasks/{kept}")).await;
        assert_eq!(status, 200, "{body}");
    }
    let events: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM events WHERE run_id = ?1",
            rusqlite::params![old],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(events, 0);
    // The deleted run's key starts a new run; the kept one's still finds its run.
    let (again, existed) = submit("old").await;
    assert!(!existed && again != old, "{again}");
    assert_eq!(submit("recent").await, (recent.clone(), true));
    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    let counted: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("genesis_runs_deleted_total "))
        .map_or(0.0, |v| v.trim().parse().unwrap());
    assert!(counted >= 1.0, "{text}");
}

/// `server.retention = "0s"` keeps every run, however old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_of_zero_keeps_every_run() {
    let dir = TempDir::new("retention-off");
    let stub = Stub::start(Duration::ZERO).await;
    let mut cfg = config(dir.path(), &stub.url);
    cfg.server.retention = Duration::ZERO;
    let s = TestServer::start(cfg, &[]).await;
    let id = s.submit("Fix the login bug").await;
    s.wait_finished(&id, Duration::from_secs(10)).await;
    let db = rusqlite::Connection::open(dir.path().join("data").join("genesis.db")).unwrap();
    db.execute("UPDATE runs SET created_at = 0, updated_at = 0", [])
        .unwrap();
    let state = Arc::clone(&s.state);
    let deleted = tokio::task::spawn_blocking(move || genesis_server::apply_retention(&state))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted, 0);
    let (status, _, body) = s.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(status, 200, "{body}");
}
