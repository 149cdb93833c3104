//! `AnthropicClient` against a stub speaking the Messages API wire format.

use std::time::{Duration, SystemTime};

use genesis_core::ErrorCategory;
use genesis_llm::{
    AnthropicClient, CompletionRequest, FinishReason, LlmClient, LlmError, Message, ProviderKind,
    RetryHint, Usage, complete_json,
};
use serde_json::{Value, json};

use crate::stub::{Reply, Stub, http_date};
use crate::{KEY, config};

pub(crate) fn ok_body(text: &str, input: u64, output: u64) -> Value {
    json!({
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-test-20250101",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": input, "output_tokens": output}
    })
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn client_for(stub: &Stub) -> AnthropicClient {
    AnthropicClient::new(config(ProviderKind::Anthropic, &stub.url(""))).unwrap()
}

#[tokio::test]
async fn success_parses_blocks_usage_and_cost() {
    let body = json!({
        "id": "msg_02",
        "type": "message",
        "role": "assistant",
        "model": "claude-test-20250101",
        "content": [
            {"type": "text", "text": "Hello, "},
            {"type": "tool_use", "id": "t1", "name": "x", "input": {}},
            {"type": "text", "text": "world."}
        ],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 100, "output_tokens": 50, "cache_read_input_tokens": 900,
                  "cache_creation_input_tokens": 0}
    });
    let stub = Stub::start(vec![Reply::json(200, body)]).await;
    let client = client_for(&stub);
    let req = CompletionRequest::user("Say hello")
        .with_system("Be terse.")
        .with_message(Message::assistant("Hello"))
        .with_message(Message::user("Go on"));
    let c = client.complete(&req).await.unwrap();

    assert_eq!(c.text, "Hello, world.");
    assert_eq!(c.usage, Usage::new(1_000, 50));
    assert_eq!(c.finish_reason, Some(FinishReason::Length));
    assert_eq!(c.model.as_str(), "claude-test-20250101");
    // 1000 * $2/M + 50 * $10/M
    assert!((c.cost.unwrap().as_f64() - 0.0025).abs() < 1e-12);

    let sent = &stub.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], KEY);
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert!(sent.headers.get("authorization").is_none());
    assert_eq!(sent.body["system"], "Be terse.");
    assert_eq!(sent.body["max_tokens"], 1024);
    assert_eq!(sent.body["model"], "claude-test");
    let roles: Vec<&str> = sent.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
}

#[tokio::test]
async fn rate_limit_with_http_date_retry_after() {
    let at = SystemTime::now() + Duration::from_secs(45);
    let stub = Stub::start(vec![
        Reply::json(
            429,
            error_body(
                "rate_limit_error",
                "Number of requests has exceeded your rate limit",
            ),
        )
        .header("retry-after", http_date(at)),
    ])
    .await;
    let err = client_for(&stub)
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::RateLimited { message, .. } if message.contains("exceeded your rate limit"))
    );
    let hint = err.retry_hint();
    assert!(hint.retryable);
    let after = hint.after.unwrap();
    assert!(
        after > Duration::from_secs(35) && after <= Duration::from_secs(45),
        "{after:?}"
    );
}

#[tokio::test]
async fn rate_limit_with_retry_after_seconds() {
    let stub = Stub::start(vec![
        Reply::json(429, error_body("rate_limit_error", "slow")).header("retry-after", "30"),
    ])
    .await;
    let err = client_for(&stub)
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    assert_eq!(
        err.retry_hint(),
        RetryHint {
            retryable: true,
            after: Some(Duration::from_secs(30))
        }
    );
}

#[tokio::test]
async fn overloaded_and_internal_errors_are_retryable() {
    let stub = Stub::start(vec![
        Reply::json(529, error_body("overloaded_error", "Overloaded")),
        Reply::json(500, error_body("api_error", "Internal server error")),
    ])
    .await;
    let client = client_for(&stub);
    for status in [529, 500] {
        let err = client
            .complete(&CompletionRequest::user("x"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LlmError::ServerError { status: s, .. } if *s == status),
            "{err:?}"
        );
        assert!(err.is_retryable());
    }
}

