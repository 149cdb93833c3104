//! Resuming after a restart, per run: a corrupt stored run does not hide the others,
//! the follow-up update limit counts updates made before the restart, and journal
//! writes do not stall the runtime worker they are made from.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use genesis::core::RunId;
use genesis::htdag::Limits;
use genesis::run::{
    Agent, AgentError, AgentOutput, AgentRequest, AgentSet, FollowUp, RunEvent, RunJournal,
    RunStatus, TaskStatus,
};
use genesis::store::{RunStore, SqliteStore, StoreError, UnfinishedRun};
use genesis::{Orchestrator, RunOptions};

use crate::support::plan_of;
use crate::{Dying, TempDir, journaled, resuming, stored, stored_run};

/// Stores a run of each `(id, request)` in a store at `dir`, then breaks the stored rows
/// behind the store's back with `damage` (SQL run with the id of `bad` as `?1`), and
/// lists the unfinished runs of the store reopened.
fn unfinished_after_damage(
    dir: &Path,
    runs: &[(&RunId, &str)],
    damage: &str,
    bad: &RunId,
) -> Vec<UnfinishedRun> {
    {
        let store = SqliteStore::open(dir).unwrap();
        for (id, request) in runs {
            store
                .create_run(id, &plan_of(request), None, None, None)
                .unwrap();
        }
    }
    {
        let conn = rusqlite::Connection::open(dir.join("genesis.db")).unwrap();
        conn.execute(damage, [bad.as_str()]).unwrap();
    }
    let store = SqliteStore::open(dir).unwrap();
    store.unfinished_runs().unwrap()
}

#[test]
fn one_corrupt_stored_run_does_not_hide_the_other_unfinished_runs() {
    let dir = TempDir::new("resume-corrupt");
    let good = RunId::new("run_good");
    let bad = RunId::new("run_bad");
    let later = RunId::new("run_later");
    // Damage the middle run: its plan no longer parses.
    let found = unfinished_after_damage(
        &dir,
        &[
            (&good, "Fix the crash when uploading large files"),
            (&bad, "Build a SaaS business for invoices"),
            (&later, "Fix the login bug"),
        ],
        "UPDATE runs SET plan_json = '{\"request\": \"Build a SaaS' WHERE id = ?1",
        &bad,
    );
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
    let dir = TempDir::new("resume-bad-row");
    let good = RunId::new("run_good");
    let bad = RunId::new("run_bad");
    let request = "Fix the crash when uploading large files";
    let found = unfinished_after_damage(
        &dir,
        &[(&good, request), (&bad, request)],
        "UPDATE tasks SET attempts = -1 WHERE run_id = ?1",
        &bad,
    );
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

/// An orchestrator under `limits` whose every agent is [`ProposeEverywhere`], and its
/// plan of a small request.
fn proposing_everywhere(limits: Limits) -> (Orchestrator, genesis::Plan) {
    let genesis = Orchestrator::builder()
        .limits(limits)
        .agents(AgentSet::new().with_fallback(Arc::new(ProposeEverywhere)))
        .build()
        .unwrap();
    let plan = genesis
        .plan_sync("Fix the crash when uploading large files")
        .unwrap();
    (genesis, plan)
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
    let (genesis, plan) = proposing_everywhere(Limits {
        max_updates: 2,
        ..Default::default()
    });
    assert!(
        plan.tasks.len() >= 3,
        "every task proposes a follow-up: more proposals than the limit"
    );
    let (store, id) = stored_run(&plan);
    // A crash right after the run's first follow-up update was journaled.
    let journal = Dying::after(&store, |e| matches!(e, RunEvent::TasksAdded { .. }));
    genesis
        .execute(plan, journaled(&id, journal))
        .unwrap()
        .wait()
        .await;
    let record = stored(&store, &id);
    assert_eq!(follow_up_ids(&record.plan).len(), 1, "one update journaled");

    // Restart: one update is left under max_updates = 2.
    let options = resuming(&store, &record);
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
    let stored = stored(&store, &id);
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
    // Default limits, as the builder uses when none are set.
    let (genesis, plan) = proposing_everywhere(Limits::default());
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
