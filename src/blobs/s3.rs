//! The S3 backend: blobs as objects in an S3-compatible bucket, under the same sharded,
//! content-addressed layout as on disk.
//!
//! ```text
//! <prefix>/
//! ├── blobs/sha256/<h0h1>/<h2h3>/<hex>     one immutable object per blob
//! ├── uploads/<uuid>/session               marker: the session exists (empty object)
//! ├── uploads/<uuid>/<offset, 20 digits>   segment objects: the bytes received so far
//! ├── uploads/tmp-<uuid>/<offset>          segments of a single-request upload in flight
//! └── quarantine/<key with / as _>         objects fsck moved out of the blob area
//! ```
//!
//! **Uploads.** An upload is a run of segment objects named by their offset. Every segment but
//! the last is exactly `part_size` bytes (at least 5 MiB, S3's smallest multipart part); the
//! last, the tail, may be shorter. A PATCH reads the tail back, fills whole parts from the
//! body, puts each as it fills (up to two puts in flight while the body keeps streaming in),
//! and ends by putting what is left as the new tail, overwriting the old tail at the same key
//! with a longer object. So the objects always hold exactly the acknowledged bytes (a failed
//! append deletes the segments it added and puts the old tail back), memory stays within
//! about three parts per upload whatever the client sends, and a restart resumes by listing
//! the segments and hashing them once. Segments are objects, not parts of an open multipart
//! upload, because S3 cannot read the parts of an unfinished multipart upload back, and a
//! resumed upload must be re-hashed.
//!
//! **Commit.** The final PUT never downloads the blob: one segment becomes the blob by
//! `CopyObject`; several by a multipart upload to the blob's key whose parts are
//! `UploadPartCopy`s of the segments (each at most `part_size`, so the 5 GiB limit of a single
//! `CopyObject` never applies). A single-request upload that fits one part is put straight to
//! its key. The blob object is complete when S3 acknowledges it, before the registry's
//! metadata commit links it. Nothing relies on a conditional create (Garage ignores
//! `If-None-Match: *`): two commits of one digest write the same bytes.
//!
//! **Faults.** The SDK retries throttling, 5xx answers, timeouts and refused connections with
//! exponential backoff, at most `MAX_ATTEMPTS` times with a bounded wait; what still fails
//! becomes `StoreError::Unavailable`, which clients see as 503 `UNAVAILABLE`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::{Bytes, BytesMut};
use futures_util::stream::FuturesOrdered;
use futures_util::{StreamExt, TryStreamExt};

use super::{
    AppendError, AppendLimits, Body, ByteStream, Entry, Limited, Progress, StagingEntry, StoreError, Upload,
    hash_stream,
};
use crate::oci::{Algorithm, Digest, Hasher};

/// S3's smallest multipart part (but the last).
pub const MIN_PART: u64 = 5 << 20;
/// S3's largest part, and the largest object one `CopyObject` can copy.
pub const MAX_PART: u64 = 5 << 30;
/// Attempts per request, the first included.
const MAX_ATTEMPTS: u32 = 4;
/// Part puts and copies in flight at once per upload.
const IN_FLIGHT: usize = 2;
/// How long a presigned blob URL stays valid.
const PRESIGN_FOR: Duration = Duration::from_secs(20 * 60);

/// Where and how to reach the bucket.
#[derive(Clone, PartialEq, Eq)]
pub struct Options {
    /// `http(s)://host:port`; `None` for AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Key prefix, without leading or trailing `/`; may be empty.
    pub prefix: String,
    pub access_key: String,
    pub secret_key: String,
    /// `endpoint/bucket/key` rather than `bucket.endpoint/key`.
    pub path_style: bool,
    /// Answer blob GETs with a redirect to a presigned URL.
    pub redirect: bool,
    /// Bytes per segment (multipart part), `MIN_PART..=MAX_PART`.
    pub part_size: u64,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .field("redirect", &self.redirect)
            .field("part_size", &self.part_size)
            .finish()
    }
}

