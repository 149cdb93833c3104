//! Endpoint handlers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::Stream;
use genesis::GenesisError;
use genesis::core::Usd;
use genesis::run::{RunEvent, RunStatus};
use genesis::security::SecurityError;
use genesis::store::{ListCursor, RunStore, StoreError, StoredEvent};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::middleware::{Caller, CohortSlot, Commit};
use crate::runs::StartRunError;
use crate::{AppState, json_error};

/// Body of `POST /api/tasks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// The request, in words (at most `security.limits.max_request_chars`).
    pub description: String,
    /// Extra context appended to the request.
    #[serde(default)]
    pub context: Option<String>,
    /// `plan` (default): return the plan. `run`: journal and execute it (202).
    #[serde(default)]
    pub mode: Mode,
    /// Run budget in US dollars.
    #[serde(default)]
    pub budget_usd: Option<f64>,
    /// Makes retried POSTs safe: the same key from the same caller returns the same
    /// run. 1 to 255 visible ASCII characters (`!` to `~`).
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// What `POST /api/tasks` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Return the plan.
    #[default]
    Plan,
    /// Plan, journal and execute.
    Run,
}

/// A JSON error body: `{"error": {"rule", "message", "category"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Error detail.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The rule or limit that refused the request.
    pub rule: String,
    /// Human-readable message naming the value.
    pub message: String,
    /// Error category.
    #[schema(value_type = genesis::core::ErrorCategory)]
    pub category: &'static str,
}

/// `202` body of a run submission.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Accepted {
    /// The run.
    run_id: String,
    /// `running` for a new run; for an existing one (`existing: true`), its stored
    /// status (`succeeded`, `failed`, `cancelled` once it ended).
    #[schema(value_type = RunStatus)]
    status: &'static str,
    /// True when an earlier submission with the same idempotency key created it.
    existing: bool,
    /// Where to read, follow and cancel the run.
    links: Links,
}

/// The paths of a run.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Links {
    /// `GET`: the run.
    #[serde(rename = "self")]
    this: String,
    /// `GET`: its events (server-sent events).
    events: String,
    /// `POST`: cancel it.
    cancel: String,
}

/// Runs `f` on the blocking pool: store calls block (disk reads, fsynced commits, the
/// store's lock) and must not stall the async workers that serve every other request.
/// At most a few at once (`STORE_CALLS_IN_FLIGHT`): the others wait without a thread.
async fn blocking<T, F>(state: &Arc<AppState>, f: F) -> Result<T, Response>
where
    F: FnOnce(&AppState) -> T + Send + 'static,
    T: Send + 'static,
{
    committed(state, None, f).await
}

/// As [`blocking`], for a write whose outcome the client must be told (journaling a
/// run, a cancel request): once the call has its store-call slot, `commit` is set, so
/// the request timeout no longer cuts the request short and the answer says what the
/// write did (see [`crate::middleware::request_timeout`]). Without `commit` (a route
/// outside that middleware) it is [`blocking`].
async fn committed<T, F>(
    state: &Arc<AppState>,
    commit: Option<&Commit>,
    f: F,
) -> Result<T, Response>
where
    F: FnOnce(&AppState) -> T + Send + 'static,
    T: Send + 'static,
{
    // The semaphore is never closed; should it be, the call goes ahead unlimited. The
    // permit moves into the job: a request dropped while its job still blocks (timeout,
    // client gone) does not free the slot for another thread before the job ends.
    let slot = Arc::clone(&state.store_calls).acquire_owned().await.ok();
    if let Some(commit) = commit {
        commit.set();
    }
    let state = Arc::clone(state);
    // The blocking thread works inside the request's span: its log lines carry the
    // correlation id, and a run started there is a child of the request's trace.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        span.in_scope(|| f(&state))
    })
    .await
    .map_err(|e| {
        json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "run_store",
            format!("a run store call ended abnormally: {e}"),
            "internal",
        )
    })
}

/// The longest idempotency key, in bytes.
pub(crate) const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// The JSON error of a `/api/tasks/{id}...` path whose id does not read (rule `path`: a
/// parameter that is not UTF-8 once percent-decoded), instead of axum's plain-text
/// rejection.
fn path_error(e: &PathRejection) -> Response {
    json_error(
        e.status(),
        "path",
        format!("the request path is not valid: {}", e.body_text()),
        "validation",
    )
}

/// The idempotency key of a submission: the body's `idempotency_key`, else the
/// `Idempotency-Key` header. 1 to [`MAX_IDEMPOTENCY_KEY_BYTES`] bytes, each visible
/// ASCII (`!` to `~`): what a header carries as it is, with nothing to normalise
/// (UUIDs, ULIDs, hex and base64 fit). Anything else is refused (rule
/// `idempotency_key`, naming the length or the first byte that is not allowed, see
/// [`idempotency_key_error`]), not ignored: a retry whose key went unread would run the
/// work twice. The key is never echoed.
fn idempotency_key(body: Option<String>, headers: &HeaderMap) -> Result<Option<String>, String> {
    let key = match body {
        Some(key) => key.into_bytes(),
        None => match headers.get("idempotency-key") {
            Some(v) => v.as_bytes().to_vec(),
            None => return Ok(None),
        },
    };
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(format!("has {} bytes", key.len()));
    }
    if let Some(at) = key.iter().position(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "has a byte that is not visible ASCII at byte {}",
            at + 1
        ));
    }
    // All visible ASCII: valid UTF-8.
    Ok(String::from_utf8(key).ok())
}

/// The 400 of an idempotency key that [`idempotency_key`] refused, saying `why`.
fn idempotency_key_error(why: &str) -> Response {
    json_error(
        StatusCode::BAD_REQUEST,
        "idempotency_key",
        format!(
            "the idempotency key {why}: use 1 to {MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters"
        ),
        "validation",
    )
}

fn genesis_error(e: &GenesisError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_error(status, &e.rule(), e.to_string(), e.category().as_str());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    r
}

#[utoipa::path(get, path = "/health", responses((status = 200, description = "the process is alive", body = crate::openapi::wire::Health)))]
pub(crate) async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "store": store_writes(&state),
    }))
}

/// Whether the run store takes writes, as far as it knows (its last write failure, see
/// [`RunStore::write_failure`]; no store call): `{"writable", "error"}`.
fn store_writes(state: &AppState) -> serde_json::Value {
    let failure = state.store.write_failure();
    serde_json::json!({"writable": failure.is_none(), "error": failure})
}

#[utoipa::path(get, path = "/ready", responses((status = 200, description = "ready", body = crate::openapi::wire::Readiness), (status = 503, description = "not ready: a check failed (`reason.rule` is `store_unwritable` while the run store does not take writes, `budget_state` while today's spend cannot be read from it)", body = crate::openapi::wire::Readiness)))]
pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    // One hop to the blocking pool for the checks that touch the disk. The write probe
    // is one small committed write (see `RunStore::probe_write`); what decides is the
    // store's last write failure, which the probe and every run write update.
    let (store, unwritable, flags, budget) = blocking(&state, |s| {
        let store = s.store.ping();
        // At most one probe a second while the store takes writes, however often
        // /ready is asked; at every call once a write failed, so its recovery is seen
        // at the next call (a probe that fails costs no sync).
        if s.store.write_failure().is_some() || s.ready_probe_due() {
            let _ = s.store.probe_write();
        }
        // Today's spend: known, or read again at most every few seconds while it fails.
        let budget = s.runs.try_today().err();
        (
            store,
            s.store.write_failure(),
            flags_file_applies(s),
            budget,
        )
    })
    .await
    .unwrap_or((false, None, false, None));
    let shutting_down = state.is_shutting_down();
    let ok = store && unwritable.is_none() && flags && budget.is_none() && !shutting_down;
    let mut body = serde_json::json!({
        "ready": ok,
        "checks": {
            "store": store,
            "store_writable": unwritable.is_none(),
            "budget_state": budget.is_none(),
            "flags": flags,
            "shutting_down": shutting_down,
        },
    });
    if let Some(error) = unwritable {
        body["reason"] = serde_json::json!({
            "rule": "store_unwritable",
            "message": format!("the run store does not take writes: {error}"),
        });
    } else if let Some(error) = budget {
        body["reason"] = serde_json::json!({
            "rule": "budget_state",
            "message": genesis::core::error_chain(&error),
        });
    }
    let body = Json(body);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

