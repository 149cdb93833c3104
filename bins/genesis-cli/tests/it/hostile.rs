//! Servers that answer with something hostile or broken: the CLI reports it and never
//! panics nor buffers without bound.

use axum::routing::get;

use crate::support::{Out, TempDir, run_in};
use crate::with_flags_file;

const FLAGS: &str = r#"{"flags": [{"name": "new_router", "enabled": false}]}"#;

/// A scratch dir with a flags file, a config (dwell 0 s, 10 requests make a sample) and
/// a rollout of `new_router` started at 1 %.
fn started_rollout(tag: &str) -> TempDir {
    let dir = with_flags_file(tag, FLAGS);
    let out = run_in(
        &dir,
        &["--config", "test.toml", "deploy", "start", "new_router"],
        None,
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    dir
}

/// The flag's rollout percentage in the flags file.
fn percent(dir: &std::path::Path) -> f64 {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("flags.json")).unwrap()).unwrap();
    v["flags"][0]["strategy"]["percent"].as_f64().unwrap()
}

/// Serves `body` to every `GET path` on loopback; returns the base URL.
async fn serve(path: &str, body: String) -> String {
    let router = axum::Router::new().route(
        path,
        get(move || {
            let body = body.clone();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

/// `genesis deploy tick new_router --metrics-url <url>/metrics` against `exposition`.
async fn tick_against(tag: &str, exposition: String) -> (TempDir, Out) {
    let url = serve("/metrics", exposition).await;
    let dir = started_rollout(tag);
    // A baseline of zero traffic, as `deploy start --metrics-url` takes before any
    // request: the tick judges the whole exposition instead of only taking a baseline.
    std::fs::write(
        dir.join("data/rollouts/new_router.scrape.json"),
        r#"{"requests":0.0,"errors":0.0,"buckets":[]}"#,
    )
    .unwrap();
    let d = dir.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let metrics = format!("{url}/metrics");
        run_in(
            &d,
            &[
                "--config",
                "test.toml",
                "deploy",
                "tick",
                "new_router",
                "--metrics-url",
                &metrics,
            ],
            None,
            &[],
        )
    })
    .await
    .unwrap();
    (dir, out)
}

/// 400 requests, all within 50 ms: a healthy window.
const HEALTHY: &str = "genesis_requests_total{endpoint=\"/api/tasks\",status=\"200\"} 400\n\
    genesis_request_duration_seconds_bucket{endpoint=\"/api/tasks\",le=\"0.05\"} 400\n\
    genesis_request_duration_seconds_bucket{endpoint=\"/api/tasks\",le=\"+Inf\"} 400\n";

/// [`HEALTHY`] padded with comment lines to at least `len` bytes.
fn padded_healthy(len: usize) -> String {
    let mut exposition = HEALTHY.to_owned();
    let pad = format!("# {}\n", "p".repeat(1021));
    while exposition.len() < len {
        exposition.push_str(&pad);
    }
    exposition
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_bound_beyond_any_duration_is_a_missing_sample_not_a_panic() {
    let exposition = "genesis_requests_total{endpoint=\"/api/tasks\",status=\"200\"} 10\n\
        genesis_request_duration_seconds_bucket{endpoint=\"/api/tasks\",le=\"1\"} 0\n\
        genesis_request_duration_seconds_bucket{endpoint=\"/api/tasks\",le=\"1e300\"} 10\n\
        genesis_request_duration_seconds_bucket{endpoint=\"/api/tasks\",le=\"+Inf\"} 10\n";
    let (dir, out) = tick_against("hostile-le", exposition.to_owned()).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("hold: missing"), "{}", out.stdout);
    assert!(out.stdout.contains("le=\"1e300\""), "{}", out.stdout);
    assert_eq!(percent(&dir), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_body_over_8_mib_is_refused_naming_the_limit_and_size() {
    // A healthy exposition padded with comment lines to 9 MiB.
    let exposition = padded_healthy(9 << 20);
    let size = exposition.len();
    let (dir, out) = tick_against("hostile-big-metrics", exposition).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("hold: missing"), "{}", out.stdout);
    assert!(out.stdout.contains("8388608-byte limit"), "{}", out.stdout);
    assert!(out.stdout.contains(&size.to_string()), "{}", out.stdout);
    assert_eq!(percent(&dir), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_body_within_the_limit_is_read() {
    // The same padding to 7 MiB stays within the limit: the sample is taken.
    let exposition = padded_healthy(7 << 20);
    let (dir, out) = tick_against("hostile-7mib-metrics", exposition).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("400 requests"), "{}", out.stdout);
    assert_eq!(percent(&dir), 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_body_over_1_mib_fails_the_check_naming_the_limit_and_size() {
    let body = format!(
        r#"{{"status": "ok", "version": "x", "uptime_s": 1, "pad": "{}"}}"#,
        "p".repeat(2 << 20)
    );
    let size = body.len();
    let url = serve("/health", body).await;
    let out = tokio::task::spawn_blocking(move || {
        run_in(&std::env::temp_dir(), &["health", "--url", &url], None, &[])
    })
    .await
    .unwrap();
    let line = out
        .stdout
        .lines()
        .find(|l| l.get(5..).is_some_and(|rest| rest.starts_with("health")))
        .unwrap_or_else(|| panic!("no health line in {}", out.stdout));
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(line.contains("1048576-byte limit"), "{line}");
    assert!(line.contains(&size.to_string()), "{line}");
}
