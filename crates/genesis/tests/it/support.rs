//! Stored-run set-up shared by the integration tests of `genesis` and of
//! `genesis-server`: the server's test binary compiles this same file
//! (`#[path = ".../crates/genesis/tests/it/support.rs"] mod journal;` in its `main.rs`),
//! so a run journaled "before a restart" is written one way in both. Keep it to
//! `genesis`'s public API, and keep every item used by both binaries.

use genesis::core::{RunId, Usd};
use genesis::run::{RunEvent, RunJournal};
use genesis::store::{RunStore, SqliteStore};
use genesis::{Orchestrator, Plan};

/// The plan the default orchestrator makes of `request`.
pub(crate) fn plan_of(request: &str) -> Plan {
    Orchestrator::builder()
        .build()
        .unwrap()
        .plan_sync(request)
        .unwrap()
}

/// Creates a run of `plan` in `store` under a new id, nothing of it run yet.
pub(crate) fn create_run(store: &SqliteStore, plan: &Plan) -> RunId {
    let id = genesis::new_run_id();
    store.create_run(&id, plan, None, None, None).unwrap();
    id
}

/// Journals what a crash leaves of run `id` of `plan`: its first root task succeeded,
/// costing `task_cost`, and the run had spent `run_cost` (more when failed calls cost
/// money too).
pub(crate) fn journal_crash(
    store: &SqliteStore,
    id: &RunId,
    plan: &Plan,
    task_cost: f64,
    run_cost: f64,
) {
    let first = plan
        .tasks
        .iter()
        .find(|t| t.depends_on.is_empty() && t.parent.is_none())
        .unwrap();
    let succeeded = RunEvent::TaskSucceeded {
        task_id: first.id.clone(),
        agent: first.agent.clone().unwrap(),
        model: None,
        output: "done before the crash".into(),
        flagged: None,
        truncated: false,
        cost: Usd::new(task_cost).unwrap(),
        input_tokens: 0,
        output_tokens: 0,
        attempts: 1,
        duration_ms: 1,
        queued_ms: 0,
    };
    store.record(id, &succeeded).unwrap();
    let spent = Usd::new(run_cost).unwrap();
    store.record(id, &RunEvent::Cost { spent }).unwrap();
}
