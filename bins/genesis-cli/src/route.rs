//! `genesis route`: route task descriptions to agents, one JSON decision per line
//! (issue #3).

use std::path::{Path, PathBuf};

use genesis::core::{Task, TaskId, TaskKind};
use genesis::halo::{AgentRegistry, JsonlMode, RouteDecision, Router, RoutingRules};

use crate::input::{self, OnError};
use crate::setup::{Failure, load_config};

/// Fields read as a line's task description, first match wins.
const TEXT_FIELDS: &[&str] = &["text", "step_text_masked", "description"];
/// Fields naming a line's agent: the gold label of an input line, or the agent an
/// example belongs to.
const AGENT_FIELDS: &[&str] = &["gold_tool", "agent"];

/// Arguments of `genesis route`.
#[derive(Debug, clap::Args)]
pub(crate) struct RouteArgs {
    /// Agent catalogue: TOML (`[[agent]]`), JSON or JSONL (`id` + `desc` per line) by
    /// extension. Default: `routing.agents_file` from config (its bad agents handled per
    /// `routing.catalogue_errors`, as the server does), else the built-in agents. A bad
    /// agent of this file is skipped or fatal per --on-error.
    #[arg(long)]
    agents: Option<PathBuf>,
    /// Example tasks to add to the agents' profiles: JSONL with a `text` (or
    /// `step_text_masked`) field and a `gold_tool` (or `agent`) field naming the agent.
    #[arg(long)]
    examples: Option<PathBuf>,
    /// Routing rules (TOML). Default: the configured rules (`routing.rules_file`, else
    /// the built-in ones), but none at all with `--agents`: a catalogue of your own is
    /// routed by text match only unless you pass its rules (e.g. `--rules
    /// config/routing_rules.toml` with `--agents config/agents.toml`).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// At most this many ranked alternatives reported with each decision, 1 to 15 (the
    /// router's `top_k` limit: a ranking keeps the 16 best agents, the chosen one and 15
    /// others); fewer when fewer agents match the task.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=15))]
    top_k: u16,
    /// What to do with a malformed input or examples line (bad JSON, no or empty text,
    /// a bad `kind` or `metadata`): skip it with a warning naming the file, line and
    /// reason, or stop with exit code 2.
    #[arg(long, value_enum, default_value_t = OnError::Skip)]
    on_error: OnError,
    /// What to do with a bad agent of the catalogue (--agents or `routing.agents_file`:
    /// a line or agent that does not read as an agent, or fails validation): fail with
    /// exit code 2, naming it, as the server does by default, or skip it with a warning
    /// naming the file, line and reason. Default: the configured
    /// `routing.catalogue_errors` ("fail" unless set). A catalogue left with no agent, a
    /// repeated id, or a file that is not JSON/TOML at all is always fatal.
    #[arg(long, value_enum)]
    catalogue_errors: Option<OnError>,
    /// Task descriptions: JSONL (`text` or `step_text_masked`, optional `kind`, `id`,
    /// `gold_tool`, and `metadata`: an object of string values that rules with metadata
    /// conditions match) or plain text, one per line; `-` or absent reads stdin. An empty
    /// or blank line is a malformed line. Routing uses the configured agents and rules,
    /// not what a server has learned from runs (kept in its store).
    input: Option<PathBuf>,
}

fn read_text(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::rejected(format!("cannot read {}: {e}", path.display())))
}

