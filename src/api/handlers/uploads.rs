//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (start, mount or monolithic) and
//! `GET`/`PATCH`/`PUT`/`DELETE /v2/<name>/blobs/uploads/<id>`.
//!
//! A session hashes its bytes as they arrive with the algorithm the `POST` names in
//! `?digest-algorithm=` (distribution-spec PR #543), or, without one, that of the `mount`
//! digest it falls back from, or sha256; the final `PUT` then never reads the bytes again when
//! its digest has that algorithm (and still verifies, by reading them once, when it does not).
//! An algorithm Berth does not store is refused (400 `DIGEST_INVALID`).

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::{header_str, hv};
use crate::api::error::range_value;
use crate::api::query::Query;
use crate::api::range::{ByteRange, parse_content_range};
use crate::api::{ApiError, Code};
use crate::oci::{Algorithm, Digest, RepoName};
use crate::registry::{Error, Registry, UploadStatus};

pub async fn start(
    reg: &std::sync::Arc<Registry>,
    name: &RepoName,
    query: &Query,
    body: Body,
    client: std::net::IpAddr,
    may_mount: bool,
    actor: &crate::meta::Actor,
) -> Result<Response, ApiError> {
    let requested = digest_algorithm(query)?;
    let mut fallback = Algorithm::Sha256;
    if let Some(mount) = query.get("mount").filter(|_| may_mount) {
        let digest = Digest::parse(mount).map_err(Error::from)?;
        fallback = digest.algorithm();
        let from = query
            .get("from")
            .map(RepoName::parse)
            .transpose()
            .map_err(Error::from)?;
        if reg.mount_blob(name, &digest, from.as_ref(), actor).await? {
            return Ok(created(name, &digest));
        }
        // Not mountable: fall back to an ordinary upload session, as the spec asks. (So is a
        // mount the caller may not make.)
    } else if let Some(digest) = query.get("digest") {
        let digest = Digest::parse(digest).map_err(Error::from)?;
        reg.monolithic_upload(name, &digest, body.into_data_stream()).await?;
        return Ok(created(name, &digest));
    }
    let algorithm = requested.unwrap_or(fallback);
    let status = reg.start_upload(name, Some(client), algorithm).await?;
    Ok(progress(reg, StatusCode::ACCEPTED, name, status))
}

/// The `digest-algorithm` parameter, if given: one Berth stores content under.
fn digest_algorithm(query: &Query) -> Result<Option<Algorithm>, ApiError> {
    let Some(name) = query.get("digest-algorithm") else {
        return Ok(None);
    };
    Algorithm::from_name(name).map(Some).map_err(|_| {
        let name: String = name.chars().take(32).collect();
        ApiError::new(
            Code::DigestInvalid,
            format!("digest-algorithm {name:?} is not supported; use sha256 or sha512"),
        )
    })
}

pub async fn status(reg: &Registry, name: &RepoName, id: &str) -> Result<Response, ApiError> {
    let status = reg.upload_status(name, id).await?;
    Ok(progress(reg, StatusCode::NO_CONTENT, name, status))
}

pub async fn patch(
    reg: &Registry,
    name: &RepoName,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let range = content_range(headers)?;
    let status = reg.append_upload(name, id, range, body.into_data_stream()).await?;
    Ok(progress(reg, StatusCode::ACCEPTED, name, status))
}

pub async fn finish(
    reg: &Registry,
    name: &RepoName,
    id: &str,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let digest = query
        .get("digest")
        .ok_or_else(|| ApiError::new(Code::DigestInvalid, "the digest parameter is required"))?;
    let digest = Digest::parse(digest).map_err(Error::from)?;
    let range = content_range(headers)?;
    reg.finish_upload(name, id, &digest, range, body.into_data_stream())
        .await?;
    Ok(created(name, &digest))
}

pub async fn cancel(reg: &Registry, name: &RepoName, id: &str) -> Result<Response, ApiError> {
    reg.cancel_upload(name, id).await?;
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .expect("valid response"))
}

fn content_range(headers: &HeaderMap) -> Result<Option<ByteRange>, ApiError> {
    match header_str(headers, header::CONTENT_RANGE) {
        None => Ok(None),
        Some(v) => parse_content_range(v)
            .map(Some)
            .ok_or_else(|| ApiError::new(Code::BlobUploadInvalid, format!("malformed Content-Range {v:?}"))),
    }
}

/// 201 for a blob now in the repository.
fn created(name: &RepoName, digest: &Digest) -> Response {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, hv(&format!("/v2/{name}/blobs/{digest}")))
        .header("docker-content-digest", hv(digest.as_str()))
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

/// 202/204 describing an open session, with the smallest chunk the blob store takes well
/// (`OCI-Chunk-Min-Length`) when it has one.
fn progress(reg: &Registry, status: StatusCode, name: &RepoName, upload: UploadStatus) -> Response {
    let id = upload.id.hyphenated().to_string();
    let mut response = Response::builder().status(status);
    if let Some(min) = reg.min_chunk() {
        response = response.header("oci-chunk-min-length", min);
    }
    response
        .header(header::LOCATION, hv(&format!("/v2/{name}/blobs/uploads/{id}")))
        .header(header::RANGE, range_value(upload.offset))
        .header("docker-upload-uuid", hv(&id))
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}
