//! The metadata side of garbage collection: the mark snapshot, the reachability rule, and the
//! short sweep transactions that re-check every decision before they make it.
//!
//! Reachability ("anchored"): a manifest is kept when it is tagged, or was pushed within the
//! grace period, or is a child of an anchored index, or refers (by `subject`) to an anchored
//! manifest; with `delete_untagged` off, every manifest is kept. The same rule runs over the
//! in-memory snapshot (to choose candidates and to report a dry run) and inside each sweep
//! transaction (to decide), so a tag moved, an index pushed or a referrer added after the
//! snapshot always wins.
//!
//! `Policy`, `Snapshot`, the `Graph` trait and the rule itself (`anchored`, `unanchored`) are
//! backend-neutral: any `MetaStore` evaluates the rule over its own transaction through
//! `Graph`. The functions below them (`TxnGraph` and the sweep transactions) run over any
//! backend's rows (`rows`).
//! Whether a blob was HEAD-checked lately is the registry's knowledge, not the store's: the
//! registry leaves touched blobs out of the candidates while it holds their digests' locks,
//! which a HEAD must take to record a touch.

use std::collections::{HashMap, HashSet};

use super::MetaError;
use super::codec::{decode, encode};
use super::rows::{Bytes, NEXT, Rows, STOP, Str2, Table, WriteRows};
use super::schema::{
    BLOB_LINKS, BLOBS, BlobRow, BlobState, LinkRow, MANIFEST_PARENTS, MANIFEST_REFS, Millis, REPOS, RefsRow, RepoRow,
    TAGS, TAGS_BY_MANIFEST, TOMBSTONES, TombstoneRow, UPLOADS, UploadRow,
};
use super::write::{remove_link, remove_manifest};
use crate::oci::{Digest, RepoName};

/// Deeper reference chains than this are treated as anchored (kept), never as garbage.
pub(super) const MAX_DEPTH: usize = 64;

/// What decides whether something is still inside its grace period or collectable at all.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Anything pushed, linked or created at or after this instant is kept.
    pub cutoff_ms: Millis,
    pub delete_untagged: bool,
}

impl Policy {
    /// Whether a link or blob last uploaded (or linked) at `since_ms` is out of its grace
    /// period: the period protects a push in flight, which is over once a manifest has
    /// `referenced` it. (A HEAD touch, which the registry checks, starts the period again.)
    pub fn past_grace(&self, since_ms: Millis, referenced: bool) -> bool {
        referenced || since_ms < self.cutoff_ms
    }
}

/// The facts about one manifest that reachability needs.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub tagged: bool,
    pub parents: Vec<String>,
    pub refs: RefsRow,
}

/// Something the reachability rule can be evaluated over: a snapshot or a write transaction.
pub trait Graph {
    fn node(&mut self, repo: &str, digest: &str) -> Result<Option<Node>, MetaError>;
}

/// Answers already computed within one graph view, keyed by (repo, digest).
#[derive(Debug, Default)]
pub struct Memo(HashMap<(String, String), bool>);

/// Whether manifest `(repo, digest)` must be kept. `memo` caches answers within one graph view.
pub fn anchored(
    graph: &mut impl Graph,
    policy: Policy,
    repo: &str,
    digest: &str,
    memo: &mut Memo,
) -> Result<bool, MetaError> {
    anchored_at(graph, policy, repo, digest, memo, 0)
}

fn anchored_at(
    graph: &mut impl Graph,
    policy: Policy,
    repo: &str,
    digest: &str,
    memo: &mut Memo,
    depth: usize,
) -> Result<bool, MetaError> {
    if !policy.delete_untagged || depth > MAX_DEPTH {
        return Ok(true);
    }
    let key = (repo.to_owned(), digest.to_owned());
    if let Some(&known) = memo.0.get(&key) {
        return Ok(known);
    }
    let Some(node) = graph.node(repo, digest)? else {
        return Ok(false);
    };
    let mut keep = node.tagged || node.refs.pushed_ms >= policy.cutoff_ms;
    for parent in &node.parents {
        keep = keep || anchored_at(graph, policy, repo, parent, memo, depth + 1)?;
    }
    if let (false, Some(subject)) = (keep, &node.refs.subject) {
        keep = anchored_at(graph, policy, repo, subject, memo, depth + 1)?;
    }
    memo.0.insert(key, keep);
    Ok(keep)
}

/// A consistent copy of what garbage collection reads, taken from one read transaction.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every repository with when it was created.
    pub repos: Vec<(String, Millis)>,
    pub manifests: HashMap<(String, String), Node>,
    pub links: Vec<(String, String, LinkRow)>,
    pub blobs: Vec<(String, BlobRow)>,
}

