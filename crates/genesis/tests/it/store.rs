//! The SQLite run store: durability across reopen, idempotency, events, resumption.

use std::sync::Arc;

use genesis::Orchestrator;
use genesis::core::{AgentId, RunId, Usd};
use genesis::run::{RunEvent, RunJournal, RunStatus, TaskStatus};
use genesis::store::{Created, RunStore, SqliteStore};

use crate::TempDir;

fn tempdir(tag: &str) -> TempDir {
    TempDir::new(&format!("store-{tag}"))
}

fn plan() -> genesis::Plan {
    Orchestrator::builder()
        .build()
        .unwrap()
        .plan_sync("Fix the crash when uploading large files")
        .unwrap()
}

#[test]
fn runs_survive_reopening_with_task_states_and_events() {
    let dir = tempdir("reopen");
    let plan = plan();
    let id = RunId::new("run_1");
    {
        let store = SqliteStore::open(&dir).unwrap();
        assert_eq!(
            store
                .create_run(
                    &id,
                    &plan,
                    Some(Usd::new(1.0).unwrap()),
                    Some("k1"),
                    Some("alice")
                )
                .unwrap(),
            Created::New(id.clone())
        );
        let t1 = plan.tasks[0].id.clone();
        store
            .record(
                &id,
                &RunEvent::TaskStarted {
                    task_id: t1.clone(),
                    agent: AgentId::new("qa"),
                    attempt: 1,
                    model: Some("claude-3-5-haiku-latest".into()),
                },
            )
            .unwrap();
        store
            .record(
                &id,
                &RunEvent::TaskSucceeded {
                    task_id: t1,
                    agent: AgentId::new("qa"),
                    // Another model answered than the one first started (a re-route).
                    model: Some("gpt-4o-mini".into()),
                    output: "reproduced".into(),
                    flagged: None,
                    truncated: false,
                    cost: Usd::new(0.25).unwrap(),
                    input_tokens: 0,
                    output_tokens: 0,
                    attempts: 1,
                    duration_ms: 5,
                    queued_ms: 0,
                },
            )
            .unwrap();
        store
            .record(
                &id,
                &RunEvent::Cost {
                    spent: Usd::new(0.25).unwrap(),
                },
            )
            .unwrap();
    }
    let store = SqliteStore::open(&dir).unwrap();
    let run = store.get_run("run_1").unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.plan, plan);
    assert_eq!(run.tasks.len(), plan.tasks.len());
    assert_eq!(run.tasks[0].status, TaskStatus::Succeeded);
    assert_eq!(run.tasks[0].output.as_deref(), Some("reproduced"));
    assert_eq!(
        run.tasks[0].model.as_ref().map(|m| m.as_str()),
        Some("gpt-4o-mini"),
        "the model that answered is kept"
    );
    assert_eq!(run.tasks[1].model, None, "no call, no model");
    assert_eq!(run.cost, Usd::new(0.25).unwrap());
    assert_eq!(run.budget, Some(Usd::new(1.0).unwrap()));
    assert_eq!(run.subject.as_deref(), Some("alice"));
    // Kept for resuming, never serialised (a subject may be an API key).
    let json = serde_json::to_string(&run).unwrap();
    assert!(
        !json.contains("alice") && !json.contains("subject"),
        "{json}"
    );
    assert_eq!(store.unfinished_runs().unwrap().len(), 1);
    let events = store.events_since("run_1", 0).unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(store.events_since("run_1", 2).unwrap().len(), 1);
    // Idempotency: the same key from the same subject finds the same run.
    assert_eq!(
        store
            .create_run(&RunId::new("run_2"), &plan, None, Some("k1"), Some("alice"))
            .unwrap(),
        Created::Existing(id.clone())
    );
    assert_eq!(
        store
            .run_for_idempotency_key(Some("alice"), "k1")
            .unwrap()
            .as_deref(),
        Some("run_1")
    );
    // Finishing removes it from the resume list.
    store
        .record(
            &id,
            &RunEvent::RunFinished {
                status: RunStatus::Succeeded,
                cost: Usd::new(0.25).unwrap(),
                input_tokens: 0,
                output_tokens: 0,
            },
        )
        .unwrap();
    assert!(store.unfinished_runs().unwrap().is_empty());
    // Its only output is a subtask's: no top-level output, so no answer (`None`, not
    // an empty string).
    assert_eq!(store.get_run("run_1").unwrap().unwrap().answer, None);
    assert!(store.spent_since(0).unwrap().as_f64() >= 0.25);
    assert!(store.ping());
}

