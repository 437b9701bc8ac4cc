//! Online garbage collection: mark from one metadata snapshot, then sweep in short write
//! transactions that re-check every decision, while pushes and pulls go on.
//!
//! Phases:
//! 0. **Retention** (`retention`), when rules are configured: their doomed tags and untagged
//!    manifests go first, so this run frees what only they held. (A dry run's mark then still
//!    sees them, so its figures leave retention's effect out.)
//! 1. **Mark.** Read one snapshot (`MetaStore::gc_snapshot`). A manifest is live when it is
//!    anchored (`meta::gc::anchored`: tagged, young, a child of a live index, or a referrer of a
//!    live subject). A blob is needed when a live manifest references it; a link when a live
//!    manifest of its repository references its blob.
//! 2. **Sweep manifests** that are not live, a batch per transaction, each re-checked inside
//!    the transaction (a tag moved or an index pushed since the snapshot keeps it).
//! 3. **Sweep links** that no manifest of their repository references (the transaction checks
//!    `LinkRow::refs`), older than the grace period or referenced by a manifest since they
//!    were made (their push is over: `Policy::past_grace`), and not HEAD-touched, under the
//!    digests' locks.
//! 4. **Sweep blobs** with no references and no links, past their grace period likewise, and
//!    not touched: under the digests' locks, commit tombstones, then unlink the files, then drop the
//!    rows. A push of the same digest waits on the lock and then re-creates the blob; a manifest
//!    PUT or a mount that arrives after the tombstone sees the blob as absent and gets a clean
//!    error (`MANIFEST_BLOB_UNKNOWN`, or a fallback to a normal upload).
//! 5. **Sweep repositories** that hold nothing any more (re-checked in the transaction), so
//!    they leave `_catalog`.
//! 6. **Purge uploads** older than `gc.upload_max_age`.
//!
//! No transaction does file I/O; no file is unlinked before the commit that makes it
//! unreachable. A crash between the tombstone commit and the unlink is finished at start-up.
//!
//! When several nodes share the metadata (PostgreSQL), the digests' locks are also advisory
//! locks and the HEAD touches are rows (`registry::locks`, `meta::cluster`), so these rules
//! hold against pushes and HEADs on every node.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

mod evict;
pub mod retention;

use crate::meta::gc::{Policy, unanchored};
use crate::meta::{BlobState, Millis, now_ms};
use crate::registry::{Error, Registry, blocking};

/// Rows per sweep transaction: enough to amortise a commit, few enough to keep it short.
const BATCH: usize = 256;

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Anything pushed, linked, uploaded or HEAD-checked more recently is kept.
    pub grace_period: Duration,
    /// Collect untagged manifests that nothing live refers to.
    pub delete_untagged: bool,
    /// Upload sessions older than this are removed.
    pub upload_max_age: Duration,
    /// Report what would be deleted, and delete nothing.
    pub dry_run: bool,
    /// Audit events older than this are pruned (`audit.max_age`); `None` keeps them.
    pub audit_max_age: Option<Duration>,
}

impl Options {
    /// A real run (not a dry run) with the `gc.*` settings.
    pub fn from_config(gc: &crate::config::Gc) -> Self {
        Options {
            grace_period: gc.grace_period,
            delete_untagged: gc.delete_untagged,
            upload_max_age: gc.upload_max_age,
            dry_run: false,
            audit_max_age: None,
        }
    }

    /// The same run, pruning the audit log of events older than `max_age`.
    #[must_use]
    pub fn with_audit_max_age(self, max_age: Duration) -> Self {
        Options {
            audit_max_age: Some(max_age),
            ..self
        }
    }

