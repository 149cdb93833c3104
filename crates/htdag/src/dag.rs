//! The hierarchical task DAG.

use std::collections::{HashSet, VecDeque};

use genesis_core::fasthash::FxHashMap;
use genesis_core::{Task, TaskId};
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences, NodeIndexable};
use serde::{Deserialize, Serialize};

use crate::{HtdagError, Limits};

/// Why one task must wait for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// Declared: the target needs the source's result.
    Dependency,
    /// Hierarchy: a parent (composite) task completes after its subtasks, integrating
    /// their results.
    Subtask,
    /// Derived: a subtask inherits its parent's declared dependencies, so it cannot
    /// start before the work its parent waits for.
    Inherited,
}

/// A task placed in the hierarchy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskNode {
    /// The task itself.
    pub task: Task,
    /// The composite task this one refines, if any.
    pub parent: Option<TaskId>,
    /// Hierarchy level: 1 for top-level tasks.
    pub depth: usize,
}

/// A hierarchical task DAG over petgraph.
///
/// Nodes are [`TaskNode`]s; an edge `a → b` means *b waits for a*. Three edge kinds keep
/// hierarchy and data flow in one graph ([`EdgeKind`]), so every scheduler question —
/// topological order, ready set, cycle check — is a plain graph question.
///
/// Invariants (held by every public method, checked by proptest):
/// the graph is acyclic, ids are unique, no task is deeper than `limits.max_depth`, the
/// task count never exceeds `limits.max_tasks`. A failed operation leaves the DAG unchanged.
#[derive(Debug, Clone)]
pub struct TaskDag {
    graph: StableDiGraph<TaskNode, EdgeKind>,
    /// Ids are made by decomposers and checked against the limits, so the fast hasher
    /// is safe here (the map never holds more than `limits.max_tasks` keys).
    index: FxHashMap<TaskId, NodeIndex>,
    /// Insertion order, so iteration and serialisation are deterministic.
    order: Vec<NodeIndex>,
    limits: Limits,
    updates: usize,
    scratch: Scratch,
    /// Kahn order and generations, computed on first use and dropped by every change to
    /// the graph, so topological order, generations and the acyclicity check share one
    /// pass.
    topo: std::sync::OnceLock<Topo>,
}

impl Default for TaskDag {
    fn default() -> Self {
        TaskDag::new(Limits::default())
    }
}

impl TaskDag {
    /// An empty DAG held to `limits`.
    pub fn new(limits: Limits) -> Self {
        TaskDag {
            graph: StableDiGraph::new(),
            index: FxHashMap::default(),
            order: Vec::new(),
            limits,
            updates: 0,
            scratch: Scratch::default(),
            topo: std::sync::OnceLock::new(),
        }
    }

    /// Reserves room for `additional` more tasks (a decomposer that knows its size
    /// avoids regrowing the graph and the index).
    pub fn reserve(&mut self, additional: usize) {
        let n = additional.min(self.limits.max_tasks);
        self.graph.reserve_nodes(n);
        self.graph.reserve_edges(n * 2);
        self.index.reserve(n);
        self.order.reserve(n);
    }

    /// The limits this DAG enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when the DAG holds no task.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Dynamic updates applied so far.
    pub fn updates_applied(&self) -> usize {
        self.updates
    }

    /// Sets the count of dynamic updates already applied, for a DAG rebuilt from a
    /// stored plan that holds them (a resumed run): later updates are numbered and held
    /// to [`Limits::max_updates`] from there.
    pub fn restore_updates(&mut self, applied: usize) {
        self.updates = applied;
    }

