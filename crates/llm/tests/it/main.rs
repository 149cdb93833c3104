//! Integration tests: the real clients against real HTTP servers on 127.0.0.1 (axum
//! stubs speaking the OpenAI and Anthropic wire formats). No client is mocked.

// clippy.toml's allow-unwrap-in-tests covers #[test] functions only, not the helpers of
// an integration-test crate; a failed unwrap here is a failed test, as intended.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod stub;

mod anthropic;
mod openai;
mod tracing_fields;

use std::time::Duration;

use genesis_core::{ModelId, Secret, Usd};
use genesis_llm::{ModelPrice, ProviderConfig, ProviderKind};

/// The key used by every test; asserted never to leak.
pub(crate) const KEY: &str = "sk-test-4f9a-never-log-me";

pub(crate) fn price() -> ModelPrice {
    // $2 / M input, $10 / M output.
    ModelPrice::new(Usd::new(2.0).unwrap(), Usd::new(10.0).unwrap())
}

pub(crate) fn config(kind: ProviderKind, base_url: &str) -> ProviderConfig {
    let model = match kind {
        ProviderKind::Anthropic => "claude-test",
        _ => "gpt-test",
    };
    ProviderConfig::new(kind, ModelId::new(model))
        .with_base_url(base_url)
        .with_api_key(Secret::new(KEY))
        .with_timeout(Duration::from_secs(10))
        .with_price(price())
}

#[tokio::test]
async fn client_from_config_dispatches_on_kind() {
    use genesis_llm::{CompletionRequest, client_from_config};
    let oa = stub::Stub::start(vec![stub::Reply::json(
        200,
        openai::ok_body("from openai", 1, 1),
    )])
    .await;
    let an = stub::Stub::start(vec![stub::Reply::json(
        200,
        anthropic::ok_body("from anthropic", 1, 1),
    )])
    .await;
    let c1 = client_from_config(&config(ProviderKind::Openai, &oa.url("/v1"))).unwrap();
    let c2 = client_from_config(&config(ProviderKind::Anthropic, &an.url(""))).unwrap();
    assert_eq!((c1.provider(), c1.model().as_str()), ("openai", "gpt-test"));
    assert_eq!(
        (c2.provider(), c2.model().as_str()),
        ("anthropic", "claude-test")
    );
    let req = CompletionRequest::user("hi");
    assert_eq!(c1.complete(&req).await.unwrap().text, "from openai");
    assert_eq!(c2.complete(&req).await.unwrap().text, "from anthropic");
    assert_eq!(oa.requests()[0].path, "/v1/chat/completions");
    assert_eq!(an.requests()[0].path, "/v1/messages");
}

#[tokio::test]
async fn invalid_config_is_rejected_before_any_io() {
    let cfg = config(ProviderKind::Openai, "localhost:8080");
    let err = genesis_llm::client_from_config(&cfg).err().unwrap();
    assert_eq!(err.category(), genesis_core::ErrorCategory::Config);
    assert!(err.to_string().contains("\"localhost:8080\""), "{err}");
}

/// Review R6: credentials in `base_url` were stripped from spans and transport errors,
/// but the whitespace rule (`ProviderConfig::validate`) and the URL parser's error (a
/// bad port, from the client constructor) echoed the raw URL with its password.
#[test]
fn base_url_errors_never_echo_credentials() {
    use genesis_llm::{LlmError, OpenAiClient};
    let http = || genesis_llm::http_client_builder().unwrap().build().unwrap();
    let with_url = |url: &str| config(ProviderKind::Openai, url);

    // A `base_url` error that names `rule` and shows `shown` (the URL, its user info
    // redacted), without the secret.
    let check = |err: LlmError, rule: &str, shown: &str| {
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                LlmError::InvalidConfig {
                    field: "base_url",
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains(rule), "names the rule: {msg}");
        assert!(msg.contains(shown), "shows the url: {msg}");
        assert!(!msg.contains("s3cretpw") && !msg.contains("svc:"), "{msg}");
    };
    check(
        with_url("https://svc:s3cretpw@gw.example/v1 ")
            .validate()
            .unwrap_err(),
        "whitespace",
        "https://<redacted>@gw.example/v1 ",
    );
    check(
        OpenAiClient::with_http_client(
            with_url("https://svc:s3cretpw@gw.example:99999/v1"),
            http(),
        )
        .err()
        .unwrap(),
        "port",
        "https://<redacted>@gw.example:99999/v1",
    );

    // Without a scheme (the http(s) rule) and with a raw `/` in the password (which URL
    // parsing would split at the `/`), the whole secret is still hidden.
    for url in [
        "svc:s3cretpw@gw.example/v1",
        "https://svc:s3c/retpw@gw.example/v1",
    ] {
        let msg = genesis_llm::client_from_config(&with_url(url))
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("<redacted>@gw.example/v1"), "{msg}");
        assert!(!msg.contains("s3c") && !msg.contains("retpw"), "{msg}");
    }
}
