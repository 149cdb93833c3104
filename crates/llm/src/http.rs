//! HTTP plumbing shared by the provider clients: building the reqwest client, sending
//! one JSON POST under a timeout, reading a bounded body, and classifying failures.

use std::time::{Duration, SystemTime};

use genesis_core::tls;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Serialize;

use crate::config::redact_user_info;
use crate::retry_after::{parse_retry_after, parse_retry_after_ms};
use crate::{LlmError, ProviderConfig};

/// The longest provider error message kept in an [`LlmError`].
const MAX_MESSAGE_CHARS: usize = 500;

/// How much of a non-2xx body is read to find the provider's error message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// A reqwest client builder with rustls on the `ring` provider and the system trust
/// roots preconfigured, and no proxy from the environment. Use it for every reqwest
/// client in the process: with the workspace's `rustls-no-provider` feature, a plain
/// `reqwest::Client::new()` needs a process-global provider.
///
/// # Errors
/// [`LlmError::ClientBuild`] when TLS set-up fails.
pub fn http_client_builder() -> Result<reqwest::ClientBuilder, LlmError> {
    let tls = tls::client_config(tls::system_roots()).map_err(|e| LlmError::ClientBuild {
        provider: "http".to_owned(),
        reason: "rustls configuration failed".to_owned(),
        source: Some(Box::new(e)),
    })?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .user_agent(concat!("genesis/", env!("CARGO_PKG_VERSION"))))
}

/// Builds a reqwest client for `config`: rustls with the `ring` provider passed
/// explicitly, the system trust roots, `config.connect_timeout`, `config.proxy` (never
/// a proxy from the environment) and a Genesis user agent. One client can be shared by
/// several providers through `with_http_client`.
///
/// # Errors
/// [`LlmError::ClientBuild`] when the base URL is `https` but no trust roots were found,
/// or TLS set-up fails; [`LlmError::InvalidConfig`] for an unusable proxy URL.
pub fn build_http_client(config: &ProviderConfig) -> Result<reqwest::Client, LlmError> {
    let provider = config.kind.as_str();
    let roots = tls::system_roots();
    if roots.is_empty() && config.effective_base_url().starts_with("https://") {
        return Err(LlmError::ClientBuild {
            provider: provider.to_owned(),
            reason: "no tls trust roots found in the system ca bundle locations; use \
                     with_http_client to supply a configured client"
                .to_owned(),
            source: None,
        });
    }
    let tls = tls::client_config(roots).map_err(|e| LlmError::ClientBuild {
        provider: provider.to_owned(),
        reason: "rustls configuration failed".to_owned(),
        source: Some(Box::new(e)),
    })?;
    // No implicit proxy from the environment: nothing below the facade reads env vars.
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .connect_timeout(config.connect_timeout)
        .user_agent(concat!("genesis-llm/", env!("CARGO_PKG_VERSION")));
    if let Some(proxy) = &config.proxy {
        let proxy = reqwest::Proxy::all(proxy.as_str()).map_err(|_| LlmError::InvalidConfig {
            field: "proxy",
            reason: format!(
                "is not a valid proxy url ({} characters given)",
                proxy.len()
            ),
        })?;
        builder = builder.proxy(proxy);
    }
    builder.build().map_err(|e| LlmError::ClientBuild {
        provider: provider.to_owned(),
        reason: "reqwest client build failed".to_owned(),
        source: Some(Box::new(e)),
    })
}

/// `url` without user name and password, for spans and errors about a parsed URL.
fn display_url(url: &Url) -> String {
    let mut display = url.clone();
    // Ignoring the results: both only fail for URLs that cannot have user info.
    let _ = display.set_username("");
    let _ = display.set_password(None);
    display.to_string()
}

/// One provider endpoint: where to POST, with which headers.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) provider: &'static str,
    pub(crate) url: Url,
    /// `url` without user info, for errors and spans.
    pub(crate) display_url: String,
    pub(crate) headers: HeaderMap,
    pub(crate) max_response_bytes: usize,
    pub(crate) connect_timeout: Duration,
    /// The secrets the sensitive headers carry (the API key), scrubbed from provider
    /// error messages: a provider may echo a wrong key back.
    secrets: Vec<genesis_core::Secret>,
}

