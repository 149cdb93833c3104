//! The embedded SQLite run store: one file, WAL mode, every write in a transaction.

use std::path::Path;
use std::sync::Mutex;

use genesis_core::{ModelId, RunId, Usd};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Created, ListCursor, RunRecord, RunScope, RunStore, RunSummary, StoreError, StoredEvent,
    UnfinishedRun,
};
use crate::Plan;
use crate::run::{RunEvent, RunJournal, RunStatus, TaskReport, TaskStatus};

impl From<rusqlite::Error> for StoreError {
    fn from(source: rusqlite::Error) -> Self {
        StoreError::Database { source }
    }
}

/// True for a driver error about what a stored value holds (one that does not decode),
/// not about the database ([`StoreError::is_undecodable`]).
pub(super) fn is_undecodable(source: &rusqlite::Error) -> bool {
    matches!(
        source,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::Utf8Error(..)
    )
}

/// The schema at version 0 (`PRAGMA user_version` 0: databases written before the schema
/// was versioned). It never changes: a change is a new step in [`MIGRATIONS`], so a new
/// database and an old one reach the same schema the same way.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    budget REAL,
    cost REAL NOT NULL DEFAULT 0,
    idempotency_key TEXT UNIQUE,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, created_at);
CREATE INDEX IF NOT EXISTS runs_created_at ON runs(created_at);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL REFERENCES runs(id),
    task_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    parent TEXT,
    status TEXT NOT NULL,
    agent TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    output TEXT,
    error TEXT,
    cost REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, task_id)
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL REFERENCES runs(id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    json TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS learned_agents (
    agent TEXT PRIMARY KEY,
    state_json TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
";

/// Schema changes after [`SCHEMA`]: step `i` takes the database from version `i` to
/// `i + 1` (`PRAGMA user_version`). Append only; never edit a step that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: who the run was started for (its flags' subject). NULL in runs stored before:
    // they resume as `anonymous`, as they did.
    "ALTER TABLE runs ADD COLUMN subject TEXT;",
    // 2: when a cancel of the run was requested (unix ms; see `RunStore::request_cancel`).
    // NULL in runs stored before, and in runs nobody asked to cancel.
    "ALTER TABLE runs ADD COLUMN cancel_requested_at INTEGER;",
    // 3: the tokens a succeeded task's agents reported (`task_succeeded`). 0 in tasks
    // stored before.
    "ALTER TABLE tasks ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE tasks ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;",
    // 4: idempotency keys are per subject, and runs are read per subject. The key moves
    // to `subject_idempotency_key`, unique per (subject, key); `idempotency_key` (unique
    // across all runs, a constraint SQLite cannot drop without copying the table) stays
    // NULL from now on. Runs with no subject keep their keys (NULLs are distinct in a
    // unique index: `create_run` checks within its write). The second index serves the
    // per-subject listing and the lookups of a run in a subject's scope.
    "ALTER TABLE runs ADD COLUMN subject_idempotency_key TEXT;
     UPDATE runs SET subject_idempotency_key = idempotency_key, idempotency_key = NULL
      WHERE idempotency_key IS NOT NULL;
     CREATE UNIQUE INDEX runs_subject_idempotency_key
      ON runs(subject_idempotency_key, subject) WHERE subject_idempotency_key IS NOT NULL;
     CREATE INDEX runs_subject_created_at ON runs(subject, created_at, id);",
    // 5: money spent outside any run (LLM planning of plans that did not become runs:
    // `RunStore::record_spend`), for the day's spend after a restart.
    "CREATE TABLE spend (at INTEGER NOT NULL, cost REAL NOT NULL);
     CREATE INDEX spend_at ON spend(at);",
    // 6: a succeeded task's output flag (the rule the injection screen flagged it for;
    // NULL when clean) and whether its answer was cut at its token limit
    // (`task_succeeded`'s `flagged` and `truncated`). NULL and 0 in tasks stored before.
    "ALTER TABLE tasks ADD COLUMN flagged TEXT;
     ALTER TABLE tasks ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0;",
    // 7: the model of a task's latest agent call (`task_started`'s `model`), and of the
    // call that answered (`task_succeeded`'s). NULL in tasks stored before.
    "ALTER TABLE tasks ADD COLUMN model TEXT;",
    // 8: whom money spent outside any run was spent for (`RunStore::record_spend`'s
    // subject), for each subject's day spend after a restart (`budget.per_subject_day`).
    // NULL in rows stored before (they count for the day, for no subject).
    "ALTER TABLE spend ADD COLUMN subject TEXT;
     CREATE INDEX spend_subject_at ON spend(subject, at);",
];

/// The schema version this build writes ([`MIGRATIONS`] applied).
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// SQLite-backed [`RunStore`]. Safe to share across threads (one connection behind a
/// mutex; writes are short transactions).
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// The last failed write, until a write succeeds ([`RunStore::write_failure`]).
    write_failure: Mutex<Option<WriteFailure>>,
}

/// A write the store failed ([`SqliteStore::tracked`]).
#[derive(Debug, Clone)]
struct WriteFailure {
    at: std::time::Instant,
    /// The error chain.
    error: String,
    /// Seen by [`RunStore::probe_write`], not by a write of the store's own.
    probe: bool,
}

/// How long a write that failed keeps the store unwritable against probes that
/// succeed ([`RunStore::probe_write`]): the probe writes one page, which can still fit
/// where a run's writes did not (a nearly full disk), and readiness would flip between
/// ready and not at every probe. A write of the store's own that succeeds clears the
/// failure at once.
const WRITE_FAILURE_HOLD: std::time::Duration = std::time::Duration::from_secs(30);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn status_str(s: RunStatus) -> &'static str {
    s.as_str()
}

fn parse_run_status(s: &str) -> RunStatus {
    match s {
        "succeeded" => RunStatus::Succeeded,
        "failed" => RunStatus::Failed,
        "cancelled" => RunStatus::Cancelled,
        _ => RunStatus::Running,
    }
}

/// The columns of a [`RunSummary`], in the order [`summary_row`] reads them.
const SUMMARY_COLUMNS: &str = "id, status, substr(request, 1, 200), cost, created_at, subject";

fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunSummary> {
    Ok(RunSummary {
        id: r.get::<_, String>(0)?.into(),
        status: parse_run_status(&r.get::<_, String>(1)?),
        request: r.get(2)?,
        cost: Usd::saturating(r.get(3)?),
        created_at_ms: r.get(4)?,
        subject: r.get(5)?,
    })
}

