//! Request context, the request timeout, kill switches, rate limits, auth, the
//! event-stream caps, and the error answer of tower's load-shed layer.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use genesis::core::AgentId;
use genesis::security::SecurityError;
use genesis::store::RunScope;
use genesis::telemetry::{CORRELATION_ID_HEADER, CorrelationId, catalogue};
use tower::BoxError;
use tracing::Instrument;

use crate::proxy::client_network;
use crate::{AppState, json_error};

/// The `endpoint` label (metrics) and span field of a request that matched no route, of
/// a 405, and of anything the fallback answers: one series, whatever the path (a
/// path is attacker-chosen text: as a label, every random 404 would be a new series
/// kept for ever, and a secret in a path would be exported by `/metrics`).
pub(crate) const UNMATCHED: &str = "unmatched";

/// Where the plan-or-run handler leaves the rollout cohorts of its request (its
/// subject's, [`genesis::Orchestrator::cohorts`]) for [`request_context`] to count the
/// request in, once it is answered: with its final status, a 503 of the request timeout
/// included. Only `POST /api/tasks` gets one (one small allocation per such request);
/// a request refused before it evaluates the pipeline's flags (auth, rate limits, kill
/// switches, bad input) leaves it empty and is in no cohort.
#[derive(Debug, Clone, Default)]
pub(crate) struct CohortSlot(Arc<std::sync::OnceLock<genesis::Cohorts>>);

impl CohortSlot {
    /// Puts the request in `cohorts` (the first call wins).
    pub(crate) fn set(&self, cohorts: genesis::Cohorts) {
        let _ = self.0.set(cohorts);
    }
}

/// Request id (from `x-correlation-id` or generated), a tracing span, request metrics
/// labelled by route template (`/api/tasks/{id}`, or [`UNMATCHED`]) and, for plan and
/// run requests of a rollout cohort, per cohort (see [`CohortSlot`]), the error body
/// of a 405 (see [`method_not_allowed`]), and rate-limited `warn` lines for refusals
/// (401, 429, 503; see [`log_refusal`]).
///
/// The span is `request{correlation_id, method, endpoint}`, an OpenTelemetry SERVER
/// span with `http.request.method`, `http.route` and `http.response.status_code`, and
/// error status on a 5xx. The request's `x-correlation-id` header is set to the id in
/// use (a missing or invalid one is replaced), so handlers read the id from it.
pub(crate) async fn request_context(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let header_id = req
        .headers()
        .get(CORRELATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let id = CorrelationId::from_header_or_generate(header_id.as_deref())
        .map(|c| c.to_string())
        .unwrap_or_else(|_| "unknown".to_owned());
    // Only a missing or replaced id is written back (most clients send none; one that
    // sent a valid id keeps its header as it is, no copy).
    if header_id.as_deref() != Some(id.as_str())
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        req.headers_mut().insert(CORRELATION_ID_HEADER, v);
    }
    let agent_token = req.headers().contains_key("x-agent-token");
    let method = req.method().clone();
    let mut endpoint: Cow<'static, str> = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(Cow::Borrowed(UNMATCHED), |m| {
            Cow::Owned(m.as_str().to_owned())
        });
    let span = tracing::info_span!(
        "request",
        correlation_id = %id,
        method = %method,
        endpoint = %endpoint,
        "otel.kind" = "server",
        "http.request.method" = %method,
        "http.route" = %endpoint,
        "http.response.status_code" = tracing::field::Empty,
        "otel.status_description" = tracing::field::Empty,
    );
    // For a 405's message only: a `Uri` clone shares the request line's bytes (no
    // allocation on every request, as a `String` of the path would be).
    let uri = req.uri().clone();
    let cohort_slot = (method == axum::http::Method::POST && endpoint == "/api/tasks").then(|| {
        let slot = CohortSlot::default();
        req.extensions_mut().insert(slot.clone());
        slot
    });
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        response = method_not_allowed(response, &method, uri.path());
        endpoint = Cow::Borrowed(UNMATCHED);
    }
    let code = response.status();
    // An integer attribute (`>= 500` searches): tracing-opentelemetry exports unsigned
    // values as text, so the code is recorded as i64.
    span.record("http.response.status_code", i64::from(code.as_u16()));
    if code.is_server_error() {
        // Sets the span's status to Error, with the status line as its message.
        span.record(
            "otel.status_description",
            format!(
                "http {} {}",
                code.as_u16(),
                code.canonical_reason().unwrap_or("server error")
            )
            .as_str(),
        );
    }
    let refusal = match code {
        StatusCode::UNAUTHORIZED if agent_token => Some("agent_token"),
        StatusCode::UNAUTHORIZED => Some("api_key"),
        StatusCode::TOO_MANY_REQUESTS => Some("too_many_requests"),
        StatusCode::SERVICE_UNAVAILABLE => Some("unavailable"),
        _ => None,
    };
    if let Some(kind) = refusal {
        span.in_scope(|| log_refusal(&state, kind, code, &endpoint));
    }
    let status = code.as_u16().to_string();
    metrics::counter!(
        catalogue::REQUESTS_TOTAL,
        catalogue::labels::ENDPOINT => endpoint.clone(),
        catalogue::labels::STATUS => status
    )
    .increment(1);
    let seconds = started.elapsed().as_secs_f64();
    metrics::histogram!(catalogue::REQUEST_DURATION_SECONDS, catalogue::labels::ENDPOINT => endpoint)
        .record(seconds);
    // A 5xx is an error of the cohort, as `genesis_requests_total{status=~"5.."}` is of
    // the server.
    if let Some(&cohorts) = cohort_slot.as_ref().and_then(|s| s.0.get())
        && !cohorts.is_empty()
    {
        state.orchestrator.cohort_metrics().record_request(
            cohorts,
            code.is_server_error(),
            seconds,
        );
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(CORRELATION_ID_HEADER, v);
    }
    response
}

