//! The agent catalogue: loading (TOML, JSON, JSONL), validation and persistence.

use genesis_core::fasthash::FxHashMap;

use genesis_core::{AgentId, TaskKind};
use serde::{Deserialize, Serialize};

use crate::profile::{AgentProfile, CostTier, OutcomeStats};
use crate::{HaloError, LineError};

/// What to do with a malformed agent of a catalogue: a JSONL line, an element of a JSON
/// array ([`AgentRegistry::from_json_str_with`]) or an `[[agent]]` table
/// ([`AgentRegistry::from_toml_str_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonlMode {
    /// Skip the agent and report it in the returned [`LineError`] list.
    #[default]
    Skip,
    /// Fail the whole load, naming the line.
    Fail,
}

/// `text` without a leading UTF-8 byte-order mark (editors on Windows write one; TOML,
/// JSON and JSONL catalogues all skip it, audit H11 M3).
fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    genesis_core::text::line_column(text, offset).0
}

/// A validated, immutable catalogue of agents, indexed by id.
///
/// Invariants: at least one agent, ids unique, non-empty and free of whitespace and
/// control characters, descriptions non-empty, success rates in `[0, 1]`, capacities at
/// least 1.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRegistry {
    agents: Vec<AgentProfile>,
    /// Keys come from the operator's catalogue, not from requests, so the fast hasher
    /// is safe; the validator and the planner look agents up per task.
    by_id: FxHashMap<AgentId, usize>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlCatalogue {
    #[serde(default)]
    agent: Vec<AgentProfile>,
}

/// [`TomlCatalogue`] with each agent kept as a table and its position, so that one bad
/// agent can be skipped ([`JsonlMode::Skip`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlTables {
    #[serde(default)]
    agent: Vec<toml::Spanned<toml::Table>>,
}

/// `{"agents": [...]}`. (A JSON catalogue starting with `[` is a bare list: choosing the
/// shape by the first character, not with an untagged enum, keeps the parser's message
/// naming the field and position.) Each agent is read as a JSONL line is
/// ([`JsonlAgent`]), so the same records load from either format (audit H11 M2).
#[derive(Deserialize)]
struct JsonCatalogue {
    agents: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct JsonOut<'a> {
    agents: &'a [AgentProfile],
}

/// One JSONL line or JSON array element. Parsed strictly first; a line with fields of its own (third-party
/// tool catalogues carry them) is parsed again without those, unless one looks like a
/// misspelt catalogue field ([`misspelt`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlAgent {
    id: String,
    #[serde(alias = "desc")]
    description: String,
    #[serde(default, alias = "kinds")]
    task_kinds: Vec<TaskKind>,
    #[serde(default, alias = "domain", alias = "tags")]
    skills: OneOrMany,
    #[serde(default)]
    examples: Vec<String>,
    #[serde(default)]
    plans: Vec<String>,
    #[serde(default)]
    cost_tier: Option<CostTier>,
    #[serde(default)]
    success_rate: Option<f64>,
    #[serde(default)]
    max_concurrent_tasks: Option<u32>,
    #[serde(default)]
    outcomes: Option<OutcomeStats>,
}

/// The fields (and aliases) of [`JsonlAgent`].
const JSONL_FIELDS: &[&str] = &[
    "id",
    "description",
    "desc",
    "task_kinds",
    "kinds",
    "skills",
    "domain",
    "tags",
    "examples",
    "plans",
    "cost_tier",
    "success_rate",
    "max_concurrent_tasks",
    "outcomes",
];

/// Shortest normalised field that counts as the start of a catalogue field
/// ([`misspelt`]): "examp" and "success" do, "cost" and "name" (tool-catalogue fields)
/// do not.
const MIN_PREFIX_LEN: usize = 5;

/// The catalogue field `field` is most likely a misspelling of: compared without case,
/// `_` and `-`, within one edit for names of up to five letters and two edits above
/// ("task_kind", "Skill", "example", "successrate", "max_concurent_tasks"), or the
/// start of a catalogue field, at least [`MIN_PREFIX_LEN`] letters long ("success" for
/// `success_rate`, "max_concurrent" for `max_concurrent_tasks`; audit V10 #8). A field
/// that a catalogue field is the start of ("descriptions", "task_kinds_list") is one
/// only within the edit bound: longer names are fields of their own.
fn misspelt(field: &str) -> Option<&'static str> {
    let norm = |s: &str| -> Vec<u8> {
        s.bytes()
            .filter(|b| !matches!(b, b'_' | b'-'))
            .map(|b| b.to_ascii_lowercase())
            .collect()
    };
    let f = norm(field);
    JSONL_FIELDS
        .iter()
        .filter_map(|k| {
            let known = norm(k);
            let d = edit_distance(&f, &known);
            let near = d <= if k.len() <= 5 { 1 } else { 2 };
            let start = f.len() >= MIN_PREFIX_LEN && known.starts_with(&f);
            (near || start).then_some((*k, d))
        })
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k)
}

