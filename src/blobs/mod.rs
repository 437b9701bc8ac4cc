//! Blob storage: the seam between the registry and where blob bytes live. Knows nothing of
//! HTTP or of the metadata store: it turns byte streams into verified, durable,
//! content-addressed blobs and serves them back.
//!
//! The traits have the shape of CNCF Distribution's `blobs.go`, small roles composed into one
//! store:
//! - [`BlobStore`]: stat, open (with a byte range), delete, enumerate (fsck), and the upload
//!   factory (create, resume after a restart, temporary for a single-request upload);
//! - [`Upload`]: an upload in progress that owns its bytes, its running hash (of the algorithm
//!   it was opened with), its resume state, and its commit (make it the blob of a digest) or
//!   cancel;
//! - [`BlobReader`]: an opened blob that streams a byte range.
//!
//! Backends:
//! - [`fs`]: files under the storage root (`O_DIRECT` staging, `fdatasync` ordering, mapped windows,
//!   `sendfile` as a capability of the connection writer, quarantine);
//! - [`s3`]: objects in an S3-compatible bucket (segment objects, server-side copy, ranged
//!   GETs, presigned redirects).
//!
//! Invariants every backend keeps (docs/design.md, "The blob-storage seam"):
//! 1. A blob is visible under its digest only once all its bytes are durable, and only with
//!    bytes that hash to that digest: `Upload::commit` returns after that, never before.
//! 2. A stored blob is never modified, only deleted.
//! 3. An upload holds exactly the bytes acknowledged so far: a failed `append` is rolled back.
//! 4. Nothing here streams a whole blob into memory.

pub mod fs;
mod limits;
pub mod s3;

use std::fmt::Debug;
use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

use crate::oci::{Algorithm, Digest};

pub use limits::{AppendLimits, Limited};

/// The test hook point (`testhook::reached`) an upload passes when its digest is asked for
/// with another algorithm than its running hash's, so its bytes are read again.
pub const DIGEST_REREAD: &str = "upload.digest_reread";

/// A request body handed to an upload: chunks, or the reason the body broke off.
pub type Body<'a> = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send + 'a>>;

/// Told each count of bytes a long read has got through.
pub type Progress = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

/// Bytes of a blob as they are read from storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Local I/O (a full disk, a permission, a broken file).
    #[error("storage I/O: {0}")]
    Io(#[from] io::Error),
    /// The storage service is unreachable or failing (object storage answering 5xx, timing
    /// out, refusing connections) after the backend's retries. The client may try again.
    #[error("object storage unavailable: {0}")]
    Unavailable(String),
}

/// Why an append stopped. The upload has been rolled back when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("request body failed: {0}")]
    Body(String),
    #[error("upload would exceed the size limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("body was {got} bytes but {expected} were declared")]
    LengthMismatch { expected: u64, got: u64 },
    #[error("no body data for {secs} s")]
    Idle { secs: u64 },
    #[error(transparent)]
    Store(StoreError),
}

impl From<io::Error> for AppendError {
    fn from(e: io::Error) -> Self {
        AppendError::Store(StoreError::Io(e))
    }
}

impl From<StoreError> for AppendError {
    fn from(e: StoreError) -> Self {
        AppendError::Store(e)
    }
}

/// An object found by [`BlobStore::enumerate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it is, relative to the store (`blobs/sha256/ab/cd/<hex>`), for reports and
    /// [`BlobStore::quarantine`].
    pub key: String,
    pub size: u64,
    /// The digest its key names, if the key is exactly where that digest's blob belongs.
    pub digest: Option<Digest>,
}

/// An entry of the staging area found by [`BlobStore::staging_entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingEntry {
    /// An upload session id (hyphenated UUID) or a temporary upload's name.
    pub name: String,
    /// When its bytes last changed (the newest of its parts, on object storage): what garbage
    /// collection compares with the grace period before removing an entry no session owns.
    pub modified: std::time::SystemTime,
}

