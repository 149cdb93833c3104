//! Resumption at start is per run (a stored run that no longer reads back fails alone,
//! and still answers), for the subject the run was started for, and never for a run
//! cancelled before the stop; `/ready` reports a flags file the reloader cannot apply.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use genesis::Orchestrator;
use genesis::run::{
    Agent, AgentError, AgentOutput, AgentRequest, AgentSet, RunEvent, RunJournal, RunStatus,
};
use genesis::store::{RunStore, SqliteStore};
use genesis_server::RunManager;

use crate::support::{Stub, TempDir, TestServer, config};

/// Journals a run of `request` in `dir`'s data directory, as a server that stopped
/// before running any of it would leave it; returns its id.
fn journal_run(dir: &TempDir, request: &str) -> String {
    crate::journal_run(dir, request).1.to_string()
}

/// Breaks the stored plan of the run of `request` in the database file: its first
/// byte becomes `[`, so the JSON no longer parses. Same length, so SQLite still reads
/// the row. (Byte surgery because this package has no SQLite driver of its own; the
/// store's own tests corrupt rows through SQL.)
fn corrupt_stored_plan(dir: &TempDir, request: &str) {
    let data = dir.path().join("data");
    assert!(
        std::fs::metadata(data.join("genesis.db-wal")).map_or(true, |m| m.len() == 0),
        "the store was closed, so its write-ahead log is checkpointed"
    );
    let path = data.join("genesis.db");
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = format!("{{\"request\":\"{request}\"");
    let at: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle.as_bytes())
        .map(|(i, _)| i)
        .collect();
    // Free space may hold stale copies of the row (pages split as rows are added):
    // break them all, only one is live.
    assert!(!at.is_empty(), "the plan of {request:?} is in the file");
    for i in at {
        bytes[i] = b'[';
    }
    std::fs::write(&path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_run_that_does_not_read_back_fails_alone_and_the_others_resume() {
    let dir = TempDir::new("resume-corrupt");
    let stub = Stub::start(Duration::ZERO).await;
    let good = journal_run(&dir, "Fix the crash when uploading large files");
    let bad = journal_run(&dir, "Build a SaaS business for invoices");
    let also_good = journal_run(&dir, "Fix the login bug");
    corrupt_stored_plan(&dir, "Build a SaaS business for invoices");

    let server = TestServer::start(config(dir.path(), &stub.url), &[]).await;
    for id in [&good, &also_good] {
        let run = server.wait_finished(id, Duration::from_secs(30)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    assert!(stub.calls_for(&bad).is_empty(), "nothing of {bad} ran");

    let store = server.state.runs().store();
    let failed = store.list_runs(Some(RunStatus::Failed), 10, None).unwrap();
    assert_eq!(
        failed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [bad.as_str()],
        "{failed:?}"
    );
    let events: Vec<RunEvent> = store
        .events_since(&bad, 0)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    match &events[..] {
        [
            RunEvent::RunRejected { rule, reason },
            RunEvent::RunFinished {
                status: RunStatus::Failed,
                ..
            },
        ] => {
            assert_eq!(rule, "run_store_corrupt");
            assert!(
                reason.starts_with(&format!("stored plan for run {bad} is corrupt: ")),
                "{reason}"
            );
            // The decoder's own words follow: where the JSON broke.
            assert!(reason.contains("line 1 column"), "{reason}");
        }
        other => panic!("{bad} was not failed with a reason: {other:#?}"),
    }
    // Failed for good: the next start does not try it again.
    assert_eq!(genesis_server::resume(&server.state).unwrap(), 0);
}

const FLAGS: &str = r#"{"flags": [{"name": "emergency_shutdown", "enabled": false}]}"#;

/// A server on `dir` whose flags file (returned) holds [`FLAGS`] at the start and is
/// reloaded every `reload_interval` (zero: never).
async fn with_flags_file(dir: &TempDir, reload_interval: Duration) -> (PathBuf, TestServer) {
    let stub = Stub::start(Duration::ZERO).await;
    let file = dir.path().join("flags.json");
    std::fs::write(&file, FLAGS).unwrap();
    let mut c = config(dir.path(), &stub.url);
    c.flags.file = file.clone();
    c.flags.reload_interval = reload_interval;
    (file, TestServer::start(c, &[]).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_fails_while_the_flags_file_cannot_be_reloaded() {
    let dir = TempDir::new("ready-flags");
    let (file, server) = with_flags_file(&dir, Duration::from_secs(10)).await;
    let ready = || async {
        let (status, _, body) = server.get("/ready").await;
        (
            status,
            body["ready"].clone(),
            body["checks"]["flags"].clone(),
        )
    };
    assert_eq!(ready().await, (200, true.into(), true.into()));

    // An edit the reloader refuses: the server goes on with the old flags, and says so.
    std::fs::write(&file, r#"{"flags": [{"name": "emergency_shutdown""#).unwrap();
    assert_eq!(ready().await, (503, false.into(), false.into()));
    // Valid JSON that breaks a flag rule is refused the same way.
    std::fs::write(
        &file,
        r#"{"flags": [{"name": "Bad Name!", "enabled": true}]}"#,
    )
    .unwrap();
    assert_eq!(ready().await, (503, false.into(), false.into()));

    std::fs::write(&file, FLAGS).unwrap();
    assert_eq!(ready().await, (200, true.into(), true.into()));
    // No file: the flags in force stay (nothing to reload), so nothing to report.
    std::fs::remove_file(&file).unwrap();
    assert_eq!(ready().await, (200, true.into(), true.into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hot_reload_the_flags_file_is_not_read_by_ready() {
    let dir = TempDir::new("ready-no-reload");
    let (file, server) = with_flags_file(&dir, Duration::ZERO).await;
    std::fs::write(&file, "not json").unwrap();
    let (status, _, body) = server.get("/ready").await;
    assert_eq!(status, 200, "edits apply only at the next start: {body}");
    assert_eq!(body["checks"]["flags"], true);
}

/// An agent that answers nothing, ever: the process "dies" with its tasks in flight.
#[derive(Default)]
struct Stuck {
    calls: AtomicUsize,
}

#[async_trait]
impl Agent for Stuck {
    async fn execute(&self, _: AgentRequest) -> Result<AgentOutput, AgentError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

/// Records the subject of every call.
#[derive(Default)]
struct Subjects(Mutex<Vec<String>>);

#[async_trait]
impl Agent for Subjects {
    async fn execute(&self, r: AgentRequest) -> Result<AgentOutput, AgentError> {
        self.0.lock().unwrap().push(r.subject.to_string());
        Ok(AgentOutput {
            text: format!("done {}", r.task.id),
            ..AgentOutput::default()
        })
    }
}

/// A run manager over the store in `data` whose every agent is `agent`.
fn manager(data: &std::path::Path, agent: Arc<dyn Agent>) -> RunManager {
    let orchestrator = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(agent))
        .learn_from_runs(false)
        .build()
        .unwrap();
    RunManager::new(orchestrator, Arc::new(SqliteStore::open(data).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_keeps_the_subject_it_was_started_for() {
    let dir = TempDir::new("resume-subject");
    let data = dir.path().join("data");
    let plan = crate::journal::plan_of("Fix the crash when uploading large files");

    // Started for alice; the process stops with the run's first tasks in flight.
    let stuck = Arc::new(Stuck::default());
    let before = manager(&data, Arc::clone(&stuck) as Arc<dyn Agent>);
    let (id, _) = before.start(plan, None, None, "alice", None).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stuck.calls.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no task started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The next process resumes it from the store, for alice.
    let subjects = Arc::new(Subjects::default());
    let after = manager(&data, Arc::clone(&subjects) as Arc<dyn Agent>);
    assert_eq!(after.resume().unwrap(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let run = after.store().get_run(id.as_str()).unwrap().unwrap();
        if run.status != RunStatus::Running {
            assert_eq!(run.status, RunStatus::Succeeded, "{:#?}", run.tasks);
            assert_eq!(run.subject.as_deref(), Some("alice"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {id} still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = subjects.0.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|s| s == "alice"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_run_that_does_not_read_back_answers_as_failed_naming_the_rule() {
    let dir = TempDir::new("get-corrupt");
    let stub = Stub::start(Duration::ZERO).await;
    let request = "Build a SaaS business for invoices";
    let bad = journal_run(&dir, request);
    corrupt_stored_plan(&dir, request);
    let server = TestServer::start(config(dir.path(), &stub.url), &[]).await;

    // Failed at the start as run_store_corrupt: the run answers, with what still reads.
    let (status, _, body) = server.get(&format!("/api/tasks/{bad}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], bad.as_str(), "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["request"], request, "{body}");
    assert_eq!(body["live"], false, "{body}");
    assert_eq!(crate::support::error_rule(&body), "run_store_corrupt");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("stored plan for run {bad} is corrupt: ")),
        "{message}"
    );
    // A client polling until the run leaves `running` stops.
    let run = server.wait_finished(&bad, Duration::from_secs(5)).await;
    assert_eq!(run["status"], "failed");

    // Its events still stream, and cancelling says it is not running.
    let r = server
        .client
        .get(server.url(&format!("/api/tasks/{bad}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("event: run_rejected"), "{text}");
    assert!(text.contains("run_store_corrupt"), "{text}");
    assert!(text.contains("event: run_finished"), "{text}");
    let (status, _, body) = server
        .post(&format!("/api/tasks/{bad}/cancel"), serde_json::json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(crate::support::error_rule(&body), "run_not_running");
    // A run that does not exist is still unknown.
    let (status, _, body) = server.get("/api/tasks/run_nope").await;
    assert_eq!(status, 404, "{body}");
}

/// Sets the modification time of `file`.
fn set_modified(file: &std::path::Path, at: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(at)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reads_the_flags_file_again_only_when_it_changed() {
    let dir = TempDir::new("ready-cache");
    let (file, server) = with_flags_file(&dir, Duration::from_secs(10)).await;
    let ready = || async {
        let (status, _, body) = server.get("/ready").await;
        (status, body["checks"]["flags"].clone())
    };
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    set_modified(&file, an_hour_ago);
    assert_eq!(ready().await, (200, true.into()));

    // Same length and modification time: the file counts as unchanged and is not read
    // again (an edit that keeps both — only possible by resetting the time — is not
    // seen; that is the cache's key).
    let refused = FLAGS.replace("emergency_shutdown", "Emergency_Shutdown");
    assert_eq!(refused.len(), FLAGS.len());
    std::fs::write(&file, &refused).unwrap();
    set_modified(&file, an_hour_ago);
    assert_eq!(ready().await, (200, true.into()));
    // A new modification time: read, checked, refused.
    set_modified(&file, an_hour_ago + Duration::from_secs(1));
    assert_eq!(ready().await, (503, false.into()));
    assert_eq!(ready().await, (503, false.into()));

    // Fixed: passes again, then a bad edit of another length, written now, fails.
    std::fs::write(&file, FLAGS).unwrap();
    assert_eq!(ready().await, (200, true.into()));
    std::fs::write(&file, "not json").unwrap();
    assert_eq!(ready().await, (503, false.into()));
    std::fs::write(&file, FLAGS).unwrap();
    assert_eq!(ready().await, (200, true.into()));
}

/// The stored events of run `id`, in order.
fn stored_events(server: &TestServer, id: &str) -> Vec<RunEvent> {
    let store = server.state.runs().store();
    store
        .events_since(id, 0)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

/// Review R8: the executor journals a cancelled run's `task_skipped` "run cancelled"
/// events and its `run_finished` in two writes. A crash between them left the run
/// `running`, and the restart ran every task the user had cancelled (and paid for them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_cancellation_was_half_journaled_ends_cancelled_after_a_restart() {
    let dir = TempDir::new("resume-half-cancelled");
    let stub = Stub::start(Duration::ZERO).await;
    let (store, id, plan) = crate::journal_run(&dir, "Build a SaaS business for invoices");
    assert!(plan.tasks.len() > 1, "{plan:?}");
    // One task finished before the cancel; the others were journaled as cancelled, and
    // the process died before `run_finished`.
    crate::journal::journal_crash(&store, &id, &plan, 0.25, 0.25);
    let done = store.get_run(id.as_str()).unwrap().unwrap();
    let skipped: Vec<RunEvent> = done
        .tasks
        .iter()
        .filter(|t| !t.status.is_terminal())
        .map(|t| RunEvent::TaskSkipped {
            task_id: t.task_id.clone(),
            reason: "run cancelled".into(),
            input_tokens: 0,
            output_tokens: 0,
            cost: t.cost,
            attempts: t.attempts,
        })
        .collect();
    store.record_all(&id, &skipped).unwrap();
    drop(store);

    let server = TestServer::start(config(dir.path(), &stub.url), &[]).await;
    let run = server
        .wait_finished(id.as_str(), Duration::from_secs(30))
        .await;
    assert_eq!(
        (run["status"].as_str(), stub.total_calls()),
        (Some("cancelled"), 0),
        "a cancelled run was resumed and its tasks called: {run}"
    );
    let tasks = run["tasks"].as_array().unwrap();
    let (finished, cancelled): (Vec<_>, Vec<_>) =
        tasks.iter().partition(|t| t["status"] == "succeeded");
    assert_eq!(finished.len(), 1, "{run}");
    assert_eq!(finished[0]["output"], "done before the crash", "{run}");
    assert_eq!(cancelled.len(), plan.tasks.len() - 1, "{run}");
    assert!(
        cancelled.iter().all(|t| t["status"] == "cancelled"),
        "{run}"
    );
    assert!((run["cost"].as_f64().unwrap() - 0.25).abs() < 1e-9, "{run}");
    // Nothing more was journaled for the tasks: only the end of the run.
    match stored_events(&server, id.as_str()).last() {
        Some(RunEvent::RunFinished {
            status: RunStatus::Cancelled,
            cost,
            ..
        }) => assert!((cost.as_f64() - 0.25).abs() < 1e-9),
        other => panic!("the run did not end cancelled: {other:?}"),
    }
    // Ended for good: the next start has nothing to resume.
    assert_eq!(genesis_server::resume(&server.state).unwrap(), 0);
}

/// A cancel answered 202 was journaled first: a crash right after it (before the
/// executor journaled anything of the cancellation) ends the run as cancelled at the
/// next start, with no agent called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_cancel_was_requested_before_a_crash_is_not_resumed() {
    let dir = TempDir::new("resume-cancel-requested");
    let stub = Stub::start(Duration::ZERO).await;
    let (store, id, plan) = crate::journal_run(&dir, "Build a SaaS business for invoices");
    // What `POST .../cancel` journals before its 202.
    assert!(store.request_cancel(id.as_str()).unwrap());
    drop(store);

    let server = TestServer::start(config(dir.path(), &stub.url), &[]).await;
    let run = server
        .wait_finished(id.as_str(), Duration::from_secs(30))
        .await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(stub.total_calls(), 0, "{run}");
    assert!(run["cancel_requested_at_ms"].as_i64().is_some(), "{run}");
    let tasks = run["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), plan.tasks.len());
    for t in tasks {
        assert_eq!(
            (t["status"].as_str(), t["error"].as_str()),
            (Some("cancelled"), Some("run cancelled")),
            "{run}"
        );
    }
    let events = stored_events(&server, id.as_str());
    let skipped = events
        .iter()
        .filter(|e| matches!(e, RunEvent::TaskSkipped { reason, .. } if reason == "run cancelled"))
        .count();
    assert_eq!(skipped, plan.tasks.len(), "{events:?}");
    assert!(
        !events.iter().any(|e| matches!(
            e,
            RunEvent::RunStarted { .. } | RunEvent::TaskStarted { .. }
        )),
        "nothing of it ran again: {events:?}"
    );
}

/// Audit D5 finding 5: a server started on a copy of the store (the backup test in
/// OPERATIONS §9) resumed the copy's unfinished runs, calling the production agents a
/// second time for work the original server owned. With `server.resume_runs = false`
/// they stay journaled as running, nothing is called, and a later start with the
/// default resumes them: the work is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_resume_runs_off_unfinished_runs_stay_journaled_and_call_no_agent() {
    let dir = TempDir::new("resume-off");
    let stub = Stub::start(Duration::ZERO).await;
    let id = journal_run(&dir, "Fix the login bug");

    let mut off = config(dir.path(), &stub.url);
    off.server.resume_runs = false;
    let server = TestServer::start(off, &[]).await;
    let (status, _, run) = server.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "running", "left as journaled: {run}");
    // Resumption happens inside the start, before it returns: a resumed run is live.
    assert!(!server.state.runs().is_live(&id), "not resumed");
    assert_eq!(server.state.runs().running(), 0);
    assert_eq!(stub.total_calls(), 0, "no agent called: {:?}", stub.calls());
    drop(server);

    let server = TestServer::start(config(dir.path(), &stub.url), &[]).await;
    let run = server.wait_finished(&id, Duration::from_secs(30)).await;
    assert_eq!(
        run["status"], "succeeded",
        "resumed by a start with the default: {run}"
    );
    assert!(
        !stub.calls_for(&id).is_empty(),
        "its tasks ran once resumed"
    );
}

/// Verification V5 finding N5: cancelling a run `server.resume_runs = false` left
/// journaled answered 202 `cancelling` and nothing happened (still `running`, its
/// event stream hanging). Nothing runs it, so it ends cancelled at once, calling no
/// agent, and a later start leaves it so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_nothing_runs_ends_it_cancelled_at_once() {
    let dir = TempDir::new("resume-off-cancel");
    let stub = Stub::start(Duration::ZERO).await;
    let id = journal_run(&dir, "Fix the login bug");
    let mut off = config(dir.path(), &stub.url);
    off.server.resume_runs = false;
    let server = TestServer::start(off, &[]).await;
    let (status, _, body) = server
        .post(&format!("/api/tasks/{id}/cancel"), serde_json::json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let run = server.wait_finished(&id, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    let events = stored_events(&server, &id);
    assert!(
        matches!(
            events.last(),
            Some(RunEvent::RunFinished {
                status: RunStatus::Cancelled,
                ..
            })
        ),
        "{events:?}"
    );
    drop(server);
    let server = TestServer::start(config(dir.path(), &stub.url), &[]).await;
    let (_, _, run) = server.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(stub.total_calls(), 0, "no agent called: {:?}", stub.calls());
}
