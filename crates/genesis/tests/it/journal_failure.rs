//! Audit D1: a journal that stops taking writes stops the run. The run used to go on
//! without a journal: its results were lost, the store kept it `running` for ever, and
//! every restart ran (and paid for) all of it again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use genesis::core::RunId;
use genesis::run::{
    Agent, AgentError, AgentOutput, AgentRequest, AgentSet, ExecutorConfig, RunEvent, RunJournal,
    RunStatus, TaskStatus,
};
use genesis::store::{RunStore, SqliteStore};
use genesis::{Orchestrator, Plan};

use crate::{journaled, resuming, stored, stored_run};

/// Counts its calls per task; its `break_on`-th call makes the store refuse writes
/// before it answers (a disk that filled up, a file remounted read-only).
struct Breaks {
    store: Arc<SqliteStore>,
    break_on: usize,
    calls: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl Agent for Breaks {
    async fn execute(&self, r: AgentRequest) -> Result<AgentOutput, AgentError> {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(r.task.id.to_string());
            calls.len()
        };
        if n == self.break_on {
            self.store.set_query_only(true).unwrap();
        }
        Ok(AgentOutput {
            text: format!("out {}", r.task.id),
            ..Default::default()
        })
    }
}

/// One task at a time, so which calls were made when the store broke is known.
fn one_at_a_time(agent: Arc<dyn Agent>) -> Orchestrator {
    Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(agent))
        .executor_config(ExecutorConfig {
            max_concurrency: 1,
            ..ExecutorConfig::default()
        })
        .build()
        .unwrap()
}

fn saas_plan() -> Plan {
    crate::support::plan_of("Build a SaaS business for invoices")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_refuses_writes_stops_the_run_which_resumes_where_the_journal_left_it() {
    let plan = saas_plan();
    let n = plan.tasks.len();
    assert!(n > 3, "{n} tasks");
    let (store, id) = stored_run(&plan);
    let agent = Arc::new(Breaks {
        store: Arc::clone(&store),
        break_on: 2,
        calls: Default::default(),
    });
    let genesis = one_at_a_time(agent.clone());
    let mut handle = genesis
        .execute(plan.clone(), journaled(&id, store.clone()))
        .unwrap();
    let mut events = handle.events();
    let result = tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .expect("the run stops");
    let calls = agent.calls.lock().unwrap().clone();
    assert_eq!(
        calls.len(),
        2,
        "no task started after the write failed: {calls:?}"
    );
    assert_eq!(result.status, RunStatus::Running);
    let stopped = result.interrupted.clone().expect("the result says why");
    assert_eq!(stopped.rule, "journal_unavailable");
    assert!(stopped.reason.contains("readonly"), "{}", stopped.reason);
    assert!(
        stopped.reason.contains("journal_unavailable"),
        "{}",
        stopped.reason
    );
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert!(
        matches!(seen.last(), Some(RunEvent::RunInterrupted { rule, .. }) if rule == "journal_unavailable"),
        "{seen:#?}"
    );
    let broadcast_successes = seen
        .iter()
        .filter(|e| matches!(e, RunEvent::TaskSucceeded { .. }))
        .count();
    assert_eq!(
        broadcast_successes, 1,
        "only the journaled success: {seen:#?}"
    );
    assert!(store.write_failure().is_some());

    // The store kept what it had: the run is still running, its first task done.
    let record = stored(&store, &id);
    assert_eq!(record.status, RunStatus::Running);
    let done: Vec<&str> = record
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Succeeded)
        .map(|t| t.task_id.as_str())
        .collect();
    assert_eq!(done, [calls[0].as_str()]);

    // The store takes writes again; after a restart the run resumes and does again
    // only the task whose success was not journaled.
    store.set_query_only(false).unwrap();
    let again = Arc::new(Breaks {
        store: Arc::clone(&store),
        break_on: 0,
        calls: Default::default(),
    });
    let genesis = one_at_a_time(again.clone());
    let record = stored(&store, &id);
    let resumed = genesis
        .execute(record.plan.clone(), resuming(&store, &record))
        .unwrap()
        .wait()
        .await;
    assert_eq!(resumed.status, RunStatus::Succeeded, "{:#?}", resumed.tasks);
    assert_eq!(resumed.interrupted, None);
    let recalls = again.calls.lock().unwrap().clone();
    assert_eq!(recalls.len(), n - 1, "{recalls:?}");
    assert!(recalls.contains(&calls[1]), "{recalls:?}");
    assert!(!recalls.contains(&calls[0]), "{recalls:?}");
    assert_eq!(stored(&store, &id).status, RunStatus::Succeeded);
    assert_eq!(store.write_failure(), None);
}

/// Fails the first write that holds a `task_succeeded`, once: a transient failure.
struct FailsOnce {
    store: Arc<SqliteStore>,
    failed: AtomicBool,
    writes: AtomicUsize,
}

impl RunJournal for FailsOnce {
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
        self.writes.fetch_add(1, Ordering::SeqCst);
        if events
            .iter()
            .any(|e| matches!(e, RunEvent::TaskSucceeded { .. }))
            && !self.failed.swap(true, Ordering::SeqCst)
        {
            return Err("disk I/O error (once)".into());
        }
        self.store.record_all(run_id, events)
    }
}

/// A write that fails once is retried: the run goes on, and the journal holds every
/// task's success. It used to be logged and lost (the task ran again after a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_write_that_fails_once_is_retried_and_the_run_goes_on() {
    let plan = saas_plan();
    let (store, id) = stored_run(&plan);
    let agent = Arc::new(Breaks {
        store: Arc::clone(&store),
        break_on: 0,
        calls: Default::default(),
    });
    let genesis = one_at_a_time(agent.clone());
    let journal = Arc::new(FailsOnce {
        store: Arc::clone(&store),
        failed: AtomicBool::new(false),
        writes: AtomicUsize::new(0),
    });
    let result = genesis
        .execute(plan.clone(), journaled(&id, journal.clone()))
        .unwrap()
        .wait()
        .await;
    assert!(journal.failed.load(Ordering::SeqCst));
    assert_eq!(result.status, RunStatus::Succeeded, "{:#?}", result.tasks);
    assert_eq!(result.interrupted, None);
    assert_eq!(agent.calls.lock().unwrap().len(), plan.tasks.len());
    let record = stored(&store, &id);
    assert_eq!(record.status, RunStatus::Succeeded);
    assert!(
        record
            .tasks
            .iter()
            .all(|t| t.status == TaskStatus::Succeeded),
        "{:#?}",
        record.tasks
    );
}
