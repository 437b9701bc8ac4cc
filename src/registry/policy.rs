//! Policies the registry enforces on writes: immutable tags (`immutable_tags:`) and storage
//! quotas (`quotas:`). Compiled from the configuration at start-up and replaced whole when the
//! configuration is reloaded (SIGHUP); each request uses the set in force when it started. The
//! metadata store applies them inside the write transaction (`meta::Protected`,
//! `meta::Quota`), so neither a tag nor a push can slip past one between a check and a change.
//! Quotas keep no counter (the store computes a group's usage from its rows), so a reload
//! that changes them has nothing to recompute. Pull-through caches are not subject to them:
//! their tags follow the upstream, and `proxy.max_bytes` bounds their size.

use std::sync::{Arc, RwLock};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::config::{self, ImmutableTags};
use crate::meta::{Protected, Quota};
use crate::oci::RepoName;

/// The compiled policies.
#[derive(Debug, Default)]
pub struct Policies {
    immutable: Vec<Immutable>,
    quotas: Vec<Quota>,
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
    pub fn new(immutable_tags: &[ImmutableTags], quotas: &[config::Quota]) -> Self {
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
        let quotas = quotas.iter().map(quota).collect();
        Policies { immutable, quotas }
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

fn globs(patterns: &[String]) -> GlobSet {
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