/// A token count as an SQLite integer (i64): a count past it is stored as the most.
fn db_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn parse_task_status(s: &str) -> TaskStatus {
    match s {
        "running" => TaskStatus::Running,
        "succeeded" => TaskStatus::Succeeded,
        "failed" => TaskStatus::Failed,
        "skipped" => TaskStatus::Skipped,
        "cancelled" => TaskStatus::Cancelled,
        _ => TaskStatus::Pending,
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `genesis.db` in `data_dir`.
    ///
    /// # Errors
    /// The directory cannot be created or the database cannot be opened.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join("genesis.db");
        let opened = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(&path).map_err(opened)?;
        Self::init(conn).map_err(|e| match e {
            StoreError::Database { source } => opened(source),
            other => other,
        })
    }

    /// An in-memory store (tests, library use without durability).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        // WAL + synchronous=FULL: every commit is on disk before it returns (the WAL is
        // synced per commit), so a run acknowledged with 202 and every journaled event
        // survive power loss too, not only a killed process (NORMAL's guarantee).
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Switching a new file to WAL and creating its tables take the write lock, and
        // SQLite answers "database is locked" at once (without the busy handler) to a
        // second process doing the same at that moment: retry for up to 5 s.
        let mut pause = std::time::Duration::from_millis(2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let first = conn
                .pragma_update(None, "journal_mode", "WAL")
                .and_then(|()| conn.execute_batch(SCHEMA));
            match first {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(100));
                }
                other => break other?,
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Self::migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            write_failure: Mutex::new(None),
        })
    }

    /// Records how a write went (see [`RunStore::write_failure`]) and returns `result`:
    /// a failure is kept until a write succeeds; a probe's success clears it only once
    /// a probe failed too (since the store's writes began to fail), or when the last
    /// failure is older than [`WRITE_FAILURE_HOLD`]. Failures to encode a value
    /// (nothing was written) are not about the store and do not count.
    fn tracked<T>(&self, result: Result<T, StoreError>, probe: bool) -> Result<T, StoreError> {
        let mut failure = self
            .write_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &result {
            Ok(_) => {
                let clears = failure
                    .as_ref()
                    .is_some_and(|f| !probe || f.probe || f.at.elapsed() >= WRITE_FAILURE_HOLD);
                if clears {
                    tracing::info!("the run store takes writes again");
                    *failure = None;
                }
            }
            Err(StoreError::Corrupt { .. }) => {}
            Err(e) => {
                let error = genesis_core::error_chain(e);
                if failure.is_none() {
                    tracing::error!(rule = "store_unwritable", error = %error, "the run store failed a write");
                }
                // Once a probe failed too, a probe that succeeds means the store is back.
                let probe = probe || failure.as_ref().is_some_and(|f| f.probe);
                *failure = Some(WriteFailure {
                    at: std::time::Instant::now(),
                    error,
                    probe,
                });
            }
        }
        result
    }

    /// Makes the store refuse every write (`on`: SQLite's `query_only`), as a read-only
    /// database file would, or take writes again; reads go on. For maintenance, and for
    /// tests of what a server does when its store cannot write.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn set_query_only(&self, on: bool) -> Result<(), StoreError> {
        self.conn()?.pragma_update(None, "query_only", on)?;
        Ok(())
    }

    /// Brings the schema to [`SCHEMA_VERSION`]: the missing [`MIGRATIONS`] steps and
    /// the new version in one transaction, taken with the write lock first, so two
    /// processes opening the same file do not both apply a step. A database of a newer
    /// build is left as it is (its extra columns are not read here).
    fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            tracing::warn!(
                version,
                supported = SCHEMA_VERSION,
                "the run store was written by a newer build; using it as is"
            );
            return Ok(());
        }
        let from = usize::try_from(version).unwrap_or(0);
        for step in MIGRATIONS.iter().skip(from) {
            tx.execute_batch(step)?;
        }
        if version < SCHEMA_VERSION {
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tracing::info!(
                from = version,
                to = SCHEMA_VERSION,
                "run store schema migrated"
            );
        }
        tx.commit()?;
        Ok(())
    }

    /// The run journaled for `subject` with idempotency key `key` (`IS`: a `None`
    /// subject matches runs with none). One probe of `runs_subject_idempotency_key`.
    fn run_for_key(
        conn: &Connection,
        subject: Option<&str>,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(conn
            .query_row(
                "SELECT id FROM runs WHERE subject_idempotency_key = ?1 AND subject IS ?2",
                params![key, subject],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    /// A write transaction that takes the write lock at `BEGIN`. Every write here reads
    /// first (the next event number, an idempotency key), and SQLite fails a deferred
    /// transaction that read and then finds another process holding the write lock at
    /// once, with "database is locked", without the busy handler (it could deadlock);
    /// taking the lock first waits for the other writer instead (`busy_timeout`, 5 s).
    fn write_tx(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>, StoreError> {
        Ok(conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
    }

    /// Applies `events` in one transaction: all of them or none.
    fn apply(&self, run_id: &RunId, events: &[RunEvent]) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = Self::write_tx(&mut conn)?;
        Self::apply_group(&tx, run_id, events, now_ms())?;
        tx.commit()?;
        Ok(())
    }

    /// Applies several runs' event groups in one transaction, one commit (one fsync)
    /// for all: group commit. Each group sits in a savepoint of its own, so a group
    /// that fails is undone alone and the others are kept. Returns one result per
    /// group; the outer error means nothing was kept (the transaction could not be
    /// started or committed).
    fn apply_groups(
        &self,
        groups: &[(&RunId, &[RunEvent])],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = Self::write_tx(&mut conn)?;
        let now = now_ms();
        let mut results = Vec::with_capacity(groups.len());
        for (run_id, events) in groups {
            // Dropped without `commit` (on error), the savepoint is rolled back.
            let sp = tx.savepoint()?;
            let r = Self::apply_group(&sp, run_id, events, now);
            if r.is_ok() {
                sp.commit()?;
            }
            results.push(r);
        }
        tx.commit()?;
        Ok(results)
    }

    /// Applies one run's `events` inside the caller's transaction.
    fn apply_group(
        conn: &Connection,
        run_id: &RunId,
        events: &[RunEvent],
        now: i64,
    ) -> Result<(), StoreError> {
        for event in events {
            Self::apply_one(conn, run_id, event, now)?;
        }
        conn.execute(
            "UPDATE runs SET updated_at = ?2 WHERE id = ?1",
            params![run_id.as_str(), now],
        )?;
        Ok(())
    }

    fn apply_one(
        tx: &Connection,
        run_id: &RunId,
        event: &RunEvent,
        now: i64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(event).map_err(|source| StoreError::Corrupt {
            run: run_id.to_string(),
            what: "event",
            source,
        })?;
        let seq: i64 = tx.query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?1",
            params![run_id.as_str()],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO events (run_id, seq, kind, json, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run_id.as_str(), seq, event.kind(), json, now],
        )?;
        let task =
            |tx: &Connection, sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<(), StoreError> {
                tx.execute(sql, p)?;
                Ok(())
            };
        match event {
            RunEvent::TaskStarted {
                task_id,
                agent,
                model,
                ..
            } => task(
                tx,
                "UPDATE tasks SET status = 'running', agent = ?3, attempts = attempts + 1, model = ?4 \
                 WHERE run_id = ?1 AND task_id = ?2",
                &[
                    &run_id.as_str(),
                    &task_id.as_str(),
                    &agent.as_str(),
                    &model.as_ref().map(ModelId::as_str),
                ],
            )?,
            RunEvent::TaskSucceeded {
                task_id,
                agent,
                model,
                output,
                flagged,
                truncated,
                cost,
                attempts,
                input_tokens,
                output_tokens,
                ..
            } => task(
                tx,
                "UPDATE tasks SET status = 'succeeded', agent = ?3, output = ?4, cost = ?5, attempts = ?6, error = NULL, \
                 input_tokens = ?7, output_tokens = ?8, flagged = ?9, truncated = ?10, model = ?11 \
                 WHERE run_id = ?1 AND task_id = ?2",
                &[
                    &run_id.as_str(),
                    &task_id.as_str(),
                    &agent.as_str(),
                    output,
                    &cost.as_f64(),
                    attempts,
                    &db_count(*input_tokens),
                    &db_count(*output_tokens),
                    flagged,
                    truncated,
                    &model.as_ref().map(ModelId::as_str),
                ],
            )?,
            // A failed or cancelled task keeps what it was charged and the calls it
            // made (never fewer than its journaled starts).
            // Its model is its last call's: as journaled by that call's `task_started`
            // when the failure names none (events journaled before it was recorded).
            RunEvent::TaskFailed {
                task_id,
                reason,
                attempts,
                model,
                input_tokens,
                output_tokens,
                cost,
            } => task(
                tx,
                "UPDATE tasks SET status = 'failed', error = ?3, attempts = MAX(attempts, ?4), \
                 input_tokens = ?5, output_tokens = ?6, cost = ?7, model = COALESCE(?8, model) \
                 WHERE run_id = ?1 AND task_id = ?2",
                &[
                    &run_id.as_str(),
                    &task_id.as_str(),
                    reason,
                    attempts,
                    &db_count(*input_tokens),
                    &db_count(*output_tokens),
                    &cost.as_f64(),
                    &model.as_ref().map(ModelId::as_str),
                ],
            )?,
            RunEvent::TaskSkipped {
                task_id,
                reason,
                input_tokens,
                output_tokens,
                cost,
                attempts,
            } => {
                let status = if reason == super::RUN_CANCELLED {
                    "cancelled"
                } else {
                    "skipped"
                };
                task(
                    tx,
                    "UPDATE tasks SET status = ?3, error = ?4, input_tokens = ?5, output_tokens = ?6, \
                     cost = ?7, attempts = MAX(attempts, ?8) WHERE run_id = ?1 AND task_id = ?2",
                    &[
                        &run_id.as_str(),
                        &task_id.as_str(),
                        &status,
                        reason,
                        &db_count(*input_tokens),
                        &db_count(*output_tokens),
                        &cost.as_f64(),
                        attempts,
                    ],
                )?;
            }
            RunEvent::TasksAdded { tasks, .. } => {
                let plan_json: String = tx.query_row(
                    "SELECT plan_json FROM runs WHERE id = ?1",
                    params![run_id.as_str()],
                    |r| r.get(0),
                )?;
                let mut plan: Plan =
                    serde_json::from_str(&plan_json).map_err(|source| StoreError::Corrupt {
                        run: run_id.to_string(),
                        what: "plan",
                        source,
                    })?;
                let start: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM tasks WHERE run_id = ?1",
                    params![run_id.as_str()],
                    |r| r.get(0),
                )?;
                for (k, t) in tasks.iter().enumerate() {
                    tx.execute(
                        "INSERT OR IGNORE INTO tasks (run_id, task_id, position, parent, status, agent) \
                         VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
                        params![
                            run_id.as_str(),
                            t.id.as_str(),
                            start + k as i64,
                            t.parent.as_ref().map(|p| p.as_str()),
                            t.agent.as_ref().map(|a| a.as_str())
                        ],
                    )?;
                    plan.tasks.push(t.clone());
                }
                let plan_json =
                    serde_json::to_string(&plan).map_err(|source| StoreError::Corrupt {
                        run: run_id.to_string(),
                        what: "plan",
                        source,
                    })?;
                tx.execute(
                    "UPDATE runs SET plan_json = ?2 WHERE id = ?1",
                    params![run_id.as_str(), plan_json],
                )?;
            }
            // Money once journaled stays spent: a run's cost never goes down (an event
            // with a smaller total cannot undo what the journal already holds).
            RunEvent::Cost { spent } => {
                tx.execute(
                    "UPDATE runs SET cost = MAX(cost, ?2) WHERE id = ?1",
                    params![run_id.as_str(), spent.as_f64()],
                )?;
            }
            // Its token totals are not stored: they are the sum over the run's tasks.
            RunEvent::RunFinished { status, cost, .. } => {
                tx.execute(
                    "UPDATE runs SET status = ?2, cost = MAX(cost, ?3) WHERE id = ?1",
                    params![run_id.as_str(), status_str(*status), cost.as_f64()],
                )?;
            }
            _ => {}
        }
        Ok(())
    }

    fn load(&self, conn: &Connection, id: &str) -> Result<Option<RunRecord>, StoreError> {
        type Row = (
            String,
            String,
            String,
            Option<f64>,
            f64,
            Option<String>,
            i64,
            i64,
            Option<String>,
            Option<i64>,
        );
        let row: Option<Row> = conn
            .query_row(
                "SELECT request, status, plan_json, budget, cost, subject_idempotency_key, created_at, updated_at, \
                 subject, cancel_requested_at FROM runs WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?)),
            )
            .optional()?;
        let Some((
            request,
            status,
            plan_json,
            budget,
            cost,
            idempotency_key,
            created,
            updated,
            subject,
            cancel_requested_at,
        )) = row
        else {
            return Ok(None);
        };
        let plan: Plan =
            serde_json::from_str(&plan_json).map_err(|source| StoreError::Corrupt {
                run: id.to_owned(),
                what: "plan",
                source,
            })?;
        let mut stmt = conn.prepare(
            "SELECT task_id, status, agent, attempts, output, error, cost, parent, input_tokens, \
             output_tokens, flagged, truncated, model FROM tasks WHERE run_id = ?1 ORDER BY position",
        )?;
        let mut answer = String::new();
        let tasks = stmt
            .query_map(params![id], |r| {
                let parent: Option<String> = r.get(7)?;
                Ok((
                    TaskReport {
                        task_id: r.get::<_, String>(0)?.into(),
                        status: parse_task_status(&r.get::<_, String>(1)?),
                        agent: r.get::<_, Option<String>>(2)?.map(Into::into),
                        model: r.get::<_, Option<String>>(12)?.map(Into::into),
                        attempts: r.get(3)?,
                        output: r.get(4)?,
                        flagged: r.get(10)?,
                        truncated: r.get(11)?,
                        error: r.get(5)?,
                        cost: Usd::saturating(r.get(6)?),
                        input_tokens: u64::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
                        output_tokens: u64::try_from(r.get::<_, i64>(9)?).unwrap_or(0),
                    },
                    parent.is_none(),
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let status = parse_run_status(&status);
        if status != RunStatus::Running {
            for (t, top) in &tasks {
                if let (true, Some(out)) = (*top, &t.output) {
                    if !answer.is_empty() {
                        answer.push_str("\n\n");
                    }
                    let desc = plan
                        .task(t.task_id.as_str())
                        .map_or("", |p| p.description.as_str());
                    answer.push_str(&format!("## {} — {desc}\n{out}", t.task_id));
                }
            }
        }
        Ok(Some(RunRecord {
            id: RunId::new(id),
            request,
            status,
            plan,
            tasks: tasks.into_iter().map(|(t, _)| t).collect(),
            cost: Usd::saturating(cost),
            budget: budget.map(Usd::saturating),
            // No top-level output (a run that failed or was cancelled before any): no
            // answer, rather than an empty one.
            answer: (status != RunStatus::Running && !answer.is_empty()).then_some(answer),
            idempotency_key,
            subject,
            cancel_requested_at_ms: cancel_requested_at,
            created_at_ms: created,
            updated_at_ms: updated,
        }))
    }

    /// Deletes finished runs (succeeded, failed or cancelled) created and last updated
    /// before `before_ms` (unix ms), with their tasks and events: at most `limit` of
    /// them, oldest first, in one transaction. Returns how many were deleted. A run
    /// still `running` is never deleted, however old. A deleted run's idempotency key
    /// is free again (a request sent with it afterwards starts a new run).
    ///
    /// # Errors
    /// SQLite failures (nothing was deleted).
    pub fn delete_finished_before(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.tracked(self.delete_finished(before_ms, limit), false)
    }

    /// [`SqliteStore::delete_finished_before`], untracked.
    fn delete_finished(&self, before_ms: i64, limit: usize) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let tx = Self::write_tx(&mut conn)?;
        let ids: Vec<String> = {
            // `runs_created_at` finds the candidates; the last update is checked per row
            // (a run that finished recently is kept until it too is old).
            let mut old = tx.prepare(
                "SELECT id FROM runs WHERE created_at < ?1 AND updated_at < ?1 \
                 AND status != 'running' ORDER BY created_at LIMIT ?2",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            old.query_map(params![before_ms, limit], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        {
            let mut events = tx.prepare("DELETE FROM events WHERE run_id = ?1")?;
            let mut tasks = tx.prepare("DELETE FROM tasks WHERE run_id = ?1")?;
            let mut runs = tx.prepare("DELETE FROM runs WHERE id = ?1")?;
            for id in &ids {
                events.execute(params![id])?;
                tasks.execute(params![id])?;
                runs.execute(params![id])?;
            }
        }
        // Spend outside runs ages out with them.
        tx.execute("DELETE FROM spend WHERE at < ?1", params![before_ms])?;
        tx.commit()?;
        Ok(ids.len())
    }

    /// Stores the router's learned state, one row per agent, in one transaction
    /// (agents not in `states` keep their stored row).
    ///
    /// # Errors
    /// SQLite failures; a state that cannot be encoded.
    pub fn save_learned(
        &self,
        states: &[(genesis_core::AgentId, crate::learning::LearnedState)],
    ) -> Result<(), StoreError> {
        self.tracked(self.upsert_learned(states), false)
    }

    /// [`SqliteStore::save_learned`], untracked.
    fn upsert_learned(
        &self,
        states: &[(genesis_core::AgentId, crate::learning::LearnedState)],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = Self::write_tx(&mut conn)?;
        let now = now_ms();
        {
            let mut upsert = tx.prepare(
                "INSERT INTO learned_agents (agent, state_json, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(agent) DO UPDATE SET state_json = excluded.state_json,
                 updated_at = excluded.updated_at",
            )?;
            for (agent, state) in states {
                let json = serde_json::to_string(state).map_err(|source| StoreError::Corrupt {
                    run: format!("learned:{agent}"),
                    what: "learned agent state",
                    source,
                })?;
                upsert.execute(params![agent.as_str(), json, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The stored learned state of every agent, by agent id. A row that does not decode
    /// is skipped with a warning (learned state is advisory; the catalogue still loads).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn load_learned(
        &self,
    ) -> Result<Vec<(genesis_core::AgentId, crate::learning::LearnedState)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT agent, state_json FROM learned_agents ORDER BY agent")?;
        // Bytes, not text: a damaged row whose bytes are not UTF-8 is skipped like one
        // whose JSON does not decode, instead of failing the whole load (and the start).
        let rows = stmt.query_map([], |r| {
            let bytes = |i: usize| -> rusqlite::Result<Vec<u8>> {
                Ok(r.get_ref(i)?
                    .as_bytes()
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default())
            };
            Ok((bytes(0)?, bytes(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (agent, json) = row?;
            let agent = String::from_utf8_lossy(&agent).into_owned();
            match serde_json::from_slice(&json) {
                Ok(state) => out.push((genesis_core::AgentId::new(agent), state)),
                Err(e) => {
                    tracing::warn!(agent = %agent, error = %e, "skipping undecodable learned agent state");
                }
            }
        }
        Ok(out)
    }

    /// [`RunStore::create_run`], untracked.
    fn insert_run(
        &self,
        id: &RunId,
        plan: &Plan,
        budget: Option<Usd>,
        idempotency_key: Option<&str>,
        subject: Option<&str>,
    ) -> Result<Created, StoreError> {
        let plan_json = serde_json::to_string(plan).map_err(|source| StoreError::Corrupt {
            run: id.to_string(),
            what: "plan",
            source,
        })?;
        let mut conn = self.conn()?;
        let tx = Self::write_tx(&mut conn)?;
        // Looked up within the write: two submissions with one key cannot both insert.
        if let Some(key) = idempotency_key
            && let Some(existing) = Self::run_for_key(&tx, subject, key)?
        {
            return Ok(Created::Existing(RunId::new(existing)));
        }
        let now = now_ms();
        // A run starts from what planning it cost (charged to the day already).
        let planning = plan.planning.map_or(0.0, |p| p.cost.as_f64());
        tx.execute(
            "INSERT INTO runs (id, request, status, plan_json, budget, subject_idempotency_key, created_at, updated_at, subject, cost) \
             VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?6, ?7, ?8)",
            params![id.as_str(), plan.request, plan_json, budget.map(Usd::as_f64), idempotency_key, now, subject, planning],
        )?;
        for (position, t) in plan.tasks.iter().enumerate() {
            tx.execute(
                "INSERT INTO tasks (run_id, task_id, position, parent, status, agent) VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
                params![
                    id.as_str(),
                    t.id.as_str(),
                    position as i64,
                    t.parent.as_ref().map(|p| p.as_str()),
                    t.agent.as_ref().map(|a| a.as_str())
                ],
            )?;
        }
        tx.commit()?;
        Ok(Created::New(id.clone()))
    }

    /// [`RunStore::request_cancel`], untracked.
    fn mark_cancel_requested(&self, id: &str) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        // The first request's time is kept; a run that already ended is left alone.
        let marked = conn.execute(
            "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, ?2), updated_at = ?2 \
             WHERE id = ?1 AND status = 'running'",
            params![id, now_ms()],
        )?;
        Ok(marked > 0)
    }
}

impl RunJournal for SqliteStore {
    fn record(
        &self,
        run_id: &RunId,
        event: &RunEvent,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.tracked(self.apply(run_id, std::slice::from_ref(event)), false)
            .map_err(Into::into)
    }

    fn record_all(
        &self,
        run_id: &RunId,
        events: &[RunEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.tracked(self.apply(run_id, events), false)
            .map_err(Into::into)
    }

    fn record_groups(
        &self,
        groups: &[(&RunId, &[RunEvent])],
    ) -> Vec<Result<(), Box<dyn std::error::Error + Send + Sync>>> {
        match self.tracked(self.apply_groups(groups), false) {
            Ok(results) => results.into_iter().map(|r| r.map_err(Into::into)).collect(),
            // Nothing was kept: every group failed with the same cause.
            Err(e) => {
                let why = genesis_core::error_chain(&e);
                groups.iter().map(|_| Err(why.clone().into())).collect()
            }
        }
    }
}

impl RunStore for SqliteStore {
    fn create_run(
        &self,
        id: &RunId,
        plan: &Plan,
        budget: Option<Usd>,
        idempotency_key: Option<&str>,
        subject: Option<&str>,
    ) -> Result<Created, StoreError> {
        let created = self.insert_run(id, plan, budget, idempotency_key, subject);
        self.tracked(created, false)
    }

    fn request_cancel(&self, id: &str) -> Result<bool, StoreError> {
        self.tracked(self.mark_cancel_requested(id), false)
    }

    fn run_for_idempotency_key(
        &self,
        subject: Option<&str>,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let conn = self.conn()?;
        Self::run_for_key(&conn, subject, key)
    }

    fn run_in_scope(&self, id: &str, scope: RunScope<'_>) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        // The primary key alone: nothing of the run is decoded.
        let subject: Option<Option<String>> = conn
            .query_row("SELECT subject FROM runs WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(subject.is_some_and(|s| scope.contains(s.as_deref())))
    }

    fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let conn = self.conn()?;
        self.load(&conn, id)
    }

    fn run_summary(&self, id: &str) -> Result<Option<RunSummary>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                &format!("SELECT {SUMMARY_COLUMNS} FROM runs WHERE id = ?1"),
                params![id],
                summary_row,
            )
            .optional()?)
    }

    fn list_runs_in(
        &self,
        scope: RunScope<'_>,
        status: Option<RunStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Vec<RunSummary>, StoreError> {
        let conn = self.conn()?;
        let subject = match scope {
            RunScope::All => None,
            RunScope::Subject(s) => Some(s),
        };
        let limit = i64::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
        // Cursor: the (created_at, id) of the last row of the previous page, from the
        // token itself, or from the row of a plain run id (older clients).
        let (at, after_id) = match cursor {
            None => (i64::MAX, String::new()),
            Some(c) => match ListCursor::parse(c) {
                Some(token) => (token.created_at_ms, token.id),
                // Another subject's run is no cursor: its position is not told.
                None => conn
                    .query_row(
                        "SELECT created_at, id FROM runs WHERE id = ?1 AND (?2 IS NULL OR subject = ?2)",
                        params![c, subject],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?
                    .ok_or_else(|| StoreError::UnknownCursor {
                        cursor: c.to_owned(),
                    })?,
            },
        };
        // One statement per scope, so SQLite plans each with its own index: a subject's
        // page is a range of `runs_subject_created_at`, whatever other subjects stored.
        let scoped = if subject.is_some() {
            "subject = ?5 AND"
        } else {
            "?5 IS NULL AND"
        };
        let mut stmt = conn.prepare(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM runs \
             WHERE {scoped} (?1 IS NULL OR status = ?1) AND (created_at < ?2 OR (created_at = ?2 AND id < ?3)) \
             ORDER BY created_at DESC, id DESC LIMIT ?4",
        ))?;
        let rows = stmt
            .query_map(
                params![status.map(status_str), at, after_id, limit, subject],
                summary_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn unfinished_runs(&self) -> Result<Vec<UnfinishedRun>, StoreError> {
        let conn = self.conn()?;
        let ids: Vec<String> = conn
            .prepare("SELECT id FROM runs WHERE status = 'running' ORDER BY created_at")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.load(&conn, &id) {
                Ok(Some(r)) => out.push(UnfinishedRun::Readable(Box::new(r))),
                Ok(None) => {}
                // One run's bad rows are that run's problem; a database that fails is
                // everyone's, and nothing is resumed (nor failed) until it answers.
                Err(error) if error.is_undecodable() => out.push(UnfinishedRun::Unreadable {
                    id: RunId::new(id),
                    error,
                }),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn events_since(&self, id: &str, after: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT seq, json FROM events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq")?;
        let rows: Vec<(i64, String)> = stmt
            .query_map(params![id, after], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(seq, json)| {
                serde_json::from_str(&json)
                    .map(|event| StoredEvent { seq, event })
                    .map_err(|source| StoreError::Corrupt {
                        run: id.to_owned(),
                        what: "event",
                        source,
                    })
            })
            .collect()
    }

    fn spent_since(&self, since_ms: i64) -> Result<Usd, StoreError> {
        let conn = self.conn()?;
        let runs: f64 = conn.query_row(
            "SELECT COALESCE(SUM(cost), 0) FROM runs WHERE created_at >= ?1",
            params![since_ms],
            |r| r.get(0),
        )?;
        let other: f64 = conn.query_row(
            "SELECT COALESCE(SUM(cost), 0) FROM spend WHERE at >= ?1",
            params![since_ms],
            |r| r.get(0),
        )?;
        Ok(Usd::saturating(runs + other))
    }

    fn subject_spent_since(&self, since_ms: i64, subject: &str) -> Result<Usd, StoreError> {
        let conn = self.conn()?;
        let runs: f64 = conn.query_row(
            "SELECT COALESCE(SUM(cost), 0) FROM runs WHERE subject = ?1 AND created_at >= ?2",
            params![subject, since_ms],
            |r| r.get(0),
        )?;
        let other: f64 = conn.query_row(
            "SELECT COALESCE(SUM(cost), 0) FROM spend WHERE subject = ?1 AND at >= ?2",
            params![subject, since_ms],
            |r| r.get(0),
        )?;
        Ok(Usd::saturating(runs + other))
    }

    fn record_spend(&self, cost: Usd, subject: Option<&str>) -> Result<(), StoreError> {
        if cost <= Usd::ZERO {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let tx = Self::write_tx(&mut conn)?;
        tx.execute(
            "INSERT INTO spend (at, cost, subject) VALUES (?1, ?2, ?3)",
            params![now_ms(), cost.as_f64(), subject],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn ping(&self) -> bool {
        self.conn()
            .ok()
            .and_then(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).ok())
            == Some(1)
    }

    /// One write transaction that rewrites the database header with the schema
    /// version it holds (`PRAGMA user_version`): one page appended to the WAL and one
    /// fsync, holding the store's connection about as long as a journal write. It
    /// fails as run writes do on a read-only file, mount or connection, and on I/O
    /// errors; on a full disk it can still fit where a run's writes do not (see
    /// `WRITE_FAILURE_HOLD`, 30 s).
    fn probe_write(&self) -> Result<(), StoreError> {
        let probed = (|| {
            let mut conn = self.conn()?;
            let tx = Self::write_tx(&mut conn)?;
            let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
            Ok(())
        })();
        self.tracked(probed, true)
    }

    fn write_failure(&self) -> Option<String> {
        self.write_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|f| f.error.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        crate::Orchestrator::builder()
            .build()
            .unwrap()
            .plan_sync("Fix the crash when uploading large files")
            .unwrap()
    }

    fn usd(v: f64) -> Usd {
        Usd::new(v).unwrap()
    }

    use crate::testing::TempDir;

    #[test]
    fn commits_are_synced_to_disk_before_they_return() {
        let dir = TempDir::new("sync");
        let store = SqliteStore::open(&dir).unwrap();
        let conn = store.conn().unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        let synchronous: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        drop(conn);
        assert_eq!(mode, "wal");
        assert_eq!(synchronous, 2, "synchronous=FULL");
    }

    /// Audit D1: a store that stopped taking writes (a full disk) said so nowhere. The
    /// failed write is kept until a write succeeds; the probe's one page still fits
    /// where the run's write did not, so the probe alone does not clear it at once.
    #[test]
    fn a_failed_write_is_kept_until_a_write_succeeds_and_a_probe_does_not_clear_it_early() {
        let store = SqliteStore::in_memory().unwrap();
        let id = RunId::new("run_full");
        store.create_run(&id, &plan(), None, None, None).unwrap();
        assert_eq!(store.write_failure(), None);
        // A full disk: the database may not grow past the pages it has.
        let pages: i64 = store
            .conn()
            .unwrap()
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .unwrap();
        store
            .conn()
            .unwrap()
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let big = RunEvent::UpdateRejected {
            after: "t1".into(),
            reason: "x".repeat(200_000),
        };
        let err = store.record(&id, &big).unwrap_err().to_string();
        let failure = store.write_failure().expect("the failed write is kept");
        assert!(failure.contains("full"), "{failure} ({err})");
        store.probe_write().unwrap();
        assert_eq!(store.write_failure(), Some(failure), "cleared by the probe");
        // Room again: the next run write succeeds and clears it.
        store
            .conn()
            .unwrap()
            .pragma_update(None, "max_page_count", 1_000_000)
            .unwrap();
        store.record(&id, &big).unwrap();
        assert_eq!(store.write_failure(), None);
    }

    /// A store that refuses writes (as a read-only file does) fails the probe, still
    /// answers reads, and a probe that succeeds again clears what a probe saw.
    #[test]
    fn a_read_only_store_fails_its_probe_until_it_takes_writes_again() {
        let store = SqliteStore::in_memory().unwrap();
        let id = RunId::new("run_ro");
        store.create_run(&id, &plan(), None, None, None).unwrap();
        store.probe_write().unwrap();
        store.set_query_only(true).unwrap();
        let cost = RunEvent::Cost { spent: usd(0.1) };
        assert!(store.record(&id, &cost).is_err());
        assert!(
            store
                .create_run(&RunId::new("run_ro2"), &plan(), None, None, None)
                .is_err()
        );
        let err = genesis_core::error_chain(&store.probe_write().unwrap_err());
        assert!(err.contains("readonly"), "{err}");
        assert_eq!(store.write_failure(), Some(err));
        // A run write that fails after the probe did: the probe still speaks for it.
        assert!(store.record(&id, &cost).is_err());
        assert!(store.ping());
        assert!(store.get_run("run_ro").unwrap().is_some());
        store.set_query_only(false).unwrap();
        store.probe_write().unwrap();
        assert_eq!(store.write_failure(), None);
        store.record(&id, &cost).unwrap();
    }

    #[test]
    fn spending_since_a_time_reads_the_creation_time_index() {
        let store = SqliteStore::in_memory().unwrap();
        let conn = store.conn().unwrap();
        let plan: Vec<String> = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT COALESCE(SUM(cost), 0) FROM runs WHERE created_at >= ?1",
            )
            .unwrap()
            .query_map(params![0], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|d| d.contains("USING INDEX runs_created_at")),
            "{plan:?}"
        );
    }

    /// Audit L6-5: LLM planning was not in the day's spend read back after a restart.
    /// A run starts from its planning's cost; planning of a plan that became no run is
    /// recorded on its own; both count in `spent_since`, and age out with retention.
    /// A plan whose LLM planning cost `cost` (300 tokens in, 150 out, 3 calls).
    fn planned_for(cost: f64) -> Plan {
        let mut planned = plan();
        planned.planning = Some(crate::PlanningSpend {
            cost: usd(cost),
            input_tokens: 300,
            output_tokens: 150,
            calls: 3,
        });
        planned
    }

    #[test]
    fn planning_spend_counts_in_the_day_read_back() {
        let store = SqliteStore::in_memory().unwrap();
        let planned = planned_for(0.5);
        let id = RunId::new("run_planned");
        store.create_run(&id, &planned, None, None, None).unwrap();
        let run = store.get_run(id.as_str()).unwrap().unwrap();
        assert!((run.cost.as_f64() - 0.5).abs() < 1e-12, "{}", run.cost);
        assert_eq!(run.token_totals(), (300, 150));
        store.record_spend(usd(0.25), None).unwrap();
        assert!((store.spent_since(0).unwrap().as_f64() - 0.75).abs() < 1e-12);
        assert_eq!(
            store.spent_since(i64::MAX).unwrap(),
            Usd::ZERO,
            "spend recorded before a time is not counted after it"
        );
        store.delete_finished_before(i64::MAX, 10).unwrap();
        assert!((store.spent_since(0).unwrap().as_f64() - 0.5).abs() < 1e-12);
    }

    /// `budget.per_subject_day` after a restart: a subject's day spend is its runs
    /// (their planning included) and its planning outside runs, not other subjects'.
    #[test]
    fn a_subjects_spend_is_its_runs_and_its_planning_only() {
        let store = SqliteStore::in_memory().unwrap();
        let planned = planned_for(0.5);
        store
            .create_run(&RunId::new("run_a"), &planned, None, None, Some("alice"))
            .unwrap();
        store
            .create_run(&RunId::new("run_b"), &planned, None, None, Some("bob"))
            .unwrap();
        store.record_spend(usd(0.25), Some("alice")).unwrap();
        store.record_spend(usd(0.125), Some("bob")).unwrap();
        store.record_spend(usd(0.0625), None).unwrap();
        let spent = |subject| store.subject_spent_since(0, subject).unwrap().as_f64();
        assert!((spent("alice") - 0.75).abs() < 1e-12, "{}", spent("alice"));
        assert!((spent("bob") - 0.625).abs() < 1e-12, "{}", spent("bob"));
        assert_eq!(spent("carol"), 0.0);
        assert!((store.spent_since(0).unwrap().as_f64() - 1.4375).abs() < 1e-12);
        assert_eq!(
            store.subject_spent_since(i64::MAX, "alice").unwrap(),
            Usd::ZERO
        );
    }

    /// Audit: `next_cursor` was the last run's id, looked up again for the next page;
    /// an unknown id (a typo, or a run deleted by retention meanwhile) fell back to the
    /// newest run and the listing silently started over. A token carries the position
    /// itself; a plain id still works while its run is stored; anything else is refused.
    /// Paging is stable with ties on the creation time (broken by id, descending).
    #[test]
    fn list_cursors_are_positions_that_outlive_their_run_and_unknown_ones_are_refused() {
        let store = SqliteStore::in_memory().unwrap();
        let plan = plan();
        // Five runs created in the same millisecond, two earlier ones.
        let runs = [
            ("run_a", 5_000),
            ("run_b", 5_000),
            ("run_c", 5_000),
            ("run_d", 5_000),
            ("run_e", 5_000),
            ("run_f", 4_000),
            ("run_g", 3_000),
        ];
        for (id, at) in runs {
            store
                .create_run(&RunId::new(id), &plan, None, None, None)
                .unwrap();
            store
                .conn()
                .unwrap()
                .execute(
                    "UPDATE runs SET created_at = ?2 WHERE id = ?1",
                    params![id, at],
                )
                .unwrap();
        }
        let ids = |page: &[RunSummary]| -> Vec<String> {
            page.iter().map(|r| r.id.to_string()).collect()
        };
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = store.list_runs(None, 2, cursor.as_deref()).unwrap();
            seen.extend(ids(&page));
            if page.len() < 2 {
                break;
            }
            cursor = page.last().map(|r| ListCursor::after(r).to_string());
        }
        assert_eq!(
            seen,
            [
                "run_e", "run_d", "run_c", "run_b", "run_a", "run_f", "run_g"
            ],
            "newest first, ties by id, each run once"
        );

        // The token of a page that ended on run_c still works once run_c is gone.
        let first = store.list_runs(None, 3, None).unwrap();
        let token = ListCursor::after(&first[2]).to_string();
        assert_eq!(token, "5000.run_c");
        store
            .conn()
            .unwrap()
            .execute_batch(
                "DELETE FROM events WHERE run_id = 'run_c';
                 DELETE FROM tasks WHERE run_id = 'run_c';
                 DELETE FROM runs WHERE id = 'run_c';",
            )
            .unwrap();
        let next = store.list_runs(None, 3, Some(&token)).unwrap();
        assert_eq!(ids(&next), ["run_b", "run_a", "run_f"]);

        // A plain run id (older clients) still pages while its run is stored.
        let next = store.list_runs(None, 2, Some("run_b")).unwrap();
        assert_eq!(ids(&next), ["run_a", "run_f"]);
        // An unknown id, the deleted run's id and garbage are refused, naming the value.
        for bad in ["run_c", "zzz", "12.", ".run_a", "1x.run_a"] {
            match store.list_runs(None, 2, Some(bad)) {
                Err(StoreError::UnknownCursor { cursor }) => assert_eq!(cursor, bad),
                other => panic!("cursor {bad:?}: {other:?}"),
            }
        }
        assert!(
            StoreError::UnknownCursor {
                cursor: "zzz".into()
            }
            .to_string()
            .contains("\"zzz\"")
        );
    }

    /// Retention deletes old finished runs with their tasks and events, oldest first,
    /// `limit` at a time; it keeps runs still running (however old), runs finished
    /// recently, and the others' rows; a deleted run's idempotency key is free again.
    #[test]
    fn old_finished_runs_are_deleted_with_their_rows_and_running_or_recent_ones_kept() {
        let store = SqliteStore::in_memory().unwrap();
        let plan = plan();
        let finished = |status| RunEvent::RunFinished {
            status,
            cost: usd(0.5),
            input_tokens: 0,
            output_tokens: 0,
        };
        // (id, created and updated at, status when stored)
        let runs = [
            ("run_old_ok", 1_000, Some(RunStatus::Succeeded)),
            ("run_old_failed", 2_000, Some(RunStatus::Failed)),
            ("run_old_cancelled", 3_000, Some(RunStatus::Cancelled)),
            ("run_old_running", 500, None),
            ("run_recent", 9_000, Some(RunStatus::Succeeded)),
        ];
        for (id, at, status) in runs {
            let id = RunId::new(id);
            let key = format!("key-{id}");
            store
                .create_run(&id, &plan, None, Some(&key), None)
                .unwrap();
            let task = plan.tasks[0].id.clone();
            store
                .record(
                    &id,
                    &RunEvent::TaskStarted {
                        task_id: task,
                        agent: "a".into(),
                        attempt: 1,
                        model: None,
                    },
                )
                .unwrap();
            if let Some(status) = status {
                store.record(&id, &finished(status)).unwrap();
            }
            store
                .conn()
                .unwrap()
                .execute(
                    "UPDATE runs SET created_at = ?2, updated_at = ?2 WHERE id = ?1",
                    params![id.as_str(), at],
                )
                .unwrap();
        }
        // A run created long ago that finished after the cutoff is kept.
        store
            .conn()
            .unwrap()
            .execute(
                "UPDATE runs SET updated_at = 8000 WHERE id = 'run_old_cancelled'",
                [],
            )
            .unwrap();
        let count = |table: &str, id: &str| -> i64 {
            store
                .conn()
                .unwrap()
                .query_row(
                    &format!(
                        "SELECT COUNT(*) FROM {table} WHERE {} = ?1",
                        if table == "runs" { "id" } else { "run_id" }
                    ),
                    params![id],
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert!(count("events", "run_old_ok") > 0 && count("tasks", "run_old_ok") > 0);
        // Oldest first, one at a time.
        assert_eq!(store.delete_finished_before(5_000, 1).unwrap(), 1);
        assert!(store.get_run("run_old_ok").unwrap().is_none());
        assert!(store.get_run("run_old_failed").unwrap().is_some());
        assert_eq!(store.delete_finished_before(5_000, 100).unwrap(), 1);
        assert_eq!(store.delete_finished_before(5_000, 100).unwrap(), 0);
        for gone in ["run_old_ok", "run_old_failed"] {
            assert!(store.get_run(gone).unwrap().is_none(), "{gone}");
            for table in ["runs", "tasks", "events"] {
                assert_eq!(count(table, gone), 0, "{table} of {gone}");
            }
        }
        for kept in ["run_old_running", "run_old_cancelled", "run_recent"] {
            assert!(store.get_run(kept).unwrap().is_some(), "{kept}");
            assert!(count("events", kept) > 0, "{kept}");
        }
        // The deleted run's key starts a new run; a kept run's key still finds it.
        let again = RunId::new("run_again");
        assert_eq!(
            store
                .create_run(&again, &plan, None, Some("key-run_old_ok"), None)
                .unwrap(),
            Created::New(again.clone())
        );
        assert_eq!(
            store
                .create_run(
                    &RunId::new("run_x"),
                    &plan,
                    None,
                    Some("key-run_recent"),
                    None
                )
                .unwrap(),
            Created::Existing(RunId::new("run_recent"))
        );
    }

    #[test]
    fn events_recorded_together_are_kept_all_or_none() {
        let store = SqliteStore::in_memory().unwrap();
        let plan = plan();
        let id = RunId::new("run_atomic");
        store.create_run(&id, &plan, None, None, None).unwrap();
        let mut added = plan.tasks[0].clone();
        added.id = "t1.f1_1".into();
        let batch = [
            RunEvent::Cost { spent: usd(1.0) },
            RunEvent::TasksAdded {
                after: plan.tasks[0].id.clone(),
                tasks: vec![added],
            },
        ];
        // Both kept.
        store.record_all(&id, &batch).unwrap();
        let run = store.get_run(id.as_str()).unwrap().unwrap();
        assert_eq!(run.plan.tasks.len(), plan.tasks.len() + 1);
        assert_eq!(store.events_since(id.as_str(), 0).unwrap().len(), 2);
        // The second one fails (its run's plan is unreadable): the first is not kept.
        store
            .conn()
            .unwrap()
            .execute(
                "UPDATE runs SET plan_json = 'not json' WHERE id = ?1",
                params![id.as_str()],
            )
            .unwrap();
        let batch = [RunEvent::Cost { spent: usd(2.0) }, batch[1].clone()];
        assert!(store.record_all(&id, &batch).is_err());
        assert_eq!(store.events_since(id.as_str(), 0).unwrap().len(), 2);
        assert!((store.spent_since(0).unwrap().as_f64() - 1.0).abs() < 1e-9);
    }

    /// Group commit: several runs' groups in one transaction, a failing group undone
    /// alone, the others kept, each group all or none.
    #[test]
    fn groups_written_together_fail_and_succeed_one_by_one() {
        let store = SqliteStore::in_memory().unwrap();
        let plan = plan();
        let ids: Vec<RunId> = (0..3).map(|i| RunId::new(format!("run_g{i}"))).collect();
        for id in &ids {
            store.create_run(id, &plan, None, None, None).unwrap();
        }
        // The middle run's plan is unreadable: its `tasks_added` fails after its cost
        // event was written inside the group.
        store
            .conn()
            .unwrap()
            .execute(
                "UPDATE runs SET plan_json = 'not json' WHERE id = ?1",
                params![ids[1].as_str()],
            )
            .unwrap();
        let mut added = plan.tasks[0].clone();
        added.id = "t1.f1_1".into();
        let group = [
            RunEvent::Cost { spent: usd(1.0) },
            RunEvent::TasksAdded {
                after: plan.tasks[0].id.clone(),
                tasks: vec![added],
            },
        ];
        let groups: Vec<(&RunId, &[RunEvent])> = ids.iter().map(|id| (id, &group[..])).collect();
        let results = store.record_groups(&groups);
        assert_eq!(results.len(), 3);
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        let err = results[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("run_g1") && err.contains("plan"), "{err}");
        for (i, id) in ids.iter().enumerate() {
            let kept = store.events_since(id.as_str(), 0).unwrap().len();
            assert_eq!(kept, if i == 1 { 0 } else { 2 }, "run {i}");
        }
        let run = store.get_run(ids[2].as_str()).unwrap().unwrap();
        assert_eq!(run.plan.tasks.len(), plan.tasks.len() + 1);
        assert!((store.spent_since(0).unwrap().as_f64() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_run_whose_plan_does_not_decode_still_reads_as_a_summary() {
        let store = SqliteStore::in_memory().unwrap();
        let plan = plan();
        let id = RunId::new("run_bad");
        store
            .create_run(&id, &plan, None, None, Some("dave"))
            .unwrap();
        store
            .conn()
            .unwrap()
            .execute(
                "UPDATE runs SET plan_json = 'not json' WHERE id = ?1",
                params![id.as_str()],
            )
            .unwrap();
        let err = store.get_run(id.as_str()).unwrap_err();
        assert!(err.is_undecodable(), "{err:?}");
        let summary = store.run_summary(id.as_str()).unwrap().unwrap();
        assert_eq!(summary.id, id);
        assert_eq!(summary.status, RunStatus::Running);
        assert_eq!(summary.request, plan.request);
        assert!(store.run_summary("run_none").unwrap().is_none());
    }

    /// Writes that read first (an idempotency key, the next event number) wait for
    /// another process's write transaction instead of failing at once.
    #[test]
    fn writes_wait_for_another_writer_instead_of_failing_at_once() {
        let dir = TempDir::new("busy");
        let store = SqliteStore::open(&dir).unwrap();
        let first = RunId::new("run_first");
        store
            .create_run(&first, &plan(), None, Some("key-0"), None)
            .unwrap();
        let other = Connection::open(dir.join("genesis.db")).unwrap();
        let locked = |other: Connection| {
            other.execute_batch("BEGIN IMMEDIATE").unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(200));
                other.execute_batch("COMMIT").unwrap();
                other
            })
        };
        let unlock = locked(other);
        let id = RunId::new("run_busy");
        let created = store.create_run(&id, &plan(), None, Some("key-1"), None);
        let unlock = locked(unlock.join().unwrap());
        let recorded = store.record(&first, &RunEvent::Cost { spent: usd(0.1) });
        unlock.join().unwrap();
        assert_eq!(
            created.map_err(|e| genesis_core::error_chain(&e)),
            Ok(Created::New(id))
        );
        assert!(recorded.is_ok(), "{recorded:?}");
    }

    #[test]
    fn a_cancel_request_is_kept_for_running_runs_only_and_read_back() {
        let store = SqliteStore::in_memory().unwrap();
        let plan = plan();
        let id = RunId::new("run_cancel");
        store.create_run(&id, &plan, None, None, None).unwrap();
        let run = store.get_run(id.as_str()).unwrap().unwrap();
        assert_eq!(run.cancel_requested_at_ms, None);
        assert!(!run.was_cancelled());
        assert!(store.request_cancel(id.as_str()).unwrap());
        let first = store
            .get_run(id.as_str())
            .unwrap()
            .unwrap()
            .cancel_requested_at_ms;
        assert!(first.is_some());
        // A second request keeps the first one's time.
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(store.request_cancel(id.as_str()).unwrap());
        let run = store.get_run(id.as_str()).unwrap().unwrap();
        assert_eq!(run.cancel_requested_at_ms, first);
        assert!(run.was_cancelled());
        // Unknown and finished runs are left alone.
        assert!(!store.request_cancel("run_none").unwrap());
        let done = RunId::new("run_done");
        store.create_run(&done, &plan, None, None, None).unwrap();
        store
            .record(
                &done,
                &RunEvent::RunFinished {
                    status: RunStatus::Succeeded,
                    cost: Usd::ZERO,
                    input_tokens: 0,
                    output_tokens: 0,
                },
            )
            .unwrap();
        assert!(!store.request_cancel(done.as_str()).unwrap());
        assert_eq!(
            store
                .get_run(done.as_str())
                .unwrap()
                .unwrap()
                .cancel_requested_at_ms,
            None
        );
    }

    #[test]
    fn a_cancelled_run_ends_with_its_unfinished_tasks_cancelled_and_its_cost_kept() {
        let store = SqliteStore::in_memory().unwrap();
        let plan = plan();
        assert!(plan.tasks.len() > 1, "{plan:?}");
        let id = RunId::new("run_half");
        store.create_run(&id, &plan, None, None, None).unwrap();
        let first = plan.tasks[0].id.clone();
        let agent = plan.tasks[0].agent.clone().unwrap();
        store
            .record_all(
                &id,
                &[
                    RunEvent::TaskSucceeded {
                        task_id: first.clone(),
                        agent,
                        model: None,
                        output: "done".into(),
                        flagged: None,
                        truncated: false,
                        cost: usd(0.5),
                        input_tokens: 1_200,
                        output_tokens: 345,
                        attempts: 1,
                        duration_ms: 1,
                        queued_ms: 0,
                    },
                    RunEvent::Cost { spent: usd(0.75) },
                ],
            )
            .unwrap();
        // A task the executor had begun to journal as cancelled: the run was cancelled
        // while it ran, after one of its calls had answered.
        let second = plan.tasks[1].id.clone();
        store
            .record(
                &id,
                &RunEvent::TaskSkipped {
                    task_id: second.clone(),
                    reason: super::super::RUN_CANCELLED.into(),
                    input_tokens: 40,
                    output_tokens: 7,
                    cost: usd(0.25),
                    attempts: 2,
                },
            )
            .unwrap();
        let run = store.get_run(id.as_str()).unwrap().unwrap();
        assert_eq!(run.cancel_requested_at_ms, None);
        assert!(run.was_cancelled());
        // The tokens its agents reported are kept with the task, cancelled ones too.
        let done = run.tasks.iter().find(|t| t.task_id == first).unwrap();
        assert_eq!((done.input_tokens, done.output_tokens), (1_200, 345));
        let cancelled = run.tasks.iter().find(|t| t.task_id == second).unwrap();
        assert_eq!((cancelled.input_tokens, cancelled.output_tokens), (40, 7));
        // And what the run was charged for it, with the calls it made (audit L6-7:
        // the UPDATE left a cancelled or failed task at cost 0).
        assert!(
            (cancelled.cost.as_f64() - 0.25).abs() < 1e-12,
            "{}",
            cancelled.cost
        );
        assert_eq!(cancelled.attempts, 2);
        assert_eq!(run.token_totals(), (1_240, 352));
        let events = run.cancellation();
        // The tasks not finished yet (not the succeeded nor the cancelled one), then
        // the end of the run.
        assert_eq!(events.len(), plan.tasks.len() - 2 + 1, "{events:?}");
        assert_eq!(
            events.last(),
            Some(&RunEvent::RunFinished {
                status: RunStatus::Cancelled,
                cost: usd(0.75),
                input_tokens: 1_240,
                output_tokens: 352,
            })
        );
        store.record_all(&id, &events).unwrap();
        let run = store.get_run(id.as_str()).unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Cancelled);
        assert!((run.cost.as_f64() - 0.75).abs() < 1e-9);
        for t in &run.tasks {
            let want = if t.task_id == first {
                TaskStatus::Succeeded
            } else {
                TaskStatus::Cancelled
            };
            assert_eq!(t.status, want, "{t:?}");
        }
        assert!(store.unfinished_runs().unwrap().is_empty());
    }

    #[test]
    fn a_journaled_run_cost_never_goes_down() {
        let store = SqliteStore::in_memory().unwrap();
        let id = RunId::new("run_cost");
        store.create_run(&id, &plan(), None, None, None).unwrap();
        store
            .record(&id, &RunEvent::Cost { spent: usd(0.7) })
            .unwrap();
        store
            .record(&id, &RunEvent::Cost { spent: usd(0.2) })
            .unwrap();
        store
            .record(
                &id,
                &RunEvent::RunFinished {
                    status: RunStatus::Failed,
                    cost: Usd::ZERO,
                    input_tokens: 0,
                    output_tokens: 0,
                },
            )
            .unwrap();
        let run = store.get_run(id.as_str()).unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert!((run.cost.as_f64() - 0.7).abs() < 1e-9, "{}", run.cost);
    }
}
