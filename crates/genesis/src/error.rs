//! The facade's error type, and the one place errors map to exit codes and HTTP statuses.

use genesis_core::{ErrorCategory, Severity};

/// Anything the orchestrator can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    /// The request broke an input limit or was screened out.
    #[error("request rejected: {reason} (rule: {rule})")]
    Rejected {
        /// The rule that rejected it (`max_request_chars`,
        /// `injection:rule:ignore_previous_instructions`).
        rule: String,
        /// What was wrong, with the offending value.
        reason: String,
        /// The screen's own error, to match on by type
        /// (`SecurityError::InjectionDetected { .. }` and the like). Its text is
        /// `reason`, so it is not repeated as [`std::error::Error::source`].
        error: genesis_security::SecurityError,
    },
    /// A run budget was asked for above the operator's per-run budget
    /// (`budget.per_run`), which caps what any one run may spend.
    #[error(
        "run budget {requested} is above the configured per-run budget {limit} (budget.per_run) (rule: budget_usd)"
    )]
    BudgetAboveLimit {
        /// The run budget asked for (`budget_usd`).
        requested: genesis_core::Usd,
        /// The configured per-run budget.
        limit: genesis_core::Usd,
    },
    /// Decomposition failed.
    #[error(transparent)]
    Decomposition(#[from] genesis_htdag::HtdagError),
    /// Routing setup failed (registry or rules).
    #[error(transparent)]
    Routing(#[from] genesis_halo::HaloError),
    /// The model catalogue is invalid.
    #[error(transparent)]
    Models(#[from] genesis_daao::CatalogError),
    /// The plan failed validation.
    #[error("plan failed validation: {summary}")]
    InvalidPlan {
        /// The failed rules, joined.
        summary: String,
        /// The whole plan, with its validation report.
        plan: Box<crate::Plan>,
    },
    /// A feature flag or kill switch refused the request.
    #[error("{flag} is {state}: request refused (rule: feature_flag:{flag})")]
    Disabled {
        /// The flag.
        flag: String,
        /// `off` or `on` (for kill switches).
        state: &'static str,
    },
    /// A task of the plan has no candidate agent (its own or a routing alternative) that
    /// a backend serves: its run would fail it ("no backend is configured for agent …").
    /// Refused before anything is journaled, charged or called.
    #[error(
        "{}",
        unserved_message(task, agents, *others)
    )]
    UnservedAgents {
        /// The first such task.
        task: genesis_core::TaskId,
        /// Its candidate agents, the assigned one first (empty: nobody can take it).
        agents: Vec<genesis_core::AgentId>,
        /// How many other tasks of the plan have no served candidate either.
        others: usize,
    },
    /// [`Orchestrator::execute`](crate::Orchestrator::execute) (or `run`) was called
    /// outside a tokio runtime: the run is a task on the caller's runtime.
    #[error(
        "{operation} must be called within a tokio runtime (it spawns the run): call it from async code or inside Runtime::block_on (rule: tokio_runtime)"
    )]
    NoRuntime {
        /// The call (`Orchestrator::execute`).
        operation: &'static str,
    },
    /// Configuration is invalid.
    #[error("invalid configuration: {message}")]
    Config {
        /// What is wrong (names the key or file).
        message: String,
    },
    /// An LLM provider at its kind's own API (`api.openai.com`, `api.anthropic.com`) has
    /// no API key, though runs or planning would call it: every call would be refused.
    #[error(
        "llm provider {provider} at {base_url} has no API key: set {variable} or api_key in its [[llm.providers]] entry (rule: api_key_required)"
    )]
    MissingApiKey {
        /// The provider kind (`openai`, `anthropic`).
        provider: String,
        /// The API root it would call.
        base_url: String,
        /// The environment variable the key is read from (`OPENAI_API_KEY`).
        variable: String,
    },
    /// Reading a configuration or data file failed.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The message of [`GenesisError::UnservedAgents`]: the task, its candidates and what to
/// configure.
fn unserved_message(
    task: &genesis_core::TaskId,
    agents: &[genesis_core::AgentId],
    others: usize,
) -> String {
    let others = match others {
        0 => String::new(),
        1 => " (and 1 other task)".to_owned(),
        n => format!(" (and {n} other tasks)"),
    };
    match agents.first() {
        None => format!("task {task} has no agent to run it{others} (rule: agent_backend)"),
        Some(example) => {
            let names: Vec<&str> = agents.iter().map(genesis_core::AgentId::as_str).collect();
            format!(
                "task {task} cannot run: no backend serves its agent(s) {}{others}; configure \
                 [backends.<agent>] for one of them in the config (e.g. [backends.{example}]), \
                 or llm.agents = true with an [[llm.providers]] entry; embedding the library, \
                 add one to the AgentSet (AgentSet::with(\"{example}\", ..) or \
                 with_fallback) (rule: agent_backend)",
                names.join(", "),
            )
        }
    }
}

