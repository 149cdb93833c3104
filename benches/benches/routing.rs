//! HALO routing latency.
//!
//! Groups:
//! - `routing/16_agents`: the shipped `config/agents.toml` + `config/routing_rules.toml`;
//!   one task, a 20-, 100- and 1,000-task plan (`route_all`), uncached (cache disabled)
//!   and cached (cache warmed with the same tasks). Plans use agents whose
//!   `max_concurrent_tasks` is raised to the plan size so every task is really assigned.
//! - `routing/ultratool_260`: the 260-tool UltraTool catalogue with the dev steps as
//!   examples, routing the dev step texts; skipped (message on stderr) when
//!   `../shared/data/routing/ultratool/tools.jsonl` is not found (also tried:
//!   `$GENESIS_DATA_DIR/routing/ultratool`, `../../shared/data/...`).
//! - `routing/synthetic_10k`: a generated 10,000-agent JSONL catalogue: load + index +
//!   route one task, and route one task on the built router.
//!
//! Allocator: mimalloc, the global allocator of the binaries (`genesis`,
//! `genesis-server`) and of the plan bench, so the numbers match what users run;
//! `--features system-allocator` measures with the system allocator instead.

// Bench set-up failing is a broken checkout: stop loudly, as tests do.
#![allow(clippy::expect_used)]

#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use genesis_core::{Task, TaskId, TaskKind};
use genesis_halo::{AgentRegistry, JsonlMode, Router, RouterConfig, RoutingRules};

const AGENTS: &str = include_str!("../../config/agents.toml");
const RULES: &str = include_str!("../../config/routing_rules.toml");

const VERBS: [&str; 12] = [
    "Build", "Write", "Analyse", "Deploy", "Design", "Test", "Review", "Plan", "Research",
    "Optimise", "Document", "Launch",
];
const OBJECTS: [&str; 16] = [
    "the REST API for orders",
    "the landing page UI",
    "unit tests for the billing module",
    "a marketing campaign for the spring sale",
    "the quarterly budget forecast",
    "the results of the A/B test",
    "the CI/CD pipeline for staging",
    "alerts for error rate and latency",
    "the onboarding help center articles",
    "competitor pricing and positioning",
    "the database schema for invoices",
    "a threat model for the login flow",
    "outreach emails to enterprise leads",
    "the requirements for the signup flow",
    "prompts of the builder agent",
    "the architecture of the event pipeline",
];

fn plan_tasks(n: usize) -> Vec<Task> {
    (0..n)
        .map(|i| {
            let kind = TaskKind::ALL[(i * 7) % TaskKind::ALL.len()];
            let d = format!(
                "{} {} (part {})",
                VERBS[i % VERBS.len()],
                OBJECTS[(i / VERBS.len() + i) % OBJECTS.len()],
                i % 5
            );
            Task::new(TaskId::new(format!("t{i}")), kind, d)
        })
        .collect()
}

fn router_16(cache: bool, capacity: Option<u32>) -> Router {
    let reg = AgentRegistry::from_toml_str(AGENTS).expect("config/agents.toml");
    let reg = match capacity {
        Some(c) => AgentRegistry::new(
            reg.into_profiles()
                .into_iter()
                .map(|p| p.with_max_concurrent_tasks(c))
                .collect(),
        )
        .expect("registry"),
        None => reg,
    };
    let rules = RoutingRules::from_toml_str(RULES).expect("config/routing_rules.toml");
    let cfg = RouterConfig {
        cache_capacity: if cache { 100_000 } else { 0 },
        ..RouterConfig::default()
    };
    Router::with_config(reg, rules, cfg).expect("router")
}

