//! Hashed features over normalised text: character 3-, 4- and 5-grams (bytes), word
//! unigrams and bigrams, and obfuscation signals. Hashes are computed incrementally per
//! position (no allocation per n-gram) and mapped to one of [`BUCKETS`] weights.

use crate::normalize::NormalizeStats;

/// log2 of the number of weight buckets.
pub(crate) const BUCKET_BITS: u32 = 18;
/// Number of weight buckets.
pub(crate) const BUCKETS: usize = 1 << BUCKET_BITS;
/// Feature values are `count / sqrt(max(n, MIN_NORM))` for a text with `n` features: texts
/// shorter than about 175 characters get proportionally smaller values, so a few words of a
/// short request cannot outweigh the intercept on their own.
pub(crate) const MIN_NORM: usize = 600;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// What a feature was computed from, for explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Span {
    /// A byte n-gram at `start..end` of the normalised text.
    Chars(usize, usize),
    /// A word or word bigram at `start..end` of the normalised text.
    Words(usize, usize),
    /// A named signal.
    Signal(&'static str),
}

#[inline]
fn bucket(h: u64) -> u32 {
    let h = (h ^ (h >> 29)).wrapping_mul(GOLDEN);
    (h >> (64 - BUCKET_BITS)) as u32
}

#[inline]
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || b == b'\''
}

/// Obfuscation signals worth a learned weight each.
pub(crate) fn signals(stats: &NormalizeStats, padding: bool) -> impl Iterator<Item = &'static str> {
    [
        (stats.invisible_chars > 0, "signal:invisible_chars"),
        (stats.confusables > 2, "signal:confusables"),
        (stats.leet_words > 1, "signal:leetspeak"),
        (stats.spaced_runs > 0, "signal:spaced_letters"),
        (stats.decoded_payloads > 0, "signal:encoded_payload"),
        (padding, "signal:padding_flood"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
}

fn hash_str(s: &str) -> u64 {
    s.bytes().fold(FNV_OFFSET ^ 0x5151, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// Calls `f(bucket, span)` for every feature of `text` plus the given signals. Returns the
/// number of features emitted.
pub(crate) fn for_each_feature(
    text: &str,
    signals: impl Iterator<Item = &'static str>,
    mut f: impl FnMut(u32, Span),
) -> usize {
    let b = text.as_bytes();
    let n = b.len();
    let mut count = 0;
    // Character n-grams, n = 3..=5: a 64-bit window holds the last five bytes, so each
    // n-gram ending at `i` is the window masked to n bytes, hashed with one multiply.
    let mut window: u64 = 0;
    for (i, &byte) in b.iter().enumerate() {
        window = (window << 8) | u64::from(byte);
        if i >= 2 {
            f(
                bucket((window & 0xff_ffff) ^ (3 << 56)),
                Span::Chars(i - 2, i + 1),
            );
            count += 1;
        }
        if i >= 3 {
            f(
                bucket((window & 0xffff_ffff) ^ (4 << 56)),
                Span::Chars(i - 3, i + 1),
            );
            count += 1;
        }
        if i >= 4 {
            f(
                bucket((window & 0xff_ffff_ffff) ^ (5 << 56)),
                Span::Chars(i - 4, i + 1),
            );
            count += 1;
        }
    }
    // Word unigrams and bigrams.
    let mut prev: Option<(u64, usize)> = None;
    let mut i = 0;
    while i < n {
        if !is_word_byte(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let mut h = FNV_OFFSET ^ 0x77;
        while i < n && is_word_byte(b[i]) {
            h = (h ^ u64::from(b[i])).wrapping_mul(FNV_PRIME);
            i += 1;
        }
        f(bucket(h ^ 0x1111), Span::Words(start, i));
        count += 1;
        if let Some((ph, pstart)) = prev {
            f(
                bucket(ph.rotate_left(17) ^ h ^ 0x2222),
                Span::Words(pstart, i),
            );
            count += 1;
        }
        prev = Some((h, start));
    }
    for name in signals {
        f(bucket(hash_str(name)), Span::Signal(name));
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(text: &str) -> Vec<(u32, Span)> {
        let mut out = Vec::new();
        let n = for_each_feature(text, std::iter::empty(), |b, s| out.push((b, s)));
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn counts_char_ngrams_words_and_bigrams() {
        // "ab cd": 5 bytes -> 3-grams: 3, 4-grams: 2, 5-grams: 1; words 2; bigrams 1.
        let f = features("ab cd");
        assert_eq!(f.len(), 3 + 2 + 1 + 2 + 1);
        assert!(f.contains(&(f[f.len() - 1].0, Span::Words(0, 5))));
        assert!(f.iter().all(|(b, _)| (*b as usize) < BUCKETS));
    }

    #[test]
    fn hashing_is_deterministic_and_position_independent() {
        let a = features("ignore");
        let b = features("xx ignore");
        let word_a = a.iter().find(|(_, s)| *s == Span::Words(0, 6)).unwrap().0;
        let word_b = b.iter().find(|(_, s)| *s == Span::Words(3, 9)).unwrap().0;
        assert_eq!(word_a, word_b);
        assert_eq!(features("ignore"), a);
    }

    #[test]
    fn signals_are_emitted() {
        let stats = NormalizeStats {
            leet_words: 3,
            ..NormalizeStats::default()
        };
        let names: Vec<_> = signals(&stats, true).collect();
        assert_eq!(names, ["signal:leetspeak", "signal:padding_flood"]);
        let mut seen = Vec::new();
        for_each_feature("", signals(&stats, false), |_, s| seen.push(s));
        assert_eq!(seen, [Span::Signal("signal:leetspeak")]);
    }

    #[test]
    fn empty_text_has_no_features() {
        assert!(features("").is_empty());
    }
}
