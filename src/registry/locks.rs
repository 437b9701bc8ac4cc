//! Striped async locks keyed by digest. A push holds its digest's lock from the rename of the
//! file into place until the metadata commit; garbage collection holds it from its tombstone
//! commit until the unlink. So a blob file is never unlinked under a push that just placed it.
//! In-process locks suffice because redb admits one writing process; a shared metadata store
//! would replace them with leases.

use tokio::sync::{Mutex, MutexGuard};

use crate::oci::Digest;

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

impl DigestLocks {
    pub async fn lock(&self, digest: &Digest) -> MutexGuard<'_, ()> {
        // The hex of a digest is uniformly distributed: two hex characters pick the stripe.
        let stripe = usize::from_str_radix(&digest.hex()[..2], 16).expect("digest hex");
        self.stripes[stripe % STRIPES].lock().await
    }
}
