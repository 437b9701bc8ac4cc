//! The registry's side of `berth import`: content adopted from another registry's store goes
//! through the doors a push uses, so it keeps the same ordering and invariants.
//!
//! - A blob is staged from its file by the blob store (`BlobStore::import_file`: a hard link
//!   or a copy, hashed as it is read), checked against its digest, and committed by
//!   `commit_staged`: durable in place before the metadata commit that records and links it,
//!   under the digest's lock. Bytes that do not hash to the digest are discarded.
//! - A manifest is stored by `put_manifest` with its exact bytes (so its digest is unchanged)
//!   and its tags in the same transaction, and invariant 4 is checked as for any push: the
//!   caller stores blobs before the manifests that need them, and children before indexes.

use std::path::Path;

use super::uploads::{discard_quietly, verify};
use super::{Error, Registry};
use crate::blobs::{Adopted, Progress};
use crate::oci::{Digest, Reference, RepoName, Tag};

/// Where a blob stands in this registry, for an import into one repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Stored intact and linked into the repository, `size` bytes.
    Linked(u64),
    /// Stored intact, not linked into the repository.
    Stored(u64),
    /// Not stored, or its record has no intact file.
    Absent,
}

impl Registry {
    /// Where `digest` stands for `repo`: a live record whose file has the record's size
    /// counts as stored.
    pub async fn blob_presence(&self, repo: &RepoName, digest: &Digest) -> Result<Presence, Error> {
        let Some(row) = self.meta.live_blob(digest).await? else {
            return Ok(Presence::Absent);
        };
        if self.blobs.stat(digest).await? != Some(row.size) {
            return Ok(Presence::Absent);
        }
        if self.meta.linked_blob(repo, digest).await?.is_some() {
            Ok(Presence::Linked(row.size))
        } else {
            Ok(Presence::Stored(row.size))
        }
    }

    /// Store the local file `path` as the blob `digest`, linked into `repo`. Returns its size
    /// and whether the store shared or copied the file. `DigestMismatch` (nothing stored) when
    /// its bytes do not hash to `digest`.
    pub async fn import_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        path: &Path,
        progress: Progress,
    ) -> Result<(u64, Adopted), Error> {
        self.refuse_cached(repo)?;
        let (staged, adopted) = self.blobs.import_file(path, digest.algorithm(), progress).await?;
        match verify(staged, digest).await? {
            Ok(staged) => {
                let size = staged.len();
                self.commit_staged(repo, staged, digest, None, None).await?;
                Ok((size, adopted))
            }
            Err((staged, mismatch)) => {
                discard_quietly(staged).await;
                Err(mismatch)
            }
        }
    }

    /// Link the stored blob `digest` into `repo`. Returns false if it is not stored (live).
    pub async fn link_stored_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, Error> {
        self.mount_blob(repo, digest, None, &crate::meta::Actor::system()).await
    }

    /// Whether the manifest `digest` is stored in `repo`, and which of `tags` do not point at
    /// it yet.
    pub async fn manifest_presence(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tags: &[Tag],
    ) -> Result<(bool, Vec<Tag>), Error> {
        self.refuse_cached(repo)?;
        let stored = self.meta.manifest(repo, digest).await?.is_some();
        let mut moved = Vec::new();
        for tag in tags {
            let current = self.meta.manifest_by_tag(repo, tag).await?;
            if current.is_none_or(|(d, _)| d != digest.as_str()) {
                moved.push(tag.clone());
            }
        }
        Ok((stored, moved))
    }

    /// Store the manifest `body` under `digest` in `repo`, pointing `tags` at it: a push by
    /// digest with `?tag=` parameters.
    pub async fn import_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tags: Vec<Tag>,
        body: bytes::Bytes,
    ) -> Result<(), Error> {
        let reference = Reference::Digest(digest.clone());
        self.put_manifest(repo, &reference, tags, None, body, &crate::meta::Actor::system())
            .await
            .map(drop)
    }
}
