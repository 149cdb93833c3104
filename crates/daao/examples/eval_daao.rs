//! Evaluates DAAO's difficulty estimate as a router between a weak and a strong model on
//! RouteLLM outcomes (GSM8K, MMLU, MT-bench): does "send the hard ones to the strong
//! model" keep quality at a lower cost than random routing?
//!
//! Run: `cargo run --release -p genesis-daao --example eval_daao -- ../shared/data/daao/routellm`
//!
//! Reported per benchmark: AUC of the difficulty score for "the weak model fails"
//! (0.5 = no signal), and the quality of routing the top 30% / 50% hardest prompts to the
//! strong model against random routing at the same share, all-weak and all-strong.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::PathBuf;

use genesis_core::{Task, TaskId, TaskKind};
use genesis_daao::{DifficultyEstimator, HeuristicDifficulty};

struct Row {
    difficulty: f64,
    weak: f64,
    strong: f64,
}

fn load(path: &PathBuf) -> Vec<Row> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let est = HeuristicDifficulty;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let prompt = v["prompt"].as_str()?.to_owned();
            let (weak, strong) = if v.get("weak_score").is_some() {
                (
                    v["weak_score"].as_f64()? / 10.0,
                    v["strong_score"].as_f64()? / 10.0,
                )
            } else {
                (
                    f64::from(u8::from(v["weak_correct"].as_bool()?)),
                    f64::from(u8::from(v["strong_correct"].as_bool()?)),
                )
            };
            let task = Task::new(TaskId::new("p"), TaskKind::Generic, prompt);
            Some(Row {
                difficulty: est.estimate(&task),
                weak,
                strong,
            })
        })
        .collect()
}

/// AUC of `difficulty` for the weak model doing worse than the strong one.
fn auc(rows: &[Row]) -> f64 {
    let pos: Vec<f64> = rows
        .iter()
        .filter(|r| r.weak < r.strong)
        .map(|r| r.difficulty)
        .collect();
    let neg: Vec<f64> = rows
        .iter()
        .filter(|r| r.weak >= r.strong)
        .map(|r| r.difficulty)
        .collect();
    if pos.is_empty() || neg.is_empty() {
        return f64::NAN;
    }
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

/// Mean quality when the `share` hardest prompts go to the strong model.
fn routed(rows: &[Row], share: f64) -> f64 {
    let mut idx: Vec<usize> = (0..rows.len()).collect();
    idx.sort_by(|&a, &b| rows[b].difficulty.total_cmp(&rows[a].difficulty));
    let k = (rows.len() as f64 * share).round() as usize;
    let mut q = 0.0;
    for (rank, &i) in idx.iter().enumerate() {
        q += if rank < k {
            rows[i].strong
        } else {
            rows[i].weak
        };
    }
    q / rows.len() as f64
}

/// Expected quality of random routing at the same share.
fn random(rows: &[Row], share: f64) -> f64 {
    let n = rows.len() as f64;
    let weak: f64 = rows.iter().map(|r| r.weak).sum::<f64>() / n;
    let strong: f64 = rows.iter().map(|r| r.strong).sum::<f64>() / n;
    share * strong + (1.0 - share) * weak
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "../shared/data/daao/routellm".into()),
    );
    println!(
        "| set | prompts | AUC (weak fails) | all weak | all strong | random 30% | DAAO 30% | random 50% | DAAO 50% |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for name in [
        "gsm8k.dev.jsonl",
        "mmlu_25pct.dev.jsonl",
        "mt_bench.dev.jsonl",
    ] {
        let rows = load(&dir.join(name));
        if rows.is_empty() {
            eprintln!("no rows in {name}");
            continue;
        }
        let n = rows.len() as f64;
        let weak = rows.iter().map(|r| r.weak).sum::<f64>() / n;
        let strong = rows.iter().map(|r| r.strong).sum::<f64>() / n;
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            name.trim_end_matches(".dev.jsonl"),
            rows.len(),
            auc(&rows),
            weak,
            strong,
            random(&rows, 0.3),
            routed(&rows, 0.3),
            random(&rows, 0.5),
            routed(&rows, 0.5)
        );
    }
}
