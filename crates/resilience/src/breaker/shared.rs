//! A thread-safe breaker: the pure state machine behind a `std::sync::Mutex`.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use tokio::time::Instant;

use super::{BreakerState, CircuitBreaker, Permit, Rejected, Transition};
use crate::classify::{Classify, Retry};
use crate::config::BreakerConfig;
use crate::error::ResilienceError;

/// Called on every state change with `(key, from, to)`, outside the breaker's lock.
/// The facade wires it to metrics.
pub type StateChangeHook = Arc<dyn Fn(&str, BreakerState, BreakerState) + Send + Sync>;

/// A [`CircuitBreaker`] shared between tasks, with a key for logs and metrics, `tracing`
/// events on state changes (warn on open, info on close) and an optional
/// [`StateChangeHook`].
///
/// The lock is held only for the few arithmetic steps of acquire and record, never across
/// an `.await`; the hook runs after the lock is released.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use genesis_resilience::{BreakerConfig, ResilienceError, SharedBreaker};
///
/// let breaker = SharedBreaker::new("provider:openai", &BreakerConfig::default());
/// let answer: Result<u32, ResilienceError> = breaker.call(async { Ok(42) }).await;
/// assert_eq!(answer, Ok(42));
/// # }
/// ```
pub struct SharedBreaker {
    key: Arc<str>,
    inner: Mutex<CircuitBreaker>,
    hook: Option<StateChangeHook>,
}

impl fmt::Debug for SharedBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBreaker")
            .field("key", &self.key)
            .field("state", &self.state())
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

impl SharedBreaker {
    /// A closed breaker for `key`.
    pub fn new(key: impl Into<Arc<str>>, config: &BreakerConfig) -> Self {
        SharedBreaker {
            key: key.into(),
            inner: Mutex::new(CircuitBreaker::new(config)),
            hook: None,
        }
    }

