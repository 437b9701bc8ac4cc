//! What the Berth nodes sharing one PostgreSQL database share besides the metadata rows: locks
//! that serialise work on one digest or one upload session across the nodes, and the blob
//! touches garbage collection spares (`berth.touches`). `registry` asks the store for it
//! (`MetaStore::shared_locks`) and, without it (redb, one process), keeps both in memory.
//!
//! **Locks** are PostgreSQL session advisory locks on 64-bit keys (`digest_key`,
//! `session_key`), each held on a connection of this module's own small pool, separate from the
//! metadata pool, so that lock holders waiting for a metadata transaction and transactions
//! waiting for a connection cannot starve each other. A [`Held`] owns its connection until it
//! drops; then the connection unlocks everything it holds (`pg_advisory_unlock_all`) and goes
//! back to the pool, or is closed if that fails. A node that dies loses its connections, and
//! PostgreSQL releases their locks with them.
//! - A holder takes one digest key, except garbage collection, which takes a batch's keys in
//!   ascending order in one statement on one connection, and an upload's final PUT, which adds
//!   its digest's key (`Held::also`) to the connection that holds its session's key. Nobody
//!   waits for a session key while holding a digest key, and digest keys are taken together only
//!   in ascending order, so these locks cannot deadlock.
//! - Taking a lock runs as a task of the engine's runtime: a request that goes away while it
//!   waits lets the lock go as soon as it is granted, and never leaves it on a pooled connection.
//! - A key is 64 bits of a digest's hex or of an upload id: a collision makes two unrelated
//!   operations wait for each other, nothing worse.
//!
//! **Touches.** A blob HEAD upserts `(digest, at_ms)` under its digest's lock, on the lock's
//! connection (`Held::touch`); garbage collection reads them under its locks (`Held::touched`)
//! and, for its mark, all at once (`touched_since`), and prunes those past its grace period.

use std::collections::HashSet;
use std::error::Error as StdError;

use deadpool_postgres::{Object, Pool};
use tokio::runtime::Handle;

use super::{MetaError, Millis};

/// The shared locks and touches of the nodes over one PostgreSQL database.
pub struct SharedLocks {
    pool: Pool,
    handle: Handle,
}

impl std::fmt::Debug for SharedLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLocks").finish_non_exhaustive()
    }
}

/// Advisory locks held on one connection of the lock pool, released when this drops.
pub struct Held {
    client: Option<Object>,
    handle: Handle,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").finish_non_exhaustive()
    }
}

/// Failures classified as the metadata's are (`postgres::db`): a lost connection is
/// `Unavailable`, which clients see as 503.
fn db(e: impl StdError + Send + Sync + 'static) -> MetaError {
    super::postgres::db(e)
}

/// The lock key of a digest: the first 64 bits of its hex (uniformly distributed), or of a
/// hash of the whole text if it has no such hex.
pub fn digest_key(digest: &str) -> i64 {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    let bits = hex
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| fnv1a(digest.as_bytes()));
    i64::from_ne_bytes(bits.to_ne_bytes())
}

/// The lock key of an upload session: its two halves folded (a v4 id is random).
pub fn session_key(id: uuid::Uuid) -> i64 {
    let (high, low) = id.as_u64_pair();
    i64::from_ne_bytes((high ^ low).to_ne_bytes())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn sql_ms(ms: Millis) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl SharedLocks {
    /// Over `pool` (the lock pool, no other), running on `handle` (the engine's runtime).
    pub(super) fn new(pool: Pool, handle: Handle) -> Self {
        SharedLocks { pool, handle }
    }

    /// Lock one digest (`waits` counts, in test builds, when another holder made it wait).
    pub async fn lock_digest(&self, digest: &str) -> Result<Held, MetaError> {
        self.lock(vec![digest_key(digest)], "digest_lock.wait").await
    }

    /// Lock several digests, in ascending key order, in one statement on one connection.
    pub async fn lock_digests<'a>(&self, digests: impl IntoIterator<Item = &'a str>) -> Result<Held, MetaError> {
        let keys = digests.into_iter().map(digest_key).collect();
        self.lock(keys, "digest_lock.wait").await
    }

    /// Lock an upload session.
    pub async fn lock_session(&self, id: uuid::Uuid) -> Result<Held, MetaError> {
        self.lock(vec![session_key(id)], "upload_lock.wait").await
    }

    /// Lock an upload session if no one holds it; `None` if someone does.
    pub async fn try_lock_session(&self, id: uuid::Uuid) -> Result<Option<Held>, MetaError> {
        let (pool, handle, key) = (self.pool.clone(), self.handle.clone(), session_key(id));
        self.spawn(async move {
            let held = Held {
                client: Some(pool.get().await.map_err(db)?),
                handle,
            };
            Ok(held.try_acquire(key).await?.then_some(held))
        })
        .await
    }

    /// Take `keys` on one pooled connection, as a task of the engine's runtime (see the module
    /// docs: a dropped caller never leaves a lock behind).
    async fn lock(&self, mut keys: Vec<i64>, waits: &'static str) -> Result<Held, MetaError> {
        keys.sort_unstable();
        keys.dedup();
        let (pool, handle) = (self.pool.clone(), self.handle.clone());
        let task = self.handle.spawn(async move {
            let held = Held {
                client: Some(pool.get().await.map_err(db)?),
                handle,
            };
            held.acquire(&keys, waits).await?;
            Ok(held)
        });
        task.await
            .unwrap_or_else(|e| Err(MetaError::Commit(format!("taking a lock: {e}"))))
    }

    /// Blobs HEAD-checked at or after `cutoff` (garbage collection's mark).
    pub async fn touched_since(&self, cutoff: Millis) -> Result<HashSet<String>, MetaError> {
        let pool = self.pool.clone();
        self.spawn(async move {
            let client = pool.get().await.map_err(db)?;
            let rows = client
                .query("SELECT digest FROM berth.touches WHERE at_ms >= $1", &[&sql_ms(cutoff)])
                .await
                .map_err(db)?;
            rows.iter().map(|r| r.try_get(0).map_err(db)).collect()
        })
        .await
    }

    /// Forget touches older than `cutoff`; returns how many went.
    pub async fn prune_touches(&self, cutoff: Millis) -> Result<u64, MetaError> {
        let pool = self.pool.clone();
        self.spawn(async move {
            let client = pool.get().await.map_err(db)?;
            client
                .execute("DELETE FROM berth.touches WHERE at_ms < $1", &[&sql_ms(cutoff)])
                .await
                .map_err(db)
        })
        .await
    }

    async fn spawn<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, MetaError>> + Send + 'static,
    ) -> Result<T, MetaError> {
        self.handle
            .spawn(fut)
            .await
            .unwrap_or_else(|e| Err(MetaError::Commit(format!("a lock-pool task: {e}"))))
    }
}

