//! The metadata side of `fsck`: a full snapshot of every table, and the repairs, each applied
//! as a compare-and-set inside a short write transaction so that an online repair never
//! overwrites a change made since the snapshot (it is skipped instead, and reported).
//!
//! `Scan` and `Repair` are backend-neutral (every `MetaStore` answers and applies them, with
//! keys as strings, as stored), and so are `scan` and `repair`, over any backend's rows
//! (`rows`).

use std::collections::{BTreeMap, BTreeSet};

use super::MetaError;
use super::codec::{decode, encode};
use super::rows::{NEXT, Rows, WriteRows};
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
pub(super) fn scan(txn: &impl Rows) -> Result<Scan, MetaError> {
    let mut scan = Scan::default();
    txn.scan(&REPOS, .., &mut |r, _| {
        scan.repos.insert(r.to_owned());
        NEXT
    })?;
    txn.scan(&TAGS, .., &mut |(r, t), v| {
        scan.tags.insert((r.into(), t.into()), decode(v)?);
        NEXT
    })?;
    txn.scan(&TAGS_BY_MANIFEST, .., &mut |(r, d, t), ()| {
        scan.tags_by_manifest.insert((r.into(), d.into(), t.into()));
        NEXT
    })?;
    txn.scan(&MANIFESTS, .., &mut |(r, d), v| {
        scan.manifests.insert((r.into(), d.into()), decode(v)?);
        NEXT
    })?;
    txn.scan(&MANIFEST_REFS, .., &mut |(r, d), v| {
        scan.refs.insert((r.into(), d.into()), decode(v)?);
        NEXT
    })?;
    txn.scan(&MANIFEST_PARENTS, .., &mut |(r, c, p), ()| {
        scan.parents.insert((r.into(), c.into(), p.into()));
        NEXT
    })?;
    txn.scan(&REFERRERS, .., &mut |(repo, subject, referrer), v| {
        let key = (repo.into(), subject.into(), referrer.into());
        scan.referrers.insert(key, decode(v)?);
        NEXT
    })?;
    txn.scan(&BLOB_LINKS, .., &mut |(r, d), v| {
        scan.links.insert((r.into(), d.into()), decode(v)?);
        NEXT
    })?;
    txn.scan(&BLOBS, .., &mut |d, v| {
        scan.blobs.insert(d.into(), decode(v)?);
        NEXT
    })?;
    txn.scan(&UPLOADS, .., &mut |id, v| {
        scan.uploads.insert(id.into(), UploadRow::decode(v)?);
        NEXT
    })?;
    txn.scan(&TOMBSTONES, .., &mut |d, _| {
        scan.tombstones.insert(d.into());
        NEXT
    })?;
    Ok(scan)
}

/// Apply repairs in one transaction; returns, for each, whether it was applied (false: the row
/// changed since the snapshot, so the repair no longer fits).
pub(super) fn repair(txn: &impl WriteRows, repairs: &[Repair]) -> Result<Vec<bool>, MetaError> {
    repairs.iter().map(|r| apply(txn, r)).collect()
}

