//! `genesis deploy tick --metrics-url` judges the rolled-out flag's own cohort when the
//! server counts it (`genesis_cohort_*{flag, variant}`), and the whole server's numbers
//! otherwise: an older server, another flag's cohort, or a step at 100 %.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::routing::get;

use crate::rollout_health::{genesis, percent, setup};
use crate::support::Out;

/// Requests and tasks, all fast (requests under 50 ms, tasks under 1 s).
#[derive(Clone, Copy, Default)]
struct Traffic {
    ok: u64,
    errors: u64,
    succeeded: u64,
    failed: u64,
}

fn traffic(ok: u64, errors: u64, succeeded: u64, failed: u64) -> Traffic {
    Traffic {
        ok,
        errors,
        succeeded,
        failed,
    }
}

/// A cohort's series, as the server renders them.
fn cohort_series(flag: &str, variant: &str, t: Traffic) -> String {
    let labels = format!("flag=\"{flag}\",variant=\"{variant}\"");
    let all = t.ok + t.errors;
    format!(
        "genesis_cohort_requests_total{{{labels},outcome=\"ok\"}} {ok}\n\
         genesis_cohort_requests_total{{{labels},outcome=\"error\"}} {errors}\n\
         genesis_cohort_request_duration_seconds_bucket{{{labels},le=\"0.05\"}} {all}\n\
         genesis_cohort_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {all}\n\
         genesis_cohort_tasks_total{{{labels},status=\"succeeded\"}} {succeeded}\n\
         genesis_cohort_tasks_total{{{labels},status=\"failed\"}} {failed}\n\
         genesis_cohort_task_duration_seconds_bucket{{{labels},le=\"1\"}} {succeeded}\n\
         genesis_cohort_task_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {succeeded}\n",
        ok = t.ok,
        errors = t.errors,
        succeeded = t.succeeded,
        failed = t.failed,
    )
}

/// The server-wide series for `server`, plus the cohort series of each
/// `(flag, on, off)` of `cohorts`.
fn exposition(server: Traffic, cohorts: &[(&str, Traffic, Traffic)]) -> String {
    let all = server.ok + server.errors;
    let mut text = format!(
        "process_start_time_seconds 1800000000\n\
         genesis_requests_total{{endpoint=\"/api/tasks\",status=\"200\"}} {ok}\n\
         genesis_requests_total{{endpoint=\"/api/tasks\",status=\"503\"}} {errors}\n\
         genesis_request_duration_seconds_bucket{{endpoint=\"/api/tasks\",le=\"0.05\"}} {all}\n\
         genesis_request_duration_seconds_bucket{{endpoint=\"/api/tasks\",le=\"+Inf\"}} {all}\n\
         genesis_tasks_total{{status=\"succeeded\"}} {succeeded}\n\
         genesis_tasks_total{{status=\"failed\"}} {failed}\n\
         genesis_task_duration_seconds_bucket{{le=\"1\"}} {succeeded}\n\
         genesis_task_duration_seconds_bucket{{le=\"+Inf\"}} {succeeded}\n",
        ok = server.ok,
        errors = server.errors,
        succeeded = server.succeeded,
        failed = server.failed,
    );
    for (flag, on, off) in cohorts {
        text.push_str(&cohort_series(flag, "on", *on));
        text.push_str(&cohort_series(flag, "off", *off));
    }
    text
}

