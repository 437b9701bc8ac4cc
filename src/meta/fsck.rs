//! The metadata side of `fsck`: a full snapshot of every table, and the repairs, each applied
//! as a compare-and-set inside a short write transaction so that an online repair never
//! overwrites a change made since the snapshot (it is skipped instead, and reported).
//!
//! `Scan` and `Repair` are backend-neutral (every `MetaStore` answers and applies them, with
//! keys as strings, as stored); `scan` and `repair` are redb's.

use std::collections::{BTreeMap, BTreeSet};

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::MetaError;
use super::codec::{decode, encode};
use super::schema::{
    BLOB_LINKS, BLOBS, BlobRow, BlobState, LinkRow, MANIFEST_PARENTS, MANIFEST_REFS, MANIFESTS, ManifestRow, Millis,
    REFERRERS, REPOS, ReferrerRow, RefsRow, RepoRow, TAGS, TAGS_BY_MANIFEST, TOMBSTONES, TagRow, UPLOADS, UploadRow,
};

type Key2 = (String, String);
type Key3 = (String, String, String);

/// Every row of every table, from one read transaction.
#[derive(Debug, Default)]
pub struct Scan {
    pub repos: BTreeSet<String>,
    pub tags: BTreeMap<Key2, TagRow>,
    pub tags_by_manifest: BTreeSet<Key3>,
    pub manifests: BTreeMap<Key2, ManifestRow>,
    pub refs: BTreeMap<Key2, RefsRow>,
    pub parents: BTreeSet<Key3>,
    pub referrers: BTreeMap<Key3, ReferrerRow>,
    pub links: BTreeMap<Key2, LinkRow>,
    pub blobs: BTreeMap<String, BlobRow>,
    pub uploads: BTreeMap<String, UploadRow>,
    pub tombstones: BTreeSet<String>,
}

/// One repair. Each carries what the snapshot saw, and is applied only if the row still
/// says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    SetRefcount {
        digest: String,
        seen: u64,
        want: u64,
    },
    SetBlobLinks {
        digest: String,
        seen: u64,
        want: u64,
    },
    SetLinkRefs {
        repo: String,
        digest: String,
        seen: u64,
        want: u64,
    },
    /// Link a blob that a manifest of `repo` references but that is not linked there.
    AddLink {
        repo: String,
        digest: String,
        refs: u64,
        now: Millis,
    },
    /// Drop a link whose blob has no record.
    DropLink {
        repo: String,
        digest: String,
    },
    /// Mark a blob record `Missing` (its file is corrupt or gone), keeping counts and links.
    MarkBlobMissing {
        digest: String,
        now: Millis,
    },
    /// Drop a tag whose manifest does not exist.
    DropTag {
        repo: String,
        tag: String,
        digest: String,
    },
    AddTagIndex {
        repo: String,
        digest: String,
        tag: String,
    },
    DropTagIndex {
        repo: String,
        digest: String,
        tag: String,
    },
    SetRefs {
        repo: String,
        digest: String,
        refs: RefsRow,
    },
    /// Drop a reference row whose manifest does not exist.
    DropRefs {
        repo: String,
        digest: String,
    },
    AddParent {
        repo: String,
        child: String,
        parent: String,
    },
    DropParent {
        repo: String,
        child: String,
        parent: String,
    },
    AddReferrer {
        repo: String,
        subject: String,
        referrer: String,
        row: ReferrerRow,
    },
    DropReferrer {
        repo: String,
        subject: String,
        referrer: String,
    },
    AddRepo {
        repo: String,
        now: Millis,
    },
    DropUpload {
        id: String,
    },
}

/// Read every table in one snapshot.
pub(super) fn scan(txn: &ReadTransaction) -> Result<Scan, MetaError> {
    let mut scan = Scan::default();
    for e in txn.open_table(REPOS)?.iter()? {
        scan.repos.insert(e?.0.value().to_owned());
    }
    for e in txn.open_table(TAGS)?.iter()? {
        let (k, v) = e?;
        let (r, t) = k.value();
        scan.tags.insert((r.into(), t.into()), decode(v.value())?);
    }
    for e in txn.open_table(TAGS_BY_MANIFEST)?.iter()? {
        let k = e?.0;
        let (r, d, t) = k.value();
        scan.tags_by_manifest.insert((r.into(), d.into(), t.into()));
    }
    for e in txn.open_table(MANIFESTS)?.iter()? {
        let (k, v) = e?;
        let (r, d) = k.value();
        scan.manifests.insert((r.into(), d.into()), decode(v.value())?);
    }
    for e in txn.open_table(MANIFEST_REFS)?.iter()? {
        let (k, v) = e?;
        let (r, d) = k.value();
        scan.refs.insert((r.into(), d.into()), decode(v.value())?);
    }
    for e in txn.open_table(MANIFEST_PARENTS)?.iter()? {
        let k = e?.0;
        let (r, c, p) = k.value();
        scan.parents.insert((r.into(), c.into(), p.into()));
    }
    for e in txn.open_table(REFERRERS)?.iter()? {
        let (key, value) = e?;
        let (repo, subject, referrer) = key.value();
        let key = (repo.into(), subject.into(), referrer.into());
        scan.referrers.insert(key, decode(value.value())?);
    }
    for e in txn.open_table(BLOB_LINKS)?.iter()? {
        let (k, v) = e?;
        let (r, d) = k.value();
        scan.links.insert((r.into(), d.into()), decode(v.value())?);
    }
    for e in txn.open_table(BLOBS)?.iter()? {
        let (k, v) = e?;
        scan.blobs.insert(k.value().into(), decode(v.value())?);
    }
    for e in txn.open_table(UPLOADS)?.iter()? {
        let (k, v) = e?;
        scan.uploads.insert(k.value().into(), UploadRow::decode(v.value())?);
    }
    for e in txn.open_table(TOMBSTONES)?.iter()? {
        scan.tombstones.insert(e?.0.value().into());
    }
    Ok(scan)
}

