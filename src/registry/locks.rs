//! Striped async locks keyed by digest. A push holds its digest's lock from the rename of the
//! file into place until the metadata commit; garbage collection holds it from its tombstone
//! commit until the unlink, and across its link-removal commits; a blob HEAD holds it while it
//! records its touch. So a blob file is never unlinked under a push that just placed it, and a
//! HEAD is either seen by a sweep or answered after it. In-process locks suffice because redb
//! admits one writing process; a shared metadata store would replace them with leases.

use tokio::sync::{Mutex, MutexGuard};

const STRIPES: usize = 256;

#[derive(Debug)]
pub struct DigestLocks {
    stripes: Box<[Mutex<()>]>,
}

impl Default for DigestLocks {
    fn default() -> Self {
        DigestLocks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
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
    pub async fn lock(&self, digest: &str) -> MutexGuard<'_, ()> {
        let stripe = &self.stripes[stripe(digest)];
        // Test builds count a wait, so that a test can act once a request waits here.
        #[cfg(feature = "test-hooks")]
        match stripe.try_lock() {
            Ok(guard) => return guard,
            Err(_) => crate::testhook::reached("digest_lock.wait"),
        }
        stripe.lock().await
    }

    /// Lock every stripe the digests fall in, in ascending order. Only garbage collection holds
    /// more than one stripe at a time, so the fixed order rules out deadlock.
    pub async fn lock_many<'a>(&self, digests: impl IntoIterator<Item = &'a str>) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = digests.into_iter().map(stripe).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.stripes[s].lock().await);
        }
        guards
    }
}
