//! The use cases of garbage collection and fsck: the only way `gc` and `fsck` reach the
//! metadata and the blob store. Each keeps the write ordering of docs/design.md: a blob is
//! tombstoned in a commit before it is deleted from the store, under the digest's lock, and
//! the rows go only after the delete.

use std::future::Future;

use super::{Error, Registry};
use crate::blobs::{Entry, Progress};
use crate::meta::fsck::{Repair, Scan};
use crate::meta::gc::{Policy, Snapshot};
use crate::meta::{Action, Actor};
use crate::meta::{Millis, now_ms};
use crate::oci::{Digest, RepoName, Tag};

impl Registry {
    /// One metadata snapshot for the mark phase (no manifest bodies).
    pub(crate) async fn gc_snapshot(&self) -> Result<Snapshot, Error> {
        Ok(self.meta.gc_snapshot().await?)
    }

    /// Upload sessions created before `before_ms`.
    pub(crate) async fn stale_upload_count(&self, before_ms: Millis) -> Result<u64, Error> {
        Ok(self.meta.stale_uploads(before_ms).await?.len() as u64)
    }

    /// Delete the manifests of `batch` that are still unanchored inside the transaction.
    /// Returns how many went.
    pub(crate) async fn gc_delete_manifests(&self, batch: Vec<(String, String)>, policy: Policy) -> Result<u64, Error> {
        let batch = typed_pairs(&batch);
        self.meta_write(|m| m.gc_delete_manifests(&batch, policy)).await
    }

    /// Remove the links of `batch` that are still unused, old and untouched, under the
    /// digests' locks. A HEAD records its touch under the same lock, so the touches read here
    /// stay true until the commit: a HEAD is either seen or answered after the link is gone.
    pub(crate) async fn gc_remove_links(&self, batch: Vec<(String, String)>, policy: Policy) -> Result<u64, Error> {
        let _guards = self.locks.lock_many(batch.iter().map(|(_, d)| d.as_str())).await;
        let digests: Vec<String> = batch.iter().map(|(_, d)| d.clone()).collect();
        let touched = self.touched_since(policy.cutoff_ms, Some(&digests)).await?;
        let batch: Vec<_> = batch.into_iter().filter(|(_, d)| !touched.contains(d)).collect();
        let batch = typed_pairs(&batch);
        self.meta_write(|m| m.gc_remove_links(&batch, policy)).await
    }

    /// Remove the repositories of `batch` that still hold nothing (re-checked in the
    /// transaction).
    pub(crate) async fn gc_remove_empty_repos(&self, batch: Vec<String>, policy: Policy) -> Result<u64, Error> {
        let batch: Vec<RepoName> = batch.iter().filter_map(|r| RepoName::parse(r).ok()).collect();
        self.meta_write(|m| m.gc_remove_empty_repos(&batch, policy)).await
    }

    /// Delete the blobs of `batch` that are still unreferenced, unlinked, old and untouched:
    /// under their locks, commit tombstones, run `after_tombstone` (a test hook), delete them
    /// from the store, drop the rows. Returns (count, bytes).
    pub(crate) async fn gc_delete_blobs<F: Future<Output = ()>>(
        &self,
        batch: Vec<String>,
        policy: Policy,
        after_tombstone: impl FnOnce() -> F,
    ) -> Result<(u64, u64), Error> {
        let _guards = self.locks.lock_many(batch.iter().map(String::as_str)).await;
        let touched = self.touched_since(policy.cutoff_ms, Some(&batch)).await?;
        let batch: Vec<Digest> = batch
            .iter()
            .filter(|d| !touched.contains(*d))
            .filter_map(|d| typed(d))
            .collect();
        let doomed = self
            .meta_write(|m| m.gc_tombstone_blobs(&batch, policy, now_ms()))
            .await?;
        if doomed.is_empty() {
            return Ok((0, 0));
        }
        crate::crashpoint::hit("gc.after_tombstone");
        after_tombstone().await;
        let bytes = doomed.iter().map(|(_, s)| s).sum::<u64>();
        let digests: Vec<Digest> = doomed.into_iter().map(|(d, _)| d).collect();
        let count = digests.len() as u64;
        self.delete_tombstoned(digests).await?;
        Ok((count, bytes))
    }