/// A blob storage backend. Every method is safe to call concurrently; the caller (the
/// registry) serialises commits and deletions of one digest with its digest locks.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + Debug + 'static {
    /// The size of the stored blob `digest`, `None` if it is absent.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError>;

    /// Open the blob for reading. `None` if it is absent, or (where the backend can tell
    /// without a request) not `expected_size` bytes long: the caller then answers 404 rather
    /// than send a wrong body.
    async fn open(&self, digest: &Digest, expected_size: u64) -> Result<Option<Box<dyn BlobReader>>, StoreError>;

    /// Delete a blob (after its record was tombstoned and committed). Absent is not an error.
    async fn delete(&self, digest: &Digest) -> Result<(), StoreError>;

    /// Start the upload session `id` (empty), its running hash using `alg`.
    async fn create_upload(&self, id: uuid::Uuid, alg: Algorithm) -> Result<Box<dyn Upload>, StoreError>;

    /// Pick up the upload session `id` after a restart, re-hashing what it holds once with
    /// `alg` (the algorithm it was created with: the caller remembers it). `None` if the session
    /// has no stored bytes at all (its staging state is gone).
    async fn resume_upload(&self, id: uuid::Uuid, alg: Algorithm) -> Result<Option<Box<dyn Upload>>, StoreError>;

    /// An upload with no session (a single-request push) hashing with `alg`, removed by
    /// `discard`, or by start-up if the process dies with it in flight.
    async fn temp_upload(&self, alg: Algorithm) -> Result<Box<dyn Upload>, StoreError>;

    /// Remove what the upload session `id` stored. Absent is not an error.
    async fn remove_upload(&self, id: uuid::Uuid) -> Result<(), StoreError>;

    /// Everything in the staging area: upload sessions (named by hyphenated UUID) and
    /// leftovers of temporary uploads, with when each last changed.
    async fn staging_entries(&self) -> Result<Vec<StagingEntry>, StoreError>;

    /// Remove one staging entry by the name `staging_entries` gave.
    async fn remove_staging_entry(&self, name: &str) -> Result<(), StoreError>;

    /// Every object in the blob area (fsck and orphan scans: this lists everything).
    async fn enumerate(&self) -> Result<Vec<Entry>, StoreError>;

    /// Hash the stored blob `digest` with its algorithm, telling `progress` each count of
    /// bytes read. `None` if it is absent.
    async fn hash(&self, digest: &Digest, progress: Progress) -> Result<Option<Digest>, StoreError>;

    /// Move an enumerated object out of the blob area, keeping it (`quarantine/` beside the
    /// blobs). Returns where it went.
    async fn quarantine(&self, key: &str) -> Result<String, StoreError>;

    /// Check that the store accepts writes (readiness).
    async fn check_writable(&self) -> Result<(), StoreError>;

    /// The smallest chunk a chunked upload may send, besides the last (`OCI-Chunk-Min-Length`),
    /// if the backend has one.
    fn min_chunk(&self) -> Option<u64> {
        None
    }

    /// A URL a client may fetch the blob from directly (a presigned GET), if the backend is
    /// set to redirect pulls there.
    async fn redirect(&self, _digest: &Digest) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    /// What the backend is, for logs: `filesystem /data` or `s3 bucket/prefix at endpoint`.
    fn describe(&self) -> String;

    /// Whether other processes (the nodes of a cluster) may use the same storage at the same
    /// time, so that its staging area holds their uploads in flight too.
    fn shared(&self) -> bool {
        false
    }

    /// Stage the whole local file `path` (a blob of another registry's store being imported)
    /// as a temporary upload hashing with `alg`, telling `progress` each count of bytes read.
    /// The caller checks `Upload::digest` and commits or discards it, as for a push. By
    /// default the bytes are copied through `temp_upload`; a backend that can share the file
    /// instead (the filesystem, with a hard link) says so in the answer.
    async fn import_file(
        &self,
        path: &std::path::Path,
        alg: Algorithm,
        progress: Progress,
    ) -> Result<(Box<dyn Upload>, Adopted), StoreError> {
        let upload = self.temp_upload(alg).await?;
        Ok((copy_file(upload, path, progress).await?, Adopted::Copied))
    }
}

