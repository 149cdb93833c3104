//! An agent that is a local program, run without a shell.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use genesis_core::{AgentId, Usd};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};

use super::{
    Answerer, InvalidCostLimits, UnknownFieldWarnings, WireRequest, check_cost_limits, cost_bounds,
    parse_output, snippet,
};
use crate::run::{Agent, AgentError, AgentOutput, AgentRequest, CostBounds};

/// Settings of a command agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandAgentConfig {
    /// The program (an absolute path); it must be in `allowed_programs`.
    pub program: PathBuf,
    /// Arguments, passed as they are (no shell, no expansion).
    #[serde(default)]
    pub args: Vec<String>,
    /// Programs this agent may run.
    pub allowed_programs: Vec<PathBuf>,
    /// The only environment the program sees (the parent's is cleared).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the current one).
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Longest a run may take before the program is killed (default 60 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest stdout accepted, in bytes (default 1 MiB).
    #[serde(default = "default_max_output")]
    pub max_output_bytes: usize,
    /// The most one run of the program may cost, for a program that can hold itself to
    /// a limit (as [`HttpAgentConfig::max_cost_usd`](super::HttpAgentConfig::max_cost_usd);
    /// the limit is the request's `max_cost_usd`).
    #[serde(default)]
    pub max_cost_usd: Option<Usd>,
    /// The least a run is worth starting with (needs `max_cost_usd`; default: all of it).
    #[serde(default)]
    pub min_cost_usd: Option<Usd>,
}

impl CommandAgentConfig {
    /// Checks settings that must agree.
    ///
    /// # Errors
    /// [`InvalidCostLimits`] when `min_cost_usd` is set without `max_cost_usd` or above it.
    pub fn validate(&self) -> Result<(), InvalidCostLimits> {
        check_cost_limits(self.min_cost_usd, self.max_cost_usd)
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_max_output() -> usize {
    1 << 20
}

/// Writes the task JSON (as for HTTP agents) to the program's stdin and reads its
/// stdout: stdout has no content type, so it is the agent answer (`{output, cost_usd?,
/// followups?, input_tokens?, output_tokens?, model?}`, checked as an HTTP agent's JSON
/// answer is) when it parses as that JSON, else the output as written. An empty or
/// blank output fails the attempt (rule `empty_answer`).
/// Exit status 0 succeeds; 75 (`EX_TEMPFAIL`) is transient; any other status rejects.
/// A program killed by a signal, or whose output is over `max_output_bytes`, is
/// [`AgentError::Unanswered`] (not retried): it was at work and may have spent money,
/// so a call with `max_cost_usd` is charged it.
#[derive(Debug, Clone)]
pub struct CommandAgent {
    id: AgentId,
    config: CommandAgentConfig,
    /// The answers' unknown fields already warned about.
    warnings: std::sync::Arc<UnknownFieldWarnings>,
}

/// Why a command agent could not be created.
#[derive(Debug, thiserror::Error)]
#[error(
    "program {program} is not in allowed_programs for agent {agent} (rule: command_allow_list)"
)]
pub struct NotAllowed {
    /// The agent.
    pub agent: AgentId,
    /// The program.
    pub program: String,
}

impl CommandAgent {
    /// A command agent.
    ///
    /// # Errors
    /// [`NotAllowed`] when the program is not in the allow-list.
    pub fn new(id: impl Into<AgentId>, config: CommandAgentConfig) -> Result<Self, NotAllowed> {
        let id = id.into();
        if !config.allowed_programs.iter().any(|p| p == &config.program) {
            return Err(NotAllowed {
                agent: id,
                program: config.program.display().to_string(),
            });
        }
        Ok(CommandAgent {
            id,
            config,
            warnings: std::sync::Arc::default(),
        })
    }
}

