//! `plan()` end to end on the heuristic path: screen → decompose → route → select
//! models → validate, plus the first two stages alone, and the SaaS plan as the server
//! makes it (shipped feature flags, Prometheus recorder installed).
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

    // As the server plans: the shipped feature flags evaluated on every plan (nine
    // flags; with the recorder, also the request's rollout cohorts as the server finds
    // and counts them), first with no metrics recorder (each flag-evaluation counter is a no-op),
    // then with the Prometheus recorder installed, so every counter, gauge and histogram
    // of the pipeline is recorded. Installing it is global, so this group runs last.
    let flags_file = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/feature_flags.json");
    let flags = match genesis::flags::SharedFlags::load(flags_file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot load {flags_file}: {e}");
            return;
        }
    };
    let with_flags = || match Orchestrator::builder().flags(flags.clone()).build() {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("cannot build the orchestrator with flags: {e}");
            None
        }
    };
    let Some(served) = with_flags() else { return };
    let mut group = c.benchmark_group("plan_served");
    group.bench_function("saas_request_flags", |b| {
        b.iter(|| served.plan_sync(black_box(SAAS)).map(|p| p.tasks.len()))
    });
    if let Err(e) = genesis::telemetry::install_prometheus_recorder() {
        eprintln!("cannot install the Prometheus recorder: {e}");
        group.finish();
        return;
    }
    // Built after the recorder, as the server does: the orchestrator keeps the
    // flag-evaluation counters it registers at its first plan.
    let Some(served) = with_flags() else { return };
    let Ok(plain) = Orchestrator::builder().build() else {
        return;
    };
    group.bench_function("saas_request_flags_prometheus", |b| {
        b.iter(|| as_the_server_plans(&served))
    });
    group.bench_function("saas_request_prometheus", |b| {
        b.iter(|| plain.plan_sync(black_box(SAAS)).map(|p| p.tasks.len()))
    });
    // The same with a rollout in progress: `new_router_rollout` at 5 %, as `genesis
    // deploy` writes it, so the subject's bucket is hashed on every plan.
    let rollout = match genesis::flags::FlagStore::load(flags_file).and_then(|mut store| {
        let five = genesis::flags::Percent::try_new(5.0)?;
        store.set_rollout_percent("new_router_rollout", five)?;
        Ok(store)
    }) {
        Ok(store) => genesis::flags::SharedFlags::new(store),
        Err(e) => {
            eprintln!("cannot set new_router_rollout to 5 %: {e}");
            group.finish();
            return;
        }
    };
    let Ok(rolling) = Orchestrator::builder().flags(rollout).build() else {
        group.finish();
        return;
    };
    group.bench_function("saas_request_flags_rollout5_prometheus", |b| {
        b.iter(|| as_the_server_plans(&rolling))
    });
    // The cohort step alone (a few hundred nanoseconds against a plan's ~17 µs: the
    // plans above cannot show it through the noise of a shared machine).
    group.bench_function("cohorts_flags_prometheus", |b| {
        b.iter(|| in_its_cohorts(&served))
    });
    group.bench_function("cohorts_rollout5_prometheus", |b| {
        b.iter(|| in_its_cohorts(&rolling))
    });
    group.finish();
}

/// The request's rollout cohorts, counted as the server counts a request (nothing when
/// no flag is in rollout).
fn in_its_cohorts(genesis: &Orchestrator) -> genesis::Cohorts {
    let cohorts = genesis.cohorts(black_box("anonymous"));
    if !cohorts.is_empty() {
        genesis
            .cohort_metrics()
            .record_request(cohorts, false, 0.000_05);
    }
    cohorts
}

/// What the server does for one plan request besides its HTTP work: the subject's
/// rollout cohorts (one flag lookup per pipeline flag), the plan, and the request
/// counted in its cohorts (nothing when no flag is in rollout).
fn as_the_server_plans(genesis: &Orchestrator) -> Option<usize> {
    in_its_cohorts(genesis);
    genesis
        .plan_sync(black_box(SAAS))
        .map(|p| p.tasks.len())
        .ok()
}

criterion_group!(benches, plan);
criterion_main!(benches);
