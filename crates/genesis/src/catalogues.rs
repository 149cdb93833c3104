//! Reading the catalogue files a configuration names (the facade is where file IO lives).

use std::path::Path;

use genesis_daao::ModelCatalog;
use genesis_halo::{AgentRegistry, JsonlMode, RoutingRules};

use crate::{GenesisConfig, GenesisError, OrchestratorBuilder};

fn read(path: &Path) -> Result<String, GenesisError> {
    std::fs::read_to_string(path).map_err(|source| GenesisError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Parses an agent catalogue by file extension: `.toml`, `.json`, or `.jsonl` (one
/// agent per line; malformed lines fail the load, naming the line).
///
/// # Errors
/// Unreadable file or invalid catalogue.
pub fn read_agents(path: &Path) -> Result<AgentRegistry, GenesisError> {
    let text = read(path)?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let registry = match ext.as_str() {
        "json" => AgentRegistry::from_json_str(&text)?,
        "jsonl" | "ndjson" => AgentRegistry::from_jsonl_str(&text, JsonlMode::Fail)?.0,
        _ => AgentRegistry::from_toml_str(&text)?,
    };
    Ok(registry)
}

/// Applies the catalogue files named in `config` (agents, rules, models) to a builder.
/// Sections without a file keep the built-in defaults.
///
/// The model catalogue is applied whole: with LLM providers, pass the builder the models
/// they serve instead ([`crate::providers::LlmProviders::served_catalog`], as
/// [`crate::orchestrator_from_config`] does), or tasks may be planned on a model no
/// provider serves (their LLM agent then refuses them).
///
/// # Errors
/// Unreadable or invalid files, naming the file.
pub fn load_catalogues(
    builder: OrchestratorBuilder,
    config: &GenesisConfig,
) -> Result<OrchestratorBuilder, GenesisError> {
    let mut builder = load_routing_catalogues(builder, config)?;
    if config.models.catalog_file.is_some() {
        builder = builder.models(read_models(config)?);
    }
    Ok(builder)
}

/// Applies the agent catalogue and routing rules named in `config` to a builder.
/// `rules_file = ""` routes with no rules. Rules naming an agent the catalogue lacks are
/// refused here, naming both files (audit G10 M1: the error named neither).
pub(crate) fn load_routing_catalogues(
    mut builder: OrchestratorBuilder,
    config: &GenesisConfig,
) -> Result<OrchestratorBuilder, GenesisError> {
    let registry = match &config.routing.agents_file {
        Some(path) => Some(read_agents(path)?),
        None => None,
    };
    match &config.routing.rules_file {
        Some(path) if path.as_os_str().is_empty() => builder = builder.rules(RoutingRules::empty()),
        Some(path) => {
            let file = |e: &dyn std::fmt::Display| GenesisError::Config {
                message: format!("routing.rules_file {}: {e}", path.display()),
            };
            let rules = RoutingRules::from_toml_str(&read(path)?).map_err(|e| file(&e))?;
            let checked = match &registry {
                Some(r) => rules.validate(r),
                None => {
                    rules.validate(&AgentRegistry::from_toml_str(crate::defaults::AGENTS_TOML)?)
                }
            };
            checked.map_err(|e| {
                let agents = config.routing.agents_file.as_ref().map_or_else(
                    || "the built-in catalogue".to_owned(),
                    |a| format!("routing.agents_file {}", a.display()),
                );
                file(&format_args!(
                    "{e}: rules must name agents of {agents} (rule: rules_agents); with a \
                     catalogue of your own, point rules_file at rules for it, or set \
                     rules_file = \"\" to route without rules"
                ))
            })?;
            builder = builder.rules(rules);
        }
        None => {}
    }
    if let Some(registry) = registry {
        builder = builder.registry(registry);
    }
    Ok(builder)
}

/// The model catalogue named in `config`, or the built-in one.
pub(crate) fn read_models(config: &GenesisConfig) -> Result<ModelCatalog, GenesisError> {
    Ok(match &config.models.catalog_file {
        Some(path) => ModelCatalog::from_toml_str(&read(path)?)?,
        None => ModelCatalog::from_toml_str(crate::defaults::MODELS_TOML)?,
    })
}
