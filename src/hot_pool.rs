//! `HotPool`: a fixed pool of threads, `PER_CORE` per core, for the request hot path's short
//! blocking calls (metadata point reads, a blob file's stat or open), which therefore do not
//! run on tokio's blocking pool. One pool serves the process (`HotPool::global`): the redb
//! metadata backend's point reads and the filesystem backend's file calls share its threads. A runtime utility
//! below every layer: it knows nothing of what it runs.
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

/// The queue of the hot path's blocking calls and its fixed threads, which end when it is
/// dropped.
#[derive(Debug)]
pub struct HotPool {
    jobs: Sender<Job>,
}

impl HotPool {
    /// The process's pool, started on first use.
    pub fn global() -> &'static HotPool {
        static GLOBAL: std::sync::OnceLock<HotPool> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(HotPool::start)
    }

    pub(crate) fn start() -> HotPool {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..PER_CORE * cores() {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("berth-hot-{i}"))
                .spawn(move || serve(&queue))
                .expect("spawn a hot-path thread");
        }
        HotPool { jobs }
    }

    /// Run `f` on one of the threads and wait for it without blocking the runtime. If the
    /// caller is gone (a request dropped) by the time a thread takes the job, `f` is skipped,
    /// so a burst of abandoned requests does not hold up live ones.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
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

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
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

    use futures_util::FutureExt;
    use tokio::task::JoinHandle;

    use super::*;

    /// Calls that hold every thread of `pool` at once, until `release`.
    struct Occupied {
        gate: Arc<Barrier>,
        calls: Vec<JoinHandle<()>>,
    }

    /// Queue one call per thread, each waiting at a gate, and return once every one of them is
    /// running. A thread runs one call at a time and the queue is first in, first out, so by
    /// then every call queued before these has finished, and any queued after waits.
    async fn occupy(pool: &Arc<HotPool>) -> Occupied {
        let threads = PER_CORE * super::cores();
        let started = Arc::new(Barrier::new(threads + 1));
        let gate = Arc::new(Barrier::new(threads + 1));
        let calls = (0..threads)
            .map(|_| {
                let (pool, started, gate) = (Arc::clone(pool), Arc::clone(&started), Arc::clone(&gate));
                tokio::spawn(async move {
                    pool.run(move || {
                        started.wait();
                        gate.wait();
                    })
                    .await;
                })
            })
            .collect();
        tokio::task::spawn_blocking(move || {
            started.wait();
        })
        .await
        .unwrap();
        Occupied { gate, calls }
    }

    impl Occupied {
        async fn release(self) {
            let gate = self.gate;
            tokio::task::spawn_blocking(move || {
                gate.wait();
            })
            .await
            .unwrap();
            for call in self.calls {
                call.await.unwrap();
            }
        }
    }

    /// A request that gives up while its call waits in the queue costs nothing once a thread
    /// is free: the call is skipped, and the threads go on with live ones.
    #[tokio::test]
    async fn a_call_whose_caller_is_gone_is_skipped() {
        let pool = Arc::new(HotPool::start());
        let busy = occupy(&pool).await;
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        // Polled once, the call is queued behind the busy ones; then its caller gives up.
        let abandoned = pool.run(move || flag.store(true, Ordering::Relaxed)).now_or_never();
        assert!(abandoned.is_none(), "the call ran although every thread was busy");
        busy.release().await;
        assert_eq!(pool.run(|| 7).await, 7, "the threads serve calls after the skipped one");
        // Every thread taking a call queued after the abandoned one means a thread has taken
        // the abandoned one and finished with it.
        occupy(&pool).await.release().await;
        assert!(!ran.load(Ordering::Relaxed), "the abandoned call ran");
    }
}