/// How [`BlobStore::import_file`] took a file in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// Hard-linked: the blob shares the source's bytes on disk, nothing was copied.
    Linked,
    /// Copied into the store.
    Copied,
}

/// Bytes read from a file at a time while it is copied into an upload.
const COPY_CHUNK: usize = 256 << 10;

/// Append the whole file `path` to an empty `upload`, telling `progress` each count of bytes.
/// The file must keep the length it had when opened (a file still being written is refused).
pub(crate) async fn copy_file(
    upload: Box<dyn Upload>,
    path: &std::path::Path,
    progress: Progress,
) -> Result<Box<dyn Upload>, StoreError> {
    let file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let body: Body<'static> = Box::pin(futures_util::stream::try_unfold(file, move |mut file| {
        let progress = std::sync::Arc::clone(&progress);
        async move {
            use tokio::io::AsyncReadExt;
            let mut buf = bytes::BytesMut::with_capacity(COPY_CHUNK);
            let n = file.read_buf(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(None);
            }
            progress(n as u64);
            Ok(Some((buf.freeze(), file)))
        }
    }));
    let limits = AppendLimits {
        max_len: len,
        exact: Some(len),
        idle: std::time::Duration::from_secs(600),
    };
    let (upload, appended) = upload.append(body, limits).await;
    match appended {
        Ok(_) => Ok(upload),
        Err(e) => {
            let _ = upload.discard().await;
            Err(match e {
                AppendError::Store(e) => e,
                other => StoreError::Io(io::Error::other(format!("reading {}: {other}", path.display()))),
            })
        }
    }
}

/// An upload in progress: its bytes, its running hash (of the algorithm it was opened with)
/// and how to make it a blob.
#[async_trait::async_trait]
pub trait Upload: Send + Debug {
    /// Bytes held so far (all acknowledged).
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stream `body` onto the end, within `limits`. Returns the upload in every case, with the
    /// count of bytes appended or, after rolling back to what it held before, the error.
    async fn append(
        self: Box<Self>,
        body: Body<'_>,
        limits: AppendLimits,
    ) -> (Box<dyn Upload>, Result<u64, AppendError>);

    /// The digest of everything held, with `alg`: from the running state when `alg` is the
    /// algorithm the upload was opened with, otherwise by reading the bytes once (passing
    /// `DIGEST_REREAD`).
    async fn digest(&self, alg: Algorithm) -> Result<Digest, StoreError>;

    /// Make the held bytes, already verified to hash to `digest`, the stored blob `digest`,
    /// durably, and drop the upload's own state. When this returns, the blob is complete.
    async fn commit(self: Box<Self>, digest: &Digest) -> Result<(), StoreError>;

    /// Throw the upload away (its blob exists already, or it was cancelled).
    async fn discard(self: Box<Self>) -> Result<(), StoreError>;
}

/// An opened blob.
#[async_trait::async_trait]
pub trait BlobReader: Send + Debug {
    /// The bytes `start..=end`. `None` if the blob turned out to be absent or of the wrong
    /// size (a backend that could not tell at `open`). An error before the first byte is
    /// returned here, so the caller can still answer with an error status.
    async fn stream(self: Box<Self>, start: u64, end: u64) -> Result<Option<ByteStream>, StoreError>;
}

/// Hash everything a stream yields with `alg`, telling `progress` each count of bytes.
pub(crate) async fn hash_stream(mut bytes: ByteStream, alg: Algorithm, progress: &Progress) -> io::Result<Digest> {
    use futures_util::StreamExt;
    let mut hasher = alg.hasher();
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        progress(chunk.len() as u64);
    }
    Ok(hasher.finish())
}
