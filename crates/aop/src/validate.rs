//! The validator and its report.

use std::collections::hash_map::Entry;

use genesis_core::fasthash::FxHashMap;
use genesis_core::{AgentId, Task, TaskId, TaskKind, Usd};
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Steps the near-duplicate search may take ([`MAX_SIMILARITY_WORK`]; lowered in
    /// tests).
    similarity_work: usize,
}

/// Findings of one rule about single tasks listed in a report's warnings; past it, one
/// task-less finding of the rule counts the rest. Warnings about the plan as a whole
/// (no task) are always listed. Audit P9 F4: one `non_redundant.similar` per similar
/// pair made a 5,000-character request's answer 8.6 MB (76,275 warnings), and a valid
/// 600-task plan stored 1.4 MB per run.
pub const MAX_WARNINGS_PER_RULE: usize = 10;

/// Steps the near-duplicate search may take per plan: candidate tasks looked at plus
/// pairs compared. Prefix filtering keeps it near linear for real plans (a task is only
/// compared with those that share one of its rarest words, and stops at the first
/// similar one), but word sets built to collide could still cost O(n²); past it the
/// search stops and a warning names the task it stopped at.
pub const MAX_SIMILARITY_WORK: usize = 200_000;

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
        Validator {
            registry,
            config,
            similarity_work: MAX_SIMILARITY_WORK,
        }
    }

    /// Validates a plan. Never panics; every problem becomes a [`Finding`].
    ///
    /// `assignments` may come in any order; in the DAG's insertion order
    /// ([`TaskDag::tasks`]) they are matched to tasks without a lookup.
    pub fn validate(
        &self,
        request: &str,
        dag: &TaskDag,
        assignments: &[Assignment],
    ) -> ValidationReport {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let by_task = align(dag, assignments);
        // Every description is tokenised once, for coverage and redundancy alike.
        let text = TextFacts::new(request, dag);

        self.check_config(&mut errors);
        let structure = self.check_structure(dag, &mut errors);
        let (solvable, success, r#match) =
            self.check_solvable(dag, &by_task, &mut errors, &mut warnings);
        let (complete, coverage) = self.check_complete(dag, &text, &mut errors, &mut warnings);
        let non_redundant = self.check_redundancy(dag, &text, &mut errors, &mut warnings);
        let estimated_cost: Usd = by_task.iter().flatten().map(|a| a.estimated_cost).sum();
        let (within_budget, cost) = self.check_budget(estimated_cost, &mut errors, &mut warnings);
        cap_per_rule(&mut warnings);

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

    /// Settings the checks cannot use (a ratio that is NaN or outside `[0, 1]`) fail the
    /// plan under `config.<setting>` instead of quietly passing or failing every plan.
    fn check_config(&self, errors: &mut Vec<Finding>) {
        let c = &self.config;
        for (name, value) in [
            ("budget_warning_ratio", c.budget_warning_ratio),
            ("coverage_warning_ratio", c.coverage_warning_ratio),
            ("duplicate_similarity", c.duplicate_similarity),
        ] {
            if !(0.0..=1.0).contains(&value) {
                errors.push(finding(
                    &format!("config.{name}"),
                    None,
                    format!("validator setting {name} = {value} must be in [0, 1]"),
                ));
            }
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
        by_task: &[Option<&Assignment>],
        errors: &mut Vec<Finding>,
        warnings: &mut Vec<Finding>,
    ) -> (bool, f64, f64) {
        let before = errors.len();
        let mut success = 0.0;
        let mut matched = 0.0;
        // Tasks per agent, by registry index.
        let mut load = vec![0u32; self.registry.len()];
        for (task, a) in dag.tasks().zip(by_task) {
            let Some(a) = a else {
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
            let Some((index, agent)) = self
                .registry
                .index_of(agent_id.as_str())
                .and_then(|i| Some((i, self.registry.by_index(i)?)))
            else {
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
            if (0.0..=1.0).contains(&a.match_score) {
                matched += a.match_score;
            } else {
                // Audit U6: NaN counted as 0 and 7.0 as 1, so a broken router's plan
                // passed and could outscore a real one.
                errors.push(finding(
                    "solvable.match_score",
                    Some(&task.id),
                    format!(
                        "task {} has match_score {}, outside [0, 1]",
                        task.id, a.match_score
                    ),
                ));
            }
            if let Some(n) = load.get_mut(index) {
                *n += 1;
            }
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
                .map(AsRef::as_ref)
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
            .zip(self.registry.iter())
            .filter(|(n, agent)| **n > agent.max_concurrent_tasks)
            .map(|(n, agent)| (&agent.id, *n, agent.max_concurrent_tasks))
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
        dag: &TaskDag,
        text: &TextFacts,
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
        let coverage = text.coverage();
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
        text: &TextFacts,
        errors: &mut Vec<Finding>,
        warnings: &mut Vec<Finding>,
    ) -> bool {
        let before = errors.len();
        // Exact duplicates: same parent, same kind, same words (a hash of the word
        // sequence). Near duplicates: leaf tasks of one kind whose word sets overlap, as
        // sorted hash vectors (no string allocation on this hot path).
        let mut exact: FxHashMap<(Option<&TaskId>, genesis_core::TaskKind, u64), &Task> =
            FxHashMap::with_capacity_and_hasher(dag.len(), Default::default());
        // (kind, task, word set) of leaf tasks, grouped by kind below.
        let mut leaves: Vec<(usize, &TaskId, &[u64])> = Vec::new();
        for (node, words) in dag.nodes().zip(&text.tasks) {
            if let Some(sequence) = words.sequence {
                match exact.entry((node.parent.as_ref(), node.task.kind, sequence)) {
                    // The hash covers words only: "C++" and "C#" share it, as do
                    // descriptions without words, so the texts decide.
                    Entry::Occupied(first)
                        if same_text(&first.get().description, &node.task.description) =>
                    {
                        errors.push(finding(
                            "non_redundant.duplicate",
                            Some(&node.task.id),
                            format!("task {} repeats task {}", node.task.id, first.get().id),
                        ));
                        continue;
                    }
                    Entry::Occupied(_) => {}
                    Entry::Vacant(slot) => {
                        slot.insert(&node.task);
                    }
                }
            }
            if words.candidate {
                leaves.push((
                    node.task.kind.index(),
                    &node.task.id,
                    &text.sets[words.set.clone()],
                ));
            }
        }
        // Stable: tasks keep insertion order within a kind. Each leaf is reported at
        // most once, with an earlier task of its kind it is similar to.
        leaves.sort_by_key(|(kind, _, _)| *kind);
        let threshold = self.config.duplicate_similarity;
        if threshold.is_nan() || threshold > 1.0 {
            // Refused under `config.duplicate_similarity` (see `check_config`).
            return errors.len() == before;
        }
        let mut work = self.similarity_work;
        let mut found = Vec::new();
        let groups: Vec<_> = leaves.chunk_by(|a, b| a.0 == b.0).collect();
        for (g, group) in groups.iter().enumerate() {
            found.clear();
            let stopped = near_duplicates(group, threshold, &mut work, &mut found);
            for &(i, j, sim) in &found {
                let (task, earlier) = (group[i].1, group[j].1);
                warnings.push(finding(
                    "non_redundant.similar",
                    Some(task),
                    format!(
                        "task {task} is {:.0}% similar to task {earlier}",
                        sim * 100.0
                    ),
                ));
            }
            if let Some(at) = stopped {
                let unsearched =
                    group.len() - at + groups[g + 1..].iter().map(|g| g.len()).sum::<usize>();
                warnings.push(finding(
                    "non_redundant.similar",
                    None,
                    format!(
                        "the near-duplicate search stopped at task {} after {} steps (its limit): {unsearched} tasks were not compared",
                        group[at].1,
                        self.similarity_work
                    ),
                ));
                break;
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

/// Each task's assignment, in the DAG's insertion order. Callers usually pass the
/// assignments in that order (a comparison of ids confirms it); otherwise they are
/// matched by task id. The last assignment for a task wins.
fn align<'a>(dag: &TaskDag, assignments: &'a [Assignment]) -> Vec<Option<&'a Assignment>> {
    if assignments.len() == dag.len() && dag.tasks().zip(assignments).all(|(t, a)| t.id == a.task) {
        return assignments.iter().map(Some).collect();
    }
    let mut by_task: FxHashMap<&str, &Assignment> =
        FxHashMap::with_capacity_and_hasher(assignments.len(), Default::default());
    by_task.extend(assignments.iter().map(|a| (a.task.as_str(), a)));
    dag.tasks()
        .map(|t| by_task.get(t.id.as_str()).copied())
        .collect()
}

fn finding(rule: &str, task: Option<&TaskId>, message: String) -> Finding {
    Finding {
        rule: rule.to_owned(),
        task: task.cloned(),
        message,
    }
}

/// One task's words, as the validator needs them.
struct TaskWords {
    /// Hash of the whole lower-cased word sequence, for exact duplicates: only for
    /// tasks that share their parent and kind with another task (the only ones that
    /// can repeat one).
    sequence: Option<u64>,
    /// A leaf task that shares its kind with another leaf: the only tasks compared
    /// for near duplicates.
    candidate: bool,
    /// Its word set, sorted and deduplicated, as a range of [`TextFacts::sets`] (empty
    /// unless `candidate`).
    set: std::ops::Range<usize>,
}

/// The words of a request and of every task, tokenised once, and only as far as the
/// checks need: word sets for near-duplicate candidates, key-word matching until every
/// key word of the request has been seen.
struct TextFacts {
    /// Per task, in insertion order.
    tasks: Vec<TaskWords>,
    /// The word sets of near-duplicate candidates, back to back.
    sets: Vec<u64>,
    /// Stemmed key words of the request, sorted and deduplicated.
    wanted: Vec<u64>,
    /// Which of `wanted` some task mentions.
    mentioned: Vec<bool>,
}

impl TextFacts {
    fn new(request: &str, dag: &TaskDag) -> Self {
        let mut wanted = Vec::new();
        each_word(request, |w| {
            if let Some(stem) = w.key_stem() {
                wanted.push(stem);
            }
        });
        wanted.sort_unstable();
        wanted.dedup();
        let mut mentioned = vec![false; wanted.len()];
        let mut unseen = wanted.len();
        // A task is a leaf when no task has it as parent; a leaf needs a word set only
        // when another leaf has its kind. Positions, not ids: no string hashing.
        let parents = dag.parent_positions();
        let mut is_parent = vec![false; parents.len()];
        for p in parents.iter().flatten() {
            if let Some(slot) = is_parent.get_mut(*p) {
                *slot = true;
            }
        }
        let mut leaves_of_kind = [0u32; TaskKind::ALL.len()];
        for (task, parent) in dag.tasks().zip(&is_parent) {
            if !*parent && let Some(n) = leaves_of_kind.get_mut(task.kind.index()) {
                *n += 1;
            }
        }
        let mut siblings: FxHashMap<(usize, usize), u32> =
            FxHashMap::with_capacity_and_hasher(dag.len(), Default::default());
        let sibling_key = |position: usize, task: &Task| {
            let parent = parents.get(position).copied().flatten();
            (parent.unwrap_or(usize::MAX), task.kind.index())
        };
        for (position, task) in dag.tasks().enumerate() {
            *siblings.entry(sibling_key(position, task)).or_default() += 1;
        }
        let mut tasks = Vec::with_capacity(dag.len());
        let mut sets = Vec::new();
        for (position, task) in dag.tasks().enumerate() {
            let has_twin = siblings
                .get(&sibling_key(position, task))
                .is_some_and(|n| *n > 1);
            let candidate = !is_parent.get(position).copied().unwrap_or(false)
                && leaves_of_kind
                    .get(task.kind.index())
                    .is_some_and(|n| *n > 1);
            let start = sets.len();
            let mut sequence = FNV_OFFSET;
            // Most tasks need no word at all once every key word has been seen.
            if has_twin || candidate || unseen > 0 {
                each_word(&task.description, |w| {
                    sequence = (sequence ^ w.full).wrapping_mul(FNV_PRIME);
                    if candidate {
                        sets.push(w.full);
                    }
                    if unseen > 0
                        && let Some(stem) = w.key_stem()
                        && let Ok(i) = wanted.binary_search(&stem)
                        && let Some(m) = mentioned.get_mut(i)
                        && !*m
                    {
                        *m = true;
                        unseen -= 1;
                    }
                });
            }
            let set = &mut sets[start..];
            set.sort_unstable();
            let mut kept = 0;
            for i in 0..set.len() {
                if i == 0 || set[i] != set[kept - 1] {
                    set[kept] = set[i];
                    kept += 1;
                }
            }
            sets.truncate(start + kept);
            tasks.push(TaskWords {
                sequence: has_twin.then_some(sequence),
                candidate,
                set: start..start + kept,
            });
        }
        TextFacts {
            tasks,
            sets,
            wanted,
            mentioned,
        }
    }

    /// Fraction of the request's key words that some task mentions (1 when the request
    /// has none).
    fn coverage(&self) -> f64 {
        if self.wanted.is_empty() {
            return 1.0;
        }
        self.mentioned.iter().filter(|m| **m).count() as f64 / self.wanted.len() as f64
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Characters of a word that make its stem: "invoices"/"invoice" and
/// "analyse"/"analysis" meet at 6.
const STEM_CHARS: usize = 6;

/// One word of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word {
    /// FNV hash of the lower-cased word.
    full: u64,
    /// FNV hash of its first [`STEM_CHARS`] lower-cased characters.
    stem: u64,
    /// Length of the original word in bytes.
    bytes: usize,
}

impl Word {
    /// The stem when the word says something about content: longer than three bytes
    /// and not a stop word.
    fn key_stem(&self) -> Option<u64> {
        (self.bytes > 3 && !is_stop_word(self.full)).then_some(self.stem)
    }
}

/// Calls `f` for every maximal run of alphanumeric characters in `text`. ASCII is
/// handled byte by byte through a table (the common case, a few instructions per
/// byte); other characters are decoded and go through Unicode case folding.
fn each_word(text: &str, mut f: impl FnMut(Word)) {
    let bytes = text.as_bytes();
    // The stem is the running hash after STEM_CHARS characters: both hashes start at
    // the same offset and mix the same characters, so one multiply per character does.
    let (mut full, mut stem, mut chars) = (FNV_OFFSET, FNV_OFFSET, 0usize);
    let mut start = usize::MAX;
    let mut i = 0;
    while i < bytes.len() {
        let class = ASCII_WORD[usize::from(bytes[i])];
        let width = if class == NON_ASCII {
            // `i` is on a character boundary: ASCII bytes never continue a sequence.
            match text.get(i..).and_then(|rest| rest.chars().next()) {
                Some(c) if c.is_alphanumeric() => {
                    if start == usize::MAX {
                        start = i;
                    }
                    for l in c.to_lowercase() {
                        full = (full ^ u64::from(u32::from(l))).wrapping_mul(FNV_PRIME);
                        chars += 1;
                        if chars == STEM_CHARS {
                            stem = full;
                        }
                    }
                    i += c.len_utf8();
                    continue;
                }
                Some(c) => c.len_utf8(),
                None => 1,
            }
        } else if class != 0 {
            if start == usize::MAX {
                start = i;
            }
            // The rest of an ASCII run in a tight loop: no start check per byte.
            let mut class = class;
            loop {
                full = (full ^ u64::from(class)).wrapping_mul(FNV_PRIME);
                chars += 1;
                if chars == STEM_CHARS {
                    stem = full;
                }
                i += 1;
                match bytes.get(i) {
                    Some(&b) if ASCII_WORD[usize::from(b)] != 0 => {
                        class = ASCII_WORD[usize::from(b)];
                        if class == NON_ASCII {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            continue;
        } else {
            1
        };
        // A separator: close the word in progress, if any.
        if start != usize::MAX {
            f(Word {
                full,
                stem: if chars < STEM_CHARS { full } else { stem },
                bytes: i - start,
            });
            (full, stem, chars, start) = (FNV_OFFSET, FNV_OFFSET, 0, usize::MAX);
        }
        i += width;
    }
    if start != usize::MAX {
        f(Word {
            full,
            stem: if chars < STEM_CHARS { full } else { stem },
            bytes: text.len() - start,
        });
    }
}

/// Marks a byte that starts (or continues) a multi-byte character in [`ASCII_WORD`].
const NON_ASCII: u8 = 0xFF;

/// Per byte: its lower-case form when it is an ASCII letter or digit, 0 for other
/// ASCII, [`NON_ASCII`] above 0x7F.
static ASCII_WORD: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c >= 0x80 {
            NON_ASCII
        } else if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            0
        };
        b += 1;
    }
    t
};

/// Full-word hashes of [`STOPWORDS`], sorted for binary search, and a filter of their
/// top bytes.
static STOP_HASHES: std::sync::LazyLock<([u64; 4], Vec<u64>)> = std::sync::LazyLock::new(|| {
    let mut v = Vec::with_capacity(STOPWORDS.len());
    for w in STOPWORDS {
        each_word(w, |word| v.push(word.full));
    }
    v.sort_unstable();
    v.dedup();
    let mut filter = [0u64; 4];
    for h in &v {
        let top = (h >> 56) as usize;
        filter[top / 64] |= 1 << (top % 64);
    }
    (filter, v)
});

/// True when `full` is the hash of a [`STOPWORDS`] entry. A 256-bit filter on the top
/// byte of the hash answers most words without the binary search.
fn is_stop_word(full: u64) -> bool {
    let (filter, hashes) = &*STOP_HASHES;
    let top = (full >> 56) as usize;
    filter[top / 64] & (1 << (top % 64)) != 0 && hashes.binary_search(&full).is_ok()
}

/// Whether two task descriptions say the same thing: the same tokens up to case, with
/// sentence punctuation, quotes and brackets around a token dropped ("Build the API"
/// and "build the API." are one task), while symbols inside or at the end of a word
/// count ("C++" is not "C#"). Descriptions with no such token at all (only punctuation)
/// are the same only when their texts are.
fn same_text(a: &str, b: &str) -> bool {
    const AROUND: &[char] = &[
        '.', ',', ';', ':', '!', '?', '"', '\'', '`', '(', ')', '[', ']', '{', '}',
    ];
    fn tokens(s: &str) -> Vec<&str> {
        s.split_whitespace()
            .map(|w| w.trim_matches(AROUND))
            .filter(|w| !w.is_empty())
            .collect()
    }
    let (ta, tb) = (tokens(a), tokens(b));
    if ta.is_empty() && tb.is_empty() {
        return a.trim() == b.trim();
    }
    ta.len() == tb.len()
        && ta.iter().zip(&tb).all(|(x, y)| {
            x.chars()
                .flat_map(char::to_lowercase)
                .eq(y.chars().flat_map(char::to_lowercase))
        })
}

/// Keeps the first [`MAX_WARNINGS_PER_RULE`] findings about a task of each rule, in
/// order, and counts the rest in one finding of the rule at the end (`12 more
/// non_redundant.similar warnings are not listed`). Findings without a task are kept.
fn cap_per_rule(warnings: &mut Vec<Finding>) {
    // (rule, listed, not listed): a handful of rules.
    let mut seen: Vec<(String, usize, usize)> = Vec::new();
    warnings.retain(|f| {
        if f.task.is_none() {
            return true;
        }
        let at = match seen.iter().position(|(rule, _, _)| *rule == f.rule) {
            Some(at) => at,
            None => {
                seen.push((f.rule.clone(), 0, 0));
                seen.len() - 1
            }
        };
        let entry = &mut seen[at];
        if entry.1 < MAX_WARNINGS_PER_RULE {
            entry.1 += 1;
            true
        } else {
            entry.2 += 1;
            false
        }
    });
    for (rule, listed, more) in seen {
        if more > 0 {
            let message =
                format!("{more} more {rule} warnings are not listed (only the first {listed} are)");
            warnings.push(finding(&rule, None, message));
        }
    }
}

/// Near duplicates among `group` (leaf tasks of one kind, in insertion order, with
/// their sorted word sets): pushes `(i, j, similarity)` for each task `i` that is at
/// least `threshold` similar to an earlier task `j` (the first found), in order of `i`.
/// Returns the first task not fully searched when `work` (see [`MAX_SIMILARITY_WORK`])
/// runs out.
///
/// Prefix filtering (the AllPairs similarity join): with words ordered rarest first in
/// the group, two sets with Jaccard similarity at least `t` share a word among the
/// first `n - ceil(t n) + 1` of each; so a task is compared only with the earlier tasks
/// indexed under its own prefix words, those whose size could reach `t` (sizes `a <=
/// b` give at most `a / b`), and no further once one is similar.
fn near_duplicates(
    group: &[(usize, &TaskId, &[u64])],
    threshold: f64,
    work: &mut usize,
    found: &mut Vec<(usize, usize, f64)>,
) -> Option<usize> {
    if group.len() < 2 {
        return None;
    }
    if threshold <= 0.0 {
        // Every pair is similar: each task to the first.
        for i in 1..group.len() {
            found.push((i, 0, jaccard(group[i].2, group[0].2)));
        }
        return None;
    }
    let mut frequency: FxHashMap<u64, u32> = FxHashMap::default();
    for (_, _, set) in group {
        for w in *set {
            *frequency.entry(*w).or_default() += 1;
        }
    }
    let rank = |w: &u64| (frequency.get(w).copied().unwrap_or(0), *w);
    let mut index: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
    // The last task each candidate was looked at for (no candidate twice per task).
    let mut looked = vec![usize::MAX; group.len()];
    let mut prefix: Vec<u64> = Vec::new();
    // The first task without words: the empty sets are similar (1) to it only.
    let mut first_empty: Option<usize> = None;
    for (i, (_, _, set)) in group.iter().enumerate() {
        if set.is_empty() {
            match first_empty {
                Some(j) => found.push((i, j, 1.0)),
                None => first_empty = Some(i),
            }
            continue;
        }
        let n = set.len();
        // Rounding may only lengthen the prefix (more candidates, never a miss).
        let keep = ((threshold * n as f64) - 1e-9).ceil().max(0.0) as usize;
        let len = (n + 1).saturating_sub(keep).clamp(1, n);
        prefix.clear();
        prefix.extend_from_slice(set);
        prefix.sort_unstable_by_key(rank);
        prefix.truncate(len);
        'search: for w in &prefix {
            let Some(earlier) = index.get(w) else {
                continue;
            };
            for &j in earlier {
                let j = j as usize;
                if *work == 0 {
                    return Some(i);
                }
                *work -= 1;
                if looked[j] == i {
                    continue;
                }
                looked[j] = i;
                let other = group[j].2;
                let (small, large) = (n.min(other.len()), n.max(other.len()));
                if (small as f64) < threshold * large as f64 - 1e-9 {
                    continue;
                }
                let sim = jaccard(set, other);
                if sim >= threshold {
                    found.push((i, j, sim));
                    break 'search;
                }
            }
        }
        let position = u32::try_from(i).unwrap_or(u32::MAX);
        for w in &prefix {
            index.entry(*w).or_default().push(position);
        }
    }
    None
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
    use std::collections::HashSet;

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

    /// Audit U6: a NaN match score passed (counted as 0) and 7.0 passed with a higher
    /// score than a real plan; NaN validator ratios were accepted.
    #[test]
    fn match_scores_and_settings_outside_their_range_fail_naming_the_value() {
        let d = dag(&[
            ("t1", TaskKind::Backend, "Build the invoices API"),
            ("t2", TaskKind::Document, "Document the invoices API"),
        ]);
        for bad in [f64::NAN, 7.0, -0.1] {
            let mut a = [
                assign("t1", Some("backend"), 0.1),
                assign("t2", Some("writer"), 0.1),
            ];
            a[1].match_score = bad;
            let r = Validator::new(&registry(), ValidatorConfig::default()).validate(
                "invoices API",
                &d,
                &a,
            );
            assert!(!r.passed && !r.checks.solvable, "{bad}: {r:?}");
            let e = r.errors.iter().find(|e| e.rule == "solvable.match_score");
            let e = e.unwrap_or_else(|| panic!("{bad}: {:?}", r.errors));
            assert_eq!(e.task, Some(TaskId::new("t2")));
            assert!(e.message.contains(&bad.to_string()), "{}", e.message);
        }
        let a = [
            assign("t1", Some("backend"), 0.1),
            assign("t2", Some("writer"), 0.1),
        ];
        let config = ValidatorConfig {
            duplicate_similarity: f64::NAN,
            budget_warning_ratio: 1.5,
            ..ValidatorConfig::default()
        };
        let r = Validator::new(&registry(), config).validate("invoices API", &d, &a);
        assert!(!r.passed);
        let rules: Vec<&str> = r.errors.iter().map(|e| e.rule.as_str()).collect();
        assert_eq!(
            rules,
            ["config.budget_warning_ratio", "config.duplicate_similarity"]
        );
        assert!(r.errors[0].message.contains("1.5"), "{:?}", r.errors);
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

    #[test]
    fn tasks_that_differ_only_in_symbols_are_not_exact_duplicates() {
        let check = |a: &str, b: &str| {
            let d = dag(&[("t1", TaskKind::Backend, a), ("t2", TaskKind::Backend, b)]);
            let assigned = [
                assign("t1", Some("backend"), 0.0),
                assign("t2", Some("backend"), 0.0),
            ];
            let r = Validator::new(&registry(), ValidatorConfig::default()).validate(
                "Port the parser to C++ and to C#",
                &d,
                &assigned,
            );
            r.errors.iter().any(|f| f.rule == "non_redundant.duplicate")
        };
        // Same words to the word hash, different tasks.
        assert!(!check("Port the parser to C++", "Port the parser to C#"));
        assert!(!check("???", "!!!"));
        // Still duplicates: case, spacing and sentence punctuation do not count.
        assert!(check("Port the parser to C++", "port  the parser to c++."));
        assert!(check("Build \"the\" API", "build the (API)"));
        assert!(check("???", " ??? "));
    }

    #[test]
    fn reordered_leaf_tasks_warn_as_near_duplicates_and_stems_count_for_coverage() {
        let d = dag(&[
            (
                "t1",
                TaskKind::Backend,
                "Write the invoice export service for Müller",
            ),
            (
                "t2",
                TaskKind::Backend,
                "the invoice export service: write for MÜLLER",
            ),
            (
                "t3",
                TaskKind::Test,
                "the invoice export service: write for MÜLLER",
            ),
        ]);
        let a = [
            assign("t1", Some("backend"), 0.9),
            assign("t2", Some("backend"), 0.9),
            assign("t3", Some("writer"), 0.9),
        ];
        let r = Validator::new(&registry(), ValidatorConfig::default()).validate(
            "Export invoices for Müller",
            &d,
            &a,
        );
        assert!(r.passed, "{:?}", r.errors);
        let similar: Vec<_> = r
            .warnings
            .iter()
            .filter(|f| f.rule == "non_redundant.similar")
            .collect();
        // Same words in another order, same kind: a warning; another kind: none.
        assert_eq!(similar.len(), 1, "{similar:?}");
        assert_eq!(similar[0].task.as_ref().map(TaskId::as_str), Some("t2"));
        assert!(similar[0].message.contains("100% similar to task t1"));
        // "invoices" meets "invoice" at the stem; "Müller" is folded across cases.
        assert!(
            (r.metrics.coverage - 1.0).abs() < 1e-9,
            "{}",
            r.metrics.coverage
        );
    }

    /// `n` leaf tasks of one kind, each `text(k)` (k from 1), all on the writer.
    fn many(n: usize, text: impl Fn(usize) -> String) -> (TaskDag, Vec<Assignment>) {
        let mut d = TaskDag::new(Limits::default());
        let mut a = Vec::new();
        for k in 1..=n {
            let id = format!("t{k}");
            d.add_task(
                Task::new(TaskId::new(&id), TaskKind::Document, text(k)),
                None,
            )
            .unwrap();
            a.push(assign(&id, Some("writer"), 0.0));
        }
        (d, a)
    }

    fn with_rule<'a>(findings: &'a [Finding], rule: &str) -> Vec<&'a Finding> {
        findings.iter().filter(|f| f.rule == rule).collect()
    }

    /// Audit P9 F4: 600 near-identical tasks gave one warning per similar pair (a
    /// 940 KB answer); now the first ten similar tasks are listed and the rest counted,
    /// and the plan still passes with the same score.
    #[test]
    fn many_similar_tasks_give_a_bounded_list_of_warnings_with_the_count() {
        let text = |k: usize| {
            format!(
                "Write the onboarding guide chapter about billing, invoices, refunds, payment \
                 methods, taxes, currencies, receipts, disputes and account settings for \
                 customers of region {k}"
            )
        };
        let (d, a) = many(600, text);
        let r = Validator::new(&registry(), ValidatorConfig::default()).validate(
            "Write the onboarding guide",
            &d,
            &a,
        );
        assert!(r.passed, "{:?}", r.errors);
        let similar = with_rule(&r.warnings, "non_redundant.similar");
        assert_eq!(similar.len(), MAX_WARNINGS_PER_RULE + 1, "{similar:?}");
        let listed: Vec<_> = similar.iter().filter_map(|f| f.task.as_ref()).collect();
        assert_eq!(listed.len(), MAX_WARNINGS_PER_RULE);
        assert_eq!(listed[0].as_str(), "t2");
        assert!(
            similar[0].message.contains("similar to task t1"),
            "{similar:?}"
        );
        let last = similar.last().unwrap();
        assert_eq!(last.task, None);
        assert_eq!(
            last.message,
            "589 more non_redundant.similar warnings are not listed (only the first 10 are)"
        );
        assert!(r.warnings.len() < 20, "{:?}", r.warnings);
        // Warnings never change the verdict or the score.
        let (few, fa) = many(2, text);
        let one = Validator::new(&registry(), ValidatorConfig::default()).validate(
            "Write the onboarding guide",
            &few,
            &fa,
        );
        assert!(
            (one.score - r.score).abs() < 1e-9,
            "{} vs {}",
            one.score,
            r.score
        );
    }

    /// Exact duplicates stay errors, every one of them; near duplicates past the 300th
    /// task of a kind are found (the old search silently compared only the first 300).
    #[test]
    fn exact_duplicates_are_all_errors_and_late_near_duplicates_are_found() {
        let (d, a) = many(500, |_| "Write the release notes".to_owned());
        let r = Validator::new(&registry(), ValidatorConfig::default()).validate(
            "Write the release notes",
            &d,
            &a,
        );
        assert!(!r.passed);
        assert_eq!(with_rule(&r.errors, "non_redundant.duplicate").len(), 499);
        let (d, a) = many(500, |k| match k {
            401 => "Summarise the incident timeline for the payment outage".to_owned(),
            450 => "the payment outage: summarise the incident timeline for".to_owned(),
            _ => format!("Write chapter {k} of the guide"),
        });
        let r = Validator::new(&registry(), ValidatorConfig::default()).validate(
            "Write the guide",
            &d,
            &a,
        );
        let similar = with_rule(&r.warnings, "non_redundant.similar");
        assert_eq!(similar.len(), 1, "{similar:?}");
        assert_eq!(similar[0].task.as_ref().map(TaskId::as_str), Some("t450"));
        assert!(similar[0].message.contains("100% similar to task t401"));
    }

    /// Word sets that share their rarest words with many others and are rarely similar:
    /// past its work limit (lowered here) the search stops and says where.
    #[test]
    fn the_near_duplicate_search_stops_at_its_work_limit_and_says_so() {
        let (d, a) = many(1000, |k| {
            // Eight of sixteen words, picked by the bits of a scrambled k.
            let bits = (k as u32).wrapping_mul(2_654_435_761) >> 8;
            let picked: Vec<String> = (0..16)
                .filter(|i| bits & (1 << i) != 0)
                .take(8)
                .map(|i| format!("word{i}"))
                .collect();
            picked.join(" ")
        });
        let registry = registry();
        let mut v = Validator::new(&registry, ValidatorConfig::default());
        let full = v.validate("Write", &d, &a);
        assert!(
            !full.warnings.iter().any(|f| f.message.contains("stopped")),
            "{:?}",
            full.warnings
        );
        v.similarity_work = 1_000;
        let r = v.validate("Write", &d, &a);
        let stopped: Vec<_> = r
            .warnings
            .iter()
            .filter(|f| f.message.contains("near-duplicate search stopped"))
            .collect();
        assert_eq!(stopped.len(), 1, "{:?}", r.warnings);
        assert!(
            stopped[0].message.contains("after 1000 steps (its limit)"),
            "{}",
            stopped[0].message
        );
        assert_eq!(stopped[0].rule, "non_redundant.similar");
        assert_eq!((r.passed, r.score), (full.passed, full.score));
    }

    /// Prefix filtering finds what comparing every pair finds: for each task, whether
    /// an earlier task of its kind is similar at the threshold.
    #[test]
    fn prefix_filtering_agrees_with_comparing_every_pair() {
        let texts: Vec<String> = (0..120)
            .map(|k: u32| {
                let bits = k.wrapping_mul(2_654_435_761) >> 7;
                (0..12)
                    .filter(|i| bits & (1 << i) != 0 || *i == k % 12)
                    .map(|i| format!("w{i}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let (d, _) = many(texts.len(), |k| texts[k - 1].clone());
        let text = TextFacts::new("", &d);
        let ids: Vec<TaskId> = (1..=texts.len())
            .map(|k| TaskId::new(format!("t{k}")))
            .collect();
        let group: Vec<(usize, &TaskId, &[u64])> = text
            .tasks
            .iter()
            .zip(&ids)
            .map(|(w, id)| (0, id, &text.sets[w.set.clone()]))
            .collect();
        for threshold in [0.0, 0.3, 0.5, 0.7, 0.9, 1.0] {
            let mut work = usize::MAX;
            let mut found = Vec::new();
            assert_eq!(
                near_duplicates(&group, threshold, &mut work, &mut found),
                None
            );
            let fast: HashSet<usize> = found.iter().map(|(i, _, _)| *i).collect();
            for &(i, j, sim) in &found {
                assert!(j < i && sim >= threshold, "{threshold}: {i} {j} {sim}");
            }
            let slow: HashSet<usize> = (0..group.len())
                .filter(|&i| (0..i).any(|j| jaccard(group[i].2, group[j].2) >= threshold))
                .collect();
            assert_eq!(fast, slow, "threshold {threshold}");
        }
    }

    #[test]
    fn stop_words_are_found_through_the_filter() {
        let hash = |w: &str| {
            let mut h = 0;
            each_word(w, |word| h = word.full);
            h
        };
        for w in STOPWORDS {
            assert!(is_stop_word(hash(w)), "{w}");
        }
        for w in [
            "invoices",
            "saas",
            "business",
            "marketing",
            "analyse",
            "deploy",
        ] {
            assert!(!is_stop_word(hash(w)), "{w}");
        }
    }

    #[test]
    fn words_split_on_non_alphanumerics_and_fold_case() {
        let mut words = Vec::new();
        each_word("Straße-API, v2 ÉTÉ", |w| words.push(w));
        assert_eq!(words.len(), 4);
        let mut again = Vec::new();
        each_word("STRASSE api v2 été", |w| again.push(w));
        // "ß" lower-cases to itself, so only the ASCII and accented words meet.
        assert_ne!(words[0].full, again[0].full);
        assert_eq!(words[1].full, again[1].full);
        assert_eq!(words[2], again[2]);
        assert_eq!(words[3].full, again[3].full);
        assert_eq!(words[0].bytes, "Straße".len());
    }
}
