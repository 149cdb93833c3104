//! Agent authentication: HMAC-SHA256 tokens bound to an agent id, with expiry, key ids for
//! rotation, revocation and lockout after repeated failures.
//!
//! Lockout only stops guessing: after `max_failures` unverified tries for one agent id,
//! further tries whose signature does not verify are refused for `lockout`, but a
//! correctly signed token still passes, so nobody can lock a legitimate agent out by
//! sending garbage under its id.
//!
//! Token format: `gat1.<key id>.<agent id, base64url>.<issued at>.<expires at>.<token id>.<mac>`
//! where the MAC (base64url) covers everything before it. Each key id has its own key,
//! derived from a master secret as `HMAC-SHA256(master, "genesis-agent-token/v1/" + key id)`.
//! Verification uses `ring::hmac::verify`, which compares in constant time.
//!
//! Time is always passed in (`now: SystemTime`), so tests control expiry and cool-downs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use genesis_core::{AgentId, Secret};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::SecurityError;

const PREFIX: &str = "gat1";
const MAX_TOKEN_LEN: usize = 1024;

/// Deployment environment; decides whether a missing master secret is fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    /// A secret is required.
    Production,
    /// A secret is required.
    Staging,
    /// A random secret is generated when none is given (with a loud warning).
    Dev,
}

impl Environment {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Staging => "staging",
            Environment::Dev => "dev",
        }
    }
}

/// Agent-authentication settings. The master secret is not part of it: the facade reads it
/// from the environment or a secrets file and passes it to [`AgentAuthenticator::new`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Deployment environment. Default `production` (fail closed: no secret, no start).
    pub environment: Environment,
    /// Token lifetime. Default 1 h.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Failed verifications (within `failure_window`) that lock an agent out. Default 5.
    pub max_failures: u32,
    /// How long a lockout lasts. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
    /// Failures older than this are forgotten. Default 15 min.
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// Key id of the initial signing key. Default `k1`.
    pub key_id: String,
    /// Minimum master-secret length in bytes. Default 32.
    pub min_secret_bytes: usize,
    /// Agents whose failures are tracked at most (a hard memory bound). When the table is
    /// full, the agent whose last failure is the oldest is forgotten (with its count and
    /// any lockout) to make room. Default 100,000.
    pub max_tracked_agents: usize,
    /// Revoked tokens, per agent: every token issued to the agent before the time
    /// (RFC 3339, e.g. `"2026-11-24T19:00:00Z"`) is refused as revoked (401
    /// `agent_token`). For a leaked token in a deployed server: add the agent with the
    /// current time and restart; tokens issued afterwards (`genesis token --agent`)
    /// work. Default: none.
    pub revoked_before: BTreeMap<String, Timestamp>,
}

/// A point in time in configuration: RFC 3339 in UTC (`"2026-11-24T19:00:00Z"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(#[serde(with = "humantime_serde")] pub SystemTime);

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            environment: Environment::Production,
            token_ttl: Duration::from_secs(3_600),
            max_failures: 5,
            lockout: Duration::from_secs(300),
            failure_window: Duration::from_secs(900),
            key_id: "k1".to_owned(),
            min_secret_bytes: 32,
            max_tracked_agents: 100_000,
            revoked_before: BTreeMap::new(),
        }
    }
}

impl AuthConfig {
    /// A config for `environment` with the other defaults.
    pub fn for_environment(environment: Environment) -> Self {
        AuthConfig {
            environment,
            ..AuthConfig::default()
        }
    }

