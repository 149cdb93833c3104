//! The metric catalogue: every metric Genesis exports, with its name, type, unit, labels
//! and help text. Names are a stable interface (alerts, dashboards): add, and rename only
//! with a migration note in docs/OPERATIONS.md (`genesis_cost_usd_total` became
//! [`COST_USD`]: a gauge must not end in `_total`). Every name starts with `genesis_`
//! except the standard process metrics ([`PROCESS_START_TIME_SECONDS`],
//! [`PROCESS_RESIDENT_MEMORY_BYTES`]).
//!
//! Recording is done by the facade with the `metrics` macros and these constants, e.g.
//! `metrics::counter!(catalogue::TASKS_TOTAL, labels::STATUS => "succeeded").increment(1)`.
//! Histograms are in seconds and are rendered with [`crate::LATENCY_BUCKETS`].

use metrics::Unit;

/// Label keys used by the catalogue.
pub mod labels {
    /// The server's matched HTTP route (`/api/tasks`, `/api/tasks/{id}`), or `unmatched`
    /// when no route matched (never the request path: it may hold ids or secrets).
    pub const ENDPOINT: &str = "endpoint";
    /// For requests ([`REQUESTS_TOTAL`](super::REQUESTS_TOTAL)): the numeric HTTP status
    /// code (`200`, `400`, `429`, `503`, ...), so failures are `status=~"5.."`. For tasks
    /// ([`TASKS_TOTAL`](super::TASKS_TOTAL)): `succeeded`, `failed` or `skipped`.
    pub const STATUS: &str = "status";
    /// Routing layer that decided: `rule`, `text`, `capability`, `unassigned`.
    pub const LAYER: &str = "layer";
    /// LLM provider (`openai`, `anthropic`, `scripted`).
    pub const PROVIDER: &str = "provider";
    /// Model id.
    pub const MODEL: &str = "model";
    /// LLM call outcome: `ok`, or the kind of the failure (`timeout`, `rate_limited`,
    /// `server_error`, `transport`, ...: `genesis_llm::LlmError::kind`). For a
    /// cohort's requests ([`COHORT_REQUESTS_TOTAL`](super::COHORT_REQUESTS_TOTAL)): `ok`,
    /// or `error` when the answer was a 5xx.
    pub const OUTCOME: &str = "outcome";
    /// Token direction: `input` or `output`.
    pub const DIRECTION: &str = "direction";
    /// Circuit breaker key (agent or provider).
    pub const KEY: &str = "key";
    /// Where the injection screen blocked: `user_request` (the request screened before
    /// planning) is the only value recorded.
    pub const CHECKPOINT: &str = "checkpoint";
    /// Feature flag name.
    pub const FLAG: &str = "flag";
    /// A rollout cohort: `on` (the subject gets the flag) or `off`.
    pub const VARIANT: &str = "variant";
    /// Flag evaluation result: `on` or `off`.
    pub const RESULT: &str = "result";
    /// Error category (`genesis_core::ErrorCategory::as_str`).
    pub const CATEGORY: &str = "category";
    /// Budget scope: `run`, `daily` or `subject_daily`.
    pub const SCOPE: &str = "scope";
    /// Which cap refused (or evicted) a connection (`max_connections`,
    /// `max_connections_per_ip`);
    /// for [`OTLP_SPANS_DROPPED_TOTAL`](super::OTLP_SPANS_DROPPED_TOTAL), why spans
    /// were lost (`queue_full`, `export_failed`).
    pub const REASON: &str = "reason";
}

/// Values of [`BREAKER_STATE`].
pub mod breaker_state {
    /// The breaker lets calls through.
    pub const CLOSED: f64 = 0.0;
    /// The breaker lets a probe through.
    pub const HALF_OPEN: f64 = 1.0;
    /// The breaker rejects calls.
    pub const OPEN: f64 = 2.0;
}

