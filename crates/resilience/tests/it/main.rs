//! Integration tests on tokio's paused clock: the acceptance timeline of the breaker, the
//! retry loop, the tower stack and a small chaos run.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use genesis_resilience::{
    Backoff, BackoffConfig, BreakerConfig, BreakerLayer, BreakerPermit, BreakerRegistry,
    BreakerState, Bulkhead, BulkheadConfig, BulkheadPermit, Classify, DegradationConfig,
    DegradationLevel, DegradationSignals, ResilienceError, Retry, RetryError, RetryPolicy,
    SharedBreaker, SharedDegradation, StateChangeHook, Timeout, retry, retry_with,
};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

#[derive(Debug, Clone, PartialEq)]
enum CallError {
    /// 5xx / reset: transient.
    Unavailable,
    /// 429 with a Retry-After.
    RateLimited(Duration),
    /// 400: the request's fault.
    Invalid,
    Resilience(ResilienceError),
}

impl From<ResilienceError> for CallError {
    fn from(e: ResilienceError) -> Self {
        CallError::Resilience(e)
    }
}

impl Classify for CallError {
    fn classify(&self) -> Retry {
        match self {
            CallError::Unavailable => Retry::NOW,
            CallError::RateLimited(after) => Retry::Yes {
                after: Some(*after),
            },
            CallError::Invalid => Retry::No,
            CallError::Resilience(e) => e.classify(),
        }
    }
}

const SEC: Duration = Duration::from_secs(1);

type Seen = Arc<Mutex<Vec<(BreakerState, BreakerState)>>>;

fn recording_hook() -> (StateChangeHook, Seen) {
    let seen = Seen::default();
    let sink = Arc::clone(&seen);
    let hook: StateChangeHook = Arc::new(move |_key, from, to| {
        sink.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((from, to));
    });
    (hook, seen)
}

#[tokio::test(start_paused = true)]
async fn breaker_acceptance_timeline() {
    let (hook, seen) = recording_hook();
    let breaker = SharedBreaker::new("provider:flaky", &BreakerConfig::default()).with_hook(hook);
    let polled = AtomicU32::new(0);
    let failing = || async {
        polled.fetch_add(1, Ordering::SeqCst);
        Err::<(), _>(CallError::Unavailable)
    };
    let ok = || async {
        polled.fetch_add(1, Ordering::SeqCst);
        Ok::<_, CallError>(())
    };

    // Opens at the 5th consecutive failure, not before.
    for i in 1..=4 {
        assert_eq!(breaker.call(failing()).await, Err(CallError::Unavailable));
        assert_eq!(breaker.state(), BreakerState::Closed, "after failure {i}");
    }
    assert_eq!(breaker.call(failing()).await, Err(CallError::Unavailable));
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(polled.load(Ordering::SeqCst), 5);

    // Rejects fast while open: no call is made and no time passes.
    let before = Instant::now();
    tokio::time::sleep(59 * SEC).await;
    let t = Instant::now();
    match breaker.call(ok()).await {
        Err(CallError::Resilience(ResilienceError::CircuitOpen { key, retry_in })) => {
            assert_eq!(&*key, "provider:flaky");
            assert_eq!(retry_in, SEC);
        }
        other => panic!("expected circuit open, got {other:?}"),
    }
    assert_eq!(Instant::now(), t);
    assert_eq!(polled.load(Ordering::SeqCst), 5);

    // Half-opens after the 60 s cool-down: exactly one probe at a time.
    tokio::time::sleep(SEC).await;
    assert_eq!(Instant::now() - before, 60 * SEC);
    assert_eq!(
        breaker.effective_state(Instant::now()),
        BreakerState::HalfOpen
    );
    let probe = breaker.try_acquire(Instant::now()).unwrap();
    assert!(probe.is_probe());
    assert!(breaker.try_acquire(Instant::now()).is_err());
    probe.success(Instant::now());
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    // Closes after the second success.
    assert_eq!(breaker.call(ok()).await, Ok(()));
    assert_eq!(breaker.state(), BreakerState::Closed);

    // Open again, then a failing half-open probe re-opens for a full cool-down.
    for _ in 0..5 {
        let _ = breaker.call(failing()).await;
    }
    tokio::time::sleep(60 * SEC).await;
    assert_eq!(breaker.call(failing()).await, Err(CallError::Unavailable));
    assert_eq!(breaker.state(), BreakerState::Open);
    tokio::time::sleep(59 * SEC).await;
    assert!(matches!(
        breaker.call(ok()).await,
        Err(CallError::Resilience(ResilienceError::CircuitOpen { .. }))
    ));

    use BreakerState::*;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed),
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Open)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn non_retryable_error_is_attempted_once() {
    let backoff = Backoff::with_seed(BackoffConfig::default(), 1);
    let attempts = AtomicU32::new(0);
    let start = Instant::now();
    let result: Result<(), _> = retry(&backoff, || async {
        attempts.fetch_add(1, Ordering::SeqCst);
        Err(CallError::Invalid)
    })
    .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert_eq!(Instant::now(), start);
    match result {
        Err(RetryError::NotRetryable { attempts, source }) => {
            assert_eq!(attempts, 1);
            assert_eq!(source, CallError::Invalid);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn retryable_error_uses_every_retry_with_bounded_delays() {
    let mut config = BackoffConfig::default();
    config.base = Duration::from_millis(100);
    config.cap = Duration::from_millis(250);
    let backoff = Backoff::with_seed(config, 3);
    let times = Mutex::new(Vec::new());
    let result: Result<(), _> = retry(&backoff, || {
        times.lock().unwrap().push(Instant::now());
        async { Err(CallError::Unavailable) }
    })
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.attempts(), 4);
    assert!(
        err.to_string().contains("gave up after 4 attempts"),
        "{err}"
    );
    let times = times.into_inner().unwrap();
    assert_eq!(times.len(), 4);
    for (i, pair) in times.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let ceiling = backoff.ceiling(i as u32);
        assert!(gap <= ceiling, "retry {i}: {gap:?} > {ceiling:?}");
        assert!(gap <= Duration::from_millis(250));
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let backoff = Backoff::with_seed(BackoffConfig::default(), 5);
    let times = Mutex::new(Vec::new());
    let result = retry(&backoff, || {
        let mut t = times.lock().unwrap();
        t.push(Instant::now());
        let n = t.len();
        async move {
            if n < 3 {
                Err(CallError::RateLimited(7 * SEC))
            } else {
                Ok(n)
            }
        }
    })
    .await;
    assert_eq!(result.unwrap(), 3);
    let times = times.into_inner().unwrap();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= 7 * SEC && gap <= 60 * SEC, "{gap:?}");
    }

    // A Retry-After above the cap ends the loop instead of retrying too early.
    let attempts = AtomicU32::new(0);
    let result: Result<(), _> = retry(&backoff, || async {
        attempts.fetch_add(1, Ordering::SeqCst);
        Err(CallError::RateLimited(120 * SEC))
    })
    .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert!(matches!(result, Err(RetryError::Exhausted { .. })));
}

