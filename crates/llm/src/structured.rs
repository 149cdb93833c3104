//! Structured JSON output: ask, parse, validate, and repair once.

use genesis_core::Usd;
use serde_json::Value;

use crate::schema::{JsonSchema, Violation};
use crate::{Completion, CompletionRequest, LlmClient, LlmError, Message, Usage};

/// The result of [`complete_structured`].
#[derive(Debug, Clone, PartialEq)]
pub struct StructuredCompletion {
    /// The validated JSON value.
    pub value: Value,
    /// Tokens used by all attempts together.
    pub usage: Usage,
    /// Cost of all attempts, when the client knows its price.
    pub cost: Option<Usd>,
    /// 1 when the first reply was valid, 2 when the repair retry was needed.
    pub attempts: u32,
    /// The last completion (the one whose text produced `value`).
    pub completion: Completion,
    /// True when some attempt's answer carried no token usage (see
    /// [`Completion::usage_missing`]): `cost` then includes an upper-bound estimate.
    pub usage_missing: bool,
}

/// A [`complete_structured_metered`] call that failed, with what the calls that
/// answered used: a reply that was not the JSON asked for was still paid for.
#[derive(Debug)]
pub struct StructuredFailure {
    /// Why it failed.
    pub error: LlmError,
    /// Tokens of the attempts that answered (zero when none did).
    pub usage: Usage,
    /// Cost of the attempts that answered, when the client knows its price.
    pub cost: Option<Usd>,
    /// Attempts that answered (0, 1 or 2).
    pub answered: u32,
    /// True when an answer carried no token usage (see [`Completion::usage_missing`]).
    pub usage_missing: bool,
}

impl StructuredFailure {
    fn new(error: LlmError, answered: &[&Completion]) -> Self {
        StructuredFailure {
            error,
            usage: answered.iter().fold(Usage::default(), |u, c| u + c.usage),
            cost: answered.iter().fold(None, |a, c| add_cost(a, c.cost)),
            answered: u32::try_from(answered.len()).unwrap_or(u32::MAX),
            usage_missing: answered.iter().any(|c| c.usage_missing),
        }
    }
}

enum Problem {
    NotJson(serde_json::Error),
    Violations(Vec<Violation>),
}

impl Problem {
    /// The message sent back to the model on the repair turn.
    fn repair_prompt(&self) -> String {
        match self {
            Problem::NotJson(e) => format!(
                "Your previous reply was not valid JSON ({e}). Reply again with only the \
                 corrected JSON value that matches the schema, with no prose and no code fences."
            ),
            Problem::Violations(v) => {
                let list: Vec<String> = v.iter().map(|v| format!("- {v}")).collect();
                format!(
                    "Your previous reply does not match the required JSON schema:\n{}\nReply again \
                     with only the corrected JSON value, with no prose and no code fences.",
                    list.join("\n")
                )
            }
        }
    }
}

/// Finds the JSON value in a model reply: the whole text, else the body of a
/// Markdown code fence, else the span from the first `{`/`[` to the last `}`/`]`.
///
/// # Errors
/// The parse error of the whole text when no candidate parses.
pub fn extract_json(text: &str) -> Result<Value, serde_json::Error> {
    let trimmed = text.trim();
    let first_err = match serde_json::from_str(trimmed) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    if let Some(start) = trimmed.find("```") {
        let after = &trimmed[start + 3..];
        // Skip an info string such as `json`.
        let body = after.split_once('\n').map_or(after, |(_, rest)| rest);
        if let Some(end) = body.find("```")
            && let Ok(v) = serde_json::from_str(body[..end].trim())
        {
            return Ok(v);
        }
    }
    let open = trimmed.find(['{', '[']);
    let close = trimmed.rfind(['}', ']']);
    if let (Some(open), Some(close)) = (open, close)
        && open < close
        && let Ok(v) = serde_json::from_str(&trimmed[open..=close])
    {
        return Ok(v);
    }
    Err(first_err)
}

