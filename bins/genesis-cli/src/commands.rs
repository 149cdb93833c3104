//! Subcommand implementations.

use std::path::Path;

use genesis::GenesisError;
use genesis::core::Usd;

use crate::PlanFormat;
use crate::setup::{Failure, load_config, orchestrator};

/// `genesis plan`.
pub(crate) async fn plan(
    config: &[&Path],
    request: &str,
    format: PlanFormat,
    budget: Option<f64>,
    context: Option<String>,
) -> Result<(), Failure> {
    let config = load_config(config)?;
    let genesis = orchestrator(&config)?;
    let budget = budget.map(parse_budget).transpose()?;
    let options = genesis::PlanOptions {
        budget,
        context,
        ..Default::default()
    };
    let (plan, failure) = match genesis.plan_with(request, &options).await {
        Ok(plan) => (plan, None),
        Err(GenesisError::InvalidPlan { summary, plan }) => {
            let f = Failure::rejected(format!("plan failed validation: {summary}"));
            (*plan, Some(f))
        }
        Err(e) => return Err(e.into()),
    };
    let text = match format {
        // The tree echoes the request: its control characters are shown, not obeyed.
        PlanFormat::Tree => crate::text::visible(&plan.render_tree()).into_owned(),
        PlanFormat::Json => serde_json::to_string_pretty(&plan)
            .map_err(|e| Failure::internal(format!("cannot serialise the plan: {e}")))?,
        PlanFormat::Dot => plan.render_dot(),
        PlanFormat::Mermaid => plan.render_mermaid(),
    };
    emit(&text)?;
    failure.map_or(Ok(()), Err)
}

/// The largest `--budget` accepted, in US dollars: a sanity bound (a run's budget is
/// dollars to cents, not 300-digit numbers).
pub(crate) const MAX_BUDGET_USD: f64 = 1_000_000.0;

/// A `--budget` value: a valid amount (see `Usd::new`) of at most [`MAX_BUDGET_USD`]
/// (rule `max_budget`), else exit code 2.
pub(crate) fn parse_budget(b: f64) -> Result<Usd, Failure> {
    if b > MAX_BUDGET_USD {
        return Err(Failure::rejected(format!(
            "--budget {b}: must be at most {MAX_BUDGET_USD} US dollars (rule: max_budget)"
        )));
    }
    Usd::new(b).map_err(|e| Failure::rejected(format!("--budget: {e}")))
}

/// Writes `text` and a newline to stdout. A closed pipe (`genesis plan ... | head`) is
/// not an error.
pub(crate) fn emit(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{}", text.trim_end()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::internal(format!("cannot write to stdout: {e}"))),
    }
}
