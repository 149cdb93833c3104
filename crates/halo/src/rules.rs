//! Explicit routing rules: the first layer of routing.
//!
//! `config/routing_rules.toml` holds `[[rule]]` tables:
//!
//! ```toml
//! [[rule]]
//! name = "security-review"          # unique, used in explanations
//! priority = 100                    # higher is tried first; ties keep file order
//! agent = "security"                # must exist in the registry
//! kinds = ["implement", "backend"]  # any of these kinds (omit = any kind)
//! metadata = { compliance = "*" }   # every pair must match ("*" = key present)
//! keywords = ["vulnerability", "penetration test"]  # any, whole words, case-insensitive
//! enabled = true                    # optional, default true
//! ```
//!
//! Every condition given must hold; a rule with no condition matches every task. A
//! keyword matches a run of whole words: text and keywords are split into letter/digit
//! words compared without regard to case, so `"pen test"` matches "Pen-test the API",
//! `"ci/cd"` matches "CI/CD" and `"überweisung"` matches "ÜBERWEISUNG prüfen". Case is
//! Unicode's lower-case mapping, as the text layer reads words
//! ([`crate::text::lower_word`]; not full case folding: `"straße"` does not match
//! "STRASSE"). Rules are compiled once
//! ([`CompiledRules`]): kinds become a bit mask and every keyword phrase a hash in one
//! sorted table, so matching a task costs one pass over its words, whatever the number
//! of rules.

use std::collections::{BTreeMap, HashSet};

use genesis_core::{AgentId, Task, TaskKind};
use serde::{Deserialize, Serialize};

use crate::{AgentRegistry, HaloError};

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// One routing rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique name, quoted in explanations.
    pub name: String,
    /// Higher priorities are tried first.
    #[serde(default)]
    pub priority: i32,
    /// The agent matching tasks go to.
    pub agent: AgentId,
    /// The task must be of one of these kinds (empty = any kind).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<TaskKind>,
    /// Every pair must be in the task's metadata; the value `"*"` only requires the key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The description must contain one of these (whole words, case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// Disabled rules are kept but never match.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

impl Rule {
    /// A rule with no conditions (it matches every task until conditions are added).
    pub fn new(name: impl Into<String>, agent: impl Into<AgentId>, priority: i32) -> Self {
        Rule {
            name: name.into(),
            priority,
            agent: agent.into(),
            kinds: Vec::new(),
            metadata: BTreeMap::new(),
            keywords: Vec::new(),
            enabled: true,
        }
    }

    /// Adds a kind condition.
    #[must_use]
    pub fn with_kind(mut self, kind: TaskKind) -> Self {
        self.kinds.push(kind);
        self
    }

    /// Adds a metadata condition.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Adds a keyword.
    #[must_use]
    pub fn with_keyword(mut self, keyword: impl Into<String>) -> Self {
        self.keywords.push(keyword.into());
        self
    }
}

/// The rule set, as written (see the module docs for the TOML format).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRules {
    /// Rules in file order.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

impl RoutingRules {
    /// No rules: routing starts at the text layer.
    pub fn empty() -> Self {
        RoutingRules::default()
    }

    /// Rules from a list.
    pub fn new(rules: Vec<Rule>) -> Self {
        RoutingRules { rules }
    }

    /// Parses `[[rule]]` tables.
    ///
    /// # Errors
    /// [`HaloError::RulesToml`] for syntax errors, unknown fields and unknown kinds;
    /// [`HaloError::EmptyRuleName`], [`HaloError::DuplicateRule`] and
    /// [`HaloError::EmptyKeyword`] for rules that cannot work.
    pub fn from_toml_str(text: &str) -> Result<Self, HaloError> {
        let rules: RoutingRules = toml::from_str(text).map_err(|error| {
            let (line, column) = crate::error::toml_position(&error, text);
            HaloError::RulesToml {
                error: Box::new(error),
                line,
                column,
            }
        })?;
        rules.check_shape()?;
        Ok(rules)
    }

