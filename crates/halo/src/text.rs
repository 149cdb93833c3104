//! The text matcher: hashed word / bigram / prefix / character n-gram features, TF-IDF
//! weights, and a per-agent model that blends a description vector, a BM25 description
//! channel (see [`TextConfig::bm25_weight`]) and the centroid of the agent's example
//! tasks, plus a sparse discriminative correction trained on the examples (averaged
//! perceptron with a margin, leave-one-out against the centroids). All of it is linear
//! in the query's features, so it folds into one weight per (feature, agent).
//! Scoring walks an inverted index (feature → agent postings, open addressing on the
//! 64-bit feature hash), so its cost is `O(query features × postings)`, not
//! `O(agents × vocabulary)`; catalogues of up to 64 agents (and the common features of
//! catalogues up to 1,024) also keep a dense weight row per feature, so a feature costs
//! one vectorised multiply-add over contiguous `f32`s. The text is tokenised once, word
//! at a time, without allocating: the same pass yields the text features and the raw
//! word hashes the rule keywords are matched against; words of the catalogue are looked
//! up in a precomputed vocabulary (stop word, stem, feature and keyword hashes in one
//! probe). Scoring reuses thread-local buffers, so it does not allocate. Small
//! catalogues (up to 64 agents) score in one pass: each new feature's dense row is added
//! as the word is read, vocabulary words carry their features' index slots, and words
//! outside the vocabulary are remembered per thread (see `TextIndex::score_small`).

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::profile::AgentProfile;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const TAG_WORD: u64 = 0x77;
const TAG_PREFIX: u64 = 0x70;
const TAG_CHAR: u64 = 0x63;
/// Mixed into the first content word's hash for its position-tagged copy.
const TAG_FIRST: u64 = 0x5eed_f157;
/// Mixed into the first content word's hash before it is paired with a later word.
const TAG_VERB_PAIR: u64 = 0x000b_1ec7;
const MAX_WORD: usize = 32;

/// Which features the text matcher extracts and how it blends description and examples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextConfig {
    /// Adjacent content-word pairs ("cancel alarm").
    pub bigrams: bool,
    /// Length of the word-prefix feature (`0` = off), for words longer than it:
    /// "cancellation" and "cancelled" share the prefix "canc" at length 4.
    pub prefix_len: u8,
    /// [`TextConfig::prefix_len`] for catalogues of up to 64 agents (the dense-row
    /// ones): 4 was measured better on UltraTool's 260 tools only, and each feature of a
    /// small catalogue costs a full row, so they keep 5.
    pub small_prefix_len: u8,
    /// Smallest character n-gram inside a word (`0` = character n-grams off).
    pub char_min: u8,
    /// Largest character n-gram inside a word.
    pub char_max: u8,
    /// Weight of the description vector (id, description, skills) in an agent's model.
    pub description_weight: f32,
    /// Weight of the example centroid in an agent's model.
    pub example_weight: f32,
    /// Multiplier of the description weight for agents with no examples, so tools that
    /// were never seen in training still compete with well-trained ones.
    pub unseen_boost: f32,
    /// Passes of the discriminative correction (an averaged perceptron with a margin,
    /// trained on the examples on top of the centroid model); `0` = centroids only.
    /// Catalogues of more than 2,000 agents are not trained, and training makes at most
    /// 100,000 example passes in all.
    pub epochs: u8,
    /// Step size of the correction.
    pub learning_rate: f32,
    /// Score margin the correction enforces between the right agent and the best wrong one.
    pub margin: f32,
    /// Whether the correction may push down agents that have no examples.
    pub penalize_unseen: bool,
    /// Whether each agent's description also serves as a training example of the
    /// correction (helps agents with few or no examples).
    pub train_descriptions: bool,
    /// Whether number-like words ("8:00", "2023", "CA1234"; not "s3" or "gpt4") all map
    /// to one feature.
    pub fold_numbers: bool,
    /// Correction weights smaller than this (in absolute value) are dropped, keeping the
    /// index sparse and scoring fast.
    pub prune_below: f32,
    /// How the discriminative correction is trained.
    pub learner: Learner,
    /// Perceptron: wrong agents within the margin pushed down per mistake (the best
    /// ones, sharing one step; 1..=8).
    pub rivals: u8,
    /// Softmax learner: scores are multiplied by this before the softmax (the inverse
    /// temperature; similarities live in `[0, 1]`, so it sets how peaked the model is).
    pub softmax_scale: f32,
    /// Softmax learner: L2 penalty on the correction weights (applied lazily, when a
    /// weight is updated).
    pub l2: f32,
    /// Weight of the BM25 description channel for agents with examples (`0` = off).
    pub bm25_weight: f32,
    /// Weight of the BM25 description channel for agents without examples: their
    /// description is all they have, so it matters more.
    pub bm25_unseen_weight: f32,
    /// BM25 term-frequency saturation.
    pub bm25_k1: f32,
    /// BM25 length normalisation, in `[0, 1]`.
    pub bm25_b: f32,
    /// Verb/object features (`0` = off): the first content word (in a plan step, usually
    /// the verb: "cancel", "change", "write") as a position-tagged feature, and paired
    /// with each of the next `verb_pairs - 1` content words ("change … alarm", "write …
    /// file"), which bigrams miss when adjectives or numbers sit in between. Tasks and
    /// examples get them; an agent's description vector gets those of its description
    /// field (not of the id that heads the description text), and the BM25 channel
    /// none. Catalogues of up to 64 agents (the dense-row ones) skip them: they were
    /// measured on UltraTool's 260 tools only, and each feature of a small catalogue
    /// costs a full row. Only the first 16 content words of a text take part.
    pub verb_pairs: u8,
}

/// The algorithm that trains the discriminative correction on the agents' examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Learner {
    /// Averaged multi-class perceptron with a margin: updates only on mistakes.
    #[default]
    Perceptron,
    /// Multinomial logistic regression (softmax over agents) on top of the centroid
    /// scores, trained by AdaGrad with L2 on the gold agent and every agent with a
    /// non-negligible probability; deterministic (fixed shuffling seed). Evaluated on
    /// UltraTool (docs/EVALUATION.md) below the perceptron; kept for experiments.
    Softmax,
}

impl Default for TextConfig {
    fn default() -> Self {
        TextConfig {
            bigrams: true,
            prefix_len: 4,
            small_prefix_len: 5,
            char_min: 0,
            char_max: 0,
            description_weight: 0.35,
            example_weight: 0.65,
            unseen_boost: 2.0,
            epochs: 10,
            learning_rate: 0.05,
            margin: 0.15,
            penalize_unseen: false,
            train_descriptions: false,
            fold_numbers: true,
            prune_below: 0.01,
            learner: Learner::Perceptron,
            rivals: 1,
            softmax_scale: 20.0,
            l2: 1e-4,
            bm25_weight: 0.5,
            bm25_unseen_weight: 1.3,
            bm25_k1: 1.2,
            bm25_b: 0.75,
            verb_pairs: 7,
        }
    }
}

#[inline]
fn fnv_byte(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
}

/// Hashes a short byte string 8 bytes at a time (an FNV-style xor-multiply over little-
/// endian words, then a splitmix finaliser): one multiply per 8 bytes instead of per byte.
#[inline]
pub(crate) fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = (FNV_OFFSET ^ seed).wrapping_mul(FNV_PRIME) ^ (bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(buf)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        h = (h ^ load_le(rest)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fmix(h)
}

/// The first up to 8 bytes of `b` as a little-endian word, zero-padded: the value of
/// copying them into a zeroed `[u8; 8]`, without a variable-length copy (which compiles
/// to a `memcpy` call). Two overlapping fixed-size loads cover every length.
#[inline]
pub(crate) fn load_le(b: &[u8]) -> u64 {
    let n = b.len();
    if n >= 8 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        u64::from_le_bytes(a)
    } else if n >= 4 {
        let (mut lo, mut hi) = ([0u8; 4], [0u8; 4]);
        lo.copy_from_slice(&b[..4]);
        hi.copy_from_slice(&b[n - 4..n]);
        u64::from(u32::from_le_bytes(lo)) | (u64::from(u32::from_le_bytes(hi)) << ((n - 4) * 8))
    } else if n > 0 {
        u64::from(b[0])
            | (u64::from(b[n / 2]) << ((n / 2) * 8))
            | (u64::from(b[n - 1]) << ((n - 1) * 8))
    } else {
        0
    }
}

/// The high bit of every byte.
const HIGH8: u64 = 0x8080_8080_8080_8080;

/// The 8 bytes of `b` from `at` as a little-endian word, zero-padded past the end (a
/// zero byte is a separator).
#[inline]
fn load8_at(b: &[u8], at: usize) -> u64 {
    match b.get(at..at + 8) {
        Some(c) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        }
        None => load_le(b.get(at..).unwrap_or_default()),
    }
}

/// A mask of the low `k` bytes of a word (`k` < 8).
#[inline]
fn low_bytes(k: usize) -> u64 {
    (1u64 << (k * 8)) - 1
}

/// The high bit of each word byte among the 8 bytes of `x`: an ASCII letter or digit,
/// or a non-ASCII byte (exactly the bytes [`LOWER`] does not map to 0).
#[inline]
pub(crate) fn word_bytes8(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let low7 = x & !HIGH8;
    // Folding bit 5 in maps exactly the ASCII letters onto 'a'..='z'.
    let folded = low7 | (ONES * 0x20);
    let digit =
        (low7 + ONES * u64::from(0x80 - b'0')) & !(low7 + ONES * u64::from(0x80 - b'9' - 1));
    let letter =
        (folded + ONES * u64::from(0x80 - b'a')) & !(folded + ONES * u64::from(0x80 - b'z' - 1));
    (x | digit | letter) & HIGH8
}

/// The high bit of each ASCII lower-case letter among the 8 bytes of `w`.
#[inline]
pub(crate) fn lower_letters8(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = w & !HIGH;
    let ge_a = low7 + ONES * u64::from(0x80 - b'a');
    let gt_z = low7 + ONES * u64::from(0x80 - b'z' - 1);
    ge_a & !gt_z & !w & HIGH
}

/// The camelCase boundaries among the 8 bytes of `w` (`l` is `lower8(w)`): the high bit
/// of each upper-case letter that follows a lower-case one; `before` says whether the
/// byte before `w` is a lower-case letter.
#[inline]
pub(crate) fn camel8(w: u64, l: u64, before: bool) -> u64 {
    // lower8 sets bit 5 of exactly the upper-case letters.
    let upper = (l ^ w) << 2;
    upper & ((lower_letters8(w) << 8) | (u64::from(before) << 7))
}

/// ASCII-lower-cases the 8 bytes of a word at once (bytes >= 0x80 are left alone).
#[inline]
pub(crate) fn lower8(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = x & !HIGH;
    // High bit set in bytes whose low 7 bits are >= 'A', and in those > 'Z'.
    let ge_a = low7 + ONES * u64::from(0x80 - b'A');
    let gt_z = low7 + ONES * u64::from(0x80 - b'Z' - 1);
    let upper = ge_a & !gt_z & !x & HIGH;
    x | (upper >> 2)
}

#[inline]
fn fmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Combines two feature hashes into a bigram hash. Both are already well-mixed 64-bit
/// hashes, so a rotate, a multiply and an xor keep every bit random; the rotation of
/// only one side keeps (a, b) != (b, a).
#[inline]
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    a.rotate_left(17) ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn is_stopword(w: &[u8]) -> bool {
    matches!(
        w,
        b"a" | b"an"
            | b"the"
            | b"to"
            | b"of"
            | b"for"
            | b"and"
            | b"or"
            | b"in"
            | b"on"
            | b"at"
            | b"by"
            | b"with"
            | b"from"
            | b"is"
            | b"are"
            | b"be"
            | b"this"
            | b"that"
            | b"it"
            | b"as"
            | b"my"
            | b"me"
            | b"i"
            | b"we"
            | b"our"
            | b"you"
            | b"your"
            | b"please"
            | b"into"
            | b"its"
            | b"will"
            | b"can"
            | b"should"
            | b"then"
            | b"some"
            | b"any"
            | b"all"
    )
}

/// Light suffix stripping so "alarms", "alarm" and "alarming" meet. Returns the new length.
/// (Stripping a final "e" as well, or "-ation", measured worse on UltraTool: the
/// 4-letter prefix feature already joins those forms.)
fn stem(w: &mut [u8], len: usize) -> usize {
    let s = &w[..len];
    if len > 4 && s.ends_with(b"ies") {
        w[len - 3] = b'y';
        return len - 2;
    }
    if len > 5 && s.ends_with(b"ing") {
        return len - 3;
    }
    if len > 4 && s.ends_with(b"ed") {
        return len - 2;
    }
    if len > 3 && s.ends_with(b"s") && !s.ends_with(b"ss") && !s.ends_with(b"us") {
        return len - 1;
    }
    len
}

/// Byte classes for the tokeniser: 0 separator, 1 lower-case letter, digit or non-ASCII
/// byte, 2 upper-case ASCII letter.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b.is_ascii_uppercase() {
            2
        } else if b.is_ascii_alphanumeric() || b >= 0x80 {
            1
        } else {
            0
        };
        i += 1;
    }
    t
};

/// Word bytes lower-cased (ASCII letters; digits and non-ASCII bytes as they are);
/// separators map to 0.
const LOWER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b.is_ascii_alphanumeric() || b >= 0x80 {
            b.to_ascii_lowercase()
        } else {
            0
        };
        i += 1;
    }
    t
};

/// Longest raw word (the unit of rule keywords) hashed in full; longer ones are
/// truncated and flagged. Equal to [`MAX_WORD`]: both are read from one buffer.
const MAX_RAW: usize = MAX_WORD;

/// The hash of a raw word (lower-cased letter/digit run, no stemming): the unit rule
/// keywords are matched in.
pub(crate) fn raw_word_hash(w: &[u8], truncated: bool) -> u64 {
    hash_bytes(0x6b + u64::from(truncated), w)
}

/// Lower-cases a word of the text (a run of ASCII letters and digits and whole
/// non-ASCII characters) into `out`: ASCII bytes by table, other characters by
/// Unicode's lower-case mapping, so "ÜBERWEISUNG" and "Überweisung" read as
/// "überweisung" and "ΟΔΟΣ" and "οδος" as "οδοσ" (a lower-case mapping with final
/// sigma folded, not full case folding: "STRASSE" stays "strasse", not "straße"). Keeps the first [`MAX_WORD`] bytes, as the ASCII paths do;
/// returns how many were kept and the lower-cased word's full length.
pub(crate) fn lower_word(word: &[u8], out: &mut [u8; MAX_WORD + 1]) -> (usize, usize) {
    let mut len = 0usize;
    let mut put = |b: u8| {
        if let Some(d) = out.get_mut(len.min(MAX_WORD)) {
            *d = b;
        }
        len += 1;
    };
    match std::str::from_utf8(word) {
        Ok(w) => {
            for c in w.chars() {
                if c.is_ascii() {
                    put(c.to_ascii_lowercase() as u8);
                } else {
                    let mut utf8 = [0u8; 4];
                    for l in c.to_lowercase() {
                        // Final sigma folds to sigma: "ΟΔΟΣ" and "οδος" read alike.
                        let l = if l == 'ς' { 'σ' } else { l };
                        l.encode_utf8(&mut utf8).bytes().for_each(&mut put);
                    }
                }
            }
        }
        // Words are cut at ASCII separators, so they are whole UTF-8; should one not
        // be, its bytes are kept as they are (ASCII lower-cased).
        Err(_) => word.iter().for_each(|&b| put(LOWER[usize::from(b)])),
    }
    (len.min(MAX_WORD), len)
}

