//! The OpenAPI document, generated from the handlers' annotations (utoipa).
//!
//! Every JSON body the API answers has a schema here. Where the body is a Rust type
//! serialised as it is (the plan, the error body, a run event), its schema is derived
//! from that very type (the library crates' `openapi` feature). Where a handler builds
//! the JSON by hand (`serde_json::json!`, or a stored run with fields inserted), the
//! schema is a mirror struct in [`wire`], composed with the derived types where the
//! handler extends one (`allOf`). The server's `openapi` integration test
//! (tests/it/openapi.rs) validates real answers against this document, so a field added
//! to an answer without its schema fails it.

use axum::Json;
use utoipa::OpenApi;

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Genesis API",
        description = "Plan and run multi-agent work. See docs/API.md. Any path answers 404 (rule `route`) when there is no such endpoint, and 405 (rule `method`, with `Allow`) for a method the endpoint does not take, both with the error body."
    ),
    paths(
        api::health,
        api::ready,
        api::metrics,
        api::create_task,
        api::list_tasks,
        api::get_task,
        api::cancel_task,
        api::events,
        api::agents,
        api::status,
        spec
    ),
    modifiers(&Common),
    components(schemas(
        api::CreateTask,
        api::Mode,
        api::ErrorBody,
        api::ErrorDetail,
        api::Accepted,
        api::Links,
        api::AgentView
    ))
)]
struct ApiDoc;

/// What every operation has in common, added to the document after the handlers'
/// annotations (audit O11 H2, H3): the security schemes, and on every `/api` operation
/// its security requirement and the answers the layers around the handlers give (400
/// `ambiguous_credentials`, 401, 429, 503, each with its `Retry-After` where one is
/// sent). The probes, `/metrics` and `/openapi.json` need no credentials and are not
/// shed.
struct Common;

/// The security schemes' names in the document.
const BEARER: &str = "bearer";
const API_KEY: &str = "api_key";
const AGENT_ID: &str = "agent_id";
const AGENT_TOKEN: &str = "agent_token";

impl utoipa::Modify for Common {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "an API key of `server.api_keys` or `server.admin_keys` as `Authorization: Bearer <key>`. A server with no keys configured (an open API, loopback only unless `server.allow_open_api`) needs no credentials.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "the same API key in `x-api-key` (not both headers with different keys: 400 `ambiguous_credentials`)",
            ))),
        );
        components.add_security_scheme(
            AGENT_ID,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-agent-id",
                "an agent's id, with its token in `x-agent-token` (`genesis token`)",
            ))),
        );
        components.add_security_scheme(
            AGENT_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-agent-token",
                "the agent token issued by `genesis token` for `x-agent-id`",
            ))),
        );
        let requirements = vec![
            SecurityRequirement::new(BEARER, Vec::<String>::new()),
            SecurityRequirement::new(API_KEY, Vec::<String>::new()),
            SecurityRequirement::new(AGENT_ID, Vec::<String>::new())
                .add(AGENT_TOKEN, Vec::<String>::new()),
        ];
        for (path, item) in doc.paths.paths.iter_mut() {
            let api = path.starts_with("/api/");
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                if api {
                    op.security = Some(requirements.clone());
                    for (status, answer) in common_answers() {
                        match op.responses.responses.entry(status.to_owned()) {
                            std::collections::btree_map::Entry::Vacant(v) => {
                                v.insert(answer.into());
                            }
                            // The handler's own answers with this status, and the
                            // layers' ones.
                            std::collections::btree_map::Entry::Occupied(mut o) => {
                                if let utoipa::openapi::RefOr::T(own) = o.get_mut() {
                                    own.description =
                                        format!("{}; or {}", own.description, answer.description);
                                }
                            }
                        }
                    }
                } else {
                    op.security = Some(vec![SecurityRequirement::default()]);
                }
                // Request headers: the correlation id on every operation, and those
                // particular operations read (verification V11 M-4).
                let params = op.parameters.get_or_insert_with(Vec::new);
                params.push(header_param(
                    CORRELATION_HEADER,
                    "a correlation id for logs and traces: 32 hex digits or a UUID; one is made when absent or invalid, and the answer carries it",
                ));
                if path == "/api/tasks" && op.request_body.is_some() {
                    params.push(header_param(
                        "Idempotency-Key",
                        "the same as the body's `idempotency_key` (1 to 255 visible ASCII characters): a retried POST with the same key from the same caller returns the same run",
                    ));
                }
                if path.ends_with("/events") {
                    params.push(header_param(
                        "Last-Event-ID",
                        "resume after this event id (what a reconnecting EventSource sends)",
                    ));
                }
                for (status, answer) in &mut op.responses.responses {
                    if let utoipa::openapi::RefOr::T(answer) = answer {
                        answer
                            .headers
                            .entry(CORRELATION_HEADER.to_owned())
                            .or_insert_with(|| {
                                string_header(
                                    "the request's correlation id, or the one made for it",
                                )
                            });
                        if status == "401" {
                            answer
                                .headers
                                .entry("WWW-Authenticate".to_owned())
                                .or_insert_with(|| {
                                    string_header("`Bearer realm=\"genesis\"` on rule `api_key`")
                                });
                        }
                        if matches!(status.as_str(), "429" | "503") {
                            answer
                                .headers
                                .entry("Retry-After".to_owned())
                                .or_insert_with(|| utoipa::openapi::RefOr::T(retry_after()));
                        }
                        if status == "202" && path == "/api/tasks" {
                            answer
                                .headers
                                .entry("Location".to_owned())
                                .or_insert_with(|| {
                                    let mut h = utoipa::openapi::header::Header::new(
                                        utoipa::openapi::ObjectBuilder::new()
                                            .schema_type(utoipa::openapi::Type::String),
                                    );
                                    h.description = Some("the run's URL, `/api/tasks/{id}`".into());
                                    utoipa::openapi::RefOr::T(h)
                                });
                        }
                    }
                }
            }
        }
    }
}

