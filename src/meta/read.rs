//! Read transactions. Each function reads one MVCC snapshot (the caller's transaction), which
//! never waits for the writer.

use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};
use uuid::Uuid;

use super::MetaError;
use super::codec::decode;
use super::schema::{
    BLOB_LINKS, BLOBS, BlobRow, BlobState, MANIFEST_REFS, MANIFESTS, ManifestRow, Millis, REFERRERS, REPOS,
    ReferrerRow, RefsRow, TAGS, TagRow, UPLOADS, UploadRow,
};
use super::store::Page;

/// The manifest `digest` of `repo`.
pub(super) fn manifest(txn: &ReadTransaction, repo: &str, digest: &str) -> Result<Option<ManifestRow>, MetaError> {
    let table = txn.open_table(MANIFESTS)?;
    table.get((repo, digest))?.map(|v| decode(v.value())).transpose()
}

/// The manifest `tag` points at, with its digest.
pub(super) fn manifest_by_tag(
    txn: &ReadTransaction,
    repo: &str,
    tag: &str,
) -> Result<Option<(String, ManifestRow)>, MetaError> {
    let Some(tag_row) = txn
        .open_table(TAGS)?
        .get((repo, tag))?
        .map(|v| decode::<TagRow>(v.value()))
        .transpose()?
    else {
        return Ok(None);
    };
    let row = manifest(txn, repo, &tag_row.digest)?;
    Ok(row.map(|r| (tag_row.digest, r)))
}

/// The blob record of `digest` if it is linked into `repo` and live.
pub(super) fn linked_blob(txn: &ReadTransaction, repo: &str, digest: &str) -> Result<Option<BlobRow>, MetaError> {
    if txn.open_table(BLOB_LINKS)?.get((repo, digest))?.is_none() {
        return Ok(None);
    }
    live_blob(txn, digest)
}

/// The global record of `digest`, if live.
pub(super) fn live_blob(txn: &ReadTransaction, digest: &str) -> Result<Option<BlobRow>, MetaError> {
    let blob = txn
        .open_table(BLOBS)?
        .get(digest)?
        .map(|v| decode::<BlobRow>(v.value()))
        .transpose()?;
    Ok(blob.filter(|b| b.state == BlobState::Live))
}

/// Tags of `repo` after `last`, at most `n`; `None` when the repository does not exist.
pub(super) fn tags(txn: &ReadTransaction, repo: &str, last: Option<&str>, n: usize) -> Result<Option<Page>, MetaError> {
    if txn.open_table(REPOS)?.get(repo)?.is_none() {
        return Ok(None);
    }
    let table = txn.open_table(TAGS)?;
    let start = last.map_or(Bound::Included((repo, "")), |l| Bound::Excluded((repo, l)));
    let mut items = Vec::new();
    for entry in table.range::<(&str, &str)>((start, Bound::Unbounded))? {
        let (key, _) = entry?;
        let (r, tag) = key.value();
        if r != repo {
            break;
        }
        if items.len() == n {
            return Ok(Some(Page { items, more: true }));
        }
        items.push(tag.to_owned());
    }
    Ok(Some(Page { items, more: false }))
}

/// Of the manifests a tag of `repo` points at, the one pushed last (`RefsRow::pushed_ms`; on a
/// tie, the one whose tag moved last, then the greater digest), with its digest.
pub(super) fn newest_tagged_manifest(
    txn: &ReadTransaction,
    repo: &str,
) -> Result<Option<(String, ManifestRow)>, MetaError> {
    let refs = txn.open_table(MANIFEST_REFS)?;
    let mut newest: Option<((Millis, Millis), String)> = None;
    for entry in txn.open_table(TAGS)?.range((repo, "")..)? {
        let (key, value) = entry?;
        if key.value().0 != repo {
            break;
        }
        let tag = decode::<TagRow>(value.value())?;
        let pushed = refs
            .get((repo, tag.digest.as_str()))?
            .map(|v| decode::<RefsRow>(v.value()))
            .transpose()?
            .map_or(0, |r| r.pushed_ms);
        let candidate = ((pushed, tag.updated_ms), tag.digest);
        if newest.as_ref().is_none_or(|n| candidate > *n) {
            newest = Some(candidate);
        }
    }
    let Some((_, digest)) = newest else {
        return Ok(None);
    };
    Ok(manifest(txn, repo, &digest)?.map(|row| (digest, row)))
}

/// Repository names after `last`, at most `n`.
pub(super) fn repos(txn: &ReadTransaction, last: Option<&str>, n: usize) -> Result<Page, MetaError> {
    let table = txn.open_table(REPOS)?;
    let start = last.map_or(Bound::Unbounded, Bound::Excluded);
    let mut items = Vec::new();
    for entry in table.range::<&str>((start, Bound::Unbounded))? {
        let (key, _) = entry?;
        if items.len() == n {
            return Ok(Page { items, more: true });
        }
        items.push(key.value().to_owned());
    }
    Ok(Page { items, more: false })
}

/// Manifests of `repo` whose `subject` is `subject`, ordered by digest.
pub(super) fn referrers(
    txn: &ReadTransaction,
    repo: &str,
    subject: &str,
) -> Result<Vec<(String, ReferrerRow)>, MetaError> {
    let table = txn.open_table(REFERRERS)?;
    let mut out = Vec::new();
    for entry in table.range((repo, subject, "")..)? {
        let (key, value) = entry?;
        let (r, s, referrer) = key.value();
        if r != repo || s != subject {
            break;
        }
        out.push((referrer.to_owned(), decode(value.value())?));
    }
    Ok(out)
}

pub(super) fn upload(txn: &ReadTransaction, id: &str) -> Result<Option<UploadRow>, MetaError> {
    txn.open_table(UPLOADS)?
        .get(id)?
        .map(|v| UploadRow::decode(v.value()))
        .transpose()
}

/// How many upload sessions are open.
pub(super) fn upload_count(txn: &ReadTransaction) -> Result<u64, MetaError> {
    Ok(txn.open_table(UPLOADS)?.len()?)
}

/// Every upload session id. A key that is not a UUID names no session the registry could have
/// opened, so it is left out; fsck, whose scan reads keys as they are, reports it.
pub(super) fn upload_ids(txn: &ReadTransaction) -> Result<Vec<Uuid>, MetaError> {
    let mut out = Vec::new();
    for entry in txn.open_table(UPLOADS)?.iter()? {
        if let Ok(id) = Uuid::parse_str(entry?.0.value()) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Ids of upload sessions created before `before_ms` (keys that are not UUIDs left out).
pub(super) fn stale_uploads(txn: &ReadTransaction, before_ms: Millis) -> Result<Vec<Uuid>, MetaError> {
    let mut out = Vec::new();
    for entry in txn.open_table(UPLOADS)?.iter()? {
        let (key, value) = entry?;
        if UploadRow::decode(value.value())?.created_ms < before_ms
            && let Ok(id) = Uuid::parse_str(key.value())
        {
            out.push(id);
        }
    }
    Ok(out)
}
