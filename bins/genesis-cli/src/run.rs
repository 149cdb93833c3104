//! `genesis run`: plan, execute on LLM agents with live progress, print the result
//! (issue #5).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use clap::ValueEnum;
use genesis::core::ModelId;
use genesis::llm::{ProviderConfig, ProviderKind};
use genesis::run::{RunEvent, RunResult, RunStatus, TaskStatus};
use genesis::{GenesisConfig, GenesisError, PlanOptions, RunOptions};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::broadcast;

use crate::setup::{Failure, load_config, orchestrator};

/// LLM wire protocols selectable on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Provider {
    /// OpenAI chat completions (also vLLM, llama.cpp server, Ollama, gateways).
    Openai,
    /// Anthropic Messages API.
    Anthropic,
}

impl Provider {
    /// The environment variable holding its API key.
    fn key_variable(self) -> &'static str {
        genesis::providers::key_variable(self.kind())
    }

    fn kind(self) -> ProviderKind {
        match self {
            Provider::Openai => ProviderKind::Openai,
            Provider::Anthropic => ProviderKind::Anthropic,
        }
    }
}

/// How `genesis run` prints the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RunFormat {
    /// Answer, per-task status and cost for people.
    Text,
    /// The run result as JSON (`run_id`, `status`, `answer`, `tasks`, `cost`).
    Json,
}

/// Arguments of `genesis run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The request, in words.
    request: String,
    /// LLM provider protocol (default: the first configured provider's; with none
    /// configured, the one whose key is set, OPENAI_API_KEY then ANTHROPIC_API_KEY).
    #[arg(long, value_enum)]
    provider: Option<Provider>,
    /// Provider API root, e.g. http://127.0.0.1:11434/v1 for a local server.
    #[arg(long)]
    base_url: Option<String>,
    /// Model to call (default: the configured provider's model, else gpt-4o-mini or
    /// claude-3-5-haiku-latest).
    #[arg(long)]
    model: Option<String>,
    /// Run budget in US dollars, at most 1000000.
    #[arg(long)]
    budget: Option<f64>,
    /// Background for the request (the API's `context`): screened with it and given
    /// to the agents, but not planned into tasks.
    #[arg(long)]
    context: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = RunFormat::Text)]
    format: RunFormat,
}

/// Applies the provider flags to `config` as the first `[[llm.providers]]` entry (a
/// configured entry of the same kind is its template and is replaced), turns LLM agents
/// on and fills API keys from `env`.
pub(crate) fn apply_provider_flags(
    config: &mut GenesisConfig,
    provider: Option<Provider>,
    base_url: Option<&str>,
    model: Option<&str>,
    env: &HashMap<String, String>,
) {
    if provider.is_some() || base_url.is_some() || model.is_some() {
        let kind = provider
            .map(Provider::kind)
            .or_else(|| config.llm.providers.first().map(|p| p.kind))
            .unwrap_or(ProviderKind::Openai);
        let position = config.llm.providers.iter().position(|p| p.kind == kind);
        let mut entry = match position {
            Some(i) => config.llm.providers.remove(i),
            None => ProviderConfig::new(
                kind,
                match kind {
                    ProviderKind::Anthropic => "claude-3-5-haiku-latest",
                    _ => "gpt-4o-mini",
                },
            ),
        };
        if let Some(url) = base_url {
            entry.base_url = Some(url.to_owned());
        }
        if let Some(m) = model {
            entry.model = ModelId::new(m);
        }
        config.llm.providers.insert(0, entry);
    }
    config.llm.agents = true;
    genesis::providers::apply_key_env(&mut config.llm, env);
}

/// The provider to use when nothing chooses one (no `--provider`, `--base-url` or
/// `--model`, no `[[llm.providers]]`, no `[backends]`) but a provider's API key is in
/// the environment: OpenAI when `OPENAI_API_KEY` is set, else Anthropic when
/// `ANTHROPIC_API_KEY` is (audit C10: the key alone was refused).
fn inferred_provider(
    config: &GenesisConfig,
    args: &RunArgs,
    env: &HashMap<String, String>,
) -> Option<Provider> {
    if args.base_url.is_some()
        || args.model.is_some()
        || !config.llm.providers.is_empty()
        || !config.backends.is_empty()
    {
        return None;
    }
    [Provider::Openai, Provider::Anthropic]
        .into_iter()
        .find(|p| {
            env.get(p.key_variable())
                .is_some_and(|k| !k.trim().is_empty())
        })
}

