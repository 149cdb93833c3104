//! A scripted [`LlmClient`] for tests: replays queued replies and errors in order and
//! records every request.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use genesis_core::ModelId;

use crate::client::{call_span, record_outcome};
use crate::{Completion, CompletionRequest, LlmClient, LlmError, ModelPrice, Usage};

/// A client that answers from a script instead of the network.
///
/// Replies are consumed in order; once the script is empty, calls fail with
/// [`LlmError::ScriptExhausted`]. Every request is recorded, so tests can assert what
/// was sent (prompts, repair turns, schemas). Usable from other crates' tests: it has no
/// test-only dependencies.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use genesis_llm::{CompletionRequest, LlmClient, ScriptedClient};
///
/// let client = ScriptedClient::new("gpt-4o-mini").then_text("hello");
/// let reply = client.complete(&CompletionRequest::user("hi")).await.unwrap();
/// assert_eq!(reply.text, "hello");
/// assert_eq!(client.requests()[0].messages[0].content, "hi");
/// assert!(client.complete(&CompletionRequest::user("again")).await.is_err());
/// # }
/// ```
#[derive(Debug)]
pub struct ScriptedClient {
    model: ModelId,
    provider: String,
    price: Option<ModelPrice>,
    max_tokens: Option<u32>,
    script: Mutex<VecDeque<Result<Completion, LlmError>>>,
    requests: Mutex<Vec<CompletionRequest>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread must not turn every later call into a second panic.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ScriptedClient {
    /// An empty script for `model`, reporting provider `scripted`.
    pub fn new(model: impl Into<ModelId>) -> Self {
        ScriptedClient {
            model: model.into(),
            provider: "scripted".to_owned(),
            price: None,
            max_tokens: None,
            script: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// Reports `provider` from [`LlmClient::provider`].
    #[must_use]
    pub fn with_provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = provider.into();
        self
    }

    /// Fills in [`Completion::cost`] from `price` for replies that have none.
    #[must_use]
    pub fn with_price(mut self, price: ModelPrice) -> Self {
        self.price = Some(price);
        self
    }

    /// Reports `max_tokens` from [`LlmClient::default_max_tokens`], as a configured
    /// provider client does.
    #[must_use]
    pub fn with_default_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Queues a text reply (zero usage, finish reason `stop`).
    #[must_use]
    pub fn then_text(self, text: impl Into<String>) -> Self {
        self.push_text(text);
        self
    }

    /// Queues a full completion.
    #[must_use]
    pub fn then_completion(self, completion: Completion) -> Self {
        self.push_completion(completion);
        self
    }

    /// Queues an error.
    #[must_use]
    pub fn then_error(self, error: LlmError) -> Self {
        self.push_error(error);
        self
    }

    /// Queues a text reply on a shared client.
    pub fn push_text(&self, text: impl Into<String>) {
        self.push_completion(Completion::text(self.model.clone(), text));
    }

    /// Queues a text reply with the given usage.
    pub fn push_text_with_usage(&self, text: impl Into<String>, usage: Usage) {
        self.push_completion(Completion::text(self.model.clone(), text).with_usage(usage));
    }

    /// Queues a full completion on a shared client.
    pub fn push_completion(&self, completion: Completion) {
        lock(&self.script).push_back(Ok(completion));
    }

    /// Queues an error on a shared client.
    pub fn push_error(&self, error: LlmError) {
        lock(&self.script).push_back(Err(error));
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<CompletionRequest> {
        lock(&self.requests).clone()
    }

    /// How many calls were made.
    pub fn calls(&self) -> usize {
        lock(&self.requests).len()
    }

    /// How many scripted replies are left.
    pub fn remaining(&self) -> usize {
        lock(&self.script).len()
    }
}

#[async_trait]
impl LlmClient for ScriptedClient {
    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, LlmError> {
        let span = call_span(
            &self.provider,
            &self.model,
            req.max_tokens,
            req.temperature,
            "",
        );
        let call = {
            let mut requests = lock(&self.requests);
            requests.push(req.clone());
            requests.len()
        };
        // Fail like the real clients would, without consuming a scripted reply.
        let next = match req.validate() {
            Ok(()) => lock(&self.script).pop_front(),
            Err(e) => Some(Err(e)),
        };
        let result = match next {
            Some(Ok(mut c)) => {
                if c.cost.is_none() {
                    c.cost = self.price.map(|p| p.cost(&c.usage));
                }
                Ok(c)
            }
            Some(Err(e)) => Err(e),
            None => Err(LlmError::ScriptExhausted { call }),
        };
        record_outcome(&span, &result);
        result
    }

    fn model(&self) -> &ModelId {
        &self.model
    }

    fn provider(&self) -> &str {
        &self.provider
    }

    fn price(&self) -> Option<ModelPrice> {
        self.price
    }

    fn default_max_tokens(&self) -> Option<u32> {
        self.max_tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genesis_core::Usd;

    #[tokio::test]
    async fn replays_in_order_and_records() {
        let client = ScriptedClient::new("m")
            .with_price(ModelPrice::new(
                Usd::new(1.0).unwrap(),
                Usd::new(2.0).unwrap(),
            ))
            .then_text("one")
            .then_error(LlmError::Rejected {
                provider: "scripted".into(),
                status: 400,
                message: "no".into(),
            });
        client.push_text_with_usage("three", Usage::new(1_000_000, 1_000_000));
        assert_eq!(client.remaining(), 3);
        assert_eq!(
            client
                .complete(&CompletionRequest::user("a"))
                .await
                .unwrap()
                .text,
            "one"
        );
        assert!(matches!(
            client.complete(&CompletionRequest::user("b")).await,
            Err(LlmError::Rejected { status: 400, .. })
        ));
        let third = client
            .complete(&CompletionRequest::user("c"))
            .await
            .unwrap();
        assert_eq!(third.cost, Some(Usd::new(3.0).unwrap()));
        let err = client
            .complete(&CompletionRequest::user("d"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, LlmError::ScriptExhausted { call: 4 }),
            "{err}"
        );
        let invalid = client
            .complete(&CompletionRequest::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                invalid,
                LlmError::InvalidRequest {
                    field: "messages",
                    ..
                }
            ),
            "{invalid}"
        );
        let sent: Vec<String> = client
            .requests()
            .into_iter()
            .map(|r| {
                r.messages
                    .first()
                    .map(|m| m.content.clone())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(sent.len(), 5);
        assert_eq!(sent[..4], ["a", "b", "c", "d"]);
    }
}