/// The `flags` check of `/ready`: the flags in force are the ones in the flags file.
///
/// With hot reload on (`flags.reload_interval` not zero) and the file present, the file
/// must be one the reloader accepts: it reads, parses, validates and takes the
/// environment overrides in force. When it does not, the reloader keeps the previous
/// flags (and logs the error at every tick), so what the operator wrote — a kill switch,
/// a rollout step — is not in force. Without hot reload the file is read only at start,
/// and without a file there is nothing to reload: the check passes. False when the
/// orchestrator has no flags at all. The flags crate answers it
/// ([`genesis::flags::SharedFlags::check_file`]): one `stat` of the file while it is
/// unchanged, a read and parse when it changed (once per version of the file).
fn flags_file_applies(s: &AppState) -> bool {
    let Some(flags) = s.orchestrator.flags() else {
        return false;
    };
    if s.config.flags.reload_interval.is_zero() {
        return true;
    }
    flags.check_file().is_ok()
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus exposition text", body = String, content_type = "text/plain"), (status = 404, description = "rule `metrics_disabled`: no Prometheus recorder in this process", body = ErrorBody)))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    // Gauges that are states, not events: refresh them at scrape time (the
    // degradation level too, which requests only re-judge when they plan).
    crate::export_breaker_states(&state.orchestrator);
    // Today's spend as far as it is known (a store call only while it is not).
    let today = blocking(&state, |s| s.runs.try_today().ok())
        .await
        .ok()
        .flatten();
    state.orchestrator.refresh_degradation(today.as_ref());
    genesis::telemetry::process::record_resident_memory();
    // The router counts its cache lookups itself; export its monotonic totals as they are.
    let cache = state.orchestrator.router().cache_stats();
    metrics::counter!(genesis::telemetry::catalogue::ROUTING_CACHE_HITS_TOTAL).absolute(cache.hits);
    metrics::counter!(genesis::telemetry::catalogue::ROUTING_CACHE_MISSES_TOTAL)
        .absolute(cache.misses);
    match &state.metrics {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => json_error(
            StatusCode::NOT_FOUND,
            "metrics_disabled",
            "no Prometheus recorder is installed in this process".into(),
            "config",
        ),
    }
}