/// The raw word hash ([`raw_word_hash`]) of a word as written in a text or a rule
/// keyword: lower-cased ([`lower_word`]), its first [`MAX_RAW`] bytes hashed and a
/// longer word flagged.
pub(crate) fn raw_hash_of(word: &[u8]) -> u64 {
    let mut buf = [0u8; MAX_WORD + 1];
    let (len, full) = lower_word(word, &mut buf);
    raw_word_hash(&buf[..len], full > MAX_RAW)
}

/// Calls `f` with the raw word hash ([`raw_hash_of`]) of every word of `text`, in
/// order: what rule keywords are matched against.
pub(crate) fn for_each_raw_word(text: &str, mut f: impl FnMut(u64)) {
    for w in text.as_bytes().split(|&b| CLASS[usize::from(b)] == 0) {
        if !w.is_empty() {
            f(raw_hash_of(w));
        }
    }
}

/// Calls `f` with every normalised content word of `text` (lower-cased, stemmed, no
/// stop words). Underscores, hyphens and camelCase split words, so tool ids like
/// `clock_alarm_cancel` read as words. Allocation-free.
#[cfg(test)]
pub(crate) fn for_each_word(text: &str, mut f: impl FnMut(&[u8])) {
    scan_words(text, false, |_| {}, |w, _, _| f(w));
}

/// One pass over `text`: content words go to `word(bytes, start, end)` (see
/// [`for_each_word`]); when `want_raw`, the hash of every raw word (a maximal run of
/// letters, digits and non-ASCII bytes, lower-cased, not split at camelCase and not
/// stemmed: the unit of rule keywords) goes to `raw`. Allocation-free.
#[cfg(test)]
pub(crate) fn scan_words(
    text: &str,
    want_raw: bool,
    raw: impl FnMut(u64),
    mut word: impl FnMut(&[u8], usize, usize),
) {
    scan_tokens(text, want_raw, None, raw, |t, start, end| {
        if let Token::Bytes(w) = t {
            word(w, start, end);
        }
    });
}

