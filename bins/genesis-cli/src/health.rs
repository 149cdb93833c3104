//! `genesis health`: the operator's five checks against a running server (issue #7).

use std::time::Duration;

use serde_json::Value;

use crate::setup::Failure;

/// Arguments of `genesis health`.
#[derive(Debug, clap::Args)]
pub(crate) struct HealthArgs {
    /// The server's base URL.
    #[arg(long, env = "GENESIS_URL", default_value = "http://127.0.0.1:8000")]
    url: String,
    /// API key for /api/status (sent as `Authorization: Bearer`).
    #[arg(long, env = "GENESIS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Seconds to wait for each request, at least 1.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    /// Check name.
    pub(crate) name: &'static str,
    /// Whether it passed.
    pub(crate) pass: bool,
    /// Why, with the observed values.
    pub(crate) detail: String,
}

impl Check {
    fn new(name: &'static str, pass: bool, detail: impl Into<String>) -> Self {
        Check {
            name,
            pass,
            detail: detail.into(),
        }
    }

    /// `PASS name  detail`.
    pub(crate) fn line(&self) -> String {
        format!(
            "{} {:<8} {}",
            if self.pass { "PASS" } else { "FAIL" },
            self.name,
            self.detail
        )
    }
}

/// A response reduced to what the checks need.
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The `error.message` of a JSON error body, or the status alone.
    fn error(&self) -> String {
        let message = self
            .json()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned));
        match message {
            Some(m) => format!("HTTP {}: {m}", self.status),
            None => format!("HTTP {}", self.status),
        }
    }
}

/// Largest `/health`, `/ready` or `/api/status` body read, in bytes.
pub(crate) const MAX_HEALTH_BODY: usize = 1 << 20;

/// Largest `/metrics` body read, in bytes.
pub(crate) const MAX_METRICS_BODY: usize = 8 << 20;

/// Why a response body was not read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The body is larger than the limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
        /// The size the server declared (`Content-Length`), when it did.
        size: Option<u64>,
    },
    /// The connection failed while reading.
    Read(reqwest::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge {
                limit,
                size: Some(size),
            } => write!(f, "body of {size} bytes exceeds the {limit}-byte limit"),
            BodyError::TooLarge { limit, size: None } => write!(
                f,
                "body exceeds the {limit}-byte limit (more than {limit} bytes sent)"
            ),
            BodyError::Read(_) => write!(f, "body unreadable"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Read(e) => Some(e),
            BodyError::TooLarge { .. } => None,
        }
    }
}

