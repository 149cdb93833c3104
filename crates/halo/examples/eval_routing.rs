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
//! `char_max`, `verb_pairs` (`0` = off), `dw` (description weight), `ew` (example
//! weight), `boost` (unseen boost), `min_sim`; the split: `folds`, `seed` (`0` is the
//! reference split; another seed draws both the request folds and the simulated unseen
//! tools afresh, to check that a gain is not an artefact of one split); the learned
//! correction: `learner` (`perceptron` | `softmax`), `epochs`, `lr`, `margin`, `rivals`,
//! `prune`, `train_desc`, `pen_unseen`, `scale` and `l2` (softmax); the BM25
//! description channel: `bm25` (weight for tools with examples), `bm25_unseen`
//! (without), `k1`, `b`; `fold_numbers`; `desc_only=1` routes with no examples at all
//! (descriptions only); `confusions=N` prints the N most frequent confusions.
//!
//! Steps of one request are routed together as one plan (`Router::route_all`), so the
//! plan-context stage sees the request's other steps; training steps record their
//! request id in the tool's `plans`. Its settings: `plan_w` (weight, 0 = off),
//! `plan_beta` (unseen tag weight), `plan_t` (temperature), `plan_k` (candidates);
//! `plans=0` records no plan ids (tags only); `single=1` routes each step alone
//! (`route_top_k`, the protocol before plan context); `probe=1` also prints the
//! headroom check (oracle and realistic re-ranking outside the router).
//! `dump=PATH` writes every routed step as one JSON line (protocol, fold, request id,
//! text, gold tool and the router's best 16 `(tool, score)` after plan context), for
//! re-ranking probes outside the router; it widens `top_k` to 15 (all a ranking keeps
//! besides the choice) and changes no decision.

#![allow(clippy::print_stdout)]

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use anyhow::{Context, bail};
use genesis_core::{Task, TaskId, TaskKind};
use genesis_halo::{AgentRegistry, JsonlMode, Router, RouterConfig, RoutingRules};

