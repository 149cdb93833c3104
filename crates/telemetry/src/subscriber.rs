//! The tracing subscriber: log layer, filter and, with the `otlp` feature, OTLP export.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, OtlpConfig, TelemetryConfig};
use crate::error::TelemetryError;
#[cfg(feature = "otlp")]
use crate::otlp::{TelemetryGuard, export_layer};

/// A type-erased layer stack for a [`Registry`].
pub type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync + 'static>;

/// Refuses OTLP export configured in a build without the `otlp` feature, naming the
/// endpoint and the feature: a `[telemetry.otlp]` section is never silently ignored.
fn require_otlp(otlp: &OtlpConfig, otlp_enabled: bool) -> Result<(), TelemetryError> {
    if otlp_enabled {
        Ok(())
    } else {
        Err(otlp_disabled(otlp))
    }
}

/// The refusal: names the endpoint and the feature.
fn otlp_disabled(otlp: &OtlpConfig) -> TelemetryError {
    TelemetryError::OtlpDisabled {
        endpoint: otlp.traces_url(),
    }
}

/// The setting of the log filter, named when its directives do not parse.
const LOG_FILTER_KEY: &str = "telemetry.filter (or RUST_LOG)";
/// The setting of the trace filter, named when its directives do not parse.
const TRACE_FILTER_KEY: &str = "telemetry.otlp.filter";

/// Parses `RUST_LOG`-style directives, naming them and the setting `key` on error.
fn parse_filter(key: &'static str, directives: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|source| TelemetryError::InvalidFilter {
            key,
            directives: directives.to_owned(),
            source,
        })
}

/// Builds the layer stack without installing it: the log layer writing to `writer`,
/// filtered by `config.filter`, and, when `config.otlp` is set, the OpenTelemetry layer
/// exporting spans, filtered by its own `otlp.filter` (per-layer filters: quieting the
/// logs does not thin the traces, and debug spans can be traced without debug logs). Use
/// it in tests with `tracing::subscriber::with_default(Registry::default().with(layer), ..)`.
///
/// # Errors
/// [`TelemetryError::InvalidFilter`] (either filter); with `config.otlp` set, the errors
/// of `build_tracer_provider`, or [`TelemetryError::OtlpDisabled`] when the crate was
/// built without its `otlp` feature (the export is refused, never silently skipped).
pub fn build_layers<W>(
    config: &TelemetryConfig,
    writer: W,
) -> Result<(BoxedLayer, TelemetryGuard), TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let log_filter = parse_filter(LOG_FILTER_KEY, &config.filter)?;
    let log_layer: BoxedLayer = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(writer)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .pretty()
            .with_writer(writer)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Compact => tracing_subscriber::fmt::layer()
            .compact()
            .with_ansi(false)
            .with_writer(writer)
            .with_filter(log_filter)
            .boxed(),
    };
    let mut layers = vec![log_layer];
    let guard = match &config.otlp {
        Some(otlp) => {
            require_otlp(otlp, cfg!(feature = "otlp"))?;
            let trace_filter = parse_filter(TRACE_FILTER_KEY, &otlp.filter)?;
            let (layer, guard) = export_layer(otlp, &config.service_name)?;
            layers.push(layer.with_filter(trace_filter).boxed());
            guard
        }
        None => TelemetryGuard::noop(),
    };
    Ok((layers.boxed(), guard))
}

/// Installs the global subscriber: logs to stderr in the configured format, filtered by
/// `config.filter`, and spans exported over OTLP when configured (call it inside the tokio
/// runtime then). Keep the returned guard alive until shutdown.
///
/// # Errors
/// As [`build_layers`], and [`TelemetryError::SubscriberAlreadySet`].
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    init_with_writer(config, std::io::stderr)
}

/// As [`init`], writing log lines to `writer` instead of stderr (tests capture the
/// process's log lines this way).
///
/// # Errors
/// As [`init`].
pub fn init_with_writer<W>(
    config: &TelemetryConfig,
    writer: W,
) -> Result<TelemetryGuard, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (layer, guard) = build_layers(config, writer)?;
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .map_err(|source| TelemetryError::SubscriberAlreadySet { source })?;
    Ok(guard)
}

#[cfg(not(feature = "otlp"))]
pub use without_otlp::TelemetryGuard;
#[cfg(not(feature = "otlp"))]
use without_otlp::export_layer;

/// The guard of a build without the `otlp` feature: there is never a trace provider, so
/// flushing and shutting down have nothing to do.
#[cfg(not(feature = "otlp"))]
mod without_otlp {
    use super::{BoxedLayer, OtlpConfig, TelemetryError, otlp_disabled};

    /// Owns nothing in a build without the `otlp` feature (logs only); the same methods
    /// as with it, except `tracer_provider`, so callers need no `cfg` of their own.
    #[derive(Debug)]
    #[non_exhaustive]
    pub struct TelemetryGuard;

    impl TelemetryGuard {
        /// A guard with nothing to shut down (logs only).
        pub fn noop() -> Self {
            TelemetryGuard
        }

        /// Nothing to export: always `Ok`.
        ///
        /// # Errors
        /// None in this build.
        pub fn force_flush(&self) -> Result<(), TelemetryError> {
            Ok(())
        }

        /// Nothing to export: always `Ok`.
        ///
        /// # Errors
        /// None in this build.
        pub async fn flush(&self) -> Result<(), TelemetryError> {
            Ok(())
        }

        /// Nothing to shut down: always `Ok`.
        ///
        /// # Errors
        /// None in this build.
        pub async fn shutdown(self) -> Result<(), TelemetryError> {
            Ok(())
        }
    }

    /// Never builds an exporter (`build_layers` refuses before it gets here): refuses
    /// the same way.
    pub(super) fn export_layer(
        otlp: &OtlpConfig,
        _service_name: &str,
    ) -> Result<(BoxedLayer, TelemetryGuard), TelemetryError> {
        Err(otlp_disabled(otlp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build without the `otlp` feature refuses a configured exporter by name.
    #[test]
    fn otlp_config_is_refused_naming_the_feature_when_it_is_off() {
        let otlp = OtlpConfig::new("http://127.0.0.1:4318");
        let err = require_otlp(&otlp, false).unwrap_err();
        assert!(
            matches!(err, TelemetryError::OtlpDisabled { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("http://127.0.0.1:4318/v1/traces")
                && text.contains("`otlp` feature of genesis-telemetry"),
            "{text}"
        );
        assert!(require_otlp(&otlp, true).is_ok());
    }

    /// The whole path in a build without `otlp` (`cargo test -p genesis-telemetry
    /// --no-default-features`, run by `.ci/run`): a configured exporter is an error,
    /// not a log-only subscriber.
    #[cfg(not(feature = "otlp"))]
    #[test]
    fn build_layers_refuses_otlp_config_without_the_feature() {
        let config = TelemetryConfig {
            otlp: Some(OtlpConfig::new("http://127.0.0.1:4318")),
            ..TelemetryConfig::default()
        };
        let err = build_layers(&config, std::io::sink).err().unwrap();
        assert!(
            matches!(err, TelemetryError::OtlpDisabled { .. }),
            "{err:?}"
        );
        let (_layer, guard) = build_layers(&TelemetryConfig::default(), std::io::sink).unwrap();
        assert!(guard.force_flush().is_ok());
    }
}
