//! The learned layer: a logistic-regression model over hashed features, stored as
//! quantised `i16` weights in one flat array.
//!
//! File format (little endian): magic `GSIJ`, `u32` version (2), `u32` bucket bits, `f32`
//! scale, `f32` bias, then `2^bits` `i16` weights; a weight is `q * scale`. The logit of a
//! text with `n` features is `bias + Σ w / sqrt(n)`.

use std::sync::LazyLock;

use crate::features::{BUCKET_BITS, BUCKETS, Table};

const MAGIC: &[u8; 4] = b"GSIJ";
/// Version 2: character n-grams are hashed multiplicatively (version 1 weights, trained
/// with the xor-shift hash, are rejected rather than silently misread).
const VERSION: u32 = 2;
const HEADER: usize = 20;

/// The shipped weights, produced by `cargo run --release -p genesis-security --example
/// train_injection`.
static SHIPPED_BYTES: &[u8] = include_bytes!("../model/injection.bin");

/// The shipped model, parsed once.
pub(crate) static SHIPPED: LazyLock<LinearModel> =
    LazyLock::new(|| match LinearModel::from_bytes(SHIPPED_BYTES) {
        Ok(model) => model,
        Err(error) => {
            tracing::error!(%error, "shipped injection model is unreadable; using rules only");
            LinearModel::zero()
        }
    });

/// Why a weights file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The file does not start with `GSIJ`.
    #[error("injection model: bad magic bytes")]
    BadMagic,
    /// Unsupported version or bucket count.
    #[error("injection model: unsupported version {version} with {bits} bucket bits")]
    Unsupported {
        /// Version in the file.
        version: u32,
        /// Bucket bits in the file.
        bits: u32,
    },
    /// The file is shorter or longer than its header says.
    #[error("injection model: length {len} bytes, expected {expected}")]
    BadLength {
        /// Actual length.
        len: usize,
        /// Expected length.
        expected: usize,
    },
    /// Scale or bias is not finite.
    #[error("injection model: non-finite scale or bias")]
    NonFinite,
}

/// A linear model over hashed features with quantised weights.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    weights: Vec<i16>,
    scale: f32,
    bias: f32,
}

impl LinearModel {
    /// A model whose logit is always 0 (used when no weights are available).
    pub fn zero() -> Self {
        LinearModel {
            weights: vec![0; BUCKETS],
            scale: 0.0,
            bias: 0.0,
        }
    }

    /// Quantises float weights (one per hash bucket; shorter inputs are zero-padded).
    pub fn quantize(weights: &[f32], bias: f32) -> Self {
        let max = weights.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        let scale = if max > 0.0 {
            max / f32::from(i16::MAX)
        } else {
            0.0
        };
        let mut q = vec![0i16; BUCKETS];
        if scale > 0.0 {
            for (q, w) in q.iter_mut().zip(weights) {
                *q = (w / scale)
                    .round()
                    .clamp(-f32::from(i16::MAX), f32::from(i16::MAX)) as i16;
            }
        }
        LinearModel {
            weights: q,
            scale,
            bias,
        }
    }

    /// Parses a weights file.
    ///
    /// # Errors
    /// [`ModelError`] when the header or the length is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        if bytes.len() < HEADER || &bytes[..4] != MAGIC {
            return Err(ModelError::BadMagic);
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let (version, bits) = (u32_at(4), u32_at(8));
        if version != VERSION || bits != BUCKET_BITS {
            return Err(ModelError::Unsupported { version, bits });
        }
        let scale = f32::from_bits(u32_at(12));
        let bias = f32::from_bits(u32_at(16));
        if !scale.is_finite() || !bias.is_finite() {
            return Err(ModelError::NonFinite);
        }
        let expected = HEADER + 2 * BUCKETS;
        if bytes.len() != expected {
            return Err(ModelError::BadLength {
                len: bytes.len(),
                expected,
            });
        }
        let weights = bytes[HEADER..]
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(LinearModel {
            weights,
            scale,
            bias,
        })
    }

    /// Serialises to the weights-file format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 2 * self.weights.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&BUCKET_BITS.to_le_bytes());
        out.extend_from_slice(&self.scale.to_bits().to_le_bytes());
        out.extend_from_slice(&self.bias.to_bits().to_le_bytes());
        for w in &self.weights {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// The weight of one bucket.
    #[inline]
    pub fn weight(&self, bucket: u32) -> f32 {
        f32::from(self.weights.get(bucket as usize).copied().unwrap_or(0)) * self.scale
    }

    /// The raw quantised weight of one bucket (hot loop: sum these, scale once).
    #[inline]
    pub(crate) fn raw(&self, bucket: u32) -> i32 {
        i32::from(self.weights.get(bucket as usize).copied().unwrap_or(0))
    }

    /// The whole weight table (always `BUCKETS` long; `None` would mean a malformed model).
    #[inline]
    pub(crate) fn table(&self) -> Option<&Table> {
        self.weights.as_slice().try_into().ok()
    }

    /// The quantisation step.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The intercept (log-odds).
    pub fn bias(&self) -> f32 {
        self.bias
    }

    /// Shifts the intercept, e.g. so that a tuned threshold maps to score 0.5.
    pub fn with_bias(mut self, bias: f32) -> Self {
        self.bias = bias;
        self
    }

    /// True when every weight is zero (no model shipped).
    pub fn is_zero(&self) -> bool {
        self.scale == 0.0 || self.weights.iter().all(|&w| w == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_bytes() {
        let mut w = vec![0.0f32; BUCKETS];
        w[3] = 1.5;
        w[77] = -0.25;
        let m = LinearModel::quantize(&w, -2.0);
        let back = LinearModel::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(m, back);
        assert!((back.weight(3) - 1.5).abs() < 1e-4);
        assert!((back.weight(77) + 0.25).abs() < 1e-3);
        assert_eq!(back.bias(), -2.0);
    }

    #[test]
    fn rejects_corrupt_files() {
        assert!(matches!(
            LinearModel::from_bytes(b"nope"),
            Err(ModelError::BadMagic)
        ));
        let mut bytes = LinearModel::zero().to_bytes();
        bytes.pop();
        assert!(matches!(
            LinearModel::from_bytes(&bytes),
            Err(ModelError::BadLength { .. })
        ));
        let mut bytes = LinearModel::zero().to_bytes();
        bytes[8] = 5;
        assert!(matches!(
            LinearModel::from_bytes(&bytes),
            Err(ModelError::Unsupported { bits: 5, .. })
        ));
    }

    #[test]
    fn shipped_model_parses_and_is_trained() {
        let model = LinearModel::from_bytes(SHIPPED_BYTES).unwrap();
        assert!(
            !model.is_zero(),
            "shipped weights are all zero: run train_injection"
        );
        assert!(SHIPPED_BYTES.len() < 2 * 1024 * 1024);
    }
}
