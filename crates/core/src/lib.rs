//! The Genesis domain model: the values every other crate speaks in.
//!
//! Mental model: a user request becomes a set of [`Task`]s, each identified by a
//! [`TaskId`], of a [`TaskKind`], later assigned to an agent ([`AgentId`]) and a model
//! ([`ModelId`]) inside a run ([`RunId`]). Money is [`Usd`], never a bare float;
//! credentials are [`Secret`]s that print as `<redacted>`. Failures are classified by
//! [`ErrorCategory`] and [`Severity`] so the facade can map them to exit codes and HTTP
//! statuses in one place.
//!
//! This crate has no async code and, by default, does no I/O.
//!
//! # Features
//!
//! - `tls` (off by default): the `tls` module, the rustls client configuration (the `ring`
//!   provider and the system CA bundle, read once) that every Genesis HTTP client is
//!   built with, so no crate installs a process-global rustls provider. Enabled by
//!   `genesis-llm` (`http`) and `genesis-telemetry` (`otlp`).
//!
//! ```
//! use genesis_core::{Task, TaskId, TaskKind, Usd, Secret};
//!
//! let task = Task::new(TaskId::new("t1"), TaskKind::Implement, "Build the invoice API")
//!     .with_skill("rust")
//!     .with_estimated_tokens(1_200);
//! assert_eq!(task.kind.as_str(), "implement");
//! assert_eq!(Usd::new(0.25).unwrap() + Usd::new(0.5).unwrap(), Usd::new(0.75).unwrap());
//! assert_eq!(format!("{}", Secret::new("sk-123")), "<redacted>");
//! ```

pub mod decimal;
mod error;
pub mod fasthash;
mod id;
mod money;
mod secret;
mod task;
pub mod text;
#[cfg(feature = "tls")]
pub mod tls;

pub use error::{ErrorCategory, Severity, error_chain};
pub use id::{AgentId, ModelId, RunId, TaskId};
pub use money::{InvalidUsd, Usd};
pub use secret::Secret;
pub use task::{Label, Metadata, Task, TaskKind, UnknownTaskKind};
