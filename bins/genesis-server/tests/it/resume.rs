//! Resumption at start is per run (a stored run that no longer reads back fails alone),
//! and `/ready` reports a flags file the reloader cannot apply.

use std::path::PathBuf;
use std::time::Duration;

use genesis::run::{RunEvent, RunStatus};

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
