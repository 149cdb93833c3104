//! Starting, tracking, resuming and draining runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use genesis::core::{RunId, Usd};
use genesis::daao::BudgetScope;
use genesis::run::{DaySpend, RunEvent, RunJournal, RunStatus, TaskStatus};
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

/// The runs this process executes, and those it is starting.
#[derive(Default)]
struct Lives {
    runs: HashMap<RunId, Live>,
    /// Runs being journaled or launched by [`RunManager::start`] (not yet in `runs`),
    /// and whether a cancel was journaled for one meanwhile: a retry with the same
    /// idempotency key is answered 202 as soon as the run is journaled, so its cancel
    /// can arrive before the run is live. The launch then cancels it at once.
    starting: HashMap<RunId, bool>,
    /// Runs starting or in progress per subject (see [`RunSlot`]): per API key or
    /// agent, and per client IP for anonymous callers.
    per_subject: HashMap<Arc<str>, usize>,
    /// Runs starting or in progress in all (each holds a [`RunSlot`]), against
    /// `server.max_runs`.
    in_progress: usize,
}

/// One run counted against `server.max_runs` and its subject's
/// `server.max_runs_per_subject`, from its start (or resumption) until its end; dropping
/// it gives both slots back, whichever way the run ends or fails to start.
struct RunSlot {
    live: Arc<Mutex<Lives>>,
    /// What the run counts against per subject: its subject, or for an anonymous caller
    /// its client IP.
    subject: Arc<str>,
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        let mut lives = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let std::collections::hash_map::Entry::Occupied(mut e) =
            lives.per_subject.entry(Arc::clone(&self.subject))
        {
            *e.get_mut() = e.get().saturating_sub(1);
            if *e.get() == 0 {
                e.remove();
            }
        }
        lives.in_progress = lives.in_progress.saturating_sub(1);
        metrics::gauge!(catalogue::RUNS_IN_PROGRESS).set(lives.in_progress as f64);
    }
}

/// What a new run counts against per subject (`server.max_runs_per_subject`): its
/// subject, or for a caller without credentials (`anonymous`, which every such caller
/// shares) its client IP, so one anonymous client cannot take every slot; `None` for an
/// anonymous run without a known client IP (a library caller), which no per-subject cap
/// holds.
fn limit_key(subject: &str, client_ip: Option<std::net::IpAddr>) -> Option<String> {
    if subject != crate::middleware::ANONYMOUS {
        return Some(subject.to_owned());
    }
    client_ip.map(|ip| {
        format!(
            "{}@{}",
            crate::middleware::ANONYMOUS,
            crate::proxy::client_network(ip)
        )
    })
}

/// The client IP of an anonymous caller, by which its runs are counted; `None` for a
/// caller with credentials (counted by subject).
fn anonymous_ip(subject: &str, client_ip: Option<std::net::IpAddr>) -> Option<std::net::IpAddr> {
    client_ip
        .filter(|_| subject == crate::middleware::ANONYMOUS)
        .map(crate::proxy::client_network)
}

/// Tracks runs in progress; the store remembers everything else.
pub struct RunManager {
    orchestrator: Orchestrator,
    store: Arc<dyn RunStore>,
    live: Arc<Mutex<Lives>>,
    tracker: tokio_util::task::TaskTracker,
    /// Today's spend (with the day's start, unix ms), charged by every run started
    /// today: one total, so concurrent runs cannot each spend the daily budget.
    day: Mutex<Option<(i64, DaySpend)>>,
    /// The last failed read of today's spend (the day's start, when, and why), while no
    /// read of the day has succeeded: new runs are refused until one does, and the store
    /// is asked again at most once per [`BUDGET_STATE_RETRY`].
    day_unreadable: Mutex<Option<(i64, std::time::Instant, BudgetStateError)>>,
    /// Today's spend of each subject that spent or asked today (with the day's start),
    /// for `budget.per_subject_day`: every run of a subject charges its total.
    subject_days: Mutex<(i64, HashMap<String, DaySpend>)>,
    /// Most runs one subject may have starting or in progress (`None`: no limit).
    max_runs_per_subject: Option<usize>,
    /// Most runs the server may have starting or in progress (`None`: no limit).
    max_runs: Option<usize>,
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
/// records task metrics for what the store kept: the server's, and its run's rollout
/// cohorts' (the cohorts it was launched in).
struct MeteredJournal {
    store: Arc<dyn RunStore>,
    /// The run's rollout cohorts (empty: none, nothing more is recorded).
    cohorts: genesis::Cohorts,
    /// The orchestrator's cohort metric handles (not the orchestrator: its executor
    /// holds this journal while the run is live).
    cohort_metrics: Arc<genesis::CohortMetrics>,
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
        if !self.cohorts.is_empty() {
            let metrics = &self.cohort_metrics;
            for event in events {
                match event {
                    RunEvent::TaskSucceeded { duration_ms, .. } => {
                        metrics.record_task_succeeded(self.cohorts, *duration_ms as f64 / 1000.0)
                    }
                    RunEvent::TaskFailed { .. } => metrics.record_task_failed(self.cohorts),
                    _ => {}
                }
            }
        }
    }

    fn blocks(&self) -> bool {
        self.store.blocks()
    }
}

