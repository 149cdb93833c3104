//! The OpenAI-compatible chat completions client (OpenAI, vLLM, llama.cpp server,
//! Ollama, most gateways).

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

/// A client for `POST {base_url}/chat/completions`.
///
/// Sends `Authorization: Bearer <key>` when a key is configured (local servers need
/// none). A request's `json_schema` is sent as
/// `response_format: {"type": "json_schema", ...}` with `strict: false`, which OpenAI,
/// vLLM, llama.cpp and Ollama understand.
#[derive(Debug, Clone)]
pub struct OpenAiClient {
    config: ProviderConfig,
    http: reqwest::Client,
    endpoint: Endpoint,
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<serde_json::Value>,
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl OpenAiClient {
    /// Builds a client with its own connection pool (rustls + ring, system roots).
    ///
    /// # Errors
    /// [`LlmError::InvalidConfig`] when `config` fails [`ProviderConfig::validate`] or
    /// its kind is not `openai`; [`LlmError::ClientBuild`] when TLS cannot be set up.
    pub fn new(config: ProviderConfig) -> Result<Self, LlmError> {
        config.validate()?;
        let http = build_http_client(&config)?;
        Self::with_http_client(config, http)
    }

    /// Builds a client over an existing reqwest client (to share a pool, or to supply
    /// custom TLS roots or a proxy). `config.connect_timeout` is then the given
    /// client's business.
    ///
    /// # Errors
    /// [`LlmError::InvalidConfig`] as for [`OpenAiClient::new`].
    pub fn with_http_client(
        config: ProviderConfig,
        http: reqwest::Client,
    ) -> Result<Self, LlmError> {
        config.validate()?;
        if config.kind != ProviderKind::Openai {
            return Err(LlmError::InvalidConfig {
                field: "kind",
                reason: format!("must be openai for OpenAiClient, got {}", config.kind),
            });
        }
        let mut headers = Vec::new();
        if let Some(key) = config.api_key.as_ref().filter(|k| !k.is_empty()) {
            headers.push(("authorization", format!("Bearer {}", key.expose()), true));
        }
        let endpoint = Endpoint::new("openai", &config, "/chat/completions", headers)?;
        Ok(OpenAiClient {
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
        let mut messages = Vec::with_capacity(req.messages.len() + 1);
        if let Some(system) = &req.system {
            messages.push(WireMessage {
                role: "system",
                content: system,
            });
        }
        messages.extend(req.messages.iter().map(|m| WireMessage {
            role: m.role.as_str(),
            content: &m.content,
        }));
        let max_tokens = req.max_tokens.unwrap_or(self.config.max_tokens);
        let body = ChatRequest {
            model: self.config.model.as_str(),
            messages,
            max_tokens,
            temperature: req.temperature.or(self.config.temperature),
            response_format: req.json_schema.as_ref().map(|schema| {
                serde_json::json!({
                    "type": "json_schema",
                    "json_schema": {"name": "response", "schema": schema, "strict": false}
                })
            }),
            stream: false,
        };
        let timeout = req.timeout.unwrap_or(self.config.timeout);
        let bytes = self
            .endpoint
            .post_json(&self.http, &body, timeout, &self.config.model)
            .await?;
        let resp: ChatResponse = self.endpoint.parse(&bytes)?;
        let Some(choice) = resp.choices.into_iter().next() else {
            return Err(self.endpoint.malformed("response has no choices"));
        };
        let usage_missing = resp.usage.is_none();
        let usage = match resp.usage {
            Some(u) => Usage::new(u.prompt_tokens, u.completion_tokens),
            None => {
                // The caller (the facade) warns once per provider; this is per call.
                tracing::debug!(model = %self.config.model, "provider reported no token usage; cost priced from an upper-bound estimate");
                Usage::default()
            }
        };
        let mut finish_reason = choice.finish_reason.as_deref().map(FinishReason::from_wire);
        let refusal = choice.message.refusal.filter(|r| !r.trim().is_empty());
        if refusal.is_some() {
            finish_reason = Some(FinishReason::ContentFilter);
        }
        let text = choice.message.content.unwrap_or_default();
        Ok(Completion {
            usage,
            model: resp
                .model
                .map(ModelId::from)
                .unwrap_or_else(|| self.config.model.clone()),
            // No usage reported: priced from the most the call can have used, never $0.
            cost: self.config.price.map(|p| {
                if usage_missing {
                    p.cost(&Usage::upper_bound(req, &text, max_tokens))
                } else {
                    p.cost(&usage)
                }
            }),
            finish_reason,
            text,
            usage_missing,
            refusal,
        })
    }
}

#[async_trait]
impl LlmClient for OpenAiClient {
    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, LlmError> {
        let span = call_span(
            "openai",
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
        "openai"
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
    use genesis_core::Secret;

    #[test]
    fn rejects_an_anthropic_config() {
        let cfg = ProviderConfig::new(ProviderKind::Anthropic, "claude");
        let http = build_http_client(&ProviderConfig::new(ProviderKind::Openai, "m")).unwrap();
        let err = OpenAiClient::with_http_client(cfg, http).unwrap_err();
        assert!(err.to_string().contains("must be openai"), "{err}");
    }

    #[test]
    fn debug_output_hides_the_key() {
        let cfg = ProviderConfig::new(ProviderKind::Openai, "gpt")
            .with_api_key(Secret::new("sk-top-secret"));
        let client = OpenAiClient::new(cfg).unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("sk-top-secret"), "{debug}");
    }
}
