//! A health sample from the server's Prometheus exposition (`GET /metrics`), for
//! `genesis deploy tick --metrics-url`.
//!
//! The exposition is cumulative since the server started, so each tick keeps the
//! counters it saw ([`Snapshot`], persisted next to the rollout state: the baseline) and
//! judges the difference: the traffic since the baseline. `deploy start` takes the first
//! baseline (or, when it cannot read the metrics, the first tick takes it and holds), so
//! traffic from before the rollout is never judged; after a server restart the totals
//! since the restart are judged. A restart is seen from the standard
//! `process_start_time_seconds` gauge when both scrapes have it (it changed), else from
//! a counter that went down.
//! Requests to the operational probes (`/health`, `/ready`, `/metrics`) are left out;
//! errors are responses with a 5xx status. Runs are accepted with 202 and fail later, so
//! the task outcomes count too: `genesis_tasks_total{status}` (`succeeded` and `failed`
//! are finished tasks; `skipped` ones never ran) and the `genesis_task_duration_seconds`
//! histogram (tasks that succeeded).
//!
//! A server creates `genesis_requests_total` and the request histogram with its first
//! API request, so right after a start an exposition that is clearly the Genesis
//! server's (it has other `genesis_` families, which the server registers at start-up)
//! but no request series means zero requests: a valid sample (held for insufficient
//! traffic) and a valid baseline. An exposition with no `genesis_` family at all (the
//! wrong URL) is a missing sample, never a healthy one.
//!
//! **Cohorts.** While a pipeline flag splits subjects (a percentage strictly between 0
//! and 100 %), the server also counts its plan and run requests and their runs' tasks
//! per cohort: `genesis_cohort_requests_total{flag, variant, outcome}`,
//! `genesis_cohort_request_duration_seconds{flag, variant}`,
//! `genesis_cohort_tasks_total{flag, variant, status}` and
//! `genesis_cohort_task_duration_seconds{flag, variant}`. A snapshot keeps the rolled-out
//! flag's `on` cohort ([`Snapshot::cohort`]), and the tick judges it
//! ([`Snapshot::judged`]) when the exposition has cohort series for the flag; otherwise
//! (an older server, a flag outside the pipeline, no plan or run request since the flag
//! split subjects) the server-wide numbers.

use std::collections::BTreeMap;
use std::time::Duration;

use genesis::flags::{HealthSample, TaskSample};
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
    /// Whether the exposition has `genesis_tasks_total` (a server of this release always
    /// does, from the start). Baselines written before task numbers existed lack it, and
    /// such a baseline cannot measure a window of task numbers (see
    /// [`Snapshot::measures`]).
    #[serde(default)]
    pub(crate) has_tasks: bool,
    /// Tasks that succeeded.
    #[serde(default)]
    pub(crate) tasks_succeeded: f64,
    /// Tasks that failed.
    #[serde(default)]
    pub(crate) tasks_failed: f64,
    /// Cumulative task duration histogram, as `buckets`.
    #[serde(default)]
    pub(crate) task_buckets: Vec<(f64, f64)>,
    /// The server process's `process_start_time_seconds`, when it exports the gauge: a
    /// different value in a later scrape is a restart, whatever the counters say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) start_time: Option<f64>,
    /// Whether the snapshot was taken by a `genesis` that reads cohort series (this
    /// release on; then a missing [`Snapshot::cohort`] means the exposition had none for
    /// the flag). A baseline written before lacks it, and cannot measure a cohort (see
    /// [`Snapshot::measures`]).
    #[serde(default)]
    pub(crate) reads_cohorts: bool,
    /// The rolled-out flag's `on` cohort, when the exposition has cohort series for the
    /// flag (of either variant): its plan and run requests (`requests`, `errors`, and
    /// `buckets` from the cohort's request histogram) and its runs' tasks (`has_tasks` is
    /// then always set). `start_time`, `reads_cohorts` and `cohort` are unused in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cohort: Option<Box<Snapshot>>,
}

