//! The pending write, backend-neutral: a write operation returns a [`WriteOp`], and nothing
//! happens until it is awaited with [`WriteOp::commit`] (the server: no thread is held while
//! the commit is pending) or waited for with [`WriteOp::wait`] (blocking code: the CLI, tests,
//! benchmarks). Behind it is a [`PendingWrite`] of the backend's own; redb's queues a closure
//! to its group-commit writer thread (`writer`).

use std::future::Future;

use super::MetaError;

/// A write, built and not yet started: nothing happens until it is committed or waited for.
#[must_use = "a write does nothing until it is waited for or committed"]
pub struct WriteOp<T>(Box<dyn PendingWrite<T>>);

impl<T: Send + 'static> WriteOp<T> {
    /// Wrap a backend's pending write.
    pub fn new(write: impl PendingWrite<T> + 'static) -> Self {
        WriteOp(Box::new(write))
    }

    /// Start the write and block until it has committed (or failed). For blocking code only:
    /// a backend may panic when this is called on an async runtime's thread.
    pub fn wait(self) -> Result<T, MetaError> {
        self.0.wait()
    }

    /// Start the write and await its commit without holding a thread. Dropped before the write
    /// has started (a request cancelled while the backend is busy), it never starts; once
    /// started, it commits whether or not anyone still awaits it.
    pub fn commit(self) -> impl Future<Output = Result<T, MetaError>> + Send {
        self.0.commit()
    }
}

/// A backend's write in waiting; see [`WriteOp`], whose two ways of running it this provides.
#[async_trait::async_trait]
pub trait PendingWrite<T: Send + 'static>: Send {
    fn wait(self: Box<Self>) -> Result<T, MetaError>;
    async fn commit(self: Box<Self>) -> Result<T, MetaError>;
}
