//! Storage usage, from the metadata alone (never a walk of the disk): per repository, the
//! bytes of the blobs it links, the bytes of those only it links, and its manifest and tag
//! counts; for the registry, the bytes stored once against the sum over repositories.
//!
//! The figures are backend-neutral; `counts` and `usage` compute them from redb.

use std::collections::BTreeMap;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::MetaError;
use super::codec::decode;
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
pub(super) fn counts(txn: &ReadTransaction) -> Result<Counts, MetaError> {
    let mut c = Counts {
        manifests: txn.open_table(MANIFEST_REFS)?.len()?,
        tags: txn.open_table(TAGS)?.len()?,
        repositories: txn.open_table(REPOS)?.len()?,
        ..Counts::default()
    };
    for e in txn.open_table(BLOBS)?.iter()? {
        let row: BlobRow = decode(e?.1.value())?;
        if row.state == BlobState::Live {
            c.blobs += 1;
            c.stored_bytes += row.size;
        }
    }
    Ok(c)
}

/// Usage from one snapshot.
pub(super) fn usage(txn: &ReadTransaction) -> Result<Usage, MetaError> {
    let mut blobs: BTreeMap<String, BlobRow> = BTreeMap::new();
    for e in txn.open_table(BLOBS)?.iter()? {
        let (k, v) = e?;
        let row: BlobRow = decode(v.value())?;
        if row.state == BlobState::Live {
            blobs.insert(k.value().to_owned(), row);
        }
    }
    let mut repos: BTreeMap<String, RepoUsage> = BTreeMap::new();
    for e in txn.open_table(REPOS)?.iter()? {
        let name = e?.0.value().to_owned();
        repos.insert(
            name.clone(),
            RepoUsage {
                name,
                ..RepoUsage::default()
            },
        );
    }
    for e in txn.open_table(BLOB_LINKS)?.iter()? {
        let key = e?.0;
        let (repo, digest) = key.value();
        let (Some(blob), Some(usage)) = (blobs.get(digest), repos.get_mut(repo)) else {
            continue;
        };
        usage.blobs += 1;
        usage.bytes += blob.size;
        if blob.links == 1 {
            usage.exclusive_bytes += blob.size;
        }
    }
    for e in txn.open_table(MANIFEST_REFS)?.iter()? {
        let key = e?.0;
        if let Some(usage) = repos.get_mut(key.value().0) {
            usage.manifests += 1;
        }
    }
    for e in txn.open_table(TAGS)?.iter()? {
        let key = e?.0;
        if let Some(usage) = repos.get_mut(key.value().0) {
            usage.tags += 1;
        }
    }
    let repositories: Vec<RepoUsage> = repos.into_values().collect();
    Ok(Usage {
        logical_bytes: repositories.iter().map(|r| r.bytes).sum(),
        stored_bytes: blobs.values().map(|b| b.size).sum(),
        blobs: blobs.len() as u64,
        repositories,
    })
}
