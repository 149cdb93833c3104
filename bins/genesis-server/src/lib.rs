//! The Genesis HTTP API as a library, so tests run it in-process on loopback.
//!
//! [`AppState::from_config`] builds everything (orchestrator, run store, auth, rate
//! limits, metrics); [`app`] builds the axum router with its middleware; [`RunManager`]
//! starts, tracks, resumes and drains runs; [`serve`] runs the app on a listener with
//! the connection limits (header timeout, connection caps) and graceful shutdown.
//! `main.rs` only parses arguments, loads configuration, binds, serves and shuts down.
//!
//! Middleware order, outermost first (each layer explains itself in `app`): request id
//! and metrics → load shedding → concurrency limit → kill switches → rate limits → auth →
//! body limit → per-request timeout (event streams: the event-stream caps instead) →
//! handler. Auth hands the caller it verified (subject, and whether it sees every run)
//! to the handlers as a request extension. The client IP the per-IP limits use is the TCP peer, or behind a
//! `server.trusted_proxies` proxy the address it forwarded.
//!
//! ```
//! use genesis_server::{AppState, app};
//!
//! let mut config = genesis::GenesisConfig::default();
//! config.security.auth.environment = genesis::security::Environment::Dev;
//! config.server.data_dir = std::env::temp_dir().join(format!("genesis-doc-{}", std::process::id()));
//! # struct RemovedOnDrop(std::path::PathBuf);
//! # impl Drop for RemovedOnDrop {
//! #     fn drop(&mut self) {
//! #         let _ = std::fs::remove_dir_all(&self.0);
//! #     }
//! # }
//! # let _data_dir = RemovedOnDrop(config.server.data_dir.clone());
//! let state = AppState::from_config(config, &[], None)?;
//! let router = app(state.clone()); // genesis_server::serve(listener, state, shutdown) serves it
//! state.begin_shutdown(); // /ready now answers 503 and new runs are refused
//! assert!(state.is_shutting_down());
//! # drop(router);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod api;
mod middleware;
mod openapi;
mod proxy;
mod runs;
mod transport;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use genesis::core::Secret;
use genesis::security::{AgentAuthenticator, Environment, RateLimiter};
use genesis::store::{RunStore, SqliteStore};
use genesis::telemetry::PrometheusHandle;
use genesis::{GenesisConfig, GenesisError, Orchestrator};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;

pub use api::{CreateTask, ErrorBody, ErrorDetail, Mode};
pub use proxy::InvalidTrustedProxy;
pub use runs::RunManager;
pub use transport::{
    CONNECTION_LOG_INTERVAL, CONNECTIONS_EVICTED_TOTAL, CONNECTIONS_OPEN,
    CONNECTIONS_REFUSED_TOTAL, OPS_MAX_CONNECTIONS, OPS_MAX_CONNECTIONS_PER_IP, OpsBindError,
    ops_bind, serve, serve_ops,
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Configuration or orchestrator set-up failed.
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    /// The run store could not be opened.
    #[error(transparent)]
    Store(#[from] genesis::store::StoreError),
    /// Security set-up failed (auth secret, rate limits).
    #[error(transparent)]
    Security(#[from] genesis::security::SecurityError),
    /// `flags.rollout` breaks a rule (e.g. `steps` not increasing): refused at start
    /// rather than first noticed by `genesis deploy`.
    #[error(transparent)]
    RolloutConfig(genesis::flags::FlagError),
    /// Production without API keys (neither client nor operator keys).
    #[error(
        "environment {environment} requires server.api_keys: set GENESIS_SERVER__API_KEYS or server.api_keys (or, for operators only, GENESIS_SERVER__ADMIN_API_KEYS) (rule: api_keys_required)"
    )]
    NoApiKeys {
        /// The configured environment.
        environment: &'static str,
    },
    /// A retention shorter than a day (today's spend, which daily budgets count, must
    /// not be deleted).
    #[error(
        "server.retention {value:?} is below one day: use 0s to keep runs for ever or 1d or more (rule: retention_min)"
    )]
    RetentionTooShort {
        /// The configured retention.
        value: Duration,
    },
    /// An entry of `server.api_keys` or `server.admin_api_keys` that no request could
    /// send as configured (empty, whitespace at either end, a character a header cannot
    /// carry as text), named by its list and position, never by its value.
    #[error(
        "{list} entry {position} {why}: a key is visible ASCII characters (inner spaces allowed), nothing else (rule: api_key_invalid)"
    )]
    InvalidApiKey {
        /// The list: `server.api_keys` or `server.admin_api_keys`.
        list: &'static str,
        /// The entry's position in its list, from 1.
        position: usize,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A key listed both in `server.api_keys` and in `server.admin_api_keys`: whether
    /// its caller sees every run or only its own would be a guess.
    #[error(
        "the key with fingerprint {fingerprint} is in both server.api_keys and server.admin_api_keys: keep it in one list, and give operators keys of their own (rule: admin_key_overlap)"
    )]
    AdminKeyOverlap {
        /// The first 6 bytes (hex) of the key's SHA-256, the start of its `key:` and
        /// `admin:` subjects; never the key.
        fingerprint: String,
    },
    /// A `server.trusted_proxies` entry that does not parse.
    #[error(transparent)]
    TrustedProxy(#[from] InvalidTrustedProxy),
    /// The run store does not take writes (checked before any run is resumed): a
    /// read-only database file or mount, a full disk. Nothing was resumed.
    #[error(
        "the run store in {dir} does not take writes, so no run can be journaled or resumed: make {dir}/genesis.db writable (free disk space, a read-write mount, file permissions) and start again (rule: store_unwritable)"
    )]
    StoreUnwritable {
        /// The data directory (`server.data_dir`).
        dir: String,
        /// The failed write.
        #[source]
        source: genesis::store::StoreError,
    },
    /// An open API (neither `server.api_keys` nor `server.admin_api_keys`) on a `bind`
    /// address that is not loopback, or behind `server.trusted_proxies` (which forward
    /// other hosts' clients to it), without `server.allow_open_api = true`: anyone who
    /// could connect would list, read and cancel every run.
    #[error(
        "server.bind {bind} {reach} and the API is open (server.api_keys and server.admin_api_keys are empty): anyone who can connect would list, read and cancel every run. Set server.api_keys (GENESIS_SERVER__API_KEYS) or server.admin_api_keys, bind to 127.0.0.1 with no trusted proxies, or set server.allow_open_api = true to accept it (rule: open_api)"
    )]
    OpenApi {
        /// The configured `server.bind`.
        bind: std::net::SocketAddr,
        /// How clients of other hosts reach it.
        reach: &'static str,
    },
    /// `server.max_runs_per_subject` above `server.max_runs` (both limited): one caller
    /// could take every run slot.
    #[error(
        "server.max_runs_per_subject {per_subject} is above server.max_runs {max_runs}: one caller could take every run slot; set it to at most server.max_runs (its default, 16, is lowered to server.max_runs when that is smaller), or 0 for no per-caller limit (rule: max_runs_per_subject_above_max_runs)"
    )]
    RunsPerSubjectAboveMax {
        /// The configured `server.max_runs_per_subject`.
        per_subject: usize,
        /// The configured `server.max_runs`.
        max_runs: usize,
    },
    /// The data directory or its database files could not be created with their
    /// private permissions.
    #[error("cannot prepare the data directory {dir} (rule: data_dir)")]
    DataDir {
        /// The data directory (`server.data_dir`).
        dir: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A connection or event-stream limit of `[server]` set to 0, which would refuse
    /// everything (or, for the header timeout, close every connection at once).
    #[error("{key} is 0: it must be above 0 (rule: server_limit_zero)")]
    ZeroLimit {
        /// The key, e.g. `server.max_connections`.
        key: &'static str,
    },
}

