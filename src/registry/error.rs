//! The registry's domain errors. `api::error` maps each variant to an OCI error code and HTTP
//! status in one exhaustive match.

use crate::blobs::{AppendError, StoreError};
use crate::meta::MetaError;
use crate::oci::{DigestError, ManifestError, NameError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid repository name or tag: {0}")]
    NameInvalid(#[from] NameError),
    #[error("repository {0} is not known")]
    NameUnknown(String),
    #[error("invalid digest: {0}")]
    DigestInvalid(#[from] DigestError),
    #[error("content does not match digest {expected}: got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    /// A chunk whose length is not the one its `Content-Range` gives.
    #[error("chunk length invalid: {0}")]
    SizeInvalid(String),
    #[error("chunk out of order: the upload is at offset {offset}")]
    UploadRangeInvalid { offset: u64 },
    #[error("blob exceeds the size limit of {limit} bytes")]
    BlobTooLarge { limit: u64 },
    #[error("requested range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest exceeds the size limit of {limit} bytes")]
    ManifestTooLarge { limit: u64 },
    #[error("manifest references blob {0}, which is not in this repository")]
    ManifestBlobUnknown(String),
    #[error("index references manifest {0}, which is not in this repository")]
    ManifestChildUnknown(String),
    #[error("manifest unknown to registry")]
    ManifestUnknown,
    /// A manifest push whose new bytes would take a quota's repositories past its limit.
    #[error(
        "quota exceeded: the repositories of quota {quota} use {used} bytes of {limit}, and this push adds {adds} new bytes; delete images there or raise the quota's max_bytes"
    )]
    QuotaExceeded {
        quota: String,
        used: u64,
        limit: u64,
        adds: u64,
    },
    /// A push that would move, or a delete of, an immutable tag (or of its manifest).
    #[error(
        "tag {tag} of {repo} is immutable ({rule}): it cannot be moved to another manifest or deleted; push a new tag instead"
    )]
    TagImmutable { repo: String, tag: String, rule: String },
    #[error("operation not supported: {0}")]
    Unsupported(String),
    /// A limit refused the request for now; `retry_after` is when trying again makes sense.
    #[error("too many requests: {reason}")]
    TooManyRequests {
        reason: String,
        retry_after: std::time::Duration,
    },
    #[error("request body stalled: {0}")]
    BodyTimeout(String),
    /// The blob storage service is down or failing; nothing acknowledged is lost and the
    /// client may retry.
    #[error("{0}")]
    StorageUnavailable(String),
    /// The shared metadata database is unreachable; nothing acknowledged is lost and the
    /// client may retry.
    #[error("{0}")]
    MetadataUnavailable(String),
    /// A pull-through cache's upstream is unreachable or failing, and nothing cached answers.
    #[error("{0}")]
    UpstreamUnavailable(String),
    /// The upstream says it has no such manifest (a 404 there).
    #[error("{0}")]
    UpstreamManifestUnknown(String),
    /// The upstream says it has no such blob.
    #[error("{0}")]
    UpstreamBlobUnknown(String),
    /// The upstream sent content that does not match its digest; nothing was cached.
    #[error("{0}")]
    UpstreamCorrupt(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<MetaError> for Error {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::BlobNotLinked(d) => Error::ManifestBlobUnknown(d),
            e @ MetaError::BlobSizeMismatch { .. } => Error::ManifestInvalid(e.to_string()),
            MetaError::ChildUnknown(d) => Error::ManifestChildUnknown(d),
            MetaError::ManifestUnknown => Error::ManifestUnknown,
            e @ MetaError::BlobInUse { .. } => Error::Unsupported(e.to_string()),
            MetaError::QuotaExceeded {
                quota,
                used,
                limit,
                adds,
            } => Error::QuotaExceeded {
                quota,
                used,
                limit,
                adds,
            },
            MetaError::TagImmutable(tag) => Error::TagImmutable {
                repo: String::new(),
                tag,
                rule: String::new(),
            },
            e @ MetaError::Unavailable(_) => Error::MetadataUnavailable(e.to_string()),
            e @ (MetaError::Db(_) | MetaError::Locked(_) | MetaError::Corrupt(_) | MetaError::Commit(_)) => {
                Error::Internal(e.to_string())
            }
        }
    }
}

impl From<ManifestError> for Error {
    fn from(e: ManifestError) -> Self {
        Error::ManifestInvalid(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(format!("storage I/O: {e}"))
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io(io) => io.into(),
            e @ StoreError::Unavailable(_) => Error::StorageUnavailable(e.to_string()),
        }
    }
}

impl Error {
    /// Map a failed body append: the client's fault except for local I/O.
    pub(crate) fn from_append(e: AppendError) -> Self {
        match e {
            AppendError::TooLarge { limit } => Error::BlobTooLarge { limit },
            e @ AppendError::Body(_) => Error::BlobUploadInvalid(e.to_string()),
            e @ AppendError::LengthMismatch { .. } => Error::SizeInvalid(e.to_string()),
            e @ AppendError::Idle { .. } => Error::BodyTimeout(e.to_string()),
            AppendError::Store(e) => e.into(),
        }
    }
}