#[tokio::test(start_paused = true)]
async fn retry_with_closure_classifier() {
    // An error type from another crate that cannot implement Classify here.
    #[derive(Debug)]
    struct Foreign {
        status: u16,
    }
    let backoff = Backoff::with_seed(BackoffConfig::default(), 9);
    let attempts = AtomicU32::new(0);
    let result = retry_with(
        &backoff,
        |e: &Foreign| genesis_resilience::classify_http_status(e.status, None),
        || async {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                Err::<(), _>(Foreign { status: 503 })
            } else {
                Err(Foreign { status: 401 })
            }
        },
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.attempts(), 2);
    assert_eq!(err.into_source().status, 401);
}

#[tokio::test(start_paused = true)]
async fn tower_stack_retry_breaker_timeout() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    // Fails twice by hanging (timeout), then answers.
    let inner = service_fn(move |req: u32| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 2 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Ok::<_, BoxError>(req + 1)
        }
    });
    let breaker = Arc::new(SharedBreaker::new("agent:tower", &BreakerConfig::default()));
    let backoff = Arc::new(Backoff::with_seed(BackoffConfig::default(), 11));
    // Outermost retry, then the breaker (each attempt counts), then the per-attempt timeout.
    let stack = tower::ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(RetryPolicy::classified(
            backoff,
        )))
        .layer(BreakerLayer::classified(Arc::clone(&breaker)))
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(2)))
        .service(inner);
    let start = Instant::now();
    let answer = stack.oneshot(41).await.unwrap();
    assert_eq!(answer, 42);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(Instant::now() - start >= 4 * SEC);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.consecutive_failures(), 0);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn breaker_layer_fails_fast_when_open_and_ignores_non_retryable() {
    let breaker = Arc::new(SharedBreaker::new("provider:p", &BreakerConfig::default()));
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let mut svc = BreakerLayer::new(Arc::clone(&breaker), |e: &CallError| e.classify()).layer(
        service_fn(move |bad: bool| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                Err::<(), _>(if bad {
                    CallError::Invalid
                } else {
                    CallError::Unavailable
                })
            }
        }),
    );
    for _ in 0..10 {
        let _ = svc.ready().await.unwrap().call(true).await;
    }
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "validation errors do not trip"
    );
    for _ in 0..5 {
        let _ = svc.ready().await.unwrap().call(false).await;
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
    assert!(matches!(
        err,
        CallError::Resilience(ResilienceError::CircuitOpen { .. })
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 15);
}

/// Deterministic "a third of calls fail" from (task, attempt).
fn fails(task: u64, attempt: u32) -> bool {
    let mut z = task.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(attempt).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 31)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 29;
    z.is_multiple_of(3)
}

