//! `GET /v2/`, `/v2/_catalog`, `/v2/<name>/tags/list` and `/v2/<name>/referrers/<digest>`.
//! The catalog takes `q` besides `n` and `last`: only names containing it, as `docker search`
//! matches them (`registry::SearchTerm`).

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::hv;
use crate::api::query::Query;
use crate::api::{ApiError, Code};
use crate::oci::{Digest, RepoName, media};
use crate::registry::{Page, Registry};

/// Page size of `_catalog` when the client gives none.
const CATALOG_DEFAULT_PAGE: usize = 1000;
/// The largest page any listing returns.
const MAX_PAGE: usize = 10_000;

pub fn base() -> Response {
    json_response(StatusCode::OK, "application/json", &json!({}))
}

/// The catalog, of the repositories `visible` keeps (all of them without authentication) whose
/// names contain `q`, if given.
pub async fn catalog(
    reg: &Registry,
    query: &Query,
    visible: Option<crate::api::access::Visible>,
) -> Result<Response, ApiError> {
    let n = page_size(query)?.unwrap_or(CATALOG_DEFAULT_PAGE);
    let last = query.get("last").map(str::to_owned);
    let term = super::search::term(query)?;
    let path = match (&term, query.get("q")) {
        (Some(_), Some(q)) => {
            let q: String = form_urlencoded::byte_serialize(q.as_bytes()).collect();
            format!("/v2/_catalog?q={q}&")
        }
        _ => "/v2/_catalog?".to_owned(),
    };
    let page = match (visible, term) {
        (None, None) => reg.catalog(last, n).await?,
        (visible, term) => {
            let keep = move |name: &str| {
                term.as_ref().is_none_or(|t| t.matches(name)) && visible.as_ref().is_none_or(|v| v(name))
            };
            reg.catalog_visible(last, n, keep).await?
        }
    };
    let mut response = json_response(StatusCode::OK, "application/json", &json!({"repositories": page.items}));
    link_next(&mut response, &path, n, &page);
    Ok(response)
}

pub async fn tags(reg: &Registry, name: &RepoName, query: &Query) -> Result<Response, ApiError> {
    let n = page_size(query)?;
    let page = reg
        .tags(name, query.get("last").map(str::to_owned), n.unwrap_or(usize::MAX))
        .await?;
    let mut response = json_response(
        StatusCode::OK,
        "application/json",
        &json!({"name": name.as_str(), "tags": page.items}),
    );
    if let Some(n) = n {
        link_next(&mut response, &format!("/v2/{name}/tags/list?"), n, &page);
    }
    Ok(response)
}

pub async fn referrers(reg: &Registry, name: &RepoName, subject: &Digest, query: &Query) -> Result<Response, ApiError> {
    let filter = query.get("artifactType").map(str::to_owned);
    let filtered = filter.is_some();
    let manifests: Vec<Value> = reg
        .referrers(name, subject, filter)
        .await?
        .into_iter()
        .map(|(digest, row)| {
            let mut d = json!({"mediaType": row.media_type, "digest": digest, "size": row.size});
            if let Some(at) = row.artifact_type {
                d["artifactType"] = Value::String(at);
            }
            if !row.annotations.is_empty() {
                d["annotations"] = json!(row.annotations);
            }
            d
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests});
    let mut response = json_response(StatusCode::OK, media::OCI_INDEX, &index);
    if filtered {
        response.headers_mut().insert("oci-filters-applied", hv("artifactType"));
    }
    Ok(response)
}

/// `n`, if given: a non-negative integer, capped at `MAX_PAGE`.
fn page_size(query: &Query) -> Result<Option<usize>, ApiError> {
    query
        .get("n")
        .map(|n| {
            n.parse::<usize>()
                .map(|n| n.min(MAX_PAGE))
                .map_err(|_| ApiError::new(Code::PaginationNumberInvalid, format!("n={n:?} is not a number")))
        })
        .transpose()
}

/// RFC 5988 `Link` to the next page, when there is one. `path` ends in `?`, or in `&` after
/// the parameters that every page repeats.
fn link_next(response: &mut Response, path: &str, n: usize, page: &Page) {
    if let (true, Some(last)) = (page.more, page.items.last()) {
        let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
        let link = format!("<{path}n={n}&last={last}>; rel=\"next\"");
        response.headers_mut().insert(header::LINK, hv(&link));
    }
}

pub(super) fn json_response(status: StatusCode, content_type: &'static str, value: &Value) -> Response {
    let body = value.to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .expect("valid response")
}