/// Levenshtein distance of two short byte strings.
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let next = (diagonal + usize::from(x != y))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Why a JSONL catalogue line was not taken.
enum LineFault {
    /// It does not parse as an agent.
    Syntax(serde_json::Error),
    /// It parses, but a field looks like a misspelt catalogue field.
    Field(HaloError),
}

/// Parses one JSONL catalogue line (see [`JsonlAgent`]).
fn parse_jsonl_agent(raw: &str) -> Result<JsonlAgent, LineFault> {
    let strict = match serde_json::from_str::<JsonlAgent>(raw) {
        Ok(agent) => return Ok(agent),
        Err(e) => e,
    };
    if !strict.to_string().starts_with("unknown field") {
        return Err(LineFault::Syntax(strict));
    }
    let value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw).map_err(LineFault::Syntax)?;
    without_own_fields(value)
}

/// Parses one element of a JSON catalogue's array, as [`parse_jsonl_agent`] parses a
/// line.
fn parse_json_agent(value: serde_json::Value) -> Result<JsonlAgent, LineFault> {
    let strict = match JsonlAgent::deserialize(&value) {
        Ok(agent) => return Ok(agent),
        Err(e) => e,
    };
    match value {
        serde_json::Value::Object(map) if strict.to_string().starts_with("unknown field") => {
            without_own_fields(map)
        }
        _ => Err(LineFault::Syntax(strict)),
    }
}

/// An agent record with fields of its own dropped, unless one looks like a misspelt
/// catalogue field.
fn without_own_fields(
    mut value: serde_json::Map<String, serde_json::Value>,
) -> Result<JsonlAgent, LineFault> {
    let own: Vec<String> = value
        .keys()
        .filter(|k| !JSONL_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();
    for field in own {
        if let Some(expected) = misspelt(&field) {
            return Err(LineFault::Field(HaloError::MisspeltField {
                field,
                expected,
            }));
        }
        value.remove(&field);
    }
    serde_json::from_value(serde_json::Value::Object(value)).map_err(LineFault::Syntax)
}

impl JsonlAgent {
    /// The profile, with the defaults of [`AgentProfile`] for what the record leaves out.
    fn into_profile(self) -> AgentProfile {
        AgentProfile {
            id: AgentId::from(self.id),
            description: self.description,
            task_kinds: self.task_kinds,
            skills: self.skills.into_vec(),
            examples: self.examples,
            plans: self.plans,
            cost_tier: self.cost_tier.unwrap_or_default(),
            success_rate: self.success_rate.unwrap_or(0.8),
            max_concurrent_tasks: self.max_concurrent_tasks.unwrap_or(4),
            outcomes: self.outcomes.unwrap_or_default(),
        }
    }
}

/// Where an agent record came from, for its errors.
#[derive(Clone, Copy)]
enum Source {
    /// A JSONL line.
    Jsonl,
    /// An element of a JSON array (its 1-based number).
    Json(usize),
}

impl Source {
    /// The error failing the load for a record at `line`.
    fn error(self, line: usize, fault: LineFault) -> HaloError {
        match (self, fault) {
            (Source::Jsonl, LineFault::Syntax(error)) => HaloError::JsonlLine { line, error },
            (Source::Jsonl, LineFault::Field(e)) => HaloError::JsonlAgent {
                line,
                source: Box::new(e),
            },
            (Source::Json(number), LineFault::Syntax(error)) => HaloError::JsonAgentRecord {
                number,
                line,
                error,
            },
            (Source::Json(number), LineFault::Field(e)) => HaloError::CatalogueAgent {
                format: "json",
                number,
                line,
                source: Box::new(e),
            },
        }
    }
}

/// `text` (a TOML agent catalogue) as `T`; a syntax error or unknown field is
/// [`HaloError::AgentsToml`] with its line and column.
fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, HaloError> {
    toml::from_str(text).map_err(|error| {
        let (line, column) = crate::error::toml_position(&error, text);
        HaloError::AgentsToml {
            error: Box::new(error),
            line,
            column,
        }
    })
}

/// Collects parsed agent records (`(source, line, record)`, in file order) into
/// validated profiles: in [`JsonlMode::Skip`] a bad record is returned as a
/// [`LineError`], in [`JsonlMode::Fail`] it fails the load; a repeated id fails it in
/// both modes, naming both lines.
fn collect_records(
    records: impl Iterator<Item = (Source, usize, Result<AgentProfile, LineFault>)>,
    mode: JsonlMode,
) -> Result<(Vec<AgentProfile>, Vec<LineError>), HaloError> {
    let mut agents: Vec<AgentProfile> = Vec::new();
    let mut skipped = Vec::new();
    let mut lines: FxHashMap<AgentId, usize> = FxHashMap::default();
    for (source, line, record) in records {
        let checked = record.and_then(|agent| {
            validate(agents.len(), &agent)
                .map(|()| agent)
                .map_err(LineFault::Field)
        });
        let agent = match (checked, mode) {
            (Ok(agent), _) => agent,
            (Err(fault), JsonlMode::Fail) => return Err(source.error(line, fault)),
            (Err(fault), JsonlMode::Skip) => {
                let message = match fault {
                    LineFault::Syntax(e) => e.to_string(),
                    LineFault::Field(e) => e.to_string(),
                };
                let message = match source {
                    Source::Json(number) => format!("agent {number}: {message}"),
                    Source::Jsonl => message,
                };
                skipped.push(LineError { line, message });
                continue;
            }
        };
        // Which of two records with one id is meant is anyone's guess: fail in both modes.
        if let Some(&first_line) = lines.get(&agent.id) {
            let e = HaloError::RepeatedAgentId {
                id: agent.id.to_string(),
                first_line,
            };
            return Err(source.error(line, LineFault::Field(e)));
        }
        lines.insert(agent.id.clone(), line);
        agents.push(agent);
    }
    Ok((agents, skipped))
}

/// 1-based lines where the elements of the agent array of a JSON catalogue start
/// (`wrapped`: the array is the value of the top-level `"agents"` key), for
/// syntactically valid JSON. Strings are skipped with their escapes.
fn json_element_lines(text: &str, wrapped: bool) -> Vec<usize> {
    let bytes = text.as_bytes();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let (mut string_start, mut last_string) = (0usize, (0usize, 0usize));
    let (mut array, mut expect) = (None::<usize>, false);
    let mut starts = Vec::new();
    for (i, &c) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
                last_string = (string_start, i);
            }
            continue;
        }
        if expect && array == Some(depth) && !c.is_ascii_whitespace() && c != b']' {
            starts.push(i);
            expect = false;
        }
        match c {
            b'"' => {
                in_string = true;
                string_start = i + 1;
            }
            b'[' | b'{' => {
                depth += 1;
                let key = text.get(last_string.0..last_string.1);
                let ours = if wrapped {
                    depth == 2 && key == Some("agents")
                } else {
                    depth == 1
                };
                if c == b'[' && array.is_none() && ours {
                    array = Some(depth);
                    expect = true;
                }
            }
            b']' | b'}' => {
                if array == Some(depth) {
                    // The agent array is closed: nothing after it is an agent.
                    array = Some(usize::MAX);
                }
                depth = depth.saturating_sub(1);
            }
            b',' if array == Some(depth) => expect = true,
            _ => {}
        }
    }
    let mut line = 1;
    let mut at = 0;
    starts
        .into_iter()
        .map(|offset| {
            line += bytes[at..offset].iter().filter(|&&b| b == b'\n').count();
            at = offset;
            line
        })
        .collect()
}