#[test]
fn listing_pages_with_a_cursor_and_filters_by_status() {
    let store = SqliteStore::in_memory().unwrap();
    let plan = plan();
    for i in 0..5 {
        store
            .create_run(&RunId::new(format!("r{i}")), &plan, None, None, None)
            .unwrap();
    }
    store
        .record(
            &RunId::new("r0"),
            &RunEvent::RunFinished {
                status: RunStatus::Failed,
                cost: Usd::ZERO,
                input_tokens: 0,
                output_tokens: 0,
            },
        )
        .unwrap();
    let first = store.list_runs(None, 2, None).unwrap();
    assert_eq!(first.len(), 2);
    let second = store
        .list_runs(None, 2, Some(first[1].id.as_str()))
        .unwrap();
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|r| !first.iter().any(|f| f.id == r.id)));
    let failed = store.list_runs(Some(RunStatus::Failed), 10, None).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id.as_str(), "r0");
    assert!(store.get_run("nope").unwrap().is_none());
}

/// Security audit D4: idempotency keys were shared by every subject (bob's submission
/// with alice's key got alice's run), and nothing read a run for one subject only.
#[test]
fn idempotency_keys_are_per_subject() {
    let store = SqliteStore::in_memory().unwrap();
    let plan = plan();
    let create = |id: &str, key: &str, subject: Option<&str>| {
        store
            .create_run(&RunId::new(id), &plan, None, Some(key), subject)
            .unwrap()
    };
    assert_eq!(
        create("a1", "k", Some("alice")),
        Created::New(RunId::new("a1"))
    );
    assert_eq!(
        create("b1", "k", Some("bob")),
        Created::New(RunId::new("b1"))
    );
    assert_eq!(create("n1", "k", None), Created::New(RunId::new("n1")));
    assert_eq!(
        create("a2", "k", Some("alice")),
        Created::Existing(RunId::new("a1"))
    );
    assert_eq!(
        create("b2", "k", Some("bob")),
        Created::Existing(RunId::new("b1"))
    );
    assert_eq!(create("n2", "k", None), Created::Existing(RunId::new("n1")));
    let key_of = |id: &str| store.get_run(id).unwrap().unwrap().idempotency_key;
    assert_eq!(key_of("b1").as_deref(), Some("k"));
}