/// What a tick judges: the rolled-out flag's `on` cohort or the whole server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The `on` cohort of the flag; `http_p95_server_wide` when the exposition has no
    /// cohort request histogram, so the HTTP p95 is the server's.
    Cohort {
        /// The flag.
        flag: String,
        /// Whether the HTTP p95 is the server's.
        http_p95_server_wide: bool,
    },
    /// Every request and task of the server.
    ServerWide,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Cohort {
                flag,
                http_p95_server_wide,
            } => {
                write!(f, "cohort {flag}=on")?;
                if *http_p95_server_wide {
                    f.write_str(" (HTTP p95 server-wide: no cohort request histogram)")?;
                }
                Ok(())
            }
            Scope::ServerWide => f.write_str("server-wide"),
        }
    }
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
    /// No `genesis_` metric family at all: not the Genesis server's exposition.
    NotGenesis,
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
            ScrapeError::NotGenesis => write!(
                f,
                "no genesis_ metric family (is this the Genesis server's /metrics?)"
            ),
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

/// Sums the request counters and latency buckets of traffic endpoints, and keeps
/// `flag`'s `on` cohort ([`Snapshot::cohort`]). An exposition of the Genesis server
/// without `genesis_requests_total` (no API request since the start) is zero requests.
///
/// # Errors
/// [`ScrapeError::NotGenesis`] when the exposition has no `genesis_` family at all; [`ScrapeError::BadBound`] / [`ScrapeError::BadCount`] for a traffic latency
/// bucket (server-wide or the cohort's) that cannot be judged (a broken or hostile
/// server is no evidence of health).
pub(crate) fn snapshot(exposition: &str, flag: &str) -> Result<Snapshot, ScrapeError> {
    let mut seen = false;
    let mut snap = Snapshot {
        reads_cohorts: true,
        ..Snapshot::default()
    };
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    let mut task_buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    let mut cohort_buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    let mut cohort_task_buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (index, line) in exposition.lines().enumerate() {
        let Some((name, labels, value)) = parse_series(line) else {
            continue;
        };
        seen |= name.starts_with("genesis_");
        if name.starts_with("genesis_cohort_") {
            if labels.get("flag") != Some(&flag) {
                continue;
            }
            // Series of either variant say the server counts this flag's cohorts.
            let cohort = snap.cohort.get_or_insert_with(|| {
                Box::new(Snapshot {
                    has_tasks: true,
                    ..Snapshot::default()
                })
            });
            if labels.get("variant") != Some(&"on") {
                continue;
            }
            let count = value.is_finite() && value >= 0.0;
            match name {
                "genesis_cohort_requests_total" if count => {
                    cohort.requests += value;
                    if labels.get("outcome") == Some(&"error") {
                        cohort.errors += value;
                    }
                }
                "genesis_cohort_tasks_total" if count => match labels.get("status") {
                    Some(&"succeeded") => cohort.tasks_succeeded += value,
                    Some(&"failed") => cohort.tasks_failed += value,
                    _ => {}
                },
                "genesis_cohort_request_duration_seconds_bucket" => {
                    add_bucket(&mut cohort_buckets, &labels, value, index + 1)?;
                }
                "genesis_cohort_task_duration_seconds_bucket" => {
                    add_bucket(&mut cohort_task_buckets, &labels, value, index + 1)?;
                }
                _ => {}
            }
            continue;
        }
        let probe = labels.get("endpoint").is_some_and(|e| PROBES.contains(e));
        match name {
            "genesis_requests_total" => {
                if probe || !value.is_finite() {
                    continue;
                }
                snap.requests += value;
                if labels.get("status").is_some_and(|s| s.starts_with('5')) {
                    snap.errors += value;
                }
            }
            "genesis_tasks_total" => {
                snap.has_tasks = true;
                if !(value.is_finite() && value >= 0.0) {
                    continue;
                }
                match labels.get("status") {
                    Some(&"succeeded") => snap.tasks_succeeded += value,
                    Some(&"failed") => snap.tasks_failed += value,
                    _ => {}
                }
            }
            "genesis_request_duration_seconds_bucket" if !probe => {
                add_bucket(&mut buckets, &labels, value, index + 1)?;
            }
            "genesis_task_duration_seconds_bucket" => {
                add_bucket(&mut task_buckets, &labels, value, index + 1)?;
            }
            "process_start_time_seconds" if value.is_finite() => snap.start_time = Some(value),
            _ => {}
        }
    }
    if !seen {
        return Err(ScrapeError::NotGenesis);
    }
    snap.buckets = sorted(buckets);
    snap.task_buckets = sorted(task_buckets);
    if let Some(cohort) = &mut snap.cohort {
        cohort.buckets = sorted(cohort_buckets);
        cohort.task_buckets = sorted(cohort_task_buckets);
    }
    Ok(snap)
}

