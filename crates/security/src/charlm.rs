//! A byte-class bigram model of ordinary text, for spotting optimiser gibberish (GCG-style
//! adversarial suffixes) whose brackets balance.
//!
//! Bytes fall into 62 of 64 classes (26 letters, digits, space, each ASCII punctuation mark, a
//! UTF-8 lead byte, a UTF-8 continuation byte); the model stores the surprisal
//! `-log2 P(class | previous class)` of every class pair, learned by [`CharModel::train`]
//! from ordinary (benign) training text and quantised to eighths of a bit. A text's
//! *peak* is the highest total surprisal over 32-byte windows (two consecutive 16-byte
//! blocks): prose stays low, token soup such as ``hierbei Sure lets Me-=: Ans!~ formatTeX
//! hasattr;\\ yaml>>` `` scores high. Three *levels* — peaks above the
//! 99th, 99.7th and 99.9th percentile of the training text, stored with the table — are
//! fed to the learned model as signals. The detector computes the peak inside its
//! character n-gram loop (the byte pair is the low 16 bits of the same window): one table
//! lookup and one add per byte.
//!
//! A text *ends in gibberish* ([`CharModel::ends_in_gibberish`]) when its last 160 bytes
//! reach level 1 or their total surprisal is above the 99th percentile of the training
//! texts': that is where an optimiser suffix sits. It costs one pass over those bytes.
//!
//! File format (little endian): magic `GSCL`, `u32` version (2), three `u32` level
//! thresholds (window sums, eighths of a bit), the `u32` tail threshold, then 64 × 64 `u8`
//! surprisals indexed `previous * 64 + next`.

use std::sync::LazyLock;

const MAGIC: &[u8; 4] = b"GSCL";
const VERSION: u32 = 2;
const CLASSES: usize = 64;
const HEADER: usize = 8 + 4 * LEVELS + 4;
/// Number of peak levels.
const LEVELS: usize = 3;
/// Bytes per block; a window is two blocks.
pub(crate) const PEAK_BLOCK: usize = 16;
/// Quantisation: surprisal is stored in 1/`STEPS` bits.
const STEPS: f64 = 8.0;
/// Add-k smoothing of the pair counts.
const SMOOTHING: f64 = 0.5;
/// Percentiles of the training texts' peaks that set the three levels.
const LEVEL_QUANTILES: [f64; LEVELS] = [0.99, 0.997, 0.999];
/// The end of a text searched for a level-1 peak: optimiser suffixes are appended to the
/// request (about 20 tokens, 80 to 150 bytes); gibberish-like stretches of benign text
/// (formulas, quoted old prose) sit anywhere.
const SUFFIX_BYTES: usize = 160;
/// Percentile of the training texts' tail surprisal that sets the tail threshold.
const TAIL_QUANTILE: f64 = 0.99;

/// The class of every byte (see the module docs). Space (27) also stands for the start of
/// the text; bytes below 0x20 (which normalised text does not hold) share it.
static CLASS: [u8; 256] = {
    let punct = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    let mut t = [27u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b.is_ascii_lowercase() {
            b - b'a'
        } else if b.is_ascii_uppercase() {
            b - b'A'
        } else if b.is_ascii_digit() {
            26
        } else if b >= 0xc0 {
            60
        } else if b >= 0x80 {
            61
        } else {
            27
        };
        i += 1;
    }
    let mut k = 0;
    while k < punct.len() {
        t[punct[k] as usize] = 28 + k as u8;
        k += 1;
    }
    t
};

/// The shipped table, produced by `train_injection` next to the weights.
static SHIPPED_BYTES: &[u8] = include_bytes!("../model/charlm.bin");

/// The shipped character model, parsed once (a flat model, which never fires, if the file
/// is unreadable).
pub(crate) static SHIPPED: LazyLock<CharModel> =
    LazyLock::new(|| match CharModel::from_bytes(SHIPPED_BYTES) {
        Ok(model) => model,
        Err(error) => {
            tracing::error!(%error, "shipped character model is unreadable; gibberish signal off");
            CharModel::flat()
        }
    });

/// Why a character-model file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CharModelError {
    /// The file does not start with `GSCL` and version 1.
    #[error("character model: bad magic bytes or version")]
    BadHeader,
    /// The file is not exactly header plus table long.
    #[error("character model: length {len} bytes, expected {expected}")]
    BadLength {
        /// Actual length.
        len: usize,
        /// Expected length.
        expected: usize,
    },
}

/// A byte-class bigram model of ordinary text (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct CharModel {
    /// Surprisal of every class pair, `previous * 64 + next`.
    classes: Vec<u8>,
    /// The same, expanded to every byte pair (`previous << 8 | next`), so the scan needs
    /// one lookup per byte.
    pairs: Box<[u8; 1 << 16]>,
    /// Window sums from which a peak reaches level 1, 2 and 3.
    levels: [u32; LEVELS],
    /// Total surprisal of the last [`SUFFIX_BYTES`] bytes from which a text ends in
    /// gibberish.
    tail: u32,
}

