//! A fast, non-cryptographic hasher for small internal maps.
//!
//! The standard library's SipHash resists hash flooding, which matters for maps keyed by
//! attacker-chosen data from the network. Inside one plan the keys are task ids and
//! word hashes that Genesis made itself, and SipHash was 7% of planning time. This is
//! the multiply-rotate hash used by rustc (FxHash): a few instructions per word.
//!
//! Do not use it for maps whose keys come straight from untrusted input and whose size
//! an attacker controls (rate-limiter keys, registry catalogues loaded from users).
//!
//! ```
//! use genesis_core::fasthash::FxHashMap;
//!
//! let mut m: FxHashMap<&str, u32> = FxHashMap::default();
//! m.insert("a", 1);
//! assert_eq!(m.get("a"), Some(&1));
//! ```

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// The FxHash hasher: `hash = (hash.rotate_left(5) ^ word) * SEED` per 8-byte word.
#[derive(Debug, Clone, Copy, Default)]
pub struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Builds [`FxHasher`]s.
pub type FxBuildHasher = BuildHasherDefault<FxHasher>;

/// A `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, FxBuildHasher>;

/// A `HashSet` with [`FxHasher`].
pub type FxHashSet<T> = HashSet<T, FxBuildHasher>;

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hash};

    use super::*;

    fn hash<T: Hash + ?Sized>(t: &T) -> u64 {
        FxBuildHasher::default().hash_one(t)
    }

    #[test]
    fn equal_keys_hash_equal_and_different_keys_differ() {
        assert_eq!(hash("task.1"), hash("task.1"));
        assert_ne!(hash("task.1"), hash("task.2"));
        assert_ne!(hash("abcdefgh"), hash("abcdefgh1"));
        assert_ne!(hash(&1u64), hash(&2u64));
    }

    #[test]
    fn maps_work_with_borrowed_lookups() {
        let mut m: FxHashMap<String, usize> = FxHashMap::default();
        for i in 0..1_000 {
            m.insert(format!("t{i}"), i);
        }
        assert_eq!(m.len(), 1_000);
        assert_eq!(m.get("t999"), Some(&999));
        assert_eq!(m.get("t1000"), None);
    }
}