/// Adds one histogram bucket line (1-based `line`) to `buckets`, keyed by its bound.
fn add_bucket(
    buckets: &mut BTreeMap<u64, (f64, f64)>,
    labels: &BTreeMap<&str, &str>,
    value: f64,
    line: usize,
) -> Result<(), ScrapeError> {
    let Some(le) = labels.get("le") else {
        return Ok(());
    };
    let bound = parse_le(le).ok_or_else(|| ScrapeError::BadBound {
        line,
        le: le.chars().take(32).collect(),
    })?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(ScrapeError::BadCount { line, count: value });
    }
    buckets.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += value;
    Ok(())
}

fn sorted(buckets: BTreeMap<u64, (f64, f64)>) -> Vec<(f64, f64)> {
    let mut list: Vec<(f64, f64)> = buckets.into_values().collect();
    list.sort_by(|a, b| a.0.total_cmp(&b.0));
    list
}

/// `current` minus `previous`, bucket by bucket (never below zero).
fn bucket_delta(current: &[(f64, f64)], previous: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let before = |le: f64| {
        previous
            .iter()
            .find(|(b, _)| b.to_bits() == le.to_bits())
            .map_or(0.0, |(_, c)| *c)
    };
    current
        .iter()
        .map(|(le, c)| (*le, (c - before(*le)).max(0.0)))
        .collect()
}

impl Snapshot {
    /// Whether `self`, as a baseline, can measure a window ending at `current`: not when
    /// `current` has task numbers and `self` has none (a baseline written before task
    /// numbers existed, or by a server without them), nor when `current` has a cohort
    /// and `self` was written by a `genesis` that did not read cohorts (it cannot say
    /// whether the cohort's counters were 0). Judging from such a baseline would count
    /// every task, or every request and task of the cohort, since the server started.
    pub(crate) fn measures(&self, current: &Snapshot) -> bool {
        (self.has_tasks || !current.has_tasks) && (self.reads_cohorts || current.cohort.is_none())
    }

    /// Whether no counter of `self` is below `previous`'s (the cohort's included; a
    /// cohort that was there and is gone counts as gone down).
    fn not_below(&self, previous: &Snapshot) -> bool {
        previous.requests <= self.requests
            && previous.errors <= self.errors
            && previous.tasks_succeeded <= self.tasks_succeeded
            && previous.tasks_failed <= self.tasks_failed
            && previous.cohort.as_deref().is_none_or(|before| {
                self.cohort
                    .as_deref()
                    .is_some_and(|now| now.not_below(before))
            })
    }

    /// `self` minus `previous`, counter by counter and bucket by bucket; the cohort
    /// minus the previous one (zero when `previous` had none: its series appeared since).
    fn minus(&self, previous: &Snapshot) -> Snapshot {
        Snapshot {
            requests: self.requests - previous.requests,
            errors: self.errors - previous.errors,
            buckets: bucket_delta(&self.buckets, &previous.buckets),
            has_tasks: self.has_tasks,
            tasks_succeeded: self.tasks_succeeded - previous.tasks_succeeded,
            tasks_failed: self.tasks_failed - previous.tasks_failed,
            task_buckets: bucket_delta(&self.task_buckets, &previous.task_buckets),
            start_time: self.start_time,
            reads_cohorts: self.reads_cohorts,
            cohort: self.cohort.as_deref().map(|now| {
                Box::new(match previous.cohort.as_deref() {
                    Some(before) => now.minus(before),
                    None => now.clone(),
                })
            }),
        }
    }

    /// The traffic since `previous`, or all of it when there is none or the server
    /// restarted in between: its `process_start_time_seconds` changed, or (when a scrape
    /// lacks the gauge) a counter went down. Counters alone miss a restart after which
    /// the traffic has already passed the old baseline; the window would then lose the
    /// pre-restart numbers from the new ones.
    pub(crate) fn since(&self, previous: Option<&Snapshot>) -> Snapshot {
        let Some(prev) = previous.filter(|p| {
            let restarted = p
                .start_time
                .zip(self.start_time)
                .is_some_and(|(before, now)| before.to_bits() != now.to_bits());
            !restarted && self.not_below(p)
        }) else {
            return self.clone();
        };
        self.minus(prev)
    }

