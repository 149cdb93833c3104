//! Fuzzes the planning pipeline on arbitrary request text: the heuristic decomposer,
//! HALO routing, DAAO model selection and AOP validation (`Orchestrator::plan_sync`,
//! the server's plan mode without the network). A plan that comes out must serialise.
#![no_main]

use std::sync::LazyLock;

use genesis::Orchestrator;
use libfuzzer_sys::fuzz_target;

static GENESIS: LazyLock<Orchestrator> = LazyLock::new(|| {
    Orchestrator::builder()
        .build()
        .expect("the default orchestrator builds")
});

fuzz_target!(|data: &[u8]| {
    let request = String::from_utf8_lossy(data);
    if let Ok(plan) = GENESIS.plan_sync(&request) {
        assert!(!plan.tasks.is_empty());
        serde_json::to_string(&plan).expect("a plan serialises");
    }
});
