//! Difficulty estimation: how capable a model a task needs.

use genesis_core::{Task, TaskKind};

/// Estimates how hard a task is for an LLM, in `[0, 1]` (0: any small model will do;
/// 1: needs the strongest model available). Implementations must be deterministic
/// and cheap: this runs for every LLM task on the planning hot path.
pub trait DifficultyEstimator: Send + Sync {
    /// The difficulty of `task`, in `[0, 1]`.
    fn estimate(&self, task: &Task) -> f64;
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

/// Every hard and easy word in one automaton, built once: one pass over the text
/// finds all signals.
/// The signal words as one case-insensitive DFA, walked by hand: one table lookup per
/// byte, every overlapping match seen (the iterator API cost ten times more per byte).
static SIGNALS: std::sync::LazyLock<Option<(aho_corasick::dfa::DFA, Vec<f64>)>> =
    std::sync::LazyLock::new(|| {
        let words: Vec<&str> = HARD_WORDS
            .iter()
            .chain(EASY_WORDS)
            .map(|(w, _)| *w)
            .collect();
        let weights: Vec<f64> = HARD_WORDS
            .iter()
            .chain(EASY_WORDS)
            .map(|(_, w)| *w)
            .collect();
        aho_corasick::dfa::DFA::builder()
            .ascii_case_insensitive(true)
            .build(words)
            .ok()
            .map(|dfa| (dfa, weights))
    });

/// The sum of the weights of the signal words in `text`, each counted once.
fn signal_weight(text: &[u8]) -> f64 {
    use aho_corasick::Anchored;
    use aho_corasick::automaton::Automaton;
    let Some((dfa, weights)) = SIGNALS.as_ref() else {
        return 0.0;
    };
    let Ok(mut sid) = dfa.start_state(Anchored::No) else {
        return 0.0;
    };
    let mut seen = 0u64;
    let mut total = 0.0;
    for &b in text {
        sid = dfa.next_state(Anchored::No, sid, b);
        if dfa.is_special(sid) {
            if dfa.is_dead(sid) {
                break;
            }
            if dfa.is_match(sid) {
                for k in 0..dfa.match_len(sid) {
                    let i = dfa.match_pattern(sid, k).as_usize();
                    if i < 64 && seen & (1 << i) == 0 {
                        seen |= 1 << i;
                        total += weights.get(i).copied().unwrap_or(0.0);
                    }
                }
            }
        }
    }
    total
}

impl DifficultyEstimator for HeuristicDifficulty {
    fn estimate(&self, task: &Task) -> f64 {
        let text = task.description.as_str();
        // The first 2,000 bytes carry every signal; this keeps the estimate O(1) on long
        // descriptions and allocation-free.
        let head = &text.as_bytes()[..text.len().min(2_000)];
        let mut score = base(task.kind);
        // Each signal counts once, however often it appears.
        let words = signal_weight(head);
        score += words.clamp(-0.25, 0.4);
        // Numbers and operators: multi-step arithmetic and formulas.
        let (mut digits, mut ops) = (0usize, 0usize);
        for b in head {
            digits += usize::from(b.is_ascii_digit());
            ops += usize::from(matches!(b, b'=' | b'+' | b'*' | b'^' | b'/'));
        }
        score += (digits as f64 / 40.0).min(0.1) + (ops as f64 / 10.0).min(0.1);
        // Longer descriptions carry more constraints.
        let len = text.len() as f64;
        score += ((len / 400.0).ln_1p() * 0.08).min(0.12);
        score += (task.required_skills.len() as f64 * 0.02).min(0.06);
        score += (f64::from(task.estimated_tokens) / 50_000.0).min(0.08);
        score.clamp(0.0, 1.0)
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
