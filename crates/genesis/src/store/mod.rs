//! Durable run storage.
//!
//! A run is journaled before it is acknowledged: [`RunStore::create_run`] commits the run
//! and its plan, then the executor journals every [`RunEvent`] (task finished, failed,
//! ...) through the store's [`RunJournal`] implementation before it releases dependents.
//! After a crash, [`RunStore::unfinished_runs`] lists what to resume; tasks that were in
//! flight are re-queued, finished tasks are not run again — unless the run was cancelled
//! before the crash ([`RunRecord::was_cancelled`]): then nothing of it runs again and
//! [`RunRecord::cancellation`] ends it as `cancelled`. It reads each run on its own:
//! a run whose stored rows no longer decode is listed as [`UnfinishedRun::Unreadable`]
//! (for the caller to fail it) and does not keep the other runs from resuming.
//!
//! `SqliteStore` is the embedded default (one file in the data directory; the `sqlite`
//! feature, on by default). The trait leaves room for a networked store, and a build
//! without `sqlite` keeps the trait and the record types for one.

#[cfg(feature = "sqlite")]
mod sqlite;

use genesis_core::{RunId, Usd};
use serde::{Deserialize, Serialize};

use crate::Plan;
use crate::run::{RunEvent, RunJournal, RunStatus, TaskReport, TaskStatus};

#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// A stored run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunRecord {
    /// The run id.
    pub id: RunId,
    /// The request.
    pub request: String,
    /// Current status.
    pub status: RunStatus,
    /// The plan being executed.
    pub plan: Plan,
    /// Per-task state, in plan order (tasks added during the run at the end).
    pub tasks: Vec<TaskReport>,
    /// Money spent so far.
    pub cost: Usd,
    /// The run budget as journaled by [`RunStore::create_run`]: the server journals the
    /// cap in force for the run (the `budget_usd` it was asked for, else
    /// `budget.per_run`); `None` when nothing capped it.
    pub budget: Option<Usd>,
    /// The aggregated answer once the run ended: the outputs of its top-level tasks.
    /// `None` while it runs, and when it ended without any (failed or cancelled before a
    /// top-level task succeeded).
    pub answer: Option<String>,
    /// The client's idempotency key, if it sent one. A key is its subject's own: the
    /// same key sent for another subject names another run (see
    /// [`RunStore::create_run`]).
    pub idempotency_key: Option<String>,
    /// Who started the run (the subject its feature flags are evaluated for, passed to
    /// agents): resume it with this as [`crate::RunOptions::subject`]. `None` for runs
    /// stored before subjects were journaled (they resume as `anonymous`). Not
    /// serialised: a subject identifies a caller (the server uses the `x-agent-id`
    /// header or a digest of the API key, never the key), so it stays out of API
    /// answers.
    #[serde(default, skip_serializing)]
    pub subject: Option<String>,
    /// When a cancel of the run was requested ([`RunStore::request_cancel`]), unix
    /// milliseconds; `None` when nobody asked (and for runs stored before requests were
    /// journaled). A run still `running` with a request is ended as cancelled, not
    /// resumed, after a restart.
    #[serde(default)]
    pub cancel_requested_at_ms: Option<i64>,
    /// Creation time, unix milliseconds.
    pub created_at_ms: i64,
    /// Last update, unix milliseconds.
    pub updated_at_ms: i64,
}

/// The reason of the `task_skipped` events that end the tasks of a cancelled run; the
/// store keeps such tasks as [`TaskStatus::Cancelled`].
pub const RUN_CANCELLED: &str = "run cancelled";

impl RunRecord {
    /// True when the run ended without succeeding but has an answer: the outputs of
    /// the top-level tasks that did succeed, without those that did not. The server
    /// says so beside the answer (`partial`), so a client that reads only the answer
    /// is not handed part of one as if it were whole.
    pub fn is_partial(&self) -> bool {
        self.answer.is_some() && self.status != RunStatus::Succeeded
    }

    /// True when the run was cancelled before it finished, so it must not be resumed: a
    /// cancel was requested ([`RunStore::request_cancel`]), or the journal already holds
    /// tasks ended as cancelled (the executor journals those `task_skipped` events only
    /// when the run is cancelled, in a write before its `run_finished`: a crash between
    /// the two leaves the run `running`). End it with [`RunRecord::cancellation`].
    pub fn was_cancelled(&self) -> bool {
        self.cancel_requested_at_ms.is_some()
            || self.tasks.iter().any(|t| t.status == TaskStatus::Cancelled)
    }

