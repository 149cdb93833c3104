//! Wall-clock instants for rollout windows: unix milliseconds, parsed from RFC 3339 or
//! unix seconds, printed as RFC 3339 (UTC).
//!
//! Every [`Timestamp`] lies in [`Timestamp::MIN`]`..=`[`Timestamp::MAX`] (years 0000 to
//! 9999, what RFC 3339's four-digit year can write), so whatever is read is written back
//! in a form that reads again: input outside that range is rejected with the value, and
//! the infallible constructors clamp into it.
//!
//! We write the RFC 3339 parser ourselves (a few dozen lines) rather than pull a date
//! crate into the workspace for two fields.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::error::FlagError;

/// Unix milliseconds of 0000-01-01T00:00:00Z.
const MIN_MILLIS: i64 = -62_167_219_200_000;
/// Unix milliseconds of 9999-12-31T23:59:59.999Z.
const MAX_MILLIS: i64 = 253_402_300_799_999;
/// The rule broken by an instant outside [`Timestamp::MIN`]`..=`[`Timestamp::MAX`].
const OUT_OF_RANGE: &str =
    "outside 0000-01-01T00:00:00Z..=9999-12-31T23:59:59.999Z (rfc 3339 years have four digits)";

/// An instant as milliseconds since the unix epoch (UTC), in years 0000 to 9999 (so it
/// may be before 1970).
///
/// In JSON it is written as an RFC 3339 string (`"2026-12-01T00:00:00Z"`) and read from
/// either an RFC 3339 string (any offset) or a number of unix seconds (`1764547200`);
/// an instant outside [`Timestamp::MIN`]`..=`[`Timestamp::MAX`] is rejected on input,
/// because it could not be written back as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Always within `MIN_MILLIS..=MAX_MILLIS`.
    unix_millis: i64,
}

impl Timestamp {
    /// The unix epoch, 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp { unix_millis: 0 };
    /// The earliest instant: 0000-01-01T00:00:00Z.
    pub const MIN: Timestamp = Timestamp {
        unix_millis: MIN_MILLIS,
    };
    /// The latest instant: 9999-12-31T23:59:59.999Z.
    pub const MAX: Timestamp = Timestamp {
        unix_millis: MAX_MILLIS,
    };

    /// An instant from unix seconds, clamped to [`Timestamp::MIN`]`..=`[`Timestamp::MAX`]
    /// (use [`Timestamp::try_from_unix_seconds`] to reject instead).
    pub fn from_unix_seconds(seconds: i64) -> Self {
        Self::from_unix_millis(seconds.saturating_mul(1000))
    }

    /// An instant from unix milliseconds, clamped to
    /// [`Timestamp::MIN`]`..=`[`Timestamp::MAX`].
    pub fn from_unix_millis(unix_millis: i64) -> Self {
        Timestamp {
            unix_millis: unix_millis.clamp(MIN_MILLIS, MAX_MILLIS),
        }
    }

    /// An instant from unix seconds, as read from a file.
    ///
    /// # Errors
    /// [`FlagError::InvalidTimestamp`] naming the value when it lies outside
    /// [`Timestamp::MIN`]`..=`[`Timestamp::MAX`].
    pub fn try_from_unix_seconds(seconds: i64) -> Result<Self, FlagError> {
        seconds
            .checked_mul(1000)
            .filter(|ms| (MIN_MILLIS..=MAX_MILLIS).contains(ms))
            .map(|unix_millis| Timestamp { unix_millis })
            .ok_or_else(|| FlagError::InvalidTimestamp {
                value: format!("{seconds} (unix seconds)"),
                reason: OUT_OF_RANGE,
            })
    }

    /// Milliseconds since the unix epoch.
    pub fn unix_millis(self) -> i64 {
        self.unix_millis
    }

    /// Whole seconds since the unix epoch (rounded towards negative infinity).
    pub fn unix_seconds(self) -> i64 {
        self.unix_millis.div_euclid(1000)
    }

