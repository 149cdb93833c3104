//! Starting, tracking, resuming and draining runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use genesis::core::{RunId, Usd};
use genesis::daao::BudgetScope;
use genesis::run::{DaySpend, RunEvent, RunJournal, TaskStatus};
use genesis::store::{Created, RunRecord, RunStore, StoreError, UnfinishedRun};
use genesis::telemetry::catalogue;
use genesis::{GenesisError, Orchestrator, Plan, RunOptions};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// A run in progress in this process.
struct Live {
    cancel: CancellationToken,
    events: broadcast::Sender<RunEvent>,
}

/// Tracks runs in progress; the store remembers everything else.
pub struct RunManager {
    orchestrator: Orchestrator,
    store: Arc<dyn RunStore>,
    live: Arc<Mutex<HashMap<RunId, Live>>>,
    tracker: tokio_util::task::TaskTracker,
    /// Today's spend (with the day's start, unix ms), charged by every run started
    /// today: one total, so concurrent runs cannot each spend the daily budget.
    day: Mutex<Option<(i64, DaySpend)>>,
}

impl std::fmt::Debug for RunManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunManager")
            .field("live", &self.running())
            .finish_non_exhaustive()
    }
}

/// The `run_rejected` rule of a run whose stored rows do not decode.
pub(crate) const CORRUPT_RULE: &str = "run_store_corrupt";

/// Journals to the store (the executor writes every event through it before it moves
/// on, from its journal thread: several runs' events in one store transaction) and
/// records task metrics for what the store kept.
struct MeteredJournal {
    store: Arc<dyn RunStore>,
}

impl RunJournal for MeteredJournal {
    fn record(
        &self,
        run_id: &RunId,
        event: &RunEvent,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.store.record(run_id, event)
    }

    fn record_all(
        &self,
        run_id: &RunId,
        events: &[RunEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.store.record_all(run_id, events)
    }

    fn record_groups(
        &self,
        groups: &[(&RunId, &[RunEvent])],
    ) -> Vec<Result<(), Box<dyn std::error::Error + Send + Sync>>> {
        self.store.record_groups(groups)
    }

    /// Counted on the run's task, once the store kept the events.
    fn journaled(&self, _: &RunId, events: &[RunEvent]) {
        events.iter().for_each(record_metrics);
    }

    fn blocks(&self) -> bool {
        self.store.blocks()
    }
}

/// The `scope` label of [`catalogue::BUDGET_EXCEEDED_TOTAL`] for a budget scope, as the
/// catalogue documents it (`run` or `daily`).
fn scope_label(scope: BudgetScope) -> &'static str {
    match scope {
        BudgetScope::Run => "run",
        BudgetScope::Day => "daily",
    }
}

/// Task and budget metrics for a journaled event. Money is not counted here:
/// `genesis_cost_usd_total` grows once per call where the cost arises (LLM calls in the
/// providers, HTTP and command agents in their backends), so a task's cost is never
/// counted a second time when the task finishes.
fn record_metrics(event: &RunEvent) {
    match event {
        RunEvent::TaskSucceeded { duration_ms, .. } => {
            metrics::counter!(catalogue::TASKS_TOTAL, catalogue::labels::STATUS => "succeeded")
                .increment(1);
            metrics::histogram!(catalogue::TASK_DURATION_SECONDS)
                .record(*duration_ms as f64 / 1000.0);
        }
        RunEvent::TaskFailed { .. } => {
            metrics::counter!(catalogue::TASKS_TOTAL, catalogue::labels::STATUS => "failed")
                .increment(1);
        }
        RunEvent::BudgetExceeded { scope, .. } => {
            metrics::counter!(catalogue::BUDGET_EXCEEDED_TOTAL, catalogue::labels::SCOPE => scope_label(*scope))
                .increment(1);
        }
        RunEvent::TaskSkipped { .. } => {
            metrics::counter!(catalogue::TASKS_TOTAL, catalogue::labels::STATUS => "skipped")
                .increment(1);
        }
        _ => {}
    }
}