/// A bucket (and prefix) holding blobs.
#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    opts: Options,
}

impl S3Store {
    /// A store over the bucket `opts` names. Makes no request: `check_writable` tells whether
    /// the bucket is reachable.
    pub fn new(opts: Options) -> Self {
        let retry = RetryConfig::standard()
            .with_max_attempts(MAX_ATTEMPTS)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(2));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .read_timeout(Duration::from_secs(30))
            .operation_attempt_timeout(Duration::from_secs(120))
            .build();
        let credentials = Credentials::new(&opts.access_key, &opts.secret_key, None, None, "berth-config");
        let mut config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(opts.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(opts.path_style)
            .retry_config(retry)
            .timeout_config(timeouts)
            // Blob bytes are verified by their digest before they are committed; a second
            // checksum per request would only cost CPU.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &opts.endpoint {
            config = config.endpoint_url(endpoint);
        }
        S3Store {
            inner: Arc::new(Inner {
                client: Client::from_conf(config.build()),
                opts,
            }),
        }
    }
}

impl Inner {
    fn bucket(&self) -> &str {
        &self.opts.bucket
    }

    /// `<prefix>/<rest>`, or `<rest>` with no prefix.
    fn key(&self, rest: &str) -> String {
        if self.opts.prefix.is_empty() {
            rest.to_owned()
        } else {
            format!("{}/{rest}", self.opts.prefix)
        }
    }

    /// The blob's key. Safe: a `Digest`'s algorithm is a closed set and its hex is validated.
    fn blob_key(&self, digest: &Digest) -> String {
        let hex = digest.hex();
        self.key(&format!(
            "blobs/{}/{}/{}/{hex}",
            digest.algorithm().as_str(),
            &hex[0..2],
            &hex[2..4]
        ))
    }

