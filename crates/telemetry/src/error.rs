//! The one error type of this crate.

/// Everything that can go wrong setting up or tearing down telemetry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The log or trace filter directives do not parse.
    #[error("invalid {key} {directives:?}")]
    InvalidFilter {
        /// The setting they came from: `telemetry.filter` (the log filter, or
        /// `RUST_LOG`) or `telemetry.otlp.filter` (the trace filter).
        key: &'static str,
        /// The rejected directives.
        directives: String,
        /// The parse failure.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// OTLP export was configured outside a tokio runtime (the batch exporter runs on it).
    #[error("otlp export to {endpoint} needs a tokio runtime: call init inside one")]
    NoTokioRuntime {
        /// The configured endpoint.
        endpoint: String,
    },
    /// OTLP export is configured (`[telemetry.otlp]`) but this build of the crate has no
    /// `otlp` feature: refused rather than silently not exporting.
    #[error(
        "otlp export to {endpoint} is configured but needs the `otlp` feature of \
         genesis-telemetry (genesis: `otlp`), which this build was compiled without"
    )]
    OtlpDisabled {
        /// The configured traces URL.
        endpoint: String,
    },
    /// The OTLP exporter's HTTP client could not be built (TLS set-up).
    #[cfg(feature = "otlp")]
    #[error("building the http client of the otlp exporter for {endpoint}")]
    ExporterClient {
        /// The configured traces URL.
        endpoint: String,
        /// The TLS or reqwest failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The OTLP exporter could not be built (bad URL, HTTP client failure).
    #[cfg(feature = "otlp")]
    #[error("building the otlp exporter for {endpoint}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// The exporter's failure.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A global tracing subscriber is already installed.
    #[error("installing the global tracing subscriber")]
    SubscriberAlreadySet {
        /// The failure.
        #[source]
        source: tracing_subscriber::util::TryInitError,
    },
    /// A global metrics recorder is already installed.
    #[error("a global metrics recorder is already installed")]
    RecorderAlreadySet,
    /// The Prometheus recorder settings are invalid.
    #[cfg(feature = "prometheus")]
    #[error("configuring the prometheus recorder")]
    Prometheus {
        /// The failure.
        #[source]
        source: metrics_exporter_prometheus::BuildError,
    },
    /// Exporting buffered spans on [`crate::TelemetryGuard::force_flush`] or
    /// [`crate::TelemetryGuard::flush`] failed (those spans are lost). The message
    /// carries the exporter's error (a refused connection, an HTTP status, a timeout).
    #[cfg(feature = "otlp")]
    #[error("flushing spans to {endpoint} failed: {error}")]
    Flush {
        /// The OTLP traces URL.
        endpoint: String,
        /// The exporter's or span processor's failure. Its text is in this error's
        /// message, so it is not repeated as [`std::error::Error::source`].
        error: opentelemetry_sdk::error::OTelSdkError,
    },
    /// [`crate::TelemetryGuard::force_flush`] was called on the thread of a
    /// current-thread tokio runtime: it would block the only thread the exporter task
    /// can run on, forever.
    #[error(
        "force_flush would block the current-thread tokio runtime that runs the span \
         exporter, forever: use `flush().await` (or `shutdown().await`) instead"
    )]
    FlushOnCurrentThread,
    /// The final flush and shutdown of the trace provider failed (spans may be lost).
    /// The message carries the exporter's or processor's error.
    #[cfg(feature = "otlp")]
    #[error("shutting down the trace provider for {endpoint} failed: {error}")]
    Shutdown {
        /// The OTLP traces URL.
        endpoint: String,
        /// The failure. Its text is in this error's message, so it is not repeated as
        /// [`std::error::Error::source`].
        error: opentelemetry_sdk::error::OTelSdkError,
    },
    /// The system random generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A correlation id that is not 32 hex digits (or a UUID).
    #[error("invalid correlation id {value:?}: expected 32 hex digits or a uuid")]
    InvalidCorrelationId {
        /// The rejected text (truncated to 64 bytes).
        value: String,
    },
}
