//! The read-only pages: the repository list, a repository's tags, a manifest. Each reads
//! metadata through `registry`, and at most one blob: the image config of the manifest shown.
//! A repository the viewer may not pull is answered as if it did not exist.

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;

use super::model::{ImageConfig, ManifestView, pretty_json};
use super::route::{self, UiPath};
use super::views::{self, Referrer, RepoItem, RepoList, RepoPage, TagItem};
use super::{UiError, Viewer, respond};
use crate::meta::browse::{TagDetail, TagOrder};
use crate::oci::{Digest, Reference, RepoName};
use crate::registry::{Registry, SearchTerm};

/// Repositories, and tags, per page.
const PAGE: usize = 50;
/// Image configs larger than this are not read for a manifest page.
const CONFIG_MAX_BYTES: u64 = 1 << 20;
/// Reads of one page run this many at once.
const CONCURRENT: usize = 8;
/// Referrers of referrers are followed this deep.
const REFERRER_DEPTH: usize = 3;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListQuery {
    q: String,
    after: Option<String>,
    sort: Option<String>,
    page: Option<usize>,
}

/// `GET {ui.path}/`: the repositories the viewer may pull, `?q=` filtering by name.
pub async fn repositories(viewer: Viewer, Query(query): Query<ListQuery>) -> Response {
    let result = repository_list(&viewer, query).await;
    respond(
        &viewer,
        result.map(|list| views::repositories(&viewer, &list).into_response()),
    )
}

async fn repository_list(viewer: &Viewer, query: ListQuery) -> Result<RepoList, UiError> {
    let registry = &viewer.ui.app.registry;
    let term = SearchTerm::new(query.q.trim());
    let visible = viewer.visible();
    let page = registry
        .catalog_visible(query.after, PAGE, move |name| term.matches(name) && visible(name))
        .await?;
    let next = page.more.then(|| page.items.last().cloned()).flatten();
    let items: Vec<RepoItem> = futures_util::stream::iter(page.items)
        .map(|name| async move {
            let summary = match RepoName::parse(&name) {
                Ok(repo) => registry.repo_summary(&repo).await.ok(),
                Err(_) => None,
            };
            RepoItem { name, summary }
        })
        .buffered(CONCURRENT)
        .collect()
        .await;
    Ok(RepoList {
        q: query.q,
        groups: group_by_namespace(items),
        next,
    })
}

/// Repositories grouped by namespace (all but the last component), groups in the order they
/// first appear.
fn group_by_namespace(items: Vec<RepoItem>) -> Vec<(String, Vec<RepoItem>)> {
    let mut groups: Vec<(String, Vec<RepoItem>)> = Vec::new();
    for item in items {
        let namespace = item.name.rsplit_once('/').map_or("", |(ns, _)| ns).to_owned();
        match groups.iter_mut().find(|(ns, _)| *ns == namespace) {
            Some((_, members)) => members.push(item),
            None => groups.push((namespace, vec![item])),
        }
    }
    groups
}

/// `GET {ui.path}/r/...`: a repository, a manifest, or a deletion's confirmation.
pub async fn repository_path(
    viewer: Viewer,
    Path(rest): Path<String>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let result = match route::parse(&rest) {
        Err(why) => Err(UiError::BadRequest(why)),
        Ok(UiPath::Repository(name)) => repository(&viewer, &name, query, &headers).await,
        Ok(UiPath::Manifest(name, reference)) => manifest(&viewer, &name, &reference, &headers).await,
        Ok(UiPath::Delete(name, reference)) => super::actions::confirm(&viewer, &name, &reference).await,
    };
    respond(&viewer, result)
}

/// The repository, if the viewer may see it; else "no such repository", as for one that does
/// not exist.
pub(super) fn readable(viewer: &Viewer, name: &RepoName) -> Result<(), UiError> {
    if viewer.may_pull(name.as_str()) {
        Ok(())
    } else {
        Err(UiError::NotFound("no such repository".into()))
    }
}

async fn repository(
    viewer: &Viewer,
    name: &RepoName,
    query: ListQuery,
    headers: &HeaderMap,
) -> Result<Response, UiError> {
    readable(viewer, name)?;
    let registry = &viewer.ui.app.registry;
    let summary = registry.repo_summary(name).await?;
    let q = query.q.trim().to_owned();
    let by_name = query.sort.as_deref() == Some("name");
    let order = if by_name {
        TagOrder::Name {
            after: query.after.clone(),
        }
    } else {
        TagOrder::Pushed {
            page: query.page.unwrap_or(1),
        }
    };
    let found = registry.tag_page(name, &q, &order, PAGE).await?;
    let next = (by_name && found.more)
        .then(|| found.tags.last().map(|t| t.tag.clone()))
        .flatten();
    let pages = found
        .matching
        .map(|m| usize::try_from(m).unwrap_or(usize::MAX).div_ceil(PAGE).max(1));
    let page_view = RepoPage {
        name: name.to_string(),
        summary,
        tags: tag_items(registry, name, found.tags).await?,
        q,
        sort: if by_name { "name" } else { "pushed" }.to_owned(),
        page: found.page,
        pages,
        matching: found.matching,
        after: query.after.filter(|_| by_name),
        next,
        host: viewer.registry_host(headers),
        may_delete: viewer.may_delete(name.as_str()),
    };
    Ok(views::repository(viewer, &page_view).into_response())
}

