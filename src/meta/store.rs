//! The metadata seam: [`MetaStore`], every operation the registry, garbage collection, fsck and
//! usage reports need from the metadata, and [`WriteOp`], the pending write its write
//! operations return. `registry` holds an `Arc<dyn MetaStore>` and knows no backend; redb
//! ([`Meta`](super::Meta)) and PostgreSQL ([`PgMeta`](super::PgMeta), for several nodes over one
//! bucket) are its backends, both through `engine`.
//!
//! What the seam speaks:
//! - **Typed arguments.** Repositories, digests, tags and upload ids arrive as `oci::RepoName`,
//!   `oci::Digest`, `oci::Tag` and `uuid::Uuid`, validated before they get here; how a backend
//!   turns them into keys is its own business. Listing cursors (`last`) are plain strings: a
//!   cursor is a position in the lexical order, not a name, and a client may send any.
//! - **Rows, not tables.** Results are the row types of `schema` (`BlobRow`, `ManifestRow`,
//!   ...) and the snapshots of garbage collection (`gc::Snapshot`) and fsck (`fsck::Scan`),
//!   which keep their keys as strings. No backend type (a transaction, a database error)
//!   appears in a signature; failures are `MetaError`.
//! - **One operation, one transaction.** Each read sees one consistent snapshot; each write
//!   is atomic, re-checks inside its transaction what it depends on (so a concurrent writer
//!   can never slip between a check and a change), and either commits whole or leaves nothing.
//!   Every write is durable once its `WriteOp` reports success.
//!
//! Reads are `async`. The registry calls them from request tasks, and each backend decides
//! where its work runs: redb's reads are blocking calls of microseconds, so its point reads run
//! on the hot path's fixed threads (`hot_pool`) and its listings and scans on the blocking
//! pool, one thread hop each; a network database awaits its socket and holds no thread at all. A synchronous trait would have forced such a backend to
//! park a thread per query in flight, which is what `hot_pool` exists to avoid.
//!
//! Writes are built synchronously and return a [`WriteOp`]: nothing happens until it is
//! awaited with [`WriteOp::commit`] (the server: no thread is held while the commit is pending)
//! or waited for with [`WriteOp::wait`] (blocking code: the CLI, tests, benchmarks). Behind it
//! is a [`PendingWrite`] of the backend's own; redb's queues a closure to its group-commit
//! writer thread (`writer`).

use std::fmt::Debug;
use std::future::Future;

use std::sync::Arc;

use uuid::Uuid;

use super::MetaError;
use super::audit::{AuditPage, AuditQuery, Audited, OutboxRow};
use super::browse::{RepoSummary, TagOrder, TagPage};
use super::fsck::{Repair, Scan};
use super::gc::{Policy, Snapshot};
use super::quota::{Quota, QuotaUsage};
use super::schema::{BlobRow, ManifestRow, Millis, ReferrerRow, UploadRow};
use super::shared_locks::SharedLocks;
use super::usage::{Counts, Usage};
use crate::oci::{Algorithm, Digest, RepoName, Tag};

