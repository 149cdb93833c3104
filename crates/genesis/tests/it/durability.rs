//! Durability of resumed runs: what a run spent before a restart, and follow-up tasks
//! journaled with their place in the DAG.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use genesis::core::{RunId, TaskId, Usd};
use genesis::run::{
    Agent, AgentError, AgentOutput, AgentRequest, AgentSet, FollowUp, RunEvent, RunJournal,
    RunStatus, TaskReport, TaskStatus,
};
use genesis::store::{RunRecord, RunStore, SqliteStore};
use genesis::{Orchestrator, Plan, RunOptions};

fn usd(v: f64) -> Usd {
    Usd::new(v).unwrap()
}

/// Every task costs ten cents.
struct Dime;

#[async_trait]
impl Agent for Dime {
    async fn execute(&self, r: AgentRequest) -> Result<AgentOutput, AgentError> {
        Ok(AgentOutput {
            text: format!("out {}", r.task.id),
            cost: usd(0.10),
            ..Default::default()
        })
    }
}

/// A journaled run whose first root task finished before a "crash", costing `task_cost`,
/// with `run_cost` journaled as the run's spend (more when failed calls cost money too).
fn crashed_run(
    genesis: &Orchestrator,
    store: &SqliteStore,
    task_cost: f64,
    run_cost: f64,
) -> (RunId, RunRecord) {
    let plan = genesis
        .plan_sync("Build a SaaS business for invoices")
        .unwrap();
    let id = genesis::new_run_id();
    store.create_run(&id, &plan, None, None).unwrap();
    let first = plan
        .tasks
        .iter()
        .find(|t| t.depends_on.is_empty() && t.parent.is_none())
        .unwrap();
    store
        .record(
            &id,
            &RunEvent::TaskSucceeded {
                task_id: first.id.clone(),
                agent: first.agent.clone().unwrap(),
                output: "done".into(),
                cost: usd(task_cost),
                attempts: 1,
                duration_ms: 1,
            },
        )
        .unwrap();
    store
        .record(
            &id,
            &RunEvent::Cost {
                spent: usd(run_cost),
            },
        )
        .unwrap();
    let record = store.get_run(id.as_str()).unwrap().unwrap();
    (id, record)
}

fn finished(record: &RunRecord) -> Vec<TaskReport> {
    record
        .tasks
        .iter()
        .filter(|t| t.status.is_terminal())
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_keeps_what_it_spent_before_the_restart() {
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Arc::new(Dime)))
        .build()
        .unwrap();
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let (id, before) = crashed_run(&genesis, &store, 0.5, 0.5);
    let n = before.plan.tasks.len();
    let resumed = finished(&before);
    assert_eq!(resumed.len(), 1);
    let options = RunOptions {
        run_id: Some(id.clone()),
        journal: Some(store.clone() as Arc<dyn RunJournal>),
        resumed,
        ..Default::default()
    };
    let result = genesis.execute(before.plan, options).unwrap().wait().await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:#?}", result.tasks);
    let want = 0.5 + 0.1 * (n - 1) as f64;
    let after = store.get_run(id.as_str()).unwrap().unwrap();
    let task_sum: f64 = after.tasks.iter().map(|t| t.cost.as_f64()).sum();
    assert!((task_sum - want).abs() < 1e-9, "task costs {task_sum}");
    assert!(
        (result.cost.as_f64() - want).abs() < 1e-9,
        "result cost {} want {want}",
        result.cost
    );
    assert!(
        (after.cost.as_f64() - want).abs() < 1e-9,
        "stored run cost {} want {want}",
        after.cost
    );
    assert!((store.spent_since(0).unwrap().as_f64() - want).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_cannot_spend_its_budget_a_second_time() {
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Arc::new(Dime)))
        .build()
        .unwrap();
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let (id, before) = crashed_run(&genesis, &store, 0.5, 0.5);
    let options = RunOptions {
        run_id: Some(id.clone()),
        journal: Some(store.clone() as Arc<dyn RunJournal>),
        resumed: finished(&before),
        budget: Some(usd(0.5)),
        ..Default::default()
    };
    let result = genesis.execute(before.plan, options).unwrap().wait().await;
    assert_eq!(result.status, RunStatus::Failed);
    let ran = result
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Succeeded)
        .count();
    assert_eq!(
        ran, 1,
        "only the task finished before the restart succeeded"
    );
    let reason = result.tasks.iter().find_map(|t| t.error.clone()).unwrap();
    assert!(reason.contains("rule: budget_run"), "{reason}");
    assert!(reason.contains("spent $0.5000"), "{reason}");
    let after = store.get_run(id.as_str()).unwrap().unwrap();
    assert!((after.cost.as_f64() - 0.5).abs() < 1e-9, "{}", after.cost);
}

