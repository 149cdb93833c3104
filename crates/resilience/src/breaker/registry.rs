//! Breakers keyed per provider and per agent, with bounded memory.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{BreakerState, SharedBreaker, StateChangeHook};
use crate::config::BreakerConfig;

/// How many breakers of a registry are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerCounts {
    /// Closed breakers.
    pub closed: usize,
    /// Open breakers still in their cool-down.
    pub open: usize,
    /// Half-open breakers, including open ones whose cool-down has passed.
    pub half_open: usize,
}

impl BreakerCounts {
    /// All breakers counted.
    pub fn total(&self) -> usize {
        self.closed + self.open + self.half_open
    }

    /// Fraction of breakers open (0 when there are none).
    pub fn open_fraction(&self) -> f64 {
        if self.total() == 0 {
            0.0
        } else {
            self.open as f64 / self.total() as f64
        }
    }
}

struct Slot {
    breaker: Arc<SharedBreaker>,
    last_used: u64,
}

struct Inner {
    map: HashMap<Arc<str>, Slot>,
    tick: u64,
    hook: Option<StateChangeHook>,
}

struct Shared {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

/// A map from key (e.g. `"provider:openai"`, `"agent:coder"`) to [`SharedBreaker`], created
/// on first use from one [`BreakerConfig`], holding at most `config.max_keys` breakers.
///
/// When full, inserting a new key evicts the least-recently-used **closed** breaker (it
/// carries no state worth keeping). Open and half-open breakers are kept, because
/// forgetting them would let traffic through to a failing dependency; only if every
/// breaker is open or half-open is the least-recently-used one of those evicted, with a
/// warning. Eviction scans the map, so it costs O(max_keys) per new key once full; lookups
/// of existing keys are O(1). Callers on a hot path can keep the returned `Arc`.
///
/// Cheap to clone: clones share the same breakers.
///
/// ```
/// use genesis_resilience::{BreakerConfig, BreakerRegistry};
///
/// let registry = BreakerRegistry::new(BreakerConfig::default());
/// let a = registry.get("agent:coder");
/// let b = registry.get("agent:coder");
/// assert!(std::sync::Arc::ptr_eq(&a, &b));
/// assert_eq!(registry.len(), 1);
/// ```
#[derive(Clone)]
pub struct BreakerRegistry {
    shared: Arc<Shared>,
}

impl fmt::Debug for BreakerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerRegistry")
            .field("len", &self.len())
            .field("max_keys", &self.shared.config.max_keys)
            .finish()
    }
}

impl BreakerRegistry {
    /// An empty registry; every breaker it creates uses `config`.
    pub fn new(config: BreakerConfig) -> Self {
        BreakerRegistry {
            shared: Arc::new(Shared {
                config,
                inner: Mutex::new(Inner {
                    map: HashMap::new(),
                    tick: 0,
                    hook: None,
                }),
            }),
        }
    }

    /// Gives every breaker created from now on (through this registry or any clone) this
    /// state-change hook.
    #[must_use]
    pub fn with_hook(self, hook: StateChangeHook) -> Self {
        self.lock().hook = Some(hook);
        self
    }

