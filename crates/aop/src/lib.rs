//! AOP: checks a plan before anything runs.
//!
//! Mental model: a plan is a [`TaskDag`](genesis_htdag::TaskDag) plus an [`Assignment`] per task (agent, how
//! well it matches, estimated cost). The [`Validator`] — built with the *same*
//! [`AgentRegistry`](genesis_halo::AgentRegistry) the router used — runs five checks and returns a
//! [`ValidationReport`] with every error and every warning, whether or not the plan
//! passed, and a quality score:
//!
//! `score = 0.4·success + 0.3·match + 0.2·(1 − cost) + 0.1·(1 − depth)`
//!
//! where `success` is the mean success rate of the assigned agents (unassigned tasks
//! count 0), `match` the mean routing match score, `cost` the estimated cost as a
//! fraction of the run budget (or of `cost_reference` without one), and `depth` the
//! hierarchy depth as a fraction of the depth limit.
//!
//! | check | fails (error) when | warns when |
//! |---|---|---|
//! | structure | empty, cyclic, over depth or task limits | — |
//! | solvable | a task has no agent, an unknown agent, or a match score outside `[0, 1]` | agent does not list the task's kind or skills; more tasks than the agent's concurrency |
//! | complete | a task has an empty description | the tasks mention under half of the request's key words |
//! | non_redundant | two tasks of one kind under one parent are identical | two tasks are near-duplicates |
//! | within_budget | estimated cost exceeds the run budget | estimated cost above 80% of it |
//!
//! A [`ValidatorConfig`] ratio that is NaN or outside `[0, 1]` fails every plan with an
//! error under `config.<setting>`.
//!
//! ```
//! use genesis_aop::{Assignment, Validator, ValidatorConfig};
//! use genesis_core::{AgentId, TaskId, Usd};
//! use genesis_halo::{AgentProfile, AgentRegistry};
//! use genesis_htdag::{HeuristicDecomposer, Limits};
//! use genesis_core::TaskKind;
//!
//! let registry = AgentRegistry::new(vec![AgentProfile::new("writer", "Writes documents")
//!     .with_kind(TaskKind::Document)])
//!     .unwrap();
//! let dag = HeuristicDecomposer::new()
//!     .decompose_sync("Write a haiku about autumn", &Limits::default())
//!     .unwrap();
//! let assignments = vec![Assignment {
//!     task: TaskId::new("t1"),
//!     agent: Some(AgentId::new("writer")),
//!     match_score: 0.9,
//!     estimated_cost: Usd::new(0.001).unwrap(),
//! }];
//! let report = Validator::new(&registry, ValidatorConfig::default())
//!     .validate("Write a haiku about autumn", &dag, &assignments);
//! assert!(report.passed, "{:?}", report.errors);
//! assert!(report.score > 0.5);
//! ```

mod validate;

pub use validate::{
    Assignment, Checks, Finding, MAX_SIMILARITY_WORK, MAX_WARNINGS_PER_RULE, QualityMetrics,
    ValidationReport, Validator, ValidatorConfig,
};