/// Everything the handlers share.
pub struct AppState {
    orchestrator: Orchestrator,
    store: Arc<SqliteStore>,
    runs: RunManager,
    config: GenesisConfig,
    auth: AgentAuthenticator,
    api_keys: Vec<Secret>,
    /// `server.admin_api_keys`: operators, whose callers see every run.
    admin_api_keys: Vec<Secret>,
    /// Both lists by the SHA-256 digest of each key ([`key_digests`]).
    key_digests: std::collections::HashMap<[u8; 32], middleware::KeyKind>,
    ip_limiter: RateLimiter<IpAddr>,
    key_limiter: RateLimiter<genesis::core::AgentId>,
    metrics: Option<PrometheusHandle>,
    shutting_down: AtomicBool,
    started: std::time::Instant,
    /// The router registry as last written to the store (learned state).
    learned_saved: std::sync::Mutex<Option<Arc<genesis::halo::AgentRegistry>>>,
    /// Store calls the handlers may have on the blocking pool at once
    /// ([`STORE_CALLS_IN_FLIGHT`]); a call holds its permit until its thread is done.
    store_calls: Arc<tokio::sync::Semaphore>,
    /// Planning of requests, each in a task of its own so a request dropped mid-plan
    /// (client gone, request timeout) still keeps what its LLM calls cost; [`drain`]
    /// waits for them.
    planning: tokio_util::task::TaskTracker,
    /// `server.max_planning` slots: requests planned at once (each on the blocking
    /// pool, see `api::plan_kept`); a request waits for one.
    planning_slots: Arc<tokio::sync::Semaphore>,
    /// `server.max_planning`.
    max_planning: usize,
    /// `server.trusted_proxies`: whose forwarded headers name the client.
    trusted_proxies: proxy::TrustedProxies,
    /// Event streams open, against `server.max_event_streams` (and per IP).
    event_streams: Arc<transport::Gate>,
    /// When `/ready` last ran the store's write probe: while the store takes writes, at
    /// most one probe (one small synced write) per [`READY_PROBE_INTERVAL`], however
    /// often `/ready` is asked (it is not rate-limited).
    ready_probe: std::sync::Mutex<Option<std::time::Instant>>,
    /// Event streams open per caller subject, against
    /// `server.max_event_streams_per_subject`.
    subject_streams: Arc<transport::Gate<String>>,
    /// Refusals (401, 429, 503, revoked or expired agent tokens) logged at most once per
    /// [`REFUSAL_LOG_INTERVAL`] per kind, with the count since the last line.
    refusals: genesis::telemetry::LogThrottle,
}

/// Least time between two write probes of `/ready` (see `AppState::ready_probe`).
pub(crate) const READY_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How often a flood of refused requests of one kind is logged (one `warn` line per
/// kind and interval, counting the refusals since the previous line).
pub const REFUSAL_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Store calls the handlers make at once. They share one SQLite connection, so more
/// would only park more blocking-pool threads on its lock (each a thread while it
/// waits: 50 clients submitting runs at once held 50); a call over the limit waits
/// as a task instead, which costs no thread.
const STORE_CALLS_IN_FLIGHT: usize = 4;

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("orchestrator", &self.orchestrator)
            .field("api_keys", &self.api_keys.len())
            .field("admin_api_keys", &self.admin_api_keys.len())
            .finish_non_exhaustive()
    }
}

/// What [`AppState::prepare`] checked and built from the configuration.
struct Prepared {
    trusted_proxies: proxy::TrustedProxies,
    event_streams: Arc<transport::Gate>,
    subject_streams: Arc<transport::Gate<String>>,
    auth: AgentAuthenticator,
    ip_limiter: RateLimiter<IpAddr>,
    key_limiter: RateLimiter<genesis::core::AgentId>,
}

/// The per-caller run limit in force: `server.max_runs_per_subject`, except that its
/// default is lowered to a smaller `server.max_runs` (verification V10 defect 6: setting
/// `max_runs = 8` alone was refused for a default the operator never set).
fn runs_per_subject(server: &genesis::config::ServerConfig) -> usize {
    let configured = server.max_runs_per_subject;
    if configured == genesis::config::DEFAULT_MAX_RUNS_PER_SUBJECT && server.max_runs > 0 {
        configured.min(server.max_runs)
    } else {
        configured
    }
}

