//! Rollout commands run at the same time (the audit R7's items 1 to 3): concurrent
//! `deploy start`/`rollback` of different flags both land, a rollback made while a tick
//! reads the metrics wins, and `deploy start` refuses a flag that is already on.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::routing::get;
use tokio::sync::{mpsc, watch};

use crate::support::{Out, run_in};
use crate::with_flags_file;

const FLAGS: &str = r#"{"flags": [
  {"name": "alpha", "enabled": false},
  {"name": "beta", "enabled": false, "strategy": {"type": "percentage", "percent": 0}},
  {"name": "halo_routing", "enabled": true, "strategy": {"type": "all"}},
  {"name": "ramped", "enabled": true, "strategy": {"type": "percentage", "percent": 25}},
  {"name": "december", "enabled": false, "strategy": {"type": "progressive",
    "start": "2026-12-01T00:00:00Z", "end": "2027-01-01T00:00:00Z",
    "from_percent": 0, "to_percent": 100, "steps": 4}}
]}"#;

fn genesis(dir: &Path, args: &[&str]) -> Out {
    let mut all = vec!["--config", "test.toml"];
    all.extend_from_slice(args);
    run_in(dir, &all, None, &[])
}

fn spawn(dir: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_genesis"))
        .args(["--config", "test.toml"])
        .args(args)
        .current_dir(dir)
        .env_remove("GENESIS_CONFIG")
        .env_remove("GENESIS_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> Out {
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs both commands at once and waits for both.
fn both(dir: &Path, a: &[&str], b: &[&str]) -> [Out; 2] {
    let (a, b) = (spawn(dir, a), spawn(dir, b));
    [finish(a), finish(b)]
}

fn flag(dir: &Path, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("flags.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap()
        .clone()
}

/// `(enabled, percent)` of a flag; the percent is -1 without a percentage strategy.
fn served(dir: &Path, name: &str) -> (bool, f64) {
    let f = flag(dir, name);
    let percent = match f["strategy"]["type"].as_str() {
        Some("percentage") => f["strategy"]["percent"].as_f64().unwrap(),
        _ => -1.0,
    };
    (f["enabled"].as_bool().unwrap(), percent)
}

/// The audit's repro: two `deploy start` (then two `rollback`) of different flags at the
/// same moment. Without a lock one read-splice-rename of the flags file overwrote the
/// other's (20 of 30 starts and 13 of 20 rollbacks lost).
#[test]
fn concurrent_starts_and_rollbacks_of_different_flags_all_land() {
    let dir = with_flags_file("race-two-flags", FLAGS);
    for round in 0..20 {
        std::fs::write(dir.join("flags.json"), FLAGS).unwrap();
        let _ = std::fs::remove_dir_all(dir.join("data"));
        for out in both(
            &dir,
            &["deploy", "start", "alpha"],
            &["deploy", "start", "beta"],
        ) {
            assert_eq!(out.code, 0, "round {round}: {}", out.stderr);
        }
        let file = std::fs::read_to_string(dir.join("flags.json")).unwrap();
        assert_eq!(
            (served(&dir, "alpha"), served(&dir, "beta")),
            ((true, 1.0), (true, 1.0)),
            "round {round}: one deploy start lost the other's write:\n{file}"
        );
        for out in both(&dir, &["rollback", "alpha"], &["rollback", "beta"]) {
            assert_eq!(out.code, 0, "round {round}: {}", out.stderr);
        }
        let file = std::fs::read_to_string(dir.join("flags.json")).unwrap();
        assert_eq!(
            (served(&dir, "alpha"), served(&dir, "beta")),
            ((false, 0.0), (false, 0.0)),
            "round {round}: a rollback was lost, the flag still serves traffic:\n{file}"
        );
    }
}

/// A command that cannot have the lock within its bounded wait fails naming the lock
/// file, and changes nothing.
#[test]
fn a_held_lock_is_waited_for_a_bounded_time_and_named() {
    let dir = with_flags_file("race-lock-held", FLAGS);
    let lock = std::fs::File::create(dir.join("flags.json.lock")).unwrap();
    lock.lock().unwrap();
    let out = genesis(&dir, &["rollback", "alpha"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("flags.json.lock") && out.stderr.contains("rule: rollout_lock"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("flags.json")).unwrap(),
        FLAGS
    );
    lock.unlock().unwrap();
    assert_eq!(genesis(&dir, &["rollback", "alpha"]).code, 0);
}

/// Answers `/metrics` with 100 healthy requests at once (the baseline), then, for every
/// later request, reports its arrival and answers 200 healthy requests only once
/// released.
async fn slow_metrics_server(
    arrived: mpsc::UnboundedSender<()>,
    release: watch::Receiver<bool>,
) -> String {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let (calls, arrived, mut release) =
                (Arc::clone(&calls), arrived.clone(), release.clone());
            async move {
                let ok = if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    100
                } else {
                    arrived.send(()).unwrap();
                    release.wait_for(|r| *r).await.unwrap();
                    200
                };
                format!(
                    "genesis_requests_total{{endpoint=\"/api/tasks\",status=\"200\"}} {ok}\n\
                     genesis_request_duration_seconds_bucket{{endpoint=\"/api/tasks\",le=\"0.05\"}} {ok}\n\
                     genesis_request_duration_seconds_bucket{{endpoint=\"/api/tasks\",le=\"+Inf\"}} {ok}\n\
                     genesis_tasks_total{{status=\"succeeded\"}} 0\n\
                     genesis_tasks_total{{status=\"failed\"}} 0\n"
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn genesis_async(dir: &Path, args: &[&str]) -> Out {
    let dir = dir.to_owned();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        genesis(&dir, &args)
    })
    .await
    .unwrap()
}

/// The audit's item 2: a tick read the state, scraped for seconds, then saved its own
/// copy over a rollback made meanwhile, and the next healthy tick switched the flag on
/// again. Now the rollback wins: the tick writes nothing and exits 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_during_a_slow_tick_wins() {
    let dir = with_flags_file("race-slow-tick", FLAGS);
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let (release, release_rx) = watch::channel(false);
    let url = slow_metrics_server(arrived_tx, release_rx).await;
    let out = genesis_async(&dir, &["deploy", "start", "alpha", "--metrics-url", &url]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("baseline taken"), "{}", out.stdout);
    assert_eq!(served(&dir, "alpha"), (true, 1.0));

    // A healthy window (dwell 0 s): unhindered, this tick advances to 5 %.
    let tick = {
        let (dir, url) = (dir.to_path_buf(), url.clone());
        tokio::spawn(async move {
            genesis_async(&dir, &["deploy", "tick", "alpha", "--metrics-url", &url]).await
        })
    };
    tokio::time::timeout(Duration::from_secs(60), arrived.recv())
        .await
        .expect("the tick never asked for /metrics within 60 s")
        .unwrap();
    let out = genesis_async(&dir, &["rollback", "alpha", "--note", "incident 42"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    release.send(true).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), tick)
        .await
        .expect("the tick did not finish within 60 s of the answer")
        .unwrap();
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("advance to 5%")
            && out.stderr.contains("not written")
            && out.stderr.contains("rolled back to 0%"),
        "{}",
        out.stderr
    );
    assert_eq!(served(&dir, "alpha"), (false, 0.0));
    let status = genesis_async(&dir, &["status", "alpha"]).await;
    assert!(
        status.stdout.contains("rolled back to 0%") && status.stdout.contains("incident 42"),
        "{}",
        status.stdout
    );
    // The next healthy tick leaves a rolled-back flag off.
    let out = genesis_async(
        &dir,
        &[
            "deploy",
            "tick",
            "alpha",
            "--error-rate",
            "0",
            "--p95-ms",
            "10",
            "--requests",
            "500",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(served(&dir, "alpha"), (false, 0.0));
}

/// The audit's item 3: `deploy start` took a flag that was on for everyone down to 1 %,
/// and a rollback then switched it off for everyone. Now it is refused naming the flag,
/// its strategy and percentage and `--force`; forced, the definition is recorded and the
/// rollback says what it was.
#[test]
fn deploy_start_refuses_a_flag_that_is_already_on_unless_forced() {
    let dir = with_flags_file("race-already-on", FLAGS);
    for (name, what) in [
        ("halo_routing", "strategy all (100%)"),
        ("ramped", "strategy percentage 25%"),
        ("december", "strategy progressive"),
    ] {
        let out = genesis(&dir, &["deploy", "start", name]);
        assert_eq!(out.code, 2, "{name}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("{name} is "))
                && out.stderr.contains(what)
                && out.stderr.contains("--force")
                && out.stderr.contains("rule: flag_already_on"),
            "{name}: {}",
            out.stderr
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("flags.json")).unwrap(),
        FLAGS
    );
    assert!(!dir.join("data/rollouts/halo_routing.json").exists());

    let out = genesis(&dir, &["deploy", "start", "halo_routing", "--force"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("was on, strategy all (100%)"),
        "{}",
        out.stdout
    );
    assert_eq!(served(&dir, "halo_routing"), (true, 1.0));
    // Restarting its own rollout is not "already on".
    let out = genesis(&dir, &["deploy", "start", "halo_routing", "--restart"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = genesis(&dir, &["status", "halo_routing"]);
    assert!(
        out.stdout
            .contains("before the rollout (deploy start --force): on, strategy all (100%)"),
        "{}",
        out.stdout
    );
    let out = genesis(&dir, &["rollback", "halo_routing"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("before the rollout (deploy start --force): on, strategy all (100%)"),
        "{}",
        out.stdout
    );
    assert_eq!(served(&dir, "halo_routing"), (false, 0.0));
    // Off now: a new rollout needs no --force and forgets the old definition.
    assert_eq!(genesis(&dir, &["deploy", "start", "halo_routing"]).code, 0);
    let out = genesis(&dir, &["status", "halo_routing"]);
    assert!(!out.stdout.contains("before the rollout"), "{}", out.stdout);
}
