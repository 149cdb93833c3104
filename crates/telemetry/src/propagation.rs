//! W3C Trace Context for outgoing calls: the `traceparent` header of the current span,
//! so the services Genesis calls (HTTP agents) join the run's trace.

use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C Trace Context request header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The `traceparent` value (`00-<trace id>-<span id>-<flags>`, W3C Trace Context
/// level 1) of the current tracing span, or `None` when it has no OpenTelemetry
/// context: no OTLP exporter is configured ([`crate::init`] without `otlp`), or the
/// code runs outside any span. Sent by HTTP agent backends so the agent's own spans
/// become children of the task that called it.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn the_current_span_s_context_is_written_as_a_w3c_traceparent() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            assert_eq!(current_traceparent(), None, "outside any span");
            let task = tracing::info_span!("task");
            let _in = task.enter();
            let header = current_traceparent().expect("a span with a context");
            let context = task.context();
            let span = context.span();
            let sc = span.span_context();
            assert_eq!(
                header,
                format!("00-{}-{}-01", sc.trace_id(), sc.span_id()),
                "version 00, the span's trace and span ids, sampled"
            );
            let parts: Vec<&str> = header.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [2, 32, 16, 2],
                "{header}"
            );
        });
    }

    #[test]
    fn without_an_opentelemetry_layer_there_is_no_traceparent() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let task = tracing::info_span!("task");
            let _in = task.enter();
            assert_eq!(current_traceparent(), None);
        });
    }
}
