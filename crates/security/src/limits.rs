//! Input limits: request length, JSON body size, DAG depth and size, lifetime tasks per run.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::SecurityError;

/// Size limits applied before any expensive work. All counts are inclusive maxima.
///
/// ```
/// use genesis_security::{Limits, SecurityError};
///
/// let limits = Limits::default();
/// assert!(limits.check_request("plan a trip to Lisbon").is_ok());
/// assert!(matches!(limits.check_request("   "), Err(SecurityError::EmptyRequest)));
/// let long = "x".repeat(5_001);
/// assert!(matches!(
///     limits.check_request(&long),
///     Err(SecurityError::RequestTooLong { len: 5_001, max: 5_000 })
/// ));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Maximum characters (Unicode scalar values) in a user request. Default 5,000.
    pub max_request_chars: usize,
    /// Maximum bytes in a JSON request body. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Maximum depth of a task DAG (a lone task has depth 1). Default 5.
    pub max_dag_depth: usize,
    /// Maximum tasks in one DAG. Default 1,000.
    pub max_tasks_per_dag: usize,
    /// Maximum tasks a run may create over its lifetime, including dynamic additions.
    /// Default 5,000.
    pub max_lifetime_tasks_per_run: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_chars: 5_000,
            max_body_bytes: 64 * 1024,
            max_dag_depth: 5,
            max_tasks_per_dag: 1_000,
            max_lifetime_tasks_per_run: 5_000,
        }
    }
}

impl Limits {
    /// Checks a user request: not empty, not made only of whitespace and invisible
    /// characters (zero-width spaces and joiners, word joiner, byte-order mark, soft
    /// hyphen, bidi controls, variation selectors, tag characters and the other
    /// default-ignorable code points), at most `max_request_chars`.
    ///
    /// # Errors
    /// [`SecurityError::EmptyRequest`] or [`SecurityError::RequestTooLong`].
    pub fn check_request(&self, request: &str) -> Result<(), SecurityError> {
        // Count lazily: a request of more than max bytes may still be within the character
        // limit, but one of at most max bytes always is.
        if request.len() > self.max_request_chars {
            let len = request.chars().count();
            if len > self.max_request_chars {
                return Err(SecurityError::RequestTooLong {
                    len,
                    max: self.max_request_chars,
                });
            }
        }
        if genesis_core::text::is_blank(request) {
            return Err(SecurityError::EmptyRequest);
        }
        Ok(())
    }

    /// Checks the size of a request body before parsing it.
    ///
    /// # Errors
    /// [`SecurityError::BodyTooLarge`].
    pub fn check_body_size(&self, len: usize) -> Result<(), SecurityError> {
        if len > self.max_body_bytes {
            return Err(SecurityError::BodyTooLarge {
                len,
                max: self.max_body_bytes,
            });
        }
        Ok(())
    }

    /// Checks the body size, then parses it as JSON into `T` (serde_json's own recursion
    /// limit bounds nesting).
    ///
    /// # Errors
    /// [`SecurityError::BodyTooLarge`] or [`SecurityError::InvalidJson`].
    pub fn parse_json_body<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, SecurityError> {
        self.check_body_size(body.len())?;
        serde_json::from_slice(body).map_err(|source| SecurityError::InvalidJson { source })
    }

    /// Checks the depth of a task DAG.
    ///
    /// # Errors
    /// [`SecurityError::DagTooDeep`].
    pub fn check_dag_depth(&self, depth: usize) -> Result<(), SecurityError> {
        if depth > self.max_dag_depth {
            return Err(SecurityError::DagTooDeep {
                depth,
                max: self.max_dag_depth,
            });
        }
        Ok(())
    }

    /// Checks the number of tasks in a DAG.
    ///
    /// # Errors
    /// [`SecurityError::TooManyTasks`].
    pub fn check_task_count(&self, count: usize) -> Result<(), SecurityError> {
        if count > self.max_tasks_per_dag {
            return Err(SecurityError::TooManyTasks {
                count,
                max: self.max_tasks_per_dag,
            });
        }
        Ok(())
    }

    /// Checks both the depth and the size of a DAG.
    ///
    /// # Errors
    /// [`SecurityError::DagTooDeep`] or [`SecurityError::TooManyTasks`].
    pub fn check_dag(&self, depth: usize, tasks: usize) -> Result<(), SecurityError> {
        self.check_dag_depth(depth)?;
        self.check_task_count(tasks)
    }

    /// A fresh lifetime task counter for one run.
    pub fn run_counter(&self) -> RunTaskCounter {
        RunTaskCounter::new(self.max_lifetime_tasks_per_run)
    }
}

/// Counts the tasks a run has created over its lifetime (initial plan and dynamic
/// additions) and refuses to go past the maximum. Thread-safe.
#[derive(Debug)]
pub struct RunTaskCounter {
    used: AtomicUsize,
    max: usize,
}

