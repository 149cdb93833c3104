//! Integration tests: Prometheus exposition, JSON logs through the built layers, OTLP
//! export to a real HTTP server on loopback, and the shipped alert rules and dashboard
//! against the metric catalogue.

// Helpers outside `#[test]` functions are test code too (clippy.toml only exempts tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use genesis_telemetry::catalogue::{self, labels};
use genesis_telemetry::{
    CorrelationId, LogFormat, OtlpConfig, TelemetryConfig, TelemetryError, build_layers,
    build_prometheus_recorder, build_tracer_provider,
};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::SubscriberExt;

// ---------------------------------------------------------------- prometheus

#[test]
fn prometheus_renders_recorded_metrics_with_help_and_buckets() {
    let recorder = build_prometheus_recorder().unwrap();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        catalogue::describe_all();
        metrics::counter!(catalogue::REQUESTS_TOTAL, labels::ENDPOINT => "/v1/runs", labels::STATUS => "ok")
            .increment(3);
        metrics::histogram!(catalogue::REQUEST_DURATION_SECONDS, labels::ENDPOINT => "/v1/runs")
            .record(0.2);
        metrics::histogram!(catalogue::REQUEST_DURATION_SECONDS, labels::ENDPOINT => "/v1/runs")
            .record(3.0);
        metrics::gauge!(catalogue::BREAKER_STATE, labels::KEY => "openai")
            .set(catalogue::breaker_state::OPEN);
        metrics::gauge!(catalogue::COST_USD).increment(0.25);
        metrics::gauge!(catalogue::COST_USD).increment(0.5);
    });
    let text = handle.render();
    assert!(
        text.contains(r#"genesis_requests_total{endpoint="/v1/runs",status="ok"} 3"#),
        "{text}"
    );
    assert!(
        text.contains("# HELP genesis_requests_total requests handled"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE genesis_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"genesis_request_duration_seconds_bucket{endpoint="/v1/runs",le="0.25"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"genesis_request_duration_seconds_bucket{endpoint="/v1/runs",le="5"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"genesis_request_duration_seconds_count{endpoint="/v1/runs"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"genesis_breaker_state{key="openai"} 2"#),
        "{text}"
    );
    assert!(text.contains("genesis_cost_usd 0.75"), "{text}");
    assert!(text.contains("# TYPE genesis_cost_usd gauge"), "{text}");
    assert!(!text.contains("genesis_cost_usd_total"), "{text}");
}

// ---------------------------------------------------------------- logs

/// A `MakeWriter` that appends to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[test]
fn json_logs_carry_fields_span_and_correlation_id_and_respect_the_filter() {
    let out = Captured::default();
    let writer = out.clone();
    let config = TelemetryConfig {
        filter: "info,noisy=warn,chatty=debug".into(),
        format: LogFormat::Json,
        ..TelemetryConfig::default()
    };
    let (layer, guard) = build_layers(&config, move || writer.clone()).unwrap();
    assert!(guard.tracer_provider().is_none());
    let id = CorrelationId::from_bytes([7; 16]);
    tracing::subscriber::with_default(Registry::default().with(layer), || {
        let span = id.request_span();
        let _entered = span.enter();
        tracing::info!(task_id = "t1", "task started");
        tracing::debug!("debug is filtered out at info");
        tracing::warn!(target: "noisy", "kept: warn passes noisy=warn");
        tracing::info!(target: "noisy", "dropped: info below noisy=warn");
        tracing::debug!(target: "chatty", "kept: chatty=debug");
    });
    let lines = out.lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let first = &lines[0];
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["fields"]["message"], "task started");
    assert_eq!(first["fields"]["task_id"], "t1");
    assert_eq!(first["span"]["name"], "request");
    assert_eq!(first["span"]["correlation_id"], id.to_string());
    assert_eq!(lines[1]["level"], "WARN");
    assert_eq!(lines[1]["target"], "noisy");
    assert_eq!(lines[2]["level"], "DEBUG");
    assert_eq!(lines[2]["target"], "chatty");
}

#[test]
fn record_on_fills_a_declared_field() {
    let out = Captured::default();
    let writer = out.clone();
    let (layer, _guard) =
        build_layers(&TelemetryConfig::default(), move || writer.clone()).unwrap();
    let id = CorrelationId::generate().unwrap();
    tracing::subscriber::with_default(Registry::default().with(layer), || {
        let span = tracing::info_span!(
            "orchestrate",
            run_id = "r1",
            correlation_id = tracing::field::Empty
        );
        id.record_on(&span);
        span.in_scope(|| tracing::info!("planning"));
    });
    let lines = out.lines();
    assert_eq!(lines[0]["span"]["correlation_id"], id.to_string());
    assert_eq!(lines[0]["span"]["run_id"], "r1");
}

#[test]
fn invalid_filter_is_rejected_with_the_directives() {
    let config = TelemetryConfig {
        filter: "info,[{bad".into(),
        ..TelemetryConfig::default()
    };
    let err = build_layers(&config, std::io::sink).err().unwrap();
    assert!(matches!(err, TelemetryError::InvalidFilter { .. }));
    assert!(err.to_string().contains("[{bad"), "{err}");
}

#[test]
fn otlp_outside_a_runtime_is_an_error_not_a_panic() {
    let err = build_tracer_provider(&OtlpConfig::new("http://127.0.0.1:9"), "genesis").unwrap_err();
    assert!(matches!(err, TelemetryError::NoTokioRuntime { .. }));
    assert!(
        err.to_string().contains("http://127.0.0.1:9/v1/traces"),
        "{err}"
    );
}

// ---------------------------------------------------------------- otlp

#[derive(Debug, Clone)]
struct Received {
    content_type: Option<String>,
    body: Vec<u8>,
}

type Inbox = Arc<Mutex<Vec<Received>>>;

async fn collect(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> &'static str {
    inbox.lock().unwrap().push(Received {
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.to_vec(),
    });
    ""
}

/// A minimal OTLP/HTTP collector on 127.0.0.1 that records every POST /v1/traces.
async fn start_collector() -> (SocketAddr, Inbox) {
    let inbox: Inbox = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(collect))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, inbox)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn export_one_span(service: &str, span_name_field: &str) -> Vec<Received> {
    let (addr, inbox) = start_collector().await;
    let config = TelemetryConfig {
        service_name: service.into(),
        otlp: Some(OtlpConfig {
            // A long batch delay: only the shutdown flush can deliver the span.
            batch_delay: Duration::from_secs(600),
            ..OtlpConfig::new(format!("http://{addr}"))
        }),
        ..TelemetryConfig::default()
    };
    let (layer, guard) = build_layers(&config, std::io::sink).unwrap();
    assert!(guard.tracer_provider().is_some());
    let id = CorrelationId::generate().unwrap();
    tracing::subscriber::with_default(Registry::default().with(layer), || {
        let span =
            tracing::info_span!("genesis.it.export", step = span_name_field, correlation_id = %id);
        let _entered = span.enter();
        tracing::info!("inside the exported span");
    });
    assert!(
        inbox.lock().unwrap().is_empty(),
        "nothing is sent before the flush"
    );
    guard.shutdown().await.unwrap();
    inbox.lock().unwrap().clone()
}