/// Builds the router: catalogue, examples, rules and the configured router settings.
/// Every catalogue or rules file that does not load is exit code 2, named.
fn router(config_path: &[&Path], args: &RouteArgs) -> Result<Router, Failure> {
    let config = load_config(config_path)?;
    // Bad agents fail the load unless asked otherwise, as on the server (verification
    // V11: skipping them by default let `genesis route` pass a catalogue the server
    // refuses).
    let catalogue_mode = args
        .catalogue_errors
        .map_or(config.routing.catalogue_errors.into(), on_error_mode);
    let registry = match (&args.agents, &config.routing.agents_file) {
        (Some(p), _) => read_agents(p, "--agents", catalogue_mode)?,
        (None, Some(p)) => read_agents(p, "routing.agents_file", catalogue_mode)?,
        (None, None) => AgentRegistry::from_toml_str(genesis::defaults::AGENTS_TOML)
            .map_err(|e| crate::setup::config_failure(e.into()))?,
    };
    let rules_file = match (&args.rules, &args.agents) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(_)) => None,
        (None, None) => config.routing.rules_file.clone(),
    };
    let rules = match (&rules_file, &args.agents) {
        // `routing.rules_file = ""`: no rules, as the server reads it.
        (Some(p), _) if p.as_os_str().is_empty() => RoutingRules::empty(),
        (Some(p), _) => RoutingRules::from_toml_str(&read_text(p)?).map_err(|e| {
            Failure::rejected(format!(
                "routing rules {}: {}",
                p.display(),
                crate::setup::one_line(&e)
            ))
        })?,
        (None, Some(_)) => RoutingRules::empty(),
        (None, None) => RoutingRules::from_toml_str(genesis::defaults::ROUTING_RULES_TOML)
            .map_err(|e| crate::setup::config_failure(e.into()))?,
    };
    let registry = match &args.examples {
        Some(path) => with_examples(registry, path, args.on_error)?,
        None => registry,
    };
    let mut router_config = config.routing.router;
    router_config.top_k = usize::from(args.top_k);
    Router::with_config(registry, rules, router_config)
        .map_err(|e| Failure::rejected(format!("routing set-up: {}", crate::setup::one_line(&e))))
}

/// The catalogue mode `--catalogue-errors` asks for.
fn on_error_mode(on_error: OnError) -> JsonlMode {
    match on_error {
        OnError::Skip => JsonlMode::Skip,
        OnError::Fail => JsonlMode::Fail,
    }
}

/// Reads the catalogue at `path` (named `what` in errors), warning once for each agent
/// skipped in skip mode with the file, line and reason (audit H11 M4).
fn read_agents(path: &Path, what: &str, mode: JsonlMode) -> Result<AgentRegistry, Failure> {
    let (registry, skipped) = genesis::read_agents_with(path, mode).map_err(|e| {
        Failure::rejected(format!(
            "{what} {}: {}",
            path.display(),
            crate::setup::one_line(&e)
        ))
    })?;
    for s in &skipped {
        eprintln!(
            "warning: {}: line {} skipped: {}",
            path.display(),
            s.line,
            s.message
        );
    }
    if !skipped.is_empty() {
        eprintln!(
            "agents: {} loaded from {} ({} skipped)",
            registry.len(),
            path.display(),
            skipped.len()
        );
    }
    Ok(registry)
}

/// Adds every example line of `path` to the profile of the agent it names.
fn with_examples(
    registry: AgentRegistry,
    path: &Path,
    on_error: OnError,
) -> Result<AgentRegistry, Failure> {
    let reader = input::open(Some(path))?;
    let (examples, skipped) =
        read_examples(&registry, reader, &input::source_name(Some(path)), on_error)?;
    let added: usize = examples.iter().map(Vec::len).sum();
    eprintln!(
        "examples: {added} added from {} ({skipped} lines skipped)",
        path.display(),
    );
    let mut profiles = registry.into_profiles();
    for (profile, examples) in profiles.iter_mut().zip(examples) {
        profile.examples.extend(examples);
    }
    AgentRegistry::new(profiles)
        .map_err(|e| Failure::rejected(format!("catalogue with examples: {e}")))
}