fn check(schema: &JsonSchema, text: &str) -> Result<Value, Problem> {
    let value = extract_json(text).map_err(Problem::NotJson)?;
    let violations = schema.violations(&value);
    if violations.is_empty() {
        Ok(value)
    } else {
        Err(Problem::Violations(violations))
    }
}

fn add_cost(a: Option<Usd>, b: Option<Usd>) -> Option<Usd> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

/// Asks for JSON matching `schema`, validates the reply, and on failure sends the
/// problem back to the model once (the repair retry). Returns the value with the usage
/// and cost of every attempt.
///
/// The request is sent with `json_schema` set to `schema` (OpenAI-compatible clients
/// pass it as `response_format`; Anthropic gets it as a system instruction). A reply
/// wrapped in prose or a code fence is accepted if the JSON inside validates.
///
/// # Errors
/// [`LlmError::InvalidSchema`] before any call if `schema` uses an unsupported keyword;
/// any error of the client; [`LlmError::InvalidJson`] or [`LlmError::SchemaViolation`]
/// (naming the failing path) when the repaired reply is still wrong.
pub async fn complete_structured<C: LlmClient + ?Sized>(
    client: &C,
    req: &CompletionRequest,
    schema: &Value,
) -> Result<StructuredCompletion, LlmError> {
    complete_structured_metered(client, req, schema)
        .await
        .map_err(|f| f.error)
}

/// [`complete_structured`], keeping the usage and cost of the attempts that answered
/// when it fails (an invalid reply, a repair turn that failed or was refused): every
/// paid call can be counted, whatever became of its answer.
///
/// # Errors
/// As [`complete_structured`], inside a [`StructuredFailure`].
pub async fn complete_structured_metered<C: LlmClient + ?Sized>(
    client: &C,
    req: &CompletionRequest,
    schema: &Value,
) -> Result<StructuredCompletion, StructuredFailure> {
    let compiled = JsonSchema::compile(schema).map_err(|e| StructuredFailure::new(e, &[]))?;
    let mut request = req.clone();
    request.json_schema = Some(schema.clone());

    let first = client
        .complete(&request)
        .await
        .map_err(|e| StructuredFailure::new(e, &[]))?;
    let problem = match check(&compiled, &first.text) {
        Ok(value) => {
            return Ok(StructuredCompletion {
                value,
                usage: first.usage,
                cost: first.cost,
                attempts: 1,
                usage_missing: first.usage_missing,
                completion: first,
            });
        }
        Err(problem) => problem,
    };
    tracing::debug!(
        model = %client.model(),
        reason = match &problem { Problem::NotJson(_) => "not_json", Problem::Violations(_) => "schema" },
        "structured output invalid; sending one repair turn"
    );
    request
        .messages
        .push(Message::assistant(first.text.clone()));
    request
        .messages
        .push(Message::user(problem.repair_prompt()));
    let second = match client.complete(&request).await {
        Ok(c) => c,
        Err(e) => return Err(StructuredFailure::new(e, &[&first])),
    };
    let usage = first.usage + second.usage;
    let cost = add_cost(first.cost, second.cost);
    let usage_missing = first.usage_missing || second.usage_missing;
    let error = match check(&compiled, &second.text) {
        Ok(value) => {
            return Ok(StructuredCompletion {
                value,
                usage,
                cost,
                attempts: 2,
                usage_missing,
                completion: second,
            });
        }
        Err(Problem::NotJson(source)) => LlmError::InvalidJson {
            model: second.model.clone(),
            attempts: 2,
            reason: format!(
                "reply of {} characters does not parse",
                second.text.chars().count()
            ),
            source,
        },
        Err(Problem::Violations(v)) => {
            let first_violation = v.into_iter().next();
            let (path, reason) = first_violation.map_or_else(
                || (String::new(), "unknown violation".to_owned()),
                |v| {
                    (
                        if v.path.is_empty() {
                            "(root)".to_owned()
                        } else {
                            v.path
                        },
                        v.reason,
                    )
                },
            );
            LlmError::SchemaViolation {
                model: second.model.clone(),
                attempts: 2,
                path,
                reason,
            }
        }
    };
    Err(StructuredFailure::new(error, &[&first, &second]))
}

