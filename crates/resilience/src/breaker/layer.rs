//! A tower [`Layer`] that puts a [`SharedBreaker`] in front of a service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{Layer, Service};

use super::SharedBreaker;
use crate::classify::{ClassifyWith, UseClassify};
use crate::error::ResilienceError;

/// Wraps services in a [`BreakerService`] sharing one breaker.
///
/// A response future that panics counts as a failure and the panic continues, as in
/// [`SharedBreaker::call`].
///
/// The breaker is checked in `call`, not in `poll_ready`: an open breaker fails the one
/// request fast with `ResilienceError::CircuitOpen` (converted into the service's error
/// type), rather than making the service itself unready, which would stall a `Buffer`
/// or balancer in front of it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use genesis_resilience::{BreakerConfig, BreakerLayer, SharedBreaker};
/// use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
///
/// let breaker = Arc::new(SharedBreaker::new("provider:local", &BreakerConfig::default()));
/// let mut svc = BreakerLayer::classified(breaker)
///     .layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n * 2) }));
/// assert_eq!(svc.ready().await.unwrap().call(21).await.unwrap(), 42);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BreakerLayer<C = UseClassify> {
    breaker: Arc<SharedBreaker>,
    classify: C,
}

impl BreakerLayer<UseClassify> {
    /// A layer that classifies errors with their [`Classify`](crate::Classify) impl
    /// (tower's `BoxError` has one).
    pub fn classified(breaker: Arc<SharedBreaker>) -> Self {
        BreakerLayer {
            breaker,
            classify: UseClassify,
        }
    }
}

impl<C> BreakerLayer<C> {
    /// A layer that classifies errors with `classify` (`Fn(&E) -> Retry`).
    pub fn new(breaker: Arc<SharedBreaker>, classify: C) -> Self {
        BreakerLayer { breaker, classify }
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = BreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            breaker: Arc::clone(&self.breaker),
            classify: self.classify.clone(),
        }
    }
}

/// A service guarded by a circuit breaker; see [`BreakerLayer`].
#[derive(Debug, Clone)]
pub struct BreakerService<S, C = UseClassify> {
    inner: S,
    breaker: Arc<SharedBreaker>,
    classify: C,
}

impl<S, C> BreakerService<S, C> {
    /// The breaker guarding this service.
    pub fn breaker(&self) -> &Arc<SharedBreaker> {
        &self.breaker
    }
}

impl<S, Req, C> Service<Req> for BreakerService<S, C>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: From<ResilienceError> + Send + 'static,
    C: ClassifyWith<S::Error> + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.try_acquire_owned(Instant::now()) {
            Err(e) => Box::pin(std::future::ready(Err(S::Error::from(e)))),
            Ok(permit) => {
                let call = self.inner.call(req);
                let classify = self.classify.clone();
                Box::pin(super::shared::run_recorded(
                    permit,
                    move |e: &S::Error| classify.classify_err(e),
                    call,
                ))
            }
        }
    }
}
