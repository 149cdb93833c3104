//! OTLP/HTTP trace export (the `otlp` feature): the trace provider, the OpenTelemetry
//! layer, and the guard that flushes exported spans on shutdown.

use std::time::Duration;

use genesis_core::tls;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider};
use tracing_subscriber::Layer;

use crate::config::OtlpConfig;
use crate::error::TelemetryError;
use crate::subscriber::BoxedLayer;

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
            endpoint: url,
            source,
        })?;
    let queue = otlp.max_queue_size.max(1);
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(queue)
        .with_max_export_batch_size(queue.min(512))
        .with_scheduled_delay(otlp.batch_delay)
        .with_max_export_timeout(otlp.timeout)
        .with_max_concurrent_exports(1)
        .build();
    let processor = BatchSpanProcessor::builder(exporter, Tokio)
        .with_batch_config(batch)
        .build();
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