impl AppState {
    /// Checks `config` and the environment as [`AppState::from_config`] does before it
    /// touches the data directory (limits, rollout thresholds, proxies, the auth secret,
    /// API keys, rate limits), so a caller can check before taking the directory's lock
    /// ([`lock_data_dir`]).
    ///
    /// # Errors
    /// The first setting that fails, as [`AppState::from_config`] reports it.
    pub fn check_config(
        config: &GenesisConfig,
        env: &[(String, String)],
    ) -> Result<(), StartError> {
        // Quietly: `from_config` prepares again and logs its warnings (a missing
        // GENESIS_AUTH_SECRET in dev) once; here they came out twice (audits G10, C10).
        // The orchestrator is built (and dropped) here too, so a catalogue, rules or
        // backend error stops the start before the data directory is made (verification
        // V10 defect 10).
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            Self::prepare(config, env)?;
            genesis::orchestrator_from_config(config, env)?;
            Ok(())
        })
    }

    fn prepare(config: &GenesisConfig, env: &[(String, String)]) -> Result<Prepared, StartError> {
        let retention = config.server.retention;
        if !retention.is_zero() && retention < RETENTION_MIN {
            return Err(StartError::RetentionTooShort { value: retention });
        }
        config
            .flags
            .rollout
            .validate()
            .map_err(StartError::RolloutConfig)?;
        let server = &config.server;
        for (key, zero) in [
            ("server.header_timeout", server.header_timeout.is_zero()),
            ("server.max_connections", server.max_connections == 0),
            (
                "server.max_connections_per_ip",
                server.max_connections_per_ip == 0,
            ),
            ("server.max_event_streams", server.max_event_streams == 0),
            (
                "server.max_event_streams_per_ip",
                server.max_event_streams_per_ip == 0,
            ),
            (
                "server.max_event_streams_per_subject",
                server.max_event_streams_per_subject == 0,
            ),
            ("server.max_planning", server.max_planning == 0),
        ] {
            if zero {
                return Err(StartError::ZeroLimit { key });
            }
        }
        let trusted_proxies = proxy::TrustedProxies::parse(&server.trusted_proxies)?;
        let event_streams =
            transport::Gate::new(server.max_event_streams, server.max_event_streams_per_ip);
        // The total is `event_streams`' to hold; this gate only counts per subject.
        let subject_streams =
            transport::Gate::new(usize::MAX, server.max_event_streams_per_subject);
        // Secrets and keys first: a server that cannot start must not have created its
        // data directory or database.
        let secret = env
            .iter()
            .find(|(k, _)| k == "GENESIS_AUTH_SECRET")
            .map(|(_, v)| Secret::new(v.clone()));
        let auth = AgentAuthenticator::new(&config.security.auth, secret)?;
        check_keys(&config.server.api_keys, &config.server.admin_api_keys)?;
        let environment = config.security.auth.environment;
        let open = config.server.api_keys.is_empty() && config.server.admin_api_keys.is_empty();
        if environment != Environment::Dev && open {
            return Err(StartError::NoApiKeys {
                environment: environment.as_str(),
            });
        }
        let bind = config.server.bind;
        if open {
            // Verification V10 defect 5: a loopback bind behind trusted proxies (as
            // config/production.toml has it) serves every client those proxies forward.
            let reach = if !bind.ip().to_canonical().is_loopback() {
                Some("is not a loopback address")
            } else if !trusted_proxies.is_empty() {
                Some(
                    "is reached through server.trusted_proxies, which forward other hosts' clients",
                )
            } else {
                None
            };
            if let Some(reach) = reach
                && !config.server.allow_open_api
            {
                return Err(StartError::OpenApi { bind, reach });
            }
            // Audit S10 #2: leaving the keys out turned auth off without a word.
            tracing::warn!(
                rule = "open_api",
                bind = %bind,
                allow_open_api = config.server.allow_open_api,
                "the API is open (server.api_keys and server.admin_api_keys are empty): anyone who can connect lists, reads and cancels every run"
            );
        }
        if server.max_runs > 0 && runs_per_subject(server) > server.max_runs {
            return Err(StartError::RunsPerSubjectAboveMax {
                per_subject: server.max_runs_per_subject,
                max_runs: server.max_runs,
            });
        }
        let ip_limiter = RateLimiter::per_client_ip(&config.security.rate_limits)?;
        let key_limiter = RateLimiter::per_agent(&config.security.rate_limits)?;
        Ok(Prepared {
            trusted_proxies,
            event_streams,
            subject_streams,
            auth,
            ip_limiter,
            key_limiter,
        })
    }

    /// Builds the state: orchestrator (with flags, LLM providers and backends from
    /// `config` and `env`), the SQLite run store in `config.server.data_dir`, agent
    /// authentication (master secret from `GENESIS_AUTH_SECRET` in `env`), rate limiters.
    ///
    /// # Errors
    /// [`StartError`] naming what is wrong.
    pub fn from_config(
        config: GenesisConfig,
        env: &[(String, String)],
        metrics: Option<PrometheusHandle>,
    ) -> Result<Arc<AppState>, StartError> {
        let Prepared {
            trusted_proxies,
            event_streams,
            subject_streams,
            auth,
            ip_limiter,
            key_limiter,
        } = Self::prepare(&config, env)?;
        let orchestrator = genesis::orchestrator_from_config(&config, env)?;
        if let Some(reason) = config.no_backend_reason() {
            tracing::warn!(rule = "agent_backend_required", "{reason}");
        }
        let data_dir = &config.server.data_dir;
        let data_dir_error = |source| StartError::DataDir {
            dir: data_dir.display().to_string(),
            source,
        };
        if let Some(mode) = create_private_dir(data_dir).map_err(data_dir_error)? {
            tracing::warn!(
                data_dir = %data_dir.display(),
                mode = %format!("{mode:04o}"),
                "the data directory can be read by other local users (group or world permissions): its run store holds every client's requests and outputs; chmod 700 it"
            );
        }
        create_private_file(&data_dir.join("genesis.db")).map_err(data_dir_error)?;
        let store = Arc::new(SqliteStore::open(data_dir)?);
        // SQLite gives its -wal and -shm files the database file's mode; ones left by an
        // older build keep theirs: tightened here.
        for name in ["genesis.db-wal", "genesis.db-shm"] {
            restrict_file(&data_dir.join(name)).map_err(data_dir_error)?;
        }
        // What the router learned before the last stop, laid over the configured
        // catalogue (which stays in force for descriptions, skills and kinds).
        if config.routing.learn_from_runs {
            // Learned state is derived from finished runs and rewritten by the next save:
            // a row that no longer reads (a damaged database) costs what was learned, not
            // the start (audit S6: "invalid utf-8 sequence ... at index 1", no file named).
            let stored = store.load_learned().unwrap_or_else(|e| {
                tracing::error!(
                    database = %config.server.data_dir.join("genesis.db").display(),
                    error = %genesis::core::error_chain(&e),
                    "cannot read the learned routing state; starting from the configured catalogue (the next save replaces it)"
                );
                Vec::new()
            });
            if !stored.is_empty() {
                let router = orchestrator.router();
                let (registry, applied) = genesis::learning::apply_learned(
                    &router.registry(),
                    &stored,
                    router.config().max_examples_per_agent,
                )
                .map_err(GenesisError::from)?;
                router.set_registry(registry).map_err(GenesisError::from)?;
                tracing::info!(
                    agents = applied.agents,
                    unknown = applied.unknown,
                    "applied learned routing state from the store"
                );
            }
        }
        register_metrics(&orchestrator);
        let learned_saved = std::sync::Mutex::new(Some(orchestrator.router().registry()));
        let runs = RunManager::new(
            orchestrator.clone(),
            Arc::clone(&store) as Arc<dyn RunStore>,
        )
        .with_max_runs_per_subject(runs_per_subject(&config.server))
        .with_max_runs(config.server.max_runs);
        // Today's spend read now, so a store that cannot tell it is reported at start
        // (and `/ready` fails) rather than at the first run.
        let _ = runs.try_today();
        let max_planning = config.server.max_planning;
        Ok(Arc::new(AppState {
            api_keys: config.server.api_keys.clone(),
            admin_api_keys: config.server.admin_api_keys.clone(),
            key_digests: key_digests(&config.server.api_keys, &config.server.admin_api_keys),
            orchestrator,
            store,
            runs,
            config,
            auth,
            ip_limiter,
            key_limiter,
            metrics,
            shutting_down: AtomicBool::new(false),
            started: std::time::Instant::now(),
            learned_saved,
            store_calls: Arc::new(tokio::sync::Semaphore::new(STORE_CALLS_IN_FLIGHT)),
            planning: tokio_util::task::TaskTracker::new(),
            planning_slots: Arc::new(tokio::sync::Semaphore::new(max_planning)),
            max_planning,
            trusted_proxies,
            event_streams,
            subject_streams,
            refusals: genesis::telemetry::LogThrottle::new(REFUSAL_LOG_INTERVAL),
            ready_probe: std::sync::Mutex::new(None),
        }))
    }

    /// The SQLite run store (the same one as [`RunManager::store`]), for maintenance
    /// such as [`SqliteStore::set_query_only`].
    pub fn sqlite_store(&self) -> &SqliteStore {
        &self.store
    }

    /// The run manager.
    pub fn runs(&self) -> &RunManager {
        &self.runs
    }

    /// The orchestrator.
    pub fn orchestrator(&self) -> &Orchestrator {
        &self.orchestrator
    }

    /// The agent authenticator (issues tokens for agents that call back).
    pub fn auth(&self) -> &AgentAuthenticator {
        &self.auth
    }

    /// Marks the server as shutting down: `/ready` answers 503 and new runs are refused.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Which list `key` is in: `server.api_keys` or `server.admin_api_keys`, `None`
    /// for neither (no key is in both lists: [`check_keys`]). The key is hashed once
    /// and its digest looked up, so a request costs one SHA-256 however many keys are
    /// configured (audit P9 F2: one digest pair per configured key, 590 requests/s with
    /// 5,000 keys). Timing can only tell an attacker about digests, whose preimages
    /// they cannot find.
    fn key_kind(&self, key: &str) -> Option<middleware::KeyKind> {
        if self.key_digests.is_empty() {
            return None;
        }
        self.key_digests.get(&sha256(key)).copied()
    }

    /// True when `/api` needs credentials: some API key or admin API key is configured.
    /// With neither the API is open (development only).
    fn requires_credentials(&self) -> bool {
        !self.api_keys.is_empty() || !self.admin_api_keys.is_empty()
    }

    /// Whether `/ready` should run the store's write probe now (at most once per
    /// [`READY_PROBE_INTERVAL`]); records the probe when it should.
    pub(crate) fn ready_probe_due(&self) -> bool {
        let mut last = self
            .ready_probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < READY_PROBE_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Requests being planned now, at most `server.max_planning` (also exported as
    /// `genesis_planning_in_progress`).
    pub fn planning_in_progress(&self) -> usize {
        self.max_planning
            .saturating_sub(self.planning_slots.available_permits())
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// The SHA-256 digest of `key`.
fn sha256(key: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Every configured key by its digest: [`AppState::key_kind`]'s index. Admin wins if a
/// key were in both lists ([`check_keys`] refuses that at start).
fn key_digests(
    api_keys: &[Secret],
    admin_api_keys: &[Secret],
) -> std::collections::HashMap<[u8; 32], middleware::KeyKind> {
    let mut map = std::collections::HashMap::with_capacity(api_keys.len() + admin_api_keys.len());
    for k in api_keys {
        map.insert(sha256(k.expose()), middleware::KeyKind::Client);
    }
    for k in admin_api_keys {
        map.insert(sha256(k.expose()), middleware::KeyKind::Admin);
    }
    map
}

/// Refuses, before anything is created, a configured key no request could send as it is
/// written (empty or only whitespace; whitespace at either end, which header parsing
/// and the bearer scheme strip; a character outside visible ASCII, space and tab, which
/// a header does not carry as text) and a key listed both as an API key and as an admin
/// API key. The errors name the list and position, or the fingerprint, never the key.
fn check_keys(api_keys: &[Secret], admin_api_keys: &[Secret]) -> Result<(), StartError> {
    for (list, keys) in [
        ("server.api_keys", api_keys),
        ("server.admin_api_keys", admin_api_keys),
    ] {
        for (i, key) in keys.iter().enumerate() {
            let key = key.expose();
            let why = if key.trim().is_empty() {
                Some("is empty or only whitespace")
            } else if key.trim() != key {
                Some("starts or ends with whitespace")
            } else if key
                .bytes()
                .any(|b| !(b.is_ascii_graphic() || b == b' ' || b == b'\t'))
            {
                Some("has a character that is not visible ASCII")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(StartError::InvalidApiKey {
                    list,
                    position: i + 1,
                    why,
                });
            }
        }
    }
    let clients: std::collections::HashSet<[u8; 32]> =
        api_keys.iter().map(|k| sha256(k.expose())).collect();
    for admin in admin_api_keys {
        if clients.contains(&sha256(admin.expose())) {
            return Err(StartError::AdminKeyOverlap {
                fingerprint: middleware::fingerprint(admin.expose()),
            });
        }
    }
    Ok(())
}

/// The axum application with its middleware.
pub fn app(state: Arc<AppState>) -> Router {
    let timeout = state.config.server.request_timeout;
    let body_limit = state.config.security.limits.max_body_bytes;
    let max_in_flight = state.config.server.max_in_flight.max(1);

    // Request/response routes get a per-request timeout, answered as 503, that stops at
    // a write the client must hear the outcome of (`middleware::request_timeout`).
    let bounded = Router::new()
        .route("/api/tasks", post(api::create_task).get(api::list_tasks))
        .route("/api/tasks/{id}", get(api::get_task))
        .route("/api/tasks/{id}/cancel", post(api::cancel_task))
        .route("/api/agents", get(api::agents))
        .route("/api/status", get(api::status))
        .layer(axum::middleware::from_fn_with_state(
            timeout,
            middleware::request_timeout,
        ));
    // Event streams are long-lived: no request timeout, but caps on how many are open
    // (in total and per client IP) and on how long one stays open.
    let streams = Router::new()
        .route("/api/tasks/{id}/events", get(api::events))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::event_stream_limit,
        ));
    let api = bounded
        .merge(streams)
        // Innermost: body size limit (413 past `security.limits.max_body_bytes`), and at
        // once for a body declared larger than that.
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            body_limit,
            middleware::declared_body_limit,
        ))
        // Auth runs before the handler and after rate limiting, so a flood of bad API
        // keys is throttled (per IP and key) before any work. A request with an agent
        // token is charged inside auth: to the agent once its token verified, to its
        // client IP when it did not (a valid credential never spends the IP's bucket).
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::auth,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::rate_limit,
        ))
        // Kill switches answer 503 before any work is done.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::kill_switch,
        ));
    // Load shedding: when `max_in_flight` requests are running, answer 503 at once
    // instead of queueing (tower's load-shed over a concurrency limit). `Router::layer`
    // layers every route and method separately, so the limit must be the *global* one:
    // one semaphore shared by all. The API and unknown paths are shed; the probes,
    // /metrics and /openapi.json are not (audit O11 M3): an overloaded process is alive,
    // and a liveness probe failing on load would have it restarted, losing the work in
    // progress, just when it is busiest.
    let shed = api.fallback(api::not_found).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(
                move |err: tower::BoxError| async move {
                    middleware::overload_error(&err, max_in_flight)
                },
            ))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::new(max_in_flight)),
    );
    Router::new()
        .route("/health", get(api::health))
        .route("/ready", get(api::ready))
        .route("/metrics", get(api::metrics))
        .route("/openapi.json", get(openapi::spec))
        .merge(shed)
        // Outermost: request id, tracing span and request metrics for everything,
        // including shed requests.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::request_context,
        ))
        .with_state(state)
}

