//! Read transactions. Each function reads one MVCC snapshot (the caller's transaction), which
//! never waits for the writer.

use std::ops::Bound;

use uuid::Uuid;

use super::MetaError;
use super::codec::decode;
use super::rows::{NEXT, Rows, STOP};
use super::schema::{
    BLOB_LINKS, BLOBS, BlobRow, BlobState, MANIFEST_REFS, MANIFESTS, ManifestRow, Millis, REFERRERS, REPOS,
    ReferrerRow, RefsRow, TAGS, TagRow, UPLOADS, UploadRow,
};
use super::store::Page;

/// The manifest `digest` of `repo`.
pub(super) fn manifest(txn: &impl Rows, repo: &str, digest: &str) -> Result<Option<ManifestRow>, MetaError> {
    txn.get(&MANIFESTS, (repo, digest))?.map(|v| decode(&v)).transpose()
}

/// The manifest `tag` points at, with its digest.
pub(super) fn manifest_by_tag(
    txn: &impl Rows,
    repo: &str,
    tag: &str,
) -> Result<Option<(String, ManifestRow)>, MetaError> {
    let Some(tag_row) = txn.get(&TAGS, (repo, tag))?.map(|v| decode::<TagRow>(&v)).transpose()? else {
        return Ok(None);
    };
    let row = manifest(txn, repo, &tag_row.digest)?;
    Ok(row.map(|r| (tag_row.digest, r)))
}

/// The blob record of `digest` if it is linked into `repo` and live.
pub(super) fn linked_blob(txn: &impl Rows, repo: &str, digest: &str) -> Result<Option<BlobRow>, MetaError> {
    if !txn.contains(&BLOB_LINKS, (repo, digest))? {
        return Ok(None);
    }
    live_blob(txn, digest)
}

/// The global record of `digest`, if live.
pub(super) fn live_blob(txn: &impl Rows, digest: &str) -> Result<Option<BlobRow>, MetaError> {
    let blob = txn.get(&BLOBS, digest)?.map(|v| decode::<BlobRow>(&v)).transpose()?;
    Ok(blob.filter(|b| b.state == BlobState::Live))
}

/// Tags of `repo` after `last`, at most `n`; `None` when the repository does not exist.
pub(super) fn tags(txn: &impl Rows, repo: &str, last: Option<&str>, n: usize) -> Result<Option<Page>, MetaError> {
    if !txn.contains(&REPOS, repo)? {
        return Ok(None);
    }
    let start = last.map_or(Bound::Included((repo, "")), |l| Bound::Excluded((repo, l)));
    let mut page = Page {
        items: Vec::new(),
        more: false,
    };
    txn.scan(&TAGS, (start, Bound::Unbounded), &mut |(r, tag), _| {
        if r != repo {
            return STOP;
        }
        if page.items.len() == n {
            page.more = true;
            return STOP;
        }
        page.items.push(tag.to_owned());
        NEXT
    })?;
    Ok(Some(page))
}

/// Of the manifests a tag of `repo` points at, the one pushed last (`RefsRow::pushed_ms`; on a
/// tie, the one whose tag moved last, then the greater digest), with its digest.
pub(super) fn newest_tagged_manifest(txn: &impl Rows, repo: &str) -> Result<Option<(String, ManifestRow)>, MetaError> {
    let mut tagged = Vec::new();
    txn.scan(&TAGS, (repo, "").., &mut |(r, _), value| {
        if r != repo {
            return STOP;
        }
        tagged.push(decode::<TagRow>(value)?);
        NEXT
    })?;
    let mut newest: Option<((Millis, Millis), String)> = None;
    for tag in tagged {
        let pushed = txn
            .get(&MANIFEST_REFS, (repo, tag.digest.as_str()))?
            .map(|v| decode::<RefsRow>(&v))
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
pub(super) fn repos(txn: &impl Rows, last: Option<&str>, n: usize) -> Result<Page, MetaError> {
    let start = last.map_or(Bound::Unbounded, Bound::Excluded);
    let mut page = Page {
        items: Vec::new(),
        more: false,
    };
    txn.scan(&REPOS, (start, Bound::Unbounded), &mut |repo, _| {
        if page.items.len() == n {
            page.more = true;
            return STOP;
        }
        page.items.push(repo.to_owned());
        NEXT
    })?;
    Ok(page)
}

/// Manifests of `repo` whose `subject` is `subject`, ordered by digest.
pub(super) fn referrers(txn: &impl Rows, repo: &str, subject: &str) -> Result<Vec<(String, ReferrerRow)>, MetaError> {
    let mut out = Vec::new();
    txn.scan(&REFERRERS, (repo, subject, "").., &mut |(r, s, referrer), value| {
        if r != repo || s != subject {
            return STOP;
        }
        out.push((referrer.to_owned(), decode(value)?));
        NEXT
    })?;
    Ok(out)
}

pub(super) fn upload(txn: &impl Rows, id: &str) -> Result<Option<UploadRow>, MetaError> {
    txn.get(&UPLOADS, id)?.map(|v| UploadRow::decode(&v)).transpose()
}

/// How many upload sessions are open.
pub(super) fn upload_count(txn: &impl Rows) -> Result<u64, MetaError> {
    txn.len(&UPLOADS)
}

/// Every upload session id. A key that is not a UUID names no session the registry could have
/// opened, so it is left out; fsck, whose scan reads keys as they are, reports it.
pub(super) fn upload_ids(txn: &impl Rows) -> Result<Vec<Uuid>, MetaError> {
    let mut out = Vec::new();
    txn.scan(&UPLOADS, .., &mut |id, _| {
        if let Ok(id) = Uuid::parse_str(id) {
            out.push(id);
        }
        NEXT
    })?;
    Ok(out)
}

/// Ids of upload sessions created before `before_ms` (keys that are not UUIDs left out).
pub(super) fn stale_uploads(txn: &impl Rows, before_ms: Millis) -> Result<Vec<Uuid>, MetaError> {
    let mut out = Vec::new();
    txn.scan(&UPLOADS, .., &mut |id, value| {
        if UploadRow::decode(value)?.created_ms < before_ms
            && let Ok(id) = Uuid::parse_str(id)
        {
            out.push(id);
        }
        NEXT
    })?;
    Ok(out)
}
