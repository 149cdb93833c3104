//! Agent profiles: what an agent does, what it costs and how well it has done so far.

use genesis_core::{AgentId, TaskKind};
use serde::{Deserialize, Serialize};

/// How expensive an agent is to run, relative to the others in the catalogue.
///
/// The router turns it into a unit cost with [`CostTier::unit`] (`low` = 0.0,
/// `medium` = 0.5, `high` = 1.0) and subtracts `cost_weight × unit` from a candidate's
/// score, so among equally good agents the cheaper one wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostTier {
    /// Cheap: small models, deterministic tools.
    Low,
    /// The default.
    #[default]
    Medium,
    /// Expensive: frontier models, long contexts.
    High,
}

impl CostTier {
    /// The tier as a number in `[0, 1]`.
    pub fn unit(self) -> f64 {
        match self {
            CostTier::Low => 0.0,
            CostTier::Medium => 0.5,
            CostTier::High => 1.0,
        }
    }

    /// The snake_case name used in TOML and explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            CostTier::Low => "low",
            CostTier::Medium => "medium",
            CostTier::High => "high",
        }
    }
}

/// Outcomes the router has recorded for an agent (learned state, persisted with the
/// registry).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeStats {
    /// Tasks that succeeded.
    #[serde(default)]
    pub successes: u64,
    /// Tasks that failed.
    #[serde(default)]
    pub failures: u64,
    /// Mean latency of recorded tasks, in milliseconds.
    #[serde(default)]
    pub mean_latency_ms: f64,
    /// Mean cost of recorded tasks, in US dollars.
    #[serde(default)]
    pub mean_cost_usd: f64,
}

impl OutcomeStats {
    /// Number of recorded outcomes.
    pub fn total(&self) -> u64 {
        self.successes.saturating_add(self.failures)
    }

    fn is_empty(&self) -> bool {
        self.total() == 0
    }
}

fn default_success_rate() -> f64 {
    0.8
}

fn default_max_concurrent() -> u32 {
    4
}

fn is_zero_stats(s: &OutcomeStats) -> bool {
    s.is_empty()
}

/// One agent (or tool) the router can send tasks to.
///
/// In TOML (`config/agents.toml`) each agent is an `[[agent]]` table:
///
/// ```toml
/// [[agent]]
/// id = "backend"
/// description = "Builds server-side APIs, services and databases"
/// task_kinds = ["backend", "implement"]   # TaskKind names; empty = any kind
/// skills = ["rust", "sql", "rest api"]
/// examples = ["Add a REST endpoint that lists invoices"]
/// cost_tier = "medium"                    # low | medium | high
/// success_rate = 0.9                      # in [0, 1]
/// max_concurrent_tasks = 6                # per plan, at least 1
/// ```
///
/// `desc` is accepted for `description` and `kinds` for `task_kinds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentProfile {
    /// Unique id.
    pub id: AgentId,
    /// What the agent does, in words; the text matcher reads it.
    #[serde(alias = "desc")]
    pub description: String,
    /// Task kinds the agent takes. Empty means any kind (typical for tool catalogues).
    #[serde(default, alias = "kinds", skip_serializing_if = "Vec::is_empty")]
    pub task_kinds: Vec<TaskKind>,
    /// Skills or domain tags; matched against task text and required skills.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<String>,
    /// Example task descriptions the agent handled well; the text matcher learns from them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    /// Ids of the plans (user requests) in which the agent ran a task successfully, one
    /// entry per plan (learned state, like `examples`). Agents that share a plan id were
    /// used together; [`Router::route_all`](crate::Router::route_all) learns from these
    /// which agents belong in one plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<String>,
    /// Relative cost.
    #[serde(default)]
    pub cost_tier: CostTier,
    /// Probability that the agent completes a task, in `[0, 1]`; updated by outcomes.
    #[serde(default = "default_success_rate")]
    pub success_rate: f64,
    /// Most tasks of one plan the agent may take.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_tasks: u32,
    /// Recorded outcomes (learned state).
    #[serde(default, skip_serializing_if = "is_zero_stats")]
    pub outcomes: OutcomeStats,
}

impl AgentProfile {
    /// A profile with defaults: any kind, no skills or examples, medium cost, success
    /// rate 0.8, four concurrent tasks.
    pub fn new(id: impl Into<AgentId>, description: impl Into<String>) -> Self {
        AgentProfile {
            id: id.into(),
            description: description.into(),
            task_kinds: Vec::new(),
            skills: Vec::new(),
            examples: Vec::new(),
            plans: Vec::new(),
            cost_tier: CostTier::default(),
            success_rate: default_success_rate(),
            max_concurrent_tasks: default_max_concurrent(),
            outcomes: OutcomeStats::default(),
        }
    }

    /// Adds a task kind.
    #[must_use]
    pub fn with_kind(mut self, kind: TaskKind) -> Self {
        self.task_kinds.push(kind);
        self
    }

    /// Adds a skill.
    #[must_use]
    pub fn with_skill(mut self, skill: impl Into<String>) -> Self {
        self.skills.push(skill.into());
        self
    }

    /// Adds an example task description.
    #[must_use]
    pub fn with_example(mut self, example: impl Into<String>) -> Self {
        self.examples.push(example.into());
        self
    }

    /// Sets the cost tier.
    #[must_use]
    pub fn with_cost_tier(mut self, tier: CostTier) -> Self {
        self.cost_tier = tier;
        self
    }

    /// Sets the success rate (validated when the registry is built).
    #[must_use]
    pub fn with_success_rate(mut self, rate: f64) -> Self {
        self.success_rate = rate;
        self
    }

    /// Sets the per-plan capacity (validated when the registry is built).
    #[must_use]
    pub fn with_max_concurrent_tasks(mut self, max: u32) -> Self {
        self.max_concurrent_tasks = max;
        self
    }

    /// Whether the agent takes tasks of `kind` (an empty kind list takes every kind).
    pub fn accepts_kind(&self, kind: TaskKind) -> bool {
        self.task_kinds.is_empty() || self.task_kinds.contains(&kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_aliases_apply() {
        let p: AgentProfile =
            serde_json::from_str(r#"{"id":"a","desc":"does a","kinds":["test"]}"#).unwrap();
        assert_eq!(p.description, "does a");
        assert_eq!(p.task_kinds, vec![TaskKind::Test]);
        assert_eq!(p.cost_tier, CostTier::Medium);
        assert!((p.success_rate - 0.8).abs() < 1e-12);
        assert_eq!(p.max_concurrent_tasks, 4);
        assert!(p.accepts_kind(TaskKind::Test));
        assert!(!p.accepts_kind(TaskKind::Deploy));
        assert!(AgentProfile::new("b", "any").accepts_kind(TaskKind::Deploy));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<AgentProfile>(r#"{"id":"a","desc":"x","colour":1}"#)
            .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn cost_tiers_map_to_units() {
        assert_eq!(CostTier::Low.unit(), 0.0);
        assert_eq!(CostTier::High.unit(), 1.0);
        assert_eq!(CostTier::Medium.as_str(), "medium");
    }
}
