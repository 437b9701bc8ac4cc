//! What several nodes sharing one metadata database coordinate through it: **leases** (a named
//! job that one node runs at a time: garbage collection, retention, fsck, the webhook sender),
//! **job statuses** that any node can read, and a **reachability probe** for `/readyz`.
//!
//! Only a shared backend has a [`Cluster`] (`MetaStore::cluster`, PostgreSQL's in
//! `pg_cluster`); redb, which one process owns, has none, and its callers keep their
//! in-process behaviour. This module knows nothing of HTTP; what a job reports is opaque JSON
//! text to it.
//!
//! **Pulls.** When each manifest of a pull-through cache was last pulled, by any node: what
//! eviction orders images by.
//!
//! **Leases.** A lease is a row `(name, holder, job, expires_ms)`, taken in one statement: an
//! insert, or a takeover of a row whose `expires_ms` has passed (or that the same holder holds
//! for the same job). Expiry is read from the database's clock, never a node's, so clock skew
//! between nodes cannot make two holders. A holder renews while it works
//! ([`Member::hold`], every third of the lease) and releases at the end; a node killed with
//! `kill -9` simply stops renewing, and another may take the lease once it has expired. A
//! holder that cannot renew for a whole lease (it lost the database), or finds the lease
//! taken, stops its work: from then on another node may run it.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::MetaError;
use super::schema::Millis;

/// The default lease (`metadata.postgres.lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Jobs of each kind kept in the shared table.
pub const JOB_HISTORY: usize = 20;

/// The outcome of claiming a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The lease is ours until it expires, unless renewed.
    Won,
    /// Another node (or another job of ours) holds it.
    Held { holder: String, job: String },
}

/// A job's last reported status, as the shared table keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: String,
    pub kind: String,
    /// The node that runs (or ran) it.
    pub node: String,
    /// What the job reported, as JSON text.
    pub status: String,
    /// How long ago, by the database's clock, the row was last written.
    pub age_ms: Millis,
}

/// Coordination through a metadata database shared by several nodes. Every method is one
/// statement (`claim`: at most a few), safe to call concurrently from any node.
#[async_trait::async_trait]
pub trait Cluster: Send + Sync + Debug + 'static {
    /// A trivial query, answered within `timeout`.
    async fn ping(&self, timeout: Duration) -> Result<(), MetaError>;

    /// Take lease `name` for `job` of `holder` for `ttl`, if it is free or expired.
    async fn claim(&self, name: &str, holder: &str, job: &str, ttl: Duration) -> Result<Claim, MetaError>;

    /// Extend our lease by `ttl` from now; `false` when it is no longer ours.
    async fn renew(&self, name: &str, holder: &str, job: &str, ttl: Duration) -> Result<bool, MetaError>;

    /// Give our lease up (nothing happens if it is no longer ours).
    async fn release(&self, name: &str, holder: &str, job: &str) -> Result<(), MetaError>;

    /// Write a job's status (`age_ms` is ignored: the row is stamped with the database's clock).
    async fn put_job(&self, job: &JobRecord) -> Result<(), MetaError>;

    /// Job `id` of `kind`.
    async fn job(&self, kind: &str, id: &str) -> Result<Option<JobRecord>, MetaError>;

    /// The most recent jobs of `kind` (newest first), at most `limit`; older ones are deleted.
    async fn jobs(&self, kind: &str, limit: usize) -> Result<Vec<JobRecord>, MetaError>;

    /// Record that the cached manifest `digest` of `repo` was pulled at `at_ms`.
    async fn record_pull(&self, repo: &str, digest: &str, at_ms: Millis) -> Result<(), MetaError>;

    /// When each cached manifest `(repo, digest)` was last pulled, through any node.
    async fn pulls(&self) -> Result<Vec<((String, String), Millis)>, MetaError>;

    /// Forget the pulls of an evicted manifest.
    async fn forget_pull(&self, repo: &str, digest: &str) -> Result<(), MetaError>;

    /// A secret shared by every node under `name`: `fresh` if none was stored yet, else the
    /// one the first node stored.
    async fn shared_secret(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, MetaError>;
}

/// This node as a member of a cluster: the database, its name there and the lease it takes.
#[derive(Debug, Clone)]
pub struct Member {
    pub cluster: Arc<dyn Cluster>,
    /// This node's name, unique among the nodes (the holder of its leases).
    pub node: String,
    pub lease: Duration,
}

/// Why held work stopped before it finished.
#[derive(Debug, thiserror::Error)]
pub enum LeaseLost {
    #[error("lost the {0} lease to another node")]
    Taken(String),
    #[error("could not renew the {0} lease for a whole lease period (the metadata database is unreachable)")]
    Unrenewed(String),
}

impl Member {
    /// A member named after `addr`, with a random suffix so that a restarted node is a new
    /// holder (it never believes it still holds what its predecessor held).
    pub fn new(cluster: Arc<dyn Cluster>, addr: &str, lease: Duration) -> Self {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        Member {
            cluster,
            node: format!("{addr}#{suffix}"),
            lease,
        }
    }

    pub async fn claim(&self, name: &str, job: &str) -> Result<Claim, MetaError> {
        self.cluster.claim(name, &self.node, job, self.lease).await
    }

    pub async fn release(&self, name: &str, job: &str) {
        if let Err(e) = self.cluster.release(name, &self.node, job).await {
            tracing::warn!(error = %e, lease = name, "could not release a lease; it expires by itself");
        }
    }

    /// How often a holder renews: a third of the lease, so that two renewals may fail before
    /// it expires.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    /// Run `work` under lease `name` (claimed already, for `job`), renewing it every
    /// `renew_every`, and calling `tick` then and whenever `wake` is notified. Stops `work`
    /// (dropping it) if the lease is lost. Does not release the lease.
    pub async fn hold<T, Tk>(
        &self,
        name: &str,
        job: &str,
        work: impl Future<Output = T>,
        wake: &tokio::sync::Notify,
        mut tick: impl FnMut() -> Tk,
    ) -> Result<T, LeaseLost>
    where
        Tk: Future<Output = ()>,
    {
        tokio::pin!(work);
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                () = wake.notified() => tick().await,
                () = tokio::time::sleep(self.renew_every()) => {
                    let renewal = self.cluster.renew(name, &self.node, job, self.lease);
                    match tokio::time::timeout(self.renew_every(), renewal).await {
                        Ok(Ok(true)) => renewed = Instant::now(),
                        Ok(Ok(false)) => return Err(LeaseLost::Taken(name.to_owned())),
                        Ok(Err(e)) => tracing::warn!(error = %e, lease = name, "could not renew a lease; will retry"),
                        Err(_) => tracing::warn!(lease = name, "renewing a lease timed out; will retry"),
                    }
                    // Stop before the lease can expire: by the next renewal it might have.
                    if renewed.elapsed() + self.renew_every() >= self.lease {
                        return Err(LeaseLost::Unrenewed(name.to_owned()));
                    }
                    tick().await;
                }
            }
        }
    }
}