/// What the tag table shows of each tag: its manifest's media type, size and platforms.
/// Each manifest is read once, and an index's images once each.
async fn tag_items(registry: &Registry, name: &RepoName, tags: Vec<TagDetail>) -> Result<Vec<TagItem>, UiError> {
    let mut digests: Vec<String> = tags.iter().map(|t| t.digest.clone()).collect();
    digests.sort_unstable();
    digests.dedup();
    let described: HashMap<String, (String, u64, Vec<String>)> = futures_util::stream::iter(digests)
        .map(|digest| async move {
            let facts = describe(registry, name, &digest).await;
            (digest, facts)
        })
        .buffered(CONCURRENT)
        .collect()
        .await;
    Ok(tags
        .into_iter()
        .map(|t| {
            let (media_type, size, platforms) = described.get(&t.digest).cloned().unwrap_or_default();
            TagItem {
                tag: t.tag,
                digest: t.digest,
                media_type,
                size,
                platforms,
                pushed_ms: t.updated_ms,
            }
        })
        .collect())
}

/// A manifest's media type, size (config and layers; an index's, its images') and platforms.
async fn describe(registry: &Registry, name: &RepoName, digest: &str) -> (String, u64, Vec<String>) {
    let Some((media_type, view)) = read_manifest(registry, name, digest).await else {
        return Default::default();
    };
    if !view.is_index() {
        return (media_type, view.image_size(), Vec::new());
    }
    let mut size = 0;
    for child in view.manifests.iter().filter(|c| !c.is_attestation()) {
        if let Some((_, image)) = read_manifest(registry, name, &child.digest).await {
            size += image.image_size();
        }
    }
    (media_type, size, view.platforms())
}

async fn read_manifest(registry: &Registry, name: &RepoName, digest: &str) -> Option<(String, ManifestView)> {
    let reference = Reference::Digest(Digest::parse(digest).ok()?);
    let m = registry.get_manifest(name, &reference).await.ok()?;
    Some((m.media_type, ManifestView::parse(&m.body)))
}

async fn manifest(
    viewer: &Viewer,
    name: &RepoName,
    reference: &Reference,
    headers: &HeaderMap,
) -> Result<Response, UiError> {
    readable(viewer, name)?;
    let registry = &viewer.ui.app.registry;
    let m = registry.get_manifest(name, reference).await?;
    let view = ManifestView::parse(&m.body);
    let size = describe(registry, name, &m.digest).await.1;
    let config = match view.config.as_ref().and_then(|c| Digest::parse(&c.digest).ok()) {
        Some(digest) => registry
            .read_small_blob(name, &digest, CONFIG_MAX_BYTES)
            .await?
            .and_then(|body| ImageConfig::parse(&body)),
        None => None,
    };
    let tags = match Digest::parse(&m.digest) {
        Ok(digest) => registry.manifest_tags(name, &digest).await?,
        Err(_) => Vec::new(),
    };
    let page = views::ManifestPage {
        name: name.to_string(),
        referrers: referrers(registry, name, &m.digest, REFERRER_DEPTH).await?,
        raw: pretty_json(&m.body),
        digest: m.digest,
        media_type: m.media_type,
        size,
        view,
        config,
        tags,
        host: viewer.registry_host(headers),
        may_delete: viewer.may_delete(name.as_str()),
    };
    Ok(views::manifest(viewer, &page).into_response())
}

/// The referrers of `subject`, and theirs, `depth` levels deep.
async fn referrers(
    registry: &Registry,
    name: &RepoName,
    subject: &str,
    depth: usize,
) -> Result<Vec<Referrer>, UiError> {
    let Ok(subject) = Digest::parse(subject) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (digest, row) in registry.referrers(name, &subject, None).await? {
        let below = if depth > 1 {
            Box::pin(referrers(registry, name, &digest, depth - 1)).await?
        } else {
            Vec::new()
        };
        out.push(Referrer {
            digest,
            artifact_type: row.artifact_type,
            media_type: row.media_type,
            size: row.size,
            annotations: row.annotations.into_iter().collect(),
            referrers: below,
        });
    }
    Ok(out)
}
