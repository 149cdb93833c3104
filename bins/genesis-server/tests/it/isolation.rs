//! Clients' runs are their own (security audit D4, findings 1 to 5): with API keys
//! configured, a run is seen, listed, followed and cancelled only by the subject it was
//! journaled for; idempotency keys are per subject and bounded; the subject is the one
//! the auth layer verified; and a path that is not UTF-8 is answered with the JSON error
//! body.

use std::time::Duration;

use genesis::core::AgentId;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use crate::support::{Stub, TempDir, TestServer, config, error_rule, page_ids, split};

const ALICE: &str = "key-alice-0000000000000000";
const BOB: &str = "key-bob-11111111111111111111";

/// A server with two API keys (alice's and bob's), started over `dir`.
async fn server_with_keys(dir: &TempDir, stub: &Stub) -> TestServer {
    let mut c = config(dir.path(), &stub.url);
    c.server.api_keys = [ALICE, BOB]
        .map(|k| genesis::core::Secret::new(k.to_owned()))
        .into();
    TestServer::start(c, &[]).await
}

/// How a test request authenticates.
#[derive(Clone, Copy)]
pub(crate) enum As<'a> {
    Key(&'a str),
    Agent(&'a str, &'a str),
}

pub(crate) fn with(req: reqwest::RequestBuilder, who: As<'_>) -> reqwest::RequestBuilder {
    match who {
        As::Key(key) => req.bearer_auth(key),
        As::Agent(id, token) => req.header("x-agent-id", id).header("x-agent-token", token),
    }
}

pub(crate) async fn get(s: &TestServer, who: As<'_>, path: &str) -> (u16, Value) {
    let r = with(s.client.get(s.url(path)), who).send().await.unwrap();
    let (status, _, body) = split(r).await;
    (status, body)
}

pub(crate) async fn post(s: &TestServer, who: As<'_>, path: &str, body: Value) -> (u16, Value) {
    let r = with(s.client.post(s.url(path)), who)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, _, body) = split(r).await;
    (status, body)
}

/// Submits a run as `who`; returns its 202 body.
async fn submit(s: &TestServer, who: As<'_>, body: Value) -> Value {
    let (status, body) = post(s, who, "/api/tasks", body).await;
    assert_eq!(status, 202, "{body}");
    body
}

/// The 404 of an unknown run, for `id`.
pub(crate) fn assert_unknown_run(status: u16, body: &Value, id: &str, what: &str) {
    assert_eq!(status, 404, "{what}: {body}");
    assert_eq!(error_rule(body), "unknown_run", "{what}: {body}");
    assert_eq!(
        body["error"]["message"],
        format!("no run with id {id:?}"),
        "{what}: the answer of a missing run"
    );
}

