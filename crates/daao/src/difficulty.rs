//! Difficulty estimation: how capable a model a task needs.

use genesis_core::{Task, TaskKind};

/// Estimates how hard a task is for an LLM, in `[0, 1]` (0: any small model will do;
/// 1: needs the strongest model available). Implementations must be deterministic
/// and cheap: this runs for every LLM task on the planning hot path.
pub trait DifficultyEstimator: Send + Sync {
    /// The difficulty of `task`, in `[0, 1]`.
    fn estimate(&self, task: &Task) -> f64;

    /// Appends what made `task` as hard as [`DifficultyEstimator::estimate`] says, for
    /// the model choice's reason (the heuristic writes `kind design 0.55, "prove"
    /// +0.25, digits +0.05`). Writes nothing by default.
    fn explain(&self, task: &Task, out: &mut String) {
        let _ = (task, out);
    }

    /// [`DifficultyEstimator::estimate`] and [`DifficultyEstimator::explain`] at once:
    /// the model selector calls this, so an estimator that reads the text once for both
    /// can say so (the heuristic does).
    fn estimate_explained(&self, task: &Task, out: &mut String) -> f64 {
        let d = self.estimate(task);
        self.explain(task, out);
        d
    }
}

/// The deterministic default estimator.
///
/// It starts from a base difficulty per [`TaskKind`] (designing a system is harder than
/// answering a support ticket) and adds evidence from the description: words that signal
/// reasoning depth (`prove`, `optimise`, `distributed`, `concurrency`, `algorithm`),
/// numbers and formulas (multi-step arithmetic), length, required skills and the token
/// estimate. Each signal's contribution is bounded, and the result is squashed into
/// `[0, 1]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeuristicDifficulty;

/// Words that signal deep reasoning, with their weight.
const HARD_WORDS: &[(&str, f64)] = &[
    ("prove", 0.25),
    ("proof", 0.25),
    ("theorem", 0.25),
    ("derive", 0.2),
    ("optimi", 0.15),
    ("distributed", 0.2),
    ("concurren", 0.2),
    ("consensus", 0.2),
    ("fault-toleran", 0.15),
    ("algorithm", 0.15),
    ("complexity", 0.15),
    ("architect", 0.1),
    ("security", 0.1),
    ("cryptograph", 0.2),
    ("vulnerab", 0.15),
    ("scal", 0.08),
    ("trade-off", 0.1),
    ("tradeoff", 0.1),
    ("migrat", 0.08),
    ("refactor", 0.08),
    ("debug", 0.1),
    ("root cause", 0.12),
    ("calculate", 0.1),
    ("probability", 0.15),
    ("statistic", 0.1),
    ("equation", 0.15),
    ("integral", 0.2),
    ("legal", 0.1),
    ("compliance", 0.1),
    ("multi-step", 0.1),
    ("step by step", 0.1),
    ("why", 0.05),
    ("explain", 0.05),
    ("compare", 0.05),
];

/// Words that signal routine work, with their (negative) weight.
const EASY_WORDS: &[(&str, f64)] = &[
    ("summar", -0.08),
    ("translate", -0.08),
    ("list", -0.05),
    ("reply", -0.08),
    ("thank", -0.1),
    ("format", -0.06),
    ("rename", -0.08),
    ("typo", -0.1),
    ("greet", -0.1),
    ("simple", -0.08),
];

fn base(kind: TaskKind) -> f64 {
    match kind {
        TaskKind::Design | TaskKind::Optimize => 0.55,
        TaskKind::Security => 0.55,
        TaskKind::Implement | TaskKind::Backend => 0.5,
        TaskKind::Research | TaskKind::Analyze | TaskKind::Finance => 0.45,
        TaskKind::Frontend | TaskKind::Test | TaskKind::Deploy => 0.4,
        TaskKind::Specify => 0.35,
        TaskKind::Monitor | TaskKind::Document | TaskKind::Marketing => 0.3,
        TaskKind::Sales | TaskKind::Generic => 0.28,
        TaskKind::Support => 0.2,
    }
}

