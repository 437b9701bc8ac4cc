//! Tag, catalog and referrers listings.

use super::{Error, Registry};
use crate::meta::{self, ReferrerRow};
use crate::oci::{Digest, RepoName};

/// One page of a lexically ordered listing (tags or repository names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    /// True when entries follow the last item.
    pub more: bool,
}

impl From<meta::Page> for Page {
    fn from(page: meta::Page) -> Self {
        Page {
            items: page.items,
            more: page.more,
        }
    }
}

impl Registry {
    /// Tags of `repo` after `last`, at most `n`. A pull-through cache lists its upstream's
    /// (its own, while the upstream fails).
    pub async fn tags(&self, repo: &RepoName, last: Option<String>, n: usize) -> Result<Page, Error> {
        if let Some(listed) = self.cached_tags(repo, last.as_deref(), n).await {
            return listed;
        }
        self.local_tags(repo, last, n).await
    }

    pub(super) async fn local_tags(&self, repo: &RepoName, last: Option<String>, n: usize) -> Result<Page, Error> {
        self.meta
            .tags(repo, last.as_deref(), n)
            .await?
            .map(Page::from)
            .ok_or_else(|| Error::NameUnknown(repo.to_string()))
    }

    /// Repositories after `last`, at most `n`.
    pub async fn catalog(&self, last: Option<String>, n: usize) -> Result<Page, Error> {
        Ok(self.meta.repos(last.as_deref(), n).await?.into())
    }

    /// Repositories after `last` that `visible` keeps, at most `n`: pages of the catalog are
    /// read until `n` are kept or none are left.
    pub async fn catalog_visible(
        &self,
        mut last: Option<String>,
        n: usize,
        visible: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<Page, Error> {
        let mut kept = Vec::new();
        loop {
            let page = self.catalog(last.clone(), n.max(100)).await?;
            for name in page.items {
                if kept.len() == n {
                    return Ok(Page {
                        items: kept,
                        more: true,
                    });
                }
                if visible(&name) {
                    kept.push(name.clone());
                }
                last = Some(name);
            }
            if !page.more {
                return Ok(Page {
                    items: kept,
                    more: false,
                });
            }
        }
    }

    /// Manifests of `repo` whose subject is `subject`, optionally only those of one artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<String>,
    ) -> Result<Vec<(String, ReferrerRow)>, Error> {
        let mut all = self.meta.referrers(repo, subject).await?;
        if let Some(want) = artifact_type {
            all.retain(|(_, row)| row.artifact_type.as_deref() == Some(want.as_str()));
        }
        Ok(all)
    }
}
