//! The agent catalogue: loading (TOML, JSON, JSONL), validation and persistence.

use genesis_core::fasthash::FxHashMap;

use genesis_core::{AgentId, TaskKind};
use serde::{Deserialize, Serialize};

use crate::profile::{AgentProfile, CostTier, OutcomeStats};
use crate::{HaloError, LineError};

/// What to do with a malformed JSONL line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JsonlMode {
    /// Skip the line and report it in the returned [`LineError`] list.
    #[default]
    Skip,
    /// Fail the whole load with [`HaloError::JsonlLine`].
    Fail,
}

/// A validated, immutable catalogue of agents, indexed by id.
///
/// Invariants: at least one agent, ids unique and non-empty, descriptions non-empty,
/// success rates in `[0, 1]`, capacities at least 1.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRegistry {
    agents: Vec<AgentProfile>,
    /// Keys come from the operator's catalogue, not from requests, so the fast hasher
    /// is safe; the validator and the planner look agents up per task.
    by_id: FxHashMap<AgentId, usize>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlCatalogue {
    #[serde(default)]
    agent: Vec<AgentProfile>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonCatalogue {
    List(Vec<AgentProfile>),
    Wrapped { agents: Vec<AgentProfile> },
}

#[derive(Serialize)]
struct JsonOut<'a> {
    agents: &'a [AgentProfile],
}

/// One JSONL line: lenient about extra fields, so third-party tool catalogues load as-is.
#[derive(Deserialize)]
struct JsonlAgent {
    id: String,
    #[serde(alias = "desc")]
    description: String,
    #[serde(default, alias = "kinds")]
    task_kinds: Vec<TaskKind>,
    #[serde(default, alias = "domain", alias = "tags")]
    skills: OneOrMany,
    #[serde(default)]
    examples: Vec<String>,
    #[serde(default)]
    plans: Vec<String>,
    #[serde(default)]
    cost_tier: Option<CostTier>,
    #[serde(default)]
    success_rate: Option<f64>,
    #[serde(default)]
    max_concurrent_tasks: Option<u32>,
    #[serde(default)]
    outcomes: Option<OutcomeStats>,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

impl AgentRegistry {
    /// Builds a registry from profiles.
    ///
    /// # Errors
    /// [`HaloError::EmptyCatalogue`], [`HaloError::EmptyAgentId`],
    /// [`HaloError::DuplicateAgent`], [`HaloError::EmptyDescription`],
    /// [`HaloError::InvalidSuccessRate`] or [`HaloError::ZeroCapacity`].
    pub fn new(agents: Vec<AgentProfile>) -> Result<Self, HaloError> {
        if agents.is_empty() {
            return Err(HaloError::EmptyCatalogue);
        }
        let mut by_id = FxHashMap::with_capacity_and_hasher(agents.len(), Default::default());
        for (position, agent) in agents.iter().enumerate() {
            validate(position, agent)?;
            if by_id.insert(agent.id.clone(), position).is_some() {
                return Err(HaloError::DuplicateAgent {
                    id: agent.id.to_string(),
                });
            }
        }
        Ok(AgentRegistry { agents, by_id })
    }

    /// Parses `[[agent]]` tables (the format of `config/agents.toml`).
    ///
    /// # Errors
    /// [`HaloError::AgentsToml`] for syntax errors and unknown fields, then the
    /// validation errors of [`AgentRegistry::new`].
    pub fn from_toml_str(text: &str) -> Result<Self, HaloError> {
        let cat: TomlCatalogue =
            toml::from_str(text).map_err(|source| HaloError::AgentsToml { source })?;
        Self::new(cat.agent)
    }

    /// Parses a JSON array of profiles, or an object `{"agents": [...]}`.
    ///
    /// # Errors
    /// [`HaloError::AgentsJson`], then the validation errors of [`AgentRegistry::new`].
    pub fn from_json_str(text: &str) -> Result<Self, HaloError> {
        let cat: JsonCatalogue =
            serde_json::from_str(text).map_err(|source| HaloError::AgentsJson { source })?;
        Self::new(match cat {
            JsonCatalogue::List(v) | JsonCatalogue::Wrapped { agents: v } => v,
        })
    }