/// A content word handed on by [`scan_tokens`].
pub(crate) enum Token<'a> {
    /// A word that was not in the vocabulary: its normalised bytes.
    Bytes(&'a [u8]),
    /// A vocabulary word: its features, computed when the index was built.
    Known(&'a VocabEntry),
}

/// [`scan_words`] with an optional vocabulary: words found in it skip stop-word
/// filtering, stemming and hashing (their results were computed when the index was
/// built, by the same functions) and arrive as [`Token::Known`].
#[inline]
fn scan_tokens(
    text: &str,
    want_raw: bool,
    vocab: Option<&Vocab>,
    mut raw: impl FnMut(u64),
    mut word: impl FnMut(Token<'_>, usize, usize),
) {
    let bytes = text.as_bytes();
    let n = bytes.len();
    // One spare byte: bytes past MAX_WORD all land on it, so the copy needs no branch.
    let mut buf = [0u8; MAX_WORD + 1];
    let mut i = 0usize;
    while i < n {
        // Word at a time: skip separators, then take the run of word bytes, lower-cased
        // into `buf` (the first MAX_WORD bytes), noting whether camelCase may split it.
        while i < n && LOWER[usize::from(bytes[i])] == 0 {
            i += 1;
        }
        if i == n {
            break;
        }
        let start = i;
        buf[0] = LOWER[usize::from(bytes[i])];
        let mut len = 1usize;
        // Upper-case letters after the first byte (only then can camelCase split): a
        // byte differs from its lower-cased form only if it is an upper-case letter.
        let mut inner = 0u8;
        let mut high = buf[0];
        i += 1;
        while i < n {
            let b = bytes[i];
            let l = LOWER[usize::from(b)];
            if l == 0 {
                break;
            }
            inner |= b ^ l;
            high |= l;
            buf[len.min(MAX_WORD)] = l;
            len += 1;
            i += 1;
        }
        let mut full = len;
        let mut len = len.min(MAX_WORD);
        let word_bytes = &bytes[start..i];
        let camel = inner != 0
            && word_bytes
                .windows(2)
                .any(|p| p[0].is_ascii_lowercase() && p[1].is_ascii_uppercase());
        // Non-ASCII words are lower-cased by Unicode's rules, and are never in the
        // vocabulary (it holds ASCII words only).
        let ascii = high < 0x80;
        if !ascii {
            (len, full) = lower_word(word_bytes, &mut buf);
        }
        if !camel
            && ascii
            && let Some(e) = vocab.and_then(|v| v.get_buf(&buf, len))
        {
            if want_raw {
                raw(e.raw);
            }
            if !e.stop {
                word(Token::Known(e), start, i);
            }
            continue;
        }
        if want_raw {
            raw(raw_word_hash(&buf[..len], full > MAX_RAW));
        }
        if !camel {
            emit_word(&mut buf, len, start, i, &mut |w: &[u8], a, b| {
                word(Token::Bytes(w), a, b)
            });
            continue;
        }
        emit_camel_parts(&bytes[start..i], start, &mut |w: &[u8], a, b| {
            word(Token::Bytes(w), a, b)
        });
    }
}

/// camelCase: the parts of `word` (at byte `start` of its text), split before an
/// upper-case letter that follows a lower-case one, each lower-cased and handed to
/// [`emit_word`]. Rare, so this re-reads the word byte by byte.
fn emit_camel_parts(word: &[u8], start: usize, emit: &mut impl FnMut(&[u8], usize, usize)) {
    let mut part = [0u8; MAX_WORD + 1];
    let mut from = 0usize;
    let mut emit_part = |a: usize, b: usize| {
        let (len, _) = lower_word(&word[a..b], &mut part);
        emit_word(&mut part, len, start + a, start + b, emit);
    };
    for j in 1..word.len() {
        if word[j].is_ascii_uppercase() && word[j - 1].is_ascii_lowercase() {
            emit_part(from, j);
            from = j;
        }
    }
    if from < word.len() {
        emit_part(from, word.len());
    }
}

/// Drops stop words, stems the rest and hands them on.
#[inline]
fn emit_word(
    buf: &mut [u8],
    len: usize,
    start: usize,
    end: usize,
    word: &mut impl FnMut(&[u8], usize, usize),
) {
    if len <= 6 && is_stopword(&buf[..len]) {
        return;
    }
    let n = stem(buf, len);
    word(&buf[..n], start, end);
}

/// Numbers, times and codes ("8", "00", "2023", "3pm", "ca1234"), but not names with a
/// digit in them ("s3", "ec2", "k8s", "gpt4").
fn is_number_like(w: &[u8]) -> bool {
    let digits = w.iter().filter(|b| b.is_ascii_digit()).count();
    w.first().is_some_and(u8::is_ascii_digit) || digits * 2 > w.len()
}

/// The hash of a word's unigram feature (used to explain matches).
pub(crate) fn word_hash(word: &[u8]) -> u64 {
    hash_bytes(TAG_WORD, word)
}

/// Appends the hashed features of `text` to `out` (duplicates included).
pub(crate) fn features(text: &str, cfg: &TextConfig, out: &mut Vec<u64>) {
    let mut words = QueryWords::default();
    features_with_words(text, cfg, None, out, &mut words, false, |_| {});
    if cfg.verb_pairs > 0 {
        push_verb_pairs(&words, cfg.verb_pairs, out, |_| true);
    }
}

/// The first unigram spans of a query, kept to explain matches without re-tokenising.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QueryWords {
    spans: [(u64, u32, u32); MAX_SPANS],
    len: usize,
}

const MAX_SPANS: usize = 16;

impl QueryWords {
    /// True when the query kept no word (empty, blank, only symbols, emoji or stop words).
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The unigram hash and the prefix hash (`0` = none) of one normalised content word.
#[inline]
fn word_features(w: &[u8], cfg: &TextConfig) -> (u64, u64) {
    let w: &[u8] = if cfg.fold_numbers && is_number_like(w) {
        b"0"
    } else {
        w
    };
    let prefix = usize::from(cfg.prefix_len);
    let p = if prefix > 0 && w.len() > prefix {
        hash_bytes(TAG_PREFIX, &w[..prefix])
    } else {
        0
    };
    (word_hash(w), p)
}

/// The features of `text` (see [`features`]) plus its unigram spans; with `want_raw`,
/// also the raw word hashes for rule keywords, in the same pass. With a vocabulary,
/// known words take their precomputed features.
fn features_with_words(
    text: &str,
    cfg: &TextConfig,
    vocab: Option<&Vocab>,
    out: &mut Vec<u64>,
    words: &mut QueryWords,
    want_raw: bool,
    raw: impl FnMut(u64),
) {
    let mut prev: Option<u64> = None;
    let (cmin, cmax) = (usize::from(cfg.char_min), usize::from(cfg.char_max));
    scan_tokens(text, want_raw, vocab, raw, |t, start, end| {
        let (h, p, bytes) = match t {
            Token::Known(e) => (e.word, e.prefix, None),
            Token::Bytes(w) => {
                let (h, p) = word_features(w, cfg);
                (h, p, Some(w))
            }
        };
        out.push(h);
        if words.len < MAX_SPANS {
            words.spans[words.len] = (h, start as u32, end as u32);
            words.len += 1;
        }
        if cfg.bigrams {
            if let Some(p) = prev {
                out.push(mix(p, h));
            }
            prev = Some(h);
        }
        if p != 0 {
            out.push(p);
        }
        if let Some(w) = bytes
            && cmin > 0
            && cmax >= cmin
        {
            let w: &[u8] = if cfg.fold_numbers && is_number_like(w) {
                b"0"
            } else {
                w
            };
            // n-grams over "^word$", markers included.
            let n_all = w.len() + 2;
            let at = |i: usize| -> u8 {
                if i == 0 {
                    b'^'
                } else if i == n_all - 1 {
                    b'$'
                } else {
                    w[i - 1]
                }
            };
            for n in cmin..=cmax {
                if n > n_all {
                    break;
                }
                for start in 0..=(n_all - n) {
                    let mut h = fnv_byte(FNV_OFFSET, TAG_CHAR as u8 ^ n as u8);
                    for i in start..start + n {
                        h = fnv_byte(h, at(i));
                    }
                    out.push(h);
                }
            }
        }
    });
}

/// Appends the verb-pair features (see [`TextConfig::verb_pairs`]) of a text whose
/// unigram spans are `words` (read off the spans after the scan, so the per-word loop
/// does not grow), those for which `keep` holds. Out of line: small catalogues never
/// call it.
#[inline(never)]
fn push_verb_pairs(
    words: &QueryWords,
    verb_pairs: u8,
    out: &mut Vec<u64>,
    keep: impl Fn(u64) -> bool,
) {
    let spans = words.spans.get(..words.len).unwrap_or_default();
    let Some(&(first, _, _)) = spans.first() else {
        return;
    };
    let tagged = mix(first, TAG_FIRST);
    if keep(tagged) {
        out.push(tagged);
    }
    let first = first ^ TAG_VERB_PAIR;
    for &(h, _, _) in spans.iter().take(usize::from(verb_pairs)).skip(1) {
        let pair = mix(first, h);
        if keep(pair) {
            out.push(pair);
        }
    }
}

/// Longest raw word kept in the [`Vocab`], in bytes.
const VOCAB_MAX: usize = 16;

/// What the tokeniser needs to know about one raw word, precomputed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct VocabEntry {
    /// The raw word's bytes, zero-padded (first 8, next 8).
    lo: u64,
    hi: u64,
    /// Its length; `0` marks an empty slot.
    len: u8,
    /// A stop word: no features.
    stop: bool,
    /// [`raw_word_hash`] of the word (rule keywords).
    raw: u64,
    /// Unigram feature hash.
    word: u64,
    /// Prefix feature hash, `0` = none.
    prefix: u64,
    /// Index in [`TextIndex::slots`] of the unigram feature ([`NOT_INDEXED`] when the
    /// index does not hold it), resolved once the index is assembled.
    word_slot: u32,
    /// Index in [`TextIndex::slots`] of the prefix feature ([`NOT_INDEXED`] when there is
    /// none or the index does not hold it).
    prefix_slot: u32,
}

/// A vocabulary feature the index does not hold (an unknown feature).
const NOT_INDEXED: u32 = u32::MAX;

/// A feature whose slot has not been resolved: look its hash up.
const LOOK_UP: u32 = u32::MAX - 1;

/// Raw words of the catalogue (lower-case, not camelCase, at most [`VOCAB_MAX`] bytes)
/// with their precomputed features: open addressing on the word's bytes. A query word
/// found here costs one probe instead of stop-word filtering, stemming and three
/// hashes. Built only when character n-grams are off (they need the word's bytes).
#[derive(Debug, Clone, Default)]
pub(crate) struct Vocab {
    slots: Vec<VocabEntry>,
    shift: u32,
    len: usize,
}

impl Vocab {
    #[inline]
    fn key(w: &[u8]) -> Option<(u64, u64)> {
        if w.is_empty() || w.len() > VOCAB_MAX {
            return None;
        }
        let lo = load_le(w);
        let hi = if w.len() > 8 { load_le(&w[8..]) } else { 0 };
        Some((lo, hi))
    }

    #[inline]
    fn home(&self, lo: u64, hi: u64, len: usize) -> usize {
        let h = (lo ^ hi.rotate_left(29) ^ len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> self.shift) as usize
    }

    /// The entry of the raw (lower-cased) word `buf[..len]`: two fixed 8-byte loads,
    /// masked to the length.
    #[inline]
    fn get_buf(&self, buf: &[u8; MAX_WORD + 1], len: usize) -> Option<&VocabEntry> {
        if len > VOCAB_MAX || self.slots.is_empty() {
            return None;
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(&buf[..8]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[8..16]);
        let keep = |n: usize| {
            if n >= 8 {
                u64::MAX
            } else {
                (1u64 << (n * 8)) - 1
            }
        };
        let lo = u64::from_le_bytes(a) & keep(len);
        let hi = u64::from_le_bytes(b) & keep(len.saturating_sub(8));
        let mask = self.slots.len() - 1;
        let mut i = self.home(lo, hi, len);
        loop {
            let e = &self.slots[i];
            if e.len == 0 {
                return None;
            }
            if e.lo == lo && e.hi == hi && usize::from(e.len) == len {
                return Some(e);
            }
            i = (i + 1) & mask;
        }
    }

    /// The entry of the raw word of `len` bytes (1..=[`VOCAB_MAX`]) whose lower-cased,
    /// zero-padded bytes are `lo` (first 8) and `hi` (next 8).
    #[inline]
    fn get_key(&self, lo: u64, hi: u64, len: usize) -> Option<&VocabEntry> {
        if self.len == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(lo, hi, len);
        loop {
            let e = self.slots.get(i)?;
            if e.len == 0 {
                return None;
            }
            if e.lo == lo && e.hi == hi && usize::from(e.len) == len {
                return Some(e);
            }
            i = (i + 1) & mask;
        }
    }

    /// The entry of a raw (lower-cased) word.
    #[cfg(test)]
    fn get(&self, w: &[u8]) -> Option<&VocabEntry> {
        if self.slots.is_empty() {
            return None;
        }
        let (lo, hi) = Self::key(w)?;
        let mask = self.slots.len() - 1;
        let mut i = self.home(lo, hi, w.len());
        loop {
            let e = &self.slots[i];
            if e.len == 0 {
                return None;
            }
            if e.lo == lo && e.hi == hi && usize::from(e.len) == w.len() {
                return Some(e);
            }
            i = (i + 1) & mask;
        }
    }

    /// The vocabulary of `texts` under `cfg`.
    fn build<'a>(texts: impl Iterator<Item = &'a str>, cfg: &TextConfig) -> Vocab {
        let mut raw_words: Vec<(u64, u64, u8)> = Vec::new();
        for t in texts {
            // Raw words are the letter/digit runs of the text, lower-cased.
            for w in t.as_bytes().split(|&b| CLASS[usize::from(b)] == 0) {
                if w.is_empty() || w.len() > VOCAB_MAX {
                    continue;
                }
                // Non-ASCII words are lower-cased by Unicode's rules and camelCase
                // words split differently: both take the slow path.
                if !w.is_ascii() {
                    continue;
                }
                if w.windows(2)
                    .any(|p| p[0].is_ascii_lowercase() && p[1].is_ascii_uppercase())
                {
                    continue;
                }
                let mut buf = [0u8; VOCAB_MAX];
                for (d, &b) in buf.iter_mut().zip(w) {
                    *d = b | ((CLASS[usize::from(b)] & 2) << 4);
                }
                if let Some((lo, hi)) = Self::key(&buf[..w.len()]) {
                    raw_words.push((lo, hi, w.len() as u8));
                }
            }
        }
        raw_words.sort_unstable();
        raw_words.dedup();
        let cap = (raw_words.len() * 2).next_power_of_two().max(16);
        let mut v = Vocab {
            slots: vec![VocabEntry::default(); cap],
            shift: 64 - cap.trailing_zeros(),
            len: raw_words.len(),
        };
        let mask = cap - 1;
        for (lo, hi, len) in raw_words {
            let mut bytes = [0u8; MAX_WORD];
            bytes[..8].copy_from_slice(&lo.to_le_bytes());
            bytes[8..16].copy_from_slice(&hi.to_le_bytes());
            let n = usize::from(len);
            let raw = raw_word_hash(&bytes[..n], false);
            let mut e = VocabEntry {
                lo,
                hi,
                len,
                stop: true,
                raw,
                word: 0,
                prefix: 0,
                word_slot: LOOK_UP,
                prefix_slot: LOOK_UP,
            };
            emit_word(&mut bytes, n, 0, n, &mut |w: &[u8], _, _| {
                let (h, p) = word_features(w, cfg);
                e.stop = false;
                e.word = h;
                e.prefix = p;
            });
            let mut i = v.home(lo, hi, n);
            while v.slots[i].len != 0 {
                i = (i + 1) & mask;
            }
            v.slots[i] = e;
        }
        v
    }
}

/// Passes over `examples` examples: the configured epochs, capped so that training
/// sees at most [`MAX_TRAINING_PASSES`] examples in total (at least one pass).
fn training_epochs(cfg: &TextConfig, examples: usize) -> usize {
    usize::from(cfg.epochs).min((MAX_TRAINING_PASSES / examples.max(1)).max(1))
}

/// Fisher-Yates shuffle driven by the seeded `splitmix` stream (reproducible training).
fn shuffle(order: &mut [usize], rng: &mut u64) {
    for i in (1..order.len()).rev() {
        let j = (splitmix(rng) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
}

/// Sorts `hashes` and counts each distinct value: the document frequencies of features.
fn run_counts(hashes: &mut [u64]) -> Vec<(u64, u32)> {
    hashes.sort_unstable();
    let mut counts: Vec<(u64, u32)> = Vec::new();
    for &h in hashes.iter() {
        match counts.last_mut() {
            Some((k, c)) if *k == h => *c += 1,
            _ => counts.push((h, 1)),
        }
    }
    counts
}

/// BM25 weights of each agent's description features: `idf · tf·(k1+1) /
/// (tf + k1·(1 − b + b·len/avg_len))` with the idf over descriptions only, divided by
/// `k1 + 1` and by [`BM25_SCALE`] so a one-word match of a rare word weighs about as
/// much as a good cosine. Saturation (`k1`) keeps repeated words from dominating;
/// length normalisation (`b`) keeps long descriptions from being drowned, as cosine
/// normalisation does.
fn bm25_weights(desc_tf: &[Vec<(u64, u32)>], cfg: &TextConfig) -> Vec<Vec<(u64, f32)>> {
    let n = desc_tf.len();
    if n == 0 || (cfg.bm25_weight <= 0.0 && cfg.bm25_unseen_weight <= 0.0) {
        return vec![Vec::new(); n];
    }
    let mut all: Vec<u64> = desc_tf.iter().flatten().map(|e| e.0).collect();
    let df = run_counts(&mut all);
    let lens: Vec<f32> = desc_tf
        .iter()
        .map(|d| d.iter().map(|e| e.1 as f32).sum())
        .collect();
    let avg = (lens.iter().sum::<f32>() / n as f32).max(1.0);
    let (k1, b) = (cfg.bm25_k1.max(0.0), cfg.bm25_b.clamp(0.0, 1.0));
    let nf = n as f32;
    desc_tf
        .iter()
        .zip(&lens)
        .map(|(d, &len)| {
            let norm = k1 * (1.0 - b + b * len / avg);
            d.iter()
                .map(|&(h, tf)| {
                    let dfh = df
                        .binary_search_by_key(&h, |e| e.0)
                        .map_or(1.0, |i| df[i].1 as f32);
                    let idf = (1.0 + (nf - dfh + 0.5) / (dfh + 0.5)).ln();
                    let tf = tf as f32;
                    let w = idf * tf * (k1 + 1.0) / (tf + norm) / (k1 + 1.0) / BM25_SCALE;
                    (h, w)
                })
                .collect()
        })
        .collect()
}

/// Divides BM25 weights (idf up to ≈ ln n) down to the scale of cosine similarities.
const BM25_SCALE: f32 = 4.0;

/// Removes duplicates without sorting when the list is short (a 64-bit Bloom filter
/// makes the common no-duplicate case linear).
fn unique_small(v: &mut Vec<u64>) {
    if v.len() > 96 {
        sorted_unique(v);
        return;
    }
    let mut bloom = 0u64;
    let mut kept = 0usize;
    for i in 0..v.len() {
        let h = v[i];
        let bit = 1u64 << (h >> 58);
        if bloom & bit != 0 && v[..kept].contains(&h) {
            continue;
        }
        bloom |= bit;
        v[kept] = h;
        kept += 1;
    }
    v.truncate(kept);
}

fn sorted_unique(v: &mut Vec<u64>) {
    v.sort_unstable();
    v.dedup();
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u64,
    /// First posting of the feature.
    start: u32,
    /// Number of postings.
    len: u32,
    /// Start of the feature's dense row in `rows` (small catalogues only).
    row: u32,
    idf: f32,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Posting {
    pub(crate) agent: u32,
    pub(crate) weight: f32,
}

/// The inverted index over all agents' feature vectors.
#[derive(Debug, Clone)]
pub(crate) struct TextIndex {
    cfg: TextConfig,
    slots: Vec<Slot>,
    mask: usize,
    postings: Vec<Posting>,
    /// Small catalogues (up to [`DENSE_ROWS`] agents): one row of `n_agents` weights per
    /// feature, so scoring a feature is one contiguous multiply-add over all agents.
    /// Rows are [`TextIndex::stride`] long (zero-padded).
    rows: Vec<f32>,
    /// Length of a dense row: `n_agents` rounded up to a multiple of [`LANES`], so a row
    /// is added in whole 8-lane chunks (the padding weighs 0, its sums stay 0).
    stride: usize,
    unknown_idf: f32,
    n_agents: usize,
    /// Whether queries go through the one-pass small-catalogue scorer
    /// ([`TextIndex::score_small`]) first: at most [`DENSE_ROWS`] agents and no
    /// character n-grams.
    small: bool,
    /// One bit per feature of the index, by the top bits of its hash (at least four
    /// bits per slot): most features the index does not hold are rejected without
    /// probing `slots`.
    present: Vec<u64>,
    /// `64 − log2(bits of present)`.
    present_shift: u32,
    /// Distinguishes this index from every other one in the thread-local memo of words
    /// outside the vocabulary ([`Scratch::memo`]).
    id: u64,
    has_examples: Vec<bool>,
    /// Precomputed features of the catalogue's words (see [`Vocab`]).
    vocab: Vocab,
    /// The trained correction, `(feature, agent, weight)`, kept so a rebuild after new
    /// examples can reuse it instead of retraining.
    correction: std::sync::Arc<Vec<(u64, u32, f32)>>,
}

/// Most distinct features a query may have for the small-catalogue scorer (about 20
/// content words); longer queries go through the general path.
const SMALL_FEATURES: usize = 64;

/// The running state of one query in [`TextIndex::score_small`].
struct SmallQuery<'a> {
    /// Per-agent sums.
    acc: &'a mut [f32],
    /// The distinct features added so far (`seen[..count]`).
    seen: &'a mut [u64; SMALL_FEATURES],
    count: usize,
    /// One bit per feature added (by its top 8 bits, 256 bits): most new features
    /// skip the scan of `seen` (with 64 bits, a 40-feature query scanned it for most).
    bloom: [u64; 4],
    /// Set when a feature did not fit in `seen`: the result is void.
    overflow: bool,
    /// Sum of the squared idfs of the features added.
    norm: f32,
    /// The previous content word's unigram hash (bigrams).
    prev: Option<u64>,
    /// Unigram spans, to explain matches.
    words: &'a mut QueryWords,
}

/// Most example passes one training run makes (epochs are cut for huge catalogues so
/// start-up stays linear in the catalogue size).
const MAX_TRAINING_PASSES: usize = 100_000;

/// Catalogues larger than this use the centroid model only: the correction's cost grows
/// with agents × shared features, and start-up must stay near-linear.
const MAX_TRAINED_AGENTS: usize = 2_000;

/// Catalogues up to this size are scored with a dense accumulator.
const DENSE_LIMIT: usize = 1024;

/// Catalogues up to this size also store a dense weight row per feature; larger ones
/// (up to [`DENSE_LIMIT`]) only for features with long postings lists (at least 16 and
/// a sixteenth of the agents), where a vectorised row beats walking the postings.
const DENSE_ROWS: usize = 64;

/// Most dense row weights an index holds (16 MB); features past it keep postings only.
const MAX_ROW_WEIGHTS: usize = 4 << 20;

/// `Slot::row` of a feature without a dense row.
const NO_ROW: u32 = u32::MAX;

/// Dense rows and the accumulator they are added to are padded to a multiple of this
/// many weights (two SSE registers; one AVX register).
const LANES: usize = 8;

/// `acc[i] += w * row[i]` for two slices of the same length, in whole [`LANES`]-wide
/// chunks (then any rest one by one): each sum gets the same product as the
/// element-wise loop, so results are bit-identical to it, without the vectoriser's alias
/// and tail checks.
#[inline(always)]
fn add_row(acc: &mut [f32], row: &[f32], w: f32) {
    debug_assert_eq!(acc.len(), row.len());
    let (acc8, acc_rest) = acc.as_chunks_mut::<LANES>();
    let (row8, row_rest) = row.as_chunks::<LANES>();
    for (x, r) in acc8.iter_mut().zip(row8) {
        // Whole-chunk loads before the stores: straight vector code.
        let (mut sum, r) = (*x, *r);
        for (s, r) in sum.iter_mut().zip(r) {
            *s += w * r;
        }
        *x = sum;
    }
    for (x, r) in acc_rest.iter_mut().zip(row_rest) {
        *x += w * r;
    }
}

/// Reports the dense sums `acc[..n]` scaled by `inv` (the cosines) as
/// [`TextIndex::score_into`] does, zeroes all of `acc` for the next query and returns the
/// best cosine (at most 1).
#[inline(always)]
fn report(
    acc: &mut [f32],
    n: usize,
    inv: f32,
    min_score: f32,
    keep: &impl Fn(usize) -> bool,
    f: &mut impl FnMut(usize, f32),
) -> f32 {
    let mut best = 0.0f32;
    for (a, &x) in acc[..n].iter().enumerate() {
        let v = x * inv;
        // Sums and `inv` are finite, so a plain comparison is `f32::max` without its
        // NaN handling.
        if v > best {
            best = v;
        }
        if v > 0.0 && (v >= min_score || keep(a)) {
            f(a, v.min(1.0));
        }
    }
    acc.fill(0.0);
    best.min(1.0)
}

struct Scratch {
    feats: Vec<u64>,
    acc: Vec<f32>,
    seen: Vec<bool>,
    touched: Vec<u32>,
    /// Small-catalogue scorer: raw word hashes, handed to the caller after the pass.
    raws: Vec<u64>,
    /// Small-catalogue scorer: words outside the vocabulary seen lately, with what the
    /// vocabulary would hold for them, tagged with the id of the index they were
    /// resolved against (direct-mapped, [`MEMO_SLOTS`] entries, allocated on first use).
    memo: Vec<(u64, VocabEntry)>,
    /// Small-catalogue scorer: the query's distinct features (kept here so a query
    /// does not zero a fresh array).
    seen_features: [u64; SMALL_FEATURES],
}

impl Scratch {
    const fn new() -> Scratch {
        Scratch {
            feats: Vec::new(),
            acc: Vec::new(),
            seen: Vec::new(),
            touched: Vec::new(),
            raws: Vec::new(),
            memo: Vec::new(),
            seen_features: [0; SMALL_FEATURES],
        }
    }
}

/// Entries of the thread-local memo of words outside the vocabulary.
const MEMO_SLOTS: usize = 256;

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch::new())
    };
}

/// The text an agent's description vector is built from: id, description and skills.
fn description_text(p: &AgentProfile) -> String {
    let mut s = String::with_capacity(p.id.as_str().len() + p.description.len() + 32);
    s.push_str(p.id.as_str());
    s.push(' ');
    s.push_str(&p.description);
    for skill in &p.skills {
        s.push(' ');
        s.push_str(skill);
    }
    s
}

