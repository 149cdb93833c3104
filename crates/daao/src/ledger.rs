//! Money spent against budgets, and money set aside for calls in flight.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use genesis_core::Usd;
use serde::{Deserialize, Serialize};

/// Spending limits. `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    /// Most one run may spend.
    pub per_run: Option<Usd>,
    /// Most all runs may spend in one day.
    pub per_day: Option<Usd>,
    /// Most the runs of one subject (a caller: an API key, an agent) may spend in one
    /// day, planning included; enforced on ledgers given that subject's day total
    /// ([`CostLedger::with_subject_day`]).
    pub per_subject_day: Option<Usd>,
}

/// Which budget a charge would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BudgetScope {
    /// The run's budget (`budget.per_run`, or the run's own budget).
    Run,
    /// The day's budget shared by every run (`budget.per_day`).
    Day,
    /// The day's budget of the runs of one subject (`budget.per_subject_day`).
    SubjectDay,
}

impl BudgetScope {
    /// `run`, `day` or `subject_day` (the rule is `budget_{scope}`).
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetScope::Run => "run",
            BudgetScope::Day => "day",
            BudgetScope::SubjectDay => "subject_day",
        }
    }
}

impl fmt::Display for BudgetScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reservation was refused because it would break a budget: what is spent, plus what
/// calls in flight have reserved, plus what was asked for, is over the limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{scope} budget exceeded: spent {spent} + reserved {reserved} + requested {requested} > limit {limit} (rule: budget_{scope})"
)]
pub struct BudgetExceeded {
    /// The budget that would break.
    pub scope: BudgetScope,
    /// Already spent.
    pub spent: Usd,
    /// Reserved by calls in flight, not yet settled.
    pub reserved: Usd,
    /// The amount asked for.
    pub requested: Usd,
    /// The limit.
    pub limit: Usd,
}

impl BudgetExceeded {
    /// Whether the amount would fit once the calls in flight settle: the limit is not
    /// broken by what is spent, only by what is reserved. A caller may wait and try
    /// again (the reservations settle to their actual costs, often far below the
    /// estimates), rather than fail.
    pub fn fits_once_settled(&self) -> bool {
        self.reserved.as_f64() > 0.0
            && (self.spent + self.requested).as_f64() <= self.limit.as_f64() + SLACK
    }
}

/// Slack when comparing against a limit, in dollars: sums of decimal amounts in binary
/// floating point are off by a few ulps ($0.10 + $0.20 > $0.30), and a budget used up
/// exactly must not refuse its last call for it. A nanodollar is far below any price.
const SLACK: f64 = 1e-9;

/// Spent and reserved money of one scope (a run, or a day), and who waits for
/// reserved money to come back.
#[derive(Debug, Default)]
struct Totals {
    spent: Usd,
    reserved: Usd,
    /// Reservations not yet settled or released: at zero, `reserved` is reset to
    /// exactly zero, so float rounding cannot pile up over many reservations.
    open: usize,
    /// Reservations settled or released so far: a [`Released`] future resolves once
    /// this moves past the count it started from.
    closed: u64,
    /// Tasks of pending [`Released`] futures, woken (and dropped) at the next close.
    waiters: Vec<Waker>,
}

impl Totals {
    /// Refuses `amount` when spent + reserved + amount would pass `limit`.
    fn admits(
        &self,
        scope: BudgetScope,
        limit: Option<Usd>,
        amount: Usd,
    ) -> Result<(), BudgetExceeded> {
        match limit {
            Some(limit)
                if (self.spent + self.reserved + amount).as_f64() > limit.as_f64() + SLACK =>
            {
                Err(BudgetExceeded {
                    scope,
                    spent: self.spent,
                    reserved: self.reserved,
                    requested: amount,
                    limit,
                })
            }
            _ => Ok(()),
        }
    }

    fn reserve(&mut self, amount: Usd) {
        self.reserved += amount;
        self.open += 1;
    }

    /// Gives `amount` back; returns the waiters to wake (after the lock is let go).
    fn release(&mut self, amount: Usd) -> Vec<Waker> {
        self.open = self.open.saturating_sub(1);
        self.reserved = if self.open == 0 {
            Usd::ZERO
        } else {
            self.reserved - amount
        };
        self.closed = self.closed.wrapping_add(1);
        std::mem::take(&mut self.waiters)
    }
}

/// Resolves once a reservation of the run or the day closes after the close counts
/// were read (see [`CostLedger::released`]).
#[derive(Debug)]
struct Released {
    /// The run's totals, the day's and the subject's day (when the ledger has one),
    /// each with the close count read at the start.
    scopes: Vec<(Arc<Mutex<Totals>>, u64)>,
}