    /// This instant plus `duration`, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self::from_unix_millis(self.unix_millis.saturating_add(millis))
    }

    /// The time from `earlier` to `self`, or zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        let diff = self.unix_millis.saturating_sub(earlier.unix_millis);
        Duration::from_millis(u64::try_from(diff).unwrap_or(0))
    }

    /// Parses an RFC 3339 date-time such as `2026-12-01T00:00:00Z`,
    /// `2026-12-01t08:30:00.250+02:00` or `2026-12-01 00:00:00Z`. Fractions beyond
    /// milliseconds are truncated.
    ///
    /// # Errors
    /// [`FlagError::InvalidTimestamp`] naming the value and the rule it broke, including
    /// an instant that an offset or a leap second moves outside
    /// [`Timestamp::MIN`]`..=`[`Timestamp::MAX`] (`9999-12-31T23:30:00-01:00`).
    pub fn parse_rfc3339(value: &str) -> Result<Self, FlagError> {
        parse_rfc3339(value).map_err(|reason| FlagError::InvalidTimestamp {
            value: value.to_owned(),
            reason,
        })
    }
}

impl From<SystemTime> for Timestamp {
    /// The instant, clamped to [`Timestamp::MIN`]`..=`[`Timestamp::MAX`].
    fn from(time: SystemTime) -> Self {
        Self::from_unix_millis(match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_millis())
                .map(|m| -m)
                .unwrap_or(i64::MIN),
        })
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC; milliseconds only when non-zero. Always four-digit years, which
    /// [`Timestamp::parse_rfc3339`] reads back to the same instant.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.unix_millis.div_euclid(86_400_000);
        let in_day = self.unix_millis.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        let secs = in_day / 1000;
        let millis = in_day % 1000;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60
        )?;
        if millis != 0 {
            write!(f, ".{millis:03}")?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an rfc 3339 date-time string or a number of unix seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Timestamp::try_from_unix_seconds(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                // Beyond i64 is beyond the range as well: saturate, then reject.
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
                let millis = (v * 1000.0).floor();
                // The range check comes first, so the cast is exact and never saturates.
                if millis >= MIN_MILLIS as f64 && millis <= MAX_MILLIS as f64 {
                    Ok(Timestamp::from_unix_millis(millis as i64))
                } else {
                    Err(E::custom(FlagError::InvalidTimestamp {
                        value: format!("{v} (unix seconds)"),
                        reason: OUT_OF_RANGE,
                    }))
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `deserialize_with` helpers that put the field's name in front of a timestamp error
/// (serde_json names the line and column, not the field).
pub(crate) mod field {
    use serde::{Deserialize, Deserializer, de};

    use super::Timestamp;

    fn named<'de, D: Deserializer<'de>>(
        field: &'static str,
        deserializer: D,
    ) -> Result<Timestamp, D::Error> {
        Timestamp::deserialize(deserializer)
            .map_err(|e| <D::Error as de::Error>::custom(format_args!("{field}: {e}")))
    }

    /// The `start` of a progressive rollout.
    pub(crate) fn start<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        named("start", d)
    }

    /// The `end` of a progressive rollout.
    pub(crate) fn end<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        named("end", d)
    }

    /// A rollout state's `started_at`.
    pub(crate) fn started_at<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        named("started_at", d)
    }

    /// A rollout state's `step_started_at`.
    pub(crate) fn step_started_at<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        named("step_started_at", d)
    }

    /// A rollout event's `at`.
    pub(crate) fn at<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        named("at", d)
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Reads exactly `n` ASCII digits at `*pos`.
fn digits(bytes: &[u8], pos: &mut usize, n: usize) -> Result<u32, &'static str> {
    let slice = bytes
        .get(*pos..*pos + n)
        .ok_or("rfc 3339 date-time is truncated")?;
    let mut value = 0u32;
    for &b in slice {
        if !b.is_ascii_digit() {
            return Err("expected a digit");
        }
        value = value * 10 + u32::from(b - b'0');
    }
    *pos += n;
    Ok(value)
}

fn expect(bytes: &[u8], pos: &mut usize, allowed: &[u8]) -> Result<u8, &'static str> {
    match bytes.get(*pos) {
        Some(b) if allowed.contains(b) => {
            *pos += 1;
            Ok(*b)
        }
        Some(_) => Err("unexpected separator in rfc 3339 date-time"),
        None => Err("rfc 3339 date-time is truncated"),
    }
}