    /// Adds a task under `parent` (or at the top level). The new task inherits the
    /// parent's declared dependencies and the parent waits for it.
    ///
    /// # Errors
    /// Empty or duplicate id, unknown parent, depth or task-count limit.
    pub fn add_task(
        &mut self,
        task: Task,
        parent: Option<&TaskId>,
    ) -> Result<&TaskNode, HtdagError> {
        self.topo.take();
        if task.id.as_str().trim().is_empty() {
            return Err(HtdagError::EmptyTaskId);
        }
        if self.index.contains_key(&task.id) {
            return Err(HtdagError::DuplicateTask { id: task.id });
        }
        if self.len() + 1 > self.limits.max_tasks {
            return Err(HtdagError::TooManyTasks {
                count: self.len() + 1,
                max: self.limits.max_tasks,
            });
        }
        let (parent_ix, depth) = match parent {
            Some(p) => {
                let ix = self.ix(p)?;
                (Some(ix), self.graph[ix].depth + 1)
            }
            None => (None, 1),
        };
        if depth > self.limits.max_depth {
            return Err(HtdagError::TooDeep {
                id: task.id,
                depth,
                max: self.limits.max_depth,
            });
        }
        let id = task.id.clone();
        let ix = self.graph.add_node(TaskNode {
            task,
            parent: parent.cloned(),
            depth,
        });
        self.index.insert(id, ix);
        self.order.push(ix);
        if let Some(pix) = parent_ix {
            // The parent integrates its subtasks: it waits for the new task.
            self.graph.add_edge(ix, pix, EdgeKind::Subtask);
            // The new task waits for whatever the parent was declared to wait for. Most
            // parents wait for nothing yet: only then is no list needed.
            let waits = |e: &petgraph::stable_graph::EdgeReference<'_, EdgeKind>| {
                matches!(e.weight(), EdgeKind::Dependency | EdgeKind::Inherited)
            };
            if self
                .graph
                .edges_directed(pix, Direction::Incoming)
                .any(|e| waits(&e))
            {
                let inherited: Vec<NodeIndex> = self
                    .graph
                    .edges_directed(pix, Direction::Incoming)
                    .filter(|e| waits(e))
                    .map(|e| e.source())
                    .collect();
                for src in inherited {
                    self.graph.add_edge(src, ix, EdgeKind::Inherited);
                }
            }
        }
        Ok(&self.graph[ix])
    }

    /// Declares that `to` needs the result of `from`. Every subtask of `to` (at any
    /// depth) inherits the dependency.
    ///
    /// # Errors
    /// Unknown ids, a self-dependency, or [`HtdagError::CycleDetected`] with the path
    /// the new edge would close.
    pub fn add_dependency(&mut self, from: &TaskId, to: &TaskId) -> Result<(), HtdagError> {
        let a = self.ix(from)?;
        let b = self.ix(to)?;
        if a == b {
            return Err(HtdagError::SelfDependency { id: from.clone() });
        }
        if self.has_edge_kind(a, b, EdgeKind::Dependency) {
            return Ok(());
        }
        // Targets: `to` and all of its descendants; each gets an edge from `from`.
        self.topo.take();
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.link(a, b, from, to, &mut scratch);
        self.scratch = scratch;
        result
    }

    /// The body of [`TaskDag::add_dependency`], with reusable buffers (no allocation
    /// once the buffers have grown to the DAG's size).
    fn link(
        &mut self,
        a: NodeIndex,
        b: NodeIndex,
        from: &TaskId,
        to: &TaskId,
        scratch: &mut Scratch,
    ) -> Result<(), HtdagError> {
        let targets = &mut scratch.targets;
        targets.clear();
        targets.push(b);
        let mut i = 0;
        while i < targets.len() {
            let t = targets[i];
            targets.extend(
                self.graph
                    .edges_directed(t, Direction::Incoming)
                    .filter(|e| *e.weight() == EdgeKind::Subtask)
                    .map(|e| e.source()),
            );
            i += 1;
        }
        if targets.contains(&a) {
            return Err(HtdagError::CycleDetected {
                path: vec![from.clone(), to.clone(), from.clone()],
            });
        }
        // The new edges close a cycle exactly when `from` is reachable from a target.
        if let Some(path) =
            self.path_from_any(&scratch.targets, a, &mut scratch.prev, &mut scratch.queue)
        {
            let mut cycle: Vec<TaskId> = Vec::with_capacity(path.len() + 1);
            cycle.push(from.clone());
            cycle.extend(path.into_iter().map(|ix| self.graph[ix].task.id.clone()));
            return Err(HtdagError::CycleDetected { path: cycle });
        }
        self.graph.add_edge(a, b, EdgeKind::Dependency);
        for &t in &scratch.targets[1..] {
            if !self.has_edge(a, t) {
                self.graph.add_edge(a, t, EdgeKind::Inherited);
            }
        }
        Ok(())
    }

    /// Applies a dynamic update atomically: all of it or none of it.
    ///
    /// # Errors
    /// The update and update-count limits, plus any error of [`TaskDag::add_task`] or
    /// [`TaskDag::add_dependency`]; on error the DAG is exactly as before.
    pub fn apply_update(&mut self, update: DagUpdate) -> Result<(), HtdagError> {
        if self.updates >= self.limits.max_updates {
            return Err(HtdagError::TooManyUpdates {
                count: self.updates,
                max: self.limits.max_updates,
            });
        }
        if update.subtasks.len() > self.limits.max_subtasks_per_update {
            return Err(HtdagError::TooManySubtasks {
                count: update.subtasks.len(),
                max: self.limits.max_subtasks_per_update,
            });
        }
        let mut next = self.clone();
        for task in update.subtasks {
            next.add_task(task, update.parent.as_ref())?;
        }
        for (from, to) in &update.dependencies {
            next.add_dependency(from, to)?;
        }
        next.updates += 1;
        *self = next;
        Ok(())
    }

    /// The node for `id`.
    pub fn get(&self, id: &str) -> Option<&TaskNode> {
        self.index.get(id).map(|&ix| &self.graph[ix])
    }

    /// The task for `id`.
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.get(id).map(|n| &n.task)
    }

    /// True when `id` is in the DAG.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Replaces the limits, for a DAG built under other (wider) limits that the caller
    /// has checked it fits: the heuristic decomposer's prebuilt templates.
    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Calls `f` with each task's insertion position and description, to rewrite the
    /// descriptions in place (the structure, and so the cached topological order, stays
    /// as it is).
    pub(crate) fn rewrite_descriptions(&mut self, mut f: impl FnMut(usize, &mut String)) {
        for (position, &ix) in self.order.iter().enumerate() {
            if let Some(node) = self.graph.node_weight_mut(ix) {
                f(position, &mut node.task.description);
            }
        }
    }

    /// Each task's parent as an insertion position (what [`TaskDag::nodes`] yields), in
    /// insertion order: the hierarchy without id lookups.
    pub fn parent_positions(&self) -> Vec<Option<usize>> {
        let position = &self.topo().position;
        self.order
            .iter()
            .map(|&ix| {
                self.graph
                    .edges_directed(ix, Direction::Outgoing)
                    .find(|e| *e.weight() == EdgeKind::Subtask)
                    .map(|e| position[e.target().index()])
            })
            .collect()
    }

    /// All nodes in insertion order.
    pub fn nodes(&self) -> impl ExactSizeIterator<Item = &TaskNode> + '_ {
        self.order.iter().map(|&ix| &self.graph[ix])
    }

    /// All tasks in insertion order.
    pub fn tasks(&self) -> impl ExactSizeIterator<Item = &Task> + '_ {
        self.nodes().map(|n| &n.task)
    }

    /// Direct subtasks of `id`, in insertion order.
    pub fn children(&self, id: &str) -> Vec<&TaskId> {
        self.nodes()
            .filter(|n| n.parent.as_ref().is_some_and(|p| p.as_str() == id))
            .map(|n| &n.task.id)
            .collect()
    }

    /// True when `id` has no subtasks (an atomic task).
    pub fn is_leaf(&self, id: &str) -> bool {
        self.index.get(id).is_some_and(|&ix| {
            !self
                .graph
                .edges_directed(ix, Direction::Incoming)
                .any(|e| *e.weight() == EdgeKind::Subtask)
        })
    }

    /// Tasks `id` waits for (every edge kind: declared dependencies, inherited ones and,
    /// for a parent, its children), deduplicated, in plan order (the order the tasks were
    /// added), whatever order the edges were added in. A dependent task therefore gets
    /// its inputs in plan order, and [`TaskDag::declared_dependencies`] is in the same
    /// order.
    pub fn prerequisites(&self, id: &str) -> Vec<&TaskId> {
        self.neighbours_in_plan_order(id, Direction::Incoming)
    }

    /// Tasks `id` was declared to depend on (only [`EdgeKind::Dependency`]).
    pub fn declared_dependencies(&self, id: &str) -> Vec<&TaskId> {
        let Some(&ix) = self.index.get(id) else {
            return Vec::new();
        };
        let mut deps: Vec<(usize, &TaskId)> = self
            .graph
            .edges_directed(ix, Direction::Incoming)
            .filter(|e| *e.weight() == EdgeKind::Dependency)
            .map(|e| (e.source().index(), &self.graph[e.source()].task.id))
            .collect();
        deps.sort_by_key(|(i, _)| *i);
        deps.into_iter().map(|(_, id)| id).collect()
    }

    /// [`TaskDag::declared_dependencies`] of every task at once, in insertion order:
    /// one pass over the edges instead of a lookup per task.
    pub fn declared_dependency_lists(&self) -> Vec<Vec<TaskId>> {
        let position = &self.topo().position;
        let mut lists: Vec<Vec<(usize, &TaskId)>> = vec![Vec::new(); self.order.len()];
        for e in self.graph.edge_references() {
            if *e.weight() == EdgeKind::Dependency
                && let Some(list) = lists.get_mut(position[e.target().index()])
            {
                list.push((e.source().index(), &self.graph[e.source()].task.id));
            }
        }
        lists
            .into_iter()
            .map(|mut deps| {
                deps.sort_by_key(|(i, _)| *i);
                deps.into_iter().map(|(_, id)| id.clone()).collect()
            })
            .collect()
    }

    /// Tasks that wait for `id` (every edge kind), deduplicated, in plan order.
    pub fn dependents(&self, id: &str) -> Vec<&TaskId> {
        self.neighbours_in_plan_order(id, Direction::Outgoing)
    }

    /// The tasks at the other end of `id`'s edges in `direction`, deduplicated, sorted
    /// by node index: nodes are never removed, so that is the order tasks were added.
    /// (petgraph lists a node's edges newest first.)
    fn neighbours_in_plan_order(&self, id: &str, direction: Direction) -> Vec<&TaskId> {
        let Some(&ix) = self.index.get(id) else {
            return Vec::new();
        };
        let mut nodes: Vec<NodeIndex> = self.graph.neighbors_directed(ix, direction).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes.into_iter().map(|n| &self.graph[n].task.id).collect()
    }

    /// All edges as `(from, to, kind)`.
    pub fn edges(&self) -> impl Iterator<Item = (&TaskId, &TaskId, EdgeKind)> + '_ {
        self.graph.edge_references().map(|e| {
            (
                &self.graph[e.source()].task.id,
                &self.graph[e.target()].task.id,
                *e.weight(),
            )
        })
    }

    /// A topological order (every task after everything it waits for). Ties are broken
    /// by insertion order, so the order is deterministic.
    pub fn topological_order(&self) -> Vec<&TaskId> {
        self.topo_indices()
            .iter()
            .map(|&ix| &self.graph[ix].task.id)
            .collect()
    }

    /// A topological order as positions in insertion order (what [`TaskDag::nodes`]
    /// yields): the same order as [`TaskDag::topological_order`].
    pub fn topological_positions(&self) -> Vec<usize> {
        let position = &self.topo().position;
        self.topo_indices()
            .iter()
            .map(|ix| position[ix.index()])
            .collect()
    }

    /// Takes the DAG apart into its nodes, in insertion order, without copying them.
    pub fn into_nodes(self) -> Vec<TaskNode> {
        let mut slots: Vec<Option<TaskNode>> = Vec::new();
        slots.resize_with(self.graph.node_bound(), || None);
        let (nodes, _edges) = self.graph.into_nodes_edges_iters();
        for n in nodes {
            slots[n.index.index()] = Some(n.weight);
        }
        let mut out = Vec::with_capacity(self.order.len());
        out.extend(self.order.iter().filter_map(|ix| slots[ix.index()].take()));
        out
    }

    /// Kahn's algorithm over insertion order with dense per-node vectors (no hashing);
    /// the graph is acyclic by construction.
    /// Each node's insertion position, by node index (`usize::MAX` for free slots).
    fn positions(&self) -> Vec<usize> {
        let mut position = vec![usize::MAX; self.graph.node_bound()];
        for (i, ix) in self.order.iter().enumerate() {
            position[ix.index()] = i;
        }
        position
    }

    fn topo_indices(&self) -> &[NodeIndex] {
        &self.topo().order
    }

    fn topo(&self) -> &Topo {
        self.topo.get_or_init(|| {
            let order = self.kahn();
            // Generations: a task's level is one more than its deepest prerequisite's.
            let bound = self.graph.node_bound();
            let position = self.positions();
            let mut level = vec![0usize; bound];
            let mut count: Vec<usize> = Vec::new();
            for &ix in &order {
                let l = self
                    .graph
                    .edges_directed(ix, Direction::Incoming)
                    .map(|e| level[e.source().index()] + 1)
                    .max()
                    .unwrap_or(0);
                level[ix.index()] = l;
                if count.len() <= l {
                    count.resize(l + 1, 0);
                }
                count[l] += 1;
            }
            // Counting sort by level, stable in topological order.
            let mut ends = Vec::with_capacity(count.len());
            let mut total = 0;
            for c in &count {
                total += c;
                ends.push(total);
            }
            let mut next: Vec<usize> = ends.iter().zip(&count).map(|(end, c)| end - c).collect();
            let mut generations = vec![0usize; total];
            for &ix in &order {
                let slot = &mut next[level[ix.index()]];
                generations[*slot] = position[ix.index()];
                *slot += 1;
            }
            Topo {
                order,
                generations,
                generation_ends: ends,
                position,
            }
        })
    }

    fn kahn(&self) -> Vec<NodeIndex> {
        let bound = self.graph.node_bound();
        let mut indegree = vec![0u32; bound];
        for e in self.graph.edge_references() {
            indegree[e.target().index()] += 1;
        }
        let mut queue: VecDeque<NodeIndex> = self
            .order
            .iter()
            .copied()
            .filter(|ix| indegree[ix.index()] == 0)
            .collect();
        let mut out = Vec::with_capacity(self.len());
        let mut next: Vec<NodeIndex> = Vec::new();
        while let Some(ix) = queue.pop_front() {
            out.push(ix);
            next.clear();
            for e in self.graph.edges_directed(ix, Direction::Outgoing) {
                let d = &mut indegree[e.target().index()];
                *d -= 1;
                if *d == 0 {
                    next.push(e.target());
                }
            }
            next.sort_unstable_by_key(|n| n.index());
            queue.extend(next.iter().copied());
        }
        out
    }

    /// Tasks not in `done` whose prerequisites are all in `done`.
    pub fn ready_set<S>(&self, done: &HashSet<S>) -> Vec<&TaskId>
    where
        S: std::hash::Hash + Eq + std::borrow::Borrow<str>,
    {
        self.nodes()
            .filter(|n| !done.contains(n.task.id.as_str()))
            .filter(|n| {
                self.prerequisites(n.task.id.as_str())
                    .iter()
                    .all(|p| done.contains(p.as_str()))
            })
            .map(|n| &n.task.id)
            .collect()
    }

    /// Deepest hierarchy level (0 for an empty DAG).
    pub fn depth(&self) -> usize {
        self.nodes().map(|n| n.depth).max().unwrap_or(0)
    }

    /// Tasks grouped by the earliest step at which they can run with unlimited
    /// parallelism: generation 0 waits for nothing, generation `k` waits only for tasks of
    /// earlier generations. Tasks of one generation can run at the same time, which is
    /// what per-agent concurrency limits are about.
    pub fn generations(&self) -> Vec<Vec<&TaskId>> {
        self.generation_positions()
            .map(|generation| {
                generation
                    .iter()
                    .filter_map(|&p| self.order.get(p))
                    .map(|&ix| &self.graph[ix].task.id)
                    .collect()
            })
            .collect()
    }

    /// [`TaskDag::generations`] as positions in insertion order (what
    /// [`TaskDag::nodes`] yields), for callers that index nodes instead of looking ids
    /// up. Cached with the topological order.
    pub fn generation_positions(&self) -> impl Iterator<Item = &[usize]> + '_ {
        let topo = self.topo();
        let mut start = 0;
        topo.generation_ends.iter().map(move |&end| {
            let generation = topo.generations.get(start..end).unwrap_or_default();
            start = end;
            generation
        })
    }

    /// Number of tasks on the longest chain of waits (the minimum number of sequential
    /// steps to finish the DAG with unlimited parallelism).
    pub fn critical_path_len(&self) -> usize {
        let mut longest = vec![0usize; self.graph.node_bound()];
        let mut best = 0;
        for &ix in self.topo_indices() {
            let l = self
                .graph
                .edges_directed(ix, Direction::Incoming)
                .map(|e| longest[e.source().index()])
                .max()
                .unwrap_or(0)
                + 1;
            longest[ix.index()] = l;
            best = best.max(l);
        }
        best
    }

    /// True when the graph has no cycle. Always true for a DAG built through this API;
    /// exposed for tests and for validating DAGs assembled elsewhere.
    pub fn is_acyclic(&self) -> bool {
        self.topo_indices().len() == self.len()
    }

    fn ix(&self, id: &TaskId) -> Result<NodeIndex, HtdagError> {
        self.index
            .get(id)
            .copied()
            .ok_or_else(|| HtdagError::UnknownTask { id: id.clone() })
    }

    fn has_edge(&self, a: NodeIndex, b: NodeIndex) -> bool {
        self.graph.find_edge(a, b).is_some()
    }

    fn has_edge_kind(&self, a: NodeIndex, b: NodeIndex, kind: EdgeKind) -> bool {
        self.graph
            .edges_connecting(a, b)
            .any(|e| *e.weight() == kind)
    }

    /// A shortest path from one of `sources` to `to` following edges, if one exists
    /// (multi-source BFS; sources are tried in order, so the first source's paths win
    /// ties). `prev` and `queue` are reused buffers.
    fn path_from_any(
        &self,
        sources: &[NodeIndex],
        to: NodeIndex,
        prev: &mut Vec<u32>,
        queue: &mut VecDeque<NodeIndex>,
    ) -> Option<Vec<NodeIndex>> {
        const NONE: u32 = u32::MAX;
        // Nothing reaches a task that waits for nothing: the common case when tasks are
        // linked in the order they were added.
        self.graph.edges_directed(to, Direction::Incoming).next()?;
        prev.clear();
        prev.resize(self.graph.node_bound(), NONE);
        queue.clear();
        for &s in sources {
            if prev[s.index()] == NONE {
                prev[s.index()] = s.index() as u32;
                queue.push_back(s);
            }
        }
        while let Some(n) = queue.pop_front() {
            if n == to {
                let mut path = vec![to];
                let mut cur = to;
                while prev[cur.index()] as usize != cur.index() {
                    cur = NodeIndex::new(prev[cur.index()] as usize);
                    path.push(cur);
                }
                path.reverse();
                return Some(path);
            }
            for e in self.graph.edges_directed(n, Direction::Outgoing) {
                let t = e.target();
                if prev[t.index()] == NONE {
                    prev[t.index()] = n.index() as u32;
                    queue.push_back(t);
                }
            }
        }
        None
    }
}

