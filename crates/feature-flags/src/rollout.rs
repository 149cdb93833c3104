//! The rollout controller: a pure state machine that walks a flag through percentage steps
//! while health is good and rolls it back to 0 % when it is not.
//!
//! The caller (the CLI's `deploy`, or a server task) owns the loop: read the persisted
//! [`RolloutState`], gather a [`HealthSample`] (or fail to), call
//! [`RolloutController::tick`] with the current time, apply the state's percentage to the
//! flag file with [`RolloutState::apply_to`], persist the state. No clocks, no I/O here.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::FlagError;
use crate::flag::Percent;
use crate::store::FlagStore;
use crate::time::Timestamp;

fn default_steps() -> Vec<Percent> {
    [1.0, 5.0, 10.0, 25.0, 50.0, 100.0]
        .into_iter()
        .filter_map(|p| Percent::try_new(p).ok())
        .collect()
}
fn default_dwell() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_max_error_rate() -> f64 {
    0.01
}
fn default_max_p95_latency() -> Duration {
    Duration::from_millis(500)
}
fn default_min_requests() -> u64 {
    100
}
fn default_missing_sample_tolerance() -> u32 {
    2
}

/// Controller settings (the `[rollout]` table of the facade's config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    /// Percentages to walk through, strictly increasing, ending at 100.
    #[serde(default = "default_steps")]
    pub steps: Vec<Percent>,
    /// Minimum time at each step, with healthy samples, before advancing.
    #[serde(default = "default_dwell", with = "humantime_serde")]
    pub dwell: Duration,
    /// Roll back when the error rate (0..=1) is above this.
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    /// Roll back when p95 latency is above this.
    #[serde(default = "default_max_p95_latency", with = "humantime_serde")]
    pub max_p95_latency: Duration,
    /// Do not judge a sample with fewer requests than this (hold instead).
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Consecutive missing or invalid samples that are held; one more rolls back.
    #[serde(default = "default_missing_sample_tolerance")]
    pub missing_sample_tolerance: u32,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            steps: default_steps(),
            dwell: default_dwell(),
            max_error_rate: default_max_error_rate(),
            max_p95_latency: default_max_p95_latency(),
            min_requests: default_min_requests(),
            missing_sample_tolerance: default_missing_sample_tolerance(),
        }
    }
}

impl RolloutConfig {
    /// Checks the rules documented on each field.
    ///
    /// # Errors
    /// [`FlagError::InvalidRolloutConfig`] naming the rule and the value.
    pub fn validate(&self) -> Result<(), FlagError> {
        let invalid = |rule, value: String| Err(FlagError::InvalidRolloutConfig { rule, value });
        let steps = || {
            format!(
                "{:?}",
                self.steps.iter().map(|p| p.as_f64()).collect::<Vec<_>>()
            )
        };
        if self.steps.is_empty() {
            return invalid("steps must not be empty", steps());
        }
        if self.steps.windows(2).any(|w| w[0] >= w[1]) || self.steps[0] <= Percent::ZERO {
            return invalid("steps must be positive and strictly increasing", steps());
        }
        if self.steps.last() != Some(&Percent::HUNDRED) {
            return invalid("the last step must be 100", steps());
        }
        if !(self.max_error_rate > 0.0 && self.max_error_rate <= 1.0) {
            return invalid(
                "max_error_rate must be in (0, 1]",
                self.max_error_rate.to_string(),
            );
        }
        if self.max_p95_latency.is_zero() {
            return invalid("max_p95_latency must be positive", "0s".to_owned());
        }
        Ok(())
    }
}

/// Health of the flag's traffic over the last window, as measured by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSample {
    /// Share of failed requests, `0..=1`.
    pub error_rate: f64,
    /// 95th percentile latency.
    #[serde(with = "humantime_serde")]
    pub p95_latency: Duration,
    /// Requests in the window.
    pub requests: u64,
}