/// One fold for the headroom probe: each test step's top 10 `(tool, score)`, each test
/// step's `(request, gold tool, gold tool has examples)`, the training
/// `(request, tool)` pairs and every tool's tags.
type ProbeFold = (
    Vec<Vec<(String, f64)>>,
    Vec<(String, String, bool)>,
    Vec<(String, String)>,
    HashMap<String, Vec<String>>,
);

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
    let mut seed = 0u64;
    let mut confusions = 0usize;
    let mut desc_only = false;
    let mut probe = false;
    let mut record_plans = true;
    let mut single = false;
    let mut dump: Option<String> = None;
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
            "probe" => probe = v == "1",
            "plan_w" => cfg.plan.weight = v.parse()?,
            "plan_beta" => cfg.plan.unseen_tag_weight = v.parse()?,
            "plan_t" => cfg.plan.temperature = v.parse()?,
            "plan_k" => cfg.plan.candidates = v.parse()?,
            "plans" => record_plans = v == "1",
            "single" => single = v == "1",
            "dump" => dump = Some(v.to_string()),
            "desc_only" => desc_only = v == "1" || v == "true",
            "folds" => folds = v.parse()?,
            "seed" => seed = v.parse()?,
            "verb_pairs" => cfg.text.verb_pairs = v.parse()?,
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
    let fold_of = |s: &Step| fnv(&s.request_id, seed) % folds;
    if dump.is_some() {
        cfg.top_k = 15;
    }
    let mut dump_out = String::new();
    for protocol in ["cv", "unseen"] {
        let mut all = Tally::default();
        let mut seen = Tally::default();
        let mut unseen = Tally::default();
        let mut unassigned = 0usize;
        let mut confused: HashMap<(String, String), (usize, String)> = HashMap::new();
        let mut build_time = 0.0f64;
        let mut probe_acc: Vec<ProbeFold> = Vec::new();
        let mut route_time = 0.0f64;
        for f in 0..folds {
            let held_tools: HashSet<&str> = if protocol == "unseen" {
                tools
                    .iter()
                    .map(|t| t.id.as_str())
                    .filter(|id| fnv(id, 7 + seed) % (2 * folds) == 2 * f)
                    .collect()
            } else {
                HashSet::new()
            };
            let mut examples: HashMap<&str, Vec<String>> = HashMap::new();
            let mut plans: HashMap<&str, Vec<String>> = HashMap::new();
            for s in steps.iter().filter(|s| fold_of(s) != f) {
                if !desc_only && !held_tools.contains(s.gold_tool.as_str()) {
                    examples
                        .entry(s.gold_tool.as_str())
                        .or_default()
                        .push(s.step_text_masked.clone());
                    let p = plans.entry(s.gold_tool.as_str()).or_default();
                    if record_plans && !p.contains(&s.request_id) {
                        p.push(s.request_id.clone());
                    }
                }
            }
            let profiles = tools
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    if let Some(ex) = examples.get(p.id.as_str()) {
                        p.examples.extend(ex.iter().cloned());
                    }
                    if let Some(pl) = plans.get(p.id.as_str()) {
                        p.plans.extend(pl.iter().cloned());
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
            if probe {
                let skills = tools
                    .iter()
                    .map(|t| (t.id.to_string(), t.skills.clone()))
                    .collect();
                let train = steps
                    .iter()
                    .filter(|s| fold_of(s) != f && !held_tools.contains(s.gold_tool.as_str()))
                    .map(|s| (s.request_id.clone(), s.gold_tool.clone()))
                    .collect();
                let top = tasks
                    .iter()
                    .map(|t| {
                        router
                            .route_top_k(t, 10)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|a| (a.agent.to_string(), a.score))
                            .collect()
                    })
                    .collect();
                let info = test
                    .iter()
                    .map(|s| {
                        let seen = examples.contains_key(s.gold_tool.as_str());
                        (s.request_id.clone(), s.gold_tool.clone(), seen)
                    })
                    .collect();
                probe_acc.push((top, info, train, skills));
            }
            let t0 = Instant::now();
            // Steps of one request are routed together, as one plan.
            let mut ranked: Vec<Vec<genesis_halo::Alternative>> = vec![Vec::new(); test.len()];
            if single {
                for (i, t) in tasks.iter().enumerate() {
                    ranked[i] = router.route_top_k(t, 3).unwrap_or_default();
                }
            } else {
                let mut by_req: HashMap<&str, Vec<usize>> = HashMap::new();
                for (i, s) in test.iter().enumerate() {
                    by_req.entry(s.request_id.as_str()).or_default().push(i);
                }
                for idx in by_req.values() {
                    let plan = router.route_all(idx.iter().map(|&i| &tasks[i]));
                    for (&i, d) in idx.iter().zip(&plan.decisions) {
                        if let Some(a) = &d.agent {
                            ranked[i].push(genesis_halo::Alternative {
                                agent: a.clone(),
                                score: d.score,
                            });
                            ranked[i].extend(
                                d.alternatives
                                    .iter()
                                    .take(if dump.is_some() { 15 } else { 2 })
                                    .cloned(),
                            );
                        }
                    }
                }
            }
            route_time += t0.elapsed().as_secs_f64();
            if dump.is_some() {
                for (s, top) in test.iter().zip(&ranked) {
                    let r: Vec<(String, f64)> =
                        top.iter().map(|a| (a.agent.to_string(), a.score)).collect();
                    let row = serde_json::json!({
                        "protocol": protocol,
                        "fold": f,
                        "request_id": s.request_id,
                        "text": s.step_text_masked,
                        "gold": s.gold_tool,
                        "ranked": r,
                    });
                    dump_out.push_str(&row.to_string());
                    dump_out.push('\n');
                }
            }
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
        if probe {
            probe::run(&probe_acc, &cfg.plan);
        }
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
    if let Some(path) = &dump {
        std::fs::write(path, dump_out)?;
    }
    Ok(())
}

/// Headroom check for the plan-context stage (`probe=1`), outside the router: each
/// step's top 10 (`route_top_k`, text only) are re-ranked with the shipped fit formula
/// (co-usage in the training requests, tag cosine with `unseen_tag_weight` otherwise)
/// against the other steps of the request, known exactly (oracle: their gold tools) or
/// as the softmax of their own top 10 (realistic).
mod probe {
    use super::ProbeFold;
    use genesis_halo::PlanConfig;
    use std::collections::{HashMap, HashSet};

    fn softmax(c: &[(String, f64)], t: f64) -> Vec<(String, f64)> {
        let Some(m) = c.first().map(|x| x.1) else {
            return Vec::new();
        };
        let e: Vec<f64> = c.iter().map(|x| ((x.1 - m) / t).exp()).collect();
        let z: f64 = e.iter().sum();
        c.iter().zip(e).map(|(x, e)| (x.0.clone(), e / z)).collect()
    }

    pub(super) fn run(folds: &[ProbeFold], cfg: &PlanConfig) {
        let (w, beta, t) = (
            f64::from(cfg.weight),
            f64::from(cfg.unseen_tag_weight),
            f64::from(cfg.temperature),
        );
        for oracle in [true, false] {
            // [steps whose gold tool has no examples, with examples] x [n, top-1]
            let mut res = [[0usize; 2]; 2];
            for (top, info, train, skills) in folds {
                let mut reqs: HashMap<&str, HashSet<&str>> = HashMap::new();
                for (r, tool) in train {
                    reqs.entry(r.as_str()).or_default().insert(tool.as_str());
                }
                let mut plans: HashMap<&str, f64> = HashMap::new();
                let mut together: HashMap<(&str, &str), f64> = HashMap::new();
                for set in reqs.values() {
                    for a in set {
                        *plans.entry(a).or_default() += 1.0;
                        for b in set {
                            if a != b {
                                *together.entry((a, b)).or_default() += 1.0;
                            }
                        }
                    }
                }
                let fit = |c: &str, x: &str| -> f64 {
                    if let (Some(_), Some(n)) = (plans.get(c), plans.get(x)) {
                        return together.get(&(c, x)).copied().unwrap_or(0.0) / (n + 1.0);
                    }
                    let (Some(a), Some(b)) = (skills.get(c), skills.get(x)) else {
                        return 0.0;
                    };
                    let k = a.iter().filter(|s| b.contains(s)).count() as f64;
                    if k == 0.0 {
                        0.0
                    } else {
                        beta * k / ((a.len() * b.len()) as f64).sqrt()
                    }
                };
                let mut by_req: HashMap<&str, Vec<usize>> = HashMap::new();
                for (i, (r, _, _)) in info.iter().enumerate() {
                    by_req.entry(r.as_str()).or_default().push(i);
                }
                for (i, (r, gold, seen)) in info.iter().enumerate() {
                    let ctx: Vec<Vec<(String, f64)>> = by_req[r.as_str()]
                        .iter()
                        .filter(|&&j| j != i)
                        .map(|&j| {
                            if oracle {
                                vec![(info[j].1.clone(), 1.0)]
                            } else {
                                softmax(&top[j], t)
                            }
                        })
                        .collect();
                    let mut best: Option<(&str, f64)> = None;
                    for (c, score) in &top[i] {
                        let mut sc = *score;
                        if !ctx.is_empty() {
                            let f: f64 = ctx
                                .iter()
                                .flat_map(|p| p.iter().map(|(x, q)| q * fit(c, x)))
                                .sum();
                            sc += w * f / ctx.len() as f64;
                        }
                        if best.is_none_or(|b| sc > b.1) {
                            best = Some((c, sc));
                        }
                    }
                    let r = &mut res[usize::from(*seen)];
                    r[0] += 1;
                    r[1] += usize::from(best.is_some_and(|b| b.0 == gold));
                }
            }
            let f = |a: usize, n: usize| a as f64 / n.max(1) as f64;
            println!(
                "probe ({}): top1 all {:.4}, gold tool has examples {:.4}, has none {:.4}",
                if oracle {
                    "oracle: other steps' gold tools"
                } else {
                    "realistic: other steps' top 10"
                },
                f(res[0][1] + res[1][1], res[0][0] + res[1][0]),
                f(res[1][1], res[1][0]),
                f(res[0][1], res[0][0]),
            );
        }
    }
}