    /// The same run, as a dry run or not.
    #[must_use]
    pub fn with_dry_run(self, dry_run: bool) -> Self {
        Options { dry_run, ..self }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    /// The retention rules remove the tags and untagged manifests they doom (`retention`).
    Retention,
    /// Pull-through caches over their `max_bytes` give up their least recently pulled images.
    Evict,
    Mark,
    SweepManifests,
    SweepLinks,
    SweepBlobs,
    /// Repositories left with nothing in them go (they would stay in `_catalog` forever).
    SweepRepositories,
    /// Held at a test pause point (`testhook`; builds with the `test-hooks` feature only).
    Paused,
    PurgeUploads,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Retention => "retention",
            Phase::Evict => "evict",
            Phase::Mark => "mark",
            Phase::SweepManifests => "sweep_manifests",
            Phase::SweepLinks => "sweep_links",
            Phase::SweepBlobs => "sweep_blobs",
            Phase::SweepRepositories => "sweep_repositories",
            Phase::Paused => "paused",
            Phase::PurgeUploads => "purge_uploads",
            Phase::Done => "done",
        }
    }
}

/// Count and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub count: u64,
    pub bytes: u64,
}

/// What a run did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub dry_run: bool,
    pub manifests_deleted: u64,
    pub links_removed: u64,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    pub uploads_purged: u64,
    /// Staging entries (upload leftovers) no session owned, unchanged for the grace period.
    #[serde(default)]
    pub staging_orphans_removed: u64,
    /// Repositories removed because nothing was left in them.
    #[serde(default)]
    pub repositories_removed: u64,
    /// Images a pull-through cache gave up to fit its `max_bytes` (manifests, and the blob
    /// bytes only they held).
    #[serde(default)]
    pub evicted: Amount,
    /// What the retention rules removed first, when there are rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<retention::Report>,
    /// Audit events older than `audit.max_age` removed.
    #[serde(default)]
    pub audit_events_pruned: u64,
    /// Unreferenced blobs kept only because they are inside the grace period.
    pub kept_by_grace: Amount,
    pub duration_ms: u64,
}

/// What the mark phase decided, from one snapshot.
#[derive(Debug, Default)]
struct Marked {
    dead_manifests: Vec<(String, String)>,
    dead_links: Vec<(String, String)>,
    dead_blobs: Vec<(String, u64)>,
    /// Repositories that hold nothing once the sweeps are done.
    empty_repos: Vec<String>,
    kept_by_grace: Amount,
}

/// Run one collection. `phase` is told each phase as it starts.
pub async fn run(
    registry: &Arc<Registry>,
    opts: &Options,
    phase: &(dyn Fn(Phase) + Send + Sync),
) -> Result<Report, Error> {
    let started = Instant::now();
    let now = now_ms();
    let grace_ms = u64::try_from(opts.grace_period.as_millis()).unwrap_or(u64::MAX);
    let policy = Policy {
        cutoff_ms: now.saturating_sub(grace_ms),
        delete_untagged: opts.delete_untagged,
    };
    let retention = if registry.policies().has_retention() {
        phase(Phase::Retention);
        Some(retention::run(registry, opts.dry_run, opts.grace_period).await?)
    } else {
        None
    };
    let evicted = evict(registry, opts.dry_run, phase).await?;
    phase(Phase::Mark);
    let marked = mark(registry, policy).await?;
    crate::testhook::pause("gc.after_mark", || phase(Phase::Paused)).await;
    let mut report = Report {
        dry_run: opts.dry_run,
        kept_by_grace: marked.kept_by_grace,
        evicted,
        retention,
        ..Report::default()
    };
    // Staging entries carry the storage's own modification times: compare with the wall clock.
    let staging_cutoff = std::time::SystemTime::now()
        .checked_sub(opts.grace_period)
        .unwrap_or(std::time::UNIX_EPOCH);
    let upload_cutoff = now.saturating_sub(u64::try_from(opts.upload_max_age.as_millis()).unwrap_or(u64::MAX));
    if opts.dry_run {
        report.manifests_deleted = marked.dead_manifests.len() as u64;
        report.links_removed = marked.dead_links.len() as u64;
        report.blobs_deleted = marked.dead_blobs.len() as u64;
        report.bytes_freed = marked.dead_blobs.iter().map(|(_, s)| s).sum();
        report.repositories_removed = marked.empty_repos.len() as u64;
        report.uploads_purged = registry.stale_upload_count(upload_cutoff).await?;
        report.staging_orphans_removed = registry.purge_staging_orphans(staging_cutoff, true).await?;
    } else {
        phase(Phase::SweepManifests);
        report.manifests_deleted = sweep_manifests(registry, marked.dead_manifests, policy).await?;
        phase(Phase::SweepLinks);
        report.links_removed = sweep_links(registry, marked.dead_links, policy).await?;
        phase(Phase::SweepBlobs);
        let candidates = marked.dead_blobs.into_iter().map(|(d, _)| d).collect();
        (report.blobs_deleted, report.bytes_freed) = sweep_blobs(registry, candidates, policy, phase).await?;
        phase(Phase::SweepRepositories);
        for batch in marked.empty_repos.chunks(BATCH) {
            report.repositories_removed += registry.gc_remove_empty_repos(batch.to_vec(), policy).await?;
        }
        phase(Phase::PurgeUploads);
        report.uploads_purged = registry.purge_uploads(upload_cutoff).await?;
        report.staging_orphans_removed = registry.purge_staging_orphans(staging_cutoff, false).await?;
        registry.prune_touches(policy.cutoff_ms).await?;
        if let Some(max_age) = opts.audit_max_age {
            let cutoff = now.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
            report.audit_events_pruned = registry.prune_audit(cutoff).await?;
        }
    }
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    phase(Phase::Done);
    Ok(report)
}

