//! `GET /v1/_ping` and `GET /v1/search`: the two requests of the Docker registry API v1 that the
//! Docker engine still sends, for `docker search`.
//!
//! The engine pings first (over HTTPS, then HTTP for an insecure registry), without
//! credentials, and ignores the status. It then asks `/v1/search?q=<term>&n=<1..100>`, with the
//! logged-in user's Basic credentials, and refuses anything but a 200 with
//! `{"num_results","query","results":[...]}`. The ping answers
//! `X-Docker-Registry-Standalone: false`: over HTTPS, a "standalone" registry (the default when
//! the header is absent) gets Basic credentials on every request, empty ones when nobody is
//! logged in, which would turn an anonymous search into a failed login.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::hv;
use super::listing::json_response;
use crate::api::access::Visible;
use crate::api::query::Query;
use crate::api::{ApiError, Code};
use crate::oci::name::MAX_NAME_LEN;
use crate::registry::{Registry, SearchTerm};

/// Results when the client asks for no number (the Docker engine's own default).
const DEFAULT_RESULTS: usize = 25;
/// The most results one search returns (the Docker engine refuses to ask for more).
const MAX_RESULTS: usize = 100;

pub fn ping() -> Response {
    let mut response = json_response(StatusCode::OK, "application/json", &json!({}));
    response
        .headers_mut()
        .insert("x-docker-registry-standalone", hv("false"));
    response
}

/// The repositories matching `q` that `visible` keeps (all without authentication), at most
/// `n`, with their descriptions.
pub async fn search(reg: &Registry, query: &Query, visible: Option<Visible>) -> Result<Response, ApiError> {
    let n = result_count(query)?;
    let raw = query.get("q").unwrap_or_default();
    let term = term(query)?.unwrap_or_else(|| SearchTerm::new(""));
    let found = reg
        .search(term, n, move |name| visible.as_ref().is_none_or(|v| v(name)))
        .await?;
    let results: Vec<Value> = found
        .into_iter()
        .map(|f| {
            json!({
                "name": f.name,
                "description": f.description.unwrap_or_default(),
                "star_count": 0,
                "is_official": false,
                "is_automated": false,
            })
        })
        .collect();
    let body = json!({"num_results": results.len(), "query": raw, "results": results});
    Ok(json_response(StatusCode::OK, "application/json", &body))
}

/// `q`, if given and not empty: at most as long as the longest repository name.
pub(super) fn term(query: &Query) -> Result<Option<SearchTerm>, ApiError> {
    match query.get("q") {
        None | Some("") => Ok(None),
        Some(q) if q.len() > MAX_NAME_LEN => Err(ApiError::new(
            Code::NameInvalid,
            format!("q: a search term is at most {MAX_NAME_LEN} characters"),
        )),
        Some(q) => Ok(Some(SearchTerm::new(q))),
    }
}

/// `n`: 1 to `MAX_RESULTS`, `DEFAULT_RESULTS` when absent.
fn result_count(query: &Query) -> Result<usize, ApiError> {
    let Some(n) = query.get("n") else {
        return Ok(DEFAULT_RESULTS);
    };
    match n.parse::<usize>() {
        Ok(count) if (1..=MAX_RESULTS).contains(&count) => Ok(count),
        _ => Err(ApiError::new(
            Code::PaginationNumberInvalid,
            format!("n={n:?}: a search returns 1 to {MAX_RESULTS} results"),
        )),
    }
}
