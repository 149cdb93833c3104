//! Built-in agent backends: HTTP services (the `http` feature) and local commands. (LLM
//! agents live in [`crate::providers::LlmAgent`].)

mod command;
#[cfg(feature = "http")]
mod http;
mod http_config;

pub use command::{CommandAgent, CommandAgentConfig, NotAllowed};
#[cfg(feature = "http")]
pub use http::HttpAgent;
#[cfg(feature = "http")]
pub(crate) use http::HttpAgents;
pub use http_config::HttpAgentConfig;
#[cfg(not(feature = "http"))]
pub(crate) use without_http::HttpAgents;

/// Refuses an HTTP backend in a build without the `http` feature, naming the backend and
/// the feature: a `[backends.<id>] type = "http"` entry is never silently dropped.
pub(crate) fn require_http(id: &str, http_enabled: bool) -> Result<(), crate::GenesisError> {
    if http_enabled {
        Ok(())
    } else {
        Err(http_disabled(id))
    }
}

/// The refusal: names the backend and the feature.
fn http_disabled(id: &str) -> crate::GenesisError {
    crate::GenesisError::Config {
        message: format!(
            "backends.{id}: type = \"http\" needs the `http` feature of the genesis crate, \
             which this build was compiled without"
        ),
    }
}

/// A build without the `http` feature: no HTTP agent can be made.
#[cfg(not(feature = "http"))]
mod without_http {
    use std::sync::Arc;

    use super::{HttpAgentConfig, http_disabled};
    use crate::GenesisError;
    use crate::run::Agent;

    /// Refuses every HTTP agent (`require_http` refuses before it gets here).
    pub(crate) struct HttpAgents;

    impl HttpAgents {
        /// Nothing to hold.
        pub(crate) fn new() -> Self {
            HttpAgents
        }

        /// Refuses, naming the backend and the feature.
        pub(crate) fn agent(
            &mut self,
            id: &str,
            _config: &HttpAgentConfig,
        ) -> Result<Arc<dyn Agent>, GenesisError> {
            Err(http_disabled(id))
        }
    }
}

use genesis_core::Usd;
use genesis_telemetry::catalogue as c;
use serde::Serialize;

use super::{AgentRequest, CostBounds};

/// The JSON an HTTP or command agent receives.
#[derive(Debug, Serialize)]
pub(crate) struct WireRequest<'a> {
    run_id: &'a str,
    request: &'a str,
    agent: &'a str,
    model: Option<&'a str>,
    attempt: u32,
    task: &'a genesis_core::Task,
    inputs: &'a [super::TaskInput],
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<&'a str>,
    /// The rule the previous answer was flagged for, when `previous` is its quarantine.
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_quarantined: Option<&'a str>,
    /// What the call must not cost more than, in USD ([`AgentRequest::max_cost`]):
    /// sent when the agent has a `max_cost_usd` and a run or day budget is in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_cost_usd: Option<f64>,
}

impl<'a> WireRequest<'a> {
    pub(crate) fn from(r: &'a AgentRequest) -> Self {
        WireRequest {
            run_id: r.run_id.as_str(),
            request: &r.request,
            agent: r.agent.as_str(),
            model: r.model.as_ref().map(|m| m.as_str()),
            attempt: r.attempt,
            task: &r.task,
            inputs: &r.inputs,
            previous: r.previous.as_deref(),
            previous_quarantined: r.previous_quarantined.as_deref(),
            max_cost_usd: r.max_cost.map(Usd::as_f64),
        }
    }
}

/// `min_cost_usd` and `max_cost_usd` of an HTTP or command agent that do not go
/// together.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum InvalidCostLimits {
    /// A least cost without a most.
    #[error("min_cost_usd {min} needs max_cost_usd (rule: backend_cost_limits)")]
    MinWithoutMax {
        /// The least cost.
        min: Usd,
    },
    /// The least cost above the most.
    #[error("min_cost_usd {min} is above max_cost_usd {max} (rule: backend_cost_limits)")]
    MinAboveMax {
        /// The least cost.
        min: Usd,
        /// The most.
        max: Usd,
    },
}

/// Checks an agent's `min_cost_usd` against its `max_cost_usd`.
fn check_cost_limits(min: Option<Usd>, max: Option<Usd>) -> Result<(), InvalidCostLimits> {
    match (min, max) {
        (Some(min), None) => Err(InvalidCostLimits::MinWithoutMax { min }),
        (Some(min), Some(max)) if min > max => Err(InvalidCostLimits::MinAboveMax { min, max }),
        _ => Ok(()),
    }
}

