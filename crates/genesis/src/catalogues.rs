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
pub(crate) fn load_routing_catalogues(
    mut builder: OrchestratorBuilder,
    config: &GenesisConfig,
) -> Result<OrchestratorBuilder, GenesisError> {
    if let Some(path) = &config.routing.agents_file {
        builder = builder.registry(read_agents(path)?);
    }
    if let Some(path) = &config.routing.rules_file {
        builder = builder.rules(RoutingRules::from_toml_str(&read(path)?)?);
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