fn assert_exported(received: &[Received], service: &str, field: &str) {
    assert!(!received.is_empty(), "collector received nothing");
    let all: Vec<u8> = received.iter().flat_map(|r| r.body.clone()).collect();
    for r in received {
        assert_eq!(r.content_type.as_deref(), Some("application/x-protobuf"));
        assert!(!r.body.is_empty());
    }
    // Protobuf stores strings verbatim: the resource, span name and attribute are there.
    assert!(contains(&all, "service.name"));
    assert!(contains(&all, service));
    assert!(contains(&all, "genesis.it.export"));
    assert!(contains(&all, field));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_exports_spans_as_protobuf_on_a_multi_thread_runtime() {
    let received = export_one_span("genesis-it-multi", "multi-thread-step").await;
    assert_exported(&received, "genesis-it-multi", "multi-thread-step");
}

#[tokio::test]
async fn otlp_shutdown_does_not_deadlock_a_current_thread_runtime() {
    let received = tokio::time::timeout(
        Duration::from_secs(30),
        export_one_span("genesis-it-current", "current-thread-step"),
    )
    .await
    .expect("shutdown deadlocked");
    assert_exported(&received, "genesis-it-current", "current-thread-step");
}

/// Building the exporter must not choose the process's rustls provider: an application
/// that calls `CryptoProvider::install_default()` afterwards would find the slot taken
/// (and `.unwrap()` on it panics). No test in this binary installs one, so `None` here
/// means neither `build_tracer_provider` nor `build_layers` did. The span still reaches
/// the collector, over the client built with the explicit `ring` configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn building_the_exporter_installs_no_process_wide_rustls_provider() {
    let provider = build_tracer_provider(&OtlpConfig::new("http://127.0.0.1:1"), "genesis-it")
        .expect("the provider builds");
    assert!(
        rustls::crypto::CryptoProvider::get_default().is_none(),
        "build_tracer_provider installed a process-wide rustls crypto provider"
    );
    // Dropping shuts the batch processor down, which waits for its exporter task:
    // off the runtime's workers.
    tokio::task::spawn_blocking(move || drop(provider))
        .await
        .unwrap();
    let received = export_one_span("genesis-it-no-global-tls", "no-global-tls-step").await;
    assert!(
        rustls::crypto::CryptoProvider::get_default().is_none(),
        "build_layers installed a process-wide rustls crypto provider"
    );
    assert_exported(&received, "genesis-it-no-global-tls", "no-global-tls-step");
}