/// A metadata backend. Every method is safe to call concurrently.
#[async_trait::async_trait]
pub trait MetaStore: Send + Sync + Debug + 'static {
    /// What the nodes sharing this store share besides its rows (locks, touches), if several
    /// nodes can share it; `None` for a store one process owns (redb).
    fn shared_locks(&self) -> Option<Arc<SharedLocks>>;
    /// Coordination with the other nodes sharing this database (leases, job statuses); `None`
    /// when one process owns the metadata (redb).
    fn cluster(&self) -> Option<std::sync::Arc<dyn super::cluster::Cluster>>;

    // Point reads: the request hot path.

    /// The blob record of `digest` if it is linked into `repo` and live.
    async fn linked_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobRow>, MetaError>;

    /// The global record of `digest`, if live.
    async fn live_blob(&self, digest: &Digest) -> Result<Option<BlobRow>, MetaError>;

    /// The manifest `digest` of `repo`.
    async fn manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<ManifestRow>, MetaError>;

    /// The manifest `tag` points at, with its digest, from one snapshot.
    async fn manifest_by_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<(String, ManifestRow)>, MetaError>;

    /// The upload session `id`.
    async fn upload(&self, id: Uuid) -> Result<Option<UploadRow>, MetaError>;

    /// How many upload sessions are open.
    async fn upload_count(&self) -> Result<u64, MetaError>;

    // Listings and scans.

    /// Tags of `repo` after `last`, at most `n`, in lexical order; `None` when the repository
    /// does not exist.
    async fn tags(&self, repo: &RepoName, last: Option<&str>, n: usize) -> Result<Option<Page>, MetaError>;

    /// Of the manifests the tags of `repo` point at, the one most recently pushed, with its
    /// digest; `None` when the repository has no tags. Ties go to the manifest whose tag moved
    /// last.
    async fn newest_tagged_manifest(&self, repo: &RepoName) -> Result<Option<(String, ManifestRow)>, MetaError>;

    /// A page of at most `n` tags of `repo` whose names contain `filter`, each with its digest
    /// and last push, in `order`; `None` when the repository does not exist. Name order reads
    /// only the page; push order reads the repository's tags once, and no other rows.
    async fn tag_page(
        &self,
        repo: &RepoName,
        filter: &str,
        order: &TagOrder,
        n: usize,
    ) -> Result<Option<TagPage>, MetaError>;

    /// The tags of `repo` pointing at the manifest `digest`, in lexical order.
    async fn manifest_tags(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<String>, MetaError>;

    /// Counts, last push and sizes of `repo`; `None` when the repository does not exist.
    async fn repo_summary(&self, repo: &RepoName) -> Result<Option<RepoSummary>, MetaError>;

    /// Repository names after `last`, at most `n`, in lexical order.
    async fn repos(&self, last: Option<&str>, n: usize) -> Result<Page, MetaError>;

    /// Manifests of `repo` whose subject is `subject` (their digests and descriptors), ordered
    /// by digest.
    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<(String, ReferrerRow)>, MetaError>;

    /// Every upload session id.
    async fn upload_ids(&self) -> Result<Vec<Uuid>, MetaError>;

    /// Ids of the upload sessions created before `before_ms`.
    async fn stale_uploads(&self, before_ms: Millis) -> Result<Vec<Uuid>, MetaError>;

    /// Digests of every tombstone: blobs whose deletion was committed and may be unfinished
    /// (start-up finishes them).
    async fn tombstones(&self) -> Result<Vec<Digest>, MetaError>;

    /// What the mark phase of garbage collection reads, from one snapshot (no manifest bodies).
    async fn gc_snapshot(&self) -> Result<Snapshot, MetaError>;

    /// Every row, from one snapshot (fsck).
    async fn fsck_scan(&self) -> Result<Scan, MetaError>;

    /// Store-wide counts for the metrics.
    async fn counts(&self) -> Result<Counts, MetaError>;

    /// Storage usage per repository and in total.
    async fn usage(&self) -> Result<Usage, MetaError>;

    /// Each quota's usage: the bytes its group's manifests reference, each blob once.
    async fn quota_usage(&self, quotas: Vec<Quota>) -> Result<Vec<QuotaUsage>, MetaError>;

    // Writes, one transaction each.

    /// Open the upload session `id` in `repo`, hashing with `algorithm` (which `upload`
    /// reports back, after a restart too).
    fn create_upload(&self, id: Uuid, repo: &RepoName, algorithm: Algorithm, now: Millis) -> WriteOp<()>;

    /// Close the upload session `id` (absent is not an error).
    fn delete_upload(&self, id: Uuid) -> WriteOp<()>;

    /// Record that upload session `id` has acknowledged `appended` bytes (its row's
    /// `appended`), for the other nodes sharing this store; a closed session stays closed.
    fn set_upload_length(&self, id: Uuid, appended: u64) -> WriteOp<()>;

    /// Record a blob whose bytes were just made durable (or revive its record), link it into
    /// `repo`, and close the upload session it came from. Called only once the blob is stored.
    fn commit_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        upload: Option<Uuid>,
        now: Millis,
    ) -> WriteOp<()>;

    /// Link an existing live blob into `repo`. With `from`, the blob must be linked there;
    /// without it, it must merely exist. Answers whether it was linked.
    fn mount_blob(&self, repo: &RepoName, digest: &Digest, from: Option<&RepoName>, now: Millis) -> WriteOp<bool>;

    /// Remove the link of `digest` from `repo`: `MetaError::BlobNotLinked` if there is none,
    /// `MetaError::BlobInUse` while a manifest of the repository references the blob.
    fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> WriteOp<()>;

    /// Store a manifest: check that its blobs are linked here, live and of the declared sizes
    /// and its children present here (`BlobNotLinked`, `BlobSizeMismatch`, `ChildUnknown`
    /// otherwise; a `sparse` manifest skips these checks and records its absent blobs as
    /// `Remote`); insert it with its references, reference counts and referrer entry unless it
    /// is stored already (a re-push only restarts its grace period); point each of its tags at
    /// it (`MetaError::TagImmutable`, and nothing written, if that would move a `protected`
    /// tag, `MetaError::QuotaExceeded` if a new manifest takes a group of `quotas` past its
    /// limit); and record the repository.
    fn put_manifest(&self, manifest: NewManifest, now: Millis) -> WriteOp<()>;

    /// Delete the manifest `digest` and every tag pointing at it, releasing its references
    /// (`MetaError::ManifestUnknown` if it does not exist, `MetaError::TagImmutable` if one of
    /// those tags, or a tag of an index listing it at any depth, is `protected`).
    fn delete_manifest(&self, repo: &RepoName, digest: &Digest, protected: Protected) -> WriteOp<()>;

    /// Delete one tag, leaving its manifest in place (`MetaError::ManifestUnknown` if absent,
    /// `MetaError::TagImmutable` if it is `protected`).
    fn delete_tag(&self, repo: &RepoName, tag: &Tag, protected: Protected) -> WriteOp<()>;

    /// Retention: delete each of `tags` of `repo` (tag, the digest it pointed at, when it was
    /// set) only if it still points there and has not been set since, and is not `protected`
    /// (compare-and-set: a tag pushed again after retention chose it stays). Answers, for
    /// each, whether it was deleted.
    fn retention_delete_tags(
        &self,
        repo: &RepoName,
        tags: Vec<(Tag, String, Millis)>,
        protected: Protected,
    ) -> WriteOp<Vec<bool>>;

    /// Garbage collection: delete those `candidates` that are still not anchored
    /// (`gc::anchored`, evaluated against the rows inside the transaction). Answers how many
    /// were deleted.
    fn gc_delete_manifests(&self, candidates: &[(RepoName, Digest)], policy: Policy) -> WriteOp<u64>;

    /// Garbage collection: remove those links among `candidates` that no manifest of their
    /// repository references and that are older than the cutoff. The caller leaves out the
    /// blobs HEAD-checked within the grace period, and holds their digests' locks until this
    /// commits. Answers how many were removed.
    fn gc_remove_links(&self, candidates: &[(RepoName, Digest)], policy: Policy) -> WriteOp<u64>;

    /// Garbage collection: tombstone those blobs among `candidates` that are live,
    /// unreferenced, unlinked and older than the cutoff (the caller leaves out touched ones, as
    /// for links). Answers the tombstoned ones with their sizes; their bytes may be deleted
    /// once this commits, and readers treat them as absent from then on.
    fn gc_tombstone_blobs(&self, candidates: &[Digest], policy: Policy, now: Millis) -> WriteOp<Vec<(Digest, u64)>>;

    /// After their bytes are deleted: drop the blob records (still tombstoned) and the
    /// tombstones of `digests`.
    fn gc_finish_tombstones(&self, digests: &[Digest]) -> WriteOp<()>;

    /// Garbage collection: remove those repositories among `candidates` that hold nothing (no
    /// manifest, tag, blob link or upload session), re-checked inside the transaction, and
    /// created before the cutoff. Answers how many were removed.
    fn gc_remove_empty_repos(&self, candidates: &[RepoName], policy: Policy) -> WriteOp<u64>;

    /// fsck: apply compare-and-set repairs in one transaction; answers, for each, whether it
    /// applied (false: the row changed since the scan, so the repair no longer fits).
    fn fsck_repair(&self, repairs: Vec<Repair>) -> WriteOp<Vec<bool>>;

    // The audit log and the notification outbox (`audit`). An event that goes with a change
    // is recorded by that change's own transaction: `WriteOp::audited`.

    /// Record an event that changes nothing else (a login, an admin run, a reload), with its
    /// outbox rows.
    fn record(&self, audited: Audited) -> WriteOp<()>;

    /// Events matching `query`, newest first, one page.
    async fn audit(&self, query: AuditQuery) -> Result<AuditPage, MetaError>;

    /// Remove the events recorded before `before_ms`; answers how many.
    fn prune_audit(&self, before_ms: Millis) -> WriteOp<u64>;

    /// Every outbox row: (endpoint, event id, row), by endpoint then id.
    async fn outbox(&self) -> Result<Vec<(String, u64, OutboxRow)>, MetaError>;

    /// Replace (`Some`: a failed attempt) or remove (`None`: delivered, or given up) outbox
    /// rows of `endpoint`.
    fn outbox_update(&self, endpoint: &str, updates: Vec<(u64, Option<OutboxRow>)>) -> WriteOp<()>;
}

