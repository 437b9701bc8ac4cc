//! Write transactions. Each `pub(super)` function is the body of one short transaction over
//! rows only (string keys; `redb_store` turns the typed arguments into them): it re-checks
//! what it depends on inside the transaction, so a concurrent writer (another push, garbage
//! collection) can never slip between the check and the change.
//!
//! Counters kept here, always in the transaction that changes what they count:
//! - `BlobRow::refcount`: manifests (all repositories) referencing the blob;
//! - `LinkRow::refs`: manifests of the link's repository referencing the blob;
//! - `BlobRow::links`: repositories linking the blob.

use super::codec::{decode, encode};
use super::rows::{NEXT, Rows, STOP, WriteRows};
use super::schema::{
    BLOB_LINKS, BLOBS, BlobRow, BlobState, LinkRow, MANIFEST_PARENTS, MANIFEST_REFS, MANIFESTS, Millis, REFERRERS,
    REPOS, RefsRow, RepoRow, TAGS, TAGS_BY_MANIFEST, TOMBSTONES, TagRow, UPLOADS, UploadRow,
};
use super::{MetaError, NewManifest, Protected};
use crate::oci::Algorithm;

/// Create every table, so that read transactions can always open them (redb).
pub(super) fn ensure_tables(txn: &redb::WriteTransaction) -> Result<(), MetaError> {
    txn.open_table(REPOS.redb())?;
    txn.open_table(TAGS.redb())?;
    txn.open_table(TAGS_BY_MANIFEST.redb())?;
    txn.open_table(MANIFESTS.redb())?;
    txn.open_table(MANIFEST_REFS.redb())?;
    txn.open_table(MANIFEST_PARENTS.redb())?;
    txn.open_table(REFERRERS.redb())?;
    txn.open_table(BLOB_LINKS.redb())?;
    txn.open_table(BLOBS.redb())?;
    txn.open_table(UPLOADS.redb())?;
    txn.open_table(TOMBSTONES.redb())?;
    txn.open_table(super::schema::AUDIT.redb())?;
    txn.open_table(super::schema::OUTBOX.redb())?;
    txn.open_table(super::schema::SEQUENCES.redb())?;
    Ok(())
}

pub(super) fn create_upload(
    txn: &impl WriteRows,
    id: &str,
    repo: &str,
    algorithm: Algorithm,
    now: Millis,
) -> Result<(), MetaError> {
    let row = UploadRow {
        repo: repo.to_owned(),
        created_ms: now,
        algorithm,
        appended: 0,
    };
    txn.insert(&UPLOADS, id, &encode(&row))
}

/// Record that session `id` has acknowledged `appended` bytes. A session closed meanwhile
/// (absent row) stays closed.
pub(super) fn set_upload_length(txn: &impl WriteRows, id: &str, appended: u64) -> Result<(), MetaError> {
    let Some(bytes) = txn.get(&UPLOADS, id)? else {
        return Ok(());
    };
    let row = UploadRow {
        appended,
        ..UploadRow::decode(&bytes)?
    };
    txn.insert(&UPLOADS, id, &encode(&row))
}

pub(super) fn delete_upload(txn: &impl WriteRows, id: &str) -> Result<(), MetaError> {
    txn.remove(&UPLOADS, id)?;
    Ok(())
}

/// Record a blob whose file was just made durable, link it into `repo`, and close the upload
/// session it came from. Called only after the file is in place.
pub(super) fn commit_blob(
    txn: &impl WriteRows,
    repo: &str,
    digest: &str,
    size: u64,
    upload: Option<&str>,
    now: Millis,
) -> Result<(), MetaError> {
    record_blob(txn, digest, size, now)?;
    link(txn, repo, digest, now)?;
    if let Some(id) = upload {
        delete_upload(txn, id)?;
    }
    Ok(())
}

