//! One flag: its definition, its rollout strategy and its sticky evaluation.

use std::fmt;

use ring::digest;
use serde::{Deserialize, Serialize};

use crate::error::FlagError;
use crate::time::Timestamp;

/// Number of buckets subjects are hashed into: one bucket is 0.01 %.
pub const BUCKETS: u32 = 10_000;

/// The sticky bucket of `subject` for flag `flag`, in `0..10_000`.
///
/// It is the first 8 bytes (big-endian) of SHA-256(`flag` ‖ 0x00 ‖ `subject`) modulo
/// 10 000: the same in every process, on every platform and in every release (a unit test
/// pins known values). Salting with the flag name keeps one subject's buckets independent
/// across flags, so the same 10 % of users are not the guinea pigs for every rollout.
pub fn bucket(flag: &str, subject: &str) -> u16 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(flag.as_bytes());
    ctx.update(&[0]);
    ctx.update(subject.as_bytes());
    let hash = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_ref()[..8]);
    // The modulo bias of 2^64 mod 10 000 is below 1e-15: negligible.
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u16
}

/// A percentage in `0..=100`, finite. Serialises as a plain number.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Percent(f64);

impl Percent {
    /// 0 %.
    pub const ZERO: Percent = Percent(0.0);
    /// 100 %.
    pub const HUNDRED: Percent = Percent(100.0);

    /// A validated percentage.
    ///
    /// # Errors
    /// [`FlagError::InvalidPercent`] when `value` is NaN, infinite or outside `0..=100`.
    pub fn try_new(value: f64) -> Result<Self, FlagError> {
        if value.is_finite() && (0.0..=100.0).contains(&value) {
            Ok(Percent(value))
        } else {
            Err(FlagError::InvalidPercent { value })
        }
    }

    /// The value in `0..=100`.
    pub fn as_f64(self) -> f64 {
        self.0
    }

    /// The number of buckets (of [`BUCKETS`]) this percentage admits: subjects with
    /// `bucket < threshold` are in. Monotone in the percentage.
    pub fn threshold(self) -> u32 {
        // 0..=100 * 100 rounds to 0..=10_000: the cast cannot truncate.
        (self.0 * 100.0).round() as u32
    }

    fn from_threshold(threshold: u32) -> Percent {
        Percent(f64::from(threshold.min(BUCKETS)) / 100.0)
    }
}

impl TryFrom<f64> for Percent {
    type Error = FlagError;
    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Percent::try_new(value)
    }
}

impl From<Percent> for f64 {
    fn from(p: Percent) -> f64 {
        p.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// How a flag that is `enabled` decides per subject.
///
/// JSON: internally tagged by `type`, e.g. `{"type": "percentage", "percent": 25}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Strategy {
    /// On for every subject.
    All,
    /// Off for every subject (the definition stays, e.g. for a finished experiment).
    Off,
    /// On for a sticky `percent` of subjects (by [`bucket`]).
    Percentage {
        /// Share of subjects that are in.
        percent: Percent,
    },
    /// A percentage that grows with time, from `from_percent` at `start` to `to_percent`
    /// at `end`: linearly, or in `steps` equal jumps when given. Deterministic in `now`, and
    /// monotone: a subject that is in at `t` is in at every later `t`.
    Progressive {
        /// When the ramp begins (RFC 3339 or unix seconds; years 0000 to 9999).
        #[serde(deserialize_with = "crate::time::field::start")]
        start: Timestamp,
        /// When the ramp reaches `to_percent`.
        #[serde(deserialize_with = "crate::time::field::end")]
        end: Timestamp,
        /// Percentage up to `start`.
        from_percent: Percent,
        /// Percentage from `end` on; not below `from_percent`.
        to_percent: Percent,
        /// Number of equal jumps instead of a linear ramp.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps: Option<u32>,
    },
    /// On for the listed subjects, and for a sticky `percent` of everyone else.
    Canary {
        /// Subjects that always get the feature (internal users, test tenants).
        subjects: Vec<String>,
        /// Share of the remaining subjects that are in.
        #[serde(default = "zero_percent")]
        percent: Percent,
    },
}

fn zero_percent() -> Percent {
    Percent::ZERO
}

fn default_strategy() -> Strategy {
    Strategy::All
}

impl Strategy {
    /// The percentage in force at `now` for the bucketed strategies, `None` for `all`/`off`.
    pub fn percent_at(&self, now: Timestamp) -> Option<Percent> {
        self.threshold_at(now).map(Percent::from_threshold)
    }

