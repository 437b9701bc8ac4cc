//! Locks keyed by digest. A push holds its digest's lock from placing the blob until the
//! metadata commit; garbage collection holds it from its tombstone commit until the delete, and
//! across its link-removal commits; a blob HEAD holds it while it records its touch. So a blob
//! is never deleted under a push that just placed it, and a HEAD is either seen by a sweep or
//! answered after it.
//!
//! In one process (redb admits one) striped in-process locks are the whole story. When the
//! metadata is shared by several nodes (`meta::SharedLocks`), each lock is also a PostgreSQL
//! advisory lock on the digest's key, taken after the stripe: the stripe settles contention
//! within the node in memory, so that at most one of its requests per stripe waits on the
//! database, and the advisory lock settles it across nodes. The order is always the stripe,
//! then the advisory lock; several digests are taken in ascending order at each level.
//!
//! Upload sessions are serialised by their slot's mutex in one process; with shared metadata
//! also by an advisory lock on the session (`lock_session`), whose connection the final PUT
//! extends with its digest's lock (`extend`).

use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

use super::Error;
use crate::meta::{Held, SharedLocks};

const STRIPES: usize = 256;

#[derive(Debug)]
pub struct DigestLocks {
    stripes: Box<[Mutex<()>]>,
    /// The advisory locks of the nodes sharing the metadata, if it is shared.
    cluster: Option<Arc<SharedLocks>>,
}

/// Held digest locks: stripes of this process, and the advisory locks of a cluster.
#[derive(Debug)]
pub struct Guard<'a> {
    _stripe: Option<MutexGuard<'a, ()>>,
    _stripes: Vec<MutexGuard<'a, ()>>,
    held: Option<Held>,
}

impl Guard<'_> {
    /// The advisory locks, when the metadata is shared: their connection records and reads
    /// touches.
    pub fn held(&self) -> Option<&Held> {
        self.held.as_ref()
    }
}

/// The hex of a digest is uniformly distributed: its first two characters pick the stripe.
fn stripe(digest: &str) -> usize {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.get(..2)
        .and_then(|h| usize::from_str_radix(h, 16).ok())
        .unwrap_or(0)
        % STRIPES
}

impl DigestLocks {
    /// Locks for one process, and also across the nodes of `cluster` if there is one.
    pub fn new(cluster: Option<Arc<SharedLocks>>) -> Self {
        DigestLocks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            cluster,
        }
    }

    /// The cluster, when the metadata is shared.
    pub fn shared(&self) -> Option<&Arc<SharedLocks>> {
        self.cluster.as_ref()
    }

    pub async fn lock(&self, digest: &str) -> Result<Guard<'_>, Error> {
        let stripe = self.lock_stripe(digest).await;
        let held = match &self.cluster {
            Some(c) => Some(c.lock_digest(digest).await?),
            None => None,
        };
        Ok(Guard {
            _stripe: Some(stripe),
            _stripes: Vec::new(),
            held,
        })
    }

    async fn lock_stripe(&self, digest: &str) -> MutexGuard<'_, ()> {
        let stripe = &self.stripes[stripe(digest)];
        // Test builds count a wait, so that a test can act once a request waits here.
        #[cfg(feature = "test-hooks")]
        match stripe.try_lock() {
            Ok(guard) => return guard,
            Err(_) => crate::testhook::reached("digest_lock.wait"),
        }
        stripe.lock().await
    }

    /// Lock every stripe the digests fall in, in ascending order, then (shared metadata) their
    /// advisory locks, in ascending key order. Only garbage collection holds more than one
    /// digest at a time, so the fixed order rules out deadlock.
    pub async fn lock_many<'a>(&self, digests: impl IntoIterator<Item = &'a str> + Clone) -> Result<Guard<'_>, Error> {
        let mut stripes: Vec<usize> = digests.clone().into_iter().map(stripe).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.stripes[s].lock().await);
        }
        let held = match &self.cluster {
            Some(c) => Some(c.lock_digests(digests).await?),
            None => None,
        };
        Ok(Guard {
            _stripe: None,
            _stripes: guards,
            held,
        })
    }

    /// With shared metadata, lock upload session `id` across the nodes; `None` in one process,
    /// where the session's slot already serialises its requests.
    pub async fn lock_session(&self, id: uuid::Uuid) -> Result<Option<Held>, Error> {
        match &self.cluster {
            Some(c) => Ok(Some(c.lock_session(id).await?)),
            None => Ok(None),
        }
    }

    /// `lock_session` if no request on any node holds the session: `Ok(None)` if one does.
    /// In one process, `Some(None)`: the caller's `try_lock` of the slot decides alone.
    pub async fn try_lock_session(&self, id: uuid::Uuid) -> Result<Option<Option<Held>>, Error> {
        match &self.cluster {
            Some(c) => Ok(c.try_lock_session(id).await?.map(Some)),
            None => Ok(Some(None)),
        }
    }

    /// Lock `digest` for a request holding its upload session's lock `session`: the stripe,
    /// and the advisory lock on the session's connection (so the request needs no second
    /// connection of the lock pool). The advisory lock lasts as long as `session`.
    pub async fn extend(&self, session: &mut Held, digest: &str) -> Result<Guard<'_>, Error> {
        let stripe = self.lock_stripe(digest).await;
        session.also(digest).await?;
        Ok(Guard {
            _stripe: Some(stripe),
            _stripes: Vec::new(),
            held: None,
        })
    }
}