    /// A key relative to the prefix (`blobs/...`), as enumeration reports it.
    fn relative<'k>(&self, key: &'k str) -> &'k str {
        if self.opts.prefix.is_empty() {
            key
        } else {
            key.strip_prefix(&self.opts.prefix)
                .and_then(|k| k.strip_prefix('/'))
                .unwrap_or(key)
        }
    }

    /// Every object under `prefix`: (key, size).
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| unavailable("list", &e))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    let size = u64::try_from(object.size().unwrap_or(0)).unwrap_or(0);
                    out.push((key.to_owned(), size));
                }
            }
        }
        Ok(out)
    }

    /// The "directories" directly under `prefix` (upload sessions), each with the newest
    /// modification time of the objects in it. An object without one counts as changed now,
    /// so that nothing is ever taken for old by mistake.
    async fn list_sessions(&self, prefix: &str) -> Result<Vec<StagingEntry>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut newest: std::collections::BTreeMap<String, SystemTime> = std::collections::BTreeMap::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| unavailable("list", &e))?;
            for object in page.contents() {
                let Some((name, _)) = object.key().and_then(|k| k.strip_prefix(prefix)?.split_once('/')) else {
                    continue;
                };
                let modified = object
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or_else(SystemTime::now);
                let at = newest.entry(name.to_owned()).or_insert(modified);
                *at = (*at).max(modified);
            }
        }
        Ok(newest
            .into_iter()
            .map(|(name, modified)| StagingEntry { name, modified })
            .collect())
    }

    /// The size of an object, `None` if it is absent.
    async fn size_of(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.client.head_object().bucket(self.bucket()).key(key).send().await {
            Ok(out) => Ok(Some(u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0))),
            Err(e)
                if e.as_service_error()
                    .is_some_and(aws_sdk_s3::operation::head_object::HeadObjectError::is_not_found) =>
            {
                Ok(None)
            }
            Err(e) => Err(unavailable("head", &e)),
        }
    }

    /// Put an object. The body travels with a CRC32 checksum that S3 verifies, and is not
    /// hashed again for the signature: the SHA-256 a signed payload costs would be a second
    /// full pass over every byte pushed (the registry already hashes each blob once).
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(self.bucket())
            .key(key)
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32)
            .body(S3Body::from(bytes))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| unavailable("put", &e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<S3Body>, StoreError> {
        match self.client.get_object().bucket(self.bucket()).key(key).send().await {
            Ok(out) => Ok(Some(out.body)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key) =>
            {
                Ok(None)
            }
            Err(e) => Err(unavailable("get", &e)),
        }
    }

    async fn get_all(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let Some(body) = self.get(key).await? else {
            return Ok(None);
        };
        let bytes = body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(format!("get: {e}")))?;
        Ok(Some(bytes.into_bytes()))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
            .map_err(|e| unavailable("delete", &e))?;
        Ok(())
    }

    /// Delete many objects, a thousand per request.
    async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Unavailable(format!("delete: {e}")))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StoreError::Unavailable(format!("delete: {e}")))?;
            self.client
                .delete_objects()
                .bucket(self.bucket())
                .delete(delete)
                .send()
                .await
                .map_err(|e| unavailable("delete", &e))?;
        }
        Ok(())
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        self.client
            .copy_object()
            .bucket(self.bucket())
            .key(to)
            .copy_source(format!("{}/{from}", self.bucket()))
            .send()
            .await
            .map_err(|e| unavailable("copy", &e))?;
        Ok(())
    }

    /// Assemble `to` from the objects `parts` (key, size), in order: a multipart upload whose
    /// parts are server-side copies, but for a last part shorter than `MIN_PART`, which is read
    /// and put (Garage cannot copy an object small enough to be stored inline). Aborted if any
    /// part fails.
    async fn compose(&self, parts: &[(String, u64)], to: &str) -> Result<(), StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(self.bucket())
            .key(to)
            .send()
            .await
            .map_err(|e| unavailable("create multipart upload", &e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::Unavailable("create multipart upload: no upload id".into()))?
            .to_owned();
        match self.copy_parts(parts, to, &upload_id).await {
            Ok(completed) => {
                self.client
                    .complete_multipart_upload()
                    .bucket(self.bucket())
                    .key(to)
                    .upload_id(&upload_id)
                    .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
                    .send()
                    .await
                    .map_err(|e| unavailable("complete multipart upload", &e))?;
                Ok(())
            }
            Err(e) => {
                let abort = self
                    .client
                    .abort_multipart_upload()
                    .bucket(self.bucket())
                    .key(to)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                if let Err(a) = abort {
                    tracing::warn!(error = %DisplayErrorContext(&a), "could not abort a multipart upload");
                }
                Err(e)
            }
        }
    }

    async fn copy_parts(
        &self,
        parts: &[(String, u64)],
        to: &str,
        upload_id: &str,
    ) -> Result<Vec<CompletedPart>, StoreError> {
        let copies: Vec<_> = parts
            .iter()
            .enumerate()
            .map(|(i, (from, size))| async move {
                let number = i32::try_from(i + 1).expect("at most 10000 parts");
                let etag = if *size < MIN_PART {
                    self.put_part(from, to, upload_id, number).await?
                } else {
                    self.copy_part(from, to, upload_id, number).await?
                };
                Ok::<_, StoreError>(CompletedPart::builder().part_number(number).set_e_tag(etag).build())
            })
            .collect();
        futures_util::stream::iter(copies).buffered(4).try_collect().await
    }

    /// Part `number` of `to` as a server-side copy of `from`; its entity tag.
    async fn copy_part(
        &self,
        from: &str,
        to: &str,
        upload_id: &str,
        number: i32,
    ) -> Result<Option<String>, StoreError> {
        let out = self
            .client
            .upload_part_copy()
            .bucket(self.bucket())
            .key(to)
            .upload_id(upload_id)
            .part_number(number)
            .copy_source(format!("{}/{from}", self.bucket()))
            .send()
            .await
            .map_err(|e| unavailable("copy part", &e))?;
        Ok(out.copy_part_result().and_then(|r| r.e_tag()).map(str::to_owned))
    }

    /// Part `number` of `to` with the bytes of the (short) object `from`; its entity tag.
    async fn put_part(&self, from: &str, to: &str, upload_id: &str, number: i32) -> Result<Option<String>, StoreError> {
        let bytes = self
            .get_all(from)
            .await?
            .ok_or_else(|| StoreError::Unavailable(format!("segment {from} vanished")))?;
        let out = self
            .client
            .upload_part()
            .bucket(self.bucket())
            .key(to)
            .upload_id(upload_id)
            .part_number(number)
            .body(S3Body::from(bytes))
            .send()
            .await
            .map_err(|e| unavailable("upload part", &e))?;
        Ok(out.e_tag().map(str::to_owned))
    }
}