/// A JSON catalogue that does not parse but whose first line is a whole JSON object
/// with more lines after it: a JSONL catalogue named `.json`.
fn looks_like_jsonl(text: &str) -> bool {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first_is_object = lines
        .next()
        .is_some_and(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v.is_object()));
    first_is_object && lines.next().is_some()
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

impl AgentRegistry {
    /// Builds a registry from profiles.
    ///
    /// # Errors
    /// [`HaloError::EmptyCatalogue`], [`HaloError::EmptyAgentId`],
    /// [`HaloError::InvalidAgentId`] (whitespace or a control character in an id),
    /// [`HaloError::DuplicateAgent`], [`HaloError::EmptyDescription`],
    /// [`HaloError::InvalidSuccessRate`] or [`HaloError::ZeroCapacity`].
    pub fn new(agents: Vec<AgentProfile>) -> Result<Self, HaloError> {
        if agents.is_empty() {
            return Err(HaloError::EmptyCatalogue);
        }
        let mut by_id = FxHashMap::with_capacity_and_hasher(agents.len(), Default::default());
        for (position, agent) in agents.iter().enumerate() {
            validate(position, agent)?;
            if let Some(first) = by_id.insert(agent.id.clone(), position) {
                return Err(HaloError::DuplicateAgent {
                    id: agent.id.to_string(),
                    first: first + 1,
                    second: position + 1,
                });
            }
        }
        Ok(AgentRegistry { agents, by_id })
    }

    /// Parses `[[agent]]` tables (the format of `config/agents.toml`); a leading
    /// byte-order mark is skipped.
    ///
    /// # Errors
    /// [`HaloError::AgentsToml`] for syntax errors and unknown fields, then the
    /// validation errors of [`AgentRegistry::new`].
    pub fn from_toml_str(text: &str) -> Result<Self, HaloError> {
        let cat: TomlCatalogue = parse_toml(strip_bom(text))?;
        Self::new(cat.agent)
    }