/// The `scope` label of [`catalogue::BUDGET_EXCEEDED_TOTAL`] for a budget scope, as the
/// catalogue documents it (`run`, `daily` or `subject_daily`).
fn scope_label(scope: BudgetScope) -> &'static str {
    match scope {
        BudgetScope::Run => "run",
        BudgetScope::Day => "daily",
        BudgetScope::SubjectDay => "subject_daily",
    }
}

/// Task and budget metrics for a journaled event. Money is not counted here:
/// `genesis_cost_usd` grows once per call where the cost arises (LLM calls in the
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

/// Counts the end of a run the executor never ran (refused at launch or resume,
/// unreadable, cancelled before it started) in `genesis_runs_total{status}`.
fn count_run_end(status: &'static str) {
    metrics::counter!(catalogue::RUNS_TOTAL, catalogue::labels::STATUS => status).increment(1);
}

/// Least time between two reads of today's spend while it cannot be read (see
/// [`RunManager::try_today`]): requests meanwhile are answered from the last failure.
pub(crate) const BUDGET_STATE_RETRY: Duration = Duration::from_secs(2);

/// Today's spend cannot be read from the run store, so the daily budget cannot be held:
/// new runs are refused (503 `budget_state`) and `/ready` fails until a read succeeds.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "today's spend cannot be read from the run store, so the daily budget (budget.per_day, budget.per_subject_day) cannot be held: new runs are refused until a read succeeds (retried every {}s) (rule: budget_state)",
    BUDGET_STATE_RETRY.as_secs()
)]
pub struct BudgetStateError {
    /// The failed read.
    #[source]
    source: Arc<StoreError>,
}

/// Start of the current UTC day, unix milliseconds.
fn day_start_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let day = 86_400_000u128;
    i64::try_from(now - now % day).unwrap_or(0)
}

/// Whole seconds until the next UTC day starts (at least 1), when daily budgets start
/// again: the `Retry-After` of a spent daily budget.
pub(crate) fn secs_until_next_day() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (86_400 - now % 86_400).max(1)
}

impl RunManager {
    /// A manager over `store`.
    pub fn new(orchestrator: Orchestrator, store: Arc<dyn RunStore>) -> Self {
        RunManager {
            orchestrator,
            store,
            live: Arc::new(Mutex::new(Lives::default())),
            tracker: tokio_util::task::TaskTracker::new(),
            day: Mutex::new(None),
            day_unreadable: Mutex::new(None),
            subject_days: Mutex::new((0, HashMap::new())),
            max_runs_per_subject: None,
            max_runs: None,
        }
    }

    /// Holds each subject to `max` runs starting or in progress at once
    /// (`server.max_runs_per_subject`; 0: no limit): one more is refused (429
    /// `max_runs_per_subject` at the API), so one API key cannot take every executor
    /// slot.
    #[must_use]
    pub fn with_max_runs_per_subject(mut self, max: usize) -> Self {
        self.max_runs_per_subject = (max > 0).then_some(max);
        self
    }

    /// Holds the server to `max` runs starting or in progress at once, whoever
    /// submitted them (`server.max_runs`; 0: no limit): one more new run is refused
    /// before anything is journaled (503 `max_runs` at the API). Resumed runs count but
    /// are never refused: accepted work is not dropped.
    #[must_use]
    pub fn with_max_runs(mut self, max: usize) -> Self {
        self.max_runs = (max > 0).then_some(max);
        self
    }

    /// Whether a new run of `subject` (from `client_ip`, which counts for anonymous
    /// callers) would be refused now by `server.max_runs_per_subject` or
    /// `server.max_runs`, counting nothing: the API asks before it plans, so a full
    /// server does not spend planning on work it will refuse. The answer can be stale
    /// by the time the run starts; [`RunManager::start`] checks again.
    ///
    /// # Errors
    /// `StartRunError::SubjectBusy`, `StartRunError::AnonymousBusy` or
    /// `StartRunError::ServerBusy`, naming the count and the limit.
    pub fn check_admission(
        &self,
        subject: &str,
        client_ip: Option<std::net::IpAddr>,
    ) -> Result<(), StartRunError> {
        let lives = self.lives();
        let key = limit_key(subject, client_ip);
        self.refusal(&lives, key.as_deref(), anonymous_ip(subject, client_ip))
            .map_or(Ok(()), Err)
    }

    /// Why a new run counted against `key` (see [`limit_key`]) is refused now, if it is;
    /// `anonymous_ip` is the client IP of an anonymous caller (whose key it is).
    fn refusal(
        &self,
        lives: &Lives,
        key: Option<&str>,
        anonymous_ip: Option<std::net::IpAddr>,
    ) -> Option<StartRunError> {
        if let (Some(max), Some(key)) = (self.max_runs_per_subject, key) {
            let running = lives.per_subject.get(key).copied().unwrap_or(0);
            if running >= max {
                return Some(match anonymous_ip {
                    Some(ip) => StartRunError::AnonymousBusy { ip, running, max },
                    None => StartRunError::SubjectBusy { running, max },
                });
            }
        }
        if let Some(max) = self.max_runs
            && lives.in_progress >= max
        {
            return Some(StartRunError::ServerBusy {
                running: lives.in_progress,
                max,
            });
        }
        None
    }

