//! The `genesis` command.
//!
//! Exit codes ([`EXIT_CODES`], also printed by `genesis --help`): 0 success, 2 rejected
//! input or configuration (a usage error, a missing API key, a missing or malformed
//! `--config` file, an invalid value, a bad URL, catalogue or rules file: the reason
//! names the rule or the file), 1 an I/O or runtime failure (stdout cannot be written, a
//! failed run, a failed health check, a `deploy tick` that rolled the flag back), 3 a
//! `deploy tick` that wrote nothing because the rollout changed while it read the
//! metrics (a rollback or another tick won). Reasons go to stderr on one line; results
//! go to stdout.

// Results go to stdout only through `commands::emit` and `input::write_line`, which
// turn a write error into exit 1 (a closed pipe into a quiet exit 0); std's print
// macros panic on a write error (exit 101, audit V10 #3), so they are refused here.
#![deny(clippy::print_stdout, clippy::print_stderr)]

/// `eprintln!` for this crate, shadowing std's (a `macro_rules!` defined before the
/// modules is in scope in all of them and wins over the prelude's): writes the line to
/// stderr and ignores a write error, where std's panics. A reason that cannot be
/// written to stderr (`2>/dev/full`, a closed pipe) has nowhere else to go, and the
/// exit code still tells the caller what happened.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod commands;
mod health;
mod input;
mod rollout;
mod route;
mod run;
mod scan;
mod scrape;
mod setup;
mod text;
mod token;

/// mimalloc: the planner and server allocate many small, short-lived objects (task
/// strings, explanations); glibc malloc spends ~25% of `plan()` in malloc/free, mimalloc
/// a third of that (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// The exit codes, shown after `genesis --help` (and in README.md).
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  an I/O or runtime failure: stdout cannot be written, a run failed, a health check
     failed, a deploy tick rolled the flag back
  2  rejected input or configuration: a usage error, a missing or malformed --config
     file, an invalid value, a bad URL, catalogue or rules file, a missing API key (the
     message names the rule or the file)
  3  deploy tick wrote nothing: the rollout changed while it read the metrics";

/// Genesis: plan and run multi-agent work (plan, run, route, scan, flags, deploy,
/// rollback, status, health, token).
#[derive(Debug, Parser)]
#[command(name = "genesis", version, after_help = EXIT_CODES)]
struct Cli {
    /// Extra configuration file, applied over config/genesis.toml. Repeat it to layer
    /// several, later files winning (as genesis-server's --config).
    #[arg(long, global = true, env = "GENESIS_CONFIG")]
    config: Vec<PathBuf>,
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
        /// Run budget in US dollars the plan must fit in, at most 1000000.
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_exit(&e),
    };
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
    let config: Vec<&std::path::Path> = cli.config.iter().map(PathBuf::as_path).collect();
    let config = config.as_slice();
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

/// Prints clap's usage error, `--help` or `--version` and gives its exit code (2 for a
/// usage error, 0 for help), or 1 when help or the version (on stdout) cannot be
/// written, as any other result; a closed pipe (`genesis --help | head -1`) stays 0.
fn usage_exit(e: &clap::Error) -> ExitCode {
    match e.print() {
        Err(write) if e.use_stderr() || write.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(write) => {
            eprintln!("error: cannot write to stdout: {write}");
            return ExitCode::from(1);
        }
        Ok(()) => {}
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}
