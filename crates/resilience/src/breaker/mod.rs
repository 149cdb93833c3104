//! Circuit breakers: a pure state machine ([`CircuitBreaker`]), its thread-safe wrapper
//! ([`SharedBreaker`]), a bounded keyed registry ([`BreakerRegistry`]) and a tower layer
//! ([`BreakerLayer`]).
//!
//! ```text
//!            N consecutive failures, or failure rate ≥ threshold over the window
//!   Closed ──────────────────────────────────────────────────────────────▶ Open
//!     ▲                                                                    │ cool-down elapsed:
//!     │ M probe successes                 any probe failure                │ next acquire is a probe
//!     └──────────────────── HalfOpen ◀──────────────────────────────────────┘
//!                              └──────────────────────────────────────────▶ Open
//! ```

mod layer;
mod registry;
mod shared;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::BreakerConfig;

pub use layer::{BreakerLayer, BreakerService};
pub use registry::{BreakerCounts, BreakerRegistry};
pub use shared::{BreakerPermit, SharedBreaker, StateChangeHook};

/// The three breaker states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BreakerState {
    /// Calls flow; failures are counted.
    Closed,
    /// Calls are rejected until the cool-down ends.
    Open,
    /// A bounded number of probe calls test whether the dependency recovered.
    HalfOpen,
}

impl BreakerState {
    /// The snake_case name used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change, reported so callers can log it and update metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
}

/// Why a breaker opened ([`CircuitBreaker::trip_cause`]), for logs that name the rule
/// and the counts.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum TripCause {
    /// `failure_threshold` failures in a row.
    ConsecutiveFailures {
        /// Failures in a row.
        failures: u32,
        /// The configured `failure_threshold`.
        threshold: u32,
    },
    /// At least `failure_rate.threshold` of the calls in the window failed (with at
    /// least `failure_rate.min_calls` calls).
    FailureRate {
        /// Failed calls in the window.
        failures: u32,
        /// Calls in the window.
        calls: u32,
        /// The configured `failure_rate.threshold`.
        threshold: f64,
    },
    /// A half-open probe failed.
    ProbeFailed,
}

impl fmt::Display for TripCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TripCause::ConsecutiveFailures {
                failures,
                threshold,
            } => write!(
                f,
                "{failures} failures in a row (rule: failure_threshold {threshold})"
            ),
            TripCause::FailureRate {
                failures,
                calls,
                threshold,
            } => write!(
                f,
                "{failures} of {calls} calls in the window failed (rule: failure_rate.threshold {threshold})"
            ),
            TripCause::ProbeFailed => f.write_str("a half-open probe failed"),
        }
    }
}

/// Admission to make one call. Hand it back to [`CircuitBreaker::record_success`],
/// [`CircuitBreaker::record_failure`] or [`CircuitBreaker::release`]; results of permits
/// issued before the breaker last changed state are ignored.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "report the outcome of the call with record_success, record_failure or release"]
pub struct Permit {
    generation: u64,
    probe: bool,
}

impl Permit {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// The result of a successful [`CircuitBreaker::try_acquire`].
#[derive(Debug)]
#[must_use = "the permit must be reported back to the breaker"]
pub struct Admitted {
    /// The permit for the call.
    pub permit: Permit,
    /// `Open → HalfOpen` when this acquire ended the cool-down.
    pub transition: Option<Transition>,
}

/// The call was rejected without being made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// The state that rejected it (`Open`, or `HalfOpen` with every probe slot taken).
    pub state: BreakerState,
    /// Time until a probe can be admitted: exact when open, an upper bound when half-open
    /// (probe slots free up as soon as in-flight probes finish).
    pub retry_in: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Inner {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        in_flight: u32,
        successes: u32,
        last_probe: Instant,
    },
}

const BUCKETS: usize = 10;

/// Longest cool-down honoured (`Instant` arithmetic must not overflow); longer configured
/// values are clamped, and [`BreakerConfig::validate`] rejects them.
pub(crate) const MAX_COOL_DOWN: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    index: u64,
    calls: u32,
    failures: u32,
}

