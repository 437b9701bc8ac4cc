//! The pull-through cache: repositories under a configured prefix are served from an upstream
//! registry and kept here as ordinary content. This is a layer over the registry's own reads,
//! as CNCF Distribution's `proxyblobstore.go` wraps its blob store: handlers call
//! `get_manifest`, `stat_blob` and `read_blob` as for any repository, and those come here when
//! the repository is cached.
//!
//! Ordering and what it guarantees (docs/design.md, "Pull-through cache"):
//! - **Manifests** are stored byte for byte with the upstream's media type, after their bytes
//!   were hashed and matched against the digest asked for (or the one the upstream announced).
//!   They are stored *sparse*: before their blobs and children, whose records wait as
//!   `Remote` until fetched (`meta::NewManifest::sparse`).
//! - **A tag** is trusted for `tag_ttl` after the upstream last confirmed it; then a HEAD asks
//!   again, and only a moved tag costs a GET. Revalidations of one tag are serialised, so N
//!   clients arriving together make one HEAD.
//! - **A blob** is fetched once however many clients ask at once (single flight): the first
//!   starts a detached fetch that streams into a temporary upload, hashing as it goes, and
//!   hands the bytes to that client as they arrive, all but the last chunk. Only once the
//!   digest matches does that client get its last chunk; then the blob is committed (durable,
//!   then recorded, under its digest lock, as a push is). On a mismatch the upload is
//!   discarded and the client's body breaks off, so a corrupt blob is never cached nor served
//!   whole. Other clients wait for the commit and read the local copy.
//! - **The upstream failing** leaves cached tags served (with `serve_stale`, with a `Warning`
//!   header); what was never cached answers 503, or 404 when the upstream said so.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::{BlobBody, Error, Manifest, Page, Registry};
use crate::blobs::{AppendLimits, ByteStream};
use crate::meta::{Millis, NewManifest, now_ms};
use crate::oci::manifest::{self};
use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag};
use crate::upstream::{Settings, Upstream, UpstreamError};

/// How many chunks of a streamed fetch wait for a slow first client before the fetch waits.
const CLIENT_QUEUE: usize = 16;
/// Tag revalidations are serialised per tag through this many stripes.
const TAG_STRIPES: usize = 64;
/// With several nodes, how often at most a node shares a pull of the same cached manifest.
const SHARE_PULLS_EVERY_MS: Millis = 60_000;

/// Every configured upstream.
#[derive(Debug, Default)]
pub(crate) struct Proxies {
    caches: Vec<Arc<Cache>>,
}

impl Proxies {
    pub(crate) fn new(settings: Vec<Settings>) -> Result<Self, Error> {
        let caches = settings
            .into_iter()
            .map(|s| Upstream::new(s).map(|u| Arc::new(Cache::new(u))))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Proxies { caches })
    }

    /// The cache serving `repo`, with the repository's name upstream.
    fn route(&self, repo: &str) -> Option<(&Arc<Cache>, String)> {
        self.caches.iter().find_map(|c| {
            let rest = repo.strip_prefix(c.prefix())?.strip_prefix('/')?;
            Some((c, c.upstream_name(rest)))
        })
    }

    fn by_namespace(&self, ns: &str) -> Option<&Arc<Cache>> {
        self.caches.iter().find(|c| c.upstream.settings().namespace == ns)
    }
}

/// What one pull-through cache holds: live blobs linked into its repositories (each counted
/// once), its manifests and repositories.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CacheUsage {
    pub prefix: String,
    pub upstream: String,
    pub bytes: u64,
    pub max_bytes: Option<u64>,
    pub blobs: u64,
    pub manifests: u64,
    pub repositories: u64,
}

/// What a blob fetch ended with, as its waiters see it.
#[derive(Debug, Clone)]
enum FlightError {
    NotFound(String),
    Unavailable(String),
    Corrupt(String),
    Local(String),
}

