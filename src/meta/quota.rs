//! Storage quotas: a group of repositories (a [`Quota`], compiled by the caller's policy) may
//! reference at most `max_bytes` of blobs. A group's usage is the size of every blob that at
//! least one manifest of one of its repositories references (`LinkRow::refs > 0`), each blob
//! counted once however many repositories and manifests of the group reference it. A blob
//! that is only uploaded (linked, referenced by no manifest) does not count.
//!
//! Usage is computed, never stored: a bounded scan of the group's own rows (the `repos` key
//! range under the group's literal prefix, then each member's `blob_links` key range). So
//! there is no counter to keep in step with manifest deletes, garbage collection or fsck
//! repairs, and a rule changed by a reload applies at once with nothing to recompute. A
//! manifest PUT runs the scan inside its write transaction (`check`), which is what makes the
//! limit hold against concurrent pushes: the group commit runs writes one after another.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::codec::decode;
use super::rows::{NEXT, Rows, STOP, WriteRows};
use super::schema::{BLOB_LINKS, BLOBS, BlobRow, LinkRow, REPOS};
use super::{MetaError, NewManifest};

/// One quota: the repositories `members` admits (all of whose names start with `prefix`)
/// together reference at most `max_bytes`.
#[derive(Clone)]
pub struct Quota {
    /// How messages and metrics name the quota (its repository globs, as written).
    pub name: String,
    pub max_bytes: u64,
    /// What every member's name starts with: the scan reads only this key range of `repos`.
    prefix: String,
    members: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl Quota {
    pub fn new(
        name: String,
        max_bytes: u64,
        prefix: String,
        members: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        Quota {
            name,
            max_bytes,
            prefix,
            members: Arc::new(members),
        }
    }

    /// Whether `repo` counts against this quota.
    pub fn covers(&self, repo: &str) -> bool {
        repo.starts_with(&self.prefix) && (self.members)(repo)
    }
}

impl Debug for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quota")
            .field("name", &self.name)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// A quota's usage, for `/admin/usage` and the metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUsage {
    pub quota: String,
    /// Bytes the group's manifests reference, each blob once.
    pub used_bytes: u64,
    pub max_bytes: u64,
}

/// The blobs the group references, and their bytes.
struct Referenced {
    digests: HashSet<String>,
    bytes: u64,
}

fn referenced(txn: &impl Rows, quota: &Quota) -> Result<Referenced, MetaError> {
    let mut members = Vec::new();
    txn.scan(&REPOS, quota.prefix.as_str().., &mut |repo, _| {
        if !repo.starts_with(&quota.prefix) {
            return STOP;
        }
        if quota.covers(repo) {
            members.push(repo.to_owned());
        }
        NEXT
    })?;
    let mut digests = HashSet::new();
    for repo in &members {
        txn.scan(&BLOB_LINKS, (repo.as_str(), "").., &mut |(r, digest), v| {
            if r != repo {
                return STOP;
            }
            if decode::<LinkRow>(v)?.refs > 0 {
                digests.insert(digest.to_owned());
            }
            NEXT
        })?;
    }
    let mut bytes = 0;
    for digest in &digests {
        if let Some(v) = txn.get(&BLOBS, digest.as_str())? {
            bytes += decode::<BlobRow>(&v)?.size;
        }
    }
    Ok(Referenced { digests, bytes })
}

/// Refuse (`MetaError::QuotaExceeded`) a new manifest whose blobs not yet referenced in a
/// group of `m.quotas` would take that group past its limit. A manifest that adds no bytes
/// always passes, so a group over a lowered limit can still re-tag and delete.
pub(super) fn check(txn: &impl WriteRows, m: &NewManifest) -> Result<(), MetaError> {
    if m.quotas.is_empty() {
        return Ok(());
    }
    // Blobs another manifest of this repository references are in every group of it: a push
    // made only of those (an index, an image rebuilt on known layers) needs no scan.
    let mut all_known = true;
    for (digest, _) in &m.blobs {
        let link = txn.get(&BLOB_LINKS, (m.repo.as_str(), digest.as_str()))?;
        let link = link.map(|v| decode::<LinkRow>(&v)).transpose()?;
        all_known &= link.is_some_and(|l| l.refs > 0);
        if !all_known {
            break;
        }
    }
    if all_known {
        return Ok(());
    }
    for quota in &m.quotas {
        let group = referenced(txn, quota)?;
        let mut seen = HashSet::new();
        let mut adds = 0;
        for (digest, declared) in &m.blobs {
            if group.digests.contains(digest.as_str()) || !seen.insert(digest.as_str()) {
                continue;
            }
            let row = txn.get(&BLOBS, digest.as_str())?.map(|v| decode::<BlobRow>(&v));
            adds += row.transpose()?.map_or(*declared, |r| r.size);
        }
        if adds > 0 && group.bytes + adds > quota.max_bytes {
            return Err(MetaError::QuotaExceeded {
                quota: quota.name.clone(),
                used: group.bytes,
                limit: quota.max_bytes,
                adds,
            });
        }
    }
    Ok(())
}

/// Each quota's usage, from one snapshot.
pub(super) fn usage(txn: &impl Rows, quotas: &[Quota]) -> Result<Vec<QuotaUsage>, MetaError> {
    quotas
        .iter()
        .map(|q| {
            Ok(QuotaUsage {
                quota: q.name.clone(),
                used_bytes: referenced(txn, q)?.bytes,
                max_bytes: q.max_bytes,
            })
        })
        .collect()
}
