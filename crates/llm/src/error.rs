//! The crate's error type and its classification for the resilience layer.

use std::time::Duration;

use genesis_core::{ErrorCategory, ModelId};

/// Whether a failed call may be retried, and how long the provider asked us to wait.
///
/// Produced by [`LlmError::retry_hint`]; consumed by the resilience layer, which this
/// crate does not depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryHint {
    /// True when the same request may succeed if sent again (429, 5xx, timeouts,
    /// connection failures).
    pub retryable: bool,
    /// The delay the provider asked for (`Retry-After`, `retry-after-ms`), if any.
    pub after: Option<Duration>,
}

impl RetryHint {
    /// A hint that says "do not retry".
    pub const FATAL: RetryHint = RetryHint {
        retryable: false,
        after: None,
    };

    /// A retryable hint with an optional provider-requested delay.
    pub fn retry(after: Option<Duration>) -> Self {
        RetryHint {
            retryable: true,
            after,
        }
    }
}

/// Everything that can go wrong when talking to an LLM provider.
///
/// Messages never contain API keys or prompts. Provider error bodies are kept (truncated)
/// in `message` fields because they are what an operator needs to fix a 400.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// A [`ProviderConfig`](crate::ProviderConfig) field is invalid.
    #[error("invalid provider config: {field} {reason}")]
    InvalidConfig {
        /// The offending field (`base_url`, `timeout`, ...).
        field: &'static str,
        /// What is wrong with it, including the offending value.
        reason: String,
    },

    /// A [`CompletionRequest`](crate::CompletionRequest) cannot be sent as it is (no
    /// messages, a temperature outside `0..=2`, a zero token limit or timeout).
    #[error("invalid completion request: {field} {reason}")]
    InvalidRequest {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it, including the offending value.
        reason: String,
    },

    /// The HTTP client (TLS set-up, connection pool) could not be built.
    #[error("cannot build http client for {provider}: {reason}")]
    ClientBuild {
        /// The provider (`openai`, `anthropic`).
        provider: String,
        /// What failed.
        reason: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The call did not complete within its timeout.
    #[error("{provider} call to model {model} timed out after {timeout:?}")]
    Timeout {
        /// The provider.
        provider: String,
        /// The model that was called.
        model: ModelId,
        /// The timeout that expired.
        timeout: Duration,
    },

    /// The request could not be sent or the response could not be read (connection
    /// refused, reset, DNS, TLS handshake). Only with the `http` feature (the HTTP
    /// providers are the only clients with a transport).
    #[cfg(feature = "http")]
    #[error("{provider} request to {url} failed in transport")]
    Transport {
        /// The provider.
        provider: String,
        /// The endpoint (never contains credentials).
        url: String,
        /// The underlying reqwest error.
        #[source]
        source: reqwest::Error,
    },

    /// The provider answered 429 Too Many Requests.
    #[error(
        "{provider} rate limited the call (status {status}, {}): {message}", retry_after_text(*.retry_after)
    )]
    RateLimited {
        /// The provider.
        provider: String,
        /// The HTTP status (429).
        status: u16,
        /// The parsed `Retry-After` / `retry-after-ms` delay.
        retry_after: Option<Duration>,
        /// The provider's error message, truncated.
        message: String,
    },

    /// The provider failed with a 5xx status (or 408/409, which are transient too).
    #[error("{provider} failed with status {status}: {message}")]
    ServerError {
        /// The provider.
        provider: String,
        /// The HTTP status.
        status: u16,
        /// The parsed `Retry-After` delay, if the provider sent one.
        retry_after: Option<Duration>,
        /// The provider's error message, truncated.
        message: String,
    },

    /// The provider rejected the request with a 4xx status (bad request, bad key,
    /// unknown model). Sending it again will not help.
    #[error("{provider} rejected the request with status {status}: {message}")]
    Rejected {
        /// The provider.
        provider: String,
        /// The HTTP status.
        status: u16,
        /// The provider's error message, truncated.
        message: String,
    },

    /// The provider answered 2xx with a body we cannot understand.
    #[error("{provider} sent a malformed response: {reason}")]
    MalformedResponse {
        /// The provider.
        provider: String,
        /// What is wrong (not JSON, missing `choices`, empty content, too large).
        reason: String,
        /// The JSON error, when the body did not parse.
        #[source]
        source: Option<serde_json::Error>,
    },

    /// A JSON schema passed to [`complete_json`](crate::complete_json) uses a keyword
    /// this crate does not implement, or uses one wrongly.
    #[error("invalid json schema at {path}: {reason}")]
    InvalidSchema {
        /// JSON pointer into the schema (`/properties/tags`).
        path: String,
        /// What is wrong, naming the keyword.
        reason: String,
    },

    /// The model's reply was not JSON, even after the repair retry.
    #[error("model {model} did not return valid json after {attempts} attempts: {reason}")]
    InvalidJson {
        /// The model.
        model: ModelId,
        /// How many completions were requested (2 with the repair retry).
        attempts: u32,
        /// Why the last reply did not parse.
        reason: String,
        /// The parse error of the last reply.
        #[source]
        source: serde_json::Error,
    },

    /// The model's JSON did not match the schema, even after the repair retry.
    #[error(
        "model {model} output violates the schema at {path} after {attempts} attempts: {reason}"
    )]
    SchemaViolation {
        /// The model.
        model: ModelId,
        /// How many completions were requested.
        attempts: u32,
        /// JSON pointer to the failing value in the model's output (`/tags/2`, or `` for
        /// the root).
        path: String,
        /// The rule that failed, with the offending value.
        reason: String,
    },

    /// A [`ScriptedClient`](crate::ScriptedClient) was called more often than scripted.
    #[error("scripted client has no response left for call {call}")]
    ScriptExhausted {
        /// The 1-based number of the call that found the script empty.
        call: usize,
    },
}