    /// Every table, from one read transaction (fsck).
    pub(crate) async fn fsck_scan(&self) -> Result<Scan, Error> {
        Ok(self.meta.fsck_scan().await?)
    }

    /// The policies in force (retention reads its rules here).
    pub(crate) fn policies(&self) -> std::sync::Arc<super::Policies> {
        self.policies.get()
    }

    /// Retention: delete `doomed` tags of `repo` that are unchanged since they were chosen and
    /// not immutable; whether each went. One transaction per tag, each recording its own
    /// audit event (a tag delete by Berth, with the reason), notified like any other delete.
    pub(crate) async fn retention_delete_tags(
        &self,
        repo: &RepoName,
        doomed: &[super::policy::Doomed],
    ) -> Result<Vec<bool>, Error> {
        let protected = self.policies.get().protected(repo);
        let mut deleted = Vec::with_capacity(doomed.len());
        for d in doomed {
            let tag = (Tag::parse(&d.tag)?, d.digest.clone(), d.updated_ms);
            let mut event = Self::event(Action::TagDelete, &Actor::system(), repo);
            event.reference = Some(d.tag.clone());
            event.digest = Some(d.digest.clone());
            event.result = format!("ok: retention, {}", d.reason);
            let audited = self.audited(event);
            let hook = move |done: &Vec<bool>| done.first().copied().unwrap_or(false).then(|| audited.clone());
            let protected = protected.clone();
            let done = self
                .meta_write(|m| m.retention_delete_tags(repo, vec![tag], protected).audited(hook))
                .await?;
            deleted.push(done.first().copied().unwrap_or(false));
        }
        Ok(deleted)
    }

    /// Whether manifest `digest` is stored in `repo` (names from a snapshot).
    pub(crate) async fn manifest_stored(&self, repo: &str, digest: &str) -> Result<bool, Error> {
        let (repo, digest) = (RepoName::parse(repo)?, Digest::parse(digest)?);
        Ok(self.meta.manifest(&repo, &digest).await?.is_some())
    }

    /// Everything in the blob store and its staging area (fsck).
    pub(crate) async fn storage_scan(&self) -> Result<(Vec<Entry>, Vec<String>), Error> {
        Ok((self.blobs.enumerate().await?, self.staging_names().await?))
    }

    /// Hash a stored blob (fsck); `None` if it is absent.
    pub(crate) async fn hash_stored_blob(&self, digest: &Digest, progress: Progress) -> Result<Option<Digest>, Error> {
        Ok(self.blobs.hash(digest, progress).await?)
    }

    /// Mark a blob whose stored bytes are bad or gone as missing (readers then answer
    /// `BLOB_UNKNOWN`), under its lock. Returns whether the record changed.
    pub(crate) async fn mark_blob_missing(&self, digest: &str) -> Result<bool, Error> {
        let _guard = self.locks.lock(digest).await;
        let repair = Repair::MarkBlobMissing {
            digest: digest.to_owned(),
            now: now_ms(),
        };
        let marked = self.meta_write(|m| m.fsck_repair(vec![repair])).await?;
        Ok(marked.first() == Some(&true))
    }

    /// Apply compare-and-set metadata repairs; each answer says whether it applied.
    pub(crate) async fn fsck_repair(&self, batch: Vec<Repair>) -> Result<Vec<bool>, Error> {
        self.meta_write(|m| m.fsck_repair(batch)).await
    }

    /// Move an object out of the blob area, keeping it. Returns where it went.
    pub(crate) async fn quarantine(&self, key: &str) -> Result<String, Error> {
        Ok(self.blobs.quarantine(key).await?)
    }

    /// Remove a staging entry no session owns.
    pub(crate) async fn remove_staging_entry(&self, name: &str) -> Result<(), Error> {
        Ok(self.blobs.remove_staging_entry(name).await?)
    }
}

/// A digest of the mark snapshot, typed for the metadata store. A key that does not parse (a
/// damaged row, which fsck reports) is left alone.
fn typed(digest: &str) -> Option<Digest> {
    Digest::parse(digest).ok()
}

/// (repository, digest) keys of the mark snapshot, typed; those that do not parse are left
/// alone.
fn typed_pairs(keys: &[(String, String)]) -> Vec<(RepoName, Digest)> {
    let pair = |(repo, digest): &(String, String)| Some((RepoName::parse(repo).ok()?, typed(digest)?));
    keys.iter().filter_map(pair).collect()
}
