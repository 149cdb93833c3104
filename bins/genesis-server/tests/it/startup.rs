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