    /// Counts a run against `key` (its subject, see [`limit_key`]; `None`: no
    /// per-subject count) and the server's total. With `check` (a new run), `Err` with
    /// the refusal when either limit is reached, and nothing is counted; without (a
    /// resumed run, accepted before), it is always counted.
    fn admit(
        &self,
        key: Option<&str>,
        anonymous_ip: Option<std::net::IpAddr>,
        check: bool,
    ) -> Result<RunSlot, StartRunError> {
        let mut lives = self.lives();
        if check && let Some(refused) = self.refusal(&lives, key, anonymous_ip) {
            return Err(refused);
        }
        // A run without a per-subject key counts under a key no caller is limited by.
        let subject: Arc<str> = Arc::from(key.unwrap_or(""));
        *lives.per_subject.entry(Arc::clone(&subject)).or_insert(0) += 1;
        lives.in_progress += 1;
        metrics::gauge!(catalogue::RUNS_IN_PROGRESS).set(lives.in_progress as f64);
        Ok(RunSlot {
            live: Arc::clone(&self.live),
            subject,
        })
    }

    /// Runs starting or in progress in this process, resumed ones included: what
    /// `server.max_runs` counts (and `genesis_runs_in_progress` shows).
    pub fn in_progress(&self) -> usize {
        self.lives().in_progress
    }

    /// Runs in progress in this process.
    pub fn running(&self) -> usize {
        self.lives().runs.len()
    }

    /// Money spent today by all runs (runs in progress included, up to their last
    /// agent call); `None` while it cannot be read (`RunManager::try_today`).
    pub fn spent_today(&self) -> Option<Usd> {
        self.try_today().ok().map(|d| d.spent())
    }

    /// Whether the daily budget (`budget.per_day` or `budget.per_subject_day`) is set:
    /// only then does a store that cannot tell today's spend refuse runs.
    fn daily_budget(&self) -> bool {
        let budget = self.orchestrator.budget();
        budget.per_day.is_some() || budget.per_subject_day.is_some()
    }