impl Held {
    fn client(&self) -> &Object {
        self.client
            .as_ref()
            .expect("a held lock has its connection until it drops")
    }

    /// Take `key` if no one holds it; whether it was taken.
    async fn try_acquire(&self, key: i64) -> Result<bool, MetaError> {
        let row = self
            .client()
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(db)?;
        row.try_get(0).map_err(db)
    }

    /// Wait for `keys` (ascending). Test builds first try a single key without waiting, to
    /// count `waits` when it is taken.
    async fn acquire(&self, keys: &[i64], waits: &'static str) -> Result<(), MetaError> {
        #[cfg(feature = "test-hooks")]
        if let [key] = keys {
            if self.try_acquire(*key).await? {
                return Ok(());
            }
            crate::testhook::reached(waits);
        }
        #[cfg(not(feature = "test-hooks"))]
        let _ = waits;
        self.client()
            .execute("SELECT pg_advisory_lock(k) FROM unnest($1::bigint[]) AS k", &[&keys])
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Lock `digest` too, on this connection (an upload's final PUT, holding its session).
    pub async fn also(&mut self, digest: &str) -> Result<(), MetaError> {
        self.acquire(&[digest_key(digest)], "digest_lock.wait").await
    }

    /// Record a HEAD of `digest` at `at` (the caller holds its lock).
    pub async fn touch(&self, digest: &str, at: Millis) -> Result<(), MetaError> {
        self.client()
            .execute(
                "INSERT INTO berth.touches (digest, at_ms) VALUES ($1, $2)
                 ON CONFLICT (digest) DO UPDATE SET at_ms = GREATEST(berth.touches.at_ms, EXCLUDED.at_ms)",
                &[&digest, &sql_ms(at)],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Which of `digests` were HEAD-checked at or after `cutoff` (the caller holds their locks,
    /// so the answer stays true until it lets them go).
    pub async fn touched(&self, digests: &[&str], cutoff: Millis) -> Result<HashSet<String>, MetaError> {
        let rows = self
            .client()
            .query(
                "SELECT digest FROM berth.touches WHERE digest = ANY($1) AND at_ms >= $2",
                &[&digests, &sql_ms(cutoff)],
            )
            .await
            .map_err(db)?;
        rows.iter().map(|r| r.try_get(0).map_err(db)).collect()
    }
}

impl Drop for Held {
    /// Unlock everything this connection holds and hand it back; a connection that cannot
    /// unlock is closed, which releases its locks all the same.
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        self.handle.spawn(async move {
            if client.batch_execute("SELECT pg_advisory_unlock_all()").await.is_err() {
                drop(Object::take(client));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_digest_hex_and_the_whole_id() {
        let d = "sha256:00000000000000ffaaaa";
        assert_eq!(digest_key(d), 0xff);
        assert_eq!(digest_key("sha256:zz"), digest_key("sha256:zz"), "a fallback is stable");
        assert_ne!(digest_key("sha256:zz"), digest_key("sha256:zy"));
        let id = uuid::Uuid::from_u64_pair(1, 2);
        assert_eq!(session_key(id), 3);
    }
}
