//! Tasks: the unit of work the planner produces and the executor runs.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::TaskId;

/// What sort of work a task is. Routing rules and the capability fallback key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskKind {
    /// Requirements, specifications, scoping.
    Specify,
    /// Architecture and design.
    Design,
    /// Writing code or building an artefact.
    Implement,
    /// Front-end / user interface work.
    Frontend,
    /// Back-end / API / data-store work.
    Backend,
    /// Testing and quality assurance.
    Test,
    /// Security review and hardening.
    Security,
    /// Deployment, infrastructure, release.
    Deploy,
    /// Monitoring, alerting, operations.
    Monitor,
    /// Marketing and content.
    Marketing,
    /// Sales and business development.
    Sales,
    /// Customer support and documentation for users.
    Support,
    /// Data analysis, metrics, reporting.
    Analyze,
    /// Research and investigation.
    Research,
    /// Finance, pricing, billing, budgets.
    Finance,
    /// Self-improvement, optimisation and evolution of the system.
    Optimize,
    /// Writing documents and reports.
    Document,
    /// Work that fits no other kind.
    Generic,
}

/// Every kind, in declaration order.
const ALL_KINDS: [TaskKind; 18] = [
    TaskKind::Specify,
    TaskKind::Design,
    TaskKind::Implement,
    TaskKind::Frontend,
    TaskKind::Backend,
    TaskKind::Test,
    TaskKind::Security,
    TaskKind::Deploy,
    TaskKind::Monitor,
    TaskKind::Marketing,
    TaskKind::Sales,
    TaskKind::Support,
    TaskKind::Analyze,
    TaskKind::Research,
    TaskKind::Finance,
    TaskKind::Optimize,
    TaskKind::Document,
    TaskKind::Generic,
];

impl TaskKind {
    /// Every kind.
    pub const ALL: &'static [TaskKind] = &ALL_KINDS;

    /// The snake_case name used in JSON, TOML and explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Specify => "specify",
            TaskKind::Design => "design",
            TaskKind::Implement => "implement",
            TaskKind::Frontend => "frontend",
            TaskKind::Backend => "backend",
            TaskKind::Test => "test",
            TaskKind::Security => "security",
            TaskKind::Deploy => "deploy",
            TaskKind::Monitor => "monitor",
            TaskKind::Marketing => "marketing",
            TaskKind::Sales => "sales",
            TaskKind::Support => "support",
            TaskKind::Analyze => "analyze",
            TaskKind::Research => "research",
            TaskKind::Finance => "finance",
            TaskKind::Optimize => "optimize",
            TaskKind::Document => "document",
            TaskKind::Generic => "generic",
        }
    }

    /// A dense index in `0..TaskKind::ALL.len()`, for table lookups on the hot path.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most characters of a rejected name that [`UnknownTaskKind`] keeps and prints.
const MAX_ECHOED_KIND_CHARS: usize = 64;

/// A string that names no [`TaskKind`]. Only its first 64 characters are kept (and
/// printed, followed by `…(N bytes)` when cut), so a huge input cannot make a huge error
/// or log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task kind {value:?}{}", truncation_note(*.len, .value))]
pub struct UnknownTaskKind {
    /// The rejected name, cut to its first 64 characters.
    pub value: String,
    /// The rejected name's full length in bytes.
    pub len: usize,
}

impl UnknownTaskKind {
    fn new(name: &str) -> Self {
        UnknownTaskKind {
            value: name.chars().take(MAX_ECHOED_KIND_CHARS).collect(),
            len: name.len(),
        }
    }
}

/// `…(N bytes)` when `value` is a cut-down name of `len` bytes, else nothing.
fn truncation_note(len: usize, value: &str) -> String {
    if len > value.len() {
        format!("…({len} bytes)")
    } else {
        String::new()
    }
}

/// Longer than any kind name or alias once trimmed: rejected without lower-casing.
const MAX_KIND_NAME_BYTES: usize = 32;

impl FromStr for TaskKind {
    type Err = UnknownTaskKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if trimmed.len() > MAX_KIND_NAME_BYTES {
            return Err(UnknownTaskKind::new(s));
        }
        let lower = trimmed.to_ascii_lowercase();
        let alias = match lower.as_str() {
            "spec" | "requirements" => Some(TaskKind::Specify),
            "architecture" => Some(TaskKind::Design),
            "build" | "code" | "implementation" => Some(TaskKind::Implement),
            "qa" | "testing" => Some(TaskKind::Test),
            "deployment" | "ops" | "infra" => Some(TaskKind::Deploy),
            "monitoring" => Some(TaskKind::Monitor),
            "analysis" | "analytics" | "analyse" => Some(TaskKind::Analyze),
            "docs" | "documentation" => Some(TaskKind::Document),
            "evolve" | "darwin" => Some(TaskKind::Optimize),
            _ => None,
        };
        if let Some(kind) = alias {
            return Ok(kind);
        }
        ALL_KINDS
            .iter()
            .copied()
            .find(|k| k.as_str() == lower)
            .ok_or_else(|| UnknownTaskKind::new(s))
    }
}