impl HealthSample {
    fn is_valid(&self) -> bool {
        self.error_rate.is_finite() && (0.0..=1.0).contains(&self.error_rate)
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RolloutPhase {
    /// Walking through the steps.
    InProgress,
    /// Reached 100 % and stayed healthy for a dwell: done.
    Complete,
    /// Rolled back to 0 %; start a new rollout to try again.
    RolledBack,
}

/// Why the controller did not advance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HoldReason {
    /// Healthy, but the step's dwell time has not passed.
    Dwelling {
        /// Time left at this step.
        #[serde(with = "humantime_serde")]
        remaining: Duration,
    },
    /// Too little traffic to judge.
    InsufficientTraffic {
        /// Requests seen.
        requests: u64,
        /// Requests needed.
        min: u64,
    },
    /// No usable health sample (missing, or an error rate outside 0..=1); a missing sample
    /// is never taken as healthy.
    MissingSample {
        /// Consecutive missing samples so far.
        consecutive: u32,
        /// How many are tolerated before rolling back.
        tolerance: u32,
    },
    /// The rollout was rolled back earlier; nothing more happens.
    RolledBack,
}

/// Why the controller rolled back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RollbackReason {
    /// Error rate above the threshold.
    ErrorRate {
        /// Observed rate.
        observed: f64,
        /// Allowed rate.
        max: f64,
    },
    /// p95 latency above the threshold.
    P95Latency {
        /// Observed p95.
        #[serde(with = "humantime_serde")]
        observed: Duration,
        /// Allowed p95.
        #[serde(with = "humantime_serde")]
        max: Duration,
    },
    /// Too many consecutive missing or invalid samples: flying blind is not healthy.
    MissingSamples {
        /// Consecutive missing samples.
        consecutive: u32,
    },
    /// An operator asked for it.
    Manual {
        /// Their note.
        note: String,
    },
}

/// What the controller decided on one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RolloutAction {
    /// Moved to the next step.
    Advance {
        /// The new percentage.
        to: Percent,
    },
    /// Stayed at the current step.
    Hold {
        /// Why.
        reason: HoldReason,
    },
    /// Went to 0 %.
    RollBack {
        /// Why.
        reason: RollbackReason,
    },
    /// Finished at 100 %.
    Complete,
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HoldReason::Dwelling { remaining } => {
                write!(f, "dwelling, {}s left at this step", remaining.as_secs())
            }
            HoldReason::InsufficientTraffic { requests, min } => {
                write!(
                    f,
                    "insufficient traffic: {requests} requests < min_requests {min}"
                )
            }
            HoldReason::MissingSample {
                consecutive,
                tolerance,
            } => write!(
                f,
                "missing health sample ({consecutive} in a row, tolerance {tolerance})"
            ),
            HoldReason::RolledBack => f.write_str("rollout was rolled back"),
        }
    }
}

impl fmt::Display for RollbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackReason::ErrorRate { observed, max } => {
                write!(f, "error rate {observed} above max_error_rate {max}")
            }
            RollbackReason::P95Latency { observed, max } => write!(
                f,
                "p95 latency {}ms above max_p95_latency {}ms",
                observed.as_millis(),
                max.as_millis()
            ),
            RollbackReason::MissingSamples { consecutive } => {
                write!(f, "{consecutive} consecutive missing health samples")
            }
            RollbackReason::Manual { note } => write!(f, "manual rollback: {note}"),
        }
    }
}

impl fmt::Display for RolloutAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolloutAction::Advance { to } => write!(f, "advance to {to}"),
            RolloutAction::Hold { reason } => write!(f, "hold: {reason}"),
            RolloutAction::RollBack { reason } => write!(f, "roll back: {reason}"),
            RolloutAction::Complete => f.write_str("complete"),
        }
    }
}

/// One entry of a rollout's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutEvent {
    /// When.
    #[serde(deserialize_with = "crate::time::field::at")]
    pub at: Timestamp,
    /// What (holds are not recorded, only changes).
    pub action: RolloutAction,
}

/// The persisted state of one flag's rollout (JSON via serde; the CLI stores it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutState {
    /// The flag being rolled out.
    pub flag: String,
    /// Where the rollout is.
    pub phase: RolloutPhase,
    /// Index into the config's steps (checked against them by
    /// [`RolloutController::check_state`]).
    pub step: usize,
    /// The percentage in force: the step's while in progress, 100 when complete, 0 after
    /// a rollback.
    pub percent: Percent,
    /// When the rollout started.
    #[serde(deserialize_with = "crate::time::field::started_at")]
    pub started_at: Timestamp,
    /// When the current step began.
    #[serde(deserialize_with = "crate::time::field::step_started_at")]
    pub step_started_at: Timestamp,
    /// Consecutive missing or invalid samples.
    pub consecutive_missing: u32,
    /// Changes so far (advances, rollbacks, completion).
    pub history: Vec<RolloutEvent>,
}