    /// The config every breaker is created from.
    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }

    /// The breaker for `key`, created closed if absent; marks it recently used.
    pub fn get(&self, key: &str) -> Arc<SharedBreaker> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some(slot) = inner.map.get_mut(key) {
            slot.last_used = tick;
            return Arc::clone(&slot.breaker);
        }
        if inner.map.len() >= self.max_keys() {
            evict_one(&mut inner.map);
        }
        let key: Arc<str> = Arc::from(key);
        let mut breaker = SharedBreaker::new(Arc::clone(&key), &self.shared.config);
        if let Some(hook) = &inner.hook {
            breaker = breaker.with_hook(Arc::clone(hook));
        }
        let breaker = Arc::new(breaker);
        inner.map.insert(
            key,
            Slot {
                breaker: Arc::clone(&breaker),
                last_used: tick,
            },
        );
        breaker
    }

    /// The breaker for `key` if present, without creating it or touching its recency.
    pub fn peek(&self, key: &str) -> Option<Arc<SharedBreaker>> {
        self.lock().map.get(key).map(|s| Arc::clone(&s.breaker))
    }

    /// Breakers held.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no breaker is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most breakers held at once.
    pub fn max_keys(&self) -> usize {
        self.shared.config.max_keys.max(1)
    }

    /// Counts by effective state at `now` (an open breaker past its cool-down counts as
    /// half-open: the next call would probe it).
    pub fn counts(&self, now: Instant) -> BreakerCounts {
        let inner = self.lock();
        let mut counts = BreakerCounts::default();
        for slot in inner.map.values() {
            match slot.breaker.effective_state(now) {
                BreakerState::Closed => counts.closed += 1,
                BreakerState::Open => counts.open += 1,
                BreakerState::HalfOpen => counts.half_open += 1,
            }
        }
        counts
    }

    /// Every key with its effective state at `now`, sorted by key.
    pub fn states(&self, now: Instant) -> Vec<(Arc<str>, BreakerState)> {
        let inner = self.lock();
        let mut states: Vec<_> = inner
            .map
            .iter()
            .map(|(k, s)| (Arc::clone(k), s.breaker.effective_state(now)))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn evict_one(map: &mut HashMap<Arc<str>, Slot>) {
    let mut oldest_closed: Option<(&Arc<str>, u64)> = None;
    let mut oldest_any: Option<(&Arc<str>, u64)> = None;
    for (key, slot) in map.iter() {
        if oldest_any.is_none_or(|(_, t)| slot.last_used < t) {
            oldest_any = Some((key, slot.last_used));
        }
        if slot.breaker.state() == BreakerState::Closed
            && oldest_closed.is_none_or(|(_, t)| slot.last_used < t)
        {
            oldest_closed = Some((key, slot.last_used));
        }
    }
    let victim = match (oldest_closed, oldest_any) {
        (Some((key, _)), _) => Arc::clone(key),
        (None, Some((key, _))) => {
            tracing::warn!(
                breaker = %key,
                max_keys = map.len(),
                "breaker registry full of open breakers, evicting the least recently used"
            );
            Arc::clone(key)
        }
        (None, None) => return,
    };
    map.remove(&victim);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn registry(max_keys: usize) -> BreakerRegistry {
        BreakerRegistry::new(BreakerConfig {
            max_keys,
            ..BreakerConfig::default()
        })
    }

    fn open(b: &SharedBreaker, now: Instant) {
        for _ in 0..5 {
            b.try_acquire(now).unwrap().failure(now);
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn evicts_least_recently_used_closed_breaker() {
        let r = registry(3);
        r.get("a");
        r.get("b");
        r.get("c");
        r.get("a"); // b is now the least recently used
        r.get("d");
        assert_eq!(r.len(), 3);
        assert!(r.peek("b").is_none());
        assert!(r.peek("a").is_some() && r.peek("c").is_some() && r.peek("d").is_some());
    }

    #[test]
    fn open_breakers_survive_eviction() {
        let r = registry(2);
        let now = Instant::now();
        open(&r.get("sick"), now);
        r.get("x");
        r.get("y"); // evicts x (closed), not sick (older but open)
        assert!(r.peek("sick").is_some());
        assert!(r.peek("x").is_none());
        assert_eq!(
            r.counts(now),
            BreakerCounts {
                closed: 1,
                open: 1,
                half_open: 0
            }
        );
        assert_eq!(
            r.counts(now + Duration::from_secs(60)).half_open,
            1,
            "cool-down over counts as half-open"
        );
    }

    #[test]
    fn clones_share_breakers() {
        let r = registry(4);
        let copy = r.clone();
        assert!(Arc::ptr_eq(&r.get("k"), &copy.get("k")));
        assert_eq!(copy.len(), 1);
    }

    #[test]
    fn all_open_still_bounded() {
        let r = registry(2);
        let now = Instant::now();
        for key in ["a", "b", "c", "d"] {
            open(&r.get(key), now);
            assert!(r.len() <= 2);
        }
        let states = r.states(now);
        let keys: Vec<&str> = states.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys, vec!["c", "d"]);
    }
}
