//! The settings of an HTTP agent: parsed from `[backends.<id>] type = "http"` in every
//! build; the agent itself ([`super::HttpAgent`]) needs the `http` feature.

use std::time::Duration;

use genesis_core::{Secret, Usd};
use serde::{Deserialize, Serialize};

use super::{InvalidCostLimits, check_cost_limits};

/// Settings of an HTTP agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAgentConfig {
    /// Where to POST tasks.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Per-request timeout (default 60 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest response body accepted, in bytes (default 1 MiB).
    #[serde(default = "default_max_body")]
    pub max_response_bytes: usize,
    /// The most one call may cost, for a service that can hold itself to a limit: with
    /// a run or day budget in force, each call sets aside up to this much and sends
    /// what it set aside as `max_cost_usd`, which the service must not exceed, and a
    /// call that times out or is cancelled is charged that. Unset: the planned estimate
    /// is set aside and the call is charged the `cost_usd` it reports.
    #[serde(default)]
    pub max_cost_usd: Option<Usd>,
    /// The least a call is worth making with (needs `max_cost_usd`; default: all of
    /// it, so a call waits until its whole limit fits in the budgets).
    #[serde(default)]
    pub min_cost_usd: Option<Usd>,
}

impl HttpAgentConfig {
    /// An HTTP agent at `url` with the defaults (no token, 60 s, 1 MiB, no cost limit).
    pub fn new(url: impl Into<String>) -> Self {
        HttpAgentConfig {
            url: url.into(),
            token: None,
            timeout: default_timeout(),
            max_response_bytes: default_max_body(),
            max_cost_usd: None,
            min_cost_usd: None,
        }
    }

    /// Checks settings that must agree.
    ///
    /// # Errors
    /// [`InvalidCostLimits`] when `min_cost_usd` is set without `max_cost_usd` or above it.
    pub fn validate(&self) -> Result<(), InvalidCostLimits> {
        check_cost_limits(self.min_cost_usd, self.max_cost_usd)
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_max_body() -> usize {
    1 << 20
}
