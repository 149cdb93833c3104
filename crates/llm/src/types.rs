//! Provider-neutral request and response values.

use std::time::Duration;

use genesis_core::{ModelId, Usd};
use serde::{Deserialize, Serialize};

use crate::LlmError;

/// Who wrote a [`Message`]. The system prompt is not a message: it lives in
/// [`CompletionRequest::system`], because Anthropic does not accept it in the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The caller.
    User,
    /// The model (earlier turns of the conversation).
    Assistant,
}

impl Role {
    /// The wire name (`user`, `assistant`), the same for OpenAI and Anthropic.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
}

impl Message {
    /// A user turn.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An assistant turn.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// A provider-neutral chat completion request.
///
/// `max_tokens`, `temperature` and `timeout` fall back to the provider's
/// [`ProviderConfig`](crate::ProviderConfig) when `None`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The system prompt.
    pub system: Option<String>,
    /// The conversation, oldest first.
    pub messages: Vec<Message>,
    /// The most tokens the model may generate.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// A JSON schema the reply must match. OpenAI-compatible clients send it as
    /// `response_format`; use [`complete_json`](crate::complete_json) to validate the
    /// reply and get one repair retry.
    pub json_schema: Option<serde_json::Value>,
    /// A timeout for this call only, overriding the provider's.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

impl CompletionRequest {
    /// A request with one user message.
    pub fn user(content: impl Into<String>) -> Self {
        CompletionRequest {
            messages: vec![Message::user(content)],
            ..Default::default()
        }
    }

    /// Sets the system prompt.
    #[must_use]
    pub fn with_system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Appends a message.
    #[must_use]
    pub fn with_message(mut self, message: Message) -> Self {
        self.messages.push(message);
        self
    }

    /// Sets the generation limit.
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Sets the sampling temperature.
    #[must_use]
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Sets the JSON schema the reply must match.
    #[must_use]
    pub fn with_json_schema(mut self, schema: serde_json::Value) -> Self {
        self.json_schema = Some(schema);
        self
    }

    /// Sets a per-call timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Checks that the request can be sent. The clients call this before any I/O, so a
    /// bad request fails fast and is never classified as a retryable transport error.
    ///
    /// # Errors
    /// [`LlmError::InvalidRequest`] naming the field and value: no messages, a
    /// temperature that is not within `0..=2`, a zero `max_tokens` or `timeout`.
    pub fn validate(&self) -> Result<(), LlmError> {
        let invalid = |field, reason: String| Err(LlmError::InvalidRequest { field, reason });
        if self.messages.is_empty() {
            return invalid("messages", "must not be empty".to_owned());
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return invalid("temperature", format!("must be within 0..=2, got {t}"));
        }
        if self.max_tokens == Some(0) {
            return invalid("max_tokens", "must be at least 1, got 0".to_owned());
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return invalid("timeout", "must be greater than zero, got 0s".to_owned());
        }
        Ok(())
    }
}

/// Tokens consumed by one call, as reported by the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens (for Anthropic including cache reads and writes).
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
}

impl Usage {
    /// Creates a usage record.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Usage {
            input_tokens,
            output_tokens,
        }
    }

    /// Input plus output tokens.
    pub fn total(self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// The most tokens a call of `req` answered with `answer` can have used, for a
    /// provider that reports no usage: one token per byte of text (byte-level BPE and
    /// byte-fallback tokenizers never make a token of less than one byte) plus
    /// [`MESSAGE_OVERHEAD_TOKENS`] per message (the system prompt counted as one) for
    /// the prompt, and one per byte of the answer but at most `max_tokens` for the
    /// output. Conservative on purpose: what it prices is charged to budgets.
    pub fn upper_bound(req: &CompletionRequest, answer: &str, max_tokens: u32) -> Usage {
        let system = req.system.as_ref().map_or(0, |s| {
            (s.len() as u64).saturating_add(MESSAGE_OVERHEAD_TOKENS)
        });
        let input = req
            .messages
            .iter()
            .map(|m| (m.content.len() as u64).saturating_add(MESSAGE_OVERHEAD_TOKENS))
            .fold(system, u64::saturating_add);
        Usage::new(input, (answer.len() as u64).min(u64::from(max_tokens)))
    }
}

/// Tokens a message can add beyond its text (role markers, separators): generous for
/// every chat format in use (see [`Usage::upper_bound`]).
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 16;

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, rhs: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(rhs.input_tokens),
            output_tokens: self.output_tokens.saturating_add(rhs.output_tokens),
        }
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, rhs: Usage) {
        *self = *self + rhs;
    }
}

