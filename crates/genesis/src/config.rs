//! Configuration: each crate owns its section; the facade composes them and loads them.
//!
//! Order (later wins): built-in defaults → `config/genesis.toml` → a file given with
//! `--config` → `GENESIS_*` environment variables. An environment variable names a key
//! path with `__` between levels: `GENESIS_SERVER__BIND=0.0.0.0:8000`,
//! `GENESIS_BUDGET__PER_RUN=2.5`, `GENESIS_SECURITY__DETECTOR__THRESHOLD=0.7`. Values
//! are read as TOML literals when they parse as one (numbers, booleans, arrays) and as
//! strings otherwise. Unknown keys are errors that name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::GenesisError;

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenesisConfig {
    /// HTTP server.
    pub server: ServerConfig,
    /// DAG and request limits.
    pub limits: genesis_htdag::Limits,
    /// Decomposition.
    pub planning: PlanningConfig,
    /// Agent catalogue, rules and router tuning.
    pub routing: RoutingConfig,
    /// Model catalogue and selection.
    pub models: ModelsConfig,
    /// Spending limits.
    pub budget: genesis_daao::Budget,
    /// Injection screening, input limits, agent auth, rate limits.
    pub security: genesis_security::SecurityConfig,
    /// Feature flags: definitions file, hot reload, rollout controller.
    pub flags: genesis_feature_flags::FlagsConfig,
    /// Logs, traces and metrics.
    pub telemetry: genesis_telemetry::TelemetryConfig,
    /// Task execution: concurrency, timeouts, retries, breakers, refinement.
    pub executor: crate::run::ExecutorConfig,
    /// LLM providers, the planning model, LLM agents.
    pub llm: crate::providers::LlmConfig,
    /// Agent backends by agent id (HTTP services and local commands).
    pub backends: std::collections::BTreeMap<String, BackendConfig>,
}

/// How one agent is reached.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BackendConfig {
    /// An HTTP service.
    Http(crate::run::backends::HttpAgentConfig),
    /// A local program.
    Command(crate::run::backends::CommandAgentConfig),
}

/// HTTP server settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:8000`).
    pub bind: SocketAddr,
    /// Directory for the embedded run store (default `data`).
    pub data_dir: PathBuf,
    /// Longest a request may take before a 503 (default 30 s).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight work (default 20 s).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// API keys accepted as `Authorization: Bearer <key>` or `x-api-key`. Empty: the API
    /// is open (development only; production refuses to start without keys).
    pub api_keys: Vec<genesis_core::Secret>,
    /// Requests handled at once before new ones are shed with 503 (default 1024).
    pub max_in_flight: usize,
    /// How long finished runs (with their tasks and events) are kept in the store
    /// (default 30 days); `0s` keeps them for ever. Runs still running are never
    /// deleted. At least one day, so a day's spend is never forgotten.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            data_dir: PathBuf::from("data"),
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
            api_keys: Vec::new(),
            max_in_flight: 1024,
            retention: Duration::from_secs(30 * 86_400),
        }
    }
}

/// Which decomposer plans requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecomposerKind {
    /// The built-in templates and clause splitting (no LLM).
    #[default]
    Heuristic,
    /// An LLM, falling back to the heuristic decomposer when it fails.
    Llm,
}

/// Decomposition settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanningConfig {
    /// Which decomposer to use.
    pub decomposer: DecomposerKind,
    /// Longest an LLM decomposition may take before the heuristic takes over.
    #[serde(with = "humantime_serde")]
    pub llm_timeout: Duration,
}

impl Default for PlanningConfig {
    fn default() -> Self {
        PlanningConfig {
            decomposer: DecomposerKind::Heuristic,
            llm_timeout: Duration::from_secs(30),
        }
    }
}

/// Routing settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Agent catalogue (TOML, JSON or JSONL by extension). `None`: the built-in 16 agents.
    pub agents_file: Option<PathBuf>,
    /// Routing rules (TOML). `None`: the built-in rules.
    pub rules_file: Option<PathBuf>,
    /// Router weights and cache.
    pub router: genesis_halo::RouterConfig,
    /// Most agents the catalogue may hold (`None`: no limit).
    pub max_agents: Option<usize>,
    /// Finished runs teach the router (default on): success rates, cost and latency
    /// means, examples and agents used together. The server keeps what was learned in
    /// its store and applies it on the next start.
    pub learn_from_runs: bool,
    /// Longest a finished run's outcomes wait to be applied, in one batch with other
    /// runs' (default 1 s).
    #[serde(with = "humantime_serde")]
    pub learn_interval: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            agents_file: None,
            rules_file: None,
            router: genesis_halo::RouterConfig::default(),
            max_agents: None,
            learn_from_runs: true,
            learn_interval: Duration::from_secs(1),
        }
    }
}

/// Model selection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Model catalogue (TOML). `None`: the built-in catalogue.
    pub catalog_file: Option<PathBuf>,
    /// Capability margin over a task's difficulty (default 0.05).
    pub margin: f64,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            catalog_file: None,
            margin: 0.05,
        }
    }
}