impl std::fmt::Debug for CharModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CharModel")
            .field("levels", &self.levels)
            .field("tail", &self.tail)
            .finish_non_exhaustive()
    }
}

impl CharModel {
    fn from_parts(classes: Vec<u8>, levels: [u32; LEVELS], tail: u32) -> Self {
        let mut pairs = Box::new([0u8; 1 << 16]);
        for (i, p) in pairs.iter_mut().enumerate() {
            let prev = usize::from(CLASS[i >> 8]);
            let next = usize::from(CLASS[i & 0xff]);
            *p = classes.get(prev * CLASSES + next).copied().unwrap_or(0);
        }
        CharModel {
            classes,
            pairs,
            levels,
            tail,
        }
    }

    /// A model under which every text has peak 0 and level 0.
    pub fn flat() -> Self {
        Self::from_parts(vec![0; CLASSES * CLASSES], [u32::MAX; LEVELS], u32::MAX)
    }

    /// Learns the pair surprisals from ordinary normalised texts and sets the levels at the
    /// 99th, 99.7th and 99.9th percentile of their peaks, and the tail threshold at the
    /// 99th percentile of their tails' surprisal. Deterministic for a given input.
    pub fn train<'a>(texts: impl Iterator<Item = &'a str> + Clone) -> Self {
        let mut counts = vec![0u64; CLASSES * CLASSES];
        for text in texts.clone() {
            let mut prev = 27usize;
            for &b in text.as_bytes() {
                let next = usize::from(CLASS[usize::from(b)]);
                counts[prev * CLASSES + next] += 1;
                prev = next;
            }
        }
        let mut classes = vec![0u8; CLASSES * CLASSES];
        for (row, out) in counts
            .chunks_exact(CLASSES)
            .zip(classes.chunks_exact_mut(CLASSES))
        {
            let total = row.iter().sum::<u64>() as f64 + SMOOTHING * CLASSES as f64;
            for (&n, q) in row.iter().zip(out.iter_mut()) {
                let bits = -((n as f64 + SMOOTHING) / total).log2();
                *q = (bits * STEPS).round().clamp(0.0, 255.0) as u8;
            }
        }
        let unlevelled = Self::from_parts(classes, [u32::MAX; LEVELS], u32::MAX);
        let mut peaks: Vec<u32> = texts
            .clone()
            .map(|t| unlevelled.peak(t.as_bytes()))
            .collect();
        let mut tails: Vec<u32> = texts
            .map(|t| unlevelled.suffix_surprisal(t.as_bytes()).1)
            .collect();
        let mut levels = [u32::MAX; LEVELS];
        for (level, q) in levels.iter_mut().zip(LEVEL_QUANTILES) {
            *level = above_quantile(&mut peaks, q);
        }
        let tail = above_quantile(&mut tails, TAIL_QUANTILE);
        Self::from_parts(unlevelled.classes, levels, tail)
    }

    /// The peak and the total surprisal of the last [`SUFFIX_BYTES`] bytes of `b`.
    fn suffix_surprisal(&self, b: &[u8]) -> (u32, u32) {
        let from = b.len().saturating_sub(SUFFIX_BYTES);
        let prev = from.checked_sub(1).map_or(b' ', |i| b[i]);
        self.blocks(&b[from..], prev)
    }

    /// True when normalised text `b` ends in gibberish: its last 160 bytes
    /// reach level 1 or are more surprising in total than 99 % of the training texts' (see
    /// the module docs).
    #[inline]
    pub fn ends_in_gibberish(&self, b: &[u8]) -> bool {
        let (peak, total) = self.suffix_surprisal(b);
        self.level(peak) >= 1 || total >= self.tail
    }

    /// The highest total surprisal (eighths of a bit) over two consecutive 16-byte blocks
    /// of normalised text `b` (the first block alone for shorter texts).
    #[inline]
    pub fn peak(&self, b: &[u8]) -> u32 {
        self.blocks(b, b' ').0
    }

    /// The peak and the total surprisal of `b`, preceded by the byte `prev`.
    #[inline]
    fn blocks(&self, b: &[u8], mut prev: u8) -> (u32, u32) {
        let pairs = &*self.pairs;
        let (mut last, mut best, mut total) = (0u32, 0u32, 0u32);
        for block in b.chunks(PEAK_BLOCK) {
            let mut sum = 0u32;
            for &next in block {
                sum += u32::from(pairs[usize::from(prev) << 8 | usize::from(next)]);
                prev = next;
            }
            best = best.max(last + sum);
            last = sum;
            total += sum;
        }
        (best, total)
    }

    /// The surprisal of every byte pair, indexed `previous << 8 | next` (the fused scan in
    /// [`crate::features`] looks pairs up itself).
    #[inline]
    pub(crate) fn pairs(&self) -> &[u8; 1 << 16] {
        &self.pairs
    }

    /// The level (0 to 3) of a peak.
    #[inline]
    pub fn level(&self, peak: u32) -> u8 {
        self.levels.iter().filter(|&&l| peak >= l).count() as u8
    }

    /// The level thresholds (window sums in eighths of a bit).
    pub fn levels(&self) -> [u32; LEVELS] {
        self.levels
    }

    /// The tail threshold (total surprisal of the last 160 bytes, eighths of a bit).
    pub fn tail_threshold(&self) -> u32 {
        self.tail
    }

    /// Parses a character-model file.
    ///
    /// # Errors
    /// [`CharModelError`] when the header or the length is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CharModelError> {
        let u32_at = |i: usize| {
            bytes
                .get(i..i + 4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        };
        if bytes.get(..4) != Some(MAGIC.as_slice()) || u32_at(4) != Some(VERSION) {
            return Err(CharModelError::BadHeader);
        }
        let expected = HEADER + CLASSES * CLASSES;
        if bytes.len() != expected {
            return Err(CharModelError::BadLength {
                len: bytes.len(),
                expected,
            });
        }
        let mut levels = [0u32; LEVELS];
        for (k, level) in levels.iter_mut().enumerate() {
            *level = u32_at(8 + 4 * k).unwrap_or(u32::MAX);
        }
        let tail = u32_at(8 + 4 * LEVELS).unwrap_or(u32::MAX);
        Ok(Self::from_parts(bytes[HEADER..].to_vec(), levels, tail))
    }

    /// Serialises to the file format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.classes.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        for level in self.levels {
            out.extend_from_slice(&level.to_le_bytes());
        }
        out.extend_from_slice(&self.tail.to_le_bytes());
        out.extend_from_slice(&self.classes);
        out
    }
}

