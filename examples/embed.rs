//! Embedding Genesis: build an orchestrator with the built-in agents, plan a request,
//! inspect the routing and print the plan as JSON.
//!
//! Run: `cargo run -p genesis-examples --example embed`

#![allow(clippy::print_stdout)]

use genesis::Orchestrator;

fn main() -> anyhow::Result<()> {
    let genesis = Orchestrator::builder().build()?;
    let plan =
        genesis.plan_sync("Launch a marketing campaign for our new app and analyse the results")?;
    for task in &plan.tasks {
        let agent = task.agent.as_ref().map_or("unassigned", |a| a.as_str());
        println!(
            "{:<8} {:<10} {:<40.40} {}",
            task.id.as_str(),
            agent,
            task.description,
            task.route.explanation
        );
    }
    println!(
        "validation passed: {}, score {:.3}, estimated cost {}",
        plan.validation.passed, plan.validation.score, plan.estimated_cost
    );
    println!("{}", serde_json::to_string(&plan.validation)?);
    Ok(())
}
