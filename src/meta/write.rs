//! Write transactions. Each method is one short transaction over rows only: it re-checks what it
//! depends on inside the transaction, so a concurrent writer (another push, garbage
//! collection) can never slip between the check and the change.

use redb::{ReadableTable, Table, WriteTransaction};

use super::codec::{decode, encode};
use super::schema::{
    BLOB_LINKS, BLOBS, BlobRow, BlobState, LinkRow, MANIFEST_REFS, MANIFESTS, ManifestRow, Millis, REFERRERS, REPOS,
    ReferrerRow, RefsRow, RepoRow, TAGS, TAGS_BY_MANIFEST, TagRow, UPLOADS, UploadRow,
};
use super::{Meta, MetaError};

/// Everything a manifest PUT writes, already parsed and validated by the caller.
#[derive(Debug, Clone)]
pub struct NewManifest<'a> {
    pub repo: &'a str,
    pub digest: &'a str,
    pub row: ManifestRow,
    /// Required blobs with their declared sizes (config and distributable layers).
    pub blobs: Vec<(String, u64)>,
    /// Child manifests of an index, which must exist in the repository.
    pub children: Vec<String>,
    /// The descriptor to list under `row.subject`, when there is a subject.
    pub referrer: Option<ReferrerRow>,
    pub tag: Option<&'a str>,
}

type StrTable<'t> = Table<'t, &'static str, &'static [u8]>;

impl Meta {
    /// Create every table, so that read transactions can always open them.
    pub(super) fn ensure_tables(&self) -> Result<(), MetaError> {
        let txn = self.write_txn()?;
        txn.open_table(REPOS)?;
        txn.open_table(TAGS)?;
        txn.open_table(TAGS_BY_MANIFEST)?;
        txn.open_table(MANIFESTS)?;
        txn.open_table(MANIFEST_REFS)?;
        txn.open_table(REFERRERS)?;
        txn.open_table(BLOB_LINKS)?;
        txn.open_table(BLOBS)?;
        txn.open_table(UPLOADS)?;
        Ok(txn.commit()?)
    }

    pub fn create_upload(&self, id: &str, row: &UploadRow) -> Result<(), MetaError> {
        let txn = self.write_txn()?;
        txn.open_table(UPLOADS)?.insert(id, encode(row).as_slice())?;
        Ok(txn.commit()?)
    }

    pub fn delete_upload(&self, id: &str) -> Result<(), MetaError> {
        let txn = self.write_txn()?;
        txn.open_table(UPLOADS)?.remove(id)?;
        Ok(txn.commit()?)
    }

    /// Record a blob whose file was just made durable, link it into `repo`, and close the
    /// upload session it came from. Called only after the file is in place.
    pub fn commit_blob(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        upload: Option<&str>,
        now: Millis,
    ) -> Result<(), MetaError> {
        let txn = self.write_txn()?;
        {
            let mut blobs = txn.open_table(BLOBS)?;
            let existing = blobs.get(digest)?.map(|v| decode::<BlobRow>(v.value())).transpose()?;
            let row = match existing {
                Some(row) if row.state == BlobState::Live => None,
                // A tombstone can only be seen here if its sweep was interrupted; the file was
                // just put back in place under the digest lock, so the blob is live again.
                Some(row) => Some(BlobRow {
                    state: BlobState::Live,
                    ..row
                }),
                None => Some(BlobRow {
                    size,
                    refcount: 0,
                    created_ms: now,
                    state: BlobState::Live,
                }),
            };
            if let Some(row) = row {
                blobs.insert(digest, encode(&row).as_slice())?;
            }
            link(&txn, repo, digest, now)?;
            if let Some(id) = upload {
                txn.open_table(UPLOADS)?.remove(id)?;
            }
        }
        Ok(txn.commit()?)
    }

