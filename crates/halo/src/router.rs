//! The router: rules → text match → capability, blended with success rate, cost and
//! load, with a routing cache and outcome learning.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use genesis_core::decimal::push_fixed2;
use genesis_core::{AgentId, Task, TaskId, TaskKind, Usd};
use serde::{Deserialize, Serialize};

use crate::plan::{PlanConfig, PlanModel, PlanScratch};
use crate::rules::{CompiledRules, RuleMatch};
use crate::text::{QueryWords, TextConfig, TextIndex, camel8, lower8};
use crate::{AgentRegistry, HaloError, RoutingRules};

/// Router settings. Every weight is a non-negative finite number.
///
/// A candidate's score is
///
/// ```text
/// text_weight·similarity + kind_weight·[agent lists the task's kind, kind != generic]
///   + skill_weight·(share of required skills the agent has) + success_weight·success_rate
///   − cost_weight·cost_tier.unit() − load_weight·load/max_concurrent_tasks
/// ```
///
/// and a rule's agent gets `rule_weight` on top. When a plan is routed together
/// ([`Router::route_all`]), each task's best `plan.candidates` candidates also get
/// `plan.weight ×` their fit with the other tasks' likely agents (see [`PlanConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Text features and the description/example blend.
    pub text: TextConfig,
    /// The plan-context stage of [`Router::route_all`].
    pub plan: PlanConfig,
    /// Weight of the text similarity (cosine, in `[0, 1]`).
    pub text_weight: f64,
    /// Bonus for agents that list the task's kind.
    pub kind_weight: f64,
    /// Bonus for the share of the task's required skills the agent has.
    pub skill_weight: f64,
    /// Weight of the agent's success rate.
    pub success_weight: f64,
    /// Penalty per unit of cost tier.
    pub cost_weight: f64,
    /// Penalty per unit of load (share of the agent's capacity already used).
    pub load_weight: f64,
    /// Bonus that puts a matching rule's agent first.
    pub rule_weight: f64,
    /// Least similarity for a text match; below it only kinds (capability) count.
    pub min_text_similarity: f64,
    /// Similarity that counts as a perfect text fit in `match_score`.
    pub full_match_similarity: f64,
    /// Alternatives returned with each decision, 1 to 15 (a ranking keeps the 16 best
    /// agents: the chosen one and 15 others).
    pub top_k: usize,
    /// Routing cache entries before the cache is cleared (`0` = no cache).
    pub cache_capacity: usize,
    /// Successful task descriptions learned per agent, at most.
    pub max_examples_per_agent: usize,
    /// Whether successful outcomes add the task description to the agent's examples.
    pub learn_examples: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            text: TextConfig::default(),
            plan: PlanConfig::default(),
            text_weight: 1.0,
            kind_weight: 0.35,
            skill_weight: 0.2,
            success_weight: 0.1,
            cost_weight: 0.05,
            load_weight: 0.1,
            rule_weight: 1.0,
            min_text_similarity: 0.05,
            full_match_similarity: 0.5,
            top_k: 5,
            cache_capacity: 10_000,
            max_examples_per_agent: 500,
            learn_examples: true,
        }
    }
}

impl RouterConfig {
    /// Checks ranges.
    ///
    /// # Errors
    /// [`HaloError::InvalidConfig`] naming the setting and value.
    pub fn validate(&self) -> Result<(), HaloError> {
        let weights = [
            ("text_weight", self.text_weight),
            ("kind_weight", self.kind_weight),
            ("skill_weight", self.skill_weight),
            ("success_weight", self.success_weight),
            ("cost_weight", self.cost_weight),
            ("load_weight", self.load_weight),
            ("rule_weight", self.rule_weight),
            (
                "text.description_weight",
                f64::from(self.text.description_weight),
            ),
            ("text.example_weight", f64::from(self.text.example_weight)),
            ("text.unseen_boost", f64::from(self.text.unseen_boost)),
            ("text.learning_rate", f64::from(self.text.learning_rate)),
            ("text.softmax_scale", f64::from(self.text.softmax_scale)),
            ("text.l2", f64::from(self.text.l2)),
            ("text.bm25_weight", f64::from(self.text.bm25_weight)),
            (
                "text.bm25_unseen_weight",
                f64::from(self.text.bm25_unseen_weight),
            ),
            ("text.bm25_k1", f64::from(self.text.bm25_k1)),
            ("plan.weight", f64::from(self.plan.weight)),
            (
                "plan.unseen_tag_weight",
                f64::from(self.plan.unseen_tag_weight),
            ),
        ];
        for (field, value) in weights {
            if !value.is_finite() || value < 0.0 {
                return Err(HaloError::InvalidConfig {
                    field,
                    value,
                    rule: "must be a finite number >= 0",
                });
            }
        }
        if !(0.0..=1.0).contains(&self.min_text_similarity) {
            return Err(HaloError::InvalidConfig {
                field: "min_text_similarity",
                value: self.min_text_similarity,
                rule: "must be in [0, 1]",
            });
        }
        if !(self.full_match_similarity > 0.0 && self.full_match_similarity <= 1.0) {
            return Err(HaloError::InvalidConfig {
                field: "full_match_similarity",
                value: self.full_match_similarity,
                rule: "must be in (0, 1]",
            });
        }
        if !(0.0..=1.0).contains(&self.text.bm25_b) {
            return Err(HaloError::InvalidConfig {
                field: "text.bm25_b",
                value: f64::from(self.text.bm25_b),
                rule: "must be in [0, 1]",
            });
        }
        if !(self.plan.temperature.is_finite() && self.plan.temperature > 0.0) {
            return Err(HaloError::InvalidConfig {
                field: "plan.temperature",
                value: f64::from(self.plan.temperature),
                rule: "must be a finite number > 0",
            });
        }
        if !(1..=MAX_CANDIDATES).contains(&self.plan.candidates) {
            return Err(HaloError::InvalidConfig {
                field: "plan.candidates",
                value: self.plan.candidates as f64,
                rule: "must be in 1..=16",
            });
        }
        // A ranking keeps MAX_CANDIDATES agents: the chosen one and at most 15 others.
        const _: () = assert!(MAX_CANDIDATES == 16, "update the top_k rule text");
        if !(1..MAX_CANDIDATES).contains(&self.top_k) {
            return Err(HaloError::InvalidConfig {
                field: "top_k",
                value: self.top_k as f64,
                rule: "must be in 1..=15",
            });
        }
        if self.text.char_min > self.text.char_max || self.text.char_max > 8 {
            return Err(HaloError::InvalidConfig {
                field: "text.char_min",
                value: f64::from(self.text.char_min),
                rule: "must be <= text.char_max, and text.char_max <= 8",
            });
        }
        Ok(())
    }
}

/// Which layer made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RouteLayer {
    /// An explicit rule matched.
    Rule,
    /// The task text matched the agent's description, skills or examples.
    Text,
    /// No text match; the agent lists the task's kind.
    Capability,
    /// No agent could take the task.
    Unassigned,
}

impl RouteLayer {
    /// The snake_case name used in JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteLayer::Rule => "rule",
            RouteLayer::Text => "text",
            RouteLayer::Capability => "capability",
            RouteLayer::Unassigned => "unassigned",
        }
    }
}

/// A ranked alternative agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Alternative {
    /// The agent.
    pub agent: AgentId,
    /// Its blended score (same scale as [`RouteDecision::score`]).
    pub score: f64,
}

/// Where one task goes, and why. Field names are part of the stable JSON contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteDecision {
    /// The task.
    pub task_id: TaskId,
    /// The chosen agent; `None` when unassigned.
    pub agent: Option<AgentId>,
    /// The chosen agent's blended score (see [`RouterConfig`]); 0 when unassigned.
    pub score: f64,
    /// How well the agent fits the task, in `[0, 1]`: 1 for a rule,
    /// `min(1, similarity / full_match_similarity)` for a text match, at least 0.6 when
    /// the agent lists the task's kind, 0 when unassigned.
    pub match_score: f64,
    /// The layer that decided.
    pub layer: RouteLayer,
    /// Human-readable reason: the rule, the matched words, or the capability. Shared
    /// (`Arc<str>`): decisions from the routing cache point at one rendered text instead
    /// of copying it; serialises as a plain JSON string.
    pub explanation: Arc<str>,
    /// Next-best agents, best first, for re-routing (the chosen agent excluded).
    pub alternatives: Vec<Alternative>,
}

/// A task that could not be assigned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnassignedTask {
    /// The task.
    pub task_id: TaskId,
    /// Why.
    pub reason: String,
}

/// Decisions for a set of tasks under per-plan capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingPlan {
    /// One decision per task, in input order.
    pub decisions: Vec<RouteDecision>,
    /// Tasks no agent could take, with reasons.
    pub unassigned: Vec<UnassignedTask>,
    /// Tasks assigned per agent (agents with none are left out).
    pub load: BTreeMap<AgentId, u32>,
}

impl RoutingPlan {
    /// Number of unassigned tasks.
    pub fn unassigned_count(&self) -> usize {
        self.unassigned.len()
    }

    /// Number of assigned tasks.
    pub fn assigned_count(&self) -> usize {
        self.decisions.len() - self.unassigned.len()
    }

    /// The decision for a task.
    pub fn decision(&self, task_id: &str) -> Option<&RouteDecision> {
        self.decisions
            .iter()
            .find(|d| d.task_id.as_str() == task_id)
    }
}