/// How often [`spawn_learning_saver`] checks for learned routing state to store.
pub const LEARNED_SAVE_INTERVAL: Duration = Duration::from_secs(10);

/// Writes what the router has learned from runs since the last save to the store (one
/// transaction; nothing when nothing changed or learning is off). Returns the number of
/// agents written.
///
/// # Errors
/// Store failures.
pub fn save_learned(state: &AppState) -> Result<usize, genesis::store::StoreError> {
    if !state.config.routing.learn_from_runs {
        return Ok(0);
    }
    // Outcomes still waiting for their batch belong in this save.
    state.orchestrator.flush_learning();
    let current = state.orchestrator.router().registry();
    let mut saved = state
        .learned_saved
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if saved.as_ref().is_some_and(|s| Arc::ptr_eq(s, &current)) {
        return Ok(0);
    }
    let states = genesis::learning::learned_states(&current);
    state.store.save_learned(&states)?;
    *saved = Some(current);
    Ok(states.len())
}

/// Saves learned routing state every [`LEARNED_SAVE_INTERVAL`] (off the async
/// threads). Learning is soft state: a crash loses at most one interval of it; a clean
/// shutdown saves after draining.
pub fn spawn_learning_saver(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    spawn_periodic(
        state,
        LEARNED_SAVE_INTERVAL,
        save_learned,
        |_, saved| match saved {
            Ok(Ok(n)) if n > 0 => tracing::debug!(agents = n, "saved learned routing state"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %genesis::core::error_chain(&e), "cannot save learned routing state")
            }
            Err(e) => tracing::warn!(error = %e, "learned-state saver failed"),
        },
    )
}