    /// Writes the rules back as `[[rule]]` TOML.
    ///
    /// # Errors
    /// [`HaloError::SerializeToml`] (not expected).
    pub fn to_toml_string(&self) -> Result<String, HaloError> {
        toml::to_string(self).map_err(|source| HaloError::SerializeToml { source })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, Rule> {
        self.rules.iter()
    }

    fn check_shape(&self) -> Result<(), HaloError> {
        let mut names = HashSet::new();
        for (position, rule) in self.rules.iter().enumerate() {
            if rule.name.trim().is_empty() {
                return Err(HaloError::EmptyRuleName { position });
            }
            if !names.insert(rule.name.as_str()) {
                return Err(HaloError::DuplicateRule {
                    rule: rule.name.clone(),
                });
            }
            if rule.keywords.iter().any(|k| k.trim().is_empty()) {
                return Err(HaloError::EmptyKeyword {
                    rule: rule.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Checks the rules against a registry: every rule's agent must exist.
    ///
    /// # Errors
    /// The shape errors of [`RoutingRules::from_toml_str`] and
    /// [`HaloError::UnknownRuleAgent`] naming the rule and the id.
    pub fn validate(&self, registry: &AgentRegistry) -> Result<(), HaloError> {
        self.check_shape()?;
        for rule in &self.rules {
            if registry.get(rule.agent.as_str()).is_none() {
                return Err(HaloError::UnknownRuleAgent {
                    rule: rule.name.clone(),
                    agent: rule.agent.to_string(),
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct CompiledRule {
    /// Index into the source rules.
    source: usize,
    agent: usize,
    kind_mask: u32,
    metadata: Vec<(String, Option<String>)>,
    /// Keyword ids; empty = no keyword condition.
    keywords: Vec<u32>,
}

/// Longest keyword phrase, in words.
const MAX_PHRASE: usize = 6;

use crate::text::for_each_raw_word;

/// A keyword as matched: trimmed and lower-cased, byte by byte when it is ASCII, with
/// Unicode's lower-case mapping otherwise.
fn normalise_keyword(keyword: &str) -> String {
    let k = keyword.trim();
    if k.is_ascii() {
        k.to_ascii_lowercase()
    } else {
        k.to_lowercase()
    }
}

/// The raw word hashes of a normalised keyword (see [`normalise_keyword`]), as the
/// text's words are hashed ([`for_each_raw_word`]).
fn keyword_words(keyword: &str) -> Vec<u64> {
    let mut words = Vec::new();
    for_each_raw_word(keyword, |h| words.push(h));
    words
}

const PHRASE_SEED: u64 = 0x7068_7261_7365;

#[inline]
fn phrase_step(acc: u64, word: u64) -> u64 {
    (acc.rotate_left(21) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn phrase_hash(words: &[u64]) -> u64 {
    words
        .iter()
        .fold(PHRASE_SEED, |acc, &w| phrase_step(acc, w))
}

#[inline]
fn bloom_bit(h: u64) -> (usize, u64) {
    (((h >> 62) & 3) as usize, 1u64 << ((h >> 56) & 63))
}

#[inline]
fn word_bit(h: u64) -> (usize, u64) {
    (((h >> 52) & 15) as usize, 1u64 << ((h >> 46) & 63))
}

/// Rules compiled against one registry: sorted by priority, agents resolved to indexes,
/// kinds as bit masks, keywords in one automaton.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRules {
    source: RoutingRules,
    rules: Vec<CompiledRule>,
    /// (phrase hash, words in phrase, keyword id), sorted by hash.
    phrases: Vec<(u64, u8, u32)>,
    /// Longest phrase, in words (0 = no keywords).
    max_words: usize,
    /// 256-bit Bloom filter of the phrase hashes.
    bloom: [u64; 4],
    /// 1024-bit Bloom filter of the words of all keywords: a word outside it ends every
    /// phrase that could be under way.
    word_bloom: [u64; 16],
    /// Keyword id → keyword text (lower-cased), for explanations.
    keywords: Vec<String>,
    /// Per task kind: the rules (indexes into `rules`, priority order) whose kind
    /// condition admits it, so a task only checks rules that can match.
    by_kind: Vec<Vec<u32>>,
}

/// Keyword hits of one description, built word by word (see [`CompiledRules::scan`]).
#[derive(Debug, Clone)]
pub(crate) struct KeywordScan {
    ending: [u64; MAX_PHRASE + 1],
    seen: usize,
    /// A bit per keyword id (catalogues of up to 256 keywords).
    small: [u64; 4],
    /// A bit per keyword id, for more than 256 keywords.
    large: Vec<u64>,
}

/// A rule that matched a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RuleMatch {
    /// Index into the compiled (priority-sorted) rules.
    pub(crate) rule: usize,
    /// The agent's registry index.
    pub(crate) agent: usize,
    /// The keyword that matched, if the rule has keywords.
    pub(crate) keyword: Option<u32>,
}

impl CompiledRules {
    pub(crate) fn compile(
        rules: &RoutingRules,
        registry: &AgentRegistry,
    ) -> Result<CompiledRules, HaloError> {
        rules.validate(registry)?;
        let mut order: Vec<usize> = (0..rules.rules.len())
            .filter(|&i| rules.rules[i].enabled)
            .collect();
        // Stable sort: ties keep file order.
        order.sort_by_key(|&i| std::cmp::Reverse(rules.rules[i].priority));
        let mut keywords: Vec<String> = Vec::new();
        // The word hashes of each keyword, by keyword id.
        let mut keyword_words_by_id: Vec<Vec<u64>> = Vec::new();
        let mut compiled = Vec::with_capacity(order.len());
        for i in order {
            let rule = &rules.rules[i];
            let agent = registry.index_of(rule.agent.as_str()).ok_or_else(|| {
                HaloError::UnknownRuleAgent {
                    rule: rule.name.clone(),
                    agent: rule.agent.to_string(),
                }
            })?;
            let kind_mask = rule.kinds.iter().fold(0u32, |m, k| m | (1u32 << k.index()));
            let mut ids = Vec::with_capacity(rule.keywords.len());
            for k in &rule.keywords {
                let k = normalise_keyword(k);
                let id = match keywords.iter().position(|x| *x == k) {
                    Some(id) => id,
                    None => {
                        let words = keyword_words(&k);
                        if words.is_empty() {
                            return Err(HaloError::EmptyKeyword {
                                rule: rule.name.clone(),
                            });
                        }
                        if words.len() > MAX_PHRASE {
                            return Err(HaloError::KeywordTooLong {
                                rule: rule.name.clone(),
                                keyword: k,
                                words: words.len(),
                                max: MAX_PHRASE,
                            });
                        }
                        keywords.push(k);
                        keyword_words_by_id.push(words);
                        keywords.len() - 1
                    }
                };
                ids.push(id as u32);
            }
            compiled.push(CompiledRule {
                source: i,
                agent,
                kind_mask,
                metadata: rule
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), (v != "*").then(|| v.clone())))
                    .collect(),
                keywords: ids,
            });
        }
        let mut phrases = Vec::with_capacity(keywords.len());
        let mut max_words = 0usize;
        let mut word_bloom = [0u64; 16];
        for (id, words) in keyword_words_by_id.iter().enumerate() {
            max_words = max_words.max(words.len());
            for &w in words {
                let (i, bit) = word_bit(w);
                word_bloom[i] |= bit;
            }
            phrases.push((phrase_hash(words), words.len() as u8, id as u32));
        }
        phrases.sort_unstable();
        let mut bloom = [0u64; 4];
        for p in &phrases {
            let (i, bit) = bloom_bit(p.0);
            bloom[i] |= bit;
        }
        let by_kind = (0..TaskKind::ALL.len())
            .map(|k| {
                (0..compiled.len() as u32)
                    .filter(|&i| {
                        let m = compiled[i as usize].kind_mask;
                        m == 0 || m & (1u32 << k) != 0
                    })
                    .collect()
            })
            .collect();
        Ok(CompiledRules {
            source: rules.clone(),
            by_kind,
            rules: compiled,
            phrases,
            max_words,
            bloom,
            word_bloom,
            keywords,
        })
    }

    /// The rules as written.
    pub(crate) fn source(&self) -> &RoutingRules {
        &self.source
    }

    /// The source rule of a compiled rule.
    pub(crate) fn rule(&self, compiled: usize) -> Option<&Rule> {
        self.rules
            .get(compiled)
            .and_then(|c| self.source.rules.get(c.source))
    }

    /// The keyword text of a keyword id.
    pub(crate) fn keyword(&self, id: u32) -> Option<&str> {
        self.keywords.get(id as usize).map(String::as_str)
    }

    /// Whether matching needs the words of the description (some rule has keywords).
    pub(crate) fn needs_words(&self) -> bool {
        self.max_words > 0
    }

    /// A fresh keyword scan for one description: feed it every raw word hash
    /// ([`crate::text::raw_word_hash`]) in order with [`CompiledRules::feed`], then call
    /// [`CompiledRules::matches`].
    pub(crate) fn scan(&self) -> KeywordScan {
        let n_words = self.keywords.len().div_ceil(64);
        KeywordScan {
            ending: [PHRASE_SEED; MAX_PHRASE + 1],
            seen: 0,
            small: [0; 4],
            large: if n_words > 4 {
                vec![0; n_words]
            } else {
                Vec::new()
            },
        }
    }

    /// Feeds the next raw word of the description to a keyword scan.
    #[inline]
    pub(crate) fn feed(&self, s: &mut KeywordScan, h: u64) {
        let (i, bit) = word_bit(h);
        if self.word_bloom[i] & bit == 0 {
            // No keyword has this word: no phrase spans it.
            s.seen = 0;
            return;
        }
        s.seen += 1;
        let max = self.max_words.min(s.seen);
        // ending[n] = hash of the n-word phrase ending at the previous word.
        for n in (1..=max).rev() {
            let ph = phrase_step(s.ending[n - 1], h);
            s.ending[n] = ph;
            let (i, bit) = bloom_bit(ph);
            if self.bloom[i] & bit == 0 {
                continue;
            }
            let from = self.phrases.partition_point(|p| p.0 < ph);
            for p in &self.phrases[from..] {
                if p.0 != ph {
                    break;
                }
                if usize::from(p.1) == n {
                    let id = p.2 as usize;
                    let hits = if s.large.is_empty() {
                        &mut s.small[..]
                    } else {
                        &mut s.large[..]
                    };
                    if let Some(w) = hits.get_mut(id / 64) {
                        *w |= 1u64 << (id % 64);
                    }
                }
            }
        }
    }

    /// Calls `f` with every matching rule, highest priority first, until `f` returns false.
    #[cfg(test)]
    pub(crate) fn for_each_match(&self, task: &Task, f: impl FnMut(RuleMatch) -> bool) {
        let mut s = self.scan();
        if self.needs_words() {
            for_each_raw_word(&task.description, |h| self.feed(&mut s, h));
        }
        self.matches(&s, task, f);
    }

    /// Calls `f` with every rule matching the task, given the keyword scan of its
    /// description, highest priority first, until `f` returns false.
    pub(crate) fn matches(
        &self,
        s: &KeywordScan,
        task: &Task,
        mut f: impl FnMut(RuleMatch) -> bool,
    ) {
        let hits: &[u64] = if s.large.is_empty() {
            &s.small
        } else {
            &s.large
        };
        let hit = |id: u32| {
            hits.get(id as usize / 64)
                .is_some_and(|w| w & (1u64 << (id % 64)) != 0)
        };
        let any_hit = hits.iter().any(|w| *w != 0);
        let Some(candidates) = self.by_kind.get(task.kind.index()) else {
            return;
        };
        for &i in candidates {
            let i = i as usize;
            let Some(r) = self.rules.get(i) else {
                continue;
            };
            if !any_hit && !r.keywords.is_empty() {
                continue;
            }
            if !r.metadata.is_empty() && task.metadata.is_empty() {
                continue;
            }
            let meta_ok = r
                .metadata
                .iter()
                .all(|(k, v)| match task.metadata.get(k.as_str()) {
                    None => false,
                    Some(actual) => v.as_ref().is_none_or(|want| want == actual),
                });
            if !meta_ok {
                continue;
            }
            let keyword = if r.keywords.is_empty() {
                None
            } else {
                match r.keywords.iter().copied().find(|&id| hit(id)) {
                    Some(id) => Some(id),
                    None => continue,
                }
            };
            if r.keywords.is_empty() || keyword.is_some() {
                let go_on = f(RuleMatch {
                    rule: i,
                    agent: r.agent,
                    keyword,
                });
                if !go_on {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AgentProfile;
    use genesis_core::TaskId;

    fn registry() -> AgentRegistry {
        AgentRegistry::new(vec![
            AgentProfile::new("security", "security reviews"),
            AgentProfile::new("finance", "money"),
            AgentProfile::new("deploy", "ships"),
        ])
        .unwrap()
    }

    fn first(c: &CompiledRules, task: &Task) -> Option<(String, Option<String>)> {
        let mut out = None;
        c.for_each_match(task, |m| {
            let name = c.rule(m.rule).unwrap().name.clone();
            out = Some((
                name,
                m.keyword.and_then(|k| c.keyword(k)).map(str::to_owned),
            ));
            false
        });
        out
    }

    #[test]
    fn parses_and_matches_by_priority_kind_metadata_and_keyword() {
        let rules = RoutingRules::from_toml_str(
            r#"
[[rule]]
name = "low"
priority = 1
agent = "deploy"
kinds = ["deploy"]

[[rule]]
name = "sec"
priority = 50
agent = "security"
keywords = ["vulnerability", "pen test"]

[[rule]]
name = "money"
priority = 10
agent = "finance"
metadata = { team = "finance", budget = "*" }
"#,
        )
        .unwrap();
        let c = CompiledRules::compile(&rules, &registry()).unwrap();
        let t = |kind, d: &str| Task::new(TaskId::new("t"), kind, d);
        assert_eq!(
            first(&c, &t(TaskKind::Deploy, "Run a PEN TEST, then ship")),
            Some(("sec".into(), Some("pen test".into())))
        );
        // Whole words only: "vulnerabilityscan" is not "vulnerability".
        assert_eq!(
            first(&c, &t(TaskKind::Deploy, "vulnerabilityscan")),
            Some(("low".into(), None))
        );
        assert_eq!(first(&c, &t(TaskKind::Test, "nothing")), None);
        // Phrases match across punctuation between their words.
        assert_eq!(
            first(&c, &t(TaskKind::Test, "Pen-test the API")),
            Some(("sec".into(), Some("pen test".into())))
        );
        let meta = t(TaskKind::Test, "x").with_metadata("team", "finance");
        assert_eq!(first(&c, &meta), None, "budget key missing");
        let meta = meta.with_metadata("budget", "10");
        assert_eq!(first(&c, &meta), Some(("money".into(), None)));
    }

    #[test]
    fn unknown_agent_and_bad_rules_are_reported() {
        let rules = RoutingRules::new(vec![Rule::new("r1", "ghost", 1)]);
        let err = CompiledRules::compile(&rules, &registry()).unwrap_err();
        assert_eq!(err.to_string(), "rule \"r1\" names unknown agent \"ghost\"");
        let dup = "[[rule]]\nname='a'\nagent='x'\n[[rule]]\nname='a'\nagent='y'\n";
        assert!(matches!(
            RoutingRules::from_toml_str(dup),
            Err(HaloError::DuplicateRule { .. })
        ));
        let empty_kw = "[[rule]]\nname='a'\nagent='x'\nkeywords=['']\n";
        assert!(matches!(
            RoutingRules::from_toml_str(empty_kw),
            Err(HaloError::EmptyKeyword { .. })
        ));
        let long = RoutingRules::new(vec![
            Rule::new("r", "deploy", 1).with_keyword("a b c d e f g"),
        ]);
        assert!(matches!(
            CompiledRules::compile(&long, &registry()),
            Err(HaloError::KeywordTooLong {
                words: 7,
                max: 6,
                ..
            })
        ));
        let bad_kind = "[[rule]]\nname='a'\nagent='x'\nkinds=['juggling']\n";
        assert!(matches!(
            RoutingRules::from_toml_str(bad_kind),
            Err(HaloError::RulesToml { .. })
        ));
    }

    #[test]
    fn keywords_match_non_ascii_words_in_any_case() {
        let rules = RoutingRules::new(vec![
            Rule::new("transfer", "finance", 30).with_keyword("überweisung"),
            Rule::new("greek", "deploy", 20).with_keyword("ΟΔΟΣ"),
            Rule::new("audit", "security", 10).with_keyword("Проверка безопасности"),
        ]);
        let c = CompiledRules::compile(&rules, &registry()).unwrap();
        let name =
            |d: &str| first(&c, &Task::new(TaskId::new("t"), TaskKind::Generic, d)).map(|(n, _)| n);
        for d in [
            "Überweisung prüfen",
            "ÜBERWEISUNG PRÜFEN",
            "bitte überweisung",
            "eine ÜberWEISUNG",
        ] {
            assert_eq!(name(d).as_deref(), Some("transfer"), "{d}");
        }
        assert_eq!(
            first(
                &c,
                &Task::new(TaskId::new("t"), TaskKind::Generic, "ÜBERWEISUNG")
            )
            .and_then(|(_, k)| k)
            .as_deref(),
            Some("überweisung"),
            "explanations quote the lower-cased keyword"
        );
        // Whole words still: no match inside a longer word or a different word.
        assert_eq!(name("Überweisungsauftrag"), None);
        assert_eq!(name("ueberweisung"), None);
        // An upper-case keyword (final sigma) matches every casing of the word.
        for d in ["οδος", "ΟΔΟΣ", "Οδος", "οδοσ"] {
            assert_eq!(name(d).as_deref(), Some("greek"), "{d}");
        }
        assert_eq!(name("οδός"), None, "accents are not case");
        // Any mix of case, however long the word.
        for d in [
            "проверка безопасности",
            "Проверка безопасности кода",
            "ПРОВЕРКА БЕЗОПАСНОСТИ",
            "пРоВеРкА Безопасности",
            "ПрОвЕрКа БеЗоПаСнОсТи",
        ] {
            assert_eq!(name(d).as_deref(), Some("audit"), "{d}");
        }
        assert_eq!(name("проверка"), None, "a phrase needs all its words");
    }

    #[test]
    fn keyword_errors_name_the_rule() {
        let long = RoutingRules::new(vec![
            Rule::new("deploys", "deploy", 1).with_keyword("a b c d e f g"),
        ]);
        assert_eq!(
            CompiledRules::compile(&long, &registry())
                .unwrap_err()
                .to_string(),
            "rule \"deploys\" keyword \"a b c d e f g\" has 7 words, more than the maximum of 6"
        );
        let punct = RoutingRules::new(vec![
            Rule::new("ok", "deploy", 2).with_keyword("ship"),
            Rule::new("dashes", "deploy", 1).with_keyword("--"),
        ]);
        assert_eq!(
            CompiledRules::compile(&punct, &registry())
                .unwrap_err()
                .to_string(),
            "rule \"dashes\" has an empty keyword"
        );
    }

    #[test]
    fn disabled_rules_never_match_and_rules_round_trip() {
        let mut r = Rule::new("off", "deploy", 5);
        r.enabled = false;
        let rules = RoutingRules::new(vec![r, Rule::new("on", "finance", 1)]);
        let c = CompiledRules::compile(&rules, &registry()).unwrap();
        let t = Task::new(TaskId::new("t"), TaskKind::Generic, "x");
        assert_eq!(first(&c, &t), Some(("on".into(), None)));
        let back = RoutingRules::from_toml_str(&rules.to_toml_string().unwrap()).unwrap();
        assert_eq!(back, rules);
    }
}
