//! Hierarchical task DAGs: what Genesis plans before it routes anything.
//!
//! Mental model: a request becomes a [`TaskDag`] — tasks arranged in a hierarchy
//! (phases refine into subtasks, up to [`Limits::max_depth`] levels) with dependencies
//! between them. An edge `a → b` means *b waits for a*; a parent waits for its subtasks
//! and subtasks inherit their parent's dependencies, so scheduling is a plain
//! topological walk. Every mutation checks the [`Limits`] and rejects cycles with the
//! offending path; failed updates leave the DAG untouched.
//!
//! A [`Decomposer`] builds the DAG. [`HeuristicDecomposer`] needs no LLM: it keeps a
//! request's statements as context, splits its asks into clauses, and expands eight
//! request families (SaaS business, software product, marketing campaign, data
//! analysis, research report, deployment/ops, bug fix, incident response) into
//! multi-level templates when the words give enough evidence for one.
//!
//! ```
//! use genesis_htdag::{HeuristicDecomposer, Limits};
//!
//! let dag = HeuristicDecomposer::new()
//!     .decompose_sync("Build a SaaS business for invoices", &Limits::default())
//!     .unwrap();
//! assert!(dag.len() >= 7);
//! assert_eq!(dag.depth(), 2);
//! let order = dag.topological_order();
//! assert_eq!(order.len(), dag.len());
//! ```

mod dag;
mod decompose;
mod error;
mod limits;

pub use dag::{DagUpdate, EdgeKind, TaskDag, TaskNode};
pub use decompose::{
    Decomposer, FAMILY_THRESHOLD, Family, HeuristicDecomposer, LlmDecomposer, PlannerModel, Screen,
};
pub use error::HtdagError;
pub use limits::Limits;
