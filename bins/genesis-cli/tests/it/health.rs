//! `genesis health` against the real server app on loopback (issue #7).

use std::sync::OnceLock;

use genesis::GenesisConfig;
use genesis::core::{Secret, Usd};

use crate::support::{Out, TempDir, run_in, scratch, serve};

/// The process-wide Prometheus recorder (it can be installed once).
pub(crate) fn metrics() -> genesis::telemetry::PrometheusHandle {
    static HANDLE: OnceLock<genesis::telemetry::PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| genesis::telemetry::install_prometheus_recorder().unwrap())
        .clone()
}

/// Starts the server app with `per_day` budget, one API key and `env`; returns its data
/// directory's guard (keep it while the server runs) and its URL.
async fn server(tag: &str, per_day: f64, env: &[(&str, &str)]) -> (TempDir, String) {
    let dir = scratch(tag);
    let mut config = GenesisConfig::default();
    config.server.data_dir = dir.join("data");
    config.flags.file = dir.join("no-flags-file.json");
    config.budget.per_day = Some(Usd::new(per_day).unwrap());
    config.server.api_keys = vec![Secret::new("k-test".to_owned())];
    config.security.auth.environment = genesis::security::Environment::Dev;
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let state = genesis_server::AppState::from_config(config, &env, Some(metrics())).unwrap();
    (dir, serve(&state).await)
}

async fn health(args: &[&str]) -> Out {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut all = vec!["health".to_owned()];
        all.extend(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run_in(&std::env::temp_dir(), &all, None, &[])
    })
    .await
    .unwrap()
}

fn line<'a>(out: &'a Out, check: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.get(5..).is_some_and(|rest| rest.starts_with(check)))
        .unwrap_or_else(|| panic!("no {check} line in {}", out.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_server_passes_all_five_checks() {
    let (_dir, url) = server("health-ok", 50.0, &[]).await;
    let out = health(&["--url", &url, "--api-key", "k-test"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.stdout.lines().count(), 5, "{}", out.stdout);
    assert!(
        out.stdout.lines().all(|l| l.starts_with("PASS ")),
        "{}",
        out.stdout
    );
    assert!(line(&out, "health").contains("status ok"), "{}", out.stdout);
    assert!(line(&out, "metrics").contains("genesis_"), "{}", out.stdout);
    assert!(
        line(&out, "flags").contains("emergency_shutdown off"),
        "{}",
        out.stdout
    );
    assert!(
        line(&out, "budget").contains("of $50.0000 left today"),
        "{}",
        out.stdout
    );

    // Without the API key the status checks fail and say why.
    let out = health(&["--url", &url]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        line(&out, "flags").starts_with("FAIL") && line(&out, "flags").contains("--api-key"),
        "{}",
        out.stdout
    );
    assert!(line(&out, "health").starts_with("PASS"), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("2 of 5 health checks failed: flags, budget"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_and_exhausted_budget_fail() {
    let (_kill_dir, url) = server("health-kill", 50.0, &[("EMERGENCY_SHUTDOWN", "true")]).await;
    let out = health(&["--url", &url, "--api-key", "k-test"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        line(&out, "flags").starts_with("FAIL")
            && line(&out, "flags").contains("emergency_shutdown is on"),
        "{}",
        out.stdout
    );
    assert!(line(&out, "health").starts_with("PASS"), "{}", out.stdout);

    let (_budget_dir, url) = server("health-budget", 0.0, &[]).await;
    let out = health(&["--url", &url, "--api-key", "k-test"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        line(&out, "budget").starts_with("FAIL") && line(&out, "budget").contains("exhausted"),
        "{}",
        out.stdout
    );
    assert!(line(&out, "flags").starts_with("PASS"), "{}", out.stdout);
}

#[tokio::test]
async fn an_unreachable_server_fails_every_check() {
    let out = health(&["--url", "http://127.0.0.1:9", "--timeout", "2"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("FAIL "))
            .count(),
        5,
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("unreachable"), "{}", out.stdout);
    let out = health(&["--url", "ftp://x"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
}
