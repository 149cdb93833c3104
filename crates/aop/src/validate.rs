//! The validator and its report.

use std::collections::{HashMap, HashSet};

use genesis_core::{AgentId, TaskId, Usd};
use genesis_halo::AgentRegistry;
use genesis_htdag::TaskDag;
use serde::{Deserialize, Serialize};

/// The routing and cost decided for one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The task.
    pub task: TaskId,
    /// The agent, or `None` when routing found no agent.
    pub agent: Option<AgentId>,
    /// How well the agent fits the task, in `[0, 1]`.
    pub match_score: f64,
    /// Expected cost of the task.
    pub estimated_cost: Usd,
}

/// Validator settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidatorConfig {
    /// The run budget the plan must fit in (`None`: no budget check).
    pub budget: Option<Usd>,
    /// Without a budget, the cost that counts as "expensive" (cost term = 1) in the score.
    pub cost_reference: Usd,
    /// Fraction of the budget above which a warning is raised (default 0.8).
    pub budget_warning_ratio: f64,
    /// Fraction of the request's key words the tasks must mention before a
    /// completeness warning (default 0.5).
    pub coverage_warning_ratio: f64,
    /// Token-set similarity at which two tasks count as near-duplicates (default 0.9).
    pub duplicate_similarity: f64,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        ValidatorConfig {
            budget: None,
            cost_reference: Usd::saturating(1.0),
            budget_warning_ratio: 0.8,
            coverage_warning_ratio: 0.5,
            duplicate_similarity: 0.9,
        }
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule, e.g. `solvable.unassigned`.
    pub rule: String,
    /// The task concerned, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskId>,
    /// What is wrong, with the offending value.
    pub message: String,
}

/// Which checks passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checks {
    /// DAG shape and limits.
    pub structure: bool,
    /// Every task has a known agent.
    pub solvable: bool,
    /// Every task is well-formed and the plan covers the request.
    pub complete: bool,
    /// No duplicated work.
    pub non_redundant: bool,
    /// Estimated cost within budget.
    pub within_budget: bool,
}

/// The terms of the quality score, each in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QualityMetrics {
    /// Mean success rate of the assigned agents.
    pub success: f64,
    /// Mean routing match score.
    pub r#match: f64,
    /// Estimated cost relative to the budget (or reference).
    pub cost: f64,
    /// Depth relative to the depth limit.
    pub depth: f64,
    /// Fraction of the request's key words that the tasks mention.
    pub coverage: f64,
}

/// The outcome of validation. Warnings are reported whether or not the plan passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// True when no check failed.
    pub passed: bool,
    /// The quality score in `[0, 1]`.
    pub score: f64,
    /// Per-check results.
    pub checks: Checks,
    /// The score's terms.
    pub metrics: QualityMetrics,
    /// Estimated cost of the whole plan.
    pub estimated_cost: Usd,
    /// Failed rules.
    pub errors: Vec<Finding>,
    /// Concerns that do not fail the plan.
    pub warnings: Vec<Finding>,
}

/// Validates plans against the registry the router used.
#[derive(Debug, Clone)]
pub struct Validator<'a> {
    registry: &'a AgentRegistry,
    config: ValidatorConfig,
}

/// Words too common to say anything about coverage.
const STOPWORDS: &[&str] = &[
    "about", "after", "also", "and", "are", "build", "can", "could", "create", "each", "for",
    "from", "have", "help", "into", "make", "more", "need", "our", "please", "should", "some",
    "that", "the", "their", "them", "then", "there", "these", "this", "those", "using", "want",
    "what", "when", "which", "will", "with", "would", "your",
];

impl<'a> Validator<'a> {
    /// A validator using `registry` — pass the registry the router used.
    pub fn new(registry: &'a AgentRegistry, config: ValidatorConfig) -> Self {
        Validator { registry, config }
    }

