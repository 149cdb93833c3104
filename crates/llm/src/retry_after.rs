//! `Retry-After` parsing (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
//!
//! Pure functions: the current time is an argument, so they are testable without a
//! clock. The HTTP-date parser is hand-written (IMF-fixdate, RFC 850 and asctime forms)
//! because the workspace has no date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest delay we accept from a provider; larger values are clamped so a bogus
/// header cannot park a caller for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Parses a `Retry-After` value given the current time: `"120"` → 120 s; an HTTP-date
/// → the time until then (zero if it is in the past). Fractional seconds (`"1.5"`) are
/// accepted because some gateways send them. The result is clamped to
/// [`MAX_RETRY_AFTER`]; unparseable values yield `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = value.parse().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = value.parse().ok()?;
        return Some(Duration::try_from_secs_f64(secs).ok()?.min(MAX_RETRY_AFTER));
    }
    let at = parse_http_date(value)?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// Parses a `retry-after-ms` value (OpenAI and Azure send it): milliseconds, clamped
/// to [`MAX_RETRY_AFTER`].
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let ms: f64 = value.trim().parse().ok()?;
    if !ms.is_finite() || ms < 0.0 {
        return None;
    }
    Some(
        Duration::try_from_secs_f64(ms / 1000.0)
            .ok()?
            .min(MAX_RETRY_AFTER),
    )
}

/// Parses an HTTP-date in any of the three forms RFC 9110 requires recipients to accept:
/// `Sun, 06 Nov 1994 08:49:37 GMT`, `Sunday, 06-Nov-94 08:49:37 GMT` and
/// `Sun Nov  6 08:49:37 1994`. The weekday is not checked against the date.
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    let (day, month, year, time) = if let Some((_, rest)) = value.split_once(", ") {
        let rest = rest.strip_suffix(" GMT")?;
        if rest.contains('-') {
            // RFC 850: 06-Nov-94 08:49:37
            let (date, time) = rest.split_once(' ')?;
            let mut parts = date.split('-');
            let day = parts.next()?;
            let month = parts.next()?;
            let year = parts.next()?;
            if parts.next().is_some() || year.len() != 2 {
                return None;
            }
            let yy: i64 = parse_digits(year)?;
            // RFC 9110: a two-digit year more than 50 years in the future is in the past
            // century; without a clock here, pivot at 70 like most implementations.
            let year = if yy >= 70 { 1900 + yy } else { 2000 + yy };
            (parse_digits(day)?, month, year, time)
        } else {
            // IMF-fixdate: 06 Nov 1994 08:49:37
            let mut parts = rest.splitn(4, ' ');
            let day = parts.next()?;
            let month = parts.next()?;
            let year = parts.next()?;
            let time = parts.next()?;
            if day.len() != 2 || year.len() != 4 {
                return None;
            }
            (parse_digits(day)?, month, parse_digits(year)?, time)
        }
    } else {
        // asctime: Sun Nov  6 08:49:37 1994
        let mut parts = value.split_ascii_whitespace();
        let _weekday = parts.next()?;
        let month = parts.next()?;
        let day = parts.next()?;
        let time = parts.next()?;
        let year = parts.next()?;
        if parts.next().is_some() || year.len() != 4 {
            return None;
        }
        (parse_digits(day)?, month, parse_digits(year)?, time)
    };
    let month = month_number(month)?;
    let mut hms = time.split(':');
    let h: i64 = parse_digits(hms.next()?)?;
    let m: i64 = parse_digits(hms.next()?)?;
    let s: i64 = parse_digits(hms.next()?)?;
    if hms.next().is_some() || h > 23 || m > 59 || s > 60 {
        return None;
    }
    if !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

fn parse_digits(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn month_number(name: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|m| *m == name).map(|i| i as i64 + 1)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    // 1994-11-06T08:49:37Z
    const RFC_EXAMPLE: u64 = 784_111_777;

    #[test]
    fn parses_the_three_rfc_date_forms() {
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(form), Some(at(RFC_EXAMPLE)), "{form}");
        }
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(at(1_835_438_400))
        );
    }

    #[test]
    fn rejects_garbage_dates() {
        for bad in [
            "",
            "tomorrow",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Mon, 29 Feb 2027 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = at(RFC_EXAMPLE - 30);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(30))
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at(RFC_EXAMPLE + 5)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after_ms("250"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after_ms("-1"), None);
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(s in "\\PC{0,40}", now in 0u64..4_000_000_000) {
            if let Some(d) = parse_retry_after(&s, at(now)) {
                prop_assert!(d <= MAX_RETRY_AFTER);
            }
        }

        #[test]
        fn imf_fixdate_roundtrips(days in 0i64..100_000, secs in 0i64..86_400) {
            // Build the string from the civil date and parse it back.
            let total = days * 86_400 + secs;
            let (y, m, d) = civil_from_days(days);
            const MONTHS: [&str; 12] = ["Jan","Feb","Mar","Apr","May","Jun","Jul","Aug","Sep","Oct","Nov","Dec"];
            let s = format!(
                "Xxx, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
                MONTHS[(m - 1) as usize], secs / 3600, secs / 60 % 60, secs % 60
            );
            prop_assert_eq!(parse_http_date(&s), Some(at(total as u64)));
        }
    }

    fn civil_from_days(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (if m <= 2 { y + 1 } else { y }, m, d)
    }
}