/// Serves whatever `body` holds at `/metrics`; returns the URL.
async fn metrics_server(body: Arc<Mutex<String>>) -> String {
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let body = Arc::clone(&body);
            async move { body.lock().unwrap().clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// `deploy start new_router` with the baseline taken from `url`.
async fn start(dir: &Path, url: &str) {
    let out = genesis(
        dir,
        &["deploy", "start", "new_router", "--metrics-url", url],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("baseline taken from"), "{}", out.stdout);
}

async fn tick(dir: &Path, url: &str) -> Out {
    genesis(dir, &["deploy", "tick", "new_router", "--metrics-url", url]).await
}

/// docs/OPERATIONS.md used to say "the gate sees the whole server": at 1 % a feature
/// that failed half its cohort's tasks left the server-wide failure rate at 2 % (under
/// max_task_failure_rate 0.05) and advanced. The tick now judges the cohort: it rolls
/// back, naming the cohort; and the reverse, a server-wide outage that the cohort does
/// not share (another flag's cohort, say), no longer rolls this flag back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tick_judges_the_flags_on_cohort_not_the_whole_server() {
    let body = Arc::new(Mutex::new(exposition(Traffic::default(), &[])));
    let url = metrics_server(Arc::clone(&body)).await;

    // The cohort fails half its tasks; the server as a whole fails 2 %.
    let dir = setup("worse", "");
    start(&dir, &url).await;
    *body.lock().unwrap() = exposition(
        traffic(500, 0, 980, 20),
        &[(
            "new_router",
            traffic(20, 0, 10, 10),
            traffic(480, 0, 970, 10),
        )],
    );
    let out = tick(&dir, &url).await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("roll back: task failure rate 0.5 above max_task_failure_rate"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "sample: cohort new_router=on: 20 requests, error rate 0.0000 (0 failed), p95 "
        ) && out
            .stdout
            .contains("20 tasks finished, failure rate 0.5000 (10 failed)"),
        "{}",
        out.stdout
    );
    assert_eq!(percent(&dir), 0.0);

    // The server fails half its tasks (another flag's cohort does); this flag's cohort
    // is healthy and advances.
    let dir = setup("better", "");
    *body.lock().unwrap() = exposition(Traffic::default(), &[]);
    start(&dir, &url).await;
    *body.lock().unwrap() = exposition(
        traffic(500, 0, 100, 100),
        &[
            ("new_router", traffic(20, 0, 30, 0), traffic(480, 0, 70, 0)),
            (
                "halo_routing",
                traffic(100, 50, 0, 100),
                traffic(400, 0, 100, 0),
            ),
        ],
    );
    let out = tick(&dir, &url).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("advance to 5%"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("sample: cohort new_router=on: 20 requests, error rate 0.0000")
            && out
                .stdout
                .contains("30 tasks finished, failure rate 0.0000 (0 failed)"),
        "{}",
        out.stdout
    );
    assert_eq!(percent(&dir), 5.0);

    // Without the flag's cohort series (an older server) the tick judges the server,
    // and says so.
    let dir = setup("older", "");
    *body.lock().unwrap() = exposition(Traffic::default(), &[]);
    start(&dir, &url).await;
    *body.lock().unwrap() = exposition(traffic(500, 0, 100, 100), &[]);
    let out = tick(&dir, &url).await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("sample: server-wide: 500 requests, error rate 0.0000"),
        "{}",
        out.stdout
    );
}

/// A baseline written by a `genesis` that did not read cohorts cannot say what the
/// cohort's counters were: judged from it, the window would hold the cohort's numbers
/// since the server started. The tick takes a new baseline and holds, then judges the
/// cohort from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_from_before_cohorts_is_replaced_not_judged() {
    let earlier = ("new_router", traffic(50, 0, 0, 50), traffic(50, 0, 50, 0));
    let body = Arc::new(Mutex::new(exposition(traffic(100, 0, 50, 50), &[earlier])));
    let url = metrics_server(Arc::clone(&body)).await;
    let dir = setup("old-baseline", "");
    start(&dir, &url).await;
    // As the previous release wrote it: no cohort fields.
    let scrape = dir.join("data/rollouts/new_router.scrape.json");
    let mut old: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&scrape).unwrap()).unwrap();
    let fields = old.as_object_mut().unwrap();
    fields.remove("reads_cohorts");
    fields.remove("cohort");
    std::fs::write(&scrape, old.to_string()).unwrap();

    // Healthy since the baseline, but 50 failed cohort tasks from before it.
    *body.lock().unwrap() = exposition(
        traffic(600, 0, 550, 50),
        &[(
            "new_router",
            traffic(60, 0, 50, 50),
            traffic(540, 0, 500, 0),
        )],
    );
    let out = tick(&dir, &url).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("hold: baseline taken"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("the baseline has no cohort numbers (an older format)"),
        "{}",
        out.stdout
    );
    assert_eq!(percent(&dir), 1.0);

    // The next tick measures from the new baseline: 30 new cohort tasks, 20 failed.
    *body.lock().unwrap() = exposition(
        traffic(700, 0, 560, 70),
        &[(
            "new_router",
            traffic(70, 0, 60, 70),
            traffic(630, 0, 500, 0),
        )],
    );
    let out = tick(&dir, &url).await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("sample: cohort new_router=on: 10 requests")
            && out
                .stdout
                .contains("30 tasks finished, failure rate 0.6667 (20 failed)"),
        "{}",
        out.stdout
    );
}

/// At 100 % the flag splits nobody: the server stops counting its cohorts, but their
/// series stay in the exposition. The tick judges the whole server then, rather than a
/// cohort that no longer moves (held for insufficient traffic for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_100_percent_the_whole_server_is_judged() {
    let body = Arc::new(Mutex::new(exposition(Traffic::default(), &[])));
    let url = metrics_server(Arc::clone(&body)).await;
    let dir = setup("hundred", "steps = [50, 100]");
    start(&dir, &url).await;
    let cohort = ("new_router", traffic(50, 0, 40, 0), traffic(50, 0, 40, 0));
    *body.lock().unwrap() = exposition(traffic(100, 0, 80, 0), &[cohort]);
    let out = tick(&dir, &url).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("advance to 100%"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("sample: cohort new_router=on: 50 requests"),
        "{}",
        out.stdout
    );
    // At 100 %: the cohort's counters are frozen, the server's grow.
    *body.lock().unwrap() = exposition(traffic(300, 0, 280, 0), &[cohort]);
    let out = tick(&dir, &url).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("complete"), "{}", out.stdout);
    assert!(
        out.stdout.contains("sample: server-wide: 200 requests"),
        "{}",
        out.stdout
    );
}
