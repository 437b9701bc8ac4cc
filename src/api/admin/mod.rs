//! The admin API: `POST /admin/gc` starts garbage collection (`?dry_run=true` for a dry run),
//! `GET /admin/gc` lists recent runs, `GET /admin/gc/{id}` shows one; `/admin/fsck` does the
//! same for fsck (`?repair=true`, `?quick=true`). `GET /admin/policies` shows the rules in force. `POST /admin/retention` applies the
//! retention rules on their own (`?dry_run=true`) and answers with the report. Who may call them is decided by
//! `access::admin_guard`: the admin role, or loopback clients when authentication is off.
//! Query parameters other than those named here are ignored.
//!
//! The runs themselves are background jobs: `runs` starts them, `jobs` keeps their table. With
//! several nodes (PostgreSQL metadata) a lease elects the node that runs each kind, and any
//! node answers for any run (docs/design.md, "Several nodes").

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

use runs::{Retention, run_retention};
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

/// `POST /admin/gc` (`?dry_run=true`): 202 with the run it started, or 200 with the one in
/// progress (with several nodes, wherever it runs; `node` names that node).
pub async fn gc_start(State(app): State<App>, AdminActor(actor): AdminActor, uri: Uri) -> Response {
    let query = Query::parse(uri.query());
    let opts = app
        .gc_options
        .clone()
        .with_dry_run(matches!(query.get("dry_run"), Some("true" | "1")));
    started(start_gc(&app.gc, Arc::clone(&app.registry), opts, actor).await)
}

pub async fn fsck_start(State(app): State<App>, AdminActor(actor): AdminActor, uri: Uri) -> Response {
    let query = Query::parse(uri.query());
    let flag = |k| matches!(query.get(k), Some("true" | "1"));
    let opts = crate::fsck::Options {
        quick: flag("quick"),
        repair: flag("repair"),
    };
    started(start_fsck(&app.fsck, Arc::clone(&app.registry), opts, actor).await)
}

/// 202 and the run when it started now, 200 and the run in progress otherwise.
fn started(start: Result<(jobs::JobView, bool), crate::registry::Error>) -> Response {
    match start {
        Ok((view, true)) => (StatusCode::ACCEPTED, Json(view)).into_response(),
        Ok((view, false)) => (StatusCode::OK, Json(view)).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `POST /admin/retention` (`?dry_run=true`): apply the retention rules now, without the rest
/// of a collection; the report lists what went and why. Metadata only, so it answers at once.
/// With several nodes, while another node applies them: 503 with `Retry-After`.
pub async fn retention(State(app): State<App>, AdminActor(actor): AdminActor, uri: Uri) -> Response {
    let dry_run = matches!(Query::parse(uri.query()).get("dry_run"), Some("true" | "1"));
    let grace = app.gc_options.grace_period;
    match run_retention(&app.registry, app.member.as_ref(), dry_run, grace, &actor).await {
        Ok(Retention::Ran(Ok(report))) => Json(report).into_response(),
        Ok(Retention::Ran(Err(e))) | Err(e) => ApiError::from(e).into_response(),
        Ok(Retention::Busy { node }) => {
            ApiError::unavailable(format!("a retention run is in progress on node {node}; retry later")).into_response()
        }
    }
}

/// `GET /admin/policies`: the immutable-tag, retention and quota rules in force (as last
/// loaded, at start-up or on SIGHUP).
pub async fn policies(State(app): State<App>) -> Response {
    Json(app.registry.policies().shown().clone()).into_response()
}

pub async fn fsck_list(State(app): State<App>) -> Response {
    list(&app.fsck).await
}

pub async fn fsck_get(State(app): State<App>, id: Result<Path<String>, PathRejection>) -> Response {
    job(&app.fsck, id, "fsck").await
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
    list(&app.gc).await
}

pub async fn gc_get(State(app): State<App>, id: Result<Path<String>, PathRejection>) -> Response {
    job(&app.gc, id, "garbage collection").await
}

async fn list(jobs: &jobs::Jobs) -> Response {
    match jobs.list().await {
        Ok(runs) => Json(runs).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Run `id` of `jobs` (`what` they are, for the 404).
async fn job(jobs: &jobs::Jobs, id: Result<Path<String>, PathRejection>, what: &str) -> Response {
    let id = match run_id(id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    match jobs.get(&id).await {
        Ok(Some(run)) => Json(run).into_response(),
        Ok(None) => ApiError::new(Code::NotFound, format!("no {what} run {id}")).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The run id of the path; one that does not decode (say `%ff`) names no run, and is answered
/// with an OCI body like every other failure rather than axum's plain-text rejection.
fn run_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    id.map(|Path(id)| id)
        .map_err(|e| ApiError::new(Code::NotFound, e.body_text()))
}
