//! The one implementation of [`MetaStore`], over any [`Engine`]: the typed arguments become the
//! string keys of `schema` here (a `RepoName`, `Digest` or `Tag` by its text, an upload id
//! hyphenated), and each call goes where its engine runs it:
//! - point reads of the request hot path (blob and manifest lookups, upload sessions):
//!   `Engine::point`;
//! - listings and scans: `Engine::scan`;
//! - writes, as a `WriteOp`: `Engine::write`.
//!
//! The transactions themselves are in `read`, `write`, `gc`, `fsck`, `usage`, `browse`, `quota`
//! and `audit`, written once over `rows`. redb's engine is `Meta` (`mod.rs`), PostgreSQL's
//! `postgres::PgMeta`.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use uuid::Uuid;

use super::audit::{self, AuditPage, AuditQuery, Audited, OutboxRow};
use super::browse::{self, RepoSummary, TagOrder, TagPage};
use super::fsck::{self, Repair, Scan};
use super::gc::{self, Policy, Snapshot};
use super::quota::{self, Quota, QuotaUsage};
use super::rows::{Rows, WriteRows};
use super::schema::{BlobRow, ManifestRow, Millis, ReferrerRow, UploadRow};
use super::shared_locks::SharedLocks;
use super::usage::{self, Counts, Usage};
use super::{MetaError, MetaStore, NewManifest, Page, Protected, WriteOp, read, write};
use crate::oci::{Algorithm, Digest, RepoName, Tag};

/// Where a backend runs its transactions, and over what rows.
pub trait Engine: Send + Sync + Debug + 'static {
    /// A read transaction: one consistent snapshot.
    type Read: Rows;
    /// A write transaction.
    type Write: WriteRows;

    /// `f` over one read transaction: a point read of the request hot path.
    fn point<T, F>(&self, f: F) -> impl Future<Output = Result<T, MetaError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&Self::Read) -> Result<T, MetaError> + Send + 'static;

    /// `f` over one read transaction: a listing or a scan.
    fn scan<T, F>(&self, f: F) -> impl Future<Output = Result<T, MetaError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&Self::Read) -> Result<T, MetaError> + Send + 'static;

    /// `f` as one write transaction, run when the `WriteOp` is waited for or committed. `f`
    /// may run more than once (see `rows`); an error from it discards everything it wrote.
    fn write<T, F>(&self, f: F) -> WriteOp<T>
    where
        T: Send + 'static,
        F: FnMut(&Self::Write) -> Result<T, MetaError> + Send + 'static;

    /// What several nodes over this engine share besides its rows; `None` (the default) for
    /// an engine one process owns.
    fn shared_locks(&self) -> Option<Arc<SharedLocks>> {
        None
    }

    /// Coordination with the other nodes sharing this database; `None` for a database one
    /// process owns.
    fn cluster(&self) -> Option<std::sync::Arc<dyn super::cluster::Cluster>> {
        None
    }
}

#[async_trait::async_trait]
impl<E: Engine> MetaStore for E {
    fn shared_locks(&self) -> Option<Arc<SharedLocks>> {
        Engine::shared_locks(self)
    }

    fn cluster(&self) -> Option<std::sync::Arc<dyn super::cluster::Cluster>> {
        Engine::cluster(self)
    }

    async fn linked_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobRow>, MetaError> {
        let (repo, digest) = (repo.clone(), digest.clone());
        self.point(move |txn| read::linked_blob(txn, repo.as_str(), digest.as_str()))
            .await
    }

    async fn live_blob(&self, digest: &Digest) -> Result<Option<BlobRow>, MetaError> {
        let digest = digest.clone();
        self.point(move |txn| read::live_blob(txn, digest.as_str())).await
    }

    async fn manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<ManifestRow>, MetaError> {
        let (repo, digest) = (repo.clone(), digest.clone());
        self.point(move |txn| read::manifest(txn, repo.as_str(), digest.as_str()))
            .await
    }

    async fn manifest_by_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<(String, ManifestRow)>, MetaError> {
        let (repo, tag) = (repo.clone(), tag.clone());
        self.point(move |txn| read::manifest_by_tag(txn, repo.as_str(), tag.as_str()))
            .await
    }