#[utoipa::path(
    post,
    path = "/api/tasks",
    request_body = CreateTask,
    responses(
        (status = 200, description = "plan mode: the plan", body = genesis::Plan),
        (status = 202, description = "run mode: accepted and journaled (once its write started, answered after it, past the request timeout)", body = Accepted),
        (status = 400, description = "rejected input, naming the rule (e.g. `idempotency_key`: not 1 to 255 visible ASCII characters)", body = ErrorBody),
        (status = 401, description = "missing or invalid credentials", body = ErrorBody),
        (status = 413, description = "body larger than security.limits.max_body_bytes", body = ErrorBody),
        (status = 415, description = "rule `content_type`: the body is not declared JSON (`Content-Type: application/json` or `application/…+json`)", body = ErrorBody),
        (status = 422, description = "the plan failed validation (rule `plan_validation`), run mode and no backend serves some task's agent or alternatives (rule `agent_backend`), or the idempotency key names a run created for another request (rule `idempotency_key_reused`): the error, and with `plan_validation` the rejected plan", body = crate::openapi::wire::Unprocessable),
        (status = 429, description = "rate limited, daily budget spent, or the caller (an anonymous caller: its client IP) already has server.max_runs_per_subject runs in progress (rule `max_runs_per_subject`, with Retry-After)", body = ErrorBody),
        (status = 503, description = "kill switch, shutdown, overload, the server already has server.max_runs runs in progress (rule `max_runs`, with Retry-After), today's spend cannot be read from the run store (rule `budget_state`, with Retry-After; plan mode still works), request timeout or run store failure: never for a journaled run", body = ErrorBody)
    )
)]
#[allow(
    clippy::too_many_arguments,
    reason = "an axum handler: each argument is one extractor"
)]
pub(crate) async fn create_task(
    State(state): State<Arc<AppState>>,
    commit: Option<Extension<Commit>>,
    caller: Option<Extension<Caller>>,
    cohort_slot: Option<Extension<CohortSlot>>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(refusal) = query_refused(&uri, "POST /api/tasks") {
        return refusal;
    }
    let max = state.config.security.limits.max_body_bytes;
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return body_too_large(max, None);
        }
        Err(e) => return json_error(e.status(), "body", e.body_text(), "validation"),
    };
    if let Some(refusal) = not_json_content_type(&headers) {
        return refusal;
    }
    // Read as JSON first, then as a task: so JSON that is not a task is told apart from
    // text that is not JSON in every case (serde_json reports `"mode": null` as a syntax
    // error when reading the task directly, audit O11 M2), and an array is not read as
    // a task by position (audit O11 M1).
    let value: serde_json::Value = match state.config.security.limits.parse_json_body(&body) {
        Ok(v) => v,
        Err(SecurityError::BodyTooLarge { len, .. }) => {
            return body_too_large(max, u64::try_from(len).ok());
        }
        Err(SecurityError::InvalidJson { source }) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "json_body",
                json_body_message(&source),
                "validation",
            );
        }
        Err(e) => {
            let message = match std::error::Error::source(&e) {
                Some(source) => format!("{e}: {source}"),
                None => e.to_string(),
            };
            return json_error(StatusCode::BAD_REQUEST, "json_body", message, "validation");
        }
    };
    if !value.is_object() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "json_body",
            format!(
                "request body is json but not a task: a task is a JSON object, not {}",
                json_kind(&value)
            ),
            "validation",
        );
    }
    let req: CreateTask = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "json_body",
                format!("request body is json but not a task: {e}"),
                "validation",
            );
        }
    };
    let budget = match req.budget_usd.map(Usd::new).transpose() {
        Ok(b) => b,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "budget_usd",
                e.to_string(),
                "validation",
            );
        }
    };
    let request = req.description.clone();
    // What the run's plan will record as its request: a retry with the same idempotency
    // key must ask the same (audit O11 M5).
    let asked = genesis::PlanOptions {
        context: req.context.clone(),
        ..genesis::PlanOptions::default()
    }
    .full_request(&req.description)
    .into_owned();
    let idempotency = match idempotency_key(req.idempotency_key.clone(), &headers) {
        Ok(key) => key,
        Err(why) => return idempotency_key_error(&why),
    };
    // The subject the auth layer verified: runs are journaled, idempotency keys kept
    // and feature flags evaluated for it.
    let subject = Caller::from_extension(caller).subject().to_owned();
    // Anonymous callers' runs are counted per client IP (`server.max_runs_per_subject`).
    let client_ip =
        crate::middleware::client_ip_of(&state, connect.map(|Extension(c)| c.0), &headers);
    if req.mode == Mode::Run {
        if state.is_shutting_down() {
            let mut r = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down and accepts no new runs".into(),
                "resource",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        }
        if state.orchestrator.flag("read_only_mode", &subject) == Some(true) {
            return genesis_error(&GenesisError::Disabled {
                flag: "read_only_mode".into(),
                state: "on",
            });
        }
        // Idempotent retries answer before any new work. A key is its subject's own.
        if let Some(key) = idempotency.clone()
            && let Ok(Ok(Some((existing, stored)))) = {
                let subject = subject.clone();
                blocking(&state, move |s| {
                    find_by_key(s.runs.store().as_ref(), &subject, &key)
                })
                .await
            }
        {
            if let Some(refusal) = key_reused(&idempotency, &existing.id, stored, &asked) {
                return refusal;
            }
            return accepted(existing.id.to_string(), existing.status, true);
        }
        // Audit S10 #5: fail closed while today's spend cannot be read (it used to
        // start again from $0). Off the async workers: it may read the store.
        let today = match blocking(&state, |s| s.runs.try_today()).await {
            Ok(Ok(today)) => today,
            Ok(Err(e)) => return run_refused(StartRunError::from(e)),
            Err(response) => return response,
        };
        if let Some(limit) = state.config.budget.per_day {
            let spent = today.spent();
            if spent >= limit {
                return until_tomorrow(json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "budget_day",
                    format!("today's spend {spent} has reached the daily budget {limit}"),
                    "resource",
                ));
            }
        }
        let subject_day = {
            let subject = subject.clone();
            blocking(&state, move |s| s.runs.subject_today(&subject))
                .await
                .ok()
                .flatten()
        };
        if let (Some(limit), Some(day)) = (state.config.budget.per_subject_day, subject_day) {
            let spent = day.spent();
            if spent >= limit {
                return until_tomorrow(json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "budget_subject_day",
                    format!(
                        "today's spend of {subject} {spent} has reached the per-subject daily budget {limit} (budget.per_subject_day)"
                    ),
                    "resource",
                ));
            }
        }
        // A run the limits on runs in progress would refuse now is refused before it
        // is planned: a full server spends nothing on it. Starting the run checks again.
        if let Err(e) = state.runs.check_admission(&subject, Some(client_ip)) {
            return run_refused(e);
        }
    }
    // From here the request evaluates the pipeline's flags for its subject: it is in
    // the subject's rollout cohorts (counted when it is answered), and so is its run.
    let cohorts = state.orchestrator.cohorts(&subject);
    if let Some(Extension(slot)) = &cohort_slot {
        slot.set(cohorts);
    }
    // Without today's spend (it cannot be read: a run was refused above) a plan is
    // checked without the day's budget.
    let (day, subject_day) = {
        let subject = subject.clone();
        blocking(&state, move |s| {
            (s.runs.try_today().ok(), s.runs.subject_today(&subject))
        })
        .await
        .unwrap_or((None, None))
    };
    let options = genesis::PlanOptions {
        budget,
        subject: Some(subject.clone()),
        day,
        subject_day,
        context: req.context.clone(),
    };
    // What LLM planning cost: a journaled run starts from it; any other end keeps it
    // in the store's spend outside runs (the day's spend after a restart).
    let (planned, charge) = match plan_kept(&state, request, options).await {
        Ok(planned) => planned,
        Err(response) => return response,
    };
    let plan = match planned {
        Ok(p) => p,
        Err(GenesisError::InvalidPlan { summary, plan }) => {
            charge.keep().await;
            crate::count_error("validation");
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(serde_json::json!({
                    "error": {"rule": "plan_validation", "message": summary, "category": "validation"},
                    "plan": plan,
                })),
            )
                .into_response();
        }
        Err(e) => return genesis_error(&e),
    };
    if req.mode == Mode::Plan {
        charge.keep().await;
        return (StatusCode::OK, Json(plan)).into_response();
    }
    // A run whose tasks no backend can carry out would be accepted and then fail them
    // all ("no backend is configured for agent ..."): refuse it before journaling.
    // The orchestrator's own check (`execute` makes it too): 422 `agent_backend`.
    if let Err(e) = state.orchestrator.check_served(&plan) {
        charge.keep().await;
        return genesis_error(&e);
    }
    // From here the answer says what the store did: the run is journaled (202) or
    // not (503 `run_store`), never a timeout while the write goes on.
    let commit = commit.map(|Extension(c)| c);
    // The request's correlation id (`request_context` set the header to the id it uses)
    // goes on the run's `orchestrate` span.
    let correlation = headers
        .get(genesis::telemetry::CORRELATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // The planning's cost goes with the journaling: the run carries it, or (nothing
    // journaled) it is kept right there, on the same thread, whatever becomes of the
    // request meanwhile.
    let key = idempotency.clone();
    let started = committed(&state, commit.as_ref(), move |s| {
        let started = s.runs.start_in(
            plan,
            budget,
            key.as_deref(),
            &subject,
            Some(client_ip),
            correlation.as_deref(),
            cohorts,
        );
        match &started {
            Ok((_, false)) => charge.carried_by_run(),
            _ => charge.keep_here(),
        }
        started
    })
    .await;
    match started {
        Err(response) => response,
        Ok(Ok((id, false))) => accepted(id.to_string(), RunStatus::Running, false),
        // Another submission with the same key journaled it meanwhile: say where it is,
        // unless it asked something else.
        Ok(Ok((id, true))) => {
            let key = id.to_string();
            let found = blocking(&state, move |s| {
                let store = s.runs.store();
                let summary = store.run_summary(&key).ok().flatten();
                (summary, stored_request(store.as_ref(), &key))
            })
            .await
            .ok();
            let (summary, stored) = found.unwrap_or((None, None));
            if let Some(refusal) = key_reused(&idempotency, &id, stored, &asked) {
                return refusal;
            }
            accepted(
                id.to_string(),
                summary.map_or(RunStatus::Running, |r| r.status),
                true,
            )
        }
        Ok(Err(e)) => run_refused(e),
    }
}

/// Plans `request` in a task of its own, which the server's `drain` waits for (the
/// state's planning tracker), and hands the plan back with what its LLM calls cost.
/// Planning a client hung up on (or the request timeout cut off) is not dropped with
/// the request: it still ends at `planning.llm_timeout`, and the task keeps its cost
/// in the store, as money spent must be whatever the client does.
///
/// At most `server.max_planning` requests are planned at once: the request waits for a
/// slot here (a request dropped while it waits plans nothing). The planning itself runs
/// on the blocking pool ([`tokio::runtime::Handle::block_on`] there): decomposing,
/// routing and validating a long request is synchronous CPU work (audit P9 F3: 124-214
/// ms for a 5,000-character request), which on the async workers stalled `/health`,
/// `/ready` and `/metrics` for over a second. The planner stays async: an LLM
/// planner's calls and `planning.llm_timeout` run on the runtime's IO and timer drivers
/// as before, the thread only parks while they wait.
///
/// # Errors
/// A 500 (rule `planning`) when the planning task ended abnormally (it panicked).
async fn plan_kept(
    state: &Arc<AppState>,
    request: String,
    options: genesis::PlanOptions,
) -> Result<(Result<genesis::Plan, GenesisError>, PlanningCharge), Response> {
    use tracing::Instrument as _;
    let slot = PlanningSlot::acquire(state).await;
    let (planned, answer) = tokio::sync::oneshot::channel();
    let s = Arc::clone(state);
    let span = tracing::Span::current();
    let runtime = tokio::runtime::Handle::current();
    let planning_span = span.clone();
    let planning = async move {
        let subject = options.subject.clone();
        let planner = Arc::clone(&s);
        let planned_off_workers = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            runtime.block_on(
                planner
                    .orchestrator
                    .plan_with(&request, &options)
                    .instrument(planning_span),
            )
        })
        .await;
        // It panicked: the request is answered 500 (its sender is dropped here).
        let Ok(result) = planned_off_workers else {
            return;
        };
        let spend = match &result {
            Ok(plan) => plan.planning,
            Err(GenesisError::InvalidPlan { plan, .. }) => plan.planning,
            Err(_) => None,
        };
        let charge = PlanningCharge::new(&s, spend, subject);
        // The request is gone: nobody else will keep the cost.
        if let Err((_, charge)) = planned.send((result, charge)) {
            charge.keep().await;
        }
    };
    state.planning.spawn(planning.instrument(span));
    answer.await.map_err(|_| {
        json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "planning",
            "the planning of the request ended abnormally".into(),
            "internal",
        )
    })
}

