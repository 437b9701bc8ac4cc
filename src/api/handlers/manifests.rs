//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::BytesMut;
use futures_util::StreamExt;

use super::blobs::accepted;
use super::{header_str, hv};
use crate::api::{ApiError, Code};
use crate::oci::{Reference, RepoName};
use crate::registry::{Error, Registry};

pub async fn get(reg: &Registry, name: &RepoName, reference: &Reference, head: bool) -> Result<Response, ApiError> {
    let m = reg.get_manifest(name, reference).await?;
    let len = m.body.len();
    let body = if head { Body::empty() } else { Body::from(m.body) };
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, hv(&m.media_type))
        .header(header::CONTENT_LENGTH, len)
        .header("docker-content-digest", hv(&m.digest))
        .header(header::ETAG, hv(&format!("\"{}\"", m.digest)));
    if let Some(warning) = &m.warning {
        // RFC 7234 5.5: code 299 ("miscellaneous persistent warning"), no agent, quoted text.
        let text = warning.replace(['"', '\\'], "'");
        response = response.header(header::WARNING, hv(&format!("299 - \"{text}\"")));
    }
    Ok(response.body(body).expect("valid response"))
}

pub async fn put(
    reg: &Registry,
    name: &RepoName,
    reference: &Reference,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = reg.limits().manifest_max_bytes;
    let body = read_limited(headers, body, limit).await?;
    let content_type = header_str(headers, header::CONTENT_TYPE);
    let put = reg.put_manifest(name, reference, content_type, body).await?;
    let mut response = Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, hv(&format!("/v2/{name}/manifests/{}", put.digest)))
        .header("docker-content-digest", hv(put.digest.as_str()))
        .header(header::CONTENT_LENGTH, 0);
    if let Some(subject) = &put.subject {
        response = response.header("oci-subject", hv(subject.as_str()));
    }
    Ok(response.body(Body::empty()).expect("valid response"))
}

/// Read a manifest body of at most `limit` bytes; refuse a larger one without reading it all.
async fn read_limited(headers: &HeaderMap, body: Body, limit: u64) -> Result<bytes::Bytes, ApiError> {
    let too_large = || ApiError::from(Error::ManifestTooLarge { limit });
    let declared = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::with_capacity(usize::try_from(declared.unwrap_or(0)).unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(Code::ManifestInvalid, format!("reading body: {e}")))?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

pub async fn delete(reg: &Registry, name: &RepoName, reference: &Reference) -> Result<Response, ApiError> {
    reg.delete_manifest(name, reference).await?;
    Ok(accepted())
}
