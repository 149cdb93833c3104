//! Plans the SaaS request in a loop, for profilers (the criterion bench measures time;
//! this gives callgrind or perf a plain process to look at).
//!
//! ```sh
//! cargo build --release -p genesis --example profile_plan
//! valgrind --tool=callgrind target/release/examples/profile_plan 300
//! target/release/examples/profile_plan 1   # prints the plan as JSON
//! GENESIS_FLAGS_FILE=config/feature_flags.json GENESIS_PROMETHEUS=1 \
//!     valgrind --tool=callgrind target/release/examples/profile_plan 300
//! ```
//!
//! Subtracting the instruction counts of a 300-plan run from a 600-plan run gives the
//! cost of one plan without start-up.

#![allow(clippy::print_stdout)]

use genesis::Orchestrator;

/// The binaries' allocator (see bins/genesis-server).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the server plans: `GENESIS_FLAGS_FILE=config/feature_flags.json` evaluates
    // the flags on every plan; `GENESIS_PROMETHEUS=1` installs the Prometheus recorder,
    // so every metric is recorded.
    let mut builder = Orchestrator::builder();
    if let Ok(path) = std::env::var("GENESIS_FLAGS_FILE") {
        builder = builder.flags(genesis::flags::SharedFlags::load(path)?);
    }
    if std::env::var("GENESIS_PROMETHEUS").is_ok_and(|v| v == "1") {
        genesis::telemetry::install_prometheus_recorder()?;
    }
    let genesis = builder.build()?;
    let request = "Build a SaaS business for invoices";
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000);
    if n == 1 {
        let plan = genesis.plan_sync(request)?;
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    let mut tasks = 0;
    for _ in 0..n {
        tasks += genesis.plan_sync(request)?.tasks.len();
    }
    println!("{n} plans, {tasks} tasks");
    Ok(())
}
