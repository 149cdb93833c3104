//! Durability of resumed runs: what a run spent before a restart, and follow-up tasks
//! journaled with their place in the DAG.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use genesis::core::{RunId, TaskId, Usd};
use genesis::run::{
    Agent, AgentError, AgentOutput, AgentRequest, AgentSet, FollowUp, RunEvent, RunResult,
    RunStatus, TaskStatus,
};
use genesis::store::{RunRecord, RunStore, SqliteStore};
use genesis::{Orchestrator, Plan, PlannedTask, RunOptions};

use crate::support::{journal_crash, plan_of};
use crate::{Dying, journaled, resuming, stored, stored_run};

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

/// An orchestrator whose every task costs ten cents, and a run of the SaaS plan
/// journaled in a fresh in-memory store as a crash would leave it: its first root task
/// finished, costing `task_cost`, and `run_cost` journaled as the run's spend.
fn crashed_run(task_cost: f64, run_cost: f64) -> (Orchestrator, Arc<SqliteStore>, RunRecord) {
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Arc::new(Dime)))
        .build()
        .unwrap();
    let plan = genesis
        .plan_sync("Build a SaaS business for invoices")
        .unwrap();
    let (store, id) = stored_run(&plan);
    journal_crash(&store, &id, &plan, task_cost, run_cost);
    let record = stored(&store, &id);
    (genesis, store, record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_keeps_what_it_spent_before_the_restart() {
    let (genesis, store, before) = crashed_run(0.5, 0.5);
    let id = before.id.clone();
    let n = before.plan.tasks.len();
    let options = resuming(&store, &before);
    assert_eq!(options.resumed.len(), 1);
    let result = genesis.execute(before.plan, options).unwrap().wait().await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:#?}", result.tasks);
    let want = 0.5 + 0.1 * (n - 1) as f64;
    let after = stored(&store, &id);
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
    let (genesis, store, before) = crashed_run(0.5, 0.5);
    let id = before.id.clone();
    let options = RunOptions {
        budget: Some(usd(0.5)),
        ..resuming(&store, &before)
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
    let after = stored(&store, &id);
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

/// The SaaS plan run with a [`Proposer`] on its first task under a parent (so follow-ups
/// of it have a parent too), journaled in a fresh in-memory store.
struct FollowUpRun {
    genesis: Orchestrator,
    agent: Arc<Proposer>,
    store: Arc<SqliteStore>,
    id: RunId,
    plan: Plan,
    /// The task that proposes the follow-up.
    after: TaskId,
}

impl FollowUpRun {
    fn new() -> FollowUpRun {
        let plan = plan_of("Build a SaaS business for invoices");
        let after = plan
            .tasks
            .iter()
            .find(|t| t.parent.is_some())
            .expect("the SaaS plan has nested tasks")
            .id
            .clone();
        let agent = Proposer::new(after.clone());
        let genesis = Orchestrator::builder()
            .agents(AgentSet::new().with_fallback(agent.clone()))
            .build()
            .unwrap();
        let (store, id) = stored_run(&plan);
        FollowUpRun {
            genesis,
            agent,
            store,
            id,
            plan,
            after,
        }
    }

    /// Runs the plan live through a journal that dies right after the first write of an
    /// event matching `last` (a crash there).
    async fn crash_after(
        &self,
        last: impl Fn(&RunEvent) -> bool + Send + Sync + 'static,
    ) -> RunResult {
        let options = journaled(&self.id, Dying::after(&self.store, last));
        let handle = self.genesis.execute(self.plan.clone(), options).unwrap();
        handle.wait().await
    }

    /// What the store holds of the run.
    fn record(&self) -> RunRecord {
        stored(&self.store, &self.id)
    }

    /// The follow-up of `after` journaled in `record`, if any.
    fn followup<'r>(&self, record: &'r RunRecord) -> Option<&'r PlannedTask> {
        let prefix = format!("{}.f", self.after);
        record
            .plan
            .tasks
            .iter()
            .find(|t| t.id.as_str().starts_with(&prefix))
    }

    /// Resumes `record` as after a restart.
    async fn resume(&self, record: RunRecord) -> RunResult {
        let options = resuming(&self.store, &record);
        let handle = self.genesis.execute(record.plan, options).unwrap();
        handle.wait().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_are_journaled_under_their_parent_after_the_task_that_proposed_them() {
    let run = FollowUpRun::new();
    let (agent, after) = (&run.agent, &run.after);
    // The journal stops right after the follow-ups were added: a crash before they ran.
    let live = run
        .crash_after(|e| matches!(e, RunEvent::TasksAdded { .. }))
        .await;
    assert_eq!(live.status, RunStatus::Succeeded, "{:#?}", live.tasks);

    let record = run.record();
    let proposer = record.plan.task(after.as_str()).unwrap().clone();
    let followup = run
        .followup(&record)
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
    let dag = record.plan.to_dag(run.genesis.limits()).unwrap();
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
    let resumed = run.resume(record).await;
    assert_eq!(resumed.status, RunStatus::Succeeded, "{:#?}", resumed.tasks);
    let inputs = agent.inputs_of(followup.id.as_str());
    assert_eq!(inputs.len(), 2, "the follow-up ran again after the restart");
    assert_eq!(
        inputs[1], inputs[0],
        "after the restart, the follow-up got the same inputs (the output of {after})"
    );
    let stored = run.record();
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
    let run = FollowUpRun::new();
    let (agent, after) = (&run.agent, &run.after);
    let proposer = after.clone();
    run.crash_after(
        move |e| matches!(e, RunEvent::TaskSucceeded { task_id, .. } if *task_id == proposer),
    )
    .await;

    let record = run.record();
    let status = |task: &str| {
        record
            .tasks
            .iter()
            .find(|t| t.task_id.as_str() == task)
            .map(|t| t.status)
    };
    assert_eq!(status(after.as_str()), Some(TaskStatus::Succeeded));
    let followup = run
        .followup(&record)
        .expect("the follow-up was journaled with the success that proposed it")
        .id
        .clone();
    assert_eq!(status(followup.as_str()), Some(TaskStatus::Pending));
    let resumed = run.resume(record).await;
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
