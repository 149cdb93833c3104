//! Operator keys (`server.admin_api_keys`): their caller lists, reads, follows and
//! cancels every client's runs, while clients still see only their own; its own runs are
//! journaled for `admin:` and a digest of the key; admin keys alone keep the API closed;
//! a key in both lists, or one no request could send, is refused at start.

use std::path::PathBuf;
use std::time::Duration;

use genesis::GenesisConfig;
use genesis::core::Secret;
use genesis_server::{AppState, StartError};
use serde_json::json;

use crate::isolation::{As, assert_unknown_run, get, post, with};
use crate::support::{Stub, TempDir, TestServer, config, error_rule, page_ids};

const ALICE: &str = "key-alice-0000000000000000";
const BOB: &str = "key-bob-11111111111111111111";
const OPS: &str = "key-ops-22222222222222222222";

fn secrets(keys: &[&str]) -> Vec<Secret> {
    keys.iter().map(|k| Secret::new((*k).to_owned())).collect()
}

/// `printf '%s' KEY | sha256sum`, the first `bytes` bytes in hex.
fn digest_hex(key: &str, bytes: usize) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    d.as_ref()[..bytes]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Submits a run as `who`; returns its id.
async fn submit(s: &TestServer, who: As<'_>, description: &str) -> String {
    let (status, body) = post(
        s,
        who,
        "/api/tasks",
        json!({"description": description, "mode": "run"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    body["run_id"].as_str().unwrap().to_owned()
}

/// The event kinds of `id`'s stream as `who` follows it, to its end (the run finished).
async fn follow(s: &TestServer, who: As<'_>, id: &str) -> Vec<String> {
    let r = with(s.client.get(s.url(&format!("/api/tasks/{id}/events"))), who)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "events of {id}");
    tokio::time::timeout(Duration::from_secs(60), r.text())
        .await
        .unwrap_or_else(|_| panic!("the event stream of {id} did not end within 60 s"))
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("event:"))
        .map(|kind| kind.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_key_sees_follows_and_cancels_every_clients_runs() {
    let dir = TempDir::new("admin");
    // Slow agents (a second a task): bob's run is still running when the operator
    // cancels it, a few requests after it started.
    let stub = Stub::start(Duration::from_secs(1)).await;
    let mut c = config(dir.path(), &stub.url);
    c.server.api_keys = secrets(&[ALICE, BOB]);
    c.server.admin_api_keys = secrets(&[OPS]);
    let s = TestServer::start(c, &[]).await;
    let (alice, bob, ops) = (As::Key(ALICE), As::Key(BOB), As::Key(OPS));

    let alices = submit(&s, alice, "Write unit tests for the payroll service").await;
    let bobs = submit(&s, bob, "Build a SaaS business for invoices").await;

    // The operator lists both, and reads both.
    let (status, body) = get(&s, ops, "/api/tasks").await;
    assert_eq!(status, 200, "{body}");
    let mut listed = page_ids(&body);
    listed.sort();
    let mut both = vec![alices.clone(), bobs.clone()];
    both.sort();
    assert_eq!(listed, both, "the operator lists every client's runs");
    for id in [&alices, &bobs] {
        let (status, body) = get(&s, ops, &format!("/api/tasks/{id}")).await;
        assert_eq!(status, 200, "operator GET {id}: {body}");
        assert_eq!(body["id"], id.as_str(), "{body}");
    }
    // Verification V5 finding N7: the operator could not tell whose run it was. It is
    // shown each run's subject, in the list and on the run; a client never is.
    let (_, body) = get(&s, ops, "/api/tasks").await;
    let subject_of = |id: &str| {
        body["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| r["subject"].clone())
            .unwrap()
    };
    let alice_subject = format!("key:{}", digest_hex(ALICE, 8));
    assert_eq!(subject_of(&alices), json!(alice_subject.clone()), "{body}");
    assert_eq!(
        subject_of(&bobs),
        json!(format!("key:{}", digest_hex(BOB, 8))),
        "{body}"
    );
    let (_, body) = get(&s, ops, &format!("/api/tasks/{alices}")).await;
    assert_eq!(body["subject"], json!(alice_subject), "{body}");
    let (_, body) = get(&s, alice, &format!("/api/tasks/{alices}")).await;
    assert!(
        body.get("subject").is_none(),
        "a client is not shown it: {body}"
    );
    let (_, body) = get(&s, alice, "/api/tasks").await;
    assert!(body["runs"][0].get("subject").is_none(), "{body}");

    // ... cancels bob's run, which bob then sees cancelled ...
    let (status, body) = post(&s, ops, &format!("/api/tasks/{bobs}/cancel"), json!({})).await;
    assert!(status == 202 || status == 200, "{status} {body}");
    let (status, body) = get(&s, bob, &format!("/api/tasks/{bobs}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["cancel_requested_at_ms"].as_i64().is_some(),
        "the operator's cancel reached bob's run: {body}"
    );

    // ... and follows alice's events to the end of her run.
    let kinds = follow(&s, ops, &alices).await;
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("run_started"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("run_finished"),
        "{kinds:?}"
    );

    // The clients are still isolated from each other.
    let (status, body) = get(&s, alice, &format!("/api/tasks/{bobs}")).await;
    assert_unknown_run(status, &body, &bobs, "alice GET bob's run");
    let (status, body) = post(&s, alice, &format!("/api/tasks/{bobs}/cancel"), json!({})).await;
    assert_unknown_run(status, &body, &bobs, "alice cancels bob's run");
    let (_, body) = get(&s, alice, "/api/tasks").await;
    assert_eq!(page_ids(&body), [alices.as_str()]);

    // The operator's own run is journaled for its `admin:` subject: distinct from any
    // `key:` subject, and no client's.
    let own = submit(&s, ops, "Fix the login bug").await;
    let subject = s
        .state
        .runs()
        .store()
        .get_run(&own)
        .unwrap()
        .unwrap()
        .subject;
    assert_eq!(subject, Some(format!("admin:{}", digest_hex(OPS, 8))));
    let (status, body) = get(&s, alice, &format!("/api/tasks/{own}")).await;
    assert_unknown_run(status, &body, &own, "alice GET the operator's run");
    let (_, body) = get(&s, ops, "/api/tasks").await;
    assert_eq!(page_ids(&body).len(), 3, "{body}");
}

/// With admin keys only (no `api_keys`), the API is not open: `api_keys.is_empty()`
/// alone used to mean development mode, where anyone could call without credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_keys_alone_still_require_credentials() {
    let dir = TempDir::new("admin-only");
    let stub = Stub::start(Duration::ZERO).await;
    let mut c = config(dir.path(), &stub.url);
    c.server.admin_api_keys = secrets(&[OPS]);
    let s = TestServer::start(c, &[]).await;
    for (status, body) in [
        s.get("/api/tasks").await,
        s.post(
            "/api/tasks",
            json!({"description": "Fix the login bug", "mode": "run"}),
        )
        .await,
    ]
    .map(|(status, _, body)| (status, body))
    {
        assert_eq!(status, 401, "{body}");
        assert_eq!(error_rule(&body), "api_key");
    }
    let (status, body) = get(&s, As::Key(ALICE), "/api/tasks").await;
    assert_eq!((status, error_rule(&body)), (401, "api_key".to_owned()));
    let (status, body) = get(&s, As::Key(OPS), "/api/tasks").await;
    assert_eq!(status, 200, "{body}");
}

/// A start that must fail: the error, and no data directory was created.
fn refused(api_keys: &[&str], admin_api_keys: &[&str]) -> String {
    let dir = TempDir::new("admin-cfg");
    let mut c = GenesisConfig::default();
    c.security.auth.environment = genesis::security::Environment::Dev;
    c.server.data_dir = dir.path().join("data");
    c.server.api_keys = secrets(api_keys);
    c.server.admin_api_keys = secrets(admin_api_keys);
    let err = AppState::from_config(c, &[], None).unwrap_err();
    assert!(
        !dir.path().join("data").exists(),
        "the data directory was created: {err}"
    );
    let message = err.to_string();
    for key in api_keys
        .iter()
        .chain(admin_api_keys)
        .filter(|k| k.len() > 3)
    {
        assert!(!message.contains(key), "the key is never named: {message}");
    }
    message
}

#[test]
fn a_key_in_both_lists_is_refused_at_start_by_its_fingerprint() {
    let message = refused(&[ALICE, OPS], &[OPS]);
    assert!(message.contains("rule: admin_key_overlap"), "{message}");
    assert!(
        message.contains(&digest_hex(OPS, 6)),
        "names the fingerprint: {message}"
    );
    assert!(
        message.contains("server.api_keys") && message.contains("server.admin_api_keys"),
        "{message}"
    );
}

/// Keys of either list that no request could send as written are refused, naming the
/// list and the position: an empty key matched an empty `x-api-key` header.
#[test]
fn keys_no_request_could_send_are_refused_naming_list_and_position() {
    for (api, admin, list, position) in [
        (vec![ALICE, ""], vec![], "server.api_keys", 2),
        (vec![ALICE], vec![OPS, "   "], "server.admin_api_keys", 2),
        (vec![" key-padded-1"], vec![], "server.api_keys", 1),
        (vec![], vec!["key-tab-end\t"], "server.admin_api_keys", 1),
        (vec![], vec!["clé-ops-1"], "server.admin_api_keys", 1),
    ] {
        let message = refused(&api, &admin);
        assert!(message.contains("rule: api_key_invalid"), "{message}");
        assert!(
            message.contains(&format!("{list} entry {position} ")),
            "{list} {position}: {message}"
        );
    }
}

/// Production starts with operator keys alone, set through their environment variable
/// (the API requires credentials either way).
#[test]
fn production_starts_with_admin_keys_from_the_environment() {
    let dir = TempDir::new("admin-prod");
    let env: Vec<(String, String)> = vec![
        (
            "GENESIS_SERVER__ADMIN_API_KEYS".into(),
            format!(r#"["{OPS}"]"#),
        ),
        (
            "GENESIS_AUTH_SECRET".into(),
            "0123456789abcdef0123456789abcdef0123456789abcdef".into(),
        ),
    ];
    let mut c = GenesisConfig::load::<PathBuf>(&[], env.iter().cloned()).unwrap();
    assert_eq!(c.server.admin_api_keys.len(), 1);
    assert!(c.server.api_keys.is_empty());
    c.server.data_dir = dir.path().join("data");
    c.security.auth.environment = genesis::security::Environment::Production;
    AppState::from_config(c.clone(), &env, None).unwrap();
    c.server.admin_api_keys.clear();
    let err = AppState::from_config(c, &env, None).unwrap_err();
    assert!(matches!(err, StartError::NoApiKeys { .. }), "{err}");
}
