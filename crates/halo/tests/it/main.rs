//! Integration tests: the shipped config, end-to-end routing, learning, cache, bad input.

// Helpers outside `#[test]` functions unwrap too; this is test code.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use genesis_core::{AgentId, Task, TaskId, TaskKind, Usd};
use genesis_halo::{
    AgentProfile, AgentRegistry, HaloError, JsonlMode, Outcome, PlanConfig, RouteLayer, Router,
    RouterConfig, RoutingRules, Rule,
};
use proptest::prelude::*;

mod audit_h11;

const AGENTS: &str = include_str!("../../../../config/agents.toml");
const RULES: &str = include_str!("../../../../config/routing_rules.toml");

fn default_router() -> Router {
    let registry = AgentRegistry::from_toml_str(AGENTS).unwrap();
    let rules = RoutingRules::from_toml_str(RULES).unwrap();
    Router::new(registry, rules).unwrap()
}

fn task(id: &str, kind: TaskKind, description: &str) -> Task {
    Task::new(TaskId::new(id), kind, description)
}

/// Routes one task and checks the agent (data-driven helper).
#[track_caller]
fn check(router: &Router, kind: TaskKind, description: &str, expected: &str) {
    let d = router.route(&task("t", kind, description));
    assert_eq!(
        d.agent.as_ref().map(AgentId::as_str),
        Some(expected),
        "{kind} {description:?}: {}",
        d.explanation
    );
    assert!((0.0..=1.0).contains(&d.match_score));
    assert!(!d.explanation.is_empty());
}

/// Audit Q9 M1, H6, H2: writing is not only specification work (every `document`
/// task went to spec), `optimize` alone is not work on Genesis itself (every one went
/// to darwin by rule), and an outage without the word "incident" is still one.
#[test]
fn shipped_catalogue_routes_writing_improvements_and_outages_by_what_they_are() {
    let r = default_router();
    check(
        &r,
        TaskKind::Document,
        "Write a blog post about our Series A",
        "marketing",
    );
    check(
        &r,
        TaskKind::Document,
        "Summarise this week's support tickets",
        "support",
    );
    check(
        &r,
        TaskKind::Document,
        "Write the on-call runbook for the payments API",
        "monitoring",
    );
    check(
        &r,
        TaskKind::Document,
        "Write the requirements for the invoice feature",
        "spec",
    );
    let d = r.route(&task(
        "t",
        TaskKind::Optimize,
        "Improve the onboarding emails",
    ));
    assert!(
        !d.explanation.contains("self-improvement"),
        "{}",
        d.explanation
    );
    let d = r.route(&task(
        "t",
        TaskKind::Optimize,
        "Optimise the prompts of the builder agent",
    ));
    assert_eq!(d.layer, RouteLayer::Rule, "{}", d.explanation);
    assert_eq!(d.agent.as_ref().map(AgentId::as_str), Some("darwin"));
    let d = r.route(&task(
        "t",
        TaskKind::Generic,
        "Production is down: the payments API returns 503s",
    ));
    assert!(
        d.explanation
            .starts_with("rule \"on-call-incident\" matched"),
        "{}",
        d.explanation
    );
}

#[test]
fn shipped_catalogue_has_the_sixteen_agents() {
    let reg = AgentRegistry::from_toml_str(AGENTS).unwrap();
    let ids: Vec<&str> = reg.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "spec",
            "architect",
            "builder",
            "frontend",
            "backend",
            "qa",
            "security",
            "deploy",
            "monitoring",
            "marketing",
            "sales",
            "support",
            "analytics",
            "research",
            "finance",
            "darwin"
        ]
    );
    for a in reg.iter() {
        assert!(!a.task_kinds.is_empty(), "{} lists no kind", a.id);
        assert!(!a.examples.is_empty(), "{} has no examples", a.id);
    }
    // Every kind but generic has an agent that lists it.
    for kind in TaskKind::ALL {
        assert!(reg.iter().any(|a| a.task_kinds.contains(kind)), "{kind}");
    }
}

#[test]
fn kinds_route_to_their_agents() {
    let r = default_router();
    check(
        &r,
        TaskKind::Marketing,
        "Prepare the quarterly newsletter",
        "marketing",
    );
    check(&r, TaskKind::Analyze, "Look at last week", "analytics");
    check(&r, TaskKind::Specify, "Write the spec", "spec");
    check(&r, TaskKind::Design, "Plan it", "architect");
    check(&r, TaskKind::Test, "Write unit tests for the parser", "qa");
    check(&r, TaskKind::Deploy, "Ship version 2 to staging", "deploy");
    check(&r, TaskKind::Monitor, "Watch error rates", "monitoring");
    check(&r, TaskKind::Sales, "Contact the prospects", "sales");
    check(&r, TaskKind::Support, "Answer the open tickets", "support");
    check(
        &r,
        TaskKind::Research,
        "Compare vector databases",
        "research",
    );
    check(&r, TaskKind::Finance, "Set the prices", "finance");
    check(&r, TaskKind::Optimize, "Make the agents better", "darwin");
}