fn bench_16(c: &mut Criterion) {
    let mut g = c.benchmark_group("routing/16_agents");
    let one = Task::new(
        TaskId::new("t1"),
        TaskKind::Generic,
        "Launch a marketing campaign for the new product and analyse the results",
    );
    let uncached = router_16(false, None);
    g.throughput(Throughput::Elements(1));
    g.bench_function("route_1_uncached", |b| {
        b.iter(|| black_box(uncached.route(black_box(&one))))
    });
    // Each call a different text: 1,000 real UltraTool step texts when the data is
    // there, else the synthetic plan's. Per-text work cannot be remembered from the
    // previous call, as it can when one text is routed over and over.
    let varied: Vec<Task> = match data_dir().map(|d| step_texts(&d)) {
        Some(texts) if !texts.is_empty() => texts
            .into_iter()
            .take(1000)
            .enumerate()
            .map(|(i, (t, _))| Task::new(TaskId::new(format!("v{i}")), TaskKind::Generic, t))
            .collect(),
        _ => plan_tasks(1000),
    };
    let mut next = 0usize;
    g.bench_function("route_1_uncached_varied", |b| {
        b.iter(|| {
            next = (next + 1) % varied.len();
            black_box(uncached.route(black_box(&varied[next])))
        })
    });
    let cached = router_16(true, None);
    cached.route(&one);
    g.bench_function("route_1_cached", |b| {
        b.iter(|| black_box(cached.route(black_box(&one))))
    });
    // 20 tasks is the size of the facade's plan() for a typical request: per-call
    // overhead (snapshot, buffers, the load map) shows there.
    for n in [20usize, 100, 1000] {
        let tasks = plan_tasks(n);
        let uncached = router_16(false, Some(n as u32));
        let cached = router_16(true, Some(n as u32));
        cached.route_all(&tasks);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("dag_{n}_uncached"), |b| {
            b.iter(|| black_box(uncached.route_all(black_box(&tasks))))
        });
        g.bench_function(format!("dag_{n}_cached"), |b| {
            b.iter(|| black_box(cached.route_all(black_box(&tasks))))
        });
    }
    g.finish();
}

fn data_dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(d) = std::env::var("GENESIS_DATA_DIR") {
        candidates.push(PathBuf::from(d).join("routing/ultratool"));
    }
    candidates.push(PathBuf::from("../shared/data/routing/ultratool"));
    candidates.push(PathBuf::from("../../shared/data/routing/ultratool"));
    candidates
        .into_iter()
        .find(|p| p.join("tools.jsonl").is_file())
}

/// UltraTool's dev steps as (masked text, gold tool); empty when unreadable.
fn step_texts(dir: &std::path::Path) -> Vec<(String, String)> {
    let steps = std::fs::read_to_string(dir.join("steps.dev.jsonl")).unwrap_or_default();
    let mut texts = Vec::new();
    for line in steps.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            && let (Some(t), Some(g)) = (v["step_text_masked"].as_str(), v["gold_tool"].as_str())
        {
            texts.push((t.to_owned(), g.to_owned()));
        }
    }
    texts
}