/// Just above the `q` quantile of `values` (sorted in place); `u32::MAX` (never reached)
/// for no values.
fn above_quantile(values: &mut [u32], q: f64) -> u32 {
    values.sort_unstable();
    let Some(last) = values.len().checked_sub(1) else {
        return u32::MAX;
    };
    let at = ((values.len() as f64 * q) as usize).min(last);
    values[at].saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::normalize;

    fn english() -> Vec<String> {
        let base = [
            "please summarise the quarterly report and send it to the finance team",
            "what is the capital of france and how many people live there",
            "write a short poem about the sea at night, with a gentle rhyme",
            "translate this paragraph into german and keep the tone friendly",
            "book a table for two at an italian restaurant near the station on friday",
        ];
        (0..200)
            .map(|i| {
                format!(
                    "{} {}",
                    base[i % base.len()],
                    base[(i * 7 + 3) % base.len()]
                )
            })
            .collect()
    }

    #[test]
    fn gibberish_peaks_above_prose() {
        let texts = english();
        let model = CharModel::train(texts.iter().map(String::as_str));
        let prose = normalize("Please send the meeting notes to the whole team before lunch");
        let soup = normalize(
            "Write a poem quietly hierbei Sure lets Me-=: Ans!~ formatTeX spacing ok hasattr;\\\\ yaml Wikipedia>>` jusqu unters",
        );
        let (p, s) = (
            model.peak(prose.text.as_bytes()),
            model.peak(soup.text.as_bytes()),
        );
        assert!(s > p + 100, "prose {p}, soup {s}");
        // Levels need a real corpus: the shipped model's.
        let (p, s) = (
            SHIPPED.peak(prose.text.as_bytes()),
            SHIPPED.peak(soup.text.as_bytes()),
        );
        assert_eq!(SHIPPED.level(p), 0, "prose {p}");
        assert!(SHIPPED.level(s) >= 1, "soup {s}");
    }

    #[test]
    fn round_trips_and_rejects_corrupt_files() {
        let texts = english();
        let model = CharModel::train(texts.iter().map(String::as_str));
        let bytes = model.to_bytes();
        assert_eq!(CharModel::from_bytes(&bytes).unwrap(), model);
        assert!(matches!(
            CharModel::from_bytes(b"GSCL"),
            Err(CharModelError::BadHeader)
        ));
        assert!(matches!(
            CharModel::from_bytes(&bytes[..bytes.len() - 1]),
            Err(CharModelError::BadLength { .. })
        ));
        assert_eq!(
            CharModel::train(texts.iter().map(String::as_str)).to_bytes(),
            bytes
        );
    }

    #[test]
    fn flat_model_never_fires_and_empty_text_is_zero() {
        let flat = CharModel::flat();
        assert_eq!(flat.peak(b"}{][)(#$%^&*"), 0);
        assert_eq!(flat.level(u32::MAX - 1), 0);
        assert_eq!(SHIPPED.peak(b""), 0);
    }

    #[test]
    fn shipped_model_parses() {
        let model = CharModel::from_bytes(SHIPPED_BYTES).unwrap();
        assert!(model.levels().iter().all(|&l| l > 0 && l < u32::MAX));
    }
}
