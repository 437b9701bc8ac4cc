//! What the web UI reads beyond the API's use cases: a repository's tags with their digests
//! and push times, a repository's summary, and a small blob's bytes (an image config shown on
//! a manifest page). Local metadata only: nothing here asks a pull-through cache's upstream.

use futures_util::StreamExt;

use super::{Error, Registry};
use crate::meta::browse::{RepoSummary, TagDetail};
use crate::oci::{Digest, RepoName};

impl Registry {
    /// Every tag of `repo`, in lexical order, with the digest it points at and push times.
    pub async fn tag_details(&self, repo: &RepoName) -> Result<Vec<TagDetail>, Error> {
        self.meta
            .tag_details(repo)
            .await?
            .ok_or_else(|| Error::NameUnknown(repo.to_string()))
    }

    /// Tag and manifest counts, last push and sizes of `repo`.
    pub async fn repo_summary(&self, repo: &RepoName) -> Result<RepoSummary, Error> {
        self.meta
            .repo_summary(repo)
            .await?
            .ok_or_else(|| Error::NameUnknown(repo.to_string()))
    }

    /// The bytes of the blob `digest` of `repo` when it is stored, linked there and at most
    /// `max` bytes long; `None` otherwise.
    pub async fn read_small_blob(&self, repo: &RepoName, digest: &Digest, max: u64) -> Result<Option<Vec<u8>>, Error> {
        let Some(row) = self.meta.linked_blob(repo, digest).await? else {
            return Ok(None);
        };
        if row.size == 0 || row.size > max {
            return Ok(None);
        }
        let Some(reader) = self.blobs.open(digest, row.size).await? else {
            return Ok(None);
        };
        let Some(mut bytes) = reader.stream(0, row.size - 1).await? else {
            return Ok(None);
        };
        let mut body = Vec::with_capacity(usize::try_from(row.size).unwrap_or(0));
        while let Some(chunk) = bytes.next().await {
            body.extend_from_slice(&chunk?);
            if body.len() as u64 > max {
                return Ok(None);
            }
        }
        Ok(Some(body))
    }
}