/// A `warn` line for refused requests of `kind` (`api_key`, `agent_token`,
/// `too_many_requests`, `unavailable`), at most one per
/// [`crate::REFUSAL_LOG_INTERVAL`] per kind: `count` is the refusals of that kind since
/// the previous line (this one included), so a flood is one line per interval.
fn log_refusal(state: &AppState, kind: &'static str, status: StatusCode, endpoint: &str) {
    if let Some(count) = state.refusals.hit(kind, Instant::now()) {
        tracing::warn!(
            kind,
            status = status.as_u16(),
            count,
            interval_secs = state.refusals.interval().as_secs(),
            endpoint,
            "requests refused"
        );
    }
}

/// The router answers a known path with the wrong method 405 with an empty body; every
/// error answer of the API has the JSON error body: rule `method`, naming the method
/// and the path. The `Allow` header stays: axum sets it on the way out of the route,
/// after this layer (each route's layers wrap its method handlers and its 405
/// fallback, not the method router itself), and keeps one already set. A 405 that
/// already has a body is left as it is.
fn method_not_allowed(response: Response, method: &axum::http::Method, path: &str) -> Response {
    if response.headers().contains_key(header::CONTENT_TYPE) {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut r = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method",
        format!(
            "method {method} is not allowed on {path}: the Allow header lists the methods that are"
        ),
        "validation",
    );
    if let Some(allow) = allow {
        r.headers_mut().insert(header::ALLOW, allow);
    }
    r
}

/// A 503 naming `rule`, with `Retry-After: 1`.
fn unavailable(rule: &str, message: &str) -> Response {
    let mut r = json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        rule,
        message.to_owned(),
        "resource",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Answers a tower layer's error: `expected` errors become a 503 naming `rule`, with
/// `Retry-After: 1`; anything else is a 500.
fn layer_error<E: std::error::Error + 'static>(
    err: &BoxError,
    rule: &str,
    message: &str,
) -> Response {
    if err.is::<E>() {
        unavailable(rule, message)
    } else {
        json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            err.to_string(),
            "internal",
        )
    }
}

/// A request's point of no return: a handler sets it right before it starts a write
/// whose outcome the client must be told (journaling a run, a cancel request), and from
/// then on [`request_timeout`] waits for the handler's answer instead of cutting it off.
#[derive(Debug, Clone, Default)]
pub(crate) struct Commit(Arc<AtomicBool>);

impl Commit {
    /// Marks the request committed.
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Answers 413 at once when a request declares (`Content-Length`) a body larger than
/// `security.limits.max_body_bytes`, before a byte of it is read: the body limit alone
/// only stops reading once the limit is passed, so a client declaring 100,000 bytes and
/// sending one every half second held a connection until the request timeout (audit S6
/// D7).
pub(crate) async fn declared_body_limit(
    State(max): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return crate::api::body_too_large(max, declared);
    }
    next.run(request).await
}

/// The per-request timeout (`server.request_timeout`): past it, **503**
/// `request_timeout` with `Retry-After: 1` — unless the handler has committed
/// ([`Commit`], in the request's extensions), in which case its own answer is awaited.
///
/// Not tower's `Timeout`, on purpose (STYLE.md prefers it): tower drops the handler at
/// the deadline whatever it is doing, and a run submission dropped while its store write
/// runs on the blocking pool was journaled and executed after the client had been told
/// 503 (review R8: a client that retried ran it twice). Here the deadline bounds the
/// body, planning and the wait for a store-call slot; the write itself, once started, is
/// never reported as failed when it is not.
pub(crate) async fn request_timeout(
    State(timeout): State<Duration>,
    mut req: Request,
    next: Next,
) -> Response {
    let commit = Commit::default();
    req.extensions_mut().insert(commit.clone());
    let handler = next.run(req);
    tokio::pin!(handler);
    match tokio::time::timeout(timeout, &mut handler).await {
        Ok(response) => response,
        // The handler only runs while polled here: the flag cannot change under us.
        Err(_) if commit.is_set() => handler.await,
        Err(_) => unavailable(
            "request_timeout",
            "the request took longer than server.request_timeout",
        ),
    }
}