    /// Validates a plan. Never panics; every problem becomes a [`Finding`].
    pub fn validate(
        &self,
        request: &str,
        dag: &TaskDag,
        assignments: &[Assignment],
    ) -> ValidationReport {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let by_task: HashMap<&str, &Assignment> =
            assignments.iter().map(|a| (a.task.as_str(), a)).collect();

        let structure = self.check_structure(dag, &mut errors);
        let (solvable, success, r#match) =
            self.check_solvable(dag, &by_task, &mut errors, &mut warnings);
        let (complete, coverage) = self.check_complete(request, dag, &mut errors, &mut warnings);
        let non_redundant = self.check_redundancy(dag, &mut errors, &mut warnings);
        let estimated_cost: Usd = dag
            .tasks()
            .filter_map(|t| by_task.get(t.id.as_str()))
            .map(|a| a.estimated_cost)
            .sum();
        let (within_budget, cost) = self.check_budget(estimated_cost, &mut errors, &mut warnings);

        let depth = if dag.limits().max_depth == 0 {
            1.0
        } else {
            (dag.depth() as f64 / dag.limits().max_depth as f64).clamp(0.0, 1.0)
        };
        let score = (0.4 * success + 0.3 * r#match + 0.2 * (1.0 - cost) + 0.1 * (1.0 - depth))
            .clamp(0.0, 1.0);
        let checks = Checks {
            structure,
            solvable,
            complete,
            non_redundant,
            within_budget,
        };
        ValidationReport {
            passed: errors.is_empty(),
            score,
            checks,
            metrics: QualityMetrics {
                success,
                r#match,
                cost,
                depth,
                coverage,
            },
            estimated_cost,
            errors,
            warnings,
        }
    }

    fn check_structure(&self, dag: &TaskDag, errors: &mut Vec<Finding>) -> bool {
        let before = errors.len();
        let limits = dag.limits();
        if dag.is_empty() {
            errors.push(finding(
                "structure.empty",
                None,
                "the plan has no tasks".into(),
            ));
        }
        if !dag.is_acyclic() {
            errors.push(finding(
                "structure.acyclic",
                None,
                "the plan has a dependency cycle".into(),
            ));
        }
        if dag.depth() > limits.max_depth {
            errors.push(finding(
                "structure.max_depth",
                None,
                format!(
                    "depth {} exceeds the limit {}",
                    dag.depth(),
                    limits.max_depth
                ),
            ));
        }
        if dag.len() > limits.max_tasks {
            errors.push(finding(
                "structure.max_tasks",
                None,
                format!("{} tasks exceed the limit {}", dag.len(), limits.max_tasks),
            ));
        }
        errors.len() == before
    }

    fn check_solvable(
        &self,
        dag: &TaskDag,
        by_task: &HashMap<&str, &Assignment>,
        errors: &mut Vec<Finding>,
        warnings: &mut Vec<Finding>,
    ) -> (bool, f64, f64) {
        let before = errors.len();
        let mut success = 0.0;
        let mut matched = 0.0;
        let mut load: HashMap<&AgentId, u32> = HashMap::new();
        for task in dag.tasks() {
            let Some(a) = by_task.get(task.id.as_str()) else {
                errors.push(finding(
                    "solvable.unassigned",
                    Some(&task.id),
                    format!("task {} has no routing decision", task.id),
                ));
                continue;
            };
            let Some(agent_id) = &a.agent else {
                errors.push(finding(
                    "solvable.unassigned",
                    Some(&task.id),
                    format!("no agent can take task {} (kind {})", task.id, task.kind),
                ));
                continue;
            };
            let Some(agent) = self.registry.get(agent_id.as_str()) else {
                errors.push(finding(
                    "solvable.unknown_agent",
                    Some(&task.id),
                    format!(
                        "task {} is assigned to {agent_id}, which is not in the registry",
                        task.id
                    ),
                ));
                continue;
            };
            success += agent.success_rate.clamp(0.0, 1.0);
            matched += if a.match_score.is_finite() {
                a.match_score.clamp(0.0, 1.0)
            } else {
                0.0
            };
            *load.entry(agent_id).or_default() += 1;
            if !agent.accepts_kind(task.kind) {
                warnings.push(finding(
                    "solvable.kind_mismatch",
                    Some(&task.id),
                    format!(
                        "agent {agent_id} does not list kind {} for task {}",
                        task.kind, task.id
                    ),
                ));
            }
            let missing: Vec<&str> = task
                .required_skills
                .iter()
                .filter(|s| !agent.skills.iter().any(|k| k.eq_ignore_ascii_case(s)))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                warnings.push(finding(
                    "solvable.missing_skills",
                    Some(&task.id),
                    format!(
                        "agent {agent_id} lacks skills {missing:?} for task {}",
                        task.id
                    ),
                ));
            }
        }
        let mut over: Vec<(&AgentId, u32, u32)> = load
            .iter()
            .filter_map(|(id, n)| {
                let cap = self.registry.get(id.as_str())?.max_concurrent_tasks;
                (*n > cap).then_some((*id, *n, cap))
            })
            .collect();
        over.sort_by(|a, b| a.0.cmp(b.0));
        for (id, n, cap) in over {
            warnings.push(finding(
                "solvable.capacity",
                None,
                format!(
                    "agent {id} has {n} tasks but runs at most {cap} at a time; the rest will queue"
                ),
            ));
        }
        let n = dag.len().max(1) as f64;
        (errors.len() == before, success / n, matched / n)
    }

    fn check_complete(
        &self,
        request: &str,
        dag: &TaskDag,
        errors: &mut Vec<Finding>,
        warnings: &mut Vec<Finding>,
    ) -> (bool, f64) {
        let before = errors.len();
        for task in dag.tasks() {
            if task.description.trim().is_empty() {
                errors.push(finding(
                    "complete.empty_description",
                    Some(&task.id),
                    format!("task {} has an empty description", task.id),
                ));
            }
        }
        let wanted: HashSet<u64> = key_words(request).collect();
        let coverage = if wanted.is_empty() {
            1.0
        } else {
            let mut mentioned: HashSet<u64> = HashSet::with_capacity(wanted.len() * 2);
            for t in dag.tasks() {
                mentioned.extend(key_words(&t.description).filter(|h| wanted.contains(h)));
                if mentioned.len() == wanted.len() {
                    break;
                }
            }
            mentioned.len() as f64 / wanted.len() as f64
        };
        if coverage < self.config.coverage_warning_ratio {
            warnings.push(finding(
                "complete.coverage",
                None,
                format!(
                    "tasks mention {:.0}% of the request's key words, under {:.0}%",
                    coverage * 100.0,
                    self.config.coverage_warning_ratio * 100.0
                ),
            ));
        }
        (errors.len() == before, coverage)
    }

    fn check_redundancy(
        &self,
        dag: &TaskDag,
        errors: &mut Vec<Finding>,
        warnings: &mut Vec<Finding>,
    ) -> bool {
        let before = errors.len();
        // Exact duplicates: same parent, same kind, same words (a hash of the word
        // sequence). Near duplicates: leaf tasks of one kind whose word sets overlap, as
        // sorted hash vectors (no string allocation on this hot path).
        let mut exact: HashMap<(Option<&TaskId>, genesis_core::TaskKind, u64), &TaskId> =
            HashMap::new();
        let mut by_kind: HashMap<genesis_core::TaskKind, Vec<(&TaskId, Vec<u64>)>> = HashMap::new();
        let mut words: Vec<u64> = Vec::new();
        for node in dag.nodes() {
            words.clear();
            words.extend(word_hashes(&node.task.description, usize::MAX));
            let sequence = words
                .iter()
                .fold(FNV_OFFSET, |h, w| (h ^ w).wrapping_mul(FNV_PRIME));
            if let Some(first) = exact.insert(
                (node.parent.as_ref(), node.task.kind, sequence),
                &node.task.id,
            ) {
                errors.push(finding(
                    "non_redundant.duplicate",
                    Some(&node.task.id),
                    format!("task {} repeats task {first}", node.task.id),
                ));
                continue;
            }
            if dag.is_leaf(node.task.id.as_str()) {
                let mut set = words.clone();
                set.sort_unstable();
                set.dedup();
                by_kind
                    .entry(node.task.kind)
                    .or_default()
                    .push((&node.task.id, set));
            }
        }
        let limit = 300; // pairs compared per kind are bounded: n ≤ 300 → ≤ 45k pairs
        for group in by_kind.values() {
            let group = &group[..group.len().min(limit)];
            for i in 0..group.len() {
                for j in i + 1..group.len() {
                    let sim = jaccard(&group[i].1, &group[j].1);
                    if sim >= self.config.duplicate_similarity {
                        warnings.push(finding(
                            "non_redundant.similar",
                            Some(group[j].0),
                            format!(
                                "task {} is {:.0}% similar to task {}",
                                group[j].0,
                                sim * 100.0,
                                group[i].0
                            ),
                        ));
                    }
                }
            }
        }
        errors.len() == before
    }

    fn check_budget(
        &self,
        cost: Usd,
        errors: &mut Vec<Finding>,
        warnings: &mut Vec<Finding>,
    ) -> (bool, f64) {
        let Some(budget) = self.config.budget else {
            let reference = self.config.cost_reference.as_f64();
            let ratio = if reference > 0.0 {
                cost.as_f64() / reference
            } else {
                0.0
            };
            return (true, ratio.clamp(0.0, 1.0));
        };
        let ratio = if budget.as_f64() > 0.0 {
            cost.as_f64() / budget.as_f64()
        } else if cost.as_f64() > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        if ratio > 1.0 {
            errors.push(finding(
                "within_budget.exceeded",
                None,
                format!("estimated cost {cost} exceeds the budget {budget}"),
            ));
            return (false, 1.0);
        }
        if ratio > self.config.budget_warning_ratio {
            warnings.push(finding(
                "within_budget.near_limit",
                None,
                format!(
                    "estimated cost {cost} is {:.0}% of the budget {budget}",
                    ratio * 100.0
                ),
            ));
        }
        (true, ratio.clamp(0.0, 1.0))
    }
}

fn finding(rule: &str, task: Option<&TaskId>, message: String) -> Finding {
    Finding {
        rule: rule.to_owned(),
        task: task.cloned(),
        message,
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes of the lower-cased alphanumeric words of `text`, each cut to `max_chars`
/// characters (a crude stem: "invoices"/"invoice" and "analyse"/"analysis" meet at 6).
fn word_hashes(text: &str, max_chars: usize) -> impl Iterator<Item = u64> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(move |w| {
            w.chars()
                .take(max_chars)
                .flat_map(char::to_lowercase)
                .fold(FNV_OFFSET, |h, c| {
                    (h ^ u64::from(u32::from(c))).wrapping_mul(FNV_PRIME)
                })
        })
}

/// Full-word hashes of [`STOPWORDS`].
static STOP_HASHES: std::sync::LazyLock<HashSet<u64>> = std::sync::LazyLock::new(|| {
    STOPWORDS
        .iter()
        .filter_map(|w| word_hashes(w, usize::MAX).next())
        .collect()
});

/// Stemmed hashes of the words that say something about a request's content: longer
/// than three bytes and not a stop word.
fn key_words(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 3)
        .filter_map(|w| {
            // One pass gives both the full-word hash (stop-word check) and the stem hash.
            let (mut full, mut stem) = (FNV_OFFSET, FNV_OFFSET);
            for (i, c) in w.chars().flat_map(char::to_lowercase).enumerate() {
                full = (full ^ u64::from(u32::from(c))).wrapping_mul(FNV_PRIME);
                if i < 6 {
                    stem = (stem ^ u64::from(u32::from(c))).wrapping_mul(FNV_PRIME);
                }
            }
            (!STOP_HASHES.contains(&full)).then_some(stem)
        })
}

/// Jaccard similarity of two sorted, deduplicated hash sets.
fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - inter;
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

#[cfg(test)]
mod tests {
    use genesis_core::{Task, TaskKind};
    use genesis_halo::AgentProfile;
    use genesis_htdag::Limits;