impl GenesisError {
    /// The pipeline category.
    pub fn category(&self) -> ErrorCategory {
        match self {
            GenesisError::Rejected { .. } | GenesisError::Disabled { .. } => {
                ErrorCategory::Security
            }
            GenesisError::Decomposition(e) => e.category(),
            GenesisError::Routing(_) => ErrorCategory::Routing,
            GenesisError::Models(_)
            | GenesisError::Config { .. }
            | GenesisError::MissingApiKey { .. }
            | GenesisError::UnservedAgents { .. }
            | GenesisError::NoRuntime { .. }
            | GenesisError::Io { .. } => ErrorCategory::Config,
            GenesisError::InvalidPlan { .. } | GenesisError::BudgetAboveLimit { .. } => {
                ErrorCategory::Validation
            }
        }
    }

    /// How bad it is for an operator.
    pub fn severity(&self) -> Severity {
        match self {
            GenesisError::Rejected { .. }
            | GenesisError::Disabled { .. }
            | GenesisError::BudgetAboveLimit { .. } => Severity::Low,
            GenesisError::Decomposition(e) if e.is_rejection() => Severity::Low,
            GenesisError::InvalidPlan { .. } | GenesisError::UnservedAgents { .. } => {
                Severity::Medium
            }
            GenesisError::Config { .. }
            | GenesisError::MissingApiKey { .. }
            | GenesisError::Io { .. }
            | GenesisError::Models(_) => Severity::Critical,
            _ => Severity::High,
        }
    }

    /// True when the caller's input was at fault (exit code 2, HTTP 4xx).
    pub fn is_rejection(&self) -> bool {
        match self {
            GenesisError::Rejected { .. }
            | GenesisError::InvalidPlan { .. }
            | GenesisError::BudgetAboveLimit { .. } => true,
            GenesisError::Decomposition(e) => e.is_rejection(),
            _ => false,
        }
    }

    /// The CLI exit code: 2 for rejected input, for a missing API key and for a plan no
    /// backend can run (usage errors the operator fixes in the configuration), 1 for
    /// everything else.
    pub fn exit_code(&self) -> i32 {
        if self.is_rejection()
            || matches!(
                self,
                GenesisError::MissingApiKey { .. } | GenesisError::UnservedAgents { .. }
            )
        {
            2
        } else {
            1
        }
    }

    /// The HTTP status the server answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            GenesisError::Disabled { .. } => 503,
            // The request is fine; the server's setup cannot run it. Not 503: retrying
            // does not help until an operator configures backends.
            GenesisError::InvalidPlan { .. } | GenesisError::UnservedAgents { .. } => 422,
            e if e.is_rejection() => 400,
            _ => 500,
        }
    }

    /// A stable machine-readable rule or code for JSON error bodies.
    pub fn rule(&self) -> String {
        match self {
            GenesisError::Rejected { rule, .. } => rule.clone(),
            GenesisError::Disabled { flag, .. } => format!("feature_flag:{flag}"),
            GenesisError::InvalidPlan { .. } => "plan_validation".into(),
            GenesisError::BudgetAboveLimit { .. } => "budget_usd".into(),
            GenesisError::MissingApiKey { .. } => "api_key_required".into(),
            GenesisError::UnservedAgents { .. } => "agent_backend".into(),
            GenesisError::NoRuntime { .. } => "tokio_runtime".into(),
            GenesisError::Decomposition(e) => match e {
                genesis_htdag::HtdagError::EmptyRequest => "non_empty_request".into(),
                genesis_htdag::HtdagError::RequestTooLong { .. } => "max_request_chars".into(),
                genesis_htdag::HtdagError::TooManyTasks { .. } => "max_tasks".into(),
                genesis_htdag::HtdagError::TooDeep { .. } => "max_depth".into(),
                _ => "decomposition".into(),
            },
            other => other.category().as_str().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_map_to_exit_2_and_400() {
        let e = GenesisError::Decomposition(genesis_htdag::HtdagError::RequestTooLong {
            len: 5001,
            max: 5000,
        });
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.http_status(), 400);
        assert_eq!(e.rule(), "max_request_chars");
        let e = GenesisError::Config {
            message: "x".into(),
        };
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.http_status(), 500);
        let e = GenesisError::Disabled {
            flag: "orchestration_enabled".into(),
            state: "off",
        };
        assert_eq!(e.http_status(), 503);
    }

    #[test]
    fn a_budget_above_the_cap_is_the_callers_fault_naming_both_values() {
        let e = GenesisError::BudgetAboveLimit {
            requested: genesis_core::Usd::new(1000.0).unwrap(),
            limit: genesis_core::Usd::new(2.5).unwrap(),
        };
        assert_eq!(e.http_status(), 400);
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.rule(), "budget_usd");
        assert_eq!(e.category(), ErrorCategory::Validation);
        let message = e.to_string();
        assert!(message.contains("$1000.0000"), "{message}");
        assert!(message.contains("$2.5000"), "{message}");
        assert!(message.contains("rule: budget_usd"), "{message}");
    }
}