/// The answer to a request shed by the `server.max_in_flight` concurrency limit
/// (`max_in_flight`, the value in force): 503 `load_shed` naming it.
pub(crate) fn overload_error(err: &BoxError, max_in_flight: usize) -> Response {
    layer_error::<tower::load_shed::error::Overloaded>(
        err,
        "load_shed",
        &format!(
            "the server is handling server.max_in_flight {max_in_flight} requests at once; retry shortly (rule: load_shed)"
        ),
    )
}

/// Kill switches: `emergency_shutdown` refuses every API call, `maintenance_mode`
/// refuses writes; both with 503 and `Retry-After`. A cancel is not refused in
/// maintenance (audit O11 M8): stopping a run that spends money is what an operator may
/// need most then, and it starts nothing.
pub(crate) async fn kill_switch(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let cancel = req.method() == axum::http::Method::POST && req.uri().path().ends_with("/cancel");
    let write = req.method() != axum::http::Method::GET && !cancel;
    let flag = if state.orchestrator.flag("emergency_shutdown", "server") == Some(true) {
        Some("emergency_shutdown")
    } else if write && state.orchestrator.flag("maintenance_mode", "server") == Some(true) {
        Some("maintenance_mode")
    } else {
        None
    };
    if let Some(flag) = flag {
        let mut r = json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("feature_flag:{flag}"),
            format!("{flag} is on: the API is not accepting this request"),
            "security",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    next.run(req).await
}

/// The client's IP: the TCP peer, or, when the peer is one of `server.trusted_proxies`,
/// the address it forwarded (see [`crate::proxy`]).
fn client_ip(state: &AppState, req: &Request) -> IpAddr {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    client_ip_of(state, peer, req.headers())
}

/// [`client_ip`] from the TCP peer (`None` outside a server: loopback) and the request's
/// headers, for a handler.
pub(crate) fn client_ip_of(
    state: &AppState,
    peer: Option<SocketAddr>,
    headers: &axum::http::HeaderMap,
) -> IpAddr {
    let peer = peer.map_or(IpAddr::from([127, 0, 0, 1]), |p| p.ip());
    state.trusted_proxies.client_ip(peer, headers)
}

/// The API key a request carries: `x-api-key`, else `Authorization: Bearer <key>` (the
/// scheme in any case, RFC 7235). The first header of each name; [`ambiguous_credential`]
/// finds requests with more than one, which [`auth`] refuses.
pub(crate) fn credential(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.to_owned());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_owned)
}

/// The token of an `Authorization: Bearer <token>` value; `None` for another scheme or
/// an empty token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The credential headers a request may carry only once.
const CREDENTIAL_HEADERS: [&str; 4] = ["authorization", "x-api-key", "x-agent-id", "x-agent-token"];

/// The first credential header the request carries more than once: which of them
/// counts would be a guess (proxies and frameworks disagree: first, last, joined), so
/// such a request is refused rather than authenticated by one of them.
fn ambiguous_credential(headers: &HeaderMap) -> Option<&'static str> {
    CREDENTIAL_HEADERS
        .into_iter()
        .find(|name| headers.get_all(*name).iter().nth(1).is_some())
}

/// Whether the request carries two different API keys, one in `x-api-key` and one as
/// `Authorization: Bearer` (audit O11 H5: the `x-api-key` one silently won, so behind a
/// gateway that injects `Authorization` a client-sent `x-api-key` chose the tenant).
/// The same key in both is not ambiguous.
fn conflicting_keys(headers: &HeaderMap) -> bool {
    let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    matches!((x_api_key, bearer), (Some(a), Some(b)) if a != b)
}

/// Charges one request to client `ip`'s bucket: to its network for IPv6
/// ([`client_network`]), which the error then names (`2001:db8:1:2::/64`).
fn check_client_ip(state: &AppState, ip: IpAddr) -> Result<(), SecurityError> {
    let net = client_network(ip);
    state.ip_limiter.check(&net).map_err(|e| match e {
        SecurityError::RateLimited {
            scope, retry_after, ..
        } => SecurityError::RateLimited {
            scope,
            key: crate::proxy::network_label(net),
            retry_after,
        },
        other => other,
    })
}

fn limited(e: &SecurityError) -> Response {
    let retry = e.retry_after().map_or(1, |d| d.as_secs().max(1));
    metrics::counter!(catalogue::RATE_LIMITED_TOTAL).increment(1);
    let rule = match e {
        SecurityError::RateLimited { scope, .. } => format!("rate_limit:{scope}"),
        _ => "rate_limit".to_owned(),
    };
    let mut r = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        &rule,
        e.to_string(),
        "security",
    );
    if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Limits before authentication: a request with valid credentials is not charged to its