    /// Today's shared spend. The first call of a (UTC) day starts it from what the
    /// store holds for the day (runs journaled before a restart); runs then charge it
    /// as they spend. Runs started before midnight keep charging the previous day's.
    /// The store is read without the lock held, so requests do not queue behind a read
    /// that waits for the journal's write; when two first calls race, the first total
    /// kept is the one everybody charges.
    ///
    /// This is a store call when the day's total is not known yet: it may block.
    ///
    /// # Errors
    /// [`BudgetStateError`] while the store cannot tell today's spend and a daily budget
    /// is set (audit S10 #5: the total started again from $0, so the daily budget could
    /// be spent twice): nothing is kept, and the store is asked again at most once per
    /// [`BUDGET_STATE_RETRY`], whoever calls meanwhile. Without a daily budget nothing
    /// depends on the total: it starts from $0, with an error line.
    pub(crate) fn try_today(&self) -> Result<DaySpend, BudgetStateError> {
        let start = day_start_ms();
        let lock = || {
            self.day
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((at, spend)) = lock().as_ref()
            && *at == start
        {
            return Ok(spend.clone());
        }
        let unreadable = || {
            self.day_unreadable
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((at, when, error)) = unreadable().as_ref()
            && *at == start
            && when.elapsed() < BUDGET_STATE_RETRY
        {
            return Err(error.clone());
        }
        let spent = match self.store.spent_since(start) {
            Ok(spent) => {
                if unreadable().take().is_some() {
                    tracing::info!(
                        spent_usd = spent.as_f64(),
                        "today's spend reads from the run store again; new runs are accepted"
                    );
                }
                spent
            }
            Err(e) if self.daily_budget() => {
                let error = BudgetStateError {
                    source: Arc::new(e),
                };
                let mut last = unreadable();
                // One line per outage (and per day), not one per retry.
                if last.as_ref().is_none_or(|(at, ..)| *at != start) {
                    tracing::error!(
                        rule = "budget_state",
                        error = %genesis::core::error_chain(&error),
                        "cannot read today's spend from the run store: new runs are refused and /ready fails until a read succeeds"
                    );
                }
                *last = Some((start, std::time::Instant::now(), error.clone()));
                return Err(error);
            }
            Err(e) => {
                tracing::error!(error = %genesis::core::error_chain(&e), "cannot read today's spend from the run store; starting from $0 (no daily budget is set)");
                Usd::ZERO
            }
        };
        let mut day = lock();
        match day.as_ref() {
            Some((at, spend)) if *at == start => Ok(spend.clone()),
            _ => {
                let spend = DaySpend::new(spent);
                *day = Some((start, spend.clone()));
                Ok(spend)
            }
        }
    }

    /// Today's spend of `subject`'s runs, when `budget.per_subject_day` is set (`None`
    /// otherwise): one total per subject and day, started from what the store holds for
    /// the subject today (its runs journaled before a restart, and its planning outside
    /// runs), then charged by its runs and planning as they spend. As in
    /// [`RunManager::today`], the store is read without the lock held.
    pub(crate) fn subject_today(&self, subject: &str) -> Option<DaySpend> {
        self.orchestrator.budget().per_subject_day?;
        let start = day_start_ms();
        let lock = || {
            let mut days = self
                .subject_days
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if days.0 != start {
                *days = (start, HashMap::new());
            }
            days
        };
        if let Some(spend) = lock().1.get(subject) {
            return Some(spend.clone());
        }
        let spent = match self.store.subject_spent_since(start, subject) {
            Ok(spent) => spent,
            Err(e) => {
                // Fail closed: everyone's spend today is an upper bound of the subject's.
                // Should that not read either, nothing is kept (runs are refused then,
                // rule `budget_state`; a plan is checked without the subject's day).
                tracing::error!(subject, error = %genesis::core::error_chain(&e), "cannot read the subject's spend today from the run store; counting the whole day's");
                self.spent_today()?
            }
        };
        let spend = lock()
            .1
            .entry(subject.to_owned())
            .or_insert_with(|| DaySpend::new(spent))
            .clone();
        Some(spend)
    }

    /// Journals a run with the subject it runs for, then starts it. Returns the run id
    /// and whether it already existed (same idempotency key). The budget journaled (and
    /// reported as the run's `budget`) is the cap in force: `budget` when given, else
    /// the configured `budget.per_run`. Its tasks are counted in the subject's rollout
    /// cohorts now ([`Orchestrator::cohorts`]).
    ///
    /// A new run is first held to `server.max_runs` and its subject's
    /// `server.max_runs_per_subject` (an anonymous run started here, with no client IP,
    /// only to the first): refused, nothing is journaled, unless a run is journaled
    /// under the same idempotency key already (it is answered with that run).
    ///
    /// # Errors
    /// Store failures (nothing was accepted), an invalid plan (a budget above
    /// `budget.per_run`; nothing was journaled then), or a limit reached
    /// (`StartRunError::ServerBusy`, `StartRunError::SubjectBusy`).
    pub fn start(
        &self,
        plan: Plan,
        budget: Option<Usd>,
        idempotency_key: Option<&str>,
        subject: &str,
        correlation_id: Option<&str>,
    ) -> Result<(RunId, bool), StartRunError> {
        let cohorts = self.orchestrator.cohorts(subject);
        self.start_in(
            plan,
            budget,
            idempotency_key,
            subject,
            None,
            correlation_id,
            cohorts,
        )
    }

    /// [`RunManager::start`] for a run whose tasks are counted in `cohorts`: the API
    /// passes its request's, so a request and its run are in the same cohorts; and
    /// from `client_ip`, by which an anonymous caller's runs are counted
    /// (`StartRunError::AnonymousBusy`).
    ///
    /// # Errors
    /// As [`RunManager::start`].
    #[expect(
        clippy::too_many_arguments,
        reason = "crate-private; its two callers (start, the API) name every argument"
    )]
    pub(crate) fn start_in(
        &self,
        plan: Plan,
        budget: Option<Usd>,
        idempotency_key: Option<&str>,
        subject: &str,
        client_ip: Option<std::net::IpAddr>,
        correlation_id: Option<&str>,
        cohorts: genesis::Cohorts,
    ) -> Result<(RunId, bool), StartRunError> {
        let budget = self.orchestrator.run_budget(budget)?;
        // Callers without credentials (an open API) all share the subject `anonymous`:
        // one cap for all of them would be a server-wide cap, so they are counted per
        // client IP instead.
        let key = limit_key(subject, client_ip);
        // A new run is held to the daily budget, which needs today's spend.
        let admitted = self
            .try_today()
            .map_err(StartRunError::from)
            .and_then(|day| {
                self.admit(key.as_deref(), anonymous_ip(subject, client_ip), true)
                    .map(|slot| (slot, day))
            });
        let (slot, day) = match admitted {
            Ok(admitted) => admitted,
            Err(refused) => {
                // A retry of a run already journaled under its key is answered with that
                // run, not refused.
                if let Some(key) = idempotency_key
                    && let Some(existing) =
                        self.store.run_for_idempotency_key(Some(subject), key)?
                {
                    return Ok((RunId::new(existing), true));
                }
                return Err(refused);
            }
        };
        let id = genesis::new_run_id();
        // Known as starting before it is journaled: a cancel that comes once it is
        // journaled (answered to a retry) but before it is live is not lost.
        self.lives().starting.insert(id.clone(), false);
        let created = self
            .store
            .create_run(&id, &plan, budget, idempotency_key, Some(subject));
        let id = match created {
            Ok(Created::New(created)) => created,
            Ok(Created::Existing(existing)) => {
                self.lives().starting.remove(&id);
                return Ok((existing, true));
            }
            Err(e) => {
                self.lives().starting.remove(&id);
                return Err(e.into());
            }
        };
        let resumed = Vec::new();
        let launched = self.launch(
            id.clone(),
            plan,
            budget,
            resumed,
            Usd::ZERO,
            (slot, day),
            subject,
            cohorts,
            correlation_id,
        );
        if let Err(e) = launched {
            self.lives().starting.remove(&id);
            // Journaled but cannot run: record it as failed so it is not resumed.
            self.reject(&id, &e, Usd::ZERO, (0, 0));
            return Err(e.into());
        }
        Ok((id, false))
    }

    /// The live-run table (a panic elsewhere while it was held leaves it consistent:
    /// each change is one insert or remove).
    fn lives(&self) -> std::sync::MutexGuard<'_, Lives> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Journals that a run cannot run, and why (naming the rule and value), and ends it
    /// as failed with what it had spent, so it is not resumed again.
    fn reject(&self, id: &RunId, error: &GenesisError, spent: Usd, tokens: (u64, u64)) {
        self.fail(id, error.rule(), error.to_string(), spent, tokens);
    }

