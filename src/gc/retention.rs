//! Retention (`retention:`): the tags and untagged manifests the rules say go. It runs as the
//! first phase of every garbage collection (so online, and the sweep that follows frees what
//! they alone held), or on its own (`POST /admin/retention`, `berth retention`), and reports
//! every tag and manifest it removes, or with `dry_run` would remove, with the reason.
//!
//! Decisions come from one snapshot and the rules (`registry::Policies`); every deletion is
//! re-checked in its transaction: a tag is deleted only if it still points where it pointed
//! and was not pushed again since (compare-and-set), never if immutable; an untagged manifest
//! only if it is still not anchored (a tag, a newer push, an index or subject that stays).
//! So a push racing retention always wins. Repositories of pull-through caches are left to
//! their own eviction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::meta::browse::{TagDetail, TagOrder};
use crate::meta::gc::{Graph, Memo, Node, Policy, Snapshot, anchored};
use crate::meta::{MetaError, Millis, now_ms};
use crate::oci::RepoName;
use crate::registry::{Error, Policies, Registry};

/// What a retention run removed (or would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub dry_run: bool,
    pub tags: Vec<Removed>,
    pub manifests: Vec<Removed>,
}

/// One tag or manifest removed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub digest: String,
    pub reason: String,
}

/// Apply the rules in force. `grace` (the collection's grace period) bounds how young an
/// untagged manifest retention may take, whatever `untagged_after` says: pushes in flight
/// leave children untagged until their index arrives.
pub async fn run(registry: &Arc<Registry>, dry_run: bool, grace: Duration) -> Result<Report, Error> {
    let policies = registry.policies();
    let mut report = Report {
        dry_run,
        ..Report::default()
    };
    if !policies.has_retention() {
        return Ok(report);
    }
    let now = now_ms();
    let snap = registry.gc_snapshot().await?;
    let mut untagged: HashSet<(String, String)> = HashSet::new();
    for (repo, _) in &snap.repos {
        if registry.is_cached_repo(repo) || policies.retention_for(repo).is_none() {
            continue;
        }
        let name = RepoName::parse(repo).map_err(Error::from)?;
        let removed = remove_tags(registry, &policies, &name, now, dry_run).await?;
        untagged.extend(left_untagged(registry, &name, &removed).await?);
        report.tags.extend(removed);
    }
    report.manifests = remove_untagged(registry, &policies, &snap, &untagged, now, grace, dry_run).await?;
    if !report.tags.is_empty() || !report.manifests.is_empty() {
        tracing::info!(
            tags = report.tags.len(),
            manifests = report.manifests.len(),
            dry_run,
            "retention"
        );
    }
    Ok(report)
}

/// The tags of `repo` its rule dooms, deleted (compare-and-set) unless `dry_run`; those that
/// went (or would go).
async fn remove_tags(
    registry: &Registry,
    policies: &Policies,
    repo: &RepoName,
    now: Millis,
    dry_run: bool,
) -> Result<Vec<Removed>, Error> {
    let rule = policies.retention_for(repo.as_str()).expect("the caller checked");
    let tags = all_tags(registry, repo).await?;
    let doomed = rule.doomed(policies, repo.as_str(), &tags, now);
    let deleted = if dry_run {
        vec![true; doomed.len()]
    } else {
        // Tests push between the decision and the deletes here (`retention.before_delete`).
        crate::testhook::pause("retention.before_delete", || {}).await;
        registry.retention_delete_tags(repo, &doomed).await?
    };
    Ok(doomed
        .into_iter()
        .zip(deleted)
        .filter(|(_, gone)| *gone)
        .map(|(d, _)| Removed {
            repository: repo.to_string(),
            tag: Some(d.tag),
            digest: d.digest,
            reason: d.reason,
        })
        .collect())
}

