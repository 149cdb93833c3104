//! Feature flags and the degradation level turn pipeline stages off: every shipped flag
//! gates what its description says, and open breakers degrade planning.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use genesis::core::{Task, TaskKind, Usd};
use genesis::flags::{Flag, FlagStore};
use genesis::halo::RouteLayer;
use genesis::resilience::{BreakerState, DegradationLevel};
use genesis::run::{
    Agent, AgentError, AgentOutput, AgentRequest, AgentSet, ExecutorConfig, FollowUp, RefineConfig,
    RunEvent, RunStatus,
};
use genesis::{GenesisError, Orchestrator, Plan, PlanOptions, PlannedTask, RunOptions};

const REQUEST: &str = "Build a SaaS business for invoices";

/// Flags from a file of its own with the given flags on or off. The file is read once,
/// here (nothing in these tests reloads it), and removed on return.
fn flags(name: &str, set: &[(&str, bool)]) -> genesis::flags::SharedFlags {
    let dir = crate::TempDir::new(&format!("stages-{name}"));
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
    // Half the agents, none of those that list the task's kind (minimal routes by kind).
    let kind = g.plan_sync("Write the release notes").unwrap().tasks[0].kind;
    let others: Vec<String> = g
        .router()
        .registry()
        .iter()
        .filter(|a| !a.task_kinds.contains(&kind))
        .map(|a| a.id.to_string())
        .take(8)
        .collect();
    assert_eq!(others.len(), 8);
    open_breakers(&g, &others);
    assert_eq!(g.stages("anyone").refinement, genesis::run::Refinement::Off);
    assert_eq!(refining_run(g, Arc::clone(&echo)).await, 1);
}

/// Opens the executor's breakers of these agents.
fn open_breakers(g: &Orchestrator, agents: &[impl AsRef<str>]) {
    let now = tokio::time::Instant::now();
    for a in agents {
        let b = g
            .executor()
            .breakers()
            .get(&format!("agent:{}", a.as_ref()));
        for _ in 0..100 {
            if b.effective_state(now) == BreakerState::Open {
                break;
            }
            b.try_acquire(now).unwrap().failure(now);
        }
        assert_eq!(b.effective_state(now), BreakerState::Open);
    }
}

/// The first half of the catalogue's agents (8 of the 16 built-in ones).
fn half_the_agents(g: &Orchestrator) -> Vec<String> {
    let registry = g.router().registry();
    let ids: Vec<String> = registry.iter().map(|a| a.id.to_string()).collect();
    ids[..ids.len() / 2].to_vec()
}

/// Audit R8 D1: one agent of sixteen failing sent the whole server to `minimal`
/// ("1 of 2 agent circuit breakers open"): only the breakers a call had created were
/// counted. Every served agent counts; one never called is closed.
#[test]
fn the_share_of_open_agent_breakers_is_over_every_served_agent() {
    let echo = Arc::new(Echo {
        calls: AtomicUsize::new(0),
    });
    let g = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(echo as Arc<dyn Agent>))
        .build()
        .unwrap();
    let half = half_the_agents(&g);
    assert_eq!(half.len(), 8);
    // A healthy agent was called too (its breaker exists, closed).
    let b = g.executor().breakers().get(&format!("agent:{}", half[7]));
    let now = tokio::time::Instant::now();
    b.try_acquire(now).unwrap().success(now);
    open_breakers(&g, &half[..1]);
    let plan = g.plan_sync(REQUEST).unwrap();
    assert_eq!(
        plan.degradation,
        DegradationLevel::Full,
        "{:?}",
        plan.degradation_reason
    );
    open_breakers(&g, &half[..7]);
    assert_eq!(
        g.plan_sync(REQUEST).unwrap().degradation,
        DegradationLevel::Full
    );
    open_breakers(&g, &half[7..]);
    let plan = g.plan_sync(REQUEST).unwrap();
    assert_eq!(plan.degradation, DegradationLevel::Minimal);
    assert_eq!(
        plan.degradation_reason.as_deref(),
        Some("degraded to minimal: 8 of 16 agent circuit breakers open")
    );
}

