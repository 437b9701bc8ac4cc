//! Blob reads, deletes, mounts and the commit of a verified staged upload.

use std::sync::Arc;

use super::{Error, Registry};
use crate::blobs::{BlobReader, ByteStream, Upload};
use crate::meta::{Action, Actor, now_ms};
use crate::oci::{Digest, RepoName};

/// A blob opened for a GET: its size, and a reader for the bytes (or a URL to send the client
/// to, when the backend redirects pulls).
pub enum BlobBody {
    Bytes {
        size: u64,
        reader: Box<dyn BlobReader>,
    },
    Redirect {
        size: u64,
        url: String,
    },
    /// A pull-through cache's first client of a cold blob: the bytes as they arrive from the
    /// upstream (the stream breaks off if they turn out not to match the digest).
    Stream {
        size: u64,
        stream: ByteStream,
    },
}

impl std::fmt::Debug for BlobBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobBody::Bytes { size, reader } => f
                .debug_struct("Bytes")
                .field("size", size)
                .field("reader", reader)
                .finish(),
            BlobBody::Redirect { size, url } => f
                .debug_struct("Redirect")
                .field("size", size)
                .field("url", url)
                .finish(),
            BlobBody::Stream { size, .. } => f.debug_struct("Stream").field("size", size).finish_non_exhaustive(),
        }
    }
}

impl BlobBody {
    pub fn size(&self) -> u64 {
        match self {
            BlobBody::Bytes { size, .. } | BlobBody::Redirect { size, .. } | BlobBody::Stream { size, .. } => *size,
        }
    }
}

/// Stream the bytes `start..=end` of an opened blob. A blob that turns out to be absent or of
/// the wrong size only now (a backend that could not tell at open) is unknown.
pub async fn stream(reader: Box<dyn BlobReader>, start: u64, end: u64) -> Result<ByteStream, Error> {
    reader.stream(start, end).await?.ok_or_else(|| {
        tracing::error!(start, end, "blob record has no intact object; refusing to serve it");
        Error::BlobUnknown
    })
}

impl Registry {
    /// The size of a blob readable from `repo` (HEAD). The file is checked too, so a HEAD
    /// never answers 200 for a blob whose file is gone.
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64, Error> {
        if let Some(cached) = self.cached_blob_size(repo, digest).await {
            return cached;
        }
        self.touch(digest).await?;
        let row = self.meta.linked_blob(repo, digest).await?.ok_or(Error::BlobUnknown)?;
        match self.blobs.stat(digest).await? {
            Some(size) if size == row.size => Ok(size),
            other => {
                tracing::error!(%repo, actual = ?other, expected = row.size, "blob record has no intact file");
                Err(Error::BlobUnknown)
            }
        }
    }

    /// The bytes of a blob readable from `repo` (GET). A missing or wrong-sized file is
    /// reported as unknown (and logged) rather than served short. In a pull-through cache, a
    /// cold blob is fetched; `stream` lets it be sent as it arrives (not for a `Range` GET).
    pub async fn read_blob(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
        stream: bool,
    ) -> Result<BlobBody, Error> {
        if let Some(cached) = self.cached_blob(repo, digest, stream).await {
            return cached;
        }
        let row = self.meta.linked_blob(repo, digest).await?.ok_or(Error::BlobUnknown)?;
        if let Some(url) = self.blobs.redirect(digest).await? {
            return Ok(BlobBody::Redirect { size: row.size, url });
        }
        let reader = self.blobs.open(digest, row.size).await?.ok_or(Error::BlobUnknown)?;
        Ok(BlobBody::Bytes { size: row.size, reader })
    }

    /// Unlink a blob from `repo`. The file stays until garbage collection finds it unused.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest, actor: &Actor) -> Result<(), Error> {
        self.refuse_cached(repo)?;
        let mut event = Self::event(Action::BlobDelete, actor, repo);
        event.reference = Some(digest.to_string());
        event.digest = Some(digest.to_string());
        let audited = self.audited(event);
        self.meta_write(|m| m.unlink_blob(repo, digest).audited(move |()| Some(audited.clone())))
            .await
            .map_err(|e| match e {
                Error::ManifestBlobUnknown(_) => Error::BlobUnknown,
                other => other,
            })
    }

    /// Cross-repository mount: link `digest` into `repo` if `from` has it (or, without `from`,
    /// if it exists at all). Returns whether it was mounted.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
        actor: &Actor,
    ) -> Result<bool, Error> {
        self.refuse_cached(repo)?;
        let mut event = Self::event(Action::Mount, actor, repo);
        event.reference = Some(digest.to_string());
        event.digest = Some(digest.to_string());
        let audited = self.audited(event);
        // A mount that linked nothing changed nothing: no event (the client uploads instead).
        let hook = move |linked: &bool| linked.then(|| audited.clone());
        self.meta_write(|m| m.mount_blob(repo, digest, from, now_ms()).audited(hook))
            .await
    }

    /// Make a verified upload the blob `digest` and link it into `repo`: the blob is durable
    /// in place before the metadata commit, both under the digest's lock.
    pub(super) async fn commit_staged(
        &self,
        repo: &RepoName,
        staged: Box<dyn Upload>,
        digest: &Digest,
        upload: Option<uuid::Uuid>,
    ) -> Result<(), Error> {
        let _guard = self.locks.lock(digest.as_str()).await;
        let size = staged.len();
        let existing = self.meta.live_blob(digest).await?;
        let present = existing.is_some_and(|r| r.size == size) && self.blobs.stat(digest).await? == Some(size);
        if present {
            staged.discard().await?;
        } else {
            staged.commit(digest).await?;
        }
        crate::crashpoint::hit("blob.after_rename");
        self.meta_write(|m| m.commit_blob(repo, digest, size, upload, now_ms()))
            .await?;
        crate::crashpoint::hit("blob.after_commit");
        Ok(())
    }
}
