//! Log capture for test binaries that each hold one test: a global fmt subscriber
//! installed before any callsite exists. (`tracing` caches per callsite, process-wide,
//! whether any subscriber wants it; in a shared binary another test's thread could
//! register a callsite with no subscriber of its own and leave it unrecorded.)

use std::sync::{Arc, Mutex};

/// What the subscriber wrote.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Installs the process's global subscriber at `level`, writing here.
    ///
    /// # Panics
    /// When a global subscriber is already set (one per test binary).
    pub(crate) fn capture(level: tracing::Level) -> Logs {
        let logs = Logs::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    }

    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