/// `genesis run`.
pub(crate) async fn run(config_path: &[&Path], args: RunArgs) -> Result<(), Failure> {
    let mut config = load_config(config_path)?;
    if args.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
        return Err(Failure::rejected(
            "--model \"\": a model name is required (rule: model_name)",
        ));
    }
    let env: HashMap<String, String> = std::env::vars().collect();
    let provider = args.provider.or_else(|| {
        let inferred = inferred_provider(&config, &args, &env)?;
        eprintln!(
            "using provider {} ({} is set; --provider chooses another)",
            inferred.kind().as_str(),
            inferred.key_variable()
        );
        Some(inferred)
    });
    apply_provider_flags(
        &mut config,
        provider,
        args.base_url.as_deref(),
        args.model.as_deref(),
        &env,
    );
    if config.llm.providers.is_empty() && config.backends.is_empty() {
        return Err(Failure::rejected(
            "no agent can run tasks: pass --provider/--base-url/--model or configure [[llm.providers]] or [backends] (rule: agent_backend_required)",
        ));
    }
    let budget = args.budget.map(crate::commands::parse_budget).transpose()?;
    let genesis = orchestrator(&config)?;
    let options = PlanOptions {
        budget,
        context: args.context.clone(),
        ..Default::default()
    };
    let plan = match genesis.plan_with(&args.request, &options).await {
        Ok(plan) => plan,
        Err(GenesisError::InvalidPlan { summary, .. }) => {
            return Err(Failure::rejected(format!(
                "plan failed validation: {summary}"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let mut handle = genesis.execute(
        plan,
        RunOptions {
            budget,
            ..Default::default()
        },
    )?;
    let events = handle.events();
    let progress = tokio::spawn(show_progress(events, std::io::stderr().is_terminal()));
    let cancel = handle.cancellation();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: cancelling the run");
            cancel.cancel();
        }
    });
    let result = handle.wait().await;
    interrupt.abort();
    // The progress task ends at `run_finished`; do not hang if that event was lost.
    if tokio::time::timeout(Duration::from_secs(2), progress)
        .await
        .is_err()
    {
        eprintln!("warning: progress display did not finish");
    }
    let text = match args.format {
        RunFormat::Json => serde_json::to_string_pretty(&result)
            .map_err(|e| Failure::internal(format!("cannot serialise the result: {e}")))?,
        // Model and agent text: control characters shown, not obeyed by the terminal.
        RunFormat::Text => crate::text::visible(&render(&result)).into_owned(),
    };
    crate::commands::emit(&text)?;
    match result.status {
        RunStatus::Succeeded => Ok(()),
        status => {
            let failed = result
                .tasks
                .iter()
                .filter(|t| t.status != TaskStatus::Succeeded)
                .count();
            Err(Failure::internal(format!(
                "run {} {}: {failed} of {} tasks did not succeed",
                result.run_id,
                status.as_str(),
                result.tasks.len()
            )))
        }
    }
}

/// The result for people: status line, answer, one line per task.
fn render(result: &RunResult) -> String {
    let mut out = format!(
        "run {}: {} ({} tasks, cost {})\n\nanswer:\n{}\n\ntasks:\n",
        result.run_id,
        result.status.as_str(),
        result.tasks.len(),
        result.cost,
        if result.answer.trim().is_empty() {
            "(none)"
        } else {
            result.answer.trim()
        }
    );
    for t in &result.tasks {
        out.push_str(&format!(
            "  {:<10} {:<12} {:<14} attempts {}  {}",
            t.status.as_str(),
            t.task_id.as_str(),
            t.agent.as_ref().map_or("-", |a| a.as_str()),
            t.attempts,
            t.cost
        ));
        if let Some(e) = &t.error {
            out.push_str("  error: ");
            out.push_str(&e.replace('\n', " "));
        }
        out.push('\n');
    }
    out
}

/// One plain progress line for an event, or `None` for events not worth a line. Agent
/// and model text in it (reasons) has its control characters made visible.
pub(crate) fn event_line(event: &RunEvent) -> Option<String> {
    raw_event_line(event).map(|line| crate::text::visible(&line).into_owned())
}

fn raw_event_line(event: &RunEvent) -> Option<String> {
    Some(match event {
        RunEvent::RunStarted { tasks, resumed } => {
            format!("run started: {tasks} tasks ({resumed} already done)")
        }
        RunEvent::TaskStarted {
            task_id,
            agent,
            attempt,
            model,
        } => match model {
            Some(model) => {
                format!("started   {task_id} on {agent} with {model} (attempt {attempt})")
            }
            None => format!("started   {task_id} on {agent} (attempt {attempt})"),
        },
        RunEvent::TaskRetrying {
            task_id,
            agent,
            attempt,
            delay_ms,
            reason,
        } => {
            format!(
                "retrying  {task_id} on {agent} after attempt {attempt} in {delay_ms}ms: {reason}"
            )
        }
        RunEvent::TaskRerouted {
            task_id,
            from,
            to,
            reason,
        } => {
            format!("rerouted  {task_id} from {from} to {to}: {reason}")
        }
        RunEvent::TaskRefined {
            task_id,
            round,
            score,
            ..
        } => {
            format!("refined   {task_id} round {round} (score {score:.2})")
        }
        RunEvent::TaskSucceeded {
            task_id,
            agent,
            cost,
            duration_ms,
            ..
        } => {
            format!("succeeded {task_id} by {agent} in {duration_ms}ms ({cost})")
        }
        RunEvent::TaskFailed {
            task_id,
            reason,
            attempts,
            ..
        } => {
            format!("failed    {task_id} after {attempts} attempts: {reason}")
        }
        RunEvent::TaskSkipped {
            task_id, reason, ..
        } => format!("skipped   {task_id}: {reason}"),
        RunEvent::TasksAdded { after, tasks } => {
            format!("added     {} follow-up tasks after {after}", tasks.len())
        }
        RunEvent::UpdateRejected { after, reason } => {
            format!("rejected  update after {after}: {reason}")
        }
        RunEvent::RunRejected { rule, reason } => format!("refused   run ({rule}): {reason}"),
        RunEvent::BudgetExceeded {
            task_id,
            scope,
            spent,
            reserved,
            requested,
            limit,
        } => format!(
            "budget    {task_id}: {scope} budget {limit} spent {spent} + in flight {reserved} \
             leaves no room for {requested} (rule: budget_{scope})"
        ),
        RunEvent::BudgetOverspent {
            task_id,
            scope,
            spent,
            limit,
        } => format!(
            "overspent {task_id}: {scope} budget {limit} now spent {spent}: the agent reported more \
             than was set aside (rule: budget_{scope})"
        ),
        RunEvent::RunFinished { status, cost, .. } => {
            format!("run {} (cost {cost})", status.as_str())
        }
        _ => return None,
    })
}

/// Shows run events on stderr until the run finishes: a progress bar on a terminal,
/// one line per event otherwise.
async fn show_progress(mut events: broadcast::Receiver<RunEvent>, terminal: bool) {
    let bar = terminal.then(|| {
        let bar = ProgressBar::new(0);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} tasks {elapsed} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                eprintln!("warning: {n} progress events dropped");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let finished = matches!(event, RunEvent::RunFinished { .. });
        match &bar {
            None => {
                if let Some(line) = event_line(&event) {
                    eprintln!("{line}");
                }
            }
            Some(bar) => match &event {
                RunEvent::RunStarted { tasks, resumed } => {
                    bar.set_length(*tasks as u64);
                    bar.set_position(*resumed as u64);
                }
                RunEvent::TaskStarted { task_id, agent, .. } => bar.set_message(
                    crate::text::visible(&format!("{task_id} on {agent}")).into_owned(),
                ),
                RunEvent::TaskSucceeded { .. } | RunEvent::TaskSkipped { .. } => bar.inc(1),
                RunEvent::TaskFailed { .. } => {
                    bar.inc(1);
                    if let Some(line) = event_line(&event) {
                        bar.println(line);
                    }
                }
                RunEvent::TasksAdded { tasks, .. } => bar.inc_length(tasks.len() as u64),
                RunEvent::Cost { spent } => bar.set_message(format!("spent {spent}")),
                RunEvent::RunFinished { .. } => {
                    // The bar goes and the final line is printed whole, newline
                    // included, so the result does not run onto it.
                    bar.finish_and_clear();
                    if let Some(line) = event_line(&event) {
                        eprintln!("{line}");
                    }
                }
                other => {
                    if let Some(line) = event_line(other) {
                        bar.println(line);
                    }
                }
            },
        }
        if finished {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genesis::core::Usd;

    #[test]
    fn provider_flags_become_the_first_provider_and_keep_the_template() {
        let mut config = GenesisConfig::default();
        let mut existing = ProviderConfig::new(ProviderKind::Openai, "gpt-4o");
        existing.max_tokens = 77;
        config.llm.providers.push(ProviderConfig::new(
            ProviderKind::Anthropic,
            "claude-3-5-haiku-latest",
        ));
        config.llm.providers.push(existing);
        let env: HashMap<String, String> =
            [("OPENAI_API_KEY".to_owned(), "sk-test".to_owned())].into();
        apply_provider_flags(
            &mut config,
            Some(Provider::Openai),
            Some("http://127.0.0.1:9/v1"),
            None,
            &env,
        );
        assert!(config.llm.agents);
        assert_eq!(config.llm.providers.len(), 2);
        let first = &config.llm.providers[0];
        assert_eq!(first.kind, ProviderKind::Openai);
        assert_eq!(first.model.as_str(), "gpt-4o");
        assert_eq!(first.max_tokens, 77);
        assert_eq!(first.base_url.as_deref(), Some("http://127.0.0.1:9/v1"));
        assert_eq!(
            first.api_key.as_ref().map(|k| k.expose().to_owned()),
            Some("sk-test".to_owned())
        );
    }

    #[test]
    fn no_flags_only_turn_agents_on() {
        let mut config = GenesisConfig::default();
        apply_provider_flags(&mut config, None, None, None, &HashMap::new());
        assert!(config.llm.agents);
        assert!(config.llm.providers.is_empty());
        apply_provider_flags(&mut config, None, None, Some("llama3"), &HashMap::new());
        assert_eq!(config.llm.providers[0].kind, ProviderKind::Openai);
        assert_eq!(config.llm.providers[0].model.as_str(), "llama3");
    }

    #[test]
    fn event_lines_name_task_and_reason() {
        let e = RunEvent::TaskFailed {
            task_id: "t3".into(),
            reason: "agent timed out".into(),
            attempts: 4,
            model: None,
            input_tokens: 0,
            output_tokens: 0,
            cost: genesis::core::Usd::ZERO,
        };
        assert_eq!(
            event_line(&e).unwrap(),
            "failed    t3 after 4 attempts: agent timed out"
        );
        assert!(event_line(&RunEvent::Cost { spent: Usd::ZERO }).is_none());
        let usd = |v: f64| Usd::new(v).unwrap();
        let e = RunEvent::BudgetExceeded {
            task_id: "t2".into(),
            scope: genesis::daao::BudgetScope::Run,
            spent: usd(0.9),
            reserved: usd(0.05),
            requested: usd(0.1),
            limit: usd(1.0),
        };
        let line = event_line(&e).unwrap();
        assert!(line.starts_with("budget    t2: run budget"), "{line}");
        assert!(line.ends_with("(rule: budget_run)"), "{line}");
        let e = RunEvent::BudgetOverspent {
            task_id: "t4".into(),
            scope: genesis::daao::BudgetScope::Run,
            spent: usd(9.0),
            limit: usd(5.0),
        };
        let line = event_line(&e).unwrap();
        assert!(line.starts_with("overspent t4: run budget"), "{line}");
        assert!(line.ends_with("(rule: budget_run)"), "{line}");
    }
}