impl Endpoint {
    /// Joins `path` (e.g. `/chat/completions`) onto the configured base URL.
    pub(crate) fn new(
        provider: &'static str,
        config: &ProviderConfig,
        path: &str,
        headers: Vec<(&'static str, String, bool)>,
    ) -> Result<Self, LlmError> {
        let raw = format!("{}{path}", config.effective_base_url());
        let url = Url::parse(&raw).map_err(|e| LlmError::InvalidConfig {
            field: "base_url",
            reason: format!(
                "is not a valid url ({e}): {:?}",
                redact_user_info(config.effective_base_url())
            ),
        })?;
        let mut map = HeaderMap::new();
        let mut secrets = Vec::new();
        for (name, value, sensitive) in headers {
            if sensitive {
                let secret = value.strip_prefix("Bearer ").unwrap_or(&value).trim();
                if !secret.is_empty() {
                    secrets.push(genesis_core::Secret::new(secret));
                }
            }
            let mut value = HeaderValue::from_str(&value).map_err(|_| LlmError::InvalidConfig {
                field: if sensitive {
                    "api_key"
                } else {
                    "anthropic_version"
                },
                reason: format!("cannot be sent as the {name} header"),
            })?;
            // Marks the value so hyper's debug output never shows it.
            value.set_sensitive(sensitive);
            map.insert(HeaderName::from_static(name), value);
        }
        Ok(Endpoint {
            provider,
            display_url: display_url(&url),
            url,
            headers: map,
            max_response_bytes: config.max_response_bytes,
            connect_timeout: config.connect_timeout,
            secrets,
        })
    }

    /// [`error_message`] of `body` with the endpoint's secrets and key-shaped tokens
    /// replaced by `<redacted>`: error messages reach logs, events and the store.
    fn message(&self, body: &[u8]) -> String {
        let mut text = error_message(body);
        for secret in &self.secrets {
            let secret = secret.expose();
            if text.contains(secret) {
                text = text.replace(secret, "<redacted>");
            }
        }
        redact_key_tokens(&text)
    }

    /// The host (and port) for the `server.address` span field.
    pub(crate) fn host(&self) -> String {
        match (self.url.host_str(), self.url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => String::new(),
        }
    }

    /// POSTs `body` as JSON and returns the 2xx response body. The whole exchange
    /// (connect, send, wait for headers, read the body) runs under `timeout`.
    pub(crate) async fn post_json<B: Serialize + ?Sized>(
        &self,
        http: &reqwest::Client,
        body: &B,
        timeout: Duration,
        model: &genesis_core::ModelId,
    ) -> Result<Vec<u8>, LlmError> {
        let exchange = async {
            let response = http
                .post(self.url.clone())
                .headers(self.headers.clone())
                .json(body)
                .send()
                .await
                .map_err(|e| self.transport(e, timeout, model))?;
            let status = response.status();
            let retry_after = retry_after(response.headers(), SystemTime::now());
            if status.is_success() {
                self.read_body(response, timeout, model).await
            } else {
                let bytes = read_error_body(response).await;
                Err(self.classify(status, retry_after, &bytes))
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_elapsed) => Err(LlmError::Timeout {
                provider: self.provider.to_owned(),
                model: model.clone(),
                timeout,
            }),
        }
    }

    async fn read_body(
        &self,
        mut response: reqwest::Response,
        timeout: Duration,
        model: &genesis_core::ModelId,
    ) -> Result<Vec<u8>, LlmError> {
        let limit = self.max_response_bytes;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(self.too_large(limit));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport(e, timeout, model))?
        {
            if body.len() + chunk.len() > limit {
                return Err(self.too_large(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn too_large(&self, limit: usize) -> LlmError {
        LlmError::MalformedResponse {
            provider: self.provider.to_owned(),
            reason: format!("response body exceeds max_response_bytes {limit}"),
            source: None,
        }
    }

    fn transport(
        &self,
        e: reqwest::Error,
        timeout: Duration,
        model: &genesis_core::ModelId,
    ) -> LlmError {
        if e.is_timeout() {
            // reqwest only times out on its own when connecting; the call timeout is ours.
            let timeout = if e.is_connect() {
                self.connect_timeout.min(timeout)
            } else {
                timeout
            };
            return LlmError::Timeout {
                provider: self.provider.to_owned(),
                model: model.clone(),
                timeout,
            };
        }
        if e.is_builder() {
            // The request itself could not be built (e.g. a body that does not
            // serialise): sending it again cannot help.
            return LlmError::InvalidRequest {
                field: "body",
                reason: format!("cannot be encoded: {}", e.without_url()),
            };
        }
        LlmError::Transport {
            provider: self.provider.to_owned(),
            url: self.display_url.clone(),
            // The URL could carry user info; ours is in `url` without it.
            source: e.without_url(),
        }
    }

    /// Maps a non-2xx status to an error: 429 rate limited; 408, 409 and 5xx
    /// (including Anthropic's 529 "overloaded") transient; every other status rejected.
    pub(crate) fn classify(
        &self,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> LlmError {
        let provider = self.provider.to_owned();
        let message = self.message(body);
        let code = status.as_u16();
        match code {
            429 => LlmError::RateLimited {
                provider,
                status: code,
                retry_after,
                message,
            },
            408 | 409 | 500..=599 => LlmError::ServerError {
                provider,
                status: code,
                retry_after,
                message,
            },
            _ => LlmError::Rejected {
                provider,
                status: code,
                message,
            },
        }
    }

    /// Parses a 2xx body as `T`, mapping failures to [`LlmError::MalformedResponse`].
    pub(crate) fn parse<T: serde::de::DeserializeOwned>(&self, body: &[u8]) -> Result<T, LlmError> {
        serde_json::from_slice(body).map_err(|e| {
            // Some gateways answer 200 with an error object; say so rather than
            // "missing field choices".
            let embedded = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .filter(|v| v.get("error").is_some_and(|e| !e.is_null()));
            let reason = match embedded {
                Some(_) => format!("2xx body carries an error: {}", self.message(body)),
                None => format!(
                    "body is not the expected json ({} bytes, starts with {:?})",
                    body.len(),
                    truncate(&String::from_utf8_lossy(&body[..body.len().min(80)]), 80)
                ),
            };
            LlmError::MalformedResponse {
                provider: self.provider.to_owned(),
                reason,
                source: Some(e),
            }
        })
    }

    /// A malformed-response error without a JSON source.
    pub(crate) fn malformed(&self, reason: impl Into<String>) -> LlmError {
        LlmError::MalformedResponse {
            provider: self.provider.to_owned(),
            reason: reason.into(),
            source: None,
        }
    }
}

/// Reads at most [`MAX_ERROR_BODY_BYTES`] of an error response, best effort: the
/// status is what matters, the body only supplies the message.
async fn read_error_body(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ERROR_BODY_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY_BYTES {
            break;
        }
    }
    body
}

/// The provider's requested delay: `retry-after-ms` (OpenAI, Azure) wins over
/// `retry-after` (seconds or an HTTP-date).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    text("retry-after-ms")
        .and_then(parse_retry_after_ms)
        .or_else(|| text("retry-after").and_then(|v| parse_retry_after(v, now)))
}

/// The human-readable message of a provider error body: `error.message` (OpenAI,
/// Anthropic, vLLM), `error` as a string (Ollama, some gateways), `message`, `detail`,
/// or else the raw body; truncated to [`MAX_MESSAGE_CHARS`].
pub(crate) fn error_message(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let err = v.get("error");
            err.and_then(|e| e.get("message"))
                .or_else(|| err.filter(|e| e.is_string()))
                .or_else(|| v.get("message"))
                .or_else(|| v.get("detail"))
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        truncate(&text, MAX_MESSAGE_CHARS)
    }
}

/// `text` with every API-key-shaped token (`sk-` or `sk_` followed by at least 16
/// letters, digits, `-` or `_`, as OpenAI-style keys are) replaced by `sk-<redacted>`.
fn redact_key_tokens(text: &str) -> String {
    const MIN_TAIL: usize = 16;
    let key_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while let Some(at) = text[i..].find("sk").map(|k| i + k) {
        let starts_word = at == 0 || !key_byte(bytes[at - 1]);
        let sep = bytes.get(at + 2).copied();
        if starts_word && matches!(sep, Some(b'-' | b'_')) {
            let tail = bytes[at + 3..].iter().take_while(|&&b| key_byte(b)).count();
            if tail >= MIN_TAIL {
                out.push_str(&text[copied..at]);
                out.push_str("sk-<redacted>");
                copied = at + 3 + tail;
                i = copied;
                continue;
            }
        }
        i = at + 2;
    }
    out.push_str(&text[copied..]);
    out
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(max_chars).collect();
        format!("{cut}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProviderKind;

    #[test]
    fn error_messages_from_each_provider_shape() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad model","type":"x"}}"#),
            "bad model"
        );
        assert_eq!(
            error_message(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded"
        );
        assert_eq!(
            error_message(br#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(
            error_message(b"<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
        assert_eq!(error_message(b""), "(empty body)");
        assert_eq!(
            error_message(&[b'x'; 2000]).chars().count(),
            MAX_MESSAGE_CHARS + 3
        );
    }

    /// Audit L6: a 401 echoing the key ("Incorrect API key provided: sk-...") reached
    /// logs, events and the store verbatim.
    #[test]
    fn error_messages_never_carry_the_key() {
        let mut config = crate::ProviderConfig::new(ProviderKind::Openai, "gpt-4o-mini");
        config.base_url = Some("http://127.0.0.1:1/v1".to_owned());
        let key = "my-secret-gateway-key-0042";
        let endpoint = Endpoint::new(
            "openai",
            &config,
            "/chat/completions",
            vec![("authorization", format!("Bearer {key}"), true)],
        )
        .unwrap();
        let body = format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {key}. Also seen: sk-proj-AbCdEfGh1234567890xyz and sk-live_0123456789abcdefXYZ; not keys: risk-free, sk-short, desk-top"}}}}"#
        );
        let e = endpoint.classify(StatusCode::UNAUTHORIZED, None, body.as_bytes());
        let text = e.to_string();
        assert!(!text.contains(key), "{text}");
        assert!(!text.contains("AbCdEfGh1234567890xyz"), "{text}");
        assert!(!text.contains("0123456789abcdefXYZ"), "{text}");
        assert!(
            text.contains("Incorrect API key provided: <redacted>.")
                && text.contains("sk-<redacted> and sk-<redacted>;")
                && text.contains("risk-free, sk-short, desk-top"),
            "{text}"
        );
        let ok = endpoint.parse::<serde_json::Value>(body.as_bytes());
        assert!(ok.is_ok(), "a 2xx error object parses as json here");
    }

    #[test]
    fn retry_after_ms_wins() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("5"));
        assert_eq!(
            retry_after(&h, SystemTime::now()),
            Some(Duration::from_secs(5))
        );
        h.insert("retry-after-ms", HeaderValue::from_static("1200"));
        assert_eq!(
            retry_after(&h, SystemTime::now()),
            Some(Duration::from_millis(1200))
        );
    }

    #[test]
    fn classification_by_status() {
        let cfg = ProviderConfig::new(ProviderKind::Openai, "m");
        let ep = Endpoint::new("openai", &cfg, "/chat/completions", vec![]).unwrap();
        let class = |code: u16| {
            ep.classify(StatusCode::from_u16(code).unwrap(), None, b"{}")
                .kind()
        };
        assert_eq!(class(429), "rate_limited");
        assert_eq!(class(500), "server_error");
        assert_eq!(class(529), "server_error");
        assert_eq!(class(408), "server_error");
        assert_eq!(class(400), "rejected");
        assert_eq!(class(401), "rejected");
        assert_eq!(class(404), "rejected");
    }

    #[test]
    fn user_info_never_reaches_errors() {
        let cfg = ProviderConfig::new(ProviderKind::Openai, "m")
            .with_base_url("https://u:secretpw@gw.example/v1");
        let ep = Endpoint::new("openai", &cfg, "/chat/completions", vec![]).unwrap();
        assert_eq!(ep.display_url, "https://gw.example/v1/chat/completions");
        assert_eq!(ep.host(), "gw.example");
    }

    #[test]
    fn user_info_is_redacted_from_unparsable_urls() {
        let cases = [
            ("https://gw.example/v1", "https://gw.example/v1"),
            ("localhost:8080", "localhost:8080"),
            (
                "https://svc:s3cretpw@gw.example:99999/v1",
                "https://<redacted>@gw.example:99999/v1",
            ),
            // Raw `/`, `?` and `@` in the password: URL parsing would split it.
            (
                "https://svc:s3c/r?e#t@pw@gw.example/v1 ",
                "https://<redacted>@gw.example/v1 ",
            ),
            ("svc:s3cretpw@gw.example/v1", "<redacted>@gw.example/v1"),
        ];
        for (text, want) in cases {
            assert_eq!(redact_user_info(text), want, "{text}");
        }
    }
}