/// A failed SDK call as `Unavailable`, with the whole error chain (which never holds the
/// credentials) for the log.
fn unavailable<E, R>(what: &str, e: &SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Unavailable(format!("{what}: {}", DisplayErrorContext(e)))
}

/// The session directory of an upload: `<prefix>/uploads/<name>/`.
fn session_dir(inner: &Inner, name: &str) -> String {
    inner.key(&format!("uploads/{name}/"))
}

const MARKER: &str = "session";

#[async_trait::async_trait]
impl super::BlobStore for S3Store {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        self.inner.size_of(&self.inner.blob_key(digest)).await
    }

    async fn open(
        &self,
        digest: &Digest,
        expected_size: u64,
    ) -> Result<Option<Box<dyn super::BlobReader>>, StoreError> {
        Ok(Some(Box::new(S3Reader {
            inner: Arc::clone(&self.inner),
            key: self.inner.blob_key(digest),
            size: expected_size,
        })))
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StoreError> {
        self.inner.delete(&self.inner.blob_key(digest)).await
    }

    async fn create_upload(&self, id: uuid::Uuid, alg: Algorithm) -> Result<Box<dyn Upload>, StoreError> {
        let dir = session_dir(&self.inner, &id.hyphenated().to_string());
        self.inner.put(&format!("{dir}{MARKER}"), Bytes::new()).await?;
        Ok(Box::new(S3Upload::new(Arc::clone(&self.inner), dir, false, alg)))
    }

    async fn resume_upload(&self, id: uuid::Uuid, alg: Algorithm) -> Result<Option<Box<dyn Upload>>, StoreError> {
        let dir = session_dir(&self.inner, &id.hyphenated().to_string());
        let objects = self.inner.list(&dir).await?;
        if objects.is_empty() {
            return Ok(None);
        }
        let upload = S3Upload::resume(Arc::clone(&self.inner), dir, objects, alg).await?;
        Ok(Some(Box::new(upload)))
    }

    async fn temp_upload(&self, alg: Algorithm) -> Result<Box<dyn Upload>, StoreError> {
        let dir = session_dir(&self.inner, &format!("tmp-{}", uuid::Uuid::new_v4().hyphenated()));
        Ok(Box::new(S3Upload::new(Arc::clone(&self.inner), dir, true, alg)))
    }

    async fn remove_upload(&self, id: uuid::Uuid) -> Result<(), StoreError> {
        self.remove_staging_entry(&id.hyphenated().to_string()).await
    }

    async fn staging_entries(&self) -> Result<Vec<StagingEntry>, StoreError> {
        self.inner.list_sessions(&self.inner.key("uploads/")).await
    }

    async fn remove_staging_entry(&self, name: &str) -> Result<(), StoreError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a staging entry name").into());
        }
        let dir = session_dir(&self.inner, name);
        let keys = self.inner.list(&dir).await?.into_iter().map(|(k, _)| k).collect();
        self.inner.delete_many(keys).await
    }

    async fn enumerate(&self) -> Result<Vec<Entry>, StoreError> {
        let objects = self.inner.list(&self.inner.key("blobs/")).await?;
        Ok(objects
            .into_iter()
            .map(|(key, size)| {
                let rel = self.inner.relative(&key).to_owned();
                let digest = digest_of_key(&rel);
                Entry { key: rel, size, digest }
            })
            .collect())
    }

    async fn hash(&self, digest: &Digest, progress: Progress) -> Result<Option<Digest>, StoreError> {
        let Some(body) = self.inner.get(&self.inner.blob_key(digest)).await? else {
            return Ok(None);
        };
        let bytes = body_stream(body);
        let hashed = hash_stream(bytes, digest.algorithm(), &progress)
            .await
            .map_err(|e| StoreError::Unavailable(format!("get: {e}")))?;
        Ok(Some(hashed))
    }

    async fn quarantine(&self, key: &str) -> Result<String, StoreError> {
        let inside = key.starts_with("blobs/") && key.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        if !inside {
            let msg = format!("{key} is not in the blob area");
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg).into());
        }
        let from = self.inner.key(key);
        let to = self.inner.key(&format!("quarantine/{}", key.replace('/', "_")));
        self.inner.copy(&from, &to).await?;
        self.inner.delete(&from).await?;
        Ok(format!("s3://{}/{to}", self.inner.bucket()))
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner
            .client
            .head_bucket()
            .bucket(inner.bucket())
            .send()
            .await
            .map_err(|e| unavailable("head bucket", &e))?;
        Ok(())
    }

    /// A bucket is reachable from every node.
    fn shared(&self) -> bool {
        true
    }

    fn min_chunk(&self) -> Option<u64> {
        Some(self.inner.opts.part_size)
    }

    async fn redirect(&self, digest: &Digest) -> Result<Option<String>, StoreError> {
        if !self.inner.opts.redirect {
            return Ok(None);
        }
        let inner = &self.inner;
        let config = PresigningConfig::expires_in(PRESIGN_FOR).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let request = inner
            .client
            .get_object()
            .bucket(inner.bucket())
            .key(inner.blob_key(digest))
            .presigned(config)
            .await
            .map_err(|e| unavailable("presign", &e))?;
        Ok(Some(request.uri().to_owned()))
    }

    fn describe(&self) -> String {
        let o = &self.inner.opts;
        let at = o.endpoint.as_deref().unwrap_or("AWS");
        format!("s3 bucket {} prefix {:?} at {at}", o.bucket, o.prefix)
    }
}