/// Audit D4 finding 1 (`probe_isolation.sh`): bob (another API key) and an agent read,
/// listed, followed and cancelled alice's runs, and got alice's run for her idempotency
/// key. Another subject's run is now answered exactly like a missing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_subjects_runs_are_answered_as_missing() {
    let dir = TempDir::new("isolation");
    // Slow agents: alice's runs are still running when bob tries to cancel them.
    let stub = Stub::start(Duration::from_millis(400)).await;
    let s = server_with_keys(&dir, &stub).await;
    let token = s
        .state
        .auth()
        .issue(&AgentId::new("qa"), std::time::SystemTime::now())
        .unwrap();
    let (alice, bob, qa) = (As::Key(ALICE), As::Key(BOB), As::Agent("qa", &token));

    let first = submit(
        &s,
        alice,
        json!({"description": "Write unit tests for the secret payroll service of ACME", "mode": "run", "idempotency_key": "alice-1"}),
    )
    .await;
    let id = first["run_id"].as_str().unwrap().to_owned();
    let second = submit(
        &s,
        alice,
        json!({"description": "Build a SaaS business for invoices", "mode": "run"}),
    )
    .await;
    let id2 = second["run_id"].as_str().unwrap().to_owned();

    // The owner sees both.
    let (status, body) = get(&s, alice, &format!("/api/tasks/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&s, alice, "/api/tasks").await;
    assert_eq!(status, 200, "{body}");
    let mut mine = page_ids(&body);
    mine.sort();
    let mut both = vec![id.clone(), id2.clone()];
    both.sort();
    assert_eq!(mine, both);

    for (who, name) in [(bob, "bob"), (qa, "agent qa")] {
        let (status, body) = get(&s, who, &format!("/api/tasks/{id}")).await;
        assert_unknown_run(status, &body, &id, &format!("{name} GET"));
        let (status, body) = get(&s, who, &format!("/api/tasks/{id}/events")).await;
        assert_unknown_run(status, &body, &id, &format!("{name} events"));
        let (status, body) = post(&s, who, &format!("/api/tasks/{id2}/cancel"), json!({})).await;
        assert_unknown_run(status, &body, &id2, &format!("{name} cancel"));
        let (status, body) = get(&s, who, "/api/tasks").await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(
            page_ids(&body),
            Vec::<String>::new(),
            "{name} lists nothing"
        );
        // A run id of another subject is no cursor either (older clients' form).
        let (status, body) = get(&s, who, &format!("/api/tasks?cursor={id}")).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(error_rule(&body), "cursor");
    }
    // Bob's cancel did nothing: alice's run goes on.
    let (_, body) = get(&s, alice, &format!("/api/tasks/{id2}")).await;
    assert_eq!(body["cancel_requested_at_ms"], Value::Null, "{body}");

    // The same idempotency key from another subject starts another run.
    let bobs = submit(
        &s,
        bob,
        json!({"description": "something else entirely", "mode": "run", "idempotency_key": "alice-1"}),
    )
    .await;
    assert_eq!(bobs["existing"], false, "{bobs}");
    let bob_id = bobs["run_id"].as_str().unwrap().to_owned();
    assert_ne!(bob_id, id);
    // ... and each subject's retry finds its own.
    let again = submit(
        &s,
        alice,
        json!({"description": "Write unit tests for the secret payroll service of ACME", "mode": "run", "idempotency_key": "alice-1"}),
    )
    .await;
    assert_eq!(
        (again["run_id"].as_str(), again["existing"].as_bool()),
        (Some(id.as_str()), Some(true))
    );
    let again = submit(
        &s,
        bob,
        json!({"description": "something else entirely", "mode": "run", "idempotency_key": "alice-1"}),
    )
    .await;
    assert_eq!(
        (again["run_id"].as_str(), again["existing"].as_bool()),
        (Some(bob_id.as_str()), Some(true))
    );
    let (_, body) = get(&s, bob, "/api/tasks").await;
    assert_eq!(page_ids(&body), [bob_id]);
    let (_, body) = get(&s, alice, "/api/tasks?limit=1").await;
    let mut paged = page_ids(&body);
    let (_, body) = get(
        &s,
        alice,
        &format!(
            "/api/tasks?limit=5&cursor={}",
            body["next_cursor"].as_str().unwrap()
        ),
    )
    .await;
    paged.extend(page_ids(&body));
    paged.sort();
    assert_eq!(paged, both, "pages stay within the subject");

    // The owner cancels its own run.
    let (status, body) = post(&s, alice, &format!("/api/tasks/{id2}/cancel"), json!({})).await;
    assert!(status == 202 || status == 200, "{status} {body}");
}

/// Audit D4 finding 2 (`probe_subject.sh`): an API-key holder sent `x-agent-id: qa` and
/// an `x-agent-token` that does not read as text; the auth layer skipped the token and
/// took the API key, but the run was journaled for `qa`. It is now journaled for the
/// key, and agent `qa` does not see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_holder_cannot_choose_the_subject_with_an_unreadable_agent_token() {
    let dir = TempDir::new("subject");
    let stub = Stub::start(Duration::ZERO).await;
    let s = server_with_keys(&dir, &stub).await;
    let r = s
        .client
        .post(s.url("/api/tasks"))
        .bearer_auth(ALICE)
        .header("x-agent-id", "qa")
        .header("x-agent-token", HeaderValue::from_bytes(b"\xff").unwrap())
        .json(&json!({"description": "Fix the login bug", "mode": "run"}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = split(r).await;
    assert_eq!(status, 202, "{body}");
    let id = body["run_id"].as_str().unwrap().to_owned();
    let control = submit(
        &s,
        As::Key(ALICE),
        json!({"description": "Fix the login bug", "mode": "run"}),
    )
    .await;
    let subject_of = |id: &str| s.state.runs().store().get_run(id).unwrap().unwrap().subject;
    let journaled = subject_of(&id);
    assert_eq!(journaled, subject_of(control["run_id"].as_str().unwrap()));
    assert!(
        journaled.as_deref().is_some_and(|s| s.starts_with("key:")),
        "{journaled:?}"
    );
    let token = s
        .state
        .auth()
        .issue(&AgentId::new("qa"), std::time::SystemTime::now())
        .unwrap();
    let (status, body) = get(&s, As::Agent("qa", &token), &format!("/api/tasks/{id}")).await;
    assert_unknown_run(status, &body, &id, "agent qa GET");
    let (status, body) = get(&s, As::Key(ALICE), &format!("/api/tasks/{id}")).await;
    assert_eq!(status, 200, "{body}");
}

/// With the API open (no API keys: development) every caller sees every run, as before
/// runs had owners, including runs stored before subjects were journaled; with keys,
/// those (no subject) are nobody's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_api_shows_every_run_and_runs_without_a_subject_are_nobodys_with_keys() {
    let dir = TempDir::new("open");
    let stub = Stub::start(Duration::ZERO).await;
    let (store, legacy, _) = crate::journal_run(&dir, "Write the release notes");
    drop(store);
    let s = TestServer::start(config(dir.path(), &stub.url), &[]).await;
    let keyed = submit(
        &s,
        As::Key("any-key"),
        json!({"description": "Fix the login bug", "mode": "run"}),
    )
    .await;
    let keyed = keyed["run_id"].as_str().unwrap().to_owned();
    s.wait_finished(legacy.as_str(), Duration::from_secs(30))
        .await;
    s.wait_finished(&keyed, Duration::from_secs(30)).await;
    let (status, _, body) = s.get("/api/tasks").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(page_ids(&body).len(), 2, "{body}");
    let (status, body) = get(&s, As::Key("other-key"), &format!("/api/tasks/{keyed}")).await;
    assert_eq!(status, 200, "the API is open: {body}");
    s.state.begin_shutdown();
    assert_eq!(s.state.runs().drain(Duration::from_secs(5)).await, 0);
    drop(s);

    // The same data with API keys: the run without a subject is nobody's.
    let s = server_with_keys(&dir, &stub).await;
    let (status, body) = get(
        &s,
        As::Key(ALICE),
        &format!("/api/tasks/{}", legacy.as_str()),
    )
    .await;
    assert_unknown_run(status, &body, legacy.as_str(), "a run without a subject");
    let (_, body) = get(&s, As::Key(ALICE), "/api/tasks").await;
    assert_eq!(page_ids(&body), Vec::<String>::new());
}

/// Audit D4 finding 3 (`probe_body.py`): a 60 KB idempotency key in the body and a 16 KB
/// one in the header were accepted and stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_at_most_255_visible_ascii_characters() {
    let dir = TempDir::new("idem-limit");
    let stub = Stub::start(Duration::ZERO).await;
    let s = TestServer::start(config(dir.path(), &stub.url), &[]).await;
    for (mode, key, what) in [
        ("run", "k".repeat(60_000), "60000 bytes"),
        ("plan", "k".repeat(60_000), "60000 bytes"),
        ("run", "k".repeat(256), "256 bytes"),
        ("run", String::new(), "0 bytes"),
        ("run", "caf\u{e9}-1".to_owned(), "byte 4"),
        ("run", "two words".to_owned(), "byte 4"),
    ] {
        let (status, _, body) = s
            .post(
                "/api/tasks",
                json!({"description": "Fix the login bug", "mode": mode, "idempotency_key": key}),
            )
            .await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(error_rule(&body), "idempotency_key", "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(what) && message.contains("255"),
            "{message}"
        );
        assert!(message.len() < 300, "the key is not echoed: {message}");
    }
    for header in [
        HeaderValue::from_str(&"h".repeat(16_000)).unwrap(),
        HeaderValue::from_bytes(b"k\xff").unwrap(),
    ] {
        let r = s
            .client
            .post(s.url("/api/tasks"))
            .header("idempotency-key", header)
            .json(&json!({"description": "Fix the login bug", "mode": "run"}))
            .send()
            .await
            .unwrap();
        let (status, _, body) = split(r).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error_rule(&body), "idempotency_key", "{body}");
    }
    assert_eq!(
        s.state
            .runs()
            .store()
            .list_runs(None, 10, None)
            .unwrap()
            .len(),
        0
    );
    // At the limit it is accepted, and found again.
    let key = "k".repeat(255);
    let body = json!({"description": "Fix the login bug", "mode": "run", "idempotency_key": key});
    let (status, _, first) = s.post("/api/tasks", body.clone()).await;
    assert_eq!(status, 202, "{first}");
    let (status, _, again) = s.post("/api/tasks", body).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(
        (again["run_id"].clone(), again["existing"].clone()),
        (first["run_id"].clone(), json!(true))
    );
}

