//! Built-in agent backends: HTTP services (the `http` feature) and local commands. (LLM
//! agents live in [`crate::providers::LlmAgent`].)

mod command;
#[cfg(feature = "http")]
mod http;
mod http_config;

pub use command::{CommandAgent, CommandAgentConfig, NotAllowed};
#[cfg(feature = "http")]
pub use http::HttpAgent;
#[cfg(feature = "http")]
pub(crate) use http::HttpAgents;
pub use http_config::HttpAgentConfig;
#[cfg(not(feature = "http"))]
pub(crate) use without_http::HttpAgents;

/// Refuses an HTTP backend in a build without the `http` feature, naming the backend and
/// the feature: a `[backends.<id>] type = "http"` entry is never silently dropped.
pub(crate) fn require_http(id: &str, http_enabled: bool) -> Result<(), crate::GenesisError> {
    if http_enabled {
        Ok(())
    } else {
        Err(http_disabled(id))
    }
}

/// The refusal: names the backend and the feature.
fn http_disabled(id: &str) -> crate::GenesisError {
    crate::GenesisError::Config {
        message: format!(
            "backends.{id}: type = \"http\" needs the `http` feature of the genesis crate, \
             which this build was compiled without"
        ),
    }
}

/// A build without the `http` feature: no HTTP agent can be made.
#[cfg(not(feature = "http"))]
mod without_http {
    use std::sync::Arc;

    use super::{HttpAgentConfig, http_disabled};
    use crate::GenesisError;
    use crate::run::Agent;

    /// Refuses every HTTP agent (`require_http` refuses before it gets here).
    pub(crate) struct HttpAgents;

    impl HttpAgents {
        /// Nothing to hold.
        pub(crate) fn new() -> Self {
            HttpAgents
        }

        /// Refuses, naming the backend and the feature.
        pub(crate) fn agent(
            &mut self,
            id: &str,
            _config: &HttpAgentConfig,
        ) -> Result<Arc<dyn Agent>, GenesisError> {
            Err(http_disabled(id))
        }
    }
}

use genesis_core::Usd;
use serde::Serialize;

use super::{AgentRequest, CostBounds};

/// The JSON an HTTP or command agent receives.
#[derive(Debug, Serialize)]
pub(crate) struct WireRequest<'a> {
    run_id: &'a str,
    request: &'a str,
    agent: &'a str,
    model: Option<&'a str>,
    attempt: u32,
    task: &'a genesis_core::Task,
    inputs: &'a [super::TaskInput],
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<&'a str>,
    /// The rule the previous answer was flagged for, when `previous` is its quarantine.
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_quarantined: Option<&'a str>,
    /// What the call must not cost more than, in USD ([`AgentRequest::max_cost`]):
    /// sent when the agent has a `max_cost_usd` and a run or day budget is in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_cost_usd: Option<f64>,
}

impl<'a> WireRequest<'a> {
    pub(crate) fn from(r: &'a AgentRequest) -> Self {
        WireRequest {
            run_id: r.run_id.as_str(),
            request: &r.request,
            agent: r.agent.as_str(),
            model: r.model.as_ref().map(|m| m.as_str()),
            attempt: r.attempt,
            task: &r.task,
            inputs: &r.inputs,
            previous: r.previous.as_deref(),
            previous_quarantined: r.previous_quarantined.as_deref(),
            max_cost_usd: r.max_cost.map(Usd::as_f64),
        }
    }
}

/// `min_cost_usd` and `max_cost_usd` of an HTTP or command agent that do not go
/// together.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum InvalidCostLimits {
    /// A least cost without a most.
    #[error("min_cost_usd {min} needs max_cost_usd (rule: backend_cost_limits)")]
    MinWithoutMax {
        /// The least cost.
        min: Usd,
    },
    /// The least cost above the most.
    #[error("min_cost_usd {min} is above max_cost_usd {max} (rule: backend_cost_limits)")]
    MinAboveMax {
        /// The least cost.
        min: Usd,
        /// The most.
        max: Usd,
    },
}

/// Checks an agent's `min_cost_usd` against its `max_cost_usd`.
fn check_cost_limits(min: Option<Usd>, max: Option<Usd>) -> Result<(), InvalidCostLimits> {
    match (min, max) {
        (Some(min), None) => Err(InvalidCostLimits::MinWithoutMax { min }),
        (Some(min), Some(max)) if min > max => Err(InvalidCostLimits::MinAboveMax { min, max }),
        _ => Ok(()),
    }
}