    /// The admitted bucket count at `now` (see [`Percent::threshold`]).
    fn threshold_at(&self, now: Timestamp) -> Option<u32> {
        match self {
            Strategy::All | Strategy::Off => None,
            Strategy::Percentage { percent } | Strategy::Canary { percent, .. } => {
                Some(percent.threshold())
            }
            Strategy::Progressive {
                start,
                end,
                from_percent,
                to_percent,
                steps,
            } => {
                let from = i128::from(from_percent.threshold());
                let to = i128::from(to_percent.threshold());
                if now <= *start {
                    return Some(from_percent.threshold());
                }
                if now >= *end {
                    return Some(to_percent.threshold());
                }
                let elapsed = i128::from(now.unix_millis()) - i128::from(start.unix_millis());
                let total = i128::from(end.unix_millis()) - i128::from(start.unix_millis());
                if total <= 0 {
                    return Some(to_percent.threshold());
                }
                // Integer arithmetic, floored: monotone in `now` by construction.
                let grown = match steps {
                    Some(n) if *n > 0 => {
                        let n = i128::from(*n);
                        let done = elapsed * n / total;
                        (to - from) * done / n
                    }
                    _ => (to - from) * elapsed / total,
                };
                Some(u32::try_from((from + grown).clamp(0, i128::from(BUCKETS))).unwrap_or(0))
            }
        }
    }
}

/// A named feature flag (kill switches are flags too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flag {
    /// Unique name, `[a-z][a-z0-9_]*`; its upper-case form is the override variable.
    pub name: String,
    /// What the flag guards, for operators.
    #[serde(default)]
    pub description: String,
    /// Master switch: when false the flag is off for everyone, whatever the strategy.
    pub enabled: bool,
    /// How an enabled flag decides per subject (default `all`).
    #[serde(default = "default_strategy")]
    pub strategy: Strategy,
}

impl Flag {
    /// A flag that is on for everyone when `enabled`.
    pub fn new(name: impl Into<String>, enabled: bool) -> Self {
        Flag {
            name: name.into(),
            description: String::new(),
            enabled,
            strategy: Strategy::All,
        }
    }

    /// Sets the description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets the strategy.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Checks the naming rule and the strategy's invariants.
    ///
    /// # Errors
    /// [`FlagError::InvalidFlagName`], [`FlagError::InvalidWindow`],
    /// [`FlagError::ShrinkingRollout`] or [`FlagError::InvalidSteps`].
    pub fn validate(&self) -> Result<(), FlagError> {
        let name_ok = self.name.len() <= 64
            && self.name.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok {
            return Err(FlagError::InvalidFlagName {
                name: self.name.clone(),
            });
        }
        if let Strategy::Progressive {
            start,
            end,
            from_percent,
            to_percent,
            steps,
        } = &self.strategy
        {
            if end <= start {
                return Err(FlagError::InvalidWindow {
                    flag: self.name.clone(),
                    start: start.to_string(),
                    end: end.to_string(),
                });
            }
            if to_percent < from_percent {
                return Err(FlagError::ShrinkingRollout {
                    flag: self.name.clone(),
                    from: from_percent.as_f64(),
                    to: to_percent.as_f64(),
                });
            }
            if *steps == Some(0) {
                return Err(FlagError::InvalidSteps {
                    flag: self.name.clone(),
                    steps: 0,
                });
            }
        }
        Ok(())
    }

    /// Decides the flag for `subject` at `now`. Pure and allocation-free.
    pub fn evaluate(&self, subject: &str, now: Timestamp) -> Evaluation {
        if !self.enabled {
            return Evaluation::new(false, Reason::Disabled);
        }
        match &self.strategy {
            Strategy::All => Evaluation::new(true, Reason::All),
            Strategy::Off => Evaluation::new(false, Reason::StrategyOff),
            Strategy::Canary { subjects, .. } if subjects.iter().any(|s| s == subject) => {
                Evaluation::new(true, Reason::CanarySubject)
            }
            strategy => {
                let threshold = strategy.threshold_at(now).unwrap_or(0);
                let bucket = bucket(&self.name, subject);
                let enabled = u32::from(bucket) < threshold;
                Evaluation {
                    enabled,
                    reason: if enabled {
                        Reason::InRollout
                    } else {
                        Reason::OutOfRollout
                    },
                    bucket: Some(bucket),
                    percent: Some(Percent::from_threshold(threshold)),
                }
            }
        }
    }