impl RolloutState {
    /// Writes this state's percentage into `store`'s flag (see [`Flag::set_rollout_percent`]).
    /// A rolled-back state is at 0 %, which switches the flag off for everyone, canary
    /// subjects included.
    ///
    /// [`Flag::set_rollout_percent`]: crate::Flag::set_rollout_percent
    ///
    /// # Errors
    /// [`FlagError::UnknownFlag`] when the store lacks the flag.
    pub fn apply_to(&self, store: &mut FlagStore) -> Result<(), FlagError> {
        store.set_rollout_percent(&self.flag, self.percent)
    }

    /// The state as pretty JSON.
    ///
    /// # Errors
    /// [`FlagError::Serialize`] (not expected in practice).
    pub fn to_json_pretty(&self) -> Result<String, FlagError> {
        serde_json::to_string_pretty(self).map_err(|source| FlagError::Serialize { source })
    }

    /// Parses a state written by [`RolloutState::to_json_pretty`]. It is not checked
    /// against any settings: [`RolloutController::load_state`] does both.
    ///
    /// # Errors
    /// [`FlagError::Parse`].
    pub fn from_json(text: &str) -> Result<Self, FlagError> {
        serde_json::from_str(text).map_err(|error| FlagError::Parse {
            origin: "<rollout state>".to_owned(),
            error,
        })
    }
}

/// The rollout policy: pure, takes the time as an argument.
#[derive(Debug, Clone)]
pub struct RolloutController {
    config: RolloutConfig,
}

impl RolloutController {
    /// A controller with validated settings.
    ///
    /// # Errors
    /// As [`RolloutConfig::validate`].
    pub fn try_new(config: RolloutConfig) -> Result<Self, FlagError> {
        config.validate()?;
        Ok(RolloutController { config })
    }

    /// The settings.
    pub fn config(&self) -> &RolloutConfig {
        &self.config
    }

    /// Starts a rollout of `flag` at the first step.
    pub fn start(&self, flag: impl Into<String>, now: SystemTime) -> RolloutState {
        let now = Timestamp::from(now);
        let first = self
            .config
            .steps
            .first()
            .copied()
            .unwrap_or(Percent::HUNDRED);
        RolloutState {
            flag: flag.into(),
            phase: RolloutPhase::InProgress,
            step: 0,
            percent: first,
            started_at: now,
            step_started_at: now,
            consecutive_missing: 0,
            history: vec![RolloutEvent {
                at: now,
                action: RolloutAction::Advance { to: first },
            }],
        }
    }

    /// Checks that a (persisted) `state` fits these settings: in progress, `step` indexes
    /// `steps` and `percent` is that step's; complete is at 100 %; rolled back is at 0 %.
    /// A state written under other `steps` fails, rather than skipping to a step (or to
    /// 100 %) that the health samples never earned.
    ///
    /// # Errors
    /// [`FlagError::InvalidRolloutState`] naming the rule and the values.
    pub fn check_state(&self, state: &RolloutState) -> Result<(), FlagError> {
        let invalid = |rule, value| {
            Err(FlagError::InvalidRolloutState {
                flag: state.flag.clone(),
                rule,
                value,
            })
        };
        let steps = &self.config.steps;
        match state.phase {
            RolloutPhase::InProgress => match steps.get(state.step) {
                None => invalid(
                    "step must index the configured steps (flags.rollout.steps)",
                    format!("step {} of {} steps", state.step, steps.len()),
                ),
                Some(&configured) if configured != state.percent => invalid(
                    "percent must be the configured percentage of its step (flags.rollout.steps)",
                    format!(
                        "percent {} at step {} where the step is {configured}",
                        state.percent, state.step
                    ),
                ),
                Some(_) => Ok(()),
            },
            RolloutPhase::Complete if state.percent != Percent::HUNDRED => invalid(
                "a complete rollout must be at 100%",
                format!("percent {}", state.percent),
            ),
            RolloutPhase::RolledBack if state.percent != Percent::ZERO => invalid(
                "a rolled-back rollout must be at 0%",
                format!("percent {}", state.percent),
            ),
            _ => Ok(()),
        }
    }

