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

/// `+Inf` is kept as [`INF_BOUND`] so snapshots round-trip through JSON.
fn parse_le(le: &str) -> Option<f64> {
    match le {
        "+Inf" | "Inf" => Some(INF_BOUND),
        v => v.parse::<f64>().ok().map(|b| b.min(INF_BOUND)),
    }
}

/// The `+Inf` bucket bound (JSON has no infinity).
const INF_BOUND: f64 = f64::MAX;

/// Sums the request counters and latency buckets of traffic endpoints. `None` when the
/// exposition has no `genesis_requests_total` series.
pub(crate) fn snapshot(exposition: &str) -> Option<Snapshot> {
    let mut seen = false;
    let mut snap = Snapshot::default();
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for line in exposition.lines() {
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
                if let Some(le) = labels.get("le").and_then(|l| parse_le(l)) {
                    buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += value;
                }
            }
            _ => {}
        }
    }
    let mut list: Vec<(f64, f64)> = buckets.into_values().collect();
    list.sort_by(|a, b| a.0.total_cmp(&b.0));
    snap.buckets = list;
    seen.then_some(snap)
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
                    lower.0 + (le - lower.0) * (rank - lower.1) / (count - lower.1)
                } else {
                    le
                };
                return Some(Duration::from_secs_f64(seconds.max(0.0)));
            }
            lower = (le, count);
        }
        Some(Duration::from_secs_f64(lower.0.max(0.0)))
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
        assert!(snapshot("# HELP x\nprocess_cpu_seconds_total 3\n").is_none());
        assert!(snapshot("").is_none());
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

    proptest::proptest! {
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