/// The signal words as one dense, case-insensitive automaton over byte classes.
///
/// Built once from an Aho-Corasick DFA (which handles overlaps and case): its states
/// are renumbered densely and its 256 byte values collapsed into the few classes the
/// words use. A transition stores the next state's row offset (state × stride) with
/// the top bit set when a word ends there, so a scan costs two table loads and an add
/// per byte, and a branch that is almost never taken. The transition table has a fixed
/// power-of-two size, so an index masked to it needs no bounds check. `accept[s]` holds
/// a bit per word that ends in state `s` (every overlapping match, not only the
/// longest).
struct Signals {
    /// Byte → class: one class per (case-folded) byte that occurs in a word, 0 for
    /// every other byte (they all lead back to the start state).
    classes: [u8; 256],
    /// Number of classes: the row length of `next`.
    stride: usize,
    /// `next[state * stride + class]`: the next state × stride, | [`MATCH`] when a
    /// word ends there. Entries past the last state are never reached.
    next: Box<[u16; TABLE]>,
    /// Per state, the words that end there, as bits.
    accept: Vec<u64>,
    /// Per word (bit), its weight.
    weights: Vec<f64>,
    /// Longest word, in bytes, minus one: how far a word can reach past a split point.
    reach: usize,
}

/// Size of the transition table: states × classes must fit (checked when it is built,
/// and by a test on the shipped word lists).
const TABLE: usize = 1 << 13;

impl Signals {
    fn build() -> Option<Self> {
        use aho_corasick::Anchored;
        use aho_corasick::automaton::Automaton;
        // Each word must start a word of the text ("prove" is not in "improve", "scal" not
        // in "escalate"): the patterns start with a space, the text is scanned after a
        // virtual one, and every ASCII byte that is not a letter or digit reads as a space
        // ("trade-off" and "trade off" alike; verification V9).
        let words: Vec<String> = HARD_WORDS
            .iter()
            .chain(EASY_WORDS)
            .map(|(w, _)| format!(" {}", w.replace('-', " ")))
            .collect();
        let weights: Vec<f64> = HARD_WORDS
            .iter()
            .chain(EASY_WORDS)
            .map(|(_, w)| *w)
            .collect();
        if words.len() > 64 {
            return None;
        }
        let dfa = aho_corasick::dfa::DFA::builder()
            .ascii_case_insensitive(true)
            .build(&words)
            .ok()?;
        let mut classes = [0u8; 256];
        // One representative byte per class; class 0 is "no word uses this byte".
        let mut representative = vec![0u8];
        for w in &words {
            for b in w.bytes().map(|b| b.to_ascii_lowercase()) {
                if classes[usize::from(b)] == 0 {
                    let class = u8::try_from(representative.len()).ok()?;
                    classes[usize::from(b)] = class;
                    classes[usize::from(b.to_ascii_uppercase())] = class;
                    representative.push(b);
                }
            }
        }
        // Separators: every ASCII byte but letters and digits is a space.
        let space = classes[usize::from(b' ')];
        for b in 0..128u8 {
            if !b.is_ascii_alphanumeric() {
                classes[usize::from(b)] = space;
            }
        }
        // Class 0 needs a byte no word uses.
        representative[0] = (0..=255u8).find(|b| classes[usize::from(*b)] == 0)?;
        let stride = representative.len();
        let start = dfa.start_state(Anchored::No).ok()?;
        let mut dense = std::collections::HashMap::new();
        let mut order = vec![start];
        dense.insert(start, 0u16);
        let mut next = Vec::new();
        let mut accept = Vec::new();
        let mut i = 0;
        while let Some(&sid) = order.get(i) {
            let mut bits = 0u64;
            if dfa.is_match(sid) {
                for k in 0..dfa.match_len(sid) {
                    bits |= 1 << dfa.match_pattern(sid, k).as_usize();
                }
            }
            accept.push(bits);
            for &b in &representative {
                let to = dfa.next_state(Anchored::No, sid, b);
                let id = match dense.get(&to) {
                    Some(&id) => id,
                    None => {
                        let id = u16::try_from(order.len()).ok()?;
                        dense.insert(to, id);
                        order.push(to);
                        id
                    }
                };
                next.push(id);
            }
            i += 1;
        }
        // Row offsets must fit in the table (and so beside the match bit).
        if order.len() * stride > TABLE {
            return None;
        }
        let mut table = Box::new([0u16; TABLE]);
        for (slot, &to) in table.iter_mut().zip(&next) {
            let state = usize::from(to);
            let offset = u16::try_from(state * stride).ok()?;
            *slot = if accept.get(state).is_some_and(|bits| *bits != 0) {
                offset | MATCH
            } else {
                offset
            };
        }
        let reach = words.iter().map(|w| w.len()).max().unwrap_or(1) - 1;
        Some(Signals {
            classes,
            stride,
            next: table,
            accept,
            weights,
            reach,
        })
    }