    /// Parses one agent per line: `{"id": ..., "desc": ...}` at least; `description`,
    /// `task_kinds`/`kinds`, `skills`/`domain`/`tags` (string or list), `examples`,
    /// `plans`, `cost_tier`, `success_rate`, `max_concurrent_tasks` optional; other fields ignored.
    /// Blank lines are skipped. In [`JsonlMode::Skip`] bad lines (syntax, missing `id` or
    /// description, empty description) are returned as [`LineError`]s with their line
    /// number; in [`JsonlMode::Fail`] the first one fails the load.
    ///
    /// # Errors
    /// [`HaloError::JsonlLine`] (fail mode), [`HaloError::EmptyDescription`] (fail mode),
    /// then the validation errors of [`AgentRegistry::new`] (duplicates always fail).
    pub fn from_jsonl_str(
        text: &str,
        mode: JsonlMode,
    ) -> Result<(Self, Vec<LineError>), HaloError> {
        let mut agents = Vec::new();
        let mut skipped = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            let parsed: JsonlAgent = match serde_json::from_str(raw) {
                Ok(p) => p,
                Err(source) => match mode {
                    JsonlMode::Fail => return Err(HaloError::JsonlLine { line, source }),
                    JsonlMode::Skip => {
                        skipped.push(LineError {
                            line,
                            message: source.to_string(),
                        });
                        continue;
                    }
                },
            };
            if parsed.description.trim().is_empty() || parsed.id.trim().is_empty() {
                let what = if parsed.id.trim().is_empty() {
                    "empty id"
                } else {
                    "empty description"
                };
                match mode {
                    JsonlMode::Fail if parsed.id.trim().is_empty() => {
                        return Err(HaloError::EmptyAgentId {
                            position: agents.len(),
                        });
                    }
                    JsonlMode::Fail => {
                        return Err(HaloError::EmptyDescription { id: parsed.id });
                    }
                    JsonlMode::Skip => {
                        skipped.push(LineError {
                            line,
                            message: format!("agent {:?} has an {what}", parsed.id),
                        });
                        continue;
                    }
                }
            }
            agents.push(AgentProfile {
                id: AgentId::from(parsed.id),
                description: parsed.description,
                task_kinds: parsed.task_kinds,
                skills: parsed.skills.into_vec(),
                examples: parsed.examples,
                plans: parsed.plans,
                cost_tier: parsed.cost_tier.unwrap_or_default(),
                success_rate: parsed.success_rate.unwrap_or(0.8),
                max_concurrent_tasks: parsed.max_concurrent_tasks.unwrap_or(4),
                outcomes: parsed.outcomes.unwrap_or_default(),
            });
        }
        Ok((Self::new(agents)?, skipped))
    }

    /// Writes the registry, learned state included, in the `[[agent]]` TOML format that
    /// [`AgentRegistry::from_toml_str`] reads back.
    ///
    /// # Errors
    /// [`HaloError::SerializeToml`] (not expected for a valid registry).
    pub fn to_toml_string(&self) -> Result<String, HaloError> {
        #[derive(Serialize)]
        struct Out<'a> {
            agent: &'a [AgentProfile],
        }
        toml::to_string(&Out {
            agent: &self.agents,
        })
        .map_err(|source| HaloError::SerializeToml { source })
    }

    /// Writes the registry as `{"agents": [...]}` JSON, learned state included.
    ///
    /// # Errors
    /// [`HaloError::SerializeJson`] (not expected for a valid registry).
    pub fn to_json_string(&self) -> Result<String, HaloError> {
        serde_json::to_string_pretty(&JsonOut {
            agents: &self.agents,
        })
        .map_err(|source| HaloError::SerializeJson { source })
    }

    /// The agent with this id.
    pub fn get(&self, id: &str) -> Option<&AgentProfile> {
        self.by_id.get(id).map(|&i| &self.agents[i])
    }

    /// The position of the agent with this id (stable for the registry's lifetime).
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The agent at a position.
    pub fn by_index(&self, index: usize) -> Option<&AgentProfile> {
        self.agents.get(index)
    }

    /// All agents, in catalogue order.
    pub fn iter(&self) -> std::slice::Iter<'_, AgentProfile> {
        self.agents.iter()
    }

    /// All agents as a slice, in catalogue order.
    pub fn as_slice(&self) -> &[AgentProfile] {
        &self.agents
    }

    /// Number of agents (never zero).
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Always false: a registry holds at least one agent. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Consumes the registry, returning its profiles.
    pub fn into_profiles(self) -> Vec<AgentProfile> {
        self.agents
    }

    pub(crate) fn agent_mut(&mut self, index: usize) -> Option<&mut AgentProfile> {
        self.agents.get_mut(index)
    }
}

impl<'a> IntoIterator for &'a AgentRegistry {
    type Item = &'a AgentProfile;
    type IntoIter = std::slice::Iter<'a, AgentProfile>;

    fn into_iter(self) -> Self::IntoIter {
        self.agents.iter()
    }
}