/// The digest a relative key names, if it is exactly where that digest's blob belongs.
fn digest_of_key(rel: &str) -> Option<Digest> {
    let parts: Vec<&str> = rel.split('/').collect();
    let ["blobs", alg, a, b, hex] = parts.as_slice() else {
        return None;
    };
    let digest = Digest::parse(&format!("{alg}:{hex}")).ok()?;
    (hex.get(0..2) == Some(*a) && hex.get(2..4) == Some(*b)).then_some(digest)
}

/// An SDK body as a stream of chunks.
fn body_stream(body: S3Body) -> ByteStream {
    Box::pin(futures_util::stream::try_unfold(body, |mut body| async move {
        match body.try_next().await {
            Ok(Some(chunk)) => Ok(Some((chunk, body))),
            Ok(None) => Ok(None),
            Err(e) => Err(std::io::Error::other(format!("object storage read: {e}"))),
        }
    }))
}

/// An opened blob object.
#[derive(Debug)]
struct S3Reader {
    inner: Arc<Inner>,
    key: String,
    size: u64,
}

#[async_trait::async_trait]
impl super::BlobReader for S3Reader {
    async fn stream(self: Box<Self>, start: u64, end: u64) -> Result<Option<ByteStream>, StoreError> {
        let inner = &self.inner;
        let mut get = inner.client.get_object().bucket(inner.bucket()).key(&self.key);
        let whole = start == 0 && end + 1 >= self.size;
        if !whole {
            get = get.range(format!("bytes={start}-{end}"));
        }
        let out = match get.send().await {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(unavailable("get", &e)),
        };
        // The object's whole size, from Content-Range for a range, Content-Length otherwise.
        let total = if whole {
            out.content_length().and_then(|l| u64::try_from(l).ok())
        } else {
            out.content_range()
                .and_then(|r| r.rsplit('/').next())
                .and_then(|t| t.parse().ok())
        };
        if total != Some(self.size) {
            tracing::error!(key = %self.key, expected = self.size, actual = ?total, "blob object has the wrong size; refusing to serve it");
            return Ok(None);
        }
        Ok(Some(body_stream(out.body)))
    }
}