impl TextIndex {
    /// Builds the index. Memory and time are linear in the total text of the catalogue.
    pub(crate) fn build(agents: &[AgentProfile], cfg: TextConfig) -> TextIndex {
        Self::build_with(agents, cfg, None)
    }

    /// Rebuilds the centroid model from `agents` but reuses this index's trained
    /// correction (agent positions must be unchanged): cheap enough to run on every
    /// learned example.
    pub(crate) fn rebuild_keeping_correction(&self, agents: &[AgentProfile]) -> TextIndex {
        Self::build_with(
            agents,
            self.cfg,
            Some(std::sync::Arc::clone(&self.correction)),
        )
    }

    fn build_with(
        agents: &[AgentProfile],
        cfg: TextConfig,
        correction: Option<std::sync::Arc<Vec<(u64, u32, f32)>>>,
    ) -> TextIndex {
        let n = agents.len();
        // Small catalogues skip verb pairs (see `TextConfig::verb_pairs`) and use
        // `small_prefix_len`; the index keeps the effective config, so queries are
        // featurised the same way.
        let cfg = if n <= DENSE_ROWS {
            TextConfig {
                verb_pairs: 0,
                prefix_len: cfg.small_prefix_len,
                ..cfg
            }
        } else {
            cfg
        };
        let mut buf = Vec::new();
        // Per agent: description features and example feature sets.
        let mut desc_sets: Vec<Vec<u64>> = Vec::with_capacity(n);
        let mut ex_sets: Vec<Vec<Vec<u64>>> = Vec::with_capacity(n);
        let mut all: Vec<u64> = Vec::new();
        // Per agent: description features with their counts (for BM25).
        let mut desc_tf: Vec<Vec<(u64, u32)>> = Vec::with_capacity(n);
        for p in agents {
            buf.clear();
            let text = description_text(p);
            // BM25 counts words and prefixes only: description bigrams rarely recur in
            // a task and only lengthen the description (measured better without).
            features(
                &text,
                &TextConfig {
                    bigrams: false,
                    verb_pairs: 0,
                    ..cfg
                },
                &mut buf,
            );
            buf.sort_unstable();
            let mut tf: Vec<(u64, u32)> = Vec::with_capacity(buf.len());
            for &h in &buf {
                match tf.last_mut() {
                    Some((k, c)) if *k == h => *c += 1,
                    _ => tf.push((h, 1)),
                }
            }
            desc_tf.push(tf);
            buf.clear();
            // The description vector's verb pairs come from the description field alone
            // (many start with a verb: "Cancel a repair order"), not from the id
            // that heads `text`.
            features(
                &text,
                &TextConfig {
                    verb_pairs: 0,
                    ..cfg
                },
                &mut buf,
            );
            if cfg.verb_pairs > 0 {
                features(&p.description, &cfg, &mut buf);
            }
            sorted_unique(&mut buf);
            let d = buf.clone();
            let mut union = d.clone();
            let mut exs = Vec::with_capacity(p.examples.len());
            for e in &p.examples {
                buf.clear();
                features(e, &cfg, &mut buf);
                sorted_unique(&mut buf);
                if !buf.is_empty() {
                    union.extend_from_slice(&buf);
                    exs.push(buf.clone());
                }
            }
            sorted_unique(&mut union);
            all.extend_from_slice(&union);
            desc_sets.push(d);
            ex_sets.push(exs);
        }
        // Document frequency over agents.
        let df = run_counts(&mut all);
        let nf = n as f32;
        let idf_of = |h: u64| -> f32 {
            match df.binary_search_by_key(&h, |e| e.0) {
                Ok(i) => (1.0 + nf / df[i].1 as f32).ln(),
                Err(_) => (1.0 + nf).ln(),
            }
        };
        let bm25 = bm25_weights(&desc_tf, &cfg);
        let mut triples: Vec<(u64, u32, f32)> = Vec::new();
        let mut has_examples = Vec::with_capacity(n);
        let mut centroid: Vec<(u64, f32)> = Vec::new();
        let mut centroid_norms: Vec<f32> = Vec::with_capacity(n);
        for (a, (d, exs)) in desc_sets.iter().zip(&ex_sets).enumerate() {
            let agent = a as u32;
            has_examples.push(!exs.is_empty());
            // Description vector, L2-normalised.
            let dn = d.iter().map(|&h| idf_of(h).powi(2)).sum::<f32>().sqrt();
            let dw = if exs.is_empty() {
                cfg.description_weight * cfg.unseen_boost
            } else {
                cfg.description_weight
            };
            // Example centroid: mean of normalised example vectors, then normalised.
            centroid.clear();
            for e in exs {
                let en = e.iter().map(|&h| idf_of(h).powi(2)).sum::<f32>().sqrt();
                if en > 0.0 {
                    centroid.extend(e.iter().map(|&h| (h, idf_of(h) / en)));
                }
            }
            centroid.sort_unstable_by_key(|e| e.0);
            let mut merged: Vec<(u64, f32)> = Vec::with_capacity(centroid.len());
            for &(h, w) in &centroid {
                match merged.last_mut() {
                    Some((k, acc)) if *k == h => *acc += w,
                    _ => merged.push((h, w)),
                }
            }
            let cn = merged.iter().map(|e| e.1 * e.1).sum::<f32>().sqrt();
            centroid_norms.push(cn);
            // Combine description and centroid into one weight per feature.
            let mut combined: Vec<(u64, f32)> = Vec::with_capacity(d.len() + merged.len());
            if dn > 0.0 {
                combined.extend(d.iter().map(|&h| (h, dw * idf_of(h) / dn)));
            }
            if cn > 0.0 {
                combined.extend(
                    merged
                        .iter()
                        .map(|&(h, w)| (h, cfg.example_weight * w / cn)),
                );
            }
            // The BM25 description channel: the query multiplies each weight by the
            // feature's idf, so it is divided out here.
            let bw = if exs.is_empty() {
                cfg.bm25_unseen_weight
            } else {
                cfg.bm25_weight
            };
            if bw > 0.0 {
                combined.extend(bm25[a].iter().map(|&(h, w)| (h, bw * w / idf_of(h))));
            }
            combined.sort_unstable_by_key(|e| e.0);
            let mut last: Option<u64> = None;
            for (h, w) in combined {
                if last == Some(h) {
                    if let Some(t) = triples.last_mut() {
                        t.2 += w;
                    }
                } else {
                    triples.push((h, agent, w));
                    last = Some(h);
                }
            }
        }
        let vocab = if cfg.char_min == 0 {
            let descs: Vec<String> = agents.iter().map(description_text).collect();
            Vocab::build(
                descs.iter().map(String::as_str).chain(
                    agents
                        .iter()
                        .flat_map(|p| p.examples.iter().map(String::as_str)),
                ),
                &cfg,
            )
        } else {
            Vocab::default()
        };
        if let Some(correction) = correction {
            triples.extend(correction.iter().copied().filter(|t| (t.1 as usize) < n));
            let mut index = TextIndex::assemble(cfg, triples, df.len(), &idf_of, n, has_examples);
            index.correction = correction;
            index.set_vocab(vocab);
            return index;
        }
        let mut index =
            TextIndex::assemble(cfg, triples.clone(), df.len(), &idf_of, n, has_examples);
        if cfg.epochs > 0 && n <= MAX_TRAINED_AGENTS && ex_sets.iter().any(|e| !e.is_empty()) {
            let loo: Vec<f32> = centroid_norms
                .iter()
                .map(|&cn| {
                    if cn > 0.0 {
                        cfg.example_weight / cn
                    } else {
                        0.0
                    }
                })
                .collect();
            let train_sets: Vec<Vec<Vec<u64>>> = if cfg.train_descriptions {
                ex_sets
                    .iter()
                    .zip(&desc_sets)
                    .map(|(e, d)| {
                        let mut v = e.clone();
                        v.push(d.clone());
                        v
                    })
                    .collect()
            } else {
                ex_sets.clone()
            };
            let delta = match cfg.learner {
                Learner::Perceptron => train_correction(&index, &train_sets, &loo, &idf_of, &cfg),
                Learner::Softmax => train_softmax(&index, &train_sets, &loo, &idf_of, &cfg),
            };
            triples.extend(delta.iter().copied());
            let has_examples = std::mem::take(&mut index.has_examples);
            index = TextIndex::assemble(cfg, triples, df.len(), &idf_of, n, has_examples);
            index.correction = std::sync::Arc::new(delta);
        }
        index.set_vocab(vocab);
        index
    }

    /// Installs the vocabulary, resolving each word's unigram and prefix features to
    /// their slots in this index (so the small-catalogue scorer needs no lookup for them).
    fn set_vocab(&mut self, mut vocab: Vocab) {
        // A fresh id per installed vocabulary: slots resolved against another index (or
        // an earlier state of this one) are never reused.
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        self.id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for e in &mut vocab.slots {
            if e.len == 0 || e.stop {
                continue;
            }
            self.resolve_slots(e);
        }
        self.vocab = vocab;
    }

    /// Sets the slots of a vocabulary entry's unigram and prefix features.
    fn resolve_slots(&self, e: &mut VocabEntry) {
        let resolve = |h: u64| match self.slot_of(h) {
            None => NOT_INDEXED,
            // A table too large for a `u32` position: looked up at query time instead.
            Some(i) => u32::try_from(i)
                .ok()
                .filter(|&i| i < LOOK_UP)
                .unwrap_or(LOOK_UP),
        };
        e.word_slot = resolve(e.word);
        e.prefix_slot = if e.prefix == 0 {
            NOT_INDEXED
        } else {
            resolve(e.prefix)
        };
    }

    /// The index in `slots` of feature `h`, if the index holds it.
    #[inline]
    fn slot_of(&self, h: u64) -> Option<usize> {
        let key = h | 1;
        let mut s = (h as usize) & self.mask;
        loop {
            let slot = &self.slots[s];
            if slot.key == key {
                return Some(s);
            }
            if slot.key == 0 {
                return None;
            }
            s = (s + 1) & self.mask;
        }
    }

    fn assemble(
        cfg: TextConfig,
        mut triples: Vec<(u64, u32, f32)>,
        distinct: usize,
        idf_of: &dyn Fn(u64) -> f32,
        n: usize,
        has_examples: Vec<bool>,
    ) -> TextIndex {
        triples.sort_unstable_by_key(|t| (t.0, t.1));
        let cap = (distinct.max(1) * 2).next_power_of_two().max(16);
        let mask = cap - 1;
        let mut slots = vec![Slot::default(); cap];
        let mut postings: Vec<Posting> = Vec::with_capacity(triples.len());
        let mut rows: Vec<f32> = Vec::new();
        let stride = n.next_multiple_of(LANES);
        let mut i = 0;
        while i < triples.len() {
            let h = triples[i].0;
            let start = postings.len();
            while i < triples.len() && triples[i].0 == h {
                let (agent, weight) = (triples[i].1, triples[i].2);
                let len = postings.len();
                match postings.last_mut() {
                    Some(p) if len > start && p.agent == agent => p.weight += weight,
                    _ => postings.push(Posting { agent, weight }),
                }
                i += 1;
            }
            let key = h | 1; // 0 marks an empty slot
            let mut s = (h as usize) & mask;
            while slots[s].key != 0 {
                s = (s + 1) & mask;
            }
            let long = postings.len() - start >= (n / 16).max(16);
            let room = rows.len() + stride <= MAX_ROW_WEIGHTS;
            let row = if room && (n <= DENSE_ROWS || (n <= DENSE_LIMIT && long)) {
                let row = rows.len();
                rows.resize(row + stride, 0.0);
                for p in &postings[start..] {
                    rows[row + p.agent as usize] += p.weight;
                }
                row as u32
            } else {
                NO_ROW
            };
            slots[s] = Slot {
                key,
                start: start as u32,
                len: (postings.len() - start) as u32,
                row,
                idf: idf_of(h),
            };
        }
        let bits = (slots.len() * 4).next_power_of_two().max(64);
        let present_shift = 64 - bits.trailing_zeros();
        let mut present = vec![0u64; bits / 64];
        for slot in slots.iter().filter(|x| x.key != 0) {
            let b = (slot.key >> present_shift) as usize;
            if let Some(w) = present.get_mut(b / 64) {
                *w |= 1 << (b % 64);
            }
        }
        TextIndex {
            cfg,
            slots,
            present,
            present_shift,
            mask,
            postings,
            rows,
            stride,
            unknown_idf: (1.0 + n as f32).ln(),
            n_agents: n,
            small: n <= DENSE_ROWS && cfg.char_min == 0,
            id: 0,
            has_examples,
            vocab: Vocab::default(),
            correction: std::sync::Arc::new(Vec::new()),
        }
    }

    #[inline]
    fn lookup(&self, h: u64) -> Option<&Slot> {
        self.slot_of(h).and_then(|s| self.slots.get(s))
    }

    /// Whether the agent had examples when the index was built.
    pub(crate) fn has_examples(&self, agent: usize) -> bool {
        self.has_examples.get(agent).copied().unwrap_or(false)
    }

    /// [`TextIndex::score_into`] with fresh query words, returned with the best
    /// similarity.
    #[cfg(test)]
    pub(crate) fn score(
        &self,
        text: &str,
        want_raw: bool,
        min_score: f32,
        raw: impl FnMut(u64),
        f: impl FnMut(usize, f32),
    ) -> (QueryWords, f32) {
        let mut words = QueryWords::default();
        let best = self.score_into(text, want_raw, min_score, |_| false, &mut words, raw, f);
        (words, best)
    }

