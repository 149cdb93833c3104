//! `/openapi.json` describes every answer (audit G10, M6): the real server, on
//! loopback with real HTTP agents, is asked for its document and then for a plan, a run
//! to its end, the run's record and events, the run list, cancels, status, agents,
//! readiness and error answers; each body is validated against the schema the document
//! declares for that operation and status. The validator below is strict where JSON
//! Schema is lenient: a property a schema does not declare fails, so a field added to
//! an answer without its schema breaks this test.

use std::collections::BTreeSet;
use std::time::Duration;

use genesis::core::Secret;
use serde_json::{Value, json};

use crate::support::{Stub, TempDir, TestServer, config, error_rule};

const CLIENT: &str = "key-client-000000000000000000";
const OPS: &str = "key-ops-1111111111111111111111";
const SMALL: &str = "Fix the login bug";

/// The OpenAPI document the server served, and a validator over its schemas.
struct Doc(Value);

impl Doc {
    /// The operation `method path` (a path template: `/api/tasks/{id}`).
    fn operation(&self, method: &str, path: &str) -> &Value {
        let op = &self.0["paths"][path][method];
        assert!(
            op.is_object(),
            "the document has no operation {method} {path}"
        );
        op
    }

    /// The schema declared for `status` of `method path` with `content_type`.
    fn schema(&self, method: &str, path: &str, status: u16, content_type: &str) -> &Value {
        let response = &self.operation(method, path)["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} declares no {status} response, yet the server answered it"
        );
        let schema = &response["content"][content_type]["schema"];
        assert!(
            schema.is_object() && schema.as_object().is_some_and(|s| !s.is_empty()),
            "{method} {path} {status} declares no {content_type} schema: {response}"
        );
        schema
    }

    /// Validates a JSON answer of `method path` against its declared schema.
    fn check(&self, method: &str, path: &str, status: u16, body: &Value) {
        let schema = self.schema(method, path, status, "application/json");
        if let Err(e) = self.validate(body, schema, "$", true) {
            panic!("{method} {path} {status}: {e}\nbody: {body}");
        }
    }

    /// Asserts that `body`, a real answer of `method path` changed by `change` (a field
    /// added where the schema declares none, a required one removed, a value of the
    /// wrong type), fails the declared schema: the validator is as strict as it says.
    fn refuses(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
        change: impl Fn(&mut Value),
    ) {
        let schema = self.schema(method, path, status, "application/json");
        let mut changed = body.clone();
        change(&mut changed);
        assert_ne!(&changed, body, "the change changed nothing");
        assert!(
            self.validate(&changed, schema, "$", true).is_err(),
            "{method} {path} {status}: a changed answer passed: {changed}"
        );
    }

