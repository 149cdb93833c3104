//! The Anthropic Messages API client.

use async_trait::async_trait;
use genesis_core::ModelId;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::client::{call_span, record_outcome};
use crate::http::{Endpoint, build_http_client};
use crate::{
    Completion, CompletionRequest, FinishReason, LlmClient, LlmError, ModelPrice, ProviderConfig,
    ProviderKind, Usage,
};

/// A client for `POST {base_url}/v1/messages`.
///
/// Sends `x-api-key` and `anthropic-version`. The Messages API has no generic JSON-schema
/// response format, so a request's `json_schema` is appended to the system prompt as an
/// instruction; [`complete_json`](crate::complete_json) validates the reply.
/// Cache reads and writes are counted as input tokens.
#[derive(Debug, Clone)]
pub struct AnthropicClient {
    config: ProviderConfig,
    http: reqwest::Client,
    endpoint: Endpoint,
}

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Deserialize)]
struct MessagesResponse {
    #[serde(default)]
    model: Option<String>,
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    usage: WireUsage,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

/// The instruction appended to the system prompt when a request carries a schema.
pub(crate) fn schema_instruction(schema: &serde_json::Value) -> String {
    format!(
        "Respond with a single JSON value and nothing else (no prose, no code fences). \
         It must conform to this JSON Schema:\n{schema}"
    )
}

impl AnthropicClient {
    /// Builds a client with its own connection pool (rustls + ring, system roots).
    ///
    /// # Errors
    /// [`LlmError::InvalidConfig`] when `config` fails [`ProviderConfig::validate`] or
    /// its kind is not `anthropic`; [`LlmError::ClientBuild`] when TLS cannot be set up.
    pub fn new(config: ProviderConfig) -> Result<Self, LlmError> {
        config.validate()?;
        let http = build_http_client(&config)?;
        Self::with_http_client(config, http)
    }

    /// Builds a client over an existing reqwest client.
    ///
    /// # Errors
    /// [`LlmError::InvalidConfig`] as for [`AnthropicClient::new`].
    pub fn with_http_client(
        config: ProviderConfig,
        http: reqwest::Client,
    ) -> Result<Self, LlmError> {
        config.validate()?;
        if config.kind != ProviderKind::Anthropic {
            return Err(LlmError::InvalidConfig {
                field: "kind",
                reason: format!("must be anthropic for AnthropicClient, got {}", config.kind),
            });
        }
        let mut headers = vec![("anthropic-version", config.anthropic_version.clone(), false)];
        if let Some(key) = config.api_key.as_ref().filter(|k| !k.is_empty()) {
            headers.push(("x-api-key", key.expose().to_owned(), true));
        }
        let endpoint = Endpoint::new("anthropic", &config, "/v1/messages", headers)?;
        Ok(AnthropicClient {
            config,
            http,
            endpoint,
        })
    }

    /// The configuration this client was built from.
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    async fn call(&self, req: &CompletionRequest) -> Result<Completion, LlmError> {
        req.validate()?;
        let system = match (&req.system, &req.json_schema) {
            (Some(s), Some(schema)) => Some(format!("{s}\n\n{}", schema_instruction(schema))),
            (Some(s), None) => Some(s.clone()),
            (None, Some(schema)) => Some(schema_instruction(schema)),
            (None, None) => None,
        };
        let body = MessagesRequest {
            model: self.config.model.as_str(),
            max_tokens: req.max_tokens.unwrap_or(self.config.max_tokens),
            system,
            messages: req
                .messages
                .iter()
                .map(|m| WireMessage {
                    role: m.role.as_str(),
                    content: &m.content,
                })
                .collect(),
            temperature: req.temperature.or(self.config.temperature),
        };
        let timeout = req.timeout.unwrap_or(self.config.timeout);
        let bytes = self
            .endpoint
            .post_json(&self.http, &body, timeout, &self.config.model)
            .await?;
        let resp: MessagesResponse = self.endpoint.parse(&bytes)?;
        let text: String = resp
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text.as_deref())
            .collect();
        if text.is_empty()
            && resp.content.iter().all(|b| b.kind == "text")
            && resp.stop_reason.is_none()
        {
            return Err(self
                .endpoint
                .malformed("response has no text content and no stop_reason"));
        }
        let u = resp.usage;
        let input = u
            .input_tokens
            .saturating_add(u.cache_creation_input_tokens.unwrap_or(0))
            .saturating_add(u.cache_read_input_tokens.unwrap_or(0));
        let usage = Usage::new(input, u.output_tokens);
        Ok(Completion {
            text,
            usage,
            model: resp
                .model
                .map(ModelId::from)
                .unwrap_or_else(|| self.config.model.clone()),
            finish_reason: resp.stop_reason.as_deref().map(FinishReason::from_wire),
            refusal: None,
            cost: self.config.price.map(|p| p.cost(&usage)),
            // The Messages API always reports usage (an answer without it is malformed).
            usage_missing: false,
        })
    }
}

#[async_trait]
impl LlmClient for AnthropicClient {
    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, LlmError> {
        let span = call_span(
            "anthropic",
            &self.config.model,
            Some(req.max_tokens.unwrap_or(self.config.max_tokens)),
            req.temperature.or(self.config.temperature),
            &self.endpoint.host(),
        );
        let result = self.call(req).instrument(span.clone()).await;
        record_outcome(&span, &result);
        result
    }

    fn model(&self) -> &ModelId {
        &self.config.model
    }

    fn provider(&self) -> &str {
        "anthropic"
    }

    fn price(&self) -> Option<ModelPrice> {
        self.config.price
    }

    fn default_max_tokens(&self) -> Option<u32> {
        Some(self.config.max_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_an_openai_config() {
        let err =
            AnthropicClient::new(ProviderConfig::new(ProviderKind::Openai, "gpt")).unwrap_err();
        assert!(
            err.to_string()
                .contains("must be anthropic for AnthropicClient, got openai"),
            "{err}"
        );
    }

    #[test]
    fn schema_instruction_embeds_the_schema() {
        let s = schema_instruction(&serde_json::json!({"type": "object"}));
        assert!(s.contains(r#"{"type":"object"}"#), "{s}");
    }
}
