//! Policies the registry enforces: immutable tags (`immutable_tags:`) and storage quotas
//! (`quotas:`) on writes, and which tags retention removes (`retention:`, decided here, carried
//! out by `gc::retention`). Compiled from the configuration at start-up and replaced whole when
//! the configuration is reloaded (SIGHUP); each request uses the set in force when it started.
//! The metadata store applies the write policies inside the write transaction
//! (`meta::Protected`, `meta::Quota`), so neither a tag nor a push can slip past one between a
//! check and a change. Quotas keep no counter (the store computes a group's usage from its
//! rows), so a reload that changes them has nothing to recompute. Pull-through caches are not
//! subject to them: their tags follow the upstream, and `proxy.max_bytes` bounds their size.

use std::sync::{Arc, RwLock};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use std::time::Duration;

use crate::config::{self, ImmutableTags, Retention};
use crate::meta::browse::TagDetail;
use crate::meta::{Millis, Protected, Quota};
use crate::oci::RepoName;

/// The compiled policies.
#[derive(Debug, Default)]
pub struct Policies {
    immutable: Vec<Immutable>,
    retention: Vec<RetentionRule>,
    quotas: Vec<Quota>,
    /// The rules as configured, for `GET /admin/policies`.
    shown: serde_json::Value,
}

/// A compiled `retention:` rule.
#[derive(Debug)]
pub struct RetentionRule {
    repositories: GlobSet,
    keep_last: Option<usize>,
    keep_tags: GlobSet,
    older_than: Option<Duration>,
    /// Untagged manifests pushed longer ago than this go.
    pub untagged_after: Option<Duration>,
}

/// A tag retention removes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    pub tag: String,
    pub digest: String,
    pub updated_ms: Millis,
    pub reason: String,
}

#[derive(Debug)]
struct Immutable {
    repositories: GlobSet,
    tags: GlobSet,
    /// The rule as written, for messages.
    text: String,
}

impl Policies {
    /// Compile the configuration's rules (whose globs it has validated).
    pub fn new(immutable_tags: &[ImmutableTags], retention_rules: &[Retention], quota_rules: &[config::Quota]) -> Self {
        let immutable = immutable_tags
            .iter()
            .map(|rule| Immutable {
                repositories: globs(&rule.repositories),
                tags: globs(&rule.tags),
                text: format!(
                    "immutable_tags rule repositories {:?}, tags {:?}",
                    rule.repositories, rule.tags
                ),
            })
            .collect();
        let retention = retention_rules
            .iter()
            .map(|rule| RetentionRule {
                repositories: globs(&rule.repositories),
                keep_last: rule.keep_last,
                keep_tags: globs(&rule.keep_tags),
                older_than: rule.older_than,
                untagged_after: rule.untagged_after,
            })
            .collect();
        let quotas = quota_rules.iter().map(quota).collect();
        let shown = serde_json::json!({
            "immutable_tags": immutable_tags,
            "retention": retention_rules,
            "quotas": quota_rules.iter().map(|q| serde_json::json!({
                "repositories": q.repositories, "max_bytes": q.max_bytes,
            })).collect::<Vec<_>>(),
        });
        Policies {
            immutable,
            retention,
            quotas,
            shown,
        }
    }

    /// The rules in force as configured (`GET /admin/policies`).
    pub fn shown(&self) -> &serde_json::Value {
        &self.shown
    }

    /// The retention rule for `repo` (the first that matches), if any.
    pub fn retention_for(&self, repo: &str) -> Option<&RetentionRule> {
        self.retention.iter().find(|r| r.repositories.is_match(repo))
    }

    pub fn has_retention(&self) -> bool {
        !self.retention.is_empty()
    }

    /// The quotas whose groups include `repo`, for a manifest PUT.
    pub fn quotas_of(&self, repo: &RepoName) -> Vec<Quota> {
        self.quotas
            .iter()
            .filter(|q| q.covers(repo.as_str()))
            .cloned()
            .collect()
    }

    /// Every quota, for usage reports.
    pub fn quotas(&self) -> Vec<Quota> {
        self.quotas.clone()
    }

    /// The rule that makes `tag` of `repo` immutable, if one does.
    pub fn immutable_rule(&self, repo: &str, tag: &str) -> Option<&str> {
        self.immutable
            .iter()
            .find(|r| r.repositories.is_match(repo) && r.tags.is_match(tag))
            .map(|r| r.text.as_str())
    }

    /// The tags of `repo` these policies protect, for a write.
    pub fn protected(self: &Arc<Self>, repo: &RepoName) -> Protected {
        if !self.immutable.iter().any(|r| r.repositories.is_match(repo.as_str())) {
            return Protected::default();
        }
        let (policies, repo) = (Arc::clone(self), repo.to_string());
        Protected::new(move |tag| policies.immutable_rule(&repo, tag).is_some())
    }
}

