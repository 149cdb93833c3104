//! The crate's error type.

use genesis_core::{ErrorCategory, Severity};

/// Everything that can go wrong while loading a catalogue, compiling rules or recording
/// an outcome. Routing itself never fails: a task no agent can take comes back as an
/// unassigned [`crate::RouteDecision`] with a reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HaloError {
    /// The agents TOML document does not parse or has unknown fields. The message
    /// carries the parser's: ``agents toml is invalid: unknown variant `cheap`, expected
    /// one of `low`, `medium`, `high` at line 4 column 13``.
    #[error("agents toml is invalid: {}{}", genesis_core::text::one_line(.error.message()), genesis_core::text::at_position(*.line, *.column))]
    AgentsToml {
        /// The parser's error (boxed: it is large). Its text is in this error's message,
        /// so it is not repeated as [`std::error::Error::source`] (a chain printer shows
        /// it once).
        error: Box<toml::de::Error>,
        /// 1-based line of the offending key or value; `None` when the parser gives
        /// no position.
        line: Option<usize>,
        /// 1-based column (in characters), set with `line`.
        column: Option<usize>,
    },
    /// The agents JSON document does not parse or has unknown fields. The message
    /// carries the parser's, with its line and column.
    #[error("agents json is invalid: {error}")]
    AgentsJson {
        /// The parser's error (in the message, not repeated as `source()`).
        error: serde_json::Error,
    },
    /// A JSON catalogue holds one JSON object per line: it is a JSONL catalogue with a
    /// `.json` name (the parser's own message, "trailing characters" or "missing field
    /// `agents`", would not say so).
    #[error(
        "agents json is invalid: it holds one JSON object per line, which is JSONL; name the file .jsonl (or .ndjson), or put the agents in a JSON array (rule: catalogue_format)"
    )]
    JsonlInJson,
    /// An element of a JSON catalogue's agent array does not read as an agent (only in
    /// [`crate::JsonlMode::Fail`]). The message carries the parser's.
    #[error("agents json agent {number} (line {line}) is invalid: {error}")]
    JsonAgentRecord {
        /// 1-based position of the agent in the array.
        number: usize,
        /// 1-based line where the agent starts.
        line: usize,
        /// The parser's error (in the message, not repeated as `source()`).
        error: serde_json::Error,
    },
    /// An agent of a TOML or JSON catalogue is invalid (in [`crate::JsonlMode::Fail`]),
    /// or repeats an id.
    #[error("agents {format} agent {number} (line {line}) is invalid")]
    CatalogueAgent {
        /// `toml` or `json`.
        format: &'static str,
        /// 1-based position of the agent in the catalogue.
        number: usize,
        /// 1-based line where the agent starts.
        line: usize,
        /// What is wrong with the agent.
        #[source]
        source: Box<HaloError>,
    },
    /// A JSONL catalogue line does not parse (only in [`crate::JsonlMode::Fail`]). The
    /// message carries the parser's (its column is within the line).
    #[error("agents jsonl line {line} is invalid: {error}")]
    JsonlLine {
        /// 1-based line number.
        line: usize,
        /// The parser's error (in the message, not repeated as `source()`).
        error: serde_json::Error,
    },
    /// A JSONL catalogue line parses but describes an invalid agent (bad success rate,
    /// zero capacity, empty id or description), or repeats an id; in
    /// [`crate::JsonlMode::Skip`] only the repeated id fails the load.
    #[error("agents jsonl line {line} is invalid")]
    JsonlAgent {
        /// 1-based line number.
        line: usize,
        /// What is wrong with the agent (a validation error of
        /// [`crate::AgentRegistry::new`]).
        #[source]
        source: Box<HaloError>,
    },
    /// The catalogue holds no agent.
    #[error("agent catalogue is empty: at least one agent is required")]
    EmptyCatalogue,
    /// An agent has an empty id.
    #[error("agent at position {position} has an empty id")]
    EmptyAgentId {
        /// 0-based position in the catalogue.
        position: usize,
    },
    /// An agent id holds whitespace or a control character: agent tokens and the
    /// `x-agent-id` header cannot carry it, so the agent could never call back.
    #[error(
        "agent id {id:?} contains whitespace or a control character ({found:?}), which agent tokens cannot carry (rule: agent_id)"
    )]
    InvalidAgentId {
        /// The id (its first 128 characters).
        id: String,
        /// The first offending character.
        found: char,
    },
    /// Two agents share an id.
    #[error("duplicate agent id {id:?}: agents {first} and {second} of the catalogue")]
    DuplicateAgent {
        /// The repeated id.
        id: String,
        /// 1-based position of the first agent with the id.
        first: usize,
        /// 1-based position of the second.
        second: usize,
    },
    /// A catalogue record repeats an id of an earlier one (wrapped in the error naming
    /// the record's line).
    #[error("duplicate agent id {id:?}, first on line {first_line}")]
    RepeatedAgentId {
        /// The repeated id.
        id: String,
        /// 1-based line of the first agent with the id.
        first_line: usize,
    },
    /// An agent's description is empty or only whitespace.
    #[error("agent {id:?} has an empty description")]
    EmptyDescription {
        /// The agent.
        id: String,
    },
    /// An agent's description is longer than [`crate::MAX_DESCRIPTION_BYTES`]: a text
    /// that long holds nearly every word, so it would match (and take) every task
    /// (audit H11 M1: one 5 MB description took 95 of 204 tasks).
    #[error(
        "agent {id:?} has a description of {bytes} bytes, above {max} (rule: description_bytes)"
    )]
    DescriptionTooLong {
        /// The agent.
        id: String,
        /// The description's length in bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// An agent's success rate is not a number in `[0, 1]`.
    #[error("agent {id:?} success_rate {value} is outside [0, 1]")]
    InvalidSuccessRate {
        /// The agent.
        id: String,
        /// The rejected value.
        value: f64,
    },
    /// An agent accepts no task at all.
    #[error("agent {id:?} max_concurrent_tasks must be at least 1, got 0")]
    ZeroCapacity {
        /// The agent.
        id: String,
    },
    /// The routing rules TOML document does not parse or has unknown fields. The message
    /// carries the parser's, with the line and column.
    #[error("routing rules toml is invalid: {}{}", genesis_core::text::one_line(.error.message()), genesis_core::text::at_position(*.line, *.column))]
    RulesToml {
        /// The parser's error (in the message, not repeated as `source()`).
        error: Box<toml::de::Error>,
        /// 1-based line of the offending key or value; `None` without a position.
        line: Option<usize>,
        /// 1-based column (in characters), set with `line`.
        column: Option<usize>,
    },
    /// A rule has an empty name.
    #[error("rule at position {position} has an empty name")]
    EmptyRuleName {
        /// 0-based position in the rules file.
        position: usize,
    },
    /// Two rules share a name.
    #[error("duplicate rule name {rule:?}")]
    DuplicateRule {
        /// The repeated name.
        rule: String,
    },
    /// A rule sends tasks to an agent the registry does not have.
    #[error("rule {rule:?} names unknown agent {agent:?}")]
    UnknownRuleAgent {
        /// The rule.
        rule: String,
        /// The unknown agent id.
        agent: String,
    },
    /// A JSONL catalogue line has a field that looks like a misspelt catalogue field
    /// ("task_kind" for "task_kinds"): taken as an unknown field, it would drop what it
    /// was meant to say without a word.
    #[error(
        "field {field:?} is not a catalogue field; did you mean {expected:?}? (rule: catalogue_field)"
    )]
    MisspeltField {
        /// The field as written.
        field: String,
        /// The catalogue field it is close to.
        expected: &'static str,
    },
    /// A rule lists an empty keyword.
    #[error("rule {rule:?} has an empty keyword")]
    EmptyKeyword {
        /// The rule.
        rule: String,
    },
    /// A keyword phrase has more words than the matcher supports.
    #[error("rule {rule:?} keyword {keyword:?} has {words} words, more than the maximum of {max}")]
    KeywordTooLong {
        /// The rule.
        rule: String,
        /// The keyword.
        keyword: String,
        /// Its number of words.
        words: usize,
        /// The maximum.
        max: usize,
    },
    /// An outcome or lookup names an agent the registry does not have.
    #[error("unknown agent {agent:?}")]
    UnknownAgent {
        /// The unknown agent id.
        agent: String,
    },
    /// [`crate::Router::route_top_k`] was asked for a number of agents it cannot rank.
    #[error("top_k {k} is invalid: must be in 1..={max} (rule: top_k)")]
    InvalidTopK {
        /// The requested number of agents.
        k: usize,
        /// The most a ranking holds.
        max: usize,
    },
    /// A router setting is out of range.
    #[error("router config {field} = {value} is invalid: {rule}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// The rejected value.
        value: f64,
        /// What the value must satisfy.
        rule: &'static str,
    },
    /// The registry could not be written out as TOML.
    #[error("registry could not be serialised to toml")]
    SerializeToml {
        /// The serialiser's error.
        #[source]
        source: toml::ser::Error,
    },
    /// The registry could not be written out as JSON.
    #[error("registry could not be serialised to json")]
    SerializeJson {
        /// The serialiser's error.
        #[source]
        source: serde_json::Error,
    },
}