/// The cost bounds of an HTTP or command agent's call: none without `max_cost_usd`
/// (the planned estimate is set aside, and the call is charged what it reports);
/// else up to `max_cost_usd`, and at least `min_cost_usd` (default: all of
/// `max_cost_usd`, so a call is made only when its whole limit fits). A
/// `min_cost_usd` above `max_cost_usd` counts as `max_cost_usd` (the configuration
/// path refuses it, [`InvalidCostLimits`]; an agent built in code is never sent more
/// than its `max_cost_usd`).
fn cost_bounds(min: Option<Usd>, max: Option<Usd>) -> Option<CostBounds> {
    let ceiling = max?;
    let floor = match min {
        Some(min) if min <= ceiling => min,
        _ => ceiling,
    };
    Some(CostBounds { floor, ceiling })
}

/// The JSON an HTTP or command agent may answer with: `output` (required), and
/// optionally `cost_usd` (a non-negative number of dollars), `followups`
/// (`[{kind, description}]`), `input_tokens` and `output_tokens` (non-negative
/// integers) and `model` (a string). An HTTP answer is read as this JSON only when its
/// `Content-Type` says JSON ([`parse_json_output`]); any other is the output as written
/// ([`text_output`]). A command agent's stdout has no content type: it is this JSON
/// when it parses as it, else the output as written ([`parse_output`]). Fields it does
/// not know are accepted and warned about ([`UnknownFieldWarnings`]).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct WireResponse {
    pub(crate) output: String,
    #[serde(default)]
    pub(crate) cost_usd: Option<f64>,
    #[serde(default)]
    pub(crate) followups: Vec<super::FollowUp>,
    #[serde(default)]
    pub(crate) input_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) output_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) model: Option<String>,
    /// Fields this version does not know (agents evolve): accepted, and warned about.
    #[serde(flatten)]
    pub(crate) unknown: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

/// Longest `model` an agent may report, in bytes.
const MAX_MODEL_BYTES: usize = 256;

/// Most `input_tokens` (and, separately, `output_tokens`) one answer may report: a
/// hundred million, beyond any model's context. A larger count is a malformed answer
/// (rule `agent_answer`, naming the field and value), so one agent cannot push
/// `genesis_llm_tokens_total` and the run's totals to the integer limits (audit V10 #4:
/// 2^63 became i64::MAX in the task report and u64::MAX in `run_finished`).
const MAX_REPORTED_TOKENS: u64 = 100_000_000;

/// Most bytes of an agent's body quoted in an error message.
pub(crate) const BODY_SNIPPET_BYTES: usize = 120;

/// Who answered, for the errors and warnings about the answer.
#[derive(Clone, Copy)]
pub(crate) struct Answerer<'a> {
    /// The agent called.
    pub(crate) agent: &'a genesis_core::AgentId,
    /// The run the call belongs to.
    pub(crate) run_id: &'a genesis_core::RunId,
    /// Where the agent's unknown fields are remembered.
    pub(crate) warnings: &'a UnknownFieldWarnings,
}

/// A command agent's stdout (it has no content type): the agent answer when it parses
/// as one ([`WireResponse`], checked as [`parse_json_output`] checks it), else the output
/// as written ([`text_output`]), so a program whose plain output happens to be JSON of
/// another shape keeps it.
///
/// # Errors
/// As [`parse_json_output`] for a body that parses as the agent answer, and
/// [`AgentError::Unusable`](super::AgentError::Unusable) (rule `empty_answer`) for an
/// empty or blank one.
pub(crate) fn parse_output(
    body: &str,
    from: Answerer<'_>,
) -> Result<super::AgentOutput, super::AgentError> {
    match serde_json::from_str::<WireResponse>(body) {
        Ok(w) => wire_output(w, body, from),
        Err(_) => text_output(body, from.agent),
    }
}

/// An answer that is not the agent-answer JSON (an HTTP answer whose `Content-Type` is
/// not JSON): the output exactly as written, costing nothing (audit G10 H2: a
/// `text/plain` body was sniffed as JSON and charged the `cost_usd` its text held).
///
/// # Errors
/// [`AgentError::Unusable`](super::AgentError::Unusable) with rule `empty_answer` when
/// it is empty or only whitespace (audit G10 H1).
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn text_output(
    body: &str,
    agent: &genesis_core::AgentId,
) -> Result<super::AgentOutput, super::AgentError> {
    if let Some(err) = empty_answer(body, agent, Usd::ZERO, 0, 0) {
        return Err(err);
    }
    Ok(super::AgentOutput {
        text: body.to_owned(),
        ..super::AgentOutput::default()
    })
}