/// Audit R7 item 5: the log filter was applied to the exporting layer too, so
/// `RUST_LOG=warn` exported 1 span for 3 runs. Each layer has its own filter now: logs
/// at `warn` still export the `info` spans (and not the `debug` ones, below the default
/// `telemetry.otlp.filter` of `info`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_logs_still_export_info_spans() {
    let (addr, inbox) = start_collector().await;
    let out = Captured::default();
    let writer = out.clone();
    let config = TelemetryConfig {
        filter: "warn".into(),
        otlp: Some(OtlpConfig {
            batch_delay: Duration::from_secs(600),
            ..OtlpConfig::new(format!("http://{addr}"))
        }),
        ..TelemetryConfig::default()
    };
    let (layer, guard) = build_layers(&config, move || writer.clone()).unwrap();
    tracing::subscriber::with_default(Registry::default().with(layer), || {
        let span = tracing::info_span!("genesis.it.info_span", step = "kept-info-span");
        let _entered = span.enter();
        tracing::info!("info line: not logged at warn");
        tracing::warn!("warn line: logged");
        let _debug = tracing::debug_span!("genesis.it.debug_span").entered();
    });
    guard.shutdown().await.unwrap();
    let all: Vec<u8> = inbox
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| r.body.clone())
        .collect();
    assert!(
        contains(&all, "genesis.it.info_span") && contains(&all, "kept-info-span"),
        "the info span was not exported with logs at warn"
    );
    assert!(
        !contains(&all, "genesis.it.debug_span"),
        "a debug span was exported through telemetry.otlp.filter=info"
    );
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["fields"]["message"], "warn line: logged");
}