/// HTTP requests the server answered. Labels: endpoint, status (the HTTP status code).
pub const REQUESTS_TOTAL: &str = "genesis_requests_total";
/// Wall time of a request. Labels: endpoint.
pub const REQUEST_DURATION_SECONDS: &str = "genesis_request_duration_seconds";
/// Time to build a plan (decompose, route, select models, validate).
pub const PLAN_DURATION_SECONDS: &str = "genesis_plan_duration_seconds";
/// Tasks finished. Labels: status.
pub const TASKS_TOTAL: &str = "genesis_tasks_total";
/// Time on its agents of one task that succeeded: from its first call's start to the
/// answer, retries, backoff and refinement rounds included. Time waiting for a call slot
/// is not in it (see [`TASK_QUEUE_SECONDS`]), so overload does not read as a slow agent.
pub const TASK_DURATION_SECONDS: &str = "genesis_task_duration_seconds";
/// Time one task waited for call slots — server-wide (`executor.max_tasks_in_flight`)
/// or a busy agent's (`max_concurrent_tasks`) — recorded once per task that ended,
/// succeeded or failed. Not counted against `executor.task_deadline`.
pub const TASK_QUEUE_SECONDS: &str = "genesis_task_queue_seconds";
/// Routing decisions. Labels: layer.
pub const ROUTING_DECISIONS_TOTAL: &str = "genesis_routing_decisions_total";
/// Routing cache hits: the router's own total, exported at each `/metrics` scrape.
pub const ROUTING_CACHE_HITS_TOTAL: &str = "genesis_routing_cache_hits_total";
/// Routing cache misses: the router's own total, exported at each `/metrics` scrape.
pub const ROUTING_CACHE_MISSES_TOTAL: &str = "genesis_routing_cache_misses_total";
/// Agent outcomes the router learned from finished runs. Labels: result.
pub const ROUTING_OUTCOMES_TOTAL: &str = "genesis_routing_outcomes_total";
/// LLM calls. Labels: provider, model, outcome.
pub const LLM_CALLS_TOTAL: &str = "genesis_llm_calls_total";
/// Wall time of one LLM call. Labels: provider, model.
pub const LLM_CALL_DURATION_SECONDS: &str = "genesis_llm_call_duration_seconds";
/// Tokens consumed. Labels: direction.
pub const LLM_TOKENS_TOTAL: &str = "genesis_llm_tokens_total";
/// US dollars spent on agent calls since the process started. A monotonically
/// increasing *gauge* (recorded with `gauge!(..).increment(usd)`), because `metrics`
/// counters are integers; hence no `_total` suffix (it was `genesis_cost_usd_total`
/// before). `rate()` and `increase()` work on it as on a counter: it only goes down
/// when the process restarts.
pub const COST_USD: &str = "genesis_cost_usd";
/// Work rejected because a budget would be exceeded. Labels: scope.
pub const BUDGET_EXCEEDED_TOTAL: &str = "genesis_budget_exceeded_total";
/// Circuit breaker state per key: see [`breaker_state`]. Labels: key.
pub const BREAKER_STATE: &str = "genesis_breaker_state";
/// Current degradation level (0 = full service; higher = more fallbacks in use).
pub const DEGRADATION_LEVEL: &str = "genesis_degradation_level";
/// Inputs blocked by the injection detector. Labels: checkpoint (`user_request`).
pub const INJECTION_BLOCKED_TOTAL: &str = "genesis_injection_blocked_total";
/// Requests rejected by the rate limiter.
pub const RATE_LIMITED_TOTAL: &str = "genesis_rate_limited_total";
/// Error answers of the HTTP server, by category (the `category` of the error body).
/// Labels: category.
pub const ERRORS_TOTAL: &str = "genesis_errors_total";
/// Feature flag evaluations. Labels: flag, result.
pub const FLAG_EVALUATIONS_TOTAL: &str = "genesis_flag_evaluations_total";
/// Percentage of subjects a progressive rollout currently admits. Labels: flag.
pub const ROLLOUT_PERCENT: &str = "genesis_rollout_percent";
/// Plan and run requests of a rollout cohort: for each pipeline flag whose answer
/// differs between subjects (a percentage strictly between 0 and 100 %, a canary, a
/// progressive ramp under way), the request's subject is in its `on` or `off` variant.
/// Labels: flag, variant, outcome (`ok`, or `error` for a 5xx answer). No series while
/// no flag splits subjects.
pub const COHORT_REQUESTS_TOTAL: &str = "genesis_cohort_requests_total";
/// Wall time of a plan or run request of a rollout cohort (see
/// [`COHORT_REQUESTS_TOTAL`]). Labels: flag, variant.
pub const COHORT_REQUEST_DURATION_SECONDS: &str = "genesis_cohort_request_duration_seconds";
/// Tasks finished by runs of a rollout cohort (the cohort the run was launched in).
/// Labels: flag, variant, status (`succeeded`, `failed`).
pub const COHORT_TASKS_TOTAL: &str = "genesis_cohort_tasks_total";
/// Time on its agents of a task that succeeded in a run of a rollout cohort, as
/// [`TASK_DURATION_SECONDS`] (waits for a call slot excluded).
/// Labels: flag, variant.
pub const COHORT_TASK_DURATION_SECONDS: &str = "genesis_cohort_task_duration_seconds";
/// Finished runs the server deleted from its store after `server.retention`.
pub const RUNS_DELETED_TOTAL: &str = "genesis_runs_deleted_total";
/// Connections the server refused at accept. Labels: reason.
pub const CONNECTIONS_REFUSED_TOTAL: &str = "genesis_connections_refused_total";
/// Connections the server closed at accept to make room under a cap full of connections
/// that had not sent a complete request head (the oldest such one). Labels: reason.
pub const CONNECTIONS_EVICTED_TOTAL: &str = "genesis_connections_evicted_total";
/// Connections the server has open now.
pub const CONNECTIONS_OPEN: &str = "genesis_connections_open";
/// Runs in progress on the server now: accepted (or resumed) and not finished, against
/// `server.max_runs`.
pub const RUNS_IN_PROGRESS: &str = "genesis_runs_in_progress";
/// Requests being planned on the server now, against `server.max_planning`.
pub const PLANNING_IN_PROGRESS: &str = "genesis_planning_in_progress";
/// Runs that ended, counted once when each ends. Labels: status (`succeeded`,
/// `failed`, `cancelled`, `interrupted`: its journal refused a write; it resumes at the
/// next start and is counted again when it ends then).
pub const RUNS_TOTAL: &str = "genesis_runs_total";
/// OTLP trace exports that failed (an error or no answer within the timeout).
pub const OTLP_EXPORT_FAILURES_TOTAL: &str = "genesis_otlp_export_failures_total";
/// Spans that never reached the collector. Labels: reason (`queue_full`: the export
/// queue was full when the span ended; `export_failed`: its export failed).
pub const OTLP_SPANS_DROPPED_TOTAL: &str = "genesis_otlp_spans_dropped_total";
/// Start time of the process, unix seconds (the standard Prometheus process metric):
/// a change means a restart, so counters went back to 0.
pub const PROCESS_START_TIME_SECONDS: &str = "process_start_time_seconds";
/// Resident memory of the process, bytes (the standard Prometheus process metric;
/// read from `/proc/self/status` at each scrape, Linux only).
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";