fn validate(position: usize, agent: &AgentProfile) -> Result<(), HaloError> {
    if agent.id.as_str().trim().is_empty() {
        return Err(HaloError::EmptyAgentId { position });
    }
    if agent.description.trim().is_empty() {
        return Err(HaloError::EmptyDescription {
            id: agent.id.to_string(),
        });
    }
    if !(0.0..=1.0).contains(&agent.success_rate) {
        return Err(HaloError::InvalidSuccessRate {
            id: agent.id.to_string(),
            value: agent.success_rate,
        });
    }
    if agent.max_concurrent_tasks == 0 {
        return Err(HaloError::ZeroCapacity {
            id: agent.id.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
[[agent]]
id = "a"
description = "does a"
task_kinds = ["test"]

[[agent]]
id = "b"
desc = "does b"
cost_tier = "high"
success_rate = 0.5
max_concurrent_tasks = 2
"#;

    #[test]
    fn toml_round_trips_with_learned_state() {
        let reg = AgentRegistry::from_toml_str(TWO).unwrap();
        assert_eq!(reg.len(), 2);
        assert_eq!(reg.get("b").unwrap().cost_tier, CostTier::High);
        let mut profiles = reg.into_profiles();
        profiles[0].outcomes.successes = 3;
        profiles[0].examples.push("learned".into());
        let reg = AgentRegistry::new(profiles).unwrap();
        let text = reg.to_toml_string().unwrap();
        let back = AgentRegistry::from_toml_str(&text).unwrap();
        assert_eq!(back, reg);
        assert_eq!(back.get("a").unwrap().outcomes.successes, 3);
    }

    #[test]
    fn json_accepts_list_and_wrapped() {
        let a = AgentRegistry::from_json_str(r#"[{"id":"a","desc":"x"}]"#).unwrap();
        let b = AgentRegistry::from_json_str(r#"{"agents":[{"id":"a","desc":"x"}]}"#).unwrap();
        assert_eq!(a, b);
        let back = AgentRegistry::from_json_str(&a.to_json_string().unwrap()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn validation_errors_name_the_agent() {
        let dup = "[[agent]]\nid='a'\ndescription='x'\n[[agent]]\nid='a'\ndescription='y'\n";
        let err = AgentRegistry::from_toml_str(dup).unwrap_err();
        assert_eq!(err.to_string(), "duplicate agent id \"a\"");
        let empty = "[[agent]]\nid='a'\ndescription='  '\n";
        assert!(matches!(
            AgentRegistry::from_toml_str(empty),
            Err(HaloError::EmptyDescription { id }) if id == "a"
        ));
        assert!(matches!(
            AgentRegistry::from_toml_str(""),
            Err(HaloError::EmptyCatalogue)
        ));
        let rate = "[[agent]]\nid='a'\ndescription='x'\nsuccess_rate=1.5\n";
        assert_eq!(
            AgentRegistry::from_toml_str(rate).unwrap_err().to_string(),
            "agent \"a\" success_rate 1.5 is outside [0, 1]"
        );
        let cap = "[[agent]]\nid='a'\ndescription='x'\nmax_concurrent_tasks=0\n";
        assert!(matches!(
            AgentRegistry::from_toml_str(cap),
            Err(HaloError::ZeroCapacity { .. })
        ));
        let typo = "[[agent]]\nid='a'\ndescription='x'\nskils=['y']\n";
        assert!(matches!(
            AgentRegistry::from_toml_str(typo),
            Err(HaloError::AgentsToml { .. })
        ));
    }

    #[test]
    fn jsonl_skips_or_fails_on_bad_lines() {
        let text = "{\"id\":\"a\",\"desc\":\"x\",\"domain\":[\"Travel\"],\"extra\":1}\nnot json\n\n{\"id\":\"b\",\"desc\":\"\"}\n{\"id\":\"c\",\"desc\":\"z\",\"domain\":\"Food\"}\n";
        let (reg, skipped) = AgentRegistry::from_jsonl_str(text, JsonlMode::Skip).unwrap();
        assert_eq!(reg.len(), 2);
        assert_eq!(reg.get("a").unwrap().skills, vec!["Travel".to_string()]);
        assert_eq!(reg.get("c").unwrap().skills, vec!["Food".to_string()]);
        assert_eq!(skipped.len(), 2);
        assert_eq!(skipped[0].line, 2);
        assert_eq!(skipped[1].line, 4);
        match AgentRegistry::from_jsonl_str(text, JsonlMode::Fail) {
            Err(HaloError::JsonlLine { line, .. }) => assert_eq!(line, 2),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            AgentRegistry::from_jsonl_str("bad\n", JsonlMode::Skip),
            Err(HaloError::EmptyCatalogue)
        ));
    }
}