/// Audit R8 D4: the level was only re-judged when a plan was made, so an idle server
/// kept reporting `minimal` after its breakers closed.
#[tokio::test(start_paused = true)]
async fn the_degradation_level_recovers_without_a_request() {
    let echo = Arc::new(Echo {
        calls: AtomicUsize::new(0),
    });
    let cool_down = std::time::Duration::from_secs(10);
    let g = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(echo as Arc<dyn Agent>))
        .executor_config(ExecutorConfig {
            breaker: genesis::resilience::BreakerConfig::default().with_cool_down(cool_down),
            ..ExecutorConfig::default()
        })
        .build()
        .unwrap();
    open_breakers(&g, &half_the_agents(&g));
    // The gauge follows (verification V8: the level was re-judged, the gauge was not).
    let recorder = genesis::telemetry::build_prometheus_recorder().unwrap();
    let handle = recorder.handle();
    let gauge = || {
        handle
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("genesis_degradation_level "))
            .map(str::to_owned)
    };
    let refresh =
        |g: &Orchestrator| metrics::with_local_recorder(&recorder, || g.refresh_degradation(None));
    assert_eq!(refresh(&g), DegradationLevel::Minimal);
    assert_eq!(gauge().as_deref(), Some("2"));
    // Past the cool-down the breakers would let a probe through (half-open), and past
    // the recovery hold the level is back to full, with no plan made.
    tokio::time::advance(cool_down + std::time::Duration::from_secs(1)).await;
    refresh(&g);
    let hold = genesis::resilience::DegradationConfig::default().recovery_hold;
    tokio::time::advance(hold + std::time::Duration::from_secs(1)).await;
    assert_eq!(refresh(&g), DegradationLevel::Full);
    assert_eq!(gauge().as_deref(), Some("0"));
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

