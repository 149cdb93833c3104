//! Configuration: each crate owns its section; the facade composes them and loads them.
//!
//! Order (later wins): built-in defaults → `config/genesis.toml` → a file given with
//! `--config` → `GENESIS_*` environment variables. An environment variable names a key
//! path with `__` between levels: `GENESIS_SERVER__BIND=0.0.0.0:8000`,
//! `GENESIS_BUDGET__PER_RUN=2.5`, `GENESIS_SECURITY__DETECTOR__THRESHOLD=0.7`. Values
//! are read as TOML literals when they parse as one (numbers, booleans, arrays) and as
//! strings otherwise. Unknown keys are errors that name the key (and the variable that
//! set it); [`GenesisConfig::unknown_env_variables`] lists `GENESIS_*` variables that set
//! nothing, for the binaries to warn about. `[security.limits]` `max_request_chars`,
//! `max_dag_depth` and `max_tasks_per_dag` follow `[limits]` unless set, and a value
//! that differs is refused naming both keys (rule `limits_consistent`).

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
    /// How long shutdown waits for in-flight work (default 20 s), after
    /// `shutdown_delay`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// On SIGTERM or ctrl-c, how long the server keeps accepting connections while
    /// `/ready` answers 503 (and new runs are refused), so load balancers that poll
    /// `/ready` stop sending traffic before the listener closes (default 5 s; `0s`
    /// closes it at once). A second signal ends the delay early.
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// API keys accepted as `Authorization: Bearer <key>` or `x-api-key`. Empty, with
    /// `admin_api_keys` empty too: the API is open (development only; production refuses
    /// to start without keys).
    pub api_keys: Vec<genesis_core::Secret>,
    /// Operator (admin) API keys: sent and checked like `api_keys`, but their caller
    /// lists, reads, follows and cancels every client's runs; its own runs are journaled
    /// for `admin:` and a digest of the key. A key may not be in both lists. With either
    /// list non-empty the API requires credentials (default empty).
    pub admin_api_keys: Vec<genesis_core::Secret>,
    /// Lets the server start with an open API (no `api_keys` nor `admin_api_keys`) on a
    /// `bind` address that is not loopback, where anyone who can connect lists, reads and
    /// cancels every run (default `false`: refused at start, rule `open_api`).
    pub allow_open_api: bool,
    /// Requests handled at once before new ones are shed with 503 (default 1024).
    pub max_in_flight: usize,
    /// How long finished runs (with their tasks and events) are kept in the store
    /// (default 30 days); `0s` keeps them for ever. Runs still running are never
    /// deleted. At least one day, so a day's spend is never forgotten.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Longest a connection may take to send a request's headers, counted from when the
    /// server starts waiting for them: on a new connection, and on a kept-alive one
    /// between requests (so it is also the idle keep-alive timeout). Past it the
    /// connection is closed (default 10 s; must be above 0).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Connections open at once; one over it is answered 503 `max_connections` and
    /// closed (default 4096; at least 1). Lowered at start to what the process's
    /// open-file limit leaves room for, with a warning.
    pub max_connections: usize,
    /// Connections open at once from one client IP (the TCP peer; the addresses in
    /// `trusted_proxies` are not held to it); one over it is answered 503
    /// `max_connections_per_ip` and closed (default 256; at least 1).
    pub max_connections_per_ip: usize,
    /// Address of the operations listener (e.g. `0.0.0.0:9000`), serving only
    /// `GET /health`, `/ready` and `/metrics` without credentials, outside the main
    /// listener's connection caps (its own cap is 64 connections, with the same
    /// `header_timeout`), so probes and scrapes reach the server during a connection
    /// flood on `bind`. Empty (the default): no operations listener. Must differ from
    /// `bind`.
    pub ops_bind: String,
    /// Reverse proxies (IP addresses or CIDR blocks such as `10.0.0.0/8`) whose
    /// `X-Forwarded-For` (or `Forwarded`) header names the client. When the TCP peer is
    /// one of them, the client IP (for the per-IP rate limit and event-stream cap) is
    /// the right-most address in that header that is not itself a trusted proxy; any
    /// other peer is the client itself and its headers are ignored (default empty).
    pub trusted_proxies: Vec<String>,
    /// Event streams (`GET /api/tasks/{id}/events`) open at once; one over it is
    /// answered 503 `max_event_streams` with `Retry-After` (default 512; at least 1).
    pub max_event_streams: usize,
    /// Event streams open at once per client IP; one over it is answered 429
    /// `max_event_streams_per_ip` with `Retry-After` (default 32; at least 1).
    pub max_event_streams_per_ip: usize,
    /// Event streams open at once per caller subject (one API key, one agent, or
    /// `anonymous`), whatever IPs they come from; one over it is answered 429
    /// `max_event_streams_per_subject` with `Retry-After` (default 64; at least 1), so one
    /// tenant cannot take every stream.
    pub max_event_streams_per_subject: usize,
    /// Runs one caller subject (an API key, an agent; callers without credentials,
    /// `anonymous`, are counted per client IP) may have starting or in progress at once; one more is answered 429 `max_runs_per_subject` with
    /// `Retry-After` (a retry with the idempotency key of a run already accepted is
    /// still answered with that run). Resumed runs count but are never refused. Default
    /// 16 (a quarter of `max_runs`); at most `max_runs` (refused at start, rule
    /// `max_runs_per_subject_above_max_runs`); 0: no per-caller limit, so one caller may
    /// take every run slot.
    pub max_runs_per_subject: usize,
    /// Runs in progress on this server at once, whoever submitted them: accepted and
    /// not finished (resumed runs included). A new run over it is refused before
    /// anything is journaled, 503 `max_runs` with `Retry-After`; accepted runs are never
    /// refused or dropped. Default 64; 0: no limit.
    pub max_runs: usize,
    /// Requests planned at once (plan and run mode); planning runs off the async
    /// workers, on the blocking pool, and a request over the limit waits for a slot
    /// (within `request_timeout`). Default 4; at least 1.
    pub max_planning: usize,
    /// Longest an event stream stays open; then it ends and the client reconnects with
    /// `Last-Event-ID` to go on where it left off (default 1 h; `0s`: no limit).
    #[serde(with = "humantime_serde")]
    pub event_stream_lifetime: Duration,
    /// Whether the server resumes the runs it finds unfinished in the store at start
    /// (default `true`). `false` leaves them as they are, journaled as running, for the
    /// next start with `true`: for a server started on a copy of the store (testing a
    /// backup), which must not call the agents of work the original server owns.
    pub resume_runs: bool,
}