    /// `#/components/schemas/X` resolved (repeatedly).
    fn resolve<'a>(&'a self, mut schema: &'a Value) -> &'a Value {
        while let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unsupported $ref {r}"));
            schema = &self.0["components"]["schemas"][name];
            assert!(!schema.is_null(), "$ref {r} names no schema");
        }
        schema
    }

    /// The property names `schema` declares for an object: its `properties`, and those
    /// of every `allOf` part (through `$ref`s).
    fn declared(&self, schema: &Value) -> BTreeSet<String> {
        let schema = self.resolve(schema);
        let mut names: BTreeSet<String> = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for part in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            names.extend(self.declared(part));
        }
        names
    }

    /// Checks `value` against `schema`: `$ref`, `type` (a list with `"null"` too),
    /// `nullable`, `enum`, `const`, `allOf`/`oneOf`/`anyOf`, `properties`, `required`,
    /// `additionalProperties`, `items`, `minimum`/`maximum`. With `strict`, an object
    /// property the schema does not declare fails (unless `additionalProperties`
    /// allows it); the parts of an `allOf` are checked without it, against the union of
    /// what they declare. Nested values are always strict.
    fn validate(
        &self,
        value: &Value,
        schema: &Value,
        at: &str,
        strict: bool,
    ) -> Result<(), String> {
        let schema = self.resolve(schema);
        match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Err(format!("{at}: the schema allows nothing")),
            Value::Object(_) => {}
            other => return Err(format!("{at}: {other} is not a schema")),
        }
        if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
            return Ok(());
        }
        if let Some(t) = schema.get("type") {
            let types: Vec<&str> = match t {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                other => return Err(format!("{at}: bad type {other}")),
            };
            if !types.iter().any(|t| is_type(value, t)) {
                return Err(format!("{at}: {value} is not of type {t}"));
            }
            if value.is_null() {
                return Ok(());
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
        if let Some(c) = schema.get("const")
            && c != value
        {
            return Err(format!("{at}: {value} is not {c}"));
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                return Err(format!("{at}: {n} is below the minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                return Err(format!("{at}: {n} is above the maximum {max}"));
            }
        }
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            for part in parts {
                self.validate(value, part, at, false)?;
            }
            if strict && let Some(o) = value.as_object() {
                let declared = self.declared(schema);
                if let Some(k) = o.keys().find(|k| !declared.contains(*k)) {
                    return Err(format!(
                        "{at}: property {k:?} is not declared by the schema (it declares {declared:?})"
                    ));
                }
            }
        }
        for (keyword, exactly_one) in [("oneOf", true), ("anyOf", false)] {
            if let Some(parts) = schema.get(keyword).and_then(Value::as_array) {
                let results: Vec<Result<(), String>> = parts
                    .iter()
                    .map(|p| self.validate(value, p, at, strict))
                    .collect();
                let passed = results.iter().filter(|r| r.is_ok()).count();
                // JSON Schema itself allows undeclared properties: a standard validator
                // (ajv, jsonschema) refuses a value more than one `oneOf` part matches
                // by its rules, though only one matches strictly (verification V11).
                let standard = parts
                    .iter()
                    .filter(|p| self.validate(value, p, at, false).is_ok())
                    .count();
                if exactly_one && standard > 1 {
                    return Err(format!(
                        "{at}: {standard} of the oneOf schemas match by JSON Schema's rules (undeclared properties allowed), so a standard validator refuses it"
                    ));
                }
                if passed == 0 || (exactly_one && passed > 1) {
                    let why: Vec<String> = results
                        .into_iter()
                        .map(|r| r.err().unwrap_or_else(|| "matches".to_owned()))
                        .collect();
                    return Err(format!(
                        "{at}: {passed} of the {keyword} schemas match: {why:#?}"
                    ));
                }
            }
        }
        if let Some(o) = value.as_object() {
            let properties = schema.get("properties").and_then(Value::as_object);
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !o.contains_key(name) {
                    return Err(format!("{at}: required property {name:?} is missing"));
                }
            }
            let composed = ["allOf", "oneOf", "anyOf"]
                .iter()
                .any(|k| schema.get(*k).is_some());
            for (k, v) in o {
                let here = format!("{at}.{k}");
                match (
                    properties.and_then(|p| p.get(k)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(p), _) => self.validate(v, p, &here, true)?,
                    (None, Some(Value::Bool(true))) => {}
                    (None, Some(extra @ Value::Object(_))) => {
                        self.validate(v, extra, &here, true)?;
                    }
                    // Composed schemas check their keys above.
                    (None, _) if composed || !strict => {}
                    (None, _) => {
                        return Err(format!(
                            "{here}: property {k:?} is not declared by the schema {schema}"
                        ));
                    }
                }
            }
        }
        if let (Some(items), Some(a)) = (schema.get("items"), value.as_array()) {
            for (i, v) in a.iter().enumerate() {
                self.validate(v, items, &format!("{at}[{i}]"), true)?;
            }
        }
        Ok(())
    }
}

/// Whether `value` is of the JSON Schema type `t`.
fn is_type(value: &Value, t: &str) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

/// An error answer to ask for: method, path, the operation's path template, key, body
/// and the expected status.
type ErrorCase = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<Value>,
    u16,
);

fn secrets(keys: &[&str]) -> Vec<Secret> {
    keys.iter().map(|k| Secret::new((*k).to_owned())).collect()
}