impl Snapshot {
    /// Bytes of the live blobs linked into repositories named `<prefix>/...`, each counted
    /// once, and how many such blobs.
    pub fn linked_under(&self, prefix: &str) -> (u64, u64) {
        let under = |repo: &str| repo.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'));
        let linked: HashSet<&str> = self
            .links
            .iter()
            .filter(|(repo, _, _)| under(repo))
            .map(|(_, digest, _)| digest.as_str())
            .collect();
        self.blobs
            .iter()
            .filter(|(d, b)| b.state == BlobState::Live && linked.contains(d.as_str()))
            .fold((0, 0), |(bytes, n), (_, b)| (bytes + b.size, n + 1))
    }
}

impl Graph for &Snapshot {
    fn node(&mut self, repo: &str, digest: &str) -> Result<Option<Node>, MetaError> {
        Ok(self.manifests.get(&(repo.to_owned(), digest.to_owned())).cloned())
    }
}

/// Reachability evaluated inside a write transaction.
struct TxnGraph<'t, T>(&'t T);

impl<T: WriteRows> Graph for TxnGraph<'_, T> {
    fn node(&mut self, repo: &str, digest: &str) -> Result<Option<Node>, MetaError> {
        let txn = self.0;
        let refs = txn.get(&MANIFEST_REFS, (repo, digest))?.map(|v| decode::<RefsRow>(&v));
        let Some(refs) = refs.transpose()? else {
            return Ok(None);
        };
        let mut tagged = false;
        txn.scan(&TAGS_BY_MANIFEST, (repo, digest, "").., &mut |(r, d, _), ()| {
            tagged = r == repo && d == digest;
            STOP
        })?;
        let parents = super::write::parents_of(txn, repo, digest)?;
        Ok(Some(Node { tagged, parents, refs }))
    }
}

/// Read everything the mark phase needs from one snapshot. Manifest bodies are not read.
pub(super) fn snapshot(txn: &impl Rows) -> Result<Snapshot, MetaError> {
    let mut snap = Snapshot::default();
    txn.scan(&REPOS, .., &mut |repo, value| {
        let row: RepoRow = decode(value)?;
        snap.repos.push((repo.to_owned(), row.created_ms));
        NEXT
    })?;
    txn.scan(&MANIFEST_REFS, .., &mut |(repo, digest), value| {
        let node = Node {
            refs: decode(value)?,
            ..Node::default()
        };
        snap.manifests.insert((repo.to_owned(), digest.to_owned()), node);
        NEXT
    })?;
    txn.scan(&TAGS_BY_MANIFEST, .., &mut |(repo, digest, _), ()| {
        if let Some(node) = snap.manifests.get_mut(&(repo.to_owned(), digest.to_owned())) {
            node.tagged = true;
        }
        NEXT
    })?;
    txn.scan(&MANIFEST_PARENTS, .., &mut |(repo, child, parent), ()| {
        if let Some(node) = snap.manifests.get_mut(&(repo.to_owned(), child.to_owned())) {
            node.parents.push(parent.to_owned());
        }
        NEXT
    })?;
    txn.scan(&BLOB_LINKS, .., &mut |(repo, digest), value| {
        snap.links.push((repo.to_owned(), digest.to_owned(), decode(value)?));
        NEXT
    })?;
    txn.scan(&BLOBS, .., &mut |digest, value| {
        snap.blobs.push((digest.to_owned(), decode(value)?));
        NEXT
    })?;
    Ok(snap)
}

