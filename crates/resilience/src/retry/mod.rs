//! Retrying: a plain async loop ([`retry`], [`retry_with`]) and a tower
//! [`Policy`](tower::retry::Policy) ([`RetryPolicy`]), both driven by a [`Backoff`].

mod policy;

use std::future::Future;

use crate::backoff::{Backoff, GiveUp};
use crate::classify::{Classify, Retry};

pub use policy::RetryPolicy;

/// The last error of a retry loop, with how many attempts were made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError<E> {
    /// The error was classified `Retry::No`; no further attempt was made.
    #[error("attempt {attempts} failed with a non-retryable error")]
    NotRetryable {
        /// Attempts made, including the failing one.
        attempts: u32,
        /// The error.
        #[source]
        source: E,
    },
    /// The error was retryable but the schedule gave up.
    #[error("gave up after {attempts} attempts: {reason}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// Why the schedule stopped.
        reason: GiveUp,
        /// The last error.
        #[source]
        source: E,
    },
}

impl<E> RetryError<E> {
    /// Attempts made.
    pub fn attempts(&self) -> u32 {
        match self {
            RetryError::NotRetryable { attempts, .. } | RetryError::Exhausted { attempts, .. } => {
                *attempts
            }
        }
    }

    /// The last error.
    pub fn source_ref(&self) -> &E {
        match self {
            RetryError::NotRetryable { source, .. } | RetryError::Exhausted { source, .. } => {
                source
            }
        }
    }

    /// The last error, by value.
    pub fn into_source(self) -> E {
        match self {
            RetryError::NotRetryable { source, .. } | RetryError::Exhausted { source, .. } => {
                source
            }
        }
    }
}

/// Runs `op` until it succeeds, its error is classified `Retry::No` by [`Classify`], or
/// `backoff` gives up; sleeps (on tokio's clock) between attempts.
///
/// # Errors
/// [`RetryError`] carrying the last error and the number of attempts.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::io;
/// use genesis_resilience::{retry, Backoff, BackoffConfig};
///
/// let backoff = Backoff::with_seed(BackoffConfig::default(), 1);
/// let mut calls = 0;
/// let result = retry(&backoff, || {
///     calls += 1;
///     let n = calls;
///     async move {
///         if n < 3 { Err(io::Error::from(io::ErrorKind::ConnectionReset)) } else { Ok(n) }
///     }
/// })
/// .await;
/// assert_eq!(result.unwrap(), 3);
/// # }
/// ```
pub async fn retry<T, E, F, Fut>(backoff: &Backoff, op: F) -> Result<T, RetryError<E>>
where
    E: Classify,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_with(backoff, E::classify, op).await
}

/// [`retry`] with a closure classifier, for error types that cannot implement
/// [`Classify`] in this crate (the orphan rule): `retry_with(&backoff, |e| ..., op)`.
///
/// # Errors
/// [`RetryError`] carrying the last error and the number of attempts.
pub async fn retry_with<T, E, C, F, Fut>(
    backoff: &Backoff,
    mut classify: C,
    mut op: F,
) -> Result<T, RetryError<E>>
where
    C: FnMut(&E) -> Retry,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut retries: u32 = 0;
    loop {
        let err = match op().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let attempts = retries + 1;
        match classify(&err) {
            Retry::No => {
                return Err(RetryError::NotRetryable {
                    attempts,
                    source: err,
                });
            }
            Retry::Yes { after } => match backoff.delay(retries, after) {
                Ok(delay) => {
                    tracing::debug!(
                        attempt = attempts,
                        ?delay,
                        "retrying after transient failure"
                    );
                    tokio::time::sleep(delay).await;
                    retries += 1;
                }
                Err(reason) => {
                    tracing::warn!(attempts, %reason, "retries exhausted");
                    return Err(RetryError::Exhausted {
                        attempts,
                        reason,
                        source: err,
                    });
                }
            },
        }
    }
}
