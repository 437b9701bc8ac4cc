//! Use cases of the registry: the only layer that touches both the metadata store and the blob
//! files, and so the owner of their ordering:
//!
//! - a blob is durable on disk (fsync, rename, fsync dir) before the metadata commit that
//!   records and links it;
//! - a manifest is accepted only inside a write transaction that sees every blob it needs
//!   linked and live, so no stored manifest ever references a missing blob;
//! - commits and deletions of the same digest are serialised by `DigestLocks`, so a blob file
//!   cannot be unlinked between a push's rename and its metadata commit. When several nodes
//!   share the metadata (`MetaStore::cluster`), those locks are also PostgreSQL advisory
//!   locks, and HEAD touches are rows, so the ordering holds across the nodes.
//!
//! The metadata store is an `Arc<dyn MetaStore>` and the blob store an `Arc<dyn BlobStore>`:
//! this layer knows neither backend. Metadata reads are awaited (each backend runs them where
//! it should: redb's point reads on the hot path's fixed threads, its scans on the blocking
//! pool); writes are built as `WriteOp`s and their commits awaited (`meta_write`), holding no
//! thread.

mod audit;
mod blobs;
mod browse;
mod error;
mod import;
mod listing;
pub(crate) mod locks;
mod maintenance;
mod manifests;
pub(crate) mod policy;
mod proxy;
mod search;
mod uploads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::blobs::BlobStore;
use crate::meta::{MetaStore, Millis, WriteOp, now_ms};
use crate::oci::Digest;

pub use audit::{AUDIT_PAGE_MAX, AuditEntry, AuditListing, Routes, audit_query, notification_action, rfc3339};
pub use blobs::{BlobBody, stream};
pub use error::Error;
pub use import::Presence;
pub use listing::Page;
pub use manifests::{Manifest, ManifestPut};
pub(crate) use manifests::{References, references};
pub use policy::Policies;
pub use proxy::CacheUsage;
pub use search::{Found, SearchTerm};
pub use uploads::UploadStatus;

/// Size limits applied to request bodies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub manifest_max_bytes: u64,
    pub blob_max_bytes: u64,
    pub upload_sessions: u64,
    pub upload_sessions_per_client: u64,
    pub body_idle_timeout: std::time::Duration,
    /// At a session limit, sessions no request used for this long are closed to make room.
    pub upload_idle_timeout: std::time::Duration,
    /// Accept manifests whose blobs or children are absent (`validation.sparse`).
    pub sparse_manifests: bool,
}

/// The registry: metadata, blob files and in-flight uploads.
#[derive(Debug)]
pub struct Registry {
    meta: Arc<dyn MetaStore>,
    blobs: Arc<dyn BlobStore>,
    uploads: uploads::Sessions,
    locks: locks::DigestLocks,
    limits: Limits,
    /// When each blob was last HEAD-checked (a client about to reference it in a manifest).
    /// Garbage collection treats a recent touch like a recent upload. Unused when the
    /// metadata is shared: then touches are rows (`meta::SharedLocks`).
    touches: Arc<Mutex<HashMap<String, Millis>>>,
    /// Pull-through caches: repositories under their prefixes come from upstreams.
    proxies: proxy::Proxies,
    /// Immutable tags and the other write policies, replaced on a configuration reload.
    policies: policy::Current,
    /// Which notification endpoints get which events, replaced on a configuration reload.
    routes: audit::CurrentRoutes,
}

impl Registry {
    /// Assemble a registry over an opened store, reconciling leftovers of an earlier crash.
    ///
    /// An unreachable blob store does not stop start-up: what the metadata alone answers is
    /// served, requests that need the store get 503 until it is back, and the leftovers wait
    /// for the next start (tombstoned blobs are absent to readers either way).
    pub async fn open(meta: Arc<dyn MetaStore>, blobs: Arc<dyn BlobStore>, limits: Limits) -> Result<Arc<Self>, Error> {
        Self::open_with(meta, blobs, limits, Vec::new()).await
    }

