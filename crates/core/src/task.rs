//! Tasks: the unit of work the planner produces and the executor runs.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::TaskId;

/// What sort of work a task is. Routing rules and the capability fallback key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

/// A string that names no [`TaskKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task kind {value:?}")]
pub struct UnknownTaskKind {
    /// The rejected name.
    pub value: String,
}

impl FromStr for TaskKind {
    type Err = UnknownTaskKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
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
            .ok_or(UnknownTaskKind {
                value: s.to_owned(),
            })
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
