//! Command agents: real child processes, fed through pipes.
//!
//! These run `/bin/cat` and `/bin/sh`, so they are Unix-only. Each timeout here is a
//! safety net far above the expected run time: a pipe deadlock shows up as a
//! `Timeout` error, not as a slow pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use genesis::core::{AgentId, RunId, Task, TaskId, TaskKind};
use genesis::run::backends::{CommandAgent, CommandAgentConfig};
use genesis::run::{Agent, AgentError, AgentRequest, TaskInput};

/// A task whose one prerequisite produced `input_bytes` bytes of output.
fn request(input_bytes: usize) -> AgentRequest {
    AgentRequest {
        subject: "anonymous".into(),
        run_id: RunId::new("r"),
        request: Arc::from("req"),
        task: Task::new(TaskId::new("t1"), TaskKind::Implement, "do it"),
        agent: AgentId::new("a"),
        model: None,
        inputs: vec![TaskInput {
            task_id: TaskId::new("t0"),
            output: "x".repeat(input_bytes),
            quarantined: None,
        }],
        attempt: 1,
        previous: None,
        previous_quarantined: None,
        max_cost: None,
    }
}

fn agent(program: &str, args: &[&str], timeout: Duration, max_output_bytes: usize) -> CommandAgent {
    let config = CommandAgentConfig {
        program: program.into(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        allowed_programs: vec![program.into()],
        env: Default::default(),
        working_dir: None,
        timeout,
        max_output_bytes,
        max_cost_usd: None,
        min_cost_usd: None,
    };
    CommandAgent::new("a", config).unwrap()
}

/// `sh -c script`.
fn shell(script: &str, timeout: Duration, max_output_bytes: usize) -> CommandAgent {
    agent("/bin/sh", &["-c", script], timeout, max_output_bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_input_to_cat_does_not_deadlock_the_pipes() {
    // 300 KB of input is far more than a pipe buffer (64 KiB on Linux): cat fills its
    // stdout while the agent is still writing stdin, unless both move at once.
    let cat = agent("/bin/cat", &[], Duration::from_secs(20), 4 << 20);
    let started = Instant::now();
    let out = cat.execute(request(300_000)).await;
    let elapsed = started.elapsed();
    let out = out.unwrap_or_else(|e| panic!("cat failed after {elapsed:?}: {e}"));
    // cat echoes the task JSON, which is not a `{output}` answer: the text is all of it.
    let echoed: serde_json::Value = serde_json::from_str(&out.text).unwrap();
    assert_eq!(
        echoed["inputs"][0]["output"].as_str().map(str::len),
        Some(300_000)
    );
    assert_eq!(echoed["task"]["id"], "t1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_flooding_stderr_still_finishes() {
    // 1 MB on stderr before a word on stdout: stderr must be drained while stdout is read.
    let a = shell(
        "/usr/bin/yes noise | /usr/bin/head -c 1000000 >&2; echo '{\"output\": \"done\"}'",
        Duration::from_secs(20),
        1 << 20,
    );
    let out = a.execute(request(10)).await.unwrap();
    assert_eq!(out.text, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_reports_the_start_of_a_large_stderr() {
    let a = shell(
        "/usr/bin/yes oops | /usr/bin/head -c 500000 >&2; exit 3",
        Duration::from_secs(20),
        1 << 20,
    );
    match a.execute(request(200_000)).await {
        Err(AgentError::Rejected { message, .. }) => {
            assert!(message.contains("exit status: 3"), "{message}");
            assert!(message.contains("oops\noops"), "{message}");
            assert!(
                message.len() < 1_000,
                "stderr is cut short: {}",
                message.len()
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// A program killed by a signal said nothing about the work (it may have done, and
/// paid for, some of it), unlike one that exits with a status of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_killed_by_a_signal_may_have_cost_and_an_exit_status_did_not() {
    let a = shell("kill -9 $$", Duration::from_secs(20), 1 << 20);
    match a.execute(request(10)).await {
        Err(e @ AgentError::Unanswered { .. }) => {
            assert!(e.to_string().contains("signal: 9"), "{e}");
            assert!(e.may_have_cost() && !e.retry().is_retryable(), "{e}");
        }
        other => panic!("expected an unusable answer, got {other:?}"),
    }
    let a = shell("exit 3", Duration::from_secs(20), 1 << 20);
    match a.execute(request(10)).await {
        Err(e @ AgentError::Rejected { .. }) => assert!(!e.may_have_cost(), "{e}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_75_is_transient() {
    let a = shell("exit 75", Duration::from_secs(20), 1 << 20);
    assert!(matches!(
        a.execute(request(10)).await,
        Err(AgentError::Transient { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_over_the_cap_fails_without_waiting_for_the_timeout() {
    // An endless writer: the agent stops reading at the cap and kills it. It was at
    // work, so the call may have cost money (a capped call is charged its limit), and
    // it is not retried on the same program.
    let a = shell("exec /usr/bin/yes", Duration::from_secs(20), 64 * 1024);
    let started = Instant::now();
    match a.execute(request(300_000)).await {
        Err(
            e @ AgentError::Unanswered {
                retryable: false, ..
            },
        ) => {
            assert!(
                e.to_string()
                    .contains("output exceeds max_output_bytes 65536"),
                "{e}"
            );
            assert!(e.may_have_cost() && !e.retry().is_retryable(), "{e}");
        }
        other => panic!("expected an unusable answer, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_hangs_times_out_and_is_killed() {
    // The program never reads stdin nor closes stdout; the timeout ends the run.
    let dir = crate::TempDir::new("it-hang");
    let pid_file = dir.join("sleep.pid");
    let script = format!("echo $$ > {}; exec /bin/sleep 30", pid_file.display());
    let a = shell(&script, Duration::from_millis(500), 1 << 20);
    let started = Instant::now();
    match a.execute(request(300_000)).await {
        Err(AgentError::Timeout { after, .. }) => {
            assert_eq!(after, Duration::from_millis(500));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Killed and reaped before `execute` returned: no process (not even a zombie) left.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    if cfg!(target_os = "linux") {
        let proc_dir = std::path::Path::new("/proc").join(pid.trim());
        assert!(!proc_dir.exists(), "{} still exists", proc_dir.display());
    }
}
