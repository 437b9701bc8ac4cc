//! The admin API: `POST /admin/gc` starts garbage collection (`?dry_run=true` for a dry run),
//! `GET /admin/gc` lists recent runs, `GET /admin/gc/{id}` shows one. Without authentication
//! configured, only loopback clients may call these; others get 403 `DENIED`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::query::Query;
use super::{ApiError, App, Code};

/// The longest test pause the API accepts.
const MAX_PAUSE: Duration = Duration::from_secs(60);

pub async fn gc_start(State(app): State<App>, ConnectInfo(peer): ConnectInfo<SocketAddr>, uri: Uri) -> Response {
    handle(peer, || {
        let query = Query::parse(uri.query());
        let mut opts = app.gc_options.clone();
        opts.dry_run = matches!(query.get("dry_run"), Some("true" | "1"));
        opts.pause_before_unlink = match query.get("pause_before_unlink_ms") {
            None => None,
            Some(ms) => Some(
                Duration::from_millis(ms.parse().map_err(|_| {
                    ApiError::new(Code::Unsupported, "pause_before_unlink_ms must be a number")
                        .with_status(StatusCode::BAD_REQUEST)
                })?)
                .min(MAX_PAUSE),
            ),
        };
        let (view, started) = app.gc.start(Arc::clone(&app.registry), opts);
        let status = if started { StatusCode::ACCEPTED } else { StatusCode::OK };
        Ok((status, Json(view)).into_response())
    })
}

pub async fn gc_list(State(app): State<App>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    handle(peer, || Ok(Json(app.gc.list()).into_response()))
}

pub async fn gc_get(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Response {
    handle(peer, || {
        let job = app
            .gc
            .get(&id)
            .ok_or_else(|| ApiError::new(Code::NotFound, format!("no garbage collection run {id}")))?;
        Ok(Json(job).into_response())
    })
}

/// Refuse non-loopback callers, then run `f`.
fn handle(peer: SocketAddr, f: impl FnOnce() -> Result<Response, ApiError>) -> Response {
    if !peer.ip().is_loopback() {
        tracing::warn!(%peer, "admin request from a non-loopback client refused");
        return ApiError::new(Code::Denied, "the admin API answers loopback clients only").into_response();
    }
    f().unwrap_or_else(IntoResponse::into_response)
}
