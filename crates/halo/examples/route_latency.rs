//! Quick routing latency check (the criterion benches in `benches/benches/routing.rs`
//! are the reference; this is for fast iteration).
//!
//! ```text
//! cargo run --release -p genesis-halo --example route_latency -- [ULTRATOOL_DIR]
//! ```
//!
//! Profiling aid: with `HALO_ONLY=<label prefix>` and `HALO_ITERS=<n>` only that case
//! runs, `n` times, with no warm-up, so instruction counts per task are exact and
//! independent of other load on the machine:
//!
//! ```text
//! HALO_ONLY="16 agents route_all(1000) uncached" HALO_ITERS=3 \
//!   valgrind --tool=callgrind --toggle-collect=route_latency::measured \
//!   target/release/examples/route_latency ../shared/data/routing/ultratool
//! # instructions per task = the "summary" count / (HALO_ITERS × tasks per call)
//! ```
//!
//! `HALO_PLAN_WEIGHT=0` switches the plan-context stage of `route_all` off (to measure
//! what it costs); `HALO_PLAN_K=<n>` sets its candidates per task.
//!
//! `HALO_DIST=<label prefix>` times 2,000 single calls of the matching cases and prints
//! the 10th, 50th, 90th and 99th percentiles per call (for tail latency, which the
//! best-of-seven default hides).
//!
//! This runs on the system allocator (comparable with earlier measurements);
//! `--example route_latency_mimalloc` is the same program on mimalloc, the allocator
//! of the `genesis` binaries.

#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use genesis_core::{Task, TaskId, TaskKind};
use genesis_halo::{AgentRegistry, JsonlMode, Router, RouterConfig, RoutingRules};

const AGENTS: &str = include_str!("../../../config/agents.toml");
const RULES: &str = include_str!("../../../config/routing_rules.toml");

/// The code under measurement: a separate, never-inlined function so callgrind can
/// collect exactly it (`--toggle-collect=route_latency::measured`; in the mimalloc
/// build `route_latency_mimalloc::inner::measured`).
#[inline(never)]
fn measured(f: &mut dyn FnMut()) {
    f();
}

/// With `HALO_ONLY=<label prefix>` and `HALO_ITERS=<n>` only that case runs, exactly `n`
/// times (for callgrind or `perf stat -e cycles:u`, which are robust to other load on the
/// machine).
fn per_item(label: &str, items: usize, mut f: impl FnMut()) {
    if let Ok(only) = std::env::var("HALO_DIST") {
        if !label.starts_with(&only) {
            return;
        }
        let mut times: Vec<f64> = (0..2000)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let q = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
        println!(
            "{label}: per call p10 {:.1} / p50 {:.1} / p90 {:.1} / p99 {:.1} us",
            q(0.1),
            q(0.5),
            q(0.9),
            q(0.99)
        );
        return;
    }
    if let Ok(only) = std::env::var("HALO_ONLY") {
        if !label.starts_with(&only) {
            return;
        }
        let iters: usize = std::env::var("HALO_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        for _ in 0..iters {
            measured(&mut f);
        }
        println!("{label}: {iters} iterations of {items} tasks");
        return;
    }
    f();
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = Instant::now();
        let mut reps = 0usize;
        while t.elapsed().as_millis() < 150 {
            f();
            reps += 1;
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / (reps * items) as f64);
    }
    println!("{label:<40} {best:>8.3} us/task");
}

fn tasks(n: usize) -> Vec<Task> {
    let verbs = [
        "Build", "Write", "Analyse", "Deploy", "Design", "Test", "Review", "Plan",
    ];
    let objects = [
        "the REST API for orders",
        "the landing page UI",
        "unit tests for the billing module",
        "a marketing campaign for the spring sale",
        "the quarterly budget forecast",
        "the results of the A/B test",
        "the CI/CD pipeline for staging",
        "alerts for error rate and latency",
        "competitor pricing and positioning",
        "the requirements for the signup flow",
    ];
    (0..n)
        .map(|i| {
            Task::new(
                TaskId::new(format!("t{i}")),
                TaskKind::ALL[(i * 7) % TaskKind::ALL.len()],
                format!(
                    "{} {} (part {})",
                    verbs[i % 8],
                    objects[(i / 8 + i) % 10],
                    i % 5
                ),
            )
        })
        .collect()
}

