//! `genesis flags`, `deploy`, `rollback`, `status`.

use std::path::Path;

use crate::support::{Out, TempDir, run_in};
use crate::with_flags_file;

const FLAGS: &str = r#"{"flags": [
  {"name": "halo_routing", "enabled": true, "strategy": {"type": "all"}},
  {"name": "new_router", "description": "the new router", "enabled": false},
  {"name": "emergency_shutdown", "enabled": false}
]}"#;

/// A scratch dir with [`FLAGS`] and a config pointing at it (see [`with_flags_file`]).
fn setup(tag: &str) -> TempDir {
    with_flags_file(tag, FLAGS)
}

fn genesis(dir: &Path, args: &[&str]) -> Out {
    let mut all = vec!["--config", "test.toml"];
    all.extend_from_slice(args);
    run_in(dir, &all, None, &[])
}

fn flag(dir: &Path, name: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("flags.json")).unwrap()).unwrap();
    v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap()
        .clone()
}

fn percent(dir: &Path, name: &str) -> f64 {
    let f = flag(dir, name);
    assert_eq!(f["strategy"]["type"], "percentage", "{f}");
    f["strategy"]["percent"].as_f64().unwrap()
}

#[test]
fn flags_list_get_eval_with_env_overrides() {
    let dir = setup("flags");
    let out = genesis(&dir, &["flags", "list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("new_router"))
        .unwrap();
    assert!(
        line.contains(" off ") && line.contains("the new router"),
        "{line}"
    );

    let out = run_in(
        &dir,
        &["--config", "test.toml", "flags", "list", "--format", "json"],
        None,
        &[("EMERGENCY_SHUTDOWN", "true")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let es = list
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "emergency_shutdown")
        .unwrap();
    assert_eq!(es["enabled"], true);
    assert!(
        es["override"]
            .as_str()
            .unwrap()
            .starts_with("EMERGENCY_SHUTDOWN=true"),
        "{es}"
    );

    let out = genesis(&dir, &["flags", "get", "new_router"]);
    assert_eq!(out.code, 0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (v["name"].as_str(), v["enabled"].as_bool()),
        (Some("new_router"), Some(false))
    );

    let out = genesis(
        &dir,
        &["flags", "eval", "halo_routing", "--subject", "user-1"],
    );
    assert_eq!(out.code, 0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (v["enabled"].as_bool(), v["reason"].as_str()),
        (Some(true), Some("all"))
    );

    for args in [
        &["flags", "get", "nope"][..],
        &["flags", "eval", "nope", "--subject", "u"][..],
    ] {
        let out = genesis(&dir, args);
        assert_eq!(out.code, 2, "{args:?}");
        assert!(
            out.stderr.contains("unknown flag \"nope\""),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn deploy_walks_the_steps_and_writes_the_flags_file() {
    let dir = setup("deploy");
    let out = genesis(&dir, &["deploy", "start", "new_router"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("at 1% (step 1/6)"), "{}", out.stdout);
    assert_eq!(flag(&dir, "new_router")["enabled"], true);
    assert_eq!(percent(&dir, "new_router"), 1.0);
    assert!(dir.join("data/rollouts/new_router.json").exists());
    // Other flags are kept as they were.
    assert_eq!(flag(&dir, "halo_routing")["strategy"]["type"], "all");

    let out = genesis(&dir, &["deploy", "start", "new_router"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("in progress at 1%"), "{}", out.stderr);

    let out = genesis(&dir, &["status", "new_router"]);
    assert!(
        out.stdout.contains("next: advance to 5% after 0s more"),
        "{}",
        out.stdout
    );

    let healthy = [
        "deploy",
        "tick",
        "new_router",
        "--error-rate",
        "0.001",
        "--p95-ms",
        "90",
        "--requests",
        "500",
    ];
    let out = genesis(&dir, &healthy);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("advance to 5%"), "{}", out.stdout);
    assert_eq!(percent(&dir, "new_router"), 5.0);

    // Too little traffic holds.
    let out = genesis(
        &dir,
        &[
            "deploy",
            "tick",
            "new_router",
            "--error-rate",
            "0",
            "--p95-ms",
            "90",
            "--requests",
            "3",
        ],
    );
    assert!(
        out.stdout.contains("hold: insufficient traffic"),
        "{}",
        out.stdout
    );
    assert_eq!(percent(&dir, "new_router"), 5.0);

    // Too many errors rolls back to 0 %.
    let out = genesis(
        &dir,
        &[
            "deploy",
            "tick",
            "new_router",
            "--error-rate",
            "0.2",
            "--p95-ms",
            "90",
            "--requests",
            "500",
        ],
    );
    // A rollback is a failed health check: printed, then exit 1 so cron notices.
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("rollout of new_router rolled back")
            && out.stderr.contains("rule: rollout_health"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout
            .contains("roll back: error rate 0.2 above max_error_rate 0.01"),
        "{}",
        out.stdout
    );
    assert_eq!(percent(&dir, "new_router"), 0.0);

    let out = genesis(&dir, &["status", "new_router"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("rolled back to 0%"), "{}", out.stdout);
    assert!(out.stdout.contains("advance to 5%"), "{}", out.stdout);

    // A rolled-back rollout can be started again.
    let out = genesis(&dir, &["deploy", "start", "new_router"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(percent(&dir, "new_router"), 1.0);
}

#[test]
fn missing_health_samples_never_count_as_healthy() {
    let dir = setup("missing");
    assert_eq!(genesis(&dir, &["deploy", "start", "new_router"]).code, 0);
    // No source, then an unreachable metrics endpoint: held twice, rolled back the third time.
    let out = genesis(&dir, &["deploy", "tick", "new_router"]);
    assert!(
        out.stdout
            .contains("hold: missing health sample (1 in a row, tolerance 2)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("never counts as healthy"),
        "{}",
        out.stdout
    );
    let out = genesis(
        &dir,
        &[
            "deploy",
            "tick",
            "new_router",
            "--metrics-url",
            "http://127.0.0.1:9/metrics",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("metrics unreachable"), "{}", out.stdout);
    assert!(out.stdout.contains("(2 in a row"), "{}", out.stdout);
    assert_eq!(percent(&dir, "new_router"), 1.0);
    let out = genesis(&dir, &["deploy", "tick", "new_router"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("roll back: 3 consecutive missing health samples"),
        "{}",
        out.stdout
    );
    assert_eq!(percent(&dir, "new_router"), 0.0);
}

#[test]
fn manual_rollback_and_status_listing() {
    let dir = setup("rollback");
    assert_eq!(genesis(&dir, &["deploy", "start", "new_router"]).code, 0);
    let out = genesis(
        &dir,
        &["rollback", "new_router", "--note", "bad dashboards"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("manual rollback: bad dashboards"),
        "{}",
        out.stdout
    );
    assert_eq!(percent(&dir, "new_router"), 0.0);
    assert_eq!(flag(&dir, "new_router")["enabled"], false);

    // A flag that never had a rollout can be rolled back too.
    let out = genesis(&dir, &["rollback", "halo_routing"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(percent(&dir, "halo_routing"), 0.0);
    assert_eq!(flag(&dir, "halo_routing")["enabled"], false);

    let out = genesis(&dir, &["status"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0].starts_with("halo_routing") && lines[0].contains("rolled back"),
        "{}",
        out.stdout
    );
    let out = genesis(&dir, &["status", "new_router", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["state"]["phase"], "rolled_back");
    assert_eq!(v["flag"]["strategy"]["percent"], 0.0);
}

#[test]
fn rejected_rollout_input_exits_2() {
    let dir = setup("rejects");
    for args in [
        &[
            "deploy",
            "tick",
            "new_router",
            "--error-rate",
            "0.1",
            "--p95-ms",
            "9",
            "--requests",
            "50",
        ][..],
        &["deploy", "start", "no_such_flag"][..],
        &["deploy", "start", "../escape"][..],
        &["rollback", "no_such_flag"][..],
        &["status", "new_router"][..],
    ] {
        let out = genesis(&dir, args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
    }
    assert_eq!(genesis(&dir, &["deploy", "start", "new_router"]).code, 0);
    let out = genesis(
        &dir,
        &[
            "deploy",
            "tick",
            "new_router",
            "--error-rate",
            "5",
            "--p95-ms",
            "9",
            "--requests",
            "50",
        ],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("--error-rate 5") && out.stderr.contains("rule: sample_share"),
        "{}",
        out.stderr
    );
    // Partial manual samples are a usage error.
    let out = genesis(
        &dir,
        &["deploy", "tick", "new_router", "--error-rate", "0.1"],
    );
    assert_eq!(out.code, 2);
    std::fs::remove_file(dir.join("flags.json")).unwrap();
    let out = genesis(&dir, &["rollback", "new_router"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tick_reads_the_servers_metrics() {
    use axum::routing::get;
    let exposition = "# TYPE genesis_requests_total counter\n\
        genesis_requests_total{endpoint=\"/api/tasks\",status=\"200\"} 400\n\
        genesis_requests_total{endpoint=\"/api/tasks\",status=\"500\"} 1\n\
        genesis_requests_total{endpoint=\"/health\",status=\"200\"} 99\n\
        genesis_request_duration_seconds_bucket{endpoint=\"/api/tasks\",le=\"0.05\"} 380\n\
        genesis_request_duration_seconds_bucket{endpoint=\"/api/tasks\",le=\"0.25\"} 401\n\
        genesis_request_duration_seconds_bucket{endpoint=\"/api/tasks\",le=\"+Inf\"} 401\n";
    // Before the rollout: nothing yet. The start takes this as the baseline.
    let body = std::sync::Arc::new(std::sync::Mutex::new(String::from(
        "genesis_requests_total{endpoint=\"/api/tasks\",status=\"200\"} 0\n\
         genesis_request_duration_seconds_bucket{endpoint=\"/api/tasks\",le=\"+Inf\"} 0\n",
    )));
    let served = std::sync::Arc::clone(&body);
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let served = std::sync::Arc::clone(&served);
            async move { served.lock().unwrap().clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = setup("scrape");
    let (d, u) = (dir.to_path_buf(), url.clone());
    let out = tokio::task::spawn_blocking(move || {
        genesis(&d, &["deploy", "start", "new_router", "--metrics-url", &u])
    })
    .await
    .unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    *body.lock().unwrap() = exposition.to_owned();
    let d = dir.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        genesis(&d, &["deploy", "tick", "new_router", "--metrics-url", &url])
    })
    .await
    .unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("advance to 5%"), "{}", out.stdout);
    assert!(out.stdout.contains("401 requests"), "{}", out.stdout);
    assert!(dir.join("data/rollouts/new_router.scrape.json").exists());
    assert_eq!(percent(&dir, "new_router"), 5.0);
}

/// `genesis rollback` of a canary used to write 0 % and keep the subject list, so the
/// canary subjects kept the feature. Now nobody has it, and the list survives for the
/// next rollout.
#[test]
fn rollback_switches_a_canary_off_for_its_subjects_too() {
    let dir = with_flags_file(
        "canary-rollback",
        r#"{"flags": [{"name": "new_router", "enabled": true,
            "strategy": {"type": "canary", "subjects": ["alice"], "percent": 0}}]}"#,
    );
    let eval = |dir: &Path| {
        let out = genesis(dir, &["flags", "eval", "new_router", "--subject", "alice"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(eval(&dir)["enabled"], true);
    assert_eq!(genesis(&dir, &["deploy", "start", "new_router"]).code, 0);
    let out = genesis(&dir, &["rollback", "new_router", "--note", "canary broke"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("off for everyone"), "{}", out.stdout);
    let f = flag(&dir, "new_router");
    assert_eq!(f["enabled"], false, "{f}");
    assert_eq!(f["strategy"]["subjects"][0], "alice", "{f}");
    let e = eval(&dir);
    assert_eq!(e["enabled"], false, "{e}");
    assert_eq!(e["reason"], "disabled", "{e}");
    // The next rollout brings the canary subjects back.
    assert_eq!(genesis(&dir, &["deploy", "start", "new_router"]).code, 0);
    assert_eq!(eval(&dir)["enabled"], true);
}

/// A state file that does not fit `flags.rollout` (a step past the configured ones, or
/// `usize::MAX`) used to complete the rollout at 100 % (or panic); now `deploy tick`
/// refuses it naming the rule and the values and writes nothing, `status` says so, and
/// `rollback` and `deploy start --restart` still work.
#[test]
fn a_stale_rollout_state_is_refused_not_completed() {
    let dir = setup("stale");
    assert_eq!(genesis(&dir, &["deploy", "start", "new_router"]).code, 0);
    let state_file = dir.join("data/rollouts/new_router.json");
    let fresh = std::fs::read_to_string(&state_file).unwrap();
    let tick = [
        "deploy",
        "tick",
        "new_router",
        "--error-rate",
        "0",
        "--p95-ms",
        "10",
        "--requests",
        "500",
    ];
    for (step, shown) in [
        ("7".to_owned(), "step 7 of 6 steps".to_owned()),
        (
            usize::MAX.to_string(),
            format!("step {} of 6 steps", usize::MAX),
        ),
    ] {
        let stale = fresh.replace("\"step\": 0", &format!("\"step\": {step}"));
        assert_ne!(stale, fresh);
        std::fs::write(&state_file, &stale).unwrap();
        let out = genesis(&dir, &tick);
        assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(&shown), "{}", out.stderr);
        assert!(
            out.stderr.contains("step must index the configured steps"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("--restart"), "{}", out.stderr);
        assert_eq!(std::fs::read_to_string(&state_file).unwrap(), stale);
        assert_eq!(percent(&dir, "new_router"), 1.0);
        let out = genesis(&dir, &["status", "new_router"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            out.stdout.contains("deploy tick refuses it"),
            "{}",
            out.stdout
        );
        let out = genesis(&dir, &["status"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let out = genesis(&dir, &["deploy", "start", "new_router", "--restart"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = genesis(&dir, &tick);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(percent(&dir, "new_router"), 5.0);
    std::fs::write(
        &state_file,
        std::fs::read_to_string(&state_file)
            .unwrap()
            .replace("\"step\": 1", "\"step\": 3"),
    )
    .unwrap();
    let out = genesis(&dir, &["rollback", "new_router"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(flag(&dir, "new_router")["enabled"], false);
}

/// `deploy start`, `deploy tick` and `rollback` change only the flag's strategy line:
/// the file's order, indentation and other flags are kept byte for byte (it is meant to
/// be in version control), and the write is still a whole-file atomic replace.
#[test]
fn rollouts_change_only_the_flags_line_in_the_file() {
    const FORMATTED: &str = r#"{
  "flags": [
    {
      "name": "new_router",
      "description": "the new router",
      "enabled": true,
      "strategy": { "type": "off" }
    },
    {
      "name": "halo_routing",
      "enabled": true,
      "strategy": { "type": "all" }
    }
  ]
}
"#;
    let dir = with_flags_file("preserve", FORMATTED);
    let changed_lines = |dir: &Path| -> Vec<(String, String)> {
        let now = std::fs::read_to_string(dir.join("flags.json")).unwrap();
        let (before, after): (Vec<&str>, Vec<&str>) =
            (FORMATTED.lines().collect(), now.lines().collect());
        assert_eq!(before.len(), after.len(), "{now}");
        before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b)
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    let out = genesis(&dir, &["deploy", "start", "new_router"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let changed = changed_lines(&dir);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].0, r#"      "strategy": { "type": "off" }"#);
    assert!(
        changed[0]
            .1
            .starts_with(r#"      "strategy": { "type": "percentage""#),
        "{changed:?}"
    );
    assert_eq!(percent(&dir, "new_router"), 1.0);
    // A rollback switches the flag off too: its "enabled" and "strategy" lines only.
    let out = genesis(&dir, &["rollback", "new_router"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let changed: Vec<String> = changed_lines(&dir).into_iter().map(|(a, _)| a).collect();
    assert_eq!(
        changed,
        [
            r#"      "enabled": true,"#,
            r#"      "strategy": { "type": "off" }"#
        ],
        "{changed:?}"
    );
    assert_eq!(percent(&dir, "new_router"), 0.0);
}

#[test]
fn a_paused_rollout_holds_until_resumed_and_still_rolls_back() {
    let dir = setup("pause");
    let healthy = [
        "deploy",
        "tick",
        "new_router",
        "--error-rate",
        "0.001",
        "--p95-ms",
        "90",
        "--requests",
        "500",
    ];
    let out = genesis(&dir, &["deploy", "pause", "new_router"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("no rollout of new_router")
            && out.stderr.contains("(rule: no_rollout)"),
        "{}",
        out.stderr
    );
    assert_eq!(genesis(&dir, &["deploy", "start", "new_router"]).code, 0);
    let out = genesis(
        &dir,
        &["deploy", "pause", "new_router", "--note", "db migration"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("pause: db migration (by ") && out.stdout.contains("paused since"),
        "{}",
        out.stdout
    );
    // Healthy ticks past the dwell (0 s here) hold, and say why.
    for _ in 0..2 {
        let out = genesis(&dir, &healthy);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.contains("hold: paused since"), "{}", out.stdout);
        assert_eq!(percent(&dir, "new_router"), 1.0);
    }
    let out = genesis(&dir, &["status", "new_router"]);
    assert!(
        out.stdout.contains("next: paused since") && out.stdout.contains("db migration"),
        "{}",
        out.stdout
    );
    let out = genesis(&dir, &["status"]);
    assert!(out.stdout.contains(", paused since"), "{}", out.stdout);
    let out = genesis(&dir, &["deploy", "pause", "new_router"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("rule: rollout_already_paused"),
        "{}",
        out.stderr
    );
    let out = genesis(&dir, &["deploy", "resume", "new_router", "--note", "done"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("resume: done (by "), "{}", out.stdout);
    let out = genesis(&dir, &["deploy", "resume", "new_router"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("rule: rollout_not_paused"),
        "{}",
        out.stderr
    );
    let out = genesis(&dir, &healthy);
    assert!(out.stdout.contains("advance to 5%"), "{}", out.stdout);
    assert_eq!(percent(&dir, "new_router"), 5.0);

    // Paused, a breach still rolls the flag back to 0 %.
    assert_eq!(genesis(&dir, &["deploy", "pause", "new_router"]).code, 0);
    let out = genesis(
        &dir,
        &[
            "deploy",
            "tick",
            "new_router",
            "--error-rate",
            "0.2",
            "--p95-ms",
            "90",
            "--requests",
            "500",
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout.contains("roll back: error rate 0.2"),
        "{}",
        out.stdout
    );
    assert_eq!(percent(&dir, "new_router"), 0.0);
    let out = genesis(&dir, &["deploy", "pause", "new_router"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("rule: rollout_not_in_progress"),
        "{}",
        out.stderr
    );
}
