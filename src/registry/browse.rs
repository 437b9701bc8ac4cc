//! What the web UI reads beyond the API's use cases: a page of a repository's tags with their
//! digests and push times, the tags of a manifest, a repository's summary, and a small blob's bytes (an image config shown on
//! a manifest page). Local metadata only: nothing here asks a pull-through cache's upstream.

use futures_util::StreamExt;

use super::{Error, Registry};
use crate::meta::browse::{RepoSummary, TagOrder, TagPage};
use crate::oci::{Digest, RepoName, Tag};

impl Registry {
    /// A page of at most `n` tags of `repo` whose names contain `filter`, in `order`, with the
    /// digest each points at and its last push.
    pub async fn tag_page(&self, repo: &RepoName, filter: &str, order: &TagOrder, n: usize) -> Result<TagPage, Error> {
        self.meta
            .tag_page(repo, filter, order, n)
            .await?
            .ok_or_else(|| Error::NameUnknown(repo.to_string()))
    }

    /// The tags of `repo` pointing at the manifest `digest`, in lexical order.
    pub async fn manifest_tags(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<String>, Error> {
        Ok(self.meta.manifest_tags(repo, digest).await?)
    }

    /// The digest the tag `tag` of `repo` points at here (never asking an upstream).
    pub async fn local_tag_target(&self, repo: &RepoName, tag: &Tag) -> Result<Option<String>, Error> {
        Ok(self.meta.manifest_by_tag(repo, tag).await?.map(|(digest, _)| digest))
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