    /// `open`, with pull-through caches in front of the upstreams in `proxies`.
    pub async fn open_with(
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        limits: Limits,
        proxies: Vec<crate::upstream::Settings>,
    ) -> Result<Arc<Self>, Error> {
        let registry = Self::open_as_is(meta, blobs, limits, proxies)?;
        let cleaned = match registry.finish_tombstones().await {
            Ok(()) => registry.reconcile_staging().await,
            Err(e) => Err(e),
        };
        match cleaned {
            Err(Error::StorageUnavailable(why)) => {
                tracing::warn!(error = %why, "blob store unreachable at start-up; crash leftovers are cleaned at the next start");
                Ok(registry)
            }
            other => other.map(|()| registry),
        }
    }

    /// Assemble a registry without touching the store: no start-up reconciliation, so that
    /// `fsck` sees crash leftovers as they are.
    pub fn open_as_is(
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        limits: Limits,
        proxies: Vec<crate::upstream::Settings>,
    ) -> Result<Arc<Self>, Error> {
        let locks = locks::DigestLocks::new(meta.shared_locks());
        Ok(Arc::new(Registry {
            meta,
            blobs,
            uploads: uploads::Sessions::default(),
            locks,
            limits,
            touches: Arc::default(),
            proxies: proxy::Proxies::new(proxies)?,
            policies: policy::Current::default(),
            routes: audit::CurrentRoutes::default(),
        }))
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The smallest chunk a chunked upload may send (`OCI-Chunk-Min-Length`), if the blob
    /// store has one.
    pub fn min_chunk(&self) -> Option<u64> {
        self.blobs.min_chunk()
    }

    /// What the blob store is, for logs.
    pub fn describe_storage(&self) -> String {
        self.blobs.describe()
    }

    /// Record a HEAD of `digest`, under its lock so that a sweep deciding about the blob sees
    /// either the touch or (if it committed first) answers the HEAD with 404. With shared
    /// metadata the touch is a row every node's garbage collection reads.
    async fn touch(&self, digest: &Digest) -> Result<(), Error> {
        let guard = self.locks.lock(digest.as_str()).await?;
        match guard.held() {
            Some(held) => held.touch(digest.as_str(), now_ms()).await?,
            None => {
                self.touches
                    .lock()
                    .expect("touches lock")
                    .insert(digest.to_string(), now_ms());
            }
        }
        Ok(())
    }

    /// A predicate telling whether a blob was touched at or after `cutoff_ms`, usable from
    /// blocking code (garbage collection's mark, which the sweeps re-check under the locks).
    pub(crate) async fn touched_since(&self, cutoff_ms: Millis) -> Result<Touched, Error> {
        if let Some(cluster) = self.locks.shared() {
            let touched = cluster.touched_since(cutoff_ms).await?;
            return Ok(Box::new(move |digest| touched.contains(digest)));
        }
        let touches = Arc::clone(&self.touches);
        Ok(Box::new(move |digest| {
            touches
                .lock()
                .expect("touches lock")
                .get(digest)
                .is_some_and(|&t| t >= cutoff_ms)
        }))
    }

    /// Which of `digests`, whose locks `guard` holds, were touched at or after `cutoff_ms`:
    /// true until the guard drops, since a touch needs the lock.
    pub(crate) async fn touched_under(
        &self,
        guard: &locks::Guard<'_>,
        digests: &[&str],
        cutoff_ms: Millis,
    ) -> Result<Touched, Error> {
        let Some(held) = guard.held() else {
            return self.touched_since(cutoff_ms).await;
        };
        let touched = held.touched(digests, cutoff_ms).await?;
        Ok(Box::new(move |digest| touched.contains(digest)))
    }

    /// Forget touches older than `cutoff_ms`.
    pub(crate) async fn prune_touches(&self, cutoff_ms: Millis) -> Result<(), Error> {
        if let Some(cluster) = self.locks.shared() {
            cluster.prune_touches(cutoff_ms).await?;
            return Ok(());
        }
        self.touches
            .lock()
            .expect("touches lock")
            .retain(|_, t| *t >= cutoff_ms);
        Ok(())
    }

    /// Start-up: finish deletions that garbage collection committed but a crash interrupted.
    /// Touches only the tombstones.
    async fn finish_tombstones(&self) -> Result<(), Error> {
        let tombstones = self.meta.tombstones().await?;
        if tombstones.is_empty() {
            return Ok(());
        }
        if self.locks.shared().is_some() {
            return self.finish_shared_tombstones(tombstones).await;
        }
        let count = tombstones.len();
        self.delete_tombstoned(tombstones).await?;
        tracing::info!(count, "finished blob deletions interrupted by a crash");
        Ok(())
    }

    /// `finish_tombstones` while other nodes serve (shared metadata): under the digests' locks,
    /// so a collection in progress on another node is waited out, and sparing the bytes of a
    /// blob that a push revived since its tombstone (only its tombstone row goes).
    async fn finish_shared_tombstones(&self, tombstones: Vec<Digest>) -> Result<(), Error> {
        let _guard = self.locks.lock_many(tombstones.iter().map(Digest::as_str)).await?;
        let (mut doomed, mut revived) = (Vec::new(), Vec::new());
        for digest in tombstones {
            match self.meta.live_blob(&digest).await? {
                Some(_) => revived.push(digest),
                None => doomed.push(digest),
            }
        }
        let count = doomed.len();
        self.delete_tombstoned(doomed).await?;
        self.meta_write(|m| m.gc_finish_tombstones(&revived)).await?;
        tracing::info!(
            count,
            revived = revived.len(),
            "finished blob deletions interrupted by a crash"
        );
        Ok(())
    }

    /// The second half of every blob deletion, after the commit that tombstoned the blobs:
    /// delete each blob from the store, then drop the rows still tombstoned. The caller holds
    /// the digests' locks, or (start-up, fsck repair of leftovers) no push can race.
    pub(crate) async fn delete_tombstoned(&self, digests: Vec<Digest>) -> Result<(), Error> {
        for d in &digests {
            self.blobs.delete(d).await?;
        }
        crate::crashpoint::hit("gc.after_unlink");
        self.meta_write(|m| m.gc_finish_tombstones(&digests)).await
    }

    /// Storage usage per repository and in total, from the metadata.
    pub async fn usage(&self) -> Result<crate::meta::usage::Usage, Error> {
        Ok(self.meta.usage().await?)
    }

    /// Each quota's usage against its limit (`/admin/usage`, the metrics).
    pub async fn quota_usage(&self) -> Result<Vec<crate::meta::QuotaUsage>, Error> {
        let quotas = self.policies.get().quotas();
        if quotas.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.meta.quota_usage(quotas).await?)
    }

