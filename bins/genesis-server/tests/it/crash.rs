//! Crash test: the real `genesis-server` binary with a temp data dir and slow HTTP agents
//! on loopback is killed with SIGKILL mid-run and restarted. Every accepted run must
//! complete, none may be lost, and no task whose success was journaled may be called
//! again (a task in flight at the kill may run again). Then SIGTERM must drain and exit 0.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use genesis::run::TaskStatus;
use genesis::store::{RunStore, SqliteStore};
use serde_json::json;

use crate::support::{AGENTS, Stub, TempDir, client, split};

/// A request the heuristic decomposer splits into several dependent tasks.
const REQUEST: &str =
    "Design the database schema, then build the REST API, then write integration tests";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn write_config(dir: &Path, port: u16, stub_url: &str) -> std::path::PathBuf {
    write_config_with_delay(dir, port, stub_url, "1s")
}

/// [`write_config`] with `server.shutdown_delay = delay`.
fn write_config_with_delay(
    dir: &Path,
    port: u16,
    stub_url: &str,
    delay: &str,
) -> std::path::PathBuf {
    let mut toml = format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nshutdown_grace = \"3s\"\n\
         shutdown_delay = \"{delay}\"\n\n\
         [security.auth]\nenvironment = \"dev\"\n\n\
         [security.rate_limits]\nper_ip_per_minute = 1000000\nper_ip_burst = 100000\n\n\
         [telemetry]\nfilter = \"warn\"\n\n[executor]\ntask_timeout = \"20s\"\n",
        dir.join("data").display()
    );
    for id in AGENTS {
        toml.push_str(&format!(
            "\n[backends.{id}]\ntype = \"http\"\nurl = \"{stub_url}\"\ntimeout = \"20s\"\n"
        ));
    }
    let path = dir.join("crash-test.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// A spawned server process, killed and reaped when dropped, so a test that fails an
/// assertion (or panics) while servers run does not leave them behind holding their
/// ports and data directories.
struct Server(Child);

impl std::ops::Deref for Server {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Already exited (the usual case at the end of a test): both calls are no-ops.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path, config: &Path, tag: &str) -> Server {
    let log = std::fs::File::create(dir.join(format!("server-{tag}.log"))).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_genesis-server"));
    // Run from the temp dir so no config/genesis.toml from the checkout is picked up.
    cmd.current_dir(dir)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    for (k, _) in std::env::vars() {
        if k.starts_with("GENESIS_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    Server(cmd.spawn().unwrap())
}

async fn wait_healthy(base: &str, child: &mut Child, dir: &Path, tag: &str) {
    let c = client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = c.get(format!("{base}/ready")).send().await
            && r.status() == 200
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let log =
                std::fs::read_to_string(dir.join(format!("server-{tag}.log"))).unwrap_or_default();
            panic!("server exited with {status} before it was ready:\n{log}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server not ready in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Succeeded tasks per run, read straight from the store file.
fn journaled_successes(dir: &Path, runs: &[String]) -> HashMap<String, HashSet<String>> {
    let store = SqliteStore::open(&dir.join("data")).unwrap();
    runs.iter()
        .map(|id| {
            let run = store
                .get_run(id)
                .unwrap()
                .unwrap_or_else(|| panic!("accepted run {id} lost"));
            let done = run
                .tasks
                .iter()
                .filter(|t| t.status == TaskStatus::Succeeded)
                .map(|t| t.task_id.to_string())
                .collect();
            (id.clone(), done)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_loses_nothing_and_reruns_no_finished_task() {
    let dir = TempDir::new("crash");
    let stub = Stub::start(Duration::from_millis(400)).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = write_config(dir.path(), port, &stub.url);
    let c = client();

    let mut server = spawn(dir.path(), &config, "1");
    wait_healthy(&base, &mut server, dir.path(), "1").await;

    // The plan has several tasks, so a kill lands between journaled completions.
    let (status, _, plan) = split(
        c.post(format!("{base}/api/tasks"))
            .json(&json!({"description": REQUEST}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    let planned = plan["tasks"].as_array().unwrap().len();
    assert!(planned >= 3, "want a multi-task plan: {plan}");

    let mut runs = Vec::new();
    for i in 0..6 {
        let (status, _, body) = split(
            c.post(format!("{base}/api/tasks"))
                .json(&json!({"description": REQUEST, "mode": "run", "idempotency_key": format!("crash-{i}")}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        runs.push(body["run_id"].as_str().unwrap().to_owned());
        if i == 4 {
            // Let the first runs journal some completions.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            while stub.total_calls() < 8 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "agents were not called"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // SIGKILL right after the last 202: that run was only just journaled.
    server.kill().unwrap();
    server.wait().unwrap();

    let done_before = journaled_successes(dir.path(), &runs);
    let calls_before = stub.calls();
    let finished_before: usize = done_before.values().map(HashSet::len).sum();
    assert!(
        finished_before > 0,
        "the kill came before any task finished"
    );
    assert!(
        finished_before < runs.len() * planned,
        "the kill came after every task finished"
    );

    let mut server = spawn(dir.path(), &config, "2");
    wait_healthy(&base, &mut server, dir.path(), "2").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for id in &runs {
        loop {
            let (status, _, run) = split(
                c.get(format!("{base}/api/tasks/{id}"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 200, "accepted run {id} lost: {run}");
            if run["status"] != "running" {
                assert_eq!(run["status"], "succeeded", "{run}");
                for t in run["tasks"].as_array().unwrap() {
                    assert_eq!(t["status"], "succeeded", "{t}");
                }
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} did not finish after restart: {run}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let calls_after = stub.calls();
    for id in &runs {
        let store_tasks = journaled_successes(dir.path(), std::slice::from_ref(id));
        assert_eq!(
            store_tasks[id].len(),
            planned,
            "run {id} has unfinished tasks"
        );
        for task in &store_tasks[id] {
            let key = (id.clone(), task.clone());
            let after = calls_after.get(&key).copied().unwrap_or(0);
            assert!(after >= 1, "task {task} of {id} never called");
            if done_before[id].contains(task) {
                let before = calls_before.get(&key).copied().unwrap_or(0);
                assert_eq!(
                    after, before,
                    "finished task {task} of run {id} ran again after restart"
                );
            }
        }
    }
    let (_, _, list) = split(
        c.get(format!("{base}/api/tasks?limit=100"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        list["runs"].as_array().unwrap().len(),
        runs.len(),
        "runs lost or duplicated: {list}"
    );

    // Graceful stop: SIGTERM drains and exits 0.
    let pid = server.id().to_string();
    let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(ok.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = server.kill();
            panic!("server did not exit within 10 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn an_invalid_config_fails_at_start_naming_the_key_and_the_reason() {
    let dir = TempDir::new("badstart");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nbind = \"127.0.0.1:0\"\nmax_in_flight = \"many\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_genesis-server"))
        .current_dir(dir.path())
        .arg("--config")
        .arg(&bad)
        .env_remove("GENESIS_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_in_flight") && err.contains("bad.toml"),
        "{err}"
    );
    assert!(err.contains("invalid type"), "the reason: {err}");
}

/// Verification V5 finding N6: nothing stopped two servers sharing a data directory; a
/// second one resumed the live server's runs before it failed to bind its port. Now it
/// refuses at once, naming the rule, before resuming anything, and the first keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_refuses_to_start() {
    let dir = TempDir::new("datadir-lock");
    let stub = Stub::start(Duration::from_secs(2)).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = write_config(dir.path(), port, &stub.url);
    let mut first = spawn(dir.path(), &config, "1");
    wait_healthy(&base, &mut first, dir.path(), "1").await;
    // A run in progress on the first server: the second must not resume it.
    let (status, _, body) = split(
        client()
            .post(format!("{base}/api/tasks"))
            .json(&json!({"description": "Fix the login bug", "mode": "run"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{body}");

    let other_port = free_port();
    let second_config = dir.path().join("second.toml");
    std::fs::write(
        &second_config,
        std::fs::read_to_string(&config).unwrap().replace(
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{other_port}"),
        ),
    )
    .unwrap();
    let mut second = spawn(dir.path(), &second_config, "2");
    let status = wait_exit(&mut second, Duration::from_secs(20)).await;
    assert!(!status.success());
    let log = std::fs::read_to_string(dir.path().join("server-2.log")).unwrap();
    assert!(log.contains("data_dir_locked"), "{log}");
    assert!(!log.contains("resuming run"), "nothing resumed: {log}");
    let (status, _, _) = split(client().get(format!("{base}/ready")).send().await.unwrap()).await;
    assert_eq!(status, 200, "the first server still serves");
    first.kill().unwrap();
    let _ = first.wait();
}

/// Audit D5 finding 12: one `--config` only, so production.toml plus a file of
/// `[backends]` had to be merged by hand. `--config` repeats, later files winning.
#[test]
fn config_files_layer_in_order_later_ones_winning() {
    let dir = TempDir::new("layered");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let base = write(
        "base.toml",
        "[server]\nbind = \"127.0.0.1:0\"\nretention = \"1h\"\n",
    );
    let bad = write("bad.toml", "[server]\nmax_in_flight = \"many\"\n");
    let fixed = write("fixed.toml", "[server]\nretention = \"2d\"\n");
    // A data directory that cannot be created: a start that gets past the
    // configuration fails there instead of serving.
    let blocker = write("not-a-dir", "");
    let start = |files: &[&std::path::Path]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_genesis-server"));
        cmd.current_dir(dir.path()).env_remove("GENESIS_CONFIG");
        for f in files {
            cmd.arg("--config").arg(f);
        }
        cmd.env("GENESIS_SERVER__DATA_DIR", blocker.join("data"));
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = start(&[&base, &bad]);
    assert!(
        err.contains("max_in_flight") && err.contains("bad.toml"),
        "the second file is read: {err}"
    );
    let err = start(&[&base]);
    assert!(err.contains("retention_min"), "{err}");
    let err = start(&[&base, &fixed]);
    assert!(
        !err.contains("retention_min") && err.contains("not-a-dir"),
        "the later file's retention wins, so the start gets as far as the data directory: {err}"
    );
}

/// The value of the series `series` (name and labels, as rendered) in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// Sends SIGTERM to the server.
fn sigterm(server: &Child) {
    let pid = server.id().to_string();
    let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(ok.success());
}

/// Waits up to `within` for the server to exit; its exit status.
async fn wait_exit(server: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(s) = server.try_wait().unwrap() {
            return s;
        }
        if std::time::Instant::now() > deadline {
            let _ = server.kill();
            panic!("server did not exit within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Audit G1 item 4: `genesis_breaker_state` and `genesis_cost_usd` (and other
/// catalogued series) appeared in `/metrics` only after their first event, so
/// dashboards and alerts had no series until then. The real binary exports them at
/// their initial values as soon as it is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exist_at_their_initial_values_right_after_start() {
    let dir = TempDir::new("metrics-start");
    let stub = Stub::start(Duration::ZERO).await;
    let port = free_port();
    let config = write_config_with_delay(dir.path(), port, &stub.url, "0s");
    let base = format!("http://127.0.0.1:{port}");
    let mut server = spawn(dir.path(), &config, "1");
    wait_healthy(&base, &mut server, dir.path(), "1").await;
    let text = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    sigterm(&server);
    for agent in AGENTS {
        let series = format!("genesis_breaker_state{{key=\"agent:{agent}\"}}");
        assert_eq!(sample(&text, &series), Some(0.0), "{series} in:\n{text}");
    }
    for series in [
        "genesis_cost_usd",
        "genesis_degradation_level",
        "genesis_tasks_total{status=\"failed\"}",
        "genesis_budget_exceeded_total{scope=\"daily\"}",
        "genesis_errors_total{category=\"internal\"}",
        "genesis_rate_limited_total",
        "genesis_injection_blocked_total{checkpoint=\"user_request\"}",
        "genesis_runs_deleted_total",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in:\n{text}");
    }
    assert!(
        wait_exit(&mut server, Duration::from_secs(10))
            .await
            .success()
    );
}

/// Audit G1 item 7: SIGTERM closed the listener at once, so `/ready`'s 503 was seen
/// only on kept-alive connections. Now the server is not ready first and keeps
/// accepting for `server.shutdown_delay`: a new connection then gets `/ready` 503 (and
/// a run submission 503 `shutting_down`); the process exits 0 once the delay is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigterm_new_connections_get_ready_503_during_the_shutdown_delay() {
    let dir = TempDir::new("shutdown-delay");
    let stub = Stub::start(Duration::ZERO).await;
    let port = free_port();
    let config = write_config_with_delay(dir.path(), port, &stub.url, "3s");
    let base = format!("http://127.0.0.1:{port}");
    let mut server = spawn(dir.path(), &config, "1");
    wait_healthy(&base, &mut server, dir.path(), "1").await;
    // No pooled connections: every request below opens a new one.
    let fresh = genesis::llm::http_client_builder()
        .unwrap()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let signalled = std::time::Instant::now();
    sigterm(&server);
    // The signal is handled within moments; until then /ready may still say 200.
    let body = loop {
        let r = fresh
            .get(format!("{base}/ready"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("a new connection after SIGTERM was refused: {e}"));
        if r.status() == 503 {
            break r.json::<serde_json::Value>().await.unwrap();
        }
        assert_eq!(r.status(), 200);
        assert!(
            signalled.elapsed() < Duration::from_secs(2),
            "/ready still 200 two seconds after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["checks"]["shutting_down"], true, "{body}");
    let (status, _, body) = split(
        fresh
            .post(format!("{base}/api/tasks"))
            .json(&json!({"description": REQUEST, "mode": "run"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["rule"], "shutting_down", "{body}");
    let status = wait_exit(&mut server, Duration::from_secs(15)).await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(2_900),
        "exited {:?} after SIGTERM, before the 3 s delay",
        signalled.elapsed()
    );
}