/// The trace filter is checked like the log filter: a bad one is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_trace_filter_is_rejected_with_the_directives() {
    let config = TelemetryConfig {
        otlp: Some(OtlpConfig {
            filter: "info,[{otlp".into(),
            ..OtlpConfig::new("http://127.0.0.1:1")
        }),
        ..TelemetryConfig::default()
    };
    let err = build_layers(&config, std::io::sink).err().unwrap();
    assert!(matches!(err, TelemetryError::InvalidFilter { .. }), "{err}");
    assert!(err.to_string().contains("[{otlp"), "{err}");
    // Verification V7: the error named the log filter; it names the setting.
    assert!(err.to_string().contains("telemetry.otlp.filter"), "{err}");
    let logs = TelemetryConfig {
        filter: "info,[[[".into(),
        ..TelemetryConfig::default()
    };
    let err = build_layers(&logs, std::io::sink).err().unwrap();
    assert!(err.to_string().contains("telemetry.filter"), "{err}");
    assert!(!err.to_string().contains("otlp"), "{err}");
}

/// Audit R7 item 6: with the collector down, spans were lost without a log line or a
/// metric. Now a failed export counts in `genesis_otlp_export_failures_total`, its spans
/// and those refused by a full queue in `genesis_otlp_spans_dropped_total{reason}`, and a
/// WARN line names the endpoint and the error, at most once a minute (a second failure
/// right after writes none). A current-thread runtime runs the exporter task on this
/// thread, under this thread's subscriber and local recorder, and the spans all end
/// before the exporter runs: 2 queued (max_queue_size 2), 8 dropped.
#[test]
fn export_failures_and_dropped_spans_are_counted_and_logged_once() {
    let recorder = build_prometheus_recorder().unwrap();
    let handle = recorder.handle();
    let out = Captured::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let writer = out.clone();
            let config = TelemetryConfig {
                otlp: Some(OtlpConfig {
                    timeout: Duration::from_secs(5),
                    batch_delay: Duration::from_secs(600),
                    max_queue_size: 2,
                    ..OtlpConfig::new("http://127.0.0.1:1")
                }),
                ..TelemetryConfig::default()
            };
            let (layer, guard) = build_layers(&config, move || writer.clone()).unwrap();
            let _default = tracing::subscriber::set_default(Registry::default().with(layer));
            for i in 0..10 {
                let _span = tracing::info_span!("genesis.it.lost", i).entered();
            }
            // The export of the 2 queued spans fails (nothing listens on port 1).
            let _ = guard.flush().await;
            for i in 0..2 {
                let _span = tracing::info_span!("genesis.it.lost_again", i).entered();
            }
            let _ = guard.flush().await;
            drop(_default);
        });
    });
    let text = handle.render();
    assert!(
        text.contains("genesis_otlp_export_failures_total 2"),
        "{text}"
    );
    assert!(
        text.contains(r#"genesis_otlp_spans_dropped_total{reason="queue_full"} 8"#),
        "{text}"
    );
    assert!(
        text.contains(r#"genesis_otlp_spans_dropped_total{reason="export_failed"} 4"#),
        "{text}"
    );
    let lines = out.lines();
    let failed: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("otlp trace export failed")
        })
        .collect();
    assert_eq!(failed.len(), 1, "one line per minute: {lines:?}");
    let line = failed[0];
    assert_eq!(line["level"], "WARN");
    assert_eq!(
        line["fields"]["endpoint"], "http://127.0.0.1:1/v1/traces",
        "{line}"
    );
    assert!(
        !line["fields"]["error"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{line}"
    );
    assert!(line.get("span").is_none(), "a root event: {line}");
    let full: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("otlp export queue full")
        })
        .collect();
    assert_eq!(full.len(), 1, "{lines:?}");
    assert_eq!(full[0]["fields"]["max_queue_size"], 2, "{}", full[0]);
}

