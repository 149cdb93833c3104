//! A health sample from the server's Prometheus exposition (`GET /metrics`), for
//! `genesis deploy tick --metrics-url`.
//!
//! The exposition is cumulative since the server started, so each tick keeps the
//! counters it saw ([`Snapshot`], persisted next to the rollout state) and judges the
//! difference: the traffic since the previous tick. The first tick, or one after a
//! counter reset (server restart), judges the totals since the server started.
//! Requests to the operational probes (`/health`, `/ready`, `/metrics`) are left out;
//! errors are responses with a 5xx status. No `genesis_requests_total` series at all is
//! a missing sample, never a healthy one.

use std::collections::BTreeMap;
use std::time::Duration;

use genesis::flags::HealthSample;
use serde::{Deserialize, Serialize};

/// Endpoints that are probes, not traffic.
const PROBES: &[&str] = &["/health", "/ready", "/metrics"];

/// The counters a tick judges, summed over traffic endpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    /// Requests handled.
    pub(crate) requests: f64,
    /// Requests answered with a 5xx status.
    pub(crate) errors: f64,
    /// Cumulative latency histogram: bucket upper bound (seconds, `+Inf` as `f64::MAX`) →
    /// count.
    pub(crate) buckets: Vec<(f64, f64)>,
}

/// One series: name, labels, value.
fn parse_series(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (head, rest) = match line.find('{') {
        Some(open) => {
            let close = open + line[open..].find('}')?;
            (&line[..close + 1], &line[close + 1..])
        }
        None => {
            let sp = line.find(char::is_whitespace)?;
            (&line[..sp], &line[sp..])
        }
    };
    let value: f64 = match rest.split_whitespace().next()? {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match head.find('{') {
        None => (head, BTreeMap::new()),
        Some(open) => {
            let mut labels = BTreeMap::new();
            // Label values here never contain `",` (endpoints are route templates).
            for pair in head[open + 1..head.len() - 1].split("\",") {
                let (k, v) = pair.split_once('=')?;
                labels.insert(k.trim(), v.trim().trim_matches('"'));
            }
            (&head[..open], labels)
        }
    };
    Some((name, labels, value))
}

/// A bucket bound in seconds: `+Inf` (or [`INF_BOUND`] itself) as [`INF_BOUND`], so
/// snapshots round-trip through JSON; otherwise a number a [`Duration`] can hold.
/// `None` for anything else (NaN, negative, `-Inf`, 1e300, not a number): such a bound
/// cannot be a latency.
fn parse_le(le: &str) -> Option<f64> {
    let bound: f64 = le.parse().ok()?;
    if bound == f64::INFINITY || bound == INF_BOUND {
        return Some(INF_BOUND);
    }
    // `+ 0.0` turns `-0` into `0`, so both land in one bucket.
    Duration::try_from_secs_f64(bound).ok().map(|_| bound + 0.0)
}

/// A latency as a [`Duration`], saturating: negative or NaN is zero, and beyond what a
/// `Duration` holds is [`Duration::MAX`] (as unhealthy as a latency gets).
fn saturating_seconds(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX)
}

/// Why an exposition gives no snapshot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ScrapeError {
    /// No `genesis_requests_total` series at all.
    NoRequests,
    /// A traffic latency bucket whose `le` is not a duration in seconds.
    BadBound {
        /// 1-based line in the exposition.
        line: usize,
        /// The bound as sent (cut to 32 characters).
        le: String,
    },
    /// A traffic latency bucket whose count is negative, infinite or NaN.
    BadCount {
        /// 1-based line in the exposition.
        line: usize,
        /// The count.
        count: f64,
    },
}

impl std::fmt::Display for ScrapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScrapeError::NoRequests => write!(f, "no genesis_requests_total series"),
            ScrapeError::BadBound { line, le } => write!(
                f,
                "line {line}: latency bucket bound le={le:?} is not a duration in seconds \
                 (0 to {:e}, or +Inf)",
                Duration::MAX.as_secs_f64()
            ),
            ScrapeError::BadCount { line, count } => write!(
                f,
                "line {line}: latency bucket count {count} is not a finite count"
            ),
        }
    }
}

impl std::error::Error for ScrapeError {}

