//! What the web UI lists, from the metadata alone: a page of a repository's tags, the tags of
//! one manifest, and a repository's summary (tag and manifest counts, last push, the bytes it
//! links and the bytes only it links). Each is one read transaction over the repository's own
//! key range, so the cost follows the repository's size, never the registry's; a page of tags
//! by name reads only that page.
//!
//! The types are backend-neutral, and so are the functions that compute them (`rows`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::MetaError;
use super::codec::decode;
use super::rows::{NEXT, Rows, STOP};
use super::schema::{
    BLOB_LINKS, BLOBS, BlobRow, BlobState, MANIFEST_REFS, Millis, REPOS, RefsRow, TAGS, TAGS_BY_MANIFEST, TagRow,
};

/// One tag of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagDetail {
    pub tag: String,
    /// The manifest it points at.
    pub digest: String,
    /// When the tag was last pushed (set by a manifest PUT, a re-push of the same manifest
    /// included).
    pub updated_ms: Millis,
}

/// Which tags a page holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagOrder {
    /// In lexical order, those after `after` (a position, not necessarily a tag).
    Name { after: Option<String> },
    /// Newest push (`TagDetail::updated_ms`) first, ties by name; page `page`, from 1. A page
    /// past the last is the last.
    Pushed { page: usize },
}

/// A page of tags whose names contain a filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagPage {
    pub tags: Vec<TagDetail>,
    /// Whether matching tags follow this page.
    pub more: bool,
    /// How many tags match, when the page's read counted them (push order does; name order
    /// reads only the page).
    pub matching: Option<u64>,
    /// The page shown, for push order (1 for name order).
    pub page: usize,
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

/// A page of the tags of `repo` whose names contain `filter`, at most `n` (at least 1);
/// `None` when the repository does not exist. Name order reads the page and one row more;
/// push order reads every tag row of the repository once (no other table) and keeps only
/// the rows up to the page's end.
pub(super) fn tag_page(
    txn: &impl Rows,
    repo: &str,
    filter: &str,
    order: &TagOrder,
    n: usize,
) -> Result<Option<TagPage>, MetaError> {
    if !txn.contains(&REPOS, repo)? {
        return Ok(None);
    }
    let n = n.max(1);
    let page = match order {
        TagOrder::Name { after } => by_name(txn, repo, filter, after.as_deref(), n)?,
        TagOrder::Pushed { page } => by_push(txn, repo, filter, *page, n)?,
    };
    Ok(Some(page))
}

fn by_name(tags: &impl Rows, repo: &str, filter: &str, after: Option<&str>, n: usize) -> Result<TagPage, MetaError> {
    let start = after.map_or(Bound::Included((repo, "")), |a| Bound::Excluded((repo, a)));
    let mut out = TagPage {
        page: 1,
        ..TagPage::default()
    };
    matching_tags(tags, start, repo, filter, |tag, row| {
        if out.tags.len() == n {
            out.more = true;
            return Ok(false);
        }
        out.tags.push(detail(tag, row)?);
        Ok(true)
    })?;
    Ok(out)
}

/// Call `f` with each tag of `repo` from `start` on whose name contains `filter`, and its row,
/// while `f` answers true.
fn matching_tags(
    tags: &impl Rows,
    start: Bound<(&str, &str)>,
    repo: &str,
    filter: &str,
    mut f: impl FnMut(&str, &[u8]) -> Result<bool, MetaError>,
) -> Result<(), MetaError> {
    tags.scan(&TAGS, (start, Bound::Unbounded), &mut |(r, tag), value| {
        if r != repo || (tag.contains(filter) && !f(tag, value)?) {
            return STOP;
        }
        NEXT
    })
}