    /// Scores `text` against every agent and calls `f(agent, cosine)` for each agent with
    /// a positive similarity. With `want_raw`, the raw word hashes of `text` (for rule
    /// keywords, see [`scan_words`]) go to `raw` first, from the same pass. The query's
    /// unigram spans are written to `words` (to explain matches). Uses thread-local
    /// scratch buffers: no allocation once warm.
    ///
    /// Agents scoring below `min_score` are skipped (pass `0.0` for every positive one)
    /// unless `keep(agent)` says otherwise (so a caller that wants a few agents at any
    /// positive score is not called for all the others); the best similarity of all is
    /// returned.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn score_into(
        &self,
        text: &str,
        want_raw: bool,
        min_score: f32,
        keep: impl Fn(usize) -> bool,
        words: &mut QueryWords,
        mut raw: impl FnMut(u64),
        mut f: impl FnMut(usize, f32),
    ) -> f32 {
        SCRATCH.with(|cell| {
            let Ok(mut guard) = cell.try_borrow_mut() else {
                // Re-entrant use (a callback scoring again): fall back to fresh buffers.
                let mut s = Scratch::new();
                return self.score_with(
                    &mut s, text, want_raw, min_score, &keep, words, &mut raw, &mut f,
                );
            };
            self.score_with(
                &mut guard, text, want_raw, min_score, &keep, words, &mut raw, &mut f,
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn score_with(
        &self,
        s: &mut Scratch,
        text: &str,
        want_raw: bool,
        min_score: f32,
        keep: &impl Fn(usize) -> bool,
        words: &mut QueryWords,
        raw: &mut impl FnMut(u64),
        f: &mut impl FnMut(usize, f32),
    ) -> f32 {
        if self.small
            && let Some(best) = self.score_small(s, text, want_raw, min_score, keep, words, raw, f)
        {
            return best;
        }
        s.feats.clear();
        words.len = 0;
        let vocab = (self.vocab.len > 0).then_some(&self.vocab);
        features_with_words(text, &self.cfg, vocab, &mut s.feats, words, want_raw, raw);
        if self.cfg.verb_pairs > 0 {
            // Only pairs some agent has: an unseen pair (most of them, they are
            // combinatorial) says nothing against the agents, but would lower every
            // cosine through the query norm (short steps fell below the threshold).
            push_verb_pairs(words, self.cfg.verb_pairs, &mut s.feats, |h| {
                self.lookup(h).is_some()
            });
        }
        unique_small(&mut s.feats);
        let n = self.n_agents;
        let stride = self.stride;
        if s.acc.len() < stride {
            s.acc.resize(stride, 0.0);
            s.seen.resize(stride, false);
        }
        s.touched.clear();
        let mut norm = 0.0f32;
        if n <= DENSE_ROWS {
            // Small catalogues: one contiguous row per feature (vectorised).
            let acc = &mut s.acc[..stride];
            for &h in &s.feats {
                match self.lookup(h) {
                    Some(slot) => {
                        let q = slot.idf;
                        norm += q * q;
                        let row = slot.row as usize;
                        if let Some(row) = self.rows.get(row..row + stride) {
                            add_row(acc, row, q);
                        } else {
                            // Past the dense-row budget: postings.
                            let start = slot.start as usize;
                            for p in &self.postings[start..start + slot.len as usize] {
                                if let Some(x) = acc.get_mut(p.agent as usize) {
                                    *x += q * p.weight;
                                }
                            }
                        }
                    }
                    None => norm += self.unknown_idf * self.unknown_idf,
                }
            }
            let inv = if norm > 0.0 { 1.0 / norm.sqrt() } else { 0.0 };
            return report(acc, n, inv, min_score, keep, f);
        }
        // Mid-size catalogues: accumulate densely and scan every agent (no branch per
        // posting). Large ones: track the agents touched, so cost follows the postings.
        let dense = n <= DENSE_LIMIT;
        for &h in &s.feats {
            match self.lookup(h) {
                Some(slot) => {
                    let q = slot.idf;
                    norm += q * q;
                    let start = slot.start as usize;
                    let end = start + slot.len as usize;
                    let row = slot.row as usize;
                    if let Some(row) = self.rows.get(row..row + stride).filter(|_| dense) {
                        // Element by element: `add_row`'s chunks vectorise badly over a
                        // long row (lane shuffles), the plain loop does not.
                        for (x, w) in s.acc[..n].iter_mut().zip(row) {
                            *x += q * w;
                        }
                    } else if dense {
                        for p in &self.postings[start..end] {
                            s.acc[p.agent as usize] += q * p.weight;
                        }
                    } else {
                        for p in &self.postings[start..end] {
                            let a = p.agent as usize;
                            if !s.seen[a] {
                                s.seen[a] = true;
                                s.touched.push(p.agent);
                            }
                            s.acc[a] += q * p.weight;
                        }
                    }
                }
                None => norm += self.unknown_idf * self.unknown_idf,
            }
        }
        let inv = if norm > 0.0 { 1.0 / norm.sqrt() } else { 0.0 };
        if dense {
            return report(&mut s.acc[..stride], n, inv, min_score, keep, f);
        }
        let mut best = 0.0f32;
        for &a in &s.touched {
            let a = a as usize;
            let v = s.acc[a] * inv;
            s.acc[a] = 0.0;
            s.seen[a] = false;
            best = best.max(v);
            if v > 0.0 && (v >= min_score || keep(a)) {
                f(a, v.min(1.0));
            }
        }
        best.min(1.0)
    }

    /// [`TextIndex::score_with`] for a small catalogue ([`TextIndex::small`]): one pass
    /// over the text that tokenises, drops each repeated feature as it appears and adds
    /// a new feature's dense row to the agents' sums at once, with no feature list in
    /// between. Words are lower-cased 8 bytes at a time and looked up in the vocabulary
    /// by those words; vocabulary words carry their features' slots, so only bigrams and
    /// words outside the vocabulary are looked up in the index. The sums are exactly
    /// those of the general path: features are added in the same order (first
    /// occurrences; per word the unigram, then the bigram, then the prefix).
    ///
    /// Returns `None`, having reported nothing, when the text has more than
    /// [`SMALL_FEATURES`] distinct features (the caller then takes the general path).
    #[allow(clippy::too_many_arguments)]
    fn score_small(
        &self,
        s: &mut Scratch,
        text: &str,
        want_raw: bool,
        min_score: f32,
        keep: &impl Fn(usize) -> bool,
        words: &mut QueryWords,
        raw: &mut impl FnMut(u64),
        f: &mut impl FnMut(usize, f32),
    ) -> Option<f32> {
        let n = self.n_agents;
        let stride = self.stride;
        let bytes = text.as_bytes();
        if s.acc.len() < stride {
            s.acc.resize(stride, 0.0);
            s.seen.resize(stride, false);
        }
        s.raws.clear();
        words.len = 0;
        let raws = &mut s.raws;
        let mut q = SmallQuery {
            acc: &mut s.acc[..stride],
            seen: &mut s.seen_features,
            count: 0,
            bloom: [0; 4],
            overflow: false,
            norm: 0.0,
            prev: None,
            words,
        };
        let vocab = &self.vocab;
        let nb = bytes.len();
        let mut i = 0usize;
        loop {
            // The same words as `scan_tokens`: skip separators (usually one byte), then
            // take the run of word bytes eight bytes at a time, its first 16 bytes as two
            // words.
            while i < nb && LOWER[usize::from(bytes[i])] == 0 {
                i += 1;
            }
            if i >= nb {
                break;
            }
            let start = i;
            let x0 = load8_at(bytes, start);
            let end0 = !word_bytes8(x0) & HIGH8;
            let (w0, w1, wl) = if end0 != 0 {
                let k = (end0.trailing_zeros() / 8) as usize;
                (x0 & low_bytes(k), 0, k)
            } else {
                let x1 = load8_at(bytes, start + 8);
                let end1 = !word_bytes8(x1) & HIGH8;
                if end1 != 0 {
                    let k = (end1.trailing_zeros() / 8) as usize;
                    (x0, x1 & low_bytes(k), 8 + k)
                } else {
                    // Longer than 16 bytes (rare): the rest byte by byte.
                    let rest = bytes.get(start + 16..).unwrap_or_default();
                    let k = rest
                        .iter()
                        .position(|&b| LOWER[usize::from(b)] == 0)
                        .unwrap_or(rest.len());
                    (x0, x1, 16 + k)
                }
            };
            let end = start + wl;
            let word = &bytes[start..end];
            // The byte at `end` ended the word: a separator (or the end of the text), so
            // the next scan starts after it.
            i = end + 1;
            // The first 16 bytes, lower-cased (word bytes are letters, digits or
            // non-ASCII, so ASCII lower-casing is exactly the `LOWER` table).
            let (lo, hi) = (lower8(w0), if wl > 8 { lower8(w1) } else { 0 });
            // camelCase can only split a word with an upper-case letter after its first
            // byte.
            let camel = if wl <= 16 {
                (lo != w0 && camel8(w0, lo, false) != 0)
                    || (hi != w1 && camel8(w1, hi, lower_letters8(w0) >> 63 != 0) != 0)
            } else {
                word.windows(2)
                    .any(|p| p[0].is_ascii_lowercase() && p[1].is_ascii_uppercase())
            };
            // ASCII words of up to 16 bytes: the first 16 bytes hold the whole word.
            let ascii = wl <= VOCAB_MAX && (w0 | w1) & HIGH8 == 0;
            if !camel && ascii {
                // The catalogue's entry for the word, or, for a word the catalogue does
                // not use, what the vocabulary would hold for it (from the memo or
                // computed now).
                let e = match vocab.get_key(lo, hi, wl) {
                    Some(e) => e,
                    None => self.memo_entry(&mut s.memo, lo, hi, wl),
                };
                if want_raw {
                    raws.push(e.raw);
                }
                if !e.stop {
                    self.add_word(
                        &mut q,
                        (e.word, e.word_slot),
                        (e.prefix, e.prefix_slot),
                        start,
                        end,
                    );
                }
                continue;
            }
            let mut buf = [0u8; MAX_WORD + 1];
            let (len, full) = if word.is_ascii() {
                let len = wl.min(MAX_WORD);
                for (d, &b) in buf.iter_mut().zip(&word[..len]) {
                    *d = LOWER[usize::from(b)];
                }
                (len, wl)
            } else {
                lower_word(word, &mut buf)
            };
            if want_raw {
                raws.push(raw_word_hash(&buf[..len], full > MAX_RAW));
            }
            self.add_slow_word(&mut q, &mut buf, len, word, start, camel);
        }
        if q.overflow {
            q.acc.fill(0.0);
            return None;
        }
        let norm = q.norm;
        for &h in raws.iter() {
            raw(h);
        }
        let inv = if norm > 0.0 { 1.0 / norm.sqrt() } else { 0.0 };
        Some(report(&mut s.acc[..stride], n, inv, min_score, keep, f))
    }

    /// The vocabulary entry a lower-cased word of `len` bytes (1..=[`VOCAB_MAX`], not
    /// camelCase) would have, its bytes zero-padded in `lo` and `hi`: from the memo when
    /// it holds the word for this index, else computed as [`Vocab::build`] does and
    /// remembered.
    #[inline]
    fn memo_entry<'m>(
        &self,
        memo: &'m mut Vec<(u64, VocabEntry)>,
        lo: u64,
        hi: u64,
        len: usize,
    ) -> &'m VocabEntry {
        if memo.len() != MEMO_SLOTS {
            memo.clear();
            memo.resize(MEMO_SLOTS, (0, VocabEntry::default()));
        }
        let h = (lo ^ hi.rotate_left(29) ^ len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let slot = &mut memo[(h >> 56) as usize % MEMO_SLOTS];
        let (id, e) = slot;
        if !(*id == self.id && usize::from(e.len) == len && e.lo == lo && e.hi == hi) {
            *slot = (self.id, self.vocab_entry(lo, hi, len));
        }
        &slot.1
    }

    /// What [`Vocab::build`] stores for a word (see [`TextIndex::memo_entry`]), with its
    /// features' slots in this index.
    #[inline(never)]
    fn vocab_entry(&self, lo: u64, hi: u64, len: usize) -> VocabEntry {
        let mut bytes = [0u8; MAX_WORD];
        bytes[..8].copy_from_slice(&lo.to_le_bytes());
        bytes[8..16].copy_from_slice(&hi.to_le_bytes());
        let n = len.min(VOCAB_MAX);
        let mut e = VocabEntry {
            lo,
            hi,
            len: n as u8,
            stop: true,
            raw: raw_word_hash(&bytes[..n], false),
            word: 0,
            prefix: 0,
            word_slot: NOT_INDEXED,
            prefix_slot: NOT_INDEXED,
        };
        let cfg = &self.cfg;
        emit_word(&mut bytes, n, 0, n, &mut |w: &[u8], _, _| {
            let (h, p) = word_features(w, cfg);
            e.stop = false;
            e.word = h;
            e.prefix = p;
        });
        if !e.stop {
            self.resolve_slots(&mut e);
        }
        e
    }

    /// The small-catalogue scorer's handling of a word outside the vocabulary (or
    /// camelCase): stop words, stemming, hashing and camelCase splitting as in
    /// [`scan_tokens`]. `buf[..len]` holds the word lower-cased (at most [`MAX_WORD`]
    /// bytes), `word` its bytes as written, starting at `start`.
    #[inline(never)]
    fn add_slow_word(
        &self,
        q: &mut SmallQuery<'_>,
        buf: &mut [u8; MAX_WORD + 1],
        len: usize,
        word: &[u8],
        start: usize,
        camel: bool,
    ) {
        let cfg = &self.cfg;
        let mut add = |w: &[u8], a: usize, b: usize| {
            let (h, p) = word_features(w, cfg);
            self.add_word(q, (h, LOOK_UP), (p, LOOK_UP), a, b);
        };
        if camel {
            emit_camel_parts(word, start, &mut add);
        } else {
            emit_word(buf, len, start, start + word.len(), &mut add);
        }
    }

    /// Adds one content word's features (unigram `(hash, slot)`, the bigram with the
    /// previous word, prefix `(hash, slot)`, hash `0` = none) and its span.
    #[inline(always)]
    fn add_word(
        &self,
        q: &mut SmallQuery<'_>,
        (h, h_slot): (u64, u32),
        (p, p_slot): (u64, u32),
        start: usize,
        end: usize,
    ) {
        let words = &mut *q.words;
        if words.len < MAX_SPANS {
            words.spans[words.len] = (h, start as u32, end as u32);
            words.len += 1;
        }
        self.add_feature(q, h, h_slot);
        if self.cfg.bigrams {
            if let Some(prev) = q.prev {
                self.add_feature(q, mix(prev, h), LOOK_UP);
            }
            q.prev = Some(h);
        }
        if p != 0 {
            self.add_feature(q, p, p_slot);
        }
    }

    /// Adds feature `h` (its slot, or [`NOT_INDEXED`], or [`LOOK_UP`]) to the query
    /// unless it was already added: its idf to the norm and its weighted row to the sums.
    #[inline(always)]
    fn add_feature(&self, q: &mut SmallQuery<'_>, h: u64, slot: u32) {
        let top = (h >> 56) as usize;
        let bit = 1u64 << (top % 64);
        if q.bloom[top / 64] & bit != 0 && q.seen[..q.count].contains(&h) {
            return;
        }
        let Some(free) = q.seen.get_mut(q.count) else {
            q.overflow = true;
            return;
        };
        *free = h;
        q.count += 1;
        q.bloom[top / 64] |= bit;
        let slot = match slot {
            LOOK_UP => {
                let b = (h >> self.present_shift) as usize;
                if self
                    .present
                    .get(b / 64)
                    .is_some_and(|w| w & (1 << (b % 64)) != 0)
                {
                    self.lookup(h)
                } else {
                    None
                }
            }
            NOT_INDEXED => None,
            i => self.slots.get(i as usize),
        };
        let Some(slot) = slot else {
            q.norm += self.unknown_idf * self.unknown_idf;
            return;
        };
        let w = slot.idf;
        q.norm += w * w;
        let row = slot.row as usize;
        if let Some(row) = self.rows.get(row..row + q.acc.len()) {
            add_row(q.acc, row, w);
        } else {
            let start = slot.start as usize;
            let list = self
                .postings
                .get(start..start + slot.len as usize)
                .unwrap_or_default();
            for p in list {
                if let Some(x) = q.acc.get_mut(p.agent as usize) {
                    *x += w * p.weight;
                }
            }
        }
    }

    /// Writes up to `max` words of the query that carry positive weight for `agent`, in
    /// text order, quoted and comma-separated; returns how many were written.
    pub(crate) fn write_matched_words(
        &self,
        words: &QueryWords,
        text: &str,
        agent: usize,
        max: usize,
        out: &mut String,
    ) -> usize {
        let mut written = 0usize;
        let mut done = [0u64; MAX_SPANS];
        for &(h, start, end) in &words.spans[..words.len] {
            if written == max {
                break;
            }
            if done[..written].contains(&h) {
                continue;
            }
            let Some(slot) = self.lookup(h) else {
                continue;
            };
            let hit = if slot.row != NO_ROW {
                self.rows
                    .get(slot.row as usize + agent)
                    .is_some_and(|w| *w > 0.0)
            } else {
                let list = &self.postings[slot.start as usize..(slot.start + slot.len) as usize];
                list.binary_search_by_key(&(agent as u32), |p| p.agent)
                    .is_ok_and(|i| list[i].weight > 0.0)
            };
            if !hit {
                continue;
            }
            if written > 0 {
                out.push_str(", ");
            }
            out.push('"');
            let w = text.get(start as usize..end as usize).unwrap_or_default();
            if w.bytes().any(|b| b.is_ascii_uppercase()) {
                out.extend(w.chars().map(|c| c.to_ascii_lowercase()));
            } else {
                out.push_str(w);
            }
            out.push('"');
            done[written] = h;
            written += 1;
        }
        written
    }

    /// The unigram spans of `text`, for [`TextIndex::write_matched_words`] when the
    /// spans from [`TextIndex::score`] are not at hand.
    #[cfg(test)]
    pub(crate) fn query_words(&self, text: &str) -> QueryWords {
        let mut words = QueryWords::default();
        let mut feats = Vec::new();
        features_with_words(text, &self.cfg, None, &mut feats, &mut words, false, |_| {});
        words
    }
}

/// The training maps' keys are already well-mixed feature hashes and small ids:
/// SipHash's flooding resistance buys nothing there and cost most of the training time.
pub(crate) type FxMap<K, V> = genesis_core::fasthash::FxHashMap<K, V>;

/// splitmix64, for a deterministic training order.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Trains the discriminative correction: an averaged multi-class perceptron with a margin
/// over the examples, on top of the centroid scores of `base`. Each example's own share
/// of its agent's centroid (`loo[agent]`) is taken out first, so training sees the
/// scores an unseen phrasing would get. Returns `(feature, agent, weight)` triples to
/// add to the base model; sparse, because only mistakes update.
fn train_correction(
    base: &TextIndex,
    ex_sets: &[Vec<Vec<u64>>],
    loo: &[f32],
    idf_of: &dyn Fn(u64) -> f32,
    cfg: &TextConfig,
) -> Vec<(u64, u32, f32)> {
    let n = base.n_agents;
    // Examples as normalised (feature, weight) vectors.
    let mut examples: Vec<(u32, Vec<(u64, f32)>)> = Vec::new();
    for (a, exs) in ex_sets.iter().enumerate() {
        for e in exs {
            let norm = e.iter().map(|&h| idf_of(h).powi(2)).sum::<f32>().sqrt();
            if norm > 0.0 {
                examples.push((a as u32, e.iter().map(|&h| (h, idf_of(h) / norm)).collect()));
            }
        }
    }
    // feature -> [(agent, weight, averaging accumulator)], and (feature, agent) -> position.
    let mut delta: FxMap<u64, Vec<(u32, f32, f32)>> = FxMap::default();
    let mut pos: FxMap<(u64, u32), usize> = FxMap::default();
    let mut acc = vec![0.0f32; n];
    let mut seen = vec![false; n];
    let mut touched: Vec<u32> = Vec::new();
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = 0x5eed_u64;
    let mut step = 1.0f32;
    let eta = cfg.learning_rate;
    let epochs = training_epochs(cfg, examples.len());
    for _ in 0..epochs {
        shuffle(&mut order, &mut rng);
        for &ei in &order {
            let (gold, ref feats) = examples[ei];
            touched.clear();
            for &(h, q) in feats {
                if let Some(slot) = base.lookup(h) {
                    let start = slot.start as usize;
                    for p in &base.postings[start..start + slot.len as usize] {
                        if !seen[p.agent as usize] {
                            seen[p.agent as usize] = true;
                            touched.push(p.agent);
                        }
                        acc[p.agent as usize] += q * p.weight;
                    }
                }
                if let Some(list) = delta.get(&h) {
                    for &(a, w, _) in list {
                        if !seen[a as usize] {
                            seen[a as usize] = true;
                            touched.push(a);
                        }
                        acc[a as usize] += q * w;
                    }
                }
            }
            let g = gold as usize;
            let gold_score = acc[g] - loo[g];
            // The best wrong agents (up to `rivals`) within the margin of the gold one.
            let k = usize::from(cfg.rivals.max(1));
            let mut rivals: [(u32, f32); 8] = [(0, f32::NEG_INFINITY); 8];
            let k = k.min(rivals.len());
            for &a in &touched {
                let ai = a as usize;
                if ai != g && (cfg.penalize_unseen || base.has_examples(ai)) {
                    let sc = acc[ai];
                    if sc > rivals[k - 1].1 {
                        let mut j = k - 1;
                        while j > 0 && rivals[j - 1].1 < sc {
                            rivals[j] = rivals[j - 1];
                            j -= 1;
                        }
                        rivals[j] = (a, sc);
                    }
                }
            }
            for &a in &touched {
                acc[a as usize] = 0.0;
                seen[a as usize] = false;
            }
            // No wrong agent scored: the gold one competes against 0.
            let best_rival = if rivals[0].1.is_finite() {
                rivals[0].1
            } else {
                0.0
            };
            if gold_score - best_rival < cfg.margin {
                let violating = rivals[..k]
                    .iter()
                    .filter(|r| r.1.is_finite() && gold_score - r.1 < cfg.margin)
                    .count();
                let share = 1.0 / violating.max(1) as f32;
                for &(h, q) in feats {
                    let list = delta.entry(h).or_default();
                    let mut bump = |agent: u32, d: f32| match pos.get(&(h, agent)) {
                        Some(&i) => {
                            list[i].1 += d;
                            list[i].2 += step * d;
                        }
                        None => {
                            pos.insert((h, agent), list.len());
                            list.push((agent, d, step * d));
                        }
                    };
                    bump(gold, eta * q);
                    for r in rivals[..k]
                        .iter()
                        .filter(|r| r.1.is_finite() && gold_score - r.1 < cfg.margin)
                    {
                        bump(r.0, -eta * q * share);
                    }
                }
            }
            step += 1.0;
        }
    }
    let mut out = Vec::new();
    for (h, list) in delta {
        for (a, w, u) in list {
            let avg = w - u / step;
            if avg.abs() >= cfg.prune_below.max(f32::MIN_POSITIVE) {
                out.push((h, a, avg));
            }
        }
    }
    out.sort_unstable_by_key(|t| (t.0, t.1));
    out
}

/// Normalised TF-IDF vectors of the training examples, with their agent.
fn training_examples(
    ex_sets: &[Vec<Vec<u64>>],
    idf_of: &dyn Fn(u64) -> f32,
) -> Vec<(u32, Vec<(u64, f32)>)> {
    let mut examples = Vec::new();
    for (a, exs) in ex_sets.iter().enumerate() {
        for e in exs {
            let norm = e.iter().map(|&h| idf_of(h).powi(2)).sum::<f32>().sqrt();
            if norm > 0.0 {
                examples.push((a as u32, e.iter().map(|&h| (h, idf_of(h) / norm)).collect()));
            }
        }
    }
    examples
}

/// Trains the discriminative correction as a multinomial logistic regression: the
/// probability of agent `a` for example `x` is `softmax_a(scale · (base_a(x) + x · W_a))`
/// where `base` is the centroid/description model (each example's own share of its
/// agent's centroid, `loo`, taken out first) and `W` the sparse correction. AdaGrad
/// steps with a lazily applied L2 penalty; only the gold agent and agents with a
/// probability above 0.1% are updated, which keeps `W` sparse (the rest of the
/// gradient is negligible); agents without examples only with
/// [`TextConfig::penalize_unseen`]. Returns `W` as `(feature, agent, weight)` triples.
fn train_softmax(
    base: &TextIndex,
    ex_sets: &[Vec<Vec<u64>>],
    loo: &[f32],
    idf_of: &dyn Fn(u64) -> f32,
    cfg: &TextConfig,
) -> Vec<(u64, u32, f32)> {
    let n = base.n_agents;
    let examples = training_examples(ex_sets, idf_of);
    // feature -> [(agent, weight, sum of squared gradients)].
    let mut w: FxMap<u64, Vec<(u32, f32, f32)>> = FxMap::default();
    let mut acc = vec![0.0f32; n];
    let mut seen = vec![false; n];
    let mut touched: Vec<u32> = Vec::new();
    let mut probs: Vec<(u32, f32)> = Vec::new();
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = 0x5eed_u64;
    let scale = cfg.softmax_scale.max(f32::MIN_POSITIVE);
    let eta = cfg.learning_rate;
    let l2 = cfg.l2;
    let epochs = training_epochs(cfg, examples.len());
    for _ in 0..epochs {
        shuffle(&mut order, &mut rng);
        for &ei in &order {
            let (gold, ref feats) = examples[ei];
            let g = gold as usize;
            touched.clear();
            let mut touch = |a: u32, touched: &mut Vec<u32>| {
                if !seen[a as usize] {
                    seen[a as usize] = true;
                    touched.push(a);
                }
            };
            touch(gold, &mut touched);
            for &(h, q) in feats {
                if let Some(slot) = base.lookup(h) {
                    let start = slot.start as usize;
                    for p in &base.postings[start..start + slot.len as usize] {
                        touch(p.agent, &mut touched);
                        acc[p.agent as usize] += q * p.weight;
                    }
                }
                if let Some(list) = w.get(&h) {
                    for &(a, x, _) in list {
                        touch(a, &mut touched);
                        acc[a as usize] += q * x;
                    }
                }
            }
            acc[g] -= loo[g];
            // Softmax over all agents; untouched ones score 0.
            let mut max = 0.0f32;
            for &a in &touched {
                max = max.max(scale * acc[a as usize]);
            }
            let rest = (n - touched.len()) as f32 * (-max).exp();
            let mut z = rest;
            probs.clear();
            for &a in &touched {
                let e = (scale * acc[a as usize] - max).exp();
                z += e;
                probs.push((a, e));
            }
            for &a in &touched {
                acc[a as usize] = 0.0;
                seen[a as usize] = false;
            }
            let inv = 1.0 / z;
            for &(a, e) in &probs {
                let p = e * inv;
                let err = if a == gold { p - 1.0 } else { p };
                // Like the perceptron, agents without examples are pushed down only
                // with `penalize_unseen`.
                if a != gold
                    && (p < 1e-3 || !(cfg.penalize_unseen || base.has_examples(a as usize)))
                {
                    continue;
                }
                for &(h, q) in feats {
                    let list = w.entry(h).or_default();
                    let k = match list.iter().position(|t| t.0 == a) {
                        Some(k) => k,
                        None => {
                            list.push((a, 0.0, 0.0));
                            list.len() - 1
                        }
                    };
                    let t = &mut list[k];
                    let grad = err * q + l2 * t.1;
                    t.2 += grad * grad;
                    t.1 -= eta * grad / (t.2.sqrt() + 1e-6);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (h, list) in w {
        for (a, x, _) in list {
            if x.abs() >= cfg.prune_below.max(f32::MIN_POSITIVE) {
                out.push((h, a, x));
            }
        }
    }
    out.sort_unstable_by_key(|t| (t.0, t.1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        let mut v = Vec::new();
        for_each_word(text, |w| v.push(String::from_utf8_lossy(w).into_owned()));
        v
    }

    /// The byte-at-a-time tokeniser the word-at-a-time one replaced: content words and
    /// raw words.
    /// A content word with its byte range.
    type Spanned = (Vec<u8>, usize, usize);

    fn reference_words(text: &str) -> (Vec<Spanned>, Vec<u64>) {
        let mut words = Vec::new();
        let mut raws = Vec::new();
        let (mut buf, mut len, mut start, mut prev_lower) = ([0u8; MAX_WORD], 0, 0, false);
        let (mut rbuf, mut rlen, mut over) = ([0u8; MAX_RAW], 0, false);
        let mut flush = |buf: &mut [u8; MAX_WORD], len: &mut usize, start: usize, end: usize| {
            if *len > 0 && !is_stopword(&buf[..*len]) {
                let n = stem(buf, *len);
                words.push((buf[..n].to_vec(), start, end));
            }
            *len = 0;
        };
        for (i, &b) in text.as_bytes().iter().enumerate() {
            if !(b.is_ascii_alphanumeric() || b >= 0x80) {
                flush(&mut buf, &mut len, start, i);
                if rlen > 0 {
                    raws.push(raw_word_hash(&rbuf[..rlen], over));
                }
                (rlen, over, prev_lower) = (0, false, false);
                continue;
            }
            if b.is_ascii_uppercase() && prev_lower {
                flush(&mut buf, &mut len, start, i);
            }
            if len == 0 {
                start = i;
            }
            prev_lower = b.is_ascii_lowercase();
            if len < MAX_WORD {
                buf[len] = b.to_ascii_lowercase();
                len += 1;
            }
            if rlen < MAX_RAW {
                rbuf[rlen] = b.to_ascii_lowercase();
                rlen += 1;
            } else {
                over = true;
            }
        }
        flush(&mut buf, &mut len, start, text.len());
        if rlen > 0 {
            raws.push(raw_word_hash(&rbuf[..rlen], over));
        }
        (words, raws)
    }

    #[test]
    fn word_at_a_time_scan_matches_the_reference() {
        for text in [
            "Cancel the Alarms for clock_alarm_cancel, fetchUserData!",
            "",
            "  --  ",
            // (The reference lower-cases ASCII only: non-ASCII letters here are lower
            // case; `non_ascii_words_read_alike_in_any_case` covers the others.)
            "ABC deF getHTTPResponse XMLHttpRequest a1B2c3 ünïcode wörds",
            "averyveryveryverylongwordthatgoesbeyondthirtytwobytesforsure and more",
            "camelCaseWordThatIsLongerThanThirtyTwoBytesInTotalLength x",
            "8:00 2023-01-02 CA1234 s3 gpt4 The END",
        ] {
            let (want_words, want_raw) = reference_words(text);
            let mut got_words = Vec::new();
            let mut got_raw = Vec::new();
            scan_words(
                text,
                true,
                |h| got_raw.push(h),
                |w, a, b| got_words.push((w.to_vec(), a, b)),
            );
            assert_eq!(got_words, want_words, "{text:?}");
            assert_eq!(got_raw, want_raw, "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn scan_matches_the_reference_on_any_text(text in "[a-zA-Z0-9 _./é-]{0,80}") {
            let (want_words, want_raw) = reference_words(&text);
            let mut got_words = Vec::new();
            let mut got_raw = Vec::new();
            scan_words(&text, true, |h| got_raw.push(h), |w, a, b| {
                got_words.push((w.to_vec(), a, b))
            });
            proptest::prop_assert_eq!(got_words, want_words);
            proptest::prop_assert_eq!(got_raw, want_raw);
        }
    }

    /// Features, spans and raw word hashes of `text`, through `vocab` or not.
    /// Features, unigram spans and raw word hashes.
    type Analysis = (Vec<u64>, Vec<(u64, u32, u32)>, Vec<u64>);

    fn analyse(text: &str, vocab: Option<&Vocab>) -> Analysis {
        let cfg = TextConfig::default();
        let (mut feats, mut words, mut raws) = (Vec::new(), QueryWords::default(), Vec::new());
        features_with_words(text, &cfg, vocab, &mut feats, &mut words, true, |h| {
            raws.push(h)
        });
        (feats, words.spans[..words.len].to_vec(), raws)
    }

    #[test]
    fn vocabulary_fast_path_equals_the_slow_path() {
        let catalogue = [
            "Cancel the Alarms for clock_alarm_cancel, fetchUserData!",
            "Book 2 tickets at 8:00 for CA1234 and s3 gpt4 booking queries",
            "averyveryveryverylongwordthatgoesbeyondthirtytwobytes ünïcode",
            "the a of an flights flight_ticket_changing",
        ];
        let vocab = Vocab::build(catalogue.iter().copied(), &TextConfig::default());
        assert!(vocab.len > 10);
        assert!(vocab.get(b"alarms").is_some_and(|e| !e.stop));
        assert!(vocab.get(b"the").is_some_and(|e| e.stop));
        assert!(
            vocab.get(b"fetchuserdata").is_none(),
            "camelCase stays on the slow path"
        );
        for text in catalogue.iter().copied().chain([
            "CANCEL my alarm, then book flights; unknownword Booking",
            "",
            "fetchUserData for the queries at 9:30",
        ]) {
            assert_eq!(analyse(text, Some(&vocab)), analyse(text, None), "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn vocabulary_never_changes_features(
            catalogue in "[a-zA-Z0-9 _./é-]{0,60}",
            text in "[a-zA-Z0-9 _./é-]{0,60}",
        ) {
            let vocab = Vocab::build([catalogue.as_str()].into_iter(), &TextConfig::default());
            proptest::prop_assert_eq!(analyse(&text, Some(&vocab)), analyse(&text, None));
            proptest::prop_assert_eq!(analyse(&catalogue, Some(&vocab)), analyse(&catalogue, None));
        }
    }

    #[test]
    fn bm25_saturates_repeats_and_normalises_length() {
        let cfg = TextConfig::default();
        let (a, b, c, d) = (1u64, 2u64, 3u64, 4u64);
        // Agent 0: "a" once in a short text; agent 1: "a" three times; agent 2: "a" once
        // in a long text; agent 3 never says "a" (so "a" is not in every description).
        let desc = vec![
            vec![(a, 1), (b, 1)],
            vec![(a, 3), (b, 1)],
            vec![(a, 1), (b, 1), (c, 1), (d, 6)],
            vec![(b, 1), (c, 1)],
        ];
        let w = bm25_weights(&desc, &cfg);
        let wa = |i: usize| w[i].iter().find(|e| e.0 == a).map(|e| e.1).unwrap();
        assert!(wa(1) > wa(0), "more occurrences weigh more");
        assert!(wa(1) < 3.0 * wa(0), "but saturate: {} vs {}", wa(1), wa(0));
        assert!(wa(2) < wa(0), "a long description weighs each word less");
        // "b" is in every description: its idf, and weight, are the smallest.
        let wb = w[0].iter().find(|e| e.0 == b).map(|e| e.1).unwrap();
        assert!(wb < wa(0));
        let off = bm25_weights(
            &desc,
            &TextConfig {
                bm25_weight: 0.0,
                bm25_unseen_weight: 0.0,
                ..cfg
            },
        );
        assert!(off.iter().all(Vec::is_empty));
    }

    #[test]
    fn bm25_channel_lets_a_long_description_without_examples_compete() {
        let agents = vec![
            AgentProfile::new("flight_search", "Search flights")
                .with_example("find flights from Paris to Rome tomorrow")
                .with_example("search for a flight to Berlin on Friday")
                .with_example("look up flights to Madrid and their prices"),
            AgentProfile::new(
                "flight_ticket_changing",
                "Flight ticket booking modification or rescheduling service: change the \
                 date, time or seat of an existing flight ticket, handle fare differences, \
                 notify the passenger and update the itinerary of the trip",
            ),
        ];
        let query = "Reschedule my flight ticket to next Monday";
        let rank = |cfg: TextConfig| {
            let idx = TextIndex::build(&agents, cfg);
            let mut s = [0.0f32; 2];
            idx.score(query, false, 0.0, |_| {}, |a, v| s[a] = v);
            s
        };
        let with = rank(TextConfig::default());
        assert!(with[1] > with[0], "{with:?}");
        let without = rank(TextConfig {
            bm25_weight: 0.0,
            bm25_unseen_weight: 0.0,
            ..TextConfig::default()
        });
        assert!(
            with[1] - with[0] > without[1] - without[0],
            "{with:?} {without:?}"
        );
    }

    #[test]
    fn features_past_the_row_budget_score_through_postings() {
        let agents = vec![
            AgentProfile::new("clock_alarm_cancel", "Cancel an alarm")
                .with_example("turn off my 7am alarm"),
            AgentProfile::new("flight_search", "Search for flights between cities")
                .with_example("find flights to Rome for the alarm clock fair"),
            AgentProfile::new("weather", "Weather forecast for a city"),
        ];
        let idx = TextIndex::build(&agents, TextConfig::default());
        let mut no_rows = idx.clone();
        no_rows.rows.clear();
        for slot in &mut no_rows.slots {
            slot.row = NO_ROW;
        }
        for text in [
            "cancel the alarm",
            "flights to Rome",
            "weather in the city",
            "alarm",
        ] {
            let (mut a, mut b) = ([0.0f32; 3], [0.0f32; 3]);
            idx.score(text, false, 0.0, |_| {}, |i, s| a[i] = s);
            no_rows.score(text, false, 0.0, |_| {}, |i, s| b[i] = s);
            assert_eq!(a, b, "{text}");
            assert!(a.iter().any(|&s| s > 0.0), "{text}");
        }
    }

    #[test]
    fn mid_size_catalogues_use_dense_rows_for_common_features() {
        // 100 agents (above DENSE_ROWS) all mention "report": its postings list is long
        // enough for a dense row; each agent also has a word of its own.
        let agents: Vec<AgentProfile> = (0..100)
            .map(|i| {
                let own: String =
                    format!("{}{}", ["alpha", "bravo", "delta", "gamma"][i % 4], "xyz")
                        + &"q".repeat(i / 4 + 1);
                AgentProfile::new(format!("agent_{i}"), format!("writes the report {own}"))
            })
            .collect();
        let idx = TextIndex::build(&agents, TextConfig::default());
        let slot = idx.lookup(word_hash(b"report")).copied().unwrap();
        assert_ne!(slot.row, NO_ROW);
        let own7 = word_hash(b"deltaxyzqq");
        assert_eq!(idx.lookup(own7).unwrap().row, NO_ROW);
        let mut scores = vec![0.0f32; 100];
        let (_, best) = idx.score(
            "the report deltaxyzqq",
            false,
            0.0,
            |_| {},
            |a, s| scores[a] = s,
        );
        let top = (0..100)
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .unwrap();
        assert_eq!(top, 6, "{scores:?}");
        assert_eq!(best, scores[6]);
        // Every other agent shares "report" (via the dense row) and scores above zero.
        assert!(scores.iter().all(|&s| s > 0.0));
        // A threshold skips the weak ones but still reports the best similarity.
        let mut n = 0;
        let (_, best2) = idx.score("the report deltaxyzqq", false, best, |_| {}, |_, _| n += 1);
        assert_eq!((n, best2), (1, best));
        let text = "Report";
        let words = idx.query_words(text);
        let mut out = String::new();
        assert_eq!(idx.write_matched_words(&words, text, 42, 2, &mut out), 1);
        assert_eq!(out, "\"report\"");
    }

    /// Two agents whose descriptions both say "book"; the examples tell them apart.
    fn learners_separate(learner: Learner) {
        let agents = vec![
            AgentProfile::new("hotel_booking", "Book a room")
                .with_example("reserve a double room in Lisbon for two nights")
                .with_example("I need a hotel room near the station")
                .with_example("find me a suite for the weekend"),
            AgentProfile::new("table_booking", "Book a table")
                .with_example("reserve a table for four at an Italian restaurant")
                .with_example("dinner reservation tonight at eight")
                .with_example("get us a table by the window for lunch"),
        ];
        let cfg = TextConfig {
            learner,
            rivals: 3,
            ..TextConfig::default()
        };
        let idx = TextIndex::build(&agents, cfg);
        assert!(!idx.correction.is_empty(), "{learner:?} learned nothing");
        for (text, want) in [
            ("reserve a room for the weekend", 0),
            ("a table for dinner at eight", 1),
        ] {
            let mut scores = [0.0f32; 2];
            idx.score(text, false, 0.0, |_| {}, |a, s| scores[a] = s);
            assert!(
                scores[want] > scores[1 - want],
                "{learner:?} {text}: {scores:?}"
            );
        }
    }

    #[test]
    fn both_learners_separate_agents_by_their_examples() {
        learners_separate(Learner::Perceptron);
        learners_separate(Learner::Softmax);
    }

    /// An agent without examples ("table_booking") competes for the other agent's
    /// examples through its description; the correction pushes it down only with
    /// `penalize_unseen`.
    #[test]
    fn learners_push_down_agents_without_examples_only_when_asked() {
        let agents = vec![
            AgentProfile::new("hotel_booking", "Book a room")
                .with_example("book a table and a room")
                .with_example("book a room with a table for the weekend")
                .with_example("book a quiet room, a desk and a table"),
            AgentProfile::new("table_booking", "Book a table"),
        ];
        for learner in [Learner::Perceptron, Learner::Softmax] {
            for penalize_unseen in [false, true] {
                let cfg = TextConfig {
                    learner,
                    penalize_unseen,
                    ..TextConfig::default()
                };
                let idx = TextIndex::build(&agents, cfg);
                let unseen = idx.correction.iter().filter(|t| t.1 == 1).count();
                assert_eq!(
                    unseen > 0,
                    penalize_unseen,
                    "{learner:?} penalize_unseen={penalize_unseen}: {unseen} weights"
                );
            }
        }
    }

    #[test]
    fn words_are_normalised() {
        assert_eq!(
            words("Cancel the Alarms for clock_alarm_cancel, fetchUserData!"),
            vec![
                "cancel", "alarm", "clock", "alarm", "cancel", "fetch", "user", "data"
            ]
        );
        assert_eq!(
            words("testing queries passed"),
            vec!["test", "query", "pass"]
        );
        assert!(words("the a of").is_empty());
    }

    /// Non-ASCII words are lower-cased by Unicode's rules, whole or in camelCase parts,
    /// in content words and raw (rule keyword) words alike.
    #[test]
    fn non_ascii_words_read_alike_in_any_case() {
        let raws = |t: &str| {
            let mut v = Vec::new();
            scan_words(t, true, |h| v.push(h), |_, _, _| {});
            v
        };
        for (a, b) in [
            ("ÜBERWEISUNG Prüfen", "überweisung prüfen"),
            ("ΟΔΟΣ Και", "οδος και"),
            ("ПРОВЕРКА безопасности", "пРоВеРкА БЕЗОПАСНОСТИ"),
            ("getÜbersicht", "getübersicht"),
        ] {
            assert_eq!(words(a), words(b), "{a} / {b}");
            assert_eq!(raws(a), raws(b), "{a} / {b}");
        }
        // camelCase parts are lower-cased as whole words are (the split is at an ASCII
        // capital after an ASCII lower-case letter).
        assert_eq!(words("getÜbersichtData"), words("getübersicht data"));
        assert_eq!(words("ÜBERWEISUNG"), vec!["überweisung"]);
        let mut raws = Vec::new();
        for_each_raw_word("ÜBER-weisung", |h| raws.push(h));
        assert_eq!(
            raws,
            [raw_hash_of("über".as_bytes()), raw_hash_of(b"weisung")]
        );
    }

    /// The same text in another case scores the same, on both scorers.
    #[test]
    fn non_ascii_descriptions_match_in_any_case() {
        let agents = vec![
            AgentProfile::new("bank", "Überweisung prüfen und Zahlungen buchen"),
            AgentProfile::new("road", "Straßen und Wege planen"),
        ];
        let idx = TextIndex::build(&agents, TextConfig::default());
        let mut general = idx.clone();
        general.small = false;
        for ix in [&idx, &general] {
            let lower = score_all(ix, "überweisung prüfen", 0.0);
            let upper = score_all(ix, "ÜBERWEISUNG PRÜFEN", 0.0);
            assert!(lower.0[0] > 0.3, "{:?}", lower.0);
            assert_eq!(lower.0, upper.0);
            assert_eq!(lower.3, upper.3, "raw words");
        }
    }

    #[test]
    fn word_bytes8_agrees_with_the_lower_table_on_every_byte_and_lane() {
        for b in 0..=255u8 {
            for lane in 0..8 {
                let x = u64::from(b) << (lane * 8);
                let want = if LOWER[usize::from(b)] != 0 {
                    0x80u64 << (lane * 8)
                } else {
                    0
                };
                // The other lanes hold 0, a separator.
                assert_eq!(word_bytes8(x), want, "byte {b:#04x} in lane {lane}");
            }
        }
        // Neighbours do not leak into each other (no carries between lanes).
        let mixed = u64::from_le_bytes(*b"a Z9_\xff@{");
        assert_eq!(
            word_bytes8(mixed),
            u64::from_le_bytes([0x80, 0, 0x80, 0x80, 0, 0x80, 0, 0])
        );
    }

    #[test]
    fn load_le_equals_a_zero_padded_copy() {
        let bytes = b"abcdefghij";
        for n in 0..=8 {
            let mut buf = [0u8; 8];
            buf[..n].copy_from_slice(&bytes[..n]);
            assert_eq!(load_le(&bytes[..n]), u64::from_le_bytes(buf), "{n}");
        }
    }

    #[test]
    fn add_row_equals_the_element_wise_loop() {
        let mut rng = 11u64;
        for len in 0..40 {
            let row: Vec<f32> = (0..len)
                .map(|_| (splitmix(&mut rng) % 1000) as f32 / 7.0)
                .collect();
            let start: Vec<f32> = (0..len)
                .map(|_| (splitmix(&mut rng) % 1000) as f32 / 3.0)
                .collect();
            let w = (splitmix(&mut rng) % 100) as f32 / 9.0;
            let mut want = start.clone();
            for (x, r) in want.iter_mut().zip(&row) {
                *x += w * r;
            }
            let mut got = start;
            add_row(&mut got, &row, w);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{len}");
        }
    }

    #[test]
    fn only_number_like_words_fold() {
        for w in ["8", "00", "2023", "3pm", "ca1234"] {
            assert!(is_number_like(w.as_bytes()), "{w}");
        }
        for w in ["s3", "ec2", "k8s", "gpt4", "alarm"] {
            assert!(!is_number_like(w.as_bytes()), "{w}");
        }
    }

    #[test]
    fn features_include_bigrams_prefixes_and_char_ngrams() {
        let mut cfg = TextConfig {
            verb_pairs: 0,
            ..TextConfig::default()
        };
        let mut out = Vec::new();
        features("cancel alarm", &cfg, &mut out);
        // 2 words, 1 bigram, 2 prefixes ("canc", "alar").
        assert_eq!(out.len(), 5);
        cfg.prefix_len = 5;
        out.clear();
        features("cancel alarm", &cfg, &mut out);
        // At length 5 only "cancel" is longer than the prefix ("cance").
        assert_eq!(out.len(), 4);
        cfg.char_min = 3;
        cfg.char_max = 3;
        out.clear();
        features("ab", &cfg, &mut out);
        // "ab": word, "^ab" ... n_all = 4, so 2 trigrams.
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn verb_pairs_tag_the_first_word_and_pair_it_with_the_next_ones() {
        let feats = |text: &str, verb_pairs: u8| {
            let cfg = TextConfig {
                verb_pairs,
                bigrams: false,
                prefix_len: 0,
                ..TextConfig::default()
            };
            let mut out = Vec::new();
            features(text, &cfg, &mut out);
            out
        };
        // 3 content words: with verb_pairs = 3, a tagged "change" and change×weekend,
        // change×alarm; "weekend" and "alarm" are not adjacent to "change", so the
        // bigrams (off here) would not pair them.
        let text = "Change the weekend alarm";
        assert_eq!(feats(text, 0).len(), 3);
        let on = feats(text, 3);
        assert_eq!(on.len(), 6);
        // Only the first `verb_pairs` words take part.
        assert_eq!(feats(text, 2).len(), 5);
        // The pairs depend on the verb: "set" shares the plain words, not the pairs.
        let set = feats("Set the weekend alarm", 3);
        let shared = on.iter().filter(|h| set.contains(h)).count();
        assert_eq!(shared, 2, "weekend and alarm only");
    }

    #[test]
    fn description_vectors_pair_the_description_verb_not_the_id() {
        let mut agents: Vec<AgentProfile> = (0..70)
            .map(|i| AgentProfile::new(format!("filler_{i}"), format!("filler task number{i}")))
            .collect();
        agents.push(AgentProfile::new(
            "clock_alarm_change",
            "Change the weekend alarm",
        ));
        let idx = TextIndex::build(&agents, TextConfig::default());
        let pair =
            |verb: &[u8], object: &[u8]| mix(word_hash(verb) ^ TAG_VERB_PAIR, word_hash(object));
        let holds = |h: u64| {
            idx.lookup(h).is_some_and(|slot| {
                let start = slot.start as usize;
                idx.postings[start..start + slot.len as usize]
                    .iter()
                    .any(|p| p.agent == 70 && p.weight > 0.0)
            })
        };
        assert!(holds(pair(b"change", b"alarm")));
        assert!(holds(mix(word_hash(b"change"), TAG_FIRST)));
        assert!(!holds(pair(b"clock", b"alarm")), "the id is not a verb");
    }

    #[test]
    fn verb_pairs_separate_agents_that_share_their_words() {
        // 70 agents (past the dense-row size, where verb pairs apply); two alarm agents
        // whose examples use the same nouns with different verbs.
        let mut agents: Vec<AgentProfile> = (0..68)
            .map(|i| AgentProfile::new(format!("filler_{i}"), format!("filler task number{i}")))
            .collect();
        agents.push(
            AgentProfile::new("clock_alarm_set", "Alarm clock")
                .with_example("Set the morning alarm for workdays")
                .with_example("Set a new alarm for the weekend")
                .with_example("Set the alarm for tomorrow"),
        );
        agents.push(
            AgentProfile::new("clock_alarm_change", "Alarm clock")
                .with_example("Change the morning alarm for workdays")
                .with_example("Change the weekend alarm time")
                .with_example("Change the alarm for tomorrow"),
        );
        let score = |verb_pairs: u8| {
            let cfg = TextConfig {
                verb_pairs,
                epochs: 0,
                ..TextConfig::default()
            };
            let idx = TextIndex::build(&agents, cfg);
            let mut s = vec![0.0f32; agents.len()];
            idx.score(
                "Change the workday morning alarm",
                false,
                0.0,
                |_| {},
                |a, v| s[a] = v,
            );
            s[69] - s[68]
        };
        assert!(score(7) > score(0), "{} vs {}", score(7), score(0));
        assert!(score(7) > 0.0);
    }

    #[test]
    fn small_catalogues_skip_verb_pairs() {
        let agents = vec![
            AgentProfile::new("a", "first agent").with_example("Change the alarm"),
            AgentProfile::new("b", "second agent").with_example("Set the alarm"),
        ];
        let on = TextIndex::build(&agents, TextConfig::default());
        let off = TextIndex::build(
            &agents,
            TextConfig {
                verb_pairs: 0,
                ..TextConfig::default()
            },
        );
        assert_eq!(on.cfg.verb_pairs, 0);
        let (mut x, mut y) = ([0.0f32; 2], [0.0f32; 2]);
        on.score("change my alarm", false, 0.0, |_| {}, |a, v| x[a] = v);
        off.score("change my alarm", false, 0.0, |_| {}, |a, v| y[a] = v);
        assert_eq!(x, y);
    }

    #[test]
    fn index_scores_the_matching_agent_highest() {
        let agents = vec![
            AgentProfile::new("clock_alarm_cancel", "Cancel an alarm")
                .with_example("turn off my 7am alarm"),
            AgentProfile::new("flight_search", "Search for flights between cities"),
            AgentProfile::new("weather", "Weather forecast for a city"),
        ];
        let idx = TextIndex::build(&agents, TextConfig::default());
        let mut scores = vec![0.0f32; 3];
        idx.score(
            "cancel the alarm for tomorrow",
            false,
            0.0,
            |_| {},
            |a, s| scores[a] = s,
        );
        assert!(scores[0] > 0.2, "{scores:?}");
        assert_eq!(scores[1], 0.0);
        let mut scores = vec![0.0f32; 3];
        idx.score(
            "find flights from Paris to Rome",
            false,
            0.0,
            |_| {},
            |a, s| scores[a] = s,
        );
        assert!(scores[1] > 0.1, "{scores:?}");
        assert_eq!(scores[0], 0.0);
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
        let text = "Cancel the ALARM";
        let words = idx.query_words(text);
        let mut out = String::new();
        assert_eq!(idx.write_matched_words(&words, text, 0, 3, &mut out), 2);
        assert_eq!(out, "\"cancel\", \"alarm\"");
        out.clear();
        assert_eq!(idx.write_matched_words(&words, text, 1, 3, &mut out), 0);
        assert!(out.is_empty());
        assert!(idx.has_examples(0));
        assert!(!idx.has_examples(1));
    }

    /// Everything [`TextIndex::score_into`] reports for `text`: the similarity of every
    /// agent (0 when not reported), the best similarity, the unigram spans and the raw
    /// word hashes.
    type Scored = (Vec<f32>, f32, Vec<(u64, u32, u32)>, Vec<u64>);

    fn score_all(idx: &TextIndex, text: &str, min_score: f32) -> Scored {
        let mut sims = vec![0.0f32; idx.n_agents];
        let mut raws = Vec::new();
        let mut words = QueryWords::default();
        let best = idx.score_into(
            text,
            true,
            min_score,
            |_| false,
            &mut words,
            |h| raws.push(h),
            |a, v| sims[a] = v,
        );
        (sims, best, words.spans[..words.len].to_vec(), raws)
    }

    /// The shipped 16-agent catalogue's index, and the same index with the
    /// small-catalogue scorer switched off (the general path).
    fn shipped_indexes() -> (TextIndex, TextIndex) {
        let reg = crate::AgentRegistry::from_toml_str(include_str!("../../../config/agents.toml"))
            .unwrap();
        let idx = TextIndex::build(reg.as_slice(), TextConfig::default());
        assert!(idx.small);
        let mut general = idx.clone();
        general.small = false;
        (idx, general)
    }

    #[test]
    fn small_catalogue_scorer_equals_the_general_path() {
        let (idx, general) = shipped_indexes();
        let long: String = (0..40).map(|i| format!("word{i}x ")).collect();
        for text in [
            "Build the REST API for orders (part 0)",
            "Deploy the API to production",
            "deployApi now and fetchUserData; getHTTPResponse",
            "Write unit tests for the billing module",
            "",
            "  --  ",
            "the a of an",
            "averyveryveryverylongwordthatgoesbeyondthirtytwobytes ünïcode wörds",
            "8:00 2023-01-02 CA1234 s3 gpt4 The END",
            "Analyse the results of the A/B test; analyse the results again",
            long.as_str(),
        ] {
            // Twice: the second call reads the words outside the vocabulary from the memo.
            for _ in 0..2 {
                assert_eq!(
                    score_all(&idx, text, 0.0),
                    score_all(&general, text, 0.0),
                    "{text:?}"
                );
                assert_eq!(
                    score_all(&idx, text, 0.2),
                    score_all(&general, text, 0.2),
                    "{text:?}"
                );
            }
        }
        // The long text has more distinct features than the small scorer keeps: it
        // falls back to the general path and still gives its result.
        assert!(score_all(&idx, &long, 0.0).1 >= 0.0);
    }

    #[test]
    fn word_memo_is_per_index() {
        // Two indexes on one thread, alternating: a word outside both vocabularies is
        // resolved against each index separately.
        let a = TextIndex::build(
            &[
                AgentProfile::new("alarm", "Cancel an alarm"),
                AgentProfile::new("weather", "Weather forecast"),
            ],
            TextConfig::default(),
        );
        let b = TextIndex::build(
            &[
                AgentProfile::new("zebra", "Feeds the zebra"),
                AgentProfile::new("flight", "Search flights"),
            ],
            TextConfig::default(),
        );
        let (mut ga, mut gb) = (a.clone(), b.clone());
        ga.small = false;
        gb.small = false;
        for text in ["cancel zebras", "zebras and alarms today", "today"] {
            for _ in 0..2 {
                assert_eq!(
                    score_all(&a, text, 0.0),
                    score_all(&ga, text, 0.0),
                    "{text}"
                );
                assert_eq!(
                    score_all(&b, text, 0.0),
                    score_all(&gb, text, 0.0),
                    "{text}"
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn small_catalogue_scorer_equals_the_general_path_on_any_text(
            words in proptest::collection::vec(
                proptest::prop_oneof![
                    // Catalogue words (in the vocabulary), in any case.
                    "(api|API|Deploy|deploy|tests|Test|billing|campaign|SQL|invoices|the|for|design|Design|security|audit|pipeline|CI/CD|metrics|requirements)",
                    // Anything else: unknown words, numbers, camelCase, punctuation.
                    "[a-zA-Z0-9_./é-]{1,12}",
                ],
                0..24,
            ),
            sep in "[ ,;()]{1,2}",
        ) {
            let (idx, general) = shipped_indexes();
            let text = words.join(&sep);
            proptest::prop_assert_eq!(score_all(&idx, &text, 0.0), score_all(&general, &text, 0.0));
            proptest::prop_assert_eq!(score_all(&idx, &text, 0.0), score_all(&general, &text, 0.0));
        }
    }
    /// Adversarial non-ASCII inputs (review R7: characters whose lower case is longer,
    /// or ASCII, stacked combining marks, long words, camelCase with non-ASCII) agree on
    /// every path (small scorer and general, vocabulary or none), without panics.
    #[test]
    fn adversarial_non_ascii_text_agrees_on_every_path() {
        let (idx, general) = shipped_indexes();
        let long_cyr = "ПРОВЕРКАБЕЗОПАСНОСТИПРОВЕРКАБЕЗОПАСНОСТИ";
        let texts: Vec<String> = vec![
            "İSTANBUL deploy İ İİİİİİİİİİİİİİİİİİİİİİİİİİİİİİİİİ".into(),
            "\u{212A}EY API \u{212A}ubernetes deploy\u{212A}ey".into(),
            "e\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}x".into(),
            format!("{long_cyr} {} deploy", long_cyr.to_lowercase()),
            "getÜbersichtData fetchİSTANBULData apiİ deployİx aİB".into(),
            "Ⱥ ⱥ ȺȺȺȺȺȺȺȺȺȺȺȺȺȺȺȺȺȺȺȺȺ ẞtraße STRASSE".into(),
            "aaaaaaaaaaaaaaaİ aaaaaaaaaaaaaaaaİ aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaİ".into(),
            "testsİ İtests ΣΑΣ σας Deployς".into(),
            "\u{feff}deploy\u{200b}api \u{0130}\u{0307}".into(),
        ];
        for text in &texts {
            for _ in 0..2 {
                assert_eq!(
                    score_all(&idx, text, 0.0),
                    score_all(&general, text, 0.0),
                    "{text:?}"
                );
            }
            let vocab = Vocab::build(
                [text.as_str(), "deploy api tests key"].into_iter(),
                &TextConfig::default(),
            );
            assert_eq!(analyse(text, Some(&vocab)), analyse(text, None), "{text:?}");
            let mut n = 0;
            for_each_raw_word(text, |_| n += 1);
            let _ = words(text);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn any_unicode_text_agrees_on_every_path_and_ignores_case_in_raw_words(text in "\\PC{0,40}", w in "[\\p{Lu}\\p{Ll}\\p{M}a-zA-Z]{1,40}") {
            let (idx, general) = shipped_indexes();
            for t in [text.as_str(), w.as_str()] {
                proptest::prop_assert_eq!(score_all(&idx, t, 0.0), score_all(&general, t, 0.0));
                let vocab = Vocab::build([t, "deploy api tests"].into_iter(), &TextConfig::default());
                proptest::prop_assert_eq!(analyse(t, Some(&vocab)), analyse(t, None));
                // Raw words (rule keywords) ignore case: any text reads as its lower-case form.
                let raws = |t: &str| { let mut v = Vec::new(); for_each_raw_word(t, |h| v.push(h)); v };
                proptest::prop_assert_eq!(raws(t), raws(&t.to_lowercase()), "{:?}", t);
                proptest::prop_assert_eq!(score_all(&general, t, 0.0).3, raws(t), "{:?}", t);
            }
        }
    }
}