/// Link an existing live blob into `repo`. With `from`, the blob must be linked there;
/// without it, it must merely exist. Returns whether it was linked.
pub(super) fn mount_blob(
    txn: &impl WriteRows,
    repo: &str,
    digest: &str,
    from: Option<&str>,
    now: Millis,
) -> Result<bool, MetaError> {
    let live = blob(txn, digest)?.is_some_and(|r| r.state == BlobState::Live);
    let source_ok = match from {
        Some(src) => txn.contains(&BLOB_LINKS, (src, digest))?,
        None => true,
    };
    if live && source_ok {
        link(txn, repo, digest, now)?;
    }
    Ok(live && source_ok)
}

/// Remove the link of `digest` from `repo`. Refused while a manifest of the repository still
/// references the blob. The file stays until garbage collection.
pub(super) fn unlink_blob(txn: &impl WriteRows, repo: &str, digest: &str) -> Result<(), MetaError> {
    let link = link_row(txn, repo, digest)?.ok_or_else(|| MetaError::BlobNotLinked(digest.to_owned()))?;
    if link.refs > 0 {
        return Err(MetaError::BlobInUse {
            digest: digest.to_owned(),
            manifests: link.refs,
        });
    }
    remove_link(txn, repo, digest)
}

/// Store a manifest: check its blobs and children, insert it with its references, reference
/// counts and referrer entry, and point each of its tags at it.
pub(super) fn put_manifest(txn: &impl WriteRows, m: &NewManifest, now: Millis) -> Result<(), MetaError> {
    if !m.sparse {
        check_references(txn, m)?;
    }
    for tag in m.tags.iter().filter(|t| m.protected.covers(t.as_str())) {
        let current = tag_row(txn, m.repo.as_str(), tag.as_str())?;
        if current.is_some_and(|row| row.digest != m.digest.as_str()) {
            return Err(MetaError::TagImmutable(tag.to_string()));
        }
    }
    let key = (m.repo.as_str(), m.digest.as_str());
    let refs = txn.get(&MANIFEST_REFS, key)?.map(|v| decode::<RefsRow>(&v));
    match refs.transpose()? {
        // Already stored: a re-push only restarts its grace period.
        Some(mut refs) => {
            refs.pushed_ms = now;
            txn.insert(&MANIFEST_REFS, key, &encode(&refs))?;
        }
        None => insert_manifest(txn, m, now)?,
    }
    for tag in &m.tags {
        set_tag(txn, m.repo.as_str(), tag.as_str(), m.digest.as_str(), now)?;
    }
    ensure_repo(txn, m.repo.as_str(), now)
}

/// Delete the manifest `digest` and every tag pointing at it, releasing its references.
pub(super) fn delete_manifest(
    txn: &impl WriteRows,
    repo: &str,
    digest: &str,
    protected: &Protected,
) -> Result<(), MetaError> {
    if let Some(tag) = protected_tag_above(txn, repo, digest, protected, 0)? {
        return Err(MetaError::TagImmutable(tag));
    }
    if remove_manifest(txn, repo, digest)? {
        Ok(())
    } else {
        Err(MetaError::ManifestUnknown)
    }
}

/// A protected tag on `digest` or on an index that lists it (at any depth): deleting the
/// manifest would break what that tag names.
fn protected_tag_above(
    txn: &impl WriteRows,
    repo: &str,
    digest: &str,
    protected: &Protected,
    depth: usize,
) -> Result<Option<String>, MetaError> {
    if !protected.guards_anything() || depth > super::gc::MAX_DEPTH {
        return Ok(None);
    }
    if let Some(tag) = tags_of(txn, repo, digest)?.into_iter().find(|t| protected.covers(t)) {
        return Ok(Some(tag));
    }
    for parent in parents_of(txn, repo, digest)? {
        if let Some(tag) = protected_tag_above(txn, repo, &parent, protected, depth + 1)? {
            return Ok(Some(tag));
        }
    }
    Ok(None)
}