/// Why the model stopped generating, normalised across providers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinishReason {
    /// Natural end or a stop sequence (`stop`, `end_turn`, `stop_sequence`).
    Stop,
    /// The token limit was hit (`length`, `max_tokens`); the text is truncated.
    Length,
    /// The provider filtered or the model refused (`content_filter`, `refusal`).
    ContentFilter,
    /// The model asked for a tool (`tool_calls`, `tool_use`).
    ToolUse,
    /// Anything else, verbatim.
    Other(String),
}

impl FinishReason {
    /// Maps a provider's finish/stop reason string.
    pub fn from_wire(reason: &str) -> Self {
        match reason {
            "stop" | "end_turn" | "stop_sequence" | "eos" => FinishReason::Stop,
            "length" | "max_tokens" | "model_length" => FinishReason::Length,
            "content_filter" | "refusal" => FinishReason::ContentFilter,
            "tool_calls" | "function_call" | "tool_use" => FinishReason::ToolUse,
            other => FinishReason::Other(other.to_owned()),
        }
    }

    /// The normalised name (`stop`, `length`, ...), or the raw string for `Other`.
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::ToolUse => "tool_use",
            FinishReason::Other(s) => s,
        }
    }
}

/// A finished completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The generated text (all text blocks concatenated).
    pub text: String,
    /// Tokens consumed.
    pub usage: Usage,
    /// The model that answered, as reported by the provider (may be more specific than
    /// the configured one, e.g. a dated snapshot).
    pub model: ModelId,
    /// Why generation stopped, when the provider said.
    pub finish_reason: Option<FinishReason>,
    /// The model's refusal message, when it refused instead of answering (OpenAI's
    /// `message.refusal`; `finish_reason` is then [`FinishReason::ContentFilter`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// What the call cost, when the client was configured with a
    /// [`ModelPrice`](crate::ModelPrice). When the provider reported no usage
    /// (`usage_missing`), the price of [`Usage::upper_bound`]: never understated.
    pub cost: Option<Usd>,
    /// True when the provider's answer carried no token usage (gateways, vLLM and
    /// Ollama setups may omit it): `usage` is then zero (unknown) and `cost`, when the
    /// client has a price, is priced from [`Usage::upper_bound`]. Absent (false) in
    /// completions serialised before it was recorded.
    #[serde(default)]
    pub usage_missing: bool,
}

impl Completion {
    /// A completion with the given text, zero usage and a `Stop` finish reason; handy
    /// for scripted tests.
    pub fn text(model: impl Into<ModelId>, text: impl Into<String>) -> Self {
        Completion {
            text: text.into(),
            usage: Usage::default(),
            model: model.into(),
            finish_reason: Some(FinishReason::Stop),
            refusal: None,
            cost: None,
            usage_missing: false,
        }
    }

    /// Replaces the usage.
    #[must_use]
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons_normalise_both_providers() {
        assert_eq!(FinishReason::from_wire("end_turn"), FinishReason::Stop);
        assert_eq!(FinishReason::from_wire("stop"), FinishReason::Stop);
        assert_eq!(FinishReason::from_wire("max_tokens"), FinishReason::Length);
        assert_eq!(FinishReason::from_wire("length"), FinishReason::Length);
        assert_eq!(FinishReason::from_wire("tool_use"), FinishReason::ToolUse);
        assert_eq!(FinishReason::from_wire("pause_turn").as_str(), "pause_turn");
    }

    #[test]
    fn usage_adds_and_saturates() {
        let a = Usage::new(u64::MAX, 1);
        let b = Usage::new(5, 2);
        assert_eq!(a + b, Usage::new(u64::MAX, 3));
        assert_eq!(Usage::new(3, 4).total(), 7);
    }

    #[test]
    fn invalid_requests_name_field_and_value() {
        let ok = CompletionRequest::user("hi");
        ok.validate().unwrap();
        for (req, needle) in [
            (CompletionRequest::default(), "messages must not be empty"),
            (
                ok.clone().with_temperature(f32::NAN),
                "temperature must be within 0..=2, got NaN",
            ),
            (ok.clone().with_temperature(2.5), "got 2.5"),
            (ok.clone().with_max_tokens(0), "max_tokens"),
            (ok.clone().with_timeout(Duration::ZERO), "timeout"),
        ] {
            let msg = req.validate().unwrap_err().to_string();
            assert!(msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn request_builder_and_timeout_serde() {
        let req = CompletionRequest::user("hi")
            .with_system("be brief")
            .with_max_tokens(10)
            .with_timeout(Duration::from_millis(1500));
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["timeout"], "1s 500ms");
        assert_eq!(json["messages"][0]["role"], "user");
        let back: CompletionRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, req);
    }
}
