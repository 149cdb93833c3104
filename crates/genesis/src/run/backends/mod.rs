//! Built-in agent backends: HTTP services and local commands. (LLM agents live in
//! [`crate::providers::LlmAgent`].)

mod command;
mod http;

pub use command::{CommandAgent, CommandAgentConfig, NotAllowed};
pub use http::{HttpAgent, HttpAgentConfig};

use serde::Serialize;

use super::AgentRequest;

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
        }
    }
}

/// The JSON an HTTP or command agent may answer with. A body that is not this JSON is
/// taken as the output text.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct WireResponse {
    pub(crate) output: String,
    #[serde(default)]
    pub(crate) cost_usd: Option<f64>,
    #[serde(default)]
    pub(crate) followups: Vec<super::FollowUp>,
}

/// The output of a successful HTTP or command agent call. The cost it reports is
/// added to `genesis_cost_usd_total` here, once per call, as LLM calls are in
/// [`crate::providers`]: the metric counts money where it is spent, not per task.
pub(crate) fn parse_output(body: &str) -> super::AgentOutput {
    match serde_json::from_str::<WireResponse>(body) {
        Ok(w) => {
            let cost = genesis_core::Usd::saturating(w.cost_usd.unwrap_or(0.0));
            if cost > genesis_core::Usd::ZERO {
                metrics::gauge!(genesis_telemetry::catalogue::COST_USD_TOTAL)
                    .increment(cost.as_f64());
            }
            super::AgentOutput {
                text: w.output,
                cost,
                followups: w.followups,
                ..super::AgentOutput::default()
            }
        }
        Err(_) => super::AgentOutput {
            text: body.to_owned(),
            ..super::AgentOutput::default()
        },
    }
}
