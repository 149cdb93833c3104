//! Fuzzes HALO's inputs: the input is split at `0xFF` bytes into an agents catalogue
//! (JSONL, else TOML or JSON; the shipped one when none parses), routing rules (TOML)
//! and task texts (one per line), which are routed one by one and as a plan; an
//! outcome is then learned and the first task routed again.
#![no_main]

use std::time::Duration;

use genesis_core::{Task, TaskId, TaskKind, Usd};
use genesis_halo::{AgentRegistry, JsonlMode, Router, RoutingRules};
use libfuzzer_sys::fuzz_target;

const AGENTS: &str = include_str!("../../config/agents.toml");

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0xFF);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (agents, rules, tasks) = (next(), next(), next());
    let _ = AgentRegistry::from_jsonl_str(&agents, JsonlMode::Fail);
    let registry = match AgentRegistry::from_jsonl_str(&agents, JsonlMode::Skip) {
        Ok((r, _)) => r,
        Err(_) => match AgentRegistry::from_toml_str(&agents)
            .or_else(|_| AgentRegistry::from_json_str(&agents))
        {
            Ok(r) => r,
            Err(_) => AgentRegistry::from_toml_str(AGENTS).expect("the shipped catalogue loads"),
        },
    };
    let rules = RoutingRules::from_toml_str(&rules).unwrap_or_default();
    let Ok(router) = Router::new(registry, rules) else {
        return;
    };
    let tasks: Vec<Task> = tasks
        .lines()
        .take(64)
        .enumerate()
        .map(|(i, text)| {
            Task::new(
                TaskId::new(format!("t{i}")),
                TaskKind::ALL[i % TaskKind::ALL.len()],
                text,
            )
        })
        .collect();
    for task in &tasks {
        let d = router.route(task);
        assert!(
            d.score.is_finite() && (0.0..=1.0).contains(&d.match_score),
            "{d:?}"
        );
        assert_eq!(
            d.agent.is_none(),
            d.layer == genesis_halo::RouteLayer::Unassigned
        );
    }
    let plan = router.route_all(&tasks);
    assert_eq!(plan.decisions.len(), tasks.len());
    if let Some((task, agent)) = tasks
        .iter()
        .zip(&plan.decisions)
        .find_map(|(t, d)| Some((t, d.agent.clone()?)))
    {
        router
            .record_outcome(task, &agent, true, Duration::from_millis(5), Usd::ZERO)
            .expect("an outcome of a routed agent is learned");
        let _ = router.route(task);
    }
});
