//! `OpenAiClient` against a stub speaking the chat completions wire format.

use std::time::{Duration, SystemTime};

use genesis_core::{ErrorCategory, Usd};
use genesis_llm::{
    CompletionRequest, FinishReason, LlmClient, LlmError, OpenAiClient, ProviderKind, RetryHint,
    Usage, complete_json, complete_structured,
};
use serde_json::{Value, json};

use crate::stub::{Reply, Stub, http_date};
use crate::{KEY, config};

pub(crate) fn ok_body(text: &str, prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-test-2025-01-01",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    })
}

fn error_body(message: &str) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error", "code": null}})
}

async fn client_for(stub: &Stub) -> OpenAiClient {
    OpenAiClient::new(config(ProviderKind::Openai, &stub.url("/v1/"))).unwrap()
}

/// Audit L6 finding 8: a refusal (`content: null, refusal: "..."`) came back as an
/// empty text with nothing to tell it from an empty answer. Its message is kept, with
/// finish reason `content_filter`, and its usage is still reported.
#[tokio::test]
async fn a_refusal_is_surfaced_with_its_message() {
    let mut body = ok_body("", 40, 6);
    body["choices"][0]["message"] =
        json!({"role": "assistant", "content": null, "refusal": "I cannot help with that."});
    let stub = Stub::start(vec![
        Reply::json(200, body),
        Reply::json(200, ok_body("Paris.", 1, 1)),
    ])
    .await;
    let client = client_for(&stub).await;
    let c = client
        .complete(&CompletionRequest::user("Capital of France?"))
        .await
        .unwrap();
    assert_eq!(c.refusal.as_deref(), Some("I cannot help with that."));
    assert_eq!(c.finish_reason, Some(FinishReason::ContentFilter));
    assert_eq!(c.text, "");
    assert_eq!(c.usage, Usage::new(40, 6));
    // An ordinary answer has none.
    let c = client
        .complete(&CompletionRequest::user("Capital of France?"))
        .await
        .unwrap();
    assert_eq!(c.refusal, None);
}

#[tokio::test]
async fn success_parses_content_usage_and_cost() {
    let stub = Stub::start(vec![Reply::json(200, ok_body("Paris.", 1_000, 250))]).await;
    let client = client_for(&stub).await;
    let req = CompletionRequest::user("Capital of France?")
        .with_system("Answer briefly.")
        .with_temperature(0.2);
    let c = client.complete(&req).await.unwrap();

    assert_eq!(c.text, "Paris.");
    assert_eq!(c.usage, Usage::new(1_000, 250));
    assert_eq!(c.model.as_str(), "gpt-test-2025-01-01");
    assert_eq!(c.finish_reason, Some(FinishReason::Stop));
    // 1000 * $2/M + 250 * $10/M = $0.002 + $0.0025
    let cost = c.cost.unwrap().as_f64();
    assert!((cost - 0.0045).abs() < 1e-12, "{cost}");

    let sent = &stub.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.headers["authorization"],
        format!("Bearer {KEY}").as_str()
    );
    assert_eq!(sent.body["model"], "gpt-test");
    assert_eq!(
        sent.body["messages"][0],
        json!({"role": "system", "content": "Answer briefly."})
    );
    assert_eq!(
        sent.body["messages"][1],
        json!({"role": "user", "content": "Capital of France?"})
    );
    assert_eq!(sent.body["max_tokens"], 1024);
    assert_eq!(sent.body["stream"], false);
    assert!((sent.body["temperature"].as_f64().unwrap() - 0.2).abs() < 1e-6);
    assert!(sent.body.get("response_format").is_none());
}

#[tokio::test]
async fn local_server_without_key_sends_no_authorization() {
    let stub = Stub::start(vec![Reply::json(200, ok_body("hi", 3, 1))]).await;
    let mut cfg = config(ProviderKind::Openai, &stub.url("/v1"));
    cfg.api_key = None;
    cfg.price = None;
    let client = OpenAiClient::new(cfg).unwrap();
    let c = client
        .complete(&CompletionRequest::user("x").with_max_tokens(7))
        .await
        .unwrap();
    assert_eq!(c.cost, None);
    let sent = &stub.requests()[0];
    assert!(sent.headers.get("authorization").is_none());
    assert_eq!(sent.body["max_tokens"], 7);
}

#[tokio::test]
async fn rate_limit_with_retry_after_seconds_is_retryable_with_the_hint() {
    let stub = Stub::start(vec![
        Reply::json(429, error_body("Rate limit reached")).header("retry-after", "7"),
    ])
    .await;
    let err = client_for(&stub)
        .await
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::RateLimited { status: 429, retry_after: Some(d), message, .. }
            if *d == Duration::from_secs(7) && message == "Rate limit reached"),
        "{err:?}"
    );
    assert_eq!(
        err.retry_hint(),
        RetryHint {
            retryable: true,
            after: Some(Duration::from_secs(7))
        }
    );
    assert_eq!(err.category(), ErrorCategory::Llm);
}