/// `method path` as `key` (none: no credentials), with a JSON `body`: the status and
/// the JSON answer.
async fn call(
    s: &TestServer,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = match method {
        "get" => s.client.get(s.url(path)),
        "post" => s.client.post(s.url(path)),
        other => panic!("no method {other}"),
    };
    if let Some(key) = key {
        r = r.bearer_auth(key);
    }
    if let Some(body) = body {
        r = r.json(&body);
    }
    let (status, headers, body) = crate::support::split(r.send().await.unwrap()).await;
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{method} {path}: {status} answered {content_type:?}: {body}"
    );
    (status, body)
}

/// Polls the run as `key` until it leaves `running` (at most 60 s).
async fn wait_finished(s: &TestServer, id: &str, key: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = call(s, "get", &format!("/api/tasks/{id}"), Some(key), None).await;
        assert_eq!(status, 200, "{body}");
        if body["status"] != "running" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {id} still running after 60 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The events of a server-sent event stream to its end: `(id, event, data)` of each.
async fn read_events(r: reqwest::Response) -> Vec<(Option<i64>, String, Value)> {
    let text = tokio::time::timeout(Duration::from_secs(60), r.text())
        .await
        .expect("the event stream did not end within 60 s")
        .unwrap();
    let mut out = Vec::new();
    for frame in text.split("\n\n") {
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        for line in frame.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().parse().unwrap());
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if event.is_empty() {
            continue; // a keep-alive comment, or the end
        }
        let data = serde_json::from_str(&data)
            .unwrap_or_else(|e| panic!("event {event}: data is not JSON ({e}): {data}"));
        out.push((id, event, data));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_schema_the_openapi_document_declares() {
    let dir = TempDir::new("openapi");
    // A run stored before the start whose plan no longer decodes: its record answers in
    // the degraded (`run_store_corrupt`) form.
    let (store, unreadable, _) = crate::journal_run(&dir, "Build a SaaS business for invoices");
    drop(store);
    let db = rusqlite::Connection::open(dir.path().join("data").join("genesis.db")).unwrap();
    db.execute(
        "UPDATE runs SET plan_json = '[' WHERE id = ?1",
        [unreadable.as_str()],
    )
    .unwrap();
    drop(db);
    // Agents take half a second a task: a run cancelled right after its 202 is still
    // running.
    let stub = Stub::start(Duration::from_millis(500)).await;
    let mut c = config(dir.path(), &stub.url);
    c.server.api_keys = secrets(&[CLIENT]);
    c.server.admin_api_keys = secrets(&[OPS]);
    let s = TestServer::start(c, &[]).await;

    let (status, _, doc) = s.get("/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    let doc = Doc(doc);

    // Every 2xx of every operation has a body schema.
    let paths = doc.0["paths"].as_object().unwrap();
    let mut successes = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                if !status.starts_with('2') {
                    continue;
                }
                successes += 1;
                let content = response["content"].as_object();
                assert!(
                    content.is_some_and(|c| !c.is_empty()),
                    "{method} {path} {status} declares no body: {response}"
                );
                for (media, c) in content.into_iter().flatten() {
                    let schema = doc.resolve(&c["schema"]);
                    assert!(
                        schema.as_object().is_some_and(|o| {
                            [
                                "type",
                                "properties",
                                "allOf",
                                "oneOf",
                                "anyOf",
                                "enum",
                                "items",
                            ]
                            .iter()
                            .any(|k| o.contains_key(*k))
                        }),
                        "{method} {path} {status} {media}: empty schema {schema}"
                    );
                }
            }
        }
    }
    assert!(
        successes >= 11,
        "{successes} success responses in the document"
    );

    // Probes and the read-only endpoints.
    let (status, body) = call(&s, "get", "/health", None, None).await;
    assert_eq!(status, 200);
    doc.check("get", "/health", status, &body);
    let (status, body) = call(&s, "get", "/ready", None, None).await;
    assert_eq!(status, 200, "{body}");
    doc.check("get", "/ready", status, &body);
    let (status, body) = call(&s, "get", "/api/status", Some(CLIENT), None).await;
    assert_eq!(status, 200, "{body}");
    doc.check("get", "/api/status", status, &body);
    doc.refuses("get", "/api/status", 200, &body, |b| {
        b["budget"]["surprise"] = json!(1)
    });
    let (status, body) = call(&s, "get", "/api/agents", Some(CLIENT), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_array().map(Vec::len), Some(16), "{body}");
    doc.check("get", "/api/agents", status, &body);

    // Plan mode.
    let (status, body) = call(
        &s,
        "post",
        "/api/tasks",
        Some(CLIENT),
        Some(json!({"description": SMALL})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["tasks"].as_array().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    doc.check("post", "/api/tasks", status, &body);
    let plan = body;
    doc.refuses("post", "/api/tasks", 200, &plan, |b| {
        b["surprise"] = json!(1)
    });
    doc.refuses("post", "/api/tasks", 200, &plan, |b| {
        b["tasks"][0]["surprise"] = json!(1)
    });
    doc.refuses("post", "/api/tasks", 200, &plan, |b| {
        b["tasks"][0]["route"]["layer"] = json!("psychic")
    });
    doc.refuses("post", "/api/tasks", 200, &plan, |b| {
        b.as_object_mut().unwrap().remove("estimated_cost");
    });
    doc.refuses("post", "/api/tasks", 200, &plan, |b| {
        b["depth"] = json!("deep")
    });

    // Run mode, then its idempotent retry.
    let submit = json!({"description": SMALL, "mode": "run", "idempotency_key": "openapi-1"});
    let (status, body) = call(&s, "post", "/api/tasks", Some(CLIENT), Some(submit.clone())).await;
    assert_eq!(status, 202, "{body}");
    doc.check("post", "/api/tasks", status, &body);
    let done = body["run_id"].as_str().unwrap().to_owned();
    let (status, body) = call(&s, "post", "/api/tasks", Some(CLIENT), Some(submit)).await;
    assert_eq!((status, &body["existing"]), (202, &json!(true)), "{body}");
    doc.check("post", "/api/tasks", status, &body);

    // Its events, live to the end: each `data` is the declared event schema, named by
    // its `type`.
    let r = s
        .client
        .get(s.url(&format!("/api/tasks/{done}/events")))
        .bearer_auth(CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = read_events(r).await;
    let kinds: Vec<&str> = events.iter().map(|(_, k, _)| k.as_str()).collect();
    for kind in [
        "run_started",
        "task_started",
        "task_succeeded",
        "cost",
        "run_finished",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let schema = doc.schema("get", "/api/tasks/{id}/events", 200, "text/event-stream");
    for (id, kind, data) in &events {
        assert!(id.is_some(), "journaled event {kind} without an id");
        assert_eq!(data["type"], kind.as_str(), "{data}");
        if let Err(e) = doc.validate(data, schema, "$", true) {
            panic!("event {kind}: {e}\ndata: {data}");
        }
    }
    let (_, _, finished) = events.last().unwrap();
    let mut changed = finished.clone();
    changed["surprise"] = json!(1);
    assert!(
        doc.validate(&changed, schema, "$", true).is_err(),
        "an event with an undeclared field passed: {changed}"
    );
    wait_finished(&s, &done, CLIENT).await;

    // A run cancelled while it runs (202), and again once it ended (200).
    let (status, body) = call(
        &s,
        "post",
        "/api/tasks",
        Some(CLIENT),
        Some(json!({"description": "Write unit tests for the payroll service", "mode": "run"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let cancelled = body["run_id"].as_str().unwrap().to_owned();
    let cancel = format!("/api/tasks/{cancelled}/cancel");
    let (status, body) = call(&s, "post", &cancel, Some(CLIENT), None).await;
    assert_eq!(status, 202, "{body}");
    doc.check("post", "/api/tasks/{id}/cancel", status, &body);
    wait_finished(&s, &cancelled, CLIENT).await;
    let (status, body) = call(&s, "post", &cancel, Some(CLIENT), None).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("cancelled")),
        "{body}"
    );
    doc.check("post", "/api/tasks/{id}/cancel", status, &body);
    // A run that ended before any cancel: 409.
    let (status, body) = call(
        &s,
        "post",
        &format!("/api/tasks/{done}/cancel"),
        Some(CLIENT),
        None,
    )
    .await;
    assert_eq!(
        (status, error_rule(&body).as_str()),
        (409, "run_not_running"),
        "{body}"
    );
    doc.check("post", "/api/tasks/{id}/cancel", status, &body);

    // The run record: a client's (no subject) and an operator's (with it).
    for (key, subject) in [(CLIENT, false), (OPS, true)] {
        for id in [&done, &cancelled] {
            let (status, body) =
                call(&s, "get", &format!("/api/tasks/{id}"), Some(key), None).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body.get("subject").is_some(), subject, "{body}");
            doc.check("get", "/api/tasks/{id}", status, &body);
            // Fields the handler inserts, and the stored run's, are declared; others are not.
            doc.refuses("get", "/api/tasks/{id}", 200, &body, |b| {
                b["surprise"] = json!(1)
            });
            doc.refuses("get", "/api/tasks/{id}", 200, &body, |b| {
                b["tasks"][0]["surprise"] = json!(1)
            });
            doc.refuses("get", "/api/tasks/{id}", 200, &body, |b| {
                b["live"] = json!("yes")
            });
        }
    }
    // The degraded record of a run that does not read back.
    let (status, body) = call(
        &s,
        "get",
        &format!("/api/tasks/{unreadable}"),
        Some(OPS),
        None,
    )
    .await;
    assert_eq!(
        (status, error_rule(&body).as_str()),
        (200, "run_store_corrupt"),
        "{body}"
    );
    doc.check("get", "/api/tasks/{id}", status, &body);

    // The list, a page at a time (the operator sees the three runs, with subjects).
    let (status, body) = call(&s, "get", "/api/tasks?limit=2", Some(OPS), None).await;
    assert_eq!(status, 200, "{body}");
    doc.check("get", "/api/tasks", status, &body);
    doc.refuses("get", "/api/tasks", 200, &body, |b| {
        b["runs"][0]["surprise"] = json!(1)
    });
    doc.refuses("get", "/api/tasks", 200, &body, |b| {
        b.as_object_mut().unwrap().remove("next_cursor");
    });
    let cursor = body["next_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    let (status, body) = call(
        &s,
        "get",
        &format!("/api/tasks?limit=2&cursor={cursor}"),
        Some(OPS),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["runs"].as_array().map(Vec::len), &body["next_cursor"]),
        (Some(1), &Value::Null),
        "{body}"
    );
    doc.check("get", "/api/tasks", status, &body);
    let (status, body) = call(&s, "get", "/api/tasks", Some(CLIENT), None).await;
    assert_eq!(status, 200, "{body}");
    doc.check("get", "/api/tasks", status, &body);

    // Error answers: method, path, the operation's path template, key, body, status.
    let big = json!({"description": "x".repeat(70_000)});
    let errors: Vec<ErrorCase> = vec![
        ("get", "/api/tasks", "/api/tasks", None, None, 401),
        (
            "get",
            "/api/tasks?limit=0",
            "/api/tasks",
            Some(CLIENT),
            None,
            400,
        ),
        (
            "post",
            "/api/tasks",
            "/api/tasks",
            Some(CLIENT),
            Some(json!({"description": 5})),
            400,
        ),
        (
            "post",
            "/api/tasks",
            "/api/tasks",
            Some(CLIENT),
            Some(big),
            413,
        ),
        (
            "get",
            "/api/tasks/run-nope",
            "/api/tasks/{id}",
            Some(CLIENT),
            None,
            404,
        ),
        (
            "get",
            "/api/tasks/run-nope/events",
            "/api/tasks/{id}/events",
            Some(CLIENT),
            None,
            404,
        ),
        (
            "post",
            "/api/tasks/run-nope/cancel",
            "/api/tasks/{id}/cancel",
            Some(CLIENT),
            None,
            404,
        ),
    ];
    for (method, path, template, key, body, expected) in errors {
        let (status, answer) = call(&s, method, path, key, body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        error_rule(&answer);
        doc.check(method, template, status, &answer);
    }
    // A body that is not a task object, and one not declared JSON (audit O11 M1, M4).
    let (status, answer) = call(&s, "post", "/api/tasks", Some(CLIENT), Some(json!(["x"]))).await;
    assert_eq!(status, 400, "{answer}");
    doc.check("post", "/api/tasks", status, &answer);
    let r = s
        .client
        .post(s.url("/api/tasks"))
        .bearer_auth(CLIENT)
        .header("content-type", "text/plain")
        .body(json!({"description": "Fix the login bug"}).to_string());
    let (status, _, answer) = crate::support::split(r.send().await.unwrap()).await;
    assert_eq!(
        (status, error_rule(&answer)),
        (415, "content_type".to_owned())
    );
    doc.check("post", "/api/tasks", status, &answer);
    // A plan that fails validation: the 422 carries the error and the plan
    // (verification V11 HIGH-1: it matched both shapes of the old `oneOf`).
    let (status, answer) = call(
        &s,
        "post",
        "/api/tasks",
        Some(CLIENT),
        Some(json!({"description": "🚀🔥💯"})),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(error_rule(&answer), "plan_validation");
    assert!(answer["plan"].is_object(), "{answer}");
    doc.check("post", "/api/tasks", status, &answer);
}

/// Audit O11 H2, H3: the document says how to authenticate (security schemes, and a
/// requirement on every `/api` operation; none on the probes) and declares the answers
/// the layers around every handler give: 401, 429 and 503, the last two with
/// `Retry-After`; the 202 of a run with its `Location`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_declares_authentication_and_the_layers_answers() {
    let dir = TempDir::new("openapi-auth");
    let stub = Stub::start(Duration::ZERO).await;
    let c = config(dir.path(), &stub.url);
    let s = TestServer::start(c, &[]).await;
    let (status, _, doc) = s.get("/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer", "{schemes}");
    assert_eq!(
        (&schemes["api_key"]["in"], &schemes["api_key"]["name"]),
        (&json!("header"), &json!("x-api-key")),
        "{schemes}"
    );
    let mut api_operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let security = op["security"].as_array().unwrap_or_else(|| {
                panic!("{method} {path} declares no security requirement: {op}")
            });
            if !path.starts_with("/api/") {
                assert_eq!(security, &vec![json!({})], "{method} {path} is open");
                continue;
            }
            api_operations += 1;
            assert!(
                security.contains(&json!({"bearer": []}))
                    && security.contains(&json!({"api_key": []})),
                "{method} {path}: {security:?}"
            );
            let responses = &op["responses"];
            for status in ["401", "429", "503"] {
                assert!(
                    responses.get(status).is_some(),
                    "{method} {path} does not declare {status}"
                );
            }
            for status in ["429", "503"] {
                assert!(
                    responses[status]["headers"].get("Retry-After").is_some(),
                    "{method} {path} {status} has no Retry-After: {}",
                    responses[status]
                );
            }
            // Verification V11 M-4: the headers every answer or request may carry.
            assert!(
                responses["401"]["headers"]
                    .get("WWW-Authenticate")
                    .is_some(),
                "{method} {path}: {}",
                responses["401"]
            );
            for (status, response) in responses.as_object().unwrap() {
                assert!(
                    response["headers"].get("x-correlation-id").is_some(),
                    "{method} {path} {status} has no x-correlation-id"
                );
            }
            let names: Vec<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "header")
                .filter_map(|p| p["name"].as_str())
                .collect();
            assert!(
                names.contains(&"x-correlation-id"),
                "{method} {path}: {names:?}"
            );
            if path.ends_with("/events") {
                assert!(names.contains(&"Last-Event-ID"), "{path}: {names:?}");
            }
            if path == "/api/tasks" && method == "post" {
                assert!(names.contains(&"Idempotency-Key"), "{names:?}");
            }
        }
    }
    assert!(api_operations >= 6, "{api_operations} /api operations");
    let create = &doc["paths"]["/api/tasks"]["post"]["responses"];
    assert!(
        create["202"]["headers"].get("Location").is_some(),
        "{create}"
    );
    assert!(create.get("415").is_some(), "{create}");
    let limit = doc["paths"]["/api/tasks"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()
        .clone();
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(1000)),
        "{limit}"
    );
}
