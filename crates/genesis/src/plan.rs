//! The plan: a serialisable value that the CLI, the server and library users share.
//!
//! Field names are a stable contract, documented in docs/API.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use genesis_aop::ValidationReport;
use genesis_core::{AgentId, ModelId, TaskId, TaskKind, Usd};
use genesis_halo::{Alternative, RouteLayer};
use genesis_resilience::DegradationLevel;
use serde::{Deserialize, Serialize};

/// How a task was routed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskRoute {
    /// The layer that decided (`rule`, `text`, `capability`, `unassigned`).
    pub layer: RouteLayer,
    /// The blended routing score.
    pub score: f64,
    /// How well the agent fits, in `[0, 1]`.
    pub match_score: f64,
    /// Why this agent, in words.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub explanation: std::sync::Arc<str>,
    /// Next-best agents for re-routing.
    pub alternatives: Vec<Alternative>,
}

/// Which model a task runs on and what it should cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskModel {
    /// The model.
    pub model: ModelId,
    /// Estimated difficulty in `[0, 1]`.
    pub difficulty: f64,
    /// Estimated cost.
    pub estimated_cost: Usd,
    /// Why this model.
    pub reason: String,
}

/// One task of a plan, with its routing and model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedTask {
    /// Task id (`t2.3`).
    pub id: TaskId,
    /// The composite task this one refines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<TaskId>,
    /// Hierarchy level, 1 at the top.
    pub depth: usize,
    /// Task kind.
    pub kind: TaskKind,
    /// What to do.
    pub description: String,
    /// Declared dependencies (a task also waits for its subtasks and inherits its
    /// parent's dependencies; see docs/API.md).
    pub depends_on: Vec<TaskId>,
    /// Skills required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub required_skills: Vec<genesis_core::Label>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, String>))]
    pub metadata: genesis_core::Metadata,
    /// Estimated tokens.
    pub estimated_tokens: u32,
    /// Assigned agent (`null` when unassigned).
    pub agent: Option<AgentId>,
    /// Routing details.
    pub route: TaskRoute,
    /// Model choice (absent for unassigned tasks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<TaskModel>,
}

/// The routing stages a plan was made with (see [`crate::Stages`], which they are
/// taken from): what routes and prices its tasks, and the follow-up tasks its run adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanRouting {
    /// Why rules and text matching were off, so tasks were routed by kind only (flag
    /// `halo_routing` off, or the `minimal` degradation level); `None`: on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching_off: Option<String>,
    /// HALO's plan-context stage (flag `new_router_rollout`); off: each task routed
    /// alone.
    pub plan_context: bool,
    /// DAAO's cheapest-capable model choice (flag `daao_cost_routing`); off: the
    /// strongest model for every task.
    pub cost_routing: bool,
}

/// A complete, validated (or rejected) plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Plan {
    /// The request as received.
    pub request: String,
    /// Which decomposer produced the tasks (`heuristic`, `llm:<model>`).
    pub decomposer: String,
    /// The degradation level the plan was made at.
    pub degradation: DegradationLevel,
    /// Why the plan was made at a degraded level, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degradation_reason: Option<String>,
    /// How its tasks were routed and priced (the routing stages in force when it was
    /// made); its run routes and prices the follow-up tasks agents propose the same way,
    /// after a restart too. `None` in plans stored before this field existed: their
    /// run takes the stages in force when it starts, for its subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<PlanRouting>,
    /// Tasks in topological order.
    pub tasks: Vec<PlannedTask>,
    /// Sum of the tasks' estimated costs.
    pub estimated_cost: Usd,
    /// Hierarchy depth.
    pub depth: usize,
    /// AOP validation report.
    pub validation: ValidationReport,
    /// What LLM decomposition of the request spent (every planner call that answered
    /// or may have been billed, the calls of a decomposition that failed and fell back
    /// to the heuristic included); absent when no planner call was made. It is charged
    /// to the day's spend (`budget.per_day`), and a run of the plan starts from it: the
    /// run's `cost` and token totals include its planning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planning: Option<PlanningSpend>,
}

