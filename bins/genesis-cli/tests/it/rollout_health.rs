//! `genesis deploy` judging what matters: task outcomes read from a real server's
//! `/metrics`, baselines taken at start, low-traffic windows that add up, kill switches
//! refused, and the rule named for bad settings and bad samples.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::{get, post};
use genesis::GenesisConfig;

use crate::support::{Out, TempDir, builtin_agent_ids, run_in, scratch, serve};

const FLAGS: &str = r#"{"flags": [
  {"name": "new_router", "enabled": false},
  {"name": "emergency_shutdown", "enabled": false},
  {"name": "maintenance_mode", "enabled": false},
  {"name": "orchestration_enabled", "enabled": true}
]}"#;

/// A scratch dir with [`FLAGS`] and `test.toml` holding `[flags.rollout]` `rollout`
/// (dwell 0 s, and min_requests 10 unless `rollout` sets it).
pub(crate) fn setup(tag: &str, rollout: &str) -> TempDir {
    let dir = scratch(tag);
    std::fs::write(dir.join("flags.json"), FLAGS).unwrap();
    std::fs::write(
        dir.join("test.toml"),
        format!(
            "[flags]\nfile = \"flags.json\"\n[flags.rollout]\ndwell = \"0s\"\n{min}{rollout}\n[server]\ndata_dir = \"data\"\n",
            min = if rollout.contains("min_requests") { "" } else { "min_requests = 10\n" }
        ),
    )
    .unwrap();
    dir
}

/// `genesis --config test.toml args` in `dir`, off the async workers.
pub(crate) async fn genesis(dir: &Path, args: &[&str]) -> Out {
    let dir = dir.to_owned();
    let mut all: Vec<String> = vec!["--config".into(), "test.toml".into()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    tokio::task::spawn_blocking(move || {
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run_in(&dir, &all, None, &[])
    })
    .await
    .unwrap()
}

pub(crate) fn percent(dir: &Path) -> f64 {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("flags.json")).unwrap()).unwrap();
    let f = v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "new_router")
        .unwrap()
        .clone();
    f["strategy"]["percent"].as_f64().unwrap_or(-1.0)
}

