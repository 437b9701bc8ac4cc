//! The metadata store: repositories, tags, manifests, references, referrers, per-repository
//! blob links, global blob records, upload sessions, and the audit log with its notification
//! outbox (`audit`), written in the transaction of the change each event describes.
//!
//! The seam is [`MetaStore`] (`store`): the operations the registry, garbage collection and
//! fsck use, with typed arguments, and [`WriteOp`], the pending write its writes return. The
//! backend-neutral parts live beside it: the row types (`schema`), the reachability rule and
//! mark snapshot of garbage collection (`gc`), fsck's scan and repairs (`fsck`), the usage
//! figures (`usage`) and quotas (`quota`). When several nodes share the store (PostgreSQL),
//! `cluster` is what they share besides its rows: advisory locks on digests and upload
//! sessions, and blob touches (`MetaStore::cluster`).
//!
//! The transaction bodies are written once, over the row interface of `rows`, and `engine`
//! implements `MetaStore` once over any backend's `Engine` (typed arguments become string keys
//! there). Two backends, the only code that opens tables:
//! - [`Meta`]: one redb file, the default. Reads use a read transaction (an MVCC snapshot) and
//!   never wait for the writer; writes are short (rows only, no file I/O, no hashing), and run
//!   on the group-commit writer (`writer`), which reports commits to a `CommitObserver` given
//!   at open time.
//! - [`PgMeta`] (`postgres`): PostgreSQL, shared by several nodes; writes at `SERIALIZABLE`,
//!   rerun on serialization failures.
//!
//! Neither knows anything of HTTP or of blobs. Every operation is one transaction: a change
//! that spans several rows (a manifest PUT updates manifests, references, reference counts,
//! referrers and tags) is one write transaction.

pub mod audit;
pub mod browse;
pub mod cluster;
pub mod codec;
mod engine;
pub mod fsck;
pub mod gc;
mod pg_cluster;
pub mod postgres;
pub mod quota;
mod read;
pub mod rows;
pub mod schema;
pub mod shared_locks;
mod store;
pub mod usage;
mod write;
mod writer;

use std::path::Path;
use std::sync::Arc;

use std::future::Future;

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};

use engine::Engine;

use crate::hot_pool::HotPool;

pub use audit::{Action, Actor, AuditEvent, AuditPage, AuditQuery, Audited, OutboxRow};
pub use postgres::PgMeta;
pub use quota::{Quota, QuotaUsage};
pub use schema::{BlobRow, BlobState, ManifestRow, Millis, ReferrerRow, UploadRow};
pub use shared_locks::{Held, SharedLocks};
pub use store::{AuditHook, MetaStore, NewManifest, Page, PendingWrite, Protected, WriteOp};
pub use writer::CommitObserver;