/// Reads a response body of at most `limit` bytes (as UTF-8, invalid bytes replaced),
/// refusing a larger declared `Content-Length` before reading and stopping as soon as
/// the bytes read pass the limit: a server never makes the CLI buffer without bound.
///
/// # Errors
/// [`BodyError::TooLarge`] past the limit; [`BodyError::Read`] when the connection fails.
pub(crate) async fn read_body(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<String, BodyError> {
    let declared = resp.content_length();
    let too_large = |size| BodyError::TooLarge { limit, size };
    if declared.is_some_and(|n| usize::try_from(n).map_or(true, |n| n > limit)) {
        return Err(too_large(declared));
    }
    let mut body: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(too_large(None));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    limit: usize,
) -> Result<Reply, String> {
    let mut req = client.get(url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("unreachable: {}", crate::setup::one_line(&e)))?;
    let status = resp.status().as_u16();
    let body = read_body(resp, limit)
        .await
        .map_err(|e| format!("HTTP {status}, {}", crate::setup::one_line(&e)))?;
    Ok(Reply { status, body })
}

fn check_health(r: &Result<Reply, String>) -> Check {
    match r {
        Err(e) => Check::new("health", false, e.clone()),
        Ok(r) if r.status != 200 => Check::new("health", false, r.error()),
        Ok(r) => match r.json() {
            Some(v) if v["status"] == "ok" => Check::new(
                "health",
                true,
                format!(
                    "status ok, version {}, up {}s",
                    v["version"].as_str().unwrap_or("?"),
                    v["uptime_s"].as_u64().unwrap_or(0)
                ),
            ),
            _ => Check::new(
                "health",
                false,
                "HTTP 200 but the body has no \"status\": \"ok\"",
            ),
        },
    }
}

fn check_ready(r: &Result<Reply, String>) -> Check {
    match r {
        Err(e) => Check::new("ready", false, e.clone()),
        Ok(r) => {
            let checks = r.json().map(|v| v["checks"].clone()).unwrap_or(Value::Null);
            let detail = match checks.as_object() {
                Some(m) => m
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                None => String::new(),
            };
            if r.status == 200 {
                Check::new("ready", true, format!("ready ({detail})"))
            } else {
                Check::new(
                    "ready",
                    false,
                    format!("not ready, HTTP {} ({detail})", r.status),
                )
            }
        }
    }
}

fn check_metrics(r: &Result<Reply, String>) -> Check {
    match r {
        Err(e) => Check::new("metrics", false, e.clone()),
        Ok(r) if r.status != 200 => Check::new("metrics", false, r.error()),
        Ok(r) => {
            let series = r.body.lines().filter(|l| l.starts_with("genesis_")).count();
            if r.body.contains("genesis_") {
                Check::new(
                    "metrics",
                    true,
                    format!("{series} genesis_ series exported"),
                )
            } else {
                Check::new(
                    "metrics",
                    false,
                    "HTTP 200 but no genesis_ metric in the exposition",
                )
            }
        }
    }
}

fn check_flags(status: &Result<Reply, String>) -> Check {
    let r = match status {
        Err(e) => return Check::new("flags", false, format!("/api/status {e}")),
        Ok(r) => r,
    };
    if r.status != 200 {
        let body = r.json().unwrap_or(Value::Null);
        if body["error"]["rule"] == "feature_flag:emergency_shutdown" {
            return Check::new(
                "flags",
                false,
                "emergency_shutdown is on: the API refuses work (HTTP 503)",
            );
        }
        let hint = if r.status == 401 {
            " (pass --api-key)"
        } else {
            ""
        };
        return Check::new("flags", false, format!("/api/status {}{hint}", r.error()));
    }
    let Some(flags) = r.json().and_then(|v| v["flags"].as_array().cloned()) else {
        return Check::new("flags", false, "/api/status has no flags list");
    };
    if flags.is_empty() {
        return Check::new("flags", false, "no feature flags loaded");
    }
    let on = |name: &str| {
        flags
            .iter()
            .any(|f| f["name"] == name && f["enabled"] == true)
    };
    if on("emergency_shutdown") {
        return Check::new(
            "flags",
            false,
            "emergency_shutdown is on: the API refuses work",
        );
    }
    let mut notes: Vec<&str> = ["maintenance_mode", "read_only_mode"]
        .into_iter()
        .filter(|n| on(n))
        .collect();
    // Master switches pulled (defined and off): the server is up but refuses planning,
    // or plans without an LLM.
    let off = |name: &str| {
        flags
            .iter()
            .any(|f| f["name"] == name && f["enabled"] == false)
    };
    if off("orchestration_enabled") {
        notes.push("orchestration_enabled off: new requests are refused");
    }
    if off("llm_integration_enabled") {
        notes.push("llm_integration_enabled off: no LLM calls");
    }
    if !flags.iter().any(|f| f["name"] == "emergency_shutdown") {
        notes.push("emergency_shutdown not defined");
    }
    let mut detail = format!("{} flags loaded, emergency_shutdown off", flags.len());
    if !notes.is_empty() {
        detail.push_str(&format!(" (note: {})", notes.join(", ")));
    }
    Check::new("flags", true, detail)
}

fn check_budget(status: &Result<Reply, String>) -> Check {
    let body = match status {
        Err(e) => return Check::new("budget", false, format!("/api/status {e}")),
        Ok(r) if r.status != 200 => {
            return Check::new("budget", false, format!("/api/status {}", r.error()));
        }
        Ok(r) => r.json().unwrap_or(Value::Null),
    };
    let budget = &body["budget"];
    if !budget.is_object() {
        return Check::new("budget", false, "/api/status has no budget section");
    }
    let spent = budget["spent_today"].as_f64().unwrap_or(0.0);
    match budget["per_day"].as_f64() {
        None => Check::new(
            "budget",
            true,
            format!("no daily budget set (spent ${spent:.4} today)"),
        ),
        Some(limit) => {
            let remaining = budget["remaining_today"].as_f64().unwrap_or(limit - spent);
            if remaining > 0.0 {
                Check::new(
                    "budget",
                    true,
                    format!("${remaining:.4} of ${limit:.4} left today"),
                )
            } else {
                Check::new(
                    "budget",
                    false,
                    format!("daily budget exhausted: spent ${spent:.4} of ${limit:.4}"),
                )
            }
        }
    }
}

/// Runs the five checks in order.
pub(crate) async fn checks(
    base: &str,
    key: Option<&str>,
    timeout: Duration,
) -> Result<Vec<Check>, Failure> {
    let client = genesis::llm::http_client_builder()
        .map_err(|e| Failure::internal(format!("http client: {e}")))?
        .timeout(timeout)
        .build()
        .map_err(|e| Failure::internal(format!("http client: {e}")))?;
    let base = base.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(Failure::rejected(format!(
            "--url {base:?}: must start with http:// or https:// (rule: server_url)"
        )));
    }
    // A URL that does not parse (`http://[::1`) is a typo, not a server that is down.
    if let Err(e) = reqwest::Url::parse(base) {
        return Err(Failure::rejected(format!(
            "--url {base:?} is not a valid URL: {e} (rule: server_url)"
        )));
    }
    let url = |p: &str| format!("{base}{p}");
    let health = get(&client, &url("/health"), key, MAX_HEALTH_BODY).await;
    let ready = get(&client, &url("/ready"), key, MAX_HEALTH_BODY).await;
    let metrics = get(&client, &url("/metrics"), key, MAX_METRICS_BODY).await;
    let status = get(&client, &url("/api/status"), key, MAX_HEALTH_BODY).await;
    Ok(vec![
        check_health(&health),
        check_ready(&ready),
        check_metrics(&metrics),
        check_flags(&status),
        check_budget(&status),
    ])
}