fn bench_ultratool(c: &mut Criterion) {
    let Some(dir) = data_dir() else {
        eprintln!("routing/ultratool_260 skipped: ultratool tools.jsonl not found");
        return;
    };
    let Ok(tools) = std::fs::read_to_string(dir.join("tools.jsonl")) else {
        eprintln!("routing/ultratool_260 skipped: tools.jsonl unreadable");
        return;
    };
    let texts = step_texts(&dir);
    let (reg, _) = AgentRegistry::from_jsonl_str(&tools, JsonlMode::Skip).expect("tools.jsonl");
    let profiles = reg
        .into_profiles()
        .into_iter()
        .map(|mut p| {
            p.examples.extend(
                texts
                    .iter()
                    .filter(|(_, g)| *g == p.id.as_str())
                    .map(|(t, _)| t.clone()),
            );
            p.with_max_concurrent_tasks(10_000)
        })
        .collect();
    let reg = AgentRegistry::new(profiles).expect("registry");
    let mk = |cache: bool| {
        let cfg = RouterConfig {
            cache_capacity: if cache { 100_000 } else { 0 },
            ..RouterConfig::default()
        };
        Router::with_config(reg.clone(), RoutingRules::empty(), cfg).expect("router")
    };
    let (uncached, cached) = (mk(false), mk(true));
    let mut all: Vec<Task> = texts
        .iter()
        .enumerate()
        .map(|(i, (t, _))| Task::new(TaskId::new(format!("s{i}")), TaskKind::Generic, t.as_str()))
        .collect();
    if all.is_empty() {
        all = plan_tasks(1000);
    }
    let mut g = c.benchmark_group("routing/ultratool_260");
    let one = all[0].clone();
    cached.route(&one);
    g.throughput(Throughput::Elements(1));
    g.bench_function("route_1_uncached", |b| {
        b.iter(|| black_box(uncached.route(black_box(&one))))
    });
    g.bench_function("route_1_cached", |b| {
        b.iter(|| black_box(cached.route(black_box(&one))))
    });
    for n in [100usize, 1000] {
        let tasks: Vec<Task> = all.iter().cycle().take(n).cloned().collect();
        cached.route_all(&tasks);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("dag_{n}_uncached"), |b| {
            b.iter(|| black_box(uncached.route_all(black_box(&tasks))))
        });
        g.bench_function(format!("dag_{n}_cached"), |b| {
            b.iter(|| black_box(cached.route_all(black_box(&tasks))))
        });
    }
    g.finish();
}

/// A deterministic 10,000-agent catalogue: each agent gets a description and two
/// examples built from a 2,000-word synthetic vocabulary.
fn synthetic_jsonl(n: usize) -> String {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    // Letters only: "w17"-style words would all fold into the number feature.
    let word = |next: &mut dyn FnMut() -> u64| {
        let mut v = next() % 2000;
        let mut w = String::from("x");
        for _ in 0..3 {
            w.push(char::from(b'a' + (v % 26) as u8));
            v /= 26;
        }
        w
    };
    let mut out = String::new();
    for i in 0..n {
        let desc: Vec<String> = (0..8).map(|_| word(&mut next)).collect();
        let ex1: Vec<String> = (0..6).map(|_| word(&mut next)).collect();
        let ex2: Vec<String> = (0..6).map(|_| word(&mut next)).collect();
        out.push_str(&format!(
            "{{\"id\":\"agent_{i}\",\"desc\":\"{}\",\"examples\":[\"{}\",\"{}\"]}}\n",
            desc.join(" "),
            ex1.join(" "),
            ex2.join(" ")
        ));
    }
    out
}

fn bench_10k(c: &mut Criterion) {
    let jsonl = synthetic_jsonl(10_000);
    let task = Task::new(
        TaskId::new("t"),
        TaskKind::Generic,
        "xabc xkqa xzzb xmma xbcd xqrs",
    );
    let mut g = c.benchmark_group("routing/synthetic_10k");
    g.sample_size(10);
    g.bench_function("load_index_route_1", |b| {
        b.iter_batched(
            || jsonl.clone(),
            |text| {
                let (reg, _) =
                    AgentRegistry::from_jsonl_str(&text, JsonlMode::Fail).expect("jsonl");
                let router = Router::new(reg, RoutingRules::empty()).expect("router");
                black_box(router.route(&task))
            },
            BatchSize::LargeInput,
        )
    });
    let (reg, _) = AgentRegistry::from_jsonl_str(&jsonl, JsonlMode::Fail).expect("jsonl");
    let cfg = RouterConfig {
        cache_capacity: 0,
        ..RouterConfig::default()
    };
    let router = Router::with_config(reg, RoutingRules::empty(), cfg).expect("router");
    g.sample_size(100);
    g.bench_function("route_1_uncached", |b| {
        b.iter(|| black_box(router.route(black_box(&task))))
    });
    g.finish();
}

criterion_group!(benches, bench_16, bench_ultratool, bench_10k);
criterion_main!(benches);
