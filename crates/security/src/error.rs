//! The crate's error type: every rejection names the rule or limit and the offending value.

use std::time::Duration;

use genesis_core::{ErrorCategory, Severity};

/// Why a security check rejected an input, a token or a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// The request was empty, or only white space and invisible characters.
    #[error("request is empty or only white space and invisible characters")]
    EmptyRequest,
    /// The request has more characters than `Limits::max_request_chars`.
    #[error("request too long: {len} characters exceeds security.limits.max_request_chars {max}")]
    RequestTooLong {
        /// Characters in the request.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A request body has more bytes than `Limits::max_body_bytes`.
    #[error("request body too large: {len} bytes exceeds security.limits.max_body_bytes {max}")]
    BodyTooLarge {
        /// Bytes in the body.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A request body is not valid JSON of the expected shape.
    #[error("request body is not valid json (limit: json_body)")]
    InvalidJson {
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A task DAG is deeper than `Limits::max_dag_depth`.
    #[error("dag too deep: depth {depth} exceeds security.limits.max_dag_depth {max}")]
    DagTooDeep {
        /// Depth of the DAG (a single task has depth 1).
        depth: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A task DAG has more tasks than `Limits::max_tasks_per_dag`.
    #[error("too many tasks: {count} exceeds security.limits.max_tasks_per_dag {max}")]
    TooManyTasks {
        /// Tasks in the DAG.
        count: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A run would exceed `Limits::max_lifetime_tasks_per_run`.
    #[error(
        "lifetime task limit reached: {used} used + {requested} requested exceeds security.limits.max_lifetime_tasks_per_run {max}"
    )]
    LifetimeTaskLimit {
        /// Tasks the run already created.
        used: usize,
        /// Tasks it asked to add.
        requested: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The injection detector flagged the text at a blocking checkpoint.
    #[error("prompt injection detected: {rule} (score {score:.3})")]
    InjectionDetected {
        /// The strongest reason, e.g. `rule:ignore_previous_instructions` or `model:score`.
        rule: String,
        /// The detector's score in [0, 1].
        score: f64,
    },
    /// A rate limit rejected the call.
    #[error("rate limit exceeded for {scope} {key}: retry after {retry_after:?}")]
    RateLimited {
        /// Which limiter (`client_ip` or `agent`).
        scope: &'static str,
        /// The key that was limited (an IP address or an agent id).
        key: String,
        /// How long the caller should wait (the HTTP `Retry-After`).
        retry_after: Duration,
    },
    /// An id no agent token is issued for or checked against
    /// ([`crate::auth::agent_id_problem`]).
    #[error("agent id {agent:?} cannot hold a token: {reason} (rule: agent_id)")]
    InvalidAgentId {
        /// The id, cut to 64 characters.
        agent: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An agent token could not be parsed.
    #[error("malformed agent token: {reason}")]
    MalformedToken {
        /// What was wrong with it.
        reason: &'static str,
    },
    /// The token's signature does not match its contents.
    #[error("invalid token signature for agent {agent}")]
    InvalidSignature {
        /// The agent the verification was for.
        agent: String,
    },
    /// The token expired.
    #[error("token for agent {agent} expired at unix time {expired_at}")]
    TokenExpired {
        /// The agent the token was issued to.
        agent: String,
        /// Expiry, unix seconds.
        expired_at: u64,
    },
    /// The token was issued to another agent.
    #[error("token issued to agent {actual} presented for agent {expected}")]
    WrongAgent {
        /// The agent that presented it.
        expected: String,
        /// The agent it was issued to.
        actual: String,
    },
    /// The token names a key id the authenticator does not hold.
    #[error("unknown token key id {key_id}")]
    UnknownKeyId {
        /// The key id in the token.
        key_id: String,
    },
    /// The token was revoked.
    #[error("token {token_id} for agent {agent} was revoked")]
    TokenRevoked {
        /// The agent it was issued to.
        agent: String,
        /// The token's id.
        token_id: String,
    },
    /// Too many failed verifications: the agent is locked out.
    #[error(
        "agent {agent} locked out after {failures} failed attempts: retry after {retry_after:?}"
    )]
    AgentLockedOut {
        /// The locked agent.
        agent: String,
        /// Failed attempts that caused the lockout.
        failures: u32,
        /// Remaining cool-down.
        retry_after: Duration,
    },
    /// No master secret in an environment that requires one.
    #[error(
        "auth master secret missing: environment {environment} requires one; set GENESIS_AUTH_SECRET (at least security.auth.min_secret_bytes bytes) (rule: auth_secret_required)"
    )]
    MissingSecret {
        /// The environment name.
        environment: &'static str,
    },
    /// The master secret is too short.
    #[error(
        "auth master secret (GENESIS_AUTH_SECRET) too short: {len} bytes, security.auth.min_secret_bytes {min} (rule: auth_secret_min_bytes)"
    )]
    SecretTooShort {
        /// Bytes in the secret.
        len: usize,
        /// Minimum accepted.
        min: usize,
    },
    /// A configuration value is out of range.
    #[error("invalid security config: {field} = {value} ({reason})")]
    InvalidConfig {
        /// The field name.
        field: &'static str,
        /// The offending value.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// The operating system's random generator failed.
    #[error("system random number generator failed")]
    Random,
}

impl SecurityError {
    /// Always [`ErrorCategory::Security`]; the facade maps it to an HTTP status.
    pub fn category(&self) -> ErrorCategory {
        ErrorCategory::Security
    }

    /// How bad the failure is for an operator: rejected input is `Low`, a missing secret
    /// or a broken random generator is `Critical`.
    pub fn severity(&self) -> Severity {
        match self {
            SecurityError::MissingSecret { .. }
            | SecurityError::SecretTooShort { .. }
            | SecurityError::Random => Severity::Critical,
            SecurityError::InvalidConfig { .. } => Severity::High,
            SecurityError::AgentLockedOut { .. } | SecurityError::InjectionDetected { .. } => {
                Severity::Medium
            }
            _ => Severity::Low,
        }
    }

    /// The `Retry-After` duration for rate-limit and lockout rejections.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SecurityError::RateLimited { retry_after, .. }
            | SecurityError::AgentLockedOut { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_rule_and_value() {
        let e = SecurityError::RequestTooLong {
            len: 5001,
            max: 5000,
        };
        assert_eq!(
            e.to_string(),
            "request too long: 5001 characters exceeds security.limits.max_request_chars 5000"
        );
        let e = SecurityError::InjectionDetected {
            rule: "rule:ignore_previous_instructions".into(),
            score: 0.99,
        };
        assert!(e.to_string().contains("rule:ignore_previous_instructions"));
        assert!(e.to_string().contains("0.990"));
        assert_eq!(e.category(), ErrorCategory::Security);
    }

    #[test]
    fn retry_after_only_for_throttling() {
        let e = SecurityError::RateLimited {
            scope: "client_ip",
            key: "10.0.0.1".into(),
            retry_after: Duration::from_millis(600),
        };
        assert_eq!(e.retry_after(), Some(Duration::from_millis(600)));
        assert_eq!(SecurityError::EmptyRequest.retry_after(), None);
        assert_eq!(
            SecurityError::MissingSecret {
                environment: "production"
            }
            .severity(),
            Severity::Critical
        );
    }
}
