//! Feature flags and the degradation level turn pipeline stages off: every shipped flag
//! gates what its description says, and open breakers degrade planning.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use genesis::core::Usd;
use genesis::halo::RouteLayer;
use genesis::resilience::{BreakerState, DegradationLevel};
use genesis::run::{
    Agent, AgentError, AgentOutput, AgentRequest, AgentSet, ExecutorConfig, RefineConfig, RunStatus,
};
use genesis::{GenesisError, Orchestrator, PlanOptions};

const REQUEST: &str = "Build a SaaS business for invoices";

/// Flags from a file of its own with the given flags on or off.
fn flags(name: &str, set: &[(&str, bool)]) -> genesis::flags::SharedFlags {
    let dir = std::env::temp_dir().join(format!("genesis-stages-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("flags.json");
    let list: Vec<String> = set
        .iter()
        .map(|(n, on)| format!(r#"{{"name": "{n}", "enabled": {on}}}"#))
        .collect();
    std::fs::write(&path, format!(r#"{{"flags": [{}]}}"#, list.join(","))).unwrap();
    genesis::flags::SharedFlags::load(path).unwrap()
}

fn with_flags(name: &str, set: &[(&str, bool)]) -> Orchestrator {
    Orchestrator::builder()
        .flags(flags(name, set))
        .build()
        .unwrap()
}

#[test]
fn every_stage_is_on_by_default_and_with_the_flags_on() {
    let plain = Orchestrator::builder().build().unwrap();
    let on = with_flags(
        "on",
        &[
            ("htdag_decomposition", true),
            ("halo_routing", true),
            ("daao_cost_routing", true),
            ("aop_validation", true),
            ("tumix_early_stopping", true),
            ("new_router_rollout", true),
        ],
    );
    let a = plain.plan_sync(REQUEST).unwrap();
    let b = on.plan_sync(REQUEST).unwrap();
    assert_eq!(
        serde_json::to_value(&a).unwrap(),
        serde_json::to_value(&b).unwrap()
    );
    assert_eq!(a.decomposer, "heuristic");
    assert!(a.tasks.len() >= 7);
    let stages = plain.stages("anyone");
    assert_eq!(stages.level, DegradationLevel::Full);
    assert_eq!(stages.refinement, genesis::run::Refinement::EarlyStop);
}

#[test]
fn decomposition_off_plans_one_task() {
    let g = with_flags("htdag", &[("htdag_decomposition", false)]);
    let plan = g.plan_sync(REQUEST).unwrap();
    assert_eq!(plan.decomposer, "single_task");
    assert_eq!(plan.tasks.len(), 1);
    assert_eq!(plan.tasks[0].description, REQUEST);
    assert!(plan.validation.passed);
}

#[test]
fn routing_off_routes_by_kind_and_says_why() {
    let g = with_flags("halo", &[("halo_routing", false)]);
    let plan = g
        .plan_sync("Fix the SQL injection vulnerability in the login form")
        .unwrap();
    for t in &plan.tasks {
        assert!(
            matches!(
                t.route.layer,
                RouteLayer::Capability | RouteLayer::Unassigned
            ),
            "{}: {:?}",
            t.id,
            t.route.layer
        );
        assert!(
            t.route
                .explanation
                .ends_with("rules and text matching off: feature flag halo_routing is off"),
            "{}",
            t.route.explanation
        );
    }
}

#[test]
fn cost_routing_off_takes_the_strongest_model() {
    let cheap = Orchestrator::builder().build().unwrap();
    let g = with_flags("daao", &[("daao_cost_routing", false)]);
    let strongest = g.selector().catalog().strongest().id.clone();
    let plan = g.plan_sync(REQUEST).unwrap();
    for t in &plan.tasks {
        let m = t.model.as_ref().unwrap();
        assert_eq!(m.model, strongest);
        assert!(
            m.reason
                .starts_with("cost routing off: feature flag daao_cost_routing is off")
        );
    }
    // Cost routing picks cheaper models for some of the same tasks.
    let routed = cheap.plan_sync(REQUEST).unwrap();
    assert!(
        routed
            .tasks
            .iter()
            .any(|t| t.model.as_ref().unwrap().model != strongest)
    );
    assert!(plan.estimated_cost > routed.estimated_cost);
}

#[tokio::test]
async fn validation_off_returns_failed_plans_instead_of_rejecting_them() {
    let options = PlanOptions {
        budget: Some(Usd::new(0.000_001).unwrap()),
        ..PlanOptions::default()
    };
    let gated = Orchestrator::builder().build().unwrap();
    let err = gated.plan_with(REQUEST, &options).await.unwrap_err();
    assert!(matches!(err, GenesisError::InvalidPlan { .. }), "{err}");
    let g = with_flags("aop", &[("aop_validation", false)]);
    let plan = g.plan_with(REQUEST, &options).await.unwrap();
    assert!(!plan.validation.passed);
    assert!(!plan.validation.checks.within_budget);
}

#[test]
fn plan_context_off_routes_each_task_alone() {
    let g = with_flags("plan_context", &[("new_router_rollout", false)]);
    assert!(!g.stages("anyone").plan_context);
    let plan = g.plan_sync(REQUEST).unwrap();
    for t in &plan.tasks {
        assert!(
            !t.route.explanation.contains("plan context"),
            "{}",
            t.route.explanation
        );
    }
}

/// Answers the same text every round, counting calls.
struct Echo {
    calls: AtomicUsize,
}

#[async_trait]
impl Agent for Echo {
    async fn execute(&self, r: AgentRequest) -> Result<AgentOutput, AgentError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(AgentOutput {
            text: format!("done: {}", r.task.description),
            ..AgentOutput::default()
        })
    }
}

/// Runs the one-task plan of `request` with every agent refining; returns the agent
/// calls made.
async fn refining_run(g: Orchestrator, echo: Arc<Echo>) -> usize {
    let plan = g.plan_sync("Write the release notes").unwrap();
    assert_eq!(plan.tasks.len(), 1, "{:?}", plan.tasks);
    let result = g
        .execute(plan, genesis::RunOptions::default())
        .unwrap()
        .wait()
        .await;
    assert_eq!(result.status, RunStatus::Succeeded);
    echo.calls.load(Ordering::SeqCst)
}

fn refining(flagset: Option<genesis::flags::SharedFlags>, echo: &Arc<Echo>) -> Orchestrator {
    let agents: Vec<_> = Orchestrator::builder()
        .build()
        .unwrap()
        .router()
        .registry()
        .iter()
        .map(|a| a.id.clone())
        .collect();
    let config = ExecutorConfig {
        refine: RefineConfig {
            agents,
            ..RefineConfig::default()
        },
        ..ExecutorConfig::default()
    };
    let mut b = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Arc::clone(echo) as Arc<dyn Agent>))
        .executor_config(config);
    if let Some(f) = flagset {
        b = b.flags(f);
    }
    b.build().unwrap()
}

#[tokio::test]
async fn early_stopping_off_refines_to_max_rounds_and_minimal_does_not_refine() {
    let one = || flags("tumix", &[("htdag_decomposition", false)]);
    // Early stopping: the second, identical answer reaches the target agreement.
    let echo = Arc::new(Echo {
        calls: AtomicUsize::new(0),
    });
    assert_eq!(
        refining_run(refining(Some(one()), &echo), Arc::clone(&echo)).await,
        2
    );
    // Off: every round up to max_rounds (5).
    let echo = Arc::new(Echo {
        calls: AtomicUsize::new(0),
    });
    let f = flags(
        "tumix_off",
        &[
            ("htdag_decomposition", false),
            ("tumix_early_stopping", false),
        ],
    );
    assert_eq!(
        refining_run(refining(Some(f), &echo), Arc::clone(&echo)).await,
        5
    );
    // Minimal degradation (most agent breakers open): no refinement rounds.
    let echo = Arc::new(Echo {
        calls: AtomicUsize::new(0),
    });
    let g = refining(Some(one()), &echo);
    open_breakers(&g, &["frontend", "backend"]);
    assert_eq!(g.stages("anyone").refinement, genesis::run::Refinement::Off);
    assert_eq!(refining_run(g, Arc::clone(&echo)).await, 1);
}

/// Opens the executor's breakers of these agents.
fn open_breakers(g: &Orchestrator, agents: &[&str]) {
    let now = tokio::time::Instant::now();
    for a in agents {
        let b = g.executor().breakers().get(&format!("agent:{a}"));
        for _ in 0..100 {
            if b.effective_state(now) == BreakerState::Open {
                break;
            }
            b.try_acquire(now).unwrap().failure(now);
        }
        assert_eq!(b.effective_state(now), BreakerState::Open);
    }
}

#[test]
fn open_agent_breakers_degrade_plans_to_minimal() {
    let g = Orchestrator::builder().build().unwrap();
    open_breakers(&g, &["frontend", "backend", "qa"]);
    let plan = g.plan_sync(REQUEST).unwrap();
    assert_eq!(plan.degradation, DegradationLevel::Minimal);
    let reason = plan.degradation_reason.clone().unwrap();
    assert_eq!(
        reason,
        "degraded to minimal: 3 of 3 agent circuit breakers open"
    );
    for t in &plan.tasks {
        assert!(
            t.route.explanation.ends_with(&reason),
            "{}",
            t.route.explanation
        );
        assert!(matches!(
            t.route.layer,
            RouteLayer::Capability | RouteLayer::Unassigned
        ));
    }
}

#[tokio::test]
async fn a_closed_llm_gate_refuses_without_calling_a_provider() {
    use genesis::providers::{LlmAgent, LlmProviders};
    let providers = LlmProviders::from_clients(Vec::new(), Default::default());
    let gate: genesis::providers::LlmGate = Arc::new(|r: &AgentRequest| {
        if r.subject.as_ref() == "blocked" {
            Err("feature flag llm_integration_enabled is off".to_owned())
        } else {
            Ok(())
        }
    });
    let agent = LlmAgent::new(providers, Default::default()).with_gate(gate);
    let request = |subject: &str| AgentRequest {
        run_id: genesis::new_run_id(),
        subject: subject.into(),
        request: "r".into(),
        task: genesis::core::Task::new(
            genesis::core::TaskId::new("t1"),
            genesis::core::TaskKind::Document,
            "Write the notes",
        ),
        agent: genesis::core::AgentId::new("writer"),
        model: None,
        inputs: Vec::new(),
        attempt: 1,
        previous: None,
    };
    let err = agent.execute(request("blocked")).await.unwrap_err();
    assert!(
        matches!(&err, AgentError::Rejected { message, .. }
            if message == "no LLM call: feature flag llm_integration_enabled is off"),
        "{err}"
    );
    // Open gate: it gets as far as looking for a client (none is configured here).
    let err = agent.execute(request("allowed")).await.unwrap_err();
    assert!(matches!(err, AgentError::NoBackend { .. }), "{err}");
}

#[tokio::test]
async fn a_nearly_spent_daily_budget_stops_llm_planning_then_degrades_to_minimal() {
    let g = Orchestrator::builder()
        .budget(genesis::daao::Budget {
            per_run: None,
            per_day: Some(Usd::new(1.0).unwrap()),
        })
        .build()
        .unwrap();
    let day = |spent: f64| Some(genesis::run::DaySpend::new(Usd::new(spent).unwrap()));
    // Plenty left: nothing changes.
    let s = g.stages_with("u", day(0.5).as_ref());
    assert_eq!(s.level, DegradationLevel::Full);
    assert_eq!(s.llm_off, None);
    // 5% left: LLM calls stop (no breaker would stop them), routing stays whole.
    let s = g.stages_with("u", day(0.95).as_ref());
    assert_eq!(s.level, DegradationLevel::LlmFallback);
    let why = s.llm_off.unwrap();
    assert!(
        why.starts_with("degraded to llm_fallback: 5.0% of the daily budget")
            && why.ends_with("left (below 10.0%)"),
        "{why}"
    );
    assert_eq!(s.matching_off, None);
    // 1% left: minimal — routing by kind, no refinement — and the plan says why.
    let options = PlanOptions {
        day: day(0.99),
        ..PlanOptions::default()
    };
    let plan = g.plan_with(REQUEST, &options).await.unwrap();
    assert_eq!(plan.degradation, DegradationLevel::Minimal);
    let reason = plan.degradation_reason.unwrap();
    assert!(
        reason.starts_with("degraded to minimal: 1.0% of the daily budget"),
        "{reason}"
    );
    assert!(
        plan.tasks
            .iter()
            .all(|t| t.route.explanation.ends_with(&reason))
    );
    assert_eq!(
        g.stages_with("u", day(0.99).as_ref()).refinement,
        genesis::run::Refinement::Off
    );
}
