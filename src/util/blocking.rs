//! Long stretches of CPU work inside async code.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `f`, CPU work that takes a second or more on a large directory (deciding the scope,
/// planning), without holding the async worker it is called on. `run` and `sync` have one
/// worker (see `main.rs`): without this, the control socket, the signal handlers, the
/// metrics endpoint and the other jobs' exports would all wait for it. On a multi-thread
/// runtime the worker's other tasks move to a new thread meanwhile
/// ([`tokio::task::block_in_place`]); elsewhere (a current-thread runtime, as in tests, or no
/// runtime) `f` simply runs.
pub(crate) fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// For tests of code that must leave the async worker free.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// A multi-thread runtime with one worker, as `run` and `sync` build theirs.
    pub(crate) fn one_worker_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Runs `task` on a one-worker runtime, as `run` and `sync` build theirs, while
    /// something that `release` ends holds it up (a stalled disk, a full queue); asserts
    /// that the task was still waiting after 300 ms and that another task on the runtime
    /// kept running meanwhile (a task that held the worker would starve it). `release` runs
    /// before the assertions, so that a failure cannot leave the task blocked (the
    /// runtime's drop would wait for it). Returns what the task returned.
    pub(crate) fn assert_worker_free_while<T: Send + 'static>(
        what: &str,
        task: impl std::future::Future<Output = T> + Send + 'static,
        release: impl FnOnce(),
    ) -> T {
        let rt = one_worker_runtime();
        rt.block_on(async {
            let (other, ticks) = ticker();
            let task = tokio::spawn(task);
            // `block_on`'s own thread is not the worker: it sleeps while the two tasks share
            // the one worker, the task held up all along.
            std::thread::sleep(Duration::from_millis(300));
            let (waiting, ticked) = (!task.is_finished(), ticks.load(Ordering::SeqCst));
            release();
            let out = task.await.unwrap();
            other.abort();
            assert!(waiting, "{what}: did not wait");
            assert!(
                ticked >= 5,
                "{what}: the other task was starved: {ticked} ticks"
            );
            out
        })
    }

    /// A task on the current runtime counting 5 ms ticks: a starved worker counts none.
    fn ticker() -> (tokio::task::JoinHandle<()>, Arc<AtomicUsize>) {
        let ticks = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&ticks);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        (task, ticks)
    }
}

#[cfg(test)]
mod tests {
    use super::off_worker;
    use std::time::Duration;

    /// While `f` runs on a one-worker runtime, another task on that runtime still runs.
    #[test]
    fn another_task_runs_while_the_work_holds_the_only_worker_thread() {
        let rt = super::test_support::one_worker_runtime();
        rt.block_on(async {
            let (tx, rx) = std::sync::mpsc::channel();
            // The other task answers while the work waits for its answer: with the worker
            // held, it would never run and the work would time out.
            let other = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let _ = tx.send(());
            });
            let worker = tokio::spawn(async move {
                off_worker(|| rx.recv_timeout(Duration::from_secs(5)).is_ok())
            });
            assert!(worker.await.unwrap(), "the other task never ran");
            other.await.unwrap();
        });
    }

    /// On a current-thread runtime (where `block_in_place` would panic) it just runs.
    #[tokio::test]
    async fn on_a_current_thread_runtime_the_work_just_runs() {
        assert_eq!(off_worker(|| 41 + 1), 42);
    }
}