/// Errors of the metadata store: storage failures, and the refusals its write transactions
/// make when a row they depend on is missing.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The backend failed (I/O, a transaction refused, damage it detected); the source is the
    /// backend's own error.
    #[error("metadata database: {0}")]
    Db(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the metadata database {0} is open in another process")]
    Locked(String),
    /// The database cannot be reached (a shared one: the connection failed, or it is shutting
    /// down); nothing was changed, and the caller may retry once it is back.
    #[error("metadata database unavailable: {0}")]
    Unavailable(String),
    #[error("metadata row is corrupt: {0}")]
    Corrupt(String),
    #[error("metadata commit failed: {0}")]
    Commit(String),
    #[error("blob {0} is not linked into this repository")]
    BlobNotLinked(String),
    #[error("blob {digest} is {actual} bytes but the manifest says {declared}")]
    BlobSizeMismatch { digest: String, actual: u64, declared: u64 },
    #[error("manifest {0} is not in this repository")]
    ChildUnknown(String),
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("blob {digest} is referenced by {manifests} manifest(s) of this repository; delete them first")]
    BlobInUse { digest: String, manifests: u64 },
    #[error("tag {0} is immutable")]
    TagImmutable(String),
    #[error("quota {quota} exceeded: {used} of {limit} bytes used, the manifest adds {adds}")]
    QuotaExceeded {
        quota: String,
        used: u64,
        limit: u64,
        adds: u64,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for MetaError {
            fn from(e: $t) -> Self {
                MetaError::Db(Box::new(redb::Error::from(e)))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The file name of the database under the storage root.
pub const DB_FILE: &str = "meta.redb";

/// The redb backend of [`MetaStore`]: point reads run on the hot path's threads, listings and
/// scans on the blocking pool, writes on the group-commit writer thread (`writer`).
pub struct Meta {
    db: Arc<Database>,
    writer: writer::Writer,
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta").finish_non_exhaustive()
    }
}

impl Meta {
    /// Open or create `<root>/meta.redb` with the default cache (`DEFAULT_CACHE`).
    pub fn open(root: &Path) -> Result<Self, MetaError> {
        Self::open_with_cache(root, DEFAULT_CACHE)
    }

    /// Open or create `<root>/meta.redb`, keeping at most `cache` bytes of its pages in memory
    /// (`storage.meta_cache`). Every commit is durable (`Durability::Immediate`) whatever
    /// `storage.fsync` says: redb's non-durable commits do not survive even a process crash,
    /// and a registry must never forget what it acknowledged.
    pub fn open_with_cache(root: &Path, cache: u64) -> Result<Self, MetaError> {
        Self::open_observed(root, cache, |_, _| {})
    }

    /// `open_with_cache`, telling `observer` of every group commit (see `CommitObserver`).
    pub fn open_observed(root: &Path, cache: u64, observer: impl CommitObserver + 'static) -> Result<Self, MetaError> {
        let path = root.join(DB_FILE);
        let db = Database::builder()
            .set_cache_size(usize::try_from(cache).unwrap_or(usize::MAX))
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => MetaError::Locked(path.display().to_string()),
                other => other.into(),
            })?;
        let db = Arc::new(db);
        let meta = Meta {
            writer: writer::Writer::start(Arc::clone(&db), Box::new(observer)),
            db,
        };
        meta.write(write::ensure_tables).wait()?;
        Ok(meta)
    }
}

impl Engine for Meta {
    type Read = ReadTransaction;
    type Write = WriteTransaction;

    /// `f` over one read transaction on the hot path's fixed threads (`hot_pool`): a point
    /// read of microseconds, which must not start a blocking-pool thread.
    fn point<T, F>(&self, f: F) -> impl Future<Output = Result<T, MetaError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, MetaError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        HotPool::global().run(move || f(&db.begin_read()?))
    }

    /// `f` over one read transaction on tokio's blocking pool: a listing or a scan.
    async fn scan<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, MetaError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db.begin_read()?))
            .await
            .expect("a metadata scan panicked")
    }

    /// `f` as a write transaction, batched with concurrent writes into one commit once queued
    /// (see `WriteOp`). An error from `f` discards everything `f` wrote.
    fn write<T, F>(&self, f: F) -> WriteOp<T>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, MetaError> + Send + 'static,
    {
        self.writer.op(f)
    }
}

/// Bytes of redb pages kept in memory unless configured (`storage.meta_cache`). redb's own
/// default is 1 GiB, and it keeps every page it reads or writes until that is full, so the
/// server's memory grew with the database: the GC benchmark (100 000 blobs populated, then
/// collected) peaked at 143 MiB with it and at 99 MiB with 16 MiB, populating as fast
/// (28.5-31.7 s against 33.6-41.2). 4 MiB took 67.7 s: the write buffer, half the cache,
/// spilled. The file's pages stay in the kernel's page cache either way; this caps only the
/// copies redb holds. The cost: the start-up benchmark's 1M records, written with a 16 or
/// 32 MiB cache, made a 408 MiB file where 64 MiB or more made 278 MiB (the write buffer
/// spills pages that the same transaction then copies again). Metadata is a few hundred
/// bytes per blob, so that buys memory with disk at a good price.
pub const DEFAULT_CACHE: u64 = 16 << 20;

/// redb's own integrity check of `<root>/meta.redb`, which needs the file to itself (so it runs
/// offline, before `Meta::open`). `Ok(None)` when there is no database yet.
pub fn check_integrity(root: &Path) -> Result<Option<bool>, MetaError> {
    let path = root.join(DB_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let mut db = Database::open(&path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => MetaError::Locked(path.display().to_string()),
        other => other.into(),
    })?;
    let ok = db.check_integrity()?;
    Ok(Some(ok))
}

/// The current time in milliseconds since the Unix epoch (plus the test clock's offset, which is
/// zero but in tests: `testhook`).
pub fn now_ms() -> Millis {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(crate::testhook::clock_offset_ms())
}