/// The cached topological facts of a [`TaskDag`].
#[derive(Debug, Clone)]
struct Topo {
    /// Kahn order.
    order: Vec<NodeIndex>,
    /// Insertion positions grouped by generation, in topological order within each.
    generations: Vec<usize>,
    /// Where each generation ends in `generations`.
    generation_ends: Vec<usize>,
    /// Each node's insertion position, by node index (`usize::MAX` for free slots).
    position: Vec<usize>,
}

/// Buffers reused by [`TaskDag::add_dependency`]. They hold no state between calls, so a
/// clone starts empty and `Debug` shows nothing.
#[derive(Default)]
struct Scratch {
    targets: Vec<NodeIndex>,
    prev: Vec<u32>,
    queue: VecDeque<NodeIndex>,
}

impl Clone for Scratch {
    fn clone(&self) -> Self {
        Scratch::default()
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scratch")
    }
}

/// A dynamic update: subtasks to add under one parent and dependencies to declare.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DagUpdate {
    /// Where the subtasks go (`None`: top level).
    pub parent: Option<TaskId>,
    /// Tasks to add.
    pub subtasks: Vec<Task>,
    /// `(from, to)`: `to` waits for `from`. May reference new and existing tasks.
    pub dependencies: Vec<(TaskId, TaskId)>,
}

