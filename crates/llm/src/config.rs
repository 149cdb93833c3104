//! Provider configuration.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use genesis_core::{ModelId, Secret};
use serde::{Deserialize, Serialize};

use crate::{LlmError, ModelPrice};

/// Which wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProviderKind {
    /// OpenAI chat completions (`POST {base_url}/chat/completions`): OpenAI, vLLM,
    /// llama.cpp server, Ollama, and most gateways.
    #[default]
    Openai,
    /// Anthropic Messages API (`POST {base_url}/v1/messages`).
    Anthropic,
}

impl ProviderKind {
    /// The GenAI semantic-convention system name (`openai`, `anthropic`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }

    /// The public endpoint used when `base_url` is not set.
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::Openai => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_tokens() -> u32 {
    1024
}

fn default_anthropic_version() -> String {
    "2023-06-01".to_owned()
}

fn default_max_response_bytes() -> usize {
    8 * 1024 * 1024
}

/// How to reach one model at one provider.
///
/// In TOML (durations in humantime):
/// ```toml
/// kind = "anthropic"
/// model = "claude-3-5-haiku-latest"
/// timeout = "30s"
/// max_tokens = 2048
/// ```
/// The API key is a value, not an environment variable name: the facade reads the
/// environment and fills `api_key`. It prints and serialises as `<redacted>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The wire protocol.
    #[serde(default)]
    pub kind: ProviderKind,
    /// The API root, e.g. `http://127.0.0.1:11434/v1` for Ollama. `None` uses
    /// [`ProviderKind::default_base_url`].
    #[serde(default)]
    pub base_url: Option<String>,
    /// The API key; `None` for local servers that need none.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// The model to call.
    pub model: ModelId,
    /// The whole-call timeout (connect, send, wait, read the body), unless a request
    /// sets its own.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The TCP/TLS connect timeout.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The generation limit used when a request sets none (Anthropic requires one).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// The sampling temperature used when a request sets none; `None` leaves it to
    /// the provider.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// The `anthropic-version` header.
    #[serde(default = "default_anthropic_version")]
    pub anthropic_version: String,
    /// The model's price; when set, every [`Completion`](crate::Completion) carries
    /// its cost.
    #[serde(default)]
    pub price: Option<ModelPrice>,
    /// Responses larger than this are rejected as malformed.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// An HTTP(S) proxy for every request (`http://proxy.internal:3128`). `None`
    /// connects directly: the library never reads `HTTP_PROXY` and friends from the
    /// environment; the facade may, and put the value here.
    #[serde(default)]
    pub proxy: Option<String>,
    /// Whether this provider also serves the model catalogue's models of its kind
    /// (`gpt-4o`, `gpt-4o-mini` for `openai`), besides `model`. `None`: yes when
    /// `base_url` is the kind's own API ([`ProviderKind::default_base_url`]), no for any
    /// other address — a self-hosted server (Ollama, vLLM, llama.cpp) serves only
    /// `model`. Set it for a gateway or proxy in front of the kind's own API.
    #[serde(default)]
    pub serves_catalogue: Option<bool>,
}

impl ProviderConfig {
    /// A configuration with defaults for everything but the kind and the model.
    pub fn new(kind: ProviderKind, model: impl Into<ModelId>) -> Self {
        ProviderConfig {
            kind,
            base_url: None,
            api_key: None,
            model: model.into(),
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            max_tokens: default_max_tokens(),
            temperature: None,
            anthropic_version: default_anthropic_version(),
            price: None,
            max_response_bytes: default_max_response_bytes(),
            proxy: None,
            serves_catalogue: None,
        }
    }

    /// Whether the provider serves the catalogue's models of its kind:
    /// [`ProviderConfig::serves_catalogue`], by default only at the kind's own API.
    pub fn serves_catalogue_models(&self) -> bool {
        self.serves_catalogue.unwrap_or_else(|| {
            self.effective_base_url() == self.kind.default_base_url().trim_end_matches('/')
        })
    }

