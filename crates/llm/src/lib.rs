//! LLM clients for Genesis: one small async trait, two real HTTP providers, a price
//! table, structured JSON output, and a scripted client for tests.
//!
//! Mental model: an [`LlmClient`] turns a provider-neutral [`CompletionRequest`] into a
//! [`Completion`] (text, [`Usage`], model, finish reason, cost) or an [`LlmError`] that
//! knows whether it is worth retrying ([`LlmError::retry_hint`]). Clients never retry on
//! their own; the resilience layer does, using that hint.
//!
//! - [`OpenAiClient`]: OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp
//!   server, Ollama); [`AnthropicClient`]: the Anthropic Messages API. Both run over
//!   reqwest with rustls and the `ring` provider passed explicitly (no process-global
//!   provider is installed), and both are built from a [`ProviderConfig`]
//!   ([`client_from_config`]).
//! - [`complete_json`] / [`complete_structured`]: ask for JSON, validate it against a
//!   [`JsonSchema`] subset, and send the problem back to the model once.
//! - [`PriceTable`] / [`ModelPrice`]: dollars per million tokens, loadable from TOML.
//! - [`ScriptedClient`]: queued replies and errors, recorded requests.
//!
//! Failures and the resilience layer ([`LlmError::retry_hint`], [`LlmError::category`]):
//!
//! | failure                                   | variant             | retryable | category |
//! |-------------------------------------------|---------------------|-----------|----------|
//! | 429                                       | `RateLimited`       | yes, with `Retry-After` | llm |
//! | 5xx (incl. 529), 408, 409                 | `ServerError`       | yes, with `Retry-After` | llm |
//! | other 4xx                                 | `Rejected`          | no        | llm      |
//! | call timeout, connect timeout             | `Timeout`           | yes       | network  |
//! | refused, reset, DNS, TLS                  | `Transport`         | yes       | network  |
//! | 2xx body that is not the wire format      | `MalformedResponse` | no        | llm      |
//! | JSON still invalid after the repair turn  | `InvalidJson` / `SchemaViolation` | no | llm |
//! | request that cannot be sent (no messages) | `InvalidRequest`    | no        | llm      |
//! | bad config or schema                      | `InvalidConfig` / `InvalidSchema` | no | config |
//!
//! `Retry-After` is parsed from delay-seconds or an HTTP-date (see [`retry_after`]);
//! OpenAI's `retry-after-ms` wins when present.
//!
//! TLS: build clients with [`OpenAiClient::new`] / [`AnthropicClient::new`] or share one
//! pool via [`build_http_client`] and `with_http_client`. Do not pass a
//! `reqwest::Client::new()`: with the workspace's `rustls-no-provider` feature and no
//! process-global provider, reqwest's default builder panics.
//!
//! # Features
//!
//! - `http` (default): the HTTP providers (`OpenAiClient`, `AnthropicClient`,
//!   `build_http_client`, `http_client_builder`) and their reqwest/rustls stack (TLS from
//!   `genesis_core::tls`). Without it the crate keeps the trait, the types, the price
//!   table, structured output and [`ScriptedClient`]; [`client_from_config`] then refuses
//!   every provider kind with [`LlmError::InvalidConfig`] naming the feature.
//!
//! Every call runs in an `llm.call` span with GenAI semantic-convention fields
//! (`gen_ai.system`, `gen_ai.request.model`, `gen_ai.usage.input_tokens`,
//! `gen_ai.usage.output_tokens`, ...). API keys are [`genesis_core::Secret`]s and never
//! appear in spans, errors or `Debug` output; prompts are never logged.
//!
//! ```
//! use genesis_core::Usd;
//! use genesis_llm::{complete_json, CompletionRequest, ModelPrice, ScriptedClient, Usage};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), genesis_llm::LlmError> {
//! // The first reply breaks the schema; the repair turn fixes it.
//! let client = ScriptedClient::new("gpt-4o-mini")
//!     .then_text(r#"{"tasks": "write tests"}"#)
//!     .then_text(r#"{"tasks": ["write tests", "ship"]}"#);
//! let schema = json!({
//!     "type": "object",
//!     "properties": {"tasks": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
//!     "required": ["tasks"],
//!     "additionalProperties": false
//! });
//! let req = CompletionRequest::user("Plan the release").with_system("You plan work.");
//! let value = complete_json(&client, &req, &schema).await?;
//! assert_eq!(value["tasks"][1], "ship");
//! assert_eq!(client.calls(), 2);
//!
//! let price = ModelPrice::new(Usd::new(0.15).unwrap(), Usd::new(0.60).unwrap());
//! let cost = price.cost(&Usage::new(2_000, 500));
//! assert!((cost.as_f64() - 0.0006).abs() < 1e-12);
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "http")]
mod anthropic;
mod client;
mod config;
mod error;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
mod openai;
mod price;
pub mod retry_after;
pub mod schema;
mod scripted;
mod structured;
mod types;

#[cfg(feature = "http")]
pub use anthropic::AnthropicClient;
pub use client::{LlmClient, client_from_config};
pub use config::{ProviderConfig, ProviderKind};
pub use error::{LlmError, RetryHint};
#[cfg(feature = "http")]
pub use http::{build_http_client, http_client_builder};
#[cfg(feature = "http")]
pub use openai::OpenAiClient;
pub use price::{ModelPrice, PriceTable};
pub use schema::{JsonSchema, Violation};
pub use scripted::ScriptedClient;
pub use structured::{
    StructuredCompletion, StructuredFailure, complete_json, complete_structured,
    complete_structured_metered, extract_json,
};
pub use types::{
    Completion, CompletionRequest, FinishReason, MESSAGE_OVERHEAD_TOKENS, Message, Role, Usage,
};

/// Re-exported so callers can name `async_trait` when implementing [`LlmClient`].
pub use async_trait::async_trait;