impl LlmError {
    /// Whether the call may be retried and after how long. 429, 5xx, 408/409, timeouts
    /// and transport failures are retryable; 4xx rejections, malformed responses,
    /// schema problems and configuration errors are not.
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            LlmError::RateLimited { retry_after, .. }
            | LlmError::ServerError { retry_after, .. } => RetryHint::retry(*retry_after),
            LlmError::Timeout { .. } => RetryHint::retry(None),
            #[cfg(feature = "http")]
            LlmError::Transport { .. } => RetryHint::retry(None),
            LlmError::InvalidConfig { .. }
            | LlmError::InvalidRequest { .. }
            | LlmError::ClientBuild { .. }
            | LlmError::Rejected { .. }
            | LlmError::MalformedResponse { .. }
            | LlmError::InvalidSchema { .. }
            | LlmError::InvalidJson { .. }
            | LlmError::SchemaViolation { .. }
            | LlmError::ScriptExhausted { .. } => RetryHint::FATAL,
        }
    }

    /// Shorthand for `self.retry_hint().retryable`.
    pub fn is_retryable(&self) -> bool {
        self.retry_hint().retryable
    }

    /// The pipeline category: [`ErrorCategory::Network`] for timeouts and transport
    /// failures, [`ErrorCategory::Config`] for invalid configuration or schemas,
    /// [`ErrorCategory::Llm`] for everything else (the provider, the model, or an
    /// unsendable request).
    pub fn category(&self) -> ErrorCategory {
        match self {
            LlmError::Timeout { .. } => ErrorCategory::Network,
            #[cfg(feature = "http")]
            LlmError::Transport { .. } => ErrorCategory::Network,
            LlmError::InvalidConfig { .. }
            | LlmError::ClientBuild { .. }
            | LlmError::InvalidSchema { .. } => ErrorCategory::Config,
            LlmError::InvalidRequest { .. }
            | LlmError::RateLimited { .. }
            | LlmError::ServerError { .. }
            | LlmError::Rejected { .. }
            | LlmError::MalformedResponse { .. }
            | LlmError::InvalidJson { .. }
            | LlmError::SchemaViolation { .. }
            | LlmError::ScriptExhausted { .. } => ErrorCategory::Llm,
        }
    }

    /// A short stable name for the variant, used as the `error.type` span field and as
    /// a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::InvalidConfig { .. } => "invalid_config",
            LlmError::InvalidRequest { .. } => "invalid_request",
            LlmError::ClientBuild { .. } => "client_build",
            LlmError::Timeout { .. } => "timeout",
            #[cfg(feature = "http")]
            LlmError::Transport { .. } => "transport",
            LlmError::RateLimited { .. } => "rate_limited",
            LlmError::ServerError { .. } => "server_error",
            LlmError::Rejected { .. } => "rejected",
            LlmError::MalformedResponse { .. } => "malformed_response",
            LlmError::InvalidSchema { .. } => "invalid_schema",
            LlmError::InvalidJson { .. } => "invalid_json",
            LlmError::SchemaViolation { .. } => "schema_violation",
            LlmError::ScriptExhausted { .. } => "script_exhausted",
        }
    }
}

/// "retry after 2s", or "no retry-after" when the provider gave none (not Rust's
/// `Some(2s)`).
fn retry_after_text(after: Option<Duration>) -> String {
    match after {
        Some(d) => format!("retry after {d:?}"),
        None => "no retry-after".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate_limited(after: Option<Duration>) -> LlmError {
        LlmError::RateLimited {
            provider: "openai".into(),
            status: 429,
            retry_after: after,
            message: "slow down".into(),
        }
    }

    /// Audit L6: the message read "retry after Some(2s)".
    #[test]
    fn rate_limit_messages_read_as_text() {
        let with = rate_limited(Some(Duration::from_secs(2))).to_string();
        assert!(
            with.contains("retry after 2s") && !with.contains("Some"),
            "{with}"
        );
        let without = rate_limited(None).to_string();
        assert!(
            without.contains("no retry-after") && !without.contains("None"),
            "{without}"
        );
    }

    #[test]
    fn classification_matches_the_resilience_contract() {
        let hint = rate_limited(Some(Duration::from_secs(3))).retry_hint();
        assert_eq!(
            hint,
            RetryHint {
                retryable: true,
                after: Some(Duration::from_secs(3))
            }
        );
        let timeout = LlmError::Timeout {
            provider: "anthropic".into(),
            model: ModelId::new("m"),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(timeout.retry_hint(), RetryHint::retry(None));
        assert_eq!(timeout.category(), ErrorCategory::Network);
        let rejected = LlmError::Rejected {
            provider: "openai".into(),
            status: 400,
            message: "bad".into(),
        };
        assert_eq!(rejected.retry_hint(), RetryHint::FATAL);
        assert_eq!(rejected.category(), ErrorCategory::Llm);
        assert_eq!(
            LlmError::InvalidSchema {
                path: "/x".into(),
                reason: "r".into()
            }
            .category(),
            ErrorCategory::Config
        );
    }

    #[test]
    fn messages_are_lower_case_and_name_the_value() {
        let msg = rate_limited(Some(Duration::from_secs(3))).to_string();
        assert!(msg.starts_with("openai rate limited"), "{msg}");
        assert!(msg.contains("429") && msg.contains("3s"), "{msg}");
        let v = LlmError::SchemaViolation {
            model: ModelId::new("gpt"),
            attempts: 2,
            path: "/tags/1".into(),
            reason: "expected string, got number 3".into(),
        };
        assert!(v.to_string().contains("/tags/1"));
    }
}
