//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.
//!
//! A push by digest may name tags to point at the manifest in the same transaction
//! (`PUT /v2/<name>/manifests/<digest>?tag=a&tag=b`, distribution-spec PR #600); the answer
//! then carries one `OCI-Tag` header per tag set. A push by tag takes no `tag` parameters: the
//! spec defines them for a push by digest only, and a request mixing the two is refused (400
//! `UNSUPPORTED`, which the spec describes as "an invalid set of parameters") rather than
//! guessed at.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::BytesMut;
use futures_util::StreamExt;

use super::blobs::accepted;
use super::{header_str, hv};
use crate::api::query::Query;
use crate::api::{ApiError, Code};
use crate::oci::{Reference, RepoName, Tag};
use crate::registry::{Error, Registry};

/// The most `tag` parameters one push by digest may carry; past it, 414 URI Too Long. The
/// distribution-spec asks registries to take at least 10. 64 tags of the longest form (128
/// characters) make a request line of about 8.5 KiB, the size HTTP implementations commonly
/// accept (RFC 9112 3 recommends at least 8000 octets), and well within the server's 128 KiB
/// request head; a client with more tags pushes the rest in further requests.
pub const MAX_TAG_PARAMS: usize = 64;

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
    query: &Query,
    headers: &HeaderMap,
    body: Body,
    actor: &crate::meta::Actor,
) -> Result<Response, ApiError> {
    let tags = tag_params(reference, query)?;
    let limit = reg.limits().manifest_max_bytes;
    let body = read_limited(headers, body, limit).await?;
    let content_type = header_str(headers, header::CONTENT_TYPE);
    let put = reg
        .put_manifest(name, reference, tags, content_type, body, actor)
        .await?;
    let mut response = Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, hv(&format!("/v2/{name}/manifests/{}", put.digest)))
        .header("docker-content-digest", hv(put.digest.as_str()))
        .header(header::CONTENT_LENGTH, 0);
    if let Some(subject) = &put.subject {
        response = response.header("oci-subject", hv(subject.as_str()));
    }
    if matches!(reference, Reference::Digest(_)) {
        for tag in &put.tags {
            response = response.header("oci-tag", hv(tag.as_str()));
        }
    }
    Ok(response.body(Body::empty()).expect("valid response"))
}

/// The `tag` parameters of a manifest PUT, validated and without repeats: only with a digest
/// reference (400 `UNSUPPORTED` otherwise), at most `MAX_TAG_PARAMS` of them as sent (414),
/// each a valid tag (400 `NAME_INVALID`, as for a bad tag in the path).
fn tag_params(reference: &Reference, query: &Query) -> Result<Vec<Tag>, ApiError> {
    let given = query.get_all("tag");
    if given.is_empty() {
        return Ok(Vec::new());
    }
    if let Reference::Tag(tag) = reference {
        let detail = format!(
            "tag parameters go with a push by digest; this push names tag {:?} in its path: \
             push by digest with every tag as a parameter, or push each tag on its own",
            tag.as_str()
        );
        return Err(ApiError::new(Code::Unsupported, detail).with_status(StatusCode::BAD_REQUEST));
    }
    if given.len() > MAX_TAG_PARAMS {
        let detail = format!(
            "{} tag parameters; at most {MAX_TAG_PARAMS} may be given in one push: \
             push the rest with further requests",
            given.len()
        );
        return Err(ApiError::new(Code::Unsupported, detail).with_status(StatusCode::URI_TOO_LONG));
    }
    let mut tags: Vec<Tag> = Vec::with_capacity(given.len());
    for raw in given {
        let tag = Tag::parse(raw).map_err(Error::from)?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
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

pub async fn delete(
    reg: &Registry,
    name: &RepoName,
    reference: &Reference,
    actor: &crate::meta::Actor,
) -> Result<Response, ApiError> {
    reg.delete_manifest(name, reference, actor).await?;
    Ok(accepted())
}