/// One of the `server.max_planning` planning slots, held while a request is planned;
/// dropping it gives the slot back and updates `genesis_planning_in_progress`.
struct PlanningSlot {
    slots: Arc<tokio::sync::Semaphore>,
    max: usize,
    /// `None` only if the semaphore were closed (it never is): planning goes ahead.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl PlanningSlot {
    /// Waits for a free slot.
    async fn acquire(state: &AppState) -> PlanningSlot {
        let slots = Arc::clone(&state.planning_slots);
        let permit = Arc::clone(&slots).acquire_owned().await.ok();
        let slot = PlanningSlot {
            slots,
            max: state.max_planning,
            permit,
        };
        slot.export();
        slot
    }

    fn export(&self) {
        let busy = self.max.saturating_sub(self.slots.available_permits());
        metrics::gauge!(genesis::telemetry::catalogue::PLANNING_IN_PROGRESS).set(busy as f64);
    }
}

impl Drop for PlanningSlot {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.export();
    }
}

/// The answer to a run refused by a limit on runs in progress before anything was
/// journaled: 429 `max_runs_per_subject` (this caller's, or for an anonymous caller
/// its client IP's, runs) or 503 `max_runs` (the server's), both with `Retry-After`
/// ([`RUN_RETRY_AFTER`]); other errors as the run store or the plan reports them.
fn run_refused(e: StartRunError) -> Response {
    let (status, rule) = match &e {
        StartRunError::Store(e) => {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "run_store",
                format!(
                    "the run was not accepted: {}",
                    genesis::core::error_chain(e)
                ),
                "resource",
            );
        }
        StartRunError::Genesis(e) => return genesis_error(e),
        StartRunError::SubjectBusy { .. } | StartRunError::AnonymousBusy { .. } => {
            (StatusCode::TOO_MANY_REQUESTS, "max_runs_per_subject")
        }
        StartRunError::ServerBusy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "max_runs"),
        StartRunError::BudgetState(e) => {
            let mut r = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "budget_state",
                genesis::core::error_chain(e),
                "resource",
            );
            if let Ok(v) =
                HeaderValue::from_str(&crate::runs::BUDGET_STATE_RETRY.as_secs().max(1).to_string())
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    };
    let mut r = json_error(status, rule, e.to_string(), "resource");
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RUN_RETRY_AFTER),
    );
    r
}

/// `Retry-After` (seconds) of a run refused by `server.max_runs` or
/// `server.max_runs_per_subject`: a 9-task run takes about half a second alone on the
/// reference host, so a few seconds frees slots without clients hammering.
pub(crate) const RUN_RETRY_AFTER: &str = "5";

/// What LLM planning of one request cost, until a run carries it (a journaled run
/// starts from its plan's planning cost) or the store keeps it in its spend outside
/// runs (the day's in-memory total holds it already), so today's spend read back after
/// a restart includes it. Dropped before either (the request was dropped), it is
/// written then: money spent is never lost with a request. A failed write is logged.
struct PlanningCharge {
    state: Arc<AppState>,
    cost: Usd,
    /// Whom the planning was for (the day spend of `budget.per_subject_day`).
    subject: Option<String>,
}

impl PlanningCharge {
    fn new(
        state: &Arc<AppState>,
        planning: Option<genesis::PlanningSpend>,
        subject: Option<String>,
    ) -> Self {
        PlanningCharge {
            state: Arc::clone(state),
            cost: planning.map_or(Usd::ZERO, |p| p.cost),
            subject,
        }
    }

    /// The cost not yet carried nor kept, now in the caller's hands.
    fn take(&mut self) -> Usd {
        std::mem::replace(&mut self.cost, Usd::ZERO)
    }

    /// The run journaled with the plan carries the cost.
    fn carried_by_run(mut self) {
        self.take();
    }

    /// Keeps the cost in the store and waits for the write, which goes on should the
    /// request be dropped meanwhile (the cost stays in `self` until a store-call slot
    /// is had: dropped before, it is written on drop).
    async fn keep(mut self) {
        if self.cost <= Usd::ZERO {
            return;
        }
        // The semaphore is never closed; should it be, the write goes ahead unlimited.
        let slot = Arc::clone(&self.state.store_calls)
            .acquire_owned()
            .await
            .ok();
        let cost = self.take();
        let state = Arc::clone(&self.state);
        let subject = self.subject.take();
        let written = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            record_planning_spend(&state, cost, subject.as_deref());
        })
        .await;
        if written.is_err() {
            tracing::error!(cost = %cost, "cannot record the planning spend in the run store; it counts today until a restart");
        }
    }

    /// Keeps the cost in the store from this (blocking) thread.
    fn keep_here(mut self) {
        let cost = self.take();
        record_planning_spend(&self.state, cost, self.subject.as_deref());
    }
}

impl Drop for PlanningCharge {
    fn drop(&mut self) {
        let cost = self.take();
        if cost <= Usd::ZERO {
            return;
        }
        let state = Arc::clone(&self.state);
        let subject = self.subject.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || {
                    record_planning_spend(&state, cost, subject.as_deref());
                });
            }
            Err(_) => record_planning_spend(&state, cost, subject.as_deref()),
        }
    }
}

/// Writes `cost` to the store's spend outside runs (nothing for $0); a failure is
/// logged: no answer depends on it.
fn record_planning_spend(state: &AppState, cost: Usd, subject: Option<&str>) {
    if cost <= Usd::ZERO {
        return;
    }
    if let Err(e) = state.runs.store().record_spend(cost, subject) {
        tracing::error!(error = %genesis::core::error_chain(&e), cost = %cost, "cannot record the planning spend in the run store; it counts today until a restart");
    }
}

/// The 413 of a body over `security.limits.max_body_bytes` (`max`), naming the size
/// received when it is known (`declared`: the `Content-Length`; a body streamed without
/// one is stopped at the limit, so all that is known is that it is larger).
pub(crate) fn body_too_large(max: usize, declared: Option<u64>) -> Response {
    let size = match declared {
        Some(n) => format!("the request body has {n} bytes"),
        None => format!("the request body has more than {max} bytes"),
    };
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "max_body_bytes",
        format!("{size}, above security.limits.max_body_bytes {max} (rule: max_body_bytes)"),
        "validation",
    )
}

