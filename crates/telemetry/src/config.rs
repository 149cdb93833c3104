//! The crate's configuration section (`[telemetry]` in `config/genesis.toml`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

fn default_filter() -> String {
    "info".to_owned()
}
fn default_service_name() -> String {
    "genesis".to_owned()
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_batch_delay() -> Duration {
    Duration::from_secs(5)
}
fn default_max_queue_size() -> usize {
    2048
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogFormat {
    /// One JSON object per line, with the current span and the span list (production).
    #[default]
    Json,
    /// Multi-line, human-oriented, coloured (development).
    Pretty,
    /// One short line per event.
    Compact,
}

/// Logging and tracing settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `RUST_LOG`-style directives, e.g. `info,genesis_halo=debug`, for the log lines
    /// only (exported spans have their own, [`OtlpConfig::filter`]). The binary decides
    /// where they come from (config file, `GENESIS_LOG`, `RUST_LOG`); this crate does not
    /// read the environment.
    #[serde(default = "default_filter")]
    pub filter: String,
    /// Log line format.
    #[serde(default)]
    pub format: LogFormat,
    /// `service.name` of exported traces.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// OTLP trace export; none when absent.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            filter: default_filter(),
            format: LogFormat::default(),
            service_name: default_service_name(),
            otlp: None,
        }
    }
}

/// OTLP/HTTP (protobuf) trace export settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Collector base URL (`http://127.0.0.1:4318`); `/v1/traces` is appended unless the
    /// URL already ends with it.
    pub endpoint: String,
    /// Timeout of one export request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long the batch processor waits before sending a partial batch.
    #[serde(default = "default_batch_delay", with = "humantime_serde")]
    pub batch_delay: Duration,
    /// Spans buffered before new ones are dropped (counted in
    /// `genesis_otlp_spans_dropped_total{reason="queue_full"}`).
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
    /// `RUST_LOG`-style directives choosing which spans are exported, independently of
    /// the log filter ([`TelemetryConfig::filter`]): quieting the logs to `warn` keeps
    /// the `info` spans of a trace.
    #[serde(default = "default_filter")]
    pub filter: String,
}

impl OtlpConfig {
    /// Export to `endpoint` with default timings.
    pub fn new(endpoint: impl Into<String>) -> Self {
        OtlpConfig {
            endpoint: endpoint.into(),
            timeout: default_timeout(),
            batch_delay: default_batch_delay(),
            max_queue_size: default_max_queue_size(),
            filter: default_filter(),
        }
    }

    /// The full traces URL.
    pub fn traces_url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_strictness() {
        let c: TelemetryConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, TelemetryConfig::default());
        assert_eq!(c.format, LogFormat::Json);
        let c: TelemetryConfig = serde_json::from_str(
            r#"{"format":"pretty","otlp":{"endpoint":"http://c:4318","timeout":"3s"}}"#,
        )
        .unwrap();
        assert_eq!(c.format, LogFormat::Pretty);
        let otlp = c.otlp.unwrap();
        assert_eq!(otlp.timeout, Duration::from_secs(3));
        assert_eq!(otlp.batch_delay, Duration::from_secs(5));
        assert_eq!(otlp.filter, "info");
        assert!(serde_json::from_str::<TelemetryConfig>(r#"{"filtre":"info"}"#).is_err());
    }

    #[test]
    fn traces_url_appends_path_once() {
        assert_eq!(
            OtlpConfig::new("http://c:4318").traces_url(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            OtlpConfig::new("http://c:4318/").traces_url(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            OtlpConfig::new("http://c:4318/v1/traces").traces_url(),
            "http://c:4318/v1/traces"
        );
    }
}