/// [`complete_structured`] returning only the value: validation plus one repair retry.
///
/// # Errors
/// As [`complete_structured`].
pub async fn complete_json<C: LlmClient + ?Sized>(
    client: &C,
    req: &CompletionRequest,
    schema: &Value,
) -> Result<Value, LlmError> {
    Ok(complete_structured(client, req, schema).await?.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScriptedClient;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        #[test]
        fn extract_json_never_panics(s in "\\PC{0,64}") {
            let _ = extract_json(&s);
        }

        #[test]
        fn wrapped_json_is_found(n in any::<i64>(), prefix in "[a-zA-Z :]{0,20}", suffix in "[a-zA-Z .]{0,20}") {
            let text = format!("{prefix}{{\"n\": {n}}}{suffix}");
            prop_assert_eq!(extract_json(&text).unwrap(), json!({"n": n}));
        }
    }

    #[test]
    fn extracts_json_from_fences_and_prose() {
        assert_eq!(extract_json(" {\"a\":1} ").unwrap(), json!({"a": 1}));
        assert_eq!(
            extract_json("```json\n{\"a\":1}\n```").unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            extract_json("Here you go: [1, 2] hope it helps").unwrap(),
            json!([1, 2])
        );
        assert!(extract_json("no json here").is_err());
        assert!(extract_json("{\"a\": }").is_err());
    }

    #[tokio::test]
    async fn first_valid_reply_is_one_attempt() {
        let client = ScriptedClient::new("m")
            .then_completion(Completion::text("m", r#"{"ok":true}"#).with_usage(Usage::new(10, 2)));
        let out = complete_structured(
            &client,
            &CompletionRequest::user("q"),
            &json!({"type": "object"}),
        )
        .await
        .unwrap();
        assert_eq!(out.attempts, 1);
        assert_eq!(out.value, json!({"ok": true}));
        assert_eq!(out.usage, Usage::new(10, 2));
        assert_eq!(
            client.requests()[0].json_schema,
            Some(json!({"type": "object"}))
        );
    }

    #[tokio::test]
    async fn repair_turn_carries_the_violation() {
        let schema =
            json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
        let client = ScriptedClient::new("m")
            .then_completion(Completion::text("m", r#"{"n":"three"}"#).with_usage(Usage::new(5, 5)))
            .then_completion(Completion::text("m", r#"{"n":3}"#).with_usage(Usage::new(7, 1)));
        let out = complete_structured(&client, &CompletionRequest::user("q"), &schema)
            .await
            .unwrap();
        assert_eq!(
            (out.attempts, out.value, out.usage),
            (2, json!({"n": 3}), Usage::new(12, 6))
        );
        let repair = &client.requests()[1];
        assert_eq!(repair.messages.len(), 3);
        assert_eq!(repair.messages[1], Message::assistant(r#"{"n":"three"}"#));
        assert!(
            repair.messages[2]
                .content
                .contains("/n: expected integer, got string \"three\""),
            "{}",
            repair.messages[2].content
        );
    }

    #[tokio::test]
    async fn invalid_schema_fails_before_any_call() {
        let client = ScriptedClient::new("m").then_text("{}");
        let err = complete_json(
            &client,
            &CompletionRequest::user("q"),
            &json!({"oneOf": []}),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, LlmError::InvalidSchema { .. }), "{err}");
        assert_eq!(client.calls(), 0);
    }

    #[tokio::test]
    async fn twice_not_json_is_invalid_json() {
        let client = ScriptedClient::new("m")
            .then_text("sure!")
            .then_text("ok here: {oops");
        let err = complete_json(&client, &CompletionRequest::user("q"), &json!({}))
            .await
            .unwrap_err();
        assert!(
            matches!(err, LlmError::InvalidJson { attempts: 2, .. }),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}
