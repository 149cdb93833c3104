//! Per-key concurrency limits (bulkheads), so one slow agent or provider cannot take every
//! worker. For one service, tower's `ConcurrencyLimitLayer` does the same job; this type
//! adds the keying.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::BulkheadConfig;
use crate::error::ResilienceError;

/// A slot in a bulkhead; the slot frees when this is dropped.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct BulkheadPermit {
    key: Arc<str>,
    _permit: OwnedSemaphorePermit,
}

impl BulkheadPermit {
    /// The key the slot belongs to.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// At most `max_concurrent` calls in flight per key.
///
/// Keys are created on first use. Once more than `max_keys` keys exist, idle keys (no
/// slot taken) are dropped; keys with calls in flight are never dropped, so memory is
/// bounded by `max(max_keys, keys with calls in flight)`. Cheap to clone: clones share
/// the same slots.
///
/// ```
/// use genesis_resilience::{Bulkhead, BulkheadConfig};
///
/// let mut config = BulkheadConfig::default();
/// config.max_concurrent = 1;
/// let bulkhead = Bulkhead::new(config);
/// let first = bulkhead.try_acquire("agent:coder").unwrap();
/// assert!(bulkhead.try_acquire("agent:coder").is_err());
/// assert!(bulkhead.try_acquire("agent:writer").is_ok());
/// drop(first);
/// assert!(bulkhead.try_acquire("agent:coder").is_ok());
/// ```
#[derive(Clone)]
pub struct Bulkhead {
    max_concurrent: usize,
    max_wait: Duration,
    max_keys: usize,
    keys: Arc<Mutex<HashMap<Arc<str>, Arc<Semaphore>>>>,
}

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("max_concurrent", &self.max_concurrent)
            .field("max_wait", &self.max_wait)
            .field("keys", &self.lock().len())
            .finish()
    }
}

impl Bulkhead {
    /// A bulkhead from `config` (which should have passed [`BulkheadConfig::validate`];
    /// a zero limit is treated as 1).
    pub fn new(config: BulkheadConfig) -> Self {
        Bulkhead {
            max_concurrent: config.max_concurrent.clamp(1, Semaphore::MAX_PERMITS),
            max_wait: config.max_wait,
            max_keys: config.max_keys.max(1),
            keys: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The per-key limit.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// Takes a slot for `key` now, or fails.
    ///
    /// # Errors
    /// [`ResilienceError::BulkheadFull`] when `key` has `max_concurrent` calls in flight.
    pub fn try_acquire(&self, key: &str) -> Result<BulkheadPermit, ResilienceError> {
        let (key, semaphore) = self.semaphore(key);
        match semaphore.try_acquire_owned() {
            Ok(permit) => Ok(BulkheadPermit {
                key,
                _permit: permit,
            }),
            Err(_) => Err(self.full(key, Duration::ZERO)),
        }
    }

    /// Takes a slot for `key`, waiting up to `max_wait` for one (FIFO).
    ///
    /// # Errors
    /// [`ResilienceError::BulkheadFull`] when no slot frees up within `max_wait`.
    pub async fn acquire(&self, key: &str) -> Result<BulkheadPermit, ResilienceError> {
        let (key, semaphore) = self.semaphore(key);
        if let Ok(permit) = Arc::clone(&semaphore).try_acquire_owned() {
            return Ok(BulkheadPermit {
                key,
                _permit: permit,
            });
        }
        let started = Instant::now();
        match tokio::time::timeout(self.max_wait, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(BulkheadPermit {
                key,
                _permit: permit,
            }),
            // Timed out; a closed semaphore cannot happen (we never close one).
            _ => Err(self.full(key, started.elapsed())),
        }
    }

    /// Calls in flight for `key`.
    pub fn in_flight(&self, key: &str) -> usize {
        self.lock()
            .get(key)
            .map_or(0, |s| self.max_concurrent - s.available_permits())
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn full(&self, key: Arc<str>, waited: Duration) -> ResilienceError {
        tracing::debug!(bulkhead = %key, max_concurrent = self.max_concurrent, ?waited, "bulkhead full");
        ResilienceError::BulkheadFull {
            key,
            max_concurrent: self.max_concurrent,
            waited,
        }
    }

    fn semaphore(&self, key: &str) -> (Arc<str>, Arc<Semaphore>) {
        let mut keys = self.lock();
        if let Some((k, s)) = keys.get_key_value(key) {
            return (Arc::clone(k), Arc::clone(s));
        }
        if keys.len() >= self.max_keys {
            // Idle: nobody but the map holds the semaphore (permits hold an Arc of it).
            keys.retain(|_, s| Arc::strong_count(s) > 1);
        }
        let k: Arc<str> = Arc::from(key);
        let s = Arc::new(Semaphore::new(self.max_concurrent));
        keys.insert(Arc::clone(&k), Arc::clone(&s));
        (k, s)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Semaphore>>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulkhead(max_concurrent: usize, max_wait: Duration, max_keys: usize) -> Bulkhead {
        Bulkhead::new(BulkheadConfig {
            max_concurrent,
            max_wait,
            max_keys,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_a_slot_then_gives_up() {
        let b = Arc::new(bulkhead(1, Duration::from_secs(2), 8));
        let held = b.acquire("k").await.unwrap();
        let waiter = {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.acquire("k").await.map(|p| p.key().to_owned()) })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), "k");

        let _held = b.acquire("k").await.unwrap();
        let start = Instant::now();
        let err = b.acquire("k").await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(
            err,
            ResilienceError::BulkheadFull {
                key: Arc::from("k"),
                max_concurrent: 1,
                waited: Duration::from_secs(2)
            }
        );
        assert_eq!(b.in_flight("k"), 1);
    }

    #[test]
    fn idle_keys_are_dropped_busy_ones_kept() {
        let b = bulkhead(2, Duration::ZERO, 2);
        let busy = b.try_acquire("busy").unwrap();
        drop(b.try_acquire("idle").unwrap());
        assert_eq!(b.len(), 2);
        let _new = b.try_acquire("new").unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b.in_flight("busy"), 1);
        assert_eq!(b.in_flight("idle"), 0);
        drop(busy);
    }
}
