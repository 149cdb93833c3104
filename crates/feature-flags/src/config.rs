//! The crate's configuration section (`[flags]` in `config/genesis.toml`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rollout::RolloutConfig;

fn default_file() -> PathBuf {
    PathBuf::from("config/feature_flags.json")
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

/// Where the flag definitions live and how the facade keeps them fresh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagsConfig {
    /// The flag definitions file, given to [`crate::SharedFlags::load`]. When it is absent
    /// the facade may fall back to [`crate::FlagStore::builtin_defaults`].
    #[serde(default = "default_file")]
    pub file: PathBuf,
    /// How often the facade calls [`crate::SharedFlags::reload_if_changed`]; `0s` disables
    /// hot reload.
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Settings of the [`crate::RolloutController`].
    #[serde(default)]
    pub rollout: RolloutConfig,
}

impl Default for FlagsConfig {
    fn default() -> Self {
        FlagsConfig {
            file: default_file(),
            reload_interval: default_reload_interval(),
            rollout: RolloutConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let c: FlagsConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, FlagsConfig::default());
        let c: FlagsConfig =
            serde_json::from_str(r#"{"reload_interval":"1m","rollout":{"min_requests":5}}"#)
                .unwrap();
        assert_eq!(c.reload_interval, Duration::from_secs(60));
        assert_eq!(c.rollout.min_requests, 5);
        assert!(serde_json::from_str::<FlagsConfig>(r#"{"fiel":"x"}"#).is_err());
    }
}