    /// Decides the master secret: the given one if long enough; in `dev` without one, a
    /// freshly generated random secret (logged as a loud warning: tokens will not survive
    /// a restart).
    ///
    /// # Errors
    /// [`SecurityError::MissingSecret`] in production or staging without a secret,
    /// [`SecurityError::SecretTooShort`] for a short one, [`SecurityError::Random`] if the
    /// system random generator fails.
    pub fn resolve_secret(&self, secret: Option<Secret>) -> Result<Secret, SecurityError> {
        match secret.filter(|s| !s.is_empty()) {
            Some(secret) => {
                let len = secret.expose().len();
                if len < self.min_secret_bytes {
                    return Err(SecurityError::SecretTooShort {
                        len,
                        min: self.min_secret_bytes,
                    });
                }
                Ok(secret)
            }
            None if self.environment == Environment::Dev => {
                let mut bytes = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut bytes)
                    .map_err(|_| SecurityError::Random)?;
                tracing::warn!(
                    environment = "dev",
                    "!!! NO AUTH MASTER SECRET CONFIGURED: GENERATED A RANDOM DEV SECRET. \
                     AGENT TOKENS WILL NOT SURVIVE A RESTART OR WORK ACROSS PROCESSES. \
                     NEVER RUN LIKE THIS IN STAGING OR PRODUCTION !!!"
                );
                Ok(Secret::new(hex(&bytes)))
            }
            None => Err(SecurityError::MissingSecret {
                environment: self.environment.as_str(),
            }),
        }
    }

    fn validate(&self) -> Result<(), SecurityError> {
        if self.max_failures == 0 {
            return Err(SecurityError::InvalidConfig {
                field: "auth.max_failures",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if self.token_ttl.is_zero() {
            return Err(SecurityError::InvalidConfig {
                field: "auth.token_ttl",
                value: "0s".into(),
                reason: "must be positive",
            });
        }
        if let Some(agent) = self.revoked_before.keys().find(|a| a.trim().is_empty()) {
            return Err(SecurityError::InvalidConfig {
                field: "auth.revoked_before",
                value: format!("{agent:?}"),
                reason: "an agent id must not be empty",
            });
        }
        validate_key_id(&self.key_id)
    }
}

fn validate_key_id(key_id: &str) -> Result<(), SecurityError> {
    let ok = !key_id.is_empty()
        && key_id.len() <= 32
        && key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SecurityError::InvalidConfig {
            field: "auth.key_id",
            value: key_id.to_owned(),
            reason: "1-32 characters of [A-Za-z0-9_-]",
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Longest agent id a token is issued for or checked against, in bytes.
pub const MAX_AGENT_ID_BYTES: usize = 128;

/// Why `id` cannot be an agent token's id, or `None` when it can. An id must be
/// 1..=[`MAX_AGENT_ID_BYTES`] bytes of visible ASCII (it travels in the `x-agent-id`
/// header) without `:`, and must not be `anonymous`: a verified agent's id becomes the
/// caller's subject, and `key:…`, `admin:…` and `anonymous` are the subjects of API-key
/// callers and of callers without credentials, whose runs an agent must not reach.
pub fn agent_id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("it is empty")
    } else if id.len() > MAX_AGENT_ID_BYTES {
        Some("it is longer than 128 bytes")
    } else if !id.bytes().all(|b| b.is_ascii_graphic()) {
        Some("it has a character outside visible ASCII (a space, say)")
    } else if id.contains(':') {
        Some("it contains ':', which only the subjects of API keys (key:, admin:) have")
    } else if id == "anonymous" {
        Some("anonymous is the subject of requests without credentials")
    } else {
        None
    }
}

/// [`SecurityError::InvalidAgentId`] for `id` when [`agent_id_problem`] finds one.
fn check_agent_id(id: &AgentId) -> Result<(), SecurityError> {
    match agent_id_problem(id.as_str()) {
        None => Ok(()),
        Some(reason) => Err(SecurityError::InvalidAgentId {
            agent: id.as_str().chars().take(64).collect(),
            reason,
        }),
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenClaims {
    /// The agent it was issued to.
    pub agent: AgentId,
    /// The signing key's id.
    pub key_id: String,
    /// Issue time, unix seconds.
    pub issued_at: u64,
    /// Expiry, unix seconds.
    pub expires_at: u64,
    /// Random id, used for revocation.
    pub token_id: String,
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    last: u64,
    locked_until: u64,
    /// The stamp of this entry's item in [`FailureTable::order`].
    stamp: u64,
}

/// Failure counts per agent id, at most `max_tracked_agents` of them.
///
/// `order` lists the tracked agents by their last failure, oldest first. Each failure
/// pushes a new `(agent, stamp)` item and records the stamp in the entry, so an older
/// item of the same agent (or one of an agent forgotten on success) is stale: it is
/// skipped when evicting and dropped when the queue is compacted. Every failure pushes
/// one item and every item is popped or compacted away once, so eviction costs amortised
/// O(1) per failure, never a sweep of the table.
#[derive(Debug, Default)]
struct FailureTable {
    entries: HashMap<AgentId, Failures>,
    order: VecDeque<(AgentId, u64)>,
    next_stamp: u64,
}

impl FailureTable {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&self, agent: &AgentId) -> Option<&Failures> {
        self.entries.get(agent)
    }

    fn remove(&mut self, agent: &AgentId) {
        // Its queue item goes stale; compaction drops it.
        self.entries.remove(agent);
    }

    fn is_live(&self, agent: &AgentId, stamp: u64) -> bool {
        self.entries.get(agent).is_some_and(|f| f.stamp == stamp)
    }

    /// Forgets the agents with the oldest last failure until one more fits under `cap`,
    /// never one locked out at `now`: eviction must not lift a lockout (a guesser could
    /// otherwise fail under `cap` fresh ids to reopen guessing). Locked-out entries met
    /// on the way go to the back of the order. Looks at most [`EVICTION_LOOK`] live
    /// entries; false when that found none to forget (the table is all lockouts).
    fn make_room(&mut self, cap: usize, now: u64) -> bool {
        let mut looked = 0usize;
        while self.entries.len() >= cap.max(1) {
            if looked == EVICTION_LOOK {
                return false;
            }
            let Some((agent, stamp)) = self.order.pop_front() else {
                return false;
            };
            if !self.is_live(&agent, stamp) {
                continue;
            }
            looked += 1;
            if self
                .entries
                .get(&agent)
                .is_some_and(|f| f.locked_until > now)
            {
                self.order.push_back((agent, stamp));
                continue;
            }
            self.entries.remove(&agent);
            tracing::debug!(agent = %agent, "auth failure table full: forgot the oldest failure");
        }
        true
    }

    /// The entry of `agent` (created empty if needed, evicting to stay within `cap`),
    /// marked as the most recently failed; `None` when the table is full of lockouts
    /// (the failure then goes uncounted: see [`FailureTable::make_room`]).
    fn touch(&mut self, agent: &AgentId, cap: usize, now: u64) -> Option<&mut Failures> {
        if !self.entries.contains_key(agent) && !self.make_room(cap, now) {
            return None;
        }
        let stamp = self.next_stamp;
        self.next_stamp = self.next_stamp.wrapping_add(1);
        // Stale items are at most as many as live ones (plus slack): compacting costs
        // O(live), paid for by at least as many pushes since the last compaction.
        if self.order.len() >= 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(a, s)| entries.get(a).is_some_and(|f| f.stamp == *s));
        }
        self.order.push_back((agent.clone(), stamp));
        let f = self.entries.entry(agent.clone()).or_default();
        f.stamp = stamp;
        Some(f)
    }
}

/// Most live entries [`FailureTable::make_room`] looks at for one new agent: bounds the
/// work of a failure when the oldest entries are all locked out.
const EVICTION_LOOK: usize = 64;

#[derive(Debug, Default)]
struct State {
    failures: FailureTable,
    /// token id → expiry (kept until the token would have expired anyway).
    revoked: HashMap<String, u64>,
    /// agent → tokens issued before this time are revoked.
    revoked_before: HashMap<AgentId, u64>,
}

/// The fields of a token whose signature verified.
struct SignedToken<'t> {
    key_id: &'t str,
    agent_b64: &'t str,
    issued: &'t str,
    expires: &'t str,
    token_id: &'t str,
}