    /// Parses a persisted state ([`RolloutState::from_json`]) and checks it against
    /// these settings ([`RolloutController::check_state`]).
    ///
    /// # Errors
    /// [`FlagError::Parse`] or [`FlagError::InvalidRolloutState`].
    pub fn load_state(&self, text: &str) -> Result<RolloutState, FlagError> {
        let state = RolloutState::from_json(text)?;
        self.check_state(&state)?;
        Ok(state)
    }

    /// Decides one step of the rollout from the latest health `sample` (`None` when the
    /// metrics could not be read) and updates `state`.
    ///
    /// Order of checks: the state must fit the settings
    /// ([`RolloutController::check_state`]); a finished rollout stays finished; a
    /// missing or invalid sample holds, and rolls back once more than
    /// `missing_sample_tolerance` arrive in a row; too little traffic holds; an error
    /// rate or p95 above its threshold rolls back to 0 %; otherwise the rollout holds
    /// until the step's dwell has passed, then advances, and completes after a healthy
    /// dwell at 100 %.
    ///
    /// # Errors
    /// [`FlagError::InvalidRolloutState`] when `state` does not fit the settings; `state`
    /// is left as it was.
    pub fn tick(
        &self,
        state: &mut RolloutState,
        sample: Option<&HealthSample>,
        now: SystemTime,
    ) -> Result<RolloutAction, FlagError> {
        self.check_state(state)?;
        Ok(self.decide(state, sample, Timestamp::from(now)))
    }

    /// [`RolloutController::tick`] on a state that passed [`RolloutController::check_state`].
    fn decide(
        &self,
        state: &mut RolloutState,
        sample: Option<&HealthSample>,
        now: Timestamp,
    ) -> RolloutAction {
        match state.phase {
            RolloutPhase::Complete => return RolloutAction::Complete,
            RolloutPhase::RolledBack => {
                return RolloutAction::Hold {
                    reason: HoldReason::RolledBack,
                };
            }
            RolloutPhase::InProgress => {}
        }
        let Some(sample) = sample.filter(|s| s.is_valid()) else {
            state.consecutive_missing = state.consecutive_missing.saturating_add(1);
            if state.consecutive_missing > self.config.missing_sample_tolerance {
                return self.roll_back(
                    state,
                    RollbackReason::MissingSamples {
                        consecutive: state.consecutive_missing,
                    },
                    now,
                );
            }
            return RolloutAction::Hold {
                reason: HoldReason::MissingSample {
                    consecutive: state.consecutive_missing,
                    tolerance: self.config.missing_sample_tolerance,
                },
            };
        };
        state.consecutive_missing = 0;
        if sample.requests < self.config.min_requests {
            return RolloutAction::Hold {
                reason: HoldReason::InsufficientTraffic {
                    requests: sample.requests,
                    min: self.config.min_requests,
                },
            };
        }
        if sample.error_rate > self.config.max_error_rate {
            return self.roll_back(
                state,
                RollbackReason::ErrorRate {
                    observed: sample.error_rate,
                    max: self.config.max_error_rate,
                },
                now,
            );
        }
        if sample.p95_latency > self.config.max_p95_latency {
            return self.roll_back(
                state,
                RollbackReason::P95Latency {
                    observed: sample.p95_latency,
                    max: self.config.max_p95_latency,
                },
                now,
            );
        }
        let dwelt = now.saturating_duration_since(state.step_started_at);
        if dwelt < self.config.dwell {
            return RolloutAction::Hold {
                reason: HoldReason::Dwelling {
                    remaining: self.config.dwell - dwelt,
                },
            };
        }
        // `check_state` bounds `step` below `steps.len()`: the addition cannot overflow.
        let action = match self.config.steps.get(state.step.saturating_add(1)) {
            Some(&next) => {
                state.step += 1;
                state.percent = next;
                state.step_started_at = now;
                RolloutAction::Advance { to: next }
            }
            None => {
                state.phase = RolloutPhase::Complete;
                state.percent = Percent::HUNDRED;
                RolloutAction::Complete
            }
        };
        state.history.push(RolloutEvent {
            at: now,
            action: action.clone(),
        });
        action
    }

