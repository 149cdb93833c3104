//! [`RetryPolicy`]: the tower retry policy over a [`Backoff`].

use std::sync::Arc;

use tokio::time::Sleep;
use tower::retry::Policy;

use crate::backoff::Backoff;
use crate::classify::{ClassifyWith, Retry, UseClassify};

/// A [`tower::retry::Policy`] that retries errors classified `Retry::Yes`, sleeping per
/// the shared [`Backoff`]. Tower clones the policy for every request, so the attempt
/// count is per request. Requests must be `Clone` to be replayed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use genesis_resilience::{Backoff, BackoffConfig, ResilienceError, RetryPolicy};
/// use tower::{retry::RetryLayer, BoxError, Layer, Service, ServiceExt, service_fn};
///
/// let calls = Arc::new(AtomicU32::new(0));
/// let seen = calls.clone();
/// let flaky = service_fn(move |n: u32| {
///     let attempt = seen.fetch_add(1, Ordering::SeqCst);
///     async move {
///         if attempt == 0 {
///             Err::<u32, BoxError>(ResilienceError::Timeout { after: Default::default() }.into())
///         } else {
///             Ok(n)
///         }
///     }
/// });
/// let policy = RetryPolicy::classified(Arc::new(Backoff::new(BackoffConfig::default())));
/// let mut svc = RetryLayer::new(policy).layer(flaky);
/// assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
/// assert_eq!(calls.load(Ordering::SeqCst), 2);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicy<C = UseClassify> {
    backoff: Arc<Backoff>,
    classify: C,
    retries: u32,
}

impl RetryPolicy<UseClassify> {
    /// A policy classifying errors with their [`Classify`](crate::Classify) impl.
    pub fn classified(backoff: Arc<Backoff>) -> Self {
        RetryPolicy {
            backoff,
            classify: UseClassify,
            retries: 0,
        }
    }
}

impl<C> RetryPolicy<C> {
    /// A policy classifying errors with `classify` (`Fn(&E) -> Retry`).
    pub fn new(backoff: Arc<Backoff>, classify: C) -> Self {
        RetryPolicy {
            backoff,
            classify,
            retries: 0,
        }
    }

    /// Retries made so far by this (per-request) policy.
    pub fn retries(&self) -> u32 {
        self.retries
    }
}

impl<Req, Res, E, C> Policy<Req, Res, E> for RetryPolicy<C>
where
    Req: Clone,
    C: ClassifyWith<E>,
{
    type Future = Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        let err = result.as_ref().err()?;
        let after = match self.classify.classify_err(err) {
            Retry::No => return None,
            Retry::Yes { after } => after,
        };
        match self.backoff.delay(self.retries, after) {
            Ok(delay) => {
                self.retries += 1;
                tracing::debug!(
                    retry = self.retries,
                    ?delay,
                    "retrying after transient failure"
                );
                Some(tokio::time::sleep(delay))
            }
            Err(reason) => {
                tracing::warn!(attempts = self.retries + 1, %reason, "retries exhausted");
                None
            }
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}