/// Audit R8 D1 (second half): at `minimal` tasks are routed by kind alone, and a kind's
/// agents were the only candidates. With them open, the task waited out
/// `max_breaker_waits` and failed although a healthy agent taking any kind (`builder`
/// lists `generic`) was there. It is now every by-kind decision's fallback.
#[tokio::test(start_paused = true)]
async fn at_minimal_a_task_whose_kind_agents_are_open_falls_back_to_a_generic_agent() {
    let echo = Arc::new(Echo {
        calls: AtomicUsize::new(0),
    });
    let g = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(echo.clone() as Arc<dyn Agent>))
        .build()
        .unwrap();
    let generic: Vec<String> = g
        .router()
        .registry()
        .iter()
        .filter(|a| a.task_kinds.contains(&TaskKind::Generic))
        .map(|a| a.id.to_string())
        .collect();
    assert_eq!(generic, ["builder"]);
    // Half of the agents (8 of 16), none of them generic.
    let open: Vec<String> = g
        .router()
        .registry()
        .iter()
        .map(|a| a.id.to_string())
        .filter(|id| !generic.contains(id))
        .take(8)
        .collect();
    open_breakers(&g, &open);
    let plan = g.plan_sync(REQUEST).unwrap();
    assert_eq!(plan.degradation, DegradationLevel::Minimal);
    let mut on_open = 0;
    for t in &plan.tasks {
        let agent = t.agent.as_ref().map(|a| a.to_string());
        if agent.as_ref().is_some_and(|a| open.contains(a)) {
            on_open += 1;
            assert!(
                t.route
                    .alternatives
                    .iter()
                    .any(|a| a.agent.as_str() == "builder"),
                "{}: {:?}",
                t.id,
                t.route.alternatives
            );
        }
    }
    assert!(
        on_open > 0,
        "no task of the plan was routed to an open agent"
    );
    let result = g.execute(plan, RunOptions::default()).unwrap().wait().await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:#?}", result.tasks);
    let moved = result
        .tasks
        .iter()
        .filter(|t| t.agent.as_ref().is_some_and(|a| a.as_str() == "builder"))
        .count();
    assert!(moved >= on_open, "{:#?}", result.tasks);
    for t in &result.tasks {
        let a = t.agent.as_ref().map(|a| a.to_string()).unwrap_or_default();
        assert!(!open.contains(&a), "{} ran on open agent {a}", t.task_id);
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
        previous_quarantined: None,
        max_cost: None,
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
            per_subject_day: None,
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

/// Proposes `.0` after every task of the original plan (not after follow-ups).
struct Proposer(Vec<FollowUp>);

#[async_trait]
impl Agent for Proposer {
    async fn execute(&self, r: AgentRequest) -> Result<AgentOutput, AgentError> {
        let followups = if r.task.id.as_str().contains(".f") {
            Vec::new()
        } else {
            self.0.clone()
        };
        Ok(AgentOutput {
            text: format!("done: {}", r.task.description),
            followups,
            ..AgentOutput::default()
        })
    }
}

/// Two follow-ups that plan context routes differently from routing each alone: with
/// it both go to `backend` (shared tags), alone the second goes to `builder`.
fn two_followups() -> Vec<FollowUp> {
    vec![
        FollowUp {
            kind: TaskKind::Implement,
            description: "Double-check the result".into(),
        },
        FollowUp {
            kind: TaskKind::Implement,
            description: "Write the launch blog post".into(),
        },
    ]
}

/// An orchestrator with `flags` whose every agent proposes [`two_followups`] (learning
/// off, so the router stays as it was for the checks after the run).
fn proposing(flags: genesis::flags::SharedFlags) -> Orchestrator {
    Orchestrator::builder()
        .flags(flags)
        .agents(AgentSet::new().with_fallback(Arc::new(Proposer(two_followups()))))
        .learn_from_runs(false)
        .build()
        .unwrap()
}

/// Flags with decomposition off (one-task plans, one follow-up update) and `set`.
fn one_task_flags(set: &[(&str, bool)]) -> genesis::flags::FlagStore {
    FlagStore::from_flags(
        std::iter::once(Flag::new("htdag_decomposition", false))
            .chain(set.iter().map(|(n, on)| Flag::new(*n, *on))),
    )
    .unwrap()
}

/// Runs `plan` on `g` with `options`; returns the follow-up tasks the run added.
async fn added_by_run(g: &Orchestrator, plan: Plan, options: RunOptions) -> Vec<PlannedTask> {
    assert_eq!(plan.tasks.len(), 1, "{:?}", plan.tasks);
    let mut handle = g.execute(plan, options).unwrap();
    let mut events = handle.events();
    let result = handle.wait().await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:#?}", result.tasks);
    let mut added = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let RunEvent::TasksAdded { tasks, .. } = e {
            added.extend(tasks);
        }
    }
    assert_eq!(added.len(), 2, "{added:#?}");
    added
}

const BY_KIND: &str = "rules and text matching off: feature flag halo_routing is off";
const STRONGEST: &str = "cost routing off: feature flag daao_cost_routing is off";

fn assert_routed_by_kind_on_the_strongest_model(g: &Orchestrator, added: &[PlannedTask]) {
    let strongest = g.selector().catalog().strongest().id.clone();
    for t in added {
        assert!(
            matches!(
                t.route.layer,
                RouteLayer::Capability | RouteLayer::Unassigned
            ) && t.route.explanation.ends_with(BY_KIND),
            "{}: {:?} {}",
            t.id,
            t.route.layer,
            t.route.explanation
        );
        let m = t.model.as_ref().unwrap();
        assert_eq!(m.model, strongest, "{}", t.id);
        assert!(m.reason.starts_with(STRONGEST), "{}: {}", t.id, m.reason);
    }
}

fn assert_fully_routed(added: &[PlannedTask]) {
    for t in added {
        assert!(
            !t.route.explanation.contains("rules and text matching off"),
            "{}: {}",
            t.id,
            t.route.explanation
        );
        let m = t.model.as_ref().unwrap();
        assert!(!m.reason.starts_with("cost routing off"), "{}", m.reason);
    }
}

#[tokio::test]
async fn follow_ups_are_routed_and_priced_with_the_stages_the_run_was_planned_with() {
    let flags = genesis::flags::SharedFlags::new(one_task_flags(&[
        ("halo_routing", false),
        ("daao_cost_routing", false),
    ]));
    let g = proposing(flags.clone());
    let plan = g.plan_sync("Write the release notes").unwrap();
    // Turned back on between planning and running: the run keeps what it was planned
    // with.
    flags.replace(one_task_flags(&[])).unwrap();
    let added = added_by_run(&g, plan, RunOptions::default()).await;
    assert_routed_by_kind_on_the_strongest_model(&g, &added);
}