    /// [`AgentRegistry::from_toml_str`] with a choice for bad agents: in
    /// [`JsonlMode::Skip`] an `[[agent]]` table that does not read as an agent (unknown
    /// or mistyped field) or fails validation is returned as a [`LineError`] (the line of
    /// its `[[agent]]` header) and the others load; in [`JsonlMode::Fail`] it is
    /// [`AgentRegistry::from_toml_str`]. A document that is not TOML fails in both modes,
    /// as does a repeated id.
    ///
    /// # Errors
    /// [`HaloError::AgentsToml`], [`HaloError::CatalogueAgent`] (a repeated id),
    /// [`HaloError::EmptyCatalogue`] (no agent left), and in fail mode those of
    /// [`AgentRegistry::from_toml_str`].
    pub fn from_toml_str_with(
        text: &str,
        mode: JsonlMode,
    ) -> Result<(Self, Vec<LineError>), HaloError> {
        if mode == JsonlMode::Fail {
            return Ok((Self::from_toml_str(text)?, Vec::new()));
        }
        let text = strip_bom(text);
        let cat: TomlTables = parse_toml(text)?;
        let mut agents: Vec<AgentProfile> = Vec::with_capacity(cat.agent.len());
        let mut skipped = Vec::new();
        let mut lines: FxHashMap<AgentId, usize> = FxHashMap::default();
        for (i, table) in cat.agent.into_iter().enumerate() {
            let line = line_at(text, table.span().start);
            let agent = match table.into_inner().try_into::<AgentProfile>() {
                Ok(agent) => agent,
                Err(e) => {
                    skipped.push(LineError {
                        line,
                        message: format!(
                            "agent {}: {}",
                            i + 1,
                            genesis_core::text::one_line(e.message())
                        ),
                    });
                    continue;
                }
            };
            if let Err(e) = validate(agents.len(), &agent) {
                skipped.push(LineError {
                    line,
                    message: format!("agent {}: {e}", i + 1),
                });
                continue;
            }
            if let Some(&first_line) = lines.get(&agent.id) {
                return Err(HaloError::CatalogueAgent {
                    format: "toml",
                    number: i + 1,
                    line,
                    source: Box::new(HaloError::RepeatedAgentId {
                        id: agent.id.to_string(),
                        first_line,
                    }),
                });
            }
            lines.insert(agent.id.clone(), line);
            agents.push(agent);
        }
        Ok((Self::new(agents)?, skipped))
    }

    /// Parses a JSON array of agents, or an object `{"agents": [...]}`; each agent is
    /// read as a JSONL line is ([`AgentRegistry::from_jsonl_str`]: `desc`, `domain`,
    /// fields of its own ignored, a misspelt catalogue field refused), and a leading
    /// byte-order mark is skipped. The first bad agent fails the load.
    ///
    /// # Errors
    /// [`HaloError::AgentsJson`] (not JSON, or not one of the two shapes),
    /// [`HaloError::JsonlInJson`] (one JSON object per line: a JSONL catalogue),
    /// [`HaloError::JsonAgentRecord`] (an agent that does not read as one),
    /// [`HaloError::CatalogueAgent`] (an invalid agent or a repeated id, its line and
    /// number named), [`HaloError::EmptyCatalogue`].
    pub fn from_json_str(text: &str) -> Result<Self, HaloError> {
        Ok(Self::from_json_str_with(text, JsonlMode::Fail)?.0)
    }

    /// [`AgentRegistry::from_json_str`] with a choice for bad agents: in
    /// [`JsonlMode::Skip`] they are returned as [`LineError`]s (the line where the
    /// agent starts; the message names its number in the array) and the others load.
    /// A document that is not JSON fails in both modes, as does a repeated id.
    ///
    /// # Errors
    /// As [`AgentRegistry::from_json_str`]; in skip mode only for the whole document, a
    /// repeated id or no agent left.
    pub fn from_json_str_with(
        text: &str,
        mode: JsonlMode,
    ) -> Result<(Self, Vec<LineError>), HaloError> {
        let text = strip_bom(text);
        let wrapped = !text.trim_start().starts_with('[');
        let parsed = if wrapped {
            serde_json::from_str::<JsonCatalogue>(text).map(|cat| cat.agents)
        } else {
            serde_json::from_str::<Vec<serde_json::Value>>(text)
        };
        let items = match parsed {
            Ok(items) => items,
            Err(_) if looks_like_jsonl(text) => return Err(HaloError::JsonlInJson),
            // One agent object, not a catalogue of them (verification V11 L-3: it was
            // "missing field `agents`").
            Err(_)
                if wrapped
                    && serde_json::from_str::<serde_json::Value>(text)
                        .is_ok_and(|v| v.get("id").is_some() && v.get("agents").is_none()) =>
            {
                return Err(HaloError::AgentsJson {
                    error: <serde_json::Error as serde::de::Error>::custom(
                        "the file is one agent object; a JSON catalogue is an array of agents \
                         ([{\"id\": ..., \"desc\": ...}]) or {\"agents\": [...]}",
                    ),
                });
            }
            Err(error) => return Err(HaloError::AgentsJson { error }),
        };
        let mut lines = json_element_lines(text, wrapped);
        if lines.len() != items.len() {
            // Not expected for valid JSON; the messages still name the agent's number.
            lines = vec![0; items.len()];
        }
        let records = items
            .into_iter()
            .zip(lines)
            .enumerate()
            .map(|(i, (v, line))| {
                let record = parse_json_agent(v).map(JsonlAgent::into_profile);
                (Source::Json(i + 1), line, record)
            });
        let (agents, skipped) = collect_records(records, mode)?;
        Ok((Self::new(agents)?, skipped))
    }

