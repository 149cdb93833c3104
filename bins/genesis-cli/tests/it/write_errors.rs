//! Audit V10 #3: no write to stdout or stderr panics (exit 101). A reason that cannot be
//! written to stderr is dropped and the exit code stays what it would have been; a
//! result that cannot be written to stdout is exit 1; a closed stdout pipe (`| head`) is
//! a quiet exit 0. The real binary, with `/dev/full` and a pipe whose reader is gone.

use std::io::Write;
use std::process::{Command, Stdio};

use axum::http::StatusCode;

use crate::support::repo_root;

/// Where the child's stdout or stderr goes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sink {
    /// A pipe the test reads.
    Piped,
    /// `/dev/full`: every write fails with ENOSPC.
    Full,
    /// A pipe whose read end was closed before the child started: writes fail with EPIPE.
    Closed,
}

impl Sink {
    fn stdio(self) -> Stdio {
        match self {
            Sink::Piped => Stdio::piped(),
            Sink::Full => std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap()
                .into(),
            Sink::Closed => {
                let (reader, writer) = std::io::pipe().unwrap();
                drop(reader);
                writer.into()
            }
        }
    }
}

/// One command to try: its arguments, its stdin, and its exit code when it can write.
struct Case {
    name: &'static str,
    args: Vec<String>,
    stdin: &'static str,
    env: &'static [(&'static str, &'static str)],
    code: i32,
}

/// Runs the case with stdout and stderr going to `out` and `err`; the exit code and what
/// it wrote to stderr (when piped).
fn run(case: &Case, out: Sink, err: Sink) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_genesis"))
        .args(&case.args)
        .current_dir(repo_root())
        .env_remove("GENESIS_CONFIG")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .envs(case.env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(out.stdio())
        .stderr(err.stdio())
        .spawn()
        .unwrap();
    // Written from a thread, as the child's piped stdout is read only by
    // `wait_with_output`. The command may stop reading early: ignore a broken pipe.
    let mut stdin = child.stdin.take().unwrap();
    let text = case.stdin;
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every sink combination for `case`: never 101 nor "panicked"; stderr failures change
/// nothing, stdout ENOSPC is 1, EPIPE is 0 (for a command that gets as far as writing).
fn check(case: &Case) {
    let writes = case.code != 2;
    for (out, err) in [
        (Sink::Piped, Sink::Full),
        (Sink::Full, Sink::Piped),
        (Sink::Full, Sink::Full),
        (Sink::Closed, Sink::Piped),
        (Sink::Closed, Sink::Full),
    ] {
        let (code, stderr) = run(case, out, err);
        let expected = match out {
            Sink::Full if writes => 1,
            _ => case.code,
        };
        assert_eq!(
            code, expected,
            "{} with stdout {out:?}, stderr {err:?}: {stderr}",
            case.name
        );
        assert!(!stderr.contains("panicked"), "{}: {stderr}", case.name);
        if out == Sink::Full && err == Sink::Piped && writes {
            assert!(
                stderr.contains("error: cannot write to stdout: No space left on device"),
                "{}: {stderr}",
                case.name
            );
        }
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn plan_route_scan_and_a_refused_run_never_panic_on_write_errors() {
    // Enough output to fill a pipe buffer, and a line over the limit for a warning on
    // stderr (`--on-error skip`).
    let lines: &'static str = Box::leak(
        (0..2000)
            .map(|i| format!("Fix the login bug {i}\n"))
            .chain(["x".repeat(2 << 20)])
            .collect::<String>()
            .into_boxed_str(),
    );
    let cases = [
        Case {
            name: "plan",
            args: args(&["plan", "Fix the login bug"]),
            stdin: "",
            env: &[],
            code: 0,
        },
        Case {
            name: "plan --budget -1",
            args: args(&["plan", "Fix it", "--budget", "-1"]),
            stdin: "",
            env: &[],
            code: 2,
        },
        Case {
            name: "route",
            args: args(&["route"]),
            stdin: lines,
            env: &[],
            code: 0,
        },
        Case {
            name: "scan",
            args: args(&["scan"]),
            stdin: lines,
            env: &[],
            code: 0,
        },
        Case {
            name: "run without an agent",
            args: args(&["run", "Fix the login bug"]),
            stdin: "",
            env: &[],
            code: 2,
        },
        Case {
            name: "help",
            args: args(&["--help"]),
            stdin: "",
            env: &[],
            code: 0,
        },
        Case {
            name: "usage error",
            args: args(&["plan"]),
            stdin: "",
            env: &[],
            code: 2,
        },
    ];
    for case in &cases {
        check(case);
    }
}

/// `genesis run` on a loopback stub provider: progress on stderr, the result on stdout.
/// The key is inferred (a line on stderr), and the stub's answer is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_never_panics_on_write_errors() {
    let (base, hits) = crate::run::stub(StatusCode::OK, crate::run::completion("Fixed.")).await;
    let case = Case {
        name: "run",
        args: args(&["run", "Fix the login bug", "--base-url", &base]),
        stdin: "",
        env: &[("OPENAI_API_KEY", "sk-test")],
        code: 0,
    };
    tokio::task::spawn_blocking(move || check(&case))
        .await
        .unwrap();
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 5);
}