/// What the LLM planner's calls for one request spent.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanningSpend {
    /// Dollars charged: the calls' reported cost; an answer without token usage at an
    /// upper-bound estimate; a call that timed out, was cut off by
    /// `planning.llm_timeout` or answered unusably without usage, its reservation.
    pub cost: Usd,
    /// Input tokens the provider reported.
    pub input_tokens: u64,
    /// Output tokens the provider reported.
    pub output_tokens: u64,
    /// Planner HTTP calls made: a repair turn sent after an invalid answer is a call
    /// of its own, and so is a refused call (a 429) that is retried.
    pub calls: u32,
}

impl Plan {
    /// Rebuilds the plan's task DAG (hierarchy and declared dependencies) under
    /// `limits`, e.g. to execute a plan that was stored or sent as JSON.
    ///
    /// # Errors
    /// Limit violations, unknown parents or dependencies, cycles.
    pub fn to_dag(
        &self,
        limits: &genesis_htdag::Limits,
    ) -> Result<genesis_htdag::TaskDag, genesis_htdag::HtdagError> {
        let mut dag = genesis_htdag::TaskDag::new(limits.clone());
        // Parents before children: order by depth, keeping plan order within a level.
        let mut order: Vec<&PlannedTask> = self.tasks.iter().collect();
        order.sort_by_key(|t| t.depth);
        for t in order {
            let task = genesis_core::Task {
                id: t.id.clone(),
                kind: t.kind,
                description: t.description.clone(),
                metadata: t.metadata.clone(),
                required_skills: t.required_skills.clone(),
                estimated_tokens: t.estimated_tokens,
            };
            dag.add_task(task, t.parent.as_ref())?;
        }
        for t in &self.tasks {
            for d in &t.depends_on {
                dag.add_dependency(d, &t.id)?;
            }
        }
        Ok(dag)
    }

    /// The task with this id.
    pub fn task(&self, id: &str) -> Option<&PlannedTask> {
        self.tasks.iter().find(|t| t.id.as_str() == id)
    }

    /// Number of tasks with an agent.
    pub fn assigned(&self) -> usize {
        self.tasks.iter().filter(|t| t.agent.is_some()).count()
    }

    /// A human-readable tree: one line per task (indentation shows the hierarchy) with
    /// agent, model, estimated cost and the routing explanation.
    pub fn render_tree(&self) -> String {
        let mut out = String::new();
        let v = &self.validation;
        let _ = writeln!(
            out,
            "plan: {} tasks, depth {}, est. cost {}, decomposer {}, degradation {}",
            self.tasks.len(),
            self.depth,
            self.estimated_cost,
            self.decomposer,
            self.degradation.as_str()
        );
        if let Some(reason) = &self.degradation_reason {
            let _ = writeln!(out, "degraded: {reason}");
        }
        let _ = writeln!(
            out,
            "validation: {} (score {:.3}: success {:.2}, match {:.2}, cost {:.2}, depth {:.2})",
            if v.passed { "passed" } else { "FAILED" },
            v.score,
            v.metrics.success,
            v.metrics.r#match,
            v.metrics.cost,
            v.metrics.depth
        );
        // Children grouped by parent, in plan order; print depth-first.
        let mut children: BTreeMap<Option<&str>, Vec<&PlannedTask>> = BTreeMap::new();
        for t in &self.tasks {
            children
                .entry(t.parent.as_ref().map(TaskId::as_str))
                .or_default()
                .push(t);
        }
        for list in children.values_mut() {
            list.sort_by(|a, b| natural_cmp(a.id.as_str(), b.id.as_str()));
        }
        let mut stack: Vec<&PlannedTask> = children
            .get(&None)
            .map(|v| v.iter().rev().copied().collect())
            .unwrap_or_default();
        while let Some(t) = stack.pop() {
            let indent = "  ".repeat(t.depth.saturating_sub(1));
            let agent = t.agent.as_ref().map_or("UNASSIGNED", AgentId::as_str);
            let (model, cost) = t
                .model
                .as_ref()
                .map_or(("-".to_owned(), "-".to_owned()), |m| {
                    (m.model.to_string(), m.estimated_cost.to_string())
                });
            let deps = if t.depends_on.is_empty() {
                String::new()
            } else {
                let d: Vec<&str> = t.depends_on.iter().map(TaskId::as_str).collect();
                format!(" after {}", d.join(","))
            };
            let _ = writeln!(
                out,
                "{indent}{} [{}] {}\n{indent}    agent {agent} · model {model} · est. {cost}{deps}\n{indent}    why: {}",
                t.id, t.kind, t.description, t.route.explanation
            );
            if let Some(kids) = children.get(&Some(t.id.as_str())) {
                stack.extend(kids.iter().rev().copied());
            }
        }
        for e in &v.errors {
            let _ = writeln!(out, "error [{}] {}", e.rule, e.message);
        }
        for w in &v.warnings {
            let _ = writeln!(out, "warning [{}] {}", w.rule, w.message);
        }
        out
    }

