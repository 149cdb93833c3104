//! OTLP/HTTP trace export (the `otlp` feature): the trace provider, the OpenTelemetry
//! layer, and the guard that flushes exported spans on shutdown.
//!
//! Export failures are never silent: the exporter is wrapped ([`WatchedExporter`]) so a
//! failed or timed-out export counts in `genesis_otlp_export_failures_total`, its spans
//! in `genesis_otlp_spans_dropped_total{reason="export_failed"}`, and the processor is
//! wrapped ([`QueueGate`]) so spans refused by a full queue count with
//! `reason="queue_full"`. A WARN line names the endpoint and the error at most once a
//! minute per kind, as a root event (no parent span): the OpenTelemetry layer attaches
//! events to spans only, so that line is never exported into the failing exporter.
//! The export itself runs with tracing switched off (`NoSubscriber`), so spans the HTTP
//! client might emit are not exported in a loop either. Ending a span never waits for
//! the exporter: a full queue drops the span.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use genesis_core::tls;
use opentelemetry::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, Sampler, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor,
};
use tracing::instrument::WithSubscriber as _;
use tracing_subscriber::Layer;

use crate::catalogue::{self, labels};
use crate::config::OtlpConfig;
use crate::error::TelemetryError;
use crate::subscriber::BoxedLayer;

/// How often, at most, a WARN line reports export failures (and, separately, spans
/// dropped by a full queue).
pub(crate) const EXPORT_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// At most one line per interval, lock-free (it is checked on the span-ending path when
/// the queue is full): the first event is reported at once, later ones when the interval
/// since the last report has passed, each report carrying the events since the previous.
#[derive(Debug)]
struct RateGate {
    base: Instant,
    interval: Duration,
    /// Milliseconds since `base` from which the next report may be written.
    next_ms: AtomicU64,
    held: AtomicU64,
}

