//! Integration tests of the Genesis server: the app in-process on loopback (`api`), and
//! the real binary killed with SIGKILL mid-run and restarted (`crash`).

// Test helpers outside #[test] functions fail loudly too (clippy.toml only covers
// the test functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod config_files;
mod crash;
mod durability;
mod resume;
mod support;