/// An upload held in segment objects under its session directory.
struct S3Upload {
    inner: Arc<Inner>,
    /// `<prefix>/uploads/<name>/`.
    dir: String,
    /// (offset, length) of each segment, in order and contiguous from 0.
    segments: Vec<(u64, u64)>,
    len: u64,
    hasher: Hasher,
    /// A single-request upload: the tail stays in memory until `commit`, which puts a blob
    /// that fits one part straight to its key.
    temp: bool,
    pending: Option<Bytes>,
}

impl std::fmt::Debug for S3Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Upload")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl S3Upload {
    fn new(inner: Arc<Inner>, dir: String, temp: bool, alg: Algorithm) -> Self {
        S3Upload {
            inner,
            dir,
            segments: Vec::new(),
            len: 0,
            hasher: alg.hasher(),
            temp,
            pending: None,
        }
    }

    fn segment_key(&self, offset: u64) -> String {
        format!("{}{offset:020}", self.dir)
    }

    /// Rebuild an upload from its listed objects: the contiguous run of segments from 0,
    /// hashed once with `alg`. Segments past a gap (which only a failed rollback can leave) are
    /// deleted.
    async fn resume(
        inner: Arc<Inner>,
        dir: String,
        objects: Vec<(String, u64)>,
        alg: Algorithm,
    ) -> Result<Self, StoreError> {
        let mut found: Vec<(u64, u64)> = objects
            .iter()
            .filter_map(|(k, size)| k.strip_prefix(&dir)?.parse::<u64>().ok().map(|o| (o, *size)))
            .collect();
        found.sort_unstable();
        let mut upload = S3Upload::new(inner, dir, false, alg);
        let mut stray = Vec::new();
        for (offset, size) in found {
            if offset == upload.len && size > 0 {
                upload.segments.push((offset, size));
                upload.len += size;
            } else {
                stray.push(upload.segment_key(offset));
            }
        }
        if !stray.is_empty() {
            tracing::warn!(dir = %upload.dir, count = stray.len(), "removing upload segments past a gap");
            upload.inner.delete_many(stray).await?;
        }
        for &(offset, _) in &upload.segments.clone() {
            let key = upload.segment_key(offset);
            let body = upload
                .inner
                .get(&key)
                .await?
                .ok_or_else(|| StoreError::Unavailable(format!("segment {key} vanished while resuming")))?;
            let mut chunks = body_stream(body);
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|e| StoreError::Unavailable(e.to_string()))?;
                upload.hasher.update(&chunk);
            }
        }
        Ok(upload)
    }

    /// The last segment, if it is shorter than a part (so the next append extends it).
    fn tail(&self) -> Option<(u64, u64)> {
        self.segments
            .last()
            .copied()
            .filter(|&(_, len)| len < self.inner.opts.part_size)
    }

    /// Receive `body` into parts and put them, keeping at most `IN_FLIGHT` puts outstanding.
    /// Returns the segments written (whether or not it then failed) and the outcome.
    async fn receive(
        &mut self,
        body: Body<'_>,
        limits: AppendLimits,
        mut buf: BytesMut,
        mut buf_start: u64,
    ) -> (Vec<(u64, u64)>, Result<(), AppendError>) {
        let part = usize::try_from(self.inner.opts.part_size).unwrap_or(usize::MAX);
        let mut body = Limited::new(body, limits, self.len);
        let mut puts = FuturesOrdered::new();
        let mut written = Vec::new();
        let mut outcome = Ok(());
        loop {
            let chunk = match body.next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            self.hasher.update(&chunk);
            buf.extend_from_slice(&chunk);
            while buf.len() >= part {
                let full = buf.split_to(part).freeze();
                puts.push_back(self.put_segment(buf_start, full));
                buf_start += part as u64;
                if puts.len() >= IN_FLIGHT {
                    match puts.next().await.expect("a put is in flight") {
                        Ok(seg) => written.push(seg),
                        Err(e) => outcome = Err(AppendError::Store(e)),
                    }
                }
            }
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_ok() && !buf.is_empty() {
            let rest = buf.freeze();
            if self.temp {
                self.pending = Some(rest);
            } else {
                puts.push_back(self.put_segment(buf_start, rest));
            }
        }
        while let Some(put) = puts.next().await {
            match put {
                Ok(seg) => written.push(seg),
                Err(e) if outcome.is_ok() => outcome = Err(AppendError::Store(e)),
                Err(_) => {}
            }
        }
        (written, outcome)
    }

    fn put_segment(&self, offset: u64, bytes: Bytes) -> impl Future<Output = Result<(u64, u64), StoreError>> + use<> {
        let (inner, key, len) = (Arc::clone(&self.inner), self.segment_key(offset), bytes.len() as u64);
        async move {
            inner.put(&key, bytes).await?;
            Ok((offset, len))
        }
    }

    /// Undo a failed append: delete the segments it added past the old tail and put the old
    /// tail's bytes back.
    async fn rollback(&self, written: &[(u64, u64)], old_tail: Option<(u64, Bytes)>) -> Result<(), StoreError> {
        let keep_from = old_tail.as_ref().map_or(self.len, |(o, _)| *o);
        let added: Vec<String> = written
            .iter()
            .filter(|(o, _)| *o > keep_from || (*o == keep_from && old_tail.is_none()))
            .map(|(o, _)| self.segment_key(*o))
            .collect();
        self.inner.delete_many(added).await?;
        if let Some((offset, bytes)) = old_tail
            && written.iter().any(|(o, _)| *o == offset)
        {
            self.inner.put(&self.segment_key(offset), bytes).await?;
        }
        Ok(())
    }

    /// Every object key of the upload's directory.
    async fn all_keys(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.inner.list(&self.dir).await?.into_iter().map(|(k, _)| k).collect())
    }
}

