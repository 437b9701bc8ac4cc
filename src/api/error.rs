//! The one mapping from errors to HTTP: every failure becomes an OCI error body
//! `{"errors":[{"code","message","detail"}]}` with the status its code carries. The match over
//! `registry::Error` is exhaustive, so a new domain error cannot ship without a status.
//!
//! Invariant: every 429 carries `Retry-After` (RFC 9110 10.2.3), in whole seconds: the errors
//! that become one (`registry::Error::TooManyRequests`, `auth::AuthError::TooManyFailures`) say
//! when to retry, and `ApiError::too_many_requests` is how they become responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::route::RouteError;
use crate::oci::NameError;
use crate::registry::Error;

/// `Retry-After` of a 503 `ApiError::unavailable` (the metadata database is unreachable, or
/// another node runs what was asked): a restarting PostgreSQL is usually back within seconds.
const RETRY_AFTER_SECS: u64 = 2;

/// An OCI error code with its HTTP status and default message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unsupported,
    PaginationNumberInvalid,
    Unauthorized,
    Denied,
    TooManyRequests,
    /// Admin API: no such resource (not an OCI code).
    NotFound,
    /// A service the registry depends on is down (Distribution's `UNAVAILABLE`): retry later.
    Unavailable,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unsupported => "UNSUPPORTED",
            Code::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::NotFound => "NOT_FOUND",
            Code::Unavailable => "UNAVAILABLE",
            Code::Internal => "UNKNOWN",
        }
    }

    /// The status this code carries when nothing more specific applies.
    pub fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown
            | Code::NotFound => StatusCode::NOT_FOUND,
            Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestBlobUnknown
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::SizeInvalid
            | Code::PaginationNumberInvalid => StatusCode::BAD_REQUEST,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Code::BlobUnknown => "blob unknown to registry",
            Code::BlobUploadInvalid => "blob upload invalid",
            Code::BlobUploadUnknown => "blob upload unknown to registry",
            Code::DigestInvalid => "provided digest did not match uploaded content",
            Code::ManifestBlobUnknown => "manifest references a blob unknown to registry",
            Code::ManifestInvalid => "manifest invalid",
            Code::ManifestUnknown => "manifest unknown to registry",
            Code::NameInvalid => "invalid repository name",
            Code::NameUnknown => "repository name not known to registry",
            Code::SizeInvalid => "provided length did not match content length",
            Code::Unsupported => "the operation is unsupported",
            Code::PaginationNumberInvalid => "invalid number of results requested",
            Code::Unauthorized => "authentication required",
            Code::Denied => "requested access to the resource is denied",
            Code::Unavailable => "service unavailable",
            Code::TooManyRequests => "too many requests",
            Code::NotFound => "not found",
            Code::Internal => "internal server error",
        }
    }
}