impl From<FlightError> for Error {
    fn from(e: FlightError) -> Self {
        match e {
            FlightError::NotFound(m) => Error::UpstreamBlobUnknown(m),
            FlightError::Unavailable(m) => Error::UpstreamUnavailable(m),
            FlightError::Corrupt(m) => Error::UpstreamCorrupt(m),
            FlightError::Local(m) => Error::Internal(m),
        }
    }
}

type FlightResult = Option<Result<(), FlightError>>;

/// One upstream and the cache's in-memory state for it.
#[derive(Debug)]
pub(crate) struct Cache {
    upstream: Upstream,
    /// When each `(repo, tag)` was last confirmed by the upstream (`now_ms`, which the
    /// tests' clock moves).
    confirmed: Mutex<HashMap<(String, String), Millis>>,
    /// When each cached manifest `(repo, digest)` was last pulled since the process started:
    /// what eviction orders images by (with several nodes, merged with the shared table:
    /// `record_pull`).
    pulls: Mutex<HashMap<(String, String), Millis>>,
    /// Blob fetches in flight, by digest.
    flights: Mutex<HashMap<String, watch::Receiver<FlightResult>>>,
    tag_locks: Box<[tokio::sync::Mutex<()>]>,
}

impl Cache {
    fn new(upstream: Upstream) -> Self {
        Cache {
            upstream,
            confirmed: Mutex::default(),
            pulls: Mutex::default(),
            flights: Mutex::default(),
            tag_locks: (0..TAG_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.upstream.settings().prefix
    }

    pub(crate) fn settings(&self) -> &Settings {
        self.upstream.settings()
    }

    /// Docker Hub keeps official images under `library/`: `busybox` there is `library/busybox`.
    fn upstream_name(&self, rest: &str) -> String {
        if self.settings().namespace == "docker.io" && !rest.contains('/') {
            format!("library/{rest}")
        } else {
            rest.to_owned()
        }
    }

    fn event(&self, kind: &str, event: &str) {
        crate::metrics::proxy_event(self.prefix(), kind, event);
    }

    fn fresh(&self, repo: &str, tag: &str) -> bool {
        let ttl = u64::try_from(self.settings().tag_ttl.as_millis()).unwrap_or(u64::MAX);
        let confirmed = self.confirmed.lock().expect("confirmed lock");
        confirmed
            .get(&(repo.to_owned(), tag.to_owned()))
            .is_some_and(|at| now_ms().saturating_sub(*at) < ttl)
    }

    fn confirm(&self, repo: &str, tag: &str) {
        self.confirmed
            .lock()
            .expect("confirmed lock")
            .insert((repo.to_owned(), tag.to_owned()), now_ms());
    }

    async fn lock_tag(&self, repo: &str, tag: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (repo, tag).hash(&mut h);
        let stripe = usize::try_from(h.finish() % TAG_STRIPES as u64).unwrap_or(0);
        self.tag_locks[stripe].lock().await
    }

    fn upstream_error(&self, e: &UpstreamError) -> String {
        self.event("any", "error");
        e.to_string()
    }
}

/// The role a request takes in a blob fetch.
enum Role {
    Leader(watch::Sender<FlightResult>),
    Follower(watch::Receiver<FlightResult>),
}

impl Cache {
    fn join(&self, digest: &Digest) -> Role {
        let mut flights = self.flights.lock().expect("flights lock");
        if let Some(rx) = flights.get(digest.as_str()) {
            return Role::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(digest.to_string(), rx);
        Role::Leader(tx)
    }

    /// End a flight: forget it, then wake its waiters. A request arriving after the removal
    /// finds the blob committed (or starts a new fetch after a failure).
    fn land(&self, digest: &Digest, tx: &watch::Sender<FlightResult>, result: Result<(), FlightError>) {
        self.flights.lock().expect("flights lock").remove(digest.as_str());
        tx.send_replace(Some(result));
    }
}

async fn wait(mut rx: watch::Receiver<FlightResult>) -> Result<(), Error> {
    loop {
        if let Some(result) = rx.borrow_and_update().clone() {
            return result.map_err(Error::from);
        }
        if rx.changed().await.is_err() {
            // The fetch task ended without landing (it panicked): let the caller try anew.
            return Err(Error::Internal("a blob fetch ended without a result".into()));
        }
    }
}

impl Registry {
    /// Whether `repo` belongs to a pull-through cache (read-only for clients, stored sparse).
    pub fn is_cached_repo(&self, repo: &str) -> bool {
        self.proxies.route(repo).is_some()
    }

    /// Whether manifests of `repo` may reference what is not there (yet): everywhere with
    /// `validation.sparse`, and in pull-through caches.
    pub fn sparse_allowed(&self, repo: &str) -> bool {
        self.limits.sparse_manifests || self.is_cached_repo(repo)
    }

    /// The proxy prefix a containerd mirror request's `ns` selects.
    pub fn proxy_prefix_for_namespace(&self, ns: &str) -> Option<String> {
        self.proxies.by_namespace(ns).map(|c| c.prefix().to_owned())
    }

    /// The prefix of the cache that serves names under no prefix which the registry does not
    /// hold (`serve_unprefixed`), if one does.
    pub fn unprefixed_proxy_prefix(&self) -> Option<&str> {
        self.proxies
            .caches
            .iter()
            .find(|c| c.settings().serve_unprefixed)
            .map(|c| c.prefix())
    }

    /// Refuse a write to a cached repository.
    pub(super) fn refuse_cached(&self, repo: &RepoName) -> Result<(), Error> {
        match self.proxies.route(repo.as_str()) {
            Some((cache, _)) => Err(Error::Unsupported(format!(
                "{repo} is in the pull-through cache of {}, which is read-only; push to a repository outside {}/",
                cache.settings().url,
                cache.prefix()
            ))),
            None => Ok(()),
        }
    }

    /// The cached-repository path of `get_manifest`; `None` when `repo` is not cached.
    pub(super) async fn cached_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Option<Result<Manifest, Error>> {
        let (cache, name) = self.proxies.route(repo.as_str())?;
        let cache = Arc::clone(cache);
        let served = match reference {
            Reference::Digest(d) => self.cached_manifest_by_digest(&cache, repo, &name, d).await,
            Reference::Tag(t) => self.cached_manifest_by_tag(&cache, repo, &name, t).await,
        };
        if let Ok(m) = &served {
            self.record_pull(&cache, repo.as_str(), &m.digest).await;
        }
        Some(served)
    }

    /// Remember a pull of a cached manifest. With several nodes it goes to the shared database
    /// too, at most once per `SHARE_PULLS_EVERY_MS` per node and manifest (eviction needs
    /// minutes, not milliseconds); a failure to share it costs only eviction order, and is
    /// logged.
    async fn record_pull(&self, cache: &Cache, repo: &str, digest: &str) {
        let now = now_ms();
        let key = (repo.to_owned(), digest.to_owned());
        let before = cache.pulls.lock().expect("pulls lock").insert(key, now);
        let Some(cluster) = self.meta.cluster() else { return };
        if before.is_some_and(|t| now.saturating_sub(t) < SHARE_PULLS_EVERY_MS) {
            return;
        }
        if let Err(e) = cluster.record_pull(repo, digest, now).await {
            tracing::warn!(error = %e, "could not share a pull-through cache pull");
        }
    }

    /// What each pull-through cache holds (`/admin/usage`).
    pub async fn cache_usage(&self) -> Result<Vec<CacheUsage>, Error> {
        if self.proxies.caches.is_empty() {
            return Ok(Vec::new());
        }
        let snap = self.meta.gc_snapshot().await?;
        let caches = self.proxies.caches.iter().map(|c| {
            let prefix = c.prefix();
            let (bytes, blobs) = snap.linked_under(prefix);
            let in_cache = |repo: &str| repo.strip_prefix(prefix).is_some_and(|r| r.starts_with('/'));
            let manifests = snap.manifests.keys().filter(|(r, _)| in_cache(r)).count() as u64;
            let repositories = snap
                .manifests
                .keys()
                .filter(|(r, _)| in_cache(r))
                .map(|(r, _)| r.as_str())
                .collect::<std::collections::HashSet<_>>()
                .len() as u64;
            CacheUsage {
                prefix: prefix.to_owned(),
                upstream: c.settings().url.clone(),
                bytes,
                max_bytes: c.settings().max_bytes,
                blobs,
                manifests,
                repositories,
            }
        });
        Ok(caches.collect())
    }

    /// Each bounded cache's prefix and `max_bytes`, for eviction.
    pub(crate) fn cache_bounds(&self) -> Vec<(String, u64)> {
        self.proxies
            .caches
            .iter()
            .filter_map(|c| Some((c.prefix().to_owned(), c.settings().max_bytes?)))
            .collect()
    }

    /// When each cached manifest was last pulled, for eviction: since start-up, and with
    /// several nodes, through any node.
    pub(crate) async fn cache_pulls(&self) -> Result<HashMap<(String, String), Millis>, Error> {
        let mut all: HashMap<(String, String), Millis> = match self.meta.cluster() {
            Some(cluster) => cluster.pulls().await?.into_iter().collect(),
            None => HashMap::new(),
        };
        for cache in &self.proxies.caches {
            for (key, at) in cache.pulls.lock().expect("pulls lock").iter() {
                let known = all.entry(key.clone()).or_default();
                *known = (*known).max(*at);
            }
        }
        Ok(all)
    }

    /// Evict cached manifests (with their tags): the sweep that follows frees what only they
    /// held. One already gone is skipped. Answers how many went.
    pub(crate) async fn evict_cached(&self, manifests: Vec<(String, String)>) -> Result<u64, Error> {
        let mut evicted = 0;
        for (repo, digest) in manifests {
            let (Ok(name), Ok(d)) = (RepoName::parse(&repo), Digest::parse(&digest)) else {
                continue;
            };
            let Some((cache, _)) = self.proxies.route(name.as_str()) else {
                continue;
            };
            match self
                .meta_write(|m| m.delete_manifest(&name, &d, crate::meta::Protected::default()))
                .await
            {
                Ok(()) => evicted += 1,
                Err(Error::ManifestUnknown) => {}
                Err(e) => return Err(e),
            }
            if let Some(cluster) = self.meta.cluster() {
                cluster.forget_pull(&repo, &digest).await?;
            }
            cache.pulls.lock().expect("pulls lock").remove(&(repo, digest));
        }
        Ok(evicted)
    }

    async fn cached_manifest_by_digest(
        &self,
        cache: &Cache,
        repo: &RepoName,
        name: &str,
        digest: &Digest,
    ) -> Result<Manifest, Error> {
        if let Some(row) = self.meta.manifest(repo, digest).await? {
            cache.event("manifest", "hit");
            return Ok(Manifest::from_row(digest.to_string(), row));
        }
        cache.event("manifest", "miss");
        self.fetch_manifest(cache, repo, name, digest.as_str(), Some(digest), None)
            .await
    }

    async fn cached_manifest_by_tag(
        &self,
        cache: &Cache,
        repo: &RepoName,
        name: &str,
        tag: &Tag,
    ) -> Result<Manifest, Error> {
        let local = self.meta.manifest_by_tag(repo, tag).await?;
        if let Some((digest, row)) = local.filter(|_| cache.fresh(repo.as_str(), tag.as_str())) {
            cache.event("manifest", "hit");
            return Ok(Manifest::from_row(digest, row));
        }
        // One revalidation per tag at a time; those who waited find it fresh.
        let _guard = cache.lock_tag(repo.as_str(), tag.as_str()).await;
        let local = self.meta.manifest_by_tag(repo, tag).await?;
        if let Some((digest, row)) = local.clone().filter(|_| cache.fresh(repo.as_str(), tag.as_str())) {
            cache.event("manifest", "hit");
            return Ok(Manifest::from_row(digest, row));
        }
        match cache.upstream.head_manifest(name, tag.as_str()).await {
            Ok(head) => {
                if let (Some(now), Some((digest, row))) = (&head.digest, &local)
                    && now.as_str() == digest
                {
                    cache.event("manifest", "revalidated");
                    cache.confirm(repo.as_str(), tag.as_str());
                    return Ok(Manifest::from_row(digest.clone(), row.clone()));
                }
                cache.event("manifest", if local.is_some() { "changed" } else { "miss" });
                let by = head.digest.as_ref().map_or(tag.as_str(), Digest::as_str);
                let fetched = self
                    .fetch_manifest(cache, repo, name, by, head.digest.as_ref(), Some(tag))
                    .await;
                Self::stale_or(cache, local, fetched, repo, tag)
            }
            Err(UpstreamError::NotFound) => Err(Error::UpstreamManifestUnknown(format!(
                "upstream {} has no tag {tag} in {name}",
                cache.settings().url
            ))),
            Err(e) => {
                let why = cache.upstream_error(&e);
                Self::stale_or(cache, local, Err(Error::UpstreamUnavailable(why)), repo, tag)
            }
        }
    }

    /// `fetched`, or when that failed for want of the upstream, the cached manifest marked
    /// stale (with `serve_stale`).
    fn stale_or(
        cache: &Cache,
        local: Option<(String, crate::meta::ManifestRow)>,
        fetched: Result<Manifest, Error>,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Manifest, Error> {
        match (fetched, local) {
            (Err(Error::UpstreamUnavailable(why)), Some((digest, row))) if cache.settings().serve_stale => {
                cache.event("manifest", "stale");
                tracing::warn!(%repo, %tag, error = %why, "serving a cached tag the upstream could not confirm");
                let mut m = Manifest::from_row(digest, row);
                m.warning = Some(format!(
                    "{repo}:{tag} is served from the cache: its upstream could not be reached to check it"
                ));
                Ok(m)
            }
            (fetched, _) => fetched.inspect(|_| cache.confirm(repo.as_str(), tag.as_str())),
        }
    }

    /// GET a manifest upstream, check its bytes against `expected` (and the digest the upstream
    /// announced), and store it sparse, under `tag` if given.
    async fn fetch_manifest(
        &self,
        cache: &Cache,
        repo: &RepoName,
        name: &str,
        reference: &str,
        expected: Option<&Digest>,
        tag: Option<&Tag>,
    ) -> Result<Manifest, Error> {
        let limit = self.limits.manifest_max_bytes;
        let fetched = match cache.upstream.manifest(name, reference, limit).await {
            Ok(f) => f,
            Err(UpstreamError::NotFound) => {
                return Err(Error::UpstreamManifestUnknown(format!(
                    "upstream {} has no manifest {reference} in {name}",
                    cache.settings().url
                )));
            }
            Err(e) => return Err(Error::UpstreamUnavailable(cache.upstream_error(&e))),
        };
        let announced = expected.or(fetched.digest.as_ref());
        let algorithm = announced.map_or(Algorithm::Sha256, Digest::algorithm);
        let digest = Digest::of(algorithm, &fetched.body);
        if let Some(want) = announced
            && *want != digest
        {
            cache.event("manifest", "error");
            return Err(Error::UpstreamCorrupt(format!(
                "upstream {} sent a manifest for {name}:{reference} that hashes to {digest}, not {want}; nothing was cached",
                cache.settings().url
            )));
        }
        let parsed = manifest::parse(&fetched.body, Some(&fetched.media_type))?;
        let new = NewManifest {
            sparse: true,
            ..super::manifests::new_manifest(
                repo.clone(),
                digest.clone(),
                tag.into_iter().cloned().collect(),
                &parsed,
                super::manifests::manifest_row(&parsed, fetched.body.clone()),
            )
        };
        self.meta_write(|m| m.put_manifest(new, now_ms())).await?;
        Ok(Manifest {
            digest: digest.to_string(),
            media_type: parsed.media_type,
            body: fetched.body,
            warning: None,
        })
    }

    /// The cached-repository path of `tags`: the upstream's list, or ours while it fails.
    pub(super) async fn cached_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Option<Result<Page, Error>> {
        let (cache, name) = self.proxies.route(repo.as_str())?;
        let limit = (n != usize::MAX).then_some(n);
        Some(match cache.upstream.tags(&name, last, limit).await {
            Ok((items, more)) => Ok(Page { items, more }),
            Err(UpstreamError::NotFound) => Err(Error::NameUnknown(repo.to_string())),
            Err(e) => {
                let why = cache.upstream_error(&e);
                match self.local_tags(repo, last.map(str::to_owned), n).await {
                    Ok(page) if cache.settings().serve_stale => Ok(page),
                    _ => Err(Error::UpstreamUnavailable(why)),
                }
            }
        })
    }

    /// The cached-repository path of `stat_blob`.
    pub(super) async fn cached_blob_size(&self, repo: &RepoName, digest: &Digest) -> Option<Result<u64, Error>> {
        let (cache, name) = self.proxies.route(repo.as_str())?;
        if let Some(size) = self.local_blob_size(repo, digest).await {
            cache.event("blob", "hit");
            return Some(Ok(size));
        }
        Some(match cache.upstream.blob_size(&name, digest).await {
            Ok(Some(size)) => Ok(size),
            Ok(None) => Err(Error::UpstreamUnavailable(format!(
                "upstream {} sent no size for blob {digest}",
                cache.settings().url
            ))),
            Err(UpstreamError::NotFound) => Err(blob_not_upstream(cache, &name, digest)),
            Err(e) => Err(Error::UpstreamUnavailable(cache.upstream_error(&e))),
        })
    }

    async fn local_blob_size(&self, repo: &RepoName, digest: &Digest) -> Option<u64> {
        let row = self.meta.linked_blob(repo, digest).await.ok()??;
        (self.blobs.stat(digest).await.ok()? == Some(row.size)).then_some(row.size)
    }

    /// The cached-repository path of `read_blob`. With `stream`, a cold blob is sent as it
    /// arrives from the upstream; without (a `Range` request), the fetch completes first.
    pub(super) async fn cached_blob(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
        stream: bool,
    ) -> Option<Result<BlobBody, Error>> {
        let (cache, name) = self.proxies.route(repo.as_str())?;
        let cache = Arc::clone(cache);
        Some(self.cached_blob_in(&cache, repo, &name, digest, stream).await)
    }

    async fn cached_blob_in(
        self: &Arc<Self>,
        cache: &Arc<Cache>,
        repo: &RepoName,
        name: &str,
        digest: &Digest,
        stream: bool,
    ) -> Result<BlobBody, Error> {
        // Two rounds: a blob evicted between its fetch landing and our read is fetched again.
        for _ in 0..2 {
            if let Some(body) = self.local_blob(repo, digest).await? {
                cache.event("blob", "hit");
                return Ok(body);
            }
            // Stored for another repository already: link it here rather than fetch it.
            if self.meta_write(|m| m.mount_blob(repo, digest, None, now_ms())).await? {
                continue;
            }
            cache.event("blob", "miss");
            match cache.join(digest) {
                Role::Follower(rx) => wait(rx).await?,
                Role::Leader(tx) => {
                    let client = if stream {
                        Some(mpsc::channel(CLIENT_QUEUE))
                    } else {
                        None
                    };
                    let (client_tx, client_rx) = client.map_or((None, None), |(t, r)| (Some(t), Some(r)));
                    let rx = tx.subscribe();
                    let fetch = Fetch {
                        registry: Arc::clone(self),
                        cache: Arc::clone(cache),
                        repo: repo.clone(),
                        name: name.to_owned(),
                        digest: digest.clone(),
                    };
                    let (size_tx, size_rx) = tokio::sync::oneshot::channel();
                    tokio::spawn(fetch.run(tx, client_tx, size_tx));
                    if let Some(client_rx) = client_rx
                        && let Ok(Some(size)) = size_rx.await
                    {
                        return Ok(BlobBody::Stream {
                            size,
                            stream: client_stream(client_rx),
                        });
                    }
                    wait(rx).await?;
                }
            }
        }
        Err(Error::BlobUnknown)
    }

    /// The local copy of a blob in `repo`, if it is linked, live and its bytes are there.
    async fn local_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobBody>, Error> {
        let Some(row) = self.meta.linked_blob(repo, digest).await? else {
            return Ok(None);
        };
        if let Some(url) = self.blobs.redirect(digest).await? {
            return Ok(Some(BlobBody::Redirect { size: row.size, url }));
        }
        Ok(self
            .blobs
            .open(digest, row.size)
            .await?
            .map(|reader| BlobBody::Bytes { size: row.size, reader }))
    }
}

fn blob_not_upstream(cache: &Cache, name: &str, digest: &Digest) -> Error {
    Error::UpstreamBlobUnknown(format!(
        "upstream {} has no blob {digest} in {name}",
        cache.settings().url
    ))
}

/// The bytes a leader's client receives: what the fetch hands over, or an error that breaks
/// the body off.
fn client_stream(rx: mpsc::Receiver<io::Result<Bytes>>) -> ByteStream {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// One blob fetch, detached from the request that started it so that it lands for the other
/// waiters even when that client goes away.
struct Fetch {
    registry: Arc<Registry>,
    cache: Arc<Cache>,
    repo: RepoName,
    name: String,
    digest: Digest,
}

/// The first client's share of a fetch: each chunk is passed on once the next one has
/// arrived, so the last one waits for the digest check.
struct Tee {
    held: Option<Bytes>,
    client: Option<mpsc::Sender<io::Result<Bytes>>>,
    idle: Duration,
    /// Whether a chunk has been passed on yet.
    streaming: bool,
}

impl Tee {
    async fn pass(&mut self, chunk: Bytes) {
        if let Some(prev) = self.held.replace(chunk) {
            self.send(Ok(prev)).await;
            if !self.streaming {
                self.streaming = true;
                // Test builds: a client holds its first bytes, the rest still to come.
                crate::testhook::pause("proxy.streaming", || {}).await;
            }
        }
    }

    /// Send to the client; a client gone or stalled past the idle limit is dropped, and the
    /// fetch goes on for the others.
    async fn send(&mut self, item: io::Result<Bytes>) {
        let Some(client) = &self.client else { return };
        match tokio::time::timeout(self.idle, client.send(item)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => self.client = None,
        }
    }
}

impl Fetch {
    async fn run(
        self,
        tx: watch::Sender<FlightResult>,
        client: Option<mpsc::Sender<io::Result<Bytes>>>,
        size_tx: tokio::sync::oneshot::Sender<Option<u64>>,
    ) {
        let tee = Arc::new(tokio::sync::Mutex::new(Tee {
            held: None,
            client,
            idle: self.registry.limits.body_idle_timeout,
            streaming: false,
        }));
        let result = self.fetch(&tee, size_tx).await;
        let mut tee = tee.lock().await;
        match &result {
            Ok(()) => {
                if let Some(last) = tee.held.take() {
                    tee.send(Ok(last)).await;
                }
            }
            Err(e) => {
                tracing::warn!(upstream = %self.cache.settings().url, digest = %self.digest, error = ?e, "blob fetch failed");
                let message = match e {
                    FlightError::NotFound(m)
                    | FlightError::Unavailable(m)
                    | FlightError::Corrupt(m)
                    | FlightError::Local(m) => m.clone(),
                };
                tee.send(Err(io::Error::other(message))).await;
            }
        }
        tee.client = None;
        drop(tee);
        self.cache.land(&self.digest, &tx, result);
    }

    async fn fetch(
        &self,
        tee: &Arc<tokio::sync::Mutex<Tee>>,
        size_tx: tokio::sync::oneshot::Sender<Option<u64>>,
    ) -> Result<(), FlightError> {
        let url = &self.cache.settings().url;
        let fetched = match self.cache.upstream.blob(&self.name, &self.digest).await {
            Ok(f) => f,
            Err(UpstreamError::NotFound) => {
                let _ = size_tx.send(None);
                return Err(FlightError::NotFound(format!(
                    "upstream {url} has no blob {} in {}",
                    self.digest, self.name
                )));
            }
            Err(e) => {
                let _ = size_tx.send(None);
                return Err(FlightError::Unavailable(self.cache.upstream_error(&e)));
            }
        };
        let limits = self.registry.limits;
        if fetched.size.is_some_and(|n| n > limits.blob_max_bytes) {
            let _ = size_tx.send(None);
            return Err(FlightError::Unavailable(format!(
                "upstream {url} offers blob {} of {} bytes, over this registry's limit of {}",
                self.digest,
                fetched.size.unwrap_or_default(),
                limits.blob_max_bytes
            )));
        }
        let _ = size_tx.send(fetched.size);
        let local = |e: &dyn std::fmt::Display| FlightError::Local(format!("caching blob {}: {e}", self.digest));
        let upload = self
            .registry
            .blobs
            .temp_upload(self.digest.algorithm())
            .await
            .map_err(|e| local(&e))?;
        let passing = Arc::clone(tee);
        let body = fetched.body.then(move |item| {
            let tee = Arc::clone(&passing);
            async move {
                if let Ok(chunk) = &item {
                    tee.lock().await.pass(chunk.clone()).await;
                }
                item
            }
        });
        let append = AppendLimits {
            max_len: limits.blob_max_bytes,
            exact: fetched.size,
            idle: limits.body_idle_timeout,
        };
        let (upload, appended) = upload.append(Box::pin(body), append).await;
        let received = match appended {
            Ok(n) => n,
            Err(e) => {
                let _ = upload.discard().await;
                return Err(FlightError::Unavailable(self.cache.upstream_error(
                    &UpstreamError::Unavailable(format!("upstream {url} broke off blob {}: {e}", self.digest)),
                )));
            }
        };
        crate::metrics::get()
            .proxy_upstream_bytes
            .get_or_create(&crate::metrics::UpstreamLabels {
                upstream: self.cache.prefix().to_owned(),
            })
            .inc_by(received);
        let actual = upload.digest(self.digest.algorithm()).await.map_err(|e| local(&e))?;
        if actual != self.digest {
            let _ = upload.discard().await;
            self.cache.event("blob", "error");
            return Err(FlightError::Corrupt(format!(
                "upstream {url} sent bytes for blob {} that hash to {actual}; nothing was cached",
                self.digest
            )));
        }
        // Every byte is verified: the first client gets its last chunk and its body ends now,
        // without waiting for the commit's durable write.
        {
            let mut tee = tee.lock().await;
            if let Some(last) = tee.held.take() {
                tee.send(Ok(last)).await;
            }
            tee.client = None;
        }
        crate::testhook::pause("proxy.before_commit", || {}).await;
        self.registry
            .commit_staged(&self.repo, upload, &self.digest, None, None)
            .await
            .map_err(|e| local(&e))
    }
}
