//! Rollout cohorts: while a pipeline flag splits subjects, plan and run requests and
//! their runs' tasks are counted per cohort (`genesis_cohort_*{flag, variant}`), so
//! `genesis deploy tick` can judge the traffic that gets the feature. Flags that give
//! every subject the same answer (0 %, 100 %) have no cohort series.

use std::time::Duration;

use genesis::core::AgentId;
use serde_json::{Value, json};

use crate::support::{Stub, TempDir, TestServer, config, split};

/// `tumix_early_stopping` is a canary for the agent `qa` alone (everyone else is in its
/// `off` cohort); `halo_routing` is at 100 % and `daao_cost_routing` at 0 %: no cohorts.
/// (Flags no other test of this binary puts in rollout: the recorder is process-wide.)
const FLAGS: &str = r#"{"flags": [
  {"name": "tumix_early_stopping", "enabled": true,
   "strategy": {"type": "canary", "subjects": ["qa"], "percent": 0}},
  {"name": "halo_routing", "enabled": true,
   "strategy": {"type": "percentage", "percent": 100}},
  {"name": "daao_cost_routing", "enabled": true,
   "strategy": {"type": "percentage", "percent": 0}},
  {"name": "emergency_shutdown", "enabled": false},
  {"name": "orchestration_enabled", "enabled": true}
]}"#;

/// The sum of the series of `name` whose labels include every `(key, value)` of
/// `labels` (0 when there is none).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (set, number) = rest.split_once("} ")?;
            labels
                .iter()
                .all(|(k, v)| set.split(',').any(|pair| pair == format!("{k}=\"{v}\"")))
                .then(|| number.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// `/metrics` as text.
async fn metrics(s: &TestServer) -> String {
    let r = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// `POST /api/tasks` as agent `id` (its token issued by the server).
async fn submit_as(s: &TestServer, id: &str, mode: &str) -> (u16, Value) {
    let token = s
        .state
        .auth()
        .issue(&AgentId::new(id), std::time::SystemTime::now())
        .unwrap();
    let r = s
        .client
        .post(s.url("/api/tasks"))
        .header("x-agent-id", id)
        .header("x-agent-token", &token)
        .json(&json!({"description": "Fix the login bug and add a regression test", "mode": mode}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = split(r).await;
    (status, body)
}

/// Waits (at most 60 s) for run `run` of agent `id` to end; its tasks that succeeded.
async fn succeeded_tasks(s: &TestServer, id: &str, run: &str) -> f64 {
    let token = s
        .state
        .auth()
        .issue(&AgentId::new(id), std::time::SystemTime::now())
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = s
            .client
            .get(s.url(&format!("/api/tasks/{run}")))
            .header("x-agent-id", id)
            .header("x-agent-token", &token)
            .send()
            .await
            .unwrap();
        let (status, _, body) = split(r).await;
        assert_eq!(status, 200, "{body}");
        if body["status"] != "running" {
            assert_eq!(body["status"], "succeeded", "{body}");
            let tasks = body["tasks"].as_array().unwrap();
            let done = tasks.iter().filter(|t| t["status"] == "succeeded").count();
            assert!(done > 0, "{body}");
            return done as f64;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run} still running after 60 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits (at most 10 s) until `/metrics` shows `want` for `name{labels}` plus what it
/// had in `before`: task metrics are recorded once the store kept the task's events,
/// which a client can see an instant before they are counted.
async fn wait_for(s: &TestServer, before: &str, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = metrics(s).await;
        let got = value(&now, name, labels) - value(before, name, labels);
        if got == want {
            return;
        }
        assert!(
            got < want && tokio::time::Instant::now() < deadline,
            "{name}{labels:?}: {got} since the first scrape, want {want}:\n{now}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The audit's finding (docs/OPERATIONS.md, "the gate sees the whole server"): nothing
/// said which requests and tasks got a flag in rollout. A subject in the canary is
/// counted under `variant="on"`, one outside under `off`, requests and run tasks alike;
/// flags at 0 % and 100 % split nobody and have no series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_tasks_are_counted_in_the_subjects_cohort() {
    let dir = TempDir::new("cohorts");
    let stub = Stub::start(Duration::ZERO).await;
    let flags = dir.path().join("flags.json");
    std::fs::write(&flags, FLAGS).unwrap();
    let mut c = config(dir.path(), &stub.url);
    c.flags.file = flags;
    let s = TestServer::start(c, &[]).await;
    let before = metrics(&s).await;

    // qa (in the canary): a plan and a run; builder (outside): a run.
    let (status, body) = submit_as(&s, "qa", "plan").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = submit_as(&s, "qa", "run").await;
    assert_eq!(status, 202, "{body}");
    let qa_run = body["run_id"].as_str().unwrap().to_owned();
    let (status, body) = submit_as(&s, "builder", "run").await;
    assert_eq!(status, 202, "{body}");
    let builder_run = body["run_id"].as_str().unwrap().to_owned();
    let on_tasks = succeeded_tasks(&s, "qa", &qa_run).await;
    let off_tasks = succeeded_tasks(&s, "builder", &builder_run).await;

    let flag = ("flag", "tumix_early_stopping");
    let tasks = "genesis_cohort_tasks_total";
    let ok = ("status", "succeeded");
    wait_for(&s, &before, tasks, &[flag, ("variant", "on"), ok], on_tasks).await;
    wait_for(
        &s,
        &before,
        tasks,
        &[flag, ("variant", "off"), ok],
        off_tasks,
    )
    .await;
    let after = metrics(&s).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let requests = "genesis_cohort_requests_total";
    assert_eq!(
        delta(requests, &[flag, ("variant", "on"), ("outcome", "ok")]),
        2.0,
        "qa's plan and run:\n{after}"
    );
    assert_eq!(
        delta(requests, &[flag, ("variant", "off"), ("outcome", "ok")]),
        1.0,
        "builder's run:\n{after}"
    );
    assert_eq!(delta(requests, &[flag, ("outcome", "error")]), 0.0);
    // The histograms hold the same requests and the succeeded tasks, per variant.
    for (variant, n, t) in [("on", 2.0, on_tasks), ("off", 1.0, off_tasks)] {
        let v = ("variant", variant);
        assert_eq!(
            delta("genesis_cohort_request_duration_seconds_count", &[flag, v]),
            n,
            "{after}"
        );
        assert_eq!(
            delta("genesis_cohort_task_duration_seconds_count", &[flag, v]),
            t,
            "{after}"
        );
        assert_eq!(delta(tasks, &[flag, v, ("status", "failed")]), 0.0);
    }
    // The help text and the unit come from the catalogue.
    assert!(
        after.contains("# HELP genesis_cohort_requests_total"),
        "{after}"
    );

    // 100 % and 0 %: every subject gets the same answer, so no cohort series at all.
    for whole in ["halo_routing", "daao_cost_routing"] {
        let label = format!("flag=\"{whole}\"");
        assert!(
            !after
                .lines()
                .any(|l| l.starts_with("genesis_cohort_") && l.contains(&label)),
            "{whole} splits nobody, yet has cohort series:\n{after}"
        );
    }
}