#[async_trait::async_trait]
impl Upload for S3Upload {
    fn len(&self) -> u64 {
        self.len
    }

    async fn append(
        mut self: Box<Self>,
        body: Body<'_>,
        limits: AppendLimits,
    ) -> (Box<dyn Upload>, Result<u64, AppendError>) {
        let (start_len, start_hash, start_segments) = (self.len, self.hasher.clone(), self.segments.clone());
        // Continue the tail: its bytes start the first part of this append.
        let mut buf = BytesMut::new();
        let mut buf_start = self.len;
        let mut old_tail = None;
        if let Some(pending) = self.pending.take() {
            buf.extend_from_slice(&pending);
            buf_start -= pending.len() as u64;
        } else if let Some((offset, tail_len)) = self.tail() {
            match self.inner.get_all(&self.segment_key(offset)).await {
                // Another node's append that died half-way can leave a longer tail than this
                // one knows: its bytes are not in this running hash, so resume instead.
                Ok(Some(bytes)) if bytes.len() as u64 != tail_len => {
                    let e = StoreError::Unavailable(format!("upload tail {} changed", self.segment_key(offset)));
                    return (self, Err(e.into()));
                }
                Ok(Some(bytes)) => {
                    buf.extend_from_slice(&bytes);
                    buf_start = offset;
                    old_tail = Some((offset, bytes));
                }
                Ok(None) => {
                    let e = StoreError::Unavailable(format!("upload tail {} vanished", self.segment_key(offset)));
                    return (self, Err(e.into()));
                }
                Err(e) => return (self, Err(e.into())),
            }
        }
        let (written, outcome) = self.receive(body, limits, buf, buf_start).await;
        match outcome {
            Ok(()) => {
                for (offset, len) in written {
                    match self.segments.iter_mut().find(|(o, _)| *o == offset) {
                        Some(seg) => seg.1 = len,
                        None => self.segments.push((offset, len)),
                    }
                }
                self.segments.sort_unstable();
                let held = self.pending.as_ref().map_or(0, Bytes::len) as u64;
                self.len = self.segments.last().map_or(0, |(o, l)| o + l) + held;
                let appended = self.len - start_len;
                (self, Ok(appended))
            }
            Err(e) => {
                if self.temp {
                    self.pending = None;
                }
                let undone = self.rollback(&written, old_tail).await;
                self.len = start_len;
                self.hasher = start_hash;
                self.segments = start_segments;
                match undone {
                    Ok(()) => (self, Err(e)),
                    Err(u) => {
                        tracing::warn!(error = %u, "could not roll back a failed upload append");
                        (self, Err(AppendError::Store(u)))
                    }
                }
            }
        }
    }