/// The example texts of `reader` per agent (indexed as the registry is, each agent
/// found through the registry's id index), and the number of lines skipped.
fn read_examples(
    registry: &AgentRegistry,
    reader: impl std::io::BufRead,
    source: &str,
    on_error: OnError,
) -> Result<(Vec<Vec<String>>, usize), Failure> {
    let mut examples = vec![Vec::new(); registry.len()];
    let counts = input::for_each(reader, source, TEXT_FIELDS, on_error, |item| {
        if item.text.trim().is_empty() {
            return Err(input::LineError::Bad(
                "the example text is empty (rule: empty_task)".to_owned(),
            ));
        }
        let agent = item.field(AGENT_FIELDS).ok_or_else(|| {
            format!(
                "no agent field: expected a string in one of {}",
                AGENT_FIELDS.join(", ")
            )
        })?;
        let index = registry
            .index_of(agent)
            .ok_or_else(|| format!("unknown agent {agent:?}: not in the catalogue"))?;
        if let Some(list) = examples.get_mut(index) {
            list.push(item.text.clone());
        }
        Ok(true)
    })?;
    Ok((examples, counts.skipped))
}

/// The task a line describes: its text, `kind` and `metadata` (an object of strings,
/// for rules with metadata conditions; audit H11 H1). An empty or blank text is a
/// malformed line.
fn task_of(item: &input::Item) -> Result<Task, String> {
    if item.text.trim().is_empty() {
        return Err("the task text is empty: no task description (rule: empty_task)".to_owned());
    }
    let mut metadata = genesis::core::Metadata::new();
    match item.fields.as_ref().and_then(|f| f.get("metadata")) {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(map)) => {
            for (key, value) in map {
                let serde_json::Value::String(value) = value else {
                    return Err(format!(
                        "field \"metadata.{key}\" is not a string (got {}): metadata values \
                         are strings",
                        input::json_type(value)
                    ));
                };
                metadata.insert(key.clone().into(), value.clone().into());
            }
        }
        Some(other) => {
            return Err(format!(
                "field \"metadata\" is not an object (got {}): expected an object of string \
                 values",
                input::json_type(other)
            ));
        }
    }
    let kind = match item.field(&["kind"]) {
        Some(k) => k.parse::<TaskKind>().map_err(|e| {
            let valid: Vec<&str> = TaskKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("{e}: expected one of {}", valid.join(", "))
        })?,
        None => TaskKind::Generic,
    };
    let mut task = Task::new(
        TaskId::new(format!("line-{}", item.line)),
        kind,
        item.text.clone(),
    );
    task.metadata = metadata;
    Ok(task)
}

/// One output line.
fn decision_json(item: &input::Item, d: &RouteDecision, gold: Option<&str>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "line": item.line,
        "agent": d.agent,
        "score": d.score,
        "match_score": d.match_score,
        "layer": d.layer,
        "alternatives": d.alternatives,
        "explanation": d.explanation,
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(id) = item.fields.as_ref().and_then(|f| f.get("id")) {
            obj.insert("id".into(), id.clone());
        }
        if let Some(gold) = gold {
            obj.insert("gold".into(), gold.into());
        }
    }
    v
}

