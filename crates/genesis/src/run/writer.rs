//! The executor's journal thread. Runs journal every event before they act on it; a
//! durable journal blocks (an fsync per commit), and a run's task that blocked in it
//! would hold a runtime worker or, handed over with `block_in_place`, cost a thread
//! per waiting run: 100 concurrent runs kept about 70 threads. Instead the runs' tasks
//! hand their events to one thread and await the answer; the thread gives the journal
//! everything that arrived while it was writing in one call
//! ([`RunJournal::record_groups`]), so a durable journal commits them together: one
//! fsync for many runs (group commit).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, OnceLock};

use genesis_core::RunId;
use tokio::sync::oneshot;

use super::{RunEvent, RunJournal};

/// What a journal write returns.
pub(crate) type Journaled = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Most writes handed to the journal in one call: bounds one transaction's size when
/// many runs write at once.
const MAX_WRITES_PER_CALL: usize = 256;

/// One run's events on their way to the journal.
struct Write {
    journal: Arc<dyn RunJournal>,
    run_id: RunId,
    events: Vec<RunEvent>,
    /// Where the events go back, with the result, once written.
    done: oneshot::Sender<(Vec<RunEvent>, Journaled)>,
}

/// Hands journal writes to the journal thread, started on the first write to a
/// journal that blocks ([`RunJournal::blocks`]). The thread ends once every handle
/// (and so every sender) is gone.
#[derive(Default)]
pub(crate) struct JournalWriter {
    /// `None` inside: the thread could not be started; writes are then made on the
    /// calling thread.
    thread: OnceLock<Option<Sender<Write>>>,
}

impl JournalWriter {
    /// Journals `events` of run `run_id` all or none, and hands them back with the
    /// result once they are written (durably, as far as `journal` promises).
    pub(crate) async fn write(
        &self,
        journal: &Arc<dyn RunJournal>,
        run_id: &RunId,
        events: Vec<RunEvent>,
    ) -> (Vec<RunEvent>, Journaled) {
        if !journal.blocks() {
            // Inline, on the run's own task: a panic here must not end the run (it
            // would lose its result and never send `run_finished`). It fails this
            // write, as on the journal thread.
            let r = record_caught(journal.as_ref(), run_id, &events);
            return (events, r);
        }
        let Some(tx) = self.sender() else {
            return write_here(journal, run_id, events);
        };
        let (done, answer) = oneshot::channel();
        let write = Write {
            journal: Arc::clone(journal),
            run_id: run_id.clone(),
            events,
            done,
        };
        if let Err(mpsc::SendError(w)) = tx.send(write) {
            return write_here(journal, run_id, w.events);
        }
        match answer.await {
            Ok(written) => written,
            // The thread answers every write it takes, even when the journal panics;
            // it can only be gone if the process is going down.
            Err(_) => (Vec::new(), Err("the journal thread stopped".into())),
        }
    }

    fn sender(&self) -> Option<&Sender<Write>> {
        self.thread
            .get_or_init(|| {
                let (tx, rx) = mpsc::channel();
                let spawned = std::thread::Builder::new()
                    .name("genesis-journal".into())
                    .spawn(move || serve(&rx));
                match spawned {
                    Ok(_) => Some(tx),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the journal thread; journal writes block the runs' workers");
                        None
                    }
                }
            })
            .as_ref()
    }
}

/// The fallback when there is no journal thread: write on this thread, first handing
/// the worker's other tasks to another thread on a multi-threaded runtime
/// (`block_in_place`), so the write stalls this run only.
fn write_here(
    journal: &Arc<dyn RunJournal>,
    run_id: &RunId,
    events: Vec<RunEvent>,
) -> (Vec<RunEvent>, Journaled) {
    let write = || record_caught(journal.as_ref(), run_id, &events);
    let r = match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(write)
        }
        _ => write(),
    };
    (events, r)
}

/// What a write is answered when the journal panicked while making it.
const PANICKED: &str = "the journal panicked while writing";

/// `journal.record_all(run_id, events)` on this thread; a panic in the journal fails
/// the write (logged by the caller like any failed write), as on the journal thread.
fn record_caught(journal: &dyn RunJournal, run_id: &RunId, events: &[RunEvent]) -> Journaled {
    // The journal's state is its own business: after a panic we only report the
    // write as failed, and a journal that panics again fails again.
    catch_unwind(AssertUnwindSafe(|| journal.record_all(run_id, events)))
        .unwrap_or_else(|_| Err(PANICKED.into()))
}

/// The journal thread: takes what is queued (at least one write, at most
/// [`MAX_WRITES_PER_CALL`]), writes it with one call per journal, answers every write.
fn serve(rx: &Receiver<Write>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_WRITES_PER_CALL {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let mut results: Vec<Journaled> = Vec::with_capacity(batch.len());
        let mut start = 0;
        while start < batch.len() {
            // Consecutive writes to one journal (in a server, all of them) go together.
            let journal = Arc::clone(&batch[start].journal);
            let len = batch[start..]
                .iter()
                .take_while(|w| same(&w.journal, &journal))
                .count();
            let part = &batch[start..start + len];
            results.extend(record(&*journal, part));
            start += len;
        }
        for (w, r) in batch.into_iter().zip(results) {
            // The run may be gone (cancelled and dropped): nobody to tell.
            let _ = w.done.send((w.events, r));
        }
    }
}