    /// Journals `run_rejected` with `rule` and `reason`, then `run_finished` (`failed`)
    /// with `spent` (the store keeps the larger of it and the journaled cost) and the
    /// run's token totals so far, (input, output).
    fn fail(&self, id: &RunId, rule: String, reason: String, spent: Usd, tokens: (u64, u64)) {
        let events = [
            RunEvent::RunRejected { rule, reason },
            RunEvent::RunFinished {
                status: genesis::run::RunStatus::Failed,
                cost: spent,
                input_tokens: tokens.0,
                output_tokens: tokens.1,
            },
        ];
        match self.store.record_all(id, &events) {
            // It ended without reaching the executor (which counts the runs it ends).
            Ok(()) => count_run_end("failed"),
            Err(e) => {
                tracing::error!(run_id = %id, error = %genesis::core::error_chain(&*e), "cannot journal that the run failed to start");
            }
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "private; the two callers name every argument (a new run, a resumed one)"
    )]
    fn launch(
        &self,
        id: RunId,
        plan: Plan,
        budget: Option<Usd>,
        resumed: Vec<genesis::run::TaskReport>,
        spent: Usd,
        (slot, day): (RunSlot, DaySpend),
        subject: &str,
        cohorts: genesis::Cohorts,
        correlation_id: Option<&str>,
    ) -> Result<(), GenesisError> {
        // A cancel journaled while the run was starting, before it is handed to the
        // executor: the run ends cancelled here and calls no agent. (Checked again once
        // it is live, for a cancel that comes in between; the executor might by then
        // have begun a task.)
        let cancelled_before_launch = {
            let mut lives = self.lives();
            let requested = lives.starting.get(&id).copied().unwrap_or(false);
            if requested {
                lives.starting.remove(&id);
            }
            requested
        };
        if cancelled_before_launch {
            tracing::info!(run_id = %id, "run was cancelled while starting");
            self.end_cancelled_if_running(id.as_str());
            return Ok(());
        }
        let options = RunOptions {
            subject: Some(subject.to_owned()),
            correlation_id: correlation_id.map(str::to_owned),
            run_id: Some(id.clone()),
            journal: Some(Arc::new(MeteredJournal {
                store: Arc::clone(&self.store),
                cohorts,
                cohort_metrics: Arc::clone(self.orchestrator.cohort_metrics()),
            })),
            resumed,
            budget,
            day: Some(day),
            subject_day: self.subject_today(subject),
            spent,
            ..RunOptions::default()
        };
        let handle = self.orchestrator.execute(plan, options)?;
        let live = Live {
            cancel: handle.cancellation(),
            events: handle.sender(),
        };
        let cancel_requested = {
            let mut lives = self.lives();
            lives.runs.insert(id.clone(), live);
            lives.starting.remove(&id).unwrap_or(false)
        };
        if cancel_requested {
            // Its cancel was journaled (and answered 202) before it was live.
            tracing::info!(run_id = %id, "run was cancelled while starting");
            handle.cancellation().cancel();
        }
        let registry = Arc::clone(&self.live);
        let correlation_id = correlation_id.map(str::to_owned);
        self.tracker.spawn(async move {
            let result = handle.wait().await;
            log_run_finished(&result, correlation_id.as_deref());
            registry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .runs
                .remove(&id);
            // The subject's slot is free once the run is no longer live.
            drop(slot);
        });
        Ok(())
    }

