//! Plan context: when a plan's tasks are routed together, each task's best candidates
//! are re-ranked by how well they fit the agents the other tasks are likely to get.
//!
//! Fit between a candidate `c` and another task's agent `t`:
//! - both have recorded plans ([`AgentProfile::plans`](crate::AgentProfile::plans)):
//!   `together(c, t) / (plans(t) + 1)`, the share of `t`'s plans that also used `c`;
//! - otherwise (a new agent, or one never recorded in a plan): `unseen_tag_weight ×`
//!   the cosine between their tag sets (skills or domains shared by at least two agents
//!   of the catalogue), so agents without history still profit from a coherent plan.
//!
//! Each other task contributes its candidates weighted by a softmax of their scores
//! (`temperature`), so an uncertain task spreads its vote; the candidate's bonus is
//! `weight ×` the mean fit over the other tasks. Everything is linear in the other
//! tasks' distributions, so one pass sums the plan and each task subtracts its own
//! share: the cost is `O(tasks × candidates × (tags + co-used agents))`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::AgentProfile;

/// Settings of the plan-context stage of [`Router::route_all`](crate::Router::route_all).
/// Every weight is a finite number ≥ 0; `weight = 0` turns the stage off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanConfig {
    /// Weight of the plan fit added to a candidate's score (same scale as text
    /// similarity).
    pub weight: f32,
    /// Fit per unit of tag cosine for pairs where an agent has no recorded plans.
    pub unseen_tag_weight: f32,
    /// Softmax temperature that turns a task's candidate scores into the distribution it
    /// contributes to the other tasks' context (> 0).
    pub temperature: f32,
    /// Candidates per task that are re-ranked and spread into the context (1 to 16).
    pub candidates: usize,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            weight: 0.3,
            unseen_tag_weight: 0.4,
            temperature: 0.05,
            candidates: 8,
        }
    }
}

/// What the plan stage learned from the registry: tags and plan co-usage.
#[derive(Debug, Default)]
pub(crate) struct PlanModel {
    /// Per agent, its tag ids (`tags[tag_start[a]..tag_start[a + 1]]`).
    tag_start: Vec<u32>,
    tags: Vec<u32>,
    /// `1 / sqrt(number of tags)`, 0 without tags.
    tag_norm: Vec<f32>,
    tag_names: Vec<String>,
    /// Per agent `c`, `(t, together(c, t) / (plans(t) + 1))`, by agent.
    co_start: Vec<u32>,
    co: Vec<(u32, f32)>,
    /// Whether the agent has recorded plans.
    known: Vec<bool>,
    /// Whether the agent can fit or be fitted: it has tags or recorded plans.
    active: Vec<bool>,
}

/// Per-thread buffers of one plan.
#[derive(Debug, Default)]
pub(crate) struct PlanScratch {
    /// Context mass per agent (sum over tasks of their distributions).
    mass: Vec<f32>,
    /// Agents with mass, to reset `mass`.
    touched: Vec<u32>,
    /// Tag mass of all agents and of agents without recorded plans.
    tag_all: Vec<f32>,
    tag_unknown: Vec<f32>,
    /// Each task's distribution: `dist[dist_start[i]..dist_start[i + 1]]`.
    dist: Vec<(u32, f32)>,
    dist_start: Vec<u32>,
}

/// The candidate's plan fit, explained.
pub(crate) struct PlanNote {
    /// The best-fitting other agent and whether the fit came from recorded plans.
    pub(crate) partner: Option<(u32, bool)>,
    /// The shared tag with the most context mass.
    pub(crate) tag: Option<u32>,
}

