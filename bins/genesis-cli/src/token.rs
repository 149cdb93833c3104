//! `genesis token`: issue an agent token for an agent that calls the server back.
//!
//! The token is signed with the master secret from `GENESIS_AUTH_SECRET` and the
//! configured `[security.auth]` key id, exactly as the server's own
//! [`AgentAuthenticator`] signs: the server accepts it until it expires. Nothing is
//! weakened: the secret must be given (a `dev` server's throw-away secret is not known
//! outside it), and `--ttl` may shorten `security.auth.token_ttl`, never extend it.

use std::path::Path;
use std::time::{Duration, SystemTime};

use clap::Args;
use genesis::core::{AgentId, Secret};
use genesis::security::AgentAuthenticator;

use crate::setup::{Failure, load_config, one_line};

/// Arguments of `genesis token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// The agent the token is for (its id in the catalogue).
    #[arg(long)]
    agent: String,
    /// Lifetime (`90s`, `15m`, `1h`, `1d`); at most `security.auth.token_ttl`, which is
    /// the default.
    #[arg(long)]
    ttl: Option<String>,
    /// Issue the token even when the agent is not in the agent catalogue
    /// (`routing.agents_file`, else the built-in one): for a caller that authenticates as
    /// an agent id of its own.
    #[arg(long)]
    any_agent: bool,
}

/// `genesis token`: prints the token on stdout.
pub(crate) fn token(config: &[&Path], args: TokenArgs) -> Result<(), Failure> {
    let config = load_config(config)?;
    let registry = match &config.routing.agents_file {
        Some(path) => genesis::read_agents(path)?,
        None => genesis::halo::AgentRegistry::from_toml_str(genesis::defaults::AGENTS_TOML)
            .map_err(|e| Failure::internal(one_line(&e)))?,
    };
    let known: Vec<&str> = registry.iter().map(|p| p.id.as_str()).collect();
    let secret = std::env::var("GENESIS_AUTH_SECRET").ok();
    let text = issue(
        &config.security.auth,
        secret,
        &args,
        &known,
        SystemTime::now(),
    )?;
    crate::commands::emit(&text)
}

/// Issues the token for `args` with `secret` (the value of `GENESIS_AUTH_SECRET`).
fn issue(
    auth: &genesis::security::AuthConfig,
    secret: Option<String>,
    args: &TokenArgs,
    known: &[&str],
    now: SystemTime,
) -> Result<String, Failure> {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return Err(Failure::rejected(
            "GENESIS_AUTH_SECRET is not set: tokens are signed with the server's master secret, \
             so set it to the value the server runs with (rule: auth_secret_required)",
        ));
    };
    let agent = args.agent.trim();
    if agent.is_empty() {
        return Err(Failure::rejected(
            "--agent is empty: name the agent the token is for (rule: agent_required)",
        ));
    }
    // It travels in the x-agent-id header and becomes the caller's subject: the
    // server checks the same rule.
    if let Some(reason) = genesis::security::agent_id_problem(agent) {
        return Err(Failure::rejected(format!(
            "--agent {agent:?} cannot hold a token: {reason} (rule: agent_id)"
        )));
    }
    if !args.any_agent && !known.contains(&agent) {
        return Err(Failure::rejected(format!(
            "--agent {agent:?} is not in the agent catalogue ({} agents): check the id, or \
             pass --any-agent for a caller with an id of its own (rule: unknown_agent)",
            known.len()
        )));
    }
    let ttl = match &args.ttl {
        Some(text) => parse_duration(text).ok_or_else(|| {
            Failure::rejected(format!(
                "--ttl {text:?} is not a duration such as 90s, 15m, 1h or 1d (rule: token_ttl)"
            ))
        })?,
        None => auth.token_ttl,
    };
    if ttl.is_zero() || ttl > auth.token_ttl {
        return Err(Failure::rejected(format!(
            "--ttl {}s must be between 1s and security.auth.token_ttl ({}s) (rule: token_ttl)",
            ttl.as_secs(),
            auth.token_ttl.as_secs()
        )));
    }
    let authenticator = AgentAuthenticator::new(auth, Some(Secret::new(secret)))
        .map_err(|e| Failure::rejected(one_line(&e)))?;
    authenticator
        .issue_with_ttl(&AgentId::new(agent), now, ttl)
        .map_err(|e| Failure::internal(one_line(&e)))
}

