//! The request hot path's short blocking calls (metadata point reads, a blob file's stat or
//! open) run on a fixed set of threads, `PER_CORE` per core, not on tokio's blocking pool.
//!
//! They take microseconds of CPU, so more in flight gain nothing. On the blocking pool each
//! call that found no thread idle started another thread, which then kept its stack and its
//! malloc cache: under 32 concurrent GETs the pool grew to 75-149 threads and set the server's
//! peak RSS (docs/benchmarks.md, ninth run). A semaphore over the pool held the calls to two per
//! core, but a thread that has just finished a call is not idle yet when the next is queued, so
//! the pool still grew by up to five threads per permit when the cores were contended. Fixed
//! threads make the count exact; calls past them wait in the queue.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

/// Threads per core.
const PER_CORE: usize = 2;

type Job = Box<dyn FnOnce() + Send>;

/// The queue of the hot path's blocking calls; its threads end when it is dropped.
#[derive(Debug)]
pub(crate) struct Quick {
    jobs: Sender<Job>,
}

impl Quick {
    pub(crate) fn start() -> Quick {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..PER_CORE * super::cores() {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("berth-quick-{i}"))
                .spawn(move || serve(&queue))
                .expect("spawn a hot-path thread");
        }
        Quick { jobs }
    }

    /// Run `f` on one of the threads and wait for it without blocking the runtime. If the
    /// caller is gone (a request dropped) by the time a thread takes the job, `f` is skipped,
    /// so a burst of abandoned requests does not hold up live ones.
    pub(crate) async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = move || {
            if !tx.is_closed() {
                drop(tx.send(f()));
            }
        };
        self.jobs
            .send(Box::new(job))
            .expect("the hot-path threads outlive the queue");
        rx.await.expect("a hot-path blocking call panicked")
    }
}

/// Run jobs until the queue is dropped. A job that panics drops its reply, which the caller
/// reports; the thread lives on.
fn serve(queue: &Mutex<Receiver<Job>>) {
    loop {
        // One thread waits in `recv`; the others wait for the lock.
        let job = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use super::*;

    /// A request that gives up while its call waits in the queue costs nothing once a thread
    /// is free: the call is skipped, and the threads go on with live ones.
    #[tokio::test]
    async fn a_call_whose_caller_is_gone_is_skipped() {
        let quick = Arc::new(Quick::start());
        let threads = PER_CORE * super::super::cores();
        let gate = Arc::new(Barrier::new(threads + 1));
        let busy: Vec<_> = (0..threads)
            .map(|_| {
                let (quick, gate) = (Arc::clone(&quick), Arc::clone(&gate));
                tokio::spawn(async move {
                    quick
                        .run(move || {
                            gate.wait();
                        })
                        .await;
                })
            })
            .collect();
        // Let the spawned calls reach the threads, which then wait at the gate: this call
        // waits in the queue until its caller gives up on it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let abandoned = quick.run(move || flag.store(true, Ordering::Relaxed));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), abandoned)
                .await
                .is_err()
        );
        tokio::task::spawn_blocking(move || {
            gate.wait();
        })
        .await
        .unwrap();
        for call in busy {
            call.await.unwrap();
        }
        assert_eq!(
            quick.run(|| 7).await,
            7,
            "the threads serve calls after the skipped one"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!ran.load(Ordering::Relaxed), "the abandoned call ran");
    }
}
