//! Observability for Genesis: the tracing subscriber (JSON or pretty logs to stderr, an
//! env-filter, optional OTLP/HTTP trace export), the Prometheus recorder and the metric
//! catalogue, and per-request correlation ids.
//!
//! Mental model: libraries only emit `tracing` spans/events and `metrics` records; this
//! crate owns where they go. The binary calls [`init`] once (keeping the
//! [`TelemetryGuard`] until shutdown) and [`install_prometheus_recorder`] once (rendering
//! the returned handle at `/metrics`). Metric names are constants in [`catalogue`], so
//! alerts and dashboards (`config/prometheus/alerts.yml`, `config/grafana/genesis.json`)
//! and the recording code agree. Nothing here reads environment variables: the filter
//! directives and the OTLP endpoint arrive in [`TelemetryConfig`].
//!
//! ```
//! use genesis_telemetry::{catalogue, CorrelationId};
//!
//! // Metrics: record through the catalogue's names, render exposition text (the
//! // `prometheus` feature).
//! # #[cfg(feature = "prometheus")] {
//! let recorder = genesis_telemetry::build_prometheus_recorder()?;
//! let handle = recorder.handle();
//! metrics::with_local_recorder(&recorder, || {
//!     catalogue::describe_all();
//!     metrics::counter!(catalogue::TASKS_TOTAL, catalogue::labels::STATUS => "succeeded")
//!         .increment(2);
//! });
//! assert!(handle.render().contains(r#"genesis_tasks_total{status="succeeded"} 2"#));
//! # }
//!
//! // Correlation ids: random, 128-bit, hex; put them on the request span.
//! let id = CorrelationId::generate()?;
//! assert_eq!(id.to_string().len(), 32);
//! let _span = id.request_span().entered();
//! # Ok::<(), genesis_telemetry::TelemetryError>(())
//! ```
//!
//! # Features
//!
//! Both default; a library that only needs the metric names, the config types, JSON
//! logs, correlation ids and [`current_traceparent`] sets
//! `genesis-telemetry = { ..., default-features = false }` and compiles neither
//! exporter (no reqwest, rustls, prost, OpenTelemetry SDK or Prometheus exporter).
//!
//! - `otlp`: OTLP/HTTP trace export (`build_tracer_provider`, the exporting layer of
//!   [`build_layers`], the span-flushing [`TelemetryGuard`]). Its HTTP client gets rustls
//!   with the `ring` provider explicitly (`genesis_core::tls`): nothing here installs a
//!   process-global rustls provider. Without the feature, a config with `otlp` set is
//!   refused with [`TelemetryError::OtlpDisabled`], never silently not exported.
//! - `prometheus`: the Prometheus recorder (`build_prometheus_recorder`,
//!   `install_prometheus_recorder`, `prometheus_builder`, `PrometheusHandle`). Without
//!   it, install any `metrics` recorder you like; the names in [`catalogue`] still apply.
//!
//! Installing the subscriber in a binary (OTLP export needs a tokio runtime):
//!
//! ```no_run
//! # async fn main_body() -> Result<(), genesis_telemetry::TelemetryError> {
//! use genesis_telemetry::{init, LogFormat, OtlpConfig, TelemetryConfig};
//! let guard = init(&TelemetryConfig {
//!     filter: "info,genesis_halo=debug".into(),
//!     format: LogFormat::Json,
//!     service_name: "genesis-server".into(),
//!     otlp: Some(OtlpConfig::new("http://127.0.0.1:4318")),
//! })?;
//! // ... serve ...
//! guard.shutdown().await?; // flush exported spans
//! # Ok(()) }
//! ```

pub mod catalogue;
mod config;
mod correlation;
mod error;
#[cfg(feature = "otlp")]
mod otlp;
pub mod process;
#[cfg(feature = "prometheus")]
mod prometheus;
mod propagation;
mod subscriber;
mod throttle;

pub use catalogue::describe_all;
pub use config::{LogFormat, OtlpConfig, TelemetryConfig};
pub use correlation::{CORRELATION_ID_FIELD, CORRELATION_ID_HEADER, CorrelationId};
pub use error::TelemetryError;
#[cfg(feature = "prometheus")]
pub use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};
#[cfg(feature = "otlp")]
pub use otlp::{TelemetryGuard, build_tracer_provider};
#[cfg(feature = "prometheus")]
pub use prometheus::{
    LATENCY_BUCKETS, build_prometheus_recorder, install_prometheus_recorder, prometheus_builder,
};
pub use propagation::{TRACEPARENT_HEADER, current_traceparent};
#[cfg(not(feature = "otlp"))]
pub use subscriber::TelemetryGuard;
pub use subscriber::{BoxedLayer, build_layers, init, init_with_writer};
pub use throttle::LogThrottle;