/// A short text on a task (a metadata key or value, a skill): borrowed when it is a
/// literal (the decomposers' `family`, `step`, template skills), so building a task
/// from a template allocates nothing for it; owned when it came from input.
pub type Label = std::borrow::Cow<'static, str>;

/// A task's free-form key/value context, sorted by key. Look entries up with a `&str`.
pub type Metadata = BTreeMap<Label, Label>;

/// One unit of work.
///
/// Field names are part of the stable JSON contract (docs/API.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Unique within its plan.
    pub id: TaskId,
    /// What sort of work it is.
    pub kind: TaskKind,
    /// What to do, in words. Routing reads it.
    pub description: String,
    /// Free-form key/value context (`priority`, `domain`, ...). Routing rules may match it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: Metadata,
    /// Skills an agent needs to take the task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_skills: Vec<Label>,
    /// Expected LLM tokens (input + output) to complete the task.
    #[serde(default)]
    pub estimated_tokens: u32,
}

impl Task {
    /// A task with no metadata, no required skills and a default token estimate of 1,000.
    pub fn new(id: TaskId, kind: TaskKind, description: impl Into<String>) -> Self {
        Task {
            id,
            kind,
            description: description.into(),
            metadata: BTreeMap::new(),
            required_skills: Vec::new(),
            estimated_tokens: 1_000,
        }
    }

    /// Adds a required skill.
    #[must_use]
    pub fn with_skill(mut self, skill: impl Into<Label>) -> Self {
        self.required_skills.push(skill.into());
        self
    }

    /// Adds a metadata entry. `&'static str` keys and values are stored without a copy.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<Label>, value: impl Into<Label>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the token estimate.
    #[must_use]
    pub fn with_estimated_tokens(mut self, tokens: u32) -> Self {
        self.estimated_tokens = tokens;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_strings() {
        for kind in TaskKind::ALL {
            assert_eq!(kind.as_str().parse::<TaskKind>().unwrap(), *kind);
            let json = serde_json::to_string(kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert_eq!(TaskKind::ALL.len(), TaskKind::Generic.index() + 1);
    }

    #[test]
    fn aliases_and_unknown_kinds() {
        assert_eq!("QA".parse::<TaskKind>().unwrap(), TaskKind::Test);
        assert_eq!("analytics".parse::<TaskKind>().unwrap(), TaskKind::Analyze);
        let err = "juggling".parse::<TaskKind>().unwrap_err();
        assert_eq!(err.to_string(), "unknown task kind \"juggling\"");
        assert_eq!(" Deploy\n".parse::<TaskKind>().unwrap(), TaskKind::Deploy);
    }

    /// Review R6: the whole, unbounded input went into the error message.
    #[test]
    fn unknown_kind_errors_are_bounded() {
        let huge = "x".repeat(1_000_000);
        let err = huge.parse::<TaskKind>().unwrap_err();
        assert_eq!(err.value.len(), MAX_ECHOED_KIND_CHARS);
        assert_eq!(err.len, 1_000_000);
        let msg = err.to_string();
        assert!(msg.len() < 120, "{} bytes", msg.len());
        assert!(msg.ends_with("…(1000000 bytes)"), "{msg}");
        assert!(msg.starts_with(&format!("unknown task kind \"{}", "x".repeat(64))));
        // Cut on a character boundary, counted in characters.
        let wide = "é".repeat(100);
        let err = wide.parse::<TaskKind>().unwrap_err();
        assert_eq!(err.value, "é".repeat(64));
        assert!(err.to_string().ends_with("…(200 bytes)"), "{err}");
        // Exactly 64 characters: shown whole, no note.
        let err = "y".repeat(64).parse::<TaskKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("unknown task kind \"{}\"", "y".repeat(64))
        );
    }

    #[test]
    fn task_json_field_names_are_stable() {
        let t = Task::new(TaskId::new("t1"), TaskKind::Backend, "build api")
            .with_skill("rust")
            .with_metadata("priority", "high");
        let v: serde_json::Value = serde_json::to_value(&t).unwrap();
        assert_eq!(v["id"], "t1");
        assert_eq!(v["kind"], "backend");
        assert_eq!(v["description"], "build api");
        assert_eq!(v["required_skills"][0], "rust");
        assert_eq!(v["metadata"]["priority"], "high");
        assert_eq!(v["estimated_tokens"], 1000);
    }
}