/// The default of [`ServerConfig::max_runs_per_subject`]: a quarter of the default
/// `max_runs`. Left at this value, it is lowered to a smaller `max_runs`.
pub const DEFAULT_MAX_RUNS_PER_SUBJECT: usize = 16;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            data_dir: PathBuf::from("data"),
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
            shutdown_delay: Duration::from_secs(5),
            api_keys: Vec::new(),
            admin_api_keys: Vec::new(),
            allow_open_api: false,
            max_in_flight: 1024,
            retention: Duration::from_secs(30 * 86_400),
            header_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_ip: 256,
            ops_bind: String::new(),
            trusted_proxies: Vec::new(),
            max_event_streams: 512,
            max_event_streams_per_ip: 32,
            max_event_streams_per_subject: 64,
            max_runs_per_subject: DEFAULT_MAX_RUNS_PER_SUBJECT,
            max_runs: 64,
            max_planning: 4,
            event_stream_lifetime: Duration::from_secs(3_600),
            resume_runs: true,
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
    /// Longest a whole LLM decomposition (every planner call together, retries
    /// included) may take before the heuristic plan is used, with a degradation reason
    /// naming `llm_timeout` (default 20 s). With the LLM decomposer it must be below
    /// `server.request_timeout`, or a slow provider would time the request out before
    /// the fallback (refused at load, rule `llm_timeout_below_request_timeout`).
    #[serde(with = "humantime_serde")]
    pub llm_timeout: Duration,
}