/// The indexes of `repo` that list the manifest `digest` (the parent index).
pub(super) fn parents_of(txn: &impl Rows, repo: &str, digest: &str) -> Result<Vec<String>, MetaError> {
    let mut parents = Vec::new();
    txn.scan(
        &MANIFEST_PARENTS,
        (repo, digest, "")..,
        &mut |(r, child, parent), ()| {
            if r != repo || child != digest {
                return STOP;
            }
            parents.push(parent.to_owned());
            NEXT
        },
    )?;
    Ok(parents)
}

/// Delete one tag, leaving its manifest in place.
pub(super) fn delete_tag(txn: &impl WriteRows, repo: &str, tag: &str, protected: &Protected) -> Result<(), MetaError> {
    if protected.covers(tag) && txn.contains(&TAGS, (repo, tag))? {
        return Err(MetaError::TagImmutable(tag.to_owned()));
    }
    let old = txn.take(&TAGS, (repo, tag))?.map(|v| decode::<TagRow>(&v));
    let old = old.ok_or(MetaError::ManifestUnknown)??;
    txn.remove(&TAGS_BY_MANIFEST, (repo, old.digest.as_str(), tag))?;
    Ok(())
}

/// Delete each tag that still points at the digest retention saw, set at the time it saw, and
/// is not protected; whether each was deleted.
pub(super) fn retention_delete_tags(
    txn: &impl WriteRows,
    repo: &str,
    tags: &[(crate::oci::Tag, String, Millis)],
    protected: &Protected,
) -> Result<Vec<bool>, MetaError> {
    let mut done = Vec::with_capacity(tags.len());
    for (tag, digest, updated_ms) in tags {
        let unchanged =
            tag_row(txn, repo, tag.as_str())?.is_some_and(|row| &row.digest == digest && row.updated_ms == *updated_ms);
        let delete = unchanged && !protected.covers(tag.as_str());
        if delete {
            delete_tag(txn, repo, tag.as_str(), &Protected::default())?;
        }
        done.push(delete);
    }
    Ok(done)
}

fn tag_row(txn: &impl WriteRows, repo: &str, tag: &str) -> Result<Option<TagRow>, MetaError> {
    txn.get(&TAGS, (repo, tag))?.map(|v| decode(&v)).transpose()
}

fn blob(txn: &impl WriteRows, digest: &str) -> Result<Option<BlobRow>, MetaError> {
    txn.get(&BLOBS, digest)?.map(|v| decode(&v)).transpose()
}

fn link_row(txn: &impl WriteRows, repo: &str, digest: &str) -> Result<Option<LinkRow>, MetaError> {
    txn.get(&BLOB_LINKS, (repo, digest))?.map(|v| decode(&v)).transpose()
}

/// Create the record of a blob whose file is in place, or revive an interrupted tombstone.
fn record_blob(txn: &impl WriteRows, digest: &str, size: u64, now: Millis) -> Result<(), MetaError> {
    let row = match blob(txn, digest)? {
        Some(row) if row.state == BlobState::Live => return Ok(()),
        // A tombstone can only be seen here if its sweep was interrupted; the file was just put
        // back in place under the digest lock, so the blob is live again. A `Remote` or
        // `Missing` record gets its bytes, keeping the counts the manifests made.
        Some(row) => BlobRow {
            size,
            state: BlobState::Live,
            created_ms: now,
            referenced: false,
            ..row
        },
        None => BlobRow {
            size,
            refcount: 0,
            links: 0,
            created_ms: now,
            state: BlobState::Live,
            referenced: false,
        },
    };
    txn.insert(&BLOBS, digest, &encode(&row))?;
    txn.remove(&TOMBSTONES, digest)?;
    Ok(())
}