impl PlanModel {
    pub(crate) fn build(agents: &[AgentProfile]) -> PlanModel {
        let n = agents.len();
        // Tags shared by at least two agents: a tag only one agent has says nothing
        // about which agents go together.
        let mut tag_count: HashMap<String, u32> = HashMap::new();
        let lower: Vec<Vec<String>> = agents
            .iter()
            .map(|p| {
                let mut v: Vec<String> = p
                    .skills
                    .iter()
                    .map(|s| s.trim().to_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            })
            .collect();
        for v in &lower {
            for s in v {
                *tag_count.entry(s.clone()).or_default() += 1;
            }
        }
        let mut tag_id: HashMap<&str, u32> = HashMap::new();
        let mut tag_names = Vec::new();
        let mut tag_start = Vec::with_capacity(n + 1);
        let mut tags = Vec::new();
        let mut tag_norm = Vec::with_capacity(n);
        tag_start.push(0u32);
        for v in &lower {
            let from = tags.len();
            for s in v {
                if tag_count.get(s).copied().unwrap_or(0) < 2 {
                    continue;
                }
                let id = *tag_id.entry(s.as_str()).or_insert_with(|| {
                    tag_names.push(s.clone());
                    (tag_names.len() - 1) as u32
                });
                tags.push(id);
            }
            let k = tags.len() - from;
            tag_norm.push(if k == 0 { 0.0 } else { 1.0 / (k as f32).sqrt() });
            tag_start.push(tags.len() as u32);
        }
        // Plan co-usage.
        let mut members: HashMap<&str, Vec<u32>> = HashMap::new();
        for (a, p) in agents.iter().enumerate() {
            for plan in &p.plans {
                let m = members.entry(plan.as_str()).or_default();
                if m.last() != Some(&(a as u32)) {
                    m.push(a as u32);
                }
            }
        }
        let mut plans = vec![0u32; n];
        let mut together: HashMap<(u32, u32), u32> = HashMap::new();
        for m in members.values_mut() {
            m.sort_unstable();
            m.dedup();
            for &a in m.iter() {
                plans[a as usize] += 1;
                for &b in m.iter() {
                    if a != b {
                        *together.entry((a, b)).or_default() += 1;
                    }
                }
            }
        }
        let mut pairs: Vec<((u32, u32), u32)> = together.into_iter().collect();
        pairs.sort_unstable();
        let mut co_start = Vec::with_capacity(n + 1);
        let mut co = Vec::with_capacity(pairs.len());
        let mut next = 0usize;
        co_start.push(0u32);
        for c in 0..n as u32 {
            while next < pairs.len() && pairs[next].0.0 == c {
                let ((_, t), k) = pairs[next];
                co.push((t, k as f32 / (plans[t as usize] as f32 + 1.0)));
                next += 1;
            }
            co_start.push(co.len() as u32);
        }
        let active = (0..n).map(|a| plans[a] > 0 || tag_norm[a] > 0.0).collect();
        PlanModel {
            active,
            tag_start,
            tags,
            tag_norm,
            tag_names,
            co_start,
            co,
            known: plans.iter().map(|&k| k > 0).collect(),
        }
    }

    /// Whether the model can say anything: some agents share a tag or a plan.
    pub(crate) fn is_informative(&self) -> bool {
        !self.tags.is_empty() || !self.co.is_empty()
    }

    /// Whether agent `a` takes part: it has tags or recorded plans. Other agents neither
    /// gain a bonus nor add to the context, so callers may skip them.
    pub(crate) fn is_active(&self, a: usize) -> bool {
        self.active.get(a).copied().unwrap_or(false)
    }

    fn tags_of(&self, a: usize) -> &[u32] {
        let (s, e) = (self.tag_start[a] as usize, self.tag_start[a + 1] as usize);
        &self.tags[s..e]
    }

    fn co_of(&self, a: usize) -> &[(u32, f32)] {
        let (s, e) = (self.co_start[a] as usize, self.co_start[a + 1] as usize);
        &self.co[s..e]
    }

    /// A tag's name.
    pub(crate) fn tag_name(&self, tag: u32) -> &str {
        self.tag_names
            .get(tag as usize)
            .map(String::as_str)
            .unwrap_or("?")
    }

    /// Starts a plan: clears `s` and sizes it for this model.
    pub(crate) fn begin(&self, s: &mut PlanScratch) {
        let n = self.known.len();
        for &a in &s.touched {
            if let Some(m) = s.mass.get_mut(a as usize) {
                *m = 0.0;
            }
        }
        s.touched.clear();
        s.mass.resize(n, 0.0);
        s.tag_all.clear();
        s.tag_all.resize(self.tag_names.len(), 0.0);
        s.tag_unknown.clear();
        s.tag_unknown.resize(self.tag_names.len(), 0.0);
        s.dist.clear();
        s.dist_start.clear();
        s.dist_start.push(0);
    }

    /// Adds one task's distribution over agents (`(agent, probability)`, summing to 1;
    /// empty for a task with no candidate). Inactive agents are left out.
    pub(crate) fn push_task(&self, s: &mut PlanScratch, dist: impl Iterator<Item = (u32, f32)>) {
        for (a, p) in dist {
            if !self.is_active(a as usize) {
                continue;
            }
            let Some(m) = s.mass.get_mut(a as usize) else {
                continue;
            };
            if *m == 0.0 {
                s.touched.push(a);
            }
            *m += p;
            let w = p * self.tag_norm[a as usize];
            if w > 0.0 {
                let unknown = !self.known[a as usize];
                for &t in self.tags_of(a as usize) {
                    s.tag_all[t as usize] += w;
                    if unknown {
                        s.tag_unknown[t as usize] += w;
                    }
                }
            }
            s.dist.push((a, p));
        }
        s.dist_start.push(s.dist.len() as u32);
    }

    fn own(s: &PlanScratch, task: usize) -> &[(u32, f32)] {
        match (s.dist_start.get(task), s.dist_start.get(task + 1)) {
            (Some(&a), Some(&b)) => &s.dist[a as usize..b as usize],
            _ => &[],
        }
    }

    /// The mean fit of agent `c` with the other tasks' agents, for task `task` (whose
    /// own distribution is left out); `others` is the number of other tasks that vote.
    pub(crate) fn fit(
        &self,
        s: &PlanScratch,
        task: usize,
        c: usize,
        others: usize,
        cfg: &PlanConfig,
    ) -> f32 {
        if others == 0 || c >= self.known.len() {
            return 0.0;
        }
        let norm = self.tag_norm[c];
        let co = self.co_of(c);
        if co.is_empty() && norm == 0.0 {
            return 0.0;
        }
        let own = Self::own(s, task);
        let own_p = |t: u32| own.iter().find(|x| x.0 == t).map(|x| x.1).unwrap_or(0.0);
        let ctx = |t: u32| s.mass.get(t as usize).copied().unwrap_or(0.0) - own_p(t);
        let known = self.known[c];
        let mut fit = 0.0f32;
        if known {
            for &(t, a) in co {
                fit += ctx(t) * a;
            }
        }
        // Tag cosine with the agents the co-usage term does not cover.
        if norm > 0.0 && cfg.unseen_tag_weight > 0.0 {
            let mut tag = 0.0f32;
            for &d in self.tags_of(c) {
                let (mass, mine) = if known {
                    (s.tag_unknown[d as usize], self.own_tag(own, d, true))
                } else {
                    (s.tag_all[d as usize], self.own_tag(own, d, false))
                };
                tag += mass - mine;
            }
            fit += cfg.unseen_tag_weight * norm * tag.max(0.0);
        }
        fit / others as f32
    }

    /// The task's own share of a tag's mass (only agents without plans if `unknown`).
    fn own_tag(&self, own: &[(u32, f32)], d: u32, unknown_only: bool) -> f32 {
        own.iter()
            .filter(|&&(t, _)| !(unknown_only && self.known[t as usize]))
            .filter(|&&(t, _)| self.tags_of(t as usize).contains(&d))
            .map(|&(t, p)| p * self.tag_norm[t as usize])
            .sum()
    }

    /// Why `c` fits the plan: the other agent contributing most and the shared tag with
    /// the most mass (for explanations; not on the hot path).
    pub(crate) fn note(&self, s: &PlanScratch, task: usize, c: usize) -> PlanNote {
        let own = Self::own(s, task);
        let ctx = |t: u32| {
            s.mass.get(t as usize).copied().unwrap_or(0.0)
                - own.iter().find(|x| x.0 == t).map(|x| x.1).unwrap_or(0.0)
        };
        let mut partner: Option<(u32, bool, f32)> = None;
        if self.known.get(c).copied().unwrap_or(false) {
            for &(t, a) in self.co_of(c) {
                let v = ctx(t) * a;
                if v > 1e-6 && partner.is_none_or(|p| v > p.2) {
                    partner = Some((t, true, v));
                }
            }
        }
        let mut tag: Option<(u32, f32)> = None;
        if c < self.known.len() {
            for &d in self.tags_of(c) {
                let v = s.tag_all[d as usize] - self.own_tag(own, d, false);
                if v > 1e-6 && tag.is_none_or(|x| v > x.1) {
                    tag = Some((d, v));
                }
            }
            if partner.is_none() && tag.is_some() {
                // The other agent with the most mass that shares a tag.
                let mine = self.tags_of(c);
                for &t in &s.touched {
                    let v = ctx(t);
                    if t as usize != c
                        && v > 1e-6
                        && self.tags_of(t as usize).iter().any(|x| mine.contains(x))
                        && partner.is_none_or(|p| v > p.2)
                    {
                        partner = Some((t, false, v));
                    }
                }
            }
        }
        PlanNote {
            partner: partner.map(|p| (p.0, p.1)),
            tag: tag.map(|t| t.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, skills: &[&str], plans: &[&str]) -> AgentProfile {
        let mut p = AgentProfile::new(id, "does things");
        p.skills = skills.iter().map(|s| (*s).to_owned()).collect();
        p.plans = plans.iter().map(|s| (*s).to_owned()).collect();
        p
    }

    #[test]
    fn co_usage_is_the_share_of_the_partners_plans() {
        let m = PlanModel::build(&[
            agent("a", &[], &["p1", "p2"]),
            agent("b", &[], &["p1"]),
            agent("c", &[], &["p2", "p3"]),
        ]);
        // a was used with b in 1 of b's 1 plans: 1 / (1 + 1).
        assert_eq!(m.co_of(0), &[(1, 0.5), (2, 1.0 / 3.0)]);
        assert_eq!(m.co_of(1), &[(0, 1.0 / 3.0)]);
        assert!(m.known.iter().all(|&k| k));
        assert!(m.is_informative());
    }

    #[test]
    fn tags_held_by_one_agent_are_dropped() {
        let m = PlanModel::build(&[
            agent("a", &["Travel", "solo"], &[]),
            agent("b", &["travel "], &[]),
        ]);
        assert_eq!(m.tags_of(0).len(), 1);
        assert_eq!(m.tag_name(m.tags_of(1)[0]), "travel");
        assert!((m.tag_norm[0] - 1.0).abs() < 1e-6);
        let none = PlanModel::build(&[agent("a", &["x"], &[]), agent("b", &["y"], &[])]);
        assert!(!none.is_informative());
    }

    #[test]
    fn a_task_does_not_vote_for_itself() {
        let m = PlanModel::build(&[
            agent("a", &["t"], &[]),
            agent("b", &["t"], &[]),
            agent("c", &["u"], &[]),
            agent("d", &["u"], &[]),
        ]);
        let cfg = PlanConfig::default();
        let mut s = PlanScratch::default();
        m.begin(&mut s);
        m.push_task(&mut s, [(0u32, 1.0f32)].into_iter());
        m.push_task(&mut s, [(1u32, 0.5f32), (2, 0.5)].into_iter());
        // Task 0 alone votes for agent a (tag t): for task 1, b fits and c does not.
        let fb = m.fit(&s, 1, 1, 1, &cfg);
        let fc = m.fit(&s, 1, 2, 1, &cfg);
        assert!((fb - cfg.unseen_tag_weight).abs() < 1e-6, "{fb}");
        assert_eq!(fc, 0.0);
        // Task 0's candidates only see task 1's half vote for b.
        let fa = m.fit(&s, 0, 0, 1, &cfg);
        assert!((fa - 0.5 * cfg.unseen_tag_weight).abs() < 1e-6, "{fa}");
        let note = m.note(&s, 1, 1);
        assert_eq!(note.partner, Some((0, false)));
        assert_eq!(note.tag.map(|t| m.tag_name(t)), Some("t"));
        // Reuse clears the previous plan.
        m.begin(&mut s);
        m.push_task(&mut s, std::iter::empty());
        m.push_task(&mut s, std::iter::empty());
        assert_eq!(m.fit(&s, 0, 1, 1, &cfg), 0.0);
    }
}