/// Audit D4 finding 4: a path parameter that is not UTF-8 was answered with axum's
/// plain-text 400, not the JSON error body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_is_not_utf8_is_answered_with_the_json_error_body() {
    let dir = TempDir::new("path-utf8");
    let stub = Stub::start(Duration::ZERO).await;
    let s = TestServer::start(config(dir.path(), &stub.url), &[]).await;
    for (method, path) in [
        ("GET", "/api/tasks/%ff%fe"),
        ("GET", "/api/tasks/%ff%fe/events"),
        ("POST", "/api/tasks/%ff%fe/cancel"),
    ] {
        let req = if method == "GET" {
            s.client.get(s.url(path))
        } else {
            s.client.post(s.url(path))
        };
        let (status, headers, body) = split(req.send().await.unwrap()).await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        assert_eq!(
            headers["content-type"].to_str().unwrap(),
            "application/json",
            "{method} {path}"
        );
        assert_eq!(error_rule(&body), "path", "{method} {path}: {body}");
    }
}

/// Audit S6 D2: an agent token issued (`genesis token --any-agent`) for an id shaped
/// like a client's subject (`key:<digest>`) listed, read and cancelled that client's
/// runs. No token is issued for such ids any more, and the server refuses the id itself
/// before looking at the token, naming the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_id_shaped_like_a_clients_subject_is_refused() {
    let dir = TempDir::new("subject-shaped-agent");
    let stub = Stub::start(Duration::ZERO).await;
    let s = server_with_keys(&dir, &stub).await;
    let alice = submit(
        &s,
        As::Key(ALICE),
        json!({"description": "Fix the login bug", "mode": "run"}),
    )
    .await;
    let id = alice["run_id"].as_str().unwrap().to_owned();
    let subject = s
        .state
        .runs()
        .store()
        .get_run(&id)
        .unwrap()
        .unwrap()
        .subject
        .unwrap();
    assert!(subject.starts_with("key:"), "{subject}");
    let now = std::time::SystemTime::now();
    assert!(s.state.auth().issue(&AgentId::new(&subject), now).is_err());
    let qa = s.state.auth().issue(&AgentId::new("qa"), now).unwrap();
    for path in ["/api/tasks".to_owned(), format!("/api/tasks/{id}")] {
        let (status, body) = get(&s, As::Agent(&subject, &qa), &path).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(error_rule(&body), "agent_token", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("rule: agent_id")),
            "{body}"
        );
    }
}