/// An answer that declared itself JSON: it must be the agent answer
/// (`{"output": "...", "cost_usd": ..., "followups": [...], "input_tokens": ...,
/// "output_tokens": ..., "model": "..."}`). Anything else — JSON cut off, another shape,
/// `output` missing, a field of the wrong type, a `cost_usd` that is negative — is no
/// usable answer: the agent may have done (and billed) the work, so a call held to
/// `max_cost_usd` is charged that limit, and it is not retried on the same agent (it
/// would answer alike); the task moves on to its alternatives. Taking it as text would
/// pass the broken body on as the task's output and charge nothing (audit R8 D2).
///
/// # Errors
/// [`AgentError::Unanswered`](super::AgentError::Unanswered) (rule `agent_answer`) as
/// above; [`AgentError::Unusable`](super::AgentError::Unusable) (rule `empty_answer`)
/// when `output` is empty or only whitespace, charged the `cost_usd` it reports.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn parse_json_output(
    body: &str,
    from: Answerer<'_>,
) -> Result<super::AgentOutput, super::AgentError> {
    match serde_json::from_str::<WireResponse>(body) {
        Ok(w) => wire_output(w, body, from),
        Err(e) => Err(malformed(
            from.agent,
            &format!("the answer is declared JSON but is not {{\"output\": \"...\", ...}}: {e}"),
            body,
        )),
    }
}

/// [`AgentError::Unanswered`](super::AgentError::Unanswered) for a malformed answer:
/// `why`, a snippet of the body, the rule `agent_answer`; not retried.
fn malformed(agent: &genesis_core::AgentId, why: &str, body: &str) -> super::AgentError {
    super::AgentError::Unanswered {
        agent: agent.clone(),
        message: format!(
            "{why}; body {:?} (rule: agent_answer)",
            snippet(body, BODY_SNIPPET_BYTES)
        ),
        retryable: false,
    }
}

/// [`AgentError::Unusable`](super::AgentError::Unusable) (rule `empty_answer`) when
/// `output` is empty or [`blank`], charged what the answer reported.
fn empty_answer(
    output: &str,
    agent: &genesis_core::AgentId,
    cost: Usd,
    input_tokens: u64,
    output_tokens: u64,
) -> Option<super::AgentError> {
    blank(output).then(|| super::AgentError::Unusable {
        agent: agent.clone(),
        rule: "empty_answer".to_owned(),
        message: empty_message(output),
        cost,
        input_tokens,
        output_tokens,
    })
}

/// "the answer is empty (…)", saying what a [`blank`] answer held.
pub(crate) fn empty_message(output: &str) -> String {
    match output.chars().count() {
        0 => "the answer is empty (no characters)".to_owned(),
        1 => "the answer is empty (1 character, whitespace or invisible)".to_owned(),
        n => format!("the answer is empty ({n} characters, all whitespace or invisible)"),
    }
}

/// Whether `text` shows nothing: every character is whitespace or [`invisible`]
/// (audit V10 #7: `" \u{a0}\u{200b} "` passed `trim()` and succeeded).
pub(crate) fn blank(text: &str) -> bool {
    text.chars().all(|c| c.is_whitespace() || invisible(c))
}

/// Characters that take no room and show nothing, which [`char::is_whitespace`] (the
/// Unicode `White_Space` set, U+00A0 NO-BREAK SPACE, U+2000–U+200A, U+3000 and the
/// rest included) does not cover: the invisible format characters (category Cf) —
/// U+00AD soft hyphen, U+061C, U+180E, U+200B–U+200F (zero-width space, non-joiner,
/// joiner, direction marks), U+202A–U+202E and U+2066–U+2069 (direction embeddings and
/// isolates), U+2060–U+2064 (word joiner, invisible operators), U+206A–U+206F,
/// U+FEFF (byte-order mark), U+E0001 and U+E0020–U+E007F (tags) — and the blank
/// fillers and selectors that are not Cf: U+034F combining grapheme joiner, U+115F,
/// U+1160, U+3164 and U+FFA0 (Hangul fillers), U+FE00–U+FE0F and U+E0100–U+E01EF
/// (variation selectors). A fixed list, not the whole Cf category (no Unicode table
/// dependency): U+0600–U+0605 and U+110BD, which Cf holds, are drawn.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