    /// Set the store gauges of the metrics from the metadata (at scrape time).
    pub async fn refresh_gauges(&self) -> Result<(), Error> {
        let counts = self.meta.counts().await?;
        let m = crate::metrics::get();
        let g = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        m.blobs.set(g(counts.blobs));
        m.manifests.set(g(counts.manifests));
        m.tags.set(g(counts.tags));
        m.repositories.set(g(counts.repositories));
        m.stored_bytes.set(g(counts.stored_bytes));
        m.uploads_active.set(g(self.uploads.len() as u64));
        let quotas = self.quota_usage().await?;
        // A quota a reload removed leaves the exposition.
        m.quota_bytes.clear();
        m.quota_limit_bytes.clear();
        for q in quotas {
            let labels = crate::metrics::QuotaLabels { quota: q.quota };
            m.quota_bytes.get_or_create(&labels).set(g(q.used_bytes));
            m.quota_limit_bytes.get_or_create(&labels).set(g(q.max_bytes));
        }
        Ok(())
    }

    /// Coordination with the other nodes sharing the metadata, if it is shared.
    pub fn cluster(&self) -> Option<Arc<dyn crate::meta::cluster::Cluster>> {
        self.meta.cluster()
    }

    /// Whether the shared metadata database answers within `timeout` (for readiness probes);
    /// always `Ok` for metadata this process owns.
    pub async fn check_metadata(&self, timeout: std::time::Duration) -> Result<(), Error> {
        match self.meta.cluster() {
            Some(cluster) => Ok(cluster.ping(timeout).await?),
            None => Ok(()),
        }
    }

    /// Whether the staging area accepts a new file (for readiness probes).
    pub async fn check_writable(&self) -> Result<(), Error> {
        Ok(self.blobs.check_writable().await?)
    }

    /// A metadata write, built here and committed by the store: no thread waits for the
    /// commit (see `meta::WriteOp`).
    pub(crate) async fn meta_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn MetaStore) -> WriteOp<T>,
    ) -> Result<T, Error> {
        Ok(f(&*self.meta).commit().await?)
    }
}

/// Whether a blob was HEAD-checked recently enough to keep, usable from blocking code.
pub(crate) type Touched = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Run blocking work on the blocking pool and wait for it.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task panicked")
}