/// Routing cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to score.
    pub misses: u64,
    /// Entries currently cached.
    pub entries: u64,
    /// Times the cache was dropped because the registry, rules or learned state changed.
    pub invalidations: u64,
}

/// One outcome to learn from (see [`Router::record_outcomes`]).
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    /// The task that ran.
    pub task: &'a Task,
    /// The agent that ran it.
    pub agent: &'a AgentId,
    /// Whether it succeeded.
    pub success: bool,
    /// How long it took.
    pub latency: Duration,
    /// What it cost.
    pub cost: Usd,
    /// The plan (user request) the task belonged to, if known: on success the agent
    /// records it in [`AgentProfile::plans`](crate::AgentProfile::plans), which teaches
    /// the plan-context stage of [`Router::route_all`] which agents work together.
    pub plan: Option<&'a str>,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    agent: u32,
    sim: f32,
    /// Score before load.
    base: f32,
    kind: bool,
}

const EMPTY: Candidate = Candidate {
    agent: 0,
    sim: 0.0,
    base: 0.0,
    kind: false,
};

/// The load-independent part of routing one task; what the cache stores.
#[derive(Debug)]
struct Ranking {
    /// Matching rules, highest priority first.
    rules: Vec<RuleMatch>,
    /// Best candidates by base score, best first (`candidates[..n]`).
    candidates: [Candidate; MAX_CANDIDATES],
    n: usize,
    best_sim: f32,
    /// Query words, to explain text matches.
    words: QueryWords,
    /// The explanation of the first choice (first rule, else best candidate, else the
    /// unassigned reason), reused whenever capacity does not change the choice.
    top_explanation: Arc<str>,
    /// Why rules and text matching were skipped ([`Router::route_all_by_kind_into`]).
    layers_off: Option<Arc<str>>,
    /// The description has no word to match (empty, blank, only symbols, emoji or stop
    /// words: the tokenizer kept no word, or it has no letter or digit): only a rule can
    /// route the task (audit H11 H2).
    no_words: bool,
}

/// A ranking from the cache, or freshly computed when the cache is off.
enum Ranked {
    Shared(Arc<Ranking>),
    Owned(Box<Ranking>),
}

impl std::ops::Deref for Ranked {
    type Target = Ranking;

    fn deref(&self) -> &Ranking {
        match self {
            Ranked::Shared(r) => r,
            Ranked::Owned(r) => r,
        }
    }
}

impl Ranking {
    fn empty() -> Ranking {
        Ranking {
            rules: Vec::new(),
            candidates: [EMPTY; MAX_CANDIDATES],
            n: 0,
            best_sim: 0.0,
            words: QueryWords::default(),
            top_explanation: Arc::from(""),
            layers_off: None,
            no_words: false,
        }
    }

    fn candidates(&self) -> &[Candidate] {
        &self.candidates[..self.n]
    }
}

thread_local! {
    /// The buffer explanations are written into before they are shared as `Arc<str>`
    /// (one allocation of the exact size per explanation).
    static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Hashes of an agent's examples and plans (trimmed), for [`Router::record_outcomes`].
struct Known {
    examples: genesis_core::fasthash::FxHashSet<u64>,
    plans: genesis_core::fasthash::FxHashSet<u64>,
}

impl Known {
    fn of(p: &crate::AgentProfile) -> Self {
        Known {
            examples: p.examples.iter().map(|e| text_hash(e.trim())).collect(),
            plans: p.plans.iter().map(|x| text_hash(x.trim())).collect(),
        }
    }
}

/// A 64-bit hash of a text (FxHash: fast, and collisions only cost a skipped example).
fn text_hash(text: &str) -> u64 {
    use std::hash::BuildHasher;
    genesis_core::fasthash::FxBuildHasher::default().hash_one(text)
}

/// The load of agent `a` (agents past the end of `load` hold nothing).
#[inline]
fn load_at(load: &[u32], a: usize) -> u32 {
    load.get(a).copied().unwrap_or(0)
}

/// `weight × load / max`, the load penalty of an agent holding `load` of its `max`
/// tasks: exactly `0.0` without load (weights are finite and ≥ 0, `max` ≥ 1), with no
/// division on the common path.
#[inline]
fn load_penalty(weight: f64, load: u32, max: u32) -> f64 {
    if load == 0 {
        0.0
    } else {
        weight * f64::from(load) / f64::from(max)
    }
}

/// Renders an explanation through the thread's text buffer into an `Arc<str>`.
fn render(f: impl FnOnce(&mut String)) -> Arc<str> {
    TEXT.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => {
            s.clear();
            f(&mut s);
            Arc::from(s.as_str())
        }
        Err(_) => {
            let mut s = String::with_capacity(160);
            f(&mut s);
            Arc::from(s)
        }
    })
}

/// How many spare rankings ([`PLAN_RANKINGS`]) a thread keeps between uncached plans:
/// about 600 bytes each, so at most ≈ 600 KiB per thread.
const PLAN_POOL_MAX: usize = 1024;

thread_local! {
    /// The buffers of the last uncached ranking on this thread, reused by the next one
    /// (so routing without a cache does not allocate a ranking per call).
    static SPARE_RANKING: std::cell::Cell<Option<Box<Ranking>>> =
        const { std::cell::Cell::new(None) };
    /// The rankings of the last uncached plan on this thread (at most
    /// [`PLAN_POOL_MAX`]), reused by the next one: a plan needs every task's ranking at
    /// once, so one spare is not enough.
    #[allow(clippy::vec_box, reason = "the boxes move into `Ranked::Owned` and back")]
    static PLAN_RANKINGS: std::cell::RefCell<Vec<Box<Ranking>>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// The plan-context buffers, reused by the next plan on this thread.
    static PLAN_SCRATCH: std::cell::RefCell<PlanScratch> =
        std::cell::RefCell::new(PlanScratch::default());
}

/// Keeps the best `MAX_CANDIDATES` candidates without sorting everything, in the
/// ranking's own array (no initialised copy to move in afterwards; entries past `n` are
/// stale and never read).
struct TopN<'a> {
    items: &'a mut [Candidate; MAX_CANDIDATES],
    n: usize,
    /// Index of the worst kept item once full.
    worst: usize,
}

impl<'a> TopN<'a> {
    fn new(items: &'a mut [Candidate; MAX_CANDIDATES]) -> Self {
        TopN {
            items,
            n: 0,
            worst: 0,
        }
    }

    /// Sorts the kept candidates best first (base descending by `total_cmp`, then agent
    /// ascending) and returns how many there are. The order is total (agents are
    /// distinct), so this insertion sort (at most 16 items, usually a handful) gives
    /// exactly what any other sort would.
    fn finish(self) -> usize {
        let c = &mut self.items[..self.n];
        let before = |x: &Candidate, y: &Candidate| {
            y.base
                .total_cmp(&x.base)
                .then(x.agent.cmp(&y.agent))
                .is_lt()
        };
        for i in 1..c.len() {
            let x = c[i];
            let mut j = i;
            while j > 0 && before(&x, &c[j - 1]) {
                c[j] = c[j - 1];
                j -= 1;
            }
            c[j] = x;
        }
        self.n
    }

    fn better(x: &Candidate, y: &Candidate) -> bool {
        x.base > y.base || (x.base == y.base && x.agent < y.agent)
    }

    fn offer(&mut self, c: Candidate) {
        if self.n < MAX_CANDIDATES {
            self.items[self.n] = c;
            self.n += 1;
            if self.n == MAX_CANDIDATES {
                self.find_worst();
            }
            return;
        }
        if Self::better(&c, &self.items[self.worst]) {
            self.items[self.worst] = c;
            self.find_worst();
        }
    }

    fn find_worst(&mut self) {
        let mut worst = 0;
        for i in 1..self.n {
            if Self::better(&self.items[worst], &self.items[i]) {
                worst = i;
            }
        }
        self.worst = worst;
    }

    fn contains(&self, agent: u32) -> bool {
        self.items[..self.n].iter().any(|c| c.agent == agent)
    }
}

/// Identity hasher for keys that already are hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

type Cache = HashMap<u128, Arc<Ranking>, BuildHasherDefault<PassThrough>>;

/// Everything derived from one registry + rules + config; replaced as a whole on change.
struct State {
    registry: Arc<AgentRegistry>,
    rules: Arc<CompiledRules>,
    index: Arc<TextIndex>,
    /// Tags and recorded plan co-usage, for the plan-context stage.
    plan: Arc<PlanModel>,
    /// success_weight·success_rate − cost_weight·cost unit, per agent.
    prior: Vec<f32>,
    /// Bit mask of listed kinds, per agent.
    kinds: Vec<u32>,
    /// Lower-cased skills, per agent.
    skills: Vec<Vec<String>>,
    /// Agents listing each kind, best prior first.
    by_kind: Vec<Vec<u32>>,
    cache: RwLock<Cache>,
}

const MAX_CANDIDATES: usize = 16;