struct Keys {
    current: String,
    keys: HashMap<String, hmac::Key>,
}

/// Issues and verifies agent tokens. Share it behind an `Arc`; all methods take `&self`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use genesis_core::{AgentId, Secret};
/// use genesis_security::{AgentAuthenticator, AuthConfig, Environment, SecurityError};
///
/// let config = AuthConfig::for_environment(Environment::Production);
/// assert!(matches!(
///     AgentAuthenticator::new(&config, None),
///     Err(SecurityError::MissingSecret { .. })
/// ));
/// let auth = AgentAuthenticator::new(&config, Some(Secret::new("x".repeat(32))))?;
/// let agent = AgentId::new("coder");
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let token = auth.issue(&agent, now)?;
/// assert_eq!(auth.verify(&token, &agent, now)?.agent, agent);
/// assert!(matches!(
///     auth.verify(&token, &agent, now + Duration::from_secs(3_601)),
///     Err(SecurityError::TokenExpired { .. })
/// ));
/// # Ok::<(), SecurityError>(())
/// ```
pub struct AgentAuthenticator {
    config: AuthConfig,
    master: Secret,
    keys: RwLock<Keys>,
    state: Mutex<State>,
    rng: SystemRandom,
}

impl std::fmt::Debug for AgentAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentAuthenticator")
            .field("config", &self.config)
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

fn derive_key(master: &Secret, key_id: &str) -> hmac::Key {
    let root = hmac::Key::new(hmac::HMAC_SHA256, master.expose().as_bytes());
    let tag = hmac::sign(&root, format!("genesis-agent-token/v1/{key_id}").as_bytes());
    hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref())
}