/// The refusal of a `POST /api/tasks` whose body is not declared JSON: 415 `content_type` unless
/// `Content-Type` is `application/json` or `application/<something>+json` (parameters
/// such as `charset` aside). A missing type is refused too: a web page can send a body
/// with no type, or as `text/plain` or a form, to a server on the user's machine without
/// the browser asking first (a CORS "simple request"); a JSON type it cannot send
/// without a preflight, which this server never grants (audit O11 M4).
fn not_json_content_type(headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let json = given.as_deref().is_some_and(|t| {
        let media = t
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        media == "application/json"
            || media
                .strip_prefix("application/")
                .is_some_and(|sub| sub.ends_with("+json"))
    });
    if json {
        return None;
    }
    let got = match &given {
        Some(t) => format!("got {t:?}"),
        None => "got none".to_owned(),
    };
    Some(json_error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "content_type",
        format!("POST /api/tasks takes a JSON body: send Content-Type: application/json ({got})"),
        "validation",
    ))
}

/// What kind of JSON value `v` is, for messages.
fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The message of a body that `CreateTask` cannot be read from: not JSON at all, or
/// JSON that is not a task (a missing or unknown field, a value of the wrong type or a
/// bad `mode`: serde names which, and where).
fn json_body_message(source: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match source.classify() {
        Category::Data => format!("request body is json but not a task: {source}"),
        // Valid JSON (RFC 8259 sets no range) that serde_json files as a syntax error
        // (verification V11 L-1).
        Category::Syntax if source.to_string().starts_with("number out of range") => {
            format!("request body is json but not a task: a {source}")
        }
        Category::Syntax | Category::Eof | Category::Io => {
            format!("request body is not valid json: {source}")
        }
    }
}

/// The run `subject` created with idempotency key `key`, and its full request when it
/// still reads back.
fn find_by_key(
    store: &dyn RunStore,
    subject: &str,
    key: &str,
) -> Result<Option<(genesis::store::RunSummary, Option<String>)>, StoreError> {
    // The store resolves keys on create; a lookup here lets retries skip planning.
    let Some(id) = store.run_for_idempotency_key(Some(subject), key)? else {
        return Ok(None);
    };
    Ok(store
        .run_summary(&id)?
        .map(|summary| (summary, stored_request(store, &id))))
}

/// The full request stored with run `id` (its plan's `request`); `None` when the run
/// does not read back (then a retry is not compared, as before).
fn stored_request(store: &dyn RunStore, id: &str) -> Option<String> {
    store.get_run(id).ok().flatten().map(|run| run.request)
}

/// 422 `idempotency_key_reused` when the run an idempotency key already names was
/// created for another request than `asked` (description and context): returning that
/// run would tell the client its new request was accepted (audit O11 M5).
fn key_reused(
    key: &Option<String>,
    run: &impl std::fmt::Display,
    stored: Option<String>,
    asked: &str,
) -> Option<Response> {
    let stored = stored?;
    if stored == asked {
        return None;
    }
    let key = key.as_deref().unwrap_or_default();
    Some(json_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        format!(
            "idempotency key {key:?} was used for {run} with another request: retry with the same description and context, or use a new key for a new request"
        ),
        "validation",
    ))
}

/// The 202 of a submission: a new run (`running`), or the run an earlier submission
/// with the same idempotency key created (`existing`), with its stored status.
fn accepted(id: String, status: RunStatus, existing: bool) -> Response {
    let body = Accepted {
        links: Links {
            this: format!("/api/tasks/{id}"),
            events: format!("/api/tasks/{id}/events"),
            cancel: format!("/api/tasks/{id}/cancel"),
        },
        run_id: id.clone(),
        status: status.as_str(),
        existing,
    };
    let mut r = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/tasks/{id}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

#[utoipa::path(get, path = "/api/tasks/{id}", params(("id" = String, Path, description = "run id")),
    responses(
        (status = 200, description = "the run: status, plan, task states, cost, degradation; for a run whose stored plan or tasks no longer decode, what still reads (status, request, cost) and an `error` with rule `run_store_corrupt`", body = crate::openapi::wire::RunAnswer),
        (status = 400, description = "rule `path`: the id is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 401, description = "missing or invalid credentials", body = ErrorBody),
        (status = 404, description = "rule `unknown_run`: no such run, or another subject's (answered alike)", body = ErrorBody),
        (status = 409, description = "rule `run_store_corrupt`: not even the run's status reads back", body = ErrorBody)
    ))]
pub(crate) async fn get_task(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match path {
        Ok(Path(id)) => id,
        Err(e) => return path_error(&e),
    };
    let caller = Caller::from_extension(caller);
    let show_subject = caller.sees_all();
    let key = id.clone();
    let run = match blocking(&state, move |s| {
        let store = s.runs.store();
        // Another subject's run reads as a missing one (the check reads the row's
        // subject alone, so it holds for a run that no longer decodes too).
        if !store.run_in_scope(&key, caller.scope())? {
            return Ok(None);
        }
        store.get_run(&key)
    })
    .await
    {
        Ok(run) => run,
        Err(response) => return response,
    };
    match run {
        Ok(Some(run)) => {
            let degradation = run.plan.degradation;
            let partial = run.is_partial();
            let mut v = with_subject(&run, show_subject.then_some(run.subject.as_deref()));
            if let Some(o) = v.as_object_mut() {
                o.insert("partial".into(), serde_json::Value::Bool(partial));
                o.insert(
                    "degradation".into(),
                    serde_json::to_value(degradation).unwrap_or_default(),
                );
                o.insert(
                    "live".into(),
                    serde_json::Value::Bool(state.runs.subscribe(&id).is_some()),
                );
            }
            Json(v).into_response()
        }
        Ok(None) => not_found_run(&id),
        Err(e) if e.is_undecodable() => unreadable_run(&state, &id, &e).await,
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "run_store",
            e.to_string(),
            "internal",
        ),
    }
}

/// `value` as JSON, with `"subject"` added when `subject` is `Some` (the caller sees
/// every run: an operator must tell whose run it is; `null` for runs stored before
/// subjects were journaled). Other callers never get it.
fn with_subject(value: &impl Serialize, subject: Option<Option<&str>>) -> serde_json::Value {
    let mut v = serde_json::to_value(value).unwrap_or_default();
    if let (Some(subject), Some(o)) = (subject, v.as_object_mut()) {
        o.insert("subject".into(), serde_json::json!(subject));
    }
    v
}

/// `GET /api/tasks/{id}` of a run that is stored but does not read back (its plan or
/// task rows no longer decode; it was failed as `run_store_corrupt` at the start, or is
/// failed at the next): 200 with what still reads — id, status, request (first 200
/// characters), cost, creation time — and an `error` naming the rule and what broke, so
/// a client polling for the end of the run sees it end. 409 with the same rule when not
/// even that row reads back.
async fn unreadable_run(state: &Arc<AppState>, id: &str, error: &StoreError) -> Response {
    let message = genesis::core::error_chain(error);
    let key = id.to_owned();
    let summary = match blocking(state, move |s| s.runs.store().run_summary(&key)).await {
        Ok(summary) => summary,
        Err(response) => return response,
    };
    match summary {
        Ok(Some(run)) => {
            let mut v = serde_json::to_value(&run).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "live".into(),
                    serde_json::Value::Bool(state.runs.subscribe(id).is_some()),
                );
                o.insert(
                    "error".into(),
                    serde_json::json!({
                        "rule": crate::runs::CORRUPT_RULE,
                        "message": message,
                        "category": "internal",
                    }),
                );
            }
            Json(v).into_response()
        }
        Ok(None) => not_found_run(id),
        Err(e) if e.is_undecodable() => json_error(
            StatusCode::CONFLICT,
            crate::runs::CORRUPT_RULE,
            format!("run {id} is stored but does not read back: {message}"),
            "internal",
        ),
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "run_store",
            e.to_string(),
            "internal",
        ),
    }
}

