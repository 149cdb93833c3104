//! Executor overhead per task with no-op agents: a 100-task chain and a 100-task
//! fan-out (one root, 99 independent children).
//!
//! Run: `cargo bench -p genesis-benches --bench executor` (mimalloc, as the binaries
//! use; `--features system-allocator` measures with the system allocator instead).
//! Cloning the plan that `execute` consumes is set-up, outside the measured time.

#![allow(missing_docs)]

#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use genesis::Orchestrator;
use genesis::core::{Task, TaskId, TaskKind};
use genesis::htdag::{Limits, TaskDag};
use genesis::run::{Agent, AgentError, AgentOutput, AgentRequest, AgentSet, ExecutorConfig};

struct Noop;

#[genesis::llm::async_trait]
impl Agent for Noop {
    async fn execute(&self, _: AgentRequest) -> Result<AgentOutput, AgentError> {
        Ok(AgentOutput::default())
    }
}

fn task(i: usize) -> Task {
    Task::new(
        TaskId::new(format!("t{i}")),
        TaskKind::Implement,
        format!("Implement step {i} of the pipeline"),
    )
}

fn chain(n: usize) -> TaskDag {
    let mut dag = TaskDag::new(Limits::default());
    for i in 0..n {
        let _ = dag.add_task(task(i), None);
        if i > 0 {
            let _ = dag.add_dependency(
                &TaskId::new(format!("t{}", i - 1)),
                &TaskId::new(format!("t{i}")),
            );
        }
    }
    dag
}

fn fan_out(n: usize) -> TaskDag {
    let mut dag = TaskDag::new(Limits::default());
    for i in 0..n {
        let _ = dag.add_task(task(i), None);
        if i > 0 {
            let _ = dag.add_dependency(&TaskId::new("t0"), &TaskId::new(format!("t{i}")));
        }
    }
    dag
}

fn executor(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        return;
    };
    let config = ExecutorConfig {
        // Measure scheduling, not screening: no-op outputs are empty anyway.
        screen_outputs: false,
        ..ExecutorConfig::default()
    };
    let Ok(genesis) = Orchestrator::builder()
        .agents(AgentSet::new().with_fallback(Arc::new(Noop)))
        .executor_config(config)
        .build()
    else {
        return;
    };
    let mut group = c.benchmark_group("executor");
    for (name, dag) in [("chain", chain(100)), ("fan_out", fan_out(100))] {
        let plan = match genesis.plan_dag("Implement the pipeline", &dag, &Default::default()) {
            Ok(p) => p,
            Err(genesis::GenesisError::InvalidPlan { plan, .. }) => *plan,
            Err(e) => {
                eprintln!("cannot plan the {name} dag: {e}");
                continue;
            }
        };
        group.throughput(Throughput::Elements(plan.tasks.len() as u64));
        group.bench_with_input(
            BenchmarkId::new(name, plan.tasks.len()),
            &plan,
            |b, plan| {
                b.to_async(&rt).iter_batched(
                    || plan.clone(),
                    |plan| async {
                        match genesis.execute(plan, Default::default()) {
                            Ok(h) => h.wait().await.tasks.len(),
                            Err(_) => 0,
                        }
                    },
                    BatchSize::SmallInput,
                );
            },
        );
    }
    group.finish();
}

criterion_group!(benches, executor);
criterion_main!(benches);