    /// The sum of the weights of the words in `text`, each counted once, and the
    /// [`COUNTS`] of its bytes, in the same pass.
    ///
    /// A DFA walk is one long chain of dependent loads, so longer texts are walked as
    /// two halves at once (independent chains the CPU overlaps). The first walk runs
    /// [`Signals::reach`] bytes into the second half, so a word across the split point
    /// is still seen whole; those bytes are not counted twice.
    fn scan(&self, text: &[u8]) -> (f64, u64) {
        let (seen, counts) = self.scan_seen(text);
        let mut total = 0.0;
        let mut seen = seen;
        while seen != 0 {
            let i = seen.trailing_zeros() as usize;
            total += self.weights.get(i).copied().unwrap_or(0.0);
            seen &= seen - 1;
        }
        (total, counts)
    }

    /// The words in `text` (a bit per word, in [`HARD_WORDS`] then [`EASY_WORDS`]
    /// order) and the [`COUNTS`] of its bytes.
    fn scan_seen(&self, text: &[u8]) -> (u64, u64) {
        if text.len() < 64 {
            let mut lane = self.start();
            for &b in text {
                lane.counts += COUNTS[usize::from(b)];
                self.step(&mut lane, b);
            }
            (lane.seen, lane.counts)
        } else {
            let (front, back) = text.split_at(text.len() / 2);
            // The back half's walk starts mid-text without the virtual space: it can only
            // miss a word at its very start, which the front walk reaches.
            let (mut x, mut y) = (self.start(), Lane::default());
            for (&a, &b) in front.iter().zip(back) {
                x.counts += COUNTS[usize::from(a)];
                self.step(&mut x, a);
                y.counts += COUNTS[usize::from(b)];
                self.step(&mut y, b);
            }
            // `back` is at most one byte longer than `front`.
            for &b in back.get(front.len()..).unwrap_or_default() {
                y.counts += COUNTS[usize::from(b)];
                self.step(&mut y, b);
            }
            for &b in back.iter().take(self.reach) {
                self.step(&mut x, b);
            }
            (x.seen | y.seen, x.counts + y.counts)
        }
    }

    /// A walk at the start of a text: after the virtual space before its first word.
    fn start(&self) -> Lane {
        let mut lane = Lane::default();
        self.step(&mut lane, b' ');
        lane
    }

    #[inline(always)]
    fn step(&self, lane: &mut Lane, b: u8) {
        let class = usize::from(self.classes[usize::from(b)]);
        let to = self.next[(lane.row + class) & (TABLE - 1)];
        lane.row = usize::from(to & !MATCH);
        if to & MATCH != 0 {
            lane.seen |= self
                .accept
                .get(lane.row / self.stride)
                .copied()
                .unwrap_or(0);
        }
    }
}