    /// Parses one agent per line: `{"id": ..., "desc": ...}` at least; `description`,
    /// `task_kinds`/`kinds`, `skills`/`domain`/`tags` (string or list), `examples`,
    /// `plans`, `cost_tier`, `success_rate`, `max_concurrent_tasks` optional; other fields
    /// are ignored, except one that looks like a misspelt catalogue field (`task_kind`,
    /// `skill`, `example`: [`HaloError::MisspeltField`]), which is a bad line.
    /// Blank lines and a leading byte-order mark are skipped. Each line is validated as it is read, as
    /// [`AgentRegistry::new`] validates an agent. In [`JsonlMode::Skip`] bad lines (syntax,
    /// missing `id` or description, empty id or description, `success_rate` outside
    /// `[0, 1]`, `max_concurrent_tasks` 0) are returned as [`LineError`]s with their line
    /// number and the reason; in [`JsonlMode::Fail`] the first one fails the load. A
    /// repeated id fails the load in both modes, naming both lines.
    ///
    /// # Errors
    /// [`HaloError::JsonlLine`] (a line that does not parse, fail mode),
    /// [`HaloError::JsonlAgent`] (an invalid agent in fail mode, or a repeated id; its
    /// source is the validation error), [`HaloError::EmptyCatalogue`] (no valid line).
    pub fn from_jsonl_str(
        text: &str,
        mode: JsonlMode,
    ) -> Result<(Self, Vec<LineError>), HaloError> {
        let records = strip_bom(text)
            .lines()
            .enumerate()
            .map(|(i, raw)| (i + 1, raw.trim()))
            .filter(|(_, raw)| !raw.is_empty())
            .map(|(line, raw)| {
                let record = parse_jsonl_agent(raw).map(JsonlAgent::into_profile);
                (Source::Jsonl, line, record)
            });
        let (agents, skipped) = collect_records(records, mode)?;
        Ok((Self::new(agents)?, skipped))
    }

    /// Writes the registry, learned state included, in the `[[agent]]` TOML format that
    /// [`AgentRegistry::from_toml_str`] reads back.
    ///
    /// # Errors
    /// [`HaloError::SerializeToml`] (not expected for a valid registry).
    pub fn to_toml_string(&self) -> Result<String, HaloError> {
        #[derive(Serialize)]
        struct Out<'a> {
            agent: &'a [AgentProfile],
        }
        toml::to_string(&Out {
            agent: &self.agents,
        })
        .map_err(|source| HaloError::SerializeToml { source })
    }

    /// Writes the registry as `{"agents": [...]}` JSON, learned state included.
    ///
    /// # Errors
    /// [`HaloError::SerializeJson`] (not expected for a valid registry).
    pub fn to_json_string(&self) -> Result<String, HaloError> {
        serde_json::to_string_pretty(&JsonOut {
            agents: &self.agents,
        })
        .map_err(|source| HaloError::SerializeJson { source })
    }

    /// The agent with this id.
    pub fn get(&self, id: &str) -> Option<&AgentProfile> {
        self.by_id.get(id).map(|&i| &self.agents[i])
    }

    /// The position of the agent with this id (stable for the registry's lifetime).
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The agent at a position.
    pub fn by_index(&self, index: usize) -> Option<&AgentProfile> {
        self.agents.get(index)
    }

    /// All agents, in catalogue order.
    pub fn iter(&self) -> std::slice::Iter<'_, AgentProfile> {
        self.agents.iter()
    }

    /// All agents as a slice, in catalogue order.
    pub fn as_slice(&self) -> &[AgentProfile] {
        &self.agents
    }

    /// Number of agents (never zero).
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Always false: a registry holds at least one agent. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Consumes the registry, returning its profiles.
    pub fn into_profiles(self) -> Vec<AgentProfile> {
        self.agents
    }

    pub(crate) fn agent_mut(&mut self, index: usize) -> Option<&mut AgentProfile> {
        self.agents.get_mut(index)
    }
}

