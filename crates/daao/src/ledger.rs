//! Money spent against budgets.

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

/// Tracks what a run has spent (and, if shared, a day). Reserve before an LLM call with
/// [`CostLedger::check`], then [`CostLedger::charge`] what it actually cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CostLedger {
    budget: Budget,
    run_spent: Usd,
    day_spent: Usd,
}

impl CostLedger {
    /// A ledger enforcing `budget`, with `day_spent` already spent today by other runs.
    pub fn new(budget: Budget, day_spent: Usd) -> Self {
        CostLedger {
            budget,
            run_spent: Usd::ZERO,
            day_spent,
        }
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
        self.day_spent
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
            .map_or(0.0, |l| self.day_spent.as_f64() / l.as_f64());
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
        if let Some(limit) = self.budget.per_day
            && self.day_spent + amount > limit
        {
            return Err(BudgetExceeded {
                scope: "day",
                spent: self.day_spent,
                requested: amount,
                limit,
            });
        }
        Ok(())
    }

    /// Records money actually spent. Spending is recorded even when it breaks a budget
    /// (the money is gone); the breach shows in the next [`CostLedger::check`].
    pub fn charge(&mut self, amount: Usd) {
        self.run_spent += amount;
        self.day_spent += amount;
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
}