impl State {
    fn build(
        registry: Arc<AgentRegistry>,
        rules: Arc<CompiledRules>,
        index: Option<Arc<TextIndex>>,
        plan: Option<Arc<PlanModel>>,
        cfg: &RouterConfig,
    ) -> State {
        let index =
            index.unwrap_or_else(|| Arc::new(TextIndex::build(registry.as_slice(), cfg.text)));
        let plan = plan.unwrap_or_else(|| Arc::new(PlanModel::build(registry.as_slice())));
        let prior: Vec<f32> = registry
            .iter()
            .map(|p| {
                (cfg.success_weight * p.success_rate - cfg.cost_weight * p.cost_tier.unit()) as f32
            })
            .collect();
        let kinds: Vec<u32> = registry
            .iter()
            .map(|p| p.task_kinds.iter().fold(0u32, |m, k| m | (1 << k.index())))
            .collect();
        let skills = registry
            .iter()
            .map(|p| p.skills.iter().map(|s| s.trim().to_lowercase()).collect())
            .collect();
        let mut by_kind = vec![Vec::new(); TaskKind::ALL.len()];
        for (k, list) in by_kind.iter_mut().enumerate() {
            for (a, m) in kinds.iter().enumerate() {
                if m & (1 << k) != 0 {
                    list.push(a as u32);
                }
            }
            list.sort_by(|&a, &b| prior[b as usize].total_cmp(&prior[a as usize]));
        }
        State {
            registry,
            rules,
            index,
            plan,
            prior,
            kinds,
            skills,
            by_kind,
            cache: RwLock::new(Cache::default()),
        }
    }

    fn skill_fit(&self, agent: usize, task: &Task) -> f32 {
        if task.required_skills.is_empty() {
            return 0.0;
        }
        let have = &self.skills[agent];
        let n = task
            .required_skills
            .iter()
            .filter(|s| have.iter().any(|h| h.eq_ignore_ascii_case(s.trim())))
            .count();
        n as f32 / task.required_skills.len() as f32
    }

    /// Ranks a task into `r`, overwriting it (so a plan can reuse one allocation).
    fn rank_into(&self, task: &Task, cfg: &RouterConfig, r: &mut Ranking) {
        // A generic task carries no kind information: listing `generic` makes an agent a
        // capability fallback, but earns no bonus over a text match.
        let kind_bit = if task.kind == TaskKind::Generic {
            0
        } else {
            1u32 << task.kind.index()
        };
        let min_sim = cfg.min_text_similarity as f32;
        let (tw, kw, sw) = (
            cfg.text_weight as f32,
            cfg.kind_weight as f32,
            cfg.skill_weight as f32,
        );
        let mut top = TopN::new(&mut r.candidates);
        let mut best_sim = 0.0f32;
        let skills = !task.required_skills.is_empty();
        let base = |a: usize, sim: f32, kind: bool| {
            let b = tw * sim + if kind { kw } else { 0.0 } + self.prior[a];
            if skills {
                b + sw * self.skill_fit(a, task)
            } else {
                b
            }
        };
        let mut scan = self.rules.scan();
        let want_raw = self.rules.needs_words();
        let feed = |h: u64| self.rules.feed(&mut scan, h);
        // Agents below the text threshold only matter when they list the task's kind.
        let kind_list = &self.by_kind[task.kind.index()];
        let best = self.index.score_into(
            &task.description,
            want_raw,
            min_sim,
            |a| self.kinds[a] & kind_bit != 0,
            &mut r.words,
            feed,
            |a, sim| {
                let kind = self.kinds[a] & kind_bit != 0;
                if sim >= min_sim || kind {
                    top.offer(Candidate {
                        agent: a as u32,
                        sim,
                        base: base(a, sim, kind),
                        kind,
                    });
                }
            },
        );
        let rules = &mut r.rules;
        rules.clear();
        self.rules.matches(&scan, task, |m| {
            rules.push(m);
            rules.len() < MAX_CANDIDATES
        });
        best_sim = best_sim.max(best);
        // A description without a word says nothing an agent could act on: after the
        // rules, it is unassigned rather than handed to the agents listing its kind
        // (for a generic task, the catch-all agents listing `generic`).
        let no_words = r.words.is_empty() || !task.description.chars().any(char::is_alphanumeric);
        // Agents listing the kind that the text did not reach (best prior first).
        for &a in kind_list.iter().take(MAX_CANDIDATES) {
            if no_words {
                break;
            }
            if !top.contains(a) {
                top.offer(Candidate {
                    agent: a,
                    sim: 0.0,
                    base: base(a as usize, 0.0, kind_bit != 0),
                    kind: kind_bit != 0,
                });
            }
        }
        r.n = top.finish();
        r.best_sim = best_sim;
        r.layers_off = None;
        r.no_words = no_words;
        r.top_explanation = render(|out| {
            if let Some(m) = r.rules.first() {
                self.explain_rule(task, m, out);
            } else if let Some(c) = r.candidates().first() {
                self.explain_candidate(task, r, c, cfg, out);
            } else {
                self.explain_nobody(task, r, cfg, out);
            }
        });
    }

    /// Ranks a task by its kind alone (the capability layer): the agents listing the
    /// kind, best prior (success rate, cost) first; no rules, no text. `why` says why
    /// the other layers are off and ends up in the explanation.
    ///
    /// Agents listing `generic` follow as fallbacks (scored without the kind bonus), so
    /// that a task whose kind's agents are all failing or open can move to them: with
    /// text matching off there is no other way to find an alternative. A task whose
    /// kind no agent lists stays unassigned, as with text matching on.
    fn rank_by_kind_into(&self, task: &Task, cfg: &RouterConfig, why: &Arc<str>, r: &mut Ranking) {
        let kw = cfg.kind_weight as f32;
        let sw = cfg.skill_weight as f32;
        let base = |i: usize, kind: bool| {
            let mut b = if kind { kw } else { 0.0 } + self.prior[i];
            if !task.required_skills.is_empty() {
                b += sw * self.skill_fit(i, task);
            }
            b
        };
        let mut top = TopN::new(&mut r.candidates);
        let listed = &self.by_kind[task.kind.index()];
        for &a in listed {
            top.offer(Candidate {
                agent: a,
                sim: 0.0,
                base: base(a as usize, true),
                kind: true,
            });
        }
        if !listed.is_empty() && task.kind != TaskKind::Generic {
            for &a in &self.by_kind[TaskKind::Generic.index()] {
                if !top.contains(a) {
                    top.offer(Candidate {
                        agent: a,
                        sim: 0.0,
                        base: base(a as usize, false),
                        kind: false,
                    });
                }
            }
        }
        r.n = top.finish();
        r.rules.clear();
        r.words = QueryWords::default();
        r.best_sim = 0.0;
        r.layers_off = Some(Arc::clone(why));
        r.no_words = false;
        r.top_explanation = render(|out| match r.candidates().first() {
            Some(c) => self.explain_candidate(task, r, c, cfg, out),
            None => self.explain_nobody(task, r, cfg, out),
        });
    }

    fn explain_rule(&self, task: &Task, m: &RuleMatch, out: &mut String) {
        let agents = self.registry.as_slice();
        out.push_str("rule \"");
        let rule = self.rules.rule(m.rule);
        out.push_str(rule.map(|x| x.name.as_str()).unwrap_or("?"));
        out.push_str("\" matched");
        if let Some(rule) = rule {
            if !rule.kinds.is_empty() {
                out.push_str(" (kind ");
                out.push_str(task.kind.as_str());
                out.push(')');
            }
            if let Some(k) = m.keyword.and_then(|k| self.rules.keyword(k)) {
                out.push_str(" (keyword \"");
                out.push_str(k);
                out.push_str("\")");
            }
            if !rule.metadata.is_empty() {
                out.push_str(" (metadata ");
                for (i, (k, v)) in rule.metadata.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(k);
                    out.push('=');
                    out.push_str(v);
                }
                out.push(')');
            }
        }
        out.push_str(": routed to ");
        out.push_str(agents[m.agent].id.as_str());
    }

    fn explain_candidate(
        &self,
        task: &Task,
        r: &Ranking,
        c: &Candidate,
        cfg: &RouterConfig,
        out: &mut String,
    ) {
        let a = c.agent as usize;
        let p = &self.registry.as_slice()[a];
        if f64::from(c.sim) >= cfg.min_text_similarity {
            out.push_str("text match: ");
            let n = self
                .index
                .write_matched_words(&r.words, &task.description, a, 4, out);
            if n == 0 {
                out.push_str("related words");
            }
            out.push_str(" in ");
            out.push_str(p.id.as_str());
            out.push_str(if self.index.has_examples(a) {
                "'s description, skills and examples (similarity "
            } else {
                "'s description and skills (similarity "
            });
            push_fixed2(out, f64::from(c.sim));
            out.push(')');
            if c.kind {
                out.push_str("; lists kind ");
                out.push_str(task.kind.as_str());
            }
        } else {
            if self.kinds[a] & (1 << task.kind.index()) != 0 {
                out.push_str("capability: ");
                out.push_str(p.id.as_str());
                out.push_str(" lists kind ");
                out.push_str(task.kind.as_str());
            } else {
                // A by-kind fallback (`rank_by_kind_into`).
                out.push_str("fallback: ");
                out.push_str(p.id.as_str());
                out.push_str(" lists kind generic, not ");
                out.push_str(task.kind.as_str());
            }
            out.push_str(" (success rate ");
            push_fixed2(out, p.success_rate);
            out.push_str(", cost ");
            out.push_str(p.cost_tier.as_str());
            out.push(')');
            if let Some(why) = &r.layers_off {
                out.push_str("; rules and text matching off: ");
                out.push_str(why);
                return;
            }
            if f64::from(r.best_sim) < cfg.min_text_similarity {
                out.push_str("; no rule or text match (best similarity ");
            } else {
                out.push_str("; text matches scored lower (best similarity ");
            }
            push_fixed2(out, f64::from(r.best_sim));
            out.push(')');
        }
    }

    fn explain_nobody(&self, task: &Task, r: &Ranking, cfg: &RouterConfig, out: &mut String) {
        if let Some(why) = &r.layers_off {
            out.push_str("unassigned: no agent lists kind ");
            out.push_str(task.kind.as_str());
            out.push_str("; rules and text matching off: ");
            out.push_str(why);
            return;
        }
        if r.no_words {
            out.push_str(
                "unassigned: no rule matched and the description has no words to match \
                 (only white space, symbols, emoji or stop words: ",
            );
            let shown: String = task.description.trim().chars().take(40).collect();
            let _ = write!(out, "{shown:?}");
            if task.description.trim().chars().nth(40).is_some() {
                out.push('…');
            }
            out.push_str(") (rule: description_words)");
            return;
        }
        out.push_str(
            "unassigned: no rule matched; no agent's description, skills or examples match the text (best similarity ",
        );
        push_fixed2(out, f64::from(r.best_sim));
        out.push_str(" < ");
        push_fixed2(out, cfg.min_text_similarity);
        out.push_str("); no agent lists kind ");
        out.push_str(task.kind.as_str());
    }
}