    /// Sets the API root.
    #[must_use]
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Some(base_url.into());
        self
    }

    /// Sets the API key.
    #[must_use]
    pub fn with_api_key(mut self, api_key: Secret) -> Self {
        self.api_key = Some(api_key);
        self
    }

    /// Sets the call timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the default generation limit.
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Sets the model's price.
    #[must_use]
    pub fn with_price(mut self, price: ModelPrice) -> Self {
        self.price = Some(price);
        self
    }

    /// The API root without a trailing slash.
    pub fn effective_base_url(&self) -> &str {
        self.base_url
            .as_deref()
            .unwrap_or_else(|| self.kind.default_base_url())
            .trim_end_matches('/')
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`LlmError::InvalidConfig`] naming the field and the offending value (a base URL's
    /// `user:password@` shown as `<redacted>@`): a base URL that is not
    /// `http(s)://host...`, an empty model, a zero timeout, max_tokens or response limit,
    /// a temperature outside `0..=2`, or an API key or version that cannot be sent as an
    /// HTTP header.
    pub fn validate(&self) -> Result<(), LlmError> {
        let invalid = |field, reason: String| Err(LlmError::InvalidConfig { field, reason });
        let url = self.effective_base_url();
        // The URL may carry `user:password@`: errors show it without.
        let raw = redact_user_info(self.base_url.as_deref().unwrap_or(url));
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        match rest {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
            _ => {
                return invalid(
                    "base_url",
                    format!("must be http(s)://host[:port][/path], got {raw:?}"),
                );
            }
        }
        if url.contains(char::is_whitespace) {
            return invalid(
                "base_url",
                format!("must not contain whitespace, got {raw:?}"),
            );
        }
        if self.model.as_str().trim().is_empty() {
            return invalid("model", "must not be empty".to_owned());
        }
        if self.timeout.is_zero() {
            return invalid("timeout", "must be greater than zero, got 0s".to_owned());
        }
        if self.connect_timeout.is_zero() {
            return invalid(
                "connect_timeout",
                "must be greater than zero, got 0s".to_owned(),
            );
        }
        if self.max_tokens == 0 {
            return invalid("max_tokens", "must be at least 1, got 0".to_owned());
        }
        if self.max_response_bytes == 0 {
            return invalid("max_response_bytes", "must be at least 1, got 0".to_owned());
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return invalid("temperature", format!("must be within 0..=2, got {t}"));
        }
        if let Some(key) = &self.api_key {
            // Never echo the key itself.
            if key.expose().bytes().any(|b| b < 0x20 || b == 0x7f) {
                return invalid("api_key", "contains control characters".to_owned());
            }
        }
        if let Some(proxy) = &self.proxy
            && !(proxy.starts_with("http://") || proxy.starts_with("https://"))
        {
            // A proxy URL may carry credentials: report only its length.
            return invalid(
                "proxy",
                format!(
                    "must start with http:// or https:// ({} characters given)",
                    proxy.len()
                ),
            );
        }
        if self
            .anthropic_version
            .bytes()
            .any(|b| b < 0x20 || b == 0x7f)
        {
            return invalid(
                "anthropic_version",
                format!("contains control characters: {:?}", self.anthropic_version),
            );
        }
        Ok(())
    }
}

/// `text` (a URL, possibly malformed) with its user info replaced by `<redacted>`, for
/// error messages: everything between `://` (or the start, without a scheme) and the
/// last `@`. Deliberately broader than URL parsing, which is what failed when this text
/// is shown: a password holding a raw `/`, `?`, `#` or `@` is still hidden whole. A
/// query or path holding `@` loses more than the user info; never a secret survives.
pub(crate) fn redact_user_info(text: &str) -> Cow<'_, str> {
    let start = text.find("://").map_or(0, |i| i + 3);
    match text[start..].rfind('@') {
        Some(at) => Cow::Owned(format!(
            "{}<redacted>{}",
            &text[..start],
            &text[start + at..]
        )),
        None => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_defaults_and_humantime() {
        let cfg: ProviderConfig = toml::from_str(
            r#"
            kind = "anthropic"
            model = "claude-3-5-haiku-latest"
            api_key = "sk-ant-123"
            timeout = "1m 30s"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.kind, ProviderKind::Anthropic);
        assert_eq!(cfg.timeout, Duration::from_secs(90));
        assert_eq!(cfg.max_tokens, 1024);
        assert_eq!(cfg.effective_base_url(), "https://api.anthropic.com");
        assert_eq!(cfg.api_key.as_ref().unwrap().expose(), "sk-ant-123");
        assert!(!format!("{cfg:?}").contains("sk-ant-123"));
        assert!(!toml::to_string(&cfg).unwrap().contains("sk-ant-123"));
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err =
            toml::from_str::<ProviderConfig>("model = \"m\"\napi_key_env = \"X\"\n").unwrap_err();
        assert!(err.to_string().contains("api_key_env"), "{err}");
    }

    #[test]
    fn only_the_kinds_own_api_serves_the_catalogue_by_default() {
        let official = ProviderConfig::new(ProviderKind::Openai, "gpt-4o-mini");
        assert!(official.serves_catalogue_models());
        assert!(
            official
                .clone()
                .with_base_url("https://api.openai.com/v1/")
                .serves_catalogue_models()
        );
        let ollama = official.clone().with_base_url("http://127.0.0.1:11434/v1");
        assert!(!ollama.serves_catalogue_models());
        let gateway = ProviderConfig {
            serves_catalogue: Some(true),
            ..ollama
        };
        assert!(gateway.serves_catalogue_models());
        let pinned = ProviderConfig {
            serves_catalogue: Some(false),
            ..official
        };
        assert!(!pinned.serves_catalogue_models());
    }

    #[test]
    fn validation_names_field_and_value() {
        let base = ProviderConfig::new(ProviderKind::Openai, "gpt-4o-mini");
        let cases = [
            (base.clone().with_base_url("ftp://x"), "base_url", "ftp://x"),
            (base.clone().with_base_url("http://"), "base_url", "http://"),
            (base.clone().with_timeout(Duration::ZERO), "timeout", "0s"),
            (base.clone().with_max_tokens(0), "max_tokens", "got 0"),
            (
                ProviderConfig {
                    temperature: Some(3.5),
                    ..base.clone()
                },
                "temperature",
                "3.5",
            ),
            (
                ProviderConfig::new(ProviderKind::Openai, " "),
                "model",
                "empty",
            ),
        ];
        for (cfg, field, needle) in cases {
            let err = cfg.validate().unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, LlmError::InvalidConfig { field: f, .. } if f == field),
                "{msg}"
            );
            assert!(msg.contains(needle), "{msg}");
        }
        let key = base.clone().with_api_key(Secret::new("sk-1\nx"));
        let msg = key.validate().unwrap_err().to_string();
        assert!(msg.contains("api_key") && !msg.contains("sk-1"), "{msg}");
        base.with_base_url("http://127.0.0.1:8080/v1/")
            .validate()
            .unwrap();
    }
}