/// The type of a catalogued metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricKind {
    /// Monotonic integer counter.
    Counter,
    /// Value that goes up and down (or a float total, see [`COST_USD`]).
    Gauge,
    /// Distribution, rendered as a Prometheus histogram.
    Histogram,
}

/// One catalogue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// Exported name.
    pub name: &'static str,
    /// Type.
    pub kind: MetricKind,
    /// Unit.
    pub unit: Unit,
    /// Label keys the facade sets.
    pub labels: &'static [&'static str],
    /// Help text (rendered as `# HELP`).
    pub help: &'static str,
}

const fn def(
    name: &'static str,
    kind: MetricKind,
    unit: Unit,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        kind,
        unit,
        labels,
        help,
    }
}

use MetricKind::{Counter, Gauge, Histogram};
use labels as l;

/// Every metric Genesis exports.
#[rustfmt::skip]
pub const CATALOGUE: &[MetricDef] = &[
    def(REQUESTS_TOTAL, Counter, Unit::Count, &[l::ENDPOINT, l::STATUS], "requests handled, by endpoint and http status code"),
    def(REQUEST_DURATION_SECONDS, Histogram, Unit::Seconds, &[l::ENDPOINT], "wall time of a request"),
    def(PLAN_DURATION_SECONDS, Histogram, Unit::Seconds, &[], "time to decompose, route, select models and validate a plan"),
    def(TASKS_TOTAL, Counter, Unit::Count, &[l::STATUS], "tasks finished, by status"),
    def(TASK_DURATION_SECONDS, Histogram, Unit::Seconds, &[], "time on its agents of one task that succeeded, from its first call to the answer (retries included, waits for a call slot excluded)"),
    def(TASK_QUEUE_SECONDS, Histogram, Unit::Seconds, &[], "time one task waited for call slots (max_tasks_in_flight, an agent's max_concurrent_tasks), per task that ended"),
    def(ROUTING_DECISIONS_TOTAL, Counter, Unit::Count, &[l::LAYER], "routing decisions, by the layer that decided"),
    def(ROUTING_CACHE_HITS_TOTAL, Counter, Unit::Count, &[], "routing cache hits"),
    def(ROUTING_CACHE_MISSES_TOTAL, Counter, Unit::Count, &[], "routing cache misses"),
    def(ROUTING_OUTCOMES_TOTAL, Counter, Unit::Count, &[l::RESULT], "agent outcomes the router learned from finished runs, by result (success, failure)"),
    def(LLM_CALLS_TOTAL, Counter, Unit::Count, &[l::PROVIDER, l::MODEL, l::OUTCOME], "llm calls, by provider, model and outcome"),
    def(LLM_CALL_DURATION_SECONDS, Histogram, Unit::Seconds, &[l::PROVIDER, l::MODEL], "wall time of one llm call"),
    def(LLM_TOKENS_TOTAL, Counter, Unit::Count, &[l::DIRECTION], "llm tokens, by direction (input, output)"),
    def(COST_USD, Gauge, Unit::Count, &[], "us dollars spent on agent calls since the process started: llm, http and command agents (monotonic)"),
    def(BUDGET_EXCEEDED_TOTAL, Counter, Unit::Count, &[l::SCOPE], "work rejected because a budget would be exceeded"),
    def(BREAKER_STATE, Gauge, Unit::Count, &[l::KEY], "circuit breaker state: 0 closed, 1 half-open, 2 open"),
    def(DEGRADATION_LEVEL, Gauge, Unit::Count, &[], "degradation level: 0 is full service"),
    def(INJECTION_BLOCKED_TOTAL, Counter, Unit::Count, &[l::CHECKPOINT], "inputs blocked by the injection detector, by checkpoint (user_request)"),
    def(RATE_LIMITED_TOTAL, Counter, Unit::Count, &[], "requests rejected by the rate limiter"),
    def(ERRORS_TOTAL, Counter, Unit::Count, &[l::CATEGORY], "error answers of the http server, by category"),
    def(FLAG_EVALUATIONS_TOTAL, Counter, Unit::Count, &[l::FLAG, l::RESULT], "feature flag evaluations, by flag and result"),
    def(ROLLOUT_PERCENT, Gauge, Unit::Percent, &[l::FLAG], "percentage of subjects a rollout currently admits"),
    def(COHORT_REQUESTS_TOTAL, Counter, Unit::Count, &[l::FLAG, l::VARIANT, l::OUTCOME], "plan and run requests of a rollout cohort, by flag, variant (on, off) and outcome (ok, error: a 5xx answer)"),
    def(COHORT_REQUEST_DURATION_SECONDS, Histogram, Unit::Seconds, &[l::FLAG, l::VARIANT], "wall time of a plan or run request of a rollout cohort"),
    def(COHORT_TASKS_TOTAL, Counter, Unit::Count, &[l::FLAG, l::VARIANT, l::STATUS], "tasks finished by runs of a rollout cohort, by flag, variant (on, off) and status (succeeded, failed)"),
    def(COHORT_TASK_DURATION_SECONDS, Histogram, Unit::Seconds, &[l::FLAG, l::VARIANT], "time on its agents of a task that succeeded in a run of a rollout cohort (waits for a call slot excluded)"),
    def(RUNS_DELETED_TOTAL, Counter, Unit::Count, &[], "finished runs deleted from the store after their retention"),
    def(CONNECTIONS_REFUSED_TOTAL, Counter, Unit::Count, &[l::REASON], "connections refused at accept, by the cap that refused them (reason)"),
    def(CONNECTIONS_EVICTED_TOTAL, Counter, Unit::Count, &[l::REASON], "connections closed before their first complete request to make room under a cap, by the cap (reason)"),
    def(CONNECTIONS_OPEN, Gauge, Unit::Count, &[], "connections open now"),
    def(RUNS_IN_PROGRESS, Gauge, Unit::Count, &[], "runs accepted or resumed and not finished (server.max_runs)"),
    def(PLANNING_IN_PROGRESS, Gauge, Unit::Count, &[], "requests being planned now (server.max_planning)"),
    def(RUNS_TOTAL, Counter, Unit::Count, &[l::STATUS], "runs ended, by status (succeeded, failed, cancelled, interrupted)"),
    def(OTLP_EXPORT_FAILURES_TOTAL, Counter, Unit::Count, &[], "otlp trace exports that failed or timed out"),
    def(OTLP_SPANS_DROPPED_TOTAL, Counter, Unit::Count, &[l::REASON], "spans lost before the collector, by reason (queue_full, export_failed)"),
    def(PROCESS_START_TIME_SECONDS, Gauge, Unit::Seconds, &[], "start time of the process since unix epoch in seconds"),
    def(PROCESS_RESIDENT_MEMORY_BYTES, Gauge, Unit::Bytes, &[], "resident memory size in bytes"),
];