/// client IP, so an anonymous flood from the same IP (a shared NAT, the same proxy)
/// cannot lock key holders or agents out (audit S10 #6). A valid API key counts against
/// that key only. A request that presents an agent token ([`agent_credentials`]) is
/// charged in [`auth`] instead: to the agent's own budget once its token verified, to
/// its client IP when it did not (a flood of forged tokens costs one HMAC each, and the
/// authenticator's lockout stops guessing). Every other request counts against its
/// client IP ([`client_ip`]), and against the key it presents, if any (a flood of wrong
/// keys is throttled per IP before any work).
pub(crate) async fn rate_limit(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let key = credential(req.headers());
    let agent = agent_credentials(req.headers()).is_some();
    let valid_key = key.as_deref().is_some_and(|k| state.key_kind(k).is_some());
    if !agent
        && !valid_key
        && let Err(e) = check_client_ip(&state, client_ip(&state, &req))
    {
        return limited(&e);
    }
    if let Some(key) = key
        && let Err(e) = state
            .key_limiter
            .check(&AgentId::new(format!("key:{}", fingerprint(&key))))
    {
        return limited(&e);
    }
    next.run(req).await
}

/// The agent id and token a request presents (`x-agent-id`, `x-agent-token`), when both
/// read as text: [`auth`] then takes the agent path, and only then. When either does not
/// read, the pair is ignored and the API key is checked instead (audit D4).
fn agent_credentials(headers: &HeaderMap) -> Option<(&str, &str)> {
    Some((
        headers.get("x-agent-id")?.to_str().ok()?,
        headers.get("x-agent-token")?.to_str().ok()?,
    ))
}

/// A short, non-reversible label for a credential (rate-limit keys, logs, start errors):
/// the first 6 bytes (hex) of its SHA-256, so the start of its subject's digest.
pub(crate) fn fingerprint(secret: &str) -> String {
    digest_hex(secret, 6)
}

/// The first `bytes` bytes of the SHA-256 of `secret`, in hex.
fn digest_hex(secret: &str, bytes: usize) -> String {
    use std::fmt::Write as _;
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = String::with_capacity(bytes * 2);
    for b in d.as_ref().iter().take(bytes) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Which list a configured key is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// `server.api_keys`: a client, which sees its own runs.
    Client,
    /// `server.admin_api_keys`: an operator, which sees every run.
    Admin,
}

/// The subject of a caller without credentials (an open API).
pub(crate) const ANONYMOUS: &str = "anonymous";

/// Who a request is for, as [`auth`] verified it, handed to the handlers as a request
/// extension: the subject feature flags evaluate for and runs are journaled for, and
/// whose runs the caller may list, read, follow and cancel. Handlers take it from the
/// extension ([`Caller::from_extension`]), never from the request's headers.
///
/// - A verified agent (`x-agent-id` and `x-agent-token`, both read as text, the token
///   verified for that id) is its agent id.
/// - An API key (`x-api-key` or `Authorization: Bearer`) is `key:` and the first 8
///   bytes (hex) of the key's SHA-256; an admin API key is `admin:` and the same digest.
///   A key is never the subject itself, so it is never stored with a run; its digest
///   keeps one key's rollout buckets sticky across requests and restarts.
/// - Without either, `anonymous`.
///
/// Headers alone choose nothing: an `x-agent-id` without its token, or with a token
/// that does not read as text (the pair is then skipped and the key checked), leaves
/// the key's subject, so a key holder cannot pick its rollout bucket, nor another
/// agent's runs, by sending another agent's id (audit D4).
///
/// With keys configured (`server.api_keys` or `server.admin_api_keys`), a caller sees
/// only the runs journaled for its own subject, except an admin key's, which sees every
/// run; another subject's run is answered exactly like a missing one. Without keys the
/// API is open (development): anyone could call without credentials, so every caller
/// sees every run (a key it sends is checked against nothing, and only names its
/// subject). Runs stored before subjects were journaled have none: only a caller that
/// sees every run sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    subject: String,
    sees_all: bool,
}

impl Caller {
    /// A verified agent; it sees every run only when the API is open.
    fn agent(id: &str, open: bool) -> Caller {
        Caller {
            subject: id.to_owned(),
            sees_all: open,
        }
    }

    /// The caller of a key: a configured one (`Some(kind)`), or, with the API open,
    /// any key (`None`), which names the subject and sees every run like everyone.
    pub(crate) fn key(key: &str, kind: Option<KeyKind>) -> Caller {
        let (prefix, sees_all) = match kind {
            Some(KeyKind::Client) => ("key:", false),
            Some(KeyKind::Admin) => ("admin:", true),
            None => ("key:", true),
        };
        Caller {
            subject: key_subject(prefix, key),
            sees_all,
        }
    }

