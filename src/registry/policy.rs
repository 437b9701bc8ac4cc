//! Policies the registry enforces on writes: immutable tags (`immutable_tags:`). Compiled
//! from the configuration at start-up and replaced whole when the configuration is reloaded
//! (SIGHUP); each request uses the set in force when it started. The metadata store applies
//! them inside the write transaction (`meta::Protected`), so a tag can never slip past one
//! between a check and a change. Pull-through caches are not subject to them: their tags
//! follow the upstream.

use std::sync::{Arc, RwLock};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::config::ImmutableTags;
use crate::meta::Protected;
use crate::oci::RepoName;

/// The compiled policies.
#[derive(Debug, Default)]
pub struct Policies {
    immutable: Vec<Immutable>,
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
    pub fn new(immutable_tags: &[ImmutableTags]) -> Self {
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
        Policies { immutable }
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