    /// The health sample a tick judges in this window, and whose it is: the `on` cohort
    /// when the window has one and `split` (the flag's step is strictly between 0 and
    /// 100 %, so its answer differs between subjects), else the whole server's. A cohort
    /// without a request histogram has the server's HTTP p95. `None` as for
    /// [`Snapshot::sample`].
    pub(crate) fn judged(&self, flag: &str, split: bool) -> (Option<HealthSample>, Scope) {
        match self.cohort.as_deref().filter(|_| split) {
            Some(cohort) => {
                let server_p95 = cohort.buckets.is_empty();
                let http = if server_p95 {
                    &self.buckets
                } else {
                    &cohort.buckets
                };
                (
                    cohort.sample_with(http),
                    Scope::Cohort {
                        flag: flag.to_owned(),
                        http_p95_server_wide: server_p95,
                    },
                )
            }
            None => (self.sample(), Scope::ServerWide),
        }
    }

    /// The HTTP p95 of the window ([`p95`] of its request buckets).
    #[cfg(test)]
    pub(crate) fn p95(&self) -> Option<Duration> {
        p95(&self.buckets)
    }

    /// The health sample this window gives: `None` for requests without a latency
    /// histogram (a partial exposition is not evidence of health); a window of zero
    /// requests needs none (its p95 is 0: the server had no traffic to time). Task
    /// numbers are there when the exposition has `genesis_tasks_total`; the task p95
    /// when a task succeeded.
    pub(crate) fn sample(&self) -> Option<HealthSample> {
        self.sample_with(&self.buckets)
    }

    /// [`Snapshot::sample`] with the HTTP p95 taken from `http_buckets`.
    fn sample_with(&self, http_buckets: &[(f64, f64)]) -> Option<HealthSample> {
        let p95 = match p95(http_buckets) {
            Some(p95) => p95,
            None if self.requests <= 0.0 => Duration::ZERO,
            None => return None,
        };
        let error_rate = if self.requests > 0.0 {
            self.errors / self.requests
        } else {
            0.0
        };
        let tasks = self.has_tasks.then(|| {
            let finished = (self.tasks_succeeded + self.tasks_failed).max(0.0);
            TaskSample {
                finished: finished.round() as u64,
                failure_rate: if finished > 0.0 {
                    (self.tasks_failed / finished).clamp(0.0, 1.0)
                } else {
                    0.0
                },
                p95_latency: p95_of_some(&self.task_buckets),
            }
        });
        Some(HealthSample {
            error_rate,
            p95_latency: p95,
            requests: self.requests.max(0.0).round() as u64,
            tasks,
        })
    }
}

/// The 95th percentile of a histogram with at least one observation.
fn p95_of_some(buckets: &[(f64, f64)]) -> Option<Duration> {
    buckets
        .last()
        .filter(|(_, total)| *total > 0.0)
        .and_then(|_| p95(buckets))
}