/// One page of a lexically ordered listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    /// True when entries follow the last item.
    pub more: bool,
}

/// Everything a manifest PUT writes, already parsed and validated by the caller.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub repo: RepoName,
    pub digest: Digest,
    pub row: ManifestRow,
    /// Required blobs with their declared sizes (config and distributable layers).
    pub blobs: Vec<(Digest, u64)>,
    /// Child manifests of an index, which must exist in the repository.
    pub children: Vec<Digest>,
    /// The descriptor to list under `row.subject`, when there is a subject.
    pub referrer: Option<ReferrerRow>,
    /// Tags to point at the manifest, all in the same transaction: the tag of a push by tag,
    /// or those of a push by digest's `?tag=` parameters. Empty for an untagged push.
    pub tags: Vec<Tag>,
    /// A manifest of a pull-through cache, stored before its content: its blobs need not be
    /// here (those absent get `BlobState::Remote` records, linked and counted as usual) and its
    /// children need not exist yet.
    pub sparse: bool,
    /// Tags that must not move to this manifest if they already point at another.
    pub protected: Protected,
    /// The quotas whose groups include `repo`: a new manifest must keep each group within
    /// its limit (`MetaError::QuotaExceeded`). Empty: no quota applies.
    pub quotas: Vec<Quota>,
}