/// Runs `job` on the blocking pool now and then every `every` (a tick missed while a
/// job runs long is delayed, not bunched), handing each outcome to `report` on the
/// async side: the shape of the server's periodic store chores (learned-state saving,
/// retention). The task runs until the runtime stops.
fn spawn_periodic<T: Send + 'static>(
    state: Arc<AppState>,
    every: Duration,
    job: fn(&AppState) -> T,
    report: impl Fn(&AppState, Result<T, tokio::task::JoinError>) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let s = Arc::clone(&state);
            let outcome = tokio::task::spawn_blocking(move || job(&s)).await;
            report(&state, outcome);
        }
    })
}

/// The shortest `server.retention` other than 0 (keep for ever): one day.
pub const RETENTION_MIN: Duration = Duration::from_secs(86_400);

/// How often [`spawn_retention`] deletes the finished runs `server.retention` no longer
/// keeps.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3_600);

/// Runs deleted per store transaction: each holds the store's connection while it
/// deletes, so journal writes wait for one batch at most (100 runs of 20 tasks and 41
/// events each: 9 ms median, 18 ms at most on the reference host, fsync included).
const RETENTION_BATCH: usize = 100;

/// Deletes the finished runs older than `server.retention` (created and last updated
/// before it), with their tasks and events, a batch at a time; counts them in
/// `genesis_runs_deleted_total`. Runs still running are kept. Returns how many were
/// deleted (0 when `retention` is 0: keep for ever). This is a store call: it blocks.
///
/// # Errors
/// Store failures (batches deleted before the failure stay deleted).
pub fn apply_retention(state: &AppState) -> Result<usize, genesis::store::StoreError> {
    let keep = state.config.server.retention;
    if keep.is_zero() {
        return Ok(0);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let before = i64::try_from(now.saturating_sub(keep).as_millis()).unwrap_or(i64::MAX);
    let mut deleted = 0;
    loop {
        let n = state
            .store
            .delete_finished_before(before, RETENTION_BATCH)?;
        deleted += n;
        metrics::counter!(genesis::telemetry::catalogue::RUNS_DELETED_TOTAL).increment(n as u64);
        if n < RETENTION_BATCH {
            return Ok(deleted);
        }
        // Journal writes waiting for the connection go first.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Logs the refusals held back since their kind's last `warn` line (see
/// [`REFUSAL_LOG_INTERVAL`]), so the tail of a flood is reported within an interval of
/// its end instead of with the next refusal of its kind; returns how many lines it
/// wrote.
pub fn flush_refusal_log(state: &AppState) -> usize {
    let due = state.refusals.flush_due(std::time::Instant::now());
    let interval_secs = state.refusals.interval().as_secs();
    for &(kind, count) in &due {
        if kind.starts_with("agent_token_") {
            tracing::warn!(
                kind,
                count,
                interval_secs,
                "a revoked or expired agent token was used"
            );
        } else {
            tracing::warn!(kind, count, interval_secs, "requests refused");
        }
    }
    due.len()
}

/// Runs [`flush_refusal_log`] every [`REFUSAL_LOG_INTERVAL`].
pub fn spawn_refusal_log_flush(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFUSAL_LOG_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            flush_refusal_log(&state);
        }
    })
}