/// `genesis health`: one line per check; exit 1 when any fails.
pub(crate) async fn health(args: HealthArgs) -> Result<(), Failure> {
    if args.timeout == 0 {
        return Err(Failure::rejected(
            "--timeout 0: must be at least 1 second (rule: health_timeout)",
        ));
    }
    let results = checks(
        &args.url,
        args.api_key.as_deref(),
        Duration::from_secs(args.timeout),
    )
    .await?;
    let lines: Vec<String> = results.iter().map(Check::line).collect();
    crate::commands::emit(&lines.join("\n"))?;
    let failed = results.iter().filter(|c| !c.pass).count();
    if failed == 0 {
        Ok(())
    } else {
        let names: Vec<&str> = results.iter().filter(|c| !c.pass).map(|c| c.name).collect();
        Err(Failure::internal(format!(
            "{failed} of {} health checks failed: {}",
            results.len(),
            names.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(status: u16, body: &str) -> Result<Reply, String> {
        Ok(Reply {
            status,
            body: body.to_owned(),
        })
    }

    #[test]
    fn budget_rules() {
        let c = check_budget(&ok(200, r#"{"budget":{"per_day":null,"spent_today":0.5}}"#));
        assert!(c.pass && c.detail.contains("no daily budget"), "{c:?}");
        let c = check_budget(&ok(
            200,
            r#"{"budget":{"per_day":50.0,"spent_today":10.0,"remaining_today":40.0}}"#,
        ));
        assert!(c.pass && c.detail.contains("$40.0000 of $50.0000"), "{c:?}");
        let c = check_budget(&ok(
            200,
            r#"{"budget":{"per_day":5.0,"spent_today":5.0,"remaining_today":0.0}}"#,
        ));
        assert!(!c.pass && c.detail.contains("exhausted"), "{c:?}");
        assert!(!check_budget(&ok(200, "{}")).pass);
        assert!(!check_budget(&Err("unreachable: refused".into())).pass);
    }

    #[test]
    fn flag_rules() {
        let c = check_flags(&ok(
            200,
            r#"{"flags":[{"name":"emergency_shutdown","enabled":false},{"name":"maintenance_mode","enabled":true}]}"#,
        ));
        assert!(c.pass && c.detail.contains("maintenance_mode"), "{c:?}");
        // Audit D5 finding 10: a pulled master switch passed with no note.
        let c = check_flags(&ok(
            200,
            r#"{"flags":[{"name":"emergency_shutdown","enabled":false},{"name":"orchestration_enabled","enabled":false},{"name":"llm_integration_enabled","enabled":true}]}"#,
        ));
        assert!(
            c.pass && c.detail.contains("orchestration_enabled off"),
            "{c:?}"
        );
        assert!(!c.detail.contains("llm_integration_enabled"), "{c:?}");
        let c = check_flags(&ok(
            200,
            r#"{"flags":[{"name":"emergency_shutdown","enabled":true}]}"#,
        ));
        assert!(!c.pass, "{c:?}");
        let c = check_flags(&ok(
            503,
            r#"{"error":{"rule":"feature_flag:emergency_shutdown","message":"x"}}"#,
        ));
        assert!(
            !c.pass && c.detail.contains("emergency_shutdown is on"),
            "{c:?}"
        );
        let c = check_flags(&ok(
            401,
            r#"{"error":{"rule":"api_key","message":"missing credentials"}}"#,
        ));
        assert!(
            !c.pass && c.detail.contains("--api-key") && c.detail.contains("missing credentials"),
            "{c:?}"
        );
        assert!(!check_flags(&ok(200, r#"{"flags":[]}"#)).pass);
    }

    #[test]
    fn health_ready_metrics_rules() {
        assert!(
            check_health(&ok(
                200,
                r#"{"status":"ok","version":"0.1.0","uptime_s":3}"#
            ))
            .pass
        );
        assert!(!check_health(&ok(200, r#"{"status":"starting"}"#)).pass);
        assert!(!check_health(&ok(500, "")).pass);
        let c = check_ready(&ok(503, r#"{"ready":false,"checks":{"store":false}}"#));
        assert!(!c.pass && c.detail.contains("store=false"), "{c:?}");
        assert!(check_metrics(&ok(200, "# HELP x\ngenesis_requests_total{a=\"b\"} 1\n")).pass);
        assert!(!check_metrics(&ok(200, "# nothing here\n")).pass);
        assert_eq!(Check::new("ready", false, "x").line(), "FAIL ready    x");
    }
}