/// Apply repairs in one transaction; returns, for each, whether it was applied (false: the row
/// changed since the snapshot, so the repair no longer fits).
pub(super) fn repair(txn: &WriteTransaction, repairs: &[Repair]) -> Result<Vec<bool>, MetaError> {
    repairs.iter().map(|r| apply(txn, r)).collect()
}

fn apply(txn: &WriteTransaction, repair: &Repair) -> Result<bool, MetaError> {
    match repair {
        Repair::SetRefcount { .. }
        | Repair::SetBlobLinks { .. }
        | Repair::SetLinkRefs { .. }
        | Repair::AddLink { .. }
        | Repair::DropLink { .. }
        | Repair::MarkBlobMissing { .. } => apply_blob(txn, repair),
        Repair::DropTag { .. } | Repair::AddTagIndex { .. } | Repair::DropTagIndex { .. } => apply_tag(txn, repair),
        _ => apply_index(txn, repair),
    }
}

/// Counts, links and blob states.
fn apply_blob(txn: &WriteTransaction, repair: &Repair) -> Result<bool, MetaError> {
    match repair {
        Repair::SetRefcount { digest, seen, want } => cas_blob(txn, digest, |b| {
            (b.refcount == *seen).then(|| b.refcount = *want).is_some()
        }),
        Repair::SetBlobLinks { digest, seen, want } => {
            cas_blob(txn, digest, |b| (b.links == *seen).then(|| b.links = *want).is_some())
        }
        Repair::SetLinkRefs {
            repo,
            digest,
            seen,
            want,
        } => {
            let mut links = txn.open_table(BLOB_LINKS)?;
            let key = (repo.as_str(), digest.as_str());
            let row = links.get(key)?.map(|v| decode::<LinkRow>(v.value())).transpose()?;
            match row {
                Some(mut row) if row.refs == *seen => {
                    row.refs = *want;
                    links.insert(key, encode(&row).as_slice())?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        Repair::AddLink {
            repo,
            digest,
            refs,
            now,
        } => {
            let key = (repo.as_str(), digest.as_str());
            if txn.open_table(BLOB_LINKS)?.get(key)?.is_some() || txn.open_table(BLOBS)?.get(digest.as_str())?.is_none()
            {
                return Ok(false);
            }
            txn.open_table(BLOB_LINKS)?.insert(
                key,
                encode(&LinkRow {
                    linked_ms: *now,
                    refs: *refs,
                    referenced: false,
                })
                .as_slice(),
            )?;
            cas_blob(txn, digest, |b| {
                b.links += 1;
                true
            })
        }
        Repair::DropLink { repo, digest } => {
            let gone = txn.open_table(BLOBS)?.get(digest.as_str())?.is_none();
            Ok(gone
                && txn
                    .open_table(BLOB_LINKS)?
                    .remove((repo.as_str(), digest.as_str()))?
                    .is_some())
        }
        Repair::MarkBlobMissing { digest, now } => cas_blob(txn, digest, |b| {
            let live = b.state == BlobState::Live;
            if live {
                b.state = BlobState::Missing { since_ms: *now };
            }
            live
        }),
        _ => unreachable!("not a blob repair"),
    }
}

/// Tags and the reverse tag index.
fn apply_tag(txn: &WriteTransaction, repair: &Repair) -> Result<bool, MetaError> {
    match repair {
        Repair::DropTag { repo, tag, digest } => {
            let still = txn
                .open_table(TAGS)?
                .get((repo.as_str(), tag.as_str()))?
                .map(|v| decode::<TagRow>(v.value()));
            let dangling = txn
                .open_table(MANIFESTS)?
                .get((repo.as_str(), digest.as_str()))?
                .is_none();
            if !(dangling && still.transpose()?.is_some_and(|t| &t.digest == digest)) {
                return Ok(false);
            }
            txn.open_table(TAGS)?.remove((repo.as_str(), tag.as_str()))?;
            txn.open_table(TAGS_BY_MANIFEST)?
                .remove((repo.as_str(), digest.as_str(), tag.as_str()))?;
            Ok(true)
        }
        Repair::AddTagIndex { repo, digest, tag } => {
            let row = txn
                .open_table(TAGS)?
                .get((repo.as_str(), tag.as_str()))?
                .map(|v| decode::<TagRow>(v.value()));
            if row.transpose()?.is_none_or(|t| &t.digest != digest) {
                return Ok(false);
            }
            txn.open_table(TAGS_BY_MANIFEST)?
                .insert((repo.as_str(), digest.as_str(), tag.as_str()), ())?;
            Ok(true)
        }
        Repair::DropTagIndex { repo, digest, tag } => {
            let row = txn
                .open_table(TAGS)?
                .get((repo.as_str(), tag.as_str()))?
                .map(|v| decode::<TagRow>(v.value()));
            if row.transpose()?.is_some_and(|t| &t.digest == digest) {
                return Ok(false);
            }
            Ok(txn
                .open_table(TAGS_BY_MANIFEST)?
                .remove((repo.as_str(), digest.as_str(), tag.as_str()))?
                .is_some())
        }
        _ => unreachable!("not a tag repair"),
    }
}

/// Reference rows, the parent and referrer indexes, repositories and upload sessions.
fn apply_index(txn: &WriteTransaction, repair: &Repair) -> Result<bool, MetaError> {
    match repair {
        Repair::SetRefs { repo, digest, refs } => {
            if txn
                .open_table(MANIFESTS)?
                .get((repo.as_str(), digest.as_str()))?
                .is_none()
            {
                return Ok(false);
            }
            txn.open_table(MANIFEST_REFS)?
                .insert((repo.as_str(), digest.as_str()), encode(refs).as_slice())?;
            Ok(true)
        }
        Repair::AddParent { repo, child, parent } => {
            if txn
                .open_table(MANIFESTS)?
                .get((repo.as_str(), parent.as_str()))?
                .is_none()
            {
                return Ok(false);
            }
            txn.open_table(MANIFEST_PARENTS)?
                .insert((repo.as_str(), child.as_str(), parent.as_str()), ())?;
            Ok(true)
        }
        Repair::DropParent { repo, child, parent } => {
            if txn
                .open_table(MANIFESTS)?
                .get((repo.as_str(), parent.as_str()))?
                .is_some()
            {
                return Ok(false);
            }
            Ok(txn
                .open_table(MANIFEST_PARENTS)?
                .remove((repo.as_str(), child.as_str(), parent.as_str()))?
                .is_some())
        }
        Repair::AddReferrer {
            repo,
            subject,
            referrer,
            row,
        } => {
            if txn
                .open_table(MANIFESTS)?
                .get((repo.as_str(), referrer.as_str()))?
                .is_none()
            {
                return Ok(false);
            }
            let key = (repo.as_str(), subject.as_str(), referrer.as_str());
            txn.open_table(REFERRERS)?.insert(key, encode(row).as_slice())?;
            Ok(true)
        }
        Repair::DropReferrer {
            repo,
            subject,
            referrer,
        } => {
            if txn
                .open_table(MANIFESTS)?
                .get((repo.as_str(), referrer.as_str()))?
                .is_some()
            {
                return Ok(false);
            }
            let key = (repo.as_str(), subject.as_str(), referrer.as_str());
            Ok(txn.open_table(REFERRERS)?.remove(key)?.is_some())
        }
        Repair::AddRepo { repo, now } => {
            let mut repos = txn.open_table(REPOS)?;
            if repos.get(repo.as_str())?.is_some() {
                return Ok(false);
            }
            repos.insert(repo.as_str(), encode(&RepoRow { created_ms: *now }).as_slice())?;
            Ok(true)
        }
        Repair::DropUpload { id } => Ok(txn.open_table(UPLOADS)?.remove(id.as_str())?.is_some()),
        Repair::DropRefs { repo, digest } => {
            if txn
                .open_table(MANIFESTS)?
                .get((repo.as_str(), digest.as_str()))?
                .is_some()
            {
                return Ok(false);
            }
            Ok(txn
                .open_table(MANIFEST_REFS)?
                .remove((repo.as_str(), digest.as_str()))?
                .is_some())
        }
        _ => unreachable!("not an index repair"),
    }
}

/// Update a blob row if `f` says so.
fn cas_blob(txn: &WriteTransaction, digest: &str, f: impl FnOnce(&mut BlobRow) -> bool) -> Result<bool, MetaError> {
    let mut blobs = txn.open_table(BLOBS)?;
    let Some(mut row) = blobs.get(digest)?.map(|v| decode::<BlobRow>(v.value())).transpose()? else {
        return Ok(false);
    };
    if !f(&mut row) {
        return Ok(false);
    }
    blobs.insert(digest, encode(&row).as_slice())?;
    Ok(true)
}