fn apply(txn: &impl WriteRows, repair: &Repair) -> Result<bool, MetaError> {
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
fn apply_blob(txn: &impl WriteRows, repair: &Repair) -> Result<bool, MetaError> {
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
            let key = (repo.as_str(), digest.as_str());
            let row = txn.get(&BLOB_LINKS, key)?.map(|v| decode::<LinkRow>(&v)).transpose()?;
            match row {
                Some(mut row) if row.refs == *seen => {
                    row.refs = *want;
                    txn.insert(&BLOB_LINKS, key, &encode(&row))?;
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
            if txn.contains(&BLOB_LINKS, key)? || !txn.contains(&BLOBS, digest.as_str())? {
                return Ok(false);
            }
            let row = LinkRow {
                linked_ms: *now,
                refs: *refs,
                referenced: false,
            };
            txn.insert(&BLOB_LINKS, key, &encode(&row))?;
            cas_blob(txn, digest, |b| {
                b.links += 1;
                true
            })
        }
        Repair::DropLink { repo, digest } => {
            let gone = !txn.contains(&BLOBS, digest.as_str())?;
            Ok(gone && txn.remove(&BLOB_LINKS, (repo.as_str(), digest.as_str()))?)
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

fn tag_row(txn: &impl WriteRows, repo: &str, tag: &str) -> Result<Option<TagRow>, MetaError> {
    txn.get(&TAGS, (repo, tag))?.map(|v| decode(&v)).transpose()
}

/// Tags and the reverse tag index.
fn apply_tag(txn: &impl WriteRows, repair: &Repair) -> Result<bool, MetaError> {
    match repair {
        Repair::DropTag { repo, tag, digest } => {
            let still = tag_row(txn, repo, tag)?;
            let dangling = !txn.contains(&MANIFESTS, (repo.as_str(), digest.as_str()))?;
            if !(dangling && still.is_some_and(|t| &t.digest == digest)) {
                return Ok(false);
            }
            txn.remove(&TAGS, (repo.as_str(), tag.as_str()))?;
            txn.remove(&TAGS_BY_MANIFEST, (repo.as_str(), digest.as_str(), tag.as_str()))?;
            Ok(true)
        }
        Repair::AddTagIndex { repo, digest, tag } => {
            if tag_row(txn, repo, tag)?.is_none_or(|t| &t.digest != digest) {
                return Ok(false);
            }
            txn.insert(&TAGS_BY_MANIFEST, (repo.as_str(), digest.as_str(), tag.as_str()), ())?;
            Ok(true)
        }
        Repair::DropTagIndex { repo, digest, tag } => {
            if tag_row(txn, repo, tag)?.is_some_and(|t| &t.digest == digest) {
                return Ok(false);
            }
            txn.remove(&TAGS_BY_MANIFEST, (repo.as_str(), digest.as_str(), tag.as_str()))
        }
        _ => unreachable!("not a tag repair"),
    }
}

/// Reference rows, the parent and referrer indexes, repositories and upload sessions.
fn apply_index(txn: &impl WriteRows, repair: &Repair) -> Result<bool, MetaError> {
    let has_manifest = |repo: &str, digest: &str| txn.contains(&MANIFESTS, (repo, digest));
    match repair {
        Repair::SetRefs { repo, digest, refs } => {
            if !has_manifest(repo, digest)? {
                return Ok(false);
            }
            txn.insert(&MANIFEST_REFS, (repo.as_str(), digest.as_str()), &encode(refs))?;
            Ok(true)
        }
        Repair::AddParent { repo, child, parent } => {
            if !has_manifest(repo, parent)? {
                return Ok(false);
            }
            txn.insert(&MANIFEST_PARENTS, (repo.as_str(), child.as_str(), parent.as_str()), ())?;
            Ok(true)
        }
        Repair::DropParent { repo, child, parent } => {
            if has_manifest(repo, parent)? {
                return Ok(false);
            }
            txn.remove(&MANIFEST_PARENTS, (repo.as_str(), child.as_str(), parent.as_str()))
        }
        Repair::AddReferrer {
            repo,
            subject,
            referrer,
            row,
        } => {
            if !has_manifest(repo, referrer)? {
                return Ok(false);
            }
            let key = (repo.as_str(), subject.as_str(), referrer.as_str());
            txn.insert(&REFERRERS, key, &encode(row))?;
            Ok(true)
        }
        Repair::DropReferrer {
            repo,
            subject,
            referrer,
        } => {
            if has_manifest(repo, referrer)? {
                return Ok(false);
            }
            txn.remove(&REFERRERS, (repo.as_str(), subject.as_str(), referrer.as_str()))
        }
        Repair::AddRepo { repo, now } => {
            if txn.contains(&REPOS, repo.as_str())? {
                return Ok(false);
            }
            txn.insert(&REPOS, repo.as_str(), &encode(&RepoRow { created_ms: *now }))?;
            Ok(true)
        }
        Repair::DropUpload { id } => txn.remove(&UPLOADS, id.as_str()),
        Repair::DropRefs { repo, digest } => {
            if has_manifest(repo, digest)? {
                return Ok(false);
            }
            txn.remove(&MANIFEST_REFS, (repo.as_str(), digest.as_str()))
        }
        _ => unreachable!("not an index repair"),
    }
}

/// Update a blob row if `f` says so.
fn cas_blob(txn: &impl WriteRows, digest: &str, f: impl FnOnce(&mut BlobRow) -> bool) -> Result<bool, MetaError> {
    let Some(mut row) = txn.get(&BLOBS, digest)?.map(|v| decode::<BlobRow>(&v)).transpose()? else {
        return Ok(false);
    };
    if !f(&mut row) {
        return Ok(false);
    }
    txn.insert(&BLOBS, digest, &encode(&row))?;
    Ok(true)
}
