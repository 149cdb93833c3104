//! Per-call deadlines on tokio's clock. For tower stacks, use tower's `TimeoutLayer`;
//! its `Elapsed` error is classified as retryable by
//! [`classify_error_chain`](crate::classify_error_chain).

use std::future::Future;
use std::time::Duration;

use crate::config::TimeoutConfig;
use crate::error::ResilienceError;

/// A deadline for one attempt.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::time::Duration;
/// use genesis_resilience::{ResilienceError, Timeout};
///
/// let timeout = Timeout::new(Duration::from_secs(1));
/// let slow = async {
///     tokio::time::sleep(Duration::from_secs(5)).await;
///     Ok::<_, ResilienceError>(())
/// };
/// assert_eq!(
///     timeout.run(slow).await,
///     Err(ResilienceError::Timeout { after: Duration::from_secs(1) })
/// );
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout {
    after: Duration,
}

impl Timeout {
    /// A deadline of `after`.
    pub fn new(after: Duration) -> Self {
        Timeout { after }
    }

    /// The deadline from config.
    pub fn from_config(config: &TimeoutConfig) -> Self {
        Timeout::new(config.call)
    }

    /// The deadline.
    pub fn duration(&self) -> Duration {
        self.after
    }

    /// Runs `call`, dropping it (cancelling it) if it has not finished in time.
    ///
    /// # Errors
    /// `E::from(ResilienceError::Timeout)` on expiry, otherwise `call`'s own error.
    pub async fn run<T, E, F>(&self, call: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
    {
        match tokio::time::timeout(self.after, call).await {
            Ok(result) => result,
            Err(_) => Err(E::from(ResilienceError::Timeout { after: self.after })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fast_calls_pass_through_with_their_errors() {
        let t = Timeout::new(Duration::from_secs(1));
        assert_eq!(t.run(async { Ok::<_, ResilienceError>(5) }).await, Ok(5));
        let inner = ResilienceError::BulkheadFull {
            key: "k".into(),
            max_concurrent: 1,
            waited: Duration::ZERO,
        };
        let expected = inner.clone();
        assert_eq!(t.run(async { Err::<(), _>(inner) }).await, Err(expected));
    }
}