    /// Link an existing live blob into `repo`. With `from`, the blob must be linked there;
    /// without it, it must merely exist. Returns whether it was linked.
    pub fn mount_blob(&self, repo: &str, digest: &str, from: Option<&str>, now: Millis) -> Result<bool, MetaError> {
        let txn = self.write_txn()?;
        let live = {
            let blobs = txn.open_table(BLOBS)?;
            let row = blobs.get(digest)?.map(|v| decode::<BlobRow>(v.value())).transpose()?;
            row.is_some_and(|r| r.state == BlobState::Live)
        };
        let source_ok = match from {
            Some(src) => txn.open_table(BLOB_LINKS)?.get((src, digest))?.is_some(),
            None => true,
        };
        if !(live && source_ok) {
            return Ok(false);
        }
        link(&txn, repo, digest, now)?;
        txn.commit()?;
        Ok(true)
    }

    /// Remove the link of `digest` from `repo`. The file stays until garbage collection.
    pub fn unlink_blob(&self, repo: &str, digest: &str) -> Result<(), MetaError> {
        let txn = self.write_txn()?;
        if txn.open_table(BLOB_LINKS)?.remove((repo, digest))?.is_none() {
            return Err(MetaError::BlobNotLinked(digest.to_owned()));
        }
        Ok(txn.commit()?)
    }

    /// Store a manifest: check its blobs and children, insert it with its references,
    /// reference counts and referrer entry, and point `tag` at it, in one transaction.
    pub fn put_manifest(&self, m: &NewManifest<'_>, now: Millis) -> Result<(), MetaError> {
        let txn = self.write_txn()?;
        check_references(&txn, m)?;
        let exists = txn.open_table(MANIFESTS)?.get((m.repo, m.digest))?.is_some();
        if !exists {
            insert_manifest(&txn, m)?;
        }
        if let Some(tag) = m.tag {
            set_tag(&txn, m.repo, tag, m.digest, now)?;
        }
        ensure_repo(&txn, m.repo, now)?;
        Ok(txn.commit()?)
    }

    /// Delete the manifest `digest` and every tag pointing at it, releasing its references.
    pub fn delete_manifest(&self, repo: &str, digest: &str) -> Result<(), MetaError> {
        let txn = self.write_txn()?;
        let row = txn
            .open_table(MANIFESTS)?
            .remove((repo, digest))?
            .map(|v| decode::<ManifestRow>(v.value()));
        let row = row.ok_or(MetaError::ManifestUnknown)??;
        let refs = txn
            .open_table(MANIFEST_REFS)?
            .remove((repo, digest))?
            .map(|v| decode::<RefsRow>(v.value()));
        let refs = refs.transpose()?.unwrap_or_default();
        release_blobs(&mut txn.open_table(BLOBS)?, &refs.blobs)?;
        if let Some(subject) = &row.subject {
            txn.open_table(REFERRERS)?.remove((repo, subject.as_str(), digest))?;
        }
        for tag in tags_of(&txn, repo, digest)? {
            txn.open_table(TAGS)?.remove((repo, tag.as_str()))?;
            txn.open_table(TAGS_BY_MANIFEST)?.remove((repo, digest, tag.as_str()))?;
        }
        Ok(txn.commit()?)
    }

    /// Delete one tag, leaving its manifest in place.
    pub fn delete_tag(&self, repo: &str, tag: &str) -> Result<(), MetaError> {
        let txn = self.write_txn()?;
        let old = txn
            .open_table(TAGS)?
            .remove((repo, tag))?
            .map(|v| decode::<TagRow>(v.value()));
        let old = old.ok_or(MetaError::ManifestUnknown)??;
        txn.open_table(TAGS_BY_MANIFEST)?
            .remove((repo, old.digest.as_str(), tag))?;
        Ok(txn.commit()?)
    }
}

fn link(txn: &WriteTransaction, repo: &str, digest: &str, now: Millis) -> Result<(), MetaError> {
    txn.open_table(BLOB_LINKS)?
        .insert((repo, digest), encode(&LinkRow { linked_ms: now }).as_slice())?;
    ensure_repo(txn, repo, now)
}

fn ensure_repo(txn: &WriteTransaction, repo: &str, now: Millis) -> Result<(), MetaError> {
    let mut repos = txn.open_table(REPOS)?;
    if repos.get(repo)?.is_none() {
        repos.insert(repo, encode(&RepoRow { created_ms: now }).as_slice())?;
    }
    Ok(())
}