impl HaloError {
    /// Where the failure belongs, for the facade's exit-code and HTTP-status mapping.
    pub fn category(&self) -> ErrorCategory {
        match self {
            HaloError::UnknownAgent { .. } => ErrorCategory::Routing,
            HaloError::SerializeToml { .. } | HaloError::SerializeJson { .. } => {
                ErrorCategory::Internal
            }
            _ => ErrorCategory::Config,
        }
    }

    /// How bad it is: configuration errors stop start-up, an unknown agent in an outcome
    /// report is a caller mistake.
    pub fn severity(&self) -> Severity {
        match self {
            HaloError::UnknownAgent { .. } => Severity::Low,
            _ => Severity::High,
        }
    }
}

/// The 1-based line and column (in characters) of `error`'s span in `text`, the
/// document it was parsed from: `(None, None)` when the parser gives no position.
pub(crate) fn toml_position(error: &toml::de::Error, text: &str) -> (Option<usize>, Option<usize>) {
    error.span().map_or((None, None), |span| {
        let (line, column) = genesis_core::text::line_column(text, span.start);
        (Some(line), Some(column))
    })
}

/// A catalogue agent (JSONL line, JSON array element, TOML `[[agent]]` table) that was
/// skipped in [`crate::JsonlMode::Skip`] mode.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LineError {
    /// 1-based line number (where the agent starts).
    pub line: usize,
    /// Why the line was skipped.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_rule_and_value() {
        let e = HaloError::UnknownRuleAgent {
            rule: "r1".into(),
            agent: "ghost".into(),
        };
        assert_eq!(e.to_string(), "rule \"r1\" names unknown agent \"ghost\"");
        assert_eq!(e.category(), ErrorCategory::Config);
        let e = HaloError::UnknownAgent {
            agent: "ghost".into(),
        };
        assert_eq!(e.category(), ErrorCategory::Routing);
    }
}
