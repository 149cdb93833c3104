//! The shipped configuration files parse, and production refuses to start without the
//! secrets it documents (which then come from the environment).

use std::path::PathBuf;

use genesis::GenesisConfig;
use genesis_server::{AppState, StartError};

use crate::support::TempDir;

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// Environment for loading from outside the checkout root: catalogue paths made
/// absolute, data in a temp dir, plus `extra`.
fn env(data: &TempDir, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let dir = config_dir();
    let mut v: Vec<(String, String)> = vec![
        (
            "GENESIS_SERVER__DATA_DIR".into(),
            data.path().display().to_string(),
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

fn load(overlay: &str, env: &[(String, String)]) -> GenesisConfig {
    let dir = config_dir();
    GenesisConfig::load(
        &[dir.join("genesis.toml"), dir.join(overlay)],
        env.iter().cloned(),
    )
    .unwrap()
}

#[test]
fn staging_and_production_parse_with_their_limits() {
    let data = TempDir::new("cfg");
    let p = load("production.toml", &env(&data, &[]));
    assert_eq!(
        p.security.auth.environment,
        genesis::security::Environment::Production
    );
    assert_eq!(p.budget.per_day.unwrap().as_f64(), 50.0);
    assert_eq!(p.executor.max_concurrency, 100);
    assert!(p.server.api_keys.is_empty(), "keys never live in the file");
    let s = load("staging.toml", &env(&data, &[]));
    assert_eq!(
        s.security.auth.environment,
        genesis::security::Environment::Staging
    );
    assert!(s.budget.per_day.unwrap().as_f64() < 50.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_needs_api_keys_and_a_secret_from_the_environment() {
    let data = TempDir::new("prod");
    // No keys: refused, naming the rule.
    let e = env(
        &data,
        &[(
            "GENESIS_AUTH_SECRET",
            "0123456789abcdef0123456789abcdef0123456789abcdef",
        )],
    );
    let err = AppState::from_config(load("production.toml", &e), &e, None).unwrap_err();
    assert!(matches!(err, StartError::NoApiKeys { .. }), "{err}");
    assert!(err.to_string().contains("api_keys"), "{err}");
    // No master secret: refused.
    let e = env(&data, &[("GENESIS_SERVER__API_KEYS", r#"["prod-key-1"]"#)]);
    let err = AppState::from_config(load("production.toml", &e), &e, None).unwrap_err();
    assert!(err.to_string().to_lowercase().contains("secret"), "{err}");
    // Both from the environment, as documented: starts.
    let e = env(
        &data,
        &[
            ("GENESIS_SERVER__API_KEYS", r#"["prod-key-1"]"#),
            (
                "GENESIS_AUTH_SECRET",
                "0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
        ],
    );
    let c = load("production.toml", &e);
    assert_eq!(c.server.api_keys.len(), 1);
    AppState::from_config(c, &e, None).unwrap();
}

#[test]
fn unknown_keys_fail_naming_the_key() {
    let data = TempDir::new("badcfg");
    let bad = data.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nbindd = \"127.0.0.1:1\"\n").unwrap();
    let err = GenesisConfig::load(&[bad], Vec::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("bindd"), "{err}");
    let err = GenesisConfig::load::<PathBuf>(
        &[],
        vec![("GENESIS_SERVER__MAX_IN_FLIGHT".into(), "lots".into())],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("max_in_flight"), "{err}");
}
