//! The `genesis` command.
//!
//! Exit codes: 0 success, 2 rejected input or a usage error such as a missing API key
//! (the reason names the rule), 1 internal error, a failed run, a failed health check
//! or a `deploy tick` that rolled the flag back, 3 a `deploy tick` that wrote nothing
//! because the rollout changed while it read the metrics (a rollback or another tick
//! won). Reasons go to stderr on one line; results go to stdout.

// A command-line tool's job is to print.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod commands;
mod health;
mod input;
mod rollout;
mod route;
mod run;
mod scan;
mod scrape;
mod setup;
mod token;

/// mimalloc: the planner and server allocate many small, short-lived objects (task
/// strings, explanations); glibc malloc spends ~25% of `plan()` in malloc/free, mimalloc
/// a third of that (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Genesis: plan and run multi-agent work.
#[derive(Debug, Parser)]
#[command(name = "genesis", version, about)]
struct Cli {
    /// Extra configuration file, applied over config/genesis.toml.
    #[arg(long, global = true, env = "GENESIS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Output formats of `genesis plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlanFormat {
    /// An indented tree with agent, model, cost and explanation per task.
    Tree,
    /// The plan as JSON (stable field names, see docs/API.md).
    Json,
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decompose, route, pick models and validate a request; print the plan.
    Plan {
        /// The request, in words.
        request: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Tree)]
        format: PlanFormat,
        /// Run budget in US dollars the plan must fit in.
        #[arg(long)]
        budget: Option<f64>,
        /// Background for the request (the API's `context`): screened with it and given
        /// to the agents, but not planned into tasks.
        #[arg(long)]
        context: Option<String>,
    },
    /// Plan and execute a request on LLM agents, with live progress.
    Run(run::RunArgs),
    /// Route task descriptions to agents: one JSON decision per input line.
    Route(route::RouteArgs),
    /// Score texts for prompt injection: one JSON verdict per input line.
    Scan(scan::ScanArgs),
    /// Inspect and evaluate feature flags.
    Flags {
        #[command(subcommand)]
        command: rollout::FlagsCommand,
    },
    /// Progressive rollout of a feature flag: start, then tick with health samples.
    Deploy(rollout::DeployArgs),
    /// Roll a flag's rollout back to 0% now.
    Rollback(rollout::RollbackArgs),
    /// Show rollout state.
    Status(rollout::StatusArgs),
    /// Check a running server: health, readiness, metrics, flags, budget.
    Health(health::HealthArgs),
    /// Issue an agent token (signed with GENESIS_AUTH_SECRET) for an agent that calls
    /// the server back.
    Token(token::TokenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let config = cli.config.as_deref();
    let result = runtime.block_on(async {
        match cli.command {
            Command::Plan {
                request,
                format,
                budget,
                context,
            } => commands::plan(config, &request, format, budget, context).await,
            Command::Run(args) => run::run(config, args).await,
            Command::Route(args) => route::route(config, args),
            Command::Scan(args) => scan::scan(config, args),
            Command::Flags { command } => rollout::flags(config, command),
            Command::Deploy(args) => rollout::deploy(config, args).await,
            Command::Rollback(args) => rollout::rollback(config, args),
            Command::Status(args) => rollout::status(config, args),
            Command::Health(args) => health::health(args).await,
            Command::Token(args) => token::token(config, args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