/// Applies [`apply_retention`] now and every [`RETENTION_INTERVAL`] (off the async
/// threads).
pub fn spawn_retention(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    spawn_periodic(
        state,
        RETENTION_INTERVAL,
        apply_retention,
        |state, deleted| match deleted {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(
                runs = n,
                retention = ?state.config.server.retention,
                "deleted finished runs past their retention"
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %genesis::core::error_chain(&e), "cannot delete old runs")
            }
            Err(e) => tracing::warn!(error = %e, "retention task failed"),
        },
    )
}

/// The exclusive lock of one server process on its data directory
/// (`<data_dir>/genesis.lock`), held while the value lives: a second server started on
/// the same directory would resume the first one's runs and call their agents again.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DataDirLockError {
    /// Another process holds the lock.
    #[error(
        "another genesis-server is using the data directory {dir} (it holds {dir}/genesis.lock): stop it, or give this one its own server.data_dir (rule: data_dir_locked)"
    )]
    Locked {
        /// The data directory.
        dir: String,
    },
    /// The lock file could not be opened or locked.
    #[error(
        "cannot lock the data directory {dir} through {dir}/genesis.lock: {source} (rule: data_dir_lock)"
    )]
    Io {
        /// The data directory.
        dir: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// Takes the lock of the data directory `dir` (see [`DataDirLock`]) without waiting,
/// creating the directory if it is missing (0700 on Unix, the lock file 0600); call it before [`AppState::from_config`]
/// opens (and migrates) the store in it, and hold it until the process exits.
///
/// # Errors
/// [`DataDirLockError::Locked`] when another process holds it (rule `data_dir_locked`),
/// [`DataDirLockError::Io`] when the directory or the lock file cannot be created.
pub fn lock_data_dir(dir: &std::path::Path) -> Result<DataDirLock, DataDirLockError> {
    let shown = dir.display().to_string();
    let io = |source| DataDirLockError::Io {
        dir: shown.clone(),
        source,
    };
    create_private_dir(dir).map_err(io)?;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(dir.join("genesis.lock")).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(DataDirLockError::Locked { dir: shown }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Creates the data directory `dir` (and missing parents) readable by this user only
/// (0700 whatever the umask, on Unix): its run store holds every client's requests and
/// outputs. An existing directory is left as it is: returns its mode when group or
/// others have any permission on it, for the caller to warn about (`None` otherwise, and
/// for a directory created here).
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {
                let mode = meta.permissions().mode() & 0o7777;
                return Ok((mode & 0o077 != 0).then_some(mode));
            }
            _ => {}
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // The umask may have taken bits the owner needs (e.g. 0277).
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(None)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir).map(|()| None)
    }
}