/// One walk through [`Signals`]: its state (as a row offset), the words it has seen
/// and the byte counts it has made.
#[derive(Default)]
struct Lane {
    row: usize,
    seen: u64,
    counts: u64,
}

/// Per byte: 1 for a digit, 1 << 32 for an arithmetic operator (`= + * ^ /`), so one
/// sum counts both (a text would need 4 GiB of digits to carry into the operators).
static COUNTS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_digit() {
            1
        } else if matches!(c, b'=' | b'+' | b'*' | b'^' | b'/') {
            1 << 32
        } else {
            0
        };
        b += 1;
    }
    t
};

/// Marks a transition into a state where a word ends.
const MATCH: u16 = 0x8000;

static SIGNALS: std::sync::LazyLock<Option<Signals>> = std::sync::LazyLock::new(Signals::build);

/// The sum of the weights of the signal words in `text`, each counted once, and its
/// digits and arithmetic operators (`= + * ^ /`).
fn signals(text: &[u8]) -> (f64, usize, usize) {
    let (weight, counts) = match SIGNALS.as_ref() {
        Some(s) => s.scan(text),
        None => (0.0, text.iter().map(|b| COUNTS[usize::from(*b)]).sum()),
    };
    let digits = usize::try_from(counts & 0xFFFF_FFFF).unwrap_or(usize::MAX);
    (
        weight,
        digits,
        usize::try_from(counts >> 32).unwrap_or(usize::MAX),
    )
}

/// The sum of the weights of the signal words in `text`, each counted once.
#[cfg(test)]
fn signal_weight(text: &[u8]) -> f64 {
    signals(text).0
}

/// The parts of [`HeuristicDifficulty`]'s estimate, each already bounded.
struct Parts {
    base: f64,
    words: f64,
    digits: f64,
    ops: f64,
    length: f64,
    skills: f64,
    tokens: f64,
}

impl Parts {
    /// `words` is the signal words' summed weight.
    fn of(task: &Task, words: f64, digits: usize, ops: usize) -> Parts {
        Parts {
            base: base(task.kind),
            words: words.clamp(-0.25, 0.4),
            // Numbers and operators: multi-step arithmetic and formulas.
            digits: (digits as f64 / 40.0).min(0.1),
            ops: (ops as f64 / 10.0).min(0.1),
            // Longer descriptions carry more constraints.
            length: ((task.description.len() as f64 / 400.0).ln_1p() * 0.08).min(0.12),
            skills: (task.required_skills.len() as f64 * 0.02).min(0.06),
            tokens: (f64::from(task.estimated_tokens) / 50_000.0).min(0.08),
        }
    }

    fn sum(&self) -> f64 {
        let score = self.base
            + self.words
            + self.digits
            + self.ops
            + self.length
            + self.skills
            + self.tokens;
        score.clamp(0.0, 1.0)
    }
}

/// Per signal word (in [`HARD_WORDS`] then [`EASY_WORDS`] order), its part of an
/// explanation: `, "prove" +0.25`, written once.
static WORD_TEXTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    HARD_WORDS
        .iter()
        .chain(EASY_WORDS)
        .map(|(word, weight)| {
            let mut text = format!(", \"{word}\" ");
            push_signed2(&mut text, *weight);
            text
        })
        .collect()
});

/// The first 2,000 bytes of `task`'s description: they carry every signal, which keeps
/// the estimate O(1) on long descriptions and allocation-free.
fn head(task: &Task) -> &[u8] {
    let text = task.description.as_bytes();
    &text[..text.len().min(2_000)]
}

/// Appends `+0.25` / `-0.08` (two decimals, sign always written; no `format!`: this
/// runs for every task of every plan).
fn push_signed2(out: &mut String, v: f64) {
    out.push(if v < 0.0 { '-' } else { '+' });
    genesis_core::decimal::push_fixed2(out, v.abs());
}