/// The output of an answer that parsed as [`WireResponse`], checked: a `cost_usd` that
/// is negative (or not finite), a `model` longer than 256 bytes or with control
/// characters, or an `input_tokens` or `output_tokens` above [`MAX_REPORTED_TOKENS`],
/// is a malformed answer (rule `agent_answer`, naming the value;
/// audit G10 D4: a negative cost became 0 without a word). Its cost is counted in
/// `genesis_cost_usd` and its tokens in `genesis_llm_tokens_total` here, once per call,
/// as LLM calls are in [`crate::providers`]: the metrics count where money and tokens
/// are spent, not per task. Unknown fields are warned about.
fn wire_output(
    w: WireResponse,
    body: &str,
    from: Answerer<'_>,
) -> Result<super::AgentOutput, super::AgentError> {
    let cost = match w.cost_usd {
        None => Usd::ZERO,
        Some(v) => Usd::new(v).map_err(|_| {
            malformed(
                from.agent,
                &format!("cost_usd {v} is not a cost (a non-negative, finite number of dollars)"),
                body,
            )
        })?,
    };
    let model = match w.model.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(m) if m.len() > MAX_MODEL_BYTES || m.chars().any(char::is_control) => {
            return Err(malformed(
                from.agent,
                &format!(
                    "model {:?} is not a model name (at most {MAX_MODEL_BYTES} bytes, no control characters)",
                    snippet(m, 64)
                ),
                body,
            ));
        }
        Some(m) => Some(genesis_core::ModelId::new(m)),
    };
    let (input_tokens, output_tokens) = (w.input_tokens.unwrap_or(0), w.output_tokens.unwrap_or(0));
    for (field, n) in [
        ("input_tokens", input_tokens),
        ("output_tokens", output_tokens),
    ] {
        if n > MAX_REPORTED_TOKENS {
            return Err(malformed(
                from.agent,
                &format!(
                    "{field} {n} is not a plausible token count (at most {MAX_REPORTED_TOKENS} per answer)"
                ),
                body,
            ));
        }
    }
    from.warnings.warn(
        from.agent,
        from.run_id,
        w.unknown.keys().map(String::as_str),
    );
    if cost > Usd::ZERO {
        metrics::gauge!(c::COST_USD).increment(cost.as_f64());
    }
    if input_tokens > 0 {
        metrics::counter!(c::LLM_TOKENS_TOTAL, c::labels::DIRECTION => "input")
            .increment(input_tokens);
    }
    if output_tokens > 0 {
        metrics::counter!(c::LLM_TOKENS_TOTAL, c::labels::DIRECTION => "output")
            .increment(output_tokens);
    }
    if let Some(err) = empty_answer(&w.output, from.agent, cost, input_tokens, output_tokens) {
        return Err(err);
    }
    Ok(super::AgentOutput {
        text: w.output,
        cost,
        input_tokens,
        output_tokens,
        model,
        followups: w.followups,
        ..super::AgentOutput::default()
    })
}

/// Most `(run, field)` pairs an agent remembers having warned about; past it the memory
/// starts again (a field may then be warned about twice in a long run).
const MAX_WARNED: usize = 1024;

/// Most unknown fields of one answer warned about (an answer may carry many).
const MAX_FIELDS_WARNED: usize = 16;

/// The fields of an agent's answers that Genesis does not know ([`WireResponse`]):
/// accepted (agents evolve), but each run logs one warning per agent and field, naming
/// both, so a typo such as `cost_us` (the cost is then 0) is visible (audit G10 H3).
/// One per agent backend.
#[derive(Debug, Default)]
pub(crate) struct UnknownFieldWarnings {
    warned: std::sync::Mutex<std::collections::HashSet<(genesis_core::RunId, String)>>,
}

impl UnknownFieldWarnings {
    /// Logs a warning for each of `fields` not yet warned about in `run_id`.
    pub(crate) fn warn<'f>(
        &self,
        agent: &genesis_core::AgentId,
        run_id: &genesis_core::RunId,
        fields: impl Iterator<Item = &'f str>,
    ) {
        for field in self.fresh(run_id, fields) {
            tracing::warn!(
                agent = %agent,
                field = %field,
                run_id = %run_id,
                "agent {agent} answered with field {field:?}, which genesis does not know: it is ignored (the known ones: output, cost_usd, followups, input_tokens, output_tokens, model)"
            );
        }
    }

    /// The fields (cut to 64 bytes) not yet warned about in `run_id`, now remembered.
    fn fresh<'f>(
        &self,
        run_id: &genesis_core::RunId,
        fields: impl Iterator<Item = &'f str>,
    ) -> Vec<String> {
        let mut fresh = Vec::new();
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        for field in fields.take(MAX_FIELDS_WARNED) {
            let field = snippet(field, 64);
            if warned.len() >= MAX_WARNED {
                warned.clear();
            }
            if warned.insert((run_id.clone(), field.clone())) {
                fresh.push(field);
            }
        }
        fresh
    }
}

