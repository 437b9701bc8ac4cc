//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::{header_str, hv};
use crate::api::ApiError;
use crate::api::range::{RangeRequest, parse_range};
use crate::oci::{Digest, RepoName};
use crate::registry::{self, BlobBody, Error, Registry};

pub async fn get(
    reg: &Arc<Registry>,
    name: &RepoName,
    digest: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    if head {
        let size = reg.stat_blob(name, digest).await?;
        return Ok(blob_response(StatusCode::OK, digest, size, Body::empty()));
    }
    let range_header = header_str(headers, header::RANGE);
    let (size, reader) = match reg.read_blob(name, digest, range_header.is_none()).await? {
        BlobBody::Bytes { size, reader } => (size, reader),
        BlobBody::Redirect { url, .. } => return Ok(redirect(&url)),
        BlobBody::Stream { size, stream } => {
            return Ok(blob_response(StatusCode::OK, digest, size, Body::from_stream(stream)));
        }
    };
    let range = range_header.map_or(RangeRequest::Ignore, |r| parse_range(r, size));
    match range {
        RangeRequest::Ignore => {
            let bytes = registry::stream(reader, 0, size.saturating_sub(1)).await?;
            Ok(blob_response(StatusCode::OK, digest, size, Body::from_stream(bytes)))
        }
        RangeRequest::Unsatisfiable => Err(Error::RangeNotSatisfiable { size }.into()),
        RangeRequest::Partial(r) => {
            let bytes = registry::stream(reader, r.start, r.end).await?;
            let body = Body::from_stream(bytes);
            let mut response = blob_response(StatusCode::PARTIAL_CONTENT, digest, r.size(), body);
            let content_range = format!("bytes {}-{}/{size}", r.start, r.end);
            response.headers_mut().insert(header::CONTENT_RANGE, hv(&content_range));
            Ok(response)
        }
    }
}

/// `307 Temporary Redirect` to where the blob can be fetched directly (a presigned URL). The
/// client sends the same GET there, `Range` included.
fn redirect(url: &str) -> Response {
    Response::builder()
        .status(StatusCode::TEMPORARY_REDIRECT)
        .header(header::LOCATION, hv(url))
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

fn blob_response(status: StatusCode, digest: &Digest, len: u64, body: Body) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header("docker-content-digest", hv(digest.as_str()))
        .header(header::ETAG, hv(&format!("\"{digest}\"")))
        .header(header::ACCEPT_RANGES, "bytes")
        .body(body)
        .expect("valid response")
}

pub async fn delete(
    reg: &Registry,
    name: &RepoName,
    digest: &Digest,
    actor: &crate::meta::Actor,
) -> Result<Response, ApiError> {
    match reg.delete_blob(name, digest, actor).await {
        Ok(()) => Ok(accepted()),
        // Refused (405) while a manifest of the repository references the blob: for now the
        // blob answers only reads.
        Err(e @ Error::Unsupported(_)) => Err(ApiError::from(e).with_allow("GET, HEAD")),
        Err(e) => Err(e.into()),
    }
}

/// `202 Accepted` with an empty body.
pub(crate) fn accepted() -> Response {
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}
