//! Retry classification: which failures are worth another attempt.
//!
//! Error types implement [`Classify`]; types this crate cannot implement it for (the
//! orphan rule) are classified with a closure `|err| -> Retry` through
//! [`retry_with`](crate::retry_with). [`classify_http_status`] and [`parse_retry_after`]
//! encode the HTTP rules once so every client agrees.

use std::error::Error as StdError;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::ResilienceError;

/// Whether a failed call may be attempted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Retry {
    /// Transient failure (timeout, 429, 5xx, connection reset): retry, no earlier than
    /// `after` when the server said so (`Retry-After`).
    Yes {
        /// The server's `Retry-After`, if it sent one.
        after: Option<Duration>,
    },
    /// Permanent for this request (4xx validation, security rejection, exhausted budget):
    /// retrying cannot help, and the failure does not count against a circuit breaker.
    No,
}

impl Retry {
    /// `Retry::Yes` without a server hint.
    pub const NOW: Retry = Retry::Yes { after: None };

    /// Whether this is a `Yes`.
    pub fn is_retryable(self) -> bool {
        matches!(self, Retry::Yes { .. })
    }

    /// The server's `Retry-After`, when retryable and given.
    pub fn after(self) -> Option<Duration> {
        match self {
            Retry::Yes { after } => after,
            Retry::No => None,
        }
    }
}

/// An error type that knows whether it is transient.
///
/// ```
/// use genesis_resilience::{Classify, Retry};
///
/// #[derive(Debug)]
/// enum CallError { RateLimited, BadPrompt }
///
/// impl Classify for CallError {
///     fn classify(&self) -> Retry {
///         match self {
///             CallError::RateLimited => Retry::NOW,
///             CallError::BadPrompt => Retry::No,
///         }
///     }
/// }
/// assert!(CallError::RateLimited.classify().is_retryable());
/// assert_eq!(CallError::BadPrompt.classify(), Retry::No);
/// ```
pub trait Classify {
    /// Whether this failure may be retried, and when.
    fn classify(&self) -> Retry;
}

impl Classify for ResilienceError {
    /// An open breaker is not retried here: the caller should re-route (next alternative
    /// agent or the heuristic fallback) instead of hammering it. Timeouts and a full
    /// bulkhead are transient.
    fn classify(&self) -> Retry {
        match self {
            ResilienceError::CircuitOpen { .. } => Retry::No,
            ResilienceError::Timeout { .. } | ResilienceError::BulkheadFull { .. } => Retry::NOW,
        }
    }
}

impl Classify for io::Error {
    /// Timeouts, resets, refused or aborted connections, broken pipes and short reads retry;
    /// everything else (not found, permission denied, invalid data, ...) does not.
    fn classify(&self) -> Retry {
        use io::ErrorKind as K;
        match self.kind() {
            K::TimedOut
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::ConnectionRefused
            | K::NotConnected
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::Interrupted
            | K::WouldBlock => Retry::NOW,
            _ => Retry::No,
        }
    }
}

impl Classify for tokio::time::error::Elapsed {
    fn classify(&self) -> Retry {
        Retry::NOW
    }
}

impl Classify for Box<dyn StdError + Send + Sync> {
    /// Tower's `BoxError`: see [`classify_error_chain`].
    fn classify(&self) -> Retry {
        classify_error_chain(self.as_ref())
    }
}

/// A classifier usable by the tower adapters: any `Fn(&E) -> Retry` closure, or
/// [`UseClassify`] to defer to `E`'s own [`Classify`] impl.
pub trait ClassifyWith<E> {
    /// Classifies `err`.
    fn classify_err(&self, err: &E) -> Retry;
}

impl<E, F: Fn(&E) -> Retry> ClassifyWith<E> for F {
    fn classify_err(&self, err: &E) -> Retry {
        self(err)
    }
}

/// Classifies with the error type's own [`Classify`] implementation.
#[derive(Debug, Clone, Copy, Default)]
pub struct UseClassify;

impl<E: Classify> ClassifyWith<E> for UseClassify {
    fn classify_err(&self, err: &E) -> Retry {
        err.classify()
    }
}