    /// The events that end the run as cancelled without running anything more, as the
    /// executor ends a run cancelled while it runs: `task_skipped` with reason
    /// [`RUN_CANCELLED`] for every task not finished (pending, in flight at the crash),
    /// then `run_finished` with status `cancelled`, the journaled cost and the
    /// journaled token totals ([`RunRecord::token_totals`]; the tokens of calls in
    /// flight at the crash were never journaled). Journal them in one write
    /// ([`RunJournal::record_all`]): all or none.
    pub fn cancellation(&self) -> Vec<RunEvent> {
        let (input_tokens, output_tokens) = self.token_totals();
        self.tasks
            .iter()
            .filter(|t| !t.status.is_terminal())
            .map(|t| RunEvent::TaskSkipped {
                task_id: t.task_id.clone(),
                reason: RUN_CANCELLED.to_owned(),
                input_tokens: t.input_tokens,
                output_tokens: t.output_tokens,
                cost: t.cost,
                attempts: t.attempts,
            })
            .chain(std::iter::once(RunEvent::RunFinished {
                status: RunStatus::Cancelled,
                cost: self.cost,
                input_tokens,
                output_tokens,
            }))
            .collect()
    }

    /// The run's token totals so far, (input, output): the sum over its tasks of what
    /// their agents reported, whatever the task's end (succeeded, failed, skipped,
    /// cancelled), as journaled, plus its planning's ([`Plan::planning`]). A
    /// `run_finished` journaled for the run outside the executor (cancelled or rejected
    /// after a restart) carries these.
    pub fn token_totals(&self) -> (u64, u64) {
        let planned = self
            .plan
            .planning
            .map_or((0, 0), |p| (p.input_tokens, p.output_tokens));
        self.tasks.iter().fold(planned, |(i, o), t| {
            (
                i.saturating_add(t.input_tokens),
                o.saturating_add(t.output_tokens),
            )
        })
    }
}

/// Whose runs a read sees: every run, or the runs of one subject.
///
/// The server reads a run for a caller in the caller's scope, so another subject's run
/// reads as a missing one. A run stored before subjects were journaled (no subject) is
/// in [`RunScope::All`] only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunScope<'a> {
    /// Every run, whoever it was started for.
    All,
    /// Only the runs journaled for this subject ([`RunRecord::subject`]).
    Subject(&'a str),
}

impl RunScope<'_> {
    /// True when a run journaled for `subject` is in this scope.
    pub fn contains(&self, subject: Option<&str>) -> bool {
        match self {
            RunScope::All => true,
            RunScope::Subject(s) => subject == Some(*s),
        }
    }
}

/// One row of a run listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunSummary {
    /// The run id.
    pub id: RunId,
    /// Current status.
    pub status: RunStatus,
    /// The request (first 200 characters).
    pub request: String,
    /// Money spent so far.
    pub cost: Usd,
    /// Creation time, unix milliseconds.
    pub created_at_ms: i64,
    /// Who started it (the verified agent id, or `key:` / `admin:` and a digest of the
    /// API key); `None` for runs stored before subjects were journaled. Not serialised,
    /// as [`RunRecord::subject`]: the server shows it only to callers that see every
    /// run (operators).
    #[serde(default, skip_serializing)]
    pub subject: Option<String>,
}

/// Where a page of [`RunStore::list_runs`] ends: the creation time and id of its last
/// run. Its text form, `<created_at_ms>.<id>` ([`std::fmt::Display`],
/// [`ListCursor::parse`]), is the `next_cursor` of the HTTP API: an opaque token to
/// clients. It does not need the run's row, so a page still follows after that run
/// was deleted (`server.retention`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    /// Creation time of the last run of the previous page, unix milliseconds.
    pub created_at_ms: i64,
    /// Its id (ties on `created_at_ms` are ordered by id).
    pub id: String,
}

impl ListCursor {
    /// The cursor after `run`.
    pub fn after(run: &RunSummary) -> Self {
        ListCursor {
            created_at_ms: run.created_at_ms,
            id: run.id.to_string(),
        }
    }

    /// Reads a cursor token: decimal digits, `.`, then a non-empty id. `None` for
    /// anything else (a plain run id: run ids never start with digits and a dot).
    pub fn parse(token: &str) -> Option<Self> {
        let (at, id) = token.split_once('.')?;
        if at.is_empty() || id.is_empty() || !at.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(ListCursor {
            created_at_ms: at.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

impl std::fmt::Display for ListCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_at_ms, self.id)
    }
}

/// A stored event with its sequence number (for server-sent event replay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Sequence number within the run, from 1.
    pub seq: i64,
    /// The event.
    pub event: RunEvent,
}