    /// Resumes every run the store still marks running: finished tasks keep their
    /// results, tasks that were in flight run again. Each run on its own: one that
    /// cannot resume (its stored rows do not decode, or its plan breaks the limits now)
    /// is journaled as failed with the rule and reason, and the others still resume.
    ///
    /// # Errors
    /// Store failures (nothing was resumed or failed), a store that does not take
    /// writes ([`RunStore::probe_write`]) among them: a run resumed onto it would call
    /// its agents and journal nothing.
    pub fn resume(&self) -> Result<usize, StoreError> {
        self.store.probe_write()?;
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
                    // Its task rows do not read back either: no token totals.
                    self.fail(&id, CORRUPT_RULE.to_owned(), reason, Usd::ZERO, (0, 0));
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
            let tokens = run.token_totals();
            let resumed: Vec<_> = run
                .tasks
                .into_iter()
                .filter(|t| t.status.is_terminal())
                .collect();
            tracing::info!(run_id = %run.id, finished_tasks = done, spent_usd = run.cost.as_f64(), "resuming run");
            // For the subject it was started for (runs journaled before subjects were:
            // `anonymous`, as they ran), and routed as its stored plan was.
            let subject = run.subject.as_deref().unwrap_or("anonymous");
            // The cohorts it was launched in are not journaled: its tasks from here are
            // counted in the subject's cohorts now (the same, unless a flag moved).
            let cohorts = self.orchestrator.cohorts(subject);
            let budget = self.resumed_budget(&run.id, run.budget);
            // Accepted work: counted against its subject's limit and the server's, never
            // refused by them (an anonymous run's client IP is not journaled: it counts
            // under no per-IP key).
            let key = (subject != crate::middleware::ANONYMOUS).then_some(subject);
            let Ok(slot) = self.admit(key, None, false) else {
                continue;
            };
            // Accepted work resumes even while today's spend cannot be read; it then
            // charges a total of its own from $0, held to budget.per_run.
            let day = self.try_today().unwrap_or_else(|e| {
                tracing::warn!(run_id = %run.id, error = %genesis::core::error_chain(&e), "resuming the run without today's spend: its calls are held to its own budget, not to what was spent today");
                DaySpend::new(Usd::ZERO)
            });
            match self.launch(
                run.id.clone(),
                run.plan,
                budget,
                resumed,
                run.cost,
                (slot, day),
                subject,
                cohorts,
                None,
            ) {
                Ok(()) => n += 1,
                Err(e) => {
                    tracing::error!(run_id = %run.id, rule = %e.rule(), error = %genesis::core::error_chain(&e), "cannot resume run; marking it failed");
                    self.reject(&run.id, &e, run.cost, tokens);
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
        tracing::info!(run_id = %run.id, spent_usd = run.cost.as_f64(), "run was cancelled before the restart; ending it as cancelled");
        let events = run.cancellation();
        match self.store.record_all(&run.id, &events) {
            Ok(()) => {
                events.iter().for_each(record_metrics);
                // Ended here, not by the executor (which counts the runs it ends).
                count_run_end("cancelled");
            }
            Err(e) => {
                tracing::error!(run_id = %run.id, error = %genesis::core::error_chain(&*e), "cannot journal the end of a cancelled run; it stays running until the next start");
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
                tracing::warn!(run_id = %id, budget_usd = stored.as_f64(), per_run_usd = cap.as_f64(), "resumed run's budget is above budget.per_run; capping it");
                Some(cap)
            }
            (stored, _) => stored,
        }
    }

    /// True while this process executes the run `id`.
    pub fn is_live(&self, id: &str) -> bool {
        self.lives().runs.contains_key(id)
    }

    /// Cancels a run that has not ended. The request is journaled first, durably
    /// ([`RunStore::request_cancel`]), and only then is the run stopped, so a cancel
    /// reported as done survives a crash: the run is ended as cancelled at the next
    /// start, never resumed. A run journaled but not yet live here (a retry with its
    /// idempotency key is answered as soon as it is journaled) is cancelled as it
    /// starts. `Ok(false)` when the store has no unfinished run `id` (unknown, or
    /// ended before the request was journaled): nothing was journaled nor stopped.
    /// This is a store call: it blocks.
    ///
    /// # Errors
    /// Store failures: nothing was journaled and the run goes on.
    pub fn cancel(&self, id: &str) -> Result<bool, StoreError> {
        if !self.store.request_cancel(id)? {
            return Ok(false);
        }
        {
            let mut lives = self.lives();
            if let Some(run) = lives.runs.get(id) {
                run.cancel.cancel();
                return Ok(true);
            }
            if let Some(requested) = lives.starting.get_mut(id) {
                *requested = true;
                return Ok(true);
            }
        }
        // Not running in this process: it ended after the request was journaled (its
        // journal says how), or nothing runs it (left journaled by `server.resume_runs
        // = false`, or by a failed write at the last start). Such a run ends cancelled
        // now, calling no agent, as the next start would end it; should that write fail,
        // the next start still does.
        self.end_cancelled_if_running(id);
        Ok(true)
    }

    /// Ends run `id` as cancelled ([`RunManager::end_cancelled`]) if the store still
    /// holds it as running; when it cannot be read, the next start ends it.
    fn end_cancelled_if_running(&self, id: &str) {
        match self.store.get_run(id) {
            Ok(Some(run)) if run.status == RunStatus::Running => self.end_cancelled(&run),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(run_id = %id, error = %genesis::core::error_chain(&e), "cannot read the run to end it as cancelled; the next start does");
            }
        }
    }

    /// A subscription to a live run's events (a wake-up signal for event streams).
    pub fn subscribe(&self, id: &str) -> Option<broadcast::Receiver<RunEvent>> {
        self.lives().runs.get(id).map(|r| r.events.subscribe())
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
    /// The caller already has `server.max_runs_per_subject` runs starting or running.
    #[error(
        "this caller has {running} runs in progress, the most server.max_runs_per_subject allows ({max}): wait for one to finish (rule: max_runs_per_subject)"
    )]
    SubjectBusy {
        /// Its runs starting or in progress.
        running: usize,
        /// The limit.
        max: usize,
    },
    /// A caller without credentials whose client IP already has
    /// `server.max_runs_per_subject` anonymous runs starting or running.
    #[error(
        "client {} has {running} anonymous runs in progress, the most server.max_runs_per_subject allows per client IP without credentials ({max}): wait for one to finish (rule: max_runs_per_subject)",
        crate::proxy::network_label(*.ip)
    )]
    AnonymousBusy {
        /// The client IP; for IPv6, its /64 network ([`crate::proxy::client_network`]).
        ip: std::net::IpAddr,
        /// Its anonymous runs starting or in progress.
        running: usize,
        /// The limit.
        max: usize,
    },
    /// Today's spend cannot be read from the store, so the daily budget cannot be held:
    /// the run was not accepted.
    #[error(transparent)]
    BudgetState(#[from] BudgetStateError),
    /// The server already has `server.max_runs` runs starting or running; a new run is
    /// refused before anything is journaled (runs accepted before go on).
    #[error(
        "the server has {running} runs in progress, the most server.max_runs allows ({max}): retry after some finish (rule: max_runs)"
    )]
    ServerBusy {
        /// Runs starting or in progress on the server.
        running: usize,
        /// The limit.
        max: usize,
    },
}

