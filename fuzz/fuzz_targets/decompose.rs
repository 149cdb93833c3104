//! Fuzzes the checks on an LLM's decomposition: the input, split at `0xFF` bytes, is the
//! model's JSON answers in turn (phases first, then each phase's subtasks), which the
//! decomposer must turn into a valid DAG or refuse with a reason.
#![no_main]

use std::future::Future;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use genesis_htdag::{Decomposer, Limits, LlmDecomposer, PlannerModel};
use libfuzzer_sys::fuzz_target;

/// Answers with the scripted JSON values in turn (an empty object when they run out).
struct Scripted(Mutex<Vec<serde_json::Value>>);

#[async_trait::async_trait]
impl PlannerModel for Scripted {
    fn name(&self) -> &str {
        "fuzz"
    }

    async fn complete_json(
        &self,
        _system: &str,
        _prompt: &str,
        _schema: &serde_json::Value,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        let mut answers = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(if answers.is_empty() {
            serde_json::json!({})
        } else {
            answers.remove(0)
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let answers: Vec<serde_json::Value> = data
        .split(|&b| b == 0xFF)
        .take(16)
        .filter_map(|part| serde_json::from_slice(part).ok())
        .collect();
    if answers.is_empty() {
        return;
    }
    let decomposer = LlmDecomposer::new(Scripted(Mutex::new(answers)));
    let limits = Limits::default();
    let mut run = std::pin::pin!(decomposer.decompose("Build the invoicing API", &limits));
    // The scripted model never waits, so one poll finishes the decomposition.
    let Poll::Ready(result) = run.as_mut().poll(&mut Context::from_waker(Waker::noop())) else {
        panic!("the decomposition waited on a model that never waits");
    };
    if let Ok(dag) = result {
        assert!(dag.len() <= limits.max_tasks, "{} tasks", dag.len());
    }
});
