//! `/admin/test/*`: the routes through which integration tests drive `crate::testhook`. Compiled
//! only with the `test-hooks` feature, and mounted (behind the admin guard) only on a server
//! started with `BERTH_TEST_HOOKS=1`; anywhere else these paths answer 404 like any unknown one.
//! - `POST /admin/test/resume?point=P` releases what is paused at `P` (404 if nothing is).
//! - `GET /admin/test/reached?point=P` answers `{"count": n}`.
//! - `POST /admin/test/clock?advance_ms=N` moves the test clock N ms ahead and answers
//!   `{"offset_ms": total}`.

use axum::Json;
use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::query::Query;
use super::{ApiError, App, Code};
use crate::testhook;

/// `admin` with the test routes, if this server runs with its test hooks on.
pub fn mount(admin: Router<App>) -> Router<App> {
    if !testhook::enabled() {
        return admin;
    }
    admin
        .route("/admin/test/resume", axum::routing::post(resume))
        .route("/admin/test/reached", axum::routing::get(reached))
        .route("/admin/test/clock", axum::routing::post(clock))
}

async fn resume(uri: Uri) -> Response {
    let query = Query::parse(uri.query());
    let point = match point(&query) {
        Ok(point) => point,
        Err(e) => return e.into_response(),
    };
    match testhook::resume(point) {
        0 => ApiError::new(Code::NotFound, format!("nothing is paused at {point}")).into_response(),
        n => Json(json!({ "resumed": n })).into_response(),
    }
}

async fn reached(uri: Uri) -> Response {
    let query = Query::parse(uri.query());
    match point(&query) {
        Ok(point) => Json(json!({ "count": testhook::reached_count(point) })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn clock(uri: Uri) -> Response {
    let query = Query::parse(uri.query());
    match query.get("advance_ms").map(str::parse::<u64>) {
        Some(Ok(ms)) => Json(json!({ "offset_ms": testhook::advance_clock(ms) })).into_response(),
        _ => ApiError::new(Code::Unsupported, "advance_ms must be a number of milliseconds")
            .with_status(StatusCode::BAD_REQUEST)
            .into_response(),
    }
}

fn point(query: &Query) -> Result<&str, ApiError> {
    query
        .get("point")
        .ok_or_else(|| ApiError::new(Code::Unsupported, "point is required").with_status(StatusCode::BAD_REQUEST))
}