#[tokio::test]
async fn invalid_request_is_not_retryable() {
    let stub = Stub::start(vec![Reply::json(
        400,
        error_body("invalid_request_error", "max_tokens: must be <= 8192"),
    )])
    .await;
    let err = client_for(&stub)
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::Rejected { status: 400, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("max_tokens: must be <= 8192"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_response_times_out() {
    let stub = Stub::start(vec![
        Reply::json(200, ok_body("late", 1, 1)).delayed(Duration::from_secs(30)),
    ])
    .await;
    let client = AnthropicClient::new(
        config(ProviderKind::Anthropic, &stub.url("")).with_timeout(Duration::from_millis(500)),
    )
    .unwrap();
    let err = client
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    assert!(matches!(&err, LlmError::Timeout { .. }), "{err:?}");
    assert_eq!(
        err.retry_hint(),
        RetryHint {
            retryable: true,
            after: None
        }
    );
    assert_eq!(err.category(), ErrorCategory::Network);
    assert!(
        err.to_string().contains("claude-test") && err.to_string().contains("500ms"),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_json_is_a_clear_error() {
    let stub = Stub::start(vec![Reply::raw(200, "<html>502 Bad Gateway</html>")]).await;
    let err = client_for(&stub)
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::MalformedResponse { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("anthropic sent a malformed response"),
        "{err}"
    );
    assert!(err.to_string().contains("<html>502 Bad Gateway"), "{err}");
}

#[tokio::test]
async fn missing_usage_is_malformed() {
    let stub = Stub::start(vec![Reply::json(
        200,
        json!({"type": "message", "content": [{"type": "text", "text": "hi"}]}),
    )])
    .await;
    let err = client_for(&stub)
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            LlmError::MalformedResponse {
                source: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {"labels": {"type": "array", "items": {"type": "string"}, "maxItems": 2}},
        "required": ["labels"],
        "additionalProperties": false
    })
}

#[tokio::test]
async fn structured_output_repairs_invalid_json_once() {
    let stub = Stub::start(vec![
        Reply::json(200, ok_body("I think the labels are bug and ui", 20, 9)),
        Reply::json(
            200,
            ok_body("```json\n{\"labels\": [\"bug\", \"ui\"]}\n```", 40, 11),
        ),
    ])
    .await;
    let client = client_for(&stub);
    let value = complete_json(
        &client,
        &CompletionRequest::user("Label this issue"),
        &schema(),
    )
    .await
    .unwrap();
    assert_eq!(value, json!({"labels": ["bug", "ui"]}));

    let sent = stub.requests();
    assert_eq!(sent.len(), 2);
    // No native schema support: the schema travels in the system prompt.
    let system = sent[0].body["system"].as_str().unwrap();
    assert!(
        system.contains("JSON Schema") && system.contains("\"maxItems\":2"),
        "{system}"
    );
    let msgs = sent[1].body["messages"].as_array().unwrap();
    assert_eq!(msgs[1]["content"], "I think the labels are bug and ui");
    assert!(
        msgs[2]["content"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
}

#[tokio::test]
async fn schema_violation_twice_names_the_failed_path() {
    let stub = Stub::start(vec![
        Reply::json(200, ok_body("{\"labels\": [\"a\", \"b\", \"c\"]}", 1, 1)),
        Reply::json(200, ok_body("{\"labels\": [\"a\"], \"why\": \"x\"}", 1, 1)),
    ])
    .await;
    let err = complete_json(&client_for(&stub), &CompletionRequest::user("x"), &schema())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::SchemaViolation { path, reason, .. }
            if path == "/why" && reason.contains("additionalProperties is false")),
        "{err:?}"
    );
    let repair = stub.requests()[1].body["messages"][2]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        repair.contains("/labels: array has 3 items, more than maxItems 2"),
        "{repair}"
    );
}