    async fn digest(&self, alg: Algorithm) -> Result<Digest, StoreError> {
        if alg == self.hasher.algorithm() {
            return Ok(self.hasher.clone().finish());
        }
        // Another algorithm than the running hash's reads the segments (and the pending tail)
        // once.
        crate::testhook::reached(super::DIGEST_REREAD);
        let mut hasher = alg.hasher();
        for &(offset, _) in &self.segments {
            let key = self.segment_key(offset);
            let body = self
                .inner
                .get(&key)
                .await?
                .ok_or_else(|| StoreError::Unavailable(format!("segment {key} vanished")))?;
            let mut chunks = body_stream(body);
            while let Some(chunk) = chunks.next().await {
                hasher.update(&chunk.map_err(|e| StoreError::Unavailable(e.to_string()))?);
            }
        }
        if let Some(pending) = &self.pending {
            hasher.update(pending);
        }
        Ok(hasher.finish())
    }

    async fn commit(mut self: Box<Self>, digest: &Digest) -> Result<(), StoreError> {
        let key = self.inner.blob_key(digest);
        if let Some(pending) = self.pending.take() {
            if self.segments.is_empty() {
                // A single-request upload that fits one part: straight to its key.
                return self.inner.put(&key, pending).await;
            }
            let offset = self.len - pending.len() as u64;
            self.put_segment(offset, pending).await?;
            self.segments.push((offset, self.len - offset));
        }
        let parts: Vec<(String, u64)> = self.segments.iter().map(|&(o, l)| (self.segment_key(o), l)).collect();
        let written = match parts.as_slice() {
            [] => self.inner.put(&key, Bytes::new()).await,
            [(one, _)] => self.inner.copy(one, &key).await,
            many => self.inner.compose(many, &key).await,
        };
        if let Err(e) = written {
            // A concurrent commit of the same digest (another node, say) can make this one's
            // multipart upload vanish (Garage keeps one per key): the blob is there all the
            // same, with the same bytes.
            if self.inner.size_of(&key).await? != Some(self.len) {
                return Err(e);
            }
        }
        // The blob is in place; the segments are leftovers now, which start-up would also
        // remove (a session whose row the commit drops).
        // Its keys are known: the segments, and a session's marker.
        let mut keys: Vec<String> = self.segments.iter().map(|(o, _)| self.segment_key(*o)).collect();
        if !self.temp {
            keys.push(format!("{}{MARKER}", self.dir));
        }
        if let Err(e) = self.inner.delete_many(keys).await {
            tracing::warn!(error = %e, dir = %self.dir, "could not remove committed upload segments");
        }
        Ok(())
    }

    async fn discard(self: Box<Self>) -> Result<(), StoreError> {
        let keys = self.all_keys().await?;
        self.inner.delete_many(keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_blob_keys_name_a_digest() {
        let hex = "a".repeat(64);
        let good = format!("blobs/sha256/aa/aa/{hex}");
        assert_eq!(digest_of_key(&good).unwrap().hex(), hex);
        assert!(digest_of_key(&format!("blobs/sha256/ab/aa/{hex}")).is_none());
        assert!(digest_of_key(&format!("blobs/sha256/aa/{hex}")).is_none());
        assert!(digest_of_key("blobs/sha256/aa/aa/zz").is_none());
    }
}