/// The cost bounds of an HTTP or command agent's call: none without `max_cost_usd`
/// (the planned estimate is set aside, and the call is charged what it reports);
/// else up to `max_cost_usd`, and at least `min_cost_usd` (default: all of
/// `max_cost_usd`, so a call is made only when its whole limit fits). A
/// `min_cost_usd` above `max_cost_usd` counts as `max_cost_usd` (the configuration
/// path refuses it, [`InvalidCostLimits`]; an agent built in code is never sent more
/// than its `max_cost_usd`).
fn cost_bounds(min: Option<Usd>, max: Option<Usd>) -> Option<CostBounds> {
    let ceiling = max?;
    let floor = match min {
        Some(min) if min <= ceiling => min,
        _ => ceiling,
    };
    Some(CostBounds { floor, ceiling })
}

/// The JSON an HTTP or command agent may answer with. A body that is not this JSON is
/// taken as the output text, except an HTTP answer that says it is JSON
/// (`Content-Type: application/json`): that one must be this JSON
/// ([`parse_json_output`]).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct WireResponse {
    pub(crate) output: String,
    #[serde(default)]
    pub(crate) cost_usd: Option<f64>,
    #[serde(default)]
    pub(crate) followups: Vec<super::FollowUp>,
}

/// The output of a successful HTTP or command agent call. The cost it reports is
/// added to `genesis_cost_usd` here, once per call, as LLM calls are in
/// [`crate::providers`]: the metric counts money where it is spent, not per task.
pub(crate) fn parse_output(body: &str) -> super::AgentOutput {
    match serde_json::from_str::<WireResponse>(body) {
        Ok(w) => wire_output(w),
        Err(_) => super::AgentOutput {
            text: body.to_owned(),
            ..super::AgentOutput::default()
        },
    }
}

/// An answer that declared itself JSON: it must be the agent answer
/// (`{"output": "...", "cost_usd": ..., "followups": [...]}`). Anything else — JSON cut
/// off, another shape, `output` missing — is no usable answer: the agent may have done
/// (and billed) the work, so a call held to `max_cost_usd` is charged that limit, and
/// it is not retried on the same agent (it would answer alike); the task moves on to its
/// alternatives. Taking it as text would pass the broken body on as the task's output
/// and charge nothing (audit R8 D2).
#[cfg(feature = "http")]
pub(crate) fn parse_json_output(
    body: &str,
    agent: &genesis_core::AgentId,
) -> Result<super::AgentOutput, super::AgentError> {
    serde_json::from_str::<WireResponse>(body)
        .map(wire_output)
        .map_err(|e| {
            let snippet: String = body.chars().take(120).collect();
            super::AgentError::Unanswered {
                agent: agent.clone(),
                message: format!(
                    "the answer is declared JSON but is not the agent answer {{\"output\": \"...\", \"cost_usd\": ..., \"followups\": [...]}}: {e} in {snippet:?} (rule: agent_answer)"
                ),
                retryable: false,
            }
        })
}

/// The output of a well-formed answer, its cost counted in `genesis_cost_usd`.
fn wire_output(w: WireResponse) -> super::AgentOutput {
    let cost = genesis_core::Usd::saturating(w.cost_usd.unwrap_or(0.0));
    if cost > genesis_core::Usd::ZERO {
        metrics::gauge!(genesis_telemetry::catalogue::COST_USD).increment(cost.as_f64());
    }
    super::AgentOutput {
        text: w.output,
        cost,
        followups: w.followups,
        ..super::AgentOutput::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(v: f64) -> Usd {
        Usd::new(v).unwrap()
    }

    /// Review R9: an agent built in code with a least cost above its most (the config
    /// path refuses that) is never sent more than its `max_cost_usd`.
    #[test]
    fn cost_bounds_never_go_above_max_cost_usd() {
        assert_eq!(cost_bounds(Some(usd(0.5)), None), None);
        let b = cost_bounds(None, Some(usd(0.2))).unwrap();
        assert_eq!((b.floor, b.ceiling), (usd(0.2), usd(0.2)));
        let b = cost_bounds(Some(usd(0.1)), Some(usd(0.2))).unwrap();
        assert_eq!((b.floor, b.ceiling), (usd(0.1), usd(0.2)));
        let b = cost_bounds(Some(usd(0.5)), Some(usd(0.2))).unwrap();
        assert_eq!((b.floor, b.ceiling), (usd(0.2), usd(0.2)));
        assert!(check_cost_limits(Some(usd(0.5)), Some(usd(0.2))).is_err());
    }

    /// A build without the `http` feature refuses `[backends.x] type = "http"` by name.
    #[test]
    fn http_backends_are_refused_naming_the_feature_when_it_is_off() {
        let err = require_http("search", false).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("backends.search")
                && text.contains("type = \"http\"")
                && text.contains("`http` feature of the genesis crate"),
            "{text}"
        );
        assert!(matches!(err, crate::GenesisError::Config { .. }), "{err:?}");
        assert!(require_http("search", true).is_ok());
    }
}