/// One journal call for `part`: one result per write, whatever the journal returns or
/// if it panics.
fn record(journal: &dyn RunJournal, part: &[Write]) -> Vec<Journaled> {
    let groups: Vec<(&RunId, &[RunEvent])> = part
        .iter()
        .map(|w| (&w.run_id, w.events.as_slice()))
        .collect();
    let mut results = match catch_unwind(AssertUnwindSafe(|| journal.record_groups(&groups))) {
        Ok(results) => results,
        Err(_) => {
            return part.iter().map(|_| Err(PANICKED.into())).collect();
        }
    };
    results.truncate(part.len());
    while results.len() < part.len() {
        results.push(Err("the journal returned no result for this write".into()));
    }
    results
}

/// True when `a` and `b` are the same journal.
fn same(a: &Arc<dyn RunJournal>, b: &Arc<dyn RunJournal>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records how it was called; blocks like a disk would.
    #[derive(Default)]
    struct Calls {
        groups_per_call: Mutex<Vec<usize>>,
        panic_on: Option<&'static str>,
    }

    impl RunJournal for Calls {
        fn record(&self, _: &RunId, event: &RunEvent) -> Journaled {
            if self.panic_on == Some(event.kind()) {
                panic!("journal bug");
            }
            Ok(())
        }

        fn record_groups(&self, groups: &[(&RunId, &[RunEvent])]) -> Vec<Journaled> {
            self.groups_per_call.lock().unwrap().push(groups.len());
            std::thread::sleep(std::time::Duration::from_millis(5));
            groups
                .iter()
                .map(|(id, events)| self.record_all(id, events))
                .collect()
        }
    }

    fn started(n: usize) -> RunEvent {
        RunEvent::RunStarted {
            tasks: n,
            resumed: 0,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_runs_are_written_together_and_get_their_events_back() {
        let calls = Arc::new(Calls::default());
        let journal: Arc<dyn RunJournal> = calls.clone();
        let writer = Arc::new(JournalWriter::default());
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (writer, journal) = (Arc::clone(&writer), Arc::clone(&journal));
            tasks.push(tokio::spawn(async move {
                let id = RunId::new(format!("run-{i}"));
                writer.write(&journal, &id, vec![started(i)]).await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let (events, r) = t.await.unwrap();
            assert!(r.is_ok());
            assert!(
                matches!(events.as_slice(), [RunEvent::RunStarted { tasks, .. }] if *tasks == i)
            );
        }
        let calls = calls.groups_per_call.lock().unwrap().clone();
        assert_eq!(calls.iter().sum::<usize>(), 50);
        // The first call takes one write; the 49 others queue behind its 5 ms.
        assert!(calls.len() < 50, "one call per write: {calls:?}");
    }

    /// Panics on its first write; written inline (it does not block).
    #[derive(Default)]
    struct PanicsInline(std::sync::atomic::AtomicBool);

    impl RunJournal for PanicsInline {
        fn record(&self, _: &RunId, _: &RunEvent) -> Journaled {
            if !self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
                panic!("journal bug");
            }
            Ok(())
        }

        fn blocks(&self) -> bool {
            false
        }
    }

    /// Inline, as on the thread, a panic fails the write instead of unwinding into
    /// the run's task (it used to end the run).
    #[tokio::test]
    async fn a_journal_written_inline_that_panics_fails_its_write() {
        let journal: Arc<dyn RunJournal> = Arc::new(PanicsInline::default());
        let writer = JournalWriter::default();
        let id = RunId::new("r");
        let (events, r) = writer.write(&journal, &id, vec![started(1)]).await;
        assert_eq!(events.len(), 1);
        assert_eq!(r.unwrap_err().to_string(), PANICKED);
        let (_, r) = writer.write(&journal, &id, vec![started(2)]).await;
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn a_panicking_journal_fails_its_writes_and_the_thread_goes_on() {
        let journal: Arc<dyn RunJournal> = Arc::new(Calls {
            panic_on: Some("run_started"),
            ..Calls::default()
        });
        let writer = JournalWriter::default();
        let id = RunId::new("r");
        let (events, r) = writer.write(&journal, &id, vec![started(1)]).await;
        assert_eq!(events.len(), 1);
        assert!(r.unwrap_err().to_string().contains("panicked"));
        let cost = RunEvent::Cost {
            spent: genesis_core::Usd::ZERO,
        };
        let (_, r) = writer.write(&journal, &id, vec![cost]).await;
        assert!(r.is_ok(), "the thread still serves writes after a panic");
    }
}
