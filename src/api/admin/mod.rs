//! The admin API: `POST /admin/gc` starts garbage collection (`?dry_run=true` for a dry run),
//! `GET /admin/gc` lists recent runs, `GET /admin/gc/{id}` shows one; `/admin/fsck` does the
//! same for fsck (`?repair=true`, `?quick=true`). `POST /admin/retention` applies the
//! retention rules on their own (`?dry_run=true`) and answers with the report. Who may call them is decided by
//! `access::admin_guard`: the admin role, or loopback clients when authentication is off.
//! Query parameters other than those named here are ignored.
//!
//! The runs themselves are background jobs: `runs` starts them, `jobs` keeps their table.

pub mod jobs;
mod runs;

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::query::Query;
use super::{ApiError, App, Code};

pub use runs::{start_fsck, start_gc};

pub async fn gc_start(State(app): State<App>, uri: Uri) -> Response {
    handle(|| {
        let query = Query::parse(uri.query());
        let opts = app
            .gc_options
            .clone()
            .with_dry_run(matches!(query.get("dry_run"), Some("true" | "1")));
        let (view, started) = start_gc(&app.gc, Arc::clone(&app.registry), opts);
        let status = if started { StatusCode::ACCEPTED } else { StatusCode::OK };
        Ok((status, Json(view)).into_response())
    })
}

pub async fn fsck_start(State(app): State<App>, uri: Uri) -> Response {
    handle(|| {
        let query = Query::parse(uri.query());
        let flag = |k| matches!(query.get(k), Some("true" | "1"));
        let opts = crate::fsck::Options {
            quick: flag("quick"),
            repair: flag("repair"),
        };
        let (view, started) = start_fsck(&app.fsck, Arc::clone(&app.registry), opts);
        let status = if started { StatusCode::ACCEPTED } else { StatusCode::OK };
        Ok((status, Json(view)).into_response())
    })
}

/// `POST /admin/retention` (`?dry_run=true`): apply the retention rules now, without the rest
/// of a collection; the report lists what went and why. Metadata only, so it answers at once.
pub async fn retention(State(app): State<App>, uri: Uri) -> Response {
    let dry_run = matches!(Query::parse(uri.query()).get("dry_run"), Some("true" | "1"));
    match crate::gc::retention::run(&app.registry, dry_run, app.gc_options.grace_period).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub async fn fsck_list(State(app): State<App>) -> Response {
    handle(|| Ok(Json(app.fsck.list()).into_response()))
}

pub async fn fsck_get(State(app): State<App>, id: Result<Path<String>, PathRejection>) -> Response {
    handle(|| {
        let id = run_id(id)?;
        let job = app
            .fsck
            .get(&id)
            .ok_or_else(|| ApiError::new(Code::NotFound, format!("no fsck run {id}")))?;
        Ok(Json(job).into_response())
    })
}

pub async fn usage(State(app): State<App>) -> Response {
    let all = async {
        let r = &app.registry;
        Ok::<_, crate::registry::Error>((r.usage().await?, r.cache_usage().await?, r.quota_usage().await?))
    };
    match all.await {
        Ok((usage, caches, quotas)) => {
            let mut body = serde_json::to_value(usage).expect("usage serialises");
            if !caches.is_empty() {
                body["caches"] = serde_json::to_value(caches).expect("cache usage serialises");
            }
            if !quotas.is_empty() {
                body["quotas"] = serde_json::to_value(quotas).expect("quota usage serialises");
            }
            Json(body).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub async fn gc_list(State(app): State<App>) -> Response {
    handle(|| Ok(Json(app.gc.list()).into_response()))
}

pub async fn gc_get(State(app): State<App>, id: Result<Path<String>, PathRejection>) -> Response {
    handle(|| {
        let id = run_id(id)?;
        let job = app
            .gc
            .get(&id)
            .ok_or_else(|| ApiError::new(Code::NotFound, format!("no garbage collection run {id}")))?;
        Ok(Json(job).into_response())
    })
}

/// The run id of the path; one that does not decode (say `%ff`) names no run, and is answered
/// with an OCI body like every other failure rather than axum's plain-text rejection.
fn run_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    id.map(|Path(id)| id)
        .map_err(|e| ApiError::new(Code::NotFound, e.body_text()))
}

/// Run `f`, answering its error as an OCI error.
fn handle(f: impl FnOnce() -> Result<Response, ApiError>) -> Response {
    f().unwrap_or_else(IntoResponse::into_response)
}
