//! Custom agents and routing rules: bring your own catalogue (TOML here; JSON and JSONL
//! load the same way) and rules, then see how each task was routed and why.
//!
//! Run: `cargo run -p genesis-examples --example custom_rules`

#![allow(clippy::print_stdout)]

use genesis::Orchestrator;
use genesis::halo::{AgentRegistry, RoutingRules};

const AGENTS: &str = r#"
[[agent]]
id = "billing"
description = "Handles invoices, payments, refunds and subscription billing"
task_kinds = ["finance", "backend"]
skills = ["stripe", "invoicing"]
examples = ["Issue a refund for order 1234", "Generate the monthly invoice run"]

[[agent]]
id = "engineer"
description = "Writes and reviews application code and APIs"
task_kinds = ["implement", "backend", "frontend", "test", "design", "specify", "deploy", "monitor", "security"]

[[agent]]
id = "writer"
description = "Writes documentation, announcements and reports"
task_kinds = ["document", "marketing", "research", "analyze", "support", "sales", "generic"]
"#;

const RULES: &str = r#"
[[rule]]
name = "payments-go-to-billing"
priority = 100
agent = "billing"
# Both conditions must hold: back-end or finance work that mentions payments.
kinds = ["backend", "finance"]
keywords = ["invoice", "invoices", "refund", "payment"]
"#;

fn main() -> anyhow::Result<()> {
    let genesis = Orchestrator::builder()
        .registry(AgentRegistry::from_toml_str(AGENTS)?)
        .rules(RoutingRules::from_toml_str(RULES)?)
        .build()?;
    let plan = genesis.plan_sync("Build the invoice API and then write the release notes")?;
    for t in &plan.tasks {
        println!(
            "{:<8} {:<9} {:<10} {}",
            t.id.as_str(),
            t.kind.as_str(),
            t.agent.as_ref().map_or("-", |a| a.as_str()),
            t.route.explanation
        );
    }
    println!(
        "validation passed: {}, score {:.3}",
        plan.validation.passed, plan.validation.score
    );
    Ok(())
}
