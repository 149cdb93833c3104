//! The [`LlmClient`] trait, the `llm.call` span, and construction from config.

use std::sync::Arc;

use async_trait::async_trait;
use genesis_core::ModelId;
use tracing::Span;
use tracing::field::Empty;

use crate::{Completion, CompletionRequest, LlmError, ModelPrice, ProviderConfig, ProviderKind};

/// A chat model behind some provider.
///
/// Implementations are cheap to share (`Arc<dyn LlmClient>`), take `&self`, and never
/// retry on their own: retries, breakers and budgets belong to the resilience layer,
/// which reads [`LlmError::retry_hint`].
#[async_trait]
pub trait LlmClient: Send + Sync {
    /// Sends one completion request.
    ///
    /// # Errors
    /// Any [`LlmError`]; see [`LlmError::retry_hint`] for which ones are worth retrying.
    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, LlmError>;

    /// The configured model.
    fn model(&self) -> &ModelId;

    /// The provider name (`openai`, `anthropic`, `scripted`), used as `gen_ai.system`.
    fn provider(&self) -> &str;

    /// The model's price, when configured: what [`Completion::cost`] is computed from.
    fn price(&self) -> Option<ModelPrice> {
        None
    }

    /// The output token limit of a request without `max_tokens`, when the client sets
    /// one (`None`: the provider's own default, unknown here).
    fn default_max_tokens(&self) -> Option<u32> {
        None
    }
}

#[async_trait]
impl<T: LlmClient + ?Sized> LlmClient for Arc<T> {
    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, LlmError> {
        (**self).complete(req).await
    }

    fn model(&self) -> &ModelId {
        (**self).model()
    }

    fn provider(&self) -> &str {
        (**self).provider()
    }

    fn price(&self) -> Option<ModelPrice> {
        (**self).price()
    }

    fn default_max_tokens(&self) -> Option<u32> {
        (**self).default_max_tokens()
    }
}

#[async_trait]
impl<T: LlmClient + ?Sized> LlmClient for Box<T> {
    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, LlmError> {
        (**self).complete(req).await
    }

    fn model(&self) -> &ModelId {
        (**self).model()
    }

    fn provider(&self) -> &str {
        (**self).provider()
    }

    fn price(&self) -> Option<ModelPrice> {
        (**self).price()
    }

    fn default_max_tokens(&self) -> Option<u32> {
        (**self).default_max_tokens()
    }
}

/// Builds the client `config.kind` names.
///
/// # Errors
/// [`LlmError::InvalidConfig`] or [`LlmError::ClientBuild`], as the client's `new`;
/// without the `http` feature, [`LlmError::InvalidConfig`] naming the feature for every
/// kind (all of them are HTTP providers).
pub fn client_from_config(config: &ProviderConfig) -> Result<Arc<dyn LlmClient>, LlmError> {
    require_http(config.kind, cfg!(feature = "http"))?;
    http_client_from_config(config)
}

/// Refuses a provider kind when the HTTP providers are compiled out, so a config asking
/// for `openai` is never silently ignored.
fn require_http(kind: ProviderKind, http_enabled: bool) -> Result<(), LlmError> {
    if http_enabled {
        Ok(())
    } else {
        Err(http_disabled(kind))
    }
}

/// The refusal: names the provider kind and the feature.
fn http_disabled(kind: ProviderKind) -> LlmError {
    LlmError::InvalidConfig {
        field: "kind",
        reason: format!(
            "provider kind {kind} needs the `http` feature of genesis-llm (genesis: `http`), \
             which this build was compiled without"
        ),
    }
}

#[cfg(feature = "http")]
fn http_client_from_config(config: &ProviderConfig) -> Result<Arc<dyn LlmClient>, LlmError> {
    use crate::{AnthropicClient, OpenAiClient};
    Ok(match config.kind {
        ProviderKind::Openai => Arc::new(OpenAiClient::new(config.clone())?),
        ProviderKind::Anthropic => Arc::new(AnthropicClient::new(config.clone())?),
    })
}

#[cfg(not(feature = "http"))]
fn http_client_from_config(config: &ProviderConfig) -> Result<Arc<dyn LlmClient>, LlmError> {
    Err(http_disabled(config.kind))
}

/// The `llm.call` span with GenAI semantic-convention fields. Usage, response model,
/// finish reason and error type are recorded by [`record_outcome`]. Never carries the
/// prompt or the API key.
pub(crate) fn call_span(
    system: &str,
    model: &ModelId,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    server_address: &str,
) -> Span {
    tracing::info_span!(
        "llm.call",
        "gen_ai.operation.name" = "chat",
        "gen_ai.system" = system,
        "gen_ai.request.model" = model.as_str(),
        // Integers as i64: tracing-opentelemetry exports unsigned values as text, and
        // numeric searches (`>=`) need numbers.
        "gen_ai.request.max_tokens" = max_tokens.map(i64::from),
        "gen_ai.request.temperature" = temperature.map(f64::from),
        "server.address" = server_address,
        "gen_ai.response.model" = Empty,
        "gen_ai.response.finish_reasons" = Empty,
        "gen_ai.usage.input_tokens" = Empty,
        "gen_ai.usage.output_tokens" = Empty,
        "genesis.cost_usd" = Empty,
        "error.type" = Empty,
        "otel.status_description" = Empty,
    )
}

/// A token count as an i64 span attribute (see [`call_span`]).
fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Records the outcome of a call on its span and emits one debug event.
pub(crate) fn record_outcome(span: &Span, result: &Result<Completion, LlmError>) {
    match result {
        Ok(c) => {
            span.record("gen_ai.response.model", c.model.as_str());
            if let Some(reason) = &c.finish_reason {
                span.record("gen_ai.response.finish_reasons", reason.as_str());
            }
            span.record("gen_ai.usage.input_tokens", tokens(c.usage.input_tokens));
            span.record("gen_ai.usage.output_tokens", tokens(c.usage.output_tokens));
            if let Some(cost) = c.cost {
                span.record("genesis.cost_usd", cost.as_f64());
            }
            tracing::debug!(parent: span, chars = c.text.len(), "llm call completed");
        }
        Err(e) => {
            span.record("error.type", e.kind());
            // The span's status: Error, with why (a 429 or 5xx, a timeout, a bad answer),
            // so failed calls are found by status like failed tasks and runs.
            span.record("otel.status_description", e.to_string().as_str());
            tracing::debug!(parent: span, error = %e, retryable = e.is_retryable(), "llm call failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build without the `http` feature refuses every provider kind by name instead of
    /// ignoring the `[llm.providers.*]` entry.
    #[test]
    fn provider_kinds_are_refused_naming_the_http_feature_when_it_is_off() {
        for kind in [ProviderKind::Openai, ProviderKind::Anthropic] {
            let err = require_http(kind, false).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("`http` feature of genesis-llm") && text.contains(kind.as_str()),
                "{text}"
            );
            assert_eq!(
                err.category(),
                genesis_core::ErrorCategory::Config,
                "{text}"
            );
            assert!(require_http(kind, true).is_ok());
        }
    }

    /// The whole path in a build without `http` (`cargo test -p genesis-llm
    /// --no-default-features --lib`, run by `.ci/run`).
    #[cfg(not(feature = "http"))]
    #[test]
    fn client_from_config_refuses_every_kind_without_the_feature() {
        for kind in [ProviderKind::Openai, ProviderKind::Anthropic] {
            let config = ProviderConfig::new(kind, "some-model");
            let err = client_from_config(&config).err().unwrap();
            assert!(err.to_string().contains("`http` feature"), "{err}");
        }
    }
}