/// Logs the end of a run: a failed run at `error` (an operator must look: the failed
/// task count and the first failure's reason), a cancelled one at `info` (a client or an operator
/// asked for it), a succeeded one at `info`. The cost is
/// a number of US dollars (`cost_usd`), not the `Usd` display text; `correlation_id`
/// is the one of the request that started the run (absent for resumed runs).
fn log_run_finished(result: &genesis::run::RunResult, correlation_id: Option<&str>) {
    let cost_usd = result.cost.as_f64();
    if let Some(stopped) = &result.interrupted {
        // The executor logged the journal's error at `error`, once for the run.
        tracing::warn!(
            run_id = %result.run_id,
            correlation_id,
            rule = %stopped.rule,
            cost_usd,
            "run stopped: its events cannot be journaled; it stays running in the store and resumes at the next start"
        );
        return;
    }
    match result.status {
        genesis::run::RunStatus::Failed => {
            let (failed, first) = result.failures();
            tracing::error!(
                run_id = %result.run_id,
                correlation_id,
                status = result.status.as_str(),
                failed_tasks = failed,
                first_failed_task = first.map(|t| t.task_id.to_string()),
                first_failure = first.and_then(|t| t.error.as_deref()),
                cost_usd,
                input_tokens = result.input_tokens,
                output_tokens = result.output_tokens,
                "run failed"
            );
        }
        status => tracing::info!(
            run_id = %result.run_id,
            correlation_id,
            status = status.as_str(),
            cost_usd,
            input_tokens = result.input_tokens,
            output_tokens = result.output_tokens,
            "run finished"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genesis::run::{Agent, AgentError, AgentOutput, AgentRequest, AgentSet, RunStatus};
    use genesis::store::{RunScope, RunSummary, SqliteStore, StoredEvent};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    type JournalResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// A SQLite store whose `create_run` stops after the run is journaled, until the
    /// test lets it go: the window between an idempotent retry's 202 and the run going
    /// live.
    struct Gated {
        inner: SqliteStore,
        journaled: Mutex<mpsc::Sender<()>>,
        go_on: Mutex<mpsc::Receiver<()>>,
    }

    impl RunJournal for Gated {
        fn record(&self, run_id: &RunId, event: &RunEvent) -> JournalResult {
            self.inner.record(run_id, event)
        }
        fn record_all(&self, run_id: &RunId, events: &[RunEvent]) -> JournalResult {
            self.inner.record_all(run_id, events)
        }
        fn record_groups(&self, groups: &[(&RunId, &[RunEvent])]) -> Vec<JournalResult> {
            self.inner.record_groups(groups)
        }
    }

    impl RunStore for Gated {
        fn create_run(
            &self,
            id: &RunId,
            plan: &Plan,
            budget: Option<Usd>,
            idempotency_key: Option<&str>,
            subject: Option<&str>,
        ) -> Result<Created, StoreError> {
            let created = self
                .inner
                .create_run(id, plan, budget, idempotency_key, subject)?;
            self.journaled.lock().unwrap().send(()).unwrap();
            self.go_on.lock().unwrap().recv().unwrap();
            Ok(created)
        }
        fn request_cancel(&self, id: &str) -> Result<bool, StoreError> {
            self.inner.request_cancel(id)
        }
        fn run_for_idempotency_key(
            &self,
            subject: Option<&str>,
            key: &str,
        ) -> Result<Option<String>, StoreError> {
            self.inner.run_for_idempotency_key(subject, key)
        }
        fn run_in_scope(&self, id: &str, scope: RunScope<'_>) -> Result<bool, StoreError> {
            self.inner.run_in_scope(id, scope)
        }
        fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
            self.inner.get_run(id)
        }
        fn run_summary(&self, id: &str) -> Result<Option<RunSummary>, StoreError> {
            self.inner.run_summary(id)
        }
        fn list_runs_in(
            &self,
            scope: RunScope<'_>,
            status: Option<RunStatus>,
            limit: usize,
            cursor: Option<&str>,
        ) -> Result<Vec<RunSummary>, StoreError> {
            self.inner.list_runs_in(scope, status, limit, cursor)
        }
        fn unfinished_runs(&self) -> Result<Vec<UnfinishedRun>, StoreError> {
            self.inner.unfinished_runs()
        }
        fn events_since(&self, id: &str, after: i64) -> Result<Vec<StoredEvent>, StoreError> {
            self.inner.events_since(id, after)
        }
        fn spent_since(&self, since_ms: i64) -> Result<Usd, StoreError> {
            self.inner.spent_since(since_ms)
        }
        fn subject_spent_since(&self, since_ms: i64, subject: &str) -> Result<Usd, StoreError> {
            self.inner.subject_spent_since(since_ms, subject)
        }
        fn record_spend(&self, cost: Usd, subject: Option<&str>) -> Result<(), StoreError> {
            self.inner.record_spend(cost, subject)
        }
        fn ping(&self) -> bool {
            self.inner.ping()
        }
    }

    /// Counts its calls.
    struct Counting(Arc<AtomicUsize>);

    #[async_trait::async_trait]
    impl Agent for Counting {
        async fn execute(&self, r: AgentRequest) -> Result<AgentOutput, AgentError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(AgentOutput {
                text: format!("out {}", r.task.id),
                ..Default::default()
            })
        }
    }

    /// A cancel journaled while the run is journaled but not yet live (a retry with
    /// the same idempotency key is answered 202 in that window) is kept: the run is
    /// cancelled as it starts and calls no agent. It used to answer "not running".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancel_between_journaling_and_launch_cancels_the_run_as_it_starts() {
        let calls = Arc::new(AtomicUsize::new(0));
        let genesis = Orchestrator::builder()
            .agents(AgentSet::new().with_fallback(Arc::new(Counting(Arc::clone(&calls)))))
            .build()
            .unwrap();
        let plan = genesis
            .plan_sync("Build a SaaS business for invoices")
            .unwrap();
        let (journaled_tx, journaled) = mpsc::channel();
        let (go_on, go_on_rx) = mpsc::channel();
        let store = Arc::new(Gated {
            inner: SqliteStore::in_memory().unwrap(),
            journaled: Mutex::new(journaled_tx),
            go_on: Mutex::new(go_on_rx),
        });
        let runs = Arc::new(RunManager::new(
            genesis,
            Arc::clone(&store) as Arc<dyn RunStore>,
        ));
        let starting = Arc::clone(&runs);
        let started = tokio::task::spawn_blocking(move || {
            starting.start(plan, None, Some("key-1"), "tester", None)
        });
        tokio::task::spawn_blocking(move || journaled.recv().unwrap())
            .await
            .unwrap();
        // Journaled (a retry would now be answered 202 with this id), not yet live.
        let id = store
            .run_for_idempotency_key(Some("tester"), "key-1")
            .unwrap()
            .unwrap();
        assert!(!runs.is_live(&id));
        assert!(
            runs.cancel(&id).unwrap(),
            "the cancel of a journaled run is accepted"
        );
        go_on.send(()).unwrap();
        let (started_id, existed) = started.await.unwrap().unwrap();
        assert_eq!((started_id.as_str(), existed), (id.as_str(), false));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let run = loop {
            let run = store.get_run(&id).unwrap().unwrap();
            if run.status != RunStatus::Running || tokio::time::Instant::now() > deadline {
                break run;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(run.status, RunStatus::Cancelled, "{run:#?}");
        assert!(run.cancel_requested_at_ms.is_some());
        assert_eq!(calls.load(Ordering::SeqCst), 0, "no agent was called");
        assert_eq!(runs.lives().starting.len(), 0, "nothing left behind");
    }

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
                model: None,
                output: "done".into(),
                flagged: None,
                truncated: false,
                cost: usd(0.25),
                input_tokens: 0,
                output_tokens: 0,
                attempts: 1,
                duration_ms: 10,
                queued_ms: 0,
            });
            record_metrics(&refused(BudgetScope::Day));
            record_metrics(&refused(BudgetScope::Day));
            record_metrics(&refused(BudgetScope::Run));
        });
        let text = handle.render();
        assert_eq!(series(&text, catalogue::COST_USD), 0.0, "{text}");
        let scope = |s: &str| format!("{}{{scope=\"{s}\"}}", catalogue::BUDGET_EXCEEDED_TOTAL);
        assert_eq!(series(&text, &scope("daily")), 2.0, "{text}");
        assert_eq!(series(&text, &scope("run")), 1.0, "{text}");
        assert_eq!(series(&text, &scope("day")), 0.0, "{text}");
    }

    /// Audit S10 #5: today's spend that does not read (here the real SQLite file's
    /// `spend` table renamed away) is an error, not $0; the store is not asked again
    /// before [`BUDGET_STATE_RETRY`], and a read that succeeds afterwards ends it.
    #[test]
    fn unreadable_spend_fails_closed_and_is_read_again_at_most_every_few_seconds() {
        let dir = crate::tests::TempDir::new("spend-unreadable");
        let store = Arc::new(SqliteStore::open(&dir).unwrap());
        let db = rusqlite::Connection::open(dir.join("genesis.db")).unwrap();
        let genesis = Orchestrator::builder()
            .budget(genesis::daao::Budget {
                per_run: None,
                per_day: Some(Usd::new(5.0).unwrap()),
                per_subject_day: None,
            })
            .build()
            .unwrap();
        let runs = RunManager::new(genesis, store as Arc<dyn RunStore>);
        db.execute_batch("ALTER TABLE spend RENAME TO spend_aside")
            .unwrap();
        let failed_at = std::time::Instant::now();
        let e = runs.try_today().unwrap_err();
        let chain = genesis::core::error_chain(&e);
        assert!(chain.contains("rule: budget_state"), "{chain}");
        assert!(chain.contains("no such table: spend"), "{chain}");
        assert_eq!(runs.spent_today(), None);
        db.execute_batch("ALTER TABLE spend_aside RENAME TO spend")
            .unwrap();
        let again = runs.try_today();
        if failed_at.elapsed() < BUDGET_STATE_RETRY {
            assert!(again.is_err(), "the store was read again at once");
        }
        let deadline = std::time::Instant::now() + BUDGET_STATE_RETRY * 5;
        while runs.try_today().is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "today's spend still refused after the store was repaired"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(runs.spent_today(), Some(Usd::ZERO));
    }

    #[test]
    fn the_next_day_is_at_most_a_day_away_and_starts_at_midnight_utc() {
        let before = day_start_ms();
        let wait = secs_until_next_day();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!((1..=86_400).contains(&wait), "{wait}");
        // Today's start plus a day, give or take the second between the two reads.
        let next = (now + wait) as i64 * 1000;
        assert!(
            (next - (before + 86_400_000)).abs() <= 1000,
            "{next} vs {before}"
        );
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