/// Classifies an opaque error by walking its `source()` chain for types this crate knows:
/// [`ResilienceError`], [`io::Error`], tokio's and tower's timeout errors (retry) and
/// tower's load-shed `Overloaded` (retry). Anything unrecognised is `Retry::No`: an
/// unknown failure is not assumed to be transient.
pub fn classify_error_chain(err: &(dyn StdError + 'static)) -> Retry {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(e) = e.downcast_ref::<ResilienceError>() {
            return e.classify();
        }
        if let Some(e) = e.downcast_ref::<io::Error>() {
            return e.classify();
        }
        if e.is::<tokio::time::error::Elapsed>()
            || e.is::<tower::timeout::error::Elapsed>()
            || e.is::<tower::load_shed::error::Overloaded>()
        {
            return Retry::NOW;
        }
        current = e.source();
    }
    Retry::No
}

/// The HTTP status rule shared by every LLM client: 408, 425, 429 and 5xx retry
/// (except 501 Not Implemented and 505 HTTP Version Not Supported, which never change);
/// every other status does not. `retry_after` is passed through for retryable statuses.
///
/// ```
/// use std::time::Duration;
/// use genesis_resilience::{classify_http_status, Retry};
///
/// let hint = Some(Duration::from_secs(7));
/// assert_eq!(classify_http_status(429, hint), Retry::Yes { after: hint });
/// assert_eq!(classify_http_status(503, None), Retry::NOW);
/// assert_eq!(classify_http_status(400, hint), Retry::No);
/// ```
pub fn classify_http_status(status: u16, retry_after: Option<Duration>) -> Retry {
    match status {
        408 | 425 | 429 => Retry::Yes { after: retry_after },
        501 | 505 => Retry::No,
        500..=599 => Retry::Yes { after: retry_after },
        _ => Retry::No,
    }
}

/// Parses a `Retry-After` header value: either delay-seconds (`"120"`) or an HTTP-date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`), relative to `now`. A date in the past is zero.
/// Returns `None` for anything else (the obsolete RFC 850 and asctime date forms included).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use genesis_resilience::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470); // 2015-10-21 07:27:50 UTC
/// assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(
///     parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
///     Some(Duration::from_secs(10))
/// );
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = parse_imf_fixdate(value)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → seconds since the Unix epoch.
fn parse_imf_fixdate(value: &str) -> Option<u64> {
    let b = value.as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    if !DAYS.contains(&&b[0..3]) || b[7] != b' ' || b[11] != b' ' || b[16] != b' ' {
        return None;
    }
    if b[19] != b':' || b[22] != b':' {
        return None;
    }
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == &b[8..11])? as u64 + 1;
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        b[range].iter().try_fold(0u64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
        })
    };
    let day = num(5..7)?;
    let year = num(12..16)?;
    let (hour, minute, second) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if !(1..=31).contains(&day) || year < 1970 || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm), year ≥ 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn check_status(status: u16, expect: bool) {
        assert_eq!(
            classify_http_status(status, None).is_retryable(),
            expect,
            "status {status}"
        );
    }

    #[test]
    fn http_statuses() {
        for s in [408, 425, 429, 500, 502, 503, 504, 529] {
            check_status(s, true);
        }
        for s in [200, 400, 401, 403, 404, 409, 413, 422, 501, 505] {
            check_status(s, false);
        }
    }

    #[test]
    fn io_kinds() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(reset.classify(), Retry::NOW);
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(denied.classify(), Retry::No);
    }

    #[test]
    fn error_chain_finds_known_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("provider call failed")]
        struct Wrapper(#[source] io::Error);
        let boxed: Box<dyn StdError + Send + Sync> =
            Box::new(Wrapper(io::Error::from(io::ErrorKind::TimedOut)));
        assert_eq!(boxed.classify(), Retry::NOW);
        let open: Box<dyn StdError + Send + Sync> = Box::new(ResilienceError::CircuitOpen {
            key: Arc::from("p"),
            retry_in: Duration::from_secs(1),
        });
        assert_eq!(open.classify(), Retry::No);
        let shed: Box<dyn StdError + Send + Sync> =
            Box::new(tower::load_shed::error::Overloaded::new());
        assert_eq!(shed.classify(), Retry::NOW);
        let unknown: Box<dyn StdError + Send + Sync> = "budget exhausted".into();
        assert_eq!(unknown.classify(), Retry::No);
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now),
            None
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Xyz 1994 08:49:37 GMT", now),
            None
        );
        // Leap day in a leap year.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29 00:00:00
        assert_eq!(
            parse_retry_after("Tue, 29 Feb 2000 00:00:10 GMT", leap),
            Some(Duration::from_secs(10))
        );
    }
}