#[async_trait]
impl Agent for CommandAgent {
    async fn execute(&self, request: AgentRequest) -> Result<AgentOutput, AgentError> {
        let agent = request.agent.clone();
        let input =
            serde_json::to_vec(&WireRequest::from(&request)).map_err(|e| AgentError::Rejected {
                agent: agent.clone(),
                message: format!("cannot encode the task: {e}"),
            })?;
        let mut cmd = tokio::process::Command::new(&self.config.program);
        cmd.args(&self.config.args)
            .env_clear()
            .envs(&self.config.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &self.config.working_dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| AgentError::Rejected {
            agent: agent.clone(),
            message: format!("cannot start {}: {e}", self.config.program.display()),
        })?;
        // stdin is written while stdout and stderr are read: a program that answers as
        // it reads (cat, a filter) fills its output pipe long before a large input is
        // written, and one that logs freely fills stderr before it closes stdout.
        let max = self.config.max_output_bytes;
        let write_stdin = write_input(child.stdin.take(), input);
        let read_stdout = read_output(child.stdout.take(), max);
        let read_stderr = read_stderr_head(child.stderr.take());
        let run = async {
            let ((), out, err) = tokio::try_join!(write_stdin, read_stdout, read_stderr)?;
            let status = child.wait().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, out, err))
        };
        let outcome = tokio::time::timeout(self.config.timeout, run).await;
        let (status, out, err) = match outcome {
            Ok(Ok(r)) => r,
            Err(_) => {
                kill(&mut child).await;
                return Err(AgentError::Timeout {
                    agent,
                    after: self.config.timeout,
                });
            }
            Ok(Err(message)) => {
                // It was at work (its output is over the limit, or could not be read):
                // it may have spent money, and would again.
                kill(&mut child).await;
                return Err(AgentError::Unanswered {
                    agent,
                    message,
                    retryable: false,
                });
            }
        };
        if status.success() {
            let from = Answerer {
                agent: &agent,
                run_id: &request.run_id,
                warnings: &self.warnings,
            };
            return parse_output(&String::from_utf8_lossy(&out), from);
        }
        let stderr = snippet(&String::from_utf8_lossy(&err), 300);
        let message = format!("{} exited with {status}: {stderr}", self.id);
        if status.code().is_none() {
            // Killed by a signal (a crash, the OOM killer), not an exit status of its
            // own saying it failed: it may have done, and paid for, some of the work.
            Err(AgentError::Unanswered {
                agent,
                message,
                retryable: false,
            })
        } else if status.code() == Some(75) {
            Err(AgentError::Transient {
                agent,
                message,
                retry_after: None,
            })
        } else {
            Err(AgentError::Rejected { agent, message })
        }
    }

    fn cost_bounds(&self, _: &AgentRequest) -> Option<CostBounds> {
        cost_bounds(self.config.min_cost_usd, self.config.max_cost_usd)
    }
}

/// How much of stderr is kept for the error message; the rest is read and dropped.
const STDERR_KEPT: u64 = 4096;

/// Writes the task to the program's stdin and closes it. A program that exits or
/// closes stdin without reading it all is not an error: its exit status decides.
async fn write_input(stdin: Option<ChildStdin>, input: Vec<u8>) -> Result<(), String> {
    if let Some(mut stdin) = stdin {
        let _ = stdin.write_all(&input).await;
    }
    Ok(())
}

/// Reads stdout to the end, failing as soon as it passes `max` bytes (the caller then
/// kills the program), so at most `max + 1` bytes are ever held.
async fn read_output(stdout: Option<ChildStdout>, max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    if let Some(stdout) = stdout {
        let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
        stdout
            .take(limit)
            .read_to_end(&mut out)
            .await
            .map_err(|e| format!("cannot read the output: {e}"))?;
    }
    if out.len() > max {
        return Err(format!("output exceeds max_output_bytes {max}"));
    }
    Ok(out)
}

/// Keeps the first [`STDERR_KEPT`] bytes of stderr and drains the rest, so a program
/// that logs a lot never blocks on a full pipe. Read errors only lose diagnostics.
async fn read_stderr_head(stderr: Option<ChildStderr>) -> Result<Vec<u8>, String> {
    let mut head = Vec::new();
    if let Some(mut stderr) = stderr
        && (&mut stderr)
            .take(STDERR_KEPT)
            .read_to_end(&mut head)
            .await
            .is_ok()
    {
        let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
    }
    Ok(head)
}

/// Longest wait for a killed program to be reaped (one stuck in the kernel may take
/// longer; `kill_on_drop` and tokio's orphan reaping then finish the job).
const REAP_WAIT: Duration = Duration::from_secs(5);

/// Kills the program and reaps it, so a retry never runs beside a stale attempt.
async fn kill(child: &mut Child) {
    if let Err(e) = child.start_kill() {
        // Already exited and reaped: nothing to do.
        tracing::debug!(error = %e, "cannot kill a command agent's program");
        return;
    }
    if tokio::time::timeout(REAP_WAIT, child.wait()).await.is_err() {
        tracing::warn!(
            pid = child.id(),
            "a killed command agent's program has not exited"
        );
    }
}