    use super::*;

    fn registry() -> AgentRegistry {
        AgentRegistry::new(vec![
            AgentProfile::new("backend", "Builds APIs")
                .with_kind(TaskKind::Backend)
                .with_success_rate(0.9)
                .with_max_concurrent_tasks(1),
            AgentProfile::new("writer", "Writes docs")
                .with_kind(TaskKind::Document)
                .with_success_rate(0.8),
        ])
        .unwrap()
    }

    fn assign(task: &str, agent: Option<&str>, cost: f64) -> Assignment {
        Assignment {
            task: TaskId::new(task),
            agent: agent.map(AgentId::new),
            match_score: 0.8,
            estimated_cost: Usd::new(cost).unwrap(),
        }
    }

    fn dag(tasks: &[(&str, TaskKind, &str)]) -> TaskDag {
        let mut d = TaskDag::new(Limits::default());
        for (id, kind, text) in tasks {
            d.add_task(Task::new(TaskId::new(*id), *kind, *text), None)
                .unwrap();
        }
        d
    }

    #[test]
    fn a_good_plan_passes_with_the_documented_score() {
        let d = dag(&[
            ("t1", TaskKind::Backend, "Build the invoices API"),
            ("t2", TaskKind::Document, "Document the invoices API"),
        ]);
        let a = [
            assign("t1", Some("backend"), 0.1),
            assign("t2", Some("writer"), 0.1),
        ];
        let r = Validator::new(&registry(), ValidatorConfig::default()).validate(
            "invoices API",
            &d,
            &a,
        );
        assert!(r.passed, "{:?}", r.errors);
        // success 0.85, match 0.8, cost 0.2 of the $1 reference, depth 1/5.
        let want = 0.4 * 0.85 + 0.3 * 0.8 + 0.2 * (1.0 - 0.2) + 0.1 * (1.0 - 0.2);
        assert!((r.score - want).abs() < 1e-9, "{} vs {want}", r.score);
        assert!(!r.warnings.iter().any(|w| w.rule == "solvable.capacity"));
    }

