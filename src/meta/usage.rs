//! Storage usage, from the metadata alone (never a walk of the disk): per repository, the
//! bytes of the blobs it links, the bytes of those only it links, and its manifest and tag
//! counts; for the registry, the bytes stored once against the sum over repositories.
//!
//! The figures are backend-neutral, and so are `counts` and `usage`, which compute them (`rows`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::MetaError;
use super::codec::decode;
use super::rows::{NEXT, Rows};
use super::schema::{BLOB_LINKS, BLOBS, BlobRow, BlobState, MANIFEST_REFS, REPOS, TAGS};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoUsage {
    pub name: String,
    /// Bytes of every blob linked into the repository.
    pub bytes: u64,
    /// Bytes of the blobs no other repository links: what deleting the repository would free.
    pub exclusive_bytes: u64,
    pub blobs: u64,
    pub manifests: u64,
    pub tags: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub repositories: Vec<RepoUsage>,
    /// Sum of `bytes` over repositories (what the registry would hold without deduplication).
    pub logical_bytes: u64,
    /// Bytes of every live blob, each counted once (what the blob files hold).
    pub stored_bytes: u64,
    pub blobs: u64,
}

/// Store-wide counts for the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub blobs: u64,
    pub stored_bytes: u64,
    pub manifests: u64,
    pub tags: u64,
    pub repositories: u64,
}

/// Counts from one snapshot. Blobs are iterated (to sum live sizes); the rest are lengths.
pub(super) fn counts(txn: &impl Rows) -> Result<Counts, MetaError> {
    let mut c = Counts {
        manifests: txn.len(&MANIFEST_REFS)?,
        tags: txn.len(&TAGS)?,
        repositories: txn.len(&REPOS)?,
        ..Counts::default()
    };
    txn.scan(&BLOBS, .., &mut |_, v| {
        let row: BlobRow = decode(v)?;
        if row.state == BlobState::Live {
            c.blobs += 1;
            c.stored_bytes += row.size;
        }
        NEXT
    })?;
    Ok(c)
}

/// Usage from one snapshot.
pub(super) fn usage(txn: &impl Rows) -> Result<Usage, MetaError> {
    let mut blobs: BTreeMap<String, BlobRow> = BTreeMap::new();
    txn.scan(&BLOBS, .., &mut |digest, v| {
        let row: BlobRow = decode(v)?;
        if row.state == BlobState::Live {
            blobs.insert(digest.to_owned(), row);
        }
        NEXT
    })?;
    let mut repos: BTreeMap<String, RepoUsage> = BTreeMap::new();
    txn.scan(&REPOS, .., &mut |name, _| {
        let name = name.to_owned();
        repos.insert(
            name.clone(),
            RepoUsage {
                name,
                ..RepoUsage::default()
            },
        );
        NEXT
    })?;
    txn.scan(&BLOB_LINKS, .., &mut |(repo, digest), _| {
        if let (Some(blob), Some(usage)) = (blobs.get(digest), repos.get_mut(repo)) {
            usage.blobs += 1;
            usage.bytes += blob.size;
            if blob.links == 1 {
                usage.exclusive_bytes += blob.size;
            }
        }
        NEXT
    })?;
    txn.scan(&MANIFEST_REFS, .., &mut |(repo, _), _| {
        if let Some(usage) = repos.get_mut(repo) {
            usage.manifests += 1;
        }
        NEXT
    })?;
    txn.scan(&TAGS, .., &mut |(repo, _), _| {
        if let Some(usage) = repos.get_mut(repo) {
            usage.tags += 1;
        }
        NEXT
    })?;
    let repositories: Vec<RepoUsage> = repos.into_values().collect();
    Ok(Usage {
        logical_bytes: repositories.iter().map(|r| r.bytes).sum(),
        stored_bytes: blobs.values().map(|b| b.size).sum(),
        blobs: blobs.len() as u64,
        repositories,
    })
}