/// `response` with `Retry-After` set to the start of the next UTC day, when a spent
/// daily budget starts again (audit O11 M7: a generic client retried at once).
fn until_tomorrow(mut response: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&crate::runs::secs_until_next_day().to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// 400 `query` for an endpoint that takes no query parameters but got some (audit O11
/// L3: `POST /api/tasks?mode=run` planned without a word, the parameter ignored).
fn query_refused(uri: &axum::http::Uri, endpoint: &str) -> Option<Response> {
    let query = uri.query().filter(|q| !q.is_empty())?;
    let shown: String = query.chars().take(100).collect();
    Some(json_error(
        StatusCode::BAD_REQUEST,
        "query",
        format!(
            "{endpoint} takes no query parameters, got {shown:?}: send them in the body or headers the endpoint documents"
        ),
        "validation",
    ))
}

fn not_found_run(id: &str) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "unknown_run",
        format!("no run with id {id:?}"),
        "validation",
    )
}

/// Query of `GET /api/tasks`. Values are read as text and checked by the handler, so
/// a bad one is refused under its own rule, naming it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/tasks", params(("status" = Option<genesis::run::RunStatus>, Query, description = "only runs with this status"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "runs per page, 1 to 1000 (default 50)"), ("cursor" = Option<String>, Query, description = "the `next_cursor` of the previous page (an opaque token), or, from older clients, the previous page's last run id")),
    responses((status = 200, description = "the caller's runs (every run when the API is open), newest first, and the next cursor", body = crate::openapi::wire::RunList),
        (status = 400, description = "rule `status`, `limit`, `cursor` or `query`, naming the value", body = ErrorBody),
        (status = 401, description = "missing or invalid credentials", body = ErrorBody)))]
pub(crate) async fn list_tasks(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => {
            // An unknown or repeated parameter: serde names it.
            let detail =
                std::error::Error::source(&e).map_or_else(|| e.body_text(), ToString::to_string);
            return json_error(
                StatusCode::BAD_REQUEST,
                "query",
                format!("the query string is not valid: {detail}"),
                "validation",
            );
        }
    };
    let status = match q.status.as_deref() {
        None => None,
        Some("running") => Some(RunStatus::Running),
        Some("succeeded") => Some(RunStatus::Succeeded),
        Some("failed") => Some(RunStatus::Failed),
        Some("cancelled") => Some(RunStatus::Cancelled),
        Some(other) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "status",
                format!("unknown status {other:?}: use running, succeeded, failed or cancelled"),
                "validation",
            );
        }
    };
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 50,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "limit",
                format!(
                    "limit {:?} is not a whole number in 1..=1000",
                    q.limit.unwrap_or_default()
                ),
                "validation",
            );
        }
    };
    let cursor = q.cursor;
    let caller = Caller::from_extension(caller);
    let show_subject = caller.sees_all();
    let runs = match blocking(&state, move |s| {
        s.runs
            .store()
            .list_runs_in(caller.scope(), status, limit, cursor.as_deref())
    })
    .await
    {
        Ok(runs) => runs,
        Err(response) => return response,
    };
    match runs {
        Ok(runs) => {
            // A position, not a row: the next page follows even once that run is gone.
            let next = (runs.len() == limit)
                .then(|| runs.last().map(|r| ListCursor::after(r).to_string()))
                .flatten();
            let runs: Vec<serde_json::Value> = runs
                .into_iter()
                .map(|r| with_subject(&r, show_subject.then_some(r.subject.as_deref())))
                .collect();
            Json(serde_json::json!({"runs": runs, "next_cursor": next})).into_response()
        }
        Err(StoreError::UnknownCursor { cursor }) => json_error(
            StatusCode::BAD_REQUEST,
            "cursor",
            format!(
                "cursor {cursor:?} is neither a next_cursor of this listing nor the id of a stored run: start again without a cursor"
            ),
            "validation",
        ),
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "run_store",
            e.to_string(),
            "internal",
        ),
    }
}

#[utoipa::path(post, path = "/api/tasks/{id}/cancel", params(("id" = String, Path)),
    responses((status = 202, description = "cancelling: the cancel request is journaled and holds across a crash (also for a repeated cancel of a run still cancelling)", body = crate::openapi::wire::CancelAccepted),
        (status = 200, description = "a repeated cancel of a run that already ended cancelled, or ended after an earlier cancel was accepted: `status` says how it ended", body = crate::openapi::wire::CancelEnded),
        (status = 400, description = "rule `path`: the id is not UTF-8 once percent-decoded", body = ErrorBody), (status = 401, description = "missing or invalid credentials", body = ErrorBody), (status = 404, description = "rule `unknown_run`: no such run, or another subject's (answered alike)", body = ErrorBody), (status = 409, description = "rule `run_not_running`: the run ended before any cancel was accepted", body = ErrorBody),
        (status = 503, description = "rule `run_store`: the cancel could not be journaled, the run goes on", body = ErrorBody)))]
pub(crate) async fn cancel_task(
    State(state): State<Arc<AppState>>,
    commit: Option<Extension<Commit>>,
    caller: Option<Extension<Caller>>,
    path: Result<Path<String>, PathRejection>,
    uri: axum::http::Uri,
) -> Response {
    if let Some(refusal) = query_refused(&uri, "POST /api/tasks/{id}/cancel") {
        return refusal;
    }
    let id = match path {
        Ok(Path(id)) => id,
        Err(e) => return path_error(&e),
    };
    let caller = Caller::from_extension(caller);
    // The request is journaled before the 202 (and before the run is stopped), so the
    // cancel holds across a crash; the answer waits for that write. A run that is
    // journaled but not yet live (an idempotent retry's 202 can come first) is
    // cancelled as it starts. Another subject's run is not touched and answers as a
    // missing one.
    let commit = commit.map(|Extension(c)| c);
    let key = id.clone();
    let cancelled = committed(&state, commit.as_ref(), move |s| {
        if !s.runs.store().run_in_scope(&key, caller.scope())? {
            return Ok(None);
        }
        s.runs.cancel(&key).map(Some)
    })
    .await;
    match cancelled {
        Err(response) => return response,
        Ok(Ok(None)) => return not_found_run(&id),
        Ok(Ok(Some(true))) => {
            return (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"run_id": id, "status": "cancelling"})),
            )
                .into_response();
        }
        // Ended already (or deleted meanwhile): answered from the store below.
        Ok(Ok(Some(false))) => {}
        Ok(Err(e)) => {
            let mut r = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "run_store",
                format!(
                    "the cancel was not journaled and run {id} goes on: {}",
                    genesis::core::error_chain(&e)
                ),
                "resource",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
    }
    // Whether a cancel was accepted before needs the whole run; the row alone answers
    // for a run whose plan no longer decodes.
    let key = id.clone();
    let run = match blocking(&state, move |s| {
        let store = s.runs.store();
        match store.get_run(&key) {
            Ok(run) => Ok(run.map(|r| (r.status, r.cancel_requested_at_ms))),
            Err(e) if e.is_undecodable() => {
                store.run_summary(&key).map(|r| r.map(|r| (r.status, None)))
            }
            Err(e) => Err(e),
        }
    })
    .await
    {
        Ok(run) => run,
        Err(response) => return response,
    };
    match run {
        // A retried cancel (its first answer lost): the run ended cancelled, or ended
        // otherwise after a cancel was accepted. Answered as done, with how it ended.
        Ok(Some((status, requested))) if status == RunStatus::Cancelled || requested.is_some() => (
            StatusCode::OK,
            Json(serde_json::json!({
                "run_id": id,
                "status": status.as_str(),
                "cancel_requested_at_ms": requested,
            })),
        )
            .into_response(),
        Ok(Some((status, _))) => json_error(
            StatusCode::CONFLICT,
            "run_not_running",
            format!("run {id} is {} and cannot be cancelled", status.as_str()),
            "validation",
        ),
        Ok(None) => not_found_run(&id),
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "run_store",
            e.to_string(),
            "internal",
        ),
    }
}