/// Task signature for the cache: kind, lower-cased trimmed description (with its
/// camelCase boundaries), metadata and required skills, hashed by two independent
/// 64-bit hashes (128 bits) so collisions are negligible. Works on 8-byte words so it
/// stays cheap on the hot path.
fn signature(task: &Task) -> u128 {
    struct Sig {
        a: u64,
        b: u64,
    }
    impl Sig {
        #[inline]
        fn word(&mut self, w: u64) {
            self.a = (self.a ^ w)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29);
            self.b = (self.b ^ w)
                .wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
                .rotate_left(31);
        }
        fn bytes(&mut self, bytes: &[u8], lower: bool) {
            let mut chunks = bytes.chunks_exact(8);
            let mut at = 0;
            for c in &mut chunks {
                let mut buf = [0u8; 8];
                buf.copy_from_slice(c);
                let w = u64::from_le_bytes(buf);
                if lower {
                    let l = lower8(w);
                    if l != w {
                        self.camel(bytes, at, w, l);
                    }
                    self.word(l);
                } else {
                    self.word(w);
                }
                at += 8;
            }
            let mut last = crate::text::load_le(chunks.remainder());
            if lower {
                let l = lower8(last);
                if l != last {
                    self.camel(bytes, at, last, l);
                }
                last = l;
            }
            // Length in the top byte keeps "ab" and "ab\0" apart.
            self.word(last ^ ((bytes.len() as u64) << 56));
        }
        /// Case is folded, but the scorer splits words at camelCase boundaries
        /// ("deployApi" is two words, "deployapi" one), so the boundaries in the chunk
        /// `w` at byte `at` (which holds an upper-case letter; `l` is `w` lower-cased)
        /// join the key: a cached ranking is always the one scoring would give. A
        /// boundary is an upper-case letter after a lower-case one, found for the 8
        /// bytes at once.
        #[inline]
        fn camel(&mut self, bytes: &[u8], at: usize, w: u64, l: u64) {
            let before = at
                .checked_sub(1)
                .and_then(|i| bytes.get(i))
                .is_some_and(u8::is_ascii_lowercase);
            let boundaries = camel8(w, l, before);
            if boundaries != 0 {
                self.word(0xca3e_0000_0000_0000 ^ at as u64);
                self.word(boundaries);
            }
        }
    }
    let mut h = Sig {
        a: 0xcbf2_9ce4_8422_2325,
        b: 0x8422_2325_cbf2_9ce4,
    };
    h.word(task.kind.index() as u64);
    // `trim` only when an end may be white space (the usual description starts and ends
    // with a visible ASCII character).
    let d = task.description.as_str();
    let d = match (d.as_bytes().first(), d.as_bytes().last()) {
        (Some(a), Some(z)) if a.is_ascii_graphic() && z.is_ascii_graphic() => d,
        _ => d.trim(),
    };
    h.bytes(d.as_bytes(), true);
    for (k, v) in &task.metadata {
        h.bytes(k.as_bytes(), false);
        h.bytes(v.as_bytes(), false);
    }
    h.word(0xfeed);
    for s in &task.required_skills {
        h.bytes(s.as_bytes(), false);
    }
    let (a, b) = (fmix(h.a), fmix(h.b ^ 0x5555));
    (u128::from(a) << 64) | u128::from(b)
}