/// The `+Inf` bucket bound (JSON has no infinity).
const INF_BOUND: f64 = f64::MAX;

/// Sums the request counters and latency buckets of traffic endpoints.
///
/// # Errors
/// [`ScrapeError::NoRequests`] when the exposition has no `genesis_requests_total`
/// series; [`ScrapeError::BadBound`] / [`ScrapeError::BadCount`] for a traffic latency
/// bucket that cannot be judged (a broken or hostile server is no evidence of health).
pub(crate) fn snapshot(exposition: &str) -> Result<Snapshot, ScrapeError> {
    let mut seen = false;
    let mut snap = Snapshot::default();
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (index, line) in exposition.lines().enumerate() {
        let Some((name, labels, value)) = parse_series(line) else {
            continue;
        };
        let probe = labels.get("endpoint").is_some_and(|e| PROBES.contains(e));
        match name {
            "genesis_requests_total" => {
                seen = true;
                if probe || !value.is_finite() {
                    continue;
                }
                snap.requests += value;
                if labels.get("status").is_some_and(|s| s.starts_with('5')) {
                    snap.errors += value;
                }
            }
            "genesis_request_duration_seconds_bucket" if !probe => {
                let Some(le) = labels.get("le") else {
                    continue;
                };
                let line = index + 1;
                let bound = parse_le(le).ok_or_else(|| ScrapeError::BadBound {
                    line,
                    le: le.chars().take(32).collect(),
                })?;
                if !(value.is_finite() && value >= 0.0) {
                    return Err(ScrapeError::BadCount { line, count: value });
                }
                buckets.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += value;
            }
            _ => {}
        }
    }
    if !seen {
        return Err(ScrapeError::NoRequests);
    }
    let mut list: Vec<(f64, f64)> = buckets.into_values().collect();
    list.sort_by(|a, b| a.0.total_cmp(&b.0));
    snap.buckets = list;
    Ok(snap)
}

impl Snapshot {
    /// The traffic since `previous` (or all of it when there is none, or the counters
    /// went down because the server restarted).
    pub(crate) fn since(&self, previous: Option<&Snapshot>) -> Snapshot {
        let Some(prev) =
            previous.filter(|p| p.requests <= self.requests && p.errors <= self.errors)
        else {
            return self.clone();
        };
        let before = |le: f64| {
            prev.buckets
                .iter()
                .find(|(b, _)| b.to_bits() == le.to_bits())
                .map_or(0.0, |(_, c)| *c)
        };
        Snapshot {
            requests: self.requests - prev.requests,
            errors: self.errors - prev.errors,
            buckets: self
                .buckets
                .iter()
                .map(|(le, c)| (*le, (c - before(*le)).max(0.0)))
                .collect(),
        }
    }

