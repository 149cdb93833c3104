//! The `llm.call` span carries GenAI semantic-convention fields and never the API key
//! or the prompt, at any level.

use std::io::Write;
use std::sync::{Arc, Mutex};

use genesis_llm::{AnthropicClient, CompletionRequest, LlmClient, OpenAiClient, ProviderKind};
use tracing_subscriber::fmt::format::FmtSpan;

use crate::stub::{Reply, Stub};
use crate::{KEY, config};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

const PROMPT: &str = "my confidential prompt 7f3e";

// current_thread runtime: the thread-local subscriber sees every task, the stub's too.
#[tokio::test(flavor = "current_thread")]
async fn spans_carry_genai_fields_and_no_secrets() {
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::CLOSE)
        .finish();
    // Other tests run on other threads without a subscriber. With exactly one live
    // dispatcher, tracing-core computes a new callsite's interest from the registering
    // thread's default only, so another thread could cache "never" for `llm.call`.
    // A second live dispatcher makes every registration consult all of them; the
    // rebuild then fixes anything cached before this test started.
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();

    let oa = Stub::start(vec![
        Reply::json(200, crate::openai::ok_body("fine", 12, 34)),
        Reply::json(
            401,
            serde_json::json!({"error": {"message": "Incorrect API key provided"}}),
        ),
    ])
    .await;
    let an = Stub::start(vec![Reply::json(
        200,
        crate::anthropic::ok_body("fine", 56, 78),
    )])
    .await;
    let openai = OpenAiClient::new(config(ProviderKind::Openai, &oa.url("/v1"))).unwrap();
    let anthropic = AnthropicClient::new(config(ProviderKind::Anthropic, &an.url(""))).unwrap();
    let req = CompletionRequest::user(PROMPT).with_system(PROMPT);
    openai.complete(&req).await.unwrap();
    let err = openai.complete(&req).await.unwrap_err();
    anthropic.complete(&req).await.unwrap();
    drop(_guard);

    let out = buf.text();
    assert!(out.contains("llm.call"), "{out}");
    for needle in [
        "gen_ai.system=\"openai\"",
        "gen_ai.system=\"anthropic\"",
        "gen_ai.request.model=\"gpt-test\"",
        "gen_ai.request.model=\"claude-test\"",
        "gen_ai.usage.input_tokens=12",
        "gen_ai.usage.output_tokens=34",
        "gen_ai.usage.input_tokens=56",
        "gen_ai.usage.output_tokens=78",
        "gen_ai.response.finish_reasons=\"stop\"",
        "error.type=\"rejected\"",
    ] {
        assert!(out.contains(needle), "missing {needle} in:\n{out}");
    }
    assert!(!out.contains(KEY), "api key leaked:\n{out}");
    assert!(!out.contains(PROMPT), "prompt leaked:\n{out}");
    assert!(!err.to_string().contains(KEY) && !format!("{err:?}").contains(KEY));
}