/// The eviction phase: choose from one snapshot, then delete the chosen manifests (a dry run
/// only reports them; its mark then still sees them).
async fn evict(
    registry: &Arc<Registry>,
    dry_run: bool,
    phase: &(dyn Fn(Phase) + Send + Sync),
) -> Result<Amount, Error> {
    let bounds: Vec<evict::Bound> = registry
        .cache_bounds()
        .into_iter()
        .map(|(prefix, max_bytes)| evict::Bound { prefix, max_bytes })
        .collect();
    if bounds.is_empty() {
        return Ok(Amount::default());
    }
    phase(Phase::Evict);
    let snap = registry.gc_snapshot().await?;
    let pulls = registry.cache_pulls().await?;
    let choice = blocking(move || {
        let pulled = |repo: &str, digest: &str| pulls.get(&(repo.to_owned(), digest.to_owned())).copied();
        evict::choose(&snap, &bounds, &pulled)
    })
    .await;
    let count = if dry_run {
        choice.manifests.len() as u64
    } else {
        registry.evict_cached(choice.manifests).await?
    };
    if count > 0 {
        tracing::info!(
            manifests = count,
            bytes = choice.bytes,
            dry_run,
            "pull-through caches over max_bytes evicted their least recently pulled images"
        );
    }
    Ok(Amount {
        count,
        bytes: choice.bytes,
    })
}

async fn mark(registry: &Arc<Registry>, policy: Policy) -> Result<Marked, Error> {
    let snap = registry.gc_snapshot().await?;
    let touched = registry.touched_since(policy.cutoff_ms).await?;
    let registry = Arc::clone(registry);
    let cached = move |repo: &str| registry.is_cached_repo(repo);
    Ok(blocking(move || decide(&snap, policy, &touched, &cached)).await?)
}

