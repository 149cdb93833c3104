//! Feature flags for Genesis: a flag store with sticky, deterministic evaluation, rollout
//! strategies, environment overrides, hot reload and a rollout controller.
//!
//! Mental model: a [`FlagStore`] maps names to [`Flag`]s. A flag has a master switch
//! (`enabled`) and a [`Strategy`] (`all`, `off`, `percentage`, `progressive`, `canary`).
//! Evaluating a flag for a *subject* (a user, tenant or request key) at a given time gives
//! an [`Evaluation`]. Percentages are sticky: the subject's [`bucket`] is a SHA-256 of
//! (flag, subject) into `0..10_000`, identical in every process and release, so users never
//! flap between variants. A progressive rollout is a pure function of `now` and only ever
//! adds subjects. Kill switches (`emergency_shutdown`, `maintenance_mode`,
//! `read_only_mode`) are ordinary flags that are off by default.
//!
//! Around the store: [`FlagStore::apply_env_overrides`] honours `EMERGENCY_SHUTDOWN=true`
//! and friends (the caller passes the variables; this crate never reads the environment),
//! [`SharedFlags`] hot-reloads the definitions file, and [`RolloutController`] walks a flag
//! through percentage steps while health holds, rolling back to 0 % when it does not.
//!
//! ```
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//! use genesis_feature_flags::{FlagStore, Reason};
//!
//! let mut flags = FlagStore::from_json(r#"{"flags": [
//!     {"name": "halo_routing", "enabled": true,
//!      "strategy": {"type": "percentage", "percent": 25}},
//!     {"name": "emergency_shutdown", "enabled": false}
//! ]}"#)?;
//! let now = SystemTime::now();
//!
//! // Sticky: the same subject always gets the same answer.
//! let first = flags.evaluate("halo_routing", "user-42", now);
//! assert_eq!(first, flags.evaluate("halo_routing", "user-42", now));
//! assert_eq!(first.enabled, first.bucket.unwrap() < 2_500);
//!
//! // Unknown flags are off (fail closed), with a reason.
//! assert_eq!(flags.evaluate("halo_routnig", "user-42", now).reason, Reason::UnknownFlag);
//!
//! // Kill switch pulled through the environment (the facade passes std::env::vars()).
//! flags.apply_env_overrides([("EMERGENCY_SHUTDOWN".to_string(), "true".to_string())])?;
//! assert!(flags.is_enabled("emergency_shutdown", "anyone", now));
//!
//! // A staged rollout: advance only on healthy, sufficiently large samples.
//! use genesis_feature_flags::{HealthSample, RolloutAction, RolloutConfig, RolloutController, TaskSample};
//! let controller = RolloutController::try_new(RolloutConfig::default())?;
//! let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
//! let mut rollout = controller.start("halo_routing", t0)?;
//! let healthy = HealthSample {
//!     error_rate: 0.001, p95_latency: Duration::from_millis(90), requests: 5_000,
//!     tasks: Some(TaskSample { finished: 800, failure_rate: 0.01, p95_latency: Some(Duration::from_secs(4)) }),
//! };
//! let action = controller.tick(&mut rollout, Some(&healthy), t0 + Duration::from_secs(3600))?;
//! assert!(matches!(action, RolloutAction::Advance { .. }));
//! rollout.apply_to(&mut flags)?; // halo_routing is now a sticky 5 % rollout
//! # Ok::<(), genesis_feature_flags::FlagError>(())
//! ```

mod config;
mod error;
mod flag;
mod rollout;
mod shared;
mod store;
mod time;

pub use config::FlagsConfig;
pub use error::FlagError;
pub use flag::{BUCKETS, Evaluation, Flag, Percent, Reason, Strategy, bucket};
pub use rollout::{
    HealthSample, HoldReason, KILL_SWITCHES, MIN_P95_OBSERVATIONS, Pause, RollbackReason,
    RolloutAction, RolloutConfig, RolloutController, RolloutEvent, RolloutPhase, RolloutState,
    TaskSample,
};
pub use shared::{FileCheck, ReloadOutcome, SharedFlags};
pub use store::{FlagOverride, FlagStore, OverrideValue};
pub use time::Timestamp;
