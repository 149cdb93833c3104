//! `genesis-server`: parse arguments, load configuration, initialise telemetry, build
//! the app, resume unfinished runs, serve (and the operations listener of
//! `server.ops_bind`, if set), and on ctrl-c / SIGTERM answer `/ready` with
//! 503 while still accepting for `server.shutdown_delay`, then stop accepting, drain
//! in-flight runs within the grace period and exit 0.

/// mimalloc: the planner and server allocate many small, short-lived objects (task
/// strings, explanations); glibc malloc spends ~25% of `plan()` in malloc/free, mimalloc
/// a third of that (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

/// The Genesis HTTP API server.
#[derive(Debug, Parser)]
#[command(name = "genesis-server", version, about)]
struct Args {
    /// Configuration file applied over config/genesis.toml (e.g. config/production.toml).
    /// Repeat it to layer several, later files winning (e.g. production.toml, then a file
    /// of [backends]).
    #[arg(long, env = "GENESIS_CONFIG")]
    config: Vec<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            fatal(&error);
            std::process::ExitCode::FAILURE
        }
    }
}

/// Reports a fatal error as one log line, level ERROR, with the whole chain in the
/// `error_chain` field: through the log subscriber once it is installed, else (the
/// configuration did not load) through one installed here with the default settings,
/// so the line has the usual shape (timestamp, level, fields, target): JSON, unless
/// `GENESIS_TELEMETRY__FORMAT` asks for `pretty` or `compact` (any case).
fn fatal(error: &anyhow::Error) {
    let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
    if !tracing::dispatcher::has_been_set() {
        let format = match std::env::var("GENESIS_TELEMETRY__FORMAT")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "pretty" => genesis::telemetry::LogFormat::Pretty,
            "compact" => genesis::telemetry::LogFormat::Compact,
            _ => genesis::telemetry::LogFormat::Json,
        };
        let config = genesis::telemetry::TelemetryConfig {
            format,
            ..genesis::telemetry::TelemetryConfig::default()
        };
        if genesis::telemetry::init_with_writer(&config, std::io::stderr).is_err() {
            eprintln!("Error: {error:?}");
            return;
        }
    }
    tracing::error!(error = %error, error_chain = %chain.join(": "), "fatal start-up error");
}