    /// The caller of a request without credentials on an open API.
    fn open_anonymous() -> Caller {
        Caller {
            subject: ANONYMOUS.to_owned(),
            sees_all: true,
        }
    }

    /// The caller a handler serves: the one [`auth`] verified, or, on a route the
    /// middleware did not run for (none is meant to exist), `anonymous` seeing only its
    /// own runs: the request fails closed, never sees every run.
    pub(crate) fn from_extension(extension: Option<axum::Extension<Caller>>) -> Caller {
        match extension {
            Some(axum::Extension(caller)) => caller,
            None => Caller {
                subject: ANONYMOUS.to_owned(),
                sees_all: false,
            },
        }
    }

    /// The subject: runs are journaled and feature flags evaluated for it.
    pub(crate) fn subject(&self) -> &str {
        &self.subject
    }

    /// Whether this caller sees every client's runs (an admin key, or an open API): it
    /// is shown each run's `subject`.
    pub(crate) fn sees_all(&self) -> bool {
        self.sees_all
    }

    /// The runs this caller may see.
    pub(crate) fn scope(&self) -> RunScope<'_> {
        if self.sees_all {
            RunScope::All
        } else {
            RunScope::Subject(&self.subject)
        }
    }
}

/// `prefix` and the first 8 bytes (hex) of the SHA-256 of `key`.
fn key_subject(prefix: &str, key: &str) -> String {
    format!("{prefix}{}", digest_hex(key, 8))
}