/// The manifests of `repo` that `removed` leaves with no tag (in a dry run: would leave).
async fn left_untagged(
    registry: &Registry,
    repo: &RepoName,
    removed: &[Removed],
) -> Result<Vec<(String, String)>, Error> {
    let gone: HashSet<&str> = removed.iter().filter_map(|r| r.tag.as_deref()).collect();
    let mut remaining: HashMap<String, usize> = HashMap::new();
    for r in removed {
        remaining.entry(r.digest.clone()).or_insert(0);
    }
    // In a real run the removed tags are gone already; in a dry run they are still listed.
    for t in all_tags(registry, repo).await? {
        if !gone.contains(t.tag.as_str())
            && let Some(n) = remaining.get_mut(&t.digest)
        {
            *n += 1;
        }
    }
    Ok(remaining
        .into_iter()
        .filter(|(_, n)| *n == 0)
        .map(|(digest, _)| (repo.to_string(), digest))
        .collect())
}

/// Every tag of `repo` with its digest and last push, a page at a time in name order (none if
/// the repository went meanwhile).
async fn all_tags(registry: &Registry, repo: &RepoName) -> Result<Vec<TagDetail>, Error> {
    const PAGE: usize = 1000;
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let order = TagOrder::Name { after: after.take() };
        let page = match registry.tag_page(repo, "", &order, PAGE).await {
            Ok(page) => page,
            Err(Error::NameUnknown(_)) => return Ok(all),
            Err(e) => return Err(e),
        };
        after = page.tags.last().map(|t| t.tag.clone());
        all.extend(page.tags);
        if !page.more || after.is_none() {
            return Ok(all);
        }
    }
}

/// The snapshot, with the manifests retention untagged seen as untagged.
struct AfterRetention<'a> {
    snap: &'a Snapshot,
    untagged: &'a HashSet<(String, String)>,
}

impl Graph for AfterRetention<'_> {
    fn node(&mut self, repo: &str, digest: &str) -> Result<Option<Node>, MetaError> {
        let key = (repo.to_owned(), digest.to_owned());
        Ok(self.snap.manifests.get(&key).cloned().map(|mut node| {
            node.tagged &= !self.untagged.contains(&key);
            node
        }))
    }
}

/// Untagged manifests older than their rule's `untagged_after` (and the grace period) that
/// nothing anchors, deleted unless `dry_run`.
async fn remove_untagged(
    registry: &Registry,
    policies: &Policies,
    snap: &Snapshot,
    untagged: &HashSet<(String, String)>,
    now: Millis,
    grace: Duration,
    dry_run: bool,
) -> Result<Vec<Removed>, Error> {
    let mut chosen: HashMap<String, (Policy, Vec<Removed>)> = HashMap::new();
    let mut graph = AfterRetention { snap, untagged };
    for (repo, digest) in snap.manifests.keys() {
        if registry.is_cached_repo(repo) {
            continue;
        }
        let Some(after) = policies.retention_for(repo).and_then(|r| r.untagged_after) else {
            continue;
        };
        let limit = after.max(grace);
        let policy = Policy {
            cutoff_ms: now.saturating_sub(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX)),
            delete_untagged: true,
        };
        if anchored(&mut graph, policy, repo, digest, &mut Memo::default())? {
            continue;
        }
        let entry = chosen.entry(repo.clone()).or_insert_with(|| (policy, Vec::new()));
        entry.1.push(Removed {
            repository: repo.clone(),
            tag: None,
            digest: digest.clone(),
            reason: format!(
                "untagged, pushed more than {} ago (untagged_after), and no index or subject that stays needs it",
                humantime::format_duration(limit)
            ),
        });
    }
    let mut removed = Vec::new();
    for (_, (policy, mut list)) in chosen {
        list.sort_by(|a, b| a.digest.cmp(&b.digest));
        if !dry_run {
            let batch = list.iter().map(|r| (r.repository.clone(), r.digest.clone())).collect();
            let deleted = registry.gc_delete_manifests(batch, policy).await?;
            if deleted < list.len() as u64 {
                // Something changed since the snapshot (a push, a tag): the transaction kept
                // it. Report only what is gone.
                let mut gone = Vec::new();
                for r in list {
                    if !registry.manifest_stored(&r.repository, &r.digest).await? {
                        gone.push(r);
                    }
                }
                list = gone;
            }
        }
        removed.extend(list);
    }
    removed.sort_by(|a, b| (&a.repository, &a.digest).cmp(&(&b.repository, &b.digest)));
    Ok(removed)
}
