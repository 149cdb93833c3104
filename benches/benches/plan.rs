//! `plan()` end to end on the heuristic path: screen → decompose → route → select
//! models → validate, plus the first two stages alone.
//!
//! Run: `cargo bench -p genesis-benches --bench plan` (mimalloc, as the binaries use;
//! add `--features system-allocator` for the system allocator)

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use genesis::Orchestrator;
use genesis::htdag::{HeuristicDecomposer, Limits};

/// The binaries' allocator, so the numbers are what `genesis` and `genesis-server` do;
/// `--features system-allocator` measures with the system allocator instead.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SAAS: &str = "Build a SaaS business for invoices";
const COMPOUND: &str = "Launch a marketing campaign for our new app and analyse the results";

fn plan(c: &mut Criterion) {
    let genesis = match Orchestrator::builder().build() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("cannot build the orchestrator: {e}");
            return;
        }
    };
    let mut group = c.benchmark_group("plan");
    group.bench_function("saas_request", |b| {
        b.iter(|| genesis.plan_sync(black_box(SAAS)).map(|p| p.tasks.len()))
    });
    group.bench_function("compound_request", |b| {
        b.iter(|| {
            genesis
                .plan_sync(black_box(COMPOUND))
                .map(|p| p.tasks.len())
        })
    });
    group.finish();

    // Stages of the SaaS plan on their own, to show where the time goes.
    let mut stages = c.benchmark_group("plan_stages");
    stages.bench_function("screen", |b| {
        b.iter(|| genesis.screen(black_box(SAAS)).is_ok())
    });
    let decomposer = HeuristicDecomposer::new();
    let limits = Limits::default();
    stages.bench_function("decompose", |b| {
        b.iter(|| {
            decomposer
                .decompose_sync(black_box(SAAS), &limits)
                .map(|d| d.len())
        })
    });
    stages.finish();
}

criterion_group!(benches, plan);
criterion_main!(benches);