#[cfg(test)]
mod tests {
    use genesis_core::TaskKind;

    use super::*;

    fn t(id: &str) -> Task {
        Task::new(TaskId::new(id), TaskKind::Generic, format!("task {id}"))
    }

    fn id(s: &str) -> TaskId {
        TaskId::new(s)
    }

    #[test]
    fn cached_order_follows_every_change() {
        let mut dag = TaskDag::default();
        for n in ["a", "b"] {
            dag.add_task(t(n), None).unwrap();
        }
        let names = |d: &TaskDag| -> Vec<String> {
            d.topological_order()
                .iter()
                .map(|i| i.to_string())
                .collect()
        };
        assert_eq!(names(&dag), ["a", "b"]);
        dag.add_dependency(&id("b"), &id("a")).unwrap();
        assert_eq!(names(&dag), ["b", "a"]);
        dag.add_task(t("c"), None).unwrap();
        dag.add_dependency(&id("c"), &id("b")).unwrap();
        assert_eq!(names(&dag), ["c", "b", "a"]);
        assert_eq!(dag.generations().len(), 3);
        assert!(dag.is_acyclic());
        // A clone carries the cached order and stays correct when it changes alone.
        let mut copy = dag.clone();
        copy.add_task(t("d"), None).unwrap();
        assert_eq!(names(&copy), ["c", "d", "b", "a"]);
        assert_eq!(names(&dag), ["c", "b", "a"]);
    }

