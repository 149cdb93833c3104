//! Reading the catalogue files a configuration names (the facade is where file IO lives).

use std::path::Path;

use genesis_daao::ModelCatalog;
use genesis_halo::{AgentRegistry, JsonlMode, LineError, RoutingRules};

use crate::{GenesisConfig, GenesisError, OrchestratorBuilder};

/// Reads a text file; a file that is not UTF-8 is refused naming the line and byte
/// offset of the first bad byte (audit H11 L5).
fn read(path: &Path) -> Result<String, GenesisError> {
    let io = |source| GenesisError::Io {
        path: path.display().to_string(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not valid UTF-8 at line {line} (byte offset {offset})"),
        ))
    })
}

/// Parses an agent catalogue by file extension: `.toml`, `.json`, or `.jsonl` (one
/// agent per line); a bad agent fails the load, naming the line.
///
/// # Errors
/// Unreadable file or invalid catalogue.
pub fn read_agents(path: &Path) -> Result<AgentRegistry, GenesisError> {
    Ok(read_agents_with(path, JsonlMode::Fail)?.0)
}

/// [`read_agents`] with a choice for bad agents (a JSONL line, JSON array element or
/// `[[agent]]` table that does not read as an agent or fails validation): in
/// [`JsonlMode::Skip`] they are left out and returned with their line and the reason
/// (the caller warns); a file that is not TOML or JSON at all, a repeated id or a
/// catalogue left with no agent still fail.
///
/// # Errors
/// Unreadable file or invalid catalogue.
pub fn read_agents_with(
    path: &Path,
    mode: JsonlMode,
) -> Result<(AgentRegistry, Vec<LineError>), GenesisError> {
    let text = read(path)?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let parse = |mode| match ext.as_str() {
        "json" => AgentRegistry::from_json_str_with(&text, mode),
        "jsonl" | "ndjson" => AgentRegistry::from_jsonl_str(&text, mode),
        _ => AgentRegistry::from_toml_str_with(&text, mode),
    };
    match parse(mode) {
        // Every agent skipped: the empty catalogue is the error, and the first bad agent
        // (read again, failing on it) is why (verification V11 M-1).
        Err(genesis_halo::HaloError::EmptyCatalogue) if mode == JsonlMode::Skip => {
            match parse(JsonlMode::Fail) {
                Err(first) if !matches!(first, genesis_halo::HaloError::EmptyCatalogue) => {
                    Err(GenesisError::Config {
                        message: format!(
                            "agent catalogue is empty: every agent was skipped; the first: {}",
                            genesis_core::error_chain(&first)
                        ),
                    })
                }
                _ => Err(genesis_halo::HaloError::EmptyCatalogue.into()),
            }
        }
        other => Ok(other?),
    }
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
        Some(path) => {
            // The file is named: a server's start-up error must say which file to fix
            // (verification V11 M-5).
            let (registry, skipped) =
                read_agents_with(path, config.routing.catalogue_errors.into()).map_err(|e| {
                    GenesisError::Config {
                        message: format!(
                            "routing.agents_file {}: {}",
                            path.display(),
                            genesis_core::error_chain(&e)
                        ),
                    }
                })?;
            for s in &skipped {
                tracing::warn!(
                    file = %path.display(),
                    line = s.line,
                    reason = %s.message,
                    "agent skipped: routing.catalogue_errors = \"skip\""
                );
            }
            Some(registry)
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    const BAD: &str = "{\"id\": \"a\", \"desc\": \"books flights\"}\n\
                       {\"id\": \"b\", \"desc\": \"\"}\n\
                       {\"id\": \"c\", \"desc\": \"weather\"}\n";

    fn config(dir: &Path, agents: &str, mode: Option<&str>) -> GenesisConfig {
        let mut text = format!(
            "[routing]\nagents_file = {:?}\nrules_file = \"\"\n",
            dir.join(agents).display().to_string()
        );
        if let Some(mode) = mode {
            text.push_str(&format!("catalogue_errors = \"{mode}\"\n"));
        }
        let file = dir.join("genesis.toml");
        std::fs::write(&file, text).unwrap();
        GenesisConfig::load(&[file], std::iter::empty()).unwrap()
    }

    /// Audit H11 M4: `routing.catalogue_errors = "skip"` loads the good agents of a
    /// catalogue with a bad one (the server and the CLI read it through here); the
    /// default, "fail", refuses the file naming the line.
    #[test]
    fn catalogue_errors_skip_or_fail_bad_agents() {
        let dir = TempDir::new("catalogue-errors");
        std::fs::write(dir.join("agents.jsonl"), BAD).unwrap();
        let default = config(&dir, "agents.jsonl", None);
        assert_eq!(
            default.routing.catalogue_errors,
            crate::config::CatalogueErrors::Fail
        );
        let e = load_catalogues(crate::Orchestrator::builder(), &default).unwrap_err();
        let text = genesis_core::error_chain(&e);
        assert!(
            text.contains("line 2") && text.contains("empty description"),
            "{text}"
        );
        // The file is named (verification V11 M-5).
        assert!(
            text.contains("routing.agents_file") && text.contains("agents.jsonl"),
            "{text}"
        );

        let skip = config(&dir, "agents.jsonl", Some("skip"));
        let orchestrator = load_catalogues(crate::Orchestrator::builder(), &skip)
            .unwrap()
            .build()
            .unwrap();
        let ids: Vec<String> = orchestrator
            .router()
            .registry()
            .iter()
            .map(|a| a.id.to_string())
            .collect();
        assert_eq!(ids, ["a", "c"]);
        let (registry, skipped) =
            read_agents_with(&dir.join("agents.jsonl"), JsonlMode::Skip).unwrap();
        assert_eq!(registry.len(), 2);
        assert_eq!(skipped.iter().map(|s| s.line).collect::<Vec<_>>(), [2]);
    }

    /// Audit H11 L5: a catalogue that is not UTF-8 names the line and byte offset.
    #[test]
    fn invalid_utf8_names_the_line() {
        let dir = TempDir::new("catalogue-utf8");
        let path = dir.join("agents.jsonl");
        std::fs::write(
            &path,
            b"{\"id\": \"a\", \"desc\": \"x\"}\n{\"id\": \"b\", \"desc\": \"caf\xe9\"}\n",
        )
        .unwrap();
        let e = read_agents(&path).unwrap_err();
        let text = genesis_core::error_chain(&e);
        assert!(
            text.contains("not valid UTF-8 at line 2 (byte offset 49)"),
            "{text}"
        );
    }
}