/// What the executor's re-route to the next alternative does: starting from `preferred`,
/// take a bulkhead slot and then a breaker permit on the first agent that admits the call.
/// When every agent's breaker is open, fails with the soonest `CircuitOpen`.
async fn acquire_agent(
    breakers: &BreakerRegistry,
    bulkhead: &Bulkhead,
    agents: &[&'static str],
    preferred: usize,
) -> Result<(BulkheadPermit, BreakerPermit<Arc<SharedBreaker>>), ResilienceError> {
    let mut soonest: Option<ResilienceError> = None;
    for i in 0..agents.len() {
        let agent = agents[(preferred + i) % agents.len()];
        let breaker = breakers.get(agent);
        let rejected = match breaker.try_acquire_owned(Instant::now()) {
            // Peek first so a slot is not queued for on an open breaker.
            Err(e) => e,
            Ok(peek) => {
                drop(peek);
                let slot = bulkhead.acquire(agent).await?;
                match breaker.try_acquire_owned(Instant::now()) {
                    Ok(permit) => return Ok((slot, permit)),
                    Err(e) => e,
                }
            }
        };
        if let ResilienceError::CircuitOpen { retry_in, .. } = &rejected {
            let sooner = match &soonest {
                Some(ResilienceError::CircuitOpen { retry_in: best, .. }) => retry_in < best,
                _ => true,
            };
            if sooner {
                soonest = Some(rejected);
            }
        }
    }
    Err(soonest.unwrap_or(ResilienceError::Timeout {
        after: Duration::ZERO,
    }))
}

#[tokio::test(start_paused = true)]
async fn a_third_of_calls_failing_loses_no_task() {
    let agents = ["agent:a", "agent:b", "agent:c"];
    let opens = Arc::new(AtomicU32::new(0));
    let open_counter = Arc::clone(&opens);
    let breakers = Arc::new(
        BreakerRegistry::new(BreakerConfig::default()).with_hook(Arc::new(move |_, _, to| {
            if to == BreakerState::Open {
                open_counter.fetch_add(1, Ordering::SeqCst);
            }
        })),
    );
    let mut bulkhead_config = BulkheadConfig::default();
    bulkhead_config.max_concurrent = 4;
    bulkhead_config.max_wait = Duration::from_secs(600);
    let bulkhead = Arc::new(Bulkhead::new(bulkhead_config));
    let mut backoff_config = BackoffConfig::default();
    backoff_config.max_retries = 8;
    let backoff = Arc::new(Backoff::with_seed(backoff_config, 21));
    let timeout = Timeout::new(Duration::from_secs(5));
    let failed_calls = Arc::new(AtomicU32::new(0));
    let mut handles = Vec::new();
    for task in 0..1000u64 {
        let (breakers, bulkhead, backoff, failed_calls) = (
            Arc::clone(&breakers),
            Arc::clone(&bulkhead),
            Arc::clone(&backoff),
            Arc::clone(&failed_calls),
        );
        handles.push(tokio::spawn(async move {
            let mut attempt = 0u32;
            let classify = |e: &CallError| match e {
                // Lost the race for a half-open probe slot: try again (another agent).
                CallError::Resilience(ResilienceError::CircuitOpen { .. }) => Retry::NOW,
                other => other.classify(),
            };
            retry_with(&backoff, classify, || {
                attempt += 1;
                let this_attempt = attempt;
                let (breakers, bulkhead, failed_calls) = (
                    Arc::clone(&breakers),
                    Arc::clone(&bulkhead),
                    Arc::clone(&failed_calls),
                );
                async move {
                    // Every candidate open: the executor defers the task until the soonest
                    // probe instead of spending an attempt.
                    let preferred = task as usize + this_attempt as usize;
                    let (_slot, permit) = loop {
                        match acquire_agent(&breakers, &bulkhead, &agents, preferred).await {
                            Ok(acquired) => break acquired,
                            Err(ResilienceError::CircuitOpen { retry_in, .. }) => {
                                tokio::time::sleep(retry_in.max(Duration::from_millis(100))).await;
                            }
                            Err(other) => return Err(other.into()),
                        }
                    };
                    let result = timeout
                        .run(async move {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            if fails(task, this_attempt) {
                                failed_calls.fetch_add(1, Ordering::SeqCst);
                                Err(CallError::Unavailable)
                            } else {
                                Ok(task)
                            }
                        })
                        .await;
                    permit.record(&result, CallError::classify, Instant::now());
                    result
                }
            })
            .await
        }));
    }
    let mut done = Vec::new();
    let mut lost = Vec::new();
    for h in handles {
        match h.await.unwrap() {
            Ok(task) => done.push(task),
            Err(e) => lost.push(e),
        }
    }
    let failed = failed_calls.load(Ordering::SeqCst);
    let opened = opens.load(Ordering::SeqCst);
    assert!(
        lost.is_empty(),
        "{} lost, first: {:?}; {failed} failed calls, {opened} opens",
        lost.len(),
        lost.first()
    );
    done.sort_unstable();
    assert_eq!(done, (0..1000).collect::<Vec<_>>());
    assert!(failed > 60, "the chaos was real: {failed} failed calls");
    eprintln!("1000 tasks: {failed} failed calls, {opened} breaker opens, none lost");
}

#[tokio::test(start_paused = true)]
async fn degradation_follows_provider_breakers_and_budget() {
    let providers = BreakerRegistry::new(BreakerConfig::default());
    let agents = BreakerRegistry::new(BreakerConfig::default());
    let levels = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&levels);
    let degradation = SharedDegradation::new(DegradationConfig::default())
        .with_hook(Arc::new(move |_, to| sink.lock().unwrap().push(to)));
    let signals =
        |budget| DegradationSignals::from_registries(&providers, &agents, budget, Instant::now());
    let fail_all = |key: &str| {
        let breaker = providers.get(key);
        for _ in 0..5 {
            breaker
                .try_acquire(Instant::now())
                .unwrap()
                .failure(Instant::now());
        }
    };
    providers.get("provider:openai");
    providers.get("provider:anthropic");
    assert_eq!(
        degradation.update(&signals(Some(0.9)), Instant::now()),
        DegradationLevel::Full
    );
    fail_all("provider:openai");
    assert_eq!(
        degradation.update(&signals(Some(0.9)), Instant::now()),
        DegradationLevel::Full
    );
    fail_all("provider:anthropic");
    assert_eq!(
        degradation.update(&signals(Some(0.9)), Instant::now()),
        DegradationLevel::LlmFallback
    );
    // Cool-down over: the next LLM call would probe, so the level recovers after the hold.
    tokio::time::sleep(60 * SEC).await;
    assert_eq!(
        degradation.update(&signals(Some(0.9)), Instant::now()),
        DegradationLevel::LlmFallback
    );
    tokio::time::sleep(30 * SEC).await;
    assert_eq!(
        degradation.update(&signals(Some(0.9)), Instant::now()),
        DegradationLevel::Full
    );
    // The budget running out degrades at once.
    assert_eq!(
        degradation.update(&signals(Some(0.0)), Instant::now()),
        DegradationLevel::Minimal
    );
    assert_eq!(degradation.level(), DegradationLevel::Minimal);
    assert_eq!(
        *levels.lock().unwrap(),
        vec![
            DegradationLevel::LlmFallback,
            DegradationLevel::Full,
            DegradationLevel::Minimal
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn tower_load_shed_and_concurrency_limit_are_retried() {
    let breaker = Arc::new(SharedBreaker::new("agent:shed", &BreakerConfig::default()));
    let mut backoff_config = BackoffConfig::default();
    backoff_config.base = Duration::from_secs(1);
    let backoff = Arc::new(Backoff::with_seed(backoff_config, 5));
    let served = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&served);
    let attempts = Arc::new(AtomicU32::new(0));
    let attempt_counter = Arc::clone(&attempts);
    // Order, outside in: retry each request; count each attempt in the breaker; shed load
    // instead of queueing when the one slot is taken; one call at a time; per-attempt deadline.
    let svc = tower::ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(RetryPolicy::classified(
            backoff,
        )))
        .layer(BreakerLayer::classified(Arc::clone(&breaker)))
        .map_request(move |n: u32| {
            attempt_counter.fetch_add(1, Ordering::SeqCst);
            n
        })
        .load_shed()
        .concurrency_limit(1)
        .timeout(Duration::from_secs(10))
        .service(service_fn(move |n: u32| {
            let counter = Arc::clone(&counter);
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                counter.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(n)
            }
        }));
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let second = tokio::spawn(svc.oneshot(2));
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(second.await.unwrap().unwrap(), 2);
    assert_eq!(served.load(Ordering::SeqCst), 2);
    let attempts = attempts.load(Ordering::SeqCst);
    assert!(
        attempts >= 3,
        "the second request was shed and retried: {attempts} attempts"
    );
    assert_eq!(breaker.state(), BreakerState::Closed);
}

