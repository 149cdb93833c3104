//! Running the binary and scratch directories.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a run of the binary printed.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Out {
    /// stdout lines parsed as JSON.
    pub(crate) fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// The repository root (where `config/` is).
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `genesis args` in `dir` with `stdin` and extra environment variables.
pub(crate) fn run_in(dir: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_genesis"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("GENESIS_CONFIG")
        .env_remove("GENESIS_API_KEY")
        .env_remove("EMERGENCY_SHUTDOWN")
        // Keys of the developer's shell would choose a provider (see `genesis run`).
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A scratch directory under the system temp dir, unique to this process and call
/// (`genesis-cli-it-{tag}-{pid}-{n}`), removed with what is in it when dropped: when the
/// test ends, passed or failed. Whatever writes into it (a `genesis` process, a server)
/// must be done first: declare the guard before, or hold it in, what uses it.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh scratch directory for one test (see [`TempDir`]).
pub(crate) fn scratch(tag: &str) -> TempDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "genesis-cli-it-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    // Left by a crashed run of a process that had this id: not this test's files.
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

/// Serves the server's app for `state` on a loopback port (a task of the current
/// runtime); its base URL, `http://127.0.0.1:<port>`.
pub(crate) async fn serve(state: &std::sync::Arc<genesis_server::AppState>) -> String {
    let app = genesis_server::app(std::sync::Arc::clone(state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    url
}

/// The ids of the built-in agent catalogue (`config/agents.toml`).
pub(crate) fn builtin_agent_ids() -> Vec<String> {
    genesis::halo::AgentRegistry::from_toml_str(genesis::defaults::AGENTS_TOML)
        .unwrap()
        .iter()
        .map(|a| a.id.to_string())
        .collect()
}
