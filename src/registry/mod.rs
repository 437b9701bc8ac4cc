//! Use cases of the registry: the only layer that touches both the metadata store and the blob
//! files, and so the owner of their ordering:
//!
//! - a blob is durable on disk (fsync, rename, fsync dir) before the metadata commit that
//!   records and links it;
//! - a manifest is accepted only inside a write transaction that sees every blob it needs
//!   linked and live, so no stored manifest ever references a missing blob;
//! - commits and deletions of the same digest are serialised by `DigestLocks`, so a blob file
//!   cannot be unlinked between a push's rename and its metadata commit.
//!
//! Every redb call runs on the blocking pool.

mod blobs;
mod error;
mod listing;
mod locks;
mod manifests;
mod uploads;

use std::sync::Arc;

use crate::blobs::BlobStore;
use crate::meta::{Meta, MetaError};

pub use blobs::BlobBody;
pub use error::Error;
pub use manifests::{Manifest, ManifestPut};
pub use uploads::UploadStatus;

/// Size limits applied to request bodies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub manifest_max_bytes: u64,
    pub blob_max_bytes: u64,
}

/// The registry: metadata, blob files and in-flight uploads.
#[derive(Debug)]
pub struct Registry {
    meta: Arc<Meta>,
    blobs: BlobStore,
    uploads: uploads::Sessions,
    locks: locks::DigestLocks,
    limits: Limits,
}

impl Registry {
    /// Assemble a registry over an opened store, reconciling leftovers of an earlier crash.
    pub async fn open(meta: Meta, blobs: BlobStore, limits: Limits) -> Result<Arc<Self>, Error> {
        let registry = Arc::new(Registry {
            meta: Arc::new(meta),
            blobs,
            uploads: uploads::Sessions::default(),
            locks: locks::DigestLocks::default(),
            limits,
        });
        registry.reconcile_staging().await?;
        Ok(registry)
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Run a metadata call on the blocking pool.
    async fn meta<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Meta) -> Result<T, MetaError> + Send + 'static,
    {
        let meta = Arc::clone(&self.meta);
        Ok(blocking(move || f(&meta)).await?)
    }
}

/// Run blocking work on the blocking pool and wait for it.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task panicked")
}