/// Proposes one follow-up on its first call for `on`, and records what every call saw.
struct Proposer {
    on: TaskId,
    proposed: AtomicBool,
    /// (task id, ids of the inputs it received)
    seen: Mutex<Vec<(String, Vec<String>)>>,
}

impl Proposer {
    fn new(on: TaskId) -> Arc<Self> {
        Arc::new(Proposer {
            on,
            proposed: AtomicBool::new(false),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn inputs_of(&self, task: &str) -> Vec<Vec<String>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == task)
            .map(|(_, i)| i.clone())
            .collect()
    }
}

#[async_trait]
impl Agent for Proposer {
    async fn execute(&self, r: AgentRequest) -> Result<AgentOutput, AgentError> {
        let id = r.task.id.to_string();
        let inputs = r.inputs.iter().map(|i| i.task_id.to_string()).collect();
        self.seen.lock().unwrap().push((id.clone(), inputs));
        let mut out = AgentOutput {
            text: format!("out of {id}"),
            ..Default::default()
        };
        if r.task.id == self.on && !self.proposed.swap(true, Ordering::SeqCst) {
            out.followups.push(FollowUp {
                kind: r.task.kind,
                description: "Write the summary report of the findings".into(),
            });
        }
        Ok(out)
    }
}

/// A journal that "dies" (keeps nothing more) right after it stored an event that
/// matches `last`: a crash at that point.
struct Dying {
    store: Arc<SqliteStore>,
    last: Box<dyn Fn(&RunEvent) -> bool + Send + Sync>,
    dead: AtomicBool,
}

impl RunJournal for Dying {
    fn record(
        &self,
        run_id: &RunId,
        event: &RunEvent,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.dead.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.store.record(run_id, event)?;
        if (self.last)(event) {
            self.dead.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Events journaled together are one write: the crash comes after all of them.
    fn record_all(
        &self,
        run_id: &RunId,
        events: &[RunEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.dead.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.store.record_all(run_id, events)?;
        if events.iter().any(|e| (self.last)(e)) {
            self.dead.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// A plan and the first task under a parent (so follow-ups of it have a parent too).
fn plan_and_nested_task(genesis: &Orchestrator) -> (Plan, TaskId) {
    let plan = genesis
        .plan_sync("Build a SaaS business for invoices")
        .unwrap();
    let nested = plan
        .tasks
        .iter()
        .find(|t| t.parent.is_some())
        .expect("the SaaS plan has nested tasks")
        .id
        .clone();
    (plan, nested)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_are_journaled_under_their_parent_after_the_task_that_proposed_them() {
    let genesis = Orchestrator::builder().build().unwrap();
    let (plan, after) = plan_and_nested_task(&genesis);
    let agent = Proposer::new(after.clone());
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(agent.clone()))
        .build()
        .unwrap();
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let id = genesis::new_run_id();
    store.create_run(&id, &plan, None, None).unwrap();
    // The journal stops right after the follow-ups were added: a crash before they ran.
    let journal = Arc::new(Dying {
        store: Arc::clone(&store),
        last: Box::new(|e| matches!(e, RunEvent::TasksAdded { .. })),
        dead: AtomicBool::new(false),
    });
    let options = RunOptions {
        run_id: Some(id.clone()),
        journal: Some(journal as Arc<dyn RunJournal>),
        ..Default::default()
    };
    let live = genesis.execute(plan.clone(), options).unwrap().wait().await;
    assert_eq!(live.status, RunStatus::Succeeded, "{:#?}", live.tasks);

    let record = store.get_run(id.as_str()).unwrap().unwrap();
    let proposer = record.plan.task(after.as_str()).unwrap().clone();
    let followup = record
        .plan
        .tasks
        .iter()
        .find(|t| t.id.as_str().starts_with(&format!("{after}.f")))
        .expect("the follow-up was journaled")
        .clone();
    assert_eq!(followup.parent, proposer.parent, "same parent as {after}");
    assert_eq!(followup.depth, proposer.depth);
    assert_eq!(followup.depends_on, vec![after.clone()]);
    // Not a top-level task: the live answer does not list it.
    assert!(
        !live.answer.contains(followup.id.as_str()),
        "{}",
        live.answer
    );
    let live_inputs = agent.inputs_of(followup.id.as_str());
    assert_eq!(live_inputs.len(), 1, "the follow-up ran once live");
    assert!(
        live_inputs[0].contains(&after.to_string()),
        "live, the follow-up got the output of {after}: {live_inputs:?}"
    );

    // Resume from the journal: the follow-up still waits for, and receives, that output.
    let dag = record.plan.to_dag(genesis.limits()).unwrap();
    let prerequisites: Vec<String> = dag
        .prerequisites(followup.id.as_str())
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert!(
        prerequisites.contains(&after.to_string()),
        "{prerequisites:?}"
    );
    let f_status = record
        .tasks
        .iter()
        .find(|t| t.task_id == followup.id)
        .map(|t| t.status);
    assert_eq!(f_status, Some(TaskStatus::Pending), "the crash came first");
    let options = RunOptions {
        run_id: Some(id.clone()),
        journal: Some(store.clone() as Arc<dyn RunJournal>),
        resumed: finished(&record),
        ..Default::default()
    };
    let resumed = genesis.execute(record.plan, options).unwrap().wait().await;
    assert_eq!(resumed.status, RunStatus::Succeeded, "{:#?}", resumed.tasks);
    let inputs = agent.inputs_of(followup.id.as_str());
    assert_eq!(inputs.len(), 2, "the follow-up ran again after the restart");
    assert_eq!(
        inputs[1], inputs[0],
        "after the restart, the follow-up got the same inputs (the output of {after})"
    );
    let stored = store.get_run(id.as_str()).unwrap().unwrap();
    assert!(
        !stored
            .answer
            .as_deref()
            .unwrap_or_default()
            .contains(followup.id.as_str()),
        "a nested follow-up is not part of the answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_a_task_succeeded_keeps_the_follow_ups_it_proposed() {
    let genesis = Orchestrator::builder().build().unwrap();
    let (plan, after) = plan_and_nested_task(&genesis);
    let agent = Proposer::new(after.clone());
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(agent.clone()))
        .build()
        .unwrap();
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let id = genesis::new_run_id();
    store.create_run(&id, &plan, None, None).unwrap();
    let proposer = after.clone();
    let journal = Arc::new(Dying {
        store: Arc::clone(&store),
        last: Box::new(
            move |e| matches!(e, RunEvent::TaskSucceeded { task_id, .. } if *task_id == proposer),
        ),
        dead: AtomicBool::new(false),
    });
    let options = RunOptions {
        run_id: Some(id.clone()),
        journal: Some(journal as Arc<dyn RunJournal>),
        ..Default::default()
    };
    genesis.execute(plan, options).unwrap().wait().await;

    let record = store.get_run(id.as_str()).unwrap().unwrap();
    let status = |task: &str| {
        record
            .tasks
            .iter()
            .find(|t| t.task_id.as_str() == task)
            .map(|t| t.status)
    };
    assert_eq!(status(after.as_str()), Some(TaskStatus::Succeeded));
    let followup = record
        .plan
        .tasks
        .iter()
        .find(|t| t.id.as_str().starts_with(&format!("{after}.f")))
        .expect("the follow-up was journaled with the success that proposed it")
        .id
        .clone();
    assert_eq!(status(followup.as_str()), Some(TaskStatus::Pending));
    let options = RunOptions {
        run_id: Some(id.clone()),
        journal: Some(store.clone() as Arc<dyn RunJournal>),
        resumed: finished(&record),
        ..Default::default()
    };
    let resumed = genesis.execute(record.plan, options).unwrap().wait().await;
    assert_eq!(resumed.status, RunStatus::Succeeded, "{:#?}", resumed.tasks);
    let inputs = agent.inputs_of(followup.as_str());
    assert!(
        inputs
            .last()
            .is_some_and(|i| i.contains(&after.to_string())),
        "after the restart, the follow-up got the output of {after}: {inputs:?}"
    );
    assert_eq!(
        agent.inputs_of(after.as_str()).len(),
        1,
        "{after} did not run again"
    );
}