    /// Calls `hook` on every state change.
    #[must_use]
    pub fn with_hook(mut self, hook: StateChangeHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The breaker's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The stored state (see [`CircuitBreaker::state`]).
    pub fn state(&self) -> BreakerState {
        self.lock().state()
    }

    /// The state a call at `now` would meet (see [`CircuitBreaker::effective_state`]).
    pub fn effective_state(&self, now: Instant) -> BreakerState {
        self.lock().effective_state(now)
    }

    /// A snapshot of the state machine, for inspection and tests.
    pub fn snapshot(&self) -> CircuitBreaker {
        self.lock().clone()
    }

    /// Asks to make one call at `now`. The returned guard must be told the outcome;
    /// dropping it unreported releases the slot without counting anything.
    ///
    /// # Errors
    /// [`ResilienceError::CircuitOpen`] while open, or half-open with every probe slot taken.
    pub fn try_acquire(
        &self,
        now: Instant,
    ) -> Result<BreakerPermit<&SharedBreaker>, ResilienceError> {
        let permit = self.acquire_inner(now)?;
        Ok(BreakerPermit {
            breaker: self,
            permit: Some(permit),
        })
    }

    /// Like [`try_acquire`](Self::try_acquire), with a guard that owns an `Arc` of the
    /// breaker (for `'static` futures).
    ///
    /// # Errors
    /// [`ResilienceError::CircuitOpen`] as for `try_acquire`.
    pub fn try_acquire_owned(
        self: &Arc<Self>,
        now: Instant,
    ) -> Result<BreakerPermit<Arc<SharedBreaker>>, ResilienceError> {
        let permit = self.acquire_inner(now)?;
        Ok(BreakerPermit {
            breaker: Arc::clone(self),
            permit: Some(permit),
        })
    }

    /// Runs `call` through the breaker, classifying its error with [`Classify`]:
    /// a retryable error (`Retry::Yes`) counts as a failure, a non-retryable one
    /// (validation, security, budget) is the request's fault and counts as nothing.
    ///
    /// A `call` that panics counts as a failure (a bug or a broken answer behind the
    /// dependency, as the orchestrator counts a panicking agent), and the panic then
    /// continues to the caller unchanged: the breaker records it but does not swallow
    /// it. A `call` dropped before it finishes (cancelled) counts as nothing.
    ///
    /// # Errors
    /// `E::from(ResilienceError::CircuitOpen)` without polling `call` when rejected,
    /// otherwise `call`'s own error.
    pub async fn call<T, E, F>(&self, call: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: Classify + From<ResilienceError>,
    {
        self.call_with(E::classify, call).await
    }

    /// [`call`](Self::call) with a closure classifier, for error types that cannot
    /// implement [`Classify`] here.
    ///
    /// # Errors
    /// As for [`call`](Self::call).
    pub async fn call_with<T, E, F, C>(&self, classify: C, call: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        C: FnOnce(&E) -> Retry,
        E: From<ResilienceError>,
    {
        let permit = self.try_acquire(Instant::now())?;
        run_recorded(permit, classify, call).await
    }

    fn acquire_inner(&self, now: Instant) -> Result<Permit, ResilienceError> {
        let admitted = self.lock().try_acquire(now);
        match admitted {
            Ok(admitted) => {
                if let Some(t) = admitted.transition {
                    self.emit(t);
                }
                Ok(admitted.permit)
            }
            Err(Rejected { retry_in, .. }) => Err(ResilienceError::CircuitOpen {
                key: Arc::clone(&self.key),
                retry_in,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CircuitBreaker> {
        // The state machine never panics mid-update, so a poisoned lock still holds a
        // consistent value.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, t: Transition) {
        self.emit_with(t, None);
    }

    /// [`SharedBreaker::emit`] naming why it opened, when known.
    fn emit_with(&self, t: Transition, cause: Option<super::TripCause>) {
        match t.to {
            BreakerState::Open => match cause {
                Some(cause) => tracing::warn!(
                    breaker = %self.key,
                    from = %t.from,
                    %cause,
                    "circuit breaker opened: {cause}"
                ),
                None => {
                    tracing::warn!(breaker = %self.key, from = %t.from, "circuit breaker opened")
                }
            },
            BreakerState::Closed => {
                tracing::info!(breaker = %self.key, from = %t.from, "circuit breaker closed");
            }
            BreakerState::HalfOpen => {
                tracing::debug!(breaker = %self.key, from = %t.from, "circuit breaker half-open");
            }
        }
        if let Some(hook) = &self.hook {
            hook(&self.key, t.from, t.to);
        }
    }
}

/// Awaits `call` under `permit` and records its outcome: `Ok` a success, an error
/// classified `Retry::Yes` a failure, `Retry::No` nothing, and a panic a failure, after
/// which the panic is resumed.
pub(crate) async fn run_recorded<B, T, E, F, C>(
    permit: BreakerPermit<B>,
    classify: C,
    call: F,
) -> Result<T, E>
where
    B: Deref<Target = SharedBreaker>,
    F: Future<Output = Result<T, E>>,
    C: FnOnce(&E) -> Retry,
{
    let mut call = std::pin::pin!(call);
    // Poll `call` inside `catch_unwind`: a panic in it must be counted here, as the
    // permit held across the await would otherwise be dropped (uncounted) only when
    // the runtime drops the panicked task.
    let outcome = std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
    .await;
    match outcome {
        Ok(result) => {
            permit.record(&result, classify, Instant::now());
            result
        }
        Err(panic) => {
            permit.failure(Instant::now());
            std::panic::resume_unwind(panic)
        }
    }
}

/// One admitted call. Report its outcome with [`success`](Self::success),
/// [`failure`](Self::failure) or [`record`](Self::record); dropping it unreported (a
/// cancelled call) releases its slot without counting.
#[must_use = "report the call's outcome; dropping the permit counts nothing"]
pub struct BreakerPermit<B: Deref<Target = SharedBreaker>> {
    breaker: B,
    permit: Option<Permit>,
}

impl<B: Deref<Target = SharedBreaker>> fmt::Debug for BreakerPermit<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerPermit")
            .field("key", &self.breaker.key)
            .field("permit", &self.permit)
            .finish()
    }
}

impl<B: Deref<Target = SharedBreaker>> BreakerPermit<B> {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.permit.as_ref().is_some_and(Permit::is_probe)
    }

    /// The call succeeded.
    pub fn success(mut self, now: Instant) {
        if let Some(p) = self.permit.take() {
            let t = self.breaker.lock().record_success(p, now);
            if let Some(t) = t {
                self.breaker.emit(t);
            }
        }
    }

    /// The call failed in a way that counts against the dependency.
    pub fn failure(mut self, now: Instant) {
        if let Some(p) = self.permit.take() {
            let (t, cause) = {
                let mut b = self.breaker.lock();
                let t = b.record_failure(p, now);
                (t, b.trip_cause())
            };
            if let Some(t) = t {
                self.breaker.emit_with(t, cause);
            }
        }
    }

    /// Records `result`: `Ok` is a success, an error classified `Retry::Yes` a failure,
    /// `Retry::No` neither.
    pub fn record<T, E>(
        self,
        result: &Result<T, E>,
        classify: impl FnOnce(&E) -> Retry,
        now: Instant,
    ) {
        match result {
            Ok(_) => self.success(now),
            Err(e) => match classify(e) {
                Retry::Yes { .. } => self.failure(now),
                Retry::No => drop(self),
            },
        }
    }
}

impl<B: Deref<Target = SharedBreaker>> Drop for BreakerPermit<B> {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.breaker.lock().release(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn hook_sees_every_transition_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let hook: StateChangeHook = Arc::new(move |key, from, to| {
            sink.lock().unwrap().push(format!("{key}:{from}->{to}"));
        });
        let b = SharedBreaker::new("agent:a", &BreakerConfig::default()).with_hook(hook);
        let t0 = Instant::now();
        for _ in 0..5 {
            b.try_acquire(t0).unwrap().failure(t0);
        }
        let later = t0 + Duration::from_secs(60);
        b.try_acquire(later).unwrap().success(later);
        b.try_acquire(later).unwrap().success(later);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                "agent:a:closed->open",
                "agent:a:open->half_open",
                "agent:a:half_open->closed"
            ]
        );
    }

    #[test]
    fn dropped_probe_permit_frees_the_slot() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let hook: StateChangeHook = Arc::new(move |_, _, _| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let b = Arc::new(SharedBreaker::new("p", &BreakerConfig::default()).with_hook(hook));
        let t0 = Instant::now();
        for _ in 0..5 {
            b.try_acquire_owned(t0).unwrap().failure(t0);
        }
        let later = t0 + Duration::from_secs(60);
        let probe = b.try_acquire_owned(later).unwrap();
        assert!(probe.is_probe());
        assert!(b.try_acquire(later).is_err());
        drop(probe);
        assert!(b.try_acquire(later).unwrap().is_probe());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn non_retryable_errors_do_not_count() {
        let b = SharedBreaker::new("p", &BreakerConfig::default());
        let t0 = Instant::now();
        for _ in 0..10 {
            let r: Result<(), &str> = Err("invalid request");
            b.try_acquire(t0).unwrap().record(&r, |_| Retry::No, t0);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().consecutive_failures(), 0);
    }
}