/// Every required blob must be linked here, live and of the declared size; every child
/// manifest must exist here.
fn check_references(txn: &WriteTransaction, m: &NewManifest<'_>) -> Result<(), MetaError> {
    let links = txn.open_table(BLOB_LINKS)?;
    let blobs = txn.open_table(BLOBS)?;
    for (digest, declared) in &m.blobs {
        let row = match links.get((m.repo, digest.as_str()))? {
            Some(_) => blobs
                .get(digest.as_str())?
                .map(|v| decode::<BlobRow>(v.value()))
                .transpose()?,
            None => None,
        };
        match row {
            Some(r) if r.state == BlobState::Live && r.size == *declared => {}
            Some(r) if r.state == BlobState::Live => {
                return Err(MetaError::BlobSizeMismatch {
                    digest: digest.clone(),
                    actual: r.size,
                    declared: *declared,
                });
            }
            _ => return Err(MetaError::BlobNotLinked(digest.clone())),
        }
    }
    let manifests = txn.open_table(MANIFESTS)?;
    for child in &m.children {
        if manifests.get((m.repo, child.as_str()))?.is_none() {
            return Err(MetaError::ChildUnknown(child.clone()));
        }
    }
    Ok(())
}

fn insert_manifest(txn: &WriteTransaction, m: &NewManifest<'_>) -> Result<(), MetaError> {
    let mut blob_digests: Vec<String> = m.blobs.iter().map(|(d, _)| d.clone()).collect();
    blob_digests.sort_unstable();
    blob_digests.dedup();
    let mut blobs = txn.open_table(BLOBS)?;
    for digest in &blob_digests {
        let mut row: BlobRow = decode(blobs.get(digest.as_str())?.expect("checked above").value())?;
        row.refcount += 1;
        blobs.insert(digest.as_str(), encode(&row).as_slice())?;
    }
    let refs = RefsRow {
        blobs: blob_digests,
        children: m.children.clone(),
    };
    txn.open_table(MANIFEST_REFS)?
        .insert((m.repo, m.digest), encode(&refs).as_slice())?;
    txn.open_table(MANIFESTS)?
        .insert((m.repo, m.digest), encode(&m.row).as_slice())?;
    if let (Some(subject), Some(referrer)) = (&m.row.subject, &m.referrer) {
        txn.open_table(REFERRERS)?
            .insert((m.repo, subject.as_str(), m.digest), encode(referrer).as_slice())?;
    }
    Ok(())
}

fn set_tag(txn: &WriteTransaction, repo: &str, tag: &str, digest: &str, now: Millis) -> Result<(), MetaError> {
    let row = TagRow {
        digest: digest.to_owned(),
        updated_ms: now,
    };
    let old = txn
        .open_table(TAGS)?
        .insert((repo, tag), encode(&row).as_slice())?
        .map(|v| decode::<TagRow>(v.value()));
    let mut reverse = txn.open_table(TAGS_BY_MANIFEST)?;
    if let Some(old) = old.transpose()? {
        reverse.remove((repo, old.digest.as_str(), tag))?;
    }
    reverse.insert((repo, digest, tag), ())?;
    Ok(())
}

fn release_blobs(blobs: &mut StrTable<'_>, digests: &[String]) -> Result<(), MetaError> {
    for digest in digests {
        let row = blobs
            .get(digest.as_str())?
            .map(|v| decode::<BlobRow>(v.value()))
            .transpose()?;
        if let Some(mut row) = row {
            row.refcount = row.refcount.saturating_sub(1);
            blobs.insert(digest.as_str(), encode(&row).as_slice())?;
        }
    }
    Ok(())
}

fn tags_of(txn: &WriteTransaction, repo: &str, digest: &str) -> Result<Vec<String>, MetaError> {
    let reverse = txn.open_table(TAGS_BY_MANIFEST)?;
    let mut out = Vec::new();
    for entry in reverse.range((repo, digest, "")..)? {
        let (key, ()) = (entry?.0, ());
        let (r, d, tag) = key.value();
        if r != repo || d != digest {
            break;
        }
        out.push(tag.to_owned());
    }
    Ok(out)
}