impl Default for PlanningConfig {
    fn default() -> Self {
        PlanningConfig {
            decomposer: DecomposerKind::Heuristic,
            llm_timeout: Duration::from_secs(20),
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
    /// What a bad agent of `agents_file` does (default [`CatalogueErrors::Fail`]).
    pub catalogue_errors: CatalogueErrors,
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
            catalogue_errors: CatalogueErrors::Fail,
            router: genesis_halo::RouterConfig::default(),
            max_agents: None,
            learn_from_runs: true,
            learn_interval: Duration::from_secs(1),
        }
    }
}

/// What a bad agent of the catalogue (`routing.catalogue_errors`) does: a JSONL line,
/// JSON array element or `[[agent]]` table that does not read as an agent or fails
/// validation (audit H11 M4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogueErrors {
    /// The catalogue does not load; the error names the file, line and reason.
    #[default]
    Fail,
    /// The agent is left out with a warning naming the file, line and reason; a file
    /// that is not JSON or TOML at all, a repeated id, or no agent left still fail.
    Skip,
}

impl From<CatalogueErrors> for genesis_halo::JsonlMode {
    fn from(e: CatalogueErrors) -> Self {
        match e {
            CatalogueErrors::Fail => genesis_halo::JsonlMode::Fail,
            CatalogueErrors::Skip => genesis_halo::JsonlMode::Skip,
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
        let mut vars: Vec<(&String, Vec<String>, toml::Value)> = env_map
            .iter()
            .filter_map(|(key, value)| Some((key, env_key_path(key)?, parse_env_value(value))))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(b.0));
        // Every variable is applied before the result is checked: a section's required
        // key may be set by a variable that sorts after one setting its other keys.
        let with_vars = |skip: Option<usize>| -> Result<toml::Table, GenesisError> {
            let mut table = merged.clone();
            for (i, (key, path, value)) in vars.iter().enumerate() {
                if Some(i) == skip {
                    continue;
                }
                set_path(&mut table, path, value.clone()).map_err(|message| {
                    GenesisError::Config {
                        message: format!("environment variable {key}: {message}"),
                    }
                })?;
            }
            Ok(table)
        };
        if !vars.is_empty() {
            let all = with_vars(None)?;
            if let Err(e) = deserialize(&all) {
                // Name the variable without which the configuration is valid (a wrong
                // value, or a key whose section then lacks a required one); when no single
                // one is, name them all.
                let culprit = (0..vars.len())
                    .find(|&i| with_vars(Some(i)).is_ok_and(|t| deserialize(&t).is_ok()));
                let message = match culprit.and_then(|i| vars.get(i)) {
                    Some((key, path, _)) => format!(
                        "environment variable {key} (key {}): {}",
                        path.join("."),
                        e.message().trim_end()
                    ),
                    None => format!(
                        "environment variables {}: {}",
                        vars.iter()
                            .map(|(key, _, _)| key.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        e.message().trim_end()
                    ),
                };
                return Err(GenesisError::Config { message });
            }
            merged = all;
        }
        let mut config = deserialize(&merged).map_err(|e| GenesisError::Config {
            message: format!("configuration files combined: {}", e.message().trim_end()),
        })?;
        reconcile_limits(&mut config, &merged)?;
        check_llm_timeout(&config)?;
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
        GenesisConfig::load_layered_all(extra.as_slice(), env)
    }

    /// [`GenesisConfig::load_layered`] with any number of extra files, applied in
    /// order (a later file's keys win): `config/production.toml` then a file of
    /// `[backends]`, for example.
    ///
    /// # Errors
    /// As [`GenesisConfig::load`].
    pub fn load_layered_all(
        extra: &[&Path],
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

impl GenesisConfig {
    /// Why run mode cannot execute any task, or `None` when it can: without
    /// `[backends]` and with `llm.agents = false` no agent has a backend, so every run
    /// is refused (422 `agent_backend`; plans still work). The server logs this once at
    /// start.
    pub fn no_backend_reason(&self) -> Option<&'static str> {
        (self.backends.is_empty() && !self.llm.agents).then_some(
            "no agent can run tasks: no [backends] are configured and llm.agents = false, \
             so plans work but every run is refused (422 agent_backend); configure [backends.<agent>] (an HTTP \
             service or a command) or set llm.agents = true with an [[llm.providers]] entry",
        )
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

/// `GENESIS_*` variables that are read by the binaries but are not configuration keys.
pub const NON_CONFIG_VARIABLES: &[&str] = &[
    "GENESIS_AUTH_SECRET",
    "GENESIS_CONFIG",
    "GENESIS_URL",
    "GENESIS_API_KEY",
];

/// The configuration key path a `GENESIS_*` variable sets (`GENESIS_SERVER__BIND` →
/// `["server", "bind"]`), or `None` for any other variable.
fn env_key_path(key: &str) -> Option<Vec<String>> {
    let rest = key.strip_prefix("GENESIS_")?;
    if rest.is_empty()
        || !rest.contains("__") && !KNOWN_SECTIONS.contains(&rest.to_ascii_lowercase().as_str())
    {
        return None;
    }
    Some(rest.split("__").map(str::to_ascii_lowercase).collect())
}

impl GenesisConfig {
    /// The `GENESIS_*` variables of `env` that neither set a configuration key
    /// (`GENESIS_<SECTION>__<KEY>`) nor are read by the binaries
    /// ([`NON_CONFIG_VARIABLES`]), nor name a feature flag in `flag_names` (lower-case):
    /// most likely typos, which [`GenesisConfig::load`] would otherwise ignore. The
    /// binaries warn about each, naming it.
    pub fn unknown_env_variables<'a>(
        env: impl IntoIterator<Item = &'a (String, String)>,
        flag_names: &[String],
    ) -> Vec<String> {
        let mut unknown: Vec<String> = env
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| {
                k.starts_with("GENESIS_")
                    && env_key_path(k).is_none()
                    && !NON_CONFIG_VARIABLES.contains(&k.as_str())
                    && !flag_names.contains(&k.to_ascii_lowercase())
            })
            .cloned()
            .collect();
        unknown.sort();
        unknown
    }
}

fn deserialize(table: &toml::Table) -> Result<GenesisConfig, toml::de::Error> {
    toml::Value::Table(table.clone()).try_into()
}

/// Keys of `[security.limits]` that limit the same thing as a key of `[limits]`: the
/// security screen (which checks requests and DAGs at the API boundary) and the planner
/// (which checks what it builds) hold requests to the same numbers.
const SHARED_LIMITS: &[(&str, &str)] = &[
    ("max_request_chars", "max_request_chars"),
    ("max_dag_depth", "max_depth"),
    ("max_tasks_per_dag", "max_tasks"),
];

/// Makes `[security.limits]` follow `[limits]` for the keys they share, unless set; a
/// value set in both that differs is an error naming both keys.
fn reconcile_limits(config: &mut GenesisConfig, merged: &toml::Table) -> Result<(), GenesisError> {
    let set = merged
        .get("security")
        .and_then(toml::Value::as_table)
        .and_then(|s| s.get("limits"))
        .and_then(toml::Value::as_table);
    for &(security_key, limits_key) in SHARED_LIMITS {
        let planner = match limits_key {
            "max_request_chars" => config.limits.max_request_chars,
            "max_depth" => config.limits.max_depth,
            _ => config.limits.max_tasks,
        };
        let screen = match security_key {
            "max_request_chars" => &mut config.security.limits.max_request_chars,
            "max_dag_depth" => &mut config.security.limits.max_dag_depth,
            _ => &mut config.security.limits.max_tasks_per_dag,
        };
        if set.is_some_and(|t| t.contains_key(security_key)) && *screen != planner {
            return Err(GenesisError::Config {
                message: format!(
                    "security.limits.{security_key} = {screen} disagrees with \
                     limits.{limits_key} = {planner}: both hold requests to the same limit; \
                     set limits.{limits_key} (GENESIS_LIMITS__{}) alone, the security screen \
                     follows it (rule: limits_consistent)",
                    limits_key.to_ascii_uppercase()
                ),
            });
        }
        *screen = planner;
    }
    Ok(())
}

/// With the LLM decomposer, `planning.llm_timeout` must end before the server's
/// `request_timeout`: otherwise slow planning is answered 503 `request_timeout` (its
/// calls paid for) before the heuristic fallback can answer.
fn check_llm_timeout(config: &GenesisConfig) -> Result<(), GenesisError> {
    let planning = config.planning.llm_timeout;
    let request = config.server.request_timeout;
    if config.planning.decomposer == DecomposerKind::Llm
        && !request.is_zero()
        && (planning.is_zero() || planning >= request)
    {
        return Err(GenesisError::Config {
            message: format!(
                "planning.llm_timeout = {planning:?} is not below server.request_timeout = \
                 {request:?}: LLM planning must end (falling back to the heuristic plan) \
                 before the request times out (rule: llm_timeout_below_request_timeout)"
            ),
        });
    }
    Ok(())
}

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

    use crate::testing::TempDir;

    fn tempdir(tag: &str) -> TempDir {
        TempDir::new(&format!("config-{tag}"))
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

    /// Security audit D4: a deployed server could not revoke a leaked agent token.
    /// Audit L6-3: with `llm_timeout` at or above `request_timeout`, slow LLM planning
    /// was answered 503 `request_timeout` before the heuristic fallback could answer.
    /// Such a config is refused at load, naming both keys; the shipped defaults pass.
    #[test]
    fn llm_planning_that_cannot_end_before_the_request_times_out_is_refused() {
        let d = tempdir("llm-timeout");
        let equal = write(
            &d,
            "equal.toml",
            "[planning]\ndecomposer = \"llm\"\nllm_timeout = \"30s\"\n[server]\nrequest_timeout = \"30s\"\n",
        );
        let err = GenesisConfig::load(&[equal], Vec::new())
            .unwrap_err()
            .to_string();
        for part in [
            "planning.llm_timeout = 30s",
            "server.request_timeout = 30s",
            "rule: llm_timeout_below_request_timeout",
        ] {
            assert!(err.contains(part), "{err}");
        }
        let below = write(
            &d,
            "below.toml",
            "[planning]\ndecomposer = \"llm\"\n[server]\nrequest_timeout = \"30s\"\n",
        );
        let c = GenesisConfig::load(&[below], Vec::new()).unwrap();
        assert_eq!(c.planning.llm_timeout, std::time::Duration::from_secs(20));
        // Without LLM planning the bound is not used, and not checked.
        let heuristic = write(
            &d,
            "heuristic.toml",
            "[planning]\nllm_timeout = \"30s\"\n[server]\nrequest_timeout = \"10s\"\n",
        );
        assert!(GenesisConfig::load(&[heuristic], Vec::new()).is_ok());
    }

    #[test]
    fn revoked_agent_tokens_come_from_the_config() {
        let d = tempdir("revoked");
        let file = write(
            &d,
            "revoke.toml",
            "[security.auth.revoked_before]\nqa = \"2026-11-24T19:00:00Z\"\n",
        );
        let c = GenesisConfig::load(&[file], Vec::new()).unwrap();
        let at = c.security.auth.revoked_before.get("qa").map(|t| t.0);
        assert_eq!(
            at,
            Some(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_546_800))
        );
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

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// An unknown key set by a variable names the variable and the key, not a line of
    /// an internal merged document.
    #[test]
    fn variable_errors_name_the_variable_and_the_key() {
        let err = GenesisConfig::load::<PathBuf>(&[], env(&[("GENESIS_SERVER__BND", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("GENESIS_SERVER__BND"), "{err}");
        assert!(err.contains("server.bnd"), "{err}");
        assert!(err.contains("unknown field `bnd`"), "{err}");
        assert!(!err.contains("line "), "{err}");
        let err =
            GenesisConfig::load::<PathBuf>(&[], env(&[("GENESIS_SERVER__MAX_IN_FLIGHT", "many")]))
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("GENESIS_SERVER__MAX_IN_FLIGHT") && err.contains("server.max_in_flight"),
            "{err}"
        );
    }

    /// Audit R7 item 7: variables were checked one at a time in sorted order, so
    /// `GENESIS_TELEMETRY__OTLP__BATCH_DELAY` (sorting before `..._ENDPOINT`) was refused
    /// for a missing `endpoint` that the next variable set. All are applied, then checked;
    /// an error still names the variable it comes from.
    #[test]
    fn variables_are_checked_together_and_an_error_names_its_variable() {
        let config = GenesisConfig::load::<PathBuf>(
            &[],
            env(&[
                ("GENESIS_TELEMETRY__OTLP__BATCH_DELAY", "1s"),
                ("GENESIS_TELEMETRY__OTLP__ENDPOINT", "http://127.0.0.1:4318"),
            ]),
        )
        .unwrap();
        let otlp = config
            .telemetry
            .otlp
            .expect("otlp section set by variables");
        assert_eq!(otlp.endpoint, "http://127.0.0.1:4318");
        assert_eq!(otlp.batch_delay, std::time::Duration::from_secs(1));
        // Alone, the section lacks its endpoint: the variable that made it is named.
        let err = GenesisConfig::load::<PathBuf>(
            &[],
            env(&[
                ("GENESIS_TELEMETRY__OTLP__BATCH_DELAY", "1s"),
                ("GENESIS_SERVER__MAX_IN_FLIGHT", "10"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("GENESIS_TELEMETRY__OTLP__BATCH_DELAY")
                && err.contains("telemetry.otlp.batch_delay")
                && err.contains("endpoint")
                && !err.contains("MAX_IN_FLIGHT"),
            "{err}"
        );
        // Two wrong values: no single culprit, both are named.
        let err = GenesisConfig::load::<PathBuf>(
            &[],
            env(&[
                ("GENESIS_SERVER__MAX_IN_FLIGHT", "many"),
                ("GENESIS_LIMITS__MAX_DEPTH", "deep"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("GENESIS_SERVER__MAX_IN_FLIGHT")
                && err.contains("GENESIS_LIMITS__MAX_DEPTH"),
            "{err}"
        );
    }

    #[test]
    fn unknown_genesis_variables_are_listed_and_known_ones_are_not() {
        let vars = env(&[
            ("GENESIS_BOGUS", "1"),
            ("GENESIS_SERVER_BIND", "0.0.0.0:1"),
            ("GENESIS_SERVER__BIND", "0.0.0.0:1"),
            ("GENESIS_AUTH_SECRET", "x"),
            ("GENESIS_CONFIG", "c.toml"),
            ("GENESIS_MY_FLAG", "true"),
            ("GENESIS_LIMITS", "x"),
            ("PATH", "/bin"),
        ]);
        let unknown = GenesisConfig::unknown_env_variables(&vars, &["genesis_my_flag".to_owned()]);
        assert_eq!(unknown, ["GENESIS_BOGUS", "GENESIS_SERVER_BIND"]);
    }

    /// The security screen's request, depth and task limits follow `[limits]`, so one
    /// key raises both; setting the `[security.limits]` one to another value is refused
    /// naming both keys.
    #[test]
    fn security_limits_follow_limits_and_disagreements_name_both_keys() {
        let c = GenesisConfig::load::<PathBuf>(
            &[],
            env(&[
                ("GENESIS_LIMITS__MAX_REQUEST_CHARS", "10000"),
                ("GENESIS_LIMITS__MAX_DEPTH", "3"),
                ("GENESIS_LIMITS__MAX_TASKS", "50"),
            ]),
        )
        .unwrap();
        assert_eq!(c.security.limits.max_request_chars, 10_000);
        assert_eq!(c.security.limits.max_dag_depth, 3);
        assert_eq!(c.security.limits.max_tasks_per_dag, 50);
        let request = "x".repeat(6_400);
        assert!(c.security.limits.check_request(&request).is_ok());
        assert!(c.limits.check_request(&request).is_ok());

        let err = GenesisConfig::load::<PathBuf>(
            &[],
            env(&[("GENESIS_SECURITY__LIMITS__MAX_REQUEST_CHARS", "10000")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("security.limits.max_request_chars = 10000")
                && err.contains("limits.max_request_chars = 5000")
                && err.contains("GENESIS_LIMITS__MAX_REQUEST_CHARS")
                && err.contains("rule: limits_consistent"),
            "{err}"
        );
        // The same value in both is fine.
        let d = tempdir("limits");
        let both = write(
            &d,
            "both.toml",
            "[limits]\nmax_depth = 4\n[security.limits]\nmax_dag_depth = 4\n",
        );
        let c = GenesisConfig::load(&[both], Vec::new()).unwrap();
        assert_eq!(c.security.limits.max_dag_depth, 4);
    }

    #[test]
    fn run_mode_without_any_backend_is_explained() {
        let mut c = GenesisConfig::default();
        let reason = c.no_backend_reason().unwrap();
        assert!(
            reason.contains("[backends") && reason.contains("llm.agents"),
            "{reason}"
        );
        c.llm.agents = true;
        assert!(c.no_backend_reason().is_none());
    }
}

#[cfg(test)]
mod documented {
    //! `config/genesis.toml` documents every key of the default configuration.

    use super::GenesisConfig;

    /// `(section, key)` pairs the file names, commented-out ones (`# key = ...`, a
    /// commented `# [section]` header) included.
    fn documented_keys(text: &str) -> std::collections::BTreeSet<String> {
        let mut keys = std::collections::BTreeSet::new();
        let mut section = String::new();
        for line in text.lines() {
            let line = line.trim();
            let line = line.strip_prefix('#').map_or(line, str::trim_start);
            if let Some(header) = line.strip_prefix('[') {
                let name = header.trim_start_matches('[');
                if let Some(end) = name.find(']') {
                    section = name[..end].trim().to_owned();
                    // `[backends.qa]` documents `backends` too.
                    let mut prefix = String::new();
                    for part in section.split('.') {
                        if !prefix.is_empty() {
                            prefix.push('.');
                        }
                        prefix.push_str(part);
                        keys.insert(prefix.clone());
                    }
                }
                continue;
            }
            if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                if !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    keys.insert(if section.is_empty() {
                        key.to_owned()
                    } else {
                        format!("{section}.{key}")
                    });
                }
            }
        }
        keys
    }

    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, v, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }

    /// Fails naming every key of `GenesisConfig::default()` that config/genesis.toml
    /// does not mention (set, or commented out where the default is "unset").
    #[test]
    fn genesis_toml_documents_every_key_of_the_default_config() {
        let defaults = serde_json::to_value(GenesisConfig::default()).unwrap();
        let mut paths = Vec::new();
        walk("", &defaults, &mut paths);
        let documented = documented_keys(crate::defaults::GENESIS_TOML);
        let missing: Vec<&String> = paths.iter().filter(|p| !documented.contains(*p)).collect();
        assert!(
            missing.is_empty(),
            "config/genesis.toml does not document {} keys: {missing:#?}",
            missing.len()
        );
    }
}