/// OTLP export to a closed loopback port (nothing listens on port 1), one span buffered.
fn layers_exporting_to_a_closed_port() -> (
    tracing_subscriber::registry::Registry,
    genesis_telemetry::TelemetryGuard,
    genesis_telemetry::BoxedLayer,
) {
    let config = TelemetryConfig {
        otlp: Some(OtlpConfig {
            timeout: Duration::from_secs(2),
            batch_delay: Duration::from_secs(600),
            ..OtlpConfig::new("http://127.0.0.1:1")
        }),
        ..TelemetryConfig::default()
    };
    let (layer, guard) = build_layers(&config, std::io::sink).unwrap();
    (Registry::default(), guard, layer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_flush_names_the_flush_and_the_exporter_error() {
    let (registry, guard, layer) = layers_exporting_to_a_closed_port();
    tracing::subscriber::with_default(registry.with(layer), || {
        let _span = tracing::info_span!("genesis.it.flush").entered();
    });
    let started = std::time::Instant::now();
    let err = tokio::task::block_in_place(|| guard.force_flush()).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, TelemetryError::Flush { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("flushing spans to http://127.0.0.1:1/v1/traces failed: "),
        "{message}"
    );
    assert!(!message.contains("shutting down"), "{message}");
    // The exporter's own error (the HTTP client's connection failure) is in the message, once.
    assert!(message.contains("127.0.0.1:1"), "{message}");
    let chain = genesis_core_free_chain(&err);
    assert_eq!(
        chain, message,
        "the detail is not repeated by a chain printer"
    );
}

/// `error: source: source...`, as the CLI and server print an error.
fn genesis_core_free_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// `force_flush` blocks its thread until the exporter task answers; on a current-thread
/// runtime that task can never run, so it used to hang forever. It is refused now.
#[test]
fn force_flush_on_a_current_thread_runtime_is_an_error_not_a_hang() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (registry, guard, layer) = layers_exporting_to_a_closed_port();
            tracing::subscriber::with_default(registry.with(layer), || {
                let _span = tracing::info_span!("genesis.it.flush").entered();
            });
            let result = guard.force_flush();
            // The async flush runs on the blocking pool: it works here, and reports the
            // exporter's failure.
            let flushed = guard.flush().await.map_err(|e| e.to_string());
            done_tx
                .send((
                    result.map_err(|e| (format!("{e:?}"), e.to_string())),
                    flushed,
                ))
                .unwrap();
            // Dropping the guard hands the shutdown to a helper thread: no hang either.
        });
    });
    let (result, flushed) = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("force_flush hung on a current-thread runtime");
    let flushed = flushed.unwrap_err();
    assert!(
        flushed.starts_with("flushing spans to http://127.0.0.1:1/v1/traces failed: "),
        "{flushed}"
    );
    let (debug, message) = result.unwrap_err();
    assert!(debug.starts_with("FlushOnCurrentThread"), "{debug}");
    assert!(message.contains("current-thread"), "{message}");
    assert!(
        message.contains("shutdown"),
        "names the alternative: {message}"
    );
}

// ---------------------------------------------------------------- shipped config

fn repo_file(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `genesis_*` and `process_*` identifier in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = prefixed_names(text, "genesis_");
    names.extend(prefixed_names(text, "process_"));
    names
}

/// Every identifier starting with `prefix` in `text`.
fn prefixed_names(text: &str, prefix: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while let Some(pos) = text[i..].find(prefix) {
        let start = i + pos;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded {
            names.push(text[start..end].to_owned());
        }
        i = end.max(start + 1);
    }
    names
}

#[test]
fn alert_rules_use_only_catalogued_metrics() {
    let alerts = repo_file("config/prometheus/alerts.yml");
    let names = metric_names(&alerts);
    assert!(names.len() >= 5, "{names:?}");
    for name in &names {
        assert!(
            catalogue::find(name).is_some(),
            "alerts.yml uses unknown metric {name}"
        );
    }
    for needed in [
        catalogue::REQUESTS_TOTAL,
        catalogue::REQUEST_DURATION_SECONDS,
        catalogue::BREAKER_STATE,
        catalogue::COST_USD,
        catalogue::INJECTION_BLOCKED_TOTAL,
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(needed)),
            "no alert on {needed}"
        );
    }
}

