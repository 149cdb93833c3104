//! Measures flag evaluation latency on the shipped defaults (release build):
//! `cargo run --release -p genesis-feature-flags --example eval_latency`.
//!
//! Prints nanoseconds per `evaluate` call for an `all` flag (no hashing) and for a
//! progressive flag (SHA-256 bucket), over 1 000 000 distinct subjects.

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use genesis_feature_flags::{FlagError, FlagStore};

fn main() -> Result<(), FlagError> {
    let store = FlagStore::builtin_defaults()?;
    let subjects: Vec<String> = (0..1_000_000).map(|i| format!("user-{i}")).collect();
    let now = SystemTime::now();
    let mut out = std::io::stderr().lock();
    for flag in ["orchestration_enabled", "new_router_rollout"] {
        let mut on = 0usize;
        let start = Instant::now();
        for s in &subjects {
            on += usize::from(black_box(store.evaluate(black_box(flag), s, now)).enabled);
        }
        let per_call = start.elapsed().as_nanos() as f64 / subjects.len() as f64;
        use std::io::Write;
        let _ = writeln!(
            out,
            "{flag}: {per_call:.0} ns/evaluate ({on} of {} subjects on)",
            subjects.len()
        );
    }
    Ok(())
}
