//! The Prometheus recorder: built without an HTTP listener; the server renders
//! [`PrometheusHandle::render`] at `/metrics`.

use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::catalogue;
use crate::error::TelemetryError;

/// Histogram bucket upper bounds (seconds) for every `*_seconds` metric: from 1 ms (a
/// cached routing decision) to 5 min (a long LLM call).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// The Prometheus builder with Genesis' histogram buckets (no listener, no push gateway).
///
/// # Errors
/// [`TelemetryError::Prometheus`] (only if the bucket table were empty).
pub fn prometheus_builder() -> Result<PrometheusBuilder, TelemetryError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
        .map_err(|source| TelemetryError::Prometheus { source })
}

/// A recorder that is not installed anywhere: for `metrics::with_local_recorder` in tests,
/// or for callers that install it themselves. Get its handle with
/// [`PrometheusRecorder::handle`].
///
/// # Errors
/// As [`prometheus_builder`].
pub fn build_prometheus_recorder() -> Result<PrometheusRecorder, TelemetryError> {
    Ok(prometheus_builder()?.build_recorder())
}

/// Builds the recorder, installs it as the global `metrics` recorder, registers the
/// catalogue's descriptions ([`catalogue::describe_all`]) and returns the handle to
/// render. The caller should call [`PrometheusHandle::run_upkeep`] every few seconds
/// (the server does it from a tokio interval) so idle histograms are drained.
///
/// # Errors
/// [`TelemetryError::RecorderAlreadySet`] when a global recorder exists.
pub fn install_prometheus_recorder() -> Result<PrometheusHandle, TelemetryError> {
    let recorder = build_prometheus_recorder()?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| TelemetryError::RecorderAlreadySet)?;
    catalogue::describe_all();
    Ok(handle)
}