#[test]
fn runs_are_read_and_listed_per_subject() {
    use genesis::store::{ListCursor, RunScope};

    let store = SqliteStore::in_memory().unwrap();
    let plan = plan();
    for (id, subject) in [
        ("r0", None),
        ("r1", Some("alice")),
        ("r2", Some("bob")),
        ("r3", Some("alice")),
        ("r4", Some("alice")),
    ] {
        store
            .create_run(&RunId::new(id), &plan, None, None, subject)
            .unwrap();
        // Distinct creation times, so the order is the insertion order.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let ids = |runs: Vec<genesis::store::RunSummary>| {
        runs.into_iter()
            .map(|r| r.id.to_string())
            .collect::<Vec<_>>()
    };
    let alice = RunScope::Subject("alice");
    assert_eq!(
        ids(store.list_runs_in(alice, None, 10, None).unwrap()),
        ["r4", "r3", "r1"]
    );
    let first = store.list_runs_in(alice, None, 2, None).unwrap();
    let token = ListCursor::after(&first[1]).to_string();
    assert_eq!(
        ids(store.list_runs_in(alice, None, 2, Some(&token)).unwrap()),
        ["r1"]
    );
    // An older client's cursor (a run id) must be one of the subject's runs.
    assert_eq!(
        ids(store.list_runs_in(alice, None, 5, Some("r3")).unwrap()),
        ["r1"]
    );
    assert!(matches!(
        store.list_runs_in(alice, None, 5, Some("r2")),
        Err(genesis::store::StoreError::UnknownCursor { .. })
    ));
    assert_eq!(
        ids(store
            .list_runs_in(RunScope::Subject("bob"), None, 10, None)
            .unwrap()),
        ["r2"]
    );
    assert_eq!(
        ids(store
            .list_runs_in(RunScope::Subject("carol"), None, 10, None)
            .unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(store.list_runs(None, 10, None).unwrap()),
        ["r4", "r3", "r2", "r1", "r0"],
        "every run, with or without a subject"
    );
    store
        .record(
            &RunId::new("r3"),
            &RunEvent::RunFinished {
                status: RunStatus::Failed,
                cost: Usd::ZERO,
                input_tokens: 0,
                output_tokens: 0,
            },
        )
        .unwrap();
    assert_eq!(
        ids(store
            .list_runs_in(alice, Some(RunStatus::Failed), 10, None)
            .unwrap()),
        ["r3"]
    );
    assert_eq!(
        ids(store
            .list_runs_in(RunScope::Subject("bob"), Some(RunStatus::Failed), 10, None)
            .unwrap()),
        Vec::<String>::new()
    );
    // One run: in its subject's scope and in `All`; a run without a subject only there.
    assert!(store.run_in_scope("r1", alice).unwrap());
    assert!(!store.run_in_scope("r2", alice).unwrap());
    assert!(store.run_in_scope("r2", RunScope::All).unwrap());
    assert!(!store.run_in_scope("r0", alice).unwrap());
    assert!(store.run_in_scope("r0", RunScope::All).unwrap());
    assert!(!store.run_in_scope("nope", RunScope::All).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_journals_every_task_into_the_store() {
    use genesis::run::{Agent, AgentError, AgentOutput, AgentRequest, AgentSet};

    struct Echo;
    #[async_trait::async_trait]
    impl Agent for Echo {
        async fn execute(&self, r: AgentRequest) -> Result<AgentOutput, AgentError> {
            Ok(AgentOutput {
                text: format!("done {}", r.task.id),
                cost: Usd::new(0.01).unwrap(),
                ..AgentOutput::default()
            })
        }
    }
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Arc::new(Echo)))
        .build()
        .unwrap();
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let plan = plan();
    let id = RunId::new("run_x");
    store.create_run(&id, &plan, None, None, None).unwrap();
    let options = genesis::RunOptions {
        run_id: Some(id.clone()),
        journal: Some(store.clone()),
        ..Default::default()
    };
    let result = genesis.execute(plan.clone(), options).unwrap().wait().await;
    assert_eq!(result.status, RunStatus::Succeeded);
    let run = store.get_run("run_x").unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert!(
        run.tasks
            .iter()
            .all(|t| t.status == TaskStatus::Succeeded && t.output.is_some())
    );
    assert!((run.cost.as_f64() - 0.01 * plan.tasks.len() as f64).abs() < 1e-9);
}

/// The schema of stores written before it was versioned (`user_version` 0): no
/// `subject` column. A fixture: what such a database holds.
const SCHEMA_V0_RUNS: &str = "
CREATE TABLE runs (
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
CREATE TABLE tasks (
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
";

#[test]
fn a_store_written_before_subjects_were_journaled_opens_and_its_runs_resume_as_before() {
    let dir = tempdir("schema-v0");
    let plan = plan();
    // As the old build stored it: no subject, and a plan without its routing stages.
    let mut old_plan = serde_json::to_value(&plan).unwrap();
    old_plan.as_object_mut().unwrap().remove("routing");
    {
        let conn = rusqlite::Connection::open(dir.join("genesis.db")).unwrap();
        conn.execute_batch(SCHEMA_V0_RUNS).unwrap();
        conn.execute(
            "INSERT INTO runs (id, request, status, plan_json, idempotency_key, created_at, updated_at) \
             VALUES ('run_old', ?1, 'running', ?2, 'old-key', 1, 1)",
            rusqlite::params![plan.request, old_plan.to_string()],
        )
        .unwrap();
        for (i, t) in plan.tasks.iter().enumerate() {
            conn.execute(
                "INSERT INTO tasks (run_id, task_id, position, parent, status, agent) \
                 VALUES ('run_old', ?1, ?2, ?3, 'pending', ?4)",
                rusqlite::params![
                    t.id.as_str(),
                    i as i64,
                    t.parent.as_ref().map(|p| p.as_str()),
                    t.agent.as_ref().map(|a| a.as_str())
                ],
            )
            .unwrap();
        }
    }
    let user_version = || {
        rusqlite::Connection::open(dir.join("genesis.db"))
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .unwrap()
    };
    assert_eq!(user_version(), 0);
    {
        let store = SqliteStore::open(&dir).unwrap();
        let old = store.get_run("run_old").unwrap().unwrap();
        assert_eq!(old.subject, None, "resumes as anonymous, as before");
        assert_eq!(old.plan.routing, None);
        assert_eq!(old.tasks.len(), plan.tasks.len());
        assert!(
            old.tasks
                .iter()
                .all(|t| (t.input_tokens, t.output_tokens) == (0, 0)),
            "tasks stored before tokens were read as 0"
        );
        assert!(
            old.tasks
                .iter()
                .all(|t| t.flagged.is_none() && !t.truncated),
            "tasks stored before output flags read as clean and whole"
        );
        assert!(
            old.tasks.iter().all(|t| t.model.is_none()),
            "tasks stored before models were kept read as none"
        );
        assert_eq!(store.unfinished_runs().unwrap().len(), 1);
        store
            .create_run(&RunId::new("run_new"), &plan, None, None, Some("carol"))
            .unwrap();
        // Its idempotency key is kept, for runs without a subject; another subject's
        // run may use the same key.
        assert_eq!(old.idempotency_key.as_deref(), Some("old-key"));
        assert_eq!(
            store
                .create_run(&RunId::new("run_again"), &plan, None, Some("old-key"), None)
                .unwrap(),
            Created::Existing(RunId::new("run_old"))
        );
        assert_eq!(
            store
                .create_run(
                    &RunId::new("run_carol"),
                    &plan,
                    None,
                    Some("old-key"),
                    Some("carol")
                )
                .unwrap(),
            Created::New(RunId::new("run_carol"))
        );
    }
    assert_eq!(user_version(), 8, "migrated");
    // Reopening a migrated store changes nothing.
    let store = SqliteStore::open(&dir).unwrap();
    assert_eq!(user_version(), 8);
    // Nobody asked to cancel the old run: it resumes.
    let old = store.get_run("run_old").unwrap().unwrap();
    assert_eq!(old.cancel_requested_at_ms, None);
    assert!(!old.was_cancelled());
    let new = store.get_run("run_new").unwrap().unwrap();
    assert_eq!(new.subject.as_deref(), Some("carol"));
    assert_eq!(new.plan, plan);
    assert_eq!(store.get_run("run_old").unwrap().unwrap().subject, None);
}

/// Processes opening the same new database at once all get it: SQLite refuses the
/// switch to WAL with "database is locked" at once to all but one of them, and the
/// store retries (review R5: 5–7 of 160 opens failed).
#[test]
fn concurrent_first_opens_of_a_new_database_all_succeed() {
    let mut failures = Vec::new();
    for round in 0..30 {
        // A directory nobody created yet: the opens race to create it and the database.
        let parent = tempdir(&format!("open-race-{round}"));
        let dir = parent.join("data");
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let (dir, barrier) = (dir.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    SqliteStore::open(&dir).map(|_| ())
                })
            })
            .collect();
        for open in opens {
            if let Err(e) = open.join().unwrap() {
                failures.push(e.to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} opens failed: {failures:?}",
        failures.len()
    );
}

/// Audit S6 D6: a learned-state row whose bytes were damaged (not UTF-8) failed the whole
/// load, and with it the server's start ("invalid utf-8 sequence ... at index 1"). It is
/// skipped like a row whose JSON does not decode; the good rows still load. And a data
/// directory the store cannot open is named in the error.
#[test]
fn a_damaged_learned_row_is_skipped_and_an_unopenable_store_names_its_file() {
    let dir = tempdir("learned-damaged");
    let store = SqliteStore::open(&dir).unwrap();
    let good = genesis::learning::LearnedState {
        success_rate: 0.9,
        outcomes: Default::default(),
        examples: vec!["Fix the login bug".to_owned()],
        plans: Vec::new(),
    };
    store.save_learned(&[(AgentId::new("good"), good)]).unwrap();
    let raw = rusqlite::Connection::open(dir.join("genesis.db")).unwrap();
    raw.execute(
        "INSERT INTO learned_agents (agent, state_json, updated_at) VALUES ('bad', CAST(X'7b22ff' AS TEXT), 0)",
        [],
    )
    .unwrap();
    drop(raw);
    let loaded = store.load_learned().unwrap();
    let agents: Vec<&str> = loaded.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(agents, ["good"]);

    // A file where the database should be that is not one.
    let other = tempdir("not-a-database");
    std::fs::write(other.join("genesis.db"), vec![0x42u8; 4096]).unwrap();
    let err = SqliteStore::open(&other).unwrap_err();
    let chain = genesis::core::error_chain(&err);
    assert!(
        chain.contains(&other.join("genesis.db").display().to_string()),
        "{chain}"
    );
}

/// Audit R8 H6: a failed run's answer holds the outputs of the top-level tasks that
/// succeeded, and nothing said it was not the whole answer.
#[test]
fn a_failed_run_with_an_answer_is_partial() {
    let dir = tempdir("partial");
    let store = SqliteStore::open(&dir).unwrap();
    // A plan whose top-level tasks are its root tasks: one succeeds, one fails.
    let plan = Orchestrator::builder()
        .build()
        .unwrap()
        .plan_sync("Write the release notes and review the budget")
        .unwrap();
    let top: Vec<_> = plan.tasks.iter().filter(|t| t.parent.is_none()).collect();
    assert!(top.len() >= 2, "{:#?}", plan.tasks);
    let finish = |id: &RunId, status| {
        store
            .record(
                id,
                &RunEvent::RunFinished {
                    status,
                    cost: Usd::ZERO,
                    input_tokens: 0,
                    output_tokens: 0,
                },
            )
            .unwrap();
    };
    for (n, failed) in [(1, true), (2, false)] {
        let id = RunId::new(format!("run_{n}"));
        store.create_run(&id, &plan, None, None, None).unwrap();
        store
            .record(
                &id,
                &RunEvent::TaskSucceeded {
                    task_id: top[0].id.clone(),
                    agent: AgentId::new("writer"),
                    model: None,
                    output: "the notes".into(),
                    flagged: None,
                    truncated: false,
                    cost: Usd::ZERO,
                    input_tokens: 0,
                    output_tokens: 0,
                    attempts: 1,
                    duration_ms: 1,
                    queued_ms: 0,
                },
            )
            .unwrap();
        if failed {
            store
                .record(
                    &id,
                    &RunEvent::TaskFailed {
                        task_id: top[1].id.clone(),
                        reason: "agent down".into(),
                        attempts: 1,
                        model: None,
                        input_tokens: 0,
                        output_tokens: 0,
                        cost: Usd::ZERO,
                    },
                )
                .unwrap();
            finish(&id, RunStatus::Failed);
        } else {
            finish(&id, RunStatus::Succeeded);
        }
        let run = store.get_run(id.as_str()).unwrap().unwrap();
        assert!(run.answer.as_deref().unwrap().contains("the notes"));
        assert_eq!(run.is_partial(), failed, "{n}");
    }
}
