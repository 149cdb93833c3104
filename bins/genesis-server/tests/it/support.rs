//! Test harness: temp directories, a stub agent service on loopback, a test
//! configuration, and the app served in-process on 127.0.0.1:0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use genesis::security::Environment;
use genesis::telemetry::PrometheusHandle;
use genesis::{BackendConfig, GenesisConfig};
use genesis_server::AppState;
use serde_json::{Value, json};

/// The 16 built-in agents (config/agents.toml); every one gets the stub as backend.
pub(crate) const AGENTS: [&str; 16] = [
    "spec",
    "architect",
    "builder",
    "frontend",
    "backend",
    "qa",
    "security",
    "deploy",
    "monitoring",
    "marketing",
    "sales",
    "support",
    "analytics",
    "research",
    "finance",
    "darwin",
];

/// The `genesis-server` binary, run in `dir`, without the caller's `GENESIS_*` and
/// `RUST_LOG` variables (so the test's configuration is the only one).
pub(crate) fn server_command(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_genesis-server"));
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("GENESIS_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "genesis-server-it-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Default)]
struct StubState {
    /// Calls per (run id, task id), counted when the request arrives.
    calls: Mutex<HashMap<(String, String), u32>>,
    delay_ms: AtomicU64,
}

/// An agent service on loopback speaking the HTTP backend wire format: it counts calls
/// per (run, task), waits `delay`, and answers `{"output": "done <task>", "cost_usd"}`.
#[derive(Clone)]
pub(crate) struct Stub {
    pub(crate) url: String,
    state: Arc<StubState>,
}

impl Stub {
    pub(crate) async fn start(delay: Duration) -> Stub {
        let state = Arc::new(StubState::default());
        state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/tasks", post(stub_task))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Stub {
            url: format!("http://{addr}/tasks"),
            state,
        }
    }

    /// Calls per (run id, task id).
    pub(crate) fn calls(&self) -> HashMap<(String, String), u32> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Calls for one run, by task id.
    pub(crate) fn calls_for(&self, run: &str) -> HashMap<String, u32> {
        self.calls()
            .into_iter()
            .filter(|((r, _), _)| r == run)
            .map(|((_, t), n)| (t, n))
            .collect()
    }

    pub(crate) fn total_calls(&self) -> u32 {
        self.calls().values().sum()
    }
}

async fn stub_task(State(state): State<Arc<StubState>>, Json(body): Json<Value>) -> Json<Value> {
    let run = body["run_id"].as_str().unwrap_or("?").to_owned();
    let task = body["task"]["id"].as_str().unwrap_or("?").to_owned();
    *state
        .calls
        .lock()
        .unwrap()
        .entry((run, task.clone()))
        .or_insert(0) += 1;
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    Json(json!({"output": format!("done {task}"), "cost_usd": 0.001}))
}

/// A development configuration: data under `dir`, open API, generous rate limits,
/// built-in flags (no flags file), every built-in agent served by `stub_url`.
pub(crate) fn config(dir: &Path, stub_url: &str) -> GenesisConfig {
    let mut c = GenesisConfig::default();
    c.server.data_dir = dir.join("data");
    c.server.shutdown_grace = Duration::from_secs(2);
    c.security.auth.environment = Environment::Dev;
    c.security.rate_limits.per_ip_per_minute = 1_000_000;
    c.security.rate_limits.per_ip_burst = 100_000;
    c.security.rate_limits.per_agent_per_minute = 1_000_000;
    c.security.rate_limits.per_agent_burst = 100_000;
    c.flags.file = dir.join("no-such-flags.json");
    for id in AGENTS {
        let backend: BackendConfig =
            serde_json::from_value(json!({"type": "http", "url": stub_url, "timeout": "10s"}))
                .unwrap();
        c.backends.insert(id.to_owned(), backend);
    }
    c
}

/// One Prometheus recorder per test process (the recorder is global).
fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| genesis::telemetry::install_prometheus_recorder().ok())
        .clone()
}

/// A reqwest client built the way the project builds its own.
pub(crate) fn client() -> reqwest::Client {
    genesis::llm::http_client_builder()
        .unwrap()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The app served in-process on an ephemeral loopback port.
pub(crate) struct TestServer {
    pub(crate) base: String,
    pub(crate) state: Arc<AppState>,
    pub(crate) client: reqwest::Client,
}

impl TestServer {
    pub(crate) async fn start(config: GenesisConfig, env: &[(String, String)]) -> TestServer {
        let state = AppState::from_config(config, env, metrics_handle()).unwrap();
        genesis_server::resume(&state).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = genesis_server::app(Arc::clone(&state));
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        TestServer {
            base: format!("http://{addr}"),
            state,
            client: client(),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        split(r).await
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        body: Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        split(r).await
    }

    /// Submits a run and returns its id.
    pub(crate) async fn submit(&self, description: &str) -> String {
        let (status, _, body) = self
            .post(
                "/api/tasks",
                json!({"description": description, "mode": "run"}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["run_id"].as_str().unwrap().to_owned()
    }

    /// Polls `GET /api/tasks/{id}` until the run leaves `running` (at most `within`).
    pub(crate) async fn wait_finished(&self, id: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (status, _, body) = self.get(&format!("/api/tasks/{id}")).await;
            assert_eq!(status, 200, "{body}");
            if body["status"] != "running" {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} still running after {within:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Status, headers and JSON body (`Value::String` with the raw text when not JSON).
pub(crate) async fn split(r: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// Asserts the house error body `{"error": {"rule", "message", "category"}}` and returns
/// the rule.
/// The ids of the runs of a `GET /api/tasks` page, in the order listed.
pub(crate) fn page_ids(body: &Value) -> Vec<String> {
    body["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("no runs in {body}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

pub(crate) fn error_rule(body: &Value) -> String {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {body}"
    );
    assert!(e["category"].as_str().is_some(), "no category: {body}");
    e["rule"]
        .as_str()
        .unwrap_or_else(|| panic!("no rule: {body}"))
        .to_owned()
}
