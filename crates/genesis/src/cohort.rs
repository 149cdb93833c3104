//! Rollout cohorts: which side of each flag in rollout a subject is on, and the metrics
//! counted per cohort, so a rollout's health gate can judge the traffic that gets the
//! feature rather than the whole server.
//!
//! A flag splits subjects while its answer differs between them
//! ([`genesis_feature_flags::Flag::splits_at`]: a percentage strictly between 0 and
//! 100 %, a canary, a progressive ramp under way). For every flag of the pipeline
//! ([`Cohorts::FLAGS`]: the ones [`crate::Orchestrator::gate`] and
//! [`crate::Orchestrator::stages`] evaluate on every plan and run) that splits subjects
//! now, a subject is in the flag's `on` or `off` cohort ([`crate::Orchestrator::cohorts`]).
//! Flags that do not split (`all`, `off`, 0 %, 100 %, undefined) have no cohorts, so a
//! server with no rollout in progress records and exports nothing here.
//!
//! [`CohortMetrics`] records `genesis_cohort_requests_total{flag, variant, outcome}`,
//! `genesis_cohort_request_duration_seconds{flag, variant}`,
//! `genesis_cohort_tasks_total{flag, variant, status}` and
//! `genesis_cohort_task_duration_seconds{flag, variant}`. Labels are bounded: the flag is
//! one of [`Cohorts::FLAGS`], the variant `on` or `off`.

use std::sync::OnceLock;

use genesis_telemetry::catalogue::{self, labels};

use crate::orchestrator::HOT_FLAGS;

/// The rollout cohorts one subject is in at one moment: for each flag of
/// [`Cohorts::FLAGS`] that splits subjects, whether the subject gets it. `Copy` and
/// allocation-free (two bit sets), so a request and its run carry it for nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cohorts {
    /// Bit `i`: flag `FLAGS[i]` splits subjects.
    split: u16,
    /// Bit `i`: the subject is in flag `FLAGS[i]`'s `on` cohort (only with `split`).
    on: u16,
}

/// One cohort a subject is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cohort {
    /// Index of the flag in [`Cohorts::FLAGS`].
    slot: usize,
    /// The flag.
    pub flag: &'static str,
    /// Whether the subject gets the flag (the `on` cohort).
    pub on: bool,
}

impl Cohort {
    /// `"on"` or `"off"`: the `variant` label.
    pub fn variant(&self) -> &'static str {
        if self.on { "on" } else { "off" }
    }
}

impl Cohorts {
    /// The flags whose cohorts are tracked: the kill switches and stage flags every plan
    /// and run evaluates.
    pub const FLAGS: &'static [&'static str] = &HOT_FLAGS;

    /// In no cohort: no flag of [`Cohorts::FLAGS`] splits subjects.
    pub const NONE: Cohorts = Cohorts { split: 0, on: 0 };

    /// Adds the cohort of flag `FLAGS[slot]`.
    pub(crate) fn add(&mut self, slot: usize, on: bool) {
        let bit = 1u16 << slot;
        self.split |= bit;
        if on {
            self.on |= bit;
        }
    }

    /// Whether the subject is in no cohort (no flag in rollout).
    pub fn is_empty(self) -> bool {
        self.split == 0
    }

    /// The number of cohorts (flags in rollout).
    pub fn len(self) -> usize {
        self.split.count_ones() as usize
    }

    /// The cohorts, in the order of [`Cohorts::FLAGS`].
    pub fn iter(self) -> impl Iterator<Item = Cohort> {
        Self::FLAGS
            .iter()
            .enumerate()
            .filter(move |(slot, _)| self.split & (1 << slot) != 0)
            .map(move |(slot, flag)| Cohort {
                slot,
                flag,
                on: self.on & (1 << slot) != 0,
            })
    }

    /// The subject's variant of `flag`: `Some(true)` in its `on` cohort, `Some(false)`
    /// in its `off` cohort, `None` when the flag does not split subjects (or is not one
    /// of [`Cohorts::FLAGS`]).
    pub fn variant_of(self, flag: &str) -> Option<bool> {
        self.iter().find(|c| c.flag == flag).map(|c| c.on)
    }
}