/// The answers of the layers around every `/api` handler (auth, rate limits, load
/// shedding, kill switches, the request timeout), by status.
fn common_answers() -> [(&'static str, utoipa::openapi::Response); 4] {
    let error = |description: &str| {
        utoipa::openapi::ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    [
        (
            "400",
            error(
                "rule `ambiguous_credentials`: a credential header sent twice, or two different API keys",
            ),
        ),
        (
            "401",
            error(
                "rule `api_key` (missing or not a configured key; with `WWW-Authenticate: Bearer`) or `agent_token`",
            ),
        ),
        (
            "429",
            error(
                "rule `rate_limit:client_ip`, `rate_limit:key` or `rate_limit:agent` (per client IP, an IPv6 client per /64; per key; per agent), or a per-caller cap of this operation; with `Retry-After`",
            ),
        ),
        (
            "503",
            error(
                "rule `load_shed` (`server.max_in_flight`), a kill switch (`feature_flag:emergency_shutdown`, `feature_flag:maintenance_mode`, …), `shutting_down` or `request_timeout`; with `Retry-After`",
            ),
        ),
    ]
}

/// The correlation-id header ([`genesis::telemetry::CORRELATION_ID_HEADER`]).
const CORRELATION_HEADER: &str = "x-correlation-id";

/// An optional request header of type string.
fn header_param(
    name: &str,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::path::Parameter> {
    utoipa::openapi::path::ParameterBuilder::new()
        .name(name)
        .parameter_in(utoipa::openapi::path::ParameterIn::Header)
        .required(utoipa::openapi::Required::False)
        .description(Some(description))
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::String),
        ))
        .build()
        .into()
}

/// A response header of type string.
fn string_header(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::header::Header> {
    let mut h = utoipa::openapi::header::Header::new(
        utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::String),
    );
    h.description = Some(description.to_owned());
    utoipa::openapi::RefOr::T(h)
}

/// The `Retry-After` header: whole seconds to wait.
fn retry_after() -> utoipa::openapi::header::Header {
    let mut h = utoipa::openapi::header::Header::new(
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::Integer)
            .minimum(Some(1)),
    );
    h.description = Some("seconds to wait before retrying".into());
    h
}

/// The OpenAPI document.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "this document (OpenAPI 3.1)", body = Object)))]
pub(crate) async fn spec() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