fn fmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The HALO router. `Send + Sync`: share it behind an `Arc`; routing takes a snapshot of
/// the current state, learning swaps in a new one, so readers never wait on a rebuild.
pub struct Router {
    config: RouterConfig,
    state: RwLock<Arc<State>>,
    /// Serialises writers (outcomes, registry and rule changes).
    writer: Mutex<()>,
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: AtomicU64,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.snapshot();
        f.debug_struct("Router")
            .field("agents", &st.registry.len())
            .field("rules", &st.rules.source().len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router with the default [`RouterConfig`].
    ///
    /// # Errors
    /// Rule validation errors ([`HaloError::UnknownRuleAgent`], ...).
    pub fn new(registry: AgentRegistry, rules: RoutingRules) -> Result<Router, HaloError> {
        Router::with_config(registry, rules, RouterConfig::default())
    }

    /// A router with explicit settings.
    ///
    /// # Errors
    /// [`HaloError::InvalidConfig`] and rule validation errors.
    pub fn with_config(
        registry: AgentRegistry,
        rules: RoutingRules,
        config: RouterConfig,
    ) -> Result<Router, HaloError> {
        config.validate()?;
        let compiled = CompiledRules::compile(&rules, &registry)?;
        let state = State::build(Arc::new(registry), Arc::new(compiled), None, None, &config);
        Ok(Router {
            config,
            state: RwLock::new(Arc::new(state)),
            writer: Mutex::new(()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
        })
    }

    fn snapshot(&self) -> Arc<State> {
        Arc::clone(&read(&self.state))
    }

    fn install(&self, state: State) {
        *write(&self.state) = Arc::new(state);
        self.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    /// The settings.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// A snapshot of the registry, learned state included (serialise it with
    /// [`AgentRegistry::to_toml_string`] to persist what was learned).
    pub fn registry(&self) -> Arc<AgentRegistry> {
        Arc::clone(&self.snapshot().registry)
    }

    /// The rules in force.
    pub fn rules(&self) -> RoutingRules {
        self.snapshot().rules.source().clone()
    }

    /// Replaces the registry (rules are re-validated against it); drops the cache.
    ///
    /// # Errors
    /// Rule validation errors; the old registry stays in force.
    pub fn set_registry(&self, registry: AgentRegistry) -> Result<(), HaloError> {
        let _w = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.snapshot();
        let compiled = CompiledRules::compile(old.rules.source(), &registry)?;
        self.install(State::build(
            Arc::new(registry),
            Arc::new(compiled),
            None,
            None,
            &self.config,
        ));
        Ok(())
    }

    /// Replaces the rules; drops the cache.
    ///
    /// # Errors
    /// Rule validation errors; the old rules stay in force.
    pub fn set_rules(&self, rules: RoutingRules) -> Result<(), HaloError> {
        let _w = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.snapshot();
        let compiled = CompiledRules::compile(&rules, &old.registry)?;
        self.install(State::build(
            Arc::clone(&old.registry),
            Arc::new(compiled),
            Some(Arc::clone(&old.index)),
            Some(Arc::clone(&old.plan)),
            &self.config,
        ));
        Ok(())
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        let st = self.snapshot();
        let entries = read(&st.cache).len() as u64;
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries,
            invalidations: self.invalidations.load(Ordering::Relaxed),
        }
    }

    fn ranking(&self, st: &State, task: &Task) -> Ranked {
        let mut counts = [0u64; 2];
        let mut scratch = SPARE_RANKING.take();
        let r = self.ranking_counted(st, task, &mut counts, &mut scratch);
        self.flush_counts(counts);
        r
    }

    /// Keeps an owned ranking's buffers for the next uncached call on this thread.
    fn recycle(r: Ranked) {
        if let Ranked::Owned(b) = r {
            SPARE_RANKING.set(Some(b));
        }
    }

    /// Adds `[hits, misses]` to the cache counters.
    fn flush_counts(&self, counts: [u64; 2]) {
        if counts[0] > 0 {
            self.hits.fetch_add(counts[0], Ordering::Relaxed);
        }
        if counts[1] > 0 {
            self.misses.fetch_add(counts[1], Ordering::Relaxed);
        }
    }

    /// The ranking of a task, from the cache when possible; counts the hit or miss in
    /// `counts` (`[hits, misses]`) so a plan updates the shared counters once.
    /// Without a cache the ranking is computed into `scratch` (allocated on first use;
    /// take it back from the returned [`Ranked::Owned`] to reuse it).
    fn ranking_counted(
        &self,
        st: &State,
        task: &Task,
        counts: &mut [u64; 2],
        scratch: &mut Option<Box<Ranking>>,
    ) -> Ranked {
        if self.config.cache_capacity == 0 {
            counts[1] += 1;
            let mut r = scratch.take().unwrap_or_else(|| Box::new(Ranking::empty()));
            st.rank_into(task, &self.config, &mut r);
            return Ranked::Owned(r);
        }
        let key = signature(task);
        if let Some(r) = read(&st.cache).get(&key) {
            counts[0] += 1;
            return Ranked::Shared(Arc::clone(r));
        }
        counts[1] += 1;
        let mut r = Ranking::empty();
        st.rank_into(task, &self.config, &mut r);
        let r = Arc::new(r);
        let mut cache = write(&st.cache);
        if cache.len() >= self.config.cache_capacity {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&r));
        Ranked::Shared(r)
    }

    /// Routes one task as if it were alone in its plan.
    pub fn route(&self, task: &Task) -> RouteDecision {
        let st = self.snapshot();
        let r = self.ranking(&st, task);
        let d = self.decide(&st, task, &r, r.candidates(), &[]).0;
        Self::recycle(r);
        d
    }

    /// Routes one task given the tasks each agent already holds (`load`, by agent id):
    /// full agents are skipped and busy ones are penalised by `load_weight`.
    pub fn route_with_load(&self, task: &Task, load: &BTreeMap<AgentId, u32>) -> RouteDecision {
        let st = self.snapshot();
        let r = self.ranking(&st, task);
        let loads: Vec<u32> = st
            .registry
            .iter()
            .map(|p| load.get(p.id.as_str()).copied().unwrap_or(0))
            .collect();
        let d = self.decide(&st, task, &r, r.candidates(), &loads).0;
        Self::recycle(r);
        d
    }

    /// The `k` best agents for a task, best first, ignoring capacity (rule agents first);
    /// fewer when fewer agents can take the task.
    ///
    /// # Errors
    /// [`HaloError::InvalidTopK`] when `k` is 0 or above 16, the most a ranking keeps.
    pub fn route_top_k(&self, task: &Task, k: usize) -> Result<Vec<Alternative>, HaloError> {
        if !(1..=MAX_CANDIDATES).contains(&k) {
            return Err(HaloError::InvalidTopK {
                k,
                max: MAX_CANDIDATES,
            });
        }
        let st = self.snapshot();
        let r = self.ranking(&st, task);
        let agents = st.registry.as_slice();
        let mut out: Vec<Alternative> = Vec::with_capacity(k);
        let mut seen: Vec<usize> = Vec::with_capacity(k);
        for m in &r.rules {
            if out.len() == k {
                break;
            }
            if !seen.contains(&m.agent) {
                seen.push(m.agent);
                out.push(Alternative {
                    agent: agents[m.agent].id.clone(),
                    score: self.config.rule_weight + self.base_of(&st, &r, m.agent, task),
                });
            }
        }
        for c in r.candidates() {
            if out.len() == k {
                break;
            }
            if !seen.contains(&(c.agent as usize)) {
                seen.push(c.agent as usize);
                out.push(Alternative {
                    agent: agents[c.agent as usize].id.clone(),
                    score: f64::from(c.base),
                });
            }
        }
        Self::recycle(r);
        Ok(out)
    }

    /// Routes every task of a plan in order, applying per-plan capacity: an agent takes
    /// at most `max_concurrent_tasks` tasks of the plan; when the best agent is full the
    /// next alternative is taken and the explanation says so.
    ///
    /// The tasks are treated as one plan (one user request): each task's best
    /// candidates are re-ranked by their fit with the agents the other tasks are likely
    /// to get — agents used together in recorded plans ([`Outcome::plan`]), else shared
    /// tags (skills or domains) — see [`PlanConfig`]. When that changes a task's agent
    /// the explanation says so ("plan context +0.08: used with … in recorded plans").
    /// [`Router::route`] and [`Router::route_top_k`] route a task alone, without it.
    pub fn route_all<'t>(&self, tasks: impl IntoIterator<Item = &'t Task>) -> RoutingPlan {
        let mut decisions = Vec::new();
        self.route_all_into(tasks, &mut decisions);
        let unassigned = decisions
            .iter()
            .filter(|d| d.agent.is_none())
            .map(|d| UnassignedTask {
                task_id: d.task_id.clone(),
                reason: d.explanation.to_string(),
            })
            .collect();
        // Counted in a short list first (decisions share the registry's id, so the pointer
        // finds the entry), then one map insert per agent instead of one per task.
        let mut counts: Vec<(&AgentId, u32)> = Vec::new();
        for agent in decisions.iter().filter_map(|d| d.agent.as_ref()) {
            let p = agent.as_str().as_ptr();
            let at = counts
                .iter()
                .position(|(a, _)| a.as_str().as_ptr() == p)
                .or_else(|| counts.iter().position(|(a, _)| *a == agent));
            match at.and_then(|i| counts.get_mut(i)) {
                Some(e) => e.1 += 1,
                None => counts.push((agent, 1)),
            }
        }
        let mut load: BTreeMap<AgentId, u32> = BTreeMap::new();
        for (agent, n) in counts {
            *load.entry(agent.clone()).or_default() += n;
        }
        RoutingPlan {
            decisions,
            unassigned,
            load,
        }
    }