impl DifficultyEstimator for HeuristicDifficulty {
    fn estimate(&self, task: &Task) -> f64 {
        // Each signal counts once, however often it appears.
        let (words, digits, ops) = signals(head(task));
        Parts::of(task, words, digits, ops).sum()
    }

    /// `kind design 0.55, "prove" +0.25, "distributed" +0.15, digits +0.05, length
    /// +0.03`: the kind's base, then every part that is not zero (signal words each
    /// with their weight, capped together at +0.40 / −0.25).
    fn explain(&self, task: &Task, out: &mut String) {
        self.estimate_explained(task, out);
    }

    /// One scan of the text for the estimate and its explanation (this runs for every
    /// task of every plan: the explanation's second scan was a tenth of planning).
    fn estimate_explained(&self, task: &Task, out: &mut String) -> f64 {
        let (seen, counts) = match SIGNALS.as_ref() {
            Some(s) => s.scan_seen(head(task)),
            None => (0, head(task).iter().map(|b| COUNTS[usize::from(*b)]).sum()),
        };
        let digits = usize::try_from(counts & 0xFFFF_FFFF).unwrap_or(usize::MAX);
        let ops = usize::try_from(counts >> 32).unwrap_or(usize::MAX);
        let mut words = 0.0;
        out.push_str("kind ");
        out.push_str(task.kind.as_str());
        out.push(' ');
        genesis_core::decimal::push_fixed2(out, base(task.kind));
        let mut bits = seen;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let (Some((_, weight)), Some(text)) = (
                HARD_WORDS.iter().chain(EASY_WORDS).nth(i),
                WORD_TEXTS.get(i),
            ) {
                words += weight;
                out.push_str(text);
            }
        }
        let parts = Parts::of(task, words, digits, ops);
        if parts.words != words {
            out.push_str(" (words capped at ");
            push_signed2(out, parts.words);
            out.push(')');
        }
        for (name, v) in [
            (", digits ", parts.digits),
            (", operators ", parts.ops),
            (", length ", parts.length),
            (", required skills ", parts.skills),
            (", tokens ", parts.tokens),
        ] {
            if v >= 0.005 {
                out.push_str(name);
                push_signed2(out, v);
            }
        }
        parts.sum()
    }
}

#[cfg(test)]
mod tests {
    use genesis_core::TaskId;

    use super::*;

    fn d(kind: TaskKind, text: &str) -> f64 {
        HeuristicDifficulty.estimate(&Task::new(TaskId::new("t"), kind, text))
    }

    #[test]
    fn orders_tasks_sensibly() {
        let easy = d(TaskKind::Support, "Reply to the customer and thank them");
        let mid = d(TaskKind::Backend, "Implement the invoices REST endpoint");
        let hard = d(
            TaskKind::Design,
            "Design a distributed consensus algorithm and prove it is fault-tolerant",
        );
        assert!(easy < mid && mid < hard, "{easy} {mid} {hard}");
        assert!(easy < 0.3);
        assert!(hard > 0.8);
    }

    #[test]
    fn always_in_range() {
        for kind in TaskKind::ALL {
            for text in ["", "x", &"prove the theorem = 1+2*3^4 ".repeat(500), "é∂ƒ©"] {
                let v = d(*kind, text);
                assert!((0.0..=1.0).contains(&v), "{kind} {v}");
            }
        }
    }

