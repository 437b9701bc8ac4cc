//! The admin pages: garbage collection (start a run or a dry run, follow it, read its report),
//! fsck (start an online check, full or quick, follow it, read its findings), storage
//! usage and the audit log (newest first, filtered by user, repository and action, paged by
//! the log's own cursor, as `GET /admin/audit` reads it). Admins only (`Viewer::is_admin`); runs start through the admin API's own job tables,
//! so the API and the UI see the same runs and never start two of a kind at once. The UI
//! starts no repairing fsck: that stays with the CLI and the admin API.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::views;
use super::{UiError, Viewer, respond};
use crate::api::admin::jobs::{JobView, Jobs};
use crate::api::admin::{start_fsck, start_gc};

#[derive(Deserialize)]
pub struct FsckForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    quick: Option<String>,
}

/// The audit page's filters and cursor, as its form and links send them.
#[derive(Deserialize, Default)]
pub struct AuditFilter {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub repository: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub before: String,
}

/// Events one audit page shows.
const AUDIT_PAGE: &str = "50";

#[derive(Deserialize)]
pub struct GcForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    dry_run: Option<String>,
}

/// Admin pages to anyone else: as if they did not exist.
fn admin_only(viewer: &Viewer) -> Result<(), UiError> {
    if viewer.is_admin() {
        Ok(())
    } else {
        Err(UiError::NotFound("no such page".into()))
    }
}

pub async fn overview(viewer: Viewer) -> Response {
    let app = &viewer.ui.app;
    let result = async {
        admin_only(&viewer)?;
        let (gc, fsck) = (app.gc.list().await?, app.fsck.list().await?);
        Ok(views::admin(&viewer, &gc, &fsck).into_response())
    };
    respond(&viewer, result.await)
}

/// `POST {ui.path}/admin/gc`: start a run (a dry run when the form says so), then show it.
pub async fn gc_start(viewer: Viewer, headers: axum::http::HeaderMap, Form(form): Form<GcForm>) -> Response {
    let result = async {
        super::actions::check_csrf(&viewer, &form.csrf)?;
        admin_only(&viewer)?;
        let app = &viewer.ui.app;
        let opts = app.gc_options.clone().with_dry_run(form.dry_run.is_some());
        let (run, _) = start_gc(&app.gc, Arc::clone(&app.registry), opts, viewer.actor(&headers)).await?;
        Ok(Redirect::to(&viewer.ui.link(&format!("/admin/gc/{}", run.id))).into_response())
    };
    respond(&viewer, result.await)
}

/// `POST {ui.path}/admin/fsck`: start an online check (quick when the form says so), then
/// show it.
pub async fn fsck_start(viewer: Viewer, headers: axum::http::HeaderMap, Form(form): Form<FsckForm>) -> Response {
    let result = async {
        super::actions::check_csrf(&viewer, &form.csrf)?;
        admin_only(&viewer)?;
        let app = &viewer.ui.app;
        let opts = crate::fsck::Options {
            quick: form.quick.is_some(),
            repair: false,
        };
        let (run, _) = start_fsck(&app.fsck, Arc::clone(&app.registry), opts, viewer.actor(&headers)).await?;
        Ok(Redirect::to(&viewer.ui.link(&format!("/admin/fsck/{}", run.id))).into_response())
    };
    respond(&viewer, result.await)
}

/// One garbage collection: its phase while it runs (the page reloads itself), then its report.
pub async fn gc_run(viewer: Viewer, Path(id): Path<String>) -> Response {
    let result = run_of(&viewer, &viewer.ui.app.gc, &id, "garbage collection")
        .await
        .map(|run| views::gc_run(&viewer, &run));
    respond(&viewer, result.map(IntoResponse::into_response))
}

/// One fsck run: its phase while it runs, then its findings.
pub async fn fsck_run(viewer: Viewer, Path(id): Path<String>) -> Response {
    let result = run_of(&viewer, &viewer.ui.app.fsck, &id, "fsck")
        .await
        .map(|run| views::fsck_run(&viewer, &run));
    respond(&viewer, result.map(IntoResponse::into_response))
}

/// `GET {ui.path}/admin/{gc,fsck}/{id}/status`: the run as the admin API shows it (JSON), for
/// the page's script to poll with the session's cookie.
pub async fn gc_status(viewer: Viewer, Path(id): Path<String>) -> Response {
    status_of(&viewer, &viewer.ui.app.gc, &id, "garbage collection").await
}

pub async fn fsck_status(viewer: Viewer, Path(id): Path<String>) -> Response {
    status_of(&viewer, &viewer.ui.app.fsck, &id, "fsck").await
}

async fn status_of(viewer: &Viewer, jobs: &Jobs, id: &str, what: &str) -> Response {
    let result = run_of(viewer, jobs, id, what).await;
    respond(viewer, result.map(|run| axum::Json(run).into_response()))
}

/// The run `id` of `jobs`, for an admin.
async fn run_of(viewer: &Viewer, jobs: &Jobs, id: &str, what: &str) -> Result<JobView, UiError> {
    admin_only(viewer)?;
    jobs.get(id)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("no such {what} run")))
}

pub async fn usage(viewer: Viewer) -> Response {
    let result = async {
        admin_only(&viewer)?;
        let mut usage = viewer.ui.app.registry.usage().await?;
        usage
            .repositories
            .sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        Ok(views::usage(&viewer, &usage).into_response())
    }
    .await;
    respond(&viewer, result)
}

/// `GET {ui.path}/admin/audit?user=&repository=&action=&before=`: one page of the audit log.
pub async fn audit(viewer: Viewer, Query(filter): Query<AuditFilter>) -> Response {
    let result = async {
        admin_only(&viewer)?;
        let query = audit_query(&filter)?;
        let page = viewer.ui.app.registry.audit_log(query).await?;
        let listing = crate::registry::AuditListing::from(page);
        Ok(views::audit(&viewer, &filter, &listing).into_response())
    }
    .await;
    respond(&viewer, result)
}

/// The log's query for `filter` (empty fields filter nothing); a bad action or cursor is a
/// 400 that says which.
fn audit_query(filter: &AuditFilter) -> Result<crate::meta::AuditQuery, UiError> {
    let field = |key: &str| {
        let value = match key {
            "user" => filter.user.trim(),
            "repository" => filter.repository.trim(),
            "action" => filter.action.trim(),
            "before" => filter.before.trim(),
            "limit" => AUDIT_PAGE,
            _ => "",
        };
        (!value.is_empty()).then(|| value.to_owned())
    };
    crate::registry::audit_query(field, crate::meta::now_ms()).map_err(UiError::BadRequest)
}