    /// Rolls back on an operator's request (the CLI's `rollback`). Works on any state,
    /// one that fails [`RolloutController::check_state`] included: afterwards it is a
    /// valid rolled-back state at 0 %.
    pub fn manual_rollback(
        &self,
        state: &mut RolloutState,
        note: impl Into<String>,
        now: SystemTime,
    ) -> RolloutAction {
        self.roll_back(
            state,
            RollbackReason::Manual { note: note.into() },
            Timestamp::from(now),
        )
    }

    fn roll_back(
        &self,
        state: &mut RolloutState,
        reason: RollbackReason,
        now: Timestamp,
    ) -> RolloutAction {
        tracing::warn!(flag = %state.flag, from = %state.percent, %reason, "rollout rolled back");
        state.phase = RolloutPhase::RolledBack;
        state.percent = Percent::ZERO;
        state.step_started_at = now;
        let action = RolloutAction::RollBack { reason };
        state.history.push(RolloutEvent {
            at: now,
            action: action.clone(),
        });
        action
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn healthy() -> HealthSample {
        HealthSample {
            error_rate: 0.001,
            p95_latency: Duration::from_millis(120),
            requests: 1_000,
        }
    }

    fn controller() -> RolloutController {
        RolloutController::try_new(RolloutConfig {
            dwell: Duration::from_secs(60),
            ..RolloutConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        let c = RolloutConfig::default();
        c.validate().unwrap();
        let steps: Vec<f64> = c.steps.iter().map(|p| p.as_f64()).collect();
        assert_eq!(steps, [1.0, 5.0, 10.0, 25.0, 50.0, 100.0]);
        assert_eq!(c.max_error_rate, 0.01);
        assert_eq!(c.max_p95_latency, Duration::from_millis(500));
    }

    #[test]
    fn invalid_configs_name_the_rule() {
        let p = |v| Percent::try_new(v).unwrap();
        for (steps, rule) in [
            (vec![], "empty"),
            (vec![p(5.0), p(1.0), p(100.0)], "strictly increasing"),
            (vec![p(0.0), p(100.0)], "strictly increasing"),
            (vec![p(1.0), p(50.0)], "last step"),
        ] {
            let err = RolloutController::try_new(RolloutConfig {
                steps,
                ..RolloutConfig::default()
            })
            .unwrap_err();
            assert!(err.to_string().contains(rule), "{err}");
        }
        let err = RolloutController::try_new(RolloutConfig {
            max_error_rate: 0.0,
            ..RolloutConfig::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("max_error_rate"), "{err}");
    }

    #[test]
    fn advances_through_all_steps_then_completes() {
        let c = controller();
        let mut s = c.start("new_router_rollout", t(0));
        assert_eq!(s.percent.as_f64(), 1.0);
        let mut seen = vec![s.percent.as_f64()];
        let mut now = 0;
        loop {
            // Before the dwell: hold.
            let early = c.tick(&mut s, Some(&healthy()), t(now + 30)).unwrap();
            assert!(matches!(
                early,
                RolloutAction::Hold { reason: HoldReason::Dwelling { remaining } } if remaining == Duration::from_secs(30)
            ));
            now += 60;
            match c.tick(&mut s, Some(&healthy()), t(now)).unwrap() {
                RolloutAction::Advance { to } => seen.push(to.as_f64()),
                RolloutAction::Complete => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, [1.0, 5.0, 10.0, 25.0, 50.0, 100.0]);
        assert_eq!(s.phase, RolloutPhase::Complete);
        assert_eq!(
            c.tick(&mut s, None, t(now + 1)).unwrap(),
            RolloutAction::Complete
        );
    }

    #[test]
    fn error_rate_breach_rolls_back_to_zero() {
        let c = controller();
        let mut s = c.start("f", t(0));
        c.tick(&mut s, Some(&healthy()), t(60)).unwrap();
        assert_eq!(s.percent.as_f64(), 5.0);
        let bad = HealthSample {
            error_rate: 0.02,
            ..healthy()
        };
        let action = c.tick(&mut s, Some(&bad), t(70)).unwrap();
        assert_eq!(
            action,
            RolloutAction::RollBack {
                reason: RollbackReason::ErrorRate {
                    observed: 0.02,
                    max: 0.01
                }
            }
        );
        assert_eq!(s.percent, Percent::ZERO);
        assert_eq!(s.phase, RolloutPhase::RolledBack);
        assert!(action.to_string().contains("max_error_rate"));
        // Healthy samples afterwards do not resurrect it.
        assert_eq!(
            c.tick(&mut s, Some(&healthy()), t(1000)).unwrap(),
            RolloutAction::Hold {
                reason: HoldReason::RolledBack
            }
        );
        assert_eq!(s.percent, Percent::ZERO);
    }

    #[test]
    fn latency_breach_rolls_back_even_during_dwell() {
        let c = controller();
        let mut s = c.start("f", t(0));
        let slow = HealthSample {
            p95_latency: Duration::from_millis(501),
            ..healthy()
        };
        let action = c.tick(&mut s, Some(&slow), t(1)).unwrap();
        assert!(matches!(
            action,
            RolloutAction::RollBack {
                reason: RollbackReason::P95Latency { .. }
            }
        ));
        // Exactly at the threshold is not a breach.
        let mut s = c.start("f", t(0));
        let edge = HealthSample {
            p95_latency: Duration::from_millis(500),
            error_rate: 0.01,
            ..healthy()
        };
        assert!(matches!(
            c.tick(&mut s, Some(&edge), t(60)).unwrap(),
            RolloutAction::Advance { .. }
        ));
    }

    #[test]
    fn missing_sample_is_not_healthy() {
        let c = controller();
        let mut s = c.start("f", t(0));
        // Dwell has passed, but without a sample we never advance.
        for n in 1..=2 {
            let a = c.tick(&mut s, None, t(100 + n)).unwrap();
            assert_eq!(
                a,
                RolloutAction::Hold {
                    reason: HoldReason::MissingSample {
                        consecutive: n as u32,
                        tolerance: 2
                    }
                }
            );
            assert_eq!(s.percent.as_f64(), 1.0);
        }
        let a = c.tick(&mut s, None, t(200)).unwrap();
        assert_eq!(
            a,
            RolloutAction::RollBack {
                reason: RollbackReason::MissingSamples { consecutive: 3 }
            }
        );
        assert_eq!(s.percent, Percent::ZERO);
    }

    #[test]
    fn invalid_sample_counts_as_missing_and_a_good_one_resets() {
        let c = controller();
        let mut s = c.start("f", t(0));
        let nan = HealthSample {
            error_rate: f64::NAN,
            ..healthy()
        };
        assert!(matches!(
            c.tick(&mut s, Some(&nan), t(10)).unwrap(),
            RolloutAction::Hold {
                reason: HoldReason::MissingSample { consecutive: 1, .. }
            }
        ));
        c.tick(&mut s, Some(&healthy()), t(20)).unwrap();
        assert_eq!(s.consecutive_missing, 0);
    }

    #[test]
    fn low_traffic_holds_instead_of_judging() {
        let c = controller();
        let mut s = c.start("f", t(0));
        let quiet = HealthSample {
            error_rate: 0.5,
            p95_latency: Duration::from_secs(3),
            requests: 10,
        };
        assert_eq!(
            c.tick(&mut s, Some(&quiet), t(600)).unwrap(),
            RolloutAction::Hold {
                reason: HoldReason::InsufficientTraffic {
                    requests: 10,
                    min: 100
                }
            }
        );
        assert_eq!(s.phase, RolloutPhase::InProgress);
    }

    #[test]
    fn manual_rollback_and_state_json_round_trip() {
        let c = controller();
        let mut s = c.start("f", t(0));
        c.tick(&mut s, Some(&healthy()), t(60)).unwrap();
        c.manual_rollback(&mut s, "pager went off", t(61));
        let json = s.to_json_pretty().unwrap();
        assert!(json.contains("\"rolled_back\""), "{json}");
        assert!(json.contains("pager went off"));
        let back = RolloutState::from_json(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.history.len(), 3);
    }

    #[test]
    fn config_reads_humantime() {
        let c: RolloutConfig =
            serde_json::from_str(r#"{"dwell":"5m","max_p95_latency":"750ms"}"#).unwrap();
        assert_eq!(c.dwell, Duration::from_secs(300));
        assert_eq!(c.max_p95_latency, Duration::from_millis(750));
        assert!(serde_json::from_str::<RolloutConfig>(r#"{"dwel":"5m"}"#).is_err());
    }
}