async fn run(args: Args) -> anyhow::Result<()> {
    // No process-wide rustls provider: every HTTP client in the process (LLM providers,
    // HTTP agents, the OTLP exporter) is handed its `ring` configuration explicitly.
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut config = genesis::GenesisConfig::load_layered_all(
        &args.config.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        env.iter().cloned(),
    )
    .context("loading configuration")?;
    if let Some((_, filter)) = env.iter().find(|(k, _)| k == "RUST_LOG") {
        config.telemetry.filter = filter.clone();
    }
    let telemetry =
        genesis::telemetry::init(&config.telemetry).context("initialising telemetry")?;
    let metrics = genesis::telemetry::install_prometheus_recorder()
        .context("installing the metrics recorder")?;
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let bind = config.server.bind;
    let grace = config.server.shutdown_grace;
    let delay = config.server.shutdown_delay;
    let reload_every = config.flags.reload_interval;
    // One server per data directory: a second one would migrate the store under the
    // first one and resume its runs. Taken before the store is opened (audit S6), after
    // the settings are checked (a bad setting must not create the data directory).
    genesis_server::AppState::check_config(&config, &env).context("starting")?;
    let ops_bind = genesis_server::ops_bind(&config.server).context("starting")?;
    let _lock = genesis_server::lock_data_dir(&config.server.data_dir)?;
    let state =
        genesis_server::AppState::from_config(config, &env, Some(metrics)).context("starting")?;
    // A GENESIS_* variable that sets nothing is most likely a typo: say so.
    let flag_names: Vec<String> = state
        .orchestrator()
        .flags()
        .map(|f| f.snapshot().flags().map(|f| f.name.clone()).collect())
        .unwrap_or_default();
    for variable in genesis::GenesisConfig::unknown_env_variables(&env, &flag_names) {
        tracing::warn!(
            %variable,
            "environment variable ignored: not a configuration key (GENESIS_<SECTION>__<KEY>), \
             a variable genesis reads or a feature flag"
        );
    }
    let resumed = genesis_server::resume(&state).context("resuming unfinished runs")?;
    let _learning = genesis_server::spawn_learning_saver(Arc::clone(&state));
    let _retention = genesis_server::spawn_retention(Arc::clone(&state));
    let _refusals = genesis_server::spawn_refusal_log_flush(Arc::clone(&state));
    // Hot reload of the flags file: `genesis deploy` steps and kill switches written to
    // the file take effect without a restart.
    if let Some(flags) = state.orchestrator().flags() {
        let _ = genesis::spawn_flag_reloader(flags.clone(), reload_every);
    }
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    // The operations listener (server.ops_bind): probes and scrapes on a port that a
    // connection flood on `bind` does not reach.
    let ops_listener = match ops_bind {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding server.ops_bind {addr}"))?;
            tracing::info!(addr = %addr, "operations listener (/health, /ready, /metrics)");
            Some(listener)
        }
        None => None,
    };
    tracing::info!(addr = %bind, resumed, "genesis-server listening");
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    // Header timeout and connection caps (server.header_timeout, max_connections,
    // max_connections_per_ip) live in `serve`; `stop` starts its graceful shutdown.
    let mut server = tokio::spawn(genesis_server::serve(
        listener,
        Arc::clone(&state),
        async move { stopped.cancelled().await },
    ));
    // The operations listener shuts down with the main one.
    let mut ops = ops_listener.map(|listener| {
        let stopped = stop.clone();
        tokio::spawn(genesis_server::serve_ops(
            listener,
            Arc::clone(&state),
            async move { stopped.cancelled().await },
        ))
    });
    tokio::select! {
        served = &mut server => {
            // The server stopped by itself: that is a failure, not a shutdown.
            served.context("server task")?;
            anyhow::bail!("the server stopped without a shutdown signal");
        }
        Some(served) = async {
            match ops.as_mut() {
                Some(ops) => Some(ops.await),
                None => None,
            }
        } => {
            served.context("operations listener task")?;
            anyhow::bail!("the operations listener stopped without a shutdown signal");
        }
        () = shutdown_signal() => {}
    }
    // Not ready first, while the listener stays open for `server.shutdown_delay`: load
    // balancers polling /ready on new connections see 503 and stop routing here before
    // connections are refused. New runs are refused meanwhile (503 `shutting_down`).
    state.begin_shutdown();
    if !delay.is_zero() {
        tracing::info!(delay = ?delay, "shutdown signal: not ready, still accepting connections for server.shutdown_delay");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown_signal() => tracing::info!("second shutdown signal: ending the delay"),
            served = &mut server => {
                served.context("server task")?;
                anyhow::bail!("the server stopped during the shutdown delay");
            }
        }
    }
    tracing::info!(grace = ?grace, "shutdown: closing the listener, refusing new runs, draining");
    stop.cancel();
    // One grace period bounds both: in-flight runs finish or stay journaled (they resume
    // at the next start), and open connections (event streams) get the same time to close.
    let deadline = tokio::time::Instant::now() + grace;
    let still_running = genesis_server::drain(&state, grace).await;
    match tokio::time::timeout_at(deadline, server).await {
        Ok(served) => served.context("server task")?,
        Err(_) => tracing::warn!("connections still open after the grace period; closing them"),
    }
    if let Some(ops) = ops {
        match tokio::time::timeout_at(deadline, ops).await {
            Ok(served) => served.context("operations listener task")?,
            Err(_) => tracing::warn!(
                "operations connections still open after the grace period; closing them"
            ),
        }
    }
    tracing::info!(
        still_running,
        "stopped; unfinished runs resume at the next start"
    );
    if let Err(e) = telemetry.shutdown().await {
        tracing::warn!(error = %e, "telemetry shutdown failed");
    }
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