/// `90s`, `15m`, `1h`, `2d` or a bare number of seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(seconds).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use genesis::security::{AuthConfig, Environment};

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
    const KNOWN: &[&str] = &["qa", "writer"];

    fn args(agent: &str, ttl: Option<&str>) -> TokenArgs {
        TokenArgs {
            agent: agent.to_owned(),
            ttl: ttl.map(str::to_owned),
            any_agent: false,
        }
    }

    /// A token the command issues verifies on a server holding the same secret and
    /// `[security.auth]`, for that agent only, and expires after `--ttl`.
    #[test]
    fn issued_tokens_verify_on_the_server_until_they_expire() {
        let auth = AuthConfig::for_environment(Environment::Production);
        let now = SystemTime::now();
        let token = issue(
            &auth,
            Some(SECRET.into()),
            &args("qa", Some("10m")),
            KNOWN,
            now,
        )
        .unwrap();
        let server = AgentAuthenticator::new(&auth, Some(Secret::new(SECRET))).unwrap();
        let claims = server.verify(&token, &AgentId::new("qa"), now).unwrap();
        assert_eq!(claims.agent.as_str(), "qa");
        assert!(server.verify(&token, &AgentId::new("writer"), now).is_err());
        let later = now + Duration::from_secs(11 * 60);
        assert!(server.verify(&token, &AgentId::new("qa"), later).is_err());
        let other =
            AgentAuthenticator::new(&auth, Some(Secret::new(format!("{SECRET}x")))).unwrap();
        assert!(other.verify(&token, &AgentId::new("qa"), now).is_err());
    }

    #[test]
    fn no_secret_a_longer_ttl_or_a_short_secret_is_refused_naming_the_rule() {
        let auth = AuthConfig::for_environment(Environment::Dev);
        let now = SystemTime::now();
        let e = issue(&auth, None, &args("qa", None), KNOWN, now).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("GENESIS_AUTH_SECRET"), "{}", e.message);
        let e = issue(
            &auth,
            Some(SECRET.into()),
            &args("qa", Some("2h")),
            KNOWN,
            now,
        )
        .unwrap_err();
        assert!(
            e.message.contains("security.auth.token_ttl"),
            "{}",
            e.message
        );
        let e = issue(
            &auth,
            Some(SECRET.into()),
            &args("qa", Some("soon")),
            KNOWN,
            now,
        )
        .unwrap_err();
        assert!(e.message.contains("rule: token_ttl"), "{}", e.message);
        let e = issue(&auth, Some("short".into()), &args("qa", None), KNOWN, now).unwrap_err();
        assert!(e.message.contains("min_secret_bytes"), "{}", e.message);
        let e = issue(&auth, Some(SECRET.into()), &args(" ", None), KNOWN, now).unwrap_err();
        assert_eq!(e.code, 2);
    }

    /// Audit D5 finding 11: tokens were issued for `nobody` and `q a`, agents no
    /// catalogue has and an id no header can carry.
    #[test]
    fn an_agent_outside_the_catalogue_or_an_unsendable_id_is_refused_naming_the_rule() {
        let auth = AuthConfig::for_environment(Environment::Production);
        let now = SystemTime::now();
        let e = issue(
            &auth,
            Some(SECRET.into()),
            &args("nobody", None),
            KNOWN,
            now,
        )
        .unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message.contains("rule: unknown_agent") && e.message.contains("\"nobody\""),
            "{}",
            e.message
        );
        let e = issue(&auth, Some(SECRET.into()), &args("q a", None), KNOWN, now).unwrap_err();
        assert!(e.message.contains("rule: agent_id"), "{}", e.message);
        let mut own = args("ci-bot", None);
        own.any_agent = true;
        let token = issue(&auth, Some(SECRET.into()), &own, KNOWN, now).unwrap();
        let server = AgentAuthenticator::new(&auth, Some(Secret::new(SECRET))).unwrap();
        assert!(server.verify(&token, &AgentId::new("ci-bot"), now).is_ok());
        own.agent = "c i".into();
        let e = issue(&auth, Some(SECRET.into()), &own, KNOWN, now).unwrap_err();
        assert!(
            e.message.contains("rule: agent_id"),
            "--any-agent still needs a sendable id"
        );
        // Audit S6 D2: an id shaped like an API key's subject read that client's runs.
        for reserved in ["key:01f9350b55022160", "admin:abc", "anonymous"] {
            own.agent = reserved.into();
            let e = issue(&auth, Some(SECRET.into()), &own, KNOWN, now).unwrap_err();
            assert_eq!(e.code, 2, "{}", e.message);
            assert!(e.message.contains("rule: agent_id"), "{}", e.message);
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3_600)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }
}