    proptest::proptest! {
        /// The dense automaton finds exactly the words a plain substring search finds.
        #[test]
        fn dense_automaton_agrees_with_substring_search(
            text in "(?i)(prove|proof|optimi|scal|trade-off|root cause|sum|list|typo|fault-tolerant|[a-z 0-9=+ -]){0,120}"
        ) {
            // A word counts where it starts a word: after the start or a byte that is
            // not an ASCII letter or digit (read as a space, as `-` in the word is).
            let spaced: String = std::iter::once(' ')
                .chain(text.to_ascii_lowercase().chars().map(|c| {
                    if c.is_ascii() && !c.is_ascii_alphanumeric() { ' ' } else { c }
                }))
                .collect();
            let expected: f64 = HARD_WORDS
                .iter()
                .chain(EASY_WORDS)
                .filter(|(w, _)| spaced.contains(&format!(" {}", w.replace('-', " "))))
                .map(|(_, weight)| weight)
                .sum();
            let (weight, digits, ops) = signals(text.as_bytes());
            proptest::prop_assert!((weight - expected).abs() < 1e-9);
            proptest::prop_assert_eq!(digits, text.bytes().filter(u8::is_ascii_digit).count());
            proptest::prop_assert_eq!(ops, text.bytes().filter(|b| matches!(b, b'=' | b'+')).count());
        }
    }

    #[test]
    fn the_shipped_words_fit_the_automaton_table() {
        let s = SIGNALS.as_ref().expect("signal automaton builds");
        assert!(s.accept.len() * s.stride <= TABLE);
    }

    /// The one-scan estimate with its explanation is the estimate, bit for bit.
    #[test]
    fn the_explained_estimate_is_the_estimate() {
        for kind in TaskKind::ALL {
            for text in [
                "",
                "Design a distributed consensus algorithm and prove it is fault-tolerant",
                "Reply to the customer and thank them",
                &"prove the theorem = 1+2*3^4 ".repeat(90),
            ] {
                let task = Task::new(TaskId::new("t"), *kind, text);
                let mut why = String::new();
                let d = HeuristicDifficulty.estimate_explained(&task, &mut why);
                assert_eq!(d.to_bits(), HeuristicDifficulty.estimate(&task).to_bits());
                assert!(why.starts_with("kind "), "{why}");
            }
        }
    }

    /// Verification V9: "improve" and "approve" read as "prove" (+0.25), "escalate" as
    /// "scal": a signal word must start a word of the text.
    #[test]
    fn signal_words_count_only_at_the_start_of_a_word() {
        let w = |t: &str| signal_weight(t.as_bytes());
        for text in [
            "Improve the onboarding emails",
            "Approve the budget",
            "Escalate the ticket",
        ] {
            assert_eq!(w(text), 0.0, "{text}");
        }
        assert!((w("prove it") - 0.25).abs() < 1e-12);
        assert!((w("(prove) it") - 0.25).abs() < 1e-12);
        assert!((w("a trade off") - 0.1).abs() < 1e-12);
        assert!((w("a trade-off") - 0.1).abs() < 1e-12);
        assert!((w("Scale the cluster") - 0.08).abs() < 1e-12);
        // Long texts walk two halves: a word right at the split still counts once.
        let long = format!("{}prove{}", "x ".repeat(40), " y".repeat(40));
        assert!((w(&long) - 0.25).abs() < 1e-12, "{long}");
    }

    #[test]
    fn digits_and_operators_are_counted_in_the_same_pass() {
        let (weight, digits, ops) = signals(b"prove 12 + 345 = x^2 / 7");
        assert!((weight - 0.25).abs() < 1e-12);
        assert_eq!((digits, ops), (7, 4));
        assert_eq!(signals(b""), (0.0, 0, 0));
    }

    #[test]
    fn signals_match_case_insensitively_overlapping_and_once() {
        let w = |t: &str| signal_weight(t.as_bytes());
        assert!((w("PROVE it") - 0.25).abs() < 1e-12);
        // Counted once however often it appears.
        assert!((w("prove prove prove") - 0.25).abs() < 1e-12);
        // Overlapping: "optimisation" holds "optimi"; "scalability" holds "scal".
        assert!((w("optimisation scalability") - 0.23).abs() < 1e-12);
        // "proof" and "prove" share a prefix and both count.
        assert!((w("proof: prove") - 0.5).abs() < 1e-12);
        assert!((w("summarise and translate") + 0.16).abs() < 1e-12);
        assert_eq!(w(""), 0.0);
        assert_eq!(w("nothing here"), 0.0);
    }
}
