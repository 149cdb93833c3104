//! Building an orchestrator from configuration: catalogues, flags, LLM providers and
//! agent backends. This is where the facade reads files and the environment it is given.

use std::collections::HashMap;
use std::sync::Arc;

use genesis_core::AgentId;
use genesis_feature_flags::{FlagStore, SharedFlags};
use genesis_htdag::LlmDecomposer;
use genesis_security::Checkpoint;

use crate::config::{BackendConfig, DecomposerKind};
use crate::providers::{LlmAgent, LlmPlanner, LlmProviders};
use crate::run::AgentSet;
use crate::run::backends::{CommandAgent, HttpAgents, require_http};
use crate::{GenesisConfig, GenesisError, Orchestrator};

/// Loads the flag definitions named in `config` (the built-in defaults while the file
/// does not exist: a hot-reloading server loads it once it appears) and applies per-flag environment overrides from `env`
/// (`EMERGENCY_SHUTDOWN=true`, `ORCHESTRATION_ENABLED=false`).
///
/// # Errors
/// An unreadable or invalid flags file, or an invalid override value (naming the
/// variable and the value).
pub fn load_flags(
    config: &GenesisConfig,
    env: &[(String, String)],
) -> Result<SharedFlags, GenesisError> {
    let path = &config.flags.file;
    // Without the file, the built-in defaults, until it appears (hot reload picks it up).
    let shared = FlagStore::builtin_defaults()
        .and_then(|defaults| SharedFlags::load_or(path.clone(), defaults))
        .map_err(|e| GenesisError::Config {
            message: format!("feature flags: {e}"),
        })?;
    // Only variables named after a defined flag are overrides.
    let snapshot = shared.snapshot();
    let overrides: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| {
            snapshot.get(&k.to_ascii_lowercase()).is_some() && k.chars().all(|c| !c.is_lowercase())
        })
        .cloned()
        .collect();
    shared
        .apply_env_overrides(overrides)
        .map_err(|e| GenesisError::Config {
            message: format!("feature flag override: {e}"),
        })?;
    Ok(shared)
}

