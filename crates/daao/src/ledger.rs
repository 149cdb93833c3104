//! Money spent against budgets.

use std::sync::{Arc, Mutex};

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
}

/// A charge was refused because it would break a budget.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{scope} budget exceeded: spent {spent} + requested {requested} > limit {limit} (rule: budget_{scope})"
)]
pub struct BudgetExceeded {
    /// `run` or `day`.
    pub scope: &'static str,
    /// Already spent.
    pub spent: Usd,
    /// The charge asked for.
    pub requested: Usd,
    /// The limit.
    pub limit: Usd,
}

/// Tracks what a run has spent, and what the day has. Reserve before an LLM call with
/// [`CostLedger::check`], then [`CostLedger::charge`] what it actually cost.
///
/// The day's total can be shared: ledgers made with [`CostLedger::sharing_day`] over
/// one total (and clones of a ledger) charge and check that one total, so concurrent
/// runs cannot each spend the whole daily budget.
#[derive(Debug, Clone, Default)]
pub struct CostLedger {
    budget: Budget,
    run_spent: Usd,
    day_spent: Arc<Mutex<Usd>>,
}

impl CostLedger {
    /// A ledger enforcing `budget`, with `day_spent` already spent today by other runs
    /// (a day total of its own: other ledgers do not see what this one charges).
    pub fn new(budget: Budget, day_spent: Usd) -> Self {
        Self::sharing_day(budget, Arc::new(Mutex::new(day_spent)))
    }

    /// A ledger enforcing `budget` that charges and checks the shared day total `day`
    /// (what every run sharing it has spent today).
    pub fn sharing_day(budget: Budget, day: Arc<Mutex<Usd>>) -> Self {
        CostLedger {
            budget,
            run_spent: Usd::ZERO,
            day_spent: day,
        }
    }

    /// Starts the run's total at `spent`: what a resumed run spent before a restart.
    /// The day total is not charged again (it already holds that money).
    #[must_use]
    pub fn with_run_spent(mut self, spent: Usd) -> Self {
        self.run_spent = spent;
        self
    }

    /// The budget.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Spent by this run.
    pub fn spent(&self) -> Usd {
        self.run_spent
    }

    /// Spent today, this run included.
    pub fn day_spent(&self) -> Usd {
        *self
            .day_spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Left in the run budget (`None`: unlimited).
    pub fn remaining(&self) -> Option<Usd> {
        self.budget.per_run.map(|l| l - self.run_spent)
    }

    /// Fraction of the tightest budget used, in `[0, 1]` (0 when unlimited).
    pub fn utilisation(&self) -> f64 {
        let run = self
            .budget
            .per_run
            .filter(|l| l.as_f64() > 0.0)
            .map_or(0.0, |l| self.run_spent.as_f64() / l.as_f64());
        let day = self
            .budget
            .per_day
            .filter(|l| l.as_f64() > 0.0)
            .map_or(0.0, |l| self.day_spent().as_f64() / l.as_f64());
        run.max(day).clamp(0.0, 1.0)
    }

    /// Checks that `amount` more would stay within every budget.
    ///
    /// # Errors
    /// [`BudgetExceeded`] naming the budget that would break.
    pub fn check(&self, amount: Usd) -> Result<(), BudgetExceeded> {
        if let Some(limit) = self.budget.per_run
            && self.run_spent + amount > limit
        {
            return Err(BudgetExceeded {
                scope: "run",
                spent: self.run_spent,
                requested: amount,
                limit,
            });
        }
        if let Some(limit) = self.budget.per_day {
            let spent = self.day_spent();
            if spent + amount > limit {
                return Err(BudgetExceeded {
                    scope: "day",
                    spent,
                    requested: amount,
                    limit,
                });
            }
        }
        Ok(())
    }

    /// Records money actually spent. Spending is recorded even when it breaks a budget
    /// (the money is gone); the breach shows in the next [`CostLedger::check`].
    pub fn charge(&mut self, amount: Usd) {
        self.run_spent += amount;
        *self
            .day_spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += amount;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(v: f64) -> Usd {
        Usd::new(v).unwrap()
    }

    #[test]
    fn enforces_run_and_day_budgets() {
        let mut l = CostLedger::new(
            Budget {
                per_run: Some(usd(1.0)),
                per_day: Some(usd(10.0)),
            },
            usd(9.5),
        );
        assert!(l.check(usd(0.4)).is_ok());
        l.charge(usd(0.4));
        let err = l.check(usd(0.2)).unwrap_err();
        assert_eq!(err.scope, "day");
        assert!(err.to_string().contains("rule: budget_day"), "{err}");
        let mut l = CostLedger::new(
            Budget {
                per_run: Some(usd(1.0)),
                per_day: None,
            },
            Usd::ZERO,
        );
        l.charge(usd(0.9));
        assert_eq!(l.check(usd(0.2)).unwrap_err().scope, "run");
        assert!((l.utilisation() - 0.9).abs() < 1e-9);
        assert!((l.remaining().unwrap().as_f64() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn ledgers_sharing_a_day_cannot_each_spend_the_daily_budget() {
        let budget = Budget {
            per_run: None,
            per_day: Some(usd(1.0)),
        };
        let day = Arc::new(Mutex::new(usd(0.2)));
        let mut a = CostLedger::sharing_day(budget, Arc::clone(&day));
        let mut b = CostLedger::sharing_day(budget, Arc::clone(&day));
        a.charge(usd(0.5));
        assert!((b.day_spent().as_f64() - 0.7).abs() < 1e-9);
        let err = b.check(usd(0.4)).unwrap_err();
        assert_eq!(err.scope, "day");
        assert!((err.spent.as_f64() - 0.7).abs() < 1e-9, "{err}");
        b.charge(usd(0.3));
        assert!(a.check(usd(0.01)).is_err());
        assert!(
            (a.spent().as_f64() - 0.5).abs() < 1e-9,
            "run totals stay apart"
        );
        assert!((b.spent().as_f64() - 0.3).abs() < 1e-9);
        assert!((day.lock().unwrap().as_f64() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_resumed_run_starts_from_what_it_spent_without_charging_the_day_again() {
        let budget = Budget {
            per_run: Some(usd(1.0)),
            per_day: Some(usd(10.0)),
        };
        let l = CostLedger::new(budget, usd(2.0)).with_run_spent(usd(0.9));
        assert!((l.spent().as_f64() - 0.9).abs() < 1e-9);
        assert!((l.day_spent().as_f64() - 2.0).abs() < 1e-9);
        assert_eq!(l.check(usd(0.2)).unwrap_err().scope, "run");
    }
}
