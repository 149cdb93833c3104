//! Integration tests of the Genesis server: the app in-process on loopback (`api`), its
//! connection layer (`transport`), and the real binary killed with SIGKILL mid-run and
//! restarted (`crash`).

// Test helpers outside #[test] functions fail loudly too (clippy.toml only covers
// the test functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod admission;
mod api;
mod api_answers;
mod budget;
mod cohorts;
mod config_files;
mod crash;
mod durability;
mod exposure;
mod isolation;
mod logs;
mod openapi;
mod resume;
mod startup;
mod store_unwritable;
mod support;
mod transport;

// The stored-run set-up of `genesis`'s own integration tests, compiled here too so a
// run "journaled before a restart" is written one way for the library and the server.
#[path = "../../../../crates/genesis/tests/it/support.rs"]
mod journal;

use genesis::Plan;
use genesis::core::RunId;
use genesis::store::SqliteStore;

/// A new run of `request` journaled in the data directory of `dir`, as a server that
/// stopped before running any of it would leave it: the store, the run's id and plan.
fn journal_run(dir: &support::TempDir, request: &str) -> (SqliteStore, RunId, Plan) {
    let plan = journal::plan_of(request);
    let store = SqliteStore::open(&dir.path().join("data")).unwrap();
    let id = journal::create_run(&store, &plan);
    (store, id, plan)
}