impl RateGate {
    fn new(interval: Duration) -> Self {
        RateGate {
            base: Instant::now(),
            interval,
            next_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// Counts `n` events at `now`; `Some(events since the last report)` when a line is due.
    fn hit(&self, n: u64, now: Instant) -> Option<u64> {
        self.held.fetch_add(n, Ordering::Relaxed);
        let now_ms =
            u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms < next {
            return None;
        }
        let interval = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        self.next_ms
            .compare_exchange(
                next,
                now_ms.saturating_add(interval),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .ok()
            .map(|_| self.held.swap(0, Ordering::AcqRel))
    }
}

/// The export's health, shared by the queue gate and the exporter wrapper.
#[derive(Debug)]
struct ExportHealth {
    /// The traces URL, named in the WARN lines.
    endpoint: String,
    /// Spans accepted by the gate and not yet handed to the exporter.
    pending: AtomicUsize,
    /// The most spans `pending` may reach (`telemetry.otlp.max_queue_size`).
    max_queue: usize,
    failures: RateGate,
    /// Spans of failed exports since the last WARN line about them.
    spans_lost: AtomicU64,
    queue_full: RateGate,
}

impl ExportHealth {
    /// An export of `spans` spans failed with `error`: counted, and reported at most
    /// once per [`EXPORT_WARN_INTERVAL`].
    fn export_failed(&self, error: &str, spans: usize) {
        let spans = u64::try_from(spans).unwrap_or(u64::MAX);
        metrics::counter!(catalogue::OTLP_EXPORT_FAILURES_TOTAL).increment(1);
        metrics::counter!(catalogue::OTLP_SPANS_DROPPED_TOTAL, labels::REASON => "export_failed")
            .increment(spans);
        if let Some((failures, spans_lost)) = self.failure_report(spans, Instant::now()) {
            // A root event: never attached to (and exported with) a span.
            tracing::warn!(
                parent: None,
                endpoint = %self.endpoint,
                error,
                failures,
                spans_lost,
                "otlp trace export failed; its spans are lost (failures and spans_lost since the previous line; genesis_otlp_export_failures_total counts every failure; at most one line per minute)"
            );
        }
    }

    /// Counts a failed export of `spans` spans at `now`; when a WARN line is due, the
    /// failures and the spans they lost since the previous line (both over the same
    /// stretch: verification V7 found the spans were the last batch's only).
    fn failure_report(&self, spans: u64, now: Instant) -> Option<(u64, u64)> {
        self.spans_lost.fetch_add(spans, Ordering::AcqRel);
        let failures = self.failures.hit(1, now)?;
        Some((failures, self.spans_lost.swap(0, Ordering::AcqRel)))
    }

    /// A span was refused because `max_queue` spans wait for the exporter.
    fn span_dropped(&self) {
        metrics::counter!(catalogue::OTLP_SPANS_DROPPED_TOTAL, labels::REASON => "queue_full")
            .increment(1);
        if let Some(dropped) = self.queue_full.hit(1, Instant::now()) {
            tracing::warn!(
                parent: None,
                endpoint = %self.endpoint,
                dropped,
                max_queue_size = self.max_queue,
                "otlp export queue full: spans dropped (genesis_otlp_spans_dropped_total counts them; at most one line per minute)"
            );
        }
    }
}

/// Wraps the span processor: a span ends into the queue only while fewer than
/// `max_queue_size` spans wait for the exporter, else it is dropped and counted (the
/// SDK's processor drops silently). Never blocks.
#[derive(Debug)]
pub(crate) struct QueueGate<P> {
    inner: P,
    health: Arc<ExportHealth>,
}

impl<P: SpanProcessor> SpanProcessor for QueueGate<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // The processor ignores unsampled spans: nothing to queue.
        if !span.span_context.is_sampled() {
            return;
        }
        let admitted = self
            .health
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.health.max_queue).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.inner.on_end(span);
        } else {
            self.health.span_dropped();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Wraps the exporter: counts the spans leaving the queue, and failed or abandoned
/// (timed-out) exports.
#[derive(Debug)]
pub(crate) struct WatchedExporter<E> {
    inner: E,
    health: Arc<ExportHealth>,
    timeout: Duration,
}

/// Reports an export as failed if it is dropped before it finished (the batch
/// processor abandons an export at its timeout).
struct ExportWatch {
    health: Arc<ExportHealth>,
    spans: usize,
    timeout: Duration,
    finished: bool,
}

impl Drop for ExportWatch {
    fn drop(&mut self) {
        if !self.finished {
            let error = format!("no answer within telemetry.otlp.timeout {:?}", self.timeout);
            self.health.export_failed(&error, self.spans);
        }
    }
}

impl<E: SpanExporter> SpanExporter for WatchedExporter<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let spans = batch.len();
        // Out of the queue: room for as many new spans.
        let _ = self
            .health
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(spans))
            });
        let mut watch = ExportWatch {
            health: Arc::clone(&self.health),
            spans,
            timeout: self.timeout,
            finished: false,
        };
        // No tracing inside the export: spans of the HTTP client must not be exported
        // by the export itself.
        let export = self
            .inner
            .export(batch)
            .with_subscriber(tracing::subscriber::NoSubscriber::default());
        async move {
            let result = export.await;
            watch.finished = true;
            if let Err(error) = &result {
                watch.health.export_failed(&error.to_string(), spans);
            }
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter's HTTP client: rustls with the `ring` provider and the system trust
/// roots handed over explicitly, the export timeout per request, no proxy from the
/// environment (nothing in this crate reads it).
fn http_client(otlp: &OtlpConfig) -> Result<reqwest::Client, TelemetryError> {
    let failed =
        |source: Box<dyn std::error::Error + Send + Sync>| TelemetryError::ExporterClient {
            endpoint: otlp.traces_url(),
            source,
        };
    let tls = tls::client_config(tls::system_roots()).map_err(|e| failed(Box::new(e)))?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(otlp.timeout)
        .user_agent(concat!("genesis-telemetry/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| failed(Box::new(e)))
}

/// Builds an OTLP/HTTP (protobuf) trace provider with a batch span processor running on the
/// current tokio runtime. Every batch setting is set explicitly, so `OTEL_BSP_*`
/// variables have no effect, and the resource holds only `service.name` (no environment
/// detectors).
///
/// Spans go out over a reqwest client with rustls on the `ring` provider passed
/// explicitly and the system CA bundle (`genesis_core::tls`): no process-global rustls
/// provider is installed (an application may still install its own), and no proxy is
/// taken from the environment.
///
/// # Errors
/// [`TelemetryError::NoTokioRuntime`] outside a tokio runtime,
/// [`TelemetryError::ExporterClient`] when its HTTP client cannot be built (TLS set-up),
/// [`TelemetryError::Exporter`] when the exporter cannot be built.
pub fn build_tracer_provider(
    otlp: &OtlpConfig,
    service_name: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let url = otlp.traces_url();
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TelemetryError::NoTokioRuntime { endpoint: url });
    }
    // The exporter gets our client: left to itself it would build a reqwest client that
    // needs a process-global rustls provider, which a library must not install.
    let client = http_client(otlp)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(otlp.timeout)
        .build()
        .map_err(|source| TelemetryError::Exporter {
            endpoint: url.clone(),
            source,
        })?;
    let queue = otlp.max_queue_size.max(1);
    let batch_size = queue.min(512);
    let health = Arc::new(ExportHealth {
        endpoint: url,
        pending: AtomicUsize::new(0),
        max_queue: queue,
        failures: RateGate::new(EXPORT_WARN_INTERVAL),
        spans_lost: AtomicU64::new(0),
        queue_full: RateGate::new(EXPORT_WARN_INTERVAL),
    });
    let batch = BatchConfigBuilder::default()
        // The gate keeps at most `queue` spans between it and the exporter; the
        // processor's channel has room for them plus its control messages, so it never
        // drops a span uncounted.
        .with_max_queue_size(queue.saturating_add(batch_size).saturating_add(16))
        .with_max_export_batch_size(batch_size)
        .with_scheduled_delay(otlp.batch_delay)
        .with_max_export_timeout(otlp.timeout)
        .with_max_concurrent_exports(1)
        .build();
    let exporter = WatchedExporter {
        inner: exporter,
        health: Arc::clone(&health),
        timeout: otlp.timeout,
    };
    let processor = BatchSpanProcessor::builder(exporter, Tokio)
        .with_batch_config(batch)
        .build();
    let processor = QueueGate {
        inner: processor,
        health,
    };
    let resource = Resource::builder_empty()
        .with_service_name(service_name.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource)
        .build())
}

