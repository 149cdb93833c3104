//! A custom agent: implement `Agent`, register it for an agent id (or as the fallback
//! for all), and run a plan. Events stream while the run goes.
//!
//! Run: `cargo run -p genesis-examples --example custom_agent`

#![allow(clippy::print_stdout)]

use std::sync::Arc;

use genesis::Orchestrator;
use genesis::core::Usd;
use genesis::run::{Agent, AgentError, AgentOutput, AgentRequest, AgentSet, RunEvent};

/// An agent that "does" a task by summarising what it was given.
struct Summariser;

#[genesis::async_trait]
impl Agent for Summariser {
    async fn execute(&self, req: AgentRequest) -> Result<AgentOutput, AgentError> {
        let inputs: Vec<String> = req.inputs.iter().map(|i| i.task_id.to_string()).collect();
        Ok(AgentOutput {
            text: format!(
                "[{}] {} (built on: {})",
                req.agent,
                req.task.description,
                if inputs.is_empty() {
                    "nothing".into()
                } else {
                    inputs.join(", ")
                }
            ),
            cost: Usd::saturating(0.0001),
            ..AgentOutput::default()
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let genesis = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Arc::new(Summariser)))
        .build()?;
    let plan = genesis
        .plan("Fix the crash when uploading large files")
        .await?;
    let mut run = genesis.execute(plan, Default::default())?;
    let mut events = run.events();
    let printer = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                RunEvent::TaskSucceeded { task_id, agent, .. } => {
                    println!("done  {task_id} by {agent}")
                }
                RunEvent::TaskFailed {
                    task_id, reason, ..
                } => println!("FAIL  {task_id}: {reason}"),
                RunEvent::RunFinished { status, cost, .. } => {
                    println!("run {} (cost {cost})", status.as_str());
                    break;
                }
                _ => {}
            }
        }
    });
    let result = run.wait().await;
    let _ = printer.await;
    println!("\n{}", result.answer);
    Ok(())
}