fn run(
    name: &str,
    reg: &AgentRegistry,
    rules: &RoutingRules,
    ts: &[Task],
    varied: &[Task],
) -> anyhow::Result<()> {
    let reg = AgentRegistry::new(
        reg.iter()
            .cloned()
            .map(|p| p.with_max_concurrent_tasks(100_000))
            .collect(),
    )?;
    for cache in [false, true] {
        let mut cfg = RouterConfig {
            cache_capacity: if cache { 1_000_000 } else { 0 },
            ..RouterConfig::default()
        };
        if let Some(w) = std::env::var("HALO_PLAN_WEIGHT")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            cfg.plan.weight = w;
        }
        if let Some(k) = std::env::var("HALO_PLAN_K")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            cfg.plan.candidates = k;
        }
        let r = Router::with_config(reg.clone(), rules.clone(), cfg)?;
        let tag = if cache { "cached" } else { "uncached" };
        let one = &ts[0];
        per_item(&format!("{name} route_1 {tag}"), 1, || {
            black_box(r.route(black_box(one)));
        });
        // One task at a time, each text different: what a single uncached route costs
        // when nothing about the text was seen a moment ago.
        if !cache && !varied.is_empty() {
            per_item(
                &format!("{name} route_1 varied {tag}"),
                varied.len(),
                || {
                    for t in varied {
                        black_box(r.route(black_box(t)));
                    }
                },
            );
        }
        let plan = &ts[..ts.len().min(1000)];
        per_item(
            &format!("{name} route_all({}) {tag}", plan.len()),
            plan.len(),
            || {
                black_box(r.route_all(black_box(plan)));
            },
        );
    }
    Ok(())
}

pub(crate) fn main() -> anyhow::Result<()> {
    let reg = AgentRegistry::from_toml_str(AGENTS)?;
    let rules = RoutingRules::from_toml_str(RULES)?;
    let dir = std::env::args().nth(1);
    let mut texts = Vec::new();
    if let Some(dir) = &dir {
        for line in std::fs::read_to_string(format!("{dir}/steps.dev.jsonl"))?.lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            if let (Some(t), Some(g)) = (v["step_text_masked"].as_str(), v["gold_tool"].as_str()) {
                texts.push((t.to_owned(), g.to_owned()));
            }
        }
    }
    // 1,000 real step texts (UltraTool) when the data is there, else the synthetic plan.
    let varied: Vec<Task> = if texts.is_empty() {
        tasks(1000)
    } else {
        texts
            .iter()
            .take(1000)
            .enumerate()
            .map(|(i, (t, _))| {
                Task::new(TaskId::new(format!("v{i}")), TaskKind::Generic, t.as_str())
            })
            .collect()
    };
    run("16 agents", &reg, &rules, &tasks(1000), &varied)?;
    if let Some(dir) = dir {
        let (tools, _) = AgentRegistry::from_jsonl_str(
            &std::fs::read_to_string(format!("{dir}/tools.jsonl"))?,
            JsonlMode::Skip,
        )?;
        let profiles = tools
            .into_profiles()
            .into_iter()
            .map(|mut p| {
                p.examples.extend(
                    texts
                        .iter()
                        .filter(|(_, g)| *g == p.id.as_str())
                        .map(|(t, _)| t.clone()),
                );
                p
            })
            .collect();
        let t0 = Instant::now();
        let reg = AgentRegistry::new(profiles)?;
        let _ = Router::new(reg.clone(), RoutingRules::empty())?;
        println!(
            "ultratool build (with training): {:.1} ms",
            t0.elapsed().as_secs_f64() * 1e3
        );
        let ts: Vec<Task> = texts
            .iter()
            .enumerate()
            .map(|(i, (t, _))| {
                Task::new(TaskId::new(format!("s{i}")), TaskKind::Generic, t.as_str())
            })
            .collect();
        run("260 tools", &reg, &RoutingRules::empty(), &ts, &[])?;
    }
    Ok(())
}