impl<'a> IntoIterator for &'a AgentRegistry {
    type Item = &'a AgentProfile;
    type IntoIter = std::slice::Iter<'a, AgentProfile>;

    fn into_iter(self) -> Self::IntoIter {
        self.agents.iter()
    }
}

fn validate(position: usize, agent: &AgentProfile) -> Result<(), HaloError> {
    if agent.id.as_str().trim().is_empty() {
        return Err(HaloError::EmptyAgentId { position });
    }
    if let Some(found) = agent
        .id
        .as_str()
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(HaloError::InvalidAgentId {
            id: agent.id.as_str().chars().take(128).collect(),
            found,
        });
    }
    if agent.description.trim().is_empty() {
        return Err(HaloError::EmptyDescription {
            id: agent.id.to_string(),
        });
    }
    if agent.description.len() > crate::MAX_DESCRIPTION_BYTES {
        return Err(HaloError::DescriptionTooLong {
            id: agent.id.to_string(),
            bytes: agent.description.len(),
            max: crate::MAX_DESCRIPTION_BYTES,
        });
    }
    if !(0.0..=1.0).contains(&agent.success_rate) {
        return Err(HaloError::InvalidSuccessRate {
            id: agent.id.to_string(),
            value: agent.success_rate,
        });
    }
    if agent.max_concurrent_tasks == 0 {
        return Err(HaloError::ZeroCapacity {
            id: agent.id.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
[[agent]]
id = "a"
description = "does a"
task_kinds = ["test"]

[[agent]]
id = "b"
desc = "does b"
cost_tier = "high"
success_rate = 0.5
max_concurrent_tasks = 2
"#;

    #[test]
    fn toml_round_trips_with_learned_state() {
        let reg = AgentRegistry::from_toml_str(TWO).unwrap();
        assert_eq!(reg.len(), 2);
        assert_eq!(reg.get("b").unwrap().cost_tier, CostTier::High);
        let mut profiles = reg.into_profiles();
        profiles[0].outcomes.successes = 3;
        profiles[0].examples.push("learned".into());
        let reg = AgentRegistry::new(profiles).unwrap();
        let text = reg.to_toml_string().unwrap();
        let back = AgentRegistry::from_toml_str(&text).unwrap();
        assert_eq!(back, reg);
        assert_eq!(back.get("a").unwrap().outcomes.successes, 3);
    }

    #[test]
    fn json_accepts_list_and_wrapped() {
        let a = AgentRegistry::from_json_str(r#"[{"id":"a","desc":"x"}]"#).unwrap();
        let b = AgentRegistry::from_json_str(r#"{"agents":[{"id":"a","desc":"x"}]}"#).unwrap();
        assert_eq!(a, b);
        let back = AgentRegistry::from_json_str(&a.to_json_string().unwrap()).unwrap();
        assert_eq!(back, a);
    }

    /// Audit G10 D7: an id with whitespace or a control character is refused when the
    /// catalogue loads, in every format, naming the id and the rule (agent tokens
    /// cannot carry it); ids with `-`, `_`, `.` and non-ASCII letters still load.
    #[test]
    fn agent_ids_with_whitespace_or_control_characters_are_refused() {
        for (id, found) in [
            ("my coder", ' '),
            ("coder\t", '\t'),
            ("co\u{7}der", '\u{7}'),
            ("co\u{a0}der", '\u{a0}'),
        ] {
            // JSON string escapes (`\u0007`) are TOML's too.
            let quoted = serde_json::to_string(id).unwrap();
            let toml = format!("[[agent]]\nid = {quoted}\ndescription = 'x'\n");
            let err = AgentRegistry::from_toml_str(&toml).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(&err, HaloError::InvalidAgentId { id: i, found: f } if i == id && *f == found),
                "{err:?}"
            );
            assert!(
                text.contains(&format!("{id:?}")) && text.contains("(rule: agent_id)"),
                "{text}"
            );
            let line = serde_json::json!({"id": id, "desc": "x"}).to_string();
            let jsonl = format!("{{\"id\":\"ok\",\"desc\":\"x\"}}\n{line}\n");
            let err = AgentRegistry::from_jsonl_str(&jsonl, JsonlMode::Fail).unwrap_err();
            assert!(
                matches!(&err, HaloError::JsonlAgent { line: 2, source }
                    if matches!(**source, HaloError::InvalidAgentId { .. })),
                "{err:?}"
            );
            let json = format!("[{line}]");
            assert!(matches!(
                AgentRegistry::from_json_str(&json),
                Err(HaloError::CatalogueAgent { number: 1, line: 1, source, .. })
                    if matches!(*source, HaloError::InvalidAgentId { .. })
            ));
        }
        let ok = "[[agent]]\nid='search_repair-provider.v2'\ndescription='x'\n\
                  [[agent]]\nid='recherche_été'\ndescription='y'\n";
        assert_eq!(AgentRegistry::from_toml_str(ok).unwrap().len(), 2);
    }

    #[test]
    fn validation_errors_name_the_agent() {
        let dup = "[[agent]]\nid='a'\ndescription='x'\n[[agent]]\nid='a'\ndescription='y'\n";
        let err = AgentRegistry::from_toml_str(dup).unwrap_err();
        assert_eq!(
            err.to_string(),
            "duplicate agent id \"a\": agents 1 and 2 of the catalogue"
        );
        let empty = "[[agent]]\nid='a'\ndescription='  '\n";
        assert!(matches!(
            AgentRegistry::from_toml_str(empty),
            Err(HaloError::EmptyDescription { id }) if id == "a"
        ));
        assert!(matches!(
            AgentRegistry::from_toml_str(""),
            Err(HaloError::EmptyCatalogue)
        ));
        let rate = "[[agent]]\nid='a'\ndescription='x'\nsuccess_rate=1.5\n";
        assert_eq!(
            AgentRegistry::from_toml_str(rate).unwrap_err().to_string(),
            "agent \"a\" success_rate 1.5 is outside [0, 1]"
        );
        let cap = "[[agent]]\nid='a'\ndescription='x'\nmax_concurrent_tasks=0\n";
        assert!(matches!(
            AgentRegistry::from_toml_str(cap),
            Err(HaloError::ZeroCapacity { .. })
        ));
        let typo = "[[agent]]\nid='a'\ndescription='x'\nskils=['y']\n";
        assert!(matches!(
            AgentRegistry::from_toml_str(typo),
            Err(HaloError::AgentsToml { .. })
        ));
    }

    /// The error and its sources, as the CLI prints them.
    fn chain(e: &HaloError) -> String {
        let mut out = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }

    #[test]
    fn jsonl_lines_that_parse_but_fail_validation_are_skipped_or_named() {
        let text = "{\"id\":\"a\",\"desc\":\"books flights\"}\n\
                    {\"id\":\"b\",\"desc\":\"weather\",\"success_rate\":1.5}\n\
                    {\"id\":\"c\",\"desc\":\"hotels\",\"max_concurrent_tasks\":0}\n\
                    {\"id\":\"d\",\"desc\":\"trains\",\"success_rate\":-0.1}\n\
                    {\"id\":\"e\",\"desc\":\"ferries\"}\n";
        let (reg, skipped) = AgentRegistry::from_jsonl_str(text, JsonlMode::Skip).unwrap();
        assert_eq!(
            reg.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["a", "e"]
        );
        let line = |line: usize, message: &str| LineError {
            line,
            message: message.into(),
        };
        assert_eq!(
            skipped,
            [
                line(2, "agent \"b\" success_rate 1.5 is outside [0, 1]"),
                line(
                    3,
                    "agent \"c\" max_concurrent_tasks must be at least 1, got 0"
                ),
                line(4, "agent \"d\" success_rate -0.1 is outside [0, 1]"),
            ]
        );
        let err = AgentRegistry::from_jsonl_str(text, JsonlMode::Fail).unwrap_err();
        assert_eq!(
            chain(&err),
            "agents jsonl line 2 is invalid: agent \"b\" success_rate 1.5 is outside [0, 1]"
        );
        let rest: String = text.lines().skip(2).map(|l| format!("{l}\n")).collect();
        let err = AgentRegistry::from_jsonl_str(&rest, JsonlMode::Fail).unwrap_err();
        assert!(
            chain(&err).starts_with("agents jsonl line 1 is invalid: agent \"c\""),
            "{err:?}"
        );
    }

    #[test]
    fn jsonl_empty_ids_and_repeated_ids_name_their_line() {
        let text = "{\"id\":\"a\",\"desc\":\"x\"}\n\n\n{\"id\":\" \",\"desc\":\"y\"}\n";
        let err = AgentRegistry::from_jsonl_str(text, JsonlMode::Fail).unwrap_err();
        assert!(
            chain(&err).starts_with("agents jsonl line 4 is invalid: "),
            "{}",
            chain(&err)
        );
        let (reg, skipped) = AgentRegistry::from_jsonl_str(text, JsonlMode::Skip).unwrap();
        assert_eq!(reg.len(), 1);
        assert_eq!(skipped.iter().map(|s| s.line).collect::<Vec<_>>(), [4]);
        assert!(skipped[0].message.contains("empty id"), "{skipped:?}");

        let dup = "{\"id\":\"a\",\"desc\":\"x\"}\n{\"id\":\"b\",\"desc\":\"y\"}\n\n\
                   {\"id\":\"a\",\"desc\":\"z\"}\n";
        for mode in [JsonlMode::Skip, JsonlMode::Fail] {
            let err = AgentRegistry::from_jsonl_str(dup, mode).unwrap_err();
            assert_eq!(
                chain(&err),
                "agents jsonl line 4 is invalid: duplicate agent id \"a\", first on line 1",
                "{mode:?}"
            );
        }
    }

    #[test]
    fn jsonl_skips_or_fails_on_bad_lines() {
        let text = "{\"id\":\"a\",\"desc\":\"x\",\"domain\":[\"Travel\"],\"extra\":1}\nnot json\n\n{\"id\":\"b\",\"desc\":\"\"}\n{\"id\":\"c\",\"desc\":\"z\",\"domain\":\"Food\"}\n";
        let (reg, skipped) = AgentRegistry::from_jsonl_str(text, JsonlMode::Skip).unwrap();
        assert_eq!(reg.len(), 2);
        assert_eq!(reg.get("a").unwrap().skills, vec!["Travel".to_string()]);
        assert_eq!(reg.get("c").unwrap().skills, vec!["Food".to_string()]);
        assert_eq!(skipped.len(), 2);
        assert_eq!(skipped[0].line, 2);
        assert_eq!(skipped[1].line, 4);
        match AgentRegistry::from_jsonl_str(text, JsonlMode::Fail) {
            Err(HaloError::JsonlLine { line, .. }) => assert_eq!(line, 2),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            AgentRegistry::from_jsonl_str("bad\n", JsonlMode::Skip),
            Err(HaloError::EmptyCatalogue)
        ));
    }

    /// Audit G10 M2: `"task_kind"` (for `task_kinds`) was ignored like any unknown field,
    /// so the agent took every kind. Fields close to a catalogue field are a bad line;
    /// fields of their own (a tool catalogue's `old_desc`, `name`, `parameters`) still
    /// load.
    #[test]
    fn jsonl_misspelt_catalogue_fields_are_named_other_fields_ignored() {
        let typo = "{\"id\":\"a\",\"desc\":\"x\"}\n{\"id\":\"ops\",\"desc\":\"Runs ops\",\"task_kind\":[\"deploy\"]}\n";
        match AgentRegistry::from_jsonl_str(typo, JsonlMode::Fail) {
            Err(HaloError::JsonlAgent { line, source }) => {
                assert_eq!(line, 2);
                assert_eq!(
                    source.to_string(),
                    "field \"task_kind\" is not a catalogue field; did you mean \"task_kinds\"? (rule: catalogue_field)"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let (reg, skipped) = AgentRegistry::from_jsonl_str(typo, JsonlMode::Skip).unwrap();
        assert_eq!(reg.len(), 1);
        assert_eq!(skipped.len(), 1);
        assert!(
            skipped[0].message.contains("task_kinds"),
            "{:?}",
            skipped[0]
        );
        for (field, expected) in [
            ("Skill", Some("skills")),
            ("example", Some("examples")),
            ("successrate", Some("success_rate")),
            ("max_concurent_tasks", Some("max_concurrent_tasks")),
            ("kind", Some("kinds")),
            ("old_desc", None),
            ("name", None),
            ("parameters", None),
            ("version", None),
            ("cost", None),
            // Audit V10 #8: the start of a catalogue field, 5 letters or more.
            ("success", Some("success_rate")),
            ("max_concurrent", Some("max_concurrent_tasks")),
            ("MaxConcurrent", Some("max_concurrent_tasks")),
            ("examp", Some("examples")),
            ("outcome", Some("outcomes")),
            ("task_k", Some("task_kinds")),
            ("descriptions", Some("description")),
            ("task_kinds_list", None),
            ("exam", None),
            ("task", None),
            // UltraTool's and common tool-catalogue fields are fields of their own.
            ("title", None),
            ("category", None),
            ("type", None),
            ("url", None),
            ("cost_usd", None),
            ("tool_name", None),
            ("required", None),
            ("returns", None),
            ("output", None),
            ("input_schema", None),
        ] {
            assert_eq!(misspelt(field), expected, "{field}");
        }
        let own = "{\"id\":\"a\",\"desc\":\"x\",\"old_desc\":\"y\",\"domain\":\"web\",\"name\":\"A\",\"parameters\":{\"q\":1},\"version\":\"1\",\"cost\":2,\"title\":\"T\",\"category\":\"c\",\"type\":\"tool\",\"url\":\"http://x\",\"kinds\":[\"research\"]}\n";
        let (reg, skipped) = AgentRegistry::from_jsonl_str(own, JsonlMode::Fail).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(reg.get("a").unwrap().task_kinds, vec![TaskKind::Research]);
    }
}