/// An error response about to be written.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub detail: String,
    /// Replaces the code's generic `message` where clients show only that (the Docker engine
    /// prints `denied: <message>`) and the reason is the point: a policy's refusal.
    pub message: Option<String>,
    /// Extra headers, such as `Content-Range` on a 416.
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        ApiError {
            status: code.status(),
            code,
            detail: detail.into(),
            message: None,
            headers: Vec::new(),
        }
    }

    /// An error whose `message` is its detail too (see `message`).
    pub fn explained(code: Code, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        ApiError {
            message: Some(detail.clone()),
            ..ApiError::new(code, detail)
        }
    }

    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn not_found_route() -> Self {
        ApiError::new(Code::Unsupported, "no such endpoint").with_status(StatusCode::NOT_FOUND)
    }

    /// 405 for a method the endpoint does not answer; `allow` lists those it does.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        ApiError::new(Code::Unsupported, "method not allowed on this endpoint").with_allow(allow)
    }

    /// 429 `TOOMANYREQUESTS` with `Retry-After`: `retry_after` rounded up to whole seconds,
    /// at least one.
    pub fn too_many_requests(detail: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let mut err = ApiError::new(Code::TooManyRequests, detail);
        err.headers.push((header::RETRY_AFTER, HeaderValue::from(secs.max(1))));
        err
    }

    /// 503 `UNAVAILABLE` with `Retry-After`: something the client may simply try again soon.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut err = ApiError::new(Code::Unavailable, detail);
        err.headers
            .push((header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS)));
        err
    }

    /// Add the `Allow` header that RFC 9110 requires of every 405.
    #[must_use]
    pub fn with_allow(mut self, allow: &'static str) -> Self {
        self.headers.push((header::ALLOW, HeaderValue::from_static(allow)));
        self
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let detail = e.to_string();
        match e {
            Error::NameInvalid(NameError::Digest(_)) | Error::DigestInvalid(_) | Error::DigestMismatch { .. } => {
                ApiError::new(Code::DigestInvalid, detail)
            }
            Error::NameInvalid(_) => ApiError::new(Code::NameInvalid, detail),
            Error::NameUnknown(_) => ApiError::new(Code::NameUnknown, detail),
            Error::BlobUnknown | Error::UpstreamBlobUnknown(_) => ApiError::new(Code::BlobUnknown, detail),
            Error::BlobUploadUnknown => ApiError::new(Code::BlobUploadUnknown, detail),
            Error::BlobUploadInvalid(_) => ApiError::new(Code::BlobUploadInvalid, detail),
            Error::SizeInvalid(_) => ApiError::new(Code::SizeInvalid, detail),
            Error::UploadRangeInvalid { offset } => {
                let mut err =
                    ApiError::new(Code::BlobUploadInvalid, detail).with_status(StatusCode::RANGE_NOT_SATISFIABLE);
                err.headers.push((header::RANGE, range_value(offset)));
                err
            }
            Error::BlobTooLarge { .. } => {
                ApiError::new(Code::SizeInvalid, detail).with_status(StatusCode::PAYLOAD_TOO_LARGE)
            }
            Error::RangeNotSatisfiable { size } => {
                let mut err = ApiError::new(Code::SizeInvalid, detail).with_status(StatusCode::RANGE_NOT_SATISFIABLE);
                let value = HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii");
                err.headers.push((header::CONTENT_RANGE, value));
                err
            }
            Error::ManifestInvalid(_) => ApiError::new(Code::ManifestInvalid, detail),
            Error::ManifestTooLarge { .. } => {
                ApiError::new(Code::ManifestInvalid, detail).with_status(StatusCode::PAYLOAD_TOO_LARGE)
            }
            Error::ManifestBlobUnknown(_) => ApiError::new(Code::ManifestBlobUnknown, detail),
            Error::ManifestChildUnknown(_) => {
                ApiError::new(Code::ManifestUnknown, detail).with_status(StatusCode::BAD_REQUEST)
            }
            Error::ManifestUnknown | Error::UpstreamManifestUnknown(_) => ApiError::new(Code::ManifestUnknown, detail),
            Error::Unsupported(_) => ApiError::new(Code::Unsupported, detail),
            Error::TagImmutable { .. } | Error::QuotaExceeded { .. } => ApiError::explained(Code::Denied, detail),
            Error::TooManyRequests { retry_after, .. } => ApiError::too_many_requests(detail, retry_after),
            Error::BodyTimeout(_) => {
                ApiError::new(Code::BlobUploadInvalid, detail).with_status(StatusCode::REQUEST_TIMEOUT)
            }
            Error::StorageUnavailable(_) => {
                // Logged once here, with the cause; the client learns only that it may retry.
                tracing::error!(error = %detail, "blob storage unavailable");
                ApiError::new(
                    Code::Unavailable,
                    "blob storage is unavailable; nothing acknowledged was lost, retry later",
                )
            }
            Error::MetadataUnavailable(_) => {
                // Logged once here, with the cause (which names no host and no password).
                tracing::error!(error = %detail, "metadata database unavailable");
                ApiError::unavailable(
                    "the metadata database is unavailable; nothing acknowledged was lost, retry later",
                )
            }
            Error::UpstreamUnavailable(_) => {
                tracing::warn!(error = %detail, "pull-through cache: upstream failed");
                ApiError::new(Code::Unavailable, detail)
            }
            Error::UpstreamCorrupt(_) => {
                tracing::error!(error = %detail, "pull-through cache: upstream sent corrupt content");
                ApiError::new(Code::Unavailable, detail).with_status(StatusCode::BAD_GATEWAY)
            }
            Error::Internal(_) => {
                // Logged once here, with the cause; the client gets a generic body.
                tracing::error!(error = %detail, "internal error");
                ApiError::new(Code::Internal, "internal server error")
            }
        }
    }
}

impl ApiError {
    /// An authentication or authorization failure; a 401 carries `challenge` as its
    /// `WWW-Authenticate` header.
    pub fn auth(e: &crate::auth::AuthError, challenge: &str) -> Self {
        use crate::auth::AuthError;
        let detail = e.to_string();
        match e {
            AuthError::Missing | AuthError::BadCredentials => {
                let mut err = ApiError::new(Code::Unauthorized, detail);
                if let Ok(value) = HeaderValue::from_str(challenge) {
                    err.headers.push((header::WWW_AUTHENTICATE, value));
                }
                err
            }
            AuthError::Denied => ApiError::new(Code::Denied, detail),
            AuthError::TooManyFailures { retry_after } => ApiError::too_many_requests(detail, *retry_after),
            AuthError::File { .. } | AuthError::Internal(_) => {
                tracing::error!(error = %detail, "authentication failed internally");
                ApiError::new(Code::Internal, "internal server error")
            }
        }
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::NotFound => ApiError::not_found_route(),
            // A manifest reference with a `:` is a digest: report it as one, not as a bad name.
            RouteError::Name(NameError::Digest(d)) | RouteError::Digest(d) => Error::DigestInvalid(d).into(),
            RouteError::Name(n) => Error::NameInvalid(n).into(),
            RouteError::UploadUnknown => Error::BlobUploadUnknown.into(),
        }
    }
}

/// The `Range` header value of an upload at `offset` bytes: `0-<last byte>` (`0-0` when empty,
/// as CNCF Distribution reports it).
pub fn range_value(offset: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("0-{}", offset.saturating_sub(1))).expect("ascii")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        debug_assert!(
            self.status != StatusCode::TOO_MANY_REQUESTS || self.headers.iter().any(|(h, _)| h == header::RETRY_AFTER),
            "a 429 without Retry-After: build it with ApiError::too_many_requests"
        );
        let message = self.message.as_deref().unwrap_or(self.code.message());
        let body = json!({"errors": [{"code": self.code.as_str(), "message": message, "detail": self.detail}]});
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}