/// The 95th percentile latency from cumulative buckets, interpolated linearly within
/// the bucket as Prometheus' `histogram_quantile` does; a quantile in the `+Inf` bucket
/// is the highest finite bound. `None` without buckets.
fn p95(buckets: &[(f64, f64)]) -> Option<Duration> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return Some(Duration::ZERO);
    }
    let rank = 0.95 * total;
    let mut lower = (0.0f64, 0.0f64);
    for &(le, count) in buckets {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// [`super::snapshot`] for a flag without cohort series in these expositions.
    fn snapshot(exposition: &str) -> Result<Snapshot, ScrapeError> {
        super::snapshot(exposition, "new_router")
    }

    /// `TEXT` plus task series and cohort series of `new_router` (on: `on`, off:
    /// `off`, as (ok, error, succeeded, failed)) and of another flag, whose numbers
    /// are awful and must never be judged for `new_router`.
    fn with_cohorts(
        on: (u32, u32, u32, u32),
        off: (u32, u32, u32, u32),
        histogram: bool,
    ) -> String {
        let mut text = format!(
            "{TEXT}genesis_tasks_total{{status=\"succeeded\"}} 100\n\
             genesis_tasks_total{{status=\"failed\"}} 0\n"
        );
        for (flag, variant, (ok, error, succeeded, failed)) in [
            ("new_router", "on", on),
            ("new_router", "off", off),
            ("halo_routing", "on", (0, 500, 0, 500)),
        ] {
            let l = format!("flag=\"{flag}\",variant=\"{variant}\"");
            text.push_str(&format!(
                "genesis_cohort_requests_total{{{l},outcome=\"ok\"}} {ok}\n\
                 genesis_cohort_requests_total{{{l},outcome=\"error\"}} {error}\n\
                 genesis_cohort_tasks_total{{{l},status=\"succeeded\"}} {succeeded}\n\
                 genesis_cohort_tasks_total{{{l},status=\"failed\"}} {failed}\n"
            ));
            if histogram {
                let all = ok + error;
                text.push_str(&format!(
                    "genesis_cohort_request_duration_seconds_bucket{{{l},le=\"2\"}} {all}\n\
                     genesis_cohort_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {all}\n"
                ));
            }
        }
        text
    }

    #[test]
    fn the_flags_on_cohort_is_kept_and_judged_apart_from_other_flags_and_variants() {
        let s = super::snapshot(
            &with_cohorts((30, 2, 8, 12), (500, 0, 92, 0), true),
            "new_router",
        )
        .unwrap();
        let c = s.cohort.as_deref().unwrap();
        assert_eq!(
            (c.requests, c.errors, c.tasks_succeeded, c.tasks_failed),
            (32.0, 2.0, 8.0, 12.0)
        );
        let (sample, scope) = s.judged("new_router", true);
        let sample = sample.unwrap();
        assert_eq!(sample.requests, 32);
        assert!((sample.error_rate - 2.0 / 32.0).abs() < 1e-12);
        let t = sample.tasks.unwrap();
        assert_eq!((t.finished, t.failure_rate), (20, 0.6));
        // The cohort's own request histogram: every request took (1, 2] s.
        assert!(sample.p95_latency > Duration::from_secs(1), "{sample:?}");
        assert_eq!(scope.to_string(), "cohort new_router=on");
        // Not split (0 % or 100 %): the server's numbers.
        let (sample, scope) = s.judged("new_router", false);
        assert_eq!(scope, Scope::ServerWide);
        assert_eq!(sample.unwrap().requests, 100);
        // A flag without series of its own is judged server-wide, whatever other
        // flags' cohorts say.
        let other = super::snapshot(
            &with_cohorts((1, 0, 0, 0), (1, 0, 0, 0), true),
            "aop_validation",
        )
        .unwrap();
        assert!(other.cohort.is_none());
        assert_eq!(other.judged("aop_validation", true).1, Scope::ServerWide);
        // The baseline keeps the cohort, and reads back.
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), s);
    }

    #[test]
    fn a_cohort_without_a_request_histogram_has_the_servers_http_p95() {
        let s = super::snapshot(
            &with_cohorts((30, 0, 10, 0), (70, 0, 90, 0), false),
            "new_router",
        )
        .unwrap();
        let (sample, scope) = s.judged("new_router", true);
        assert_eq!(
            sample.unwrap().p95_latency,
            s.sample().unwrap().p95_latency,
            "the server's HTTP p95"
        );
        assert_eq!(
            scope.to_string(),
            "cohort new_router=on (HTTP p95 server-wide: no cohort request histogram)"
        );
    }

    #[test]
    fn cohort_windows_start_at_zero_and_a_cohort_going_down_is_a_restart() {
        // The baseline had no cohort series (the flag split nobody then).
        let baseline = snapshot(&with_cohorts((0, 0, 0, 0), (0, 0, 0, 0), true)).unwrap();
        let baseline = Snapshot {
            cohort: None,
            ..baseline
        };
        let now = super::snapshot(
            &with_cohorts((30, 0, 10, 5), (70, 0, 90, 0), true),
            "new_router",
        )
        .unwrap();
        let window = now.since(Some(&baseline));
        assert_eq!(window.cohort.as_deref().unwrap().requests, 30.0);
        // A cohort counter below the baseline's: the server restarted (no start-time
        // gauge in these expositions), the whole current cohort is the window.
        let later = super::snapshot(
            &with_cohorts((3, 0, 1, 0), (70, 0, 90, 0), true),
            "new_router",
        )
        .unwrap();
        let window = later.since(Some(&now));
        assert_eq!(window.cohort.as_deref().unwrap().requests, 3.0);
        assert_eq!(
            window.requests, later.requests,
            "the whole window, not a delta"
        );
    }

    /// A baseline the previous release wrote has no cohort fields: it loads, and
    /// measures a window only when the current scrape has no cohort either.
    #[test]
    fn a_baseline_without_cohort_fields_cannot_measure_a_cohort() {
        let old: Snapshot = serde_json::from_str(
            r#"{"requests":1.0,"errors":0.0,"buckets":[],"has_tasks":true,"tasks_succeeded":1.0,"tasks_failed":0.0,"task_buckets":[]}"#,
        )
        .unwrap();
        assert!(!old.reads_cohorts && old.cohort.is_none());
        let with = super::snapshot(
            &with_cohorts((1, 0, 1, 0), (1, 0, 1, 0), true),
            "new_router",
        )
        .unwrap();
        assert!(!old.measures(&with));
        let without = super::snapshot(
            &with_cohorts((1, 0, 1, 0), (1, 0, 1, 0), true),
            "aop_validation",
        )
        .unwrap();
        assert!(old.measures(&without));
        assert!(with.measures(&with));
    }

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

    /// The audit's finding: every agent answering 500 left the HTTP numbers clean (runs
    /// are accepted with 202). The window now carries task outcomes and task latency.
    #[test]
    fn task_outcomes_and_latency_are_in_the_window() {
        let tasks = |succeeded: u32, failed: u32, fast: u32, slow: u32| {
            format!(
                "{TEXT}genesis_tasks_total{{status=\"succeeded\"}} {succeeded}\n\
                 genesis_tasks_total{{status=\"failed\"}} {failed}\n\
                 genesis_tasks_total{{status=\"skipped\"}} 7\n\
                 genesis_task_duration_seconds_bucket{{le=\"1\"}} {fast}\n\
                 genesis_task_duration_seconds_bucket{{le=\"10\"}} {}\n\
                 genesis_task_duration_seconds_bucket{{le=\"+Inf\"}} {}\n",
                fast + slow,
                fast + slow
            )
        };
        let before = snapshot(&tasks(10, 0, 10, 0)).unwrap();
        let after = snapshot(&tasks(13, 19, 10, 3)).unwrap();
        let sample = after.since(Some(&before)).sample().unwrap();
        let t = sample.tasks.unwrap();
        assert_eq!(t.finished, 22, "skipped tasks never ran: not finished");
        assert!((t.failure_rate - 19.0 / 22.0).abs() < 1e-12, "{t:?}");
        // The 3 new tasks all took (1, 10] s: rank 2.85 → 1 + 9 × 2.85 / 3 = 9.55 s.
        assert_eq!(t.p95_latency, Some(Duration::from_millis(9_550)));
        // Only failures in the window: no task p95, the failure rate is 1.
        let failing = snapshot(&tasks(10, 5, 10, 0)).unwrap();
        let t = failing
            .since(Some(&before))
            .sample()
            .unwrap()
            .tasks
            .unwrap();
        assert_eq!((t.finished, t.failure_rate, t.p95_latency), (5, 1.0, None));
        // An exposition without task series has no task numbers (not zero of them).
        assert_eq!(snapshot(TEXT).unwrap().sample().unwrap().tasks, None);
        // Baselines written before task numbers existed still load.
        let old: Snapshot =
            serde_json::from_str(r#"{"requests":1.0,"errors":0.0,"buckets":[]}"#).unwrap();
        assert!(!old.has_tasks);
    }

    #[test]
    fn an_exposition_without_genesis_families_is_missing_not_healthy() {
        for text in [
            "# HELP x\nprocess_cpu_seconds_total 3\n",
            "",
            "<html>not found</html>\n",
        ] {
            assert_eq!(snapshot(text), Err(ScrapeError::NotGenesis), "{text:?}");
        }
        let s =
            snapshot("genesis_requests_total{endpoint=\"/api/tasks\",status=\"200\"} 5\n").unwrap();
        assert!(s.sample().is_none(), "requests but no histogram: no sample");
    }

    /// `GET /metrics` of a server started a moment ago, before any request: as a real
    /// server rendered it (no backends, so no breakers): the families registered at
    /// start-up, no request series yet.
    const FRESH: &str = r#"# HELP genesis_errors_total error answers of the http server, by category
# TYPE genesis_errors_total counter
genesis_errors_total{category="security"} 0
genesis_errors_total{category="resource"} 0
genesis_errors_total{category="internal"} 0
genesis_errors_total{category="config"} 0
genesis_errors_total{category="llm"} 0
genesis_errors_total{category="network"} 0
genesis_errors_total{category="routing"} 0
genesis_errors_total{category="validation"} 0
genesis_errors_total{category="decomposition"} 0

# HELP genesis_connections_refused_total connections refused at accept, by the cap that refused them (reason)
# TYPE genesis_connections_refused_total counter
genesis_connections_refused_total{reason="max_connections_per_ip"} 0
genesis_connections_refused_total{reason="max_connections"} 0

# HELP genesis_injection_blocked_total inputs blocked by the injection detector, by checkpoint (user_request)
# TYPE genesis_injection_blocked_total counter
genesis_injection_blocked_total{checkpoint="user_request"} 0

# HELP genesis_routing_cache_hits_total routing cache hits
# TYPE genesis_routing_cache_hits_total counter
genesis_routing_cache_hits_total 0

# HELP genesis_routing_cache_misses_total routing cache misses
# TYPE genesis_routing_cache_misses_total counter
genesis_routing_cache_misses_total 0

# HELP genesis_budget_exceeded_total work rejected because a budget would be exceeded
# TYPE genesis_budget_exceeded_total counter
genesis_budget_exceeded_total{scope="daily"} 0
genesis_budget_exceeded_total{scope="run"} 0

# HELP genesis_llm_tokens_total llm tokens, by direction (input, output)
# TYPE genesis_llm_tokens_total counter
genesis_llm_tokens_total{direction="output"} 0
genesis_llm_tokens_total{direction="input"} 0

# HELP genesis_tasks_total tasks finished, by status
# TYPE genesis_tasks_total counter
genesis_tasks_total{status="succeeded"} 0
genesis_tasks_total{status="skipped"} 0
genesis_tasks_total{status="failed"} 0

# HELP genesis_runs_deleted_total finished runs deleted from the store after their retention
# TYPE genesis_runs_deleted_total counter
genesis_runs_deleted_total 0

# HELP genesis_rate_limited_total requests rejected by the rate limiter
# TYPE genesis_rate_limited_total counter
genesis_rate_limited_total 0

# HELP genesis_routing_outcomes_total agent outcomes the router learned from finished runs, by result (success, failure)
# TYPE genesis_routing_outcomes_total counter
genesis_routing_outcomes_total{result="success"} 0
genesis_routing_outcomes_total{result="failure"} 0

# HELP genesis_cost_usd us dollars spent on agent calls since the process started: llm, http and command agents (monotonic)
# TYPE genesis_cost_usd gauge
genesis_cost_usd 0

# HELP genesis_connections_open connections open now
# TYPE genesis_connections_open gauge
genesis_connections_open 0

# HELP genesis_degradation_level degradation level: 0 is full service
# TYPE genesis_degradation_level gauge
genesis_degradation_level 0

"#;

    /// The verification's N2: a quiet server after a start has no
    /// `genesis_requests_total`; that is zero requests (a valid sample and baseline), not
    /// a missing sample. The first scrape creates only the probe's series, still zero.
    #[test]
    fn a_freshly_started_server_is_zero_requests_not_missing() {
        let fresh = snapshot(FRESH).unwrap();
        assert_eq!((fresh.requests, fresh.errors), (0.0, 0.0));
        assert!(fresh.has_tasks && fresh.buckets.is_empty());
        let scraped = format!(
            "{FRESH}genesis_requests_total{{endpoint=\"/metrics\",status=\"200\"}} 1\n\
             genesis_request_duration_seconds_bucket{{endpoint=\"/metrics\",le=\"0.001\"}} 1\n\
             genesis_request_duration_seconds_bucket{{endpoint=\"/metrics\",le=\"+Inf\"}} 1\n"
        );
        let later = snapshot(&scraped).unwrap();
        for window in [fresh.since(None), later.since(Some(&fresh))] {
            let sample = window.sample().expect("zero requests is a sample");
            assert_eq!(sample.requests, 0);
            assert_eq!(sample.error_rate, 0.0);
            assert_eq!(sample.p95_latency, Duration::ZERO);
            let tasks = sample.tasks.unwrap();
            assert_eq!((tasks.finished, tasks.p95_latency), (0, None));
        }
        // Only a genesis_ gauge is enough to know whose exposition it is.
        let breaker = snapshot("genesis_breaker_state{key=\"agent:qa\"} 0\n").unwrap();
        assert_eq!(breaker.since(None).sample().unwrap().requests, 0);
    }

    /// The verification's N1: a baseline of the old format (no task fields) cannot
    /// measure a window of task numbers; one with them, or a server without them, can.
    #[test]
    fn an_old_format_baseline_does_not_measure_task_windows() {
        let old: Snapshot =
            serde_json::from_str(r#"{"requests":1.0,"errors":0.0,"buckets":[]}"#).unwrap();
        let current = snapshot(FRESH).unwrap();
        assert!(!old.measures(&current));
        assert!(current.measures(&current));
        let no_tasks = snapshot(TEXT).unwrap();
        assert!(old.measures(&no_tasks));
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

    /// The audit R7's item 10: after a restart whose traffic already passed the old
    /// baseline in every counter, the window subtracted the pre-restart numbers. The
    /// process start time shows the restart.
    #[test]
    fn a_restart_is_seen_from_the_process_start_time() {
        let scrape = |start: Option<&str>, ok: u32, failed: u32| {
            let gauge = start.map_or(String::new(), |t| {
                format!("process_start_time_seconds {t}\n")
            });
            snapshot(&format!(
                "{gauge}genesis_requests_total{{endpoint=\"/api/tasks\",status=\"200\"}} {ok}\n\
                 genesis_tasks_total{{status=\"succeeded\"}} {ok}\n\
                 genesis_tasks_total{{status=\"failed\"}} {failed}\n"
            ))
            .unwrap()
        };
        let before = scrape(Some("1767225600.25"), 40, 30);
        let json = serde_json::to_string(&before).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), before);
        // Restarted, 50 requests and 35 failed tasks since: all of them are the window.
        let restarted = scrape(Some("1767229200.5"), 50, 35).since(Some(&before));
        assert_eq!((restarted.requests, restarted.tasks_failed), (50.0, 35.0));
        // The same process: the difference.
        let same = scrape(Some("1767225600.25"), 50, 35).since(Some(&before));
        assert_eq!((same.requests, same.tasks_failed), (10.0, 5.0));
        // Without the gauge on either side, only counters that went down show a restart.
        let old = scrape(None, 40, 30);
        assert_eq!(scrape(None, 50, 35).since(Some(&old)).requests, 10.0);
        assert_eq!(scrape(Some("5"), 50, 35).since(Some(&old)).requests, 10.0);
        assert_eq!(scrape(None, 3, 0).since(Some(&old)).requests, 3.0);
    }

    #[test]
    fn p95_in_the_inf_bucket_is_the_highest_finite_bound() {
        let s = Snapshot {
            requests: 10.0,
            errors: 0.0,
            buckets: vec![(0.1, 1.0), (0.5, 2.0), (INF_BOUND, 10.0)],
            ..Snapshot::default()
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
                ..Snapshot::default()
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
            let before = Snapshot { requests: 0.0, errors: 0.0, buckets: cumulative(&counts), ..Snapshot::default() };
            let mut later_counts = counts.clone();
            for (c, e) in later_counts.iter_mut().zip(&extra) { *c += e; }
            let total = before.buckets.last().unwrap().1;
            let after = Snapshot { requests: total, errors: 0.0, buckets: cumulative(&later_counts), ..Snapshot::default() };
            let p = before.p95().unwrap().as_secs_f64();
            proptest::prop_assert!((0.0..=30.0).contains(&p), "p95 {p}");
            let window = after.since(Some(&before));
            proptest::prop_assert!(window.buckets.iter().all(|(_, c)| *c >= 0.0));
            proptest::prop_assert!(window.buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative");
        }
    }
}