fn parse_rfc3339(value: &str) -> Result<Timestamp, &'static str> {
    let b = value.trim().as_bytes();
    let mut pos = 0;
    let year = i64::from(digits(b, &mut pos, 4)?);
    expect(b, &mut pos, b"-")?;
    let month = digits(b, &mut pos, 2)?;
    expect(b, &mut pos, b"-")?;
    let day = digits(b, &mut pos, 2)?;
    expect(b, &mut pos, b"Tt ")?;
    let hour = digits(b, &mut pos, 2)?;
    expect(b, &mut pos, b":")?;
    let minute = digits(b, &mut pos, 2)?;
    expect(b, &mut pos, b":")?;
    let second = digits(b, &mut pos, 2)?;
    if !(1..=12).contains(&month) {
        return Err("month must be 01..=12");
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err("day does not exist in that month");
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err("time of day out of range");
    }
    let mut millis = 0i64;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while b.get(pos).is_some_and(u8::is_ascii_digit) {
            if pos - start < 3 {
                millis = millis * 10 + i64::from(b[pos] - b'0');
            }
            pos += 1;
        }
        if pos == start {
            return Err("fraction of a second has no digits");
        }
        for _ in (pos - start)..3 {
            millis *= 10;
        }
    }
    let offset_secs: i64 = match expect(b, &mut pos, b"Zz+-")? {
        b'Z' | b'z' => 0,
        sign => {
            let oh = digits(b, &mut pos, 2)?;
            expect(b, &mut pos, b":")?;
            let om = digits(b, &mut pos, 2)?;
            if oh > 23 || om > 59 {
                return Err("utc offset out of range");
            }
            let secs = i64::from(oh * 3600 + om * 60);
            if sign == b'-' { -secs } else { secs }
        }
    };
    if pos != b.len() {
        return Err("trailing characters after rfc 3339 date-time");
    }
    // A leap second (:60) is folded into the next second, as most systems do.
    let secs = days_from_civil(year, month, day) * 86_400
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second)
        - offset_secs;
    // Four digits bound the year, so this cannot overflow; an offset or a leap second can
    // still step outside the range that reads back.
    let unix_millis = secs * 1000 + millis;
    if !(MIN_MILLIS..=MAX_MILLIS).contains(&unix_millis) {
        return Err(OUT_OF_RANGE);
    }
    Ok(Timestamp { unix_millis })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_and_offsets() {
        let t = Timestamp::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        assert_eq!(t.unix_seconds(), 1_796_083_200);
        let same = Timestamp::parse_rfc3339("2026-12-01T02:00:00+02:00").unwrap();
        assert_eq!(t, same);
        let frac = Timestamp::parse_rfc3339("1970-01-01t00:00:01.5z").unwrap();
        assert_eq!(frac.unix_millis(), 1500);
        let before = Timestamp::parse_rfc3339("1969-12-31T23:59:59Z").unwrap();
        assert_eq!(before.unix_millis(), -1000);
    }

    #[test]
    fn rejects_invalid_dates_with_the_value() {
        for bad in [
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T00:00:00",
            "2026-12-01",
            "2026-12-01T00:00:00Zjunk",
            "yesterday",
        ] {
            let err = Timestamp::parse_rfc3339(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!(Timestamp::parse_rfc3339("2024-02-29T00:00:00Z").is_ok());
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "2026-12-01T00:00:00Z",
            "2000-02-29T12:34:56.789Z",
            "1969-07-20T20:17:40Z",
        ] {
            let t = Timestamp::parse_rfc3339(s).unwrap();
            assert_eq!(t.to_string(), s);
        }
    }

    #[test]
    fn serde_accepts_strings_and_unix_seconds() {
        let a: Timestamp = serde_json::from_str("\"2026-12-01T00:00:00Z\"").unwrap();
        let b: Timestamp = serde_json::from_str("1796083200").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            "\"2026-12-01T00:00:00Z\""
        );
        assert!(serde_json::from_str::<Timestamp>("\"soon\"").is_err());
    }

    #[test]
    fn system_time_conversion() {
        let t = UNIX_EPOCH + Duration::from_millis(1_234_567);
        assert_eq!(Timestamp::from(t).unix_millis(), 1_234_567);
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(Timestamp::from(before).unix_millis(), -5000);
    }

    #[test]
    fn range_ends_are_the_four_digit_years() {
        assert_eq!(days_from_civil(0, 1, 1) * 86_400_000, MIN_MILLIS);
        assert_eq!(days_from_civil(10_000, 1, 1) * 86_400_000 - 1, MAX_MILLIS);
        assert_eq!(Timestamp::MIN.to_string(), "0000-01-01T00:00:00Z");
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59.999Z");
        for end in [Timestamp::MIN, Timestamp::MAX] {
            assert_eq!(Timestamp::parse_rfc3339(&end.to_string()).unwrap(), end);
        }
    }

    #[test]
    fn instants_past_year_9999_are_rejected_with_the_value() {
        // 1e12 unix seconds is in year 33658: it used to be accepted and written back
        // with a five-digit year that the parser refuses.
        let err = serde_json::from_str::<Timestamp>("1000000000000").unwrap_err();
        assert!(
            err.to_string().contains("1000000000000 (unix seconds)"),
            "{err}"
        );
        assert!(err.to_string().contains("9999-12-31"), "{err}");
        for bad in ["1e14", "-1e12", "18446744073709551615", "1e300"] {
            let err = serde_json::from_str::<Timestamp>(bad).unwrap_err();
            assert!(err.to_string().contains("unix seconds"), "{bad}: {err}");
        }
        assert_eq!(
            serde_json::from_str::<Timestamp>("253402300799").unwrap(),
            Timestamp::parse_rfc3339("9999-12-31T23:59:59Z").unwrap()
        );
        assert!(serde_json::from_str::<Timestamp>("253402300800").is_err());
        assert_eq!(
            serde_json::from_str::<Timestamp>("-62167219200").unwrap(),
            Timestamp::MIN
        );
        assert!(serde_json::from_str::<Timestamp>("-62167219201").is_err());
        // Offsets and leap seconds that leave the range.
        for bad in [
            "9999-12-31T23:30:00-01:00",
            "9999-12-31T23:59:60Z",
            "0000-01-01T00:30:00+01:00",
        ] {
            let err = Timestamp::parse_rfc3339(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
            assert!(err.to_string().contains("four digits"), "{err}");
        }
        assert!(matches!(
            Timestamp::try_from_unix_seconds(i64::MAX),
            Err(FlagError::InvalidTimestamp { .. })
        ));
    }

    #[test]
    fn infallible_constructors_clamp_into_the_range() {
        assert_eq!(Timestamp::from_unix_seconds(i64::MAX), Timestamp::MAX);
        assert_eq!(Timestamp::from_unix_millis(i64::MIN), Timestamp::MIN);
        assert_eq!(
            Timestamp::MAX.saturating_add(Duration::from_secs(1)),
            Timestamp::MAX
        );
        let far = UNIX_EPOCH + Duration::from_secs(1_000_000_000_000);
        assert_eq!(Timestamp::from(far), Timestamp::MAX);
    }

    proptest::proptest! {
        /// Every timestamp, however made, prints as RFC 3339 that parses to itself.
        #[test]
        fn display_parse_round_trip(millis in proptest::num::i64::ANY) {
            let t = Timestamp::from_unix_millis(millis);
            proptest::prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_string()).unwrap(), t);
        }

        /// Unix seconds are either rejected or read as an instant whose JSON reads back.
        #[test]
        fn accepted_unix_seconds_round_trip(seconds in proptest::prop_oneof![
            proptest::num::i64::ANY,
            -70_000_000_000i64..260_000_000_000,
        ]) {
            let in_range = (MIN_MILLIS / 1000..=MAX_MILLIS / 1000).contains(&seconds);
            match serde_json::from_str::<Timestamp>(&seconds.to_string()) {
                Ok(t) => {
                    proptest::prop_assert!(in_range, "{seconds} accepted");
                    proptest::prop_assert_eq!(t.unix_seconds(), seconds);
                    let json = serde_json::to_string(&t).unwrap();
                    proptest::prop_assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
                }
                Err(e) => {
                    proptest::prop_assert!(!in_range, "{seconds} rejected: {e}");
                    proptest::prop_assert!(e.to_string().contains(&seconds.to_string()), "{e}");
                }
            }
        }

        #[test]
        fn civil_round_trip(days in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            proptest::prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