/// Delete those `candidates` that are still not anchored. Returns how many went.
pub(super) fn delete_manifests(
    txn: &impl WriteRows,
    candidates: &[(RepoName, Digest)],
    policy: Policy,
) -> Result<u64, MetaError> {
    let mut deleted = 0;
    for (repo, digest) in candidates {
        let (repo, digest) = (repo.as_str(), digest.as_str());
        // Fresh memo per candidate: each deletion changes the graph for the next.
        let mut memo = Memo::default();
        let keep = anchored(&mut TxnGraph(txn), policy, repo, digest, &mut memo)?;
        if !keep && remove_manifest(txn, repo, digest)? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Remove those links among `candidates` that no manifest of their repository references and
/// that are past their grace period (`Policy::past_grace`; the caller left out touched blobs). Returns how many went.
pub(super) fn remove_links(
    txn: &impl WriteRows,
    candidates: &[(RepoName, Digest)],
    policy: Policy,
) -> Result<u64, MetaError> {
    let mut removed = 0;
    for (repo, digest) in candidates {
        let (repo, digest) = (repo.as_str(), digest.as_str());
        let link = txn.get(&BLOB_LINKS, (repo, digest))?.map(|v| decode::<LinkRow>(&v));
        let Some(link) = link.transpose()? else { continue };
        if link.refs == 0 && policy.past_grace(link.linked_ms, link.referenced) {
            remove_link(txn, repo, digest)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Tombstone those blobs among `candidates` that are live, unreferenced, unlinked and past
/// their grace period (`Policy::past_grace`; the caller left out touched ones). Returns the tombstoned ones with their
/// sizes. Their files may be unlinked once this commits. A `Remote` record (never fetched) that
/// nothing counts is dropped outright: it has no bytes.
pub(super) fn tombstone_blobs(
    txn: &impl WriteRows,
    candidates: &[Digest],
    policy: Policy,
    now: Millis,
) -> Result<Vec<(Digest, u64)>, MetaError> {
    let mut doomed = Vec::new();
    for digest in candidates {
        let row = txn
            .get(&BLOBS, digest.as_str())?
            .map(|v| decode::<BlobRow>(&v))
            .transpose()?;
        let Some(mut row) = row else { continue };
        if row.state == BlobState::Remote && row.refcount == 0 && row.links == 0 {
            // Nothing of it was ever fetched: no bytes to delete, no tombstone needed.
            txn.remove(&BLOBS, digest.as_str())?;
            continue;
        }
        let collectable = row.state == BlobState::Live
            && row.refcount == 0
            && row.links == 0
            && policy.past_grace(row.created_ms, row.referenced);
        if collectable {
            row.state = BlobState::Deleting { since_ms: now };
            txn.insert(&BLOBS, digest.as_str(), &encode(&row))?;
            let tomb = TombstoneRow {
                size: row.size,
                since_ms: now,
            };
            txn.insert(&TOMBSTONES, digest.as_str(), &encode(&tomb))?;
            doomed.push((digest.clone(), row.size));
        }
    }
    Ok(doomed)
}

/// Remove those repositories among `candidates` that hold nothing and were created before the
/// cutoff (an upload session about to link a blob is an upload row; a push racing this either
/// committed first, and the repository stays, or re-creates the row with its commit).
pub(super) fn remove_empty_repos(
    txn: &impl WriteRows,
    candidates: &[RepoName],
    policy: Policy,
) -> Result<u64, MetaError> {
    let mut removed = 0;
    for repo in candidates {
        let repo = repo.as_str();
        let row = txn.get(&REPOS, repo)?.map(|v| decode::<RepoRow>(&v)).transpose()?;
        let Some(row) = row else { continue };
        if row.created_ms >= policy.cutoff_ms || holds_anything(txn, repo)? {
            continue;
        }
        txn.remove(&REPOS, repo)?;
        removed += 1;
    }
    Ok(removed)
}

/// Whether `repo` has a manifest, a tag, a blob link or an upload session.
fn holds_anything(txn: &impl WriteRows, repo: &str) -> Result<bool, MetaError> {
    for table in [&MANIFEST_REFS, &TAGS, &BLOB_LINKS] {
        if has_key_under(txn, table, repo)? {
            return Ok(true);
        }
    }
    let mut uploading = false;
    txn.scan(&UPLOADS, .., &mut |_, v| {
        uploading = UploadRow::decode(v)?.repo == repo;
        if uploading { STOP } else { NEXT }
    })?;
    Ok(uploading)
}

/// Whether `table`, keyed by (repo, ...), has a row of `repo`.
fn has_key_under(txn: &impl WriteRows, table: &Table<Str2, Bytes>, repo: &str) -> Result<bool, MetaError> {
    let mut found = false;
    txn.scan(table, (repo, "").., &mut |(r, _), _| {
        found = r == repo;
        STOP
    })?;
    Ok(found)
}

/// After their files are unlinked: drop the blob rows (still tombstoned) and tombstones.
pub(super) fn finish_tombstones(txn: &impl WriteRows, digests: &[Digest]) -> Result<(), MetaError> {
    for digest in digests {
        let row = txn
            .get(&BLOBS, digest.as_str())?
            .map(|v| decode::<BlobRow>(&v))
            .transpose()?;
        // Only a row still being deleted goes: a push may have revived it (`Live`), or a
        // cached manifest declared it again (`Remote`), since the tombstone.
        if row.is_some_and(|r| matches!(r.state, BlobState::Deleting { .. })) {
            txn.remove(&BLOBS, digest.as_str())?;
        }
        txn.remove(&TOMBSTONES, digest.as_str())?;
    }
    Ok(())
}

/// Digests of every tombstone (start-up finishes them). A key that is not a digest names no
/// blob the registry could have stored; fsck reports it.
pub(super) fn tombstones(txn: &impl Rows) -> Result<Vec<Digest>, MetaError> {
    let mut out = Vec::new();
    txn.scan(&TOMBSTONES, .., &mut |digest, _| {
        if let Ok(digest) = Digest::parse(digest) {
            out.push(digest);
        }
        NEXT
    })?;
    Ok(out)
}

/// The manifests of a snapshot that are not anchored.
pub fn unanchored(snap: &Snapshot, policy: Policy) -> Result<HashSet<(String, String)>, MetaError> {
    let mut memo = Memo::default();
    let mut dead = HashSet::new();
    let mut graph = snap;
    for (repo, digest) in snap.manifests.keys() {
        if !anchored(&mut graph, policy, repo, digest, &mut memo)? {
            dead.insert((repo.clone(), digest.clone()));
        }
    }
    Ok(dead)
}
