//! Group commit: one thread owns every write transaction. Writers hand it operations; it runs
//! as many as are waiting (up to `MAX_BATCH`) in one transaction and commits them with one
//! fsync, then hands each its result. Under concurrent pushes this turns N fsyncs into one.
//!
//! Isolation: an operation that returns an error may already have written rows. If any
//! operation of a batch fails, the whole transaction is dropped (aborted), the failures get
//! their errors, and the rest run again in a fresh transaction, so a failed operation never
//! leaves a trace and each success is exactly what it would have been alone, in queue order.
//! Operations are therefore `FnMut` and must depend only on the transaction and what they
//! captured.
//!
//! Waiting: a `Meta` write method only builds its operation (a `GroupOp`, redb's
//! `PendingWrite`, inside the `WriteOp` it returns). Blocking code (the CLI, tests) queues it
//! and blocks with `wait`; the server queues it and awaits the commit with `commit`, so a
//! request waiting for its group commit holds no thread. Before this, each one
//! parked a blocking-pool thread, and concurrent pushes grew the pool by one thread per waiting
//! request, each keeping its stack and malloc cache (docs/benchmarks.md, tenth run).
//!
//! Figures: after each commit the thread tells the `CommitObserver` it was given at open time
//! how many operations the commit carried and how long it took. This module keeps no figures
//! itself; the server turns them into metrics.

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::{Duration, Instant};

use redb::{Database, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::{AuditHook, MetaError, PendingWrite, WriteOp};

/// Operations per transaction at most.
const MAX_BATCH: usize = 128;

/// Told of every group commit, on the writer thread right after it: how many operations the
/// transaction carried and how long its commit took (failed commits included). It runs
/// between commits, so it must be quick. Any `Fn(usize, Duration)` is one; `|_, _| {}`
/// observes nothing.
pub trait CommitObserver: Send {
    fn committed(&self, ops: usize, took: Duration);
}

impl<F: Fn(usize, Duration) + Send> CommitObserver for F {
    fn committed(&self, ops: usize, took: Duration) {
        self(ops, took);
    }
}

/// One queued write, type-erased.
pub(super) trait Op: Send {
    /// Run against `txn`, keep the result, and say whether it succeeded.
    fn run(&mut self, txn: &WriteTransaction) -> bool;
    /// Hand over the kept result, or `failed` if the commit did not happen.
    fn deliver(self: Box<Self>, failed: Option<String>);
}

/// Where a queued write's result goes: a blocked thread, or an awaiting task.
enum Reply<T> {
    Blocking(SyncSender<Result<T, MetaError>>),
    Async(oneshot::Sender<Result<T, MetaError>>),
}

impl<T> Reply<T> {
    fn send(self, result: Result<T, MetaError>) {
        // The waiter may be gone (a request dropped); the write stands either way.
        match self {
            Reply::Blocking(tx) => drop(tx.send(result)),
            Reply::Async(tx) => drop(tx.send(result)),
        }
    }
}

/// redb's pending write: the transaction's operation, and the queue it goes to once it is
/// waited for or committed (the same allocation then travels through the queue as an `Op`).
struct GroupOp<T, F> {
    f: F,
    /// The event to record with the result, in the same transaction (`WriteOp::audited`).
    audit: Option<AuditHook<T>>,
    result: Option<Result<T, MetaError>>,
    reply: Option<Reply<T>>,
    queue: Option<mpsc::Sender<Box<dyn Op>>>,
}

impl<T, F> Op for GroupOp<T, F>
where
    T: Send,
    F: FnMut(&WriteTransaction) -> Result<T, MetaError> + Send,
{
    fn run(&mut self, txn: &WriteTransaction) -> bool {
        let mut result = (self.f)(txn);
        if let (Ok(value), Some(hook)) = (&result, &mut self.audit)
            && let Some(audited) = hook(value)
            && let Err(e) = super::audit::append(txn, &audited)
        {
            result = Err(e);
        }
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn deliver(self: Box<Self>, failed: Option<String>) {
        let result = match (failed, self.result) {
            (Some(e), Some(Ok(_)) | None) => Err(MetaError::Commit(e)),
            (_, Some(result)) => result,
            (None, None) => Err(MetaError::Commit("operation never ran".into())),
        };
        if let Some(reply) = self.reply {
            reply.send(result);
        }
    }
}

#[async_trait::async_trait]
impl<T, F> PendingWrite<T> for GroupOp<T, F>
where
    T: Send + 'static,
    F: FnMut(&WriteTransaction) -> Result<T, MetaError> + Send + 'static,
{
    /// Queue the write and block until it has committed (or failed). It panics on an async
    /// runtime's thread.
    fn wait(mut self: Box<Self>) -> Result<T, MetaError> {
        let (reply, result) = sync_channel(1);
        self.reply = Some(Reply::Blocking(reply));
        let queue = self.queue.take().ok_or_else(stopped)?;
        queue.blocking_send(self).map_err(|_| stopped())?;
        result.recv().map_err(|_| stopped())?
    }

    /// Queue the write and wait for its commit without holding a thread. When the queue is
    /// full this waits for room first; dropped before then, it never queues the write.
    async fn commit(mut self: Box<Self>) -> Result<T, MetaError> {
        let (reply, result) = oneshot::channel();
        self.reply = Some(Reply::Async(reply));
        let queue = self.queue.take().ok_or_else(stopped)?;
        queue.reserve().await.map_err(|_| stopped())?.send(self);
        result.await.map_err(|_| stopped())?
    }

    fn audit(&mut self, hook: AuditHook<T>) {
        self.audit = Some(hook);
    }
}

fn stopped() -> MetaError {
    MetaError::Commit("the metadata writer has stopped".into())
}

/// The sending side, held by `Meta`.
pub(super) struct Writer {
    queue: Option<mpsc::Sender<Box<dyn Op>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(db: Arc<Database>, observer: Box<dyn CommitObserver>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Box<dyn Op>>(4 * MAX_BATCH);
        let thread = std::thread::Builder::new()
            .name("berth-meta-writer".into())
            .spawn(move || run_writer(&db, &mut rx, &*observer))
            .expect("spawn the metadata writer thread");
        Writer {
            queue: Some(tx),
            thread: Some(thread),
        }
    }

    /// The operation `f`, to be queued by `WriteOp::wait` or `WriteOp::commit`.
    pub(super) fn op<T, F>(&self, f: F) -> WriteOp<T>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, MetaError> + Send + 'static,
    {
        WriteOp::new(GroupOp {
            f,
            audit: None,
            result: None,
            reply: None,
            queue: self.queue.clone(),
        })
    }
}

impl Drop for Writer {
    /// Stop accepting work, let the thread finish what is queued, and wait for it, so that the
    /// database is closed when `Meta` is dropped.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_writer(db: &Database, queue: &mut mpsc::Receiver<Box<dyn Op>>, observer: &dyn CommitObserver) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        commit_batch(db, batch, observer);
    }
}

fn commit_batch(db: &Database, mut batch: Vec<Box<dyn Op>>, observer: &dyn CommitObserver) {
    while !batch.is_empty() {
        let txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => return deliver_all(batch, Some(&e.to_string())),
        };
        let (mut ok, mut failed) = (Vec::with_capacity(batch.len()), Vec::new());
        for mut op in batch {
            if op.run(&txn) { ok.push(op) } else { failed.push(op) }
        }
        if failed.is_empty() {
            let started = Instant::now();
            let committed = txn.commit().err().map(|e| e.to_string());
            observer.committed(ok.len(), started.elapsed());
            return deliver_all(ok, committed.as_deref());
        }
        drop(txn); // abort: the failures' writes must not land
        deliver_all(failed, None);
        batch = ok;
    }
}