/// Cohort metric handles, registered with the recorder at their first use and kept:
/// registering a labelled series looks it up in the recorder's registry (about 1,000
/// instructions with the Prometheus recorder), and a request in rollout records one
/// counter and one histogram per cohort. As for the flag-evaluation counters, the
/// recorder must be installed before the first request (the server does).
#[derive(Default)]
pub struct CohortMetrics {
    /// `[flag][on][error]`.
    requests: [[[OnceLock<metrics::Counter>; 2]; 2]; HOT_FLAGS.len()],
    /// `[flag][on]`.
    request_seconds: [[OnceLock<metrics::Histogram>; 2]; HOT_FLAGS.len()],
    /// `[flag][on][failed]`.
    tasks: [[[OnceLock<metrics::Counter>; 2]; 2]; HOT_FLAGS.len()],
    /// `[flag][on]`.
    task_seconds: [[OnceLock<metrics::Histogram>; 2]; HOT_FLAGS.len()],
}

impl std::fmt::Debug for CohortMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CohortMetrics").finish_non_exhaustive()
    }
}

impl CohortMetrics {
    /// Counts one plan or run request of `cohorts` that took `seconds`; `error` when it
    /// was answered with a 5xx. Nothing for no cohort.
    pub fn record_request(&self, cohorts: Cohorts, error: bool, seconds: f64) {
        for c in cohorts.iter() {
            let on = usize::from(c.on);
            self.requests[c.slot][on][usize::from(error)]
                .get_or_init(|| {
                    metrics::counter!(
                        catalogue::COHORT_REQUESTS_TOTAL,
                        labels::FLAG => c.flag,
                        labels::VARIANT => c.variant(),
                        labels::OUTCOME => if error { "error" } else { "ok" }
                    )
                })
                .increment(1);
            self.request_seconds[c.slot][on]
                .get_or_init(|| {
                    metrics::histogram!(
                        catalogue::COHORT_REQUEST_DURATION_SECONDS,
                        labels::FLAG => c.flag,
                        labels::VARIANT => c.variant()
                    )
                })
                .record(seconds);
        }
    }

    /// Counts a task of a run in `cohorts` that succeeded after `seconds` on its agent.
    pub fn record_task_succeeded(&self, cohorts: Cohorts, seconds: f64) {
        for c in cohorts.iter() {
            self.task(c, false).increment(1);
            self.task_seconds[c.slot][usize::from(c.on)]
                .get_or_init(|| {
                    metrics::histogram!(
                        catalogue::COHORT_TASK_DURATION_SECONDS,
                        labels::FLAG => c.flag,
                        labels::VARIANT => c.variant()
                    )
                })
                .record(seconds);
        }
    }

    /// Counts a task of a run in `cohorts` that failed.
    pub fn record_task_failed(&self, cohorts: Cohorts) {
        for c in cohorts.iter() {
            self.task(c, true).increment(1);
        }
    }

    fn task(&self, c: Cohort, failed: bool) -> &metrics::Counter {
        self.tasks[c.slot][usize::from(c.on)][usize::from(failed)].get_or_init(|| {
            metrics::counter!(
                catalogue::COHORT_TASKS_TOTAL,
                labels::FLAG => c.flag,
                labels::VARIANT => c.variant(),
                labels::STATUS => if failed { "failed" } else { "succeeded" }
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cohorts_name_their_flags_and_variants() {
        let mut c = Cohorts::NONE;
        assert!(c.is_empty());
        assert_eq!(c.iter().count(), 0);
        let router = Cohorts::FLAGS
            .iter()
            .position(|f| *f == "new_router_rollout")
            .unwrap();
        let halo = Cohorts::FLAGS
            .iter()
            .position(|f| *f == "halo_routing")
            .unwrap();
        c.add(router, true);
        c.add(halo, false);
        assert_eq!(c.len(), 2);
        assert_eq!(c.variant_of("new_router_rollout"), Some(true));
        assert_eq!(c.variant_of("halo_routing"), Some(false));
        assert_eq!(c.variant_of("daao_cost_routing"), None);
        assert_eq!(c.variant_of("not_a_flag"), None);
        let labels: Vec<(&str, &str)> = c.iter().map(|c| (c.flag, c.variant())).collect();
        assert_eq!(
            labels,
            [("halo_routing", "off"), ("new_router_rollout", "on")]
        );
        assert!(Cohorts::FLAGS.len() <= 16, "the bit sets are u16");
    }
}