impl AgentAuthenticator {
    /// An authenticator with the config's key id as the current signing key.
    ///
    /// # Errors
    /// See [`AuthConfig::resolve_secret`]; [`SecurityError::InvalidConfig`] for a bad key id,
    /// zero `max_failures` or zero `token_ttl`.
    pub fn new(config: &AuthConfig, secret: Option<Secret>) -> Result<Self, SecurityError> {
        config.validate()?;
        let master = config.resolve_secret(secret)?;
        let mut keys = HashMap::new();
        keys.insert(config.key_id.clone(), derive_key(&master, &config.key_id));
        Ok(AgentAuthenticator {
            config: config.clone(),
            master,
            keys: RwLock::new(Keys {
                current: config.key_id.clone(),
                keys,
            }),
            state: Mutex::new(State {
                revoked_before: config
                    .revoked_before
                    .iter()
                    .map(|(agent, at)| (AgentId::new(agent.as_str()), unix(at.0)))
                    .collect(),
                ..State::default()
            }),
            rng: SystemRandom::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The id of the key new tokens are signed with.
    pub fn current_key_id(&self) -> String {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .current
            .clone()
    }

    /// Issues a token for `agent` valid for the configured TTL.
    ///
    /// # Errors
    /// As [`AgentAuthenticator::issue_with_ttl`].
    pub fn issue(&self, agent: &AgentId, now: SystemTime) -> Result<String, SecurityError> {
        self.issue_with_ttl(agent, now, self.config.token_ttl)
    }

    /// Issues a token for `agent` valid for `ttl`.
    ///
    /// # Errors
    /// [`SecurityError::InvalidAgentId`] for an id no token can be issued for
    /// ([`agent_id_problem`]); [`SecurityError::Random`] if the random generator fails.
    pub fn issue_with_ttl(
        &self,
        agent: &AgentId,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<String, SecurityError> {
        check_agent_id(agent)?;
        let mut nonce = [0u8; 16];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| SecurityError::Random)?;
        let issued = unix(now);
        let expires = issued.saturating_add(ttl.as_secs());
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let key = keys
            .keys
            .get(&keys.current)
            .ok_or_else(|| SecurityError::UnknownKeyId {
                key_id: keys.current.clone(),
            })?;
        let body = format!(
            "{PREFIX}.{}.{}.{issued}.{expires}.{}",
            keys.current,
            B64.encode(agent.as_str()),
            hex(&nonce)
        );
        let tag = hmac::sign(key, body.as_bytes());
        Ok(format!("{body}.{}", B64.encode(tag.as_ref())))
    }

    /// Verifies that `token` is a valid, unexpired, unrevoked token for `agent`.
    ///
    /// Every failure counts towards `agent`'s lockout; a success outside a lockout clears
    /// the count. The lockout only stops guessing: while it lasts, tokens whose signature
    /// does not verify are refused with [`SecurityError::AgentLockedOut`] (and not
    /// counted), but a correctly signed token is checked as usual, so a legitimate agent
    /// keeps working whatever others send under its id.
    ///
    /// # Errors
    /// [`SecurityError::AgentLockedOut`] for an unverified token while locked out (and on
    /// the failure that locks), otherwise [`SecurityError::MalformedToken`],
    /// [`SecurityError::UnknownKeyId`], [`SecurityError::InvalidSignature`],
    /// [`SecurityError::WrongAgent`], [`SecurityError::TokenExpired`] or
    /// [`SecurityError::TokenRevoked`].
    pub fn verify(
        &self,
        token: &str,
        agent: &AgentId,
        now: SystemTime,
    ) -> Result<TokenClaims, SecurityError> {
        // No token is ever issued for such an id: refused before any failure is
        // counted, so odd ids neither fill the failure table nor reach the logs.
        check_agent_id(agent)?;
        let now_s = unix(now);
        let (err, signed) = match self.authenticate(token, agent) {
            Ok(signed) => match self.claims(&signed, agent, now_s) {
                Ok(claims) => {
                    let mut state = self.state();
                    // A lockout keeps running (it stops guessing, which a signed token
                    // is not); outside one, success forgets the failures.
                    if state
                        .failures
                        .get(agent)
                        .is_some_and(|f| f.locked_until <= now_s)
                    {
                        state.failures.remove(agent);
                    }
                    return Ok(claims);
                }
                Err(err) => (err, true),
            },
            Err(err) => (err, false),
        };
        if let Some(locked) = self.locked(agent, now_s) {
            // A signed token that is expired, revoked or another agent's gets its own
            // error: only the key holder can produce one, so it is no guess.
            return Err(if signed { err } else { locked });
        }
        Err(self.record_failure(agent, now_s).unwrap_or(err))
    }

    fn locked(&self, agent: &AgentId, now: u64) -> Option<SecurityError> {
        let state = self.state();
        let f = state.failures.get(agent)?;
        (f.locked_until > now).then(|| SecurityError::AgentLockedOut {
            agent: agent.to_string(),
            failures: f.count,
            retry_after: Duration::from_secs(f.locked_until - now),
        })
    }

    /// Counts a failure; returns the lockout error when this failure engages the lockout.
    fn record_failure(&self, agent: &AgentId, now: u64) -> Option<SecurityError> {
        let mut state = self.state();
        let window = self.config.failure_window.as_secs();
        let Some(f) = state
            .failures
            .touch(agent, self.config.max_tracked_agents, now)
        else {
            tracing::warn!(agent = %agent, "auth failure table full of lockouts: failure not counted");
            return None;
        };
        if f.locked_until != 0 && f.locked_until <= now {
            // A served lockout starts a fresh count.
            *f = Failures {
                stamp: f.stamp,
                ..Failures::default()
            };
        }
        if f.count > 0 && f.last.saturating_add(window) <= now {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        tracing::debug!(agent = %agent, failures = f.count, "agent token verification failed");
        if f.count >= self.config.max_failures {
            f.locked_until = now.saturating_add(self.config.lockout.as_secs().max(1));
            tracing::warn!(agent = %agent, failures = f.count, "agent locked out after failed token verifications");
            return Some(SecurityError::AgentLockedOut {
                agent: agent.to_string(),
                failures: f.count,
                retry_after: self.config.lockout,
            });
        }
        None
    }

    fn check(&self, token: &str, agent: &AgentId, now: u64) -> Result<TokenClaims, SecurityError> {
        let signed = self.authenticate(token, agent)?;
        self.claims(&signed, agent, now)
    }

    /// The token's format and signature: what only the holder of a signing key can
    /// produce. `agent` is only named in the error.
    fn authenticate<'t>(
        &self,
        token: &'t str,
        agent: &AgentId,
    ) -> Result<SignedToken<'t>, SecurityError> {
        let malformed = |reason| SecurityError::MalformedToken { reason };
        if token.len() > MAX_TOKEN_LEN {
            return Err(malformed("longer than 1024 bytes"));
        }
        let (body, mac) = token
            .rsplit_once('.')
            .ok_or_else(|| malformed("missing signature"))?;
        let parts: Vec<&str> = body.split('.').collect();
        let [prefix, key_id, agent_b64, issued, expires, token_id] = parts[..] else {
            return Err(malformed("wrong number of fields"));
        };
        if prefix != PREFIX {
            return Err(malformed("unknown token version"));
        }
        let mac = B64
            .decode(mac)
            .map_err(|_| malformed("signature is not base64url"))?;
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let key = keys
            .keys
            .get(key_id)
            .ok_or_else(|| SecurityError::UnknownKeyId {
                key_id: key_id.chars().take(32).collect(),
            })?;
        hmac::verify(key, body.as_bytes(), &mac).map_err(|_| SecurityError::InvalidSignature {
            agent: agent.to_string(),
        })?;
        Ok(SignedToken {
            key_id,
            agent_b64,
            issued,
            expires,
            token_id,
        })
    }

    /// The signed content: the agent it was issued to, expiry and revocation.
    fn claims(
        &self,
        signed: &SignedToken<'_>,
        agent: &AgentId,
        now: u64,
    ) -> Result<TokenClaims, SecurityError> {
        let malformed = |reason| SecurityError::MalformedToken { reason };
        let actual = B64
            .decode(signed.agent_b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| malformed("agent id is not base64url utf-8"))?;
        if actual != agent.as_str() {
            return Err(SecurityError::WrongAgent {
                expected: agent.to_string(),
                actual,
            });
        }
        let issued_at: u64 = signed
            .issued
            .parse()
            .map_err(|_| malformed("bad issue time"))?;
        let expires_at: u64 = signed
            .expires
            .parse()
            .map_err(|_| malformed("bad expiry"))?;
        if now >= expires_at {
            return Err(SecurityError::TokenExpired {
                agent: agent.to_string(),
                expired_at: expires_at,
            });
        }
        let state = self.state();
        let revoked_before = state.revoked_before.get(agent).copied().unwrap_or(0);
        if state.revoked.contains_key(signed.token_id) || issued_at < revoked_before {
            return Err(SecurityError::TokenRevoked {
                agent: agent.to_string(),
                token_id: signed.token_id.to_owned(),
            });
        }
        Ok(TokenClaims {
            agent: agent.clone(),
            key_id: signed.key_id.to_owned(),
            issued_at,
            expires_at,
            token_id: signed.token_id.to_owned(),
        })
    }

    /// Revokes one token. Only tokens with a valid signature can be revoked (so the
    /// revocation list cannot be flooded); expired entries are pruned as `now` advances.
    ///
    /// # Errors
    /// As for parsing in [`AgentAuthenticator::verify`] (without counting failures).
    pub fn revoke(&self, token: &str, now: SystemTime) -> Result<(), SecurityError> {
        let agent_b64 = token
            .split('.')
            .nth(2)
            .ok_or(SecurityError::MalformedToken {
                reason: "wrong number of fields",
            })?;
        let agent = B64
            .decode(agent_b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(SecurityError::MalformedToken {
                reason: "agent id is not base64url utf-8",
            })?;
        let now_s = unix(now);
        // Check the signature (expired tokens need no revocation).
        let claims = match self.check(token, &AgentId::new(&agent), now_s) {
            Ok(claims) => claims,
            Err(SecurityError::TokenExpired { .. } | SecurityError::TokenRevoked { .. }) => {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut state = self.state();
        state.revoked.retain(|_, &mut exp| exp > now_s);
        state.revoked.insert(claims.token_id, claims.expires_at);
        tracing::info!(agent = %agent, "agent token revoked");
        Ok(())
    }

    /// Revokes every token issued to `agent` up to `now`.
    pub fn revoke_agent(&self, agent: &AgentId, now: SystemTime) {
        // Tokens issued in the same second as the revocation are revoked too.
        self.state()
            .revoked_before
            .insert(agent.clone(), unix(now).saturating_add(1));
        tracing::info!(agent = %agent, "all agent tokens revoked");
    }

    /// Makes `key_id` the signing key for new tokens, derived from `secret` (or from the
    /// current master secret). Tokens signed with older keys keep verifying until
    /// [`AgentAuthenticator::retire_key`].
    ///
    /// # Errors
    /// [`SecurityError::InvalidConfig`] for a bad key id, [`SecurityError::SecretTooShort`].
    pub fn rotate(&self, key_id: &str, secret: Option<&Secret>) -> Result<(), SecurityError> {
        validate_key_id(key_id)?;
        let master = secret.unwrap_or(&self.master);
        let len = master.expose().len();
        if len < self.config.min_secret_bytes {
            return Err(SecurityError::SecretTooShort {
                len,
                min: self.config.min_secret_bytes,
            });
        }
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.keys
            .insert(key_id.to_owned(), derive_key(master, key_id));
        keys.current = key_id.to_owned();
        tracing::info!(key_id, "agent token signing key rotated");
        Ok(())
    }

    /// Stops accepting tokens signed with `key_id`. The current signing key cannot be retired.
    ///
    /// # Errors
    /// [`SecurityError::InvalidConfig`] when `key_id` is the current key,
    /// [`SecurityError::UnknownKeyId`] when it is not held.
    pub fn retire_key(&self, key_id: &str) -> Result<(), SecurityError> {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if keys.current == key_id {
            return Err(SecurityError::InvalidConfig {
                field: "auth.key_id",
                value: key_id.to_owned(),
                reason: "the current signing key cannot be retired; rotate first",
            });
        }
        keys.keys
            .remove(key_id)
            .map(|_| ())
            .ok_or_else(|| SecurityError::UnknownKeyId {
                key_id: key_id.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    const NOW: u64 = 1_700_000_000;

    fn auth() -> AgentAuthenticator {
        AgentAuthenticator::new(
            &AuthConfig::default(),
            Some(Secret::new("0123456789abcdef0123456789abcdef")),
        )
        .unwrap()
    }

    #[test]
    fn valid_token_verifies() {
        let a = auth();
        let agent = AgentId::new("coder");
        let token = a.issue(&agent, t(NOW)).unwrap();
        let claims = a.verify(&token, &agent, t(NOW + 10)).unwrap();
        assert_eq!(claims.agent, agent);
        assert_eq!(claims.key_id, "k1");
        assert_eq!(claims.expires_at, NOW + 3_600);
        assert_eq!(claims.token_id.len(), 32);
    }

    /// Audits U6 and S6 (D2): a token was issued for an empty id, and for an id shaped
    /// like an API key's subject (`key:<digest>`), which then read that client's runs.
    #[test]
    fn ids_that_are_empty_unsendable_or_shaped_like_other_subjects_get_no_token() {
        let a = auth();
        let long = "a".repeat(MAX_AGENT_ID_BYTES + 1);
        for bad in [
            "",
            "q a",
            "key:01f9350b55022160",
            "admin:x",
            "anonymous",
            &long,
        ] {
            let id = AgentId::new(bad);
            let e = a.issue(&id, t(NOW)).unwrap_err();
            assert!(
                matches!(e, SecurityError::InvalidAgentId { .. })
                    && e.to_string().contains("rule: agent_id"),
                "{bad:?}: {e}"
            );
            // Checked before anything else: not counted towards a lockout either.
            let e = a.verify("gnt1.k1.x.1.2.y.z", &id, t(NOW)).unwrap_err();
            assert!(
                matches!(e, SecurityError::InvalidAgentId { .. }),
                "{bad:?}: {e}"
            );
        }
        assert_eq!(a.state().failures.len(), 0);
        let e = a.issue(&AgentId::new(&long), t(NOW)).unwrap_err();
        assert!(
            e.to_string().len() < 200,
            "the id is cut in the message: {e}"
        );
        let ok = AgentId::new("a".repeat(MAX_AGENT_ID_BYTES));
        assert!(a.issue(&ok, t(NOW)).is_ok());
    }

    #[test]
    fn tampered_tokens_are_rejected() {
        let a = auth();
        let agent = AgentId::new("coder");
        let token = a.issue(&agent, t(NOW)).unwrap();
        // Extend the expiry without re-signing.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}.{}.{}.{}.{}",
            parts[0],
            parts[1],
            parts[2],
            parts[3],
            NOW + 999_999,
            parts[5],
            parts[6]
        );
        assert!(matches!(
            a.verify(&forged, &agent, t(NOW)),
            Err(SecurityError::InvalidSignature { .. })
        ));
        // Flip one signature character.
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert!(a.verify(&flipped, &agent, t(NOW)).is_err());
        assert!(matches!(
            a.verify("garbage", &agent, t(NOW)),
            Err(SecurityError::MalformedToken { .. })
        ));
    }

    #[test]
    fn a_token_from_another_secret_is_rejected() {
        let other = AgentAuthenticator::new(
            &AuthConfig::default(),
            Some(Secret::new("another-secret-another-secret-xx")),
        )
        .unwrap();
        let agent = AgentId::new("coder");
        let token = other.issue(&agent, t(NOW)).unwrap();
        assert!(matches!(
            auth().verify(&token, &agent, t(NOW)),
            Err(SecurityError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn expired_tokens_are_rejected() {
        let a = auth();
        let agent = AgentId::new("coder");
        let token = a.issue(&agent, t(NOW)).unwrap();
        assert!(a.verify(&token, &agent, t(NOW + 3_599)).is_ok());
        assert!(matches!(
            a.verify(&token, &agent, t(NOW + 3_600)),
            Err(SecurityError::TokenExpired { expired_at, .. }) if expired_at == NOW + 3_600
        ));
    }

    #[test]
    fn wrong_agent_is_rejected() {
        let a = auth();
        let token = a.issue(&AgentId::new("coder"), t(NOW)).unwrap();
        assert!(matches!(
            a.verify(&token, &AgentId::new("admin"), t(NOW)),
            Err(SecurityError::WrongAgent { ref expected, ref actual })
                if expected == "admin" && actual == "coder"
        ));
    }

    #[test]
    fn wrong_and_retired_key_ids_are_rejected() {
        let a = auth();
        let agent = AgentId::new("coder");
        let old = a.issue(&agent, t(NOW)).unwrap();
        let relabelled = old.replacen(".k1.", ".k9.", 1);
        assert!(matches!(
            a.verify(&relabelled, &agent, t(NOW)),
            Err(SecurityError::UnknownKeyId { ref key_id }) if key_id == "k9"
        ));
        a.rotate("k2", None).unwrap();
        let new = a.issue(&agent, t(NOW)).unwrap();
        assert!(new.contains(".k2."));
        // Old tokens verify until the old key is retired.
        assert!(a.verify(&old, &agent, t(NOW)).is_ok());
        assert!(a.retire_key("k2").is_err());
        a.retire_key("k1").unwrap();
        assert!(matches!(
            a.verify(&old, &agent, t(NOW)),
            Err(SecurityError::UnknownKeyId { .. })
        ));
        assert!(a.verify(&new, &agent, t(NOW)).is_ok());
        // A token signed with key k2 but relabelled k1 fails.
        let swapped = new.replacen(".k2.", ".k1.", 1);
        assert!(a.verify(&swapped, &agent, t(NOW)).is_err());
    }

    #[test]
    fn revoked_tokens_are_rejected() {
        let a = auth();
        let agent = AgentId::new("coder");
        let token = a.issue(&agent, t(NOW)).unwrap();
        let other = a.issue(&agent, t(NOW)).unwrap();
        assert!(a.verify(&token, &agent, t(NOW)).is_ok());
        a.revoke(&token, t(NOW + 1)).unwrap();
        assert!(matches!(
            a.verify(&token, &agent, t(NOW + 2)),
            Err(SecurityError::TokenRevoked { .. })
        ));
        assert!(a.verify(&other, &agent, t(NOW + 2)).is_ok());
        a.revoke_agent(&agent, t(NOW + 3));
        assert!(matches!(
            a.verify(&other, &agent, t(NOW + 4)),
            Err(SecurityError::TokenRevoked { .. })
        ));
        let fresh = a.issue(&agent, t(NOW + 10)).unwrap();
        assert!(a.verify(&fresh, &agent, t(NOW + 11)).is_ok());
    }

    /// Security audit D4: revocation was reachable only through the library API, so a
    /// deployed server could not revoke a leaked token. `revoked_before` in the config
    /// revokes an agent's tokens issued before a time, from the next start.
    #[test]
    fn configured_cut_offs_revoke_an_agents_earlier_tokens() {
        let secret = || Some(Secret::new("0123456789abcdef0123456789abcdef"));
        let before = auth();
        let agent = AgentId::new("coder");
        let leaked = before.issue(&agent, t(NOW)).unwrap();
        let other = before.issue(&AgentId::new("qa"), t(NOW)).unwrap();
        let config: AuthConfig = serde_json::from_str(&format!(
            r#"{{"revoked_before": {{"coder": "{}"}}}}"#,
            humantime_serde::re::humantime::format_rfc3339_seconds(t(NOW + 10))
        ))
        .unwrap();
        let after = AgentAuthenticator::new(&config, secret()).unwrap();
        assert!(matches!(
            after.verify(&leaked, &agent, t(NOW + 20)),
            Err(SecurityError::TokenRevoked { .. })
        ));
        // Other agents' tokens, and the agent's tokens issued after the cut-off, work.
        assert!(
            after
                .verify(&other, &AgentId::new("qa"), t(NOW + 20))
                .is_ok()
        );
        let fresh = after.issue(&agent, t(NOW + 11)).unwrap();
        assert!(after.verify(&fresh, &agent, t(NOW + 20)).is_ok());
        // An empty agent id and a time that is not RFC 3339 are refused, naming the key.
        let empty: AuthConfig =
            serde_json::from_str(r#"{"revoked_before": {"": "2026-11-24T19:00:00Z"}}"#).unwrap();
        let err = AgentAuthenticator::new(&empty, secret()).unwrap_err();
        assert!(err.to_string().contains("auth.revoked_before"), "{err}");
        let bad =
            serde_json::from_str::<AuthConfig>(r#"{"revoked_before": {"coder": "yesterday"}}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn lockout_engages_at_the_fifth_failure_and_lifts_after_cooldown() {
        let a = auth();
        let agent = AgentId::new("coder");
        let good = a.issue(&agent, t(NOW)).unwrap();
        for i in 1..=4 {
            let err = a.verify("bad", &agent, t(NOW + i)).unwrap_err();
            assert!(
                matches!(err, SecurityError::MalformedToken { .. }),
                "{i}: {err}"
            );
        }
        let fifth = a.verify("bad", &agent, t(NOW + 5)).unwrap_err();
        assert!(
            matches!(fifth, SecurityError::AgentLockedOut { failures: 5, .. }),
            "{fifth}"
        );
        // Unverified tries are refused during the cool-down, without a signature check
        // telling them anything.
        let locked = a.verify("bad", &agent, t(NOW + 6)).unwrap_err();
        assert!(
            matches!(locked, SecurityError::AgentLockedOut { .. }),
            "{locked}"
        );
        assert_eq!(locked.retry_after(), Some(Duration::from_secs(299)));
        // Other agents are unaffected.
        let other = AgentId::new("writer");
        let tok = a.issue(&other, t(NOW)).unwrap();
        assert!(a.verify(&tok, &other, t(NOW + 6)).is_ok());
        // After the cool-down the good token works and the count restarts.
        assert!(a.verify(&good, &agent, t(NOW + 5 + 300)).is_ok());
        assert!(matches!(
            a.verify("bad", &agent, t(NOW + 306)),
            Err(SecurityError::MalformedToken { .. })
        ));
    }

    #[test]
    fn success_resets_the_failure_count() {
        let a = auth();
        let agent = AgentId::new("coder");
        let good = a.issue(&agent, t(NOW)).unwrap();
        for _ in 0..4 {
            let _ = a.verify("bad", &agent, t(NOW));
        }
        a.verify(&good, &agent, t(NOW)).unwrap();
        for _ in 0..4 {
            assert!(!matches!(
                a.verify("bad", &agent, t(NOW)),
                Err(SecurityError::AgentLockedOut { .. })
            ));
        }
    }

    #[test]
    fn secrets_by_environment() {
        let prod = AuthConfig::for_environment(Environment::Production);
        assert!(matches!(
            prod.resolve_secret(None),
            Err(SecurityError::MissingSecret {
                environment: "production"
            })
        ));
        assert!(matches!(
            prod.resolve_secret(Some(Secret::new(""))),
            Err(SecurityError::MissingSecret { .. })
        ));
        assert!(matches!(
            AuthConfig::for_environment(Environment::Staging).resolve_secret(None),
            Err(SecurityError::MissingSecret {
                environment: "staging"
            })
        ));
        assert!(matches!(
            prod.resolve_secret(Some(Secret::new("short"))),
            Err(SecurityError::SecretTooShort { len: 5, min: 32 })
        ));
        let dev = AuthConfig::for_environment(Environment::Dev);
        let a = dev.resolve_secret(None).unwrap();
        let b = dev.resolve_secret(None).unwrap();
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn config_parses_humantime() {
        let c: AuthConfig =
            serde_json::from_str(r#"{"environment":"dev","token_ttl":"10m","lockout":"30s"}"#)
                .unwrap();
        assert_eq!(c.environment, Environment::Dev);
        assert_eq!(c.token_ttl, Duration::from_secs(600));
        assert_eq!(c.lockout, Duration::from_secs(30));
        assert!(serde_json::from_str::<AuthConfig>(r#"{"secret":"x"}"#).is_err());
        let bad = AuthConfig {
            key_id: "a.b".into(),
            ..AuthConfig::default()
        };
        assert!(AgentAuthenticator::new(&bad, Some(Secret::new("x".repeat(32)))).is_err());
    }

    /// Review R6: anyone could lock a legitimate agent out by sending garbage under its
    /// (unauthenticated) `x-agent-id`; a valid token was then refused for 299 s.
    #[test]
    fn a_correctly_signed_token_passes_during_a_lockout() {
        let a = auth();
        let victim = AgentId::new("builder");
        let good = a.issue(&victim, t(NOW)).unwrap();
        for _ in 0..5 {
            let _ = a.verify("gat1.garbage", &victim, t(NOW));
        }
        // Forged signatures are refused as locked out, not checked further.
        let forged = a
            .issue(&victim, t(NOW))
            .unwrap()
            .rsplit_once('.')
            .map(|(body, _)| format!("{body}.AAAA"))
            .unwrap();
        let err = a.verify(&forged, &victim, t(NOW + 1)).unwrap_err();
        assert!(matches!(err, SecurityError::AgentLockedOut { .. }), "{err}");
        // The real agent's token still verifies, any number of times.
        for i in 1..=3 {
            let claims = a.verify(&good, &victim, t(NOW + i)).unwrap();
            assert_eq!(claims.agent, victim);
        }
        // ... and that does not lift the lockout for guesses.
        let err = a.verify("gat1.garbage", &victim, t(NOW + 4)).unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(296)), "{err}");
        // A signed token that is no longer valid gets its own error, not the lockout.
        let short = a
            .issue_with_ttl(&victim, t(NOW), Duration::from_secs(2))
            .unwrap();
        assert!(matches!(
            a.verify(&short, &victim, t(NOW + 5)),
            Err(SecurityError::TokenExpired { .. })
        ));
        let writers = a.issue(&AgentId::new("writer"), t(NOW)).unwrap();
        assert!(matches!(
            a.verify(&writers, &victim, t(NOW + 5)),
            Err(SecurityError::WrongAgent { .. })
        ));
    }

    /// Review R6: with every tracked agent inside `failure_window`, the table grew past
    /// `max_tracked_agents` (cap 10, 1,000 ids: 1,000 entries) and each new id paid a
    /// sweep of the whole table.
    #[test]
    fn the_failure_table_never_exceeds_max_tracked_agents() {
        let config = AuthConfig {
            max_tracked_agents: 10,
            ..AuthConfig::default()
        };
        let a = AgentAuthenticator::new(
            &config,
            Some(Secret::new("0123456789abcdef0123456789abcdef")),
        )
        .unwrap();
        for i in 0..1_000 {
            let _ = a.verify("gat1.x", &AgentId::new(format!("a{i}")), t(NOW));
            assert!(
                a.state().failures.len() <= 10,
                "{i}: {}",
                a.state().failures.len()
            );
        }
        {
            let state = a.state();
            assert_eq!(state.failures.len(), 10);
            // The newest ids are the ones kept; stale queue items stay bounded.
            assert!(state.failures.get(&AgentId::new("a999")).is_some());
            assert!(state.failures.get(&AgentId::new("a989")).is_none());
            assert!(
                state.failures.order.len() <= 2 * 10 + 64,
                "{}",
                state.failures.order.len()
            );
        }
        // A tracked agent still locks out at its fifth failure; its repeated failures
        // keep it the most recent, so new ids evict others first.
        let hot = AgentId::new("hot");
        for i in 0..4 {
            assert!(!matches!(
                a.verify("gat1.x", &hot, t(NOW + i)),
                Err(SecurityError::AgentLockedOut { .. })
            ));
            let _ = a.verify("gat1.x", &AgentId::new(format!("b{i}")), t(NOW + i));
        }
        assert!(matches!(
            a.verify("gat1.x", &hot, t(NOW + 5)),
            Err(SecurityError::AgentLockedOut { failures: 5, .. })
        ));
        // Successes forget entries; their queue items are compacted away.
        for i in 0..500 {
            let agent = AgentId::new(format!("c{i}"));
            let good = a.issue(&agent, t(NOW)).unwrap();
            let _ = a.verify("gat1.x", &agent, t(NOW + 6));
            a.verify(&good, &agent, t(NOW + 6)).unwrap();
        }
        let state = a.state();
        assert!(state.failures.len() <= 10);
        assert!(
            state.failures.order.len() <= 2 * 10 + 64,
            "{}",
            state.failures.order.len()
        );
    }

    /// Eviction never lifts a lockout: a guesser who fails under `max_tracked_agents`
    /// fresh ids (review R7: that used to evict the locked-out id mid cool-down) finds
    /// the id still locked; the fresh ids' failures make room among themselves, and a
    /// table full of lockouts counts no more failures rather than forget one.
    #[test]
    fn eviction_never_lifts_a_lockout() {
        let config = AuthConfig {
            max_tracked_agents: 10,
            ..AuthConfig::default()
        };
        let a = AgentAuthenticator::new(
            &config,
            Some(Secret::new("0123456789abcdef0123456789abcdef")),
        )
        .unwrap();
        let victim = AgentId::new("builder");
        for _ in 0..5 {
            let _ = a.verify("gat1.garbage", &victim, t(NOW));
        }
        let err = a.verify("gat1.garbage", &victim, t(NOW + 1)).unwrap_err();
        assert!(matches!(err, SecurityError::AgentLockedOut { .. }), "{err}");
        for i in 0..10 {
            let _ = a.verify("gat1.x", &AgentId::new(format!("flood{i}")), t(NOW + 2));
        }
        // 3 s into a 300 s lockout: still locked.
        let err = a.verify("gat1.garbage", &victim, t(NOW + 3)).unwrap_err();
        assert!(
            matches!(err, SecurityError::AgentLockedOut { .. }),
            "lockout lifted by eviction: {err}"
        );
        // A table full of lockouts: a new id's failure is not counted, nothing is
        // forgotten, and the table stays within its cap.
        for i in 0..10 {
            let id = AgentId::new(format!("locked{i}"));
            for _ in 0..5 {
                let _ = a.verify("gat1.garbage", &id, t(NOW + 4));
            }
        }
        let _ = a.verify("gat1.garbage", &AgentId::new("newcomer"), t(NOW + 5));
        {
            let state = a.state();
            assert!(state.failures.entries.len() <= 10);
            assert!(
                !state
                    .failures
                    .entries
                    .contains_key(&AgentId::new("newcomer"))
            );
        }
        let err = a.verify("gat1.garbage", &victim, t(NOW + 6)).unwrap_err();
        assert!(matches!(err, SecurityError::AgentLockedOut { .. }), "{err}");
        // Once the lockouts are served, new failures make room again.
        let _ = a.verify("gat1.garbage", &AgentId::new("later"), t(NOW + 400));
        assert!(
            a.state()
                .failures
                .entries
                .contains_key(&AgentId::new("later"))
        );
    }
}
