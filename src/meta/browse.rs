//! What the web UI lists, from the metadata alone: a repository's tags with the digest each
//! points at and when it was pushed, and a repository's summary (tag and manifest counts,
//! last push, the bytes it links and the bytes only it links). Each is one read transaction
//! over the repository's own key range, so the cost follows the repository's size, never the
//! registry's.
//!
//! The types are backend-neutral; the functions compute them from redb.

use redb::ReadTransaction;
use serde::{Deserialize, Serialize};

use super::MetaError;
use super::codec::decode;
use super::schema::{BLOB_LINKS, BLOBS, BlobRow, BlobState, MANIFEST_REFS, Millis, REPOS, RefsRow, TAGS, TagRow};

/// One tag of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagDetail {
    pub tag: String,
    /// The manifest it points at.
    pub digest: String,
    /// When the tag was last set.
    pub updated_ms: Millis,
    /// When its manifest was last pushed (0 if its references row is missing, which fsck
    /// reports).
    pub pushed_ms: Millis,
}

/// A repository in figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoSummary {
    pub tags: u64,
    pub manifests: u64,
    /// The latest push of any of its manifests; 0 when it holds none.
    pub last_push_ms: Millis,
    /// Bytes of every live blob linked into it.
    pub bytes: u64,
    /// Bytes of those no other repository links.
    pub exclusive_bytes: u64,
}

/// Every tag of `repo`, in lexical order; `None` when the repository does not exist.
pub(super) fn tag_details(txn: &ReadTransaction, repo: &str) -> Result<Option<Vec<TagDetail>>, MetaError> {
    if txn.open_table(REPOS)?.get(repo)?.is_none() {
        return Ok(None);
    }
    let refs = txn.open_table(MANIFEST_REFS)?;
    let mut out = Vec::new();
    for entry in txn.open_table(TAGS)?.range((repo, "")..)? {
        let (key, value) = entry?;
        let (r, tag) = key.value();
        if r != repo {
            break;
        }
        let row: TagRow = decode(value.value())?;
        let pushed_ms = refs
            .get((repo, row.digest.as_str()))?
            .map(|v| decode::<RefsRow>(v.value()))
            .transpose()?
            .map_or(0, |r| r.pushed_ms);
        out.push(TagDetail {
            tag: tag.to_owned(),
            digest: row.digest,
            updated_ms: row.updated_ms,
            pushed_ms,
        });
    }
    Ok(Some(out))
}

/// The summary of `repo`; `None` when the repository does not exist.
pub(super) fn repo_summary(txn: &ReadTransaction, repo: &str) -> Result<Option<RepoSummary>, MetaError> {
    if txn.open_table(REPOS)?.get(repo)?.is_none() {
        return Ok(None);
    }
    let mut s = RepoSummary::default();
    for entry in txn.open_table(TAGS)?.range((repo, "")..)? {
        if entry?.0.value().0 != repo {
            break;
        }
        s.tags += 1;
    }
    for entry in txn.open_table(MANIFEST_REFS)?.range((repo, "")..)? {
        let (key, value) = entry?;
        if key.value().0 != repo {
            break;
        }
        s.manifests += 1;
        s.last_push_ms = s.last_push_ms.max(decode::<RefsRow>(value.value())?.pushed_ms);
    }
    let blobs = txn.open_table(BLOBS)?;
    for entry in txn.open_table(BLOB_LINKS)?.range((repo, "")..)? {
        let key = entry?.0;
        let (r, digest) = key.value();
        if r != repo {
            break;
        }
        let Some(blob) = blobs.get(digest)?.map(|v| decode::<BlobRow>(v.value())).transpose()? else {
            continue;
        };
        if blob.state == BlobState::Live {
            s.bytes += blob.size;
            if blob.links == 1 {
                s.exclusive_bytes += blob.size;
            }
        }
    }
    Ok(Some(s))
}