/// Start of the current UTC day, unix milliseconds.
fn day_start_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let day = 86_400_000u128;
    i64::try_from(now - now % day).unwrap_or(0)
}

impl RunManager {
    /// A manager over `store`.
    pub fn new(orchestrator: Orchestrator, store: Arc<dyn RunStore>) -> Self {
        RunManager {
            orchestrator,
            store,
            live: Arc::new(Mutex::new(HashMap::new())),
            tracker: tokio_util::task::TaskTracker::new(),
            day: Mutex::new(None),
        }
    }

    /// Runs in progress in this process.
    pub fn running(&self) -> usize {
        self.live.lock().map_or(0, |l| l.len())
    }

    /// Money spent today by all runs (runs in progress included, up to their last
    /// agent call).
    pub fn spent_today(&self) -> Usd {
        self.today().spent()
    }

    /// Today's shared spend. The first call of a (UTC) day starts it from what the
    /// store holds for the day (runs journaled before a restart); runs then charge it
    /// as they spend. Runs started before midnight keep charging the previous day's.
    pub(crate) fn today(&self) -> DaySpend {
        let start = day_start_ms();
        let mut day = self
            .day
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match day.as_ref() {
            Some((at, spend)) if *at == start => spend.clone(),
            _ => {
                let spent = self.store.spent_since(start).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot read today's spend from the run store; starting from $0");
                    Usd::ZERO
                });
                let spend = DaySpend::new(spent);
                *day = Some((start, spend.clone()));
                spend
            }
        }
    }

    /// Journals a run with the subject it runs for, then starts it. Returns the run id
    /// and whether it already existed (same idempotency key).
    ///
    /// # Errors
    /// Store failures (nothing was accepted) or an invalid plan.
    pub fn start(
        &self,
        plan: Plan,
        budget: Option<Usd>,
        idempotency_key: Option<&str>,
        subject: &str,
    ) -> Result<(RunId, bool), StartRunError> {
        let id = genesis::new_run_id();
        match self
            .store
            .create_run(&id, &plan, budget, idempotency_key, Some(subject))?
        {
            Created::Existing(existing) => Ok((existing, true)),
            Created::New(id) => {
                let resumed = Vec::new();
                let launched = self.launch(id.clone(), plan, budget, resumed, Usd::ZERO, subject);
                if let Err(e) = launched {
                    // Journaled but cannot run: record it as failed so it is not resumed.
                    self.reject(&id, &e, Usd::ZERO);
                    return Err(e.into());
                }
                Ok((id, false))
            }
        }
    }

    /// Journals that a run cannot run, and why (naming the rule and value), and ends it
    /// as failed with what it had spent, so it is not resumed again.
    fn reject(&self, id: &RunId, error: &GenesisError, spent: Usd) {
        self.fail(id, error.rule(), error.to_string(), spent);
    }

    /// Journals `run_rejected` with `rule` and `reason`, then `run_finished` (`failed`)
    /// with `spent` (the store keeps the larger of it and the journaled cost).
    fn fail(&self, id: &RunId, rule: String, reason: String, spent: Usd) {
        let events = [
            RunEvent::RunRejected { rule, reason },
            RunEvent::RunFinished {
                status: genesis::run::RunStatus::Failed,
                cost: spent,
            },
        ];
        if let Err(e) = self.store.record_all(id, &events) {
            tracing::error!(run_id = %id, error = %e, "cannot journal that the run failed to start");
        }
    }

    fn launch(
        &self,
        id: RunId,
        plan: Plan,
        budget: Option<Usd>,
        resumed: Vec<genesis::run::TaskReport>,
        spent: Usd,
        subject: &str,
    ) -> Result<(), GenesisError> {
        let options = RunOptions {
            subject: Some(subject.to_owned()),
            run_id: Some(id.clone()),
            journal: Some(Arc::new(MeteredJournal {
                store: Arc::clone(&self.store),
            })),
            resumed,
            budget,
            day: Some(self.today()),
            spent,
            ..RunOptions::default()
        };
        let handle = self.orchestrator.execute(plan, options)?;
        let live = Live {
            cancel: handle.cancellation(),
            events: handle.sender(),
        };
        if let Ok(mut l) = self.live.lock() {
            l.insert(id.clone(), live);
        }
        let registry = Arc::clone(&self.live);
        self.tracker.spawn(async move {
            let result = handle.wait().await;
            tracing::info!(run_id = %result.run_id, status = result.status.as_str(), cost = %result.cost, "run finished");
            if let Ok(mut l) = registry.lock() {
                l.remove(&id);
            }
        });
        Ok(())
    }

    /// Resumes every run the store still marks running: finished tasks keep their
    /// results, tasks that were in flight run again. Each run on its own: one that
    /// cannot resume (its stored rows do not decode, or its plan breaks the limits now)
    /// is journaled as failed with the rule and reason, and the others still resume.
    ///
    /// # Errors
    /// Store failures (nothing was resumed or failed).
    pub fn resume(&self) -> Result<usize, StoreError> {
        let runs = self.store.unfinished_runs()?;
        let mut n = 0;
        for run in runs {
            let run = match run {
                UnfinishedRun::Readable(run) => *run,
                UnfinishedRun::Unreadable { id, error } => {
                    if self.is_live(id.as_str()) {
                        continue;
                    }
                    let reason = genesis::core::error_chain(&error);
                    tracing::error!(run_id = %id, error = %reason, "cannot read the stored run back; marking it failed");
                    // What it spent stays journaled: the store keeps the larger cost.
                    self.fail(&id, CORRUPT_RULE.to_owned(), reason, Usd::ZERO);
                    continue;
                }
            };
            if self.is_live(run.id.as_str()) {
                continue;
            }
            // Cancelled before the stop (the client was answered 202, or the executor
            // had begun journaling the cancellation): end it, run none of it again.
            if run.was_cancelled() {
                self.end_cancelled(&run);
                continue;
            }
            let done = run
                .tasks
                .iter()
                .filter(|t| t.status == TaskStatus::Succeeded)
                .count();
            let resumed: Vec<_> = run
                .tasks
                .into_iter()
                .filter(|t| t.status.is_terminal())
                .collect();
            tracing::info!(run_id = %run.id, finished_tasks = done, spent = %run.cost, "resuming run");
            // For the subject it was started for (runs journaled before subjects were:
            // `anonymous`, as they ran), and routed as its stored plan was.
            let subject = run.subject.as_deref().unwrap_or("anonymous");
            let budget = self.resumed_budget(&run.id, run.budget);
            match self.launch(run.id.clone(), run.plan, budget, resumed, run.cost, subject) {
                Ok(()) => n += 1,
                Err(e) => {
                    tracing::error!(run_id = %run.id, rule = %e.rule(), error = %e, "cannot resume run; marking it failed");
                    self.reject(&run.id, &e, run.cost);
                }
            }
        }
        Ok(n)
    }

    /// Ends a run that was cancelled before the last stop as `cancelled`, calling no
    /// agent: its unfinished tasks are journaled as cancelled ("run cancelled"), then
    /// `run_finished`, in one write. Should the write fail, the run stays `running` and
    /// the next start tries again (it is still not resumed).
    fn end_cancelled(&self, run: &RunRecord) {
        tracing::info!(run_id = %run.id, spent = %run.cost, "run was cancelled before the restart; ending it as cancelled");
        let events = run.cancellation();
        match self.store.record_all(&run.id, &events) {
            Ok(()) => events.iter().for_each(record_metrics),
            Err(e) => {
                tracing::error!(run_id = %run.id, error = %e, "cannot journal the end of a cancelled run; it stays running until the next start");
            }
        }
    }

    /// The budget a resumed run goes on with: the one it was started with, capped by
    /// the per-run budget configured now (an operator who lowered `budget.per_run`
    /// lowers it for runs in progress too, rather than failing them).
    fn resumed_budget(&self, id: &RunId, stored: Option<Usd>) -> Option<Usd> {
        let cap = self.orchestrator.budget().per_run;
        match (stored, cap) {
            (Some(stored), Some(cap)) if stored > cap => {
                tracing::warn!(run_id = %id, budget = %stored, per_run = %cap, "resumed run's budget is above budget.per_run; capping it");
                Some(cap)
            }
            (stored, _) => stored,
        }
    }

    /// True while this process executes the run `id`.
    pub fn is_live(&self, id: &str) -> bool {
        self.live.lock().is_ok_and(|l| l.contains_key(id))
    }

    /// Cancels a run in progress here. The request is journaled first, durably
    /// ([`RunStore::request_cancel`]), and only then is the run stopped, so a cancel
    /// reported as done survives a crash: the run is ended as cancelled at the next
    /// start, never resumed. `Ok(false)` when the run is not running here (or ended
    /// before the request was journaled): nothing was journaled nor stopped. This is a
    /// store call: it blocks.
    ///
    /// # Errors
    /// Store failures: nothing was journaled and the run goes on.
    pub fn cancel(&self, id: &str) -> Result<bool, StoreError> {
        let token = self
            .live
            .lock()
            .ok()
            .and_then(|l| l.get(id).map(|r| r.cancel.clone()));
        let Some(token) = token else {
            return Ok(false);
        };
        if !self.store.request_cancel(id)? {
            return Ok(false);
        }
        token.cancel();
        Ok(true)
    }

    /// A subscription to a live run's events (a wake-up signal for event streams).
    pub fn subscribe(&self, id: &str) -> Option<broadcast::Receiver<RunEvent>> {
        self.live.lock().ok()?.get(id).map(|r| r.events.subscribe())
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn RunStore> {
        &self.store
    }

    /// Waits up to `grace` for runs in progress; returns how many are still running
    /// (they stay journaled and resume at the next start).
    pub async fn drain(&self, grace: Duration) -> usize {
        self.tracker.close();
        let _ = tokio::time::timeout(grace, self.tracker.wait()).await;
        self.running()
    }
}