    #[test]
    fn rejects_cycles_with_the_path() {
        let mut dag = TaskDag::default();
        for n in ["a", "b", "c"] {
            dag.add_task(t(n), None).unwrap();
        }
        dag.add_dependency(&id("a"), &id("b")).unwrap();
        dag.add_dependency(&id("b"), &id("c")).unwrap();
        let err = dag.add_dependency(&id("c"), &id("a")).unwrap_err();
        match &err {
            HtdagError::CycleDetected { path } => {
                let p: Vec<&str> = path.iter().map(TaskId::as_str).collect();
                assert_eq!(p, ["c", "a", "b", "c"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "dependency would create a cycle: c -> a -> b -> c"
        );
        assert!(dag.is_acyclic());
        assert!(matches!(
            dag.add_dependency(&id("a"), &id("a")),
            Err(HtdagError::SelfDependency { .. })
        ));
    }

    #[test]
    fn subtasks_inherit_dependencies_and_parents_wait_for_children() {
        let mut dag = TaskDag::default();
        dag.add_task(t("design"), None).unwrap();
        dag.add_task(t("build"), None).unwrap();
        dag.add_dependency(&id("design"), &id("build")).unwrap();
        dag.add_task(t("api"), Some(&id("build"))).unwrap();
        dag.add_task(t("ui"), Some(&id("build"))).unwrap();
        let order: Vec<&str> = dag.topological_order().iter().map(|i| i.as_str()).collect();
        assert_eq!(order, ["design", "api", "ui", "build"]);
        assert_eq!(dag.depth(), 2);
        assert_eq!(dag.critical_path_len(), 3);
        let generations: Vec<Vec<&str>> = dag
            .generations()
            .iter()
            .map(|g| g.iter().map(|i| i.as_str()).collect())
            .collect();
        assert_eq!(
            generations,
            [vec!["design"], vec!["api", "ui"], vec!["build"]]
        );
        // Insertion positions: design 0, build 1, api 2, ui 3.
        let positions: Vec<&[usize]> = dag.generation_positions().collect();
        assert_eq!(positions, [&[0][..], &[2, 3], &[1]]);
        assert_eq!(dag.parent_positions(), [None, None, Some(1), Some(1)]);
        assert_eq!(
            dag.declared_dependency_lists(),
            [vec![], vec![id("design")], vec![], vec![]]
        );
        assert_eq!(dag.declared_dependencies("build"), [&id("design")]);

        let mut done: HashSet<String> = HashSet::new();
        let ready: Vec<&str> = dag.ready_set(&done).iter().map(|i| i.as_str()).collect();
        assert_eq!(ready, ["design"]);
        done.insert("design".into());
        let ready: Vec<&str> = dag.ready_set(&done).iter().map(|i| i.as_str()).collect();
        assert_eq!(ready, ["api", "ui"]);

        // A cycle through the hierarchy is caught: the child may not precede the
        // dependency its parent has.
        let err = dag.add_dependency(&id("api"), &id("design")).unwrap_err();
        assert!(matches!(err, HtdagError::CycleDetected { .. }), "{err}");
    }

    #[test]
    fn dependency_added_after_subtasks_reaches_them() {
        let mut dag = TaskDag::default();
        dag.add_task(t("p"), None).unwrap();
        dag.add_task(t("p.1"), Some(&id("p"))).unwrap();
        dag.add_task(t("q"), None).unwrap();
        dag.add_dependency(&id("q"), &id("p")).unwrap();
        assert_eq!(dag.prerequisites("p.1"), [&id("q")]);
    }

    #[test]
    fn prerequisites_and_dependents_come_in_plan_order() {
        let mut dag = TaskDag::default();
        for name in ["a", "b", "c", "d"] {
            dag.add_task(t(name), None).unwrap();
        }
        // Declared out of plan order, and each edge once more through a subtask.
        for from in ["c", "a", "b"] {
            dag.add_dependency(&id(from), &id("d")).unwrap();
        }
        dag.add_dependency(&id("a"), &id("c")).unwrap();
        dag.add_dependency(&id("a"), &id("b")).unwrap();
        assert_eq!(dag.prerequisites("d"), [&id("a"), &id("b"), &id("c")]);
        assert_eq!(dag.declared_dependencies("d"), dag.prerequisites("d"));
        assert_eq!(dag.dependents("a"), [&id("b"), &id("c"), &id("d")]);
        // A parent waits for its children in the order they were added.
        dag.add_task(t("d.1"), Some(&id("d"))).unwrap();
        dag.add_task(t("d.2"), Some(&id("d"))).unwrap();
        assert_eq!(
            dag.prerequisites("d"),
            [&id("a"), &id("b"), &id("c"), &id("d.1"), &id("d.2")]
        );
        assert_eq!(dag.prerequisites("d.2"), [&id("a"), &id("b"), &id("c")]);
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_tasks: 3,
            max_depth: 2,
            ..Limits::default()
        };
        let mut dag = TaskDag::new(limits);
        dag.add_task(t("a"), None).unwrap();
        dag.add_task(t("a.1"), Some(&id("a"))).unwrap();
        assert!(matches!(
            dag.add_task(t("z"), Some(&id("nope"))),
            Err(HtdagError::UnknownTask { .. })
        ));
        let err = dag.add_task(t("a.1.1"), Some(&id("a.1"))).unwrap_err();
        assert!(matches!(
            err,
            HtdagError::TooDeep {
                depth: 3,
                max: 2,
                ..
            }
        ));
        dag.add_task(t("b"), None).unwrap();
        let err = dag.add_task(t("c"), None).unwrap_err();
        assert!(matches!(err, HtdagError::TooManyTasks { count: 4, max: 3 }));
        assert!(matches!(
            dag.add_task(t("a"), None),
            Err(HtdagError::DuplicateTask { .. })
        ));
        // Audit U6: an empty id was accepted, and events and dependencies could not
        // name the task.
        let mut dag = TaskDag::default();
        for empty in ["", "  "] {
            let err = dag.add_task(t(empty), None).unwrap_err();
            assert!(matches!(err, HtdagError::EmptyTaskId), "{err}");
            assert!(err.to_string().contains("non_empty_task_id"), "{err}");
        }
        assert!(dag.is_empty());
    }

    #[test]
    fn updates_are_atomic_and_counted() {
        let mut dag = TaskDag::default();
        dag.add_task(t("a"), None).unwrap();
        dag.add_task(t("b"), None).unwrap();
        dag.add_dependency(&id("a"), &id("b")).unwrap();
        let bad = DagUpdate {
            parent: Some(id("a")),
            subtasks: vec![t("a.1")],
            // a.1 waits for b, but b waits for a which waits for a.1: cycle.
            dependencies: vec![(id("b"), id("a.1"))],
        };
        assert!(dag.apply_update(bad).is_err());
        assert_eq!(dag.len(), 2);
        assert_eq!(dag.updates_applied(), 0);
        let too_many = DagUpdate {
            parent: None,
            subtasks: (0..21).map(|i| t(&format!("n{i}"))).collect(),
            dependencies: vec![],
        };
        assert!(matches!(
            dag.apply_update(too_many),
            Err(HtdagError::TooManySubtasks { count: 21, max: 20 })
        ));
        for i in 0..10 {
            dag.apply_update(DagUpdate {
                parent: None,
                subtasks: vec![t(&format!("u{i}"))],
                dependencies: vec![],
            })
            .unwrap();
        }
        assert!(matches!(
            dag.apply_update(DagUpdate::default()),
            Err(HtdagError::TooManyUpdates { count: 10, max: 10 })
        ));
    }

    #[test]
    fn restored_updates_count_against_the_limit() {
        let mut dag = TaskDag::default();
        dag.add_task(t("a"), None).unwrap();
        dag.restore_updates(9);
        let one = |name: &str| DagUpdate {
            parent: None,
            subtasks: vec![t(name)],
            dependencies: vec![],
        };
        dag.apply_update(one("b")).unwrap();
        assert_eq!(dag.updates_applied(), 10);
        assert!(matches!(
            dag.apply_update(one("c")),
            Err(HtdagError::TooManyUpdates { count: 10, max: 10 })
        ));
    }
}