    /// Whether the flag's answer differs between subjects at `now`: it is enabled and
    /// its strategy admits some subjects and not others. That is a percentage (or a
    /// progressive ramp's percentage at `now`) strictly between 0 and 100 %, or a canary
    /// below 100 % with subjects listed or a percentage above 0. `all`, `off`, 0 % and
    /// 100 % give every subject the same answer: no cohorts to compare. Pure and
    /// allocation-free, like [`Flag::evaluate`].
    pub fn splits_at(&self, now: Timestamp) -> bool {
        if !self.enabled {
            return false;
        }
        let partial = |threshold: u32| threshold > 0 && threshold < BUCKETS;
        match &self.strategy {
            Strategy::All | Strategy::Off => false,
            Strategy::Canary { subjects, percent } => {
                let threshold = percent.threshold();
                partial(threshold) || (!subjects.is_empty() && threshold < BUCKETS)
            }
            strategy => strategy.threshold_at(now).is_some_and(partial),
        }
    }

    /// Points the flag's rollout at `percent`: a canary keeps its subjects, anything else
    /// becomes `percentage { percent }`. Because buckets are sticky, raising the
    /// percentage only ever adds subjects.
    ///
    /// Above 0 % the flag is switched on. At 0 % (a rollback) it is switched *off*
    /// (`enabled: false`), so nobody gets the feature, canary subjects included; the
    /// strategy and its subject list stay in the file, so the next rollout (which starts
    /// above 0 %) switches it on again with its canary subjects.
    pub fn set_rollout_percent(&mut self, percent: Percent) {
        self.enabled = percent > Percent::ZERO;
        match &mut self.strategy {
            Strategy::Canary { percent: p, .. } => *p = percent,
            other => *other = Strategy::Percentage { percent },
        }
    }
}

/// Why an evaluation came out the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// The store does not define the flag (the non-`Result` API answers `false`).
    UnknownFlag,
    /// The flag's master switch `enabled` is false.
    Disabled,
    /// The strategy is `off`.
    StrategyOff,
    /// The strategy is `all`.
    All,
    /// The subject is on the canary list.
    CanarySubject,
    /// The subject's bucket is below the current percentage.
    InRollout,
    /// The subject's bucket is at or above the current percentage.
    OutOfRollout,
}

impl Reason {
    /// The snake_case name, as used in JSON and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownFlag => "unknown_flag",
            Reason::Disabled => "disabled",
            Reason::StrategyOff => "strategy_off",
            Reason::All => "all",
            Reason::CanarySubject => "canary_subject",
            Reason::InRollout => "in_rollout",
            Reason::OutOfRollout => "out_of_rollout",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of evaluating one flag for one subject.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Whether the feature is on for the subject.
    pub enabled: bool,
    /// Why.
    pub reason: Reason,
    /// The subject's sticky bucket in `0..10_000`, when a percentage was consulted.
    pub bucket: Option<u16>,
    /// The percentage in force, when a percentage was consulted.
    pub percent: Option<Percent>,
}