/// Failure counts over a sliding window of `BUCKETS` time buckets.
#[derive(Debug, Clone)]
struct Window {
    width_nanos: u64,
    epoch: Option<Instant>,
    /// Cache of the newest bucket: its index and the instant it ends, so consecutive
    /// records in one bucket skip the division.
    current: Option<(u64, Instant)>,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    fn new(window: Duration) -> Self {
        let width = u64::try_from(window.as_nanos() / BUCKETS as u128).unwrap_or(u64::MAX);
        Window {
            width_nanos: width.max(1),
            epoch: None,
            current: None,
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn bucket_index(&mut self, now: Instant) -> u64 {
        if let Some((index, end)) = self.current
            && now < end
            && Some(now) >= self.epoch
        {
            return index;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let nanos =
            u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX);
        let slot = nanos / self.width_nanos;
        // +1 so that index 0 never matches a fresh default bucket.
        let index = slot + 1;
        let end = slot
            .checked_add(1)
            .and_then(|n| n.checked_mul(self.width_nanos))
            .and_then(|end| epoch.checked_add(Duration::from_nanos(end)));
        self.current = end.map(|end| (index, end));
        index
    }

    /// Records a call; returns (calls, failures) over the window when `failed`.
    fn record(&mut self, now: Instant, failed: bool) -> Option<(u32, u32)> {
        let index = self.bucket_index(now);
        let slot = &mut self.buckets[(index % BUCKETS as u64) as usize];
        if slot.index != index {
            *slot = Bucket {
                index,
                calls: 0,
                failures: 0,
            };
        }
        slot.calls = slot.calls.saturating_add(1);
        if !failed {
            return None;
        }
        slot.failures = slot.failures.saturating_add(1);
        let (mut calls, mut failures) = (0u32, 0u32);
        for b in &self.buckets {
            if b.index != 0 && b.index <= index && index - b.index < BUCKETS as u64 {
                calls = calls.saturating_add(b.calls);
                failures = failures.saturating_add(b.failures);
            }
        }
        Some((calls, failures))
    }

    fn reset(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

/// The breaker state machine: a plain value with `&mut self` methods and the current time
/// as an argument, so it is testable without a runtime. Wrap it in a [`SharedBreaker`]
/// to share it between tasks.
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use genesis_resilience::{BreakerConfig, BreakerState, CircuitBreaker};
///
/// let mut breaker = CircuitBreaker::new(&BreakerConfig::default());
/// let t0 = Instant::now();
/// for _ in 0..5 {
///     let admitted = breaker.try_acquire(t0).unwrap();
///     breaker.record_failure(admitted.permit, t0);
/// }
/// assert_eq!(breaker.state(), BreakerState::Open);
/// assert!(breaker.try_acquire(t0 + Duration::from_secs(59)).is_err());
/// let probe = breaker.try_acquire(t0 + Duration::from_secs(60)).unwrap();
/// assert!(probe.permit.is_probe());
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    inner: Inner,
    generation: u64,
    consecutive_failures: u32,
    failure_threshold: u32,
    cool_down: Duration,
    max_probes: u32,
    success_threshold: u32,
    rate: Option<(f64, u32)>,
    window: Window,
    /// Why it last opened.
    trip: Option<TripCause>,
}

impl CircuitBreaker {
    /// A closed breaker. `config` should have passed [`BreakerConfig::validate`]; zero
    /// thresholds are treated as 1 and a cool-down over 365 days as 365 days.
    pub fn new(config: &BreakerConfig) -> Self {
        let rate = &config.failure_rate;
        CircuitBreaker {
            inner: Inner::Closed,
            generation: 0,
            consecutive_failures: 0,
            failure_threshold: config.failure_threshold.max(1),
            cool_down: config.cool_down.min(MAX_COOL_DOWN),
            max_probes: config.half_open_max_probes.max(1),
            success_threshold: config.success_threshold.max(1),
            rate: rate
                .enabled
                .then_some((rate.threshold, rate.min_calls.max(1))),
            window: Window::new(rate.window),
            trip: None,
        }
    }

    /// Why the breaker last opened (`None` until it first does).
    pub fn trip_cause(&self) -> Option<TripCause> {
        self.trip
    }

    /// The stored state. An open breaker whose cool-down has passed still reads `Open`
    /// until the next [`try_acquire`](Self::try_acquire); use
    /// [`effective_state`](Self::effective_state) for what a caller would see now.
    pub fn state(&self) -> BreakerState {
        match self.inner {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// The state a call at `now` would meet: `HalfOpen` once an open breaker's cool-down
    /// has passed.
    pub fn effective_state(&self, now: Instant) -> BreakerState {
        match self.inner {
            Inner::Open { until } if now >= until => BreakerState::HalfOpen,
            _ => self.state(),
        }
    }

    /// Probes currently in flight (0 unless half-open).
    pub fn probes_in_flight(&self) -> u32 {
        match self.inner {
            Inner::HalfOpen { in_flight, .. } => in_flight,
            _ => 0,
        }
    }

    /// Consecutive failures counted while closed.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Asks to make one call at `now`.
    ///
    /// Closed admits. Open rejects until the cool-down ends; the first acquire after it
    /// moves to half-open and is the first probe. Half-open admits up to
    /// `half_open_max_probes` concurrent probes; probes neither reported nor released within
    /// one cool-down are presumed lost and their slots are freed, so a leaked permit can
    /// never wedge the breaker.
    ///
    /// # Errors
    /// [`Rejected`] with the time until a probe may be admitted.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Admitted, Rejected> {
        match self.inner {
            Inner::Closed => Ok(Admitted {
                permit: self.permit(false),
                transition: None,
            }),
            Inner::Open { until } => {
                if now < until {
                    return Err(Rejected {
                        state: BreakerState::Open,
                        retry_in: until - now,
                    });
                }
                let transition = self.transition(Inner::HalfOpen {
                    in_flight: 1,
                    successes: 0,
                    last_probe: now,
                });
                Ok(Admitted {
                    permit: self.permit(true),
                    transition: Some(transition),
                })
            }
            Inner::HalfOpen {
                in_flight,
                successes,
                last_probe,
            } => {
                let expires = last_probe + self.cool_down;
                let in_flight = if in_flight >= self.max_probes && now >= expires {
                    // Presumed lost: forget them, and ignore their late results.
                    self.generation += 1;
                    0
                } else {
                    in_flight
                };
                if in_flight >= self.max_probes {
                    return Err(Rejected {
                        state: BreakerState::HalfOpen,
                        retry_in: expires.saturating_duration_since(now),
                    });
                }
                self.inner = Inner::HalfOpen {
                    in_flight: in_flight + 1,
                    successes,
                    last_probe: now,
                };
                Ok(Admitted {
                    permit: self.permit(true),
                    transition: None,
                })
            }
        }
    }

    /// Reports that the call behind `permit` succeeded.
    pub fn record_success(&mut self, permit: Permit, now: Instant) -> Option<Transition> {
        if permit.generation != self.generation {
            return None;
        }
        match self.inner {
            Inner::Closed => {
                self.consecutive_failures = 0;
                if self.rate.is_some() {
                    self.window.record(now, false);
                }
                None
            }
            Inner::HalfOpen {
                in_flight,
                successes,
                last_probe,
            } => {
                let successes = successes + 1;
                if successes >= self.success_threshold {
                    Some(self.transition(Inner::Closed))
                } else {
                    self.inner = Inner::HalfOpen {
                        in_flight: in_flight.saturating_sub(1),
                        successes,
                        last_probe,
                    };
                    None
                }
            }
            Inner::Open { .. } => None,
        }
    }

    /// Reports that the call behind `permit` failed in a way that counts against the
    /// dependency (see [`Retry::Yes`](crate::Retry::Yes)).
    pub fn record_failure(&mut self, permit: Permit, now: Instant) -> Option<Transition> {
        if permit.generation != self.generation {
            return None;
        }
        match self.inner {
            Inner::Closed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                let mut cause = (self.consecutive_failures >= self.failure_threshold).then_some(
                    TripCause::ConsecutiveFailures {
                        failures: self.consecutive_failures,
                        threshold: self.failure_threshold,
                    },
                );
                if let Some((threshold, min_calls)) = self.rate
                    && let Some((calls, failures)) = self.window.record(now, true)
                    && cause.is_none()
                    && calls >= min_calls
                    && f64::from(failures) >= threshold * f64::from(calls)
                {
                    cause = Some(TripCause::FailureRate {
                        failures,
                        calls,
                        threshold,
                    });
                }
                let cause = cause?;
                self.trip = Some(cause);
                Some(self.open(now))
            }
            Inner::HalfOpen { .. } => {
                self.trip = Some(TripCause::ProbeFailed);
                Some(self.open(now))
            }
            Inner::Open { .. } => None,
        }
    }

    /// Gives the permit back without an outcome (the call was cancelled, or failed in a
    /// way that says nothing about the dependency, e.g. a validation error). Frees the
    /// probe slot if it was a probe.
    pub fn release(&mut self, permit: Permit) {
        if permit.generation != self.generation || !permit.probe {
            return;
        }
        if let Inner::HalfOpen { in_flight, .. } = &mut self.inner {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    fn permit(&self, probe: bool) -> Permit {
        Permit {
            generation: self.generation,
            probe,
        }
    }

    fn open(&mut self, now: Instant) -> Transition {
        self.transition(Inner::Open {
            until: now + self.cool_down,
        })
    }

    fn transition(&mut self, to: Inner) -> Transition {
        let from = self.state();
        self.inner = to;
        self.generation += 1;
        self.consecutive_failures = 0;
        self.window.reset();
        Transition {
            from,
            to: self.state(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FailureRateConfig;
    use proptest::prelude::*;

    fn config() -> BreakerConfig {
        let mut c = BreakerConfig::default();
        c.failure_rate.enabled = false;
        c
    }

    fn fail(b: &mut CircuitBreaker, now: Instant) -> Option<Transition> {
        let a = b.try_acquire(now).unwrap();
        b.record_failure(a.permit, now)
    }

    fn succeed(b: &mut CircuitBreaker, now: Instant) -> Option<Transition> {
        let a = b.try_acquire(now).unwrap();
        b.record_success(a.permit, now)
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn full_cycle() {
        let mut b = CircuitBreaker::new(&config());
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(fail(&mut b, t0), None);
        }
        assert_eq!(
            fail(&mut b, t0),
            Some(Transition {
                from: BreakerState::Closed,
                to: BreakerState::Open
            })
        );
        let rejected = b.try_acquire(t0 + 10 * S).unwrap_err();
        assert_eq!(rejected.retry_in, 50 * S);
        assert_eq!(b.effective_state(t0 + 59 * S), BreakerState::Open);
        assert_eq!(b.effective_state(t0 + 60 * S), BreakerState::HalfOpen);
        let probe = b.try_acquire(t0 + 60 * S).unwrap();
        assert!(probe.permit.is_probe());
        assert_eq!(probe.transition.map(|t| t.to), Some(BreakerState::HalfOpen));
        // One probe at a time.
        assert_eq!(
            b.try_acquire(t0 + 60 * S).unwrap_err().state,
            BreakerState::HalfOpen
        );
        assert_eq!(b.record_success(probe.permit, t0 + 61 * S), None);
        assert_eq!(
            succeed(&mut b, t0 + 62 * S).map(|t| t.to),
            Some(BreakerState::Closed)
        );
    }

    #[test]
    fn huge_cool_down_does_not_overflow() {
        let c = BreakerConfig {
            cool_down: Duration::from_secs(u64::MAX),
            ..config()
        };
        assert!(c.validate().is_err());
        let mut b = CircuitBreaker::new(&c);
        let t0 = Instant::now();
        for _ in 0..5 {
            fail(&mut b, t0);
        }
        assert_eq!(
            b.try_acquire(t0 + S).unwrap_err().retry_in,
            MAX_COOL_DOWN - S
        );
    }

    #[test]
    fn success_resets_the_consecutive_count() {
        let mut b = CircuitBreaker::new(&config());
        let t0 = Instant::now();
        for _ in 0..4 {
            fail(&mut b, t0);
        }
        succeed(&mut b, t0);
        for _ in 0..4 {
            assert_eq!(fail(&mut b, t0), None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn stale_permits_are_ignored() {
        let mut b = CircuitBreaker::new(&config());
        let t0 = Instant::now();
        let early = b.try_acquire(t0).unwrap().permit;
        for _ in 0..5 {
            fail(&mut b, t0);
        }
        let probe = b.try_acquire(t0 + 60 * S).unwrap().permit;
        // A success from before the breaker opened is not a probe success.
        assert_eq!(b.record_success(early, t0 + 61 * S), None);
        assert_eq!(b.probes_in_flight(), 1);
        assert_eq!(
            b.record_failure(probe, t0 + 61 * S).map(|t| t.to),
            Some(BreakerState::Open)
        );
    }

    #[test]
    fn released_probe_frees_its_slot_and_lost_probe_expires() {
        let mut b = CircuitBreaker::new(&config());
        let t0 = Instant::now();
        for _ in 0..5 {
            fail(&mut b, t0);
        }
        let probe = b.try_acquire(t0 + 60 * S).unwrap().permit;
        b.release(probe);
        let lost = b.try_acquire(t0 + 61 * S).unwrap().permit;
        assert!(b.try_acquire(t0 + 120 * S).is_err());
        let fresh = b.try_acquire(t0 + 121 * S).unwrap().permit;
        // The lost probe's late failure no longer counts.
        assert_eq!(b.record_failure(lost, t0 + 122 * S), None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.record_success(fresh, t0 + 122 * S), None);
    }

    #[test]
    fn failure_rate_over_window_opens() {
        let c = BreakerConfig {
            failure_threshold: 100,
            failure_rate: FailureRateConfig {
                enabled: true,
                threshold: 0.5,
                min_calls: 10,
                window: 10 * S,
            },
            ..BreakerConfig::default()
        };
        let mut b = CircuitBreaker::new(&c);
        let t0 = Instant::now();
        // Alternate: 50 % failures, but never 100 consecutive.
        let mut opened = None;
        for i in 0..20u32 {
            let now = t0 + Duration::from_millis(u64::from(i) * 100);
            let t = if i % 2 == 0 {
                succeed(&mut b, now)
            } else {
                fail(&mut b, now)
            };
            if t.is_some() {
                opened = Some(i);
                break;
            }
        }
        // 10 calls with 5 failures reached at i = 9.
        assert_eq!(opened, Some(9));
        // Audit R8 H3: the log said "circuit breaker opened" without the rule or counts.
        let cause = b.trip_cause().unwrap();
        assert_eq!(
            cause,
            TripCause::FailureRate {
                failures: 5,
                calls: 10,
                threshold: 0.5
            }
        );
        assert_eq!(
            cause.to_string(),
            "5 of 10 calls in the window failed (rule: failure_rate.threshold 0.5)"
        );
    }

    #[test]
    fn the_trip_cause_names_the_rule_and_the_counts() {
        let mut b = CircuitBreaker::new(&config());
        let t0 = Instant::now();
        assert_eq!(b.trip_cause(), None);
        for _ in 0..5 {
            fail(&mut b, t0);
        }
        assert_eq!(
            b.trip_cause().map(|c| c.to_string()).as_deref(),
            Some("5 failures in a row (rule: failure_threshold 5)")
        );
        let probe = b.try_acquire(t0 + 61 * S).unwrap();
        b.record_failure(probe.permit, t0 + 61 * S);
        assert_eq!(b.trip_cause(), Some(TripCause::ProbeFailed));
    }

    #[test]
    fn old_failures_slide_out_of_the_window() {
        let c = BreakerConfig {
            failure_threshold: 100,
            failure_rate: FailureRateConfig {
                min_calls: 4,
                window: 10 * S,
                ..FailureRateConfig::default()
            },
            ..BreakerConfig::default()
        };
        let mut b = CircuitBreaker::new(&c);
        let t0 = Instant::now();
        for _ in 0..3 {
            fail(&mut b, t0);
        }
        succeed(&mut b, t0);
        // 11 s later the three failures have left the window: 1 failure in 4 calls.
        let later = t0 + 11 * S;
        for _ in 0..3 {
            succeed(&mut b, later);
        }
        assert_eq!(fail(&mut b, later), None);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    proptest! {
        #[test]
        fn window_matches_a_naive_count(
            steps in proptest::collection::vec((0u64..3_000, any::<bool>()), 1..200),
        ) {
            let width = Duration::from_millis(1_000);
            let mut w = Window::new(width * BUCKETS as u32);
            let mut now = Instant::now();
            let mut log: Vec<(u64, bool)> = Vec::new();
            let mut epoch = None;
            for (advance, failed) in steps {
                now += Duration::from_millis(advance);
                // Buckets are aligned to the first record.
                let epoch = *epoch.get_or_insert(now);
                let bucket = u64::try_from((now - epoch).as_millis()).unwrap() / 1_000;
                log.push((bucket, failed));
                let got = w.record(now, failed);
                if failed {
                    let live = log.iter().filter(|(b, _)| bucket - b < BUCKETS as u64);
                    let calls = live.clone().count() as u32;
                    let failures = live.filter(|(_, f)| *f).count() as u32;
                    prop_assert_eq!(got, Some((calls, failures)));
                } else {
                    prop_assert_eq!(got, None);
                }
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire,
        Succeed(usize),
        Fail(usize),
        Release(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Acquire),
            3 => any::<usize>().prop_map(Op::Succeed),
            3 => any::<usize>().prop_map(Op::Fail),
            1 => any::<usize>().prop_map(Op::Release),
            2 => (0u64..90_000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #[test]
        fn probes_bounded_and_open_never_outlives_cool_down(
            ops in proptest::collection::vec(op(), 1..300),
            max_probes in 1u32..4,
            successes in 1u32..4,
            threshold in 1u32..6,
        ) {
            let c = BreakerConfig {
                failure_threshold: threshold,
                half_open_max_probes: max_probes,
                success_threshold: successes,
                failure_rate: FailureRateConfig {
                    min_calls: 5,
                    ..FailureRateConfig::default()
                },
                ..BreakerConfig::default()
            };
            let cool_down = c.cool_down;
            let mut b = CircuitBreaker::new(&c);
            let mut now = Instant::now();
            let mut held: Vec<Permit> = Vec::new();
            let mut opened_at: Option<Instant> = None;
            for op in ops {
                match op {
                    Op::Acquire => match b.try_acquire(now) {
                        Ok(a) => {
                            if a.transition.is_some() {
                                opened_at = None;
                            }
                            held.push(a.permit);
                        }
                        Err(r) => {
                            // Open past its cool-down must admit a probe.
                            if r.state == BreakerState::Open {
                                let at = opened_at.unwrap();
                                prop_assert!(now < at + cool_down);
                                prop_assert_eq!(r.retry_in, at + cool_down - now);
                            }
                        }
                    },
                    Op::Succeed(i) | Op::Fail(i) | Op::Release(i) if !held.is_empty() => {
                        let p = held.swap_remove(i % held.len());
                        let t = match op {
                            Op::Succeed(_) => b.record_success(p, now),
                            Op::Fail(_) => b.record_failure(p, now),
                            _ => {
                                b.release(p);
                                None
                            }
                        };
                        if let Some(t) = t
                            && t.to == BreakerState::Open
                        {
                            opened_at = Some(now);
                        }
                    }
                    Op::Advance(ms) => now += Duration::from_millis(ms),
                    _ => {}
                }
                prop_assert!(b.probes_in_flight() <= max_probes);
                if b.state() == BreakerState::Open {
                    prop_assert!(opened_at.is_some());
                }
                if b.state() == BreakerState::HalfOpen {
                    // Never more probe permits live than allowed.
                    let live = held.iter().filter(|p| p.is_probe() && p.generation == b.generation).count();
                    prop_assert!(live as u32 <= max_probes);
                }
            }
        }
    }
}