/// The `status` matchers (`status="x"`, `status=~"5.."`, ...) applied to
/// `genesis_requests_total` in a PromQL text.
fn request_status_matchers(promql: &str) -> Vec<String> {
    let needle = format!("{}{{", catalogue::REQUESTS_TOTAL);
    let mut found = Vec::new();
    let mut rest = promql;
    while let Some(pos) = rest.find(&needle) {
        let selector = &rest[pos + needle.len()..];
        let selector = &selector[..selector.find('}').unwrap_or(selector.len())];
        for matcher in selector.split(',') {
            let Some(value) = matcher.trim().strip_prefix(labels::STATUS) else {
                continue;
            };
            let value = value.trim_start_matches(['=', '~', '!']);
            found.push(value.trim_matches('"').to_owned());
        }
        rest = &rest[pos + needle.len()..];
    }
    found
}

/// The middleware records the numeric HTTP status code as `status`, so a selector on a
/// word (`status="error"`, which the error-rate panel used) matches nothing and reads 0.
#[test]
fn request_status_selectors_match_the_recorded_http_codes() {
    let text = repo_file("config/grafana/genesis.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut matchers: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(request_status_matchers))
        .flatten()
        .collect();
    assert!(!matchers.is_empty(), "the dashboard charts no error rate");
    matchers.extend(request_status_matchers(&repo_file(
        "config/prometheus/alerts.yml",
    )));
    for m in &matchers {
        assert!(
            !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit() || b"|.".contains(&b)),
            "status matcher {m:?} can never match a recorded HTTP status code"
        );
    }
    assert_eq!(
        request_status_matchers(
            r#"sum(rate(genesis_requests_total{endpoint="/x", status="error"}[5m]))"#
        ),
        ["error"]
    );
}

#[test]
fn dashboard_is_valid_json_and_charts_every_catalogued_metric() {
    let text = repo_file("config/grafana/genesis.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    let names: Vec<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for name in &names {
        assert!(
            catalogue::find(name).is_some(),
            "dashboard uses unknown metric {name}"
        );
    }
    for def in catalogue::CATALOGUE {
        assert!(
            names.iter().any(|n| n.starts_with(def.name)),
            "dashboard lacks {}",
            def.name
        );
    }
}

// ---------------------------------------------------------------- global installation
// The only tests in this binary that touch process-wide state; every other test uses a
// thread-local subscriber or a local recorder, which take precedence.

#[test]
fn init_installs_once_then_reports_already_set() {
    let config = TelemetryConfig {
        filter: "warn".into(),
        format: LogFormat::Compact,
        ..TelemetryConfig::default()
    };
    let guard = genesis_telemetry::init(&config).unwrap();
    assert!(guard.tracer_provider().is_none());
    let err = genesis_telemetry::init(&config).unwrap_err();
    assert!(
        matches!(err, TelemetryError::SubscriberAlreadySet { .. }),
        "{err}"
    );
}

#[test]
fn global_prometheus_recorder_installs_once_and_renders_global_records() {
    let handle = genesis_telemetry::install_prometheus_recorder().unwrap();
    metrics::counter!(catalogue::RATE_LIMITED_TOTAL).increment(4);
    metrics::gauge!(catalogue::ROLLOUT_PERCENT, labels::FLAG => "new_router_rollout").set(25.0);
    let text = handle.render();
    assert!(text.contains("genesis_rate_limited_total 4"), "{text}");
    assert!(
        text.contains(r#"genesis_rollout_percent{flag="new_router_rollout"} 25"#),
        "{text}"
    );
    // describe_all ran on install.
    assert!(text.contains("# HELP genesis_rate_limited_total"), "{text}");
    assert!(matches!(
        genesis_telemetry::install_prometheus_recorder(),
        Err(TelemetryError::RecorderAlreadySet)
    ));
}