/// Looks a metric up by its exported name. Histogram series suffixes (`_bucket`, `_sum`,
/// `_count`) are accepted, so any name found in a PromQL expression resolves.
pub fn find(name: &str) -> Option<&'static MetricDef> {
    CATALOGUE.iter().find(|d| d.name == name).or_else(|| {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))?;
        CATALOGUE
            .iter()
            .find(|d| d.name == base && d.kind == MetricKind::Histogram)
    })
}

/// Registers the description and unit of every catalogued metric with the current
/// recorder (global, or the local one inside `metrics::with_local_recorder`). Call it once
/// after installing a recorder; [`crate::install_prometheus_recorder`] does.
pub fn describe_all() {
    for d in CATALOGUE {
        match d.kind {
            MetricKind::Counter => metrics::describe_counter!(d.name, d.unit, d.help),
            MetricKind::Gauge => metrics::describe_gauge!(d.name, d.unit, d.help),
            MetricKind::Histogram => metrics::describe_histogram!(d.name, d.unit, d.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_suffixed_by_kind() {
        let mut seen = HashSet::new();
        for d in CATALOGUE {
            assert!(seen.insert(d.name), "duplicate {}", d.name);
            assert!(
                d.name.starts_with("genesis_") || d.name.starts_with("process_"),
                "{}",
                d.name
            );
            assert!(
                d.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                d.name
            );
            match d.kind {
                MetricKind::Counter => assert!(d.name.ends_with("_total"), "{}", d.name),
                MetricKind::Histogram => {
                    assert!(d.name.ends_with("_seconds"), "{}", d.name);
                    assert_eq!(d.unit, Unit::Seconds);
                }
                // A gauge named like a counter misleads PromQL users and linters
                // (`genesis_cost_usd_total` was one).
                MetricKind::Gauge => assert!(!d.name.ends_with("_total"), "{}", d.name),
            }
            assert!(!d.help.is_empty());
        }
    }

    #[test]
    fn find_resolves_histogram_series() {
        assert_eq!(
            find("genesis_tasks_total").unwrap().kind,
            MetricKind::Counter
        );
        assert_eq!(
            find("genesis_request_duration_seconds_bucket")
                .unwrap()
                .name,
            REQUEST_DURATION_SECONDS
        );
        assert!(find("genesis_tasks_total_bucket").is_none());
        assert!(find("genesis_nope").is_none());
    }
}