    #[test]
    fn unassigned_and_unknown_agents_fail_solvability() {
        let d = dag(&[
            ("t1", TaskKind::Backend, "Build the API"),
            ("t2", TaskKind::Finance, "Price the product"),
            ("t3", TaskKind::Backend, "Build the other API"),
        ]);
        let a = [
            assign("t1", Some("backend"), 0.0),
            assign("t2", None, 0.0),
            assign("t3", Some("ghost"), 0.0),
        ];
        let r = Validator::new(&registry(), ValidatorConfig::default()).validate("build", &d, &a);
        assert!(!r.passed);
        assert!(!r.checks.solvable);
        let rules: Vec<&str> = r.errors.iter().map(|f| f.rule.as_str()).collect();
        assert_eq!(rules, ["solvable.unassigned", "solvable.unknown_agent"]);
        assert!(r.errors[1].message.contains("ghost"));
    }

    #[test]
    fn warnings_surface_even_when_the_plan_passes() {
        let d = dag(&[
            ("t1", TaskKind::Backend, "Build the API"),
            ("t2", TaskKind::Backend, "Build the API now"),
            ("t3", TaskKind::Test, "Build the API"),
        ]);
        let a = [
            assign("t1", Some("backend"), 0.0),
            assign("t2", Some("backend"), 0.0),
            assign("t3", Some("writer"), 0.0),
        ];
        let r = Validator::new(&registry(), ValidatorConfig::default()).validate(
            "Build the API for zebras",
            &d,
            &a,
        );
        assert!(r.passed, "{:?}", r.errors);
        let rules: HashSet<&str> = r.warnings.iter().map(|f| f.rule.as_str()).collect();
        assert!(rules.contains("solvable.capacity"), "{rules:?}");
        assert!(rules.contains("solvable.kind_mismatch"), "{rules:?}");
        assert!(rules.contains("complete.coverage"), "{rules:?}");
    }

    #[test]
    fn exact_duplicates_and_budget_fail() {
        let d = dag(&[
            ("t1", TaskKind::Backend, "Build the API"),
            ("t2", TaskKind::Backend, "build the API."),
        ]);
        let a = [
            assign("t1", Some("backend"), 0.6),
            assign("t2", Some("backend"), 0.6),
        ];
        let config = ValidatorConfig {
            budget: Some(Usd::new(1.0).unwrap()),
            ..ValidatorConfig::default()
        };
        let r = Validator::new(&registry(), config).validate("Build the API", &d, &a);
        assert!(!r.checks.non_redundant);
        assert!(!r.checks.within_budget);
        let msg = &r
            .errors
            .iter()
            .find(|f| f.rule == "within_budget.exceeded")
            .unwrap()
            .message;
        assert!(msg.contains("$1.2000") && msg.contains("$1.0000"), "{msg}");
    }
}