/// An exposition with `ok` 200s and `errors` 503s on `/api/tasks`, all under 50 ms.
fn exposition(ok: u64, errors: u64) -> String {
    let all = ok + errors;
    format!(
        "genesis_requests_total{{endpoint=\"/api/tasks\",status=\"200\"}} {ok}\n\
         genesis_requests_total{{endpoint=\"/api/tasks\",status=\"503\"}} {errors}\n\
         genesis_request_duration_seconds_bucket{{endpoint=\"/api/tasks\",le=\"0.05\"}} {all}\n\
         genesis_request_duration_seconds_bucket{{endpoint=\"/api/tasks\",le=\"+Inf\"}} {all}\n\
         genesis_tasks_total{{status=\"succeeded\"}} 0\n\
         genesis_tasks_total{{status=\"failed\"}} 0\n"
    )
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

/// The audit's repro, end to end: every agent answers 500, runs are accepted with 202
/// and their tasks fail. The tick used to read "error rate 0.0000" and advance; reading
/// the real server's `/metrics` it now rolls back because of the task failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_rolls_back_when_a_real_servers_tasks_fail() {
    // An agent backend that fails every call.
    let stub = axum::Router::new().route(
        "/tasks",
        post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "agent exploded") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stub_url = format!("http://{}/tasks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, stub).await.unwrap() });

    let server_dir = scratch("rollout-real-server");
    let mut config = GenesisConfig::default();
    config.server.data_dir = server_dir.join("data");
    config.flags.file = server_dir.join("no-flags-file.json");
    config.security.auth.environment = genesis::security::Environment::Dev;
    config.security.rate_limits.per_ip_per_minute = 1_000_000;
    config.security.rate_limits.per_ip_burst = 100_000;
    for id in builtin_agent_ids() {
        let backend: genesis::BackendConfig = serde_json::from_value(
            serde_json::json!({"type": "http", "url": stub_url, "timeout": "10s"}),
        )
        .unwrap();
        config.backends.insert(id, backend);
    }
    let state =
        genesis_server::AppState::from_config(config, &[], Some(crate::health::metrics())).unwrap();
    let base = serve(&state).await;
    let metrics_url = format!("{base}/metrics");

    // HTTP thresholds out of reach (other tests in this binary share the recorder and
    // answer 503s): only the task numbers can roll this rollout back.
    let dir = setup(
        "rollout-real",
        "max_error_rate = 1.0\nmax_p95_latency = \"10m\"",
    );
    let out = genesis(
        &dir,
        &[
            "deploy",
            "start",
            "new_router",
            "--metrics-url",
            &metrics_url,
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("baseline taken from"), "{}", out.stdout);

    let client = genesis::llm::http_client_builder()
        .unwrap()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let r = client
            .post(format!("{base}/api/tasks"))
            .json(&serde_json::json!({"description": "Fix the login bug", "mode": "run"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
        let body: serde_json::Value = r.json().await.unwrap();
        runs.push(body["run_id"].as_str().unwrap().to_owned());
    }
    for id in &runs {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let body: serde_json::Value = client
                .get(format!("{base}/api/tasks/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if body["status"] != "running" {
                assert_eq!(body["status"], "failed", "{body}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} still running after 120 s: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let out = genesis(
        &dir,
        &[
            "deploy",
            "tick",
            "new_router",
            "--metrics-url",
            &metrics_url,
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("roll back:") && out.stdout.contains("max_task_failure_rate"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("tasks finished, failure rate 1.0000"),
        "{}",
        out.stdout
    );
    assert_eq!(percent(&dir), 0.0);
    // The history keeps the sample that was judged.
    let out = genesis(&dir, &["status", "new_router"]).await;
    assert!(out.stdout.contains("sample: "), "{}", out.stdout);
    assert!(out.stdout.contains("failure rate 1.0000"), "{}", out.stdout);
}

/// The first tick used to judge the counters since the server started, incident
/// included. `deploy start --metrics-url` takes the baseline; without it the first
/// tick takes it and holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_from_before_the_rollout_is_never_judged() {
    // An incident before the rollout: 25 × 503.
    let body = Arc::new(Mutex::new(exposition(0, 25)));
    let url = metrics_server(Arc::clone(&body)).await;

    let dir = setup("rollout-baseline-start", "");
    let out = genesis(
        &dir,
        &["deploy", "start", "new_router", "--metrics-url", &url],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    *body.lock().unwrap() = exposition(120, 25);
    let out = genesis(
        &dir,
        &["deploy", "tick", "new_router", "--metrics-url", &url],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("advance to 5%"), "{}", out.stdout);
    assert!(
        out.stdout.contains("120 requests, error rate 0.0000"),
        "{}",
        out.stdout
    );

    // Started without a URL: the first tick only takes the baseline.
    *body.lock().unwrap() = exposition(0, 25);
    let dir = setup("rollout-baseline-tick", "");
    let out = genesis(&dir, &["deploy", "start", "new_router"]).await;
    assert!(
        out.stdout.contains("the first tick takes it"),
        "{}",
        out.stdout
    );
    let out = genesis(
        &dir,
        &["deploy", "tick", "new_router", "--metrics-url", &url],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("hold: baseline taken"),
        "{}",
        out.stdout
    );
    assert_eq!(percent(&dir), 1.0);
    *body.lock().unwrap() = exposition(120, 25);
    let out = genesis(
        &dir,
        &["deploy", "tick", "new_router", "--metrics-url", &url],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("advance to 5%"), "{}", out.stdout);
}

/// Low traffic used to hold for ever: each tick moved the baseline, so every window
/// stayed below min_requests. Now the window stays open until it is large enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_traffic_windows_add_up() {
    let body = Arc::new(Mutex::new(exposition(0, 0)));
    let url = metrics_server(Arc::clone(&body)).await;
    let dir = setup("rollout-accumulate", "");
    assert_eq!(
        genesis(
            &dir,
            &["deploy", "start", "new_router", "--metrics-url", &url]
        )
        .await
        .code,
        0
    );
    *body.lock().unwrap() = exposition(6, 0);
    let out = genesis(
        &dir,
        &["deploy", "tick", "new_router", "--metrics-url", &url],
    )
    .await;
    assert!(
        out.stdout
            .contains("hold: insufficient traffic: 6 requests + 0 tasks < min_requests 10"),
        "{}",
        out.stdout
    );
    *body.lock().unwrap() = exposition(12, 0);
    let out = genesis(
        &dir,
        &["deploy", "tick", "new_router", "--metrics-url", &url],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("advance to 5%"), "{}", out.stdout);
    assert!(out.stdout.contains("12 requests"), "{}", out.stdout);
}

/// 99 requests that all failed, min_requests 100: held for ever before, now rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clearly_failing_small_sample_rolls_back_and_task_numbers_can_be_given() {
    let dir = setup("rollout-early", "min_requests = 100");
    assert_eq!(
        genesis(&dir, &["deploy", "start", "new_router"]).await.code,
        0
    );
    let out = genesis(
        &dir,
        &[
            "deploy",
            "tick",
            "new_router",
            "--requests",
            "99",
            "--error-rate",
            "1.0",
            "--p95-ms",
            "30000",
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("99 failed requests in a sample of 99"),
        "{}",
        out.stdout
    );
    assert_eq!(percent(&dir), 0.0);

    // Task numbers on the command line: failing tasks roll back, naming the rule.
    assert_eq!(
        genesis(&dir, &["deploy", "start", "new_router"]).await.code,
        0
    );
    let out = genesis(
        &dir,
        &[
            "deploy",
            "tick",
            "new_router",
            "--requests",
            "500",
            "--error-rate",
            "0",
            "--p95-ms",
            "20",
            "--tasks",
            "200",
            "--task-failure-rate",
            "0.5",
            "--task-p95-ms",
            "4000",
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("task failure rate 0.5 above max_task_failure_rate 0.05"),
        "{}",
        out.stdout
    );
    let out = genesis(
        &dir,
        &[
            "deploy",
            "tick",
            "new_router",
            "--requests",
            "500",
            "--error-rate",
            "0",
            "--p95-ms",
            "20",
            "--tasks",
            "200",
            "--task-failure-rate",
            "2",
        ],
    )
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("--task-failure-rate 2") && out.stderr.contains("rule: sample_share"),
        "{}",
        out.stderr
    );
}

/// `deploy start` and `rollback` used to rewrite a kill switch's strategy, after which
/// setting `"enabled": true` in the flags file did nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switches_are_refused_naming_the_rule() {
    let dir = setup("rollout-kill", "");
    for args in [
        &["deploy", "start", "emergency_shutdown"][..],
        &["deploy", "start", "orchestration_enabled"][..],
        &["rollback", "maintenance_mode"][..],
        &["rollback", "emergency_shutdown", "--note", "x"][..],
    ] {
        let out = genesis(&dir, args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("rule: kill_switch")
                && out
                    .stderr
                    .contains(args.iter().find(|a| a.contains('_')).unwrap()),
            "{}",
            out.stderr
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("flags.json")).unwrap(),
        FLAGS
    );
    assert!(!dir.join("data/rollouts").exists());
}

/// Bad `flags.rollout.steps` exited 1 with no rule, and the server started with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_steps_are_refused_by_the_cli_and_the_server() {
    let dir = setup("rollout-bad-steps", "steps = [5, 1, 100]");
    let out = genesis(&dir, &["deploy", "start", "new_router"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("rule: rollout_steps") && out.stderr.contains("[5.0, 1.0, 100.0]"),
        "{}",
        out.stderr
    );
    let mut config = GenesisConfig::default();
    config.server.data_dir = dir.join("server-data");
    config.flags.file = dir.join("flags.json");
    config.security.auth.environment = genesis::security::Environment::Dev;
    config.flags.rollout.steps = [5.0, 1.0, 100.0]
        .into_iter()
        .map(|p| genesis::flags::Percent::try_new(p).unwrap())
        .collect();
    let err =
        match genesis_server::AppState::from_config(config, &[], Some(crate::health::metrics())) {
            Ok(_) => panic!("the server must refuse bad rollout steps"),
            Err(e) => e.to_string(),
        };
    assert!(err.contains("rule: rollout_steps"), "{err}");
    assert!(!dir.join("server-data").exists(), "nothing created: {err}");
}

/// The variable that turns [`fresh_server_process`] into a server.
const FRESH_SERVER_DIR: &str = "GENESIS_TEST_FRESH_SERVER_DIR";

/// Not a test on its own: the body of the child process that
/// [`a_quiet_freshly_started_server_holds_and_never_rolls_back`] starts (this test
/// binary, run again with [`FRESH_SERVER_DIR`] set and only this test selected), so the
/// server has a Prometheus recorder of its own that no other test has written to. It
/// prints `listening <url>` and serves until its stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the server process of a_quiet_freshly_started_server_holds_and_never_rolls_back"]
async fn fresh_server_process() {
    let Some(dir) = std::env::var_os(FRESH_SERVER_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let handle = genesis::telemetry::install_prometheus_recorder().unwrap();
    let mut config = GenesisConfig::default();
    config.server.data_dir = dir.join("data");
    config.flags.file = dir.join("no-flags-file.json");
    config.security.auth.environment = genesis::security::Environment::Dev;
    let state = genesis_server::AppState::from_config(config, &[], Some(handle)).unwrap();
    let app = genesis_server::app(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("listening http://{}", listener.local_addr().unwrap());
    let serve = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    );
    // The parent closes stdin (or dies): stop.
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    });
    tokio::select! {
        served = serve => served.unwrap(),
        _ = stdin_closed => {}
    }
}

/// A server process started by a test and the directory it writes into; on drop the
/// process is killed and reaped, then (fields drop after `drop`) the directory removed.
struct Child {
    process: std::process::Child,
    _dir: TempDir,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Starts [`fresh_server_process`] in a process of its own; returns it and its URL.
async fn fresh_server(tag: &str) -> (Child, String) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = scratch(tag);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "rollout_health::fresh_server_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(FRESH_SERVER_DIR, &*dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Child {
        process: child,
        _dir: dir,
    };
    let read = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            // The test harness prints `test <name> ... ` on the same line.
            if let Some((_, url)) = line.split_once("listening ") {
                return Ok(url.trim().to_owned());
            }
            seen.push(line);
        }
        Err(seen)
    });
    let url = tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the fresh server did not print its URL within 120 s")
        .unwrap()
        .unwrap_or_else(|seen| panic!("the fresh server exited without a URL: {seen:?}"));
    (child, url)
}

/// The verification's N2: a freshly started server has no `genesis_requests_total`
/// until its first API request, and every tick's own `/metrics` scrape only creates the
/// probe's series. That used to be a missing sample: no baseline at start, then three
/// quiet ticks rolled a healthy rollout back. Now it is zero requests: a baseline at
/// start, and quiet ticks hold for insufficient traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_freshly_started_server_holds_and_never_rolls_back() {
    let (_server, base) = fresh_server("rollout-fresh-server").await;
    let url = format!("{base}/metrics");
    let dir = setup("rollout-fresh", "");
    let out = genesis(
        &dir,
        &["deploy", "start", "new_router", "--metrics-url", &url],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("baseline taken from {url}")),
        "{}",
        out.stdout
    );
    // More quiet ticks than missing_sample_tolerance (3).
    for n in 1..=4 {
        let out = genesis(
            &dir,
            &["deploy", "tick", "new_router", "--metrics-url", &url],
        )
        .await;
        assert_eq!(out.code, 0, "tick {n}: {}\n{}", out.stdout, out.stderr);
        assert!(
            out.stdout
                .contains("hold: insufficient traffic: 0 requests + 0 tasks < min_requests 10"),
            "tick {n}: {}",
            out.stdout
        );
        assert!(!out.stdout.contains("missing"), "tick {n}: {}", out.stdout);
        assert_eq!(percent(&dir), 1.0, "tick {n}");
    }
    let out = genesis(&dir, &["status", "new_router"]).await;
    assert!(
        !out.stdout.contains("missing samples in a row"),
        "{}",
        out.stdout
    );
}