/// Creates `path` empty if it is missing, then makes it readable and writable by this
/// user only (0600 on Unix, whatever the umask). An empty file is an empty SQLite
/// database, and SQLite creates the database's -wal and -shm files with its mode.
fn create_private_file(path: &std::path::Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    drop(options.open(path)?);
    restrict_file(path)
}

/// Makes an existing `path` 0600 (Unix; nothing elsewhere, or when it is missing).
fn restrict_file(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        match std::fs::metadata(path) {
            Ok(meta) if meta.permissions().mode() & 0o777 != 0o600 => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Resumes runs that were accepted but not finished before the last stop, unless
/// `server.resume_runs` is `false`: then they stay journaled as running (for a start
/// with it `true`), a warning says how many, and 0 are resumed. First it checks that
/// the store takes writes ([`RunStore::probe_write`]): a run resumed onto a store that
/// cannot journal it would call its agents again at every start and never finish.
///
/// # Errors
/// [`StartError::StoreUnwritable`] (rule `store_unwritable`, naming the data directory)
/// when the store does not take writes: nothing was resumed, and the server must not
/// start. [`StartError::Store`] for other store failures.
pub fn resume(state: &Arc<AppState>) -> Result<usize, StartError> {
    state
        .runs
        .store()
        .probe_write()
        .map_err(|source| StartError::StoreUnwritable {
            dir: state.config.server.data_dir.display().to_string(),
            source,
        })?;
    if !state.config.server.resume_runs {
        let left = state.runs.store().unfinished_runs()?.len();
        tracing::warn!(
            unfinished_runs = left,
            "server.resume_runs is false: unfinished runs are not resumed and stay journaled as running"
        );
        return Ok(0);
    }
    Ok(state.runs.resume()?)
}

/// Stops accepting runs and waits up to `grace` for running ones, and for planning in
/// progress (whose LLM calls' cost is then in the store). Runs still going after that
/// stay journaled as running and resume at the next start.
pub async fn drain(state: &Arc<AppState>, grace: Duration) -> usize {
    state.begin_shutdown();
    state.planning.close();
    let planning = async {
        if tokio::time::timeout(grace, state.planning.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                planning = state.planning.len(),
                "planning still in progress after the grace period: what its LLM calls cost is not in the store, so today's spend after the restart leaves it out"
            );
        }
    };
    let (still_running, ()) = tokio::join!(state.runs.drain(grace), planning);
    // What the drained runs taught the router survives the restart.
    let s = Arc::clone(state);
    match tokio::task::spawn_blocking(move || save_learned(&s)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %genesis::core::error_chain(&e), "cannot save learned routing state")
        }
        Err(e) => tracing::warn!(error = %e, "learned-state save failed"),
    }
    still_running
}

/// Registers, at their initial values, the series that are otherwise created by their
/// first event, so dashboards and alerts see them from the start rather than "no
/// data": every breaker's `genesis_breaker_state` (closed, 0), `genesis_cost_usd`
/// and `genesis_degradation_level` (0), `process_start_time_seconds` (the server's
/// start), and the counters of the catalogue with the label
/// values they are recorded with (tasks by status, budget refusals by scope, errors by
/// category, ...) at 0. Adding 0 to a series that exists changes nothing, so a second
/// server in one process (tests) keeps what the first recorded. Series whose labels are
/// only known when they happen (LLM calls by model, flag evaluations, routing layers)
/// and histograms appear with their first sample.
fn register_metrics(orchestrator: &Orchestrator) {
    use genesis::telemetry::catalogue::{self as c, labels};
    export_breaker_states(orchestrator);
    metrics::gauge!(c::COST_USD).increment(0.0);
    genesis::telemetry::process::record_start_time();
    genesis::telemetry::process::record_resident_memory();
    for status in ["succeeded", "failed", "cancelled", "interrupted"] {
        metrics::counter!(c::RUNS_TOTAL, labels::STATUS => status).increment(0);
    }
    metrics::counter!(c::OTLP_EXPORT_FAILURES_TOTAL).increment(0);
    for reason in ["queue_full", "export_failed"] {
        metrics::counter!(c::OTLP_SPANS_DROPPED_TOTAL, labels::REASON => reason).increment(0);
    }
    metrics::gauge!(c::DEGRADATION_LEVEL).increment(0.0);
    for status in ["succeeded", "failed", "skipped"] {
        metrics::counter!(c::TASKS_TOTAL, labels::STATUS => status).increment(0);
    }
    for scope in ["run", "daily", "subject_daily"] {
        metrics::counter!(c::BUDGET_EXCEEDED_TOTAL, labels::SCOPE => scope).increment(0);
    }
    for result in ["success", "failure"] {
        metrics::counter!(c::ROUTING_OUTCOMES_TOTAL, labels::RESULT => result).increment(0);
    }
    for direction in ["input", "output"] {
        metrics::counter!(c::LLM_TOKENS_TOTAL, labels::DIRECTION => direction).increment(0);
    }
    use genesis::core::ErrorCategory as E;
    for category in [
        E::Decomposition,
        E::Routing,
        E::Validation,
        E::Llm,
        E::Network,
        E::Resource,
        E::Security,
        E::Config,
        E::Internal,
    ] {
        metrics::counter!(c::ERRORS_TOTAL, labels::CATEGORY => category.as_str()).increment(0);
    }
    metrics::counter!(c::INJECTION_BLOCKED_TOTAL, labels::CHECKPOINT => "user_request")
        .increment(0);
    metrics::counter!(c::RATE_LIMITED_TOTAL).increment(0);
    metrics::counter!(c::RUNS_DELETED_TOTAL).increment(0);
    // The connection layer's series.
    for reason in ["max_connections", "max_connections_per_ip"] {
        metrics::counter!(transport::CONNECTIONS_REFUSED_TOTAL, transport::REASON => reason)
            .increment(0);
    }
    metrics::gauge!(transport::CONNECTIONS_OPEN).increment(0.0);
    metrics::gauge!(c::RUNS_IN_PROGRESS).increment(0.0);
    metrics::gauge!(c::PLANNING_IN_PROGRESS).increment(0.0);
}