impl Future for Released {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Check and register under one lock: a close either came before (and is seen
        // here) or comes after and finds this task's waker in the list. A waker left
        // behind when the other scope answers is woken once, harmlessly, at its close.
        for (totals, seen) in &self.scopes {
            let mut t = lock(totals);
            if t.closed != *seen {
                return Poll::Ready(());
            }
            if !t.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                t.waiters.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

/// Locks `totals`; a lock poisoned by a panic elsewhere still holds consistent totals
/// (every update is one assignment), so it is recovered, never skipped: a budget check
/// must not fail open.
fn lock(totals: &Mutex<Totals>) -> MutexGuard<'_, Totals> {
    totals.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What all runs sharing it have spent and reserved today. Clones share one total:
/// ledgers made with [`CostLedger::sharing_day`] over clones of one `DayTotal` reserve
/// and charge against the same day, so concurrent runs cannot each spend the whole
/// daily budget. Starting a new total at midnight is the owner's job.
#[derive(Debug, Clone, Default)]
pub struct DayTotal(Arc<Mutex<Totals>>);

impl DayTotal {
    /// A day total starting at `spent` (spent today before, e.g. by runs journaled
    /// before a restart), with nothing reserved.
    pub fn new(spent: Usd) -> Self {
        DayTotal(Arc::new(Mutex::new(Totals {
            spent,
            ..Totals::default()
        })))
    }

    /// Spent today (settled charges).
    pub fn spent(&self) -> Usd {
        lock(&self.0).spent
    }

    /// Reserved by calls in flight, not yet settled.
    pub fn reserved(&self) -> Usd {
        lock(&self.0).reserved
    }
}

/// Tracks what a run has spent and reserved, and what the day has, against a
/// [`Budget`].
///
/// Reserve a call's estimated cost with [`CostLedger::reserve`] before making it, then
/// [`Reservation::settle`] it with what the call actually cost (dropping the
/// reservation, or [`Reservation::release`], gives the money back when the call
/// failed or was cancelled). A reservation is admitted only while spent + reserved +
/// the estimate stays within every budget, and it is taken on the run and the day
/// together, under their locks: concurrent callers cannot all pass one check and then
/// overspend together. What a call actually costs is recorded even when it is more
/// than its estimate (the money is gone); later reservations see it. A caller refused
/// only because of calls in flight ([`BudgetExceeded::fits_once_settled`]) can wait
/// for one of them to close with [`CostLedger::released`] rather than poll.
///
/// Clones share the run's and the day's totals (every task of a run holds a clone).
/// The day's total can be shared between runs: ledgers made with
/// [`CostLedger::sharing_day`] over one [`DayTotal`] reserve and charge that one total.
///
/// ```
/// use genesis_core::Usd;
/// use genesis_daao::{Budget, BudgetScope, CostLedger};
///
/// let usd = |v| Usd::new(v).unwrap();
/// let ledger = CostLedger::new(Budget { per_run: Some(usd(1.0)), ..Budget::default() }, Usd::ZERO);
/// let a = ledger.reserve(usd(0.6)).unwrap();
/// // A second call in flight at the same time does not fit beside the first.
/// assert_eq!(ledger.reserve(usd(0.6)).unwrap_err().scope, BudgetScope::Run);
/// a.settle(usd(0.5));
/// assert_eq!(ledger.spent(), usd(0.5));
/// assert!(ledger.reserve(usd(0.5)).is_ok());
/// ```
#[derive(Debug, Clone, Default)]
pub struct CostLedger {
    budget: Budget,
    run: Arc<Mutex<Totals>>,
    day: DayTotal,
    /// The day total of the run's subject, checked against `budget.per_subject_day`.
    subject: Option<DayTotal>,
}

impl CostLedger {
    /// A ledger enforcing `budget`, with `day_spent` already spent today by other runs
    /// (a day total of its own: other ledgers do not see what this one charges).
    pub fn new(budget: Budget, day_spent: Usd) -> Self {
        Self::sharing_day(budget, DayTotal::new(day_spent))
    }

    /// A ledger enforcing `budget` that reserves and charges against the shared day
    /// total `day` (what every run sharing it has spent and reserved today).
    pub fn sharing_day(budget: Budget, day: DayTotal) -> Self {
        CostLedger {
            budget,
            run: Arc::new(Mutex::new(Totals::default())),
            day,
            subject: None,
        }
    }

    /// Also reserves and charges against `subject_day`, the day total of the run's
    /// subject (what every run of that subject has spent and reserved today), held to
    /// `budget.per_subject_day`.
    #[must_use]
    pub fn with_subject_day(mut self, subject_day: DayTotal) -> Self {
        self.subject = Some(subject_day);
        self
    }

    /// Spent today by the runs of this ledger's subject (settled charges); `None`
    /// without a subject day total.
    pub fn subject_day_spent(&self) -> Option<Usd> {
        self.subject.as_ref().map(DayTotal::spent)
    }

    /// Starts the run's total at `spent`: what a resumed run spent before a restart.
    /// The day total is not charged again (it already holds that money).
    #[must_use]
    pub fn with_run_spent(self, spent: Usd) -> Self {
        lock(&self.run).spent = spent;
        self
    }

    /// The budget.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Spent by this run (settled charges).
    pub fn spent(&self) -> Usd {
        lock(&self.run).spent
    }

    /// Reserved by this run's calls in flight, not yet settled.
    pub fn reserved(&self) -> Usd {
        lock(&self.run).reserved
    }

    /// Spent today, this run included (settled charges).
    pub fn day_spent(&self) -> Usd {
        self.day.spent()
    }

    /// Left in the run budget for new reservations: the limit less what is spent and
    /// reserved (`None`: unlimited).
    pub fn remaining(&self) -> Option<Usd> {
        let run = lock(&self.run);
        self.budget.per_run.map(|l| l - run.spent - run.reserved)
    }

    /// Fraction of the tightest budget spent, in `[0, 1]` (0 when unlimited).
    pub fn utilisation(&self) -> f64 {
        let run = self
            .budget
            .per_run
            .filter(|l| l.as_f64() > 0.0)
            .map_or(0.0, |l| self.spent().as_f64() / l.as_f64());
        let day = self
            .budget
            .per_day
            .filter(|l| l.as_f64() > 0.0)
            .map_or(0.0, |l| self.day_spent().as_f64() / l.as_f64());
        let subject = self
            .budget
            .per_subject_day
            .filter(|l| l.as_f64() > 0.0)
            .zip(self.subject_day_spent())
            .map_or(0.0, |(l, spent)| spent.as_f64() / l.as_f64());
        run.max(day).max(subject).clamp(0.0, 1.0)
    }

    /// Whether a reservation of `amount` would be admitted now. It reserves nothing:
    /// another caller may take the room before you; use [`CostLedger::reserve`] before
    /// spending.
    ///
    /// # Errors
    /// [`BudgetExceeded`] naming the budget that would break (the run's first).
    pub fn check(&self, amount: Usd) -> Result<(), BudgetExceeded> {
        let run = lock(&self.run);
        run.admits(BudgetScope::Run, self.budget.per_run, amount)?;
        if let Some(subject) = &self.subject {
            lock(&subject.0).admits(
                BudgetScope::SubjectDay,
                self.budget.per_subject_day,
                amount,
            )?;
        }
        let day = lock(&self.day.0);
        day.admits(BudgetScope::Day, self.budget.per_day, amount)
    }

    /// Sets `amount` aside on the run and the day, if it fits in every budget beside
    /// what is spent and already reserved. Settle the reservation with the actual cost
    /// once the call returns; dropping it unsettled gives the money back.
    ///
    /// # Errors
    /// [`BudgetExceeded`] naming the budget that would break (the run's first);
    /// nothing is reserved then.
    pub fn reserve(&self, amount: Usd) -> Result<Reservation, BudgetExceeded> {
        self.reserve_between(amount, amount)
    }

    /// A future that resolves once a reservation on this run or its day is settled or
    /// released (given back) after this call, which is when a refusal that
    /// [`BudgetExceeded::fits_once_settled`] may turn into an admission. Take it
    /// *before* trying [`CostLedger::reserve`], and await it only if that is refused: a
    /// reservation closing between the two makes it resolve at once, so no wake-up is
    /// lost. Any close wakes it (on a day shared by runs, other runs' too), so the
    /// caller tries again and may wait again. Nothing else gives room back (spending
    /// only grows), so this is the one thing worth waiting for; a caller should still
    /// bound the wait with a timeout of its own.
    pub fn released(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let scopes = [
            Some(&self.run),
            Some(&self.day.0),
            self.subject.as_ref().map(|s| &s.0),
        ]
        .into_iter()
        .flatten()
        .map(|t| (Arc::clone(t), lock(t).closed))
        .collect();
        Released { scopes }
    }

    /// Sets aside as much of `ceiling` as fits in every budget beside what is spent and
    /// already reserved, but at least `floor` (a `ceiling` below `floor` counts as
    /// `floor`): for a call whose cost can be bounded, which is then held to the amount
    /// reserved ([`Reservation::amount`]). Without limits the whole `ceiling` is
    /// reserved.
    ///
    /// # Errors
    /// [`BudgetExceeded`] for `floor`, naming the budget that would break (the run's
    /// first), when not even `floor` fits; nothing is reserved then.
    pub fn reserve_between(&self, floor: Usd, ceiling: Usd) -> Result<Reservation, BudgetExceeded> {
        // Lock order everywhere: the run, then the subject's day, then the day (the day
        // is shared by every run, a subject's day by its runs, a run's total only by
        // its own tasks).
        let mut run = lock(&self.run);
        run.admits(BudgetScope::Run, self.budget.per_run, floor)?;
        let mut subject = self.subject.as_ref().map(|s| lock(&s.0));
        if let Some(subject) = &subject {
            subject.admits(BudgetScope::SubjectDay, self.budget.per_subject_day, floor)?;
        }
        let mut day = lock(&self.day.0);
        day.admits(BudgetScope::Day, self.budget.per_day, floor)?;
        let room = |t: &Totals, limit: Option<Usd>| {
            limit.map_or(f64::INFINITY, |l| {
                l.as_f64() - t.spent.as_f64() - t.reserved.as_f64()
            })
        };
        let fits = room(&run, self.budget.per_run)
            .min(room(&day, self.budget.per_day))
            .min(
                subject
                    .as_deref()
                    .map_or(f64::INFINITY, |t| room(t, self.budget.per_subject_day)),
            );
        let larger = |a: Usd, b: Usd| if a >= b { a } else { b };
        let amount = if ceiling.as_f64() <= fits {
            larger(ceiling, floor)
        } else {
            // `floor` fits (within the comparison slack), so `fits` is at least about
            // `floor`: never reserve less than it.
            larger(Usd::saturating(fits), floor)
        };
        run.reserve(amount);
        day.reserve(amount);
        if let Some(subject) = &mut subject {
            subject.reserve(amount);
        }
        Ok(Reservation {
            run: Arc::clone(&self.run),
            day: self.day.clone(),
            subject: self.subject.clone(),
            amount,
            open: true,
        })
    }

    /// Records money spent without a reservation. Spending is recorded even when it
    /// breaks a budget (the money is gone); later reservations are refused.
    pub fn charge(&self, amount: Usd) {
        let mut run = lock(&self.run);
        let subject = self.subject.as_ref().map(|s| lock(&s.0));
        let mut day = lock(&self.day.0);
        run.spent += amount;
        if let Some(mut subject) = subject {
            subject.spent += amount;
        }
        day.spent += amount;
    }
}

/// Money set aside on a run and its day for one call in flight (see
/// [`CostLedger::reserve`]). Settle it with what the call cost; dropped unsettled (the
/// call failed, or its task was cancelled), it is released.
#[derive(Debug)]
#[must_use = "a reservation is released when dropped: settle it with the call's cost"]
pub struct Reservation {
    run: Arc<Mutex<Totals>>,
    day: DayTotal,
    subject: Option<DayTotal>,
    amount: Usd,
    open: bool,
}

impl Reservation {
    /// The amount set aside.
    pub fn amount(&self) -> Usd {
        self.amount
    }

    /// Releases the reservation and records `actual`, what the call cost (more or less
    /// than reserved), in one step: spent + reserved never counts the call twice nor
    /// drops it in between.
    pub fn settle(mut self, actual: Usd) {
        self.close(actual);
    }

    /// Gives the reserved money back without charging anything (the call failed before
    /// costing money). Dropping the reservation does the same.
    pub fn release(mut self) {
        self.close(Usd::ZERO);
    }

    fn close(&mut self, actual: Usd) {
        if !self.open {
            return;
        }
        self.open = false;
        let waiters = {
            let mut run = lock(&self.run);
            let subject = self.subject.as_ref().map(|s| lock(&s.0));
            let mut day = lock(&self.day.0);
            run.spent += actual;
            day.spent += actual;
            let mut waiters = run.release(self.amount);
            let mut also = day.release(self.amount);
            if let Some(mut subject) = subject {
                subject.spent += actual;
                also.extend(subject.release(self.amount));
            }
            // A task waiting on several scopes is registered in each: wake it once.
            for w in also {
                if !waiters.iter().any(|r| r.will_wake(&w)) {
                    waiters.push(w);
                }
            }
            waiters
        };
        // Woken after the locks are let go: a woken task may poll at once.
        for w in waiters {
            w.wake();
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.close(Usd::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(v: f64) -> Usd {
        Usd::new(v).unwrap()
    }

    fn run_budget(limit: f64) -> Budget {
        Budget {
            per_run: Some(usd(limit)),
            per_day: None,
            per_subject_day: None,
        }
    }

    #[test]
    fn enforces_run_and_day_budgets() {
        let l = CostLedger::new(
            Budget {
                per_run: Some(usd(1.0)),
                per_day: Some(usd(10.0)),
                per_subject_day: None,
            },
            usd(9.5),
        );
        assert!(l.check(usd(0.4)).is_ok());
        l.charge(usd(0.4));
        let err = l.check(usd(0.2)).unwrap_err();
        assert_eq!(err.scope, BudgetScope::Day);
        assert!(err.to_string().contains("rule: budget_day"), "{err}");
        let l = CostLedger::new(run_budget(1.0), Usd::ZERO);
        l.charge(usd(0.9));
        let err = l.check(usd(0.2)).unwrap_err();
        assert_eq!(err.scope, BudgetScope::Run);
        assert!(err.to_string().contains("rule: budget_run"), "{err}");
        assert!((l.utilisation() - 0.9).abs() < 1e-9);
        assert!((l.remaining().unwrap().as_f64() - 0.1).abs() < 1e-9);
    }

    /// `budget.per_subject_day`: two runs of one subject share its day total; a run of
    /// another subject does not see it, and the shared day still holds every run.
    #[test]
    fn a_subjects_runs_share_its_day_budget_and_others_do_not() {
        let budget = Budget {
            per_run: Some(usd(1.0)),
            per_day: Some(usd(10.0)),
            per_subject_day: Some(usd(1.5)),
        };
        let day = DayTotal::new(Usd::ZERO);
        let alice = DayTotal::new(usd(0.5));
        let bob = DayTotal::new(Usd::ZERO);
        let a1 = CostLedger::sharing_day(budget, day.clone()).with_subject_day(alice.clone());
        let a2 = CostLedger::sharing_day(budget, day.clone()).with_subject_day(alice.clone());
        let b1 = CostLedger::sharing_day(budget, day.clone()).with_subject_day(bob.clone());
        let held = a1.reserve(usd(0.6)).unwrap();
        // 0.5 spent + 0.6 reserved + 0.6 > 1.5: the subject's budget, not the run's.
        let err = a2.reserve(usd(0.6)).unwrap_err();
        assert_eq!(err.scope, BudgetScope::SubjectDay);
        assert!(
            err.to_string().contains("rule: budget_subject_day"),
            "{err}"
        );
        assert!(err.fits_once_settled());
        assert!(b1.reserve(usd(0.6)).is_ok(), "another subject has its own");
        // Only what fits in the subject's day is set aside for a bounded call.
        held.settle(usd(0.6));
        let r = a2.reserve_between(usd(0.1), usd(0.9)).unwrap();
        assert!((r.amount().as_f64() - 0.4).abs() < 1e-9, "{}", r.amount());
        r.settle(usd(0.4));
        assert!((alice.spent().as_f64() - 1.5).abs() < 1e-9);
        assert_eq!(
            a2.check(usd(0.01)).unwrap_err().scope,
            BudgetScope::SubjectDay
        );
        a1.charge(usd(0.1));
        assert!(
            (alice.spent().as_f64() - 1.6).abs() < 1e-9,
            "spending is recorded"
        );
        assert!((day.spent().as_f64() - 1.1).abs() < 1e-9, "{}", day.spent());
        assert_eq!(bob.spent(), Usd::ZERO);
        assert!((a1.utilisation() - 1.0).abs() < 1e-9);
        assert_eq!(a1.subject_day_spent(), Some(alice.spent()));
        assert_eq!(
            CostLedger::sharing_day(budget, day).subject_day_spent(),
            None,
            "a ledger without a subject day has no subject limit"
        );
    }

    /// The executor's order: two tasks of a run reserve before either has charged.
    /// With $0.90 of $1.00 spent, only one $0.10 call fits; the second is refused
    /// naming what the first reserved.
    #[test]
    fn a_second_reservation_that_does_not_fit_beside_the_first_is_refused() {
        let ledger = CostLedger::new(run_budget(1.0), Usd::ZERO);
        ledger.charge(usd(0.9));
        let est = usd(0.1);
        let first = ledger.reserve(est).unwrap();
        let err = ledger.reserve(est).unwrap_err();
        assert_eq!(err.scope, BudgetScope::Run);
        assert!((err.spent.as_f64() - 0.9).abs() < 1e-9, "{err}");
        assert!((err.reserved.as_f64() - 0.1).abs() < 1e-9, "{err}");
        assert!(
            err.to_string()
                .contains("spent $0.9000 + reserved $0.1000 + requested $0.1000 > limit $1.0000"),
            "{err}"
        );
        first.settle(est);
        assert!(ledger.spent().as_f64() <= 1.0 + 1e-9, "{}", ledger.spent());
        assert_eq!(ledger.reserved(), Usd::ZERO);
    }

    #[test]
    fn settling_records_the_actual_cost_and_dropping_releases() {
        let ledger = CostLedger::new(
            Budget {
                per_run: Some(usd(1.0)),
                per_day: Some(usd(5.0)),
                per_subject_day: None,
            },
            usd(1.0),
        );
        let r = ledger.reserve(usd(0.5)).unwrap();
        assert_eq!(r.amount(), usd(0.5));
        assert_eq!(ledger.reserved(), usd(0.5));
        assert_eq!(ledger.remaining(), Some(usd(0.5)));
        // Cheaper than estimated: the difference is free again.
        r.settle(usd(0.2));
        assert_eq!(ledger.spent(), usd(0.2));
        assert_eq!(ledger.reserved(), Usd::ZERO);
        assert!((ledger.day_spent().as_f64() - 1.2).abs() < 1e-9);
        // A failed call (dropped reservation) costs nothing and frees its room.
        drop(ledger.reserve(usd(0.8)).unwrap());
        ledger.reserve(usd(0.3)).unwrap().release();
        assert_eq!(ledger.reserved(), Usd::ZERO);
        assert_eq!(ledger.spent(), usd(0.2));
        assert!(ledger.reserve(usd(0.8)).is_ok());
    }

    #[test]
    fn a_refused_reservation_reserves_nothing() {
        let ledger = CostLedger::new(
            Budget {
                per_run: Some(usd(10.0)),
                per_day: Some(usd(1.0)),
                per_subject_day: None,
            },
            usd(0.5),
        );
        let err = ledger.reserve(usd(0.6)).unwrap_err();
        assert_eq!(err.scope, BudgetScope::Day);
        assert_eq!(ledger.reserved(), Usd::ZERO);
        assert_eq!(ledger.day.reserved(), Usd::ZERO);
        assert!(ledger.reserve(usd(0.5)).is_ok());
    }

    #[test]
    fn ledgers_sharing_a_day_cannot_each_spend_the_daily_budget() {
        let budget = Budget {
            per_run: None,
            per_day: Some(usd(1.0)),
            per_subject_day: None,
        };
        let day = DayTotal::new(usd(0.2));
        let a = CostLedger::sharing_day(budget, day.clone());
        let b = CostLedger::sharing_day(budget, day.clone());
        a.charge(usd(0.5));
        assert!((b.day_spent().as_f64() - 0.7).abs() < 1e-9);
        let err = b.check(usd(0.4)).unwrap_err();
        assert_eq!(err.scope, BudgetScope::Day);
        assert!((err.spent.as_f64() - 0.7).abs() < 1e-9, "{err}");
        // Money one run reserved is out of the other's reach until it is settled.
        let held = a.reserve(usd(0.2)).unwrap();
        let err = b.reserve(usd(0.2)).unwrap_err();
        assert_eq!(err.scope, BudgetScope::Day);
        assert!((err.reserved.as_f64() - 0.2).abs() < 1e-9, "{err}");
        drop(held);
        b.charge(usd(0.3));
        assert!(a.check(usd(0.01)).is_err());
        assert!(
            (a.spent().as_f64() - 0.5).abs() < 1e-9,
            "run totals stay apart"
        );
        assert!((b.spent().as_f64() - 0.3).abs() < 1e-9);
        assert!((day.spent().as_f64() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_resumed_run_starts_from_what_it_spent_without_charging_the_day_again() {
        let budget = Budget {
            per_run: Some(usd(1.0)),
            per_day: Some(usd(10.0)),
            per_subject_day: None,
        };
        let l = CostLedger::new(budget, usd(2.0)).with_run_spent(usd(0.9));
        assert!((l.spent().as_f64() - 0.9).abs() < 1e-9);
        assert!((l.day_spent().as_f64() - 2.0).abs() < 1e-9);
        assert_eq!(l.check(usd(0.2)).unwrap_err().scope, BudgetScope::Run);
    }

    /// Threads racing for one budget: exactly as many reservations as fit are admitted,
    /// and what they spend never passes the budget.
    #[test]
    fn concurrent_reservations_never_pass_the_budget() {
        let ledger = CostLedger::new(
            Budget {
                per_run: Some(usd(1.0)),
                per_day: Some(usd(0.75)),
                per_subject_day: None,
            },
            Usd::ZERO,
        );
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let admitted: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let ledger = ledger.clone();
                    let barrier = Arc::clone(&barrier);
                    s.spawn(move || {
                        barrier.wait();
                        match ledger.reserve(usd(0.125)) {
                            Ok(r) => {
                                // Every admitted call is in flight before any settles.
                                barrier.wait();
                                r.settle(usd(0.125));
                                true
                            }
                            Err(e) => {
                                assert_eq!(e.scope, BudgetScope::Day, "{e}");
                                barrier.wait();
                                false
                            }
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(admitted.iter().filter(|a| **a).count(), 6);
        assert_eq!(ledger.spent(), usd(0.75));
        assert_eq!(ledger.day_spent(), usd(0.75));
        assert_eq!(ledger.reserved(), Usd::ZERO);
    }

    /// Counts its wake-ups.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes(std::sync::atomic::AtomicUsize::new(0)));
        (Arc::clone(&wakes), Waker::from(wakes))
    }

    fn wakes(w: &Wakes) -> usize {
        w.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A refused task waits on `released` and is woken (once) by the settlement that
    /// makes room; spending (which gives nothing back) does not wake it.
    #[test]
    fn a_waiter_is_woken_once_when_a_reservation_settles() {
        let ledger = CostLedger::new(run_budget(1.0), Usd::ZERO);
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let held = ledger.reserve(usd(0.6)).unwrap();
        let mut wait = Box::pin(ledger.released());
        assert!(ledger.reserve(usd(0.6)).unwrap_err().fits_once_settled());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        // Polled again (a spurious wake-up): still one registration per scope.
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert_eq!(lock(&ledger.run).waiters.len(), 1);
        ledger.charge(usd(0.1));
        assert_eq!(wakes(&count), 0, "spending gives no room back");
        held.settle(usd(0.1));
        assert_eq!(
            wakes(&count),
            1,
            "registered on the run and the day, woken once"
        );
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        assert!(lock(&ledger.run).waiters.is_empty());
        assert!(lock(&ledger.day.0).waiters.is_empty());
        assert!(ledger.reserve(usd(0.6)).is_ok());
    }

    /// Taken before the reservation attempt, the future sees a release that lands
    /// between the refusal and the first poll: the wake-up is not lost.
    #[test]
    fn a_release_before_the_first_poll_is_not_lost() {
        let ledger = CostLedger::new(run_budget(1.0), Usd::ZERO);
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let held = ledger.reserve(usd(0.6)).unwrap();
        let mut wait = Box::pin(ledger.released());
        assert!(ledger.reserve(usd(0.6)).is_err());
        held.release();
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        assert_eq!(wakes(&count), 0, "ready without being woken");
        // Taken after the release, a new one waits for the next close.
        let mut later = Box::pin(ledger.released());
        assert!(later.as_mut().poll(&mut cx).is_pending());
    }

    /// On a day shared by runs, another run's settlement frees day room: it wakes the
    /// waiters of every run on that day.
    #[test]
    fn another_runs_settlement_on_a_shared_day_wakes_a_waiter() {
        let budget = Budget {
            per_run: None,
            per_day: Some(usd(1.0)),
            per_subject_day: None,
        };
        let day = DayTotal::new(Usd::ZERO);
        let a = CostLedger::sharing_day(budget, day.clone());
        let b = CostLedger::sharing_day(budget, day);
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let held = a.reserve(usd(0.7)).unwrap();
        let mut wait = Box::pin(b.released());
        let refused = b.reserve(usd(0.5)).unwrap_err();
        assert_eq!(refused.scope, BudgetScope::Day);
        assert!(refused.fits_once_settled());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        drop(held);
        assert_eq!(wakes(&count), 1);
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        assert!(b.reserve(usd(0.5)).is_ok());
    }

    /// A panic while a ledger lock is held must not turn budget checks off.
    #[test]
    fn a_poisoned_lock_still_enforces_the_budget() {
        let ledger = CostLedger::new(run_budget(1.0), Usd::ZERO);
        ledger.charge(usd(0.95));
        for totals in [Arc::clone(&ledger.run), Arc::clone(&ledger.day.0)] {
            let poisoned = std::thread::spawn(move || {
                let _held = totals.lock().unwrap();
                panic!("poison the ledger");
            })
            .join();
            assert!(poisoned.is_err());
        }
        assert!(ledger.run.is_poisoned() && ledger.day.0.is_poisoned());
        assert_eq!(
            ledger.reserve(usd(0.1)).unwrap_err().scope,
            BudgetScope::Run
        );
        ledger.reserve(usd(0.05)).unwrap().settle(usd(0.05));
        assert_eq!(ledger.spent(), usd(1.0));
    }

    #[test]
    fn many_reservations_leave_no_rounding_residue() {
        let ledger = CostLedger::new(run_budget(0.3), Usd::ZERO);
        for _ in 0..1000 {
            let a = ledger.reserve(usd(0.1)).unwrap();
            let b = ledger.reserve(usd(0.2)).unwrap();
            drop(a);
            drop(b);
        }
        assert_eq!(ledger.reserved(), Usd::ZERO);
        assert!(ledger.reserve(usd(0.3)).is_ok());
    }

    /// A bounded call takes as much of its ceiling as every budget has room for, at
    /// least its floor; without room for the floor it is refused for the floor.
    #[test]
    fn reserve_between_takes_what_fits_between_floor_and_ceiling() {
        let ledger = CostLedger::new(
            Budget {
                per_run: Some(usd(1.0)),
                per_day: Some(usd(3.0)),
                per_subject_day: None,
            },
            usd(2.5),
        );
        ledger.charge(usd(0.2));
        // Room: run $0.80, day $0.30: the day's.
        let r = ledger.reserve_between(usd(0.05), usd(0.5)).unwrap();
        assert!((r.amount().as_f64() - 0.3).abs() < 1e-9, "{}", r.amount());
        let err = ledger.reserve_between(usd(0.05), usd(0.5)).unwrap_err();
        assert_eq!(err.scope, BudgetScope::Day);
        assert!((err.requested.as_f64() - 0.05).abs() < 1e-9, "{err}");
        assert!(err.fits_once_settled(), "{err}");
        r.settle(usd(0.1));
        // The whole ceiling when it fits; a ceiling below the floor counts as the floor.
        let r = ledger.reserve_between(usd(0.01), usd(0.02)).unwrap();
        assert!((r.amount().as_f64() - 0.02).abs() < 1e-9, "{}", r.amount());
        drop(r);
        let r = ledger.reserve_between(usd(0.04), usd(0.02)).unwrap();
        assert!((r.amount().as_f64() - 0.04).abs() < 1e-9, "{}", r.amount());
        drop(r);
        let unlimited = CostLedger::new(Budget::default(), Usd::ZERO);
        let r = unlimited.reserve_between(usd(0.01), usd(7.0)).unwrap();
        assert!((r.amount().as_f64() - 7.0).abs() < 1e-9, "{}", r.amount());
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the interleaving of reservations, settlements (at or below the
            /// estimate) and releases, spent + reserved stays within the budget.
            #[test]
            fn spent_plus_reserved_stays_within_the_budget(
                ops in proptest::collection::vec((0u32..100, 0u32..=100, any::<bool>()), 1..60),
                limit in 1u32..500,
            ) {
                let limit = usd(f64::from(limit) / 100.0);
                let ledger = CostLedger::new(
                    Budget { per_run: Some(limit), per_day: Some(limit), per_subject_day: None },
                    Usd::ZERO,
                );
                let mut open: Vec<Reservation> = Vec::new();
                for (cents, settle_pct, close_one) in ops {
                    if close_one && !open.is_empty() {
                        let r = open.remove(0);
                        let actual = r.amount() * (f64::from(settle_pct) / 100.0);
                        if settle_pct % 2 == 0 { r.settle(actual) } else { r.release() }
                    } else {
                        let amount = usd(f64::from(cents) / 100.0);
                        // Odd amounts reserve as bounded calls do: up to twice as much.
                        let r = if cents % 2 == 1 {
                            ledger.reserve_between(amount, amount * 2.0)
                        } else {
                            ledger.reserve(amount)
                        };
                        if let Ok(r) = r {
                            open.push(r);
                        }
                    }
                    let used = ledger.spent() + ledger.reserved();
                    prop_assert!(used.as_f64() <= limit.as_f64() + 1e-8, "{used} > {limit}");
                    prop_assert!(ledger.day_spent() == ledger.spent());
                }
                drop(open);
                prop_assert_eq!(ledger.reserved(), Usd::ZERO);
            }
        }
    }
}
