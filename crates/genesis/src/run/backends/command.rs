//! An agent that is a local program, run without a shell.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use genesis_core::AgentId;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{WireRequest, parse_output};
use crate::run::{Agent, AgentError, AgentOutput, AgentRequest};

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
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_max_output() -> usize {
    1 << 20
}

/// Writes the task JSON (as for HTTP agents) to the program's stdin and reads its
/// stdout as the output (`{output, cost_usd?, followups?}` JSON or plain text).
/// Exit status 0 succeeds; 75 (`EX_TEMPFAIL`) is transient; anything else rejects.
#[derive(Debug, Clone)]
pub struct CommandAgent {
    id: AgentId,
    config: CommandAgentConfig,
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
        Ok(CommandAgent { id, config })
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
        let run = async {
            if let Some(mut stdin) = child.stdin.take() {
                // A program that ignores stdin closes the pipe; that is not an error.
                let _ = stdin.write_all(&input).await;
                drop(stdin);
            }
            let mut stdout = child.stdout.take();
            let mut stderr = child.stderr.take();
            let max = self.config.max_output_bytes;
            let mut out = Vec::new();
            if let Some(s) = stdout.as_mut() {
                let mut limited = s.take(max as u64 + 1);
                limited
                    .read_to_end(&mut out)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if out.len() > max {
                return Err(format!("output exceeds max_output_bytes {max}"));
            }
            let mut err = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let mut limited = s.take(4096);
                let _ = limited.read_to_end(&mut err).await;
            }
            let status = child.wait().await.map_err(|e| e.to_string())?;
            Ok((status, out, err))
        };
        let (status, out, err) = match tokio::time::timeout(self.config.timeout, run).await {
            Err(_) => {
                return Err(AgentError::Timeout {
                    agent,
                    after: self.config.timeout,
                });
            }
            Ok(Err(message)) => return Err(AgentError::Rejected { agent, message }),
            Ok(Ok(r)) => r,
        };
        if status.success() {
            return Ok(parse_output(&String::from_utf8_lossy(&out)));
        }
        let stderr: String = String::from_utf8_lossy(&err).chars().take(300).collect();
        let message = format!("{} exited with {status}: {stderr}", self.id);
        if status.code() == Some(75) {
            Err(AgentError::Transient {
                agent,
                message,
                retry_after: None,
            })
        } else {
            Err(AgentError::Rejected { agent, message })
        }
    }
}
