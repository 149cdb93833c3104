//! Routing accuracy on the UltraTool development split.
//!
//! ```text
//! cargo run --release -p genesis-halo --example eval_routing -- [DIR] [key=value ...]
//! ```
//!
//! `DIR` defaults to `../shared/data/routing/ultratool` and must hold `tools.jsonl`
//! (the agent catalogue) and `steps.dev.jsonl` (plan steps with their gold tool).
//! Steps are split into 5 folds by a hash of their request id, so all steps of one
//! request sit in the same fold and a step never teaches itself: for each fold, the
//! router is built from the tools plus the other folds' steps as examples, then routes
//! the fold's steps (kind `generic`, no rules) and top-1 / top-3 are counted.
//!
//! Two protocols run:
//! - `cv`: plain cross-validation by request.
//! - `unseen`: as `cv`, but in each fold about a tenth of the tools (a different tenth
//!   per fold, chosen by a hash of the tool id) lose all their training examples, to
//!   simulate the 25 tools of the held-out split that never appear in dev. Accuracy is
//!   reported separately for steps whose gold tool had examples and for those without.
//!
//! `key=value` overrides tune the text matcher: `bigrams`, `prefix`, `char_min`,
//! `char_max`, `dw` (description weight), `ew` (example weight), `boost` (unseen boost),
//! `min_sim`, `folds`; the learned correction: `learner` (`perceptron` | `softmax`),
//! `epochs`, `lr`, `margin`, `rivals`, `prune`, `train_desc`, `pen_unseen`, `scale` and
//! `l2` (softmax); the BM25 description channel: `bm25` (weight for tools with
//! examples), `bm25_unseen` (without), `k1`, `b`; `fold_numbers`; `desc_only=1` routes
//! with no examples at all (descriptions only); `confusions=N` prints the N most
//! frequent confusions.

#![allow(clippy::print_stdout)]

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use anyhow::{Context, bail};
use genesis_core::{Task, TaskId, TaskKind};
use genesis_halo::{AgentRegistry, JsonlMode, Router, RouterConfig, RoutingRules};

#[derive(serde::Deserialize)]
struct Step {
    request_id: String,
    step_text_masked: String,
    gold_tool: String,
}

fn fnv(s: &str, seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Default, Clone, Copy)]
struct Tally {
    n: usize,
    top1: usize,
    top3: usize,
}

impl Tally {
    fn add(&mut self, rank: Option<usize>) {
        self.n += 1;
        if rank == Some(0) {
            self.top1 += 1;
        }
        if rank.is_some_and(|r| r < 3) {
            self.top3 += 1;
        }
    }
    fn show(&self, name: &str) {
        let f = |x: usize| {
            if self.n == 0 {
                0.0
            } else {
                x as f64 / self.n as f64
            }
        };
        println!(
            "{name:<34} n={:>5}  top1={:.4}  top3={:.4}",
            self.n,
            f(self.top1),
            f(self.top3)
        );
    }
}

