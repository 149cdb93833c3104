//! Structural limits on requests and DAGs.

use serde::{Deserialize, Serialize};

use crate::HtdagError;

/// Limits every DAG and request is held to. The defaults are the product's documented
/// limits; configuration may tighten or loosen them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Characters allowed in a request (default 5,000).
    pub max_request_chars: usize,
    /// Hierarchy levels allowed; top-level tasks are level 1 (default 5).
    pub max_depth: usize,
    /// Tasks allowed in one DAG (default 1,000).
    pub max_tasks: usize,
    /// Subtasks one dynamic update may add (default 20).
    pub max_subtasks_per_update: usize,
    /// Dynamic updates allowed per DAG (default 10).
    pub max_updates: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_chars: 5_000,
            max_depth: 5,
            max_tasks: 1_000,
            max_subtasks_per_update: 20,
            max_updates: 10,
        }
    }
}

impl Limits {
    /// Checks a request against the emptiness and length limits: a request of only
    /// white space and invisible characters ([`genesis_core::text::is_blank`]) is empty.
    ///
    /// # Errors
    /// [`HtdagError::EmptyRequest`] or [`HtdagError::RequestTooLong`].
    pub fn check_request(&self, request: &str) -> Result<(), HtdagError> {
        if genesis_core::text::is_blank(request) {
            return Err(HtdagError::EmptyRequest);
        }
        // Byte length bounds the char count from above: skip counting short requests.
        if request.len() > self.max_request_chars {
            let len = request.chars().count();
            if len > self.max_request_chars {
                return Err(HtdagError::RequestTooLong {
                    len,
                    max: self.max_request_chars,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_limits() {
        let l = Limits::default();
        assert!(matches!(
            l.check_request("  \n"),
            Err(HtdagError::EmptyRequest)
        ));
        // Library-user audit: only zero-width characters and a BOM passed as a request.
        assert!(matches!(
            l.check_request("\u{200b}\u{200b}\u{feff}"),
            Err(HtdagError::EmptyRequest)
        ));
        assert!(l.check_request("\u{200b}fix the bug").is_ok());
        assert!(l.check_request(&"a".repeat(5_000)).is_ok());
        let err = l.check_request(&"a".repeat(5_001)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "request is 5001 characters, over the limit of 5000 set by limits.max_request_chars (rule: max_request_chars)"
        );
        // Multi-byte characters count as one each.
        assert!(l.check_request(&"é".repeat(5_000)).is_ok());
    }
}