/// The verification's N1: a baseline written before task numbers existed (no task
/// fields) read as "0 tasks", so the first tick judged every task since the server
/// started and rolled a healthy rollout back. It is no baseline now: the tick takes a
/// fresh one and holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_format_baseline_is_replaced_not_judged() {
    // 7 tasks failed before the rollout.
    let with_tasks = |ok: u64, failed: u64, succeeded: u64| {
        exposition(ok, 0)
            .replace(
                "status=\"failed\"} 0",
                &format!("status=\"failed\"}} {failed}"),
            )
            .replace(
                "status=\"succeeded\"} 0",
                &format!("status=\"succeeded\"}} {succeeded}"),
            )
    };
    let body = Arc::new(Mutex::new(with_tasks(40, 7, 0)));
    let url = metrics_server(Arc::clone(&body)).await;
    let dir = setup("rollout-old-baseline", "");
    let out = genesis(
        &dir,
        &["deploy", "start", "new_router", "--metrics-url", &url],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The previous CLI's format: requests, errors and buckets only.
    let baseline = dir.join("data/rollouts/new_router.scrape.json");
    assert!(baseline.exists(), "{}", baseline.display());
    std::fs::write(
        &baseline,
        r#"{"requests":40.0,"errors":0.0,"buckets":[[0.05,40.0],[1.7976931348623157e308,40.0]]}"#,
    )
    .unwrap();
    *body.lock().unwrap() = with_tasks(55, 7, 15);
    let out = genesis(
        &dir,
        &["deploy", "tick", "new_router", "--metrics-url", &url],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("hold: baseline taken"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("older format"), "{}", out.stdout);
    assert_eq!(percent(&dir), 1.0);
    // The new baseline has the task numbers: the next window judges only its own tasks.
    *body.lock().unwrap() = with_tasks(70, 7, 30);
    let out = genesis(
        &dir,
        &["deploy", "tick", "new_router", "--metrics-url", &url],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("advance to 5%"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("15 tasks finished, failure rate 0.0000"),
        "{}",
        out.stdout
    );
}

/// A `--metrics-url` that is not an http(s) URL is a typo: exit 2 naming the rule,
/// nothing started. A server that is down is not: the first tick takes the baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_start_refuses_a_metrics_url_that_is_not_a_url() {
    let dir = setup("rollout-bad-url", "");
    for bad in [
        "not a url",
        "127.0.0.1:8000/metrics",
        "ftp://127.0.0.1/metrics",
        "http://",
    ] {
        let out = genesis(
            &dir,
            &["deploy", "start", "new_router", "--metrics-url", bad],
        )
        .await;
        assert_eq!(out.code, 2, "{bad}: {}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("rule: metrics_url") && out.stderr.contains(bad),
            "{bad}: {}",
            out.stderr
        );
        assert_eq!(percent(&dir), -1.0, "{bad}: the flag is untouched");
        assert!(!dir.join("data/rollouts/new_router.json").exists(), "{bad}");
    }
    // Nothing listens on a port we bound and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("http://127.0.0.1:{port}/metrics");
    let out = genesis(
        &dir,
        &["deploy", "start", "new_router", "--metrics-url", &down],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("no baseline (metrics unreachable"),
        "{}",
        out.stdout
    );
}