#[tokio::test]
async fn rate_limit_with_retry_after_http_date() {
    let at = SystemTime::now() + Duration::from_secs(120);
    let stub = Stub::start(vec![
        Reply::json(429, error_body("slow down")).header("retry-after", http_date(at)),
    ])
    .await;
    let err = client_for(&stub)
        .await
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    let hint = err.retry_hint();
    assert!(hint.retryable);
    let after = hint.after.unwrap();
    assert!(
        after > Duration::from_secs(110) && after <= Duration::from_secs(120),
        "{after:?}"
    );
}

#[tokio::test]
async fn server_error_is_retryable() {
    let stub = Stub::start(vec![Reply::json(
        500,
        error_body("The server had an error"),
    )])
    .await;
    let err = client_for(&stub)
        .await
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            LlmError::ServerError {
                status: 500,
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.retry_hint(),
        RetryHint {
            retryable: true,
            after: None
        }
    );
    assert!(err.to_string().contains("The server had an error"), "{err}");
}

#[tokio::test]
async fn bad_request_is_not_retryable() {
    let stub = Stub::start(vec![Reply::json(
        400,
        error_body("Unknown parameter: 'foo'"),
    )])
    .await;
    let err = client_for(&stub)
        .await
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::Rejected { status: 400, .. }),
        "{err:?}"
    );
    assert_eq!(err.retry_hint(), RetryHint::FATAL);
    assert!(
        err.to_string().contains("Unknown parameter: 'foo'"),
        "{err}"
    );
    assert!(!err.to_string().contains(KEY));
}

#[tokio::test]
async fn ollama_style_error_body_is_understood() {
    let stub = Stub::start(vec![Reply::json(
        404,
        json!({"error": "model \"gpt-test\" not found, try pulling it first"}),
    )])
    .await;
    let err = client_for(&stub)
        .await
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::Rejected { status: 404, message, .. } if message.contains("try pulling")),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_response_times_out_and_is_retryable() {
    let stub = Stub::start(vec![
        Reply::json(200, ok_body("late", 1, 1)).delayed(Duration::from_secs(60)),
    ])
    .await;
    let client = OpenAiClient::new(
        config(ProviderKind::Openai, &stub.url("/v1")).with_timeout(Duration::from_secs(2)),
    )
    .unwrap();
    let start = tokio::time::Instant::now();
    let err = client
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    let waited = start.elapsed();
    assert!(
        matches!(&err, LlmError::Timeout { timeout, .. } if *timeout == Duration::from_secs(2)),
        "{err:?}"
    );
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(60),
        "{waited:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(err.category(), ErrorCategory::Network);
}

#[tokio::test(start_paused = true)]
async fn per_request_timeout_overrides_the_config() {
    let stub = Stub::start(vec![
        Reply::json(200, ok_body("late", 1, 1)).delayed(Duration::from_secs(5)),
    ])
    .await;
    let client = client_for(&stub).await; // config timeout 10s
    let req = CompletionRequest::user("x").with_timeout(Duration::from_secs(1));
    let err = client.complete(&req).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Timeout { timeout, .. } if *timeout == Duration::from_secs(1)),
        "{err:?}"
    );
}

#[tokio::test]
async fn malformed_json_is_a_clear_error() {
    let stub = Stub::start(vec![Reply::raw(200, "{\"choices\": [ this is not json")]).await;
    let err = client_for(&stub)
        .await
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
    let msg = err.to_string();
    assert!(
        msg.contains("openai sent a malformed response") && msg.contains("this is not json"),
        "{msg}"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "the json error is kept as the source"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_body_without_choices_is_malformed() {
    let stub = Stub::start(vec![Reply::json(200, json!({"model": "m", "choices": []}))]).await;
    let err = client_for(&stub)
        .await
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no choices"), "{err}");
}

#[tokio::test]
async fn oversized_bodies_are_rejected() {
    let big = "x".repeat(4096);
    let stub = Stub::start(vec![Reply::json(200, ok_body(&big, 1, 1))]).await;
    let mut cfg = config(ProviderKind::Openai, &stub.url("/v1"));
    cfg.max_response_bytes = 1024;
    let err = OpenAiClient::new(cfg)
        .unwrap()
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_response_bytes 1024"), "{err}");
}

#[tokio::test]
async fn connection_refused_is_a_retryable_network_error() {
    // Bind, learn the port, close: nothing listens there now.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client =
        OpenAiClient::new(config(ProviderKind::Openai, &format!("http://{addr}/v1"))).unwrap();
    let err = client
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    assert!(matches!(&err, LlmError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.category(), ErrorCategory::Network);
}

fn plan_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "risk": {"enum": ["low", "high"]}
        },
        "required": ["steps", "risk"],
        "additionalProperties": false
    })
}