/// Builds the orchestrator a binary runs: configuration, catalogue files, flags, LLM
/// providers (decomposer and agents) and agent backends. With LLM providers configured,
/// model selection is restricted to the catalogue models they serve.
///
/// # Errors
/// Any invalid part, naming it.
pub fn orchestrator_from_config(
    config: &GenesisConfig,
    env: &[(String, String)],
) -> Result<Orchestrator, GenesisError> {
    let mut builder = crate::catalogues::load_routing_catalogues(
        Orchestrator::builder().config(config)?,
        config,
    )?;
    let flags = load_flags(config, env)?;
    builder = builder.flags(flags.clone());
    // A provider that will be called (LLM agents, or the LLM planner) at its kind's own
    // API without a key would plan, then fail every call: refused here, naming the key.
    if config.llm.agents || config.planning.decomposer == DecomposerKind::Llm {
        crate::providers::check_api_keys(&config.llm)?;
    }
    let catalog = crate::catalogues::read_models(config)?;
    let providers =
        LlmProviders::from_config(&config.llm, &catalog, config.executor.breaker.clone())?;
    // With LLM agents, DAAO chooses only among the models the providers serve, so a
    // task's planned model and cost estimate are the ones it runs with. Without them
    // (no provider, or providers for LLM planning only: tasks run on HTTP or command
    // agents), plans show the choice over the whole catalogue as an estimate.
    builder = builder.models(if providers.is_empty() || !config.llm.agents {
        catalog
    } else {
        providers.served_catalog(&catalog)?
    });
    let mut agents = AgentSet::new();
    if !providers.is_empty() {
        if config.planning.decomposer == DecomposerKind::Llm
            && let Some(planner) = LlmPlanner::new(providers.clone())
        {
            let guard = builder.current_guard();
            let screen: genesis_htdag::Screen = Arc::new(move |text: &str| {
                guard
                    .screen(Checkpoint::Decomposition, text)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
            builder = builder.decomposer(Arc::new(LlmDecomposer::new(planner).with_screen(screen)));
        }
        if config.llm.agents {
            let prompts: HashMap<AgentId, String> = config
                .llm
                .role_prompts
                .iter()
                .map(|(k, v)| (AgentId::new(k), v.clone()))
                .collect();
            // The kill switch holds for runs already under way: checked at every call.
            let flags = flags.clone();
            let gate: crate::providers::LlmGate = Arc::new(move |request| {
                let eval = flags.evaluate(
                    "llm_integration_enabled",
                    &request.subject,
                    std::time::SystemTime::now(),
                );
                if eval.reason == genesis_feature_flags::Reason::UnknownFlag || eval.enabled {
                    Ok(())
                } else {
                    Err("feature flag llm_integration_enabled is off".to_owned())
                }
            });
            agents = agents.with_fallback(Arc::new(
                LlmAgent::new(providers.clone(), prompts).with_gate(gate),
            ));
        }
    }
    if !config.backends.is_empty() {
        let mut http_agents = HttpAgents::new();
        for (id, backend) in &config.backends {
            if let BackendConfig::Http(_) = backend {
                require_http(id, cfg!(feature = "http"))?;
            }
            let limits = match backend {
                BackendConfig::Http(c) => c.validate(),
                BackendConfig::Command(c) => c.validate(),
            };
            limits.map_err(|e| GenesisError::Config {
                message: format!("backends.{id}: {e}"),
            })?;
            let agent: Arc<dyn crate::run::Agent> = match backend {
                BackendConfig::Http(c) => http_agents.agent(id, c)?,
                BackendConfig::Command(c) => {
                    Arc::new(CommandAgent::new(id.as_str(), c.clone()).map_err(|e| {
                        GenesisError::Config {
                            message: format!("backends.{id}: {e}"),
                        }
                    })?)
                }
            };
            agents = agents.with(id.as_str(), agent);
        }
    }
    builder = builder
        .agents(agents)
        .executor_config(config.executor.clone());
    if !providers.is_empty() {
        builder = builder.llm(providers);
    }
    let orchestrator = builder.build()?;
    check_backend_ids(config, &orchestrator.router().registry())?;
    Ok(orchestrator)
}

/// Most catalogue ids an unknown backend's error lists.
const MAX_IDS_LISTED: usize = 10;

/// Refuses a `[backends.<id>]` whose id is no agent of the catalogue: no task is ever
/// routed to it, so it is a typo or a stale entry (audit G10 M3: `[backends.coderr]`
/// started cleanly, and the mistake showed only as the first run's `agent_backend`).
/// The error names the key and the id and lists up to ten of the catalogue's ids.
fn check_backend_ids(
    config: &GenesisConfig,
    registry: &genesis_halo::AgentRegistry,
) -> Result<(), GenesisError> {
    let Some(id) = config
        .backends
        .keys()
        .find(|id| registry.get(id.as_str()).is_none())
    else {
        return Ok(());
    };
    let mut ids: Vec<&str> = registry.iter().map(|a| a.id.as_str()).collect();
    ids.sort_unstable();
    let more = ids.len().saturating_sub(MAX_IDS_LISTED);
    ids.truncate(MAX_IDS_LISTED);
    let listed = ids
        .iter()
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    let catalogue = config.routing.agents_file.as_ref().map_or_else(
        || "the built-in catalogue".to_owned(),
        |p| format!("routing.agents_file {}", p.display()),
    );
    Err(GenesisError::Config {
        message: format!(
            "backends.{id}: {id:?} is not an agent of {catalogue}, so no task would ever reach it; its agents are {listed}{more} (rule: backend_agent)"
        ),
    })
}

/// A flag's effective rollout percentage at `now`: 100 for `all`, 0 for `off` or a
/// disabled flag, the strategy's percentage otherwise (what `genesis_rollout_percent`
/// exports).
pub fn effective_percent(
    flag: &genesis_feature_flags::Flag,
    now: genesis_feature_flags::Timestamp,
) -> f64 {
    if !flag.enabled {
        return 0.0;
    }
    match &flag.strategy {
        genesis_feature_flags::Strategy::All => 100.0,
        genesis_feature_flags::Strategy::Off => 0.0,
        s => s
            .percent_at(now)
            .map_or(0.0, genesis_feature_flags::Percent::as_f64),
    }
}

/// Every flag's name and effective percentage, by name.
fn flag_percents(flags: &SharedFlags) -> Vec<(String, f64)> {
    let now = genesis_feature_flags::Timestamp::from(std::time::SystemTime::now());
    let mut out: Vec<(String, f64)> = flags
        .snapshot()
        .flags()
        .map(|f| (f.name.clone(), effective_percent(f, now)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// One flag whose effective percentage a reload changed: `None` for a flag the file did
/// not have before, or no longer has.
#[derive(Debug, Clone, PartialEq)]
struct FlagChange {
    flag: String,
    from: Option<f64>,
    to: Option<f64>,
}

/// The flags whose effective percentage differs between `before` and `after` (both
/// sorted by name), by name.
fn flag_changes(before: &[(String, f64)], after: &[(String, f64)]) -> Vec<FlagChange> {
    let mut names: Vec<&str> = before
        .iter()
        .chain(after)
        .map(|(n, _)| n.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let find = |list: &[(String, f64)], name: &str| {
        list.binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| list[i].1)
    };
    names
        .into_iter()
        .filter_map(|name| {
            let (from, to) = (find(before, name), find(after, name));
            (from != to).then(|| FlagChange {
                flag: name.to_owned(),
                from,
                to,
            })
        })
        .collect()
}

/// Logs each change a flags reload made: which flag, whether it is a kill or master
/// switch ([`genesis_feature_flags::KILL_SWITCHES`]), its effective percentage before
/// and after (100 = on for everyone; absent = not in the file). A kill or master switch
/// changing is logged at `warn` (it stops or restarts work for everyone: an operator
/// watching for warnings must see it), any other flag at `info`.
fn log_flag_changes(changes: &[FlagChange]) {
    for c in changes {
        let kill_switch = genesis_feature_flags::KILL_SWITCHES.contains(&c.flag.as_str());
        if kill_switch {
            tracing::warn!(
                flag = %c.flag,
                kill_switch,
                from_percent = c.from,
                to_percent = c.to,
                "kill switch changed"
            );
        } else {
            tracing::info!(
                flag = %c.flag,
                kill_switch,
                from_percent = c.from,
                to_percent = c.to,
                "feature flag changed"
            );
        }
    }
}

/// The gauge values a reload leaves: every flag's percentage now, and 0 for each flag
/// the file no longer has (it reaches nobody; its gauge would otherwise stay at its last
/// value, since a series cannot be withdrawn from the exporter).
fn gauge_values(changes: &[FlagChange], after: &[(String, f64)]) -> Vec<(String, f64)> {
    let mut values = after.to_vec();
    values.extend(
        changes
            .iter()
            .filter(|c| c.to.is_none())
            .map(|c| (c.flag.clone(), 0.0)),
    );
    values
}

/// Exports every flag's rollout percentage as the `genesis_rollout_percent{flag}` gauge
/// (100 for `all`, 0 for `off` or disabled flags).
pub fn record_rollout_gauges(flags: &SharedFlags) {
    set_rollout_gauges(&flag_percents(flags));
}

/// Sets `genesis_rollout_percent{flag}` from already computed percentages.
fn set_rollout_gauges(percents: &[(String, f64)]) {
    for (flag, percent) in percents {
        metrics::gauge!(
            genesis_telemetry::catalogue::ROLLOUT_PERCENT,
            genesis_telemetry::catalogue::labels::FLAG => flag.clone()
        )
        .set(*percent);
    }
}

/// Reloads the flags file every `interval` when it changed (a bad file keeps the old
/// flags and is logged), and refreshes the rollout gauges. The file is read on tokio's
/// blocking pool, never on an async worker. Runs until the runtime stops.
/// `interval` zero disables reloading.
pub fn spawn_flag_reloader(
    flags: SharedFlags,
    interval: std::time::Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    record_rollout_gauges(&flags);
    if interval.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let before = flag_percents(&flags);
            // Reading and hashing the file blocks: off the async workers.
            let reload = flags.clone();
            match tokio::task::spawn_blocking(move || reload.reload_if_changed()).await {
                Ok(Ok(genesis_feature_flags::ReloadOutcome::Reloaded { .. })) => {
                    tracing::info!("feature flags reloaded");
                    let after = flag_percents(&flags);
                    let changes = flag_changes(&before, &after);
                    log_flag_changes(&changes);
                    set_rollout_gauges(&gauge_values(&changes, &after));
                }
                Ok(Ok(_)) => record_rollout_gauges(&flags),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "feature flags file is invalid; keeping the previous flags")
                }
                Err(e) => {
                    tracing::error!(error = %e, "feature flags reload task failed; keeping the previous flags")
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::TempDir;

    /// Audit D5 finding 7: a kill switch pulled through the flags file, or a rollout
    /// step, left only "feature flags reloaded" in the log. A reload now names every
    /// flag whose effective percentage changed, from what to what.
    #[test]
    fn a_reload_names_each_flag_it_changed_from_what_to_what() {
        let dir = TempDir::new("flag-changes");
        let path = dir.join("flags.json");
        std::fs::write(
            &path,
            r#"{"flags": [
                {"name": "emergency_shutdown", "enabled": false},
                {"name": "new_router_rollout", "enabled": true, "strategy": {"type": "percentage", "percent": 5.0}},
                {"name": "steady", "enabled": true}
            ]}"#,
        )
        .unwrap();
        let flags = SharedFlags::load(path.clone()).unwrap();
        let before = flag_percents(&flags);
        assert_eq!(
            before,
            [
                ("emergency_shutdown".to_owned(), 0.0),
                ("new_router_rollout".to_owned(), 5.0),
                ("steady".to_owned(), 100.0)
            ]
        );
        std::fs::write(
            &path,
            r#"{"flags": [
                {"name": "emergency_shutdown", "enabled": true},
                {"name": "new_router_rollout", "enabled": true, "strategy": {"type": "percentage", "percent": 10.0}},
                {"name": "steady", "enabled": true},
                {"name": "added", "enabled": false}
            ]}"#,
        )
        .unwrap();
        assert!(matches!(
            flags.reload_if_changed().unwrap(),
            genesis_feature_flags::ReloadOutcome::Reloaded { .. }
        ));
        let changes = flag_changes(&before, &flag_percents(&flags));
        let change = |flag: &str, from, to| FlagChange {
            flag: flag.to_owned(),
            from,
            to,
        };
        assert_eq!(
            changes,
            [
                change("added", None, Some(0.0)),
                change("emergency_shutdown", Some(0.0), Some(100.0)),
                change("new_router_rollout", Some(5.0), Some(10.0)),
            ],
            "the unchanged flag is not listed"
        );
        let now = flag_percents(&flags);
        assert_eq!(flag_changes(&now, &now), [], "no change, no line");
        // Audit R7 item 9: a flag taken out of the file kept its last gauge value.
        std::fs::write(
            &path,
            r#"{"flags": [
                {"name": "emergency_shutdown", "enabled": true},
                {"name": "steady", "enabled": true},
                {"name": "added", "enabled": false}
            ]}"#,
        )
        .unwrap();
        assert!(matches!(
            flags.reload_if_changed().unwrap(),
            genesis_feature_flags::ReloadOutcome::Reloaded { .. }
        ));
        let after = flag_percents(&flags);
        let changes = flag_changes(&now, &after);
        assert_eq!(changes, [change("new_router_rollout", Some(10.0), None)]);
        let gauges = gauge_values(&changes, &after);
        assert!(
            gauges.contains(&("new_router_rollout".to_owned(), 0.0)),
            "a removed flag's gauge goes to 0: {gauges:?}"
        );
        assert!(gauges.contains(&("steady".to_owned(), 100.0)), "{gauges:?}");
    }
}