/// Schemas of the answers the handlers build by hand (see `api.rs`). These structs are
/// never built: they mirror, field for field, the JSON of the handler each one names,
/// for the OpenAPI document only. They derive `Serialize` so that their `#[serde]`
/// attributes (`flatten`, `skip_serializing_if`) are allowed, and utoipa reads those.
/// The `openapi` integration test keeps them true to what the handlers send.
#[allow(
    dead_code,
    reason = "schema-only mirrors of hand-built JSON, never built"
)]
pub(crate) mod wire {
    use genesis::core::Usd;
    use genesis::resilience::{BreakerState, DegradationLevel};
    use genesis::run::RunStatus;
    use genesis::store::{RunRecord, RunSummary};
    use serde::Serialize;
    use utoipa::ToSchema;

    use crate::api::ErrorDetail;

    /// `GET /health` (`api::health`): the process is alive.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct Health {
        /// Always `ok`.
        status: HealthStatus,
        /// The server's version.
        version: String,
        /// Seconds since the server started.
        uptime_s: u64,
        /// Whether the run store takes writes.
        store: StoreWrites,
    }

    /// The constant `ok`.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub(crate) enum HealthStatus {
        /// `ok`.
        Ok,
    }

    /// Whether the run store takes writes, as far as it knows (`store` of `/health`
    /// and `/api/status`).
    #[derive(Serialize, ToSchema)]
    pub(crate) struct StoreWrites {
        /// False since a write failed, until one succeeds.
        writable: bool,
        /// The last write failure; `null` while the store takes writes.
        #[schema(required = true)]
        error: Option<String>,
    }

    /// `GET /ready` (`api::ready`), with status 200 or 503 alike.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct Readiness {
        /// True when every check passes (status 200).
        ready: bool,
        /// Each check.
        checks: ReadyChecks,
        /// Why the store checks failed; absent unless `store_writable` or
        /// `budget_state` failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<ReadyReason>,
    }

    /// The checks of `/ready`.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct ReadyChecks {
        /// The run store answers.
        store: bool,
        /// The run store takes writes.
        store_writable: bool,
        /// Today's spend reads from the run store.
        budget_state: bool,
        /// The flags in force are the flags file's.
        flags: bool,
        /// The server is draining.
        shutting_down: bool,
    }

    /// Why `/ready` failed.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct ReadyReason {
        /// `store_unwritable` or `budget_state`.
        rule: String,
        /// What failed.
        message: String,
    }

    /// A 422 of `POST /api/tasks` (`api::create_task`): the error, and with rule
    /// `plan_validation` the rejected plan; with rule `agent_backend` the error alone.
    /// One object with an optional `plan`, not a choice of two shapes: the error body
    /// allows other fields, so a body with a plan would match both shapes of a
    /// `oneOf` and fail a standard validator (verification V11 HIGH-1).
    #[derive(Serialize, ToSchema)]
    pub(crate) struct Unprocessable {
        /// The error (rule `plan_validation`, `agent_backend` or `idempotency_key_reused`).
        error: ErrorDetail,
        /// The plan, with its validation report: present with rule `plan_validation`.
        #[serde(skip_serializing_if = "Option::is_none")]
        plan: Option<Box<genesis::Plan>>,
    }

    /// `GET /api/tasks/{id}` (`api::get_task`): the stored run and what the handler
    /// adds to it.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct RunView {
        /// The stored run.
        #[serde(flatten)]
        run: RunRecord,
        /// True when the run ended without succeeding but has an answer (some top-level
        /// tasks succeeded).
        partial: bool,
        /// The level its plan was made at (the plan's `degradation`).
        degradation: DegradationLevel,
        /// True while the run executes in this process.
        live: bool,
        /// Who started it: shown to callers that see every run (an admin key, or an
        /// open API) only; `null` for runs stored before subjects were journaled.
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
    }

    /// `GET /api/tasks/{id}` of a run that is stored but whose plan or tasks no longer
    /// decode (`api::get_task`, `unreadable_run`): what still reads, and the error.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct UnreadableRunView {
        /// What still reads.
        #[serde(flatten)]
        run: RunSummary,
        /// True while the run executes in this process.
        live: bool,
        /// Rule `run_store_corrupt`, category `internal`.
        error: ErrorDetail,
    }

    /// The 200 of `GET /api/tasks/{id}`.
    #[derive(Serialize, ToSchema)]
    #[serde(untagged)]
    pub(crate) enum RunAnswer {
        /// The run.
        Run(Box<RunView>),
        /// A run that no longer reads back whole.
        Unreadable(UnreadableRunView),
    }

    /// `GET /api/tasks` (`api::list_tasks`): one page of runs, newest first.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct RunList {
        /// The runs.
        runs: Vec<RunListItem>,
        /// The `cursor` of the next page; `null` on the last page.
        #[schema(required = true)]
        next_cursor: Option<String>,
    }

    /// One run of `GET /api/tasks`.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct RunListItem {
        /// The run.
        #[serde(flatten)]
        run: RunSummary,
        /// Who started it, as in `GET /api/tasks/{id}`: for callers that see every run
        /// only.
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
    }

    /// The 202 of `POST /api/tasks/{id}/cancel` (`api::cancel_task`).
    #[derive(Serialize, ToSchema)]
    pub(crate) struct CancelAccepted {
        /// The run.
        run_id: String,
        /// Always `cancelling`.
        status: Cancelling,
    }

    /// The constant `cancelling`.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub(crate) enum Cancelling {
        /// `cancelling`.
        Cancelling,
    }

    /// The 200 of `POST /api/tasks/{id}/cancel`: the run already ended after a cancel
    /// (`api::cancel_task`).
    #[derive(Serialize, ToSchema)]
    pub(crate) struct CancelEnded {
        /// The run.
        run_id: String,
        /// How it ended.
        status: RunStatus,
        /// When the cancel was requested, unix milliseconds; `null` when the run was
        /// cancelled otherwise (its tasks ended as cancelled before a restart).
        #[schema(required = true)]
        cancel_requested_at_ms: Option<i64>,
    }

    /// `GET /api/status` (`api::status`).
    #[derive(Serialize, ToSchema)]
    pub(crate) struct Status {
        /// Every flag, evaluated for `anonymous`.
        flags: Vec<FlagStatus>,
        /// Budgets and today's spend.
        budget: BudgetStatus,
        /// Runs in progress.
        runs: RunsStatus,
        /// Whether the run store takes writes.
        store: StoreWrites,
        /// Every circuit breaker.
        breakers: Vec<BreakerStatus>,
        /// The degradation level now.
        degradation: DegradationLevel,
        /// The server is draining.
        shutting_down: bool,
    }

    /// One flag of `/api/status`.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct FlagStatus {
        /// The flag.
        name: String,
        /// Whether it is on for `anonymous`.
        enabled: bool,
        /// Why (`unknown_flag`, `disabled`, `strategy_off`, `all`, `canary_subject`,
        /// `in_rollout`, `out_of_rollout`, ...).
        reason: String,
        /// The share of subjects it is on for, 0 to 100.
        percent: f64,
    }

    /// The budget of `/api/status`. Amounts in US dollars.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct BudgetStatus {
        /// `budget.per_day`; `null` when unset.
        #[schema(required = true)]
        per_day: Option<Usd>,
        /// `budget.per_run`; `null` when unset.
        #[schema(required = true)]
        per_run: Option<Usd>,
        /// Today's spend; `null` while it cannot be read (`error` says why).
        #[schema(required = true)]
        spent_today: Option<Usd>,
        /// `per_day` less today's spend; `null` when either is.
        #[schema(required = true)]
        remaining_today: Option<Usd>,
        /// Why today's spend cannot be read; `null` when it can.
        #[schema(required = true)]
        error: Option<String>,
    }

    /// The runs of `/api/status`.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct RunsStatus {
        /// Runs executing in this process.
        running: usize,
    }

    /// One circuit breaker of `/api/status`.
    #[derive(Serialize, ToSchema)]
    pub(crate) struct BreakerStatus {
        /// The breaker (`agent:<id>`, `llm:<provider>`, ...).
        key: String,
        /// Its state.
        state: BreakerState,
    }
}
