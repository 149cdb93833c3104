//! Start-up refusals name the variable and the rule, and come before the run store is
//! opened: a server that cannot start leaves no data directory or database behind.

use std::path::{Path, PathBuf};

use genesis::GenesisConfig;
use genesis_server::{AppState, StartError};

use crate::support::TempDir;

const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// Environment for loading from outside the checkout root, with the store in `data`
/// (which does not exist yet), plus `extra`.
fn env(data: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let dir = config_dir();
    let mut v: Vec<(String, String)> = vec![
        (
            "GENESIS_SERVER__DATA_DIR".into(),
            data.display().to_string(),
        ),
        (
            "GENESIS_ROUTING__AGENTS_FILE".into(),
            dir.join("agents.toml").display().to_string(),
        ),
        (
            "GENESIS_ROUTING__RULES_FILE".into(),
            dir.join("routing_rules.toml").display().to_string(),
        ),
        (
            "GENESIS_MODELS__CATALOG_FILE".into(),
            dir.join("models.toml").display().to_string(),
        ),
        (
            "GENESIS_FLAGS__FILE".into(),
            dir.join("feature_flags.json").display().to_string(),
        ),
    ];
    v.extend(
        extra
            .iter()
            .map(|(k, val)| ((*k).to_owned(), (*val).to_owned())),
    );
    v
}

fn start(overlay: &str, env: &[(String, String)]) -> Result<(), StartError> {
    let dir = config_dir();
    let config = GenesisConfig::load(
        &[dir.join("genesis.toml"), dir.join(overlay)],
        env.iter().cloned(),
    )
    .unwrap();
    AppState::from_config(config, env, None).map(|_| ())
}

#[test]
fn production_without_a_secret_names_the_variable_and_creates_no_database() {
    let tmp = TempDir::new("no-secret");
    let data = tmp.path().join("data");
    let e = env(&data, &[("GENESIS_SERVER__API_KEYS", r#"["prod-key-1"]"#)]);
    let err = start("production.toml", &e).unwrap_err().to_string();
    assert!(err.contains("GENESIS_AUTH_SECRET"), "{err}");
    assert!(err.contains("rule: auth_secret_required"), "{err}");
    assert!(!data.exists(), "the data directory was created: {err}");
    // Staging too.
    let err = start("staging.toml", &e).unwrap_err().to_string();
    assert!(err.contains("GENESIS_AUTH_SECRET"), "{err}");
    assert!(!data.exists());
}

#[test]
fn production_without_api_keys_names_the_variable_and_creates_no_database() {
    let tmp = TempDir::new("no-keys");
    let data = tmp.path().join("data");
    let e = env(&data, &[("GENESIS_AUTH_SECRET", SECRET)]);
    let err = start("production.toml", &e).unwrap_err().to_string();
    assert!(err.contains("GENESIS_SERVER__API_KEYS"), "{err}");
    assert!(err.contains("rule: api_keys_required"), "{err}");
    assert!(!data.exists(), "the data directory was created: {err}");
}

/// LLM agents on, an OpenAI provider at the official API and no key anywhere: the
/// server refuses to start, naming the key, instead of failing every call later.
#[test]
fn llm_agents_without_an_api_key_refuse_to_start_naming_the_key() {
    let tmp = TempDir::new("no-llm-key");
    let data = tmp.path().join("data");
    let overlay = tmp.path().join("llm.toml");
    std::fs::write(
        &overlay,
        "[llm]\nagents = true\n[[llm.providers]]\nkind = \"openai\"\nmodel = \"gpt-4o-mini\"\n",
    )
    .unwrap();
    let overlay = overlay.display().to_string();
    let e = env(&data, &[("OPENAI_API_KEY", "")]);
    let err = start(&overlay, &e).unwrap_err().to_string();
    for part in [
        "OPENAI_API_KEY",
        "https://api.openai.com/v1",
        "rule: api_key_required",
    ] {
        assert!(err.contains(part), "{err}");
    }
    assert!(!data.exists());
    // With the key from the environment it starts.
    let e = env(&data, &[("OPENAI_API_KEY", "sk-test")]);
    start(&overlay, &e).unwrap();
}

/// Verification V10 defect 5: config/production.toml binds loopback behind trusted
/// proxies; switched to `dev` with no keys it served an open API to every client those
/// proxies forward. Refused like a public bind, unless `server.allow_open_api`.
#[test]
fn an_open_api_behind_trusted_proxies_is_refused_unless_allowed() {
    let tmp = TempDir::new("open-behind-proxy");
    let data = tmp.path().join("data");
    let e = env(
        &data,
        &[
            ("GENESIS_AUTH_SECRET", "0123456789abcdef0123456789abcdef"),
            ("GENESIS_SECURITY__AUTH__ENVIRONMENT", "dev"),
        ],
    );
    let err = start("production.toml", &e).unwrap_err().to_string();
    assert!(
        err.contains("trusted_proxies") && err.contains("rule: open_api"),
        "{err}"
    );
    assert!(!data.exists(), "the data directory was created: {err}");
    let mut allowed = e.clone();
    allowed.push(("GENESIS_SERVER__ALLOW_OPEN_API".into(), "true".into()));
    start("production.toml", &allowed).unwrap();
}

/// Verification V10 defect 6: `max_runs = 8` alone was refused because the per-caller
/// default (16) was above it; the default now follows a smaller `max_runs`, while an
/// explicit per-caller limit above `max_runs` is still refused.
#[test]
fn a_small_max_runs_lowers_the_per_caller_default_but_not_an_explicit_limit() {
    let tmp = TempDir::new("small-max-runs");
    let data = tmp.path().join("data");
    start(
        "staging.toml",
        &env(
            &data,
            &[
                ("GENESIS_AUTH_SECRET", "0123456789abcdef0123456789abcdef"),
                ("GENESIS_SERVER__API_KEYS", r#"["stage-key-1"]"#),
                ("GENESIS_SERVER__MAX_RUNS", "8"),
            ],
        ),
    )
    .unwrap();
    let err = start(
        "staging.toml",
        &env(
            &data,
            &[
                ("GENESIS_AUTH_SECRET", "0123456789abcdef0123456789abcdef"),
                ("GENESIS_SERVER__API_KEYS", r#"["stage-key-1"]"#),
                ("GENESIS_SERVER__MAX_RUNS", "8"),
                ("GENESIS_SERVER__MAX_RUNS_PER_SUBJECT", "12"),
            ],
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("max_runs_per_subject 12") && err.contains("max_runs 8"),
        "{err}"
    );
}

/// Verification V10 defect 10: a backend for an unknown agent (an error of the
/// orchestrator's build) stopped the start only after the data directory and its lock
/// were made. `check_config` (what the binary runs before taking the lock) builds it.
#[test]
fn a_bad_backend_is_found_before_the_data_directory_is_made() {
    let tmp = TempDir::new("check-backend");
    let data = tmp.path().join("data");
    let overlay = tmp.path().join("backends.toml");
    std::fs::write(
        &overlay,
        "[backends.coderr]\ntype = \"http\"\nurl = \"http://127.0.0.1:9/task\"\n",
    )
    .unwrap();
    let config = GenesisConfig::load(
        &[config_dir().join("genesis.toml"), overlay],
        env(&data, &[]),
    )
    .unwrap();
    let err = AppState::check_config(&config, &env(&data, &[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("coderr"), "{err}");
    assert!(!data.exists(), "the data directory was created: {err}");
}