    /// The 95th percentile latency from the cumulative buckets, interpolated linearly
    /// within the bucket as Prometheus' `histogram_quantile` does; a quantile in the
    /// `+Inf` bucket is the highest finite bound. `None` without buckets.
    pub(crate) fn p95(&self) -> Option<Duration> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return Some(Duration::ZERO);
        }
        let rank = 0.95 * total;
        let mut lower = (0.0f64, 0.0f64);
        for &(le, count) in &self.buckets {
            if count >= rank {
                let seconds = if le >= INF_BOUND {
                    lower.0
                } else if count > lower.1 {
                    // The fraction first: it is in [0, 1], where the product of the
                    // width and a huge count would overflow to infinity.
                    let fraction = ((rank - lower.1) / (count - lower.1)).clamp(0.0, 1.0);
                    lower.0 + (le - lower.0) * fraction
                } else {
                    le
                };
                return Some(saturating_seconds(seconds));
            }
            lower = (le, count);
        }
        Some(saturating_seconds(lower.0))
    }

    /// The health sample this window gives: `None` without a latency histogram (a
    /// partial exposition is not evidence of health).
    pub(crate) fn sample(&self) -> Option<HealthSample> {
        let p95 = self.p95()?;
        let error_rate = if self.requests > 0.0 {
            self.errors / self.requests
        } else {
            0.0
        };
        Some(HealthSample {
            error_rate,
            p95_latency: p95,
            requests: self.requests.max(0.0).round() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP genesis_requests_total requests handled
# TYPE genesis_requests_total counter
genesis_requests_total{endpoint="/api/tasks",status="200"} 90
genesis_requests_total{endpoint="/api/tasks",status="503"} 8
genesis_requests_total{endpoint="/api/status",status="400"} 2
genesis_requests_total{endpoint="/health",status="500"} 1000
genesis_request_duration_seconds_bucket{endpoint="/api/tasks",le="0.1"} 50
genesis_request_duration_seconds_bucket{endpoint="/api/tasks",le="0.5"} 90
genesis_request_duration_seconds_bucket{endpoint="/api/tasks",le="1"} 98
genesis_request_duration_seconds_bucket{endpoint="/api/tasks",le="+Inf"} 98
genesis_request_duration_seconds_bucket{endpoint="/api/status",le="0.1"} 2
genesis_request_duration_seconds_bucket{endpoint="/api/status",le="0.5"} 2
genesis_request_duration_seconds_bucket{endpoint="/api/status",le="1"} 2
genesis_request_duration_seconds_bucket{endpoint="/api/status",le="+Inf"} 2
genesis_request_duration_seconds_bucket{endpoint="/health",le="+Inf"} 1000
genesis_request_duration_seconds_sum{endpoint="/api/tasks"} 20.5
"#;

    #[test]
    fn sums_traffic_and_leaves_probes_out() {
        let s = snapshot(TEXT).unwrap();
        assert_eq!(s.requests, 100.0);
        assert_eq!(s.errors, 8.0);
        assert_eq!(s.buckets.len(), 4);
        assert_eq!(s.buckets[3], (f64::MAX, 100.0));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), s);
        let sample = s.sample().unwrap();
        assert_eq!(sample.requests, 100);
        assert!((sample.error_rate - 0.08).abs() < 1e-12);
        // rank 95 lies in (0.5, 1]: 0.5 + 0.5 * (95 - 92) / (100 - 92) = 0.6875 s
        assert_eq!(sample.p95_latency, Duration::from_micros(687_500));
    }

    #[test]
    fn no_request_series_is_missing_not_healthy() {
        assert_eq!(
            snapshot("# HELP x\nprocess_cpu_seconds_total 3\n"),
            Err(ScrapeError::NoRequests)
        );
        assert_eq!(snapshot(""), Err(ScrapeError::NoRequests));
        let s =
            snapshot("genesis_requests_total{endpoint=\"/api/tasks\",status=\"200\"} 5\n").unwrap();
        assert!(s.sample().is_none(), "no histogram: no sample");
    }

    #[test]
    fn windows_are_deltas_and_survive_restarts() {
        let before = snapshot(TEXT).unwrap();
        let later = TEXT
            .replace("status=\"200\"} 90", "status=\"200\"} 190")
            .replace("le=\"0.1\"} 50", "le=\"0.1\"} 150")
            .replace("le=\"0.5\"} 90", "le=\"0.5\"} 190")
            .replace("le=\"1\"} 98", "le=\"1\"} 198")
            .replace("le=\"+Inf\"} 98", "le=\"+Inf\"} 198");
        let now = snapshot(&later).unwrap();
        let window = now.since(Some(&before));
        assert_eq!((window.requests, window.errors), (100.0, 0.0));
        let sample = window.sample().unwrap();
        assert_eq!(sample.error_rate, 0.0);
        // All 100 new requests are in the first bucket (0, 0.1]: rank 95 → 95 ms.
        assert_eq!(sample.p95_latency, Duration::from_millis(95));
        // A restart resets counters: judge the new totals.
        let restarted =
            snapshot("genesis_requests_total{endpoint=\"/api/tasks\",status=\"200\"} 3\n").unwrap();
        assert_eq!(restarted.since(Some(&now)).requests, 3.0);
    }

    #[test]
    fn p95_in_the_inf_bucket_is_the_highest_finite_bound() {
        let s = Snapshot {
            requests: 10.0,
            errors: 0.0,
            buckets: vec![(0.1, 1.0), (0.5, 2.0), (INF_BOUND, 10.0)],
        };
        assert_eq!(s.p95(), Some(Duration::from_millis(500)));
    }

    /// The traffic series with one extra latency bucket line `le=<le>` of `count`.
    fn with_bucket(le: &str, count: &str) -> String {
        format!(
            "genesis_requests_total{{endpoint=\"/api/tasks\",status=\"200\"}} 10\n\
             genesis_request_duration_seconds_bucket{{endpoint=\"/api/tasks\",le=\"1\"}} 0\n\
             genesis_request_duration_seconds_bucket{{endpoint=\"/api/tasks\",le=\"{le}\"}} {count}\n\
             genesis_request_duration_seconds_bucket{{endpoint=\"/api/tasks\",le=\"+Inf\"}} 10\n"
        )
    }

    #[test]
    fn hostile_bucket_bounds_and_counts_are_errors_not_panics() {
        let bad_bound = |le: &str| ScrapeError::BadBound {
            line: 3,
            le: le.to_owned(),
        };
        // (le, count, expected p95 or error)
        let table: &[(&str, &str, Result<Duration, ScrapeError>)] = &[
            // Beyond any Duration (from_secs_f64 used to panic on these).
            ("1e300", "10", Err(bad_bound("1e300"))),
            ("1e20", "10", Err(bad_bound("1e20"))),
            (
                "1.7976931348623155e308",
                "10",
                Err(bad_bound("1.7976931348623155e308")),
            ),
            ("NaN", "10", Err(bad_bound("NaN"))),
            ("-Inf", "10", Err(bad_bound("-Inf"))),
            ("-1", "10", Err(bad_bound("-1"))),
            ("abc", "10", Err(bad_bound("abc"))),
            ("", "10", Err(bad_bound(""))),
            (
                "1",
                "NaN",
                Err(ScrapeError::BadCount {
                    line: 3,
                    count: f64::NAN,
                }),
            ),
            (
                "2",
                "-3",
                Err(ScrapeError::BadCount {
                    line: 3,
                    count: -3.0,
                }),
            ),
            (
                "2",
                "+Inf",
                Err(ScrapeError::BadCount {
                    line: 3,
                    count: f64::INFINITY,
                }),
            ),
            // Odd but valid: a huge finite bound a Duration can hold, zero, +Inf spelt
            // otherwise, and f64::MAX (how snapshots store +Inf).
            (
                "1e18",
                "10",
                Ok(Duration::from_secs_f64(
                    1.0 + (1e18 - 1.0) * (0.95 * 10.0) / 10.0,
                )),
            ),
            ("0", "0", Ok(Duration::from_secs(1))),
            ("-0", "0", Ok(Duration::from_secs(1))),
            ("inf", "10", Ok(Duration::from_secs(1))),
            ("1.7976931348623157e308", "10", Ok(Duration::from_secs(1))),
        ];
        for (le, count, want) in table {
            let got = snapshot(&with_bucket(le, count))
                .map(|s| s.since(None).sample().unwrap().p95_latency);
            match (&got, want) {
                // NaN != NaN: compare the rest.
                (
                    Err(ScrapeError::BadCount { line, count: c }),
                    Err(ScrapeError::BadCount { line: l, count: w }),
                ) if c.is_nan() && w.is_nan() => assert_eq!(line, l),
                _ => assert_eq!(&got, want, "le={le:?} count={count:?}"),
            }
        }
        // The message names the line and the bound as sent.
        let e = snapshot(&with_bucket("1e300", "10"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("line 3: latency bucket bound le=\"1e300\""),
            "{e}"
        );
        // A probe's buckets are not judged, so a bad one there does not matter.
        let probe = "genesis_requests_total{endpoint=\"/api/tasks\",status=\"200\"} 1\n\
                     genesis_request_duration_seconds_bucket{endpoint=\"/health\",le=\"1e300\"} 1\n";
        assert!(snapshot(probe).is_ok());
    }

    #[test]
    fn p95_saturates_instead_of_panicking() {
        // Snapshots are also built by hand and read back from disk: p95 never panics.
        for (bound, want) in [
            (1e300, Duration::MAX),
            // An infinite bound is the `+Inf` bucket: the highest finite bound below, 0.
            (f64::INFINITY, Duration::ZERO),
            (f64::NAN, Duration::ZERO),
            (-5.0, Duration::ZERO),
        ] {
            let s = Snapshot {
                requests: 10.0,
                errors: 0.0,
                buckets: vec![(bound, 10.0), (INF_BOUND, 10.0)],
            };
            // rank 9.5 in the first bucket: 0 + bound * 9.5 / 10.
            assert_eq!(s.p95(), Some(want), "{bound}");
        }
    }

    /// One exposition line from pieces a hostile server may send.
    fn hostile_line() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let name = prop_oneof![
            Just("genesis_requests_total"),
            Just("genesis_request_duration_seconds_bucket"),
            Just("genesis_request_duration_seconds_sum"),
            Just("other"),
        ];
        let number = prop_oneof![
            any::<f64>().prop_map(|f| f.to_string()),
            (0u32..1_000).prop_map(|n| n.to_string()),
            (-400i32..400).prop_map(|e| format!("1e{e}")),
            Just("+Inf".to_owned()),
            Just("-Inf".to_owned()),
            Just("NaN".to_owned()),
            Just("1.7976931348623157e308".to_owned()),
            "[ -~]{0,8}",
        ];
        let endpoint = prop_oneof![Just("/api/tasks"), Just("/health"), Just("/x\"")];
        let status = prop_oneof![Just("200"), Just("503"), Just("")];
        (name, endpoint, status, number.clone(), number, "[ -~]{0,6}").prop_map(
            |(name, endpoint, status, le, value, junk)| {
                format!(
                    "{name}{{endpoint=\"{endpoint}\",status=\"{status}\",le=\"{le}\"}} {value}{junk}"
                )
            },
        )
    }

    proptest::proptest! {
        #[test]
        fn hostile_expositions_never_panic_and_p95_stays_within_the_bounds(
            lines in proptest::collection::vec(hostile_line(), 0..12),
            previous in proptest::collection::vec(hostile_line(), 0..6),
        ) {
            let text = lines.join("\n");
            let prev = snapshot(&previous.join("\n")).ok();
            if let Ok(snap) = snapshot(&text) {
                // Every bound is a Duration or +Inf.
                proptest::prop_assert!(snap
                    .buckets
                    .iter()
                    .all(|(b, _)| *b == INF_BOUND || Duration::try_from_secs_f64(*b).is_ok()));
                let finite_max = snap
                    .buckets
                    .iter()
                    .map(|(b, _)| *b)
                    .filter(|b| *b < INF_BOUND)
                    .fold(0.0f64, f64::max);
                for window in [snap.since(None), snap.since(prev.as_ref())] {
                    if let Some(sample) = window.sample() {
                        let p = sample.p95_latency.as_secs_f64();
                        // Within the highest finite bound (give or take float rounding).
                        proptest::prop_assert!(
                            p <= finite_max * (1.0 + 1e-9) + 1e-9,
                            "p95 {p} > {finite_max}"
                        );
                    }
                }
            }
        }

        #[test]
        fn p95_stays_within_the_buckets_and_windows_never_go_negative(
            counts in proptest::collection::vec(0u32..1_000, 1..8),
            extra in proptest::collection::vec(0u32..1_000, 1..8),
        ) {
            let bounds = [0.005, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];
            let cumulative = |c: &[u32]| {
                let mut acc = 0.0;
                let mut out: Vec<(f64, f64)> = bounds.iter().zip(c).map(|(b, n)| { acc += f64::from(*n); (*b, acc) }).collect();
                out.push((INF_BOUND, acc));
                out
            };
            let before = Snapshot { requests: 0.0, errors: 0.0, buckets: cumulative(&counts) };
            let mut later_counts = counts.clone();
            for (c, e) in later_counts.iter_mut().zip(&extra) { *c += e; }
            let total = before.buckets.last().unwrap().1;
            let after = Snapshot { requests: total, errors: 0.0, buckets: cumulative(&later_counts) };
            let p = before.p95().unwrap().as_secs_f64();
            proptest::prop_assert!((0.0..=30.0).contains(&p), "p95 {p}");
            let window = after.since(Some(&before));
            proptest::prop_assert!(window.buckets.iter().all(|(_, c)| *c >= 0.0));
            proptest::prop_assert!(window.buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative");
        }
    }
}