/// One pass over the repository's tag rows, keeping the `page * n` newest in a bounded heap.
fn by_push(tags: &impl Rows, repo: &str, filter: &str, page: usize, n: usize) -> Result<TagPage, MetaError> {
    let keep = page.max(1).saturating_mul(n);
    // The newest first: greater `(updated_ms, Reverse(tag))`. A min-heap of the kept ones.
    let mut heap: BinaryHeap<Reverse<(Millis, Reverse<String>, String)>> = BinaryHeap::new();
    let mut matching = 0u64;
    matching_tags(tags, Bound::Included((repo, "")), repo, filter, |tag, row| {
        matching += 1;
        let row: TagRow = decode(row)?;
        let newer = heap
            .peek()
            .is_none_or(|Reverse((ms, Reverse(t), _))| (row.updated_ms, Reverse(tag)) > (*ms, Reverse(t.as_str())));
        if heap.len() < keep || newer {
            heap.push(Reverse((row.updated_ms, Reverse(tag.to_owned()), row.digest)));
            if heap.len() > keep {
                heap.pop();
            }
        }
        Ok(true)
    })?;
    let pages = usize::try_from(matching).unwrap_or(usize::MAX).div_ceil(n).max(1);
    let page = page.clamp(1, pages);
    // `into_sorted_vec` of `Reverse`s is newest first.
    let tags = heap
        .into_sorted_vec()
        .into_iter()
        .skip((page - 1) * n)
        .take(n)
        .map(|Reverse((updated_ms, Reverse(tag), digest))| TagDetail {
            tag,
            digest,
            updated_ms,
        })
        .collect();
    Ok(TagPage {
        tags,
        more: page < pages,
        matching: Some(matching),
        page,
    })
}

fn detail(tag: &str, row: &[u8]) -> Result<TagDetail, MetaError> {
    let row: TagRow = decode(row)?;
    Ok(TagDetail {
        tag: tag.to_owned(),
        digest: row.digest,
        updated_ms: row.updated_ms,
    })
}

/// The tags of `repo` pointing at `digest`, in lexical order (the reverse tag index).
pub(super) fn manifest_tags(txn: &impl Rows, repo: &str, digest: &str) -> Result<Vec<String>, MetaError> {
    tags_pointing_at(txn, repo, digest)
}

/// The tags of `repo` pointing at `digest`, from the reverse tag index of a read or write
/// transaction.
pub(super) fn tags_pointing_at(txn: &impl Rows, repo: &str, digest: &str) -> Result<Vec<String>, MetaError> {
    let mut out = Vec::new();
    txn.scan(&TAGS_BY_MANIFEST, (repo, digest, "").., &mut |(r, d, tag), ()| {
        if r != repo || d != digest {
            return STOP;
        }
        out.push(tag.to_owned());
        NEXT
    })?;
    Ok(out)
}

/// The summary of `repo`; `None` when the repository does not exist.
pub(super) fn repo_summary(txn: &impl Rows, repo: &str) -> Result<Option<RepoSummary>, MetaError> {
    if !txn.contains(&REPOS, repo)? {
        return Ok(None);
    }
    let mut s = RepoSummary::default();
    txn.scan(&TAGS, (repo, "").., &mut |(r, _), _| {
        if r != repo {
            return STOP;
        }
        s.tags += 1;
        NEXT
    })?;
    txn.scan(&MANIFEST_REFS, (repo, "").., &mut |(r, _), value| {
        if r != repo {
            return STOP;
        }
        s.manifests += 1;
        s.last_push_ms = s.last_push_ms.max(decode::<RefsRow>(value)?.pushed_ms);
        NEXT
    })?;
    txn.scan(&BLOB_LINKS, (repo, "").., &mut |(r, digest), _| {
        if r != repo {
            return STOP;
        }
        let Some(blob) = txn.get(&BLOBS, digest)?.map(|v| decode::<BlobRow>(&v)).transpose()? else {
            return NEXT;
        };
        if blob.state == BlobState::Live {
            s.bytes += blob.size;
            if blob.links == 1 {
                s.exclusive_bytes += blob.size;
            }
        }
        NEXT
    })?;
    Ok(Some(s))
}
