//! What the server admits (audit P9): a server-wide cap on runs in progress
//! (`server.max_runs`, resumed runs included), anonymous callers held per client IP
//! (`server.max_runs_per_subject`), and planning bounded (`server.max_planning`) and
//! kept off the async workers, so probes answer while planning is saturated.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Stub, TempDir, TestServer, config, error_rule, split};

/// Runs of `s` journaled now (every status), from the list endpoint.
async fn journaled(s: &TestServer) -> usize {
    let (status, _, body) = s.get("/api/tasks?limit=100").await;
    assert_eq!(status, 200, "{body}");
    body["runs"].as_array().map_or(0, Vec::len)
}

fn run(description: &str) -> Value {
    json!({"description": description, "mode": "run"})
}

/// Cancels run `id` and waits (bounded) until it is no longer in progress.
async fn cancel(s: &TestServer, id: &str) {
    let (status, _, body) = s.post(&format!("/api/tasks/{id}/cancel"), json!({})).await;
    assert!(status == 202 || status == 200, "{status} {body}");
    s.wait_finished(id, Duration::from_secs(20)).await;
}

/// Audit P9 F1: 32 anonymous clients got 7,375 runs accepted in 15 s, and with 300 API
/// keys acknowledged runs later failed on their deadline. Over `server.max_runs` a new
/// run is refused with 503 `max_runs` naming the value and the count, with
/// `Retry-After`, and nothing is journaled; once a run finishes one is accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_max_runs_is_refused_before_journaling_and_accepted_once_runs_finish() {
    let dir = TempDir::new("max-runs");
    let stub = Stub::start(Duration::from_secs(60)).await;
    let mut c = config(dir.path(), &stub.url);
    c.server.max_runs = 2;
    // Not the per-caller cap: every caller here is anonymous from 127.0.0.1.
    c.server.max_runs_per_subject = 0;
    let s = TestServer::start(c, &[]).await;
    let first = s.submit("Fix the login bug").await;
    let second = s.submit("Write the release notes").await;
    assert_eq!(s.state.runs().in_progress(), 2);

    let (status, headers, body) = s.post("/api/tasks", run("Add a logout button")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_rule(&body), "max_runs");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("2 runs in progress") && message.contains("server.max_runs allows (2)"),
        "names the count and the value: {message}"
    );
    assert!(message.contains("(rule: max_runs)"), "{message}");
    assert_eq!(headers["retry-after"], "5");
    assert_eq!(journaled(&s).await, 2, "the refused run was not journaled");

    // Plan mode is not held to it.
    let (status, _, body) = s
        .post("/api/tasks", json!({"description": "Add a logout button"}))
        .await;
    assert_eq!(status, 200, "{body}");

    cancel(&s, &first).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = s.post("/api/tasks", run("Add a logout button")).await;
        if status == 202 {
            break;
        }
        assert_eq!(error_rule(&body), "max_runs", "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot of a finished run was not given back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(s.state.runs().in_progress(), 2);
    cancel(&s, &second).await;
}

/// Accepted work is never dropped: runs journaled before a restart are all resumed even
/// above `server.max_runs`, they count, and a new run is refused until they finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_runs_are_never_refused_but_count_against_max_runs() {
    let dir = TempDir::new("max-runs-resume");
    let stub = Stub::start(Duration::from_secs(60)).await;
    let (store, a, _) = crate::journal_run(&dir, "Fix the login bug");
    let b = crate::journal::create_run(&store, &crate::journal::plan_of("Write the docs"));
    drop(store);
    let mut c = config(dir.path(), &stub.url);
    c.server.max_runs = 1;
    // At most max_runs (rule max_runs_per_subject_above_max_runs); not what is tested.
    c.server.max_runs_per_subject = 0;
    let s = TestServer::start(c, &[]).await;
    assert_eq!(
        s.state.runs().in_progress(),
        2,
        "both resumed, above the cap"
    );
    let (status, _, body) = s.post("/api/tasks", run("Add a logout button")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_rule(&body), "max_runs");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the server has 2 runs in progress"),
        "{body}"
    );
    cancel(&s, a.as_str()).await;
    // Still one in progress: at the cap.
    let (status, _, body) = s.post("/api/tasks", run("Add a logout button")).await;
    assert_eq!(status, 503, "{body}");
    cancel(&s, b.as_str()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = s.post("/api/tasks", run("Add a logout button")).await;
        if status == 202 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not accepted again: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Audit P9 F1: `max_runs_per_subject` exempted `anonymous`, so on an open API nothing
/// bounded one client. Anonymous runs are counted per client IP: a second one from the
/// same IP is 429 naming the IP and the value, another IP is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_runs_are_capped_per_client_ip() {
    let dir = TempDir::new("anon-per-ip");
    let stub = Stub::start(Duration::from_secs(60)).await;
    let mut c = config(dir.path(), &stub.url);
    c.server.max_runs_per_subject = 1;
    let s = TestServer::start(c, &[]).await;
    let first = s.submit("Fix the login bug").await;
    let (status, headers, body) = s.post("/api/tasks", run("Write the docs")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(error_rule(&body), "max_runs_per_subject");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("client 127.0.0.1 has 1 anonymous runs in progress")
            && message.contains("(1)"),
        "{message}"
    );
    assert_eq!(headers["retry-after"], "5");
    // Loopback is 127.0.0.0/8 on Linux: 127.0.0.2 is another client.
    #[cfg(target_os = "linux")]
    {
        let other = genesis::llm::http_client_builder()
            .unwrap()
            .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let r = other
            .post(s.url("/api/tasks"))
            .json(&run("Write the docs"))
            .send()
            .await
            .unwrap();
        let (status, _, body) = split(r).await;
        assert_eq!(status, 202, "another client IP is not limited: {body}");
        cancel(&s, body["run_id"].as_str().unwrap()).await;
    }
    cancel(&s, &first).await;
}

