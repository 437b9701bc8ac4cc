//! The admin API: `POST /admin/gc` starts garbage collection (`?dry_run=true` for a dry run),
//! `GET /admin/gc` lists recent runs, `GET /admin/gc/{id}` shows one; `/admin/fsck` does the
//! same for fsck (`?repair=true`, `?quick=true`). `GET /admin/policies` shows the rules in force. `POST /admin/retention` applies the
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

/// Who made an admin request: the user `access::admin_guard` authenticated, if any.
pub struct AdminActor(pub crate::meta::Actor);

impl axum::extract::FromRequestParts<App> for AdminActor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &App) -> Result<Self, Self::Rejection> {
        let user = parts.extensions.get::<super::access::LoggedUser>().map(|u| u.0.clone());
        let peer = parts.extensions.get::<super::Peer>().cloned();
        Ok(AdminActor(match peer {
            Some(peer) => super::actor(user.as_deref(), &parts.method, &parts.headers, &peer),
            None => crate::meta::Actor {
                user,
                ..crate::meta::Actor::default()
            },
        }))
    }
}

pub async fn gc_start(State(app): State<App>, AdminActor(actor): AdminActor, uri: Uri) -> Response {
    handle(|| {
        let query = Query::parse(uri.query());
        let opts = app
            .gc_options
            .clone()
            .with_dry_run(matches!(query.get("dry_run"), Some("true" | "1")));
        let (view, started) = start_gc(&app.gc, Arc::clone(&app.registry), opts, actor);
        let status = if started { StatusCode::ACCEPTED } else { StatusCode::OK };
        Ok((status, Json(view)).into_response())
    })
}

pub async fn fsck_start(State(app): State<App>, AdminActor(actor): AdminActor, uri: Uri) -> Response {
    handle(|| {
        let query = Query::parse(uri.query());
        let flag = |k| matches!(query.get(k), Some("true" | "1"));
        let opts = crate::fsck::Options {
            quick: flag("quick"),
            repair: flag("repair"),
        };
        let (view, started) = start_fsck(&app.fsck, Arc::clone(&app.registry), opts, actor);
        let status = if started { StatusCode::ACCEPTED } else { StatusCode::OK };
        Ok((status, Json(view)).into_response())
    })
}

/// `POST /admin/retention` (`?dry_run=true`): apply the retention rules now, without the rest
/// of a collection; the report lists what went and why. Metadata only, so it answers at once.
pub async fn retention(State(app): State<App>, AdminActor(actor): AdminActor, uri: Uri) -> Response {
    let dry_run = matches!(Query::parse(uri.query()).get("dry_run"), Some("true" | "1"));
    let report = crate::gc::retention::run(&app.registry, dry_run, app.gc_options.grace_period).await;
    let outcome = report
        .as_ref()
        .map(|r| serde_json::json!({"tags": r.tags.len(), "manifests": r.manifests.len()}))
        .map_err(ToString::to_string);
    let what = if dry_run { "dry run" } else { "run" };
    runs::audit(&app.registry, crate::meta::Action::Retention, &actor, what, &outcome).await;
    match report {
        Ok(report) => Json(report).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /admin/policies`: the immutable-tag, retention and quota rules in force (as last
/// loaded, at start-up or on SIGHUP).
pub async fn policies(State(app): State<App>) -> Response {
    Json(app.registry.policies().shown().clone()).into_response()
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

/// `GET /admin/audit?repository=&user=&action=&since=&until=&limit=&before=`: the audit log,
/// newest first, one page (`next` is the `before` of the next page).
pub async fn audit(State(app): State<App>, uri: Uri) -> Response {
    let query = Query::parse(uri.query());
    let parsed = crate::registry::audit_query(|k| query.get(k).map(str::to_owned), crate::meta::now_ms());
    let parsed = match parsed {
        Ok(q) => q,
        Err(why) => {
            return ApiError::new(Code::Unsupported, why)
                .with_status(StatusCode::BAD_REQUEST)
                .into_response();
        }
    };
    match app.registry.audit_log(parsed).await {
        Ok(page) => Json(crate::registry::AuditListing::from(page)).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /admin/notifications`: the outbox, per endpoint: how many events wait, and each
/// with its attempts, next try and last error.
pub async fn notifications(State(app): State<App>) -> Response {
    let rows = match app.registry.outbox().await {
        Ok(rows) => rows,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut endpoints: std::collections::BTreeMap<String, Vec<serde_json::Value>> = std::collections::BTreeMap::new();
    for (endpoint, id, row) in rows {
        endpoints.entry(endpoint).or_default().push(serde_json::json!({
            "id": id,
            "action": row.event.action.as_str(),
            "repository": row.event.repository,
            "digest": row.event.digest,
            "time": crate::registry::rfc3339(row.event.time_ms),
            "attempts": row.attempts,
            "next_attempt": crate::registry::rfc3339(row.next_ms),
            "last_error": row.last_error,
        }));
    }
    let endpoints: Vec<serde_json::Value> = endpoints
        .into_iter()
        .map(|(url, events)| {
            let url = crate::notify::shown(&url);
            serde_json::json!({"url": url, "pending": events.len(), "events": events})
        })
        .collect();
    Json(serde_json::json!({ "endpoints": endpoints })).into_response()
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