impl RetentionRule {
    /// Of `tags` (of `repo`), those this rule removes at `now`, with the reason. Newest first
    /// by when each tag was last set; immutable tags are never chosen.
    pub fn doomed(&self, policies: &Policies, repo: &str, tags: &[TagDetail], now: Millis) -> Vec<Doomed> {
        if self.keep_last.is_none() && self.older_than.is_none() {
            return Vec::new();
        }
        let mut sorted: Vec<&TagDetail> = tags.iter().collect();
        sorted.sort_by(|a, b| b.updated_ms.cmp(&a.updated_ms).then_with(|| a.tag.cmp(&b.tag)));
        let mut doomed = Vec::new();
        for (rank, t) in sorted.into_iter().enumerate() {
            let age = Duration::from_millis(now.saturating_sub(t.updated_ms));
            let recent = self.keep_last.is_some_and(|n| rank < n);
            let young = self.older_than.is_some_and(|limit| age < limit);
            let kept =
                recent || young || self.keep_tags.is_match(&t.tag) || policies.immutable_rule(repo, &t.tag).is_some();
            if !kept {
                doomed.push(Doomed {
                    tag: t.tag.clone(),
                    digest: t.digest.clone(),
                    updated_ms: t.updated_ms,
                    reason: self.reason(age),
                });
            }
        }
        doomed
    }

    fn reason(&self, age: Duration) -> String {
        let days = age.as_secs() / 86_400;
        match (self.keep_last, self.older_than) {
            (Some(n), Some(limit)) => format!(
                "not among the {n} most recently pushed tags, and pushed {days} days ago (older_than {})",
                humantime::format_duration(limit)
            ),
            (Some(n), None) => format!("not among the {n} most recently pushed tags"),
            (None, Some(limit)) => format!(
                "pushed {days} days ago (older_than {})",
                humantime::format_duration(limit)
            ),
            (None, None) => unreachable!("a rule that removes no tag chooses none"),
        }
    }
}

/// A quota named by its globs, over the key range their common literal prefix starts.
fn quota(rule: &config::Quota) -> Quota {
    let set = globs(&rule.repositories);
    Quota::new(
        rule.repositories.join(","),
        rule.max_bytes,
        common_literal_prefix(&rule.repositories),
        move |repo| set.is_match(repo),
    )
}

/// The longest text every name a glob of `patterns` matches starts with.
fn common_literal_prefix(patterns: &[String]) -> String {
    let literal = |p: &String| -> String { p.chars().take_while(|c| !"*?[{\\".contains(*c)).collect() };
    let mut prefixes = patterns.iter().map(literal);
    let first = prefixes.next().unwrap_or_default();
    prefixes.fold(first, |common, p| {
        common
            .chars()
            .zip(p.chars())
            .take_while(|(a, b)| a == b)
            .map(|(a, _)| a)
            .collect()
    })
}

pub(super) fn globs(patterns: &[String]) -> GlobSet {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        if let Ok(glob) = GlobBuilder::new(pattern).literal_separator(true).build() {
            set.add(glob);
        }
    }
    set.build().unwrap_or_else(|_| GlobSet::empty())
}

/// The policies in force, replaceable while requests run.
#[derive(Debug, Default)]
pub(super) struct Current(RwLock<Arc<Policies>>);

impl Current {
    pub(super) fn get(&self) -> Arc<Policies> {
        Arc::clone(&self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub(super) fn set(&self, policies: Policies) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policies);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, days_ago: u64) -> TagDetail {
        TagDetail {
            tag: name.into(),
            digest: format!("sha256:{name}"),
            updated_ms: 1000 * 86_400_000 - days_ago * 86_400_000,
        }
    }

    fn doomed(rule: &str) -> Vec<String> {
        let rule: Retention = serde_saphyr::from_str(rule).unwrap();
        let immutable: ImmutableTags =
            serde_saphyr::from_str("repositories: \"team/*\"\ntags: [\"release-*\"]").unwrap();
        let p = Policies::new(&[immutable], &[rule], &[]);
        let tags = [
            tag("a", 1),
            tag("b", 5),
            tag("c", 50),
            tag("latest", 100),
            tag("v1", 200),
            tag("release-1", 300),
        ];
        let rule = p.retention_for("team/app").unwrap();
        rule.doomed(&p, "team/app", &tags, 1000 * 86_400_000)
            .into_iter()
            .map(|d| d.tag)
            .collect()
    }

    #[test]
    fn a_tag_goes_when_nothing_keeps_it() {
        let repos = "repositories: \"team/*\"\n";
        assert_eq!(doomed(&format!("{repos}keep_last: 2")), ["c", "latest", "v1"]);
        assert_eq!(
            doomed(&format!("{repos}keep_last: 2\nkeep_tags: [latest]")),
            ["c", "v1"]
        );
        assert_eq!(doomed(&format!("{repos}older_than: 30d")), ["c", "latest", "v1"]);
        assert_eq!(
            doomed(&format!("{repos}keep_last: 3\nolder_than: 60d")),
            ["latest", "v1"]
        );
        assert_eq!(doomed(&format!("{repos}untagged_after: 7d")), Vec::<String>::new());
    }

    #[test]
    fn a_quota_scans_from_its_globs_common_literal_prefix() {
        let p = |globs: &[&str]| common_literal_prefix(&globs.iter().map(ToString::to_string).collect::<Vec<_>>());
        assert_eq!(p(&["team-a/*"]), "team-a/");
        assert_eq!(p(&["team-a/**", "team-b/x"]), "team-");
        assert_eq!(p(&["*/prod"]), "");
        assert_eq!(p(&["a/{b,c}"]), "a/");
        assert_eq!(p(&["exact"]), "exact");
    }
}