/// Why a run could not be accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartRunError {
    /// The store failed: the run was not accepted.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The plan could not be executed.
    #[error(transparent)]
    Genesis(#[from] GenesisError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series `name` in a Prometheus rendering (0 when absent).
    fn series(rendered: &str, name: &str) -> f64 {
        rendered
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    #[test]
    fn journaled_events_count_budget_scopes_and_never_money() {
        let recorder = genesis::telemetry::build_prometheus_recorder().unwrap();
        let handle = recorder.handle();
        let usd = |v| Usd::new(v).unwrap();
        let refused = |scope| RunEvent::BudgetExceeded {
            task_id: "t2".into(),
            scope,
            spent: usd(0.9),
            reserved: usd(0.1),
            requested: usd(0.1),
            limit: usd(1.0),
        };
        metrics::with_local_recorder(&recorder, || {
            // The task's cost was counted when its calls were made, not again here.
            record_metrics(&RunEvent::TaskSucceeded {
                task_id: "t1".into(),
                agent: "backend".into(),
                output: "done".into(),
                cost: usd(0.25),
                attempts: 1,
                duration_ms: 10,
            });
            record_metrics(&refused(BudgetScope::Day));
            record_metrics(&refused(BudgetScope::Day));
            record_metrics(&refused(BudgetScope::Run));
        });
        let text = handle.render();
        assert_eq!(series(&text, catalogue::COST_USD_TOTAL), 0.0, "{text}");
        let scope = |s: &str| format!("{}{{scope=\"{s}\"}}", catalogue::BUDGET_EXCEEDED_TOTAL);
        assert_eq!(series(&text, &scope("daily")), 2.0, "{text}");
        assert_eq!(series(&text, &scope("run")), 1.0, "{text}");
        assert_eq!(series(&text, &scope("day")), 0.0, "{text}");
    }

    #[test]
    fn day_start_is_midnight_utc_today() {
        let start = day_start_ms();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert_eq!(start % 86_400_000, 0);
        assert!(start <= now && now - start < 86_400_000);
    }
}