/// The OpenTelemetry layer exporting spans to `otlp`, and the guard owning its provider.
pub(crate) fn export_layer(
    otlp: &OtlpConfig,
    service_name: &str,
) -> Result<(BoxedLayer, TelemetryGuard), TelemetryError> {
    let provider = build_tracer_provider(otlp, service_name)?;
    let tracer = provider.tracer("genesis");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
    Ok((
        layer,
        TelemetryGuard {
            provider: Some(provider),
            endpoint: otlp.traces_url(),
        },
    ))
}

/// Owns the trace provider; flushes and shuts it down.
///
/// Prefer `guard.shutdown().await` at the end of `main` (it runs the blocking flush on
/// tokio's blocking pool, so it works on any runtime flavour), and `guard.flush().await`
/// to export buffered spans mid-run. Dropping the guard shuts down too, best effort:
/// inside a multi-thread runtime it blocks in place; inside a current-thread runtime it
/// hands the shutdown to a helper thread (the runtime must keep running for the flush to
/// finish); outside a runtime the exporter task is already gone.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    /// The OTLP traces URL, for error messages (empty without a provider).
    endpoint: String,
}

impl TelemetryGuard {
    /// A guard with nothing to shut down (logs only).
    pub fn noop() -> Self {
        TelemetryGuard {
            provider: None,
            endpoint: String::new(),
        }
    }

    /// The trace provider, when OTLP export is configured.
    pub fn tracer_provider(&self) -> Option<&SdkTracerProvider> {
        self.provider.as_ref()
    }

