//! Genesis: a multi-agent LLM orchestration engine.
//!
//! Mental model: a request is screened ([`security`]), decomposed into a hierarchical
//! task DAG ([`htdag`]), every task is routed to an agent with an explanation
//! ([`halo`]), each LLM task gets the cheapest capable model ([`daao`]), and the plan is
//! validated ([`aop`]) before anything runs. The [`Orchestrator`] composes the crates;
//! they are re-exported here under short names, so one dependency gives you all of them.
//!
//! ```
//! use genesis::Orchestrator;
//!
//! let genesis = Orchestrator::builder().build()?;
//! let plan = genesis.plan_sync("Launch a marketing campaign for our new app and analyse the results")?;
//! let agents: Vec<&str> = plan.tasks.iter().filter_map(|t| t.agent.as_ref()).map(|a| a.as_str()).collect();
//! assert!(agents.contains(&"marketing") && agents.contains(&"analytics"));
//! println!("{}", plan.render_tree());
//! # Ok::<(), genesis::GenesisError>(())
//! ```
//!
//! # Features
//!
//! All on by default, so `genesis = { ... }` behaves as the server and the CLI do. Each
//! one is a part of the dependency tree an embedder may not need:
//!
//! | feature      | gives                                                        | pulls in |
//! |--------------|--------------------------------------------------------------|----------|
//! | `sqlite`     | `store::SqliteStore`, the embedded run store                 | rusqlite with bundled SQLite (a C build) |
//! | `http`       | `run::backends::HttpAgent` and the HTTP LLM providers (`[llm.providers]`, genesis-llm's `http`) | reqwest, rustls, ring |
//! | `otlp`       | OTLP trace export in `telemetry::init` / `telemetry::build_layers` | OpenTelemetry SDK, opentelemetry-otlp (prost), reqwest |
//! | `prometheus` | `telemetry::install_prometheus_recorder` and friends         | metrics-exporter-prometheus |
//!
//! A plan-only application (`Orchestrator::builder().build()?.plan_sync(..)`, custom
//! agents, no stored runs) needs none of them:
//! `genesis = { version = "0.1", default-features = false }`. Add `sqlite` to store runs
//! in `store::SqliteStore`, `http` for HTTP agents or LLM providers. Without `http`,
//! `[backends.<id>] type = "http"` and every `[[llm.providers]]` entry are refused by
//! [`orchestrator_from_config`] with an error naming the feature; without `otlp`, a
//! `[telemetry.otlp]` section is refused by `telemetry::init`. Nothing is silently
//! skipped. No feature installs a process-global rustls crypto provider: HTTP clients
//! get their `ring` configuration explicitly.

pub use genesis_aop as aop;
pub use genesis_core as core;
pub use genesis_daao as daao;
pub use genesis_feature_flags as flags;
pub use genesis_halo as halo;
pub use genesis_htdag as htdag;
pub use genesis_llm as llm;
/// The attribute for implementing [`run::Agent`] (and the other async traits) on your
/// own types: `#[genesis::async_trait]`.
pub use genesis_llm::async_trait;
pub use genesis_resilience as resilience;
pub use genesis_security as security;
pub use genesis_telemetry as telemetry;

mod catalogues;
mod cohort;
pub mod config;
pub mod defaults;
mod error;
pub mod learning;
mod orchestrator;
mod plan;
pub mod providers;
pub mod run;
pub mod store;
#[cfg(test)]
mod testing;
mod wiring;

pub use catalogues::{load_catalogues, read_agents, read_agents_with};
pub use cohort::{Cohort, CohortMetrics, Cohorts};
pub use config::{BackendConfig, GenesisConfig};
pub use error::GenesisError;
pub use orchestrator::{
    Orchestrator, OrchestratorBuilder, PlanOptions, RunOptions, Stages, new_run_id,
};
pub use plan::{Plan, PlanRouting, PlannedTask, PlanningSpend, TaskModel, TaskRoute};
pub use wiring::{
    effective_percent, load_flags, orchestrator_from_config, record_rollout_gauges,
    spawn_flag_reloader,
};
