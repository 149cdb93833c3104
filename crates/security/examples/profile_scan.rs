//! Times the detector's stages on a 5 KB request (normalise, rules, model).
//!
//! ```text
//! cargo run --release -p genesis-security --example profile_scan
//! ```

#![allow(clippy::print_stdout)] // a command-line tool

use std::hint::black_box;
use std::time::Instant;

use genesis_security::{DetectorConfig, InjectionDetector, normalize::normalize};

fn time(name: &str, iters: u32, mut f: impl FnMut()) {
    f();
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    println!(
        "{name}: {:.1} µs",
        start.elapsed().as_secs_f64() * 1e6 / f64::from(iters)
    );
}

fn main() -> anyhow::Result<()> {
    let base = "Please read the quarterly sales report for the north-east region, summarise the three biggest changes against last quarter, convert the summary into a short slide deck with one chart per change, and email it to the finance team by Friday. ";
    let text: String = base
        .repeat(5_000 / base.len() + 1)
        .chars()
        .take(5_000)
        .collect();
    let full = InjectionDetector::default();
    let rules_only = InjectionDetector::new(DetectorConfig {
        model_enabled: false,
        ..DetectorConfig::default()
    })?;
    let model_only = InjectionDetector::new(DetectorConfig {
        rules_enabled: false,
        ..DetectorConfig::default()
    })?;
    time("normalize 5KB", 200, || {
        black_box(normalize(black_box(&text)));
    });
    time("scan 5KB (full)", 200, || {
        black_box(full.scan(black_box(&text)));
    });
    time("score 5KB (full, no reasons)", 200, || {
        black_box(full.score(black_box(&text)));
    });
    time("scan 5KB (rules only)", 200, || {
        black_box(rules_only.scan(black_box(&text)));
    });
    time("scan 5KB (model only)", 200, || {
        black_box(model_only.scan(black_box(&text)));
    });
    Ok(())
}