#[utoipa::path(get, path = "/api/tasks/{id}/events", params(("id" = String, Path)),
    responses((status = 200, description = "server-sent events: every journaled event, then live ones until the run ends (`Last-Event-ID` resumes after that id). Each event's `event:` is its `type`, `id:` its sequence number in the run's journal (absent on `run_interrupted`, which is not journaled), `data:` one JSON object of this schema. Comment lines keep the connection alive.", body = genesis::run::RunEvent, content_type = "text/event-stream"),
        (status = 400, description = "rule `path`: the id is not UTF-8 once percent-decoded", body = ErrorBody), (status = 401, description = "missing or invalid credentials", body = ErrorBody), (status = 404, description = "rule `unknown_run`: no such run, or another subject's (answered alike)", body = ErrorBody)))]
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Some(refusal) = query_refused(&uri, "GET /api/tasks/{id}/events") {
        return refusal;
    }
    let id = match path {
        Ok(Path(id)) => id,
        Err(e) => return path_error(&e),
    };
    let caller = Caller::from_extension(caller);
    // The row alone: the events of a run whose plan no longer decodes still stream.
    // Another subject's run answers as a missing one.
    let key = id.clone();
    let run = match blocking(&state, move |s| {
        s.runs.store().run_in_scope(&key, caller.scope())
    })
    .await
    {
        Ok(run) => run,
        Err(response) => return response,
    };
    match run {
        Ok(true) => {}
        Ok(false) => return not_found_run(&id),
        Err(e) => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "run_store",
                e.to_string(),
                "internal",
            );
        }
    }
    let after: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Sse::new(event_stream(state, id, after))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The store is the source of truth; live notifications only wake the stream up, so
/// a client never sees an event twice or misses one between replay and live.
fn event_stream(
    state: Arc<AppState>,
    id: String,
    after: i64,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct S {
        state: Arc<AppState>,
        id: String,
        last: i64,
        pending: std::collections::VecDeque<StoredEvent>,
        wake: Option<tokio::sync::broadcast::Receiver<RunEvent>>,
        done: bool,
    }
    let wake = state.runs.subscribe(&id);
    let init = S {
        state,
        id,
        last: after,
        pending: Default::default(),
        wake,
        done: false,
    };
    futures_util::stream::unfold(init, |mut s| async move {
        loop {
            if let Some(e) = s.pending.pop_front() {
                s.last = e.seq;
                if matches!(e.event, RunEvent::RunFinished { .. }) {
                    s.done = true;
                }
                let data = serde_json::to_string(&e.event).unwrap_or_default();
                let ev = Event::default()
                    .id(e.seq.to_string())
                    .event(e.event.kind())
                    .data(data);
                return Some((Ok(ev), s));
            }
            if s.done {
                return None;
            }
            match events_since(&s.state, &s.id, s.last).await {
                Some(events) if !events.is_empty() => {
                    s.pending.extend(events);
                    continue;
                }
                Some(_) => {}
                None => return None,
            }
            // Nothing new: wait for a live event, or end if the run is not live.
            match s.wake.as_mut() {
                Some(rx) => match rx.recv().await {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        s.wake = None;
                    }
                },
                None => {
                    // Finished runs end after replay; a run resumed elsewhere is polled.
                    let key = s.id.clone();
                    let finished = blocking(&s.state, move |st| st.runs.store().get_run(&key))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .flatten()
                        .is_none_or(|r| r.status != RunStatus::Running);
                    if finished {
                        // One last read, then stop.
                        match events_since(&s.state, &s.id, s.last).await {
                            Some(events) if !events.is_empty() => {
                                s.pending.extend(events);
                                s.done = true;
                                continue;
                            }
                            _ => return None,
                        }
                    }
                    // Not live here and the store takes no writes: the run stopped for
                    // want of a journal and stays so until the server restarts. Say so
                    // and end, rather than poll until the stream's lifetime (verification
                    // V6). The event is not stored: it has no id, and a reconnect replays
                    // from the journal as usual.
                    if let Some(error) = s.state.store.write_failure() {
                        s.done = true;
                        let event = RunEvent::RunInterrupted {
                            rule: "journal_unavailable".to_owned(),
                            reason: format!(
                                "the run store does not take writes ({error}): the run stopped and resumes at the next start (rule: journal_unavailable)"
                            ),
                        };
                        let data = serde_json::to_string(&event).unwrap_or_default();
                        return Some((Ok(Event::default().event(event.kind()).data(data)), s));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    s.wake = s.state.runs.subscribe(&s.id);
                }
            }
        }
    })
}

/// The run's stored events after `after`, read on the blocking pool (`None`: the store
/// failed).
async fn events_since(state: &Arc<AppState>, id: &str, after: i64) -> Option<Vec<StoredEvent>> {
    let id = id.to_owned();
    blocking(state, move |s| s.runs.store().events_since(&id, after))
        .await
        .ok()?
        .ok()
}

/// One agent as `GET /api/agents` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AgentView {
    /// The agent.
    id: String,
    /// What it does.
    description: String,
    /// The task kinds it takes.
    #[schema(value_type = Vec<genesis::core::TaskKind>)]
    task_kinds: Vec<String>,
    /// Its success rate, learned from outcomes, in `[0, 1]`.
    success_rate: f64,
    /// Its `max_concurrent_tasks`.
    max_concurrent_tasks: u32,
    /// Its tasks in flight now.
    load: usize,
    /// Its circuit breaker's state.
    #[schema(value_type = genesis::resilience::BreakerState)]
    breaker: &'static str,
}

#[utoipa::path(get, path = "/api/agents", responses((status = 200, description = "agents with live success rate, load and breaker state", body = [AgentView]), (status = 401, description = "missing or invalid credentials", body = ErrorBody)))]
pub(crate) async fn agents(State(state): State<Arc<AppState>>) -> Json<Vec<AgentView>> {
    let registry = state.orchestrator.router().registry();
    let executor = state.orchestrator.executor();
    let now = tokio::time::Instant::now();
    let views = registry
        .iter()
        .map(|a| AgentView {
            id: a.id.to_string(),
            description: a.description.clone(),
            task_kinds: a.task_kinds.iter().map(|k| k.as_str().to_owned()).collect(),
            success_rate: a.success_rate,
            max_concurrent_tasks: a.max_concurrent_tasks,
            load: executor.in_flight(a.id.as_str()),
            breaker: executor
                .breakers()
                .peek(&format!("agent:{}", a.id))
                .map_or("closed", |b| b.effective_state(now).as_str()),
        })
        .collect();
    Json(views)
}

