//! A newcomer's first week (audit C10): write errors, exit codes, unreadable rollout
//! state, terminal-safe output, line limits. The real binary, real files in temp dirs.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{Out, repo_root, run_in, scratch};
use crate::with_flags_file;

const FLAGS: &str = r#"{"flags": [
  {"name": "new_router", "description": "the new router", "enabled": false}
]}"#;

fn genesis(dir: &Path, args: &[&str]) -> Out {
    let mut all = vec!["--config", "test.toml"];
    all.extend_from_slice(args);
    run_in(dir, &all, None, &[])
}

/// Runs `genesis args` in `dir` with `stdin` and stdout going to /dev/full.
fn to_dev_full(dir: &Path, args: &[&str], stdin: &str) -> (i32, String) {
    use std::io::Write;
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_genesis"))
        .args(args)
        .current_dir(dir)
        .env_remove("GENESIS_CONFIG")
        .stdin(Stdio::piped())
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may stop reading early (that is the point): ignore a broken pipe.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// C10 #1: a full disk is not a skipped input line, and not success.
#[test]
fn route_and_scan_stop_at_the_first_failed_write_with_exit_1() {
    let dir = scratch("devfull");
    let input: String = (0..200)
        .map(|i| format!("Fix the login bug {i}\n"))
        .collect();
    for cmd in ["route", "scan"] {
        for on_error in ["skip", "fail"] {
            let (code, stderr) = to_dev_full(&dir, &[cmd, "--on-error", on_error], &input);
            assert_eq!(code, 1, "{cmd} --on-error {on_error}: {stderr}");
            assert_eq!(
                stderr.matches("cannot write to stdout").count(),
                1,
                "{cmd}: {stderr}"
            );
            assert!(
                stderr.contains("No space left on device"),
                "{cmd}: {stderr}"
            );
            assert!(!stderr.contains("skipped"), "{cmd}: {stderr}");
        }
    }
    let (code, stderr) = to_dev_full(&dir, &["scan", "--text", "hello"], "");
    assert_eq!(code, 1, "{stderr}");
}

/// C10 #9: a line over the limit is refused with its size, the others are handled.
#[test]
fn an_input_line_over_the_limit_is_refused_with_its_size() {
    let dir = scratch("longline");
    let long = "a ".repeat(1 << 20);
    let input = format!("Fix the login bug\n{long}\nWrite the release notes\n");
    for cmd in ["route", "scan"] {
        let out = run_in(&dir, &[cmd], Some(&input), &[]);
        assert_eq!(out.code, 0, "{cmd}: {}", out.stderr);
        let lines = out.json_lines();
        assert_eq!(lines.len(), 2, "{cmd}: {}", out.stdout);
        assert_eq!(lines[1]["line"], 3);
        assert!(
            out.stderr.contains(
                "stdin: line 2 skipped: line is 2097152 bytes, longer than the limit of 1048576 bytes"
            ),
            "{cmd}: {}",
            out.stderr
        );
        let out = run_in(&dir, &[cmd, "--on-error", "fail"], Some(&input), &[]);
        assert_eq!(out.code, 2, "{cmd}: {}", out.stderr);
        assert!(
            out.stderr.contains("rule: max_line_bytes"),
            "{}",
            out.stderr
        );
    }
}

/// C10 #2: a typo in `deploy tick --metrics-url` is refused as `deploy start` refuses
/// it, before anything is recorded (not counted as a missing sample).
#[test]
fn tick_refuses_a_metrics_url_typo_and_records_nothing() {
    let dir = with_flags_file("tickurl", FLAGS);
    assert_eq!(genesis(&dir, &["deploy", "start", "new_router"]).code, 0);
    let state_file = dir.join("data/rollouts/new_router.json");
    let before = std::fs::read_to_string(&state_file).unwrap();
    for url in ["notaurl", "ftp://host/metrics", "http://[::1"] {
        let out = genesis(
            &dir,
            &["deploy", "tick", "new_router", "--metrics-url", url],
        );
        assert_eq!(out.code, 2, "{url}: {}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains("(rule: metrics_url)"), "{}", out.stderr);
        assert!(!out.stdout.contains("missing"), "{}", out.stdout);
        assert_eq!(std::fs::read_to_string(&state_file).unwrap(), before);
    }
}

/// C10 #3: a state file that is not JSON blocks nothing: status and tick say which
/// file, which rule and how out; rollback and a forced restart set it aside.
#[test]
fn an_unreadable_rollout_state_is_named_and_set_aside_by_the_ways_out() {
    let dir = with_flags_file("corrupt", FLAGS);
    assert_eq!(genesis(&dir, &["deploy", "start", "new_router"]).code, 0);
    let state_file = dir.join("data/rollouts/new_router.json");
    let good = std::fs::read_to_string(&state_file).unwrap();
    let corrupt_copies = || -> Vec<String> {
        std::fs::read_dir(dir.join("data/rollouts"))
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.starts_with("new_router.json.corrupt-"))
            .collect()
    };
    for (i, garbage) in ["garbage\n", &good[..good.len() / 2]]
        .into_iter()
        .enumerate()
    {
        std::fs::write(&state_file, garbage).unwrap();
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
        for args in [&["status"][..], &["status", "new_router"], &tick] {
            let out = genesis(&dir, args);
            assert_eq!(out.code, 2, "{args:?}: {}{}", out.stdout, out.stderr);
            for needed in [
                "data/rollouts/new_router.json",
                "rollout state",
                "(rule: rollout_state)",
                "genesis rollback new_router",
                "--restart --force",
            ] {
                assert!(
                    out.stderr.contains(needed),
                    "{args:?}: {needed}: {}",
                    out.stderr
                );
            }
            assert!(!out.stderr.contains("flag definitions"), "{}", out.stderr);
            assert_eq!(std::fs::read_to_string(&state_file).unwrap(), garbage);
        }
        let out = genesis(&dir, &["deploy", "start", "new_router"]);
        assert_eq!(out.code, 2, "{}", out.stderr);
        // The ways out: rollback the first time, a forced restart the second.
        let out = if i == 0 {
            genesis(&dir, &["rollback", "new_router"])
        } else {
            genesis(
                &dir,
                &["deploy", "start", "new_router", "--force", "--restart"],
            )
        };
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains("unreadable rollout state set aside"),
            "{}",
            out.stdout
        );
        let copies = corrupt_copies();
        assert_eq!(copies.len(), i + 1, "{copies:?}");
        assert!(copies.iter().any(|c| {
            std::fs::read_to_string(dir.join("data/rollouts").join(c)).unwrap() == garbage
        }));
        let out = genesis(&dir, &["status", "new_router", "--format", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let phase = if i == 0 { "rolled_back" } else { "in_progress" };
        assert_eq!(v["state"]["phase"], phase, "{v}");
    }
}

/// C10 #7, #14, #15, #19: configuration and input problems exit 2, the same in every
/// subcommand; `--config` layers; the exit codes are in `--help`.
#[test]
fn configuration_and_input_errors_exit_2_everywhere() {
    let dir = scratch("exit2");
    std::fs::write(dir.join("malformed.toml"), "[routing\nx = 1\n").unwrap();
    std::fs::write(
        dir.join("bad.toml"),
        "[security.detector]\nthreshold = 7.0\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("good.toml"),
        "[security.detector]\nthreshold = 0.5\n",
    )
    .unwrap();
    std::fs::write(dir.join("rules.toml"), "[[rule\n").unwrap();
    let cases: &[&[&str]] = &[
        &["--config", "missing.toml", "plan", "Fix the login bug"],
        &["--config", ".", "plan", "Fix the login bug"],
        &["--config", "malformed.toml", "plan", "Fix the login bug"],
        &["--config", "bad.toml", "plan", "Fix the login bug"],
        &["--config", "bad.toml", "scan", "--text", "hi"],
        &[
            "--config",
            "good.toml",
            "--config",
            "bad.toml",
            "scan",
            "--text",
            "hi",
        ],
        &["run", "Fix the login bug", "--base-url", "ftp://x"],
        &[
            "run",
            "Fix the login bug",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "",
        ],
        &["route", "--rules", "rules.toml"],
        &["route", "--rules", "missing.toml"],
        &["health", "--url", "http://[::1"],
        &["health", "--url", "notaurl"],
        &["health", "--timeout", "0", "--url", "http://127.0.0.1:9"],
        &["plan", "--budget", "1e300", "Fix the login bug"],
    ];
    for args in cases {
        let out = run_in(&dir, args, Some(""), &[("OPENAI_API_KEY", "sk-test")]);
        assert_eq!(out.code, 2, "{args:?}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.starts_with("error: "),
            "{args:?}: {}",
            out.stderr
        );
    }
    let out = run_in(&dir, &["route", "--rules", "rules.toml"], Some(""), &[]);
    assert!(out.stderr.contains("rules.toml"), "{}", out.stderr);
    let out = run_in(&dir, &["plan", "--budget", "1e300", "x y"], None, &[]);
    assert!(out.stderr.contains("rule: max_budget"), "{}", out.stderr);
    let out = run_in(&dir, &["health", "--timeout", "0"], None, &[]);
    assert!(
        out.stderr.contains("rule: health_timeout"),
        "{}",
        out.stderr
    );
    // Later files win.
    let out = run_in(
        &dir,
        &[
            "--config",
            "bad.toml",
            "--config",
            "good.toml",
            "scan",
            "--text",
            "hi",
        ],
        None,
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run_in(&dir, &["--help"], None, &[]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("Exit codes:"), "{}", out.stdout);
    assert!(
        out.stdout.contains("  2  rejected input or configuration"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("token"), "{}", out.stdout);
}

/// C10 #8: the tree echoes the request; its escape sequences are shown, not obeyed.
/// JSON output keeps the text as it was (JSON escapes it).
#[test]
fn plan_tree_shows_control_characters_instead_of_sending_them() {
    let request = "Fix the login bug\u{1b}[31m now\u{7}";
    let out = run_in(&repo_root(), &["plan", request], None, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains('\u{1b}'), "{:?}", out.stdout);
    assert!(!out.stdout.contains('\u{7}'), "{:?}", out.stdout);
    assert!(out.stdout.contains("\\u{1b}[31m"), "{}", out.stdout);
    let out = run_in(
        &repo_root(),
        &["plan", "--format", "json", request],
        None,
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(v.to_string().contains("\\u001b[31m"), "{v}");
}

/// C10 #12: outside a checkout (no `config/`), an unknown flag is unknown among the
/// built-in flags; the message does not name a flags file that does not exist as where
/// it looked.
#[test]
fn unknown_flag_without_a_flags_file_names_the_built_in_flags() {
    let dir = scratch("noflagsfile");
    let out = run_in(&dir, &["flags", "get", "nosuch"], None, &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "unknown flag \"nosuch\" in the built-in flags (config/feature_flags.json not found)"
        ),
        "{}",
        out.stderr
    );
    // With the file, the file is named.
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(dir.join("config/feature_flags.json"), FLAGS).unwrap();
    let out = run_in(&dir, &["flags", "get", "nosuch"], None, &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("unknown flag \"nosuch\" in config/feature_flags.json (see"),
        "{}",
        out.stderr
    );
}
