//! Error classification shared by every crate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `error` and its sources, `: `-separated, as an operator reads it in a log or an API
/// error (errors here do not repeat their source's text, so each part says something
/// new).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// Where in the pipeline a failure belongs. The facade maps categories to CLI exit codes
/// and HTTP statuses in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ErrorCategory {
    /// The request could not be broken into tasks.
    Decomposition,
    /// No agent could be found or assigned.
    Routing,
    /// The plan failed validation.
    Validation,
    /// An LLM provider failed or answered nonsense.
    Llm,
    /// A network call failed.
    Network,
    /// A limit, budget or capacity was exhausted.
    Resource,
    /// Input was rejected by a security check.
    Security,
    /// Configuration is invalid.
    Config,
    /// A bug or an unexpected condition inside Genesis.
    Internal,
}

impl ErrorCategory {
    /// The snake_case name used in JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::Decomposition => "decomposition",
            ErrorCategory::Routing => "routing",
            ErrorCategory::Validation => "validation",
            ErrorCategory::Llm => "llm",
            ErrorCategory::Network => "network",
            ErrorCategory::Resource => "resource",
            ErrorCategory::Security => "security",
            ErrorCategory::Config => "config",
            ErrorCategory::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad a failure is, from the operator's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Expected and handled (a rejected request).
    Low,
    /// Degraded but working (fallback used, retries exhausted).
    Medium,
    /// A run failed.
    High,
    /// The service cannot do its job; an operator must act.
    Critical,
}
