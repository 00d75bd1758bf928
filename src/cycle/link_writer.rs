//! The export's link writer: batches of confirmed links go to the store from a thread of
//! their own, in the order they filled.
//!
//! The export drives every request of a cycle from one task; storing each batch of 256 links
//! there (a sled batch) was 6% of an initial cycle's CPU, spent while no request was sent. The
//! writer changes where the write runs, not what is written or when it may be: a batch is
//! queued only once every link in it was confirmed by the target, the export waits for the
//! queue to drain at the end of every run and before a link is removed, and a batch the store
//! refused stops the export as before. A crash loses what was queued, as it lost the batch
//! being filled: the next cycle matches those objects again.

use crate::state::{Link, LinksWriter, StateError};
use crate::util::off_worker;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Batches queued at most: a store slower than the target holds the export up here (a full
/// queue blocks the next batch's sender) instead of links piling up in memory.
const QUEUED_BATCHES: usize = 16;

enum Msg {
    Batch(Vec<Link>),
    /// Answered once every batch queued before it is written.
    Drained(mpsc::SyncSender<()>),
}

/// A thread writing one job's links (see the module).
pub(crate) struct LinkWriter {
    /// `None` only while dropping.
    queue: Option<mpsc::SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
    /// The first refusal not yet reported.
    failed: Arc<Mutex<Option<StateError>>>,
    /// Batches queued and not yet written (refused ones count as written): none means
    /// [`LinkWriter::drain`] has nothing to wait for.
    unwritten: Arc<AtomicUsize>,
}

/// Why the writer could not be waited for: its thread ended (a panic inside the store).
#[derive(Debug)]
pub(crate) struct WriterGone;

impl LinkWriter {
    /// Starts the thread; `None` if it cannot be started (the caller writes in place).
    pub(crate) fn start(mut write: LinksWriter) -> Option<LinkWriter> {
        let (queue, batches) = mpsc::sync_channel::<Msg>(QUEUED_BATCHES);
        let failed = Arc::new(Mutex::new(None));
        let report = Arc::clone(&failed);
        let unwritten = Arc::new(AtomicUsize::new(0));
        let written = Arc::clone(&unwritten);
        let thread = std::thread::Builder::new()
            .name("provisiond-links".into())
            .spawn(move || {
                for msg in batches {
                    match msg {
                        Msg::Batch(links) => {
                            if let Err(e) = write(&links) {
                                lock(&report).get_or_insert(e);
                            }
                            // After the refusal is recorded: a drain that sees none
                            // unwritten sees the refusal too.
                            written.fetch_sub(1, Ordering::AcqRel);
                        }
                        Msg::Drained(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .ok()?;
        Some(LinkWriter {
            queue: Some(queue),
            thread: Some(thread),
            failed,
            unwritten,
        })
    }

    /// Queues `batch` (waiting while [`QUEUED_BATCHES`] are queued); gives it back if the
    /// thread is gone. The wait for room (a store slower than the target, a stalled disk)
    /// runs off the async worker ([`off_worker`]): the daemon's other tasks (its control
    /// socket, its signal handlers) go on meanwhile.
    pub(crate) fn send(&self, batch: Vec<Link>) -> Result<(), Vec<Link>> {
        let Some(queue) = &self.queue else {
            return Err(batch);
        };
        let given_back = |msg| match msg {
            Msg::Batch(batch) => batch,
            Msg::Drained(_) => Vec::new(),
        };
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        let sent = match queue.try_send(Msg::Batch(batch)) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(msg)) => {
                off_worker(|| queue.send(msg)).map_err(|e| given_back(e.0))
            }
            Err(mpsc::TrySendError::Disconnected(msg)) => Err(given_back(msg)),
        };
        if sent.is_err() {
            self.unwritten.fetch_sub(1, Ordering::AcqRel);
        }
        sent
    }

    /// Returns once every batch queued so far is written: at once when none is left
    /// unwritten (the export drains before each link it removes), else after a round trip
    /// through the queue, waited for off the async worker.
    pub(crate) fn drain(&self) -> Result<(), WriterGone> {
        let queue = self.queue.as_ref().ok_or(WriterGone)?;
        if self.unwritten.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        off_worker(|| {
            let (done, drained) = mpsc::sync_channel(1);
            queue.send(Msg::Drained(done)).map_err(|_| WriterGone)?;
            drained.recv().map_err(|_| WriterGone)
        })
    }

    /// The first write the store refused since the last call.
    pub(crate) fn failure(&self) -> Option<StateError> {
        lock(&self.failed).take()
    }
}

impl Drop for LinkWriter {
    /// Writes what is queued before the export's caller goes on (a cycle stopped mid-export
    /// still stores the links its confirmed writes made).
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning needs a panic, which the crate forbids; recover rather than propagate.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::sled_store::tests::link;

    /// Batches arrive in the order they were queued, all of them by the time `drain`
    /// returns; a refusal is reported once, and later batches are still written.
    #[test]
    fn batches_are_written_in_order_before_drain_returns_and_a_refusal_is_reported_once() {
        let written = Arc::new(Mutex::new(Vec::<String>::new()));
        let w = Arc::clone(&written);
        let writer = LinkWriter::start(Box::new(move |links: &[Link]| {
            if links.iter().any(|l| l.source_id == "bad") {
                return Err(StateError::Storage {
                    path: "/state".into(),
                    message: "disk full".into(),
                });
            }
            lock(&w).extend(links.iter().map(|l| l.source_id.clone()));
            Ok(())
        }))
        .unwrap();
        for i in 0..50 {
            writer
                .send(vec![link(&format!("a{i}")), link(&format!("b{i}"))])
                .unwrap();
        }
        writer.send(vec![link("bad")]).unwrap();
        writer.send(vec![link("after")]).unwrap();
        writer.drain().unwrap();
        let got = lock(&written).clone();
        let want: Vec<String> = (0..50)
            .flat_map(|i| [format!("a{i}"), format!("b{i}")])
            .chain(["after".to_string()])
            .collect();
        assert_eq!(got, want);
        assert!(matches!(writer.failure(), Some(StateError::Storage { .. })));
        assert!(writer.failure().is_none());
    }

    /// A store that does not keep up holds the export up once [`QUEUED_BATCHES`] wait: the
    /// queue never grows past them.
    #[test]
    fn a_slow_store_holds_the_sender_up_after_the_queued_batches() {
        let (open, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let writer = LinkWriter::start(Box::new(move |_: &[Link]| {
            let _ = lock(&gate).recv();
            Ok(())
        }))
        .unwrap();
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&sent);
        let writer = Arc::new(writer);
        let sender = Arc::clone(&writer);
        let thread = std::thread::spawn(move || {
            for i in 0..QUEUED_BATCHES + 4 {
                sender.send(vec![link(&format!("u{i}"))]).unwrap();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        // One batch in the store's hands, the rest queued; the sender waits for room.
        assert!(sent.load(std::sync::atomic::Ordering::SeqCst) <= QUEUED_BATCHES + 1);
        for _ in 0..QUEUED_BATCHES + 4 {
            open.send(()).unwrap();
        }
        thread.join().unwrap();
        writer.drain().unwrap();
    }

    /// The wait for room (a stalled store) leaves the async worker to the daemon's other
    /// tasks: on a one-worker runtime, as `run` and `sync` build, a timer task still fires
    /// while the export waits; a send that held the worker would starve it.
    #[test]
    fn waiting_for_room_leaves_the_only_async_worker_to_other_tasks() {
        let (open, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let writer = Arc::new(
            LinkWriter::start(Box::new(move |_: &[Link]| {
                let _ = lock(&gate).recv();
                Ok(())
            }))
            .unwrap(),
        );
        let batches = QUEUED_BATCHES + 3;
        let sender = Arc::clone(&writer);
        crate::util::blocking::test_support::assert_worker_free_while(
            "the export waiting for room",
            async move {
                for i in 0..batches {
                    sender.send(vec![link(&format!("u{i}"))]).unwrap();
                }
            },
            || {
                for _ in 0..batches {
                    open.send(()).unwrap();
                }
            },
        );
        writer.drain().unwrap();
        assert_eq!(writer.unwritten.load(Ordering::SeqCst), 0);
    }

    /// Dropping the writer writes what was queued.
    #[test]
    fn dropping_the_writer_writes_what_was_queued() {
        let written = Arc::new(Mutex::new(0usize));
        let w = Arc::clone(&written);
        let writer = LinkWriter::start(Box::new(move |links: &[Link]| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            *lock(&w) += links.len();
            Ok(())
        }))
        .unwrap();
        for i in 0..10 {
            writer.send(vec![link(&format!("u{i}"))]).unwrap();
        }
        drop(writer);
        assert_eq!(*lock(&written), 10);
    }
}