fn main() -> anyhow::Result<()> {
    let mut dir = String::from("../shared/data/routing/ultratool");
    let mut cfg = RouterConfig::default();
    let mut folds = 5u64;
    let mut confusions = 0usize;
    let mut desc_only = false;
    for arg in std::env::args().skip(1) {
        let Some((k, v)) = arg.split_once('=') else {
            dir = arg;
            continue;
        };
        match k {
            "bigrams" => cfg.text.bigrams = v == "1" || v == "true",
            "prefix" => cfg.text.prefix_len = v.parse()?,
            "char_min" => cfg.text.char_min = v.parse()?,
            "char_max" => cfg.text.char_max = v.parse()?,
            "dw" => cfg.text.description_weight = v.parse()?,
            "ew" => cfg.text.example_weight = v.parse()?,
            "boost" => cfg.text.unseen_boost = v.parse()?,
            "min_sim" => cfg.min_text_similarity = v.parse()?,
            "epochs" => cfg.text.epochs = v.parse()?,
            "lr" => cfg.text.learning_rate = v.parse()?,
            "margin" => cfg.text.margin = v.parse()?,
            "prune" => cfg.text.prune_below = v.parse()?,
            "train_desc" => cfg.text.train_descriptions = v == "1",
            "fold_numbers" => cfg.text.fold_numbers = v == "1",
            "pen_unseen" => cfg.text.penalize_unseen = v == "1" || v == "true",
            "learner" => {
                cfg.text.learner = match v {
                    "perceptron" => genesis_halo::Learner::Perceptron,
                    "softmax" => genesis_halo::Learner::Softmax,
                    _ => bail!("unknown learner {v:?}"),
                }
            }
            "rivals" => cfg.text.rivals = v.parse()?,
            "scale" => cfg.text.softmax_scale = v.parse()?,
            "l2" => cfg.text.l2 = v.parse()?,
            "bm25" => cfg.text.bm25_weight = v.parse()?,
            "bm25_unseen" => cfg.text.bm25_unseen_weight = v.parse()?,
            "k1" => cfg.text.bm25_k1 = v.parse()?,
            "b" => cfg.text.bm25_b = v.parse()?,
            "desc_only" => desc_only = v == "1" || v == "true",
            "folds" => folds = v.parse()?,
            "confusions" => confusions = v.parse()?,
            _ => bail!("unknown option {k:?}"),
        }
    }
    let tools_text = std::fs::read_to_string(format!("{dir}/tools.jsonl"))
        .with_context(|| format!("reading {dir}/tools.jsonl"))?;
    let steps_text = std::fs::read_to_string(format!("{dir}/steps.dev.jsonl"))
        .with_context(|| format!("reading {dir}/steps.dev.jsonl"))?;
    let (tools, skipped) = AgentRegistry::from_jsonl_str(&tools_text, JsonlMode::Fail)?;
    let mut steps = Vec::new();
    for (i, line) in steps_text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let s: Step = serde_json::from_str(line).with_context(|| format!("step line {}", i + 1))?;
        steps.push(s);
    }
    println!(
        "catalogue: {} tools ({} lines skipped); steps: {}; folds: {folds}; text config: {:?}",
        tools.len(),
        skipped.len(),
        steps.len(),
        cfg.text
    );
    let fold_of = |s: &Step| fnv(&s.request_id, 0) % folds;
    for protocol in ["cv", "unseen"] {
        let mut all = Tally::default();
        let mut seen = Tally::default();
        let mut unseen = Tally::default();
        let mut unassigned = 0usize;
        let mut confused: HashMap<(String, String), (usize, String)> = HashMap::new();
        let mut build_time = 0.0f64;
        let mut route_time = 0.0f64;
        for f in 0..folds {
            let held_tools: HashSet<&str> = if protocol == "unseen" {
                tools
                    .iter()
                    .map(|t| t.id.as_str())
                    .filter(|id| fnv(id, 7) % (2 * folds) == 2 * f)
                    .collect()
            } else {
                HashSet::new()
            };
            let mut examples: HashMap<&str, Vec<String>> = HashMap::new();
            for s in steps.iter().filter(|s| fold_of(s) != f) {
                if !desc_only && !held_tools.contains(s.gold_tool.as_str()) {
                    examples
                        .entry(s.gold_tool.as_str())
                        .or_default()
                        .push(s.step_text_masked.clone());
                }
            }
            let profiles = tools
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    if let Some(ex) = examples.get(p.id.as_str()) {
                        p.examples.extend(ex.iter().cloned());
                    }
                    p
                })
                .collect();
            let t0 = Instant::now();
            let router =
                Router::with_config(AgentRegistry::new(profiles)?, RoutingRules::empty(), cfg)?;
            build_time += t0.elapsed().as_secs_f64();
            let test: Vec<&Step> = steps.iter().filter(|s| fold_of(s) == f).collect();
            let tasks: Vec<Task> = test
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    Task::new(
                        TaskId::new(format!("s{i}")),
                        TaskKind::Generic,
                        s.step_text_masked.as_str(),
                    )
                })
                .collect();
            let t0 = Instant::now();
            let ranked: Vec<_> = tasks.iter().map(|t| router.route_top_k(t, 3)).collect();
            route_time += t0.elapsed().as_secs_f64();
            for (s, top) in test.iter().zip(&ranked) {
                let rank = top.iter().position(|a| a.agent.as_str() == s.gold_tool);
                if top.is_empty() {
                    unassigned += 1;
                }
                all.add(rank);
                if rank != Some(0)
                    && let Some(first) = top.first()
                {
                    {
                        let e = confused
                            .entry((s.gold_tool.clone(), first.agent.to_string()))
                            .or_insert((0, s.step_text_masked.clone()));
                        e.0 += 1;
                    }
                }
                if examples.contains_key(s.gold_tool.as_str()) {
                    seen.add(rank);
                } else {
                    unseen.add(rank);
                }
            }
        }
        println!("== protocol {protocol}");
        let mut pairs: Vec<_> = confused.into_iter().collect();
        pairs.sort_by_key(|p| std::cmp::Reverse(p.1.0));
        for ((gold, got), (n, text)) in pairs.into_iter().take(confusions) {
            println!("  {n:>3}  {gold} -> {got}   e.g. {text:?}");
        }
        all.show("all steps");
        seen.show("gold tool has training examples");
        unseen.show("gold tool has no training examples");
        println!(
            "unassigned {unassigned}; index build {:.1} ms/fold; route {:.2} us/step",
            build_time * 1000.0 / folds as f64,
            route_time * 1e6 / all.n.max(1) as f64
        );
    }
    Ok(())
}