    /// Graphviz DOT: subgraph clusters for composite tasks, solid edges for declared
    /// dependencies.
    pub fn render_dot(&self) -> String {
        let mut out =
            String::from("digraph plan {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
        for t in &self.tasks {
            let agent = t.agent.as_ref().map_or("unassigned", AgentId::as_str);
            let _ = writeln!(
                out,
                "  \"{}\" [label=\"{}\\n{}\\n[{}]\"];",
                escape_dot(t.id.as_str()),
                escape_dot(t.id.as_str()),
                escape_dot(&truncate(&t.description, 60)),
                escape_dot(agent)
            );
        }
        for t in &self.tasks {
            if let Some(p) = &t.parent {
                let _ = writeln!(
                    out,
                    "  \"{}\" -> \"{}\" [style=dashed, arrowhead=none, label=\"part of\"];",
                    escape_dot(t.id.as_str()),
                    escape_dot(p.as_str())
                );
            }
            for d in &t.depends_on {
                let _ = writeln!(
                    out,
                    "  \"{}\" -> \"{}\";",
                    escape_dot(d.as_str()),
                    escape_dot(t.id.as_str())
                );
            }
        }
        out.push_str("}\n");
        out
    }

    /// Mermaid flowchart: subgraphs for composite tasks, arrows for declared dependencies.
    pub fn render_mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        let node_id = |id: &TaskId| id.as_str().replace('.', "_");
        for t in &self.tasks {
            let agent = t.agent.as_ref().map_or("unassigned", AgentId::as_str);
            let _ = writeln!(
                out,
                "  {}[\"{}: {}<br/>{}\"]",
                node_id(&t.id),
                t.id,
                escape_mermaid(&truncate(&t.description, 60)),
                escape_mermaid(agent)
            );
        }
        for t in &self.tasks {
            if let Some(p) = &t.parent {
                let _ = writeln!(out, "  {} -.-> {}", node_id(&t.id), node_id(p));
            }
            for d in &t.depends_on {
                let _ = writeln!(out, "  {} --> {}", node_id(d), node_id(&t.id));
            }
        }
        out
    }
}

/// Orders `t2` before `t10` and `t1.2` before `t1.10`.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(u64::MAX))
            .collect()
    };
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn escape_dot(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', " ")
}

/// A Mermaid label's text: quotes, angle brackets, `&` and `#` as Mermaid entity codes
/// (a `<Safari>` in a task was taken as an HTML tag and vanished, audit C10), control
/// characters and line breaks as spaces.
fn escape_mermaid(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '#' => out.push_str("#35;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mermaid_labels_escape_markup_and_control_characters() {
        assert_eq!(
            escape_mermaid("Fix \"<Safari>\" & #lt; bug\nnow\u{1b}[31m"),
            "Fix #quot;#lt;Safari#gt;#quot; #amp; #35;lt; bug now [31m"
        );
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["t10", "t2", "t1.10", "t1.2", "t1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["t1", "t1.2", "t1.10", "t2", "t10"]);
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_dot("a\"b"), "a\\\"b");
        assert_eq!(escape_mermaid("say \"hi\""), "say #quot;hi#quot;");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