/// A sparse manifest's blob: make sure it has a record (`Remote` when absent: the upstream
/// holds the bytes) and a link in `repo`, so that the counts the manifest adds land somewhere
/// and survive the fetch.
fn declare_remote(txn: &impl WriteRows, repo: &str, digest: &str, declared: u64, now: Millis) -> Result<(), MetaError> {
    let declared_row = match blob(txn, digest)? {
        None => Some(BlobRow {
            size: declared,
            refcount: 0,
            links: 0,
            created_ms: now,
            state: BlobState::Remote,
            referenced: false,
        }),
        // Its bytes are being deleted: from now on the upstream holds them again (the sweep's
        // last step keeps a `Remote` row).
        Some(row) if matches!(row.state, BlobState::Deleting { .. }) => Some(BlobRow {
            state: BlobState::Remote,
            ..row
        }),
        Some(_) => None,
    };
    if let Some(row) = declared_row {
        txn.insert(&BLOBS, digest, &encode(&row))?;
    }
    if !txn.contains(&BLOB_LINKS, (repo, digest))? {
        link(txn, repo, digest, now)?;
    }
    Ok(())
}

/// Insert or refresh the link `(repo, digest)`; a new link counts in `BlobRow::links`. An
/// upload or mount starts a push, so the link is not `referenced` until a manifest is.
fn link(txn: &impl WriteRows, repo: &str, digest: &str, now: Millis) -> Result<(), MetaError> {
    let old = link_row(txn, repo, digest)?;
    let row = LinkRow {
        linked_ms: now,
        refs: old.as_ref().map_or(0, |l| l.refs),
        referenced: false,
    };
    txn.insert(&BLOB_LINKS, (repo, digest), &encode(&row))?;
    if old.is_none() {
        update_blob(txn, digest, |b| b.links += 1)?;
    }
    ensure_repo(txn, repo, now)
}

/// Remove the link `(repo, digest)` and its count in `BlobRow::links`.
pub(super) fn remove_link(txn: &impl WriteRows, repo: &str, digest: &str) -> Result<(), MetaError> {
    if txn.remove(&BLOB_LINKS, (repo, digest))? {
        update_blob(txn, digest, |b| b.links = b.links.saturating_sub(1))?;
    }
    Ok(())
}

fn update_blob(txn: &impl WriteRows, digest: &str, f: impl FnOnce(&mut BlobRow)) -> Result<(), MetaError> {
    if let Some(mut row) = blob(txn, digest)? {
        f(&mut row);
        txn.insert(&BLOBS, digest, &encode(&row))?;
    }
    Ok(())
}

fn update_link(txn: &impl WriteRows, repo: &str, digest: &str, f: impl FnOnce(&mut LinkRow)) -> Result<(), MetaError> {
    if let Some(mut row) = link_row(txn, repo, digest)? {
        f(&mut row);
        txn.insert(&BLOB_LINKS, (repo, digest), &encode(&row))?;
    }
    Ok(())
}

fn ensure_repo(txn: &impl WriteRows, repo: &str, now: Millis) -> Result<(), MetaError> {
    if !txn.contains(&REPOS, repo)? {
        txn.insert(&REPOS, repo, &encode(&RepoRow { created_ms: now }))?;
    }
    Ok(())
}

/// Every required blob must be linked here, live and of the declared size; every child
/// manifest must exist here.
fn check_references(txn: &impl WriteRows, m: &NewManifest) -> Result<(), MetaError> {
    for (digest, declared) in &m.blobs {
        let row = if txn.contains(&BLOB_LINKS, (m.repo.as_str(), digest.as_str()))? {
            blob(txn, digest.as_str())?
        } else {
            None
        };
        match row {
            Some(r) if r.state == BlobState::Live && r.size == *declared => {}
            Some(r) if r.state == BlobState::Live => {
                return Err(MetaError::BlobSizeMismatch {
                    digest: digest.to_string(),
                    actual: r.size,
                    declared: *declared,
                });
            }
            _ => return Err(MetaError::BlobNotLinked(digest.to_string())),
        }
    }
    for child in &m.children {
        if !txn.contains(&MANIFEST_REFS, (m.repo.as_str(), child.as_str()))? {
            return Err(MetaError::ChildUnknown(child.to_string()));
        }
    }
    Ok(())
}