    /// Exports buffered spans now, blocking the calling thread until the exporter
    /// answers (at most the OTLP `timeout` per batch). On a multi-thread runtime's worker
    /// it blocks in place (other tasks move to other workers); outside a runtime it
    /// simply blocks. On a current-thread runtime it is refused: the exporter task runs
    /// on that runtime's one thread, which the call would block forever (a thread of
    /// that runtime's blocking pool cannot be told apart, so it is refused there too).
    /// [`flush`](Self::flush) works on every flavour.
    ///
    /// # Errors
    /// [`TelemetryError::Flush`] naming the endpoint and the exporter's error when the
    /// export fails; [`TelemetryError::FlushOnCurrentThread`] on a current-thread runtime.
    pub fn force_flush(&self) -> Result<(), TelemetryError> {
        let Some(provider) = &self.provider else {
            return Ok(());
        };
        let flush = || provider.force_flush();
        let result = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(flush),
            // Current-thread (and any other single-threaded flavour): the exporter task
            // could never run while this thread waits for it.
            Ok(_) => return Err(TelemetryError::FlushOnCurrentThread),
            Err(_) => flush(),
        };
        result.map_err(|error| self.flush_error(error))
    }

    /// Exports buffered spans now, waiting without blocking the runtime: the blocking
    /// flush runs on tokio's blocking pool, so it works on any runtime flavour.
    ///
    /// # Errors
    /// [`TelemetryError::Flush`] naming the endpoint and the exporter's error.
    pub async fn flush(&self) -> Result<(), TelemetryError> {
        let Some(provider) = &self.provider else {
            return Ok(());
        };
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let provider = provider.clone();
                match handle.spawn_blocking(move || provider.force_flush()).await {
                    Ok(result) => result,
                    // The blocking task panicked or was cancelled: nothing more to do.
                    Err(_) => return Ok(()),
                }
            }
            Err(_) => provider.force_flush(),
        };
        result.map_err(|error| self.flush_error(error))
    }

    fn flush_error(&self, error: opentelemetry_sdk::error::OTelSdkError) -> TelemetryError {
        TelemetryError::Flush {
            endpoint: self.endpoint.clone(),
            error,
        }
    }

    /// Flushes buffered spans and shuts the provider down.
    ///
    /// # Errors
    /// [`TelemetryError::Shutdown`] naming the endpoint and the failure when the final
    /// export fails.
    pub async fn shutdown(mut self) -> Result<(), TelemetryError> {
        let Some(provider) = self.provider.take() else {
            return Ok(());
        };
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) => match handle.spawn_blocking(move || provider.shutdown()).await {
                Ok(result) => result,
                // The blocking task panicked or was cancelled: nothing more to do.
                Err(_) => return Ok(()),
            },
            Err(_) => provider.shutdown(),
        };
        result.map_err(|error| TelemetryError::Shutdown {
            endpoint: std::mem::take(&mut self.endpoint),
            error,
        })
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        let shut = move || {
            if let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
                tracing::warn!(%error, "trace provider shutdown failed; spans may be lost");
            }
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(shut),
            Ok(_) => {
                // Blocking this thread would starve the exporter task: hand it off.
                let _detached = std::thread::Builder::new()
                    .name("otel-shutdown".to_owned())
                    .spawn(shut);
            }
            Err(_) => shut(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The WARN line's `failures` and `spans_lost` count the same stretch: every failed
    /// export since the previous line, not the last batch alone.
    #[test]
    fn a_failure_report_counts_failures_and_spans_since_the_previous_line() {
        let health = ExportHealth {
            endpoint: "http://127.0.0.1:1/v1/traces".into(),
            pending: AtomicUsize::new(0),
            max_queue: 8,
            failures: RateGate::new(Duration::from_secs(60)),
            spans_lost: AtomicU64::new(0),
            queue_full: RateGate::new(Duration::from_secs(60)),
        };
        let t0 = Instant::now();
        assert_eq!(
            health.failure_report(5, t0),
            Some((1, 5)),
            "the first at once"
        );
        assert_eq!(health.failure_report(7, t0 + Duration::from_secs(1)), None);
        assert_eq!(health.failure_report(11, t0 + Duration::from_secs(2)), None);
        assert_eq!(
            health.failure_report(3, t0 + Duration::from_secs(61)),
            Some((3, 21)),
            "three failures and their 21 spans since the first line"
        );
    }
}
