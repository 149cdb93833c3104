//! DAAO: difficulty-aware model selection, cost accounting and refinement stopping.
//!
//! Mental model: every LLM task gets a difficulty in `[0, 1]` from a
//! [`DifficultyEstimator`]; the [`ModelSelector`] picks, among the models of the
//! [`ModelCatalog`] whose context window holds the task, the one with the lowest estimated
//! cost whose capability covers that difficulty, and reports that estimate; the
//! [`CostLedger`] reserves each call's estimated cost before it is made and settles it
//! to what the call actually cost, so concurrent calls cannot overspend a [`Budget`];
//! a [`StopPolicy`] (TUMIX) decides when another refinement round is not worth its cost.
//!
//! ```
//! use genesis_core::{Task, TaskId, TaskKind};
//! use genesis_daao::{ModelCatalog, ModelSelector};
//!
//! let catalog = ModelCatalog::from_toml_str(r#"
//! [[model]]
//! id = "small"
//! provider = "openai"
//! capability = 0.5
//! input_per_million = 0.15
//! output_per_million = 0.60
//!
//! [[model]]
//! id = "large"
//! provider = "openai"
//! capability = 1.0
//! input_per_million = 2.50
//! output_per_million = 10.0
//! "#).unwrap();
//! let selector = ModelSelector::new(catalog);
//! let easy = Task::new(TaskId::new("t1"), TaskKind::Support, "Reply to a customer thanking them");
//! let hard = Task::new(TaskId::new("t2"), TaskKind::Design,
//!     "Design a distributed, fault-tolerant consensus protocol and prove its safety");
//! assert_eq!(selector.select(&easy).model.as_str(), "small");
//! assert_eq!(selector.select(&hard).model.as_str(), "large");
//! ```

mod catalog;
mod difficulty;
mod ledger;
mod select;
mod stop;

pub use catalog::{CatalogError, ModelCatalog, ModelSpec, OUTPUT_SHARE, split_tokens};
pub use difficulty::{DifficultyEstimator, HeuristicDifficulty};
pub use ledger::{Budget, BudgetExceeded, BudgetScope, CostLedger, DayTotal, Reservation};
pub use select::{ModelChoice, ModelSelector};
pub use stop::{ConvergenceStop, RefinementRound, StopDecision, StopPolicy};