#[tokio::test]
async fn stages_turned_off_after_planning_do_not_change_the_runs_follow_ups() {
    let flags = genesis::flags::SharedFlags::new(one_task_flags(&[]));
    let g = proposing(flags.clone());
    let plan = g.plan_sync("Write the release notes").unwrap();
    flags
        .replace(one_task_flags(&[
            ("halo_routing", false),
            ("daao_cost_routing", false),
        ]))
        .unwrap();
    let added = added_by_run(&g, plan, RunOptions::default()).await;
    assert_fully_routed(&added);
}

#[tokio::test]
async fn plan_context_off_routes_each_follow_up_alone() {
    let g = proposing(genesis::flags::SharedFlags::new(one_task_flags(&[(
        "new_router_rollout",
        false,
    )])));
    let plan = g.plan_sync("Write the release notes").unwrap();
    let added = added_by_run(&g, plan, RunOptions::default()).await;
    let tasks: Vec<Task> = added
        .iter()
        .map(|t| Task::new(t.id.clone(), t.kind, t.description.clone()))
        .collect();
    let mut alone = Vec::new();
    g.router().route_all_into_per_task(&tasks, &mut alone);
    let mut with_context = Vec::new();
    g.router().route_all_into(&tasks, &mut with_context);
    let agents = |d: &[genesis::halo::RouteDecision]| -> Vec<_> {
        d.iter().map(|d| d.agent.clone()).collect()
    };
    assert_ne!(
        agents(&alone),
        agents(&with_context),
        "the follow-ups tell the two routings apart"
    );
    assert_eq!(
        added.iter().map(|t| t.agent.clone()).collect::<Vec<_>>(),
        agents(&alone)
    );
    for (t, d) in added.iter().zip(&alone) {
        assert_eq!(t.route.explanation, d.explanation);
        assert!(!t.route.explanation.contains("plan context"));
    }
}

#[tokio::test]
async fn a_resumed_run_routes_follow_ups_with_the_stages_of_its_stored_plan() {
    let off = proposing(genesis::flags::SharedFlags::new(one_task_flags(&[
        ("halo_routing", false),
        ("daao_cost_routing", false),
    ])));
    let on = proposing(genesis::flags::SharedFlags::new(one_task_flags(&[])));
    let plan = off.plan_sync("Write the release notes").unwrap();
    let (store, id) = crate::stored_run(&plan);
    let record = crate::stored(&store, &id);
    // Resumed by a process whose flags now have every stage on: the stored plan says
    // how the run routes.
    let options = crate::resuming(&store, &record);
    let added = added_by_run(&on, record.plan, options).await;
    assert_routed_by_kind_on_the_strongest_model(&on, &added);

    // A plan stored before plans recorded their routing: its run takes the stages in
    // force when it starts.
    let mut old = serde_json::to_value(&plan).unwrap();
    assert!(old.as_object_mut().unwrap().remove("routing").is_some());
    let old: Plan = serde_json::from_value(old).unwrap();
    assert_eq!(old.routing, None);
    let added = added_by_run(&off, old.clone(), RunOptions::default()).await;
    assert_routed_by_kind_on_the_strongest_model(&off, &added);
    assert_fully_routed(&added_by_run(&on, old, RunOptions::default()).await);
}

/// Verification V11 M-3: a request with no words was refused as "no agent can take task
/// t1 (kind generic)", blaming the agents; the refusal now carries routing's reason.
#[tokio::test]
async fn a_plan_refused_for_an_unassigned_task_says_why_routing_left_it() {
    let genesis = Orchestrator::builder().build().unwrap();
    match genesis.plan("🚀🔥💯").await {
        Err(GenesisError::InvalidPlan { summary, .. }) => {
            assert!(
                summary.contains("(solvable.unassigned): unassigned:")
                    && summary.contains("no words to match")
                    && summary.contains("(rule: description_words)"),
                "{summary}"
            );
        }
        other => panic!("expected a refused plan, got {other:?}"),
    }
}
