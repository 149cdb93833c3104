//! Plans the SaaS request in a loop, for profilers (the criterion bench measures time;
//! this gives callgrind or perf a plain process to look at).
//!
//! ```sh
//! cargo build --release -p genesis --example profile_plan
//! valgrind --tool=callgrind target/release/examples/profile_plan 300
//! target/release/examples/profile_plan 1   # prints the plan as JSON
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
    let genesis = Orchestrator::builder().build()?;
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
