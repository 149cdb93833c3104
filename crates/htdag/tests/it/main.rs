//! Property tests: whatever sequence of operations is applied, the DAG stays acyclic,
//! within its limits, and a topological order respects every edge.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use genesis_core::{Task, TaskId, TaskKind};
use genesis_htdag::{DagUpdate, HeuristicDecomposer, Limits, TaskDag};
use proptest::prelude::*;

mod plans;

#[derive(Debug, Clone)]
enum Op {
    /// Add a task under the task at this index (or top level when out of range).
    Add { parent: usize },
    /// Declare a dependency between two existing tasks (indices modulo the count).
    Depend { from: usize, to: usize },
    /// Apply an update of `n` subtasks under a parent with random internal deps.
    Update {
        parent: usize,
        n: usize,
        deps: Vec<(usize, usize)>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..40).prop_map(|parent| Op::Add { parent }),
        (0usize..40, 0usize..40).prop_map(|(from, to)| Op::Depend { from, to }),
        (
            0usize..40,
            0usize..25,
            proptest::collection::vec((0usize..60, 0usize..60), 0..6)
        )
            .prop_map(|(parent, n, deps)| Op::Update { parent, n, deps }),
    ]
}

fn check_invariants(dag: &TaskDag) {
    let limits = dag.limits();
    assert!(dag.len() <= limits.max_tasks);
    assert!(dag.depth() <= limits.max_depth);
    assert!(dag.updates_applied() <= limits.max_updates);
    let order = dag.topological_order();
    assert_eq!(order.len(), dag.len(), "dag has a cycle");
    let pos: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    for (from, to, _) in dag.edges() {
        assert!(
            pos[from.as_str()] < pos[to.as_str()],
            "edge {from} -> {to} violates order"
        );
    }
    // Positions name the same order; taking the DAG apart keeps insertion order.
    let nodes: Vec<&genesis_htdag::TaskNode> = dag.nodes().collect();
    let by_position: Vec<&str> = dag
        .topological_positions()
        .into_iter()
        .map(|p| nodes[p].task.id.as_str())
        .collect();
    let by_id: Vec<&str> = order.iter().map(|id| id.as_str()).collect();
    assert_eq!(by_position, by_id);
    let owned = dag.clone().into_nodes();
    assert_eq!(owned.len(), nodes.len());
    for (a, b) in owned.iter().zip(&nodes) {
        assert_eq!(a, *b);
    }
    for node in dag.nodes() {
        if let Some(parent) = &node.parent {
            assert_eq!(dag.get(parent.as_str()).unwrap().depth + 1, node.depth);
        } else {
            assert_eq!(node.depth, 1);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_sequence_of_updates_keeps_the_dag_valid(ops in proptest::collection::vec(op(), 1..80)) {
        let limits = Limits { max_tasks: 60, max_depth: 4, ..Limits::default() };
        let mut dag = TaskDag::new(limits);
        let mut next = 0usize;
        let mut ids: Vec<TaskId> = Vec::new();
        let mut fresh = |ids: &mut Vec<TaskId>| {
            next += 1;
            let id = TaskId::new(format!("n{next}"));
            ids.push(id.clone());
            Task::new(id, TaskKind::Generic, "x")
        };
        for op in ops {
            let before = dag.len();
            match op {
                Op::Add { parent } => {
                    let parent = ids.get(parent).cloned();
                    let task = fresh(&mut ids);
                    let id = task.id.clone();
                    if dag.add_task(task, parent.as_ref()).is_err() {
                        ids.retain(|i| *i != id);
                        prop_assert_eq!(dag.len(), before);
                    }
                }
                Op::Depend { from, to } => {
                    if !ids.is_empty() {
                        let a = ids[from % ids.len()].clone();
                        let b = ids[to % ids.len()].clone();
                        let _ = dag.add_dependency(&a, &b);
                    }
                }
                Op::Update { parent, n, deps } => {
                    let parent = ids.get(parent).cloned();
                    let start = ids.len();
                    let subtasks: Vec<Task> = (0..n).map(|_| fresh(&mut ids)).collect();
                    let all = ids.clone();
                    let deps = deps
                        .into_iter()
                        .filter(|_| !all.is_empty())
                        .map(|(a, b)| (all[a % all.len()].clone(), all[b % all.len()].clone()))
                        .collect();
                    let updates = dag.updates_applied();
                    if dag.apply_update(DagUpdate { parent, subtasks, dependencies: deps }).is_err() {
                        ids.truncate(start);
                        prop_assert_eq!(dag.len(), before);
                        prop_assert_eq!(dag.updates_applied(), updates);
                    }
                }
            }
            check_invariants(&dag);
        }
    }

    #[test]
    fn heuristic_decomposition_is_always_valid(request in "[a-zA-Z ,.;]{1,400}") {
        let limits = Limits::default();
        match HeuristicDecomposer::new().decompose_sync(&request, &limits) {
            Ok(dag) => {
                prop_assert!(!dag.is_empty());
                check_invariants(&dag);
            }
            Err(e) => prop_assert!(request.trim().is_empty(), "{e}"),
        }
    }
}

#[test]
fn decomposing_known_families_yields_valid_dags() {
    for request in [
        "Build a SaaS business for invoices",
        "Launch a marketing campaign for our new app and analyse the results",
        "Fix the crash on login, then deploy the fix to production and monitor error rates",
        "Research vector databases. Write a report comparing them. Present it to the team",
    ] {
        let dag = HeuristicDecomposer::new()
            .decompose_sync(request, &Limits::default())
            .unwrap();
        check_invariants(&dag);
        assert!(dag.len() >= 3, "{request}: {} tasks", dag.len());
    }
}