#[tokio::test]
async fn structured_output_repairs_invalid_json_once() {
    let stub = Stub::start(vec![
        Reply::json(200, ok_body("Sure! {\"steps\": [\"a\", ", 10, 5)),
        Reply::json(
            200,
            ok_body(
                "{\"steps\": [\"design\", \"build\"], \"risk\": \"low\"}",
                30,
                12,
            ),
        ),
    ])
    .await;
    let client = client_for(&stub).await;
    let out = complete_structured(&client, &CompletionRequest::user("Plan it"), &plan_schema())
        .await
        .unwrap();
    assert_eq!(
        out.value,
        json!({"steps": ["design", "build"], "risk": "low"})
    );
    assert_eq!(out.attempts, 2);
    assert_eq!(out.usage, Usage::new(40, 17));
    let expected = Usd::new(40.0 * 2e-6 + 17.0 * 10e-6).unwrap().as_f64();
    assert!((out.cost.unwrap().as_f64() - expected).abs() < 1e-12);

    let sent = stub.requests();
    assert_eq!(sent.len(), 2);
    for r in &sent {
        assert_eq!(r.body["response_format"]["type"], "json_schema");
        assert_eq!(
            r.body["response_format"]["json_schema"]["schema"],
            plan_schema()
        );
    }
    let msgs = sent[1].body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(
        msgs[1],
        json!({"role": "assistant", "content": "Sure! {\"steps\": [\"a\", "})
    );
    assert_eq!(msgs[2]["role"], "user");
    assert!(
        msgs[2]["content"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{}",
        msgs[2]
    );
}

#[tokio::test]
async fn schema_violation_twice_names_the_failed_path() {
    let stub = Stub::start(vec![
        Reply::json(
            200,
            ok_body("{\"steps\": [\"a\", 2], \"risk\": \"low\"}", 10, 5),
        ),
        Reply::json(
            200,
            ok_body("{\"steps\": [\"a\", \"b\"], \"risk\": \"medium\"}", 10, 5),
        ),
    ])
    .await;
    let client = client_for(&stub).await;
    let err = complete_json(&client, &CompletionRequest::user("Plan it"), &plan_schema())
        .await
        .unwrap_err();
    match &err {
        LlmError::SchemaViolation {
            path,
            reason,
            attempts,
            ..
        } => {
            assert_eq!(path, "/risk");
            assert_eq!(*attempts, 2);
            assert!(reason.contains("\"medium\" is not one of"), "{reason}");
        }
        other => panic!("expected a schema violation, got {other:?}"),
    }
    assert!(err.to_string().contains("/risk"), "{err}");
    // The repair turn told the model what was wrong with the first reply.
    let repair = stub.requests()[1].body["messages"][2]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        repair.contains("/steps/1: expected string, got number 2"),
        "{repair}"
    );
}

#[tokio::test]
async fn structured_output_passes_provider_errors_through() {
    let stub = Stub::start(vec![
        Reply::json(503, error_body("overloaded")).header("retry-after", "2"),
    ])
    .await;
    let client = client_for(&stub).await;
    let err = complete_json(&client, &CompletionRequest::user("x"), &plan_schema())
        .await
        .unwrap_err();
    assert_eq!(
        err.retry_hint(),
        RetryHint {
            retryable: true,
            after: Some(Duration::from_secs(2))
        }
    );
    assert_eq!(
        stub.requests().len(),
        1,
        "no repair turn after a transport-level failure"
    );
}

#[tokio::test]
async fn gateway_error_inside_a_200_is_reported() {
    let stub = Stub::start(vec![Reply::json(
        200,
        json!({"error": {"message": "upstream quota exhausted"}}),
    )])
    .await;
    let err = client_for(&stub)
        .await
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("2xx body carries an error: upstream quota exhausted"),
        "{err}"
    );
}

#[tokio::test]
async fn invalid_requests_never_reach_the_server() {
    let stub = Stub::start(vec![Reply::json(200, ok_body("x", 1, 1))]).await;
    let client = client_for(&stub).await;
    let err = client
        .complete(&CompletionRequest::user("x").with_temperature(f32::NAN))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            LlmError::InvalidRequest {
                field: "temperature",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(stub.requests().is_empty());
}

#[tokio::test]
async fn configured_proxy_is_used() {
    // The stub plays an HTTP proxy: the request for an unresolvable host reaches it.
    let proxy = Stub::start(vec![Reply::json(200, ok_body("via proxy", 1, 1))]).await;
    let mut cfg = config(ProviderKind::Openai, "http://llm.invalid/v1");
    cfg.proxy = Some(proxy.url(""));
    let c = OpenAiClient::new(cfg)
        .unwrap()
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap();
    assert_eq!(c.text, "via proxy");
    let sent = &proxy.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.headers["host"], "llm.invalid");
}

#[tokio::test]
async fn huge_error_bodies_keep_their_status() {
    let page = format!("<html>{}</html>", "overloaded ".repeat(20_000));
    let stub = Stub::start(vec![Reply::raw(503, &page)]).await;
    let mut cfg = config(ProviderKind::Openai, &stub.url("/v1"));
    cfg.max_response_bytes = 1024;
    let err = OpenAiClient::new(cfg)
        .unwrap()
        .complete(&CompletionRequest::user("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::ServerError { status: 503, message, .. } if message.len() <= 503),
        "{err:?}"
    );
    assert!(err.is_retryable());
}
