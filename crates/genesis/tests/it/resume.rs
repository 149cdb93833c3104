//! Resuming after a restart, per run: a corrupt stored run does not hide the others,
//! the follow-up update limit counts updates made before the restart, and journal
//! writes do not stall the runtime worker they are made from.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use genesis::core::RunId;
use genesis::run::{
    Agent, AgentError, AgentOutput, AgentRequest, AgentSet, FollowUp, RunEvent, RunJournal,
    RunStatus, TaskStatus,
};
use genesis::store::{RunStore, SqliteStore, StoreError, UnfinishedRun};
use genesis::{Orchestrator, RunOptions};

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "genesis-resume-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn plan_of(request: &str) -> genesis::Plan {
    Orchestrator::builder()
        .build()
        .unwrap()
        .plan_sync(request)
        .unwrap()
}

#[test]
fn one_corrupt_stored_run_does_not_hide_the_other_unfinished_runs() {
    let dir = tempdir("corrupt");
    let good = RunId::new("run_good");
    let bad = RunId::new("run_bad");
    let later = RunId::new("run_later");
    {
        let store = SqliteStore::open(&dir).unwrap();
        for (id, request) in [
            (&good, "Fix the crash when uploading large files"),
            (&bad, "Build a SaaS business for invoices"),
            (&later, "Fix the login bug"),
        ] {
            store.create_run(id, &plan_of(request), None, None).unwrap();
        }
    }
    // Damage the middle run behind the store's back: its plan no longer parses.
    {
        let conn = rusqlite::Connection::open(dir.join("genesis.db")).unwrap();
        conn.execute(
            "UPDATE runs SET plan_json = '{\"request\": \"Build a SaaS' WHERE id = ?1",
            [bad.as_str()],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&dir).unwrap();
    let found = store.unfinished_runs().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(found.len(), 3, "{found:?}");
    let readable: Vec<&str> = found
        .iter()
        .filter_map(|u| match u {
            UnfinishedRun::Readable(r) => Some(r.id.as_str()),
            UnfinishedRun::Unreadable { .. } => None,
        })
        .collect();
    assert_eq!(readable, ["run_good", "run_later"], "creation order kept");
    let (id, error) = found
        .iter()
        .find_map(|u| match u {
            UnfinishedRun::Unreadable { id, error } => Some((id, error)),
            UnfinishedRun::Readable(_) => None,
        })
        .unwrap();
    assert_eq!(id, &bad);
    assert!(
        matches!(error, StoreError::Corrupt { what: "plan", .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("run_bad"), "{error}");
}

#[test]
fn a_task_row_that_does_not_decode_makes_only_its_run_unreadable() {
    let dir = tempdir("bad-row");
    let good = RunId::new("run_good");
    let bad = RunId::new("run_bad");
    {
        let store = SqliteStore::open(&dir).unwrap();
        let plan = plan_of("Fix the crash when uploading large files");
        store.create_run(&good, &plan, None, None).unwrap();
        store.create_run(&bad, &plan, None, None).unwrap();
    }
    {
        let conn = rusqlite::Connection::open(dir.join("genesis.db")).unwrap();
        conn.execute(
            "UPDATE tasks SET attempts = -1 WHERE run_id = ?1",
            [bad.as_str()],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&dir).unwrap();
    let found = store.unfinished_runs().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        matches!(&found[..], [UnfinishedRun::Readable(r), UnfinishedRun::Unreadable { id, .. }]
            if r.id == good && *id == bad),
        "{found:?}"
    );
}

/// Proposes one follow-up for every task of the original plan (not for follow-ups).
struct ProposeEverywhere;

#[async_trait]
impl Agent for ProposeEverywhere {
    async fn execute(&self, r: AgentRequest) -> Result<AgentOutput, AgentError> {
        let mut out = AgentOutput {
            text: format!("out of {}", r.task.id),
            ..Default::default()
        };
        if !r.task.id.as_str().contains(".f") {
            out.followups.push(FollowUp {
                kind: r.task.kind,
                description: format!("Double-check the result of {}", r.task.id),
            });
        }
        Ok(out)
    }
}

/// Keeps events until it stored the first `tasks_added`, then keeps nothing more: a
/// crash right after the run's first follow-up update was journaled.
struct CrashAfterFirstUpdate {
    store: Arc<SqliteStore>,
    dead: AtomicBool,
}

impl RunJournal for CrashAfterFirstUpdate {
    fn record(
        &self,
        run_id: &RunId,
        event: &RunEvent,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.record_all(run_id, std::slice::from_ref(event))
    }

    fn record_all(
        &self,
        run_id: &RunId,
        events: &[RunEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.dead.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.store.record_all(run_id, events)?;
        if events
            .iter()
            .any(|e| matches!(e, RunEvent::TasksAdded { .. }))
        {
            self.dead.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

fn follow_up_ids(plan: &genesis::Plan) -> Vec<String> {
    plan.tasks
        .iter()
        .filter(|t| t.id.as_str().contains(".f"))
        .map(|t| t.id.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_counts_the_follow_up_updates_made_before_the_restart() {
    let limits = genesis::htdag::Limits {
        max_updates: 2,
        ..Default::default()
    };
    let genesis = Orchestrator::builder()
        .limits(limits)
        .agents(AgentSet::new().with_fallback(Arc::new(ProposeEverywhere)))
        .build()
        .unwrap();
    let plan = genesis
        .plan_sync("Fix the crash when uploading large files")
        .unwrap();
    assert!(
        plan.tasks.len() >= 3,
        "every task proposes a follow-up: more proposals than the limit"
    );
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let id = genesis::new_run_id();
    store.create_run(&id, &plan, None, None).unwrap();
    let journal = Arc::new(CrashAfterFirstUpdate {
        store: Arc::clone(&store),
        dead: AtomicBool::new(false),
    });
    let options = RunOptions {
        run_id: Some(id.clone()),
        journal: Some(journal as Arc<dyn RunJournal>),
        ..Default::default()
    };
    genesis.execute(plan, options).unwrap().wait().await;
    let record = store.get_run(id.as_str()).unwrap().unwrap();
    assert_eq!(follow_up_ids(&record.plan).len(), 1, "one update journaled");

    // Restart: one update is left under max_updates = 2.
    let resumed: Vec<_> = record
        .tasks
        .iter()
        .filter(|t| t.status.is_terminal())
        .cloned()
        .collect();
    let options = RunOptions {
        run_id: Some(id.clone()),
        journal: Some(store.clone() as Arc<dyn RunJournal>),
        resumed,
        ..Default::default()
    };
    let mut handle = genesis.execute(record.plan.clone(), options).unwrap();
    let mut events = handle.events();
    let result = handle.wait().await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:#?}", result.tasks);
    let mut added = Vec::new();
    let mut refused = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e {
            RunEvent::TasksAdded { tasks, .. } => {
                added.extend(tasks.into_iter().map(|t| t.id.to_string()));
            }
            RunEvent::UpdateRejected { reason, .. } => refused.push(reason),
            _ => {}
        }
    }
    assert_eq!(
        added.len(),
        1,
        "only the update left under the limit was applied after the restart: {added:?}"
    );
    assert!(
        added[0].contains(".f2_"),
        "numbered after the update made before the restart: {added:?}"
    );
    assert!(!refused.is_empty(), "later proposals were refused");
    for reason in &refused {
        assert!(
            reason.contains("2 updates, the limit is 2 (rule: max_updates)"),
            "{reason}"
        );
    }
    let stored = store.get_run(id.as_str()).unwrap().unwrap();
    assert_eq!(
        follow_up_ids(&stored.plan).len(),
        2,
        "max_updates = 2 holds across the restart: {:?}",
        follow_up_ids(&stored.plan)
    );
    assert!(
        stored
            .tasks
            .iter()
            .all(|t| t.status == TaskStatus::Succeeded)
    );
}

/// On every write, checks that another task of the runtime can run while the write
/// is in progress (a write that holds the runtime's only worker stalls it).
struct Probe {
    handle: tokio::runtime::Handle,
    writes: AtomicUsize,
    stalled: Mutex<Vec<String>>,
}

impl Probe {
    fn check(&self, what: &str) {
        if !self.stalled.lock().unwrap().is_empty() {
            return;
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(());
        });
        // Returns at once when the other task runs; the timeout only bounds a stall.
        if rx.recv_timeout(Duration::from_secs(2)).is_err() {
            self.stalled.lock().unwrap().push(what.to_owned());
        }
    }
}

impl RunJournal for Probe {
    fn record(
        &self,
        _: &RunId,
        event: &RunEvent,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.check(event.kind());
        Ok(())
    }

    fn record_all(
        &self,
        _: &RunId,
        events: &[RunEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.check(events.first().map_or("none", RunEvent::kind));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn journal_writes_do_not_hold_the_runtime_worker() {
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Arc::new(ProposeEverywhere)))
        .build()
        .unwrap();
    let plan = genesis
        .plan_sync("Fix the crash when uploading large files")
        .unwrap();
    let probe = Arc::new(Probe {
        handle: tokio::runtime::Handle::current(),
        writes: AtomicUsize::new(0),
        stalled: Mutex::new(Vec::new()),
    });
    let options = RunOptions {
        journal: Some(probe.clone() as Arc<dyn RunJournal>),
        ..Default::default()
    };
    let result = genesis.execute(plan, options).unwrap().wait().await;
    assert_eq!(result.status, RunStatus::Succeeded);
    let stalled = probe.stalled.lock().unwrap().clone();
    assert!(
        stalled.is_empty(),
        "the runtime's only worker was held during the write of {stalled:?}"
    );
    // run_started, task_started (from a task attempt), the successes, run_finished.
    assert!(probe.writes.load(Ordering::SeqCst) >= 4);
}