/// Characters of [`heavy`]'s request: with the request and task limits raised to
/// fit, planning it is seconds of synchronous work in a debug build (audit P9's
/// 5,000-character heavy.json took 124-214 ms in a release build).
const HEAVY_CHARS: usize = 50_000;

/// A Kubernetes probe's default timeout: `/health` and `/ready` must answer within it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A request of about [`HEAVY_CHARS`] characters, one distinct task per sentence.
fn heavy() -> String {
    let words = ["login", "billing", "search", "invoice", "profile", "export"];
    let mut text = String::new();
    for i in 0.. {
        if text.len() > HEAVY_CHARS - 100 {
            break;
        }
        text.push_str(&format!("Fix the {} bug in module {i}. ", words[i % 6]));
    }
    text
}

/// Audit P9 F3: heavy planning ran on the async workers, so with 32 clients posting a
/// 5,000-character request `/health` took 1.25 s. Planning runs on the blocking pool, at
/// most `server.max_planning` at once: with every slot taken by heavy planning (and more
/// requests waiting) `/health` and `/ready` still answer, well within a probe's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_while_planning_is_saturated() {
    let dir = TempDir::new("planning-saturated");
    let stub = Stub::start(Duration::ZERO).await;
    let mut c = config(dir.path(), &stub.url);
    c.server.max_planning = 2;
    c.limits.max_request_chars = HEAVY_CHARS;
    c.limits.max_tasks = 100_000;
    c.security.limits.max_request_chars = HEAVY_CHARS;
    c.security.limits.max_tasks_per_dag = 100_000;
    c.security.limits.max_body_bytes = 2 * HEAVY_CHARS;
    let s = std::sync::Arc::new(TestServer::start(c, &[]).await);
    let planners: Vec<_> = (0..6)
        .map(|_| {
            let s = std::sync::Arc::clone(&s);
            tokio::spawn(async move {
                // Each answer is a plan of some 13,000 tasks: far from instant.
                let client = genesis::llm::http_client_builder()
                    .unwrap()
                    .timeout(Duration::from_secs(300))
                    .build()
                    .unwrap();
                let r = client
                    .post(s.url("/api/tasks"))
                    .json(&json!({"description": heavy()}))
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    // Both slots taken (bounded wait; the state is polled, no request needed).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.state.planning_in_progress() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "planning never filled its 2 slots"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut probed = 0;
    while s.state.planning_in_progress() > 0 && probed < 10 {
        for path in ["/health", "/ready"] {
            let started = std::time::Instant::now();
            let answered = tokio::time::timeout(PROBE_TIMEOUT, s.get(path)).await;
            let took = started.elapsed();
            let (status, _, body) = answered.unwrap_or_else(|_| {
                panic!(
                    "{path} did not answer within {PROBE_TIMEOUT:?} while planning was saturated"
                )
            });
            assert_eq!(status, 200, "{path}: {body}");
            assert!(
                s.state.planning_in_progress() <= 2,
                "more than server.max_planning requests planned at once"
            );
            eprintln!("{path} answered in {took:?}");
        }
        probed += 1;
    }
    assert!(probed > 0, "planning ended before any probe");
    for p in planners {
        let status = p.await.unwrap();
        assert!(
            status == 200 || status == 422,
            "heavy plan answered {status}"
        );
    }
    assert_eq!(s.state.planning_in_progress(), 0);
}

/// `server.max_planning` 0 would plan nothing: refused at start, naming the key.
#[test]
fn max_planning_zero_is_refused_at_start() {
    let dir = TempDir::new("max-planning-zero");
    let mut c = config(dir.path(), "http://127.0.0.1:9/tasks");
    c.server.max_planning = 0;
    let err = genesis_server::AppState::check_config(&c, &[]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("server.max_planning is 0") && text.contains("server_limit_zero"),
        "{text}"
    );
}