impl GenesisConfig {
    /// Loads configuration from `files` in order (each must exist), then applies
    /// `GENESIS_*` variables from `env`.
    ///
    /// # Errors
    /// [`GenesisError::Io`] for unreadable files; [`GenesisError::Config`] naming the
    /// file, key or variable for anything invalid.
    pub fn load<P: AsRef<Path>>(
        files: &[P],
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<GenesisConfig, GenesisError> {
        // The documented defaults file is the starting point, so a binary started outside
        // the checkout behaves exactly like one started inside it.
        let mut merged: toml::Table =
            toml::from_str(crate::defaults::GENESIS_TOML).map_err(|e| GenesisError::Config {
                message: format!("built-in config/genesis.toml: {e}"),
            })?;
        for path in files {
            let path = path.as_ref();
            let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Io {
                path: path.display().to_string(),
                source,
            })?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| GenesisError::Config {
                message: format!("{}: {e}", path.display()),
            })?;
            // Check each file on its own so errors point at the file that has them.
            toml::from_str::<GenesisConfig>(&text).map_err(|e| GenesisError::Config {
                message: format!("{}: {e}", path.display()),
            })?;
            merge(&mut merged, table);
        }
        let env_map: std::collections::HashMap<String, String> = env.into_iter().collect();
        let mut vars: Vec<(&String, &String)> = env_map.iter().collect();
        vars.sort();
        for (key, value) in vars {
            let Some(rest) = key.strip_prefix("GENESIS_") else {
                continue;
            };
            if rest.is_empty()
                || !rest.contains("__")
                    && !KNOWN_SECTIONS.contains(&rest.to_ascii_lowercase().as_str())
            {
                // Flag overrides such as GENESIS_ENV are not config keys.
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            set_path(&mut merged, &path, parse_env_value(value)).map_err(|message| {
                GenesisError::Config {
                    message: format!("environment variable {key}: {message}"),
                }
            })?;
        }
        let text = toml::to_string(&merged).map_err(|e| GenesisError::Config {
            message: e.to_string(),
        })?;
        let mut config =
            toml::from_str::<GenesisConfig>(&text).map_err(|e| GenesisError::Config {
                message: format!("after applying GENESIS_* variables: {e}"),
            })?;
        crate::providers::apply_key_env(&mut config.llm, &env_map);
        // Catalogue paths left at their shipped defaults fall back to the built-in copies
        // when the files are not there (a binary run outside the checkout); a path the
        // operator set that does not exist stays an error when it is read.
        for (path, default) in [
            (&mut config.routing.agents_file, "config/agents.toml"),
            (&mut config.routing.rules_file, "config/routing_rules.toml"),
            (&mut config.models.catalog_file, "config/models.toml"),
        ] {
            if path
                .as_deref()
                .is_some_and(|p| p == Path::new(default) && !p.exists())
            {
                *path = None;
            }
        }
        Ok(config)
    }
}

impl GenesisConfig {
    /// What the binaries load: `config/genesis.toml` (when it exists in the working
    /// directory), then `extra` (e.g. `--config config/production.toml`), then the
    /// `GENESIS_*` variables of `env`.
    ///
    /// # Errors
    /// As [`GenesisConfig::load`].
    pub fn load_layered(
        extra: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<GenesisConfig, GenesisError> {
        let base = Path::new("config/genesis.toml");
        let mut files: Vec<&Path> = Vec::new();
        if base.exists() {
            files.push(base);
        }
        files.extend(extra);
        GenesisConfig::load(&files, env)
    }
}

const KNOWN_SECTIONS: &[&str] = &[
    "server",
    "limits",
    "planning",
    "routing",
    "models",
    "budget",
    "security",
    "flags",
    "telemetry",
    "executor",
    "llm",
    "backends",
];

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("{p} is not a section")),
        };
    }
    cur.insert(last.clone(), value);
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("genesis-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn layers_merge_in_order() {
        let d = tempdir("layers");
        let base = write(
            &d,
            "base.toml",
            "[server]\nbind = \"127.0.0.1:8000\"\n[budget]\nper_run = 5.0\n",
        );
        let over = write(&d, "over.toml", "[budget]\nper_day = 50.0\n");
        let env = vec![
            ("GENESIS_SERVER__BIND".to_owned(), "0.0.0.0:9000".to_owned()),
            ("GENESIS_LIMITS__MAX_DEPTH".to_owned(), "4".to_owned()),
            ("GENESIS_ENV".to_owned(), "production".to_owned()),
            ("PATH".to_owned(), "/usr/bin".to_owned()),
        ];
        let c = GenesisConfig::load(&[base, over], env).unwrap();
        assert_eq!(c.server.bind.to_string(), "0.0.0.0:9000");
        assert_eq!(c.budget.per_run.unwrap().as_f64(), 5.0);
        assert_eq!(c.budget.per_day.unwrap().as_f64(), 50.0);
        assert_eq!(c.limits.max_depth, 4);
    }

    #[test]
    fn errors_name_the_key() {
        let d = tempdir("errors");
        let bad = write(&d, "bad.toml", "[server]\nbindd = \"x\"\n");
        let err = GenesisConfig::load(&[bad], Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bindd") && err.contains("bad.toml"), "{err}");
        let env = vec![("GENESIS_LIMITS__MAX_DEPTH".to_owned(), "deep".to_owned())];
        let err = GenesisConfig::load::<PathBuf>(&[], env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_depth"), "{err}");
        let missing = GenesisConfig::load(&[d.join("nope.toml")], Vec::new()).unwrap_err();
        assert!(matches!(missing, GenesisError::Io { .. }));
    }
}