/// `genesis route`.
pub(crate) fn route(config: &[&Path], args: RouteArgs) -> Result<(), Failure> {
    let router = router(config, &args)?;
    let reader = input::open(args.input.as_deref())?;
    let source = input::source_name(args.input.as_deref());
    let mut out = std::io::stdout().lock();
    let (mut unassigned, mut labelled, mut correct) = (0usize, 0usize, 0usize);
    let counts = input::for_each_task(reader, &source, TEXT_FIELDS, args.on_error, |item| {
        let task = task_of(item)?;
        let d = router.route(&task);
        if d.agent.is_none() {
            unassigned += 1;
        }
        let gold = item.field(AGENT_FIELDS);
        if let Some(g) = gold {
            labelled += 1;
            if d.agent.as_ref().is_some_and(|a| a.as_str() == g) {
                correct += 1;
            }
        }
        input::write_line(&mut out, &decision_json(item, &d, gold).to_string())
    })?;
    eprintln!(
        "routed {} tasks: {unassigned} unassigned, {} lines skipped",
        counts.items, counts.skipped
    );
    if labelled > 0 {
        eprintln!(
            "top-1 accuracy against gold labels: {:.4} ({correct}/{labelled})",
            correct as f64 / labelled as f64
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(line: usize, v: serde_json::Value) -> input::Item {
        input::Item {
            line,
            text: v["text"].as_str().unwrap_or("x").to_owned(),
            fields: v.as_object().cloned(),
        }
    }

    #[test]
    fn kind_field_is_parsed_with_aliases() {
        let t = task_of(&item(
            4,
            serde_json::json!({"text": "ship it", "kind": "deployment"}),
        ))
        .unwrap();
        assert_eq!(t.kind, TaskKind::Deploy);
        assert_eq!(t.id.as_str(), "line-4");
        let e = task_of(&item(
            1,
            serde_json::json!({"text": "x", "kind": "juggling"}),
        ))
        .unwrap_err();
        assert!(e.contains("juggling"), "{e}");
        assert!(
            e.contains("expected one of ") && e.contains("deploy"),
            "{e}"
        );
    }

    #[test]
    fn examples_go_to_the_agent_they_name() {
        let registry = AgentRegistry::from_toml_str(
            "[[agent]]\nid = \"a\"\ndescription = \"x\"\n\n\
             [[agent]]\nid = \"b\"\ndescription = \"y\"\n",
        )
        .unwrap();
        let lines = "{\"text\": \"one\", \"agent\": \"b\"}\n\
                     {\"text\": \"two\", \"gold_tool\": \"a\"}\n\
                     {\"text\": \"three\", \"agent\": \"ghost\"}\n\
                     {\"text\": \"four\", \"agent\": \"b\"}\n";
        let (examples, skipped) =
            read_examples(&registry, lines.as_bytes(), "ex", OnError::Skip).unwrap();
        assert_eq!(examples, [vec!["two"], vec!["one", "four"]]);
        assert_eq!(skipped, 1);
        let err = read_examples(&registry, lines.as_bytes(), "ex", OnError::Fail).unwrap_err();
        assert!(
            err.message.contains("line 3: unknown agent \"ghost\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn top_k_range_matches_the_router_limit() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            route: RouteArgs,
        }
        let top_k = |k: &str| Cli::try_parse_from(["genesis", "--top-k", k]).map(|c| c.route.top_k);
        assert_eq!(top_k("15").unwrap(), 15);
        assert!(top_k("16").is_err());
        assert!(top_k("0").is_err());
        let config = |top_k| {
            genesis::halo::RouterConfig {
                top_k,
                ..Default::default()
            }
            .validate()
        };
        assert!(config(15).is_ok());
        assert!(config(16).is_err(), "the CLI range follows the router's");
    }

    #[test]
    fn decisions_carry_alternatives_and_gold() {
        let registry = AgentRegistry::from_toml_str(
            "[[agent]]\nid = \"flights\"\ndescription = \"books flights and airline tickets\"\n\n\
             [[agent]]\nid = \"weather\"\ndescription = \"weather forecasts for a city\"\n",
        )
        .unwrap();
        let router = Router::new(registry, RoutingRules::empty()).unwrap();
        let it = item(
            2,
            serde_json::json!({"text": "book a flight to Paris", "gold_tool": "flights", "id": 9}),
        );
        let d = router.route(&task_of(&it).unwrap());
        let v = decision_json(&it, &d, it.field(AGENT_FIELDS));
        assert_eq!(v["agent"], "flights");
        assert_eq!(v["gold"], "flights");
        assert_eq!(v["id"], 9);
        assert_eq!(v["line"], 2);
        assert!(v["explanation"].as_str().is_some_and(|s| !s.is_empty()));
    }
}