/// A call that panics is a failure of the dependency (a bug or a broken response), and
/// the panic still reaches the caller: it used to leave the breaker Closed with no
/// failure counted, however many calls panicked.
#[tokio::test(start_paused = true)]
async fn a_panicking_call_counts_as_a_failure_and_still_panics() {
    let mut config = BreakerConfig::default();
    config.failure_threshold = 2;
    let breaker = Arc::new(SharedBreaker::new("svc", &config));
    for i in 0..2 {
        let b = Arc::clone(&breaker);
        let joined = tokio::spawn(async move {
            let _: Result<u32, CallError> = b.call(async { panic!("agent bug") }).await;
        })
        .await;
        let panic = joined.unwrap_err().into_panic();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"agent bug"));
        if i == 0 {
            assert_eq!(breaker.snapshot().consecutive_failures(), 1);
            assert_eq!(breaker.state(), BreakerState::Closed);
        }
    }
    // The second panic reached the threshold.
    assert_eq!(breaker.state(), BreakerState::Open);
    // Open: the next call is refused without being polled.
    let r: Result<u32, CallError> = breaker.call(async { panic!("never polled") }).await;
    assert!(matches!(
        r,
        Err(CallError::Resilience(ResilienceError::CircuitOpen { .. }))
    ));

    // The same through the tower layer.
    let breaker = Arc::new(SharedBreaker::new("layer", &config));
    let svc =
        BreakerLayer::classified(Arc::clone(&breaker)).layer(service_fn(|fail: bool| async move {
            assert!(!fail, "service bug");
            Ok::<u32, CallError>(1)
        }));
    for _ in 0..2 {
        let mut svc = svc.clone();
        let joined = tokio::spawn(async move { svc.ready().await.unwrap().call(true).await }).await;
        assert!(joined.unwrap_err().is_panic());
    }
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[test]
fn configs_are_built_with_setters_outside_the_crate() {
    let breaker = BreakerConfig::default()
        .with_failure_threshold(3)
        .with_cool_down(Duration::from_secs(5))
        .with_half_open_max_probes(2)
        .with_success_threshold(1)
        .with_max_keys(16)
        .with_failure_rate(
            genesis_resilience::FailureRateConfig::default()
                .with_threshold(0.25)
                .with_window(Duration::from_secs(30))
                .with_min_calls(8),
        );
    assert_eq!(breaker.failure_threshold, 3);
    assert_eq!(breaker.cool_down, Duration::from_secs(5));
    assert_eq!(breaker.half_open_max_probes, 2);
    assert_eq!(breaker.success_threshold, 1);
    assert_eq!(breaker.max_keys, 16);
    assert!(breaker.failure_rate.enabled);
    assert_eq!(breaker.failure_rate.threshold, 0.25);
    assert_eq!(breaker.failure_rate.window, Duration::from_secs(30));
    assert_eq!(breaker.failure_rate.min_calls, 8);
    breaker.validate().unwrap();
    let off = genesis_resilience::FailureRateConfig::default().with_enabled(false);
    assert!(!off.enabled);

    let backoff = BackoffConfig::default()
        .with_base(Duration::from_millis(10))
        .with_cap(Duration::from_millis(50))
        .with_max_retries(2);
    assert_eq!(
        (backoff.base, backoff.cap, backoff.max_retries),
        (Duration::from_millis(10), Duration::from_millis(50), 2)
    );
    backoff.validate().unwrap();
    // Setters do not validate: `validate` names the broken rule.
    let bad = BackoffConfig::default().with_cap(Duration::from_millis(1));
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("retry.cap")
    );
}