/// API key or admin API key (`Authorization: Bearer` or `x-api-key`), or agent token
/// (`x-agent-id` + `x-agent-token`, HMAC-verified with lockout; a verified agent is then
/// held to its own rate limit, `agent:<id>`). Open when neither `server.api_keys` nor
/// `server.admin_api_keys` is configured (dev only: production refuses to start without
/// keys, and an open API is served on loopback only unless `server.allow_open_api`). A credential header sent twice is 400 `ambiguous_credentials`, keys or not.
///
/// A request let through carries its [`Caller`] as an extension: the subject this layer
/// verified, for the handlers.
pub(crate) async fn auth(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    if let Some(name) = ambiguous_credential(headers) {
        return json_error(
            StatusCode::BAD_REQUEST,
            "ambiguous_credentials",
            format!("the request carries more than one {name} header: send exactly one"),
            "security",
        );
    }
    if conflicting_keys(headers) {
        return json_error(
            StatusCode::BAD_REQUEST,
            "ambiguous_credentials",
            "the request carries two different API keys, in x-api-key and in Authorization: Bearer: send one".to_owned(),
            "security",
        );
    }
    let open = !state.requires_credentials();
    // The agent path is taken exactly when both headers read as text; when either does
    // not, the pair is ignored and the API key is checked instead (audit D4: the key
    // is then the subject, not the agent id).
    let caller = if let Some((agent, token)) = agent_credentials(headers) {
        match state
            .auth
            .verify(token, &AgentId::new(agent), SystemTime::now())
        {
            Ok(claims) => {
                if let Err(e) = state
                    .key_limiter
                    .check(&AgentId::new(format!("agent:{}", claims.agent)))
                {
                    return limited(&e);
                }
                Caller::agent(agent, open)
            }
            Err(e) => {
                // A failed check counts against the client IP, as a request without
                // credentials does ([`rate_limit`] left it to this layer).
                if let Err(limit) = check_client_ip(&state, client_ip(&state, &req)) {
                    return limited(&limit);
                }
                // A revoked or expired token still in use is worth a line of its own
                // (a leaked token, or an agent that missed a rotation), rate-limited.
                let stale = match &e {
                    SecurityError::TokenRevoked { .. } => Some("agent_token_revoked"),
                    SecurityError::TokenExpired { .. } => Some("agent_token_expired"),
                    _ => None,
                };
                if let Some(kind) = stale
                    && let Some(count) = state.refusals.hit(kind, Instant::now())
                {
                    tracing::warn!(
                        kind,
                        agent,
                        count,
                        interval_secs = state.refusals.interval().as_secs(),
                        error = %e,
                        "a revoked or expired agent token was used"
                    );
                }
                let mut r = json_error(
                    StatusCode::UNAUTHORIZED,
                    "agent_token",
                    e.to_string(),
                    "security",
                );
                if let Some(after) = e.retry_after()
                    && let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
                {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
        }
    } else {
        match credential(headers) {
            Some(key) if open => Caller::key(&key, None),
            None if open => Caller::open_anonymous(),
            Some(key) => match state.key_kind(&key) {
                Some(kind) => Caller::key(&key, Some(kind)),
                None => {
                    return unauthorized_key("the API key is not valid");
                }
            },
            None => {
                return unauthorized_key(
                    "missing credentials: send Authorization: Bearer <api key> or x-api-key",
                );
            }
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await.into_response()
}

/// 401 `api_key` with `WWW-Authenticate: Bearer` (RFC 9110 15.5.2: a 401 names the
/// scheme it wants).
fn unauthorized_key(message: &str) -> Response {
    let mut r = json_error(
        StatusCode::UNAUTHORIZED,
        "api_key",
        message.to_owned(),
        "security",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"genesis\""),
    );
    r
}

/// The event-stream caps, around `GET /api/tasks/{id}/events`: a stream over
/// `server.max_event_streams_per_subject` for its caller's subject (any IP) or
/// `server.max_event_streams_per_ip` for its client IP is 429, one over
/// `server.max_event_streams` 503, all with `Retry-After: 5`. A stream holds its slots
/// until its body is done or dropped (the client went away), and ends after
/// `server.event_stream_lifetime` (the client reconnects with `Last-Event-ID`).
pub(crate) async fn event_stream_limit(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let ip = client_ip(&state, &req);
    // Audit S6 D4: one key opened every stream from three addresses. The subject the
    // auth layer verified is held to its own cap first.
    let subject = Caller::from_extension(
        req.extensions()
            .get::<Caller>()
            .cloned()
            .map(axum::Extension),
    )
    .subject()
    .to_owned();
    // Callers without credentials (an open API) all share the subject `anonymous`:
    // they are held to the per-IP cap only, not to one cap for all of them.
    let subject = (subject != ANONYMOUS).then_some(subject);
    let subject_pass = match state.subject_streams.try_enter(subject) {
        Ok(pass) => pass,
        Err(_) => {
            let mut r = json_error(
                StatusCode::TOO_MANY_REQUESTS,
                "max_event_streams_per_subject",
                "this caller has server.max_event_streams_per_subject event streams open: close one or retry later".to_owned(),
                "resource",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        }
    };
    let pass = match state.event_streams.try_enter(Some(client_network(ip))) {
        Ok(pass) => pass,
        Err(full) => {
            let (status, rule, message) = match full {
                crate::transport::Full::PerIp => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "max_event_streams_per_ip",
                    "this client has server.max_event_streams_per_ip event streams open: close one or retry later",
                ),
                crate::transport::Full::Total => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "max_event_streams",
                    "the server has server.max_event_streams event streams open: retry later",
                ),
            };
            let mut r = json_error(status, rule, message.to_owned(), "resource");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        }
    };
    let lifetime = state.config.server.event_stream_lifetime;
    let (parts, body) = next.run(req).await.into_parts();
    let data = body.into_data_stream().map(move |chunk| {
        // The slots live as long as the body.
        let _held = (&pass, &subject_pass);
        chunk
    });
    let body = if lifetime.is_zero() {
        Body::from_stream(data)
    } else {
        Body::from_stream(data.take_until(tokio::time::sleep(lifetime)))
    };
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TempDir;

    const CLIENT_KEY: &str = "secret-key-1";
    const ADMIN_KEY: &str = "admin-key-1";

    /// [`auth`] alone, on loopback, in front of a handler that answers the [`Caller`]
    /// extension it was given (subject, sees every run), or `null` without one; the
    /// state's data directory (first, so that a caller's `let` drops it last), the URL
    /// and the state.
    async fn probe(
        keys: &[&str],
        admin_keys: &[&str],
        tag: &str,
    ) -> (TempDir, String, Arc<AppState>) {
        let mut config = genesis::GenesisConfig::default();
        config.security.auth.environment = genesis::security::Environment::Dev;
        config.server.api_keys = keys.iter().map(|k| genesis_core_secret(k)).collect();
        config.server.admin_api_keys = admin_keys.iter().map(|k| genesis_core_secret(k)).collect();
        let dir = TempDir::new(&format!("auth-{tag}"));
        config.server.data_dir = dir.to_path_buf();
        let env = [("GENESIS_AUTH_SECRET".to_owned(), "s".repeat(32))];
        let state = AppState::from_config(config, &env, None).unwrap();
        let app = axum::Router::new()
            .route(
                "/probe",
                axum::routing::get(|caller: Option<axum::Extension<Caller>>| async move {
                    axum::Json(caller.map(|axum::Extension(c)| {
                        serde_json::json!({"subject": c.subject, "sees_all": c.sees_all})
                    }))
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                auth,
            ))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/probe", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (dir, base, state)
    }

    fn genesis_core_secret(k: &str) -> genesis::core::Secret {
        genesis::core::Secret::new(k.to_owned())
    }

    /// A span exporter keeping what it is given (the SDK's exporter interface).
    #[derive(Debug, Clone, Default)]
    struct Kept(Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Kept {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// Audit R7 item 8: `http.response.status_code` was exported as the text "202", so
    /// `>= 500` searches failed. It is an integer attribute now, and a 5xx gives the
    /// `request` span the error status with the status line as its message. The server
    /// runs on this (current-thread) runtime, under this thread's subscriber.
    #[tokio::test]
    async fn request_spans_export_the_status_code_as_an_integer_and_5xx_as_errors() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        let kept = Kept::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(kept.clone())
            .build();
        let _default = tracing::subscriber::set_default(
            tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test"))),
        );
        let dir = TempDir::new("request-span");
        let mut config = genesis::GenesisConfig::default();
        config.security.auth.environment = genesis::security::Environment::Dev;
        config.server.data_dir = dir.to_path_buf();
        let env = [("GENESIS_AUTH_SECRET".to_owned(), "s".repeat(32))];
        let state = AppState::from_config(config, &env, None).unwrap();
        let app = axum::Router::new()
            .route(
                "/accepted",
                axum::routing::get(|| async { StatusCode::ACCEPTED }),
            )
            .route(
                "/unavailable",
                axum::routing::get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                request_context,
            ))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let client = genesis::llm::http_client_builder()
            .unwrap()
            .build()
            .unwrap();
        for (path, code) in [("/accepted", 202), ("/unavailable", 503)] {
            let r = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status().as_u16(), code);
        }
        provider.force_flush().unwrap();
        let spans = kept.0.lock().unwrap().clone();
        let request = |route: &str| {
            spans
                .iter()
                .find(|s| {
                    s.name == "request"
                        && s.attributes
                            .iter()
                            .any(|kv| kv.key.as_str() == "http.route" && kv.value.as_str() == route)
                })
                .unwrap_or_else(|| panic!("no request span for {route}: {spans:#?}"))
        };
        let code = |span: &opentelemetry_sdk::trace::SpanData| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == "http.response.status_code")
                .map(|kv| kv.value.clone())
        };
        let accepted = request("/accepted");
        assert_eq!(code(accepted), Some(opentelemetry::Value::I64(202)));
        assert_eq!(accepted.status, opentelemetry::trace::Status::Unset);
        let unavailable = request("/unavailable");
        assert_eq!(code(unavailable), Some(opentelemetry::Value::I64(503)));
        assert_eq!(
            unavailable.status,
            opentelemetry::trace::Status::error("http 503 Service Unavailable")
        );
    }

    /// What the handler behind [`auth`] was handed for a request with `headers`:
    /// `(status, subject, sees every run)`; no subject when refused.
    async fn caller_for(base: &str, headers: &[(&str, &[u8])]) -> (u16, Option<String>, bool) {
        let mut req = genesis::llm::http_client_builder()
            .unwrap()
            .build()
            .unwrap()
            .get(base);
        for (name, value) in headers {
            req = req.header(
                *name,
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        (
            status,
            body["subject"].as_str().map(str::to_owned),
            body["sees_all"].as_bool().unwrap_or(false),
        )
    }

    /// The subject travels from the auth layer, which verified it: the agent id of a
    /// verified agent, `key:` or `admin:` and a digest of the key, `anonymous` on an open
    /// API; only an admin key (or an open API) sees every run. Headers that name another
    /// subject than the verified credential (an agent id without its token, or with one
    /// that does not read as text, next to a key) do not change it (audit D4).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auth_hands_the_verified_caller_to_the_handler() {
        let (dir, base, state) = probe(&[CLIENT_KEY], &[ADMIN_KEY], "keys").await;
        let token = state
            .auth
            .issue(&AgentId::new("agent-7"), SystemTime::now())
            .unwrap();
        // Pinned, so buckets stay sticky across releases: the first 8 bytes of
        // `printf 'secret-key-1' | sha256sum`.
        let client = Some("key:a6c1eaef9d5f23f4".to_owned());
        let key = CLIENT_KEY.as_bytes();
        let bearer = format!("Bearer {CLIENT_KEY}");
        for (headers, expected, what) in [
            (
                vec![("x-api-key", key)],
                (200, client.clone(), false),
                "x-api-key",
            ),
            (
                vec![("authorization", bearer.as_bytes())],
                (200, client.clone(), false),
                "bearer",
            ),
            (
                vec![
                    ("x-agent-id", b"agent-7".as_slice()),
                    ("x-agent-token", token.as_bytes()),
                ],
                (200, Some("agent-7".to_owned()), false),
                "verified agent",
            ),
            (
                vec![("x-agent-id", b"agent-7".as_slice()), ("x-api-key", key)],
                (200, client.clone(), false),
                "an agent id without its token names nobody",
            ),
            (
                vec![
                    ("x-agent-id", b"qa".as_slice()),
                    ("x-agent-token", b"\xff".as_slice()),
                    ("x-api-key", key),
                ],
                (200, client.clone(), false),
                "an unreadable token: the key is checked, and is the subject",
            ),
            (vec![], (401, None, false), "no credentials"),
            (
                vec![("x-api-key", b"nope".as_slice())],
                (401, None, false),
                "unknown key",
            ),
        ] {
            assert_eq!(caller_for(&base, &headers).await, expected, "{what}");
        }
        let (status, subject, sees_all) =
            caller_for(&base, &[("x-api-key", ADMIN_KEY.as_bytes())]).await;
        assert_eq!(status, 200);
        let subject = subject.unwrap();
        assert!(subject.starts_with("admin:"), "{subject}");
        assert_eq!(subject.len(), "admin:".len() + 16, "{subject}");
        assert!(!subject.contains(ADMIN_KEY), "{subject}");
        assert_eq!(
            subject.strip_prefix("admin:"),
            key_subject("key:", ADMIN_KEY).strip_prefix("key:"),
            "the same digest as a key, under its own prefix"
        );
        assert!(sees_all, "an admin key sees every run");
        drop(dir);

        // Open (no keys of either kind): every caller sees every run; a key it sends
        // is checked against nothing and only names the subject.
        let (_dir, base, _) = probe(&[], &[], "open").await;
        assert_eq!(
            caller_for(&base, &[]).await,
            (200, Some("anonymous".to_owned()), true)
        );
        assert_eq!(
            caller_for(&base, &[("x-api-key", key)]).await,
            (200, client, true)
        );
    }

    /// Admin keys alone still require credentials: the API is open only when neither
    /// list has a key (`api_keys.is_empty()` alone made it open).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admin_keys_alone_close_the_api() {
        let (_dir, base, _) = probe(&[], &[ADMIN_KEY], "admin-only").await;
        assert_eq!(caller_for(&base, &[]).await, (401, None, false));
        assert_eq!(
            caller_for(&base, &[("x-api-key", CLIENT_KEY.as_bytes())]).await,
            (401, None, false)
        );
        let (status, subject, sees_all) = caller_for(
            &base,
            &[("authorization", format!("Bearer {ADMIN_KEY}").as_bytes())],
        )
        .await;
        assert_eq!(status, 200);
        assert!(subject.is_some_and(|s| s.starts_with("admin:")) && sees_all);
    }

    /// A handler without the extension (a route outside [`auth`]) fails closed.
    #[test]
    fn without_the_extension_a_caller_is_anonymous_and_sees_only_its_own_runs() {
        let c = Caller::from_extension(None);
        assert_eq!(c.subject(), "anonymous");
        assert_eq!(c.scope(), RunScope::Subject("anonymous"));
    }

    #[test]
    fn credentials_come_from_x_api_key_or_bearer() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k1"));
        assert_eq!(credential(&h).as_deref(), Some("k1"));
        h.insert("x-api-key", HeaderValue::from_static("k2"));
        assert_eq!(credential(&h).as_deref(), Some("k2"), "x-api-key wins");
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(credential(&basic), None, "only bearer tokens are keys");
    }

    /// Audit D4 finding 4a: the scheme is case-insensitive (RFC 7235), so `bearer` and
    /// `BEARER` were "missing credentials".
    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer k1", "bearer k1", "BEARER k1", "bEaReR   k1 "] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(credential(&h).as_deref(), Some("k1"), "{value:?}");
        }
        for value in ["Bearer", "Bearer ", "Bearerk1", "Basic k1"] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(credential(&h), None, "{value:?}");
        }
    }

    /// Audit D4 finding 4b: with two `Authorization` (or `x-api-key`) headers the first
    /// silently won.
    #[test]
    fn a_credential_header_sent_twice_is_ambiguous() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        h.insert("x-api-key", HeaderValue::from_static("b"));
        assert_eq!(
            ambiguous_credential(&h),
            None,
            "one of each is not ambiguous"
        );
        for name in CREDENTIAL_HEADERS {
            let mut twice = h.clone();
            twice.append(name, HeaderValue::from_static("x"));
            twice.append(name, HeaderValue::from_static("y"));
            assert_eq!(ambiguous_credential(&twice), Some(name));
        }
    }

    /// Audit O11 H5: `x-api-key` and a different `Authorization: Bearer` key.
    #[test]
    fn two_different_api_keys_conflict_and_the_same_one_twice_does_not() {
        let with = |bearer: &'static str, key: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(bearer));
            h.insert("x-api-key", HeaderValue::from_static(key));
            h
        };
        assert!(conflicting_keys(&with("Bearer one", "two")));
        assert!(!conflicting_keys(&with("Bearer one", "one")));
        // Another scheme carries no API key (a gateway's Basic credentials).
        assert!(!conflicting_keys(&with("Basic b25lOnR3bw==", "two")));
        let mut only = HeaderMap::new();
        only.insert("x-api-key", HeaderValue::from_static("two"));
        assert!(!conflicting_keys(&only));
    }

    #[test]
    fn key_fingerprints() {
        let f = fingerprint("secret");
        assert_eq!(f.len(), 12);
        assert_eq!(f, fingerprint("secret"), "stable");
        assert_ne!(f, fingerprint("other"));
        assert!(!f.contains("secret"));
    }
}