/// The pure part of marking: from a snapshot, what to sweep and what grace keeps. The
/// manifests of a pull-through cache (`cached` repositories) are never garbage: a cache gives
/// them up only by eviction, so one pulled by digest alone stays until then.
fn decide(
    snap: &crate::meta::gc::Snapshot,
    policy: Policy,
    touched: &dyn Fn(&str) -> bool,
    cached: &dyn Fn(&str) -> bool,
) -> Result<Marked, crate::meta::MetaError> {
    let mut dead = unanchored(snap, policy)?;
    dead.retain(|(repo, _)| !cached(repo));
    let mut needed_links: HashSet<(&str, &str)> = HashSet::new();
    let mut needed_blobs: HashSet<&str> = HashSet::new();
    for ((repo, _), node) in snap.manifests.iter().filter(|(k, _)| !dead.contains(*k)) {
        for blob in &node.refs.blobs {
            needed_links.insert((repo, blob));
            needed_blobs.insert(blob);
        }
    }
    let young = |t: Millis, referenced: bool, d: &str| !policy.past_grace(t, referenced) || touched(d);
    // A repository keeps anything that survives: a live manifest or a kept link (decided below).
    let mut holding: HashSet<&str> = snap
        .manifests
        .keys()
        .filter(|k| !dead.contains(*k))
        .map(|(repo, _)| repo.as_str())
        .collect();
    let mut marked = Marked {
        dead_manifests: dead.iter().cloned().collect(),
        ..Marked::default()
    };
    let mut kept_links: HashMap<&str, u64> = HashMap::new();
    for (repo, digest, link) in &snap.links {
        if needed_links.contains(&(repo.as_str(), digest.as_str())) || young(link.linked_ms, link.referenced, digest) {
            *kept_links.entry(digest).or_default() += 1;
            holding.insert(repo);
        } else {
            marked.dead_links.push((repo.clone(), digest.clone()));
        }
    }
    for (digest, blob) in &snap.blobs {
        if needed_blobs.contains(digest.as_str()) {
            continue;
        }
        // A cached manifest's blob never fetched has no bytes: its row goes once nothing
        // counts it (the sweep re-checks).
        if blob.state == BlobState::Remote {
            if !kept_links.contains_key(digest.as_str()) {
                marked.dead_blobs.push((digest.clone(), 0));
            }
            continue;
        }
        if blob.state != BlobState::Live {
            continue;
        }
        if kept_links.contains_key(digest.as_str()) || young(blob.created_ms, blob.referenced, digest) {
            marked.kept_by_grace.count += 1;
            marked.kept_by_grace.bytes += blob.size;
        } else {
            marked.dead_blobs.push((digest.clone(), blob.size));
        }
    }
    marked.empty_repos = snap
        .repos
        .iter()
        .filter(|(repo, created)| *created < policy.cutoff_ms && !holding.contains(repo.as_str()))
        .map(|(repo, _)| repo.clone())
        .collect();
    Ok(marked)
}

async fn sweep_manifests(registry: &Arc<Registry>, dead: Vec<(String, String)>, policy: Policy) -> Result<u64, Error> {
    let mut deleted = 0;
    for batch in dead.chunks(BATCH) {
        deleted += registry.gc_delete_manifests(batch.to_vec(), policy).await?;
    }
    Ok(deleted)
}

async fn sweep_links(registry: &Arc<Registry>, dead: Vec<(String, String)>, policy: Policy) -> Result<u64, Error> {
    let mut removed = 0;
    for batch in dead.chunks(BATCH) {
        removed += registry.gc_remove_links(batch.to_vec(), policy).await?;
    }
    Ok(removed)
}

/// Tombstone, delete and forget unreferenced blobs; returns (count, bytes).
async fn sweep_blobs(
    registry: &Arc<Registry>,
    candidates: Vec<String>,
    policy: Policy,
    phase: &(dyn Fn(Phase) + Send + Sync),
) -> Result<(u64, u64), Error> {
    let (mut count, mut bytes) = (0, 0);
    for batch in candidates.chunks(BATCH) {
        let after_tombstone = || async {
            if crate::testhook::pause("gc.before_unlink", || phase(Phase::Paused)).await {
                phase(Phase::SweepBlobs);
            }
        };
        let (c, b) = registry
            .gc_delete_blobs(batch.to_vec(), policy, after_tombstone)
            .await?;
        count += c;
        bytes += b;
    }
    Ok((count, bytes))
}
