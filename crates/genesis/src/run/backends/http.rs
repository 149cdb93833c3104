//! An agent that is an HTTP service: the executor POSTs the task as JSON (the `http`
//! feature; its settings, [`HttpAgentConfig`], are always there).

use std::sync::Arc;

use async_trait::async_trait;
use genesis_core::AgentId;

use super::{
    Answerer, HttpAgentConfig, UnknownFieldWarnings, WireRequest, cost_bounds, parse_json_output,
    snippet, text_output,
};
use crate::GenesisError;
use crate::run::{Agent, AgentError, AgentOutput, AgentRequest, CostBounds};

/// POSTs `{run_id, request, agent, model, attempt, task, inputs, previous}` and reads
/// `{output, cost_usd?, followups?, input_tokens?, output_tokens?, model?}` back when
/// the answer's `Content-Type` is `application/json` or a `+json` type; any other body
/// is the output exactly as written, costing nothing. An empty or blank output fails
/// the attempt (rule `empty_answer`).
///
/// Status mapping: 2xx success; 429 throttled ([`AgentError::Throttled`]: retried after
/// its `Retry-After`, not counted on the agent's breaker); 408 and 5xx transient (with
/// `Retry-After`); other 4xx a rejection; a connection that cannot be made transient; the timeout a timeout.
/// A connection that fails after the request was sent, a 2xx body that breaks off and
/// one larger than `max_response_bytes` are [`AgentError::Unanswered`]: the service may
/// have done the work, so a call with `max_cost_usd` is charged it.
#[derive(Debug, Clone)]
pub struct HttpAgent {
    id: AgentId,
    config: HttpAgentConfig,
    client: reqwest::Client,
    /// The service's host (and port), for the call span's `server.address`.
    host: String,
    /// The answers' unknown fields already warned about.
    warnings: Arc<UnknownFieldWarnings>,
}

impl HttpAgent {
    /// An HTTP agent using `client` (share one client across agents).
    pub fn new(id: impl Into<AgentId>, config: HttpAgentConfig, client: reqwest::Client) -> Self {
        let host = reqwest::Url::parse(&config.url)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?.to_owned();
                Some(match u.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                })
            })
            .unwrap_or_default();
        HttpAgent {
            id: id.into(),
            config,
            client,
            host,
            warnings: Arc::default(),
        }
    }
}

#[async_trait]
impl Agent for HttpAgent {
    /// One call, in an `agent.call` client span (a child of the task's span) whose
    /// context is the `traceparent` sent, with `server.address`, the status code (an
    /// integer) and, when the call fails, the error status with why.
    async fn execute(&self, request: AgentRequest) -> Result<AgentOutput, AgentError> {
        use tracing::Instrument as _;
        let span = tracing::info_span!(
            "agent.call",
            "otel.kind" = "client",
            "http.request.method" = "POST",
            "server.address" = self.host.as_str(),
            "genesis.agent" = self.id.as_str(),
            "http.response.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        );
        let result = self.call(request, &span).instrument(span.clone()).await;
        if let Err(e) = &result {
            span.record("otel.status_description", e.to_string().as_str());
        }
        result
    }

    fn cost_bounds(&self, _: &AgentRequest) -> Option<CostBounds> {
        cost_bounds(self.config.min_cost_usd, self.config.max_cost_usd)
    }
}

impl HttpAgent {
    /// The call of [`HttpAgent::execute`], inside its span.
    async fn call(
        &self,
        request: AgentRequest,
        span: &tracing::Span,
    ) -> Result<AgentOutput, AgentError> {
        let agent = request.agent.clone();
        let run_id = request.run_id.clone();
        let mut req = self
            .client
            .post(&self.config.url)
            .timeout(self.config.timeout)
            .json(&WireRequest::from(&request));
        if let Some(token) = &self.config.token {
            req = req.bearer_auth(token.expose());
        }
        // The task's trace continues in the agent (when traces are exported).
        if let Some(traceparent) = genesis_telemetry::current_traceparent() {
            req = req.header(genesis_telemetry::TRACEPARENT_HEADER, traceparent);
        }
        let response = req.send().await.map_err(|e| {
            if e.is_connect() {
                // Nothing was sent: it cost nothing.
                AgentError::Transient {
                    agent: agent.clone(),
                    message: format!("cannot reach {}: {e}", self.id),
                    retry_after: None,
                }
            } else if e.is_timeout() {
                AgentError::Timeout {
                    agent: agent.clone(),
                    after: self.config.timeout,
                }
            } else {
                AgentError::Unanswered {
                    agent: agent.clone(),
                    message: format!(
                        "the connection to {} failed after the request was sent: {e}",
                        self.id
                    ),
                    retryable: true,
                }
            }
        })?;
        let status = response.status();
        // An integer (numeric searches): tracing-opentelemetry exports unsigned values
        // as text.
        span.record("http.response.status_code", i64::from(status.as_u16()));
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| genesis_resilience::parse_retry_after(v, std::time::SystemTime::now()));
        if status.is_success() {
            let json = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(is_json_media_type);
            let body = read_capped(response, &self.config, &agent).await?;
            let from = Answerer {
                agent: &agent,
                run_id: &run_id,
                warnings: &self.warnings,
            };
            return if json {
                parse_json_output(&body, from)
            } else {
                text_output(&body, &agent)
            };
        }
        // The status says the work was not done; the body only supplies the message.
        let body = match read_capped(response, &self.config, &agent).await {
            Ok(body) => body,
            Err(e) => format!("(body unreadable: {e})"),
        };
        let message = format!("http {status}: {}", snippet(&body, 200));
        if status.as_u16() == 429 {
            // Busy, not broken: retried, but not on the agent's breaker.
            Err(AgentError::Throttled {
                agent,
                message,
                retry_after,
            })
        } else if status.as_u16() == 408 || status.is_server_error() {
            Err(AgentError::Transient {
                agent,
                message,
                retry_after,
            })
        } else {
            Err(AgentError::Rejected { agent, message })
        }
    }
}

