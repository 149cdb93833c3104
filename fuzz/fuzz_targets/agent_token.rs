//! Fuzzes agent-token parsing and verification: no input may verify or panic.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use genesis_core::{AgentId, Secret};
use genesis_security::{AgentAuthenticator, AuthConfig};
use libfuzzer_sys::fuzz_target;

static AUTH: LazyLock<AgentAuthenticator> = LazyLock::new(|| {
    AgentAuthenticator::new(
        &AuthConfig::default(),
        Some(Secret::new("fuzzing-master-secret-0123456789abcdef")),
    )
    .expect("valid config")
});

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    // A forged token must never verify (the fuzzer does not know the secret).
    assert!(AUTH.verify(&token, &AgentId::new("fuzz"), now).is_err());
    let _ = AUTH.revoke(&token, now);
});