fn insert_manifest(txn: &impl WriteRows, m: &NewManifest, now: Millis) -> Result<(), MetaError> {
    // Where the manifest's blobs become owned: refused before anything is written.
    super::quota::check(txn, m)?;
    let mut blob_digests: Vec<String> = m.blobs.iter().map(|(d, _)| d.to_string()).collect();
    blob_digests.sort_unstable();
    blob_digests.dedup();
    if m.sparse {
        for (digest, declared) in &m.blobs {
            declare_remote(txn, m.repo.as_str(), digest.as_str(), *declared, now)?;
        }
    }
    for digest in &blob_digests {
        update_blob(txn, digest, |b| {
            b.refcount += 1;
            b.referenced = true;
        })?;
        update_link(txn, m.repo.as_str(), digest, |l| {
            l.refs += 1;
            l.referenced = true;
        })?;
    }
    for child in &m.children {
        txn.insert(
            &MANIFEST_PARENTS,
            (m.repo.as_str(), child.as_str(), m.digest.as_str()),
            (),
        )?;
    }
    let refs = RefsRow {
        blobs: blob_digests,
        children: m.children.iter().map(ToString::to_string).collect(),
        subject: m.row.subject.clone(),
        pushed_ms: now,
    };
    let key = (m.repo.as_str(), m.digest.as_str());
    txn.insert(&MANIFEST_REFS, key, &encode(&refs))?;
    txn.insert(&MANIFESTS, key, &encode(&m.row))?;
    if let (Some(subject), Some(referrer)) = (&m.row.subject, &m.referrer) {
        txn.insert(
            &REFERRERS,
            (m.repo.as_str(), subject.as_str(), m.digest.as_str()),
            &encode(referrer),
        )?;
    }
    Ok(())
}

/// Remove a manifest with everything that hangs off it: its references (decrementing the
/// counts), its parent entries, its referrer entry and its tags. Returns whether it existed.
pub(super) fn remove_manifest(txn: &impl WriteRows, repo: &str, digest: &str) -> Result<bool, MetaError> {
    if !txn.remove(&MANIFESTS, (repo, digest))? {
        return Ok(false);
    }
    let refs = txn.take(&MANIFEST_REFS, (repo, digest))?.map(|v| decode::<RefsRow>(&v));
    let refs = refs.transpose()?.unwrap_or_default();
    for blob in &refs.blobs {
        update_blob(txn, blob, |b| b.refcount = b.refcount.saturating_sub(1))?;
        update_link(txn, repo, blob, |l| l.refs = l.refs.saturating_sub(1))?;
    }
    for child in &refs.children {
        txn.remove(&MANIFEST_PARENTS, (repo, child.as_str(), digest))?;
    }
    if let Some(subject) = &refs.subject {
        txn.remove(&REFERRERS, (repo, subject.as_str(), digest))?;
    }
    for tag in tags_of(txn, repo, digest)? {
        txn.remove(&TAGS, (repo, tag.as_str()))?;
        txn.remove(&TAGS_BY_MANIFEST, (repo, digest, tag.as_str()))?;
    }
    Ok(true)
}

fn set_tag(txn: &impl WriteRows, repo: &str, tag: &str, digest: &str, now: Millis) -> Result<(), MetaError> {
    let row = TagRow {
        digest: digest.to_owned(),
        updated_ms: now,
    };
    if let Some(old) = tag_row(txn, repo, tag)? {
        txn.remove(&TAGS_BY_MANIFEST, (repo, old.digest.as_str(), tag))?;
    }
    txn.insert(&TAGS, (repo, tag), &encode(&row))?;
    txn.insert(&TAGS_BY_MANIFEST, (repo, digest, tag), ())?;
    Ok(())
}

fn tags_of(txn: &impl WriteRows, repo: &str, digest: &str) -> Result<Vec<String>, MetaError> {
    super::browse::tags_pointing_at(txn, repo, digest)
}