impl RunTaskCounter {
    /// A counter with nothing used yet.
    pub fn new(max: usize) -> Self {
        RunTaskCounter {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// Reserves `n` more tasks, atomically: either all are reserved or none.
    ///
    /// # Errors
    /// [`SecurityError::LifetimeTaskLimit`] when `used + n` would exceed the maximum.
    pub fn try_add(&self, n: usize) -> Result<usize, SecurityError> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.checked_add(n).filter(|&next| next <= self.max);
            let Some(next) = next else {
                return Err(SecurityError::LifetimeTaskLimit {
                    used,
                    requested: n,
                    max: self.max,
                });
            };
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(next),
                Err(actual) => used = actual,
            }
        }
    }

    /// Tasks reserved so far.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The maximum.
    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_length_counts_characters_not_bytes() {
        let limits = Limits {
            max_request_chars: 4,
            ..Limits::default()
        };
        assert!(limits.check_request("éééé").is_ok()); // 8 bytes, 4 chars
        assert!(matches!(
            limits.check_request("ééééé"),
            Err(SecurityError::RequestTooLong { len: 5, max: 4 })
        ));
    }

    #[test]
    fn empty_and_whitespace_requests_are_rejected() {
        let limits = Limits::default();
        assert!(matches!(
            limits.check_request(""),
            Err(SecurityError::EmptyRequest)
        ));
        assert!(matches!(
            limits.check_request(" \n\t "),
            Err(SecurityError::EmptyRequest)
        ));
        assert!(limits.check_request("a").is_ok());
    }

    #[test]
    fn requests_of_only_invisible_characters_are_empty() {
        let limits = Limits::default();
        for blank in [
            "\u{200b}\u{200b}\u{feff}", // zero-width space, byte-order mark
            "\u{200c}\u{200d}\u{2060}", // ZWNJ, ZWJ, word joiner
            "\u{00ad} \u{034f}",        // soft hyphen, combining grapheme joiner
            "\u{202e}\u{2066}\u{200f}", // bidi override, isolate, RLM
            "\u{180e}\u{3164}\u{fe0f}", // Mongolian vowel separator, Hangul filler, VS16
            "\u{e0041}\u{e007f}",       // tag characters
            "\u{2800}\u{00a0}\n",       // braille blank, no-break space
        ] {
            assert!(
                matches!(
                    limits.check_request(blank),
                    Err(SecurityError::EmptyRequest)
                ),
                "{:?} passed",
                blank.escape_unicode().to_string()
            );
        }
        // Invisible characters around real text do not make it empty.
        assert!(limits.check_request("\u{200b}fix the bug\u{feff}").is_ok());
        assert!(
            limits
                .check_request("\u{200d}\u{1f468}\u{200d}\u{1f4bb}")
                .is_ok()
        );
    }

    #[test]
    fn exactly_at_the_limit_passes() {
        let limits = Limits::default();
        assert!(limits.check_request(&"a".repeat(5_000)).is_ok());
        assert!(limits.check_request(&"a".repeat(5_001)).is_err());
    }

    #[test]
    fn body_size_and_json() {
        let limits = Limits {
            max_body_bytes: 16,
            ..Limits::default()
        };
        let v: serde_json::Value = limits.parse_json_body(br#"{"a":1}"#).unwrap();
        assert_eq!(v["a"], 1);
        assert!(matches!(
            limits.parse_json_body::<serde_json::Value>(br#"{"request":"0123456789"}"#),
            Err(SecurityError::BodyTooLarge { len: 24, max: 16 })
        ));
        assert!(matches!(
            limits.parse_json_body::<serde_json::Value>(b"{nope"),
            Err(SecurityError::InvalidJson { .. })
        ));
    }

    #[test]
    fn dag_depth_and_size() {
        let limits = Limits::default();
        assert!(limits.check_dag(5, 1_000).is_ok());
        assert!(matches!(
            limits.check_dag(6, 10),
            Err(SecurityError::DagTooDeep { depth: 6, max: 5 })
        ));
        assert!(matches!(
            limits.check_dag(2, 1_001),
            Err(SecurityError::TooManyTasks {
                count: 1_001,
                max: 1_000
            })
        ));
    }

    #[test]
    fn lifetime_counter_is_all_or_nothing() {
        let counter = RunTaskCounter::new(10);
        assert_eq!(counter.try_add(6).unwrap(), 6);
        assert!(matches!(
            counter.try_add(5),
            Err(SecurityError::LifetimeTaskLimit {
                used: 6,
                requested: 5,
                max: 10
            })
        ));
        assert_eq!(counter.used(), 6);
        assert_eq!(counter.try_add(4).unwrap(), 10);
        assert!(counter.try_add(1).is_err());
        assert!(counter.try_add(usize::MAX).is_err());
    }

    #[test]
    fn config_rejects_unknown_fields() {
        let err = serde_json::from_str::<Limits>(r#"{"max_request_char": 10}"#);
        assert!(err.is_err());
        let ok: Limits = serde_json::from_str(r#"{"max_dag_depth": 3}"#).unwrap();
        assert_eq!(ok.max_dag_depth, 3);
        assert_eq!(ok.max_request_chars, 5_000);
    }
}