fn deliver_all(ops: Vec<Box<dyn Op>>, failed: Option<&str>) {
    for op in ops {
        op.deliver(failed.map(str::to_owned));
    }
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, TableDefinition};

    use super::*;

    const T: TableDefinition<&str, u64> = TableDefinition::new("t");

    fn op(key: &'static str, fail: bool) -> (Box<dyn Op>, std::sync::mpsc::Receiver<Result<(), MetaError>>) {
        let (reply, rx) = sync_channel(1);
        let f = move |txn: &WriteTransaction| {
            txn.open_table(T)?.insert(key, 1)?;
            if fail { Err(MetaError::ManifestUnknown) } else { Ok(()) }
        };
        (
            Box::new(GroupOp {
                f,
                audit: None,
                result: None,
                reply: Some(Reply::Blocking(reply)),
                queue: None,
            }),
            rx,
        )
    }

    #[test]
    fn a_failed_operation_leaves_no_trace_and_its_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("w.redb")).unwrap();
        let (a, ra) = op("a", false);
        let (b, rb) = op("b", true);
        let (c, rc) = op("c", false);
        let seen = std::sync::Mutex::new(Vec::new());
        let observer = |ops, _| seen.lock().unwrap().push(ops);
        commit_batch(&db, vec![a, b, c], &observer);
        assert!(ra.recv().unwrap().is_ok());
        assert!(matches!(rb.recv().unwrap(), Err(MetaError::ManifestUnknown)));
        assert!(rc.recv().unwrap().is_ok());
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        assert!(t.get("a").unwrap().is_some());
        assert!(
            t.get("b").unwrap().is_none(),
            "the failed operation's write was rolled back"
        );
        assert!(t.get("c").unwrap().is_some());
        assert_eq!(
            *seen.lock().unwrap(),
            [2],
            "one commit, of the two operations that succeeded"
        );
    }
}