/// Every circuit breaker calls go through and its state now: the agent breakers
/// (`agent:<id>`, for each agent of the catalogue a backend serves) and the LLM
/// providers' (`llm:<provider>`), by key. A breaker not created yet (nothing was called
/// through it) is closed.
pub(crate) fn breaker_states(
    orchestrator: &Orchestrator,
) -> std::collections::BTreeMap<String, genesis::resilience::BreakerState> {
    use genesis::resilience::BreakerState;
    let now = tokio::time::Instant::now();
    let mut states: std::collections::BTreeMap<String, BreakerState> = orchestrator
        .router()
        .registry()
        .iter()
        .filter(|a| orchestrator.serves_agent(a.id.as_str()))
        .map(|a| (format!("agent:{}", a.id), BreakerState::Closed))
        .collect();
    let llm = orchestrator.llm();
    states.extend(
        llm.iter()
            .flat_map(|p| p.breaker_keys())
            .map(|k| (k, BreakerState::Closed)),
    );
    let live = orchestrator
        .executor()
        .breakers()
        .states(now)
        .into_iter()
        .chain(llm.iter().flat_map(|p| p.breakers().states(now)));
    for (key, s) in live {
        states.insert(key.to_string(), s);
    }
    states
}

/// Sets `genesis_breaker_state{key}` for every breaker of [`breaker_states`]: 0 closed
/// (or not created yet), 1 half-open, 2 open.
pub(crate) fn export_breaker_states(orchestrator: &Orchestrator) {
    use genesis::resilience::BreakerState;
    use genesis::telemetry::catalogue::{self as c, breaker_state, labels};
    for (key, s) in breaker_states(orchestrator) {
        let v = match s {
            BreakerState::Closed => breaker_state::CLOSED,
            BreakerState::HalfOpen => breaker_state::HALF_OPEN,
            BreakerState::Open => breaker_state::OPEN,
        };
        metrics::gauge!(c::BREAKER_STATE, labels::KEY => key).set(v);
    }
}

/// Counts one error answer in `genesis_errors_total{category}`: [`json_error`] does, and
/// so does every error body built by hand.
pub(crate) fn count_error(category: &'static str) {
    metrics::counter!(
        genesis::telemetry::catalogue::ERRORS_TOTAL,
        genesis::telemetry::catalogue::labels::CATEGORY => category
    )
    .increment(1);
}

/// The one way the server answers an error: `{"error": {rule, message, category}}` with
/// `status`, counted in `genesis_errors_total{category}`.
pub(crate) fn json_error(
    status: StatusCode,
    rule: &str,
    message: String,
    category: &'static str,
) -> axum::response::Response {
    count_error(category);
    (
        status,
        axum::Json(ErrorBody {
            error: ErrorDetail {
                rule: rule.to_owned(),
                message,
                category,
            },
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Audit P9 F2: a key is found by one digest and a map lookup (every configured key
    /// was hashed and compared on each request), in either list, and nothing else is.
    #[test]
    fn api_keys_are_found_by_their_digest_in_either_list() {
        let clients: Vec<Secret> = (0..5_000)
            .map(|i| Secret::new(format!("client-key-{i:05}")))
            .collect();
        let admins = vec![Secret::new("admin-key".to_owned())];
        let map = key_digests(&clients, &admins);
        assert_eq!(map.len(), 5_001);
        let kind = |k: &str| map.get(&sha256(k)).copied();
        assert_eq!(kind("client-key-00000"), Some(middleware::KeyKind::Client));
        assert_eq!(kind("client-key-04999"), Some(middleware::KeyKind::Client));
        assert_eq!(kind("admin-key"), Some(middleware::KeyKind::Admin));
        for wrong in [
            "client-key-5000",
            "client-key-0000",
            "",
            "admin-key ",
            "ADMIN-KEY",
        ] {
            assert_eq!(kind(wrong), None, "{wrong:?}");
        }
        // A key in both lists is refused at start, by digest too.
        assert!(matches!(
            check_keys(&clients[..1], &[Secret::new("client-key-00000".to_owned())]),
            Err(StartError::AdminKeyOverlap { .. })
        ));
    }

    /// A directory under the system temp dir for the unit tests of this crate, unique to
    /// this process and call (`genesis-server-{tag}-{pid}-{n}`), removed with what is in
    /// it when dropped: when the test ends, passed or failed. Declare it before the state
    /// whose data directory it is, so that it is dropped after it.
    pub(crate) struct TempDir(std::path::PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "genesis-server-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            // Left by a crashed run of a process that had this id: not this test's files.
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl std::ops::Deref for TempDir {
        type Target = std::path::Path;

        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    static RUNS: AtomicUsize = AtomicUsize::new(0);

    fn count(_: &AppState) -> usize {
        RUNS.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The loop the learned-state saver and retention share: the job runs at once, then
    /// once per period, on the blocking pool, and every outcome reaches `report`.
    #[tokio::test(start_paused = true)]
    async fn a_periodic_job_runs_at_once_then_every_period_and_reports_each_outcome() {
        let mut config = GenesisConfig::default();
        config.security.auth.environment = Environment::Dev;
        let dir = TempDir::new("periodic");
        config.server.data_dir = dir.to_path_buf();
        let state = AppState::from_config(config, &[], None).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let every = Duration::from_secs(60);
        let started = tokio::time::Instant::now();
        let task = spawn_periodic(state, every, count, move |_, outcome| {
            let _ = tx.send((outcome.unwrap(), tokio::time::Instant::now()));
        });
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(rx.recv().await.unwrap());
        }
        task.abort();
        let runs: Vec<usize> = seen.iter().map(|(n, _)| *n).collect();
        assert_eq!(runs, [1, 2, 3]);
        let at: Vec<Duration> = seen.iter().map(|(_, t)| *t - started).collect();
        assert_eq!(at, [Duration::ZERO, every, every * 2]);
    }
}
