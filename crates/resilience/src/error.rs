//! Errors raised by the resilience primitives themselves.

use std::sync::Arc;
use std::time::Duration;

use genesis_core::{ErrorCategory, Severity};

/// A call was refused or cut short by a resilience primitive (breaker, timeout, bulkhead).
///
/// Callers usually fold this into their own error type with `#[from]`: every async
/// adapter in this crate requires `E: From<ResilienceError>` so that the layers compose
/// without wrapper enums.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResilienceError {
    /// The circuit breaker for `key` is open (or its half-open probe slots are taken).
    #[error("circuit breaker `{key}` is open, next probe in {retry_in:?}")]
    CircuitOpen {
        /// The breaker key (provider or agent).
        key: Arc<str>,
        /// Time until the breaker admits a probe (an upper bound in half-open).
        retry_in: Duration,
    },
    /// The call did not finish within its deadline.
    #[error("call exceeded its timeout of {after:?}")]
    Timeout {
        /// The deadline that was exceeded.
        after: Duration,
    },
    /// The bulkhead for `key` had no free slot within the allowed wait.
    #[error("bulkhead `{key}` is full: {max_concurrent} calls in flight, waited {waited:?}")]
    BulkheadFull {
        /// The bulkhead key.
        key: Arc<str>,
        /// The concurrency limit of the key.
        max_concurrent: usize,
        /// How long the caller waited for a slot before giving up.
        waited: Duration,
    },
}

impl ResilienceError {
    /// The error category used by the facade to pick exit codes, HTTP statuses and metric labels.
    pub fn category(&self) -> ErrorCategory {
        match self {
            ResilienceError::CircuitOpen { .. } | ResilienceError::BulkheadFull { .. } => {
                ErrorCategory::Resource
            }
            ResilienceError::Timeout { .. } => ErrorCategory::Network,
        }
    }

    /// How bad it is: all of these are transient and degrade service rather than break it.
    pub fn severity(&self) -> Severity {
        Severity::Medium
    }
}

/// A configuration value broke one of its rules.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `field` must satisfy `rule` but was `value`.
    #[error("invalid resilience config: `{field}` must be {rule}, got {value}")]
    Invalid {
        /// Dotted path of the offending field, e.g. `breaker.failure_threshold`.
        field: &'static str,
        /// The rule the value broke, e.g. `at least 1`.
        rule: &'static str,
        /// The offending value, rendered for humans.
        value: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_key_and_values() {
        let err = ResilienceError::CircuitOpen {
            key: Arc::from("agent:coder"),
            retry_in: Duration::from_secs(3),
        };
        assert_eq!(
            err.to_string(),
            "circuit breaker `agent:coder` is open, next probe in 3s"
        );
        assert_eq!(err.category(), ErrorCategory::Resource);
        let err = ResilienceError::Timeout {
            after: Duration::from_millis(250),
        };
        assert_eq!(err.to_string(), "call exceeded its timeout of 250ms");
        assert_eq!(err.category(), ErrorCategory::Network);
        let err = ConfigError::Invalid {
            field: "breaker.failure_threshold",
            rule: "at least 1",
            value: "0".into(),
        };
        assert_eq!(
            err.to_string(),
            "invalid resilience config: `breaker.failure_threshold` must be at least 1, got 0"
        );
    }
}