/// At most about `max` bytes of `text` for an error message, never cut inside a UTF-8
/// character: cut at the last whitespace of the second half when there is one (between
/// words), else at the last character boundary, then `…` and how many bytes were left
/// out (audit G10 D6: `at li…1 column 19`).
pub(crate) fn snippet(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    let head = match head.rfind(char::is_whitespace) {
        Some(i) if i >= end / 2 => head[..i].trim_end(),
        _ => head,
    };
    format!("{head}… ({} more bytes)", text.len() - head.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(v: f64) -> Usd {
        Usd::new(v).unwrap()
    }

    /// Review R9: an agent built in code with a least cost above its most (the config
    /// path refuses that) is never sent more than its `max_cost_usd`.
    #[test]
    fn cost_bounds_never_go_above_max_cost_usd() {
        assert_eq!(cost_bounds(Some(usd(0.5)), None), None);
        let b = cost_bounds(None, Some(usd(0.2))).unwrap();
        assert_eq!((b.floor, b.ceiling), (usd(0.2), usd(0.2)));
        let b = cost_bounds(Some(usd(0.1)), Some(usd(0.2))).unwrap();
        assert_eq!((b.floor, b.ceiling), (usd(0.1), usd(0.2)));
        let b = cost_bounds(Some(usd(0.5)), Some(usd(0.2))).unwrap();
        assert_eq!((b.floor, b.ceiling), (usd(0.2), usd(0.2)));
        assert!(check_cost_limits(Some(usd(0.5)), Some(usd(0.2))).is_err());
    }

    /// Audit G10 D6: a quoted body is cut between words where it can, never inside a
    /// character, and says how many bytes were left out.
    #[test]
    fn snippets_cut_between_words_or_on_a_char_boundary() {
        assert_eq!(snippet("short", 10), "short");
        assert_eq!(
            snippet("EOF while parsing a string at line 1 column 19", 32),
            "EOF while parsing a string at… (17 more bytes)"
        );
        // No space to cut at: the last whole character, never half of `é`.
        let cut = snippet(&"é".repeat(10), 7);
        assert_eq!(cut, "ééé… (14 more bytes)");
    }

    /// Audit V10 #7: whitespace and invisible characters are blank, anything drawn is
    /// not; the message counts characters, not bytes.
    #[test]
    fn invisible_characters_are_blank_and_the_message_says_what_was_held() {
        for text in [
            "",
            " \n\t",
            "\u{a0}\u{200b}\u{200c}\u{200d}\u{2060}\u{feff}",
            "\u{2066}\u{3164}\u{fe0f}\u{e0041}",
        ] {
            assert!(blank(text), "{text:?}");
        }
        for text in ["a", "\u{200b}x\u{200b}", "\u{0600}", "-", "\u{1f600}"] {
            assert!(!blank(text), "{text:?}");
        }
        let agent = genesis_core::AgentId::new("coder");
        let message = |text: &str| match empty_answer(text, &agent, Usd::ZERO, 0, 0) {
            Some(super::super::AgentError::Unusable { message, .. }) => message,
            other => panic!("{text:?}: {other:?}"),
        };
        assert_eq!(message(""), "the answer is empty (no characters)");
        assert_eq!(
            message("\u{200b}"),
            "the answer is empty (1 character, whitespace or invisible)"
        );
        assert_eq!(
            message(" \u{a0}\u{200b}\u{feff} "),
            "the answer is empty (5 characters, all whitespace or invisible)"
        );
        assert!(empty_answer("ok", &agent, Usd::ZERO, 0, 0).is_none());
    }

    /// A build without the `http` feature refuses `[backends.x] type = "http"` by name.
    #[test]
    fn http_backends_are_refused_naming_the_feature_when_it_is_off() {
        let err = require_http("search", false).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("backends.search")
                && text.contains("type = \"http\"")
                && text.contains("`http` feature of the genesis crate"),
            "{text}"
        );
        assert!(matches!(err, crate::GenesisError::Config { .. }), "{err:?}");
        assert!(require_http("search", true).is_ok());
    }
}
