//! Resilience hot paths: the circuit-breaker check + record that wraps every agent and
//! LLM call (budget: ≤ 50 ns uncontended), backoff computation, and the other per-call
//! primitives (registry lookup, bulkhead slot, degradation read, Retry-After parsing).
//!
//! Run: `cargo bench -p genesis-benches --bench resilience`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use genesis_resilience::{
    Backoff, BackoffConfig, BreakerConfig, BreakerRegistry, Bulkhead, BulkheadConfig,
    CircuitBreaker, DegradationConfig, DegradationLevel, SharedBreaker, SharedDegradation,
    classify_http_status, parse_retry_after,
};
use tokio::time::Instant;

fn breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker");
    let config = BreakerConfig::default();
    let now = Instant::now();

    // The pure state machine: acquire a permit and record a success.
    let mut pure = CircuitBreaker::new(&config);
    group.bench_function("pure_check_record_success", |b| {
        b.iter(|| {
            let admitted = pure.try_acquire(black_box(now));
            if let Ok(admitted) = admitted {
                black_box(pure.record_success(admitted.permit, now));
            }
        })
    });

    // What the executor does per call: the Mutex-wrapped breaker, uncontended.
    let shared = SharedBreaker::new("agent:bench", &config);
    group.bench_function("shared_check_record_success", |b| {
        b.iter(|| {
            if let Ok(permit) = shared.try_acquire(black_box(now)) {
                permit.success(now);
            }
        })
    });

    // Closed breaker taking failures that never reach the threshold (a success every
    // fourth call), so the failure-rate window is summed on each failure.
    let flaky = SharedBreaker::new("agent:flaky", &config);
    let mut i = 0u32;
    group.bench_function("shared_check_record_mixed", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            if let Ok(permit) = flaky.try_acquire(black_box(now)) {
                if i.is_multiple_of(4) {
                    permit.success(now);
                } else {
                    permit.failure(now);
                }
            }
        })
    });

    // Including two reads of tokio's clock, as `SharedBreaker::call` does.
    group.bench_function("shared_check_record_with_clock", |b| {
        b.iter(|| {
            if let Ok(permit) = shared.try_acquire(Instant::now()) {
                permit.success(Instant::now());
            }
        })
    });

    // Two threads hammering one breaker: the cost per check + record under contention
    // (wall time per operation of one thread while another runs the same loop).
    let contended = Arc::new(SharedBreaker::new("agent:contended", &config));
    group.bench_function("shared_check_record_contended_2_threads", |b| {
        b.iter_custom(|iters| {
            let other = Arc::clone(&contended);
            std::thread::scope(|scope| {
                scope.spawn(move || {
                    for _ in 0..iters {
                        if let Ok(permit) = other.try_acquire(now) {
                            permit.success(now);
                        }
                    }
                });
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    if let Ok(permit) = contended.try_acquire(black_box(now)) {
                        permit.success(now);
                    }
                }
                start.elapsed()
            })
        })
    });

    // Fast rejection while open.
    let open = SharedBreaker::new("agent:open", &config);
    for _ in 0..config.failure_threshold {
        if let Ok(permit) = open.try_acquire(now) {
            permit.failure(now);
        }
    }
    group.bench_function("shared_reject_open", |b| {
        b.iter(|| black_box(open.try_acquire(black_box(now)).is_err()))
    });

    // Registry lookup of an existing key among 1,000.
    let registry = BreakerRegistry::new(config.clone());
    for i in 0..1_000 {
        registry.get(&format!("agent:{i}"));
    }
    group.bench_function("registry_get_existing_of_1000", |b| {
        b.iter(|| black_box(registry.get(black_box("agent:500"))))
    });
    group.finish();
}

fn backoff(c: &mut Criterion) {
    let mut group = c.benchmark_group("backoff");
    let backoff = Backoff::with_seed(BackoffConfig::default(), 42);
    group.bench_function("delay", |b| {
        b.iter(|| black_box(backoff.delay(black_box(2), None)))
    });
    group.bench_function("delay_with_retry_after", |b| {
        b.iter(|| black_box(backoff.delay(black_box(1), Some(Duration::from_secs(2)))))
    });
    let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470);
    group.bench_function("parse_retry_after_http_date", |b| {
        b.iter(|| {
            black_box(parse_retry_after(
                black_box("Wed, 21 Oct 2015 07:28:00 GMT"),
                black_box(now),
            ))
        })
    });
    group.bench_function("classify_http_status", |b| {
        b.iter(|| black_box(classify_http_status(black_box(503), None)))
    });
    group.finish();
}

fn others(c: &mut Criterion) {
    let mut group = c.benchmark_group("primitives");
    let bulkhead = Bulkhead::new(BulkheadConfig::default());
    group.bench_function("bulkhead_try_acquire_release", |b| {
        b.iter(|| black_box(bulkhead.try_acquire(black_box("agent:coder")).is_ok()))
    });
    let degradation = Arc::new(SharedDegradation::new(DegradationConfig::default()));
    group.bench_function("degradation_level_read", |b| {
        b.iter(|| black_box(degradation.level() == DegradationLevel::Full))
    });
    group.finish();
}

criterion_group!(benches, breaker, backoff, others);
criterion_main!(benches);
