//! The one error type of this crate.

use std::path::PathBuf;
use std::sync::Arc;

use genesis_core::ErrorCategory;

/// Everything that can go wrong defining, loading, overriding or rolling out flags.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlagError {
    /// A flag was asked for that the store does not define.
    #[error("unknown flag {name:?}")]
    UnknownFlag {
        /// The requested name.
        name: String,
    },
    /// A flag name breaks the naming rule (`[a-z][a-z0-9_]*`, at most 64 bytes), which
    /// keeps its upper-case environment variable unambiguous.
    #[error("invalid flag name {name:?}: must match [a-z][a-z0-9_]* and be at most 64 bytes")]
    InvalidFlagName {
        /// The rejected name.
        name: String,
    },
    /// Two definitions share a name.
    #[error("duplicate flag {name:?}")]
    DuplicateFlag {
        /// The repeated name.
        name: String,
    },
    /// A percentage outside `0..=100` (or not a number).
    #[error("invalid percentage {value}: must be a finite number in 0..=100")]
    InvalidPercent {
        /// The rejected value.
        value: f64,
    },
    /// A progressive rollout whose window does not move forward in time.
    #[error("flag {flag:?}: progressive rollout end {end} must be after start {start}")]
    InvalidWindow {
        /// The flag.
        flag: String,
        /// Window start (RFC 3339).
        start: String,
        /// Window end (RFC 3339).
        end: String,
    },
    /// A progressive rollout that would shrink, which would turn subjects off again.
    #[error(
        "flag {flag:?}: progressive rollout to_percent {to} must not be below from_percent {from}"
    )]
    ShrinkingRollout {
        /// The flag.
        flag: String,
        /// Starting percentage.
        from: f64,
        /// Final percentage.
        to: f64,
    },
    /// A progressive rollout with `steps: 0`.
    #[error("flag {flag:?}: progressive rollout steps must be at least 1, got {steps}")]
    InvalidSteps {
        /// The flag.
        flag: String,
        /// The rejected count.
        steps: u32,
    },
    /// A date-time that is not RFC 3339.
    #[error("invalid timestamp {value:?}: {reason}")]
    InvalidTimestamp {
        /// The rejected text.
        value: String,
        /// The rule it broke.
        reason: &'static str,
    },
    /// An environment override whose value is neither a boolean nor a percentage.
    #[error(
        "invalid value {value:?} for environment variable {var}: expected true/false/1/0/yes/no/on/off or a percentage like 25%"
    )]
    InvalidOverride {
        /// The variable name.
        var: String,
        /// The rejected value.
        value: String,
    },
    /// A reloaded file no longer defines a flag that an environment variable overrides.
    #[error("environment variable {var} overrides flag {flag:?}, which the new definitions lack")]
    OverriddenFlagMissing {
        /// The variable name.
        var: String,
        /// The missing flag.
        flag: String,
    },
    /// The flag file could not be read.
    #[error("reading flag file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// A persisted rollout state that is not valid JSON of the expected shape (garbage,
    /// a truncated write, a hand edit gone wrong). The message carries the parser's.
    #[error("rollout state is not valid JSON of the expected shape: {error} (rule: rollout_state)")]
    InvalidStateJson {
        /// The JSON failure. Its text is in this error's message, so it is not repeated
        /// as [`std::error::Error::source`].
        error: serde_json::Error,
    },
    /// The flag definitions are not valid JSON of the expected
    /// shape. The message carries the parser's, which names the field or value and the
    /// position: ``parsing flag definitions from <string>: invalid type: string "yes",
    /// expected a boolean at line 1 column 37``.
    #[error("parsing flag definitions from {origin}: {error}")]
    Parse {
        /// The file path, or `<string>` when parsed from memory.
        origin: String,
        /// The JSON failure. Its text is in this error's message, so it is not repeated
        /// as [`std::error::Error::source`] (a chain printer shows it once).
        error: serde_json::Error,
    },
    /// The flag file holds definitions a reload would refuse (see
    /// [`crate::SharedFlags::check_file`]): the flags in force are not the file's.
    #[error("flag file {path} would be refused by a reload")]
    FileRejected {
        /// The file.
        path: PathBuf,
        /// Why: the read, JSON, validation or override error a reload would return
        /// (shared, as the same version of the file is refused again without reparsing).
        #[source]
        source: Arc<FlagError>,
    },
    /// The flag definitions or rollout state could not be written as JSON.
    #[error("serialising to json")]
    Serialize {
        /// The JSON failure.
        #[source]
        source: serde_json::Error,
    },
    /// A persisted rollout state that does not fit the controller's settings (a state
    /// written under other `steps`, or edited by hand): ticking it would skip steps or
    /// write a percentage the rollout never chose.
    #[error("invalid rollout state for flag {flag:?}: {rule} (got {value})")]
    InvalidRolloutState {
        /// The flag the state rolls out.
        flag: String,
        /// The rule that was broken.
        rule: &'static str,
        /// The offending values.
        value: String,
    },
    /// A pause or resume that does not fit where the rollout is: only a rollout in
    /// progress can be paused, only a paused one resumed.
    #[error("cannot {op} the rollout of flag {flag:?}: {why} (rule: {rule})")]
    RolloutPause {
        /// The flag the rollout rolls out.
        flag: String,
        /// `pause` or `resume`.
        op: &'static str,
        /// `rollout_not_in_progress`, `rollout_already_paused` or `rollout_not_paused`.
        rule: &'static str,
        /// Where the rollout is.
        why: String,
    },
    /// A rollout controller setting (`flags.rollout.*`) breaks a rule.
    #[error("invalid rollout config: {message} (got {value}; rule: {rule})")]
    InvalidRolloutConfig {
        /// The rule's name, e.g. `rollout_steps`.
        rule: &'static str,
        /// What the rule says.
        message: &'static str,
        /// The offending value.
        value: String,
    },
    /// A kill switch or master switch (see [`crate::KILL_SWITCHES`]) cannot be rolled out
    /// or rolled back: the controller would rewrite its strategy, after which pulling the
    /// switch the documented way (`"enabled"` in the flags file) no longer works.
    #[error(
        "flag {flag:?} is a kill switch: it is pulled with its environment variable or \
         \"enabled\" in the flags file, never rolled out or rolled back (rule: kill_switch)"
    )]
    KillSwitch {
        /// The flag.
        flag: String,
    },
}

impl FlagError {
    /// The pipeline category, for the facade's single error-to-status mapping: an unknown
    /// flag is a routing-time lookup failure of the caller ([`ErrorCategory::Internal`]);
    /// everything else is bad configuration ([`ErrorCategory::Config`]).
    pub fn category(&self) -> ErrorCategory {
        match self {
            FlagError::UnknownFlag { .. } => ErrorCategory::Internal,
            _ => ErrorCategory::Config,
        }
    }
}
