//! HALO routing: which agent takes each task, and why.
//!
//! Mental model: an [`AgentRegistry`] of [`AgentProfile`]s (loaded from TOML, JSON or
//! JSONL strings — this crate does no file IO), a set of [`RoutingRules`], and a
//! [`Router`] that sends each [`Task`](genesis_core::Task) through three layers, each
//! explained in the [`RouteDecision`]:
//!
//! 1. **rules** — explicit `[[rule]]`s, highest priority first, with conditions on kind,
//!    metadata and keywords, compiled once (bit masks + one Aho-Corasick automaton);
//! 2. **text** — the task description is matched against every agent's description,
//!    skills and example tasks: hashed word, bigram and word-prefix features (plus
//!    verb/object pairs in catalogues of more than 64 agents) with TF-IDF weights;
//!    each agent's model blends its description vector (a prior that lets agents
//!    without examples route), a BM25 match on its description (id words,
//!    description and skills, with term saturation and length normalisation; weighted
//!    up for agents without examples) and the centroid of its examples, plus a sparse
//!    discriminative correction (an averaged perceptron trained on the examples when the
//!    router is built; a softmax regression is available as [`Learner::Softmax`]), all
//!    scored through one inverted index (feature → agent postings, plus a dense per-agent
//!    weight row for every feature of small catalogues and for common features of
//!    mid-size ones), in one tokenising pass shared with the rules;
//! 3. **capability** — agents that list the task's kind. An agent listing `generic` is
//!    the fallback for generic tasks that no rule or text match takes: an explicit,
//!    opt-in catch-all (without one, such a task is unassigned). Kinds weigh (a bonus)
//!    and fall back; they do not restrict a text match to the agents listing the kind.
//!
//! A description with no words to match (empty, blank, only symbols, emoji or stop
//! words) is unassigned with that reason (rule `description_words`) unless a rule takes
//! it: it is never handed to the capability layer.
//!
//! Candidates are blended with success rate, cost tier and load ([`RouterConfig`]
//! documents the formula); [`Router::route_all`] treats its tasks as one plan: a
//! **plan-context** stage re-ranks each task's best candidates by their fit with the
//! agents the other tasks are likely to get (agents used together in recorded plans,
//! [`AgentProfile::plans`], else shared tags; [`PlanConfig`]), then per-plan capacity
//! (`max_concurrent_tasks`) applies and a full agent passes the task to the next
//! alternative.
//! A task nobody can take is *unassigned* with a reason, never forced onto a default;
//! capacity alone never leaves a task unassigned (the best candidate takes it and queues).
//! [`Router::record_outcome`] updates success rates and learns the task as a new example
//! ([`Router::record_outcomes`] with [`Outcome::plan`] also records the plan id)
//! (the centroids are refreshed at once; [`Router::retrain`] also retrains the
//! correction); [`AgentRegistry::to_toml_string`] persists the learned state. Rankings are cached by a
//! task signature and the cache is dropped whenever the registry or rules change
//! ([`Router::cache_stats`]).
//!
//! # Formats
//!
//! `config/agents.toml`: `[[agent]]` tables with `id`, `description` (or `desc`),
//! `task_kinds` (TaskKind names; empty = any kind), `skills`, `examples`, `plans`
//! (ids of plans the agent served; learned state), `cost_tier`
//! (`low` | `medium` | `high`), `success_rate` in `[0, 1]`, `max_concurrent_tasks` ≥ 1
//! (see [`AgentProfile`]). JSONL: one agent per line with at least `id` and `desc`;
//! `domain`/`tags` are read as skills and unknown fields ignored, except one that looks
//! like a misspelt catalogue field ([`AgentRegistry::from_jsonl_str`]). JSON: an array
//! of the same records as JSONL, or `{"agents": [...]}`
//! ([`AgentRegistry::from_json_str`]). A leading UTF-8 byte-order mark is skipped in
//! every format. Bad agents fail the load naming their line, or are skipped and
//! returned with it ([`JsonlMode`]; `from_toml_str_with`, `from_json_str_with`,
//! `from_jsonl_str`); a repeated id always fails, naming both.
//! `config/routing_rules.toml`: `[[rule]]` tables with `name`, `priority`, `agent`,
//! `kinds`, `metadata`, `keywords` (see [`RoutingRules`]).
//!
//! # Example
//!
//! ```
//! use genesis_core::{AgentId, Task, TaskId, TaskKind, Usd};
//! use genesis_halo::{AgentRegistry, RouteLayer, Router, RoutingRules};
//! use std::time::Duration;
//!
//! let registry = AgentRegistry::from_toml_str(r#"
//! [[agent]]
//! id = "marketing"
//! description = "Plans campaigns, writes copy and grows the audience"
//! task_kinds = ["marketing"]
//! skills = ["seo", "social media"]
//!
//! [[agent]]
//! id = "analytics"
//! description = "Analyses data, metrics and experiment results"
//! task_kinds = ["analyze"]
//! max_concurrent_tasks = 1
//! "#)?;
//! let rules = RoutingRules::from_toml_str(r#"
//! [[rule]]
//! name = "seo-to-marketing"
//! priority = 10
//! agent = "marketing"
//! keywords = ["seo"]
//! "#)?;
//! let router = Router::new(registry, rules)?;
//!
//! let task = Task::new(TaskId::new("t1"), TaskKind::Generic, "Launch a marketing campaign");
//! let d = router.route(&task);
//! assert_eq!(d.agent.as_ref().map(|a| a.as_str()), Some("marketing"));
//! assert_eq!(d.layer, RouteLayer::Text);
//!
//! let d = router.route(&Task::new(TaskId::new("t2"), TaskKind::Generic, "Improve SEO"));
//! assert_eq!(d.layer, RouteLayer::Rule);
//!
//! // Per-plan capacity is soft: analytics takes one task at a time; the second still
//! // goes to it (no other candidate) and the explanation says it will queue.
//! let plan = router.route_all(&[
//!     Task::new(TaskId::new("a"), TaskKind::Analyze, "analyse the results"),
//!     Task::new(TaskId::new("b"), TaskKind::Analyze, "analyse the metrics"),
//! ]);
//! assert_eq!(plan.unassigned_count(), 0);
//! assert!(plan.decisions[1].explanation.contains("will queue"));
//!
//! // Learning: outcomes update the success rate and are persisted with the registry.
//! router.record_outcome(&task, &AgentId::new("marketing"), true,
//!     Duration::from_millis(900), Usd::new(0.02)?)?;
//! let saved = router.registry().to_toml_string()?;
//! assert!(saved.contains("successes = 1"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod plan;
mod profile;
mod registry;
mod router;
mod rules;
mod text;

pub use error::{HaloError, LineError};
pub use plan::PlanConfig;
pub use profile::{AgentProfile, CostTier, OutcomeStats};
pub use registry::{AgentRegistry, JsonlMode};
pub use router::{
    Alternative, CacheStats, Outcome, RouteDecision, RouteLayer, Router, RouterConfig, RoutingPlan,
    UnassignedTask,
};
pub use rules::{RoutingRules, Rule};
pub use text::{Learner, TextConfig};

/// The longest agent description a catalogue may hold, in bytes (64 KiB; a long one is
/// a few hundred). A description of megabytes holds nearly every word, so the text
/// layer would send it most tasks (audit H11 M1); such an agent is refused, naming the
/// rule `description_bytes` (or skipped, in skip mode).
pub const MAX_DESCRIPTION_BYTES: usize = 64 * 1024;