    /// [`Router::route_all`] without the summary: appends one decision per task to
    /// `out`, in input order, with capacity applied among these tasks. For callers that
    /// route a plan in parts (the orchestrator routes one generation at a time) and only
    /// keep the decisions. Plan context only sees the tasks of one call.
    pub fn route_all_into<'t>(
        &self,
        tasks: impl IntoIterator<Item = &'t Task>,
        out: &mut Vec<RouteDecision>,
    ) {
        let tasks = tasks.into_iter();
        let st = self.snapshot();
        if self.config.plan.weight > 0.0 && st.plan.is_informative() {
            let tasks: Vec<&Task> = tasks.collect();
            if tasks.len() >= 2 {
                self.route_plan_into(&st, &tasks, out);
            } else {
                self.route_each_into(&st, tasks, out);
            }
        } else {
            self.route_each_into(&st, tasks, out);
        }
    }

    /// [`Router::route_all_into`] with the plan-context stage off: each task is ranked
    /// on its own (as [`Router::route`] does), then capacity is applied among the tasks.
    /// For callers that roll plan context out gradually (a feature flag per subject).
    pub fn route_all_into_per_task<'t>(
        &self,
        tasks: impl IntoIterator<Item = &'t Task>,
        out: &mut Vec<RouteDecision>,
    ) {
        let st = self.snapshot();
        self.route_each_into(&st, tasks, out);
    }

    /// Routes tasks one after another under a shared load, without plan context.
    fn route_each_into<'t>(
        &self,
        st: &State,
        tasks: impl IntoIterator<Item = &'t Task>,
        out: &mut Vec<RouteDecision>,
    ) {
        let tasks = tasks.into_iter();
        let mut load = vec![0u32; st.registry.len()];
        out.reserve(tasks.size_hint().0);
        let mut counts = [0u64; 2];
        let mut scratch = SPARE_RANKING.take();
        for task in tasks {
            let r = self.ranking_counted(st, task, &mut counts, &mut scratch);
            let (d, chosen) = self.decide(st, task, &r, r.candidates(), &load);
            if let Some(l) = chosen.and_then(|i| load.get_mut(i)) {
                *l += 1;
            }
            out.push(d);
            if let Ranked::Owned(b) = r {
                scratch = Some(b);
            }
        }
        self.flush_counts(counts);
        if scratch.is_some() {
            SPARE_RANKING.set(scratch);
        }
    }

    /// Routes tasks by their kind alone, under per-call capacity like
    /// [`Router::route_all_into`]: rules and text matching are skipped and every decision
    /// comes from the capability layer (an agent listing the task's kind, best success
    /// rate and cost first; agents listing `generic` follow as fallbacks, taking the task
    /// when the kind's agents are at capacity and listed as alternatives for when they
    /// fail) or is unassigned (no agent lists the kind). For when an operator turns HALO's matching
    /// off (a feature flag) or the system is degraded to its minimal level; `why` is
    /// written into every explanation ("rules and text matching off: {why}"). The routing
    /// cache and its counters are not touched.
    pub fn route_all_by_kind_into<'t>(
        &self,
        tasks: impl IntoIterator<Item = &'t Task>,
        why: &str,
        out: &mut Vec<RouteDecision>,
    ) {
        let st = self.snapshot();
        let tasks = tasks.into_iter();
        let why: Arc<str> = Arc::from(why);
        let mut load = vec![0u32; st.registry.len()];
        out.reserve(tasks.size_hint().0);
        let mut r = Ranking::empty();
        for task in tasks {
            st.rank_by_kind_into(task, &self.config, &why, &mut r);
            let (d, chosen) = self.decide(&st, task, &r, r.candidates(), &load);
            if let Some(l) = chosen.and_then(|i| load.get_mut(i)) {
                *l += 1;
            }
            out.push(d);
        }
    }

    /// Routes a plan with plan context: ranks every task, sums the tasks' candidate
    /// distributions, re-ranks each task's best candidates by their fit with the other
    /// tasks (see [`PlanConfig`]), then decides in input order under a shared load.
    fn route_plan_into(&self, st: &State, tasks: &[&Task], out: &mut Vec<RouteDecision>) {
        let cfg = &self.config;
        let pc = &cfg.plan;
        let model = &*st.plan;
        let mut counts = [0u64; 2];
        let mut ranks: Vec<Ranked> = Vec::with_capacity(tasks.len());
        // Uncached rankings are owned: reuse the last plan's (no allocation, no
        // initialisation of a fresh ranking per task).
        let mut pool = if self.config.cache_capacity == 0 {
            PLAN_RANKINGS.take()
        } else {
            Vec::new()
        };
        for task in tasks {
            let mut spare = pool.pop();
            ranks.push(self.ranking_counted(st, task, &mut counts, &mut spare));
        }
        self.flush_counts(counts);
        out.reserve(tasks.len());
        let k_max = pc.candidates.min(MAX_CANDIDATES);
        let inv_t = 1.0 / pc.temperature;
        // A fit is at most 1 from recorded plans and `unseen_tag_weight` from tags.
        let max_bonus = pc.weight * pc.unseen_tag_weight.max(1.0);
        PLAN_SCRATCH.with_borrow_mut(|s| {
            model.begin(s);
            // Tasks with a candidate; each is one vote in the others' context.
            let mut voters = 0usize;
            for r in &ranks {
                if let Some(m) = r.rules.first() {
                    voters += 1;
                    model.push_task(s, std::iter::once((m.agent as u32, 1.0)));
                    continue;
                }
                let c = r.candidates();
                let k = k_max.min(c.len());
                voters += usize::from(k > 0);
                if !c[..k].iter().any(|c| model.is_active(c.agent as usize)) {
                    model.push_task(s, std::iter::empty());
                    continue;
                }
                // Softmax over the candidates (best first); those far below the first
                // carry no weight.
                let mut probs = [1.0f32; MAX_CANDIDATES];
                let mut z = 1.0f32;
                let mut m = 1usize;
                for (p, x) in probs[1..k].iter_mut().zip(&c[1..k]) {
                    let x = (x.base - c[0].base) * inv_t;
                    if x <= -8.0 {
                        break;
                    }
                    *p = x.exp();
                    z += *p;
                    m += 1;
                }
                let z = 1.0 / z;
                model.push_task(s, c[..m].iter().zip(&probs).map(|(c, p)| (c.agent, p * z)));
            }
            let mut load = vec![0u32; st.registry.len()];
            let mut cands = [EMPTY; MAX_CANDIDATES];
            for (i, (task, r)) in tasks.iter().zip(&ranks).enumerate() {
                let n = r.n;
                let c = r.candidates();
                // Only candidates the largest possible bonus could lift to the top are
                // re-ranked; a task with one such active candidate keeps its text order.
                let mut bonus = [0.0f32; MAX_CANDIDATES];
                let mut k = 0;
                if r.rules.is_empty() && n >= 2 && voters >= 2 {
                    let floor = c[0].base - max_bonus;
                    k = c[..k_max.min(n)].partition_point(|c| c.base >= floor);
                    if k < 2 || !c[1..k].iter().any(|c| model.is_active(c.agent as usize)) {
                        k = 0;
                    }
                }
                let mut reranked = false;
                for (c, b) in c[..k].iter().zip(&mut bonus) {
                    *b = pc.weight * model.fit(s, i, c.agent as usize, voters - 1, pc);
                    reranked |= *b > 0.0;
                }
                let b = &bonus[..k];
                let list = if reranked {
                    cands[..n].copy_from_slice(c);
                    for (c, b) in cands[..k].iter_mut().zip(b) {
                        c.base += b;
                    }
                    cands[..k]
                        .sort_by(|x, y| y.base.total_cmp(&x.base).then(x.agent.cmp(&y.agent)));
                    &cands[..n]
                } else {
                    c
                };
                let (mut d, chosen) = self.decide(st, task, r, list, &load);
                if let Some(a) = chosen {
                    if let Some(l) = load.get_mut(a) {
                        *l += 1;
                    }
                    let text_first = r.candidates().first().map(|c| c.agent as usize);
                    if reranked && text_first != Some(a) {
                        let gain = r.candidates()[..k]
                            .iter()
                            .zip(b)
                            .find(|(c, _)| c.agent as usize == a)
                            .map_or(0.0, |(_, b)| *b);
                        if gain > 0.0 {
                            d.explanation = render(|e| {
                                e.push_str(&d.explanation);
                                self.explain_plan(st, s, i, a, gain, text_first, e);
                            });
                        }
                    }
                }
                out.push(d);
            }
        });
        if self.config.cache_capacity == 0 {
            let room = PLAN_POOL_MAX.saturating_sub(pool.len());
            pool.extend(
                ranks
                    .into_iter()
                    .filter_map(|r| match r {
                        Ranked::Owned(b) => Some(b),
                        Ranked::Shared(_) => None,
                    })
                    .take(room),
            );
            PLAN_RANKINGS.set(pool);
        }
    }

    /// Appends why the plan context moved `agent` to the top.
    #[allow(clippy::too_many_arguments)]
    fn explain_plan(
        &self,
        st: &State,
        s: &PlanScratch,
        task: usize,
        agent: usize,
        gain: f32,
        text_first: Option<usize>,
        out: &mut String,
    ) {
        let agents = st.registry.as_slice();
        let note = st.plan.note(s, task, agent);
        out.push_str("; plan context +");
        push_fixed2(out, f64::from(gain));
        match note.partner {
            Some((t, true)) => {
                out.push_str(": used with ");
                out.push_str(agents[t as usize].id.as_str());
                out.push_str(" in recorded plans");
            }
            Some((t, false)) => {
                out.push_str(": shares tag \"");
                out.push_str(note.tag.map_or("?", |d| st.plan.tag_name(d)));
                out.push_str("\" with ");
                out.push_str(agents[t as usize].id.as_str());
            }
            None => out.push_str(": fits the plan's other tasks"),
        }
        out.push_str(", the likely agent of another task of this plan");
        if let Some(f) = text_first {
            out.push_str("; text alone ranked ");
            out.push_str(agents[f].id.as_str());
            out.push_str(" first");
        }
    }

    fn base_of(&self, st: &State, r: &Ranking, agent: usize, task: &Task) -> f64 {
        if let Some(c) = r.candidates().iter().find(|c| c.agent as usize == agent) {
            return f64::from(c.base);
        }
        let kind =
            task.kind != TaskKind::Generic && st.kinds[agent] & (1 << task.kind.index()) != 0;
        f64::from(st.prior[agent])
            + if kind { self.config.kind_weight } else { 0.0 }
            + self.config.skill_weight * f64::from(st.skill_fit(agent, task))
    }

    fn capacity_note(out: &mut String, agent: &crate::AgentProfile, load: u32) {
        out.push_str(agent.id.as_str());
        out.push_str(" is at capacity (");
        let _ = write!(out, "{}/{}", load, agent.max_concurrent_tasks);
        out.push(')');
    }

    /// Picks the agent for a task from its ranking under the given load; returns the
    /// decision and the chosen agent's index.
    fn decide(
        &self,
        st: &State,
        task: &Task,
        r: &Ranking,
        cands: &[Candidate],
        load: &[u32],
    ) -> (RouteDecision, Option<usize>) {
        let cfg = &self.config;
        let agents = st.registry.as_slice();
        let full = |a: usize| load_at(load, a) >= agents[a].max_concurrent_tasks;
        let load_pen = |a: usize| {
            load_penalty(
                cfg.load_weight,
                load_at(load, a),
                agents[a].max_concurrent_tasks,
            )
        };
        // Layer 1: rules, in priority order, while their agent has room.
        let mut full_rules = 0usize;
        for mi in 0..r.rules.len() {
            let m = r.rules[mi];
            let a = m.agent;
            if full(a) {
                full_rules += 1;
                continue;
            }
            let explanation = if full_rules == 0 {
                Arc::clone(&r.top_explanation)
            } else {
                render(|e| {
                    st.explain_rule(task, &m, e);
                    self.rule_notes(st, task, r, full_rules, load, e);
                })
            };
            let score = cfg.rule_weight + self.base_of(st, r, a, task) - load_pen(a);
            let d = RouteDecision {
                task_id: task.id.clone(),
                agent: Some(agents[a].id.clone()),
                score,
                match_score: 1.0,
                layer: RouteLayer::Rule,
                explanation,
                alternatives: self.alternatives(st, cands, a, load),
            };
            return (d, Some(a));
        }
        // Layers 2 and 3: text and capability, load-adjusted.
        let mut best: Option<(usize, f64)> = None;
        let mut any_full = false;
        for (i, c) in cands.iter().enumerate() {
            let a = c.agent as usize;
            if full(a) {
                any_full = true;
                continue;
            }
            let sc = f64::from(c.base) - load_pen(a);
            if best.is_none_or(|(_, b)| sc > b) {
                best = Some((i, sc));
            }
        }
        // Capacity is soft: when every candidate is at capacity, the best of them still
        // takes the task (it will queue behind the agent's concurrency limit) rather than
        // leaving work unassigned.
        let mut overflow = false;
        if best.is_none() && !cands.is_empty() {
            for (i, c) in cands.iter().enumerate() {
                let sc = f64::from(c.base) - load_pen(c.agent as usize);
                if best.is_none_or(|(_, b)| sc > b) {
                    best = Some((i, sc));
                }
            }
            overflow = best.is_some();
        }
        let Some((bi, score)) = best else {
            let explanation = if r.rules.is_empty() && r.n == 0 {
                Arc::clone(&r.top_explanation)
            } else {
                let mut e = String::with_capacity(160);
                if r.n == 0 {
                    st.explain_nobody(task, r, cfg, &mut e);
                } else {
                    let _ = write!(
                        e,
                        "unassigned: all {} candidate agents are at capacity (",
                        r.n
                    );
                    for (i, c) in cands.iter().take(5).enumerate() {
                        let a = c.agent as usize;
                        if i > 0 {
                            e.push_str(", ");
                        }
                        let _ = write!(
                            e,
                            "{} {}/{}",
                            agents[a].id,
                            load_at(load, a),
                            agents[a].max_concurrent_tasks
                        );
                    }
                    e.push(')');
                }
                self.rule_notes(st, task, r, full_rules, load, &mut e);
                Arc::from(e)
            };
            let d = RouteDecision {
                task_id: task.id.clone(),
                agent: None,
                score: 0.0,
                match_score: 0.0,
                layer: RouteLayer::Unassigned,
                explanation,
                alternatives: Vec::new(),
            };
            return (d, None);
        };
        let c = cands[bi];
        let a = c.agent as usize;
        let text = f64::from(c.sim) >= cfg.min_text_similarity;
        let text_fit = (f64::from(c.sim) / cfg.full_match_similarity).min(1.0);
        let match_score = if c.kind { text_fit.max(0.6) } else { text_fit };
        // The cached explanation describes the text-only first choice.
        let first = r.candidates().first().map(|c| c.agent);
        let explanation = if bi == 0 && r.rules.is_empty() && !overflow && first == Some(c.agent) {
            Arc::clone(&r.top_explanation)
        } else {
            let mut e = String::with_capacity(192);
            st.explain_candidate(task, r, &c, cfg, &mut e);
            if overflow {
                let _ = write!(
                    e,
                    "; every candidate is at capacity: {} takes it ({}/{}) and it will queue",
                    agents[a].id,
                    load_at(load, a),
                    agents[a].max_concurrent_tasks
                );
            } else if any_full {
                for s in cands[..bi].iter().map(|c| c.agent as usize) {
                    if full(s) {
                        e.push_str("; ");
                        Self::capacity_note(&mut e, &agents[s], load_at(load, s));
                        e.push_str(", took the next alternative");
                    }
                }
            }
            self.rule_notes(st, task, r, full_rules, load, &mut e);
            Arc::from(e)
        };
        let d = RouteDecision {
            task_id: task.id.clone(),
            agent: Some(agents[a].id.clone()),
            score,
            match_score,
            layer: if text {
                RouteLayer::Text
            } else {
                RouteLayer::Capability
            },
            explanation,
            alternatives: self.alternatives(st, cands, a, load),
        };
        (d, Some(a))
    }

    /// Appends "rule X matched but A is at capacity" for the first `count` rules.
    fn rule_notes(
        &self,
        st: &State,
        _task: &Task,
        r: &Ranking,
        count: usize,
        load: &[u32],
        out: &mut String,
    ) {
        let agents = st.registry.as_slice();
        for m in r.rules.iter().take(count) {
            out.push_str("; rule \"");
            out.push_str(
                st.rules
                    .rule(m.rule)
                    .map(|x| x.name.as_str())
                    .unwrap_or("?"),
            );
            out.push_str("\" matched but ");
            Self::capacity_note(out, &agents[m.agent], load_at(load, m.agent));
        }
    }

    fn alternatives(
        &self,
        st: &State,
        cands: &[Candidate],
        chosen: usize,
        load: &[u32],
    ) -> Vec<Alternative> {
        let agents = st.registry.as_slice();
        // Exactly the alternatives that will be pushed: the first `top_k` candidates
        // other than the chosen agent (candidates are distinct agents).
        let others = cands.len() - usize::from(cands.iter().any(|c| c.agent as usize == chosen));
        let k = self.config.top_k.min(others);
        let mut out = Vec::with_capacity(k);
        for c in cands {
            if out.len() == k {
                break;
            }
            let a = c.agent as usize;
            if a == chosen {
                continue;
            }
            let pen = load_penalty(
                self.config.load_weight,
                load_at(load, a),
                agents[a].max_concurrent_tasks,
            );
            out.push(Alternative {
                agent: agents[a].id.clone(),
                score: f64::from(c.base) - pen,
            });
        }
        out
    }

    /// Learns from one finished task: updates the agent's success rate, latency and cost
    /// means and, on success, adds the description to its examples. The next routing call
    /// sees the change (no restart); the cache is dropped.
    ///
    /// # Errors
    /// [`HaloError::UnknownAgent`] if the agent is not in the registry.
    pub fn record_outcome(
        &self,
        task: &Task,
        agent: &AgentId,
        success: bool,
        latency: Duration,
        cost: Usd,
    ) -> Result<(), HaloError> {
        self.record_outcomes(&[Outcome {
            task,
            agent,
            success,
            latency,
            cost,
            plan: None,
        }])
    }

    /// Learns from several outcomes at once (one rebuild instead of one per outcome).
    ///
    /// The success rate moves towards each outcome by `1 / (min(n, 100) + 11)` where `n`
    /// is the number of outcomes recorded before: the configured rate acts as ten prior
    /// observations and the rate never stops adapting.
    ///
    /// # Errors
    /// [`HaloError::UnknownAgent`] for the first unknown agent; nothing is applied then.
    pub fn record_outcomes(&self, outcomes: &[Outcome<'_>]) -> Result<(), HaloError> {
        let _w = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.snapshot();
        let mut idx = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            let i =
                old.registry
                    .index_of(o.agent.as_str())
                    .ok_or_else(|| HaloError::UnknownAgent {
                        agent: o.agent.to_string(),
                    })?;
            idx.push(i);
        }
        let mut registry = (*old.registry).clone();
        let mut examples_changed = false;
        let mut plans_changed = false;
        // Per agent touched, the hashes of its examples and plans: a batch checks each
        // outcome against them instead of scanning up to `max_examples_per_agent`
        // strings per outcome. (A hash collision only skips learning one example.)
        let mut known: genesis_core::fasthash::FxHashMap<usize, Known> = Default::default();
        for (o, &i) in outcomes.iter().zip(&idx) {
            let Some(p) = registry.agent_mut(i) else {
                continue;
            };
            let known = known.entry(i).or_insert_with(|| Known::of(p));
            let n = p.outcomes.total();
            let alpha = 1.0 / (n.min(100) as f64 + 11.0);
            let target = if o.success { 1.0 } else { 0.0 };
            p.success_rate = (p.success_rate + alpha * (target - p.success_rate)).clamp(0.0, 1.0);
            // Running means in the incremental form: with every value finite and at
            // least 0 the step cannot overflow (`mean × n + x` reached infinity after two
            // outcomes near `f64::MAX`, which JSON cannot hold).
            let step = 1.0 / (n as f64 + 1.0);
            let ms = o.latency.as_secs_f64() * 1000.0;
            let s = &mut p.outcomes;
            s.mean_latency_ms += (ms - s.mean_latency_ms) * step;
            s.mean_cost_usd += (o.cost.as_f64() - s.mean_cost_usd) * step;
            if o.success {
                p.outcomes.successes += 1;
            } else {
                p.outcomes.failures += 1;
            }
            if let Some(plan) = o.plan.map(str::trim).filter(|x| !x.is_empty())
                && o.success
                && p.plans.len() < self.config.max_examples_per_agent
                && known.plans.insert(text_hash(plan))
            {
                p.plans.push(plan.to_owned());
                plans_changed = true;
            }
            let d = o.task.description.trim();
            if o.success
                && self.config.learn_examples
                && !d.is_empty()
                && p.examples.len() < self.config.max_examples_per_agent
                && known.examples.insert(text_hash(d))
            {
                p.examples.push(d.to_owned());
                examples_changed = true;
            }
        }
        // New examples join the centroids at once; the trained correction is reused
        // (retraining is [`Router::retrain`]).
        let index = if examples_changed {
            Arc::new(old.index.rebuild_keeping_correction(registry.as_slice()))
        } else {
            Arc::clone(&old.index)
        };
        tracing::debug!(
            outcomes = outcomes.len(),
            reindexed = examples_changed,
            "halo learned from outcomes"
        );
        self.install(State::build(
            Arc::new(registry),
            Arc::clone(&old.rules),
            Some(index),
            (!plans_changed).then(|| Arc::clone(&old.plan)),
            &self.config,
        ));
        Ok(())
    }

    /// Retrains the text model from scratch on the current examples (the discriminative
    /// correction included) and drops the cache. Outcomes only refresh the centroids;
    /// call this now and then (it takes a few hundred milliseconds for a catalogue of a
    /// few hundred agents with thousands of examples).
    pub fn retrain(&self) {
        let _w = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.snapshot();
        self.install(State::build(
            Arc::clone(&old.registry),
            Arc::clone(&old.rules),
            None,
            None,
            &self.config,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Re-recorded for audit H11 H2: only the 36 decisions for "" and "the a an of"
    /// changed (capability fallback → unassigned, "no words to match"); the other 288
    /// lines were compared byte for byte with the previous code.
    const GOLDEN: u64 = 3_109_180_210_339_900_267;

    /// Every field of the decisions for a spread of texts and kinds against the shipped
    /// 16-agent catalogue and rules, uncached, folded into one line per task (what the
    /// golden digest below was recorded from).
    fn shipped_decisions() -> Vec<String> {
        let reg =
            AgentRegistry::from_toml_str(include_str!("../../../config/agents.toml")).unwrap();
        let rules = RoutingRules::from_toml_str(include_str!("../../../config/routing_rules.toml"))
            .unwrap();
        let cfg = RouterConfig {
            cache_capacity: 0,
            ..RouterConfig::default()
        };
        let router = Router::with_config(reg, rules, cfg).unwrap();
        let texts = [
            "Build the REST API for orders (part 0)",
            "Write unit tests for the billing module",
            "Analyse the results of the A/B test",
            "Deploy the CI/CD pipeline for staging",
            "Design the landing page UI",
            "Plan a marketing campaign for the spring sale",
            "Review competitor pricing and positioning",
            "Set an alarm for 7am tomorrow and text Mom",
            "What's the weather in Paris? Convert 20 USD to EUR.",
            "getUserProfile returns 404 after the v2.3 migration",
            "Summarise the quarterly budget forecast in 3 bullet points",
            "translate this paragraph into German",
            "",
            "the a an of",
            "xyzzy plugh frobnicate",
            "Create a Jira ticket and notify the on-call engineer about elevated error rates",
            "ÉCRIRE un résumé du rapport financier",
            "a_very_long_identifier_with_many_parts_that_exceeds_sixteen_bytes ok",
        ];
        let mut out = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            for kind in TaskKind::ALL {
                let task = Task::new(TaskId::new(format!("g{i}")), *kind, *text);
                let d = router.route(&task);
                let alts: Vec<String> = d
                    .alternatives
                    .iter()
                    .map(|a| format!("{}={:016x}", a.agent, a.score.to_bits()))
                    .collect();
                out.push(format!(
                    "{}|{:?}|{:016x}|{:016x}|{:?}|{}|{}",
                    d.task_id,
                    d.agent.as_ref().map(|a| a.as_str().to_owned()),
                    d.score.to_bits(),
                    d.match_score.to_bits(),
                    d.layer,
                    d.explanation,
                    alts.join(",")
                ));
            }
        }
        out
    }

    #[test]
    fn uncached_decisions_on_the_shipped_catalogue_match_the_recorded_ones() {
        use std::hash::BuildHasher;
        let lines = shipped_decisions();
        let digest = genesis_core::fasthash::FxBuildHasher::default().hash_one(lines.join("\n"));
        // Recorded before the routing fast paths changed (tokeniser, candidate filter,
        // fixed-2 formatting): every decision must stay byte-identical. A deliberate
        // change to the shipped catalogue, rules or routing changes it too: read the
        // decisions printed on failure, then record the new digest.
        assert_eq!(digest, GOLDEN, "{}", lines.join("\n"));
    }

    /// Uncached plans reuse the previous plan's rankings: a plan routed after a
    /// different, larger plan on the same thread decides exactly as a fresh router and as
    /// a cached one do.
    #[test]
    fn uncached_plans_reusing_rankings_decide_as_fresh_and_cached_ones() {
        let reg =
            AgentRegistry::from_toml_str(include_str!("../../../config/agents.toml")).unwrap();
        let rules = RoutingRules::from_toml_str(include_str!("../../../config/routing_rules.toml"))
            .unwrap();
        let router = |cache_capacity| {
            let cfg = RouterConfig {
                cache_capacity,
                ..RouterConfig::default()
            };
            Router::with_config(reg.clone(), rules.clone(), cfg).unwrap()
        };
        let texts = [
            "Build the REST API for orders and the SQL schema",
            "Write unit tests for the billing module",
            "Deploy the CI/CD pipeline for staging",
            "Plan a marketing campaign for the spring sale",
            "",
            "xyzzy plugh frobnicate",
            "Analyse SQL query latency and the A/B test results",
        ];
        let plan = |n: usize, salt: usize| -> Vec<Task> {
            (0..n)
                .map(|i| {
                    let kind = TaskKind::ALL[(i * 5 + salt) % TaskKind::ALL.len()];
                    let text = texts[(i + salt) % texts.len()];
                    Task::new(TaskId::new(format!("p{salt}-{i}")), kind, text)
                })
                .collect()
        };
        let (small, large) = (plan(9, 0), plan(40, 3));
        let fresh = router(0).route_all(&small);
        let cached = router(1000).route_all(&small);
        let reused = router(0);
        reused.route_all(&large);
        assert_eq!(reused.route_all(&small), fresh);
        reused.route_all(&plan(3, 1));
        assert_eq!(reused.route_all(&small), fresh);
        assert_eq!(cached, fresh);
    }

    #[test]
    fn lower8_matches_ascii_lowercase() {
        let samples: [&[u8; 8]; 4] = [b"AbCdEfGz", b"@[`{Z_A1", b"\xc3\x89T\xe9az09", b"HELLO WO"];
        for s in samples {
            let mut want = *s;
            want.make_ascii_lowercase();
            assert_eq!(
                lower8(u64::from_le_bytes(*s)),
                u64::from_le_bytes(want),
                "{s:?}"
            );
        }
    }

    #[test]
    fn cached_decisions_share_one_explanation_that_serialises_as_text() {
        let reg = AgentRegistry::from_toml_str(
            r#"
[[agent]]
id = "marketing"
description = "Plans campaigns and writes copy"
[[agent]]
id = "analytics"
description = "Analyses metrics and experiment results"
"#,
        )
        .unwrap();
        let router = Router::new(reg, RoutingRules::empty()).unwrap();
        let t = Task::new(
            TaskId::new("t"),
            TaskKind::Generic,
            "Plan the spring campaigns",
        );
        let (a, b) = (router.route(&t), router.route(&t));
        assert_eq!(router.cache_stats().hits, 1);
        assert!(Arc::ptr_eq(&a.explanation, &b.explanation));
        assert!(
            a.explanation.starts_with("text match: "),
            "{}",
            a.explanation
        );
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["explanation"].as_str(), Some(&*a.explanation));
        let back: RouteDecision = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
        // Without a cache the text is the same.
        let cfg = RouterConfig {
            cache_capacity: 0,
            ..RouterConfig::default()
        };
        let uncached =
            Router::with_config((*router.registry()).clone(), RoutingRules::empty(), cfg).unwrap();
        assert_eq!(uncached.route(&t).explanation, a.explanation);
    }

    #[test]
    fn signature_ignores_case_and_outer_space_but_not_content() {
        let t = |d: &str| Task::new(TaskId::new("x"), TaskKind::Generic, d);
        let a = signature(&t("Deploy the API to production"));
        assert_eq!(a, signature(&t("  deploy THE api to Production ")));
        assert_ne!(a, signature(&t("Deploy the API to production!")));
        assert_ne!(signature(&t("ab")), signature(&t("ab\0")));
        // camelCase splits words for the scorer, so it splits signatures too.
        assert_ne!(
            signature(&t("deployApi now")),
            signature(&t("deployapi now"))
        );
        assert_eq!(
            signature(&t("deployapi now")),
            signature(&t("DEPLOYAPI NOW"))
        );
        assert_ne!(
            signature(&t("deployApi now")),
            signature(&t("deploYapi now"))
        );
        let mut k = t("Deploy the API to production");
        k.kind = TaskKind::Deploy;
        assert_ne!(a, signature(&k));
    }

    /// The camelCase boundaries of a description, as the scorer splits words.
    fn boundaries(d: &str) -> Vec<usize> {
        let b = d.trim().as_bytes();
        (1..b.len())
            .filter(|&i| b[i].is_ascii_uppercase() && b[i - 1].is_ascii_lowercase())
            .collect()
    }

    #[test]
    fn signature_sees_camel_case_boundaries_across_chunks() {
        let t = |d: &str| signature(&Task::new(TaskId::new("x"), TaskKind::Generic, d));
        // A boundary on the first byte of the second 8-byte chunk, the last byte of the
        // first, and in the remainder.
        assert_ne!(t("abcdefghIjk"), t("abcdefghijk"));
        assert_ne!(t("abcdefgHijk"), t("abcdefghijk"));
        assert_ne!(t("abcdefgHijk"), t("abcdefghIjk"));
        assert_ne!(t("abcdefghijklmnoPq"), t("abcdefghijklmnopq"));
        assert_eq!(t("ABCDEFGHIJK"), t("abcdefghijk"));
        assert_eq!(t("aBCDEFGHIJK"), t("aBcdefghijk"));
        // Outer white space of any kind is ignored.
        assert_eq!(t("\u{a0}deploy api\t"), t("deploy api"));
    }

    proptest::proptest! {
        #[test]
        fn signatures_of_case_variants_agree_exactly_when_their_boundaries_do(
            text in "[a-zA-Z0-9 é_-]{0,40}",
            flips in proptest::collection::vec(proptest::bool::ANY, 40),
        ) {
            let other: String = text
                .chars()
                .zip(flips.iter().chain(std::iter::repeat(&false)))
                .map(|(c, &f)| {
                    if !f {
                        c
                    } else if c.is_ascii_lowercase() {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect();
            let t = |d: &str| signature(&Task::new(TaskId::new("x"), TaskKind::Generic, d));
            proptest::prop_assert_eq!(
                t(&text) == t(&other),
                boundaries(&text) == boundaries(&other)
            );
        }
    }
}