/// Audit S6 D5: nothing limited how many runs one key had in progress, so one tenant
/// could take every executor slot. Over `server.max_runs_per_subject` a caller's run is
/// refused with 429 (a retry of a run it already has is still answered with that run),
/// other callers are not affected, and the slot is free again when its run ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_in_progress_are_capped_per_caller() {
    let dir = TempDir::new("runs-per-subject");
    let stub = Stub::start(Duration::from_secs(30)).await;
    let mut c = config(dir.path(), &stub.url);
    c.server.api_keys = [ALICE, BOB]
        .map(|k| genesis::core::Secret::new(k.to_owned()))
        .into();
    c.server.max_runs_per_subject = 1;
    let s = TestServer::start(c, &[]).await;
    let run = |key: &'static str| json!({"description": "Fix the login bug", "mode": "run", "idempotency_key": key});
    let (status, first) = post(&s, As::Key(ALICE), "/api/tasks", run("a-1")).await;
    assert_eq!(status, 202, "{first}");
    let first = first["run_id"].as_str().unwrap().to_owned();
    let (status, body) = post(&s, As::Key(ALICE), "/api/tasks", run("a-2")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(error_rule(&body), "max_runs_per_subject");
    let (status, again) = post(&s, As::Key(ALICE), "/api/tasks", run("a-1")).await;
    assert_eq!(status, 202, "a retry of the run it has: {again}");
    assert_eq!(again["run_id"].as_str(), Some(first.as_str()));
    assert_eq!(again["existing"], true, "{again}");
    let (status, body) = post(&s, As::Key(BOB), "/api/tasks", run("b-1")).await;
    assert_eq!(status, 202, "another caller is not limited: {body}");
    // The run ends (cancelled): alice's slot is free again.
    let (status, body) = post(
        &s,
        As::Key(ALICE),
        &format!("/api/tasks/{first}/cancel"),
        json!({}),
    )
    .await;
    assert!(status == 202 || status == 200, "{status} {body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = post(&s, As::Key(ALICE), "/api/tasks", run("a-3")).await;
        if status == 202 {
            break;
        }
        assert_eq!(error_rule(&body), "max_runs_per_subject", "{body}");
        assert!(
            std::time::Instant::now() < deadline,
            "the slot of an ended run was not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