/// Which tags may neither move to another manifest nor be deleted (immutable tags), as the
/// caller's policy says; the write checks it against the rows inside its transaction. The
/// default protects nothing.
#[derive(Clone, Default)]
pub struct Protected(Option<TagPredicate>);

type TagPredicate = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl Protected {
    pub fn new(covers: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Protected(Some(std::sync::Arc::new(covers)))
    }

    /// Whether `tag` is protected.
    pub fn covers(&self, tag: &str) -> bool {
        self.0.as_ref().is_some_and(|f| f(tag))
    }

    /// Whether any tag may be protected at all (else there is nothing to look up).
    pub fn guards_anything(&self) -> bool {
        self.0.is_some()
    }
}

impl Debug for Protected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Protected(..)"
        } else {
            "Protected(none)"
        })
    }
}

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

    /// Record the event `hook` makes of the write's result in the same transaction, when the
    /// write succeeds and `hook` answers one (a mount that linked nothing changed nothing).
    /// The hook may run more than once: a backend may retry a transaction.
    #[must_use = "a write does nothing until it is waited for or committed"]
    pub fn audited(mut self, hook: impl FnMut(&T) -> Option<Audited> + Send + 'static) -> Self {
        self.0.audit(Box::new(hook));
        self
    }
}

/// What `WriteOp::audited` attaches: the event to record for a result, if any.
pub type AuditHook<T> = Box<dyn FnMut(&T) -> Option<Audited> + Send>;

/// A backend's write in waiting; see [`WriteOp`], whose two ways of running it this provides.
#[async_trait::async_trait]
pub trait PendingWrite<T: Send + 'static>: Send {
    fn wait(self: Box<Self>) -> Result<T, MetaError>;
    async fn commit(self: Box<Self>) -> Result<T, MetaError>;
    /// Record the event `hook` answers in the write's own transaction (`WriteOp::audited`).
    fn audit(&mut self, hook: AuditHook<T>);
}