    async fn upload(&self, id: Uuid) -> Result<Option<UploadRow>, MetaError> {
        self.point(move |txn| read::upload(txn, &id.to_string())).await
    }

    async fn upload_count(&self) -> Result<u64, MetaError> {
        self.point(read::upload_count).await
    }

    async fn tags(&self, repo: &RepoName, last: Option<&str>, n: usize) -> Result<Option<Page>, MetaError> {
        let (repo, last) = (repo.clone(), last.map(str::to_owned));
        self.scan(move |txn| read::tags(txn, repo.as_str(), last.as_deref(), n))
            .await
    }

    async fn newest_tagged_manifest(&self, repo: &RepoName) -> Result<Option<(String, ManifestRow)>, MetaError> {
        let repo = repo.clone();
        self.scan(move |txn| read::newest_tagged_manifest(txn, repo.as_str()))
            .await
    }

    async fn tag_page(
        &self,
        repo: &RepoName,
        filter: &str,
        order: &TagOrder,
        n: usize,
    ) -> Result<Option<TagPage>, MetaError> {
        let (repo, filter, order) = (repo.clone(), filter.to_owned(), order.clone());
        self.scan(move |txn| browse::tag_page(txn, repo.as_str(), &filter, &order, n))
            .await
    }

    async fn manifest_tags(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<String>, MetaError> {
        let (repo, digest) = (repo.clone(), digest.clone());
        self.scan(move |txn| browse::manifest_tags(txn, repo.as_str(), digest.as_str()))
            .await
    }

    async fn repo_summary(&self, repo: &RepoName) -> Result<Option<RepoSummary>, MetaError> {
        let repo = repo.clone();
        self.scan(move |txn| browse::repo_summary(txn, repo.as_str())).await
    }

    async fn repos(&self, last: Option<&str>, n: usize) -> Result<Page, MetaError> {
        let last = last.map(str::to_owned);
        self.scan(move |txn| read::repos(txn, last.as_deref(), n)).await
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<(String, ReferrerRow)>, MetaError> {
        let (repo, subject) = (repo.clone(), subject.clone());
        self.scan(move |txn| read::referrers(txn, repo.as_str(), subject.as_str()))
            .await
    }

    async fn upload_ids(&self) -> Result<Vec<Uuid>, MetaError> {
        self.scan(read::upload_ids).await
    }

    async fn stale_uploads(&self, before_ms: Millis) -> Result<Vec<Uuid>, MetaError> {
        self.scan(move |txn| read::stale_uploads(txn, before_ms)).await
    }

    async fn tombstones(&self) -> Result<Vec<Digest>, MetaError> {
        self.scan(gc::tombstones).await
    }

    async fn gc_snapshot(&self) -> Result<Snapshot, MetaError> {
        self.scan(gc::snapshot).await
    }

    async fn fsck_scan(&self) -> Result<Scan, MetaError> {
        self.scan(fsck::scan).await
    }

    async fn counts(&self) -> Result<Counts, MetaError> {
        self.scan(usage::counts).await
    }

    async fn usage(&self) -> Result<Usage, MetaError> {
        self.scan(usage::usage).await
    }

    async fn quota_usage(&self, quotas: Vec<Quota>) -> Result<Vec<QuotaUsage>, MetaError> {
        self.scan(move |txn| quota::usage(txn, &quotas)).await
    }

    fn create_upload(&self, id: Uuid, repo: &RepoName, algorithm: Algorithm, now: Millis) -> WriteOp<()> {
        let (id, repo) = (id.to_string(), repo.clone());
        self.write(move |txn| write::create_upload(txn, &id, repo.as_str(), algorithm, now))
    }

    fn delete_upload(&self, id: Uuid) -> WriteOp<()> {
        let id = id.to_string();
        self.write(move |txn| write::delete_upload(txn, &id))
    }

    fn set_upload_length(&self, id: Uuid, appended: u64) -> WriteOp<()> {
        let id = id.to_string();
        self.write(move |txn| write::set_upload_length(txn, &id, appended))
    }

    fn commit_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        upload: Option<Uuid>,
        now: Millis,
    ) -> WriteOp<()> {
        let (repo, digest, upload) = (repo.clone(), digest.clone(), upload.map(|u| u.to_string()));
        self.write(move |txn| write::commit_blob(txn, repo.as_str(), digest.as_str(), size, upload.as_deref(), now))
    }

    fn mount_blob(&self, repo: &RepoName, digest: &Digest, from: Option<&RepoName>, now: Millis) -> WriteOp<bool> {
        let (repo, digest, from) = (repo.clone(), digest.clone(), from.cloned());
        self.write(move |txn| {
            let from = from.as_ref().map(RepoName::as_str);
            write::mount_blob(txn, repo.as_str(), digest.as_str(), from, now)
        })
    }

    fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> WriteOp<()> {
        let (repo, digest) = (repo.clone(), digest.clone());
        self.write(move |txn| write::unlink_blob(txn, repo.as_str(), digest.as_str()))
    }

    fn put_manifest(&self, manifest: NewManifest, now: Millis) -> WriteOp<()> {
        self.write(move |txn| write::put_manifest(txn, &manifest, now))
    }

    fn delete_manifest(&self, repo: &RepoName, digest: &Digest, protected: Protected) -> WriteOp<()> {
        let (repo, digest) = (repo.clone(), digest.clone());
        self.write(move |txn| write::delete_manifest(txn, repo.as_str(), digest.as_str(), &protected))
    }

    fn delete_tag(&self, repo: &RepoName, tag: &Tag, protected: Protected) -> WriteOp<()> {
        let (repo, tag) = (repo.clone(), tag.clone());
        self.write(move |txn| write::delete_tag(txn, repo.as_str(), tag.as_str(), &protected))
    }

    fn retention_delete_tags(
        &self,
        repo: &RepoName,
        tags: Vec<(Tag, String, Millis)>,
        protected: Protected,
    ) -> WriteOp<Vec<bool>> {
        let repo = repo.clone();
        self.write(move |txn| write::retention_delete_tags(txn, repo.as_str(), &tags, &protected))
    }

    fn gc_delete_manifests(&self, candidates: &[(RepoName, Digest)], policy: Policy) -> WriteOp<u64> {
        let candidates = candidates.to_vec();
        self.write(move |txn| gc::delete_manifests(txn, &candidates, policy))
    }

    fn gc_remove_links(&self, candidates: &[(RepoName, Digest)], policy: Policy) -> WriteOp<u64> {
        let candidates = candidates.to_vec();
        self.write(move |txn| gc::remove_links(txn, &candidates, policy))
    }

    fn gc_tombstone_blobs(&self, candidates: &[Digest], policy: Policy, now: Millis) -> WriteOp<Vec<(Digest, u64)>> {
        let candidates = candidates.to_vec();
        self.write(move |txn| gc::tombstone_blobs(txn, &candidates, policy, now))
    }

    fn gc_finish_tombstones(&self, digests: &[Digest]) -> WriteOp<()> {
        let digests = digests.to_vec();
        self.write(move |txn| gc::finish_tombstones(txn, &digests))
    }

    fn gc_remove_empty_repos(&self, candidates: &[RepoName], policy: Policy) -> WriteOp<u64> {
        let candidates = candidates.to_vec();
        self.write(move |txn| gc::remove_empty_repos(txn, &candidates, policy))
    }

    fn fsck_repair(&self, repairs: Vec<Repair>) -> WriteOp<Vec<bool>> {
        self.write(move |txn| fsck::repair(txn, &repairs))
    }

    fn record(&self, audited: Audited) -> WriteOp<()> {
        self.write(move |txn| audit::append(txn, &audited).map(drop))
    }

    async fn audit(&self, query: AuditQuery) -> Result<AuditPage, MetaError> {
        self.scan(move |txn| audit::query(txn, &query)).await
    }

    fn prune_audit(&self, before_ms: Millis) -> WriteOp<u64> {
        self.write(move |txn| audit::prune(txn, before_ms))
    }

    async fn outbox(&self) -> Result<Vec<(String, u64, OutboxRow)>, MetaError> {
        self.scan(audit::outbox).await
    }

    fn outbox_update(&self, endpoint: &str, updates: Vec<(u64, Option<OutboxRow>)>) -> WriteOp<()> {
        let endpoint = endpoint.to_owned();
        self.write(move |txn| audit::outbox_update(txn, &endpoint, &updates))
    }
}