/// Reads the body, at most `max_response_bytes` of it. The request's timeout covers the
/// body too: a service that answered its headers and then stalls past it is a timeout
/// (a capped call is then charged its limit, as when no headers came). A body that
/// breaks off, or is larger than allowed, is [`AgentError::Unanswered`]: the service
/// answered, so it may have done the work (retried only when it broke off).
/// Whether a `Content-Type` says JSON: `application/json` or a `+json` type, any
/// parameters (`; charset=utf-8`) and case.
fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .rsplit_once('+')
            .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json"))
}

async fn read_capped(
    mut response: reqwest::Response,
    config: &HttpAgentConfig,
    agent: &AgentId,
) -> Result<String, AgentError> {
    let max = config.max_response_bytes;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > max {
                    return Err(AgentError::Unanswered {
                        agent: agent.clone(),
                        message: format!("response exceeds max_response_bytes {max}"),
                        retryable: false,
                    });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => {
                return Err(AgentError::Timeout {
                    agent: agent.clone(),
                    after: config.timeout,
                });
            }
            Err(e) => {
                return Err(AgentError::Unanswered {
                    agent: agent.clone(),
                    message: format!("reading the response failed: {e}"),
                    retryable: true,
                });
            }
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Builds the HTTP agents of `[backends.*]`, sharing one client (made for the first).
pub(crate) struct HttpAgents {
    client: Option<reqwest::Client>,
}

impl HttpAgents {
    /// No client yet.
    pub(crate) fn new() -> Self {
        HttpAgents { client: None }
    }

    /// The agent `id` configured by `config`.
    ///
    /// # Errors
    /// [`GenesisError::Config`] when the shared client cannot be built (TLS set-up).
    pub(crate) fn agent(
        &mut self,
        id: &str,
        config: &HttpAgentConfig,
    ) -> Result<Arc<dyn Agent>, GenesisError> {
        let client = match &self.client {
            Some(client) => client.clone(),
            None => {
                let client = genesis_llm::http_client_builder()
                    .and_then(|b| {
                        b.build().map_err(|e| genesis_llm::LlmError::ClientBuild {
                            provider: "http".into(),
                            reason: e.to_string(),
                            source: None,
                        })
                    })
                    .map_err(|e| GenesisError::Config {
                        message: format!("http client for agent backends: {e}"),
                    })?;
                self.client.insert(client).clone()
            }
        };
        Ok(Arc::new(HttpAgent::new(id, config.clone(), client)))
    }
}

#[cfg(test)]
mod tests {
    use super::is_json_media_type;

    #[test]
    fn json_media_types_are_recognised_with_parameters_and_in_any_case() {
        for yes in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/problem+json",
            " application/vnd.api+json ;q=1",
        ] {
            assert!(is_json_media_type(yes), "{yes}");
        }
        for no in [
            "text/plain",
            "text/html; charset=utf-8",
            "application/jsonl",
            "",
        ] {
            assert!(!is_json_media_type(no), "{no}");
        }
    }
}