#[test]
fn descriptions_route_by_text() {
    let r = default_router();
    check(
        &r,
        TaskKind::Generic,
        "Launch a marketing campaign for the spring sale",
        "marketing",
    );
    check(&r, TaskKind::Generic, "analyse the results", "analytics");
    check(
        &r,
        TaskKind::Implement,
        "Build the REST API for user accounts",
        "backend",
    );
    check(
        &r,
        TaskKind::Implement,
        "Build the settings page UI with React",
        "frontend",
    );
    check(
        &r,
        TaskKind::Generic,
        "Write integration tests for checkout",
        "qa",
    );
    check(
        &r,
        TaskKind::Generic,
        "Deploy the release with docker",
        "deploy",
    );
    check(
        &r,
        TaskKind::Generic,
        "Research competitor pricing",
        "research",
    );
    let d = r.route(&task("t", TaskKind::Generic, "Launch a marketing campaign"));
    assert_eq!(d.layer, RouteLayer::Text);
    assert!(d.explanation.contains("\"marketing\""), "{}", d.explanation);
    assert!(d.explanation.contains("\"campaign\""), "{}", d.explanation);
    assert!(!d.alternatives.is_empty());
    assert!(d.alternatives.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(
        d.alternatives
            .iter()
            .all(|a| a.agent.as_str() != "marketing")
    );
}

#[test]
fn rules_come_first_and_are_explained() {
    let r = default_router();
    let d = r.route(&task(
        "t",
        TaskKind::Implement,
        "Fix the SQL injection vulnerability",
    ));
    assert_eq!(d.layer, RouteLayer::Rule);
    assert_eq!(d.agent.unwrap().as_str(), "security");
    assert!(
        d.explanation.contains("rule \"security-sensitive\"")
            && d.explanation.contains("vulnerability"),
        "{}",
        d.explanation
    );
    assert_eq!(d.match_score, 1.0);
    let t = task("t", TaskKind::Analyze, "anything").with_metadata("team", "research");
    let d = r.route(&t);
    assert_eq!(d.agent.unwrap().as_str(), "research");
    assert!(d.explanation.contains("team=research"), "{}", d.explanation);
}

#[test]
fn capability_fallback_and_unassigned() {
    let r = default_router();
    let d = r.route(&task("t", TaskKind::Finance, "zzqx"));
    assert_eq!(d.layer, RouteLayer::Capability);
    assert_eq!(d.agent.unwrap().as_str(), "finance");
    assert!(
        d.explanation.contains("lists kind finance"),
        "{}",
        d.explanation
    );
    // A tool catalogue lists no kinds: gibberish has nowhere to go.
    let tools = AgentRegistry::new(vec![
        AgentProfile::new("weather", "Weather forecast"),
        AgentProfile::new("flights", "Search flights"),
    ])
    .unwrap();
    let r = Router::new(tools, RoutingRules::empty()).unwrap();
    let d = r.route(&task("t", TaskKind::Generic, "zzqx blorp"));
    assert_eq!(d.layer, RouteLayer::Unassigned);
    assert!(d.agent.is_none());
    assert!(
        d.explanation.contains("no agent lists kind generic"),
        "{}",
        d.explanation
    );
}

#[test]
fn routing_by_kind_alone_skips_rules_and_text_and_says_why() {
    let r = default_router();
    // A rule would send this to `security`, and its text matches `security` too; by kind
    // alone it goes to an agent listing `implement`.
    let tasks = [
        task(
            "a",
            TaskKind::Implement,
            "Fix the SQL injection vulnerability",
        ),
        task(
            "b",
            TaskKind::Finance,
            "Fix the SQL injection vulnerability",
        ),
        task("c", TaskKind::Generic, "zzqx"),
    ];
    let mut out = Vec::new();
    r.route_all_by_kind_into(&tasks, "feature flag halo_routing is off", &mut out);
    assert_eq!(out.len(), 3);
    let full = r.route(&tasks[0]);
    assert_eq!(full.agent.as_ref().unwrap().as_str(), "security");
    assert_eq!(out[0].layer, RouteLayer::Capability);
    let a = out[0].agent.as_ref().unwrap();
    let listed = AgentRegistry::from_toml_str(AGENTS).unwrap();
    assert!(
        listed
            .get(a.as_str())
            .unwrap()
            .task_kinds
            .contains(&TaskKind::Implement),
        "{a} does not list implement"
    );
    assert_ne!(a.as_str(), "security");
    assert!(
        out[0].explanation.contains("lists kind implement")
            && out[0]
                .explanation
                .ends_with("rules and text matching off: feature flag halo_routing is off"),
        "{}",
        out[0].explanation
    );
    assert_eq!(out[1].agent.as_ref().unwrap().as_str(), "finance");
    // The alternatives are the other agents listing the kind, then the agents listing
    // `generic` (`builder`), which take a task whose kind's agents are all failing.
    for alt in &out[0].alternatives {
        assert!(
            listed
                .get(alt.agent.as_str())
                .unwrap()
                .task_kinds
                .contains(&TaskKind::Implement)
        );
    }
    let alts: Vec<&str> = out[1]
        .alternatives
        .iter()
        .map(|a| a.agent.as_str())
        .collect();
    assert_eq!(alts, ["builder"]);
    assert!(out[1].alternatives[0].score < out[1].score);
    // A tool catalogue lists no kinds: nothing is forced onto a default agent.
    let tools = AgentRegistry::new(vec![AgentProfile::new("weather", "Weather forecast")]).unwrap();
    let r = Router::new(tools, RoutingRules::empty()).unwrap();
    let mut out = Vec::new();
    r.route_all_by_kind_into(
        [&task("t", TaskKind::Generic, "weather forecast for Paris")],
        "degraded: minimal",
        &mut out,
    );
    assert_eq!(out[0].layer, RouteLayer::Unassigned);
    assert_eq!(
        &*out[0].explanation,
        "unassigned: no agent lists kind generic; rules and text matching off: degraded: minimal"
    );
    // The cache is not involved.
    assert_eq!(r.cache_stats().hits + r.cache_stats().misses, 0);
}

/// By kind alone, agents listing `generic` are fallbacks: ranked after the agents
/// listing the task's kind, taking the task when those are at capacity (and saying
/// so), and never the only candidate of a kind nobody lists.
#[test]
fn routing_by_kind_alone_falls_back_to_generic_agents() {
    let reg = AgentRegistry::new(vec![
        AgentProfile::new("any", "does anything")
            .with_kind(TaskKind::Generic)
            .with_success_rate(0.99),
        AgentProfile::new("books", "bookkeeping")
            .with_kind(TaskKind::Finance)
            .with_success_rate(0.5)
            .with_max_concurrent_tasks(1),
    ])
    .unwrap();
    let r = Router::new(reg, RoutingRules::empty()).unwrap();
    let tasks = [
        task("a", TaskKind::Finance, "close the books"),
        task("b", TaskKind::Finance, "close the books again"),
        task("c", TaskKind::Security, "threat model"),
    ];
    let mut out = Vec::new();
    r.route_all_by_kind_into(&tasks, "degraded: minimal", &mut out);
    // The agent listing the kind first, though the fallback's success rate is higher.
    assert_eq!(out[0].agent.as_ref().unwrap().as_str(), "books");
    let alts: Vec<&str> = out[0]
        .alternatives
        .iter()
        .map(|a| a.agent.as_str())
        .collect();
    assert_eq!(alts, ["any"]);
    // `books` is at capacity: the fallback takes the next one and says why.
    assert_eq!(out[1].agent.as_ref().unwrap().as_str(), "any");
    assert_eq!(out[1].layer, RouteLayer::Capability);
    assert!(
        out[1]
            .explanation
            .starts_with("fallback: any lists kind generic, not finance (success rate 0.99")
            && out[1].explanation.contains("books is at capacity (1/1)"),
        "{}",
        out[1].explanation
    );
    // Nobody lists `security`: unassigned, not forced onto the fallback.
    assert_eq!(out[2].layer, RouteLayer::Unassigned);
    assert!(out[2].alternatives.is_empty());
}

#[test]
fn plan_capacity_moves_to_the_next_alternative() {
    let reg = AgentRegistry::new(vec![
        AgentProfile::new("fast", "summarise documents")
            .with_kind(TaskKind::Document)
            .with_max_concurrent_tasks(2),
        AgentProfile::new("slow", "writes documents and reports")
            .with_kind(TaskKind::Document)
            .with_max_concurrent_tasks(1),
    ])
    .unwrap();
    let r = Router::new(reg, RoutingRules::empty()).unwrap();
    let tasks: Vec<Task> = (0..4)
        .map(|i| task(&format!("t{i}"), TaskKind::Document, "summarise documents"))
        .collect();
    let plan = r.route_all(&tasks);
    let agents: Vec<Option<&str>> = plan
        .decisions
        .iter()
        .map(|d| d.agent.as_ref().map(AgentId::as_str))
        .collect();
    // Capacity is soft: with every candidate full, the best one takes the task and
    // says it will queue, rather than leaving work unassigned.
    assert_eq!(
        agents,
        [Some("fast"), Some("fast"), Some("slow"), Some("fast")]
    );
    assert!(
        plan.decisions[3]
            .explanation
            .contains("every candidate is at capacity"),
        "{}",
        plan.decisions[3].explanation
    );
    assert!(
        plan.decisions[2]
            .explanation
            .contains("fast is at capacity (2/2)"),
        "{}",
        plan.decisions[2].explanation
    );
    assert_eq!(plan.unassigned_count(), 0);
    assert_eq!(plan.load.get("fast"), Some(&3));
    assert_eq!(plan.load.get("slow"), Some(&1));
    // route_with_load sees an external load the same way.
    let mut load = BTreeMap::new();
    load.insert(AgentId::new("fast"), 2);
    let d = r.route_with_load(&tasks[0], &load);
    assert_eq!(d.agent.unwrap().as_str(), "slow");
}

/// Audit U6: the running means were `(mean × n + x) / (n + 1)`, so two outcomes near
/// the largest values a `Duration` and a `Usd` hold made them infinite, and a registry
/// holding an infinite mean could no longer be written as JSON. Now they stay finite.
#[test]
fn extreme_outcomes_keep_the_means_finite_and_the_registry_writable() {
    let reg = AgentRegistry::new(vec![AgentProfile::new("alpha", "handles alpha work")]).unwrap();
    let r = Router::new(reg, RoutingRules::empty()).unwrap();
    let t = task("t", TaskKind::Generic, "reconcile the quux ledger");
    let alpha = AgentId::new("alpha");
    for _ in 0..3 {
        r.record_outcome(&t, &alpha, true, Duration::MAX, Usd::saturating(f64::MAX))
            .unwrap();
    }
    let reg = r.registry();
    let s = &reg.get("alpha").unwrap().outcomes;
    assert!(s.mean_latency_ms.is_finite(), "{s:?}");
    assert!(s.mean_cost_usd.is_finite(), "{s:?}");
    assert!(reg.to_json_string().is_ok());
    assert!(reg.to_toml_string().is_ok());
}

#[test]
fn outcomes_update_success_rates_examples_and_persist() {
    let reg = AgentRegistry::new(vec![
        AgentProfile::new("alpha", "handles alpha work"),
        AgentProfile::new("beta", "handles beta work"),
    ])
    .unwrap();
    let r = Router::new(reg, RoutingRules::empty()).unwrap();
    let t = task("t", TaskKind::Generic, "reconcile the quux ledger");
    assert_eq!(r.route(&t).layer, RouteLayer::Unassigned);
    let before = r.registry().get("beta").unwrap().success_rate;
    let beta_id = AgentId::new("beta");
    r.record_outcome(
        &t,
        &AgentId::new("beta"),
        true,
        Duration::from_millis(200),
        Usd::new(0.01).unwrap(),
    )
    .unwrap();
    // Learned without a restart: the description is now a beta example.
    let d = r.route(&t);
    assert_eq!(d.agent.unwrap().as_str(), "beta");
    assert_eq!(d.layer, RouteLayer::Text);
    let reg = r.registry();
    let beta = reg.get("beta").unwrap();
    assert!(beta.success_rate > before);
    assert_eq!(beta.outcomes.successes, 1);
    assert!((beta.outcomes.mean_latency_ms - 200.0).abs() < 1e-9);
    // Failures lower the rate and are not learned as examples.
    r.record_outcome(
        &t,
        &AgentId::new("alpha"),
        false,
        Duration::ZERO,
        Usd::new(0.0).unwrap(),
    )
    .unwrap();
    let alpha = r.registry().get("alpha").unwrap().clone();
    assert!(alpha.success_rate < 0.8);
    assert!(alpha.examples.is_empty());
    // The same success again, twice in one batch and with outer white space, adds no
    // second copy of the example.
    let again = task("t2", TaskKind::Generic, "  reconcile the quux ledger ");
    let twice = |t| Outcome {
        task: t,
        agent: &beta_id,
        success: true,
        latency: Duration::ZERO,
        cost: Usd::ZERO,
        plan: Some("run-1"),
    };
    r.record_outcomes(&[twice(&again), twice(&again)]).unwrap();
    let beta = r.registry().get("beta").unwrap().clone();
    assert_eq!(beta.outcomes.successes, 3);
    assert_eq!(
        beta.examples
            .iter()
            .filter(|e| e.as_str() == "reconcile the quux ledger")
            .count(),
        1,
        "{:?}",
        beta.examples
    );
    assert_eq!(beta.plans, ["run-1"]);
    // Persisted state reloads into an equal registry.
    let saved = r.registry().to_toml_string().unwrap();
    let back = AgentRegistry::from_toml_str(&saved).unwrap();
    assert_eq!(&back, &*r.registry());
    // A full retrain keeps what was learned and drops the cache.
    let before = r.cache_stats().invalidations;
    r.retrain();
    assert_eq!(r.cache_stats().invalidations, before + 1);
    assert_eq!(r.route(&t).agent.unwrap().as_str(), "beta");
    // Unknown agents are rejected.
    let err = r
        .record_outcome(
            &t,
            &AgentId::new("ghost"),
            true,
            Duration::ZERO,
            Usd::new(0.0).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(err, HaloError::UnknownAgent { .. }));
}

/// Two domains with look-alike tools: "cancel the ticket" reads the same for both.
fn travel_catalogue(tags: bool, plans: bool) -> AgentRegistry {
    let tool = |id: &str, desc: &str, tag: &str| {
        let mut p = AgentProfile::new(id, desc);
        if tags {
            p.skills = vec![tag.to_owned()];
        }
        p
    };
    // train_cancel comes first, so it wins the text tie when routed alone.
    AgentRegistry::new(vec![
        tool("train_cancel", "Cancels a ticket", "Train"),
        tool("flight_cancel", "Cancels a ticket", "Flight"),
        tool("train_search", "Searches train timetables", "Train"),
        tool(
            "flight_search",
            "Searches flights between airports",
            "Flight",
        ),
    ])
    .map(|r| {
        if !plans {
            return r;
        }
        let mut v: Vec<AgentProfile> = r.iter().cloned().collect();
        v[1].plans = vec!["req-1".into(), "req-2".into()];
        v[3].plans = vec!["req-1".into(), "req-2".into(), "req-3".into()];
        v[0].plans = vec!["req-4".into()];
        v[2].plans = vec!["req-4".into()];
        AgentRegistry::new(v).unwrap()
    })
    .unwrap()
}

fn agents_of(plan: &genesis_halo::RoutingPlan) -> Vec<&str> {
    plan.decisions
        .iter()
        .map(|d| d.agent.as_ref().map_or("-", AgentId::as_str))
        .collect()
}

#[test]
fn plan_context_prefers_the_tool_that_fits_the_other_tasks() {
    let search = task(
        "a",
        TaskKind::Generic,
        "Search flights between the airports",
    );
    let cancel = task("b", TaskKind::Generic, "Cancel the ticket");
    // From catalogue tags alone (no recorded plans).
    let r = Router::new(travel_catalogue(true, false), RoutingRules::empty()).unwrap();
    assert_eq!(r.route(&cancel).agent.unwrap().as_str(), "train_cancel");
    let plan = r.route_all([&search, &cancel]);
    assert_eq!(agents_of(&plan), ["flight_search", "flight_cancel"]);
    let e = &plan.decisions[1].explanation;
    assert!(
        e.contains("plan context +") && e.contains("shares tag \"flight\" with flight_search"),
        "{e}"
    );
    assert!(e.contains("text alone ranked train_cancel first"), "{e}");
    assert_eq!(
        plan.decisions[1].alternatives[0].agent.as_str(),
        "train_cancel"
    );
    // The first task kept its text choice and its cached explanation.
    assert!(!plan.decisions[0].explanation.contains("plan context"));
    // A plan of one task, and the stage switched off, route as `route` does.
    assert_eq!(agents_of(&r.route_all([&cancel])), ["train_cancel"]);
    let off = RouterConfig {
        plan: PlanConfig {
            weight: 0.0,
            ..PlanConfig::default()
        },
        ..RouterConfig::default()
    };
    let r = Router::with_config(travel_catalogue(true, false), RoutingRules::empty(), off).unwrap();
    assert_eq!(
        agents_of(&r.route_all([&search, &cancel])),
        ["flight_search", "train_cancel"]
    );
    // Without tags or plans there is nothing to go on.
    let r = Router::new(travel_catalogue(false, false), RoutingRules::empty()).unwrap();
    assert_eq!(
        agents_of(&r.route_all([&search, &cancel])),
        ["flight_search", "train_cancel"]
    );
}

#[test]
fn plan_context_learns_from_recorded_plans() {
    let search = task(
        "a",
        TaskKind::Generic,
        "Search flights between the airports",
    );
    let cancel = task("b", TaskKind::Generic, "Cancel the ticket");
    // Plans loaded with the catalogue.
    let r = Router::new(travel_catalogue(false, true), RoutingRules::empty()).unwrap();
    let plan = r.route_all([&cancel, &search]);
    assert_eq!(agents_of(&plan), ["flight_cancel", "flight_search"]);
    let e = &plan.decisions[0].explanation;
    assert!(
        e.contains("used with flight_search in recorded plans"),
        "{e}"
    );
    // Without plan context each task is ranked alone: the cancellation goes where its
    // text alone sends it.
    let mut alone = Vec::new();
    r.route_all_into_per_task([&cancel, &search], &mut alone);
    assert_eq!(alone.len(), 2);
    assert_eq!(alone[0], r.route(&cancel));
    assert_ne!(alone[0].agent, plan.decisions[0].agent);
    // Plans learned from outcomes, persisted with the registry.
    let cfg = RouterConfig {
        learn_examples: false,
        ..RouterConfig::default()
    };
    let r =
        Router::with_config(travel_catalogue(false, false), RoutingRules::empty(), cfg).unwrap();
    assert_eq!(
        agents_of(&r.route_all([&cancel, &search]))[0],
        "train_cancel"
    );
    let (fc, fs) = (AgentId::new("flight_cancel"), AgentId::new("flight_search"));
    let outcome = |agent, plan, success| Outcome {
        task: &cancel,
        agent,
        success,
        latency: Duration::ZERO,
        cost: Usd::new(0.0).unwrap(),
        plan,
    };
    // Failures and outcomes without a plan teach nothing about plans.
    r.record_outcomes(&[outcome(&fc, Some("r1"), false), outcome(&fs, None, true)])
        .unwrap();
    assert!(r.registry().get("flight_cancel").unwrap().plans.is_empty());
    r.record_outcomes(&[
        outcome(&fc, Some("r1"), true),
        outcome(&fs, Some("r1"), true),
        outcome(&fs, Some("r1"), true),
    ])
    .unwrap();
    assert_eq!(r.registry().get("flight_search").unwrap().plans, ["r1"]);
    assert_eq!(
        agents_of(&r.route_all([&cancel, &search]))[0],
        "flight_cancel"
    );
    let saved = r.registry().to_toml_string().unwrap();
    assert!(saved.contains("plans = [\"r1\"]"), "{saved}");
    assert_eq!(
        &AgentRegistry::from_toml_str(&saved).unwrap(),
        &*r.registry()
    );
    // JSONL catalogues may carry plans too.
    let (reg, _) = AgentRegistry::from_jsonl_str(
        "{\"id\":\"a\",\"desc\":\"x\",\"plans\":[\"r1\",\"r2\"]}\n",
        JsonlMode::Fail,
    )
    .unwrap();
    assert_eq!(reg.get("a").unwrap().plans.len(), 2);
}

#[test]
fn plan_settings_are_validated() {
    for (plan, field) in [
        (
            PlanConfig {
                temperature: 0.0,
                ..PlanConfig::default()
            },
            "plan.temperature",
        ),
        (
            PlanConfig {
                candidates: 17,
                ..PlanConfig::default()
            },
            "plan.candidates",
        ),
        (
            PlanConfig {
                weight: f32::NAN,
                ..PlanConfig::default()
            },
            "plan.weight",
        ),
    ] {
        let cfg = RouterConfig {
            plan,
            ..RouterConfig::default()
        };
        let err = Router::with_config(travel_catalogue(true, false), RoutingRules::empty(), cfg)
            .unwrap_err();
        assert!(
            matches!(err, HaloError::InvalidConfig { field: f, .. } if f == field),
            "{err}"
        );
    }
}

#[test]
fn cache_counts_hits_and_is_invalidated_by_changes() {
    let r = default_router();
    let t = task("t", TaskKind::Generic, "Launch a marketing campaign");
    let first = r.route(&t);
    let again = r.route(&task(
        "other-id",
        TaskKind::Generic,
        "  launch a MARKETING campaign ",
    ));
    assert_eq!(first.agent, again.agent);
    assert_eq!(again.task_id.as_str(), "other-id");
    let s = r.cache_stats();
    assert_eq!((s.hits, s.misses, s.entries), (1, 1, 1));
    // A different kind is a different signature.
    r.route(&task("t", TaskKind::Sales, "Launch a marketing campaign"));
    assert_eq!(r.cache_stats().misses, 2);
    // New rules drop the cache, and the new rule applies at once.
    let mut rules = r.rules();
    rules
        .rules
        .push(Rule::new("campaigns-to-sales", "sales", 1000).with_keyword("campaign"));
    r.set_rules(rules).unwrap();
    let s = r.cache_stats();
    assert_eq!((s.entries, s.invalidations), (0, 1));
    let d = r.route(&t);
    assert_eq!(d.agent.unwrap().as_str(), "sales");
    assert_eq!(d.layer, RouteLayer::Rule);
    // Rules naming unknown agents are refused and the old rules stay.
    let bad = RoutingRules::new(vec![Rule::new("r", "ghost", 1)]);
    assert!(matches!(
        r.set_rules(bad),
        Err(HaloError::UnknownRuleAgent { .. })
    ));
    assert_eq!(r.route(&t).agent.unwrap().as_str(), "sales");
}

#[test]
fn top_k_ranks_rule_agents_first() {
    let r = default_router();
    let t = task("t", TaskKind::Generic, "security audit of the API");
    let top = r.route_top_k(&t, 3).unwrap();
    assert!(top.len() >= 2 && top.len() <= 3, "{top:?}");
    assert_eq!(top[0].agent.as_str(), "security");
    assert!(top[0].score > top[1].score);
    // Audit U6: `usize::MAX` panicked (capacity overflow) and 1,000 quietly returned
    // what the ranking holds. Both are refused, naming the rule and the value.
    for k in [0, 17, 1000, usize::MAX] {
        let err = r.route_top_k(&t, k).unwrap_err();
        assert!(
            matches!(err, HaloError::InvalidTopK { max: 16, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("top_k {k}")), "{err}");
    }
    assert!(r.route_top_k(&t, 16).unwrap().len() <= 16);
}

#[test]
fn router_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Router>();
    let r = Arc::new(default_router());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let r = Arc::clone(&r);
            std::thread::spawn(move || {
                for j in 0..50 {
                    let t = task(
                        &format!("t{i}-{j}"),
                        TaskKind::Generic,
                        "analyse the results",
                    );
                    assert_eq!(r.route(&t).agent.unwrap().as_str(), "analytics");
                    if j % 10 == 0 {
                        r.record_outcome(
                            &t,
                            &AgentId::new("analytics"),
                            true,
                            Duration::ZERO,
                            Usd::new(0.0).unwrap(),
                        )
                        .unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        r.registry().get("analytics").unwrap().outcomes.successes,
        20
    );
}

#[test]
fn bad_catalogues_and_rules_fail_clearly() {
    assert!(matches!(
        AgentRegistry::from_toml_str("[[agent]]\nid = 3\n"),
        Err(HaloError::AgentsToml { .. })
    ));
    assert!(matches!(
        AgentRegistry::from_json_str("[]"),
        Err(HaloError::EmptyCatalogue)
    ));
    assert!(matches!(
        AgentRegistry::from_json_str("{"),
        Err(HaloError::AgentsJson { .. })
    ));
    let (reg, skipped) = AgentRegistry::from_jsonl_str(
        "{\"id\":\"a\",\"desc\":\"x\"}\n{\"id\":\"b\"}\n",
        JsonlMode::Skip,
    )
    .unwrap();
    assert_eq!(reg.len(), 1);
    assert_eq!(skipped[0].line, 2);
    let reg = AgentRegistry::from_toml_str(AGENTS).unwrap();
    let rules =
        RoutingRules::from_toml_str("[[rule]]\nname = \"x\"\nagent = \"nobody\"\n").unwrap();
    let err = Router::new(reg.clone(), rules).unwrap_err();
    assert_eq!(err.to_string(), "rule \"x\" names unknown agent \"nobody\"");
    let cfg = RouterConfig {
        top_k: 0,
        ..RouterConfig::default()
    };
    assert!(matches!(
        Router::with_config(reg, RoutingRules::empty(), cfg),
        Err(HaloError::InvalidConfig { field: "top_k", .. })
    ));
}

#[test]
fn top_k_above_the_ranking_size_is_rejected_and_15_is_served() {
    let agents: Vec<AgentProfile> = (0..40)
        .map(|i| AgentProfile::new(format!("a{i}"), format!("books flights variant {i}")))
        .collect();
    let registry = AgentRegistry::new(agents).unwrap();
    let with_top_k = |top_k| {
        Router::with_config(
            registry.clone(),
            RoutingRules::empty(),
            RouterConfig {
                top_k,
                ..RouterConfig::default()
            },
        )
    };
    for top_k in [16, 30, 100] {
        let err = with_top_k(top_k).unwrap_err();
        assert!(
            matches!(err, HaloError::InvalidConfig { field: "top_k", value, .. } if value == top_k as f64),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("router config top_k = {top_k} is invalid: must be in 1..=15")
        );
    }
    let d = with_top_k(15)
        .unwrap()
        .route(&task("t", TaskKind::Generic, "book flights"));
    assert!(d.agent.is_some(), "{}", d.explanation);
    assert_eq!(d.alternatives.len(), 15, "top_k = 15 is served in full");
}

/// Rule keywords are case-insensitive beyond ASCII, through the router's own scanner:
/// for words of the agents' descriptions (its vocabulary) and for words it never saw.
#[test]
fn rule_keywords_match_non_ascii_words_in_any_case() {
    let reg = AgentRegistry::new(vec![
        AgentProfile::new(
            "finance",
            "handles bank transfers, Überweisung and payments",
        ),
        AgentProfile::new("writer", "writes documents"),
    ])
    .unwrap();
    let rules = RoutingRules::new(vec![
        Rule::new("transfers", "finance", 10).with_keyword("überweisung"),
        Rule::new("reports", "writer", 5).with_keyword("ÉTAT des lieux"),
    ]);
    let router = Router::new(reg, rules).unwrap();
    for (d, rule_agent) in [
        ("überweisung prüfen", "finance"),
        ("Überweisung prüfen", "finance"),
        ("ÜBERWEISUNG PRÜFEN", "finance"),
        ("faire l'état des lieux", "writer"),
        ("État des lieux, vite", "writer"),
    ] {
        let decision = router.route(&task("t", TaskKind::Generic, d));
        assert_eq!(
            decision.layer,
            RouteLayer::Rule,
            "{d}: {}",
            decision.explanation
        );
        assert_eq!(
            decision.agent.as_ref().map(AgentId::as_str),
            Some(rule_agent),
            "{d}"
        );
    }
    let d = router.route(&task("t", TaskKind::Generic, "etat des lieux"));
    assert_ne!(d.layer, RouteLayer::Rule, "accents still count");
}

#[test]
fn decisions_serialise_with_stable_field_names() {
    let r = default_router();
    let plan = r.route_all(&[task("t1", TaskKind::Generic, "analyse the results")]);
    let v = serde_json::to_value(&plan).unwrap();
    let d = &v["decisions"][0];
    assert_eq!(d["task_id"], "t1");
    assert_eq!(d["agent"], "analytics");
    assert_eq!(d["layer"], "text");
    for key in ["score", "match_score", "explanation", "alternatives"] {
        assert!(d.get(key).is_some(), "{key}");
    }
    assert!(d["alternatives"][0].get("agent").is_some());
    assert_eq!(v["load"]["analytics"], 1);
    assert!(v["unassigned"].as_array().unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_text_routes_without_panicking(desc in "\\PC{0,80}", k in 0usize..18, meta in "[a-z]{0,5}") {
        let r = default_router();
        let kind = TaskKind::ALL[k];
        let t = task("t", kind, &desc).with_metadata("team", meta);
        let d = r.route(&t);
        prop_assert!((0.0..=1.0).contains(&d.match_score));
        prop_assert!(d.score.is_finite());
        prop_assert_eq!(d.agent.is_none(), d.layer == RouteLayer::Unassigned);
        prop_assert!(d.alternatives.windows(2).all(|w| w[0].score >= w[1].score));
        let top = r.route_top_k(&t, 5).unwrap();
        prop_assert!(top.len() <= 5);
    }

    #[test]
    fn plans_never_exceed_capacity(descs in proptest::collection::vec("[a-z ]{0,30}", 0..60), k in 0usize..18) {
        let r = default_router();
        let tasks: Vec<Task> = descs.iter().enumerate()
            .map(|(i, d)| task(&format!("t{i}"), TaskKind::ALL[(k + i) % 18], d))
            .collect();
        let plan = r.route_all(&tasks);
        prop_assert_eq!(plan.decisions.len(), tasks.len());
        let reg = r.registry();
        // An agent goes over its capacity only by tasks that found every candidate full.
        for (agent, n) in &plan.load {
            let cap = reg.get(agent.as_str()).unwrap().max_concurrent_tasks;
            let overflow = plan
                .decisions
                .iter()
                .filter(|d| d.agent.as_ref() == Some(agent) && d.explanation.contains("every candidate is at capacity"))
                .count() as u32;
            prop_assert!(*n <= cap + overflow, "{agent}: {n} tasks, cap {cap}, overflow {overflow}");
        }
        let assigned: u32 = plan.load.values().sum();
        prop_assert_eq!(assigned as usize + plan.unassigned_count(), tasks.len());
    }
}

/// How often `needle` occurs in the whole chain of `e` (its message and every source's).
fn times_in_chain(e: &HaloError, needle: &str) -> usize {
    genesis_core::error_chain(e).matches(needle).count()
}

#[test]
fn catalogue_parse_errors_name_the_key_and_value_once() {
    // (document, what the message must name)
    let cases = [
        (
            "[[agent]]\nid = \"a\"\ndescription = \"x\"\ncost_tier = \"cheap\"\n",
            ["unknown variant `cheap`", "at line 4 column 13"],
        ),
        (
            "[[agent]]\nid = \"a\"\ndescription = \"x\"\ntask_kinds = [\"coding\"]\n",
            ["unknown variant `coding`", "at line 4 column 15"],
        ),
        (
            "[[agent]]\nid = \"a\"\ndescription = \"x\"\ncolour = \"red\"\n",
            ["unknown field `colour`", "at line 4 column 1"],
        ),
        (
            "[[agent]]\nid = \"a\"\n",
            ["missing field `description`", "at line 1 column 1"],
        ),
    ];
    for (toml, wanted) in cases {
        let e = AgentRegistry::from_toml_str(toml).unwrap_err();
        assert!(matches!(e, HaloError::AgentsToml { .. }), "{e:?}");
        let message = e.to_string();
        assert!(message.starts_with("agents toml is invalid: "), "{message}");
        assert!(!message.contains('\n'), "one line: {message:?}");
        for w in wanted {
            assert!(message.contains(w), "{message:?} lacks {w:?}");
            // A chain printer (the CLI, the server) shows the detail once.
            assert_eq!(
                times_in_chain(&e, w),
                1,
                "{}",
                genesis_core::error_chain(&e)
            );
        }
    }

    let e = AgentRegistry::from_json_str("[{\"id\": \"a\", \"description\": 3}]").unwrap_err();
    assert!(e.to_string().contains("invalid type: integer `3`"), "{e}");
    assert_eq!(times_in_chain(&e, "invalid type"), 1);

    let e = AgentRegistry::from_jsonl_str(
        "{\"id\":\"a\",\"desc\":\"x\"}\n{\"id\":\"y\"}\n",
        JsonlMode::Fail,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("agents jsonl line 2 is invalid: missing field"),
        "{e}"
    );
    assert_eq!(times_in_chain(&e, "missing field"), 1);

    let e =
        RoutingRules::from_toml_str("[[rule]]\nname = \"r\"\npriority = \"high\"\n").unwrap_err();
    assert!(matches!(e, HaloError::RulesToml { .. }), "{e:?}");
    assert!(
        e.to_string().contains("`high`") || e.to_string().contains("string"),
        "{e}"
    );
    assert!(e.to_string().contains("at line 3 column 12"), "{e}");
    assert_eq!(times_in_chain(&e, "at line 3 column 12"), 1);
}