/// A run the store still marks running, as [`RunStore::unfinished_runs`] read it back.
#[derive(Debug)]
pub enum UnfinishedRun {
    /// Its plan and task states decode: resume it.
    Readable(Box<RunRecord>),
    /// Its stored plan or task rows do not decode, so it cannot resume. Its events
    /// can still be journaled (e.g. `run_rejected` and `run_finished`).
    Unreadable {
        /// The run.
        id: RunId,
        /// Why it does not read back (usually [`StoreError::Corrupt`]).
        error: StoreError,
    },
}

/// What [`RunStore::create_run`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A new run was recorded.
    New(RunId),
    /// A run with the same idempotency key already exists: this is its id.
    Existing(RunId),
}

/// Storage errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be opened or set up (permissions, a read-only or
    /// full disk, a file that is not a database). Only with the `sqlite` feature.
    #[cfg(feature = "sqlite")]
    #[error("cannot open the run store {path}")]
    Open {
        /// The database file.
        path: String,
        /// The driver error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database failed (only with the `sqlite` feature).
    #[cfg(feature = "sqlite")]
    #[error("run store database error")]
    Database {
        /// The driver error.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored value could not be decoded.
    #[error("stored {what} for run {run} is corrupt")]
    Corrupt {
        /// The run.
        run: String,
        /// Which value.
        what: &'static str,
        /// The decoder error.
        #[source]
        source: serde_json::Error,
    },
    /// The data directory cannot be used.
    #[error("cannot use data directory {path}")]
    Io {
        /// The directory.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store's lock was poisoned by a panic.
    #[error("run store lock poisoned")]
    Poisoned,
    /// A listing cursor that is neither a [`ListCursor`] token nor the id of a stored
    /// run.
    #[error("cursor {cursor:?} is neither a next_cursor token nor the id of a stored run")]
    UnknownCursor {
        /// The cursor as given.
        cursor: String,
    },
}

impl StoreError {
    /// True when the error is about what one run's stored rows hold (a value that does
    /// not decode), not about the database: that run is stored but cannot be read back
    /// (nor resumed), and other runs are not affected.
    pub fn is_undecodable(&self) -> bool {
        match self {
            StoreError::Corrupt { .. } => true,
            #[cfg(feature = "sqlite")]
            StoreError::Database { source } => sqlite::is_undecodable(source),
            _ => false,
        }
    }
}

/// Where runs live. Implementations must make [`RunStore::create_run`] and every
/// journaled event durable before returning.
///
/// The methods are synchronous and block on disk I/O (the SQLite store syncs each write
/// to disk): from async code, call them inside `tokio::task::spawn_blocking` rather than
/// on a runtime thread. The executor already journals a run's events from its own
/// thread.
pub trait RunStore: RunJournal + Send + Sync {
    /// Records a new run with its plan and the subject it runs for, or finds the run
    /// journaled earlier for the same subject with the same idempotency key (an
    /// idempotency key is its subject's own: another subject's run with that key is
    /// neither found nor in the way; `None` subjects are the same subject).
    ///
    /// # Errors
    /// Storage failures.
    fn create_run(
        &self,
        id: &RunId,
        plan: &Plan,
        budget: Option<Usd>,
        idempotency_key: Option<&str>,
        subject: Option<&str>,
    ) -> Result<Created, StoreError>;

    /// Journals that a cancel of the run `id` was requested, durably, before it returns
    /// (so a caller told "cancelling" keeps that promise across a crash: a run still
    /// `running` with a request is ended as cancelled instead of resumed, see
    /// [`RunRecord::was_cancelled`]). True when the run is stored and still `running`
    /// (a second request keeps the first one's time); false, with nothing written, for
    /// an unknown run or one that already ended.
    ///
    /// # Errors
    /// Storage failures (nothing was journaled).
    fn request_cancel(&self, id: &str) -> Result<bool, StoreError>;

    /// The run created for `subject` with this idempotency key, if any (the lookup of
    /// [`RunStore::create_run`]).
    ///
    /// # Errors
    /// Storage failures.
    fn run_for_idempotency_key(
        &self,
        subject: Option<&str>,
        key: &str,
    ) -> Result<Option<String>, StoreError>;

    /// True when the run `id` is stored and in `scope` (false for an unknown run and for
    /// another subject's, alike). The default reads the whole run; stores that can read
    /// its subject alone should.
    ///
    /// # Errors
    /// Storage failures (the default: also corrupt rows).
    fn run_in_scope(&self, id: &str, scope: RunScope<'_>) -> Result<bool, StoreError> {
        Ok(self
            .get_run(id)?
            .is_some_and(|r| scope.contains(r.subject.as_deref())))
    }

    /// A run with its task states.
    ///
    /// # Errors
    /// Storage failures or corrupt rows.
    fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError>;

    /// A run's listing row, read without decoding its plan or task states, so it
    /// answers for a run whose stored plan or tasks no longer decode (see
    /// [`StoreError::is_undecodable`]). The default reads the whole run; stores that can
    /// read the row alone should.
    ///
    /// # Errors
    /// Storage failures (the default: also corrupt rows).
    fn run_summary(&self, id: &str) -> Result<Option<RunSummary>, StoreError> {
        Ok(self.get_run(id)?.map(|r| RunSummary {
            id: r.id,
            status: r.status,
            request: r.request.chars().take(200).collect(),
            cost: r.cost,
            created_at_ms: r.created_at_ms,
            subject: r.subject,
        }))
    }

    /// Every run, newest first: [`RunStore::list_runs_in`] with [`RunScope::All`].
    ///
    /// # Errors
    /// As [`RunStore::list_runs_in`].
    fn list_runs(
        &self,
        status: Option<RunStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Vec<RunSummary>, StoreError> {
        self.list_runs_in(RunScope::All, status, limit, cursor)
    }

    /// The runs in `scope`, newest first (ties on creation time by id, descending),
    /// optionally filtered by status. `cursor` says where the previous page ended: a
    /// [`ListCursor`] token (`<created_at_ms>.<id>`, which does not need that run's row),
    /// or the previous page's last run id (older clients; that run must still be stored,
    /// and in `scope`).
    ///
    /// # Errors
    /// [`StoreError::UnknownCursor`] for a cursor that is neither; storage failures.
    fn list_runs_in(
        &self,
        scope: RunScope<'_>,
        status: Option<RunStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Vec<RunSummary>, StoreError>;

    /// Runs still marked running (to resume after a restart), oldest first. A run whose
    /// rows do not decode is returned as [`UnfinishedRun::Unreadable`], in its place,
    /// with the decode error; the others are read as usual.
    ///
    /// # Errors
    /// Storage failures (the database cannot be queried), not corrupt rows.
    fn unfinished_runs(&self) -> Result<Vec<UnfinishedRun>, StoreError>;

    /// Events of a run after sequence number `after`.
    ///
    /// # Errors
    /// Storage failures or corrupt rows.
    fn events_since(&self, id: &str, after: i64) -> Result<Vec<StoredEvent>, StoreError>;

    /// Money spent since `since_ms` (unix milliseconds): by all runs created since
    /// (their planning included), and what [`RunStore::record_spend`] recorded since.
    ///
    /// # Errors
    /// Storage failures.
    fn spent_since(&self, since_ms: i64) -> Result<Usd, StoreError>;

    /// Records money spent outside any run, now, for `subject` (the caller it was spent
    /// for, when known): LLM planning of a plan that did not become a run (plan mode, a
    /// refused plan), so the day's spend read back after a restart
    /// ([`RunStore::spent_since`], [`RunStore::subject_spent_since`]) includes it. A run's own planning is in its
    /// cost ([`RunStore::create_run`] starts it there) and must not be recorded here.
    /// The default keeps nothing (a store without it forgets such spend at restart).
    ///
    /// # Errors
    /// Storage failures.
    fn record_spend(&self, cost: Usd, subject: Option<&str>) -> Result<(), StoreError> {
        let _ = (cost, subject);
        Ok(())
    }

    /// Money spent since `since_ms` (unix milliseconds) for `subject`: by its runs
    /// created since (their planning included), and what [`RunStore::record_spend`]
    /// recorded for it since (`budget.per_subject_day` after a restart). The default is
    /// [`RunStore::spent_since`], everyone's spend: an upper bound, so a store without
    /// per-subject totals never lets a subject overspend.
    ///
    /// # Errors
    /// Storage failures.
    fn subject_spent_since(&self, since_ms: i64, subject: &str) -> Result<Usd, StoreError> {
        let _ = subject;
        self.spent_since(since_ms)
    }

    /// True when the store answers (for readiness checks).
    fn ping(&self) -> bool;

    /// Makes a small write to learn whether the store takes writes now (for
    /// readiness checks, and before runs are resumed at start-up), and records the
    /// outcome as [`RunStore::write_failure`] does. The default does nothing.
    ///
    /// The SQLite store rewrites its database header: one page to the WAL and one
    /// fsync. That page can still fit where a run's writes do not (a nearly full
    /// disk), so a probe that succeeds clears the failure of a run write only 30 s
    /// after it, unless a probe failed too since the writes began to fail (then at
    /// once): readiness does not flip at every probe.
    ///
    /// # Errors
    /// The write failed (read-only file, mount or connection, full disk, I/O error).
    fn probe_write(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The error of the store's last failed write (journal, new run, cancel request,
    /// retention, learned state, probe), while no write succeeded since (see
    /// [`RunStore::probe_write`] for probes); `None` when the store takes writes as
    /// far as it knows. The default: always `None`.
    fn write_failure(&self) -> Option<String> {
        None
    }
}