#[utoipa::path(get, path = "/api/status", responses((status = 200, description = "flags, budget, runs, breakers: what `genesis health` checks", body = crate::openapi::wire::Status), (status = 401, description = "missing or invalid credentials", body = ErrorBody)))]
pub(crate) async fn status(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let now = std::time::SystemTime::now();
    let flags: Vec<serde_json::Value> = state
        .orchestrator
        .flags()
        .map(|f| {
            f.snapshot()
                .flags()
                .map(|flag| {
                    let ev = f.evaluate(&flag.name, "anonymous", now);
                    let percent = genesis::effective_percent(flag, now.into());
                    serde_json::json!({"name": flag.name, "enabled": ev.enabled, "reason": ev.reason.as_str(), "percent": percent})
                })
                .collect()
        })
        .unwrap_or_default();
    let today = blocking(&state, |s| s.runs.try_today()).await.ok();
    let (today, unreadable) = match today {
        Some(Ok(today)) => (Some(today), None),
        Some(Err(e)) => (None, Some(genesis::core::error_chain(&e))),
        None => (None, None),
    };
    let spent = today.as_ref().map(genesis::run::DaySpend::spent);
    let per_day = state.config.budget.per_day;
    let level = state.orchestrator.refresh_degradation(today.as_ref());
    // Every breaker, as `/metrics` exports them: those nothing was called through yet
    // are closed.
    let breakers: Vec<serde_json::Value> = crate::breaker_states(&state.orchestrator)
        .into_iter()
        .map(|(k, s)| serde_json::json!({"key": k, "state": s.as_str()}))
        .collect();
    Json(serde_json::json!({
        "flags": flags,
        "budget": {
            "per_day": per_day,
            "per_run": state.config.budget.per_run,
            // null while today's spend cannot be read (`error` says why; runs are
            // refused then, rule `budget_state`).
            "spent_today": spent,
            "remaining_today": per_day.zip(spent).map(|(l, s)| l - s),
            "error": unreadable,
        },
        "runs": {"running": state.runs.running()},
        "store": store_writes(&state),
        "breakers": breakers,
        "degradation": level.as_str(),
        "shutting_down": state.is_shutting_down(),
    }))
}

pub(crate) async fn not_found() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "route",
        "no such endpoint".into(),
        "validation",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TempDir;

    /// Review R8: the store-call slot was held by the request, not by the job, so a
    /// request dropped (request timeout, client gone) while its job still blocked gave
    /// the slot back, and `STORE_CALLS_IN_FLIGHT` no longer bounded the threads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_call_keeps_its_slot_until_its_thread_is_done_even_when_dropped() {
        let mut config = genesis::GenesisConfig::default();
        config.security.auth.environment = genesis::security::Environment::Dev;
        let dir = TempDir::new("slot");
        config.server.data_dir = dir.to_path_buf();
        let state = AppState::from_config(config, &[], None).unwrap();
        let all = crate::STORE_CALLS_IN_FLIGHT;
        assert_eq!(state.store_calls.available_permits(), all);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        let call = blocking(&state, move |_| {
            let _ = started.send(());
            let _ = wait.recv();
        });
        // The request gives up (is dropped) once the job is running.
        tokio::select! {
            _ = call => panic!("the job cannot finish before it is released"),
            _ = running => {}
        }
        assert_eq!(state.store_calls.available_permits(), all - 1);
        release.send(()).unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while state.store_calls.available_permits() < all {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the slot was never given back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// A state over a fresh data directory, with `api_keys`, holding one run journaled
    /// for each of `subjects` (in that order); the directory (first, so that a caller's
    /// `let` drops it last), the state and the run ids.
    fn state_with_runs(
        tag: &str,
        api_keys: &[&str],
        subjects: &[&str],
    ) -> (TempDir, Arc<AppState>, Vec<String>) {
        let mut config = genesis::GenesisConfig::default();
        config.security.auth.environment = genesis::security::Environment::Dev;
        config.server.api_keys = api_keys
            .iter()
            .map(|k| genesis::core::Secret::new((*k).to_owned()))
            .collect();
        let dir = TempDir::new(&format!("caller-{tag}"));
        config.server.data_dir = dir.to_path_buf();
        let state = AppState::from_config(config, &[], None).unwrap();
        let plan = state.orchestrator.plan_sync("Fix the login bug").unwrap();
        let ids = subjects
            .iter()
            .map(|subject| {
                let id = genesis::new_run_id();
                state
                    .store
                    .create_run(&id, &plan, None, None, Some(subject))
                    .unwrap();
                id.to_string()
            })
            .collect();
        (dir, state, ids)
    }

    /// The list and read handlers on loopback, `caller` (if any) handed to them as the
    /// auth layer would.
    async fn serve_handlers(
        state: Arc<AppState>,
        caller: Option<Caller>,
    ) -> (String, reqwest::Client) {
        let mut app = axum::Router::new()
            .route("/api/tasks", axum::routing::get(list_tasks))
            .route("/api/tasks/{id}", axum::routing::get(get_task));
        if let Some(caller) = caller {
            app = app.layer(Extension(caller));
        }
        let app = app.with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (
            base,
            genesis::llm::http_client_builder()
                .unwrap()
                .build()
                .unwrap(),
        )
    }

    async fn listed(client: &reqwest::Client, base: &str, key: &str) -> Vec<String> {
        let body: serde_json::Value = client
            .get(format!("{base}/api/tasks"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut ids: Vec<String> = body["runs"]
            .as_array()
            .unwrap_or_else(|| panic!("no runs in {body}"))
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// The handlers scope runs by the caller the auth layer handed over, not by the
    /// request's headers: a request whose header carries alice's key, but whose verified
    /// caller is bob, lists and reads bob's runs only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handlers_scope_by_the_verified_caller_not_the_headers() {
        const ALICE: &str = "key-alice";
        const BOB: &str = "key-bob";
        let bob = crate::middleware::Caller::key(BOB, Some(crate::middleware::KeyKind::Client));
        let alice_subject =
            crate::middleware::Caller::key(ALICE, Some(crate::middleware::KeyKind::Client))
                .subject()
                .to_owned();
        let (_dir, state, ids) =
            state_with_runs("headers", &[ALICE, BOB], &[&alice_subject, bob.subject()]);
        let (alice_run, bob_run) = (&ids[0], &ids[1]);
        let (base, client) = serve_handlers(state, Some(bob)).await;
        assert_eq!(listed(&client, &base, ALICE).await, [bob_run.as_str()]);
        for (id, status) in [(bob_run, 200), (alice_run, 404)] {
            let r = client
                .get(format!("{base}/api/tasks/{id}"))
                .bearer_auth(ALICE)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), status, "run {id}");
        }
    }

    /// A handler reached without the auth layer's extension fails closed: even on an
    /// open API (which shows every run to every caller that came through auth), it is
    /// `anonymous` and sees only `anonymous`'s runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_the_auth_extension_a_handler_fails_closed() {
        let (_dir, state, ids) =
            state_with_runs("closed", &[], &["anonymous", "key:0011223344556677"]);
        let (anonymous_run, keyed_run) = (&ids[0], &ids[1]);
        let (base, client) = serve_handlers(state, None).await;
        assert_eq!(
            listed(&client, &base, "any").await,
            [anonymous_run.as_str()]
        );
        let r = client
            .get(format!("{base}/api/tasks/{keyed_run}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
    }
}