impl Evaluation {
    /// `"on"` or `"off"`: the `result` label of `genesis_flag_evaluations_total`.
    pub fn result_label(&self) -> &'static str {
        if self.enabled { "on" } else { "off" }
    }

    pub(crate) fn new(enabled: bool, reason: Reason) -> Self {
        Evaluation {
            enabled,
            reason,
            bucket: None,
            percent: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_seconds(secs)
    }

    #[test]
    fn buckets_are_pinned_across_releases() {
        // Golden values: changing the hash would silently move users between variants.
        let expected: Vec<u16> = ["user-1", "user-2", "tenant-acme", ""]
            .iter()
            .map(|s| bucket("halo_routing", s))
            .collect();
        assert_eq!(expected, GOLDEN.to_vec());
        assert_ne!(
            bucket("halo_routing", "user-1"),
            bucket("aop_validation", "user-1")
        );
    }

    /// Independently checked with `printf 'halo_routing\0user-1' | sha256sum`: the first
    /// 16 hex digits as a u64, modulo 10 000.
    const GOLDEN: [u16; 4] = [9883, 3214, 2622, 3897];

    #[test]
    fn percent_validation() {
        assert!(Percent::try_new(-0.1).is_err());
        assert!(Percent::try_new(100.1).is_err());
        assert!(Percent::try_new(f64::NAN).is_err());
        assert_eq!(Percent::try_new(12.5).unwrap().threshold(), 1250);
        assert!(serde_json::from_str::<Percent>("101").is_err());
    }

    #[test]
    fn disabled_beats_strategy() {
        let flag = Flag::new("x", false);
        let e = flag.evaluate("u", at(0));
        assert!(!e.enabled);
        assert_eq!(e.result_label(), "off");
        assert_eq!(e.reason, Reason::Disabled);
    }

    #[test]
    fn zero_and_hundred_percent_are_exact() {
        let zero = Flag::new("x", true).with_strategy(Strategy::Percentage {
            percent: Percent::ZERO,
        });
        let all = Flag::new("x", true).with_strategy(Strategy::Percentage {
            percent: Percent::HUNDRED,
        });
        for i in 0..2000 {
            let s = format!("s{i}");
            assert!(!zero.is_on(&s));
            assert!(all.is_on(&s));
        }
    }

    impl Flag {
        fn is_on(&self, s: &str) -> bool {
            self.evaluate(s, at(0)).enabled
        }
    }

    #[test]
    fn canary_subjects_always_in() {
        let flag = Flag::new("x", true).with_strategy(Strategy::Canary {
            subjects: vec!["alice".into()],
            percent: Percent::ZERO,
        });
        let e = flag.evaluate("alice", at(0));
        assert!(e.enabled);
        assert_eq!(e.reason, Reason::CanarySubject);
        let e = flag.evaluate("bob", at(0));
        assert!(!e.enabled);
        assert_eq!(e.reason, Reason::OutOfRollout);
        assert!(e.bucket.is_some());
    }

    #[test]
    fn progressive_ramps_linearly_and_in_steps() {
        let linear = Strategy::Progressive {
            start: at(1000),
            end: at(2000),
            from_percent: Percent::try_new(10.0).unwrap(),
            to_percent: Percent::try_new(50.0).unwrap(),
            steps: None,
        };
        assert_eq!(linear.percent_at(at(0)).unwrap().as_f64(), 10.0);
        assert_eq!(linear.percent_at(at(1500)).unwrap().as_f64(), 30.0);
        assert_eq!(linear.percent_at(at(1750)).unwrap().as_f64(), 40.0);
        assert_eq!(linear.percent_at(at(5000)).unwrap().as_f64(), 50.0);
        let stepped = Strategy::Progressive {
            start: at(1000),
            end: at(2000),
            from_percent: Percent::ZERO,
            to_percent: Percent::HUNDRED,
            steps: Some(4),
        };
        assert_eq!(stepped.percent_at(at(1249)).unwrap().as_f64(), 0.0);
        assert_eq!(stepped.percent_at(at(1250)).unwrap().as_f64(), 25.0);
        assert_eq!(stepped.percent_at(at(1999)).unwrap().as_f64(), 75.0);
        assert_eq!(stepped.percent_at(at(2000)).unwrap().as_f64(), 100.0);
    }

    #[test]
    fn validation_names_the_rule() {
        let bad = Flag::new("Bad-Name", true);
        assert!(matches!(
            bad.validate(),
            Err(FlagError::InvalidFlagName { .. })
        ));
        let backwards = Flag::new("x", true).with_strategy(Strategy::Progressive {
            start: at(2000),
            end: at(1000),
            from_percent: Percent::ZERO,
            to_percent: Percent::HUNDRED,
            steps: None,
        });
        let err = backwards.validate().unwrap_err();
        assert!(err.to_string().contains("must be after start"), "{err}");
        let shrinking = Flag::new("x", true).with_strategy(Strategy::Progressive {
            start: at(1000),
            end: at(2000),
            from_percent: Percent::HUNDRED,
            to_percent: Percent::ZERO,
            steps: None,
        });
        assert!(matches!(
            shrinking.validate(),
            Err(FlagError::ShrinkingRollout { .. })
        ));
    }

    #[test]
    fn strategy_json_shape() {
        let s: Strategy = serde_json::from_str(r#"{"type":"percentage","percent":25}"#).unwrap();
        assert_eq!(
            s,
            Strategy::Percentage {
                percent: Percent::try_new(25.0).unwrap()
            }
        );
        assert!(
            serde_json::from_str::<Strategy>(r#"{"type":"percentage","percent":25,"x":1}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<Strategy>(r#"{"type":"sometimes"}"#).is_err());
        let p: Strategy = serde_json::from_str(
            r#"{"type":"progressive","start":"2026-12-01T00:00:00Z","end":1798761600,"from_percent":0,"to_percent":100}"#,
        )
        .unwrap();
        assert!(matches!(p, Strategy::Progressive { steps: None, .. }));
    }

    /// Cohorts exist only while subjects get different answers: the server counts
    /// them for these flags alone.
    #[test]
    fn a_flag_splits_subjects_only_strictly_between_nobody_and_everybody() {
        let pct = |p: f64| Strategy::Percentage {
            percent: Percent::try_new(p).unwrap(),
        };
        let on = |s: Strategy| Flag::new("x", true).with_strategy(s);
        assert!(on(pct(5.0)).splits_at(at(0)));
        assert!(on(pct(99.99)).splits_at(at(0)));
        for whole in [0.0, 100.0, 0.001] {
            // 0.001 % admits no bucket (one bucket is 0.01 %): nobody is in.
            assert!(!on(pct(whole)).splits_at(at(0)), "{whole}");
        }
        assert!(!on(Strategy::All).splits_at(at(0)));
        assert!(!on(Strategy::Off).splits_at(at(0)));
        assert!(
            !Flag::new("x", false)
                .with_strategy(pct(5.0))
                .splits_at(at(0)),
            "a disabled flag is off for everyone"
        );
        let canary = |subjects: &[&str], p: f64| Strategy::Canary {
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            percent: Percent::try_new(p).unwrap(),
        };
        assert!(on(canary(&["alice"], 0.0)).splits_at(at(0)));
        assert!(on(canary(&[], 5.0)).splits_at(at(0)));
        assert!(!on(canary(&[], 0.0)).splits_at(at(0)));
        assert!(!on(canary(&["alice"], 100.0)).splits_at(at(0)));
        let ramp = on(Strategy::Progressive {
            start: at(1000),
            end: at(2000),
            from_percent: Percent::ZERO,
            to_percent: Percent::HUNDRED,
            steps: None,
        });
        assert!(!ramp.splits_at(at(1000)), "not started: 0 %");
        assert!(ramp.splits_at(at(1500)), "under way");
        assert!(!ramp.splits_at(at(2000)), "done: 100 %");
    }

    #[test]
    fn set_rollout_percent_keeps_canary_subjects() {
        let mut flag = Flag::new("x", false).with_strategy(Strategy::Canary {
            subjects: vec!["alice".into()],
            percent: Percent::ZERO,
        });
        flag.set_rollout_percent(Percent::try_new(5.0).unwrap());
        assert!(flag.enabled);
        assert!(
            matches!(&flag.strategy, Strategy::Canary { subjects, percent } if subjects.len() == 1 && percent.as_f64() == 5.0)
        );
        let mut plain = Flag::new("y", true);
        plain.set_rollout_percent(Percent::try_new(5.0).unwrap());
        assert!(matches!(plain.strategy, Strategy::Percentage { .. }));
    }

    #[test]
    fn rollout_to_zero_switches_everyone_off_canary_subjects_included() {
        let mut flag = Flag::new("x", true).with_strategy(Strategy::Canary {
            subjects: vec!["alice".into()],
            percent: Percent::try_new(10.0).unwrap(),
        });
        assert!(flag.is_on("alice"));
        flag.set_rollout_percent(Percent::ZERO);
        assert!(!flag.enabled);
        let e = flag.evaluate("alice", at(0));
        assert!(
            !e.enabled,
            "canary subject still on after a rollback to 0 %"
        );
        assert_eq!(e.reason, Reason::Disabled);
        assert!((0..2000).all(|i| !flag.is_on(&format!("s{i}"))));
        // The subject list survives, and the next rollout brings the canary back.
        assert!(
            matches!(&flag.strategy, Strategy::Canary { subjects, percent } if subjects == &["alice"] && *percent == Percent::ZERO)
        );
        flag.set_rollout_percent(Percent::try_new(1.0).unwrap());
        assert!(flag.enabled);
        assert!(flag.is_on("alice"));
        // A plain flag at 0 % is off as well, not "on for 0 %".
        let mut plain = Flag::new("y", true);
        plain.set_rollout_percent(Percent::ZERO);
        assert!(!plain.enabled);
        assert!(!plain.is_on("anyone"));
    }
}
